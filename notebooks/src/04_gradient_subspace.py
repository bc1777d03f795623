"""Build notebooks/04_gradient_subspace.ipynb (saved without outputs).

    python notebooks/src/04_gradient_subspace.py            # write the notebook
    python notebooks/src/04_gradient_subspace.py --execute  # also run it (WORKBENCH_QUICK=1) to check it
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 04 · Gradient descent happens in a tiny subspace — under SGD

**Paper.** G. Gur-Ari, D. A. Roberts, E. Dyer, *Gradient Descent Happens in a Tiny Subspace*, 2018
(arXiv:1812.04754). Background on the outliers: L. Sagun, U. Evci, V. U. Güney, Y. Dauphin, L. Bottou, *Empirical
Analysis of the Hessian of Over-Parametrized Neural Networks*, 2017 (arXiv:1706.04454); V. Papyan, *Measurements of
Three-Level Hierarchical Structure in the Outliers in the Spectrum of Deepnet Hessians*, ICML 2019
(arXiv:1901.08244).

**Phenomenon.** Trained with SGD at ordinary step sizes (their MNIST/CIFAR-10 runs: learning rate 0.1, batch 64),
after a short initial phase the gradient lies mostly in the span of the top-k Hessian eigenvectors, k = the number
of classes C — a k-dimensional subspace out of n parameters — and that subspace changes only slowly. This is a
property of the *stochastic* dynamics: full-batch gradient descent at a step size well inside its stable region
damps the sharp directions first and leaves its gradient in the bulk of the spectrum, so there the fraction
collapses. Both appear below, from the same initialisation and the same step size.

**Expected figure.** Under SGD the fraction ‖Vᵀg‖²/‖g‖² of the full-batch gradient in the top-10 eigenspace
climbs within a few hundred steps to most of ‖g‖² (hundreds of times the random-subspace baseline k/n), while
under full-batch GD at the same step size it falls orders of magnitude below that baseline.

`wb.probes.GradientSubspace(every, k)` measures at every probe step, with V the top-k Hessian eigenvectors on the
training set (warm-started Lanczos): `subspace_fraction` (full-batch gradient), `subspace_fraction_batch` (the
mini-batch gradient of that step), `subspace_random_fraction` (a random k-subspace: expected k/n),
`subspace_overlap` = Tr(P P′)/k with the previous probe's subspace (1 = unchanged) and `subspace_gap`, the
relative gap (λ_k − λ_{k+1})/λ_k below the subspace. The SGD run is the one of the dashboard preset *tiny subspace
(digits, SGD)* (same problem, step size, batch size, seed and k, and in full mode its 1000 steps), except that the
notebook probes the subspace every 10 steps where the preset does every 20 (and adds no `Eval` probe); the
full-batch GD run is the contrast the
preset's description suggests.

**Run time**: full mode (1000 steps per run) took 15 to 17 s in two runs here (a 2-core CPU shared with other jobs);
`WORKBENCH_QUICK=1` runs 500 steps per run. The last cell prints the time this run took.
""")

code(r"""
import copy
import json
import os
import time

import numpy as np
import torch
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import workbench as wb
from workbench.probes import GradientSubspace

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
torch.set_num_threads(1 if QUICK else max(1, torch.get_num_threads()))
C = 10                                   # classes, and k: the dimension of the top subspace
LR, BATCH = 0.1, 64                      # Gur-Ari et al.'s SGD setting
STEPS, EVERY = (500, 10) if QUICK else (1000, 10)
MIN_GAP = GradientSubspace().min_gap     # the probe's threshold for a well-defined top-k eigenspace (0.1)
T0 = time.perf_counter()

prob = wb.problems.make("digits-mlp", seed=0, width=32, depth=2)
n = prob.n_params
data, test = prob.data(), prob.data("test")
print(f"digits, MLP 64-32-32-{C} (tanh), cross-entropy: n = {n:,} parameters, {len(prob.train)} training images; "
      f"the top-{C} subspace is {C / n:.2%} of the dimensions ({'quick' if QUICK else 'full'} mode, {STEPS} steps)")
""")

