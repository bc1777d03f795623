"""The optimizer zoo: optimizers from the ``pytorch_optimizer`` library (pinned ``pytorch-optimizer==4.1.0``) and a
few extra ``torch.optim`` ones, each exposed through the registry with a curated schema (defaults, bounds, log
scale, choices, doc, reference), its stability-threshold rule where one is known, and a diagonal-preconditioner
reader for adaptive methods where the update has the form ``lr * P^-1 m``.

We read the library's update code before registering anything. What we checked against the papers (see
``/work/shared/PAPERS.md`` and the references in each spec):

* Lion: ``c = b1 m + (1-b1) g``, ``theta <- theta(1 - lr wd) - lr sign(c)``, ``m <- b2 m + (1-b2) g``; the decay
  multiplies the *old* theta, which is the paper's ``theta - lr (sign(c) + wd theta)``. Verified in tests.
* Adan: the library uses the complementary beta convention (``m <- b1 m + (1-b1) g`` with b1 = 0.98 for the
  paper's 0.02) and adds bias corrections (as the official code does); the rest is Algorithm 1. Verified.
* Muon: ``buf <- lerp(buf, g, 1-mu)``, Nesterov ``u = lerp(g, buf, mu)``, Newton-Schulz quintic
  (3.4445, -4.7750, 2.0315) run in bfloat16, lr scaled by ``sqrt(max(1, rows/cols))`` (Keller Jordan's code).
  Only parameters with ``ndim >= 2`` use the orthogonalised update; the others (biases, and the 2D test
  functions' single (2,)-vector) get the library's built-in AdamW branch at ``adamw_lr`` (the run loop keeps
  the ratio adamw_lr/lr through schedules via the group key ``workbench_lr_scale``). Verified.
* Sophia-H: ``theta <- theta - lr clip(m / max(h, eps), p)``, i.e. the paper's ``eta clip(m/max(gamma h, eps), 1)``
  with ``eta = lr p`` and ``gamma = p``; the Hessian-diagonal EMA is refreshed every ``update_period`` steps by
  Hutchinson, which needs ``backward(create_graph=True)``: our subclass asks the run loop's closure for that on
  refresh steps only, so Sophia needs no user effort in ``wb.train``.
* AdaHessian: as the paper for dense layers (the paper's spatial averaging of conv kernels is not done);
  Hessian refresh handled like Sophia.
* Schedule-Free SGD/AdamW: the library keeps ``y`` in the parameters during training and swaps to ``x`` with
  ``optimizer.eval()``; the registry's ``eval_params`` context does that swap for probes and evaluation.
* D-Adaptation (Adam, SGD), Prodigy, ADOPT, AdEMAMix, AdaBelief, AdamP/SGDP, LAMB, LARS, MADGRAD, diffGrad, SOAP,
  Shampoo, GaLore, signSGD/Signum, Adafactor, Lookahead: read, and registered with their library defaults
  except where noted in the spec doc (e.g. Adafactor's ``relative_step`` off so that ``lr`` means a learning
  rate; GaLore projects every 2D parameter with the chosen rank).
* Shampoo: the library's inverse root is undamped after the first step and produced NaN on a 2-D quadratic
  within 6 steps (float32 SVD of a near-singular statistic); our subclass clamps the singular values at
  ``matrix_eps``.
* RAdam, NAdam and L-BFGS come from ``torch.optim`` (torch's RAdam/NAdam follow the papers; the library has no
  NAdam, and its RAdam adds nothing). L-BFGS uses the run loop's closure.
* Cautious variants (Liang et al. 2024, mask update coordinates whose sign disagrees with the gradient and rescale
  by ``n / (mask.sum() + 1)``): offered as ``cautious=True`` on lion, adopt, ademamix, adafactor and muon, the
  optimizers whose library code applies the mask.

Left out, and why:

* ``ScalableShampoo`` (the distributed, blocked port): large surface of research-engineering knobs (grafting
  types, block partitioning, start steps) with defaults tuned for large models; plain ``Shampoo`` shows the
  same idea on our scale.
* ``SAM``/``GSAM``/``WSAM``/``BSAM`` from the library: we write SAM ourselves (``workbench.optim.instrumented``)
  because we expose the ascent point and perturbation norm to probes.
* The library's many one-paper variants (AdaBound, Ranger21, Apollo, Kate, Tiger, A2Grad, ...): not in the
  issue's list; adding them is a few lines each with this module's ``_lib`` helper.
* ``Lookahead`` over a library optimizer other than the listed bases: Lookahead's ``base`` is a choice among
  sgd/adam/adamw/lion/radam so that the schema stays finite; the base optimizer runs with its defaults.
* ``DistributedMuon``/``MuonClip``/``AdaMuon``: distributed or attention-specific variants, not meaningful on
  one process with small MLPs.
"""
from __future__ import annotations

