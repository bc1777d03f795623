"""The run loop: ``wb.train(...)`` steps an optimizer on a problem, calls probes on their schedules, detects
divergence, can be stopped or hot-swapped between steps, streams every step to a callback and materialises an
xarray record.

Step convention: ``loss[t]`` is the mini-batch (or full-batch) loss at θ_t, the parameters *before* update t;
probes measured at probe step t see the same θ_t. After the last update the probes run once more at θ_T
(step ``T`` = number of updates done), so a finished run of ``steps`` updates has probe steps up to ``steps``.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import platform
import threading
import time
import traceback
import warnings
from pathlib import Path
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Sequence

import numpy as np
import torch
import xarray as xr

from . import optim as _optim
from ._validate import check_bool, check_choice, check_float, check_int, resolve_device
from .params import validate_params
from .probes.base import Probe, ProbeContext, as_numpy
from .problems import Problem
from .records import SCHEMA_VERSION

__all__ = ["train", "resume", "checkpoint_path", "Run", "RunCrashed", "STATUSES", "PRECISIONS",
           "DIVERGENCE_DEFAULTS"]

STATUSES = ("pending", "running", "finished", "diverged", "stopped", "crashed")
PRECISIONS = ("float32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CUDA_SYNC_EVERY = 16     # default sync_every on CUDA (1 elsewhere)
DEFAULT_SAVE_EVERY = 100     # streaming: steps between two saves of the record when save_to is given
CHECKPOINT_FORMAT = 1
# the soft divergence rule (see train): a run that ends with its loss above factor × max(floor, |loss[0]|) (the
# median of its last `window` step losses) is "diverged"; one that went above and came back is flagged recovered
DIVERGENCE_DEFAULTS = {"factor": 10.0, "window": 10, "floor": 1.0}

STEP_VARS = {
    "loss": ("training loss", "loss at θ_t on the batch used for update t (the full training set for batch_size=None)"),
    "lr": ("learning rate", "learning rate used for update t (after schedule and hot swaps)"),
    "grad_norm": ("gradient norm", "‖∇L(θ_t)‖ of the batch gradient used for update t"),
    "wall_time": ("wall time", "seconds since the run started, at the end of step t (probe time included; with "
                  "sync_every > 1, when step t was queued on the device, which finishes it by the next sync)"),
}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtypes_of(batch) -> list[str]:
    """The dtypes of the tensors in a batch (a tensor, a tuple/list or a dict of them), in order."""
    items = (batch,) if torch.is_tensor(batch) else batch.values() if isinstance(batch, dict) else batch
    return [_dtype_name(t.dtype) for t in items if torch.is_tensor(t)]


def _tensors(batch) -> tuple:
    """A batch (a tensor, or a tuple/list of tensors) as a tuple of tensors."""
    if torch.is_tensor(batch):
        return (batch,)
    out = tuple(batch)
    bad = [type(b).__name__ for b in out if not torch.is_tensor(b)]
    if bad:
        raise ValueError(f"training batches must be tuples of tensors; found {bad}")
    return out


def checkpoint_path(path: str | os.PathLike) -> Path:
    """The checkpoint written next to a streamed record: ``<path>.ckpt`` (``runs/eos.nc`` -> ``runs/eos.nc.ckpt``)."""
    path = Path(path)
    return path.with_name(path.name + ".ckpt")


def _atomic_torch_save(obj, path: Path) -> None:
    """torch.save to a temp file in the same directory, fsync, rename (the previous file stays intact on error)."""
    import tempfile
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    from .records import fsync_dir
    fsync_dir(path.parent)


def _check_divergence(divergence) -> dict | None:
    """``divergence``: None/False (soft rule off), a factor (> 1), or a dict with keys of DIVERGENCE_DEFAULTS."""
    if divergence is None or divergence is False:
        return None
    if divergence is True:
        divergence = {}
    if isinstance(divergence, (int, float)) and not isinstance(divergence, bool):
        divergence = {"factor": divergence}
    if not isinstance(divergence, dict):
        raise ValueError(f"divergence must be None, a factor > 1 or a dict with keys {sorted(DIVERGENCE_DEFAULTS)}; "
                         f"got {divergence!r}")
    unknown = set(divergence) - set(DIVERGENCE_DEFAULTS)
    if unknown:
        raise ValueError(f"divergence has unknown key {sorted(unknown)[0]!r}; accepted: {sorted(DIVERGENCE_DEFAULTS)}")
    d = {**DIVERGENCE_DEFAULTS, **divergence}
    return {"factor": check_float("divergence.factor", d["factor"], 1.0, None, low_inclusive=False),
            "window": check_int("divergence.window", d["window"], 1, 10**6),
            "floor": check_float("divergence.floor", d["floor"], 0.0, None, low_inclusive=False)}


def _scalar_attrs(opt) -> dict:
    """The optimizer's plain number/string attributes (step counters some optimizers keep outside their
    state_dict, e.g. zeroth-order SGD's ``t``), checkpointed with the state_dict."""
    return {k: v for k, v in vars(opt).items()
            if isinstance(v, (int, float, str)) and not isinstance(v, bool) and k not in ("defaults",)}


