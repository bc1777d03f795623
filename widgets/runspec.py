"""What a dashboard run is made of, without Panel: the run options and probe menus (``RUN_PARAMS``, ``PROBES``),
a run *spec* (a plain, picklable dict), and :func:`build_run`, which turns a spec into a ``wb.Run``. The same code
builds a run in the server's process (notebooks) and in a worker process (``workbench app``; see widgets.worker).

A spec::

    {"problem": {"name": "rosenbrock", "seed": 0, "options": {...}}   # a registered problem, or
                {"user": "file.py:make_problem", "name": "mine"},       # the user's own (loaded where it runs)
     "optimizer": "adam", "hparams": {"lr": 1e-3}, "schedule": {...},
     "run": {"steps": 500, "seed": 0, "batch_size": None}, "device": "cpu",
     "probes": {"sharpness": {"every": 10, "k": 1}, ...}}
"""
from __future__ import annotations

import numpy as np

import workbench as wb
from workbench.params import Param

__all__ = ["RUN_PARAMS", "PROBES", "DEFAULT_PROBES", "make_probe", "PLANE_MIN_SNAPSHOTS", "build_problem", "build_run", "compute_plane",
           "is_function_problem"]

RUN_PARAMS = [
    Param("steps", 500, kind="int", low=1, high=1_000_000, log=True, doc="number of updates"),
    Param("seed", 0, kind="int", low=0, high=2**31 - 1, doc="seed for batch order and stochastic optimizers"),
    Param("batch_size", None, kind="int", low=1, high=10**9, allow_none=True,
          doc="examples per step; empty = full batch (gradient descent)"),
]

# probe name -> (label, option specs, default on for networks)
PROBES = {
    "eval": ("Eval: train/test loss, accuracy", [Param("every", 25, kind="int", low=1, high=10**6)]),
    "norms": ("Norms: weight, distance, update", [Param("every", 1, kind="int", low=1, high=10**6)]),
    "sharpness": ("Sharpness: λ_max vs threshold", [Param("every", 10, kind="int", low=1, high=10**6),
                                                    Param("k", 1, kind="int", low=1, high=20,
                                                          doc="top-k eigenvalues")]),
    "subspace": ("GradientSubspace: top-k fraction", [Param("every", 20, kind="int", low=1, high=10**6),
                                                      Param("k", 4, kind="int", low=1, high=50)]),
    "spectrum": ("SpectralDensity (SLQ)", [Param("every", 100, kind="int", low=1, high=10**6)]),
    "trace": ("Trace (Hutch++)", [Param("every", 50, kind="int", low=1, high=10**6)]),
    "batch_sharpness": ("BatchSharpness", [Param("every", 100, kind="int", low=1, high=10**6)]),
    "trajectory": ("Trajectory: PCA-plane view", [Param("every", 5, kind="int", low=1, high=10**6)]),
}
PLANE_MIN_SNAPSHOTS = 8       # a PCA plane is drawn once the trajectory has this many snapshots
DEFAULT_PROBES = ("eval",)        # Eval is skipped on 2D test functions (it equals the loss there)


