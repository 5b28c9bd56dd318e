"""calibseg.study.cityscapes: every demo recipe with its data swapped to the Cityscapes copy (nothing else
changed), the copy's size guard, and a 2-iteration training measured by the study."""
from __future__ import annotations

import os
import os.path as osp

import pytest
import torch
from calibseg_testing import ROOT
from mmengine.config import Config

import calibseg.study.cityscapes as cs
from calibseg.datasets.demo.cityscapes import generate_cityscapes
from calibseg.study import StudyProtocol, discover_models, read_table, run_study
from calibseg.study.demo import demo_recipes
from calibseg.utils.run_setup import iter_dataset_cfgs

SWAPPED = ('train_dataloader', 'val_dataloader', 'test_dataloader', 'model', 'train_cfg', 'param_scheduler',
           'default_hooks')


def test_the_recipes_are_the_twelve_training_methods():
    names = [osp.basename(c) for c in demo_recipes(ROOT)]
    assert len(names) == 12 and not [n for n in names if 'ce-ts' in n or 'ce-lts' in n]
    assert cs.recipe_name(demo_recipes(ROOT)[0], 150).endswith('_1xb8-150it_demo-cityscapes-64x128')
    with pytest.raises(ValueError, match='mmseg-grammar'):
        cs.recipe_name('configs/x/my_config.py', 10)


@pytest.mark.parametrize('config', demo_recipes(ROOT), ids=lambda c: osp.basename(osp.dirname(c)))
def test_a_recipe_keeps_everything_but_the_data(config):
    source = Config.fromfile(config)
    cfg = cs.cityscapes_recipe(config, data_root='/data/cs', max_iters=40, repo_root=ROOT)
    leaves = list(iter_dataset_cfgs(cfg))
    assert leaves and all(ds['type'] == 'CityscapesDataset' and ds['data_root'] == '/data/cs' for _, ds in leaves)
    splits = {key.split('.dataset')[0]: ds['data_prefix']['img_path'] for key, ds in leaves}
    assert splits.pop('train_dataloader') == 'leftImg8bit/train'
    assert splits.pop('val_dataloader') == splits.pop('test_dataloader') == 'leftImg8bit/val'
    if 'model.meta.dataloader' in splits:  # γ-Net's meta split: the held-out part of the training images
        assert splits.pop('model.meta.dataloader') == 'leftImg8bit/train'
        assert cfg.model.meta.dataloader.dataset.type == 'HeldOutSplit' == cfg.train_dataloader.dataset.type
    assert not splits
    # the model and the optimisation are the recipe's, with 19 classes and the copy's size
    model, original = cfg.model.to_dict(), source.model.to_dict()
    assert model['decode_head'].pop('num_classes') == model['auxiliary_head'].pop('num_classes') == 19
    assert model['data_preprocessor'].pop('size') == (64, 128)
    for part in (original['decode_head'], original['auxiliary_head'], original['data_preprocessor']):
        part.pop('num_classes', None), part.pop('size', None)
    model.pop('meta', None), original.pop('meta', None)
    assert model == original
    if 'meta' in source.model:
        meta = {k: v for k, v in cfg.model.meta.items() if k != 'dataloader'}
        assert meta == {k: v for k, v in source.model.meta.items() if k != 'dataloader'}
    assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval == 40
    assert cfg.param_scheduler[0].end == 40 and cfg.default_hooks.checkpoint.interval == 20
    assert cfg.train_dataloader.batch_size == source.train_dataloader.batch_size
    for key in set(source.keys()) - set(SWAPPED):
        assert cfg[key] == source[key], key
    for key in ('train_dataloader', 'val_dataloader'):
        loader = {k: v for k, v in cfg[key].items() if k != 'dataset'}
        assert loader == {k: v for k, v in source[key].items() if k != 'dataset'}


