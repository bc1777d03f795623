"""Build notebooks/02_hessian_spectra.ipynb (run: python notebooks/src/02_hessian_spectra.py [--execute]).

The notebook is written without outputs; ``--execute`` runs it in quick mode (WORKBENCH_QUICK=1) to check it.
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 02 · Hessian spectra: top eigenvalues, the bulk and its outliers, GGN vs Hessian, per-layer curvature

`wb.curvature` turns a model, a loss and data into a matrix-free curvature operator and answers spectral
questions about it:

* `hessian(model, loss, data)`, `ggn(...)` (generalized Gauss-Newton, exact or Monte-Carlo), `fisher(...)`
  (empirical Fisher): operators with `matvec` / `matmat`, optionally restricted to some parameters (`params="0"`
  for the first layer).
* `eigs(op, k, which="LA"|"SA"|"LM")`: Lanczos with full reorthogonalization; returns values, vectors, **Ritz
  residuals** and a `converged` flag, and warns when it stops early.
* `spectral_density(op, probes, steps)`: stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani,
  Krishnan & Xiao 2019; PyHessian, Yao et al. 2020) as an `xarray.DataArray` that integrates to 1.
* `trace(op)` (Hutch++, with a standard error), `diagonal(op)`, `lambda_min`, `condition_number`,
  `negative_mass`.

The question this notebook looks at is the one of Sagun et al. (2017, *Empirical analysis of the Hessian of
over-parametrized neural networks*) and Papyan (2019, 2020, *Traces of class/cross-class structure pervade deep
learning spectra*): the Hessian spectrum of a classifier is a **bulk** near zero plus a few **outliers**, and for a
C-class problem there are about **C** of them, inherited from the Gauss-Newton part. We measure it rather than
assume it. None of these calls changes the model (mode, BatchNorm statistics, parameters, gradients and RNG state
are restored). `WORKBENCH_QUICK=1` makes everything small.
""")

code(r"""
import os, time
import numpy as np
import torch
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import workbench as wb
from workbench import curvature as cv

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
torch.set_num_threads(1 if QUICK else max(1, torch.get_num_threads()))
C = 4                                   # classes
STEPS = 60 if QUICK else 400            # full-batch gradient descent steps
SLQ_PROBES, SLQ_STEPS = (2, 30) if QUICK else (8, 80)
K = 2 * C + 2                           # eigenvalues to compute
print("quick mode" if QUICK else "full mode")
""")

md(r"""
## 1 · A trained MLP on a C-class Gaussian mixture

Full-batch gradient descent, so the curvature we look at is the one the optimizer actually sees. `run.model` is
the trained copy; `prob.data()` the full training set as one batch.
""")

code(r"""
prob = wb.problems.make("gaussian-mixture", seed=0, classes=C, dim=32, width=64, depth=2,
                        separation=5.0, n_train=400 if QUICK else 1000)
t0 = time.perf_counter()
run = wb.train(prob, optimizer="gd", lr=0.2, steps=STEPS, progress=False)
model, data = run.model, prob.data()
print(prob.describe().splitlines()[0], f"| {prob.n_params:,} parameters")
print(f"trained {STEPS} steps in {time.perf_counter() - t0:.1f}s: loss {float(run.record['loss'][-1]):.4f},",
      "train", prob.evaluate(model, data))
""")

md(r"""
## 2 · Top of the spectrum with Lanczos

`eigs` reports, for every eigenvalue, the residual norm ‖Hv − λv‖ of its Ritz pair; `tol` bounds the relative
eigenvalue error (with the default `tol=1e-3` the top eigenvalue is within 0.1 % of the truth). A second call
warm-started from the first call's vectors (`v0=res.vectors`) needs far fewer Hessian-vector products — what the
`Sharpness` probe does between training steps.
""")

