"""The live dashboard: pick a problem (the registered ones with their size, real ones started on a small subset,
and the user's own) and an optimizer (hyperparameter widgets generated from the schemas), a schedule, the device,
the probes to run and how often, or a preset; Run / Pause / Step / Stop / Reset; change the learning
rate or the optimizer while the run goes (a hot swap, marked on every plot); watch the loss, accuracy, sharpness
against the stability threshold, Hessian top-k and spectral density, gradient-subspace fraction, norms and the
trajectory on the loss surface update live; pin runs to overlay them; export a record (netCDF) and its figures
(HTML); load a saved record to view it again.

Each ``Dashboard`` owns its runs; ``workbench app`` builds one per browser session, so sessions never share
mutable state. Nothing the user types is evaluated as code: numbers are parsed and validated against the schemas
and errors are shown beside the offending control. Records and figures are only written to or read from the results
directory; problems read their data where the server finds it (no path is typed into the app).
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
from types import SimpleNamespace
import time
from pathlib import Path

import numpy as np
import panel as pn
import torch

import workbench as wb
from workbench._validate import resolve_device
from workbench.params import Param
from workbench.problems import Problem

from . import limits as L
from . import views as V
from .safe import Markup, message_pane
from .safe import text as escape
from .catalog import DASHBOARD_RUN, dashboard_options, problem_info, problem_label, user_problem_info
from .files import list_records, safe_path
from .forms import ParamForm, format_value
from .presets import PRESETS
from .views import thin  # noqa: F401  (re-exported: older imports)

__all__ = ["Dashboard", "PROBES", "RUN_PARAMS", "device_options"]

RUN_PARAMS = [
    Param("steps", 500, kind="int", low=1, high=1_000_000, log=True, doc="number of updates"),
    Param("seed", 0, kind="int", low=0, high=2**31 - 1, doc="seed for batch order and stochastic optimizers"),
    Param("batch_size", None, kind="int", low=1, high=10**9, allow_none=True,
          doc="examples per step; empty = full batch (gradient descent)"),
]

# probe name -> (label, option specs, default on for networks)
PROBES = {
    "eval": ("Eval: train/test loss, accuracy", [Param("every", 25, kind="int", low=1, high=10**6)]),
    "norms": ("Norms: weight, distance, update", [Param("every", 1, kind="int", low=1, high=10**6)]),
    "sharpness": ("Sharpness: λ_max vs threshold", [Param("every", 10, kind="int", low=1, high=10**6),
                                                    Param("k", 1, kind="int", low=1, high=20,
                                                          doc="top-k eigenvalues")]),
    "subspace": ("GradientSubspace: top-k fraction", [Param("every", 20, kind="int", low=1, high=10**6),
                                                      Param("k", 4, kind="int", low=1, high=50)]),
    "spectrum": ("SpectralDensity (SLQ)", [Param("every", 100, kind="int", low=1, high=10**6)]),
    "trace": ("Trace (Hutch++)", [Param("every", 50, kind="int", low=1, high=10**6)]),
    "batch_sharpness": ("BatchSharpness", [Param("every", 100, kind="int", low=1, high=10**6)]),
    "trajectory": ("Trajectory: PCA-plane view", [Param("every", 5, kind="int", low=1, high=10**6)]),
}
DEFAULT_PROBES = ("eval",)        # Eval is skipped on 2D test functions (it equals the loss there)

POLL_MS = 250
LIGHT_EVERY_S = 0.5         # the loss view re-renders at most this often (the first point goes out at once):
                            # the browser's re-render costs as much CPU as training on a small machine (measured)
HEAVY_EVERY_S = 1.0         # the heavier views re-render at most this often
PLANE_EVERY_S = 4.0         # the PCA-plane surface is recomputed (off the UI thread) at most this often
PLANE_MIN_SNAPSHOTS = 8
MAX_PINS = 8
READY = Markup("Ready. Pick a problem and an optimizer (or a preset), then press <b>Run</b>.")


def device_options() -> dict[str, str]:
    """The device list {label: value}: auto (with what it resolves to here), cpu, and cuda (one entry per GPU) or
    mps only where torch sees one."""
    opts = {f"auto ({resolve_device('auto')})": "auto", "cpu": "cpu"}
    if torch.cuda.is_available():
        opts[f"cuda ({torch.cuda.get_device_name(0)})"] = "cuda"
        for i in range(1, torch.cuda.device_count()):
            opts[f"cuda:{i} ({torch.cuda.get_device_name(i)})"] = f"cuda:{i}"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        opts["mps"] = "mps"
    return opts


def make_probe(name: str, opts: dict, prob):
    every = opts["every"]
    if name == "eval":
        return wb.probes.Eval(every=every, split="both" if prob.test is not None else "train")
    if name == "norms":
        return wb.probes.Norms(every=every)
    if name == "sharpness":
        return wb.probes.Sharpness(every=every, k=opts.get("k", 1))
    if name == "subspace":
        return wb.probes.GradientSubspace(every=every, k=opts.get("k", 4))
    if name == "spectrum":
        return wb.probes.SpectralDensity(every=every, probes=2, steps=40)
    if name == "trace":
        return wb.probes.Trace(every=every)
    if name == "batch_sharpness":
        n = len(prob.train)
        sizes = [b for b in (32, 128, 512) if b < n] or [max(1, n // 2)]
        return wb.probes.BatchSharpness(every=every, batch_sizes=sizes)
    if name == "trajectory":
        return wb.probes.Trajectory(every=every)
    raise ValueError(f"unknown probe {name!r}; choose from {sorted(PROBES)}")


def _has_kaleido() -> bool:
    import importlib.util
    return importlib.util.find_spec("kaleido") is not None


def _last(y):
    if y is None or not len(y):
        return None
    v = float(np.asarray(y[-1], dtype=float))
    return None if not np.isfinite(v) else v


class _Gate:
    """The run's callback: blocks the training thread while paused (Step lets exactly one more update through)."""

    def __init__(self, paused: bool = False):
        self._cv = threading.Condition()
        self.paused = paused
        self.credits = 0
        self.released = False
        self.waiting = False

    def __call__(self, row):
        with self._cv:
            while self.paused and self.credits == 0 and not self.released:
                self.waiting = True
                self._cv.wait(0.25)
            self.waiting = False
            if self.paused and self.credits > 0:
                self.credits -= 1
        return None

    def pause(self):
        with self._cv:
            self.paused = True

    def resume(self):
        with self._cv:
            self.paused = False
            self._cv.notify_all()

    def step(self):
        with self._cv:
            self.paused = True
            self.credits += 1
            self._cv.notify_all()

    def release(self):
        with self._cv:
            self.released = True
            self._cv.notify_all()


