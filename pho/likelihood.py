"""Log-likelihood of a scene given exposures, its exact gradient, and model images.

For each exposure the model image is ``m = render(image Gaussians) + background`` (counts). Over
the pixels that count (not masked, ``ivar > 0``):

- Gaussian: ``lnL = -1/2 sum ivar (d - m)^2``; ``d lnL / d m = ivar (d - m)``.
- Poisson: ``lnL = sum (d ln m - m - lnGamma(d + 1))``; ``d lnL / d m = d / m - 1``
  (needs ``m > 0`` and ``d >= 0`` on those pixels).

The gradient chains ``d lnL / d m`` through the pixel backend (``gradient``: sums of
``d lnL/d m * d m/d column`` per image Gaussian) and the model's Jacobian (pho.gaussians) to the
scene vector. See docs/model.md.

Sky background as parameters (``sky="constant"`` or ``"plane"``, default off): per exposure ``k``
the model gains ``sky_k(x, y) = level + slope_x (x - x_c) + slope_y (y - y_c)`` (counts per pixel;
slopes in counts per pixel per pixel; ``(x_c, y_c) = ((nx - 1)/2, (ny - 1)/2)`` the stamp centre,
so that ``level`` is the mean sky over the stamp), on top of the exposure's fixed ``background``.
Its parameters, ``sky_{k}.level`` (and ``sky_{k}.slope_x``, ``sky_{k}.slope_y``), follow the
scene's in the vector, exposure by exposure; their gradient is ``sum_pixels dlnL/dm`` times 1,
``x - x_c`` or ``y - y_c``.
"""

from __future__ import annotations

import copy
import math
import os

import numpy as np

from . import _levels
from . import gaussians as _gaussians
from ._backends import CpuBackend, get_backend
from .errors import PhoDataError, PhoValueError
from .exposure import Exposure
from .gaussians import N_LOCAL, ExposureModel, SceneModel

__all__ = ["Likelihood", "render", "OVERLAP_NSIGMA", "SKY_MODELS", "SKY_PARAMETERS"]

#: Sky models per exposure and the parameters each adds (``sky_{k}.<name>``).
SKY_PARAMETERS = {"none": (), "constant": ("level",), "plane": ("level", "slope_x", "slope_y")}
SKY_MODELS = tuple(SKY_PARAMETERS)

#: A source overlaps an exposure when one of its image Gaussians, extended by this many sigma
#: (marginal, along x and y), reaches the stamp.
OVERLAP_NSIGMA = 5.0

#: Whether a Likelihood on the cpu backend evaluates ``lnlike`` and ``lnlike_and_grad`` by one
#: compiled call (``pho._stamp.StampPlan``) where its exposures allow it (one PSF mixture each, a
#: degree-1 astrometry); False: always the per-step path (the same numbers to ~1e-13 relative).
COMPILED_STAMP = True

#: Gaussian-pixels per thread below which the one compiled call (``COMPILED_STAMP``) runs on fewer
#: threads than the backend's ``workers``; it replaces a smaller ``CpuBackend.min_work_per_thread``
#: (0 there still means every thread). On one thread the call takes each Gaussian's box whole (rows by
#: recurrence, the gradient by the box's moments), which its row-parallel render cannot. Measured
#: 2026-11-29 on the 2-core development machine (wall time of ``lnlike_and_grad``, workers 1 against 2
#: with ``min_work_per_thread = 0``): 2 threads took 1.3-1.45x as long as 1 on the peers' scenes (a),
#: (ten) and (big), up to 1.19 million Gaussian-pixels, and 1.36x on the 4 exposures of (b); no
#: crossover was reached, so every one of those runs on one thread by default.
COMPILED_MIN_WORK_PER_THREAD = 2_000_000

_NO_GRAD = np.empty(0)

#: Memory of the per-Gaussian derivative images that ``Likelihood.gradient_images`` holds at once.
GRADIENT_IMAGES_CHUNK_BYTES = 64 * 2**20


def _resolve_backend(backend, workers):
    if isinstance(backend, str):
        if backend == "mc":
            from .mc import MonteCarloRenderer  # the Monte Carlo renderer: its own scene model

            return MonteCarloRenderer(workers=workers)
        return get_backend(backend, workers=workers)
    if hasattr(backend, "render") and hasattr(backend, "gradient"):
        return backend
    raise TypeError(f"backend must be a name ('reference', 'cpu', 'gpu', 'mc') or a backend object, got {backend!r}")


def _models(backend, scene, exposures, psf_theta=None):
    """(scene, scene model, exposure models) for a backend: the Gaussian-mixture model, or the
    backend's own (``builds_models``: the Monte Carlo renderer, whose scene carries its profile).
    ``psf_theta``: where an exposure has a PSF grid, take each source's mixture at these
    parameters' positions (default: the scene's values)."""
    if getattr(backend, "builds_models", False):
        scene = backend.model_scene(scene)
        sm, models = backend.build_models(scene, exposures, psf_theta=psf_theta)
        return scene, sm, models
    sm = SceneModel(scene)
    models = [ExposureModel(sm, e, psf_theta=psf_theta) for e in exposures]
    for em in models:
        em.compiled = getattr(backend, "name", None) == "cpu"
    return scene, sm, models


