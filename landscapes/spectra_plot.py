"""Per-layer spectrum figure: the output of ``wb.curvature.block_spectra`` as one plotly figure.

    ds = wb.curvature.block_spectra(H, blocks="layers", k=3, density=True)
    ls.plot_block_spectra(ds)

One column per block (layer): the block's SLQ density as a heatmap column (each column scaled to its own maximum,
optionally on a log color scale) and its top-k eigenvalues as markers on top, so one glance shows which layers
carry the large curvature and how each layer's bulk is spread.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from workbench._validate import check_bool

__all__ = ["plot_block_spectra"]

_MARKERS = ["#e41a1c", "#ff7f00", "#4daf4a", "#377eb8", "#984ea3", "#a65628", "#f781bf", "#999999"]


def plot_block_spectra(ds: xr.Dataset, log_density: bool = True, title: str | None = None, height: int = 480):
    """A plotly ``Figure`` of per-block spectra from :func:`workbench.curvature.block_spectra`.

    ``ds`` needs ``eigenvalue`` ``(block, eig)``; with a ``density`` ``(block, eigenvalue_grid)`` variable each block
    also gets its density as a heatmap column (normalised per block; ``log_density`` shows ``log10`` of it, floored
    at 1e-4 of the block's maximum, so the bulk and the outliers both show). Hover shows the block, its size and
    the values.
    """
    import plotly.graph_objects as go

    if not isinstance(ds, xr.Dataset) or "eigenvalue" not in ds or "block" not in ds.dims:
        raise ValueError("ds must be the xarray.Dataset of wb.curvature.block_spectra (variables 'eigenvalue' over "
                         "(block, eig))")
    log_density = check_bool("log_density", log_density)
    blocks = [str(b) for b in ds["block"].values]
    sizes = ds["n_params"].values if "n_params" in ds else np.full(len(blocks), -1)
    fig = go.Figure()
    if "density" in ds:
        dens = np.asarray(ds["density"].transpose("block", "eigenvalue_grid").values, dtype=float)
        dens = dens / np.maximum(dens.max(axis=1, keepdims=True), 1e-300)
        z = np.log10(np.maximum(dens, 1e-4)) if log_density else dens
        fig.add_trace(go.Heatmap(
            x=blocks, y=ds["eigenvalue_grid"].values, z=z.T, colorscale="Blues", reversescale=False,
            colorbar={"title": "log10 density<br>(per block)" if log_density else "density<br>(per block)",
                      "x": 1.02},
            hovertemplate="block %{x}<br>eigenvalue %{y:.4g}<br>density %{z:.3g}<extra></extra>", name="density"))
    vals = np.asarray(ds["eigenvalue"].transpose("block", "eig").values, dtype=float)
    for j in range(vals.shape[1]):
        fig.add_trace(go.Scatter(
            x=blocks, y=vals[:, j], mode="markers", name=f"lambda_{j + 1}",
            marker={"size": 10 if j == 0 else 7, "color": _MARKERS[j % len(_MARKERS)],
                    "symbol": "diamond" if j == 0 else "circle", "line": {"width": 1, "color": "black"}},
            customdata=sizes,
            hovertemplate=f"block %{{x}} (%{{customdata}} params)<br>lambda_{j + 1} = %{{y:.5g}}<extra></extra>"))
    kind = ds.attrs.get("kind", "curvature")
    n = ds.attrs.get("n_examples")
    mode = ds.attrs.get("mode")
    default = f"Per-block {kind} spectra" + (f" ({n} examples, {mode} mode)" if n is not None else "")
    fig.update_layout(title=title or default, xaxis_title="block", yaxis_title="eigenvalue", height=height,
                      legend={"orientation": "h", "y": -0.25}, template="plotly_white")
    fig.update_xaxes(type="category", tickangle=-45 if len(blocks) > 6 else 0)
    return fig
