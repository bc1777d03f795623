"""Training-dynamics probes built on the curvature core (:mod:`workbench.curvature`).

* :class:`Sharpness` — top-k Hessian eigenvalues, warm-started from the previous probe's eigenvectors, next to
  the optimizer's stability threshold at the *current* learning rate (Cohen et al. 2021, "Gradient Descent on
  Neural Networks Typically Occurs at the Edge of Stability"): 2/lr for gd/sgd, (2+2β)/lr for heavy-ball
  momentum, (2+2β)/((1+2β) lr) for Nesterov. For adaptive optimizers (Adam, AdamW, RMSprop, Adagrad) it also
  measures the preconditioned sharpness λ_max(P⁻¹H), P the optimizer's current diagonal preconditioner, which
  Cohen et al. 2022 ("Adaptive Gradient Methods at the Edge of Stability") compare with (2+2β₁)/((1−β₁) lr).
* :class:`GradientSubspace` — how much of the gradient lies in the top-k Hessian eigenspace and how fast that
  subspace turns (Gur-Ari, Roberts & Dyer 2018, "Gradient Descent Happens in a Tiny Subspace"), with a random
  k-dimensional subspace as baseline (expected fraction k/n).
* :class:`Trace` — Hutchinson / Hutch++ estimate of tr(H).
* :class:`SpectralDensity` — stochastic Lanczos quadrature density over time, a 2D record (probe step ×
  eigenvalue grid).
* :class:`BatchSharpness` — λ_max of mini-batch Hessians for several batch sizes against the full-batch value.

Common options
--------------
``data``: what the curvature is measured on. ``None`` or ``"train"`` (default) = the first ``max_samples``
examples of the training set as one full batch (``max_samples=5000`` by default, as in Cohen et al. 2021; the
whole set when it is smaller); ``"test"`` = the same from the test set; ``"batch"`` = the mini-batch of the
current step (NaN at the final call, which has no batch); or an explicit ``(x, y)`` pair or a list of pairs
(weighted by batch size). ``mode`` (``"eval"`` by default, or ``"train"``) is the module mode the Hessian and
gradients are evaluated in. The run loop restores mode, parameters, buffers, gradients and RNG after each probe
call, so probes never change the training trajectory.

Cost: every probe records ``<name>_hvps``, the Hessian-vector products it spent at that call (the loop records
``<name>_seconds``).

Record layout (probe named ``name``): coordinate ``<name>_step``; variables ``<name>`` / ``<name>_...``; the
eigenvalue index dimension is ``eig`` for the default-named :class:`Sharpness` probe and ``<name>_eig``
otherwise, so two probes with different ``k`` never collide.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from .._validate import check_bool, check_choice, check_float, check_int
from ..curvature._common import preserved
from ..curvature.differences import FD_DIFFERENCES, FD_STEP, difference_products
from ..curvature.differences import tf32_enabled as _tf32_enabled
from .base import Probe, ProbeContext, Var

__all__ = ["Sharpness", "GradientSubspace", "Trace", "SpectralDensity", "BatchSharpness",
           "stability_threshold", "preconditioner_vector"]

NAN = math.nan
DEFAULT_MAX_SAMPLES = 5000


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def _curv():
    from .. import curvature  # imported lazily: the probes module must import without the curvature core
    return curvature


def stability_threshold(optimizer: str, hparams: dict, lr: float | None = None) -> tuple[float, str]:
    """The stability threshold of ``optimizer`` with ``hparams`` at learning rate ``lr`` (default
    ``hparams["lr"]``), and what it applies to.

    Returns ``(value, applies_to)`` with ``applies_to`` one of ``"sharpness"`` (λ_max(H): gd, sgd with or
    without momentum), ``"preconditioned_sharpness"`` (λ_max(P⁻¹H): adaptive optimizers) or ``""`` with
    ``value = nan`` when the optimizer has no known rule.
    """
    from .. import optim

    spec = optim.spec(optimizer)
    hp = dict(hparams)
    if lr is not None:
        hp["lr"] = float(lr)
    if spec.threshold is None:
        return NAN, ""
    try:
        value = spec.threshold(hp)
    except (KeyError, ZeroDivisionError):
        return NAN, ""
    if value is None:
        return NAN, ""
    return float(value), ("preconditioned_sharpness" if spec.preconditioned else "sharpness")


def preconditioner_vector(optimizer: torch.optim.Optimizer, spec, params: Sequence[torch.Tensor]):
    """The optimizer's diagonal preconditioner P (update = lr P⁻¹ m) flattened in the order of ``params``, or
    ``None`` when the optimizer has no preconditioner rule or no state yet (before its first step)."""
    if spec is None or not spec.preconditioned or spec.preconditioner is None:
        return None
    plist = spec.preconditioner(optimizer)
    if plist is None:
        return None
    order = [p for g in optimizer.param_groups for p in g["params"]]
    if len(order) != len(plist):
        return None
    by_id = {id(p): P for p, P in zip(order, plist)}
    try:
        return torch.cat([by_id[id(p)].detach().reshape(-1).to(torch.float32) for p in params])
    except KeyError:
        return None


def _to_device(batch, device):
    x, y = batch
    return x.to(device), y.to(device)


def _is_pair(d) -> bool:
    return isinstance(d, (tuple, list)) and len(d) == 2 and all(torch.is_tensor(t) for t in d)


def _check_data(owner: str, data):
    if data is None or (isinstance(data, str) and data in ("train", "test", "batch")):
        return data
    if _is_pair(data):
        return tuple(data)
    if isinstance(data, (list, tuple)) and data and all(_is_pair(b) for b in data):
        return [tuple(b) for b in data]
    raise ValueError(f"{owner}.data must be None, 'train', 'test', 'batch', an (x, y) pair of tensors or a "
                     f"non-empty list of such pairs; got {type(data).__name__}")


def _chunked(batches, batch_size: int | None):
    """The batches split along dim 0 into chunks of at most ``batch_size`` examples (views)."""
    if batch_size is None:
        return list(batches)
    out = []
    for b in batches:
        n = b[0].shape[0]
        if n <= batch_size:
            out.append(b)
            continue
        parts = [torch.split(t, batch_size) for t in b]
        out.extend(tuple(p[i] for p in parts) for i in range(len(parts[0])))
    return out


def _flat_grad(model, loss, data, params, mode: str, batch_size: int | None = None) -> torch.Tensor:
    """Gradient of the (batch-size weighted) mean loss over ``data`` w.r.t. ``params``, flattened (microbatches of at
    most ``batch_size`` examples)."""
    model.train(mode == "train")
    batches = _chunked([data] if _is_pair(data) else list(data), batch_size)
    total = sum(b[0].shape[0] for b in batches)
    flat = None
    for b in batches:
        with torch.enable_grad():
            value = loss(model, b) * (b[0].shape[0] / total)
            gs = torch.autograd.grad(value, params, allow_unused=True)
        g = torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1) for p, gi in zip(params, gs)])
        flat = g.detach() if flat is None else flat + g.detach()
    return flat


def _sample_batches(data, batch_size: int, n_batches: int, gen: torch.Generator):
    """``n_batches`` random mini-batches of ``batch_size`` drawn without replacement from ``data`` (x, y)."""
    x, y = data
    n = x.shape[0]
    out = []
    for _ in range(n_batches):
        idx = torch.randperm(n, generator=gen)[:batch_size].to(x.device)
        out.append((x[idx], y[idx]))
    return out


class _CurvatureProbe(Probe):
    """Shared options: data, max_samples, mode; builds the Hessian operator at θ_t."""

    def __init__(self, every: int, data=None, max_samples: int | None = DEFAULT_MAX_SAMPLES, mode: str = "eval",
                 name: str | None = None, batch_size: int | None = None, max_memory: int | str | None = None):
        super().__init__(every, name)
        cls = type(self).__name__
        self.data = _check_data(cls, data)
        self.max_samples = check_int(f"{cls}.max_samples", max_samples, 1, allow_none=True)
        self.mode = check_choice(f"{cls}.mode", mode, ("eval", "train"))
        self.batch_size = check_int(f"{cls}.batch_size", batch_size, 1, allow_none=True)
        from ..curvature._common import parse_memory
        self.max_memory = parse_memory(max_memory, f"{cls}.max_memory")
        self._planned_batch: int | None = None     # the microbatch size a max_memory plan chose (first call)
        self._notes: list[str] = []
        self._device_data = None

    # -- data ---------------------------------------------------------------------------------------------
    def _data(self, ctx: ProbeContext):
        d = self.data
        if d is None or d == "train":
            return ctx.full_batch("train", self.max_samples)
        if d == "test":
            return ctx.full_batch("test", self.max_samples)
        if d == "batch":
            return ctx.batch
        if self._device_data is None:
            self._device_data = _to_device(d, ctx.device) if _is_pair(d) else [_to_device(b, ctx.device) for b in d]
        return self._device_data

    def _data_text(self) -> str:
        d = self.data
        if d is None or d in ("train", "test"):
            split = d or "train"
            return f"{split} set" + ("" if self.max_samples is None else f", first {self.max_samples} examples")
        if d == "batch":
            return "the current training mini-batch"
        return "user-supplied data"

    def _memory_kwargs(self) -> dict:
        """``batch_size`` / ``max_memory`` for the operators: after the first budgeted operator the microbatch size
        its plan chose is reused (the plan's trial products are not repeated at every call)."""
        if self._planned_batch is not None:
            bs = self._planned_batch if self.batch_size is None else min(self.batch_size, self._planned_batch)
            return {"batch_size": bs}
        kw = {}
        if self.batch_size is not None:
            kw["batch_size"] = self.batch_size
        if self.max_memory is not None:
            kw["max_memory"] = self.max_memory
        return kw

    def _hessian(self, ctx: ProbeContext, data):
        H = _curv().hessian(ctx.model, ctx.problem.loss, data, mode=self.mode, **self._memory_kwargs())
        if self.max_memory is not None and self._planned_batch is None:
            mb = getattr(H, "attrs", {}).get("microbatch_size")
            if mb is not None:
                self._planned_batch = int(mb)
        return H

    def _microbatch(self, ctx: ProbeContext, data) -> int | None:
        """The microbatch size for gradients on ``data``: ``batch_size``, or what a ``max_memory`` plan chose for
        Hessian-vector products (a gradient needs less memory than a product), planned once."""
        if self.max_memory is not None and self._planned_batch is None:
            self._hessian(ctx, data)
        return self._memory_kwargs().get("batch_size")

    def _note(self, text: str, warn: bool = False):
        """Record a note in the record attrs (``<name>_notes``), once; ``warn=True`` also warns."""
        if text not in self._notes:
            self._notes.append(text)
            if warn:
                warnings.warn(f"{type(self).__name__} probe {self.name!r}: {text}", RuntimeWarning, stacklevel=3)

    def _eig_dim(self) -> str:
        return f"{self.name}_eig"

    def validate(self, problem, n_params: int) -> None:
        if self.data == "test" and problem.test is None:
            raise ValueError(f"{type(self).__name__}.data='test' needs a test set, but problem "
                             f"{problem.name!r} has none: use data=None/'train', 'batch' or an (x, y) pair")

    def _n_probe_examples(self, problem) -> int | None:
        """How many examples the probe data holds (None for data='batch': the run's batch size)."""
        d = self.data
        if d is None or d in ("train", "test"):
            n = len(problem.train if d in (None, "train") else problem.test)
            return n if self.max_samples is None else min(n, self.max_samples)
        if _is_pair(d):
            return int(d[0].shape[0])
        return None

    def setup(self, ctx: ProbeContext) -> None:
        if self.data == "test" and ctx.problem.test is None:
            raise ValueError(f"{type(self).__name__}.data='test' needs a test set, but problem "
                             f"{ctx.problem.name!r} has none")
        self.n_params = sum(p.numel() for p in ctx.params)

    def attrs(self) -> dict[str, Any]:
        a = {"mode": self.mode, "data": self._data_text(), "notes": "; ".join(self._notes)}
        if self.batch_size is not None or self.max_memory is not None:
            a["microbatch"] = (f"batch_size={self.batch_size}, max_memory={self.max_memory} bytes, microbatch "
                               f"{self._memory_kwargs().get('batch_size')}")
        return a

    def config(self) -> dict[str, Any]:
        d = self.data if (self.data is None or isinstance(self.data, str)) else "user-supplied"
        c = {**super().config(), "data": d, "max_samples": self.max_samples, "mode": self.mode}
        if self.batch_size is not None or self.max_memory is not None:     # records of existing runs unchanged
            c.update(batch_size=self.batch_size, max_memory=self.max_memory)
        return c


def _top_eigs(op, k, tol, max_iter, v0, seed=0, criterion="residual"):
    """Top-k eigenpairs. ``criterion="residual"``: a pair is accepted once ‖Hv − θv‖ ≤ tol·|θ|, which bounds the
    eigenvalue error by tol·|θ| whatever the spectrum (and, second order, by ‖r‖²/gap). The Ritz-gap based
    ``"value"`` test of :func:`eigs` is not safe with a warm start: the few Ritz values of a tiny warm basis
    misjudge the gap to the next eigenvalue when the top of the spectrum is clustered (digits-mlp: 23.1, 21.8,
    21.6, ...), and it accepted 1% errors at tol=1e-3 (measured)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # non-convergence is recorded in <name>_converged instead of spamming
        res = _curv().eigs(op, k=k, which="LA", tol=tol, max_iter=max_iter, v0=v0, seed=seed,
                           criterion=criterion, guard=0)      # the probes choose their own guard pairs
    return res


def _scaled_operator(H, d: torch.Tensor):
    """The symmetric operator D H D for a diagonal D (vector ``d``)."""
    curv = _curv()
    d = d.to(H.device, H.dtype)
    return curv.LinearOperator(lambda v: d * H.matvec(d * v), H.size, H.device, H.dtype,
                               matmat=lambda V: d[:, None] * H.matmat(d[:, None] * V))


# ---------------------------------------------------------------------------------------------------------------
# cheap tracking: Hessian-vector products as finite differences of gradients
# ---------------------------------------------------------------------------------------------------------------
SHARPNESS_METHODS = ("auto", "exact", "fast")
FAST_MIN_TOL = 1e-3  # method="auto" solves exactly below this tol (the float32 difference floor is ~1e-4-9e-4)
FAST_WARM_MAX = 20  # product budgets of fast mode's warm / cold solves before an exact fallback (max_iter=None)
FAST_COLD_MAX = 80
CHECK_SLACK = 2.0   # fast mode's exact check accepts an exact residual up to CHECK_SLACK * tol * |lambda|


def gradient_difference_operator(model, loss, data, mode: str = "eval", g0: torch.Tensor | None = None,
                                 difference: str = "forward", fd_step: float = FD_STEP, seed: int = 0,
                                 batch_size: int | None = None, freeze_kinks: bool = True):
    """The Hessian of the mean loss over ``data`` as a :class:`~workbench.curvature.LinearOperator` whose products
    are finite differences of gradients (no second-order graph):

    * ``difference="forward"``: Hv ≈ (g(θ + εv) − g(θ)) / ε, one gradient per product once g(θ) is known; pass the
      gradient at θ as ``g0`` when it was already computed (the training step's, on the same data and in an
      equivalent mode), otherwise it is computed once (one extra gradient);
    * ``"central"``: Hv ≈ (g(θ + εv) − g(θ − εv)) / (2ε), two gradients per product, error second order in ε.

    Step rule (float32-safe): ε = c·sqrt(u)·(1 + ‖θ‖)/‖v‖ with u the unit roundoff of the parameters' dtype
    (1.2e-7 in float32, 2.2e-16 in float64) and c = ``fd_step`` (default 0.1). The forward-difference error is the
    truncation ε/2·∇³L[v, v, ·] plus the rounding of the two gradients divided by ε. Measured on the digits MLP
    (tanh, MSE, float32) along an edge-of-stability run, against exact double-backward products at the top
    eigenvector: relative error of Hv 5e-3 at c = 1, 5e-4 at c = 0.1, 1e-4 at c = 0.01 (rounding takes over
    below), of the Rayleigh quotient vᵀHv ≤ 3e-5 at c = 0.1; central differences ≤ 2e-5 (Hv) at c = 0.1. On CUDA
    the gradients are evaluated with TF32 off (its 10-bit mantissa would be amplified by 1/ε). ``batch_size``
    splits each batch into microbatches of at most that many examples (weighted by size; memory: one gradient's
    activations for one microbatch, plus three parameter-sized vectors).

    ``freeze_kinks`` (default True): ReLU-like activations and max-pooling, as modules or functional calls, keep the
    pattern they had at θ in the shifted gradients (:class:`~workbench.curvature.kinks.FrozenKinks`; one extra
    forward pass at θ when ``g0`` is given, plus a bool per activation input and an index per pooled output), so
    products on piecewise-linear nets equal double-backward ones up to the difference error instead of missing by
    ~4% where a step crosses a kink.

    ``op.gradient()`` returns g(θ) (``g0``, or computed once). Attributes: ``n_matvec`` (products), ``grad.count``
    (gradient evaluations, g(θ) included when computed here), ``eps_rule`` (the step rule and ‖θ‖ as text). The
    model is never modified (parameters are substituted functionally; mode, buffers and RNG are restored).
    """
    from ..curvature.operators import _Setup
    batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
    setup = _Setup(model, loss, data, None, mode, seed, batch_size)
    matvec, grad, gradient, rule = difference_products(setup, difference, fd_step, freeze_kinks, g0)
    op = _curv().LinearOperator(matvec, grad.size, grad.device, grad.dtype, name=f"hessian-{difference}-difference")
    op.grad = grad
    op.gradient = gradient
    op.eps_rule = rule
    return op


def _refine_top(op, V0: torch.Tensor, k: int, tol: float, max_iter: int, seed: int = 0, max_basis: int = 40):
    """Warm-started Rayleigh-Ritz refinement of the top-``k`` eigenpairs (Lanczos with full reorthogonalization
    from the block ``V0``, no minimum basis size): the start block costs one product per column; while the top-k
    Ritz pairs' residuals exceed ``tol``·|θ|, the basis grows by the residual of the worst one (one product each),
    thick-restarted at ``max_basis``. With a slowly moving top eigenvector the start vector's own residual is
    already small and one product suffices. Returns an :class:`~workbench.curvature.EigResult` (its ``vectors``
    hold the top ``V0.shape[1]`` Ritz vectors, so the caller can warm-start the next call with the same block)."""
    from ..curvature.lanczos import EigResult, orthonormalize
    n, dev, dt = op.size, op.device, op.dtype
    Q = orthonormalize(V0.detach().to(dev, dt).reshape(n, -1))
    if Q.shape[1] == 0:
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        Q = orthonormalize(torch.randn(n, 1, generator=gen, device=dev, dtype=dt))
    b = Q.shape[1]
    k = min(k, n)
    W = torch.stack([op.matvec(Q[:, j]) for j in range(b)], 1)
    n_mv = b
    gen_restart = torch.Generator(device=dev).manual_seed(int(seed) + 7)
    while True:
        T = (Q.T @ W).double().cpu()
        T = 0.5 * (T + T.T)
        theta, S = torch.linalg.eigh(T)
        order = torch.argsort(theta, descending=True)
        theta, S = theta[order], S[:, order]
        m = Q.shape[1]
        kk = min(k, m)
        Sw = S[:, :max(kk, min(b, m))].to(dev, dt)
        Y, WY = Q @ Sw, W @ Sw
        R = WY[:, :kk] - Y[:, :kk] * theta[:kk].to(dev, dt)
        res = R.norm(dim=0).double().cpu()
        noise = 50 * torch.finfo(dt).eps * float(theta.abs().max())
        ok = (res <= tol * theta[:kk].abs()) | (res <= noise)
        done = kk == k and bool(ok.all())
        if done or n_mv >= max_iter or m >= n:
            break
        if m >= max_basis:             # thick restart on the top Ritz vectors
            keep = max(k + 1, min(m - 1, max_basis // 2))
            Sk = S[:, :keep].to(dev, dt)
            Q, W = Q @ Sk, W @ Sk
            R = W[:, :kk] - Q[:, :kk] * theta[:kk].to(dev, dt)
        bad = (~ok).nonzero().flatten()
        j = int(bad[torch.argmax((res / theta[:kk].abs().clamp_min(1e-300))[bad])]) if len(bad) else 0
        q = orthonormalize(R[:, j:j + 1], Q, drop_tol=1e-4)
        if q.shape[1] == 0:
            q = orthonormalize(torch.randn(n, 1, generator=gen_restart, device=dev, dtype=dt), Q)
            if q.shape[1] == 0:
                break
        w = op.matvec(q[:, 0]).reshape(n, 1)
        n_mv += 1
        Q, W = torch.cat([Q, q], 1), torch.cat([W, w], 1)
    nb = min(max(kk, b), Q.shape[1])
    vecs = (Q @ S[:, :nb].to(dev, dt)).contiguous()
    return EigResult(values=theta[:kk].to(dev, dt), vectors=vecs, residuals=res[:kk].to(dev, dt),
                     errors=res[:kk].to(dev, dt), converged=bool(done), n_matvec=n_mv, which="LA", tol=tol,
                     n_restarts=0, n_converged=int(ok.sum()), history=[])


# ---------------------------------------------------------------------------------------------------------------
# Sharpness
# ---------------------------------------------------------------------------------------------------------------
class Sharpness(_CurvatureProbe):
    """Top-k Hessian eigenvalues during training, with the optimizer's stability threshold.

    Each call runs Lanczos (:func:`workbench.curvature.eigs`, ``which="LA"``) warm-started from the previous
    call's top-k eigenvectors (``warm_start=True``), so once the run settles a probe costs a few Hessian-vector
    products instead of the ~20 of a cold start. A pair is accepted when its residual ‖Hv − λv‖ ≤ ``tol``·|λ|
    (default 1%: a rigorous bound on the eigenvalue error; the actual error is second order in the residual,
    ~1e-4–1e-3 on digits-mlp). A warm start follows the eigenvectors it had: if another eigenvalue overtakes the
    tracked ones between two calls it could be missed (at the edge of stability on digits-mlp, tracking only the
    top vector reported λ₂ instead of λ₁ at some probes: 11% low), so the probe tracks ``guard`` extra eigenpairs
    (default 1: k + 1 pairs are solved and warm-started, the top k recorded) and every ``refresh``-th call
    (default 20; ``None`` = never) starts cold from a random vector.

    ``method="fast"`` is the cheap tracking mode: Hessian-vector products are finite differences of gradients,
    (g(θ + εv) − g(θ))/ε (see :func:`gradient_difference_operator`; ``difference="central"`` for the second-order
    scheme at two gradients per product, ``fd_step`` the c of ε = c·sqrt(u)·(1 + ‖θ‖)/‖v‖), with g(θ) the gradient
    the training step already computed when it is the probe's (full-batch runs on the probe data, float32 without
    autocast or compile, a model whose forward does not depend on train/eval mode or ``mode="train"``), otherwise one
    extra gradient. A warm call refines the previous top-(k + ``guard``) vectors and, with ``gradient_start`` (default),
    the gradient g(θ) itself — at the edge of stability GD oscillates along the top eigenvectors, so the gradient
    carries an eigenvector that overtakes the tracked ones — by Rayleigh-Ritz / Lanczos steps until the top-k
    residuals are ≤ ``tol``·|λ| (no minimum basis: typically 3-4 gradients at k = 1, guard = 1); every
    ``refresh``-th call is a cold solve (eigs from a random start) on the same operator. Measured on digits-mlp
    (MSE, lr 0.04, 2000 steps, every 10) against a tight reference (cold, tol 1e-4, 2 guard pairs): largest relative
    error 1.26% (2 of 201 calls above 1%, both where λ₁ and λ₂ nearly cross) at 4.4 gradients per call, against
    1.41% (3 calls) and 5.1 double-backward products (each ~1.7 gradients) for ``method="exact"``; without the guard
    vector 7.6%, without the gradient start 4%.

    The default ``method="auto"`` takes whichever keeps the record right at the least cost: "fast" on networks
    (as accurate as exact tracking, measured above, at 0.75x its cost), "exact" where the finite differences'
    float32 rounding floor matters — ``tol`` below ``FAST_MIN_TOL`` = 1e-3 — or buys nothing: the 2-D test
    functions (``kind == "function"``), where exact products cost no more than gradients and give λ to 1e-7 against
    the differences' 9e-4 on ``quadratic``. The choice is made when the run starts and recorded
    (``<name>_method``, ``<name>_method_rule``). The fast record adds
    ``<name>_gradients`` (gradient evaluations), ``<name>_cold`` (1 for a cold solve) and ``<name>_fallback``;
    ``<name>_hvps`` counts the finite-difference products (plus exact ones after a fallback). When the differences
    cannot meet ``tol`` within 20 (warm) / 80 (cold) products the call is solved with exact products instead
    (``<name>_fallback`` = 1). The residual test runs on the difference operator itself, so it cannot see that
    operator being wrong (a kink that torch functions cannot intercept, a custom autograd function): every cold call
    therefore checks the top pair with one exact product (``<name>_check`` = ‖Hv − λv‖/|λ|, NaN elsewhere), and
    above 2·``tol`` that call and every later one are solved exactly, with a warning and a note. On ReLU/max-pool
    nets the shifted gradients keep the activation pattern and pooling argmax of θ (``freeze_kinks`` of
    :func:`gradient_difference_operator`; one extra forward pass per call when the training step's gradient is
    reused): unfrozen, a difference product stepped across kinks and every call fell back (fashion-cnn, 256
    examples, every 10: 4.62x the untracked run); frozen, no call falls back, 1.47x against 1.99x for exact
    tracking in the same process, largest difference to exact 0.5%, to the tight reference 0.12%.

    ``batch_size`` / ``max_memory`` (every curvature probe): the Hessian operators (and fast mode's gradients) run
    over microbatches of at most ``batch_size`` examples, or the size a ``max_memory`` budget picks (planned once,
    at the first call; see :func:`workbench.curvature.hessian`).

    Variables (probe ``name``, default ``"sharpness"``):

    * ``<name>``: λ_max(H) (the sharpness); ``<name>_eigenvalues`` / ``<name>_residuals`` (dim ``eig``): the
      top-k eigenvalues and their residual norms ‖Hv − λv‖; ``<name>_converged`` (1/0); ``<name>_hvps``.
    * ``<name>_threshold``: the optimizer's stability threshold at the current learning rate (schedules and hot
      swaps move it): 2/lr (gd, sgd), (2+2β)/lr (heavy ball), (2+2β)/((1+2β) lr) (Nesterov),
      (2+2β₁)/((1−β₁) lr) (Adam family, on the preconditioned sharpness); NaN when the optimizer has no rule.
    * ``<name>_preconditioned``: λ_max(P⁻¹H) for adaptive optimizers, computed as the top eigenvalue of the
      symmetric P^{-1/2} H P^{-1/2} with P the diagonal preconditioner in the optimizer state at θ_t (after
      update t−1; NaN before the optimizer's first step and for non-adaptive optimizers).
    * ``<name>_ratio``: the quantity the threshold applies to divided by the threshold (≈ 1 at the edge of
      stability).
    """

    default_name = "sharpness"

    def __init__(self, every: int = 10, k: int = 1, data=None, max_samples: int | None = DEFAULT_MAX_SAMPLES,
                 mode: str = "eval", tol: float = 1e-2, max_iter: int | None = None, warm_start: bool = True,
                 refresh: int | None = 20, guard: int = 1, preconditioned: bool = True, seed: int = 0,
                 name: str | None = None, method: str = "auto", difference: str = "forward",
                 fd_step: float = FD_STEP, gradient_start: bool = True, batch_size: int | None = None,
                 max_memory: int | str | None = None):
        super().__init__(every, data, max_samples, mode, name, batch_size, max_memory)
        self.requested_method = check_choice("Sharpness.method", method, SHARPNESS_METHODS)
        self.difference = check_choice("Sharpness.difference", difference, FD_DIFFERENCES)
        self.fd_step = check_float("Sharpness.fd_step", fd_step, 0.0, 1e3, low_inclusive=False)
        self.gradient_start = check_bool("Sharpness.gradient_start", gradient_start)
        self.k = check_int("Sharpness.k", k, 1, 1000)
        self.guard = check_int("Sharpness.guard", guard, 0, 100)
        self.refresh = check_int("Sharpness.refresh", refresh, 1, allow_none=True)
        self.seed = check_int("Sharpness.seed", seed, 0, 2**31 - 1)
        self._calls = 0
        self.tol = check_float("Sharpness.tol", tol, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.max_iter = check_int("Sharpness.max_iter", max_iter, 1, allow_none=True)
        if not isinstance(warm_start, bool):
            raise ValueError(f"Sharpness.warm_start must be true or false; got {warm_start!r}")
        if not isinstance(preconditioned, bool):
            raise ValueError(f"Sharpness.preconditioned must be true or false; got {preconditioned!r}")
        self.warm_start = warm_start
        self.preconditioned = preconditioned
        self.method = self._resolve_method(None)
        self._v = None
        self._vp = None

    def _resolve_method(self, problem) -> str:
        """The method a run uses: the requested one, or for ``"auto"`` "fast" unless ``tol`` < ``FAST_MIN_TOL``
        (below the finite differences' float32 floor) or the problem is a 2-D test function (exact products cost
        no more than gradients there, and are exact)."""
        req = self._requested()            # a probe pickled before "auto" existed has only .method
        if req != "auto":
            return req
        if self.tol < FAST_MIN_TOL or getattr(problem, "kind", None) == "function":
            return "exact"
        return "fast"

    def _requested(self) -> str:
        return getattr(self, "requested_method", None) or getattr(self, "method", "exact")

    def _auto_reason(self) -> str:
        if self.method == "fast":
            return f"auto: fast (a network, tol {self.tol:g} >= {FAST_MIN_TOL:g})"
        if self.tol < FAST_MIN_TOL:
            return f"auto: exact (tol {self.tol:g} < {FAST_MIN_TOL:g}, below the finite differences' float32 floor)"
        return "auto: exact (a 2-D test function: exact products cost no more than gradients there)"

    def _eig_dim(self) -> str:
        return "eig" if self.name == "sharpness" else f"{self.name}_eig"

    def validate(self, problem, n_params):
        super().validate(problem, n_params)
        if self.k > n_params:
            raise ValueError(f"Sharpness.k={self.k} is out of range: k must be in [1, {n_params}] (at most the "
                             f"number of trainable parameters of problem {problem.name!r})")

    def setup(self, ctx):
        super().setup(ctx)
        self.method = self._resolve_method(ctx.problem)
        if self.k > self.n_params:
            raise ValueError(f"Sharpness.k={self.k} is out of range: k must be at most the number of trainable "
                             f"parameters ({self.n_params})")
        self._v = self._vp = None
        self._calls = 0
        self._reuse_ok = {}
        self._degraded = False

    def variables(self, ctx):
        n, e = self.name, self._eig_dim()
        coords = {e: np.arange(self.k)}
        where = f"on the {self._data_text()} ({self.mode} mode)"
        return {
            n: Var("sharpness", f"largest Hessian eigenvalue λ_max(H) of the loss {where}"),
            f"{n}_eigenvalues": Var("top Hessian eigenvalues", f"top-{self.k} Hessian eigenvalues, descending, "
                                    f"{where}", dims=(e,), coords=coords),
            f"{n}_residuals": Var("eigen-residuals", "‖Hv − λv‖ of each Ritz pair (v unit norm); small relative "
                                  "to |λ| means the eigenvalue is accurate", dims=(e,), coords=coords),
            f"{n}_converged": Var("converged", "1 if the eigensolver met its tolerance, else 0", dtype="int8"),
            f"{n}_threshold": Var("stability threshold", "the optimizer's stability threshold at the current "
                                  "learning rate: 2/lr (gd, sgd), (2+2β)/lr (heavy ball), (2+2β)/((1+2β)lr) "
                                  "(Nesterov), (2+2β₁)/((1−β₁)lr) (Adam family; compare with the preconditioned "
                                  "sharpness); NaN without a known rule"),
            f"{n}_preconditioned": Var("preconditioned sharpness", "λ_max(P⁻¹H) = λ_max(P^{-1/2} H P^{-1/2}), P "
                                       "the adaptive optimizer's diagonal preconditioner (update = lr P⁻¹ m) at "
                                       "this step; NaN for non-adaptive optimizers or before the first step"),
            f"{n}_ratio": Var("sharpness / threshold", "the sharpness the threshold applies to (preconditioned "
                              "for adaptive optimizers) divided by the threshold; ≈1 at the edge of stability"),
            f"{n}_hvps": Var("Hessian-vector products", "Hessian-vector products spent by this probe call "
                             "(all eigensolves)" + ("; finite differences of gradients" if self.method == "fast"
                                                    else ""), dtype="int64"),
            **({} if self.method == "exact" else {
                f"{n}_gradients": Var("gradient evaluations", "gradients computed by this probe call (products "
                                      "× 1 for forward, × 2 for central differences, + 1 for g(θ) when the "
                                      "training step's gradient could not be reused)", dtype="int64"),
                f"{n}_cold": Var("cold refresh", "1 when this call solved from a random start (first call and every "
                                 "refresh-th), 0 for a warm Rayleigh-Ritz refinement", dtype="int8"),
                f"{n}_fallback": Var("exact fallback", "1 when this call was solved with exact products (counted "
                                     f"in hvps): the finite-difference solve did not meet tol within {FAST_WARM_MAX} "
                                     f"(warm) / {FAST_COLD_MAX} (cold) products, or an exact check failed at this "
                                     "or an earlier call", dtype="int8"),
                f"{n}_check": Var("exact check", "at cold calls: ‖H v − λ v‖ / |λ| of the finite-difference top pair "
                                  "with one exact (double-backward) product; above "
                                  f"{CHECK_SLACK:g} tol the call and every later one is solved exactly; NaN at "
                                  "other calls")}),
        }

    # -- fast mode: the training step's gradient -----------------------------------------------------------
    def _mode_independent(self, model) -> bool:
        """True when no module's forward depends on ``training`` (no BatchNorm/dropout-like module and no custom
        forward that reads ``self.training``), so train- and eval-mode gradients are the same."""
        import inspect
        from torch import nn
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd, nn.AlphaDropout,
                              nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
                return False
            cls = type(m)
            if cls.__module__.startswith("torch.nn"):
                continue
            try:
                src = inspect.getsource(cls.forward)
            except (OSError, TypeError):
                return False
            if "training" in src:
                return False
        return True

    def _step_gradient(self, ctx, data, microbatch=None):
        """The gradient the training step computed at θ_t when it equals the probe's g(θ_t), else None.

        It does when: this is not the final call; the step ran in float32 (no autocast), uncompiled, without TF32
        on CUDA; the step's batch holds the probe's data (same examples in the same order: full-batch GD with the
        whole training set within ``max_samples``, or ``data="batch"``); and the mode agrees (the step runs in
        train mode: the probe's ``mode="train"`` without dropout and with a single microbatch, or a model whose
        forward does not depend on the mode)."""
        g = ctx.flat_grad()
        run = ctx.run
        if g is None or ctx.batch is None or getattr(run, "precision", "float32") != "float32" \
                or getattr(run, "compile", False) or _tf32_enabled(ctx.device):
            return None
        key = "mode"
        if key not in self._reuse_ok:
            self._reuse_ok[key] = self._mode_independent(ctx.model)
        indep = self._reuse_ok[key]
        mb = getattr(run, "microbatch", None)
        chunks_one = mb is None or ctx.batch[0].shape[0] <= mb
        probe_one = microbatch is None or not _is_pair(data) or data[0].shape[0] <= microbatch
        if not indep and not (self.mode == "train" and chunks_one and probe_one):
            return None
        if self.mode == "train" and not indep:
            from torch import nn
            if any(isinstance(m, (nn.modules.dropout._DropoutNd, nn.AlphaDropout)) for m in ctx.model.modules()):
                return None
        batch = tuple(ctx.batch)
        if not _is_pair(data) or len(batch) != 2:
            return None
        if data[0] is batch[0] and data[1] is batch[1]:
            return g
        dkey = tuple((t.data_ptr(), tuple(t.shape), t.dtype) for t in (*data, *batch))
        if dkey not in self._reuse_ok:
            same = all(a.shape == b.shape and a.dtype == b.dtype for a, b in zip(data, batch)) and \
                all(torch.equal(a, b.to(a.device)) for a, b in zip(data, batch))
            self._reuse_ok[dkey] = same
        return g if self._reuse_ok[dkey] else None

    def _solve(self, op, k, cold, warm, seed, g=None):
        """Fast mode's eigensolve on the finite-difference operator: cold (random start, k + guard pairs, eigs'
        criteria) or a warm Rayleigh-Ritz refinement from the previous call's vectors (and the gradient ``g``)."""
        if cold or warm is None:
            return _top_eigs(op, min(k + self.guard, op.size), self.tol,
                             self.max_iter if self.max_iter is not None else FAST_COLD_MAX, None, seed)
        b = min(k + self.guard, warm.shape[1])
        V0 = warm[:, :b]
        if g is not None and bool(torch.isfinite(g).all()) and float(g.norm()) > 0:
            V0 = torch.cat([V0, g.reshape(-1, 1).to(V0.device, V0.dtype)], 1)
        max_iter = self.max_iter if self.max_iter is not None else FAST_WARM_MAX
        res = _refine_top(op, V0, k, self.tol, max_iter, seed)
        res.vectors = res.vectors[:, :b]
        return res

    def _exact_top(self, H, k, v0, seed):
        """The top k + guard pairs of an exact operator (the exact method, and fast mode's exact calls)."""
        return _top_eigs(H, min(k + self.guard, H.size), self.tol, self.max_iter, v0, seed)

    def measure(self, ctx):
        k = self.k
        out = {f"{self.name}_eigenvalues": np.full(k, NAN), f"{self.name}_residuals": np.full(k, NAN)}
        data = self._data(ctx)
        thr, applies = stability_threshold(ctx.optimizer_name, ctx.hparams, ctx.lr)
        if not applies:
            self._note(f"optimizer {ctx.optimizer_name!r} has no stability-threshold rule (threshold NaN)")
        n = self.name
        if data is None:
            fast = {f"{n}_gradients": 0, f"{n}_cold": 0, f"{n}_fallback": 0,
                    f"{n}_check": NAN} if self.method == "fast" else {}
            return {**out, n: NAN, f"{n}_converged": 0, f"{n}_threshold": thr, f"{n}_preconditioned": NAN,
                    f"{n}_ratio": NAN, f"{n}_hvps": 0, **fast}
        self._calls += 1
        cold = not self.warm_start or (self.refresh is not None and (self._calls - 1) % self.refresh == 0)
        seed = self.seed * 1_000_003 + self._calls
        fast, fallback, extra_hvps, check, exact_base = {}, False, 0, NAN, None
        warm = None if cold or self._v is None else self._v
        if self.method == "fast" and self._degraded:
            # an exact check found the difference operator off (see below): the rest of the run is exact
            H = self._hessian(ctx, data)
            res = self._exact_top(H, k, warm, seed)
            fallback = True
        elif self.method == "fast":
            mb = self._microbatch(ctx, data)
            g0 = self._step_gradient(ctx, data, mb) if self.difference == "forward" else None
            H = gradient_difference_operator(ctx.model, ctx.problem.loss, data, self.mode, g0, self.difference,
                                             self.fd_step, seed=self.seed, batch_size=mb)
            res = self._solve(H, k, cold, self._v, seed, H.gradient() if self.gradient_start else None)
            fallback = not res.converged
            if fallback:
                # the finite differences could not meet the tolerance (e.g. ReLU kinks: 4% product error measured
                # on fashion-cnn): this call is solved exactly, warm from the previous vectors
                He = self._hessian(ctx, data)
                res = self._exact_top(He, k, warm, seed)
                extra_hvps = int(He.n_matvec)
                self._note("finite-difference products could not meet tol at some calls; those calls were solved "
                           f"with exact products (see {self.name}_fallback)")
            elif cold:
                # the difference solve's residual is measured on the difference operator itself, so it cannot see
                # that operator being wrong (a kink torch functions cannot intercept, a custom autograd function):
                # at every cold call one exact product checks the top pair, and a miss makes the run exact
                He = self._hessian(ctx, data)
                v = res.vectors[:, 0].detach().to(He.device, He.dtype)
                lam = float(res.values[0])
                check = float(torch.linalg.vector_norm(He.matvec(v) - lam * v)) / max(abs(lam), 1e-300)
                extra_hvps = int(He.n_matvec)
                if not check <= CHECK_SLACK * self.tol:
                    self._degraded = True
                    res = self._exact_top(He, k, None, seed)
                    extra_hvps = int(He.n_matvec)
                    fallback, exact_base = True, He
                    self._note(f"an exact check at step {ctx.step} found the finite-difference top pair off "
                               f"(exact residual {check:.3g} |lambda| > {CHECK_SLACK:g} tol): from there on every "
                               f"call is solved with exact products (see {self.name}_check, {self.name}_fallback)",
                               warn=True)
        else:
            H = self._hessian(ctx, data)
            res = self._exact_top(H, k, warm, seed)
        self._v = res.vectors.detach()
        vals = res.values.detach().double().cpu().numpy()[:k]
        out[f"{n}_eigenvalues"] = vals
        out[f"{n}_residuals"] = res.residuals.detach().double().cpu().numpy()[:k]
        converged = bool(res.converged)
        pre = NAN
        if self.preconditioned and ctx.run.spec.preconditioned:
            P = preconditioner_vector(ctx.optimizer, ctx.run.spec, ctx.params)
            if P is None:
                self._note("the optimizer has no preconditioner state yet (before its first step): "
                           "preconditioned sharpness NaN there")
            else:
                base = H if exact_base is None else exact_base
                d = P.clamp_min(torch.finfo(P.dtype).tiny).rsqrt().to(base.device, base.dtype)
                op = _scaled_operator(base, d)
                if hasattr(base, "gradient"):           # fast mode on the difference operator
                    rp = self._solve(op, 1, cold, self._vp, seed, d * H.gradient() if self.gradient_start else None)
                else:
                    rp = _top_eigs(op, min(1 + self.guard, base.size), self.tol, self.max_iter,
                                   None if cold else self._vp, seed)
                self._vp = rp.vectors.detach()
                pre = float(rp.values[0])
                converged = converged and bool(rp.converged)
        top = float(vals[0])
        edge = pre if applies == "preconditioned_sharpness" else top
        if self.method == "fast":
            fast = {f"{n}_gradients": int(getattr(getattr(H, "grad", None), "count", 0)), f"{n}_cold": int(cold),
                    f"{n}_fallback": int(fallback), f"{n}_check": check}
        return {**out, n: top, f"{n}_converged": int(converged), f"{n}_threshold": thr,
                f"{n}_preconditioned": pre, f"{n}_ratio": edge / thr if math.isfinite(thr) and thr else NAN,
                f"{n}_hvps": int(H.n_matvec) + extra_hvps, **fast}

    def attrs(self):
        fast = {} if self.method == "exact" else {
            "difference": self.difference, "fd_step": self.fd_step, "gradient_start": int(self.gradient_start),
            "fast_rule": f"Hessian-vector products by {self.difference} differences of gradients, eps = "
                         f"{self.fd_step:g} sqrt(u) (1 + |theta|) / |v| (u the unit roundoff); the training step's "
                         "gradient reused as g(theta) when it is the probe's; ReLU-like patterns and max-pool "
                         "argmaxes (modules or functional calls) frozen at theta in the shifted gradients; warm calls "
                         "refine the previous "
                         f"top-{self.k + self.guard} vectors" + (" and the gradient" if self.gradient_start else "")
                         + " by Rayleigh-Ritz until the residual is at most "
                         f"tol |lambda|; a cold solve every {self.refresh or 'never'}-th call"}
        auto = self._requested() == "auto"
        return {**super().attrs(), **({"method": self.method} if self.method == "fast" or auto else {}),
                **({"method_rule": self._auto_reason()} if auto else {}), **fast,
                "k": self.k, "tol": self.tol,
                "warm_start": int(self.warm_start),
                "refresh": 0 if self.refresh is None else self.refresh, "guard": self.guard,
                "threshold_rule": "2/lr (gd, sgd); (2+2*momentum)/lr (heavy ball); "
                                  "(2+2*momentum)/((1+2*momentum)*lr) (Nesterov); (2+2*beta1)/((1-beta1)*lr) "
                                  "on lambda_max(P^-1 H) (Adam family); lr = the current learning rate"}

    def config(self):
        return {**super().config(), "k": self.k, "tol": self.tol, "max_iter": self.max_iter,
                "warm_start": self.warm_start, "refresh": self.refresh, "guard": self.guard,
                "preconditioned": self.preconditioned,
                "seed": self.seed, "method": self._requested(),    # a config without it rebuilds "auto"
                **({} if self._requested() == "exact" else {
                    "difference": self.difference, "fd_step": self.fd_step, "gradient_start": self.gradient_start})}


