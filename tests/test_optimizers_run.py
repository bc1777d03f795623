"""Optimizers inside ``wb.train``: hot swap, closure-driven optimizers, Schedule-Free evaluation swap, the
optimizer probes, and notebook 05."""
from __future__ import annotations

import json
import math

import pytest
import torch

import workbench as wb
from workbench.probes.optimizer import SAMProbe, ZerothOrderProbe

OPT = wb.optimizers


def _small_problem():
    return wb.problems.make("gaussian-mixture", seed=0, n_train=64, n_test=16, width=8, depth=1)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _manual(prob, phases):
    """Full-batch training by hand: phases = [(optimizer name, hparams, steps), ...], fresh state per phase."""
    model = prob.copy_model()
    params = [p for p in model.parameters() if p.requires_grad]
    batch = prob.data("train")
    for name, hp, steps in phases:
        opt = OPT.make(name, params, **hp)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            model.train()
            prob.loss(model, batch).backward()
            opt.step()
    return model


@pytest.mark.parametrize("background", [False, True])
def test_hot_swap_sgd_to_adam_equals_sgd_then_fresh_adam(background):
    prob = _small_problem()
    k, steps = 7, 15

    def callback(row):
        if row["step"] == k - 1:           # after update k-1: the swap applies before update k
            run.hot_swap("adam", lr=0.01)

    run = wb.Run(prob, optimizer="sgd", lr=0.1, momentum=0.9, steps=steps, device="cpu", callback=callback,
                 progress=False)
    if background:
        run.start()
        assert run.wait(120)
    else:
        run.run()
    assert run.status == "finished"
    ref = _manual(prob, [("sgd", {"lr": 0.1, "momentum": 0.9}, k), ("adam", {"lr": 0.01}, steps - k)])
    torch.testing.assert_close(_flat(run.model), _flat(ref), rtol=1e-5, atol=1e-6)
    # and it differs from never switching
    ref_sgd = _manual(prob, [("sgd", {"lr": 0.1, "momentum": 0.9}, steps)])
    assert not torch.allclose(_flat(run.model), _flat(ref_sgd), atol=1e-4)
    rec = run.record
    assert list(rec.optimizer.values[:k]) == ["sgd"] * k and list(rec.optimizer.values[k:]) == ["adam"] * (steps - k)
    events = json.loads(rec.attrs["events"])
    assert events == [{"step": k, "optimizer": "adam", "hparams": OPT.spec("adam").validate({"lr": 0.01}),
                       "changed": ["lr"], "state": "reset"}]


def test_hot_swap_adam_to_adamw_carries_moments():
    prob = _small_problem()
    k, steps = 5, 10

    def callback(row):
        if row["step"] == k - 1:
            run.hot_swap("adamw", weight_decay=0.0)

    run = wb.Run(prob, optimizer="adam", lr=0.01, steps=steps, device="cpu", callback=callback, progress=False)
    run.run()
    # AdamW with wd=0 and carried moments is exactly Adam continued
    ref = _manual(prob, [("adam", {"lr": 0.01}, steps)])
    torch.testing.assert_close(_flat(run.model), _flat(ref), rtol=1e-5, atol=1e-6)
    assert json.loads(run.record.attrs["events"])[0]["state"] == "carried"
    # without carrying, the fresh moments change the trajectory
    def callback2(row):
        if row["step"] == k - 1:
            run2.hot_swap("adamw", carry_state=False, weight_decay=0.0)

    run2 = wb.Run(prob, optimizer="adam", lr=0.01, steps=steps, device="cpu", progress=False, callback=callback2)
    run2.run()
    assert json.loads(run2.record.attrs["events"])[0]["state"] == "reset"
    assert not torch.allclose(_flat(run2.model), _flat(ref), atol=1e-5)


def test_hot_swap_hyperparameter_kept_and_construction_time_rebuilt():
    prob = _small_problem()

    def callback(row):
        if row["step"] == 2:
            run.hot_swap(lr=0.05)
        if row["step"] == 4:
            run.hot_swap(update_period=3)

    run = wb.Run(prob, optimizer="sophia", lr=0.1, steps=8, device="cpu", callback=callback, progress=False)
    run.run()
    ev = json.loads(run.record.attrs["events"])
    assert [e["state"] for e in ev] == ["kept", "rebuilt, state carried"]
    assert run.optimizer.update_period == 3 and run.hparams["lr"] == 0.05
    assert run.record.lr.values[3] == pytest.approx(0.05)


