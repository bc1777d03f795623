"""Build notebooks/06_real_models.ipynb (run: python notebooks/src/06_real_models.py [--execute]).

The notebook is written without outputs; ``--execute`` runs it in quick mode (WORKBENCH_QUICK=1) to check it.
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 06 · Real models: a ResNet on real images — training, sharpness against 2/η, the top of the Hessian spectrum, and the loss landscape with and without skip connections

**Papers.**
K. He, X. Zhang, S. Ren, J. Sun, *Deep Residual Learning for Image Recognition*, CVPR 2016 (arXiv:1512.03385):
the CIFAR ResNet-20 (depth 6n + 2, 16-32-64 channels, option-A shortcuts).
J. M. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, *Gradient Descent on Neural Networks Typically Occurs at
the Edge of Stability*, ICLR 2021 (arXiv:2103.00065).
H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, *Visualizing the Loss Landscape of Neural Nets*, NeurIPS 2018
(arXiv:1712.09913).
Data: H. Xiao, K. Rasul, R. Vollgraf, *Fashion-MNIST*, 2017 (arXiv:1708.07747); A. Krizhevsky, *Learning Multiple
Layers of Features from Tiny Images* (CIFAR-10), 2009.

**Phenomena.** (1) Under full-batch gradient descent with step size η the sharpness λ_max of the training loss
rises (progressive sharpening) until it reaches the stability line 2/η, and then hovers around it (Cohen et al.;
their Figure 1 includes BatchNorm ResNets on CIFAR-10). (2) Li et al. report that, seen through filter-normalized
random directions, the loss surface of a ResNet is a smooth, nearly convex basin; that without skip connections it
becomes rough and non-convex, dramatically so for deep nets (ResNet-56/110); and that ResNet-20 without skips is
still fairly convex (their Figure 5). That is the paper's claim; section 4 measures this notebook's own two
surfaces, and on the small networks and training sets run here neither of them is a convex-looking basin: more
than half of each grid has negative curvature along an axis, with skip connections as well as without.

**Expected figure.** Training curves of a BatchNorm ResNet trained by full-batch gradient descent on real
Fashion-MNIST images whose sharpness climbs towards the dashed line 2/η, the top-5 Hessian eigenvalues and the
spectral density at the end, and two filter-normalized 2D loss surfaces side by side (with and without skip
connections) with a printed roughness number for each.

**Where it runs.** The configuration cell picks the data and the sizes from the machine: on a CUDA GPU with
CIFAR-10 in `WORKBENCH_DATA`, a full-width ResNet-20 on a 5,000-image CIFAR-10 subset (the subset size of Cohen et
al.'s full-batch experiments, fewer images on GPUs with less memory); otherwise Fashion-MNIST (Debian's
`dataset-fashion-mnist`), and generated CIFAR-shaped images (`data="synthetic"`) where neither is present. All
other cells run unchanged; `device="auto"` puts everything on the GPU when there is one.

**Run time** on a laptop CPU: full mode (ResNet-20 at half width, 68k parameters, 256 training images, 200 GD
steps, the sharpness every 20 steps, 15 × 15 landscapes) took 150 s wall (290 s of CPU time, 2 threads) on a
2-core machine at load average 2; quick mode (`WORKBENCH_QUICK=1`: ResNet-8 at half width, 128 images, 60 steps, 11 × 11 grids) took
141 s on a busy one. On a shared machine at load average 10 the full mode took over an hour: threads competing for
the cores slow these runs far more than their share. The last cell prints the
time this run took.
""")