class _Batches:
    """Endless training batches with a state that can be checkpointed. Mini-batches: a fresh permutation per
    epoch from the CPU generator ``gen`` (the same sequence on every device), moved to the data's device once per
    epoch (asynchronously from pinned memory on CUDA); each batch is one gather on the device; the last partial
    batch of an epoch is dropped (equal-size steps)."""

    def __init__(self, data: tuple, batch_size: int | None, gen: torch.Generator):
        self.data, self.bs, self.gen = data, batch_size, gen
        self.n = data[0].shape[0]
        self.perm_cpu = None
        self.perm = None
        self.pos = 0

    def __iter__(self):
        return self

    def _set_perm(self, perm_cpu):
        dev = self.data[0].device
        self.perm_cpu = perm_cpu
        self.perm = perm_cpu.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else perm_cpu.to(dev)

    def __next__(self):
        if self.bs is None:
            return self.data
        if self.perm is None or self.pos + self.bs > self.n:
            self._set_perm(torch.randperm(self.n, generator=self.gen))
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return tuple(d[idx] for d in self.data)

    def state(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": None if self.perm_cpu is None else self.perm_cpu.clone(),
                "pos": self.pos}

    def load_state(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        if state["perm"] is not None:
            self._set_perm(state["perm"])
        self.pos = int(state["pos"])


class RunCrashed(RuntimeError):
    """A run raised an exception; ``.run`` holds the Run with everything recorded before the error."""

    def __init__(self, message: str, run: "Run"):
        super().__init__(message)
        self.run = run


@contextmanager
def isolated(model: torch.nn.Module, params: Sequence[torch.Tensor]):
    """Restore mode, parameters, buffers (BatchNorm statistics), gradients and RNG state on exit."""
    modes = [m.training for m in model.modules()]
    saved_params = [p.detach().clone() for p in params]
    saved_grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    saved_bufs = [b.detach().clone() for b in model.buffers()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mode in zip(model.modules(), modes):
                m.training = mode
            for p, s in zip(params, saved_params):
                p.copy_(s)
            for p, g in zip(params, saved_grads):
                p.grad = g
            for b, s in zip(model.buffers(), saved_bufs):
                b.copy_(s)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


class _ProbeSlot:
    def __init__(self, probe: Probe, name: str):
        self.probe = probe
        self.name = name
        self.steps: list[int] = []
        self.values: dict[str, list] = {}
        self.seconds: list[float] = []
        self.vars = {}


class Run:
    """One training run. Create it with :func:`train`.

    ``status`` is one of pending | running | finished | diverged | stopped | crashed. ``record`` builds the
    xarray record from whatever has been recorded so far (safe to call while running). ``stop()`` is honoured
    before the next step; ``hot_swap(...)`` changes the learning rate, any hyperparameter or the optimizer itself
    between two steps. The keyword arguments are those of :func:`train` (``microbatch``, ``sync_every``,
    ``precision``, ``compile`` and ``channels_last`` are described there).
    """

    def __init__(self, problem: Problem, optimizer: str = "gd", lr: float | None = None, steps: int = 100,
                 batch_size: int | None = None, seed: int = 0, device: Any = "auto",
                 probes: Sequence[Probe] = (), callback: Callable[[dict], Any] | None = None,
                 schedule: str = "constant", warmup: int = 0, min_lr_ratio: float = 0.0,
                 max_loss: float | None = None, progress: bool | None = None, microbatch: int | None = None,
                 sync_every: int | None = None, precision: str = "float32", compile: bool = False,
                 channels_last: bool | None = None, divergence: Any = DIVERGENCE_DEFAULTS,
                 save_to: str | os.PathLike | None = None, save_every: int | None = None,
                 checkpoint_every: int | None = None, **hparams):
        if not isinstance(problem, Problem):
            raise ValueError(f"problem must be a workbench Problem (from wb.problems.make); got {type(problem).__name__}")
        self.problem = problem
        self.steps = check_int("steps", steps, 1, 10**9)
        self.seed = check_int("seed", seed, 0, 2**31 - 1)
        n_train = len(problem.train)
        self.batch_size = check_int("batch_size", batch_size, 1, n_train, allow_none=True)
        if self.batch_size == n_train:
            self.batch_size = None
        self.microbatch = check_int("microbatch", microbatch, 1, None, allow_none=True)
        sync_every = check_int("sync_every", sync_every, 1, 10**6, allow_none=True)
        self.precision = check_choice("precision", precision, PRECISIONS)
        self.compile = check_bool("compile", compile)
        if channels_last is not None:
            channels_last = check_bool("channels_last", channels_last)
        sched = validate_params(_optim.SCHEDULE_PARAMS, {"schedule": schedule, "warmup": warmup,
                                                          "min_lr_ratio": min_lr_ratio}, owner="train")
        self.schedule = sched
        self.max_loss = check_float("max_loss", max_loss, 0.0, None, low_inclusive=False, allow_none=True)
        self.divergence = _check_divergence(divergence)
        if save_to is not None:
            if not isinstance(save_to, (str, os.PathLike)) or not str(save_to):
                raise ValueError(f"save_to must be a file path (str or PathLike) or None; got {save_to!r}")
            save_to = Path(save_to)
            if save_to.is_dir():
                raise ValueError(f"save_to={str(save_to)!r} is a directory; give a file name such as runs/run.nc")
        self.save_to = save_to
        self.save_every = check_int("save_every", save_every, 1, 10**9, allow_none=True)
        self.checkpoint_every = check_int("checkpoint_every", checkpoint_every, 0, 10**9, allow_none=True)
        if save_to is None and (save_every is not None or checkpoint_every):
            raise ValueError("save_every and checkpoint_every need save_to (the path of the streamed record)")
        if save_to is not None:
            self.save_every = self.save_every or DEFAULT_SAVE_EVERY
            if self.checkpoint_every is None:
                self.checkpoint_every = self.save_every
        self.save_error: str | None = None
        self.final_probes_skipped = False
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable(dict) or None; got {type(callback).__name__}")
        self.callback = callback
        self.progress = progress
        self.device = resolve_device(device)
        self.sync_every = sync_every if sync_every is not None else \
            (CUDA_SYNC_EVERY if self.device.type == "cuda" else 1)
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ValueError(f"precision='fp16' needs a CUDA device (it trains with a GradScaler); got device="
                             f"{str(self.device)!r}: use precision='bf16' or 'float32' there")
        spec = _optim.spec(optimizer)
        if lr is not None:
            hparams["lr"] = lr
        self._check_precision_optimizer(spec)
        self.optimizer_name = spec.name
        self.hparams = spec.validate(hparams)
        # what resume() needs to build this run again (the problem and probes travel separately)
        self._init_kwargs = {"optimizer": spec.name, "steps": self.steps, "batch_size": self.batch_size,
                             "seed": self.seed, "schedule": sched["schedule"], "warmup": sched["warmup"],
                             "min_lr_ratio": sched["min_lr_ratio"], "max_loss": self.max_loss,
                             "microbatch": self.microbatch, "sync_every": sync_every, "precision": self.precision,
                             "compile": self.compile, "channels_last": channels_last,
                             "divergence": self.divergence if self.divergence is not None else None,
                             "save_every": self.save_every, "checkpoint_every": self.checkpoint_every,
                             **self.hparams}

        probes = list(probes or [])
        for p in probes:
            if not isinstance(p, Probe):
                raise ValueError(f"probes must be workbench Probe instances; got {type(p).__name__}")
        self._slots: list[_ProbeSlot] = []
        used = set()
        for p in probes:
            name, k = p.name, 2
            while name in used:
                name, k = f"{p.name}_{k}", k + 1
            used.add(name)
            p.name = name
            self._slots.append(_ProbeSlot(p, name))
        n_trainable = sum(p.numel() for p in problem.model.parameters() if p.requires_grad)
        for p in probes:       # misconfigured for this problem: a ValueError now, not a crash at step 0
            p.validate(problem, n_trainable)
        if save_to is not None and self.checkpoint_every:
            try:
                pickle.dumps(probes)
            except Exception as exc:
                raise ValueError(f"checkpoint_every={self.checkpoint_every} needs probes that can be pickled (their "
                                 f"state goes into the checkpoint); this one cannot ({type(exc).__name__}: {exc}): "
                                 "pass checkpoint_every=0 to stream the record without checkpoints") from exc

        self.model = problem.copy_model().to(self.device)
        if channels_last is None:
            channels_last = self.device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d)
                                                               for m in self.model.modules())
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # the training forward (compiled if asked); probes and curvature always use the plain module self.model
        self._train_model = torch.compile(self.model) if self.compile else self.model
        self._autocast_dtype = _AUTOCAST_DTYPES.get(self.precision)
        self._scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = _optim.make(self.optimizer_name, self.params, **self.hparams)
        self.base_lr = self.hparams["lr"]
        self.status = "pending"
        self.error: BaseException | None = None
        self.error_traceback: str | None = None
        self.diverged_at: int | None = None
        self.step = 0
        self.events: list[dict] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._pending: list[dict] = []
        self._hist: dict[str, list] = {k: [] for k in STEP_VARS}
        self._hist["optimizer"] = []
        self._thread: threading.Thread | None = None
        self._t0 = None
        self._done = threading.Event()
        self._resume_state: dict | None = None
        self._save_failing = False
        self.config = {
            "problem": problem.config(), "optimizer": self.optimizer_name, "hparams": dict(self.hparams),
            "steps": self.steps, "batch_size": self.batch_size, "seed": self.seed, "device": str(self.device),
            "schedule": dict(sched), "max_loss": self.max_loss,
            "probes": [s.probe.config() for s in self._slots],
            "divergence": self.divergence,
            "precision": self.precision, "microbatch": self.microbatch, "sync_every": self.sync_every,
            "compile": self.compile, "channels_last": self.channels_last,
            "param_dtypes": sorted({_dtype_name(p.dtype) for p in self.model.parameters()}),
            "data_dtypes": _dtypes_of(problem.data("train", max_samples=1)),
        }

    # -- control -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to stop; honoured before the next step (status becomes "stopped"). A stopped run skips the
        final probe call at θ_T (it can take many seconds, e.g. SpectralDensity): the record's attr
        ``final_probes_skipped`` is 1 and the probes' last values are those of their last scheduled step."""
        self._stop.set()

    def hot_swap(self, optimizer: str | None = None, carry_state: bool = True, **hparams) -> None:
        """Change the optimizer and/or hyperparameters between two steps.

        Hyperparameters alone are changed in place (optimizer state kept); a new optimizer starts with fresh
        state, keeping the parameters, except that ``carry_state=True`` carries the moments between optimizers
        with the same state layout (e.g. adam <-> adamw); the event's ``state`` says "kept", "carried" or
        "reset". Validated now (ValueError naming the field), applied before the next step
        and recorded in ``events``.
        """
        name = self.optimizer_name if optimizer is None else optimizer
        spec = _optim.spec(name)
        self._check_precision_optimizer(spec)
        base = dict(self.hparams) if name == self.optimizer_name else {}
        if name != self.optimizer_name and "lr" not in hparams:
            base["lr"] = self.base_lr
        base = {k: v for k, v in base.items() if k in {p.name for p in spec.hparams}}
        merged = spec.validate({**base, **hparams})
        with self._lock:
            self._pending.append({"optimizer": name, "hparams": merged, "changed": sorted(hparams),
                                  "carry_state": bool(carry_state)})
        if self.status in ("finished", "diverged", "stopped", "crashed"):
            self._apply_pending()

    def start(self) -> "Run":
        """Run in a background thread (for apps); returns immediately."""
        if self.status != "pending":
            raise RuntimeError(f"run already started (status {self.status!r})")
        self.status = "running"
        self._thread = threading.Thread(target=self._run_safely, name=f"workbench-run-{id(self)}", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> "Run":
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def run(self) -> "Run":
        """Run in this thread (blocking, with a tqdm progress bar unless ``progress=False``)."""
        if self.status != "pending":
            raise RuntimeError(f"run already started (status {self.status!r})")
        self.status = "running"
        try:
            self._loop(show_progress=self.progress is not False)
        except KeyboardInterrupt:
            self.final_probes_skipped = bool(self._slots)
            self._finish("stopped")
        except Exception as exc:  # crash: keep the record, re-raise with the run attached
            self._crash(exc)
            raise RunCrashed(f"run crashed at step {self.step}: {type(exc).__name__}: {exc} "
                             "(everything recorded before it is in err.run.record)", self) from exc
        return self

    @property
    def done(self) -> bool:
        return self.status in ("finished", "diverged", "stopped", "crashed")

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    # -- live access ---------------------------------------------------------------------------------------
    def history(self, since: int = 0) -> dict[str, list]:
        """Per-step values from step ``since`` on (a copy, thread-safe), plus each probe's recent values."""
        with self._lock:
            out = {k: list(v[since:]) for k, v in self._hist.items()}
            out["step"] = list(range(since, since + len(out["loss"])))
        return out

    def probe_history(self, name: str, since: int = 0) -> dict[str, list]:
        """Probe ``name``'s values from its ``since``-th measurement on (a copy, thread-safe)."""
        with self._lock:
            for s in self._slots:
                if s.name == name:
                    return {"step": list(s.steps[since:]), **{k: list(v[since:]) for k, v in s.values.items()}}
        raise ValueError(f"no probe named {name!r}; probes: {[s.name for s in self._slots]}")

    @property
    def probe_names(self) -> list[str]:
        return [s.name for s in self._slots]

    # -- the loop ------------------------------------------------------------------------------------------
    def _run_safely(self):
        try:
            self._loop(show_progress=bool(self.progress))
        except Exception as exc:
            self._crash(exc)

    def _crash(self, exc: BaseException):
        self.error = exc
        self.error_traceback = traceback.format_exc()
        self._finish("crashed")

    def _finish(self, status: str):
        with self._lock:
            if status == "finished" and self.divergence is not None:
                soft = self._soft_divergence(self._hist["loss"])
                if soft["ended_above"]:
                    status = "diverged"
                    self.diverged_at = soft["diverged_at"]
            self.status = status
        if self.save_to is not None:
            self._save_record(final=True)
        self._done.set()

    # -- divergence (soft rule) ----------------------------------------------------------------------------
    def _soft_divergence(self, losses: list) -> dict:
        """The soft rule on a loss history: threshold = factor × max(floor, |loss[0]|); ``blew_up_at`` = the first
        step above it (-1 if none); ``ended_above``: the median of the last ``window`` losses is above it (or not
        finite); ``diverged_at`` = the step the final excursion above the threshold began."""
        out = {"threshold": math.nan, "blew_up_at": -1, "ended_above": False, "diverged_at": None,
               "peak": math.nan}
        rule = self.divergence
        if rule is None or not losses:
            return out
        l0 = losses[0]
        ref = abs(l0) if math.isfinite(l0) else 0.0
        thr = rule["factor"] * max(rule["floor"], ref)
        arr = np.asarray(losses, dtype=np.float64)
        above = ~(arr <= thr)           # NaN counts as above
        out["threshold"] = thr
        if above.any():
            out["blew_up_at"] = int(np.argmax(above))
            out["peak"] = float(np.nanmax(arr)) if np.isfinite(arr).any() else math.nan
        tail = arr[-rule["window"]:]
        end = float(np.median(tail)) if np.isfinite(tail).all() else math.inf
        if end > thr:
            out["ended_above"] = True
            below = np.nonzero(~above)[0]
            out["diverged_at"] = int(below[-1] + 1) if below.size else 0
        return out

    # -- streaming and checkpoints ---------------------------------------------------------------------------
    def _warn_save(self, what: str, path: Path, exc: BaseException) -> None:
        msg = (f"{what} to {str(path)!r} failed at step {self.step} ({type(exc).__name__}: {exc}); the run goes on "
               f"and keeps its record in memory (run.record), the previous file at that path is intact, and the "
               f"save is retried at the next flush")
        self.save_error = msg
        if not self._save_failing:      # once per streak of failures
            self._save_failing = True
            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def _save_record(self, final: bool = False) -> bool:
        """Write the record so far to ``save_to`` (atomic: records.save). A failure (full disk, ...) warns once
        per streak, is kept in ``run.save_error`` and the record's ``save_error`` attr, and never stops the run."""
        from . import records
        try:
            records.save(self.record, self.save_to)
        except Exception as exc:
            self._warn_save("saving the record", self.save_to, exc)
            return False
        self._save_failing = False
        return True

    def _checkpoint(self, t: int, batches: "_Batches") -> bool:
        """Model, optimizer, RNG, batch sampler, probe states and the history before update ``t``, written
        atomically to ``checkpoint_path(save_to)``; :func:`resume` continues from it. Never raises: a failure
        warns (see :meth:`_save_record`)."""
        path = checkpoint_path(self.save_to)
        try:
            _atomic_torch_save(self._checkpoint_state(t, batches), path)
        except Exception as exc:
            self._warn_save("writing the checkpoint", path, exc)
            return False
        return True

    def _checkpoint_state(self, t: int, batches: "_Batches") -> dict:
        with self._lock:
            state = {
                "format": CHECKPOINT_FORMAT, "step": t, "init_kwargs": dict(self._init_kwargs),
                "config": json.loads(json.dumps(self.config, default=str)),
                "problem_config": self.problem.config(), "device": str(self.device),
                "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer_name": self.optimizer_name, "hparams": dict(self.hparams), "base_lr": self.base_lr,
                "optimizer": self.optimizer.state_dict(),
                "optimizer_attrs": _scalar_attrs(self.optimizer),
                "scaler": None if self._scaler is None else self._scaler.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "batches": batches.state(), "limit": self._limit,
                "hist": {k: list(v) for k, v in self._hist.items()},
                "slots": [{"name": s.name, "steps": list(s.steps), "values": {k: list(v) for k, v in s.values.items()},
                           "seconds": list(s.seconds)} for s in self._slots],
                "probes": pickle.dumps([s.probe for s in self._slots]),
                "events": [dict(e) for e in self.events],
            }
        return state

    def _restore(self, ck: dict) -> None:
        """Load a checkpoint's state into this (freshly built, pending) run; the loop continues at ck['step']."""
        self.model.load_state_dict(ck["model"])
        if ck["optimizer_name"] != self.optimizer_name or ck["hparams"] != self.hparams:
            self.optimizer = _optim.make(ck["optimizer_name"], self.params, **ck["hparams"])
        self.optimizer.load_state_dict(ck["optimizer"])
        for k, v in ck.get("optimizer_attrs", {}).items():     # counters kept outside state_dict (zo_sgd's t)
            if k in vars(self.optimizer):
                setattr(self.optimizer, k, v)
        self.optimizer_name, self.hparams, self.base_lr = ck["optimizer_name"], dict(ck["hparams"]), ck["base_lr"]
        if ck["scaler"] is not None and self._scaler is not None:
            self._scaler.load_state_dict(ck["scaler"])
        self.config = ck["config"]
        self.events = [dict(e) for e in ck["events"]]
        if "events" in self.config:
            self.config["events"] = self.events
        self._hist = {k: list(v) for k, v in ck["hist"].items()}
        for slot, saved in zip(self._slots, ck["slots"]):
            slot.steps, slot.seconds = list(saved["steps"]), list(saved["seconds"])
            slot.values = {k: list(v) for k, v in saved["values"].items()}
        self.step = int(ck["step"])
        self._resume_state = ck

    def _train_data(self) -> tuple:
        """The training split as a tuple of tensors on the run's device (4-D float inputs in channels_last)."""
        data = _tensors(self.problem.data("train", device=self.device))
        if not data or any(d.dim() == 0 or d.shape[0] != data[0].shape[0] for d in data):
            raise ValueError(f"problem {self.problem.name!r}: training data must be tensors with the same number of "
                             f"examples along dim 0; got shapes {[tuple(d.shape) for d in data]}")
        if self.channels_last:
            data = tuple(d.contiguous(memory_format=torch.channels_last) if d.dim() == 4 and d.is_floating_point()
                         else d for d in data)
        return data

    # -- one logical batch: microbatches, autocast, gradient scaling ---------------------------------------
    def _chunks(self, batch: tuple) -> list[tuple]:
        """``batch`` split along dim 0 into chunks of at most ``microbatch`` examples (views, no copies)."""
        n = batch[0].shape[0]
        if self.microbatch is None or n <= self.microbatch:
            return [batch]
        parts = [torch.split(d, self.microbatch) for d in batch]
        return [tuple(p[i] for p in parts) for i in range(len(parts[0]))]

    def _forward(self, chunk: tuple, model: torch.nn.Module | None = None) -> torch.Tensor:
        """The problem's mean loss on ``chunk`` (autocast in bf16/fp16; the compiled forward if compile=True)."""
        ctx = torch.autocast(self.device.type, dtype=self._autocast_dtype) if self._autocast_dtype is not None \
            else nullcontext()
        with ctx:
            return self.problem.loss(self._train_model if model is None else model, chunk)

    def _backward(self, loss: torch.Tensor, create_graph: bool = False) -> None:
        (loss if self._scaler is None else self._scaler.scale(loss)).backward(create_graph=create_graph)

    def _accumulate(self, chunks: list[tuple], backward: bool = True, create_graph: bool = False,
                    model: torch.nn.Module | None = None) -> torch.Tensor:
        """Mean loss over the chunks, each weighted by its share n_i / n of the examples, back-propagated chunk
        by chunk (so the accumulated gradients are the whole batch's); returns the (detached) total."""
        n = sum(c[0].shape[0] for c in chunks)
        total = None
        for c in chunks:
            w = c[0].shape[0] / n
            loss = self._forward(c, model)
            if backward:
                self._backward(loss * w, create_graph=create_graph)
            part = loss.detach() * w
            total = part if total is None else total + part
        return total

    def _closure(self, batch: tuple):
        chunks = self._chunks(batch)

        def closure(backward: bool = True, create_graph: bool = False):
            # backward=False: forward only (zeroth-order); create_graph: Hessian refresh (Sophia, AdaHessian),
            # through the plain module (torch.compile does not support double backward)
            self.optimizer.zero_grad(set_to_none=True)
            model = self.model if create_graph else None
            if len(chunks) == 1:
                l_ = self._forward(batch, model)
                if backward:
                    self._backward(l_, create_graph=create_graph)
                return l_
            return self._accumulate(chunks, backward=backward, create_graph=create_graph, model=model)
        return closure

    def _optimizer_step(self, batch: tuple) -> None:
        if self.spec.needs_closure:
            self.optimizer.step(self._closure(batch))
        elif self._scaler is not None:
            self._scaler.step(self.optimizer)     # gradients were unscaled before the norm; skips inf/nan steps
            self._scaler.update()
        else:
            self.optimizer.step()

    def _grads(self) -> list[torch.Tensor]:
        if self._scaler is not None:
            self._scaler.unscale_(self.optimizer)
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]

    def _grad_norm(self, grads) -> torch.Tensor:
        if not grads:
            return torch.zeros((), device=self.device)
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

    def _params_finite(self) -> torch.Tensor:
        """A device-side bool: every parameter entry is finite (one fused max-abs norm per dtype, no sync)."""
        ps = [p.detach() for p in self.params if p.numel()]
        if not ps:
            return torch.ones((), dtype=torch.bool, device=self.device)
        return torch.isfinite(torch.stack(torch._foreach_norm(ps, math.inf)).max())

    def _check_precision_optimizer(self, spec) -> None:
        if self.precision == "fp16" and spec.needs_closure:
            raise ValueError(f"optimizer={spec.name!r} steps through a closure, which torch's GradScaler does not "
                             "support: precision='fp16' accepts closure-free optimizers only; use precision='bf16'")

    def _apply_pending(self):
        with self._lock:
            pending, self._pending = self._pending, []
        for change in pending:
            name, hp = change["optimizer"], change["hparams"]
            spec = _optim.spec(name)
            if name != self.optimizer_name:
                old_opt, self.optimizer = self.optimizer, _optim.make(name, self.params, **hp)
                state = "reset"   # carried only between optimizers declaring the same state layout (adam<->adamw)
                if change.get("carry_state", True) and _optim.state_compatible(self.optimizer_name, name) \
                        and _optim.carry_state(old_opt, self.optimizer):
                    state = "carried"
            else:
                group_vals = spec.group_values(hp)
                old_vals = spec.group_values(self.hparams)
                live = set().union(*(g.keys() for g in self.optimizer.param_groups))
                if any(k not in live and old_vals.get(k) != v for k, v in group_vals.items()):
                    # a construction-time setting changed (e.g. Sophia's update_period): rebuild, carrying state
                    old_opt, self.optimizer = self.optimizer, _optim.make(name, self.params, **hp)
                    _optim.carry_state(old_opt, self.optimizer)
                    state = "rebuilt, state carried"
                else:
                    for g in self.optimizer.param_groups:
                        for k, v in group_vals.items():
                            if k in g:
                                g[k] = v
                    self.optimizer.workbench_hparams = hp
                    state = "kept"
            self.optimizer_name, self.hparams, self.base_lr = name, dict(hp), hp["lr"]
            ev = {"step": self.step, "optimizer": name, "hparams": dict(hp), "changed": change["changed"],
                  "state": state}
            with self._lock:
                self.events.append(ev)
            self.config["events"] = self.events

    def _set_lr(self, t):
        lr = self.base_lr * _optim.lr_factor(t, self.steps, **self.schedule)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("workbench_lr_scale", 1.0)   # groups with their own lr ratio (Muon's AdamW part)
        return lr

    def _probe(self, ctx: ProbeContext, step: int, final: bool):
        results = []
        for slot in self._slots:
            if not (final or slot.probe.due(step)):
                continue
            t0 = time.perf_counter()
            with isolated(self.model, self.params), _optim.eval_params(self.optimizer):
                vals = slot.probe.measure(ctx)   # Schedule-Free: probes see the evaluation point x
            results.append((slot, vals, time.perf_counter() - t0))
        return results

    def _store_probe(self, ctx, results, step, final=False):
        rows = {}
        for slot, vals, secs in results:
            if slot.steps and slot.steps[-1] == step:
                continue
            if not final:       # there is no update after the final measurement
                t0 = time.perf_counter()
                with isolated(self.model, self.params), _optim.eval_params(self.optimizer):
                    slot.probe.after_update(ctx, vals)
                secs += time.perf_counter() - t0
            with self._lock:
                slot.steps.append(step)
                slot.seconds.append(secs)
                for k in slot.vars:
                    slot.values.setdefault(k, []).append(vals.get(k, math.nan))
            for k, v in vals.items():
                rows[f"{slot.name}.{k}" if k in rows else k] = v
        return rows

    def _loop(self, show_progress: bool):
        dev = self.device
        ck = self._resume_state
        start = 0 if ck is None else int(ck["step"])
        self._t0 = time.perf_counter()
        if ck is not None and self._hist["wall_time"]:     # wall_time goes on from the checkpoint's last value
            self._t0 -= self._hist["wall_time"][-1]
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            batches = _Batches(self._train_data(), self.batch_size, gen)
            ctx = ProbeContext(self)
            with isolated(self.model, self.params):
                for slot in self._slots:
                    if ck is None:          # resumed probes come with their state (warm starts, grids, ...)
                        slot.probe.setup(ctx)
                    slot.vars = slot.probe.variables(ctx)
            if ck is not None:
                batches.load_state(ck["batches"])
                torch.set_rng_state(ck["rng_cpu"])
                if ck["rng_cuda"] is not None and dev.type == "cuda":
                    torch.cuda.set_rng_state_all(ck["rng_cuda"])
            self._bar = None
            if show_progress:
                from tqdm.auto import tqdm
                self._bar = tqdm(total=self.steps, initial=start, leave=False,
                                 desc=f"{self.problem.name} · {self.optimizer_name}")
            self._last_bar = 0.0
            self._window: list[tuple] = []     # steps done on the device whose values are not fetched yet
            self._limit: float | None = None if ck is None else ck["limit"]   # divergence limit (host copy)
            self._limit_t: torch.Tensor | None = None   # ... and on the device
            # the device-side values travel in float64 (exact copies of float32 losses and norms); MPS has none
            self._acc_dtype = torch.float32 if dev.type == "mps" else torch.float64
            streaming = self.save_to is not None
            try:
                try:
                    for t in range(start, self.steps):
                        due = any(s.probe.due(t) for s in self._slots)
                        save_due = streaming and t % self.save_every == 0 and (t > start or ck is None)
                        ckpt_due = streaming and bool(self.checkpoint_every) and t % self.checkpoint_every == 0 \
                            and (t > start or ck is None)
                        if self._window and (due or self._stop.is_set() or self._pending or save_due or ckpt_due
                                             or len(self._window) >= self.sync_every):
                            if self._flush():
                                return
                        if self._stop.is_set():
                            break
                        self.step = t
                        if self._pending:
                            self._apply_pending()
                        if ckpt_due:     # the checkpoint first: the record on disk never runs ahead of it
                            self._checkpoint(t, batches)
                        if save_due:
                            self._save_record()
                        if self._step(t, ctx, batches, immediate=due or self.sync_every == 1):
                            return
                    if self._flush():
                        return
                except BaseException as exc:
                    # a step queued after an unnoticed divergence may fail on non-finite values: fetch the window
                    # first, and report the divergence it holds instead of the error it caused
                    try:
                        diverged = self._flush()
                    except Exception:
                        diverged = False
                    if diverged and isinstance(exc, Exception):
                        return
                    raise
                self.step = len(self._hist["loss"])
                stopped = self._stop.is_set() and self.step < self.steps
                # final probes at θ_T, skipped when stopped (a stop must end the run promptly)
                ctx.step, ctx.final, ctx.batch, ctx._grad = self.step, True, None, None
                if self._slots and stopped:
                    self.final_probes_skipped = True
                elif self._slots:
                    self._store_probe(ctx, self._probe(ctx, self.step, final=True), self.step, final=True)
                self._finish_loop("stopped" if stopped else "finished")
            finally:
                if self._bar is not None:
                    self._bar.close()

    def _step(self, t: int, ctx: ProbeContext, batches, immediate: bool) -> bool:
        """Update t. ``immediate``: fetch loss, gradient norm and the divergence check now (probe steps, and
        every step when sync_every=1); otherwise they stay on the device in the window until the next sync.
        Returns True when the run diverged (and is finished)."""
        lr = self._set_lr(t)
        batch = next(batches)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        chunks = self._chunks(batch)
        if len(chunks) == 1:
            loss_t = self._forward(batch)          # backward after the divergence check
        else:
            loss_t = self._accumulate(chunks)      # forward + backward chunk by chunk
        if not immediate:
            loss_d = loss_t.detach().to(self._acc_dtype)
            if self._limit_t is None:
                if self._limit is not None:
                    self._limit_t = torch.tensor(self._limit, dtype=self._acc_dtype, device=self.device)
                elif self.max_loss is not None:
                    self._limit_t = torch.tensor(self.max_loss, dtype=self._acc_dtype, device=self.device)
                else:   # 1e8 * max(1, |first loss|), |first loss| read as 1 when it is not finite
                    ref = torch.where(torch.isfinite(loss_d), loss_d.abs(), torch.ones_like(loss_d))
                    self._limit_t = 1e8 * ref.clamp_min(1.0)
            bad = ~torch.isfinite(loss_d) | (loss_d > self._limit_t)
            if len(chunks) == 1:
                self._backward(loss_t)
            gnorm_d = self._grad_norm(self._grads())
            self._optimizer_step(batch)
            vals = torch.stack([loss_d, gnorm_d.to(self._acc_dtype), bad.to(self._acc_dtype),
                                self._params_finite().to(self._acc_dtype)])
            self._window.append((t, lr, self.optimizer_name, time.perf_counter() - self._t0, vals))
            return False

        loss = float(loss_t.detach())
        if self._limit is None:
            if self._limit_t is not None:
                self._limit = float(self._limit_t)
            elif self.max_loss is not None:
                self._limit = self.max_loss
            else:
                self._limit = 1e8 * max(1.0, abs(loss) if math.isfinite(loss) else 1.0)
        if not math.isfinite(loss) or loss > self._limit:
            self._append_step(loss, lr, math.nan)
            self.diverged_at = t
            self._finish_loop("diverged")
            return True
        if len(chunks) == 1:
            self._backward(loss_t)
        grads = self._grads()
        gnorm = float(self._grad_norm(grads)) if grads else 0.0
        ctx.step, ctx.final, ctx.batch, ctx.loss = t, False, batch, loss
        ctx._grad = None
        if any(s.probe.due(t) for s in self._slots):
            ctx._grad = torch.cat([g.detach().reshape(-1) for g in grads])
        results = self._probe(ctx, t, final=False)
        self._optimizer_step(batch)
        rows = self._store_probe(ctx, results, t)
        params_finite = bool(self._params_finite())
        self._commit(t, loss, lr, gnorm, rows)
        if not params_finite:
            self.diverged_at = t + 1
            self._finish_loop("diverged")
            return True
        return False

    def _flush(self) -> bool:
        """Fetch the window's values (one host sync) and commit its steps in order; True when one of them
        diverged (the steps after it are dropped: the record ends as if the run had stopped there)."""
        if not self._window:
            return False
        window, self._window = self._window, []
        values = torch.stack([w[-1] for w in window]).tolist()
        for (t, lr, opt_name, wall, _), (loss, gnorm, bad, finite) in zip(window, values):
            if bad:
                self._append_step(loss, lr, math.nan, wall=wall, optimizer=opt_name)
                self.diverged_at = t
                self._finish_loop("diverged")
                return True
            self._commit(t, loss, lr, gnorm, {}, wall=wall, optimizer=opt_name)
            if not finite:
                self.diverged_at = t + 1
                self._finish_loop("diverged")
                return True
        return False

    def _commit(self, t, loss, lr, gnorm, rows, wall=None, optimizer=None):
        """Record step t, hand it to the callback and advance the progress bar."""
        self._append_step(loss, lr, gnorm, wall=wall, optimizer=optimizer)
        if self.callback is not None:
            if self.callback({"step": t, "loss": loss, "lr": lr, "grad_norm": gnorm, **rows}) is False:
                self._stop.set()
        if self._bar is not None:
            self._bar.update(1)
            now = time.perf_counter()
            if now - self._last_bar > 0.2:
                self._bar.set_postfix(loss=f"{loss:.4g}")
                self._last_bar = now

    @property
    def spec(self):
        return _optim.spec(self.optimizer_name)

    def _append_step(self, loss, lr, gnorm, wall=None, optimizer=None):
        with self._lock:
            self._hist["loss"].append(loss)
            self._hist["lr"].append(lr)
            self._hist["grad_norm"].append(gnorm)
            self._hist["wall_time"].append(time.perf_counter() - self._t0 if wall is None else wall)
            self._hist["optimizer"].append(self.optimizer_name if optimizer is None else optimizer)

    def _finish_loop(self, status):
        self._finish(status)

    # -- record --------------------------------------------------------------------------------------------
    @property
    def record(self) -> xr.Dataset:
        """The run so far as an ``xarray.Dataset`` (schema in :mod:`workbench.records`)."""
        with self._lock:
            hist = {k: list(v) for k, v in self._hist.items()}
            slots = [(s, list(s.steps), {k: list(v) for k, v in s.values.items()}, list(s.seconds))
                     for s in self._slots]
            events = [dict(e) for e in self.events]
            status = self.status
        n = len(hist["loss"])
        data_vars = {}
        coords = {"step": ("step", np.arange(n), {"long_name": "training step",
                                                  "description": "0-based index of the update"})}
        for k, (ln, desc) in STEP_VARS.items():
            data_vars[k] = ("step", np.asarray(hist[k], dtype=np.float64),
                            {"long_name": ln, "description": desc})
        data_vars["optimizer"] = ("step", np.asarray(hist["optimizer"], dtype=object),
                                  {"long_name": "optimizer", "description": "optimizer used for update t"})
        attrs_extra = {}
        for slot, steps, values, seconds in slots:
            dim = f"{slot.name}_step"
            coords[dim] = (dim, np.asarray(steps, dtype=np.int64),
                           {"long_name": f"{slot.name} probe step", "description": f"steps at which probe "
                            f"{slot.name!r} ({type(slot.probe).__name__}, every {slot.probe.every}) measured"})
            for k, var in slot.vars.items():
                vals = values.get(k, [])
                shape = tuple(len(np.atleast_1d(var.coords[d])) for d in var.dims) if var.dims else ()
                arr = np.stack([as_numpy(v).reshape(shape) for v in vals]).astype(var.dtype) if vals else \
                    np.zeros((0,) + shape, dtype=var.dtype)
                for d in var.dims:
                    if d in var.coords and d not in coords:
                        coords[d] = (d, np.asarray(var.coords[d]))
                attrs = {"long_name": var.long_name, "description": var.description, "probe": slot.name}
                if var.units:
                    attrs["units"] = var.units
                data_vars[k] = ((dim, *var.dims), arr, attrs)
            data_vars[f"{slot.name}_seconds"] = (dim, np.asarray(seconds, dtype=np.float64), {
                "long_name": f"{slot.name} probe cost", "units": "s",
                "description": f"wall-clock seconds spent in probe {slot.name!r} at each of its steps"})
            for ak, av in slot.probe.attrs().items():
                attrs_extra[f"{slot.name}_{ak}"] = av
        import workbench
        attrs = {
            "workbench_schema": SCHEMA_VERSION, "config": json.dumps(self.config, default=str),
            "problem": self.problem.name, "optimizer": self.config["optimizer"], "seed": self.seed,
            "device": str(self.device), "precision": self.precision,
            "param_dtypes": ",".join(self.config["param_dtypes"]), "data_dtypes": ",".join(self.config["data_dtypes"]),
            "microbatch": -1 if self.microbatch is None else self.microbatch, "sync_every": self.sync_every,
            "compile": int(self.compile), "channels_last": int(self.channels_last),
            "status": status, "steps_requested": self.steps, "steps_done": n,
            "diverged_at": -1 if self.diverged_at is None else self.diverged_at,
            **self._divergence_attrs(hist["loss"], status),
            "final_probes_skipped": int(self.final_probes_skipped),
            "events": json.dumps(events, default=str),
            "versions": json.dumps({"workbench": workbench.__version__, "torch": torch.__version__,
                                    "numpy": np.__version__, "xarray": xr.__version__,
                                    "python": platform.python_version()}),
            **attrs_extra,
        }
        if self.error is not None:
            attrs["error"] = f"{type(self.error).__name__}: {self.error}"
        if self.save_error is not None:
            attrs["save_error"] = self.save_error
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)

    def _divergence_attrs(self, losses: list, status: str) -> dict:
        soft = self._soft_divergence(losses)
        rule = self.divergence
        if rule is None:
            text = "soft rule off (divergence=None)"
        else:
            text = (f"soft: diverged if the median of the last {rule['window']} losses ends above "
                    f"{rule['factor']:g} x max({rule['floor']:g}, |loss[0]|)")
        hard = f"max_loss={self.max_loss:g}" if self.max_loss is not None else "1e8 x max(1, |loss[0]|)"
        recovered = soft["blew_up_at"] >= 0 and not soft["ended_above"] and status in ("finished", "stopped")
        return {"divergence_rule": f"hard: non-finite loss or parameters, or loss above {hard} (stops the run); "
                                   + text,
                "blew_up_at": soft["blew_up_at"], "blowup_recovered": int(recovered),
                # NaN attributes never compare equal (a saved record would not equal itself): only finite ones
                **{k: float(soft[v]) for k, v in (("blowup_threshold", "threshold"), ("blowup_peak", "peak"))
                   if soft[v] is not None and math.isfinite(soft[v])}}


