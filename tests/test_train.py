"""The run loop: update rule, determinism, divergence, stop, callbacks, hot swap, schedules, bad input."""
import math
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import workbench as wb


def test_one_gd_step_is_theta_minus_lr_grad():
    prob = wb.problems.make("digits-mlp", width=16, depth=1, n_train=200)
    model = prob.copy_model()
    batch = prob.data()
    loss = prob.loss(model, batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = [p.detach() - 0.3 * g for p, g in zip(model.parameters(), grads)]
    run = wb.train(prob, optimizer="gd", lr=0.3, steps=1, progress=False)
    for p, e in zip(run.model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)
    assert run.record.loss.values[0] == pytest.approx(float(loss.detach()), rel=1e-6)
    # the problem's own model is untouched
    for p, q in zip(prob.model.parameters(), model.parameters()):
        assert torch.equal(p, q)


def test_gd_on_2d_quadratic_matches_closed_form_iterates():
    lam1, lam2, lr = 1.0, 3.0, 0.2
    prob = wb.problems.make("quadratic", lambda1=lam1, lambda2=lam2, x0=1.0, y0=-1.0)
    run = wb.train(prob, optimizer="gd", lr=lr, steps=20, probes=[wb.probes.Trajectory(every=1)], progress=False)
    traj = run.record.trajectory.values
    t = np.arange(21)
    np.testing.assert_allclose(traj[:, 0], (1 - lr * lam1) ** t, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(traj[:, 1], -(1 - lr * lam2) ** t, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(run.record.loss.values, 0.5 * (lam1 * traj[:-1, 0] ** 2 + lam2 * traj[:-1, 1] ** 2),
                               rtol=1e-5)


def test_same_seed_same_record_minibatch():
    prob = wb.problems.make("gaussian-mixture", classes=3, dim=8, n_train=256)
    kw = dict(optimizer="sgd", lr=0.1, momentum=0.9, steps=30, batch_size=32, progress=False,
              probes=[wb.probes.Norms(every=5), wb.probes.Eval(every=10)])
    a = wb.train(prob, seed=7, **kw).record
    b = wb.train(prob, seed=7, **kw).record
    c = wb.train(prob, seed=8, **kw).record
    for v in ("loss", "grad_norm", "weight_norm", "test_loss"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert not np.array_equal(a.loss.values, c.loss.values)


def test_minibatches_cover_an_epoch_without_repeats():
    prob = wb.problems.make("gaussian-mixture", n_train=64, classes=2, dim=2)
    seen = []
    run = wb.Run(prob, optimizer="sgd", lr=0.01, steps=8, batch_size=16, progress=False)
    x, y = prob.data()
    orig = prob.loss
    prob.loss = lambda model, batch: (seen.append(batch[0].clone()), orig(model, batch))[1]
    try:
        run.run()
    finally:
        prob.loss = orig
    first_epoch = torch.cat(seen[:4])
    rows = {tuple(r.tolist()) for r in first_epoch}
    assert len(rows) == 64 and rows == {tuple(r.tolist()) for r in x}


def test_diverging_run_keeps_its_steps_and_saves(tmp_path):
    prob = wb.problems.make("quadratic", lambda1=1.0, lambda2=10.0)
    run = wb.train(prob, optimizer="gd", lr=0.5, steps=500, probes=[wb.probes.Norms(every=2)], progress=False)
    assert run.status == "diverged"
    rec = run.record
    assert rec.attrs["status"] == "diverged" and rec.attrs["diverged_at"] == run.diverged_at
    n = rec.sizes["step"]
    assert 5 < n < 500 and n == run.diverged_at + 1
    losses = rec.loss.values
    assert np.all(np.isfinite(losses[:-1]))
    # GD on lambda=10 with lr=0.5: the v-coordinate grows by |1 - 5| = 4 per step
    assert losses[5] / losses[4] == pytest.approx(16.0, rel=1e-3)
    path = tmp_path / "div.nc"
    wb.save(rec, path)
    back = wb.load(path)
    assert back.attrs["status"] == "diverged"
    np.testing.assert_array_equal(back.loss.values, losses)


def test_nonfinite_loss_diverges():
    prob = wb.problems.make("quadratic", lambda1=1000.0, lambda2=1000.0)
    run = wb.train(prob, optimizer="gd", lr=100.0, steps=50, max_loss=1e300, progress=False)
    assert run.status == "diverged"
    loss = run.record.loss.values
    assert not np.isfinite(loss[-1]) and np.all(np.isfinite(loss[:-1])) and len(loss) <= 6


def test_stop_is_honoured_within_one_step():
    prob = wb.problems.make("digits-mlp", width=64, n_train=500)
    run = wb.train(prob, optimizer="adam", lr=1e-3, steps=100_000, background=True)
    while len(run.history()["loss"]) < 3:
        time.sleep(0.01)
    n_before = len(run.history()["loss"])
    run.stop()
    assert run.wait(5.0)
    assert run.status == "stopped"
    assert run.record.sizes["step"] <= n_before + 2
    assert run.record.attrs["status"] == "stopped"


def test_callback_streams_every_step_and_can_stop():
    seen = []

    def cb(row):
        seen.append(row)
        return row["step"] < 9

    prob = wb.problems.make("rosenbrock")
    run = wb.train(prob, optimizer="adam", lr=0.01, steps=100, callback=cb, progress=False,
                   probes=[wb.probes.Norms(every=5)])
    assert [r["step"] for r in seen] == list(range(10))
    assert run.status == "stopped"
    assert "weight_norm" in seen[0] and "weight_norm" not in seen[1]
    assert seen[3]["loss"] == pytest.approx(run.record.loss.values[3])


def test_crash_keeps_record():
    prob = wb.problems.make("rosenbrock")

    def cb(row):
        if row["step"] == 4:
            raise RuntimeError("boom")

    with pytest.raises(wb.RunCrashed) as err:
        wb.train(prob, optimizer="gd", lr=1e-4, steps=50, callback=cb, progress=False)
    run = err.value.run
    assert run.status == "crashed" and run.record.sizes["step"] == 5
    assert "boom" in run.record.attrs["error"]
    bg = wb.train(prob, optimizer="gd", lr=1e-4, steps=50, callback=cb, background=True)
    bg.wait(10)
    assert bg.status == "crashed" and isinstance(bg.error, RuntimeError)


def test_probe_steps_align_with_loss_and_final_probe():
    prob = wb.problems.make("quadratic")
    run = wb.train(prob, optimizer="gd", lr=0.1, steps=10, probes=[wb.probes.Trajectory(every=3)], progress=False)
    rec = run.record
    assert rec.trajectory_step.values.tolist() == [0, 3, 6, 9, 10]
    th = rec.trajectory.sel(trajectory_step=6).values
    assert rec.loss.values[6] == pytest.approx(prob.function(torch.tensor(th, dtype=torch.float64)).item(), rel=1e-5)
    assert "trajectory_seconds" in rec and rec.trajectory_seconds.attrs["units"] == "s"


def test_norms_probe_values():
    prob = wb.problems.make("quadratic", x0=3.0, y0=4.0, lambda1=1.0, lambda2=1.0)
    run = wb.train(prob, optimizer="gd", lr=0.5, steps=4, probes=[wb.probes.Norms(every=1)], progress=False)
    rec = run.record
    # theta_t = (3,4) * 0.5^t
    np.testing.assert_allclose(rec.weight_norm.values, 5 * 0.5 ** np.arange(5), rtol=1e-6)
    np.testing.assert_allclose(rec.distance_from_init.values, 5 * (1 - 0.5 ** np.arange(5)), rtol=1e-6)
    np.testing.assert_allclose(rec.update_norm.values[:4], 5 * 0.5 ** np.arange(4) * 0.5, rtol=1e-6)
    assert math.isnan(rec.update_norm.values[4])


def test_eval_probe_matches_direct_evaluation():
    prob = wb.problems.make("digits-mlp", width=16, depth=1, n_train=300)
    run = wb.train(prob, optimizer="adam", lr=1e-2, steps=20, progress=False,
                   probes=[wb.probes.Eval(every=20, split="both", batch_size=64)])
    rec = run.record
    direct = prob.evaluate(run.model.eval(), prob.data("test"))
    assert rec.test_loss.values[-1] == pytest.approx(direct["loss"], rel=1e-5)
    assert rec.test_accuracy.values[-1] == pytest.approx(direct["accuracy"], rel=1e-6)
    assert rec.train_accuracy.attrs["long_name"] == "train accuracy"


def test_trajectory_switches_to_countsketch_over_budget():
    prob = wb.problems.make("digits-mlp", width=64, depth=1, n_train=100)
    run = wb.train(prob, optimizer="gd", lr=0.1, steps=10, progress=False,
                   probes=[wb.probes.Trajectory(every=1, max_bytes=100_000, dim=256, seed=3)])
    rec = run.record
    assert rec.attrs["trajectory_kind"] == "countsketch" and rec.sizes["coord"] == 256
    # a count sketch preserves distances on average; here just check linearity and seed reproducibility
    a, b = torch.randn(prob.n_params), torch.randn(prob.n_params)
    s = wb.probes.countsketch
    torch.testing.assert_close(s(a + 2 * b, 256, 3), s(a, 256, 3) + 2 * s(b, 256, 3))
    theta = torch.cat([p.detach().reshape(-1) for p in run.model.parameters()])
    np.testing.assert_allclose(rec.trajectory.values[-1], s(theta, 256, 3).numpy(), rtol=1e-5, atol=1e-6)


def test_probes_do_not_change_the_trajectory():
    class Meddler(wb.probes.Probe):
        default_name = "meddler"

        def variables(self, ctx):
            return {"junk": wb.probes.Var("junk")}

        def measure(self, ctx):
            ctx.model.eval()
            torch.rand(100)
            with torch.no_grad():
                for p in ctx.model.parameters():
                    p.add_(1.0)
                    p.grad = None
            return {"junk": 1.0}

    prob = wb.problems.make("digits-mlp", width=16, depth=1, n_train=128)
    kw = dict(optimizer="sgd", lr=0.05, momentum=0.5, steps=12, batch_size=32, seed=1, progress=False)
    plain = wb.train(prob, **kw)
    probed = wb.train(prob, probes=[Meddler(every=2)], **kw)
    for p, q in zip(plain.model.parameters(), probed.model.parameters()):
        assert torch.equal(p, q)


def test_schedules_shape_lr():
    prob = wb.problems.make("quadratic")
    rec = wb.train(prob, optimizer="gd", lr=0.1, steps=100, schedule="cosine", warmup=10, progress=False).record
    lr = rec.lr.values
    np.testing.assert_allclose(lr[:10], 0.1 * np.arange(1, 11) / 10)
    assert lr[10] == pytest.approx(0.1) and lr[-1] < 0.001 and np.all(np.diff(lr[10:]) <= 1e-12)
    lin = wb.train(prob, optimizer="gd", lr=0.1, steps=10, schedule="linear", min_lr_ratio=0.5, progress=False)
    np.testing.assert_allclose(lin.record.lr.values, 0.1 * (0.5 + 0.5 * (1 - np.arange(10) / 10)))


def test_hot_swap_lr_and_optimizer_between_steps():
    prob = wb.problems.make("rosenbrock")
    swaps = {5: dict(lr=0.002), 10: dict(optimizer="adam", lr=0.01)}
    run = wb.Run(prob, optimizer="sgd", lr=0.001, steps=15, progress=False,
                 callback=lambda row: run.hot_swap(**swaps[row["step"]]) if row["step"] in swaps else None)
    run.run()
    rec = run.record
    assert rec.lr.values[5] == 0.001 and rec.lr.values[6] == 0.002 and rec.lr.values[11] == 0.01
    assert list(rec.optimizer.values[10:12]) == ["sgd", "adam"]
    ev = wb.records.events(rec)
    assert [(e["step"], e["optimizer"], e["state"]) for e in ev] == [(6, "sgd", "kept"), (11, "adam", "reset")]


def test_background_run_is_thread_safe_to_read():
    prob = wb.problems.make("digits-mlp", width=32, n_train=300)
    run = wb.train(prob, optimizer="adam", lr=1e-3, steps=200, background=True,
                   probes=[wb.probes.Norms(every=5)])
    sizes = []
    while not run.done:
        sizes.append(run.record.sizes["step"])
        time.sleep(0.02)
    assert run.status == "finished" and run.record.sizes["step"] == 200
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("kw,field", [
    (dict(lr=-0.1), "lr"), (dict(lr="fast"), "lr"), (dict(lr=float("nan")), "lr"), (dict(lr=True), "lr"),
    (dict(steps=0), "steps"), (dict(steps=-5), "steps"), (dict(steps=2.5), "steps"),
    (dict(batch_size=0), "batch_size"), (dict(batch_size=10**6), "batch_size"),
    (dict(optimizer="sgdd"), "optimizer"), (dict(momentum=1.5, optimizer="sgd"), "momentum"),
    (dict(optimizer="sgd", nesterov=True), "nesterov"), (dict(optimizer="adam", betas=0.9), "betas"),
    (dict(schedule="exp"), "schedule"), (dict(device="tpu"), "device"), (dict(seed=-1), "seed"),
    (dict(warmup=-1), "warmup"), (dict(probes=["Norms"]), "probes"),
])
def test_bad_train_arguments_name_the_field(kw, field):
    prob = wb.problems.make("gaussian-mixture", n_train=64)
    args = dict(optimizer="gd", lr=0.1, steps=3, progress=False)
    args.update(kw)
    with pytest.raises(ValueError, match=field):
        wb.train(prob, **args)


@settings(max_examples=50, deadline=None)
@given(lr=st.one_of(st.floats(max_value=0.0), st.floats(min_value=100.01), st.just(float("inf")),
                    st.text(max_size=4), st.none().map(lambda _: [0.1])))
def test_lr_property_rejected_outside_range(lr):
    with pytest.raises(ValueError, match="lr"):
        wb.optimizers.make("adam", [torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_registry_schema_defaults_construct():
    p = [torch.nn.Parameter(torch.zeros(3))]
    for name in ("gd", "sgd", "adam", "adamw", "rmsprop", "adagrad"):
        opt = wb.optimizers.make(name, p)
        assert isinstance(opt, torch.optim.Optimizer)
        for spec in wb.optimizers.schema(name):
            assert spec.validate(spec.default) == spec.default
    assert wb.optimizers.spec("gd").stability_threshold({"lr": 0.1}) == pytest.approx(20.0)
    assert wb.optimizers.spec("sgd").stability_threshold({"lr": 0.1, "momentum": 0.9, "nesterov": False}) == \
        pytest.approx(38.0)
    assert wb.optimizers.spec("adam").stability_threshold({"lr": 0.01, "beta1": 0.9}) == pytest.approx(3800.0)


def test_adam_preconditioner_reproduces_update():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = wb.optimizers.make("adam", [p], lr=0.1)
    for g in ([0.5, -1.0, 2.0], [0.1, 0.3, -0.2]):
        before = p.detach().clone()
        p.grad = torch.tensor(g)
        opt.step()
    P = wb.optimizers.spec("adam").preconditioner(opt)[0]
    m = opt.state[p]["exp_avg"]
    torch.testing.assert_close(p.detach(), before - 0.1 * m / P)
