"""Plotly figures of landscapes: contour, 3D surface and 1D curves, with projected trajectories, a log-scale
option and one shared color scale across side-by-side surfaces."""
from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from workbench._validate import check_bool, check_choice

from .directions import Directions, _as_list, _trajectory
from .surface import lookup
from .trajectory import _label

__all__ = ["plot"]

_PALETTE = ["#e41a1c", "#ff7f00", "#f781bf", "#ffffff", "#00e5ff", "#a65628", "#984ea3", "#4daf4a"]


def _xyz(da: xr.DataArray):
    """(x name, x values, y name, y values, z[y, x]) for a 2D landscape."""
    d0, d1 = da.dims
    if (d0, d1) == ("y", "x"):
        return "x", da["x"].values, "y", da["y"].values, da.values
    return d0, da[d0].values, d1, da[d1].values, da.values.T


def _is_projection(obj) -> bool:
    return isinstance(obj, xr.DataArray) and "component" in obj.dims


def _trajectories(da: xr.DataArray, trajectory, directions, center, labels):
    """List of (label, x, y) in the landscape's coordinates."""
    if trajectory is None:
        return []
    items = trajectory if isinstance(trajectory, (list, tuple)) else [trajectory]
    out = []
    for i, item in enumerate(items):
        label = labels[i] if labels is not None and i < len(labels) else None
        if _is_projection(item):
            out.append((label or item.attrs.get("label", f"trajectory {i}"), item.values[:, 0], item.values[:, 1]))
            continue
        if da.attrs.get("kind") == "function":       # exact path of a 2D test function: θ_t itself
            X = _trajectory(item)[0]
            if X.shape[1] != 2:
                raise ValueError("trajectory of a 2D function problem must have 2 coordinates per snapshot")
            out.append((label or _label(item, i), X[:, 0], X[:, 1]))
            continue
        dirs, c = directions, center
        if dirs is None:
            found = lookup(da)
            if found is None:
                raise ValueError("directions are needed to project the trajectory onto this landscape (it is not "
                                 "in this process's cache of recent landscapes): pass directions=... and center=...")
            dirs, c = found
        elif c is None:
            c = dirs.center
            if c is None:
                raise ValueError("center is needed with directions that have no center of their own")
        from .trajectory import project
        proj = project(item, dirs, center=c)
        out.append((label or proj.attrs.get("label", _label(item, i)), proj.values[:, 0], proj.values[:, 1]))
    return out


def _zvals(z, log):
    z = np.asarray(z, dtype=np.float64)
    if not log:
        return z
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = z[z > 0]
        floor = pos.min() if pos.size else 1e-12
        return np.log10(np.where(z > 0, z, floor))


