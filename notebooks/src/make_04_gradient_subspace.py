"""Build notebooks/04_gradient_subspace.ipynb (saved without outputs).

    python notebooks/src/make_04_gradient_subspace.py            # write the notebook
    python notebooks/src/make_04_gradient_subspace.py --execute  # also run it (WORKBENCH_QUICK=1) to check it
"""
from __future__ import annotations

from _nbgen import main, notebook

CELLS = [
    ("md", r"""# Gradient descent happens in a tiny subspace

Gur-Ari, Roberts & Dyer (2018) observed that, after a short initial phase, the training gradient lies almost
entirely in the span of the top-k eigenvectors of the Hessian, where k is the number of classes — a subspace of
dimension k out of n parameters — and that this subspace changes only slowly during training. The top-C
eigenvalues are the *outliers* of the Hessian spectrum of a C-class problem (Sagun et al. 2017; Papyan 2019),
produced by the Gauss-Newton part of the Hessian.

`wb.probes.GradientSubspace(every, k)` measures, at every probe step, with V the top-k Hessian eigenvectors
(warm-started Lanczos):

* `subspace_fraction` = ‖Vᵀg‖² / ‖g‖² for the full-batch gradient g, and `subspace_fraction_batch` for the
  mini-batch gradient of that step;
* `subspace_random_fraction`: the same for a random k-dimensional subspace (expected k/n) — the baseline;
* `subspace_overlap` = Tr(P P′)/k between the top-k subspace and the previous probe's (1 = unchanged).

References
* G. Gur-Ari, D. A. Roberts, E. Dyer, *Gradient Descent Happens in a Tiny Subspace*, 2018 (arXiv:1812.04754).
* L. Sagun, U. Evci, V. U. Güney, Y. Dauphin, L. Bottou, *Empirical Analysis of the Hessian of
  Over-Parametrized Neural Networks*, 2017 (arXiv:1706.04454).
* V. Papyan, *Measurements of Three-Level Hierarchical Structure in the Outliers in the Spectrum of Deepnet
  Hessians*, ICML 2019.

`WORKBENCH_QUICK=1` shrinks the problem so that the notebook runs in under a minute."""),
    ("code", r"""import copy
import os
import warnings

import numpy as np
import torch
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import workbench as wb
from workbench.probes import GradientSubspace

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
warnings.simplefilter("ignore", category=RuntimeWarning)

C = 4
WIDTH, N_TRAIN, STEPS, EVERY = (16, 256, 120, 10) if QUICK else (64, 1024, 1000, 10)
prob = wb.problems.make("gaussian-mixture", classes=C, dim=16, separation=1.5, n_train=N_TRAIN, n_test=512,
                        width=WIDTH, depth=2, activation="tanh", loss="ce")
n = prob.n_params
print(f"{C}-class gaussian mixture, MLP 16-{WIDTH}-{WIDTH}-{C}: n = {n:,} parameters; top-{C} subspace "
      f"= {C / n:.2%} of the dimensions")"""),
    ("md", r"""## 1. The gradient lives in the top-C eigenspace — when the step is large

Three runs from the same initialisation, with step sizes set relative to the initial sharpness λ₀: full-batch GD
at η = 1.8/λ₀ (near the stability limit 2/λ₀, like the step sizes used in practice), GD at a small step
η = 0.3/λ₀, and SGD with batches of 32 at η = 1/λ₀. For the first run the callback keeps copies of the model at a
few checkpoints to look at subspace drift afterwards."""),
    ("code", r"""H0 = wb.curvature.hessian(prob.model, prob.loss, prob.data())
lam0 = float(wb.curvature.eigs(H0, k=1, tol=1e-4).values[0])
checkpoints = {}
CKPT = np.unique(np.linspace(0, STEPS, 6).astype(int))
run_gd = wb.Run(prob, "gd", lr=1.8 / lam0, steps=STEPS, probes=[GradientSubspace(every=EVERY, k=C)],
                callback=lambda row: checkpoints.__setitem__(row["step"] + 1, copy.deepcopy(run_gd.model))
                if row["step"] + 1 in CKPT else None, progress=False)
checkpoints[0] = copy.deepcopy(run_gd.model)
run_gd.run()
run_small = wb.train(prob, "gd", lr=0.3 / lam0, steps=STEPS, probes=[GradientSubspace(every=EVERY, k=C)],
                     progress=False)
run_sgd = wb.train(prob, "sgd", lr=1.0 / lam0, batch_size=32, steps=STEPS,
                   probes=[GradientSubspace(every=EVERY, k=C)], progress=False)
runs = {"GD, η=1.8/λ0": run_gd, "GD, η=0.3/λ0": run_small, "SGD, batch 32, η=1/λ0": run_sgd}
print(f"λ0 = {lam0:.3f}")
for name, run in runs.items():
    rec = run.record
    late = rec.sel(subspace_step=slice(STEPS // 5, None))
    print(f"{name:22s} final train loss {rec.loss.values[-1]:.4f}; after the first fifth: mean fraction in "
          f"top-{C} = {float(late.subspace_fraction.mean()):.3f} (full-batch gradient), "
          f"{float(late.subspace_fraction_batch.mean()):.3f} (mini-batch); random {C}-subspace "
          f"{float(late.subspace_random_fraction.mean()):.1e} (k/n = {C / n:.1e})")"""),
    ("code", r"""fig = make_subplots(rows=1, cols=3, subplot_titles=list(runs), shared_yaxes=True)
for col, run in enumerate(runs.values(), start=1):
    rec = run.record
    s = rec.subspace_step
    fig.add_scatter(x=s, y=rec.subspace_fraction, name="full-batch gradient", line=dict(color="#1f77b4"),
                    showlegend=col == 1, row=1, col=col)
    fig.add_scatter(x=s, y=rec.subspace_fraction_batch, name="mini-batch gradient", line=dict(color="#ff7f0e"),
                    showlegend=col == 1, row=1, col=col)
    fig.add_scatter(x=s, y=rec.subspace_random_fraction, name=f"random {C}-subspace", line=dict(color="gray"),
                    showlegend=col == 1, row=1, col=col)
fig.update_yaxes(type="log", title_text=f"fraction of ‖g‖² in the top-{C} eigenspace", row=1, col=1)
fig.update_xaxes(title_text="step")
fig.update_layout(height=400, width=1100)
fig.show()"""),
    ("md", r"""With the large step, after a brief transient a large part of the gradient norm (about half on this small
network in quick mode, more for larger k — see section 2) lies in a C-dimensional subspace, two orders of
magnitude above the random baseline k/n, as Gur-Ari et al. report for practical step sizes.
The mechanism is visible by contrast with the small step: along a direction of curvature λ, gradient descent
multiplies the gradient component by (1 − ηλ) each step. With η ≪ 2/λ the sharp components decay fastest and the
gradient is left in flat directions (fraction → 0); with η close to 2/λ they oscillate instead of decaying and
dominate the gradient. SGD's mini-batch gradient carries extra noise spread over the bulk of the spectrum.
(Late in training the loss of a separable problem goes to zero and all fractions eventually become noisy.)

## 2. Why C: the outliers of the spectrum
The top of the Hessian spectrum during training (a checkpoint of the large-step run) and the gradient fraction
in the top-k eigenspace as k grows. In large, well-trained networks C eigenvalues stand out clearly from the bulk
(C − 1 to C for cross-entropy; Papyan 2019); on this small network the outliers are less separated, and the
fraction shows how many top directions the gradient actually uses."""),
    ("code", r"""T_MID = int(CKPT[2])        # a checkpoint during training (at the very end a separable problem is fitted)
model = checkpoints[T_MID].eval()
data = prob.data()
H = wb.curvature.hessian(model, prob.loss, data)
res = wb.curvature.eigs(H, k=3 * C, tol=1e-3)
grads = torch.autograd.grad(prob.loss(model, data), list(model.parameters()))
gvec = torch.cat([t.reshape(-1) for t in grads])
proj = (res.vectors.T @ gvec) ** 2
frac_k = (proj.cumsum(0) / gvec.pow(2).sum()).numpy()
fig = make_subplots(rows=1, cols=2, subplot_titles=(f"top {3 * C} Hessian eigenvalues at step {T_MID}",
                                                    "gradient fraction in the top-k eigenspace"))
fig.add_bar(x=np.arange(1, 3 * C + 1), y=res.values.numpy(), showlegend=False, row=1, col=1)
fig.add_scatter(x=np.arange(1, 3 * C + 1), y=frac_k, mode="lines+markers", showlegend=False, row=1, col=2)
fig.add_vline(x=C + 0.5, line_dash="dash", row=1, col=1)
fig.add_vline(x=C, line_dash="dash", row=1, col=2)
fig.update_xaxes(title_text="k")
fig.update_layout(height=380, width=1000)
fig.show()
print("top eigenvalues:", np.round(res.values.numpy(), 3))
print("fraction for k = 1..3C:", np.round(frac_k, 3))"""),
    ("md", r"""## 3. The subspace drifts slowly

`subspace_overlap` compares the top-C subspace with the one `EVERY` steps before. The heat map compares the
subspaces at the saved checkpoints pairwise: Tr(PᵢPⱼ)/C = ‖VᵢᵀVⱼ‖²_F / C (1 = the same subspace, C/n for
unrelated ones)."""),
    ("code", r"""subspaces = {}
for t, m in sorted(checkpoints.items()):
    Ht = wb.curvature.hessian(m, prob.loss, data)
    subspaces[t] = wb.curvature.eigs(Ht, k=C, tol=1e-3).vectors
ts = sorted(subspaces)
M = np.array([[float((subspaces[a].T @ subspaces[b]).pow(2).sum()) / C for b in ts] for a in ts])
fig = make_subplots(rows=1, cols=2, subplot_titles=(f"overlap with the subspace {EVERY} steps earlier",
                                                    "pairwise overlap of checkpoint subspaces"))
rec = run_gd.record
fig.add_scatter(x=rec.subspace_step, y=rec.subspace_overlap, name="GD", row=1, col=1)
fig.add_scatter(x=run_sgd.record.subspace_step, y=run_sgd.record.subspace_overlap, name="SGD", row=1, col=1)
fig.add_heatmap(z=M, x=[str(t) for t in ts], y=[str(t) for t in ts], zmin=0, zmax=1, colorscale="Viridis",
                row=1, col=2)
fig.update_xaxes(title_text="step", row=1, col=1)
fig.update_layout(height=420, width=1000)
fig.show()
print("overlap of each checkpoint's subspace with the final one:",
      {t: round(float(M[i, -1]), 3) for i, t in enumerate(ts)})"""),
    ("md", r"""Early in training the top subspace rotates quickly; later consecutive subspaces are nearly identical
(overlap close to 1) and even checkpoints far apart share most of their top-C subspace.

## 4. Cost
The probe records the Hessian-vector products each call used (`subspace_hvps`): warm starts from the previous
call's eigenvectors keep most calls cheap; a cold start every `refresh` = 20 calls guards against missing a new
top eigenvector."""),
    ("code", r"""rec = run_gd.record
print("HVPs per call:", rec.subspace_hvps.values[:25], "...")
print(f"probe time {float(rec.subspace_seconds.sum()):.1f} s of {float(rec.wall_time[-1]):.1f} s")"""),
]


if __name__ == "__main__":
    main(notebook(CELLS), "04_gradient_subspace.ipynb")
