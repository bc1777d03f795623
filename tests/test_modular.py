"""Modular arithmetic (workbench.problems.modular): tables, splits, models, the `modular-addition` problem, and
exact Hessian-vector products of the transformer against a dense Hessian."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.problems.modular import (OPERATIONS, ModularMLP, ModularTransformer, is_prime, modular_mlp,
                                        modular_split, modular_table, modular_transformer)

PRIMES = [p for p in range(2, 60) if is_prime(p)]


def _expected(op, a, b, p):
    if op == "add":
        return (a + b) % p
    if op == "sub":
        return (a - b) % p
    if op == "mul":
        return (a * b) % p
    return next(c for c in range(p) if (c * b) % p == a)     # a / b: the c with c b = a (mod p), by search


# ----------------------------------------------------------------------------------------------------------------
# tables and splits
# ----------------------------------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(p=st.integers(2, 40), op=st.sampled_from(["add", "sub", "mul"]))
def test_table_has_every_pair_once_with_the_right_label(p, op):
    x, y = modular_table(p, op)
    assert x.dtype == torch.long and y.dtype == torch.long and x.shape == (p * p, 2) and y.shape == (p * p,)
    pairs = {tuple(r) for r in x.tolist()}
    assert pairs == {(a, b) for a in range(p) for b in range(p)}           # p² distinct rows: each pair once
    for (a, b), c in zip(x.tolist(), y.tolist()):
        assert c == _expected(op, a, b, p)


@pytest.mark.parametrize("p", [2, 3, 7, 13])
def test_division_table_inverts_multiplication(p):
    x, y = modular_table(p, "div")
    assert x.shape == (p * (p - 1), 2) and (x[:, 1] != 0).all()
    assert {tuple(r) for r in x.tolist()} == {(a, b) for a in range(p) for b in range(1, p)}
    for (a, b), c in zip(x.tolist(), y.tolist()):
        assert c == _expected("div", a, b, p) and (c * b) % p == a


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


@settings(max_examples=25, deadline=None)
@given(p=st.integers(2, 30), frac=st.floats(0.01, 0.99), seed=st.integers(0, 2**31 - 1))
def test_split_partitions_the_table_by_fraction(p, frac, seed):
    xtr, ytr, xte, yte = modular_split(p, frac, seed)
    n = p * p
    assert xtr.shape[0] == min(max(round(frac * n), 1), n - 1) and xtr.shape[0] + xte.shape[0] == n
    tr, te = {tuple(r) for r in xtr.tolist()}, {tuple(r) for r in xte.tolist()}
    assert len(tr) == xtr.shape[0] and len(te) == xte.shape[0] and not tr & te
    assert tr | te == {(a, b) for a in range(p) for b in range(p)}
    assert torch.equal(ytr, (xtr[:, 0] + xtr[:, 1]) % p) and torch.equal(yte, (xte[:, 0] + xte[:, 1]) % p)


def test_split_is_deterministic_by_seed():
    a = modular_split(31, 0.4, seed=3)
    b = modular_split(31, 0.4, seed=3)
    c = modular_split(31, 0.4, seed=4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


# ----------------------------------------------------------------------------------------------------------------
# the problem
# ----------------------------------------------------------------------------------------------------------------
def test_problem_registered_with_tensors_of_the_documented_shapes():
    assert "modular-addition" in wb.problems.list()
    names = {o.name for o in wb.problems.options("modular-addition")}
    assert {"p", "train_fraction", "model", "loss", "operation", "dim", "heads", "mlp_dim", "embed_dim",
            "width"} <= names
    prob = wb.problems.make("modular-addition", seed=1, p=23, train_fraction=0.3, model="mlp", operation="sub")
    xtr, ytr = prob.data()
    xte, yte = prob.data("test")
    assert xtr.dtype == torch.long and xtr.shape == (round(0.3 * 529), 2) and ytr.shape == (xtr.shape[0],)
    assert xte.shape[0] == 529 - xtr.shape[0] and prob.n_classes == 23 and prob.kind == "classification"
    assert torch.equal(ytr, (xtr[:, 0] - xtr[:, 1]) % 23)
    assert torch.equal(xtr, modular_split(23, 0.3, 1, "sub")[0])          # the problem's split is the seeded one
    assert "a - b mod p" in prob.describe() and "accuracy" in prob.metrics
    out = prob.model(xtr[:5])
    assert out.shape == (5, 23)


@pytest.mark.parametrize("opts", [dict(model="mlp", p=13, train_fraction=0.3),
                                  dict(model="transformer", p=7, operation="div", dim=16, heads=2, mlp_dim=8)])
def test_info_matches_the_built_problem(opts):
    info = wb.problems.info("modular-addition", **opts)
    prob = wb.problems.make("modular-addition", **opts)
    assert info["n_params"] == prob.n_params and info["data_available"] is True
    assert (info["n_train"], info["n_test"]) == (len(prob.train), len(prob.test))
    assert "generated" in info["data_note"]


@pytest.mark.parametrize("opts", [dict(p=1), dict(p=1001), dict(p=2.5), dict(train_fraction=0.0),
                                  dict(train_fraction=1.0), dict(train_fraction=-0.1), dict(model="cnn"),
                                  dict(loss="hinge"), dict(operation="pow"), dict(dim=0), dict(heads=0),
                                  dict(init_scale=0.0), dict(width=0), dict(embed_dim=0), dict(activation="cube")])
def test_bad_options_raise_value_error_naming_the_field(opts):
    (field,) = opts
    with pytest.raises(ValueError, match=field):
        wb.problems.make("modular-addition", p=opts.get("p", 7), **{k: v for k, v in opts.items() if k != "p"})


def test_heads_must_divide_dim_and_division_needs_a_prime():
    with pytest.raises(ValueError, match=r"heads=3 .*divide dim=16"):
        wb.problems.make("modular-addition", p=7, dim=16, heads=3)
    with pytest.raises(ValueError, match=r"p=9 .*prime"):
        wb.problems.make("modular-addition", p=9, operation="div")
    wb.problems.make("modular-addition", p=9, operation="mul", model="mlp")      # composite p is fine for mul
    with pytest.raises(ValueError, match=r"heads=3"):
        modular_transformer(7, dim=16, heads=3)


def test_models_reject_bad_inputs():
    for model in (modular_transformer(5, dim=8, heads=2, mlp_dim=8), modular_mlp(5, embed_dim=4, width=8)):
        with pytest.raises(ValueError, match=r"\(N, 2\)"):
            model(torch.zeros(4, 3, dtype=torch.long))
        with pytest.raises(ValueError, match="integer tokens"):
            model(torch.zeros(4, 2))


# ----------------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------------
def _causal_reference(m: ModularTransformer, x: torch.Tensor) -> torch.Tensor:
    """The textbook model: causal self-attention over all three positions, MLP on every position, readout at '='."""
    n = x.shape[0]
    tok = torch.cat([x, torch.full((n, 1), m.p, dtype=torch.long)], 1)
    h = m.embed(tok) + m.pos
    hn = m.ln_attn(h)
    H, dh = m.heads, m.d_head
    q, k, v = (lin(hn).reshape(n, 3, H, dh).transpose(1, 2) for lin in (m.query, m.key, m.value))
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(torch.triu(torch.ones(3, 3, dtype=torch.bool), 1), float("-inf"))
    z = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(n, 3, m.dim)
    h = h + m.out(z)
    h = h + m.mlp(m.ln_mlp(h))
    return m.unembed(m.ln_out(h))[:, -1]


@pytest.mark.parametrize("layernorm", [False, True])
def test_transformer_equals_full_causal_attention_read_out_at_the_last_position(layernorm):
    torch.manual_seed(0)
    m = ModularTransformer(11, dim=12, heads=3, mlp_dim=20, layernorm=layernorm).double()
    x, _ = modular_table(11)
    torch.testing.assert_close(m(x), _causal_reference(m, x), rtol=1e-12, atol=1e-12)


def test_mlp_is_embedding_concat_hidden_readout():
    torch.manual_seed(0)
    m = ModularMLP(7, embed_dim=3, width=5, activation="tanh").double()
    x, _ = modular_table(7)
    E = m.embed.weight
    ref = m.readout(torch.tanh(torch.cat([E[x[:, 0]], E[x[:, 1]]], 1) @ m.hidden.weight.T + m.hidden.bias))
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls,kw", [(ModularTransformer, dict(dim=16, heads=4, mlp_dim=32)),
                                    (ModularMLP, dict(embed_dim=8, width=16))])
def test_init_scale_multiplies_the_initial_weights(cls, kw):
    torch.manual_seed(5)
    a = cls(13, **kw)
    torch.manual_seed(5)
    b = cls(13, init_scale=3.0, **kw)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        expect = pa if name.endswith("bias") else 3.0 * pa
        torch.testing.assert_close(pb, expect, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("model,extra,lr", [("transformer", dict(dim=16, heads=4, mlp_dim=32), 3e-2),
                                            ("mlp", dict(embed_dim=8, width=32), 3e-2),
                                            ("mlp", dict(embed_dim=8, width=32, loss="mse"), 3e-2)])
def test_a_few_steps_reduce_the_loss_and_same_seed_gives_the_same_record(model, extra, lr):
    prob = wb.problems.make("modular-addition", seed=0, p=11, train_fraction=0.5, model=model, **extra)
    kw = dict(optimizer="adamw", lr=lr, weight_decay=1.0, steps=20, device="cpu", progress=False,
              probes=[wb.probes.Eval(every=5, split="both")])
    r1 = wb.train(prob, **kw).record
    r2 = wb.train(wb.problems.make("modular-addition", seed=0, p=11, train_fraction=0.5, model=model, **extra),
                  **kw).record
    loss = r1.loss.values
    assert r1.attrs["status"] == "finished" and loss[-1] < 0.8 * loss[0]
    assert r1.train_accuracy.values[-1] > r1.train_accuracy.values[0]
    np.testing.assert_array_equal(loss, r2.loss.values)
    np.testing.assert_array_equal(r1.test_accuracy.values, r2.test_accuracy.values)
    other = wb.train(wb.problems.make("modular-addition", seed=1, p=11, train_fraction=0.5, model=model, **extra),
                     **kw).record
    assert not np.array_equal(loss, other.loss.values)


# ----------------------------------------------------------------------------------------------------------------
# curvature: exact HVPs (double backward through the explicit softmax attention)
# ----------------------------------------------------------------------------------------------------------------
def _dense_hessian(prob, model, data):
    """Dense Hessian of the mean loss in the flattened parameters: reverse-over-reverse autograd, vectorised.

    (Not ``torch.func.hessian``: in torch 2.13 its jacfwd(jacrev(.)) returns a wrong, asymmetric Hessian through a
    LayerNorm whose input depends on the parameters, e.g. 22 absolute error on a 24-parameter toy; looped or
    vmapped jvp(grad(.)) and reverse-over-reverse agree with each other to 1e-14.)"""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [math.prod(s) for s in shapes]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat):
        params = {n: t.reshape(s) for n, t, s in zip(names, torch.split(flat, sizes), shapes)}
        x, y = data
        return prob.loss_fn(torch.func.functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(f, theta, vectorize=True)


@pytest.mark.parametrize("layernorm,loss", [(False, "ce"), (True, "mse")])
def test_transformer_hvp_and_top_eigenvalue_match_a_dense_hessian(layernorm, loss):
    prob = wb.problems.make("modular-addition", seed=0, p=5, train_fraction=0.6, dim=4, heads=2, mlp_dim=6,
                            layernorm=layernorm, loss=loss, init_scale=2.0)
    model = prob.new_model().double()
    data = prob.data()
    before = [p.detach().clone() for p in model.parameters()]
    Hd = _dense_hessian(prob, model, data)
    n = Hd.shape[0]
    assert n == sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(Hd, Hd.T, rtol=1e-10, atol=1e-12)
    H = wb.curvature.hessian(model, prob.loss, data)
    V = torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = Hd @ V
    for j in range(4):
        hv = H.matvec(V[:, j])
        assert float((hv - ref[:, j]).norm() / ref[:, j].norm()) < 1e-10
    torch.testing.assert_close(H.matmat(V), ref, rtol=1e-9, atol=1e-12)
    top = torch.linalg.eigvalsh(Hd)[-3:].flip(0)
    res = wb.curvature.eigs(H, k=3, tol=1e-8)
    np.testing.assert_allclose(np.asarray(res.values, dtype=float), top.numpy(), rtol=1e-6)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
