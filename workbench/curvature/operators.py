"""Curvature operators: Hessian, generalized Gauss-Newton (exact and Monte-Carlo) and empirical Fisher.

Every operator is a symmetric :class:`LinearOperator` on the flattened selected parameters (``model.parameters()``
order restricted to ``params``) of a model, for a loss and data::

    H = hessian(model, prob.loss, (x, y))           # one batch
    H = hessian(model, prob.loss, prob.batches(batch_size=256))   # many batches, weighted by batch size
    H.matvec(v)      # (n,) -> (n,)
    H.matmat(V)      # (n, k) -> (n, k), the k products in one batched backward pass

The operator is a snapshot of the curvature at the parameters when it was built. For a single batch the
first-order graph is built once and reused by every product (``cache=True``); changing the parameters in place
afterwards raises an autograd error instead of silently mixing two points, so build a new operator after a step.

Mode: ``mode="eval"`` (default) evaluates the model in eval mode (BatchNorm uses running statistics, dropout off);
``"train"`` uses batch statistics and dropout with masks drawn from a fixed ``seed`` so the operator is the same
linear map on every call; ``None`` keeps the model's current mode. In every case the model's mode flags, buffers
(BatchNorm running statistics), parameters, ``.grad`` and the global RNG state are exactly as before each call.

Data larger than memory: ``batch_size=`` splits the data into microbatches (accumulated with weights ``n_b / n``)
and ``max_memory=`` (bytes or ``"2GiB"``) picks the largest microbatch whose product fits the budget, from the
memory of a trial product measured once (see :func:`memory_plan`). Batches stay where they are (e.g. on the CPU)
and one microbatch at a time goes to the device. In eval mode microbatching is exact (the same operator to
rounding); in train mode BatchNorm normalises each microbatch by its own statistics, so the operator depends on
the microbatch size (``op.attrs["mode_note"]`` says so).

Blocks: ``H.block("layer3")`` is the same kind of operator restricted to a parameter subset (the diagonal block
``H[S, S]``); ``H.subsets(n)`` are the same operator on ``n`` disjoint parts of the data (see ``eigs(...,
data_subsets=n)``).
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .._validate import check_choice, check_int
from ._common import BatchSource, batch_size, check_matrix, check_vector, parse_memory, preserved, select_params

__all__ = ["LinearOperator", "CurvatureOperator", "hessian", "ggn", "fisher", "HVP_METHODS", "DEFAULT_HVP_METHOD",
           "memory_plan", "MemoryPlan"]

HVP_METHODS = ("double-backward", "forward-over-reverse", "difference")
# Measured by benchmarks/curvature.py (tanh MLP 784-200-200-10, 2000 samples, CPU): reverse-over-reverse with
# the first-order graph cached is the faster exact method; forward-over-reverse recomputes forward and backward.
DEFAULT_HVP_METHOD = "double-backward"


class LinearOperator:
    """A symmetric linear operator on vectors of length ``size`` on ``device`` with ``dtype``.

    ``matvec(v)`` maps ``(n,)`` to ``(n,)``; ``matmat(V)`` maps ``(n, k)`` to ``(n, k)`` (looping over columns
    when no batched ``matmat`` was given). ``n_matvec`` counts products (a ``matmat`` with k columns counts k).
    Inputs are checked: wrong shapes raise ``ValueError`` and non-finite entries raise ``ValueError``.
    """

    def __init__(self, matvec: Callable[[torch.Tensor], torch.Tensor], size: int, device=None, dtype=None,
                 matmat: Callable[[torch.Tensor], torch.Tensor] | None = None, name: str = "operator"):
        self.size = check_int("size", size, low=1)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        self._matvec = matvec
        self._matmat = matmat
        self.name = name
        self.n_matvec = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def _prep(self, v):
        return v.to(device=self.device, dtype=self.dtype)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        v = self._prep(check_vector(v, self.size, "v"))
        out = self._matvec(v)
        self.n_matvec += 1
        return out.reshape(self.size)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        V = self._prep(check_matrix(V, self.size, "V"))
        k = V.shape[1]
        if k == 0:
            return V.clone()
        if self._matmat is not None:
            out = self._matmat(V)
        else:
            out = torch.stack([self._matvec(V[:, j]).reshape(self.size) for j in range(k)]).T   # (n, k) view
        self.n_matvec += k
        return out

    def __matmul__(self, other: torch.Tensor) -> torch.Tensor:
        return self.matvec(other) if other.dim() == 1 else self.matmat(other)

    def to_dense(self, max_size: int = 8192) -> torch.Tensor:
        """The full ``(n, n)`` matrix by ``n`` products (refused above ``max_size`` to protect memory)."""
        if self.size > max_size:
            raise ValueError(f"to_dense: size={self.size} exceeds max_size={max_size}; raise max_size if you mean it")
        return self.matmat(torch.eye(self.size, device=self.device, dtype=self.dtype))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, size={self.size}, device={self.device}, dtype={self.dtype})"


class CurvatureOperator(LinearOperator):
    """A curvature matrix of a model (built by :func:`hessian`, :func:`ggn` or :func:`fisher`).

    Extra attributes: ``kind`` ("hessian" | "ggn" | "ggn-mc" | "fisher"), ``param_names``, ``param_shapes``,
    ``n_examples`` (how many examples the operator averages over), ``mode``, ``method`` and ``attrs`` (a dict:
    ``n_examples``, ``microbatch_size``, ``n_microbatches``, ``mode_note`` saying which statistics BatchNorm uses,
    ``memory`` when a ``max_memory`` budget chose the microbatch size). :meth:`unflatten` splits a flat vector into
    a ``{name: tensor}`` dict; :meth:`block` restricts the operator to a parameter subset and :meth:`subsets`
    splits its data.
    """

    def __init__(self, kind, matvec, matmat, size, device, dtype, names, shapes, n_examples, mode, method, attrs=None,
                 rebuild=None, params=None, source=None):
        super().__init__(matvec, size, device, dtype, matmat=matmat, name=kind)
        self.kind = kind
        self.param_names = list(names)
        self.param_shapes = [tuple(s) for s in shapes]
        self.n_examples = n_examples
        self.mode = mode
        self.method = method
        self.attrs = dict(attrs or {})
        self._rebuild = rebuild
        self._params = list(params) if params is not None else None
        self._source = source

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        out, o = {}, 0
        for name, shape in zip(self.param_names, self.param_shapes):
            m = math.prod(shape)
            out[name] = v[o:o + m].reshape(shape)
            o += m
        return out

    def block_names(self, selection) -> list[str]:
        """The names of this operator's parameters picked by ``selection`` (see :meth:`block`)."""
        names = self.param_names
        if callable(selection) and not isinstance(selection, str):
            chosen = [n for n in names if selection(n)]
            what = "the predicate"
        else:
            items = [selection] if isinstance(selection, str) else selection
            try:
                items = list(items)
            except TypeError as exc:
                raise TypeError("block selection must be a module-name prefix, a list of names/prefixes/patterns or "
                                f"a predicate name -> bool; got {type(selection).__name__}") from exc
            if not items:
                raise ValueError("block selection is empty: give a module-name prefix, a list of names or a predicate")
            keep = set()
            for it in items:
                if not isinstance(it, str):
                    raise TypeError(f"block selection items must be parameter names or prefixes; got "
                                    f"{type(it).__name__}")
                hits = {n for n in names if n == it or n.startswith(it + ".") or fnmatch.fnmatchcase(n, it)}
                if not hits:
                    raise ValueError(f"block selection {it!r} matches none of the operator's parameters; its "
                                     f"parameters are {names}")
                keep |= hits
            chosen = [n for n in names if n in keep]
            what = repr(selection)
        if not chosen:
            raise ValueError(f"block selection ({what}) matches none of the operator's parameters {names}")
        return chosen

    def block(self, selection) -> "CurvatureOperator":
        """The diagonal block ``A[S, S]`` of this operator for a parameter subset ``S``, as an operator of the same
        kind (same data, mode, microbatches and options).

        ``selection``: a module-name prefix (``"layer3"`` picks ``layer3.0.conv1.weight``, ...), an exact name, a
        glob pattern (``"*.bias"``), a list of these (their union), or a predicate ``name -> bool``. The block's
        products cost about as much as the full operator's (the backward pass still runs through the network).
        """
        if self._rebuild is None:
            raise TypeError("this operator cannot be restricted to a block (it was not built by hessian/ggn/fisher)")
        chosen = set(self.block_names(selection))
        params = [p for n, p in zip(self.param_names, self._params) if n in chosen]
        op = self._rebuild(params=params)
        op.attrs["block_of"] = list(self.param_names) if len(self.param_names) <= 50 else len(self.param_names)
        return op

    def subsets(self, n: int) -> list["CurvatureOperator"]:
        """The same operator on ``n`` disjoint, contiguous parts of its data (near-equal example counts, in data
        order, so shuffle the data first if it is sorted by class)."""
        if self._rebuild is None or self._source is None:
            raise TypeError("this operator cannot be split by data (it was not built by hessian/ggn/fisher)")
        n = check_int("data_subsets", n, low=2, high=max(2, self.n_examples))
        if n > self.n_examples:
            raise ValueError(f"data_subsets={n} exceeds the {self.n_examples} examples of the operator's data")
        return [self._rebuild(data=src) for src in self._source.split(n)]

    def __repr__(self) -> str:
        mb = self.attrs.get("microbatch_size")
        return (f"CurvatureOperator(kind={self.kind!r}, size={self.size}, params={len(self.param_names)} tensors, "
                f"examples={self.n_examples}, microbatches={self.attrs.get('n_microbatches')}"
                f"{'' if mb is None else f' of <= {mb}'}, mode={self.mode!r}, method={self.method!r}, "
                f"device={self.device}, dtype={self.dtype})")


