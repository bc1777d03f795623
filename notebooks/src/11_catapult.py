"""Build notebooks/11_catapult.ipynb (run: python notebooks/src/11_catapult.py).

The notebook is written without outputs; ``--execute`` runs it in quick mode (WORKBENCH_QUICK=1) to check it.
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 11 · The catapult phase: lazy, catapult and divergent gradient descent

**Paper.** A. Lewkowycz, Y. Bahri, E. Dyer, J. Sohl-Dickstein, G. Gur-Ari, *The large learning rate phase of deep
learning: the catapult mechanism*, 2020 (arXiv:2003.02218).

**Phenomenon.** Train a wide network with squared loss by full-batch gradient descent at step size η, and let λ₀ be
the sharpness (top Hessian eigenvalue) at initialisation. Lewkowycz et al. find three phases along ηλ₀:

* **lazy** (ηλ₀ < 2): the loss falls monotonically and the curvature barely moves — the network behaves like its
  linearisation;
* **catapult** (2 < ηλ₀ < η_max λ₀): the loss first *grows* (exponentially, along the top eigendirection), the
  curvature drops until λ < 2/η, and training then converges in a flatter region; the theory for a two-layer
  linear network gives η_max λ₀ = 4, and ReLU networks reach ≈ 12 in the paper's experiments;
* **divergent** (ηλ₀ > η_max λ₀): the curvature cannot fall fast enough and the loss blows up.

**Expected figure.** A phase diagram over ηλ₀ in which every run left of 2 is lazy, the runs between 2 and an upper
bound (≈ 4 for the two-layer *linear* network, larger for the two-layer *ReLU* network) spike and end with
sharpness below 2/η, and every run beyond the bound diverges.

**Setup.** `teacher-student` regression (16 inputs, a random tanh teacher with 8 hidden units), a student with one
wide hidden layer (linear or ReLU), loss mean((f − y)²), PyTorch's default (standard) parametrisation, full-batch
GD. The lr grid is a multiple of each network's own λ₀, measured with `wb.curvature`; the grid runs through
`wb.sweep` (a Dask `LocalCluster` in full mode, in-process in quick mode).

**Run time** on a 2-core CPU (the notebook prints its own at the end): full mode (width 512, 256 examples, 300
steps, 2 activations × 3 seeds × 17 step sizes = 102 runs) 1–3.5 minutes here depending on the machine's load
(two runs printed 70 s and 192 s); quick mode (`WORKBENCH_QUICK=1`: width 256, 128 examples, 200 steps, one
seed, 9 step sizes) ≈ 20–40 s.
""")

code(r"""
import json
import os
import time

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch.func import functional_call, jvp

import workbench as wb
from workbench.probes import Probe, Sharpness, Var

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
torch.set_num_threads(1)
T_START = time.perf_counter()

WIDTH, N_TRAIN, STEPS = (256, 128, 200) if QUICK else (512, 256, 300)
ACTIVATIONS = ("linear", "relu")
SEEDS = (0,) if QUICK else (0, 1, 2)
# step sizes as multiples of 1/λ0 (the stability line ηλ0 = 2 sits between 1.9 and 2.1)
FACTORS = ([1.0, 1.5, 1.9, 2.5, 3.0, 3.5, 5.0, 6.0, 9.0] if QUICK else
           [1.0, 1.5, 1.8, 1.9, 2.1, 2.3, 2.5, 3.0, 3.5, 3.8, 4.2, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0])
USE_DASK = not QUICK          # a local Dask cluster pays off for the full grid; quick mode runs in-process


def options(activation):
    return dict(dim=16, teacher_width=8, width=WIDTH, depth=1, activation=activation, n_train=N_TRAIN, n_test=64)


prob = wb.problems.make("teacher-student", seed=0, **options("relu"))
print("quick mode" if QUICK else "full mode", "|", prob.describe().splitlines()[0], f"| {prob.n_params:,} parameters,",
      f"{len(prob.train)} training examples, {STEPS} GD steps per run")
""")