import contextlib
import importlib.metadata as _metadata
import warnings

import pytorch_optimizer as po
import torch

from ..params import Param
from .builtin import B1, B2, EPS, _state_step, adam_preconditioner, adam_threshold, heavy_ball_threshold
from .registry import OptimizerSpec, call_closure as _call_closure, lr_param, make as _make, register

__all__ = ["LIB_VERSION", "SophiaH", "AdaHessian", "library_names"]

LIB_VERSION = _metadata.version("pytorch-optimizer")

WD = Param("weight_decay", 0.0, low=0.0, high=10.0, doc="weight decay coefficient")
MOM = Param("momentum", 0.9, low=0.0, high=1.0, high_inclusive=False, doc="momentum factor")
CAUTIOUS = Param("cautious", False, kind="bool",
                 doc="cautious update: mask coordinates whose sign disagrees with the gradient (Liang et al. 2024)")


GROWTH = Param("growth_rate", None, low=1.0, high=1e12, allow_none=True,
               doc="max multiplicative growth of the distance estimate per step (None = unbounded)")


def _beta(name, default, doc):
    return Param(name, default, low=0.0, high=1.0, high_inclusive=False, doc=doc)


def _pack(betas):
    """Map schema names beta1..beta3 to the library's ``betas`` tuple (``None`` = no betas)."""
    def to_kwargs(hp):
        hp = dict(hp)
        if "growth_rate" in hp and hp["growth_rate"] is None:
            hp["growth_rate"] = float("inf")
        if betas:
            hp["betas"] = tuple(hp.pop(b) for b in betas)
        return hp
    return to_kwargs


def _lib(name, cls, hparams, doc, reference, betas=(), fixed=None, family="adaptive", **spec_kw):
    to_kwargs = _pack(betas)
    fixed = dict(fixed or {})

    def factory(params, **hp):
        return cls(params, **to_kwargs(hp), **fixed)

    spec = OptimizerSpec(name, factory, hparams, doc=doc, reference=reference, family=family,
                         source=f"pytorch_optimizer {LIB_VERSION}" if cls.__module__.startswith("pytorch_optimizer")
                         else "torch", to_group=to_kwargs, **spec_kw)
    return register(spec)


def library_names() -> list[str]:
    """Names registered by this module."""
    return list(_NAMES)


# -- preconditioner readers ----------------------------------------------------------------------------------------
def _group_step(group, st):
    if "step" in group and not isinstance(group["step"], (list, tuple)):
        s = group["step"]
        return float(s.item() if torch.is_tensor(s) else s)
    return _state_step(st)


def _adam_like(sq_key, b2_index=1, b1_index=0, power=0.5, sqrt_of=None):
    """P = (1 - b1^t) ((v / (1 - b2^t))^power + eps) read from ``state[sq_key]``."""
    def read(opt):
        out = []
        for group in opt.param_groups:
            betas = group["betas"]
            for p in group["params"]:
                st = opt.state.get(p, {})
                if sq_key not in st:
                    return None
                t = max(_group_step(group, st), 1.0)
                v = st[sq_key] / (1 - betas[b2_index] ** t)
                exponent = group.get("hessian_power", 1.0) * power if sqrt_of == "hessian" else power
                out.append((1 - betas[b1_index] ** t) * (v.pow(exponent) + group["eps"]))
        return out
    return read


def _adan_preconditioner(opt):
    """Adan's update is lr (m/bc1 + b2 v/bc2) / (sqrt(n / bc3) + eps): P = sqrt(n / bc3) + eps."""
    out = []
    for group in opt.param_groups:
        t = max(_group_step(group, {}), 1.0)
        b3 = group["betas"][2]
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "exp_avg_sq" not in st:
                return None
            out.append((st["exp_avg_sq"] / (1 - b3 ** t)).sqrt() + group["eps"])
    return out


def _adopt_preconditioner(opt):
    """ADOPT normalises g_t by max(sqrt(v_{t-1}), eps) before the momentum: P = max(sqrt(v), eps)."""
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "exp_avg_sq" not in st:
                return None
            out.append(st["exp_avg_sq"].sqrt().clamp_min(group["eps"]))
    return out


def _sophia_preconditioner(opt):
    """Sophia's update is lr clip(m / max(h, eps), p): P = max(h, eps) (before the clip)."""
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "hessian_moment" not in st:
                return None
            out.append(st["hessian_moment"].clamp_min(group["eps"]))
    return out


