"""Modular arithmetic (the grokking setup of Power et al. 2022, arXiv:2201.02177; Nanda et al. 2023,
arXiv:2301.05217): every pair (a, b) with a, b in [0, p) labelled by a ∘ b mod p, split at random into a training
and a test part, learned by a one-layer transformer or an embedding MLP.

Inputs are ``(N, 2)`` long tensors of tokens ``[a, b]`` and targets ``(N,)`` long labels in ``[0, p)``. Both models
take that input directly; the transformer appends the ``=`` token (id ``p``) itself.

* :func:`modular_table` — the whole table of an operation mod p; :func:`modular_split` — its seeded split.
* :class:`ModularTransformer` / :func:`modular_transformer` — one pre-residual transformer layer over the tokens
  ``[a, b, =]`` (token + position embeddings, multi-head softmax attention written out explicitly so that
  Hessian-vector products by double backward work, a ReLU MLP, both with residual connections; optional
  LayerNorm), read out at the ``=`` position. As in Nanda et al. the attention is causal, so with one layer the
  readout only needs the ``=`` position's query: the model computes attention for that query alone (exactly the
  causal model's output there, at a third of the cost).
* :class:`ModularMLP` / :func:`modular_mlp` — the embedding MLP: a shared embedding of a and b, concatenated,
  one hidden layer, a linear readout.
* Problem ``modular-addition`` (options ``p``, ``operation``, ``train_fraction``, ``model``, sizes, ``loss``,
  ``init_scale``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from .._validate import check_choice, check_float, check_int
from ..params import Param
from . import losses
from .base import Problem
from .models import ACTIVATIONS

__all__ = ["OPERATIONS", "modular_table", "modular_split", "ModularTransformer", "ModularMLP",
           "modular_transformer", "modular_mlp", "MODULAR_PARAMS", "modular_problem", "modular_info", "is_prime"]

P_MAX = 1000
OPERATIONS = {
    "add": "a + b mod p",
    "sub": "a - b mod p",
    "mul": "a * b mod p",
    "div": "a * b^(-1) mod p (b != 0; p prime)",
}


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(math.isqrt(n)) + 1))


def _check_p(p, operation="add"):
    p = check_int("p", p, 2, P_MAX)
    operation = check_choice("operation", operation, list(OPERATIONS))
    if operation == "div" and not is_prime(p):
        raise ValueError(f"p={p} is not accepted for operation='div': p must be a prime in [2, {P_MAX}] "
                         "(b must have an inverse mod p)")
    return p, operation


def modular_table(p: int, operation: str = "add") -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair ``(a, b)``, a, b in ``[0, p)`` (b != 0 for ``"div"``), in lexicographic order, with its label.

    Returns ``x`` (N, 2) long and ``y`` (N,) long; N = p² (p (p − 1) for division).
    """
    p, operation = _check_p(p, operation)
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    if operation == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
        inv = np.array([0] + [pow(int(v), -1, p) for v in range(1, p)], dtype=np.int64)
        y = (a * inv[b]) % p
    elif operation == "add":
        y = (a + b) % p
    elif operation == "sub":
        y = (a - b) % p
    else:
        y = (a * b) % p
    x = torch.as_tensor(np.stack([a, b], 1), dtype=torch.long)
    return x, torch.as_tensor(y, dtype=torch.long)


def modular_split(p: int, train_fraction: float, seed: int = 0, operation: str = "add"):
    """The table split at random (``numpy.random.default_rng(seed)``): ``round(train_fraction * N)`` pairs for
    training (at least 1, at most N − 1), the rest for testing. Returns ``(x_train, y_train, x_test, y_test)``."""
    x, y = modular_table(p, operation)
    train_fraction = check_float("train_fraction", train_fraction, 0.0, 1.0, low_inclusive=False,
                                 high_inclusive=False)
    seed = check_int("seed", seed, 0, 2**31 - 1)
    n = x.shape[0]
    n_train = _n_train(n, train_fraction)
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(n))
    tr, te = perm[:n_train], perm[n_train:]
    return x[tr], y[tr], x[te], y[te]


def _check_tokens(x: torch.Tensor, p: int, owner: str):
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"{owner} input must be an (N, 2) tensor of tokens [a, b]; got shape {tuple(x.shape)}")
    if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{owner} input must be integer tokens in [0, {p}); got dtype {x.dtype}")


def _activation(name: str) -> nn.Module:
    check_choice("activation", name, list(ACTIVATIONS))
    return ACTIVATIONS[name]()