def compute_plane(record, problem, label: str = "run", steps: int = 21, max_samples: int = 512) -> dict:
    """Loss on the PCA plane of ``record``'s trajectory with the projected path (a plain figure dict).

    Exact trajectories get a surface (``landscapes.surface`` on a private copy of the model); count-sketched ones
    (big models) only the projected path."""
    import landscapes as ls

    model = problem.copy_model()
    d = ls.directions.pca(record, n=2, model=model if record.attrs.get("trajectory_kind") == "params" else None)
    proj = ls.project(record, d)
    xy = np.asarray(proj.values, dtype=float)
    surf = None
    if d.space == "params":
        spans = []
        for j in range(2):
            lo, hi = float(min(xy[:, j].min(), 0.0)), float(max(xy[:, j].max(), 0.0))
            pad = 0.25 * (hi - lo) + 1e-6
            spans.append((lo - pad, hi + pad))
        surf = ls.surface(model, problem.loss, problem.data("train", max_samples=max_samples), d, span=spans,
                          steps=steps, progress=False)
    return V.plane_figure(surf, [(label, xy)], d.meta.get("explained_variance"))


class Dashboard(pn.viewable.Viewer):
    """Panel dashboard; ``Dashboard().servable()`` or display it in JupyterLab.

    ``problems``: the user's own ``wb.Problem`` objects (a list, or a dict name -> Problem), offered in the problem
    list next to the registered ones (the first is selected unless ``problem`` names another); ``device``: "auto",
    "cpu", "cuda" or "mps" (a device this machine lacks is shown as an error beside the device control, and Run
    refuses it).

    Python API (what the buttons call): ``start()``, ``pause()``, ``resume()``, ``step()``, ``stop()``,
    ``reset()``, ``tick()`` (pull new values into the views), ``pin()``, ``clear_pins()``, ``apply_preset(name)``,
    ``export(name)``, ``load(name)``, ``race(entries)``.
    """

    def __init__(self, problem: str | None = None, optimizer: str = "adam", results_dir: str | Path = "results",
                 device: str = "auto", problems=(), max_memory_mb: float | None = None, **params):
        super().__init__(**params)
        self.results_dir = Path(results_dir)
        self.max_memory_mb = L.max_memory_mb(max_memory_mb)     # per run; see widgets.limits
        self.user_problems = self._user_problems(problems)
        if problem is None:
            problem = next(iter(self.user_problems), "rosenbrock")
        if problem not in self.user_problems:
            wb.problems.options(problem)          # ValueError naming the known problems
        self.run: wb.Run | None = None
        self.loaded = None               # a loaded record being viewed (xarray.Dataset)
        self._loaded_label = None
        self.pins: list[dict] = []
        self.first_point_latency = None
        self._gate: _Gate | None = None
        self._cb = None
        self._problem_obj = None
        self._background = None          # 2D function heatmap (figure dict)
        self._figs: dict[str, dict] = {}
        self._sigs: dict[str, tuple] = {}
        self._tracker = None
        self._snap = None
        self._shown = -1
        self._last_heavy = 0.0
        self._last_light = 0.0
        self._final_done = False
        self._plane_thread = None
        self._plane_result = None
        self._plane_t = 0.0
        self._plane_n = 0
        self._race_results: list[dict] = []
        self._file_msgs: list[tuple] = []
        self.png_thread = None
        self._race_thread = None
        self._auto_run: dict[str, tuple[str, str]] = {}      # run-form values a problem choice set: (before, set)
        self._t_start = time.perf_counter()

        # -- controls ---------------------------------------------------------------------------------------
        self.preset_select = pn.widgets.Select(label="preset", options=["(none)"] + list(PRESETS),
                                               value="(none)", css_classes=["wb-preset"])
        self.preset_button = pn.widgets.Button(label="Apply preset", css_classes=["wb-apply-preset"])
        self.preset_doc = pn.pane.Markdown("", css_classes=["wb-preset-doc"], styles={"font-size": "12px"})
        self.problem_select = pn.widgets.Select(label="problem", options=self._problem_options(), value=problem,
                                                css_classes=["wb-problem"])
        self.problem_note = pn.pane.HTML("", visible=False, css_classes=["wb-problem-note"],
                                         styles={"font-size": "12px"}, sizing_mode="stretch_width")
        self.device_select = pn.widgets.Select(label="device", options=device_options(), value="auto",
                                               css_classes=["wb-device"])
        self.device_error = message_pane(["wb-error", "wb-device-error"])
        self.optimizer_select = pn.widgets.Select(label="optimizer", options=wb.optimizers.list(), value=optimizer,
                                                  css_classes=["wb-optimizer"])
        self.problem_box = pn.Column(sizing_mode="stretch_width", margin=0)
        self.hparam_box = pn.Column(sizing_mode="stretch_width", margin=0)
        self.run_form = ParamForm(RUN_PARAMS, owner="run")
        self.schedule_form = ParamForm(wb.optimizers.SCHEDULE_PARAMS, owner="schedule")
        self.probe_checks: dict[str, pn.widgets.Checkbox] = {}
        self.probe_forms: dict[str, ParamForm] = {}
        probe_rows = []
        for name, (label, specs) in PROBES.items():
            cb = pn.widgets.Checkbox(label=label, value=name in DEFAULT_PROBES, css_classes=[f"wb-probe-{name}"])
            form = ParamForm(specs, owner=name, css_prefix=f"wb-{name}")
            self.probe_checks[name] = cb
            self.probe_forms[name] = form
            probe_rows += [cb, form.layout]
        self.run_button = pn.widgets.Button(label="Run", color="primary", css_classes=["wb-run"], width=60)
        self.pause_button = pn.widgets.Button(label="Pause", css_classes=["wb-pause"], disabled=True, width=70)
        self.step_button = pn.widgets.Button(label="Step", css_classes=["wb-step"], width=60)
        self.stop_button = pn.widgets.Button(label="Stop", color="warning", css_classes=["wb-stop"],
                                             disabled=True, width=60)
        self.reset_button = pn.widgets.Button(label="Reset", css_classes=["wb-reset"], width=60)
        self.pin_button = pn.widgets.Button(label="Pin run", css_classes=["wb-pin"], width=90)
        self.clear_pins_button = pn.widgets.Button(label="Clear pins", css_classes=["wb-clear-pins"], width=90)
        self.pins_text = message_pane(["wb-pins"], color=None, visible=True)
        self.export_name = pn.widgets.TextInput(label="file name (in the results folder)", placeholder="auto",
                                                css_classes=["wb-export-name"])
        self.export_button = pn.widgets.Button(label="Export .nc + .html", css_classes=["wb-export"])
        self.export_png = pn.widgets.Checkbox(label="also PNG (kaleido; slow, in the background)",
                                              css_classes=["wb-export-png"], disabled=not _has_kaleido())
        self.load_select = pn.widgets.Select(label="saved records", options=list_records(self.results_dir),
                                             css_classes=["wb-load-select"])
        self.load_button = pn.widgets.Button(label="Load", css_classes=["wb-load"], width=70)
        self.refresh_button = pn.widgets.Button(label="↻", css_classes=["wb-refresh"], width=40)
        self.file_status = message_pane(["wb-file-status"], color=None, visible=True)
        self.file_error = message_pane(["wb-error", "wb-file-error"])
        # HTML, not Markdown: the status changes at every poll while a run goes, and rendering it as Markdown on
        # the server cost as much as all the plot updates together (py-spy on a served 20000-step run)
        self.status = pn.pane.HTML(READY, css_classes=["wb-status"], sizing_mode="stretch_width")
        # an HTML pane styled as an alert (an Alert pane renders Markdown, which passes raw HTML through)
        self.error = message_pane(["wb-run-error"], color="#842029", styles={
            "font-size": "13px", "background": "#f8d7da", "border": "1px solid #f5c2c7", "border-radius": "4px",
            "padding": "2px 10px"})

        # -- views --------------------------------------------------------------------------------------------
        self.loss_pane = self._pane("loss", 320, visible=True)
        self.panes = {
            "loss": self.loss_pane,
            "accuracy": self._pane("acc", 280),
            "sharpness": self._pane("sharpness", 300),
            "eigs": self._pane("eigs", 280),
            "spectrum": self._pane("spectrum", 280),
            "subspace": self._pane("subspace", 280),
            "norms": self._pane("norms", 280),
            "path": self._pane("path", 430),
        }
        self.path_pane = self.panes["path"]
        self.loss_pane.object = V.loss_figure()

        # -- wiring -------------------------------------------------------------------------------------------
        self.problem_select.param.watch(lambda e: self._build_problem_form(), "value")
        self.device_select.param.watch(lambda e: self._device_changed(), "value")
        self.optimizer_select.param.watch(lambda e: self._optimizer_changed(), "value")
        self.preset_select.param.watch(lambda e: self._show_preset_doc(), "value")
        self.preset_button.on_click(lambda e: self.apply_preset(self.preset_select.value))
        self.run_button.on_click(lambda e: self.start())
        self.pause_button.on_click(lambda e: self.toggle_pause())
        self.step_button.on_click(lambda e: self.step())
        self.stop_button.on_click(lambda e: self.stop(wait=0.25))   # the run stops before its next update
        self.reset_button.on_click(lambda e: self.reset())
        self.pin_button.on_click(lambda e: self.pin())
        self.clear_pins_button.on_click(lambda e: self.clear_pins())
        self.export_button.on_click(lambda e: self.export(self.export_name.value, png=self.export_png.value))
        self.load_button.on_click(lambda e: self.load(self.load_select.value))
        self.refresh_button.on_click(lambda e: self._refresh_files())
        self._build_problem_form()
        self._build_hparam_form()
        if device != "auto":
            self.set_device(device)

        # the 3D surface and the replay of a trajectory (Landscape tab); wired in _render
        self.panes["surface"] = self._pane("surface", 480)
        self.landscape_mode = pn.widgets.RadioButtonGroup(options=["contours", "3D surface"], value="contours",
                                                          css_classes=["wb-landscape-mode"])
        self.replay_slider = pn.widgets.IntSlider(name="replay step", start=0, end=1, value=1, visible=False,
                                                  css_classes=["wb-replay"], sizing_mode="stretch_width")
        from .layout import build_layout
        self.layout = build_layout(self, probe_rows)

    def __panel__(self):
        return self.layout

    @staticmethod
    def _pane(css, height, visible=False):
        return pn.pane.Plotly({"data": [], "layout": {}}, sizing_mode="stretch_width", height=height,
                              css_classes=[f"wb-{css}-plot"], visible=visible)

    # -- problems and devices -------------------------------------------------------------------------------
    @staticmethod
    def _user_problems(problems) -> dict[str, Problem]:
        items = list(problems.items()) if isinstance(problems, dict) else [(None, p) for p in (problems or ())]
        out: dict[str, Problem] = {}
        taken = set(wb.problems.list())
        for key, prob in items:
            if not isinstance(prob, Problem):
                raise TypeError(f"problems must be workbench Problems (e.g. from wb.problems.custom); "
                                f"got {type(prob).__name__}")
            base = str(key if key is not None else prob.name)
            key, i = base, 1
            while key in taken or key in out:        # never shadow a registered problem or another of the user's
                i += 1
                key = f"{base}-{i}"
            out[key] = prob
        return out

    def _problem_options(self) -> dict[str, str]:
        """{label: name}: the user's problems first, then the registered ones, each with its size."""
        opts = {problem_label(k, user_problem_info(p), kind=p.kind, user=True): k
                for k, p in self.user_problems.items()}
        functions = set(wb.problems.list("function"))
        for name in wb.problems.list():
            try:
                info = problem_info(name)
            except Exception:  # one problem's broken size lookup must not take the app down
                info = {}
            opts[problem_label(name, info, kind="function" if name in functions else None)] = name
        return opts

    def _is_function(self, name) -> bool:
        if name in self.user_problems:
            return self.user_problems[name].kind == "function"
        return name in wb.problems.list("function")

    def _show_problem_note(self, msg: str = "", error: bool = False):
        self.problem_note.object = escape(msg)
        self.problem_note.styles = {"font-size": "12px", "color": "#b00020" if error else "#555"}
        self.problem_note.visible = bool(msg)

    def set_device(self, device: str) -> None:
        """Choose the device for the next Run. One this machine lacks (e.g. "cuda" without a GPU) is listed as
        "(not available)", selected, and shown as an error beside the device control (Run refuses it); a string
        that names no torch device raises ValueError."""
        opts = dict(self.device_select.options)
        if not isinstance(device, str):
            raise ValueError(f"device must be one of {list(opts.values())} (text); got {device!r}")
        if device not in opts.values():
            try:
                resolve_device(device)
                label = str(device)
            except ValueError:
                try:
                    kind = torch.device(device).type if isinstance(device, str) else None
                except (RuntimeError, ValueError):
                    kind = None
                if kind not in ("cuda", "mps"):
                    raise ValueError(f"device must be one of {list(opts.values())} (or 'cuda[:N]' / 'mps' where "
                                     f"present); got {device!r}") from None
                label = f"{device} (not available)"
            self.device_select.options = {**opts, label: device}
        self.device_select.value = device
        self._device_changed()

    def _device_changed(self):
        try:
            resolve_device(self.device_select.value)
            self._device_error("")
        except ValueError as exc:
            self._device_error(str(exc))
            return
        if self._live():
            self._show_error(f"The device applies to the next Run (this one stays on {self.run.device}).")

    def _device_error(self, msg: str):
        self.device_error.object = escape(msg)
        self.device_error.visible = bool(msg)

    # -- forms ---------------------------------------------------------------------------------------------
    def _build_problem_form(self, values=None):
        """The chosen problem's option form: a real problem starts from the dashboard's small options (a subset
        of the data, small widths), ``values`` (a preset) on top; a problem whose data is missing says so."""
        name = self.problem_select.value
        if name in self.user_problems:
            prob = self.user_problems[name]
            self.problem_form = ParamForm([], owner=f"problem {name!r}")
            info = user_problem_info(prob)
            self._show_problem_note(escape(f"Your problem: {info['n_params']:,} parameters, {info['n_train']:,} "
                                           "training examples" + (f", {info['n_test']:,} test examples"
                                                                  if info["n_test"] else "")
                                           + (f". {prob.doc}" if prob.doc else ".")))
        else:
            try:
                info = problem_info(name)
            except Exception as exc:
                info = {"data_note": f"size unknown ({type(exc).__name__}: {exc})"}
            start = dashboard_options(name, info)
            # server-side paths (data_dir, text_file) are not offered: the app reads and writes only its results
            # folder; where the data lives is the server's setting (WORKBENCH_DATA or the problem's default)
            specs = [p for p in wb.problems.options(name) if p.kind != "str"]
            self.problem_form = ParamForm(specs, owner=f"problem {name!r}", values={**start, **(values or {})})
            note = ""
            if not info.get("data_available", True):
                note = escape(info.get("data_note") or f"the data of {name!r} is not on this machine")
                if start.get("data") == "synthetic":
                    note += Markup(" — the options below use <b>data = synthetic</b> until it is there.")
            elif start:
                note = escape("Started small so a Run shows points within seconds on a CPU: "
                              + ", ".join(f"{k}={v}" for k, v in {**start, **DASHBOARD_RUN.get(name, {})}.items())
                              + " (raise them under problem options and Run).")
            self._show_problem_note(note, error=not info.get("data_available", True)
                                    and start.get("data") != "synthetic")
        self._apply_run_defaults(name)
        self.problem_form.on_change(lambda n, v: self._problem_option_changed())
        self.problem_box[:] = [self.problem_form.layout]
        self._problem_obj = None
        self._background = None
        if self.run is None and self.loaded is None:
            self._show_idle_path()

    def _apply_run_defaults(self, name):
        """Set the run-form values DASHBOARD_RUN gives ``name``; undo the previous problem's first (unless the user
        has changed them since)."""
        for k, (before, set_to) in self._auto_run.items():
            if self.run_form.widgets[k].value == set_to:
                self.run_form.widgets[k].value = before
        self._auto_run = {}
        for k, v in DASHBOARD_RUN.get(name, {}).items():
            w = self.run_form.widgets[k]
            text = format_value(v)
            if w.value != text:
                self._auto_run[k] = (w.value, text)
                w.value = text

    def _problem_option_changed(self):
        self._problem_obj = None
        self._background = None
        try:        # said at once, before Run: a model over the memory cap (counted on the meta device)
            steps = self.run_form.values()["steps"]
        except ValueError:
            steps = 1
        try:
            self._check_memory(steps)
        except ValueError:
            pass                # a model over the cap is said under the problem list; the rest at Run
        else:
            if self.problem_note.visible and str(self.problem_note.object).startswith(("model too large",
                                                                                       "data too large")):
                self._show_problem_note("")
        if self._live():
            self._show_error("Problem options apply to the next Run.")
        elif self.run is None and self.loaded is None:
            self._show_idle_path()

    def _build_hparam_form(self, values=None):
        name = self.optimizer_select.value
        self.hparam_form = ParamForm(wb.optimizers.schema(name), owner=f"optimizer {name!r}", values=values)
        self.hparam_form.on_change(self._hparam_changed)
        self.hparam_box[:] = [self.hparam_form.layout]

    def _make_problem(self):
        name = self.problem_select.value
        if name in self.user_problems:
            return self.user_problems[name]
        opts = self.problem_form.values()
        return wb.problems.make(name, seed=0, **opts)

    def _sizes(self) -> tuple[int, int]:
        """The chosen problem's parameter count and in-memory data bytes with the current options, without
        building it (meta device); ValueError for an invalid option. A user's problem is already in memory."""
        name = self.problem_select.value
        if name in self.user_problems:
            return self.user_problems[name].n_params, 0
        return L.problem_sizes(name, self.problem_form.values())

    def _check_memory(self, steps: int, probes=()) -> dict:
        """ValueError (starting with the field to change) when the run's estimated memory is over the cap; the
        model part is also said under the problem list."""
        try:
            n_params, data = self._sizes()
            return L.check(n_params, steps, probes, self.max_memory_mb, data_bytes=data)
        except ValueError as exc:
            if str(exc).startswith(("model too large", "data too large")):
                self._show_problem_note(str(exc), error=True)
            raise

    def _device(self):
        """The chosen device (resolved); ValueError naming the device when this machine lacks it."""
        try:
            return resolve_device(self.device_select.value)
        except ValueError as exc:
            self._device_error(str(exc))
            raise

    def _live(self) -> bool:
        return self.run is not None and not self.run.done

    def _show_preset_doc(self):
        p = PRESETS.get(self.preset_select.value)
        self.preset_doc.object = "" if p is None else p["doc"]

    # -- hot swaps -----------------------------------------------------------------------------------------
    def _hparam_changed(self, name, value):
        if not self._live():
            return
        try:
            self.run.hot_swap(**{name: value})
        except ValueError as exc:
            self.hparam_form.show_error(name, str(exc))

    def _optimizer_changed(self):
        keep = {}
        if self._live():
            try:
                keep = {"lr": self.hparam_form.values().get("lr", self.run.base_lr)}
            except ValueError:
                keep = {"lr": self.run.base_lr}
        self._build_hparam_form(values=keep)
        if self._live():
            try:
                hp = self.hparam_form.values()
                self.run.hot_swap(optimizer=self.optimizer_select.value, **hp)
                self._show_error(self._swap_lr_warning(self.optimizer_select.value, hp.get("lr")))
            except ValueError as exc:
                if not self.hparam_form.route_error(str(exc)):
                    self._show_error(str(exc))

    @staticmethod
    def _swap_lr_warning(optimizer, lr) -> str:
        """A warning when a hot swap carried an lr outside ``optimizer``'s typical range (registry.typical_lr)."""
        from workbench.optim.registry import typical_lr
        rng = typical_lr(optimizer) if isinstance(lr, (int, float)) else None
        if rng is None or rng[0] <= lr <= rng[1]:
            return ""
        return (f"Warning: the swap carried lr={lr:.3g} into {optimizer}, outside its usual range "
                f"{rng[0]:.0e}..{rng[1]:.0e}; it may blow up — set a smaller lr." if lr > rng[1] else
                f"Warning: the swap carried lr={lr:.3g} into {optimizer}, below its usual range "
                f"{rng[0]:.0e}..{rng[1]:.0e}; it may barely move.")

    # -- presets -------------------------------------------------------------------------------------------
    def apply_preset(self, name: str, race: bool = True):
        """Fill the controls from ``PRESETS[name]``; a preset with a ``race`` also runs and pins that field
        (unless ``race=False``)."""
        if name not in PRESETS:
            return None
        p = PRESETS[name]
        self.stop()
        self.problem_select.value = p["problem"]
        self._build_problem_form(values=p.get("problem_options"))
        self.optimizer_select.value = p["optimizer"]
        self._build_hparam_form(values=p.get("hparams"))
        for k, v in p.get("run", {}).items():
            w = self.run_form.widgets[k]
            w.value = "" if v is None else str(v)
        for pname, cb in self.probe_checks.items():
            cb.value = pname in p.get("probes", {})
            for k, v in p.get("probes", {}).get(pname, {}).items():
                self.probe_forms[pname].widgets[k].value = str(v)
        self.preset_doc.object = p["doc"]
        if race and p.get("race"):
            self.race(p["race"])
        return p

    # -- actions -------------------------------------------------------------------------------------------
    def _show_error(self, msg: str):
        self.error.object = escape(msg)
        self.error.visible = bool(msg)

    def _collect(self):
        """Validate every control; returns the Run (not started) or raises ValueError (shown beside the field).
        The run's memory is estimated from the options before anything is built (see widgets.limits)."""
        device = self._device()
        rp = self.run_form.values()
        checked = [(name, self.probe_forms[name].values()) for name, cb in self.probe_checks.items() if cb.value]
        if not self._is_function(self.problem_select.value):
            sized = [make_probe(n, o, None) if n not in ("eval", "batch_sharpness") else SimpleNamespace(**o)
                     for n, o in checked]       # (these two need the problem: a few scalars per snapshot)
            self._check_memory(rp["steps"], sized)
        else:
            self._check_memory(rp["steps"], [wb.probes.Trajectory(every=1)])
        try:
            prob = self._make_problem()
        except ValueError as exc:        # e.g. data missing: said under the problem list, not as a traceback
            if not self.problem_form.route_error(str(exc)):
                self._show_problem_note(escape(str(exc)), error=True)
            raise
        hp = self.hparam_form.values()
        sched = self.schedule_form.values()
        probes = []
        for name, cb in self.probe_checks.items():
            if cb.value:
                opts = self.probe_forms[name].values()
                if prob.kind == "function" and name in ("trajectory", "eval"):
                    continue
                probes.append(make_probe(name, opts, prob))
        if prob.kind == "function":
            probes.append(wb.probes.Trajectory(every=1))
        if rp["batch_size"] is not None and rp["batch_size"] > len(prob.train):
            raise ValueError(f"batch_size={rp['batch_size']} is out of range: at most the {len(prob.train)} "
                             "training examples (empty = full batch)")
        # sync_every=1: the Pause/Step gate is the run's callback, which a windowed (no-sync) loop would only
        # consult once per window on CUDA; a live view wants every step anyway
        run = wb.Run(prob, optimizer=self.optimizer_select.value, steps=rp["steps"], seed=rp["seed"],
                     batch_size=rp["batch_size"], device=device, probes=probes, progress=False, sync_every=1,
                     **sched, **hp)
        return prob, run

    def _route(self, exc):
        msg = str(exc)
        if msg.startswith("device"):
            self._device_error(msg)
            self._show_error("Fix the highlighted field: " + msg)
            return
        forms = [self.hparam_form, self.run_form, self.schedule_form, self.problem_form,
                 *self.probe_forms.values()]
        if any(f.route_error(msg) for f in forms):
            self._show_error("Fix the highlighted field: " + msg)
        else:
            self._show_error(msg)

    def start(self, paused: bool = False):
        """Validate every control, then start a background run (stopping any current one)."""
        self._show_error("")
        try:
            self.stop()
            prob, run = self._collect()
        except ValueError as exc:
            self._route(exc)
            return None
        self._problem_obj = prob
        self.loaded = None
        self._gate = _Gate(paused=paused)
        run.callback = self._gate
        self.run = run
        self._tracker = None
        self._clear_views()
        self._t_start = time.perf_counter()
        self.first_point_latency = None
        self._final_done = False
        self._plane_n = 0
        self._plane_result = None
        run.start()
        self._set_buttons(live=True)
        self._ensure_polling()
        return run

    def _set_buttons(self, live: bool):
        self.run_button.disabled = live
        self.stop_button.disabled = not live
        self.pause_button.disabled = not live
        if not live:
            self.pause_button.label = "Pause"

    def toggle_pause(self):
        if self._gate is None or not self._live():
            return
        if self._gate.paused:
            self.resume()
        else:
            self.pause()

    def pause(self):
        """Hold the run after its current update (hot swaps still apply before the next one)."""
        if self._gate is not None and self._live():
            self._gate.pause()
            self.pause_button.label = "Resume"

    def resume(self):
        if self._gate is not None:
            self._gate.resume()
            self.pause_button.label = "Pause"

    def step(self):
        """One update: pauses a live run after its next update, or starts a paused run and does its first."""
        if self._live() and self._gate is not None:
            self._gate.step()
            self.pause_button.label = "Resume"
            return self.run
        run = self.start(paused=True)
        if run is not None:
            self.pause_button.label = "Resume"
        return run

    def stop(self, wait: float = 0.0):
        """Ask the current run to stop (it does so before its next update); never blocks the server for long."""
        if self._gate is not None:
            self._gate.release()
        if self.run is not None and not self.run.done:
            self.run.stop()
            if wait:                    # a short wait so the final status goes out with this very update
                self.run.wait(wait)
                if self.run.done:
                    self._tick()
            self._ensure_polling()

    def reset(self):
        """Stop the run and clear the views (pins stay until Clear pins)."""
        self.stop()
        self.run = None
        self.loaded = None
        self._gate = None
        self._clear_views()
        self.status.object = READY
        self._show_error("")
        self._set_buttons(live=False)

    def _clear_views(self):
        self._sigs = {}
        self._snap = None
        self._shown = -1
        self._figs = {}
        self.loss_pane.object = V.loss_figure(None, self.pins)
        for name, pane in self.panes.items():
            if name != "loss":
                pane.visible = False
        self._show_idle_path()

    def _show_idle_path(self):
        """Before a run: the 2D test function's surface with its start point (and pinned paths)."""
        if self.run is not None or self.loaded is not None:
            return
        if not self._is_function(self.problem_select.value):   # never load a dataset just to pick a view
            self.path_pane.visible = False
            return
        try:
            prob = self._problem_obj or self._make_problem()
        except ValueError:
            return
        self._problem_obj = prob
        start = np.array([[prob.options["x0"], prob.options["y0"]]])
        self._sigs.pop("path", None)
        self.path_pane.object = V.function_path_figure(self._function_bg(prob), start,
                                                       pins=[p for p in self.pins if p["problem"] == prob.name])
        self.path_pane.visible = True

    def _function_bg(self, prob):
        if self._background is None or self._background[0] != prob.config():
            self._background = (prob.config(), V.function_background(prob))
        return self._background[1]

    # -- compare -------------------------------------------------------------------------------------------
    def pin(self, snap: dict | None = None):
        """Pin the current (or a given) run's curves: they stay overlaid, dashed, on the views."""
        if snap is None:
            snap = self._current_snapshot(path=True)
        if snap is None or not len(snap["step"]):
            self._show_error("Nothing to pin yet: run (or load) something first.")
            return None
        self.pins = (self.pins + [snap])[-MAX_PINS:]
        self._pins_changed()
        return snap

    def clear_pins(self):
        self.pins = []
        self._pins_changed()

    def _pins_changed(self):
        self.pins_text.object = "" if not self.pins else escape("Pinned: " + "; ".join(
            f"{p['label']} ({p['problem']}, {len(p['step'])} steps)" for p in self.pins))
        self._shown = -1
        self._sigs = {}
        if self._snap is not None:
            self._render(self._snap, heavy=True)
        else:
            self.loss_pane.object = V.loss_figure(None, self.pins)
            self._show_idle_path()

    def _current_snapshot(self, path=False):
        if self.run is not None:
            snap = V.snapshot_run(self.run)
            if path:
                snap["path"] = self._function_path(self.run)
            return snap
        if self.loaded is not None:
            snap = V.snapshot_record(self.loaded, label=self._loaded_label)
            if path and "trajectory" in self.loaded and self.loaded["trajectory"].shape[-1] == 2:
                snap["path"] = np.asarray(self.loaded["trajectory"].values, dtype=float)
            return snap
        return None

    @staticmethod
    def _function_path(run):
        if run.problem.kind != "function" or "trajectory" not in run.probe_names:
            return None
        traj = run.probe_history("trajectory").get("trajectory")
        return np.asarray(traj, dtype=float).reshape(-1, 2) if traj else None

    def race(self, entries, steps: int | None = None):
        """Run ``[(optimizer, hparams), ...]`` one after another in a background thread and pin each (the
        Rosenbrock race). Uses the current problem, steps and seed."""
        try:
            device = self._device()
            rp = self.run_form.values()
            n = steps or rp["steps"]
            self._check_memory(n, [wb.probes.Trajectory(every=1)] if self._is_function(self.problem_select.value)
                               else [])
            prob = self._make_problem()
        except ValueError as exc:
            self._route(exc)
            return None
        entries = [(str(o), dict(h)) for o, h in entries]

        def work():
            for opt, hp in entries:
                try:
                    r = wb.Run(prob, optimizer=opt, steps=n, seed=rp["seed"], device=device, progress=False,
                               probes=[wb.probes.Trajectory(every=1)] if prob.kind == "function" else [], **hp)
                    r.run()
                except Exception as exc:  # a failing racer is reported, never raised into the server
                    self._race_results.append({"error": f"{opt}: {type(exc).__name__}: {exc}"})
                    continue
                snap = V.snapshot_run(r)
                snap["path"] = self._function_path(r)
                self._race_results.append(snap)

        self._race_thread = threading.Thread(target=work, name="workbench-race", daemon=True)
        self._race_thread.start()
        self._ensure_polling()
        return self._race_thread

    # -- files ---------------------------------------------------------------------------------------------
    def _refresh_files(self):
        self.load_select.options = list_records(self.results_dir)

    def _file_error(self, msg):
        self.file_error.object = escape(msg)
        self.file_error.visible = bool(msg)

    def current_record(self):
        if self.run is not None:
            return self.run.record
        return self.loaded

    def export(self, name: str | None = None, png: bool = False):
        """Save the current record as ``<results>/<name>.nc`` and its figures as ``<name>.html``; with
        ``png=True`` (needs kaleido) also ``<name>_<view>.png`` for every shown view, written in a background
        thread (``self.png_thread``; the file status says when they are done).

        Returns the two paths, or None with the error shown beside the file-name field (bad name, path
        traversal, nothing to export)."""
        self._file_error("")
        ds = self.current_record()
        if ds is None:
            self._file_error("Nothing to export yet: run (or load) something first.")
            return None
        if not name:
            name = f"{ds.attrs.get('problem', 'run')}_{ds.attrs.get('optimizer', '')}_{time.strftime('%Y%m%d-%H%M%S')}"
            name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:100]     # a user problem may be named freely
        try:
            nc = safe_path(self.results_dir, name, ".nc")
            html = safe_path(self.results_dir, nc.stem, ".html")     # checked too: it may be a symlink out
            self.results_dir.mkdir(parents=True, exist_ok=True)
            wb.save(ds, nc)
            figs = self.figures()
            page = V.figures_html(figs, title=f"{ds.attrs.get('problem')} · {ds.attrs.get('optimizer')}")
            fd, tmp = tempfile.mkstemp(prefix=f".{html.name}.", suffix=".tmp", dir=html.parent)  # a new file
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(page)
                os.replace(tmp, html)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        except (ValueError, OSError) as exc:
            self._file_error(str(exc))
            return None
        self.file_status.object = escape(f"Saved {nc.name} and {html.name} in the results folder.")
        self._refresh_files()
        if png:
            self._export_png(nc.stem, figs)
        return nc, html

    def _export_png(self, stem, figs):
        if not _has_kaleido():
            self._file_error("PNG export needs the kaleido package (pip install kaleido) and Chrome/Chromium.")
            return None
        try:
            paths = {view: safe_path(self.results_dir, f"{stem}_{view}", ".png") for view in figs}
        except ValueError as exc:       # e.g. a 100-character name plus "_sharpness"
            self._file_error(f"PNG export: {exc}")
            return None

        def work():
            import plotly.io as pio
            done = []
            try:
                for view, fig in figs.items():
                    pio.write_image(fig, paths[view], width=900, height=450, validate=False)
                    done.append(paths[view].name)
                self._file_msgs.append(("ok", f"PNG written: {', '.join(done)}"))
            except Exception as exc:  # kaleido/Chromium failures are reported, never raised into the server
                self._file_msgs.append(("error", f"PNG export failed: {type(exc).__name__}: {exc}"))

        self.png_thread = threading.Thread(target=work, name="workbench-png", daemon=True)
        self.png_thread.start()
        self._ensure_polling()
        return self.png_thread

    def _show_record(self, ds, snap: dict) -> None:
        """Stop any run and show record ``ds`` (its snapshot ``snap``) in the Train view; used by ``load`` (a file)
        and ``view_record`` (a record in memory, e.g. a sweep cell). The problem is rebuilt from the record's config
        (one of the app's own problems when it matches) so that 2D functions show their path."""
        self.stop()
        self.run = None
        self._gate = None
        self.loaded = ds
        self._loaded_label = snap["label"]
        self._set_buttons(live=False)
        self._clear_views()
        self._problem_obj = None
        try:
            cfg = wb.records.config(ds).get("problem", {})
            mine = [p for p in self.user_problems.values() if p.config() == cfg]
            self._problem_obj = mine[0] if mine else \
                wb.problems.make(cfg["name"], seed=cfg.get("seed", 0), **cfg.get("options", {}))
        except Exception:
            self._problem_obj = None
        if self._problem_obj is not None and self._problem_obj.kind == "function" and "trajectory" in ds:
            snap["path"] = np.asarray(ds["trajectory"].values, dtype=float)
        self._render(snap, heavy=True, loaded=ds)

    def load(self, name: str | None):
        """View a saved record (``<results>/<name>.nc``) again; it can be pinned like a run."""
        self._file_error("")
        if not name:
            self._file_error("No saved record selected.")
            return None
        try:
            path = safe_path(self.results_dir, name, ".nc")
            if not path.is_file():
                raise ValueError(f"no saved record named {name!r} in the results folder")
            ds = wb.load(path)
            snap = V.snapshot_record(ds, label=f"{ds.attrs.get('optimizer', '?')} ({path.stem})")
        except (ValueError, OSError, KeyError) as exc:
            self._file_error(str(exc))
            return None
        self._show_record(ds, snap)
        self.status.object = (Markup(f"Viewing saved record <b>{escape(path.stem)}</b> · ")
                              + escape(f"{snap['problem']} · {snap['optimizer']} · {snap['status']} on "
                                       f"{ds.attrs.get('device', '?')} · "
                                       f"{len(snap['step'])} steps" + self._events_text(snap)))
        self.file_status.object = escape(f"Loaded {path.name}.")
        return ds

    def view_record(self, ds, name: str):
        """View a record already in memory (e.g. a sweep cell opened from the Sweep view) as ``load`` does."""
        self._file_error("")
        try:
            snap = V.snapshot_record(ds, label=f"{ds.attrs.get('optimizer', '?')} ({name})")
        except (ValueError, KeyError) as exc:
            self._file_error(str(exc))
            return None
        self._show_record(ds, snap)
        self.status.object = (Markup("Viewing <b>") + escape(name) + Markup("</b> · ")
                              + escape(f"{snap['problem']} · {snap['optimizer']} · {snap['status']} · "
                                       f"{len(snap['step'])} steps" + self._events_text(snap)))
        return ds

    def figures(self) -> dict[str, dict]:
        """The figures currently shown (plain plotly dicts), by view name."""
        out = {}
        for name, pane in self.panes.items():
            if pane.visible and isinstance(pane.object, dict) and pane.object.get("data"):
                out[name] = pane.object
        return out

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

    @staticmethod
    def _events_text(snap):
        evs = snap.get("events") or []
        if not evs:
            return ""
        return " · swaps: " + ", ".join(f"step {e.get('step')} → {e.get('optimizer')}"
                                        + (f" ({', '.join(e['changed'])})" if 0 < len(e.get("changed") or []) <= 2 else "")
                                        for e in evs[-4:])

    def _tick(self):
        try:
            self._collect_race()
            self._collect_plane()
            self._collect_files()
            run = self.run
            if run is None:
                if self._idle() and self._cb is not None and self._cb.running:
                    self._cb.stop()
                return
            now = time.perf_counter()
            done = run.done
            n = len(run._hist["loss"])
            if n == self._shown and not (done and not self._final_done) and self._gate_state_shown():
                return
            if not done and self._shown > 0 and now - self._last_light < LIGHT_EVERY_S \
                    and self._gate_state_shown():
                return
            self._last_light = now
            heavy = done or now - self._last_heavy >= HEAVY_EVERY_S
            if self._tracker is None or self._tracker.run is not run:
                self._tracker = V.RunTracker(run)
            self._tracker.update(probes=heavy)      # only the new steps are copied
            snap = self._tracker.snapshot()
            if heavy:
                self._last_heavy = now
            self._render(snap, heavy=heavy)
            if self.first_point_latency is None and n > 0:
                self.first_point_latency = time.perf_counter() - self._t_start
            self._shown = n
            self._status_text(run, snap)
            if heavy and run.problem.kind != "function":
                self._maybe_plane(run, final=done)
            if done:
                self._set_buttons(live=False)
                self._final_done = True
                if self._idle() and self._cb is not None and self._cb.running:
                    self._cb.stop()
        except Exception as exc:  # never let a view update kill the session
            self._show_error(f"view update failed: {type(exc).__name__}: {exc}")
            if self.run is not None and self.run.done:      # do not poll a finished run forever
                self._final_done = True
                self._set_buttons(live=False)
                if self._cb is not None and self._cb.running and self._idle():
                    self._cb.stop()

    def _gate_state_shown(self):
        g = self._gate
        return g is None or (g.waiting == getattr(self, "_waiting_shown", False))

    def _idle(self):
        run_idle = self.run is None or (self.run.done and self._final_done)
        race_idle = self._race_thread is None or not self._race_thread.is_alive()
        plane_idle = self._plane_thread is None or not self._plane_thread.is_alive()
        png_idle = self.png_thread is None or not self.png_thread.is_alive()
        return run_idle and race_idle and plane_idle and png_idle and not self._race_results \
            and self._plane_result is None and not self._file_msgs

    def _status_text(self, run, snap):
        n = len(snap["step"])
        last = snap["loss"][-1] if n else float("nan")
        status = run.status
        waiting = self._gate is not None and self._gate.waiting and not run.done
        self._waiting_shown = waiting
        if waiting:
            status = "paused"
        elapsed = snap["wall_time"][-1] if n else 0.0
        text = Markup(f"<b>{escape(status)}</b> on {escape(str(run.device))} · ") + escape(
            f"step {n} / {run.steps} · loss {last:.5g} · {run.optimizer_name} · {elapsed:.2f} s"
            + self._events_text(snap))
        blew = V.blowup_after_swap(snap)
        if blew is not None:
            ev, f = blew
            what = "diverged" if f == float("inf") else f"loss ×{f:.3g}"
            text += escape(f" · blew up after the swap to {ev.get('optimizer')} at step {ev.get('step')} ({what})")
            if run.done and run.status != "diverged":
                self._show_error(f"The loss blew up after the swap to {ev.get('optimizer')} at step "
                                 f"{ev.get('step')} ({what}); try a smaller lr for it.")
        if run.status == "diverged":
            text += escape(f" · diverged at step {run.diverged_at}")
            msg = (f"The run diverged at step {run.diverged_at} (loss {last:.3g}); try a smaller learning rate. "
                   "Everything before it is kept.")
            self._show_error(msg)
            self.hparam_form.show_error("lr", f"diverged at step {run.diverged_at} with this lr")
        if run.status == "crashed":
            self._show_error(f"The run crashed at step {run.step}: {type(run.error).__name__}: {run.error}")
        self.status.object = text

    def _assign(self, name, fig):
        """Send a figure only if it differs from what the browser has (cheap signature of every trace)."""
        pane = self.panes[name]
        if fig is None:
            pane.visible = False
            self._sigs.pop(name, None)
            return
        sig = (tuple((t.get("name"), t.get("type"), len(t["x"]) if t.get("x") is not None else 0,
                      _last(t.get("y"))) for t in fig["data"]),
               len(fig["layout"].get("shapes", ())), str(fig["layout"].get("title")),
               fig["layout"].get("yaxis", {}).get("type"))
        if self._sigs.get(name) != sig or not pane.visible:
            self._sigs[name] = sig
            pane.object = fig
            pane.visible = True

    def _render(self, snap, heavy=True, loaded=None):
        self._snap = snap
        pins = self.pins
        self._assign("loss", V.loss_figure(snap, pins))
        if not heavy:
            return
        builders = {"accuracy": V.accuracy_figure, "sharpness": V.sharpness_figure, "eigs": V.eigs_figure,
                    "spectrum": V.spectrum_figure, "subspace": V.subspace_figure, "norms": V.norms_figure}
        for name, build in builders.items():
            self._assign(name, build(snap, pins))
        prob = self._problem_obj
        if prob is not None and prob.kind == "function" and snap.get("path") is not None:
            same = [p for p in pins if p["problem"] == prob.name]
            self._assign("path", V.function_path_figure(self._function_bg(prob), snap["path"], snap["events"],
                                                        snap.get("path_steps"), pins=same))
        elif loaded is not None and "trajectory" in loaded and prob is not None and prob.kind != "function":
            self._start_plane(loaded, prob, snap["label"])

    # -- the PCA plane (networks), computed off the UI thread ----------------------------------------------
    def _maybe_plane(self, run, final=False):
        if "trajectory" not in run.probe_names:
            return
        if self._plane_thread is not None and self._plane_thread.is_alive():
            return
        with run._lock:
            n_snap = next(len(s.steps) for s in run._slots if s.name == "trajectory")
        if n_snap < PLANE_MIN_SNAPSHOTS or n_snap == self._plane_n:
            return
        if not final and time.perf_counter() - self._plane_t < PLANE_EVERY_S:
            return
        self._plane_n = n_snap
        self._start_plane(run, run.problem, f"{run.optimizer_name} (this run)")

    def _start_plane(self, source, problem, label):
        self._plane_t = time.perf_counter()

        def work():
            try:
                rec = source.record if hasattr(source, "record") else source
                self._plane_result = compute_plane(rec, problem, label=label)
            except Exception as exc:
                self._plane_result = {"error": f"PCA-plane view: {type(exc).__name__}: {exc}"}

        self._plane_thread = threading.Thread(target=work, name="workbench-plane", daemon=True)
        self._plane_thread.start()
        self._ensure_polling()

    def _collect_plane(self):
        res, self._plane_result = self._plane_result, None
        if res is None:
            return
        if "error" in res:
            self._show_error(res["error"])
            return
        self._sigs.pop("path", None)
        self.path_pane.object = res
        self.path_pane.visible = True

    def _collect_files(self):
        while self._file_msgs:
            kind, msg = self._file_msgs.pop(0)
            if kind == "ok":
                self.file_status.object = escape(msg)
            else:
                self._file_error(msg)

    def _collect_race(self):
        while self._race_results:
            res = self._race_results.pop(0)
            if "error" in res:
                self._show_error("race: " + res["error"])
            else:
                self.pin(res)
