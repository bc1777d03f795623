"""Views of many runs: phase diagrams of sweeps, run comparisons, parallel coordinates, and a results-folder index.

Pure record -> plotly figure functions (used by the notebooks and by the dashboard's Sweep and Runs views):

    from widgets.compare import phase_diagram, compare_runs, parallel_coordinates
    phase_diagram(sweep_record, "final_loss", x="lr", y="batch_size")     # diverged cells marked, hover = config
    compare_runs({"gd": rec1, "adam": rec2}, var="sharpness", align="step")
    parallel_coordinates(sweep_record, "final_loss")                       # brush an axis to filter

Outcomes come from :func:`workbench.outcomes.summarize` (``final_loss``, ``best_loss``, ``steps_to_target``,
``diverged_at``, ``sharpness_ratio``, ...); any per-cell variable of the record works too.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from workbench.outcomes import summarize

from .safe import plot_text

__all__ = ["phase_diagram", "cell_from_click", "compare_runs", "parallel_coordinates", "outcome_grid",
           "is_log_axis", "runs_index", "COLORS"]

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]


def is_log_axis(values) -> bool:
    """Values that want a log axis: all positive numbers spanning at least a factor of 10."""
    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    return v.size > 1 and bool(np.all(np.isfinite(v))) and bool(np.all(v > 0)) and v.max() / v.min() >= 10


def _numeric(values) -> bool:
    try:
        np.asarray(values, dtype=float)
        return not isinstance(np.asarray(values).flat[0], (str, np.str_))
    except (TypeError, ValueError, IndexError):
        return False


def outcome_grid(record: xr.Dataset, outcome: str, target_loss: float | None = None) -> xr.DataArray:
    """One value per cell: a record variable without a step dimension, or an outcome of ``summarize``."""
    if outcome in record.data_vars and not any(d == "step" or d.endswith("_step") for d in record[outcome].dims):
        return record[outcome]
    summary = summarize(record, target_loss=target_loss)
    if outcome not in summary:
        per_cell = [v for v in record.data_vars if not any(d == "step" or d.endswith("_step")
                                                            for d in record[v].dims)]
        raise ValueError(f"outcome={outcome!r} is neither an outcome ({sorted(summary.data_vars)}) nor a per-cell "
                         f"variable of the record ({sorted(per_cell)})")
    return summary[outcome]


def _dims(record: xr.Dataset) -> list[str]:
    dims = json.loads(record.attrs.get("sweep_dims", "[]")) or [d for d in record.dims if d != "step"
                                                                  and not d.endswith("_step") and d != "eig"]
    return list(dims)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def phase_diagram(record: xr.Dataset, outcome: str = "final_loss", x: str = "lr", y: str | None = None,
                  reduce: str = "mean", target_loss: float | None = None, log_color: bool | None = None,
                  title: str | None = None) -> go.Figure:
    """Heatmap of ``outcome`` over sweep dimensions ``x`` and ``y`` (default: the first other grid dimension).

    Other grid dimensions (e.g. ``seed``) are reduced with ``reduce`` (``"mean"``, ``"median"``, ``"min"``,
    ``"max"``); axes are logarithmic where the values span a decade or more; diverged cells (any reduced run
    diverged) are marked with an x and counted in the hover, which shows each cell's configuration and status.
    Each cell's ``customdata`` carries its coordinates, so a click opens that run (:func:`cell_from_click`).
    """
    dims = _dims(record)
    if x not in dims:
        raise ValueError(f"x={x!r} is not a sweep dimension; dimensions: {dims}")
    if y is None:
        others = [d for d in dims if d != x and record.sizes[d] > 1 and d != "seed"] or [d for d in dims if d != x]
        y = others[0] if others else None
    if y is not None and (y not in dims or y == x):
        raise ValueError(f"y={y!r} must be a sweep dimension other than x={x!r}; dimensions: {dims}")
    if reduce not in ("mean", "median", "min", "max"):
        raise ValueError(f"reduce={reduce!r}: accepted mean, median, min, max")
    val = outcome_grid(record, outcome, target_loss).astype(float)
    status = record["status"].astype(str) if "status" in record else xr.full_like(val, "", dtype=object)
    keep = [x] + ([y] if y else [])
    rest = [d for d in val.dims if d not in keep]
    finite = val.where(np.isfinite(val))
    z = getattr(finite, reduce)(rest, skipna=True) if rest else finite
    div = (status == "diverged")
    n_div = div.sum(rest) if rest else div.astype(int)
    n_all = int(np.prod([record.sizes[d] for d in rest])) if rest else 1
    if y is None:
        z = z.expand_dims({"_": [""]})
        n_div = n_div.expand_dims({"_": [""]})
        ydim = "_"
    else:
        ydim = y
    z = z.transpose(ydim, x)
    n_div = n_div.transpose(ydim, x)
    xs, ys = list(z[x].values), list(z[ydim].values)
    logx, logy = is_log_axis(xs), (y is not None and is_log_axis(ys))
    zz = z.values
    if log_color is None:
        pos = zz[np.isfinite(zz)]
        log_color = bool(pos.size and np.all(pos > 0) and pos.max() / pos.min() > 100)
    shown = np.log10(zz) if log_color else zz
    custom, text = [], []
    for i, yv in enumerate(ys):
        crow, trow = [], []
        for j, xv in enumerate(xs):
            coords = {x: _plain(xv)} | ({y: _plain(yv)} if y else {})
            crow.append(json.dumps(coords))
            lines = [f"{plot_text(k)} = {plot_text(_fmt(v))}" for k, v in coords.items()]
            lines.append(f"{plot_text(outcome)} = {_fmt(zz[i, j]) if np.isfinite(zz[i, j]) else 'n/a'}"
                         + (f" ({reduce} of {n_all})" if rest else ""))
            nd = int(n_div.values[i, j])
            if nd:
                lines.append(f"diverged: {nd} of {n_all}")
            if not rest and "status" in record:
                st = status.sel({x: xv} | ({y: yv} if y else {})).item()
                lines.append(f"status: {plot_text(st)}")
            trow.append("<br>".join(lines))
        custom.append(crow)
        text.append(trow)
    xcat = [_fmt(v) for v in xs] if not _numeric(xs) else xs
    ycat = [_fmt(v) for v in ys] if not _numeric(ys) else ys
    fig = go.Figure(go.Heatmap(
        x=xcat, y=ycat, z=shown, customdata=custom, text=text, hovertemplate="%{text}<extra></extra>",
        colorscale="Viridis", colorbar={"title": f"log10 {outcome}" if log_color else outcome},
        hoverongaps=False, name=outcome))
    dx, dy = np.nonzero(n_div.values.T > 0)
    if len(dx):
        fig.add_trace(go.Scatter(x=[xcat[i] for i in dx], y=[ycat[j] for j in dy], mode="markers",
                                 marker={"symbol": "x", "size": 14, "color": "#d62728", "line": {"width": 2}},
                                 name="diverged", hoverinfo="skip"))
    fig.update_layout(title=plot_text(title or f"{outcome} over {x}" + (f" x {y}" if y else "")),
                      xaxis={"title": plot_text(x), "type": "log" if logx else None},
                      yaxis={"title": plot_text(y or ""), "type": "log" if logy else None, "showticklabels": y is not None},
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, height=420, legend={"orientation": "h"})
    fig.layout.meta = {"sweep_dims": dims, "x": x, "y": y, "outcome": outcome, "diverged_cells": int(len(dx))}
    return fig


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def cell_from_click(click: Mapping | None) -> dict | None:
    """The cell coordinates of a phase-diagram click (plotly ``clickData`` / Panel ``click_data``), or None."""
    try:
        pt = click["points"][0]
        return json.loads(pt["customdata"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _series(rec: xr.Dataset, var: str, align: str):
    if var not in rec.data_vars:
        raise ValueError(f"var={var!r} is not a variable of the record; variables: {sorted(rec.data_vars)}")
    da = rec[var]
    sdim = next((d for d in da.dims if d == "step" or d.endswith("_step")), None)
    if sdim is None:
        raise ValueError(f"var={var!r} has no step dimension (dims {da.dims})")
    steps = da[sdim].values.astype(float)
    if align == "step":
        xs = steps
    elif align == "wall_time":
        if "wall_time" not in rec:
            raise ValueError("align='wall_time' needs a record with wall_time")
        wt = rec["wall_time"]
        base = rec["step"].values.astype(float)
        # probes run at step boundaries: the wall time of a probe step is that of the step before it
        xs_t = [np.interp(steps, base, w) for w in np.atleast_2d(wt.transpose(..., "step").values.reshape(-1,
                                                                                                       len(base)))]
        xs = xs_t[0]
    else:
        raise ValueError(f"align={align!r}: accepted 'step' or 'wall_time'")
    return da, sdim, xs


def compare_runs(records: Mapping[str, xr.Dataset] | Sequence[xr.Dataset], var: str = "loss", align: str = "step",
                 spread_dim: str = "seed", spread: str = "minmax", log: bool | None = None,
                 title: str | None = None) -> go.Figure:
    """Overlay ``var`` of several runs, aligned by ``step`` or ``wall_time``.

    ``records``: ``{label: record}`` (or a list, labelled by problem/optimizer/lr). A record with a ``spread_dim``
    (a sweep cell over seeds, e.g. ``sweep.sel(lr=0.1)``) is drawn as its mean with a band (``spread="minmax"`` or
    ``"std"`` for ±1 standard deviation); records given under the same label are stacked as seeds. A log y axis
    is used for a positive ``var`` spanning more than two decades (``log`` overrides).
    """
    if isinstance(records, xr.Dataset):
        records = [records]
    if not isinstance(records, Mapping):
        labelled: dict[str, list] = {}
        for r in records:
            lab = " ".join(str(r.attrs.get(k, "")) for k in ("problem", "optimizer")).strip() or "run"
            try:
                lr = json.loads(r.attrs.get("config", "{}")).get("hparams", {}).get("lr")
            except (ValueError, TypeError, AttributeError):
                lr = None
            if lr is not None:
                lab += f" lr={_fmt(lr)}"
            labelled.setdefault(lab, []).append(r)
        groups = labelled
    else:
        groups = {k: (v if isinstance(v, (list, tuple)) else [v]) for k, v in records.items()}
    if not groups:
        raise ValueError("records is empty: give at least one record")
    if spread not in ("minmax", "std"):
        raise ValueError(f"spread={spread!r}: accepted 'minmax' or 'std'")
    fig = go.Figure()
    allv = []
    for i, (label, recs) in enumerate(groups.items()):
        color = COLORS[i % len(COLORS)]
        rows, xs = [], None
        for rec in recs:
            da, sdim, x = _series(rec, var, align)
            extra = [d for d in da.dims if d != sdim]
            if any(d != spread_dim for d in extra):
                raise ValueError(f"record {label!r}: {var!r} has dims {da.dims}; select one cell (e.g. "
                                 f".sel(...)) or keep only the {spread_dim!r} dimension")
            arr = da.transpose(..., sdim).values.reshape(-1, da.sizes[sdim]).astype(float)
            if xs is None or len(x) > len(xs):
                xs = x
            rows.extend(list(arr))
        n = max(len(r) for r in rows)
        M = np.full((len(rows), n), np.nan)
        for j, r in enumerate(rows):
            M[j, :len(r)] = np.where(np.isfinite(r), r, np.nan)
        with np.errstate(all="ignore"), _quiet():
            mean = np.nanmean(M, 0)
            if spread == "std":
                sd = np.nanstd(M, 0)
                lo, hi = mean - sd, mean + sd
            else:
                lo, hi = np.nanmin(M, 0), np.nanmax(M, 0)
        x = list(xs[:n])
        name = plot_text(label) + (f" (mean of {len(rows)})" if len(rows) > 1 else "")
        if len(rows) > 1:
            fig.add_trace(go.Scatter(x=x + x[::-1], y=list(hi) + list(lo[::-1]), fill="toself", fillcolor=color,
                                     opacity=0.2, line={"width": 0}, hoverinfo="skip", showlegend=False,
                                     name=f"{plot_text(label)} spread"))
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", line={"color": color, "width": 2}, name=name))
        allv.append(M[np.isfinite(M)])
    vals = np.concatenate(allv) if allv else np.array([])
    if log is None:
        log = bool(vals.size and np.all(vals > 0) and vals.max() / vals.min() > 100)
    fig.update_layout(title=plot_text(title or f"{var} by {align.replace('_', ' ')}"),
                      xaxis={"title": "step" if align == "step" else "wall time (s)"},
                      yaxis={"title": plot_text(var), "type": "log" if log else None, "exponentformat": "power"},
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, height=380, legend={"orientation": "h"})
    return fig


class _quiet:
    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def parallel_coordinates(record: xr.Dataset, outcome: str = "final_loss", target_loss: float | None = None,
                         dims: Sequence[str] | None = None, title: str | None = None) -> go.Figure:
    """Parallel coordinates: one axis per sweep dimension and one for ``outcome``, a line per cell colored by it.

    Drag along an axis to brush (filter) the cells; log-spaced dimensions are shown as log10 with the values as
    tick labels, text dimensions (optimizer) as evenly spaced categories. Diverged cells sit on a last tick of the
    outcome axis labelled "diverged" (their loss is not a number to compare).
    """
    dims = list(dims) if dims is not None else _dims(record)
    bad = [d for d in dims if d not in record.dims]
    if bad:
        raise ValueError(f"dims {bad} are not dimensions of the record; dimensions: {_dims(record)}")
    val = outcome_grid(record, outcome, target_loss).astype(float)
    status = record["status"].astype(str) if "status" in record else None
    flat = val.stack(cell=dims)
    axes = []
    for d in dims:
        v = flat[d].values
        if _numeric(v):
            v = v.astype(float)
            if is_log_axis(np.unique(v)):
                u = np.unique(v)
                axes.append({"label": plot_text(f"{d} (log10)"), "values": np.log10(v), "tickvals": list(np.log10(u)),
                             "ticktext": [_fmt(t) for t in u]})
            else:
                axes.append({"label": plot_text(d), "values": v})
        else:
            cats = list(dict.fromkeys(str(t) for t in v))
            axes.append({"label": plot_text(d), "values": [cats.index(str(t)) for t in v], "tickvals": list(range(len(cats))),
                         "ticktext": [plot_text(c) for c in cats]})
    y = flat.values
    div = (status.stack(cell=dims).values == "diverged") if status is not None else np.zeros(len(y), bool)
    ok = np.isfinite(y) & ~div
    use_log = bool(ok.any() and np.all(y[ok] > 0) and y[ok].max() / y[ok].min() > 100)
    shown = np.where(ok, np.log10(np.where(ok, y, 1.0)) if use_log else y, np.nan)
    top = (np.nanmax(shown) if ok.any() else 0.0)
    span = (np.nanmax(shown) - np.nanmin(shown)) if ok.sum() > 1 else 1.0
    bad_value = top + 0.15 * (span or 1.0)
    shown = np.where(ok, shown, bad_value)
    ticks = list(np.linspace(np.nanmin(shown[ok]) if ok.any() else 0, top, 4)) if ok.any() else []
    label = f"{outcome} (log10)" if use_log else outcome
    axes.append({"label": plot_text(label), "values": shown, "tickvals": ticks + [bad_value],
                 "ticktext": [f"{(10 ** t if use_log else t):.3g}" for t in ticks] + ["diverged"]})
    fig = go.Figure(go.Parcoords(line={"color": shown, "colorscale": "Viridis", "showscale": True,
                                       "colorbar": {"title": label}}, dimensions=axes))
    fig.update_layout(title=plot_text(title or f"{outcome} against the swept hyperparameters (drag an axis to filter)"),
                      margin={"l": 60, "r": 60, "t": 70, "b": 30}, height=400)
    return fig


def runs_index(directory: str | os.PathLike, problem: str | None = None, optimizer: str | None = None,
               status: str | None = None, max_files: int = 2000) -> list[dict[str, Any]]:
    """The run records (``*.nc``) directly in ``directory``, newest first, with their problem, optimizer, lr,
    status, steps and final loss, filtered by ``problem`` / ``optimizer`` / ``status`` (exact match). Sweeps
    (``kind="sweep"``) are listed with kind "sweep"; unreadable files are listed with status "unreadable" and the
    reason, never raised. Symlinks and names that leave the directory are skipped."""
    from workbench.records import load

    root = Path(directory).resolve()
    if not root.is_dir():
        raise ValueError(f"directory={str(directory)!r} is not a directory")
    files = []
    for p in root.glob("*.nc"):
        try:
            if p.is_symlink() or not p.is_file() or p.resolve().parent != root:
                continue
            files.append((p.stat().st_mtime, p))
        except OSError:
            continue
    files.sort(reverse=True)
    out = []
    for mtime, p in files[:max_files]:
        row: dict[str, Any] = {"file": p.name, "modified": mtime}
        try:
            rec = load(p)
        except (ValueError, OSError) as exc:
            row.update(kind="?", problem="", optimizer="", lr=math.nan, status="unreadable", steps=0,
                       final_loss=math.nan, error=str(exc))
        else:
            a = rec.attrs
            try:
                lr = float(json.loads(a.get("config", "{}")).get("hparams", {}).get("lr", math.nan))
            except (ValueError, TypeError, AttributeError):
                lr = math.nan
            loss = rec["loss"].values if "loss" in rec else np.array([])
            finite = loss[np.isfinite(loss)] if loss.size else loss
            row.update(kind=str(a.get("kind", "run")), problem=str(a.get("problem", "")),
                       optimizer=str(a.get("optimizer", "")), lr=lr,
                       status=str(a.get("status", "")), steps=int(a.get("steps_done", rec.sizes.get("step", 0))),
                       final_loss=float(loss.reshape(-1)[-1]) if loss.size and loss.ndim == 1 else
                       (float(finite.min()) if finite.size else math.nan), error="")
        if problem and row["problem"] != problem:
            continue
        if optimizer and row["optimizer"] != optimizer:
            continue
        if status and row["status"] != status:
            continue
        out.append(row)
    return out