md(r"""
## 1 · The initial sharpness λ₀

λ₀ = λ_max(∇²L(θ₀)) on the whole training set, by Lanczos on Hessian-vector products
(`wb.curvature.hessian` + `wb.curvature.eigs`), for each activation and initialisation seed (the problem seed draws
the data, the teacher and the student's initial weights).
""")

code(r"""
LAM0 = {}
for act in ACTIVATIONS:
    for seed in SEEDS:
        p = wb.problems.make("teacher-student", seed=seed, **options(act))
        res = wb.curvature.eigs(wb.curvature.hessian(p.model, p.loss, p.data()), k=1, tol=1e-4)
        LAM0[act, seed] = float(res.values[0])
        print(f"{act:6s} seed {seed}: λ0 = {LAM0[act, seed]:7.3f}  (residual {float(res.residuals[0]):.1e}, "
              f"converged {bool(res.converged)}) → η = 2/λ0 = {2 / LAM0[act, seed]:.4f}")
""")

md(r"""
## 2 · The phase diagram: a sweep over ηλ₀

For each activation and seed, one `wb.sweep` over η = f/λ₀ for the factors f in `FACTORS`. A `Sharpness` probe
with `every=STEPS` measures λ_max at step 0 (a check of λ₀) and at the end of each run that did not diverge.
Every run is then classified from its own record:

* **diverged** — the run loop stopped it (non-finite or exploding loss) or it ended with a loss above its
  initial loss;
* **catapult** — it converged, but its loss *rose* on the way: max_t L_t / min_{s<t} L_s > 1.05;
* **lazy** — it converged with a loss that never rose (by more than 5%) above its running minimum.

The spike height (max_t L_t / L_0) and the final sharpness in units of the stability line, λ_T / (2/η), are kept
beside the label.
""")

code(r"""
cluster = client = None
scheduler = "synchronous"
if USE_DASK:
    from dask.distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    scheduler = cluster.scheduler_address
    print("Dask cluster:", scheduler, "with", len(cluster.workers), "single-threaded workers")

PHASES = ("lazy", "catapult", "diverged")


def summarise(rec, lam0):
    # per-run quantities of one sweep record (dimension lr), in the order of FACTORS
    out = {k: [] for k in ("phase", "peak", "rise", "final_loss", "sharp_ratio", "lam_T_over_lam0", "lam_step0")}
    for i, f in enumerate(FACTORS):
        loss = rec.loss.isel(lr=i).values
        loss = loss[np.isfinite(loss)]
        L0 = loss[0]
        running_min = np.minimum.accumulate(loss)
        rise = float(np.max(loss[1:] / running_min[:-1])) if loss.size > 1 else float("nan")
        converged = str(rec.status.isel(lr=i).item()) == "finished" and loss[-1] < L0
        lam = rec.sharpness.isel(lr=i).values
        lam_T = float(lam[np.isfinite(lam)][-1]) if converged else float("nan")
        out["phase"].append("diverged" if not converged else ("catapult" if rise > 1.05 else "lazy"))
        out["peak"].append(float(np.max(loss[1:]) / L0))
        out["rise"].append(rise)
        out["final_loss"].append(float(loss[-1] / L0))
        out["sharp_ratio"].append(lam_T * (f / lam0) / 2)      # λ_T / (2/η)
        out["lam_T_over_lam0"].append(lam_T / lam0)
        out["lam_step0"].append(float(lam[0]))
    return out


SUMMARY = {}
t0 = time.perf_counter()
for act in ACTIVATIONS:
    for seed in SEEDS:
        lam0 = LAM0[act, seed]
        rec = wb.sweep("teacher-student", grid={"lr": [f / lam0 for f in FACTORS]}, problem_options=options(act),
                       problem_seed=seed, train={"steps": STEPS},
                       probes=[{"type": "Sharpness", "every": STEPS}], scheduler=scheduler, progress=True)
        SUMMARY[act, seed] = s = summarise(rec, lam0)
        print(f"{act:6s} seed {seed}: " + "  ".join(f"{f:g}:{ph[0].upper()}" for f, ph in zip(FACTORS, s["phase"])))
        print(f"{'':15s}λ at step 0 of the sweep runs / λ0 from section 1: "
              f"{min(s['lam_step0']) / lam0:.4f} … {max(s['lam_step0']) / lam0:.4f}")
if client is not None:
    client.close()
    cluster.close()
print(f"{len(SUMMARY) * len(FACTORS)} runs in {time.perf_counter() - t0:.0f} s  (L = lazy, C = catapult, D = diverged)")
""")

