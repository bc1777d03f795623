"""The space views: where the optimizer goes, drawn on the surface it moves over (plain plotly dicts).

* 2D test functions: :func:`function_background` (built once per problem: the heatmap, the minima and the raw grid),
  :func:`function_path_figure` (the heatmap with the path), :func:`surface3d_figure` (the same grid as a rotatable
  3D surface with the path lying on it; :func:`path_heights` gives the path's exact heights).
* networks: :func:`plane_figure` (the loss on the PCA plane of the trajectory, with projected paths) and
  :func:`plane_surface3d_figure` (the same as a 3D surface).
* replay: ``upto=k`` on the path views draws the live path only up to ``points[k]`` and puts a large marker
  labelled ``step N`` there (``N = steps[k]`` when ``steps`` is given, else ``k``); ``upto=None`` is the whole path.
* :func:`figures_html`: every figure on one self-contained page.

Every string that reaches a figure goes through :func:`widgets.safe.plot_text`.
"""
from __future__ import annotations

import numbers

import numpy as np

from .plot_style import MAX_POINTS, PIN_COLORS, PIN_PREFIX, PIN_SYMBOLS, _layout
from .safe import plot_text

__all__ = ["function_background", "function_path_figure", "path_heights", "surface3d_figure", "plane_figure",
           "plane_surface3d_figure", "figures_html"]

Z_OFFSET = 1e-3             # the colour/height transform of a test function: log10(f − min + Z_OFFSET)
CAMERA = {"eye": {"x": 1.45, "y": -1.45, "z": 1.05}, "up": {"x": 0, "y": 0, "z": 1},   # from the front-left,
          "center": {"x": 0, "y": 0, "z": -0.1}}                                     # a little above
LIVE = "#ff4136"


# -- replay helpers ----------------------------------------------------------------------------------------
def _upto(upto, n: int) -> int:
    """The replay index ``upto`` clamped to ``[0, n - 1]`` (TypeError unless a number)."""
    if isinstance(upto, bool) or not isinstance(upto, numbers.Real) or not np.isfinite(upto):
        raise TypeError(f"upto={upto!r}: a step index (an integer) or None")
    return min(max(int(upto), 0), n - 1)


def _step_label(steps, k: int) -> str:
    if steps is not None and len(steps) > k:
        return f"step {int(np.asarray(steps)[k])}"
    return f"step {k}"


def _now_marker(x, y, label, z=None):
    """The replay's current point: a big ringed marker with its ``step N`` label."""
    tr = {"type": "scatter" if z is None else "scatter3d", "x": [float(x)], "y": [float(y)], "mode": "markers+text",
          "name": plot_text(label), "text": [plot_text(label)], "textposition": "top center",
          "textfont": {"size": 13, "color": "white" if z is None else "black"},
          "marker": {"size": 18 if z is None else 9, "color": "#ffdc00", "symbol": "circle",
                     "line": {"color": "black", "width": 2}}}
    if z is not None:
        tr["z"] = [float(z)]
    return tr


def _thin_idx(n: int):
    return np.unique(np.linspace(0, n - 1, MAX_POINTS).astype(int)) if n > MAX_POINTS else np.arange(n)


