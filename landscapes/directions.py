"""Directions in parameter space: random (with filter/layer/model normalization), Hessian eigenvectors, the PCA
plane of recorded trajectories, the plane through two or three parameter points, and orthogonalization.

Every function returns a :class:`Directions`: a ``(k, n)`` tensor of flat directions in the order of the model's
trainable parameters (the order of ``model.parameters()`` and of ``wb.probes.Trajectory`` records), plus an
optional ``center`` (the point the plane is anchored at) and metadata (normalization, seed, eigenvalues,
explained variance, the plane coordinates of given points).

    d = landscapes.directions.random(model, n=2, norm="filter", seed=0)   # Li et al. 2018
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from workbench._validate import check_bool, check_choice, check_int

from ._core import flat_params, norm_layer_param_names, trainable

__all__ = ["Directions", "random", "hessian", "pca", "plane", "orthogonalize", "filter_normalize", "sketch"]

NORMS = ["filter", "layer", "model", "none"]


@dataclass
class Directions:
    """``k`` flat directions ``vectors`` (k, n) in trainable-parameter order.

    ``space`` is ``"params"`` (usable for surfaces) or ``"countsketch"`` (directions found from a sketched
    trajectory; they can project sketched trajectories but cannot move a model). ``center`` (n,) is the point the
    directions are anchored at, if they have one (PCA plane, plane through points); ``None`` means "the model".
    """

    vectors: torch.Tensor
    names: list = field(default_factory=list)
    shapes: list = field(default_factory=list)
    kind: str = "random"
    center: torch.Tensor | None = None
    space: str = "params"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.vectors.dim() == 1:
            self.vectors = self.vectors.unsqueeze(0)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def __getitem__(self, i) -> "Directions":
        idx = [i] if isinstance(i, int) else list(range(len(self)))[i]
        meta = dict(self.meta)
        for key in ("eigenvalues", "explained_variance"):
            if key in meta:
                meta[key] = [meta[key][j] for j in idx]
        return Directions(self.vectors[idx], self.names, self.shapes, self.kind, self.center, self.space, meta)

    @property
    def size(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def norms(self) -> list[float]:
        return [float(v) for v in self.vectors.norm(dim=1)]

    def as_dicts(self) -> list[dict]:
        """Per-direction dicts ``name -> tensor`` shaped like the parameters."""
        from ._core import unflatten_to_dict
        return [unflatten_to_dict(v, self.names, self.shapes) for v in self.vectors]

    def to(self, device=None, dtype=None) -> "Directions":
        c = None if self.center is None else self.center.to(device=device, dtype=dtype)
        return Directions(self.vectors.to(device=device, dtype=dtype), self.names, self.shapes, self.kind, c,
                          self.space, dict(self.meta))

    def attrs(self) -> dict:
        """JSON/netCDF-friendly description (for DataArray attrs)."""
        out = {"direction_kind": self.kind, "direction_space": self.space,
               "direction_norms": self.norms}
        for k, v in self.meta.items():
            if isinstance(v, bool):                      # netCDF has no boolean attributes
                out[f"direction_{k}"] = int(v)
            elif isinstance(v, (int, float, str)):
                out[f"direction_{k}"] = v
            elif isinstance(v, (list, tuple)) and all(isinstance(e, (int, float)) for e in v):
                out[f"direction_{k}"] = [float(e) for e in v]
        return out

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.meta.items() if not isinstance(v, (list, dict)) or
                          k in ("eigenvalues", "explained_variance"))
        return (f"Directions(k={len(self)}, n={self.size}, kind={self.kind!r}, space={self.space!r}"
                f"{', centered' if self.center is not None else ''}{', ' + extra if extra else ''})")


# -- helpers ------------------------------------------------------------------------------------------------
def _params_of(model: nn.Module):
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    params = trainable(model)
    if not params:
        raise ValueError("model has no trainable parameters")
    return params


def _flat_of(point, names, shapes, what: str) -> torch.Tensor:
    """A point given as an nn.Module, a flat tensor/array or a dict name->tensor, as a flat float tensor."""
    n = sum(int(np.prod(s)) for s in shapes)
    if isinstance(point, nn.Module):
        p = trainable(point)
        if [a for a, _ in p] != list(names) or [t.shape for _, t in p] != list(shapes):
            raise ValueError(f"{what} must have the same parameter names and shapes as the model")
        return flat_params(point)
    if isinstance(point, dict):
        missing = [k for k in names if k not in point]
        if missing:
            raise ValueError(f"{what} is missing parameters {missing[:5]}")
        return torch.cat([torch.as_tensor(point[k]).reshape(-1) for k in names])
    t = torch.as_tensor(np.asarray(point) if not torch.is_tensor(point) else point)
    if t.numel() != n:
        raise ValueError(f"{what} must have {n} entries (the model's trainable parameters); got {t.numel()}")
    return t.reshape(-1)


def filter_normalize(direction: dict, weights: dict, norm: str = "filter", eps: float = 1e-10) -> dict:
    """Rescale a direction (name -> tensor) to the weights' norms, per Li et al. 2018.

    ``"filter"``: every output filter/neuron (slice along dim 0 of a tensor with ≥2 dims) gets the norm of the
    corresponding slice of the weight; tensors with ≤1 dim are one filter. ``"layer"``: each tensor gets the
    weight tensor's norm. ``"model"``: the whole direction gets the norm of the whole parameter vector.
    ``"none"``: unchanged. Filters whose weights are zero get a zero direction.
    """
    check_choice("norm", norm, NORMS)
    if norm == "none":
        return dict(direction)
    if norm == "model":
        dn = torch.sqrt(sum((d.double() ** 2).sum() for d in direction.values()))
        wn = torch.sqrt(sum((weights[k].double() ** 2).sum() for k in direction))
        scale = (wn / (dn + eps)).to(next(iter(direction.values())).dtype)
        return {k: d * scale for k, d in direction.items()}
    out = {}
    for k, d in direction.items():
        w = weights[k].to(d.dtype)
        if norm == "filter" and d.dim() >= 2:
            dn = d.reshape(d.shape[0], -1).norm(dim=1)
            wn = w.reshape(w.shape[0], -1).norm(dim=1)
            scale = torch.where(dn > eps, wn / dn.clamp_min(eps), torch.zeros_like(dn))
            out[k] = d * scale.reshape(-1, *([1] * (d.dim() - 1)))
        else:
            dn, wn = d.norm(), w.norm()
            out[k] = d * (wn / dn) if dn > eps else torch.zeros_like(d)
    return out


def orthogonalize(directions: Directions, keep_norms: bool = True) -> Directions:
    """Gram-Schmidt (in float64) on the directions in order; ``keep_norms`` rescales each result to the norm of
    the input direction (so filter-normalized scales are kept), otherwise the result is orthonormal."""
    if not isinstance(directions, Directions):
        raise ValueError(f"directions must be a landscapes Directions; got {type(directions).__name__}")
    V = directions.vectors.double()
    out = []
    for i, v in enumerate(V):
        w = v.clone()
        for u in out:
            w = w - (w @ u) * u
        wn = w.norm()
        if wn <= 1e-12 * max(1.0, float(v.norm())):
            raise ValueError(f"directions are linearly dependent: direction {i} lies in the span of the previous ones")
        out.append(w / wn)
    Q = torch.stack(out)
    if keep_norms:
        Q = Q * V.norm(dim=1, keepdim=True)
    meta = dict(directions.meta, orthogonalized=True)
    return Directions(Q.to(directions.vectors.dtype), directions.names, directions.shapes, directions.kind,
                      directions.center, directions.space, meta)


def _check_ignore(ignore):
    if ignore is None:
        return ()
    if isinstance(ignore, str):
        ignore = (ignore,)
    ignore = tuple(ignore)
    for v in ignore:
        check_choice("ignore", v, ["bias", "norm"])
    return ignore


# -- random -------------------------------------------------------------------------------------------------
def random(model: nn.Module, n: int = 2, norm: str | None = "filter", seed: int = 0,
           ignore: Sequence[str] | str | None = ("bias", "norm"), orthogonal: bool = False,
           distribution: str = "normal") -> Directions:
    """``n`` random Gaussian directions around ``model``, normalized per ``norm`` (Li et al. 2018).

    norm: "filter" (default; each output filter/neuron rescaled to the norm of the same filter of the weights),
      "layer" (each tensor to its weight's norm), "model" (whole vector to ‖θ‖), or None/"none" (raw N(0, I)).
    ignore: parameter groups whose directions are zero: "bias" (parameters named ``*bias``) and/or "norm"
      (parameters of normalization layers: BatchNorm, LayerNorm, GroupNorm). Default both, as in Li et al.;
      pass ``ignore=()`` to move them too.
    orthogonal: Gram-Schmidt the directions (norms kept). Random high-dimensional directions are nearly
      orthogonal already. ``seed`` fixes the draw (the caller's RNG is not touched).

    Zero weights: a normalized direction is scaled by the weights' norms, so a filter (or, for "layer", a tensor)
    whose weights are all zero gets a zero direction. When that leaves nothing to move — every parameter the
    directions move has all-zero weights (e.g. a model initialised at zero), so the surface would be flat — a
    ValueError names those parameters and says what to use instead (``norm="none"``, or a non-zero point).
    """
    params = _params_of(model)
    n = check_int("n", n, 1, 64)
    norm = "none" if norm is None else check_choice("norm", norm, NORMS)
    seed = check_int("seed", seed, 0, 2**63 - 1)
    ignore = _check_ignore(ignore)
    orthogonal = check_bool("orthogonal", orthogonal)
    check_choice("distribution", distribution, ["normal", "rademacher"])
    names = [k for k, _ in params]
    shapes = [p.shape for _, p in params]
    weights = {k: p.detach() for k, p in params}
    norm_names = norm_layer_param_names(model) if "norm" in ignore else set()
    g = torch.Generator(device="cpu").manual_seed(seed)
    vecs = []
    for _ in range(n):
        d = {}
        for k, p in params:
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if distribution == "rademacher":
                r = torch.sign(r)
            d[k] = r.to(device=p.device, dtype=p.dtype if p.dtype.is_floating_point else torch.float32)
        d = filter_normalize(d, weights, norm)
        for k in names:
            if ("bias" in ignore and k.split(".")[-1].startswith("bias")) or k in norm_names:
                d[k] = torch.zeros_like(d[k])
        vecs.append(torch.cat([d[k].reshape(-1) for k in names]))
    if norm != "none" and not any(bool(v.abs().max() > 0) for v in vecs if v.numel()):
        moved = [k for k in names if not (("bias" in ignore and k.split(".")[-1].startswith("bias"))
                                          or k in norm_names)]
        zero = [k for k in moved if not bool(weights[k].abs().max() > 0)] if moved else []
        shown = ", ".join(zero[:8]) + (f" and {len(zero) - 8} more" if len(zero) > 8 else "")
        raise ValueError(
            f"norm={norm!r} scales each direction by the weights' norms, but the weights of every parameter the "
            f"directions move are all zero ({shown or 'none moved: all ignored by ignore=' + repr(ignore)}), so "
            "the directions would be zero and the surface flat; use norm='none' (raw N(0, I) directions), "
            "take directions around a non-zero point, or pass ignore=() when the ignored biases/normalization "
            "parameters are not zero")
    dirs = Directions(torch.stack(vecs), names, shapes, "random",
                      meta={"norm": norm, "seed": seed, "ignore": ",".join(ignore), "distribution": distribution})
    if orthogonal:
        dirs = orthogonalize(dirs, keep_norms=True)
    return dirs


# -- Hessian ------------------------------------------------------------------------------------------------
def hessian(model: nn.Module, loss, data, n: int = 2, which: str = "LA", tol: float = 1e-3,
            max_iter: int | None = None, mode: str = "eval", params=None, seed: int = 0) -> Directions:
    """The top-``n`` Hessian eigenvectors of ``loss`` at ``model`` (unit norm), via ``wb.curvature``.

    ``which``: "LA" (largest algebraic, default: the sharpest directions), "SA" (most negative), "LM" (largest
    magnitude). Eigenvalues, residuals and the converged flag are in ``meta``; a warning comes from
    ``wb.curvature.eigs`` when Lanczos did not converge. ``mode`` is the model mode the Hessian is taken in.
    """
    _params_of(model)
    n = check_int("n", n, 1, 64)
    check_choice("which", which, ["LA", "SA", "LM"])
    try:
        from workbench import curvature
    except ImportError as exc:  # pragma: no cover - depends on the engine version
        raise ImportError("landscapes.directions.hessian needs workbench.curvature") from exc
    if params is not None:
        raise ValueError("params: Hessian directions over a subset of parameters are not supported; use params=None")
    seed = check_int("seed", seed, 0)
    op = curvature.hessian(model, loss, data, params=None, mode=mode)
    if n > op.size:
        raise ValueError(f"n={n} is out of range: the model has only {op.size} parameters")
    res = curvature.eigs(op, k=n, which=which, tol=tol, max_iter=max_iter, seed=seed)
    params_ = trainable(model)
    V = res.vectors.T.detach().to(params_[0][1].dtype)
    return Directions(V, [k for k, _ in params_], [p.shape for _, p in params_], "hessian",
                      meta={"eigenvalues": [float(v) for v in res.values], "residuals": [float(r) for r in res.residuals],
                            "converged": bool(res.converged), "n_matvec": int(res.n_matvec), "which": which,
                            "mode": mode})


# -- trajectories -------------------------------------------------------------------------------------------
def _trajectory(record, var: str = "trajectory"):
    """(array (T, n), kind, sketch seed, sketch dim, n_params) of a record's trajectory variable."""
    import xarray as xr

    if isinstance(record, xr.Dataset):
        if var not in record:
            raise ValueError(f"record has no {var!r} variable: train with probes=[wb.probes.Trajectory(every=k)]")
        da = record[var]
        prefix = var
        kind = record.attrs.get(f"{prefix}_kind", "params")
        seed = record.attrs.get(f"{prefix}_projection_seed", 0)
        dim = record.attrs.get(f"{prefix}_projection_dim", da.shape[-1])
        n_params = record.attrs.get(f"{prefix}_n_params", da.shape[-1])
        return np.asarray(da.values, dtype=np.float64), str(kind), int(seed), int(dim), int(n_params)
    if hasattr(record, "record"):      # a Run
        return _trajectory(record.record, var)
    arr = np.asarray(record.detach().cpu() if torch.is_tensor(record) else record, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"trajectory must be a record (xarray.Dataset) or an array (steps, n_params); got shape {arr.shape}")
    return arr, "params", 0, arr.shape[1], arr.shape[1]


def _as_list(records):
    import xarray as xr
    if isinstance(records, (xr.Dataset, np.ndarray, torch.Tensor)) or hasattr(records, "record"):
        return [records]
    if isinstance(records, (list, tuple)):
        if not records:
            raise ValueError("records must hold at least one record")
        return builtins.list(records)
    raise ValueError(f"records must be a record (xarray.Dataset), a Run, an array, or a list of them; "
                     f"got {type(records).__name__}")


def pca(records, n: int = 2, center: Any = "final", model: nn.Module | None = None,
        var: str = "trajectory") -> Directions:
    """The PCA plane of one or several recorded trajectories (Li et al. 2018, section 7).

    The snapshots of all records are stacked, ``center`` is subtracted (``"final"``: the last snapshot of the
    first record, as in Li et al.; ``"first"``: its first snapshot; ``"mean"``: the mean of all snapshots; or an
    explicit point), and the top ``n`` right singular vectors are the (orthonormal) directions.
    ``meta["explained_variance"]`` is the fraction of the centered snapshots' squared norm along each direction
    (their sum is ≤ 1). For count-sketched records the directions live in the sketch space (``space ==
    "countsketch"``): they project sketched trajectories but cannot be used for a surface. ``model`` (optional)
    supplies parameter names/shapes (needed to use exact directions with a differently ordered model check).
    """
    recs = _as_list(records)
    n = check_int("n", n, 1, 64)
    trajs = [_trajectory(r, var) for r in recs]
    kinds = {(k, s, d) if k == "countsketch" else (k,) for _, k, s, d, _ in trajs}
    if len(kinds) > 1:
        raise ValueError("records must all hold the same kind of trajectory (all exact, or all sketched with the "
                         f"same seed and dim); got {sorted(map(str, kinds))}")
    widths = {t.shape[1] for t, *_ in trajs}
    if len(widths) > 1:
        raise ValueError(f"records have trajectories of different widths {sorted(widths)}: not the same model")
    X = np.concatenate([t for t, *_ in trajs], axis=0)
    if not np.all(np.isfinite(X)):
        raise ValueError("trajectory contains non-finite values (diverged run?); slice the record before the blow-up")
    if isinstance(center, str):
        check_choice("center", center, ["final", "first", "mean"])
        c = {"final": trajs[0][0][-1], "first": trajs[0][0][0], "mean": X.mean(0)}[center]
    else:
        kind0 = trajs[0][1]
        if isinstance(center, nn.Module):
            c = flat_params(center).double().cpu().numpy()
            if kind0 == "countsketch":
                c = sketch_vector(c, trajs[0][2], trajs[0][3])
        else:
            c = np.asarray(center.detach().cpu() if torch.is_tensor(center) else center, dtype=np.float64).reshape(-1)
        if c.shape[0] != X.shape[1]:
            raise ValueError(f"center must have {X.shape[1]} entries; got {c.shape[0]}")
    if X.shape[0] < 2:
        raise ValueError("records must hold at least 2 trajectory snapshots for a PCA plane")
    Xc = X - c[None, :]
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    total = float((Xc ** 2).sum())
    k = min(n, vt.shape[0])
    if k < n:
        raise ValueError(f"n={n} is out of range: the trajectories span at most {vt.shape[0]} directions")
    ev = [(float(si) ** 2 / total) if total > 0 else 0.0 for si in s[:k]]
    V = vt[:k].copy()
    # fix signs: the first record's start has a non-negative coordinate along each direction (reproducible plots)
    start = X[0] - c
    for i in range(k):
        if V[i] @ start < 0:
            V[i] = -V[i]
    kind, sseed, sdim, n_params = trajs[0][1], trajs[0][2], trajs[0][3], trajs[0][4]
    names, shapes = [], []
    if model is not None and kind == "params":
        ps = trainable(model)
        if sum(p.numel() for _, p in ps) != X.shape[1]:
            raise ValueError(f"model has {sum(p.numel() for _, p in ps)} trainable parameters but the trajectory has "
                             f"{X.shape[1]} coordinates")
        names, shapes = [k_ for k_, _ in ps], [p.shape for _, p in ps]
    meta = {"explained_variance": ev, "n_snapshots": int(X.shape[0]), "n_records": len(recs),
            "center_kind": center if isinstance(center, str) else "given"}
    if kind == "countsketch":
        meta.update(sketch_seed=sseed, sketch_dim=sdim, n_params=n_params)
    return Directions(torch.from_numpy(V).float(), names, shapes, "pca", torch.from_numpy(c).float(),
                      "countsketch" if kind == "countsketch" else "params", meta)


def sketch_vector(vec, seed: int, dim: int):
    from workbench.probes import countsketch
    t = torch.as_tensor(vec, dtype=torch.float64)
    return countsketch(t, int(dim), int(seed)).numpy()


def sketch(directions: Directions, seed: int, dim: int) -> Directions:
    """Count-sketch exact directions (and their center) with the same ``seed``/``dim`` as a sketched trajectory
    record (``wb.probes.countsketch``), so that the record can be projected onto them."""
    from workbench.probes import countsketch
    if directions.space != "params":
        raise ValueError("directions are already sketched")
    V = torch.stack([countsketch(v.double().cpu(), int(dim), int(seed)) for v in directions.vectors]).float()
    c = None if directions.center is None else countsketch(directions.center.double().cpu(), int(dim), int(seed)).float()
    meta = dict(directions.meta, sketch_seed=int(seed), sketch_dim=int(dim), n_params=directions.size)
    return Directions(V, directions.names, directions.shapes, directions.kind, c, "countsketch", meta)


# -- planes through points ----------------------------------------------------------------------------------
def plane(model: nn.Module, a, b, c=None, seed: int = 0, orthogonal: bool = True) -> Directions:
    """The line or plane through two or three parameter points (e.g. independently trained minima).

    Points are ``nn.Module`` s shaped like ``model``, flat tensors or dicts name -> tensor. The center is ``a``;
    direction 1 is ``b - a`` (so ``b`` sits at (1, 0)). With ``c``: direction 2 is the part of ``c - a``
    orthogonal to direction 1, scaled to the same norm (Garipov et al. 2018 planes), so ``c`` sits at
    ``meta["points"]["c"]``. Without ``c`` direction 2 is a random direction orthogonal to direction 1 with the
    same norm (seeded), giving a plane that contains the segment a-b.
    ``meta["points"]`` holds the plane coordinates of the points.
    """
    params = _params_of(model)
    names, shapes = [k for k, _ in params], [p.shape for _, p in params]
    pa = _flat_of(a, names, shapes, "a").double()
    pb = _flat_of(b, names, shapes, "b").double().to(pa.device)
    u = pb - pa
    un = u.norm()
    if un == 0:
        raise ValueError("b must differ from a: the points coincide")
    e1 = u / un
    points = {"a": [0.0, 0.0], "b": [1.0, 0.0]}
    if c is not None:
        pc = _flat_of(c, names, shapes, "c").double().to(pa.device)
        w = pc - pa
        v = w - (w @ e1) * e1
        vn = v.norm()
        if vn <= 1e-12 * max(1.0, float(w.norm())):
            raise ValueError("c must not lie on the line through a and b")
        d2 = v / vn * un
        points["c"] = [float((w @ e1) / un), float(vn / un)]
    else:
        g = torch.Generator(device="cpu").manual_seed(int(check_int("seed", seed, 0)))
        r = torch.randn(u.shape[0], generator=g, dtype=torch.float64).to(pa.device)
        r = r - (r @ e1) * e1
        d2 = r / r.norm() * un
    dtype = params[0][1].dtype
    V = torch.stack([u, d2]).to(dtype)
    return Directions(V, names, shapes, "plane", pa.to(dtype),
                      meta={"points": points, "distance_ab": float(un), "seed": int(seed) if c is None else -1})