md(r"""
## 1 · SGD against full-batch GD at the same step size

Two runs from the same initialisation with η = 0.1: SGD with batches of 64, and full-batch GD. The SGD run keeps
copies of the model at a few checkpoints for sections 3 and 4. The probe also records the top eigenvalues, so
η·λ_max tells how far inside its stable region (η·λ_max < 2) GD runs.
""")

code(r"""
CKPT = sorted({0, STEPS // 4, *np.linspace(STEPS // 2, STEPS, 4).astype(int).tolist()})
checkpoints = {}


def keep(row):
    if row["step"] + 1 in CKPT:
        checkpoints[row["step"] + 1] = copy.deepcopy(run_sgd.model)


run_sgd = wb.Run(prob, "sgd", lr=LR, batch_size=BATCH, steps=STEPS, seed=0,
                 probes=[GradientSubspace(every=EVERY, k=C)], callback=keep)
checkpoints[0] = copy.deepcopy(run_sgd.model)
run_sgd.run()
run_gd = wb.train(prob, "gd", lr=LR, steps=STEPS, seed=0, probes=[GradientSubspace(every=EVERY, k=C)])
runs = {f"SGD, batch {BATCH}": run_sgd, "full-batch GD": run_gd}


def late(run, var):
    # mean over the second half of the probe steps (NaNs, e.g. the mini-batch value at the final call, skipped)
    return float(run.record[var].sel(subspace_step=slice(STEPS // 2, None)).mean())


stats = {}
for name, run in runs.items():
    rec = run.record
    eta_lam = LR * rec.subspace_eigenvalues.isel(subspace_eig=0)
    train = prob.evaluate(run.model, data)
    gap = rec.subspace_gap
    tied = (gap < MIN_GAP).values
    tied_late = (gap.sel(subspace_step=slice(STEPS // 2, None)) < MIN_GAP).values
    stats[name] = dict(frac=late(run, "subspace_fraction"), frac_batch=late(run, "subspace_fraction_batch"),
                       rand=late(run, "subspace_random_fraction"), overlap=late(run, "subspace_overlap"),
                       eta_lam_max=float(eta_lam.max()), eta_lam_end=float(eta_lam[-1]),
                       train_loss=train["loss"], train_acc=train["accuracy"],
                       test_acc=prob.evaluate(run.model, test)["accuracy"],
                       tied=float(tied.mean()), tied_late=float(tied_late.mean()),
                       gap_median_late=float(gap.sel(subspace_step=slice(STEPS // 2, None)).median()),
                       tied_steps=gap.subspace_step.values[tied])
    s = stats[name]
    print(f"{name:15s} {run.status}; final model on the training set: loss {s['train_loss']:.4f}, accuracy "
          f"{s['train_acc']:.3f}; test accuracy {s['test_acc']:.3f}; "
          f"eta*lambda_max: max {s['eta_lam_max']:.2f}, final {s['eta_lam_end']:.2f} (stable below 2)")
    print(f"{'':15s} mean over the second half: fraction of |g|^2 in the top-{C} eigenspace "
          f"{s['frac']:.3g} (full-batch gradient), {s['frac_batch']:.3g} (mini-batch gradient); "
          f"random {C}-subspace {s['rand']:.2g} (k/n = {C / n:.2g})")
    last_tied = int(s["tied_steps"][-1]) if len(s["tied_steps"]) else None
    print(f"{'':15s} eigengap (lambda_{C} - lambda_{C + 1}) / lambda_{C} below min_gap = {MIN_GAP:g} (top-{C} "
          f"eigenspace ill-defined) at {s['tied']:.0%} of the probe calls, {s['tied_late']:.0%} of those of the "
          f"second half (last at step {last_tied}); median gap over the second half {s['gap_median_late']:.3f}")
sgd, gd = stats[f"SGD, batch {BATCH}"], stats["full-batch GD"]
print(f"\nSGD: the full-batch gradient's fraction is {sgd['frac'] / (C / n):.0f} x the random baseline k/n; "
      f"GD at the same step: {gd['frac'] / (C / n):.1e} x k/n, i.e. {'below' if gd['frac'] < C / n else 'above'} "
      "the random baseline")
gd_frac = run_gd.record.subspace_fraction
gd_steps, gd_below = gd_frac.subspace_step.values, (gd_frac < C / n).values
first_below = int(gd_steps[gd_below][0]) if gd_below.any() else None
above_after = [int(t) for t in gd_steps[~gd_below] if first_below is not None and t > first_below]
below_from = int(gd_steps[np.flatnonzero(~gd_below)[-1] + 1]) if gd_below[-1] else None
print(f"GD's fraction: {float(gd_frac[0]):.3f} at step 0; first below k/n at step {first_below}; above it again at "
      f"steps {above_after}; below it for good from step {below_from} "
      f"({float(gd_frac.sel(subspace_step=below_from)):.1e}), {float(gd_frac[-1]):.1e} at the end "
      f"(step {int(gd_steps[-1])})")
gd_gap_early = run_gd.record.subspace_gap.sel(subspace_step=slice(None, below_from))
crossing_tied = bool((gd_gap_early < MIN_GAP).all())
print(f"GD's eigengap at the probe calls up to step {below_from}: at most {float(gd_gap_early.max()):.3f}, i.e. "
      f"{'below' if crossing_tied else 'not always below'} min_gap = {MIN_GAP:g} at all of them")
""")

