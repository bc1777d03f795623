"""Optimizers we write ourselves because we instrument them: SAM and adaptive SAM (ascent point and perturbation
norm exposed), zeroth-order SGD in the MeZO style (two forward passes, perturbation regenerated from a seed,
the estimate reconstructible for a cosine-to-true-gradient probe), DoG, normalized GD, and a gradient-noise
wrapper.

Closure protocol. ``wb.train`` passes a closure to optimizers whose spec has ``needs_closure=True``. The loop's
closure zeroes the gradients, recomputes the loss on the current batch and back-propagates; it also accepts
``backward=False`` (forward only, used by zeroth-order SGD) and ``create_graph=True`` (used by Sophia-H and
AdaHessian). A plain user closure without keywords works too (it is then called bare).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..params import Param
from .builtin import heavy_ball_threshold
from .registry import OptimizerSpec, call_closure as _call_closure, lr_param, make as _make, register

__all__ = ["SAM", "ZerothOrderSGD", "DoG", "NormalizedGD", "GradientNoise", "zo_gradient_estimate", "zo_direction"]


def _params(opt):
    return [p for g in opt.param_groups for p in g["params"]]


# ---------------------------------------------------------------------------------------------------------------
class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation (Foret et al. 2021) with an SGD-with-momentum base step; ``adaptive=True`` is
    ASAM (Kwon et al. 2021).

    One step, with g = grad L(theta) (``p.grad`` on entry, as after ``loss.backward()``; recomputed through the
    closure when absent) and T = diag(|theta| + eta) for ASAM, T = I for SAM:

        e = rho T^2 g / ||T g||,   g_sam = grad L(theta + e)   (closure at the ascent point),
        buf <- momentum buf + g_sam + wd theta,   theta <- theta - lr buf.

    On return the gradients are ``None`` (they held grad L(theta+e)). After each step ``last`` holds ``perturbation_norm`` (||e||), ``ascent_loss`` (L(theta+e)), ``grad_norm``
    (||g||), ``ascent_point`` (flattened theta+e) and ``sam_grad_norm`` (||g_sam||), for probes.
    """

    def __init__(self, params, lr=0.05, rho=0.05, momentum=0.0, weight_decay=0.0, adaptive=False, eta=0.01):
        defaults = dict(lr=lr, rho=rho, momentum=momentum, weight_decay=weight_decay, adaptive=adaptive, eta=eta)
        super().__init__(params, defaults)
        self.last: dict = {}

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and gradients (wb.train passes one)")
        params = _params(self)
        if all(p.grad is None for p in params):
            with torch.enable_grad():
                _call_closure(closure)
        scaled = []
        for g in self.param_groups:
            for p in g["params"]:
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                t = (p.abs() + g["eta"]) if g["adaptive"] else None
                scaled.append((p, grad, t, g))
        tg_norm = torch.sqrt(sum(((t * grad if t is not None else grad) ** 2).sum() for _, grad, t, _ in scaled))
        gnorm = torch.sqrt(sum((grad ** 2).sum() for _, grad, _, _ in scaled))
        eps = []
        for p, grad, t, g in scaled:
            e = grad * (t ** 2) if t is not None else grad.clone()
            e.mul_(g["rho"] / (tg_norm + 1e-12))
            p.add_(e)
            eps.append(e)
        ascent_point = torch.cat([p.detach().reshape(-1) for p in params]) if params else torch.zeros(0)
        with torch.enable_grad():
            loss = _call_closure(closure)
        for (p, _, _, _), e in zip(scaled, eps):
            p.sub_(e)
        sam_norm = torch.sqrt(sum(((p.grad if p.grad is not None else torch.zeros_like(p)) ** 2).sum()
                                  for p in params))
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if g["weight_decay"]:
                    d = d.add(p, alpha=g["weight_decay"])
                if g["momentum"]:
                    st = self.state[p]
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(g["momentum"]).add_(d)
                    d = buf
                p.add_(d, alpha=-g["lr"])
        for p in params:   # p.grad held grad L(theta + e): drop it so the next step cannot mistake it for grad L(theta)
            p.grad = None
        self.last = {"perturbation_norm": float(torch.sqrt(sum((e ** 2).sum() for e in eps))),
                     "grad_norm": float(gnorm), "sam_grad_norm": float(sam_norm),
                     "ascent_loss": float(loss) if loss is not None else math.nan,
                     "ascent_point": ascent_point}
        return loss


# ---------------------------------------------------------------------------------------------------------------
def zo_direction(params, seed: int) -> list[torch.Tensor]:
    """The Gaussian perturbation z (one tensor per parameter) regenerated from ``seed`` (CPU generator, so the
    same seed gives the same z on every device)."""
    gen = torch.Generator().manual_seed(int(seed))
    return [torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype) for p in params]


