"""Notebook 07 (spectra at scale) in quick mode: a BatchNorm ResNet and its no-BatchNorm twin, Hessians under a
memory budget (microbatched, equal to the one-batch operator in eval mode), converged top eigenvalues and SLQ
densities for eval mode, train mode and no BatchNorm, per-stage block spectra bounded by lambda_max (Cauchy
interlacing), and the data-subset spread of lambda_max."""
import math

import pytest

from nbutil import notebook_results, run_notebook


@pytest.mark.slow
def test_spectra_at_scale_notebook_quick_mode():
    res = notebook_results(run_notebook("notebooks/07_spectra_at_scale.ipynb"))
    assert res["quick"] is True and res["device"] == "cpu"
    n = res["n_train"]
    assert all(t["status"] == "finished" for t in res["train"].values())

    # the budget split the data into several microbatches, and microbatching is exact in eval mode (float32)
    mem = res["memory"]
    assert res["n_microbatches"] >= 2 and mem["batch_size"] < n and mem["per_example"] > 0
    assert mem["budget"] >= mem["fixed"] + mem["batch_size"] * mem["per_example"]
    assert res["micro_err"] < 1e-4

    # top eigenvalues: converged, descending, on all the data; densities integrate to one
    for name, t in res["top"].items():
        vals = t["values"]
        assert t["converged"] and t["n_examples"] == n, name
        assert vals == sorted(vals, reverse=True) and vals[0] > 0, name
        assert abs(t["density_integral"] - 1) < 1e-3, name
    assert math.isclose(res["ratio_train_eval"], res["top"]["bn train"]["values"][0] / res["top"]["bn eval"]["values"][0])
    # the prose: eval-mode lambda_max of the BatchNorm net several times its train-mode one, both above the
    # BatchNorm-free net's; the Lanczos error bound a tiny fraction of lambda_max; about half the density below zero
    lam = {name: t["values"][0] for name, t in res["top"].items()}
    assert lam["bn eval"] > 2 * lam["bn train"] and lam["bn train"] > lam["no bn"], lam
    assert res["ratio_train_eval"] < 0.5 and res["ratio_nobn_bn"] < 0.5
    assert res["lambda_err"] < 1e-3
    assert all(abs(t["negative_mass"] - 0.5) < 0.1 for t in res["top"].values())
    # the BatchNorm-free net is still at chance (accuracy and loss); its BatchNorm twin is better than chance
    assert res["at_chance"] is True
    assert abs(res["train"]["nobn"]["acc_eval"] - res["chance"]) < 0.1
    assert res["train"]["bn"]["acc_eval"] > res["train"]["nobn"]["acc_eval"]
    assert res["train"]["bn"]["loss_eval"] < res["train"]["nobn"]["loss_eval"]

    # per-stage blocks: converged, cover every parameter once, and none exceeds lambda_max of the whole Hessian
    for name, b in res["blocks"].items():
        assert b["converged"], name
        assert sum(b["n_params"]) == res["sizes"][name], name
        lam = res["top"][name]["values"][0]
        assert all(x <= lam * 1.02 for x in b["top"]), (name, b["top"], lam)

    # data-subset spread: four disjoint subsets covering the data, ordered summary statistics
    for name, s in res["spread"].items():
        assert s["converged"] and len(s["sizes"]) == 4 and sum(s["sizes"]) == n, name
        assert s["min"] <= s["mean"] <= s["max"] and s["std"] > 0, name
        assert math.isclose(s["full"], res["top"][name]["values"][0], rel_tol=2e-2), name
        assert min(s["values"]) == s["min"] and max(s["values"]) == s["max"]
        # Jensen: lambda_max is convex and the full Hessian is the mean of the equal-size subset Hessians
        assert s["mean"] >= s["full"] * (1 - 2e-2), name
