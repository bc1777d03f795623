"""Build notebooks/10_grokking.ipynb (run: python notebooks/src/10_grokking.py).

The notebook is written without outputs; ``--execute`` runs it in quick mode (WORKBENCH_QUICK=1) to check it.
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 10 · Grokking: modular addition generalises long after it is memorised

**Papers**
* A. Power, Y. Burda, H. Edwards, I. Babuschkin, V. Misra, *Grokking: Generalization Beyond Overfitting on Small
  Algorithmic Datasets*, 2022 (arXiv:2201.02177).
* N. Nanda, L. Chan, T. Lieberum, J. Smith, J. Steinhardt, *Progress Measures for Grokking via Mechanistic
  Interpretability*, ICLR 2023 (arXiv:2301.05217).
* Z. Liu, E. J. Michaud, M. Tegmark, *Omnigrok: Grokking Beyond Algorithmic Data*, ICLR 2023 (arXiv:2210.01117),
  for the role of the weight norm.

**Phenomenon.** A network trained on a fraction of the table a + b mod p fits its training pairs (100% training
accuracy) early, while its accuracy on the held-out pairs stays at chance; much later, under weight decay, the test
accuracy jumps to ~100% (*grokking*). Weight decay is what drives the late jump: without it the same budget ends
with a memorising network. Nanda et al. trace the jump to a Fourier-feature circuit that forms while weight decay
pulls the weights towards a lower-norm solution.

**Expected figure:** on a log step axis, training accuracy reaches 1 within tens of steps while test accuracy stays
near 0 for hundreds of steps and then climbs to ~1 with weight decay (and stays near 0 without it), with the weight
norm and the sharpness λ_max(H) of the same runs below.

**Setup.** Problem `modular-addition` (`workbench/problems/modular.py`): all p² pairs (a, b), a random
`train_fraction` of them for training, the embedding MLP (shared embedding of a and b, concatenated, one ReLU
layer), full-batch AdamW (β₂ = 0.98 as in Nanda et al.), probes `Eval` (train and test accuracy), `Norms`
(‖θ‖) and `Sharpness` (λ_max of the training-loss Hessian, Lanczos). The one-layer transformer of Nanda et al. is
the same problem with `model="transformer"` (set `BIG = True`; hours on a CPU, minutes on a GPU).

**Run time** on a CPU: full mode (p = 97, 40% of the table, 2500 steps, two runs, the sharpness every 125 steps)
took 60 s wall (118 s of CPU time, 2 threads) on a 2-core machine at load average 2; quick mode
(`WORKBENCH_QUICK=1`: p = 59, 1200 steps) took 116 s on the same machine when it was shared and busy. The last cell prints the time this run took.
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

import workbench as wb

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
BIG = False            # True: Nanda et al.'s transformer (p=113, 30%, d_model 128, 4 heads, MLP 512): slow on a CPU
warnings.simplefilter("ignore", category=RuntimeWarning)
if QUICK:
    torch.set_num_threads(1)

if BIG:
    P, FRAC, STEPS, LR, SHARP_EVERY = 113, 0.3, 20000, 1e-3, 200
    MODEL = dict(model="transformer", dim=128, heads=4, mlp_dim=512)
elif QUICK:
    P, FRAC, STEPS, LR, SHARP_EVERY = 59, 0.4, 1200, 1e-2, 100
    MODEL = dict(model="mlp", embed_dim=32, width=256)
else:
    P, FRAC, STEPS, LR, SHARP_EVERY = 97, 0.4, 2500, 1e-2, 125
    MODEL = dict(model="mlp", embed_dim=32, width=256)
WD = 1.0               # AdamW's decoupled weight decay: θ ← θ − lr·wd·θ each step
EVERY = 10
SEED = 0
T_START, CPU_START = time.perf_counter(), time.process_time()

prob = wb.problems.make("modular-addition", seed=SEED, p=P, train_fraction=FRAC, **MODEL)
print(prob.doc)
print(f"{prob.n_params:,} parameters; {len(prob.train)} training pairs, {len(prob.test)} test pairs; "
      f"chance accuracy 1/p = {1 / P:.3f}")
""")