@torch.no_grad()
def zo_gradient_estimate(loss_fn: Callable[[], torch.Tensor], params, eps: float, seed: int):
    """One two-point estimate (MeZO, Malladi et al. 2023, Alg. 1): ``proj = [L(theta+eps z) - L(theta-eps z)] /
    (2 eps)`` and the estimate ``proj * z``. ``loss_fn()`` evaluates the loss at the current parameters (no
    backward). Parameters are restored exactly (up to float rounding of +eps z - 2 eps z + eps z). Returns
    ``(proj, z_list, loss_plus, loss_minus)``."""
    params = list(params)
    z = zo_direction(params, seed)
    for p, zi in zip(params, z):
        p.add_(zi, alpha=eps)
    lp = float(loss_fn())
    for p, zi in zip(params, z):
        p.add_(zi, alpha=-2 * eps)
    lm = float(loss_fn())
    for p, zi in zip(params, z):
        p.add_(zi, alpha=eps)
    return (lp - lm) / (2 * eps), z, lp, lm


class ZerothOrderSGD(torch.optim.Optimizer):
    """Zeroth-order SGD in the MeZO style (Malladi et al. 2023): per step, ``n_samples`` seeds s_i; for each,
    z_i ~ N(0, I) regenerated from s_i, ``proj_i = [L(theta + eps z_i) - L(theta - eps z_i)] / (2 eps)``; then

        theta <- theta - lr ( (1/n) sum_i proj_i z_i + wd theta ),

    with z regenerated from the seed at update time (never stored: inference memory). Two forward passes per
    sample, no backward pass. ``last`` keeps the seeds and projected gradients so ``estimate()`` rebuilds the
    flattened gradient estimate of the last step (for the cosine-to-true-gradient probe).
    Seeds: ``seed + n_samples * t + i`` at optimizer step t, so a run is reproducible.
    """

    def __init__(self, params, lr=1e-3, eps=1e-3, n_samples=1, weight_decay=0.0, seed=0):
        super().__init__(params, dict(lr=lr, eps=eps, n_samples=n_samples, weight_decay=weight_decay, seed=seed))
        self.t = 0
        self.last: dict = {}

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise ValueError("ZerothOrderSGD.step needs a closure that returns the loss (wb.train passes one)")
        g0 = self.param_groups[0]
        params = _params(self)
        n, eps = g0["n_samples"], g0["eps"]

        def loss_fn():
            with torch.no_grad():
                return _call_closure(closure, backward=False)

        seeds, projs, losses = [], [], []
        for i in range(n):
            s = g0["seed"] + n * self.t + i
            proj, _, lp, lm = zo_gradient_estimate(loss_fn, params, eps, s)
            seeds.append(s)
            projs.append(proj)
            losses.append(0.5 * (lp + lm))
        for s, proj in zip(seeds, projs):
            z = zo_direction(params, s)
            k = 0
            for g in self.param_groups:
                for p in g["params"]:
                    p.add_(z[k], alpha=-g["lr"] * proj / n)
                    k += 1
        for g in self.param_groups:
            if g["weight_decay"]:
                for p in g["params"]:
                    p.mul_(1 - g["lr"] * g["weight_decay"])
        self.t += 1
        self.last = {"seeds": seeds, "projected_grads": projs, "shapes": [p.shape for p in params]}
        return torch.tensor(sum(losses) / n)

    def estimate(self) -> torch.Tensor | None:
        """The flattened gradient estimate (1/n) sum_i proj_i z_i of the last step (None before the first)."""
        if not self.last:
            return None
        params = _params(self)
        out = None
        for s, proj in zip(self.last["seeds"], self.last["projected_grads"]):
            z = torch.cat([zi.reshape(-1) for zi in zo_direction(params, s)])
            out = z * proj if out is None else out + z * proj
        return out / len(self.last["seeds"])