code(r"""
import copy
import json
import os
import time

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

import landscapes as ls
import workbench as wb
from workbench.probes import Eval, Sharpness

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
GPU = torch.cuda.is_available()
if QUICK:
    torch.set_num_threads(1)
T_START, CPU_START = time.perf_counter(), time.process_time()

# which data: real CIFAR-10 on a GPU when it is there, else real Fashion-MNIST, else generated CIFAR-shaped images
if GPU and wb.problems.info("cifar-resnet")["data_available"]:
    NAME, DATA = "cifar-resnet", {}
elif wb.problems.info("fashion-resnet")["data_available"]:
    NAME, DATA = "fashion-resnet", {}
else:
    NAME, DATA = "cifar-resnet", {"data": "synthetic"}
    print("Fashion-MNIST is not installed here:", wb.problems.info("fashion-resnet")["data_note"])
    print("-> using generated CIFAR-shaped images (data='synthetic') instead")

# sizes: quick (CI), CPU full mode, GPU full mode
if QUICK:
    CFG = dict(depth=8, width=0.5, n_train=128, n_test=512, steps=60, every=10, grid=11, slq=(1, 20))
elif GPU:
    mem_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    CFG = dict(depth=20, width=1.0, n_train=5000 if mem_gib >= 60 else 2000 if mem_gib >= 20 else 1000,
               n_test=10000, steps=2000, every=20, grid=31, slq=(4, 60))
else:
    CFG = dict(depth=20, width=0.5, n_train=256, n_test=2000, steps=200, every=20, grid=15, slq=(2, 30))
DEVICE = "auto"   # wb.train picks cuda, then mps, then cpu; DEV is that device, for the analyses outside the run
DEV = torch.device("cuda" if GPU else "mps" if torch.backends.mps.is_available() else "cpu")
RISE = 2.0        # the step size puts the stability line 2/η at RISE × the initial sharpness λ0
SPAN = 1.0        # landscape grid: [-SPAN, SPAN]² in units of the filter-normalized directions

OPTIONS = dict(depth=CFG["depth"], width=CFG["width"], n_train=CFG["n_train"], n_test=CFG["n_test"], **DATA)
prob = wb.problems.make(NAME, seed=0, **OPTIONS)
print(prob.describe().splitlines()[0])
print(f"ResNet-{CFG['depth']} (width ×{CFG['width']}): {prob.n_params:,} parameters | {len(prob.train)} training / "
      f"{len(prob.test)} test images | {'quick' if QUICK else 'full'} mode on "
      f"{torch.cuda.get_device_name(0) if GPU else DEV.type}")
""")

md(r"""
## 1 · Full-batch gradient descent, with the sharpness measured along the way

**Which curvature?** The network has BatchNorm. In training (*train*) mode every BatchNorm layer normalizes with
the statistics of the current batch, and those statistics depend on the weights; in *eval* mode it uses the
stored running averages as constants. Gradient descent follows the train-mode loss, so the train-mode Hessian is
the one whose top eigenvalue decides whether a step of size η is stable (λ_max < 2/η). We therefore measure the
sharpness in **train mode on the whole training set as one batch** (`Sharpness(mode="train", max_samples=N)`),
which is exactly the objective full-batch GD descends. Section 2 shows how different the eval-mode number is.
Accuracy and loss (`Eval`) are measured in eval mode on the full training set and the test set, as one would
deploy the network.

The step size is set from the initial sharpness λ0: η = 2 / (RISE · λ0), so that the stability line starts
RISE times above the sharpness and can only be reached if the curvature grows.
""")

code(r"""
def top_eig(model, data, mode, k=1, tol=1e-3):
    # the top-k Hessian eigenpairs of the full-batch loss in the given BatchNorm mode
    return wb.curvature.eigs(wb.curvature.hessian(model, prob.loss, data, mode=mode), k=k, tol=tol)


DATA_TRAIN = prob.data(device=DEV)                     # the whole training set as one batch
res0 = top_eig(prob.copy_model().to(DEV), DATA_TRAIN, "train")
LAM0 = float(res0.values[0])
LR = 2 / (RISE * LAM0)
print(f"initial sharpness (train mode) λ0 = {LAM0:.3f} (residual {float(res0.residuals[0]):.1e}, "
      f"{res0.n_matvec} Hessian-vector products) -> η = 2/(RISE·λ0) = {LR:.4g}, 2/η = {2 / LR:.2f}")

N = CFG["n_train"]
run = wb.train(prob, "gd", lr=LR, steps=CFG["steps"], device=DEVICE, progress=True,
               probes=[Eval(every=CFG["every"], split="both"),
                       Sharpness(every=CFG["every"], mode="train", max_samples=N)])
rec, model = run.record, run.model
print(f"{run.status} after {rec.sizes['step']} steps on {rec.attrs['device']}; loss {rec.loss.values[0]:.3f} -> "
      f"{rec.loss.values[-1]:.4f}; train accuracy {rec.train_accuracy.values[-1]:.3f}, "
      f"test accuracy {rec.test_accuracy.values[-1]:.3f}")
""")

