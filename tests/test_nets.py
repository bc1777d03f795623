"""The model zoo (workbench.problems.nets): shapes, options, determinism, and exact curvature of tiny float64
ResNet / ViT / GPT models against dense Hessians from torch.autograd.functional.hessian."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import workbench as wb
from workbench.curvature import eigs, fisher, ggn, hessian
from workbench.problems import losses as L
from workbench.problems.base import seeded
from workbench.problems.nets import cnn, cnn1d, gpt, resnet, set_fused_attention, vgg, vit

f64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- building, shapes, options -----------------------------------------------------------------------------------
def test_default_models_build_and_have_the_documented_sizes():
    big = gpt(65)
    cases = [(cnn(), torch.randn(2, 1, 28, 28), (2, 10)),
             (cnn1d(), torch.randn(2, 40), (2, 10)),
             (resnet(), torch.randn(2, 3, 32, 32), (2, 10)),
             (vgg(), torch.randn(2, 3, 32, 32), (2, 10)),
             (vit(), torch.randn(2, 3, 32, 32), (2, 10)),
             (big, torch.randint(0, 65, (1, 16)), (1, 16, 65))]
    for model, x, shape in cases:
        with torch.no_grad():
            assert tuple(model(x).shape) == shape
    n = lambda m: sum(p.numel() for p in m.parameters())          # noqa: E731
    assert n(resnet(20)) == 269_722                                # He et al.: ResNet-20 has 0.27M parameters
    assert 850_000 < n(resnet(56)) < 860_000                       # ... and ResNet-56 0.85M
    # nanoGPT per layer: 12 d^2 weights + 13 d biases/LN; plus wte (V d, tied to lm_head), wpe (block d), ln_f (2d)
    Lyr, d, V, T = 6, 384, 65, 256
    assert n(big) == 12 * Lyr * d * d + 13 * Lyr * d + V * d + T * d + 2 * d == 10_770_816
    assert big.lm_head.weight is big.wte.weight                    # tied


@pytest.mark.parametrize("name", ["cnn", "cnn1d", "resnet", "vgg", "vit", "gpt"])
def test_tiny_models_shapes_double_and_seeding(name):
    g = _gen()
    make, x, shape = {
        "cnn": (lambda: cnn(in_channels=3, n_classes=4, image_size=9, width=2, depth=3, activation="tanh"),
                torch.randn(5, 3, 9, 9, generator=g), (5, 4)),
        "cnn1d": (lambda: cnn1d(in_length=11, n_classes=3, width=2, depth=2, activation="gelu"),
                  torch.randn(5, 1, 11, generator=g), (5, 3)),
        "resnet": (lambda: resnet(depth=14, width=0.25, batchnorm=False, skip=False, in_channels=1, n_classes=3),
                   torch.randn(5, 1, 7, 7, generator=g), (5, 3)),
        "vgg": (lambda: vgg(batchnorm=True, in_channels=1, n_classes=3, image_size=28, width=1 / 16),
                torch.randn(5, 1, 28, 28, generator=g), (5, 3)),
        "vit": (lambda: vit(image_size=6, in_channels=2, n_classes=3, patch=3, dim=8, depth=2, heads=2,
                            mlp_ratio=1.5, dropout=0.1), torch.randn(5, 2, 6, 6, generator=g), (5, 3)),
        "gpt": (lambda: gpt(7, block_size=5, n_layer=2, n_head=2, n_embd=8, dropout=0.1, bias=False),
                torch.randint(0, 7, (5, 5), generator=g), (5, 5, 7)),
    }[name]
    a, b, c = seeded(0, make), seeded(0, make), seeded(1, make)
    for (ka, pa), (kb, pb), (_, pc) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert ka == kb and torch.equal(pa, pb), ka
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    a.eval()
    out = a(x)
    assert tuple(out.shape) == shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    d = copy.deepcopy(a).double()
    xd = x.double() if x.is_floating_point() else x
    od = d(xd)
    assert od.dtype == f64
    torch.testing.assert_close(od.float(), out, rtol=1e-4, atol=1e-5)
    if name == "cnn1d":                                            # (N, L) and (N, 1, L) inputs are the same
        torch.testing.assert_close(a(x[:, 0]), out)


def test_vgg_pools_only_while_the_image_is_at_least_2x2():
    for size, final in [(32, 1), (28, 1), (8, 1), (1, 1), (64, 2)]:
        m = vgg(image_size=size, in_channels=1, width=1 / 32, n_classes=2)
        assert m[-1].in_features == 16 * final * final
        assert tuple(m(torch.randn(2, 1, size, size)).shape) == (2, 2)
    assert sum(isinstance(l, torch.nn.MaxPool2d) for l in vgg(image_size=28)) == 4
    assert sum(isinstance(l, torch.nn.MaxPool2d) for l in vgg(image_size=32)) == 5
    assert sum(isinstance(l, torch.nn.BatchNorm2d) for l in vgg(batchnorm=True)) == 8


def test_resnet_structure_options():
    r = resnet(depth=32, width=0.5)
    assert len(r.layer1) == len(r.layer2) == len(r.layer3) == 5
    assert [r.layer1[0].conv1.out_channels, r.layer2[0].conv1.out_channels, r.layer3[0].conv1.out_channels] == \
        [8, 16, 32]
    assert r.layer1[0].conv1.bias is None and isinstance(r.layer1[0].bn1, torch.nn.BatchNorm2d)
    nb = resnet(depth=8, batchnorm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in nb.modules()) and nb.conv1.bias is not None
    # option-A shortcuts have no parameters: skip on/off have identical parameter lists and seeded values
    a, b = seeded(3, lambda: resnet(depth=8, width=0.25)), seeded(3, lambda: resnet(depth=8, width=0.25, skip=False))
    assert [k for k, _ in a.named_parameters()] == [k for k, _ in b.named_parameters()]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    x = torch.randn(3, 3, 8, 8, generator=_gen())
    a.eval(), b.eval()
    assert not torch.allclose(a(x), b(x))
    # the stride-2 shortcut: subsample and zero-pad the channels
    blk = a.layer2[0]
    z = torch.randn(2, 4, 5, 5, generator=_gen(1))
    s = blk.shortcut(z)
    assert tuple(s.shape) == (2, 8, 3, 3)
    torch.testing.assert_close(s[:, 2:6], z[:, :, ::2, ::2])
    assert s[:, :2].abs().sum() == 0 and s[:, 6:].abs().sum() == 0


@pytest.mark.parametrize("make, match", [
    (lambda: cnn(depth=0), "depth"), (lambda: cnn(image_size=4, depth=3), "depth"),
    (lambda: cnn(width=0), "width"), (lambda: cnn(activation="swish"), "activation"),
    (lambda: cnn(in_channels=0), "in_channels"), (lambda: cnn(n_classes=0), "n_classes"),
    (lambda: cnn1d(in_length=3, depth=2), "depth"), (lambda: cnn1d(width=1.5), "width"),
    (lambda: resnet(depth=21), "depth"), (lambda: resnet(depth=2), "depth"), (lambda: resnet(width=0), "width"),
    (lambda: resnet(width=-1.0), "width"), (lambda: resnet(batchnorm="yes"), "batchnorm"),
    (lambda: resnet(skip=1), "skip"), (lambda: resnet(in_channels=0), "in_channels"),
    (lambda: vgg(image_size=0), "image_size"), (lambda: vgg(width=0.0), "width"), (lambda: vgg(batchnorm=None),
                                                                                    "batchnorm"),
    (lambda: vit(patch=3), "patch"), (lambda: vit(patch=64), "patch"), (lambda: vit(dim=10, heads=4), "heads"),
    (lambda: vit(dropout=1.0), "dropout"), (lambda: vit(mlp_ratio=0), "mlp_ratio"), (lambda: vit(depth=-1), "depth"),
    (lambda: gpt(0), "vocab_size"), (lambda: gpt(5, block_size=0), "block_size"),
    (lambda: gpt(5, n_embd=10, n_head=4), "n_head"), (lambda: gpt(5, n_layer=0), "n_layer"),
    (lambda: gpt(5, dropout=-0.1), "dropout"), (lambda: gpt(5, bias="no"), "bias"),
])
def test_bad_options_raise_value_errors_naming_the_option(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=-10, max_value=200))
def test_resnet_depth_must_be_6n_plus_2(depth):
    if depth >= 8 and (depth - 2) % 6 == 0:
        assert len(resnet(depth=depth, width=1 / 16).layer1) == (depth - 2) // 6
    else:
        with pytest.raises(ValueError, match="depth"):
            resnet(depth=depth)


def test_bad_inputs_to_forward_raise():
    g = gpt(5, block_size=4, n_layer=1, n_head=1, n_embd=4)
    with pytest.raises(ValueError, match="block_size"):
        g(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        g(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        g(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="vit input"):
        vit(image_size=8, patch=4, dim=8, heads=2)(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="cnn1d input"):
        cnn1d()(torch.zeros(2, 3, 40))


def test_gpt_is_causal_and_dropout_follows_the_mode():
    m = seeded(0, lambda: gpt(9, block_size=6, n_layer=2, n_head=2, n_embd=8, dropout=0.2))
    idx = torch.randint(0, 9, (2, 6), generator=_gen())
    m.eval()
    a = m(idx)
    idx2 = idx.clone()
    idx2[:, 4:] = (idx2[:, 4:] + 1) % 9                             # change the future
    b = m(idx2)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    torch.testing.assert_close(m(idx), a, rtol=0, atol=0)           # eval: deterministic
    m.train()
    torch.manual_seed(0)
    t1 = m(idx)
    t2 = m(idx)
    assert not torch.allclose(t1, t2) and not torch.allclose(t1, a)  # train: dropout active
    v = seeded(0, lambda: vit(image_size=4, in_channels=1, patch=2, dim=8, heads=2, dropout=0.3))
    x = torch.randn(3, 1, 4, 4, generator=_gen())
    v.eval()
    torch.testing.assert_close(v(x), v(x), rtol=0, atol=0)
    v.train()
    assert not torch.allclose(v(x), v(x))


@pytest.mark.parametrize("name", ["cnn", "resnet", "vgg", "vit"])
def test_channels_last_gives_the_same_outputs_and_gradients(name):
    make, shape = {"cnn": (lambda: cnn(in_channels=3, image_size=8, width=3), (4, 3, 8, 8)),
                   "resnet": (lambda: resnet(depth=8, width=0.25), (4, 3, 8, 8)),
                   "vgg": (lambda: vgg(batchnorm=True, image_size=8, width=1 / 16), (4, 3, 8, 8)),
                   "vit": (lambda: vit(image_size=8, patch=4, dim=8, heads=2), (4, 3, 8, 8))}[name]
    a = seeded(0, make).double()
    b = copy.deepcopy(a).to(memory_format=torch.channels_last)
    x = torch.randn(*shape, generator=_gen(), dtype=f64)
    y = torch.tensor([0, 1, 2, 3])
    for mode in (False, True):
        a.train(mode), b.train(mode)
        la = F.cross_entropy(a(x), y)
        lb = F.cross_entropy(b(x.to(memory_format=torch.channels_last)), y)
        torch.testing.assert_close(lb, la, rtol=1e-12, atol=1e-12)
        ga = torch.autograd.grad(la, list(a.parameters()))
        gb = torch.autograd.grad(lb, list(b.parameters()))
        for p, q in zip(ga, gb):
            torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):   # BN statistics updated alike
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-12, msg=k)


@pytest.mark.parametrize("name", ["vit", "gpt"])
def test_fused_attention_matches_the_explicit_one(name):
    if name == "vit":
        m = seeded(0, lambda: vit(image_size=4, in_channels=1, n_classes=3, patch=2, dim=8, heads=2)).double()
        x = torch.randn(3, 1, 4, 4, generator=_gen(), dtype=f64)
    else:
        m = seeded(0, lambda: gpt(7, block_size=5, n_layer=2, n_head=2, n_embd=8)).double()
        x = torch.randint(0, 7, (3, 5), generator=_gen())
    m.eval()
    ref = m(x)
    gref = torch.autograd.grad(ref.square().sum(), list(m.parameters()))
    set_fused_attention(m)
    assert all(a.fused for a in m.modules() if hasattr(a, "fused"))
    out = m(x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for p, q in zip(torch.autograd.grad(out.square().sum(), list(m.parameters())), gref):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    set_fused_attention(m, False)
    assert not any(a.fused for a in m.modules() if hasattr(a, "fused"))


@pytest.mark.parametrize("name", ["resnet", "vgg", "vit", "gpt", "cnn1d"])
def test_per_example_vmap_over_functional_call_matches_the_batch(name):
    g = _gen()
    m, x = {"resnet": (resnet(depth=8, width=0.125), torch.randn(4, 3, 8, 8, generator=g)),
            "vgg": (vgg(batchnorm=True, image_size=4, width=1 / 32), torch.randn(4, 3, 4, 4, generator=g)),
            "vit": (vit(image_size=4, in_channels=1, patch=2, dim=8, heads=2), torch.randn(4, 1, 4, 4, generator=g)),
            "gpt": (gpt(7, block_size=5, n_layer=1, n_head=2, n_embd=8), torch.randint(0, 7, (4, 5), generator=g)),
            "cnn1d": (cnn1d(in_length=8, width=2), torch.randn(4, 8, generator=g))}[name]
    m.eval()
    params = dict(m.named_parameters())
    buffers = dict(m.named_buffers())
    per = torch.func.vmap(lambda xi: torch.func.functional_call(m, (params, buffers), (xi[None],))[0])(x)
    torch.testing.assert_close(per, m(x), rtol=1e-5, atol=1e-6)


def test_sequence_losses():
    out = torch.randn(3, 4, 6, generator=_gen(), dtype=f64)
    y = torch.randint(0, 6, (3, 4), generator=_gen(1))
    ref = -torch.log_softmax(out, -1).gather(-1, y[..., None]).mean()
    torch.testing.assert_close(L.sequence_cross_entropy(out, y), ref, rtol=1e-12, atol=0)
    acc = float(L.sequence_accuracy(out, y))
    assert acc == pytest.approx(float((out.argmax(-1) == y).double().mean()))
    y2 = out.argmax(-1)
    assert float(L.sequence_accuracy(out, y2)) == 1.0
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        L.sequence_cross_entropy(out[0], y[0])
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        L.sequence_accuracy(out, y[:, :3])


# -- curvature of tiny float64 models against dense references ---------------------------------------------------
def _tiny_resnet():
    """ResNet-8 with BatchNorm (channels 1-2-4, 395 parameters) on six 8x8 RGB images, non-trivial running stats."""
    m = seeded(0, lambda: resnet(depth=8, width=1 / 16, in_channels=3, n_classes=3)).double()
    g = _gen(0)
    x, y = torch.randn(6, 3, 8, 8, generator=g, dtype=f64), torch.randint(0, 3, (6,), generator=g)
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(x + 0.5 * torch.randn(x.shape, generator=g, dtype=f64) + 0.3)
    m.eval()
    return m, (x, y), F.cross_entropy


def _perturb(m, seed, scale):
    """Move to a generic point (attention far from uniform) so second-order terms of softmax matter."""
    g = _gen(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _tiny_vit():
    m = seeded(0, lambda: vit(image_size=4, in_channels=1, n_classes=3, patch=2, dim=8, depth=1, heads=2,
                              mlp_ratio=1.0)).double().eval()
    g = _gen(1)
    return _perturb(m, 1, 0.3), (torch.randn(6, 1, 4, 4, generator=g, dtype=f64),
                                 torch.randint(0, 3, (6,), generator=g)), F.cross_entropy


def _tiny_gpt():
    m = seeded(0, lambda: gpt(5, block_size=4, n_layer=1, n_head=2, n_embd=8)).double().eval()
    g = _gen(2)
    return _perturb(m, 2, 0.3), (torch.randint(0, 5, (3, 4), generator=g), torch.randint(0, 5, (3, 4), generator=g)), \
        L.sequence_cross_entropy


TINY = {"resnet": _tiny_resnet, "vit": _tiny_vit, "gpt": _tiny_gpt}


def _flat_fn(model, train):
    """(f(flat) -> model outputs via functional_call on a private copy, flat parameters)."""
    m = copy.deepcopy(model).train(train)
    named = list(m.named_parameters())
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in named])

    def call(flat, x):
        d, o = {}, 0
        for n, p in named:
            d[n] = flat[o:o + p.numel()].reshape(p.shape)
            o += p.numel()
        return torch.func.functional_call(m, d, (x,))
    return call, flat0


def dense_hessian(model, loss_fn, batch, train=False):
    call, flat0 = _flat_fn(model, train)
    return torch.autograd.functional.hessian(lambda f: loss_fn(call(f, batch[0]), batch[1]), flat0, vectorize=True)


_DENSE: dict = {}


def cached_dense_hessian(name, train=False):
    """The dense Hessian of ``TINY[name]()`` (deterministic models), computed once per session."""
    if (name, train) not in _DENSE:
        model, batch, loss_fn = TINY[name]()
        _DENSE[name, train] = dense_hessian(model, loss_fn, batch, train)
    return _DENSE[name, train]


def dense_ggn(model, loss_fn, batch, train=False):
    call, flat0 = _flat_fn(model, train)
    x, y = batch
    out = call(flat0, x).detach()
    J = torch.autograd.functional.jacobian(lambda f: call(f, x).reshape(-1), flat0, vectorize=True)
    HL = torch.autograd.functional.hessian(lambda o: loss_fn(o.reshape(out.shape), y), out.reshape(-1))
    return J.T @ HL @ J


def _snapshot(model):
    return ([m.training for m in model.modules()], {k: v.clone() for k, v in model.state_dict().items()},
            [p.detach().clone() for p in model.parameters()], torch.get_rng_state())


def _assert_untouched(model, snap):
    modes, state, params, rng = snap
    assert [m.training for m in model.modules()] == modes
    for k, v in model.state_dict().items():           # running_mean/var, num_batches_tracked, parameters
        assert torch.equal(v, state[k]) and v.dtype == state[k].dtype, k
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q) and p.grad is None
    assert torch.equal(torch.get_rng_state(), rng)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name, mode", [("resnet", "eval"), ("resnet", "train"), ("vit", "eval"), ("gpt", "eval")])
def test_hessian_products_and_top_eigenvalues_match_the_dense_hessian(name, mode):
    model, batch, loss_fn = TINY[name]()
    D = cached_dense_hessian(name, train=mode == "train")
    n = D.shape[0]
    assert n == sum(p.numel() for p in model.parameters()) and 300 < n < 2000
    ev = torch.linalg.eigvalsh(D)

    def loss(m, b):
        return loss_fn(m(b[0]), b[1])

    snap = _snapshot(model)
    V = torch.randn(n, 4, generator=_gen(5), dtype=f64)
    for method in ("double-backward", "forward-over-reverse"):
        H = hessian(model, loss, batch, mode=mode, method=method)
        _assert_untouched(model, snap)
        hv = H.matvec(V[:, 0])
        _assert_untouched(model, snap)
        assert _rel(hv, D @ V[:, 0]) < 1e-6
        HV = H.matmat(V)
        _assert_untouched(model, snap)
        for j in range(4):
            assert _rel(HV[:, j], D @ V[:, j]) < 1e-6, (method, j)
        if method == "double-backward":     # Lanczos sees the same products; once is enough (and cheaper)
            res = eigs(H, k=3, tol=1e-8)
            _assert_untouched(model, snap)
            assert res.converged
            torch.testing.assert_close(res.values, ev.flip(0)[:3], rtol=1e-6, atol=0)
    if mode == "train":      # batch statistics really differ from the running statistics used in eval mode
        assert _rel(hessian(model, loss, batch, mode="eval").matvec(V[:, 0]), D @ V[:, 0]) > 1e-3


@pytest.mark.parametrize("name", ["resnet", "vit", "gpt"])
def test_vmapped_forward_over_reverse_hvp_runs_without_a_fallback(name):
    """torch.func.vmap(jvp(grad(loss))) over several tangents works through these models (no loop fallback)."""
    model, (x, y), loss_fn = TINY[name]()
    call, flat0 = _flat_fn(model, False)

    def f(flat):
        return loss_fn(call(flat, x), y)

    V = torch.randn(3, flat0.numel(), generator=_gen(8), dtype=f64)
    HV = torch.func.vmap(lambda v: torch.func.jvp(torch.func.grad(f), (flat0,), (v,))[1])(V)
    D = cached_dense_hessian(name)
    for j in range(3):
        assert _rel(HV[j], D @ V[j]) < 1e-9


@pytest.mark.parametrize("name, mode", [("resnet", "eval"), ("resnet", "train"), ("vit", "eval"), ("gpt", "eval")])
def test_ggn_matches_JT_HL_J(name, mode):
    model, batch, loss_fn = TINY[name]()
    G = dense_ggn(model, loss_fn, batch, train=mode == "train")
    snap = _snapshot(model)
    op = ggn(model, None, batch, mode=mode, loss_fn=loss_fn)
    V = torch.randn(op.size, 3, generator=_gen(6), dtype=f64)
    GV = op.matmat(V)
    _assert_untouched(model, snap)
    for j in range(3):
        assert _rel(GV[:, j], G @ V[:, j]) < 1e-6
    res = eigs(op, k=3, tol=1e-8)
    _assert_untouched(model, snap)
    torch.testing.assert_close(res.values, torch.linalg.eigvalsh(G).flip(0)[:3], rtol=1e-6, atol=0)
    # a Problem-style loss (model, batch) whose loss_fn attribute is the output loss gives the same operator
    prob_loss = lambda m, b: loss_fn(m(b[0]), b[1])                 # noqa: E731
    prob_loss.loss_fn = loss_fn
    torch.testing.assert_close(ggn(model, prob_loss, batch, mode=mode).matmat(V), GV, rtol=1e-12, atol=1e-14)


def test_monte_carlo_ggn_of_sequence_logits_is_unbiased_per_token():
    """The MC-GGN of (B, T, V) logits samples one label per token: E = exact GGN, PSD, rank <= m B T."""
    model = seeded(0, lambda: gpt(5, block_size=4, n_layer=1, n_head=2, n_embd=4)).double().eval()
    _perturb(model, 3, 0.5)
    g = _gen(3)
    batch, loss_fn = (torch.randint(0, 5, (3, 4), generator=g), torch.randint(0, 5, (3, 4), generator=g)), \
        L.sequence_cross_entropy
    snap = _snapshot(model)
    G = ggn(model, None, batch, loss_fn=loss_fn).to_dense()
    mc = ggn(model, None, batch, loss_fn=loss_fn, mc_samples=4000, seed=0)
    assert mc.attrs["loss_kind"] == "sequence-categorical"
    M = mc.to_dense()
    _assert_untouched(model, snap)
    assert torch.linalg.eigvalsh(M).min() > -1e-10 * float(G.norm())
    assert _rel(M, G) < 0.05                                        # MC error ~ 1/sqrt(4000) per token, 12 tokens
    one = ggn(model, None, batch, loss_fn=loss_fn, mc_samples=1, seed=0).to_dense()
    # one sampled label per token: B T = 12 rank-one terms (two can coincide: causal outputs at position 0 of
    # sequences starting with the same token, sampled the same label), more than one per sequence (B = 3)
    assert 3 < int(torch.linalg.matrix_rank(one)) <= 12
    # a loss it does not recognise (here a lambda) gets the per-sequence H^{1/2} z sampler: unbiased too
    generic = ggn(model, None, batch, loss_fn=lambda o, t: L.sequence_cross_entropy(o, t), mc_samples=4000, seed=0)
    assert generic.attrs["loss_kind"] == "generic"
    assert _rel(generic.to_dense(), G) < 0.05
    # cross-entropy's sampler on 3-D logits would treat the whole sequence as one categorical: refused
    with pytest.raises(ValueError, match=r"sequence_cross_entropy|\(N, C\)"):
        ggn(model, None, batch, loss_fn=L.cross_entropy, mc_samples=2)
    _assert_untouched(model, snap)


def test_monte_carlo_ggn_of_multi_output_logistic_loss_is_unbiased():
    """binary_cross_entropy_with_logits averages over every output: each logit is its own Bernoulli term."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)).double()
    x = torch.randn(30, 3, generator=_gen(), dtype=f64)
    y = (torch.rand(30, 4, generator=_gen(1)) < 0.5).double()
    G = ggn(model, None, (x, y), loss_fn=F.binary_cross_entropy_with_logits).to_dense()
    mc = ggn(model, None, (x, y), loss_fn=F.binary_cross_entropy_with_logits, mc_samples=4000).to_dense()
    assert _rel(mc, G) < 0.05, _rel(mc, G)


