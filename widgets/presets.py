"""Presets for classic experiments (a preset fills the controls; ``race`` presets also run and pin a field)."""
from __future__ import annotations

__all__ = ["PRESETS", "DEFAULT_PRESET"]

#: What a fresh page (``workbench app``) opens with: a run that visibly moves within its first second.
DEFAULT_PRESET = "signSGD with momentum walks the Rosenbrock valley"

PRESETS: dict[str, dict] = {
    DEFAULT_PRESET: {
        "doc": "signSGD with momentum (Bernstein et al. 2018, Lion's ancestor) moves every coordinate by exactly "
               "lr = 0.008 a step: it drops into Rosenbrock's curved valley within a few steps (loss ÷6), then "
               "walks along the valley at constant speed, zig-zagging, to the minimum at (1, 1) (loss ÷2500 by "
               "step 500). Then try: momentum 0 (it stalls in the valley), switch to adam mid-run, or a preset "
               "above.",
        "problem": "rosenbrock", "problem_options": {},
        "optimizer": "signsgd", "hparams": {"lr": 0.008, "momentum": 0.9},
        "run": {"steps": 500, "batch_size": None, "seed": 0},
        "probes": {},
    },
    "edge of stability (digits, GD, MSE)": {
        "doc": "Cohen et al. 2021: full-batch GD on an MSE-trained MLP; sharpness rises to 2/lr and hovers there "
               "while the loss keeps falling non-monotonically.",
        "problem": "digits-mlp", "problem_options": {"width": 64, "depth": 2, "n_train": 512, "loss": "mse"},
        "optimizer": "gd", "hparams": {"lr": 0.1},
        "run": {"steps": 1500, "batch_size": None, "seed": 0},
        "probes": {"sharpness": {"every": 10}, "eval": {"every": 50}, "norms": {"every": 1}},
    },
    "tiny subspace (digits, SGD)": {
        "doc": "Gur-Ari, Roberts & Dyer 2018 (arXiv:1812.04754): under mini-batch SGD (lr 0.1, batch 64) the "
               "gradient soon lies mostly in the top-k Hessian eigenspace, k = 10 classes: about 0.8 of ‖g‖² over "
               "the second half of this run, against k/n ≈ 0.003 for a random k-subspace. Contrast: set batch_size "
               "empty (full-batch GD, same lr, well below 2/λ_max) and the fraction collapses below 1e-4, because "
               "stable GD damps the sharp directions first and leaves the gradient in the bulk.",
        "problem": "digits-mlp", "problem_options": {"width": 32, "depth": 2, "n_train": 1437},
        "optimizer": "sgd", "hparams": {"lr": 0.1},
        "run": {"steps": 1000, "batch_size": 64, "seed": 0},
        "probes": {"subspace": {"every": 20, "k": 10}, "eval": {"every": 50}},
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