code(r"""
COLORS = {"lazy": "#1f77b4", "catapult": "#ff7f0e", "diverged": "#d62728"}
SYMBOLS = {"lazy": "circle", "catapult": "diamond", "diverged": "x"}
rows = [(act, seed) for act in ACTIVATIONS for seed in SEEDS]
labels = [f"{act} · seed {seed}" for act, seed in rows]
fig = go.Figure()
for ph in PHASES:
    xs, ys, texts = [], [], []
    for (act, seed), lab in zip(rows, labels):
        s = SUMMARY[act, seed]
        for i, f in enumerate(FACTORS):
            if s["phase"][i] == ph:
                xs.append(f)
                ys.append(lab)
                texts.append(f"ηλ0={f:g}<br>max L / L0 = {s['peak'][i]:.3g}<br>λ_T / (2/η) = {s['sharp_ratio'][i]:.2f}")
    fig.add_scatter(x=xs, y=ys, mode="markers", name=ph, text=texts, hoverinfo="text",
                    marker=dict(color=COLORS[ph], symbol=SYMBOLS[ph], size=14, line=dict(width=1, color="white")))
fig.add_vline(x=2, line_dash="dash", line_color="gray")
fig.add_vline(x=4, line_dash="dot", line_color="gray")
for x, text in ((2, "ηλ0 = 2"), (4, "4: theory's bound, 2-layer linear")):
    # annotations on a log axis take log10 coordinates
    fig.add_annotation(x=np.log10(x), y=1.0, yref="paper", yanchor="bottom", text=text, showarrow=False)
fig.update_xaxes(type="log", title_text="η·λ0 (step size × initial sharpness, dimensionless)",
                 tickvals=[1, 1.5, 2, 3, 4, 6, 8, 12], range=[np.log10(0.85), np.log10(max(FACTORS) * 1.15)])
fig.update_yaxes(title_text="network · initialisation seed", autorange="reversed")
fig.update_layout(title="Phase diagram of full-batch GD (teacher-student, MSE)", height=260 + 45 * len(rows),
                  width=1000, legend=dict(title="phase", x=1.02, y=1), margin=dict(t=100, b=60))
fig.show()
""")

md(r"""
The same runs, quantitatively. Left: the largest loss reached relative to the initial loss — below 1 in the lazy
phase, then a spike that grows quickly once ηλ₀ passes 2. Right: the final sharpness relative to λ₀ with the
stability line λ = 2/η drawn as 2/(ηλ₀) (dashed): lazy runs stay on λ_T ≈ λ₀ (a horizontal line at 1), catapult runs
end *below* the dashed line — the curvature was thrown down to where GD at that step size is stable.
""")