def train(problem: Problem, optimizer: str = "gd", lr: float | None = None, steps: int = 100,
          batch_size: int | None = None, seed: int = 0, device: Any = "auto", probes: Sequence[Probe] = (),
          callback: Callable[[dict], Any] | None = None, background: bool = False, **kwargs) -> Run:
    """Train a copy of ``problem.model`` and return the :class:`Run`.

    ``optimizer`` is any name from ``wb.optimizers.list()``; its hyperparameters (``momentum=0.9``,
    ``beta1=0.95``, ...) are keyword arguments, validated against ``wb.optimizers.schema(optimizer)``
    (``lr=None`` uses the schema default). ``batch_size=None`` is full batch. ``schedule`` (constant | cosine |
    linear | step), ``warmup`` and ``min_lr_ratio`` set the learning-rate schedule. ``callback(dict)`` receives
    every step's values (return ``False`` to stop). ``background=True`` starts a thread and returns at once;
    otherwise the call blocks with a progress bar (``progress=False`` hides it).

    Divergence. The hard rule stops the run: the loss or the parameters become non-finite, or the loss exceeds
    ``max_loss`` (default 1e8 × max(1, |initial loss|)); everything before is kept (status "diverged",
    ``diverged_at`` the step). The soft rule never stops a run, so catapult and edge-of-stability spikes that
    recover run to the end: with ``divergence={"factor": 10, "window": 10, "floor": 1}`` (the default; a number
    sets the factor, ``None`` turns it off) the threshold is factor × max(floor, |loss[0]|); the record's attrs
    give ``blowup_threshold``, ``blew_up_at`` (first step above it, -1 if none) and ``blowup_peak``; a run that
    would finish with the median of its last ``window`` losses above the threshold ends "diverged" (with
    ``diverged_at`` = where its final excursion above it began), one that went above and came back ends
    "finished" with ``blowup_recovered`` = 1. ``divergence_rule`` spells out both rules in words.

    ``stop()`` (or a callback's ``False``) ends the run before the next step and skips the final probe call
    (record attr ``final_probes_skipped`` = 1): a stopped run ends promptly even with expensive probes.

    Streaming and resume. ``save_to=PATH`` writes the record so far to PATH (atomically, with
    ``wb.records.save``) every ``save_every`` steps (default 100; at step 0 too) and at the end whatever the
    status (crashed included); every ``checkpoint_every`` steps (default: ``save_every``; 0 = never) it also writes
    ``PATH.ckpt`` (model, optimizer, RNG, batch sampler, probe states, history; atomic), from which
    :func:`resume` continues a killed run bit for bit on CPU (same torch thread count). A kill loses at most the
    steps since the last save. A failing save (full disk, ...) never stops or crashes the run: it warns once
    (``RuntimeWarning`` naming the path), keeps everything in memory (``run.record``), leaves the previous file
    intact, records the message in ``run.save_error`` and the record's ``save_error`` attr, and is retried at the
    next save. Each save rewrites the whole record (cost grows with the run: choose ``save_every`` accordingly).
    Probes must be picklable when checkpointing (ValueError at build otherwise).

    Probes are validated against the problem when the run is built (e.g. ``Sharpness(k=3)`` on a 2-parameter
    problem): a ``ValueError`` naming the field and its range, not a crash at step 0.

    The problem's own model is not modified.

    Speed settings (keyword arguments; each is recorded in the record's config and attrs, with the device and the
    parameter and data dtypes):

    * ``microbatch`` (int ≥ 1 or None): build each logical batch (the full training set for
      ``batch_size=None``) from chunks of at most ``microbatch`` examples, every tensor of the batch split along
      dim 0. The loss is Σ_i n_i/n · L_i with one backward per chunk, so the gradient equals the whole batch's
      (up to rounding; BatchNorm statistics and dropout masks are per chunk). Closure optimizers (SAM, Sophia,
      zeroth-order, ...) get a closure that microbatches too.
    * ``sync_every`` (int ≥ 1 or None = 1 on CPU/MPS, 16 on CUDA): loss, gradient norm and the divergence flags
      (loss finite and below the limit, parameters finite) stay on the device and are fetched once every
      ``sync_every`` steps, and whenever a probe is due, a hot swap is pending, a stop is requested, and at the
      end. The record is the same as with ``sync_every=1``: a divergence inside the window ends the record at
      the diverged step (``diverged_at`` as with 1). The callback gets every step's dict in order, up to
      ``sync_every - 1`` steps late, so a callback's ``False`` (or a hot swap it asks for) takes effect at the
      next sync: the steps already queued are recorded. After a divergence inside the window the model itself
      may hold up to ``sync_every - 1`` unrecorded updates. ``sync_every=1`` is the step-by-step loop.
    * ``precision`` ("float32" | "bf16" | "fp16"): ``torch.autocast`` around the forward and loss of training
      steps only (parameters, optimizer state, probes and curvature stay in the parameters' dtype). "fp16" needs
      CUDA and trains with a ``GradScaler`` (which checks for overflow on the host every step, and does not
      support closure optimizers); "bf16" works on every device.
    * ``compile`` (bool): ``torch.compile`` the training forward; probes and the Hessian refresh of
      Sophia/AdaHessian use the plain module (same parameters).
    * ``channels_last`` (bool or None = True on CUDA for models with a Conv2d): model and 4-D inputs in
      ``torch.channels_last`` memory format.
    """
    run = Run(problem, optimizer=optimizer, lr=lr, steps=steps, batch_size=batch_size, seed=seed, device=device,
              probes=probes, callback=callback, **kwargs)
    return run.start() if background else run.run()


