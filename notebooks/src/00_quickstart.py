"""Build notebooks/00_quickstart.ipynb (saved without outputs).

    python notebooks/src/00_quickstart.py            # write the notebook
    python notebooks/src/00_quickstart.py --execute  # also run it (WORKBENCH_QUICK=1) to check it
"""
from __future__ import annotations

from _nbgen import main, notebook

CELLS = [
    ("md", r"""# Quickstart: a run, its record, a plot, the dashboard

The workbench trains a model on a *problem* with an *optimizer*, watches it with *probes*, and hands back a
*record*: one `xarray.Dataset` with every step's loss and every probe's measurements, ready to plot, save and
compare. This notebook walks through the whole loop in a minute on a CPU.

**Run time**: 7 s in full mode on a 2-core laptop-class CPU (measured), a few seconds with `WORKBENCH_QUICK=1`."""),
    ("code", r"""import os
import numpy as np
import plotly.graph_objects as go
import workbench as wb

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"   # the tests run every notebook in quick mode
STEPS = 150 if QUICK else 1500
print(wb.problems.list())
print(wb.optimizers.list())"""),
    ("md", r"""## A problem
`wb.problems.make` builds a seeded problem: a model, data and a loss. Every option is validated against the
problem's schema (`wb.problems.options(name)`), so a typo is an error that names the field."""),
    ("code", r"""prob = wb.problems.make("digits-mlp", seed=0, width=64, depth=2, loss="ce")
print(prob.describe())"""),
    ("md", r"""## A run
`wb.train` trains a copy of `prob.model` (the problem stays at its initialisation, so several optimizers can
start from the same point). Probes measure on their own schedules: `Norms` (weight norm, distance from
initialisation, update size), `Eval` (test loss and accuracy) and `Trajectory` (parameter snapshots)."""),
    ("code", r"""probes = [wb.probes.Norms(every=10), wb.probes.Eval(every=STEPS // 10), wb.probes.Trajectory(every=STEPS // 30)]
run = wb.train(prob, optimizer="sgd", lr=0.1, momentum=0.9, steps=STEPS, batch_size=64, seed=0, probes=probes)
print(run.status, "-", run.record.sizes["step"], "steps")"""),
    ("md", r"""## The record
Per-step variables live on `step`; each probe has its own coordinate (`norms_step`, `eval_step`, ...). Every
variable says what it is in its attrs, and the dataset attrs hold the whole configuration."""),
    ("code", r"""rec = run.record
rec"""),
    ("code", r"""print(rec.test_accuracy.attrs["description"])
print(wb.records.config(rec)["hparams"])
final_acc = float(rec.test_accuracy[-1])
print(f"test accuracy after {STEPS} steps: {final_acc:.3f}")
assert final_acc > 0.5, "SGD with momentum should learn digits"  # a sanity check the tests rely on"""),
    ("md", "## A plot"),
    ("code", r"""fig = go.Figure()
fig.add_scatter(x=rec.step, y=rec.loss, name="train loss (mini-batch)", line=dict(width=1))
fig.add_scatter(x=rec.eval_step, y=rec.test_loss, name="test loss", mode="lines+markers")
fig.update_layout(xaxis_title="step", yaxis_title="loss", yaxis_type="log", template="plotly_white", height=350)
fig"""),
    ("md", r"""Hoffer et al. (2017) observed that the distance from initialisation grows very slowly during training
("ultra-slow diffusion", roughly like log t); the `Norms` probe shows it directly. Here it grows fast over the
first few dozen steps and then ever more slowly: it is strongly sublinear (the cell prints the distance gained per
step in the first and second half of the run), and on the log-step axis the curve flattens: the distance gained
per doubling of the step count (printed from step 20 on; constant for log t) is smaller for the last doubling
than for the first, so late in the run the growth is slower still than log t."""),
    ("code", r"""d, s = rec.distance_from_init.values, rec.norms_step.values
at = lambda k: float(d[s == k][0])
half = int(s[np.searchsorted(s, s[-1] / 2)])
early, late = at(half) / half, (at(int(s[-1])) - at(half)) / (s[-1] - half)
print(f"distance from initialisation gained per step: {early:.4f} over steps 0-{half}, {late:.4f} over steps "
      f"{half}-{int(s[-1])}")
marks = [k for k in (20, 40, 80, 160, 320, 640, 1280) if k <= s[-1]]
gains = [at(k2) - at(k1) for k1, k2 in zip(marks, marks[1:])]
print("distance gained per doubling of the step count:",
      ", ".join(f"{k1}->{k2}: {g:.2f}" for k1, k2, g in zip(marks, marks[1:], gains)))
assert late < early / 2 and gains[-1] < gains[0]
go.Figure(go.Scatter(x=rec.norms_step[1:], y=rec.distance_from_init[1:], mode="lines")).update_layout(
    xaxis_type="log", xaxis_title="step", yaxis_title="‖θ_t − θ_0‖", template="plotly_white", height=300)"""),
    ("md", r"""## Save and load
Saves are atomic (a temporary file in the same directory, then a rename), so an interrupted save never leaves a
half-written record behind."""),
    ("code", r"""import tempfile, pathlib
path = pathlib.Path(tempfile.mkdtemp()) / "quickstart.nc"
wb.save(rec, path)
back = wb.load(path)
assert np.array_equal(back.loss.values, rec.loss.values)
print("saved and reloaded", path.name, back.attrs["status"])"""),
    ("md", r"""## Divergence is recorded, not lost
A learning rate above the stability limit makes the loss explode; the run stops with status `diverged` and keeps
every step before it. On the quadratic with Hessian eigenvalues 1 and 10, GD is stable only for lr < 2/10."""),
    ("code", r"""quad = wb.problems.make("quadratic", lambda1=1.0, lambda2=10.0)
for lr in (0.19, 0.21):
    r = wb.train(quad, optimizer="gd", lr=lr, steps=400, progress=False)
    print(f"lr={lr}: {r.status} after {r.record.sizes['step']} steps, last loss {r.record.loss.values[-1]:.3g}")"""),
    ("md", r"""## The dashboard, inline
The same dashboard that `workbench app` serves runs inside JupyterLab: pick a problem and an optimizer, set the
hyperparameters and press **Run** to watch the loss (and, on the 2D test functions, the optimizer's path) live."""),
    ("code", r"""import panel as pn
from widgets import Dashboard
pn.extension("plotly", inline=True)   # Panel's and plotly's JavaScript inside the notebook: renders offline too
dash = Dashboard(problem="rosenbrock", optimizer="adam")
dash"""),
]


if __name__ == "__main__":
    main(notebook(CELLS), "00_quickstart.ipynb")
