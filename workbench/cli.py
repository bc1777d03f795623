"""The engine's command line: ``workbench list problems|optimizers|probes``, ``workbench run CONFIG.toml -o out.nc``,
``workbench sweep CONFIG.toml -o DIR [--resume] [--scheduler ADDRESS]`` (a grid on Dask). The ``workbench`` console
script is :func:`workbench_cli.main`, which adds ``workbench app`` (the dashboard): the engine never imports the
UI layers (an import contract in pyproject.toml, checked by the tests).

Bad input (unknown names, out-of-range values, malformed, unreadable or non-UTF-8 config, a busy port, an address
this machine cannot listen on, an unreachable scheduler) prints one line on stderr and exits 2. A finished run whose
output cannot be written (a directory, a read-only filesystem) is saved next to the config file instead (else in a
new temp directory), the line names where, and the exit code is 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import tomllib

import numpy as np

from .config import load_user_problem, probe_classes, probes_from_config, run_from_config

__all__ = ["main", "run_from_config", "probes_from_config", "load_user_problem"]

PROBE_TYPES = ("Norms", "Eval", "Trajectory")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise SystemExit(_fail(f"{self.prog}: {message}"))


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _probe_classes() -> dict[str, Any]:
    return probe_classes()


def _count(n) -> str:
    return "-" if n is None else f"{int(n):,}"


def _cmd_list(args) -> int:
    import workbench as wb

    if args.what == "problems":
        rows = []
        functions = set(wb.problems.list("function"))
        for n in wb.problems.list():
            note = wb.problems.describe(n)
            try:
                info = wb.problems.info(n)
            except Exception as exc:  # a broken registration shows up in its row, not as a traceback
                info, note = {}, f"size unknown: {type(exc).__name__}: {exc}"
            if n in functions:              # a point in the plane: no examples, no data to have
                n_train = n_test = data = "-"
            else:
                n_train, n_test = _count(info.get("n_train")), _count(info.get("n_test") or None)
                data = "present" if info.get("data_available", True) else "MISSING"
                if not info.get("data_available", True):
                    note = info.get("data_note") or note
            rows.append((n, _count(info.get("n_params")), n_train, n_test, data, " ".join(str(note).split())))
        head = ("problem", "params", "train", "test", "data", "description (or how to get missing data)")
        w = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
        for r in [head] + rows:
            print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}  {r[4]:<{w[4]}}  {r[5]}")
    elif args.what == "optimizers":
        for n in wb.optimizers.list():
            s = wb.optimizers.spec(n)
            print(f"{n:18s} {(s.doc.strip().splitlines() or [''])[0]}")
    else:
        for n, cls in sorted(_probe_classes().items()):
            print(f"{n:18s} {((cls.__doc__ or '').strip().splitlines() or [''])[0]}")
    return 0


def _read_config(name: str) -> dict | int:
    """The TOML config at ``name``, or the exit code of the one-line error printed for a missing, unreadable,
    non-UTF-8 or invalid file."""
    path = Path(name)
    if path.is_dir():
        return _fail(f"config file {str(path)!r} is a directory, not a TOML file")
    if not path.is_file():
        return _fail(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return _fail(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                     "save it as UTF-8")
    except OSError as exc:
        return _fail(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return _fail(f"{path}: not valid TOML ({exc})")


def _one_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(f"{text}".split()) or type(exc).__name__


def _save_record(record, out: str, config: str) -> tuple[Path | None, str]:
    """Save ``record`` to ``out``; when that fails (a directory, a read-only filesystem, no permission), to a
    fallback next to the config file, and failing that to a new temp directory: a finished run is never lost.
    Returns (the fallback path or None when ``out`` worked, why ``out`` failed)."""
    import tempfile
    import time

    import workbench as wb

    try:
        wb.save(record, out)
        return None, ""
    except (OSError, ValueError, RuntimeError) as exc:
        why = _one_line(exc)
    stem = Path(out).stem if Path(out).suffix == ".nc" and Path(out).stem else "record"
    name = f"{Path(config).stem}.{stem}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}.nc"
    errors = []
    for folder in (Path(config).resolve().parent, None):
        try:
            folder = Path(tempfile.mkdtemp(prefix="workbench-")) if folder is None else folder
            fallback = folder / name
            wb.save(record, fallback)
            return fallback, why
        except (OSError, ValueError, RuntimeError) as exc:
            errors.append(_one_line(exc))
    raise OSError(f"cannot write {out} ({why}) nor a fallback next to the config or in a temp dir "
                  f"({'; '.join(errors)})")


def _saved(record, out: str, config: str, ok_text: str) -> int:
    """Save and report: 0 with ``ok_text`` when ``out`` was written, else the one-line error naming the fallback
    (exit 2)."""
    try:
        fallback, why = _save_record(record, out, config)
    except OSError as exc:
        return _fail(f"{exc}: the record is lost")
    if fallback is not None:
        return _fail(f"cannot write output {out!r} ({why}); the record was saved to {fallback} instead")
    print(ok_text)
    return 0


def _cmd_run(args) -> int:
    import workbench as wb

    cfg = _read_config(args.config)
    if isinstance(cfg, int):
        return cfg
    out = args.output or (cfg.get("output") if isinstance(cfg.get("output"), str) else None)
    if not out:
        return _fail("no output file: pass -o OUT.nc (or output = \"...\" in the config)")
    try:
        run = run_from_config(cfg, progress=not args.quiet)
    except wb.RunCrashed as exc:
        try:
            fallback, why = _save_record(exc.run.record, out, args.config)
        except OSError as exc2:
            return _fail(f"{_one_line(exc)}; {exc2}: the partial record is lost")
        return _fail(f"{_one_line(exc)} (partial record saved to {fallback or out})")
    except (ValueError, TypeError) as exc:
        return _fail(_one_line(exc))
    final = run.record.loss.values[-1] if run.record.sizes["step"] else float("nan")
    code = _saved(run.record, out, args.config,
                  f"{run.status}: {run.record.sizes['step']} steps, final loss {final:.6g}; record saved to {out}")
    if code:
        return code
    return 0 if run.status in ("finished", "stopped") else 1


def _cmd_sweep(args) -> int:
    import workbench as wb

    cfg = _read_config(args.config)
    if isinstance(cfg, int):
        return cfg
    try:
        unknown = set(cfg) - {"problem", "train", "probes", "sweep", "output"}
        if unknown:
            raise ValueError(f"config has unknown section {sorted(unknown)[0]!r}; "
                             "accepted: problem, train, probes, sweep, output")
        sw = dict(cfg.get("sweep") or {})
        grid = sw.pop("grid", None)
        if not isinstance(grid, dict):
            raise ValueError("[sweep] needs grid = { name = [values, ...], ... }")
        scheduler = args.scheduler if args.scheduler is not None else sw.pop("scheduler", None)
        sw.pop("scheduler", None)
        n_workers = args.workers if args.workers is not None else sw.pop("n_workers", None)
        sw.pop("n_workers", None)
        if sw:
            raise ValueError(f"[sweep] has unknown key {sorted(sw)[0]!r}; accepted: grid, scheduler, n_workers")
        prob = dict(cfg.get("problem") or {})
        if "name" not in prob:
            raise ValueError("config [problem] needs name = \"...\" (see `workbench list problems`)")
        name, pseed = prob.pop("name"), prob.pop("seed", 0)
        out = args.output or (cfg.get("output") if isinstance(cfg.get("output"), str) else None)
        if not out:
            raise ValueError("no output: pass -o DIR (a sweep directory: one record per cell, resumable) or "
                             "-o OUT.nc (the combined record only), or output = \"...\" in the config")
        as_file = Path(out).suffix == ".nc"
        if args.resume and as_file:
            raise ValueError(f"--resume needs a sweep directory (-o DIR), not a file ({out!r})")
        _check_scheduler(scheduler, args.connect_timeout)
        rec = wb.sweep(name, grid, problem_options=prob, train=cfg.get("train") or {}, probes=cfg.get("probes", []),
                       problem_seed=pseed, scheduler=scheduler, n_workers=n_workers, progress=not args.quiet,
                       directory=None if as_file else out, resume=bool(args.resume))
    except (ValueError, TypeError, OSError, TimeoutError) as exc:
        return _fail(_one_line(exc))
    statuses = dict(zip(*np.unique(rec.status.values.astype(str), return_counts=True)))
    summary = f"{rec.attrs['n_runs']} runs ({', '.join(f'{v} {k}' for k, v in statuses.items())})"
    if not as_file:
        print(f"{summary}; {rec.attrs['cells_run']} run now, {rec.attrs['cells_reused']} reused; cell records in "
              f"{Path(out) / 'cells'}, combined record {Path(out) / 'sweep.nc'}")
        return 0
    return _saved(rec, out, args.config, f"{summary}; record saved to {out}")


def _check_scheduler(scheduler, timeout: float) -> None:
    """A Dask address (``tcp://host:port``) must accept a connection within ``timeout`` seconds: a mistyped or
    down scheduler is a one-line error at once, not a wait for Dask's own (long) connect timeout."""
    import socket
    from urllib.parse import urlsplit

    if not isinstance(scheduler, str) or "://" not in scheduler:
        return                          # None, "synchronous", "slurm", or a malformed value wb.sweep rejects
    parts = urlsplit(scheduler)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ValueError(f"--scheduler {scheduler!r}: not an address like tcp://host:8786 ({exc})") from None
    if parts.scheme not in ("tcp", "tls") or not host or port is None:
        return                          # other comm schemes (inproc://, ucx://): left to Dask
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"--scheduler {scheduler!r}: cannot reach a Dask scheduler there within {timeout:g} s "
                         f"({_one_line(exc)})") from None