md(r"""
## 1 · Two runs: with and without weight decay

Identical except for AdamW's weight decay (1.0 and 0). Every `EVERY` steps `Eval` measures loss and accuracy on
the whole training and test sets and `Norms` the Euclidean norm of all parameters; every `SHARP_EVERY` steps
`Sharpness` measures λ_max of the Hessian of the training loss (warm-started Lanczos on exact double-backward products, at most 30 iterations: once
the loss is ~0 the curvature falls to ~10⁻⁶ where float32 Hessian-vector products are too noisy to converge
tightly; such values are flagged in `sharpness_converged` and counted below).
""")

code(r"""
def probes():
    return [wb.probes.Eval(every=EVERY, split="both"), wb.probes.Norms(every=EVERY),
            wb.probes.Sharpness(every=SHARP_EVERY, tol=1e-2, max_iter=30, method="exact")]


runs = {}
for wd in (WD, 0.0):
    t0, c0 = time.perf_counter(), time.process_time()
    runs[wd] = wb.train(prob, "adamw", lr=LR, beta2=0.98, weight_decay=wd, steps=STEPS, seed=SEED,
                        probes=probes())
    rec = runs[wd].record
    print(f"weight decay {wd:g}: {runs[wd].status} in {time.perf_counter() - t0:.0f} s "
          f"({time.process_time() - c0:.0f} s CPU; Sharpness probe {float(rec.sharpness_seconds.sum()):.0f} s wall); "
          f"final train accuracy {float(rec.train_accuracy[-1]):.3f}, test accuracy {float(rec.test_accuracy[-1]):.3f}")
""")

md(r"""
## 2 · The figure

Log step axis (the first measurement, at step 0, is left out). Dotted vertical lines: the step at which the
weight-decay run first fits its whole training set (*memorisation*) and the step at which its test accuracy first
reaches 90% (*grokking*).
""")

code(r"""
def first_step(rec, var, level):
    '''First probe step at which `var` >= level (None if never).'''
    idx = np.flatnonzero(rec[var].values >= level)
    return None if idx.size == 0 else int(rec[rec[var].dims[0]].values[idx[0]])


rec = runs[WD].record
t_mem = first_step(rec, "train_accuracy", 1.0)
t_grok = first_step(rec, "test_accuracy", 0.9)

colors = {WD: "#d62728", 0.0: "#1f77b4"}
fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                    subplot_titles=("accuracy (solid: test, dashed: train)", "weight norm ‖θ‖",
                                    "sharpness λ_max(H) of the training loss"))
for wd, run in runs.items():
    r = run.record.isel(eval_step=slice(1, None), norms_step=slice(1, None), sharpness_step=slice(1, None))
    c, lab = colors[wd], f"weight decay {wd:g}"
    fig.add_scatter(x=r.eval_step, y=r.test_accuracy, name=f"test, {lab}", line=dict(color=c), row=1, col=1)
    fig.add_scatter(x=r.eval_step, y=r.train_accuracy, name=f"train, {lab}", line=dict(color=c, dash="dash"),
                    row=1, col=1)
    fig.add_scatter(x=r.norms_step, y=r.weight_norm, name=f"‖θ‖, {lab}", line=dict(color=c), showlegend=False,
                    row=2, col=1)
    fig.add_scatter(x=r.sharpness_step, y=r.sharpness, name=f"λ_max, {lab}", line=dict(color=c),
                    showlegend=False, row=3, col=1)
for t, name in ((t_mem, "memorised"), (t_grok, "grokked")):
    if t:
        for row in (1, 2, 3):
            fig.add_vline(x=t, line=dict(color="gray", dash="dot"), row=row, col=1)
        fig.add_annotation(x=np.log10(t), y=1.08, text=f"{name} (step {t})", showarrow=False, row=1, col=1)
fig.update_xaxes(type="log", title_text="training step (log scale)", row=3, col=1)
fig.update_xaxes(type="log")
fig.update_yaxes(title_text="accuracy", range=[-0.05, 1.15], row=1, col=1)
fig.update_yaxes(title_text="‖θ‖ (L2, all parameters)", row=2, col=1)
fig.update_yaxes(title_text="λ_max (loss / param²)", type="log", row=3, col=1)
fig.update_layout(height=850, width=950, legend=dict(orientation="h", y=-0.08), margin=dict(b=120),
                  title=f"Grokking: a + b mod {P}, {FRAC:.0%} of the table for training, AdamW lr {LR:g}")
fig.show()
""")

