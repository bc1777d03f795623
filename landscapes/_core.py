"""Shared machinery: flat parameter vectors, model-state preservation, data handling, batched grid evaluation.

The grid evaluator computes ``loss(model with θ = center + Σ_i c_i d_i, batch)`` for many coefficient vectors ``c``
at once with ``torch.func.functional_call`` + ``torch.func.vmap`` (the model's own parameters are never written),
chunked so that one chunk's activations fit a memory budget, and falls back to a plain loop (with a warning that
says why) where vmap cannot run the model.
"""
from __future__ import annotations

import contextlib
import copy
import math
import numbers
import warnings
from collections import OrderedDict
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

__all__ = ["trainable", "flatten", "unflatten_to_dict", "flat_params", "preserved", "as_batches",
           "GridEvaluator", "resolve_loss", "DEFAULT_MEMORY"]

# bytes of intermediate activations one vmap chunk may use. On CPU a small budget is faster: chunks whose
# activations stay near the caches beat one huge batch (measured on the 2-16-16-1 spirals MLP: 64-150 points per
# chunk ran ~2x faster than all 441 at once); on GPUs big chunks keep the device busy.
DEFAULT_MEMORY = {"cpu": 32 << 20, "cuda": 1 << 30, "mps": 256 << 20}
# on CPU, when fewer than this many grid points fit a chunk, one forward pass is big enough to keep the core busy
# and batching grid points gains nothing (it costs copies of shared inputs): "auto" uses the loop
MIN_CPU_CHUNK = 4
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
if hasattr(nn, "RMSNorm"):
    _NORM_TYPES = _NORM_TYPES + (nn.RMSNorm,)


# -- parameters ---------------------------------------------------------------------------------------------
def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the trainable parameters, in ``model.parameters()`` order (the trajectory order)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for _, p in trainable(model)])


