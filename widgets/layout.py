"""The dashboard's page layout: the sidebar of controls (Run first, so it is above the fold on a 1280x800 screen;
every group below it collapses) and the tabs of views (Train / Spectrum / Landscape / Sweep / Runs), whose plots sit
in a responsive grid that wraps to one column on a narrow window. A ``Dashboard`` owns the widgets; this module only
places them."""
from __future__ import annotations

import panel as pn

__all__ = ["build_layout", "lazy_card", "TABS"]

TABS = ("Train", "Spectrum", "Landscape", "Sweep", "Runs")
_CELL = {"flex": "1 1 460px", "min-width": "360px"}


def _grid(*panes):
    """A wrapping grid of plots: two or more side by side where the window is wide enough, one where it is not."""
    for p in panes:
        p.styles = {**(p.styles or {}), **_CELL}
    return pn.FlexBox(*panes, flex_wrap="wrap", align_content="flex-start", sizing_mode="stretch_width",
                      css_classes=["wb-grid"])


def lazy_card(*objects, **kwargs):
    """A collapsed ``pn.Card`` whose contents join it when it is first opened: a served page then sends and renders
    only the groups that are open (the collapsed Probes, Pinned runs, Files and option cards are ~40% of the
    sidebar's models). The widgets exist from the start and keep their values; only their views wait."""
    card = pn.Card(**{**kwargs, "collapsed": True})

    def attach(event):
        if not event.new and not card.objects:
            card.objects = list(objects)

    card.param.watch(attach, "collapsed")
    return card


def build_layout(dash, probe_rows, lazy: bool = False):
    """``pn.Row(sidebar, main)`` for ``dash`` (a ``widgets.dashboard.Dashboard``); sets ``dash.sweep_view``,
    ``dash.runs_view`` and ``dash.tabs``. ``lazy``: collapsed cards get their contents when first opened (served
    pages; see :func:`lazy_card`)."""
    card = dict(collapsed=True, sizing_mode="stretch_width", margin=(4, 0))
    open_card = dict(card, collapsed=False)
    Closed = lazy_card if lazy else pn.Card
    controls = pn.Column(
        pn.Row(dash.run_button, dash.pause_button, dash.step_button, dash.stop_button, margin=0),
        pn.Row(dash.reset_button, dash.pin_button, dash.clear_pins_button, margin=0),
        dash.error,
        pn.Card(dash.preset_select, dash.preset_button, dash.preset_doc, title="Preset", **open_card,
                css_classes=["wb-card-preset"]),
        pn.Card(dash.problem_select, dash.problem_note, Closed(dash.problem_box, title="problem options", **card),
                title="Problem", **open_card, css_classes=["wb-card-problem"]),
        pn.Card(dash.optimizer_select, dash.hparam_box, Closed(dash.schedule_form.layout, title="lr schedule",
                                                                **card),
                title="Optimizer", **open_card, css_classes=["wb-card-optimizer"]),
        pn.Card(dash.device_select, dash.device_error, dash.run_form.layout, title="Run options", **open_card,
                css_classes=["wb-card-run"]),
        Closed(pn.Column(*probe_rows, sizing_mode="stretch_width"), title="Probes (what to measure, how often)",
                **card, css_classes=["wb-card-probes"]),
        Closed(dash.pins_text, title="Pinned runs", **card, css_classes=["wb-card-pins"]),
        Closed(dash.export_name, dash.export_button, dash.export_png,
                pn.Row(dash.load_select, pn.Column(pn.Spacer(height=18), pn.Row(dash.load_button, dash.refresh_button,
                                                                                margin=0), margin=0), margin=0),
                dash.file_status, dash.file_error, title="Files", **card, css_classes=["wb-card-files"]),
        width=310, css_classes=["wb-controls"])
    P = dash.panes
    train = _grid(P["loss"], P["path"], P["sharpness"], P["accuracy"], P["norms"])
    spectrum = pn.Column(pn.pane.HTML("Top-k eigenvalues, the spectral density (SLQ) and the gradient's share in the "
                                      "top-k eigenspace appear here when their probes run (sidebar: Probes).",
                                      styles={"font-size": "12px", "color": "#555"}),
                         _grid(P["eigs"], P["spectrum"], P["subspace"]), sizing_mode="stretch_width")
    landscape = pn.Column(pn.Row(dash.landscape_mode, dash.replay_slider, sizing_mode="stretch_width"),
                          dash.landscape_note, P["landscape"], sizing_mode="stretch_width",
                          css_classes=["wb-landscape"])
    # the Sweep and Runs views are tabs beside the Train view (they use the controls on the left)
    from .runs_view import RunsView
    from .sweep_view import SweepView
    dash.sweep_view = SweepView(dash)
    dash.runs_view = RunsView(dash)
    dash.tabs = pn.Tabs(("Train", train), ("Spectrum", spectrum), ("Landscape", landscape),
                        ("Sweep", dash.sweep_view.layout), ("Runs", dash.runs_view.layout),
                        dynamic=True, sizing_mode="stretch_width", css_classes=["wb-tabs"])
    runs = TABS.index("Runs")
    dash.tabs.param.watch(lambda e: dash.runs_view.refresh() if e.new == runs else None, "active")
    main = pn.Column(dash.status, dash.tabs, sizing_mode="stretch_width", css_classes=["wb-main"])
    return pn.Row(controls, main, sizing_mode="stretch_width")
