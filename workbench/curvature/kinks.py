"""Frozen kinks: finite differences of gradients on piecewise-linear networks.

A ReLU network's loss is a piecewise polynomial of the parameters. Double backward differentiates the piece that
contains θ (ReLU' = 1[x > 0], ReLU'' = 0, max-pooling routed to its argmax). A finite difference
(g(θ + εv) − g(θ))/ε instead steps into whichever pieces θ + εv lands in, and misses by far more than its
truncation error wherever a step crosses a kink: 276% in a random direction, ~4% along the top eigenvector
(fashion-cnn, width 16, 256 examples, float32). :class:`FrozenKinks` records, in a pass at θ, the pattern every
kinked operation chose, and replays it in the passes at shifted parameters, so the difference product is the
derivative of θ's own piece: the same Hessian that double backward computes, up to the difference error.

It is a :class:`torch.overrides.TorchFunctionMode`, so it sees the functional calls inside a forward as well as
the modules (``F.relu(x)``, ``x.relu()``, ``torch.relu_``, ``nn.ReLU`` all call one of the functions below); calls
are matched by their order in the forward, per batch. Frozen: ``relu`` (and its in-place forms), ``leaky_relu``,
``hardtanh``/``relu6`` (``nn.ReLU6``), ``max_pool1d/2d/3d`` and ``adaptive_max_pool1d/2d/3d`` (with or without
indices). Smooth operations need nothing. Not seen: other kinks (``abs``, ``clamp``, ``torch.max`` over a dim,
``where`` on a comparison) and code that torch functions cannot intercept (TorchScript, ``torch.compile``d
modules). A replayed call whose input shape differs from the recorded one (a data-dependent forward) is computed
as it is, unfrozen.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["FrozenKinks", "kink_functions"]


_POOLS = {  # function -> (spatial dims, the variant that returns indices, adaptive)
    F.max_pool1d: (1, F.max_pool1d_with_indices, False), F.max_pool1d_with_indices: (1, F.max_pool1d_with_indices, False),
    F.max_pool2d: (2, F.max_pool2d_with_indices, False), F.max_pool2d_with_indices: (2, F.max_pool2d_with_indices, False),
    F.max_pool3d: (3, F.max_pool3d_with_indices, False), F.max_pool3d_with_indices: (3, F.max_pool3d_with_indices, False),
    F.adaptive_max_pool1d: (1, F.adaptive_max_pool1d_with_indices, True),
    F.adaptive_max_pool1d_with_indices: (1, F.adaptive_max_pool1d_with_indices, True),
    F.adaptive_max_pool2d: (2, F.adaptive_max_pool2d_with_indices, True),
    F.adaptive_max_pool2d_with_indices: (2, F.adaptive_max_pool2d_with_indices, True),
    F.adaptive_max_pool3d: (3, F.adaptive_max_pool3d_with_indices, True),
    F.adaptive_max_pool3d_with_indices: (3, F.adaptive_max_pool3d_with_indices, True),
}
_RELUS = {F.relu: "relu", torch.relu: "relu", torch.Tensor.relu: "relu", F.relu_: "relu_", torch.relu_: "relu_",
          torch.Tensor.relu_: "relu_", F.leaky_relu: "leaky_relu", F.hardtanh: "hardtanh", F.relu6: "relu6"}
_INPLACE_ARG = {"relu": 1, "leaky_relu": 2, "hardtanh": 3, "relu6": 1}    # position of ``inplace`` in F.<name>
_WITH_INDICES = {F.max_pool1d_with_indices, F.max_pool2d_with_indices, F.max_pool3d_with_indices,
                 F.adaptive_max_pool1d_with_indices, F.adaptive_max_pool2d_with_indices,
                 F.adaptive_max_pool3d_with_indices}


def kink_functions() -> list[str]:
    """The names of the torch functions :class:`FrozenKinks` freezes."""
    return sorted({getattr(f, "__name__", str(f)) for f in (*_RELUS, *_POOLS)})


def _arg(args, kwargs, i, name, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _wants_indices(func, args, kwargs) -> bool:
    if func in _WITH_INDICES:
        return True
    adaptive = _POOLS[func][2]
    return bool(_arg(args, kwargs, 2 if adaptive else 6, "return_indices", False))


def _with_indices(func, args, kwargs):
    kw = {k: v for k, v in kwargs.items() if k != "return_indices"}
    return _POOLS[func][1](*args, **kw)


class FrozenKinks(TorchFunctionMode):
    """``with kinks.recording(batch): forward`` stores the pattern of every kinked call at θ;
    ``with kinks.replaying(batch): forward`` makes each call the linear (or constant) function of its piece:
    relu(x) = x·1[x₀ > 0], leaky_relu(x) = x·(1[x₀ > 0] + a·1[x₀ ≤ 0]), hardtanh(x) = x·1[lo < x₀ < hi] + the clamped
    constant elsewhere, max-pooling gathers the inputs at the argmax indices of x₀ (x₀ the input at θ). The stored
    state is a bool per activation input and an index per pooled output, per batch. ``n_seen`` counts the kinked
    calls a recording pass met (0: the model has none, freezing is a no-op)."""

    def __init__(self):
        super().__init__()
        self.store: dict = {}
        self.mode: str | None = None
        self.batch = 0
        self.i = 0
        self.n_seen = 0
        self.n_unfrozen = 0

    def _enter(self, mode: str, batch: int):
        self.mode, self.batch, self.i = mode, int(batch), 0
        return self

    def recording(self, batch: int = 0):
        return self._enter("record", batch)

    def replaying(self, batch: int = 0):
        return self._enter("apply", batch)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        relu = _RELUS.get(func)
        pool = None if relu else _POOLS.get(func)
        if relu is None and pool is None:
            return func(*args, **kwargs)
        key = (self.batch, self.i)
        self.i += 1
        x = args[0] if args else kwargs["input"]
        if self.mode == "record":
            self.n_seen += 1
            xd = x.detach()
            if relu is None:
                out, idx = _with_indices(func, args, kwargs)
                self.store[key] = (x.shape, idx, None)
                return (out, idx) if _wants_indices(func, args, kwargs) else out
            if relu in ("relu", "relu_"):
                self.store[key] = (x.shape, xd > 0, None)
            elif relu == "leaky_relu":
                a = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
                self.store[key] = (x.shape, torch.where(xd > 0, 1.0, a).to(xd.dtype), None)
            else:
                lo, hi = (0.0, 6.0) if relu == "relu6" else (float(_arg(args, kwargs, 1, "min_val", -1.0)),
                                                             float(_arg(args, kwargs, 2, "max_val", 1.0)))
                lin = (xd > lo) & (xd < hi)
                self.store[key] = (x.shape, lin, torch.where(lin, 0.0, xd.clamp(lo, hi)).to(xd.dtype))
            return func(*args, **kwargs)
        saved = self.store.get(key) if self.mode == "apply" else None
        if saved is None or saved[0] != x.shape:
            if self.mode == "apply":
                self.n_unfrozen += 1
            return func(*args, **kwargs)
        _, m, const = saved
        if relu is not None:
            pos = _INPLACE_ARG.get(relu)
            inplace = relu == "relu_" or (pos is not None and bool(_arg(args, kwargs, pos, "inplace", False)))
            if const is None:
                return x.mul_(m) if inplace else x * m
            return x.mul_(m).add_(const) if inplace else x * m + const
        dims = pool[0]
        lead = x.dim() - dims
        out = x.flatten(lead).gather(lead, m.flatten(lead)).view(m.shape)
        return (out, m) if _wants_indices(func, args, kwargs) else out


_KINKLESS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def known_kinkless(model, mode: str) -> bool:
    """True when a recording pass on ``model`` in ``mode`` already met no kinked call, so a new operator can skip
    its pass at θ (a model's kinks are a property of its code, not of its parameters)."""
    try:
        return mode in _KINKLESS.get(model, ())
    except TypeError:
        return False


def mark_kinkless(model, mode: str) -> None:
    try:
        _KINKLESS.setdefault(model, set()).add(mode)
    except TypeError:
        pass
