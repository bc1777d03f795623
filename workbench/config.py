"""Configuration dicts (parsed TOML, sweep tasks, dashboard state) -> engine objects.

The one place that turns plain data into probes, problems and runs, shared by the command line, sweeps and the
app. Errors are ``ValueError`` naming the entry and the accepted values.
"""
from __future__ import annotations

from typing import Any

__all__ = ["probe_classes", "probes_from_config"]


def probe_classes() -> dict[str, type]:
    """Probe classes by name (``{"Sharpness": Sharpness, ...}``), as a config's ``type = "..."`` names them."""
    from . import probes as P

    return {name: getattr(P, name) for name in getattr(P, "__all__", [])
            if name not in ("Probe", "ProbeContext", "Var") and isinstance(getattr(P, name), type)}


def probes_from_config(entries: list[dict]) -> list:
    """Probes from specs like ``[{"type": "Sharpness", "every": 10, "k": 1}, ...]`` (a config's ``[[probes]]``)."""
    classes = probe_classes()
    out = []
    if not isinstance(entries, list):
        raise ValueError("probes must be an array of tables ([[probes]] with type = \"Norms\" ...)")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "type" not in entry:
            raise ValueError(f"probes[{i}] needs a 'type' (one of {sorted(classes)})")
        kw = dict(entry)
        typ = kw.pop("type")
        if typ not in classes:
            raise ValueError(f"probes[{i}].type={typ!r} is not a known probe; known probes: {sorted(classes)}")
        try:
            out.append(classes[typ](**kw))
        except TypeError as exc:
            raise ValueError(f"probes[{i}] ({typ}): {exc}") from exc
    return out
