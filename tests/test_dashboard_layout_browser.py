"""The page in a real browser at a laptop's size (issue 14): a link with the experiment in its query reopens that
configuration; the Landscape tab draws the path as contours and as a WebGL 3D surface, and its replay slider moves
the path's end marker back; nothing overlaps at 1280x800 (bounding boxes of the sidebar, the main area and every
shown plot) and Run is above the fold."""
import json
import re
import urllib.parse

import pytest

from browser import choose, click, reveal, set_text, text_of, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # `server`, `browser`: tests/conftest.py
T = 60
W, H = 1280, 800


def open_page(browser, server, query=""):
    page = browser.new_page(viewport={"width": W, "height": H})
    page.set_default_timeout(T * 1000)
    page.goto(server.url + query)
    page.locator(".wb-run button").wait_for()
    return page


def url_query(page) -> dict:
    """The page's query as the browser has it now (``window.location``: Panel pushes each change to history)."""
    return dict(urllib.parse.parse_qsl(page.evaluate("window.location.search").lstrip("?")))


def box(page, css):
    return page.locator(css).first.bounding_box()


def overlap(a, b) -> float:
    """Area (px²) where two bounding boxes intersect."""
    w = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    h = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    return max(w, 0) * max(h, 0)


def data_of(page, css):
    return page.locator(f"{css} .js-plotly-plot").evaluate(
        "el => (el.data || []).map(t => ({type: t.type || 'scatter', name: t.name || '',"
        " n: (t.x && t.x.length !== undefined) ? t.x.length : 0}))")


def assert_no_overlap(page, panes):
    side, main = box(page, ".wb-controls"), box(page, ".wb-main")
    assert overlap(side, main) == 0, (side, main)
    shown = {p: box(page, p) for p in panes if page.locator(p).first.is_visible()}
    assert len(shown) == len(panes), f"not shown: {set(panes) - set(shown)}"
    for p, b in shown.items():
        assert b["width"] > 100 and b["height"] > 100, (p, b)
        assert b["x"] >= main["x"] - 1 and b["x"] + b["width"] <= main["x"] + main["width"] + 1, (p, b, main)
        assert b["x"] + b["width"] <= W + 1, f"{p} runs off the right edge at {W} px: {b}"
    names = list(shown)
    for i, p in enumerate(names):
        for q in names[i + 1:]:
            assert overlap(shown[p], shown[q]) <= 1.0, f"{p} and {q} overlap: {shown[p]} {shown[q]}"
    return shown


def test_a_link_with_parameters_reopens_that_configuration(browser, server):
    q = {"problem": "himmelblau", "optimizer": "sgd", "hp": json.dumps({"lr": 0.003, "momentum": 0.5}),
         "run": json.dumps({"steps": 77, "seed": 4, "batch_size": None}),
         "probes": json.dumps({"sharpness": {"every": 7, "k": 1}}),
         "schedule": json.dumps({"schedule": "cosine", "warmup": 5, "min_lr_ratio": 0.0})}
    page = open_page(browser, server, "?" + urllib.parse.urlencode(q))
    assert page.locator(".wb-problem select").input_value().startswith("himmelblau ")
    assert page.locator(".wb-optimizer select").input_value() == "sgd"
    assert float(page.locator(".wb-param-lr input").input_value()) == 0.003
    assert float(page.locator(".wb-param-momentum input").input_value()) == 0.5
    assert page.locator(".wb-param-steps input").input_value() == "77"
    assert page.locator(".wb-param-seed input").input_value() == "4"
    assert reveal(page, ".wb-probe-sharpness input").is_checked()
    assert not page.locator(".wb-probe-eval input").is_checked()
    assert reveal(page, ".wb-sharpness-param-every input").input_value() == "7"
    assert page.locator(".wb-preset select").input_value() == "(none)"   # the link, not the default preset
    assert not page.locator(".wb-run-error").first.is_visible()
    # the page's URL carries the whole experiment, and a change of a control moves it
    wait_until(lambda: url_query(page).get("optimizer") == "sgd" and "options" in url_query(page), timeout=T,
               what="the whole experiment in the URL")
    set_text(page, ".wb-param-lr", "0.002")
    wait_until(lambda: json.loads(url_query(page)["hp"])["lr"] == 0.002, timeout=T, what="the lr in the URL")
    # ... and that URL, opened in a new page, reopens it again; Run uses it
    again = open_page(browser, server, page.evaluate("window.location.search"))
    assert float(again.locator(".wb-param-lr input").input_value()) == 0.002
    assert again.locator(".wb-problem select").input_value().startswith("himmelblau ")
    again.locator(".wb-run button").click()
    wait_until(lambda: "finished" in text_of(again, ".wb-status"), timeout=T, what="the linked run")
    status = text_of(again, ".wb-status")
    assert "step 77 / 77" in status and "sgd" in status, status
    again.close()
    page.close()


def test_a_link_with_unusable_values_says_so_and_applies_the_rest(browser, server):
    q = {"optimizer": "no-such-opt", "run": json.dumps({"steps": 33, "seed": 0, "batch_size": None}),
         "hp": "{broken"}
    page = open_page(browser, server, "?" + urllib.parse.urlencode(q))
    msg = wait_until(lambda: (t := text_of(page, ".wb-run-error")) and "Not applied from the link" in t and t,
                     timeout=T, what="the link's error")
    assert "no-such-opt" in msg and "hp=" in msg, msg
    assert page.locator(".wb-param-steps input").input_value() == "33"
    page.close()


