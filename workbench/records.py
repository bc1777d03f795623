"""Run records: one ``xarray.Dataset`` per run, saved as netCDF atomically.

Schema (version 1): coordinate ``step`` for per-step variables; each probe has its own coordinate
``<probe name>_step``; eigenvalue index ``eig``. Every data variable carries ``long_name`` and ``description``
attrs. Dataset attrs: ``workbench_schema``, ``config`` (the whole run config as a JSON string), convenience
scalars (problem, optimizer, seed, device, status, ...), ``events`` (JSON list of hot swaps) and ``versions``.

On disk (integrity): :func:`save` writes a netCDF4/HDF5 file whose non-scalar variables are chunked with HDF5's
Fletcher-32 checksum filter (zlib+shuffle where a sample shows that compression pays), then appends a 56-byte
trailer ``magic | length | SHA-256 of the first `length` bytes | magic`` (HDF5 ignores bytes past its end of file,
so any netCDF reader still opens the file). :func:`load` checks the trailer before the C library ever sees the file:
a record changed by a single byte is a ``ValueError`` naming the file, never different numbers and never a hang.
Files without a trailer (records saved by older versions, or files from elsewhere) are read in a child process
that is killed after a timeout, so a corrupt one cannot hang or leak into the caller.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import pickle
import re
import secrets
import shutil
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["SCHEMA_VERSION", "save", "load", "config", "events", "verify"]

SCHEMA_VERSION = 1
_ENGINE = "netcdf4"

# -- on-disk integrity ------------------------------------------------------------------------------------------
_MAGIC = b"WBREC\x01\xfe\x00"                       # 8 bytes, not valid UTF-8, unlikely at a file's end
_TRAILER = struct.Struct("<8sQ32s8s")               # magic, covered length, sha256, magic -> 56 bytes
_INTEGRITY_ATTR = "workbench_integrity"              # written into the file, removed again by load()
_INTEGRITY = "sha256-trailer-v1"
_CHUNK_TARGET = 4 * 2**20                           # bytes per HDF5 chunk (upper bound)
_HASH_BLOCK = 4 * 2**20
_COMPRESSIONS = ("auto", "zlib", "none")
_HOSTTAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_LEGACY_TMP_AGE = 600.0                              # s: pid-less temp files (older saves) older than this are stale


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


# -- save -------------------------------------------------------------------------------------------------------
def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk shape of at most ~_CHUNK_TARGET bytes: whole trailing dims, as many leading rows as fit."""
    chunk = [max(1, s) for s in shape]
    for ax in range(len(shape)):
        rest = int(np.prod(chunk[ax + 1:], dtype=np.int64)) * itemsize
        chunk[ax] = max(1, min(max(1, shape[ax]), _CHUNK_TARGET // max(rest, 1)))
        if int(np.prod(chunk, dtype=np.int64)) * itemsize <= _CHUNK_TARGET:
            break
    return tuple(chunk)


def _compresses(values: np.ndarray) -> bool:
    """True when zlib (level 1, byte-shuffled) shrinks a sample of ``values`` to at most half: only then is it
    cheaper than writing raw bytes (zlib at level 1 runs at ~50 MB/s on incompressible floats)."""
    flat = values.reshape(-1)
    n = max(1, min(flat.size, 2**18 // max(values.itemsize, 1)))   # ~256 KiB sample from the start and middle
    sample = np.concatenate([flat[:n // 2], flat[flat.size // 2: flat.size // 2 + n - n // 2]])
    raw = np.ascontiguousarray(sample).view(np.uint8).reshape(-1, values.itemsize).T.tobytes()   # shuffle
    import zlib
    return len(zlib.compress(raw, 1)) <= 0.5 * len(raw)


def _encoding(ds: xr.Dataset, compression: str) -> dict[str, dict]:
    enc = {}
    for name, var in ds.variables.items():
        e = {k: v for k, v in var.encoding.items() if k in ("units", "calendar", "_FillValue")}
        if var.ndim > 0:
            itemsize = var.dtype.itemsize if var.dtype.kind not in "OUS" else 16
            e.update(fletcher32=True, contiguous=False, chunksizes=_chunks(var.shape, itemsize))
            if var.dtype.kind in "biuf" and var.size * var.dtype.itemsize >= 4096 and compression != "none":
                values = np.asarray(var.values)
                if compression == "zlib" or _compresses(values):
                    e.update(zlib=True, complevel=1, shuffle=True)
        enc[name] = e
    return enc


def _tmp_pattern(name: str) -> re.Pattern:
    return re.compile(r"^\." + re.escape(name) + r"\.wbtmp-(\d+)-([0-9a-f]{8})-[0-9a-f]+\.tmp$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _remove_stale_temps(path: Path) -> list[Path]:
    """Delete temp files of earlier saves to ``path`` whose writer is gone (killed mid-save): ours carry the
    writer's pid and host; pid-less ones (older workbench versions) go once untouched for 10 minutes."""
    removed = []
    pat = _tmp_pattern(path.name)
    legacy = re.compile(r"^\." + re.escape(path.name) + r"\.[A-Za-z0-9_]{8}\.tmp$")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = pat.match(entry.name)
        stale = False
        if m:
            stale = m.group(2) == _HOSTTAG and not _pid_alive(int(m.group(1)))
        elif legacy.match(entry.name):
            try:
                stale = entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > _LEGACY_TMP_AGE
            except OSError:
                stale = False
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def _append_trailer(tmp: Path) -> None:
    h = hashlib.sha256()
    with open(tmp, "rb+") as fh:
        buf = bytearray(_HASH_BLOCK)
        view = memoryview(buf)
        n = 0
        while True:
            k = fh.readinto(buf)
            if not k:
                break
            h.update(view[:k])
            n += k
        fh.seek(n)
        fh.write(_TRAILER.pack(_MAGIC, n, h.digest(), _MAGIC))
        fh.flush()
        os.fsync(fh.fileno())



def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (best effort: some filesystems refuse to fsync a directory)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _open_record(path: Path) -> int:
    """A read-only descriptor on ``path`` that never blocks (a FIFO does not wait for a writer)."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no record at {str(path)!r}") from None
    except IsADirectoryError:
        raise ValueError(f"path={str(path)!r} is a directory, not a record file") from None

def save(record: xr.Dataset, path: str | os.PathLike, *, compression: str = "auto") -> Path:
    """Write ``record`` to ``path`` (netCDF4) atomically: a temp file in the same directory, fsync, rename.

    Every non-scalar variable is chunked with a Fletcher-32 checksum per chunk, and the file ends with a SHA-256
    trailer that :func:`load` verifies. ``compression``: ``"auto"`` (zlib level 1 + shuffle on numeric variables
    where a sample compresses to half or less, i.e. where it is cheaper than raw), ``"zlib"`` (all numeric
    variables of 4 KiB or more) or ``"none"``.

    An interrupted save leaves the previous file (if any) untouched and no partial file at ``path``; a failed
    save (e.g. a full disk) raises ``OSError`` naming ``path`` and removes its temp file. Temp files that killed
    saves left behind are removed by the next save to the same place (only those whose writing process is gone).
    """
    if not isinstance(record, xr.Dataset):
        raise ValueError(f"record must be an xarray.Dataset (run.record); got {type(record).__name__}")
    if compression not in _COMPRESSIONS:
        raise ValueError(f"compression must be one of {_COMPRESSIONS}; got {compression!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path={str(path)!r} is a directory; give a file name such as runs/run.nc")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    ds = record.copy(deep=False)
    ds.attrs = _sanitize_attrs(ds.attrs)
    ds.attrs[_INTEGRITY_ATTR] = _INTEGRITY
    for name in ds.variables:
        ds[name].attrs = _sanitize_attrs(ds[name].attrs)
    encoding = _encoding(ds, compression)
    tmp = path.parent / f".{path.name}.wbtmp-{os.getpid()}-{_HOSTTAG}-{secrets.token_hex(6)}.tmp"
    try:
        ds.to_netcdf(tmp, engine=_ENGINE, format="NETCDF4", encoding=encoding)
        _append_trailer(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        free = None
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            pass
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        except OSError:
            pass
        if not isinstance(exc, Exception) or (isinstance(exc, (ValueError, TypeError))
                                              and not isinstance(exc, OSError)):
            raise       # KeyboardInterrupt & co, and bad input (unserialisable attrs, ...) as they are
        code = exc.errno if isinstance(exc, OSError) and exc.errno else (
            errno.ENOSPC if free is not None and free < 2**20 else errno.EIO)
        where = "" if free is None else f"; {free} bytes free on that device"
        err = OSError(code, f"could not save the record to {str(path)!r} ({type(exc).__name__}: {exc}{where}); "
                            "the previous file there, if any, is unchanged and the record is still in memory")
        err.filename = str(path)
        raise err from exc
    fsync_dir(path.parent)        # make the rename durable
    return path


# -- load -------------------------------------------------------------------------------------------------------
def _pread(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)       # Windows
    return os.read(fd, n)


def _check_trailer(fd: int, size: int, path: Path) -> bool:
    """True when the file ends with an intact trailer whose SHA-256 matches; False when it has none at all;
    ``ValueError`` when it has a damaged one or the bytes do not match."""
    if size < _TRAILER.size:
        return False
    tail = _pread(fd, _TRAILER.size, size - _TRAILER.size)
    if len(tail) != _TRAILER.size:
        raise ValueError(f"{str(path)!r} changed while it was read; try again")
    m1, n, digest, m2 = _TRAILER.unpack(tail)
    if m1 != _MAGIC and m2 != _MAGIC:
        return False
    if m1 != _MAGIC or m2 != _MAGIC or n != size - _TRAILER.size:
        raise ValueError(f"{str(path)!r} is a damaged workbench record: its checksum trailer is corrupt or the file "
                         "was truncated or extended after saving")
    h = hashlib.sha256()
    off = 0
    while off < n:
        block = _pread(fd, min(_HASH_BLOCK, n - off), off)
        if not block:
            raise ValueError(f"{str(path)!r} changed while it was read; try again")
        h.update(block)
        off += len(block)
    if h.digest() != digest:
        raise ValueError(f"{str(path)!r} is a damaged workbench record: its SHA-256 checksum does not match its "
                         "contents (the file was corrupted or modified after saving); restore it from a copy")
    return True


_CHILD = r"""
import pickle, sys
out = sys.stdout.buffer
try:
    import xarray as xr
    with xr.open_dataset(sys.argv[1], engine=sys.argv[2]) as ds:
        ds = ds.load()
    payload = ("ok", ds)
except BaseException as exc:
    payload = ("error", f"{type(exc).__name__}: {exc}")
sys.stdout.flush()
pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
out.flush()
"""


def _load_isolated(path: Path, timeout: float) -> xr.Dataset:
    """Read an unverified file in a child process (killed after ``timeout`` s): a corrupt file can make the
    netCDF/HDF5 reader spin forever, crash or leak descriptors, none of which must reach the caller."""
    cmd = [sys.executable] + (["-P"] if sys.version_info >= (3, 11) else []) + ["-c", _CHILD, str(path), _ENGINE]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=os.path.dirname(os.path.abspath(path)) or None)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ValueError(f"{str(path)!r} is not a readable record: reading it did not finish within {timeout:.3g} s "
                         "(a corrupt file can make the netCDF reader loop forever; pass load(..., timeout=...) "
                         "to allow longer for a very large file on a slow disk)") from None
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    try:
        status, payload = pickle.loads(out)
    except Exception:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise ValueError(f"{str(path)!r} is not a readable netCDF file (the reader exited with status "
                         f"{proc.returncode}{': ' + ' | '.join(tail) if tail else ''})") from None
    if status != "ok":
        raise ValueError(f"{str(path)!r} is not a readable netCDF file ({payload})")
    return payload


_HDF5_SIG = b"\x89HDF\r\n\x1a\n"


def _looks_like_netcdf(fd: int, size: int) -> bool:
    """netCDF classic/64-bit/CDF5 magic at the start, or the HDF5 signature at 0 or 512 * 2**k (after a user
    block), as the libraries themselves look for it."""
    head = _pread(fd, 8, 0)
    if head[:4] in (b"CDF\x01", b"CDF\x02", b"CDF\x05") or head == _HDF5_SIG:
        return True
    off = 512
    while off + 8 <= size:
        if _pread(fd, 8, off) == _HDF5_SIG:
            return True
        off *= 2
    return False


def _truncated_hdf5(fd: int, size: int) -> bool:
    """True when an HDF5 file (superblock version 2/3 at offset 0, as netCDF-4 writes it) says it ends past the
    end of the file: a truncated copy, refused without starting a reader."""
    sb = _pread(fd, 48, 0)
    if len(sb) < 48 or sb[:8] != _HDF5_SIG or sb[8] not in (2, 3) or sb[9] != 8:
        return False
    base, _ext, eof = struct.unpack("<QQQ", sb[12:36])
    return base == 0 and eof > size


def _default_timeout(size: int) -> float:
    return 6.0 + size / 25e6


def load(path: str | os.PathLike, *, timeout: float | None = None) -> xr.Dataset:
    """Read a record written by :func:`save` fully into memory.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for anything else that is
    not an intact workbench record: a directory, FIFO or other non-regular file, a file that is not netCDF, a
    record whose checksum does not match (corrupted after saving), or one whose reading does not finish.
    Records with the SHA-256 trailer of :func:`save` are verified first and then read here; other files (older
    records, files from elsewhere) are read in a child process that is killed after ``timeout`` seconds
    (default 6 s + 1 s per 25 MB).
    """
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds or None; got {timeout!r}")
    path = Path(path)
    fd = _open_record(path)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"path={str(path)!r} is a directory, not a record file")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"path={str(path)!r} is not a regular file (a FIFO, socket or device); "
                             "records are regular .nc files")
        verified = _check_trailer(fd, st.st_size, path)
        if verified:
            # read the very file that was verified, even if `path` is replaced meanwhile
            proc_fd = f"/proc/self/fd/{fd}"
            src = proc_fd if os.path.exists(proc_fd) else path
            try:
                with xr.open_dataset(src, engine=_ENGINE) as ds:
                    ds = ds.load()
            except Exception as exc:
                raise ValueError(f"{str(path)!r} is not a readable netCDF file ({type(exc).__name__}: {exc})") \
                    from exc
            for v in ds.variables.values():
                if "source" in v.encoding:
                    v.encoding["source"] = str(path)
            ds.encoding["source"] = str(path)
        elif not _looks_like_netcdf(fd, st.st_size):
            raise ValueError(f"{str(path)!r} is not a netCDF file (no netCDF or HDF5 signature)"
                             + (" (it is empty)" if st.st_size == 0 else ""))
        elif _truncated_hdf5(fd, st.st_size):
            raise ValueError(f"{str(path)!r} is truncated: its HDF5 header says it ends past its last byte "
                             f"({st.st_size} bytes); restore it from a copy")
        else:
            ds = _load_isolated(path, _default_timeout(st.st_size) if timeout is None else float(timeout))
    finally:
        os.close(fd)
    integrity = ds.attrs.pop(_INTEGRITY_ATTR, None)
    if integrity is not None and not verified:
        raise ValueError(f"{str(path)!r} is a damaged workbench record: it was saved with a checksum trailer that "
                         "is now missing (truncated or modified after saving)")
    if "workbench_schema" not in ds.attrs:
        raise ValueError(f"{str(path)!r} is a netCDF file but not a workbench record "
                         "(it lacks the 'workbench_schema' attribute)")
    try:
        schema = int(np.asarray(ds.attrs["workbench_schema"]).reshape(-1)[0])
    except Exception:
        raise ValueError(f"{str(path)!r} has an unreadable 'workbench_schema' attribute "
                         f"({ds.attrs['workbench_schema']!r}); expected an integer") from None
    if schema > SCHEMA_VERSION:
        raise ValueError(f"{str(path)!r} uses record schema {ds.attrs['workbench_schema']}, newer than this "
                         f"workbench reads ({SCHEMA_VERSION}); upgrade the workbench")
    return ds


def verify(path: str | os.PathLike) -> bool:
    """Check a saved record's SHA-256 trailer without reading it as netCDF. True: intact; False: the file has no
    trailer (saved by an older version, or not by :func:`save`); ``ValueError``: damaged; ``FileNotFoundError``."""
    path = Path(path)
    fd = _open_record(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"path={str(path)!r} is not a regular file")
        return _check_trailer(fd, st.st_size, path)
    finally:
        os.close(fd)


def config(record: xr.Dataset) -> dict[str, Any]:
    """The run configuration stored in a record."""
    return json.loads(record.attrs.get("config", "{}"))


def events(record: xr.Dataset) -> list[dict]:
    """Hot-swap events (optimizer or hyperparameter changes during the run), oldest first."""
    ev = record.attrs.get("events", "[]")
    return json.loads(ev) if isinstance(ev, str) else list(ev)
