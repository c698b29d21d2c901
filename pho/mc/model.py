"""Scene + exposure -> image Gaussians by fixed Monte Carlo draws, and the chain rule back.

Each Sersic source ``s`` has ``N_s`` fixed draws ``(u_d, v_d)`` (pho.mc.draws). At parameters
``theta`` a draw sits at the latent point ``l_d = rho(u_d; n) (cos 2 pi v_d, sin 2 pi v_d)``
(half-light radius 1) and on the image at

    p_d = (x_s, y_s) + rh D S(shape) l_d                                   (pixels)

where ``S = R^(1/2)`` is the symmetric square root of the shape matrix ``R`` of
``pho.gaussians`` (``S = (1+q)/2 I + (1-q)/2 [[-cos 2pa, sin 2pa], [sin 2pa, cos 2pa]]``) and
``D`` the exposure's pixels per arcsec. A point convolved with PSF Gaussian ``l`` is that
Gaussian moved to ``p_d``: the draw becomes L image Gaussians

    A = f k amp_l sqrt(det F_l) / (2 pi) / N_s,   (x0, y0) = p_d + (px_l, py_l),   F = P_l^-1

whose ``F`` does not depend on the source, so the kernels' ``F`` derivatives are not needed and
the gradient is ``sum_d (g_x0, g_y0)_d . d p_d / d theta`` plus the flux term (docs/model.md).
Point sources are modelled exactly as in :mod:`pho.gaussians`.

The classes mirror :class:`pho.gaussians.SceneModel` and :class:`pho.gaussians.ExposureModel`
(``prepare``; ``forward``, ``vjp``, ``compute``, ``significant``, ``param_index``,
``source_index``, ``vjp_index``, ``n_gauss``), so :class:`pho.Likelihood` drives them unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..exposure import unit_vectors
from ..gaussians import (N_LOCAL, ExposureModel, _band_index, _exposure_psf, _Group, _index_arrays, _init_layout,
                         _shape_matrices)
from .draws import sersic_radius, sersic_radius_dn

__all__ = ["McSceneModel", "McExposureModel", "shape_root"]

_TWO_PI = 2.0 * math.pi


def shape_root(shape: np.ndarray) -> np.ndarray:
    """Symmetric square root ``S`` of the shape matrix ``R`` and its derivatives.

    Parameters
    ----------
    shape : ndarray of shape (S, 3, 3)
        ``[R, dR/ds1, dR/ds2]`` x ``(xx, xy, yy)`` (``pho.gaussians._shape_matrices``).

    Returns
    -------
    ndarray of shape (S, 3, 3)
        ``[S, dS/ds1, dS/ds2]`` x ``(xx, xy, yy)``, from ``S = (R + d I) / t``,
        ``d = sqrt(det R)``, ``t = sqrt(tr R + 2 d)`` (the 2 x 2 square root), differentiated.
        Using R's own parameterization keeps any shape parameterization's conventions.
    """
    rxx, rxy, ryy = shape[:, 0, 0], shape[:, 0, 1], shape[:, 0, 2]
    d = np.sqrt(rxx * ryy - rxy * rxy)
    t = np.sqrt(rxx + ryy + 2.0 * d)
    out = np.empty_like(shape)
    out[:, 0, 0] = (rxx + d) / t
    out[:, 0, 1] = rxy / t
    out[:, 0, 2] = (ryy + d) / t
    for j in (1, 2):
        exx, exy, eyy = shape[:, j, 0], shape[:, j, 1], shape[:, j, 2]
        dd = (rxx * eyy + ryy * exx - 2.0 * rxy * exy) / (2.0 * d)
        dt = (exx + eyy + 2.0 * dd) / (2.0 * t)
        out[:, j, 0] = (exx + dd - out[:, 0, 0] * dt) / t
        out[:, j, 1] = (exy - out[:, 0, 1] * dt) / t
        out[:, j, 2] = (eyy + dd - out[:, 0, 2] * dt) / t
    return out


class _Draws:
    """The fixed draws of all Sersic sources, flattened source by source."""

    def __init__(self, variates):
        counts = np.array([len(u) for u, _ in variates], dtype=np.intp)
        self.counts = counts  # (S,) draws per source
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
        self.owner = np.repeat(np.arange(len(counts)), counts)  # (Nd,) source row of each draw
        self.u = np.concatenate([u for u, _ in variates])
        v = np.concatenate([v for _, v in variates])
        self.cos = np.cos(_TWO_PI * v)
        self.sin = np.sin(_TWO_PI * v)
        self.weight = 1.0 / counts[self.owner]  # flux fraction of each draw


class McState(NamedTuple):
    """Exposure-independent quantities of one parameter vector (Monte Carlo model)."""

    theta: np.ndarray
    units: np.ndarray
    groups: tuple  # per group: (th, flux) for points; _SersicState for the Sersics


class _SersicState:
    """Per-call state of the Sersic group; ``d rho / d n`` is computed on first use (gradients)."""

    def __init__(self, th, flux, root, draws):
        self.th, self.flux, self.root, self.draws = th, flux, root, draws
        n_each = th[draws.owner, 4]
        self._n_each = n_each
        self.rho, self._x, self._b = sersic_radius(draws.u, n_each)
        self.latent = np.empty((len(draws.u), 2))
        self.latent[:, 0] = self.rho * draws.cos
        self.latent[:, 1] = self.rho * draws.sin
        self._drho = None

    @property
    def drho_dn(self):
        if self._drho is None:
            self._drho = sersic_radius_dn(self._n_each, self.rho, self._x, self._b)
        return self._drho


class McSceneModel:
    """Static layout of a scene for the Monte Carlo model.

    Parameters
    ----------
    scene : pho.Scene
    variates : list of (u, v) pairs of ndarray
        The fixed unit variates of each Sersic source, in scene order.
    """

    def __init__(self, scene, variates):
        sersic_rows = _init_layout(self, scene)
        nb = len(scene.bands)
        sersic_idx = [scene.source_parameter_indices(i) for i in sersic_rows]
        self.draws = None
        if sersic_rows:
            if len(variates) != len(sersic_rows):
                raise ValueError(f"{len(variates)} draw sets for {len(sersic_rows)} Sersic sources")
            idx = np.array(sersic_idx)
            g = _Group("sersic", sersic_rows, idx[:, nb:])
            g.flux_idx = idx[:, :nb]
            self.draws = _Draws(variates)
            g.n_comp = None  # varies per source: self.draws.counts
            self.groups.append(g)

    def prepare(self, theta) -> McState:
        """Exposure-independent pieces for a valid ``theta``: unit vectors, shape roots, draws."""
        units = unit_vectors(theta[self.ra_idx], theta[self.dec_idx])
        states = []
        for g in self.groups:
            th = theta[g.idx]
            flux = theta[g.flux_idx]
            if g.kind == "point":
                states.append((th, flux))
            else:
                root = shape_root(_shape_matrices(th[:, 2], th[:, 3], self.shape_parameters))
                states.append(_SersicState(th, flux, root, self.draws))
        return McState(theta, units, tuple(states))


def _sym(m):
    """(..., 3) (xx, xy, yy) -> (..., 2, 2)."""
    out = np.empty(m.shape[:-1] + (2, 2))
    out[..., 0, 0] = m[..., 0]
    out[..., 0, 1] = out[..., 1, 0] = m[..., 1]
    out[..., 1, 1] = m[..., 2]
    return out


class McExposureModel:
    """The Monte Carlo scene-to-image-Gaussians map for one exposure.

    Parameters
    ----------
    scene_model : McSceneModel
    exposure : pho.Exposure

    Raises
    ------
    PhoValueError
        The exposure's band is not one of the scene's bands.
    """

    #: Unused (the interface of ExposureModel; the Monte Carlo model is NumPy only).
    compiled = False
    significant = ExposureModel.significant

    def __init__(self, scene_model: McSceneModel, exposure, psf_theta=None):
        self.scene_model = scene_model
        self.exposure = exposure
        self.band_index = _band_index(scene_model.scene, exposure)
        L = self.n_psf = exposure.psf.n_gauss
        # as in ExposureModel: psf_per_source, psf_positions, psf_params and _gpsf (each source's
        # mixture from a PSF grid taken at its position for psf_theta and held fixed)
        _exposure_psf(self, psf_theta)
        self.D = np.array(exposure.D, dtype=float)
        self.param_index, self.source_index, self.vjp_index = _index_arrays(
            scene_model, self.band_index, [L if g.kind == "point" else scene_model.draws.counts * L
                                           for g in scene_model.groups])
        self.n_gauss = len(self.source_index)

    # ------------------------------------------------------------------ forward model
    def _sersic_positions(self, st: _SersicState, x, y):
        """Pixel positions (Nd, 2) of the draws, the matrices M = rh D S (S, 2, 2) and the
        offsets M l_d (Nd, 2) of the draws from their source's position."""
        rh = st.th[:, 5]
        M = rh[:, None, None] * (self.D @ _sym(st.root[:, 0, :]))  # (S, 2, 2)
        own = st.draws.owner
        off = np.einsum("dij,dj->di", M[own], st.latent)
        pos = off.copy()
        pos[:, 0] += x[own]
        pos[:, 1] += y[own]
        return pos, M, off

    def _per_draw(self, a, draws):
        """A group's PSF array (1 or S, L, ...) for each draw: its source's row, or the one mixture."""
        return a[draws.owner] if self.psf_per_source else a[0]

    def forward(self, state: McState):
        """Image Gaussians (G, 6) and a cache for :meth:`vjp`."""
        x_all, y_all, J_all = self.exposure._astrometry.project_units(state.units, names=self.scene_model.source_labels)
        outs, caches = [], []
        L = self.n_psf
        for g, gp, st in zip(self.scene_model.groups, self._gpsf, state.groups):
            x, y, J = x_all[g.rows], y_all[g.rows], J_all[g.rows]
            if g.kind == "point":
                th, flux = st
                out, _ = ExposureModel._point(self, gp, flux[:, self.band_index], x, y, J, False)
                outs.append(out)
                caches.append((J, None))
                continue
            flux = st.flux[:, self.band_index]
            pos, M, off = self._sersic_positions(st, x, y)
            Nd = len(pos)
            wf = flux[st.draws.owner] * st.draws.weight  # (Nd,) flux of each draw
            out = np.empty((Nd, L, 6))
            out[:, :, 0] = wf[:, None] * self._per_draw(gp["norm"], st.draws)
            out[:, :, 1] = pos[:, 0:1] + self._per_draw(gp["x"], st.draws)
            out[:, :, 2] = pos[:, 1:2] + self._per_draw(gp["y"], st.draws)
            out[:, :, 3:] = self._per_draw(gp["F"], st.draws)
            outs.append(out.reshape(Nd * L, 6))
            caches.append((J, (M, off)))
        g_all = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return g_all, caches

    def vjp(self, state: McState, caches, grad_gauss) -> np.ndarray:
        """d lnL / d (local parameters) of every source, (sum of S over groups, 7).

        ``grad_gauss`` (G, 6) is the backend's ``gradient``; its F columns are not used (F is
        the PSF's, independent of the parameters).
        """
        outs = []
        start = 0
        L = self.n_psf
        for g, gp, st, (J, cache) in zip(self.scene_model.groups, self._gpsf, state.groups, caches):
            S = len(g.rows)
            local = np.zeros((S, N_LOCAL))
            if cache is None:
                gg = grad_gauss[start : start + S * L].reshape(S, L, 6)
                start += S * L
                local[:, 0] = np.sum(gg[:, :, 0] * gp["norm"], axis=1)
                local[:, 1:3] = (gg[:, :, 1:3].sum(axis=1)[:, None, :] @ J)[:, 0, :]
                outs.append(local)
                continue
            M, off = cache
            dr = st.draws
            Nd = len(dr.u)
            gg = grad_gauss[start : start + Nd * L].reshape(Nd, L, 6)
            start += Nd * L
            starts = dr.starts
            gA = np.sum(gg[:, :, 0] * self._per_draw(gp["norm"], dr), axis=1) * dr.weight  # (Nd,) d lnL / d flux per draw
            gp = gg[:, :, 1:3].sum(axis=1)  # (Nd, 2) d lnL / d p_d
            local[:, 0] = np.add.reduceat(gA, starts)
            gsum = np.add.reduceat(gp, starts, axis=0)  # (S, 2)
            local[:, 1:3] = (gsum[:, None, :] @ J)[:, 0, :]
            rh = st.th[:, 5]
            # d p_d = rh D dS l_d: sum_d gp_d . (D dS l_d) = dS : (D^T G), G = sum_d gp_d l_d^T
            G = np.add.reduceat(gp[:, :, None] * st.latent[:, None, :], starts, axis=0)  # (S, 2, 2)
            H = np.swapaxes(self.D, 0, 1) @ G  # (S, 2, 2)
            Hs = np.stack([H[:, 0, 0], H[:, 0, 1] + H[:, 1, 0], H[:, 1, 1]], axis=1)  # pairs with (xx, xy, yy)
            local[:, 3] = rh * np.sum(st.root[:, 1, :] * Hs, axis=1)
            local[:, 4] = rh * np.sum(st.root[:, 2, :] * Hs, axis=1)
            # n: d p_d / dn = M (drho/dn) (cos, sin); rh: d p_d / d rh = M l_d / rh
            dlat = st.drho_dn[:, None] * np.column_stack([dr.cos, dr.sin])
            Md = np.einsum("dij,dj->di", M[dr.owner], dlat)
            local[:, 5] = np.add.reduceat(np.sum(gp * Md, axis=1), starts)
            local[:, 6] = np.add.reduceat(np.sum(gp * off, axis=1), starts) / rh
            outs.append(local)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def compute(self, state: McState, jacobian: bool = True):
        """Image Gaussians (G, 6) and, if asked, their Jacobian (G, 6, 7) to the local parameters."""
        g, caches = self.forward(state)
        if not jacobian:
            return g, None
        x_all, y_all, J_all = self.exposure._astrometry.project_units(state.units, names=self.scene_model.source_labels)
        L = self.n_psf
        jacs = []
        for grp, gp, st, (J, cache) in zip(self.scene_model.groups, self._gpsf, state.groups, caches):
            if cache is None:
                th, flux = st
                _, jac = ExposureModel._point(self, gp, flux[:, self.band_index], x_all[grp.rows], y_all[grp.rows], J, True)
                jacs.append(jac)
                continue
            M, off = cache
            dr = st.draws
            own = dr.owner
            Nd = len(dr.u)
            rh = st.th[own, 5]
            jac = np.zeros((Nd, L, 6, N_LOCAL))
            jac[:, :, 0, 0] = dr.weight[:, None] * self._per_draw(gp["norm"], dr)
            dp = np.zeros((Nd, 2, N_LOCAL))
            dp[:, :, 1:3] = J[own]
            for j in (1, 2):
                dS = self.D @ _sym(st.root[:, j, :])  # (S, 2, 2)
                dp[:, :, 2 + j] = rh[:, None] * np.einsum("dij,dj->di", dS[own], st.latent)
            dlat = st.drho_dn[:, None] * np.column_stack([dr.cos, dr.sin])
            dp[:, :, 5] = np.einsum("dij,dj->di", M[own], dlat)
            dp[:, :, 6] = off / rh[:, None]
            jac[:, :, 1:3, :] = dp[:, None, :, :]
            jacs.append(jac.reshape(Nd * L, 6, N_LOCAL))
        return g, (jacs[0] if len(jacs) == 1 else np.concatenate(jacs))
