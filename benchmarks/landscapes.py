"""Loss-landscape grids: landscapes.surface (vmap-batched) vs pip `loss-landscapes` (random_plane, filter norm).

Two cases, a 21 x 21 plane each, in one process:
  (a) tanh MLP 784-200-200-10 (199,210 parameters) on 2,000 synthetic samples (gaussian-mixture problem):
      per-point cost of the grid vs one plain no-grad forward + loss (target <= 1.1x);
  (b) TensorFlow-Playground-size MLP 2-16-16-1 on the 500-point `spirals` problem: speedup over
      loss-landscapes (target >= 5x).
Both libraries evaluate the same loss (mean cross-entropy / BCE with logits) on the full data at every point.
Contenders are timed interleaved, best of several rounds after a warm-up (the machine may be shared). Needs `pip install loss-landscapes==3.0.6` (bench extra).

    python benchmarks/landscapes.py [--threads N] [--rounds 2]

``--model resnet20`` instead measures a real model: a filter-normalized 2D surface of a CIFAR ResNet-20
(``cifar-resnet``, ``data="synthetic"``, 269,722 parameters, BatchNorm in eval mode) over ``--n`` examples, per grid
point against one plain no-grad forward + loss over the same examples at the best batch size (swept over 32..n),
target <= 1.1x. It compares the two ways of batching: large data batches per grid point (the loop over points,
``batch_size``) and vmap over grid points (``chunk_size`` points per call on smaller data batches), and prints
the bf16-autocast difference to float32 (on CPU bf16 is emulated and slow: the difference is the point there).

    python benchmarks/landscapes.py --model resnet20 [--n 256] [--steps 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import workbench as wb  # noqa: E402
import landscapes as ls  # noqa: E402


def ll_plane(model, loss_fn, x, y, steps):
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(loss_fn, x, y)
    # deepcopy_model=True: loss-landscapes otherwise leaves the model moved to a grid corner
    return loss_landscapes.random_plane(model, metric, distance=1, steps=steps, normalization="filter",
                                        deepcopy_model=True)


def activation_floor(model, x, n_pts, reps=5):
    """Per-point time of the model's elementwise activations alone (torch.tanh etc. on every hidden unit of every
    example, for all grid points at once): a floor that any evaluation of the same network pays, ours and
    loss-landscapes alike. Returns (activation names, seconds per point)."""
    sizes, names = [], set()

    def hook(m, _inp, out):                # returns None: the output is left as it is
        sizes.append(out.numel())
        names.add(type(m).__name__)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Tanh, torch.nn.ReLU, torch.nn.GELU, torch.nn.Sigmoid))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    if not sizes:
        return None
    fns = {"Tanh": torch.tanh, "ReLU": torch.relu, "GELU": torch.nn.functional.gelu, "Sigmoid": torch.sigmoid}
    fn = fns[sorted(names)[0]]
    z = torch.randn(n_pts * sum(sizes))
    fn(z)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(z)
        best = min(best, time.perf_counter() - t0)
    return "/".join(sorted(names)), best / n_pts


def case(name, prob, loss_fn, steps, rounds, big):
    """Per-point times (seconds) of: ours (method="auto"), ours forced to vmap and to loop, a plain no-grad forward
    + loss, and loss-landscapes. The machine is shared, so the contenders are timed interleaved, one after the
    other in each of ``rounds`` rounds after a warm-up, and the best (minimum) time of each is kept: interference
    only ever adds time. On the big model the plain forward is timed on 100 calls (per-point cost)."""
    model = prob.model
    x, y = prob.data()
    loss = lambda m, b: loss_fn(m(b[0]), b[1])          # noqa: E731 - loss only, the same work as loss-landscapes
    d = ls.directions.random(model, n=2, norm="filter", seed=0)
    n_pts = steps * steps
    n_plain = 100 if big else n_pts

    def surf(method):
        return lambda: ls.surface(model, loss, (x, y), d, span=1.0, steps=steps, method=method, progress=False)

    def plain():
        with torch.no_grad():
            for _ in range(n_plain):
                loss(model, (x, y))

    auto = surf("auto")()
    fns = {"auto": (surf("auto"), n_pts), "vmap": (surf("vmap"), n_pts), "loop": (surf("loop"), n_pts),
           "plain": (plain, n_plain), "ll": (lambda: ll_plane(model, loss_fn, x, y, steps), n_pts)}
    if big:                                 # the loop is what "auto" runs here: do not time it twice
        fns.pop("loop")
    best = {k: float("inf") for k in fns}
    for r in range(rounds + 1):
        for k, (fn, n) in fns.items():
            t0 = time.perf_counter()
            fn()
            if r > 0:                       # round 0 is the warm-up
                best[k] = min(best[k], (time.perf_counter() - t0) / n)
    best.setdefault("loop", best["auto"])
    act = activation_floor(model, x, n_pts)
    ref = ll_plane(model, loss_fn, x, y, steps)
    return dict(case=name, params=sum(p.numel() for p in model.parameters()), n=x.shape[0], points=n_pts,
                method=auto.attrs["method"], chunk=auto.attrs["chunk_size"], t=best,
                center=float(auto.sel(alpha=0, beta=0)), act=act, ll_min=float(ref.min()), ll_max=float(ref.max()))


def resnet20_case(n, steps, rounds, device):
    """Per-grid-point seconds of landscapes.surface on a ResNet-20 vs the best plain forward pass over the same
    n examples; vmap-over-points vs big-batch loop; bf16 autocast vs float32."""
    prob = wb.problems.make("cifar-resnet", data="synthetic", depth=20, n_train=n, seed=0)
    model = prob.model.to(device).eval()
    x, y = (t.to(device) for t in prob.data())
    loss = lambda m, b: F.cross_entropy(m(b[0]), b[1])          # noqa: E731
    d = ls.directions.random(model, n=2, norm="filter", seed=0)
    n_pts = steps * steps
    sizes = [b for b in (32, 64, 128, 256, 512, 1024) if b < n] + [n]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def plain(bs):
        def go():
            with torch.no_grad():
                for i in range(0, n, bs):
                    loss(model, (x[i:i + bs], y[i:i + bs]))
            sync()
        return go

    def surf(**kw):
        def go():
            out = ls.surface(model, loss, (x, y), d, span=1.0, steps=steps, progress=False, **kw)
            sync()
            return out
        return go

    # round 0: the plain sweep picks the best batch size; then everything interleaved
    best_plain = {bs: float("inf") for bs in sizes}
    for bs in sizes:
        plain(bs)()
    for _ in range(max(rounds, 2)):
        for bs in sizes:
            t0 = time.perf_counter()
            plain(bs)()
            best_plain[bs] = min(best_plain[bs], time.perf_counter() - t0)
    bbs = min(best_plain, key=best_plain.get)
    contenders = {
        f"loop, batch {bbs} (auto)": (surf(batch_size=bbs), None),
        f"loop, batch {n}": (surf(batch_size=n, method="loop"), None),
        "vmap 4 pts, batch 64": (surf(batch_size=64, method="vmap", chunk_size=4), None),
        "vmap 2 pts, batch 128": (surf(batch_size=min(128, n), method="vmap", chunk_size=2), None),
    }
    times, attrs = {}, {}
    for r in range(rounds + 1):
        for k, (fn, _) in contenders.items():
            t0 = time.perf_counter()
            out = fn()
            dt = (time.perf_counter() - t0) / n_pts
            if r == 0:                         # warm-up round
                attrs[k] = out.attrs
                times[k] = float("inf")
                continue
            times[k] = min(times[k], dt)
        for bs in (bbs,):                      # the reference again, inside the rounds (shared machine)
            t0 = time.perf_counter()
            plain(bs)()
            best_plain[bs] = min(best_plain[bs], time.perf_counter() - t0)
    if device.type == "cuda":
        f32 = surf(batch_size=bbs)()
        t0 = time.perf_counter()
        b16 = surf(batch_size=bbs, autocast="bf16")()
        t16 = (time.perf_counter() - t0) / n_pts
        where16 = "the same grid"
    else:      # CPU bf16 convolutions are emulated (~50x slower): a 3-point line on 32 examples shows the difference
        kw = dict(span=1.0, steps=3, progress=False)
        f32 = ls.line(model, loss, (x[:32], y[:32]), d[0], **kw)
        t0 = time.perf_counter()
        b16 = ls.line(model, loss, (x[:32], y[:32]), d[0], autocast="bf16", **kw)
        t16 = (time.perf_counter() - t0) / 3
        where16 = "a 3-point line on 32 examples (CPU)"
    diff = (b16 - f32).values
    rel = float(np.max(np.abs(diff) / np.abs(f32.values)))
    return dict(sizes=sizes, plain=best_plain, bbs=bbs, times=times, attrs=attrs, n=n, steps=steps,
                params=sum(p.numel() for p in model.parameters()), rel16=rel, abs16=float(np.max(np.abs(diff))),
                t16=t16, where16=where16, lmin=float(f32.min()), lmax=float(f32.max()))


def main_resnet20(args):
    device = torch.device(args.device)
    load0 = os.getloadavg()
    r = resnet20_case(args.n, args.steps, args.rounds, device)
    load1 = os.getloadavg()
    print(f"ResNet-20 (cifar-resnet, synthetic data, {r['params']:,} params, BatchNorm eval mode), filter-normalized "
          f"{r['steps']}x{r['steps']} surface over {r['n']} examples; torch {torch.__version__}, {device}, "
          f"{torch.get_num_threads()} thread(s), best of {args.rounds} interleaved rounds")
    print(f"load average (1/5/15 min) at start {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, at end "
          f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}")
    print("plain no-grad forward + loss over the same examples, by batch size:")
    for bs in r["sizes"]:
        print(f"  batch {bs:5d}: {1e3 * r['plain'][bs]:9.1f} ms per pass" + ("   <- best" if bs == r["bbs"] else ""))
    fwd = r["plain"][r["bbs"]]
    print(f"{'landscapes.surface':28s} {'ms/pt':>9s} {'x fwd':>7s}  attrs")
    for k, t in r["times"].items():
        a = r["attrs"][k]
        print(f"  {k:26s} {1e3 * t:9.1f} {t / fwd:6.2f}x  method={a['method']} chunk={a['chunk_size']} "
              f"batch={a['batch_size']} passes/pt={a['forward_passes_per_point']}")
    best_k = min(r["times"], key=r["times"].get)
    auto_k = next(k for k in r["times"] if k.endswith("(auto)"))
    ra = r["times"][auto_k] / fwd
    print(f"fastest way: {best_k}")
    print(f"target: cost per grid point <= 1.1x one forward pass at the best batch size: {ra:.3f}x -> "
          f"{'MET' if ra <= 1.1 else 'NOT MET'}")
    print(f"bf16 autocast vs float32 on {r['where16']}: max |diff| {r['abs16']:.2e}, max relative "
          f"{r['rel16']:.2e} (float32 loss range [{r['lmin']:.3f}, {r['lmax']:.3f}]); bf16 {1e3 * r['t16']:.1f} ms/pt"
          + (" (CPU: bf16 is not faster here; autocast is meant for GPUs)" if device.type == "cpu" else ""))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="torch intra-op threads for both libraries (default: torch's default, all cores)")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds on (a); (b) gets max(rounds, 9)")
    ap.add_argument("--steps", type=int, default=21)
    ap.add_argument("--only", choices=["a", "b"], default=None, help="run one case only")
    ap.add_argument("--model", choices=["mlp", "resnet20"], default="mlp",
                    help="mlp: cases (a) and (b); resnet20: the ResNet-20 surface (steps default 5)")
    ap.add_argument("--n", type=int, default=256, help="examples for --model resnet20")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model == "resnet20":
        if "--steps" not in (argv if argv is not None else sys.argv):
            args.steps = 5
        return main_resnet20(args)
    load0 = os.getloadavg()[0]
    try:
        import loss_landscapes  # noqa: F401
    except ImportError:
        sys.exit("needs loss-landscapes: pip install loss-landscapes==3.0.6 (the bench extra)")

    big = wb.problems.make("gaussian-mixture", seed=0, classes=10, dim=784, n_train=2000, width=200, depth=2,
                           activation="tanh")
    small = wb.problems.make("spirals", seed=0, n_train=500)
    rows = []
    if args.only in (None, "a"):
        rows.append(case("(a) MLP 784-200-200-10", big, F.cross_entropy, args.steps, args.rounds, True))
    if args.only in (None, "b"):
        rows.append(case("(b) MLP 2-16-16-1 spirals", small,
                         lambda o, t: F.binary_cross_entropy_with_logits(o.reshape(-1), t.reshape(-1).float()),
                         args.steps, max(args.rounds, 9), False))          # cheap: more rounds against noise
    ms = lambda v: f"{1e3 * v:10.3f}"                  # noqa: E731

    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.steps}x{args.steps} grid, best of "
          f"{args.rounds} (a) / {max(args.rounds, 9)} (b) interleaved rounds; load average {load0:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end (2-core machine shared with other jobs)")
    hdr = (f"{'case':27s} {'params':>7s} {'N':>5s} {'auto':>5s} {'chunk':>5s} {'auto ms/pt':>10s} {'vmap ms/pt':>10s} "
           f"{'loop ms/pt':>10s} {'fwd ms/pt':>10s} {'l-l ms/pt':>10s} {'auto/fwd':>8s} {'l-l/auto':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        t = r["t"]
        print(f"{r['case']:27s} {r['params']:7d} {r['n']:5d} {r['method']:>5s} {r['chunk']:5d} {ms(t['auto'])} "
              f"{ms(t['vmap'])} {ms(t['loop'])} {ms(t['plain'])} {ms(t['ll'])} {t['auto'] / t['plain']:7.2f}x "
              f"{t['ll'] / t['auto']:7.1f}x")
    print()
    for r in rows:
        if r["case"].startswith("(a)"):
            ra = r["t"]["auto"] / r["t"]["plain"]
            print(f"target (a): per-point cost <= 1.1x a plain no-grad forward: {ra:.2f}x -> "
                  f"{'MET' if ra <= 1.1 else 'NOT MET'}")
        else:
            rb = r["t"]["ll"] / r["t"]["auto"]
            print(f"target (b): >= 5x faster than loss-landscapes: {rb:.1f}x -> {'MET' if rb >= 5 else 'NOT MET'}")
    for r in rows:
        if r["act"] is not None:
            names, per = r["act"]
            print(f"floor {r['case'][:3]}: the {names} activations alone cost {1e3 * per:.3f} ms/pt "
                  f"({per / r['t']['auto']:.0%} of ours, {per / r['t']['ll']:.0%} of loss-landscapes'); the best "
                  f"possible speedup over loss-landscapes with this torch kernel is < {r['t']['ll'] / per:.1f}x")
    for r in rows:
        print(f"sanity {r['case'][:3]}: loss at the center {r['center']:.4f}; loss-landscapes grid range "
              f"[{r['ll_min']:.3f}, {r['ll_max']:.3f}] (other random directions and span convention)")


if __name__ == "__main__":
    main()
