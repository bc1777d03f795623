"""Sweeps: a grid of runs on Dask, one record file per finished cell, combined into one record along named dimensions.

    rec = wb.sweep("digits-mlp", grid={"optimizer": ["sgd", "adam"], "lr": [1e-3, 1e-2], "seed": [0, 1]},
                   problem_options={"width": 64}, train={"steps": 200, "batch_size": 64},
                   probes=[{"type": "Eval", "every": 50}], directory="sweeps/opt_lr")
    rec.loss.sel(optimizer="adam", lr=1e-2).mean("seed")

Grid keys are ``wb.train`` arguments or optimizer hyperparameters (``optimizer``, ``lr``, ``momentum``, ``seed``,
``batch_size``, ...) or problem options written ``problem.<option>`` (``problem.width``). Runs go to a Dask
``LocalCluster`` (one single-threaded worker process per core by default), to any scheduler ``address``, to a SLURM
cluster through dask-jobqueue (``scheduler="slurm"``, one GPU per worker when ``device`` is CUDA), or run in this
process (``scheduler="synchronous"``).

With a ``directory``, each cell's record is written there (``cells/cell-00012.nc``, atomically, by the worker that ran
it) the moment the cell ends, next to ``sweep.json`` (the sweep's configuration) and, at the end, ``sweep.nc`` (the
combined record). A crashed worker, a killed client or a cancelled sweep loses only the cells in flight;
``resume=True`` runs only the cells that have no file yet. A cell that crashes keeps what it recorded, its ``status``
("crashed") and its ``error`` text; a worker that dies is retried by Dask (``allowed-failures``) and, if it keeps
dying, the cell is recorded as crashed with the reason.

A per-step variable named like a grid dimension is renamed ``step_<name>`` (``step_lr``: the learning rate actually
used at each step). A run that diverges or crashes keeps what it recorded: ``status``, ``steps_done``,
``diverged_at`` and ``error`` are variables over the grid, and per-step variables are NaN past a run's last step.
Outcome summaries (final/best loss, steps to a target, largest stable lr) are in :mod:`workbench.outcomes`.
"""
from __future__ import annotations

import itertools
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr

from ._validate import check_int

__all__ = ["sweep", "grid_tasks", "combine", "load_sweep", "make_cluster", "MANIFEST", "CELL_DIR"]

MANIFEST = "sweep.json"
CELL_DIR = "cells"
COMBINED = "sweep.nc"
SCHEDULERS = "None (LocalCluster), 'synchronous', 'slurm' or a Dask address like 'tcp://host:8786'"


