"""Build notebooks/01_loss_landscapes.ipynb (run: python notebooks/src/01_loss_landscapes.py [--execute]).

The notebook is written without outputs; ``--execute`` runs it in quick mode (WORKBENCH_QUICK=1) to check it.
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 01 · Loss landscapes: 1D and 2D slices, filter normalization, optimizer paths on a PCA plane

A network's loss lives in a space with thousands of dimensions; we can only look at 1D lines and 2D planes
through it. `landscapes` makes those slices honest and fast:

* `landscapes.directions.random(model, n=2, norm="filter")`: Gaussian directions rescaled **per filter** to the
  norms of the weights (Li, Xu, Taylor, Studer & Goldstein 2018, *Visualizing the Loss Landscape of Neural Nets*),
  with bias and normalization-layer directions zeroed; also `"layer"`, `"model"` or no normalization, Hessian
  eigenvectors (`directions.hessian`), the PCA plane of recorded trajectories (`directions.pca`) and the plane
  through two or three solutions (`directions.plane`).
* `landscapes.line` / `landscapes.surface`: the loss (and the problem's metrics, e.g. accuracy) on a 1D / 2D grid,
  as an `xarray.DataArray` whose coordinates are in units of the directions and whose `attrs` carry the direction
  norms. The grid is evaluated **batched over grid points** with `torch.func.functional_call` + `vmap`, in chunks
  that fit a memory budget, so a 21 × 21 surface of a small network costs about as much as a few forward passes.
  The model is never changed: mode, BatchNorm statistics, parameters, gradients and RNG are as before.
* `landscapes.plot`: plotly contour / 3D surface / 1D figures, trajectories overlaid, log scale, and one shared
  color scale when surfaces are shown side by side.

**Run time**: 9 s in full mode on a 2-core CPU (measured); `WORKBENCH_QUICK=1` shrinks everything further.
""")

code(r"""
import os, time
import numpy as np
import torch

import workbench as wb
import landscapes as ls

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
torch.set_num_threads(1 if QUICK else max(1, torch.get_num_threads()))
STEPS = 150 if QUICK else 1500          # training steps
GRID = 11 if QUICK else 31              # grid points per axis
print("quick mode" if QUICK else "full mode")
""")

md(r"""
## 1 · A trained classifier and a 1D slice

A two-hidden-layer ReLU MLP on the TensorFlow-Playground *spirals*, trained with Adam. A 1D slice
`θ* + α d` along one filter-normalized direction shows the basin around the solution on the training and the test
set; the accuracy comes along for free because we pass `prob.loss` (the landscape knows the problem's metrics).
""")

code(r"""
prob = wb.problems.make("spirals", seed=0, width=32, depth=2, activation="relu", n_train=400, noise=0.05)
run = wb.train(prob, optimizer="adam", lr=0.01, steps=STEPS, progress=False)
model = run.model
print(f"{prob.n_params:,} parameters, train", prob.evaluate(model, prob.data()), "test", prob.evaluate(model, prob.data("test")))

d = ls.directions.random(model, n=2, norm="filter", seed=0)
print(d)
train_line = ls.line(model, prob.loss, prob.data(), d[0], span=1.0, steps=4 * GRID + 1)
test_line = ls.line(model, prob.loss, prob.data("test"), d[0], span=1.0, steps=4 * GRID + 1)
print("loss at alpha=0:", float(train_line.sel(alpha=0)), "| direction norm:", train_line.attrs["alpha_norm"])
fig = ls.plot([train_line, test_line], titles=["train", "test"], log=True)
fig.update_layout(title="1D slice along a filter-normalized direction (log loss)")
fig
""")

code(r"""
import plotly.graph_objects as go
fig = go.Figure([go.Scatter(x=train_line.alpha, y=train_line.accuracy, name="train accuracy"),
                 go.Scatter(x=test_line.alpha, y=test_line.accuracy, name="test accuracy")])
fig.update_layout(xaxis_title="alpha", yaxis_title="accuracy", template="plotly_white", height=350)
fig
""")

md(r"""
## 2 · A 2D surface: contour and 3D

`surface` returns an `(alpha, beta)` DataArray; `attrs` say how it was computed (vmap or loop, chunk size, mode)
and how long the directions are. `plot(..., kind="surface")` draws it in 3D.
""")

code(r"""
t0 = time.perf_counter()
surf = ls.surface(model, prob.loss, prob.data(), d, span=1.0, steps=GRID)
print(f"{GRID}x{GRID} grid in {time.perf_counter() - t0:.2f}s;",
      {k: surf.attrs[k] for k in ("method", "chunk_size", "mode", "alpha_norm", "beta_norm")})
surf
""")

code(r"""
ls.plot(surf, log=True)
""")

code(r"""
ls.plot(surf, kind="surface", log=True)
""")

md(r"""
## 3 · Why filter normalization: scale invariance

A ReLU network computes exactly the same function if we multiply one layer's weights (and bias) by 10 and divide
the next layer's weights by 10. Its loss surface *should* look the same; with raw Gaussian directions it does
not, because a unit step is huge compared to the small layer and tiny compared to the big one. Filter-normalized
directions scale with each filter, and the two pictures agree (Li et al. 2018, Section 4). All four panels of
each row share one color scale.
""")

