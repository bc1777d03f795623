"""Safe file names for the app: everything it writes or reads stays inside its results directory."""
from __future__ import annotations

import re
from pathlib import Path

__all__ = ["safe_path", "list_records", "NAME_RULE"]

NAME_RULE = "letters, digits, '.', '_' or '-', at most 100 characters, not starting with '.'"
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")


def safe_path(results_dir: str | Path, name: str, suffix: str) -> Path:
    """``results_dir/name+suffix`` after checking ``name`` is a plain file name (no separators, no '..', no
    absolute path) and the resolved path lies inside ``results_dir``. Raises ValueError naming the field."""
    if not isinstance(name, str):
        raise ValueError(f"file name must be text; got {type(name).__name__}")
    name = name.strip()
    if name.endswith(suffix):
        name = name[: -len(suffix)]
    if not name or not _NAME.match(name) or ".." in name:
        raise ValueError(f"file name {name!r} is not allowed: use {NAME_RULE} (no folders, no '..')")
    root = Path(results_dir).resolve()
    path = (root / f"{name}{suffix}").resolve()      # follows a symlink: one pointing out of the folder is refused
    if path.parent != root:
        raise ValueError(f"file name {name!r} is not allowed: files stay inside the results directory "
                         "(it is a link to a file elsewhere)")
    return path


def list_records(results_dir: str | Path) -> list[str]:
    """Names (without .nc) of the records saved in ``results_dir``, newest first: plain names only, and only files
    that really lie in the folder (a symlink to a file elsewhere is not listed)."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    real = root.resolve()
    files = [p for p in root.glob("*.nc") if p.is_file() and _NAME.match(p.stem) and p.resolve().parent == real]
    return [p.stem for p in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)]