code(r"""
fig = make_subplots(rows=1, cols=2, subplot_titles=list(runs), shared_yaxes=True, horizontal_spacing=0.04)
for col, run in enumerate(runs.values(), start=1):
    rec = run.record
    s = rec.subspace_step.values
    fig.add_scatter(x=s, y=rec.subspace_fraction, name="full-batch gradient", line=dict(color="#1f77b4"),
                    legendgroup="f", showlegend=col == 1, row=1, col=col)
    if col == 1:   # for GD the mini-batch gradient is the full-batch one
        fig.add_scatter(x=s, y=rec.subspace_fraction_batch, name=f"mini-batch gradient (batch {BATCH})",
                        line=dict(color="#ff7f0e"), row=1, col=col)
    fig.add_scatter(x=s, y=rec.subspace_random_fraction, name=f"random {C}-subspace", legendgroup="r",
                    line=dict(color="gray", dash="dot"), showlegend=col == 1, row=1, col=col)
    fig.add_hline(y=C / n, line=dict(color="black", dash="dash", width=1), row=1, col=col)
fig.update_yaxes(type="log", exponentformat="power")
fig.update_yaxes(title_text=f"fraction of ‖g‖² in the top-{C} eigenspace", row=1, col=1)
fig.update_xaxes(title_text="step")
fig.update_layout(height=430, width=1050, legend=dict(orientation="h", y=-0.2),
                  title=f"Gradient in the top-{C} Hessian eigenspace (dashed: k/n = {C / n:.1e})")
fig.show()
""")

md(r"""
Under SGD the fraction starts at the initial value it shares with GD, dips during the first epochs, then climbs and
stays high (noisily: a single SGD iterate sits at a random point of its jitter), most of ‖g‖² over the second half
in both modes of this notebook (printed above: 0.85 in full mode) and a few hundred times k/n. Full-batch GD
from the same start and at the same step never gets there: its fraction first drops below the random baseline at
step 50, is back above it for two probes (steps 90 and 100), stays below it from step 110 on and keeps falling,
not monotonically, to about 10⁻⁶ of ‖g‖² as a mean over the second half and 4·10⁻⁸ at the end (full mode; the
steps are printed above). Both runs fit the training set (training accuracy 0.99 for both in full mode, printed
above) and reach similar test accuracy; what differs is where their gradients point.

**Caveat: the top-10 eigenspace is not always well defined.** On this network λ₁₀ and λ₁₁ are close: the probe
records the relative gap (λ₁₀ − λ₁₁)/λ₁₀ as `subspace_gap`, and at the calls where it is below `min_gap` = 0.1
(at step 0 it is 0.018, section 3) the probe warns (the `RuntimeWarning` above) that the fraction and the
overlap depend on which of the nearly tied eigenvectors the solver returned. The printed shares say how often: in
full mode at 44% of SGD's probe calls (35% of those of the second half) and 25% of GD's, all of GD's in the first
half. So the exact
steps at which GD's fraction crosses k/n fall in the stretch where its top-10 eigenspace is ill-defined, while its
second-half mean is measured at calls with a clear gap. For SGD the ambiguity barely matters for the fraction:
section 3 shows that the gradient's fraction hardly changes between k = C − 1 and k = 3C, so whichever of the
directions around the 10th the solver includes, the second-half fraction stays the same to a few thousandths.
""")

