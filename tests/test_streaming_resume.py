"""Runs that die lose nothing (issue 16): a run streams its record to disk (train(save_to=..., save_every=...)) and
checkpoints; a kill -9 loses at most the steps since the last flush; wb.resume continues bit-for-bit on CPU; a
full disk warns, keeps the run in memory and leaves the previous file intact.

Wall-clock fields (``wall_time``, ``<probe>_seconds``) are the only data variables allowed to differ."""
import errno
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench as wb
from workbench import records
from workbench.run import checkpoint_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 150
SAVE_EVERY = 5


def _problem():
    return wb.problems.make("digits-mlp", width=32, n_train=300)


def _probes():
    return [wb.probes.Sharpness(every=10, max_samples=100), wb.probes.Norms(every=10)]


TRAIN = dict(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, steps=STEPS, device="cpu", progress=False)

CHILD = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[2]))     # the parent's count: float sums depend on it (1 ulp otherwise)
import workbench as wb
prob = wb.problems.make("digits-mlp", width=32, n_train=300)
def cb(row):
    if row["step"] == 0:
        print("ready", flush=True)
    time.sleep(0.005)          # stretch the run so that kills land in its middle; no effect on the numbers
wb.train(prob, optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, steps=%d, device="cpu", progress=False,
         probes=[wb.probes.Sharpness(every=10, max_samples=100), wb.probes.Norms(every=10)], callback=cb,
         save_to=sys.argv[1], save_every=%d)
