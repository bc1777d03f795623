"""1D and 2D loss landscapes: ``line`` and ``surface`` around a center, and the exact surface of the 2D test
functions (``function_surface``)."""
from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from workbench._validate import check_float, check_int

from ._core import GridEvaluator, check_autocast, check_method, check_mode, flat_params, trainable
from .directions import Directions, _flat_of

__all__ = ["surface", "line", "function_surface", "grid_axis", "lookup"]

AXES = ("alpha", "beta", "gamma")
_PLANES: "OrderedDict[str, tuple[Directions, torch.Tensor]]" = OrderedDict()
_PLANES_MAX = 8


def _remember(directions: Directions, center: torch.Tensor) -> str:
    key = uuid.uuid4().hex
    _PLANES[key] = (directions, center.detach())
    while len(_PLANES) > _PLANES_MAX:
        _PLANES.popitem(last=False)
    return key


def lookup(da: xr.DataArray):
    """The (directions, center) a landscape was computed with, while they are still cached in this process (the
    last 8 landscapes), else None. ``plot`` uses this to project trajectories onto the landscape's plane."""
    key = da.attrs.get("landscape_id")
    return _PLANES.get(key) if key else None


def grid_axis(name: str, span, steps) -> np.ndarray:
    """Grid coordinates of one axis: ``span`` > 0 means [-span, span]; a pair (lo, hi) with lo < hi is used as is."""
    steps = check_int(f"steps ({name})" if name else "steps", steps, 2, 100_000)
    label = f"span ({name})" if name else "span"
    if isinstance(span, (tuple, list)) and len(span) == 2 and not isinstance(span[0], (tuple, list)):
        lo = check_float(f"{label}[0]", span[0])
        hi = check_float(f"{label}[1]", span[1])
        if not lo < hi:
            raise ValueError(f"{label}=({lo:g}, {hi:g}) is out of range: {label} must be (lo, hi) with lo < hi")
    else:
        s = check_float(label, span, 0.0, None, low_inclusive=False)
        lo, hi = -s, s
    return np.linspace(lo, hi, steps)


def _per_axis(value, k: int, field: str):
    """A scalar/pair shared by all axes, or one entry per axis."""
    if isinstance(value, (tuple, list)) and len(value) == k and k > 1 and \
            all(isinstance(v, (tuple, list)) for v in value):
        return list(value)
    if field == "steps" and isinstance(value, (tuple, list)):
        if len(value) != k:
            raise ValueError(f"steps must be an integer ≥ 2 or one integer per direction ({k}); got {value!r}")
        return list(value)
    return [value] * k


def _resolve_center(model, directions: Directions, center):
    params = trainable(model)
    names, shapes = [k for k, _ in params], [p.shape for _, p in params]
    if center is None:
        center = directions.center if directions.center is not None else "model"
    if isinstance(center, str):
        if center != "model":
            raise ValueError(f"center must be None, 'model', an nn.Module, a flat tensor or a dict; got {center!r}")
        return flat_params(model)
    return _flat_of(center, names, shapes, "center").to(params[0][1].device, params[0][1].dtype)


def _check_directions(model, directions, k_allowed):
    if not isinstance(directions, Directions):
        raise ValueError(f"directions must be a landscapes Directions (e.g. landscapes.directions.random(model)); "
                         f"got {type(directions).__name__}")
    if directions.space != "params":
        raise ValueError("directions live in count-sketch space (PCA of a sketched trajectory) and cannot move the "
                         "model; record an exact trajectory (raise Trajectory(max_bytes=...)) or use other directions")
    if len(directions) not in k_allowed:
        raise ValueError(f"directions must hold {' or '.join(map(str, k_allowed))} direction(s) here; "
                         f"got {len(directions)}")
    n = sum(p.numel() for _, p in trainable(model))
    if directions.size != n:
        raise ValueError(f"directions have {directions.size} entries but the model has {n} trainable parameters "
                         "(mismatched directions: were they made for another model?)")
    if directions.names and [k for k, _ in trainable(model)] != list(directions.names):
        raise ValueError("directions were made for a model with different parameter names (mismatched directions)")
    if not torch.isfinite(directions.vectors).all():
        raise ValueError("directions contain non-finite values")