def render(scene, exposure: Exposure, backend="reference", workers: int | None = None, theta=None) -> np.ndarray:
    """Model image of ``scene`` in ``exposure``: expected counts per pixel, background included.

    Parameters
    ----------
    scene : pho.Scene
    exposure : pho.Exposure
    backend : {"reference", "cpu", "gpu", "mc"} or backend object
        Pixel backend (``pho._backends.get_backend``), or the Monte Carlo renderer ("mc", or a
        ``pho.MonteCarloRenderer``), which renders every Sersic by draws with no table.
    workers : int, optional
        Threads for the ``cpu`` backend (default: all cores).
    theta : array_like of shape (P,), optional
        Parameters (validated); default ``scene.get_vector()``. With a PSF grid, each source
        uses the mixture at its position for these parameters.

    Returns
    -------
    image : ndarray of shape (ny, nx), float64
        Counts.

    Examples
    --------
    >>> import numpy as np, pho
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.crval = [150.0, 2.0]
    >>> w.wcs.crpix = [32.5, 32.5]; w.wcs.cd = [[-0.03 / 3600, 0], [0, 0.03 / 3600]]
    >>> exp = pho.Exposure(np.zeros((64, 64)), np.ones((64, 64)), w, pho.PSFMixture.gaussian(2.0), "F814W",
    ...                    counts_per_flux=2.0, background=1.0)
    >>> img = pho.render(pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 100.0})]), exp)
    >>> round(float(img.sum() - 64 * 64), 1)  # 200 counts within the 1e-5 box truncation
    200.0
    """
    be = _resolve_backend(backend, workers)
    if getattr(be, "builds_models", False):
        scene = be.model_scene(scene)  # the renderer's copy, whose ranges theta is checked against
    theta = scene.get_vector() if theta is None else scene.check_vector(theta)
    # with a PSF grid, each source's mixture is taken at its position for theta
    scene, sm, (em,) = _models(be, scene, [exposure], psf_theta=theta)
    g, _ = em.forward(sm.prepare(theta))
    return be.render(_kept(g, em.significant(g)), exposure.shape) + exposure.background


def _overflow_message(exposure, model) -> str:
    """The message of an ln L that is not finite: model or data beyond double precision."""
    with np.errstate(invalid="ignore"):
        peak = float(np.nanmax(np.abs(model))) if np.any(~np.isnan(model)) else float("nan")
    return (
        f"{exposure.name}: ln L overflows double precision (model peak {peak:.3g} counts against data up to "
        f"{float(np.max(np.abs(exposure._data))):.3g} counts): the source fluxes are absurdly large for these data; "
        "bound the fluxes (priors, or a smaller starting flux) or check the flux units (counts_per_flux)"
    )


def _kept(gaussians, keep):
    """The Gaussians a backend renders: all, or those ``keep`` selects (C-contiguous)."""
    return np.ascontiguousarray(gaussians if keep is None else gaussians[keep])


def _level_settings() -> tuple:
    """pho._levels's settings a compiled plan is built for (it is rebuilt when they change)."""
    return _levels.MAX_LEVEL, _levels.SIGMA_PER_NODE, _levels.level_box_nsigma()


def _stamp_module():
    """pho._stamp, or None where the compiled extension is not built."""
    try:
        from . import _stamp
    except ImportError:
        return None
    return _stamp


def _profile_spec(profile):
    """The tables of a profile whose amplitudes pho._stamp computes itself (``SersicTable``,
    ``MultiScaleSersic``: cubic splines in (n, ln r_h), blended over r_h bands), or None (any other
    profile: its ``amplitudes`` are called each time)."""
    from .sersic import MultiScaleSersic, SersicTable

    def scale(t, cols):
        return (t._coef, t._n0, t._dn, t._u0, t._du, t._ln_scale, cols)

    if type(profile) is SersicTable:
        M = int(profile._coef.shape[3])
        return dict(M=M, scales=[scale(profile, np.arange(M))], bands=np.zeros((0, 4)))
    if type(profile) is MultiScaleSersic:
        return dict(M=profile.n_gauss, scales=[scale(t, c) for t, c in zip(profile._tables, profile._cols)],
                    bands=np.array(profile._bands, dtype=float).reshape(-1, 4))
    return None


