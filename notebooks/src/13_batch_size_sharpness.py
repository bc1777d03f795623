"""Build notebooks/13_batch_size_sharpness.ipynb (run: python notebooks/src/13_batch_size_sharpness.py).

The notebook is written without outputs; ``--execute`` runs it in quick mode (WORKBENCH_QUICK=1) to check it.
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 13 · Batch size and sharpness: smaller batches find flatter minima

**Papers.**
* N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. T. P. Tang, *On Large-Batch Training for Deep
  Learning: Generalization Gap and Sharp Minima*, ICLR 2017 (arXiv:1609.04836).
* S. Jastrzębski, Z. Kenton, D. Arpit, N. Ballas, A. Fischer, Y. Bengio, A. Storkey, *Three Factors Influencing
  Minima in SGD*, 2017 (arXiv:1711.04623); S. Jastrzębski, M. Szymczak, S. Fort, D. Arpit, J. Tabor, K. Cho,
  K. Geras, *The Break-Even Point on Optimization Trajectories of Deep Neural Networks*, ICLR 2020
  (arXiv:2002.09572).
* L. Wu, C. Ma, W. E, *How SGD Selects the Global Minima in Over-parameterized Learning: A Dynamical Stability
  Perspective*, NeurIPS 2018.

**Phenomenon.** At the same learning rate η, SGD with smaller batches ends in flatter regions: a smaller top
Hessian eigenvalue λ_max(H) and a smaller trace tr(H). Wu, Ma & E explain it by *linear stability*: SGD can only
stay at a minimum whose curvature its own noise does not blow up. Linearising SGD there, the mean iterate moves
like gradient descent, which needs the **sharpness** a = λ_max(H) ≤ 2/η; the fluctuations add a condition on the
**non-uniformity** s = λ_max(Σ)^{1/2}, Σ = (1/n) Σᵢ Hᵢ² − H² the spread of the per-example Hessians Hᵢ: in
their one-dimensional analysis (mini-batches of B of n examples drawn without replacement) the mean square grows by
(1 − ηa)² + η² s² (n − B)/(B (n − 1)) per step, so a reachable minimum needs a ≤ 2/η **and**
s ≤ √(B (n − 1)/(n − B)) / η. The second bound tightens as B shrinks — the smaller the batch, the flatter (in the
non-uniformity, and with it the sharpness) the minima SGD can stay at.

**Expected figure.** The full-batch sharpness during SGD at one η for several batch sizes, ending lower for smaller
batches (full-batch GD at 2/η), the mini-batch Hessians' sharpness slightly above it, and Wu et al.'s sharpness /
non-uniformity diagram with the small-batch runs well inside their stability regions and the large-batch runs at
its edge a = 2/η.

**Setup.** sklearn digits, tanh MLP with two hidden layers, squared loss against one-hot targets, plain SGD at
η = 0.1 for the same number of steps at each batch size (mini-batches without replacement, reshuffled every
epoch), from the same initialisation. Probes: `Sharpness` (λ_max of the full training-set Hessian) and
`BatchSharpness` (mean λ_max of the Hessians of random mini-batches of the training batch size). At the end:
λ_max(H) by Lanczos, tr(H) by Hutch++ (`wb.curvature.trace`) and the non-uniformity by Lanczos on
`wb.curvature.hessian_variance` (the operator Σ).

**Run time** on a shared 2-core CPU: full mode (width 64, 500 digits, 3000 steps, batch sizes 8/32/128 and full-batch GD,
2 seeds) 40 s to 2 minutes here depending on the machine's load (the notebook prints its own at the end; two runs
printed 38 s wall / 36 s CPU and 118 s wall / 51 s CPU); quick mode (`WORKBENCH_QUICK=1`: 200 digits, 1000 steps,
batch sizes 8/32/128, 1 seed) ≈ 25–60 s (about 11 s of CPU time).
""")

