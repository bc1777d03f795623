"""Command line: ``workbench list problems|optimizers|probes``, ``workbench run CONFIG.toml -o out.nc``,
``workbench sweep CONFIG.toml -o sweep.nc`` (a grid on Dask), ``workbench app [--port 5006] [--address 127.0.0.1]``.

Bad input (unknown names, out-of-range values, malformed config) prints one line on stderr and exits 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import tomllib

import numpy as np

__all__ = ["main", "run_from_config", "probes_from_config"]

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


def _cmd_list(args) -> int:
    import workbench as wb

    if args.what == "problems":
        for n in wb.problems.list():
            print(f"{n:18s} {wb.problems.describe(n)}")
    elif args.what == "optimizers":
        for n in wb.optimizers.list():
            s = wb.optimizers.spec(n)
            print(f"{n:18s} {(s.doc.strip().splitlines() or [''])[0]}")
    else:
        for n, cls in sorted(_probe_classes().items()):
            print(f"{n:18s} {((cls.__doc__ or '').strip().splitlines() or [''])[0]}")
    return 0


def _read_config(name: str) -> dict | int:
    """The TOML config at ``name``, or the exit code of the one-line error printed for a missing/invalid file."""
    path = Path(name)
    if not path.is_file():
        return _fail(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        return _fail(f"{path}: not valid TOML ({exc})")


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
        wb.save(exc.run.record, out)
        return _fail(f"{exc} (partial record saved to {out})")
    except (ValueError, TypeError) as exc:
        return _fail(str(exc))
    wb.save(run.record, out)
    final = run.record.loss.values[-1] if run.record.sizes["step"] else float("nan")
    print(f"{run.status}: {run.record.sizes['step']} steps, final loss {final:.6g}; record saved to {out}")
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
        scheduler = args.scheduler or sw.pop("scheduler", None)
        n_workers = args.workers or sw.pop("n_workers", None)
        if sw:
            raise ValueError(f"[sweep] has unknown key {sorted(sw)[0]!r}; accepted: grid, scheduler, n_workers")
        prob = dict(cfg.get("problem") or {})
        if "name" not in prob:
            raise ValueError("config [problem] needs name = \"...\" (see `workbench list problems`)")
        name, pseed = prob.pop("name"), prob.pop("seed", 0)
        out = args.output or cfg.get("output")
        if not out:
            raise ValueError("no output file: pass -o OUT.nc (or output = \"...\" in the config)")
        rec = wb.sweep(name, grid, problem_options=prob, train=cfg.get("train") or {}, probes=cfg.get("probes", []),
                       problem_seed=pseed, scheduler=scheduler, n_workers=n_workers, progress=not args.quiet)
    except (ValueError, TypeError) as exc:
        return _fail(str(exc))
    wb.save(rec, out)
    statuses = dict(zip(*np.unique(rec.status.values.astype(str), return_counts=True)))
    print(f"{rec.attrs['n_runs']} runs ({', '.join(f'{v} {k}' for k, v in statuses.items())}); record saved to {out}")
    return 0


def _cmd_app(args) -> int:
    from widgets.app import serve

    try:
        serve(port=args.port, address=args.address, show=args.show, results_dir=args.results_dir,
              allow_websocket_origin=args.allow_websocket_origin, prefix=args.prefix)
    except ValueError as exc:
        return _fail(str(exc))
    return 0


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be an integer in [0, 65535]; got {text!r}")
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be an integer in [0, 65535]; got {v}")
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
    ps.add_argument("--workers", type=int, help="local cluster worker processes (default: one per core)")
    ps.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pa = sub.add_parser("app", help="serve the dashboard")
    pa.add_argument("--port", type=_port, default=5006)
    pa.add_argument("--address", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    pa.add_argument("--show", action="store_true", help="open a browser tab")
    pa.add_argument("--results-dir", default="results", help="where the app saves records and figures")
    pa.add_argument("--allow-websocket-origin", action="append", default=None,
                    help="extra allowed websocket origins (e.g. behind a proxy)")
    pa.add_argument("--prefix", default="", help="URL prefix (e.g. behind jupyter-server-proxy)")
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
