"""Build notebooks/14_intrinsic_dimension.ipynb (run: python notebooks/src/14_intrinsic_dimension.py [--execute]).

The notebook is written without outputs; ``--execute`` runs it in quick mode (WORKBENCH_QUICK=1) to check it.
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 14 · Intrinsic dimension: how many random directions does a network need?

**Paper.** C. Li, H. Farkhoor, R. Liu, J. Yosinski, *Measuring the Intrinsic Dimension of Objective Landscapes*,
ICLR 2018 (arXiv:1804.08838). Data: sklearn's 8×8 digits and MNIST-1D (S. Greydanus, *Scaling down Deep
Learning*, 2020, arXiv:2011.14439).

**Phenomenon.** Train a network not in its n-dimensional parameter space but in a *random* d-dimensional affine
subspace θ = θ₀ + P z: θ₀ is the usual random initialisation, P a fixed random n × d matrix with unit-length
columns, and only z ∈ ℝᵈ (starting at 0) is optimised. Accuracy climbs with d and reaches the full model's
level at a d far below n. The **intrinsic dimension d₉₀** is the smallest d that reaches 90% of the full model's
test accuracy. Li et al. found d₉₀ ≈ 750 for a 784-200-200-10 MLP on MNIST (199,210 parameters, 0.4%) and that
d₉₀ hardly changes when the network is made wider: extra parameters add redundant directions, not new ones.

**Expected figure.** Test accuracy against d (log axis) rises with d as a trend, not at every step (it can step
down between neighbouring grid points; the last cell prints the rank correlation with d, Spearman ρ, and every
step down), from well above chance at the smallest d on the grid (section 2 prints the multiple of chance) to the
full model's accuracy, crossing the 90% line at a d₉₀ that is a few percent or less of the parameter count, for
digits and MNIST-1D.

**Engine piece.** `wb.problems.subspace(problem, dim, projection="dense" | "sparse" | "fastfood", seed=0)` returns
a `wb.Problem` whose model has one parameter `z`; `wb.train`, the probes and `wb.curvature` work on it
unchanged (the Hessian in z is Pᵀ H P). The projections: a dense Gaussian matrix (n·d floats), a very sparse
one with ⌈√n⌉ entries ±1/√(⌈√n⌉) per column (Li, Hastie, Church 2006; d·√n memory), and the Fastfood transform
(Le, Sarlós, Smola 2013; O(n) memory, O(n log n) per product), the two structured ones for models where a dense
P would not fit.

**Run time** measured on a 2-core machine: full mode 81 s at load average 2, 141–222 s with one thread at load
average 3–5, and 3,697 s at load 6–10, where threads competing for the cores slow it far more than their share;
quick mode (`WORKBENCH_QUICK=1`, fewer steps, fewer d values) 35 s with one thread at load average 4–5 (168–257 s
in earlier measurements). The last cell prints the time this run took.
""")

code(r"""
import json
import os
import time
import warnings

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

import workbench as wb

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
torch.set_num_threads(1 if QUICK else max(1, torch.get_num_threads()))
warnings.simplefilter("ignore", UserWarning)   # MNIST-1D arrays are read-only numpy views
T0 = time.perf_counter()

FRACTION = 0.9            # d90: 90% of the full model's test accuracy
SUB_LR = 0.02             # Adam in z (unit columns: a unit step in z moves θ by about one unit)
FULL_LR = 1e-3            # Adam on all parameters (the baseline)
PROJECTION = "sparse"     # for the curves; section 3 compares the projections
NONZEROS = 64             # per column of the sparse P (engine default ⌈√n⌉: 538 for the MNIST-1D MLP, 8x the cost)
STEPS = 300 if QUICK else 600
CONFIGS = {
    "digits": dict(problem="digits-mlp", options=dict(width=200, depth=2), batch_size=128,
                   dims=[10, 50, 200, 500] if QUICK else [10, 20, 50, 100, 150, 200, 300, 500, 1000, 2000]),
    "MNIST-1D": dict(problem="mnist1d-mlp", options=dict(width=512, depth=2), batch_size=250,
                     dims=[300, 3000, 10000, 20000] if QUICK else [300, 1000, 2000, 3000, 5000, 8000, 12000, 20000]),
}
print("quick mode" if QUICK else "full mode")
""")

md(r"""
## 1 · The reparametrisation

`subspace` copies the problem's model as θ₀, draws P from `seed` and wraps the base model so that its forward pass
runs at θ₀ + P z (with `torch.func.functional_call`). At z = 0 it *is* the base model; the only trainable
tensor is z.
""")