code(r"""
import json
import os
import time

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

import workbench as wb
from workbench.probes import BatchSharpness, Sharpness

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
torch.set_num_threads(1)
T_START, CPU_START = time.perf_counter(), time.process_time()

WIDTH, N_TRAIN, STEPS = (64, 200, 1000) if QUICK else (64, 500, 3000)
SEEDS = (0,) if QUICK else (0, 1)
LR = 0.1
BATCHES = [8, 32, 128] + ([] if QUICK else [N_TRAIN])   # N_TRAIN = full-batch gradient descent
EVERY = STEPS // 25                                     # full-batch sharpness
EVERY_B = STEPS // 10                                   # mini-batch sharpness (4 random batches per call)

problems = {seed: wb.problems.make("digits-mlp", width=WIDTH, depth=2, loss="mse", n_train=N_TRAIN, seed=seed)
            for seed in SEEDS}
prob = problems[SEEDS[0]]
print(prob.describe().splitlines()[0], f"- {prob.n_params:,} parameters, {len(prob.train)} training examples")
lam0 = {s: float(wb.curvature.eigs(wb.curvature.hessian(p.model, p.loss, p.data()), k=1, tol=1e-4).values[0])
        for s, p in problems.items()}
print(f"η = {LR}: 2/η = {2 / LR:.1f}; initial sharpness λ0 = " + ", ".join(f"{v:.2f}" for v in lam0.values()))


def label(B):
    return "GD (full batch)" if B == N_TRAIN else f"B = {B}"
""")

md(r"""
## 1. SGD at one learning rate, several batch sizes

Same η, same number of steps, same initialisation for every batch size (per seed). Each run records the
full-batch sharpness every `EVERY` steps and, for SGD, the mini-batch sharpness at its own batch size.
""")

code(r"""
runs = {}
for seed, p in problems.items():
    for B in BATCHES:
        probes = [Sharpness(every=EVERY)]
        if B < N_TRAIN:
            probes.append(BatchSharpness(every=EVERY_B, batch_sizes=[B], n_batches=4, seed=seed))
        runs[seed, B] = wb.train(p, "sgd", lr=LR, steps=STEPS, batch_size=None if B == N_TRAIN else B,
                                 seed=seed, probes=probes)
        print(f"seed {seed} {label(B):16s} status {runs[seed, B].status:8s} "
              f"final sharpness {float(runs[seed, B].record.sharpness[-1]):6.2f}")
""")

code(r"""
colors = {8: "#2ca02c", 32: "#1f77b4", 128: "#ff7f0e", N_TRAIN: "#d62728"}
seed = SEEDS[0]
fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.09,
                    subplot_titles=("full-batch sharpness λ_max(H) during SGD",
                                    "mini-batch sharpness λ_max(H_B) (dashed) vs full-batch (solid)"))
for B in BATCHES:
    rec = runs[seed, B].record
    c = colors[B]
    fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness, name=label(B), line=dict(color=c), legendgroup=str(B),
                    row=1, col=1)
    fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness, line=dict(color=c), showlegend=False,
                    legendgroup=str(B), row=1, col=2)
    if "batch_sharpness" in rec:
        fig.add_scatter(x=rec.batch_sharpness_step, y=rec.batch_sharpness.sel(batch_sharpness_batch_size=B),
                        line=dict(color=c, dash="dash"), name=f"mini-batch, B = {B}", legendgroup=str(B),
                        row=1, col=2)
for col in (1, 2):
    fig.add_hline(y=2 / LR, line=dict(color="gray", dash="dot"), annotation_text="2/η", row=1, col=col)
fig.update_xaxes(title_text="step")
fig.update_yaxes(title_text="λ_max(H)", row=1, col=1)
fig.update_yaxes(title_text="λ_max", row=1, col=2)
fig.update_layout(height=430, width=1150, legend=dict(orientation="h", y=-0.2),
                  title=f"SGD, η={LR}, seed {seed}")
fig.show()
""")

md(r"""
## 2. Where each run ended: sharpness, trace and non-uniformity

At the final parameters of every run: a = λ_max(H) and tr(H) on the whole training set, the non-uniformity
s = √λ_max(Σ), the training loss and accuracy, and the test accuracy. Wu et al.'s conditions are checked as the
ratios a/(2/η) and s/s_max(B) with s_max(B) = √(B (n − 1)/(n − B)) / η (≤ 1 = inside the stability region;
full-batch GD has no noise term, s_max = ∞).
""")