# -- 2D test functions -------------------------------------------------------------------------------------
def function_path_figure(background: dict, points, events=(), steps=None, pins=(), upto=None):
    """The 2D test function's heatmap (``background``, built once per problem) with the live path as the last
    trace; hot swaps are marked on the path as diamonds; pinned paths are dashed. ``upto``: replay (module doc);
    the marker is then the last trace, after the path, and swaps after the point are not marked."""
    fig = {"data": list(background["data"]), "layout": dict(background["layout"])}
    for i, pin in enumerate(pins):
        pts = pin.get("path")
        if pts is not None and len(pts):
            fig["data"].append({"type": "scatter", "x": pts[:, 0].copy(), "y": pts[:, 1].copy(),
                                "mode": "lines+markers", "name": plot_text(f"{PIN_PREFIX}{pin['label']}"),
                                "line": {"color": PIN_COLORS[i % len(PIN_COLORS)], "width": 2.5, "dash": "dash"},
                                "marker": {"symbol": PIN_SYMBOLS[i % len(PIN_SYMBOLS)], "size": 8,
                                           "maxdisplayed": 25, "color": PIN_COLORS[i % len(PIN_COLORS)]}})
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    now = None
    if upto is not None and len(pts):
        k = _upto(upto, len(pts))
        pts = pts[:k + 1]
        now = _now_marker(pts[k, 0], pts[k, 1], _step_label(steps, k))
    if steps is not None and len(events):
        steps = np.asarray(steps)
        xs, ys, txt = [], [], []
        for ev in events:
            j = np.searchsorted(steps, ev.get("step", 0))
            if j < len(pts):
                xs.append(float(pts[j, 0]))
                ys.append(float(pts[j, 1]))
                txt.append(plot_text(f"step {ev.get('step')}: ↦ {ev.get('optimizer')}"))
        if xs:
            fig["data"].append({"type": "scatter", "x": xs, "y": ys, "mode": "markers", "name": "hot swap",
                                "text": txt, "marker": {"symbol": "diamond", "size": 11, "color": "#ffdc00",
                                                        "line": {"color": "black", "width": 1}}})
    if len(pts) > MAX_POINTS:
        idx = np.unique(np.linspace(0, len(pts) - 1, MAX_POINTS).astype(int))
        pts = pts[idx]
    fig["data"].append({"type": "scatter", "x": pts[:, 0].copy(), "y": pts[:, 1].copy(),
                        "mode": "lines+markers" if len(pts) <= 300 else "lines", "name": "path", "line": {"color": "#ff4136", "width": 2},
                        "marker": {"size": 4}})
    if now is not None:
        fig["data"].append(now)
    return fig


def function_background(problem, n: int = 100) -> dict:
    """Heatmap of log10(f − min + 1e-3) over the problem's domain with its minima (a plain dict, built once).

    ``background["grid"]`` keeps what the 3D view needs, free of callables: ``x`` (n,), ``y`` (n,), ``z`` (n, n;
    rows = y) the log10 grid of the heatmap, ``fmin`` (the grid's min of f, the transform's offset), ``offset``
    (1e-3), ``minima`` ([(x, y, z)]) and ``domain``, ``name``."""
    import torch
    (x0, x1), (y0, y1) = problem.domain
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    X, Y = np.meshgrid(xs, ys)
    with torch.no_grad():
        Z = problem.function(torch.tensor(np.stack([X, Y], -1), dtype=torch.float64)).numpy()
    zlog = np.log10(Z - Z.min() + Z_OFFSET)
    # a heatmap, not a contour trace: plotly.js re-traces contour lines on every live redraw; a heatmap is an image
    data = [{"type": "heatmap", "x": xs, "y": ys, "z": zlog, "colorscale": "Viridis",
             "zsmooth": "fast", "colorbar": {"title": {"text": "log10(f − min)"}}, "name": "f", "hoverinfo": "skip"}]
    if problem.minima:
        mx, my = zip(*problem.minima)
        data.append({"type": "scatter", "x": list(mx), "y": list(my), "mode": "markers", "name": "minima",
                     "marker": {"symbol": "star", "size": 14, "color": "white",
                                "line": {"color": "black", "width": 1}}})
    layout = _layout(f"{problem.name}: optimizer path on the exact surface", "y", xtitle="x")
    layout["xaxis"]["range"] = [x0, x1]
    layout["yaxis"]["range"] = [y0, y1]
    grid = {"x": xs, "y": ys, "z": zlog, "fmin": float(Z.min()), "offset": Z_OFFSET, "minima": [],
            "domain": ((float(x0), float(x1)), (float(y0), float(y1))), "name": str(problem.name)}
    bg = {"data": data, "layout": layout, "grid": grid}
    if problem.minima:
        mz = path_heights(problem, np.asarray(problem.minima, dtype=float), bg)
        grid["minima"] = [(float(a), float(b), float(c)) for (a, b), c in zip(problem.minima, mz)]
    return bg


