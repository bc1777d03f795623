"""Shared style of the live figures: colours and symbols of pinned runs, the axis style and layout skeleton, series
thinning, log-axis ticks and the symmetric-log transform (split out of :mod:`widgets.views`; imported from there)."""
from __future__ import annotations

import numpy as np

from .safe import plot_text

__all__ = ["MAX_POINTS", "PIN_COLORS", "PIN_SYMBOLS", "PIN_PREFIX", "thin", "plotly_template", "log_ticks",
           "needs_symlog", "symlog", "symlog_ticks"]

MAX_POINTS = 1500
PIN_COLORS = ["#7f7f7f", "#bcbd22", "#17becf", "#8c564b", "#e377c2", "#9467bd", "#2ca02c", "#d62728"]
PIN_SYMBOLS = ["circle-open", "square-open", "diamond-open", "triangle-up-open", "x-thin-open", "cross-thin-open",
               "star-open", "hexagon-open"]
PIN_PREFIX = "pinned: "      # plain text (an emoji pin rendered as an empty box where the font lacks it)
_TEMPLATE = None


def thin(x, y, max_points: int = MAX_POINTS):
    """Thin a long series for display keeping each bucket's min and max (loss spikes stay visible), and its last point
    (the line ends at the last step recorded, not inside the last bucket); O(n) numpy."""
    x, y = np.asarray(x), np.asarray(y, dtype=float)
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max_points // 2
    edges = np.linspace(0, n, buckets + 1).astype(int)
    starts = edges[:-1]
    yf = np.where(np.isfinite(y), y, np.nan)
    lo_fill = np.where(np.isnan(yf), np.inf, yf)
    hi_fill = np.where(np.isnan(yf), -np.inf, yf)
    ymin = np.minimum.reduceat(lo_fill, starts)
    ymax = np.maximum.reduceat(hi_fill, starts)
    mid = (starts + edges[1:]) // 2
    xs = np.stack([x[starts], x[np.minimum(mid, n - 1)]], 1).reshape(-1)
    ys = np.stack([ymin, ymax], 1).reshape(-1)
    ys = np.where(np.isfinite(ys), ys, np.nan)
    last = y[n - 1] if np.isfinite(y[n - 1]) else np.nan
    return np.append(xs, x[n - 1]), np.append(ys, last)

# exponentformat "power": 2×10⁻⁶, never SI prefixes ("2µ", "10n") on any axis
_AXIS = {"gridcolor": "#EBF0F8", "zerolinecolor": "#EBF0F8", "linecolor": "#444", "automargin": True,
         "exponentformat": "power"}


