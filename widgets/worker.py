"""Where the dashboard's work runs: one small abstraction for every kind of background work.

- :class:`LocalRun`: a ``wb.Run`` trained in a thread of this process (a notebook's inline dashboard, tests).
- ``ProcessRun`` from a ``RunPool`` (:mod:`widgets.pool`, also importable from here): a run trained in a worker
  process (``workbench app``), so that runs never compete with the server for its interpreter.
- :class:`Tasks`: named background jobs in threads (the PCA plane, a race, a PNG export) whose results the UI
  collects on its next tick.

Both run handles answer the same questions (``status``, ``done``, ``n``, ``snapshot()``, ``waiting``, ...) and
take the same orders (``pause``, ``resume``, ``step_once``, ``stop``, ``hot_swap``, ``wait``). A run started
paused does no update until it is resumed or stepped; a Step while paused lets exactly one update through.
"""
from __future__ import annotations

import os
import threading

__all__ = ["Gate", "LocalRun", "ProcessRun", "RunPool", "Tasks", "DONE", "default_workers"]

DONE = ("finished", "diverged", "stopped", "crashed")


def __getattr__(name):          # widgets.pool imports this module: import it only when asked
    if name in ("RunPool", "ProcessRun"):
        from . import pool
        return getattr(pool, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_workers() -> int:
    """``$WORKBENCH_APP_WORKERS`` or 8: runs that train at once in ``workbench app`` (more wait, queued)."""
    raw = os.environ.get("WORKBENCH_APP_WORKERS", "8")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise ValueError(f"WORKBENCH_APP_WORKERS must be an integer in [1, 256]; got {raw!r}")
    return n


class Gate:
    """The run's callback (called after each update): blocks the training thread while paused; a Step lets
    exactly one more update through."""

    def __init__(self, paused: bool = False):
        self._cv = threading.Condition()
        self.paused = paused
        self.credits = 0
        self.released = False
        self.waiting = False

    def __call__(self, row):
        with self._cv:
            if self.paused and self.credits > 0 and not self.released:
                self.credits -= 1       # a Step asked during this update: it was the one update
            while self.paused and self.credits == 0 and not self.released:
                self.waiting = True
                self._cv.wait(0.25)
            self.waiting = False
        return None

    def pause(self):
        with self._cv:
            self.paused = True

    def resume(self):
        with self._cv:
            self.paused = False
            self.credits = 0
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


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class _Control:
    """Drives a ``wb.Run`` through its gate. A run created paused is not started until its first Resume or Step
    (or Stop), so that it does no update before that. ``start``: how to start it (default ``run.start()``; the
    worker pool's children start it from a background-priority thread)."""

    def __init__(self, run, paused: bool = False, start=None):
        self.run = run
        self._start_run = start or (lambda r: r.start())
        self.gate = Gate(paused=paused)
        run.callback = self.gate
        self._start_lock = threading.Lock()
        self.started = False
        if not paused:
            self._start()

    def _start(self):
        with self._start_lock:
            if not self.started:
                self.started = True
                self._start_run(self.run)

    @property
    def waiting(self) -> bool:
        """Held by Pause (or not started yet because it was started paused)."""
        return not self.run.done and (self.gate.waiting or (not self.started and self.gate.paused))

    def pause(self):
        self.gate.pause()

    def resume(self):
        self.gate.resume()
        self._start()

    def step_once(self):
        if self.started:
            self.gate.step()
        else:           # the gate is paused with no credit: the thread does one update and holds
            self._start()

    def stop(self):
        self.run.stop()         # first, so that the released gate does not let one more update through
        self.gate.release()
        self._start()           # a never-started run ends "stopped" at once

    def hot_swap(self, optimizer=None, carry_state=True, **hparams):
        self.run.hot_swap(optimizer=optimizer, carry_state=carry_state, **hparams)

    def apply(self, msg):
        """An order as a message tuple (how a worker process receives them)."""
        kind = msg[0]
        if kind == "pause":
            self.pause()
        elif kind == "resume":
            self.resume()
        elif kind == "step":
            self.step_once()
        elif kind == "stop":
            self.stop()
        elif kind == "swap":
            _, optimizer, carry, hp = msg
            self.hot_swap(optimizer=optimizer, carry_state=carry, **hp)


def trajectory_count(run) -> int:
    """Snapshots ``run``'s Trajectory probe holds (0 without one)."""
    with run._lock:
        return next((len(s.steps) for s in run._slots if s.name == "trajectory"), 0)


class LocalRun(_Control):
    """A run trained in a thread of this process; ``run`` is the ``wb.Run`` itself."""

    kind = "local"

    def __init__(self, run, paused: bool = False):
        from .views import RunTracker
        self._tracker = RunTracker(run)
        self.problem_kind = run.problem.kind
        self.problem_name = run.problem.name
        super().__init__(run, paused=paused)

    def __getattr__(self, name):        # status, steps, device, optimizer_name, events, record, wait, ...
        if name.startswith("_") or name in ("run", "gate", "started"):
            raise AttributeError(name)
        return getattr(self.run, name)

    @property
    def status(self) -> str:
        s = self.run.status
        return "running" if s == "pending" else s

    @property
    def n(self) -> int:
        with self.run._lock:
            return len(self.run._hist["loss"])

    @property
    def error_text(self):
        e = self.run.error
        return None if e is None else _one_line(e)

    def snapshot(self, probes: bool = True) -> dict:
        self._tracker.update(probes=probes)      # only the new steps are copied
        snap = self._tracker.snapshot()
        if snap.get("status") == "pending":
            snap["status"] = "running"
        return snap

    def trajectory_count(self) -> int:
        return trajectory_count(self.run)


class Tasks:
    """Named background jobs (threads) whose results the UI collects on its next tick: ``submit(name, fn)``,
    ``busy(name)``, ``collect()`` -> ``[(name, result, error_text), ...]``, ``join(name, timeout)``."""

    def __init__(self):
        self._threads: dict[str, threading.Thread] = {}
        self._results: list[tuple] = []
        self._lock = threading.Lock()

    def submit(self, name: str, fn, *args) -> threading.Thread:
        def work():
            try:
                res, err = fn(*args), None
            except Exception as exc:  # reported to the UI, never raised into the server
                res, err = None, _one_line(exc)
            with self._lock:
                self._results.append((name, res, err))

        t = threading.Thread(target=work, name=f"workbench-{name}", daemon=True)
        with self._lock:
            self._threads[name] = t
        t.start()
        return t

    def post(self, name: str, result) -> None:
        """A result that a job delivers part by part (e.g. each racer of a race)."""
        with self._lock:
            self._results.append((name, result, None))

    def busy(self, name: str | None = None) -> bool:
        with self._lock:
            threads = [self._threads.get(name)] if name else list(self._threads.values())
            pending = bool(self._results)
        return any(t is not None and t.is_alive() for t in threads) or (name is None and pending)

    def thread(self, name: str):
        return self._threads.get(name)

    def join(self, name: str, timeout: float | None = None) -> None:
        t = self._threads.get(name)
        if t is not None:
            t.join(timeout)

    def collect(self) -> list[tuple]:
        with self._lock:
            out, self._results = self._results, []
        return out
