"""The dashboard's page layout: the sidebar of controls and the tabs of views, arranged from a ``Dashboard``'s
widgets (it owns them; this module only places them)."""
from __future__ import annotations

import panel as pn

__all__ = ["build_layout"]


def build_layout(dash, probe_rows):
    """``pn.Row(sidebar, tabs)`` for ``dash`` (a ``widgets.dashboard.Dashboard``); sets ``dash.sweep_view``,
    ``dash.runs_view`` and ``dash.tabs``."""
    card = dict(collapsed=True, sizing_mode="stretch_width")
    controls = pn.Column(
        "### Preset", dash.preset_select, dash.preset_button, dash.preset_doc,
        "### Problem", dash.problem_select, dash.problem_note,
        pn.Card(dash.problem_box, title="problem options", **card),
        "### Optimizer", dash.optimizer_select, dash.hparam_box,
        pn.Card(dash.schedule_form.layout, title="lr schedule", **card),
        "### Run", dash.device_select, dash.device_error, dash.run_form.layout,
        pn.Card(pn.Column(*probe_rows, sizing_mode="stretch_width"), title="probes (what to measure, how often)",
                **card),
        pn.Row(dash.run_button, dash.pause_button, dash.step_button, margin=0),
        pn.Row(dash.stop_button, dash.reset_button, margin=0),
        dash.error,
        "### Compare", pn.Row(dash.pin_button, dash.clear_pins_button, margin=0), dash.pins_text,
        "### Files", dash.export_name, dash.export_button, dash.export_png,
        pn.Row(dash.load_select, pn.Column(pn.Spacer(height=18), pn.Row(dash.load_button, dash.refresh_button,
                                                                        margin=0), margin=0), margin=0),
        dash.file_status, dash.file_error, width=310, css_classes=["wb-controls"])
    views = pn.Column(dash.status, *[p for k, p in dash.panes.items() if k != "surface"], sizing_mode="stretch_width")
    # the Sweep and Runs views are tabs beside the Train view (they use the controls on the left)
    from .runs_view import RunsView
    from .sweep_view import SweepView
    dash.sweep_view = SweepView(dash)
    dash.runs_view = RunsView(dash)
    dash.tabs = pn.Tabs(("Train", views), ("Sweep", dash.sweep_view.layout), ("Runs", dash.runs_view.layout),
                        dynamic=False, sizing_mode="stretch_width", css_classes=["wb-tabs"])
    dash.tabs.param.watch(lambda e: dash.runs_view.refresh() if e.new == 2 else None, "active")
    return pn.Row(controls, dash.tabs, sizing_mode="stretch_width")