def plotly_template() -> dict:
    """The plotly_white template as plain JSON (for exports; live figures use the few style keys in _layout,
    since the full template is ~7 kB of JSON re-serialized on every redraw)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        import plotly.io as pio
        _TEMPLATE = pio.templates["plotly_white"].to_plotly_json()
    return _TEMPLATE


# -- figure helpers ----------------------------------------------------------------------------------------
def _layout(title, ytitle, log=False, xtitle="step"):
    return {"paper_bgcolor": "white", "plot_bgcolor": "white", "margin": {"l": 55, "r": 10, "t": 32, "b": 40},
            "colorway": ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692"],
            "title": {"text": plot_text(title), "font": {"size": 14}}, "xaxis": {"title": {"text": xtitle}, **_AXIS},
            "yaxis": {"title": {"text": ytitle}, "type": "log" if log else "linear", **_AXIS},
            "legend": {"orientation": "h", "y": -0.22}, "uirevision": "keep", "shapes": [], "annotations": []}


def _sup(k: int) -> str:
    return f"10<sup>{'−' if k < 0 else ''}{abs(k)}</sup>"


def log_ticks(*series, max_ticks: int = 8) -> dict:
    """Tick settings for a log axis over the positive finite values of ``series``: powers of ten written as
    10<sup>k</sup> (every n-th decade when there are many), or 1-2-5 steps within a short range written as
    2×10<sup>k</sup>; never bare minor digits or SI prefixes ("10n"). Empty when there is nothing positive."""
    vals = [np.asarray(a, dtype=float).ravel() for a in series if a is not None and len(a)]
    vals = np.concatenate(vals) if vals else np.array([])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    out = {"exponentformat": "power", "showexponent": "all", "minor": {"showgrid": False}}
    if not vals.size:
        return out
    lo, hi = float(np.log10(vals.min())), float(np.log10(vals.max()))
    k0, k1 = int(np.floor(lo)), int(np.ceil(hi))
    decades = [k for k in range(k0, k1 + 1) if lo - 1e-9 <= k <= hi + 1e-9]
    if len(decades) >= 2:
        step = max(1, int(np.ceil(len(range(k0, k1 + 1)) / max_ticks)))
        ks = [k for k in range(k0, k1 + 1) if k % step == 0]
        vals_t = [10.0 ** k for k in ks]
        text = [_sup(k) for k in ks]
    else:
        vals_t, text = [], []
        for k in range(k0 - 1, k1 + 1):
            for m in (1, 2, 5):
                v = m * 10.0 ** k
                if 10 ** lo / 1.5 <= v <= 10 ** hi * 1.5:
                    vals_t.append(v)
                    text.append(_sup(k) if m == 1 else f"{m}×{_sup(k)}")
    out.update({"tickmode": "array", "tickvals": vals_t, "ticktext": text})
    return out


def needs_symlog(*series) -> bool:
    """True when the values go negative and their magnitudes reach more than 6 decades above where the curves
    start (an unbounded loss, e.g. the saddle running off to -1e29): a linear axis would flatten every other
    curve. (Measured from the starting values, so a loss that merely crosses zero does not count.)"""
    vals = [np.asarray(a, dtype=float).ravel() for a in series if a is not None and len(a)]
    vals = [v[np.isfinite(v)] for v in vals]
    vals = [v for v in vals if v.size]
    if not vals:
        return False
    v = np.concatenate(vals)
    if not (v < 0).any():
        return False
    starts = np.array([abs(x[0]) for x in vals if x[0] != 0])
    nz = np.abs(v[v != 0])
    if not nz.size:
        return False
    ref = float(np.median(starts)) if starts.size else float(nz.min())
    return float(np.log10(nz.max()) - np.log10(ref)) > 6


def symlog(y):
    """sign(y)·log10(1 + |y|): a symmetric-log transform (monotone; 0 stays 0; ±10^k maps near ±k)."""
    y = np.asarray(y, dtype=float)
    return np.sign(y) * np.log10(1.0 + np.abs(y))


def symlog_ticks(*series) -> dict:
    """Tick values (in symlog units) and labels (the loss values: −10<sup>k</sup>, 0, 10<sup>k</sup>)."""
    vals = np.concatenate([np.asarray(a, dtype=float).ravel() for a in series if a is not None and len(a)])
    vals = vals[np.isfinite(vals)]
    top = int(np.ceil(np.log10(1.0 + np.abs(vals).max()))) if vals.size else 1
    step = max(1, int(np.ceil(top / 6)))
    ks = list(range(step, top + 1, step))
    tv, tt = [0.0], ["0"]
    if (vals > 0).any():
        tv += [float(np.log10(1 + 10.0 ** k)) for k in ks if 10.0 ** (k - step) <= vals.max() or k == ks[0]]
        tt += [_sup(k) for k in ks if 10.0 ** (k - step) <= vals.max() or k == ks[0]]
    if (vals < 0).any():
        neg = [k for k in ks if 10.0 ** (k - step) <= -vals.min() or k == ks[0]]
        tv = [-float(np.log10(1 + 10.0 ** k)) for k in reversed(neg)] + tv
        tt = ["−" + _sup(k) for k in reversed(neg)] + tt
    return {"tickmode": "array", "tickvals": tv, "ticktext": tt}
