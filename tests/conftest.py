import os

import pytest
import torch

# two cores, possibly two xdist workers: keep torch from oversubscribing
torch.set_num_threads(max(1, (os.cpu_count() or 2) // (2 if os.environ.get("PYTEST_XDIST_WORKER") else 1)))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models (fastest for them, and no fight with a loaded machine's other
    jobs); the previous setting is restored after the module. Use: pytestmark = pytest.mark.usefixtures("one_thread")."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _quiet_tqdm(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")


# -- browser tests: one `workbench app` server and one headless Chromium per test module -------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    from browser import AppServer, require_browser

    require_browser()
    srv = AppServer(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def browser():
    from browser import launch, require_browser

    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()
