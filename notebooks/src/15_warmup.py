"""Build notebooks/15_warmup.ipynb (run: python notebooks/src/15_warmup.py).

The notebook is written without outputs; ``--execute`` runs it in quick mode (WORKBENCH_QUICK=1) to check it.
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 15 · Why warm up the learning rate? Sharpness, loss spikes and the largest trainable step size

**Paper.** D. S. Kalra, M. Barkeshli, *Why Warmup the Learning Rate? Underlying Mechanisms and Improvements*, 2024
(arXiv:2406.09405). Background: A. Lewkowycz et al., *The large learning rate phase of deep learning: the catapult
mechanism*, 2020 (arXiv:2003.02218), reproduced on the same networks in notebook 11.

**Phenomenon.** Kalra & Barkeshli argue that the main benefit of a linear warm-up η_t = η_peak·(t+1)/T_w is that
training *tolerates a larger target learning rate*: while η_t grows, each time it exceeds the stability limit 2/λ_t
(λ = sharpness, the top Hessian eigenvalue) a loss catapult throws the network into a flatter region, so the
network reaches η_peak where η_peak is stable. Without warm-up the same η_peak meets the sharp initial landscape at
once and, beyond the catapult range, training diverges. Longer warm-ups allow larger η_peak.

**Expected figure.** A peak-learning-rate sweep with and without warm-up (divergences marked) in which the largest
surviving peak learning rate grows with the warm-up length, next to loss and sharpness curves that show loss
spikes and the sharpness being pushed below the falling stability line 2/η_t during warm-up.

**Setup.** As in notebook 11: `teacher-student` regression with a wide one-hidden-layer student (ReLU, and tanh
for contrast), loss mean((f − y)²), PyTorch's default parametrisation, full-batch gradient descent with
`wb.train(..., warmup=T_w)` (constant after warm-up). Learning rates are quoted as η·λ₀, λ₀ the initial sharpness
of that network.

**Run time** on a 2-core laptop CPU: full mode (width 512, 256 examples, warm-ups of 0/30/100/300 steps followed
by 150 steps at the peak, 12 peak learning rates for ReLU and 6 for tanh: 72 runs) took 29 s here (load average 2); quick mode
(`WORKBENCH_QUICK=1`: width 256, 128 examples, ReLU sweep with warm-ups 0/60 and 6 peak learning rates, tanh curves
only) ≈ 1–2 minutes.
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
from workbench.probes import Sharpness

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
torch.set_num_threads(1)
T_START = time.perf_counter()

WIDTH, N_TRAIN = (256, 128) if QUICK else (512, 256)
POST = 100 if QUICK else 150          # steps at the peak learning rate after the longest warm-up of a sweep
EVERY = 4 if QUICK else 2             # Sharpness probe period of the curve runs
SWEEPS = {                            # per network: warm-up lengths and peak learning rates (× 1/λ0) of the sweep
    "relu": dict(warmups=[0, 60] if QUICK else [0, 30, 100, 300],
                 peaks=[2, 4, 8, 16, 32, 64] if QUICK else [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96]),
}
if not QUICK:
    SWEEPS["tanh"] = dict(warmups=[0, 30, 100, 300], peaks=[2.5, 3, 4, 5, 6, 8])
DEMO = {"relu": (16, max(SWEEPS["relu"]["warmups"])), "tanh": (5, 300)}   # (η_peak·λ0, warm-up steps) of section 1


def options(activation):
    return dict(dim=16, teacher_width=8, width=WIDTH, depth=1, activation=activation, n_train=N_TRAIN, n_test=64)


PROBS, LAM0 = {}, {}
for act in ("relu", "tanh"):
    PROBS[act] = p = wb.problems.make("teacher-student", seed=0, **options(act))
    res = wb.curvature.eigs(wb.curvature.hessian(p.model, p.loss, p.data()), k=1, tol=1e-4)
    LAM0[act] = float(res.values[0])
    print(f"{act}: {p.n_params:,} parameters, initial sharpness λ0 = {LAM0[act]:.3f} "
          f"(Lanczos residual {float(res.residuals[0]):.1e}), 2/λ0 = {2 / LAM0[act]:.4f}")
print("quick mode" if QUICK else "full mode", f"| {N_TRAIN} training examples, full-batch GD")
""")