md(r"""
## 2 · Why SGD and not GD: the sharp directions are damped, or re-excited

Along an eigendirection of curvature λ, a gradient step multiplies the gradient component by about (1 − ηλ). With
η·λ_max well below 2, the sharp components shrink fastest, so full-batch GD is left moving along the flat bulk:
its top-C fraction decays to below the random baseline (it would be k/n if the gradient had no preferred
directions). SGD's mini-batch noise is not isotropic: its covariance is close to the Fisher/Gauss-Newton matrix,
which carries the same C outliers, so every step kicks the iterate along the sharp directions again, and the
full-batch gradient at the jittering iterate is dominated by them. The cell below measures both halves of this
argument: the per-step factors |1 − ηλ| on GD's top eigenvalues, and the fraction of the mini-batch noise
g_B − g that lies in the top-C eigenspace at the end of the SGD run.
""")

code(r"""
lam = run_gd.record.subspace_eigenvalues.isel(subspace_step=-1).values
fac = np.abs(1 - LR * lam)
print(f"GD, final top eigenvalues: lambda_1 = {lam[0]:.3f}, lambda_{C} = {lam[-1]:.3f}; "
      f"per-step factor |1 - eta*lambda|: {fac[0]:.3f} and {fac[-1]:.3f}; over {EVERY} steps (one probe "
      f"interval): {fac[0] ** EVERY:.2g} and {fac[-1] ** EVERY:.2g}")

# mini-batch gradient noise at the final SGD model, projected on the top-C Hessian eigenvectors there
model_end = checkpoints[STEPS]
V = wb.curvature.eigs(wb.curvature.hessian(model_end, prob.loss, data), k=C, tol=1e-3).vectors


def flat_grad(batch):
    grads = torch.autograd.grad(prob.loss(model_end, batch), list(model_end.parameters()))
    return torch.cat([t.reshape(-1) for t in grads]).to(V.dtype)


g_full = flat_grad(data)
gen = torch.Generator().manual_seed(0)
noise_frac = []
for _ in range(32):
    idx = torch.randperm(len(prob.train), generator=gen)[:BATCH]
    e = flat_grad((data[0][idx], data[1][idx])) - g_full
    noise_frac.append(float((V.T @ e).pow(2).sum() / e.pow(2).sum()))
noise_frac = float(np.mean(noise_frac))
print(f"SGD, final model: fraction of the mini-batch noise g_B - g in the top-{C} eigenspace "
      f"{noise_frac:.3f} (mean of 32 batches of {BATCH}) = {noise_frac / (C / n):.0f} x k/n; "
      f"the full-batch gradient there: {float((V.T @ g_full).pow(2).sum() / g_full.pow(2).sum()):.3f}")
""")

md(r"""
## 3 · k = C: the top of the spectrum

At the SGD checkpoints of the second half, the top 3C Hessian eigenvalues and the fraction of the full-batch
gradient in the top-k eigenspace as k grows (averaged over the checkpoints, since a single SGD iterate is noisy).
In large, well-trained networks C eigenvalues stand apart from the bulk (C − 1 to C for cross-entropy; Papyan
2019), which is why the paper takes k = C; how clearly they do on this small MLP, and how much of the gradient the
first C directions hold, is printed below the figure.
""")