# ---------------------------------------------------------------------------------------------------------------
# GradientSubspace
# ---------------------------------------------------------------------------------------------------------------
class GradientSubspace(_CurvatureProbe):
    """Does the gradient live in the top-k Hessian eigenspace? (Gur-Ari, Roberts & Dyer 2018.)

    With V the top-k Hessian eigenvectors at θ_t (warm-started from the previous call's; a cold start every
    ``refresh``-th call; pairs accepted at residual ≤ ``tol``·|λ|, so V is accurate to about residual/gap where
    gap = λ_k − λ_{k+1}), variables (default name ``"subspace"``):

    * ``<name>_fraction``: ‖Vᵀg‖²/‖g‖² for the full-batch gradient g on the probe data (``mode``);
    * ``<name>_fraction_batch``: the same for the mini-batch gradient used by update t (train mode; NaN at the
      final call);
    * ``<name>_random_fraction``: the full-batch gradient's fraction in a random k-dimensional subspace (a fresh
      Haar-random one each call from ``seed``), whose expectation is k/n;
    * ``<name>_overlap``: Tr(P Pʹ)/k = ‖Vᵀ Vʹ‖_F²/k between this and the previous call's top-k subspaces
      (1 = unchanged, ≈ k/n for unrelated subspaces; NaN at the first call);
    * ``<name>_eigenvalues``, ``<name>_residuals`` (dim ``<name>_eig``), ``<name>_hvps``;
    * ``<name>_gap``: the relative eigengap (λ_k − λ_{k+1}) / max(|λ_k|, |λ_{k+1}|) below the subspace (λ_{k+1}
      is computed alongside: k + 1 eigenpairs per call; NaN when k equals the number of parameters, where the
      subspace is the whole space). The top-k eigenspace is only defined up to about residual/gap: when the
      gap falls below ``min_gap`` (default 0.1, i.e. λ_k/λ_{k+1} < 1.11 for positive eigenvalues) the fractions
      and the overlap depend on which of the nearly tied eigenvectors the solver returned, and the probe warns
      (a ``RuntimeWarning``, once per run) and notes it in ``<name>_notes``. ``min_gap=0`` disables the warning.
    """

    default_name = "subspace"

    def __init__(self, every: int = 10, k: int = 10, data=None, max_samples: int | None = DEFAULT_MAX_SAMPLES,
                 mode: str = "eval", tol: float = 1e-2, max_iter: int | None = None, refresh: int | None = 20,
                 seed: int = 0, name: str | None = None, batch_size: int | None = None,
                 max_memory: int | str | None = None, min_gap: float = 0.1):
        super().__init__(every, data, max_samples, mode, name, batch_size, max_memory)
        self.k = check_int("GradientSubspace.k", k, 1, 1000)
        self.min_gap = check_float("GradientSubspace.min_gap", min_gap, 0.0, 1.0)
        self._gap_warned = False
        self.refresh = check_int("GradientSubspace.refresh", refresh, 1, allow_none=True)
        self.tol = check_float("GradientSubspace.tol", tol, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.max_iter = check_int("GradientSubspace.max_iter", max_iter, 1, allow_none=True)
        self.seed = check_int("GradientSubspace.seed", seed, 0, 2**31 - 1)
        self._v = None
        self._calls = 0

    def validate(self, problem, n_params):
        super().validate(problem, n_params)
        if self.k > n_params:
            raise ValueError(f"GradientSubspace.k={self.k} is out of range: k must be in [1, {n_params}] (at most "
                             f"the number of trainable parameters of problem {problem.name!r})")

    def setup(self, ctx):
        super().setup(ctx)
        if self.k > self.n_params:
            raise ValueError(f"GradientSubspace.k={self.k} is out of range: k must be at most the number of "
                             f"trainable parameters ({self.n_params})")
        self._v, self._calls = None, 0
        self._gap_warned = False

    def variables(self, ctx):
        n, e = self.name, self._eig_dim()
        coords = {e: np.arange(self.k)}
        where = f"on the {self._data_text()} ({self.mode} mode)"
        return {
            f"{n}_fraction": Var("gradient fraction in top-k eigenspace", f"‖Vᵀg‖²/‖g‖², g the full-batch "
                                 f"gradient and V the top-{self.k} Hessian eigenvectors, both {where}"),
            f"{n}_fraction_batch": Var("mini-batch gradient fraction in top-k eigenspace", "‖Vᵀg_B‖²/‖g_B‖², g_B "
                                       "the mini-batch gradient used by update t (train mode); NaN at the end"),
            f"{n}_random_fraction": Var("gradient fraction in a random k-subspace", f"‖Qᵀg‖²/‖g‖² for a fresh "
                                        f"random orthonormal Q (n×{self.k}); expected value k/n = "
                                        f"{self.k}/{self.n_params}"),
            f"{n}_overlap": Var("top-k subspace overlap", "Tr(P Pʹ)/k = ‖VᵀVʹ‖_F²/k with the previous probe "
                                "call's top-k eigenspace (1 = unchanged); NaN at the first call"),
            f"{n}_eigenvalues": Var("top Hessian eigenvalues", f"top-{self.k} Hessian eigenvalues {where}",
                                    dims=(e,), coords=coords),
            f"{n}_residuals": Var("eigen-residuals", "‖Hv − λv‖ of each Ritz pair", dims=(e,), coords=coords),
            f"{n}_hvps": Var("Hessian-vector products", "Hessian-vector products spent by this probe call",
                             dtype="int64"),
            f"{n}_gap": Var("relative eigengap below the subspace", f"(λ_k − λ_(k+1)) / max(|λ_k|, |λ_(k+1)|) "
                            f"with k = {self.k}; below {self.min_gap:g} the top-k eigenspace is ill-defined (nearly "
                            "tied eigenvalues) and the fractions are unstable; NaN when k = number of parameters"),
        }

    def _check_gap(self, gap: float, lk: float, lk1: float, step: int):
        if not (gap < self.min_gap):      # NaN (no λ_(k+1)) passes
            return
        text = (f"the top-{self.k} Hessian eigenspace is ill-defined: λ_{self.k} = {lk:.6g} and λ_{self.k + 1} = "
                f"{lk1:.6g} nearly tie (relative gap {gap:.3g} < min_gap={self.min_gap:g}, first at step {step}), "
                f"so {self.name}_fraction and {self.name}_overlap depend on which of the tied eigenvectors the "
                f"solver returned; see {self.name}_gap, or choose a k at a clear gap")
        if not self._gap_warned:
            self._gap_warned = True
            self._note(text, warn=True)

    def measure(self, ctx):
        n, k = self.name, self.k
        nan_k = np.full(k, NAN)
        self._calls += 1
        data = self._data(ctx)
        if data is None:
            return {f"{n}_fraction": NAN, f"{n}_fraction_batch": NAN, f"{n}_random_fraction": NAN,
                    f"{n}_overlap": NAN, f"{n}_eigenvalues": nan_k, f"{n}_residuals": nan_k, f"{n}_hvps": 0,
                    f"{n}_gap": NAN}
        H = self._hessian(ctx, data)
        cold = self._v is None or (self.refresh is not None and (self._calls - 1) % self.refresh == 0)
        k_solve = k + 1 if k < self.n_params else k        # λ_(k+1) for the gap below the subspace
        v0 = None if cold or self._v is None or self._v.shape[1] != k_solve else self._v
        res = _top_eigs(H, k_solve, self.tol, self.max_iter, v0, self.seed * 1_000_003 + self._calls)
        V_all = res.vectors.detach()
        V = V_all[:, :k]
        vals_all = res.values.detach().double().cpu()
        gap = NAN
        if k_solve > k:
            lk, lk1 = float(vals_all[k - 1]), float(vals_all[k])
            scale = max(abs(lk), abs(lk1))
            gap = (lk - lk1) / scale if scale > 0 else 0.0
            self._check_gap(gap, lk, lk1, ctx.step)
        overlap = NAN
        if self._v is not None:
            overlap = float((self._v[:, :k].T @ V).pow(2).sum()) / k
        self._v = V_all
        g = _flat_grad(ctx.model, ctx.problem.loss, data, ctx.params, self.mode,
                       self._microbatch(ctx, data)).to(V.dtype)
        frac = _fraction(V, g)
        gb = ctx.flat_grad()
        frac_b = NAN if gb is None else _fraction(V, gb.to(V.device, V.dtype))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._calls)
        Q, _ = torch.linalg.qr(torch.randn(V.shape[0], k, generator=gen, dtype=torch.float64))
        rand = _fraction(Q, g.double().cpu())
        return {f"{n}_fraction": frac, f"{n}_fraction_batch": frac_b, f"{n}_random_fraction": rand,
                f"{n}_overlap": overlap, f"{n}_eigenvalues": vals_all[:k].numpy(),
                f"{n}_residuals": res.residuals.detach().double().cpu()[:k].numpy(), f"{n}_hvps": int(H.n_matvec),
                f"{n}_gap": gap}

    def attrs(self):
        return {**super().attrs(), "k": self.k, "random_expected": self.k / max(getattr(self, "n_params", 1), 1),
                "min_gap": self.min_gap}

    def config(self):
        c = {**super().config(), "k": self.k, "tol": self.tol, "max_iter": self.max_iter,
             "refresh": self.refresh, "seed": self.seed}
        if self.min_gap != 0.1:      # configs of existing runs unchanged
            c["min_gap"] = self.min_gap
        return c


