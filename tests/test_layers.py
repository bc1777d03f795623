"""The layer contract (pyproject.toml [tool.importlinter]): workbench_cli > widgets > landscapes > workbench. The
engine imports nothing from landscapes/ or widgets/ (not even inside a function), landscapes/ nothing from widgets/.
Checked with import-linter on the repository, and shown to fail on a copy with a forbidden import added."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbutil import ROOT

PACKAGES = ("workbench", "landscapes", "widgets", "workbench_cli")


def _lint(cwd: Path):
    exe = Path(sys.executable).parent / "lint-imports"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c",
                                           "import sys; from importlinter.cli import lint_imports_command as c; "
                                           "sys.exit(c())"]
    env = {"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd + ["--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "repo"
    dst.mkdir()
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_repository_keeps_the_layers(tmp_path):
    res = _lint(_copy(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "1 kept, 0 broken" in res.stdout


@pytest.mark.parametrize("module,line,needle", [
    ("workbench/records.py", "    import widgets.safe\n", "workbench.records -> widgets.safe"),
    ("workbench/sweep.py", "    from landscapes import surface\n", "workbench.sweep -> landscapes"),
    ("landscapes/plot.py", "    import widgets.views\n", "landscapes.plot -> widgets.views"),
    ("workbench/run.py", "    import workbench_cli\n", "workbench.run -> workbench_cli"),
])
def test_a_forbidden_import_breaks_the_contract(tmp_path, module, line, needle):
    repo = _copy(tmp_path)
    path = repo / module
    # a lazy import inside a function counts as much as one at the top
    path.write_text(path.read_text() + "\n\ndef _layer_violation():\n" + line)
    res = _lint(repo)
    assert res.returncode != 0, res.stdout[-2000:]
    assert "BROKEN" in res.stdout and needle in res.stdout, res.stdout[-3000:]
