"""Figure builders for the live views: plain plotly JSON dicts built from a *snapshot* of a run.

A snapshot is a dict of numpy arrays taken either from a live :class:`workbench.Run` (:func:`snapshot_run`) or from
a saved record (:func:`snapshot_record`), so the same views show a live run, a pinned run and a loaded record.
Figures are plain dicts (no plotly.graph_objects validation on every redraw) and long series are thinned.

This module holds the curve views (loss, accuracy, sharpness, eigenvalues, spectrum, subspace, norms) and is the one
to import: it re-exports the snapshots (:mod:`widgets.snapshots`), the shared style and ticks
(:mod:`widgets.plot_style`) and the 2D/3D space views and replay (:mod:`widgets.views_space`).
"""
from __future__ import annotations

import numpy as np

from .plot_style import (_AXIS, MAX_POINTS, PIN_COLORS, PIN_PREFIX, PIN_SYMBOLS, _layout,  # noqa: F401
                         _sup, log_ticks, needs_symlog, plotly_template, symlog, symlog_ticks, thin)
from .safe import plot_text
from .snapshots import RunTracker, _floats, snapshot_record, snapshot_run  # noqa: F401
from .views_space import (_escape, figures_html, function_background, function_path_figure,  # noqa: F401
                          path_heights, plane_figure, plane_surface3d_figure, surface3d_figure)

__all__ = ["thin", "snapshot_run", "snapshot_record", "loss_figure", "accuracy_figure", "sharpness_figure",
           "eigs_figure", "spectrum_figure", "subspace_figure", "norms_figure", "function_path_figure",
           "plane_figure", "figures_html", "PIN_COLORS", "PIN_SYMBOLS", "event_marks", "log_ticks", "symlog",
           "symlog_ticks", "needs_symlog", "blowup_after_swap", "RunTracker", "plotly_template",
           "function_background", "path_heights", "surface3d_figure", "plane_surface3d_figure"]


def _pin_line(x, y, name, i, width=2.5):
    """A pinned run's line: its own colour, dashed, with sparse open markers of its own symbol, so a pin that
    coincides with the live run (drawn after it, on top) still shows."""
    x, y = thin(x, y)
    return {"type": "scatter", "x": np.asarray(x, dtype=float), "y": np.asarray(y, dtype=float),
            "mode": "lines+markers", "name": plot_text(PIN_PREFIX + name),
            "line": {"width": width, "dash": "dash", "color": PIN_COLORS[i % len(PIN_COLORS)]},
            "marker": {"symbol": PIN_SYMBOLS[i % len(PIN_SYMBOLS)], "size": 8, "maxdisplayed": 25,
                       "color": PIN_COLORS[i % len(PIN_COLORS)]}}


def _line(x, y, name, color=None, dash=None, width=2, mode="lines", thin_it=True):
    if thin_it:
        x, y = thin(x, y)
    # numpy arrays travel to the browser as binary columns, and Panel only re-sends the ones that changed
    if mode == "lines+markers" and len(x) > 200:
        mode = "lines"
    tr = {"type": "scatter", "x": np.asarray(x, dtype=float), "y": np.asarray(y, dtype=float),
          "mode": mode, "name": plot_text(name), "line": {"width": width}}
    if color:
        tr["line"]["color"] = color
    if dash:
        tr["line"]["dash"] = dash
    return tr


