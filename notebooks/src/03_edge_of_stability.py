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

**Run time** on a 2-core CPU: full mode (width 200, all 1437 training digits, 2000 steps per run, eight runs, the
sharpness every 10 steps) takes a few minutes (2.5 on an idle laptop, up to about 8 on a busy shared machine);
quick mode (`WORKBENCH_QUICK=1`: width 16, 200 digits, 150 steps) well under a minute. Long cells show progress
bars; the last cell prints the time this run took. (An earlier version of the engine needed about 100 CPU-minutes
for the same full mode.)"""),
    ("code", r"""import os
import warnings

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import workbench as wb
from workbench.probes import Sharpness

import json
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
LR_MAX, LR_MIN = max(LRS), min(LRS)     # LRS runs from the largest step to the smallest
RESULTS = {"quick": QUICK, "steps": STEPS, "lrs": LRS}   # what the prose claims, printed as one line at the end
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
    ("md", r"""Each sharpness curve climbs (progressive sharpening) toward its own dashed line 2/η. The smaller the
step, the higher the line and the later the meeting. A run that meets its line with time to spare (in the first half of
training) then stops climbing and hovers at, or slightly above, 2/η for the rest of training. A quadratic model
would diverge once λ_max > 2/η; the network instead *self-stabilises* and keeps making progress. The cell below
measures this on each run: the first step with λ_max ≥ 2/η, the median and 10–90% range of λ_max/(2/η) from then
on, and the loss at that step and at the end. A run that meets its line only in the second half has too little
training left to show hovering, and is reported as such (in both modes that is the smallest step)."""),
    ("code", r"""edge = {}
for lr, run in runs.items():
    rec = run.record
    ratio, s = (rec.sharpness / rec.sharpness_threshold).values, rec.sharpness_step.values
    met = s[ratio >= 1]
    t_line = int(met[0]) if met.size else None
    after = ratio[s >= t_line] if t_line is not None else np.array([np.nan])
    loss_at = float(rec.loss.sel(step=min(t_line, int(rec.step[-1])))) if t_line is not None else float("nan")
    edge[lr] = dict(lr=lr, t_line=t_line, early=t_line is not None and t_line <= STEPS // 2,
                    median=float(np.median(after)), q10=float(np.quantile(after, 0.1)),
                    q90=float(np.quantile(after, 0.9)), loss_at_line=loss_at, loss_final=float(rec.loss.values[-1]))
meet = [edge[lr]["t_line"] for lr in sorted(runs, reverse=True)]
later = all(t is not None for t in meet) and all(a < b for a, b in zip(meet, meet[1:]))
print(f"first step with λ_max ≥ 2/η, largest η first: {meet}; the smaller the step, the later the meeting: {later}")
for lr, e in edge.items():
    t = e["t_line"]
    if t is None:
        print(f"η={lr:.4f}: never reaches 2/η = {2 / lr:.2f} in {STEPS} steps")
    elif e["early"]:
        print(f"η={lr:.4f}: meets 2/η = {2 / lr:.2f} at step {t} ({t / STEPS:.0%} of training), then hovers at "
              f"{e['median']:.2f} x 2/η (10-90%: {e['q10']:.2f}-{e['q90']:.2f}) to the end; loss "
              f"{e['loss_at_line']:.4f} there, {e['loss_final']:.4f} at the end")
    else:
        print(f"η={lr:.4f}: meets 2/η = {2 / lr:.2f} only at step {t} of {STEPS}: too late in this run to show "
              f"hovering (loss {e['loss_at_line']:.4f} there, {e['loss_final']:.4f} at the end)")
RESULTS["gd"] = list(edge.values())
RESULTS["meeting_later_for_smaller_steps"] = later"""),
    ("md", r"""### The loss is not monotone at the edge of stability
Below, the fraction of steps at which the training loss went **up**, before and after the sharpness first reached
90% of 2/η ("—" where a run starts there), and how close to 2/η the sharpness stayed afterwards."""),
    ("code", r"""rows = []
for lr, run in runs.items():
    rec = run.record
    ratio = rec.sharpness / rec.sharpness_threshold
    hit = rec.sharpness_step.values[ratio.values >= 0.9]
    t_hit = int(hit[0]) if hit.size else None
    up = np.diff(rec.loss.values) > 0
    before = up[:t_hit].mean() if t_hit else float("nan")      # nothing before an edge reached at step 0
    after = up[t_hit:].mean() if t_hit is not None and t_hit < len(up) else float("nan")
    at_edge = ratio.values[rec.sharpness_step.values >= t_hit] if t_hit is not None else np.array([np.nan])
    # over longer windows (a tenth of the run each) after the edge: does each end lower than it starts?
    W = STEPS // 10
    loss = rec.loss.values
    starts = range(t_hit, len(loss) - W + 1, W) if t_hit is not None else range(0)
    win_down = [bool(loss[a + W - 1] < loss[a]) for a in starts]
    rows.append(dict(lr=lr, thr=2 / lr, t_hit=t_hit, t_line=edge[lr]["t_line"], early=edge[lr]["early"],
                     before=float(before), after=float(after), median=float(np.median(at_edge)),
                     windows_down=sum(win_down), windows=len(win_down), hvps=float(rec.sharpness_hvps.mean()),
                     probe_s=float(rec.sharpness_seconds.sum()), run_s=float(rec.wall_time[-1])))
print(f"{'lr':>8} {'2/lr':>7} {'90% at':>7} {'line at':>7} {'loss-up before':>14} {'after':>6} "
      f"{'median λ/(2/η) after':>21} {'HVPs/probe':>10} {'probe s':>8} {'run s':>6}")
for r in rows:
    b = "—" if np.isnan(r["before"]) else f"{r['before']:.1%}"
    print(f"{r['lr']:8.4f} {r['thr']:7.2f} {str(r['t_hit']):>7} {str(r['t_line']):>7} {b:>14} {r['after']:6.1%} "
          f"{r['median']:21.3f} {r['hvps']:10.1f} {r['probe_s']:8.1f} {r['run_s']:6.1f}")
print()
befores = [r["before"] for r in rows if not np.isnan(r["before"])]
print(f"before the edge: the loss went up at {max(befores):.1%} of the steps at most")
for r in rows:
    if r["early"]:
        print(f"η={r['lr']:.4f} (meets 2/η in the first half): the loss went up at {r['after']:.1%} of the steps "
              f"after the edge, yet {r['windows_down']} of the {r['windows']} {W}-step windows after it end lower "
              f"than they start")
    else:
        print(f"η={r['lr']:.4f} (meets 2/η only at step {r['t_line']}): the loss went up at {r['after']:.1%} of the "
              f"steps after reaching 90% of 2/η at step {r['t_hit']}")
RESULTS["loss_up"] = rows"""),
    ("md", r"""Before the edge the loss decreases at (almost) every step, as classical optimisation theory expects for
λ_max < 2/η. In the runs that meet 2/η in the first half of training, a sizeable fraction of the steps after the
edge *increase* the loss, yet it decreases over longer windows: most windows of a tenth of the run end lower than
they start (the lines under the table). The smallest step reaches the edge too late in the run for this to show:
its loss has not begun to oscillate by the end. Zooming in on the largest step size, well after its meeting with
2/η, shows the short-term oscillation:"""),
    ("code", r"""lr = LR_MAX                          # the largest step size: at the edge for most of the run
rec = runs[lr].record
t0 = max(int(0.6 * STEPS), edge[lr]["t_line"] or 0)
win = rec.sel(step=slice(t0, t0 + (50 if QUICK else 200)))
n_up, n_steps = int((np.diff(win.loss.values) > 0).sum()), len(win.step) - 1
print(f"η={lr:.4f} (largest step, meets 2/η at step {edge[lr]['t_line']}), steps {int(win.step[0])}-"
      f"{int(win.step[-1])}: the loss went up at {n_up} of {n_steps} steps, and from {float(win.loss[0]):.4f} "
      f"to {float(win.loss[-1]):.4f} over the window")
RESULTS["zoom"] = dict(lr=lr, t0=int(win.step[0]), up=n_up, steps=n_steps, loss_start=float(win.loss[0]),
                       loss_end=float(win.loss[-1]))
fig = go.Figure(go.Scatter(x=win.step, y=win.loss, mode="lines+markers", marker=dict(size=3)))
fig.update_layout(title=f"loss at the edge of stability, η={lr:.3g} (the largest step)", xaxis_title="step",
                  yaxis_title="loss", height=320, width=800)
fig.show()"""),
    ("md", r"""## 2. Momentum: the threshold moves to (2 + 2β)/η

For heavy-ball momentum β the stability threshold of a quadratic is (2 + 2β)/η, and for Nesterov
(2 + 2β)/((1 + 2β)η) (Cohen et al. 2021, appendix). The probe takes the rule from the optimizer registry
(`wb.optimizers.spec(name).threshold`) and evaluates it at the current learning rate. Both runs put their threshold
at 2λ₀; the cell prints the first step at which the sharpness reaches it and the peak λ_max/threshold (both runs
reach it, in quick mode as well). With heavy ball the sharpness goes far above GD's 2/η at the same learning rate
without diverging."""),
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
    thr = float(rec.sharpness_threshold[0])
    ratio, s = (rec.sharpness / rec.sharpness_threshold).values, rec.sharpness_step.values
    t_reach = int(s[ratio >= 1][0]) if (ratio >= 1).any() else None
    peak = float(rec.sharpness.max())
    print(f"{label:10s} lr={run.hparams['lr']:.4f} threshold={thr:.2f} (2/lr={2 / run.hparams['lr']:.2f}): "
          f"sharpness reaches the threshold at step {t_reach}, peaks at {peak:.2f} = {peak / thr:.2f} x threshold "
          f"= {peak * run.hparams['lr'] / 2:.2f} x 2/lr; final sharpness={float(rec.sharpness[-1]):.2f}  "
          f"final loss={rec.loss.values[-1]:.4f}")
    RESULTS.setdefault("momentum", []).append(dict(nesterov=nesterov, lr=run.hparams["lr"], threshold=thr,
                                                   t_reach=t_reach, peak_ratio=peak / thr,
                                                   peak_over_2_lr=peak * run.hparams["lr"] / 2))
