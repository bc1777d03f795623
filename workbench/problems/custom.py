"""Your own model and data as a :class:`~workbench.problems.Problem`: ``wb.problems.custom(model, loss, train)``.

Everything the workbench does to a registered problem — ``wb.train`` and its records, the probes, the curvature
operators and the loss landscapes — then works on it, with the same guarantees: the problem keeps a private deep
copy of the model as given (``problem.model``; ``new_model()`` returns fresh copies of that initial state, so two
runs from it are identical), and analyses never change the model they look at.

The loss
--------
``loss`` is one of

* a name: ``"cross-entropy"`` (alias ``"ce"``; logits ``(N, C)`` against class ids ``(N,)``, or ``(N, T, V)``
  against ``(N, T)`` token ids), ``"mse"`` (squared error summed over outputs, mean over examples),
  ``"bce"`` (logistic loss on one logit per example), or ``"causal-lm"`` (next-token prediction: see below);
* a function of the outputs, ``loss(outputs, targets) -> scalar mean loss`` (e.g. ``torch.nn.CrossEntropyLoss()``
  or ``torch.nn.functional.mse_loss``): the problem computes ``model(x)`` itself. Generalised Gauss-Newton and
  Fisher operators and the landscapes' metrics need this form;
* a function of the model, ``loss(model, batch) -> scalar mean loss`` with ``batch = (x, y)``, for anything else
  (auxiliary terms, several forward passes, models taking keyword inputs).

``loss_form`` says which of the two function forms a callable is. The default ``"auto"`` reads the callable's
signature: its first parameter named ``model``, ``net``, ``network`` or ``module``, or annotated with an
``nn.Module`` type, makes it ``loss(model, batch)``; anything else (including ``nn.Module`` losses) is
``loss(outputs, targets)``. Pass ``loss_form="model"`` or ``"outputs"`` to say it explicitly.

Models whose forward returns something other than a tensor (a Hugging Face ``ModelOutput``, a dict or a tuple)
are wrapped in :class:`OutputAdapter`, which returns the ``logits`` entry (or the first element), so the
output-based losses, metrics and the GGN see a plain tensor; ``problem.model.inner`` is your model.

Data
----
``train`` and ``test`` are ``(x, y)`` tensors (or arrays), a ``TensorDataset`` of two tensors, any map-style
``Dataset`` of ``(x, y)`` pairs, or a ``DataLoader`` yielding ``(x, y)`` batches. Datasets and loaders are read
once into tensors (a loader in its own order, with torch's RNG seeded by ``seed``), refusing more than
``max_bytes`` (default 2 GiB) with a ValueError that says so. Batches during training are drawn by ``wb.train``
(``batch_size``), not by the loader.

Hugging Face causal language models
-----------------------------------
``loss="causal-lm"`` takes token ids: ``train`` is a ``(N, T)`` long tensor (or a ``TensorDataset`` /
``DataLoader`` of them, or dicts with ``input_ids``); each row gives inputs ``tokens[:, :-1]`` and targets
``tokens[:, 1:]``, and the loss is the mean next-token cross-entropy of the model's logits (``accuracy`` is the
next-token accuracy). Any causal LM works — ``transformers``' ``GPT2LMHeadModel`` or a model returning
``(B, T, V)`` logits. Attention implemented by fused kernels (SDPA, flash) has no double backward, so the
problem's copy of a ``transformers`` model is switched to the eager attention implementation when it uses another
one (Hessian-vector products need it); pass ``eager_attention=False`` to keep it.
"""
from __future__ import annotations

import copy
import inspect
import math
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .._validate import check_choice, check_int
from . import losses
from .base import Problem

__all__ = ["custom", "CustomProblem", "OutputAdapter", "LOSSES"]

LOSSES = ("cross-entropy", "ce", "mse", "bce", "causal-lm")
KINDS = ("classification", "regression")
MODEL_PARAM_NAMES = ("model", "net", "network", "module")
DEFAULT_MAX_BYTES = 2 * 1024 ** 3