md(r"""
## 1 · One peak learning rate, with and without warm-up

For each network one peak learning rate beyond its no-warm-up catapult range (the sweep in section 2 measures
that range: without warm-up this ReLU network diverges from 8/λ₀ on, like the ReLU network of notebook 11, and the
tanh network from 4/λ₀ on) is run with and without warm-up.
The `Sharpness` probe records λ_t and the stability line 2/η_t at the *current* (warm-up) learning rate.
""")

code(r"""
CURVES = {}
for act, (peak, w) in DEMO.items():
    for warm in (0, w):
        run = wb.train(PROBS[act], "gd", lr=peak / LAM0[act], steps=w + POST, warmup=warm,
                       probes=[Sharpness(every=EVERY)], progress=True)
        CURVES[act, warm] = run.record
        loss = run.record.loss.values
        print(f"{act} η_peak·λ0 = {peak:g}, warm-up {warm:3d} steps: {run.status} after {len(loss)} steps, "
              f"final loss / initial loss = {loss[-1] / loss[0]:.3g}")

fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.1, vertical_spacing=0.14,
                    subplot_titles=[f"{act} (η_peak·λ0 = {DEMO[act][0]}): {what}" for act in DEMO
                                    for what in ("training loss", "sharpness λ_t (solid), 2/η_t (dashed)")])
for r, act in enumerate(DEMO, start=1):
    w = DEMO[act][1]
    for warm, color in ((0, "#d62728"), (w, "#1f77b4")):
        rec = CURVES[act, warm]
        name = "no warm-up" if warm == 0 else f"warm-up {warm} steps"
        kw = dict(legendgroup=f"{act}{warm}", line=dict(color=color))
        fig.add_scatter(x=rec.step, y=rec.loss, name=f"{act}, {name}", row=r, col=1, **kw)
        fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness, name=name, showlegend=False, row=r, col=2, **kw)
        fig.add_scatter(x=rec.sharpness_step, y=rec.sharpness_threshold, name=f"2/η_t, {name}", showlegend=False,
                        row=r, col=2, **{**kw, "line": dict(color=color, dash="dash")})
    for c in (1, 2):
        fig.add_vline(x=w, line_dash="dot", line_color="gray", row=r, col=c)
    fig.update_yaxes(type="log", title_text="loss", row=r, col=1)
    fig.update_yaxes(type="log", title_text="λ (Hessian eigenvalue)", row=r, col=2)
fig.update_xaxes(title_text="GD step (dotted: end of warm-up)")
fig.update_layout(height=780, width=1100, legend=dict(orientation="h", y=-0.1), margin=dict(b=90))
fig.show()
""")

