"""Configuration dicts (parsed TOML, sweep tasks, dashboard state) -> engine objects.

The one place that turns plain data into probes, problems and runs, shared by the command line, sweeps and the
app. Errors are ``ValueError`` naming the entry and the accepted values.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

__all__ = ["probe_classes", "probes_from_config", "run_from_config", "load_user_problem"]


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