def plot(surf, trajectory=None, *, kind: str = "auto", log: bool = False, directions: Directions | None = None,
         center=None, quantity: str = "loss", titles=None, labels=None, colorscale: str = "Viridis",
         zrange=None, ncontours: int = 30, height: int | None = None, width: int | None = None):
    """A plotly Figure of one landscape or several side by side.

    surf: a DataArray from ``landscapes.surface`` / ``line`` / ``function_surface`` / ``linear_path``, or a list of
      them (drawn side by side with ONE color scale, so colors compare across panels).
    trajectory: run record(s) (``run.record`` with a Trajectory probe), Runs, arrays (steps, n) or projections
      from ``landscapes.project``; projected onto the landscape's plane (directions and center are looked up from
      the landscape, or pass ``directions=``/``center=``). For 2D test functions the exact path θ_t is drawn.
    kind: "contour" (default for 2D), "surface" (3D), "heatmap"; 1D landscapes are line plots.
    log: log10 color/height scale (1D: log y axis). quantity: "loss" or a metric coordinate, e.g. "accuracy".
    zrange: (lo, hi) of the color scale; default the min/max over all panels.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    check_choice("kind", kind, ["auto", "contour", "surface", "heatmap"])
    log = check_bool("log", log)
    surfs = list(surf) if isinstance(surf, (list, tuple)) else [surf]
    if not surfs:
        raise ValueError("surf must be a landscape DataArray or a non-empty list of them")
    for s in surfs:
        if not isinstance(s, xr.DataArray) or s.ndim not in (1, 2):
            raise ValueError("surf must be a 1D or 2D xarray.DataArray from landscapes.surface/line/function_surface")
    dims = {s.ndim for s in surfs}
    if len(dims) > 1:
        raise ValueError("surf: cannot mix 1D and 2D landscapes in one figure")
    vals = []
    for s in surfs:
        if quantity != "loss":
            if quantity not in s.coords:
                raise ValueError(f"quantity={quantity!r} is not on this landscape; available: "
                                 f"{['loss'] + [c for c in s.coords if c not in s.dims]}")
            vals.append(s.coords[quantity])
        else:
            vals.append(s)
    if titles is not None and len(titles) != len(surfs):
        raise ValueError(f"titles must have one entry per landscape ({len(surfs)}); got {len(titles)}")

    if dims == {1}:
        fig = go.Figure()
        for i, (s, v) in enumerate(zip(surfs, vals)):
            d = s.dims[0]
            name = titles[i] if titles else s.attrs.get("path", s.attrs.get("direction_kind", f"line {i}"))
            fig.add_trace(go.Scatter(x=s[d].values, y=np.asarray(v.values, dtype=float), mode="lines", name=str(name)))
            if trajectory is not None:
                raise ValueError("trajectory overlays need a 2D landscape (use landscapes.surface)")
        fig.update_layout(xaxis_title=s.dims[0], yaxis_title=quantity, yaxis_type="log" if log else "linear",
                          template="plotly_white", height=height or 420, width=width)
        return fig

    kind = "contour" if kind == "auto" else kind
    zs = [_zvals(v.values if v.dims == s.dims else v.transpose(*s.dims).values, log) for s, v in zip(surfs, vals)]
    finite = np.concatenate([z[np.isfinite(z)].ravel() for z in zs]) if zs else np.array([0.0])
    if zrange is None:
        zmin, zmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    else:
        zmin, zmax = (float(np.log10(zrange[0])), float(np.log10(zrange[1]))) if log else map(float, zrange)
    if zmax <= zmin:
        zmax = zmin + 1e-12
    n = len(surfs)
    spec = [{"type": "scene"} if kind == "surface" else {"type": "xy"} for _ in range(n)]
    fig = make_subplots(rows=1, cols=n, specs=[spec], subplot_titles=titles, horizontal_spacing=0.06)
    ztitle = f"log10 {quantity}" if log else quantity
    for i, (s, z) in enumerate(zip(surfs, zs)):
        xn, xv, yn, yv, _ = _xyz(s)
        zz = z if s.dims == ("y", "x") else z.T
        common = dict(x=xv, y=yv, z=zz, colorscale=colorscale, showscale=(i == n - 1),
                      colorbar=dict(title=ztitle))
        if kind == "contour":
            tr = go.Contour(**common, zmin=zmin, zmax=zmax, ncontours=ncontours, contours=dict(coloring="heatmap"),
                            line=dict(width=0.5))
        elif kind == "heatmap":
            tr = go.Heatmap(**common, zmin=zmin, zmax=zmax)
        else:
            tr = go.Surface(**common, cmin=zmin, cmax=zmax)
        fig.add_trace(tr, row=1, col=i + 1)
        trajs = _trajectories(s, trajectory, directions, center, labels)
        for j, (lab, tx, ty) in enumerate(trajs):
            color = _PALETTE[j % len(_PALETTE)]
            if kind == "surface":
                tz = _interp(s, xn, yn, tx, ty, log, quantity)
                fig.add_trace(go.Scatter3d(x=tx, y=ty, z=tz, mode="lines+markers", name=lab,
                                           line=dict(color=color, width=5), marker=dict(size=2),
                                           showlegend=(i == 0)), row=1, col=i + 1)
            else:
                fig.add_trace(go.Scatter(x=tx, y=ty, mode="lines+markers", name=lab, marker=dict(size=4),
                                         line=dict(color=color, width=2), showlegend=(i == 0)), row=1, col=i + 1)
                fig.add_trace(go.Scatter(x=[tx[-1]], y=[ty[-1]], mode="markers", showlegend=False,
                                         marker=dict(symbol="star", size=12, color=color, line=dict(width=1))),
                              row=1, col=i + 1)
        if s.attrs.get("kind") == "function" and s.attrs.get("minima") and kind != "surface":
            m = np.asarray(s.attrs["minima"], dtype=float).reshape(-1, 2)
            fig.add_trace(go.Scatter(x=m[:, 0], y=m[:, 1], mode="markers", name="minima", showlegend=(i == 0),
                                     marker=dict(symbol="x", size=10, color="black")), row=1, col=i + 1)
        if kind != "surface":
            fig.update_xaxes(title_text=_axis_title(s, xn), row=1, col=i + 1, range=[float(xv[0]), float(xv[-1])])
            fig.update_yaxes(title_text=_axis_title(s, yn), row=1, col=i + 1, range=[float(yv[0]), float(yv[-1])])
    fig.update_layout(template="plotly_white", height=height or 460, width=width or max(480, 460 * n),
                      legend=dict(orientation="h", y=-0.18))
    if kind == "surface":
        for i in range(n):
            key = "scene" if i == 0 else f"scene{i + 1}"
            fig.layout[key].update(zaxis=dict(title=ztitle, range=[zmin, zmax]))
    return fig


def _axis_title(s, name):
    nrm = s.attrs.get(f"{name}_norm")
    return f"{name} (‖d‖ = {nrm:.3g})" if nrm is not None else name


def _interp(s, xn, yn, tx, ty, log, quantity):
    src = s if quantity == "loss" else s.coords[quantity].reset_coords(drop=True)
    v = src.interp({xn: xr.DataArray(tx, dims="p"), yn: xr.DataArray(ty, dims="p")}).values
    return _zvals(v, log)
