"""Wilson intervals of accuracies against scipy's independent implementation and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from robustscale.intervals import accuracy_interval, correct_count, wilson_interval, with_interval

# float64 throughout: a few operations on numbers near 1, so agreement to ~1e-12 (in percent) is rounding.
TOL = 1e-9


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (3, 20), (17, 20), (500, 1000), (983, 1000), (1, 10_000),
                                  (9_999, 10_000)])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_matches_scipy_binomtest_wilson(k, n, level):
    ref = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    lo, hi = wilson_interval(k, n, level)
    assert lo == pytest.approx(100 * ref.low, abs=TOL) and hi == pytest.approx(100 * ref.high, abs=TOL)


def test_closed_forms_at_the_edges():
    # k = 0: the interval is [0, z^2 / (n + z^2)]; k = n mirrors it.
    z2 = 1.959963984540054 ** 2
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(100 * z2 / (10 + z2), abs=TOL)
    lo2, hi2 = wilson_interval(10, 10)
    assert hi2 == 100.0 and lo2 == pytest.approx(100 - hi, abs=TOL)
    # symmetric in correct <-> wrong
    a, b = wilson_interval(3, 20), wilson_interval(17, 20)
    assert a[0] == pytest.approx(100 - b[1], abs=TOL) and a[1] == pytest.approx(100 - b[0], abs=TOL)


def test_arrays_nan_for_no_images_and_errors():
    lo, hi = wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert lo.shape == (3,) and np.all(lo <= 100 * np.array([0, 0.5, 1.0])) and np.all(hi >= lo)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, level=1.0)


def test_half_width_shrinks_like_one_over_root_n():
    # At p = 1/2 the half-width tends to z * sqrt(p(1-p)/n): 1.55 points at n = 1000 (the SE <= 1.6).
    lo, hi = wilson_interval(500, 1000)
    assert (hi - lo) / 2 == pytest.approx(100 * 1.96 * math.sqrt(0.25 / 1000), rel=2e-3)


def test_accuracy_helpers():
    assert correct_count(61.1, 1000) == 611 and correct_count(100 / 3, 3) == 1
    assert accuracy_interval(61.1, 1000) == wilson_interval(611, 1000)
    assert accuracy_interval(None, 1000) is None and accuracy_interval(50.0, None) is None
    rec = with_interval({"clean_acc": 75.0}, "clean_acc", 20)
    assert rec["clean_acc_n_examples"] == 20 and rec["clean_acc_ci"] == list(wilson_interval(15, 20))
    assert with_interval({}, "aa_robust_acc", 20) == {"aa_robust_acc": None, "aa_robust_acc_n_examples": None,
                                                      "aa_robust_acc_ci": None}