code(r"""
fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                    subplot_titles=("loss spike: max_t L_t / L_0", "final sharpness λ_T / λ0 (converged runs)"))
ACT_COLORS = {"linear": "#2ca02c", "relu": "#9467bd"}
for act in ACTIVATIONS:
    for j, seed in enumerate(SEEDS):
        s = SUMMARY[act, seed]
        kw = dict(legendgroup=act, showlegend=j == 0, line=dict(color=ACT_COLORS[act], width=1),
                  marker=dict(color=ACT_COLORS[act], size=6))
        peak = [p if ph != "diverged" else None for p, ph in zip(s["peak"], s["phase"])]
        fig.add_scatter(x=FACTORS, y=peak, mode="lines+markers", name=f"{act}", row=1, col=1, **kw)
        fig.add_scatter(x=FACTORS, y=s["lam_T_over_lam0"], mode="lines+markers", name=act, row=1, col=2,
                        **{**kw, "showlegend": False})
xs = np.geomspace(min(FACTORS), max(FACTORS), 100)
fig.add_scatter(x=xs, y=2 / xs, mode="lines", name="stability line 2/(ηλ0)", line=dict(color="black", dash="dash"),
                row=1, col=2)
fig.add_hline(y=1, line_dash="dot", line_color="gray", row=1, col=1)
fig.update_xaxes(type="log", title_text="η·λ0", tickvals=[1, 1.5, 2, 3, 4, 6, 8, 12])
fig.update_yaxes(type="log", title_text="max loss / initial loss", row=1, col=1)
fig.update_yaxes(type="log", title_text="λ_T / λ0", row=1, col=2)
fig.update_layout(height=430, width=1050, legend=dict(orientation="h", y=-0.25), margin=dict(b=110))
fig.show()
""")

md(r"""
## 3 · Loss and sharpness curves in each phase

One run per phase and activation (seed 0): ηλ₀ = 1.5 (lazy), 3 (catapult), and the smallest factor of the grid
at which that network diverged. The `Sharpness` probe runs at every step with its default `method="auto"`, which on
these networks is finite-difference Hessian-vector products reusing the training step's gradient, refined by
warm-started Lanczos / Rayleigh-Ritz until the residual is ≤ 1% of λ (the method is printed below). The sharpness is
drawn in units of the stability line, λ_t / (2/η): the line sits at 1.

The catapult runs carry a second probe, `StepResponse` (defined below), which records at every step

* λ_GN, the top eigenvalue of the Gauss-Newton matrix G = (2/n) JᵀJ (`wb.curvature.ggn`; J the Jacobian of the
  outputs). The Hessian is H = G + (2/n) Σᵢ rᵢ ∇²fᵢ with rᵢ = fᵢ − yᵢ: G is the part that drives the residual in the
  linearised dynamics r ← (I − η(2/n)JJᵀ) r, and the residual term grows with the loss;
* the loss the step would give if the outputs moved linearly, L(f − ηJg) (g the gradient, Jg by `torch.func.jvp`),
  to compare with the loss the step actually gives.
""")