def grid_tasks(problem: str, grid: dict[str, Sequence[Any]], problem_options: dict | None = None,
               train: dict | None = None, probes: Sequence[dict] = (), problem_seed: int = 0) -> list[dict]:
    """Expand a grid into task dicts (validated eagerly, so a bad value fails before any run starts)."""
    import workbench as wb
    from .config import probes_from_config

    if not isinstance(grid, dict) or not grid:
        raise ValueError("grid must be a non-empty dict {name: [values, ...]}")
    for k, vals in grid.items():
        if not isinstance(k, str):
            raise ValueError(f"grid keys must be strings; got {k!r}")
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence) or len(vals) == 0:
            raise ValueError(f"grid[{k!r}] must be a non-empty list of values; got {vals!r}")
        if len(set(map(repr, vals))) != len(vals):
            raise ValueError(f"grid[{k!r}] has repeated values: {list(vals)}")
    for forbidden in ("problem", "probes", "callback", "background", "device"):
        if forbidden in grid or forbidden in (train or {}):
            raise ValueError(f"{forbidden!r} cannot be swept or set in train=; pass it as its own argument")
    probes_from_config(list(probes))            # validates the probe specs
    tasks = []
    keys = list(grid)
    for i, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        popts = dict(problem_options or {})
        targs = dict(train or {})
        for k, v in zip(keys, combo):
            if k.startswith("problem."):
                popts[k[len("problem."):]] = v
            else:
                targs[k] = v
        tasks.append({"index": i, "problem": problem, "problem_seed": problem_seed, "problem_options": popts,
                      "train": targs, "probes": list(probes), "coords": dict(zip(keys, combo))})
    # validate the first and every distinct optimizer configuration without training
    seen = set()
    for t in tasks:
        key = json.dumps([t["problem_options"], {k: v for k, v in t["train"].items() if k != "seed"}],
                         sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        prob = wb.problems.make(problem, seed=problem_seed, **t["problem_options"])
        wb.Run(prob, device="cpu", progress=False, **t["train"])
    return tasks


def _failed_record(task: dict, error: str) -> xr.Dataset:
    """The record of a cell that failed before (or outside) its run: status, error text and configuration."""
    from .records import SCHEMA_VERSION

    return xr.Dataset(attrs={"workbench_schema": SCHEMA_VERSION, "status": "crashed", "error": error,
                             "steps_done": 0, "diverged_at": -1, "problem": task["problem"],
                             "config": json.dumps({k: task[k] for k in ("problem", "problem_seed", "problem_options",
                                                                         "train", "probes")}, default=str),
                             "sweep_cell": json.dumps(task["coords"], default=str)})


def _run_task(task: dict):
    """Worker side: build the problem, train, and return the record (crashes keep their partial record, failures
    outside the run become a crashed record with the error text). With ``task["path"]`` the record is saved there
    (atomically) and only its status travels back."""
    import torch

    import workbench as wb
    from .config import probes_from_config
    from .records import save

    torch.set_num_threads(1)
    try:
        prob = wb.problems.make(task["problem"], seed=task["problem_seed"], **task["problem_options"])
        run = wb.Run(prob, probes=probes_from_config(task["probes"]), progress=False,
                     device=task.get("device", "cpu"), **task["train"])
        try:
            run.run()
        except wb.RunCrashed as exc:
            run = exc.run
        rec = run.record
        rec.attrs["sweep_cell"] = json.dumps(task["coords"], default=str)
    except Exception as exc:          # noqa: BLE001 - the cell records any failure and the sweep goes on
        rec = _failed_record(task, f"{type(exc).__name__}: {exc}")
    if task.get("path"):
        save(rec, task["path"])
        return {"status": str(rec.attrs.get("status")), "error": str(rec.attrs.get("error", ""))}
    return rec


def _cell_path(directory: Path, index: int) -> Path:
    return directory / CELL_DIR / f"cell-{index:05d}.nc"


def _prepare_directory(directory, config: dict, resume: bool, n_cells: int) -> tuple[Path, set[int]]:
    """Create or check the sweep directory; the indices of the cells already on disk (resume)."""
    from .records import load

    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"directory={str(d)!r} is a file; give a directory for the sweep's cell records")
    manifest = d / MANIFEST
    cells = d / CELL_DIR
    done: set[int] = set()
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{str(manifest)!r} is not a readable sweep manifest ({exc})") from exc
        existing = sorted(cells.glob("cell-*.nc")) if cells.is_dir() else []
        if not resume and existing:
            raise ValueError(f"directory={str(d)!r} already holds {len(existing)} cell record(s) of a sweep; pass "
                             "resume=True (--resume) to run only the missing cells, or choose another directory")
        if resume:
            old_cfg = old.get("config", {})
            for key in sorted(set(old_cfg) | set(config)):
                if json.dumps(old_cfg.get(key), sort_keys=True, default=str) != json.dumps(config.get(key),
                                                                                           sort_keys=True,
                                                                                           default=str):
                    raise ValueError(f"resume: the sweep in {str(d)!r} was run with a different {key!r} "
                                     f"({old_cfg.get(key)!r}, now {config.get(key)!r}); resume needs the same sweep")
            for p in existing:
                try:
                    i = int(p.stem.split("-")[1])
                except (IndexError, ValueError):
                    continue
                if not 0 <= i < n_cells:
                    continue
                try:
                    load(p)
                except (ValueError, OSError) as exc:
                    warnings.warn(f"cell record {str(p)!r} is unreadable ({exc}); that cell runs again",
                                  RuntimeWarning, stacklevel=3)
                    continue
                done.add(i)
    elif resume and cells.is_dir() and any(cells.glob("cell-*.nc")):
        raise ValueError(f"resume: {str(d)!r} has cell records but no {MANIFEST}; cannot tell which sweep they "
                         "belong to")
    cells.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"kind": "sweep", "cells": n_cells, "config": config}, indent=1, default=str),
                   encoding="utf-8")
    os.replace(tmp, manifest)
    return d, done


