"""The live dashboard: pick a problem and an optimizer, set hyperparameters (widgets generated from the schemas),
Run / Stop / Reset, and watch the loss curve (and, for 2D test functions, the optimizer's path on the exact
contours) update while the run trains in a background thread.

Each ``Dashboard`` instance owns its runs; ``workbench app`` builds one per browser session, so sessions never
share mutable state. Nothing the user types is evaluated as code: numbers are parsed and validated against the
schemas, and errors are shown beside the offending control.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import panel as pn
import plotly.graph_objects as go
import torch

import workbench as wb
from workbench.params import Param

from .forms import ParamForm

__all__ = ["Dashboard"]

RUN_PARAMS = [
    Param("steps", 500, kind="int", low=1, high=1_000_000, log=True, doc="number of updates"),
    Param("seed", 0, kind="int", low=0, high=2**31 - 1, doc="seed for batch order and stochastic optimizers"),
    Param("batch_size", None, kind="int", low=1, high=10**9, allow_none=True,
          doc="examples per step; empty = full batch (gradient descent)"),
]

POLL_MS = 200
PATH_EVERY_S = 0.5          # the contour view re-renders at most this often (plotly.js redraws the contour)
MAX_POINTS = 1500           # longer series are thinned for display (min/max per bucket keeps spikes)


def thin(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS):
    """Thin a long series for display keeping each bucket's min and max (loss spikes stay visible)."""
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max_points // 2
    edges = np.linspace(0, n, buckets + 1).astype(int)
    xs, ys = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        seg = y[a:b]
        if not np.isfinite(seg).any():
            continue
        i, j = a + int(np.nanargmin(seg)), a + int(np.nanargmax(seg))
        for k in sorted({i, j}):
            xs.append(x[k])
            ys.append(y[k])
    return np.asarray(xs), np.asarray(ys)
_TEMPLATE = None


