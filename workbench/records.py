"""Run records: one ``xarray.Dataset`` per run, saved as netCDF atomically.

Schema (version 1): coordinate ``step`` for per-step variables; each probe has its own coordinate
``<probe name>_step``; eigenvalue index ``eig``. Every data variable carries ``long_name`` and ``description``
attrs. Dataset attrs: ``workbench_schema``, ``config`` (the whole run config as a JSON string), convenience
scalars (problem, optimizer, seed, device, status, ...), ``events`` (JSON list of hot swaps) and ``versions``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["SCHEMA_VERSION", "save", "load", "config", "events"]

SCHEMA_VERSION = 1
_ENGINE = "netcdf4"


def _sanitize_attrs(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, (bool, np.bool_)):
            out[k] = int(v)
        elif isinstance(v, (dict, list, tuple)) and not (
                isinstance(v, (list, tuple)) and v and all(isinstance(e, (int, float)) and not isinstance(e, bool)
                                                          for e in v)):
            out[k] = json.dumps(v, default=str)
        else:
            out[k] = v
    return out


def save(record: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``record`` to ``path`` (netCDF4) atomically: a temp file in the same directory, fsync, rename.

    An interrupted save leaves the previous file (if any) untouched and no partial file at ``path``.
    """
    if not isinstance(record, xr.Dataset):
        raise ValueError(f"record must be an xarray.Dataset (run.record); got {type(record).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path={str(path)!r} is a directory; give a file name such as runs/run.nc")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = record.copy(deep=False)
    ds.attrs = _sanitize_attrs(ds.attrs)
    for name in ds.variables:
        ds[name].attrs = _sanitize_attrs(ds[name].attrs)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine=_ENGINE, format="NETCDF4")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a record written by :func:`save` fully into memory.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not netCDF or not a
    workbench record.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no record at {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"path={str(path)!r} is a directory, not a record file")
    try:
        with xr.open_dataset(path, engine=_ENGINE) as ds:
            ds = ds.load()
    except Exception as exc:  # netCDF4 raises OSError/RuntimeError/ValueError variously
        raise ValueError(f"{str(path)!r} is not a readable netCDF file ({type(exc).__name__}: {exc})") from exc
    if "workbench_schema" not in ds.attrs:
        raise ValueError(f"{str(path)!r} is a netCDF file but not a workbench record "
                         "(it lacks the 'workbench_schema' attribute)")
    if int(ds.attrs["workbench_schema"]) > SCHEMA_VERSION:
        raise ValueError(f"{str(path)!r} uses record schema {ds.attrs['workbench_schema']}, newer than this "
                         f"workbench reads ({SCHEMA_VERSION}); upgrade the workbench")
    return ds


def config(record: xr.Dataset) -> dict[str, Any]:
    """The run configuration stored in a record."""
    return json.loads(record.attrs.get("config", "{}"))


def events(record: xr.Dataset) -> list[dict]:
    """Hot-swap events (optimizer or hyperparameter changes during the run), oldest first."""
    ev = record.attrs.get("events", "[]")
    return json.loads(ev) if isinstance(ev, str) else list(ev)