@pytest.mark.parametrize("name,lr", [("sam", 0.1), ("asam", 0.1), ("zo_sgd", 0.01), ("lbfgs", 0.5),
                                     ("sophia", 0.05), ("adahessian", 0.05)])
def test_closure_optimizers_train_without_user_effort(name, lr):
    prob = _small_problem()
    run = wb.train(prob, optimizer=name, lr=lr, steps=40, device="cpu", progress=False)
    assert run.status == "finished"
    loss = run.record.loss.values
    assert all(math.isfinite(v) for v in loss)
    assert loss[-1] < loss[0]


def test_schedule_free_probes_see_the_average():
    prob = wb.problems.make("quadratic")
    run = wb.train(prob, optimizer="schedulefree_sgd", lr=0.1, steps=12, probes=[wb.probes.Trajectory(every=1)],
                   progress=False)
    traj = run.record.trajectory.values
    y = _flat(run.model)                       # training point y_T in the parameters
    run.optimizer.eval()
    x = _flat(run.model)                       # evaluation point x_T
    run.optimizer.train()
    assert not torch.allclose(x, y)
    torch.testing.assert_close(torch.as_tensor(traj[-1], dtype=x.dtype), x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_flat(run.model), y)   # the probe left the training point in place


def test_sam_probe_on_saddle():
    prob = wb.problems.make("saddle")
    run = wb.train(prob, optimizer="sam", lr=0.05, rho=0.1, steps=10, probes=[SAMProbe(every=1)], progress=False)
    rec = run.record
    norms = rec.sam_perturbation_norm.values[:-1]
    assert norms == pytest.approx([0.1] * 10)
    assert math.isnan(rec.sam_perturbation_norm.values[-1])     # final call: no update
    traj_theta = rec.sam_ascent_point.values[0]
    x0 = torch.tensor([-1.5, 1e-3])
    g0 = torch.tensor([2 * -1.5, -2 * 1e-3])
    torch.testing.assert_close(torch.as_tensor(traj_theta, dtype=torch.float32), x0 + 0.1 * g0 / g0.norm(),
                               rtol=1e-5, atol=1e-6)


def test_zeroth_order_probe_cosine_matches_direct_computation():
    prob = _small_problem()
    run = wb.train(prob, optimizer="zo_sgd", lr=0.01, n_samples=4, steps=3,
                   probes=[ZerothOrderProbe(every=1)], progress=False)
    cos = run.record.zo_cosine.values
    assert all(-1 <= c <= 1 for c in cos[:-1]) and math.isnan(cos[-1])
    # recompute the last step's cosine from scratch: gradient at theta_2 and the estimate from its seeds
    model = prob.copy_model()
    opt = OPT.make("zo_sgd", list(model.parameters()), lr=0.01, n_samples=4)
    batch = prob.data("train")
    for t in range(3):
        model.zero_grad()
        loss = prob.loss(model, batch)
        loss.backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        opt.step(lambda backward=True, create_graph=False: prob.loss(model, batch))
    est = opt.estimate()
    assert float(est @ g / (est.norm() * g.norm())) == pytest.approx(cos[2], rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_notebook_05_runs():
    import re
    from nbutil import run_notebook
    nb = run_notebook("notebooks/05_optimizer_trajectories.ipynb")
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    # Rastrigin: every method but SAM ends in the basin gradient descent rolls into; SAM (lr above 2/lambda of the
    # local minima) hops basins and ends with the highest f; gradient descent at SAM's lr bounces in the start's basin
    assert "gradient descent ends in the basin of (3, -2)" in out
    assert "; elsewhere: sam\n" in out and "(the race's highest: sam)" in out
    assert "control, gd at sam's lr 0.01: basins in order (3, -2);" in out
    lam = float(re.search(r"largest Hessian eigenvalue at that local minimum: (\d+)", out).group(1))
    assert 0.01 > 2 / lam
    # the saddle (section 3): gradient descent and SAM with rho = 0.05 escape, SAM with rho = 0.3 is drawn in
    assert re.search(r"gd +final .*: escaped along y", out)
    assert re.search(r"sam ρ=0.05 +final .*never inside the disc ‖θ‖ < ρ: escaped along y", out)
    assert re.search(r"sam ρ=0.3 +final .*inside the disc ‖θ‖ < ρ from step \d+: drawn into the saddle", out)