# -- closure-driven Hessian refresh -----------------------------------------------------------------------------
class _HessianRefresh:
    """Mixin for Sophia-H and AdaHessian: on Hessian-refresh steps ``step(closure)`` recomputes the gradient with
    ``create_graph=True`` (the Hutchinson estimate differentiates it again); other steps reuse ``p.grad``."""

    def step(self, closure=None, hessian=None):
        loss = None
        if closure is not None and hessian is None:
            refresh = self.param_groups[0].get("step", 0) % self.update_period == 0
            have_grads = any(p.grad is not None for g in self.param_groups for p in g["params"])
            if refresh or not have_grads:
                with torch.enable_grad(), warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*create_graph=True.*")
                    loss = _call_closure(closure, create_graph=refresh)
        try:
            super().step(None, hessian=hessian)
        finally:
            for g in self.param_groups:   # drop the graph held by the gradients (it references the parameters)
                for p in g["params"]:
                    if p.grad is not None and p.grad.grad_fn is not None:
                        p.grad = p.grad.detach()
        return loss


class SophiaH(_HessianRefresh, po.SophiaH):
    """``pytorch_optimizer.SophiaH`` whose Hessian refresh is driven by the closure (see :class:`_HessianRefresh`)."""


class AdaHessian(_HessianRefresh, po.AdaHessian):
    """``pytorch_optimizer.AdaHessian`` whose Hessian refresh is driven by the closure."""


# -- Shampoo with a damped inverse root ---------------------------------------------------------------------------
class Shampoo(po.Shampoo):
    """``pytorch_optimizer.Shampoo`` with the inverse root damped: the library seeds the statistics with
    ``matrix_eps * I`` once, and after a few steps float32 SVD returns 0 for that direction, whose ``-1/4`` power
    is inf (NaN parameters within ~6 steps on a 2-D quadratic). We clamp the singular values at ``matrix_eps``
    before the power, which is the paper's ``(L + eps I)^{-1/4}`` up to the clamp."""

    def step(self, closure=None):
        import pytorch_optimizer.optimizer.shampoo as _mod

        orig = _mod.compute_power_svd
        eps = self.param_groups[0]["matrix_eps"]

        def damped(matrix, power):
            dtype = torch.float64 if matrix.dtype == torch.float64 else torch.float32
            u, sv, vh = torch.linalg.svd(matrix.to(dtype), full_matrices=False)
            sv = sv.clamp_min(eps).pow(-1.0 / power)
            return ((u * sv.unsqueeze(-2)) @ vh).to(matrix.dtype)

        _mod.compute_power_svd = damped
        try:
            return super().step(closure)
        finally:
            _mod.compute_power_svd = orig


# -- Muon / GaLore: parameter groups by shape -----------------------------------------------------------------------
def _muon_factory(params, lr, momentum, nesterov, ns_steps, weight_decay, adamw_lr, adamw_beta1, adamw_beta2,
                  adamw_wd, cautious):
    params = list(params)
    mats = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = []
    if mats:
        groups.append({"params": mats, "use_muon": True, "cautious": cautious})
    if rest:   # the run loop multiplies its lr by workbench_lr_scale: the AdamW part keeps adamw_lr / lr
        groups.append({"params": rest, "use_muon": False, "workbench_lr_scale": adamw_lr / lr})
    return po.Muon(groups, lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                   weight_decay=weight_decay, adamw_lr=adamw_lr, adamw_betas=(adamw_beta1, adamw_beta2),
                   adamw_wd=adamw_wd)


def _muon_group(hp):
    # live-settable keys; a change of adamw_lr/adamw_beta*/adamw_wd/cautious makes the run loop rebuild Muon
    # (state carried). The run loop sets group lr = run lr * workbench_lr_scale.
    return {"lr": hp["lr"], "momentum": hp["momentum"], "nesterov": hp["nesterov"], "ns_steps": hp["ns_steps"],
            "weight_decay": hp["weight_decay"], "adamw_lr": hp["adamw_lr"], "adamw_beta1": hp["adamw_beta1"],
            "adamw_beta2": hp["adamw_beta2"], "adamw_wd": hp["adamw_wd"], "cautious": hp["cautious"]}


