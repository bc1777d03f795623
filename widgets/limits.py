"""How much memory one run started from the dashboard may take, estimated from its options before anything is built.

A served app is shared: one visitor's options (a width of 8192, a million steps) must not exhaust the server. Before
a Run (and whenever a problem option changes) the dashboard estimates

* the model: its parameter count from ``wb.problems.info(name, **options)`` with torch's default device set to
  ``meta`` (shapes only: nothing is allocated or initialised, even for problems whose ``info`` builds the problem)
  times :data:`BYTES_PER_PARAM` (float32 weights, gradients, two optimizer-state slots as Adam keeps, and one copy for
  the initial point / a hot swap);
* the run history: :data:`HISTORY_BYTES_PER_STEP` per step (measured: about 1.1 KB per step for the loss, lr,
  gradient norm, wall time and optimizer columns, the views' copy and the record built at the end);
* each probe's per-snapshot arrays (a trajectory snapshot is the parameter vector or its count sketch, a spectral
  density its grid) times the number of snapshots (steps / every);

* the data of problems generated in memory (the synthetic sets: ``n_train`` x ``dim`` and the like): the problem is
  built on the meta device with at most 64 examples to learn the bytes per example, times the examples asked for,
  times 3 (the float64 arrays they are drawn in, then the float32 tensors);

and refuses a run whose total is over the cap with an inline message. The cap (MB) is ``Dashboard(max_memory_mb=)``,
``workbench app --max-memory MB``, or the environment variable ``WORKBENCH_APP_MAX_MEMORY_MB``; default 2048.
Data read from files (Fashion-MNIST, CIFAR, text) is not counted: it is bounded by the files.
"""
from __future__ import annotations

import math
import os

import torch

import workbench as wb

__all__ = ["ENV_VAR", "DEFAULT_MAX_MEMORY_MB", "BYTES_PER_PARAM", "HISTORY_BYTES_PER_STEP", "max_memory_mb",
           "model_params", "problem_sizes", "estimate", "check"]

ENV_VAR = "WORKBENCH_APP_MAX_MEMORY_MB"
DEFAULT_MAX_MEMORY_MB = 2048.0
BYTES_PER_PARAM = 4 * 5              # float32: weights, gradients, 2 optimizer-state slots, 1 copy
HISTORY_BYTES_PER_STEP = 1200        # measured ~1.1 KB per step (history lists, the views' copy, the record)
PROBE_BYTES_PER_SNAPSHOT = 256       # a few scalars (losses, eigenvalues, norms) with their step
MB = 2**20


