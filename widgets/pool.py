"""Runs trained in worker processes (``workbench app``): :class:`RunPool` and its handles, :class:`ProcessRun`.

Children are forked from a fork server that has already imported torch and the workbench (a start costs
milliseconds, not the seconds of a fresh interpreter); at most ``max_workers`` train at once and later runs say
they are queued. A child builds its run from a picklable spec (:mod:`widgets.runspec`) and streams what is new
(loss, lr, wall time, probe values, the 2D path, events, status) about ten times a second; a reader thread folds
it into a mirror, so the views read a snapshot exactly like a local run's (:class:`widgets.worker.LocalRun`).
When the run ends the child sends its record. A child that dies (kill -9, out of memory) leaves the curves
streamed so far and a "crashed" status naming its exit code; a stopped child that does not stop within
``KILL_AFTER_S`` is killed.
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import os
import threading
import time

import numpy as np

from .pool_child import HEAVY_EVERY_S, KILL_AFTER_S, SEND_EVERY_S, WORKER_PRIORITIES, _child_main  # noqa: F401
from .worker import DONE, _one_line, default_workers

__all__ = ["ProcessRun", "RunPool", "SEND_EVERY_S", "HEAVY_EVERY_S", "KILL_AFTER_S"]

PRELOAD = ["widgets.pool", "widgets.pool_child", "widgets.worker", "widgets.runspec", "widgets.views",
           "sklearn.datasets"]       # (the digits problems read sklearn's copy; a missing module is skipped)


# -- in the server -----------------------------------------------------------------------------------------
class ProcessRun:
    """A run trained in a worker process of ``pool``; reads like a ``LocalRun`` (see the module doc)."""

    kind = "process"

    def __init__(self, pool: "RunPool", spec: dict, paused: bool = False):
        self.pool, self.spec, self.paused_at_start = pool, spec, paused
        self.status = "queued"
        self.error_text = None
        self.failed = False
        self.swap_errors: list[str] = []
        self.plane_result = None
        self.record = None
        self.steps = spec["run"]["steps"]
        self.device = spec["device"]
        self.optimizer_name = spec["optimizer"]
        self.hparams = dict(spec.get("hparams", {}))
        self.base_lr = self.hparams.get("lr")
        self.events: list[dict] = []
        self.step = 0
        self.diverged_at = None
        self.waiting = False
        self.problem_name = spec["problem"].get("name")
        self.problem_kind = spec.get("kind")
        self.probe_names: list[str] = []
        self.config: dict = {}
        self.proc = None
        self._conn = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._meta: dict = {"label": f"{self.optimizer_name}", "optimizer": self.optimizer_name}
        self._cols = {"loss": [], "lr": [], "wall_time": []}
        self._probes: dict[str, tuple[list, list]] = {}
        self._path: list[np.ndarray] = []
        self._path_steps: list[int] = []
        self._traj = 0
        self._grids: dict = {}
        self._batch_sizes = None
        self._pending: list[tuple] = []     # orders given while queued
        self._stop_asked = None
        self._final_status = None
        self._closed = False

    # -- lifecycle (the pool calls _launch) ---------------------------------------------------------------
    def _launch(self, ctx, threads: int, priority: str = "nice"):
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, self.spec, self.paused_at_start, threads, priority),
                                daemon=True, name="workbench-run")
        self.proc.start()
        child.close()
        with self._lock:
            if self.status == "queued":
                self.status = "starting"
            self._conn = parent
            pending, self._pending = self._pending, []
        for msg in pending:
            self._send(msg)
        threading.Thread(target=self._read, name="workbench-run-reader", daemon=True).start()

    def _send(self, msg) -> bool:
        with self._lock:
            conn = self._conn
            if conn is None:
                self._pending.append(msg)
                return False
        try:
            conn.send(msg)
            return True
        except (OSError, ValueError):
            return False

    def _read(self):
        """Fold the child's messages until it closes the pipe. The run is done for the views when its record
        arrives; the child may still send the final PCA plane after it (``plane_pending`` meanwhile)."""
        conn = self._conn
        try:
            while True:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    break
                self._fold(msg)
                if msg[0] == "done":
                    self._end(crashed=False)
                elif msg[0] == "failed":
                    break
        finally:
            if not self._done.is_set():
                with self._lock:
                    crashed = self.status not in DONE or (self.record is None and not self.failed
                                                          and not self.error_text)
                if crashed:
                    self.proc.join(5)       # for its exit code (a signal says kill -9 / out of memory)
                self._end(crashed=crashed)
            with self._lock:
                self._conn = None
            try:
                conn.close()
            except OSError:
                pass
            self._closed = True
            self.pool._finished(self)       # the worker's slot is free once the child is gone
            self.proc.join(5)               # reap it

    def _end(self, crashed: bool):
        with self._lock:
            if crashed:
                code = self.proc.exitcode
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                self.status = "crashed"
                self.error_text = self.error_text or (
                    f"the worker process died ({how}) at step {self.n}; the curves up to there are kept")
            self.waiting = False
        self._done.set()

    @property
    def plane_pending(self) -> bool:
        """True while a finished run's child may still send its final PCA plane."""
        return self.done and not self._closed and "trajectory" in (self.probe_names or ())

    def _fold(self, msg):
        kind = msg[0]
        with self._lock:
            if kind == "started":
                m = msg[1]
                for k in ("device", "steps", "optimizer_name", "hparams", "base_lr", "probe_names", "problem_kind",
                          "problem_name", "config"):
                    setattr(self, k, m[k])
                self._meta.update(label=m["label"], optimizer=m["optimizer"])
                self.status = "running"
                self.waiting = self.paused_at_start
            elif kind == "delta":
                d = msg[1]
                for k, v in d["cols"].items():
                    self._cols[k].extend(v)
                for k, (s, v) in d["probes"].items():
                    ps, pv = self._probes.setdefault(k, ([], []))
                    ps.extend(s)
                    pv.extend(v)
                if d["path"] is not None:
                    self._path.append(d["path"][0])
                    self._path_steps.extend(d["path"][1])
                m = d["meta"]
                # a final status (finished/diverged/stopped) waits for the record: "done" means it can be saved
                if m["status"] in DONE:
                    self._final_status = m["status"]
                else:
                    self.status = m["status"]
                self.step, self.diverged_at = m["step"], m["diverged_at"]
                self.events, self.optimizer_name, self.hparams = m["events"], m["optimizer_name"], m["hparams"]
                self.base_lr, self.waiting, self._traj = m["base_lr"], m["waiting"], m["traj"]
                self.error_text = m["error"]
                self._grids, self._batch_sizes = m["grids"], m["batch_sizes"]
            elif kind == "done":
                self.record = msg[1]
                self.status = self._final_status or str(self.record.attrs.get("status", "finished"))
            elif kind == "failed":
                self.status, self.error_text, self.failed = "crashed", msg[1], True
            elif kind == "swap_error":
                self.swap_errors.append(msg[1])
            elif kind == "plane":
                self.plane_result = msg[1]

    # -- what the views read ------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def n(self) -> int:
        return len(self._cols["loss"])

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def trajectory_count(self) -> int:
        return self._traj

    def snapshot(self, probes: bool = True) -> dict:
        from .views import _floats
        with self._lock:
            n = len(self._cols["loss"])
            lr = self.hparams.get("lr", float("nan"))
            snap = {"label": f"{self.optimizer_name} lr={lr:.3g}" if isinstance(lr, (int, float)) else
                    self._meta["label"], "problem": self.problem_name, "optimizer": self._meta["optimizer"],
                    "status": self.status if self.status in DONE else "running", "diverged_at": self.diverged_at,
                    "steps_requested": self.steps, "step": np.arange(n),
                    **{k: _floats(v[:n]) for k, v in self._cols.items()},
                    "events": [dict(e) for e in self.events], "probes": {}, "grids": dict(self._grids)}
            for k, (s, v) in (self._probes.items() if probes else ()):
                try:
                    snap["probes"][k] = (np.asarray(s, dtype=float), np.asarray(v, dtype=float))
                except (TypeError, ValueError):
                    continue
            if self._batch_sizes is not None:
                snap["batch_sizes"] = list(self._batch_sizes)
            if self._path_steps:
                snap["path"] = np.concatenate(self._path).reshape(-1, 2)
                snap["path_steps"] = np.asarray(self._path_steps)
        return snap

    # -- orders -------------------------------------------------------------------------------------------
    def pause(self):
        self._send(("pause",))

    def resume(self):
        self._send(("resume",))

    def step_once(self):
        self._send(("step",))

    def stop(self):
        """Stop: a queued run ends at once; a running one before its next update (killed after KILL_AFTER_S)."""
        if self.done or self.pool._cancel(self):
            return
        self._send(("stop",))
        if self._stop_asked is None:
            self._stop_asked = time.perf_counter()
            t = threading.Timer(KILL_AFTER_S, self._kill_if_alive)
            t.daemon = True
            t.start()

    def _kill_if_alive(self):
        if not self.done and self.proc is not None and self.proc.is_alive():
            with self._lock:
                self.status = "stopped"
                self.error_text = f"the run did not stop within {KILL_AFTER_S:.0f} s and was killed"
            self.proc.kill()

    def hot_swap(self, optimizer=None, carry_state=True, **hparams):
        """Validated here (ValueError naming the field, as ``wb.Run.hot_swap``), applied in the worker."""
        import workbench as wb
        name = self.optimizer_name if optimizer is None else optimizer
        spec = wb.optimizers.spec(name)
        base = dict(self.hparams) if name == self.optimizer_name else {}
        if name != self.optimizer_name and "lr" not in hparams and self.base_lr is not None:
            base["lr"] = self.base_lr
        names = {p.name for p in spec.hparams}
        spec.validate({**{k: v for k, v in base.items() if k in names}, **hparams})
        self._send(("swap", name, bool(carry_state), dict(hparams)))

    def request_plane(self, label: str):
        self._send(("plane", label))


