"""SaliencyMetric through mmengine: process() on data samples, evaluate(size), input types, errors."""
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.structures import PixelData
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample

from calibseg.evaluation.metrics.saliency_metric import SaliencyMetric
from calibseg.functional.saliency import saliency_record, summarize_saliency

KEYS = {'MAE', 'maxF', 'meanF', 'Sm', 'meanEm', 'maxEm'}


def _maps(n=3, h=12, w=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        gt = torch.zeros(h, w, dtype=torch.long)
        top, left = (int(v) for v in torch.randint(0, 5, (2,), generator=gen))
        gt[top:top + 6, left:left + 5] = 1
        logits = (gt.float() * 2 - 1) * 2 + torch.randn(h, w, generator=gen)
        out.append((logits, gt))
    return out


def _sample(seg_logits, gt, name='x.jpg'):
    sample = SegDataSample(metainfo=dict(img_path=name))
    sample.seg_logits = PixelData(data=seg_logits)
    sample.gt_sem_seg = PixelData(data=gt.unsqueeze(0))
    return sample


def test_evaluator_matches_functional_summary():
    maps = _maps()
    evaluator = Evaluator(METRICS.build(dict(type='SaliencyMetric')))
    for logits, gt in maps:  # one-channel heads: seg_logits holds sigmoid probabilities
        evaluator.process(data_samples=[_sample(logits.sigmoid().unsqueeze(0), gt)])
    result = evaluator.evaluate(len(maps))
    assert set(result) == KEYS
    expected = summarize_saliency([saliency_record(lg.sigmoid().double(), gt) for lg, gt in maps])
    for key in KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-12)
        assert 0.0 <= result[key] <= 1.0


def test_process_and_evaluate_directly_with_input_types():
    maps = _maps(n=2, seed=1)
    probs = SaliencyMetric()
    probs.process({}, [_sample(lg.sigmoid().unsqueeze(0), gt).to_dict() for lg, gt in maps])
    reference = probs.evaluate(2)
    logits = SaliencyMetric(input_type='logits')
    logits.process({}, [_sample(lg.unsqueeze(0), gt).to_dict() for lg, gt in maps])
    two_channel = SaliencyMetric(input_type='logits')  # two-channel heads keep raw logits: softmax, channel 1
    two_channel.process({}, [_sample(torch.stack([torch.zeros_like(lg), lg]), gt).to_dict() for lg, gt in maps])
    for result in (logits.evaluate(2), two_channel.evaluate(2)):
        for key in KEYS:
            assert result[key] == pytest.approx(reference[key], abs=1e-6)


def test_padding_duplicates_are_dropped_and_perfect_maps_score_one():
    gt = torch.zeros(8, 8, dtype=torch.long)
    gt[2:6, 2:6] = 1
    metric = SaliencyMetric()
    metric.process({}, [_sample(gt.float().unsqueeze(0), gt).to_dict()])
    metric.process({}, [_sample(torch.full((1, 8, 8), 0.5), gt).to_dict()])  # a sampler's padding copy
    result = metric.evaluate(1)
    assert result['MAE'] == 0.0 and result['maxF'] == 1.0
    assert result['Sm'] == pytest.approx(1.0) and result['maxEm'] == pytest.approx(1.0)


def test_minmax_option_changes_only_when_asked():
    maps = _maps(n=2, seed=2)
    results = {}
    for option in (False, True):
        metric = SaliencyMetric(minmax_normalize=option)
        metric.process({}, [_sample((0.3 + 0.4 * lg.sigmoid()).unsqueeze(0), gt).to_dict() for lg, gt in maps])
        results[option] = metric.evaluate(2)
    assert results[True]['MAE'] < results[False]['MAE']


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match='input_type'):
        SaliencyMetric(input_type='prob')
    with pytest.raises(ValueError, match='beta_sq'):
        SaliencyMetric(beta_sq=-1)
    with pytest.raises(ValueError, match='alpha'):
        SaliencyMetric(sm_alpha=2.0)
    with pytest.raises(TypeError):
        METRICS.build(dict(type='SaliencyMetric', minmax_normalise=True))
    gt = torch.zeros(4, 4, dtype=torch.long)
    gt[0, 0] = 255
    metric = SaliencyMetric()
    with pytest.raises(ValueError, match=r'bad\.jpg: gt must hold 0'):
        metric.process({}, [_sample(torch.rand(1, 4, 4), gt, name='bad.jpg').to_dict()])
    with pytest.raises(ValueError, match=r'\(1, H, W\)'):
        metric.process({}, [_sample(torch.rand(3, 4, 4), gt.clamp(max=1)).to_dict()])