_MODE_NOTES = {
    "eval": "eval mode: BatchNorm normalises with its running statistics and dropout is off, so the operator does not "
            "depend on how the data is split into microbatches",
    "train": "train mode: BatchNorm normalises each microbatch with that microbatch's own statistics (the operator "
             "depends on the microbatch size) and dropout masks are drawn from a fixed seed",
    None: "the model's current mode (BatchNorm running statistics in eval mode, per-microbatch statistics in train "
          "mode)",
}


@dataclass
class MemoryPlan:
    """How a ``max_memory`` budget chose the microbatch size.

    ``per_example`` and ``fixed`` bytes of one product: its memory is about ``fixed + per_example * b`` for a
    microbatch of ``b`` examples; ``minimum = fixed + per_example`` (one example); ``batch_size`` the chosen size
    (``<= n``); ``how``: "cuda peak" (``torch.cuda.max_memory_allocated`` around trial products on 1 and ``c``
    examples) or "autograd saved tensors" (CPU/MPS: bytes of the tensors autograd keeps for the trial products, x1.5
    for transients, plus four parameter-sized vectors: an estimate).
    """

    budget: int
    per_example: float
    fixed: float
    minimum: int
    batch_size: int
    how: str
    kind: str

    def as_dict(self) -> dict:
        return {"budget": self.budget, "per_example": self.per_example, "fixed": self.fixed, "minimum": self.minimum,
                "batch_size": self.batch_size, "how": self.how, "kind": self.kind}