print("done", flush=True)
""" % (STEPS, SAVE_EVERY)


def _wall(name):
    return name == "wall_time" or name.endswith("_seconds")


def assert_prefix(rec, ref):
    """``rec`` holds the first steps of ``ref`` (and the probe measurements up to them), value for value."""
    n = rec.sizes["step"]
    assert n <= ref.sizes["step"]
    for v in ref.data_vars:
        if _wall(v):
            continue
        assert v in rec.data_vars, v
        sel = {d: slice(0, rec.sizes[d]) for d in ref[v].dims if d == "step" or d.endswith("_step")}
        want = ref[v].isel(sel)
        for d in sel:
            np.testing.assert_array_equal(rec[d].values, want[d].values, err_msg=d)
        got = rec[v].values
        if got.dtype == object or want.dtype == object:
            assert list(got) == list(want.values), v
        else:
            np.testing.assert_array_equal(got, want.values, err_msg=v)
    for d in rec.dims:      # probes measured up to the last recorded step
        if d.endswith("_step") and rec.sizes[d]:
            assert rec[d].values[-1] <= n


def assert_same_run(rec, ref):
    assert rec.sizes == ref.sizes
    assert_prefix(rec, ref)
    for k in ("status", "steps_done", "config", "events", "diverged_at", "blew_up_at"):
        assert rec.attrs[k] == ref.attrs[k], k


@pytest.fixture(scope="module")
def reference():
    run = wb.train(_problem(), probes=_probes(), **TRAIN)
    assert run.status == "finished"
    return run.record


def test_streaming_does_not_change_the_run_and_the_file_is_complete(tmp_path, reference):
    path = tmp_path / "run.nc"
    run = wb.train(_problem(), probes=_probes(), save_to=path, save_every=SAVE_EVERY, **TRAIN)
    assert_same_run(run.record, reference)
    on_disk = records.load(path)
    assert_same_run(on_disk, reference)
    assert checkpoint_path(path).exists() and on_disk.attrs["status"] == "finished"
    with pytest.raises(ValueError, match="already ended"):
        wb.resume(path)


def _kill_and_resume(tmp_path, reference, n_kills, seed):
    rng = random.Random(seed)
    outcomes = []
    for i in range(n_kills):
        path = tmp_path / f"kill{i}" / "run.nc"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(torch.get_num_threads())],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 1.5))
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(60)
        rec = records.load(path)                 # always loads: every flush is atomic
        assert_prefix(rec, reference)            # and holds every step up to its last flush
        n = rec.sizes["step"]
        if rec.attrs["status"] == "finished":    # the child ended before the kill
            assert_same_run(rec, reference)
            outcomes.append(("finished", n))
            continue
        assert rec.attrs["status"] == "running" and n % SAVE_EVERY == 0
        resumed = wb.resume(path, progress=False)
        assert resumed.status == "finished"
        assert_same_run(resumed.record, reference)
        assert_same_run(records.load(path), reference)
        outcomes.append(("resumed", n))
    return outcomes


def test_kill9_then_resume_quick(tmp_path, reference):
    outcomes = _kill_and_resume(tmp_path, reference, 3, seed=1)
    assert any(kind == "resumed" for kind, _ in outcomes), outcomes


@pytest.mark.slow
def test_kill9_then_resume_ten_times(tmp_path, reference):
    outcomes = _kill_and_resume(tmp_path, reference, 10, seed=2)
    assert sum(kind == "resumed" for kind, _ in outcomes) >= 5, outcomes


# -- resume: hot swaps, schedules, custom problems, errors --------------------------------------------------------
def _swap_run(path=None, crash_at=None):
    prob = _problem()
    holder = []

    def cb(row):
        if row["step"] == 12:
            holder[0].hot_swap("sgd", lr=0.02, momentum=0.5)
        if crash_at is not None and row["step"] == crash_at:
            raise RuntimeError("simulated crash")
    kw = dict(optimizer="adam", lr=1e-3, batch_size=50, steps=40, device="cpu", progress=False,
              schedule="cosine", warmup=5, callback=cb, probes=[wb.probes.GradientSubspace(every=8, k=2, max_samples=100)])
    if path is not None:
        kw.update(save_to=path, save_every=4, checkpoint_every=8)
    run = wb.Run(prob, **kw)
    holder.append(run)
    return run.run()


def test_resume_after_hot_swap_and_schedule_is_bit_identical(tmp_path):
    ref = _swap_run().record
    path = tmp_path / "swap.nc"
    with pytest.raises(wb.RunCrashed):
        _swap_run(path, crash_at=29)
    assert records.load(path).attrs["status"] == "crashed"      # the crash's record is kept on disk
    resumed = wb.resume(path, progress=False)
    assert_same_run(resumed.record, ref)
    assert records.events(resumed.record)[0]["optimizer"] == "sgd"


def _quadratic():
    class Q(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    lam = torch.tensor([3.0, 1.0, 0.2])
    data = (torch.randn(64, 1, generator=torch.Generator().manual_seed(0)), torch.zeros(64))
    return wb.problems.custom(Q(), lambda m, b: 0.5 * (lam * m.theta ** 2).sum() * (1 + b[0].mean()), data,
                              kind="regression", loss_form="model")


def test_resume_custom_problem_needs_problem_argument(tmp_path):
    prob = _quadratic()
    kw = dict(optimizer="sgd", lr=0.05, batch_size=8, steps=30, device="cpu", progress=False)
    ref = wb.train(prob, **kw).record
    path = tmp_path / "q.nc"

    def cb(row):
        if row["step"] == 17:
            raise RuntimeError("simulated crash")
    with pytest.raises(wb.RunCrashed):
        wb.train(prob, save_to=path, save_every=5, callback=cb, **kw)
    with pytest.raises(ValueError, match="problem="):
        wb.resume(path)
    assert_same_run(wb.resume(path, problem=prob, progress=False).record, ref)


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        wb.resume(tmp_path / "nothing.nc")
    bad = tmp_path / "bad.nc"
    checkpoint_path(bad).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint"):
        wb.resume(bad)
    prob = wb.problems.make("rosenbrock")
    with pytest.raises(ValueError, match="save_to"):
        wb.Run(prob, optimizer="gd", lr=1e-3, steps=2, save_every=5)
    with pytest.raises(ValueError, match="save_every"):
        wb.Run(prob, optimizer="gd", lr=1e-3, steps=2, save_to=tmp_path / "a.nc", save_every=0)


# counters outside state_dict (zo_sgd), wrappers (lookahead, noisy), closures and Hessian refreshes (sophia)
QUICK_OPTIMIZERS = ("sgd", "adam", "zo_sgd", "sophia", "lookahead", "noisy")


def _optimizer_round_trip(opt, tmp_path):
    prob = wb.problems.make("digits-mlp", width=16, n_train=200)
    kw = dict(optimizer=opt, steps=16, batch_size=32, device="cpu", progress=False)
    ref = wb.train(prob, **kw).record

    def cb(row):
        if row["step"] == 11:
            raise RuntimeError("simulated crash")
    path = tmp_path / f"{opt}.nc"
    with pytest.raises(wb.RunCrashed):
        wb.train(prob, save_to=path, save_every=5, callback=cb, **kw)
    assert_same_run(wb.resume(path, progress=False).record, ref)


@pytest.mark.parametrize("opt", QUICK_OPTIMIZERS)
def test_resume_optimizer_state(opt, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _optimizer_round_trip(opt, tmp_path)


@pytest.mark.slow
def test_resume_every_optimizer(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for opt in wb.optimizers.list():
            _optimizer_round_trip(opt, tmp_path)


# -- full disk ----------------------------------------------------------------------------------------------------
def _streamed_with_failures(path, fill, unfill, steps=60):
    """A run streaming to ``path``; ``fill()`` after step 10's callback, ``unfill()`` after step 25's."""
    seen = {}

    def cb(row):
        if row["step"] == 10:
            fill()
        if row["step"] == 20:
            seen["during"] = records.load(path)        # the previous file, intact while saves fail
        if row["step"] == 25:
            unfill()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        run = wb.train(_problem(), optimizer="adam", lr=1e-3, batch_size=32, steps=steps, device="cpu",
                       progress=False, callback=cb, save_to=path, save_every=5)
    return run, seen["during"], [x for x in w if issubclass(x.category, RuntimeWarning) and "failed" in
                                 str(x.message)]


def _check_failures(run, during, warned, path):
    assert run.status == "finished" and run.record.sizes["step"] == 60      # the run kept going, in memory
    assert during.sizes["step"] == 10 and during.attrs["status"] == "running"
    assert len(warned) == 1 and str(path) in str(warned[0].message) and "previous file" in str(warned[0].message)
    assert str(path) in run.record.attrs["save_error"]
    final = records.load(path)      # saves succeed again once space is back
    assert final.sizes["step"] == 60 and final.attrs["status"] == "finished"
    np.testing.assert_array_equal(final.loss.values, run.record.loss.values)


def test_failing_saves_warn_and_keep_the_run(tmp_path, monkeypatch):
    path = tmp_path / "run.nc"
    real_save = records.save
    state = {"full": False}

    def save(record, p):
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(p))
        return real_save(record, p)
    monkeypatch.setattr(records, "save", save)
    real_torch_save = torch.save

    def tsave(obj, f, *a, **k):
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_torch_save(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", tsave)
    run, during, warned = _streamed_with_failures(path, lambda: state.update(full=True),
                                                  lambda: state.update(full=False))
    _check_failures(run, during, warned, path)


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_on_tmpfs(tmpfs):
    path = tmpfs / "run.nc"
    filler = tmpfs / "filler"

    def fill():
        with open(filler, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        fh_size = filler.stat().st_size
        assert fh_size > 0

    run, during, warned = _streamed_with_failures(path, fill, lambda: filler.unlink())
    _check_failures(run, during, warned, path)
    assert "No space left" in str(warned[0].message) or "0 bytes free" in run.record.attrs["save_error"]