code(r"""
K3 = 3 * C
eig = {t: wb.curvature.eigs(wb.curvature.hessian(m.eval(), prob.loss, data), k=K3, tol=1e-3)
       for t, m in sorted(checkpoints.items())}
LATE = [t for t in eig if t >= STEPS // 2]
curves = []
for t in LATE:
    m = checkpoints[t]
    grads = torch.autograd.grad(prob.loss(m, data), list(m.parameters()))
    g = torch.cat([x.reshape(-1) for x in grads]).to(eig[t].vectors.dtype)
    curves.append(((eig[t].vectors.T @ g) ** 2).cumsum(0).numpy() / float(g.pow(2).sum()))
frac_k = np.mean(curves, axis=0)
vals = np.mean([eig[t].values.numpy() for t in LATE], axis=0)
ks = np.arange(1, K3 + 1)
fig = make_subplots(rows=1, cols=2, subplot_titles=(f"top {K3} Hessian eigenvalues (mean over steps {LATE})",
                                                    "full-batch gradient fraction in the top-k eigenspace"))
fig.add_bar(x=ks, y=vals, showlegend=False, row=1, col=1)
fig.add_scatter(x=ks, y=frac_k, mode="lines+markers", showlegend=False, row=1, col=2)
fig.add_vline(x=C + 0.5, line_dash="dash", row=1, col=1)
fig.add_vline(x=C, line_dash="dash", row=1, col=2)
fig.update_xaxes(title_text="k (eigenvalue index)")
fig.update_yaxes(type="log", title_text="eigenvalue λ_k", row=1, col=1)
fig.update_yaxes(title_text="fraction of ‖g‖²", range=[0, 1], row=1, col=2)
fig.update_layout(height=400, width=1050)
fig.show()
ratios = vals[:-1] / vals[1:]
gap_at = int(np.argmax(ratios)) + 1
print("mean top eigenvalues:", np.round(vals, 3))
print(f"lambda_C / lambda_(C+1) = {ratios[C - 1]:.2f}; the largest ratio lambda_i / lambda_(i+1) over i < {K3} "
      f"is {ratios.max():.2f} at i = {gap_at}")
print(f"lambda_1 / lambda_C = {vals[0] / vals[C - 1]:.1f}, lambda_C / lambda_3C = {vals[C - 1] / vals[-1]:.1f}")
print("fraction of |g|^2 for k = 1, C/2, C - 1, C, C + 1, 2C, 3C:",
      {k: round(float(frac_k[k - 1]), 3) for k in (1, C // 2, C - 1, C, C + 1, 2 * C, 3 * C)})
spread = float(frac_k[-1] - frac_k[C - 2])
print(f"the fraction changes by {spread:.3f} from k = C - 1 to k = 3C: that bounds how much it can depend on which "
      f"of the nearly tied directions around the {C}th the solver returns")
gaps_ckpt = {t: round(float((eig[t].values[C - 1] - eig[t].values[C]) / eig[t].values[C - 1]), 3) for t in eig}
print(f"relative gap (lambda_{C} - lambda_{C + 1}) / lambda_{C} at the SGD checkpoints:", gaps_ckpt)
k95 = int(np.argmax(frac_k >= 0.95 * frac_k[-1])) + 1
print(f"the fraction reaches 95% of its k = {K3} value at k = {k95} (C = {C})")
""")

md(r"""
On this 32-unit MLP the top of the spectrum has no sharp gap at C: the eigenvalues fall off steadily over the first
C, with the largest relative gap a few places earlier (printed above), and the gradient's fraction is already
nearly complete before k = C — the extra directions up to 3C add almost nothing (the printed change from
k = C − 1 to 3C is a few thousandths). So k = C is a safe choice here rather than a sharp one: the 10th and 11th
eigenvalues nearly tie at some checkpoints (relative gap printed; below 0.1 at step 0 and at some later ones), but
the fraction does not depend on where the subspace is cut. A wider digits MLP (notebook 02, section 7) shows the C
clean outliers the papers see.
""")

md(r"""
## 4 · The subspace drifts slowly

`subspace_overlap` compares the top-C subspace with the one `EVERY` steps earlier. The heat map compares the
subspaces at the checkpoints pairwise: Tr(PᵢPⱼ)/C = ‖VᵢᵀVⱼ‖²_F / C (1 = the same subspace, about C/n for unrelated
ones).
""")