def _fmt_bytes(n: float) -> str:
    for unit, f in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= f:
            return f"{n / f:.3g} {unit}"
    return f"{int(n)} B"


def _measure(trial, batch, device, param_bytes) -> tuple[float, str]:
    """Bytes one trial product on ``batch`` needs beyond what is already allocated."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        trial(batch)
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base), "cuda peak"
    seen: dict[int, int] = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        except (RuntimeError, NotImplementedError):     # e.g. tensors without storage (functorch wrappers)
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trial(batch)
    return 1.5 * sum(seen.values()) + 4 * param_bytes, "autograd saved tensors"


def _plan(s, trial, max_memory, kind) -> MemoryPlan:
    budget = parse_memory(max_memory)
    src = s.source
    param_bytes = sum(p.numel() * p.element_size() for _, p in s.sel)
    h1 = src.head(min(2, src.n))                     # two examples: BatchNorm in train mode needs more than one
    c1 = batch_size(h1)
    p1, how = _measure(trial, h1, s.device, param_bytes)
    h2 = src.head(min(8, src.n))
    c2 = batch_size(h2)
    if c2 > c1:
        p2, _ = _measure(trial, h2, s.device, param_bytes)
        per = max((p2 - p1) / (c2 - c1), p1 * 1e-3 / c1, 1.0)
        fixed = max(p1 - c1 * per, 0.0)
    else:
        per, fixed = max(p1 / c1, 1.0), 0.0
    minimum = int(math.ceil(fixed + per))
    if budget < minimum:
        raise ValueError(f"max_memory={budget} bytes ({_fmt_bytes(budget)}) is below the minimum for one example: a "
                         f"{kind} product needs about {minimum} bytes ({_fmt_bytes(minimum)}) at a microbatch of one "
                         f"({_fmt_bytes(fixed)} fixed + {_fmt_bytes(per)} per example, {how}); max_memory must be "
                         f">= {minimum}")
    bs = int(min(src.n, (budget - fixed) // per))
    return MemoryPlan(budget, per, fixed, minimum, max(bs, 1), how, kind)


# --------------------------------------------------------------------------------------------------------------
class _LossModule(nn.Module):
    """Lets ``torch.func.functional_call`` substitute parameters inside an arbitrary ``loss(model, batch)``."""

    def __init__(self, model, loss):
        super().__init__()
        self.m = model
        self._loss = loss

    def forward(self, batch):
        return self._loss(self.m, batch)


class _Setup:
    def __init__(self, model, loss, data, params, mode, seed, batch_size=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if mode is not None:
            check_choice("mode", mode, ("eval", "train", None))
        batch_size = check_int("batch_size", batch_size, low=1, allow_none=True)
        self.model, self.loss, self.mode, self.seed = model, loss, mode, int(seed)
        self.sel = select_params(model, params)
        p0 = self.sel[0][1]
        self.device, self.dtype = p0.device, p0.dtype
        if not self.dtype.is_floating_point:
            raise ValueError(f"params must be floating point; got {self.dtype}")
        self.names = [n for n, _ in self.sel]
        self.shapes = [tuple(p.shape) for _, p in self.sel]
        self.numels = [p.numel() for _, p in self.sel]
        self.size = sum(self.numels)
        if isinstance(data, BatchSource):
            bs = data.batch_size if batch_size is None else batch_size
            self.source = BatchSource(data, self.device, bs, data.start, data.stop)
        else:
            self.source = BatchSource(data, self.device, batch_size)
        self.n = self.source.n
        self.plan = None
        chosen = {id(p) for _, p in self.sel}
        self.others = {n: p.detach() for n, p in model.named_parameters() if id(p) not in chosen}

    @property
    def batches(self):
        return [b for b, _ in self.source]

    @property
    def weights(self):
        return [w for _, w in self.source]

    def apply_budget(self, trial, max_memory, kind):
        """Choose the microbatch size from a ``max_memory`` budget (trial products in ``mode``, model restored)."""
        if max_memory is None:
            return
        with preserved(self.model, self.mode, self.seed):
            plan = _plan(self, trial, max_memory, kind)
        cap = self.source.batch_size
        self.source = self.source.rechunk(plan.batch_size if cap is None else min(cap, plan.batch_size))
        self.plan = plan

    def attrs(self, extra=None):
        a = {"n_examples": self.n, "microbatch_size": self.source.batch_size, "n_microbatches": self.source.n_chunks,
             "mode_note": _MODE_NOTES[self.mode]}
        if self.plan is not None:
            a["memory"] = self.plan.as_dict()
        a.update(extra or {})
        return a

    def leaves(self):
        return [p.detach().requires_grad_(True) for _, p in self.sel]

    def split(self, v: torch.Tensor, batched: bool = False):
        parts, o = [], 0
        for m, s in zip(self.numels, self.shapes):
            parts.append(v[..., o:o + m].reshape(*v.shape[:-1], *s) if batched else v[o:o + m].reshape(s))
            o += m
        return parts

    @staticmethod
    def flat(parts, like_shapes, batched=False, k=None):
        if batched:
            return torch.cat([p.reshape(k, -1) for p in parts], dim=1)
        return torch.cat([p.reshape(-1) for p in parts])

    def param_dict(self, leaves, prefix=""):
        d = {prefix + n: t for n, t in zip(self.names, leaves)}
        d.update({prefix + n: t for n, t in self.others.items()})
        # private copies of the buffers: BatchNorm in train mode updates these, never the model's own, and the
        # saved graph never references a tensor the caller may later change in place
        d.update({prefix + n: b.detach().clone() for n, b in self.model.named_buffers()})
        return d

    def loss_at(self, leaves, batch):
        wrapper = _LossModule(self.model, self.loss)
        return torch.func.functional_call(wrapper, self.param_dict(leaves, "m."), (batch,))

    def outputs_at(self, leaves, x):
        return torch.func.functional_call(self.model, self.param_dict(leaves), (x,))

    def batch_seed(self, i):
        return self.seed + 1000003 * i


def _zeros_for_none(grads, leaves):
    return [torch.zeros_like(l) if g is None else g for g, l in zip(grads, leaves)]


def _grad_batched(outputs, inputs, grad_outputs, k, retain_graph=True):
    """``autograd.grad`` with k stacked cotangents (vmapped backward; a loop if the graph refuses vmap)."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if not pairs:
        return [torch.zeros((k, *i.shape), dtype=i.dtype, device=i.device) for i in inputs]
    outs, gos = zip(*pairs)
    try:
        res = torch.autograd.grad(outs, inputs, grad_outputs=gos, retain_graph=retain_graph, allow_unused=True,
                                  is_grads_batched=True)
        return [torch.zeros((k, *i.shape), dtype=i.dtype, device=i.device) if r is None else r
                for r, i in zip(res, inputs)]
    except RuntimeError:
        cols = []
        for j in range(k):
            r = torch.autograd.grad(outs, inputs, grad_outputs=[g[j] for g in gos], retain_graph=True,
                                    allow_unused=True)
            cols.append(_zeros_for_none(r, inputs))
        return [torch.stack([c[i] for c in cols]) for i in range(len(inputs))]