code(r"""
def spikes(loss, start, stop, factor=2.0, window=10):
    # loss spikes in [start, stop): episodes in which the loss exceeds factor × its minimum over the previous
    # `window` steps (an episode ends when the loss is back below that level)
    count, inside = 0, False
    for t in range(max(start, 1), min(stop, len(loss))):
        up = loss[t] > factor * loss[max(0, t - window):t].min()
        count += up and not inside
        inside = up
    return int(count)


DEMO_STATS = {}
for act, (peak, w) in DEMO.items():
    rec = CURVES[act, w]
    ps = rec.sharpness_step.values
    ratio = (rec.sharpness / rec.sharpness_threshold).values          # λ_t / (2/η_t)
    crossed = ps[ratio >= 1.0]
    t_cross = int(crossed[0]) if crossed.size else None
    sel = (ps >= (t_cross if t_cross is not None else w)) & (ps < w)
    loss = rec.loss.values
    st = DEMO_STATS[act] = {
        "peak": peak, "warmup": w, "no_warmup_status": CURVES[act, 0].attrs["status"],
        "no_warmup_steps": int(CURVES[act, 0].sizes["step"]), "warmup_status": rec.attrs["status"],
        "first_crossing_step": t_cross,
        "lr_at_crossing_x_lam0": None if t_cross is None else float(rec.lr.values[t_cross] * LAM0[act]),
        "median_ratio_after_crossing": float(np.median(ratio[sel])) if sel.any() else None,
        "min_lambda_after_crossing_over_lam0": float(rec.sharpness.values[sel].min() / LAM0[act]) if sel.any() else None,
        "final_ratio": float(ratio[-1]), "lambda_end_over_lam0": float(rec.sharpness.values[-1] / LAM0[act]),
        "spikes_in_warmup": spikes(loss, 1, w), "max_loss_over_l0": float(loss.max() / loss[0]),
        "final_loss_over_l0": float(loss[-1] / loss[0]),
    }
    print(f"{act}, η_peak·λ0 = {peak}: without warm-up {st['no_warmup_status']} after {st['no_warmup_steps']} steps; "
          f"with a {w}-step warm-up {st['warmup_status']}")
    if t_cross is None:
        print("  λ_t never reached 2/η_t")
    else:
        print(f"  λ_t first reached 2/η_t at step {t_cross} (η_t·λ0 = {st['lr_at_crossing_x_lam0']:.2f}); from there to "
              f"the end of warm-up: median λ_t/(2/η_t) = {st['median_ratio_after_crossing']:.2f}, lowest λ_t = "
              f"{st['min_lambda_after_crossing_over_lam0']:.3f} λ0")
    print(f"  loss spikes (> 2× the minimum of the previous 10 steps) during warm-up: {st['spikes_in_warmup']}, highest loss "
          f"{st['max_loss_over_l0']:.3g} L0; at the end λ_T = {st['lambda_end_over_lam0']:.3f} λ0, "
          f"λ_T/(2/η_peak) = {st['final_ratio']:.2f}, loss {st['final_loss_over_l0']:.2g} L0")
""")

md(r"""
Without warm-up both networks blow up within a few steps at these peak learning rates. With warm-up, the first
steps are small (η_t·λ₀ < 2, the curvature does not move); the trouble starts when η_t passes 2/λ_t, and the two
networks then deal with it differently (numbers above):

* **ReLU**: one large catapult soon after the crossing throws the sharpness far *below* the line — the lowest λ_t
  is a small fraction of λ₀ — and the rising η_t never catches up with it again: the median λ_t/(2/η_t) for the
  rest of the warm-up stays well below 1.
* **tanh**: the sharpness does not drop that far at once; it follows the moving line 2/η_t down, hovering
  somewhat above it (median λ_t/(2/η_t) a little above 1), pushed down by a train of smaller loss spikes — like
  gradient descent at the edge of stability with a slowly increasing step size, the sharpness-reduction picture
  of Kalra & Barkeshli.

In both cases the network arrives at η_peak in a region where η_peak is (close to) a stable step size.

## 2 · The peak-learning-rate sweep

One `wb.sweep` per network over the warm-up length and η_peak (a two-dimensional grid; every run of a sweep has
the same number of steps, so the longest warm-up is still followed by `POST` steps at the peak). A run
**survives** if it finishes with a training loss below its initial loss; otherwise it **diverged** (stopped by the
run loop for an exploding loss, or ended above L₀). A `Sharpness` probe measures λ at the end of each run that
survived. The full-mode sweeps run on a local Dask cluster, the quick-mode one in-process.
""")

