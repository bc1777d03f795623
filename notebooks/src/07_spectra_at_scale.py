"""Build notebooks/07_spectra_at_scale.ipynb (run: python notebooks/src/07_spectra_at_scale.py [--execute]).

The notebook is written without outputs; ``--execute`` runs it in quick mode (WORKBENCH_QUICK=1) to check it.
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 07 · Hessian spectra at the scale of real models: a ResNet-20 with and without BatchNorm, eval vs train mode, per-layer spectra and how much the top eigenvalue depends on the data

**Papers.**
Z. Yao, A. Gholami, K. Keutzer, M. W. Mahoney, *PyHessian: Neural Networks Through the Lens of the Hessian*,
IEEE BigData 2020 (arXiv:1912.07145): top eigenvalues, trace and SLQ densities of ResNets with and without
BatchNorm.
B. Ghorbani, S. Krishnan, Y. Xiao, *An Investigation into Neural Net Optimization via Hessian Eigenvalue Density*,
ICML 2019 (arXiv:1901.10159): the SLQ density, outliers and BatchNorm.
V. Papyan, *Measurements of Three-Level Hierarchical Structure in the Outliers in the Spectrum of Deepnet
Hessians*, ICML 2019 (arXiv:1901.08244): per-layer structure of the spectrum.
K. He, X. Zhang, S. Ren, J. Sun, *Deep Residual Learning for Image Recognition*, CVPR 2016: the CIFAR ResNet-20.

**Phenomena.** (1) The top of the Hessian spectrum of a trained classifier is a handful of outliers above a bulk
piled up near zero. (2) BatchNorm changes the curvature, and with BatchNorm "the Hessian" needs a mode: in *eval*
mode the running statistics are constants, in *train* mode every example's output depends on the batch statistics.
(3) The curvature is not spread evenly over the layers. (4) An estimate of λ_max on a small data sample can be far
from the full-data value: PyHessian's users saw the top eigenvalue of ResNet-34 range from 159 to 1587 across runs
on small batches.

**Expected figure.** Three SLQ densities (BatchNorm net in eval mode, in train mode, and the net without
BatchNorm) with their top eigenvalues marked; a per-layer figure with the top eigenvalue and the density of every
stage's diagonal Hessian block; the top eigenvalue on disjoint data subsets next to the full-data value.

**How it scales.** Every operator streams the data in microbatches sized by a memory budget
(`wb.curvature.hessian(..., max_memory=...)`): the budget and the microbatch it picked are printed. Per-layer
operators are `H.block("layer2")`; `wb.curvature.block_spectra` tabulates them and `ls.plot_block_spectra` draws
them; `eigs(H, k, data_subsets=n)` reports the spread over `n` disjoint data subsets.

**Where it runs.** Fashion-MNIST (Debian's `dataset-fashion-mnist`) when installed, else generated CIFAR-shaped
images (`data="synthetic"`); on a CUDA GPU the configuration cell picks a full-width ResNet-20 and more images.
**Run time** on a 2-core CPU: full mode (ResNet-20 at half width, 68k parameters, 128 images) took 56 s wall (2
threads, load average 2), 143–184 s wall and 94–99 s of CPU with one thread at load average 2–5, and 12 min wall
on a busy machine; quick mode (`WORKBENCH_QUICK=1`: ResNet-8 at quarter width, 128 images) took 25 s wall, 20 s
of CPU (one thread, load average 4). The last cell prints the time this run took.
""")

