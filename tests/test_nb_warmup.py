"""Notebook 15 (warm-up, Kalra & Barkeshli 2024) in quick mode: a linear warm-up lets full-batch GD survive larger
peak learning rates than no warm-up; the warm-up run at a peak beyond the catapult range spikes, pushes its
sharpness down and survives where the same peak without warm-up diverges."""

import pytest

from nbutil import notebook_results as _results, run_notebook


@pytest.mark.slow
def test_warmup_notebook_raises_the_largest_surviving_peak_lr():
    res = _results(run_notebook("notebooks/15_warmup.ipynb"))
    sw = res["sweeps"]["relu"]
    warmups, peaks, survived = sw["warmups"], sw["peaks"], sw["survived"]
    assert warmups[0] == 0 and len(warmups) >= 2
    ms = {int(w): v for w, v in sw["max_surviving"].items()}
    assert ms[0] is not None, "even the smallest peak lr diverged without warm-up"
    # the phenomenon: the largest surviving peak lr is larger with warm-up (here by at least one grid step)
    assert ms[warmups[-1]] > ms[0]
    # survival is monotone along the peak lr at every warm-up (no isolated lucky survivors)
    for w, row in zip(warmups, survived):
        k = sum(row)
        assert row == [True] * k + [False] * (len(row) - k), (w, row)
        assert 0 < k < len(peaks), f"warm-up {w}: the grid does not bracket the divergence boundary: {row}"
    # surviving runs end with sharpness at or below the stability line of their peak lr
    for row_ok, row_r in zip(survived, sw["sharp_ratio"]):
        for ok, r in zip(row_ok, row_r):
            if ok:
                assert r is not None and r < 1.05
    # the demonstration runs: without warm-up the peak diverges, with warm-up it survives after a loss spike,
    # with the sharpness pushed well below its initial value
    for act, d in res["demo"].items():
        assert d["no_warmup_status"] == "diverged", act
        assert d["warmup_status"] == "finished", act
        assert d["first_crossing_step"] is not None and d["first_crossing_step"] < d["warmup"], act
        assert d["spikes_in_warmup"] >= 1 and d["max_loss_over_l0"] > 1, act
        assert d["lambda_end_over_lam0"] < 0.5 and d["final_loss_over_l0"] < 0.1, act