code(r"""
cluster = client = None
scheduler = "synchronous"
if not QUICK:
    from dask.distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    scheduler = cluster.scheduler_address

SWEPT = {}
for act, cfg in SWEEPS.items():
    t0 = time.perf_counter()
    steps = max(cfg["warmups"]) + POST
    sw = wb.sweep("teacher-student", grid={"warmup": cfg["warmups"], "lr": [p / LAM0[act] for p in cfg["peaks"]]},
                  problem_options=options(act), train={"steps": steps},
                  probes=[{"type": "Sharpness", "every": steps}], scheduler=scheduler, progress=True)
    W, P = cfg["warmups"], cfg["peaks"]
    final = np.full((len(W), len(P)), np.nan)
    lam_T = np.full_like(final, np.nan)
    survived = np.zeros(final.shape, bool)
    for i in range(len(W)):
        for j in range(len(P)):
            loss = sw.loss.isel(warmup=i, lr=j).values
            loss = loss[np.isfinite(loss)]
            final[i, j] = loss[-1] / loss[0]
            survived[i, j] = str(sw.status.isel(warmup=i, lr=j).item()) == "finished" and final[i, j] < 1
            if survived[i, j]:
                lam = sw.sharpness.isel(warmup=i, lr=j).values
                lam_T[i, j] = lam[np.isfinite(lam)][-1] * P[j] / LAM0[act] / 2      # λ_T / (2/η_peak)
    SWEPT[act] = dict(final=final, sharp_ratio=lam_T, survived=survived,
                      max_surviving={w: max((p for p, ok in zip(P, survived[i]) if ok), default=None)
                                     for i, w in enumerate(W)},
                      first_diverged={w: min((p for p, ok in zip(P, survived[i]) if not ok), default=None)
                                      for i, w in enumerate(W)})
    print(f"{act}: {sw.attrs['n_runs']} runs of {steps} steps in {time.perf_counter() - t0:.0f} s")
    print(f"{'warm-up':>9s} " + " ".join(f"{p:>6g}" for p in P) + "   (η_peak·λ0; final loss / L0, ✕ = diverged)")
    for i, w in enumerate(W):
        print(f"{w:9d} " + " ".join(f"{final[i, j]:6.0e}" if survived[i, j] else f"{'✕':>6s}" for j in range(len(P))))
if client is not None:
    client.close()
    cluster.close()
""")

code(r"""
nets = list(SWEPT)
fig = make_subplots(rows=len(nets), cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                    vertical_spacing=0.16, specs=[[{}, {"rowspan": len(nets)}]] + [[{}, None]] * (len(nets) - 1),
                    subplot_titles=[f"{nets[0]}: final loss / initial loss (✕ = diverged)",
                                    "largest surviving η_peak·λ0 vs warm-up"]
                    + [f"{a}: final loss / initial loss (✕ = diverged)" for a in nets[1:]])
NET_COLORS = {"relu": "#9467bd", "tanh": "#2ca02c"}
for r, act in enumerate(nets, start=1):
    cfg, res = SWEEPS[act], SWEPT[act]
    labels = [str(w) for w in cfg["warmups"]]
    xs = [f"{p:g}" for p in cfg["peaks"]]
    z = np.where(res["survived"], np.log10(np.where(res["survived"], res["final"], 1.0)), np.nan)
    fig.add_heatmap(x=xs, y=labels, z=z, coloraxis="coloraxis", hoverongaps=False, row=r, col=1)
    di, dj = np.nonzero(~res["survived"])
    fig.add_scatter(x=[xs[j] for j in dj], y=[labels[i] for i in di], mode="markers", name="diverged",
                    legendgroup="div", showlegend=r == 1, marker=dict(symbol="x", size=13, color="#d62728"),
                    row=r, col=1)
    fig.update_xaxes(title_text="η_peak·λ0", type="category", row=r, col=1)
    fig.update_yaxes(title_text="warm-up steps T_w", type="category", row=r, col=1)
    fig.add_scatter(x=labels, y=[res["max_surviving"][w] for w in cfg["warmups"]], mode="lines+markers",
                    name=f"{act}: largest surviving", marker=dict(size=10, color=NET_COLORS[act]),
                    line=dict(color=NET_COLORS[act]), row=1, col=2)
fig.add_hline(y=2, line_dash="dash", line_color="gray", row=1, col=2)
fig.add_annotation(x=0, xanchor="left", y=np.log10(2), yanchor="bottom", text="η·λ0 = 2", showarrow=False,
                   row=1, col=2)     # annotations on a log axis take log10 coordinates
fig.update_xaxes(title_text="warm-up steps T_w", type="category", row=1, col=2)
fig.update_yaxes(title_text="η_peak·λ0", type="log", row=1, col=2)
fig.update_layout(height=330 + 250 * len(nets), width=1100, legend=dict(orientation="h", y=-0.12),
                  margin=dict(b=110, r=120), coloraxis=dict(colorscale="Viridis", cmin=-3, cmax=0,
                                                            colorbar=dict(title="log10(L_T/L0)", x=1.02, len=0.8)))
fig.show()
""")

