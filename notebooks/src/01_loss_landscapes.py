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
  that fit a memory budget (section 2 times a surface against one forward pass over the same data).
  The model is never changed: mode, BatchNorm statistics, parameters, gradients and RNG are as before.
* `landscapes.plot`: plotly contour / 3D surface / 1D figures, trajectories overlaid, log scale, and one shared
  color scale when surfaces are shown side by side.

**Run time**: 9 to 21 s in full mode on a 2-core CPU shared with other jobs, depending on their load (measured);
`WORKBENCH_QUICK=1` shrinks everything further. The last code cell prints this run's time.
""")

code(r"""
import json, os, time
import numpy as np
import torch

import workbench as wb
import landscapes as ls

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
T0 = time.perf_counter()
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
and how long the directions are. `plot(..., kind="surface")` draws it in 3D. The cell also times one forward pass
(loss and accuracy) over the same 400 training points, the work the surface does at each grid point
(`forward_passes_per_point` = 1), and prints what one grid point cost in units of that forward pass: a few.
""")

code(r"""
t0 = time.perf_counter()
surf = ls.surface(model, prob.loss, prob.data(), d, span=1.0, steps=GRID)
t_surf = time.perf_counter() - t0
print(f"{GRID}x{GRID} grid in {t_surf:.2f}s;",
      {k: surf.attrs[k] for k in ("method", "chunk_size", "mode", "forward_passes_per_point", "alpha_norm",
                                  "beta_norm")})
# one forward pass (loss and accuracy) over the same data: median of 20 timed repetitions after a warm-up
prob.evaluate(model, prob.data())
t_fwd = []
for _ in range(20):
    t0 = time.perf_counter()
    prob.evaluate(model, prob.data())
    t_fwd.append(time.perf_counter() - t0)
t_fwd = float(np.median(t_fwd))
per_point = t_surf / GRID ** 2 / t_fwd
print(f"one forward pass over the {len(prob.train)} training points: {1e3 * t_fwd:.3f} ms; the surface: "
      f"{1e3 * t_surf / GRID ** 2:.3f} ms per grid point = {per_point:.1f} forward passes per grid point "
      f"({t_surf / t_fwd:.0f} for the whole {GRID}x{GRID} grid)")
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
directions scale with each filter, and the two pictures agree (Li et al. 2018, Section 4). Within each figure the
two panels share one color scale; each figure has its own, set by its own two surfaces (the ranges are printed
below the figures).
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
figs = {"none": ls.plot(rows["none"], titles=["original, no normalization", "rescaled, no normalization"], log=True)}
figs["none"]
""")

code(r"""
figs["filter"] = ls.plot(rows["filter"], titles=["original, filter-normalized", "rescaled, filter-normalized"],
                         log=True)
figs["filter"]
""")

code(r"""
scale_diff, color_range, color_scales = {}, {}, {}
for norm, (a, b) in rows.items():
    scale_diff[norm] = float(np.abs(np.log10(a.values) - np.log10(b.values)).max())
    print(f"{norm:>6s}: max |log10 L_original - log10 L_rescaled| over the grid = {scale_diff[norm]:.3f}")
for norm, fig in figs.items():
    ranges = {(float(t.zmin), float(t.zmax)) for t in fig.data}
    color_scales[norm], color_range[norm] = len(ranges), min(ranges)
    print(f"{norm:>6s} figure: {len(fig.data)} panels with {len(ranges)} color scale(s) among them; log10 loss "
          f"from {color_range[norm][0]:.3f} to {color_range[norm][1]:.3f}")
""")

md(r"""
## 4 · Several optimizers on one PCA plane