code(r"""
class StepResponse(Probe):
    # at θ_t: the Gauss-Newton sharpness λ_max(G) and the loss of the linearised step, L(f − η J g)
    default_name = "response"

    def setup(self, ctx):
        self._v = None

    def variables(self, ctx):
        return {"gn_sharpness": Var("Gauss-Newton sharpness", "λ_max of the GGN (2/n) JᵀJ on the training set"),
                "linear_next_loss": Var("linearised next loss", "training loss at the outputs f − η J g")}

    def measure(self, ctx):
        x, y = ctx.full_batch("train")
        res = wb.curvature.eigs(wb.curvature.ggn(ctx.model, ctx.problem.loss, (x, y)), k=1, tol=1e-3, v0=self._v)
        self._v = res.vectors[:, 0]
        g, lin = ctx.flat_grad(), float("nan")
        if g is not None:                       # None at the final call, after the last step
            named = [(n, q.detach()) for n, q in ctx.model.named_parameters() if q.requires_grad]
            prm = tuple(q for _, q in named)
            tangents = tuple(t.view_as(q) for t, q in zip(torch.split(g, [q.numel() for q in prm]), prm))
            out, Jg = jvp(lambda *ps: functional_call(ctx.model, {n: q for (n, _), q in zip(named, ps)}, (x,)),
                          prm, tangents)
            with torch.no_grad():
                lin = float(ctx.problem.loss_fn(out - ctx.lr * Jg, y))
        return {"gn_sharpness": float(res.values[0]), "linear_next_loss": lin}


CURVES, RUNS = {}, {}
EVERY = 1
for act in ACTIVATIONS:
    s = SUMMARY[act, 0]
    first_div = next(f for f, ph in zip(FACTORS, s["phase"]) if ph == "diverged")
    p = wb.problems.make("teacher-student", seed=0, **options(act))
    for f in (1.5, 3.0, first_div):
        lr = f / LAM0[act, 0]
        probes = [Sharpness(every=EVERY)] + ([StepResponse(every=1)] if f == 3.0 else [])
        RUNS[act, f] = wb.train(p, "gd", lr=lr, steps=STEPS, probes=probes, progress=True)
        CURVES[act, f] = RUNS[act, f].record
print("Sharpness probe:", CURVES["linear", 3.0].attrs["sharpness_method_rule"])

fig = make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.09, horizontal_spacing=0.09,
                    subplot_titles=[f"{act}: training loss" if k == 0 else f"{act}: sharpness λ_t / (2/η)"
                                    for act in ACTIVATIONS for k in (0, 1)])
for r, act in enumerate(ACTIVATIONS, start=1):
    for (a, f), rec in CURVES.items():
        if a != act:
            continue
        ph = SUMMARY[act, 0]["phase"][FACTORS.index(f)]
        kw = dict(line=dict(color=COLORS[ph], dash="solid" if act == "relu" else "dot"), legendgroup=f"{act}{f}")
        lr = f / LAM0[act, 0]
        fig.add_scatter(x=rec.step, y=rec.loss, name=f"{act}, ηλ0 = {f:g} ({ph})", row=r, col=1, **kw)
        fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness * lr / 2, row=r, col=2, name=ph,
                        **{**kw, "showlegend": False})
        if "gn_sharpness" in rec:
            fig.add_scatter(x=rec.response_step, y=rec.gn_sharpness * lr / 2, row=r, col=2,
                            name=f"{act}, ηλ0 = {f:g}: Gauss-Newton λ_GN / (2/η)", legendgroup=f"{act}{f}gn",
                            line=dict(color=COLORS[ph], dash="dashdot", width=1))
    fig.add_hline(y=1, line_dash="dash", line_color="black", row=r, col=2)
    fig.update_yaxes(type="log", title_text="loss", row=r, col=1)
    fig.update_yaxes(type="log", title_text="λ_t · η / 2", row=r, col=2)
fig.update_xaxes(title_text="GD step", row=2)
fig.update_layout(height=700, width=1050, legend=dict(orientation="h", y=-0.12), margin=dict(b=100))
fig.show()

for (act, f), rec in CURVES.items():
    loss = rec.loss.values
    lr = f / LAM0[act, 0]
    lam = rec.sharpness.values
    t_peak = int(np.argmax(loss))
    print(f"{act:6s} ηλ0={f:4g}: status {rec.attrs['status']:8s} steps {rec.sizes['step']:3d}  "
          f"L0 {loss[0]:.3g}  max L {loss.max():.3g} at step {t_peak}  final L {loss[-1]:.3g}  "
          f"λ/(2/η): start {lam[0] * lr / 2:.2f}, end {lam[-1] * lr / 2:.2f}")

# the catapult runs step by step: when does the loss turn around, and when does λ cross 2/η?
CATAPULT = {}
print("\ncatapult runs, ηλ0 = 3 (λ = Hessian λ_max, λ_GN = Gauss-Newton λ_max, both in units of 2/η)")
for act in ACTIVATIONS:
    rec, lr = CURVES[act, 3.0], 3.0 / LAM0[act, 0]
    loss = rec.loss.values
    T = len(loss)
    assert (rec.sharpness_step.values[:T] == rec.step.values).all() and (rec.response_step.values[:T] == rec.step.values).all()
    lam = rec.sharpness.values[:T] * lr / 2
    gn = rec.gn_sharpness.values[:T] * lr / 2
    lin = rec.linear_next_loss.values[:T]
    t_peak = int(np.argmax(loss))
    t_cross = int(np.argmax(lam < 1))                   # first step with λ_t < 2/η
    t_cross_gn = int(np.argmax(gn < 1))
    maxima = [t for t in range(1, min(t_cross, T - 2) + 1) if loss[t] >= loss[t - 1] and loss[t] >= loss[t + 1]]
    growth_after = float(np.max(loss[t_cross + 1:] / loss[t_cross:-1]))
    # the first local minimum of the loss after the peak (the end of the first spike), or the last step
    t_after = next((t for t in range(t_peak + 1, T - 1) if loss[t] <= loss[t - 1] and loss[t] <= loss[t + 1]), T - 1)
    CATAPULT[act] = c = dict(peak_step=t_peak, peak_over_L0=float(loss[t_peak] / loss[0]), cross_step=t_cross,
                             gn_cross_step=t_cross_gn, ratio_at_peak=float(lam[t_peak]),
                             gn_ratio_at_peak=float(gn[t_peak]), next_over_peak=float(loss[t_peak + 1] / loss[t_peak]),
                             linear_next_over_peak=float(lin[t_peak] / loss[t_peak]), loss_maxima=maxima,
                             max_growth_after_cross=growth_after, end_ratio=float(lam[-1]),
                             gn_ratio_start=float(gn[0]), after_first_step=t_after,
                             gn_ratio_after_first=float(gn[t_after]))
    print(f"{act}: loss peak at step {t_peak} (max L / L0 = {c['peak_over_L0']:.3g}); there λ/(2/η) = "
          f"{c['ratio_at_peak']:.3f}, λ_GN/(2/η) = {c['gn_ratio_at_peak']:.3f}")
    print(f"  the step at the peak: next loss / peak loss = {c['next_over_peak']:.3f} actual, "
          f"{c['linear_next_over_peak']:.3f} if the outputs moved linearly")
    print(f"  the first spike moves λ_GN/(2/η) from {c['gn_ratio_start']:.3f} (step 0) to "
          f"{c['gn_ratio_after_first']:.3f} (step {t_after}: "
          + ("the first loss minimum after the peak)" if t_after < T - 1 else
             "the last step; the loss falls monotonically after the peak)"))
    gap = t_cross - t_peak
    print(f"  λ first below 2/η at step {t_cross} ({gap} step{'' if gap == 1 else 's'} after the peak), λ_GN at step "
          f"{t_cross_gn}; local maxima of the loss up to then (step: L / L0): "
          + ", ".join(f"{t}: {loss[t] / loss[0]:.3g}" for t in maxima))
    print(f"  from step {t_cross} on: largest L_t+1 / L_t = {growth_after:.4f}; λ/(2/η) at the end {c['end_ratio']:.2f}")
""")