def event_marks(snap, layout, color="#555", prefix=""):
    """Vertical dotted lines at every hot swap (annotated with what changed) and a red one where it diverged
    (``color``/``prefix``: a pinned run's marks, in its colour and named after it)."""
    for ev in snap.get("events", []):
        s = ev.get("step", 0)
        changed = ev.get("changed") or []
        what = ev.get("optimizer", "")
        if changed and len(changed) <= 2:
            what += " " + ", ".join(f"{k}={_fmt(ev.get('hparams', {}).get(k))}" for k in changed)
        layout["shapes"].append({"type": "line", "xref": "x", "yref": "paper", "x0": s, "x1": s, "y0": 0, "y1": 1,
                                 "line": {"dash": "dot", "color": color, "width": 1.5},
                                 "name": "swap" if not prefix else "pin swap"})
        layout["annotations"].append({"x": s, "xref": "x", "y": 1 if not prefix else 0.86, "yref": "paper",
                                      "text": plot_text(f"{prefix}↦ {what.strip()}"),
                                      "showarrow": False, "xanchor": "left", "yanchor": "top",
                                      "font": {"size": 10, "color": color}})
    if snap.get("diverged_at") is not None and not prefix:
        s = snap["diverged_at"]
        layout["shapes"].append({"type": "line", "xref": "x", "yref": "paper", "x0": s, "x1": s, "y0": 0, "y1": 1,
                                 "line": {"color": "#d62728", "width": 2}, "name": "diverged"})
        layout["annotations"].append({"x": s, "xref": "x", "y": 0.92, "yref": "paper",
                                      "text": f"diverged at {s}", "showarrow": False, "xanchor": "right",
                                      "font": {"size": 10, "color": "#d62728"}})
    return layout


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def blowup_after_swap(snap, factor: float = 10.0):
    """``(event, factor)`` when the loss blew up after a hot swap: the largest loss after the (latest such) swap
    is over ``factor`` times the loss at the swap (and not merely round-off near zero: also above 1e-4 of the
    first loss), or it went non-finite / the run diverged after it; else None."""
    loss = np.asarray(snap.get("loss", []), dtype=float)
    n = len(loss)
    for ev in reversed(snap.get("events") or []):
        s = int(ev.get("step", 0) or 0)
        if not 0 < s < n:
            continue
        before = loss[max(0, s - 3):s]
        before = before[np.isfinite(before)]
        if not before.size:
            continue
        at = float(np.abs(before).max())
        after = loss[s:]
        div = snap.get("diverged_at")
        if (div is not None and div >= s) or not np.isfinite(after).all():
            return ev, float("inf")
        peak = float(np.abs(after).max())
        ref = abs(float(loss[0])) if np.isfinite(loss[0]) else 0.0
        if peak > factor * at and peak > at + 1e-4 * ref:
            return ev, peak / max(at, 1e-300)
    return None


def _pin_marks(pins, layout):
    """Each pinned run's own hot swaps, dotted in the pin's colour."""
    for i, pin in enumerate(pins):
        if pin.get("events"):
            event_marks(pin, layout, color=PIN_COLORS[i % len(PIN_COLORS)], prefix=f"{PIN_PREFIX}{pin['label']} ")
    return layout


def _finish(snap, pins, layout, data):
    return {"data": data, "layout": _pin_marks(pins, event_marks(snap, layout))}


def _probe(snap, key):
    return snap.get("probes", {}).get(key)


def _positive(*arrays):
    vals = [a[np.isfinite(a)] for a in arrays if a is not None and len(a)]
    vals = [v for v in vals if v.size]
    return bool(vals) and all((v > 0).all() for v in vals)


# -- the views ---------------------------------------------------------------------------------------------
def loss_figure(snap=None, pins=()):
    """Trace 0 is always the live training loss (tests count its points)."""
    snap = snap or {"step": np.array([]), "loss": np.array([])}
    data = [_line(snap["step"], snap["loss"], "train loss (batch)", color="#1f77b4")]
    series = [snap["loss"]]
    for key, name, color in (("train_loss", "train loss (eval)", "#ff7f0e"), ("test_loss", "test loss", "#2ca02c")):
        p = _probe(snap, key)
        if p is not None:
            data.append(_line(p[0], p[1], name, color=color, mode="lines+markers"))
            series.append(p[1])
    for i, pin in enumerate(pins):
        data.append(_pin_line(pin["step"], pin["loss"], pin["label"], i))
        series.append(pin["loss"])
    log = _positive(*series)
    layout = _layout("loss", "loss", log=log)
    if log:
        layout["yaxis"].update(log_ticks(*series))
    elif needs_symlog(*series):
        # an unbounded loss (e.g. -1e29 on the saddle) would flatten every other curve on a linear axis
        for tr in data:
            tr["y"] = symlog(tr["y"])
        layout["yaxis"]["title"]["text"] = "loss (symmetric log axis: sign·log10(1+|loss|))"
        layout["yaxis"].update(symlog_ticks(*series))
    return _finish(snap, pins, layout, data)


