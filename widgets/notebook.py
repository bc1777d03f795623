"""ipywidgets views for notebooks: plotly ``FigureWidget`` s a cell updates live from a run's callback.

    from widgets import LiveLoss
    live = LiveLoss()
    live                                                  # display it in a cell
    run = wb.train(prob, "adam", lr=1e-3, steps=2000, callback=live)   # or callback=live.callback
    live.finish()                                         # flush the last values

``LiveMetrics(keys)`` plots any per-step values the run passes to its callback (``loss``, ``lr``, ``grad_norm``
and every probe variable on the steps the probe measures, e.g. ``sharpness`` and ``sharpness_threshold``).
``live_callback(fig, keys)`` turns any FigureWidget into such a callback. Updates are batched: the widget
redraws at most every ``every_s`` seconds (and long series are thinned), so the run is not slowed down.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from .views import thin

__all__ = ["LiveMetrics", "LiveLoss", "LiveSharpness", "live_callback"]


def _figure_widget():
    try:
        import plotly.graph_objects as go
        return go.FigureWidget()
    except ImportError as exc:  # plotly >= 6 needs anywidget for FigureWidget
        raise ImportError("plotly FigureWidget needs the 'anywidget' package (pip install anywidget)") from exc


class _Series:
    def __init__(self):
        self.x: list[float] = []
        self.y: list[float] = []


def live_callback(fig, keys: Sequence[str] = ("loss",), every_s: float = 0.25, max_points: int = 1500,
                  names: dict | None = None):
    """A run callback that appends ``row[key]`` (for each of ``keys`` present at that step) to the trace named
    ``key`` of the FigureWidget ``fig`` (created if missing), redrawing at most every ``every_s`` seconds.

    The returned callable has ``.flush()`` (draw everything now) and ``.data`` (the collected series)."""
    if isinstance(keys, str):
        keys = (keys,)
    keys = list(keys)
    if not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"keys must be a non-empty list of value names; got {keys!r}")
    if not (isinstance(every_s, (int, float)) and every_s >= 0):
        raise ValueError(f"every_s must be a number >= 0; got {every_s!r}")
    names = names or {}
    series = {k: _Series() for k in keys}
    state = {"last": 0.0}
    traces = {}
    for k in keys:
        found = [t for t in fig.data if t.name == names.get(k, k)]
        if found:
            traces[k] = found[0]
        else:
            fig.add_scatter(x=[], y=[], mode="lines", name=names.get(k, k))
            traces[k] = fig.data[-1]

    def flush():
        with fig.batch_update():
            for k, s in series.items():
                x, y = thin(np.asarray(s.x), np.asarray(s.y, dtype=float), max_points)
                traces[k].x = x
                traces[k].y = y
        state["last"] = time.perf_counter()

    def callback(row: dict):
        step = row.get("step", len(series[keys[0]].x))
        for k in keys:
            if k in row:
                try:
                    v = float(row[k])
                except (TypeError, ValueError):
                    continue
                series[k].x.append(step)
                series[k].y.append(v if math.isfinite(v) else math.nan)
        if time.perf_counter() - state["last"] >= every_s:
            flush()
        return None

    callback.flush = flush
    callback.data = series
    return callback


class LiveMetrics:
    """A FigureWidget with one live trace per key; pass the object itself as a run's ``callback``."""

    def __init__(self, keys: Sequence[str] = ("loss",), title: str = "training", log: bool = False,
                 every_s: float = 0.25, max_points: int = 1500, height: int = 320):
        self.figure = _figure_widget()
        self.figure.update_layout(title=title, xaxis_title="step", height=height, template="plotly_white",
                                  yaxis_type="log" if log else "linear", margin=dict(l=50, r=10, t=40, b=40))
        self.callback = live_callback(self.figure, keys, every_s=every_s, max_points=max_points)

    def __call__(self, row: dict):
        return self.callback(row)

    def finish(self):
        """Draw every collected value (call after the run)."""
        self.callback.flush()
        return self

    def mark(self, step: int, text: str = ""):
        """A vertical marker (e.g. a hot swap) at ``step``."""
        self.figure.add_vline(x=step, line_dash="dot", line_color="#555", annotation_text=text)

    @property
    def data(self):
        return {k: (list(s.x), list(s.y)) for k, s in self.callback.data.items()}

    def _ipython_display_(self):
        from IPython.display import display
        display(self.figure)


class LiveLoss(LiveMetrics):
    """The training loss (log scale) live in a notebook cell."""

    def __init__(self, title: str = "training loss", log: bool = True, **kw):
        super().__init__(("loss",), title=title, log=log, **kw)


class LiveSharpness(LiveMetrics):
    """Sharpness against the stability threshold (needs ``wb.probes.Sharpness`` in the run's probes)."""

    def __init__(self, title: str = "sharpness vs stability threshold", **kw):
        super().__init__(("sharpness", "sharpness_threshold"), title=title, **kw)
