"""The dashboard's session object (widgets.session.Session) without a browser, on real runs: its lifecycle with runs
trained in a thread of this process (``pool=None``, LocalRun) and in worker processes (``RunPool``, ProcessRun):
start -> finished with the same losses as ``wb.train``, pause / step / resume, hot swaps (and their lr warning),
stop, pins, load, reset; and, for the pool, queueing, bad specs and a worker killed mid-run."""
import json
import os
import signal
import time

import numpy as np
import pytest

import workbench as wb
from widgets.pool import ProcessRun, RunPool
from widgets.session import MAX_PINS, Session
from widgets.worker import DONE, LocalRun

LONG = 10**6          # steps of a run that only ends when it is stopped
NET = {"n_train": 64, "width": 16, "depth": 1}


def wait_for(pred, timeout: float, what: str):
    """Poll ``pred`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.perf_counter() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.perf_counter() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def pool():
    p = RunPool(max_workers=2)
    yield p
    p.shutdown()


@pytest.fixture(params=["local", "pool"])
def mode(request):
    return request.param


@pytest.fixture
def make(mode, request):
    """A session factory for ``mode``; every run it started is stopped at the end of the test."""
    sessions = []

    def make(**kw):
        p = request.getfixturevalue("pool") if mode == "pool" else None
        opts = {"problem": "rosenbrock", "optimizer": "adam", "hparams": {"lr": 5e-3}, "device": "cpu",
                "probes": {}, "run_options": {"steps": 200, "seed": 0, "batch_size": None}}
        opts.update(kw)
        s = Session(pool=p, **opts)
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.stop()
        if s.handle is not None:
            s.handle.wait(10)


def long_run(make, **kw):
    """A started session whose run only ends when stopped, with a few steps done."""
    s = make(run_options={"steps": LONG, "seed": 0, "batch_size": None}, **kw)
    h = s.start()
    wait_for(lambda: h.n >= 5, 30, "the first steps")
    assert s.poll_state() == "running"
    return s, h


def finish(s, timeout=30):
    assert s.handle.wait(timeout), f"run did not end (status {s.handle.status})"
    return s.poll_state()


# -- start -> finished, same numbers as wb.train ------------------------------------------------------------
def test_a_2d_run_finishes_with_the_losses_of_wb_train(make, mode):
    s = make()
    assert s.state == "idle"
    h = s.start()
    assert isinstance(h, LocalRun if mode == "local" else ProcessRun)
    assert s.state in ("running", "queued")
    assert finish(s) == "finished"
    ref = wb.train(wb.problems.make("rosenbrock", seed=0), optimizer="adam", lr=5e-3, steps=200, seed=0,
                   device="cpu", progress=False)
    rec = s.record
    assert rec.attrs["status"] == "finished" and rec.sizes["step"] == 200
    np.testing.assert_array_equal(rec["loss"].values, ref.record["loss"].values)
    snap = s.snapshot(path=True)
    np.testing.assert_array_equal(snap["loss"], ref.record["loss"].values)
    assert snap["status"] == "finished" and snap["path"].shape == (201, 2)      # the 2D path, final point too


def test_a_network_run_finishes_with_the_losses_of_wb_train(make, mode):
    s = make(problem="digits-mlp", problem_options=dict(NET), optimizer="sgd", hparams={"lr": 0.1},
             probes={"eval": {"every": 25}}, run_options={"steps": 60, "seed": 0, "batch_size": 16})
    s.start()
    assert finish(s, 60) == "finished"
    ref = wb.train(wb.problems.make("digits-mlp", seed=0, **NET), optimizer="sgd", lr=0.1, steps=60,
                   batch_size=16, seed=0, device="cpu", progress=False,
                   probes=[wb.probes.Eval(every=25, split="both")])
    got, want = s.record["loss"].values, ref.record["loss"].values
    if mode == "local":
        np.testing.assert_array_equal(got, want)
    else:       # the worker trains with its own torch thread count
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    assert "eval" in "".join(s.record.data_vars)
    snap = s.snapshot()
    assert snap["probes"], "the Eval probe's values reach the snapshot"


# -- pause / step / resume ----------------------------------------------------------------------------------
def test_pause_holds_step_does_exactly_one_update_resume_goes_on(make):
    s, h = long_run(make)
    s.pause()
    wait_for(lambda: s.poll_state() == "paused", 5, "the paused state")
    n = h.n
    time.sleep(0.5)
    assert h.n == n, "a paused run must not train"
    for k in (1, 2):
        s.step()
        wait_for(lambda: h.n >= n + k, 5, f"step {k}")
        wait_for(lambda: s.poll_state() == "paused", 5, "the paused state after a step")
        time.sleep(0.3)
        assert h.n == n + k, f"one Step must do exactly one update ({h.n - n - k + 1} done)"
    s.resume()
    wait_for(lambda: h.n >= n + 20, 10, "training after resume")
    assert s.poll_state() == "running"


def test_step_from_idle_starts_paused_and_does_one_update(make):
    s = make(run_options={"steps": LONG, "seed": 0, "batch_size": None})
    h = s.step()
    wait_for(lambda: h.n >= 1, 30, "the first update")
    wait_for(lambda: s.poll_state() == "paused", 5, "the paused state")
    time.sleep(0.3)
    assert h.n == 1
    s.step()
    wait_for(lambda: h.n >= 2, 5, "the second update")
    time.sleep(0.3)
    assert h.n == 2 and s.poll_state() == "paused"


def test_a_run_started_paused_does_nothing_until_told(make):
    s = make()
    h = s.start(paused=True)
    wait_for(lambda: s.poll_state() == "paused", 30, "the paused state")
    time.sleep(0.3)
    assert h.n == 0
    s.resume()
    assert finish(s) == "finished" and s.record.sizes["step"] == 200


# -- hot swap ---------------------------------------------------------------------------------------------
def test_hot_swap_changes_the_optimizer_and_warns_about_the_carried_lr(make):
    s, h = long_run(make)
    assert s.swap("adamw") == ""                        # 5e-3 carried into adamw: in its usual range
    wait_for(lambda: h.optimizer_name == "adamw" and len(h.events) == 1, 10, "the swap to adamw")
    assert s.optimizer == "adamw" and s.hparams["lr"] == pytest.approx(5e-3)
    assert s.swap(lr=0.5) == ""                         # hyperparameters only: no warning
    wait_for(lambda: len(h.events) == 2 and h.base_lr == 0.5, 10, "the lr swap")
    msg = s.swap("lion")                                # 0.5 carried into lion (usual 1e-5..1e-2)
    assert msg.startswith("Warning") and "lion" in msg and "outside its usual range" in msg
    assert s.optimizer == "lion" and s.hparams == {"lr": 0.5}
    msg = s.swap("prodigy", lr=1e-3)                    # prodigy's usual range is 0.1..10
    assert "prodigy" in msg and "below its usual range" in msg
    with pytest.raises(ValueError, match="lr"):
        s.swap(lr=-1.0)
    with pytest.raises(ValueError, match="nope"):
        s.swap("nope")
    assert s.optimizer == "prodigy" and s.hparams["lr"] == 1e-3, "a rejected swap changes nothing"
    wait_for(lambda: len(h.events) == 4, 10, "the swap to prodigy")
    assert s.poll_state() == "running"
    s.stop()
    finish(s, 10)
    rec = s.record
    events = json.loads(rec.attrs["events"])
    assert [e["optimizer"] for e in events] == ["adamw", "adamw", "lion", "prodigy"]
    assert events[1]["changed"] == ["lr"] and events[1]["hparams"]["lr"] == 0.5
    assert events[2]["hparams"]["lr"] == 0.5 and events[3]["hparams"]["lr"] == 1e-3
    opt = rec["optimizer"].values
    k = events[0]["step"]
    assert opt[k - 1] == "adam" and opt[k] == "adamw" and opt[-1] == "prodigy"
    assert [e["optimizer"] for e in s.snapshot()["events"]] == ["adamw", "adamw", "lion", "prodigy"]


# -- stop ---------------------------------------------------------------------------------------------------
def test_stop_ends_within_a_second_and_keeps_the_steps(make):
    s, h = long_run(make)
    t0 = time.perf_counter()
    s.stop()
    wait_for(lambda: s.poll_state() == "stopped", 1.0, "the stopped state")
    assert time.perf_counter() - t0 < 1.0
    rec = s.record
    n = rec.sizes["step"]
    assert n >= 5 and rec.attrs["status"] == "stopped" and rec.attrs["steps_done"] == n
    assert len(s.snapshot()["loss"]) == n
    assert not s.live
    s.stop()                                            # a second stop is harmless
    assert s.state == "stopped"


def test_stop_while_paused(make):
    s, h = long_run(make)
    s.pause()
    wait_for(lambda: s.poll_state() == "paused", 5, "the paused state")
    n = h.n
    s.stop()
    wait_for(lambda: s.poll_state() == "stopped", 1.0, "the stopped state")
    assert s.record.sizes["step"] == n, "stopping a paused run does no more updates"


# -- pins, load, reset ------------------------------------------------------------------------------------
def test_pins(make):
    s = make()
    with pytest.raises(ValueError, match="Nothing to pin"):
        s.pin()
    s.start()
    finish(s)
    snap = s.pin()
    assert len(s.pins) == 1 and len(snap["step"]) == 200 and "path" in snap
    for i in range(MAX_PINS + 2):
        s.pin({**snap, "label": f"pin {i}"})
    assert len(s.pins) == MAX_PINS and s.pins[-1]["label"] == f"pin {MAX_PINS + 1}"
    s.clear_pins()
    assert s.pins == []


def test_load_views_a_saved_record_and_reset_forgets_it(make, tmp_path):
    run = wb.train(wb.problems.make("rosenbrock", seed=0), optimizer="sgd", lr=1e-3, steps=50, seed=0,
                   device="cpu", progress=False, probes=[wb.probes.Trajectory(every=1)])
    path = tmp_path / "saved.nc"
    wb.save(run.record, path)
    s, h = long_run(make)
    s.pin()
    s.load(path)
    assert s.state == "viewing" and s.handle is None
    assert h.wait(5) and h.status == "stopped", "loading stops the live run"
    snap = s.snapshot(path=True)
    np.testing.assert_array_equal(snap["loss"], run.record["loss"].values)
    assert snap["label"] == "sgd (saved)" and snap["path"].shape == (51, 2)
    assert s.record is s.loaded and s.problem_obj is not None and s.problem_obj.name == "rosenbrock"
    s.reset()
    assert s.state == "idle" and s.loaded is None and s.snapshot() is None
    assert len(s.pins) == 1, "pins survive a reset"


def test_reset_stops_the_run(make):
    s, h = long_run(make)
    s.reset()
    assert s.state == "idle" and s.handle is None and s.record is None
    assert h.wait(5) and h.status == "stopped"


# -- bad input --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,kw", [("lr", {"hparams": {"lr": -1.0}}), ("optimizer", {"optimizer": "nope"})])
def test_a_bad_value(make, mode, field, kw):
    s = make(**kw)
    if mode == "local":           # built here: the ValueError names the field
        with pytest.raises(ValueError, match=field):
            s.start()
        assert s.state == "idle"
        return
    h = s.start()                 # built in the worker: the run ends crashed, saying why
    assert finish(s, 30) == "crashed"
    assert field in h.error_text and "ValueError" in h.error_text
    assert h.record is None and s.snapshot()["status"] == "crashed"


# -- the pool ---------------------------------------------------------------------------------------------
def spec(steps=200, **kw):
    s = Session(problem="rosenbrock", optimizer="adam", hparams={"lr": 5e-3}, device="cpu", probes={},
                run_options={"steps": steps, "seed": 0, "batch_size": None}, **kw)
    return s.spec()


def test_a_full_pool_queues_runs_in_order():
    one = RunPool(max_workers=1)
    try:
        first = one.submit(spec(LONG))
        second = one.submit(spec())
        third = one.submit(spec())
        assert second.status == "queued" and one.position(second) == 1 and one.position(third) == 2
        assert one.active == 1 and one.queued == 2
        s = Session(pool=one, device="cpu", probes={})
        s.handle = second
        assert s.poll_state() == "queued"
        third.stop()                                    # a queued run ends at once, never starting
        assert third.done and third.status == "stopped" and third.proc is None
        assert one.position(third) is None and one.position(second) == 1
        wait_for(lambda: first.n >= 5, 30, "the first run's steps")
        assert second.n == 0 and second.status == "queued"
        first.stop()
        assert first.wait(5) and first.status == "stopped"
        assert second.wait(30) and second.status == "finished" and second.record.sizes["step"] == 200
        assert one.position(second) is None and one.queued == 0
        wait_for(lambda: one.active == 0, 10, "the worker's slot to free once its child exits")
    finally:
        one.shutdown()


def test_a_killed_worker_crashes_and_keeps_its_curves(pool):
    s = Session(pool=pool, problem="rosenbrock", optimizer="adam", hparams={"lr": 5e-3}, device="cpu", probes={},
                run_options={"steps": LONG, "seed": 0, "batch_size": None})
    h = s.start()
    wait_for(lambda: h.n >= 20, 30, "streamed steps")
    n = h.n
    os.kill(h.proc.pid, signal.SIGKILL)
    assert h.wait(10)
    assert h.status == "crashed" and s.poll_state() == "crashed"
    assert "killed by signal 9" in h.error_text
    snap = s.snapshot(path=True)
    assert len(snap["loss"]) >= n and np.isfinite(snap["loss"]).all() and snap["status"] == "crashed"
    assert len(snap["path_steps"]) >= n
    assert h.record is None
    wait_for(lambda: pool.active == 0, 5, "the pool to free the worker")


def test_pool_rejects_bad_sizes():
    for bad in (0, 257, 1.5, True):
        with pytest.raises(ValueError, match="max_workers"):
            RunPool(max_workers=bad)


def test_worker_reexports_the_pool():
    import widgets.worker as W
    assert W.RunPool is RunPool and W.ProcessRun is ProcessRun
    assert set(DONE) == {"finished", "diverged", "stopped", "crashed"}
    with pytest.raises(AttributeError):
        W.nothing_here  # noqa: B018



def test_a_pool_run_says_finished_only_once_its_record_is_here(pool):
    """The page offers Export as soon as the status says "finished": the record must be there by then (the child
    sends its last delta, with the final status, before it pickles the record)."""
    h = pool.submit(spec(300))
    seen = []
    while not h.done:
        st, snap_status, rec = h.status, h.snapshot(probes=False)["status"], h.record
        seen.append(st)
        assert st not in DONE or rec is not None, f"status {st!r} before the record arrived"
        assert snap_status not in DONE or rec is not None, f"snapshot status {snap_status!r} before the record"
        time.sleep(0.001)
    assert h.status == "finished" and h.record is not None and h.record.sizes["step"] == 300
    assert "running" in seen


def _thread_policies(pid: int) -> dict:
    """{thread name: (scheduling policy, nice)} of process ``pid``, from /proc (Linux)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): nice is field 19, policy field 41
        out[int(tid)] = (int(fields[38]), int(fields[16]))
    return out


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
@pytest.mark.parametrize("priority", ["nice", "idle"])
def test_a_pool_worker_yields_the_cpu_to_the_server(priority):
    """Every worker runs at niceness 10; with priority "idle" its training thread is SCHED_IDLE too, while its main
    thread, which answers Stop, stays an ordinary thread; the calling process is untouched."""
    p = RunPool(max_workers=1, priority=priority)
    s = Session(pool=p, problem="rosenbrock", optimizer="adam", hparams={"lr": 5e-3}, device="cpu", probes={},
                run_options={"steps": LONG, "seed": 0, "batch_size": None})
    h = s.start()
    try:
        wait_for(lambda: h.n >= 5, 30, "the first steps")
        pol = _thread_policies(h.proc.pid)
        assert pol[h.proc.pid] == (os.SCHED_OTHER, 10), pol
        idle = [t for t, (policy, _) in pol.items() if policy == os.SCHED_IDLE]
        assert (len(idle) >= 1) == (priority == "idle"), pol
        assert all(n == 10 for _, n in pol.values()), pol
        assert os.sched_getscheduler(0) == os.SCHED_OTHER          # the calling process untouched
        s.stop()
        assert h.wait(10) and h.status == "stopped"
    finally:
        s.stop()
        h.wait(10)
        p.shutdown()


def test_pool_rejects_a_bad_priority():
    for bad in ("low", "", 3, None.__class__):
        with pytest.raises(ValueError, match="worker priority must be one of nice, idle"):
            RunPool(max_workers=1, priority=bad)
