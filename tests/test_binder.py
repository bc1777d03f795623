"""The Binder environment built from binder/ alone, as repo2docker would minus Docker: a fresh virtual environment,
`pip install -r binder/requirements.txt` (the machine's CPU torch wheel satisfying the torch pin), `postBuild`, then
every package imports, the quickstart notebook executes (with binder/start's environment), and a real Jupyter server
serves the dashboard through the jupyter-server-proxy entry that postBuild wrote."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from packaging.requirements import Requirement

from nbutil import ROOT


def _pins():
    pins = {}
    for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            r = Requirement(line)
            pins[re.sub(r"[-_.]+", "-", r.name).lower()] = r
    return pins


def test_binder_pins_are_complete_and_exact():
    import tomllib
    pins = _pins()
    assert all(str(r.specifier).startswith("==") for r in pins.values()), "every Binder requirement is pinned"
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        d = Requirement(dep)
        key = re.sub(r"[-_.]+", "-", d.name).lower()
        assert key in pins, f"{d.name} is a runtime dependency but not pinned for Binder"
        version = str(pins[key].specifier)[2:]
        assert d.specifier.contains(version, prereleases=True), f"Binder pins {key}=={version}, pyproject wants {d}"
    for must in ("jupyter-server-proxy", "bokeh", "param", "jupyter-server"):   # the app's transitive stack too
        assert must in pins, must
    start = (ROOT / "binder" / "start").read_text()
    assert 'WORKBENCH_QUICK="${WORKBENCH_QUICK:-1}"' in start and 'exec "$@"' in start
    assert os.access(ROOT / "binder" / "start", os.X_OK)
    assert {"chromium", "dataset-fashion-mnist"} <= set((ROOT / "binder" / "apt.txt").read_text().split())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, env, cwd, timeout, what):
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{what} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.mark.slow
def test_binder_environment_builds_and_serves(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the tracked files")
    # the repository as Binder sees it: tracked files only
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            dst = repo / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for rel in ("binder/requirements.txt", "binder/postBuild", "binder/start", "binder/apt.txt"):
        assert (repo / rel).exists(), f"{rel} is not tracked"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), VIRTUAL_ENV=str(venv),
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_RETRIES="1", PIP_DEFAULT_TIMEOUT="30",
               XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME", str(os.path.expanduser("~/.cache"))))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    torch_pin = str(_pins()["torch"].specifier)
    _run(pip + [f"torch{torch_pin}"], env, repo, 900, "installing the CPU torch wheel")
    _run(pip + ["-r", "binder/requirements.txt"], env, repo, 1500, "pip install -r binder/requirements.txt")
    _run(["bash", "binder/postBuild"], env, repo, 600, "postBuild")
    py = str(venv / "bin" / "python")
    out = _run([py, "-c", "import torch, workbench, landscapes, widgets, panel, xarray, plotly, jupyter_server_proxy;"
                          "print(torch.__version__, workbench.__file__)"], env, repo, 300, "imports").stdout
    assert out.startswith(torch_pin[2:]) and str(repo) in out, out
    # the quickstart notebook with binder/start's environment (quick mode by default on Binder)
    start_env = dict(env)
    start_env.pop("WORKBENCH_QUICK", None)
    probe = _run(["bash", "binder/start", py, "-c", "import os; print(os.environ['WORKBENCH_QUICK'])"], start_env,
                 repo, 60, "binder/start").stdout.strip()
    assert probe == "1"
    _run(["bash", "binder/start", str(venv / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
          "--ExecutePreprocessor.timeout=600", "--output", str(tmp_path / "quickstart-run.ipynb"),
          "notebooks/00_quickstart.ipynb"], start_env, repo, 900, "executing 00_quickstart")
    assert (tmp_path / "quickstart-run.ipynb").stat().st_size > 10_000
    # a real Jupyter server; the dashboard through the proxy entry postBuild wrote
    config = (home / ".jupyter" / "jupyter_server_config.py").read_text()
    assert '"workbench"' in config and "launcher_entry" in config
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(["bash", "binder/start", str(venv / "bin" / "jupyter"), "server", "--no-browser",
                               f"--port={port}", "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=",
                               "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True"]
                              + (["--allow-root"] if os.geteuid() == 0 else []),   # Binder runs as a user
                              env=start_env, cwd=repo, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/api/status", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        else:
            pytest.fail("the Jupyter server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
        body, status = "", None
        deadline = time.time() + 240      # the proxy starts `workbench app` on first request (timeout 120 s there)
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/workbench/", timeout=150) as r:
                    status, body = r.status, r.read().decode("utf-8", "replace")
                    if status == 200 and "bokeh" in body.lower():
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        assert status == 200 and "bokeh" in body.lower(), (status, body[:500],
                                                           (tmp_path / "server.log").read_text()[-3000:])
        assert "workbench" in body.lower()
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        log.close()
