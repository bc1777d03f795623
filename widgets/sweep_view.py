"""The dashboard's Sweep view: a grid of runs over two fields of the current problem/optimizer, its phase diagram
filled live as cells finish, and a click on a cell to open that run in the Train view.

The grid is built from the Train controls (problem, problem options, optimizer, hyperparameters, schedule, steps,
seed, batch size, and the Sharpness / Norms probes when they are checked); two swept fields each get a range (min,
max, number of points, log or linear), plus a number of seeds. The grid is validated before anything starts
(:func:`workbench.sweep.grid_tasks`, the fields' own ranges, at most :data:`MAX_CELLS` cells, at most
:data:`MAX_TOTAL_STEPS` steps in all, and the app's per-run memory cap on one cell, see :mod:`widgets.limits`); errors
are shown beside the field they name. Cells run in a background thread of the server (``scheduler="synchronous"``,
or a local Dask cluster of ``workers`` processes) and write ``<results>/sweeps/<name>/cells/cell-NNNNN.nc``; the
thread leaves what it learns in a queue that the view's periodic callback applies (the thread never touches a Bokeh
model). Stop cancels after the cell in flight: every finished cell stays on disk (``wb.load_sweep`` reads it).

The form and its validation (fields, ranges, limits, :meth:`SweepView.prepare`) live in :mod:`widgets.sweep_form`;
this module runs the grid, follows it and opens its cells.
"""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import panel as pn
import xarray as xr

import workbench as wb
from workbench.sweep import CELL_DIR
from workbench.outcomes import summarize

from .compare import cell_from_click, phase_diagram
from .safe import message_pane
from .safe import text as escape
from .sweep_form import (MAX_CELLS, MAX_POINTS, MAX_SEEDS, MAX_TOTAL_STEPS, OUTCOMES, SWEEP_PROBES,  # noqa: F401
                         SweepForm, axis_values)

__all__ = ["SweepView", "MAX_CELLS", "MAX_POINTS", "MAX_SEEDS", "MAX_TOTAL_STEPS", "OUTCOMES", "axis_values",
           "SWEEP_PROBES"]

POLL_MS = 300


class _Cancelled(Exception):
    """Raised from the sweep's callback to stop it after the cell that just ended."""