def test_empirical_fisher_of_sequences_is_the_mean_outer_product_of_per_sequence_gradients():
    model, (x, y), loss_fn = _tiny_gpt()
    rows = []
    for i in range(x.shape[0]):
        gi = torch.autograd.grad(loss_fn(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in gi]))
    Gm = torch.stack(rows)
    Fd = Gm.T @ Gm / x.shape[0]
    V = torch.randn(Fd.shape[0], 2, generator=_gen(), dtype=f64)
    torch.testing.assert_close(fisher(model, None, (x, y), loss_fn=loss_fn).matmat(V), Fd @ V, rtol=1e-9,
                               atol=1e-13)


def test_train_mode_curvature_calls_leave_a_resnet_unchanged():
    """The public entry points (eigs, spectral density, trace) with a train-mode operator leave the model alone."""
    model, batch, loss_fn = _tiny_resnet()
    model.train()
    snap = _snapshot(model)
    H = hessian(model, lambda m, b: loss_fn(m(b[0]), b[1]), batch, mode="train")
    wb.curvature.eigs(H, k=2, tol=1e-3)
    wb.curvature.spectral_density(H, probes=1, steps=5)
    wb.curvature.trace(H, n=3)
    _assert_untouched(model, snap)
    assert model.training


# -- CUDA (skipped without a GPU) --------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["resnet", "vit", "gpt"])
def test_cuda_hessian_products_match_cpu(name):
    model, batch, loss_fn = TINY[name]()
    loss = lambda m, b: loss_fn(m(b[0]), b[1])                      # noqa: E731
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=_gen(7), dtype=f64)
    ref = hessian(model, loss, batch).matvec(v)
    mc = copy.deepcopy(model).cuda()
    bc = tuple(t.cuda() for t in batch)
    for method in ("double-backward", "forward-over-reverse"):
        out = hessian(mc, loss, bc, method=method).matvec(v.cuda()).cpu()
        assert _rel(out, ref) < 1e-6, method
    if name != "resnet":                                            # fused attention trains on CUDA in float32
        m32 = copy.deepcopy(model).float().cuda()
        x = bc[0].float() if bc[0].is_floating_point() else bc[0]
        ref32 = m32(x)
        set_fused_attention(m32)
        torch.testing.assert_close(m32(x), ref32, rtol=1e-4, atol=1e-5)
