"""Presets for classic experiments (a preset fills the controls; ``race`` presets also run and pin a field)."""
from __future__ import annotations

__all__ = ["PRESETS"]

PRESETS: dict[str, dict] = {
    "edge of stability (digits, GD, MSE)": {
        "doc": "Cohen et al. 2021: full-batch GD on an MSE-trained MLP; sharpness rises to 2/lr and hovers there "
               "while the loss keeps falling non-monotonically.",
        "problem": "digits-mlp", "problem_options": {"width": 64, "depth": 2, "n_train": 512, "loss": "mse"},
        "optimizer": "gd", "hparams": {"lr": 0.1},
        "run": {"steps": 1500, "batch_size": None, "seed": 0},
        "probes": {"sharpness": {"every": 10}, "eval": {"every": 50}, "norms": {"every": 1}},
    },
    "tiny subspace (gaussian mixture)": {
        "doc": "Gur-Ari et al. 2018: after a few steps the gradient lies almost entirely in the top-k Hessian "
               "eigenspace, k = number of classes (vs k/n for a random subspace).",
        "problem": "gaussian-mixture", "problem_options": {"classes": 4, "n_train": 512, "width": 32},
        "optimizer": "gd", "hparams": {"lr": 0.5},
        "run": {"steps": 600, "batch_size": None, "seed": 0},
        "probes": {"subspace": {"every": 20, "k": 4}, "eval": {"every": 50}},
    },
    "Rosenbrock race": {
        "doc": "GD, heavy ball, Adam and Lion from the same start on the Rosenbrock valley; the race runs are "
               "pinned, then Run adds your own.",
        "problem": "rosenbrock", "problem_options": {},
        "optimizer": "adam", "hparams": {"lr": 0.05},
        "run": {"steps": 500, "batch_size": None, "seed": 0},
        "probes": {},
        "race": [("gd", {"lr": 0.001}), ("sgd", {"lr": 0.001, "momentum": 0.9}), ("adam", {"lr": 0.05}),
                 ("lion", {"lr": 0.01})],
    },
    "saddle escape": {
        "doc": "Start next to the saddle of x² − y²: GD escapes only as fast as the tiny y grows; momentum and "
               "sign/normalized methods leave much sooner.",
        "problem": "saddle", "problem_options": {"x0": -1.5, "y0": 0.001},
        "optimizer": "gd", "hparams": {"lr": 0.05},
        "run": {"steps": 150, "batch_size": None, "seed": 0},
        "probes": {},
        "race": [("gd", {"lr": 0.05}), ("sgd", {"lr": 0.05, "momentum": 0.9}), ("adam", {"lr": 0.05}),
                 ("lion", {"lr": 0.02})],
    },
}