class RunPool:
    """Worker processes for runs: at most ``max_workers`` train at once (default :func:`default_workers`); the
    rest wait in order, status "queued". ``context``: a multiprocessing start method ("forkserver" by default
    where it exists: children fork from a server that imported torch and the workbench once). ``priority``: how a
    worker yields the CPU to the server (default ``$WORKBENCH_WORKER_PRIORITY`` or "nice"): "nice" runs the worker at
    niceness 10 (about a tenth of a core's share against one busy ordinary process); "idle" also puts its training
    thread under Linux's SCHED_IDLE, so it trains only on CPU time nothing else wants (on a 2-core server with six
    runs a new page loaded in 3.4 s instead of 4.1 s, benchmarks/dashboard_load.py; on a machine shared with other
    busy work the runs nearly stop, hence not the default)."""

    def __init__(self, max_workers: int | None = None, context: str | None = None, priority: str | None = None):
        if max_workers is None:
            max_workers = default_workers()
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or not 1 <= max_workers <= 256:
            raise ValueError(f"max_workers must be an integer in [1, 256]; got {max_workers!r}")
        if priority is None:
            priority = os.environ.get("WORKBENCH_WORKER_PRIORITY", "nice")
        if priority not in WORKER_PRIORITIES:
            raise ValueError(f"worker priority must be one of {', '.join(WORKER_PRIORITIES)}; got {priority!r}")
        self.priority = priority
        self.max_workers = max_workers
        if context is None:
            context = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._ctx = mp.get_context(context)
        if context == "forkserver":
            self._ctx.set_forkserver_preload(PRELOAD)
        self._lock = threading.Lock()
        self._active: set[ProcessRun] = set()
        self._queue: collections.deque[ProcessRun] = collections.deque()
        self.closed = False

    def submit(self, spec: dict, paused: bool = False) -> ProcessRun:
        if self.closed:
            raise RuntimeError("the run pool is shut down")
        h = ProcessRun(self, spec, paused=paused)
        with self._lock:
            self._queue.append(h)
        self._dispatch()
        return h

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def position(self, h: ProcessRun) -> int | None:
        """1-based place of ``h`` in the queue (None when it is not queued)."""
        with self._lock:
            for i, q in enumerate(self._queue):
                if q is h:
                    return i + 1
        return None

    def _dispatch(self):
        while True:
            with self._lock:
                if self.closed or not self._queue or len(self._active) >= self.max_workers:
                    return
                h = self._queue.popleft()
                self._active.add(h)
                threads = max(1, (os.cpu_count() or 1) // len(self._active))
            try:
                h._launch(self._ctx, threads, self.priority)
            except Exception as exc:  # e.g. no more processes: the run says so
                with self._lock:
                    self._active.discard(h)
                    h.status, h.error_text = "crashed", f"could not start a worker process: {_one_line(exc)}"
                h._closed = True
                h._done.set()

    def _cancel(self, h: ProcessRun) -> bool:
        with self._lock:
            if h in self._queue:
                self._queue.remove(h)
                h.status = "stopped"
                h._closed = True
                h._done.set()
                return True
        return False

    def _finished(self, h: ProcessRun):
        with self._lock:
            self._active.discard(h)
        self._dispatch()

    def warm_up(self, spec: dict, timeout: float = 120.0) -> bool:
        """Start the fork server (it imports torch and the workbench) and train ``spec`` once, so that the first
        visitor's run does not pay for it."""
        h = self.submit(spec)
        return h.wait(timeout) and h.status == "finished"

    def shutdown(self, timeout: float = 5.0):
        with self._lock:
            self.closed = True
            queued, self._queue = list(self._queue), collections.deque()
            active = list(self._active)
        for h in queued:
            h.status = "stopped"
            h._done.set()
        for h in active:
            h.stop()
        deadline = time.perf_counter() + timeout
        for h in active:
            h.wait(max(0.0, deadline - time.perf_counter()))
            if h.proc is not None and h.proc.is_alive():
                h.proc.kill()
