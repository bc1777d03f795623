"""Build notebooks/03_edge_of_stability.ipynb (saved without outputs).

    python notebooks/src/03_edge_of_stability.py            # write the notebook
    python notebooks/src/03_edge_of_stability.py --execute  # also run it (WORKBENCH_QUICK=1) to check it
"""
from __future__ import annotations

from _nbgen import main, notebook

CELLS = [
    ("md", r"""# Edge of stability: sharpness meets 2/η

Full-batch gradient descent with step size η is only stable on a quadratic whose largest Hessian eigenvalue
(the *sharpness*) is below 2/η. Cohen et al. (2021) found that neural networks trained with GD do not stay far
below that line: the sharpness **rises** during training (*progressive sharpening*) until it reaches 2/η, then
**hovers just above it** while the loss keeps decreasing — non-monotonically, over long time scales. That regime
is the *edge of stability* (EoS).

This notebook reproduces it on sklearn's digits (a tanh MLP with squared loss, as in the paper's fc-tanh
experiments) with `wb.probes.Sharpness`, which tracks the top Hessian eigenvalue during training by warm-started
Lanczos (on networks by default with finite-difference Hessian-vector products that reuse the training step's
gradient; `method="exact"` for double backward) and records the optimizer's stability threshold at the current
learning rate next to it:

| optimizer | threshold on | value |
|---|---|---|
| GD / SGD | λ_max(H) | 2/η |
| heavy-ball momentum β | λ_max(H) | (2 + 2β)/η |
| Nesterov momentum β | λ_max(H) | (2 + 2β)/((1 + 2β)η) |
| Adam (β₁) | λ_max(P⁻¹H), P the preconditioner | (2 + 2β₁)/((1 − β₁)η) = 38/η for β₁ = 0.9 |

References
* J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, *Gradient Descent on Neural Networks Typically Occurs at
  the Edge of Stability*, ICLR 2021 (arXiv:2103.00065).
* J. Cohen, B. Ghorbani, S. Krishnan, N. Agarwal, S. Medapati, M. Badura, D. Suo, D. Cardoze, Z. Nado, G. Dahl,
  J. Gilmer, *Adaptive Gradient Methods at the Edge of Stability*, 2022 (arXiv:2207.14484).
* A. Lewkowycz, Y. Bahri, E. Dyer, J. Sohl-Dickstein, G. Gur-Ari, *The large learning rate phase of deep
  learning: the catapult mechanism*, 2020 (for η above 2/λ₀ at initialisation).

**Run time** on a laptop CPU: full mode (width 200, all 1437 training digits, 2000 steps per run, eight runs, the
sharpness every 10 steps) took 2.5 minutes here (4.9 minutes of CPU time on 2 cores); quick mode
(`WORKBENCH_QUICK=1`: width 16, 200 digits, 150 steps) about 20 seconds. Long cells show progress bars; the last
cell prints the time this run took. (An earlier version of the engine needed about 100 CPU-minutes for the same
full mode.)"""),
    ("code", r"""import os
import warnings

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import workbench as wb
from workbench.probes import Sharpness

import time

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
warnings.simplefilter("ignore", category=RuntimeWarning)
T_START = time.perf_counter()
PROGRESS = not QUICK            # progress bars on the long training cells

WIDTH, N_TRAIN, STEPS, EVERY = (16, 200, 150, 10) if QUICK else (200, 1437, 2000, 10)
prob = wb.problems.make("digits-mlp", width=WIDTH, depth=2, loss="mse", n_train=N_TRAIN)
print(prob.describe().splitlines()[0], f"- {prob.n_params:,} parameters, {len(prob.train)} training examples")"""),
    ("md", r"""## 1. Gradient descent at several step sizes

The initial sharpness λ₀ is measured first; step sizes are chosen relative to it so that 2/η lies above λ₀
(progressive sharpening has room to happen) at different heights. Each run records `sharpness` (λ_max(H) on
the training set, eval mode) and `sharpness_threshold` (2/η) every `EVERY` steps."""),
    ("code", r"""H0 = wb.curvature.hessian(prob.model, prob.loss, prob.data())
lam0 = float(wb.curvature.eigs(H0, k=1, tol=1e-4).values[0])
print(f"initial sharpness λ0 = {lam0:.2f}")
# 2/lr at 1.3x, 2x and 3x the initial sharpness (closer in quick mode: fewer steps to sharpen)
LRS = [2 / (f * lam0) for f in ((1.1, 1.3, 1.6) if QUICK else (1.3, 2.0, 3.0))]
runs = {}
for lr in LRS:
    runs[lr] = wb.train(prob, "gd", lr=lr, steps=STEPS, probes=[Sharpness(every=EVERY)], progress=PROGRESS)
    rec = runs[lr].record
    print(f"lr={lr:.4f}  2/lr={2 / lr:6.2f}  final loss={rec.loss.values[-1]:.4f}  "
          f"final sharpness={float(rec.sharpness[-1]):6.2f}  status={runs[lr].status}")"""),
    ("code", r"""colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "sharpness λ_max(H) and 2/η (dashed)"))
for c, (lr, run) in zip(colors, runs.items()):
    rec = run.record
    fig.add_scatter(x=rec.step, y=rec.loss, name=f"η={lr:.3g}", line=dict(color=c), row=1, col=1)
    fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness, name=f"λ_max, η={lr:.3g}", line=dict(color=c),
                    showlegend=False, row=1, col=2)
    fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness_threshold, line=dict(color=c, dash="dash"),
                    showlegend=False, row=1, col=2)
fig.update_yaxes(type="log", row=1, col=1)
fig.update_xaxes(title_text="step")
fig.update_layout(height=420, width=1000)
fig.show()"""),
    ("md", r"""Each sharpness curve climbs (progressive sharpening) until it meets its own dashed line 2/η, and then
stops climbing: it hovers at (slightly above) 2/η for the rest of training. The smaller the step, the later the
meeting. A quadratic model would diverge once λ_max > 2/η; the network instead *self-stabilises* and keeps making
progress.

### The loss is not monotone at the edge of stability
Below, the fraction of steps at which the training loss went **up**, before and after the sharpness first reached
90% of 2/η, and how close to 2/η the sharpness stayed afterwards."""),
    ("code", r"""rows = []
for lr, run in runs.items():
    rec = run.record
    ratio = rec.sharpness / rec.sharpness_threshold
    hit = rec.sharpness_step.values[ratio.values >= 0.9]
    t_hit = int(hit[0]) if hit.size else None
    up = np.diff(rec.loss.values) > 0
    before = up[:t_hit].mean() if t_hit else up.mean()
    after = up[t_hit:].mean() if t_hit is not None and t_hit < len(up) else float("nan")
    at_edge = ratio.values[rec.sharpness_step.values >= t_hit] if t_hit is not None else np.array([np.nan])
    rows.append((lr, 2 / lr, t_hit, before, after, np.median(at_edge),
                 float(rec.sharpness_hvps.mean()), float(rec.sharpness_seconds.sum()), float(rec.wall_time[-1])))
print(f"{'lr':>8} {'2/lr':>7} {'reached at':>10} {'loss-up before':>14} {'after':>6} {'median λ/(2/η) after':>21}"
      f" {'HVPs/probe':>10} {'probe s':>8} {'run s':>6}")
for lr, thr, t, b, a, med, hv, ps, ws in rows:
    print(f"{lr:8.4f} {thr:7.2f} {str(t):>10} {b:14.1%} {a:6.1%} {med:21.3f} {hv:10.1f} {ps:8.1f} {ws:6.1f}")"""),
    ("md", r"""Before the edge the loss decreases at (almost) every step, as classical optimisation theory expects for
λ_max < 2/η; after it a sizeable fraction of the steps *increase* the loss, yet it decreases over longer
windows. Zooming in on the largest step size shows the short-term oscillation:"""),
    ("code", r"""lr = LRS[-1]
rec = runs[lr].record
t0 = int(0.6 * STEPS)
win = rec.sel(step=slice(t0, t0 + (50 if QUICK else 200)))
fig = go.Figure(go.Scatter(x=win.step, y=win.loss, mode="lines+markers", marker=dict(size=3)))
fig.update_layout(title=f"loss at the edge of stability, η={lr:.3g}", xaxis_title="step", yaxis_title="loss",
                  height=320, width=800)
fig.show()"""),
    ("md", r"""## 2. Momentum: the threshold moves to (2 + 2β)/η

For heavy-ball momentum β the stability threshold of a quadratic is (2 + 2β)/η, and for Nesterov
(2 + 2β)/((1 + 2β)η) (Cohen et al. 2021, appendix). The probe takes the rule from the optimizer registry
(`wb.optimizers.spec(name).threshold`) and evaluates it at the current learning rate. (Quick mode is too short
for the sharpness to climb all the way to the line.)"""),
    ("code", r"""BETA = 0.9
mom_runs = {}
for nesterov in (False, True):
    # put the threshold at 2x the initial sharpness
    factor = (2 + 2 * BETA) / (1 + 2 * BETA) if nesterov else 2 + 2 * BETA
    lr = factor / (2.0 * lam0)
    mom_runs[nesterov] = wb.train(prob, "sgd", lr=lr, momentum=BETA, nesterov=nesterov, steps=STEPS,
                                  probes=[Sharpness(every=EVERY)], progress=PROGRESS)
fig = go.Figure()
for c, (nesterov, run) in zip(colors, mom_runs.items()):
    rec = run.record
    label = "Nesterov" if nesterov else "heavy ball"
    fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness, name=f"λ_max, {label}", line=dict(color=c))
    fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness_threshold, name=f"threshold, {label}",
                    line=dict(color=c, dash="dash"))
    print(f"{label:10s} lr={run.hparams['lr']:.4f} threshold={float(rec.sharpness_threshold[0]):.2f} "
          f"final sharpness={float(rec.sharpness[-1]):.2f}  final loss={rec.loss.values[-1]:.4f}")
fig.update_layout(title=f"momentum β={BETA}: sharpness vs its stability threshold", xaxis_title="step",
                  height=380, width=800)
fig.show()"""),
    ("md", r"""## 3. Adam: the *preconditioned* sharpness hovers at 38/η

Adam's update is η P⁻¹ m with the diagonal preconditioner P = (1 − β₁ᵗ)(√v̂ + ε). Cohen et al. (2022) show that
the relevant curvature is λ_max(P⁻¹H) — measured here as the top eigenvalue of the symmetric P^{-1/2} H P^{-1/2}
— and that it rises to and hovers at (2 + 2β₁)/((1 − β₁)η) = 38/η for β₁ = 0.9. The raw sharpness λ_max(H)
follows no such line. (At step 0 Adam has no state yet, so the preconditioned value starts at step `EVERY`.)
In quick mode the runs are too short for the preconditioned sharpness to reach the line: run the notebook without
`WORKBENCH_QUICK` (2000 steps) to see it arrive and hover."""),
    ("code", r"""adam_runs = {}
for lr in ((2e-3, 4e-3) if QUICK else (1e-3, 2e-3)):
    adam_runs[lr] = wb.train(prob, "adam", lr=lr, steps=STEPS, probes=[Sharpness(every=EVERY)], progress=PROGRESS)
fig = make_subplots(rows=1, cols=2, subplot_titles=("preconditioned sharpness λ_max(P⁻¹H) and 38/η (dashed)",
                                                    "raw sharpness λ_max(H)"))
for c, (lr, run) in zip(colors, adam_runs.items()):
    rec = run.record
    fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness_preconditioned, name=f"Adam η={lr:g}",
                    line=dict(color=c), row=1, col=1)
    fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness_threshold, line=dict(color=c, dash="dash"),
                    showlegend=False, row=1, col=1)
    fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness, line=dict(color=c), showlegend=False, row=1, col=2)
    late = rec.sharpness_ratio.values[len(rec.sharpness_ratio) // 2:]
    print(f"Adam lr={lr:g}: 38/lr={float(rec.sharpness_threshold[0]):.0f}, median λ_max(P⁻¹H)/(38/η) over the "
          f"second half = {np.nanmedian(late):.2f}; final loss {rec.loss.values[-1]:.4f}")
fig.update_xaxes(title_text="step")
fig.update_layout(height=400, width=1000)
fig.show()"""),
    ("md", r"""## 4. Schedules: the threshold follows the current learning rate

With a learning-rate schedule the threshold is 2/η_t with η_t the rate of that step (also after `run.hot_swap(lr=...)`).
Under cosine decay the line rises and the sharpness, released, keeps sharpening."""),
    ("code", r"""lr = LRS[-1]
run = wb.train(prob, "gd", lr=lr, steps=STEPS, schedule="cosine", min_lr_ratio=0.2,
               probes=[Sharpness(every=EVERY)], progress=PROGRESS)
rec = run.record
fig = go.Figure()
fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness, name="λ_max(H)")
fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness_threshold, name="2/η_t", line=dict(dash="dash"))
fig.update_layout(title=f"cosine schedule from η={lr:.3g} to {0.2 * lr:.3g}", xaxis_title="step", height=350,
                  width=800)
fig.show()"""),
    ("md", r"""## 5. What tracking costs

Every probe call records how many Hessian-vector products it spent (`sharpness_hvps`) and how long it took
(`sharpness_seconds`). Warm starts make most calls cost a few products (the first call and the periodic cold
restarts, every `refresh`=20 calls, cost more). `benchmarks/dynamics.py` compares this with re-solving `eigsh`
from scratch at every probe, as the reference edge-of-stability code does."""),
    ("code", r"""rec = runs[LRS[1]].record
print("HVPs per probe call:", rec.sharpness_hvps.values[:20], "...")
total = float(rec.wall_time[-1])
print(f"probe time {float(rec.sharpness_seconds.sum()):.1f} s of {total:.1f} s total "
      f"({float(rec.sharpness_seconds.sum()) / total:.0%})")
print(rec.sharpness.attrs["description"])
print("threshold rule:", rec.attrs["sharpness_threshold_rule"])
print(f"run time of this notebook: {time.perf_counter() - T_START:.0f} s (QUICK={QUICK})")"""),
]


if __name__ == "__main__":
    main(notebook(CELLS), "03_edge_of_stability.ipynb")
