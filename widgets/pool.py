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

from .worker import DONE, _Control, _one_line, default_workers

__all__ = ["ProcessRun", "RunPool", "SEND_EVERY_S", "HEAVY_EVERY_S", "KILL_AFTER_S"]

SEND_EVERY_S = 0.1        # a child sends what is new at most this often
HEAVY_EVERY_S = 0.5       # ... and its probe values at most this often
KILL_AFTER_S = 10.0       # a stopped child still alive after this long is killed
PRELOAD = ["widgets.pool", "widgets.worker", "widgets.runspec", "widgets.views"]


# -- in the worker process ---------------------------------------------------------------------------------
class _Sent:
    """What a child has already sent of its tracker's lists."""

    def __init__(self):
        self.n = 0
        self.probes: dict[str, int] = {}
        self.path = 0
        self.state = None


def _delta(tracker, sent: _Sent, ctl: _Control, waiting: bool) -> dict | None:
    """What is new since ``sent`` (None when nothing is). ``waiting``: read before the tracker's update, so that a
    run said to be held has all its steps in the delta."""
    run = ctl.run
    n = tracker.n
    cols = {k: v[sent.n:n] for k, v in tracker.cols.items()}
    counts = {k: len(v) for k, v in tracker.pvals.items()}
    probes = {k: (tracker.psteps[k][sent.probes.get(k, 0):c], tracker.pvals[k][sent.probes.get(k, 0):c])
              for k, c in counts.items() if c > sent.probes.get(k, 0)}
    m = len(tracker.path_steps)
    path = (tracker.path[sent.path:m].copy(), tracker.path_steps[sent.path:m]) if m > sent.path else None
    with run._lock:
        traj = next((len(s.steps) for s in run._slots if s.name == "trajectory"), 0)
        events = [dict(e) for e in run.events]
    grids, batch_sizes = {}, None
    for slot in run._slots:
        if hasattr(slot.probe, "batch_sizes"):
            batch_sizes = list(slot.probe.batch_sizes)
        grid = getattr(slot.probe, "grid", None)
        if grid is not None:
            grids[f"{slot.name}_density"] = np.asarray(grid, dtype=float)
    status = "running" if run.status == "pending" else run.status
    meta = {"status": status, "step": run.step, "diverged_at": run.diverged_at, "events": events,
            "optimizer_name": run.optimizer_name, "hparams": dict(run.hparams), "base_lr": run.base_lr,
            "waiting": waiting, "traj": traj, "error": None if run.error is None else _one_line(run.error),
            "grids": grids, "batch_sizes": batch_sizes}
    state = (n, tuple(sorted(counts.items())), m, status, meta["waiting"], len(events), traj,
             meta["optimizer_name"], tuple(sorted(meta["hparams"].items())))
    if state == sent.state:
        return None
    sent.state, sent.n, sent.path, sent.probes = state, n, m, counts
    return {"cols": cols, "probes": probes, "path": path, "meta": meta}


def _child_main(conn, spec: dict, paused: bool, threads: int):
    """A worker process: build the run from ``spec``, train it in a thread, stream, obey orders."""
    send_lock = threading.Lock()

    def send(msg):
        with send_lock:
            conn.send(msg)

    try:
        import torch
        torch.set_num_threads(max(1, threads))
        from .runspec import build_run, compute_plane
        from .views import RunTracker
        prob, run = build_run(spec)
    except BaseException as exc:  # a bad spec is said, never raised into nothing
        send(("failed", _one_line(exc)))
        conn.close()
        return
    send(("started", {"device": str(run.device), "steps": run.steps, "optimizer_name": run.optimizer_name,
                      "hparams": dict(run.hparams), "base_lr": run.base_lr, "probe_names": run.probe_names,
                      "problem_kind": prob.kind, "problem_name": prob.name, "config": run.config,
                      "label": f"{run.optimizer_name} lr={run.hparams.get('lr', float('nan')):.3g}",
                      "optimizer": run.config["optimizer"], "batch_size": run.batch_size}))
    tracker = RunTracker(run)
    ctl = _Control(run, paused=paused)       # started now, or at the first Resume/Step when paused
    sent = _Sent()
    last_send = last_heavy = 0.0

    def plane(label):
        try:
            send(("plane", compute_plane(run.record, prob, label=label)))
        except Exception as exc:
            send(("plane", {"error": f"PCA-plane view: {_one_line(exc)}"}))

    while True:
        while conn.poll():
            try:
                msg = conn.recv()
            except (EOFError, OSError):     # the server went away: stop training
                ctl.stop()
                run.wait(KILL_AFTER_S)
                return
            if msg[0] == "plane":
                threading.Thread(target=plane, args=(msg[1],), daemon=True).start()
                continue
            try:
                ctl.apply(msg)
            except ValueError as exc:
                send(("swap_error", str(exc)))
        done, waiting = run.done, ctl.waiting       # both before the update: the delta then has every step
        now = time.perf_counter()
        if done or now - last_send >= SEND_EVERY_S:
            # the probes at most every HEAVY_EVERY_S, except on 2D functions (cheap, and the path is the view)
            heavy = done or prob.kind == "function" or now - last_heavy >= HEAVY_EVERY_S
            tracker.update(probes=heavy)
            if heavy:
                last_heavy = now
            d = _delta(tracker, sent, ctl, waiting)
            if d is not None:
                send(("delta", d))
            last_send = now
        if done:
            send(("done", run.record))
            conn.close()
            return
        conn.poll(0.02)


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

    # -- lifecycle (the pool calls _launch) ---------------------------------------------------------------
    def _launch(self, ctx, threads: int):
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, self.spec, self.paused_at_start, threads),
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
        conn = self._conn
        try:
            while True:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    break
                self._fold(msg)
                if msg[0] in ("done", "failed"):
                    break
        finally:
            with self._lock:
                crashed = self.status not in DONE or (self.record is None and not self.failed
                                                      and not self.error_text)
            if crashed:
                self.proc.join(5)           # for its exit code (a signal says kill -9 / out of memory)
            with self._lock:
                if crashed:
                    code = self.proc.exitcode
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    self.status = "crashed"
                    self.error_text = self.error_text or (
                        f"the worker process died ({how}) at step {self.n}; the curves up to there are kept")
                self.waiting = False
                self._conn = None
            try:
                conn.close()
            except OSError:
                pass
            self._done.set()
            self.pool._finished(self)
            self.proc.join(5)               # reap the finished child (the run is already done for the views)

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
    where it exists: children fork from a server that imported torch and the workbench once)."""

    def __init__(self, max_workers: int | None = None, context: str | None = None):
        if max_workers is None:
            max_workers = default_workers()
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or not 1 <= max_workers <= 256:
            raise ValueError(f"max_workers must be an integer in [1, 256]; got {max_workers!r}")
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
                h._launch(self._ctx, threads)
            except Exception as exc:  # e.g. no more processes: the run says so
                with self._lock:
                    self._active.discard(h)
                    h.status, h.error_text = "crashed", f"could not start a worker process: {_one_line(exc)}"
                h._done.set()

    def _cancel(self, h: ProcessRun) -> bool:
        with self._lock:
            if h in self._queue:
                self._queue.remove(h)
                h.status = "stopped"
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
