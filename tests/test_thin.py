"""The display thinning of long live series (widgets.plot_style.thin): bounded size, every bucket's extremes kept
(a loss spike stays visible), and the line ends at the last step recorded with its value."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from widgets.plot_style import MAX_POINTS, thin


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 20_000), seed=st.integers(0, 2**16), spike=st.floats(0, 1))
def test_thin_keeps_extremes_and_the_last_point(n, seed, spike):
    rng = np.random.default_rng(seed)
    x = np.arange(n) * 3 + 7
    y = rng.standard_normal(n)
    i = int(spike * (n - 1))
    y[i] = 1e6
    xs, ys = thin(x, y)
    if n <= MAX_POINTS:
        np.testing.assert_array_equal(xs, x)
        np.testing.assert_array_equal(ys, y)
        return
    assert len(xs) == len(ys) <= MAX_POINTS + 1
    assert xs[-1] == x[-1] and ys[-1] == y[-1], "the line ends at the last step, with its value"
    assert np.all(np.diff(xs) >= 0), "x stays in order"
    assert ys.max() == 1e6 and ys.min() == y.min(), "the extremes stay visible"
    assert set(xs) <= set(x)


def test_thin_last_point_not_finite_is_a_gap():
    x = np.arange(5000)
    y = np.ones(5000)
    y[-1] = np.inf
    xs, ys = thin(x, y)
    assert xs[-1] == 4999 and np.isnan(ys[-1])