code(r"""
def s_max(B, n=N_TRAIN, lr=LR):
    return float("inf") if B >= n else float(np.sqrt(B * (n - 1) / (n - B)) / lr)


final = {}
for (seed, B), run in runs.items():
    p, m = problems[seed], run.model
    data = p.data()
    H = wb.curvature.hessian(m, p.loss, data)
    a = float(wb.curvature.eigs(H, k=1, tol=1e-4).values[0])
    tr = wb.curvature.trace(H, n=60, seed=seed)
    S = wb.curvature.hessian_variance(m, p.loss, data)
    s = float(wb.curvature.eigs(S, k=1, tol=1e-3).values[0]) ** 0.5
    m.eval()
    with torch.no_grad():
        loss = float(p.loss(m, data))
        acc = float((m(data[0]).argmax(-1) == data[1]).float().mean())
        xt, yt = p.data("test")
        test_acc = float((m(xt).argmax(-1) == yt).float().mean())
    final[seed, B] = dict(a=a, trace=float(tr.value), trace_se=float(tr.stderr), s=s, loss=loss, acc=acc,
                          test_acc=test_acc, a_ratio=a * LR / 2, s_ratio=s / s_max(B))

print(f"{'seed':>4} {'batch':>16} {'λ_max(H)':>9} {'tr(H)':>13} {'s':>7} {'a/(2/η)':>8} {'s/s_max':>8} "
      f"{'train loss':>10} {'train acc':>9} {'test acc':>8}")
for (seed, B), f in sorted(final.items()):
    print(f"{seed:4d} {label(B):>16} {f['a']:9.2f} {f['trace']:8.1f}±{f['trace_se']:4.1f} {f['s']:7.2f} "
          f"{f['a_ratio']:8.3f} {f['s_ratio']:8.3f} {f['loss']:10.4f} {f['acc']:9.3f} {f['test_acc']:8.3f}")

mean = {B: {k: float(np.mean([final[s, B][k] for s in SEEDS])) for k in final[SEEDS[0], B]} for B in BATCHES}
sgd = [B for B in BATCHES if B < N_TRAIN]
print("\nmean over seeds:")
for B in BATCHES:
    print(f"  {label(B):16s} λ_max = {mean[B]['a']:6.2f}   tr(H) = {mean[B]['trace']:7.1f}   s = {mean[B]['s']:6.2f}"
          f"   test acc = {mean[B]['test_acc']:.3f}")
order_a = all(mean[b1]["a"] < mean[b2]["a"] for b1, b2 in zip(BATCHES, BATCHES[1:]))
order_tr = all(mean[b1]["trace"] < mean[b2]["trace"] for b1, b2 in zip(BATCHES, BATCHES[1:]))
inside = all(f["a_ratio"] <= 1.0 for (s, B), f in final.items() if B < N_TRAIN)
inside_s = all(f["s_ratio"] <= 1.0 for f in final.values())
print(f"\nλ_max increases with the batch size: {order_a}; tr(H) increases with the batch size: {order_tr}")
print(f"every SGD run ends with λ_max <= 2/η: {inside} (largest a/(2/η) among SGD runs: "
      f"{max(final[s, B]['a_ratio'] for s in SEEDS for B in sgd):.3f}); "
      f"every run ends with s <= s_max(B): {inside_s} (largest s/s_max: "
      f"{max(f['s_ratio'] for f in final.values()):.3f})")
# at the edge of stability (a/(2/η) >= EDGE for every seed) or inside it (a/(2/η) < EDGE for every seed)
EDGE = 0.95
where = {B: ("edge" if all(final[s, B]["a_ratio"] >= EDGE for s in SEEDS) else
             "inside" if all(final[s, B]["a_ratio"] < EDGE for s in SEEDS) else "mixed") for B in BATCHES}
ratios = lambda B: ", ".join(f"{final[s, B]['a_ratio']:.3f}" for s in SEEDS)
for kind, text in (("edge", f"at the edge of stability (a/(2/η) >= {EDGE} for every seed)"),
                   ("inside", f"inside the stability region (a/(2/η) < {EDGE} for every seed)"),
                   ("mixed", "at the edge for some seeds, inside for others")):
    listed = [f"{label(B)} ({ratios(B)})" for B in BATCHES if where[B] == kind]
    if listed or kind != "mixed":
        print(f"runs ending {text}: " + ("; ".join(listed) if listed else "none"))
""")

