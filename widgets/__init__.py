"""Live views: the Panel ``Dashboard`` (served by ``workbench app`` or inline in JupyterLab) and ipywidgets /
plotly FigureWidget views for notebooks (``LiveLoss``, ``LiveSharpness``, ``LiveMetrics``, ``live_callback``)."""
from .dashboard import Dashboard
from .notebook import LiveLoss, LiveMetrics, LiveSharpness, live_callback

__all__ = ["Dashboard", "LiveLoss", "LiveMetrics", "LiveSharpness", "live_callback"]