code(r"""
import json
import os
import time

import numpy as np
import plotly.graph_objects as go
import torch

import landscapes as ls
import workbench as wb

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
GPU = torch.cuda.is_available()
if QUICK:
    torch.set_num_threads(1)
T_START, CPU_START = time.perf_counter(), time.process_time()

if wb.problems.info("fashion-resnet")["data_available"]:
    NAME, DATA = "fashion-resnet", {}
else:
    NAME, DATA = "cifar-resnet", {"data": "synthetic"}
    print("Fashion-MNIST is not installed here -> generated CIFAR-shaped images (data='synthetic')")

if QUICK:
    CFG = dict(depth=8, width=0.25, n_train=128, steps=40, k=3, tol=1e-2, slq=(1, 16), subsets=4,
               max_memory="24MiB", block_steps=8)
elif GPU:
    CFG = dict(depth=20, width=1.0, n_train=4096, steps=600, k=5, tol=1e-3, slq=(4, 60), subsets=8,
               max_memory="8GiB", block_steps=30)
else:
    CFG = dict(depth=20, width=0.5, n_train=128, steps=150, k=3, tol=1e-2, slq=(1, 20), subsets=4,
               max_memory="64MiB", block_steps=8)
DEV = torch.device("cuda" if GPU else "cpu")
LR, BATCH = {"bn": 0.05, "nobn": 0.01}, 32       # without BatchNorm 0.05 diverged (256 images): a smaller step
OPTIONS = dict(depth=CFG["depth"], width=CFG["width"], n_train=CFG["n_train"], n_test=512, **DATA)
probs = {"bn": wb.problems.make(NAME, seed=0, **OPTIONS),
         "nobn": wb.problems.make(NAME, seed=0, batchnorm=False, **OPTIONS)}
for key, p in probs.items():
    print(f"{key:>4s}: ResNet-{CFG['depth']} (width x{CFG['width']}, BatchNorm {key == 'bn'}): {p.n_params:,} "
          f"parameters, {len(p.train)} training images")
print(f"{'quick' if QUICK else 'full'} mode on {torch.cuda.get_device_name(0) if GPU else 'cpu'}")
""")

md(r"""
## 1 · Two trained networks

The same ResNet with and without BatchNorm, trained by SGD (batch 32) from the same seed, with step 0.05 with
BatchNorm and 0.01 without (at 0.05 the BatchNorm-free ResNet-20 diverged in a 256-image run). All curvature
below is of the mean cross-entropy over the whole training set.
""")

code(r"""
runs = {key: wb.train(p, "sgd", lr=LR[key], steps=CFG["steps"], batch_size=BATCH, seed=0, device="auto",
                      progress=False) for key, p in probs.items()}
models = {key: r.model for key, r in runs.items()}
DATA_TRAIN = probs["bn"].data()                        # stays on the CPU; microbatches move to the device
TRAIN = {}
for key, r in runs.items():
    with torch.no_grad():
        m = models[key]
        was = m.training
        m.eval()
        ev = probs[key].evaluate(m, (DATA_TRAIN[0].to(DEV), DATA_TRAIN[1].to(DEV)))
        m.train(was)
    TRAIN[key] = {"status": r.status, "loss_first": float(r.record.loss.values[0]),
                  "loss_eval": ev["loss"], "acc_eval": ev.get("accuracy")}
    print(f"{key:>4s}: {r.status}; mini-batch loss {r.record.loss.values[0]:.3f} -> "
          f"{r.record.loss.values[-5:].mean():.3f} (last 5 steps); full training set in eval mode: loss "
          f"{ev['loss']:.3f}, accuracy {ev.get('accuracy', float('nan')):.3f}")
N_CLASSES = probs["bn"].n_classes
CHANCE, LN_C = 1 / N_CLASSES, float(np.log(N_CLASSES))
FITS = TRAIN["bn"]["acc_eval"] >= 0.99
AT_CHANCE = abs(TRAIN["nobn"]["acc_eval"] - CHANCE) < 0.1 and abs(TRAIN["nobn"]["loss_eval"] - LN_C) < 0.1
print(f"chance: accuracy {CHANCE:.3f}, loss ln {N_CLASSES} = {LN_C:.3f}. BatchNorm net fits its "
      f"{len(probs['bn'].train)} images (accuracy >= 0.99): {FITS}; BatchNorm-free net within 0.1 of chance "
      f"accuracy and its loss within 0.1 of ln {N_CLASSES}: {AT_CHANCE}")
""")