code(r"""
ts = sorted(eig)
Vs = {t: eig[t].vectors[:, :C] for t in ts}
M = np.array([[float((Vs[a].T @ Vs[b]).pow(2).sum()) / C for b in ts] for a in ts])
fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                    subplot_titles=(f"overlap with the subspace {EVERY} steps earlier",
                                    "pairwise overlap of SGD checkpoint subspaces"))
for name, run in runs.items():
    fig.add_scatter(x=run.record.subspace_step, y=run.record.subspace_overlap, name=name, row=1, col=1)
fig.add_heatmap(z=M, x=[str(t) for t in ts], y=[str(t) for t in ts], zmin=0, zmax=1, colorscale="Viridis",
                colorbar=dict(title="overlap", x=1.02), row=1, col=2)
fig.update_xaxes(title_text="step", row=1, col=1)
fig.update_yaxes(title_text="Tr(P P′)/C", range=[0, 1.05], row=1, col=1)
fig.update_xaxes(title_text="checkpoint step", row=1, col=2)
fig.update_yaxes(title_text="checkpoint step", row=1, col=2)
fig.update_layout(height=420, width=1050, legend=dict(orientation="h", y=-0.2))
fig.show()
i_half = ts.index(LATE[0])
late_pairs = M[i_half:, i_half:][np.triu_indices(len(LATE), 1)]
print(f"consecutive-probe overlap, mean over the second half: SGD {sgd['overlap']:.3f}, GD {gd['overlap']:.3f}")
print("overlap of each SGD checkpoint's subspace with the final one:",
      {t: round(float(M[i, -1]), 3) for i, t in enumerate(ts)})
print(f"pairs of second-half checkpoints (up to {STEPS - LATE[0]} steps apart): overlap "
      f"{late_pairs.min():.3f} to {late_pairs.max():.3f}")
late_rec = run_sgd.record.sel(subspace_step=slice(STEPS // 2, None))
tied_late = (late_rec.subspace_gap < MIN_GAP).values
ov_late = late_rec.subspace_overlap.values
ov_tied = float(np.nanmean(ov_late[tied_late])) if tied_late.any() else float("nan")
ov_clear = float(np.nanmean(ov_late[~tied_late])) if (~tied_late).any() else float("nan")
print(f"SGD, second half: consecutive-probe overlap {ov_tied:.3f} on average at the {int(tied_late.sum())} calls "
      f"with gap < {MIN_GAP:g}, {ov_clear:.3f} at the {int((~tied_late).sum())} others")
""")

md(r"""
The subspace at initialisation shares little with the final one, it turns during the first quarter of training,
and from then on consecutive probes' subspaces nearly coincide and checkpoints hundreds of steps apart share most
of their top-C subspace: the paper's "mostly preserved over long periods of training".

The caveat of section 1 applies to these overlaps: where λ₁₀ and λ₁₁ nearly tie, which direction comes 10th is
the solver's choice, and an overlap measured there depends on it. At initialisation the gap is 0.018 (section 3's
printout), so the heat map's row and column for step 0 compare with a subspace whose last directions are not well
determined. Over the second half of the SGD run the consecutive-probe overlap at calls with a near-tie is about
the same as at the others (printed above), so the slow drift measured there does not hinge on the ties.
""")

md(r"""
## 5 · Cost

The probe records the Hessian-vector products each call used (`subspace_hvps`). Each call computes the top
k + 1 = 11 eigenpairs (the 11th for `subspace_gap`) by Lanczos, to a residual of `tol` = 1e-2 times |λ|. It starts
from the previous call's eigenvectors (warm) except at every `refresh` = 20th call, which starts from a random vector
(cold) to guard against missing a new top eigenvector. The counts below show what the warm start buys on this
problem: little. The first call costs 66 products and the calls from index 20 on between about 20 and 35; in the
SGD run the later cold calls (indices 20, 40, … of the printed counts) cost no more than the warm calls next to
them, and in the GD run they cost two or three products more (about 10%).
""")