code(r"""
fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                    subplot_titles=["training loss (full batch, train mode)", "accuracy (eval mode)",
                                    "sharpness λ_max (train mode) and 2/η"])
fig.add_scatter(x=rec.step, y=rec.loss, name="training loss", line=dict(color="#1f77b4"), row=1, col=1)
fig.add_scatter(x=rec.eval_step, y=rec.test_loss, name="test loss", line=dict(color="#ff7f0e"), row=1, col=1)
fig.add_scatter(x=rec.eval_step, y=rec.train_accuracy, name="train accuracy", line=dict(color="#1f77b4", dash="dot"),
                row=1, col=2)
fig.add_scatter(x=rec.eval_step, y=rec.test_accuracy, name="test accuracy", line=dict(color="#ff7f0e", dash="dot"),
                row=1, col=2)
fig.add_hline(y=1 / prob.n_classes, line_dash="dash", line_color="gray", annotation_text="chance", row=1, col=2)
fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness, mode="lines+markers", name="sharpness λ_max",
                line=dict(color="#2ca02c"), row=1, col=3)
fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness_threshold, name="stability line 2/η",
                line=dict(color="black", dash="dash"), row=1, col=3)
fig.update_yaxes(type="log", title_text="cross-entropy loss", row=1, col=1)
fig.update_yaxes(title_text="accuracy", range=[0, 1.02], row=1, col=2)
fig.update_yaxes(title_text="Hessian eigenvalue", row=1, col=3)
fig.update_xaxes(title_text="GD step")
fig.update_layout(height=430, width=1150, legend=dict(orientation="h", y=-0.22), margin=dict(b=110))
fig.show()
""")

code(r"""
ratio = rec.sharpness_ratio.values                     # λ_max / (2/η) at each probe
ps = rec.sharpness_step.values
rel_res = rec.sharpness_residuals.values[:, 0] / rec.sharpness.values
reached = ps[ratio >= 0.95]
half = ps >= ps[-1] / 2
loss = rec.loss.values
up = np.diff(loss) > 0                                  # steps on which the training loss went up
SHARP = {"lam0": LAM0, "rise": RISE, "lr": LR, "loss_up_fraction": float(up.mean()), "max_ratio": float(ratio.max()), "final_ratio": float(ratio[-1]),
         "step_max": int(ps[ratio.argmax()]), "first_reach_step": int(reached[0]) if reached.size else None,
         "median_ratio_second_half": float(np.median(ratio[half])),
         "max_rel_residual": float(rel_res.max()), "all_converged": bool(rec.sharpness_converged.values.all()),
         "all_finite_positive": bool(np.isfinite(rec.sharpness.values).all() and (rec.sharpness.values > 0).all()),
         "final": float(rec.sharpness.values[-1])}
print(f"sharpness: λ0 = {LAM0:.2f} -> largest {ratio.max() * 2 / LR:.2f} at step {SHARP['step_max']} -> final "
      f"{SHARP['final']:.2f}; 2/η = {2 / LR:.2f}")
print(f"λ_max / (2/η): max {SHARP['max_ratio']:.2f}, final {SHARP['final_ratio']:.2f}, median over the second half "
      f"of training {SHARP['median_ratio_second_half']:.2f}")
if reached.size:
    print(f"the sharpness first came within 5% of 2/η at step {SHARP['first_reach_step']} "
          f"(of {CFG['steps']}): the run reached the edge of stability")
else:
    print("the sharpness never came within 5% of 2/η: this run did not reach the edge of stability")
print(f"the full-batch training loss went up on {up.sum()} of {up.size} steps ({100 * up.mean():.0f}%): "
      + ("gradient descent is not monotone here, the signature of the edge of stability" if up.mean() > 0.05 else
         "essentially monotone descent"))
print(f"every probe converged: {SHARP['all_converged']}; largest relative residual ‖Hv − λv‖/λ = "
      f"{SHARP['max_rel_residual']:.1e}")
""")