def _galore_factory(params, lr, beta1, beta2, eps, weight_decay, rank, update_proj_gap, scale, projection_type):
    params = list(params)
    mats = [p for p in params if p.ndim == 2]
    rest = [p for p in params if p.ndim != 2]
    groups = []
    if mats:
        groups.append({"params": mats, "rank": rank, "update_proj_gap": update_proj_gap, "scale": scale,
                       "projection_type": projection_type})
    if rest:
        groups.append({"params": rest})
    return po.GaLore(groups, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


_LOOKAHEAD_BASES = ("sgd", "adam", "adamw", "lion", "radam")


def _lookahead_factory(params, lr, base, k, alpha, pullback_momentum):
    inner = _make(base, params, lr=lr)
    return po.Lookahead(inner, k=k, alpha=alpha, pullback_momentum=pullback_momentum)


def _lookahead_group(hp):
    return {"lr": hp["lr"]}


def _schedule_free_eval(opt):
    @contextlib.contextmanager
    def ctx():
        opt.eval()
        try:
            yield
        finally:
            opt.train()
    return ctx()


# ----------------------------------------------------------------------------------------------------------------
_before = set()
from .registry import _REGISTRY  # noqa: E402

_before = set(_REGISTRY)

_lib("lion", po.Lion,
     [lr_param(1e-4), _beta("beta1", 0.9, "interpolation between momentum and gradient for the sign"),
      _beta("beta2", 0.99, "momentum decay"), WD,
      Param("weight_decouple", True, kind="bool", doc="decoupled weight decay (the paper's; bounds ||x||_inf <= 1/wd)"),
      CAUTIOUS],
     doc="Lion: theta <- theta - lr (sign(b1 m + (1-b1) g) + wd theta); m <- b2 m + (1-b2) g. With decoupled "
         "weight decay wd it solves min f subject to ||theta||_inf <= 1/wd.",
     reference="Chen et al. 2023 (Symbolic Discovery of Optimization Algorithms); Chen, Liu, Liang, Liu 2023 "
               "(Lion secretly solves constrained optimization)",
     betas=("beta1", "beta2"), family="sign", extra={"state_family": "lion"})

_lib("signsgd", po.SignSGD,
     [lr_param(1e-3), Param("momentum", 0.0, low=0.0, high=1.0, high_inclusive=False,
                            doc="0 = signSGD; >0 = Signum (sign of the gradient EMA)"), WD],
     doc="signSGD / Signum: theta <- theta - lr sign(m), m <- mu m + (1-mu) g (m = g when mu = 0).",
     reference="Bernstein et al. 2018 (signSGD: compressed optimisation for non-convex problems)", family="sign")

_lib("adan", po.Adan,
     [lr_param(1e-3), _beta("beta1", 0.98, "gradient EMA decay (library convention: paper's 1 - beta1)"),
      _beta("beta2", 0.92, "gradient-difference EMA decay (paper's 1 - beta2)"),
      _beta("beta3", 0.99, "squared-corrected-gradient EMA decay (paper's 1 - beta3)"), WD,
      Param("weight_decouple", False, kind="bool", doc="decoupled (multiplicative) instead of proximal decay"),
      Param("max_grad_norm", 0.0, low=0.0, high=1e6, doc="global gradient clipping norm (0 = off)"),
      Param("eps", 1e-8, low=0.0, high=1.0, log=True, doc="denominator stabiliser")],
     doc="Adan: Nesterov momentum estimation; update lr (m + b2 v) / (sqrt(n) + eps) with v the EMA of gradient "
         "differences and n the EMA of [g + b2 (g - g_prev)]^2 (bias-corrected).",
     reference="Xie et al. 2022 (Adan: Adaptive Nesterov Momentum Algorithm)", betas=("beta1", "beta2", "beta3"),
     preconditioned=True, preconditioner=_adan_preconditioner)

_lib("adamp", po.AdamP,
     [lr_param(1e-3), B1, B2, WD, Param("delta", 0.1, low=0.0, high=1.0, doc="scale-invariance cosine threshold"),
      Param("wd_ratio", 0.1, low=0.0, high=1.0, doc="relative weight decay on scale-invariant weights"),
      Param("nesterov", False, kind="bool"), EPS],
     doc="AdamP: Adam whose update is projected off the radial direction of scale-invariant weights.",
     reference="Heo et al. 2021 (AdamP: slowing down the slowdown for momentum optimizers on scale-invariant "
               "weights)", betas=("beta1", "beta2"), preconditioned=True, preconditioner=_adam_like("exp_avg_sq"),
     threshold=adam_threshold, extra={"threshold_note": "Adam's rule where no projection happens"})

_lib("sgdp", po.SGDP,
     [lr_param(1e-2), MOM, Param("dampening", 0.0, low=0.0, high=1.0), WD,
      Param("delta", 0.1, low=0.0, high=1.0, doc="scale-invariance cosine threshold"),
      Param("wd_ratio", 0.1, low=0.0, high=1.0, doc="relative weight decay on scale-invariant weights"),
      Param("nesterov", False, kind="bool")],
     doc="SGDP: SGD with momentum whose update is projected off the radial direction of scale-invariant weights.",
     reference="Heo et al. 2021 (AdamP)", family="first-order", threshold=heavy_ball_threshold,
     extra={"threshold_note": "heavy-ball rule where no projection happens"})

_lib("adopt", po.ADOPT,
     [lr_param(1e-3), B1, _beta("beta2", 0.9999, "second-moment decay"), WD,
      Param("weight_decouple", False, kind="bool"), Param("eps", 1e-6, low=0.0, high=1.0, log=True), CAUTIOUS],
     doc="ADOPT: normalise g_t by the *previous* second moment, then momentum: m <- b1 m + (1-b1) clip(g / "
         "max(sqrt(v_{t-1}), eps)); theta <- theta - lr m; v <- b2 v + (1-b2) g^2. Converges for any b2.",
     reference="Taniguchi et al. 2024 (ADOPT: modified Adam can converge with any beta2)",
     betas=("beta1", "beta2"), preconditioned=True, preconditioner=_adopt_preconditioner, threshold=adam_threshold)

_lib("ademamix", po.AdEMAMix,
     [lr_param(1e-3), B1, B2, _beta("beta3", 0.9999, "slow-momentum decay"), WD,
      Param("alpha", 5.0, low=0.0, high=100.0, doc="weight of the slow momentum"),
      Param("t_alpha_beta3", None, kind="float", low=1.0, high=1e9, allow_none=True,
            doc="warm-up steps for alpha and beta3 (None = off)"), EPS, CAUTIOUS],
     doc="AdEMAMix: Adam with a mixture of a fast and a slow gradient EMA: (m1 + alpha m2) / (sqrt(v) + eps).",
     reference="Pagliardini et al. 2024 (The AdEMAMix optimizer)", betas=("beta1", "beta2", "beta3"),
     preconditioned=True, preconditioner=_adam_like("exp_avg_sq"))

_lib("adabelief", po.AdaBelief,
     [lr_param(1e-3), B1, B2, WD, Param("weight_decouple", True, kind="bool"),
      Param("rectify", False, kind="bool", doc="RAdam-style rectification"),
      Param("eps", 1e-16, low=0.0, high=1.0, log=True, doc="added to the belief s = EMA((g - m)^2)")],
     doc="AdaBelief: Adam with the second moment replaced by the EMA of (g - m)^2 (belief in the gradient).",
     reference="Zhuang et al. 2020 (AdaBelief)", betas=("beta1", "beta2"), preconditioned=True,
     preconditioner=_adam_like("exp_avg_var"), threshold=adam_threshold)

_lib("radam", torch.optim.RAdam,
     [lr_param(1e-3), B1, B2, EPS, WD, Param("decoupled_weight_decay", False, kind="bool")],
     doc="RAdam: Adam with the variance of the adaptive learning rate rectified (SGD with momentum during the "
         "first steps). torch.optim.RAdam.",
     reference="Liu et al. 2020 (On the variance of the adaptive learning rate and beyond)",
     betas=("beta1", "beta2"), preconditioned=True, preconditioner=adam_preconditioner, threshold=adam_threshold,
     extra={"threshold_note": "Adam's rule once rectification is active", "state_family": "adam"})

_lib("nadam", torch.optim.NAdam,
     [lr_param(2e-3), B1, B2, EPS, WD, Param("momentum_decay", 4e-3, low=0.0, high=1.0, doc="psi of the "
                                                                                           "momentum schedule"),
      Param("decoupled_weight_decay", False, kind="bool")],
     doc="NAdam: Adam with Nesterov momentum. torch.optim.NAdam.", reference="Dozat 2016 (Incorporating Nesterov "
     "momentum into Adam)", betas=("beta1", "beta2"), preconditioned=True, preconditioner=adam_preconditioner)

_lib("lamb", po.Lamb,
     [lr_param(1e-3), B1, B2, WD, Param("grad_averaging", True, kind="bool"),
      Param("max_grad_norm", 1.0, low=0.0, high=1e6, doc="reference norm when pre_norm"),
      Param("pre_norm", False, kind="bool", doc="divide gradients by their global norm first"),
      Param("eps", 1e-6, low=0.0, high=1.0, log=True)],
     doc="LAMB: Adam direction rescaled per layer by the trust ratio ||theta|| / ||update||.",
     reference="You et al. 2020 (Large batch optimization for deep learning: training BERT in 76 minutes)",
     betas=("beta1", "beta2"))

_lib("lars", po.LARS,
     [lr_param(1e-2), WD, MOM, Param("dampening", 0.0, low=0.0, high=1.0),
      Param("trust_coefficient", 1e-3, low=0.0, high=1.0, low_inclusive=False, log=True, doc="eta of the trust "
                                                                                              "ratio"),
      Param("nesterov", False, kind="bool")],
     doc="LARS: SGD with momentum and a per-layer step eta ||theta|| / ||g + wd theta||.",
     reference="You, Gitman, Ginsburg 2017 (Large batch training of convolutional networks)", family="first-order")

_lib("madgrad", po.MADGRAD,
     [lr_param(1e-2), Param("momentum", 0.9, low=0.0, high=1.0, high_inclusive=False), WD,
      Param("eps", 1e-6, low=0.0, high=1.0, log=True)],
     doc="MADGRAD: momentumised, adaptive dual averaging (cube-root denominator).",
     reference="Defazio & Jelassi 2021 (Adaptivity without compromise)")

_lib("diffgrad", po.DiffGrad,
     [lr_param(1e-3), B1, B2, WD, EPS],
     doc="diffGrad: Adam with the first moment scaled by sigmoid(|g_{t-1} - g_t|) (friction).",
     reference="Dubey et al. 2019 (diffGrad)", betas=("beta1", "beta2"), preconditioned=True,
     preconditioner=_adam_like("exp_avg_sq"))

_lib("prodigy", po.Prodigy,
     [lr_param(1.0), B1, B2, Param("d0", 1e-6, low=0.0, high=1e3, low_inclusive=False, log=True,
                                   doc="initial distance estimate"),
      Param("d_coef", 1.0, low=0.0, high=100.0, low_inclusive=False, doc="multiplier of the estimated d"),
      GROWTH,
      WD, Param("bias_correction", False, kind="bool"), Param("safeguard_warmup", False, kind="bool"), EPS],
     doc="Prodigy: learning-rate-free Adam (D-Adaptation with a faster distance estimate); lr is a multiplier, "
         "leave it at 1.", reference="Mishchenko & Defazio 2024 (Prodigy)", betas=("beta1", "beta2"),
     family="lr-free")

_lib("dadapt_adam", po.DAdaptAdam,
     [lr_param(1.0), B1, B2, Param("d0", 1e-6, low=0.0, high=1e3, low_inclusive=False, log=True),
      GROWTH, WD, Param("bias_correction", False,
                                                                                kind="bool"), EPS],
     doc="D-Adaptation Adam: learning-rate-free Adam (lr is a multiplier, leave it at 1).",
     reference="Defazio & Mishchenko 2023 (Learning-rate-free learning by D-Adaptation)", betas=("beta1", "beta2"),
     family="lr-free")

_lib("dadapt_sgd", po.DAdaptSGD,
     [lr_param(1.0), MOM, Param("d0", 1e-6, low=0.0, high=1e3, low_inclusive=False, log=True),
      GROWTH, WD],
     doc="D-Adaptation SGD: learning-rate-free SGD with momentum (lr is a multiplier, leave it at 1).",
     reference="Defazio & Mishchenko 2023", family="lr-free")

_lib("schedulefree_sgd", po.ScheduleFreeSGD,
     [lr_param(1.0), Param("momentum", 0.9, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
                           doc="interpolation beta: gradient at y = (1-beta) z + beta x"), WD,
      Param("warmup_steps", 0, kind="int", low=0, high=10**9),
      Param("r", 0.0, low=0.0, high=10.0, doc="polynomial weighting power of the average"),
      Param("weight_lr_power", 2.0, low=0.0, high=10.0)],
     doc="Schedule-Free SGD: z <- z - lr g(y), x <- running average of z, y = (1-beta) z + beta x; the parameters "
         "hold y during training; evaluation and probes see x (the run loop swaps).",
     reference="Defazio et al. 2024 (The Road Less Scheduled)", family="schedule-free",
     extra={"eval_params": _schedule_free_eval})

_lib("schedulefree_adamw", po.ScheduleFreeAdamW,
     [lr_param(2.5e-3), Param("beta1", 0.9, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
                              doc="interpolation beta"), B2, WD,
      Param("warmup_steps", 0, kind="int", low=0, high=10**9), Param("r", 0.0, low=0.0, high=10.0),
      Param("weight_lr_power", 2.0, low=0.0, high=10.0), EPS],
     doc="Schedule-Free AdamW: the Schedule-Free average with Adam's preconditioning; evaluation and probes see x.",
     reference="Defazio et al. 2024 (The Road Less Scheduled)", betas=("beta1", "beta2"), family="schedule-free",
     extra={"eval_params": _schedule_free_eval})

register(OptimizerSpec(
    "muon", _muon_factory,
    [lr_param(2e-2), Param("momentum", 0.95, low=0.0, high=1.0, high_inclusive=False), Param("nesterov", True,
                                                                                                kind="bool"),
     Param("ns_steps", 5, kind="int", low=1, high=50, doc="Newton-Schulz iterations"), WD,
     Param("adamw_lr", 3e-4, low=0.0, high=100.0, low_inclusive=False, log=True,
           doc="lr of the AdamW branch for 1-D parameters (set at construction)"),
     _beta("adamw_beta1", 0.9, "AdamW-branch beta1"), _beta("adamw_beta2", 0.95, "AdamW-branch beta2"),
     Param("adamw_wd", 0.0, low=0.0, high=10.0), CAUTIOUS],
    doc="Muon: momentum (Nesterov), then orthogonalise each 2-D update by a quintic Newton-Schulz iteration; "
        "1-D parameters use AdamW at adamw_lr (scaled with the run's lr schedule). On the 2-D test functions theta "
        "is a vector, so Muon is its AdamW branch there.",
    reference="Jordan et al. 2024 (Muon); Liu et al. 2025 (Muon is scalable for LLM training)",
    source=f"pytorch_optimizer {LIB_VERSION}", family="orthogonal", to_group=_muon_group))

register(OptimizerSpec(
    "galore", _galore_factory,
    [lr_param(1e-3), B1, B2, Param("eps", 1e-6, low=0.0, high=1.0, log=True), WD,
     Param("rank", 4, kind="int", low=1, high=4096, doc="projection rank of 2-D gradients"),
     Param("update_proj_gap", 50, kind="int", low=1, high=10**6, doc="steps between projector refreshes (SVD)"),
     Param("scale", 1.0, low=0.0, high=100.0, low_inclusive=False, doc="scale of the projected-back update"),
     Param("projection_type", "std", kind="choice", choices=("std", "reverse_std", "right", "left", "full"))],
    doc="GaLore: Adam in a rank-r projection of each 2-D gradient (projector from its SVD, refreshed every "
        "update_proj_gap steps); other parameters get plain Adam.",
    reference="Zhao et al. 2024 (GaLore: memory-efficient LLM training by gradient low-rank projection)",
    source=f"pytorch_optimizer {LIB_VERSION}", family="low-rank", to_group=_pack(("beta1", "beta2"))))

_lib("soap", po.SOAP,
     [lr_param(3e-3), _beta("beta1", 0.95, "first-moment decay"), _beta("beta2", 0.95, "second-moment decay"),
      Param("weight_decay", 1e-2, low=0.0, high=10.0),
      Param("precondition_frequency", 10, kind="int", low=1, high=10**6, doc="steps between eigenbasis updates"),
      Param("precondition_1d", False, kind="bool"), EPS],
     doc="SOAP: Adam run in the eigenbasis of Shampoo's preconditioner (updated every precondition_frequency "
         "steps).", reference="Vyas et al. 2024 (SOAP: improving and stabilizing Shampoo using Adam)",
     betas=("beta1", "beta2"), family="second-order")

_lib("shampoo", Shampoo,
     [lr_param(1e-3), Param("momentum", 0.0, low=0.0, high=1.0, high_inclusive=False), WD,
      Param("preconditioning_compute_steps", 1, kind="int", low=1, high=10**6),
      Param("matrix_eps", 1e-6, low=0.0, high=1.0, low_inclusive=False, log=True)],
     doc="Shampoo: Kronecker-factored full-matrix Adagrad, L^{-1/4} G R^{-1/4} per matrix (inverse root damped at "
         "matrix_eps; see workbench.optim.zoo.Shampoo).",
     reference="Gupta, Koren, Singer 2018 (Shampoo: preconditioned stochastic tensor optimization)",
     family="second-order")

_lib("sophia", SophiaH,
     [lr_param(6e-2), _beta("beta1", 0.96, "gradient EMA decay"), _beta("beta2", 0.99, "Hessian-diagonal EMA decay"),
      WD, Param("p", 1e-2, low=0.0, high=10.0, low_inclusive=False, log=True,
                doc="clip level of m/h (the paper's eta = lr p, gamma = p)"),
      Param("update_period", 10, kind="int", low=1, high=10**6, doc="steps between Hutchinson refreshes (k)"),
      Param("num_samples", 1, kind="int", low=1, high=100, doc="Hutchinson probes per refresh"),
      Param("hessian_distribution", "gaussian", kind="choice", choices=("gaussian", "rademacher")),
      Param("eps", 1e-12, low=0.0, high=1.0, log=True)],
     doc="Sophia-H: theta <- theta - lr clip(m / max(h, eps), p), h an EMA of Hutchinson diagonal-Hessian "
         "estimates refreshed every update_period steps (from the run's closure with create_graph=True).",
     reference="Liu et al. 2023 (Sophia: a scalable stochastic second-order optimizer)", betas=("beta1", "beta2"),
     family="second-order", needs_closure=True, preconditioned=True, preconditioner=_sophia_preconditioner)

_lib("adahessian", AdaHessian,
     [lr_param(1e-1), B1, B2, WD, Param("hessian_power", 1.0, low=0.0, high=1.0, doc="k of (D^2)^{k/2}"),
      Param("update_period", 1, kind="int", low=1, high=10**6),
      Param("num_samples", 1, kind="int", low=1, high=100),
      Param("hessian_distribution", "rademacher", kind="choice", choices=("gaussian", "rademacher")),
      Param("eps", 1e-16, low=0.0, high=1.0, log=True)],
     doc="AdaHessian: Adam with the squared gradient replaced by the squared Hutchinson Hessian diagonal.",
     reference="Yao et al. 2021 (ADAHESSIAN)", betas=("beta1", "beta2"), family="second-order", needs_closure=True,
     preconditioned=True, preconditioner=_adam_like("exp_hessian_diag_sq", sqrt_of="hessian"),
     threshold=adam_threshold)

_lib("adafactor", po.AdaFactor,
     [lr_param(1e-3), _beta("beta1", 0.9, "first-moment decay (momentum)"),
      Param("decay_rate", -0.8, low=-1.0, high=0.0, doc="second-moment decay exponent: beta2_t = 1 - t^decay_rate"),
      WD, Param("clip_threshold", 1.0, low=0.0, high=1e6, low_inclusive=False, doc="update RMS clip"),
      Param("scale_parameter", False, kind="bool", doc="scale lr by the parameter RMS"),
      Param("eps1", 1e-30, low=0.0, high=1.0, log=True), Param("eps2", 1e-3, low=0.0, high=1.0, log=True),
      CAUTIOUS],
     doc="Adafactor: factored (row/column) second moments, update clipping, optional momentum; relative_step is off "
         "so that lr is a learning rate.", reference="Shazeer & Stern 2018 (Adafactor)",
     fixed={"relative_step": False, "momentum_dtype": torch.float32})


def _adafactor_to_kwargs(hp):
    hp = dict(hp)
    hp["betas"] = (hp.pop("beta1"), 0.999)   # the library ignores beta2 (decay_rate sets it)
    return hp


_REGISTRY["adafactor"].to_group = _adafactor_to_kwargs
_REGISTRY["adafactor"].factory = lambda params, **hp: po.AdaFactor(params, relative_step=False,
                                                                    momentum_dtype=torch.float32,
                                                                    **_adafactor_to_kwargs(hp))

register(OptimizerSpec(
    "lookahead", _lookahead_factory,
    [lr_param(1e-2), Param("base", "sgd", kind="choice", choices=_LOOKAHEAD_BASES,
                           doc="inner (fast) optimizer, run with its default hyperparameters"),
     Param("k", 5, kind="int", low=1, high=1000, doc="fast steps per slow step"),
     Param("alpha", 0.5, low=0.0, high=1.0, doc="slow-weight interpolation"),
     Param("pullback_momentum", "none", kind="choice", choices=("none", "reset", "pullback"))],
    doc="Lookahead: every k steps of the inner optimizer, slow <- slow + alpha (fast - slow), fast <- slow.",
    reference="Zhang et al. 2019 (Lookahead optimizer: k steps forward, 1 step back)",
    source=f"pytorch_optimizer {LIB_VERSION}", family="wrapper", to_group=_lookahead_group))

register(OptimizerSpec(
    "lbfgs", lambda params, lr, max_iter, history_size, line_search:
        torch.optim.LBFGS(params, lr=lr, max_iter=max_iter, history_size=history_size,
                          line_search_fn="strong_wolfe" if line_search else None),
    [lr_param(1.0), Param("max_iter", 1, kind="int", low=1, high=1000, doc="inner iterations per step"),
     Param("history_size", 10, kind="int", low=1, high=1000), Param("line_search", True, kind="bool",
                                                                    doc="strong-Wolfe line search")],
    doc="L-BFGS (torch.optim.LBFGS) with a strong-Wolfe line search; re-evaluates the loss through the run's "
        "closure. Full batch is its natural setting.", reference="Liu & Nocedal 1989",
    family="second-order", needs_closure=True,
    to_group=lambda hp: {"lr": hp["lr"], "max_iter": hp["max_iter"], "history_size": hp["history_size"]}))

# Adam and AdamW share their state layout: a hot swap between them can carry the moments.
for _n in ("adam", "adamw"):
    if _n in _REGISTRY:
        _REGISTRY[_n].extra.setdefault("state_family", "adam")

_NAMES = [n for n in _REGISTRY if n not in _before]