def path_heights(problem, points, background: dict) -> np.ndarray:
    """The height of each point on :func:`surface3d_figure`'s surface, exactly: log10(f(p) − fmin + 1e-3) with
    the ``fmin`` of ``background["grid"]`` (so a path point on a grid node has the node's z). A point below
    everything the grid saw (f(p) − fmin + 1e-3 ≤ 0, e.g. the saddle running off) sits on the surface's floor;
    a non-finite f(p) is NaN (a gap in the line). Computed in float64."""
    import torch
    g = background["grid"]
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if not len(pts):
        return np.empty(0)
    with torch.no_grad():
        f = np.asarray(problem.function(torch.tensor(pts, dtype=torch.float64)).numpy(), dtype=float)
    arg = f - g["fmin"] + g["offset"]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.log10(np.where(arg > 0, arg, np.nan))
    floor = np.nanmin(g["z"]) if np.isfinite(g["z"]).any() else np.nan
    return np.where(np.isfinite(f) & ~(arg > 0), floor, np.where(np.isfinite(z), z, np.nan))


def _bilinear(xs, ys, Z, pts) -> np.ndarray:
    """Bilinear interpolation of the grid ``Z`` (rows = ys, columns = xs, both ascending) at ``pts`` (n, 2); exact
    at the nodes; NaN outside the grid."""
    xs, ys, Z = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), np.asarray(Z, dtype=float)
    pts = np.asarray(pts, dtype=float).reshape(-1, 2)
    out = np.full(len(pts), np.nan)
    if len(xs) < 2 or len(ys) < 2 or not len(pts):
        return out
    px, py = pts[:, 0], pts[:, 1]
    ok = np.isfinite(px) & np.isfinite(py) & (px >= xs[0]) & (px <= xs[-1]) & (py >= ys[0]) & (py <= ys[-1])
    i = np.clip(np.searchsorted(xs, px[ok], side="right") - 1, 0, len(xs) - 2)
    j = np.clip(np.searchsorted(ys, py[ok], side="right") - 1, 0, len(ys) - 2)
    tx = (px[ok] - xs[i]) / (xs[i + 1] - xs[i])
    ty = (py[ok] - ys[j]) / (ys[j + 1] - ys[j])
    acc = np.zeros(ok.sum())
    for w, zz in (((1 - tx) * (1 - ty), Z[j, i]), (tx * (1 - ty), Z[j, i + 1]), ((1 - tx) * ty, Z[j + 1, i]),
                  (tx * ty, Z[j + 1, i + 1])):
        acc = acc + np.where(w == 0, 0.0, w * zz)          # a NaN neighbour with weight 0 does not leak in
    out[ok] = acc
    return out


def _layout3d(title, xtitle, ytitle, ztitle, ranges=None):
    lay = {"paper_bgcolor": "white", "margin": {"l": 0, "r": 0, "t": 32, "b": 0},
           "title": {"text": plot_text(title), "font": {"size": 14}}, "legend": {"orientation": "h", "y": -0.05},
           "uirevision": "keep", "showlegend": True,
           "scene": {"xaxis": {"title": {"text": plot_text(xtitle)}, "exponentformat": "power"},
                     "yaxis": {"title": {"text": plot_text(ytitle)}, "exponentformat": "power"},
                     "zaxis": {"title": {"text": plot_text(ztitle)}, "exponentformat": "power"},
                     "camera": {k: dict(v) for k, v in CAMERA.items()}, "aspectmode": "manual",
                     "aspectratio": {"x": 1, "y": 1, "z": 0.6}, "uirevision": "keep"}}
    if ranges is not None:
        lay["scene"]["xaxis"]["range"] = list(ranges[0])
        lay["scene"]["yaxis"]["range"] = list(ranges[1])
    return lay


