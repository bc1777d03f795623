"""Dashboard security without a browser: one escape helper used by every pane (typed text and a record's attributes are
shown literally, never as markup), a memory cap checked from the options before anything is built, and files that
stay inside the results directory (symlinks, long names). The browser side: tests/test_dashboard_browser_security.py."""
import html
import json
import os
import time
from pathlib import Path

import numpy as np
import panel as pn
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workbench as wb
from widgets import Dashboard
from widgets import limits as L
from widgets import safe
from widgets.files import list_records, safe_path

PAYLOADS = ['<img src=x id=wbxss onerror=alert(1)>', '<script>alert("wb")</script>', '"><svg onload=alert(2)>',
            "**bold** _em_ `code` $x$ [a](javascript:alert(3)) &amp; &lt;"]
P = PAYLOADS[0]


def drive(d, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d.tick()
        if d.run is not None and d.run.done and d._final_done:
            return d.run
        time.sleep(0.02)
    raise AssertionError("the run did not finish in time")


@pytest.fixture
def dash(tmp_path):
    d = Dashboard(results_dir=tmp_path / "results")
    yield d
    d.stop()
    if d.run is not None:
        d.run.wait(30)


def text_panes(d):
    """Every HTML/Markdown pane of the dashboard (message panes, notes, status, pins)."""
    return [p for p in d.layout.select(pn.pane.HTML) if not isinstance(p, pn.pane.Plotly)] + \
        list(d.layout.select(pn.pane.Markdown))


def assert_no_markup_from(d, payloads=PAYLOADS):
    """No pane carries a payload as markup: HTML panes hold it only escaped; Markdown panes (fixed preset docs) not
    at all; plotly strings hold '<' only as '&lt;'."""
    for pane in text_panes(d):
        obj = str(pane.object or "")
        for p in payloads:
            if "<" in p:
                assert p not in obj, (pane.css_classes, obj)
        if isinstance(pane, pn.pane.Markdown):
            assert not any(p in obj or html.escape(p) in obj for p in payloads), pane.css_classes
    for fig in d.figures().values():
        strings = [t.get("name") or "" for t in fig["data"]] + [str(t.get("text") or "") for t in fig["data"]]
        lay = fig["layout"]
        strings += [a.get("text", "") for a in lay.get("annotations", [])]
        strings += [str((lay.get("title") or {}).get("text", ""))]
        for s in strings:
            assert "<" not in s and ">" not in s, s


def shown(pane) -> str:
    """What the browser shows for an HTML pane: the markup with entities decoded (tags of ours removed)."""
    import re
    return html.unescape(re.sub(r"<[^>]*>", "", str(pane.object)))


# -- the helper ---------------------------------------------------------------------------------------------
def test_escape_helper():
    assert safe.text(P) == "&lt;img src=x id=wbxss onerror=alert(1)&gt;"
    assert safe.text('a "b" \'c\' & d') == "a &quot;b&quot; &#x27;c&#x27; &amp; d"
    m = safe.text("<b>")
    assert safe.text(m) is m                       # escaping twice is harmless
    assert safe.html("<b>{}</b> · {x}", P, x="&") == "<b>&lt;img src=x id=wbxss onerror=alert(1)&gt;</b> · &amp;"
    joined = safe.Markup("<b>ok</b>") + P
    assert isinstance(joined, safe.Markup) and joined == "<b>ok</b>" + html.escape(P)
    assert P + safe.Markup("<i>") == html.escape(P) + "<i>"
    assert safe.plot_text('<a href="javascript:x">&</a>') == '&lt;a href="javascript:x"&gt;&amp;&lt;/a&gt;'


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_escape_round_trips_and_leaves_no_tag(s):
    for out in (safe.text(s), safe.plot_text(s)):
        assert "<" not in out and ">" not in out
        assert html.unescape(out) == s


# -- typed text in every field --------------------------------------------------------------------------------
def all_text_inputs(d):
    forms = [d.hparam_form, d.run_form, d.schedule_form, d.problem_form, *d.probe_forms.values()]
    return [(f, name, w) for f in forms for name, w in f.widgets.items() if isinstance(w, pn.widgets.TextInput)]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_in_every_text_field_is_escaped(dash, payload):
    dash.problem_select.value = "spirals"           # a problem with numeric options too
    fields = all_text_inputs(dash)
    assert len(fields) >= 15
    for form, name, w in fields:
        w.value = payload
        if form.errors[name].visible:           # the inline error quotes what was typed: escaped, and literal
            assert payload in shown(form.errors[name]), (name, form.errors[name].object)
    for name, cb in dash.probe_checks.items():
        cb.value = True
    assert dash.start() is None
    assert dash.error.visible and payload in shown(dash.error)
    dash.export_name.value = payload
    assert dash.load(payload) is None and dash.file_error.visible
    assert payload in shown(dash.file_error) and "not allowed" in shown(dash.file_error)
    assert_no_markup_from(dash, [payload])


def test_error_panes_are_html_not_markdown(dash):
    # Markdown panes pass raw HTML through and read * _ ` $ in a visitor's text as formatting
    msg_panes = [dash.error, dash.file_error, dash.file_status, dash.pins_text, dash.device_error,
                 dash.status, dash.problem_note, *dash.hparam_form.errors.values(), *dash.run_form.errors.values()]
    for p in msg_panes:
        assert type(p) is pn.pane.HTML, p.css_classes
    dash._show_error(PAYLOADS[3])
    assert shown(dash.error) == PAYLOADS[3]


# -- text from a record's attributes ------------------------------------------------------------------------------
def evil_record(tmp_path, name="evil"):
    prob = wb.problems.make("rosenbrock")
    rec = wb.train(prob, optimizer="adam", lr=0.01, steps=12, progress=False,
                   probes=[wb.probes.Trajectory(every=1)]).record
    rec.attrs.update(problem=P, optimizer=PAYLOADS[1], status=PAYLOADS[2], device=P,
                     events=json.dumps([{"step": 5, "optimizer": P, "changed": ["lr"],
                                         "hparams": {"lr": PAYLOADS[1]}}]))
    cfg = json.loads(rec.attrs["config"])
    cfg["optimizer"] = P
    cfg["problem"]["name"] = P
    rec.attrs["config"] = json.dumps(cfg)
    path = tmp_path / "results" / f"{name}.nc"
    wb.save(rec, path)
    return path


def test_loaded_record_attributes_are_escaped_everywhere(dash, tmp_path):
    evil_record(tmp_path)
    dash._refresh_files()
    assert "evil" in dash.load_select.options
    ds = dash.load("evil")
    assert ds is not None, dash.file_error.object
    status = shown(dash.status)
    assert P in status and PAYLOADS[1] in status and PAYLOADS[2] in status
    assert dash.pin() is not None
    assert P in shown(dash.pins_text) and PAYLOADS[1] in shown(dash.pins_text)
    # a second view with the pin overlaid: trace names, annotations
    dash.problem_select.value = "rosenbrock"
    dash.run_form.widgets["steps"].value = "20"
    dash.start()
    drive(dash)
    figs = dash.figures()
    names = [t.get("name") for f in figs.values() for t in f["data"]]
    assert any(html.escape(PAYLOADS[1], quote=False) in (n or "") for n in names), names
    assert_no_markup_from(dash)
    nc, page = dash.export("evil_export")
    text = page.read_text()          # the exported page: title, headings, figure JSON
    assert "<script>alert(" not in text and "<img src=x id=wbxss" not in text and "<svg onload" not in text


def test_user_problem_name_and_doc_are_escaped(tmp_path):
    import torch
    x = torch.randn(16, 2)
    y = (x[:, 0] > 0).long()
    prob = wb.problems.custom(torch.nn.Linear(2, 2), "cross-entropy", (x, y), name=P, doc=PAYLOADS[1])
    d = Dashboard(results_dir=tmp_path, problems=[prob])
    assert PAYLOADS[1] in shown(d.problem_note)                  # its doc, literally
    assert any(label.startswith(P) for label in d.problem_select.options)   # its name: option text (safe)
    assert_no_markup_from(d)


# -- the memory cap -------------------------------------------------------------------------------------------
def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.parametrize("problem", ["digits-mlp", "mnist1d-mlp"])   # info() that builds / a meta-device info()
def test_model_over_the_cap_is_refused_without_allocation(dash, monkeypatch, problem):
    dash.problem_select.value = problem
    dash.problem_form.widgets["width"].value = "8192"
    before = rss_mb()
    # nothing may be built for real: refuse at the estimate (a build on the meta device allocates nothing)
    import torch
    real_make = wb.problems.make

    def make(*a, **k):
        if torch.get_default_device().type != "meta":
            pytest.fail("problems.make called off the meta device")
        return real_make(*a, **k)

    monkeypatch.setattr(wb.problems, "make", make)
    monkeypatch.setattr(wb, "Run", lambda *a, **k: pytest.fail("Run built"))
    dash.problem_form.widgets["depth"].value = "4"          # ~200M parameters: 800 MB of weights alone
    assert dash.problem_note.visible and "model too large" in dash.problem_note.object   # said before Run
    assert dash.start() is None and dash.run is None
    assert dash.error.visible and "over this app" in shown(dash.error) and "2,048 MB" in shown(dash.error)
    assert rss_mb() - before < 150, "the model was allocated"
    n = L.model_params(problem, dash.problem_form.values())
    assert n > 150_000_000
    monkeypatch.undo()
    dash.problem_form.widgets["width"].value = "32"
    assert not (dash.problem_note.visible and "model too large" in dash.problem_note.object)


def test_generated_data_over_the_cap_is_refused_without_allocation(dash, monkeypatch):
    dash.problem_select.value = "gaussian-mixture"
    dash.problem_form.widgets["dim"].value = "4096"
    before = rss_mb()
    monkeypatch.setattr(wb, "Run", lambda *a, **k: pytest.fail("Run built"))
    dash.problem_form.widgets["n_train"].value = "200000"   # 200,000 x 4,096 floats: ~10 GB while drawn
    assert dash.problem_note.visible and "data too large" in dash.problem_note.object
    assert dash.start() is None and dash.run is None and "data too large" in shown(dash.error)
    assert rss_mb() - before < 150, "the data was drawn"
    n_params, data = L.problem_sizes("gaussian-mixture", {"dim": 4096, "n_train": 200000})
    # bytes per example from the meta build (4,096 float32 + one int64 label), x3 while drawn in float64
    assert data == pytest.approx((200000 + 512) * (4096 * 4 + 8) * L.DATA_FACTOR, rel=1e-6)
    assert n_params == 4096 * 64 + 64 + 64 * 64 + 64 + 64 * 4 + 4


def test_history_over_the_cap_names_steps(tmp_path, monkeypatch):
    monkeypatch.setenv(L.ENV_VAR, "256")
    d = Dashboard(results_dir=tmp_path)
    assert d.max_memory_mb == 256
    d.run_form.widgets["steps"].value = "1000000"           # 1.2 GB of history
    assert d.start() is None
    assert d.run_form.errors["steps"].visible and "steps=1,000,000" in d.run_form.messages["steps"]
    fit = int(d.run_form.messages["steps"].rsplit("about ", 1)[1].split()[0].replace(",", ""))
    assert 100_000 < fit < 256 * 2**20 / L.HISTORY_BYTES_PER_STEP
    d.run_form.widgets["steps"].value = str(fit - 1000)
    run = d.start()
    assert run is not None, d.error.object
    d.stop()
    run.wait(30)


def test_trajectory_every_step_over_the_cap_names_probes(dash):
    dash.problem_select.value = "digits-mlp"
    dash.run_form.widgets["steps"].value = "200000"
    dash.probe_checks["trajectory"].value = True
    dash.probe_forms["trajectory"].widgets["every"].value = "1"
    assert dash.start() is None and "probes:" in shown(dash.error)


def test_cap_settings_are_validated(tmp_path, monkeypatch):
    monkeypatch.setenv(L.ENV_VAR, "lots")
    with pytest.raises(ValueError, match=L.ENV_VAR):
        Dashboard(results_dir=tmp_path)
    monkeypatch.delenv(L.ENV_VAR)
    with pytest.raises(ValueError, match="max_memory_mb"):
        Dashboard(results_dir=tmp_path, max_memory_mb=0)
    assert Dashboard(results_dir=tmp_path, max_memory_mb=64).max_memory_mb == 64
    assert L.max_memory_mb() == L.DEFAULT_MAX_MEMORY_MB


def test_history_estimate_is_an_upper_bound_of_a_real_history():
    """The per-step constant is not invented: it bounds a real run's history and record (tracemalloc; measured
    ~240 B/step for the engine alone), leaving room for the views' copy, within a factor 6."""
    import tracemalloc
    prob = wb.problems.make("rosenbrock")
    wb.Run(prob, optimizer="adam", steps=5, device="cpu", progress=False).run()    # warm (lazy imports)
    tracemalloc.start()
    run = wb.Run(prob, optimizer="adam", steps=3000, device="cpu", progress=False)
    run.run()
    rec = run.record
    cur, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_step = cur / 3000
    assert rec.sizes["step"] == 3000
    assert per_step < L.HISTORY_BYTES_PER_STEP < per_step * 6, per_step


# -- files stay inside the results directory -------------------------------------------------------------------
def test_symlinks_out_of_the_folder_are_refused(dash, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.nc"
    evil_record(tmp_path, "real")                       # a real record, moved out of the folder
    (results / "real.nc").rename(secret)
    before = secret.read_bytes()
    (results / "evil.nc").symlink_to(secret)
    (results / "page.html").symlink_to(outside / "page.html")
    (results / "inside.nc").symlink_to(results / "nonexistent.nc")
    assert "evil" not in list_records(results)
    with pytest.raises(ValueError, match="not allowed"):
        safe_path(results, "evil", ".nc")
    assert dash.load("evil") is None and "not allowed" in shown(dash.file_error)
    dash.run_form.widgets["steps"].value = "5"
    dash.start()
    drive(dash)
    assert dash.export("evil") is None and "not allowed" in shown(dash.file_error)
    assert dash.export("page") is None and "not allowed" in shown(dash.file_error)
    assert secret.read_bytes() == before and not (outside / "page.html").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.nc"]
    ok = dash.export("fine")
    assert ok is not None and ok[0].parent == results.resolve()


def test_long_names_are_refused_inline(dash, tmp_path):
    dash.run_form.widgets["steps"].value = "5"
    dash.start()
    drive(dash)
    for name in ("x" * 101, "y" * 5000):
        assert dash.export(name) is None and "at most 100 characters" in shown(dash.file_error)
        assert dash.load(name) is None and dash.file_error.visible
    assert dash.export("z" * 100) is not None
    # PNG names add "_<view>" to a 100-character stem: said inline, not raised into the server
    out = dash._export_png("z" * 100, {"loss": dash.figures()["loss"]})
    assert out is None and dash.file_error.visible
    assert [p for p in (tmp_path / "results").iterdir() if p.suffix == ".png"] == []
