"""The calibration study: many segmentation models measured per pixel before and after temperature scaling.

The per-pixel version of the benchmark study of calibration (Tao et al., ICLR 2024, "A Benchmark Study on
Calibration"). One row per model (:mod:`.runner`), from models discovered in work directories (:mod:`.models`) and
told apart by their weights and measured config (:mod:`.identity`), measured under one protocol (:mod:`.protocol`,
:mod:`.measure`) into a resumable checksummed table (:mod:`.table`), optionally also under corruption (robustness),
then analysed with Kendall's tau-b (:mod:`.kendall`, :mod:`.analysis`, the benchmark's seven questions in
:mod:`.questions`; figures in :mod:`calibseg.visualization.study_plots`). The same recipes on a second dataset (the
cross-dataset question): :mod:`.cityscapes`. ``tools/calibration_study.py``, ``tools/analyze_study.py`` and
``tools/run_demo_study.py`` are the command lines.
"""
from .analysis import (
    ANALYSIS_FILES,
    OPTIONAL_ANALYSIS_FILES,
    analyze,
    bin_sensitivity,
    cross_dataset_taus,
    final_recipes,
    load_study,
    robustness_taus,
    summary_markdown,
    ts_rank_taus,
)
from .identity import legacy_model_id, model_id
from .kendall import count_inversions, kendall_tau_b, tau_matrix, tau_noise
from .measure import (
    SHIFT_METRICS,
    accuracy_metrics,
    fit_temperature,
    harmonic_calibration_score,
    measure,
    shift_means,
)
from .models import ModelSpec, discover_models, parse_model_pair, work_dir_checkpoints, work_dir_config
from .protocol import DEFAULT_SEVERITY, DEFAULT_TS_METHOD, DEMO_CORRUPTIONS, TS_METHODS, StudyProtocol
from .runner import failures_path, init_study, plan, run_study
from .table import CHECKSUM_COLUMN, append_row, read_table, write_parquet

__all__ = ['ANALYSIS_FILES', 'OPTIONAL_ANALYSIS_FILES', 'analyze', 'bin_sensitivity', 'cross_dataset_taus',
           'final_recipes', 'load_study', 'robustness_taus', 'summary_markdown', 'ts_rank_taus', 'count_inversions',
           'kendall_tau_b', 'tau_matrix', 'tau_noise', 'accuracy_metrics', 'fit_temperature',
           'harmonic_calibration_score', 'measure', 'shift_means', 'SHIFT_METRICS', 'ModelSpec', 'discover_models',
           'model_id', 'legacy_model_id', 'parse_model_pair', 'work_dir_checkpoints', 'work_dir_config',
           'DEFAULT_SEVERITY', 'DEFAULT_TS_METHOD', 'DEMO_CORRUPTIONS', 'TS_METHODS', 'StudyProtocol',
           'failures_path', 'init_study', 'plan', 'run_study', 'CHECKSUM_COLUMN', 'append_row', 'read_table',
           'write_parquet']
