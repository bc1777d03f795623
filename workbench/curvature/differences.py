"""Hessian-vector products as finite differences of gradients: no second-order graph.

A double-backward product holds the forward activations and the first-order backward graph, 3-4x the memory of
a gradient (measured: ResNet-20, 8 and 32 CIFAR-shaped images, 3.0-3.1x); a difference of two gradients holds one
gradient's memory at a time (1.07x at 32 images). Used by ``hessian(..., method="difference")`` (central
differences: the memory-lean exact-enough operator) and by the fast sharpness tracking of
:class:`workbench.probes.Sharpness` (forward differences reusing the training step's gradient).

Piecewise-linear nets (ReLU, max-pooling) are handled by freezing their kinks at θ
(:mod:`workbench.curvature.kinks`), so a difference product differentiates θ's own polynomial piece, as double
backward does.
"""
from __future__ import annotations

import contextlib
import math
import warnings

import torch

from .._validate import check_bool, check_choice, check_float
from ._common import preserved
from .operators import _zeros_for_none

__all__ = ["FD_DIFFERENCES", "FD_STEP", "GradientAt", "difference_products", "no_tf32", "tf32_enabled"]

FD_DIFFERENCES = ("forward", "central")
FD_STEP = 0.1       # c in eps = c sqrt(u) (1 + |theta|) / |v|


class no_tf32:
    """Full float32 matmuls and convolutions on CUDA inside the block (TF32's 10-bit mantissa, cuDNN's default for
    convolutions, would be amplified by 1/eps in a difference of gradients); restores the flags on exit."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
                torch.set_float32_matmul_precision("highest")
                torch.backends.cudnn.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        if self.cuda:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.set_float32_matmul_precision(self._saved[0])
                torch.backends.cudnn.allow_tf32 = self._saved[1]
        return False


def tf32_enabled(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.get_float32_matmul_precision() != "highest" or bool(torch.backends.cudnn.allow_tf32)


class GradientAt:
    """g(θ + s) for flat shifts ``s``: the gradient of the (size-weighted) mean loss over an operator setup's
    microbatches, by ``torch.func.functional_call`` on the setup's leaves (the model's own parameters are never
    written), each microbatch in the setup's mode with the model's flags, buffers and RNG restored, dropout seeded
    per microbatch.

    ``freeze_kinks``: a pass at θ records every kinked call (see :mod:`~workbench.curvature.kinks`) and the
    shifted passes replay it. With one microbatch the patterns are recorded once and kept (a bool per activation
    input, an index per pooled output); with several they are recorded again per microbatch at each call (one
    forward at θ without a graph), so memory stays one microbatch's. A model whose pass meets no kinked call is
    remembered, and later operators skip the pass."""

    def __init__(self, setup, freeze_kinks: bool = False):
        from .kinks import FrozenKinks, known_kinkless
        self.s = setup
        self.size, self.device, self.dtype = setup.size, setup.device, setup.dtype
        self.count = 0
        self.kinks = FrozenKinks() if freeze_kinks and not known_kinkless(setup.model, setup.mode) else None
        self.keep = setup.source.n_chunks == 1
        self.kinks_recorded = False
        self.theta_norm = float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(p.detach().float()) for _, p in setup.sel])))

    def _record(self, i: int, batch) -> None:
        s = self.s
        with no_tf32(self.device), torch.no_grad(), self.kinks.recording(i), \
                _preserved(s, i):
            s.loss_at([p.detach() for _, p in s.sel], batch)

    def _done_recording(self) -> None:
        from .kinks import mark_kinkless
        self.kinks_recorded = True
        if self.kinks.n_seen == 0:            # nothing to freeze: later calls (and operators) skip the mode
            mark_kinkless(self.s.model, self.s.mode)
            self.kinks = None

    def record_kinks(self) -> None:
        """The pass at θ that stores the kink patterns (once; with several microbatches they are recorded per call)."""
        if self.kinks is None or self.kinks_recorded or not self.keep:
            return
        for i, (batch, _) in enumerate(self.s.source):
            self._record(i, batch)
        self._done_recording()

    def many(self, shifts) -> list[torch.Tensor]:
        """The gradients at θ + s for every ``s`` of ``shifts`` (``None`` = θ, a flat tensor, or ``(c, v)`` for
        θ + c·v without forming c·v), microbatch by microbatch, so a microbatch's kink patterns serve every shift."""
        s = self.s
        shifts = list(shifts)
        if self.kinks is not None and self.keep and not self.kinks_recorded and any(x is not None for x in shifts):
            self.record_kinks()
        out: list = [None] * len(shifts)
        with no_tf32(self.device):
            for i, (batch, w) in enumerate(s.source):
                kinks = self.kinks
                if kinks is not None and not self.keep and any(x is not None for x in shifts):
                    self._record(i, batch)
                for j, shift in enumerate(shifts):
                    coef, vec = (1.0, shift) if shift is None or torch.is_tensor(shift) else shift
                    leaves = [(p.detach() if vec is None else p.detach().add(part.to(p.dtype), alpha=coef))
                              .requires_grad_(True)
                              for (_, p), part in zip(s.sel, s.split(vec) if vec is not None else
                                                      [None] * len(s.sel))]
                    if kinks is None:
                        ctx = contextlib.nullcontext()
                    elif shift is None and not (self.keep and self.kinks_recorded):
                        ctx = kinks.recording(i)           # the unshifted pass records as it goes
                    else:
                        ctx = kinks.replaying(i)
                    with _preserved(s, i), torch.enable_grad(), ctx:
                        L = s.loss_at(leaves, batch)
                        if L.dim() != 0:
                            raise ValueError(f"loss must return a scalar (mean) loss; got shape {tuple(L.shape)}")
                        gs = torch.autograd.grad(L, leaves, allow_unused=True)
                    g = s.flat(_zeros_for_none(gs, leaves), None)
                    del L, gs, leaves
                    if out[j] is None:                  # in place: a product holds as few vectors as it can
                        out[j] = g if w == 1 else g.mul_(w)
                    else:
                        out[j].add_(g, alpha=w)
                    del g
                if kinks is not None and not self.keep:
                    kinks.store.clear()
        self.count += len(shifts)
        if self.kinks is not None and not self.kinks_recorded and (self.keep or self.kinks.n_seen == 0):
            self._done_recording()
        for g in out:
            if not bool(torch.isfinite(g).all()):
                raise FloatingPointError("gradient produced non-finite values (nan/inf): the loss or model is not "
                                         "finite at these parameters")
        return [g.detach() for g in out]

    def __call__(self, shift: torch.Tensor | None = None) -> torch.Tensor:
        return self.many([shift])[0]


