"""Live views: the Panel ``Dashboard`` (served by ``workbench app`` or inline in JupyterLab)."""
from .dashboard import Dashboard

__all__ = ["Dashboard"]
