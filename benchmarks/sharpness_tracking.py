"""Cost and accuracy of sharpness tracking during training: untracked vs ``Sharpness(every=10)`` exact vs fast.

For each model the same full-batch GD run (same seed, so the same trajectory: probes never change it) is trained
in this process

1. without probes;
2. with ``Sharpness(every=10, method="exact")``: Lanczos on double-backward Hessian-vector products, warm-started
   (k + 1 pairs, the 2(k+1)-vector basis floor), a cold start every 20th call;
3. with ``Sharpness(every=10, method="fast")``: products by forward differences of gradients reusing the training
   step's gradient, a warm single-vector Rayleigh-Ritz refinement that stops when ‖Hv − λv‖ ≤ tol·|λ|, a cold
   solve every 20th call;
4. (accuracy only, not timed against the others) a reference probe every ``--ref-every`` steps: exact products,
   cold start, residual tol 1e-4, 2 guard pairs.

Prints wall and process CPU time (with one torch thread the CPU time is the compute, less sensitive to a
shared machine's load than wall time), their ratios to the untracked run, gradients / products per call, the largest relative difference
fast vs exact along the run (and of both vs the reference where it measured), and the load average, which on a
shared machine moves every ratio. Models: ``digits`` (MLP 64-200-200-10 tanh, MSE, lr 0.04: progressive sharpening
to 2/lr = 50, then the edge of stability, as benchmarks/dynamics.py) and ``conv`` (fashion-cnn, conv 16-32 ReLU,
``--conv-n`` examples, MSE, 2/lr = 130 just below the initial sharpness ~138: a catapult, then the edge).

Usage::

    python benchmarks/sharpness_tracking.py                    # both models, defaults below
    python benchmarks/sharpness_tracking.py --models digits --steps 600
"""
from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np
import torch

import workbench as wb
from workbench.probes import Sharpness


def _load():
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average n/a"


def _setup(name, args):
    if name == "digits":
        prob = wb.problems.make("digits-mlp", width=200, depth=2, loss="mse", seed=args.seed)
        return prob, args.lr_digits, args.steps, f"digits-mlp 64-200-200-10 tanh MSE, {len(prob.train)} examples"
    if name == "conv":
        prob = wb.problems.make("fashion-cnn", n_train=args.conv_n, n_test=100, width=args.conv_width,
                                seed=args.seed, loss="mse")
        w = args.conv_width
        return prob, args.lr_conv, args.conv_steps, (f"fashion-cnn conv {w}-{2 * w} ReLU MSE, {len(prob.train)} "
                                                     "examples")
    raise ValueError(f"--models: unknown model {name!r}; choose digits, conv")