md(r"""
In the lazy runs the loss curve is smooth and the sharpness line is flat. In the catapult runs the loss climbs for
only a handful of steps (the printed peak step) — the residual along the top eigenvector grows by |1 − ηλ| > 1 per
step — and it turns around while the Hessian's λ_t is still *above* 2/η (printed: λ/(2/η) at the peak). What ends
the first growth differs between the two networks:

* **ReLU**: at the peak the Gauss-Newton curvature λ_GN is already below 2/η, so even the linearised step lowers the
  loss (printed); the Hessian's λ_max, whose residual term is large at the peak loss (printed max L / L₀), follows
  within a step or two. That one spike throws the curvature far below the line (printed: λ_GN/(2/η) after it and
  λ/(2/η) at the end).
* **linear**: λ_GN is above 2/η at the peak too, and the linearised step would raise the loss further, but the
  actual step lowers it (both printed). This network's output is bilinear in (v, W), so the difference between the
  two is exactly the step's η² term. In the paper's solvable model, a two-layer linear network f = vᵀu/√n on one
  example (take target 0 and loss f²/2; λ = (‖u‖² + ‖v‖²)/n), one GD step gives exactly
  f_{t+1} = f_t (1 − ηλ_t + η² f_t²/n) and λ_{t+1} = λ_t − η f_t² (4 − ηλ_t)/n: a large f pulls the growth factor
  back inside (−1, 1) while ηλ_t > 2. Here the
  first spike leaves λ_GN above 2/η (printed), so the loss falls and rises again in smaller bounces (the printed
  loss maxima), each lowering the curvature further, and λ_t crosses 2/η long after the first peak (55 steps later
  in full mode).

For both networks, crossing 2/η ends the catapult: from that step on the loss stops growing (printed: the largest
L_{t+1}/L_t from the crossing on, 1.0000 or below) and it converges. In the divergent runs the sharpness does not come down in
time and the loss explodes until the run loop stops the run. The numbers below are computed from the sweep.
""")

