"""Training-dynamics probes (workbench.probes.curvature): closed-form and dense checks."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.optim.builtin import adam_preconditioner
from workbench.probes import (BatchSharpness, GradientSubspace, Sharpness, SpectralDensity, Trace,
                              stability_threshold)


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _quadratic(l1=3.0, l2=10.0, angle=0.3):
    return wb.problems.make("quadratic", lambda1=l1, lambda2=l2, angle=angle)


def _linear(dim=6, n_train=40, seed=0):
    """Linear student (depth 0): Hessian 2 [X 1]^T [X 1] / n exactly."""
    prob = wb.problems.make("teacher-student", seed=seed, dim=dim, depth=0, n_train=n_train, n_test=8,
                            teacher_width=0, noise=0.1)
    x, _ = prob.data()
    A = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
    H = 2 * A.T @ A / x.shape[0]
    return prob, H


def _tiny_classifier(seed=0):
    return wb.problems.make("gaussian-mixture", seed=seed, classes=3, dim=3, width=4, depth=1, n_train=30,
                            n_test=10, activation="tanh")


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _dense_hessian_and_grad(prob, model, data):
    """Dense Hessian and gradient of prob.loss at the model's parameters (float64), eval mode."""
    model = model.eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [math.prod(s) for s in shapes]
    theta = _flat(model).double()

    def f(flat):
        parts = torch.split(flat, sizes)
        params = {n: t.reshape(s).float() for n, t, s in zip(names, parts, shapes)}
        x, y = data
        out = torch.func.functional_call(model, params, (x,))
        return prob.loss_fn(out, y).double()

    H = torch.autograd.functional.hessian(f, theta)
    g = torch.autograd.functional.jacobian(f, theta)
    return H, g


# ----------------------------------------------------------------------------------------------------------------
# thresholds
# ----------------------------------------------------------------------------------------------------------------
def test_stability_threshold_rules():
    assert stability_threshold("gd", {"lr": 0.1}) == (pytest.approx(20.0), "sharpness")
    v, kind = stability_threshold("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": False})
    assert kind == "sharpness" and v == pytest.approx(3.8 / 0.1)
    v, _ = stability_threshold("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True})
    assert v == pytest.approx(3.8 / (2.8 * 0.1))
    v, kind = stability_threshold("adam", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999}, lr=2e-3)
    assert kind == "preconditioned_sharpness" and v == pytest.approx(3.8 / (0.1 * 2e-3))


# ----------------------------------------------------------------------------------------------------------------
# Sharpness
# ----------------------------------------------------------------------------------------------------------------
def test_sharpness_quadratic_exact_top_eigenvalue_and_gd_threshold():
    run = wb.train(_quadratic(), "gd", lr=0.05, steps=20, probes=[Sharpness(every=5, k=2)], progress=False)
    rec = run.record
    assert list(rec.sharpness_step.values) == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(rec.sharpness.values, 10.0, rtol=1e-5)
    np.testing.assert_allclose(rec.sharpness_eigenvalues.values, [[10.0, 3.0]] * 5, rtol=1e-5)
    np.testing.assert_allclose(rec.sharpness_threshold.values, 2 / 0.05, rtol=1e-12)
    np.testing.assert_allclose(rec.sharpness_ratio.values, 10.0 / 40.0, rtol=1e-5)
    assert (rec.sharpness_residuals.values < 1e-4).all()
    assert (rec.sharpness_converged.values == 1).all()
    assert (rec.sharpness_hvps.values >= 1).all()
    assert np.isnan(rec.sharpness_preconditioned.values).all()          # gd has no preconditioner
    assert rec.sharpness_eigenvalues.dims == ("sharpness_step", "eig")
    for v in ("sharpness", "sharpness_threshold", "sharpness_hvps", "sharpness_seconds"):
        assert rec[v].attrs["long_name"] and "description" in rec[v].attrs


def test_sharpness_linear_model_top_k_matches_closed_form():
    prob, H = _linear()
    exact = torch.linalg.eigvalsh(H).flip(0)[:3].numpy()
    run = wb.train(prob, "gd", lr=0.01, steps=6, probes=[Sharpness(every=3, k=3, tol=1e-6)], progress=False)
    vals = run.record.sharpness_eigenvalues.values
    np.testing.assert_allclose(vals, np.tile(exact, (vals.shape[0], 1)), rtol=1e-4)


