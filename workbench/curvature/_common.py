"""Shared helpers: data normalisation, model-state preservation, parameter selection, vector checks."""
from __future__ import annotations

import fnmatch
import re
from contextlib import contextmanager
from typing import Any, Iterable, Sequence

import torch
from torch import nn

__all__ = ["as_batches", "batch_size", "preserved", "select_params", "check_vector", "check_matrix"]


def _is_batch(obj: Any) -> bool:
    """A single batch is a tuple/list whose items are tensors (e.g. ``(x, y)``) or a dict of tensors."""
    if isinstance(obj, dict):
        return len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())
    if isinstance(obj, (tuple, list)) and len(obj) > 0:
        return all(torch.is_tensor(v) for v in obj)
    return False


def _first_tensor(batch) -> torch.Tensor:
    if torch.is_tensor(batch):
        return batch
    if isinstance(batch, dict):
        return next(iter(batch.values()))
    return batch[0]


def batch_size(batch) -> int:
    t = _first_tensor(batch)
    if t.dim() == 0:
        raise ValueError("data: a batch's first tensor must have a leading batch dimension; got a scalar tensor")
    return int(t.shape[0])


def _to(batch, device):
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: v.to(device) for k, v in batch.items()}
    return type(batch)(v.to(device) for v in batch) if isinstance(batch, tuple) else [v.to(device) for v in batch]


def as_batches(data: Any, device: torch.device) -> tuple[list, list[float], int]:
    """Normalise ``data`` (one batch ``(x, y)`` or an iterable of batches) to a list of batches on ``device``.

    Returns ``(batches, weights, n)`` with weights ``n_b / n`` (batches weighted by their size) and ``n`` the total
    number of examples. Empty data raises ``ValueError``.
    """
    if data is None:
        raise ValueError("data must be one batch (x, y) or an iterable of batches; got None")
    if _is_batch(data):
        batches = [data]
    else:
        try:
            batches = list(data)
        except TypeError as exc:
            raise ValueError(f"data must be one batch (x, y) or an iterable of batches; got {type(data).__name__}") \
                from exc
        for b in batches:
            if not _is_batch(b):
                raise ValueError("data must be one batch (x, y) or an iterable of such batches; found an item of "
                                 f"type {type(b).__name__}")
    batches = [_to(b, device) for b in batches]
    sizes = [batch_size(b) for b in batches]
    keep = [(b, s) for b, s in zip(batches, sizes) if s > 0]
    n = sum(s for _, s in keep)
    if n == 0:
        raise ValueError("data is empty: need at least one example (got no batches or only empty batches)")
    return [b for b, _ in keep], [s / n for _, s in keep], n


def select_params(model: nn.Module, params: Any = None) -> list[tuple[str, torch.nn.Parameter]]:
    """Named trainable parameters picked by ``params``.

    ``None``: every parameter with ``requires_grad``. A string: a glob pattern (``"0.*"``, ``"*.weight"``) or, if no
    glob matches, a regular expression searched in the name, or a module name prefix (``"3"`` selects ``3.weight``
    and ``3.bias``). A list of names/patterns, or a list of parameter tensors, selects their union (model order kept).
    """
    named = [(n, p) for n, p in model.named_parameters()]
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
        if not chosen:
            raise ValueError("params: the model has no trainable parameters (none with requires_grad=True)")
        return chosen
    if isinstance(params, (str, torch.Tensor)):
        params = [params]
    try:
        items = list(params)
    except TypeError as exc:
        raise ValueError("params must be None, a name pattern, or a list of names/patterns/parameters; "
                         f"got {type(params).__name__}") from exc
    if not items:
        raise ValueError("params: the selection is empty; pass None for all trainable parameters")
    keep: set[int] = set()
    for item in items:
        if torch.is_tensor(item):
            hits = [i for i, (_, p) in enumerate(named) if p is item]
            if not hits:
                raise ValueError("params: a tensor in the list is not a parameter of the model")
        elif isinstance(item, str):
            hits = [i for i, (n, _) in enumerate(named) if n == item or fnmatch.fnmatchcase(n, item)
                    or n.startswith(item + ".")]
            if not hits:
                try:
                    rx = re.compile(item)
                    hits = [i for i, (n, _) in enumerate(named) if rx.search(n)]
                except re.error:
                    hits = []
            if not hits:
                raise ValueError(f"params: {item!r} matches no parameter; names are {[n for n, _ in named]}")
        else:
            raise ValueError(f"params items must be names, patterns or parameters; got {type(item).__name__}")
        keep.update(hits)
    return [named[i] for i in sorted(keep)]


@contextmanager
def preserved(model: nn.Module, mode: str | None, seed: int | None = None):
    """Run a block with the model in ``mode`` ("eval"/"train"/None = as is) and restore everything on exit.

    Restores each module's ``training`` flag, every buffer (BatchNorm running statistics, ``num_batches_tracked``)
    and the CPU/CUDA RNG state. Inside, the RNG is seeded with ``seed`` (if given) so dropout masks are the same
    on every evaluation and the operator is a fixed linear map. Gradients are never written (``autograd.grad`` only).
    """
    modes = [m.training for m in model.modules()]
    bufs = list(model.buffers())
    saved = [b.detach().clone() for b in bufs]
    devices = sorted({b.device.index for b in [*bufs, *model.parameters()] if b.device.type == "cuda"}
                     - {None}) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices if torch.cuda.is_available() else []):
        if seed is not None:
            torch.manual_seed(int(seed))
        try:
            if mode == "eval":
                model.eval()
            elif mode == "train":
                model.train()
            yield
        finally:
            with torch.no_grad():
                for m, flag in zip(model.modules(), modes):
                    m.training = flag
                for b, s in zip(bufs, saved):
                    if not torch.equal(b, s):     # untouched buffers keep their version counter
                        b.copy_(s)


def check_vector(v: Any, n: int, name: str = "v") -> torch.Tensor:
    if not torch.is_tensor(v):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({n},); got {type(v).__name__}")
    if v.dim() != 1 or v.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},); got {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf); every entry must be finite")
    return v


def check_matrix(V: Any, n: int, name: str = "V") -> torch.Tensor:
    if not torch.is_tensor(V):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({n}, k); got {type(V).__name__}")
    if V.dim() != 2 or V.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n}, k); got {tuple(V.shape)}")
    if not bool(torch.isfinite(V).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf); every entry must be finite")
    return V
