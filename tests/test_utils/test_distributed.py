"""calibseg.utils.distributed: identity in one process, real collectives in two gloo processes."""
import pytest
import torch
from calibseg_testing import run_gloo

from calibseg.utils.distributed import StageError, agree, broadcast, dist_info, sum_across_ranks


def test_single_process_is_identity():
    assert dist_info() == (0, 1)
    vector = torch.tensor([1.5, 2.0], dtype=torch.float64)
    assert sum_across_ranks(vector) is vector
    payload = {'a': [1, 2]}
    assert broadcast(payload) is payload
    agree(None, 'fit')  # no error anywhere: returns
    cause = ValueError('bad value')
    with pytest.raises(StageError, match=r'^ValueError: bad value$') as info:
        agree(cause, 'fit')
    assert info.value.stage == 'fit' and info.value.__cause__ is cause


def _worker(rank: int) -> dict:
    out = {'info': dist_info()}
    vector = torch.tensor([rank + 1.0, 10.0 * rank], dtype=torch.float64)
    out['sum'] = sum_across_ranks(vector).tolist()
    out['input_untouched'] = vector.tolist() == [rank + 1.0, 10.0 * rank]
    out['broadcast'] = broadcast({'from': rank})
    agree(None, 'clean')
    try:
        agree(RuntimeError('disk full') if rank == 1 else None, 'write')
    except StageError as err:  # raised on BOTH ranks, naming the failed one
        out['error'] = (err.stage, str(err))
    return out


def test_two_processes():
    results = run_gloo(_worker)
    for rank in (0, 1):
        got = results[rank]
        assert got['info'] == (rank, 2)
        assert got['sum'] == [3.0, 10.0] and got['input_untouched']
        assert got['broadcast'] == {'from': 0}
        assert got['error'] == ('write', 'rank 1: RuntimeError: disk full')
