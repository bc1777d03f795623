"""Build notebooks/08_mode_connectivity.ipynb (run: python notebooks/src/08_mode_connectivity.py [--execute]).

The notebook is written without outputs; ``--execute`` runs it in quick mode (WORKBENCH_QUICK=1) to check it.
"""
from __future__ import annotations

from _nbgen import Cells, main, notebook

cells = Cells()
md, code = cells.md, cells.code

md(r"""
# 08 · Mode connectivity: the straight line has a barrier, a trained curve does not

Two networks trained from different random seeds reach different minima. On the straight line between them the
loss rises: a **barrier**. Garipov, Izmailov, Podoprikhin, Vetrov & Wilson (2018, *Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs*) and Draxler, Veschgini, Salmhofer & Hamprecht (2018, *Essentially No
Barriers in Neural Network Energy Landscape*) showed that a simple **curve** – a quadratic Bezier curve
φ(t) = (1-t)² θ_a + 2t(1-t) θ_c + t² θ_b with a trained middle control point θ_c – joins them at almost
constant low loss.

`landscapes` provides:

* `linear_path(model_a, model_b, loss, data)`: the loss (and accuracy) along the line, evaluated batched over t,
  with the barrier height `max_t L(t) - [(1-t) L(0) + t L(1)]` in `attrs`;
* `bezier(model_a, model_b, loss, data, steps, optimizer, lr)`: trains θ_c (each step draws t ~ U(0, 1) and
  takes an optimizer step from `wb.optimizers` on L(φ(t))); `curve.path(loss, data)` evaluates it;
* BatchNorm: the running statistics of the end points are meaningless in between, so for models with BatchNorm
  both paths recompute them at every t (`refresh_bn="auto"`);
* `directions.plane(a, b, c)`: the plane through three points, where the whole curve lives.

**Run time**: 25 s in full mode on a 2-core CPU (measured, 3000 training and Bezier steps); `WORKBENCH_QUICK=1`
(400 / 300 steps) is faster still.
""")

code(r"""
import os, time
import numpy as np
import torch
import plotly.graph_objects as go

import workbench as wb
import landscapes as ls

QUICK = os.environ.get("WORKBENCH_QUICK") == "1"
torch.set_num_threads(1 if QUICK else max(1, torch.get_num_threads()))
STEPS = 400 if QUICK else 3000          # training steps of each network
CURVE_STEPS = 300 if QUICK else 3000    # Bezier training steps
CURVE_OPT, CURVE_LR, CURVE_BATCH = "adam", 0.01, 128   # how the curve's control point is trained
T = 21 if QUICK else 41                 # points along each path
GRID = 11 if QUICK else 31
print("quick mode" if QUICK else "full mode")
""")

md(r"""
## 1 · Two independently trained MLPs

Same data, same architecture, different initializations (seed 1 and seed 2), both trained with Adam to low loss.
""")

code(r"""
prob = wb.problems.make("spirals", seed=0, width=32, depth=2, activation="relu", n_train=400, noise=0.05)
data, test = prob.data(), prob.data("test")
import copy

def with_init(model):
    # the same problem (data, loss) starting from another initial model: wb.train trains a copy of problem.model
    p = copy.copy(prob)
    p.model = model
    return p

# same data (problem seed 0), different initializations (seeds 1 and 2)
models = [wb.train(with_init(prob.new_model(seed=s)), optimizer="adam", lr=0.01, steps=STEPS, progress=False).model
          for s in (1, 2)]
a, b = models
for name, m in zip("ab", models):
    print(name, "train", prob.evaluate(m, data), "test", prob.evaluate(m, test))
dist = float((torch.cat([p.detach().reshape(-1) for p in a.parameters()]) -
              torch.cat([p.detach().reshape(-1) for p in b.parameters()])).norm())
print(f"distance between the solutions: {dist:.2f}")
""")

md(r"""
## 2 · The straight line
""")

code(r"""
lin = ls.linear_path(a, b, prob.loss, data, steps=T)
lin_test = ls.linear_path(a, b, prob.loss, test, steps=T)
print(f"linear barrier: train {lin.attrs['barrier']:.3f} at t = {lin.attrs['barrier_t']:.2f}, "
      f"test {lin_test.attrs['barrier']:.3f}; evaluated with {lin.attrs['method']}")
""")

md(r"""
## 3 · A trained Bezier curve

Only the middle control point is trained; its initial value is the midpoint of the segment (plus a tiny seeded
nudge so training can leave the straight line). Mini-batches of 128, Adam.
""")

code(r"""
t0 = time.perf_counter()
curve = ls.bezier(a, b, prob.loss, data, steps=CURVE_STEPS, optimizer=CURVE_OPT, lr=CURVE_LR,
                  batch_size=CURVE_BATCH, seed=0, progress=False)
print(f"trained the curve's control point with {CURVE_OPT} (lr {CURVE_LR}, mini-batches of {CURVE_BATCH}) for "
      f"{len(curve.history)} steps in {time.perf_counter() - t0:.1f}s; last training losses "
      f"{np.round(curve.history.values[-5:], 4)}")
bz = curve.path(prob.loss, data, steps=T)
bz_test = curve.path(prob.loss, test, steps=T)
print(f"Bezier barrier: train {bz.attrs['barrier']:.3f}, test {bz_test.attrs['barrier']:.3f} "
      f"(linear: {lin.attrs['barrier']:.3f}, {lin_test.attrs['barrier']:.3f})")
""")