def flatten(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_to_dict(flat: torch.Tensor, names: Sequence[str], shapes: Sequence[torch.Size]) -> dict:
    out, i = {}, 0
    for n, s in zip(names, shapes):
        k = math.prod(s)
        out[n] = flat[..., i:i + k].reshape(*flat.shape[:-1], *s)
        i += k
    return out


def norm_layer_param_names(model: nn.Module) -> set[str]:
    """Names of parameters that belong to normalization layers (BatchNorm, LayerNorm, GroupNorm, ...)."""
    names = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, _NORM_TYPES):
            for pname, _ in mod.named_parameters(recurse=False):
                names.add(f"{mname}.{pname}" if mname else pname)
    return names


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@contextlib.contextmanager
def preserved(model: nn.Module):
    """Restore every module's train/eval flag, all buffers (e.g. BatchNorm running statistics), parameter values
    and the CPU/CUDA RNG state on exit. Parameters are compared by a cheap snapshot only if they change."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = sorted({p.device.index for p in model.parameters() if p.device.type == "cuda"} - {None})
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            for m, t in modes:
                m.train(t)
            with torch.no_grad():
                for b, v in buffers:
                    b.copy_(v)


# -- data ---------------------------------------------------------------------------------------------------
def _is_single_batch(data) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0])
            and torch.is_tensor(data[1]))


def as_batches(data) -> Iterable[tuple]:
    """One batch ``(x, y)`` -> a one-element list; any other iterable of batches is passed through."""
    if _is_single_batch(data):
        return [tuple(data)]
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ValueError("data must be one batch (x, y) of tensors or an iterable of such batches; "
                         f"got {type(data).__name__}")
    return data


def batch_size_of(batch) -> int:
    x = batch[0]
    return int(x.shape[0]) if torch.is_tensor(x) and x.dim() > 0 else 1


def to_device(batch, device):
    return tuple(t.to(device) if torch.is_tensor(t) else t for t in batch)


# -- loss ---------------------------------------------------------------------------------------------------
def resolve_loss(loss, metrics=None):
    """Return ``(loss_of_model, output_fn, metrics)``.

    ``loss`` may be a callable ``loss(model, batch) -> scalar``, a bound ``Problem.loss`` or a ``Problem``. For the
    latter two the model output is computed once and fed to ``problem.loss_fn`` and the problem's metrics (e.g.
    accuracy). ``metrics`` (a dict name -> fn(outputs, targets)) overrides the problem's; ``metrics={}`` turns them
    off. With a plain callable loss, ``metrics`` cannot be used (there is no access to the outputs).
    """
    from workbench.problems import Problem

    prob = loss if isinstance(loss, Problem) else getattr(loss, "__self__", None)
    if isinstance(prob, Problem) and (loss is prob or getattr(loss, "__func__", None) is Problem.loss):
        mets = dict(prob.metrics) if metrics is None else dict(metrics)
        return prob.loss, prob.loss_fn, mets
    if not callable(loss):
        raise ValueError(f"loss must be a callable loss(model, batch) -> scalar or a Problem; got {type(loss).__name__}")
    if metrics:
        raise ValueError("metrics need the model outputs: pass the problem's loss (prob.loss) or the Problem itself, "
                         "not a plain callable, when asking for metrics")
    return loss, None, {}


class _Objective(nn.Module):
    """Wraps ``model`` so that ``functional_call`` can swap its parameters while a user loss calls ``model(x)``."""

    def __init__(self, model, loss, loss_fn, metrics):
        super().__init__()
        self.model = model
        self._loss = loss
        self._loss_fn = loss_fn
        self._metrics = metrics

    def forward(self, x, y):
        if self._loss_fn is None:
            return self._loss(self.model, (x, y)).reshape(1)
        out = self.model(x)
        vals = [self._loss_fn(out, y).reshape(())]
        vals += [fn(out, y).to(vals[0].dtype).reshape(()) for fn in self._metrics.values()]
        return torch.stack(vals)


# -- evaluation ---------------------------------------------------------------------------------------------
class GridEvaluator:
    """Evaluate loss (and metrics) at ``center + coeffs @ D`` for many coefficient rows, batched with vmap.

    ``D`` is a ``(k, n)`` tensor of flat directions in the order of the model's trainable parameters.
    ``mode``: "eval" (default: BatchNorm uses running statistics, dropout off) or "train" (BatchNorm uses batch
    statistics of each grid point, dropout active). ``method``: "auto" (vmap with a loop fallback when vmap fails;
    on CPU the loop when one forward pass alone fills a quarter of the chunk budget), "vmap", or "loop".
    """

    def __init__(self, model: nn.Module, loss, data, *, mode: str = "eval", method: str = "auto",
                 metrics=None, chunk_size: int | None = None, max_memory: int | None = None,
                 progress: bool | None = None, device=None, desc: str = "landscape",
                 batch_size: int | None = None, autocast: str | None = None):
        self.model = model
        self.loss, self.loss_fn, self.metrics = resolve_loss(loss, metrics)
        self.quantities = ["loss"] + list(self.metrics)
        self.data = as_batches(data)
        self.mode = mode
        self.method = method
        self.chunk_size = chunk_size
        self._max_memory = max_memory
        self.progress = progress
        self.desc = desc
        params = trainable(model)
        self.names = [n for n, _ in params]
        self.shapes = [p.shape for _, p in params]
        self.device = params[0][1].device if params else torch.device("cpu")
        self.dtype = params[0][1].dtype if params else torch.float32
        self.max_memory = (DEFAULT_MEMORY.get(self.device.type, 1 << 30) if max_memory is None else max_memory)
        self.batch_size = batch_size
        self.autocast = autocast
        self.used_method = None
        self.used_batch = None          # the largest microbatch evaluated (examples per forward pass)
        self.n_examples = 0
        self.n_forward = 0              # forward passes per grid point (microbatches over all of the data)
        self._per_example = None
        self.used_chunk = None
        self.fallback_reason = None
        self.method_reason = None

    # memory model of one grid point's evaluation on m examples: 2 x the activations of a forward pass (module
    # outputs, measured by hooks on a probe slice of <= PROBE examples and scaled linearly) + 2 copies of θ
    PROBE = 8

    def _activation_bytes_per_example(self, batch) -> float:
        total = [0]

        def hook(_m, _i, out):
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if torch.is_tensor(t):
                    total[0] += t.numel() * t.element_size()

        m = min(self.PROBE, batch_size_of(batch))
        handles = [mod.register_forward_hook(hook) for mod in self.model.modules()]
        try:
            with torch.no_grad(), self._autocast_ctx():
                self.model(_slice(batch, 0, m, batch_size_of(batch))[0])
        except Exception:  # the model may not take x alone; fall back to a generous guess
            total[0] = 8 * 1024 * m
        finally:
            for h in handles:
                h.remove()
        return total[0] / max(m, 1)

    def _per_point_bytes(self, batch, n_params: int, m: int | None = None) -> int:
        if self._per_example is None:
            self._per_example = self._activation_bytes_per_example(batch)
        m = batch_size_of(batch) if m is None else m
        return int(2 * self._per_example * m) + 2 * n_params * self._itemsize + 1

    @property
    def _itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def _autocast_ctx(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.autocast])

    def _microbatch(self, batch, n_params: int) -> int:
        """Examples per forward pass: ``batch_size`` if given; else, with an explicit ``max_memory``, the most
        examples whose evaluation fits the budget (all of the batch when it fits)."""
        bs = batch_size_of(batch)
        if self.batch_size is not None:
            return min(bs, self.batch_size)
        if self._max_memory is None:
            return bs
        if self._per_point_bytes(batch, n_params, bs) <= self.max_memory:
            return bs
        one = self._per_point_bytes(batch, n_params, 1)
        if one > self.max_memory:
            raise ValueError(
                f"max_memory={self.max_memory} bytes is smaller than the evaluation of one example at one grid "
                f"point (~{one} bytes: twice one example's activations, ~{self._per_example:.0f} bytes, plus two "
                f"copies of the {n_params} parameters); max_memory must be at least {one}")
        fixed = 2 * n_params * self._itemsize + 1
        return max(1, min(bs, int((self.max_memory - fixed) // (2 * self._per_example))))

    def __call__(self, center: torch.Tensor, D: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        """Return ``(len(quantities), n_points)`` batch-size-weighted means over the data."""
        n_points = coeffs.shape[0]
        center = center.to(self.device, self.dtype)
        D = D.to(self.device, self.dtype)
        coeffs = coeffs.to(self.device, self.dtype)
        totals = torch.zeros(len(self.quantities), n_points, dtype=torch.float64)
        count = 0
        with preserved(self.model), torch.no_grad():
            self.model.train(self.mode == "train")
            obj_model = self.model
            if self.mode == "train" and has_batchnorm(self.model) and self.method != "loop":
                # vmap cannot update running statistics in place: evaluate a copy whose BatchNorm layers use batch
                # statistics without tracking (the caller's model and its buffers are not touched)
                obj_model = copy.deepcopy(self.model)
                torch.func.replace_all_batch_norm_modules_(obj_model)
                obj_model.train(True)
            objective = _Objective(obj_model, self.loss, self.loss_fn, self.metrics)
            buffers = {"model." + n: b for n, b in obj_model.named_buffers()}
            try:
                n_batches = len(self.data)
            except TypeError:                       # a generator: the bar counts batches without a total
                n_batches = None
            bar = None
            try:
                for batch in self.data:
                    batch = to_device(batch, self.device)
                    bs = batch_size_of(batch)
                    mb = self._microbatch(batch, D.shape[1])
                    if self.used_chunk is None:
                        self.used_chunk = self._chunk(batch, D.shape[1], n_points, mb)
                        if (self.method == "auto" and self.chunk_size is None and self.device.type == "cpu"
                                and self.used_chunk < min(MIN_CPU_CHUNK, n_points)):
                            self.used_method = "loop"
                            self.method_reason = (
                                f"one grid point's forward pass already needs ~{self._per_point / 2**20:.1f} MiB of "
                                f"activations (budget {self.max_memory / 2**20:.0f} MiB per chunk): on CPU batching "
                                "grid points gains nothing there, so the loop is used")
                    chunk = self.used_chunk
                    if bar is None:
                        bar = self._bar(n_points, n_batches, bs, mb)
                    for s0 in range(0, bs, mb):
                        part = _slice(batch, s0, min(bs, s0 + mb), bs)
                        m = min(bs, s0 + mb) - s0
                        for s in range(0, n_points, chunk):
                            vals = self._eval_chunk(objective, buffers, center, D, coeffs[s:s + chunk], part)
                            totals[:, s:s + chunk] += vals.detach().to("cpu", torch.float64).T * m
                            if bar is not None:
                                bar.update(vals.shape[0] * m / bs)
                        self.n_forward += 1
                        self.used_batch = max(self.used_batch or 0, m)
                    count += bs
            finally:
                if bar is not None:
                    bar.close()
        if count == 0:
            raise ValueError("data is empty: it yielded no batches")
        self.n_examples = count
        return totals / count

    def _bar(self, n_points, n_batches, bs, mb):
        show = self.progress
        evals = n_points * (n_batches or 1) * math.ceil(bs / mb)
        if show is None:   # automatic: when the grid takes many forward passes of a real model
            show = evals >= 400 and (self.used_chunk or n_points) < n_points
        if not show:
            return None
        from tqdm.auto import tqdm
        total = None if n_batches is None else n_points * n_batches
        unit = "pt" if n_batches in (None, 1) else "pt·batch"
        return tqdm(total=total, desc=self.desc, leave=False, unit=unit)

    def _chunk(self, batch, n_params, n_points, m=None):
        if self.chunk_size is not None:
            return max(1, min(int(self.chunk_size), n_points))
        per = self._per_point = self._per_point_bytes(batch, n_params, m)
        return max(1, min(n_points, int(self.max_memory // per)))

    def _params(self, center, D, c):
        theta = center + c @ D
        return {"model." + n: v for n, v in unflatten_to_dict(theta, self.names, self.shapes).items()}

    def _eval_chunk(self, objective, buffers, center, D, c, batch):
        with self._autocast_ctx():
            return self._eval_chunk_inner(objective, buffers, center, D, c, batch)

    def _eval_chunk_inner(self, objective, buffers, center, D, c, batch):
        x, y = batch[0], batch[1]
        if self.method in ("auto", "vmap") and self.used_method != "loop":
            try:
                out = self._vmap(objective, buffers, center, D, c, x, y)
                self.used_method = "vmap"
                return out
            except Exception as exc:  # noqa: BLE001 - any failure of vmap means: use the loop
                if self.method == "vmap":
                    raise
                self.fallback_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                warnings.warn("landscapes: torch.func.vmap cannot evaluate this model/loss "
                              f"({self.fallback_reason}); falling back to a loop over grid points (slower)",
                              RuntimeWarning, stacklevel=4)
                self.used_method = "loop"
        self.used_method = "loop"
        rows = []
        for ci in c:
            params = self._params(center, D, ci)
            rows.append(torch.func.functional_call(objective, {**params, **buffers}, (x, y), strict=False))
        return torch.stack(rows)

    def _vmap(self, objective, buffers, center, D, c, x, y):
        def f(ci):
            params = self._params(center, D, ci)
            return torch.func.functional_call(objective, {**params, **buffers}, (x, y), strict=False)

        randomness = "different" if self.mode == "train" else "error"
        return torch.func.vmap(f, randomness=randomness)(c)


def _slice(batch, lo: int, hi: int, bs: int) -> tuple:
    """Examples ``lo:hi`` of a batch: every tensor whose first dimension is the batch size is sliced (views, no
    copies); other entries are passed on unchanged."""
    if lo == 0 and hi == bs:
        return batch
    return tuple(t[lo:hi] if torch.is_tensor(t) and t.dim() > 0 and t.shape[0] == bs else t for t in batch)


def check_autocast(autocast):
    """None (float32/float64 as the model is) or a reduced-precision autocast dtype name."""
    if autocast is None:
        return None
    if autocast in (torch.bfloat16, torch.float16):
        autocast = "bf16" if autocast == torch.bfloat16 else "fp16"
    from workbench._validate import check_choice
    return check_choice("autocast", autocast, list(AUTOCAST_DTYPES))


def check_mode(mode):
    from workbench._validate import check_choice
    return check_choice("mode", mode, ["eval", "train"])


def check_method(method):
    from workbench._validate import check_choice
    return check_choice("method", method, ["auto", "vmap", "loop"])


def is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)