def _plan_sources(sm) -> tuple[dict, list]:
    """The exposure-independent layout of :class:`pho._stamp.StampPlan`, sources in the scene
    model's group order, and per Sersic group None (the plan computes its amplitudes) or the
    (profile, n index, rh index) whose amplitudes each call hands in (scalar indices for a
    one-source group: the profile's faster scalar path)."""
    sidx, is_sersic, aoff, groups, amp_args, profiles = [], [], [], [], [], []
    n_amp = 0
    for g in sm.groups:
        first = len(sidx)
        for row in g.idx:
            full = np.full(6, -1, dtype=np.intp)
            full[: len(row)] = row
            sidx.append(full)
            is_sersic.append(g.kind == "sersic")
            aoff.append(n_amp if g.kind == "sersic" else 0)
            if g.kind == "sersic":
                n_amp += g.n_comp
        if g.kind == "sersic":
            S = len(g.rows)
            groups.append((first, S, g.n_comp))
            spec = _profile_spec(g.profile)
            profiles.append(spec)
            if spec is None:
                n_idx, rh_idx = (int(g.idx[0, 4]), int(g.idx[0, 5])) if S == 1 else (g.idx[:, 4].copy(), g.idx[:, 5].copy())
                amp_args.append((g.profile, n_idx, rh_idx))
            else:
                amp_args.append(None)
    from .exposure import _DEG

    sources = dict(sidx=np.array(sidx, dtype=np.intp).reshape(-1, 6), is_sersic=np.array(is_sersic, dtype=np.uint8),
                   aoff=np.array(aoff, dtype=np.intp), n_amp=n_amp, groups=groups, profiles=profiles,
                   shape_kind={"q_pa": 0, "eta": 2}.get(sm.shape_parameters, 1), deg=_DEG,
                   n_scene_params=sm.n_params, n_scene_sources=len(sm.scene.sources))
    return sources, amp_args


def _plan_exposure(sm, em, e, aoff, poisson, lgamma, sky_slice) -> dict:
    """Per-exposure arrays of :class:`pho._stamp.StampPlan`: per image Gaussian (in
    ``ExposureModel.forward``'s order, less the narrow components folded onto others, whose
    amplitude is always zero) its source, the PSF / profile constants it is built from and its
    profile amplitude as a sparse row (``aptr``, ``acol``, ``aw``) over the plan's amplitudes."""
    L = em.n_psf
    per_src, gsrc, src_index = [], [], []
    cols = {k: [] for k in ("r2", "pcxx", "pcxy", "pcyy", "pamp", "px", "py")}
    acol, aw, a_len = [], [], []
    pF = []
    s = 0
    for g, flat, gp in zip(sm.groups, em._flat, em._gpsf):
        for row in g.rows:
            if flat is None:
                N = L
                zeros = np.zeros(L)
                for k, v in (("r2", zeros), ("pcxx", zeros), ("pcxy", zeros), ("pcyy", zeros), ("pamp", gp["norm"][0]),
                             ("px", gp["x"][0]), ("py", gp["y"][0])):
                    cols[k].append(v)
                pF.append(gp["F"][0])
                acol.append(np.zeros(L, dtype=np.intp))
                aw.append(np.ones(L))
                a_len.append(np.ones(L, dtype=np.intp))
            else:
                fold = flat["fold"]
                if fold is None:
                    used = np.arange(flat["N"])
                    acol.append(aoff[s] + flat["m_index"])
                    aw.append(np.ones(flat["N"]))
                    a_len.append(np.ones(flat["N"], dtype=np.intp))
                else:
                    used = np.flatnonzero(np.any(fold != 0, axis=1))
                    rows_n, cols_m = np.nonzero(fold[used])
                    acol.append(aoff[s] + cols_m)
                    aw.append(fold[used][rows_n, cols_m])
                    a_len.append(np.bincount(rows_n, minlength=len(used)))
                N = len(used)
                for k, v in (("r2", flat["r2"]), ("pcxx", flat["cxx"]), ("pcxy", flat["cxy"]), ("pcyy", flat["cyy"]),
                             ("pamp", flat["amp"]), ("px", flat["px"]), ("py", flat["py"])):
                    cols[k].append(v[..., used])
                pF.append(np.zeros((N, 3)))
            per_src.append(N)
            gsrc.append(np.full(N, s, dtype=np.intp))
            src_index.append(np.full(N, row, dtype=np.intp))
            s += 1
    d = {k: np.concatenate(v) for k, v in cols.items()}
    d.update(aptr=np.concatenate([[0], np.cumsum(np.concatenate(a_len))]).astype(np.intp),
             acol=np.concatenate(acol).astype(np.intp), aw=np.concatenate(aw))
    astro = e._astrometry
    d.update(shape=e.shape, folded=astro._folded, offset=astro._offset, MT=em.MT,
             flux_idx=em.vjp_index.reshape(-1, 7)[:, 0], goff=np.concatenate([[0], np.cumsum(per_src)]),
             gsrc=np.concatenate(gsrc), source_index=np.concatenate(src_index), vjp_index=em.vjp_index, pF=np.concatenate(pF),
             data=e._data, weight=e._weight, background=e.background, counted=e.counted, poisson=poisson,
             lgamma=lgamma, sky_n=sky_slice.stop - sky_slice.start,
             sky_start=sky_slice.start if sky_slice.stop > sky_slice.start else 0)
    return d