def _pin_lines(pins, key, fallback=None, prefix=""):
    """Dashed lines for the pinned runs' probe ``key`` (or ``fallback`` where a pin lacks it), one colour a pin."""
    out = []
    for i, pin in enumerate(pins):
        p = _probe(pin, key) or (_probe(pin, fallback) if fallback else None)
        if p is not None:
            out.append(_pin_line(p[0], p[1], f"{prefix}{pin['label']}", i))
    return out


def accuracy_figure(snap, pins=()):
    data = []
    for key, name, color in (("train_accuracy", "train accuracy", "#ff7f0e"),
                             ("test_accuracy", "test accuracy", "#2ca02c")):
        p = _probe(snap, key)
        if p is not None:
            data.append(_line(p[0], p[1], name, color=color, mode="lines+markers"))
    data += _pin_lines(pins, "test_accuracy", "train_accuracy")
    if not data:
        return None
    layout = _layout("accuracy (Eval probe)", "accuracy")
    return _finish(snap, pins, layout, data)


def sharpness_figure(snap, pins=()):
    data = []
    p = _probe(snap, "sharpness")
    if p is not None:
        data.append(_line(p[0], p[1], "sharpness λ_max(H)", color="#1f77b4", mode="lines+markers"))
        thr = _probe(snap, "sharpness_threshold")
        if thr is not None and np.isfinite(thr[1]).any():
            name = "stability threshold"
            lr = np.asarray(snap.get("lr", []), dtype=float)
            idx = thr[0].astype(int)
            ok = idx < len(lr)
            if ok.any():
                prod = thr[1][ok] * lr[idx[ok]]
                prod = prod[np.isfinite(prod)]
                if prod.size and np.allclose(prod, 2.0, rtol=1e-6):
                    name = "2/lr"          # plain GD/SGD; momentum and Adam thresholds keep the general name
            data.append(_line(thr[0], thr[1], name, color="#d62728", dash="dash"))
        pre = _probe(snap, "sharpness_preconditioned")
        if pre is not None and np.isfinite(pre[1]).any():
            data.append(_line(pre[0], pre[1], "preconditioned λ_max(P⁻¹H)", color="#9467bd", mode="lines+markers"))
    b = _probe(snap, "batch_sharpness_full")
    if b is not None:
        data.append(_line(b[0], b[1], "full-batch λ_max (BatchSharpness)", color="#8c564b", mode="lines+markers"))
    bm = _probe(snap, "batch_sharpness")
    if bm is not None and bm[1].ndim == 2:
        sizes = list(snap.get("batch_sizes") or range(bm[1].shape[1]))
        for j in range(bm[1].shape[1]):
            label = f"batch {sizes[j]}" if j < len(sizes) else f"#{j}"
            data.append(_line(bm[0], bm[1][:, j], f"mini-batch λ_max, {label}", dash="dot", width=1))
    data += _pin_lines(pins, "sharpness")
    for i, pin in enumerate(pins):          # each pinned run keeps its own threshold (its lr, its optimizer)
        thr = _probe(pin, "sharpness_threshold")
        if thr is not None and np.isfinite(thr[1]).any():
            data.append(_line(thr[0], thr[1], f"{PIN_PREFIX}threshold, {pin['label']}",
                              color=PIN_COLORS[i % len(PIN_COLORS)], dash="dot", width=1.5))
    if not data:
        return None
    layout = _layout("sharpness vs stability threshold", "eigenvalue")
    return _finish(snap, pins, layout, data)


def eigs_figure(snap, pins=()):
    data = []
    for key, label in (("sharpness_eigenvalues", "λ"), ("subspace_eigenvalues", "subspace λ")):
        p = _probe(snap, key)
        if p is not None and p[1].ndim == 2 and (key == "sharpness_eigenvalues" or not data):
            for j in range(p[1].shape[1]):
                data.append(_line(p[0], p[1][:, j], f"{label}{j + 1}", mode="lines+markers", width=1.5))
    tr = _probe(snap, "trace")
    if tr is not None:
        data.append({**_line(tr[0], tr[1], "trace tr(H)", color="#333", dash="dot", mode="lines+markers"),
                     "yaxis": "y2"})
    if not data:
        return None
    layout = _layout("Hessian top-k eigenvalues", "eigenvalue")
    if tr is not None:
        layout["yaxis2"] = {"title": {"text": "trace"}, "overlaying": "y", "side": "right", "showgrid": False,
                            "exponentformat": "power"}
    return {"data": data, "layout": event_marks(snap, layout)}


