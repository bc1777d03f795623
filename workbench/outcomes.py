"""Outcome summaries of runs and sweeps, computed from their records.

    import workbench as wb
    from workbench.outcomes import summarize, largest_stable_lr
    rec = wb.sweep("quadratic", {"lr": [0.05, 0.1, 0.19, 0.21], "seed": [0, 1]}, ...)
    out = summarize(rec, target_loss=1e-3)     # final_loss, best_loss, steps_to_target, diverged_at, ...
    largest_stable_lr(rec, dim="lr")           # over the other grid dimensions

Every function takes a single run's record (dimension ``step``) or a sweep's (grid dimensions + ``step``) and
returns values over the record's non-step dimensions.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["summarize", "largest_stable_lr", "last_valid", "OUTCOMES"]

OUTCOMES = ("final_loss", "best_loss", "best_step", "steps_to_target", "diverged", "diverged_at",
            "final_sharpness", "sharpness_ratio")


def _status(record: xr.Dataset) -> xr.DataArray:
    if "status" in record.data_vars:
        return record["status"].astype(str)
    return xr.DataArray(str(record.attrs.get("status", "unknown")))


def last_valid(da: xr.DataArray, dim: str) -> xr.DataArray:
    """The last non-NaN value along ``dim`` (NaN where there is none). inf counts as a value."""
    valid = ~np.isnan(da)
    n = da.sizes[dim]
    # index of the last valid entry: n - 1 - argmax over the reversed mask
    rev = valid.isel({dim: slice(None, None, -1)})
    idx = (n - 1 - rev.argmax(dim)).where(valid.any(dim), 0).astype(int)
    return da.isel({dim: idx}).where(valid.any(dim)).drop_vars(dim, errors="ignore")


def summarize(record: xr.Dataset, target_loss: float | None = None, loss: str = "loss") -> xr.Dataset:
    """Per-run outcomes from a run or sweep record.

    * ``final_loss``: the last recorded training loss (inf where the run blew up to inf);
    * ``best_loss`` / ``best_step``: the smallest finite loss and the step it was reached at;
    * ``steps_to_target``: the first step whose loss is at most ``target_loss`` (NaN if never; only with a
      ``target_loss``);
    * ``diverged`` (bool) and ``diverged_at``: the status is "diverged", and the step it diverged at (NaN otherwise);
    * ``final_sharpness`` / ``sharpness_ratio``: the last finite ``sharpness`` and ``sharpness_ratio`` =
      sharpness / stability threshold (2/lr for GD) where the record has a Sharpness probe (NaN otherwise).
    """
    if not isinstance(record, xr.Dataset):
        raise ValueError(f"record must be an xarray.Dataset (a run's or a sweep's record); got "
                         f"{type(record).__name__}")
    if loss not in record.data_vars or "step" not in record[loss].dims:
        raise ValueError(f"loss={loss!r} is not a per-step variable of the record; per-step variables: "
                         f"{sorted(v for v in record.data_vars if 'step' in record[v].dims)}")
    if target_loss is not None and not (isinstance(target_loss, (int, float)) and np.isfinite(target_loss)):
        raise ValueError(f"target_loss must be a finite number; got {target_loss!r}")
    L = record[loss].astype(float)
    steps = record["step"]
    out = xr.Dataset()
    out["final_loss"] = last_valid(L, "step")
    finite = L.where(np.isfinite(L))
    has = finite.notnull().any("step")
    out["best_loss"] = finite.min("step", skipna=True).where(has)
    out["best_step"] = steps.isel(step=finite.fillna(np.inf).argmin("step")).drop_vars("step").where(has)
    if target_loss is not None:
        hit = finite <= target_loss
        first = hit.argmax("step")
        out["steps_to_target"] = steps.isel(step=first).drop_vars("step").where(hit.any("step"))
        out["steps_to_target"].attrs["target_loss"] = float(target_loss)
    status = _status(record)
    out["diverged"] = status == "diverged"
    if "diverged_at" in record.data_vars:
        at = record["diverged_at"].astype(float)
    else:
        at = xr.DataArray(float(record.attrs.get("diverged_at", -1)))
    out["diverged_at"] = at.where(out["diverged"] & (at >= 0))
    for var, name in (("sharpness", "final_sharpness"), ("sharpness_ratio", "sharpness_ratio")):
        if var in record.data_vars:
            da = record[var]
            sdim = next(d for d in da.dims if d.endswith("_step"))
            out[name] = last_valid(da.where(np.isfinite(da)), sdim)
        else:
            out[name] = xr.full_like(out["final_loss"], np.nan)
    docs = {"final_loss": "last recorded training loss", "best_loss": "smallest finite training loss",
            "best_step": "step of the smallest finite loss", "steps_to_target": "first step with loss <= target",
            "diverged": "run status is diverged", "diverged_at": "step at which the run diverged",
            "final_sharpness": "last finite top Hessian eigenvalue",
            "sharpness_ratio": "last sharpness / stability threshold (2/lr for GD)"}
    for k, v in docs.items():
        if k in out:
            out[k].attrs["long_name"] = v
    return out


def largest_stable_lr(record: xr.Dataset, dim: str = "lr") -> xr.DataArray:
    """The largest learning rate below the stability boundary along grid dimension ``dim``.

    Scanning ``dim`` from small to large, a cell is unstable when its status is "diverged" or its final loss is
    not finite; the answer is the last stable value before the first unstable one (NaN when the smallest is
    already unstable), over the record's other non-step dimensions. Cells that crashed or are missing are not
    evidence either way and are skipped. Taking the boundary, not the largest stable value anywhere, keeps a lucky
    stable cell beyond a divergent one (possible with catapults) from being reported as stable.
    """
    if not isinstance(record, xr.Dataset) or dim not in record.dims:
        raise ValueError(f"dim={dim!r} must be a grid dimension of the sweep record; dims: "
                         f"{sorted(record.dims) if isinstance(record, xr.Dataset) else type(record).__name__}")
    rec = record.sortby(dim)
    status = _status(rec)
    final = last_valid(rec["loss"].astype(float), "step") if "loss" in rec.data_vars else None
    unstable = status == "diverged"
    if final is not None:
        unstable = unstable | ~np.isfinite(final)
    ignore = status.isin(["crashed", "missing"])
    vals = rec[dim].values.astype(float)
    uns = unstable.where(~ignore, False).transpose(dim, ...)
    stable_known = (~unstable & ~ignore).transpose(dim, ...)
    u, s = uns.values, stable_known.values
    out = np.full(u.shape[1:], np.nan)
    for idx in np.ndindex(*u.shape[1:]):
        best = np.nan
        for j in range(u.shape[0]):
            if u[(j, *idx)]:
                break
            if s[(j, *idx)]:
                best = vals[j]
        out[idx] = best
    other = [d for d in uns.dims if d != dim]
    res = xr.DataArray(out, dims=other, coords={d: rec[d] for d in other})
    res.attrs["long_name"] = f"largest stable {dim} (below the first diverged value)"
    return res
