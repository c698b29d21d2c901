"""Scene + exposure -> image Gaussians and their Jacobian to the source parameters.

Every source is a mixture of circular Gaussians on the sky (a point source: one of zero width;
a Sersic: M of fixed radii ``r_m`` with amplitudes ``a_m(n, rh)``). Sheared by (q, pa), mapped to
pixels by the exposure's matrix ``D`` and convolved with each of the L PSF Gaussians, a source
becomes M x L image Gaussians (columns ``A, x0, y0, Fxx, Fxy, Fyy``, docs/ARCHITECTURE.md). The
equations, as implemented here, are in docs/model.md.

The Jacobian of the six columns of each image Gaussian is returned with respect to K = 7 local
parameters, in this order::

    flux (in the exposure's band), ra, dec, shape1, shape2, n, rh

where (shape1, shape2) is (q, pa), (g1, g2) or (eta_plus, eta_cross) per ``scene.shape_parameters``. For a point source
columns 3..6 are zero. ``param_index`` (G, 7) says where each local parameter sits in the scene
vector; unused slots hold ``P`` (one past the end), so that
``np.bincount(param_index.ravel(), weights=..., minlength=P + 1)[:P]`` scatters sums into the
gradient.

All work is vectorized over sources and components: per call, per exposure, a few dozen NumPy
operations whatever the number of sources (loops only over source groups: point sources, and
Sersics grouped by profile object).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .exposure import unit_vectors
from .psfgrid import _mixture_parameters
from .sources import Sersic

__all__ = ["SceneModel", "ExposureModel", "ImageGaussians", "image_gaussians", "N_LOCAL", "LOCAL_PARAMETERS"]

#: Local parameters of the Jacobian's last axis.
LOCAL_PARAMETERS = ("flux", "ra", "dec", "shape1", "shape2", "n", "rh")
N_LOCAL = len(LOCAL_PARAMETERS)
_TWO_PI = 2.0 * math.pi

#: An image Gaussian is left out of a stamp when the counts it can put there are below this
#: fraction of its source's counts in the exposure. The bound used is ``|A|`` (its peak value)
#: times the smaller of the stamp's pixel count and its own area ``2 pi / sqrt(det F)``. This
#: drops the Sersic table's widest components (radii up to 30") where their amplitudes are tiny,
#: which would otherwise each cost a full pass over the stamp; what is dropped is below the
#: 1e-5 of the bounding-box cutoff. Set to 0 to keep every Gaussian.
NEGLIGIBLE_FRACTION = 1e-7

#: Profile components much narrower than a PSF Gaussian are folded onto a few of them (docs/model.md,
#: "Narrow components folded"): for PSF Gaussian l, every component whose sky variance, at the largest
#: a shape can give it in the exposure's pixels (``r_m^2 lambda_max(D D^T)``), is at most
#: ``NARROW_RATIO`` times the smallest variance of ``P_l`` hands its amplitude to ``NARROW_NODES``
#: of them by Lagrange interpolation in r^2. The set is fixed per exposure (radii, D and PSF are), so
#: the model stays one smooth function of the parameters. Set ``NARROW_NODES = 0`` to fold nothing.
NARROW_RATIO = 1.0
NARROW_NODES = 5


def narrow_fold(r2, psf_cov, D, ratio: float | None = None, nodes: int | None = None) -> np.ndarray | None:
    """Amplitude map of one Sersic group in one exposure, folding its narrow components.

    Parameters
    ----------
    r2 : ndarray of shape (M,)
        Squared profile radii (arcsec^2), ascending or not.
    psf_cov : ndarray of shape (S or 1, L, 3)
        PSF covariances (pixels^2; xx, xy, yy), per source for a PSF grid.
    D : ndarray of shape (2, 2)
        The exposure's sky-to-pixel matrix (pixels per arcsec).
    ratio, nodes : optional
        Default ``NARROW_RATIO`` and ``NARROW_NODES``.

    Returns
    -------
    W : ndarray of shape (M * L, M), or None
        Image Gaussian ``n = m L + l`` takes the profile amplitude ``(W @ a)[n]`` (and so its
        derivatives); rows of folded components are zero. None when nothing is folded (then
        ``W[n, m] = [m == n // L]``).
    """
    ratio = NARROW_RATIO if ratio is None else float(ratio)
    nodes = NARROW_NODES if nodes is None else int(nodes)
    r2 = np.asarray(r2, dtype=float).ravel()
    cov = np.asarray(psf_cov, dtype=float).reshape(-1, np.shape(psf_cov)[-2], 3)
    M, L = len(r2), cov.shape[1]
    if nodes < 2 or ratio <= 0:
        return None
    d2max = float(np.linalg.eigvalsh(D @ D.T)[-1])
    # smallest variance of each PSF Gaussian (over sources, for a grid): lambda_min of [[xx, xy], [xy, yy]]
    half_tr = 0.5 * (cov[..., 0] + cov[..., 2])
    lam = (half_tr - np.sqrt(np.maximum(half_tr**2 - (cov[..., 0] * cov[..., 2] - cov[..., 1] ** 2), 0.0))).min(axis=0)
    W = np.zeros((M * L, M))
    W[np.arange(M * L), np.repeat(np.arange(M), L)] = 1.0
    folded = False
    for l in range(L):
        narrow = np.flatnonzero(r2 * d2max <= ratio * lam[l])
        if len(narrow) <= nodes:
            continue
        rn = r2[narrow]
        chosen: list[int] = []
        for target in np.linspace(rn.min(), rn.max(), nodes):  # nodes spread evenly in r^2
            free = [i for i in range(len(narrow)) if i not in chosen]
            chosen.append(free[int(np.argmin(np.abs(rn[free] - target)))])
        xs = rn[chosen]
        if len(np.unique(xs)) < nodes:  # equal radii (a union of tables): nothing to gain
            continue
        rows = narrow * L + l
        W[rows, narrow] = 0.0
        for j, c in enumerate(chosen):
            others = np.delete(xs, j)
            W[narrow[c] * L + l, narrow] = np.prod((rn[:, None] - others) / (xs[j] - others), axis=1)
        folded = True
    return W if folded else None


class ImageGaussians(NamedTuple):
    """Image Gaussians of one scene in one exposure.

    Attributes
    ----------
    gaussians : ndarray of shape (G, 6)
        ``A, x0, y0, Fxx, Fxy, Fyy`` (counts, pixels, pixels^-2), C-contiguous float64.
    jacobian : ndarray of shape (G, 6, 7) or None
        d column / d local parameter (``LOCAL_PARAMETERS``), with A's dependence on F folded in.
    param_index : ndarray of int, shape (G, 7)
        Index in the scene vector of each local parameter (``P`` where unused).
    source_index : ndarray of int, shape (G,)
        Source each Gaussian belongs to.
    """

    gaussians: np.ndarray
    jacobian: np.ndarray | None
    param_index: np.ndarray
    source_index: np.ndarray


class _Group:
    """Static layout of one group of sources (point sources, or Sersics sharing a profile)."""

    def __init__(self, kind, rows, idx, profile=None):
        self.kind = kind
        self.rows = np.asarray(rows, dtype=np.intp)  # positions of the group's sources in the scene
        self.idx = idx  # (S, 6) scene indices: ra, dec, shape1, shape2, n, rh (sersic) or (S, 2)
        self.flux_idx = None  # (S, B) scene indices of the fluxes, band order
        self.profile = profile
        if profile is not None:
            r = np.asarray(profile.radii_arcsec, dtype=float)
            self.r2 = (r * r)[:, None, None]  # (M, 1, 1) arcsec^2
            self.n_comp = len(r)
        else:
            self.n_comp = 1


class _GroupState(NamedTuple):
    th: np.ndarray  # (S, 6) or (S, 2) parameters from the idx columns
    flux: np.ndarray  # (S, B)
    shape: np.ndarray | None  # (S, 3, 3): R, dR/dshape1, dR/dshape2 (xx, xy, yy)
    amps: tuple | None  # a, da_dn, da_drh, each (S, M)
    damps: np.ndarray | None  # (S, M, 2): da/dn, da/drh


class SceneState(NamedTuple):
    """Exposure-independent quantities of one parameter vector (computed once per call)."""

    theta: np.ndarray
    units: np.ndarray  # (3, S_total, 3) unit vectors of all sources and their derivatives
    groups: tuple


def _shape_matrices(s1, s2, shape_parameters):
    """Sky shape matrix R (covariance of a unit circular Gaussian after shearing) and its
    derivatives to the two shape parameters; returns (S, 3, 3) = [R, dR/ds1, dR/ds2] x (xx, xy, yy).
    """
    out = np.empty(s1.shape + (3, 3))
    if shape_parameters == "q_pa":
        q, pa = s1, s2
        c2, sn2 = np.cos(2.0 * pa), np.sin(2.0 * pa)
        q2 = q * q
        p, m = 0.5 * (1.0 + q2), 0.5 * (1.0 - q2)
        out[:, 0, 0] = p - m * c2
        out[:, 0, 1] = m * sn2
        out[:, 0, 2] = p + m * c2
        out[:, 1, 0] = q * (1.0 + c2)
        out[:, 1, 1] = -q * sn2
        out[:, 1, 2] = q * (1.0 - c2)
        out[:, 2, 0] = 2.0 * m * sn2
        out[:, 2, 1] = 2.0 * m * c2
        out[:, 2, 2] = -2.0 * m * sn2
        return out
    if shape_parameters == "eta":
        return _eta_shape_matrices(s1, s2, out)
    g1, g2 = s1, s2
    g = np.hypot(g1, g2)
    safe = np.where(g > 0, g, 1.0)
    u1 = np.where(g > 0, g1 / safe, 0.0)  # d|g|/dg1; 0 at g = 0 (mean of the one-sided values)
    u2 = np.where(g > 0, g2 / safe, 0.0)
    k = 1.0 / (1.0 + g) ** 2
    P = (1.0 + g * g) * k
    dP = 2.0 * k * (g - 1.0) / (1.0 + g)
    dk = -2.0 * k / (1.0 + g)
    out[:, 0, 0] = P - 2.0 * k * g1
    out[:, 0, 1] = 2.0 * k * g2
    out[:, 0, 2] = P + 2.0 * k * g1
    for j, (u, one1, one2) in enumerate(((u1, 1.0, 0.0), (u2, 0.0, 1.0)), start=1):
        dPj, dkj = dP * u, dk * u
        out[:, j, 0] = dPj - 2.0 * dkj * g1 - 2.0 * k * one1
        out[:, j, 1] = 2.0 * dkj * g2 + 2.0 * k * one2
        out[:, j, 2] = dPj + 2.0 * dkj * g1 + 2.0 * k * one1
    return out


def _eta_shape_matrices(ep, ec, out):
    """``_shape_matrices`` for conformal shear (docs/model.md, "Conformal shear").

    With ``e = |eta|``, ``q^2 = exp(-2e)``, ``p = (1 + q^2)/2`` and ``k = (1 - q^2)/(2e)`` (-> 1 at
    e = 0), ``R = p I + k [[-eta_plus, eta_cross], [eta_cross, eta_plus]]``, regular at eta = 0.
    ``de/deta_i = eta_i/e`` is taken as 0 at e = 0 (the trace of R has a kink there, as in q).
    """
    e = np.hypot(ep, ec)
    q2 = np.exp(-2.0 * e)
    p = 0.5 * (1.0 + q2)
    small = e < 1e-4
    safe = np.where(small, 1.0, e)
    # k = -expm1(-2e)/(2e) and dk/de = (q^2 - k)/e, by their Taylor series where e is tiny
    k = np.where(small, 1.0 - e + (2.0 / 3.0) * e * e - e**3 / 3.0, -np.expm1(-2.0 * e) / (2.0 * safe))
    dk = np.where(small, -1.0 + (4.0 / 3.0) * e - e * e + (8.0 / 15.0) * e**3, (q2 - k) / safe)
    u1 = np.where(e > 0, ep / np.where(e > 0, e, 1.0), 0.0)
    u2 = np.where(e > 0, ec / np.where(e > 0, e, 1.0), 0.0)
    out[:, 0, 0] = p - k * ep
    out[:, 0, 1] = k * ec
    out[:, 0, 2] = p + k * ep
    for j, (u, one1, one2) in enumerate(((u1, 1.0, 0.0), (u2, 0.0, 1.0)), start=1):
        dp, dkj = -q2 * u, dk * u
        out[:, j, 0] = dp - dkj * ep - k * one1
        out[:, j, 1] = dkj * ec + k * one2
        out[:, j, 2] = dp + dkj * ep + k * one1
    return out


def _init_layout(model, scene) -> list[int]:
    """Fill the layout a scene model shares with the Monte Carlo model: ``scene``, ``n_params``,
    ``shape_parameters``, ``source_labels``, ``ra_idx``, ``dec_idx`` and ``groups`` holding the
    point-source group (if any); return the rows of the Sersic sources, for the caller's groups."""
    model.scene = scene
    model.n_params = scene.n_params
    model.shape_parameters = scene.shape_parameters
    nb = len(scene.bands)
    point_rows, point_idx, sersic_rows = [], [], []
    ra_idx, dec_idx = [], []
    for i, s in enumerate(scene.sources):
        idx = scene.source_parameter_indices(i)
        ra_idx.append(idx[nb])
        dec_idx.append(idx[nb + 1])
        if isinstance(s, Sersic):
            sersic_rows.append(i)
        else:
            point_rows.append(i)
            point_idx.append(idx)
    #: labels of the sources in messages, scene order
    model.source_labels = [f"source s{i} ({s.kind})" for i, s in enumerate(scene.sources)]
    model.ra_idx = np.array(ra_idx, dtype=np.intp)
    model.dec_idx = np.array(dec_idx, dtype=np.intp)
    model.groups = []
    if point_rows:
        idx = np.array(point_idx)
        g = _Group("point", point_rows, idx[:, nb:])
        g.flux_idx = idx[:, :nb]
        model.groups.append(g)
    return sersic_rows


class SceneModel:
    """Static layout of a scene for the model: source groups and index arrays.

    Parameters
    ----------
    scene : pho.Scene
    """

    def __init__(self, scene):
        sersic_rows = _init_layout(self, scene)
        nb = len(scene.bands)
        sersic: dict[int, list] = {}
        for i in sersic_rows:
            s = scene.sources[i]
            if not hasattr(s.profile, "amplitudes"):
                from .errors import PhoValueError

                raise PhoValueError(
                    f"source s{i} has the profile {s.profile!r}, which has no Gaussian-mixture amplitudes; render "
                    "it with backend='mc' (pho.MonteCarloRenderer) or give it a table profile (profile=None)"
                )
            key = id(s.profile)
            sersic.setdefault(key, [s.profile, [], []])
            sersic[key][1].append(i)
            sersic[key][2].append(scene.source_parameter_indices(i))
        for profile, rows, idxs in sersic.values():
            idx = np.array(idxs)
            g = _Group("sersic", rows, idx[:, nb:], profile)
            g.flux_idx = idx[:, :nb]
            self.groups.append(g)

    def prepare(self, theta) -> SceneState:
        """Exposure-independent pieces for parameters ``theta`` (assumed valid, see
        ``Scene.check_vector``): unit vectors of positions, shape matrices, profile amplitudes."""
        units = unit_vectors(theta[self.ra_idx], theta[self.dec_idx])
        states = []
        for g in self.groups:
            th = theta[g.idx]
            flux = theta[g.flux_idx]
            if g.kind == "point":
                states.append(_GroupState(th, flux, None, None, None))
            else:
                shape = _shape_matrices(th[:, 2], th[:, 3], self.shape_parameters)
                amps = g.profile.amplitudes(th[:, 4], th[:, 5])
                damps = np.empty(amps[1].shape + (2,))
                damps[..., 0] = amps[1]
                damps[..., 1] = amps[2]
                states.append(_GroupState(th, flux, shape, amps, damps))
        return SceneState(theta, units, tuple(states))


_RENDER = []


def _render_module():
    """pho._render, imported on first use (it is optional: the reference path never needs it)."""
    if not _RENDER:
        from . import _render

        _RENDER.append(_render)
    return _RENDER[0]


def _group_psf(pp, rows, counts_per_flux) -> dict:
    """PSF arrays of one source group: ``amp_cpf, x, y, norm`` of shape (1 or S, L),
    ``cov, F`` of shape (1 or S, L, 3) (xx, xy, yy), from ``pp`` (S_total or 1, L, 6)
    (columns amp, x, y, cxx, cxy, cyy) at ``rows`` (the group's sources, or ``slice(0, 1)``
    for the exposure's single mixture)."""
    p = pp[rows]
    cov = np.ascontiguousarray(p[..., 3:6])
    det = cov[..., 0] * cov[..., 2] - cov[..., 1] ** 2
    amp_cpf = p[..., 0] * counts_per_flux
    F = np.stack([cov[..., 2], -cov[..., 1], cov[..., 0]], axis=-1) / det[..., None]
    return dict(amp_cpf=amp_cpf, x=np.ascontiguousarray(p[..., 1]), y=np.ascontiguousarray(p[..., 2]),
                cov=cov, F=F, norm=amp_cpf / (_TWO_PI * np.sqrt(det)))


def _exposure_psf(model, psf_theta) -> None:
    """Set an exposure model's PSF attributes (``ExposureModel`` and the Monte Carlo model share
    them): ``psf_per_source`` (the exposure's PSF is a grid), ``psf_positions`` (S_total, 2) and
    ``psf_params`` (S_total, L, 6), each source's mixture taken at its position for ``psf_theta``
    (default the scene's values) and fixed from then on (None for one mixture), and ``_gpsf``,
    per group of ``model.scene_model`` the arrays of :func:`_group_psf`."""
    sm, exposure = model.scene_model, model.exposure
    model.psf_per_source = bool(getattr(exposure, "psf_varies", False))
    if model.psf_per_source:
        theta0 = sm.scene.get_vector() if psf_theta is None else np.asarray(psf_theta, dtype=float)
        units = unit_vectors(theta0[sm.ra_idx], theta0[sm.dec_idx])
        xs, ys = exposure._astrometry.project_units(units, jacobian=False, names=sm.source_labels)
        pp = exposure.psf_parameters_at(xs, ys, labels=sm.source_labels)
        model.psf_positions = np.column_stack([xs, ys])  # where the mixtures were taken, exposure pixels
        model.psf_params = pp
    else:
        pp = _mixture_parameters(exposure.psf)[None]
        model.psf_positions = model.psf_params = None
    model._gpsf = [_group_psf(pp, g.rows if model.psf_per_source else slice(0, 1), exposure.counts_per_flux)
                   for g in sm.groups]


def _band_index(scene, exposure) -> int:
    """Index of the exposure's band in ``scene.bands``; PhoValueError naming both if it is not there."""
    from .errors import PhoValueError

    if exposure.band not in scene.bands:
        raise PhoValueError(
            f"{exposure.name}: band {exposure.band!r} is not one of the scene's bands {list(scene.bands)}; "
            "give the sources a flux in that band"
        )
    return scene.bands.index(exposure.band)


def _index_arrays(scene_model, band_index: int, per_source):
    """Scene-vector indices of an exposure model's image Gaussians.

    ``per_source`` holds, per group of ``scene_model.groups``, the number of image Gaussians of
    each of its sources (an int, or an array (S,)). Returns ``param_index`` (G, 7) (the scene index
    of each Gaussian's local parameters, ``n_params`` where unused), ``source_index`` (G,) and
    ``vjp_index`` (sum of S * 7,), the same per source, for scattering vector-Jacobian products.
    """
    P = scene_model.n_params
    pidx, sidx, vidx = [], [], []
    for g, each in zip(scene_model.groups, per_source):
        full = np.full((len(g.rows), N_LOCAL), P, dtype=np.intp)
        full[:, 0] = g.flux_idx[:, band_index]
        full[:, 1 : 1 + g.idx.shape[1]] = g.idx
        pidx.append(np.repeat(full, each, axis=0))
        sidx.append(np.repeat(g.rows, each))
        vidx.append(full)
    return (np.ascontiguousarray(np.concatenate(pidx)), np.ascontiguousarray(np.concatenate(sidx), dtype=np.intp),
            np.ascontiguousarray(np.concatenate(vidx)).ravel())


class ExposureModel:
    """The scene-to-image-Gaussians map for one exposure (static parts precomputed).

    Parameters
    ----------
    scene_model : SceneModel
    exposure : pho.Exposure
    psf_theta : ndarray of shape (P,), optional
        For an exposure whose PSF varies over the field (a ``PSFGrid``): the parameters whose
        source positions pick each source's PSF mixture (default ``scene.get_vector()``). The
        mixtures are fixed here, once: later calls at other positions use them unchanged, so
        the model is an exact, smooth function of the parameters and the gradient is its exact
        gradient (docs/model.md, "PSFs that vary over the field"). Unused for a single PSF.

    Raises
    ------
    PhoValueError
        The exposure's band is not one of the scene's bands; for a PSF grid, a source outside
        the grid's hull (unless the grid clamps) or at a non-finite position.
    """

    def __init__(self, scene_model: SceneModel, exposure, psf_theta=None):
        self.scene_model = scene_model
        self.exposure = exposure
        self.band_index = _band_index(scene_model.scene, exposure)
        L = exposure.psf.n_gauss
        self.n_psf = L
        _exposure_psf(self, psf_theta)  # psf_per_source, psf_positions, psf_params and _gpsf
        D = exposure.D
        d00, d01, d10, d11 = D[0, 0], D[0, 1], D[1, 0], D[1, 1]
        # T = D R D^T as a linear map of (Rxx, Rxy, Ryy) -> (Txx, Txy, Tyy): T = R @ MT
        self.MT = np.array(
            [
                [d00 * d00, d00 * d10, d10 * d10],
                [2 * d00 * d01, d00 * d11 + d01 * d10, 2 * d10 * d11],
                [d01 * d01, d01 * d11, d11 * d11],
            ]
        )
        #: (sum over groups of S, 7) scene index of each source's local parameters (P = unused): vjp_index
        self.param_index, self.source_index, self.vjp_index = _index_arrays(
            scene_model, self.band_index, [g.n_comp * L for g in scene_model.groups])
        self.n_gauss = len(self.source_index)
        # flattened (N = M * L, n = m * L + l) constants of each group for the fast path
        self._flat = []
        for g, gp in zip(scene_model.groups, self._gpsf):
            if g.kind == "point":
                self._flat.append(None)
                continue
            M = g.n_comp
            r2 = np.repeat(g.r2.ravel(), L)

            def tile(a):  # (1 or S, L) -> (N,) or (S, N), n = m * L + l
                return np.ascontiguousarray(np.tile(a, (1, M))[0] if len(a) == 1 else np.tile(a, (1, M)))

            fold = narrow_fold(g.r2.ravel(), gp["cov"], D)
            self._flat.append(
                dict(
                    r2=r2,
                    cxx=tile(gp["cov"][..., 0]), cxy=tile(gp["cov"][..., 1]), cyy=tile(gp["cov"][..., 2]),
                    amp=tile(gp["amp_cpf"] / _TWO_PI),
                    px=tile(gp["x"]), py=tile(gp["y"]),
                    m_index=np.repeat(np.arange(M, dtype=np.intp), L), M=M, N=M * L,
                    # narrow components folded (narrow_fold): the (N, M) amplitude map, or None
                    fold=fold, n_index=np.arange(M * L, dtype=np.intp),
                )
            )

    def significant(self, gaussians: np.ndarray) -> np.ndarray | None:
        """Which image Gaussians can matter in this stamp (see ``NEGLIGIBLE_FRACTION``).

        Parameters
        ----------
        gaussians : ndarray of shape (G, 6)
            From :meth:`forward`, in its order.

        Returns
        -------
        keep : ndarray of bool, shape (G,), or None
            None when every Gaussian is kept (the common case for compact sources).
        """
        if NEGLIGIBLE_FRACTION <= 0:
            return None
        g = gaussians
        if self.compiled:
            keep = np.empty(len(g), dtype=np.uint8)
            n_keep = _render_module().significant_mask(
                g, self.source_index, np.empty(len(self.scene_model.scene.sources)),
                float(self.exposure.shape[0] * self.exposure.shape[1]), NEGLIGIBLE_FRACTION, keep,
            )
            return None if n_keep == len(g) else keep.view(bool)
        amp = np.abs(g[:, 0])
        area = _TWO_PI / np.sqrt(g[:, 3] * g[:, 5] - g[:, 4] * g[:, 4])
        total = np.bincount(self.source_index, weights=amp * area)
        bound = amp * np.minimum(area, self.exposure.shape[0] * self.exposure.shape[1])
        keep = bound >= NEGLIGIBLE_FRACTION * total[self.source_index]
        return None if keep.all() else keep

    def compute(self, state: SceneState, jacobian: bool = True):
        """Image Gaussians (G, 6) and, if asked, their Jacobian (G, 6, 7) for a prepared state."""
        x_all, y_all, J_all = self.exposure._astrometry.project_units(state.units, names=self.scene_model.source_labels)
        outs, jacs = [], []
        for g, st, gp, flat in zip(self.scene_model.groups, state.groups, self._gpsf, self._flat):
            rows = g.rows
            x, y, J = x_all[rows], y_all[rows], J_all[rows]
            flux = st.flux[:, self.band_index]
            if g.kind == "point":
                out, jac = self._point(gp, flux, x, y, J, jacobian)
            else:
                out, jac = self._sersic(g, gp, st, flux, x, y, J, jacobian, flat["fold"])
            outs.append(out)
            jacs.append(jac)
        if len(outs) == 1:
            return outs[0], jacs[0]
        return np.concatenate(outs), (np.concatenate(jacs) if jacobian else None)

    # ------------------------------------------------------------------ fast path for the likelihood
    #: Whether :meth:`forward` computes the galaxies' Gaussians with the compiled loop
    #: (``pho._render.sersic_gaussians``; set by a Likelihood on the cpu backend) or in NumPy (the
    #: default, the reference backend's path).
    compiled = False

    def forward(self, state: SceneState):
        """Image Gaussians (G, 6) and a cache for :meth:`vjp` (the likelihood's path).

        Same Gaussians, in the same order, as :meth:`compute`; the Jacobian is not formed. With
        ``self.compiled`` set, the galaxies' Gaussians come from the compiled loop (equal to the
        NumPy expressions to rounding).
        """
        x_all, y_all, J_all = self.exposure._astrometry.project_units(state.units, names=self.scene_model.source_labels)
        outs, caches = [], []
        for g, st, flat, gp in zip(self.scene_model.groups, state.groups, self._flat, self._gpsf):
            rows = g.rows
            x, y, J = x_all[rows], y_all[rows], J_all[rows]
            flux = st.flux[:, self.band_index]
            if flat is None:
                out, _ = self._point(gp, flux, x, y, J, False)
                caches.append((J, None))
                outs.append(out)
                continue
            S, N = len(flux), flat["N"]
            T = st.shape @ self.MT  # (S, 3, 3)
            out = np.empty((S, N, 6))
            # each Gaussian's profile amplitude is amps[:, m_index[n]] (narrow components folded: narrow_fold)
            fold = flat["fold"]
            amps, m_index = (st.amps[0], flat["m_index"]) if fold is None else (st.amps[0] @ fold.T, flat["n_index"])
            if self.compiled:
                base = np.empty((S, N))
                abase = np.empty((S, N))
                args = (np.ascontiguousarray(flux), np.ascontiguousarray(x), np.ascontiguousarray(y),
                        np.ascontiguousarray(T[:, 0, :]), np.ascontiguousarray(amps))
                psf_cols = [flat[k] for k in ("cxx", "cxy", "cyy", "amp", "px", "py")]
                if psf_cols[0].ndim == 1:
                    _render_module().sersic_gaussians(*args, flat["r2"], *psf_cols, m_index, out, base, abase)
                else:  # one PSF mixture per source (a PSF grid): one call per source
                    for s in range(S):
                        _render_module().sersic_gaussians(
                            *(a[s : s + 1] for a in args), flat["r2"], *(c[s] for c in psf_cols), m_index,
                            out[s : s + 1], base[s : s + 1], abase[s : s + 1],
                        )
            else:
                r2 = flat["r2"]
                cxx = r2 * T[:, 0, 0:1] + flat["cxx"]
                cxy = r2 * T[:, 0, 1:2] + flat["cxy"]
                cyy = r2 * T[:, 0, 2:3] + flat["cyy"]
                inv = 1.0 / (cxx * cyy - cxy * cxy)
                base = flat["amp"] * np.sqrt(inv)  # (S, N) counts per flux per amplitude
                abase = amps[:, m_index] * base
                np.multiply(flux[:, None], abase, out=out[:, :, 0])
                np.add(x[:, None], flat["px"], out=out[:, :, 1])
                np.add(y[:, None], flat["py"], out=out[:, :, 2])
                np.multiply(cyy, inv, out=out[:, :, 3])
                np.multiply(cxy, -inv, out=out[:, :, 4])
                np.multiply(cxx, inv, out=out[:, :, 5])
            caches.append((J, (flux, T, base, abase, out)))
            outs.append(out.reshape(S * N, 6))
        g_all = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return g_all, caches

    def vjp(self, state: SceneState, caches, grad_gauss) -> np.ndarray:
        """Vector-Jacobian product: d lnL / d (local parameters) of every source.

        Parameters
        ----------
        state : SceneState
        caches : from :meth:`forward`
        grad_gauss : ndarray of shape (G, 6)
            d lnL / d column of each image Gaussian (the backend's ``gradient``).

        Returns
        -------
        ndarray of shape (sum of S over groups, 7)
            ``sum_{Gaussians of the source, columns} grad_gauss * jacobian``; scatter with
            ``vjp_index``.
        """
        outs = []
        start = 0
        L = self.n_psf
        for g, st, flat, gp, (J, cache) in zip(self.scene_model.groups, state.groups, self._flat, self._gpsf, caches):
            S = len(g.rows)
            local = np.zeros((S, N_LOCAL))
            if cache is None:
                gg = grad_gauss[start : start + S * L].reshape(S, L, 6)
                start += S * L
                local[:, 0] = np.sum(gg[:, :, 0] * gp["norm"], axis=1)
                gxy = gg[:, :, 1:3].sum(axis=1)  # (S, 2)
                local[:, 1:3] = (gxy[:, None, :] @ J)[:, 0, :]
                outs.append(local)
                continue
            flux, T, base, abase, gauss = cache  # gauss: the group's image Gaussians (S, N, 6)
            N, M = flat["N"], flat["M"]
            gg = grad_gauss[start : start + S * N].reshape(S, N, 6)
            start += S * N
            if self.compiled:
                # the sums below in one compiled loop (equal to rounding; tests/test_likelihood.py)
                fold = flat["fold"]
                damps, m_index = ((st.damps, flat["m_index"]) if fold is None
                                  else (np.einsum("nm,smk->snk", fold, st.damps), flat["n_index"]))
                _render_module().sersic_vjp(
                    np.ascontiguousarray(gg), np.ascontiguousarray(flux), np.ascontiguousarray(T), base, abase, gauss,
                    np.ascontiguousarray(J), np.ascontiguousarray(damps), flat["r2"], m_index, local,
                )
                outs.append(local)
                continue
            A, fxx, fxy, fyy = gauss[:, :, 0], gauss[:, :, 3], gauss[:, :, 4], gauss[:, :, 5]
            gA = gg[:, :, 0]
            local[:, 0] = np.sum(gA * abase, axis=1)
            gxy = gg[:, :, 1:3].sum(axis=1)
            local[:, 1:3] = (gxy[:, None, :] @ J)[:, 0, :]
            # n, rh: sum over PSF components first, then over the M profile amplitudes
            gm = (gA * base).reshape(S, M, L).sum(axis=2) if flat["fold"] is None else (gA * base) @ flat["fold"]
            local[:, 5:7] = flux[:, None] * (gm[:, None, :] @ st.damps)[:, 0, :]
            # shape: sum_c g_c dcol_c/dshape_k = -sum_n r2_n (H + gA A F / 2) : dT_k, with
            # H = F Gs F, Gs = [[gFxx, gFxy/2], [gFxy/2, gFyy]] (docs/model.md)
            gxx, gh, gyy = gg[:, :, 3], 0.5 * gg[:, :, 4], gg[:, :, 5]
            c = 0.5 * gA * A
            ab = fxx * fxy
            bb = fxy * fxy
            bd = fxy * fyy
            wxx = fxx * fxx * gxx + 2.0 * ab * gh + bb * gyy + c * fxx
            wxy = ab * gxx + (fxx * fyy + bb) * gh + bd * gyy + c * fxy
            wyy = bb * gxx + 2.0 * bd * gh + fyy * fyy * gyy + c * fyy
            r2 = flat["r2"]
            W = np.empty((S, 3))
            W[:, 0] = wxx @ r2
            W[:, 1] = 2.0 * (wxy @ r2)
            W[:, 2] = wyy @ r2
            local[:, 3:5] = -(T[:, 1:, :] @ W[:, :, None])[:, :, 0]
            outs.append(local)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _point(self, gp, flux, x, y, J, jacobian):
        S, L = len(flux), self.n_psf
        out = np.empty((S, L, 6))
        out[:, :, 0] = flux[:, None] * gp["norm"]
        out[:, :, 1] = x[:, None] + gp["x"]
        out[:, :, 2] = y[:, None] + gp["y"]
        out[:, :, 3:] = gp["F"]
        out = out.reshape(S * L, 6)
        if not jacobian:
            return out, None
        jac = np.zeros((S, L, 6, N_LOCAL))
        jac[:, :, 0, 0] = gp["norm"]
        jac[:, :, 1:3, 1:3] = J[:, None, :, :]
        return out, jac.reshape(S * L, 6, N_LOCAL)

    def _sersic(self, g, gp, st, flux, x, y, J, jacobian, fold):
        S, M, L = len(flux), g.n_comp, self.n_psf
        T = st.shape @ self.MT  # (S, 3, 3): D R D^T and its two shape derivatives
        cov = g.r2 * T[:, None, 0:1, :] + gp["cov"][:, None]  # (S, M, L, 3)
        cxx, cxy, cyy = cov[..., 0], cov[..., 1], cov[..., 2]
        det = cxx * cyy - cxy * cxy
        inv_det = 1.0 / det
        fxx, fxy, fyy = cyy * inv_det, -cxy * inv_det, cxx * inv_det
        base = gp["amp_cpf"][:, None] * np.sqrt(inv_det) / _TWO_PI  # (S, M, L) counts per flux per amplitude
        if fold is None:
            a, da_dn, da_drh = (v[:, :, None] for v in st.amps)
        else:  # each (m, l) its own amplitude, (S, M, L)
            a, da_dn, da_drh = ((v @ fold.T).reshape(S, M, L) for v in st.amps)
        abase = a * base
        A = flux[:, None, None] * abase
        out = np.empty((S, M, L, 6))
        out[..., 0] = A
        out[..., 1] = (x[:, None] + gp["x"])[:, None, :]
        out[..., 2] = (y[:, None] + gp["y"])[:, None, :]
        out[..., 3] = fxx
        out[..., 4] = fxy
        out[..., 5] = fyy
        out = out.reshape(S * M * L, 6)
        if not jacobian:
            return out, None
        # dC/dshape_k = r^2 dT_k, broadcast over L; last axis k = (shape1, shape2)
        dT = np.swapaxes(T[:, 1:, :], 1, 2)[:, None, None]  # (S, 1, 1, 3, 2)
        r2 = g.r2  # (M, 1, 1), broadcasts against (S, 1, 1, 2)
        e, f, h = r2 * dT[..., 0, :], r2 * dT[..., 1, :], r2 * dT[..., 2, :]  # (S, M, 1, 2)
        a_, b_, d_ = fxx[..., None], fxy[..., None], fyy[..., None]  # (S, M, L, 1)
        ab, bb = a_ * b_, b_ * b_
        jac = np.zeros((S, M, L, 6, N_LOCAL))
        jac[..., 0, 0] = abase
        jac[..., 0, 3:5] = -0.5 * A[..., None] * (a_ * e + 2.0 * b_ * f + d_ * h)
        fb = flux[:, None, None] * base
        jac[..., 0, 5] = fb * da_dn
        jac[..., 0, 6] = fb * da_drh
        jac[..., 1:3, 1:3] = J[:, None, None]
        jac[..., 3, 3:5] = -(a_ * a_ * e + 2.0 * ab * f + bb * h)
        jac[..., 4, 3:5] = -(ab * e + (a_ * d_ + bb) * f + b_ * d_ * h)
        jac[..., 5, 3:5] = -(bb * e + 2.0 * b_ * d_ * f + d_ * d_ * h)
        return out, jac.reshape(S * M * L, 6, N_LOCAL)


def image_gaussians(scene, exposure, theta=None, jacobian: bool = True) -> ImageGaussians:
    """Image Gaussians of ``scene`` in ``exposure`` and their Jacobian.

    Parameters
    ----------
    scene : pho.Scene
    exposure : pho.Exposure
    theta : array_like of shape (P,), optional
        Parameter vector (validated); default ``scene.get_vector()``.
    jacobian : bool
        Also compute the Jacobian.

    Returns
    -------
    ImageGaussians
        ``gaussians`` (G, 6), ``jacobian`` (G, 6, 7) or None, ``param_index`` (G, 7),
        ``source_index`` (G,).

    Examples
    --------
    >>> import numpy as np, pho
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.crval = [150.0, 2.0]
    >>> w.wcs.crpix = [32.5, 32.5]; w.wcs.cd = [[-0.03 / 3600, 0], [0, 0.03 / 3600]]
    >>> exp = pho.Exposure(np.zeros((64, 64)), np.ones((64, 64)), w, pho.PSFMixture.gaussian(2.0), "F814W")
    >>> scene = pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 100.0})])
    >>> ig = pho.gaussians.image_gaussians(scene, exp)
    >>> ig.gaussians.shape, ig.jacobian.shape
    ((1, 6), (1, 6, 7))
    """
    theta = scene.get_vector() if theta is None else scene.check_vector(theta)
    sm = SceneModel(scene)
    em = ExposureModel(sm, exposure, psf_theta=theta)
    g, jac = em.compute(sm.prepare(theta), jacobian=jacobian)
    return ImageGaussians(np.ascontiguousarray(g), jac, em.param_index, em.source_index)