def bench(name, args):
    prob, lr, steps, text = _setup(name, args)
    print(f"\n## {name}: {text}, {prob.n_params:,} parameters; full-batch GD lr={lr} (2/lr = {2 / lr:g}), "
          f"{steps} steps, probe every {args.every}; {_load()}", flush=True)
    kw = dict(lr=lr, steps=steps, seed=args.seed, progress=False, device="cpu")
    configs = [("untracked", []),
               ("exact", [Sharpness(every=args.every, method="exact", name="exact")]),
               ("fast", [Sharpness(every=args.every, method="fast", name="fast")])]
    # warm-up (allocator, first-call costs) so the first timed run is not penalised
    wb.train(prob, "gd", **{**kw, "steps": 5})
    rows, recs = [], {}
    for rep in range(args.repeats):
        for label, probes in configs:
            t0, c0 = time.perf_counter(), time.process_time()
            run = wb.train(prob, "gd", probes=[type(p)(**_ctor(p)) for p in probes], **kw)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows.append((label, rep, secs, cpu))
            recs[label] = run.record
            print(f"  {label} rep {rep}: {secs:.1f} s wall, {cpu:.1f} s CPU ({run.status}; {_load()})", flush=True)
    ref = None
    if args.ref_every:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = wb.train(prob, "gd", probes=[Sharpness(every=args.ref_every, tol=1e-4, warm_start=False, guard=2,
                                                         name="ref")], **kw).record
    times = {label: min(s for l_, _, s, _ in rows if l_ == label) for label, _ in configs}
    cpus = {label: min(c for l_, _, _, c in rows if l_ == label) for label, _ in configs}
    base, cbase = times["untracked"], cpus["untracked"]
    ex, fa = recs["exact"], recs["fast"]
    diff = np.abs(fa["fast"].values - ex["exact"].values) / np.abs(ex["exact"].values)
    worst = int(np.argmax(diff))
    print(f"\n| {name} | wall s (best of {args.repeats}) | × untracked | CPU s | × untracked (CPU) | gradients or "
          "HVPs / call (mean, warm median) | probe s / call | max rel. diff vs reference |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    print(f"| untracked | {base:.1f} | 1.00 | {cbase:.1f} | 1.00 | – | – | – |")
    for label, rec in (("exact", ex), ("fast", fa)):
        if label == "fast":
            cost = rec["fast_gradients"].values
            warm = cost[rec["fast_cold"].values == 0]
            unit = "gradients"
        else:
            cost = rec["exact_hvps"].values
            warm = cost[1:]
            unit = "HVPs"
        vsref = "–"
        if ref is not None:
            steps_r = ref["ref_step"].values
            mask = np.isin(rec[f"{label}_step"].values, steps_r)
            r_at = ref["ref"].sel(ref_step=rec[f"{label}_step"].values[mask]).values
            vsref = f"{np.max(np.abs(rec[label].values[mask] - r_at) / np.abs(r_at)):.1e}"
        print(f"| {label} | {times[label]:.1f} | {times[label] / base:.2f} | {cpus[label]:.1f} | "
              f"{cpus[label] / cbase:.2f} | {cost.mean():.2f} {unit} "
              f"({np.median(warm):.0f}) | {rec[f'{label}_seconds'].values.mean():.4f} | {vsref} |")
    s = ex["exact"].values
    print(f"\nfast vs exact along the run: largest relative difference {diff.max():.2e} at step "
          f"{int(ex['exact_step'].values[worst])} (exact {s[worst]:.4f}, fast {fa['fast'].values[worst]:.4f}); "
          f"median {np.median(diff):.1e}; calls > 1%: {int((diff > 0.01).sum())} of {diff.size}")
    print(f"sharpness (exact) at 0, 25%, 50%, 75%, end: "
          f"{', '.join(f'{s[int(i)]:.2f}' for i in np.linspace(0, len(s) - 1, 5))}; 2/lr = {2 / lr:g}; "
          f"fast / untracked = {times['fast'] / base:.2f} wall, {cpus['fast'] / cbase:.2f} CPU (target <= 1.3); "
          f"{_load()}")
    return times, diff


def _ctor(p):
    """Constructor arguments of a Sharpness probe (a fresh probe per run)."""
    cfg = p.config()
    cfg.pop("type")
    return cfg


def model_args(ap):
    """The models' arguments, shared with benchmarks/sharpness_strategies.py."""
    ap.add_argument("--models", default="digits,conv")
    ap.add_argument("--steps", type=int, default=2000, help="digits steps")
    ap.add_argument("--conv-steps", type=int, default=300)
    ap.add_argument("--conv-n", type=int, default=256, help="fashion-cnn training examples (full batch)")
    ap.add_argument("--conv-width", type=int, default=16, help="fashion-cnn channels of the first conv layer")
    ap.add_argument("--lr-digits", type=float, default=0.04)
    ap.add_argument("--lr-conv", type=float, default=2 / 130,
                    help="GD step size on the conv net (default 2/130: the stability threshold just below the "
                         "initial sharpness, about 138, so the run starts at the edge of stability)")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)


def run_models(args, bench, threads: int = 1):
    """``bench(name, args)`` for each of ``--models`` with ``threads`` torch threads, warnings off."""
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    print(f"torch {torch.__version__}, {threads} thread(s), {_load()}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        bench(name, args)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args(ap)
    ap.add_argument("--ref-every", type=int, default=100, help="reference probe interval (0: none)")
    ap.add_argument("--repeats", type=int, default=1, help="timed repetitions (the best is reported)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    run_models(args, bench, args.threads)


if __name__ == "__main__":
    main()