md(r"""
### Where does the ReLU network's curvature go?

The output layer enters f linearly, f = vᵀa(x) + c with a(x) = relu(W₁x + b₁), so its block of the Hessian of
L = mean (f − y)² is exactly (2/n) Σ a(x)a(x)ᵀ, with trace 2·mean‖a(x)‖². Below: that trace (in units of λ₀), the
fraction of (unit, example) pairs that are active, and the units that are off on every training example, at
initialisation and after training at ηλ₀ = 1.5, 3 and the largest catapult factor of the seed-0 sweep.
""")

code(r"""
x_train, _ = wb.problems.make("teacher-student", seed=0, **options("relu")).data()


def activation_stats(model):
    with torch.no_grad():
        h = model[0](x_train)                       # pre-activations W1 x + b1, shape (n, width)
        a = torch.relu(h)
        return {"gn_trace": float(2 * (a ** 2).sum(1).mean()), "active": float((h > 0).float().mean()),
                "dead": float((h <= 0).all(0).float().mean())}


lam0 = LAM0["relu", 0]
f_max = max(f for f, ph in zip(FACTORS, SUMMARY["relu", 0]["phase"]) if ph == "catapult")
p = wb.problems.make("teacher-student", seed=0, **options("relu"))
models = {"init": p.model, 1.5: RUNS["relu", 1.5].model, 3.0: RUNS["relu", 3.0].model,
          f_max: wb.train(p, "gd", lr=f_max / lam0, steps=STEPS, progress=False).model}
ACT_STATS = {}
print(f"{'ReLU, seed 0':>14s} {'2·mean‖a‖² / λ0':>16s} {'active pairs':>13s} {'dead units':>11s}")
for key, m in models.items():
    st = ACT_STATS[str(key)] = activation_stats(m)
    label = key if key == "init" else f"ηλ0 = {key:g}"
    print(f"{label:>14s} {st['gn_trace'] / lam0:16.2f} {st['active']:13.1%} {st['dead']:11.1%}")
""")

md(r"""
At ηλ₀ = 1.5 nothing moves. The catapult at 3 shrinks the hidden activations (fewer active pairs, smaller
‖a‖²), which lowers the output-layer curvature without killing units; at the largest surviving step size a large
share of the units ends up off on every example — the network gives up capacity to become flat enough (those runs
also end at a higher training loss: `final_loss` in the RESULTS line is the final loss over the initial loss).
""")

