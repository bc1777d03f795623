"""The `Problem`: a seeded model factory, train/test data and a loss (plus metrics)."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

__all__ = ["Problem", "seeded"]


def seeded(seed: int, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with torch's global RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return fn()


@dataclass
class Problem:
    """A training problem.

    ``loss(model, batch)`` returns the scalar *mean* loss of ``model`` on ``batch = (x, y)``. ``train`` and ``test``
    are datasets (``TensorDataset`` for everything bundled or generated). ``model`` is the seeded initial model;
    :meth:`new_model` builds a fresh one (optionally from another seed). For the 2D test functions
    (``kind == "function"``) the model's only parameter is the point ``theta`` in the plane, the data is a single
    dummy example, and ``function`` evaluates the exact surface on any array of points.
    """

    name: str
    kind: str                                   # "function" | "classification" | "regression"
    model_factory: Callable[[], nn.Module]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train: Dataset
    test: Dataset | None = None
    metrics: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_classes: int | None = None
    doc: str = ""
    # 2D test functions only
    function: Callable[[torch.Tensor], torch.Tensor] | None = None
    domain: tuple[tuple[float, float], tuple[float, float]] | None = None
    minima: list[tuple[float, float]] = field(default_factory=list)
    # the seed of the initial model when it differs from the data ``seed`` (None: the model uses ``seed``)
    init_seed: int | None = None
    model: nn.Module = field(init=False)

    def __post_init__(self):
        self.model = self.new_model()

    # -- models ---------------------------------------------------------------------------------------------
    @property
    def model_seed(self) -> int:
        """The seed of the initial model: ``init_seed`` when set, else the data ``seed``."""
        return self.seed if self.init_seed is None else self.init_seed

    def new_model(self, seed: int | None = None) -> nn.Module:
        """A freshly initialised model; ``seed=None`` uses the problem's initialisation seed (``init_seed``, which
        defaults to ``seed``), so it equals ``self.model`` at init."""
        return seeded(self.model_seed if seed is None else seed, self.model_factory)

    def copy_model(self) -> nn.Module:
        return copy.deepcopy(self.model)

    # -- loss and data --------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return self.loss_fn(model(x), y)

    def evaluate(self, model: nn.Module, batch) -> dict[str, float]:
        """Loss and metrics on one batch (no grad, the model's current mode)."""
        x, y = batch
        with torch.no_grad():
            out = model(x)
            res = {"loss": float(self.loss_fn(out, y))}
            for name, fn in self.metrics.items():
                res[name] = float(fn(out, y))
        return res

    def dataset(self, split: str = "train") -> Dataset:
        if split == "train":
            return self.train
        if split == "test":
            if self.test is None:
                raise ValueError(f"split='test' is not available: problem {self.name!r} has no test set")
            return self.test
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")

    def data(self, split: str = "train", device=None, max_samples: int | None = None):
        """The whole split as one batch ``(x, y)`` (the first ``max_samples`` examples if given)."""
        ds = self.dataset(split)
        if isinstance(ds, TensorDataset):
            x, y = ds.tensors
        else:
            xs, ys = zip(*[ds[i] for i in range(len(ds) if max_samples is None else min(len(ds), max_samples))])
            x, y = torch.stack(xs), torch.as_tensor(ys) if not torch.is_tensor(ys[0]) else torch.stack(ys)
        if max_samples is not None:
            x, y = x[:max_samples], y[:max_samples]
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x, y

    def batches(self, split: str = "train", batch_size: int | None = None, device=None,
                max_samples: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive (unshuffled) batches covering the split; ``batch_size=None`` yields one full batch."""
        x, y = self.data(split, device=device, max_samples=max_samples)
        n = x.shape[0]
        bs = n if batch_size is None else batch_size
        for i in range(0, n, bs):
            yield x[i:i + bs], y[i:i + bs]

    # -- description ----------------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def config(self) -> dict:
        """``name``, ``seed``, ``options`` (and ``init_seed`` when it differs from ``seed``: configs of problems
        whose model uses the data seed are unchanged); ``problems.make(**config)`` rebuilds the problem."""
        c = {"name": self.name, "seed": self.seed, "options": dict(self.options)}
        if self.init_seed is not None and self.init_seed != self.seed:
            c["init_seed"] = self.init_seed
        return c

    def describe(self) -> str:
        lines = [f"Problem {self.name!r} (seed {self.seed}" +
                 ("" if self.model_seed == self.seed else f", init_seed {self.model_seed}") + f", {self.kind})"]
        if self.doc:
            lines.append(self.doc)
        lines.append("options: " + json.dumps(self.options, default=str))
        lines.append(f"parameters: {self.n_params:,}")
        if self.kind != "function":
            lines.append(f"train examples: {len(self.train):,}" +
                         (f", test examples: {len(self.test):,}" if self.test is not None else ""))
            x, y = self.data(max_samples=1)
            lines.append(f"input shape: {tuple(x.shape[1:])}, target shape: {tuple(y.shape[1:]) or 'scalar'}")
            if self.n_classes:
                lines.append(f"classes: {self.n_classes}")
            if self.metrics:
                lines.append("metrics: " + ", ".join(self.metrics))
        else:
            (x0, x1), (y0, y1) = self.domain
            lines.append(f"domain: x in [{x0:g}, {x1:g}], y in [{y0:g}, {y1:g}]; start "
                         f"({self.options['x0']:g}, {self.options['y0']:g})")
            if self.minima:
                lines.append("global minima: " + ", ".join(f"({a:g}, {b:g})" for a, b in self.minima))
        lines.append("model:\n" + "\n".join("  " + l for l in str(self.model).splitlines()))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Problem(name={self.name!r}, seed={self.seed}, options={self.options})"