def _preserved(s, i):
    return preserved(s.model, s.mode, s.batch_seed(i))


def difference_products(setup, difference: str = "central", fd_step: float = FD_STEP, freeze_kinks: bool = True,
                        g0: torch.Tensor | None = None):
    """``(matvec, grad, gradient, eps_rule)`` for Hessian-vector products by finite differences of gradients over
    an operator setup (see :func:`workbench.curvature.hessian` with ``method="difference"``):

    * ``"forward"``: Hv ≈ (g(θ + εv) − g(θ)) / ε, one gradient per product once g(θ) is known (``g0``, e.g. the
      training step's gradient on the same data, or computed once);
    * ``"central"``: Hv ≈ (g(θ + εv) − g(θ − εv)) / (2ε), two gradients per product, error second order in ε.

    Step: ε = c·sqrt(u)·(1 + ‖θ‖)/‖v‖, u the unit roundoff of the parameters' dtype, c = ``fd_step``."""
    check_choice("difference", difference, FD_DIFFERENCES)
    fd_step = check_float("fd_step", fd_step, 0.0, 1e3, low_inclusive=False)
    freeze_kinks = check_bool("freeze_kinks", freeze_kinks)
    grad = GradientAt(setup, freeze_kinks=freeze_kinks)
    n = grad.size
    u = torch.finfo(grad.dtype).eps
    scale = fd_step * math.sqrt(u) * (1.0 + grad.theta_norm)
    if g0 is not None:
        g0 = g0.detach().reshape(-1).to(grad.device, grad.dtype)
        if g0.numel() != n:
            raise ValueError(f"g0 must have {n} entries (the trainable parameters); got {g0.numel()}")
    state = {"g0": g0}

    def gradient():
        if state["g0"] is None:
            state["g0"] = grad(None)
        return state["g0"]

    def matvec(v):
        nv = float(torch.linalg.vector_norm(v))
        if nv == 0.0:
            return torch.zeros_like(v)
        eps = scale / nv
        if difference == "central":
            gp, gm = grad.many([(eps, v), (-eps, v)])
            return gp.sub_(gm).div_(2 * eps)
        return grad.many([(eps, v)])[0].sub_(gradient()).div_(eps)

    rule = f"eps = {fd_step:g} * sqrt({u:.3g}) * (1 + |theta|) / |v|, |theta| = {grad.theta_norm:.6g}"
    return matvec, grad, gradient, rule
