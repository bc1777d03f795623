"""Sweeps: a grid of runs on Dask, concatenated into one record along named dimensions.

    rec = wb.sweep("digits-mlp", grid={"optimizer": ["sgd", "adam"], "lr": [1e-3, 1e-2], "seed": [0, 1]},
                   problem_options={"width": 64}, train={"steps": 200, "batch_size": 64},
                   probes=[{"type": "Eval", "every": 50}])
    rec.loss.sel(optimizer="adam", lr=1e-2).mean("seed")

Grid keys are ``wb.train`` arguments or optimizer hyperparameters (``optimizer``, ``lr``, ``momentum``, ``seed``,
``batch_size``, ...) or problem options written ``problem.<option>`` (``problem.width``). Runs go to a Dask
``LocalCluster`` (one single-threaded worker process per core by default) or to any scheduler ``address``;
``scheduler="synchronous"`` runs them in this process. A per-step variable named like a grid dimension is
renamed ``step_<name>`` (``step_lr``: the learning rate actually used at each step). A run that diverges or crashes keeps what it recorded: its
``status`` is a variable over the grid and its variables are NaN past its last step.
"""
from __future__ import annotations

import itertools
import json
from typing import Any, Sequence

import numpy as np
import xarray as xr

from ._validate import check_int

__all__ = ["sweep", "grid_tasks"]


def grid_tasks(problem: str, grid: dict[str, Sequence[Any]], problem_options: dict | None = None,
               train: dict | None = None, probes: Sequence[dict] = (), problem_seed: int = 0) -> list[dict]:
    """Expand a grid into task dicts (validated eagerly, so a bad value fails before any run starts)."""
    import workbench as wb
    from .cli import probes_from_config

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
    for combo in itertools.product(*(grid[k] for k in keys)):
        popts = dict(problem_options or {})
        targs = dict(train or {})
        for k, v in zip(keys, combo):
            if k.startswith("problem."):
                popts[k[len("problem."):]] = v
            else:
                targs[k] = v
        tasks.append({"problem": problem, "problem_seed": problem_seed, "problem_options": popts,
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


def _run_task(task: dict) -> xr.Dataset:
    """Worker side: build the problem, train, return the record (crashes keep their partial record)."""
    import torch

    import workbench as wb
    from .cli import probes_from_config

    torch.set_num_threads(1)
    prob = wb.problems.make(task["problem"], seed=task["problem_seed"], **task["problem_options"])
    run = wb.Run(prob, probes=probes_from_config(task["probes"]), progress=False, device=task.get("device", "cpu"),
                 **task["train"])
    try:
        run.run()
    except wb.RunCrashed as exc:
        run = exc.run
    return run.record


def sweep(problem: str, grid: dict[str, Sequence[Any]], problem_options: dict | None = None,
          train: dict | None = None, probes: Sequence[dict] = (), problem_seed: int = 0,
          scheduler: str | None = None, n_workers: int | None = None, device: str = "cpu",
          progress: bool = True) -> xr.Dataset:
    """Run every combination of ``grid`` and return one Dataset with a dimension per grid key.

    ``scheduler``: ``None`` starts a local Dask cluster (``n_workers`` processes, one thread each; default: the
    number of cores), a ``"tcp://host:port"`` address uses a running scheduler, ``"synchronous"`` runs in this
    process. ``probes`` are specs like ``{"type": "Eval", "every": 50}`` (as in a config file).
    """
    tasks = grid_tasks(problem, grid, problem_options, train, probes, problem_seed)
    for t in tasks:
        t["device"] = device
    if scheduler == "synchronous":
        records = [_run_task(t) for t in _progress(tasks, progress)]
    else:
        records = _run_dask(tasks, scheduler, n_workers, progress)
    return combine(records, [t["coords"] for t in tasks], grid, dict(problem=problem, problem_seed=problem_seed,
                   problem_options=problem_options or {}, train=train or {}, probes=list(probes),
                   grid={k: list(v) for k, v in grid.items()}))


def _progress(items, show):
    if not show:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc="sweep")


def _run_dask(tasks, scheduler, n_workers, progress):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - the dask extra is missing
        raise ImportError("sweeps need Dask: pip install -e '.[dask]'") from exc
    cluster = None
    if scheduler is None:
        import os
        n = check_int("n_workers", n_workers, 1, 1024, allow_none=True) or max(1, os.cpu_count() or 1)
        cluster = LocalCluster(n_workers=min(n, len(tasks)), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        if not isinstance(scheduler, str) or "://" not in scheduler:
            raise ValueError(f"scheduler must be None, 'synchronous' or a Dask address like 'tcp://host:8786'; "
                             f"got {scheduler!r}")
        client = Client(scheduler)
    try:
        futures = client.map(_run_task, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        records = [None] * len(tasks)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(tasks), desc="sweep")
        for fut in as_completed(futures):
            records[index[fut.key]] = fut.result()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return records
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def combine(records: list[xr.Dataset], coords: list[dict], grid: dict, config: dict) -> xr.Dataset:
    """Concatenate run records along the grid dimensions (outer join: shorter runs are NaN-padded)."""
    keys = list(grid)
    cleaned = []
    for rec, c in zip(records, coords):
        r = rec.drop_vars([v for v in rec.data_vars if rec[v].dtype == object])
        # a per-step variable named like a grid dimension (lr) becomes step_<name> (step_lr: the scheduled lr)
        r = r.rename_vars({v: f"step_{v}" for v in r.data_vars if v in keys})
        r = r.assign(status=xr.DataArray(rec.attrs.get("status", "unknown")),
                     steps_done=xr.DataArray(rec.attrs.get("steps_done", rec.sizes.get("step", 0))))
        r.attrs = {}
        cleaned.append(r.expand_dims({k: [c[k]] for k in keys}))
    out = xr.combine_by_coords(cleaned, join="outer", combine_attrs="drop", data_vars="minimal",
                              coords="minimal")
    out = out.transpose(*keys, ...)
    for v in out.data_vars:
        orig = v[len("step_"):] if v.startswith("step_") and v[len("step_"):] in keys else v
        src = next((r[orig].attrs for r in records if orig in r), None)
        if src:
            out[v].attrs = dict(src)
    out["status"].attrs = {"long_name": "run status", "description": "finished | diverged | stopped | crashed"}
    out["steps_done"].attrs = {"long_name": "steps done", "description": "updates completed by each run"}
    from .records import SCHEMA_VERSION
    out.attrs = {"workbench_schema": SCHEMA_VERSION, "kind": "sweep", "config": json.dumps(config, default=str),
                 "sweep_dims": json.dumps(keys), "n_runs": len(records)}
    return out
