"""Figure builders for the live views: plain plotly JSON dicts built from a *snapshot* of a run.

A snapshot is a dict of numpy arrays taken either from a live :class:`workbench.Run` (:func:`snapshot_run`) or from
a saved record (:func:`snapshot_record`), so the same views show a live run, a pinned run and a loaded record.
Figures are plain dicts (no plotly.graph_objects validation on every redraw) and long series are thinned.
"""
from __future__ import annotations

import json

import numpy as np

from .safe import plot_text

__all__ = ["thin", "snapshot_run", "snapshot_record", "loss_figure", "accuracy_figure", "sharpness_figure",
           "eigs_figure", "spectrum_figure", "subspace_figure", "norms_figure", "function_path_figure",
           "plane_figure", "figures_html", "PIN_COLORS", "PIN_SYMBOLS", "event_marks", "log_ticks", "symlog",
           "symlog_ticks", "needs_symlog", "blowup_after_swap"]

MAX_POINTS = 1500
PIN_COLORS = ["#7f7f7f", "#bcbd22", "#17becf", "#8c564b", "#e377c2", "#9467bd", "#2ca02c", "#d62728"]
PIN_SYMBOLS = ["circle-open", "square-open", "diamond-open", "triangle-up-open", "x-thin-open", "cross-thin-open",
               "star-open", "hexagon-open"]
PIN_PREFIX = "pinned: "      # plain text (an emoji pin rendered as an empty box where the font lacks it)
_TEMPLATE = None


def thin(x, y, max_points: int = MAX_POINTS):
    """Thin a long series for display keeping each bucket's min and max (loss spikes stay visible); O(n) numpy."""
    x, y = np.asarray(x), np.asarray(y, dtype=float)
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max_points // 2
    edges = np.linspace(0, n, buckets + 1).astype(int)
    starts = edges[:-1]
    yf = np.where(np.isfinite(y), y, np.nan)
    lo_fill = np.where(np.isnan(yf), np.inf, yf)
    hi_fill = np.where(np.isnan(yf), -np.inf, yf)
    ymin = np.minimum.reduceat(lo_fill, starts)
    ymax = np.maximum.reduceat(hi_fill, starts)
    mid = (starts + edges[1:]) // 2
    xs = np.stack([x[starts], x[np.minimum(mid, n - 1)]], 1).reshape(-1)
    ys = np.stack([ymin, ymax], 1).reshape(-1)
    ys = np.where(np.isfinite(ys), ys, np.nan)
    return xs, ys


class RunTracker:
    """Copies a live run's history incrementally (only what is new at each call), so a tick costs O(new steps)
    however long the run is; ``snapshot()`` gives the views' dict."""

    def __init__(self, run, skip_probes=("trajectory",)):
        self.run = run
        self.skip = set(skip_probes)
        self.n = 0
        self.cols = {"loss": [], "lr": [], "wall_time": []}
        self.pn: dict[str, int] = {}
        self.psteps: dict[str, list] = {}
        self.pvals: dict[str, list] = {}
        self.path = np.empty((1024, 2))
        self.path_steps: list[int] = []

    def update(self, probes: bool = True):
        run = self.run
        h = run.history(since=self.n)
        for k in self.cols:
            self.cols[k].extend(h[k])
        self.n += len(h["loss"])
        if not probes:
            return
        for name in run.probe_names:
            k0 = self.pn.get(name, 0)
            ph = run.probe_history(name, since=k0)
            steps = ph.pop("step")
            self.pn[name] = k0 + len(steps)
            if name == "trajectory" and "trajectory" in self.skip:
                vals = ph.get("trajectory", [])
                if vals and np.asarray(vals[0]).size == 2:        # 2D test functions: keep the path
                    m = len(self.path_steps)
                    while m + len(vals) > len(self.path):
                        self.path = np.concatenate([self.path, np.empty_like(self.path)])
                    self.path[m:m + len(vals)] = np.asarray(vals, dtype=float).reshape(-1, 2)
                    self.path_steps.extend(steps)
                continue
            for k, v in ph.items():
                self.psteps.setdefault(k, []).extend(steps[:len(v)])
                self.pvals.setdefault(k, []).extend(v)

    def snapshot(self) -> dict:
        run = self.run
        snap = {"label": f"{run.optimizer_name} lr={run.hparams.get('lr', float('nan')):.3g}",
                "problem": run.problem.name, "optimizer": run.config["optimizer"], "status": run.status,
                "diverged_at": run.diverged_at, "steps_requested": run.steps, "step": np.arange(self.n),
                **{k: _floats(v) for k, v in self.cols.items()},
                "events": [dict(e) for e in list(run.events)], "probes": {}, "grids": {}}
        for k, v in self.pvals.items():
            try:
                snap["probes"][k] = (np.asarray(self.psteps[k], dtype=float), np.asarray(v, dtype=float))
            except (TypeError, ValueError):
                continue
        for slot in run._slots:
            if hasattr(slot.probe, "batch_sizes"):
                snap["batch_sizes"] = list(slot.probe.batch_sizes)
            grid = getattr(slot.probe, "grid", None)
            if grid is not None:
                snap["grids"][f"{slot.name}_density"] = np.asarray(grid, dtype=float)
        if self.path_steps:
            snap["path"] = self.path[:len(self.path_steps)].copy()
            snap["path_steps"] = np.asarray(self.path_steps)
        return snap


