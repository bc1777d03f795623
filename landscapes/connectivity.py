"""Mode connectivity: the loss along the straight line between two solutions (its barrier) and along a trained
quadratic Bezier curve (Garipov et al. 2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs";
Draxler et al. 2018). Where the model has BatchNorm, its running statistics are recomputed at every point of the
path from ``bn_data`` (the interpolated statistics of the end points are meaningless in between)."""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from workbench._validate import check_choice, check_float, check_int

from ._core import (GridEvaluator, _Objective, as_batches, batch_size_of, check_method, check_mode, flat_params,
                    has_batchnorm, preserved, resolve_loss, to_device, trainable, unflatten_to_dict, _is_single_batch)
from .directions import _flat_of

__all__ = ["linear_path", "barrier", "bezier", "BezierCurve", "refresh_batchnorm", "curve_path"]


def _endpoints(model_a, model_b):
    if not isinstance(model_a, nn.Module):
        raise ValueError(f"model_a must be an nn.Module; got {type(model_a).__name__}")
    params = trainable(model_a)
    if not params:
        raise ValueError("model_a has no trainable parameters")
    names, shapes = [k for k, _ in params], [p.shape for _, p in params]
    a = flat_params(model_a)
    b = _flat_of(model_b, names, shapes, "model_b").to(a.device, a.dtype)
    return a, b, names, shapes