def _fraction(V: torch.Tensor, g: torch.Tensor) -> float:
    gg = float(g.double().pow(2).sum())
    if gg == 0.0:
        return NAN
    return float((V.T @ g).double().pow(2).sum()) / gg


# ---------------------------------------------------------------------------------------------------------------
# Trace
# ---------------------------------------------------------------------------------------------------------------
class Trace(_CurvatureProbe):
    """tr(H) by :func:`workbench.curvature.trace` (Hutch++ by default) with its standard error.

    The same random probe vectors are used at every call (``seed``), so the time series has common random
    numbers and its changes are not noise between calls. Variables: ``<name>`` (default ``"trace"``),
    ``<name>_stderr``, ``<name>_hvps``.
    """

    default_name = "trace"

    def __init__(self, every: int = 10, n: int = 30, method: str = "hutch++", data=None,
                 max_samples: int | None = DEFAULT_MAX_SAMPLES, mode: str = "eval", seed: int = 0,
                 name: str | None = None, batch_size: int | None = None,
                 max_memory: int | str | None = None):
        super().__init__(every, data, max_samples, mode, name, batch_size, max_memory)
        self.n = check_int("Trace.n", n, 1, 100_000)
        self.method = check_choice("Trace.method", method, ("hutch++", "hutchinson"))
        self.seed = check_int("Trace.seed", seed, 0, 2**31 - 1)

    def variables(self, ctx):
        n = self.name
        return {n: Var("Hessian trace", f"tr(H) ({self.method}, {self.n} matrix-vector products budget) on the "
                       f"{self._data_text()} ({self.mode} mode)"),
                f"{n}_stderr": Var("trace standard error", "standard error of the trace estimate"),
                f"{n}_hvps": Var("Hessian-vector products", "Hessian-vector products spent by this probe call",
                                 dtype="int64")}

    def measure(self, ctx):
        n = self.name
        data = self._data(ctx)
        if data is None:
            return {n: NAN, f"{n}_stderr": NAN, f"{n}_hvps": 0}
        H = self._hessian(ctx, data)
        res = _curv().trace(H, method=self.method, n=self.n, seed=self.seed)
        return {n: float(res.value), f"{n}_stderr": float(res.stderr), f"{n}_hvps": int(H.n_matvec)}

    def config(self):
        return {**super().config(), "n": self.n, "method": self.method, "seed": self.seed}