# ---------------------------------------------------------------------------------------------------------------
class DoG(torch.optim.Optimizer):
    """DoG, distance over gradients (Ivgi, Hinder, Carmon 2023), the global version:

        r_t = max(r_eps, max_{i<=t} ||theta_i - theta_0||),  G_t = sum_{i<=t} ||g_i||^2,
        eta_t = lr * r_t / sqrt(G_t),   theta_{t+1} = theta_t - eta_t (g_t + wd theta_t),

    with r_eps = reps_rel (1 + ||theta_0||). ``lr`` is a multiplier (1 = the paper's DoG). ``last_eta`` holds
    the step size of the last update.
    """

    def __init__(self, params, lr=1.0, reps_rel=1e-6, weight_decay=0.0, eps=1e-8):
        super().__init__(params, dict(lr=lr, reps_rel=reps_rel, weight_decay=weight_decay, eps=eps))
        self.last_eta = math.nan

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = _params(self)
        st = self.state
        g0 = self.param_groups[0]
        if "dog_x0" not in st:
            st["dog_x0"] = [p.detach().clone() for p in params]
            x0n = float(torch.sqrt(sum((p ** 2).sum() for p in params)))
            st["dog_rbar"] = g0["reps_rel"] * (1 + x0n)
            st["dog_G"] = 0.0
        dist = float(torch.sqrt(sum(((p - x0) ** 2).sum() for p, x0 in zip(params, st["dog_x0"]))))
        st["dog_rbar"] = max(st["dog_rbar"], dist)
        grads = []
        for grp in self.param_groups:
            for p in grp["params"]:
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                grads.append(g.add(p, alpha=grp["weight_decay"]) if grp["weight_decay"] else g)
        st["dog_G"] += float(sum((g ** 2).sum() for g in grads))
        eta = st["dog_rbar"] / (math.sqrt(st["dog_G"]) + g0["eps"])
        k = 0
        for grp in self.param_groups:
            for p in grp["params"]:
                p.add_(grads[k], alpha=-grp["lr"] * eta)
                k += 1
        self.last_eta = grp["lr"] * eta
        return loss


class NormalizedGD(torch.optim.Optimizer):
    """Normalized gradient descent: theta <- theta - lr g / (||g|| + eps), ||g|| the global norm over all
    parameters (every step has length lr)."""

    def __init__(self, params, lr=0.1, eps=1e-12):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = _params(self)
        norm = torch.sqrt(sum(((p.grad ** 2).sum() for p in params if p.grad is not None), torch.tensor(0.0)))
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-g["lr"] / (float(norm) + g["eps"]))
        return loss


# ---------------------------------------------------------------------------------------------------------------
class GradientNoise(torch.optim.Optimizer):
    """Gradient-noise injection (Neelakantan et al. 2015) around any optimizer: before each inner step,
    g <- g + N(0, sigma_t^2) with sigma_t^2 = std^2 / (1 + t)^gamma, from a generator seeded by ``seed``.
    ``param_groups`` and ``state`` are the inner optimizer's (so lr changes reach it)."""

    def __init__(self, base: torch.optim.Optimizer, std=0.01, gamma=0.55, seed=0):
        self.base = base
        self.std, self.gamma, self.seed = std, gamma, seed
        self.t = 0
        self._gen = torch.Generator().manual_seed(int(seed))
        self.defaults = dict(base.defaults)
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}

    @property
    def param_groups(self):
        return self.base.param_groups

    @property
    def state(self):
        return self.base.state

    def zero_grad(self, set_to_none: bool = True):
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"base": self.base.state_dict(), "t": self.t, "gen": self._gen.get_state()}

    def load_state_dict(self, sd):
        self.base.load_state_dict(sd["base"])
        self.t = sd["t"]
        self._gen.set_state(sd["gen"])

    @torch.no_grad()
    def step(self, closure=None):
        sigma = self.std / (1 + self.t) ** (self.gamma / 2)
        for p in _params(self):
            if p.grad is not None and sigma > 0:
                noise = torch.randn(p.shape, generator=self._gen, dtype=torch.float32).to(p.device, p.dtype)
                p.grad.add_(noise, alpha=sigma)
        self.t += 1
        return self.base.step(closure) if closure is not None else self.base.step()

    def __repr__(self):
        return f"GradientNoise(std={self.std}, gamma={self.gamma}, base={self.base!r})"


_NOISE_BASES = ("gd", "sgd", "adam", "adamw", "rmsprop")


# ---------------------------------------------------------------------------------------------------------------
register(OptimizerSpec(
    "sam", lambda params, lr, rho, momentum, weight_decay: SAM(params, lr=lr, rho=rho, momentum=momentum,
                                                               weight_decay=weight_decay),
    [lr_param(0.05), Param("rho", 0.05, low=0.0, high=10.0, doc="radius of the ascent step"),
     Param("momentum", 0.0, low=0.0, high=1.0, high_inclusive=False, doc="heavy-ball momentum of the base SGD"),
     Param("weight_decay", 0.0, low=0.0, high=10.0)],
    doc="SAM: gradient at the ascent point theta + rho g/||g||, then an SGD(momentum) step from theta. Two "
        "gradients per step. The ascent point and ||e|| are exposed to probes (workbench.probes.SAMProbe).",
    reference="Foret et al. 2021 (Sharpness-Aware Minimization)", source="workbench", family="sharpness-aware",
    needs_closure=True, extra={"state_family": "sgd-momentum"}))