def refresh_batchnorm(model: nn.Module, data, max_batches: int | None = None) -> nn.Module:
    """Recompute every BatchNorm layer's running statistics of ``model`` in place as exact averages over ``data``
    (one batch or an iterable of batches; cumulative averaging, ``momentum=None``). Returns the model in eval mode.
    Use it on a copy: this *does* change the model it is given."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    moms = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()          # as torch.optim.swa_utils.update_bn: the whole model in train mode (dropout too) ...
    device = next(model.parameters()).device
    with torch.no_grad(), torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        for i, batch in enumerate(as_batches(data)):     # ... but the caller's RNG stream is left untouched
            if max_batches is not None and i >= max_batches:
                break
            model(to_device(batch, device)[0])
    for m, mom in zip(bns, moms):
        m.momentum = mom
    return model.eval()


def _attrs_barrier(out: xr.DataArray):
    L = out.values
    t = out["t"].values
    chord = (1 - t) * L[0] + t * L[-1]
    excess = L - chord
    i = int(np.argmax(excess))
    out.attrs["barrier"] = float(max(excess[i], 0.0))
    out.attrs["barrier_t"] = float(t[i])
    out.attrs["barrier_loss"] = float(L[i])
    out.attrs["endpoint_losses"] = [float(L[0]), float(L[-1])]
    return out


def barrier(path: xr.DataArray) -> float:
    """Barrier height of a path DataArray over ``t`` in [0, 1]: max_t [L(t) - ((1 - t) L(0) + t L(1))], floored at 0
    (Frankle et al. 2020; the chord between the end losses is the no-barrier reference)."""
    if not isinstance(path, xr.DataArray) or "t" not in path.dims:
        raise ValueError("path must be a DataArray over 't' (from linear_path or curve_path)")
    return float(_attrs_barrier(path.copy()).attrs["barrier"])


def _path(model, loss, data, center, D, coeffs, t, *, bn_data, refresh_bn, mode, method, metrics, kind, progress):
    mode = check_mode(mode)
    method = check_method(method)
    refresh = has_batchnorm(model) if refresh_bn == "auto" else bool(refresh_bn)
    if refresh and mode == "eval" and has_batchnorm(model):
        if bn_data is None:
            bn_data = data if _is_single_batch(data) else None
        if bn_data is None:
            raise ValueError("bn_data is needed to refresh BatchNorm statistics along the path (data is an iterator "
                             "that can be read only once); pass bn_data=<one batch or a list of batches>")
        bn_batches = list(as_batches(bn_data))
        _, loss_fn, mets = resolve_loss(loss, metrics)
        rows = []
        work = copy.deepcopy(model)
        data_list = list(as_batches(data))
        for ci in coeffs:
            _load_flat(work, center + ci.to(center.dtype) @ D)
            refresh_batchnorm(work, bn_batches)
            ev = GridEvaluator(work, loss, data_list, mode="eval", method="loop", metrics=metrics, progress=False)
            rows.append(ev(flat_params(work), torch.zeros(1, D.shape[1], dtype=D.dtype), torch.zeros(1, 1))[:, 0])
            quantities = ev.quantities
        vals = torch.stack(rows, 1)
        used = "loop (BatchNorm statistics refreshed at each point)"
    else:
        ev = GridEvaluator(model, loss, data, mode=mode, method=method, metrics=metrics, progress=progress,
                           desc=kind)
        vals = ev(center, D, coeffs)
        quantities = ev.quantities
        used = ev.used_method
    out = xr.DataArray(vals[0].numpy(), dims=("t",), coords={"t": t}, name="loss")
    for q, row in zip(quantities[1:], vals[1:]):
        out.coords[q] = ("t", row.numpy())
    out.attrs.update({"long_name": "loss", "path": kind, "mode": mode, "method": used,
                      "bn_refreshed": int(refresh and has_batchnorm(model)),   # int: netCDF has no booleans
                      "quantities": list(quantities)})
    return _attrs_barrier(out)


def linear_path(model_a: nn.Module, model_b, loss, data, steps: int = 21, *, bn_data=None, refresh_bn="auto",
                mode: str = "eval", method: str = "auto", metrics=None, progress=None) -> xr.DataArray:
    """Loss along the straight line θ(t) = (1 - t) θ_a + t θ_b, t in [0, 1] -> DataArray over ``t`` with the barrier
    height in ``attrs["barrier"]`` (and metrics such as accuracy as coordinates when ``loss`` is ``prob.loss``).

    BatchNorm: with ``refresh_bn="auto"`` (default) models with BatchNorm get their running statistics recomputed
    at every t from ``bn_data`` (default: ``data`` when it is one batch), then are evaluated in eval mode; this
    loops over t. Models without BatchNorm are evaluated batched over t (vmap).
    """
    steps = check_int("steps", steps, 2, 100_000)
    a, b, _, _ = _endpoints(model_a, model_b)
    t = np.linspace(0.0, 1.0, steps)
    coeffs = torch.from_numpy(t)[:, None]
    return _path(model_a, loss, data, a, (b - a)[None], coeffs, t, bn_data=bn_data, refresh_bn=refresh_bn,
                 mode=mode, method=method, metrics=metrics, kind="linear", progress=progress)


@dataclass
class BezierCurve:
    """Quadratic Bezier curve φ(t) = (1-t)² θ_a + 2t(1-t) θ_c + t² θ_b between two solutions (θ_c trained)."""

    a: torch.Tensor
    b: torch.Tensor
    control: torch.Tensor
    template: nn.Module
    history: xr.DataArray
    config: dict = field(default_factory=dict)

    def point(self, t: float) -> torch.Tensor:
        t = check_float("t", t, 0.0, 1.0)
        return (1 - t) ** 2 * self.a + 2 * t * (1 - t) * self.control + t ** 2 * self.b

    def model(self, t: float, bn_data=None) -> nn.Module:
        """A new model at φ(t) (BatchNorm statistics recomputed from ``bn_data`` if given), in eval mode."""
        m = copy.deepcopy(self.template)
        _load_flat(m, self.point(t))
        if bn_data is not None:
            refresh_batchnorm(m, bn_data)
        return m.eval()

    def path(self, loss, data, steps: int = 21, **kw) -> xr.DataArray:
        """Loss along the curve; see :func:`curve_path`."""
        return curve_path(self, loss, data, steps=steps, **kw)


def curve_path(curve: BezierCurve, loss, data, steps: int = 21, *, bn_data=None, refresh_bn="auto",
               mode: str = "eval", method: str = "auto", metrics=None, progress=None) -> xr.DataArray:
    """Loss along a trained Bezier curve, t in [0, 1] -> DataArray over ``t`` (barrier in attrs, relative to the
    chord between the end losses). BatchNorm handling as in :func:`linear_path`."""
    if not isinstance(curve, BezierCurve):
        raise ValueError(f"curve must be a BezierCurve (from landscapes.bezier); got {type(curve).__name__}")
    steps = check_int("steps", steps, 2, 100_000)
    t = np.linspace(0.0, 1.0, steps)
    tt = torch.from_numpy(t)
    coeffs = torch.stack([2 * tt * (1 - tt), tt ** 2], 1)
    D = torch.stack([curve.control - curve.a, curve.b - curve.a])
    out = _path(curve.template, loss, data, curve.a, D, coeffs, t, bn_data=bn_data, refresh_bn=refresh_bn,
                mode=mode, method=method, metrics=metrics, kind="bezier", progress=progress)
    return out


def bezier(model_a: nn.Module, model_b, loss, data, steps: int = 500, *, optimizer: str = "adam", lr: float = 1e-2,
           batch_size: int | None = None, seed: int = 0, mode: str = "train", init: str = "midpoint",
           init_noise: float = 0.01, progress: bool | None = None, **optimizer_hparams) -> BezierCurve:
    """Train the control point θ_c of a quadratic Bezier curve joining ``model_a`` and ``model_b`` (Garipov et al.
    2018): each step draws t ~ U(0, 1) and a mini-batch and takes an optimizer step on L(φ(t)) w.r.t. θ_c only.

    data: one batch (x, y) (mini-batches of ``batch_size`` are drawn from it, seeded; None = full batch) or a
      list of batches (cycled). optimizer/lr/optimizer_hparams: any ``wb.optimizers`` entry. mode: "train"
      (default, BatchNorm uses batch statistics as in Garipov et al.) or "eval". init: "midpoint" of the segment,
      moved by a seeded random vector of norm ``init_noise * |θ_b - θ_a|`` (the straight line can be a saddle of
      the curve objective, e.g. in symmetric problems, and training would never leave it).
    Neither model is changed; the returned curve holds copies. ``curve.history`` is the training loss per step.
    """
    import workbench as wb

    steps = check_int("steps", steps, 1, 10_000_000)
    lr = check_float("lr", lr, 0.0, None, low_inclusive=False)
    seed = check_int("seed", seed, 0)
    mode = check_mode(mode)
    check_choice("init", init, ["midpoint"])
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    a, b, names, shapes = _endpoints(model_a, model_b)
    a, b = a.detach().clone(), b.detach().clone()
    template = copy.deepcopy(model_a)
    loss_, loss_fn, _ = resolve_loss(loss, metrics={})
    objective = _Objective(template, loss_, loss_fn, {})
    buffers = {"model." + k: v for k, v in template.named_buffers()}
    init_noise = check_float("init_noise", init_noise, 0.0)
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(a.shape, generator=g, dtype=torch.float64)
    noise = (noise / noise.norm() * init_noise * (b - a).double().norm()).to(a.device, a.dtype)
    control = ((a + b) / 2 + noise).clone().requires_grad_(True)
    opt = wb.optimizers.make(optimizer, [control], lr=lr, **optimizer_hparams)
    if _is_single_batch(data):
        x_all, y_all = data
        n = x_all.shape[0]

        def next_batch():
            if batch_size is None or batch_size >= n:
                return x_all, y_all
            idx = torch.randint(0, n, (batch_size,), generator=g).to(x_all.device)
            return x_all[idx], y_all[idx]
    else:
        cyc = itertools.cycle(list(as_batches(data)))

        def next_batch():
            return next(cyc)
    losses = np.empty(steps)
    ts = np.empty(steps)
    bar = None
    if progress or (progress is None and steps >= 200):
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc="bezier", leave=False)
    try:
        with preserved(template):
            template.train(mode == "train")
            for i in range(steps):
                t = float(torch.rand((), generator=g))
                x, y = to_device(next_batch(), a.device)
                theta = (1 - t) ** 2 * a + 2 * t * (1 - t) * control + t ** 2 * b
                params = {"model." + k: v for k, v in unflatten_to_dict(theta, names, shapes).items()}
                opt.zero_grad(set_to_none=True)
                val = torch.func.functional_call(objective, {**params, **buffers}, (x, y), strict=False)[0]
                if not torch.isfinite(val):
                    raise FloatingPointError(f"bezier training diverged at step {i} (loss {float(val)}); lower lr")
                val.backward()
                opt.step()
                losses[i], ts[i] = float(val.detach()), t
                if bar is not None:
                    bar.update(1)
                    if i % 20 == 0:
                        bar.set_postfix(loss=f"{losses[i]:.4g}")
    finally:
        if bar is not None:
            bar.close()
    history = xr.DataArray(losses, dims=("step",), coords={"step": np.arange(steps), "t": ("step", ts)},
                           name="bezier_loss", attrs={"long_name": "training loss of the curve at a random t"})
    return BezierCurve(a, b, control.detach().clone(), template, history,
                       {"optimizer": optimizer, "lr": lr, "steps": steps, "batch_size": batch_size, "seed": seed,
                        "mode": mode, "init_noise": init_noise, **optimizer_hparams})


def _load_flat(model: nn.Module, theta: torch.Tensor) -> None:
    params = trainable(model)
    vals = unflatten_to_dict(theta, [k for k, _ in params], [p.shape for _, p in params])
    with torch.no_grad():
        for k, p in params:
            p.copy_(vals[k])