# exponentformat "power": 2×10⁻⁶, never SI prefixes ("2µ", "10n") on any axis
_AXIS = {"gridcolor": "#EBF0F8", "zerolinecolor": "#EBF0F8", "linecolor": "#444", "automargin": True,
         "exponentformat": "power"}


def plotly_template() -> dict:
    """The plotly_white template as plain JSON (for exports; live figures use the few style keys in _layout,
    since the full template is ~7 kB of JSON re-serialized on every redraw)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        import plotly.io as pio
        _TEMPLATE = pio.templates["plotly_white"].to_plotly_json()
    return _TEMPLATE


# -- snapshots ---------------------------------------------------------------------------------------------
def _floats(v):
    a = np.asarray(v, dtype=float)
    return np.where(np.isfinite(a), a, np.nan)


def snapshot_run(run, probe_vars: bool = True, skip=("trajectory",)) -> dict:
    """Everything the views need from a live (or finished) run, copied under the run's lock."""
    hist = run.history()
    snap = {"label": f"{run.optimizer_name} lr={run.hparams.get('lr', float('nan')):.3g}",
            "problem": run.problem.name, "optimizer": run.config["optimizer"], "status": run.status,
            "diverged_at": run.diverged_at, "steps_requested": run.steps,
            "step": np.arange(len(hist["loss"])), "loss": _floats(hist["loss"]), "lr": _floats(hist["lr"]),
            "wall_time": _floats(hist["wall_time"]), "events": [dict(e) for e in list(run.events)], "probes": {},
            "grids": {}}
    if probe_vars:
        for slot in run._slots:
            if slot.name in skip:
                continue
            ph = run.probe_history(slot.name)
            steps = np.asarray(ph.pop("step"), dtype=float)
            for k, v in ph.items():
                n = min(len(steps), len(v))
                try:
                    snap["probes"][k] = (steps[:n], np.asarray(v[:n], dtype=float))
                except (TypeError, ValueError):
                    continue
            if hasattr(slot.probe, "batch_sizes"):
                snap["batch_sizes"] = list(slot.probe.batch_sizes)
            grid = getattr(slot.probe, "grid", None)
            if grid is not None:
                snap["grids"][f"{slot.name}_density"] = np.asarray(grid, dtype=float)
    return snap


def snapshot_record(ds, label: str | None = None) -> dict:
    """A snapshot of a saved record (``wb.load``)."""
    try:
        events = json.loads(ds.attrs.get("events", "[]"))
    except (TypeError, ValueError):
        events = []
    div = int(ds.attrs.get("diverged_at", -1))
    snap = {"label": label or f"{ds.attrs.get('optimizer', '?')} (saved)", "problem": ds.attrs.get("problem", "?"),
            "optimizer": ds.attrs.get("optimizer", "?"), "status": ds.attrs.get("status", "?"),
            "diverged_at": None if div < 0 else div, "steps_requested": int(ds.attrs.get("steps_requested", 0)),
            "step": np.asarray(ds["step"].values), "loss": _floats(ds["loss"].values),
            "lr": _floats(ds["lr"].values) if "lr" in ds else np.array([]),
            "wall_time": _floats(ds["wall_time"].values) if "wall_time" in ds else np.array([]),
            "events": events, "probes": {}, "grids": {}}
    if "batch_sharpness_batch_sizes" in ds.attrs:
        snap["batch_sizes"] = list(np.atleast_1d(ds.attrs["batch_sharpness_batch_sizes"]))
    for k, da in ds.data_vars.items():
        if k in ("loss", "lr", "grad_norm", "wall_time", "optimizer", "trajectory") or not da.dims \
                or not str(da.dims[0]).endswith("_step") or da.dtype.kind not in "fiu":
            continue
        snap["probes"][k] = (np.asarray(ds[da.dims[0]].values, dtype=float), np.asarray(da.values, dtype=float))
        if da.ndim == 2 and str(da.dims[1]) in ds.coords and k.endswith("_density"):
            snap["grids"][k] = np.asarray(ds[da.dims[1]].values, dtype=float)
    return snap