code(r"""
fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                    subplot_titles=("final λ_max(H) and tr(H) against the batch size",
                                    "sharpness / non-uniformity diagram (Wu et al. 2018)"))
xs = [B for B in BATCHES]
for key, name, dash in (("a", "λ_max(H)", "solid"), ("trace", "tr(H) / 10", "dash")):
    scale = 0.1 if key == "trace" else 1.0
    fig.add_scatter(x=xs, y=[mean[B][key] * scale for B in xs], mode="lines+markers", name=name + " (seed mean)",
                    line=dict(color="black", dash=dash), row=1, col=1)
    for seed in SEEDS:
        fig.add_scatter(x=xs, y=[final[seed, B][key] * scale for B in xs], mode="markers", showlegend=False,
                        marker=dict(color="gray", size=6), row=1, col=1)
fig.add_hline(y=2 / LR, line=dict(color="gray", dash="dot"), annotation_text="2/η", row=1, col=1)
s_top = max(f["s"] for f in final.values())
for B in sgd:
    c = colors[B]
    # the stability region of batch size B: a <= 2/η and s <= s_max(B)
    fig.add_scatter(x=[0, 2 / LR, 2 / LR], y=[s_max(B), s_max(B), 0], mode="lines", line=dict(color=c, dash="dot"),
                    name=f"stability region, B = {B}", row=1, col=2)
for B in BATCHES:
    fig.add_scatter(x=[final[s, B]["a"] for s in SEEDS], y=[final[s, B]["s"] for s in SEEDS], mode="markers",
                    marker=dict(color=colors[B], size=10), name=f"{label(B)} (final)", row=1, col=2)
fig.update_xaxes(title_text="batch size B", type="log", row=1, col=1)
fig.update_yaxes(title_text="curvature", row=1, col=1)
fig.update_xaxes(title_text="sharpness a = λ_max(H)", range=[0, 2.3 / LR], row=1, col=2)
fig.update_yaxes(title_text="non-uniformity s = λ_max(Σ)^½", type="log", row=1, col=2)
fig.update_layout(height=450, width=1150, legend=dict(orientation="h", y=-0.2))
fig.show()
""")

md(r"""
In full mode (two seeds) the final sharpness is 12.4, 17.4, 19.9 and 20.8 for B = 8, 32, 128 and full-batch GD,
and the trace 232, 359, 424 and 441: the smaller the batch, the flatter the end point, in both measures. The
large batches end at the edge of stability (the printed list of runs with a/(2/η) ≥ 0.95): in full mode B = 128 at
a/(2/η) = 1.003 and 0.985 (seeds 0 and 1), on the line rather than below it, and GD at 1.03–1.05 (it hovers just
above 2/η, as in notebook 03). The runs printed as inside end well below the line: in full mode B = 32 at 0.87 and
B = 8 at 0.62 of 2/η. Wu et al.'s non-uniformity condition holds for every run. It is tightest for the smallest
batch (s/s_max = 0.53 at B = 8, 0.36 at 32, 0.19 at 128), but no run is pushed against it (the largest s/s_max
is printed). So the bound that binds here is the sharpness bound a ≤ 2/η, and only for the large batches, which
end on it; the runs printed as inside end inside both bounds, and the smaller the batch, the farther below 2/η
(though closer to its own, tighter non-uniformity bound).

Keskar et al.'s *generalisation gap* does not show here: the test accuracy of the flatter small-batch solutions
is not higher (full mode, seed means: 0.943 at B = 8 against 0.960 for GD). With equal step counts the small-batch
runs have seen far fewer epochs (48 at B = 8, 3000 for GD) and end at a higher training loss, and digits is an
easy task; flatness and test accuracy are separate questions.
""")