def test_a_recipe_on_another_dataset_type_is_refused(tmp_path):
    config = tmp_path / 'fcn_r18-d16_ce_1xb8-600it_demo-duts-96x96.py'
    config.write_text(f"_base_ = ['{demo_recipes(ROOT)[0]}']\n"
                      "train_dataloader = dict(dataset=dict(_delete_=True, type='DUTSDataset', data_root='x'))\n")
    with pytest.raises(ValueError, match="train_dataloader.dataset: a dataset of type 'DUTSDataset'"):
        cs.cityscapes_recipe(str(config), data_root='/d', max_iters=4, repo_root=ROOT)
    with pytest.raises(ValueError, match='max_iters'):
        cs.cityscapes_recipe(demo_recipes(ROOT)[0], data_root='/d', max_iters=1, repo_root=ROOT)


def test_the_copy_is_generated_once_and_another_copy_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(cs, 'CITYSCAPES_DATA', dict(num_train=3, num_val=2, height=32, width=64))
    log = []
    folder = cs.ensure_cityscapes_data(str(tmp_path / 'a'), log=log.append)
    assert folder == str(tmp_path / 'a' / 'cityscapes') and len(log) == 1
    assert cs.ensure_cityscapes_data(str(tmp_path / 'a'), log=log.append) == folder and len(log) == 1
    generate_cityscapes(str(tmp_path / 'b'), num_train=1, num_val=1, height=32, width=64)
    with pytest.raises(FileExistsError, match='holds 1 train / 1 val images, the study\'s copy 3 / 2'):
        cs.ensure_cityscapes_data(str(tmp_path / 'b'))


def test_recipes_train_on_the_copy_and_the_study_measures_them(tmp_path, monkeypatch):
    import calibseg.study.demo as demo

    recipes = [c for c in demo_recipes(ROOT) if '_ce_' in c or '_gamma-net_' in c]
    monkeypatch.setattr(demo, 'demo_recipes', lambda root: recipes)
    monkeypatch.setattr(cs, 'CITYSCAPES_DATA', dict(num_train=6, num_val=4, height=32, width=64))
    data = cs.ensure_cityscapes_data(str(tmp_path / 'data'), log=lambda _: None)
    options = ['model.data_preprocessor.size=(32,64)', 'train_dataloader.batch_size=2',
               'model.decode_head.channels=16', 'model.auxiliary_head.channels=8']
    log = []
    dirs = cs.train_cityscapes_recipes(data_root=data, work_dir=str(tmp_path / 'runs'), repo_root=ROOT,
                                       max_iters=2, train_options=options, log=log.append)
    assert [osp.basename(d) for d in dirs] == [cs.recipe_name(c, 2) for c in recipes]
    for run in dirs:
        assert osp.isfile(osp.join(run, 'iter_1.pth')) and osp.isfile(osp.join(run, 'iter_2.pth'))
        assert sorted(f for f in os.listdir(run) if f.endswith('.py')) == [osp.basename(run) + '.py']
    assert len(log) == 2 and all('trained 2 iterations' in line for line in log)
    cs.train_cityscapes_recipes(data_root=data, work_dir=str(tmp_path / 'runs'), repo_root=ROOT, max_iters=2,
                                log=log.append)
    assert log[-1].endswith('finished earlier')
    out = tmp_path / 'study.csv'
    specs = discover_models(work_dirs=[str(tmp_path / 'runs' / '*')], all_checkpoints=True)
    protocol = StudyProtocol(ts_method='nll', cfg_options={'val_dataloader.dataset.data_root': data})
    assert run_study(specs, out=str(out), protocol=protocol, device=torch.device('cpu'), log_every=0,
                     log=lambda _: None) == (4, 0)
    rows = read_table(str(out))
    assert sorted({r['method'] for r in rows}) == ['ce', 'gamma-net']
    assert {r['num_classes'] for r in rows} == {'19'} and {r['test_images'] for r in rows} == {'2'}
