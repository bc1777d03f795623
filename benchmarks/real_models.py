"""Cost of gradients, Hessian-vector products and training steps on real models (issue: real models on real data).

For ResNet-20 (CIFAR-shaped batch of 128), the small ViT and the char-level GPT (6 layers x 384, block 256) it
measures, on the same model, batch and process:

* one gradient (forward + backward of the mean loss);
* one Hessian-vector product through ``wb.curvature.hessian``, by double backward (reverse-over-reverse) and by
  forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``), each *from scratch* (the product's own forward
  and backward included: the number comparable with curvlinops' published HVP/gradient ratios of 3.7-4.3x) and, for
  double backward, with the first-order graph cached between products (what Lanczos pays per iteration);
* HVP / gradient time ratios;
* training steps per second through ``wb.train`` with the host-synchronising loop (``sync_every=1``) and the no-sync
  loop (``sync_every=16``; on CPU the two do the same work, on CUDA the second never waits for the device);
* peak memory of each call: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak of the running sum of the
  call's allocations and frees, recorded by torch's profiler.

On CUDA it adds curvlinops' reference problems (ResNet-18 at CIFAR batch 512, ResNet-50 at batch 64 on 224x224
inputs if torchvision is installed, GPT-2-124M at 4x1024 tokens) and, where curvlinops is installed, its HVP on the
same model and batch. Usage::

    python benchmarks/real_models.py                     # CPU (or --device cuda), all three models
    python benchmarks/real_models.py --models resnet20 --repeats 5
    python benchmarks/real_models.py --quick             # smaller batches (a smoke run)

Timings are medians over ``--repeats``; compare the ratios, which are measured in one process.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import workbench as wb
from workbench.problems import losses, nets


# -- measurement helpers -----------------------------------------------------------------------------------------
def peak_memory_mib(fn, device):
    """Peak memory allocated during ``fn()`` above the level at entry, in MiB.

    CUDA: the caching allocator's peak (``torch.cuda.max_memory_allocated``). CPU: torch's profiler with
    ``profile_memory=True`` records every allocation and free of the call; the peak of their running sum is the
    most the call held at once (the resident set size cannot show it: the allocator reuses freed blocks)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for ev in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += ev.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call, and the peak memory of one call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), peak_memory_mib(fn, device)