Random directions miss the path an optimizer takes: in high dimensions a random plane is almost orthogonal to
it. A single path is low-dimensional, so the top principal components of its own iterates capture most of it
(Li et al. 2018, Section 7). We train the same initial network with GD, heavy-ball SGD and Adam, record their
trajectories with `wb.probes.Trajectory`, take the PCA plane of **all** of them (centered at GD's final point), and
draw the surface on that plane with every path projected onto it. `explained_variance` is the share of the
*pooled* snapshots' squared distance from that center which the plane holds: pooled over three runs, it is
dominated by the runs whose iterates lie farthest from the center and says little about any one path. The cell
after the figure measures how much of each path's own motion the shared plane holds.
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
def share(X, Q):
    # the share of a path's motion, sum over its snapshots of |theta_t - theta_0|^2, that lies in span(Q)
    M = X - X[0]
    return float(((M @ Q) ** 2).sum() / (M ** 2).sum())


Q_shared = plane.vectors.double().numpy().T                         # orthonormal, (n, 2)
Q_random = np.linalg.qr(d.vectors.double().numpy().T)[0]            # section 1's random plane, orthonormalized
path_stats = {}
print("share of each path's motion in: the shared PCA plane | the path's own PCA plane | section 1's random plane")
for (name, r), p in zip(runs.items(), paths):
    X = r.record["trajectory"].values.astype(np.float64)
    disp = X[-1] - X[0]
    inplane = float(np.linalg.norm(Q_shared.T @ disp))
    path_stats[name] = dict(
        shared=share(X, Q_shared), random=share(X, Q_random),
        own=float(sum(ls.directions.pca(r.record, n=2, center="first").meta["explained_variance"])),
        moved=float(np.linalg.norm(disp)), disp_in=inplane,
        disp_off=float(np.sqrt(max(disp @ disp - inplane ** 2, 0))),
        start_off=float(p.off_plane[0]), max_off=float(p.off_plane.max()),
        start_farthest=bool(p.off_plane[0] >= p.off_plane.max()),
        length_in=float(np.linalg.norm(np.diff(p.values, axis=0), axis=1).sum()),
        length=float(np.linalg.norm(np.diff(X, axis=0), axis=1).sum()))
    s = path_stats[name]
    print(f"{name:>5s}: {s['shared']:.3f} | {s['own']:.3f} | {s['random']:.4f}")
print(f"(a random plane holds 2/n = {2 / prob.n_params:.4f} of a path's motion on average)\n")
for name, s in path_stats.items():
    print(f"{name:>5s}: theta_T - theta_0 has length {s['moved']:.3g}: {s['disp_in']:.3g} in the shared plane, "
          f"{s['disp_off']:.3g} off it; path length {s['length']:.3g}, {s['length_in']:.3g} of it drawn in the plane; "
          f"distance from the plane at the start {s['start_off']:.3g}, largest {s['max_off']:.3g} "
          f"({'at the start' if s['start_farthest'] else 'later in the run'})")
order = sorted(path_stats, key=lambda k: path_stats[k]["moved"])
print(f"\nruns from the least to the farthest travelled (|theta_T - theta_0|): {order}; the shared plane's share of "
      f"their motion: {[round(path_stats[k]['shared'], 3) for k in order]}")
""")

md(r"""
Each path on its own is nearly planar: the top two principal components of its own iterates hold almost all of
its motion (the middle column), where section 1's random plane holds a few hundredths at most (an isotropic
random plane would hold 2/n on average). The shared plane is another matter. Fitted to the pooled iterates, it
follows the runs that travel farthest, and it holds the smallest share of the motion of the run that travels
least, GD (in full mode less than even the random plane does): most of GD's displacement θ_T − θ₀ is off the
plane, so the GD path drawn above is the short in-plane shadow of a longer path, not the path itself. All three
runs start at the same θ₀ and so share its distance from the plane (the `off_plane` coordinate of `project`); in
full mode that distance is each path's largest. To look at one optimizer's path, use the PCA plane of its own
trajectory, `ls.directions.pca(run.record)`.
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

code(r"""
# machine-readable summary (the notebook's test parses this line)
results = dict(quick=QUICK, grid=GRID, seconds=time.perf_counter() - T0, surface_seconds=t_surf, forward_seconds=t_fwd,
               forward_passes_per_grid_point=per_point, scale_diff=scale_diff, color_scales=color_scales,
               color_range=color_range, explained_variance=plane.meta["explained_variance"], paths=path_stats)
print(f"total run time {results['seconds']:.0f} s")
print("RESULTS " + json.dumps(results))
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
