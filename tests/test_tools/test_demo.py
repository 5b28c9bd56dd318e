"""tools/demo.py end to end on the tiny demo data (2 iterations per model) and the comparison-table writer."""
from __future__ import annotations

import os.path as osp
import re
import subprocess
import sys

from calibseg_testing import ROOT

from calibseg.apis.experiment import RESULTS_END, RESULTS_START, markdown_table, write_marked_section


def test_demo_trains_both_models_quietly_and_writes_the_table(tiny_voc, tmp_path):
    from calibseg.datasets.demo import generate_demo_data

    data_root = osp.dirname(osp.dirname(tiny_voc))
    calib_root = str(tmp_path / 'calib')  # a few small calibration images (the demo's own 200 take longer)
    generate_demo_data(calib_root, only='voc', voc_train=1, voc_val=3, size=32, seed=1)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'demo.py'), '--data-root', data_root,
                           '--calib-root', calib_root, '--work-dir', str(tmp_path / 'demo'), '--max-iters', '2'],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    table = (tmp_path / 'demo' / 'results.md').read_text()
    assert '| metric | ce | ce + TS | ls |' in table
    for row in ('mIoU (%)', 'ECE_15 (%)', 'cwCE_15 (%)', 'OE_15 (%)', 'UE_15 (%)', 'NLL'):
        assert f'| {row} |' in table
    assert re.search(r'\| temperature T \(TS\) \| - \| \d+\.\d{3} \| - \|', table), table
    lines = log.splitlines()
    run = r'  fcn_r18-d16_\w+_1xb8-600it_demo-voc12aug-96x96: iter \d+/2 '
    progress = [line for line in lines if re.match(run, line)]
    assert len(progress) == 4, log  # both trainings' progress is visible (a pipe: one line per tenth of the run)
    assert 'loss ' in progress[0] and ' left' in progress[0]
    others = [line for line in lines if line not in progress]
    assert len(others) < 60, log
    # mmengine's environment and config dumps stay in the log files, whose paths the console gives
    assert 'System environment' not in log and 'Config:' not in log
    logs = re.findall(r'full log: (\S+\.log)', log)
    assert len(logs) == 2 and all(osp.isfile(path) for path in logs)
    assert 'System environment' in open(logs[0]).read()
    # known third-party noise filtered
    for noise in ('pkg_resources is deprecated', '``build_loss`` would be deprecated', 'Default ``avg_non_ignore``'):
        assert noise not in log
    # the validation result in a few lines per run, the table and the paths at the end
    assert sum(': val at iter 2' in line for line in lines) == 2
    assert lines[-1].startswith('[demo] total')
    assert any(line.startswith('[demo] table: ') and line.endswith('results.md') for line in lines[-5:])
    reports = [line.split(': ', 1)[1] for line in lines[-5:] if line.startswith('[demo] calibration report of')]
    assert len(reports) == 2 and all(osp.isfile(report) for report in reports), log
    assert 'calib_dataloader' in open(osp.join(osp.dirname(reports[0]), 'results.json')).read()


def test_marked_section_is_replaced_in_place(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text(f'# Title\n\nbefore\n\n{RESULTS_START}\nold\n{RESULTS_END}\n\nafter\n')
    table = markdown_table({'ce': {'mIoU': 50.0, 'ECE': 3.25}, 'mbls': {'mIoU': 51.0}}, highlight='mbls')
    write_marked_section(str(readme), table)
    text = readme.read_text()
    assert 'old' not in text and text.startswith('# Title') and text.rstrip().endswith('after')
    assert '| metric | ce | **mbls** |' in text
    assert '| ECE_15 (%) | 3.25 | - |' in text


def test_rows_no_run_has_are_left_out():
    table = markdown_table({'ce': {'mIoU': 50.0}, 'gamma-net': {'mIoU': 49.0, 'gamma_mean': 2.345}})
    assert '| mean learned γ (γ-Net) | - | 2.35 |' in table
    assert 'NLL' not in table and 'γ' not in markdown_table({'ce': {'mIoU': 50.0}})


def test_training_log_mean_reads_the_tail_of_every_run(tmp_path):
    import json

    from calibseg.apis.experiment import training_log_mean

    for stamp, steps in (('20260101_000000', range(1, 11)), ('20260101_000100', range(6, 21))):
        vis = tmp_path / stamp / 'vis_data'
        vis.mkdir(parents=True)
        with open(vis / 'scalars.json', 'w') as f:
            for step in steps:
                f.write(json.dumps(dict(lr=0.1, step=step, gamma_mean=float(step))) + '\n')
            f.write(json.dumps(dict(step=20, mIoU=1.0)) + '\n')  # a val record: no lr, ignored
    assert training_log_mean(str(tmp_path), 'gamma_mean', last_fraction=0.2) == (17 + 18 + 19 + 20) / 4
    assert training_log_mean(str(tmp_path), 'missing') is None
