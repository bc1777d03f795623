"""What a served page costs: collapsed sidebar cards are filled when first opened (widgets.layout.lazy_card), and
the BokehJS bundles the dashboard never uses are left out of the page (widgets.app._lean_page_resources)."""
from __future__ import annotations

import panel as pn
from bokeh.document import Document

from widgets.dashboard import Dashboard
from widgets.layout import lazy_card


def _models(obj) -> int:
    return len(list(obj.get_root(Document()).references()))


def test_a_lazy_card_gets_its_contents_when_first_opened_and_keeps_them():
    a, b = pn.widgets.TextInput(value="x"), pn.pane.HTML("y")
    card = lazy_card(a, b, title="t", collapsed=False)          # a lazy card always starts collapsed
    assert card.collapsed and list(card.objects) == []
    a.value = "changed while closed"
    card.collapsed = False
    assert list(card.objects) == [a, b] and card.objects[0].value == "changed while closed"
    card.collapsed = True
    card.collapsed = False
    assert list(card.objects) == [a, b]                          # attached once


def test_served_dashboards_send_the_collapsed_cards_only_when_opened(tmp_path):
    eager = Dashboard(results_dir=tmp_path)
    lazy = Dashboard(results_dir=tmp_path, lazy_cards=True)
    n_eager, n_lazy = _models(eager.layout[0]), _models(lazy.layout[0])
    assert n_lazy < 0.6 * n_eager, (n_lazy, n_eager)
    # every control is still there, and the probes card fills when opened
    cards = [o for o in lazy.layout[0].objects if isinstance(o, pn.Card)]
    probes = next(c for c in cards if c.title.startswith("Probes"))
    assert not probes.objects
    probes.collapsed = False
    assert lazy.probe_checks["sharpness"] in list(probes.select(pn.widgets.Checkbox))
    assert _models(lazy.layout[0]) > n_lazy


def test_the_served_page_leaves_out_mathjax_and_bokeh_webgl(tmp_path):
    import panel.io.server as pserver

    from widgets.app import LEAN_DROPPED, _lean_page_resources
    from bokeh.resources import Resources

    before = pserver.bundle_resources
    try:
        assert _lean_page_resources() and _lean_page_resources()      # idempotent
        wrapped = pserver.bundle_resources
        assert getattr(wrapped, "_workbench_lean", False)
        doc = Document()
        Dashboard(results_dir=tmp_path).layout.server_doc(doc)
        res = Resources(mode="server", root_url="/", components=["bokeh", "bokeh-gl", "bokeh-widgets", "bokeh-tables",
                                                                 "bokeh-mathjax"])      # a Bokeh server's set
        plain = " ".join(u.url for u in before(doc.roots, res, enable_mathjax=True).js_files)
        assert "bokeh-mathjax" in plain and "bokeh-gl" in plain          # what Panel alone would send
        js = " ".join(u.url for u in wrapped(doc.roots, res).js_files)      # served pages: see the browser test
        for name in LEAN_DROPPED:
            assert name not in js, (name, js)
        assert "bokeh-widgets" in js and "bokeh-tables" in js           # what panel.min.js needs stays
    finally:
        pserver.bundle_resources = before


# -- the served app's partial plotly.js bundle (widgets.plotly_bundle) ----------------------------------------------

def _bundle_traces(text: str) -> set[str]:
    import re

    return set(re.findall(r'name:"(\w+)",basePlotModule', text))


def test_the_shipped_plotly_bundle_registers_exactly_the_listed_traces_at_panels_version():
    from widgets.plotly_bundle import PLOTLY_VERSION, TRACES, bundle_path

    text = bundle_path().read_text(encoding="utf-8")
    assert text.startswith(f"/*! plotly.js {PLOTLY_VERSION} ") and ",".join(TRACES) in text[:400]
    assert _bundle_traces(text) == set(TRACES)
    assert len(text) < 0.5 * 4.7e6              # the point of it: well under half of the full bundle
    from panel.io.resources import BUNDLE_DIR
    from panel.models.plotly import PLOTLY_VERSION as panels

    full = _bundle_traces((BUNDLE_DIR / "plotlyplot" / f"plotly-{panels}.min.js").read_text(encoding="utf-8"))
    assert set(TRACES) < full and {"bar", "scattergl", "choropleth"} <= full - set(TRACES)    # the regex sees traces


def _dashboard_trace_types() -> set[str]:
    """Every plotly trace type the dashboard's code (widgets/, and landscapes/ whose figures it shows) can make:
    ``go.<Trace>(...)`` calls and dict literals with a string "type" and trace data ("x", "y", "z" or
    "dimensions"; shapes have "x0", axes neither)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = set()
    for path in [*(root / "widgets").glob("*.py"), *(root / "landscapes").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "go"
                    and node.func.attr not in ("Figure", "FigureWidget", "Layout")):
                found.add(node.func.attr.lower())
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if "type" in keys and keys & {"x", "y", "z", "dimensions"}:
                    v = node.values[[getattr(k, "value", None) for k in node.keys].index("type")]
                    if isinstance(v, ast.Constant) and isinstance(v.value, str):
                        found.add(v.value)
                    elif isinstance(v, ast.IfExp):          # "scatter" if z is None else "scatter3d"
                        found |= {b.value for b in (v.body, v.orelse) if isinstance(b, ast.Constant)}
    return found


def test_every_trace_type_the_dashboard_draws_is_in_the_bundle():
    from widgets.plotly_bundle import TRACES

    used = _dashboard_trace_types()
    assert {"scatter", "heatmap", "surface", "scatter3d", "parcoords"} <= used        # the scan finds them
    assert used <= set(TRACES), used - set(TRACES)


def test_the_serving_process_loads_the_bundle_or_leaves_panel_alone(monkeypatch):
    from panel.models import plotly as pmodel

    from widgets.plotly_bundle import ASSETS, PLOTLY_VERSION, ROUTE, bundle_path, use_lean_plotly

    def keep_panels():                                  # monkeypatch restores Panel's lists after the test
        for name in ("__javascript_raw__", "__css_raw__"):
            monkeypatch.setattr(pmodel.PlotlyPlot, name, list(getattr(pmodel.PlotlyPlot, name)))

    keep_panels()
    panel_js = list(pmodel.PlotlyPlot.__javascript_raw__)
    monkeypatch.setattr(pmodel, "PLOTLY_VERSION", "0.0.1")          # a Panel built against another plotly.js
    assert use_lean_plotly() == {} and pmodel.PlotlyPlot.__javascript_raw__ == panel_js
    monkeypatch.undo()
    if pmodel.PLOTLY_VERSION != PLOTLY_VERSION:     # this Panel is one: the bundle must be rebuilt to be used
        assert use_lean_plotly() == {}
        return
    keep_panels()
    assert use_lean_plotly() == {ROUTE: str(ASSETS)}
    assert pmodel.PlotlyPlot.__javascript__ == [f"{ROUTE}/{bundle_path().name}"]
    assert pmodel.PlotlyPlot.__css__ == []
