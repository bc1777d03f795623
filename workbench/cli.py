"""Command line: ``workbench list problems|optimizers|probes``, ``workbench run CONFIG.toml -o out.nc``,
``workbench sweep CONFIG.toml -o sweep.nc`` (a grid on Dask), ``workbench app [--port 5006] [--address 127.0.0.1]
[--problem path/to/file.py:make_problem ...]``.

Bad input (unknown names, out-of-range values, malformed, unreadable or non-UTF-8 config, a busy port, an address
this machine cannot listen on, an unreachable scheduler) prints one line on stderr and exits 2. A finished run whose
output cannot be written (a directory, a read-only filesystem) is saved next to the config file instead (else in a
new temp directory), the line names where, and the exit code is 2.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import tomllib

import numpy as np

__all__ = ["main", "run_from_config", "probes_from_config", "load_user_problem"]

PROBE_TYPES = ("Norms", "Eval", "Trajectory")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise SystemExit(_fail(f"{self.prog}: {message}"))


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _probe_classes() -> dict[str, Any]:
    import workbench.probes as P

    return {name: getattr(P, name) for name in getattr(P, "__all__", []) if name not in ("Probe", "ProbeContext", "Var")
            and isinstance(getattr(P, name), type)}


def probes_from_config(entries: list[dict]) -> list:
    classes = _probe_classes()
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


def run_from_config(cfg: dict, progress: bool = True):
    """Run the experiment described by a parsed TOML config; returns the Run.

    Layout::

        [problem]            # name + problem options
        name = "digits-mlp"
        seed = 0
        loss = "mse"
        [train]              # wb.train arguments + optimizer hyperparameters
        optimizer = "gd"
        lr = 0.05
        steps = 500
        [[probes]]
        type = "Eval"
        every = 50
    """
    import workbench as wb

    if not isinstance(cfg, dict):
        raise ValueError("config must be a TOML table")
    unknown = set(cfg) - {"problem", "train", "probes", "output"}
    if unknown:
        raise ValueError(f"config has unknown section {sorted(unknown)[0]!r}; accepted: problem, train, probes, output")
    prob_cfg = dict(cfg.get("problem") or {})
    if "name" not in prob_cfg:
        raise ValueError("config [problem] needs name = \"...\" (see `workbench list problems`)")
    name = prob_cfg.pop("name")
    pseed = prob_cfg.pop("seed", 0)
    problem = wb.problems.make(name, seed=pseed, **prob_cfg)
    train_cfg = dict(cfg.get("train") or {})
    for forbidden in ("problem", "probes", "callback", "background"):
        if forbidden in train_cfg:
            raise ValueError(f"[train].{forbidden} cannot be set in a config file")
    probes = probes_from_config(cfg.get("probes", []))
    return wb.train(problem, probes=probes, progress=progress, **train_cfg)


def load_user_problem(spec: str):
    """The ``wb.Problem`` that ``spec = "path/to/file.py:make_problem"`` names: the file is run as a module (its
    folder importable while it runs, for its own helper modules) and the function is called with no arguments.
    Without ``:function`` the function is ``make_problem``. Any failure (no such file, the file or the function
    raising, no such function, a result that is not a Problem) is a ValueError with a one-line message."""
    import workbench as wb

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"--problem must be 'path/to/file.py:function'; got {spec!r}")
    path_text, _, func = spec.rpartition(":")
    if not path_text or not func.isidentifier():      # no ':function' (or a Windows drive colon): the default name
        path_text, func = spec, "make_problem"
    where = f"--problem {spec}"
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ValueError(f"{where}: file {str(path)!r} does not exist")

    def one_line(exc: BaseException) -> str:
        return " ".join(f"{type(exc).__name__}: {exc}".split())

    path = path.resolve()
    modname = f"workbench_user_{path.stem if path.stem.isidentifier() else 'problem'}_" \
              f"{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    mod_spec = importlib.util.spec_from_file_location(modname, path)
    if mod_spec is None or mod_spec.loader is None:
        raise ValueError(f"{where}: {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[modname] = module          # dataclasses and pickling look the module up while it runs
    sys.path.insert(0, str(path.parent))
    try:
        mod_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(modname, None)
        raise ValueError(f"{where}: running {path.name} failed: {one_line(exc)}") from exc
    finally:
        if sys.path and sys.path[0] == str(path.parent):
            del sys.path[0]
    fn = getattr(module, func, None)
    if fn is None:
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == modname)
        raise ValueError(f"{where}: {path.name} defines no function {func!r} (its functions: {defined or 'none'})")
    if not callable(fn):
        raise ValueError(f"{where}: {func!r} in {path.name} is a {type(fn).__name__}, not a function")
    try:
        prob = fn()
    except (Exception, SystemExit) as exc:
        raise ValueError(f"{where}: {func}() failed: {one_line(exc)}") from exc
    if not isinstance(prob, wb.Problem):
        raise ValueError(f"{where}: {func}() returned {type(prob).__name__}, not a workbench Problem "
                         "(build one with wb.problems.custom(model, loss, train, test) or wb.problems.make(...))")
    return prob


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
            raise ValueError("no output file: pass -o OUT.nc (or output = \"...\" in the config)")
        _check_scheduler(scheduler, args.connect_timeout)
        rec = wb.sweep(name, grid, problem_options=prob, train=cfg.get("train") or {}, probes=cfg.get("probes", []),
                       problem_seed=pseed, scheduler=scheduler, n_workers=n_workers, progress=not args.quiet)
    except (ValueError, TypeError, OSError, TimeoutError) as exc:
        return _fail(_one_line(exc))
    statuses = dict(zip(*np.unique(rec.status.values.astype(str), return_counts=True)))
    return _saved(rec, out, args.config, f"{rec.attrs['n_runs']} runs "
                  f"({', '.join(f'{v} {k}' for k, v in statuses.items())}); record saved to {out}")


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


def _cmd_app(args) -> int:
    problems = []
    for spec in args.problem or ():
        try:
            problems.append(load_user_problem(spec))
        except ValueError as exc:
            return _fail(str(exc))
    from widgets.app import serve

    try:
        serve(port=args.port, address=args.address, show=args.show, results_dir=args.results_dir,
              allow_websocket_origin=args.allow_websocket_origin, prefix=args.prefix, problems=problems,
              max_memory_mb=args.max_memory)
    except (ValueError, TypeError, OSError) as exc:
        return _fail(_one_line(exc))
    return 0


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be an integer in [0, 65535]; got {text!r}")
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be an integer in [0, 65535]; got {v}")
    return v


def _workers(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers must be an integer in [1, 1024]; got {text!r}")
    if not 1 <= v <= 1024:
        raise argparse.ArgumentTypeError(f"--workers must be an integer in [1, 1024]; got {v}")
    return v


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


def build_parser() -> argparse.ArgumentParser:
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
    ps.add_argument("-o", "--output", help="netCDF file for the combined record")
    ps.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster), or 'synchronous'")
    ps.add_argument("--workers", type=_workers, help="local cluster worker processes, 1-1024 (default: one per core)")
    ps.add_argument("--connect-timeout", type=_seconds, default=10.0,
                    help="seconds to wait for the --scheduler address to accept a connection (default 10)")
    ps.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pa = sub.add_parser("app", help="serve the dashboard")
    pa.add_argument("--port", type=_port, default=5006)
    pa.add_argument("--address", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    pa.add_argument("--show", action="store_true", help="open a browser tab")
    pa.add_argument("--results-dir", default="results", help="where the app saves records and figures")
    pa.add_argument("--allow-websocket-origin", action="append", default=None,
                    help="extra allowed websocket origins (e.g. behind a proxy)")
    pa.add_argument("--prefix", default="", help="URL prefix (e.g. behind jupyter-server-proxy)")
    pa.add_argument("--max-memory", type=_megabytes, default=None, metavar="MB",
                    help="largest estimated memory of one run (model, optimizer state, history) the app starts; "
                         "default: $WORKBENCH_APP_MAX_MEMORY_MB or 2048")
    pa.add_argument("--problem", action="append", default=None, metavar="FILE.py:FUNCTION",
                    help="offer your own problem: FUNCTION() in FILE.py returns a wb.Problem (e.g. from "
                         "wb.problems.custom); repeatable; the first is selected")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    handlers = {"list": _cmd_list, "run": _cmd_run, "sweep": _cmd_sweep, "app": _cmd_app}
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