# -- figure helpers ----------------------------------------------------------------------------------------
def _layout(title, ytitle, log=False, xtitle="step"):
    return {"paper_bgcolor": "white", "plot_bgcolor": "white", "margin": {"l": 55, "r": 10, "t": 32, "b": 40},
            "colorway": ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692"],
            "title": {"text": plot_text(title), "font": {"size": 14}}, "xaxis": {"title": {"text": xtitle}, **_AXIS},
            "yaxis": {"title": {"text": ytitle}, "type": "log" if log else "linear", **_AXIS},
            "legend": {"orientation": "h", "y": -0.22}, "uirevision": "keep", "shapes": [], "annotations": []}


def _sup(k: int) -> str:
    return f"10<sup>{'−' if k < 0 else ''}{abs(k)}</sup>"


def log_ticks(*series, max_ticks: int = 8) -> dict:
    """Tick settings for a log axis over the positive finite values of ``series``: powers of ten written as
    10<sup>k</sup> (every n-th decade when there are many), or 1-2-5 steps within a short range written as
    2×10<sup>k</sup>; never bare minor digits or SI prefixes ("10n"). Empty when there is nothing positive."""
    vals = [np.asarray(a, dtype=float).ravel() for a in series if a is not None and len(a)]
    vals = np.concatenate(vals) if vals else np.array([])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    out = {"exponentformat": "power", "showexponent": "all", "minor": {"showgrid": False}}
    if not vals.size:
        return out
    lo, hi = float(np.log10(vals.min())), float(np.log10(vals.max()))
    k0, k1 = int(np.floor(lo)), int(np.ceil(hi))
    decades = [k for k in range(k0, k1 + 1) if lo - 1e-9 <= k <= hi + 1e-9]
    if len(decades) >= 2:
        step = max(1, int(np.ceil(len(range(k0, k1 + 1)) / max_ticks)))
        ks = [k for k in range(k0, k1 + 1) if k % step == 0]
        vals_t = [10.0 ** k for k in ks]
        text = [_sup(k) for k in ks]
    else:
        vals_t, text = [], []
        for k in range(k0 - 1, k1 + 1):
            for m in (1, 2, 5):
                v = m * 10.0 ** k
                if 10 ** lo / 1.5 <= v <= 10 ** hi * 1.5:
                    vals_t.append(v)
                    text.append(_sup(k) if m == 1 else f"{m}×{_sup(k)}")
    out.update({"tickmode": "array", "tickvals": vals_t, "ticktext": text})
    return out


def needs_symlog(*series) -> bool:
    """True when the values go negative and their magnitudes reach more than 6 decades above where the curves
    start (an unbounded loss, e.g. the saddle running off to -1e29): a linear axis would flatten every other
    curve. (Measured from the starting values, so a loss that merely crosses zero does not count.)"""
    vals = [np.asarray(a, dtype=float).ravel() for a in series if a is not None and len(a)]
    vals = [v[np.isfinite(v)] for v in vals]
    vals = [v for v in vals if v.size]
    if not vals:
        return False
    v = np.concatenate(vals)
    if not (v < 0).any():
        return False
    starts = np.array([abs(x[0]) for x in vals if x[0] != 0])
    nz = np.abs(v[v != 0])
    if not nz.size:
        return False
    ref = float(np.median(starts)) if starts.size else float(nz.min())
    return float(np.log10(nz.max()) - np.log10(ref)) > 6


def symlog(y):
    """sign(y)·log10(1 + |y|): a symmetric-log transform (monotone; 0 stays 0; ±10^k maps near ±k)."""
    y = np.asarray(y, dtype=float)
    return np.sign(y) * np.log10(1.0 + np.abs(y))