md(r"""
In words, computed from this run's record (so they hold in whichever mode the notebook ran): whether and when
the sharpness reached the line 2/η = RISE·λ0, how it behaved afterwards, and whether it fell again once the
training set was fitted. Cohen et al. see BatchNorm networks reach the line and then hover at or somewhat above
it (a BatchNorm net is scale-invariant in most of its weights, so its train-mode curvature is not a fixed
quadratic), and with cross-entropy the sharpness falling late in training as the softmax saturates.
""")

code(r"""
fit = np.flatnonzero(rec.train_accuracy.values >= 0.99)
fit_step = int(rec.eval_step.values[fit[0]]) if fit.size else None
if reached.size:
    after = ps >= reached[0]
    above = float((ratio[after] > 1.0).mean())
    print(f"1. the sharpness reached 2/η (within 5%) at step {reached[0]} of {CFG['steps']}; afterwards λ_max/(2/η) had "
          f"median {np.median(ratio[after]):.2f} and was above 1 at {100 * above:.0f}% of the probes")
else:
    above = None
    print(f"1. the sharpness did not reach 2/η: largest λ_max/(2/η) {ratio.max():.2f}")
if fit_step is not None:
    late = ratio[ps >= fit_step]
    drop = 1 - late[-1] / ratio[ps <= fit_step].max()
    print(f"2. the training set was fitted (train accuracy >= 0.99) at step {fit_step}; from the largest sharpness before "
          f"that to the end the sharpness changed by {-100 * drop:+.0f}% "
          + ("(it fell, as with saturating cross-entropy)" if drop > 0.1 else "(no late fall in this run)"))
else:
    drop = None
    print(f"2. the training set was not fitted in {CFG['steps']} steps (final train accuracy "
          f"{rec.train_accuracy.values[-1]:.3f}), so there is no late phase to see")
SHARP.update({"fit_step": fit_step, "fraction_above_after_reach": above, "late_drop": None if drop is None else float(drop)})
""")

md(r"""
## 2 · The top of the Hessian spectrum at the end of training

Lanczos (`wb.curvature.eigs`, k = 5, relative tolerance 1e-3) on the train-mode Hessian of the final network, on the
whole training set; every eigenvalue comes with its residual ‖Hv − λv‖. For comparison, the top eigenvalue of the
eval-mode Hessian (running BatchNorm statistics held fixed) of the same network on the same data. Then the whole
spectrum by stochastic Lanczos quadrature (`wb.curvature.spectral_density`).
""")

code(r"""
H = wb.curvature.hessian(model, prob.loss, DATA_TRAIN, mode="train")
top = wb.curvature.eigs(H, k=5, tol=1e-3)
lam_eval = top_eig(model, DATA_TRAIN, "eval")
EIGS = {"values": top.values.tolist(), "residuals": top.residuals.tolist(), "converged": bool(top.converged),
        "n_matvec": int(top.n_matvec), "eval_mode_top": float(lam_eval.values[0]),
        "eval_mode_converged": bool(lam_eval.converged)}
print(f"top-5 train-mode Hessian eigenvalues ({top.n_matvec} Hessian-vector products, converged: {top.converged}):")
for i, (v, r) in enumerate(zip(top.values.tolist(), top.residuals.tolist())):
    print(f"  λ{i + 1} = {v:9.4f}   residual {r:.1e}   relative {r / abs(v):.1e}")
print(f"the last Sharpness probe (same network, same data, its own tolerance 1e-2) said {SHARP['final']:.4f}: "
      f"relative difference {abs(SHARP['final'] - top.values[0].item()) / top.values[0].item():.1e}")
print(f"eval-mode top eigenvalue λ_max = {EIGS['eval_mode_top']:.3f} (converged: {lam_eval.converged}) = "
      f"{EIGS['eval_mode_top'] / top.values[0].item():.2f} × the train-mode one")
print(f"λ1/λ5 = {top.values[0].item() / top.values[4].item():.2f}; 2/η = {2 / LR:.2f}")
""")

