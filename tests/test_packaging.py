"""Packaging: binder/ names the same dependencies as pyproject.toml; the README's commands are what CI runs."""
import re
import tomllib

from nbutil import ROOT

from packaging.requirements import Requirement


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_binder_requirements_match_pyproject():
    deps = {_norm(Requirement(d).name): str(Requirement(d).specifier) for d in _pyproject()["project"]["dependencies"]}
    binder = {}
    for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        r = Requirement(line)
        binder[_norm(r.name)] = str(r.specifier)
    extra = set(binder) - set(deps)
    assert extra == {"jupyter-server-proxy"}, f"binder-only requirements: {extra}"
    assert {k: binder[k] for k in deps} == deps


def test_binder_postbuild_installs_the_package_and_serves_the_app():
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post and '"workbench", "app"' in post


def test_console_script_and_packages():
    proj = _pyproject()
    assert proj["project"]["scripts"]["workbench"] == "workbench.cli:main"
    assert set(proj["project"]["optional-dependencies"]) >= {"dev", "bench", "dask"}
    bench = " ".join(proj["project"]["optional-dependencies"]["bench"])
    for anchor in ("pyhessian", "curvlinops-for-pytorch", "hessian-eigenthings", "loss-landscapes"):
        assert anchor in bench
    for pkg in ("workbench", "landscapes", "widgets"):
        assert (ROOT / pkg / "__init__.py").exists()


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    setup = [b.strip() for b in blocks if "workbench app" in b or ".ci/run" in b]
    assert any("pip install" in b and "workbench app" in b for b in setup), "README needs the install+app command"
    assert any(b == "bash .ci/run" for b in setup), "README's test command must be `bash .ci/run`"
    assert "python -m pip install" in ci and '"torch==2.13.0" -e ".[dev,dask,hf]"' in ci
    assert "python -m pytest" in ci
