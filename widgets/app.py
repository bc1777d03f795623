"""Serving the dashboard: ``workbench app`` calls :func:`serve`. One ``Dashboard`` per browser session; the user's
own problems (``workbench app --problem file.py:make_problem``) are offered in every session's problem list."""
from __future__ import annotations

import threading
from pathlib import Path

import panel as pn

from .dashboard import DEFAULT_PROBES, Dashboard
from .presets import DEFAULT_PRESET

__all__ = ["serve", "create_app", "check_listen"]


def create_app(results_dir: str | Path = "results", problems=(), max_memory_mb: float | None = None, pool=None):
    """A fresh dashboard page for one session (a template around a new ``Dashboard``; ``problems``: the user's
    ``wb.Problem`` objects, the first selected; ``pool``: the server's ``RunPool``, whose worker processes train every
    session's runs). The page's URL carries the experiment (a shared link reopens it); the session's runs are
    stopped and its callbacks removed when its browser tab goes away. Sessions share the Problem objects, never a
    model: every run and view works on its own copy."""
    pn.extension("plotly", notifications=True)
    dash = Dashboard(results_dir=results_dir, problems=problems, max_memory_mb=max_memory_mb, pool=pool,
                     lazy_cards=True)
    query = getattr(getattr(pn.state, "location", None), "search", "") or ""
    if not problems and not query.strip("?"):   # the first Run should show something worth seeing (presets stay
        dash.apply_preset(DEFAULT_PRESET, race=False)                                      # one click away)
        dash.preset_select.value = DEFAULT_PRESET
        for name, cb in dash.probe_checks.items():     # the probes stay the usual ones for the next problem
            cb.value = name in DEFAULT_PROBES
    dash.sync_url()
    tmpl = pn.template.BootstrapTemplate(title="Optimization-dynamics workbench", sidebar_width=330,
                                         header_background="#1f3a5f")
    tmpl.sidebar.append(dash.layout[0])
    tmpl.main.append(dash.layout[1])
    tmpl.dashboard = dash  # reachable for tests / debugging
    try:
        pn.state.on_session_destroyed(lambda ctx: (dash.close(), _release_memory_soon()))
    except Exception:  # not in a served session (e.g. built in a notebook)
        pass
    return tmpl


LEAN_DROPPED = ("bokeh-mathjax", "bokeh-gl")   # panel.min.js imports bokeh-tables: it stays


def _lean_page_resources() -> bool:
    """Served pages leave out the BokehJS bundles the dashboard never uses: MathJax (1.8 MB; Panel adds it for any
    HTML pane, which here renders no TeX) and Bokeh's WebGL (0.2 MB; plotly brings its own): 2 MB of the ~9 MB of
    script a new page parses (the tables bundle stays: panel.min.js imports it). Patches
    ``panel.io.server.bundle_resources`` once, in the serving process only (notebooks are untouched); returns False,
    leaving Panel's behaviour, when its internals are not as expected."""
    try:
        import panel.io.server as pserver
    except ImportError:
        return False
    orig = getattr(pserver, "bundle_resources", None)
    if orig is None or getattr(orig, "_workbench_lean", False):
        return orig is not None

    def bundle_resources(roots, resources, *args, **kwargs):
        try:
            comps = list(resources.components)
            resources = resources.clone(components=[c for c in comps if c not in LEAN_DROPPED])
            kwargs.setdefault("enable_mathjax", False)
        except (AttributeError, TypeError):
            pass
        return orig(roots, resources, *args, **kwargs)

    bundle_resources._workbench_lean = True
    pserver.bundle_resources = bundle_resources
    return True


def _release_memory_soon(delay_s: float = 3.0):
    """A session ended: once Bokeh has dropped its document, collect it and hand the freed heap back to the OS
    (glibc keeps freed small blocks otherwise, and a server's RSS only ever grows with the sessions it saw)."""
    def release():
        import ctypes
        import gc
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (macOS, musl): the collection is all we can do
            pass

    t = threading.Timer(delay_s, release)
    t.daemon = True
    t.start()