def plotly_template() -> dict:
    """The plotly_white template as plain JSON (live figures are plain dicts: no per-update validation cost)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        import plotly.io as pio
        _TEMPLATE = pio.templates["plotly_white"].to_plotly_json()
    return _TEMPLATE


def loss_figure(steps=(), loss=(), title="training loss", log=True) -> dict:
    return {"data": [{"type": "scatter", "x": list(steps), "y": list(loss), "mode": "lines", "name": "train loss",
                      "line": {"width": 2}}],
            "layout": {"template": plotly_template(), "margin": {"l": 50, "r": 10, "t": 30, "b": 40},
                       "title": {"text": title}, "xaxis": {"title": {"text": "step"}},
                       "yaxis": {"title": {"text": "loss"}, "type": "log" if log else "linear"},
                       "uirevision": "keep"}}


def contour_grid(problem, n: int = 140):
    """The exact surface of a 2D test-function problem on an n×n grid over its domain."""
    (x0, x1), (y0, y1) = problem.domain
    xs = np.linspace(x0, x1, n)
    ys = np.linspace(y0, y1, n)
    X, Y = np.meshgrid(xs, ys)
    pts = torch.tensor(np.stack([X, Y], -1), dtype=torch.float64)
    with torch.no_grad():
        Z = problem.function(pts).numpy()
    return xs, ys, Z


class Dashboard(pn.viewable.Viewer):
    """Panel dashboard; ``Dashboard().servable()`` or display it in JupyterLab."""

    def __init__(self, problem: str = "rosenbrock", optimizer: str = "adam", results_dir: str | Path = "results",
                 **params):
        super().__init__(**params)
        self.results_dir = Path(results_dir)
        self.run: wb.Run | None = None
        self._shown = 0
        self._cb = None
        self._problem_obj = None

        self.problem_select = pn.widgets.Select(name="problem", options=wb.problems.list(), value=problem,
                                                css_classes=["wb-problem"])
        self.optimizer_select = pn.widgets.Select(name="optimizer", options=wb.optimizers.list(), value=optimizer,
                                                  css_classes=["wb-optimizer"])
        self.problem_box = pn.Column(sizing_mode="stretch_width", margin=0)
        self.hparam_box = pn.Column(sizing_mode="stretch_width", margin=0)
        self.run_form = ParamForm(RUN_PARAMS, owner="run")
        self.run_button = pn.widgets.Button(name="Run", button_type="primary", css_classes=["wb-run"])
        self.stop_button = pn.widgets.Button(name="Stop", button_type="warning", css_classes=["wb-stop"],
                                             disabled=True)
        self.reset_button = pn.widgets.Button(name="Reset", css_classes=["wb-reset"])
        self.status = pn.pane.Markdown("Ready. Pick a problem and an optimizer, then press **Run**.",
                                       css_classes=["wb-status"], sizing_mode="stretch_width")
        self.error = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["wb-run-error"])

        self.loss_fig = self._empty_loss_fig()
        self.loss_pane = pn.pane.Plotly(self.loss_fig, sizing_mode="stretch_width", height=330,
                                        css_classes=["wb-loss-plot"])
        self.path_fig = {"data": [], "layout": {}}
        self.path_pane = pn.pane.Plotly(self.path_fig, sizing_mode="stretch_width", height=430,
                                        css_classes=["wb-path-plot"], visible=False)

        self.problem_select.param.watch(lambda e: self._build_problem_form(), "value")
        self.optimizer_select.param.watch(lambda e: self._build_hparam_form(), "value")
        self.run_button.on_click(lambda e: self.start())
        self.stop_button.on_click(lambda e: self.stop())
        self.reset_button.on_click(lambda e: self.reset())
        self._build_problem_form()
        self._build_hparam_form()

        controls = pn.Column(
            "### Problem", self.problem_select, pn.Card(self.problem_box, title="problem options", collapsed=True,
                                                         sizing_mode="stretch_width"),
            "### Optimizer", self.optimizer_select, self.hparam_box,
            "### Run", self.run_form.layout,
            pn.Row(self.run_button, self.stop_button, self.reset_button),
            self.error, width=300, css_classes=["wb-controls"])
        views = pn.Column(self.status, self.loss_pane, self.path_pane, sizing_mode="stretch_width")
        self.layout = pn.Row(controls, views, sizing_mode="stretch_width")

    def __panel__(self):
        return self.layout

    # -- forms ---------------------------------------------------------------------------------------------
    def _build_problem_form(self):
        self.problem_form = ParamForm(wb.problems.options(self.problem_select.value),
                                      owner=f"problem {self.problem_select.value!r}")
        self.problem_box[:] = [self.problem_form.layout]
        self._problem_obj = None
        self._refresh_path_background()

    def _build_hparam_form(self):
        name = self.optimizer_select.value
        self.hparam_form = ParamForm(wb.optimizers.schema(name), owner=f"optimizer {name!r}")
        self.hparam_box[:] = [self.hparam_form.layout]

    def _make_problem(self):
        opts = self.problem_form.values()
        return wb.problems.make(self.problem_select.value, seed=0, **opts)

    # -- figures -------------------------------------------------------------------------------------------
    @staticmethod
    def _empty_loss_fig():
        return loss_figure()

    def _refresh_path_background(self):
        try:
            prob = self._make_problem()
        except ValueError:
            return
        self._problem_obj = prob
        if prob.kind != "function":
            self.path_pane.visible = False
            return
        xs, ys, Z = contour_grid(prob, n=100)
        zlog = np.log10(Z - Z.min() + 1e-3)
        fig = go.Figure()
        # a heatmap, not a contour trace: plotly.js re-traces contour lines on every live redraw, a heatmap is an
        # image (cheap); the log scale shows the level structure
        fig.add_trace(go.Heatmap(x=xs, y=ys, z=zlog, colorscale="Viridis", showscale=True, zsmooth="best",
                                 colorbar=dict(title="log10(f - min + 1e-3)"), name="f", hoverinfo="skip"))
        if prob.minima:
            mx, my = zip(*prob.minima)
            fig.add_trace(go.Scatter(x=mx, y=my, mode="markers", name="minima",
                                     marker=dict(symbol="star", size=14, color="white",
                                                 line=dict(color="black", width=1))))
        fig.add_trace(go.Scatter(x=[prob.options["x0"]], y=[prob.options["y0"]], mode="lines+markers",
                                 name="path", line=dict(color="#ff4136", width=2), marker=dict(size=4)))
        (x0, x1), (y0, y1) = prob.domain
        fig.update_layout(margin=dict(l=50, r=10, t=30, b=40), title=f"{prob.name}: optimizer path",
                          xaxis=dict(range=[x0, x1], title="x"), yaxis=dict(range=[y0, y1], title="y"),
                          template="plotly_white", uirevision="keep", legend=dict(orientation="h"))
        self.path_fig = fig.to_plotly_json()      # plain dict: cheap live updates
        self.path_pane.object = self.path_fig
        self.path_pane.visible = True

    # -- actions -------------------------------------------------------------------------------------------
    def _show_error(self, msg: str):
        self.error.object = msg
        self.error.visible = bool(msg)

    def start(self):
        """Validate every control, then start a background run (stopping any current one)."""
        self._show_error("")
        try:
            prob = self._make_problem()
            hp = self.hparam_form.values()
            rp = self.run_form.values()
            probes = [wb.probes.Trajectory(every=1)] if prob.kind == "function" else []
            self.stop(wait=2.0)
            run = wb.Run(prob, optimizer=self.optimizer_select.value, steps=rp["steps"], seed=rp["seed"],
                         batch_size=rp["batch_size"], device="cpu", probes=probes, progress=False, **hp)
        except ValueError as exc:
            msg = str(exc)
            if not (self.hparam_form.route_error(msg) or self.run_form.route_error(msg)
                    or self.problem_form.route_error(msg)):
                self._show_error(msg)
            else:
                self._show_error("Fix the highlighted field.")
            return None
        self._problem_obj = prob
        self._reset_views(prob)
        self.run = run
        self._t_start = time.perf_counter()
        self.first_point_latency = None
        self._final_ticks = 0
        self._last_path = 0.0
        run.start()
        self.run_button.disabled = True
        self.stop_button.disabled = False
        self._ensure_polling()
        return run

    def stop(self, wait: float = 0.0):
        """Ask the current run to stop (it does so before its next step); the views update on the next tick."""
        if self.run is not None and not self.run.done:
            self.run.stop()
            if wait:
                self.run.wait(wait)
            self._tick()

    def reset(self):
        self.stop(wait=2.0)
        self.run = None
        self._reset_views(self._problem_obj)
        self.status.object = "Ready. Pick a problem and an optimizer, then press **Run**."
        self._show_error("")
        self.run_button.disabled = False
        self.stop_button.disabled = True

    def _reset_views(self, prob):
        self._shown = 0
        self.loss_fig = self._empty_loss_fig()
        self.loss_pane.object = self.loss_fig
        if prob is not None and prob.kind == "function":
            self._refresh_path_background()
        else:
            self.path_pane.visible = False

    # -- live updates --------------------------------------------------------------------------------------
    def _ensure_polling(self):
        if self._cb is None:
            try:
                self._cb = pn.state.add_periodic_callback(self._tick, period=POLL_MS, start=True)
            except Exception:  # no event loop (plain Python): callers use tick() themselves
                self._cb = None
        elif not self._cb.running:
            self._cb.start()

    def tick(self):
        """Pull new values from the run into the views (called periodically while a run is live)."""
        self._tick()

    def _tick(self):
        run = self.run
        if run is None:
            return
        try:
            hist = run.history()
            n = len(hist["loss"])
            if n != self._shown or (run.done and self._final_ticks == 0):
                loss = np.asarray(hist["loss"], dtype=float)
                finite = loss[np.isfinite(loss)]
                xs, ys = thin(np.arange(n), np.where(np.isfinite(loss), loss, np.nan))
                self.loss_fig = loss_figure(xs, ys, log=bool(finite.size == 0 or finite.min() > 0))
                self.loss_pane.object = self.loss_fig
                if self.first_point_latency is None and n > 0:
                    self.first_point_latency = time.perf_counter() - self._t_start
                self._shown = n
                now = time.perf_counter()
                if self._problem_obj is not None and self._problem_obj.kind == "function" and self.path_pane.visible \
                        and (run.done or now - self._last_path >= PATH_EVERY_S):
                    self._last_path = now
                    traj = run.probe_history("trajectory")["trajectory"]
                    if traj:
                        pts = np.asarray(traj)
                        if len(pts) > MAX_POINTS:     # keep the start, the end and an even stride between
                            idx = np.unique(np.r_[np.linspace(0, len(pts) - 1, MAX_POINTS).astype(int)])
                            pts = pts[idx]
                        fig = dict(self.path_fig)
                        fig["data"] = list(fig["data"][:-1]) + [{**fig["data"][-1], "x": pts[:, 0], "y": pts[:, 1]}]
                        self.path_fig = fig
                        self.path_pane.object = fig
            last = hist["loss"][-1] if n else float("nan")
            status = run.status
            text = f"**{status}** · step {n} / {run.steps} · loss {last:.5g} · {run.optimizer_name}"
            if status == "diverged":
                text += f" · diverged at step {run.diverged_at}"
                self._show_error(f"The run diverged at step {run.diverged_at} (loss {last:.3g}); "
                                 "try a smaller learning rate. Everything before it is kept.")
            if status == "crashed":
                self._show_error(f"The run crashed: {run.error}")
            self.status.object = text
            if run.done:
                self.run_button.disabled = False
                self.stop_button.disabled = True
                if self._final_ticks > 1 and self._cb is not None and self._cb.running:
                    self._cb.stop()     # stop only after the final values were sent on an earlier tick
                self._final_ticks += 1
        except Exception as exc:  # never let a view update kill the session
            self._show_error(f"view update failed: {type(exc).__name__}: {exc}")