def sweep(problem: str, grid: dict[str, Sequence[Any]], problem_options: dict | None = None,
          train: dict | None = None, probes: Sequence[dict] = (), problem_seed: int = 0,
          scheduler: str | None = None, n_workers: int | None = None, device: str = "cpu",
          progress: bool = True, directory: str | os.PathLike | None = None, resume: bool = False,
          cluster_options: dict | None = None, callback: Callable[[dict], None] | None = None) -> xr.Dataset:
    """Run every combination of ``grid`` and return one Dataset with a dimension per grid key.

    ``scheduler``: ``None`` starts a local Dask cluster (``n_workers`` processes, one thread each; default: the
    number of cores, or of GPUs when ``device`` is CUDA), ``"tcp://host:port"`` uses a running scheduler,
    ``"slurm"`` submits ``n_workers`` SLURM jobs through dask-jobqueue (``cluster_options`` go to
    ``SLURMCluster``: queue, walltime, memory, account...; see :func:`make_cluster`), ``"synchronous"`` runs in this
    process. ``probes`` are specs like ``{"type": "Eval", "every": 50}`` (as in a config file).

    ``directory``: write each cell's record to ``directory/cells/`` as it ends, the sweep's configuration to
    ``directory/sweep.json`` and the combined record to ``directory/sweep.nc``; ``resume=True`` runs only the
    cells without a file (the configuration must be the same). ``callback(event)`` is called in this process
    after each cell with ``{"index", "coords", "status", "error", "done", "total"}`` (e.g. to fill a phase diagram
    live). The returned record's attrs count ``cells_total``, ``cells_run`` (this call), ``cells_reused`` (from
    disk) and ``cells_failed`` (crashed).
    """
    if scheduler is not None and not isinstance(scheduler, str):
        raise ValueError(f"scheduler must be {SCHEDULERS}; got {scheduler!r}")
    if isinstance(scheduler, str) and scheduler not in ("synchronous", "slurm") and "://" not in scheduler:
        raise ValueError(f"scheduler must be {SCHEDULERS}; got {scheduler!r}")
    n_workers = check_int("n_workers", n_workers, 1, 1024, allow_none=True)
    if resume and directory is None:
        raise ValueError("resume=True needs the directory= of the sweep to resume")
    tasks = grid_tasks(problem, grid, problem_options, train, probes, problem_seed)
    config = dict(problem=problem, problem_seed=problem_seed, problem_options=problem_options or {},
                  train=train or {}, probes=list(probes), grid={k: list(v) for k, v in grid.items()}, device=device)
    done: set[int] = set()
    d = None
    if directory is not None:
        d, done = _prepare_directory(directory, config, bool(resume), len(tasks))
    for t in tasks:
        t["device"] = device
        if d is not None:
            t["path"] = str(_cell_path(d, t["index"]))
    todo = [t for t in tasks if t["index"] not in done]
    results: dict[int, Any] = {}
    counter = {"done": len(done)}

    def finished(task, result):
        results[task["index"]] = result
        counter["done"] += 1
        if callback is not None:
            info = result if isinstance(result, dict) else {"status": str(result.attrs.get("status")),
                                                            "error": str(result.attrs.get("error", ""))}
            callback({"index": task["index"], "coords": dict(task["coords"]), "status": info["status"],
                      "error": info["error"], "done": counter["done"], "total": len(tasks)})

    bar = _bar(len(tasks), len(done), progress)
    try:
        if scheduler == "synchronous":
            for t in todo:
                finished(t, _run_task(t))
                _tick(bar, results)
        elif todo:
            _run_dask(todo, scheduler, n_workers, device, cluster_options, finished, bar, results)
    finally:
        if bar is not None:
            bar.close()
    if d is not None:
        from .records import load
        records = [load(_cell_path(d, t["index"])) for t in tasks]
    else:
        records = [results[t["index"]] for t in tasks]
    out = combine(records, [t["coords"] for t in tasks], grid, config)
    n_failed = int((out["status"].values.astype(str) == "crashed").sum())
    out.attrs.update(cells_total=len(tasks), cells_run=len(todo), cells_reused=len(done), cells_failed=n_failed)
    if d is not None:
        from .records import save
        save(out, d / COMBINED)
    return out


def _bar(total, initial, show):
    if not show:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="sweep", unit="cell")


def _tick(bar, results):
    if bar is None:
        return
    counts: dict[str, int] = {}
    for r in results.values():
        s = r["status"] if isinstance(r, dict) else str(r.attrs.get("status"))
        counts[s] = counts.get(s, 0) + 1
    bar.set_postfix(counts, refresh=False)
    bar.update(1)


