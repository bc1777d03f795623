"""`Param`: one typed, bounded setting (an optimizer hyperparameter or a problem option).

The same spec drives validation in the API, the CLI and the app, and is enough to build a widget:
``kind`` is one of ``"float" | "int" | "bool" | "choice" | "floats"`` (a tuple of floats, e.g. betas)
| ``"str"`` (free text such as a directory or file path; ``high`` bounds its length).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from ._validate import check_bool, check_choice, check_float, check_int

__all__ = ["Param", "validate_params"]


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    kind: str = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    doc: str = ""
    low_inclusive: bool = True
    high_inclusive: bool = True
    length: int | None = None          # for kind="floats"
    allow_none: bool = False
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.kind not in ("float", "int", "bool", "choice", "floats", "str"):
            raise ValueError(f"Param.kind must be float|int|bool|choice|floats|str; got {self.kind!r}")

    def validate(self, value: Any, owner: str = "") -> Any:
        """Return the value coerced to this param's type, or raise ValueError naming the field and range."""
        label = f"{owner}.{self.name}" if owner else self.name
        if value is None and self.allow_none:
            return None
        if self.kind == "float":
            return check_float(label, value, self.low, self.high, self.low_inclusive, self.high_inclusive)
        if self.kind == "int":
            return check_int(label, value, None if self.low is None else int(math.ceil(self.low)),
                             None if self.high is None else int(self.high))
        if self.kind == "bool":
            return check_bool(label, value)
        if self.kind == "choice":
            return check_choice(label, value, self.choices)
        if self.kind == "str":
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            limit = 4096 if self.high is None else int(self.high)
            if not isinstance(value, str) or not value or len(value) > limit:
                raise ValueError(f"{label} must be {self.range_text()}; got {value!r} ({type(value).__name__})")
            return value
        # floats: a fixed-length tuple, each element in range
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"{label} must be a sequence of {self.length or 'some'} numbers; got {value!r}")
        if self.length is not None and len(value) != self.length:
            raise ValueError(f"{label} must have exactly {self.length} numbers; got {len(value)}: {value!r}")
        return tuple(check_float(f"{label}[{i}]", v, self.low, self.high, self.low_inclusive, self.high_inclusive)
                     for i, v in enumerate(value))

    def range_text(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return (f"a non-empty text of at most {4096 if self.high is None else int(self.high)} characters"
                    + (" or None" if self.allow_none else ""))
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'[' if self.low_inclusive else '('}{lo}, {hi}{']' if self.high_inclusive else ')'}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["choices"] = list(self.choices)
        d.pop("extra")
        return d


def validate_params(specs: Sequence[Param], values: Mapping[str, Any], owner: str) -> dict:
    """Fill defaults and validate ``values`` against ``specs``; unknown names raise ValueError listing the known."""
    by_name = {p.name: p for p in specs}
    unknown = [k for k in values if k not in by_name]
    if unknown:
        raise ValueError(f"{owner} has no setting {unknown[0]!r}; accepted settings: {sorted(by_name) or 'none'}")
    out = {}
    for p in specs:
        out[p.name] = p.validate(values[p.name], owner) if p.name in values else p.default
    return out
