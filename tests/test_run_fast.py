"""The run loop's speed settings on CPU: microbatching (float64 equality with the single batch, closure optimizers
too), the deferred-sync window (records identical to the step-by-step loop, divergence inside a window, probes,
callbacks, hot swaps), bf16 autocast (probes stay float32), torch.compile, channels_last, the recorded config,
bad input, and microbatched curvature operators over unequal batches."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn
from torch.utils.data import TensorDataset

import workbench as wb
from workbench.probes.base import Probe, Var

from runutil import double as _double, tiny_conv_problem as _tiny_conv_problem


# -- problems ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits64():
    return _double(wb.problems.make("digits-mlp", width=16, depth=1, n_train=200, seed=0))


def _steep_linear_problem() -> wb.Problem:
    """L(w) = 1e37 w at w = 1: a finite loss whose gradient step of lr 100 overflows float32 parameters."""
    def factory():
        m = nn.Linear(1, 1, bias=False)
        nn.init.ones_(m.weight)
        return m

    return wb.Problem(name="steep-linear", kind="regression", model_factory=factory,
                      loss_fn=lambda out, y: 1e37 * out.mean(), train=TensorDataset(torch.ones(4, 1), torch.zeros(4)))


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _train(prob, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")
    return wb.train(prob, **kw)


# -- microbatching ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size,microbatch", [(None, 37), (None, 1000), (50, 16), (50, 7)])
def test_microbatch_equals_single_batch_float64(digits64, batch_size, microbatch):
    kw = dict(optimizer="sgd", lr=0.2, momentum=0.9, steps=6, batch_size=batch_size, seed=3)
    ref = _train(digits64, **kw)
    mb = _train(digits64, microbatch=microbatch, **kw)
    assert ref.status == mb.status == "finished"
    assert mb.record.loss.dtype == np.float64
    np.testing.assert_allclose(mb.record.loss.values, ref.record.loss.values, rtol=1e-10, atol=0)
    np.testing.assert_allclose(mb.record.grad_norm.values, ref.record.grad_norm.values, rtol=1e-10, atol=0)
    torch.testing.assert_close(_flat(mb.model), _flat(ref.model), rtol=1e-10, atol=1e-12)
    # and training moved: the comparison is not between two untouched models
    assert ref.record.loss.values[-1] < ref.record.loss.values[0]


def test_microbatched_gradient_is_the_single_batch_gradient(digits64):
    """One update of plain GD reveals the gradient: θ_1 = θ_0 - lr g, with g from autograd on the whole batch."""
    model = digits64.copy_model()
    loss = digits64.loss(model, digits64.data())
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
    run = _train(digits64, optimizer="gd", lr=1.0, steps=1, microbatch=9)    # 23 chunks, the last of 2
    torch.testing.assert_close(_flat(model) - _flat(run.model), g, rtol=1e-10, atol=1e-13)
    assert run.record.loss.values[0] == pytest.approx(float(loss.detach()), rel=1e-12)


@given(mb=st.integers(1, 80))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_microbatch_size_gives_the_same_run(digits64, mb):
    kw = dict(optimizer="adam", lr=0.01, steps=2, batch_size=80, seed=1)
    ref = _train(digits64, **kw)
    run = _train(digits64, microbatch=mb, **kw)
    np.testing.assert_allclose(run.record.loss.values, ref.record.loss.values, rtol=1e-10)
    torch.testing.assert_close(_flat(run.model), _flat(ref.model), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("optimizer,hp", [("sam", dict(lr=0.1, rho=0.05, momentum=0.9)),
                                          ("zo_sgd", dict(lr=0.01)),
                                          ("sophia", dict(lr=0.01)),
                                          ("lbfgs", dict(lr=0.5))])
def test_microbatch_with_closure_optimizers(digits64, optimizer, hp):
    """The closure microbatches too (SAM's ascent gradient, the zeroth-order forward-only losses, Sophia's
    create_graph Hessian refresh, L-BFGS's repeated evaluations)."""
    assert wb.optimizers.spec(optimizer).needs_closure
    kw = dict(optimizer=optimizer, steps=4, batch_size=60, seed=2, **hp)
    ref = _train(digits64, **kw)
    mb = _train(digits64, microbatch=17, **kw)
    assert ref.status == mb.status == "finished"
    np.testing.assert_allclose(mb.record.loss.values, ref.record.loss.values, rtol=1e-10)
    torch.testing.assert_close(_flat(mb.model), _flat(ref.model), rtol=1e-9, atol=1e-11)
    assert not torch.equal(_flat(ref.model), _flat(digits64.model))


def test_minibatch_sampling_sequence_is_unchanged():
    """CPU records do not change: the loop's batches are those of a fresh randperm per epoch from a CPU generator
    seeded with the run's seed (the sampling the records were always made with), last partial batch dropped."""
    prob = wb.problems.make("gaussian-mixture", classes=3, dim=8, n_train=100)
    seed, bs, steps, lr = 5, 32, 7, 0.1
    model = prob.copy_model()
    x, y = prob.data()
    gen = torch.Generator().manual_seed(seed)
    losses, batches = [], []
    while len(batches) < steps:
        perm = torch.randperm(100, generator=gen)
        batches += [perm[i:i + bs] for i in range(0, 100 - bs + 1, bs)]
    for idx in batches[:steps]:
        loss = prob.loss(model, (x[idx], y[idx]))
        losses.append(float(loss))
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= lr * g
    run = _train(prob, optimizer="gd", lr=lr, steps=steps, batch_size=bs, seed=seed)
    np.testing.assert_allclose(run.record.loss.values, losses, rtol=1e-6)


# -- the deferred-sync window -----------------------------------------------------------------------------------
def _same_record(a, b, probe_vars=()):
    for v in ("loss", "lr", "grad_norm", *probe_vars):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    for k in ("status", "diverged_at", "steps_done"):
        assert a.attrs[k] == b.attrs[k], k
    assert list(a.optimizer.values) == list(b.optimizer.values)


def test_sync_every_gives_the_same_record_with_probes_and_callback():
    prob = wb.problems.make("gaussian-mixture", classes=3, dim=8, n_train=128, n_test=32, width=16)
    recs, rows = [], []
    for se in (1, 8):
        seen = []
        run = _train(prob, optimizer="sgd", lr=0.1, momentum=0.9, steps=37, batch_size=32, seed=4, sync_every=se,
                     probes=[wb.probes.Norms(every=5), wb.probes.Eval(every=10), wb.probes.Sharpness(every=12)],
                     callback=seen.append)
        assert run.status == "finished" and run.sync_every == se
        recs.append(run.record)
        rows.append(seen)
    _same_record(*recs, probe_vars=("weight_norm", "test_loss", "sharpness"))
    assert recs[1].attrs["sync_every"] == 8 and json.loads(recs[1].attrs["config"])["sync_every"] == 8
    # the callback saw every step once, in order, with the same values (probe values included)
    assert [r["step"] for r in rows[1]] == list(range(37))
    assert rows[0] == rows[1]
    assert any("sharpness" in r for r in rows[1])


@pytest.mark.parametrize("case", ["loss-limit", "nonfinite-loss", "nonfinite-params", "max-loss", "probe-window"])
def test_divergence_inside_a_window_keeps_the_same_steps(case):
    probes, kw = [], {}
    if case == "loss-limit":            # GD on lambda=10 at lr=0.5: the loss grows 16x per step, limit at step 7
        prob = wb.problems.make("quadratic", lambda1=1.0, lambda2=10.0)
        kw = dict(lr=0.5)
    elif case == "nonfinite-loss":      # overflows to inf with no loss limit in the way
        prob = wb.problems.make("quadratic", lambda1=1000.0, lambda2=1000.0)
        kw = dict(lr=100.0, max_loss=1e300)
    elif case == "nonfinite-params":    # a finite loss (1e37), then an update that overflows float32
        prob = _steep_linear_problem()
        kw = dict(lr=100.0, max_loss=1e300)
    elif case == "max-loss":
        prob = wb.problems.make("quadratic", lambda1=1.0, lambda2=10.0)
        kw = dict(lr=0.5, max_loss=200.0)
    else:                               # probes on their own schedule around the divergence
        prob = wb.problems.make("quadratic", lambda1=1.0, lambda2=10.0)
        kw = dict(lr=0.5)
        probes = [wb.probes.Norms(every=3)]
    recs = []
    for se in (1, 5):
        run = _train(prob, optimizer="gd", steps=100, sync_every=se, probes=probes, **kw)
        assert run.status == "diverged"
        recs.append(run.record)
    a, b = recs
    _same_record(a, b, probe_vars=("weight_norm",) if probes else ())
    n = a.sizes["step"]
    if case == "nonfinite-params":
        assert a.attrs["diverged_at"] == n and np.all(np.isfinite(a.loss.values))
    else:
        assert a.attrs["diverged_at"] == n - 1 and np.isnan(a.grad_norm.values[-1])
    if case in ("loss-limit", "probe-window"):
        assert a.attrs["diverged_at"] % 5 not in (0, 4), "the divergence should fall inside a window"
    if probes:
        np.testing.assert_array_equal(a["norms_step"].values, b["norms_step"].values)


def test_callback_stop_and_hot_swap_take_effect_at_the_next_sync():
    prob = wb.problems.make("gaussian-mixture", classes=2, dim=4, n_train=64, width=8)

    def run_with(se, swap_at=None, stop_at=None):
        seen = []

        def cb(row):
            seen.append(row["step"])
            if row["step"] == swap_at:
                run.hot_swap(lr=0.05)
            return None if stop_at is None else row["step"] < stop_at

        run = wb.Run(prob, optimizer="sgd", lr=0.2, steps=40, device="cpu", progress=False, sync_every=se,
                     callback=cb)
        run.run()
        return run, seen

    # a swap asked for at the last step of a window applies before the next update, exactly as with sync_every=1
    a, _ = run_with(1, swap_at=3)
    b, _ = run_with(4, swap_at=3)
    _same_record(a.record, b.record)
    assert a.events[0]["step"] == b.events[0]["step"] == 4
    # asked for earlier in a window: applied at the window's end
    c, _ = run_with(4, swap_at=1)
    assert c.events[0]["step"] == 4 and list(c.record.lr.values[:6]) == [0.2] * 4 + [0.05] * 2
    # stop: every queued step is recorded and handed to the callback, nothing is lost or repeated
    d, seen = run_with(8, stop_at=9)
    assert d.status == "stopped" and seen == list(range(16)) and d.record.sizes["step"] == 16
    e, seen1 = run_with(1, stop_at=9)
    assert seen1 == list(range(10))
    np.testing.assert_array_equal(d.record.loss.values[:10], e.record.loss.values)


def test_background_run_with_window_stops_cleanly():
    prob = wb.problems.make("digits-mlp", width=16, n_train=200)
    run = wb.train(prob, optimizer="adam", lr=1e-3, steps=100_000, device="cpu", sync_every=8, background=True)
    import time
    while len(run.history()["loss"]) < 16:
        time.sleep(0.01)
    run.stop()
    assert run.wait(10.0)
    assert run.status == "stopped"
    rec = run.record
    assert np.all(np.isfinite(rec.loss.values)) and rec.sizes["step"] == len(run.history()["loss"])


# -- precision, compile, channels_last --------------------------------------------------------------------------
class _AutocastSpy(Probe):
    """Records whether autocast is on when a probe runs, and the dtype of the model's output."""
    default_name = "spy"

    def variables(self, ctx):
        return {"spy_autocast": Var("autocast on"), "spy_float32": Var("output is float32")}

    def measure(self, ctx):
        x, _ = ctx.full_batch(max_samples=4)
        out = ctx.model(x)
        return {"spy_autocast": float(torch.is_autocast_enabled("cpu")),
                "spy_float32": float(out.dtype == torch.float32)}


def test_bf16_on_cpu_trains_records_precision_and_probes_stay_float32():
    prob = wb.problems.make("digits-mlp", width=32, depth=1, n_train=300)
    run = wb.Run(prob, optimizer="adam", lr=3e-3, steps=30, device="cpu", progress=False, precision="bf16",
                 probes=[_AutocastSpy(every=10)])
    calls = []    # (autocast on, output dtype) of every forward of the model
    run.model.register_forward_hook(lambda m, i, out: calls.append((torch.is_autocast_enabled("cpu"), out.dtype)))
    run.run()
    ref = _train(prob, optimizer="adam", lr=3e-3, steps=30)
    rec = run.record
    assert run.status == "finished"
    assert rec.loss.values[-1] < 0.7 * rec.loss.values[0]
    assert rec.attrs["precision"] == "bf16" and json.loads(rec.attrs["config"])["precision"] == "bf16"
    assert rec.attrs["param_dtypes"] == "float32"
    # the 30 training forwards ran in bfloat16 under autocast; the probe's 4 forwards in float32 without it
    assert sorted(calls, key=str) == sorted([(True, torch.bfloat16)] * 30 + [(False, torch.float32)] * 4, key=str)
    assert np.all(rec.spy_autocast.values == 0) and np.all(rec.spy_float32.values == 1)
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    # bf16 changed the arithmetic: close to, not equal to, the float32 run
    assert not np.array_equal(rec.loss.values, ref.record.loss.values)
    np.testing.assert_allclose(rec.loss.values[0], ref.record.loss.values[0], rtol=2e-2)


@pytest.mark.slow   # the first inductor compile builds C++ kernels with gcc (~20 s on a loaded 2-core machine)
def test_compile_gives_the_same_losses():
    prob = wb.problems.make("gaussian-mixture", classes=3, dim=8, n_train=64, width=16, depth=1)
    kw = dict(optimizer="sgd", lr=0.1, momentum=0.9, steps=8, batch_size=16, seed=1,
              probes=[wb.probes.Norms(every=4)])
    ref = _train(prob, **kw)
    comp = _train(prob, compile=True, **kw)
    assert comp.status == "finished" and comp.record.attrs["compile"] == 1
    assert comp._train_model is not comp.model and isinstance(comp._train_model, torch._dynamo.eval_frame.OptimizedModule)
    np.testing.assert_allclose(comp.record.loss.values, ref.record.loss.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(comp.record.weight_norm.values, ref.record.weight_norm.values, rtol=1e-5)
    torch.testing.assert_close(_flat(comp.model), _flat(ref.model), rtol=1e-5, atol=1e-6)


def test_channels_last_conv_net_float64():
    prob = _tiny_conv_problem(dtype=torch.float64)
    kw = dict(optimizer="sgd", lr=0.05, momentum=0.9, steps=5, batch_size=16, seed=0)
    ref = _train(prob, **kw)
    assert ref.channels_last is False          # None -> False on CPU
    cl = _train(prob, channels_last=True, **kw)
    conv = cl.model[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert cl.record.attrs["channels_last"] == 1 and ref.record.attrs["channels_last"] == 0
    np.testing.assert_allclose(cl.record.loss.values, ref.record.loss.values, rtol=1e-10)
    torch.testing.assert_close(_flat(cl.model), _flat(ref.model), rtol=1e-10, atol=1e-12)
    assert ref.record.loss.values[-1] < ref.record.loss.values[0]


def test_config_records_device_precision_dtypes_and_settings(digits64, tmp_path):
    run = _train(digits64, optimizer="sgd", lr=0.1, steps=3, microbatch=50, sync_every=2)
    rec = run.record
    cfg = json.loads(rec.attrs["config"])
    assert cfg["device"] == "cpu" and cfg["precision"] == "float32"
    assert cfg["param_dtypes"] == ["float64"] and cfg["data_dtypes"] == ["float64", "int64"]
    assert (cfg["microbatch"], cfg["sync_every"], cfg["compile"], cfg["channels_last"]) == (50, 2, False, False)
    back = wb.load(wb.save(rec, tmp_path / "r.nc"))
    for k, v in {"device": "cpu", "precision": "float32", "param_dtypes": "float64", "data_dtypes": "float64,int64",
                 "microbatch": 50, "sync_every": 2, "compile": 0, "channels_last": 0}.items():
        assert back.attrs[k] == v, k
    default = _train(digits64, optimizer="sgd", lr=0.1, steps=1).record
    assert default.attrs["microbatch"] == -1 and default.attrs["sync_every"] == 1


@pytest.mark.parametrize("field,value", [("microbatch", 0), ("microbatch", -3), ("microbatch", 2.5),
                                         ("microbatch", "8"), ("sync_every", 0), ("sync_every", 1.5),
                                         ("sync_every", 10**7), ("precision", "fp8"), ("precision", "float16"),
                                         ("precision", None), ("compile", "yes"), ("compile", 1),
                                         ("channels_last", "auto"), ("channels_last", 0)])
def test_bad_values_name_the_field(field, value):
    prob = wb.problems.make("quadratic")
    with pytest.raises(ValueError, match=field):
        wb.Run(prob, optimizer="gd", lr=0.1, steps=2, device="cpu", **{field: value})


def test_fp16_needs_cuda_and_closure_free_optimizers():
    prob = wb.problems.make("quadratic")
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA device"):
        wb.Run(prob, optimizer="gd", lr=0.1, device="cpu", precision="fp16")
    # bf16 with a closure optimizer is fine, and a hot swap to one is validated like the constructor
    run = wb.Run(prob, optimizer="sam", lr=0.01, steps=2, device="cpu", precision="bf16", progress=False).run()
    assert run.status == "finished"


# -- microbatched curvature: the operators over a list of unequal batches ---------------------------------------
@pytest.mark.parametrize("kind,method", [("hessian", "double-backward"), ("hessian", "forward-over-reverse"),
                                         ("ggn", None)])
def test_curvature_over_unequal_batches_equals_single_batch(digits64, kind, method):
    model = digits64.copy_model()
    x, y = digits64.data()
    cuts = [0, 7, 57, 80, 200]      # four batches of 7, 50, 23 and 120 examples
    batches = [(x[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])]
    kw = {} if method is None else {"method": method}
    make = getattr(wb.curvature, kind)
    single = make(model, digits64.loss, (x, y), **kw)
    multi = make(model, digits64.loss, batches, **kw)
    assert multi.n_examples == single.n_examples == 200
    V = torch.randn(single.size, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = single.matmat(V)
    torch.testing.assert_close(multi.matmat(V), ref, rtol=1e-10, atol=1e-12 * float(ref.abs().max()))
    torch.testing.assert_close(multi.matvec(V[:, 0]), ref[:, 0], rtol=1e-10, atol=1e-12 * float(ref.abs().max()))
    # not a trivial operator
    assert float(ref.abs().max()) > 1e-3
