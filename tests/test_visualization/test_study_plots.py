"""calibseg.visualization.study_plots: figures drawn from given statistics (the plots compute none), written
atomically as PNG files."""
from __future__ import annotations

import numpy as np
import pytest

from calibseg.visualization import study_plots

PNG = b'\x89PNG\r\n\x1a\n'


@pytest.fixture
def texts(monkeypatch):
    """Every text matplotlib draws (titles, labels, legends), to check the plots show the numbers given."""
    from matplotlib.text import Text

    seen = []
    original = Text.set_text

    def record(self, s):
        seen.append(str(s))
        return original(self, s)

    monkeypatch.setattr(Text, 'set_text', record)
    return seen


def _columns(n=6):
    rng = np.random.default_rng(0)
    return {k: rng.uniform(1, 5, n) for k in ('mIoU', 'ECE_15', 'post_ECE_15', 'NLL', 'post_NLL')}


def test_every_plot_writes_a_png_and_shows_the_given_statistics(tmp_path, texts):
    columns = _columns()
    labels = ['ECE_15', 'NLL', 'mIoU']
    m = np.array([[1.0, 0.123, -0.5], [0.123, 1.0, np.nan], [-0.5, np.nan, 1.0]])
    paths = [
        study_plots.plot_tau(m, m, labels, n_models=6, path=str(tmp_path / 'tau.png')),
        study_plots.plot_bins({'ECE': {'pre': [(5, 0.9, 0.8), (15, 1.0, 1.0)], 'post': [(5, 0.7, 0.6),
                                                                                       (15, 1.0, 1.0)]}},
                              reference_bins=15, path=str(tmp_path / 'bins.png')),
        study_plots.plot_accuracy(columns, {'mIoU~ECE_15': 0.111, 'mIoU~post_ECE_15': 0.222, 'mIoU~NLL': 0.333,
                                            'mIoU~post_NLL': 0.444}, path=str(tmp_path / 'acc.png')),
        study_plots.plot_gain(columns, {'ECE_15': (np.arange(6.0), 0.555), 'NLL': (np.ones(6), 0.666)},
                              ['a', 'b'] * 3, path=str(tmp_path / 'gain.png')),
    ]
    for path in paths:
        with open(path, 'rb') as f:
            assert f.read(8) == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ['acc.png', 'bins.png', 'gain.png', 'tau.png']
    shown = '\n'.join(texts)
    for value in ('0.12', '0.11', '0.22', '0.33', '0.44', '0.56', '0.67', 'across 6 models'):
        assert value in shown, value


def test_a_failed_drawing_leaves_no_file(tmp_path):
    with pytest.raises(KeyError):
        study_plots.plot_accuracy(_columns(), {}, path=str(tmp_path / 'acc.png'))  # a tau was not given
    assert list(tmp_path.iterdir()) == []
