"""Notebook 11 (catapult phase, Lewkowycz et al. 2020) in quick mode: the phase diagram along ηλ0 has the lazy,
catapult and divergent regions in that order, catapult runs spike above their initial loss and end with sharpness
below 2/η, lazy runs keep their sharpness. In the step-by-step catapult runs (ηλ0 = 3) the loss turns around
within a handful of steps while the Hessian's λ is still above 2/η (ReLU: the Gauss-Newton part is already below;
linear: it is not, and the step's nonlinear term turns the loss), and once λ is below 2/η the loss never grows."""
import math

import pytest

from nbutil import notebook_results as _results, run_notebook

PHASES = ("lazy", "catapult", "diverged")


@pytest.mark.slow
def test_catapult_notebook_shows_three_phases_in_order():
    res = _results(run_notebook("notebooks/11_catapult.ipynb"))
    factors = res["factors"]
    assert factors == sorted(factors) and factors[0] < 2 < factors[-1]
    for act, r in res["activations"].items():
        for s, phases in enumerate(r["phase"]):
            idx = [PHASES.index(p) for p in phases]
            assert idx == sorted(idx), f"{act} seed {s}: phases out of order along lr: {phases}"
            assert set(phases) == set(PHASES), f"{act} seed {s}: not all three regions appear: {phases}"
            for i, (f, ph) in enumerate(zip(factors, phases)):
                if f < 2:   # below the stability line GD is lazy: no loss increase, sharpness ~ lambda0
                    assert ph == "lazy", (act, f, ph)
                if ph == "lazy":
                    assert r["peak"][s][i] <= 1.0 and abs(r["lam_T_over_lam0"][s][i] - 1) < 0.1, (act, f)
                if ph == "catapult":
                    assert f > 2, (act, f)
                    assert r["peak"][s][i] > 1.0, f"{act} ηλ0={f}: no loss spike above the initial loss"
                    assert r["sharp_ratio"][s][i] < 1.0, f"{act} ηλ0={f}: final sharpness not below 2/lr"
                    assert r["final_loss"][s][i] < 1.0
                if ph == "diverged":
                    assert r["sharp_ratio"][s][i] is None or math.isnan(r["sharp_ratio"][s][i])
        for lo, hi in r["catapult_to_diverged"]:
            assert 2 < lo < hi
    # the ReLU network tolerates larger steps than the linear one (paper: ~12 vs 4), seed by seed
    acts = res["activations"]
    for (lo_relu, _), (_, hi_linear) in zip(acts["relu"]["catapult_to_diverged"],
                                            acts["linear"]["catapult_to_diverged"]):
        assert lo_relu >= hi_linear
    # the catapult runs step by step (section 3 of the notebook)
    curves = res["catapult_curves"]
    assert set(curves) == set(acts)
    for act, c in curves.items():
        assert c["peak_step"] < 12 and c["peak_over_L0"] > 1, (act, c)          # a handful of steps up
        assert c["ratio_at_peak"] > 1, (act, c)            # the loss turns around before λ is below 2/η ...
        assert c["cross_step"] > c["peak_step"], (act, c)
        assert c["max_growth_after_cross"] <= 1.001, (act, c)   # ... and never grows once it is
        assert c["end_ratio"] < 1, (act, c)
    lin, relu = curves["linear"], curves["relu"]
    # ReLU: the Gauss-Newton curvature is below 2/η at the peak, the linearised step already lowers the loss, and
    # the Hessian's λ follows within two steps; one spike, landing far below the line
    assert relu["gn_ratio_at_peak"] < 1 and relu["linear_next_over_peak"] < 1, relu
    assert relu["cross_step"] - relu["peak_step"] <= 2 and relu["loss_maxima"] == [relu["peak_step"]], relu
    assert relu["end_ratio"] < lin["end_ratio"] and relu["gn_ratio_after_first"] < 1 < relu["gn_ratio_start"], relu
    # linear: Gauss-Newton curvature above 2/η at the peak, the linearised step would raise the loss, the actual step
    # lowers it; then smaller bounces until λ crosses 2/η, later than for ReLU
    assert lin["gn_ratio_at_peak"] > 1 and lin["linear_next_over_peak"] > 1 > lin["next_over_peak"], lin
    assert len(lin["loss_maxima"]) > 1 and lin["loss_maxima"][0] == lin["peak_step"], lin
    assert 1 < lin["gn_ratio_after_first"] < lin["gn_ratio_start"], lin       # the first spike leaves λ_GN above
    assert lin["cross_step"] - lin["peak_step"] > relu["cross_step"] - relu["peak_step"]