# -- losses by name ------------------------------------------------------------------------------------------------
def cross_entropy_any(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``(N, C)`` logits against ``(N,)`` ids, or of ``(N, T, V)`` against ``(N, T)``."""
    if out.dim() == 3:
        return losses.sequence_cross_entropy(out, y)
    return losses.cross_entropy(out, y)


def accuracy_any(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if out.dim() == 3:
        return losses.sequence_accuracy(out, y)
    return losses.accuracy(out, y)


_NAMED = {"cross-entropy": (cross_entropy_any, {"accuracy": accuracy_any}),
          "ce": (cross_entropy_any, {"accuracy": accuracy_any}),
          "mse": (losses.mse, {}),
          "bce": (losses.bce_logits, {"accuracy": losses.binary_accuracy}),
          "causal-lm": (losses.sequence_cross_entropy, {"accuracy": losses.sequence_accuracy})}


def _loss_form(loss: Callable) -> str:
    target = loss.forward if isinstance(loss, nn.Module) else loss
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return "outputs"
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not params:
        return "outputs"
    first = params[0]
    ann = first.annotation
    if isinstance(ann, type) and issubclass(ann, nn.Module):
        return "model"
    if isinstance(ann, str) and ann.split(".")[-1] == "Module":          # postponed annotations: "nn.Module"
        return "model"
    return "model" if first.name in MODEL_PARAM_NAMES else "outputs"


# -- models --------------------------------------------------------------------------------------------------------
def _logits_of(out: Any) -> torch.Tensor:
    if torch.is_tensor(out):
        return out
    logits = getattr(out, "logits", None)
    if torch.is_tensor(logits):
        return logits
    if isinstance(out, Mapping) and torch.is_tensor(out.get("logits")):
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return out[0]
    raise ValueError(f"model output must be a tensor, or have a tensor 'logits' entry or first element; got "
                     f"{type(out).__name__}")


class OutputAdapter(nn.Module):
    """Wraps a model whose forward returns a ``ModelOutput`` / dict / tuple so that it returns the logits tensor
    (``logits`` entry, else the first element). ``inner`` is the wrapped model; parameters keep their names under
    the ``inner.`` prefix."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return _logits_of(self.inner(x))


def _use_eager_attention(model: nn.Module) -> str | None:
    """Switch a ``transformers`` model (copy) to eager attention; return the previous implementation if changed."""
    changed = None
    for m in model.modules():
        cfg = getattr(m, "config", None)
        impl = getattr(cfg, "_attn_implementation", None)
        if impl is None or impl == "eager":
            continue
        setter = getattr(m, "set_attn_implementation", None)
        if callable(setter):
            try:
                setter("eager")
                changed = changed or impl
                continue
            except (ValueError, TypeError, AttributeError, NotImplementedError):
                pass
        try:
            cfg._attn_implementation = "eager"
            changed = changed or impl
        except (AttributeError, TypeError):
            pass
    return changed


# -- data ----------------------------------------------------------------------------------------------------------
def _tensor(v, field: str) -> torch.Tensor:
    if torch.is_tensor(v):
        return v.detach()
    if isinstance(v, np.ndarray) or isinstance(v, (list, tuple)):
        try:
            t = torch.as_tensor(np.asarray(v))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{field} must hold numbers; got {type(v).__name__}: {exc}") from exc
        return t.to(torch.float32) if t.dtype == torch.float64 else t
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return torch.as_tensor(v)
    raise ValueError(f"{field} must be a tensor or array; got {type(v).__name__}")


def _parts(item, field: str, tokens: bool) -> tuple:
    """One example or batch -> tuple of tensors: (x, y), or (tokens,) for causal-lm data."""
    if isinstance(item, Mapping):
        if tokens and "input_ids" in item:
            return (_tensor(item["input_ids"], f"{field}['input_ids']"),)
        raise ValueError(f"{field} yields dicts with keys {sorted(item)}; expected (x, y) pairs"
                         + (" or dicts with 'input_ids'" if tokens else ""))
    if torch.is_tensor(item) or isinstance(item, np.ndarray):
        if tokens:
            return (_tensor(item, field),)
        raise ValueError(f"{field} yields single tensors; expected (x, y) pairs (inputs and targets)")
    if isinstance(item, (tuple, list)) and len(item) in ((1, 2) if tokens else (2,)):
        return tuple(_tensor(v, f"{field}[{i}]") for i, v in enumerate(item))
    raise ValueError(f"{field} must yield (x, y) pairs{' or token tensors' if tokens else ''}; got "
                     f"{type(item).__name__}" + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""))