def symlog_ticks(*series) -> dict:
    """Tick values (in symlog units) and labels (the loss values: −10<sup>k</sup>, 0, 10<sup>k</sup>)."""
    vals = np.concatenate([np.asarray(a, dtype=float).ravel() for a in series if a is not None and len(a)])
    vals = vals[np.isfinite(vals)]
    top = int(np.ceil(np.log10(1.0 + np.abs(vals).max()))) if vals.size else 1
    step = max(1, int(np.ceil(top / 6)))
    ks = list(range(step, top + 1, step))
    tv, tt = [0.0], ["0"]
    if (vals > 0).any():
        tv += [float(np.log10(1 + 10.0 ** k)) for k in ks if 10.0 ** (k - step) <= vals.max() or k == ks[0]]
        tt += [_sup(k) for k in ks if 10.0 ** (k - step) <= vals.max() or k == ks[0]]
    if (vals < 0).any():
        neg = [k for k in ks if 10.0 ** (k - step) <= -vals.min() or k == ks[0]]
        tv = [-float(np.log10(1 + 10.0 ** k)) for k in reversed(neg)] + tv
        tt = ["−" + _sup(k) for k in reversed(neg)] + tt
    return {"tickmode": "array", "tickvals": tv, "ticktext": tt}


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


def function_path_figure(background: dict, points, events=(), steps=None, pins=()):
    """The 2D test function's heatmap (``background``, built once per problem) with the live path as the last
    trace; hot swaps are marked on the path as diamonds; pinned paths are dashed."""
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
    return fig


def function_background(problem, n: int = 100) -> dict:
    """Heatmap of log10(f − min + 1e-3) over the problem's domain with its minima (a plain dict, built once)."""
    import torch
    (x0, x1), (y0, y1) = problem.domain
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    X, Y = np.meshgrid(xs, ys)
    with torch.no_grad():
        Z = problem.function(torch.tensor(np.stack([X, Y], -1), dtype=torch.float64)).numpy()
    zlog = np.log10(Z - Z.min() + 1e-3)
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
    return {"data": data, "layout": layout}


def plane_figure(surf, paths, explained=None, title="loss on the PCA plane of the trajectory"):
    """A loss surface (xarray over alpha/beta, or None) as a heatmap with projected paths ``[(label, xy)]``."""
    data = []
    if surf is not None:
        z = np.asarray(surf.values, dtype=float).T          # rows = beta
        zpos = z[np.isfinite(z)]
        zl = np.log10(np.clip(z, max(zpos.min(), 1e-12) if zpos.size and zpos.min() > 0 else 1e-12, None)) \
            if zpos.size and zpos.min() > 0 else z
        data.append({"type": "heatmap", "x": np.asarray(surf["alpha"].values, dtype=float),
                     "y": np.asarray(surf["beta"].values, dtype=float),
                     "z": np.asarray(zl, dtype=float), "colorscale": "Viridis", "zsmooth": "best",
                     "colorbar": {"title": {"text": "log10 loss" if zl is not z else "loss"}}, "hoverinfo": "skip",
                     "name": "loss"})
    for i, (label, xy) in enumerate(paths):
        color = "#ff4136" if i == len(paths) - 1 else PIN_COLORS[i % len(PIN_COLORS)]
        data.append({"type": "scatter", "x": xy[:, 0].copy(), "y": xy[:, 1].copy(), "mode": "lines+markers",
                     "name": plot_text(label), "line": {"color": color, "width": 2}, "marker": {"size": 4}})
    if paths and len(paths[-1][1]):         # where the (live) path starts and ends, labelled (drawn under the
        xy = np.asarray(paths[-1][1], dtype=float)      # paths: the live path stays the last trace)
        data.insert(1 if surf is not None else 0, {"type": "scatter", "x": [float(xy[0, 0]), float(xy[-1, 0])],
                     "y": [float(xy[0, 1]), float(xy[-1, 1])], "mode": "markers+text", "name": "start / end",
                     "text": ["start", "end"], "textposition": ["top center", "bottom center"],
                     "textfont": {"color": "white", "size": 12},
                     "marker": {"symbol": ["circle", "square"], "size": 12, "color": ["#2ca02c", "#d62728"],
                                "line": {"color": "white", "width": 1.5}}})
    ev = "" if not explained else f" (explained variance {', '.join(f'{e:.0%}' for e in explained[:2])})"
    layout = _layout(title + ev, "PC 2", xtitle="PC 1")
    return {"data": data, "layout": layout}


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