md(r"""
The printout says how far each network trained, and its last line checks two statements. In the full CPU run
(150 steps) both print True: the BatchNorm net fits its training images, while the BatchNorm-free net, at its
smaller step and with the same number of steps, is still at chance (accuracy ≈ 1/10, loss ≈ ln 10). Quick mode's
40 steps leave the BatchNorm net short of fitting (its check prints False), but the BatchNorm-free net is at
chance there too. Where that check prints True, the comparison without BatchNorm below is of a network that has
barely left its initialisation, which is the practical face of "BatchNorm allows larger steps".

## 2 · Operators that fit a memory budget

`max_memory` is a budget for one Hessian-vector product. The operator measures a trial product on 2 and on 8
examples once (on a GPU the allocator's peak; on a CPU the bytes of the tensors autograd saves, an estimate), and
picks the largest microbatch that fits; the product over the whole data set is the size-weighted sum over
microbatches. In **eval mode** (the default) this is exact: the same operator to rounding, whatever the microbatch.
In **train mode** each microbatch is normalized with its own BatchNorm statistics, so the train-mode operator is
the curvature of the loss as SGD with that batch size sees it; we set the microbatch to the training batch size.
""")

code(r"""
loss = probs["bn"].loss
H = {"bn eval": wb.curvature.hessian(models["bn"], loss, DATA_TRAIN, mode="eval", max_memory=CFG["max_memory"]),
     "bn train": wb.curvature.hessian(models["bn"], loss, DATA_TRAIN, mode="train", batch_size=BATCH),
     "no bn": wb.curvature.hessian(models["nobn"], probs["nobn"].loss, DATA_TRAIN, max_memory=CFG["max_memory"])}
plan = H["bn eval"].attrs["memory"]
print(f"budget {CFG['max_memory']}: one product needs ~{plan['fixed'] / 2**20:.1f} MiB fixed + "
      f"{plan['per_example'] / 2**20:.2f} MiB per example ({plan['how']}) -> microbatches of "
      f"{plan['batch_size']} ({H['bn eval'].attrs['n_microbatches']} per product)")
for name, op in H.items():
    print(f"{name:>8s}: {op!r}\n          {op.attrs['mode_note']}")
# exactness of microbatching in eval mode: the budgeted operator against the whole set as one batch
v = torch.randn(H["bn eval"].size, generator=torch.Generator().manual_seed(0))
one = wb.curvature.hessian(models["bn"], loss, DATA_TRAIN, mode="eval")
MICRO_ERR = float((H["bn eval"].matvec(v) - one.matvec(v)).norm() / one.matvec(v).norm())
print(f"eval mode, microbatched vs one batch: relative difference {MICRO_ERR:.1e} (float32 rounding)")
""")

md(r"""
## 3 · The top eigenvalues and the spectral density

Lanczos (`eigs`, residual-based tolerance) for the top eigenvalues, stochastic Lanczos quadrature for the density.
""")

code(r"""
TOP, DENS = {}, {}
for name, op in H.items():
    r = wb.curvature.eigs(op, k=CFG["k"], tol=CFG["tol"])
    d = wb.curvature.spectral_density(op, probes=CFG["slq"][0], steps=CFG["slq"][1])
    lam = d.eigenvalue.values
    TOP[name] = {"values": r.values.tolist(), "residuals": r.residuals.tolist(), "converged": bool(r.converged),
                 "n_matvec": int(r.n_matvec), "n_examples": int(r.n_examples),
                 "density_integral": float(np.trapezoid(d.values, lam)),
                 "negative_mass": float(np.trapezoid(np.where(lam < 0, d.values, 0), lam))}
    DENS[name] = d
    vals = ", ".join(f"{x:.3f}" for x in r.values.tolist())
    print(f"{name:>8s}: top-{CFG['k']} [{vals}] (converged {r.converged}, {r.n_matvec} products, "
          f"{r.n_examples} examples); density mass below 0: {TOP[name]['negative_mass']:.3f}")
ratio_modes = TOP["bn train"]["values"][0] / TOP["bn eval"]["values"][0]
ratio_bn = TOP["no bn"]["values"][0] / TOP["bn eval"]["values"][0]
print(f"lambda_max: train mode / eval mode = {ratio_modes:.2f}; without BatchNorm / with (eval) = {ratio_bn:.2f}")
LAM = {name: t["values"][0] for name, t in TOP.items()}
ERR = max(t["residuals"][0] / t["values"][0] for t in TOP.values())   # |error of lambda_max| <= its Ritz residual
print(f"eval-mode lambda_max of the BatchNorm net {LAM['bn eval']:.1f} is {LAM['bn eval'] / LAM['bn train']:.1f} "
      f"times its train-mode one {LAM['bn train']:.1f} (microbatch {BATCH}), both above the BatchNorm-free net's "
      f"{LAM['no bn']:.2f} (by {LAM['bn eval'] / LAM['no bn']:.1f}x and {LAM['bn train'] / LAM['no bn']:.1f}x): "
      f"{LAM['bn eval'] > LAM['bn train'] > LAM['no bn']}")
print(f"Lanczos error bound (Ritz residual) on lambda_max: at most {ERR:.1e} of it")
NEG = [t["negative_mass"] for t in TOP.values()]
print(f"density mass below zero: {min(NEG):.3f} to {max(NEG):.3f} over the three operators "
      f"(within 0.1 of one half: {all(abs(x - 0.5) < 0.1 for x in NEG)})")
""")

