"""The run loop on a CUDA device: the no-sync window (same record as the step-by-step loop, one host sync per
window, divergence inside a window), CUDA draws the CPU's batches, microbatching in float64, bf16 autocast (probes
stay float32), fp16 with a GradScaler, channels_last for conv nets, and torch.compile. Every test here needs a GPU
and is skipped cleanly without one; the shared code paths are tested on CPU in test_run_fast.py."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import workbench as wb

from runutil import double as _double, tiny_conv_problem as _conv_problem

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DEV = "cuda"


def _mixture():
    return wb.problems.make("gaussian-mixture", classes=3, dim=8, n_train=256, n_test=32, width=32)


def _flat(model):
    return torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])


def _train(prob, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("device", DEV)
    return wb.train(prob, **kw)


def test_cuda_defaults():
    run = wb.Run(_mixture(), optimizer="sgd", lr=0.1, device=DEV)
    assert run.device.type == "cuda" and run.sync_every == 16 and run.channels_last is False
    conv = wb.Run(_conv_problem(), optimizer="sgd", lr=0.1, device=DEV)
    assert conv.channels_last is True
    assert conv.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    cfg = json.loads(conv.record.attrs["config"])
    assert cfg["device"].startswith("cuda") and cfg["sync_every"] == 16 and cfg["channels_last"] is True


def test_no_sync_window_gives_the_step_by_step_record():
    prob = _mixture()
    recs, rows = [], []
    for se in (1, 16):
        seen = []
        run = _train(prob, optimizer="sgd", lr=0.1, momentum=0.9, steps=70, batch_size=64, sync_every=se, seed=3,
                     probes=[wb.probes.Norms(every=9), wb.probes.Eval(every=25)], callback=seen.append)
        assert run.status == "finished"
        recs.append(run.record)
        rows.append(seen)
    a, b = recs
    for v in ("loss", "grad_norm", "lr", "weight_norm", "test_loss"):
        np.testing.assert_allclose(b[v].values, a[v].values, rtol=1e-6, err_msg=v)
    assert [r["step"] for r in rows[1]] == list(range(70))
    assert [sorted(r) for r in rows[1]] == [sorted(r) for r in rows[0]]


def _count_syncs(fn) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("batch_size", [None, 64])
def test_the_window_syncs_once_per_window(batch_size):
    """Host syncs per extra 64 steps: at most 64/16 + 2 with sync_every=16, at least 64 step by step (the
    difference between a 128-step and a 64-step run cancels the one-off syncs of setup and the end)."""
    prob = _mixture()

    def syncs(steps, se):
        return _count_syncs(lambda: _train(prob, optimizer="gd", lr=0.1, steps=steps, batch_size=batch_size,
                                           sync_every=se))

    _train(prob, optimizer="gd", lr=0.1, steps=2)     # warm-up: lazy CUDA initialisation is not the loop's
    windowed = syncs(128, 16) - syncs(64, 16)
    stepwise = syncs(128, 1) - syncs(64, 1)
    assert stepwise >= 64, "the sync detector should see the step-by-step loop's syncs"
    assert windowed <= 64 // 16 + 2


def test_divergence_inside_a_window_on_cuda():
    prob = wb.problems.make("quadratic", lambda1=1.0, lambda2=10.0)
    a = _train(prob, optimizer="gd", lr=0.5, steps=100, sync_every=1)
    b = _train(prob, optimizer="gd", lr=0.5, steps=100, sync_every=16)
    assert a.status == b.status == "diverged" and a.diverged_at == b.diverged_at == 7
    assert a.record.sizes["step"] == b.record.sizes["step"] == 8
    np.testing.assert_allclose(b.record.loss.values, a.record.loss.values, rtol=1e-6)


def test_cuda_draws_the_cpu_batches():
    """The permutation comes from the CPU generator on every device: same seed, same batches, same run."""
    prob = _double(_mixture())
    kw = dict(optimizer="sgd", lr=0.1, momentum=0.9, steps=20, batch_size=48, seed=11)
    cpu = _train(prob, device="cpu", **kw)
    gpu = _train(prob, **kw)
    np.testing.assert_allclose(gpu.record.loss.values, cpu.record.loss.values, rtol=1e-10)
    torch.testing.assert_close(_flat(gpu.model), _flat(cpu.model), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("batch_size", [None, 100])
def test_microbatch_float64_on_cuda(batch_size):
    prob = _double(wb.problems.make("digits-mlp", width=16, depth=1, n_train=200))
    kw = dict(optimizer="sgd", lr=0.2, momentum=0.9, steps=6, batch_size=batch_size, seed=2)
    ref = _train(prob, **kw)
    mb = _train(prob, microbatch=30, **kw)
    np.testing.assert_allclose(mb.record.loss.values, ref.record.loss.values, rtol=1e-10)
    torch.testing.assert_close(_flat(mb.model), _flat(ref.model), rtol=1e-10, atol=1e-12)


def test_bf16_autocast_on_cuda_probes_stay_float32():
    prob = wb.problems.make("digits-mlp", width=64, depth=1, n_train=500)
    run = wb.Run(prob, optimizer="adam", lr=3e-3, steps=40, device=DEV, progress=False, precision="bf16",
                 probes=[wb.probes.Sharpness(every=20)])
    calls = []
    run.model.register_forward_hook(lambda m, i, out: calls.append((torch.is_autocast_enabled("cuda"), out.dtype)))
    run.run()
    rec = run.record
    assert run.status == "finished" and rec.attrs["precision"] == "bf16"
    assert rec.loss.values[-1] < 0.7 * rec.loss.values[0]
    assert calls.count((True, torch.bfloat16)) == 40          # every training forward in bf16
    assert all(c == (False, torch.float32) for c in calls if c != (True, torch.bfloat16))   # probes float32
    assert len(calls) > 40 and np.all(np.isfinite(rec.sharpness.values))
    assert all(p.dtype == torch.float32 for p in run.model.parameters())


def test_fp16_trains_with_a_grad_scaler():
    prob = wb.problems.make("digits-mlp", width=64, depth=1, n_train=500)
    run = _train(prob, optimizer="adam", lr=3e-3, steps=40, precision="fp16")
    assert run.status == "finished" and run._scaler is not None and run._scaler.get_scale() > 0
    assert run.record.loss.values[-1] < 0.7 * run.record.loss.values[0]
    with pytest.raises(ValueError, match="fp16"):
        wb.Run(prob, optimizer="sam", lr=0.05, device=DEV, precision="fp16")
    with pytest.raises(ValueError, match="fp16"):
        run.hot_swap("sam")


def test_channels_last_conv_net_on_cuda():
    prob = _conv_problem(dtype=torch.float64)
    kw = dict(optimizer="sgd", lr=0.05, momentum=0.9, steps=6, batch_size=16, seed=0)
    run = wb.Run(prob, device=DEV, progress=False, **kw)          # channels_last=None -> True on CUDA
    seen = []
    run.model[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)) if m.training else None)
    run.run()
    ref = _train(prob, channels_last=False, **kw)
    assert run.channels_last and run.record.attrs["channels_last"] == 1 and ref.record.attrs["channels_last"] == 0
    assert seen and all(seen), "training batches should reach the conv in channels_last"
    np.testing.assert_allclose(run.record.loss.values, ref.record.loss.values, rtol=1e-9)
    torch.testing.assert_close(_flat(run.model), _flat(ref.model), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_compile_on_cuda():
    prob = _mixture()
    kw = dict(optimizer="sgd", lr=0.1, momentum=0.9, steps=12, batch_size=64, seed=1,
              probes=[wb.probes.Norms(every=6)])
    ref = _train(prob, **kw)
    comp = _train(prob, compile=True, **kw)
    assert comp.record.attrs["compile"] == 1
    np.testing.assert_allclose(comp.record.loss.values, ref.record.loss.values, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(comp.record.weight_norm.values, ref.record.weight_norm.values, rtol=1e-4)