def resume(path: str | os.PathLike, problem: Problem | None = None, callback: Callable[[dict], Any] | None = None,
           background: bool = False, progress: bool | None = None, device: Any = None) -> Run:
    """Continue a run streamed with ``train(..., save_to=path)`` from its last checkpoint (``<path>.ckpt``).

    The problem is rebuilt with ``wb.problems.make(name, seed=..., init_seed=..., **options)`` from the
    checkpoint's config; pass ``problem=`` for custom problems that cannot be rebuilt from a config (it must be
    the same problem). Model and optimizer state (the optimizer in use at the checkpoint, hot swaps included),
    torch's CPU RNG state, the mini-batch sampler, the probes (with their warm starts and grids) and the history
    come from the checkpoint, so on CPU the resumed record equals the uninterrupted one in every data variable
    except the wall-clock ones (``wall_time`` and ``<probe>_seconds``). The run goes on streaming to ``path``
    with the same ``save_every`` / ``checkpoint_every``. Steps recorded after the checkpoint are computed again.

    The checkpoint is a pickle (``torch.load(weights_only=False)``): resume only checkpoints you trust.
    Raises ``FileNotFoundError`` when there is no checkpoint, ``ValueError`` when it is not a workbench checkpoint
    or its run already ended.
    """
    path = Path(path)
    ck_path = checkpoint_path(path)
    if not ck_path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(ck_path)!r} (resume needs a run streamed with "
                                f"train(..., save_to={str(path)!r}) and checkpoint_every > 0)")
    try:
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"{str(ck_path)!r} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(ck_path)!r} is not a workbench run checkpoint (format {CHECKPOINT_FORMAT})")
    if path.exists():
        try:
            from . import records
            status = records.load(path).attrs.get("status")
        except Exception:
            status = None
        if status in ("finished", "diverged", "stopped"):
            raise ValueError(f"the run at {str(path)!r} already ended (status {status!r}); nothing to resume")
    if problem is None:
        pc = ck["problem_config"]
        from . import problems as _problems
        try:
            problem = _problems.make(pc["name"], seed=pc["seed"], init_seed=pc.get("init_seed"), **pc["options"])
        except ValueError as exc:
            raise ValueError(f"cannot rebuild problem {pc['name']!r} from the checkpoint's config ({exc}); pass "
                             f"resume({str(path)!r}, problem=...) with the run's problem") from exc
    elif not isinstance(problem, Problem):
        raise ValueError(f"problem must be a workbench Problem or None; got {type(problem).__name__}")
    probes = pickle.loads(ck["probes"])
    kwargs = dict(ck["init_kwargs"])
    run = Run(problem, probes=probes, callback=callback, progress=progress,
              device=ck["device"] if device is None else device, save_to=path, **kwargs)
    run._restore(ck)
    return run.start() if background else run.run()