code(r"""
probes, slq_steps = CFG["slq"]
dens = wb.curvature.spectral_density(H, probes=probes, steps=slq_steps)
lam = dens.eigenvalue.values
mass_neg = float(np.trapezoid(np.where(lam < 0, dens.values, 0), lam))
print(f"SLQ: {probes} probe(s) × {slq_steps} Lanczos steps = {dens.attrs['n_matvec']} products; spectrum in "
      f"[{lam.min():.3g}, {lam.max():.3g}]; density integrates to {np.trapezoid(dens.values, lam):.4f}; "
      f"mass below zero {mass_neg:.3f}")
bulk = float(np.trapezoid(np.where(np.abs(lam) < 0.05 * top.values[0].item(), dens.values, 0), lam))
print(f"bulk: {bulk:.3f} of the mass has |λ| < 5% of λ1 = {top.values[0].item():.2f}; λ5 = {top.values[4].item():.2f} "
      f"is {top.values[4].item() / top.values[0].item():.2f} of λ1")
fig = go.Figure(go.Scatter(x=lam, y=np.maximum(dens.values, 1e-12), name="SLQ density"))
for i, v in enumerate(top.values.tolist()):
    fig.add_vline(x=v, line_dash="dot", line_color="#d62728", annotation_text=f"λ{i + 1}" if i in (0, 4) else None)
fig.add_vline(x=2 / LR, line_dash="dash", line_color="black", annotation_text="2/η", annotation_position="bottom right")
fig.update_yaxes(type="log", title_text="density (1 / eigenvalue unit)", range=[-6, None])
fig.update_xaxes(title_text="Hessian eigenvalue (train mode)")
fig.update_layout(title="Hessian spectral density at the end of training (dotted: Lanczos top-5)", height=400,
                  width=900)
fig.show()
""")

md(r"""
The printout gives the shape in numbers: the share of the spectral mass in the bulk near zero (|λ| below 5% of
λ1), the mass below zero, and the top eigenvalues from Lanczos (dotted lines) standing apart from it — the
bulk-plus-outliers shape of trained classifiers, where the printed numbers show it. The eval-mode
number differs from the train-mode one by the factor printed above: with BatchNorm, "the sharpness" is only defined
once the mode is said, and only the train-mode one is compared with 2/η here.

## 3 · The same ResNet without skip connections

`skip=False` removes every shortcut (the parameters are the same: option-A shortcuts have none). It is trained with
the same step size and steps from the same seed.
""")

code(r"""
prob_ns = wb.problems.make(NAME, seed=0, skip=False, **OPTIONS)
run_ns = wb.train(prob_ns, "gd", lr=LR, steps=CFG["steps"], device=DEVICE, progress=True,
                  probes=[Eval(every=CFG["every"], split="both")])
rec_ns, model_ns = run_ns.record, run_ns.model
lam_ns = top_eig(model_ns, DATA_TRAIN, "train")
NOSKIP = {"status": run_ns.status, "loss_first": float(rec_ns.loss.values[0]),
          "loss_last": float(rec_ns.loss.values[-1]), "train_acc": float(rec_ns.train_accuracy.values[-1]),
          "test_acc": float(rec_ns.test_accuracy.values[-1]), "final_sharpness": float(lam_ns.values[0]),
          "final_sharpness_converged": bool(lam_ns.converged)}
for name, r, lam_end in (("with skips   ", rec, top.values[0].item()), ("without skips", rec_ns, NOSKIP["final_sharpness"])):
    print(f"{name}: loss {r.loss.values[0]:.3f} -> {r.loss.values[-1]:.4f}, train accuracy "
          f"{r.train_accuracy.values[-1]:.3f}, test accuracy {r.test_accuracy.values[-1]:.3f}, final λ_max "
          f"(train mode) {lam_end:.2f} = {lam_end * LR / 2:.2f} × 2/η")
""")

md(r"""
## 4 · Filter-normalized loss landscapes (Li et al. 2018)

For each trained network, two random Gaussian directions are drawn and rescaled filter by filter to the norms of
the network's own filters (`ls.directions.random(model, n=2, norm="filter")`; BatchNorm and bias directions are
zero, as in Li et al.). The surface L(θ* + α d₁ + β d₂) is evaluated on a grid over [−1, 1]², in **train mode on
the whole training set** — the objective gradient descent minimised, each grid point normalized with its own batch
statistics (eval mode would keep the trained network's running statistics at every perturbed point). Both panels
share one logarithmic color scale.

Roughness numbers, per surface (interior grid points):

* **non-convex fraction**: the fraction of points where the discrete second derivative along α or along β is
  negative (0 for a convex bowl; an axis-aligned, within-the-plane stand-in for Li et al.'s map of |λ_min/λ_max|,
  which uses the extreme eigenvalues of the full network Hessian at each point of the plane);
* **spurious local minima**: grid points lower than all eight neighbours, other than the centre (0 for a single
  basin);
* **edge rise**: the median loss on the border of the grid divided by the loss at the centre.
""")