def _int_arg(flag: str, low: int, high: int):
    """An argparse type: an integer in [low, high], else the one-line error naming ``flag`` and the range."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer in [{low}, {high}]; got {text!r}")
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer in [{low}, {high}]; got {v}")
        return v
    return parse


_port = _int_arg("--port", 0, 65535)
_workers = _int_arg("--workers", 1, 1024)


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v <= 3600:
        raise argparse.ArgumentTypeError(f"--connect-timeout must be a number of seconds in (0, 3600]; got {text!r}")
    return v


def _megabytes(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 1 <= v <= 2**30:
        raise argparse.ArgumentTypeError(f"--max-memory must be a number of MB in [1, 2**30]; got {text!r}")
    return v


def build_parser(extra: dict | None = None) -> argparse.ArgumentParser:
    """The engine's commands (list, run, sweep) plus ``extra``: ``{name: (help, add_arguments(parser), handler(args))}``
    from a layer above (the ``app`` command comes from :mod:`workbench_cli`, which may import the dashboard)."""
    p = _Parser(prog="workbench", description="Optimization-dynamics workbench")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    pl = sub.add_parser("list", help="list problems, optimizers or probes")
    pl.add_argument("what", choices=["problems", "optimizers", "probes"])
    pr = sub.add_parser("run", help="run an experiment from a TOML config and save its record")
    pr.add_argument("config")
    pr.add_argument("-o", "--output", help="netCDF file for the record")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ps = sub.add_parser("sweep", help="run a grid of experiments on Dask and save one combined record")
    ps.add_argument("config")
    ps.add_argument("-o", "--output", help="a sweep directory (one record per cell as it ends, sweep.json, sweep.nc; "
                                           "resumable), or OUT.nc for the combined record only")
    ps.add_argument("--resume", action="store_true", help="run only the cells the sweep directory lacks")
    ps.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster), or 'synchronous'")
    ps.add_argument("--workers", type=_workers, help="local cluster worker processes, 1-1024 (default: one per core)")
    ps.add_argument("--connect-timeout", type=_seconds, default=10.0,
                    help="seconds to wait for the --scheduler address to accept a connection (default 10)")
    ps.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    for name, (help_text, add_arguments, _) in (extra or {}).items():
        add_arguments(sub.add_parser(name, help=help_text))
    return p


def main(argv: list[str] | None = None, extra: dict | None = None) -> int:
    """``workbench list | run | sweep`` (and the ``extra`` commands a layer above adds: ``workbench_cli.main`` adds
    ``app``). Returns the exit code: 0, 1 for a run that diverged or crashed, 2 for any error (one line on stderr)."""
    try:
        args = build_parser(extra).parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    handlers = {"list": _cmd_list, "run": _cmd_run, "sweep": _cmd_sweep,
                **{name: handler for name, (_, _, handler) in (extra or {}).items()}}
    try:
        code = handlers[args.cmd](args)
        sys.stdout.flush()                   # a closed pipe surfaces here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:
        # the reader went away (`workbench list optimizers | head`): not an error of ours, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
