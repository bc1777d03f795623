"""Notebook 10 (grokking, Power et al. 2022; Nanda et al. 2023) in quick mode: modular addition with AdamW and
weight decay fits its training pairs while test accuracy is still near chance, and generalises much later; the
same budget without weight decay does not generalise; the weight norm falls across the jump."""
import pytest

from nbutil import notebook_results, run_notebook


@pytest.mark.slow
def test_grokking_notebook_generalises_long_after_memorising():
    res = notebook_results(run_notebook("notebooks/10_grokking.ipynb"))
    assert res["quick"] is True
    # memorised: training accuracy reached 100% while test accuracy was at most 0.5 ...
    assert res["memorised_step"] is not None and res["test_acc_at_memorised"] <= 0.5
    # ... and test accuracy ends >= 0.9, reaching 0.9 several times later than the memorisation step
    assert res["final_train_acc"] == 1.0 and res["final_test_acc"] >= 0.9
    assert res["grokked_step"] is not None and res["grokked_step"] >= 3 * res["memorised_step"]
    # without weight decay the same budget memorises but does not generalise
    assert res["nowd_memorised_step"] is not None
    assert res["nowd_final_test_acc"] < res["final_test_acc"] and res["nowd_final_test_acc"] <= 0.5
    # the weight norm falls across the jump (from its peak to the end), and stays far below the no-decay run's
    assert res["wn_final"] < 0.97 * res["wn_peak"] and res["wn_peak_step"] < res["grokked_step"]
    assert res["nowd_wn_final"] > 1.2 * res["wn_final"]