class ModularTransformer(nn.Module):
    """One transformer layer over ``[a, b, =]``, logits over the p residues at the ``=`` position.

    ``h = E[tok] + P[pos]``; ``h₃ += W_O · softmax(q₃ Kᵀ / √d_head) V`` (per head, q₃ from the ``=`` position,
    keys/values from all three positions); ``h₃ += MLP(h₃)``; logits ``= U h₃``. With ``layernorm=True`` a
    LayerNorm precedes attention, the MLP and the readout (pre-LN); the default follows Nanda et al. (none).
    Embeddings are initialised N(0, init_scale²/dim), linear layers with PyTorch's default scaled by
    ``init_scale``.
    """

    def __init__(self, p: int, dim: int = 128, heads: int = 4, mlp_dim: int = 512, activation: str = "relu",
                 layernorm: bool = False, init_scale: float = 1.0):
        super().__init__()
        self.p = check_int("p", p, 2, P_MAX)
        self.dim = check_int("dim", dim, 1, 4096)
        self.heads = check_int("heads", heads, 1, 64)
        if dim % heads:
            raise ValueError(f"heads={heads} is not accepted: heads must divide dim={dim}")
        self.mlp_dim = check_int("mlp_dim", mlp_dim, 1, 16384)
        init_scale = check_float("init_scale", init_scale, 0.0, 100.0, low_inclusive=False)
        self.d_head = dim // heads
        self.embed = nn.Embedding(p + 1, dim)                       # token p is "="
        self.pos = nn.Parameter(torch.empty(3, dim))
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), _activation(activation), nn.Linear(mlp_dim, dim))
        self.unembed = nn.Linear(dim, p, bias=False)
        norm = (lambda: nn.LayerNorm(dim)) if layernorm else nn.Identity
        self.ln_attn, self.ln_mlp, self.ln_out = norm(), norm(), norm()
        with torch.no_grad():
            nn.init.normal_(self.embed.weight, std=init_scale / math.sqrt(dim))
            nn.init.normal_(self.pos, std=init_scale / math.sqrt(dim))
            for m in (self.query, self.key, self.value, self.out, self.unembed, *self.mlp):
                if isinstance(m, nn.Linear):
                    m.weight.mul_(init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tokens(x, self.p, "ModularTransformer")
        n = x.shape[0]
        tokens = torch.cat([x.long(), torch.full((n, 1), self.p, dtype=torch.long, device=x.device)], 1)
        h = self.embed(tokens) + self.pos                             # (n, 3, dim)
        hn = self.ln_attn(h)
        H, dh = self.heads, self.d_head
        q = self.query(hn[:, -1]).reshape(n, H, 1, dh)                # the "=" position's query
        k = self.key(hn).reshape(n, 3, H, dh).transpose(1, 2)         # (n, H, 3, dh)
        v = self.value(hn).reshape(n, 3, H, dh).transpose(1, 2)
        att = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(dh), dim=-1)   # (n, H, 1, 3)
        z = (att @ v).reshape(n, self.dim)
        r = h[:, -1] + self.out(z)
        r = r + self.mlp(self.ln_mlp(r))
        return self.unembed(self.ln_out(r))

    def extra_repr(self) -> str:
        return f"p={self.p}, dim={self.dim}, heads={self.heads}, mlp_dim={self.mlp_dim}"


