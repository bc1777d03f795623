"""The ``workbench`` console script: the engine's commands (``list``, ``run``, ``sweep`` from :mod:`workbench.cli`)
plus ``workbench app``, which serves the dashboard. This package sits above every layer (engine ``workbench``,
``landscapes``, ``widgets``), so it is the one place a command may import the UI; the layers themselves never
import upward (the import-linter contract in pyproject.toml).

    workbench app [--port 5006] [--address 127.0.0.1] [--workers 8] [--problem path/to/file.py:make_problem ...]
"""
from __future__ import annotations

import argparse

from workbench import cli as _engine
from workbench.config import load_user_problem

__all__ = ["main", "add_app_arguments", "cmd_app"]


def add_app_arguments(pa: argparse.ArgumentParser) -> None:
    pa.add_argument("--port", type=_engine._port, default=5006)
    pa.add_argument("--address", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    pa.add_argument("--show", action="store_true", help="open a browser tab")
    pa.add_argument("--results-dir", default="results", help="where the app saves records and figures")
    pa.add_argument("--allow-websocket-origin", action="append", default=None,
                    help="extra allowed websocket origins (e.g. behind a proxy)")
    pa.add_argument("--prefix", default="", help="URL prefix (e.g. behind jupyter-server-proxy)")
    pa.add_argument("--max-memory", type=_engine._megabytes, default=None, metavar="MB",
                    help="largest estimated memory of one run (model, optimizer state, history) the app starts; "
                         "default: $WORKBENCH_APP_MAX_MEMORY_MB or 2048")
    pa.add_argument("--workers", type=_engine._int_arg("--workers", 1, 256), default=None, metavar="N",
                    help="runs that train at once, each in its own worker process (more wait, queued); "
                         "default: $WORKBENCH_APP_WORKERS or 8")
    pa.add_argument("--problem", action="append", default=None, metavar="FILE.py:FUNCTION",
                    help="offer your own problem: FUNCTION() in FILE.py returns a wb.Problem (e.g. from "
                         "wb.problems.custom); repeatable; the first is selected")


def cmd_app(args) -> int:
    """Serve the dashboard; bad input (a user problem that fails, a busy port, a bad address) is one line, exit 2."""
    problems = []
    for spec in args.problem or ():
        try:
            prob = load_user_problem(spec)
        except ValueError as exc:
            return _engine._fail(str(exc))
        prob._user_spec = spec          # a worker process of the app loads it again from this
        problems.append(prob)
    from widgets.app import serve

    try:
        serve(port=args.port, address=args.address, show=args.show, results_dir=args.results_dir,
              allow_websocket_origin=args.allow_websocket_origin, prefix=args.prefix, problems=problems,
              max_memory_mb=args.max_memory, workers=args.workers)
    except (ValueError, TypeError, OSError) as exc:
        return _engine._fail(_engine._one_line(exc))
    return 0


COMMANDS = {"app": ("serve the dashboard", add_app_arguments, cmd_app)}


def main(argv: list[str] | None = None) -> int:
    """``workbench list | run | sweep | app``; the exit code (2 and one line on stderr for any bad input)."""
    return _engine.main(argv, extra=COMMANDS)