fig.update_layout(title=f"momentum β={BETA}: sharpness vs its stability threshold", xaxis_title="step",
                  height=380, width=800)
fig.show()"""),
    ("md", r"""## 3. Adam: the *preconditioned* sharpness hovers at 38/η

Adam's update is η P⁻¹ m with the diagonal preconditioner P = (1 − β₁ᵗ)(√v̂ + ε). Cohen et al. (2022) show that
the relevant curvature is λ_max(P⁻¹H) — measured here as the top eigenvalue of the symmetric P^{-1/2} H P^{-1/2}
— and that it rises to and hovers at (2 + 2β₁)/((1 − β₁)η) = 38/η for β₁ = 0.9. The raw sharpness λ_max(H)
follows no such line. (At step 0 Adam has no state yet, so the preconditioned value starts at step `EVERY`.)
The cell prints the first step at which it reaches the line, its peak and its median over the second half of
training, relative to 38/η. In quick mode the runs are too short for the preconditioned sharpness to reach the line
(its printed peak stays below 1): run the notebook without `WORKBENCH_QUICK` (2000 steps) to see it arrive and
hover."""),
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
    ratio, s = rec.sharpness_ratio.values, rec.sharpness_step.values
    late = ratio[len(ratio) // 2:]
    t_reach = int(s[ratio >= 1][0]) if (ratio >= 1).any() else None
    print(f"Adam lr={lr:g}: 38/lr={float(rec.sharpness_threshold[0]):.0f}; λ_max(P⁻¹H) reaches 38/η at step "
          f"{t_reach}, peaks at {np.nanmax(ratio):.2f} x 38/η, median over the second half = {np.nanmedian(late):.2f}"
          f" x 38/η; final loss {rec.loss.values[-1]:.4f}")
    RESULTS.setdefault("adam", []).append(dict(lr=lr, t_reach=t_reach, peak_ratio=float(np.nanmax(ratio)),
                                               first_ratio=float(ratio[~np.isnan(ratio)][0]),
                                               median_second_half=float(np.nanmedian(late))))
fig.update_xaxes(title_text="step")
fig.update_layout(height=400, width=1000)
fig.show()"""),
    ("md", r"""## 4. Schedules: the threshold follows the current learning rate

With a learning-rate schedule the threshold is 2/η_t with η_t the rate of that step (also after `run.hot_swap(lr=...)`).
The run below decays the largest step size of section 1 by a cosine to a fifth of it. Its sharpness reaches 2/η_t
early, while η_t is still close to its starting value: the run is at the edge of stability. Then the line rises and
the sharpness, released, keeps sharpening: it first rides the line up while the line rises slowly, drops below it
once the line rises faster than progressive sharpening, and keeps climbing from there, ending above the level at
which the constant-step run of section 1 (dotted) hovers. The cell prints each of these steps."""),
    ("code", r"""lr = LR_MAX
run = wb.train(prob, "gd", lr=lr, steps=STEPS, schedule="cosine", min_lr_ratio=0.2,
               probes=[Sharpness(every=EVERY)], progress=PROGRESS)
rec = run.record
ratio, s, lam = (rec.sharpness / rec.sharpness_threshold).values, rec.sharpness_step.values, rec.sharpness.values
i_meet = int(np.argmax(ratio >= 1)) if (ratio >= 1).any() else None
below = ratio < 0.9          # released: below 90% of the line from this probe to the end
i_rel = next((i for i in range(i_meet or 0, len(s)) if below[i:].all()), None) if i_meet is not None else None
const = runs[lr].record
print(f"cosine from η={lr:.4f}: λ_max first reaches 2/η_t at step {s[i_meet] if i_meet is not None else None} "
      f"(η_t = {2 / float(rec.sharpness_threshold[i_meet]) / lr:.1%} of η there)" if i_meet is not None else
      "cosine: λ_max never reaches 2/η_t")
if i_meet is not None and i_rel is not None:
    print(f"  rides the rising line up to step {s[i_rel - 1]}: median λ_max/(2/η_t) = "
          f"{np.median(ratio[i_meet:i_rel]):.2f} from its meeting until then, while 2/η_t rises from "
          f"{float(rec.sharpness_threshold[i_meet]):.1f} to {float(rec.sharpness_threshold[i_rel - 1]):.1f}")
    print(f"  released at step {s[i_rel]} (below 90% of 2/η_t from then on), it keeps sharpening: λ_max "
          f"{lam[i_rel]:.2f} there -> {lam[-1]:.2f} at the end (rising at every probe since: "
          f"{bool(np.all(np.diff(lam[i_rel:]) > 0))}); λ_max/(2/η_t) = {ratio[-1]:.2f} at the end")
    print(f"  at constant η={lr:.4f} the sharpness ends at {float(const.sharpness[-1]):.2f} (2/η = {2 / lr:.2f}); "
          f"under the cosine schedule it ends {lam[-1] / float(const.sharpness[-1]):.2f}x higher")
RESULTS["cosine"] = dict(lr=lr, t_meet=int(s[i_meet]) if i_meet is not None else None,
                         lr_frac_at_meet=(2 / float(rec.sharpness_threshold[i_meet]) / lr
                                          if i_meet is not None else None),
                         t_release=int(s[i_rel]) if i_rel is not None else None,
                         ride_median=float(np.median(ratio[i_meet:i_rel])) if i_rel else None,
                         lam_release=float(lam[i_rel]) if i_rel is not None else None,
                         lam_final=float(lam[-1]), ratio_final=float(ratio[-1]),
                         rising_after_release=bool(np.all(np.diff(lam[i_rel:]) > 0)) if i_rel is not None else None,
                         lam_final_constant=float(const.sharpness[-1]))
fig = go.Figure()
fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness, name="λ_max(H), cosine")
fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness_threshold, name="2/η_t", line=dict(dash="dash"))
fig.add_scatter(x=const.sharpness_step, y=const.sharpness, name=f"λ_max(H), constant η={lr:.3g}",
                line=dict(dash="dot", color="gray"))
fig.update_layout(title=f"cosine schedule from η={lr:.3g} (the largest step) to {0.2 * lr:.3g}", xaxis_title="step",
                  height=350, width=800)
fig.show()"""),
    ("md", r"""## 5. What tracking costs

Every probe call records how many Hessian-vector products it spent (`sharpness_hvps`) and how long it took
(`sharpness_seconds`). Warm starts make most calls cost a few products (the first call and the periodic cold
restarts, every `refresh`=20 calls, cost more). `benchmarks/dynamics.py` compares this with re-solving `eigsh`
from scratch at every probe, as the reference edge-of-stability code does."""),
    ("code", r"""rec = runs[LRS[1]].record
hv, cold = rec.sharpness_hvps.values, rec.sharpness_cold.values.astype(bool)
print("HVPs per probe call:", hv[:20], "...")
print(f"warm calls: median {np.median(hv[~cold]):.0f} HVPs (range {hv[~cold].min()}-{hv[~cold].max()}); cold calls "
      f"(the first and every 20th, {cold.sum()} of {len(hv)}): {hv[cold].tolist()}")
RESULTS["cost"] = dict(first=int(hv[0]), warm_median=float(np.median(hv[~cold])), cold=hv[cold].tolist())
total = float(rec.wall_time[-1])
print(f"probe time {float(rec.sharpness_seconds.sum()):.1f} s of {total:.1f} s total "
      f"({float(rec.sharpness_seconds.sum()) / total:.0%})")
print(rec.sharpness.attrs["description"])
print("threshold rule:", rec.attrs["sharpness_threshold_rule"])
print(f"run time of this notebook: {time.perf_counter() - T_START:.0f} s (QUICK={QUICK})")
print("RESULTS " + json.dumps(RESULTS, default=float))"""),
]


if __name__ == "__main__":
    main(notebook(CELLS), "03_edge_of_stability.ipynb")
