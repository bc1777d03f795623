"""The first minute in a real browser (issue 14): the served page's first Run visibly moves the loss plot within
2 s of the click, and a pinned run shows in the legend as plain text ("pinned: ..."), drawn dashed with markers."""
import time

import pytest

from browser import plot_points, text_of, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # `server`, `browser`: tests/conftest.py


def loss_y(page):
    return page.locator(".wb-loss-plot .js-plotly-plot").evaluate(
        "el => { const t = (el.data || [])[0]; return (t && t.y) ? Array.from(t.y, Number) : []; }")


def test_first_run_moves_the_plot_within_two_seconds_and_pins_read_plainly(browser, server, record_property):
    from widgets.presets import DEFAULT_PRESET

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(server.url)
    page.locator(".wb-run button").wait_for()
    assert page.locator(".wb-preset select").input_value() == DEFAULT_PRESET
    assert plot_points(page) == 0
    t0 = time.perf_counter()
    page.locator(".wb-run button").click()

    def dropped():
        y = [v for v in loss_y(page) if v == v]
        return len(y) > 10 and y[0] / min(y) > 5

    wait_until(dropped, timeout=30, interval=0.05, what="the loss to drop 5-fold on the plot")
    elapsed = time.perf_counter() - t0
    record_property("first_run_visible_s", round(elapsed, 3))
    print(f"first Run: a 5-fold loss drop on the plot {elapsed:.3f} s after the click")
    assert elapsed < 2.0, f"the first Run took {elapsed:.2f} s to show a 5-fold loss drop"
    wait_until(lambda: "finished" in text_of(page, ".wb-status"), timeout=60, what="status 'finished'")
    page.locator(".wb-pin button").click()
    names = wait_until(lambda: [n for n in page.locator(".wb-loss-plot .js-plotly-plot").evaluate(
        "el => (el.data || []).map(t => t.name)") if n.startswith("pinned: ")], timeout=30, what="a pinned trace")
    assert len(names) == 1
    legend = page.locator(".wb-loss-plot .legendtext").all_text_contents()
    assert any(t.startswith("pinned: ") for t in legend), legend
    assert all(ord(c) < 0x2600 for t in legend for c in t), legend      # no pictograph the font may lack
    mode = page.locator(".wb-loss-plot .js-plotly-plot").evaluate(
        "el => el.data.filter(t => t.name.startsWith('pinned: '))[0].mode")
    assert "markers" in mode
    page.close()
