"""The probe protocol.

A probe measures something about the model during training on its own schedule. The run loop calls
``measure(ctx)`` at the parameters theta_t *before* update t (so probe step t lines up with ``loss[t]``), then
``after_update(ctx, values)`` once theta_{t+1} exists, and once more at the end of the run (``ctx.final``).
Probes are validated against the problem when the run is built (``validate(problem, n_params)``), so a probe
misconfigured for its problem is a ``ValueError`` from ``wb.train`` / ``Run(...)``, not a crash at step 0.
The loop isolates every probe call: train/eval mode, BatchNorm buffers, parameters, gradients and the RNG state
are restored afterwards, so a probe can never change the training trajectory. The time each call takes is
recorded as ``<name>_seconds``.

Record layout: a probe called ``name`` gets the coordinate ``<name>_step``; each declared :class:`Var` becomes a
variable with dims ``(<name>_step, *var.dims)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validate import check_int

__all__ = ["Probe", "Var", "ProbeContext"]


@dataclass
class Var:
    long_name: str
    description: str = ""
    units: str = ""
    dims: tuple[str, ...] = ()
    coords: dict[str, Any] = field(default_factory=dict)   # coordinate values of the extra dims
    dtype: str = "float64"


class Probe:
    """Base class. Subclasses set ``default_name`` and implement ``variables`` and ``measure``."""

    default_name = "probe"

    def __init__(self, every: int = 1, name: str | None = None):
        self.every = check_int(f"{type(self).__name__}.every", every, 1)
        if name is not None and (not isinstance(name, str) or not name.isidentifier()):
            raise ValueError(f"{type(self).__name__}.name must be an identifier-like string; got {name!r}")
        self.name = name or self.default_name

    # -- schedule ----------------------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        return step % self.every == 0

    # -- protocol ----------------------------------------------------------------------------------------
    def validate(self, problem, n_params: int) -> None:
        """Called when the run is built, before any training: raise ``ValueError`` (naming the field and its
        accepted range) when this probe cannot work on ``problem`` whose model has ``n_params`` trainable
        parameters (e.g. more eigenvalues than parameters, a test split the problem lacks). The default accepts
        everything; :meth:`setup` may still check what needs the model or data on the device."""

    def setup(self, ctx: "ProbeContext") -> None:
        """Called once before training (θ_0 available)."""

    def variables(self, ctx: "ProbeContext") -> dict[str, Var]:
        raise NotImplementedError

    def measure(self, ctx: "ProbeContext") -> dict[str, Any]:
        raise NotImplementedError

    def after_update(self, ctx: "ProbeContext", values: dict[str, Any]) -> None:
        """Optional: complete ``values`` (measured at θ_t) once θ_{t+1} exists."""

    def attrs(self) -> dict[str, Any]:
        """Extra record attrs (JSON-serialisable), stored as ``<name>_<key>``."""
        return {}

    def config(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "name": self.name, "every": self.every}

    def __repr__(self):
        return f"{type(self).__name__}(every={self.every}, name={self.name!r})"


class ProbeContext:
    """What a probe sees: the run's model, problem, optimizer and the current step's batch and gradient."""

    def __init__(self, run):
        self.run = run
        self.problem = run.problem
        self.model = run.model
        self.device = run.device
        self.step = 0
        self.final = False
        self.batch = None
        self.loss = float("nan")
        self._grad = None
        self._full = {}

    @property
    def optimizer(self):
        return self.run.optimizer

    @property
    def optimizer_name(self) -> str:
        return self.run.optimizer_name

    @property
    def hparams(self) -> dict:
        return dict(self.run.hparams)

    @property
    def lr(self) -> float:
        return float(self.run.optimizer.param_groups[0]["lr"])

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def flat_grad(self) -> torch.Tensor | None:
        """The mini-batch gradient at θ_t (a copy), or None at the final call."""
        return None if self._grad is None else self._grad.clone()

    def full_batch(self, split: str = "train", max_samples: int | None = None):
        """The whole split (or its first ``max_samples``) as one batch on the run's device, cached."""
        key = (split, max_samples)
        if key not in self._full:
            self._full[key] = self.problem.data(split, device=self.device, max_samples=max_samples)
        return self._full[key]


def as_numpy(value) -> np.ndarray:
    if torch.is_tensor(value):
        return value.detach().to("cpu", torch.float64 if value.is_floating_point() else value.dtype).numpy()
    return np.asarray(value)