code(r"""
H = cv.hessian(model, prob.loss, data)              # mode="eval" by default
res = cv.eigs(H, k=K, tol=1e-4)
warm = cv.eigs(H, k=K, tol=1e-4, v0=res.vectors)
print(f"{H}\nconverged={res.converged} with {res.n_matvec} HVPs; warm start: {warm.n_matvec} HVPs")
for i, (lam, r) in enumerate(zip(res.values.tolist(), res.residuals.tolist())):
    print(f"  lambda_{i + 1:<2d} = {lam:9.5f}   residual {r:.1e}")
gaps = (res.values[:-1] / res.values[1:]).numpy()
print("largest ratio lambda_i / lambda_(i+1) at i =", int(np.argmax(gaps)) + 1, f"(ratio {gaps.max():.2f}); C =", C)
""")

code(r"""
fig = go.Figure(go.Scatter(x=np.arange(1, K + 1), y=res.values.numpy(), mode="markers+lines", name="Hessian",
                           error_y=dict(type="data", array=res.residuals.numpy(), visible=True)))
fig.add_vline(x=C + 0.5, line_dash="dot", annotation_text=f"C = {C}")
fig.update_layout(title="Top eigenvalues (error bars: Ritz residuals)", xaxis_title="index i",
                  yaxis_title="lambda_i", yaxis_type="log", height=380)
fig
""")

md(r"""
## 3 · The whole spectrum: SLQ density, bulk and outliers

`spectral_density` runs the probes as one block. Each quadrature node is broadened by a Gaussian of standard
deviation σ = 1 % of the spectral range (`width=0.01`, stored in `attrs["sigma"]`); the raw nodes and weights
are in `attrs`. A density of *n* eigenvalues gives an isolated eigenvalue a mass of only 1/n, so the outliers show
on a log scale; the top eigenvalues from Lanczos are marked in red.
""")

code(r"""
dens = cv.spectral_density(H, probes=SLQ_PROBES, steps=SLQ_STEPS, seed=0)
print(f"integral = {float(dens.integrate('eigenvalue')):.6f}, sigma = {dens.attrs['sigma']:.3g}, "
      f"{dens.attrs['n_matvec']} HVPs")
nodes, w = dens.attrs["nodes"], dens.attrs["weights"] / dens.attrs["probes"]
# bulk edge: the largest node that carries more than a handful of eigenvalues' worth of mass
bulk_edge = float(nodes[w * H.size > 3].max())
outliers = int((res.values > bulk_edge).sum())
print(f"bulk edge ~ {bulk_edge:.4f}; eigenvalues beyond it: {outliers} (C = {C})")
fig = go.Figure(go.Scatter(x=dens["eigenvalue"], y=np.maximum(dens.values, 1e-8), name="SLQ density"))
fig.add_trace(go.Scatter(x=res.values.numpy(), y=np.full(K, 1e-6), mode="markers", name="Lanczos top-k",
                         marker=dict(color="red", symbol="line-ns-open", size=14)))
fig.add_vline(x=bulk_edge, line_dash="dot", annotation_text="bulk edge")
fig.update_layout(title="Hessian spectral density (log scale)", xaxis_title="eigenvalue", yaxis_type="log",
                  yaxis_title="density", height=380)
fig
""")

md(r"""
## 4 · Gauss-Newton vs Hessian

H = G + R, where the GGN G = JᵀH_ℓJ is positive semi-definite and the residual R involves the network's second
derivatives weighted by the loss gradient. Near a minimum R is small, so the outliers of H are those of G
(Papyan 2019); the negative eigenvalues of H all come from R. The Monte-Carlo GGN (`mc_samples=1`, labels sampled
from the model) is the cheap estimator used by K-FAC-style methods.
""")