class Likelihood:
    """ln p(data | scene parameters) over a set of exposures, with its exact gradient.

    Parameters
    ----------
    scene : pho.Scene
        Sources, parameter layout (``scene.parameter_names``) and starting values.
    exposures : sequence of pho.Exposure
        The data. Every exposure's band must be one of ``scene.bands`` and every scene band
        must have at least one exposure.
    backend : {"reference", "cpu", "gpu", "mc"} or backend object
        Pixel backend (``pho._backends.get_backend``). Default "reference" (NumPy, slow).
        "mc" (or a ``pho.MonteCarloRenderer``) renders every Sersic by fixed Monte Carlo draws
        instead of the Gaussian-mixture table; ``self.scene`` is then a copy of ``scene`` whose
        Sersics carry the renderer's ``pho.ExactSersic`` profile, so the table's n and rh range
        checks do not apply (docs/model.md, "Monte Carlo renderer").
    kind : {"gaussian", "poisson"}
        Noise model (module docstring).
    workers : int, optional
        Threads for the ``cpu`` backend.
    sky : {None, "none", "constant", "plane"} or sequence of them, optional
        Sky background fitted as parameters (module docstring), for every exposure or one entry
        per exposure. Default None: no sky parameters (the exposures' fixed ``background`` only).
    sky_start : array_like of shape (n_sky,), optional
        Starting values of the sky parameters (``initial``); default zeros (the fixed
        ``background`` as given).

    Attributes
    ----------
    scene, exposures, kind, parameter_names, n_params
    sky_models : tuple of str
        Per exposure, ``"none"``, ``"constant"`` or ``"plane"``.
    sky_names : tuple of str
        Names of the sky parameters (``"sky_0.level"``, ...), after the scene's in the vector.
    n_source_params : int
        Length of the scene's part of the vector (``scene.n_params``).
    initial : ndarray of shape (n_params,)
        The scene's vector followed by ``sky_start``.

    Raises
    ------
    PhoValueError
        Unknown ``kind``; an exposure band not in the scene, or a scene band without exposure.
    PhoDataError
        An exposure that no source overlaps, or a source that overlaps no exposure (each
        named); a source on the far side of the sky from an exposure (more than 90 deg away); for ``kind="poisson"``, negative data on counted pixels.

    Notes
    -----
    Construction checks everything O(pixels) once; each call checks only O(parameters):
    the vector's length, finiteness and ranges (q in (0, 1], |g| < 1, n and rh inside the
    profile's table range), via ``scene.check_vector``.

    An exposure whose PSF varies over the field (``pho.psfgrid.PSFGrid``) gives each source the
    mixture at its position for the scene's values at construction, and keeps it fixed: the
    likelihood is then a smooth function whose gradient is exact (no term for the PSF's change
    as a source moves). :meth:`with_psf_at` re-takes the mixtures at other positions
    (docs/model.md, "PSFs that vary over the field").

    Examples
    --------
    >>> import numpy as np, pho
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.crval = [150.0, 2.0]
    >>> w.wcs.crpix = [32.5, 32.5]; w.wcs.cd = [[-0.03 / 3600, 0], [0, 0.03 / 3600]]
    >>> exp = pho.Exposure(np.zeros((64, 64)), np.ones((64, 64)), w, pho.PSFMixture.gaussian(2.0), "F814W")
    >>> scene = pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 10.0})])
    >>> like = pho.Likelihood(scene, [exp])
    >>> value, grad = like.lnlike_and_grad(scene.get_vector())
    >>> like.parameter_names, grad.shape
    (('s0.flux_F814W', 's0.ra', 's0.dec'), (3,))
    """

    def __init__(self, scene, exposures, backend="reference", kind: str = "gaussian", workers: int | None = None,
                 sky=None, sky_start=None):
        if isinstance(exposures, Exposure):
            exposures = [exposures]
        exposures = list(exposures)
        if not exposures:
            raise PhoValueError("a Likelihood needs at least one exposure")
        for i, e in enumerate(exposures):
            if not isinstance(e, Exposure):
                raise TypeError(f"exposure {i} is a {type(e).__name__}, not a pho.Exposure")
        if kind not in ("gaussian", "poisson"):
            raise PhoValueError(f"kind={kind!r}; use 'gaussian' or 'poisson'")
        self._backend = _resolve_backend(backend, workers)
        self.backend = getattr(self._backend, "name", str(backend))
        self._backend_spec = (backend if isinstance(backend, str) else None, workers)
        scene, self._scene_model, self._models = _models(self._backend, scene, exposures)
        self.scene = scene
        self.exposures = tuple(exposures)
        self.kind = kind
        self._setup_sky(sky, sky_start)
        self.parameter_names = tuple(scene.parameter_names) + self.sky_names
        self.n_source_params = scene.n_params
        self.n_params = scene.n_params + len(self.sky_names)
        seen = {e.band for e in exposures}
        missing = [b for b in scene.bands if b not in seen]
        if missing:
            raise PhoValueError(
                f"scene band(s) {missing} have no exposure, so those fluxes are unconstrained; drop the band(s) from "
                f"the scene (Scene(..., bands=...)) or add exposures in them"
            )
        self._check_overlap()
        self._plan = False  # the compiled one-call plan: False until built, None where it does not apply
        self._lgamma = []
        if kind == "poisson":
            from scipy.special import gammaln

            for e in exposures:
                neg = e.counted & (e.pixels < 0)
                if neg.any():
                    raise PhoDataError(
                        f"{e.name}: {int(neg.sum())} counted pixels are negative (min {float(e.pixels[neg].min()):.3g}); "
                        "the Poisson likelihood needs counts >= 0 including the background: add the background back "
                        "into the data and pass it as background=..., mask those pixels, or use kind='gaussian'"
                    )
                self._lgamma.append(float(np.sum(gammaln(e._data[e.counted] + 1.0))))

    # ------------------------------------------------------------------ sky background parameters
    def _setup_sky(self, sky, sky_start) -> None:
        n_exp = len(self.exposures)
        if sky is None:
            models = ("none",) * n_exp
        elif isinstance(sky, str):
            models = (sky,) * n_exp
        else:
            models = tuple(sky)
            if len(models) != n_exp:
                raise PhoValueError(f"sky has {len(models)} entries for {n_exp} exposures; give one per exposure or one for all")
        for m in models:
            if m not in SKY_PARAMETERS:
                raise PhoValueError(f"sky={m!r} is not a sky model; use None, 'none', 'constant' or 'plane'")
        self.sky_models = models
        names, slices = [], []
        for k, m in enumerate(models):
            slices.append(slice(self.scene.n_params + len(names), self.scene.n_params + len(names) + len(SKY_PARAMETERS[m])))
            names.extend(f"sky_{k}.{p}" for p in SKY_PARAMETERS[m])
        self.sky_names = tuple(names)
        self._sky_slices = tuple(slices)
        self._has_sky = bool(names)
        if sky_start is None:
            start = np.zeros(len(names))
        else:
            start = np.array(sky_start, dtype=float).reshape(-1)
            if start.shape != (len(names),) or not np.all(np.isfinite(start)):
                raise PhoValueError(f"sky_start must be {len(names)} finite numbers ({list(names)}), got {sky_start!r}")
        self.sky_start = start

    @property
    def initial(self) -> np.ndarray:
        """The starting vector: ``scene.get_vector()`` followed by ``sky_start``, shape (P,)."""
        theta = self.scene.get_vector()
        return np.concatenate([theta, self.sky_start]) if self._has_sky else theta

    def parameter_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Hard bounds of every parameter: ``scene.parameter_bounds()`` and (-inf, inf) for the sky."""
        lo, hi = self.scene.parameter_bounds()
        if not self._has_sky:
            return lo, hi
        n = len(self.sky_names)
        return np.concatenate([lo, np.full(n, -np.inf)]), np.concatenate([hi, np.full(n, np.inf)])

    def _split(self, theta):
        """Validate ``theta`` (P,): the scene's part checked by ``scene.check_vector``, the sky's
        finite. Returns (the full vector, the scene's part)."""
        if not self._has_sky:
            theta = self.scene.check_vector(theta)
            return theta, theta
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.n_params,):
            raise PhoValueError(
                f"parameter vector has shape {theta.shape}, expected ({self.n_params},) for {self.parameter_names}"
            )
        src = self.scene.check_vector(theta[: self.scene.n_params])
        sky = theta[self.scene.n_params :]
        if not np.all(np.isfinite(sky)):
            j = int(np.flatnonzero(~np.isfinite(sky))[0])
            raise PhoValueError(f"parameter {self.sky_names[j]} = {float(sky[j])!r} is not finite; give finite sky values")
        return theta, src

    def _sky_axes(self, i):
        """Pixel offsets from the stamp centre along x (nx,) and y (ny,) of exposure i."""
        ny, nx = self.exposures[i].shape
        return np.arange(nx) - 0.5 * (nx - 1), np.arange(ny) - 0.5 * (ny - 1)

    def sky_image(self, theta, i: int):
        """The fitted sky of exposure ``i`` at ``theta`` (counts, (ny, nx) array or 0.0 without sky)."""
        p = np.asarray(theta, dtype=float)[self._sky_slices[i]]
        if p.size == 0:
            return 0.0
        if p.size == 1:
            return float(p[0])
        xs, ys = self._sky_axes(i)
        return p[0] + p[1] * xs[None, :] + p[2] * ys[:, None]

    def _sky_gradient(self, i, w):
        """d lnL / d (sky parameters of exposure i) from ``w = d lnL / d m``."""
        n = self._sky_slices[i].stop - self._sky_slices[i].start
        if n == 0:
            return np.zeros(0)
        if n == 1:
            return np.array([float(np.sum(w))])
        xs, ys = self._sky_axes(i)
        return np.array([float(np.sum(w)), float(w.sum(axis=0) @ xs), float(w.sum(axis=1) @ ys)])

    def _sky_derivative_images(self, i):
        """d m / d (sky parameters of exposure i), shape (n, ny, nx)."""
        sl = self._sky_slices[i]
        n = sl.stop - sl.start
        shape = self.exposures[i].shape
        out = np.zeros((n,) + shape)
        if n:
            out[0] = 1.0
        if n == 3:
            xs, ys = self._sky_axes(i)
            out[1] = xs[None, :]
            out[2] = ys[:, None]
        return out

    # ------------------------------------------------------------------ construction checks
    def _check_overlap(self) -> None:
        theta = self.scene.get_vector()
        state = self._scene_model.prepare(theta)
        n_src = len(self.scene.sources)
        seen_by = np.zeros(n_src, dtype=bool)
        for em, e in zip(self._models, self.exposures):
            e._astrometry.check_near_side(state.units, self._scene_model.source_labels, PhoDataError)
            g, _ = em.compute(state, jacobian=False)
            det = g[:, 3] * g[:, 5] - g[:, 4] ** 2
            rx = OVERLAP_NSIGMA * np.sqrt(g[:, 5] / det)
            ry = OVERLAP_NSIGMA * np.sqrt(g[:, 3] / det)
            ny, nx = e.shape
            hit = (g[:, 1] + rx > -0.5) & (g[:, 1] - rx < nx - 0.5) & (g[:, 2] + ry > -0.5) & (g[:, 2] - ry < ny - 0.5)
            src = np.zeros(n_src, dtype=bool)
            src[em.source_index[hit]] = True
            if not src.any():
                ra, dec = e.reference_radec
                raise PhoDataError(
                    f"exposure {e.name} (band {e.band}, centre ra={ra:.6f} dec={dec:.6f} deg) overlaps no source of the "
                    "scene; remove it from the list or check its WCS and the source positions"
                )
            seen_by |= src
        if not seen_by.all():
            i = int(np.flatnonzero(~seen_by)[0])
            s = self.scene.sources[i]
            raise PhoDataError(
                f"source s{i} ({s.kind} at ra={s.ra:.6f} dec={s.dec:.6f} deg) lies on no exposure, so its parameters "
                "are unconstrained; remove it from the scene or add an exposure that covers it"
            )

    # ------------------------------------------------------------------ evaluation
    def _dlnl_dm(self, i, m):
        """lnL contribution of exposure i and d lnL / d m (zero where not counted)."""
        e = self.exposures[i]
        if self.kind == "gaussian":
            r = e._data - m
            wr = e._weight * r
            # einsum, not vdot: a BLAS dot this long wakes OpenBLAS threads, whose spinning then
            # takes the cores the OpenMP pixel kernels need (measured: no 2-thread speed-up)
            value = -0.5 * float(np.einsum("ij,ij->", r, wr))
            if not math.isfinite(value):
                raise PhoValueError(_overflow_message(e, m))
            return value, wr
        counted = e.counted
        mc = np.where(counted, m, 1.0)
        if not np.all(mc > 0):
            bad = int(np.sum(mc <= 0))
            raise PhoValueError(
                f"{e.name}: the model is <= 0 on {bad} counted pixels (min {float(mc.min()):.3g} counts), where the "
                "Poisson likelihood is undefined; give the exposure a positive background (Exposure(..., background=...)) "
                "or use kind='gaussian'"
            )
        d = e._data
        value = float(np.sum(d * np.log(mc)) - np.sum(m[counted])) - self._lgamma[i]
        if not math.isfinite(value):
            raise PhoValueError(_overflow_message(e, m))
        return value, np.where(counted, d / mc - 1.0, 0.0)

    def _build_plan(self):
        """``(pho._stamp.StampPlan, amplitude arguments)`` for this likelihood, or None where the
        one-call path does not apply: not the cpu backend, the extension not built, an exposure
        with a PSF grid or a distorted (degree > 1) astrometry, or ``COMPILED_STAMP`` off."""
        mod = _stamp_module()
        be = self._backend
        if not COMPILED_STAMP or mod is None or not isinstance(be, CpuBackend):
            return None
        if any(em.psf_per_source or e._astrometry.degree != 1 for em, e in zip(self._models, self.exposures)):
            return None
        from . import _reference as ref

        sm = self._scene_model
        sources, amp_args = _plan_sources(sm)
        exposures = [
            _plan_exposure(sm, em, e, sources["aoff"], self.kind == "poisson", self._lgamma[i] if self._lgamma else 0.0,
                           self._sky_slices[i])
            for i, (em, e) in enumerate(zip(self._models, self.exposures))
        ]
        for d, e in zip(exposures, self.exposures):
            d["levels"] = _levels.grid_levels(e.shape, _levels.MAX_LEVEL)
        plan = mod.StampPlan(sources, exposures, ref._NODES, ref._WEIGHTS, ref.BOX_NSIGMA, ref._FMAX_EDGES,
                             ref._ORDER_TABLE, ref.FMAX_LIMIT, max(be.workers, os.cpu_count() or 1),
                             _levels.SIGMA_PER_NODE, _levels.level_box_nsigma(), _levels.HALF_WEIGHTS)
        return plan, amp_args, _level_settings()

    def _compiled(self, theta, want_grad: bool):
        """``(lnl, grad or None)`` by one compiled call, for a validated full ``theta``; None where
        the plan does not apply or the call met a value the per-step path turns into an error."""
        plan = self._plan
        if plan is False or (plan is not None and plan[2] != _level_settings()):
            plan = self._plan = self._build_plan()  # first call, or the level settings changed since
        if plan is None or not COMPILED_STAMP:
            return None
        stamp, amp_args, _ = plan
        amps = [None if a is None else a[0].amplitudes(theta[a[1]], theta[a[2]]) for a in amp_args]
        be = self._backend
        grad = np.empty(self.n_params) if want_grad else _NO_GRAD
        min_work = be.min_work_per_thread
        if min_work > 0:
            min_work = max(min_work, COMPILED_MIN_WORK_PER_THREAD)
        status, value = stamp.run(theta, amps, _gaussians.NEGLIGIBLE_FRACTION, be.workers, min_work, grad,
                                  want_grad)
        if status:
            return None
        return value, (grad if want_grad else None)

    def lnlike(self, theta) -> float:
        """Log-likelihood at ``theta`` (shape (P,))."""
        theta, src = self._split(theta)
        if self._plan is not None:
            out = self._compiled(theta, False)
            if out is not None:
                return out[0]
        return self._lnlike_steps(theta, src)

    def _lnlike_steps(self, theta, src) -> float:
        """:meth:`lnlike` step by step (model, backend, ln L in Python): every backend's path."""
        state = self._scene_model.prepare(src)
        total = 0.0
        for i, (em, e) in enumerate(zip(self._models, self.exposures)):
            g, _ = em.forward(state)
            m = self._backend.render(_kept(g, em.significant(g)), e.shape) + e.background
            if self._has_sky:
                m = m + self.sky_image(theta, i)
            total += self._dlnl_dm(i, m)[0]
        return total

    def lnlike_and_grad(self, theta):
        """Log-likelihood and its gradient.

        Parameters
        ----------
        theta : array_like of shape (P,)

        Returns
        -------
        lnl : float
        grad : ndarray of shape (P,)
            d lnL / d theta, in ``parameter_names`` order.
        """
        theta, src = self._split(theta)
        if self._plan is not None:
            out = self._compiled(theta, True)
            if out is not None:
                return out
        return self._lnlike_and_grad_steps(theta, src)

    def _lnlike_and_grad_steps(self, theta, src):
        """:meth:`lnlike_and_grad` step by step (every backend's path; the errors' source)."""
        state = self._scene_model.prepare(src)
        P, ps = self.n_params, self.n_source_params
        total = 0.0
        acc = np.zeros(P)
        for i, (em, e) in enumerate(zip(self._models, self.exposures)):
            g, cache = em.forward(state)
            keep = em.significant(g)
            gk = _kept(g, keep)
            m = self._backend.render(gk, e.shape) + e.background
            if self._has_sky:
                m = m + self.sky_image(theta, i)
            value, w = self._dlnl_dm(i, m)
            if self._has_sky:
                acc[self._sky_slices[i]] += self._sky_gradient(i, w)
            total += value
            gg = self._backend.gradient(gk, w)  # (G, 6), or (kept, 6)
            if keep is not None:
                gg_all = np.zeros_like(g)
                gg_all[keep] = gg
                gg = gg_all
            local = em.vjp(state, cache, gg)  # (S, 7): chained through the model's Jacobian
            # the scene's indices run to ps = scene.n_params, its "unused" slot (the sky's follow)
            acc[:ps] += np.bincount(em.vjp_index, weights=local.ravel(), minlength=ps + 1)[:ps]
        if not np.all(np.isfinite(acc)):
            bad = [self.parameter_names[k] for k in np.flatnonzero(~np.isfinite(acc))]
            raise PhoValueError(
                f"the gradient of ln L overflows double precision in {', '.join(bad)} at theta = {theta.tolist()} "
                "(ln L itself is finite); the fluxes are far beyond the data: bound them (priors) or rescale the data"
            )
        return total, acc

    def model_images(self, theta) -> list[np.ndarray]:
        """Model images (counts, background and fitted sky included), one (ny, nx) array per exposure."""
        theta, src = self._split(theta)
        state = self._scene_model.prepare(src)
        out = []
        for i, (em, e) in enumerate(zip(self._models, self.exposures)):
            g, _ = em.forward(state)
            m = self._backend.render(_kept(g, em.significant(g)), e.shape) + e.background
            out.append(m + self.sky_image(theta, i) if self._has_sky else m)
        return out

    def gradient_images(self, theta, exposure_index: int) -> np.ndarray:
        """d model / d theta for one exposure, by the reference backend (for diagnostics).

        Parameters
        ----------
        theta : array_like of shape (P,)
        exposure_index : int

        Returns
        -------
        ndarray of shape (P, ny, nx)
            Counts per unit of each parameter. Memory ``8 * P * ny * nx`` bytes plus
            ``GRADIENT_IMAGES_CHUNK_BYTES`` on the way: use on stamps, not whole mosaics.
        """
        from ._reference import render_derivatives

        theta, src = self._split(theta)
        em = self._models[exposure_index]
        e = self.exposures[exposure_index]
        g, jac = em.compute(self._scene_model.prepare(src))
        ps = self.n_source_params
        out = np.zeros((ps + 1,) + e.shape)  # the scene's rows and its "unused" slot ps
        # Gaussians in chunks, so the (chunk, 6, ny, nx) derivative images stay under ~64 MB
        chunk = max(1, int(GRADIENT_IMAGES_CHUNK_BYTES // (48 * e.shape[0] * e.shape[1])))
        for start in range(0, len(g), chunk):
            part = slice(start, start + chunk)
            d = render_derivatives(g[part], e.shape)  # (chunk, 6, ny, nx)
            per_local = np.einsum("gcij,gck->gkij", d, jac[part])  # (chunk, 7, ny, nx)
            for k in range(N_LOCAL):
                np.add.at(out, em.param_index[part, k], per_local[:, k])
        if not self._has_sky:
            return out[:ps]
        full = np.zeros((self.n_params,) + e.shape)  # then the sky's rows, this exposure's filled
        full[:ps] = out[:ps]
        full[self._sky_slices[exposure_index]] = self._sky_derivative_images(exposure_index)
        return full

    def model_derivatives_fd(self, theta, steps, lower=None, upper=None) -> list[np.ndarray]:
        """d model / d theta per exposure by finite differences, rendering only the source moved.

        Parameters
        ----------
        theta : array_like of shape (P,)
        steps : ndarray of shape (P,)
            Step of each parameter (central differences; one-sided where ``theta +/- step``
            leaves ``[lower, upper]``, e.g. q = 1).
        lower, upper : ndarray of shape (P,), optional
            Hard bounds (default :meth:`parameter_bounds`).

        Returns
        -------
        list of ndarray of shape (P, ny, nx)
            Counts per unit of each parameter. A parameter moves only its own source's image
            Gaussians, so each difference renders one source (with the Gaussians kept at
            ``theta``, so the culling cannot jump between the two sides). The sky parameters
            enter the model linearly: their rows are the exact derivatives.
        """
        theta, src = self._split(theta)
        if lower is None or upper is None:
            lower, upper = self.parameter_bounds()
        if self._has_sky:
            theta = src
        state = self._scene_model.prepare(theta)
        out = [np.zeros((self.n_params,) + e.shape) for e in self.exposures]
        kept = []  # per exposure: the significant Gaussians at theta
        for em in self._models:
            sig = em.significant(em.forward(state)[0])
            kept.append(np.ones(em.n_gauss, dtype=bool) if sig is None else sig)
        for i in range(len(self.scene.sources)):
            rows = [keep & (em.source_index == i) for keep, em in zip(kept, self._models)]
            for j in self.scene.source_parameter_indices(i):
                h = float(steps[j])
                up, down = theta.copy(), theta.copy()
                up[j] += h
                down[j] -= h
                if up[j] > upper[j]:
                    up[j], span = theta[j], h
                elif down[j] < lower[j]:
                    down[j], span = theta[j], h
                else:
                    span = 2.0 * h
                s_up, s_down = self._scene_model.prepare(up), self._scene_model.prepare(down)
                for e, (em, ex) in enumerate(zip(self._models, self.exposures)):
                    if not rows[e].any():
                        continue
                    plus = self._backend.render(np.ascontiguousarray(em.forward(s_up)[0][rows[e]]), ex.shape)
                    minus = self._backend.render(np.ascontiguousarray(em.forward(s_down)[0][rows[e]]), ex.shape)
                    out[e][j] = (plus - minus) / span
        for e in range(len(self.exposures)):
            sl = self._sky_slices[e]
            if sl.stop > sl.start:
                out[e][sl] = self._sky_derivative_images(e)
        return out

    def with_psf_at(self, theta) -> "Likelihood":
        """A copy whose exposures with a PSF grid take each source's mixture at its position for
        ``theta`` (shape (P,)) instead of the scene's starting values; exposures with one PSF,
        the backend and the data are shared.

        Raises
        ------
        PhoValueError
            An invalid ``theta``; a source outside a grid's hull (unless the grid clamps).
        """
        _, theta = self._split(theta)  # the sources' part (sky parameters, if any, do not move PSFs)
        clone = copy.copy(self)
        models = []
        for em, e in zip(self._models, self.exposures):
            if em.psf_per_source:
                if isinstance(em, ExposureModel):
                    em = ExposureModel(self._scene_model, e, psf_theta=theta)
                    em.compiled = self.backend == "cpu"
                else:  # the Monte Carlo model, with the same draws
                    em = type(em)(self._scene_model, e, psf_theta=theta)
            models.append(em)
        clone._models = models
        clone._plan = False  # rebuilt on first use (buffers are per likelihood)
        return clone

    def with_workers(self, workers: int | None) -> "Likelihood":
        """A copy of this likelihood whose pixel backend uses ``workers`` threads.

        The copy shares the exposures and the scene model (nothing is recomputed); only the
        backend is new. A backend given as an object rather than a name is shared as it is.
        """
        name = self._backend_spec[0]
        clone = copy.copy(self)
        if name is not None:
            clone._backend = _resolve_backend(name, workers)
            clone._backend_spec = (name, workers)
        clone._plan = False  # rebuilt on first use (buffers are per likelihood)
        return clone

    def __getstate__(self):
        # backends may hold compiled modules or GPU handles: pickle the name, rebuild on load
        state = dict(self.__dict__)
        state["_plan"] = False  # compiled buffers: rebuilt on first use
        if state["_backend_spec"][0] is not None:
            state["_backend"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._backend is None:
            name, workers = self._backend_spec
            self._backend = _resolve_backend(name, workers)

    def __repr__(self) -> str:
        return f"Likelihood({len(self.scene.sources)} sources, {len(self.exposures)} exposures, kind={self.kind!r}, backend={self.backend!r})"