def make_cluster(kind: str = "slurm", n_workers: int | None = None, device: str = "cpu", **options):
    """A Dask cluster object for a sweep, configured but not started (no job is submitted until it is scaled).

    ``kind="slurm"``: a dask-jobqueue ``SLURMCluster`` (``pip install -e '.[slurm]'``), one single-threaded worker
    process per job; ``options`` go to it (``queue``, ``walltime``, ``memory``, ``account``, ``job_extra_directives``,
    ...; defaults ``cores=1, processes=1, memory="16GB", walltime="04:00:00"``). With a CUDA ``device`` each job asks
    for one GPU (``--gres=gpu:1``) and its worker advertises the resource ``GPU=1``, so a sweep runs one cell per GPU.
    ``kind="local"``: a ``LocalCluster`` of ``n_workers`` single-threaded processes started with ``spawn`` (safe
    with CUDA); default one per core, or one per GPU for a CUDA ``device``.
    """
    gpu = str(device).startswith("cuda")
    if kind == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as exc:
            raise ImportError("scheduler='slurm' needs dask-jobqueue: pip install -e '.[slurm]'") from exc
        opts = {"cores": 1, "processes": 1, "memory": "16GB", "walltime": "04:00:00", **options}
        if gpu:
            opts["job_extra_directives"] = list(opts.get("job_extra_directives") or []) + ["--gres=gpu:1"]
            opts["worker_extra_args"] = list(opts.get("worker_extra_args") or []) + ["--resources", "GPU=1"]
        try:
            return SLURMCluster(**opts)
        except (TypeError, ValueError) as exc:
            bad = sorted(set(options) - {"queue", "walltime", "memory", "account", "cores", "processes",
                                         "job_extra_directives", "worker_extra_args", "job_script_prologue",
                                         "local_directory", "log_directory", "interface", "name", "python"})
            raise ValueError(f"cluster_options {bad or sorted(options)} not accepted by dask-jobqueue's "
                             f"SLURMCluster ({str(exc).splitlines()[0]})") from exc
    if kind == "local":
        import dask
        from dask.distributed import LocalCluster

        if n_workers is None:
            if gpu:
                import torch
                n_workers = max(1, torch.cuda.device_count())
            else:
                n_workers = max(1, os.cpu_count() or 1)
        with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
            try:
                return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, **options)
            except RuntimeError as exc:
                raise RuntimeError(
                    f"the local Dask cluster could not start its worker processes ({exc}). Worker processes are "
                    "spawned and re-import the calling script: in a script, call the sweep under "
                    "`if __name__ == \"__main__\":`, or pass scheduler=\"synchronous\"") from exc
    raise ValueError(f"kind must be 'slurm' or 'local'; got {kind!r}")


def _run_dask(tasks, scheduler, n_workers, device, cluster_options, finished, bar, results):
    try:
        from dask.distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - the dask extra is missing
        raise ImportError("sweeps need Dask: pip install -e '.[dask]'") from exc
    cluster = None
    gpu = str(device).startswith("cuda")
    if scheduler is None:
        n = n_workers
        if n is None and not gpu:
            n = max(1, os.cpu_count() or 1)
        cluster = make_cluster("local", n_workers=None if n is None else min(n, len(tasks)), device=device,
                               **(cluster_options or {}))
        client = Client(cluster)
    elif scheduler == "slurm":
        cluster = make_cluster("slurm", device=device, **(cluster_options or {}))
        cluster.scale(jobs=n_workers or min(len(tasks), 8))
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"scheduler={scheduler!r}: cannot reach a Dask scheduler there ({exc})") from exc
    try:
        kw = {"resources": {"GPU": 1}} if (gpu and scheduler == "slurm") else {}
        futures = client.map(_run_task, tasks, pure=False, **kw)
        by_key = {f.key: t for f, t in zip(futures, tasks)}
        for fut in as_completed(futures):
            task = by_key[fut.key]
            try:
                result = fut.result()
            except Exception as exc:      # noqa: BLE001 - e.g. KilledWorker: the worker kept dying on this cell
                rec = _failed_record(task, f"{type(exc).__name__}: {exc}")
                if task.get("path"):
                    from .records import save
                    save(rec, task["path"])
                    result = {"status": "crashed", "error": rec.attrs["error"]}
                else:
                    result = rec
            finished(task, result)
            _tick(bar, results)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def load_sweep(directory: str | os.PathLike) -> xr.Dataset:
    """The combined record of the sweep in ``directory`` from its cell files (finished or not: cells without a file
    yet have status ``"missing"``), e.g. while it runs or after a crash."""
    from .records import load

    d = Path(directory)
    manifest = d / MANIFEST
    if not manifest.is_file():
        raise ValueError(f"{str(d)!r} is not a sweep directory (no {MANIFEST})")
    info = json.loads(manifest.read_text(encoding="utf-8"))
    config = info["config"]
    grid = config["grid"]
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    records, coords = [], []
    for i, combo in enumerate(combos):
        p = _cell_path(d, i)
        c = dict(zip(keys, combo))
        if p.exists():
            records.append(load(p))
        else:
            rec = _failed_record({"problem": config["problem"], "problem_seed": config.get("problem_seed", 0),
                                  "problem_options": config.get("problem_options", {}), "train": config.get("train"),
                                  "probes": config.get("probes", []), "coords": c}, "")
            rec.attrs["status"] = "missing"
            records.append(rec)
        coords.append(c)
    out = combine(records, coords, grid, config)
    st = out["status"].values.astype(str)
    out.attrs.update(cells_total=len(combos), cells_missing=int((st == "missing").sum()),
                     cells_failed=int((st == "crashed").sum()))
    return out


