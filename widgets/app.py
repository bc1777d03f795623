"""Serving the dashboard: ``workbench app`` calls :func:`serve`. One ``Dashboard`` per browser session; the user's
own problems (``workbench app --problem file.py:make_problem``) are offered in every session's problem list."""
from __future__ import annotations

import threading
from pathlib import Path

import panel as pn

from .dashboard import Dashboard

__all__ = ["serve", "create_app"]


def create_app(results_dir: str | Path = "results", problems=()):
    """A fresh dashboard page for one session (a template around a new ``Dashboard``; ``problems``: the user's
    ``wb.Problem`` objects, the first selected); the session's runs are stopped when its browser tab goes away.
    Sessions share the Problem objects, never a model: every run and view works on its own copy."""
    pn.extension("plotly", notifications=True)
    dash = Dashboard(results_dir=results_dir, problems=problems)
    tmpl = pn.template.BootstrapTemplate(title="Optimization-dynamics workbench", sidebar_width=330,
                                         header_background="#1f3a5f")
    tmpl.sidebar.append(dash.layout[0])
    tmpl.main.append(dash.layout[1])
    tmpl.dashboard = dash  # reachable for tests / debugging
    try:
        pn.state.on_session_destroyed(lambda ctx: dash.stop())
    except Exception:  # not in a served session (e.g. built in a notebook)
        pass
    return tmpl


def _warm_up():
    """A few steps of a toy run before serving, so the first Run of the first session does not pay for lazy
    imports and first-call initialisation (measured: ~1-2 s on the first click otherwise); meanwhile a thread looks
    up the problem sizes for the problem list (seconds: some problems build their data or model to count it). Both
    finish before the server listens, so no session waits for them (a page request that waited would be retried
    and pile up behind it)."""
    import workbench as wb

    from .catalog import problem_info

    def sizes():
        for name in wb.problems.list():
            try:
                problem_info(name)
            except Exception:  # the problem list shows it without a size
                pass

    sizer = threading.Thread(target=sizes, name="workbench-sizes", daemon=True)
    sizer.start()
    try:
        from . import views
        prob = wb.problems.make("rosenbrock")
        run = wb.Run(prob, optimizer="adam", steps=3, device="cpu", progress=False,
                     probes=[wb.probes.Trajectory(every=1)])
        run.start().wait(30)
        views.loss_figure(views.RunTracker(run).snapshot())
    except Exception:  # warming up is an optimisation only
        pass
    sizer.join(300)


def serve(port: int = 5006, address: str = "127.0.0.1", show: bool = False, results_dir: str | Path = "results",
          allow_websocket_origin=None, prefix: str = "", threaded: bool = False, problems=(), **kwargs):
    """Serve the dashboard on ``address:port`` (127.0.0.1 by default); ``problems``: the user's ``wb.Problem``
    objects to offer (the first selected). Blocks unless ``threaded=True``."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in [0, 65535]; got {port!r}")
    problems = list(problems or ())
    Dashboard._user_problems(problems)      # TypeError for anything that is not a Problem, before serving
    _warm_up()
    origins = list(allow_websocket_origin or []) + [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    return pn.serve({"/": lambda: create_app(results_dir, problems)}, port=port, address=address, show=show,
                    allow_websocket_origin=origins, prefix=prefix or "", threaded=threaded,
                    title="Optimization-dynamics workbench", **kwargs)
