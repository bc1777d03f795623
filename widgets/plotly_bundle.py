"""The dashboard's own plotly.js: a partial bundle of the trace types the app draws (``TRACES``), 1.8 MB instead of
the full 4.8 MB bundle Panel ships. Parsing and evaluating plotly.js was the largest piece of a new page's script
time (issue 16: a page under load), so the served app loads this bundle instead. Measured on the 2-core machine,
the two alternating in one process: a new idle page 2.68 s instead of 3.91 s (median of 10 each). Built from
plotly.js's own sources at Panel's plotly.js version by ``widgets/assets/build_plotly.sh``; notebooks keep Panel's
full bundle."""
from __future__ import annotations

from pathlib import Path

__all__ = ["TRACES", "PLOTLY_VERSION", "ASSETS", "bundle_path", "use_lean_plotly"]

PLOTLY_VERSION = "3.1.0"          # the plotly.js version Panel's Plotly pane is built against (panel.models.plotly)
TRACES = ("scatter", "heatmap", "contour", "scatter3d", "surface", "parcoords")
ASSETS = Path(__file__).with_name("assets")
ROUTE = "wb-assets"               # the served app's static route for ASSETS


def bundle_path() -> Path:
    """The shipped bundle's file (it may be absent in a source tree that has not built it)."""
    return ASSETS / f"plotly-workbench-{PLOTLY_VERSION}.min.js"


def use_lean_plotly() -> dict:
    """In the serving process only: make Panel's Plotly model load the partial bundle (and not the map traces'
    CSS, which no bundled trace uses). Returns the static route to serve (``{ROUTE: ASSETS}`` for ``pn.serve``'s
    ``static_dirs``), or ``{}``, leaving Panel's full bundle, when the bundle is missing or Panel's plotly.js
    version is not the one it was built from (Panel's plotly model is compiled against its own version)."""
    try:
        from panel.models import plotly as pmodel
    except ImportError:
        return {}
    if getattr(pmodel, "PLOTLY_VERSION", None) != PLOTLY_VERSION or not bundle_path().is_file():
        return {}
    pmodel.PlotlyPlot.__javascript_raw__ = [f"{ROUTE}/{bundle_path().name}"]
    pmodel.PlotlyPlot.__css_raw__ = []
    return {ROUTE: str(ASSETS)}
