"""The torch.optim optimizers with their schemas, stability thresholds and preconditioners."""
from __future__ import annotations

import torch

from ..params import Param
from .registry import OptimizerSpec, lr_param, register

WD = Param("weight_decay", 0.0, low=0.0, high=10.0, doc="L2 penalty added to the gradient")
EPS = Param("eps", 1e-8, low=0.0, high=1.0, log=True, doc="denominator stabiliser")
B1 = Param("beta1", 0.9, low=0.0, high=1.0, high_inclusive=False, doc="first-moment decay")
B2 = Param("beta2", 0.999, low=0.0, high=1.0, high_inclusive=False, doc="second-moment decay")


def heavy_ball_threshold(hp):
    """Full-batch stability of momentum on a quadratic (Cohen et al. 2021): heavy ball (2 + 2b)/lr,
    Nesterov (2 + 2b)/((1 + 2b) lr)."""
    b = hp.get("momentum", 0.0)
    if hp.get("nesterov"):
        return (2 + 2 * b) / ((1 + 2 * b) * hp["lr"])
    return (2 + 2 * b) / hp["lr"]


def adam_threshold(hp):
    """Adaptive edge of stability (Cohen et al. 2022): lambda_max(P^-1 H) hovers at (2 + 2 b1)/((1 - b1) lr)."""
    return (2 + 2 * hp["beta1"]) / ((1 - hp["beta1"]) * hp["lr"])


def _state_step(st) -> float:
    step = st.get("step", 0)
    return float(step.item() if torch.is_tensor(step) else step)


def adam_preconditioner(opt):
    """P_t = (1 - b1^t) (sqrt(v_t / (1 - b2^t)) + eps), so that the Adam update is lr * P^-1 m_t."""
    out = []
    for group in opt.param_groups:
        b1, b2 = group["betas"]
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "exp_avg_sq" not in st:
                return None
            t = _state_step(st)
            v = st["max_exp_avg_sq"] if group.get("amsgrad") else st["exp_avg_sq"]
            out.append((1 - b1 ** t) * ((v / (1 - b2 ** t)).sqrt() + group["eps"]))
    return out


def rmsprop_preconditioner(opt):
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "square_avg" not in st:
                return None
            v = st["square_avg"]
            if group.get("centered"):
                v = v - st["grad_avg"] ** 2
            out.append(v.sqrt() + group["eps"])
    return out


def adagrad_preconditioner(opt):
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "sum" not in st:
                return None
            clr_scale = 1 + (_state_step(st) - 1) * group["lr_decay"]
            out.append((st["sum"].sqrt() + group["eps"]) * clr_scale)
    return out


def _betas(hp):
    g = dict(hp)
    g["betas"] = (g.pop("beta1"), g.pop("beta2"))
    return g


def _sgd_check(hp):
    if hp["nesterov"] and hp["momentum"] <= 0:
        raise ValueError("nesterov=True needs momentum in (0, 1); got momentum=0")
    if hp["nesterov"] and hp["dampening"] != 0:
        raise ValueError(f"nesterov=True needs dampening=0; got dampening={hp['dampening']}")


register(OptimizerSpec(
    "gd", lambda params, lr: torch.optim.SGD(params, lr=lr), [lr_param(0.1)],
    doc="Plain (full-batch) gradient descent: theta <- theta - lr * grad.", family="first-order",
    threshold=lambda hp: 2.0 / hp["lr"], reference="Cohen et al. 2021 (edge of stability: 2/lr)"))

register(OptimizerSpec(
    "sgd", lambda params, lr, momentum, nesterov, weight_decay, dampening:
        torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        dampening=dampening),
    [lr_param(0.01), Param("momentum", 0.0, low=0.0, high=1.0, high_inclusive=False, doc="heavy-ball momentum"),
     Param("nesterov", False, kind="bool", doc="Nesterov momentum"), WD,
     Param("dampening", 0.0, low=0.0, high=1.0, doc="momentum dampening (0 for Nesterov)")],
    doc="SGD with optional (Nesterov) momentum and weight decay (torch.optim.SGD).",
    check=_sgd_check,
    threshold=heavy_ball_threshold, reference="Polyak 1964; Nesterov 1983; thresholds Cohen et al. 2021"))

for _name, _cls, _wd, _doc in (("adam", torch.optim.Adam, 0.0, "Adam (Kingma & Ba 2015)."),
                               ("adamw", torch.optim.AdamW, 0.01, "AdamW: Adam with decoupled weight decay "
                                                                  "(Loshchilov & Hutter 2019).")):
    register(OptimizerSpec(
        _name, (lambda cls: lambda params, lr, beta1, beta2, eps, weight_decay, amsgrad:
                cls(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))(_cls),
        [lr_param(1e-3), B1, B2, EPS, Param("weight_decay", _wd, low=0.0, high=10.0, doc="weight decay"),
         Param("amsgrad", False, kind="bool", doc="AMSGrad max of second moments")],
        doc=_doc, family="adaptive", to_group=_betas, threshold=adam_threshold, preconditioned=True,
        preconditioner=adam_preconditioner, reference="Cohen et al. 2022 (adaptive edge of stability)"))

register(OptimizerSpec(
    "rmsprop", lambda params, lr, alpha, eps, momentum, centered, weight_decay:
        torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                            weight_decay=weight_decay),
    [lr_param(1e-3), Param("alpha", 0.99, low=0.0, high=1.0, high_inclusive=False, doc="second-moment decay"),
     EPS, Param("momentum", 0.0, low=0.0, high=1.0, high_inclusive=False), Param("centered", False, kind="bool"), WD],
    doc="RMSprop (Hinton 2012), torch.optim.RMSprop.", family="adaptive",
    threshold=lambda hp: (2 + 2 * hp["momentum"]) / hp["lr"], preconditioned=True,
    preconditioner=rmsprop_preconditioner))

register(OptimizerSpec(
    "adagrad", lambda params, lr, lr_decay, eps, initial_accumulator_value, weight_decay:
        torch.optim.Adagrad(params, lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                            initial_accumulator_value=initial_accumulator_value),
    [lr_param(1e-2), Param("lr_decay", 0.0, low=0.0, high=1.0), Param("eps", 1e-10, low=0.0, high=1.0, log=True),
     Param("initial_accumulator_value", 0.0, low=0.0, high=100.0), WD],
    doc="Adagrad (Duchi et al. 2011), torch.optim.Adagrad.", family="adaptive",
    threshold=lambda hp: 2.0 / hp["lr"], preconditioned=True, preconditioner=adagrad_preconditioner))