def combine(records: list[xr.Dataset], coords: list[dict], grid: dict, config: dict) -> xr.Dataset:
    """Concatenate run records along the grid dimensions (outer join: shorter runs are NaN-padded)."""
    keys = list(grid)
    cleaned = []
    for rec, c in zip(records, coords):
        r = rec.drop_vars([v for v in rec.data_vars if rec[v].dtype.kind in "OSU"])   # per-step strings (optimizer)
        # a per-step variable named like a grid dimension (lr) becomes step_<name> (step_lr: the scheduled lr)
        r = r.rename_vars({v: f"step_{v}" for v in r.data_vars if v in keys})
        n_steps = rec.sizes.get("step", 0)
        r = r.assign(status=xr.DataArray(str(rec.attrs.get("status", "unknown"))),
                     steps_done=xr.DataArray(int(rec.attrs.get("steps_done", n_steps))),
                     diverged_at=xr.DataArray(int(rec.attrs.get("diverged_at", -1))),
                     error=xr.DataArray(str(rec.attrs.get("error", ""))),
                     blew_up_at=xr.DataArray(int(rec.attrs.get("blew_up_at", -1))),
                     blowup_recovered=xr.DataArray(int(rec.attrs.get("blowup_recovered", 0))))
        r.attrs = {}
        cleaned.append(r.expand_dims({k: [c[k]] for k in keys}))
    out = xr.combine_by_coords(cleaned, join="outer", combine_attrs="drop", data_vars="minimal",
                               coords="minimal", compat="no_conflicts")
    out = out.transpose(*keys, ...)
    for v in out.data_vars:
        orig = v[len("step_"):] if v.startswith("step_") and v[len("step_"):] in keys else v
        src = next((r[orig].attrs for r in records if orig in r), None)
        if src:
            out[v].attrs = dict(src)
    out["status"].attrs = {"long_name": "run status",
                           "description": "finished | diverged | stopped | crashed (| missing: no cell file yet)"}
    out["steps_done"].attrs = {"long_name": "steps done", "description": "updates completed by each run"}
    out["diverged_at"].attrs = {"long_name": "diverged at",
                                "description": "step at which the run diverged; -1 if it did not"}
    out["error"].attrs = {"long_name": "error", "description": "why a crashed cell failed; empty otherwise"}
    out["blew_up_at"].attrs = {"long_name": "blew up at", "description": "first step above the soft divergence "
                                                                        "threshold (see a run's divergence_rule); -1 if none"}
    out["blowup_recovered"].attrs = {"long_name": "blew up and recovered",
                                     "description": "1 if the loss went above the soft threshold and came back"}
    from .records import SCHEMA_VERSION
    out.attrs = {"workbench_schema": SCHEMA_VERSION, "kind": "sweep", "config": json.dumps(config, default=str),
                 "sweep_dims": json.dumps(keys), "n_runs": len(records)}
    return out
