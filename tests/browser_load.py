"""The dashboard under load (issue 16), in headless Chromium against a real `workbench app` server: ``sessions``
browser sessions each run a different optimizer (long runs, until stopped); then, with all of them training,

- a new page loads (goto -> the Run button and the loss plot are there), in a fresh browser context and again in
  the same one (its scripts cached),
- one more session runs and its first loss point reaches its plot,
- a session beyond the server's workers (``--workers``) is queued and says so, and starts when a slot frees,
- Stop in one session ends its run (click -> "stopped" in its status),
- every session still shows its own optimizer (isolation);

and after ``cycles`` sessions were opened and closed, the server's resident memory returns near where it started.
Used by tests/test_dashboard_load_browser.py (asserts what is not a timing) and benchmarks/dashboard_load.py (the
numbers, repeated). Nothing here is a threshold: :func:`measure` returns the numbers.
"""
from __future__ import annotations

import os
import time

from browser import choose, click, plot_points, set_text, text_of, wait_until

OPTIMIZERS = [("adam", "0.01"), ("sgd", "0.0005"), ("rmsprop", "0.001"), ("adagrad", "0.1"), ("lion", "0.001"),
              ("signsgd", "0.001"), ("nadam", "0.01"), ("radam", "0.01")]
LONG = "1000000"
T = 120


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` (MiB), from /proc."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_page(context, url):
    """A new page of ``context`` at ``url``; returns (page, seconds until the Run button and the loss plot are
    there)."""
    page = context.new_page()
    page.set_default_timeout(T * 1000)
    t0 = time.perf_counter()
    page.goto(url)
    page.locator(".wb-run button").wait_for()
    page.locator(".wb-loss-plot .js-plotly-plot").wait_for(state="attached")
    return page, time.perf_counter() - t0


def choose_optimizer(page, optimizer):
    """Choose ``optimizer`` and wait until the page shows its hyperparameter form (the server rebuilds the form;
    under load that takes longer than any fixed wait, and an lr typed into the old form is lost: the run then
    starts at the new optimizer's default lr)."""
    choose(page, ".wb-optimizer", optimizer)
    page.locator(f".wb-hparams-{optimizer} .wb-param-lr input").wait_for()


def start_run(page, optimizer, lr):
    """Choose ``optimizer`` at ``lr`` for a run that only ends when stopped, press Run; returns the seconds from
    the click to the first point on the loss plot, and the status text then."""
    choose_optimizer(page, optimizer)
    set_text(page, f".wb-hparams-{optimizer} .wb-param-lr", lr)
    set_text(page, ".wb-param-steps", LONG)
    t0 = time.perf_counter()
    page.locator(".wb-run button").click()
    wait_until(lambda: plot_points(page) > 0, timeout=T, interval=0.02, what=f"{optimizer}'s first point")
    return time.perf_counter() - t0, text_of(page, ".wb-status")


def measure(browser, server_url: str, server_pid: int, sessions: int = 6, cycles: int = 20, workers: int = 7,
            settle_s: float = 60.0, log=print) -> dict:
    """Run the load scenario (see the module doc) against a server started with ``--workers workers``
    (``workers == sessions + 1``: the extra session runs at once, one more is queued). Returns the numbers."""
    assert workers == sessions + 1, "the scenario needs exactly one free worker for the extra session"
    out: dict = {"sessions": sessions, "workers": workers, "load_avg_start": os.getloadavg()}
    # -- memory baseline: after one page was served and its session freed (one-time caches warmed) ----------
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page, _ = open_page(ctx, server_url)
    page.close()
    ctx.close()
    time.sleep(12)                                       # the app frees a closed tab's session within ~10 s
    out["rss_start_mb"] = rss_mb(server_pid)
    # -- the first page, idle -------------------------------------------------------------------------------
    ctxs, pages = [], []
    loads_idle = []
    for i in range(sessions):
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        page, t = open_page(ctx, server_url)
        loads_idle.append(t)
        ctxs.append(ctx)
        pages.append(page)
    out["page_load_idle_s"] = loads_idle[0]
    first = []
    for page, (opt, lr) in zip(pages, OPTIMIZERS):
        t, _ = start_run(page, opt, lr)
        first.append(t)
    out["first_point_s"] = first
    time.sleep(2)                                        # all of them training now
    for page, (opt, _) in zip(pages, OPTIMIZERS):
        assert "running" in text_of(page, ".wb-status"), text_of(page, ".wb-status")
    # -- a new page, with every run training ----------------------------------------------------------------
    extra_ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    extra, t_load = open_page(extra_ctx, server_url)
    out["page_load_busy_s"] = t_load
    again, t_again = open_page(extra_ctx, server_url)   # the same browser again: scripts in its cache (a second tab,
    again.close()                                        # a reload, a returning user)
    out["page_load_busy_cached_s"] = t_again
    opt, lr = OPTIMIZERS[sessions]
    t_first, _ = start_run(extra, opt, lr)
    out["extra_first_point_busy_s"] = t_first
    # -- one more: every worker is busy, so it is queued and says so ----------------------------------------
    q_ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    queued, _ = open_page(q_ctx, server_url)
    opt_q, lr_q = OPTIMIZERS[sessions + 1]
    choose_optimizer(queued, opt_q)
    set_text(queued, f".wb-hparams-{opt_q} .wb-param-lr", lr_q)
    queued.locator(".wb-run button").click()
    out["queued_status"] = wait_until(lambda: (s := text_of(queued, ".wb-status")) and "queued" in s and s,
                                      timeout=T, what="the queued status")
    assert plot_points(queued) == 0
    # -- Stop in the first session: it ends, and the queued one starts ---------------------------------------
    t0 = time.perf_counter()
    pages[0].locator(".wb-stop button").click()
    wait_until(lambda: "stopped" in text_of(pages[0], ".wb-status"), timeout=T, interval=0.02, what="stopped")
    out["stop_busy_s"] = time.perf_counter() - t0
    wait_until(lambda: plot_points(queued) > 0, timeout=T, interval=0.02, what="the queued run's first point")
    out["queued_started_after_stop_s"] = time.perf_counter() - t0
    # -- isolation: each session shows its own optimizer ----------------------------------------------------
    for page, (opt, _) in zip(pages + [extra, queued], OPTIMIZERS):
        status = text_of(page, ".wb-status")
        assert f"· {opt} ·" in status, (opt, status)
    out["isolated"] = True
    # -- close everything -----------------------------------------------------------------------------------
    for page in pages + [extra, queued]:
        if not page.locator(".wb-stop button").is_disabled():
            click(page, ".wb-stop")
    for c in ctxs + [extra_ctx, q_ctx]:
        c.close()
    # -- open and close `cycles` sessions, then let the server free them ----------------------------------
    loads_cycle = []
    for i in range(cycles):
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        page, t = open_page(ctx, server_url)
        loads_cycle.append(t)
        page.close()
        ctx.close()
    out["page_load_cycle_median_s"] = sorted(loads_cycle)[len(loads_cycle) // 2]
    out["rss_after_cycles_mb"] = rss_mb(server_pid)
    deadline = time.time() + settle_s
    while time.time() < deadline:
        time.sleep(3)
        rss = rss_mb(server_pid)
        if rss <= 1.2 * out["rss_start_mb"]:
            break
    out["rss_settled_mb"] = rss_mb(server_pid)
    out["rss_ratio"] = out["rss_settled_mb"] / out["rss_start_mb"]
    out["load_avg_end"] = os.getloadavg()
    log(report(out))
    return out


def report(out: dict) -> str:
    fp = out["first_point_s"]
    rows = [
        ("load average at start / end", f"{out['load_avg_start'][0]:.2f} / {out['load_avg_end'][0]:.2f}"),
        (f"page load, idle (goal < 3 s with {out['sessions']} runs)", f"{out['page_load_idle_s']:.2f} s"),
        (f"page load with {out['sessions']} runs training", f"{out['page_load_busy_s']:.2f} s"),
        ("... the same browser again (scripts cached)", f"{out['page_load_busy_cached_s']:.2f} s"),
        ("first point of sessions 1..n (click -> plot)", " ".join(f"{t:.2f}" for t in fp) + " s"),
        (f"first point of session {out['sessions'] + 1}, {out['sessions']} training (goal < 3 s)",
         f"{out['extra_first_point_busy_s']:.2f} s"),
        ("a session beyond the workers says", out["queued_status"][:70]),
        ("Stop with the others training (goal < 1 s)", f"{out['stop_busy_s']:.2f} s"),
        ("... the queued run's first point after that Stop", f"{out['queued_started_after_stop_s']:.2f} s"),
        ("page load, median of the open/close cycles", f"{out['page_load_cycle_median_s']:.2f} s"),
        ("server RSS: start / after cycles / settled (goal within 20%)",
         f"{out['rss_start_mb']:.0f} / {out['rss_after_cycles_mb']:.0f} / {out['rss_settled_mb']:.0f} MiB "
         f"({100 * (out['rss_ratio'] - 1):+.1f}%)"),
    ]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)