def test_sharpness_warm_start_saves_products():
    """The Hessian of a linear model is constant: warm-started calls need far fewer products than the first."""
    prob, _ = _linear(dim=30, n_train=100)
    probe = Sharpness(every=1, k=1)
    rec = wb.train(prob, "gd", lr=0.01, steps=5, probes=[probe], progress=False).record
    hv = rec.sharpness_hvps.values
    assert (hv[1:] < hv[0]).all(), hv
    cold = wb.train(prob, "gd", lr=0.01, steps=5, probes=[Sharpness(every=1, warm_start=False)],
                    progress=False).record.sharpness_hvps.values
    assert (cold[1:] > hv[1:]).all(), (cold, hv)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_threshold(nesterov):
    b, lr = 0.9, 0.02
    run = wb.train(_quadratic(), "sgd", lr=lr, momentum=b, nesterov=nesterov, steps=10,
                   probes=[Sharpness(every=5)], progress=False)
    expected = (2 + 2 * b) / ((1 + 2 * b) * lr) if nesterov else (2 + 2 * b) / lr
    np.testing.assert_allclose(run.record.sharpness_threshold.values, expected, rtol=1e-12)
    np.testing.assert_allclose(run.record.sharpness.values, 10.0, rtol=1e-5)


def test_schedule_moves_threshold():
    run = wb.train(_quadratic(), "gd", lr=0.05, steps=40, schedule="cosine", min_lr_ratio=0.1,
                   probes=[Sharpness(every=4)], progress=False)
    rec = run.record
    steps = rec.sharpness_step.values[:-1]               # the final call (step 40) has no update of its own
    thr = rec.sharpness_threshold.values[:-1]
    np.testing.assert_allclose(thr, 2.0 / rec.lr.values[steps], rtol=1e-12)
    assert thr[-1] > 2 * thr[0]                          # the lr fell, the threshold rose


def test_hot_swap_lr_moves_threshold():
    prob = _quadratic()
    seen = []

    def cb(row):
        if row["step"] == 4:
            run.hot_swap(lr=0.01)
        seen.append(row["step"])

    run = wb.Run(prob, "gd", lr=0.05, steps=10, probes=[Sharpness(every=2)], callback=cb, progress=False)
    run.run()
    rec = run.record
    thr = dict(zip(rec.sharpness_step.values.tolist(), rec.sharpness_threshold.values))
    assert thr[4] == pytest.approx(40.0) and thr[6] == pytest.approx(200.0)


def test_adam_preconditioned_sharpness_matches_dense():
    prob = _tiny_classifier()
    data = prob.data()
    run = wb.train(prob, "adam", lr=0.01, steps=7, probes=[Sharpness(every=1, tol=1e-6)], progress=False)
    rec = run.record
    # step 0: no optimizer state yet -> NaN and a note
    assert math.isnan(float(rec.sharpness_preconditioned.values[0]))
    assert "no preconditioner state" in rec.attrs["sharpness_notes"]
    assert np.isfinite(rec.sharpness_preconditioned.values[1:]).all()
    # the final call (probe step 7) sees run.model and the optimizer state after the last update
    H, _ = _dense_hessian_and_grad(prob, run.model, data)
    P = torch.cat([p.reshape(-1) for p in adam_preconditioner(run.optimizer)]).double()
    d = P.rsqrt()
    dense = float(torch.linalg.eigvalsh(d[:, None] * H * d[None, :]).max())
    # and λ_max(P^-1 H) from the (non-symmetric) product agrees
    assert dense == pytest.approx(float(torch.linalg.eigvals(H / P[:, None]).real.max()), rel=1e-6)
    assert float(rec.sharpness_preconditioned.values[-1]) == pytest.approx(dense, rel=1e-4)
    assert float(rec.sharpness.values[-1]) == pytest.approx(float(torch.linalg.eigvalsh(H).max()), rel=1e-4)
    thr = (2 + 2 * 0.9) / ((1 - 0.9) * 0.01)
    np.testing.assert_allclose(rec.sharpness_threshold.values, thr, rtol=1e-12)
    np.testing.assert_allclose(rec.sharpness_ratio.values[1:], rec.sharpness_preconditioned.values[1:] / thr,
                               rtol=1e-12)