def _grad(outputs, inputs, grad_outputs, retain_graph=True):
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(i) for i in inputs]
    outs, gos = zip(*pairs)
    res = torch.autograd.grad(outs, inputs, grad_outputs=gos, retain_graph=retain_graph, allow_unused=True)
    return _zeros_for_none(res, inputs)


def _check_finite_out(t: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(torch.isfinite(t).all()):
        raise FloatingPointError(f"{what} produced non-finite values (nan/inf): the loss or model is not finite "
                                 "at these parameters")
    return t


# --------------------------------------------------------------------------------------------------------------
_DATA_DOC = """data: one batch (a tuple/list of tensors such as ``(x, y)``) or an iterable of batches (a list, a
        ``DataLoader``; a one-shot generator is read once into host memory). The operator is ``sum_b (n_b / n) A_b``
        over microbatches b (weighted by their size, ``A_b`` the curvature of batch b's mean loss), i.e. the
        curvature of the dataset mean loss. Batches stay where they are and each microbatch moves to the model's
        device only while it is used.
    batch_size: split the data into microbatches of at most this many examples (``None``: the batches as given).
    max_memory: a memory budget for one product (bytes, or a string such as ``"2GiB"``): the microbatch size is the
        largest whose product fits, from trial products on 2 and 8 examples measured once when the operator is built
        (on CUDA the allocator's peak; on CPU/MPS an estimate from the tensors autograd saves), capped by
        ``batch_size``. A budget below one example's product raises ``ValueError`` naming the minimum.
        ``op.attrs["memory"]`` records the plan (see :class:`MemoryPlan`)."""


def _memoized(build, cache: bool):
    """``graph(i, batch)``: microbatch ``i``'s autograd graph from ``build(i, batch)``, kept alive between products
    when ``cache`` (in-memory data), rebuilt at every product otherwise (streamed data: one graph alive at a time)."""
    graphs: dict[int, tuple] = {}

    def graph(i, batch):
        if i in graphs:
            return graphs[i]
        g = build(i, batch)
        if cache:
            graphs[i] = g
        return g

    return graph


def hessian(model: nn.Module, loss: Callable, data: Any, params: Any = None, mode: str | None = "eval",
            method: str | None = None, cache: bool | None = None, seed: int = 0, batch_size: int | None = None,
            max_memory: int | str | None = None) -> CurvatureOperator:
    """The Hessian of the mean loss over ``data`` with respect to the selected parameters, as an operator.

    Parameters
    ----------
    model: the ``nn.Module``; never modified (mode, buffers, parameters, ``.grad``, RNG are restored).
    loss: ``loss(model, batch) -> scalar mean loss`` (e.g. ``problem.loss``).
    DATA
    params: ``None`` (all trainable), a name / glob pattern / module prefix (``"2"`` for layer 2's weight and bias),
        or a list of them, for per-layer curvature (or use ``H.block(...)``).
    mode: ``"eval"`` (default: BatchNorm running statistics, dropout off; microbatching is then exact),
        ``"train"`` (BatchNorm statistics of each microbatch, seeded dropout) or ``None`` (keep the model's mode).
    method: ``"double-backward"`` (reverse-over-reverse; default, measured fastest), ``"forward-over-reverse"``
        (``torch.func.jvp`` of ``torch.func.grad``) or ``"difference"``: central differences of gradients,
        (g(θ + εv) − g(θ − εv)) / (2ε) with ε = 0.1·sqrt(u)·(1 + ‖θ‖)/‖v‖ (u the dtype's unit roundoff), two
        gradients per product and no second-order graph, so a product needs the memory of one gradient; ReLU and
        max-pool kinks (modules or functional calls) are frozen at θ (:mod:`workbench.curvature.kinks`), so the
        product is the Hessian of θ's own piece, as double backward computes. Its error is the float rounding
        amplified by 1/ε: ~1e-5-1e-4 relative in float32 (measured: see :mod:`workbench.curvature.differences`),
        ~1e-9 in float64. For the memory-lean eigensolve pair it with ``eigs(H, max_basis=3)``.
    cache: keep the first-order graph between products (default: when the data is one microbatch). Only used by
        the double-backward method.
    seed: seeds dropout masks in train mode (microbatch ``b`` uses ``seed + 1000003 b``).

    Memory: a product on a microbatch of ``b`` examples holds the forward activations and the first-order
    (``create_graph``) backward graph of those ``b`` examples, about 3-4x the activations of a training step, plus
    a few parameter-sized vectors; with ``cache=True`` the graphs of every microbatch stay alive between products.
    ``method="difference"``: one gradient's activations for one microbatch plus three parameter-sized vectors.
    """
    method = DEFAULT_HVP_METHOD if method is None else check_choice("method", method, HVP_METHODS)
    s = _Setup(model, loss, data, params, mode, seed, batch_size)
    if method == "difference":
        return _difference_hessian(s, model, loss, mode, seed, max_memory)

    def first_order(i, batch):
        leaves = s.leaves()
        with preserved(model, mode, s.batch_seed(i)), torch.enable_grad():
            L = s.loss_at(leaves, batch)
            if L.dim() != 0:
                raise ValueError(f"loss must return a scalar (mean) loss; got shape {tuple(L.shape)}")
            g = torch.autograd.grad(L, leaves, create_graph=True, allow_unused=True)
        return leaves, _zeros_for_none(g, leaves)

    def _hvp_fn(i, batch):
        def f(*leaves):
            return s.loss_at(list(leaves), batch)

        argnums = tuple(range(len(s.sel)))

        def hvp(*vs):
            primals = tuple(p.detach() for _, p in s.sel)
            return torch.func.jvp(torch.func.grad(f, argnums=argnums), primals, tuple(vs))[1]
        return hvp

    def trial(batch):
        v = [torch.randn_like(p) for _, p in s.sel]
        if method == "double-backward" or s.device.type != "cuda":
            # off CUDA the memory is estimated from autograd's saved tensors, which torch.func transforms refuse to
            # expose: the double-backward graph (same activations) stands in for forward-over-reverse there
            leaves, g = first_order(0, batch)
            _grad(g, leaves, v, retain_graph=False)
        else:
            with preserved(model, mode, s.batch_seed(0)):
                _hvp_fn(0, batch)(*v)

    s.apply_budget(trial, max_memory, "hessian")
    if cache is None:
        cache = s.source.n_chunks == 1

    graph = _memoized(first_order, cache)

    if method == "double-backward":
        def matvec(v):
            out = None
            vs = s.split(v)
            for i, (batch, w) in enumerate(s.source):
                leaves, g = graph(i, batch)
                hv = s.flat(_grad(g, leaves, vs, retain_graph=True), None)
                del leaves, g             # free this microbatch's graph before the next one is built
                out = hv * w if out is None else out + hv * w
            return _check_finite_out(out, "hessian matvec")

        def matmat(V):
            k = V.shape[1]
            if s.device.type == "cpu":
                # on CPU a loop of cached backward passes beats the vmapped backward (measured, 784-200-200-10)
                # products stored as rows, returned as an (n, k) view: no strided writes, and a caller holding
                # its vectors as rows (V = Rows.T, as SLQ does) gets contiguous columns in and rows out
                if cache or s.source.n_chunks == 1:
                    return torch.stack([matvec(V[:, j]) for j in range(k)]).T
                # streamed microbatches: one first-order graph per microbatch serves all k columns
                Vs = [s.split(V[:, j]) for j in range(k)]
                out = None
                for i, (batch, w) in enumerate(s.source):
                    leaves, g = graph(i, batch)
                    hv = torch.stack([s.flat(_grad(g, leaves, vs, retain_graph=True), None) for vs in Vs])
                    del leaves, g
                    out = hv * w if out is None else out + hv * w
                return _check_finite_out(out, "hessian matmat").T
            Vs = s.split(V.T.contiguous(), batched=True)
            out = None
            for i, (batch, w) in enumerate(s.source):
                leaves, g = graph(i, batch)
                hv = s.flat(_grad_batched(g, leaves, Vs, k), None, batched=True, k=k)
                del leaves, g
                out = hv * w if out is None else out + hv * w
            return _check_finite_out(out.T.contiguous(), "hessian matmat")
    else:
        def matvec(v):
            vs = s.split(v)
            out = None
            for i, (batch, w) in enumerate(s.source):
                with preserved(model, mode, s.batch_seed(i)):
                    hv = s.flat(_hvp_fn(i, batch)(*vs), None)
                out = hv * w if out is None else out + hv * w
            return _check_finite_out(out, "hessian matvec")

        def matmat(V):
            k = V.shape[1]
            Vs = s.split(V.T.contiguous(), batched=True)
            out = None
            for i, (batch, w) in enumerate(s.source):
                with preserved(model, mode, s.batch_seed(i)):
                    try:
                        hv = torch.func.vmap(_hvp_fn(i, batch))(*Vs)
                    except RuntimeError:   # e.g. BatchNorm updating running stats in train mode refuses vmap
                        cols = [_hvp_fn(i, batch)(*[x[j] for x in Vs]) for j in range(k)]
                        hv = [torch.stack([c[t] for c in cols]) for t in range(len(Vs))]
                hv = s.flat(hv, None, batched=True, k=k)
                out = hv * w if out is None else out + hv * w
            return _check_finite_out(out.T.contiguous(), "hessian matmat")

    rebuild = _rebuilder(s, hessian, model, loss, mode=mode, method=method, seed=seed)
    return _make_op(s, "hessian", matvec, matmat, method,
                    {"cache": bool(cache) and method == "double-backward"}, rebuild)


hessian.__doc__ = hessian.__doc__.replace("    DATA", "    " + _DATA_DOC)


def _difference_hessian(s, model, loss, mode, seed, max_memory):
    """``hessian(..., method="difference")``: central differences of gradients (see :mod:`.differences`)."""
    from .differences import difference_products

    def trial(batch):                  # a product's peak is one gradient's
        leaves = s.leaves()
        with torch.enable_grad():
            torch.autograd.grad(s.loss_at(leaves, batch), leaves, allow_unused=True)

    s.apply_budget(trial, max_memory, "hessian")
    mv, grad, _, rule = difference_products(s, "central", freeze_kinks=True)

    def matvec(v):
        return _check_finite_out(mv(v), "hessian matvec")

    def matmat(V):
        return torch.stack([matvec(V[:, j]) for j in range(V.shape[1])]).T

    rebuild = _rebuilder(s, hessian, model, loss, mode=mode, method="difference", seed=seed)
    op = _make_op(s, "hessian", matvec, matmat, "difference",
                  {"difference": "central", "eps_rule": rule, "freeze_kinks": 1}, rebuild)
    op.grad = grad
    return op


def _rebuilder(s, builder, model, loss, **kwargs):
    """A function ``(params=None, data=None) -> operator`` building the same operator on a parameter subset or on
    other data (the microbatch size chosen by a memory budget is kept)."""
    def rebuild(params=None, data=None):
        op = builder(model, loss, s.source if data is None else data,
                     params=[p for _, p in s.sel] if params is None else params, **kwargs)
        if s.plan is not None:
            op.attrs["memory"] = s.plan.as_dict()
        return op
    return rebuild


def _make_op(s, kind, matvec, matmat, method, extra, rebuild):
    return CurvatureOperator(kind, matvec, matmat, s.size, s.device, s.dtype, s.names, s.shapes, s.n, s.mode,
                             method, s.attrs(extra), rebuild=rebuild, params=[p for _, p in s.sel], source=s.source)


# --------------------------------------------------------------------------------------------------------------
def _resolve_loss_fn(loss, loss_fn):
    if loss_fn is not None:
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable(outputs, targets); got {type(loss_fn).__name__}")
        return loss_fn
    for owner in (loss, getattr(loss, "__self__", None)):
        fn = getattr(owner, "loss_fn", None)
        if callable(fn):
            return fn
    raise TypeError("ggn/fisher need the loss as a function of the model outputs: pass a Problem's loss "
                    "(problem.loss or the Problem itself) or loss_fn=callable(outputs, targets)")


def _split_xy(batch):
    if isinstance(batch, dict) or len(batch) != 2:
        raise ValueError("ggn/fisher need batches of the form (inputs, targets)")
    return batch[0], batch[1]


def _loss_kind(loss_fn) -> str:
    from ..problems import losses as L
    import torch.nn.functional as F
    if loss_fn in (L.cross_entropy, F.cross_entropy):
        return "categorical"
    if loss_fn is getattr(L, "sequence_cross_entropy", None):
        return "sequence-categorical"
    if loss_fn in (L.bce_logits, F.binary_cross_entropy_with_logits):
        return "bernoulli"
    return "generic"


def _output_factor(kind, out, y, loss_fn, n_samples, gen) -> torch.Tensor:
    """``G`` of shape ``(R, c, m)``: the outputs split into ``R`` rows of ``c`` entries, one per independent loss
    term, with ``E[G_r G_r^T] / m = R *`` the Hessian of the mean loss in row ``r`` (so the Monte-Carlo GGN is
    ``J^T blockdiag(G_r G_r^T) J / (R m)``).

    Rows: examples (``(N, C)`` logits of cross-entropy; any other loss, with all outputs of an example in its
    row), tokens (``(B, T, V)`` logits of ``sequence_cross_entropy``: ``B T`` rows of ``V``) or single logits
    (``binary_cross_entropy_with_logits``, a mean over every output). Categorical and Bernoulli losses sample
    labels from the model's predictive distribution (the Monte-Carlo Fisher = GGN of these losses); any other
    loss uses ``H_n^{1/2} z`` with Gaussian ``z`` (exact in expectation for every per-example loss, e.g. squared
    error).
    """
    N = out.shape[0]
    if kind == "categorical" and out.dim() != 2:
        raise ValueError(f"mc_samples with a cross-entropy loss needs (N, C) logits; got outputs of shape "
                         f"{tuple(out.shape)}. For (B, T, V) sequence logits use losses.sequence_cross_entropy, "
                         "or mc_samples=None for the exact GGN")
    if kind == "sequence-categorical" and out.dim() != 3:
        raise ValueError(f"mc_samples with sequence_cross_entropy needs (B, T, V) logits; got {tuple(out.shape)}")
    if kind in ("categorical", "sequence-categorical"):
        rows = out.detach().reshape(-1, out.shape[-1])                                    # (R, C)
        p = torch.softmax(rows.double(), -1)
        idx = torch.multinomial(p, n_samples, replacement=True, generator=gen)            # (R, m)
        onehot = torch.nn.functional.one_hot(idx, rows.shape[1]).to(p.dtype)              # (R, m, C)
        return (p[:, None, :] - onehot).transpose(1, 2).to(out.dtype)
    if kind == "bernoulli":
        s = torch.sigmoid(out.detach().reshape(-1, 1).double())                           # (R, 1)
        yhat = (torch.rand((s.shape[0], 1, n_samples), generator=gen, dtype=s.dtype, device=s.device)
                < s[..., None])
        return (s[..., None] - yhat.to(s.dtype)).to(out.dtype)
    flat = out.detach().reshape(N, -1)
    C = flat.shape[1]
    od = out.detach().requires_grad_(True)
    with torch.enable_grad():
        gl = torch.autograd.grad(loss_fn(od, y), od, create_graph=True)[0]
    cols = []
    for c in range(C):
        e = torch.zeros_like(flat)
        e[:, c] = 1.0
        hc = torch.autograd.grad(gl, od, grad_outputs=e.reshape(out.shape), retain_graph=True, allow_unused=True)[0]
        cols.append(torch.zeros_like(flat) if hc is None else hc.reshape(N, C) * N)
    Hn = torch.stack(cols, -1).double()                                                   # (N, C, C)
    Hn = 0.5 * (Hn + Hn.transpose(1, 2))
    lam, U = torch.linalg.eigh(Hn)
    root = U * lam.clamp(min=0).sqrt()[:, None, :]                                        # H^{1/2} up to rotation
    z = torch.randn((N, C, n_samples), generator=gen, dtype=root.dtype, device=root.device)
    return (root @ z).to(out.dtype)


def _output_operator(kind, model, loss, data, params, mode, loss_fn, method_note, mc_samples, seed, batch_size,
                     max_memory, cache):
    loss_fn = _resolve_loss_fn(loss, loss_fn)
    s = _Setup(model, loss, data, params, mode, seed, batch_size)
    lkind = _loss_kind(loss_fn)

    def build(i, batch):
        x, y = _split_xy(batch)
        leaves = s.leaves()
        with preserved(model, mode, s.batch_seed(i)), torch.enable_grad():
            out = s.outputs_at(leaves, x)
            u = torch.zeros_like(out, requires_grad=True)
            jtu = _zeros_for_none(torch.autograd.grad(out, leaves, grad_outputs=u, create_graph=True,
                                                      allow_unused=True), leaves)
        N = out.shape[0]
        if kind == "ggn":
            od = out.detach().requires_grad_(True)
            with torch.enable_grad():
                Lo = loss_fn(od, y)
                if Lo.dim() != 0:
                    raise ValueError(f"loss_fn must return a scalar (mean) loss; got shape {tuple(Lo.shape)}")
                gl = torch.autograd.grad(Lo, od, create_graph=True)[0]
            extra = (od, gl)
        elif kind == "fisher":
            od = out.detach().requires_grad_(True)
            with torch.enable_grad():
                e = torch.autograd.grad(loss_fn(od, y), od)[0] * N      # per-example loss gradients in outputs
            extra = (e.reshape(N, -1, 1),)
        else:   # ggn-mc: labels drawn from a generator seeded per microbatch, so a rebuilt graph is the same matrix
            gen = torch.Generator(device=s.device).manual_seed(int(seed) + 17 + 1000003 * i)
            extra = (_output_factor(lkind, out, y, loss_fn, mc_samples, gen),)
        return leaves, out, u, jtu, extra

    def apply(g, Vs, k):
        """Batched: Vs is a list of (k, *shape) tensors; returns (k, n)."""
        leaves, out, u, jtu, extra = g
        Jv = _grad_batched(jtu, [u], Vs, k)[0]                                  # (k, *out.shape)
        if kind == "ggn":
            od, gl = extra
            z = _grad_batched([gl], [od], [Jv], k)[0]
        else:
            G = extra[0]                                                         # (R, c, m)
            R, m = G.shape[0], G.shape[-1]
            Jf = Jv.reshape(k, R, -1)
            sproj = torch.einsum("kRc,Rcm->kRm", Jf, G)
            z = (torch.einsum("Rcm,kRm->kRc", G, sproj) / (R * m)).reshape(Jv.shape)
        return s.flat(_grad_batched([out], leaves, [z], k), None, batched=True, k=k)

    def trial(batch):
        apply(build(0, batch), [torch.randn((1, *p.shape), dtype=p.dtype, device=p.device) for _, p in s.sel], 1)

    for b, _ in s.source:               # check the batch layout before any trial product
        _split_xy(b)
        break
    s.apply_budget(trial, max_memory, kind)
    if cache is None:                   # in-memory data: keep every graph (built once); streamed: one at a time
        cache = s.source.n_chunks == 1 or (batch_size is None and max_memory is None
                                           and not isinstance(data, BatchSource))

    graph = _memoized(build, cache)

    if cache:
        for i, (b, _) in enumerate(s.source):     # build (and sample) once: the operator is a fixed matrix
            graph(i, b)

    def matmat(V):
        k = V.shape[1]
        Vs = s.split(V.T.contiguous(), batched=True)
        acc = None
        for i, (batch, w) in enumerate(s.source):
            r = apply(graph(i, batch), Vs, k) * w
            acc = r if acc is None else acc + r
        return _check_finite_out(acc.T.contiguous(), f"{kind} matmat")

    def matvec(v):
        return matmat(v.reshape(-1, 1)).reshape(-1)

    attrs = {"loss_kind": lkind, "mc_samples": mc_samples if kind == "ggn-mc" else None, "note": method_note,
             "cache": bool(cache)}
    builder = fisher if kind == "fisher" else ggn
    opts = dict(mode=mode, loss_fn=loss_fn, seed=seed)
    if kind != "fisher":
        opts["mc_samples"] = mc_samples
    rebuild = _rebuilder(s, builder, model, loss, **opts)
    return _make_op(s, kind, matvec, matmat, "jacobian-vector", attrs, rebuild)


def ggn(model: nn.Module, loss: Any, data: Any, params: Any = None, mode: str | None = "eval",
        mc_samples: int | None = None, loss_fn: Callable | None = None, seed: int = 0, batch_size: int | None = None,
        max_memory: int | str | None = None, cache: bool | None = None) -> CurvatureOperator:
    """The generalized Gauss-Newton matrix ``G = sum_b (n_b/n) J_b^T H_b J_b`` as an operator.

    ``J_b`` is the Jacobian of the model outputs on batch b in the selected parameters and ``H_b`` the Hessian of
    batch b's mean loss in those outputs. The loss must be a function of the outputs: pass ``problem.loss`` (its
    ``loss_fn`` is used), the Problem, or ``loss_fn=callable(outputs, targets)``; batches are ``(x, y)`` with
    outputs ``model(x)``.

    ``mc_samples=None`` gives the exact GGN: per microbatch and vector one Jacobian-vector product (the
    double-backward trick through a zero cotangent), one output-space Hessian-vector product of the loss alone
    (cross-entropy, MSE or any loss of the outputs: the network's second derivatives are never formed) and one
    vector-Jacobian product. ``mc_samples=m`` gives the Monte-Carlo GGN: per example,
    ``H_n`` is replaced by ``g g^T`` averaged over m samples with ``E[g g^T] = H_n`` (labels sampled from the
    model's predictive distribution for cross-entropy / logistic losses: one per token for the ``(B, T, V)``
    logits of ``losses.sequence_cross_entropy``, one per output of ``bce_logits``; ``H_n^{1/2} z`` for any other
    loss; cross-entropy on logits other than ``(N, C)`` is refused with a ValueError), drawn once per microbatch
    from ``seed`` so the operator is a fixed PSD matrix of rank at most ``m`` times the number of sampled terms.

    DATA
    cache: keep each microbatch's graph between products (default: when the data is a single microbatch, or
        when neither ``batch_size`` nor ``max_memory`` is given, so in-memory batches are built once; otherwise
        every product streams the microbatches again).

    Memory: a microbatch of ``b`` examples holds its forward graph and the graph of one vector-Jacobian product
    (about 2-3x the activations of a training step) plus the outputs; with ``cache`` every microbatch's graph
    stays alive. Other arguments as :func:`hessian`.
    """
    if mc_samples is None:
        return _output_operator("ggn", model, loss, data, params, mode, loss_fn, "exact GGN", None, seed,
                                batch_size, max_memory, cache)
    mc_samples = check_int("mc_samples", mc_samples, low=1, high=10_000)
    return _output_operator("ggn-mc", model, loss, data, params, mode, loss_fn,
                            f"Monte-Carlo GGN with {mc_samples} sample(s) per example", mc_samples, seed,
                            batch_size, max_memory, cache)


def fisher(model: nn.Module, loss: Any, data: Any, params: Any = None, mode: str | None = "eval",
           loss_fn: Callable | None = None, seed: int = 0, batch_size: int | None = None,
           max_memory: int | str | None = None, cache: bool | None = None) -> CurvatureOperator:
    """The empirical Fisher ``F = (1/n) sum_i g_i g_i^T`` of per-example loss gradients ``g_i`` (true labels).

    Per-example gradients are ``J_i^T d loss_i / d f_i``, so the loss must be a mean of per-example terms of the
    outputs (as every Problem loss is; with BatchNorm in train mode examples interact and this is an
    approximation that also depends on the microbatch size). Memory as :func:`ggn`; arguments as :func:`ggn`.
    """
    return _output_operator("fisher", model, loss, data, params, mode, loss_fn, "empirical Fisher", None, seed,
                            batch_size, max_memory, cache)


ggn.__doc__ = ggn.__doc__.replace("    DATA", "    " + _DATA_DOC)


def memory_plan(model: nn.Module, loss: Any, data: Any, max_memory: int | str, kind: str = "hessian",
                **kwargs) -> MemoryPlan:
    """How ``kind``'s operator (``"hessian"``, ``"ggn"`` or ``"fisher"``) would split ``data`` under ``max_memory``:
    the measured bytes per example and fixed, the minimum budget and the chosen microbatch size (a
    :class:`MemoryPlan`; ``ValueError`` when the budget is below one example). ``kwargs`` go to the builder
    (``params``, ``mode``, ``batch_size``, ``loss_fn``...)."""
    builders = {"hessian": hessian, "ggn": ggn, "fisher": fisher}
    kind = check_choice("kind", kind, list(builders))
    if max_memory is None:
        raise ValueError("max_memory must be a number of bytes > 0 or a string like '2GiB'; got None")
    op = builders[kind](model, loss, data, max_memory=max_memory, cache=False, **kwargs)
    return MemoryPlan(**op.attrs["memory"])
