"""The live dashboard: pick a problem (the registered ones with their size, real ones started on a small subset,
and the user's own) and an optimizer (hyperparameter widgets generated from the schemas), a schedule, the device,
the probes to run and how often, or a preset; Run / Pause / Step / Stop / Reset; change the learning
rate or the optimizer while the run goes (a hot swap, marked on every plot); watch the loss, accuracy, sharpness
against the stability threshold, Hessian top-k and spectral density, gradient-subspace fraction, norms and the
trajectory on the loss surface update live (as contours or a rotatable 3D surface, replayed with a step slider);
pin runs to overlay them; export a record (netCDF) and its figures (HTML); load a saved record to view it again.

The pieces:

- ``widgets.session.Session`` (a ``param.Parameterized``) owns what the visitor is doing: the experiment
  (problem, options, optimizer, hyperparameters, schedule, run options, probes: what the page's URL carries), the
  run lifecycle, the pins and the record being viewed. It has no widgets and is tested without a browser.
- This class owns the widgets: the sidebar is generated from the schemas (``widgets.dashboard_forms``) and bound to
  the session; the views are the pure record→figure functions of ``widgets.views`` (``widgets.dashboard_live``
  draws them on a periodic callback); files live in ``widgets.dashboard_files``; the page layout in
  ``widgets.layout``.
- Runs train in a worker process of a ``widgets.pool.RunPool`` when one is given (``workbench app``: a run never
  competes with the server for its interpreter) or in a thread of this process (a notebook's inline dashboard).
  Other background work (the PCA plane, PNG export) goes through one ``widgets.worker.Tasks``.

Each ``Dashboard`` owns its session; ``workbench app`` builds one per browser session, so sessions never share
mutable state. Nothing the user types is evaluated as code: numbers are parsed and validated against the schemas
and errors are shown beside the offending control. Records and figures are only written to or read from the results
directory; problems read their data where the server finds it (no path is typed into the app).
"""
from __future__ import annotations

import time
from pathlib import Path

import panel as pn
import torch

import workbench as wb
from workbench._validate import resolve_device

from . import views as V
from .dashboard_files import FilesMixin
from .dashboard_forms import FormsMixin
from .dashboard_link import URL_PARAMS, LinkMixin
from .dashboard_live import READY, LiveMixin
from .server_load import _LIVE
from .files import list_records
from .forms import ParamForm
from .presets import PRESETS
from .runspec import DEFAULT_PROBES, PROBES, RUN_PARAMS, build_run, compute_plane, make_probe  # noqa: F401
from .safe import message_pane
from .session import MAX_PINS, Session, swap_lr_warning  # noqa: F401
from .views import thin  # noqa: F401  (re-exported: older imports)
from .worker import LocalRun, Tasks

__all__ = ["Dashboard", "PROBES", "RUN_PARAMS", "DEFAULT_PROBES", "device_options", "make_probe", "URL_PARAMS"]

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


def _button(label, css, width, **kw):
    return pn.widgets.Button(label=label, css_classes=[css], width=width, **kw)


