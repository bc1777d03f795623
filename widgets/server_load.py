"""How the sessions of one dashboard server share its CPU: live views redraw less often as more sessions of the
process draw a live run (``render_every``). Used by ``widgets.dashboard_live`` and ``widgets.dashboard``."""
from __future__ import annotations

__all__ = ["render_every", "SHARED_LIVE"]

SHARED_LIVE = 2             # live redraw intervals are stretched x (live sessions in this process / SHARED_LIVE): six
                            # sessions drawing at 2 Hz each kept a 2-core server too busy to serve a new page
_LIVE: set = set()          # ids of the dashboards with a live run in this process


def render_every(base: float) -> float:
    """``base`` stretched by how many sessions of this process are drawing a live run now."""
    return base * max(1.0, len(_LIVE) / SHARED_LIVE)