def spectrum_figure(snap, pins=()):
    key = next((k for k in snap.get("grids", {}) if k in snap.get("probes", {})), None)
    if key is None:
        return None
    steps, dens = snap["probes"][key]
    grid = snap["grids"][key]
    if dens.ndim != 2 or not len(steps):
        return None
    data = []
    idx = sorted(set(np.linspace(0, len(steps) - 1, min(5, len(steps))).astype(int)))
    for n, i in enumerate(idx):
        last = i == idx[-1]
        y = np.clip(dens[i], 1e-8, None)
        data.append({"type": "scatter", "x": np.asarray(grid, dtype=float), "y": np.asarray(y, dtype=float),
                     "mode": "lines", "name": f"step {int(steps[i])}",
                     "line": {"width": 2.5 if last else 1, "color": "#1f77b4" if last else None},
                     "opacity": 1.0 if last else 0.45})
    layout = _layout("Hessian spectral density (SLQ)", "density", log=True, xtitle="eigenvalue")
    layout["yaxis"].update(log_ticks(*[d["y"] for d in data]))
    return {"data": data, "layout": layout}


def subspace_figure(snap, pins=()):
    data = []
    for key, name, color, dash in (("subspace_fraction", "‖Vᵀg‖²/‖g‖² (full batch)", "#1f77b4", None),
                                   ("subspace_fraction_batch", "mini-batch gradient", "#ff7f0e", None),
                                   ("subspace_random_fraction", "random k-subspace", "#7f7f7f", "dot"),
                                   ("subspace_overlap", "top-k subspace overlap", "#2ca02c", "dash")):
        p = _probe(snap, key)
        if p is not None and np.isfinite(p[1]).any():
            data.append(_line(p[0], p[1], name, color=color, dash=dash, mode="lines+markers"))
    data += _pin_lines(pins, "subspace_fraction")
    if not data:
        return None
    layout = _layout("gradient in the top-k Hessian subspace", "fraction")
    layout["yaxis"]["range"] = [-0.02, 1.02]
    return _finish(snap, pins, layout, data)


def norms_figure(snap, pins=()):
    """‖θ‖ and ‖θ − θ₀‖ on the left axis; the update norm ‖Δθ‖ (orders of magnitude smaller) on its own right
    axis, so it is not flat at zero."""
    left, right = [], []
    for key, name, color in (("weight_norm", "‖θ‖", "#1f77b4"), ("distance_from_init", "‖θ − θ₀‖", "#ff7f0e")):
        p = _probe(snap, key)
        if p is not None and np.isfinite(p[1]).any():
            left.append(_line(p[0], p[1], name, color=color))
    p = _probe(snap, "update_norm")
    if p is not None and np.isfinite(p[1]).any():
        right.append(_line(p[0], p[1], "‖Δθ‖ (update, right axis)", color="#2ca02c"))
    right += _pin_lines(pins, "update_norm", prefix="‖Δθ‖ ")
    if not left and not right:
        return None
    for tr in right:
        tr["yaxis"] = "y2"
    ly = [d["y"] for d in left]
    ry = [d["y"] for d in right]
    layout = _layout("weight and update norms", "norm", log=bool(ly) and _positive(*ly))
    if layout["yaxis"]["type"] == "log":
        layout["yaxis"].update(log_ticks(*ly))
    if right:
        rlog = _positive(*ry)
        layout["yaxis2"] = {"title": {"text": "update norm ‖Δθ‖"}, "overlaying": "y", "side": "right",
                            "exponentformat": "power",
                            "showgrid": False, "type": "log" if rlog else "linear", "automargin": True,
                            **(log_ticks(*ry) if rlog else {})}
        layout["margin"] = {**layout["margin"], "r": 55}
    return _finish(snap, pins, layout, left + right)
