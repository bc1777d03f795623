"""Probes that read what our instrumented optimizers expose (``workbench.optim.instrumented``).

* :class:`SAMProbe`: for ``sam``/``asam``, the perturbation norm ||e||, the loss at the ascent point theta+e, the
  gradient norms at theta and at theta+e, and (for models with at most ``max_coords`` parameters) the ascent
  point itself.
* :class:`ZerothOrderProbe`: for ``zo_sgd``, the cosine between the step's zeroth-order estimate (rebuilt from its
  seeds) and the true mini-batch gradient at the same theta_t, and the projected gradient.

Both are filled in ``after_update`` (the optimizer computes these quantities during update t); at steps where
the run's optimizer is another one (after a hot swap) and at the final call, the values are NaN.
"""
from __future__ import annotations

import math

import torch

from .base import Probe, ProbeContext, Var

__all__ = ["SAMProbe", "ZerothOrderProbe"]


class SAMProbe(Probe):
    """SAM/ASAM internals per step: perturbation norm, loss and gradient norm at the ascent point (Foret et al. 2021)."""

    default_name = "sam"

    def __init__(self, every: int = 1, name: str | None = None, max_coords: int = 64):
        super().__init__(every, name)
        self.max_coords = int(max_coords)
        self._n = 0

    def variables(self, ctx: ProbeContext):
        self._n = sum(p.numel() for p in ctx.params)
        out = {
            "sam_perturbation_norm": Var("SAM perturbation norm", "||e|| of the ascent step taken in update t"),
            "sam_ascent_loss": Var("loss at the ascent point", "L(theta_t + e) on the batch of update t"),
            "sam_grad_norm": Var("gradient norm at theta", "||grad L(theta_t)|| used to build e"),
            "sam_ascent_grad_norm": Var("gradient norm at the ascent point", "||grad L(theta_t + e)||, the "
                                                                             "gradient SAM steps with"),
        }
        if self._n <= self.max_coords:
            out["sam_ascent_point"] = Var("SAM ascent point", "theta_t + e, flattened in model.parameters() order",
                                          dims=("sam_coord",), coords={"sam_coord": list(range(self._n))})
        return out

    def _nan(self):
        vals = {k: math.nan for k in ("sam_perturbation_norm", "sam_ascent_loss", "sam_grad_norm",
                                      "sam_ascent_grad_norm")}
        if self._n <= self.max_coords:
            vals["sam_ascent_point"] = torch.full((self._n,), math.nan)
        return vals

    def measure(self, ctx: ProbeContext):
        return self._nan()

    def after_update(self, ctx: ProbeContext, values):
        last = getattr(ctx.optimizer, "last", None)
        if ctx.final or not isinstance(last, dict) or "perturbation_norm" not in last:
            return
        values.update(sam_perturbation_norm=last["perturbation_norm"], sam_ascent_loss=last["ascent_loss"],
                      sam_grad_norm=last["grad_norm"], sam_ascent_grad_norm=last["sam_grad_norm"])
        if self._n <= self.max_coords:
            values["sam_ascent_point"] = last["ascent_point"].detach().cpu()


class ZerothOrderProbe(Probe):
    """Cosine between the MeZO-style zeroth-order gradient estimate and the true gradient (Malladi et al. 2023)."""

    default_name = "zo"

    def variables(self, ctx: ProbeContext):
        return {
            "zo_cosine": Var("cosine(zeroth-order estimate, gradient)",
                             "cosine between update t's estimate (1/n) sum proj_i z_i and the mini-batch gradient "
                             "at theta_t"),
            "zo_projected_grad": Var("projected gradient", "mean of [L(theta+eps z) - L(theta-eps z)]/(2 eps) over "
                                                          "the step's samples"),
        }

    def measure(self, ctx: ProbeContext):
        return {"zo_cosine": math.nan, "zo_projected_grad": math.nan}

    def after_update(self, ctx: ProbeContext, values):
        opt = ctx.optimizer
        if ctx.final or not hasattr(opt, "estimate") or not getattr(opt, "last", None):
            return
        est, g = opt.estimate(), ctx.flat_grad()
        if est is None or g is None:
            return
        est = est.to(g.device, g.dtype)
        denom = float(est.norm() * g.norm())
        values["zo_cosine"] = float(est @ g) / denom if denom > 0 else math.nan
        values["zo_projected_grad"] = sum(opt.last["projected_grads"]) / len(opt.last["projected_grads"])