def _warm_up(pool=None):
    """Before serving: the server's worker pool trains a few steps of a toy run (its fork server imports torch and
    the workbench once; without it the first Run of the first session pays ~1-2 s of lazy imports), and a thread
    looks up the problem sizes for the problem list (seconds: some problems build their data or model to count it).
    Both finish before the server listens, so no session waits for them (a page request that waited would be
    retried and pile up behind it)."""
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
    spec = {"problem": {"name": "rosenbrock", "seed": 0, "options": {}}, "optimizer": "adam", "hparams": {},
            "schedule": {}, "run": {"steps": 3, "seed": 0, "batch_size": None}, "device": "cpu", "probes": {},
            "kind": "function"}
    try:
        from . import views
        from .runspec import build_run
        from .worker import LocalRun
        if pool is not None:
            pool.warm_up(spec, timeout=120)
        h = LocalRun(build_run(spec)[1])     # the views' first call, and a run for notebooks' inline use
        h.wait(30)
        views.loss_figure(h.snapshot())
    except Exception:  # warming up is an optimisation only
        pass
    sizer.join(300)


def check_listen(address: str, port: int) -> None:
    """ValueError (one line) unless this machine can listen on ``address:port`` now: a name that does not resolve,
    an address that is not this machine's, a port in use or reserved. Checked before the warm-up, so a busy port is
    said at once."""
    import socket

    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"address must be a host name or IP address of this machine; got {address!r}")
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"address={address!r} is not a host name or IP address this machine can listen on "
                         f"({getattr(exc, 'strerror', None) or exc})") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as the server itself binds
        try:
            s.bind(sockaddr)
        except OSError as exc:
            import errno

            hint = {errno.EADDRINUSE: "another server uses the port: choose another with --port",
                    errno.EADDRNOTAVAIL: "not an address of this machine: use 127.0.0.1, 0.0.0.0 (every interface) "
                                         "or one of its own addresses with --address",
                    errno.EACCES: "ports below 1024 need administrator rights: choose another with --port"}
            raise ValueError(f"cannot listen on {address}:{port}: {exc.strerror or exc} "
                             f"({hint.get(exc.errno, 'choose another --address or --port')})") from None


def serve(port: int = 5006, address: str = "127.0.0.1", show: bool = False, results_dir: str | Path = "results",
          allow_websocket_origin=None, prefix: str = "", threaded: bool = False, problems=(),
          max_memory_mb: float | None = None, workers: int | None = None, worker_priority: str | None = None,
          **kwargs):
    """Serve the dashboard on ``address:port`` (127.0.0.1 by default); ``problems``: the user's ``wb.Problem``
    objects to offer (the first selected); ``max_memory_mb``: the largest estimated memory of one run a session
    may start (default ``$WORKBENCH_APP_MAX_MEMORY_MB`` or 2048; see :mod:`widgets.limits`). Blocks unless
    ``threaded=True``. ``workers``: runs that train at once, each in its own worker process (default
    ``$WORKBENCH_APP_WORKERS`` or 8; later runs are queued and say so); ``worker_priority``: "nice" or "idle" (see
    ``widgets.pool.RunPool``). A port in use or an address this machine cannot listen on is a ValueError before anything
    else starts."""
    from .limits import max_memory_mb as _cap

    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in [0, 65535]; got {port!r}")
    max_memory_mb = _cap(max_memory_mb)      # ValueError for a bad cap (or a bad environment variable)
    problems = list(problems or ())
    Dashboard._user_problems(problems)      # TypeError for anything that is not a Problem, before serving
    from .pool import RunPool
    pool = RunPool(max_workers=workers, priority=worker_priority)   # ValueError for a bad value, before anything
    check_listen(address, port)
    _lean_page_resources()
    from .plotly_bundle import use_lean_plotly
    static = {**use_lean_plotly(), **kwargs.pop("static_dirs", {})}
    _warm_up(pool)
    server = None
    origins = list(allow_websocket_origin or []) + [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    # a closed tab's session (its runs, views and pins) is freed within ~10 s, not Bokeh's default ~30 s
    kwargs.setdefault("check_unused_sessions_milliseconds", 2000)
    kwargs.setdefault("unused_session_lifetime_milliseconds", 8000)
    try:
        server = pn.serve({"/": lambda: create_app(results_dir, problems, max_memory_mb, pool)}, port=port,
                          address=address, show=show, allow_websocket_origin=origins, prefix=prefix or "",
                          threaded=threaded, title="Optimization-dynamics workbench", static_dirs=static, **kwargs)
    finally:
        if not threaded or server is None:      # a blocking serve returned (or failed): end the workers
            pool.shutdown()
    server.run_pool = pool                  # a threaded server's caller shuts the pool down (tests)
    return server
