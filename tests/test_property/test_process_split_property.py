"""Property: statistics accumulated by 2 real gloo processes over a random split of the images, summed with
``sum_across_ranks`` (what the metrics and the analysis do), equal one process over all images.

Each hypothesis example draws images (random sizes, class counts, logit scales, ignore masks, float64 logits so
the comparison is exact) and a random assignment of the images to the two ranks, then runs one 2-process group.
"""
import torch
from calibseg_testing import run_gloo
from hypothesis import given, settings
from hypothesis import strategies as st

from calibseg.functional.calibration import CalibrationStatistics, calibration_metrics

IGNORE = 255


@st.composite
def split_cases(draw):
    k = draw(st.integers(2, 5))
    images = []
    for _ in range(draw(st.integers(1, 6))):
        h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        logits = torch.randn(1, k, h, w, generator=gen, dtype=torch.float64) * draw(st.sampled_from((0.1, 2.0, 40.0)))
        labels = torch.randint(0, k, (1, h, w), generator=gen)
        labels[torch.rand(1, h, w, generator=gen) < draw(st.floats(0.0, 0.5))] = IGNORE
        images.append((logits, labels))
    ranks = draw(st.lists(st.integers(0, 1), min_size=len(images), max_size=len(images)))
    return k, images, ranks


def _rank_state(rank, k, images, ranks):
    from calibseg.utils.distributed import sum_across_ranks

    stats = CalibrationStatistics(k, input_type='logits', ignore_index=IGNORE)
    for (logits, labels), owner in zip(images, ranks):
        if owner == rank:
            stats.update(torch.from_numpy(logits), torch.from_numpy(labels))
    return sum_across_ranks(stats.to_tensor()).numpy()


@settings(max_examples=4)
@given(case=split_cases())
def test_two_processes_on_a_random_split_equal_one_process(case):
    k, images, ranks = case
    one = CalibrationStatistics(k, input_type='logits', ignore_index=IGNORE)
    for logits, labels in images:
        one.update(logits, labels)
    # numpy, not tensors, through the process pipes (torch's shared-memory tensor pickling is not for spawn queues)
    states = run_gloo(_rank_state, k, [(z.numpy(), y.numpy()) for z, y in images], ranks)
    states = {rank: torch.from_numpy(state) for rank, state in states.items()}
    torch.testing.assert_close(states[0], states[1], rtol=0, atol=0)
    torch.testing.assert_close(states[0], one.to_tensor(), rtol=1e-12, atol=1e-9)
    if one.num_pixels:
        two = one.from_tensor(states[0])
        a, b = calibration_metrics(one, bins=(15,)), calibration_metrics(two, bins=(15,))
        assert a.keys() == b.keys()
        for key in a:
            assert (a[key] != a[key] and b[key] != b[key]) or abs(a[key] - b[key]) <= 1e-9 * max(1.0, abs(a[key])), key