code(r"""
digits = wb.problems.make("digits-mlp", seed=0, **CONFIGS["digits"]["options"])
sp = wb.problems.subspace(digits, 100, projection=PROJECTION, seed=0, nonzeros=NONZEROS)
x, y = digits.data("test")
print(sp.describe().splitlines()[1])
print(f"trainable tensors: {[n for n, _ in sp.model.named_parameters()]}, {sp.n_params} entries "
      f"(base model: {digits.n_params:,})")
print("outputs at z = 0 equal the base model's:", torch.equal(sp.model(x), digits.model(x)))
norms = sp.projection.column_norms()
print(f"column norms of P: min {float(norms.min()):.6f}, max {float(norms.max()):.6f}; "
      f"P holds {sp.projection.nbytes / 2**20:.1f} MiB (a dense P would hold "
      f"{digits.n_params * 100 * 4 / 2**20:.1f} MiB)")
""")

md(r"""
## 2 · Accuracy against d

For every d: a fresh random subspace (sparse P with `NONZEROS` = 64 entries per column, projection seed 0; section
3 compares the projections), mini-batch Adam on z, then the test accuracy of the
final point. The baseline is the same network trained with Adam on all of its parameters for the same number of
steps and batch size. MNIST-1D uses a wide MLP (512 units, 2 hidden layers): an MLP needs many directions on this
data set, and a wide one makes the comparison with its parameter count meaningful. d₉₀ is the smallest d on the grid at or above 90% of the baseline; we also interpolate linearly in log d
between the two grid points around the crossing.
""")

code(r"""
def test_accuracy(problem, model):
    return problem.evaluate(model.eval(), problem.data("test"))["accuracy"]


def crossing(dims, accs, target):
    # smallest grid d reaching target, and the log-linear interpolation with the grid point before it
    above = [i for i, a in enumerate(accs) if a >= target]
    if not above:
        return None, None
    i = above[0]
    if i == 0:
        return dims[0], float(dims[0])
    d0, d1, a0, a1 = dims[i - 1], dims[i], accs[i - 1], accs[i]
    return dims[i], float(np.exp(np.log(d0) + (target - a0) / (a1 - a0) * (np.log(d1) - np.log(d0))))


results = {}
for name, cfg in CONFIGS.items():
    prob = wb.problems.make(cfg["problem"], seed=0, **cfg["options"])
    t0 = time.perf_counter()
    full = wb.train(prob, "adam", lr=FULL_LR, steps=STEPS, batch_size=cfg["batch_size"], seed=0, progress=False)
    base = test_accuracy(prob, full.model)
    accs, train_accs = [], []
    for d in tqdm(cfg["dims"], desc=name):
        sub = wb.problems.subspace(prob, d, projection=PROJECTION, seed=0, nonzeros=NONZEROS)
        run = wb.train(sub, "adam", lr=SUB_LR, steps=STEPS, batch_size=cfg["batch_size"], seed=0, progress=False)
        accs.append(test_accuracy(sub, run.model))
        train_accs.append(sub.evaluate(run.model, sub.data("train"))["accuracy"])
    d90, d90_interp = crossing(cfg["dims"], accs, FRACTION * base)
    results[name] = dict(n_params=prob.n_params, n_train=len(prob.train), baseline=base, dims=cfg["dims"],
                         acc=accs, train_acc=train_accs, d90=d90, d90_interp=d90_interp,
                         chance=1 / prob.n_classes, seconds=time.perf_counter() - t0)
    print(f"{name}: {prob.n_params:,} parameters, {len(prob.train)} training examples; full model test accuracy "
          f"{base:.3f} (90%: {FRACTION * base:.3f})")
    for d, a, ta in zip(cfg["dims"], accs, train_accs):
        print(f"   d = {d:6d}   test {a:.3f}   train {ta:.3f}   {a / base:6.1%} of full" + ("   <- d90" if d == d90 else ""))
    print(f"   d90 = {d90} (log-interpolated {d90_interp:.0f}) = {d90 / prob.n_params:.2%} of the parameters"
          if d90 else "   90% not reached on this grid")
    print(f"   smallest d = {cfg['dims'][0]}: test accuracy {accs[0]:.3f} = {accs[0] / results[name]['chance']:.1f}x "
          f"chance ({results[name]['chance']:.2f}); largest d = {cfg['dims'][-1]}: {accs[-1] / base:.1%} of full")
""")

