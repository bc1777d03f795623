"""Loss-landscape grids: landscapes.surface (vmap-batched) vs pip `loss-landscapes` (random_plane, filter norm).

Two cases, a 21 x 21 plane each, in one process:
  (a) tanh MLP 784-200-200-10 (199,210 parameters) on 2,000 synthetic samples (gaussian-mixture problem):
      per-point cost of the grid vs one plain no-grad forward + loss (target <= 1.1x);
  (b) TensorFlow-Playground-size MLP 2-16-16-1 on the 500-point `spirals` problem: speedup over
      loss-landscapes (target >= 5x).
Both libraries evaluate the same loss (mean cross-entropy / BCE with logits) on the full data at every point.
Times are the median of --repeats runs after one warm-up. Needs `pip install loss-landscapes==3.0.6` (bench extra).

    python benchmarks/landscapes.py [--threads 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import workbench as wb  # noqa: E402
import landscapes as ls  # noqa: E402


def timeit(fn, repeats):
    fn()                                   # warm-up (allocations, vmap tracing caches, lazy imports)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def ll_plane(model, loss_fn, x, y, steps):
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(loss_fn, x, y)
    # deepcopy_model=True: loss-landscapes otherwise leaves the model moved to a grid corner
    return loss_landscapes.random_plane(model, metric, distance=1, steps=steps, normalization="filter",
                                        deepcopy_model=True)


def case(name, prob, loss_fn, steps, repeats, forward_ratio):
    model = prob.model
    x, y = prob.data()
    loss = lambda m, b: loss_fn(m(b[0]), b[1])          # noqa: E731 - loss only, the same work as loss-landscapes
    d = ls.directions.random(model, n=2, norm="filter", seed=0)
    n_pts = steps * steps

    def ours():
        return ls.surface(model, loss, (x, y), d, span=1.0, steps=steps, progress=False)

    def ours_loop():
        return ls.surface(model, loss, (x, y), d, span=1.0, steps=steps, method="loop", progress=False)

    def plain():
        with torch.no_grad():
            for _ in range(n_pts):
                loss(model, (x, y))

    def theirs():
        return ll_plane(model, loss_fn, x, y, steps)

    surf = ours()
    t_ours = timeit(ours, repeats)
    t_loop = timeit(ours_loop, repeats)
    t_plain = timeit(plain, repeats)
    t_ll = timeit(theirs, repeats)
    ref = theirs()
    row = dict(case=name, params=sum(p.numel() for p in model.parameters()), n=x.shape[0], points=n_pts,
               method=surf.attrs["method"], chunk=surf.attrs["chunk_size"],
               ours_ms=1e3 * t_ours / n_pts, loop_ms=1e3 * t_loop / n_pts, plain_ms=1e3 * t_plain / n_pts,
               ll_ms=1e3 * t_ll / n_pts, t_ours=t_ours, t_ll=t_ll,
               ours_center=float(surf.sel(alpha=0, beta=0)), ll_min=float(ref.min()), ll_max=float(ref.max()))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="torch intra-op threads for both libraries (default: torch's default, all cores)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=21)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import loss_landscapes  # noqa: F401
    except ImportError:
        sys.exit("needs loss-landscapes: pip install loss-landscapes==3.0.6 (the bench extra)")

    big = wb.problems.make("gaussian-mixture", seed=0, classes=10, dim=784, n_train=2000, width=200, depth=2,
                           activation="tanh")
    small = wb.problems.make("spirals", seed=0, n_train=500)
    rows = [case("(a) MLP 784-200-200-10", big, F.cross_entropy, args.steps, args.repeats, True),
            case("(b) MLP 2-16-16-1 spirals", small,
                 lambda o, t: F.binary_cross_entropy_with_logits(o.reshape(-1), t.reshape(-1).float()),
                 args.steps, args.repeats, False)]

    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.steps}x{args.steps} grid, "
          f"median of {args.repeats}")
    hdr = (f"{'case':28s} {'params':>8s} {'N':>5s} {'method':>6s} {'chunk':>5s} {'ours ms/pt':>10s} "
           f"{'loop ms/pt':>10s} {'fwd ms/pt':>9s} {'l-l ms/pt':>9s} {'ours/fwd':>8s} {'l-l/ours':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['case']:28s} {r['params']:8d} {r['n']:5d} {r['method']:>6s} {r['chunk']:5d} {r['ours_ms']:10.3f} "
              f"{r['loop_ms']:10.3f} {r['plain_ms']:9.3f} {r['ll_ms']:9.3f} {r['ours_ms'] / r['plain_ms']:8.2f}x "
              f"{r['ll_ms'] / r['ours_ms']:7.1f}x")
    a, b = rows
    print()
    print(f"target (a): per-point cost <= 1.1x a plain no-grad forward: {a['ours_ms'] / a['plain_ms']:.2f}x "
          f"-> {'MET' if a['ours_ms'] / a['plain_ms'] <= 1.1 else 'NOT MET'}")
    print(f"target (b): >= 5x faster than loss-landscapes: {b['t_ll'] / b['t_ours']:.1f}x "
          f"-> {'MET' if b['t_ll'] / b['t_ours'] >= 5 else 'NOT MET'}")
    print(f"sanity: loss at the center (a) {a['ours_center']:.4f}, (b) {b['ours_center']:.4f}; loss-landscapes "
          f"grid range (a) [{a['ll_min']:.3f}, {a['ll_max']:.3f}], (b) [{b['ll_min']:.3f}, {b['ll_max']:.3f}] "
          "(different random directions and span convention, so only the scale is comparable)")


if __name__ == "__main__":
    main()