def test_optimizer_without_rule_gives_nan_threshold_and_note():
    names = [n for n in wb.optimizers.list() if wb.optimizers.spec(n).threshold is None
             and not wb.optimizers.spec(n).needs_closure]
    if not names:
        pytest.skip("every registered optimizer has a stability rule")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = wb.train(_quadratic(), names[0], steps=3, probes=[Sharpness(every=1)], progress=False)
    rec = run.record
    assert np.isnan(rec.sharpness_threshold.values).all()
    assert "no stability-threshold rule" in rec.attrs["sharpness_notes"]
    np.testing.assert_allclose(rec.sharpness.values[np.isfinite(rec.sharpness.values)], 10.0, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# GradientSubspace
# ----------------------------------------------------------------------------------------------------------------
def test_gradient_fraction_matches_dense_projection():
    prob = _tiny_classifier()
    data = prob.data()
    k = 3
    run = wb.train(prob, "gd", lr=0.5, steps=6, probes=[GradientSubspace(every=3, k=k, tol=1e-7)],
                   progress=False)
    rec = run.record
    H, g = _dense_hessian_and_grad(prob, run.model, data)
    w, U = torch.linalg.eigh(H)
    assert float(w[-k] - w[-k - 1]) > 1e-3 * float(w[-1])     # the top-k subspace is well defined
    V = U[:, -k:]
    dense = float((V.T @ g).pow(2).sum() / g.pow(2).sum())
    assert float(rec.subspace_fraction.values[-1]) == pytest.approx(dense, rel=1e-3, abs=1e-6)
    np.testing.assert_allclose(rec.subspace_eigenvalues.values[-1], w[-k:].flip(0).numpy(), rtol=1e-4)
    assert rec.subspace_eigenvalues.dims == ("subspace_step", "subspace_eig")
    # full batch in train == eval mode for an MLP: the mini-batch fraction is the same number
    np.testing.assert_allclose(rec.subspace_fraction_batch.values[:-1], rec.subspace_fraction.values[:-1],
                               rtol=1e-4, atol=1e-7)
    assert math.isnan(float(rec.subspace_fraction_batch.values[-1]))   # final call has no mini-batch
    assert math.isnan(float(rec.subspace_overlap.values[0]))
    assert ((rec.subspace_overlap.values[1:] >= 0) & (rec.subspace_overlap.values[1:] <= 1 + 1e-6)).all()


def test_random_subspace_baseline_is_k_over_n_and_constant_hessian_overlap_is_one():
    prob, _ = _linear(dim=16, n_train=64)       # n = 17 parameters
    k, n = 4, 17
    run = wb.train(prob, "gd", lr=0.01, steps=59, probes=[GradientSubspace(every=1, k=k, tol=1e-6)],
                   progress=False)
    rec = run.record
    rf = rec.subspace_random_fraction.values
    assert len(rf) == 60
    # Beta(k/2, (n-k)/2): mean k/n = 0.235, sd 0.137; the mean of 60 draws is within 4 sd = 0.071
    assert abs(rf.mean() - k / n) < 0.071
    assert rec.attrs["subspace_random_expected"] == pytest.approx(k / n)
    np.testing.assert_allclose(rec.subspace_overlap.values[1:], 1.0, atol=1e-4)   # H is constant


# ----------------------------------------------------------------------------------------------------------------
# Trace, SpectralDensity, BatchSharpness
# ----------------------------------------------------------------------------------------------------------------
def test_trace_linear_model():
    prob, H = _linear(dim=10, n_train=50)
    rec = wb.train(prob, "gd", lr=0.01, steps=4, probes=[Trace(every=2, n=30)], progress=False).record
    exact = float(torch.trace(H))
    err = np.abs(rec.trace.values - exact)
    assert (err <= np.maximum(4 * rec.trace_stderr.values, 0.05 * exact)).all(), (rec.trace.values, exact)
    assert (rec.trace_hvps.values > 0).all()


def test_spectral_density_fixed_grid_and_mean_eigenvalue():
    prob, H = _linear(dim=10, n_train=50)
    evs = torch.linalg.eigvalsh(H).numpy()
    rec = wb.train(prob, "gd", lr=0.01, steps=4, probes=[SpectralDensity(every=2, probes=8, steps=11)],
                   progress=False).record
    dens = rec.spectrum_density
    assert dens.dims == ("spectrum_step", "spectrum_eigenvalue")
    grid = rec.spectrum_eigenvalue.values
    assert grid[0] <= evs.min() and grid[-1] >= evs.max()
    mass = np.trapezoid(dens.values, grid, axis=1)
    np.testing.assert_allclose(mass, 1.0, atol=0.02)
    mean = np.trapezoid(dens.values * grid, grid, axis=1)
    np.testing.assert_allclose(mean, evs.mean(), rtol=0.25)
    np.testing.assert_allclose(rec.spectrum_lambda_max.values, evs.max(), rtol=1e-3)


def test_spectral_density_user_grid():
    prob, _ = _linear(dim=10, n_train=50)
    grid = np.linspace(-1.0, 20.0, 64)
    rec = wb.train(prob, "gd", lr=0.01, steps=2, probes=[SpectralDensity(every=1, grid=grid)],
                   progress=False).record
    np.testing.assert_allclose(rec.spectrum_eigenvalue.values, grid)
    assert rec.spectrum_density.shape == (3, 64)


def test_batch_sharpness_full_size_batch_equals_full_and_jensen():
    prob, H = _linear(dim=8, n_train=40)
    probe = BatchSharpness(every=2, batch_sizes=[4, 40], n_batches=6, tol=1e-6)
    rec = wb.train(prob, "gd", lr=0.01, steps=2, probes=[probe], progress=False).record
    full = float(torch.linalg.eigvalsh(H).max())
    np.testing.assert_allclose(rec.batch_sharpness_full.values, full, rtol=1e-4)
    b = rec.batch_sharpness.sel(batch_sharpness_batch_size=40).values
    np.testing.assert_allclose(b, full, rtol=1e-4)          # a batch of every example is the full batch
    small = rec.batch_sharpness.sel(batch_sharpness_batch_size=4).values
    assert (small > full).all()                                # E λ_max(H_B) >= λ_max(E H_B) (convexity)
    assert (rec.batch_sharpness_hvps.values > 0).all()


# ----------------------------------------------------------------------------------------------------------------
# isolation, records, bad input
# ----------------------------------------------------------------------------------------------------------------
def test_probes_do_not_perturb_the_run(tmp_path):
    prob = wb.problems.make("digits-mlp", width=8, depth=1, n_train=120)
    kw = dict(optimizer="sgd", lr=0.05, momentum=0.9, steps=8, batch_size=32, seed=3, progress=False)
    plain = wb.train(prob, **kw)
    probes = [Sharpness(every=3, k=2), GradientSubspace(every=4, k=3), Trace(every=5, n=6),
              SpectralDensity(every=4, probes=2, steps=8), BatchSharpness(every=4, batch_sizes=[16, 64]),
              Sharpness(every=3, data="batch", mode="train", name="batch_sharp")]
    probed = wb.train(prob, probes=probes, **kw)
    assert torch.equal(_flat(plain.model), _flat(probed.model))
    np.testing.assert_array_equal(plain.record.loss.values, probed.record.loss.values)
    rec = probed.record
    for v in rec.data_vars:
        if v not in ("loss", "lr", "grad_norm", "wall_time", "optimizer"):
            assert rec[v].attrs.get("long_name"), v
    assert "batch_sharp_eig" in rec.dims and "eig" in rec.dims
    assert math.isnan(float(rec.batch_sharp.values[-1]))        # no mini-batch at the final call
    path = wb.save(rec, tmp_path / "probes.nc")
    back = wb.load(path)
    np.testing.assert_allclose(back.sharpness.values, rec.sharpness.values)
    np.testing.assert_allclose(back.spectrum_density.values, rec.spectrum_density.values)


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="Sharpness.k"):
        Sharpness(k=0)
    with pytest.raises(ValueError, match="Sharpness.mode"):
        Sharpness(mode="inference")
    with pytest.raises(ValueError, match="GradientSubspace.data"):
        GradientSubspace(data="validation")
    with pytest.raises(ValueError, match="Trace.method"):
        Trace(method="exact")
    with pytest.raises(ValueError, match="BatchSharpness.batch_sizes"):
        BatchSharpness(batch_sizes=[])
    with pytest.raises(ValueError, match="SpectralDensity.grid"):
        SpectralDensity(grid=[3.0, 1.0, 2.0])
    # checks that need the problem happen when the run is built: a ValueError, not a crash at step 0 (issue 16)
    for probe, field in ((Sharpness(k=3), "Sharpness.k"), (BatchSharpness(batch_sizes=[2]),
                                                           "BatchSharpness.batch_sizes")):
        with pytest.raises(ValueError, match=field) as err:
            wb.train(_quadratic(), "gd", lr=0.01, steps=1, probes=[probe], progress=False)
        assert not isinstance(err.value, wb.RunCrashed)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(max_value=0), tol=st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda t: not (0 < t < 1)))
