"""Input validation helpers: every error names the field and its accepted range."""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

__all__ = ["check_int", "check_float", "check_choice", "check_bool", "resolve_device"]


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None,
                low_inclusive: bool = True, high_inclusive: bool = True, allow_none: bool = False) -> float | None:
    """Return ``value`` as a finite float inside the range, or raise ValueError naming ``name``."""
    rng = _range_text(low, high, low_inclusive, high_inclusive)
    if value is None and allow_none:
        return None
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number {rng}; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {rng}; got {value!r}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(f"{name}={value!r} is out of range: {name} must be {rng}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        raise ValueError(f"{name}={value!r} is out of range: {name} must be {rng}")
    return value


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None,
              allow_none: bool = False) -> int | None:
    """Return ``value`` as an int inside [low, high], or raise ValueError naming ``name``."""
    rng = _range_text(low, high, True, True)
    if value is None and allow_none:
        return None
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and not _is_bool(value) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer {rng}; got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}={value!r} is out of range: {name} must be an integer {rng}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not accepted: {name} must be one of {choices}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not _is_bool(value):
        raise ValueError(f"{name} must be true or false; got {value!r} ({type(value).__name__})")
    return bool(value)


def _range_text(low, high, low_inclusive, high_inclusive) -> str:
    if low is None and high is None:
        return "(any finite value)"
    lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
    return f"in {lo}, {hi}"


def resolve_device(device: Any = "auto"):
    """``"auto"`` picks cuda, then mps, then cpu; anything else must name an available torch device."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, str):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps'; got {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps'; got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} is not available on this machine (no CUDA); use 'auto' or 'cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r} is not available on this machine (no MPS); use 'auto' or 'cpu'")
    return dev
