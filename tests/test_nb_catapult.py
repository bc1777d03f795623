"""Notebook 11 (catapult phase, Lewkowycz et al. 2020) in quick mode: the phase diagram along ηλ0 has the lazy,
catapult and divergent regions in that order, catapult runs spike above their initial loss and end with sharpness
below 2/η, lazy runs keep their sharpness."""
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