md(r"""
Each heatmap row is one warm-up length. Without warm-up the largest surviving peak learning rate is the end of the
catapult range; warm-up moves the divergence boundary to larger η_peak, by a factor that depends on the network
and on the warm-up length (right panel; the printout below gives the numbers). The final sharpness of the
surviving runs, in units of the stability line at the peak learning rate:
""")

code(r"""
for act, cfg in SWEEPS.items():
    res = SWEPT[act]
    print(f"{act:>5s} {'warm-up':>7s} " + " ".join(f"{p:>6g}" for p in cfg["peaks"]) + "   (λ_T / (2/η_peak))")
    for i, w in enumerate(cfg["warmups"]):
        print(f"{'':5s} {w:7d} " + " ".join(f"{res['sharp_ratio'][i, j]:6.2f}" if res["survived"][i, j] else f"{'✕':>6s}"
                                        for j in range(len(cfg["peaks"]))))
    ok = res["survived"]
    r = res["sharp_ratio"][ok]
    print(f"      surviving runs with λ_T below 2/η_peak: {int((r < 1).sum())} of {r.size}; highest λ_T/(2/η_peak) "
          f"{r.max():.2f}")
""")

md(r"""
## 3 · Measured against the paper
""")

code(r"""
print("paper (Kalra & Barkeshli 2024)                    | this notebook")
for act, cfg in SWEEPS.items():
    ms = SWEPT[act]["max_surviving"]
    w0, wl = cfg["warmups"][0], cfg["warmups"][-1]
    gain = ms[wl] / ms[w0] if ms[w0] else float("inf")
    mono = all((ms[a] or 0) <= (ms[b] or 0) for a, b in zip(cfg["warmups"], cfg["warmups"][1:]))
    print(f"warm-up allows larger target learning rates       | {act}: largest surviving η_peak·λ0 "
          + ", ".join(f"T_w={w}: {ms[w]}" for w in cfg["warmups"]) + f" (×{gain:.3g})")
    print(f"longer warm-up -> larger maximal target lr        | {act}: non-decreasing in T_w: {mono}")
for act, st in DEMO_STATS.items():
    print(f"sharpness pushed down as η_t rises in warm-up     | {act} at η_peak·λ0={st['peak']}: median λ_t/(2/η_t) "
          f"after the first crossing {st['median_ratio_after_crossing']:.2f}, λ_T = {st['lambda_end_over_lam0']:.3f} λ0")
    print(f"loss catapults (spikes) during warm-up            | {act}: {st['spikes_in_warmup']} spike(s), highest "
          f"{st['max_loss_over_l0']:.3g} L0")
    print(f"without warm-up the same peak lr fails            | {act}: {st['no_warmup_status']} after "
          f"{st['no_warmup_steps']} steps")
print(f"\nnotebook run time: {time.perf_counter() - T_START:.0f} s")
results = {"width": WIDTH, "n_train": N_TRAIN, "post": POST, "lam0": LAM0, "demo": DEMO_STATS, "sweeps": {
    act: {"warmups": cfg["warmups"], "peaks": cfg["peaks"], "survived": SWEPT[act]["survived"].tolist(),
          "max_surviving": {str(w): v for w, v in SWEPT[act]["max_surviving"].items()},
          "first_diverged": {str(w): v for w, v in SWEPT[act]["first_diverged"].items()},
          "sharp_ratio": [[float(v) if np.isfinite(v) else None for v in row] for row in SWEPT[act]["sharp_ratio"]]}
    for act, cfg in SWEEPS.items()}}
print("RESULTS " + json.dumps(results))
""")


if __name__ == "__main__":
    main(notebook(cells), "15_warmup.ipynb")
