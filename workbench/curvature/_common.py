"""Shared helpers: data normalisation, model-state preservation, parameter selection, vector checks."""
from __future__ import annotations

import fnmatch
import math
import re
from contextlib import contextmanager
from typing import Any, Iterable, Sequence

import torch
from torch import nn

__all__ = ["as_batches", "batch_size", "preserved", "select_params", "check_vector", "check_matrix", "BatchSource",
           "parse_memory", "slice_batch"]


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


_batch_len = batch_size


def slice_batch(batch, i: int, j: int):
    """Examples ``i:j`` of a batch (tuple/list/dict of tensors sharing the leading dimension)."""
    if isinstance(batch, dict):
        return {k: v[i:j] for k, v in batch.items()}
    return type(batch)(t[i:j] for t in batch) if isinstance(batch, tuple) else [t[i:j] for t in batch]


_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def parse_memory(value: Any, name: str = "max_memory") -> int | None:
    """Bytes from an int/float (bytes) or a string such as ``"2GiB"``, ``"512 MiB"``, ``"1.5GB"`` (``None`` stays
    ``None``). Units: B, kB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB or K/M/G/T (powers of 1024)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number of bytes > 0 or a string like '2GiB'; got {value!r}")
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{name}={value!r} is not a memory size: use bytes (an int) or a string like '2GiB', "
                             "'512MiB', '1.5GB' (units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")
        nbytes = float(m.group(1)) * _UNITS[m.group(2).lower()]
    elif isinstance(value, (int, float)):
        nbytes = float(value)
    else:
        raise ValueError(f"{name} must be a number of bytes > 0 or a string like '2GiB'; got {type(value).__name__}")
    if not math.isfinite(nbytes) or nbytes < 1:
        raise ValueError(f"{name}={value!r} is out of range: {name} must be at least 1 byte (and finite)")
    return int(nbytes)


class BatchSource:
    """The data of a curvature operator as a re-iterable stream of microbatches on ``device``.

    ``data`` is one batch ``(x, y)`` (a tuple/list/dict of tensors), a re-iterable of batches (a list, a
    ``DataLoader``, ``problem.batches`` wrapped in a list...) or a one-shot iterator (a generator; its batches are
    kept in host memory as given, so for data larger than memory pass a re-iterable). Batches stay where they are
    (e.g. on the CPU) and each microbatch is moved to ``device`` only while it is used, so the device holds one
    microbatch at a time. ``batch_size`` re-chunks every batch into microbatches of at most that many examples
    (``None`` keeps the batches as given). ``start``/``stop`` restrict it to examples ``start:stop`` of the
    concatenated data (for disjoint data subsets).

    Iterating yields ``(microbatch, weight)`` with ``weight = n_b / n``: a mean loss over the data is the
    weighted sum of the microbatch mean losses.
    """

    def __init__(self, data: Any, device, batch_size: int | None = None, start: int = 0, stop: int | None = None):
        if isinstance(data, BatchSource):
            self._items, self._sizes = data._items, data._sizes
            self.iterator_materialised = data.iterator_materialised
        else:
            if data is None:
                raise ValueError("data must be one batch (x, y) or an iterable of batches; got None")
            self.iterator_materialised = False
            if _is_batch(data):
                items = [data]
            elif torch.is_tensor(data):
                raise ValueError("data must be one batch (x, y) or an iterable of batches; got a single tensor "
                                 "(pass (x, y))")
            else:
                try:
                    it = iter(data)
                except TypeError as exc:
                    raise ValueError("data must be one batch (x, y) or an iterable of batches; got "
                                     f"{type(data).__name__}") from exc
                if it is data:                 # one-shot iterator: keep its batches (host memory, as given)
                    items = list(it)
                    self.iterator_materialised = True
                else:
                    items = data
            self._items = items
            sizes = []
            for b in items:                    # one pass: check every batch and count its examples
                if not _is_batch(b):
                    raise ValueError("data must be one batch (x, y) or an iterable of such batches; found an item "
                                     f"of type {type(b).__name__}")
                sizes.append(_batch_len(b))
            self._sizes = sizes
        self.device = torch.device(device)
        total = sum(self._sizes)
        self.start = max(0, int(start))
        self.stop = total if stop is None else min(int(stop), total)
        self.n = max(0, self.stop - self.start)
        if self.n == 0:
            raise ValueError("data is empty: need at least one example (got no batches or only empty batches)")
        if batch_size is not None:
            batch_size = int(batch_size)
            if batch_size < 1:
                raise ValueError(f"batch_size={batch_size} is out of range: batch_size must be an integer >= 1")
        self.batch_size = batch_size
        self.n_chunks = sum(1 for _ in self._ranges())

    def _ranges(self):
        """(item index, i, j): examples i:j of item ``index`` that belong to this source's microbatches."""
        off = 0
        for idx, s in enumerate(self._sizes):
            lo, hi = max(self.start - off, 0), min(self.stop - off, s)
            if hi > lo:
                step = (hi - lo) if self.batch_size is None else self.batch_size
                for i in range(lo, hi, step):
                    yield idx, i, min(i + step, hi)
            off += s
            if off >= self.stop:
                break

    def __iter__(self):
        ranges = {}
        for idx, i, j in self._ranges():
            ranges.setdefault(idx, []).append((i, j))
        if not ranges:
            return
        last = max(ranges)
        for idx, b in enumerate(self._items):
            for i, j in ranges.get(idx, ()):
                part = b if (i == 0 and j == self._sizes[idx]) else slice_batch(b, i, j)
                yield _to(part, self.device), (j - i) / self.n
            if idx >= last:
                break

    def __len__(self) -> int:
        return self.n_chunks

    def head(self, m: int):
        """The first ``m`` examples (at most one input batch's worth) as one batch on the device."""
        return next(iter(self.rechunk(m)))[0]

    def rechunk(self, batch_size: int | None) -> "BatchSource":
        return BatchSource(self, self.device, batch_size, self.start, self.stop)

    def subset(self, start: int, stop: int) -> "BatchSource":
        """Examples ``start:stop`` of this source (positions relative to it), same microbatch size."""
        return BatchSource(self, self.device, self.batch_size, self.start + start, self.start + stop)

    def split(self, n: int) -> list["BatchSource"]:
        """``n`` disjoint contiguous subsets of (nearly) equal size covering the data."""
        edges = [round(i * self.n / n) for i in range(n + 1)]
        return [self.subset(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def __repr__(self):
        return (f"BatchSource(n={self.n}, microbatches={self.n_chunks}, batch_size={self.batch_size}, "
                f"device={self.device})")


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
            # the generators this block can draw from (CPU and the model's CUDA devices): torch.manual_seed would
            # also visit every other backend (~0.6 ms, a few % of a small model's product), with the same draws here
            torch.default_generator.manual_seed(int(seed))
            for d in devices:
                torch.cuda.default_generators[d].manual_seed(int(seed))
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