code(r"""
fig = go.Figure()
for path, name, dash in ((lin, "line, train", None), (lin_test, "line, test", "dot"),
                         (bz, "Bezier, train", None), (bz_test, "Bezier, test", "dot")):
    fig.add_trace(go.Scatter(x=path.t, y=path.values, name=name, line=dict(dash=dash)))
fig.update_layout(xaxis_title="t", yaxis_title="loss", template="plotly_white", height=380,
                  title="Loss along the straight line and along the trained Bezier curve")
fig
""")

code(r"""
fig = go.Figure()
for path, name in ((lin_test, "line"), (bz_test, "Bezier")):
    fig.add_trace(go.Scatter(x=path.t, y=path.accuracy, name=name))
fig.update_layout(xaxis_title="t", yaxis_title="test accuracy", template="plotly_white", height=320)
fig
""")

md(r"""
## 4 · The plane through θ_a, θ_b and θ_c

A quadratic Bezier curve lies in the plane of its three control points, so one surface shows both paths exactly:
the segment from a (0, 0) to b (1, 0) and the curve bending through the low-loss valley.
""")

code(r"""
plane = ls.directions.plane(a, a, b, curve.control)
pts = plane.meta["points"]
print("plane coordinates:", {k: np.round(v, 3) for k, v in pts.items()})
ymax = max(pts["c"][1], 0.5)
surf = ls.surface(a, prob.loss, data, plane, span=[(-0.3, 1.3), (-0.4 * ymax, 1.2 * ymax)], steps=GRID)
t = np.linspace(0, 1, 50)
curve_pts = np.stack([curve.point(float(s)).double().numpy() for s in t])
line_pts = np.stack([((1 - s) * plane.center + s * (plane.center + plane.vectors[0])).double().numpy() for s in t])
paths = ls.project([line_pts, curve_pts], plane, labels=["straight line", "Bezier curve"])
fig = ls.plot(surf, trajectory=paths, log=True)
fig.update_layout(title="Loss on the plane through both solutions and the curve's control point (log10)")
fig
""")

md(r"""
## 5 · BatchNorm: recompute the statistics along the path

With BatchNorm, the running statistics stored in a and b do not fit the weights in between. `linear_path`
recomputes them at every t from the training data (`refresh_bn="auto"`, the default), as Garipov et al. do.
With `refresh_bn=False` the path uses model a's statistics everywhere: its start t = 0 is model a, but its end
point t = 1 is b's weights with a's statistics, not model b; its loss is far from b's own (printed below), so the
curve and its barrier (measured against the chord between the end losses) describe no actual network. With
recomputed statistics the end points are a's and b's weights with statistics computed exactly on the training
set. Their losses are not the models' own either, since those were measured with the running statistics that
training left behind (an exponential average of mini-batch statistics taken at earlier weights), but the gap is
a small fraction of the stale end point's (the cell checks it is under a tenth). The models themselves are never
touched.
""")

code(r"""
from torch import nn
from workbench.problems.base import seeded

def bn_mlp():
    return nn.Sequential(nn.Linear(2, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32), nn.BatchNorm1d(32),
                         nn.ReLU(), nn.Linear(32, 1))

bn_models = [wb.train(with_init(seeded(s, bn_mlp)), optimizer="adam", lr=0.01, steps=STEPS, batch_size=128,
                      progress=False).model for s in (1, 2)]
for m in bn_models:
    print("train", prob.evaluate(m.eval(), data))
refreshed = ls.linear_path(*bn_models, prob.loss, data, steps=T)
stale = ls.linear_path(*bn_models, prob.loss, data, steps=T, refresh_bn=False)
print(f"barrier with recomputed BatchNorm statistics: {refreshed.attrs['barrier']:.3f}")
own = [prob.evaluate(m, data)["loss"] for m in bn_models]
print(f"model a's and b's own losses (their running statistics): {own[0]:.4f}, {own[1]:.4f}")
print(f"path ends t = 0, 1 with statistics recomputed on the training data: {float(refreshed[0]):.4f}, "
      f"{float(refreshed[-1]):.4f}")
print(f"path ends t = 0, 1 with model a's statistics everywhere:           {float(stale[0]):.4f}, "
      f"{float(stale[-1]):.4f}")
assert abs(float(stale[0]) - own[0]) < 1e-4 * (1 + own[0])          # t = 0 *is* model a
assert abs(float(stale[-1]) - own[1]) > 10 * abs(float(refreshed[-1]) - own[1])
fig = go.Figure([go.Scatter(x=refreshed.t, y=refreshed.values, name="statistics recomputed at each t"),
                 go.Scatter(x=stale.t, y=stale.values, name="model a's running statistics")])
fig.update_layout(xaxis_title="t", yaxis_title="train loss", template="plotly_white", height=350)
fig
""")

md(r"""
## Takeaways

* Independently trained networks sit in what looks like separate basins along the straight line, yet a
  quadratic Bezier curve whose one middle control point is trained with Adam (lr 0.01, mini-batches of 128) for
  3000 steps (300 in quick mode; section 3 prints the count) joins them at low loss: the minima are **connected**.
* Barriers are only meaningful relative to the end losses (`barrier` subtracts the chord) and, with BatchNorm,
  only after recomputing the statistics along the path.
* Permutation symmetry is one reason the straight line fails: aligning hidden units first (Git Re-Basin,
  Ainsworth et al. 2023) makes the linear barrier vanish for wide networks.
""")


if __name__ == "__main__":
    main(notebook(cells), "08_mode_connectivity.ipynb")