code(r"""
rec = run_sgd.record
print("HVPs per call (SGD run):", rec.subspace_hvps.values[:25], "...")
REFRESH = json.loads(rec.attrs["config"])["probes"][0]["refresh"]
hvp_cost = {}
for name, run in runs.items():
    h = run.record.subspace_hvps.values
    cold = np.arange(REFRESH, len(h), REFRESH)          # call indices 20, 40, ... start cold (index 0 too)
    nxt = cold[cold + 1 < len(h)] + 1
    hvp_cost[name] = dict(first=int(h[0]), cold=float(h[cold].mean()),
                          neighbours=float(np.concatenate([h[cold - 1], h[nxt]]).mean()),
                          warm=float(np.delete(h, np.r_[0, cold])[REFRESH - 1:].mean()),
                          later_min=int(h[REFRESH:].min()), later_max=int(h[REFRESH:].max()))
    c = hvp_cost[name]
    print(f"{name:15s} first call (cold) {c['first']}; the later cold calls {h[cold].tolist()}, mean {c['cold']:.1f}; "
          f"the warm calls next to them: mean {c['neighbours']:.1f}; all warm calls after call {REFRESH}: mean "
          f"{c['warm']:.1f}; every call from call {REFRESH} on: {c['later_min']} to {c['later_max']}")
print(f"probe time {float(rec.subspace_seconds.sum()):.1f} s of {float(rec.wall_time[-1]):.1f} s of the SGD run")
""")

md(r"""
## 6 · Measured beside the paper

The last line is machine-readable (the notebook's test parses it).
""")

code(r"""
rows = [
    (f"fraction of |g|^2 in top-{C}, SGD (full-batch g)", "most of |g|^2 after a short phase", f"{sgd['frac']:.2f}"),
    (f"fraction of |g|^2 in top-{C}, SGD (mini-batch g)", "-", f"{sgd['frac_batch']:.2f}"),
    ("same, random k-subspace (k/n)", "k/n (tiny)", f"{sgd['rand']:.1e} ({C / n:.1e})"),
    (f"fraction in top-{C}, full-batch GD, eta*lambda_max <= {gd['eta_lam_max']:.2f}",
     "- (not their regime)", f"{gd['frac']:.1e}"),
    (f"mini-batch noise in top-{C} (SGD, end)", "-", f"{noise_frac:.2f}"),
    ("top-C subspace overlap, consecutive probes (SGD)", "mostly preserved", f"{sgd['overlap']:.2f}"),
    (f"fraction at k = C from the top-{K3} curve (SGD)", "k = number of classes", f"{frac_k[C - 1]:.2f}"),
]
print(f"{'quantity (mean over the second half)':58s} {'paper':36s} measured")
for q, p, m in rows:
    print(f"{q:58s} {p:36s} {m}")
print(f"total run time {time.perf_counter() - T0:.0f} s")
results = dict(quick=QUICK, steps=STEPS, n_params=n, k=C, k_over_n=C / n, sgd_fraction=sgd["frac"],
               sgd_batch_fraction=sgd["frac_batch"], sgd_random_fraction=sgd["rand"], gd_fraction=gd["frac"],
               gd_eta_lambda_max=gd["eta_lam_max"], sgd_overlap=sgd["overlap"], noise_fraction=noise_frac,
               fraction_at_C=float(frac_k[C - 1]), sgd_test_accuracy=sgd["test_acc"],
               gd_test_accuracy=gd["test_acc"], sgd_train_accuracy=sgd["train_acc"],
               gd_train_accuracy=gd["train_acc"], gd_first_below_step=first_below, gd_above_again_steps=above_after,
               gd_below_from_step=below_from, gd_crossing_tied=crossing_tied, sgd_tied_share=sgd["tied"],
               sgd_tied_share_late=sgd["tied_late"],
               gd_tied_share=gd["tied"], gd_tied_share_late=gd["tied_late"], fraction_spread_C_1_to_3C=spread,
               gap_at_init=gaps_ckpt[0], overlap_tied_late=ov_tied, overlap_clear_late=ov_clear,
               hvp_cost=hvp_cost)
print("RESULTS " + json.dumps(results))
""")


if __name__ == "__main__":
    main(notebook(cells), "04_gradient_subspace.ipynb")
