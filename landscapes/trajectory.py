"""Project recorded trajectories onto a plane (PCA plane or any directions) for overlaying on a landscape."""
from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from .directions import Directions, _as_list, _trajectory, pca, sketch

__all__ = ["project"]


def _label(rec, i):
    if isinstance(rec, xr.Dataset):
        opt = rec.attrs.get("optimizer")
        return str(opt) if opt else f"run {i}"
    if hasattr(rec, "record"):
        return _label(rec.record, i)
    return f"trajectory {i}"


def _project_one(rec, directions: Directions, center, var, dims, i, label=None):
    X, kind, seed, dim, n_params = _trajectory(rec, var)
    D, c = directions.vectors.double().cpu(), center
    if kind == "countsketch":
        if directions.space == "params":
            sk = sketch(Directions(directions.vectors, directions.names, directions.shapes, directions.kind,
                                   None if c is None else torch.as_tensor(c)), seed, dim)
            D, c = sk.vectors.double(), sk.center
        else:
            meta = directions.meta
            if (meta.get("sketch_seed"), meta.get("sketch_dim")) != (seed, dim):
                raise ValueError("directions were sketched with a different seed/dim than this record's trajectory "
                                 f"({meta.get('sketch_seed')}/{meta.get('sketch_dim')} vs {seed}/{dim})")
    elif directions.space != "params":
        raise ValueError("sketched directions cannot project an exact trajectory; use exact directions")
    if D.shape[1] != X.shape[1]:
        raise ValueError(f"directions have {D.shape[1]} entries but the trajectory has {X.shape[1]} coordinates "
                         "(mismatched directions)")
    c = np.zeros(X.shape[1]) if c is None else np.asarray(torch.as_tensor(c).double().cpu()).reshape(-1)
    Xc = torch.from_numpy(X - c[None, :])
    # least squares coordinates: θ_t - center ≈ Σ_i coef_i d_i (exact dot products when D is orthonormal)
    G = D @ D.T
    coef = torch.linalg.solve(G, D @ Xc.T).T
    resid = (Xc - coef @ D).norm(dim=1)
    steps = None
    if isinstance(rec, xr.Dataset) or hasattr(rec, "record"):
        ds = rec if isinstance(rec, xr.Dataset) else rec.record
        steps = ds[var].dims[0]
        step_vals = ds[var][steps].values
    else:
        step_vals = np.arange(X.shape[0])
    out = xr.DataArray(coef.numpy(), dims=("trajectory_step", "component"),
                       coords={"trajectory_step": step_vals, "component": list(dims)}, name="projection")
    out.coords["off_plane"] = ("trajectory_step", resid.numpy())
    out.attrs.update({"label": label or _label(rec, i), "trajectory_kind": kind,
                      "description": "coordinates of θ_t - center along the directions (least squares, direction "
                                     "units); off_plane is the distance of θ_t from the plane"})
    return out


def project(records, directions: Directions | None = None, center=None, var: str = "trajectory",
            labels=None, dims=None):
    """Project one or several recorded trajectories onto a plane.

    records: a record (``run.record`` with a ``wb.probes.Trajectory`` variable), a ``Run``, an array
      (steps, n_params), or a list of them.
    directions: the plane (any ``Directions``); ``None`` = the PCA plane of all the given records
      (:func:`landscapes.directions.pca`, centered at the first record's final point).
    center: the plane's origin; default the directions' center (PCA/plane), else the origin of parameter space
      is not meaningful, so pass the landscape's center (``landscapes.plot`` does this for you).
    Count-sketched records are handled by sketching exact directions with the record's seed/dim.

    Returns a DataArray (trajectory_step, component) of coordinates in direction units (plus ``off_plane``,
    the distance from the plane) for one record, or a list of them for several.
    """
    recs = _as_list(records)
    single = not isinstance(records, (list, tuple))
    if directions is None:
        directions = pca(recs, n=2, var=var)
    if not isinstance(directions, Directions):
        raise ValueError(f"directions must be a landscapes Directions; got {type(directions).__name__}")
    if center is None:
        center = directions.center
    if center is None:
        raise ValueError("center is needed: these directions have no center of their own (pass the landscape's "
                         "center, e.g. flat parameters of the model the surface was computed around)")
    if dims is None:
        dims = ("alpha", "beta", "gamma")[:len(directions)] if len(directions) <= 3 else \
            [f"d{i}" for i in range(len(directions))]
    if labels is not None and len(labels) != len(recs):
        raise ValueError(f"labels must have one entry per record ({len(recs)}); got {len(labels)}")
    if isinstance(center, torch.nn.Module):
        from ._core import flat_params
        center = flat_params(center)
    out = [_project_one(r, directions, center, var, dims, i, None if labels is None else labels[i])
           for i, r in enumerate(recs)]
    return out[0] if single else out