code(r"""
CONVEX_LOOKING = 0.1     # a surface counts as convex-looking: non-convex fraction below this, no spurious minima


def roughness(surf):
    L = surf.transpose("alpha", "beta").values.astype(float)
    c = L[1:-1, 1:-1]
    tol = 1e-5 * np.abs(L).max()                       # float32 rounding of the losses
    d2a = L[2:, 1:-1] - 2 * c + L[:-2, 1:-1]
    d2b = L[1:-1, 2:] - 2 * c + L[1:-1, :-2]
    neigh = np.stack([L[1 + i:L.shape[0] - 1 + i, 1 + j:L.shape[1] - 1 + j]
                      for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)])
    minima = c < neigh.min(axis=0)
    mid = (L.shape[0] // 2 - 1, L.shape[1] // 2 - 1)      # the centre's index among the interior points
    edge = np.concatenate([L[0], L[-1], L[1:-1, 0], L[1:-1, -1]])
    centre = float(surf.sel(alpha=0.0, beta=0.0, method="nearest"))
    nonconvex = (d2a < -tol) | (d2b < -tol)
    # where the negative curvature is: the largest square around the centre free of it (its half-width in units
    # of the directions; -1 grid steps if the centre itself is non-convex), and the inner half of the grid
    a_in = surf.transpose("alpha", "beta").alpha.values[1:-1]
    b_in = surf.transpose("alpha", "beta").beta.values[1:-1]
    h = float(a_in[1] - a_in[0])
    cheb = np.maximum(*np.meshgrid(np.abs(np.arange(c.shape[0]) - mid[0]), np.abs(np.arange(c.shape[1]) - mid[1]),
                                   indexing="ij"))
    core = -1
    while core + 1 <= cheb.max() and not nonconvex[cheb <= core + 1].any():
        core += 1
    inner = np.maximum(*np.meshgrid(np.abs(a_in), np.abs(b_in), indexing="ij")) <= SPAN / 2 + 1e-9
    step_rise = float(np.median(neigh[:, mid[0], mid[1]]) / centre)   # the 8 neighbours of the centre
    edge_rise = float(np.median(edge) / centre)
    return {"nonconvex_fraction": float(nonconvex.mean()),
            "nonconvex_fraction_inner": float(nonconvex[inner].mean()),
            "convex_core_steps": int(core), "convex_core_radius": float(max(core, 0) * h), "grid_step": h,
            "step_rise": step_rise,
            "step_share": float(np.log(step_rise) / np.log(edge_rise)) if edge_rise > 1 and step_rise > 0 else None,
            "local_minima": int(minima.sum()), "centre_is_minimum": bool(minima[mid]),
            "spurious_minima": int(minima.sum() - minima[mid]), "edge_rise": edge_rise,
            "convex_looking": bool(nonconvex.mean() < CONVEX_LOOKING and minima.sum() - minima[mid] == 0),
            "centre": centre, "max": float(L.max()), "finite": bool(np.isfinite(L).all())}


SURF, LAND = {}, {}
for key, m in (("skip", model), ("noskip", model_ns)):
    d = ls.directions.random(m, n=2, norm="filter", seed=0)
    t0 = time.perf_counter()
    SURF[key] = s = ls.surface(m, prob.loss, DATA_TRAIN, d, span=SPAN, steps=CFG["grid"], mode="train",
                               progress=True)
    with torch.no_grad():                              # on a copy: a train-mode forward updates BatchNorm stats
        direct = float(prob.loss(copy.deepcopy(m).train(), DATA_TRAIN))
    LAND[key] = r = {**roughness(s), "direct_loss": direct, "seconds": time.perf_counter() - t0}
    print(f"{key:>6s}: {CFG['grid']}×{CFG['grid']} grid in {r['seconds']:.0f} s ({s.attrs['method']}); centre loss "
          f"{r['centre']:.4f} (the network's own train-mode loss: {direct:.4f}); non-convex fraction "
          f"{r['nonconvex_fraction']:.2f}, spurious local minima {r['spurious_minima']}, edge rise ×{r['edge_rise']:.1f}, "
          f"highest loss on the grid {r['max']:.2f}")
""")

