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