def _evaluate(model, loss, data, directions, axes, *, center, mode, method, metrics, chunk_size, max_memory,
              progress, desc, batch_size=None, autocast=None):
    mode = check_mode(mode)
    method = check_method(method)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, 1)
    if max_memory is not None:
        max_memory = check_int("max_memory", max_memory, 1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    autocast = check_autocast(autocast)
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress must be None (automatic), True or False; got {progress!r}")
    c = _resolve_center(model, directions, center)
    ev = GridEvaluator(model, loss, data, mode=mode, method=method, metrics=metrics, chunk_size=chunk_size,
                       max_memory=max_memory, progress=progress, desc=desc, batch_size=batch_size,
                       autocast=autocast)
    mesh = np.meshgrid(*[ax for _, ax in axes], indexing="ij")
    coeffs = torch.from_numpy(np.stack([m.reshape(-1) for m in mesh], axis=1))
    vals = ev(c, directions.vectors, coeffs)
    shape = tuple(len(ax) for _, ax in axes)
    dims = tuple(name for name, _ in axes)
    coords = {name: ax for name, ax in axes}
    out = xr.DataArray(vals[0].numpy().reshape(shape), dims=dims, coords=coords, name="loss")
    for q, row in zip(ev.quantities[1:], vals[1:]):
        out.coords[q] = (dims, row.numpy().reshape(shape))
    out.attrs.update(directions.attrs())
    for name, nrm in zip(dims, directions.norms):
        out.attrs[f"{name}_norm"] = nrm
    out.attrs.update({
        "long_name": "loss", "description": "loss at θ = center + " + " + ".join(f"{d}·d_{d}" for d in dims)
        + " (coordinates in direction units; direction norms in *_norm)",
        "mode": mode, "method": ev.used_method or method, "chunk_size": int(ev.used_chunk or 0),
        "quantities": list(ev.quantities), "center_norm": float(c.double().norm()),
        "n_examples": int(ev.n_examples), "batch_size": int(ev.used_batch or 0),
        "forward_passes_per_point": int(ev.n_forward), "autocast": ev.autocast or "none",
        "landscape_id": _remember(directions, c),
    })
    if ev.fallback_reason:
        out.attrs["vmap_fallback_reason"] = ev.fallback_reason
    if ev.method_reason:
        out.attrs["method_reason"] = ev.method_reason
    return out


def surface(model: nn.Module, loss, data, directions: Directions, span: Any = 1.0, steps: Any = 21, *,
            center=None, mode: str = "eval", method: str = "auto", metrics=None, chunk_size: int | None = None,
            max_memory: int | None = None, progress: bool | None = None, batch_size: int | None = None,
            autocast: str | None = None) -> xr.DataArray:
    """Loss on a 2D grid ``θ(α, β) = center + α d₁ + β d₂`` -> ``xarray.DataArray`` (alpha, beta).

    model: the network (its parameters are never written; mode, buffers and RNG are restored afterwards).
    loss: ``loss(model, batch) -> scalar mean``; pass ``prob.loss`` (or the Problem) to also get the problem's
      metrics (e.g. ``accuracy``) as extra coordinates on the same grid (``surf.accuracy``).
    data: one batch ``(x, y)`` or an iterable of batches (averaged weighted by batch size), e.g.
      ``prob.data("test")`` or ``prob.batches("train", 512)``.
    directions: two directions (``landscapes.directions.*``); if they carry a center (PCA plane, plane through
      points) it is the default ``center``; otherwise the model's parameters.
    span: > 0 for [-span, span] on both axes, a pair (lo, hi), or one pair per axis. steps: ≥ 2 (or one per axis).
    mode: "eval" (the default: BatchNorm normalizes with its running statistics, dropout is off - the loss of
      the model as it predicts) or "train" (BatchNorm normalizes with the batch statistics of each grid point and
      each (micro)batch - so the values depend on ``batch_size`` - running statistics untouched; dropout active).
      Either way the model itself is unchanged afterwards (mode, BatchNorm statistics, parameters, grads, RNG).
    method: "auto" (vmap over grid points, loop fallback with a warning saying why), "vmap" or "loop".
    batch_size: examples per forward pass: each batch of ``data`` is cut into microbatches of at most this many
      examples and the results are averaged weighted by size (the same mean as one pass over the data; a data set
      larger than memory comes as an iterable of batches, e.g. ``prob.batches("train", 512)``, read once).
    chunk_size / max_memory: grid points per vmap call, or the activation-memory budget (bytes) of one evaluation
      (default 32 MiB on CPU, where cache-sized chunks are fastest, 1 GiB on CUDA). Memory model: one grid
      point on m examples needs ~2x the activations of a forward pass on m examples (measured on a few examples)
      plus two copies of the parameters; a chunk of c points c times that. An explicit ``max_memory`` also picks
      the microbatch (when no ``batch_size`` is given): the most examples whose evaluation fits; smaller than
      one example is a ValueError. With method="auto" on CPU, a model whose single forward pass exceeds a
      quarter of the budget is evaluated point by point (attrs ``method_reason`` says so): batching grid points
      gains nothing there - for a ResNet-20 on CPU that is the fastest way (``benchmarks/landscapes.py``).
    autocast: None (the model's dtype) or "bf16" / "fp16": evaluate under ``torch.autocast`` (for GPUs; the
      values differ from float32 by the reduced precision - ``benchmarks/landscapes.py --model resnet20`` prints
      the difference). The model's weights and the grid arithmetic stay in the model's dtype.
    progress: tqdm bar (``tqdm.auto``: a widget in notebooks); None: automatic when the grid takes at least 400
      evaluations that are not all one vmap call.
    attrs: direction norms (``alpha_norm``, ``beta_norm``), normalization, seed, mode, method, chunk size,
      ``batch_size`` (largest microbatch used), ``n_examples`` (examples averaged at each point),
      ``forward_passes_per_point``, ``autocast``.
    """
    _check_directions(model, directions, (2,))
    sp, st = _per_axis(span, 2, "span"), _per_axis(steps, 2, "steps")
    axes = [(AXES[i], grid_axis(AXES[i], sp[i], st[i])) for i in range(2)]
    return _evaluate(model, loss, data, directions, axes, center=center, mode=mode, method=method, metrics=metrics,
                     chunk_size=chunk_size, max_memory=max_memory, progress=progress, desc="surface",
                     batch_size=batch_size, autocast=autocast)


def line(model: nn.Module, loss, data, direction, span: Any = 1.0, steps: int = 51, *, center=None,
         mode: str = "eval", method: str = "auto", metrics=None, chunk_size: int | None = None,
         max_memory: int | None = None, progress: bool | None = None, batch_size: int | None = None,
         autocast: str | None = None) -> xr.DataArray:
    """Loss along ``θ(α) = center + α d`` -> ``xarray.DataArray`` over ``alpha``.

    ``direction``: a one-direction ``Directions`` (or the first of several), or a target point (an ``nn.Module``
    like ``model``, a flat tensor, a dict) in which case ``d = target - center`` and ``span`` defaults to the
    segment plus margins given by the caller (e.g. ``span=(0, 1)`` is the straight path model -> target).
    Other arguments as in :func:`surface`.
    """
    if not isinstance(direction, Directions):
        params = trainable(model)
        names, shapes = [k for k, _ in params], [p.shape for _, p in params]
        target = _flat_of(direction, names, shapes, "direction").to(params[0][1].device, params[0][1].dtype)
        c = _resolve_center(model, Directions(target[None], names, shapes), center)
        direction = Directions((target - c)[None], names, shapes, "segment", c)
    elif len(direction) > 1:
        direction = direction[0]
    _check_directions(model, direction, (1,))
    axes = [("alpha", grid_axis("alpha", span, steps))]
    return _evaluate(model, loss, data, direction, axes, center=center, mode=mode, method=method, metrics=metrics,
                     chunk_size=chunk_size, max_memory=max_memory, progress=progress, desc="line",
                     batch_size=batch_size, autocast=autocast)


def function_surface(problem, steps: int = 101, domain=None) -> xr.DataArray:
    """The exact surface of a 2D test-function problem (``kind == "function"``) on its domain -> DataArray
    (y, x) of ``problem.function`` (x along columns, as plotly draws it). ``domain``: ((x0, x1), (y0, y1))."""
    if getattr(problem, "kind", None) != "function" or problem.function is None:
        raise ValueError("problem must be a 2D test-function problem (kind 'function'), e.g. "
                         "wb.problems.make('rosenbrock')")
    steps = check_int("steps", steps, 2, 5000)
    (x0, x1), (y0, y1) = problem.domain if domain is None else domain
    xs = grid_axis("x", (x0, x1), steps)
    ys = grid_axis("y", (y0, y1), steps)
    X, Y = np.meshgrid(xs, ys, indexing="xy")
    pts = torch.from_numpy(np.stack([X, Y], -1))
    with torch.no_grad():
        Z = problem.function(pts).double().numpy()
    return xr.DataArray(Z, dims=("y", "x"), coords={"y": ys, "x": xs}, name="loss",
                        attrs={"long_name": "f(x, y)", "problem": problem.name, "kind": "function",
                               "minima": [float(v) for m in problem.minima for v in m],
                               "description": f"exact {problem.name} function on its domain"})
