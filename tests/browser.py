"""Shared helpers for browser tests: a real `workbench app` server process and headless Debian Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def require_browser():
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        if os.environ.get("WORKBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Chromium not found at {CHROMIUM} but WORKBENCH_REQUIRE_BROWSER=1")
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        if os.environ.get("WORKBENCH_REQUIRE_BROWSER") == "1":
            raise
        pytest.skip("playwright is not installed (pip install -e .[dev])")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    def __init__(self, tmp_path, extra_args=()):
        self.port = free_port()
        self.tmp = tmp_path
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = open(tmp_path / "server.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "workbench_cli", "app", "--port", str(self.port),
                                      "--results-dir", str(tmp_path / "results"), *extra_args],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp_path)
        deadline = time.time() + 300     # a loaded 2-core CI machine can take minutes to import and warm up
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                # a long timeout: each aborted request makes the server build (and then drop) one more session
                with urllib.request.urlopen(self.url, timeout=60) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"server did not come up: {self.output()}")

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        with urllib.request.urlopen(self.url, timeout=30) as r:
            return r.status == 200

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def plot_points(page, css=".wb-loss-plot", trace=0) -> int:
    """Number of points in trace ``trace`` (negative counts from the end) of a plotly plot in a Panel pane."""
    return page.locator(f"{css} .js-plotly-plot").evaluate(
        "(el, i) => { const d = el.data || []; const t = d[i < 0 ? d.length + i : i];"
        " return (t && t.x && t.x.length !== undefined) ? t.x.length : 0; }", trace)


def plot_last_x(page, css=".wb-loss-plot", trace=0) -> float:
    """Largest x (the last step shown) of trace ``trace`` of a plotly plot; -1 when the trace is empty.

    Long live series are thinned to a fixed number of points for display, so "the trace grew" and "nothing more
    arrived" are checked on the last step shown, never on the point count."""
    return page.locator(f"{css} .js-plotly-plot").evaluate(
        "(el, i) => { const d = el.data || []; const t = d[i < 0 ? d.length + i : i];"
        " if (!t || !t.x || !t.x.length) return -1; let m = -Infinity;"
        " for (let j = 0; j < t.x.length; j++) { const v = Number(t.x[j]); if (v > m) m = v; } return m; }", trace)


def text_of(page, css) -> str:
    """Visible text of a Panel pane (its shadow DOM, without <style> contents); a pane in a card not opened yet is
    revealed first (served pages fill collapsed cards when they are opened)."""
    loc = page.locator(css).first
    if loc.count() == 0:
        loc = reveal(page, css, visible=False)
    return loc.evaluate(
        "el => { const root = el.shadowRoot || el; const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);"
        " let out = ''; let n; while ((n = walker.nextNode())) {"
        " if (n.parentElement && n.parentElement.tagName === 'STYLE') continue; out += n.textContent; }"
        " return out.trim(); }")


def wait_until(fn, timeout=60.0, interval=0.2, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last value {last!r})")


_OPEN_CARDS = """el => {
  // open every collapsed Panel Card around el, outermost first (cards nest across shadow roots)
  const cards = [];
  let n = el;
  while (n) {
    if (n.classList && n.classList.contains('bk-panel-models-layout-Card')) cards.unshift(n);
    n = n.parentNode || null;
    if (n && n.nodeType === 11) n = n.host;          // out of a shadow root, to its host
  }
  let opened = 0;
  for (const card of cards) {
    const header = Array.from((card.shadowRoot || card).children).find(c => c.classList.contains('card-header'));
    if (header && header.querySelector('.icon-tabler-chevron-right')) { header.click(); opened++; }
  }
  return opened;
}"""


def _open_collapsed(page) -> int:
    """Click the header of every collapsed card of the page (nested ones too); returns how many were opened."""
    return page.evaluate("""() => { let opened = 0;
      const visit = root => { root.querySelectorAll('*').forEach(el => {
        if (el.classList.contains('card-header') && el.querySelector('.icon-tabler-chevron-right')) {
          el.click(); opened++; }
        if (el.shadowRoot) visit(el.shadowRoot); }); };
      visit(document); return opened; }""")


def reveal(page, css, timeout_s: float = 120.0, visible: bool = True):
    """Make the first element matching ``css`` visible: the sidebar groups are collapsible cards, some collapsed
    until the user opens them, so a test opens them the way a user does (a click on each card's header). A served
    page's collapsed cards receive their contents when first opened (widgets.layout.lazy_card): an element not on
    the page yet is looked for by opening the collapsed cards, outermost first, until it is there (``visible=False``:
    only until it is on the page, e.g. an empty pane)."""
    el = page.locator(css).first
    deadline = time.time() + timeout_s
    try:                                     # on the page already (or about to be: a form being rebuilt)
        el.wait_for(state="attached", timeout=2000)
    except Exception:
        pass
    while el.count() == 0:
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {css!r} (opened every card)")
        if not _open_collapsed(page):
            page.wait_for_timeout(200)
        else:
            page.wait_for_timeout(300)       # the opened cards' contents come from the server
    el.wait_for(state="attached")
    if visible and not el.is_visible():
        el.evaluate(_OPEN_CARDS)
        el.wait_for(state="visible")
    return el


def reveal_all(page):
    """Open every collapsed card of the page (nested ones too; a lazily filled card's nested cards appear once its
    contents arrived from the server)."""
    quiet = 0
    for _ in range(20):
        if _open_collapsed(page):
            quiet = 0
        else:
            quiet += 1
            if quiet >= 3:
                return
        page.wait_for_timeout(300)


def click(page, css):
    """Click the button of the Panel widget ``css`` (opening the card it sits in first)."""
    reveal(page, f"{css} button").click()


def set_text(page, css, value):
    box = reveal(page, f"{css} input")
    box.fill(str(value))
    box.press("Enter")


def choose(page, css, value):
    """Select the option shown as ``value``, or whose label starts with ``value`` followed by a space (the problem
    list labels each problem with its size: "digits-mlp · 55.2k params · ...")."""
    select = reveal(page, f"{css} select")
    labels = select.locator("option").all_text_contents()
    exact = [l for l in labels if l == value]
    prefixed = [l for l in labels if l.startswith(value + " ")]
    select.select_option(label=(exact or prefixed or [value])[0])