def _line3d(xy, z, name, color, dash=None, width=5, symbol=None):
    tr = {"type": "scatter3d", "x": xy[:, 0].copy(), "y": xy[:, 1].copy(), "z": np.asarray(z, dtype=float).copy(),
          "mode": "lines+markers" if len(xy) <= 300 else "lines", "name": plot_text(name),
          "line": {"color": color, "width": width}, "marker": {"size": 2.5, "color": color}}
    if dash:
        tr["line"]["dash"] = dash
    if symbol:
        tr["marker"]["symbol"] = symbol
    return tr


def _start_end3d(xy, z, end=True):
    k = [0, len(xy) - 1] if end else [0]
    return {"type": "scatter3d", "x": [float(xy[i, 0]) for i in k], "y": [float(xy[i, 1]) for i in k],
            "z": [float(z[i]) for i in k], "mode": "markers+text", "name": "start / end" if end else "start",
            "text": ["start", "end"][:len(k)], "textposition": "top center",
            "marker": {"symbol": ["circle", "square"][:len(k)], "size": 6, "color": ["#2ca02c", "#d62728"][:len(k)],
                       "line": {"color": "white", "width": 1}}}


def _path3d(data, pts, z, steps, upto, name, events=()):
    """The live path, its start/end (start and the ``step N`` marker when replaying) and its hot swaps."""
    if not len(pts):
        return
    now = None
    if upto is not None:
        k = _upto(upto, len(pts))
        pts, z = pts[:k + 1], z[:k + 1]
        now = _now_marker(pts[k, 0], pts[k, 1], _step_label(steps, k), z=z[k])
    data.append(_start_end3d(pts, z, end=now is None))
    if steps is not None and len(events):
        st = np.asarray(steps)
        js = [int(np.searchsorted(st, ev.get("step", 0))) for ev in events]
        keep = [(j, ev) for j, ev in zip(js, events) if j < len(pts)]
        if keep:
            data.append({"type": "scatter3d", "x": [float(pts[j, 0]) for j, _ in keep],
                         "y": [float(pts[j, 1]) for j, _ in keep], "z": [float(z[j]) for j, _ in keep],
                         "mode": "markers", "name": "hot swap",
                         "text": [plot_text(f"step {ev.get('step')}: ↦ {ev.get('optimizer')}") for _, ev in keep],
                         "marker": {"symbol": "diamond", "size": 6, "color": "#ffdc00",
                                    "line": {"color": "black", "width": 1}}})
    idx = _thin_idx(len(pts))
    data.append(_line3d(pts[idx], z[idx], name, LIVE))
    if now is not None:
        data.append(now)


