"""The worker-process side of ``widgets.pool``: a child builds its run from a spec (``widgets.runspec``), trains it
in a thread, streams what is new (:func:`_delta`) about every ``SEND_EVERY_S`` (probe values at most every
``HEAVY_EVERY_S``), obeys the server's orders (pause, resume, step, stop, swap, plane) and, when the run ends,
sends its record."""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from .worker import _Control, _one_line, trajectory_count

def _warm():
    """Pay the lazy first-use costs once, at import, so in the fork server (``RunPool`` preloads this module) and
    never in a child between its Run click and its first step: the first torch optimizer imports torch._dynamo
    (about 0.9 s), the first xarray Dataset its duck-array backends (about 1.4 s, between a run's last step and its
    record). Tensors this small never start torch's thread pool, so forking after this stays safe."""
    import torch
    import xarray as xr
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    p.sum().backward()
    opt.step()
    xr.Dataset({"v": ("step", np.zeros(1))}, coords={"step": [0]})


_warm()

WORKER_NICE = 10          # worker processes run at this niceness (training is the background work) ...
WORKER_PRIORITIES = ("nice", "idle")   # ... and with "idle" their training threads under Linux's SCHED_IDLE
                          # (see widgets.pool.RunPool's priority)
SEND_EVERY_S = 0.1        # a child sends what is new at most this often
HEAVY_EVERY_S = 0.5       # ... and its probe values at most this often
KILL_AFTER_S = 10.0       # a stopped child still alive after this long is killed (by the server)


def _background():
    """Make the calling thread (and the threads it starts later) SCHED_IDLE on Linux; elsewhere it keeps the
    process's niceness ``WORKER_NICE``."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))     # pid 0: this thread, on Linux
        except OSError:
            pass


def _start_in_background(run):
    """Start ``run``'s training thread from a thread that made itself background work (it inherits that), so the
    training gets the CPU the server and its pages leave while this process's main thread, which answers Stop,
    Pause and swaps and streams the deltas, stays at niceness ``WORKER_NICE``."""
    err = []

    def go():
        try:
            _background()
            run.start()
        except BaseException as exc:  # said by the caller
            err.append(exc)

    t = threading.Thread(target=go, name="workbench-start", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]


# ---------------------------------------------------------------------------------
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
    traj = trajectory_count(run)
    with run._lock:
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


def _child_main(conn, spec: dict, paused: bool, threads: int, priority: str = "nice"):
    """A worker process: build the run from ``spec``, train it in a thread, stream, obey orders."""
    send_lock = threading.Lock()

    def send(msg):
        with send_lock:
            conn.send(msg)

    try:
        if WORKER_NICE:
            os.nice(WORKER_NICE)        # the server (pages, clicks, Stop) comes first when the CPUs are busy
        import torch
        torch.set_num_threads(max(1, threads))
        from .runspec import PLANE_MIN_SNAPSHOTS, build_run, compute_plane
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
    ctl = _Control(run, paused=paused,                  # started now, or at the first Resume/Step
                   start=_start_in_background if priority == "idle" else None)
    sent = _Sent()
    last_send = last_heavy = 0.0

    def plane(label):
        try:
            send(("plane", compute_plane(run.record, prob, label=label)))
        except Exception as exc:
            send(("plane", {"error": f"PCA-plane view: {_one_line(exc)}"}))

    planes: list = []                   # mid-run plane threads: the final plane is sent after every one of them

    while True:
        while conn.poll():
            try:
                msg = conn.recv()
            except (EOFError, OSError):     # the server went away: stop training
                ctl.stop()
                run.wait(KILL_AFTER_S)
                return
            if msg[0] == "plane":
                planes[:] = [t for t in planes if t.is_alive()]
                planes.append(threading.Thread(target=plane, args=(msg[1],), daemon=True))
                planes[-1].start()
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
            send(("done", run.record))      # the run is over for the views now; a final plane may follow
            if "trajectory" in run.probe_names and trajectory_count(run) >= PLANE_MIN_SNAPSHOTS:
                for t in planes:            # a mid-run plane sent after the final one would replace it
                    t.join(KILL_AFTER_S)
                plane(f"{run.optimizer_name} (this run)")
            conn.close()
            return
        conn.poll(0.02)
