"""Cost of tracking sharpness during training: full-batch GD on sklearn digits (MSE, tanh MLP 64-200-200-10).

Runs the same training (same seed, same trajectory: probes never change it) four times:

1. no probes;
2. ``wb.probes.Sharpness(every=10)``: Lanczos warm-started from the previous probe's eigenvector,
   residual tol 1e-2 (a cold start every 20th probe), on the workbench Hessian operator (first-order graph built
   once per probe, reused by every product);
3. the edge-of-stability reference approach (Cohen et al. 2021, github.com/locuslab/edge-of-stability):
   ``scipy.sparse.linalg.eigsh(LinearOperator, k)`` from scratch at every probe with scipy's default tol=0, each
   product recomputing loss, gradient graph and double backward (their ``compute_hvp``);
4. eigsh from scratch again but on the workbench operator and tol=1e-3, to separate the effect of warm starts
   from that of the cached graph and the looser tolerance.

Prints wall time, the ratio to the run without probes, Hessian-vector products per probe and the largest
relative difference of the recorded sharpness from the reference. Usage::

    python benchmarks/dynamics.py                 # 2000 steps (a few minutes on one CPU core)
    python benchmarks/dynamics.py --steps 300     # quick look
"""
from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import scipy.sparse.linalg as sla
import torch

import workbench as wb
from workbench.probes import Probe, Sharpness, Var


class EigshReference(Probe):
    """λ_max by scipy eigsh from a random start at every probe (the EoS reference code's approach)."""

    default_name = "eigsh"

    def __init__(self, every=10, k=1, tol=0.0, cached=False, max_samples=5000, name=None):
        super().__init__(every, name)
        self.k, self.tol, self.cached, self.max_samples = k, tol, cached, max_samples

    def variables(self, ctx):
        return {self.name: Var("sharpness (eigsh)", "λ_max(H) by scipy eigsh from scratch"),
                f"{self.name}_hvps": Var("Hessian-vector products", "products used by eigsh", dtype="int64")}

    def measure(self, ctx):
        model, loss = ctx.model, ctx.problem.loss
        data = ctx.full_batch("train", self.max_samples)
        params = ctx.params
        n = sum(p.numel() for p in params)
        count = [0]
        model.eval()
        if self.cached:
            H = wb.curvature.hessian(model, loss, data)

            def hvp(v):
                return H.matvec(v)
        else:
            def hvp(v):      # as in the reference compute_hvp: graph rebuilt for every product
                L = loss(model, data)
                grads = torch.autograd.grad(L, params, create_graph=True)
                dot = torch.cat([g.reshape(-1) for g in grads]) @ v
                return torch.cat([h.reshape(-1) for h in torch.autograd.grad(dot, params)])

        def mv(vec):
            count[0] += 1
            v = torch.as_tensor(np.asarray(vec, dtype=np.float32).ravel(), device=ctx.device)
            return hvp(v).detach().cpu().numpy()

        op = sla.LinearOperator((n, n), matvec=mv, dtype=np.float32)
        vals = sla.eigsh(op, k=self.k, which="LA", tol=self.tol, return_eigenvectors=False)
        return {self.name: float(np.max(vals)), f"{self.name}_hvps": count[0]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.04,
                    help="GD step size (0.04: progressive sharpening to 2/lr = 50, then the edge of stability)")
    ap.add_argument("--ref-every", type=int, default=None,
                    help="probe interval of the eigsh reference runs (default --every); a sparser schedule keeps a "
                         "busy machine's benchmark short: the table then also estimates their cost at --every")
    ap.add_argument("--no-cached-eigsh", action="store_true", help="skip run 4 (eigsh, cached HVP, tol 1e-3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    prob = wb.problems.make("digits-mlp", width=200, depth=2, loss="mse", seed=args.seed)
    print(f"digits-mlp 64-200-200-10 tanh, MSE, {len(prob.train)} examples, {prob.n_params:,} parameters; "
          f"full-batch GD lr={args.lr} (2/lr = {2 / args.lr:g}), {args.steps} steps, probe every {args.every}, "
          f"torch threads {args.threads}, torch {torch.__version__}")

    ref_every = args.ref_every or args.every
    configs = [
        ("no probes", []),
        (f"Sharpness(every={args.every}) warm-started Lanczos, residual tol 1e-2", [Sharpness(every=args.every)]),
        (f"reference: eigsh from scratch, tol=0, HVP graph rebuilt per product (every {ref_every})",
         [EigshReference(every=ref_every, tol=0.0, cached=False)]),
    ]
    if not args.no_cached_eigsh:
        configs.append((f"eigsh from scratch, tol=1e-3, workbench cached HVP (every {ref_every})",
                        [EigshReference(every=ref_every, tol=1e-3, cached=True, name="eigsh_cached")]))
    rows, recs = [], {}
    for label, probes in configs:
        t0 = time.perf_counter()
        run = wb.train(prob, "gd", lr=args.lr, steps=args.steps, seed=args.seed, probes=probes, progress=False)
        secs = time.perf_counter() - t0
        rec = run.record
        recs[label] = rec
        row = {"label": label, "seconds": secs, "status": run.status}
        if probes:
            name = probes[0].name
            hv = rec[f"{name}_hvps"].values
            row.update(probe_seconds=float(rec[f"{name}_seconds"].sum()), n_probes=int(hv.size),
                       hvps_mean=float(hv.mean()), hvps_median=float(np.median(hv)), hvps_max=int(hv.max()),
                       hvps_after_first=float(hv[1:].mean()) if hv.size > 1 else math.nan,
                       sharp=rec[name].values, final=float(rec[name].values[-1]),
                       psteps=rec[f"{name}_step"].values)
        rows.append(row)
        print(f"  done: {label} ({secs:.1f} s, {run.status})", flush=True)

    base = rows[0]["seconds"]
    ref, ref_steps = rows[2]["sharp"], rows[2]["psteps"]
    n_at_every = args.steps // args.every + 1
    print()
    print(f"| run | wall s | × no probes | probe s | probes | s/probe | est. × at every={args.every} | "
          f"HVPs/probe mean (median, max) | final λ_max | max rel. diff vs reference |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        if "sharp" not in r:
            print(f"| {r['label']} | {r['seconds']:.1f} | 1.00 | – | – | – | – | – | – | – |")
            continue
        common = np.isin(r["psteps"], ref_steps)
        diff = float(np.max(np.abs(r["sharp"][common] - ref) / np.abs(ref)))
        per = r["probe_seconds"] / r["n_probes"]
        est = (base + per * n_at_every) / base
        print(f"| {r['label']} | {r['seconds']:.1f} | {r['seconds'] / base:.2f} | {r['probe_seconds']:.1f} | "
              f"{r['n_probes']} | {per:.3f} | {est:.2f} | {r['hvps_mean']:.1f} ({r['hvps_median']:.0f}, "
              f"{r['hvps_max']}) | {r['final']:.3f} | {diff:.1e} |")
    s = rows[1]["sharp"]
    print(f"\nsharpness (Sharpness probe) at steps 0, 25%, 50%, 75%, end: "
          f"{', '.join(f'{s[int(i)]:.2f}' for i in np.linspace(0, len(s) - 1, 5))}; 2/lr = {2 / args.lr:g}")
    loss = recs[configs[0][0]].loss.values
    print(f"loss at the same points: {', '.join(f'{loss[min(int(i), len(loss) - 1)]:.4f}' for i in np.linspace(0, len(loss), 5))}; "
          f"non-monotone steps: {int((np.diff(loss) > 0).sum())}")


if __name__ == "__main__":
    main()