def surface3d_figure(background: dict, points=None, z=None, steps=None, upto=None, pins=(), events=()):
    """The 2D test function as a rotatable 3D surface: the grid of ``function_background(problem)["grid"]`` (the
    heatmap's log10(f − min + 1e-3), unchanged) with the optimizer path as a 3D line lying on it.

    ``points`` (n, 2) the path; ``z`` (n,) its heights, exact from ``path_heights(problem, points, background)``
    (when None, bilinear interpolation of the grid: equal at nodes, approximate between them); ``steps`` the
    path's training steps (``snap["path_steps"]``: the replay label and where the ``events``, hot swaps, sit);
    ``upto`` replay (module doc); ``pins``: pinned snapshots with ``path`` (and optionally ``path_z``, else
    interpolated), drawn dashed. Traces: surface, minima, pins, start/end, swaps, path, then the step marker."""
    g = background.get("grid") if isinstance(background, dict) else None
    if g is None:
        raise ValueError("background: no 'grid' in it; build it with widgets.views.function_background(problem)")
    data = [{"type": "surface", "x": np.asarray(g["x"], dtype=float), "y": np.asarray(g["y"], dtype=float),
             "z": np.asarray(g["z"], dtype=float), "colorscale": "Viridis", "opacity": 0.92, "name": "f",
             "colorbar": {"title": {"text": "log10(f − min)"}, "len": 0.7}, "showscale": True,
             "contours": {"z": {"show": True, "usecolormap": True, "project": {"z": True}, "width": 1}}}]
    if g.get("minima"):
        mx, my, mz = zip(*g["minima"])
        data.append({"type": "scatter3d", "x": list(mx), "y": list(my), "z": list(mz), "mode": "markers",
                     "name": "minima", "marker": {"symbol": "diamond-open", "size": 6, "color": "white",
                                                  "line": {"color": "black", "width": 1}}})
    for i, pin in enumerate(pins):
        pp = pin.get("path")
        if pp is None or not len(pp):
            continue
        pp = np.asarray(pp, dtype=float).reshape(-1, 2)
        pz = pin.get("path_z")
        pz = np.asarray(pz, dtype=float) if pz is not None and len(pz) == len(pp) else \
            _bilinear(g["x"], g["y"], g["z"], pp)
        idx = _thin_idx(len(pp))
        data.append(_line3d(pp[idx], pz[idx], f"{PIN_PREFIX}{pin['label']}", PIN_COLORS[i % len(PIN_COLORS)],
                            dash="dash", width=4))
    if points is not None:
        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        zz = np.asarray(z, dtype=float).reshape(-1) if z is not None else _bilinear(g["x"], g["y"], g["z"], pts)
        if len(zz) != len(pts):
            raise ValueError(f"z: {len(zz)} heights for {len(pts)} points; give one per point (path_heights)")
        _path3d(data, pts, zz, steps, upto, "path", events)
    layout = _layout3d(f"{g.get('name', 'f')}: optimizer path on the exact surface (3D)", "x", "y",
                       "log10(f − min + 10⁻³)", ranges=g.get("domain"))
    return {"data": data, "layout": layout}


# -- networks: the PCA plane of the trajectory -------------------------------------------------------------
def _plane_z(surf):
    """The plane's grid as shown: (alpha, beta, z with rows = beta, log10 where all positive, colour title)."""
    z = np.asarray(surf.values, dtype=float).T          # rows = beta
    zpos = z[np.isfinite(z)]
    zl = np.log10(np.clip(z, max(zpos.min(), 1e-12) if zpos.size and zpos.min() > 0 else 1e-12, None)) \
        if zpos.size and zpos.min() > 0 else z
    return (np.asarray(surf["alpha"].values, dtype=float), np.asarray(surf["beta"].values, dtype=float),
            np.asarray(zl, dtype=float), "log10 loss" if zl is not z else "loss")


