"""First probes: Norms, Eval, Trajectory."""
from __future__ import annotations

import math

import numpy as np
import torch

from .._validate import check_choice, check_int
from .base import Probe, ProbeContext, Var

__all__ = ["Norms", "Eval", "Trajectory", "countsketch"]


class Norms(Probe):
    """Weight norm ‖θ_t‖, distance from init ‖θ_t − θ_0‖ and update norm ‖θ_{t+1} − θ_t‖ (Hoffer et al. 2017:
    the distance grows roughly like log t)."""

    default_name = "norms"

    def setup(self, ctx):
        self._theta0 = ctx.flat_params().clone()
        self._theta_t = None

    def variables(self, ctx):
        return {
            "weight_norm": Var("weight norm", "Euclidean norm of all trainable parameters, ‖θ_t‖"),
            "distance_from_init": Var("distance from init", "‖θ_t − θ_0‖ over all trainable parameters"),
            "update_norm": Var("update norm", "‖θ_{t+1} − θ_t‖, the step taken at this step (NaN at the end)"),
        }

    def measure(self, ctx):
        theta = ctx.flat_params()
        self._theta_t = theta.clone()
        return {"weight_norm": float(theta.norm()), "distance_from_init": float((theta - self._theta0).norm()),
                "update_norm": math.nan}

    def after_update(self, ctx, values):
        values["update_norm"] = float((ctx.flat_params() - self._theta_t).norm())


class Eval(Probe):
    """Loss and metrics (e.g. accuracy) on the test and/or full training set, model in eval mode by default.

    Batches are weighted by their size. Variables: ``<split>_loss`` and ``<split>_<metric>``.
    """

    default_name = "eval"

    def __init__(self, every: int = 10, split: str = "test", batch_size: int | None = 4096,
                 max_samples: int | None = None, mode: str = "eval", name: str | None = None):
        super().__init__(every, name)
        self.split = check_choice("Eval.split", split, ("test", "train", "both"))
        self.batch_size = check_int("Eval.batch_size", batch_size, 1, allow_none=True)
        self.max_samples = check_int("Eval.max_samples", max_samples, 1, allow_none=True)
        self.mode = check_choice("Eval.mode", mode, ("eval", "train"))

    def validate(self, problem, n_params):
        if self.split in ("test", "both") and problem.test is None:
            raise ValueError(f"Eval.split={self.split!r} needs a test set, but problem {problem.name!r} has none; "
                             "use split='train'")

    def _splits(self, ctx):
        splits = ["train", "test"] if self.split == "both" else [self.split]
        if "test" in splits and ctx.problem.test is None:
            raise ValueError(f"Eval.split={self.split!r} needs a test set, but problem {ctx.problem.name!r} has none")
        return splits

    def variables(self, ctx):
        out = {}
        for s in self._splits(ctx):
            out[f"{s}_loss"] = Var(f"{s} loss", f"mean loss over the {s} set ({self.mode} mode)")
            for m in ctx.problem.metrics:
                out[f"{s}_{m}"] = Var(f"{s} {m}", f"{m} over the {s} set ({self.mode} mode)")
        return out

    def measure(self, ctx):
        model = ctx.model
        model.train(self.mode == "train")
        out = {}
        for s in self._splits(ctx):
            x, y = ctx.full_batch(s, self.max_samples)
            totals, n = {}, 0
            for i in range(0, x.shape[0], self.batch_size or x.shape[0]):
                xb, yb = x[i:i + (self.batch_size or x.shape[0])], y[i:i + (self.batch_size or x.shape[0])]
                res = ctx.problem.evaluate(model, (xb, yb))
                for k, v in res.items():
                    totals[k] = totals.get(k, 0.0) + v * xb.shape[0]
                n += xb.shape[0]
            for k, v in totals.items():
                out[f"{s}_{k}"] = v / n
        return out

    def config(self):
        return {**super().config(), "split": self.split, "batch_size": self.batch_size,
                "max_samples": self.max_samples, "mode": self.mode}


