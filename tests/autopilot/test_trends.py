"""The numerical kernels behind the summary and the detectors, against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from autopilot._trends import (
    line_at,
    linear_fit,
    median,
    pack,
    quadratic_residual_std,
    rolling_median,
    window_stats,
)


@pytest.mark.parametrize("n", [1, 2, 7, 200])
def test_median_and_rolling_median_match_numpy(n):
    values = np.random.default_rng(n).standard_normal(n)
    assert median(values) == np.median(values)
    for k in (3, 4, 9):
        expected = (
            np.median(np.lib.stride_tricks.sliding_window_view(values, k), axis=1)
            if n > k
            else [np.median(values)]
        )
        assert np.array_equal(rolling_median(values, k), expected)


def test_pack_pads_rows_and_reuses_shared_steps():
    packed = pack([[[1, 2, 3], [1.0, 2.0, 3.0]], [[1, 2, 3], [4.0, np.nan, 6.0]], [[], []]])
    assert packed.steps.tolist() == [[1, 2, 3], [1, 2, 3], [0, 0, 0]]
    assert packed.lens.tolist() == [3, 3, 0]
    assert packed.finite.tolist() == [[True] * 3, [True, False, True], [False] * 3]
    assert [s.tolist() for s in packed.row(1)] == [[1.0, 3.0], [4.0, 6.0]]


def test_quadratic_residual_std_is_the_residual_std_of_a_quadratic_fit():
    rng = np.random.default_rng(0)
    x = np.arange(100.0, 300.0)
    y = 1e-4 * (x - 150) ** 2 + rng.standard_normal(x.size)
    resid = y - np.polyval(np.polyfit(x, y, 2), x)
    assert quadratic_residual_std(x, y) == pytest.approx(np.sqrt(resid @ resid / (x.size - 3)))
    assert quadratic_residual_std(x, 2 * x**2) == pytest.approx(0, abs=1e-6)
    assert quadratic_residual_std(np.ones(5), np.arange(5.0)) is None


def test_every_line_fit_is_numpys_least_squares_line():
    # one formula behind the summary's slopes, the detectors' fits and the effect baselines
    rng = np.random.default_rng(1)
    x = np.arange(1000.0, 1060.0)
    y = 3.0 - 0.002 * x + 0.01 * rng.standard_normal(x.size)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    se = np.sqrt(resid @ resid / (x.size - 2) / ((x - x.mean()) @ (x - x.mean())))
    assert linear_fit(x, y) == pytest.approx((slope, se))
    assert line_at(x, y, 1100.0) == pytest.approx((slope * 1100 + intercept, slope))
    stats = window_stats(pack([[x.tolist(), y.tolist()]]), min_points=5)
    assert stats.slope[0] == pytest.approx(100 * slope / stats.scale[0])
    assert stats.slope_se[0] == pytest.approx(100 * se / stats.scale[0])


def test_line_fits_without_enough_points_or_spread():
    assert linear_fit(np.arange(2.0), np.arange(2.0)) is None
    assert linear_fit(np.ones(5), np.arange(5.0)) is None
    assert line_at(np.array([1.0, 2.0]), np.array([5.0, 4.0]), 10) == (4.0, 0.0)
    assert line_at(np.ones(4), np.arange(4.0), 10) == (1.5, 0.0)
