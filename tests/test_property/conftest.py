"""Property-based tests (hypothesis): small random cases, one intra-op thread (the CI machine has 2 busy cores)."""
import pytest
import torch
from hypothesis import HealthCheck, settings

# derandomized: the same examples on every run and machine, so a failure reproduces; deadline off (the first
# example pays for imports and caches)
settings.register_profile('calibseg', max_examples=25, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile('calibseg')


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