def test_property_invalid_k_and_tol_rejected(k, tol):
    with pytest.raises(ValueError, match="Sharpness.k"):
        Sharpness(k=k)
    with pytest.raises(ValueError, match="GradientSubspace.tol"):
        GradientSubspace(tol=tol)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["03_edge_of_stability.ipynb"])   # 04: tests/test_nb_tiny_subspace.py
def test_notebook_runs(name):
    from nbutil import notebook_results, run_notebook

    nb = run_notebook(f"notebooks/{name}")
    if name == "03_edge_of_stability.ipynb":
        _check_edge_of_stability(notebook_results(nb))


def _check_edge_of_stability(res):
    """What notebook 03's prose says, measured on its quick-mode run (RESULTS line)."""
    assert res["quick"]
    gd = sorted(res["gd"], key=lambda e: -e["lr"])                     # largest step first
    meet = [e["t_line"] for e in gd]
    assert None not in meet and meet == sorted(meet) and len(set(meet)) == len(meet), meet   # smaller η: later
    assert res["meeting_later_for_smaller_steps"]
    assert [e["early"] for e in gd] == [True] * (len(gd) - 1) + [False], "only the smallest step meets 2/η late"
    for e in gd[:-1]:                         # hovers at, or slightly above, 2/η and keeps making progress
        assert 1.0 <= e["median"] <= 1.25 and e["q10"] >= 0.95, e
        assert e["loss_final"] < e["loss_at_line"], e
    rows = {r["lr"]: r for r in res["loss_up"]}
    assert all(r["before"] <= 0.02 for r in rows.values() if not math.isnan(r["before"]))   # monotone before
    early = [rows[e["lr"]] for e in gd[:-1]]
    for r in early:                           # non-monotone after the edge, decreasing over longer windows
        assert r["after"] >= 0.10 and 2 * r["windows_down"] > r["windows"], r
    assert rows[gd[-1]["lr"]]["after"] <= 0.01, "the smallest step's loss has begun to oscillate"
    zoom = res["zoom"]
    assert zoom["lr"] == max(res["lrs"]) and zoom["t0"] >= gd[0]["t_line"]
    assert zoom["up"] >= 0.1 * zoom["steps"] and zoom["loss_end"] < zoom["loss_start"], zoom
    for m in res["momentum"]:                 # both momentum runs reach their own threshold
        assert m["t_reach"] is not None and m["peak_ratio"] >= 1.0, m
    heavy = next(m for m in res["momentum"] if not m["nesterov"])
    assert heavy["peak_over_2_lr"] > 1.5      # far above GD's 2/eta without diverging
    for a in res["adam"]:                     # quick mode: rising, but short of 38/eta (as the prose says)
        assert a["t_reach"] is None and a["peak_ratio"] < 1.0 and a["median_second_half"] > a["first_ratio"], a
    cos = res["cosine"]
    assert cos["lr"] == max(res["lrs"])
    assert cos["t_meet"] is not None and cos["lr_frac_at_meet"] >= 0.9, cos          # at the edge first
    assert cos["t_release"] is not None and cos["t_release"] > cos["t_meet"] and cos["ride_median"] >= 0.95, cos
    assert cos["rising_after_release"] and cos["lam_final"] > cos["lam_release"], cos  # released: keeps sharpening
    assert cos["ratio_final"] < 0.9 and cos["lam_final"] > cos["lam_final_constant"], cos
    cost = res["cost"]
    assert cost["warm_median"] <= 8 and cost["first"] > cost["warm_median"], cost
