"""HTML/script payloads in a real served dashboard (headless Chromium): typed into every text and number field of the
sidebar, and carried in a loaded record's attributes. No dialog fires, no injected element exists in the DOM (shadow
roots included), and the text is shown literally."""
import json

import pytest

from browser import choose, click, reveal, reveal_all, set_text, text_of, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

T = 60
PAYLOAD = "<img src=x id=wbxss1 onerror=alert(1)><svg id=wbxss2 onload=alert(2)>"
PAYLOAD2 = "<script>alert('wbxss3')</script><b id=wbxss4>b</b>"

INJECTED = """() => {
  const out = [];
  const visit = (root) => root.querySelectorAll('*').forEach(el => {
    if (el.id && el.id.startsWith('wbxss')) out.push(el.tagName + '#' + el.id);
    if (el.tagName === 'SCRIPT' && el.textContent.includes('wbxss')) out.push('SCRIPT');
    for (const a of Array.from(el.attributes || []))
      if (a.name.startsWith('on') && a.value.includes('alert')) out.push(el.tagName + '@' + a.name);
    if (el.shadowRoot) visit(el.shadowRoot);
  });
  visit(document);
  return out;
}"""


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(T * 1000)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(server.url)
    page.locator(".wb-run button").wait_for()
    return page, dialogs


def test_payload_typed_into_every_field(browser, server):
    page, dialogs = open_page(browser, server)
    choose(page, ".wb-problem", "spirals")                  # numeric problem options as well
    reveal(page, ".wb-param-width input")
    set_text(page, ".wb-param-steps", "20")                 # a record to export, so the file name is checked
    page.locator(".wb-run button").click()
    wait_until(lambda: "finished" in text_of(page, ".wb-status"), timeout=T, what="a short run")
    reveal_all(page)                                        # every collapsed card (options, schedule, probes, files)
    page.locator(".wb-probe-sharpness input").wait_for(state="visible")
    boxes = page.locator(".wb-controls input[type=text]")
    filled = 0
    for i in range(boxes.count()):
        box = boxes.nth(i)
        if box.is_visible():
            box.fill(PAYLOAD)
            box.press("Enter")
            filled += 1
    assert filled >= 15, filled
    wait_until(lambda: "must be a number" in text_of(page, ".wb-error-lr"), timeout=T, what="inline lr error")
    page.locator(".wb-run button").click()
    wait_until(lambda: "highlighted" in text_of(page, ".wb-run-error"), timeout=T, what="run refused")
    click(page, ".wb-export")
    wait_until(lambda: "not allowed" in text_of(page, ".wb-file-error"), timeout=T, what="file name refused")
    page.wait_for_timeout(1000)              # give an injected handler every chance to fire
    assert PAYLOAD in text_of(page, ".wb-error-lr")               # shown literally
    assert PAYLOAD in text_of(page, ".wb-run-error") and PAYLOAD in text_of(page, ".wb-file-error")
    assert page.evaluate(INJECTED) == []
    assert dialogs == []
    page.close()
    assert server.alive()


def evil_record(path):
    import workbench as wb

    prob = wb.problems.make("rosenbrock")
    rec = wb.train(prob, optimizer="adam", lr=0.01, steps=30, progress=False,
                   probes=[wb.probes.Trajectory(every=1)]).record
    rec.attrs.update(problem=PAYLOAD, optimizer=PAYLOAD2, status=PAYLOAD, device=PAYLOAD2,
                     events=json.dumps([{"step": 10, "optimizer": PAYLOAD, "changed": ["lr"],
                                         "hparams": {"lr": PAYLOAD2}}]))
    cfg = json.loads(rec.attrs["config"])
    cfg["problem"]["name"] = PAYLOAD
    rec.attrs["config"] = json.dumps(cfg)
    wb.save(rec, path)


def test_payload_in_a_loaded_and_pinned_record(browser, server):
    evil_record(server.tmp / "results" / "shared_evil.nc")
    page, dialogs = open_page(browser, server)
    click(page, ".wb-refresh")
    wait_until(lambda: "shared_evil" in page.locator(".wb-load-select select").inner_text(), timeout=T,
               what="the record listed")
    choose(page, ".wb-load-select", "shared_evil")
    click(page, ".wb-load")
    wait_until(lambda: "Viewing saved record" in text_of(page, ".wb-status"), timeout=T, what="loaded")
    page.locator(".wb-pin button").click()
    wait_until(lambda: "Pinned" in text_of(page, ".wb-pins"), timeout=T, what="pinned")
    wait_until(lambda: page.locator(".wb-loss-plot .legendtext").count() >= 2, timeout=T, what="legend")
    page.wait_for_timeout(1500)
    status, pins = text_of(page, ".wb-status"), text_of(page, ".wb-pins")
    assert PAYLOAD in status and PAYLOAD2 in status, status
    assert PAYLOAD in pins and PAYLOAD2 in pins, pins
    legend = " ".join(page.locator(".wb-loss-plot .legendtext").all_text_contents())
    assert PAYLOAD2 in legend, legend                      # the pin's label (optimizer), literally
    notes = " ".join(page.locator(".wb-loss-plot .annotation-text").all_text_contents())
    assert PAYLOAD in notes, notes                         # the hot-swap mark from the record's events
    assert page.evaluate(INJECTED) == []
    assert dialogs == []
    page.close()