code(r"""
fig = make_subplots(rows=1, cols=len(results), subplot_titles=[
    f"{k}: {v['n_params']:,} parameters" for k, v in results.items()], horizontal_spacing=0.1)
for j, (name, r) in enumerate(results.items(), start=1):
    fig.add_scatter(x=r["dims"], y=r["acc"], mode="lines+markers", name=f"{name}: subspace, test", row=1, col=j,
                    line=dict(color="#1f77b4"), showlegend=j == 1, legendgroup="test")
    fig.add_scatter(x=r["dims"], y=r["train_acc"], mode="lines+markers", name="subspace, train", row=1, col=j,
                    line=dict(color="#1f77b4", dash="dot"), showlegend=j == 1, legendgroup="train")
    fig.add_hline(y=r["baseline"], line=dict(color="black"), row=1, col=j)
    fig.add_hline(y=FRACTION * r["baseline"], line=dict(color="black", dash="dash"), row=1, col=j)
    fig.add_hline(y=r["chance"], line=dict(color="gray", dash="dot"), row=1, col=j)
    if r["d90"]:
        fig.add_vline(x=r["d90"], line=dict(color="#d62728", dash="dash"), row=1, col=j)
        fig.add_annotation(x=np.log10(r["d90"]), y=0.05, text=f"d90 = {r['d90']}", showarrow=False,
                           xanchor="left", font=dict(color="#d62728"), row=1, col=j)
    fig.update_xaxes(type="log", title_text="subspace dimension d", row=1, col=j)
    fig.update_yaxes(title_text="accuracy (fraction correct)", range=[0, 1.02], row=1, col=j)
fig.add_scatter(x=[None], y=[None], mode="lines", line=dict(color="black"), name="full model (test)")
fig.add_scatter(x=[None], y=[None], mode="lines", line=dict(color="black", dash="dash"), name="90% of full")
fig.add_scatter(x=[None], y=[None], mode="lines", line=dict(color="gray", dash="dot"), name="chance")
fig.update_layout(template="plotly_white", height=420, legend=dict(orientation="h", y=-0.25),
                  margin=dict(b=120), title="Test accuracy of training in a random d-dimensional subspace")
fig
""")

md(r"""
## 3 · How much does the projection matter?

Li et al. report the same intrinsic dimension with dense, sparse and Fastfood projections. On digits, at a few
d around d₉₀, each projection trains its own random subspace (projection seed 1, same optimizer), including the
sparse projection at the engine's default density (⌈√n⌉ nonzeros per column) and at the `NONZEROS` used above.
The cell prints the spread between projections at every d and at d₉₀ and above; each projection's d₉₀ on this
coarser grid (against the 90% line of section 2); and, as a yardstick, how much the accuracy of one projection
changes when only its random draw changes (sparse-`NONZEROS` with seed 0, as in section 2, against seed 1 here).
""")