def make_probe(name: str, opts: dict, prob):
    every = opts["every"]
    if name == "eval":
        return wb.probes.Eval(every=every, split="both" if prob.test is not None else "train")
    if name == "norms":
        return wb.probes.Norms(every=every)
    if name == "sharpness":
        return wb.probes.Sharpness(every=every, k=opts.get("k", 1))
    if name == "subspace":
        return wb.probes.GradientSubspace(every=every, k=opts.get("k", 4))
    if name == "spectrum":
        return wb.probes.SpectralDensity(every=every, probes=2, steps=40)
    if name == "trace":
        return wb.probes.Trace(every=every)
    if name == "batch_sharpness":
        n = len(prob.train)
        sizes = [b for b in (32, 128, 512) if b < n] or [max(1, n // 2)]
        return wb.probes.BatchSharpness(every=every, batch_sizes=sizes)
    if name == "trajectory":
        return wb.probes.Trajectory(every=every)
    raise ValueError(f"unknown probe {name!r}; choose from {sorted(PROBES)}")


def is_function_problem(name: str, user_problems=None) -> bool:
    """True for the 2D test functions (drawn as a path on their surface), without building anything."""
    if user_problems and name in user_problems:
        return user_problems[name].kind == "function"
    return name in wb.problems.list("function")


def build_problem(pspec: dict):
    """The ``wb.Problem`` a spec's ``problem`` entry names (a user problem file is loaded here)."""
    if "user" in pspec:
        from workbench.config import load_user_problem
        prob = load_user_problem(pspec["user"])
        prob._user_spec = pspec["user"]
        return prob
    return wb.problems.make(pspec["name"], seed=pspec.get("seed", 0), **pspec.get("options", {}))


def build_run(spec: dict, problem=None):
    """``(problem, run)`` for ``spec`` (the run is not started). ``problem``: an already built problem to use
    instead of the spec's (the dashboard's in-process runs reuse theirs). ValueError naming the field for any bad
    value. 2D test functions always record their trajectory (the path view) and skip Eval (it equals the loss)."""
    prob = problem if problem is not None else build_problem(spec["problem"])
    rp = spec["run"]
    probes = []
    for name, opts in spec.get("probes", {}).items():
        if prob.kind == "function" and name in ("trajectory", "eval"):
            continue
        probes.append(make_probe(name, opts, prob))
    if prob.kind == "function":
        probes.append(wb.probes.Trajectory(every=1))
    if rp.get("batch_size") is not None and rp["batch_size"] > len(prob.train):
        raise ValueError(f"batch_size={rp['batch_size']} is out of range: at most the {len(prob.train)} "
                         "training examples (empty = full batch)")
    # sync_every=1: the Pause/Step gate is the run's callback, which a windowed (no-sync) loop would only
    # consult once per window on CUDA; a live view wants every step anyway
    run = wb.Run(prob, optimizer=spec["optimizer"], steps=rp["steps"], seed=rp["seed"],
                 batch_size=rp.get("batch_size"), device=spec["device"], probes=probes, progress=False,
                 sync_every=1, **spec.get("schedule", {}), **spec.get("hparams", {}))
    return prob, run


def compute_plane(record, problem, label: str = "run", steps: int = 21, max_samples: int = 512) -> dict:
    """Loss on the PCA plane of ``record``'s trajectory with the projected path: a picklable dict with the contour
    ``figure`` (a plain figure dict) and what the Landscape tab's 3D view and replay need: ``surface`` (the
    ``ls.surface`` DataArray, or None), ``xy`` (the path, shape (n, 2)), ``steps`` (the step of each point),
    ``explained`` (variance ratios) and ``label``.

    Exact trajectories get a surface (``landscapes.surface`` on a private copy of the model); count-sketched ones
    (big models) only the projected path."""
    import landscapes as ls

    from .views import plane_figure

    model = problem.copy_model()
    d = ls.directions.pca(record, n=2, model=model if record.attrs.get("trajectory_kind") == "params" else None)
    proj = ls.project(record, d)
    xy = np.asarray(proj.values, dtype=float)
    surf = None
    if d.space == "params":
        spans = []
        for j in range(2):
            lo, hi = float(min(xy[:, j].min(), 0.0)), float(max(xy[:, j].max(), 0.0))
            pad = 0.25 * (hi - lo) + 1e-6
            spans.append((lo - pad, hi + pad))
        surf = ls.surface(model, problem.loss, problem.data("train", max_samples=max_samples), d, span=spans,
                          steps=steps, progress=False)
    explained = d.meta.get("explained_variance")
    steps_arr = (np.asarray(proj.coords["trajectory_step"].values, dtype=int) if "trajectory_step" in proj.coords
                 else np.arange(len(xy)))
    return {"figure": plane_figure(surf, [(label, xy)], explained), "surface": surf, "xy": xy,
            "steps": steps_arr, "explained": explained, "label": label}