code(r"""
colors = {"bn eval": "#1f77b4", "bn train": "#ff7f0e", "no bn": "#2ca02c"}
fig = go.Figure()
for name, d in DENS.items():
    fig.add_scatter(x=d.eigenvalue.values, y=np.maximum(d.values, 1e-8), name=f"{name} (SLQ)",
                    line=dict(color=colors[name]))
    for v in TOP[name]["values"]:
        fig.add_vline(x=v, line_dash="dot", line_color=colors[name])
fig.update_yaxes(type="log", title_text="density", range=[-6, None])
fig.update_xaxes(title_text="Hessian eigenvalue")
fig.update_layout(title="Hessian spectral densities (dotted: Lanczos top eigenvalues)", height=420, width=950)
fig.show()
""")

md(r"""
The eval-mode λ_max of the BatchNorm net is several times its train-mode one, and both sit above the
BatchNorm-free net's (the ratios are printed above, with a check that prints True when the order eval > train >
no BatchNorm holds). The mode changes λ_max by a factor, while the Lanczos error bound printed under it is a tiny
fraction of λ_max: which Hessian one reports matters more than the solver's error. All three densities put about
half of their broadened mass below zero (the printout gives each, and checks that they are within 0.1 of one
half): the bulk is a narrow peak at zero, and a short SLQ run with Gaussian broadening does not resolve on which
side of zero it lies, so read the outliers from the densities, not the sign of the bulk.

## 4 · Per-layer spectra

The diagonal block `H[S, S]` of a parameter group S is the curvature of the loss as a function of those parameters
alone. We group the parameters by stage (the stem convolution, the three residual stages, the classifier) and by
BatchNorm vs. convolution; by Cauchy interlacing no block's top eigenvalue exceeds λ_max of the whole Hessian.
""")

code(r"""
def stage_blocks(names, bn):
    groups = {}
    for n in names:
        stage = n.split(".")[0]
        kind = "bn" if (".bn" in n or n.startswith("bn")) else "w"
        label = f"{stage}" + (f" ({kind})" if bn and stage not in ("fc", "linear") else "")
        groups.setdefault(label, []).append(n)
    return groups


BLOCKS = {}
for name in ("bn eval", "no bn"):
    op = H[name]
    BLOCKS[name] = wb.curvature.block_spectra(op, blocks=stage_blocks(op.param_names, name == "bn eval"), k=1,
                                              tol=CFG["tol"], density=True, probes=1, steps=CFG["block_steps"])
    ds = BLOCKS[name]
    top_block = str(ds.block.values[int(np.nanargmax(ds.eigenvalue.values[:, 0]))])
    print(f"{name}: " + ", ".join(f"{b} {v:.3g}" for b, v in zip(ds.block.values, ds.eigenvalue.values[:, 0])))
    print(f"   largest block: {top_block}; max block lambda / lambda_max(H) = "
          f"{np.nanmax(ds.eigenvalue.values) / TOP[name]['values'][0]:.2f}")
fig = ls.plot_block_spectra(BLOCKS["bn eval"], title="Per-stage Hessian blocks, BatchNorm net (eval mode)")
fig.show()
fig = ls.plot_block_spectra(BLOCKS["no bn"], title="Per-stage Hessian blocks, no BatchNorm")
fig.show()
""")

md(r"""
## 5 · How much does the top eigenvalue depend on the data?

`eigs(H, k=1, data_subsets=n)` recomputes λ_max on n disjoint parts of the training set (each 1/n of it) and
reports their mean, standard deviation, min and max next to the full-data value. A subset's value is what one
would report from a sample of that size.
""")