code(r"""
import copy
scaled = copy.deepcopy(model)
with torch.no_grad():
    scaled[0].weight.mul_(10); scaled[0].bias.mul_(10); scaled[2].weight.div_(10)
x, y = prob.data()
with torch.no_grad():
    print("same function:", torch.allclose(model(x), scaled(x), atol=1e-4))

rows = {}
for norm in ("none", "filter"):
    rows[norm] = [ls.surface(m, prob.loss, prob.data(), ls.directions.random(m, norm=norm, seed=1),
                             span=0.5 if norm == "none" else 1.0, steps=GRID) for m in (model, scaled)]
ls.plot(rows["none"], titles=["original, no normalization", "rescaled, no normalization"], log=True)
""")

code(r"""
ls.plot(rows["filter"], titles=["original, filter-normalized", "rescaled, filter-normalized"], log=True)
""")

code(r"""
for norm, (a, b) in rows.items():
    print(f"{norm:>6s}: max |log10 L_original - log10 L_rescaled| over the grid = "
          f"{float(np.abs(np.log10(a.values) - np.log10(b.values)).max()):.3f}")
""")

md(r"""
## 4 · Several optimizers on one PCA plane

Random directions miss the path an optimizer takes: in high dimensions a random plane is almost orthogonal to
it. The path itself is low-dimensional, so the top principal components of the iterates capture most of it
(Li et al. 2018, Section 7). We train the same initial network with GD, heavy-ball SGD and Adam, record their
trajectories with `wb.probes.Trajectory`, take the PCA plane of **all** of them (centered at GD's final point), and
draw the surface on that plane with every path projected onto it. `explained_variance` says how much of the
motion the plane holds.
""")

code(r"""
every = max(1, STEPS // 60)
setups = [("gd", dict(lr=0.5)), ("sgd", dict(lr=0.2, momentum=0.9)), ("adam", dict(lr=0.01))]
runs = {name: wb.train(prob, optimizer=name, steps=STEPS, probes=[wb.probes.Trajectory(every=every)],
                       progress=False, **hp) for name, hp in setups}
for name, r in runs.items():
    print(f"{name:>5s}: final loss {float(r.record['loss'][-1]):.4f}")
records = [r.record for r in runs.values()]
plane = ls.directions.pca(records, n=2, model=prob.model)
print(plane, "| explained variance sum:", round(sum(plane.meta["explained_variance"]), 4))
""")

code(r"""
paths = ls.project(records, plane)
lo = np.min([p.values.min(0) for p in paths], axis=0)
hi = np.max([p.values.max(0) for p in paths], axis=0)
pad = 0.15 * (hi - lo)
span = [(float(lo[i] - pad[i]), float(hi[i] + pad[i])) for i in range(2)]
pca_surf = ls.surface(runs["gd"].model, prob.loss, prob.data(), plane, span=span, steps=GRID)
fig = ls.plot(pca_surf, trajectory=records, log=True)
fig.update_layout(title="GD, momentum SGD and Adam from the same start, on their common PCA plane")
fig
""")

code(r"""
for p in paths:
    print(f"{p.attrs['label']:>5s}: largest distance from the plane {float(p.off_plane.max()):.3g} "
          f"(path length in the plane {float(np.linalg.norm(np.diff(p.values, axis=0), axis=1).sum()):.3g})")
""")

md(r"""
## 5 · Curvature directions

The plane of the two sharpest Hessian directions at the solution (`wb.curvature` Lanczos). Along them the
surface is as curved as it gets; compare the scale of the axes with the random plane above.
""")

code(r"""
hd = ls.directions.hessian(model, prob.loss, prob.data(), n=2)
print("top Hessian eigenvalues:", [round(v, 3) for v in hd.meta["eigenvalues"]], "converged:", hd.meta["converged"])
hs = ls.surface(model, prob.loss, prob.data(), hd, span=2.0 / np.sqrt(hd.meta["eigenvalues"][0]), steps=GRID)
ls.plot(hs, log=True)
""")

md(r"""
## 6 · The 2D test functions: the exact surface and the exact path

For the classic 2D test problems the parameter *is* the point in the plane, so there is nothing to project:
`function_surface` evaluates the exact function on its domain and `plot` draws each optimizer's exact path
θ_t (stars mark the ends, crosses the global minima).
""")

code(r"""
fsteps = 300 if QUICK else 3000
for name, opts, settings in [
    ("rosenbrock", {}, [("gd", dict(lr=1e-3)), ("sgd", dict(lr=1e-3, momentum=0.9)), ("adam", dict(lr=0.05))]),
    ("himmelblau", {"x0": -0.5, "y0": -0.5}, [("gd", dict(lr=0.01)), ("adam", dict(lr=0.1)), ("lion", dict(lr=0.02))]),
]:
    fp = wb.problems.make(name, **opts)
    recs = [wb.train(fp, optimizer=o, steps=fsteps, probes=[wb.probes.Trajectory(every=max(1, fsteps // 150))],
                     progress=False, **hp).record for o, hp in settings]
    fig = ls.plot(ls.function_surface(fp, steps=121 if QUICK else 301), trajectory=recs, log=True)
    fig.update_layout(title=f"{name}: exact function (log10) and exact optimizer paths")
    fig.show()
""")

md(r"""
## Notes

* Evaluation mode: `surface(..., mode="eval")` (default) uses BatchNorm running statistics and no dropout;
  `mode="train"` uses each grid point's batch statistics. Either way the model's buffers are untouched.
* Data: pass one batch or an iterable of batches (`prob.batches("train", 512)`); batches are weighted by size.
* Where vmap cannot run a model (data-dependent Python control flow, some custom ops) `surface` falls back to a
  loop and warns with the reason; `attrs["method"]` always says which was used.
""")


if __name__ == "__main__":
    main(notebook(cells), "01_loss_landscapes.ipynb")
