"""The dashboard served by a real Panel server (subprocess `workbench app`), driven by headless Chromium."""
import time

import pytest

from browser import choose, plot_last_x, plot_points, set_text, text_of, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # `server`, `browser`: tests/conftest.py


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(server.url)
    page.locator(".wb-run button").wait_for()
    return page


def test_choose_optimizer_set_lr_run_grow_stop(browser, server):
    from playwright.sync_api import expect

    page = open_page(browser, server)
    choose(page, ".wb-optimizer", "sgd")
    expect(page.locator(".wb-param-lr input")).to_have_value("0.01")    # the sgd schema's default arrived
    set_text(page, ".wb-param-lr", "0.0005")
    set_text(page, ".wb-param-steps", "1000000")
    page.locator(".wb-run button").click()
    wait_until(lambda: plot_points(page), what="first loss points")
    first = plot_last_x(page)
    later = wait_until(lambda: (x := plot_last_x(page)) > first and x, what="the loss trace to grow")
    assert later > first
    assert "running" in text_of(page, ".wb-status") and "sgd" in text_of(page, ".wb-status")
    # the 2D path view follows the run as well (the heavier views redraw about once a second)
    wait_until(lambda: plot_points(page, ".wb-path-plot", trace=-1) > 1, timeout=30, what="the path to grow")
    page.locator(".wb-stop button").click()
    try:
        wait_until(lambda: "stopped" in text_of(page, ".wb-status"), timeout=30, what="status 'stopped'")
    except AssertionError:
        page.screenshot(path=str(server.tmp / "stop_failure.png"))
        raise
    last_stopped = plot_last_x(page)
    time.sleep(1.0)
    assert plot_last_x(page) == last_stopped         # nothing more arrives after Stop
    page.locator(".wb-reset button").click()
    wait_until(lambda: plot_points(page) == 0, timeout=30, what="Reset to clear the plot")
    page.close()


def test_invalid_value_shows_inline_error_and_server_survives(browser, server):
    page = open_page(browser, server)
    set_text(page, ".wb-param-lr", "-3")
    wait_until(lambda: "out of range" in text_of(page, ".wb-error-lr"), timeout=30, what="inline lr error")
    assert "lr" in text_of(page, ".wb-error-lr")
    page.locator(".wb-run button").click()
    time.sleep(1.0)
    assert plot_points(page) == 0
    set_text(page, ".wb-param-lr", "abc")
    wait_until(lambda: "must be a number" in text_of(page, ".wb-error-lr"), timeout=30, what="non-numeric error")
    page.close()
    assert server.alive()