# -- the models --------------------------------------------------------------------------------------------------
def make_case(name, device, quick):
    """(label, model, loss(model, batch), batch, loss_fn) on ``device``; seeded synthetic data of the real shapes."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "resnet20":
        n = 32 if quick else 128
        model = nets.resnet(depth=20, in_channels=3, n_classes=10)
        x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
        label, loss_fn = f"ResNet-20, CIFAR batch {n}", losses.cross_entropy
    elif name == "vit":
        n = 32 if quick else 128
        model = nets.vit(image_size=32, in_channels=3, n_classes=10)
        x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
        label, loss_fn = f"ViT (patch 4, dim 64, depth 2), CIFAR batch {n}", losses.cross_entropy
    elif name == "gpt":
        b, t, v = (2, 128, 96) if quick else (8, 256, 96)
        model = nets.gpt(vocab_size=v, block_size=256, n_layer=6, n_head=6, n_embd=384)
        x = torch.randint(0, v, (b, t), generator=g)
        y = torch.randint(0, v, (b, t), generator=g)
        label, loss_fn = f"char GPT 6x384, {b}x{t} tokens", losses.sequence_cross_entropy
    elif name == "resnet18":
        import torchvision
        n = 512
        model = torchvision.models.resnet18(num_classes=10)
        x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
        label, loss_fn = f"ResNet-18 (torchvision), CIFAR batch {n}", losses.cross_entropy
    elif name == "resnet50":
        import torchvision
        n = 64
        model = torchvision.models.resnet50(num_classes=1000)
        x, y = torch.randn(n, 3, 224, 224, generator=g), torch.randint(0, 1000, (n,), generator=g)
        label, loss_fn = f"ResNet-50 (torchvision), 224px batch {n}", losses.cross_entropy
    elif name == "gpt2":
        b, t, v = 4, 1024, 50257
        model = nets.gpt(vocab_size=v, block_size=1024, n_layer=12, n_head=12, n_embd=768)
        x = torch.randint(0, v, (b, t), generator=g)
        y = torch.randint(0, v, (b, t), generator=g)
        label, loss_fn = f"GPT-2-124M, {b}x{t} tokens", losses.sequence_cross_entropy
    else:
        raise ValueError(f"unknown model {name!r}")
    model = model.to(device)
    batch = (x.to(device), y.to(device))

    def loss(m, b):
        return loss_fn(m(b[0]), b[1])
    return label, model, loss, batch, loss_fn


def bench_case(name, device, repeats, quick, train_steps):
    label, model, loss, batch, loss_fn = make_case(name, device, quick)
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    gen = torch.Generator(device="cpu").manual_seed(1)
    v = torch.randn(n_params, generator=gen).to(device)
    row = {"model": label, "params": n_params}

    def gradient():
        return torch.autograd.grad(loss(model, batch), params)

    row["grad_s"], row["grad_mib"] = timed(gradient, device, repeats)

    def hvp_db():
        H = wb.curvature.hessian(model, loss, batch, method="double-backward", cache=False)
        return H.matvec(v)

    def hvp_for():
        H = wb.curvature.hessian(model, loss, batch, method="forward-over-reverse")
        return H.matvec(v)

    H_cached = wb.curvature.hessian(model, loss, batch, method="double-backward", cache=True)
    H_cached.matvec(v)                                           # builds the cached first-order graph

    row["hvp_db_s"], row["hvp_db_mib"] = timed(hvp_db, device, repeats)
    row["hvp_for_s"], row["hvp_for_mib"] = timed(hvp_for, device, repeats)
    row["hvp_cached_s"], _ = timed(lambda: H_cached.matvec(v), device, repeats)
    del H_cached
    try:
        from curvlinops import HessianLinearOperator

        def curv():
            op = HessianLinearOperator(model, loss_fn, params, [batch], progressbar=False, check_deterministic=False)
            return op @ v.detach().cpu().numpy() if not hasattr(op, "_matmat") else op @ v
        row["curvlinops_s"], row["curvlinops_mib"] = timed(curv, device, repeats)
    except Exception:
        row["curvlinops_s"] = row["curvlinops_mib"] = float("nan")

    # training steps per second, host-synchronising loop vs the no-sync loop, same data and seed
    prob = wb.problems.custom(model, loss_fn, train=(batch[0].cpu(), batch[1].cpu()), name=name)
    for key, sync in (("steps_sync", 1), ("steps_nosync", 16)):
        t0 = time.perf_counter()
        run = wb.train(prob, optimizer="sgd", lr=0.01, steps=train_steps, device=device, progress=False,
                       sync_every=sync)
        _sync(device)
        row[key] = run.record.sizes["step"] / (time.perf_counter() - t0)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,vit,gpt",
                    help="comma-separated: resnet20, vit, gpt (and on CUDA resnet18, resnet50, gpt2)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="training steps for the steps/s columns")
    ap.add_argument("--quick", action="store_true", help="smaller batches")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    device = wb._validate.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if device.type == "cuda" and args.models == ap.get_default("models"):
        models += ["resnet18", "resnet50", "gpt2"]
    la = os.getloadavg()
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"load average {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} (1/5/15 min) on {os.cpu_count()} cores")
    cols = [("model", 44, "{:<44s}"), ("params", 11, "{:>11,d}"), ("grad ms", 9, "{:>9.1f}"),
            ("HVP db ms", 10, "{:>10.1f}"), ("HVP fwd ms", 11, "{:>11.1f}"), ("HVP cached ms", 14, "{:>14.1f}"),
            ("db/grad", 9, "{:>8.2f}x"), ("fwd/grad", 10, "{:>9.2f}x"), ("cached/grad", 13, "{:>12.2f}x"),
            ("curvlinops/grad", 17, "{:>16.2f}x"), ("steps/s sync", 13, "{:>13.2f}"),
            ("steps/s no-sync", 16, "{:>16.2f}"), ("grad MiB", 9, "{:>9.0f}"), ("HVP db MiB", 11, "{:>11.0f}"),
            ("HVP fwd MiB", 12, "{:>12.0f}")]
    header = "".join(f"{c:<{w}s}" if c == "model" else f"{c:>{w}s}" for c, w, _ in cols)
    print(header)
    print("-" * len(header))
    for name in models:
        try:
            r = bench_case(name, device, args.repeats, args.quick, args.steps)
        except ImportError as exc:
            print(f"{name:<44s} skipped: {exc}")
            continue
        vals = [r["model"], r["params"], 1e3 * r["grad_s"], 1e3 * r["hvp_db_s"], 1e3 * r["hvp_for_s"],
                1e3 * r["hvp_cached_s"], r["hvp_db_s"] / r["grad_s"], r["hvp_for_s"] / r["grad_s"],
                r["hvp_cached_s"] / r["grad_s"], r["curvlinops_s"] / r["grad_s"], r["steps_sync"],
                r["steps_nosync"], r["grad_mib"], r["hvp_db_mib"], r["hvp_for_mib"]]
        print("".join(f.format(v) for (_, _, f), v in zip(cols, vals)), flush=True)
    print("HVP db / fwd: one Hessian-vector product from scratch (its forward and backward included) by double "
          "backward / forward-over-reverse; cached: the product alone with the first-order graph kept (Lanczos "
          "iterations). Target on CUDA: <= 3x a gradient (curvlinops' published ratios: 3.7-4.3x).")
    la = os.getloadavg()
    print(f"load average after: {la[0]:.2f}")


if __name__ == "__main__":
    main()
