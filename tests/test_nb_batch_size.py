"""Notebook 13 (batch size and sharpness: Keskar et al. 2017, Jastrzębski et al., Wu, Ma & E 2018) in quick mode:
at one learning rate the final λ_max(H) and tr(H) shrink as the batch shrinks (8 < 32 < 128), every run meets
Wu et al.'s non-uniformity bound s <= sqrt(B(n-1)/(n-B))/η, and the smallest batch ends well inside a <= 2/η."""

import pytest

from nbutil import notebook_results as _results, run_notebook


@pytest.mark.slow
def test_smaller_batches_end_flatter():
    res = _results(run_notebook("notebooks/13_batch_size_sharpness.ipynb"))
    assert res["quick"] is True
    assert all(s == "finished" for s in res["statuses"]), res["statuses"]
    sizes = res["batch_sizes"]
    assert sizes == sorted(sizes) and len([b for b in sizes if b < res["n_train"]]) >= 3
    mean = res["mean"]
    a = [mean[str(b)]["a"] for b in sizes]
    tr = [mean[str(b)]["trace"] for b in sizes]
    # final sharpness (seed mean) decreases as the batch size decreases, and so does the trace
    assert all(x < y for x, y in zip(a, a[1:])), a
    assert all(x < y for x, y in zip(tr, tr[1:])), tr
    # linear stability (Wu, Ma & E 2018): the non-uniformity bound holds for every run; the smallest batch sits
    # clearly below 2/η
    for f in res["final"]:
        assert f["s_ratio"] <= 1.0, f
    assert mean[str(sizes[0])]["a_ratio"] < 0.9, mean[str(sizes[0])]
    # the largest SGD batch ends at the edge of stability (a/(2/η) >= the printed threshold for every seed), the
    # smallest inside it
    sgd = [b for b in sizes if b < res["n_train"]]
    ratios = {b: [f["a_ratio"] for f in res["final"] if f["batch_size"] == b] for b in sgd}
    assert res["where"][str(sgd[-1])] == "edge" and min(ratios[sgd[-1]]) >= res["edge_threshold"], ratios
    assert res["where"][str(sgd[0])] == "inside" and max(ratios[sgd[0]]) < res["edge_threshold"], ratios
