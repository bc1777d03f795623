"""How cheap can safe sharpness tracking get? Warm-start strategies of fast mode replayed on the same trajectory.

The models, step sizes and runs are those of ``benchmarks/sharpness_tracking.py``: one full-batch GD run (same
seed) records θ_t and the training step's gradient g_t at every probe step (every ``--every``). At each recorded
point a tight reference λ_max (exact double-backward products, cold Lanczos, residual tol 1e-5, 3 pairs) is computed
once; then each strategy replays fast mode's sequence of calls on the recorded points (finite-difference products
reusing g_t, residual tol 1e-2 as the default probe, a cold solve every ``--refresh``-th call plus its one exact
check, counted as 2 gradients) and is scored by products (= gradient evaluations) per call and its largest error
against the reference. The start block of a warm call is what differs:

* ``v1,v2,g`` (the default): the previous top pair, the guard pair and the gradient;
* ``v1,v2``: no gradient column;  ``v1,g``: no guard pair;  ``v1``: single-vector refinement;
* ``alternate``: the default block on even calls, ``v1`` alone on odd ones.

The products of a call are what tracking costs: with a product costing one training step's gradient, tracking every
``E`` steps costs about 1 + (products per call)/E times the untracked run (``benchmarks/sharpness_tracking.py``
measures the real ratio, with the product's own cost). Counting is deterministic, so this script is insensitive to the
machine's load; it prints the load average anyway.

    python benchmarks/sharpness_strategies.py --models digits,conv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workbench as wb  # noqa: E402
from workbench import curvature as C  # noqa: E402
from workbench.probes.base import Probe, Var  # noqa: E402
from workbench.probes.curvature import _refine_top, _top_eigs, gradient_difference_operator  # noqa: E402
from sharpness_tracking import _load, _setup, model_args, run_models  # noqa: E402

STRATEGIES = ("v1,v2,g", "v1,v2", "v1,g", "v1", "alternate")
TOL = 1e-2            # the probe's default residual tolerance
COLD_CHECK = 2        # a cold call's exact check: one double-backward product, about 2 gradients


class _Record(Probe):
    """Keeps θ_t and the training step's gradient at every call (replay input; records nothing)."""
    default_name = "replay"

    def __init__(self, every):
        super().__init__(every)
        self.theta, self.grad = [], []

    def variables(self, ctx):
        return {"replay": Var("replay", "unused")}

    def measure(self, ctx):
        g = ctx.flat_grad()
        if g is not None:
            self.theta.append(torch.nn.utils.parameters_to_vector(ctx.model.parameters()).detach().clone())
            self.grad.append(g.detach().clone())
        return {"replay": 0.0}


def _start_block(kind, V, g, call):
    full = torch.cat([V[:, :2], g], 1)
    return {"v1,v2,g": full, "v1,v2": V[:, :2], "v1,g": torch.cat([V[:, :1], g], 1), "v1": V[:, :1],
            "alternate": full if call % 2 == 0 else V[:, :1]}[kind]


def replay(kind, model, loss, data, theta, grad, refresh, ref):
    V, vals, cost = None, [], []
    for i, (th, g) in enumerate(zip(theta, grad)):
        torch.nn.utils.vector_to_parameters(th, model.parameters())
        op = gradient_difference_operator(model, loss, data, "eval", g.clone())
        if V is None or i % refresh == 0:
            res, extra = _top_eigs(op, 2, TOL, 80, None, seed=i), COLD_CHECK
        else:
            res, extra = _refine_top(op, _start_block(kind, V, g.reshape(-1, 1), i), 1, TOL, 20, seed=i), 0
        W = res.vectors.detach()
        V = W if W.shape[1] >= 2 else torch.cat([W, V[:, 1:2]], 1)     # a one-vector call keeps the old guard
        vals.append(float(res.values[0]))
        cost.append(int(op.n_matvec) + extra)
    err = np.abs(np.array(vals) - ref) / ref
    return np.array(cost), err


def bench(name, args):
    prob, lr, steps, text = _setup(name, args)
    rec = _Record(args.every)
    run = wb.train(prob, "gd", lr=lr, steps=steps, seed=args.seed, probes=[rec], progress=False, device="cpu")
    model, loss, data = run.model, prob.loss, prob.data("train")
    ref, gap = [], []
    for th in rec.theta:
        torch.nn.utils.vector_to_parameters(th, model.parameters())
        r = C.eigs(C.hessian(model, loss, data), k=3, which="LA", tol=1e-5)
        top = r.values.double().cpu().numpy()
        ref.append(top[0])
        gap.append((top[0] - top[1]) / top[0])
    ref, gap = np.array(ref), np.array(gap)
    print(f"\n## {name}: {text}, {prob.n_params:,} parameters; GD lr={lr:g} (2/lr = {2 / lr:g}), {steps} steps, "
          f"{len(ref)} calls (every {args.every}), cold every {args.refresh}; reference λ_max {ref[0]:.2f} → "
          f"{ref[-1]:.2f}, relative gap (λ1 − λ2)/λ1 median {np.median(gap):.3f}, min {gap.min():.4f}; {_load()}")
    print("\n| start block of a warm call | gradients / call (mean) | warm calls (mean) | largest error vs reference "
          "| calls > 1% | median error | ≈ tracking cost × untracked |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    cold = np.arange(len(ref)) % args.refresh == 0
    for kind in args.strategies.split(","):
        cost, err = replay(kind.replace("+", ","), model, loss, data, rec.theta, rec.grad, args.refresh, ref)
        print(f"| {kind.replace('+', ',')} | {cost.mean():.2f} | {cost[~cold].mean():.2f} | {err.max():.2%} | "
              f"{int((err > 0.01).sum())} | {np.median(err):.1e} | {1 + cost.mean() / args.every:.2f} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args(ap)
    ap.add_argument("--strategies", default="v1+v2+g,v1+v2,v1+g,v1,alternate",
                    help="comma-separated; write a block's columns with + (v1+v2+g)")
    ap.add_argument("--refresh", type=int, default=20)
    args = ap.parse_args(argv)
    for kind in args.strategies.split(","):
        if kind.replace("+", ",") not in STRATEGIES:
            names = ", ".join(s.replace(",", "+") for s in STRATEGIES)
            raise SystemExit(f"--strategies: unknown {kind!r}; choose from {names}")
    run_models(args, bench)

if __name__ == "__main__":
    main()