def countsketch(vec: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Sparse random projection (count sketch) of a flat vector to ``dim`` coordinates.

    Each parameter i goes to bucket h(i) with sign s(i), both drawn from ``seed``; E[<Sx, Sy>] = <x, y>, so
    distances and PCA of a trajectory are preserved approximately (Johnson-Lindenstrauss). Apply the same sketch
    to directions (e.g. landscape directions) to compare them with a sketched trajectory.
    """
    n = vec.numel()
    g = torch.Generator().manual_seed(int(seed))
    h = torch.randint(0, dim, (n,), generator=g).to(vec.device)
    s = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(vec.device, vec.dtype)
    out = torch.zeros(dim, dtype=vec.dtype, device=vec.device)
    return out.index_add_(0, h, vec.reshape(-1) * s)


class Trajectory(Probe):
    """Parameter snapshots θ_t every ``every`` steps, within a memory budget of ``max_bytes``.

    Everything the probe adds to the record (the float32 ``trajectory`` array, its step coordinate, the
    ``<name>_seconds`` costs and the ``coord`` index) fits in ``max_bytes``, whatever the model size and run length:

    - ``reduction="exact"``: the snapshots of the whole run fit; θ_t is stored exactly (``kind="params"``);
    - ``reduction="projection"``: each snapshot is reduced by a fixed count-sketch projection (``kind=
      "countsketch"``, see :func:`countsketch`) to ``min(dim, what fits)`` coordinates;
    - ``reduction="thinning"`` (or ``"projection+thinning"``): when even ``min_dim`` coordinates per snapshot do
      not fit, snapshots are taken every ``stride`` steps (a multiple of ``every``) instead.

    The record's attrs say which (``<name>_reduction``, ``_projection_dim``, ``_stride``, ``_max_bytes``).
    Variable ``trajectory`` has dims (``<name>_step``, ``coord``).
    """

    default_name = "trajectory"
    _PER_SNAPSHOT = 16      # bytes per snapshot besides the vector: int64 step + float64 seconds
    _PER_COORD = 8          # int64 `coord` index value per coordinate

    def __init__(self, every: int = 10, max_bytes: int = 256 * 2**20, dim: int = 4096, seed: int = 0,
                 name: str | None = None, min_dim: int = 64):
        super().__init__(every, name)
        # the smallest record: 2 snapshots of 2 coordinates = 2 * (2*4 + 16) + 2*8
        self.max_bytes = check_int("Trajectory.max_bytes", max_bytes, 64)
        self.dim = check_int("Trajectory.dim", dim, 2)
        self.seed = check_int("Trajectory.seed", seed, 0)
        self.min_dim = check_int("Trajectory.min_dim", min_dim, 2)
        self.kind = None
        self.stride = self.every
        self._cache = None

    def _bytes(self, snaps: int, width: int) -> int:
        return snaps * (4 * width + self._PER_SNAPSHOT) + self._PER_COORD * width

    def _width(self, snaps: int) -> int:
        """The most coordinates per snapshot that fit in the budget with ``snaps`` snapshots."""
        return (self.max_bytes - snaps * self._PER_SNAPSHOT) // (4 * snaps + self._PER_COORD)

    @staticmethod
    def _snapshots(steps: int, stride: int) -> int:
        return -(-steps // stride) + 1          # steps 0, stride, ... below `steps`, and the final one

    def plan(self, n_params: int, steps: int) -> dict:
        """The reduction this probe uses for a model of ``n_params`` parameters trained ``steps`` steps."""
        n = int(n_params)
        stride = self.every
        snaps = self._snapshots(steps, stride)
        if self._width(snaps) >= n:
            return {"kind": "params", "reduction": "exact", "width": n, "stride": stride, "snapshots": snaps}
        target = min(n, self.dim, self.min_dim)
        if self._width(snaps) < target:       # thin: the smallest multiple of `every` that fits `target` coords
            lo, hi = 1, max(1, -(-steps // self.every))
            while lo < hi:
                mid = (lo + hi) // 2
                if self._width(self._snapshots(steps, mid * self.every)) >= target:
                    hi = mid
                else:
                    lo = mid + 1
            stride = lo * self.every
            snaps = self._snapshots(steps, stride)
        width = max(2, min(n, self.dim, self._width(snaps)))
        if width >= n:
            return {"kind": "params", "reduction": "thinning", "width": n, "stride": stride, "snapshots": snaps}
        if self._bytes(snaps, width) > self.max_bytes:
            raise ValueError(f"Trajectory.max_bytes={self.max_bytes} is too small for {steps} steps: even "
                             f"{snaps} snapshots of {width} coordinates need {self._bytes(snaps, width)} bytes")
        reduction = "projection" if stride == self.every else "projection+thinning"
        return {"kind": "countsketch", "reduction": reduction, "width": width, "stride": stride, "snapshots": snaps}

    def setup(self, ctx):
        self.n_params = sum(p.numel() for p in ctx.params)
        self._plan = self.plan(self.n_params, ctx.run.steps)
        self.kind = self._plan["kind"]
        self.width = self._plan["width"]
        self.stride = self._plan["stride"]

    def due(self, step: int) -> bool:
        return step % self.stride == 0

    def variables(self, ctx):
        return {"trajectory": Var(
            "parameter trajectory",
            "θ_t (all trainable parameters, flattened in model.parameters() order)" if self.kind == "params" else
            f"count-sketch projection of θ_t to {self.width} coordinates (seed {self.seed})",
            dims=("coord",), coords={"coord": np.arange(self.width)}, dtype="float32")}

    def measure(self, ctx):
        theta = ctx.flat_params().float()
        if self.kind == "countsketch":
            theta = countsketch(theta, self.width, self.seed)
        return {"trajectory": theta.cpu().numpy()}

    def attrs(self):
        return {"kind": self.kind, "n_params": self.n_params, "projection_dim": self.width,
                "projection_seed": self.seed, "reduction": self._plan["reduction"], "stride": self.stride,
                "max_bytes": self.max_bytes,
                "budget_bytes": self._bytes(self._plan["snapshots"], self.width)}

    def config(self):
        return {**super().config(), "max_bytes": self.max_bytes, "dim": self.dim, "seed": self.seed,
                "min_dim": self.min_dim}
