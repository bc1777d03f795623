"""The spread of per-example Hessians: the operator Σ = (1/n) Σᵢ Hᵢ² − H² of Wu, Ma & E (2018).

Wu, Ma & E, "How SGD Selects the Global Minima in Over-parameterized Learning: A Dynamical Stability
Perspective" (NeurIPS 2018), linearise SGD with step η and batch size B around a global minimum. With
Hᵢ the Hessian of example i's loss, H = (1/n) Σᵢ Hᵢ, the *sharpness* a = λ_max(H) and the *non-uniformity*
s = λ_max(Σ)^{1/2}, Σ = (1/n) Σᵢ Hᵢ² − H² = (1/n) Σᵢ (Hᵢ − H)², the mean square of the linearised iterate grows
by the factor (1 − ηa)² + η² (n − B)/(B (n − 1)) s² per step in one dimension (mini-batches drawn without
replacement), so a minimum that SGD can stay at needs a ≤ 2/η and s ≤ √(B (n − 1)/(n − B)) / η.

    S = wb.curvature.hessian_variance(model, prob.loss, prob.data())
    s = wb.curvature.eigs(S, k=1).values[0].sqrt()        # the non-uniformity

Each product Σv costs two per-example Hessian-vector passes over the data (Uᵢ = Hᵢv, then Σᵢ Hᵢ Uᵢ) and one
full-batch Hessian-vector product (H ū, ū the mean of the Uᵢ): Σv = (1/n) Σᵢ Hᵢ Uᵢ − H ū.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validate import check_choice, check_int
from ._common import preserved
from .operators import CurvatureOperator, _Setup, _check_finite_out, _zeros_for_none, hessian

__all__ = ["hessian_variance", "VARIANCE_METHODS"]

VARIANCE_METHODS = ("auto", "vmap", "loop")


def _slice(batch, i: int, j: int):
    if isinstance(batch, dict):
        return {k: v[i:j] for k, v in batch.items()}
    return type(batch)(t[i:j] for t in batch) if isinstance(batch, tuple) else [t[i:j] for t in batch]


def _unsqueeze(ex):
    if isinstance(ex, dict):
        return {k: v.unsqueeze(0) for k, v in ex.items()}
    return type(ex)(t.unsqueeze(0) for t in ex) if isinstance(ex, tuple) else [t.unsqueeze(0) for t in ex]


def _numel(batch) -> int:
    t = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return int(t.shape[0])


def hessian_variance(model: nn.Module, loss, data: Any, params: Any = None, mode: str | None = "eval",
                     method: str = "auto", chunk: int = 256) -> CurvatureOperator:
    """The operator Σ = (1/n) Σᵢ Hᵢ² − H² on the flattened selected parameters (symmetric positive semi-definite).

    ``Hᵢ`` is the Hessian of ``loss(model, batch_i)`` for the one-example batch of example ``i`` (so ``loss`` must
    be a mean over examples, as ``problem.loss`` is), ``H = (1/n) Σᵢ Hᵢ`` the Hessian of the mean loss over all
    ``n`` examples in ``data`` (one batch ``(x, y)`` or an iterable of batches; every example counts once).
    ``s = sqrt(λ_max(Σ))`` is Wu, Ma & E's non-uniformity.

    Parameters
    ----------
    model, loss, data, params: as for :func:`hessian`.
    mode: ``"eval"`` (default) or ``None`` (the model's current mode). ``"train"`` is refused: BatchNorm batch
        statistics and dropout make an example's loss depend on its batch, so there is no per-example Hessian.
    method: ``"vmap"`` (per-example products vectorised with ``torch.func.vmap``, fastest), ``"loop"`` (one
        cached autograd graph per example; works for any loss) or ``"auto"`` (default: ``"vmap"``, falling back to
        ``"loop"`` at the first product when the loss cannot be vmapped, e.g. ``F.one_hot`` of the targets). The
        operator's ``method`` attribute says which one ran.
    chunk: examples per vmapped pass (memory ~ ``chunk`` × the number of parameters); ``1 <= chunk``.

    The model is never modified (mode, buffers, parameters, ``.grad``, RNG restored).
    """
    if mode == "train":
        raise ValueError("mode='train' is not accepted: hessian_variance needs per-example Hessians, and in train "
                         "mode BatchNorm/dropout make an example's loss depend on its batch; mode must be one of "
                         "['eval', None]")
    mode = check_choice("mode", mode, ("eval", None))
    method = check_choice("method", method, VARIANCE_METHODS)
    chunk = check_int("chunk", chunk, 1)
    s = _Setup(model, loss, data, params, mode, 0)
    H = hessian(model, loss, data, params=params, mode=mode)
    n = s.n
    examples = [(b, i) for b in s.batches for i in range(_numel(b))]
    nleaf = len(s.sel)
    state = {"method": None if method == "auto" else method}
    graphs: dict[int, tuple] = {}

    # -- vmap: per-example Hessian-vector products by forward-over-reverse --------------------------------------
    def _loss_one(*args):
        return s.loss_at(list(args[:nleaf]), _unsqueeze(args[nleaf]))

    def _hvp_one(ex, *vs):
        primals = tuple(p.detach() for _, p in s.sel)
        g = torch.func.grad(lambda *l: _loss_one(*l, ex), argnums=tuple(range(nleaf)))
        return torch.func.jvp(g, primals, tuple(vs))[1]

    def _vmap_pass(batch, vs, shared: bool):
        dims = (0,) + ((None,) if shared else (0,)) * nleaf
        return list(torch.func.vmap(_hvp_one, in_dims=dims)(batch, *vs))

    # -- loop: one cached double-backward graph per example ------------------------------------------------------
    def _graph(idx):
        if idx not in graphs:
            b, i = examples[idx]
            leaves = s.leaves()
            with torch.enable_grad():
                L = s.loss_at(leaves, _slice(b, i, i + 1))
                if L.dim() != 0:
                    raise ValueError(f"loss must return a scalar (mean) loss; got shape {tuple(L.shape)}")
                g = _zeros_for_none(torch.autograd.grad(L, leaves, create_graph=True, allow_unused=True), leaves)
            graphs[idx] = (leaves, g)
        return graphs[idx]

    def _loop_hvp(idx, vs):
        leaves, g = _graph(idx)
        pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi.requires_grad]
        if not pairs:
            return [torch.zeros_like(p) for p in leaves]
        gs, vv = zip(*pairs)
        return _zeros_for_none(torch.autograd.grad(gs, leaves, grad_outputs=vv, retain_graph=True,
                                                   allow_unused=True), leaves)

    def _sums_vmap(vs):
        ubar = [torch.zeros_like(v) for v in vs]
        w = [torch.zeros_like(v) for v in vs]
        for b in s.batches:
            m = _numel(b)
            for i in range(0, m, chunk):
                part = _slice(b, i, min(i + chunk, m))
                U = _vmap_pass(part, vs, shared=True)
                HU = _vmap_pass(part, U, shared=False)
                for t in range(nleaf):
                    ubar[t] += U[t].sum(0)
                    w[t] += HU[t].sum(0)
        return ubar, w

    def _sums_loop(vs):
        ubar = [torch.zeros_like(v) for v in vs]
        w = [torch.zeros_like(v) for v in vs]
        for idx in range(len(examples)):
            U = _loop_hvp(idx, vs)
            HU = _loop_hvp(idx, U)
            for t in range(nleaf):
                ubar[t] += U[t]
                w[t] += HU[t]
        return ubar, w

    def matvec(v):
        vs = s.split(v)
        with preserved(model, mode):
            if state["method"] in (None, "vmap"):
                try:
                    ubar, w = _sums_vmap(vs)
                    state["method"] = "vmap"
                except RuntimeError as exc:
                    if state["method"] == "vmap":
                        raise RuntimeError(f"hessian_variance(method='vmap'): the loss cannot run under "
                                           f"torch.func.vmap ({exc}); use method='loop' (or 'auto')") from exc
                    state["method"] = "loop"
            if state["method"] == "loop":
                ubar, w = _sums_loop(vs)
        ubar = s.flat(ubar, None) / n
        out = s.flat(w, None) / n - H.matvec(ubar)
        op.method = state["method"]
        return _check_finite_out(out, "hessian_variance matvec")

    op = CurvatureOperator("hessian_variance", matvec, None, s.size, s.device, s.dtype, s.names, s.shapes, n, mode,
                           state["method"] or "auto", {"chunk": chunk})
    return op
