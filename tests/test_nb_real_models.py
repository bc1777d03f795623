"""Notebook 06 (real models) in quick mode: a BatchNorm ResNet trained by full-batch GD on real Fashion-MNIST learns
(loss down, test accuracy far above chance), its train-mode sharpness is tracked with small residuals and agrees
with a separate Lanczos solve at the end, the top-5 eigenpairs converge, the SLQ density integrates to one, the
no-skip twin trains too, and both filter-normalized landscapes are finite, centred on the network's own loss and
roughness-scored."""
import json
import math

import pytest

from nbutil import run_notebook


def _results(nb):
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    lines = [l for l in text.splitlines() if l.startswith("RESULTS ")]
    assert len(lines) == 1, "the notebook prints exactly one RESULTS line"
    return json.loads(lines[0][len("RESULTS "):])


@pytest.mark.slow
def test_real_models_notebook_quick_mode():
    res = _results(run_notebook("notebooks/06_real_models.ipynb"))
    assert res["quick"] is True and res["device"] == "cpu"
    assert res["problem"] in ("fashion-resnet", "cifar-resnet")
    chance = 1 / res["n_classes"]

    # training: the loss falls by more than half, the test accuracy ends far above chance (and above its start)
    assert res["status"] == "finished"
    assert res["loss_last"] < 0.5 * res["loss_first"], (res["loss_first"], res["loss_last"])
    assert res["test_acc"] > chance + 0.25, res["test_acc"]
    assert res["test_acc"] > res["test_acc_first"] + 0.2

    # sharpness probe (train mode, full batch): finite, positive, every Lanczos solve converged with residual
    # ‖Hv − λv‖ at most the probe tolerance (1e-2) × λ
    sh = res["sharpness"]
    assert sh["all_finite_positive"] and sh["all_converged"]
    assert sh["max_rel_residual"] <= 1e-2
    assert sh["lam0"] > 0 and math.isclose(sh["lr"], 2 / (sh["rise"] * sh["lam0"]), rel_tol=1e-9)
    assert 0 < sh["max_ratio"] and sh["final_ratio"] <= sh["max_ratio"]

    # top-5 eigenpairs at the end: converged, descending, positive top, residuals within the 1e-3 tolerance, and
    # the last probe (tolerance 1e-2) agrees with this separate solve
    eg = res["eigs"]
    vals, resid = eg["values"], eg["residuals"]
    assert eg["converged"] and len(vals) == 5
    assert vals == sorted(vals, reverse=True) and vals[0] > 0
    assert all(r <= 1e-3 * max(abs(v), 1e-3 * vals[0]) for v, r in zip(vals, resid)), (vals, resid)
    assert abs(sh["final"] - vals[0]) <= 2e-2 * vals[0], (sh["final"], vals[0])
    assert eg["eval_mode_converged"] and eg["eval_mode_top"] > 0
    assert abs(res["density_integral"] - 1) < 1e-3

    # the network without skip connections trains as well (same step size)
    ns = res["noskip"]
    assert ns["status"] == "finished" and ns["loss_last"] < 0.7 * ns["loss_first"]
    assert ns["test_acc"] > chance + 0.15
    assert ns["final_sharpness_converged"] and ns["final_sharpness"] > 0

    # landscapes: finite, the grid centre is the network's own train-mode loss, a basin around it
    for key in ("skip", "noskip"):
        ld = res["landscape"][key]
        assert ld["finite"], key
        assert math.isclose(ld["centre"], ld["direct_loss"], rel_tol=1e-4), (key, ld)
        assert ld["edge_rise"] > 1.5, (key, ld["edge_rise"])
        assert ld["centre_is_minimum"], (key, "the trained network is not a local minimum of its own grid")
        assert 0 <= ld["nonconvex_fraction"] <= 1 and ld["spurious_minima"] == ld["local_minima"] - 1, (key, ld)
    assert res["verdict"] in ("noskip_rougher", "skip_rougher", "similar")

    # where the non-convexity sits, and the convex-looking flag the prose relies on: consistent with the numbers
    for key in ("skip", "noskip"):
        ld = res["landscape"][key]
        assert 0 <= ld["nonconvex_fraction_inner"] <= 1, (key, ld)
        assert ld["convex_core_steps"] >= -1 and ld["convex_core_radius"] <= 1.0 + 1e-9, (key, ld)
        assert ld["step_rise"] > 1, (key, ld)                        # the centre is a minimum: its neighbours are higher
        assert ld["convex_looking"] == (ld["nonconvex_fraction"] < 0.1 and ld["spurious_minima"] == 0), (key, ld)
        # the prose says: at these sizes neither surface is a convex-looking basin; over half the grid is non-convex
        assert not ld["convex_looking"] and ld["nonconvex_fraction"] > 0.5, (key, ld)