code(r"""
cmp_dims = [100, 300] if QUICK else [50, 150, 300, 1000]
variants = {"dense": dict(projection="dense"), "sparse, √n": dict(projection="sparse"),
            f"sparse, {NONZEROS}": dict(projection="sparse", nonzeros=NONZEROS), "fastfood": dict(projection="fastfood")}
cmp = {}
for label, kw in tqdm(variants.items(), desc="projections"):
    row = []
    for d in cmp_dims:
        sub = wb.problems.subspace(digits, d, seed=1, **kw)
        run = wb.train(sub, "adam", lr=SUB_LR, steps=STEPS, batch_size=CONFIGS["digits"]["batch_size"], seed=0,
                       progress=False)
        row.append(test_accuracy(sub, run.model))
    cmp[label] = row
print(f"{'test accuracy on digits':24s}" + "".join(f"d = {d:<8d}" for d in cmp_dims))
for label, row in cmp.items():
    print(f"  {label:22s}" + "".join(f"{a:<12.3f}" for a in row))
spread = [max(col) - min(col) for col in zip(*cmp.values())]
print("largest spread between projections at one d: " + f"{max(spread):.3f}")
print("spread between projections at each d: " + ", ".join(f"d = {d}: {sp:.3f}" for d, sp in zip(cmp_dims, spread)))
d90_digits = results["digits"]["d90"]
if d90_digits is not None and any(d >= d90_digits for d in cmp_dims):
    print(f"largest spread at d >= d90 = {d90_digits}: "
          f"{max(sp for d, sp in zip(cmp_dims, spread) if d >= d90_digits):.3f}")
print(f"spread shrinks as d grows: {all(a >= b for a, b in zip(spread, spread[1:]))}; largest at the smallest d: "
      f"{int(np.argmax(spread)) == 0}")
# each projection's d90 on this grid, against section 2's 90% line
target = FRACTION * results["digits"]["baseline"]
cmp_d90 = {label: crossing(cmp_dims, row, target)[0] for label, row in cmp.items()}
print(f"d90 on this grid (90% line {target:.3f}): " + ", ".join(f"{k} {v}" for k, v in cmp_d90.items())
      + f"; section 2 (seed 0, finer grid): {d90_digits}")
d90_set = sorted({cmp_dims.index(v) if v is not None else len(cmp_dims) for v in cmp_d90.values()})
print(f"projections' d90 on this grid differ by at most one grid point: {d90_set[-1] - d90_set[0] <= 1}")
# yardstick: the same projection (sparse, NONZEROS) in two random draws, seed 0 (section 2's grid, else trained here)
seed0 = []
for d in cmp_dims:
    if d in results["digits"]["dims"]:
        seed0.append(results["digits"]["acc"][results["digits"]["dims"].index(d)])
    else:
        sub = wb.problems.subspace(digits, d, projection="sparse", seed=0, nonzeros=NONZEROS)
        run = wb.train(sub, "adam", lr=SUB_LR, steps=STEPS, batch_size=CONFIGS["digits"]["batch_size"], seed=0,
                       progress=False)
        seed0.append(test_accuracy(sub, run.model))
seed_diff = [abs(a - b) for a, b in zip(seed0, cmp[f"sparse, {NONZEROS}"])]
print(f"sparse, {NONZEROS}: seed 0 vs seed 1 at each d: " + ", ".join(
    f"d = {d}: {a:.3f} vs {b:.3f} (|diff| {x:.3f})" for d, a, b, x in zip(cmp_dims, seed0, cmp[f"sparse, {NONZEROS}"], seed_diff)))
print(f"largest seed-to-seed difference {max(seed_diff):.3f} vs largest spread between projections {max(spread):.3f}")
""")

md(r"""
The projections do not give identical accuracies. The printed spread between them is largest at the smallest d,
where accuracy changes fastest with d, and it is of the same order as the change from redrawing one projection's
random subspace (the seed-0 vs seed-1 line): the choice of projection matters about as much as the choice of
random subspace, consistent with Li et al.'s finding that the projections give the same intrinsic dimension. That
does not pin d₉₀ to one grid point: near the 90% line a difference of a few points decides which grid point is the
first above it, so on a grid this coarse the projections' d₉₀ can differ by a grid point (the printout gives each,
and whether they differ by more).
""")

md(r"""
## 4 · Wider networks, same intrinsic dimension?

Li et al. found d₉₀ nearly constant across MLP widths on MNIST while the parameter count grew many times. The same
measurement on digits, for hidden widths from 50 to 400 (2 hidden layers):
""")

code(r"""
WIDTHS = [50, 400] if QUICK else [50, 100, 200, 400]
W_DIMS = [50, 200, 500] if QUICK else [20, 50, 100, 200, 300, 500, 1000]
widths = {}
for w in tqdm(WIDTHS, desc="widths"):
    prob = wb.problems.make("digits-mlp", seed=0, width=w, depth=2)
    full = wb.train(prob, "adam", lr=FULL_LR, steps=STEPS, batch_size=128, seed=0, progress=False)
    base = test_accuracy(prob, full.model)
    accs = []
    for d in W_DIMS:
        sub = wb.problems.subspace(prob, d, projection=PROJECTION, seed=0, nonzeros=NONZEROS)
        run = wb.train(sub, "adam", lr=SUB_LR, steps=STEPS, batch_size=128, seed=0, progress=False)
        accs.append(test_accuracy(sub, run.model))
    d90, d90_interp = crossing(W_DIMS, accs, FRACTION * base)
    widths[w] = dict(n_params=prob.n_params, baseline=base, acc=accs, d90=d90, d90_interp=d90_interp)
print(f"{'width':>6s}{'parameters':>12s}{'full acc':>10s}  " + "".join(f"d={d:<7d}" for d in W_DIMS) + "   d90  (interp.)")
for w, r in widths.items():
    interp = f"{r['d90_interp']:.0f}" if r["d90_interp"] else "-"
    print(f"{w:6d}{r['n_params']:12,d}{r['baseline']:10.3f}  " + "".join(f"{a:<9.3f}" for a in r["acc"])
          + f"{str(r['d90']):>6s}  ({interp})")
found = [r["d90_interp"] for r in widths.values() if r["d90_interp"]]
n_ratio = max(r["n_params"] for r in widths.values()) / min(r["n_params"] for r in widths.values())
if len(found) == len(widths):
    print(f"parameter count grows {n_ratio:.0f}x from width {WIDTHS[0]} to {WIDTHS[-1]}; "
          f"the interpolated d90 changes by a factor {max(found) / min(found):.2f}")
""")

