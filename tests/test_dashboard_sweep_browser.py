"""The Sweep and Runs views of the served dashboard (subprocess `workbench app`), driven by headless Chromium: a 3x3
grid fills its phase diagram live, a click on a cell opens that run in the Train view, and two saved runs are
overlaid in the Runs view."""
import time

import pytest

from browser import choose, plot_points, set_text, text_of, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # `server`, `browser`: tests/conftest.py

STEPS = 300


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    page.goto(server.url)
    page.locator(".wb-run button").wait_for()
    return page


def tab(page, title):
    page.locator(".wb-tabs .bk-tab", has_text=title).first.click()


def filled_cells(page) -> int:
    """Heatmap cells with a value (cells not finished yet are gaps)."""
    return page.locator(".wb-sweep-plot .js-plotly-plot").evaluate(
        "el => { const t = (el.data || [])[0]; if (!t || !t.z) return 0; let n = 0;"
        " for (const row of t.z) for (const v of row) if (v !== null && Number.isFinite(Number(v))) n++;"
        " return n; }")


def test_sweep_fills_live_and_a_click_opens_the_cell(browser, server):
    page = open_page(browser, server)
    choose(page, ".wb-problem", "quadratic")
    choose(page, ".wb-optimizer", "sgd")
    set_text(page, ".wb-param-steps", str(STEPS))
    tab(page, "Sweep")
    page.locator(".wb-sweep-launch button").wait_for()
    choose(page, ".wb-sweep-x-field", "lr (optimizer)")
    set_text(page, ".wb-sweep-x-min", "0.01")
    set_text(page, ".wb-sweep-x-max", "0.1")
    set_text(page, ".wb-sweep-x-n", "3")
    choose(page, ".wb-sweep-x-scale", "log")
    choose(page, ".wb-sweep-y-field", "momentum (optimizer)")
    set_text(page, ".wb-sweep-y-min", "0")
    set_text(page, ".wb-sweep-y-max", "0.9")
    set_text(page, ".wb-sweep-y-n", "3")
    choose(page, ".wb-sweep-y-scale", "linear")
    set_text(page, ".wb-sweep-name", "browser_grid")

    # a bad range first: an inline error naming the field, nothing starts
    set_text(page, ".wb-sweep-x-min", "-1")
    page.locator(".wb-sweep-launch button").click()
    wait_until(lambda: "x (lr)" in text_of(page, ".wb-sweep-error-x"), timeout=30, what="inline x error")
    assert "log scale" in text_of(page, ".wb-sweep-error-x")
    set_text(page, ".wb-sweep-x-min", "0.01")

    page.locator(".wb-sweep-launch button").click()
    seen, progress = [], []
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            n = filled_cells(page)
        except Exception:          # the plot is not there yet
            n = 0
        seen.append(n)
        progress.append(text_of(page, ".wb-sweep-progress"))
        if n == 9 and "done" in progress[-1]:
            break
        time.sleep(0.15)
    assert seen[-1] == 9, (seen[-20:], progress[-3:], server.output()[-2000:])
    assert "9 of 9 cells" in progress[-1]
    assert any(0 < k < 9 for k in seen), seen              # cells came in while the sweep ran
    assert seen == sorted(seen)
    assert any(p.startswith(tuple(f"{k} of 9 cells" for k in range(1, 9))) for p in progress), progress

    # click the middle cell (lr 0.0316, momentum 0.45) -> the Train view shows that run's loss
    pos = page.locator(".wb-sweep-plot .js-plotly-plot").evaluate(
        "el => { const L = el._fullLayout, xa = L.xaxis, ya = L.yaxis, t = el.data[0], r = el.getBoundingClientRect();"
        " return [r.left + xa._offset + xa.c2p(t.x[1]), r.top + ya._offset + ya.c2p(t.y[1])]; }")
    page.mouse.move(pos[0], pos[1])
    time.sleep(0.3)
    page.mouse.click(pos[0], pos[1])
    wait_until(lambda: "cell-00004" in text_of(page, ".wb-status"), timeout=30, what="the cell to open")
    status = text_of(page, ".wb-status")
    assert "lr=0.03162" in status and "momentum=0.45" in status and "sgd" in status
    wait_until(lambda: plot_points(page) == STEPS, timeout=30, what="the cell's loss in the Train view")
    page.locator(".wb-loss-plot").wait_for(state="visible")     # the Train tab is the one shown
    page.close()
    assert server.alive()


def test_runs_view_overlays_two_saved_runs(browser, server):
    import workbench as wb

    results = server.tmp / "results"
    results.mkdir(exist_ok=True)
    for name, opt, steps in (("b_sgd", "sgd", 30), ("b_adam", "adam", 45)):
        run = wb.train(wb.problems.make("quadratic"), optimizer=opt, lr=0.05, steps=steps, device="cpu",
                       progress=False)
        wb.save(run.record, results / f"{name}.nc")
    page = open_page(browser, server)
    tab(page, "Runs")
    select = page.locator(".wb-runs-select select")
    wait_until(lambda: len([t for t in select.locator("option").all_text_contents() if t.startswith("b_")]) == 2,
               timeout=30, what="the two saved runs listed")
    labels = [t for t in select.locator("option").all_text_contents() if t.startswith(("b_sgd.nc", "b_adam.nc"))]
    select.select_option(label=labels)

    def traces():
        return page.locator(".wb-runs-plot .js-plotly-plot").evaluate(
            "el => (el.data || []).map(t => [t.name, t.x.length])")

    got = wait_until(lambda: (t := traces()) and len(t) == 2 and t, timeout=30, what="two overlaid traces")
    assert sorted(got) == [["b_adam", 45], ["b_sgd", 30]]
    page.close()