code(r"""
SPREAD = {}
for name in ("bn eval", "no bn"):
    r = wb.curvature.eigs(H[name], k=1, tol=CFG["tol"], data_subsets=CFG["subsets"])
    sp = r.spread
    SPREAD[name] = {"full": float(sp.full[0]), "mean": float(sp.mean[0]), "std": float(sp.std[0]),
                    "min": float(sp.min[0]), "max": float(sp.max[0]), "sizes": sp.subset_sizes,
                    "values": sp.values[:, 0].tolist(), "converged": all(sp.converged) and bool(r.converged)}
    s = SPREAD[name]
    print(f"{name:>6s}: full data ({r.n_examples} images) lambda_max = {s['full']:.3f}; on {len(s['sizes'])} subsets "
          f"of {s['sizes'][0]} images: {s['mean']:.3f} +- {s['std']:.3f}, range [{s['min']:.3f}, {s['max']:.3f}] "
          f"(max/min = {s['max'] / s['min']:.2f}, relative std {s['std'] / s['full']:.2f})")
    above = sum(x > s["full"] for x in s["values"])
    print(f"        {above} of {len(s['values'])} subsets above the full-data value; subset mean / full = "
          f"{s['mean'] / s['full']:.3f} (>= 1 up to the solver tolerance: Jensen, see below)")
""")

md(r"""
The printed max/min ratio is what the choice of sample alone does to "the sharpness" at this sample size, and
the estimate is biased as well as noisy: the full-data Hessian is the mean of the n equal-size subset Hessians and
λ_max is a convex function of a symmetric matrix, so λ_max(full) ≤ the mean of the subsets' λ_max (Jensen's
inequality; exact for the eval-mode and BatchNorm-free operators, whose subset Hessians average to the full one).
Small samples overestimate the sharpness on average; the printed subset-mean / full ratio measures by how much. A
single small-batch estimate should be reported with its spread, and with the number of examples it used
(`EigResult.n_examples`).

## 6 · Summary
""")

code(r"""
print(f"{'BatchNorm, eval vs train mode':34s} | lambda_max {TOP['bn eval']['values'][0]:.3f} (eval) vs "
      f"{TOP['bn train']['values'][0]:.3f} (train, microbatch {BATCH}): ratio {ratio_modes:.2f}")
print(f"{'with vs without BatchNorm':34s} | lambda_max {TOP['bn eval']['values'][0]:.3f} vs "
      f"{TOP['no bn']['values'][0]:.3f}: ratio (no BN / BN) {ratio_bn:.2f}")
print(f"{'data-subset spread (PyHessian 159-1587)':34s} | " + "; ".join(
    f"{k}: max/min {v['max'] / v['min']:.2f} over {len(v['sizes'])} subsets" for k, v in SPREAD.items()))
wall, cpu = time.perf_counter() - T_START, time.process_time() - CPU_START
print(f"\nnotebook run time: {wall:.0f} s wall, {cpu:.0f} s CPU (this process, {torch.get_num_threads()} thread(s))")
RESULTS = {"quick": QUICK, "problem": NAME, "device": str(DEV), "train": TRAIN, "top": TOP, "micro_err": MICRO_ERR,
           "memory": plan, "n_microbatches": H["bn eval"].attrs["n_microbatches"],
           "sizes": {name: int(op.size) for name, op in H.items()},
           "ratio_train_eval": ratio_modes, "ratio_nobn_bn": ratio_bn, "lambda_err": ERR, "chance": CHANCE, "fits": FITS, "at_chance": AT_CHANCE,
           "blocks": {k: {"labels": [str(b) for b in ds.block.values],
                          "top": [float(x) for x in ds.eigenvalue.values[:, 0]],
                          "converged": bool(ds.converged.all()), "n_params": [int(x) for x in ds.n_params.values]}
                      for k, ds in BLOCKS.items()},
           "spread": SPREAD, "n_train": len(probs["bn"].train), "wall_s": wall, "cpu_s": cpu}
print("RESULTS " + json.dumps(RESULTS))
""")


if __name__ == "__main__":
    main(notebook(cells), "07_spectra_at_scale.ipynb")