md(r"""
## 3 · What the runs measured

All claims in the text below are computed here from the records.
""")

code(r"""
def at(rec, var, step):
    '''Value of a probe variable at the probe step nearest to `step`.'''
    dim = rec[var].dims[0]
    i = int(np.argmin(np.abs(rec[dim].values - step)))
    return float(rec[var].values[i])


rec, rec0 = runs[WD].record, runs[0.0].record
t_mem0 = first_step(rec0, "train_accuracy", 1.0)
test_at_mem = at(rec, "test_accuracy", t_mem) if t_mem is not None else float("nan")
wn = rec.weight_norm.values
wn_steps = rec.norms_step.values
i_peak = int(np.argmax(wn[1:])) + 1
summary = {
    "memorised_step": t_mem, "test_acc_at_memorised": test_at_mem,
    "grokked_step": t_grok, "grok_delay_ratio": (t_grok / t_mem) if t_mem and t_grok else None,
    "final_test_acc": float(rec.test_accuracy[-1]), "final_train_acc": float(rec.train_accuracy[-1]),
    "nowd_memorised_step": t_mem0, "nowd_final_test_acc": float(rec0.test_accuracy[-1]),
    "nowd_max_test_acc": float(rec0.test_accuracy.max()),
    "wn_init": float(wn[0]), "wn_at_memorised": at(rec, "weight_norm", t_mem) if t_mem else None,
    "wn_peak": float(wn[i_peak]), "wn_peak_step": int(wn_steps[i_peak]),
    "wn_at_grokked": at(rec, "weight_norm", t_grok) if t_grok else None, "wn_final": float(wn[-1]),
    "nowd_wn_final": float(rec0.weight_norm[-1]),
    "sharp_at_memorised": at(rec, "sharpness", t_mem) if t_mem else None,
    "sharp_at_grokked": at(rec, "sharpness", t_grok) if t_grok else None,
    "sharp_final": float(rec.sharpness[-1]), "nowd_sharp_final": float(rec0.sharpness[-1]),
    "sharp_unconverged": int((rec.sharpness_converged == 0).sum()),
    "nowd_sharp_unconverged": int((rec0.sharpness_converged == 0).sum()),
    "sharp_peak": float(rec.sharpness.max()), "sharp_peak_step": int(rec.sharpness_step[int(rec.sharpness.argmax())]),
    "nowd_sharp_max_after_mem": float(rec0.sharpness.where(rec0.sharpness_step > (t_mem0 or 0)).max()),
    "seconds": {str(k): float(r.record.wall_time[-1]) for k, r in runs.items()},
}
print(f"weight decay {WD:g}: training accuracy first 100% at step {t_mem}, when test accuracy was "
      f"{test_at_mem:.3f}; test accuracy first >= 90% at step {t_grok} "
      f"({summary['grok_delay_ratio'] or float('nan'):.0f}x later); final test accuracy "
      f"{summary['final_test_acc']:.3f}")
print(f"no weight decay: training accuracy first 100% at step {t_mem0}; best test accuracy "
      f"{summary['nowd_max_test_acc']:.3f}, final {summary['nowd_final_test_acc']:.3f}")
print(f"weight norm (wd {WD:g}): init {summary['wn_init']:.1f}, at memorisation {summary['wn_at_memorised'] or float('nan'):.1f}, "
      f"peak {summary['wn_peak']:.1f} at step {summary['wn_peak_step']}, at grokking "
      f"{summary['wn_at_grokked'] or float('nan'):.1f}, final {summary['wn_final']:.1f}; "
      f"without weight decay final {summary['nowd_wn_final']:.1f}")
print(f"sharpness (wd {WD:g}): at memorisation {summary['sharp_at_memorised'] or float('nan'):.3g}, at grokking "
      f"{summary['sharp_at_grokked'] or float('nan'):.3g}, final {summary['sharp_final']:.3g}; "
      f"without weight decay final {summary['nowd_sharp_final']:.3g}; largest after memorisation without weight decay "
      f"{summary['nowd_sharp_max_after_mem']:.3g}")
print(f"sharpness peak (wd {WD:g}) {summary['sharp_peak']:.3g} at step {summary['sharp_peak_step']}; Lanczos not "
      f"converged at {summary['sharp_unconverged']} of {rec.sharpness.size} calls (no decay: "
      f"{summary['nowd_sharp_unconverged']} of {rec0.sharpness.size})")
""")

