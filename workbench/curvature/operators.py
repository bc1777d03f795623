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
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .._validate import check_choice, check_int
from ._common import as_batches, batch_size, check_matrix, check_vector, preserved, select_params

__all__ = ["LinearOperator", "CurvatureOperator", "hessian", "ggn", "fisher", "HVP_METHODS", "DEFAULT_HVP_METHOD"]

HVP_METHODS = ("double-backward", "forward-over-reverse")
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
    ``n_examples``, ``mode``, ``method``. :meth:`unflatten` splits a flat vector into a ``{name: tensor}`` dict.
    """

    def __init__(self, kind, matvec, matmat, size, device, dtype, names, shapes, n_examples, mode, method, attrs=None):
        super().__init__(matvec, size, device, dtype, matmat=matmat, name=kind)
        self.kind = kind
        self.param_names = list(names)
        self.param_shapes = [tuple(s) for s in shapes]
        self.n_examples = n_examples
        self.mode = mode
        self.method = method
        self.attrs = dict(attrs or {})

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        out, o = {}, 0
        for name, shape in zip(self.param_names, self.param_shapes):
            m = math.prod(shape)
            out[name] = v[o:o + m].reshape(shape)
            o += m
        return out

    def __repr__(self) -> str:
        return (f"CurvatureOperator(kind={self.kind!r}, size={self.size}, params={len(self.param_names)} tensors, "
                f"examples={self.n_examples}, mode={self.mode!r}, method={self.method!r}, device={self.device}, "
                f"dtype={self.dtype})")


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
    def __init__(self, model, loss, data, params, mode, seed):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if mode is not None:
            check_choice("mode", mode, ("eval", "train", None))
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
        self.batches, self.weights, self.n = as_batches(data, self.device)
        chosen = {id(p) for _, p in self.sel}
        self.others = {n: p.detach() for n, p in model.named_parameters() if id(p) not in chosen}

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
def hessian(model: nn.Module, loss: Callable, data: Any, params: Any = None, mode: str | None = "eval",
            method: str | None = None, cache: bool | None = None, seed: int = 0) -> CurvatureOperator:
    """The Hessian of the mean loss over ``data`` with respect to the selected parameters, as an operator.

    Parameters
    ----------
    model: the ``nn.Module``; never modified (mode, buffers, parameters, ``.grad``, RNG are restored).
    loss: ``loss(model, batch) -> scalar mean loss`` (e.g. ``problem.loss``).
    data: one batch (a tuple/list of tensors such as ``(x, y)``) or an iterable of batches; with several batches
        the operator is ``sum_b (n_b / n) H_b`` (batches weighted by their size, ``H_b`` the Hessian of batch b's mean
        loss), i.e. the Hessian of the dataset mean loss.
    params: ``None`` (all trainable), a name / glob pattern / module prefix (``"2"`` for layer 2's weight and bias),
        or a list of them, for per-layer curvature.
    mode: ``"eval"`` (default), ``"train"`` or ``None`` (keep the model's mode).
    method: ``"double-backward"`` (reverse-over-reverse; default, measured fastest) or ``"forward-over-reverse"``
        (``torch.func.jvp`` of ``torch.func.grad``).
    cache: keep the first-order graph between products (default: when ``data`` is a single batch). Only used by
        the double-backward method.
    seed: seeds dropout masks in train mode (batch ``b`` uses ``seed + 1000003 b``).
    """
    method = DEFAULT_HVP_METHOD if method is None else check_choice("method", method, HVP_METHODS)
    s = _Setup(model, loss, data, params, mode, seed)
    if cache is None:
        cache = len(s.batches) == 1
    graphs: dict[int, tuple] = {}

    def graph(i):
        if i in graphs:
            return graphs[i]
        leaves = s.leaves()
        with preserved(model, mode, s.batch_seed(i)), torch.enable_grad():
            L = s.loss_at(leaves, s.batches[i])
            if L.dim() != 0:
                raise ValueError(f"loss must return a scalar (mean) loss; got shape {tuple(L.shape)}")
            g = torch.autograd.grad(L, leaves, create_graph=True, allow_unused=True)
        g = _zeros_for_none(g, leaves)
        if cache:
            graphs[i] = (leaves, g)
        return leaves, g

    if method == "double-backward":
        def matvec(v):
            out = None
            vs = s.split(v)
            for i, w in enumerate(s.weights):
                leaves, g = graph(i)
                hv = s.flat(_grad(g, leaves, vs, retain_graph=True), None)
                out = hv * w if out is None else out + hv * w
            return _check_finite_out(out, "hessian matvec")

        def matmat(V):
            k = V.shape[1]
            if s.device.type == "cpu":
                # on CPU a loop of cached backward passes beats the vmapped backward (measured, 784-200-200-10)
                # products stored as rows, returned as an (n, k) view: no strided writes, and a caller holding
                # its vectors as rows (V = Rows.T, as SLQ does) gets contiguous columns in and rows out
                return torch.stack([matvec(V[:, j]) for j in range(k)]).T
            Vs = s.split(V.T.contiguous(), batched=True)
            out = None
            for i, w in enumerate(s.weights):
                leaves, g = graph(i)
                hv = s.flat(_grad_batched(g, leaves, Vs, k), None, batched=True, k=k)
                out = hv * w if out is None else out + hv * w
            return _check_finite_out(out.T.contiguous(), "hessian matmat")
    else:
        def _hvp_fn(i):
            batch = s.batches[i]

            def f(*leaves):
                return s.loss_at(list(leaves), batch)

            argnums = tuple(range(len(s.sel)))

            def hvp(*vs):
                primals = tuple(p.detach() for _, p in s.sel)
                return torch.func.jvp(torch.func.grad(f, argnums=argnums), primals, tuple(vs))[1]
            return hvp

        def matvec(v):
            vs = s.split(v)
            out = None
            for i, w in enumerate(s.weights):
                with preserved(model, mode, s.batch_seed(i)):
                    hv = s.flat(_hvp_fn(i)(*vs), None)
                out = hv * w if out is None else out + hv * w
            return _check_finite_out(out, "hessian matvec")

        def matmat(V):
            k = V.shape[1]
            Vs = s.split(V.T.contiguous(), batched=True)
            out = None
            for i, w in enumerate(s.weights):
                with preserved(model, mode, s.batch_seed(i)):
                    try:
                        hv = torch.func.vmap(_hvp_fn(i))(*Vs)
                    except RuntimeError:   # e.g. BatchNorm updating running stats in train mode refuses vmap
                        cols = [_hvp_fn(i)(*[x[j] for x in Vs]) for j in range(k)]
                        hv = [torch.stack([c[t] for c in cols]) for t in range(len(Vs))]
                hv = s.flat(hv, None, batched=True, k=k)
                out = hv * w if out is None else out + hv * w
            return _check_finite_out(out.T.contiguous(), "hessian matmat")

    return CurvatureOperator("hessian", matvec, matmat, s.size, s.device, s.dtype, s.names, s.shapes, s.n, mode,
                             method, {"cache": bool(cache) and method == "double-backward"})


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


def _output_operator(kind, model, loss, data, params, mode, loss_fn, method_note, mc_samples, seed):
    loss_fn = _resolve_loss_fn(loss, loss_fn)
    s = _Setup(model, loss, data, params, mode, seed)
    for b in s.batches:
        _split_xy(b)
    lkind = _loss_kind(loss_fn)
    gen = torch.Generator(device=s.device).manual_seed(int(seed) + 17)
    graphs: dict[int, tuple] = {}

    def graph(i):
        if i in graphs:
            return graphs[i]
        x, y = s.batches[i]
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
        else:   # ggn-mc
            extra = (_output_factor(lkind, out, y, loss_fn, mc_samples, gen),)
        graphs[i] = (leaves, out, u, jtu, extra)
        return graphs[i]

    for i in range(len(s.batches)):     # build (and sample) once: the operator is a fixed matrix
        graph(i)

    def apply(i, Vs, k):
        """Batched: Vs is a list of (k, *shape) tensors; returns (k, n)."""
        leaves, out, u, jtu, extra = graphs[i]
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

    def matmat(V):
        k = V.shape[1]
        Vs = s.split(V.T.contiguous(), batched=True)
        acc = None
        for i, w in enumerate(s.weights):
            r = apply(i, Vs, k) * w
            acc = r if acc is None else acc + r
        return _check_finite_out(acc.T.contiguous(), f"{kind} matmat")

    def matvec(v):
        return matmat(v.reshape(-1, 1)).reshape(-1)

    attrs = {"loss_kind": lkind, "mc_samples": mc_samples if kind == "ggn-mc" else None, "note": method_note}
    return CurvatureOperator(kind, matvec, matmat, s.size, s.device, s.dtype, s.names, s.shapes, s.n, mode,
                             "jacobian-vector", attrs)


def ggn(model: nn.Module, loss: Any, data: Any, params: Any = None, mode: str | None = "eval",
        mc_samples: int | None = None, loss_fn: Callable | None = None, seed: int = 0) -> CurvatureOperator:
    """The generalized Gauss-Newton matrix ``G = sum_b (n_b/n) J_b^T H_b J_b`` as an operator.

    ``J_b`` is the Jacobian of the model outputs on batch b in the selected parameters and ``H_b`` the Hessian of
    batch b's mean loss in those outputs. The loss must be a function of the outputs: pass ``problem.loss`` (its
    ``loss_fn`` is used), the Problem, or ``loss_fn=callable(outputs, targets)``; batches are ``(x, y)`` with
    outputs ``model(x)``.

    ``mc_samples=None`` gives the exact GGN (one Jacobian-vector, one output-space Hessian-vector and one
    vector-Jacobian product per batch and vector). ``mc_samples=m`` gives the Monte-Carlo GGN: per example,
    ``H_n`` is replaced by ``g g^T`` averaged over m samples with ``E[g g^T] = H_n`` (labels sampled from the
    model's predictive distribution for cross-entropy / logistic losses: one per token for the ``(B, T, V)``
    logits of ``losses.sequence_cross_entropy``, one per output of ``bce_logits``; ``H_n^{1/2} z`` for any other
    loss; cross-entropy on logits other than ``(N, C)`` is refused with a ValueError), drawn once from ``seed`` so
    the operator is a fixed PSD matrix of rank at most ``m`` times the number of sampled terms. Other arguments as
    :func:`hessian`.
    """
    if mc_samples is None:
        return _output_operator("ggn", model, loss, data, params, mode, loss_fn, "exact GGN", None, seed)
    mc_samples = check_int("mc_samples", mc_samples, low=1, high=10_000)
    return _output_operator("ggn-mc", model, loss, data, params, mode, loss_fn,
                            f"Monte-Carlo GGN with {mc_samples} sample(s) per example", mc_samples, seed)


def fisher(model: nn.Module, loss: Any, data: Any, params: Any = None, mode: str | None = "eval",
           loss_fn: Callable | None = None, seed: int = 0) -> CurvatureOperator:
    """The empirical Fisher ``F = (1/n) sum_i g_i g_i^T`` of per-example loss gradients ``g_i`` (true labels).

    Per-example gradients are ``J_i^T d loss_i / d f_i``, so the loss must be a mean of per-example terms of the
    outputs (as every Problem loss is; with BatchNorm in train mode examples interact and this is an
    approximation). Arguments as :func:`ggn`.
    """
    return _output_operator("fisher", model, loss, data, params, mode, loss_fn, "empirical Fisher", None, seed)