code(r"""
def bracket(phases, lo_phase, hi_phase):
    # (largest factor in lo_phase, smallest factor in hi_phase) of one seed's row of phases
    lo = max((f for f, ph in zip(FACTORS, phases) if ph == lo_phase), default=float("nan"))
    hi = min((f for f, ph in zip(FACTORS, phases) if ph == hi_phase), default=float("nan"))
    return [lo, hi]


def ordered(phases):
    idx = [PHASES.index(p) for p in phases]
    return all(a <= b for a, b in zip(idx, idx[1:]))


PAPER_UPPER = {"linear": "4 (theory, 2-layer linear net)", "relu": "≈ 12 (experiments, ReLU nets)"}
results = {"factors": FACTORS, "seeds": list(SEEDS), "steps": STEPS, "width": WIDTH, "activations": {}}
print("boundaries per seed (last factor of one phase … first factor of the next)")
print(f"{'':8s}{'lazy→catapult':>24s} {'paper':>6s}   {'catapult→diverged':>24s}  paper")
for act in ACTIVATIONS:
    lc = [bracket(SUMMARY[act, s]["phase"], "lazy", "catapult") for s in SEEDS]
    cd = [bracket(SUMMARY[act, s]["phase"], "catapult", "diverged") for s in SEEDS]
    fmt = lambda br: ", ".join(f"{a:g}…{b:g}" for a, b in br)
    print(f"{act:8s}{fmt(lc):>24s} {'2':>6s}   {fmt(cd):>24s}  {PAPER_UPPER[act]}")
    results["activations"][act] = {k: [SUMMARY[act, s][k] for s in SEEDS]
                                   for k in ("phase", "peak", "rise", "final_loss", "sharp_ratio", "lam_T_over_lam0")}
    results["activations"][act].update(lam0=[LAM0[act, s] for s in SEEDS], lazy_to_catapult=lc,
                                       catapult_to_diverged=cd)
results["relu_activation_stats"] = ACT_STATS
results["catapult_curves"] = CATAPULT
print()
for act in ACTIVATIONS:
    cat = [(f, SUMMARY[act, s]["peak"][i], SUMMARY[act, s]["sharp_ratio"][i]) for s in SEEDS
           for i, f in enumerate(FACTORS) if SUMMARY[act, s]["phase"][i] == "catapult"]
    lazy = [SUMMARY[act, s]["lam_T_over_lam0"][i] for s in SEEDS for i in range(len(FACTORS))
            if SUMMARY[act, s]["phase"][i] == "lazy"]
    spiked = [f for f, pk, _ in cat if pk > 1]
    low_spike = sorted({f for f, pk, _ in cat if pk <= 1})
    print(f"{act}: phases in the order lazy → catapult → diverged along η for every seed: "
          f"{all(ordered(SUMMARY[act, s]['phase']) for s in SEEDS)}")
    print(f"  lazy runs: λ_T / λ0 between {min(lazy):.3f} and {max(lazy):.3f} (sharpness ~ constant)")
    print(f"  catapult runs: {len(cat)}; final sharpness below 2/η in {sum(r < 1 for _, _, r in cat)} "
          f"(λ_T / (2/η) from {min(r for *_, r in cat):.2f} to {max(r for *_, r in cat):.2f}); loss spiked above "
          f"its initial value in {len(spiked)} (max L / L0 up to {max(pk for _, pk, _ in cat):.3g})"
          + (f"; the others, at ηλ0 = {', '.join(map(str, low_spike))}, rose from their running minimum but peaked "
             f"below L0" if low_spike else ""))
print(f"\nnotebook run time: {time.perf_counter() - T_START:.0f} s")
def finite(x):
    # JSON without NaN: NaN -> null
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return None if isinstance(x, float) and not np.isfinite(x) else x


print("RESULTS " + json.dumps(finite(results)))
""")

md(r"""
**Reading the numbers.** The lazy/catapult boundary sits at ηλ₀ = 2 for both networks, as the linear stability
argument predicts (the grid brackets it between 1.9 and the first factor above 2). The catapult/divergence boundary
depends on the network: for the two-layer *linear* network it is close to the theory's 4; for the ReLU network it
is larger (the printed bracket; the paper's ReLU experiments, with NTK parametrisation and different widths,
reach ≈ 12, so only "larger than for linear" carries over, not the exact number). In every catapult run that
converged the final sharpness is below 2/η: the catapult lands the network in a region flat enough for the step
size. For ReLU the landing is often far below the line, by shrinking (and, at the largest step sizes, switching
off) hidden units, a way to shed curvature that the linear network does not have. Right above ηλ₀ = 2 the spike is small: the top mode grows only like |1 − ηλ₀|ᵗ, so the loss can rise from
its running minimum without exceeding its starting value (listed above when it happens).
""")


if __name__ == "__main__":
    main(notebook(cells), "11_catapult.ipynb")
