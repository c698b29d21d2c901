"""The Monte Carlo ("phonion") renderer as a backend: ``backend="mc"`` or a MonteCarloRenderer.

See :mod:`pho.mc` for the method and docs/model.md ("Monte Carlo renderer") for the measured
accuracy and cost.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ..errors import PhoRangeError, PhoValueError, PhoWarning, warn
from ..sources import Sersic, _check_profile_range
from .draws import DRAW_SCHEMES, sersic_radius, unit_variates
from .model import McExposureModel, McSceneModel, _sym, shape_root

__all__ = ["ExactSersic", "MonteCarloRenderer", "DEFAULT_TOLERANCE", "DEFAULT_MIN_DRAWS", "DEFAULT_MAX_DRAWS"]

#: Default bound on one draw's pixel peak relative to the image's peak (see ``MonteCarloRenderer``).
DEFAULT_TOLERANCE = 0.01
#: Fewest draws per Sersic source in automatic mode (a power of two).
DEFAULT_MIN_DRAWS = 1024
#: Most draws per Sersic source in automatic mode (a power of two).
DEFAULT_MAX_DRAWS = 2**18
#: Pilot draws used to estimate the image peak in automatic mode (first try).
_PILOT_DRAWS = 4096


class ExactSersic:
    """The Sersic profile itself, with no Gaussian-mixture table: for the Monte Carlo renderer.

    Give it to a source (``pho.Sersic(..., profile=pho.ExactSersic())``) to use values of ``n``
    and ``rh`` outside the shipped table's range with ``backend="mc"``; a
    :class:`pho.Likelihood` or :func:`pho.render` on ``backend="mc"`` gives it to every Sersic of
    its scene by itself. The mixture backends cannot render it (it has no Gaussian amplitudes).

    Parameters
    ----------
    n_range : (float, float)
        Allowed Sersic index. Default (0.3, 6.2), GalSim's range, over which the renderer is
        measured against GalSim (docs/model.md); the draws work for any n > 0.
    rh_range_arcsec : (float, float)
        Allowed half-light radius, arcsec. Default (1e-4, 100): no table limits it; the number
        of draws (automatic by default) sets the accuracy.

    Raises
    ------
    PhoValueError
        A range that is not ``0 < lo < hi``.

    Examples
    --------
    >>> import pho
    >>> pho.ExactSersic().n_range
    (0.3, 6.2)
    """

    is_exact = True

    def __init__(self, n_range: tuple[float, float] = (0.3, 6.2), rh_range_arcsec: tuple[float, float] = (1e-4, 100.0)):
        for name, (lo, hi) in (("n_range", n_range), ("rh_range_arcsec", rh_range_arcsec)):
            if not (0.0 < float(lo) < float(hi) and math.isfinite(float(hi))):
                raise PhoValueError(f"{name}=({lo!r}, {hi!r}) must satisfy 0 < lo < hi < inf")
        self.n_range = (float(n_range[0]), float(n_range[1]))
        self.rh_range_arcsec = (float(rh_range_arcsec[0]), float(rh_range_arcsec[1]))

    def __repr__(self) -> str:
        return f"ExactSersic(n_range={self.n_range}, rh_range_arcsec={self.rh_range_arcsec})"


def _pow2_at_least(x: float) -> int:
    return int(2 ** max(0, math.ceil(math.log2(max(x, 1.0)))))


class MonteCarloRenderer:
    """Sersic profiles as N fixed draws, each convolved with the PSF: a backend for pho.Likelihood.

    Each Sersic source is represented by N fixed draws of the latent circular profile of unit
    half-light radius (radius from the inverse cumulative flux distribution at fixed unit
    variates, :mod:`pho.mc.draws`), mapped to the sky by the source's shape, size and position;
    each draw is the PSF mixture moved there and integrated over pixels by pho's rule (the pixel
    backend's kernels). Image and gradient are smooth in every parameter at fixed draws, the
    gradient exact for those draws. Point sources are rendered as by the mixture backends. No
    Sersic table is used, so any ``n`` and ``rh`` of :class:`ExactSersic`'s range can be reached.

    Parameters
    ----------
    n_draws : int or "auto"
        Draws per Sersic source. "auto" (default): per source, the smallest power of two (within
        ``[min_draws, max_draws]``) for which one draw's pixel peak (``flux/N`` times the PSF's
        pixel-integrated peak) is at most ``tolerance`` times the image's peak, estimated once
        from the starting parameters (the largest over the exposures). On the measured cases the
        worst pixel error was below that bound (0.96 of it at worst, docs/model.md), so the
        default meets 1% of the peak. The draws stay fixed for the life of the likelihood.
    scheme : {"fibonacci", "sobol", "halton", "random"}
        Unit variates (:func:`pho.mc.draws.unit_variates`). Default "fibonacci", a rank-1
        lattice whose error falls about as 1/N (random: 1/sqrt(N)).
    seed : int
        Seed of the scrambles and shifts; source ``i`` uses ``np.random.default_rng([seed, i])``.
    tolerance : float
        See ``n_draws`` (default ``DEFAULT_TOLERANCE`` = 0.01).
    min_draws, max_draws : int
        Bounds of the automatic choice (defaults 1024 and 2**18). A source that needs more
        than ``max_draws`` gets ``max_draws`` and a ``PhoWarning`` saying the bound it then has.
    pixels : {"cpu", "reference", "gpu"}, optional
        Pixel backend for the draws' image Gaussians (default "cpu" where built, else
        "reference").
    workers : int, optional
        Threads of the pixel backend.
    profile : ExactSersic, optional
        The profile (ranges of n and rh) given to every Sersic of a scene (default
        ``ExactSersic()``).

    Raises
    ------
    PhoValueError
        Unknown scheme, bad ``n_draws``, ``tolerance`` or draw bounds.

    Examples
    --------
    >>> import numpy as np, pho
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.crval = [150.0, 2.0]
    >>> w.wcs.crpix = [16.5, 16.5]; w.wcs.cd = [[-0.03 / 3600, 0], [0, 0.03 / 3600]]
    >>> exp = pho.Exposure(np.zeros((32, 32)), np.ones((32, 32)), w, pho.PSFMixture.gaussian(2.5), "F814W")
    >>> gal = pho.Sersic(150.0, 2.0, {"F814W": 100.0}, q=0.7, pa=0.3, n=0.4, rh=0.05,
    ...                  profile=pho.ExactSersic())  # n = 0.4 is below the table's range
    >>> img = pho.render(pho.Scene([gal]), exp, backend=pho.MonteCarloRenderer(n_draws=2048))
    >>> round(float(img.sum()), 2)
    100.0
    """

    name = "mc"
    #: Tells pho.Likelihood and pho.render that this backend builds its own scene model.
    builds_models = True

    def __init__(self, n_draws="auto", scheme: str = "fibonacci", seed: int = 0, tolerance: float = DEFAULT_TOLERANCE,
                 min_draws: int = DEFAULT_MIN_DRAWS, max_draws: int = DEFAULT_MAX_DRAWS, pixels: str | None = None,
                 workers: int | None = None, profile: ExactSersic | None = None):
        if scheme not in DRAW_SCHEMES:
            raise PhoValueError(f"unknown draw scheme {scheme!r}; choose one of {', '.join(DRAW_SCHEMES)}")
        if n_draws != "auto" and (isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1):
            raise PhoValueError(f"n_draws={n_draws!r}; give a positive integer or 'auto'")
        if not (isinstance(tolerance, (int, float)) and 0.0 < tolerance < 1.0):
            raise PhoValueError(f"tolerance={tolerance!r} must be in (0, 1) (fraction of the image's peak)")
        for name, value in (("min_draws", min_draws), ("max_draws", max_draws)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise PhoValueError(f"{name}={value!r} must be a positive integer")
        if min_draws > max_draws:
            raise PhoValueError(f"min_draws={min_draws} exceeds max_draws={max_draws}")
        self.n_draws = n_draws if n_draws == "auto" else int(n_draws)
        self.scheme = scheme
        self.seed = int(seed)
        self.tolerance = float(tolerance)
        self.min_draws, self.max_draws = int(min_draws), int(max_draws)
        self.profile = ExactSersic() if profile is None else profile
        self.workers = workers
        if pixels is None:
            from .._backends import available_backends

            pixels = "cpu" if "cpu" in available_backends() else "reference"
        self.pixels = pixels
        self._pixel_backend = None
        self._build_pixel_backend()

    def _build_pixel_backend(self):
        from .._backends import get_backend

        self._pixel_backend = get_backend(self.pixels, workers=self.workers)

    def __repr__(self) -> str:
        return (f"MonteCarloRenderer(n_draws={self.n_draws!r}, scheme={self.scheme!r}, seed={self.seed}, "
                f"tolerance={self.tolerance:g}, pixels={self.pixels!r})")

    # pixel work: the pixel backend's kernels
    def render(self, gaussians, shape) -> np.ndarray:
        """Model image ``(ny, nx)`` of image Gaussians (the pixel backend's ``render``)."""
        return self._pixel_backend.render(gaussians, shape)

    def gradient(self, gaussians, weights) -> np.ndarray:
        """``(G, 6)`` weighted derivative sums (the pixel backend's ``gradient``)."""
        return self._pixel_backend.gradient(gaussians, weights)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pixel_backend"] = None  # compiled modules do not pickle: rebuilt on load
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build_pixel_backend()

    # model: the scene as draws
    def model_scene(self, scene):
        """A copy of ``scene`` whose Sersics carry ``self.profile`` (its ranges, not a table's).

        Raises
        ------
        PhoRangeError
            A source's ``n`` or ``rh`` outside ``self.profile``'s range.
        """
        new = copy.copy(scene)
        sources = []
        for i, s in enumerate(scene.sources):
            s = copy.copy(s)
            if isinstance(s, Sersic):
                _check_profile_range(self.profile, s.n, s.rh, f"source {i}: ")
                s._profile = self.profile
            sources.append(s)
        new.sources = tuple(sources)
        new._build_checks()
        return new

    def build_models(self, scene, exposures, psf_theta=None):
        """The scene model and one exposure model per exposure, with this renderer's draws.

        Parameters
        ----------
        scene : pho.Scene
            As returned by :meth:`model_scene`.
        exposures : sequence of pho.Exposure
        psf_theta : ndarray of shape (P,), optional
            Where an exposure has a PSF grid, each source's mixture is taken at its position for
            these parameters (default: the scene's values) and held fixed.

        Returns
        -------
        McSceneModel, list of McExposureModel
        """
        rows = [i for i, s in enumerate(scene.sources) if isinstance(s, Sersic)]
        if self.n_draws == "auto":
            counts = self.auto_draws(scene, exposures, rows)
        else:
            counts = [self.n_draws] * len(rows)
        variates = [unit_variates(int(c), self.scheme, np.random.default_rng([self.seed, i])) for i, c in zip(rows, counts)]
        sm = McSceneModel(scene, variates)
        return sm, [McExposureModel(sm, e, psf_theta=psf_theta) for e in exposures]

    def auto_draws(self, scene, exposures, rows=None) -> list[int]:
        """Draws per Sersic source by the ``tolerance`` rule (see the class docstring).

        Returns
        -------
        list of int
            One count per Sersic source, scene order.
        """
        if rows is None:
            rows = [i for i, s in enumerate(scene.sources) if isinstance(s, Sersic)]
        out = []
        for i in rows:
            s = scene.sources[i]
            worst = 0.0  # psf peak / image peak (the draws needed at tolerance 1)
            for e in exposures:
                worst = max(worst, self._peak_ratio(s, e))
            needed = worst / self.tolerance
            n = min(max(_pow2_at_least(needed), self.min_draws), self.max_draws)
            if needed > self.max_draws:
                warn(
                    f"source s{i} (n={s.n:.3g}, rh={s.rh:.3g} arcsec): the Monte Carlo renderer's bound of "
                    f"{self.tolerance:g} of the peak needs {needed:.3g} draws; using max_draws={self.max_draws}, where the "
                    f"bound is {worst / self.max_draws:.3g} of the peak (the measured error of large sources is "
                    "well below the bound, docs/model.md); pass MonteCarloRenderer(max_draws=...) to raise the cap",
                    PhoWarning,
                )
            out.append(n)
        return out

    def _peak_ratio(self, source, exposure) -> float:
        """PSF's pixel-integrated peak over the source's image peak, per unit flux.

        The image peak is estimated at the source's centre from Fibonacci pilot draws, with
        more draws until the estimate's own bound is below 5%.
        """
        from ..gaussians import _shape_matrices

        psf = exposure.psf
        if exposure.psf_varies:  # the grid's mixture where the source is
            x, y = exposure.sky_to_pixel(source.ra, source.dec)
            psf = exposure.psf_at(float(x), float(y))
        cxx, cxy, cyy = psf.cxx + 1.0 / 12.0, np.asarray(psf.cxy, float), psf.cyy + 1.0 / 12.0
        det = cxx * cyy - cxy * cxy
        amp = np.asarray(psf.amp, float)
        psf_peak = float(np.sum(amp / (2.0 * math.pi * np.sqrt(det))))
        # the shape matrix is the same in every parameterization: form it from the source's (q, pa)
        root = shape_root(_shape_matrices(np.array([source.q], float), np.array([source.pa], float), "q_pa"))
        M = source.rh * (np.asarray(exposure.D, float) @ _sym(root[0, 0, :]))
        n_pilot = _PILOT_DRAWS
        while True:
            u, v = unit_variates(n_pilot, "fibonacci")
            rho = sersic_radius(u, source.n)[0]
            lat = np.column_stack([rho * np.cos(2 * math.pi * v), rho * np.sin(2 * math.pi * v)])
            off = lat @ M.T  # (N, 2) pixels
            fx, fxy, fy = cyy / det, -cxy / det, cxx / det
            q = (fx[None, :] * off[:, :1] ** 2 + 2 * fxy[None, :] * off[:, :1] * off[:, 1:]
                 + fy[None, :] * off[:, 1:] ** 2)
            peak = float(np.mean(np.exp(-0.5 * q) @ (amp / (2.0 * math.pi * np.sqrt(det)))))
            ratio = psf_peak / max(peak, 1e-300)
            if ratio / n_pilot <= 0.05 or n_pilot >= 4 * self.max_draws:
                return ratio
            n_pilot = min(4 * self.max_draws, _pow2_at_least(ratio / 0.05))
