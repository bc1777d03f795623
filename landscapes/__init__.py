"""Loss-surface geometry on top of the workbench engine (Li et al. 2018; Garipov et al. 2018).

    import workbench as wb, landscapes as ls
    prob = wb.problems.make("spirals")
    run = wb.train(prob, "gd", lr=0.5, steps=300, probes=[wb.probes.Trajectory(every=10)])
    d = ls.directions.pca(run.record, model=run.model)            # or ls.directions.random(run.model, norm="filter")
    surf = ls.surface(run.model, prob.loss, prob.data(), d, span=1.0, steps=21)   # xarray (alpha, beta)
    ls.plot(surf, trajectory=run.record)                          # plotly contour with the path

Grids are evaluated batched over grid points with torch.func (functional_call + vmap), chunked to a memory
budget, with a loop fallback; the model is never changed (mode, BatchNorm statistics, parameters, grads, RNG).
"""
from . import directions
from .connectivity import BezierCurve, barrier, bezier, curve_path, linear_path, refresh_batchnorm
from .directions import Directions, orthogonalize
from .plot import plot
from .spectra_plot import plot_block_spectra
from .surface import function_surface, line, surface
from .trajectory import project

__all__ = ["directions", "Directions", "orthogonalize", "surface", "line", "function_surface", "project",
           "linear_path", "bezier", "curve_path", "barrier", "BezierCurve", "refresh_batchnorm", "plot",
           "plot_block_spectra"]
