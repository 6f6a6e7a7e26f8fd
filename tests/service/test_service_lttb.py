"""LTTB keeps a long series' shape in few points."""

from __future__ import annotations

import numpy as np
import pytest

from autopilot.service.lttb import lttb


def test_100k_points_become_2k_keeping_the_extremes_and_the_ends() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(100_000.0)
    y = np.exp(-x / 30_000) + 0.01 * rng.standard_normal(len(x))
    y[31_337], y[77_777] = 5.0, -3.0  # a spike and a dip
    keep = lttb(x, y, 2000)
    assert len(keep) == 2000
    assert keep[0] == 0 and keep[-1] == len(x) - 1
    assert np.all(np.diff(keep) > 0)
    assert {31_337, 77_777} <= set(keep.tolist())
    assert y[keep].max() == y.max() and y[keep].min() == y.min()


def test_a_short_series_is_kept_whole() -> None:
    assert lttb([1, 2, 3], [1.0, 2.0, 3.0], 10).tolist() == [0, 1, 2]


def test_the_trend_survives() -> None:
    x = np.arange(10_000.0)
    keep = lttb(x, np.sin(x / 500), 300)
    assert np.abs(np.interp(x, x[keep], np.sin(x[keep] / 500)) - np.sin(x / 500)).max() < 0.05


@pytest.mark.parametrize(("x", "y", "n"), [([1, 2], [1.0, 2.0], 2), ([1, 2], [1.0], 5)])
def test_bad_arguments_are_refused(x: list[int], y: list[float], n: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        lttb(x, y, n)