md(r"""
## 3. Mini-batch sharpness against full-batch sharpness

The Hessian of a mini-batch of B examples is a noisy, low-rank estimate of H; its top eigenvalue exceeds λ_max(H)
and approaches it as B grows (random-matrix theory: *Learning Rates as a Function of Batch Size: A Random Matrix
Theory Approach*, Granziol et al. 2022). Below: over the second half of training, the mean ratio of the
mini-batch to the full-batch sharpness at each batch size, and the mini-batch sharpness in units of 2/η. In full
mode the excess is 18% at B = 8, 5% at B = 32 and 1% at B = 128, and the mini-batch sharpness itself, averaged
over the sampled batches, stays below 2/η at B = 8 (0.75) and B = 32 (0.92).
""")

code(r"""
mb = {}
for B in sgd:
    ratios, over = [], []
    for seed in SEEDS:
        rec = runs[seed, B].record
        sel = rec.batch_sharpness_step.values >= STEPS // 2
        bs = rec.batch_sharpness.sel(batch_sharpness_batch_size=B).values[sel]
        full = rec.batch_sharpness_full.values[sel]
        ratios.append(np.mean(bs / full))
        over.append(np.mean(bs) * LR / 2)
    mb[B] = dict(ratio=float(np.mean(ratios)), over_2_lr=float(np.mean(over)))
    print(f"B = {B:4d}: mini-batch / full-batch λ_max = {mb[B]['ratio']:.2f}; mini-batch λ_max = "
          f"{mb[B]['over_2_lr']:.2f} × 2/η")
shrinks = all(mb[b1]["ratio"] > mb[b2]["ratio"] for b1, b2 in zip(sgd, sgd[1:]))
print(f"the mini-batch excess shrinks as B grows: {shrinks}")
""")

md(r"""
## 4. Measured against the papers
""")

code(r"""
print(f"{'quantity':62s} {'measured':>22s}  paper")
row = lambda q, m, p: print(f"{q:62s} {m:>22s}  {p}")
row("final λ_max(H), B = " + " / ".join(str(B) for B in BATCHES), " / ".join(f"{mean[B]['a']:.1f}" for B in BATCHES),
    "grows with B (Keskar et al. 2017; Jastrzębski et al.)")
row("final tr(H), B = " + " / ".join(str(B) for B in BATCHES), " / ".join(f"{mean[B]['trace']:.0f}" for B in BATCHES),
    "grows with B")
a_top, B_top = max((final[s, B]["a_ratio"], B) for s in SEEDS for B in sgd)
row("largest λ_max/(2/η) over SGD runs", f"{a_top:.3f} (B = {B_top})",
    "<= 1 (linear stability, Wu et al. 2018): "
    + ("met" if a_top <= 1 else f"{a_top - 1:.1%} above, i.e. on the edge, not inside"))
row(f"SGD batch sizes at the edge (a/(2/η) >= {EDGE}) / inside",
    " / ".join(", ".join(str(B) for B in sgd if where[B] == k) or "none" for k in ("edge", "inside")),
    "expected: large batches at the edge, small ones inside")
row("largest s/s_max(B) over runs", f"{max(f['s_ratio'] for f in final.values()):.2f}",
    "<= 1 (non-uniformity bound, Wu et al. 2018)")
row("mini-batch/full-batch λ_max, B = " + " / ".join(str(B) for B in sgd),
    " / ".join(f"{mb[B]['ratio']:.2f}" for B in sgd), "> 1, falling toward 1 as B grows")
wall, cpu = time.perf_counter() - T_START, time.process_time() - CPU_START
print(f"run time: {wall:.0f} s wall, {cpu:.0f} s CPU (QUICK={QUICK})")
results = {"quick": QUICK, "lr": LR, "n_train": N_TRAIN, "batch_sizes": BATCHES, "seeds": list(SEEDS),
           "mean": {str(B): mean[B] for B in BATCHES},
           "final": [{"seed": s, "batch_size": B, **f} for (s, B), f in sorted(final.items())],
           "minibatch": {str(B): mb[B] for B in sgd},
           "edge_threshold": EDGE, "where": {str(B): where[B] for B in BATCHES},
           "statuses": [r.status for r in runs.values()]}
print("RESULTS " + json.dumps(results))
""")

if __name__ == "__main__":
    main(notebook(cells), "13_batch_size_sharpness.ipynb")
