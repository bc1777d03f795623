"""Snapshots: the dict of numpy arrays every view is built from, taken from a live :class:`workbench.Run`
(:class:`RunTracker` incrementally, or :func:`snapshot_run` at once) or from a saved record (:func:`snapshot_record`),
so the same views show a live run, a pinned run and a loaded record (split out of :mod:`widgets.views`)."""
from __future__ import annotations

import json

import numpy as np

__all__ = ["RunTracker", "snapshot_run", "snapshot_record"]


class RunTracker:
    """Copies a live run's history incrementally (only what is new at each call), so a tick costs O(new steps)
    however long the run is; ``snapshot()`` gives the views' dict."""

    def __init__(self, run, skip_probes=("trajectory",)):
        self.run = run
        self.skip = set(skip_probes)
        self.n = 0
        self.cols = {"loss": [], "lr": [], "wall_time": []}
        self.pn: dict[str, int] = {}
        self.psteps: dict[str, list] = {}
        self.pvals: dict[str, list] = {}
        self.path = np.empty((1024, 2))
        self.path_steps: list[int] = []

    def update(self, probes: bool = True):
        run = self.run
        h = run.history(since=self.n)
        for k in self.cols:
            self.cols[k].extend(h[k])
        self.n += len(h["loss"])
        if not probes:
            return
        for name in run.probe_names:
            k0 = self.pn.get(name, 0)
            ph = run.probe_history(name, since=k0)
            steps = ph.pop("step")
            self.pn[name] = k0 + len(steps)
            if name == "trajectory" and "trajectory" in self.skip:
                vals = ph.get("trajectory", [])
                if vals and np.asarray(vals[0]).size == 2:        # 2D test functions: keep the path
                    m = len(self.path_steps)
                    while m + len(vals) > len(self.path):
                        self.path = np.concatenate([self.path, np.empty_like(self.path)])
                    self.path[m:m + len(vals)] = np.asarray(vals, dtype=float).reshape(-1, 2)
                    self.path_steps.extend(steps)
                continue
            for k, v in ph.items():
                self.psteps.setdefault(k, []).extend(steps[:len(v)])
                self.pvals.setdefault(k, []).extend(v)

    def snapshot(self) -> dict:
        run = self.run
        snap = {"label": f"{run.optimizer_name} lr={run.hparams.get('lr', float('nan')):.3g}",
                "problem": run.problem.name, "optimizer": run.config["optimizer"], "status": run.status,
                "diverged_at": run.diverged_at, "steps_requested": run.steps, "step": np.arange(self.n),
                **{k: _floats(v) for k, v in self.cols.items()},
                "events": [dict(e) for e in list(run.events)], "probes": {}, "grids": {}}
        for k, v in self.pvals.items():
            try:
                snap["probes"][k] = (np.asarray(self.psteps[k], dtype=float), np.asarray(v, dtype=float))
            except (TypeError, ValueError):
                continue
        for slot in run._slots:
            if hasattr(slot.probe, "batch_sizes"):
                snap["batch_sizes"] = list(slot.probe.batch_sizes)
            grid = getattr(slot.probe, "grid", None)
            if grid is not None:
                snap["grids"][f"{slot.name}_density"] = np.asarray(grid, dtype=float)
        if self.path_steps:
            snap["path"] = self.path[:len(self.path_steps)].copy()
            snap["path_steps"] = np.asarray(self.path_steps)
        return snap


def _floats(v):
    a = np.asarray(v, dtype=float)
    return np.where(np.isfinite(a), a, np.nan)


def snapshot_run(run, probe_vars: bool = True, skip=("trajectory",)) -> dict:
    """Everything the views need from a live (or finished) run, copied under the run's lock."""
    hist = run.history()
    snap = {"label": f"{run.optimizer_name} lr={run.hparams.get('lr', float('nan')):.3g}",
            "problem": run.problem.name, "optimizer": run.config["optimizer"], "status": run.status,
            "diverged_at": run.diverged_at, "steps_requested": run.steps,
            "step": np.arange(len(hist["loss"])), "loss": _floats(hist["loss"]), "lr": _floats(hist["lr"]),
            "wall_time": _floats(hist["wall_time"]), "events": [dict(e) for e in list(run.events)], "probes": {},
            "grids": {}}
    if probe_vars:
        for slot in run._slots:
            if slot.name in skip:
                continue
            ph = run.probe_history(slot.name)
            steps = np.asarray(ph.pop("step"), dtype=float)
            for k, v in ph.items():
                n = min(len(steps), len(v))
                try:
                    snap["probes"][k] = (steps[:n], np.asarray(v[:n], dtype=float))
                except (TypeError, ValueError):
                    continue
            if hasattr(slot.probe, "batch_sizes"):
                snap["batch_sizes"] = list(slot.probe.batch_sizes)
            grid = getattr(slot.probe, "grid", None)
            if grid is not None:
                snap["grids"][f"{slot.name}_density"] = np.asarray(grid, dtype=float)
    return snap


def snapshot_record(ds, label: str | None = None) -> dict:
    """A snapshot of a saved record (``wb.load``)."""
    try:
        events = json.loads(ds.attrs.get("events", "[]"))
    except (TypeError, ValueError):
        events = []
    div = int(ds.attrs.get("diverged_at", -1))
    snap = {"label": label or f"{ds.attrs.get('optimizer', '?')} (saved)", "problem": ds.attrs.get("problem", "?"),
            "optimizer": ds.attrs.get("optimizer", "?"), "status": ds.attrs.get("status", "?"),
            "diverged_at": None if div < 0 else div, "steps_requested": int(ds.attrs.get("steps_requested", 0)),
            "step": np.asarray(ds["step"].values), "loss": _floats(ds["loss"].values),
            "lr": _floats(ds["lr"].values) if "lr" in ds else np.array([]),
            "wall_time": _floats(ds["wall_time"].values) if "wall_time" in ds else np.array([]),
            "events": events, "probes": {}, "grids": {}}
    if "batch_sharpness_batch_sizes" in ds.attrs:
        snap["batch_sizes"] = list(np.atleast_1d(ds.attrs["batch_sharpness_batch_sizes"]))
    for k, da in ds.data_vars.items():
        if k in ("loss", "lr", "grad_norm", "wall_time", "optimizer", "trajectory") or not da.dims \
                or not str(da.dims[0]).endswith("_step") or da.dtype.kind not in "fiu":
            continue
        snap["probes"][k] = (np.asarray(ds[da.dims[0]].values, dtype=float), np.asarray(da.values, dtype=float))
        if da.ndim == 2 and str(da.dims[1]) in ds.coords and k.endswith("_density"):
            snap["grids"][k] = np.asarray(ds[da.dims[1]].values, dtype=float)
    return snap
