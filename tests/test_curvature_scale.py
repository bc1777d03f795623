"""Curvature at scale (issue 12): microbatched and memory-budgeted operators, per-block operators and spectra,
GGN products against dense J^T H_L J on a tiny ResNet and ViT, the data-subset spread of eigenvalues, and the
model left untouched. Float64, tiny models."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

import workbench as wb
from workbench.curvature import (LinearOperator, block_spectra, eigs, eigs_spread, fisher, ggn, hessian, memory_plan,
                                 parse_memory)
from workbench.curvature._common import BatchSource

from runutil import assert_same as _assert_same, snapshot as _snapshot

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny float64 models: one thread is fastest (conftest.py)


def _ce(m, b):
    return F.cross_entropy(m(b[0]), b[1])


def _mse(m, b):
    return F.mse_loss(m(b[0]), b[1])


def _resnet(seed=0, batchnorm=True):
    torch.manual_seed(seed)
    m = wb.problems.nets.resnet(depth=8, width=0.25, in_channels=1, n_classes=3, batchnorm=batchnorm).to(DT)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(12, 1, 8, 8, generator=g, dtype=DT)
    y = torch.randint(0, 3, (12,), generator=g)
    if batchnorm:                                    # non-trivial running statistics, then eval mode
        m.train()
        with torch.no_grad():
            m(2 * torch.randn(32, 1, 8, 8, generator=g, dtype=DT) + 0.5)
    m.eval()
    return m, (x, y)


def _vit(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    m = wb.problems.nets.vit(image_size=8, in_channels=1, n_classes=3, patch=4, dim=8, depth=1, heads=2,
                             mlp_ratio=1.0, dropout=dropout).to(DT)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=DT)
    y = torch.randint(0, 3, (6,), generator=g)
    m.eval()
    return m, (x, y)


def _mlp(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    g = torch.Generator().manual_seed(seed + 1)
    return m, (torch.randn(30, 4, generator=g, dtype=DT), torch.randint(0, 3, (30,), generator=g))


def _builders():
    return {"hessian": lambda m, d, **kw: hessian(m, _ce, d, **kw),
            "hessian-fwd": lambda m, d, **kw: hessian(m, _ce, d, method="forward-over-reverse", **kw),
            "ggn": lambda m, d, **kw: ggn(m, _ce, d, loss_fn=F.cross_entropy, **kw),
            "fisher": lambda m, d, **kw: fisher(m, _ce, d, loss_fn=F.cross_entropy, **kw)}


def _relerr(a, b):
    return float((a - b).abs().max() / b.abs().max())


# -- microbatches and memory budgets -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["hessian", "hessian-fwd", "ggn", "fisher"])
def test_microbatched_and_budgeted_operators_equal_the_single_batch_one(kind):
    model, (x, y) = _resnet()
    build = _builders()[kind]
    V = torch.randn(sum(p.numel() for p in model.parameters()), 3, generator=torch.Generator().manual_seed(0),
                    dtype=DT)
    ref = build(model, (x, y))
    assert ref.attrs["n_microbatches"] == 1 and ref.n_examples == 12
    A = ref.matmat(V)
    uneven = [(x[:7], y[:7]), (x[7:9], y[7:9]), (x[9:], y[9:])]
    ops = {"batch_size=5": build(model, (x, y), batch_size=5),
           "list, batch_size=3": build(model, uneven, batch_size=3),
           "generator": build(model, (b for b in uneven)),
           "DataLoader": build(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                                                  batch_size=4))}
    plan = memory_plan(model, _ce, (x, y), "1GiB", kind=kind.split("-")[0],
                       **({"loss_fn": F.cross_entropy} if kind in ("ggn", "fisher") else {}))
    assert plan.batch_size == 12 and plan.per_example > 0
    budget = int(plan.fixed + 3.5 * plan.per_example)        # room for three examples, not four
    ops["max_memory"] = build(model, (x, y), max_memory=budget)
    assert ops["max_memory"].attrs["microbatch_size"] == 3 and ops["max_memory"].attrs["n_microbatches"] == 4
    assert ops["max_memory"].attrs["memory"]["budget"] == budget
    assert ops["batch_size=5"].attrs["n_microbatches"] == 3
    assert ops["list, batch_size=3"].attrs["n_microbatches"] == 5      # 3+3+1, 2, 3
    for name, op in ops.items():
        assert op.n_examples == 12, name
        assert _relerr(op.matmat(V), A) < 1e-10, name
        assert _relerr(op.matvec(V[:, 0]), A[:, 0]) < 1e-10, name
        assert "eval mode" in op.attrs["mode_note"] and "running statistics" in op.attrs["mode_note"]


def test_budget_below_one_example_is_a_clear_error():
    model, data = _resnet()
    plan = memory_plan(model, _ce, data, "1GiB")
    assert plan.minimum == math.ceil(plan.fixed + plan.per_example)
    for build in _builders().values():
        with pytest.raises(ValueError, match=r"max_memory.*minimum.*max_memory must be >= \d+"):
            build(model, data, max_memory=plan.minimum // 2)
    with pytest.raises(ValueError, match="max_memory"):
        hessian(model, _ce, data, max_memory="2 parsecs")
    with pytest.raises(ValueError, match="max_memory"):
        hessian(model, _ce, data, max_memory=-5)
    with pytest.raises(ValueError, match="batch_size"):
        hessian(model, _ce, data, batch_size=0)
    # at exactly the minimum one example fits
    op = hessian(model, _ce, data, max_memory=plan.minimum)
    assert op.attrs["microbatch_size"] == 1 and op.attrs["n_microbatches"] == 12


def test_cpu_memory_estimate_covers_the_activations():
    """The per-example estimate is at least the bytes of every module output of one example's forward pass (what
    autograd has to keep), and it grows with the input size."""
    model, (x, y) = _resnet()
    acts = []
    hooks = [m.register_forward_hook(lambda mod, i, o: acts.append(o.numel() * o.element_size()))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    small = memory_plan(model, _ce, (x, y), "1GiB")
    big = memory_plan(model, _ce, (F.interpolate(x, scale_factor=2), y), "1GiB")
    assert small.per_example >= sum(acts)
    assert 2.5 < big.per_example / small.per_example < 5.5           # 4x the pixels
    assert small.how == "autograd saved tensors"


@settings(max_examples=40, deadline=None)
@given(st.floats(min_value=1, max_value=1e12), st.sampled_from(["B", "KiB", "MiB", "GiB", "kB", "MB", "GB", "G"]))
def test_parse_memory_units(value, unit):
    mult = {"B": 1, "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30, "kB": 1e3, "MB": 1e6, "GB": 1e9, "G": 2 ** 30}
    text = f"{value!r}{unit}"
    assert parse_memory(text) == int(float(text[:-len(unit)]) * mult[unit])
    assert parse_memory(f" {value!r} {unit.lower()} ") == parse_memory(text)


@pytest.mark.parametrize("bad", ["", "GiB", "1.5 XB", "-2GiB", "0", 0, 0.5, True, [1]])
def test_parse_memory_rejects(bad):
    with pytest.raises(ValueError, match="max_memory"):
        parse_memory(bad)


def test_streamed_data_is_read_per_product_not_kept():
    model, (x, y) = _resnet()

    class Reiterable:
        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            return iter([(x[:6], y[:6]), (x[6:], y[6:])])

    data = Reiterable()
    H = hessian(model, _ce, data, batch_size=4)
    assert H.attrs["cache"] is False
    before = data.passes
    v = torch.randn(H.size, dtype=DT)
    H.matvec(v)
    H.matvec(v)
    assert data.passes == before + 2
    src = BatchSource(data, "cpu", batch_size=4)
    assert [int(b[0].shape[0]) for b, _ in src] == [4, 2, 4, 2]
    assert math.isclose(sum(w for _, w in src), 1.0)
    assert [s.n for s in src.split(5)] == [2, 3, 2, 3, 2]


# -- train mode: per-microbatch statistics ---------------------------------------------------------------------
def test_train_mode_uses_per_microbatch_statistics_and_says_so():
    model, (x, y) = _resnet()
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(2), dtype=DT)
    for build in (_builders()["hessian"], _builders()["ggn"]):
        micro = build(model, (x, y), mode="train", batch_size=4)
        assert "each microbatch" in micro.attrs["mode_note"] and "microbatch size" in micro.attrs["mode_note"]
        parts = sum(build(model, (x[i:i + 4], y[i:i + 4]), mode="train").matvec(v) / 3 for i in (0, 4, 8))
        assert _relerr(micro.matvec(v), parts) < 1e-10
        full = build(model, (x, y), mode="train").matvec(v)
        assert _relerr(micro.matvec(v), full) > 1e-3           # batch statistics differ from microbatch ones
    assert "train" in repr(micro) and "microbatches=3" in repr(micro)


# -- GGN against dense J^T H_L J ---------------------------------------------------------------------------------
def _dense_jacobian(model, x):
    keys = [k for k, _ in model.named_parameters()]
    ps = [p.detach() for _, p in model.named_parameters()]
    bufs = {k: b for k, b in model.named_buffers()}

    def f(*qs):
        return torch.func.functional_call(model, {**bufs, **dict(zip(keys, qs))}, (x,)).reshape(-1)

    J = torch.autograd.functional.jacobian(f, tuple(ps))
    return torch.cat([j.reshape(j.shape[0], -1) for j in J], 1)


@pytest.mark.parametrize("net", ["resnet", "vit"])
@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_ggn_products_equal_dense_JT_HL_J(net, loss):
    model, (x, y) = _resnet() if net == "resnet" else _vit()
    N, C = x.shape[0], 3
    with torch.no_grad():
        logits = model(x)
    J = _dense_jacobian(model, x)                                           # (N C, P)
    if loss == "cross-entropy":
        p = torch.softmax(logits, -1)
        HL = torch.block_diag(*[(torch.diag(p[i]) - torch.outer(p[i], p[i])) / N for i in range(N)])
        G = ggn(model, _ce, (x, y), loss_fn=F.cross_entropy, batch_size=4)
    else:
        yt = torch.randn(N, C, generator=torch.Generator().manual_seed(5), dtype=DT)
        HL = 2.0 * torch.eye(N * C, dtype=DT) / (N * C)
        G = ggn(model, _mse, (x, yt), loss_fn=F.mse_loss, batch_size=4)
        # mean over all N C outputs: microbatch weights n_b / n hold because every example has C outputs
    V = torch.randn(J.shape[1], 4, generator=torch.Generator().manual_seed(1), dtype=DT)
    dense = J.T @ (HL @ (J @ V))
    assert _relerr(G.matmat(V), dense) < 1e-10
    assert model.training is False


# -- per-block operators and spectra -----------------------------------------------------------------------------
def _dense_hessian(model, batch):
    keys = [k for k, _ in model.named_parameters()]
    ps = [p.detach() for _, p in model.named_parameters()]

    def f(*qs):
        return F.cross_entropy(torch.func.functional_call(model, dict(zip(keys, qs)), (batch[0],)), batch[1])

    Hb = torch.autograd.functional.hessian(f, tuple(ps))
    sizes = [p.numel() for p in ps]
    return torch.cat([torch.cat([Hb[i][j].reshape(sizes[i], sizes[j]) for j in range(len(ps))], 1)
                      for i in range(len(ps))], 0)


def test_block_spectra_equal_eigvalsh_of_the_dense_blocks():
    model, data = _mlp()
    Hd = _dense_hessian(model, data)
    names = [k for k, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    offs = np.cumsum([0] + sizes)
    H = hessian(model, _ce, data)
    Hm = hessian(model, _ce, [(data[0][:11], data[1][:11]), (data[0][11:], data[1][11:])], batch_size=6)
    ds = block_spectra(H, blocks="layers", k=4, tol=1e-9, density=True, steps=10)
    assert list(ds.block.values) == ["0", "2", "4"]
    for b, layer in enumerate(["0", "2", "4"]):
        idx = np.concatenate([np.arange(offs[i], offs[i + 1]) for i, n in enumerate(names)
                              if n.startswith(layer + ".")])
        ref = torch.linalg.eigvalsh(Hd[idx][:, idx]).flip(0)[:4].numpy()
        np.testing.assert_allclose(ds.eigenvalue.values[b], ref, rtol=1e-7, atol=1e-10)
        assert int(ds.n_params[b]) == len(idx)
        Hb = Hm.block(layer)
        assert Hb.kind == "hessian" and Hb.n_examples == 30 and Hb.attrs["microbatch_size"] == 6
        if layer == "4":                  # the block operator's dense matrix is exactly the dense block
            assert _relerr(Hb.to_dense(), Hd[idx][:, idx]) < 1e-10
    assert bool(ds.converged.all())
    assert ds.attrs["n_examples"] == 30 and ds.attrs["kind"] == "hessian"
    # densities integrate to one on the common grid
    grid = ds.eigenvalue_grid.values
    np.testing.assert_allclose(np.trapezoid(ds.density.values, grid, axis=1), 1.0, rtol=1e-3)
    # selections: prefix, list, glob, predicate and a factory all agree
    v = torch.randn(H.block(["0", "4"]).size, dtype=DT)
    a = H.block(["0", "4"]).matvec(v)
    b = H.block(lambda n: not n.startswith("2.")).matvec(v)
    assert _relerr(a, b) < 1e-12
    assert H.block("*.bias").param_names == ["0.bias", "2.bias", "4.bias"]
    ds2 = block_spectra(lambda params: hessian(model, _ce, data, params=params), blocks={"first": "0", "last": "4"},
                        k=2, tol=1e-9)
    np.testing.assert_allclose(ds2.eigenvalue.values, ds.eigenvalue.values[[0, 2], :2], rtol=1e-7, atol=1e-10)
    # ggn blocks are ggn operators of the subset
    G = ggn(model, _ce, data, loss_fn=F.cross_entropy)
    Gb = G.block("2")
    Gs = ggn(model, _ce, data, loss_fn=F.cross_entropy, params="2")
    w = torch.randn(Gb.size, dtype=DT)
    assert Gb.kind == "ggn" and _relerr(Gb.matvec(w), Gs.matvec(w)) < 1e-12


def test_block_spectra_figure():
    from landscapes.spectra_plot import plot_block_spectra

    model, data = _mlp()
    ds = block_spectra(hessian(model, _ce, data), blocks="top", k=2, density=True, steps=8)
    fig = plot_block_spectra(ds)
    kinds = [t.type for t in fig.data]
    assert kinds == ["heatmap", "scatter", "scatter"]
    np.testing.assert_allclose(np.asarray(fig.data[1].y, dtype=float), ds.eigenvalue.values[:, 0])
    assert list(fig.data[1].x) == ["0", "2", "4"]
    fig2 = plot_block_spectra(ds.drop_vars(["density", "eigenvalue_grid"]))
    assert [t.type for t in fig2.data] == ["scatter", "scatter"]
    with pytest.raises(ValueError, match="block_spectra"):
        plot_block_spectra(ds.eigenvalue)


def test_block_and_grouping_bad_inputs():
    model, data = _mlp()
    H = hessian(model, _ce, data)
    with pytest.raises(ValueError, match="matches none"):
        H.block("layer9")
    with pytest.raises(ValueError, match="empty"):
        H.block([])
    with pytest.raises(ValueError, match="blocks"):
        block_spectra(H, blocks="modules")
    with pytest.raises(TypeError):
        block_spectra(42)
    with pytest.raises(ValueError, match="k"):
        block_spectra(H, k=0)


# -- data-subset spread ----------------------------------------------------------------------------------------
def test_data_subset_spread_on_a_linear_model_with_known_hessians():
    g = torch.Generator().manual_seed(0)
    n, d = 36, 4
    X = torch.randn(n, d, generator=g, dtype=DT) * torch.linspace(0.5, 3.0, n, dtype=DT)[:, None]
    Y = torch.randn(n, 1, generator=g, dtype=DT)
    model = nn.Linear(d, 1, bias=False).to(DT)
    batches = [(X[:10], Y[:10]), (X[10:25], Y[10:25]), (X[25:], Y[25:])]     # subsets cross batch boundaries
    H = hessian(model, _mse, batches, batch_size=4)
    res = eigs(H, k=2, tol=1e-10, data_subsets=4)
    assert res.n_examples == n
    sp = res.spread
    ref = np.stack([torch.linalg.eigvalsh(2 * X[i:i + 9].T @ X[i:i + 9] / 9).flip(0)[:2].numpy()
                    for i in range(0, n, 9)])
    np.testing.assert_allclose(sp.values.numpy(), ref, rtol=1e-8)
    np.testing.assert_allclose(sp.mean.numpy(), ref.mean(0), rtol=1e-8)
    np.testing.assert_allclose(sp.std.numpy(), ref.std(0, ddof=1), rtol=1e-6)
    np.testing.assert_allclose(sp.min.numpy(), ref.min(0), rtol=1e-8)
    np.testing.assert_allclose(sp.max.numpy(), ref.max(0), rtol=1e-8)
    full = torch.linalg.eigvalsh(2 * X.T @ X / n).flip(0)[:2].numpy()
    np.testing.assert_allclose(sp.full.numpy(), full, rtol=1e-8)
    np.testing.assert_allclose(res.values.numpy(), full, rtol=1e-8)
    assert sp.subset_sizes == [9, 9, 9, 9] and all(sp.converged) and sp.n_subsets == 4
    assert "4 subsets" in repr(sp)
    r2 = eigs_spread(H, data_subsets=3, k=1, tol=1e-10)
    assert r2.spread.values.shape == (3, 1)
    np.testing.assert_allclose(r2.spread.values[:, 0].numpy(),
                               [float(torch.linalg.eigvalsh(2 * X[i:i + 12].T @ X[i:i + 12] / 12)[-1])
                                for i in (0, 12, 24)], rtol=1e-8)


def test_data_subsets_bad_inputs():
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(5, 2, generator=g, dtype=DT), torch.randn(5, 1, generator=g, dtype=DT)
    model = nn.Linear(2, 1).to(DT)
    H = hessian(model, _mse, (X, Y))
    for bad in (1, 0, 6):
        with pytest.raises(ValueError, match="data_subsets"):
            eigs(H, k=1, data_subsets=bad)
    A = LinearOperator(lambda v: 2 * v, 3, dtype=DT)
    with pytest.raises(TypeError, match="data_subsets"):
        eigs(A, k=1, data_subsets=2)


# -- the model is never changed --------------------------------------------------------------------------------
@pytest.mark.parametrize("net", ["resnet", "vit"])
@pytest.mark.parametrize("model_mode", ["train", "eval"])
def test_model_unchanged_by_scaled_analyses(net, model_mode):
    model, (x, y) = _resnet(seed=3) if net == "resnet" else _vit(seed=3, dropout=0.2)
    model.train(model_mode == "train")
    F.cross_entropy(model(x), y).backward()                  # existing gradients must survive
    torch.manual_seed(11)
    snap = _snapshot(model)
    for op_mode in ("train" if model_mode == "eval" else "eval",):    # the analysis mode differs from the model's
        for build in _builders().values():
            op = build(model, (x, y), mode=op_mode, max_memory="4MiB", batch_size=4)
            _assert_same(model, snap)
            v = torch.randn(op.size, generator=torch.Generator().manual_seed(0), dtype=DT)
            a = op.matvec(v)
            torch.testing.assert_close(op.matvec(v), a, rtol=0, atol=0)   # a fixed linear map (seeded dropout)
            _assert_same(model, snap)
        H = hessian(model, _ce, (x, y), mode=op_mode, batch_size=3)
        r = eigs(H, k=1, tol=1e-2, data_subsets=2, max_iter=8, warn=False)
        assert r.spread.values.shape == (2, 1)
        blk = H.block(H.param_names[-1])
        eigs(blk, k=1, tol=1e-2)
        block_spectra(H, blocks={"last": H.param_names[-1]}, k=1, tol=1e-2, density=True, steps=4)
        _assert_same(model, snap)
    assert H.mode == op_mode and f"{op_mode} mode" in H.attrs["mode_note"]