code(r"""
titles = [f"ResNet-{CFG['depth']} with skip connections", f"ResNet-{CFG['depth']} without skip connections"]
fig = ls.plot([SURF["skip"], SURF["noskip"]], titles=titles, log=True, width=1100, height=480)
fig.update_layout(title="train-mode loss on a filter-normalized random plane (log10 scale)")
fig.show()
""")

code(r"""
fig = ls.plot([SURF["skip"], SURF["noskip"]], kind="surface", titles=titles, log=True, width=1100, height=520)
fig.show()
""")

code(r"""
a, b = LAND["skip"], LAND["noskip"]


def rougher(x, y):
    # x is clearly rougher than y: 0.1 more of the grid non-convex, or 3 more spurious local minima
    return x["nonconvex_fraction"] >= y["nonconvex_fraction"] + 0.1 or x["spurious_minima"] >= y["spurious_minima"] + 3


if rougher(b, a) and not rougher(a, b):
    VERDICT = "noskip_rougher"
    verdict = "the network without skip connections has the clearly rougher surface"
elif rougher(a, b) and not rougher(b, a):
    VERDICT = "skip_rougher"
    verdict = "the network WITH skip connections has the clearly rougher surface here"
else:
    VERDICT = "similar"
    verdict = ("no clear difference at this depth: non-convex fractions within 0.1 and spurious local minima "
               "within 3 of each other")
print(f"non-convex fraction: skip {a['nonconvex_fraction']:.2f}, no skip {b['nonconvex_fraction']:.2f}; spurious "
      f"local minima: {a['spurious_minima']} vs {b['spurious_minima']} (centre a local minimum: "
      f"{a['centre_is_minimum']} / {b['centre_is_minimum']}); edge rise: ×{a['edge_rise']:.1f} vs ×{b['edge_rise']:.1f}")
print("verdict:", verdict)
for key, name in (("skip", "with skips   "), ("noskip", "without skips")):
    r = LAND[key]
    core = (f"only the centre point" if r["convex_core_steps"] == 0 else "none (the centre itself is non-convex)"
            if r["convex_core_steps"] < 0 else f"|α|, |β| ≤ {r['convex_core_radius']:.2f} "
            f"({r['convex_core_steps']} grid step{'s' if r['convex_core_steps'] > 1 else ''})")
    print(f"{name}: convex-looking (non-convex fraction < {CONVEX_LOOKING:g}, no spurious minima): "
          f"{r['convex_looking']}; non-convex fraction {r['nonconvex_fraction']:.2f} on the whole grid, "
          f"{r['nonconvex_fraction_inner']:.2f} in its inner half (|α|, |β| ≤ {SPAN / 2:g}); square around the "
          f"centre free of negative curvature: {core}")
    share = "n/a" if r["step_share"] is None else f"{100 * r['step_share']:.0f}%"
    print(f"{'':13s}  one grid step ({r['grid_step']:.2f}) from the centre the loss is already ×{r['step_rise']:.1f} "
          f"the centre's: {share} of the (log) rise to the border, ×{r['edge_rise']:.1f}")
print(f"difference in non-convex fraction, no skip − skip: {b['nonconvex_fraction'] - a['nonconvex_fraction']:+.2f} "
      f"(whole grid), {b['nonconvex_fraction_inner'] - a['nonconvex_fraction_inner']:+.2f} (inner half); "
      f"one random plane per network, one seed")
""")