# ---------------------------------------------------------------------------------------------------------------
# BatchSharpness
# ---------------------------------------------------------------------------------------------------------------
class BatchSharpness(_CurvatureProbe):
    """λ_max of mini-batch Hessians for several batch sizes against the full-batch value.

    For each batch size B in ``batch_sizes``, ``n_batches`` mini-batches of B examples are drawn without
    replacement from the probe data (a generator seeded from ``seed`` and the call index) and the top eigenvalue
    of each mini-batch Hessian is computed (warm-started from the previous call's vector for the same B). Random
    matrix theory predicts the mini-batch values exceed the full-batch one and approach it as B grows ("Learning
    Rates as a Function of Batch Size: A Random Matrix Theory Approach"). Variables (default name
    ``"batch_sharpness"``): ``<name>`` and ``<name>_std`` (dim ``<name>_batch_size``: mean and standard
    deviation over the ``n_batches`` draws), ``<name>_full`` (the full-batch λ_max on the probe data) and
    ``<name>_hvps``.
    """

    default_name = "batch_sharpness"

    def __init__(self, every: int = 50, batch_sizes: Sequence[int] = (32, 128, 512), n_batches: int = 4,
                 data=None, max_samples: int | None = DEFAULT_MAX_SAMPLES, mode: str = "eval", tol: float = 1e-2,
                 max_iter: int | None = None, seed: int = 0, name: str | None = None, batch_size: int | None = None,
                 max_memory: int | str | None = None):
        super().__init__(every, data, max_samples, mode, name, batch_size, max_memory)
        if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not batch_sizes:
            raise ValueError(f"BatchSharpness.batch_sizes must be a non-empty list of integers >= 1; got "
                             f"{batch_sizes!r}")
        bs = [check_int(f"BatchSharpness.batch_sizes[{i}]", b, 1) for i, b in enumerate(batch_sizes)]
        if len(set(bs)) != len(bs):
            raise ValueError(f"BatchSharpness.batch_sizes must not repeat a size; got {list(batch_sizes)}")
        self.batch_sizes = sorted(bs)
        self.n_batches = check_int("BatchSharpness.n_batches", n_batches, 1, 10_000)
        self.tol = check_float("BatchSharpness.tol", tol, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.max_iter = check_int("BatchSharpness.max_iter", max_iter, 1, allow_none=True)
        self.seed = check_int("BatchSharpness.seed", seed, 0, 2**31 - 1)
        if self.data == "batch" or (self.data is not None and not isinstance(self.data, str)
                                    and not _is_pair(self.data)):
            raise ValueError("BatchSharpness.data must be None, 'train', 'test' or one (x, y) pair to draw "
                             "mini-batches from")
        self._v: dict = {}
        self._calls = 0

    def validate(self, problem, n_params):
        super().validate(problem, n_params)
        n = self._n_probe_examples(problem)
        if n is not None and self.batch_sizes[-1] > n:
            raise ValueError(f"BatchSharpness.batch_sizes={self.batch_sizes} is out of range: every batch size "
                             f"must be in [1, {n}] (the number of probe examples of problem {problem.name!r})")

    def setup(self, ctx):
        super().setup(ctx)
        x, _ = self._data(ctx)
        if self.batch_sizes[-1] > x.shape[0]:
            raise ValueError(f"BatchSharpness.batch_sizes={self.batch_sizes} is out of range: every batch size "
                             f"must be at most the number of probe examples ({x.shape[0]})")
        self._v, self._calls = {}, 0

    def variables(self, ctx):
        n, d = self.name, f"{self.name}_batch_size"
        coords = {d: np.asarray(self.batch_sizes, dtype=np.int64)}
        return {
            n: Var("mini-batch sharpness", f"mean over {self.n_batches} random mini-batches of λ_max of the "
                   f"mini-batch Hessian, per batch size, drawn from the {self._data_text()} ({self.mode} mode)",
                   dims=(d,), coords=coords),
            f"{n}_std": Var("mini-batch sharpness std", "standard deviation of the mini-batch λ_max over the "
                            "draws (0 for a single draw)", dims=(d,), coords=coords),
            f"{n}_full": Var("full-batch sharpness", f"λ_max of the Hessian on the {self._data_text()}"),
            f"{n}_hvps": Var("Hessian-vector products", "Hessian-vector products spent by this probe call",
                             dtype="int64"),
        }

    def measure(self, ctx):
        n = self.name
        self._calls += 1
        data = self._data(ctx)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._calls)
        H = self._hessian(ctx, data)
        res = _top_eigs(H, 1, self.tol, self.max_iter, self._v.get("full"))
        self._v["full"] = res.vectors.detach()
        hvps = int(H.n_matvec)
        means, stds = [], []
        for b in self.batch_sizes:
            vals = []
            for batch in _sample_batches(data, b, self.n_batches, gen):
                Hb = self._hessian(ctx, batch)
                rb = _top_eigs(Hb, 1, self.tol, self.max_iter, self._v.get(b))
                self._v[b] = rb.vectors.detach()
                vals.append(float(rb.values[0]))
                hvps += int(Hb.n_matvec)
            means.append(float(np.mean(vals)))
            stds.append(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
        return {n: np.asarray(means), f"{n}_std": np.asarray(stds), f"{n}_full": float(res.values[0]),
                f"{n}_hvps": hvps}

    def attrs(self):
        return {**super().attrs(), "batch_sizes": list(self.batch_sizes), "n_batches": self.n_batches}

    def config(self):
        return {**super().config(), "batch_sizes": list(self.batch_sizes), "n_batches": self.n_batches,
                "tol": self.tol, "max_iter": self.max_iter, "seed": self.seed}


# ---------------------------------------------------------------------------------------------------------------
# SpectralDensity
# ---------------------------------------------------------------------------------------------------------------
class SpectralDensity(_CurvatureProbe):
    """The Hessian eigenvalue density over time by stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019).

    A 2D record: ``<name>_density`` with dims (``<name>_step``, ``<name>_eigenvalue``) (default name
    ``"spectrum"``). The eigenvalue grid is the same for every call, so densities at different steps compare
    directly:

    * ``grid=`` (an increasing array) fixes it yourself;
    * otherwise it is fixed at setup from a first SLQ run at θ_0: with the node range [lo, hi] (span = hi − lo),
      ``grid_size`` points on [lo − 0.25·span − 6σ, hi + headroom·span + 6σ], leaving room for the spectrum to
      grow by ``headroom`` times its initial range (progressive sharpening). σ, the Gaussian broadening of every
      quadrature node, is ``width`` × the first span unless ``sigma`` is given, and then stays fixed too.

    Mass that leaves the grid is not lost silently: ``<name>_mass_outside`` is the quadrature weight of nodes
    outside the grid, and ``<name>_lambda_min`` / ``<name>_lambda_max`` are the extreme quadrature nodes (Ritz
    values, which approach the extreme eigenvalues). The same Rademacher probes (``seed``) are used at every call.
    Cost: ``probes × steps`` products per call (``<name>_hvps``).
    """

    default_name = "spectrum"

    def __init__(self, every: int = 50, probes: int = 4, steps: int = 50, grid=None, grid_size: int = 256,
                 headroom: float = 1.0, width: float = 0.01, sigma: float | None = None, data=None,
                 max_samples: int | None = DEFAULT_MAX_SAMPLES, mode: str = "eval", seed: int = 0,
                 name: str | None = None, batch_size: int | None = None,
                 max_memory: int | str | None = None):
        super().__init__(every, data, max_samples, mode, name, batch_size, max_memory)
        self.probes = check_int("SpectralDensity.probes", probes, 1, 10_000)
        self.steps = check_int("SpectralDensity.steps", steps, 2, 10_000)
        self.grid_size = check_int("SpectralDensity.grid_size", grid_size, 16, 100_000)
        self.headroom = check_float("SpectralDensity.headroom", headroom, 0.0, 100.0)
        self.width = check_float("SpectralDensity.width", width, 0.0, 1.0, low_inclusive=False)
        self.sigma = check_float("SpectralDensity.sigma", sigma, 0.0, low_inclusive=False, allow_none=True)
        self.seed = check_int("SpectralDensity.seed", seed, 0, 2**31 - 1)
        self.user_grid = None
        if grid is not None:
            try:
                g = np.asarray(grid, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"SpectralDensity.grid must be an increasing array of numbers; got {grid!r}") \
                    from exc
            if g.size < 2 or not np.isfinite(g).all() or not (np.diff(g) > 0).all():
                raise ValueError("SpectralDensity.grid must be a finite, strictly increasing array of at least 2 "
                                 f"eigenvalues; got {grid!r}")
            self.user_grid = g
        self.grid = None
        self._sigma = None

    def _slq(self, ctx, data):
        from ..curvature.density import slq
        H = self._hessian(ctx, data)
        return slq(H, self.probes, self.steps, self.seed), H

    def setup(self, ctx):
        super().setup(ctx)
        if self.user_grid is not None:
            self.grid = self.user_grid
            span = float(self.grid[-1] - self.grid[0])
            self._sigma = self.sigma if self.sigma is not None else self.width * span
            return
        data = self._data(ctx)
        if data is None:          # data="batch": no batch before training; use the training set's start
            data = ctx.full_batch("train", self.max_samples)
        res, _ = self._slq(ctx, data)
        w = res.weights > 0
        lo, hi = float(res.nodes[w].min()), float(res.nodes[w].max())
        span = hi - lo if hi > lo else max(abs(lo), 1.0)
        self._sigma = self.sigma if self.sigma is not None else self.width * span
        self.grid = np.linspace(lo - 0.25 * span - 6 * self._sigma, hi + self.headroom * span + 6 * self._sigma,
                                self.grid_size)

    def variables(self, ctx):
        n, e = self.name, f"{self.name}_eigenvalue"
        return {
            f"{n}_density": Var("Hessian spectral density", f"SLQ estimate of the Hessian eigenvalue density "
                                f"({self.probes} probes × {self.steps} Lanczos steps, nodes broadened by a Gaussian "
                                f"of std {self._sigma:.4g}) on the {self._data_text()} ({self.mode} mode); fixed "
                                "eigenvalue grid", units="1 / eigenvalue", dims=(e,), coords={e: self.grid}),
            f"{n}_lambda_min": Var("smallest Ritz value", "smallest SLQ quadrature node (→ λ_min(H))"),
            f"{n}_lambda_max": Var("largest Ritz value", "largest SLQ quadrature node (→ λ_max(H))"),
            f"{n}_mass_outside": Var("mass outside the grid", "quadrature weight of nodes outside the fixed "
                                     "eigenvalue grid (0 when the grid covers the spectrum)"),
            f"{n}_hvps": Var("Hessian-vector products", "Hessian-vector products spent by this probe call",
                             dtype="int64"),
        }

    def measure(self, ctx):
        from ..curvature.density import gaussian_density
        n = self.name
        data = self._data(ctx)
        if data is None:
            return {f"{n}_density": np.full(self.grid.size, NAN), f"{n}_lambda_min": NAN,
                    f"{n}_lambda_max": NAN, f"{n}_mass_outside": NAN, f"{n}_hvps": 0}
        res, H = self._slq(ctx, data)
        w = res.weights > 0
        nodes, weights = res.nodes[w], res.weights[w]
        dens = gaussian_density(nodes, weights, self.grid, self._sigma)
        outside = (nodes < self.grid[0]) | (nodes > self.grid[-1])
        mass_out = float(weights[outside].sum() / weights.sum())
        if mass_out > 0.01:
            self._note(f"more than 1% of the spectral mass left the fixed grid [{self.grid[0]:.4g}, "
                       f"{self.grid[-1]:.4g}] (see {n}_mass_outside); pass grid= or a larger headroom", warn=True)
        return {f"{n}_density": dens, f"{n}_lambda_min": float(nodes.min()), f"{n}_lambda_max": float(nodes.max()),
                f"{n}_mass_outside": mass_out, f"{n}_hvps": int(H.n_matvec)}

    def attrs(self):
        return {**super().attrs(), "sigma": self._sigma, "grid": "user" if self.user_grid is not None else
                f"fixed at setup from θ_0 (headroom {self.headroom})", "probes": self.probes, "steps": self.steps}

    def config(self):
        return {**super().config(), "probes": self.probes, "steps": self.steps, "grid_size": self.grid_size,
                "headroom": self.headroom, "width": self.width, "sigma": self.sigma, "seed": self.seed,
                "grid": None if self.user_grid is None else self.user_grid.tolist()}
