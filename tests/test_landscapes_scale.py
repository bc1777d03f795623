"""landscapes at scale: microbatched (batch_size) and memory-budgeted (max_memory) surfaces and lines equal the
plain ones on a tiny BatchNorm ResNet (float64, 1e-10), the model is left as it was (mode, BatchNorm statistics,
parameters, grads, RNG), bf16 autocast is close to float32 but not equal, bad arguments are ValueErrors naming the
field."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import landscapes as ls
from workbench.problems import losses, nets

N = 24


@pytest.fixture(scope="module")
def tiny():
    """A depth-8 ResNet at width 0.25 (4/8/16 channels, BatchNorm), float64, 8x8 inputs, with BatchNorm running
    statistics moved away from their init (so eval and train mode differ) and a mix of train/eval flags."""
    torch.manual_seed(0)
    model = nets.resnet(depth=8, width=0.25, in_channels=3, n_classes=5).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (N,), generator=g)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x + 0.5 * torch.randn(x.shape, generator=g, dtype=torch.float64))
    model.eval()
    model.layer1.train()                       # a mixed state: must come back exactly like this
    loss = lambda m, b: losses.cross_entropy(m(b[0]), b[1])     # noqa: E731
    d = ls.directions.random(model, n=2, norm="filter", seed=3)
    return model, loss, x, y, d


def _snapshot(model):
    return ([m.training for m in model.modules()], [b.clone() for b in model.buffers()],
            [p.detach().clone() for p in model.parameters()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()], torch.get_rng_state())


def _assert_same(model, snap):
    modes, bufs, params, grads, rng = snap
    assert [m.training for m in model.modules()] == modes
    for a, b in zip(model.buffers(), bufs):
        assert torch.equal(a, b)
    for a, b in zip(model.parameters(), params):
        assert torch.equal(a.detach(), b)
    for p, gr in zip(model.parameters(), grads):
        assert (p.grad is None and gr is None) or torch.equal(p.grad, gr)
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_microbatched_surface_equals_plain(tiny, mode):
    model, loss, x, y, d = tiny
    kw = dict(span=0.7, steps=(4, 3), mode=mode, progress=False)
    ref = ls.surface(model, loss, (x, y), d, method="loop", **kw)
    assert ref.attrs["batch_size"] == N and ref.attrs["forward_passes_per_point"] == 1
    if mode == "train":
        # train mode: BatchNorm uses each microbatch's statistics, so only a whole batch can equal the plain
        # surface - the same batches given as a list must (size-weighted mean of per-batch means)
        parts = [(x[:10], y[:10]), (x[10:20], y[10:20]), (x[20:], y[20:])]
        got = ls.surface(model, loss, parts, d, method="loop", **kw)
        plain_parts = sum(len(b[0]) * ls.surface(model, loss, b, d, method="loop", **kw).values
                          for b in parts) / N
        np.testing.assert_allclose(got.values, plain_parts, rtol=1e-10, atol=1e-12)
        mb = ls.surface(model, loss, (x, y), d, method="loop", batch_size=10, **kw)
        np.testing.assert_allclose(mb.values, got.values, rtol=1e-10, atol=1e-12)
        assert mb.attrs["mode"] == "train"
        return
    for bs, method in ((5, "loop"), (7, "vmap"), (N, "vmap"), (100, "auto")):
        got = ls.surface(model, loss, (x, y), d, method=method, batch_size=bs, **kw)
        np.testing.assert_allclose(got.values, ref.values, rtol=1e-10, atol=1e-12)
        assert got.attrs["batch_size"] == min(bs, N) and got.attrs["n_examples"] == N
        assert got.attrs["forward_passes_per_point"] == -(-N // min(bs, N))
    # an iterable of uneven batches, each cut again into microbatches: size-weighted, the same mean
    batches = [(x[:9], y[:9]), (x[9:20], y[9:20]), (x[20:], y[20:])]
    got = ls.surface(model, loss, iter(batches), d, method="loop", batch_size=4, **kw)
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-10, atol=1e-12)
    assert got.attrs["forward_passes_per_point"] == 3 + 3 + 1


def test_budgeted_surface_and_line_equal_plain(tiny):
    model, loss, x, y, d = tiny
    ref = ls.surface(model, loss, (x, y), d, span=0.5, steps=3, method="loop", progress=False)
    # a budget that admits a few examples but not the whole batch
    full = None
    for budget in (1 << 30, 400_000, 150_000):
        s = ls.surface(model, loss, (x, y), d, span=0.5, steps=3, max_memory=budget, progress=False)
        np.testing.assert_allclose(s.values, ref.values, rtol=1e-10, atol=1e-12)
        if full is None:
            full = s.attrs["batch_size"]
        assert s.attrs["batch_size"] <= full
    assert full == N and s.attrs["batch_size"] < N and s.attrs["forward_passes_per_point"] > 1
    # lines take the same arguments
    lref = ls.line(model, loss, (x, y), d[0], span=0.5, steps=5, method="loop")
    lb = ls.line(model, loss, (x, y), d[0], span=0.5, steps=5, batch_size=6, method="vmap")
    lm = ls.line(model, loss, (x, y), d[0], span=0.5, steps=5, max_memory=150_000)
    np.testing.assert_allclose(lb.values, lref.values, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lm.values, lref.values, rtol=1e-10, atol=1e-12)
    assert lb.attrs["batch_size"] == 6


def test_metrics_on_microbatches_are_size_weighted(tiny):
    model, loss, x, y, d = tiny
    import workbench as wb
    prob = wb.problems.custom(model, "cross-entropy", (x, y))
    ref = ls.surface(prob.model, prob, prob.data(), d, span=0.5, steps=3, method="loop")
    got = ls.surface(prob.model, prob, prob.data(), d, span=0.5, steps=3, batch_size=5)
    assert "accuracy" in got.coords
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-10, atol=1e-12)
    # the problem's accuracy metric is a float32 mean per (micro)batch: equal to float32 rounding
    np.testing.assert_allclose(got.accuracy.values, ref.accuracy.values, rtol=1e-6, atol=1e-7)
    # accuracy at the centre by hand
    pm = prob.model
    with torch.no_grad():
        was = [m.training for m in pm.modules()]
        pm.eval()
        acc = (pm(x).argmax(1) == y).double().mean().item()
        for m, t in zip(pm.modules(), was):
            m.train(t)
    assert abs(float(got.accuracy.sel(alpha=0, beta=0)) - acc) < 1e-6


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("kw", [dict(batch_size=5, method="loop"), dict(batch_size=7, method="vmap"),
                                dict(max_memory=150_000), dict(autocast="bf16", batch_size=8)])
def test_model_unchanged(tiny, mode, kw):
    model, loss, x, y, d = tiny
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    snap = _snapshot(model)
    if kw.get("autocast"):           # autocast needs float32/bfloat16 tensors on CPU: a float32 copy
        m32 = model.float()
        try:
            snap32 = _snapshot(m32)
            d32 = d.to(dtype=torch.float32)
            ls.surface(m32, loss, (x.float(), y), d32, span=0.5, steps=3, mode=mode, progress=True, **kw)
            _assert_same(m32, snap32)
        finally:
            model.double()
            for p, g in zip(model.parameters(), snap[3]):
                p.grad = g.clone()
        for a, b in zip(model.buffers(), snap[1]):         # float64 -> float32 -> float64 loses bits: restore
            a.copy_(b)
        for a, b in zip(model.parameters(), snap[2]):
            a.data.copy_(b)
        snap = _snapshot(model)
    ls.surface(model, loss, (x, y), d, span=0.5, steps=3, mode=mode, progress=True,
               **{k: v for k, v in kw.items() if k != "autocast"})
    _assert_same(model, snap)
    for p in model.parameters():
        p.grad = None


def test_bf16_autocast_is_close_but_not_float32():
    torch.manual_seed(0)
    model = nets.resnet(depth=8, width=0.25, in_channels=3, n_classes=5).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)
    loss = lambda m, b: losses.cross_entropy(m(b[0]), b[1])     # noqa: E731
    d = ls.directions.random(model, n=2, seed=0)
    f32 = ls.surface(model, loss, (x, y), d, span=0.5, steps=3, method="loop")
    b16 = ls.surface(model, loss, (x, y), d, span=0.5, steps=3, method="loop", autocast="bf16")
    rel = np.abs(b16.values - f32.values) / np.abs(f32.values)
    assert b16.attrs["autocast"] == "bf16" and f32.attrs["autocast"] == "none"
    assert 0 < rel.max() < 0.05          # bf16 keeps 8 bits of mantissa: ~0.4% per op, not bit-identical


def test_bad_arguments_name_the_field(tiny):
    model, loss, x, y, d = tiny
    for kw, field in (({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
                      ({"batch_size": "64"}, "batch_size"), ({"max_memory": 0}, "max_memory"),
                      ({"max_memory": -5}, "max_memory"), ({"autocast": "fp8"}, "autocast"),
                      ({"progress": "yes"}, "progress")):
        with pytest.raises(ValueError, match=field):
            ls.surface(model, loss, (x, y), d, span=0.5, steps=3, **kw)
    # a budget below one example's evaluation: a clear error naming max_memory and the least that works
    with pytest.raises(ValueError, match=r"max_memory=2000 bytes is smaller than the evaluation of one example.*"
                                         r"at least \d+"):
        ls.surface(model, loss, (x, y), d, span=0.5, steps=3, max_memory=2000)
    with pytest.raises(ValueError, match="max_memory"):
        ls.line(model, loss, (x, y), d[0], span=0.5, steps=3, max_memory=2000)


@settings(max_examples=25, deadline=None)
@given(bs=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)))
def test_batch_size_property_bad_values(tiny, bs):
    model, loss, x, y, d = tiny
    if isinstance(bs, float) and bs.is_integer() and bs >= 1:
        return
    with pytest.raises(ValueError, match="batch_size"):
        ls.line(model, loss, (x, y), d[0], span=0.5, steps=2, batch_size=bs)


@settings(max_examples=15, deadline=None)
@given(bs=st.integers(min_value=1, max_value=30))
def test_batch_size_property_any_size_same_line(tiny, bs):
    model, loss, x, y, d = tiny
    ref = ls.line(model, loss, (x, y), d[0], span=0.4, steps=3, method="loop")
    got = ls.line(model, loss, (x, y), d[0], span=0.4, steps=3, method="loop", batch_size=bs)
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-10, atol=1e-12)
