"""The Dashboard's sidebar logic: the problem list and its option form, the device, the optimizer's
hyperparameter form (all generated from the schemas), presets, the memory check, and turning the controls into the
session's experiment (validated; an error is shown beside the control it names). A mixin of
``widgets.dashboard.Dashboard``."""
from __future__ import annotations

from types import SimpleNamespace

import torch

import workbench as wb
from workbench._validate import resolve_device
from workbench.problems import Problem

from . import limits as L
from .catalog import DASHBOARD_RUN, dashboard_options, problem_info, problem_label, user_problem_info
from .forms import ParamForm, format_value
from .presets import PRESETS
from .runspec import build_run, make_probe
from .safe import Markup
from .safe import text as escape

__all__ = ["FormsMixin"]


class FormsMixin:
    """Controls -> experiment (see the module doc)."""

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
        self.hparam_form = ParamForm(wb.optimizers.schema(name), owner=f"optimizer {name!r}", values=values,
                                     css_class=f"wb-hparams-{name}")     # which optimizer's form the page shows
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

    def _show_preset_doc(self):
        p = PRESETS.get(self.preset_select.value)
        self.preset_doc.object = "" if p is None else p["doc"]

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

    def _show_error(self, msg: str):
        self.error.object = escape(msg)
        self.error.visible = bool(msg)

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

    def _sync_session(self, build: bool = True):
        """Validate every control and make the values the session's experiment. Returns the problem, built here
        unless ``build`` is False (a network trained in a worker process is built there; a 2D function is always
        built: it is cheap and draws the surface). Raises ValueError naming the field (shown beside it by _route).
        The run's memory is estimated from the options before anything is built (see widgets.limits)."""
        device = self._device()
        rp = self.run_form.values()
        checked = {name: self.probe_forms[name].values() for name, cb in self.probe_checks.items() if cb.value}
        function = self._is_function(self.problem_select.value)
        if not function:
            sized = [make_probe(n, o, None) if n not in ("eval", "batch_sharpness") else SimpleNamespace(**o)
                     for n, o in checked.items()]       # (these two need the problem: a few scalars per snapshot)
            self._check_memory(rp["steps"], sized)
        else:
            self._check_memory(rp["steps"], [wb.probes.Trajectory(every=1)])
        popts = {} if self.problem_select.value in self.user_problems else self.problem_form.values()
        hp = self.hparam_form.values()
        sched = self.schedule_form.values()
        self._syncing = True
        try:
            self.session.param.update(problem=self.problem_select.value, problem_options=popts,
                                      optimizer=self.optimizer_select.value, hparams=hp, schedule=sched,
                                      run_options=rp, probes=checked, device=str(device))
        finally:
            self._syncing = False
        if not (build or function):
            return None
        try:
            prob = self._problem_obj or self._make_problem()
        except ValueError as exc:        # e.g. data missing: said under the problem list, not as a traceback
            if not self.problem_form.route_error(str(exc)):
                self._show_problem_note(escape(str(exc)), error=True)
            raise
        if rp["batch_size"] is not None and rp["batch_size"] > len(prob.train):
            raise ValueError(f"batch_size={rp['batch_size']} is out of range: at most the {len(prob.train)} "
                             "training examples (empty = full batch)")
        return prob

    def _collect(self):
        """Validate every control; returns ``(problem, run)`` (not started) or raises ValueError."""
        prob = self._sync_session()
        return build_run(self.session.spec(), problem=prob)