md(r"""
**Reading the numbers.** The sentences below are computed from the two records (in whichever mode this notebook
ran), so they say what this run did rather than what it was expected to do.
""")

code(r"""
S = summary
def verdict(ok):
    return "yes" if ok else "NO"

mem_ok = t_mem is not None and test_at_mem <= 0.5
grok_ok = t_grok is not None and t_mem is not None and t_grok >= 3 * t_mem and S["final_test_acc"] >= 0.9
nowd_ok = S["nowd_final_test_acc"] < 0.5 * S["final_test_acc"]
wn_ok = S["wn_final"] < 0.97 * S["wn_peak"] and (t_grok is None or S["wn_peak_step"] < t_grok)
print(f"1. memorisation first: training accuracy reached 100% at step {t_mem} while test accuracy was "
      f"{test_at_mem:.3f} (chance {1 / P:.3f}) -> {verdict(mem_ok)}")
print(f"2. grokking later: test accuracy reached 90% at step {t_grok}, "
      f"{(t_grok / t_mem) if (t_grok and t_mem) else float('nan'):.1f}x the memorisation step, and ends at "
      f"{S['final_test_acc']:.3f} -> {verdict(grok_ok)}")
print(f"3. no jump without weight decay: the run without it memorised at step {t_mem0} and ends at test accuracy "
      f"{S['nowd_final_test_acc']:.3f} (best {S['nowd_max_test_acc']:.3f}) -> {verdict(nowd_ok)}")
print(f"4. the weight norm falls across the jump: from its peak {S['wn_peak']:.1f} (step {S['wn_peak_step']}) to "
      f"{S['wn_final']:.1f} at the end, while without weight decay it ends at {S['nowd_wn_final']:.1f} -> "
      f"{verdict(wn_ok)}")
sharp_trend = "falls" if S["sharp_final"] < S["sharp_peak"] / 3 else "does not fall much"
print(f"5. sharpness (with weight decay) peaks at {S['sharp_peak']:.3g} (step {S['sharp_peak_step']}) and {sharp_trend} "
      f"to {S['sharp_final']:.3g} by the end; without weight decay it ends at {S['nowd_sharp_final']:.3g} "
      f"({S['sharp_unconverged']} + {S['nowd_sharp_unconverged']} Lanczos calls flagged unconverged, at losses ~0)")
""")

md(r"""
## 4 · Measured against the papers
""")

code(r"""
rows = [
    ("train acc. reaches 100% long before test acc. jumps",
     "yes: ~10³ vs ~10⁵ steps (Power et al. Fig. 1, 50% of a/b mod 97)",
     f"step {t_mem} vs step {t_grok}"),
    ("test accuracy when train accuracy first hits 100%", "≈ chance", f"{test_at_mem:.3f} (chance {1 / P:.3f})"),
    ("final test accuracy with weight decay", "≈ 1.0", f"{summary['final_test_acc']:.3f}"),
    ("final test accuracy without weight decay (same budget)", "stays low (Power et al. Fig. 2: wd helps most)",
     f"{summary['nowd_final_test_acc']:.3f}"),
    ("weight norm: memorisation → peak → end (with wd)",
     "falls during circuit formation and cleanup (Nanda et al. Fig. 7)",
     f"{summary['wn_at_memorised'] or float('nan'):.1f} → {summary['wn_peak']:.1f} → {summary['wn_final']:.1f}"),
    ("weight norm at the end without weight decay", "keeps growing", f"{summary['nowd_wn_final']:.1f}"),
]
w = max(len(r[0]) for r in rows)
print(f"{'quantity':<{w}}  {'paper':<62}  measured")
for q, paper, ours in rows:
    print(f"{q:<{w}}  {paper:<62}  {ours}")

print(f"\nnotebook run time: {time.perf_counter() - T_START:.0f} s wall, {time.process_time() - CPU_START:.0f} s CPU "
      f"({torch.get_num_threads()} thread(s))")
results = {"p": P, "train_fraction": FRAC, "steps": STEPS, "quick": QUICK, **summary}
print("RESULTS " + json.dumps(results))
""")


if __name__ == "__main__":
    main(notebook(cells), "10_grokking.ipynb")
