"""The dashboard's session: one ``param.Parameterized`` object that owns what a visitor is doing — the chosen
problem, optimizer, hyperparameters, run options, schedule and probes (the experiment, which the page's URL carries),
the run lifecycle, the pinned runs and the record being viewed. It has no widgets: the Dashboard binds its controls
to it and draws its snapshots with the pure record→figure functions of ``widgets.views``; tests drive it directly.

Lifecycle (``state``)::

    idle --start--> running <--pause/resume--> paused --step--> paused
      ^               |  (queued first when every worker is busy)
      |               +--> finished | diverged | stopped | crashed
      +----reset------+    load/view --> viewing

Runs train in this process (``pool=None``: a notebook's inline dashboard) or in a worker process of a
``widgets.pool.RunPool`` (``workbench app``), through the same handle interface.
"""
from __future__ import annotations

import param

import workbench as wb

from . import views as V
from .runspec import RUN_PARAMS, build_run, is_function_problem
from .worker import DONE, LocalRun

__all__ = ["Session", "STATES", "MAX_PINS"]

STATES = ["idle", "queued", "running", "paused", "finished", "diverged", "stopped", "crashed", "viewing"]
MAX_PINS = 8


class Session(param.Parameterized):
    """One visitor's experiment and run; see the module doc."""

    problem = param.String(default="rosenbrock", doc="problem name (registered or the user's own)")
    problem_options = param.Dict(default={}, doc="the problem's options")
    optimizer = param.String(default="adam", doc="optimizer name")
    hparams = param.Dict(default={}, doc="optimizer hyperparameters")
    schedule = param.Dict(default={}, doc="lr schedule options")
    run_options = param.Dict(default={p.name: p.default for p in RUN_PARAMS}, doc="steps, seed, batch_size")
    probes = param.Dict(default={"eval": {"every": 25}}, doc="probe name -> options, for the probes that run")
    device = param.String(default="auto")
    state = param.Selector(default="idle", objects=STATES, doc="where the run is in its lifecycle")
    pins = param.List(default=[], doc="pinned snapshots (overlaid on the views)")
    loaded = param.Parameter(default=None, doc="a record being viewed (xarray.Dataset)")
    loaded_label = param.String(default=None, allow_None=True)
    message = param.String(default="", doc="the last error or warning for the visitor")

    def __init__(self, pool=None, user_problems=None, **params):
        super().__init__(**params)
        self.pool = pool
        self.user_problems = dict(user_problems or {})
        self.handle = None
        self.problem_obj = None

    # -- the experiment -------------------------------------------------------------------------------------
    def is_function(self) -> bool:
        return is_function_problem(self.problem, self.user_problems)

    def spec(self) -> dict:
        """The run spec (``widgets.runspec``) for the current experiment."""
        if self.problem in self.user_problems:
            prob = self.user_problems[self.problem]
            pspec = {"user": getattr(prob, "_user_spec", None), "name": self.problem}
        else:
            pspec = {"name": self.problem, "seed": 0, "options": dict(self.problem_options)}
        return {"problem": pspec, "optimizer": self.optimizer, "hparams": dict(self.hparams),
                "schedule": dict(self.schedule), "run": dict(self.run_options), "device": self.device,
                "probes": {k: dict(v) for k, v in self.probes.items()},
                "kind": "function" if self.is_function() else None}

    def make_problem(self):
        if self.problem in self.user_problems:
            return self.user_problems[self.problem]
        return wb.problems.make(self.problem, seed=0, **self.problem_options)

    # -- lifecycle ------------------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self.handle is not None and not self.handle.done

    def start(self, paused: bool = False, problem=None):
        """Start the current experiment (stopping any run). In this process the run is built now (ValueError
        naming the field for a bad value); in a worker process it is built there and a bad value ends it as
        crashed with the message. ``problem``: an already built problem to reuse (in this process only)."""
        self.stop()
        spec = self.spec()
        use_pool = self.pool is not None and spec["problem"].get("user", True) is not None   # (an in-memory
        # problem of the user's, with no file to load it from, trains here)
        if use_pool:
            handle = self.pool.submit(spec, paused=paused)
            self.problem_obj = problem if problem is not None and problem.kind == "function" else None
        else:
            prob, run = build_run(spec, problem=problem if problem is not None else self.make_problem())
            self.problem_obj = prob
            handle = LocalRun(run, paused=paused)
        self.handle = handle
        self.loaded = None
        self.loaded_label = None
        self.message = ""
        self.poll_state()
        return handle

    def poll_state(self) -> str:
        """Bring ``state`` up to date with the run (call it on each tick)."""
        h = self.handle
        if h is None:
            new = "viewing" if self.loaded is not None else "idle"
        elif h.done:            # (a worker's record has arrived by then)
            new = h.status if h.status in DONE else "stopped"
        elif h.status == "queued":
            new = "queued"
        elif h.waiting:
            new = "paused"
        else:
            new = "running"
        if new != self.state:
            self.state = new
        return new

    def pause(self):
        """Hold the run after its current update (hot swaps still apply before the next one)."""
        if self.live:
            self.handle.pause()

    def resume(self):
        if self.handle is not None:
            self.handle.resume()

    def step(self, problem=None):
        """One update: a live run pauses after its next update; otherwise a paused run starts and does one."""
        if self.live:
            self.handle.step_once()
            return self.handle
        h = self.start(paused=True, problem=problem)
        h.step_once()
        return h

    def stop(self, wait: float = 0.0):
        """Ask the run to stop (before its next update); ``wait``: seconds to wait for it."""
        h = self.handle
        if h is not None and not h.done:
            h.stop()
            if wait:
                h.wait(wait)
        self.poll_state()

    def reset(self):
        """Stop the run and forget it (pins stay)."""
        self.stop()
        self.handle = None
        self.loaded = None
        self.loaded_label = None
        self.message = ""
        self.poll_state()

    def swap(self, optimizer: str | None = None, **hparams) -> str:
        """Hot swap the live run's optimizer and/or hyperparameters (ValueError naming the field, and nothing
        changes); returns a warning when the lr the new optimizer gets (the one given, else the run's carried
        lr) is outside its usual range ("" otherwise, and for hyperparameter-only swaps). The session's
        ``optimizer``/``hparams`` follow, so that the next Start trains what the run now does."""
        carried = None
        if self.live:
            carried = hparams.get("lr", self.handle.base_lr)
            self.handle.hot_swap(optimizer=optimizer, **hparams)
        if optimizer is not None and optimizer != self.optimizer:
            new = dict(hparams)
            if carried is not None and "lr" not in new:
                new["lr"] = carried
            self.param.update(optimizer=optimizer, hparams=new)
        elif hparams:
            self.hparams = {**self.hparams, **hparams}
        if optimizer is None or carried is None:
            return ""
        return swap_lr_warning(optimizer, carried)

    # -- what the views show --------------------------------------------------------------------------------
    def snapshot(self, probes: bool = True, path: bool = False) -> dict | None:
        """The current run's (or the viewed record's) values as the views' dict."""
        if self.handle is not None:
            snap = self.handle.snapshot(probes=probes)
            if not path:
                snap.pop("path", None)
            return snap
        if self.loaded is not None:
            snap = V.snapshot_record(self.loaded, label=self.loaded_label)
            if path and "trajectory" in self.loaded and self.loaded["trajectory"].shape[-1] == 2:
                import numpy as np
                snap["path"] = np.asarray(self.loaded["trajectory"].values, dtype=float)
            return snap
        return None

    @property
    def record(self):
        """The run's record (a worker's arrives when it ends) or the viewed one."""
        if self.handle is not None:
            return self.handle.record
        return self.loaded

    # -- compare ------------------------------------------------------------------------------------------
    def pin(self, snap: dict | None = None):
        """Pin the current (or a given) snapshot; at most MAX_PINS stay (the oldest go)."""
        if snap is None:
            snap = self.snapshot(path=True)
        if snap is None or not len(snap["step"]):
            raise ValueError("Nothing to pin yet: run (or load) something first.")
        self.pins = (self.pins + [snap])[-MAX_PINS:]
        return snap

    def clear_pins(self):
        self.pins = []

    # -- records ------------------------------------------------------------------------------------------
    def view(self, ds, label: str):
        """Stop any run and view record ``ds``; the problem is rebuilt from its config (one of the user's own
        when it matches) so that 2D functions show their path."""
        self.stop()
        self.handle = None
        self.problem_obj = None
        try:
            cfg = wb.records.config(ds).get("problem", {})
            mine = [p for p in self.user_problems.values() if p.config() == cfg]
            self.problem_obj = mine[0] if mine else \
                wb.problems.make(cfg["name"], seed=cfg.get("seed", 0), **cfg.get("options", {}))
        except Exception:
            self.problem_obj = None
        self.loaded_label = label
        self.loaded = ds
        self.poll_state()
        return ds

    def load(self, path):
        """View the saved record at ``path`` (``wb.load``: verified, never hangs)."""
        ds = wb.load(path)
        return self.view(ds, f"{ds.attrs.get('optimizer', '?')} ({getattr(path, 'stem', path)})")


def swap_lr_warning(optimizer, lr) -> str:
    """A warning when a hot swap carried an lr outside ``optimizer``'s typical range (registry.typical_lr)."""
    from workbench.optim.registry import typical_lr
    rng = typical_lr(optimizer) if isinstance(lr, (int, float)) else None
    if rng is None or rng[0] <= lr <= rng[1]:
        return ""
    return (f"Warning: the swap carried lr={lr:.3g} into {optimizer}, outside its usual range "
            f"{rng[0]:.0e}..{rng[1]:.0e}; it may blow up — set a smaller lr." if lr > rng[1] else
            f"Warning: the swap carried lr={lr:.3g} into {optimizer}, below its usual range "
            f"{rng[0]:.0e}..{rng[1]:.0e}; it may barely move.")

