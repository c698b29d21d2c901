"""The Monte Carlo ("phonion") renderer: Sersic profiles as fixed draws, each convolved with the PSF.

Reached as ``backend="mc"`` in :class:`pho.Likelihood` and :func:`pho.render`, or as a
:class:`MonteCarloRenderer` object passed as the backend to choose the number of draws and
their scheme. Modules: :mod:`pho.mc.draws` (unit variates, the Sersic inverse cumulative flux
distribution and its n derivative), :mod:`pho.mc.model` (draws to image Gaussians, and the
chain rule back), :mod:`pho.mc.renderer` (the backend object and :class:`ExactSersic`, the
table-free profile). The method and its measured accuracy and cost: docs/model.md.
"""

from .draws import DRAW_SCHEMES, unit_variates
from .renderer import ExactSersic, MonteCarloRenderer

__all__ = ["DRAW_SCHEMES", "ExactSersic", "MonteCarloRenderer", "unit_variates"]