register(OptimizerSpec(
    "asam", lambda params, lr, rho, eta, momentum, weight_decay: SAM(params, lr=lr, rho=rho, momentum=momentum,
                                                                     weight_decay=weight_decay, adaptive=True,
                                                                     eta=eta),
    [lr_param(0.05), Param("rho", 0.5, low=0.0, high=10.0, doc="radius of the (scale-adapted) ascent step"),
     Param("eta", 0.01, low=0.0, high=10.0, doc="offset in T = |theta| + eta"),
     Param("momentum", 0.0, low=0.0, high=1.0, high_inclusive=False), Param("weight_decay", 0.0, low=0.0,
                                                                           high=10.0)],
    doc="Adaptive SAM: ascent e = rho T^2 g / ||T g|| with T = diag(|theta| + eta) (scale-invariant sharpness).",
    reference="Kwon et al. 2021 (ASAM: adaptive sharpness-aware minimization)", source="workbench",
    family="sharpness-aware", needs_closure=True, extra={"state_family": "sgd-momentum"}))

register(OptimizerSpec(
    "zo_sgd", lambda params, lr, eps, n_samples, weight_decay, seed:
        ZerothOrderSGD(params, lr=lr, eps=eps, n_samples=n_samples, weight_decay=weight_decay, seed=seed),
    [lr_param(1e-3), Param("eps", 1e-3, low=0.0, high=1.0, low_inclusive=False, log=True,
                           doc="perturbation scale"),
     Param("n_samples", 1, kind="int", low=1, high=1000, doc="two-point estimates averaged per step"),
     Param("weight_decay", 0.0, low=0.0, high=10.0),
     Param("seed", 0, kind="int", low=0, high=2**31 - 1, doc="seed of the perturbation stream")],
    doc="Zeroth-order SGD (MeZO): two forward passes per sample along z regenerated from a seed, no backward; "
        "the estimate's cosine to the true gradient is a probe (workbench.probes.ZerothOrderProbe). Its expected "
        "update is GD on a Gaussian-smoothed loss with variance ~(d+2)/n times larger: use a small lr.",
    reference="Malladi et al. 2023 (Fine-tuning language models with just forward passes); Spall 1992 (SPSA)",
    source="workbench", family="zeroth-order", needs_closure=True,
    to_group=lambda hp: dict(hp)))

register(OptimizerSpec(
    "dog", lambda params, lr, reps_rel, weight_decay: DoG(params, lr=lr, reps_rel=reps_rel,
                                                          weight_decay=weight_decay),
    [lr_param(1.0), Param("reps_rel", 1e-6, low=0.0, high=1.0, low_inclusive=False, log=True,
                          doc="initial movement r_eps = reps_rel (1 + ||theta_0||)"),
     Param("weight_decay", 0.0, low=0.0, high=10.0)],
    doc="DoG: parameter-free step eta_t = max_i ||theta_i - theta_0|| / sqrt(sum_i ||g_i||^2); lr multiplies it "
        "(leave at 1).", reference="Ivgi, Hinder, Carmon 2023 (DoG is SGD's best friend)", source="workbench",
    family="lr-free"))

register(OptimizerSpec(
    "ngd", lambda params, lr: NormalizedGD(params, lr=lr),
    [lr_param(0.1)],
    doc="Normalized gradient descent: theta <- theta - lr g/||g|| (fixed step length lr; ends oscillating at "
        "distance ~lr from a minimum).", reference="Nesterov 1984; Hazan, Levy, Shalev-Shwartz 2015 "
                                                     "(normalized GD for quasi-convex problems)",
    source="workbench", family="first-order"))


def _noisy_factory(params, lr, base, std, gamma, seed):
    return GradientNoise(_make(base, params, lr=lr), std=std, gamma=gamma, seed=seed)


def _noisy_threshold(hp):
    if hp["base"] == "gd":
        return 2.0 / hp["lr"]
    if hp["base"] == "sgd":
        return heavy_ball_threshold({"lr": hp["lr"], "momentum": 0.0})
    return None


register(OptimizerSpec(
    "noisy", _noisy_factory,
    [lr_param(0.1), Param("base", "gd", kind="choice", choices=_NOISE_BASES,
                          doc="inner optimizer (its other hyperparameters at their defaults)"),
     Param("std", 0.01, low=0.0, high=100.0, doc="noise standard deviation at step 0"),
     Param("gamma", 0.55, low=0.0, high=10.0, doc="annealing: variance std^2 / (1+t)^gamma"),
     Param("seed", 0, kind="int", low=0, high=2**31 - 1, doc="noise seed")],
    doc="Gradient-noise injection: g + N(0, std^2/(1+t)^gamma) fed to the inner optimizer.",
    reference="Neelakantan et al. 2015 (Adding gradient noise improves learning for very deep networks)",
    source="workbench", family="wrapper", threshold=_noisy_threshold,
    to_group=lambda hp: {"lr": hp["lr"]}))