def plane_figure(surf, paths, explained=None, title="loss on the PCA plane of the trajectory", upto=None,
                 steps=None):
    """A loss surface (xarray over alpha/beta, or None) as a heatmap with projected paths ``[(label, xy)]`` (the
    last one is the live run). ``upto``: replay of the last path (an index into its points; module doc): it is
    drawn up to ``xy[upto]``, only its start is marked, and the ``step N`` marker is the last trace (``steps``: the
    training step of each of its points, e.g. the record's ``trajectory_step``; else N is the index)."""
    data = []
    if surf is not None:
        a, b, zl, ztitle = _plane_z(surf)
        data.append({"type": "heatmap", "x": a, "y": b, "z": zl, "colorscale": "Viridis", "zsmooth": "best",
                     "colorbar": {"title": {"text": ztitle}}, "hoverinfo": "skip", "name": "loss"})
    paths = list(paths)
    now = None
    if upto is not None and paths and len(paths[-1][1]):
        label, xy = paths[-1]
        k = _upto(upto, len(xy))
        paths[-1] = (label, np.asarray(xy)[:k + 1])
        now = _now_marker(paths[-1][1][k, 0], paths[-1][1][k, 1], _step_label(steps, k))
    for i, (label, xy) in enumerate(paths):
        color = "#ff4136" if i == len(paths) - 1 else PIN_COLORS[i % len(PIN_COLORS)]
        data.append({"type": "scatter", "x": xy[:, 0].copy(), "y": xy[:, 1].copy(), "mode": "lines+markers",
                     "name": plot_text(label), "line": {"color": color, "width": 2}, "marker": {"size": 4}})
    if paths and len(paths[-1][1]):         # where the (live) path starts and ends, labelled (drawn under the
        xy = np.asarray(paths[-1][1], dtype=float)      # paths: the live path stays the last trace)
        k = [0] if now is not None else [0, -1]
        data.insert(1 if surf is not None else 0, {"type": "scatter", "x": [float(xy[i, 0]) for i in k],
                     "y": [float(xy[i, 1]) for i in k], "mode": "markers+text",
                     "name": "start / end" if now is None else "start",
                     "text": ["start", "end"][:len(k)], "textposition": ["top center", "bottom center"][:len(k)],
                     "textfont": {"color": "white", "size": 12},
                     "marker": {"symbol": ["circle", "square"][:len(k)], "size": 12,
                                "color": ["#2ca02c", "#d62728"][:len(k)], "line": {"color": "white", "width": 1.5}}})
    if now is not None:
        data.append(now)
    ev = "" if not explained else f" (explained variance {', '.join(f'{e:.0%}' for e in explained[:2])})"
    layout = _layout(title + ev, "PC 2", xtitle="PC 1")
    return {"data": data, "layout": layout}


def plane_surface3d_figure(surf, paths, explained=None, title="loss on the PCA plane of the trajectory (3D)",
                           upto=None, steps=None):
    """:func:`plane_figure` as a rotatable 3D surface: ``surf`` (xarray over alpha/beta, e.g. from
    ``runspec.compute_plane`` / ``ls.surface``; None gives None) with the projected paths ``[(label, xy)]`` (the
    last is the live run, earlier ones pinned runs, dashed) as 3D lines. A path's height is the **bilinear
    interpolation of the shown grid** (log10 loss where the loss is positive, as the heatmap): equal to the grid
    at its nodes, an approximation between them (the loss there was not evaluated); NaN outside the grid.
    ``upto``/``steps`` replay the last path as in :func:`plane_figure`."""
    if surf is None:
        return None
    a, b, zl, ztitle = _plane_z(surf)
    data = [{"type": "surface", "x": a, "y": b, "z": zl, "colorscale": "Viridis", "opacity": 0.92, "name": "loss",
             "colorbar": {"title": {"text": ztitle}, "len": 0.7}}]
    paths = list(paths)
    for i, (label, xy) in enumerate(paths[:-1]):
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        if len(xy):
            idx = _thin_idx(len(xy))
            data.append(_line3d(xy[idx], _bilinear(a, b, zl, xy[idx]), label, PIN_COLORS[i % len(PIN_COLORS)],
                                dash="dash", width=4))
    if paths:
        label, xy = paths[-1]
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        _path3d(data, xy, _bilinear(a, b, zl, xy), steps, upto, label)
    ev = "" if not explained else f" (explained variance {', '.join(f'{e:.0%}' for e in explained[:2])})"
    return {"data": data, "layout": _layout3d(title + ev, "PC 1", "PC 2", ztitle)}


def figures_html(figures: dict[str, dict], title: str = "workbench run") -> str:
    """One self-contained HTML page with every figure (plotly.js inlined once: opens offline)."""
    import plotly.io as pio
    parts = []
    first = True
    for name, fig in figures.items():
        if fig is None:
            continue
        parts.append(f"<h3>{_escape(name)}</h3>" + pio.to_html(fig, full_html=False, include_plotlyjs=first,
                                                      validate=False))
        first = False
    body = "\n".join(parts) if parts else "<p>no figures</p>"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{_escape(title)}</title></head>" \
           f"<body><h2>{_escape(title)}</h2>{body}</body></html>"


def _escape(s: str) -> str:
    from .safe import text
    return text(s)
