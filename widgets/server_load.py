"""How the sessions of one dashboard server share its CPU: live views redraw less often as more sessions of the
process draw a live run (``render_every``), and a page being built and rendered holds back the other sessions' live
redraws (``page_loading`` / ``loading_now``). Used by ``widgets.dashboard_live`` and ``widgets.app``."""
from __future__ import annotations

import time

__all__ = ["render_every", "page_loading", "loading_now", "SHARED_LIVE", "LOAD_HOLD_S"]

SHARED_LIVE = 2             # live redraw intervals are stretched x (live sessions in this process / SHARED_LIVE): six
                            # sessions drawing at 2 Hz each kept a 2-core server too busy to serve a new page
_LIVE: set = set()          # ids of the dashboards with a live run in this process
LOAD_HOLD_S = 4.0           # a page being loaded holds back the other sessions' live redraws at most this long (a
                            # request that never opens the page, e.g. a health check's GET, holds them this long too)
_LOADING: dict = {}         # pages of this process being built and rendered: token -> perf_counter() at the start


def render_every(base: float) -> float:
    """``base`` stretched by how many sessions of this process are drawing a live run now."""
    return base * max(1.0, len(_LIVE) / SHARED_LIVE)


def page_loading(token, loading: bool = True) -> None:
    """Say that the page ``token`` started (``loading=True``) or finished loading. While a page of this process is
    loading (at most ``LOAD_HOLD_S``), the live views of other sessions hold their redraws (their runs go on and
    the next redraw shows every step): with six runs drawing, their redraws in the server and in the browsers took
    the CPU a new page needs (measured on 2 cores)."""
    if loading:
        _LOADING[token] = time.perf_counter()
    else:
        _LOADING.pop(token, None)


def loading_now() -> bool:
    """True while a page of this process is loading (entries older than ``LOAD_HOLD_S`` are dropped)."""
    now = time.perf_counter()
    for key, t0 in list(_LOADING.items()):
        if now - t0 > LOAD_HOLD_S:
            _LOADING.pop(key, None)
    return bool(_LOADING)