class ModularMLP(nn.Module):
    """Embedding MLP: ``logits = W₂ σ(W₁ [E[a]; E[b]] + b₁) + b₂`` with one embedding table E shared by a and b.

    Embeddings are initialised N(0, init_scale²/embed_dim), linear layers with PyTorch's default scaled by
    ``init_scale``.
    """

    def __init__(self, p: int, embed_dim: int = 32, width: int = 256, activation: str = "relu",
                 init_scale: float = 1.0):
        super().__init__()
        self.p = check_int("p", p, 2, P_MAX)
        self.embed_dim = check_int("embed_dim", embed_dim, 1, 4096)
        self.width = check_int("width", width, 1, 16384)
        init_scale = check_float("init_scale", init_scale, 0.0, 100.0, low_inclusive=False)
        self.embed = nn.Embedding(p, embed_dim)
        self.hidden = nn.Linear(2 * embed_dim, width)
        self.act = _activation(activation)
        self.readout = nn.Linear(width, p)
        with torch.no_grad():
            nn.init.normal_(self.embed.weight, std=init_scale / math.sqrt(embed_dim))
            for m in (self.hidden, self.readout):
                m.weight.mul_(init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tokens(x, self.p, "ModularMLP")
        e = self.embed(x.long()).reshape(x.shape[0], 2 * self.embed_dim)
        return self.readout(self.act(self.hidden(e)))

    def extra_repr(self) -> str:
        return f"p={self.p}, embed_dim={self.embed_dim}, width={self.width}"


def modular_transformer(p: int, dim: int = 128, heads: int = 4, mlp_dim: int = 512, activation: str = "relu",
                        layernorm: bool = False, init_scale: float = 1.0) -> ModularTransformer:
    """The one-layer transformer of Nanda et al. 2023 (defaults: d_model 128, 4 heads, d_mlp 512, no LayerNorm)."""
    return ModularTransformer(p, dim, heads, mlp_dim, activation, layernorm, init_scale)


def modular_mlp(p: int, embed_dim: int = 32, width: int = 256, activation: str = "relu",
                init_scale: float = 1.0) -> ModularMLP:
    """The embedding MLP (shared embedding of a and b, concatenated, one hidden layer)."""
    return ModularMLP(p, embed_dim, width, activation, init_scale)


# -- the problem ---------------------------------------------------------------------------------------------------
MODULAR_PARAMS = [
    Param("p", 97, kind="int", low=2, high=P_MAX, doc="modulus (a prime for operation='div'); the table has p² "
                                                      "pairs"),
    Param("operation", "add", kind="choice", choices=tuple(OPERATIONS), doc="a ∘ b mod p: add, sub, mul, div"),
    Param("train_fraction", 0.4, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
          doc="fraction of all pairs used for training (the rest is the test set)"),
    Param("model", "transformer", kind="choice", choices=("transformer", "mlp"),
          doc="one-layer transformer over [a, b, =], or an embedding MLP"),
    Param("dim", 128, kind="int", low=1, high=4096, log=True, doc="transformer: residual width d_model"),
    Param("heads", 4, kind="int", low=1, high=64, doc="transformer: attention heads (must divide dim)"),
    Param("mlp_dim", 512, kind="int", low=1, high=16384, log=True, doc="transformer: MLP hidden units"),
    Param("layernorm", False, kind="bool", doc="transformer: pre-LayerNorm (Nanda et al. use none)"),
    Param("embed_dim", 32, kind="int", low=1, high=4096, log=True, doc="mlp: embedding size per operand"),
    Param("width", 256, kind="int", low=1, high=16384, log=True, doc="mlp: hidden units"),
    Param("activation", "relu", kind="choice", choices=tuple(ACTIVATIONS), doc="MLP activation (both models)"),
    Param("init_scale", 1.0, low=0.0, high=100.0, low_inclusive=False, log=True,
          doc="multiplies the initial weights (large init delays generalisation: Liu et al. 2022, Omnigrok)"),
    Param("loss", "ce", kind="choice", choices=("ce", "mse"),
          doc="cross-entropy, or squared error against one-hot targets"),
]


def modular_problem(seed: int = 0, **o) -> Problem:
    """Build the ``modular-addition`` problem from validated options (see ``MODULAR_PARAMS``)."""
    p, operation = _check_p(o["p"], o["operation"])
    if o["model"] == "transformer" and o["dim"] % o["heads"]:
        raise ValueError(f"heads={o['heads']} is not accepted: heads must divide dim={o['dim']}")
    xtr, ytr, xte, yte = modular_split(p, o["train_fraction"], seed, operation)
    if o["model"] == "transformer":
        factory = lambda: modular_transformer(p, o["dim"], o["heads"], o["mlp_dim"], o["activation"],
                                              o["layernorm"], o["init_scale"])
        what = f"a one-layer transformer (d_model {o['dim']}, {o['heads']} heads, MLP {o['mlp_dim']})"
    else:
        factory = lambda: modular_mlp(p, o["embed_dim"], o["width"], o["activation"], o["init_scale"])
        what = f"an embedding MLP (embedding {o['embed_dim']} per operand, {o['width']} hidden units)"
    loss_fn = losses.cross_entropy if o["loss"] == "ce" else losses.mse_onehot
    return Problem(name="modular-addition", kind="classification", model_factory=factory, loss_fn=loss_fn,
                   train=TensorDataset(xtr, ytr), test=TensorDataset(xte, yte), metrics={"accuracy": losses.accuracy},
                   options=dict(o), seed=seed, n_classes=p,
                   doc=f"{OPERATIONS[operation]} with p={p} (Power et al. 2022 grokking setup): {xtr.shape[0]} of "
                       f"{xtr.shape[0] + xte.shape[0]} pairs for training, learned by {what}.")


MODULAR_DOC = ("Modular arithmetic a ∘ b mod p (grokking: Power et al. 2022, Nanda et al. 2023) with a one-layer "
               "transformer or an embedding MLP; x = (N, 2) tokens, y = residue.")


def _n_pairs(p: int, operation: str) -> int:
    return p * (p - 1) if operation == "div" else p * p


def _n_train(n: int, train_fraction: float) -> int:
    return min(max(int(round(train_fraction * n)), 1), n - 1)


def modular_info(o: dict) -> dict:
    """Size of ``modular-addition`` with validated options ``o`` without building the table (for
    ``wb.problems.info``)."""
    p, operation = _check_p(o["p"], o["operation"])
    n = _n_pairs(p, operation)
    n_train = _n_train(n, o["train_fraction"])
    if o["model"] == "transformer":
        if o["dim"] % o["heads"]:
            raise ValueError(f"heads={o['heads']} is not accepted: heads must divide dim={o['dim']}")
        factory = lambda: modular_transformer(p, o["dim"], o["heads"], o["mlp_dim"], o["activation"],
                                              o["layernorm"], o["init_scale"])
    else:
        factory = lambda: modular_mlp(p, o["embed_dim"], o["width"], o["activation"], o["init_scale"])
    return {"model": factory, "n_train": n_train, "n_test": n - n_train, "data_available": True,
            "data_note": f"generated in memory: the table of {OPERATIONS[operation]} (no files needed)"}


def _register():
    from . import register
    register("modular-addition", modular_problem, MODULAR_PARAMS, MODULAR_DOC, info=modular_info)


_register()