def max_memory_mb(value: float | None = None) -> float:
    """The cap in MB: ``value``, else ``$WORKBENCH_APP_MAX_MEMORY_MB``, else 2048. ValueError naming the setting
    when it is not a number in [1, 2**30]."""
    where = "max_memory_mb"
    if value is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if not env:
            return DEFAULT_MAX_MEMORY_MB
        where = ENV_VAR
        try:
            value = float(env)
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be a number of MB in [1, 2**30]; got {env!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 2**30:
        raise ValueError(f"{where} must be a number of MB in [1, 2**30]; got {value!r}")
    return float(value)


def model_params(name: str, options: dict) -> int:
    """Parameters of problem ``name`` with ``options``, counted on the meta device (no allocation). ValueError for
    options the problem rejects."""
    with torch.device("meta"):
        info = wb.problems.info(name, **options)
    n = info.get("n_params")
    return 0 if n is None else int(n)


DATA_FACTOR = 3                      # generated data: float64 arrays drawn, then float32 tensors
SMALL = 64                           # examples the meta-device build of a generated problem is given


def _tensor_bytes(ds) -> int:
    tensors = getattr(ds, "tensors", None)
    if not tensors:
        return 0
    return sum(int(t.numel()) * t.element_size() for t in tensors if hasattr(t, "element_size"))


def problem_sizes(name: str, options: dict) -> tuple[int, int]:
    """``(parameters, bytes of its in-memory data)`` of problem ``name`` with ``options``, without allocating either.

    Problems with an ``info`` of their own (data on files) are asked through ``wb.problems.info`` on the meta device
    (data bytes 0: bounded by the files); problems generated in memory are built on the meta device with at most
    64 examples, and their bytes per example scaled to the examples asked for (x3, see the module docstring).
    ValueError for options the problem rejects."""
    spec = getattr(wb.problems, "_REGISTRY", {}).get(name)
    if spec is None or spec.info is not None or spec.kind == "function":
        return model_params(name, options), 0
    specs = {p.name: p for p in wb.problems.options(name)}
    full = {k: options.get(k, specs[k].default) for k in ("n_train", "n_test") if k in specs}
    small = dict(options, **{k: min(int(v), SMALL) if isinstance(v, int) and not isinstance(v, bool) else v
                             for k, v in full.items()})
    with torch.device("meta"):
        prob = wb.problems.make(name, seed=0, **small)
        n_params = int(sum(p.numel() for p in prob.model.parameters()))
    total = 0
    for split, ds in (("n_train", prob.train), ("n_test", prob.test)):
        if ds is None or not len(ds):
            continue
        n = int(full.get(split, len(ds))) if isinstance(full.get(split, len(ds)), int) else len(ds)
        total += _tensor_bytes(ds) / len(ds) * n
    return n_params, int(total * DATA_FACTOR)


def _probe_bytes(probe, n_params: int, steps: int) -> int:
    every = max(1, int(getattr(probe, "every", 1) or 1))
    snaps = steps // every + 1
    kind = type(probe).__name__
    if kind == "Trajectory":
        max_bytes = getattr(probe, "max_bytes", 256 * MB)
        dim = getattr(probe, "dim", 4096)
        width = n_params if (n_params * 4 * snaps <= max_bytes or n_params <= dim) else dim
        return snaps * (4 * width + PROBE_BYTES_PER_SNAPSHOT)
    if kind == "SpectralDensity":
        return snaps * (8 * int(getattr(probe, "grid_size", 256)) + PROBE_BYTES_PER_SNAPSHOT)
    k = int(getattr(probe, "k", 1) or 1)
    return snaps * (PROBE_BYTES_PER_SNAPSHOT + 16 * k)


def estimate(n_params: int, steps: int, probes=(), data_bytes: int = 0) -> dict:
    """Estimated bytes of a run: ``{"model", "data", "history", "probes", "total"}``."""
    out = {"model": int(n_params) * BYTES_PER_PARAM, "data": int(data_bytes),
           "history": int(steps) * HISTORY_BYTES_PER_STEP,
           "probes": sum(_probe_bytes(p, int(n_params), int(steps)) for p in probes)}
    out["total"] = out["model"] + out["data"] + out["history"] + out["probes"]
    return out


def _mb(b: float) -> str:
    return f"{math.ceil(b / MB):,} MB"


def check(n_params: int, steps: int, probes=(), cap_mb: float | None = None, data_bytes: int = 0) -> dict:
    """The estimate, or ValueError when it is over ``cap_mb``; the message starts with the field to change
    (``steps=...`` when the history dominates, ``model too large`` / ``data too large`` for the problem options,
    ``probes:`` otherwise)."""
    cap_mb = max_memory_mb(cap_mb)
    est = estimate(n_params, steps, probes, data_bytes)
    if est["total"] <= cap_mb * MB:
        return est
    parts = (f"model {_mb(est['model'])} for {int(n_params):,} parameters, data {_mb(est['data'])}, history "
             f"{_mb(est['history'])} for {int(steps):,} steps, probes {_mb(est['probes'])}")
    tail = (f"estimated {_mb(est['total'])} ({parts}) is over this app's limit of {cap_mb:,.0f} MB per run "
            f"(set with workbench app --max-memory or {ENV_VAR})")
    biggest = max(("model", "data", "history", "probes"), key=lambda k: est[k])
    if biggest == "history":
        # the largest steps that fit beside the model, data and probes as they are
        per_step = HISTORY_BYTES_PER_STEP + est["probes"] / max(1, steps)
        fit = max(0, int((cap_mb * MB - est["model"] - est["data"]) / per_step))
        raise ValueError(f"steps={int(steps):,} is out of range: {tail}; at most about {fit:,} steps fit")
    if biggest == "model":
        raise ValueError(f"model too large: {tail}; choose a smaller width/depth under problem options")
    if biggest == "data":
        raise ValueError(f"data too large: {tail}; choose fewer examples (n_train, n_test) or a smaller dim under "
                         "problem options")
    raise ValueError(f"probes: {tail}; record them less often (a larger every) or fewer of them")