def _nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def _too_big(field: str, nbytes: int, max_bytes: int) -> ValueError:
    return ValueError(f"{field} holds more than max_bytes={max_bytes:,} bytes ({nbytes:,} read so far): the problem "
                      f"keeps its data as tensors in memory. Pass a subset (e.g. torch.utils.data.Subset), or raise "
                      f"max_bytes")


def _gather(items, field, tokens, max_bytes, combine, empty_msg, shape_msg):
    """Collect (label, item) pairs into one tuple of tensors with ``combine`` (cat for batches, stack for examples),
    refusing more than ``max_bytes`` as it goes."""
    parts, total = [], 0
    for label, item in items:
        b = _parts(item, label, tokens)
        if parts and len(b) != len(parts[0]):
            raise ValueError(f"{label} has {len(b)} parts; the first had {len(parts[0])}")
        total += _nbytes(b)
        if total > max_bytes:
            raise _too_big(field, total, max_bytes)
        parts.append(b)
    if not parts:
        raise ValueError(f"{field} {empty_msg}")
    try:
        return tuple(combine([c[j] for c in parts]) for j in range(len(parts[0])))
    except RuntimeError as exc:
        raise ValueError(f"{field} {shape_msg}: {exc}") from exc


def _materialise(data, field: str, tokens: bool, max_bytes: int, seed: int) -> tuple:
    """``data`` -> tuple of tensors with equal first dimension."""
    if isinstance(data, TensorDataset):
        ts = tuple(t.detach() for t in data.tensors)
        if len(ts) not in ((1, 2) if tokens else (2,)):
            raise ValueError(f"{field} must be a TensorDataset of (x, y){' or of token ids' if tokens else ''}; "
                             f"got {len(ts)} tensors")
    elif isinstance(data, DataLoader):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            ts = _gather(((f"{field} batch {i}", batch) for i, batch in enumerate(data)), field, tokens, max_bytes,
                         torch.cat, "DataLoader yielded no batches", "batches have inconsistent shapes and cannot be "
                         "concatenated")
    elif isinstance(data, Dataset) and not isinstance(data, (tuple, list)):
        try:
            n = len(data)
        except TypeError as exc:
            raise ValueError(f"{field} must be a map-style Dataset with a length (or a DataLoader)") from exc
        ts = _gather(((f"{field}[{i}]", data[i]) for i in range(n)), field, tokens, max_bytes, torch.stack,
                     "is an empty dataset", "examples have inconsistent shapes")
    elif tokens and (torch.is_tensor(data) or isinstance(data, np.ndarray)):
        ts = (_tensor(data, field),)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        ts = (_tensor(data[0], f"{field}[0] (inputs)"), _tensor(data[1], f"{field}[1] (targets)"))
    else:
        raise ValueError(f"{field} must be (x, y) tensors, a TensorDataset, a Dataset of (x, y) pairs or a "
                         f"DataLoader{'; or a (N, T) tensor of token ids for causal-lm' if tokens else ''}; got "
                         f"{type(data).__name__}")
    if _nbytes(ts) > max_bytes:
        raise _too_big(field, _nbytes(ts), max_bytes)
    if tokens and len(ts) == 1:
        t = ts[0]
        if t.dim() != 2 or t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"{field} token ids must be an integer tensor of shape (N, T); got "
                             f"{t.dtype} {tuple(t.shape)}")
        if t.shape[1] < 2:
            raise ValueError(f"{field} sequences must have at least 2 tokens (T >= 2) to predict the next one; "
                             f"got T={t.shape[1]}")
        t = t.long()
        ts = (t[:, :-1].contiguous(), t[:, 1:].contiguous())
    x, y = ts
    if x.dim() == 0 or y.dim() == 0:
        raise ValueError(f"{field} inputs and targets need a first (example) dimension; got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{field} inputs and targets must have the same number of examples; got {x.shape[0]} and "
                         f"{y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError(f"{field} has no examples")
    return x, y


# -- the problem ---------------------------------------------------------------------------------------------------
class CustomProblem(Problem):
    """The :class:`Problem` for a ``loss(model, batch)`` function (``loss_form == "model"``): ``loss`` calls it
    directly and ``loss_fn`` is ``None`` (the Gauss-Newton/Fisher operators then ask for an output loss);
    metrics are computed from a separate ``model(x)``. Output losses give a plain :class:`Problem`."""

    model_loss: Callable | None = None

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        if self.model_loss is not None:
            return self.model_loss(model, batch)
        return super().loss(model, batch)

    def evaluate(self, model: nn.Module, batch) -> dict[str, float]:
        if self.model_loss is None:
            return super().evaluate(model, batch)
        x, y = batch
        with torch.no_grad():
            res = {"loss": float(self.model_loss(model, batch))}
            if self.metrics:
                out = model(x)
                for name, fn in self.metrics.items():
                    res[name] = float(fn(out, y))
        return res


def custom(model: nn.Module, loss: str | Callable, train, test=None, metrics: Mapping[str, Callable] | None = None,
           name: str = "custom", kind: str = "classification", seed: int = 0, *, loss_form: str = "auto",
           n_classes: int | None = None, doc: str = "", max_bytes: int = DEFAULT_MAX_BYTES,
           eager_attention: bool = True) -> Problem:
    """Turn any ``nn.Module``, a loss and data into a :class:`Problem` (see the module docstring for the forms).

    Parameters
    ----------
    model: the network, deep-copied (your object is never modified); ``problem.model`` is the copy and
        ``problem.new_model()`` returns further copies of the same initial state.
    loss: ``"cross-entropy"`` | ``"ce"`` | ``"mse"`` | ``"bce"`` | ``"causal-lm"``, ``loss(outputs, targets)`` or
        ``loss(model, batch)``; it must return the *mean* loss over the batch.
    train, test: ``(x, y)`` tensors/arrays, a TensorDataset, a Dataset of pairs or a DataLoader (token ids for
        ``"causal-lm"``). ``test`` is optional.
    metrics: ``{name: fn(outputs, targets) -> scalar}``; default: ``accuracy`` for the classification losses by
        name, none otherwise. ``{}`` turns them off.
    name: the problem's name in records. kind: ``"classification"`` or ``"regression"`` (``"causal-lm"`` is a
        classification over the vocabulary). seed: seeds the read of a shuffling DataLoader and is recorded; runs
        take their own ``seed`` for batch sampling.
    loss_form: ``"auto"`` | ``"outputs"`` | ``"model"`` (how to call a loss function).
    n_classes: recorded in ``describe()``; default: the output width for the classification losses by name.
    max_bytes: cap on the data read into memory (inputs + targets, train and test each).
    eager_attention: switch a ``transformers`` model's copy to eager attention (needed for Hessian products).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    kind = check_choice("kind", kind, KINDS)
    seed = check_int("seed", seed, 0, 2**31 - 1)
    max_bytes = check_int("max_bytes", max_bytes, 1)
    loss_form = check_choice("loss_form", loss_form, ("auto", "outputs", "model"))
    if n_classes is not None:
        n_classes = check_int("n_classes", n_classes, 1)
    if metrics is not None:
        if not isinstance(metrics, Mapping) or not all(isinstance(k, str) and callable(f) for k, f in metrics.items()):
            raise ValueError("metrics must be a dict {name: fn(outputs, targets) -> scalar} or None")
        metrics = dict(metrics)

    # the loss
    loss_fn, model_loss, default_metrics = None, None, {}
    if isinstance(loss, str):
        loss_name = check_choice("loss", loss, LOSSES)
        loss_fn, default_metrics = _NAMED[loss_name]
        form = "outputs"
    elif callable(loss):
        loss_name = getattr(loss, "__name__", type(loss).__name__)
        form = _loss_form(loss) if loss_form == "auto" else loss_form
        if form == "model":
            model_loss = loss
        else:
            loss_fn = loss
    else:
        raise ValueError(f"loss must be one of {list(LOSSES)} or a callable; got {type(loss).__name__}")
    tokens = loss == "causal-lm"

    # the data
    xtr, ytr = _materialise(train, "train", tokens, max_bytes, seed)
    test_ds = None
    if test is not None:
        test_ds = TensorDataset(*_materialise(test, "test", tokens, max_bytes, seed))
    train_ds = TensorDataset(xtr, ytr)

    # the model: a private copy, wrapped when its forward does not return a tensor
    initial = copy.deepcopy(model)
    note = []
    if tokens and eager_attention:
        prev = _use_eager_attention(initial)
        if prev is not None:
            note.append(f"attention switched from {prev!r} to 'eager' (double backward for Hessian products)")
    out = _probe_forward(initial, xtr[:2], loss_name, "outputs" if model_loss is None else "model")
    if out is not None and not torch.is_tensor(out):
        _logits_of(out)                                   # raises a clear error when there are no logits
        initial = OutputAdapter(initial)
        note.append("model output wrapped by OutputAdapter (returns its logits)")
        out = _logits_of(out)
    if n_classes is None and isinstance(loss, str) and loss != "mse" and torch.is_tensor(out) and out.dim() >= 2:
        n_classes = int(out.shape[-1])

    # check the loss once on two examples so that a shape mistake shows here, not in the middle of a run
    _check_loss(initial, loss_fn, model_loss, (xtr[:2], ytr[:2]), loss_name)

    cls = CustomProblem if model_loss is not None else Problem   # plain Problem: landscapes use loss_fn + metrics
    prob = cls(name=name, kind=kind, model_factory=lambda: copy.deepcopy(initial),
                         loss_fn=loss_fn, train=train_ds, test=test_ds,
                         metrics=dict(default_metrics) if metrics is None else metrics,
                         options={"loss": loss_name, "loss_form": form, "model": type(model).__name__},
                         seed=seed, n_classes=n_classes,
                         doc=doc or f"Custom problem: {type(model).__name__} with loss {loss_name!r}"
                         + (f" ({'; '.join(note)})" if note else "") + ".")
    if model_loss is not None:
        prob.model_loss = model_loss
    return prob


def _probe_forward(model: nn.Module, x: torch.Tensor, loss_name: str, form: str):
    """One forward pass of the model copy on two examples (eval mode, no grad, RNG untouched); ``None`` when the
    loss takes the model (its inputs may not be a plain ``model(x)``)."""
    if form == "model":
        return None
    was = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            dev = next((p.device for p in model.parameters()), x.device)
            return model(x.to(dev))
    except Exception as exc:  # noqa: BLE001 - report any failure of the user's model as a ValueError
        raise ValueError(f"model(x) failed on the first training examples (x of shape {tuple(x.shape)}, dtype "
                         f"{x.dtype}): {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was)


def _check_loss(model, loss_fn, model_loss, batch, loss_name):
    was = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            dev = next((p.device for p in model.parameters()), batch[0].device)
            b = (batch[0].to(dev), batch[1].to(dev))
            L = model_loss(model, b) if model_loss is not None else loss_fn(model(b[0]), b[1])
    except ValueError as exc:
        raise ValueError(f"loss {loss_name!r} failed on the first training examples: {exc}") from exc
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"loss {loss_name!r} failed on the first training examples: {type(exc).__name__}: "
                         f"{exc}") from exc
    finally:
        model.train(was)
    if not torch.is_tensor(L) or L.dim() != 0:
        raise ValueError(f"loss {loss_name!r} must return a scalar (mean) loss tensor; got "
                         f"{tuple(L.shape) if torch.is_tensor(L) else type(L).__name__}")
    if not math.isfinite(float(L)):
        raise ValueError(f"loss {loss_name!r} is not finite on the first training examples ({float(L)})")