class Dashboard(FormsMixin, LinkMixin, FilesMixin, LiveMixin, pn.viewable.Viewer):
    """Panel dashboard; ``Dashboard().servable()`` or display it in JupyterLab.

    ``problems``: the user's own ``wb.Problem`` objects (a list, or a dict name -> Problem), offered in the problem
    list next to the registered ones (the first is selected unless ``problem`` names another); ``device``: "auto",
    "cpu", "cuda" or "mps" (a device this machine lacks is shown as an error beside the device control, and Run
    refuses it); ``pool``: a ``widgets.pool.RunPool`` whose worker processes train the runs (None: a thread here).

    Python API (what the buttons call): ``start()``, ``pause()``, ``resume()``, ``step()``, ``stop()``,
    ``reset()``, ``tick()`` (pull new values into the views), ``pin()``, ``clear_pins()``, ``apply_preset(name)``,
    ``export(name)``, ``load(name)``, ``race(entries)``, ``show_tab(name)``; ``session`` is the state behind it.
    """

    def __init__(self, problem: str | None = None, optimizer: str = "adam", results_dir: str | Path = "results",
                 device: str = "auto", problems=(), max_memory_mb: float | None = None, pool=None,
                 lazy_cards: bool = False, **params):
        super().__init__(**params)
        from . import limits as L
        self.results_dir = Path(results_dir)
        self.max_memory_mb = L.max_memory_mb(max_memory_mb)     # per run; see widgets.limits
        self.user_problems = self._user_problems(problems)
        if problem is None:
            problem = next(iter(self.user_problems), "rosenbrock")
        if problem not in self.user_problems:
            wb.problems.options(problem)          # ValueError naming the known problems
        self.session = Session(pool=pool, user_problems=self.user_problems, problem=problem, optimizer=optimizer)
        self.tasks = Tasks()
        self._racers: list = []
        self._syncing = False
        self._applying = False
        self._auto_run: dict[str, tuple[str, str]] = {}      # run-form values a problem choice set: (before, set)
        self._init_live()

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
        self.run_button = _button("Run", "wb-run", 60, color="primary")
        self.pause_button = _button("Pause", "wb-pause", 70, disabled=True)
        self.step_button = _button("Step", "wb-step", 60)
        self.stop_button = _button("Stop", "wb-stop", 60, color="warning", disabled=True)
        self.reset_button = _button("Reset", "wb-reset", 60)
        self.pin_button = _button("Pin run", "wb-pin", 90)
        self.clear_pins_button = _button("Clear pins", "wb-clear-pins", 90)
        self.pins_text = message_pane(["wb-pins"], color=None, visible=True)
        self.export_name = pn.widgets.TextInput(label="file name (in the results folder)", placeholder="auto",
                                                css_classes=["wb-export-name"])
        self.export_button = pn.widgets.Button(label="Export .nc + .html", css_classes=["wb-export"])
        from .dashboard_files import has_kaleido
        self.export_png = pn.widgets.Checkbox(label="also PNG (kaleido; slow, in the background)",
                                              css_classes=["wb-export-png"], disabled=not has_kaleido())
        self.load_select = pn.widgets.Select(label="saved records", options=list_records(self.results_dir),
                                             css_classes=["wb-load-select"])
        self.load_button = _button("Load", "wb-load", 70)
        self.refresh_button = _button("↻", "wb-refresh", 40)
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
        self._build_views()

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
        for form in (self.run_form, self.schedule_form, *self.probe_forms.values()):
            form.on_change(lambda n, v: self._controls_changed())
        for cb in self.probe_checks.values():
            cb.param.watch(lambda e: self._controls_changed(), "value")
        self.session.param.watch(self._session_changed, list(URL_PARAMS))
        self._build_problem_form()
        self._build_hparam_form()
        if device != "auto":
            self.set_device(device)
        self._controls_changed()
        from .layout import build_layout
        self.layout = build_layout(self, probe_rows, lazy=bool(lazy_cards))

    def __panel__(self):
        return self.layout

    # -- what the session holds, under the names the views and tests use ------------------------------------
    @property
    def run(self):
        """The current run's handle (a ``LocalRun``, which reads like the ``wb.Run`` it trains, or a worker
        process's ``ProcessRun``), or None."""
        return self.session.handle

    @property
    def loaded(self):
        return self.session.loaded

    @property
    def pins(self) -> list[dict]:
        return self.session.pins

    @pins.setter
    def pins(self, value):
        self.session.pins = list(value)

    @property
    def _problem_obj(self):
        return self.session.problem_obj

    @_problem_obj.setter
    def _problem_obj(self, prob):
        self.session.problem_obj = prob

    _swap_lr_warning = staticmethod(swap_lr_warning)

    def _live(self) -> bool:
        return self.session.live

    def show_tab(self, name: str) -> None:
        """Bring the tab titled ``name`` (Train, Spectrum, Landscape, Sweep, Runs) to the front."""
        titles = list(self.tabs._names)
        if name not in titles:
            raise ValueError(f"tab must be one of {titles}; got {name!r}")
        self.tabs.active = titles.index(name)

    # -- actions -------------------------------------------------------------------------------------------
    def start(self, paused: bool = False):
        """Validate every control, then start a run (stopping any current one): in a worker process of the pool
        (it is queued while every worker is busy) or in a thread here."""
        self._show_error("")
        try:
            self.session.stop()
            prob = self._sync_session(build=self.session.pool is None)
            handle = self.session.start(paused=paused, problem=prob)
        except ValueError as exc:
            self._route(exc)
            return None
        self._started()
        return handle

    def _started(self):
        self._clear_views()
        self._t_start = time.perf_counter()
        self.first_point_latency = None
        self._final_done = False
        self._plane_n = 0
        self._set_buttons(live=True)
        self._ensure_polling(fast=True)

    def _set_buttons(self, live: bool):
        self.run_button.disabled = live
        self.stop_button.disabled = not live
        self.pause_button.disabled = not live
        if not live:
            self.pause_button.label = "Pause"

    def toggle_pause(self):
        if not self._live():
            return
        if self.session.poll_state() == "paused" or self.pause_button.label == "Resume":
            self.resume()
        else:
            self.pause()

    def pause(self):
        """Hold the run after its current update (hot swaps still apply before the next one)."""
        if self._live():
            self.session.pause()
            self.pause_button.label = "Resume"

    def resume(self):
        self.session.resume()
        self.pause_button.label = "Pause"

    def step(self):
        """One update: pauses a live run after its next update, or starts a paused run and does its first."""
        if self._live():
            self.session.step()
            self.pause_button.label = "Resume"
            return self.run
        handle = self.start(paused=True)
        if handle is not None:
            handle.step_once()
            self.pause_button.label = "Resume"
        return handle

    def stop(self, wait: float = 0.0):
        """Ask the current run to stop (it does so before its next update); never blocks the server for long."""
        h = self.run
        if h is not None and not h.done:
            self.session.stop(wait=wait)
            if wait and h.done:         # a short wait so the final status goes out with this very update
                self._tick()
            self._ensure_polling()

    def reset(self):
        """Stop the run and clear the views (pins stay until Clear pins)."""
        self.session.reset()
        self._clear_views()
        self.status.object = READY
        self._show_error("")
        self._set_buttons(live=False)

    # -- compare -------------------------------------------------------------------------------------------
    def pin(self, snap: dict | None = None):
        """Pin the current (or a given) run's curves: they stay overlaid, dashed, on the views."""
        try:
            snap = self.session.pin(snap)
        except ValueError as exc:
            self._show_error(str(exc))
            return None
        self._pins_changed()
        return snap

    def clear_pins(self):
        self.session.clear_pins()
        self._pins_changed()

    def race(self, entries, steps: int | None = None):
        """Run ``[(optimizer, hparams), ...]`` from the current problem, steps and seed (at once, in the pool's
        worker processes or in threads here) and pin each as it ends, in the given order (the Rosenbrock race).
        Returns the racers' handles."""
        try:
            self._sync_session(build=False)
            spec = self.session.spec()
            spec["probes"] = {}
            if steps is not None:
                spec["run"]["steps"] = steps
            prob = None if self.session.pool is not None else self._make_problem()
        except ValueError as exc:
            self._route(exc)
            return None
        racers = []
        for opt, hp in entries:
            s = {**spec, "optimizer": str(opt), "hparams": dict(hp), "schedule": {}}
            try:
                h = self.session.pool.submit(s) if self.session.pool is not None and spec["problem"].get(
                    "user", True) is not None else LocalRun(build_run(s, problem=prob)[1])
            except ValueError as exc:
                self._show_error(f"race: {opt}: {exc}")
                continue
            racers.append((str(opt), h))
        self._racers.extend(racers)
        self._ensure_polling()
        return [h for _, h in racers]

    def close(self):
        """The browser tab went away: stop the run, the race and any sweep, the periodic callback, and drop what
        the session held (so that a closed session's memory can be reclaimed)."""
        self.session.reset()
        _LIVE.discard(id(self))
        for _, h in self._racers:
            h.stop()
        self._racers = []
        try:
            self.sweep_view.stop()
        except Exception:  # closing must not fail on a sweep that is already gone
            pass
        if self._cb is not None:
            try:
                self._cb.stop()
            except Exception:  # the document may already be gone
                pass
            self._cb = None
        self.session.clear_pins()
        self._snap = None
        self._plane = None
