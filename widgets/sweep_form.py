"""The Sweep view's form: the two swept fields (min, max, points, log/linear), seeds, workers and the sweep's name,
and their validation into the keyword arguments of :func:`workbench.sweep` (split out of :mod:`widgets.sweep_view`,
whose :class:`~widgets.sweep_view.SweepView` is a :class:`SweepForm`).

Limits: at most :data:`MAX_POINTS` points a field, :data:`MAX_SEEDS` seeds, :data:`MAX_CELLS` cells and
:data:`MAX_TOTAL_STEPS` steps in all, and the app's per-run memory cap on one cell (:mod:`widgets.limits`); errors are
shown beside the field they name.
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import panel as pn

import workbench as wb
from workbench.sweep import grid_tasks

from . import limits as L
from .files import NAME_RULE
from .safe import message_pane
from .safe import text as escape

__all__ = ["SweepForm", "MAX_CELLS", "MAX_POINTS", "MAX_SEEDS", "MAX_TOTAL_STEPS", "OUTCOMES", "axis_values",
           "SWEEP_PROBES"]

MAX_CELLS = 400              # cells (points x points x seeds) one sweep from the app may have
MAX_POINTS = 50              # points per swept field
MAX_SEEDS = 20
MAX_TOTAL_STEPS = 2_000_000  # steps over all cells (time: a served app is shared)
POLL_MS = 300
OUTCOMES = ("final_loss", "best_loss", "diverged_at", "steps_done", "sharpness_ratio")
SWEEP_PROBES = ("sharpness", "norms")   # the Train view's probes a sweep cell records (when checked there)
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")


def axis_values(field: str, lo, hi, n, scale: str, spec=None, label: str = "x") -> list:
    """The values of one swept field: ``n`` points from ``lo`` to ``hi`` on a ``"log"`` or ``"linear"`` scale,
    rounded to integers for an int field (``spec``: the field's :class:`workbench.params.Param`, whose bounds
    every value must satisfy). ValueError naming ``<label> (<field>)`` and the offending setting."""
    where = f"{label} ({field})"

    def num(name, v, kind=float):
        if isinstance(v, str):
            v = v.strip()
            try:
                v = kind(float(v)) if kind is int and float(v).is_integer() else kind(v)
            except ValueError:
                raise ValueError(f"{where}: {name} must be a number; got {v!r}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: {name} must be a finite number; got {v!r}")
        return v

    lo, hi = num("min", lo), num("max", hi)
    n = num("points", n, int)
    if not isinstance(n, int) or not 1 <= n <= MAX_POINTS:
        raise ValueError(f"{where}: points={n!r} is out of range: an integer in [1, {MAX_POINTS}]")
    if scale not in ("log", "linear"):
        raise ValueError(f"{where}: scale={scale!r}: accepted 'log' or 'linear'")
    if lo > hi:
        raise ValueError(f"{where}: min={lo:g} is out of range: at most max={hi:g}")
    if n > 1 and lo == hi:
        raise ValueError(f"{where}: min and max are both {lo:g}; give a range, or points=1")
    if scale == "log" and lo <= 0:
        raise ValueError(f"{where}: min={lo:g} is out of range: a log scale needs min > 0")
    if n == 1:
        vals = [float(lo)]
    elif scale == "log":
        vals = [float(v) for v in np.geomspace(lo, hi, n)]
    else:
        vals = [float(v) for v in np.linspace(lo, hi, n)]
    if spec is not None and spec.kind == "int":
        ints = sorted({int(round(v)) for v in vals})
        if len(ints) < n:
            raise ValueError(f"{where}: points={n} is out of range: only {len(ints)} distinct integers from "
                             f"{lo:g} to {hi:g} on a {scale} scale")
        vals = ints
    else:
        vals = [float(f"{v:.6g}") for v in vals]
        if len(set(vals)) < len(vals):
            raise ValueError(f"{where}: points={n} is out of range: the values are not distinct at 6 digits")
    if spec is not None:
        for v in vals:
            try:
                spec.validate(v, where)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
    return vals


class SweepForm:
    """The form half of :class:`widgets.sweep_view.SweepView`: ``self.dash`` is the Dashboard whose Train controls
    the grid is built from; :meth:`_build_form` makes the widgets, :meth:`prepare` validates them."""

    def _build_form(self):
        self._specs: dict[str, object] = {}
        self.name = pn.widgets.TextInput(label="sweep name (folder in results/sweeps)", placeholder="auto",
                                         css_classes=["wb-sweep-name"])
        self.name_error = message_pane(["wb-error", "wb-sweep-error-name"])
        self.axes = {}
        for ax in ("x", "y"):
            field = pn.widgets.Select(label=f"{ax} field", options={}, css_classes=[f"wb-sweep-{ax}-field"])
            lo = pn.widgets.TextInput(label="min", width=90, css_classes=[f"wb-sweep-{ax}-min"])
            hi = pn.widgets.TextInput(label="max", width=90, css_classes=[f"wb-sweep-{ax}-max"])
            n = pn.widgets.TextInput(label="points", value="3", width=60, css_classes=[f"wb-sweep-{ax}-n"])
            scale = pn.widgets.Select(label="scale", options=["log", "linear"], width=80,
                                      css_classes=[f"wb-sweep-{ax}-scale"])
            err = message_pane(["wb-error", f"wb-sweep-error-{ax}"])
            field.param.watch(lambda e, ax=ax: self._prefill(ax), "value")
            self.axes[ax] = {"field": field, "min": lo, "max": hi, "n": n, "scale": scale, "error": err}
        self.seeds = pn.widgets.TextInput(label="seeds", value="1", width=80, css_classes=["wb-sweep-seeds"])
        self.seeds_error = message_pane(["wb-error", "wb-sweep-error-seeds"])
        self.workers = pn.widgets.TextInput(label="workers (0 = in this server process)", value="0", width=150,
                                            css_classes=["wb-sweep-workers"])
        self.workers_error = message_pane(["wb-error", "wb-sweep-error-workers"])
        self.error = message_pane(["wb-error", "wb-sweep-error"])

    # -- fields ----------------------------------------------------------------------------------------------
    def refresh_fields(self):
        """The fields that can be swept: the optimizer's numeric hyperparameters, the batch size (problems with
        data) and the problem's numeric options (``problem.<option>``)."""
        d = self.dash
        specs = {}
        opts = {}
        for p in wb.optimizers.schema(d.optimizer_select.value):
            if p.kind in ("float", "int"):
                specs[p.name] = p
                opts[f"{p.name} (optimizer)"] = p.name
        name = d.problem_select.value
        if not d._is_function(name):
            from .runspec import RUN_PARAMS
            bs = next(p for p in RUN_PARAMS if p.name == "batch_size")
            specs["batch_size"] = bs
            opts["batch_size"] = "batch_size"
        if name not in d.user_problems:
            for p in wb.problems.options(name):
                if p.kind in ("float", "int") and p.name not in ("seed",):
                    specs[f"problem.{p.name}"] = p
                    opts[f"problem.{p.name}"] = f"problem.{p.name}"
        self._specs = specs
        keys = list(opts.values())
        for i, ax in enumerate(("x", "y")):
            w = self.axes[ax]["field"]
            old = w.value
            w.options = opts
            if old in keys:
                w.value = old
            else:
                default = "lr" if ax == "x" and "lr" in keys else \
                    next((k for k in (["batch_size"] + keys) if k in keys and k != self.axes["x"]["field"].value),
                         keys[0] if keys else None)
                w.value = default
            self._prefill(ax)

    def _prefill(self, ax):
        """Start a newly chosen field at a range around its current value (the user edits it)."""
        a = self.axes[ax]
        spec = self._specs.get(a["field"].value)
        if spec is None or a.get("_filled") == a["field"].value:
            return
        a["_filled"] = a["field"].value
        d = self.dash
        v = spec.default
        try:
            if a["field"].value in d.hparam_form.widgets:
                v = d.hparam_form.values().get(a["field"].value, v)
            elif a["field"].value == "batch_size":
                v = None
        except ValueError:
            pass
        lo_b = spec.low if spec.low is not None else -math.inf
        hi_b = spec.high if spec.high is not None else math.inf
        if spec.log or a["field"].value == "batch_size":
            v = v if isinstance(v, (int, float)) and v > 0 else (32 if spec.kind == "int" else 1e-2)
            lo, hi, scale = max(v / 10, lo_b if lo_b > 0 else v / 10), min(v * 10, hi_b), "log"
            if spec.kind == "int":
                lo, hi = max(1, int(lo)), int(hi)
        else:
            v = v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0
            lo = lo_b if math.isfinite(lo_b) else v - 1
            hi = hi_b if math.isfinite(hi_b) else v + 1
            scale = "linear"
        a["min"].value, a["max"].value, a["scale"].value = f"{lo:.6g}", f"{hi:.6g}", scale

    def _axis(self, ax):
        a = self.axes[ax]
        field = a["field"].value
        if field not in self._specs:
            raise ValueError(f"{ax}: choose a field to sweep; got {field!r}")
        vals = axis_values(field, a["min"].value, a["max"].value, a["n"].value, a["scale"].value,
                           spec=self._specs[field], label=ax)
        return field, vals

    def _int_field(self, widget, name, low, high, pane):
        text = str(widget.value).strip()
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or not low <= v <= high:
            msg = f"{name}={text!r} is out of range: an integer in [{low}, {high}]"
            pane.object, pane.visible = escape(msg), True
            raise ValueError(msg)
        pane.object, pane.visible = "", False
        return v

    def _sweep_name(self):
        text = str(self.name.value or "").strip() or time.strftime("sweep-%Y%m%d-%H%M%S")
        if not _NAME.match(text) or ".." in text:
            raise ValueError(f"name={text!r} is not allowed: use {NAME_RULE} (no folders, no '..')")
        root = (Path(self.dash.results_dir) / "sweeps")
        real_results = Path(self.dash.results_dir).resolve()
        d = (root / text).resolve()
        if d.parent != root.resolve() or root.resolve().parent != real_results:
            raise ValueError(f"name={text!r} is not allowed: sweeps stay inside the results folder's sweeps/")
        if d.exists():
            raise ValueError(f"name={text!r}: a sweep of that name already exists in the results folder; choose "
                             "another name")
        return text, root / text

    def _show(self, pane, msg):
        pane.object = escape(msg)
        pane.visible = bool(msg)

    def _clear_errors(self):
        for pane in (self.error, self.name_error, self.seeds_error, self.workers_error,
                     *(a["error"] for a in self.axes.values())):
            self._show(pane, "")

    # -- launching -------------------------------------------------------------------------------------------
    def prepare(self) -> dict:
        """Validate the grid and everything it is built from; the keyword arguments of ``wb.sweep`` (plus the
        tasks), or ValueError (also shown beside the field it names)."""
        self._clear_errors()
        d = self.dash
        problem = d.problem_select.value
        if problem in d.user_problems:
            raise ValueError(f"problem {problem!r}: sweeps run registered problems only (their worker processes "
                             "rebuild the problem by name); choose one from the list")
        errors = []
        axes = {}
        for ax in ("x", "y"):
            try:
                axes[ax] = self._axis(ax)
            except ValueError as exc:
                self._show(self.axes[ax]["error"], str(exc))
                errors.append(str(exc))
        try:
            n_seeds = self._int_field(self.seeds, "seeds", 1, MAX_SEEDS, self.seeds_error)
        except ValueError as exc:
            errors.append(str(exc))
        try:
            n_workers = self._int_field(self.workers, "workers", 0, 64, self.workers_error)
        except ValueError as exc:
            errors.append(str(exc))
        try:
            name, directory = self._sweep_name()
        except ValueError as exc:
            self._show(self.name_error, str(exc))
            errors.append(str(exc))
        if errors:
            raise ValueError(errors[0])
        (xf, xs), (yf, ys) = axes["x"], axes["y"]
        if xf == yf:
            msg = f"y ({yf}): choose a field other than x's"
            self._show(self.axes["y"]["error"], msg)
            raise ValueError(msg)
        n_cells = len(xs) * len(ys) * n_seeds
        if n_cells > MAX_CELLS:
            msg = (f"cells: {len(xs)} x {len(ys)} points x {n_seeds} seed(s) = {n_cells} cells is out of range: at "
                   f"most {MAX_CELLS} cells per sweep from the app (fewer points or seeds)")
            raise ValueError(msg)
        # the Train controls: problem options, optimizer, hyperparameters, schedule, steps, seed, batch size
        popts = d.problem_form.values()
        rp = d.run_form.values()
        hp = d.hparam_form.values()
        sched = d.schedule_form.values()
        device = d._device()
        steps = rp["steps"]
        if steps * n_cells > MAX_TOTAL_STEPS:
            raise ValueError(f"steps={steps:,} is out of range for a sweep of {n_cells} cells: at most "
                             f"{MAX_TOTAL_STEPS:,} steps in all ({MAX_TOTAL_STEPS // n_cells:,} per cell)")
        probes = []
        for pname in SWEEP_PROBES:
            if d.probe_checks[pname].value:
                o = d.probe_forms[pname].values()
                probes.append({"type": {"sharpness": "Sharpness", "norms": "Norms"}[pname], **o})
        if d._is_function(problem):      # the 2D path, so an opened cell shows it on the surface
            probes.append({"type": "Trajectory", "every": 1})
        train = {"optimizer": d.optimizer_select.value, "steps": steps, "batch_size": rp["batch_size"],
                 **sched, **hp}
        grid = {xf: xs, yf: ys}
        if n_seeds > 1:
            grid["seed"] = [rp["seed"] + i for i in range(n_seeds)]
        else:
            train["seed"] = rp["seed"]
        for f in (xf, yf):
            train.pop(f, None)
            if f.startswith("problem."):
                popts.pop(f[len("problem."):], None)
        # memory: one cell (the largest problem options of the grid) against the app's per-run cap
        from workbench.config import probes_from_config
        probe_objs = probes_from_config(list(probes))
        size_keys = [f for f in (xf, yf) if f.startswith("problem.")]
        combos = [{}] if not size_keys else [dict(zip(size_keys, c)) for c in
                                             __import__("itertools").product(*(grid[k] for k in size_keys))]
        for c in combos:
            o = {**popts, **{k[len("problem."):]: v for k, v in c.items()}}
            try:
                n_params, data = L.problem_sizes(problem, o)
            except ValueError as exc:
                raise ValueError(f"problem options {o}: {exc}") from None
            L.check(n_params, steps, probe_objs, d.max_memory_mb, data_bytes=data)
        if "batch_size" in grid and not d._is_function(problem):
            n_train = len(d._make_problem().train)
            big = [b for b in grid["batch_size"] if b > n_train]
            if big:
                msg = (f"y (batch_size)" if yf == "batch_size" else "x (batch_size)") + \
                    f": {big[0]} is out of range: at most the {n_train} training examples"
                self._show(self.axes["y" if yf == "batch_size" else "x"]["error"], msg)
                raise ValueError(msg)
        kwargs = dict(problem=problem, grid=grid, problem_options=popts, train=train, probes=probes,
                      scheduler="synchronous" if n_workers == 0 else None,
                      n_workers=None if n_workers == 0 else n_workers, device=str(device), progress=False,
                      directory=str(directory))
        # wb.sweep validates the same way (eagerly): done here so the error is shown before anything starts
        tasks = grid_tasks(problem, grid, popts, train, probes)
        return {"kwargs": kwargs, "tasks": tasks, "name": name, "axes": (xf, yf)}
