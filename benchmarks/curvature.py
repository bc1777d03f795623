"""Curvature benchmark: workbench.curvature vs PyHessian, curvlinops(+scipy eigsh) and hessian-eigenthings.

One process, one model (tanh MLP 784-200-200-10, ~199k parameters), 2000 synthetic samples (10 Gaussian
classes), CPU, cross-entropy loss, full batch, eval mode. For every library and task it prints wall time, the
number of Hessian-vector products (HVPs) and the true relative error:

  top-1     largest eigenvalue;            reference: scipy eigsh (tol 1e-10) on the exact HVP
  top-5     5 largest eigenvalues (max relative error over the 5)
  SLQ       4 probes x 50 Lanczos steps;   errors of the density's first moment (n * E[lambda], i.e. the trace)
            and of its largest node vs lambda_1
  Hutch++   99 products;                   reference: exact trace = sum of BackPACK's exact Hessian diagonal

Eigenvalue tasks sweep each library's accuracy knob; every setting runs from ``--seeds`` start vectors (default 3:
median time and HVPs, worst error, since one lucky or unlucky start can decide a single-seed comparison), and the
summary keeps, per library, the fastest setting whose worst error reaches the target (1e-3 for top-1 and top-5);
ratios are workbench time / anchor time.
Install the anchors with the ``bench`` extra. Run:  python benchmarks/curvature.py [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import sys
import time
import traceback
import warnings

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import workbench as wb  # noqa: E402
from workbench.curvature import eigs, hessian, spectral_density, trace  # noqa: E402

TARGET = 1e-3


def make_problem(seed=0, n=2000, d=784, classes=10, widths=(200, 200)):
    g = torch.Generator().manual_seed(seed)
    means = 0.3 * torch.randn(classes, d, generator=g)          # class means ~8.4 noise std apart
    y = torch.arange(n) % classes
    x = means[y] + torch.randn(n, d, generator=g)
    model = wb.problems.base.seeded(seed, lambda: wb.problems.models.mlp(d, classes, list(widths), "tanh"))
    model.eval()
    return model, x, y


def loss_fn(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


class Row:
    def __init__(self, task, lib, setting, seconds, hvps, err, note=""):
        self.task, self.lib, self.setting, self.seconds, self.hvps, self.err, self.note = \
            task, lib, setting, seconds, hvps, err, note


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rel_err(vals, ref):
    vals = np.sort(np.asarray(vals, dtype=np.float64))[::-1][:len(ref)]
    if len(vals) < len(ref):
        return float("inf")
    return float(np.max(np.abs(vals - ref) / np.abs(ref)))


# -- references ------------------------------------------------------------------------------------------------
def reference(model, x, y):
    from scipy.sparse.linalg import LinearOperator as SLO, eigsh
    H = hessian(model, loss_fn, (x, y))
    A = SLO((H.size, H.size), matvec=lambda v: H.matvec(torch.as_tensor(np.asarray(v).reshape(-1),
                                                                        dtype=torch.float32)).double().numpy(),
            dtype=np.float64)
    vals = eigsh(A, k=6, which="LA", tol=1e-10, ncv=40, return_eigenvectors=False)
    top = np.sort(vals)[::-1]
    from backpack import backpack, extend
    from backpack.extensions import DiagHessian
    m2 = extend(copy.deepcopy(model))
    lf = extend(torch.nn.CrossEntropyLoss())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = lf(m2(x), y)
        with backpack(DiagHessian()):
            loss.backward()
    tr = float(sum(p.diag_h.double().sum() for p in m2.parameters()))
    return top, tr, H.n_matvec


# -- workbench ---------------------------------------------------------------------------------------------------
def wb_top(model, x, y, k, tol, seed=0):
    H = hessian(model, loss_fn, (x, y))
    res, t = timed(lambda: eigs(H, k=k, which="LA", tol=tol, seed=seed, warn=False))
    return res.values.numpy(), t, H.n_matvec, f"tol={tol:g}" + ("" if res.converged else " (not conv.)")


def wb_slq(model, x, y):
    H = hessian(model, loss_fn, (x, y))
    d, t = timed(lambda: spectral_density(H, probes=4, steps=50, seed=0))
    nodes, w = d.attrs["nodes"], d.attrs["weights"] / d.attrs["probes"]
    return float(H.size * (nodes * w).sum()), float(nodes.max()), t, H.n_matvec


def wb_trace(model, x, y, seed=0):
    H = hessian(model, loss_fn, (x, y))
    r, t = timed(lambda: trace(H, method="hutch++", n=99, seed=seed))
    return r.value, t, H.n_matvec, r.stderr


# -- PyHessian ---------------------------------------------------------------------------------------------------
class _PyHCounter:
    def __init__(self):
        import pyhessian  # noqa: F401  (the package re-exports the class under the submodule's name)
        ph = sys.modules["pyhessian.hessian"]
        self.ph, self.n = ph, 0
        self.orig = ph.hessian_vector_product

        def counted(gradsH, params, v):
            self.n += 1
            return self.orig(gradsH, params, v)
        ph.hessian_vector_product = counted


def pyh_make(model, x, y, counter):
    from pyhessian import hessian as PyH
    counter.n = 0
    return PyH(copy.deepcopy(model), torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)


def pyh_top(model, x, y, k, tol, counter, max_iter=1000, seed=0):
    def run():
        h = pyh_make(model, x, y, counter)
        torch.manual_seed(seed)                  # PyHessian draws its start vectors from the global RNG
        return h.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)[0]
    vals, t = timed(run)
    return np.array(vals), t, counter.n, f"tol={tol:g}"


def pyh_slq(model, x, y, counter):
    def run():
        h = pyh_make(model, x, y, counter)
        e, w = h.density(iter=50, n_v=4)
        return np.array(e), np.array(w)
    (e, w), t = timed(run)
    n = sum(p.numel() for p in model.parameters())
    return float(n * (e * w).sum() / e.shape[0]), float(e.max()), t, counter.n


def pyh_trace(model, x, y, counter, seed=0):
    # PyHessian's trace is plain Hutchinson with a stopping rule; give it the same 99-product budget
    def run():
        h = pyh_make(model, x, y, counter)
        torch.manual_seed(seed)
        return float(np.mean(h.trace(maxIter=99, tol=0.0)))
    v, t = timed(run)
    return v, t, counter.n


# -- curvlinops --------------------------------------------------------------------------------------------------
def cl_make(model, x, y):
    from curvlinops import HessianLinearOperator
    m = copy.deepcopy(model)
    params = [p for p in m.parameters() if p.requires_grad]
    H = HessianLinearOperator(m, torch.nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False)
    count = {"n": 0}
    orig = H._matmat

    def counted(M):
        count["n"] += int(M[0].shape[-1])
        return orig(M)
    H._matmat = counted
    return H, count


def cl_top(model, x, y, k, tol, seed=0):
    from scipy.sparse.linalg import eigsh

    def run():
        H, count = cl_make(model, x, y)
        v0 = np.random.default_rng(seed).standard_normal(H.shape[0]).astype(np.float32)
        vals = eigsh(H.to_scipy(np.float32), k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
        return vals, count["n"]
    (vals, n), t = timed(run)
    return np.array(vals), t, n, f"eigsh tol={tol:g}"


def cl_slq(model, x, y):
    from curvlinops import lanczos_approximate_spectrum

    def run():
        H, count = cl_make(model, x, y)
        grid, dens = lanczos_approximate_spectrum(H, ncv=50, num_repeats=4, num_points=2048)
        return grid.double().numpy(), dens.double().numpy(), count["n"]
    (grid, dens, n), t = timed(run)
    mass = np.trapezoid(dens, grid)
    size = sum(p.numel() for p in model.parameters())
    first = np.trapezoid(dens * grid, grid) / mass
    top = float(grid[dens > 1e-6 * dens.max()].max())
    return float(size * first), top, t, n


def cl_trace(model, x, y, seed=0):
    from curvlinops import hutchpp_trace

    def run():
        torch.manual_seed(seed)
        H, count = cl_make(model, x, y)
        return float(hutchpp_trace(H, num_matvecs=99)), count["n"]
    (v, n), t = timed(run)
    return v, t, n


# -- hessian-eigenthings -----------------------------------------------------------------------------------------
def he_make(model, x, y):
    import hessian_eigenthings as he
    m = copy.deepcopy(model)
    op = he.HessianOperator(m, [(x, y)], he.supervised_loss(F.cross_entropy))
    count = {"n": 0}
    orig = op.matvec

    def counted(v):
        count["n"] += 1
        return orig(v)
    op.matvec = counted
    return op, count


def he_top(model, x, y, k, steps, seed=0):
    import hessian_eigenthings as he

    def run():
        op, count = he_make(model, x, y)
        r = he.lanczos(op, k=k, max_iter=steps, which="LA", seed=seed)
        return r.eigenvalues.double().numpy(), count["n"]
    (vals, n), t = timed(run)
    return vals, t, n, f"max_iter={steps}"


def he_slq(model, x, y):
    import hessian_eigenthings as he

    def run():
        op, count = he_make(model, x, y)
        r = he.spectral_density(op, num_runs=4, lanczos_steps=50, seed=0)
        return r.raw_eigenvalues.double().numpy(), r.raw_weights.double().numpy(), count["n"]
    (e, w, n), t = timed(run)
    size = sum(p.numel() for p in model.parameters())
    return float(size * (e * w).sum() / e.shape[0]), float(e.max()), t, n


def he_trace(model, x, y, seed=0):
    import hessian_eigenthings as he

    def run():
        op, count = he_make(model, x, y)
        return float(he.trace(op, num_matvecs=99, method="hutch++", seed=seed).estimate), count["n"]
    (v, n), t = timed(run)
    return v, t, n


# -- driver ------------------------------------------------------------------------------------------------------
def attempt(rows, task, lib, fn, ref=None, kind="eig"):
    try:
        out = fn()
    except Exception as exc:  # an anchor crashing is a result, not a reason to stop
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:70] if str(exc) else ''}"
        rows.append(Row(task, lib, "-", float("nan"), 0, float("nan"), "CRASHED " + msg))
        return None
    rows.append(out)
    print(f"  done: {out.task:<11}{out.lib:<21}{out.setting:<34}{out.seconds:>8.2f}s {out.hvps:>5d} HVPs "
          f"err {out.err:.1e}", file=sys.stderr, flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--quick", action="store_true", help="fewer sweep points")
    ap.add_argument("--seeds", type=int, default=3,
                    help="start vectors per eigen setting (median time, worst error; default 3)")
    ap.add_argument("--tasks", default="top-1,top-5,slq,trace", help="comma-separated subset of top-1,top-5,slq,trace")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    model, x, y = make_problem()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"# workbench.curvature benchmark: tanh MLP 784-200-200-10 ({n_params:,} params), {x.shape[0]} samples, "
          f"CPU, {args.threads} thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"# load average at start: {os.getloadavg()[0]:.2f}")

    # one gradient and one HVP
    params = list(model.parameters())

    def grad():
        return torch.autograd.grad(loss_fn(model, (x, y)), params)
    grad()
    tg = min(timed(grad)[1] for _ in range(7))
    H = hessian(model, loss_fn, (x, y))
    v = torch.randn(n_params, generator=torch.Generator().manual_seed(0))
    H.matvec(v)
    th = min(timed(lambda: H.matvec(v))[1] for _ in range(7))
    Hf = hessian(model, loss_fn, (x, y), method="forward-over-reverse")
    Hf.matvec(v)
    thf = min(timed(lambda: Hf.matvec(v))[1] for _ in range(7))
    V4 = torch.randn(n_params, 4, generator=torch.Generator().manual_seed(1))
    thf4 = min(timed(lambda: Hf.matmat(V4))[1] for _ in range(3)) / 4
    print(f"# one full-batch gradient: {tg * 1e3:.1f} ms; one HVP (double-backward, cached graph, default): "
          f"{th * 1e3:.1f} ms = {th / tg:.2f} gradient-equivalents; forward-over-reverse: {thf * 1e3:.1f} ms "
          f"({thf / tg:.2f} g.e.), vmapped over 4 vectors {thf4 * 1e3:.1f} ms/vector")

    top, true_tr, nref = reference(model, x, y)
    print(f"# reference: top-6 eigenvalues {np.array2string(top, precision=6)} (scipy eigsh tol 1e-10, {nref} HVPs); "
          f"exact trace {true_tr:.6f} (BackPACK exact Hessian diagonal)")
    ref1, ref5 = top[:1], top[:5]

    rows: list[Row] = []
    counter = _PyHCounter()
    tols_wb = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4]
    tols_pyh = [1e-3, 1e-4, 1e-5] if args.quick else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    tols_pyh5 = [1e-3, 1e-4, 1e-5]           # top-5 deflated power iteration is slow: keep the sweep short
    tols_cl = [1e-1, 1e-2, 1e-3, 1e-4]
    steps_he = [10, 20, 40] if args.quick else [5, 10, 15, 20, 30, 40, 60, 80]

    seeds = list(range(args.seeds))

    def add(task, lib, ref, fn):
        # one row per setting over all start seeds: median time and HVPs, the worst error (a setting reaches the
        # target only if every start vector does: Lanczos from an unlucky start can be 30x off at 40 products)
        out = [fn(seed) for seed in seeds]
        errs = [rel_err(vals, ref) for vals, *_ in out]
        setting = out[0][3] + (f" x{len(seeds)} seeds" if len(seeds) > 1 else "")
        return Row(task, lib, setting, float(np.median([o[1] for o in out])), int(np.median([o[2] for o in out])),
                   max(errs), f"median err {np.median(errs):.1e}" if len(seeds) > 1 else "")

    def sweep(task, lib, settings, fn):
        # settings go from loose to tight; a tighter one only costs more, so stop at the first that hits the target
        for st in settings:
            r = attempt(rows, task, lib, lambda: fn(st))
            if r is None or r.err <= TARGET:
                break

    tasks = set(args.tasks.split(","))
    for task, k, ref in (("top-1", 1, ref1), ("top-5", 5, ref5)):
        if task not in tasks:
            continue
        sweep(task, "workbench", tols_wb,
              lambda tol: add(task, "workbench", ref, lambda sd: wb_top(model, x, y, k, tol, sd)))
        sweep(task, "pyhessian", tols_pyh if k == 1 else tols_pyh5,
              lambda tol: add(task, "pyhessian", ref, lambda sd: pyh_top(model, x, y, k, tol, counter,
                                                                           max_iter=1000 if k == 1 else 300, seed=sd)))
        sweep(task, "curvlinops+eigsh", tols_cl,
              lambda tol: add(task, "curvlinops+eigsh", ref, lambda sd: cl_top(model, x, y, k, tol, sd)))
        sweep(task, "hessian-eigenthings", [s for s in steps_he if s >= 2 * k],
              lambda st: add(task, "hessian-eigenthings", ref, lambda sd: he_top(model, x, y, k, st, sd)))
    # the workbench default call (tol=1e-3), for the record
    if "top-1" in tasks:
        attempt(rows, "top-1", "workbench",
                lambda: add("top-1", "workbench", ref1, lambda sd: wb_top(model, x, y, 1, 1e-3, sd)))

    def slq_row(lib, fn):
        def go():
            first, topnode, t, n = fn()
            return Row("SLQ 4x50", lib, "4 probes x 50 steps", t, n, abs(first - true_tr) / abs(true_tr),
                       f"top node err {abs(topnode - ref1[0]) / ref1[0]:.1e}")
        attempt(rows, "SLQ 4x50", lib, go)

    if "slq" in tasks:
        slq_row("workbench", lambda: wb_slq(model, x, y))
        slq_row("pyhessian", lambda: pyh_slq(model, x, y, counter))
        slq_row("curvlinops", lambda: cl_slq(model, x, y))
        slq_row("hessian-eigenthings", lambda: he_slq(model, x, y))

    def tr_row(lib, fn, setting):
        # trace estimators are unbiased and random: median time, root-mean-square relative error over the seeds
        def go():
            out = [fn(seed) for seed in seeds]
            errs = np.array([(o[0] - true_tr) / true_tr for o in out])
            note = f"rms over {len(seeds)} seeds" if len(seeds) > 1 else ""
            if len(out[0]) > 3:
                note += f"; reported stderr/trace {np.median([o[3] for o in out]) / true_tr:.1e}"
            return Row("Hutch++ 99", lib, setting, float(np.median([o[1] for o in out])),
                       int(np.median([o[2] for o in out])), float(np.sqrt(np.mean(errs ** 2))), note.strip("; "))
        attempt(rows, "Hutch++ 99", lib, go)

    if "trace" in tasks:
        tr_row("workbench", lambda sd: wb_trace(model, x, y, sd), "hutch++ n=99")
        tr_row("pyhessian", lambda sd: pyh_trace(model, x, y, counter, sd), "hutchinson 99 (no hutch++)")
        tr_row("curvlinops", lambda sd: cl_trace(model, x, y, sd), "hutchpp_trace 99")
        tr_row("hessian-eigenthings", lambda sd: he_trace(model, x, y, sd), "trace hutch++ 99")

    print("\n## all runs")
    print(f"{'task':<11}{'library':<21}{'setting':<34}{'time s':>9}{'HVPs':>7}{'rel.err':>10}  note")
    for r in rows:
        print(f"{r.task:<11}{r.lib:<21}{r.setting:<34}{r.seconds:>9.2f}{r.hvps:>7d}{r.err:>10.1e}  {r.note}")

    print(f"\n## summary (eigen tasks: fastest setting per library with rel. error <= {TARGET:g}); "
          "ratio = workbench time / library time (< 1: workbench faster)")
    print(f"{'task':<11}{'library':<21}{'setting':<34}{'time s':>9}{'HVPs':>7}{'rel.err':>10}{'ratio':>8}")
    for task in ("top-1", "top-5", "SLQ 4x50", "Hutch++ 99"):
        best = {}
        for r in rows:
            if r.task != task:
                continue
            ok = (r.err <= TARGET) if task in ("top-1", "top-5") else True
            if not ok or math.isnan(r.seconds):
                best.setdefault(r.lib, None)
                if math.isnan(r.seconds):
                    best[r.lib] = r
                continue
            if best.get(r.lib) is None or math.isnan(best[r.lib].seconds) or r.seconds < best[r.lib].seconds:
                best[r.lib] = r
        mine = best.get("workbench")
        for lib, r in best.items():
            if r is None:
                print(f"{task:<11}{lib:<21}{'(no setting reached target)':<34}")
                continue
            ratio = (mine.seconds / r.seconds) if (mine is not None and r.seconds and not math.isnan(r.seconds)
                                                  and lib != "workbench") else float("nan")
            extra = f"  {r.note}" if r.note else ""
            print(f"{task:<11}{lib:<21}{r.setting:<34}{r.seconds:>9.2f}{r.hvps:>7d}{r.err:>10.1e}"
                  f"{ratio:>8.2f}{extra}")
        if task == "SLQ 4x50" and mine is not None and mine.hvps:
            print(f"{'':<11}workbench SLQ time / (its HVPs x one HVP) = {mine.seconds / (mine.hvps * th):.2f}")
    print(f"# load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