code(r"""
G = cv.ggn(model, prob.loss, data)
Gmc = cv.ggn(model, prob.loss, data, mc_samples=1, seed=0)
rg = cv.eigs(G, k=K, tol=1e-4)
rmc = cv.eigs(Gmc, k=K, tol=1e-3)
lmin_H, _ = cv.lambda_min(H)
lmin_G, _ = cv.lambda_min(G, tol=1e-2)
print("top-k Hessian :", np.round(res.values.numpy(), 4))
print("top-k GGN     :", np.round(rg.values.numpy(), 4))
print("top-k MC-GGN  :", np.round(rmc.values.numpy(), 4))
print(f"lambda_min: Hessian {lmin_H:.4g}, GGN {lmin_G:.3g} (PSD up to rounding)")
dg = cv.spectral_density(G, probes=SLQ_PROBES, steps=SLQ_STEPS, seed=0)
fig = make_subplots(rows=1, cols=2, subplot_titles=("top eigenvalues", "SLQ densities (log)"))
for name, r in (("Hessian", res), ("GGN", rg), ("MC-GGN (1 sample)", rmc)):
    fig.add_trace(go.Scatter(x=np.arange(1, K + 1), y=r.values.numpy(), mode="markers+lines", name=name), 1, 1)
for name, d in (("Hessian", dens), ("GGN", dg)):
    fig.add_trace(go.Scatter(x=d["eigenvalue"], y=np.maximum(d.values, 1e-8), name=name + " density"), 1, 2)
fig.update_yaxes(type="log", row=1, col=2)
fig.update_layout(height=380)
fig
""")

md(r"""
## 5 · Per-layer spectra

`params=` restricts the operator to some parameters: a module prefix (`"2"` is the second Linear layer's weight
and bias), a glob (`"*.bias"`) or a list. The diagonal blocks of the Hessian are what layer-wise preconditioners
see; their top eigenvalues need not add up to the full one (the off-diagonal blocks couple layers).
""")

code(r"""
layers = sorted({n.split(".")[0] for n, _ in model.named_parameters()}, key=int)
fig = go.Figure()
rows = []
for layer in layers:
    Hl = cv.hessian(model, prob.loss, data, params=layer)
    rl = cv.eigs(Hl, k=3, tol=1e-3)
    dl = cv.spectral_density(Hl, probes=SLQ_PROBES, steps=min(SLQ_STEPS, Hl.size), seed=1)
    tr = cv.trace(Hl, n=30 if QUICK else 99)
    rows.append((layer, Hl.size, rl.values.numpy(), tr))
    fig.add_trace(go.Scatter(x=dl["eigenvalue"], y=np.maximum(dl.values, 1e-8), name=f"layer {layer} ({Hl.size})"))
for layer, n, top, tr in rows:
    print(f"layer {layer}: {n:6d} params, top-3 {np.round(top, 4)}, trace {tr.value:.4f} ± {tr.stderr:.4f}")
fig.update_layout(title="Per-layer Hessian spectral densities", xaxis_title="eigenvalue", yaxis_type="log",
                  height=380)
fig
""")

md(r"""
## 6 · Summary numbers

Every stochastic estimate carries its own error bar: Hutch++ trace with a standard error, the negative-eigenvalue
mass from SLQ with a standard error over probes, and the condition number of the top block
λ₁ / λ_C (the full condition number of a Hessian whose bulk sits at zero is meaningless).
""")

code(r"""
tr = cv.trace(H, method="hutch++", n=60 if QUICK else 150)
kappa, _ = cv.condition_number(H, k=C)
neg = cv.negative_mass(H, probes=SLQ_PROBES, steps=SLQ_STEPS)
print(f"trace(H)          = {tr.value:.4f} ± {tr.stderr:.4f}  ({tr.n_matvec} HVPs)")
print(f"SLQ first moment  = {H.size * float((nodes * w).sum()):.4f}  (same quantity from the density)")
print(f"lambda_1/lambda_C = {kappa:.3f}")
print(f"negative mass     = {neg.fraction:.3f} ± {neg.fraction_stderr:.3f} of eigenvalues, "
      f"{neg.magnitude_ratio:.4f} ± {neg.magnitude_ratio_stderr:.4f} of sum |lambda|")
""")


if __name__ == "__main__":
    main(notebook(cells), "02_hessian_spectra.ipynb")