def test_3d_view_and_replay_slider_render(browser, server):
    page = open_page(browser, server)
    set_text(page, ".wb-param-steps", "200")
    page.locator(".wb-run button").click()
    wait_until(lambda: "finished" in text_of(page, ".wb-status"), timeout=T, what="the run")
    page.locator(".wb-tabs").get_by_text("Landscape", exact=True).first.click()
    plot = ".wb-landscape-plot"
    page.locator(f"{plot} .js-plotly-plot").wait_for(state="visible")
    traces = data_of(page, plot)
    assert traces[0]["type"] == "heatmap" and traces[-1]["name"] == "step 200", traces
    path = next(t for t in traces if t["name"] == "path")
    assert path["n"] == 201
    page.locator(".wb-landscape-mode").get_by_text("3D surface").click()
    wait_until(lambda: data_of(page, plot)[0]["type"] == "surface", timeout=T, what="the 3D surface")
    assert page.locator(f"{plot} .gl-container canvas").count() >= 1          # drawn by WebGL
    b = box(page, f"{plot} .gl-container canvas")
    assert b["width"] > 300 and b["height"] > 300, b
    # replay: a click a third of the way along the slider's track takes the path back to about step 67
    track = box(page, ".wb-replay .noUi-target")
    page.mouse.click(track["x"] + track["width"] / 3, track["y"] + track["height"] / 2)

    def replayed():
        t = data_of(page, plot)
        m = re.fullmatch(r"step (\d+)", t[-1]["name"])
        return m and int(m.group(1)) < 200 and (int(m.group(1)), t)

    step, traces = wait_until(replayed, timeout=T, what="the replayed end marker")
    assert 40 <= step <= 95, step
    path = next(t for t in traces if t["name"] == "path" and t["type"] == "scatter3d")
    assert path["n"] == step + 1
    assert f"{step}" in text_of(page, ".wb-replay")
    page.locator(".wb-landscape-mode").get_by_text("contours").click()       # the contours replay the same step
    wait_until(lambda: data_of(page, plot)[0]["type"] == "heatmap" and data_of(page, plot)[-1]["name"]
               == f"step {step}", timeout=T, what="the contours at the replayed step")
    page.close()


def test_nothing_overlaps_at_1280x800_and_run_is_above_the_fold(browser, server):
    page = open_page(browser, server)
    run = box(page, ".wb-run button")
    assert run["y"] >= 0 and run["y"] + run["height"] <= H and run["x"] + run["width"] <= W, run
    for css in (".wb-stop button", ".wb-pause button", ".wb-step button"):
        b = box(page, css)
        assert b["y"] + b["height"] <= H, (css, b)
    assert_no_overlap(page, [".wb-loss-plot"])
    # a network preset with its probes: every Train view shown, none on another
    choose(page, ".wb-preset", "edge of stability (digits, GD, MSE)")
    click(page, ".wb-apply-preset")
    wait_until(lambda: page.locator(".wb-problem select").input_value().startswith("digits-mlp "), timeout=T,
               what="the preset applied")
    set_text(page, ".wb-param-steps", "30")
    page.locator(".wb-run button").click()
    wait_until(lambda: "finished" in text_of(page, ".wb-status"), timeout=120, what="the preset's run")
    wait_until(lambda: page.locator(".wb-sharpness-plot").first.is_visible(), timeout=T, what="the sharpness view")
    shown = assert_no_overlap(page, [".wb-loss-plot", ".wb-sharpness-plot", ".wb-acc-plot", ".wb-norms-plot"])
    assert min(b["y"] for b in shown.values()) < H, "the first plot starts below the fold"
    for tab in ("Spectrum", "Landscape", "Sweep", "Runs"):
        page.locator(".wb-tabs").get_by_text(tab, exact=True).first.click()
        page.wait_for_timeout(300)
        side, main = box(page, ".wb-controls"), box(page, ".wb-main")
        assert overlap(side, main) == 0, tab
    page.close()


def test_the_page_loads_lean_and_without_script_errors(browser, server):
    """The served page leaves out MathJax and Bokeh's WebGL (widgets.app._lean_page_resources), loads the partial
    plotly.js bundle (widgets.plotly_bundle) and renders with no script error; the collapsed cards fill when opened
    (widgets.layout.lazy_card)."""
    import re
    import urllib.request

    html = urllib.request.urlopen(server.url, timeout=60).read().decode()
    srcs = re.findall(r'src="([^"]+)"', html)
    assert any("plotly" in s for s in srcs) and any("panel.min.js" in s for s in srcs), srcs
    assert not any("bokeh-mathjax" in s or "bokeh-gl" in s for s in srcs), srcs
    from panel.models.plotly import PLOTLY_VERSION as panels

    from widgets.plotly_bundle import PLOTLY_VERSION, TRACES
    lean = panels == PLOTLY_VERSION                       # else Panel's own full bundle (widgets.plotly_bundle)
    assert any(f"wb-assets/plotly-workbench-{PLOTLY_VERSION}" in s for s in srcs) == lean, srcs
    assert any("bundled/plotlyplot/plotly" in s for s in srcs) != lean, srcs
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(T * 1000)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server.url)
    page.locator(".wb-run button").wait_for()
    assert page.evaluate("Plotly.version") == panels
    if lean:                                              # every trace the dashboard draws is registered
        assert sorted(page.evaluate("Object.keys(Plotly.PlotSchema.get().traces)")) == sorted(TRACES)
    assert page.locator(".wb-probe-sharpness").count() == 0          # the Probes card is collapsed and empty
    assert reveal(page, ".wb-probe-sharpness input").is_visible()
    assert reveal(page, ".wb-export-name input").is_visible()
    page.wait_for_timeout(500)
    assert errors == [], errors
    page.close()