md(r"""
What to read off: the verdict and the lines after it are computed from the two surfaces, not written in advance.
**Neither surface is a convex-looking basin in this run**, with or without skip connections (the `convex-looking`
lines). In full mode (ResNet-20, 15 × 15 grid) the non-convex fraction is 0.59 with skip connections and 0.70
without: the surface without skips is the rougher one by this measure, but only just past the verdict's margin of
0.1, on one random plane per network and one seed; both surfaces have two spurious local minima. The negative
curvature reaches in close to the centre — the printed square around it that is free of negative curvature
extends one grid step from the centre with skips, and is only the centre point without — and in the inner half of
the grid the non-convex fraction is even higher than on the whole grid. Both full-mode networks sit in a narrow
well: one grid step from the centre the loss has already made more than half of its (log) rise to the border (62%
and 79%), and beyond that lies a bumpy plateau of high loss. In quick mode (ResNet-8, 11 × 11 grid) the fractions
are 0.60 and 0.63 — no clear difference by the verdict's rule — with the non-convex points of the skip surface
further out (0.20 of the inner half, against 0.40 without skips) and a wider well (about a third of the rise in
the first grid step).

This is not what Li et al. show for ResNet-20. In their Figure 5 both ResNet-20 surfaces are convex-looking basins,
the one without skips somewhat narrower, and the chaotic, strongly non-convex landscapes without skips appear only
for deep networks (ResNet-56/110). That is their result for networks trained with SGD on the full CIFAR-10 training
set, with convexity quantified by a map of |λ_min/λ_max| of the full Hessian at each point; this run trains by
full-batch GD on 256 (quick mode: 128) Fashion-MNIST images at the edge of stability, and counts curvature signs
along the two axes of a coarse grid. Which of these differences makes the surfaces here non-convex is not tested
in this notebook. The quick-mode ResNet-8 is in any case far shallower than the depths at which Li et al. see skip
connections make the large difference; to look for that transition, set `depth` to 56 in the configuration cell
(on a GPU).

## 5 · Measured against the papers
""")

code(r"""
chance = 1 / prob.n_classes
test_acc = float(rec.test_accuracy.values[-1])
print(f"{'':46s} | this notebook ({NAME}, ResNet-{CFG['depth']} ×{CFG['width']}, {N} images, {CFG['steps']} GD steps)")
print(f"{'He et al. 2016: ResNet-20 CIFAR-10 test error 8.75%':46s} | test accuracy {test_acc:.3f} (chance {chance:.2f}); "
      f"not comparable: {N} training images, full-batch GD, no augmentation")
print(f"{'Cohen et al. 2021: λ_max rises to 2/η, hovers':46s} | λ0 = {LAM0:.2f} = 2/η ÷ {RISE:g}; max λ/(2/η) "
      f"{SHARP['max_ratio']:.2f}, median over the 2nd half {SHARP['median_ratio_second_half']:.2f}, final "
      f"{SHARP['final_ratio']:.2f}")
print(f"{'Li et al. 2018: skips keep deep nets convex':46s} | non-convex fraction {a['nonconvex_fraction']:.2f} (skip) "
      f"vs {b['nonconvex_fraction']:.2f} (no skip); spurious minima {a['spurious_minima']} vs {b['spurious_minima']}: {VERDICT}; "
      f"convex-looking: {a['convex_looking']} (skip), {b['convex_looking']} (no skip)")
wall, cpu = time.perf_counter() - T_START, time.process_time() - CPU_START
print(f"\nnotebook run time: {wall:.0f} s wall, {cpu:.0f} s CPU (this process, {torch.get_num_threads()} thread(s))")
RESULTS = {"quick": QUICK, "problem": NAME, "options": {k: v for k, v in OPTIONS.items()}, "device": rec.attrs["device"],
           "n_classes": prob.n_classes, "steps": CFG["steps"], "status": run.status,
           "loss_first": float(rec.loss.values[0]), "loss_last": float(rec.loss.values[-1]),
           "train_acc": float(rec.train_accuracy.values[-1]), "test_acc": test_acc,
           "test_acc_first": float(rec.test_accuracy.values[0]), "sharpness": SHARP, "eigs": EIGS,
           "density_integral": float(np.trapezoid(dens.values, lam)), "noskip": NOSKIP, "landscape": LAND, "verdict": VERDICT,
           "wall_s": wall, "cpu_s": cpu}
print("RESULTS " + json.dumps(RESULTS))
""")


if __name__ == "__main__":
    main(notebook(cells), "06_real_models.ipynb")
