"""What the dashboard's problem list shows: each problem with its size (parameters, examples) and whether its data is
on this machine, the small options the dashboard starts real problems with (so a Run on a CPU shows points within
seconds; the user can raise them), and the user's own problems (``workbench app --problem file.py:make_problem``).

Sizes come from ``wb.problems.info(name)`` (cheap: no data load), cached per process.
"""
from __future__ import annotations

import functools
import threading

import workbench as wb
from workbench.problems import Problem

__all__ = ["DASHBOARD_OPTIONS", "DASHBOARD_RUN", "problem_info", "problem_label", "user_problem_info",
           "dashboard_options", "count_text"]

# Options a real problem starts with in the dashboard (a ~1-2k example subset and small widths). Keys must be options
# of the problem (tests check that); a key a problem does not have is never sent to it.
DASHBOARD_OPTIONS: dict[str, dict] = {
    "fashion-cnn": {"n_train": 1024, "n_test": 512, "width": 8},
    "fashion-resnet": {"n_train": 1024, "n_test": 512, "depth": 8, "width": 0.5},
    "cifar-resnet": {"n_train": 1024, "n_test": 512, "depth": 8, "width": 0.5},
    "cifar-vgg": {"n_train": 512, "n_test": 256, "width": 0.125},
    "cifar-vit": {"n_train": 1024, "n_test": 512, "patch": 8, "dim": 32, "depth": 1, "heads": 2},
    "mnist1d-mlp": {"n_train": 2000, "n_test": 500},
    "mnist1d-cnn": {"n_train": 2000, "n_test": 500, "width": 16},
    "text-gpt": {"n_train": 512, "n_test": 128, "n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64,
                 "n_chars": 200_000},
    "modular-addition": {"dim": 64, "mlp_dim": 256},
}
# Run settings the dashboard switches to with these problems (and back, unless the user changed them meanwhile):
# mini-batches, so the points come at a steady clip on a CPU (a full-batch ResNet step on 1k images takes ~1 s).
DASHBOARD_RUN: dict[str, dict] = {name: {"batch_size": 128} for name in DASHBOARD_OPTIONS
                                  if name != "modular-addition"}       # grokking is studied full-batch


def count_text(n) -> str:
    """12 -> '12', 1437 -> '1.4k', 60000 -> '60k', 10745088 -> '10.7M' (for labels; tables print exact counts)."""
    n = int(n)
    if n < 1000:
        return str(n)
    for div, unit in ((1e3, "k"), (1e6, "M"), (1e9, "G")):
        v = n / div
        t = f"{v:.1f}" if v < 99.95 else f"{v:.0f}"
        if float(t) < 1000 or unit == "G":
            return (t[:-2] if t.endswith(".0") else t) + unit


_lock = threading.Lock()        # sessions and the server's warm-up thread ask at the same time: compute each once


@functools.lru_cache(maxsize=None)
def _info(name: str) -> tuple:
    return tuple(sorted(wb.problems.info(name).items()))


def problem_info(name: str) -> dict:
    """``wb.problems.info(name)`` (n_params, n_train, n_test, data_available, data_note), cached per process."""
    with _lock:
        return dict(_info(name))


def user_problem_info(prob: Problem) -> dict:
    """The same fields for a user's Problem object (its data is in memory)."""
    return {"n_params": prob.n_params, "n_train": len(prob.train),
            "n_test": None if prob.test is None else len(prob.test), "data_available": True,
            "data_note": "your problem" + (f": {prob.doc}" if prob.doc else "")}


def problem_label(name: str, info: dict, kind: str | None = None, user: bool = False) -> str:
    """'digits-mlp · 4.6k params · 1.4k/360 examples', '... (data missing)' where info says so."""
    parts = [name + (" (yours)" if user else "")]
    if kind == "function":
        parts.append("2D test function")
    else:
        if info.get("n_params") is not None:
            parts.append(f"{count_text(info['n_params'])} params")
        if info.get("n_train") is not None:
            ex = count_text(info["n_train"])
            if info.get("n_test"):
                ex += f"/{count_text(info['n_test'])}"
            parts.append(f"{ex} examples")
    label = " · ".join(parts)
    if not info.get("data_available", True):
        label += " (data missing)"
    return label


def dashboard_options(name: str, info: dict | None = None) -> dict:
    """The options the dashboard fills in when ``name`` is chosen: DASHBOARD_OPTIONS restricted to the problem's
    options, plus ``data="synthetic"`` when its real data is missing and it offers a synthetic stand-in."""
    specs = {p.name: p for p in wb.problems.options(name)}
    out = {k: v for k, v in DASHBOARD_OPTIONS.get(name, {}).items() if k in specs}
    info = problem_info(name) if info is None else info
    data = specs.get("data")
    if not info.get("data_available", True) and data is not None and "synthetic" in data.choices:
        out["data"] = "synthetic"
    return out
