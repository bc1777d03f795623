"""Notebook 14 (intrinsic dimension, Li et al. 2018) in quick mode: accuracy rises with the subspace dimension d
and d90 is a small fraction of the parameter count, on digits and MNIST-1D."""
import pytest

from nbutil import notebook_results, run_notebook


@pytest.mark.slow
def test_intrinsic_dimension_notebook():
    res = notebook_results(run_notebook("notebooks/14_intrinsic_dimension.ipynb"))
    assert res["quick"] is True
    for name in ("digits", "MNIST-1D"):
        r = res[name]
        acc, dims = r["acc"], r["dims"]
        assert dims == sorted(dims) and len(dims) >= 4
        # accuracy increases with d: a clear rank trend, and from near chance to the full model's level
        assert res["spearman"][name] >= 0.9, (name, acc)
        assert acc[0] < 0.75 * r["baseline"] and acc[0] < r["chance"] + 0.5 * (r["baseline"] - r["chance"])
        assert acc[-1] >= 0.9 * r["baseline"], (name, acc, r["baseline"])
        assert r["baseline"] > 2 * r["chance"]
        # the prose: the curve starts well above chance at the smallest d on the grid
        assert acc[0] > 2 * r["chance"], (name, acc[0], r["chance"])
        # d90 exists and is far below the parameter count
        assert r["d90"] is not None and r["d90"] in dims
        assert r["d90"] < 0.1 * r["n_params"], (name, r["d90"], r["n_params"])
        i = dims.index(r["d90"])
        assert acc[i] >= 0.9 * r["baseline"] and all(a < 0.9 * r["baseline"] for a in acc[:i])
    assert res["digits"]["d90"] < 0.01 * res["digits"]["n_params"]
    # the three projections give similar accuracies at equal d
    assert res["projection_spread"] < 0.1
    # section 3's prose: the spread is largest at the smallest d, of the same order as redrawing one projection's
    # random subspace, and the projections' d90 on that grid differ by at most one grid point
    pr = res["projections"]
    assert max(pr["spread"]) == pr["spread"][0] == res["projection_spread"]
    assert len(pr["seed_diff"]) == len(pr["dims"]) and max(pr["seed_diff"]) > 0
    assert max(pr["spread"]) / 3 < max(pr["seed_diff"]) < 3 * max(pr["spread"]), (pr["spread"], pr["seed_diff"])
    idx = [pr["dims"].index(d) if d is not None else len(pr["dims"]) for d in pr["d90"].values()]
    assert len(idx) == 4 and max(idx) - min(idx) <= 1, pr["d90"]
