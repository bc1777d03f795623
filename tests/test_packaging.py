"""Packaging: the console script and packages, postBuild, the README's commands are what CI runs (Binder's pins and
build: test_binder.py)."""
import re
import tomllib

from nbutil import ROOT

from packaging.requirements import Requirement


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_binder_postbuild_installs_the_package_and_serves_the_app():
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post and '"workbench", "app"' in post


def test_console_script_and_packages():
    proj = _pyproject()
    assert proj["project"]["scripts"]["workbench"] == "workbench_cli:main"
    assert set(proj["project"]["optional-dependencies"]) >= {"dev", "bench", "dask"}
    bench = " ".join(proj["project"]["optional-dependencies"]["bench"])
    for anchor in ("pyhessian", "curvlinops-for-pytorch", "hessian-eigenthings", "loss-landscapes"):
        assert anchor in bench
    for pkg in ("workbench", "landscapes", "widgets", "workbench_cli"):
        assert (ROOT / pkg / "__init__.py").exists()


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    setup = [b.strip() for b in blocks if "workbench app" in b or ".ci/run" in b]
    assert any("pip install" in b and "workbench app" in b for b in setup), "README needs the install+app command"
    assert any(b == "bash .ci/run" for b in setup), "README's test command must be `bash .ci/run`"
    assert "python -m pip install" in ci and '"torch==2.13.0" -e ".[dev,dask,hf,slurm]"' in ci
    assert "python -m pytest" in ci


def test_readme_quickstart_runs_as_pasted(tmp_path, monkeypatch):
    """The README's Python quickstart, pasted as it is: finishes (about 10 s here), shows the edge of stability it
    claims (sharpness at 2/lr = 20) and writes a small record."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(block, "README quickstart", "exec"), ns)
    run, rec = ns["run"], ns["rec"]
    assert run.status == "finished"
    last = rec.sharpness.values[-5:]
    assert ((last > 0.9 * 20) & (last < 1.3 * 20)).all(), last      # "~20-23 ... hovers at 2/lr = 20"
    size = (tmp_path / "runs" / "eos.nc").stat().st_size
    assert size < 5 * 2**20, size
    assert ns["surf"].shape == (21, 21) and len(ns["top"].values) == 5