md(r"""
## Paper vs. here

The last cell prints the measured numbers beside the paper's, and one machine-readable `RESULTS` line.
""")

code(r"""
paper = {"MNIST, FC 784-200-200-10 (Li et al.)": (750, 199_210), "MNIST, LeNet (Li et al.)": (290, 44_426)}
print(f"{'':38s}{'d90':>8s}{'parameters':>13s}{'d90 / n':>10s}{'full acc':>10s}")
for k, (d, n) in paper.items():
    print(f"{k:38s}{d:8d}{n:13,d}{d / n:10.2%}{'':>10s}")
for name, r in results.items():
    label = f"{name}, MLP (here, {'quick' if QUICK else 'full'} mode)"
    d90 = r["d90"] if r["d90"] is not None else float("nan")
    print(f"{label:38s}{d90:8}{r['n_params']:13,d}{d90 / r['n_params']:10.2%}{r['baseline']:10.3f}")
rho = {k: float(np.corrcoef(np.argsort(np.argsort(r["dims"])), np.argsort(np.argsort(r["acc"])))[0, 1])
       for k, r in results.items()}
for k, r in results.items():
    print(f"{k}: Spearman correlation of accuracy with d {rho[k]:.2f}; accuracy {r['acc'][0]:.3f} at d = "
          f"{r['dims'][0]} ({r['acc'][0] / r['chance']:.1f}x chance {r['chance']:.2f}) -> {r['acc'][-1]:.3f} at d = "
          f"{r['dims'][-1]} ({r['acc'][-1] / r['baseline']:.1%} of full)")
    drops = [f"d = {d0} -> {d1}: {a0:.3f} -> {a1:.3f}"
             for d0, d1, a0, a1 in zip(r["dims"], r["dims"][1:], r["acc"], r["acc"][1:]) if a1 < a0]
    print(f"   monotone on the grid: {not drops}" + (f"; steps down: {'; '.join(drops)}" if drops else ""))
few = [(d, a) for d, a in zip(results["digits"]["dims"], results["digits"]["acc"]) if 100 <= d <= 500]
print("digits, a few hundred dimensions: " + ", ".join(
    f"d = {d}: {a / results['digits']['baseline']:.1%} of full" for d, a in few))
for w, r in widths.items():
    print(f"digits, width {w}: d90 = {r['d90']} (interpolated {r['d90_interp'] or float('nan'):.0f}) of "
          f"{r['n_params']:,} parameters")
print(f"total time {time.perf_counter() - T0:.0f} s")
print("RESULTS " + json.dumps({"quick": QUICK, "spearman": rho, "projection_spread": max(spread),
                              "projections": {"dims": cmp_dims, "acc": cmp, "spread": spread, "d90": cmp_d90,
                                              "seed0": seed0, "seed_diff": seed_diff, "target": target},
                              "widths": {str(w): r for w, r in widths.items()}, **{
    k: {key: r[key] for key in ("n_params", "baseline", "dims", "acc", "d90", "d90_interp", "chance")}
    for k, r in results.items()}}))
""")

md(r"""
## Takeaways

* Training in a random subspace of a few hundred dimensions already recovers most of the digits MLP's accuracy:
  the objective landscape has far fewer *relevant* directions than parameters, so random subspaces of modest size
  intersect the set of good solutions.
* MNIST-1D is harder for an MLP than digits (it was designed to reward spatial inductive biases), and its
  intrinsic dimension is correspondingly larger — still a small fraction of the parameters.
* d₉₀ is a property of the problem and the architecture family more than of the parameter count (Li et al.
  found it nearly constant across MLP widths); it also gives a compressed description of the trained network:
  θ₀ and P are regenerated from two seeds, only z (d numbers) must be stored.
""")


if __name__ == "__main__":
    main(notebook(cells), "14_intrinsic_dimension.ipynb")