class SweepView(SweepForm):
    """The Sweep tab of a :class:`widgets.Dashboard` (``dash.sweep_view``).

    Python API (what the buttons call): ``launch()`` (returns the background thread, or None with the error shown
    beside the field), ``stop()``, ``tick()`` (apply what the thread left: progress, heatmap), ``open_cell(coords)``
    / ``open_click(click_data)`` (the cell's record in the Train view), ``figure()``, ``progress()``.
    """

    def __init__(self, dashboard):
        self.dash = dashboard
        self.thread: threading.Thread | None = None
        self.directory: Path | None = None
        self.grid: dict | None = None
        self.tasks: list[dict] = []
        self.cells: dict[int, dict] = {}      # index -> {"status", outcomes...} of the finished cells
        self.total = 0
        self.state = "idle"                   # idle | running | stopping | finished | stopped | failed
        self._queue: list[dict] = []          # what the sweep thread leaves for the periodic callback
        self._stop_flag = threading.Event()
        self._cb = None
        self._build_form()
        self.outcome = pn.widgets.Select(label="colour by", options=list(OUTCOMES), value="final_loss",
                                         css_classes=["wb-sweep-outcome"])
        self.launch_button = pn.widgets.Button(label="Launch sweep", color="primary",
                                               css_classes=["wb-sweep-launch"])
        self.stop_button = pn.widgets.Button(label="Stop", color="warning", disabled=True,
                                             css_classes=["wb-sweep-stop"])
        self.progress_pane = message_pane(["wb-sweep-progress"], color=None, visible=True)
        self.progress_pane.object = escape("Set two fields and their ranges, then Launch. The grid uses the "
                                           "problem, optimizer and run settings of the Train controls.")
        self.plot = pn.pane.Plotly({"data": [], "layout": {}}, sizing_mode="stretch_width", height=460,
                                   css_classes=["wb-sweep-plot"], visible=False)
        self.plot.param.watch(self._clicked, "click_data")
        self.open_status = message_pane(["wb-sweep-open-status"], color=None, visible=True)
        self.outcome.param.watch(lambda e: self._render(), "value")
        self.launch_button.on_click(lambda e: self.launch())
        self.stop_button.on_click(lambda e: self.stop())
        d = dashboard
        d.optimizer_select.param.watch(lambda e: self.refresh_fields(), "value")
        d.problem_select.param.watch(lambda e: self.refresh_fields(), "value")
        self.refresh_fields()
        doc = pn.state.curdoc
        if doc is not None and getattr(doc, "session_context", None) is not None:
            try:           # a closed browser tab stops its sweep (after the cell in flight)
                doc.on_session_destroyed(lambda ctx: self.stop())
            except Exception:  # not in a served session
                pass

        def axis_row(ax):
            a = self.axes[ax]
            return pn.Column(pn.Row(a["field"], a["min"], a["max"], a["n"], a["scale"], margin=0), a["error"],
                             margin=0, sizing_mode="stretch_width")

        self.layout = pn.Column(
            pn.pane.HTML("<b>Sweep</b>: a grid over two fields of the current problem and optimizer (set in the "
                         "controls on the left); click a cell of the phase diagram to open that run.",
                         sizing_mode="stretch_width"),
            axis_row("x"), axis_row("y"),
            pn.Row(self.seeds, self.workers, self.name, margin=0), self.seeds_error, self.workers_error,
            self.name_error,
            pn.Row(self.launch_button, self.stop_button, self.outcome, margin=0), self.error, self.progress_pane,
            self.plot, self.open_status, sizing_mode="stretch_width", css_classes=["wb-sweep-view"])

    def launch(self):
        """Validate the grid, then run it in a background thread; returns the thread or None (error shown)."""
        if self.running():
            self._show(self.error, "A sweep is running: Stop it first.")
            return None
        try:
            plan = self.prepare()
        except ValueError as exc:
            msg = str(exc)
            self._show(self.error, msg)
            if not msg.startswith(("x ", "y ", "seeds", "workers", "name", "cells")):
                self.dash._route(exc)          # a Train control's field: shown beside it too
            return None
        kwargs = plan["kwargs"]
        self.grid = kwargs["grid"]
        self.tasks = plan["tasks"]
        self.total = len(self.tasks)
        self.cells = {}
        self._queue = []
        self._xy = plan["axes"]
        self.directory = Path(kwargs["directory"])
        self._stop_flag.clear()
        self.state = "running"
        self._t0 = time.perf_counter()
        directory = self.directory

        def on_cell(event):            # in the sweep's thread: read the cell file, leave the outcomes
            out = {"status": event["status"], "error": event.get("error", "")}
            try:
                rec = wb.load(directory / CELL_DIR / f"cell-{event['index']:05d}.nc")
                s = summarize(rec)
                for k in OUTCOMES:
                    if k in s:
                        out[k] = float(s[k].values)
                out["steps_done"] = float(rec.attrs.get("steps_done", rec.sizes.get("step", 0)))
            except Exception:          # a crashed cell without a loss: its status is what there is to show
                pass
            self._queue.append({"kind": "cell", **event, "outcomes": out})
            if self._stop_flag.is_set():
                raise _Cancelled()

        def work():
            try:
                wb.sweep(**kwargs, callback=on_cell)
                self._queue.append({"kind": "finished"})
            except _Cancelled:
                self._queue.append({"kind": "stopped"})
            except Exception as exc:   # reported in the view, never raised into the server
                self._queue.append({"kind": "failed", "error": f"{type(exc).__name__}: {exc}"})

        self.thread = threading.Thread(target=work, name="workbench-sweep", daemon=True)
        self._render()
        self.progress_pane.object = escape(f"0 of {self.total} cells · running in {directory.name}")
        self.launch_button.disabled = True
        self.stop_button.disabled = False
        self.thread.start()
        self._ensure_polling()
        return self.thread

    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self):
        """Cancel the sweep after the cell in flight (finished cells stay on disk)."""
        if self.running():
            self._stop_flag.set()
            self.state = "stopping"
            self.progress_pane.object = escape(f"{len(self.cells)} of {self.total} cells · stopping after the "
                                               "cell in flight")

    def wait(self, timeout: float | None = None):
        """Block until the sweep thread ends (tests, scripts), then apply what it left."""
        if self.thread is not None:
            self.thread.join(timeout)
        self.tick()

    # -- live updates ----------------------------------------------------------------------------------------
    def _ensure_polling(self):
        if self._cb is None:
            try:
                self._cb = pn.state.add_periodic_callback(self.tick, period=POLL_MS, start=True)
            except Exception:  # no event loop (plain Python): callers use tick() themselves
                self._cb = None
        elif not self._cb.running:
            self._cb.start()

    def tick(self):
        """Apply what the sweep thread left (progress, the heatmap, the end); called by the periodic callback."""
        try:
            changed = False
            while self._queue:
                ev = self._queue.pop(0)
                changed = True
                if ev["kind"] == "cell":
                    self.cells[ev["index"]] = ev["outcomes"]
                elif ev["kind"] in ("finished", "stopped"):
                    self.state = ev["kind"]
                elif ev["kind"] == "failed":
                    self.state = "failed"
                    self._show(self.error, "sweep: " + ev["error"])
            if changed:
                self._render()
                self.progress_pane.object = escape(self.progress())
            if not self.running() and not self._queue:
                self.launch_button.disabled = False
                self.stop_button.disabled = True
                if self.state in ("running", "stopping"):      # ended without saying (should not happen)
                    self.state = "stopped"
                    self.progress_pane.object = escape(self.progress())
                if self._cb is not None and self._cb.running:
                    self._cb.stop()
        except Exception as exc:  # never let a view update kill the session
            self._show(self.error, f"sweep view update failed: {type(exc).__name__}: {exc}")

    def progress(self) -> str:
        """``"7 of 9 cells · 1 diverged · ..."`` and the sweep's state."""
        if not self.total:
            return ""
        counts: dict[str, int] = {}
        for c in self.cells.values():
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        done = len(self.cells)
        parts = [f"{done} of {self.total} cells"]
        parts += [f"{n} {s}" for s, n in sorted(counts.items()) if s != "finished"]
        state = {"running": "running", "stopping": "stopping after the cell in flight",
                 "finished": "done", "stopped": "stopped (finished cells are kept)",
                 "failed": "failed"}.get(self.state, self.state)
        where = f" in results/sweeps/{self.directory.name}" if self.directory is not None else ""
        return " · ".join(parts) + f" · {state}{where}"

    def record(self) -> xr.Dataset | None:
        """The per-cell outcomes known so far, over the grid dimensions (status "missing" for cells not done)."""
        if not self.grid:
            return None
        keys = list(self.grid)
        shape = tuple(len(self.grid[k]) for k in keys)
        data = {k: np.full(shape, np.nan) for k in OUTCOMES}
        status = np.full(shape, "missing", dtype=object)
        for i, c in self.cells.items():
            pos = np.unravel_index(i, shape)
            status[pos] = c["status"]
            for k in OUTCOMES:
                if k in c:
                    data[k][pos] = c[k]
        ds = xr.Dataset({k: (keys, v) for k, v in data.items()}, coords={k: list(self.grid[k]) for k in keys},
                        attrs={"sweep_dims": json.dumps(keys), "kind": "sweep"})
        ds["status"] = (keys, status.astype(str))
        return ds

    def figure(self):
        """The phase diagram of the cells done so far (a plotly Figure; cells not done are gaps)."""
        rec = self.record()
        if rec is None:
            return None
        x, y = self._xy
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN cells not done yet
            fig = phase_diagram(rec, self.outcome.value, x=x, y=y, reduce="mean",
                                title=f"{self.outcome.value} over {x} x {y} · "
                                      f"{len(self.cells)} of {self.total} cells")
        return fig

    def _render(self):
        fig = self.figure()
        if fig is None:
            return
        self.plot.object = fig
        self.plot.visible = True

    # -- opening a cell --------------------------------------------------------------------------------------
    def _clicked(self, event):
        self.open_click(event.new)

    def open_click(self, click):
        """Open the cell of a heatmap click (Panel's ``click_data``). Served Panel drops a heatmap point's
        ``customdata`` (its point number is a [row, column] pair), so the point's x and y are used then."""
        coords = cell_from_click(click)
        if not coords and self.grid:
            try:
                pt = click["points"][0]
                if pt.get("curveNumber", 0) == 0:
                    coords = {self._xy[0]: pt["x"], self._xy[1]: pt["y"]}
            except (KeyError, IndexError, TypeError, AttributeError):
                coords = None
        if not coords:
            return None
        return self.open_cell(coords)

    def _match(self, coords: dict) -> list[dict]:
        def same(a, b):
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
            return a == b
        return [t for t in self.tasks if all(k in t["coords"] and same(t["coords"][k], v)
                                             for k, v in coords.items())]

    def open_cell(self, coords: dict):
        """Open the finished run at ``coords`` (its lowest seed when there are several) in the Train view;
        returns the record, or None with the reason shown under the heatmap."""
        matches = [t for t in self._match(coords) if t["index"] in self.cells]
        if not matches:
            self._show_open(f"no finished cell at {coords} yet")
            return None
        t = min(matches, key=lambda t: t["coords"].get("seed", 0))
        path = self.directory / CELL_DIR / f"cell-{t['index']:05d}.nc"
        try:
            ds = wb.load(path)
        except (ValueError, OSError) as exc:
            self._show_open(f"cell {t['index']}: {exc}")
            return None
        label = f"{self.directory.name}/{path.stem} " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float)
                                                                 else f"{k}={v}" for k, v in t["coords"].items())
        shown = self.dash.view_record(ds, label)
        if shown is None:
            self._show_open(f"cell {t['index']} could not be shown (see the Train view)")
            return None
        self._show_open(f"Opened {label} in the Train view.")
        if getattr(self.dash, "tabs", None) is not None:
            self.dash.tabs.active = 0
        return ds

    def _show_open(self, msg):
        self.open_status.object = escape(msg)
