"""Fitting one patch: what a Dask worker runs.

:func:`fit_patch` takes a :class:`PatchTask` (the patch's active sources at their current
values, its neighbours, the exposures it touches and their pixel boxes: a few kB, no pixels),
reads its cutouts through memory maps, renders the neighbours' light into each cutout as a fixed
background, and fits the active sources with L-BFGS-B and the analytic gradient (``pho.optimize``:
Fisher errors), then, if asked, samples their posterior. The cpu backend runs on one kernel
thread: the parallelism is over patches. Any failure is caught and returned as a failed
:class:`PatchResult` with the reason, so one bad patch never stops the field.
"""

from __future__ import annotations

import copy
import math
import time
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..transforms import eta_pairs

__all__ = ["PatchTask", "PatchResult", "fit_patch", "parameter_kinds"]


@dataclass
class PatchTask:
    """Everything a worker needs to fit one patch (no pixels: it reads its own cutouts).

    Attributes
    ----------
    patch_index, pass_index : int
    rows : ndarray of int
        Input rows of the active sources.
    active : FieldSources
        The active sources at their current values (``rows`` order).
    start : FieldSources
        The active sources at their input values: the priors are centred there in every pass.
    neighbour_rows : ndarray of int
        Input rows of all neighbours; ``neighbours`` holds their current values in that order.
    neighbours : FieldSources or None
    exposures : dict
        ``exposure index -> (FieldExposure, box, neighbour rows in that cutout)``.
    sampler : {None, "dynesty", "nuts"}
        Posterior sampling after the optimization.
    options : dict
        ``position_box_arcsec``, ``seed``, ``nlive``, ``maxcall``, ``draws``, ``tune``,
        ``fit_sky`` (``"none"``, ``"constant"`` or ``"plane"``: a sky per exposure cutout of the
        patch, fitted with the sources; ``pho.Likelihood(sky=...)``), ``shape_parameters``
        (``"q_pa"``, the default, or ``"eta"``: the galaxies' shapes are fitted as conformal
        shear ``eta_plus``, ``eta_cross``; ``pho.Scene(shape_parameters=...)``).
    previous_sigma : ndarray of shape (len(rows), B + 6) or None
        The active sources' errors from an earlier pass (``FieldSources`` column order: fluxes,
        ra, dec, q, pa, n, rh, where with ``shape_parameters="eta"`` the q and pa columns hold the
        errors of eta_plus and eta_cross; NaN where a source has no such parameter): the
        optimizer's units in a later pass, which saves the Fisher matrix at the start.
    sky_start : dict or None
        Starting values of the patch's sky parameters by field name (``"sky_<field exposure
        index>.level"``, ...): the same patch's fit of the previous pass. Parameters not in it
        start from 0 (the data as given). The sky prior stays centred on 0 in every pass.
    """

    patch_index: int
    pass_index: int
    rows: np.ndarray
    active: object
    start: object
    neighbour_rows: np.ndarray
    neighbours: object
    exposures: dict
    sampler: str | None = None
    options: dict = field(default_factory=dict)
    previous_sigma: np.ndarray | None = None
    sky_start: dict | None = None


@dataclass
class PatchResult:
    """What a patch fit returns (and what the result store writes).

    Attributes
    ----------
    patch_index, pass_index : int
    rows : ndarray of int
        Input rows of the active sources.
    param_rows : ndarray of int
        Input row of each fitted parameter.
    param_kinds : list of str
        Kind of each fitted parameter (``"flux_F160W"``, ``"ra"``, ...).
    theta, sigma : ndarray
        Best fit and Fisher 1-sigma errors, natural units, always in the ``FieldSources``
        parameter kinds (q and pa, never eta: a fit in conformal shear reports the q and pa of
        its best eta, with errors propagated through the Jacobian d(q, pa)/d(eta)).
    ok : bool
        False when the fit failed (``message`` says why); ``theta`` is then empty.
    message : str
    lnlike, chi2, n_pixels, n_calls, time_s, sample_time_s
        Fit statistics; chi2 over the patch's counted pixels.
    median, p16, p84 : ndarray or None
        Posterior summaries (sampled patches only); q and pa of a fit in eta are summarized
        from every sample's q and pa.
    eta_rows : ndarray of int
        With ``shape_parameters="eta"``: the input row of each galaxy fitted in conformal shear
        (empty otherwise).
    eta_theta, eta_sigma : ndarray of shape (len(eta_rows), 2)
        Their best (eta_plus, eta_cross) and Fisher errors.
    eta_median, eta_p16, eta_p84 : ndarray of shape (len(eta_rows), 2) or None
        Their posterior summaries (sampled patches only).
    warnings : list of str
    sky_names : list of str
        The patch's sky parameters, ``"sky_<field exposure index>.level"`` (and ``.slope_x``,
        ``.slope_y``), empty without ``fit_sky``: one sky per exposure cutout of the patch.
    sky_theta, sky_sigma : ndarray
        Their best fit and Fisher errors (counts per pixel; slopes per pixel).
    sky_start : ndarray
        The values the optimizer started them from (0, or the previous pass's fit).
    sky_median, sky_p16, sky_p84 : ndarray or None
        Their posterior summaries (sampled patches only).
    """

    patch_index: int
    pass_index: int
    rows: np.ndarray
    param_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    param_kinds: list = field(default_factory=list)
    theta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ok: bool = False
    message: str = ""
    lnlike: float = math.nan
    chi2: float = math.nan
    n_pixels: int = 0
    n_calls: int = 0
    time_s: float = 0.0
    sample_time_s: float = 0.0
    median: np.ndarray | None = None
    p16: np.ndarray | None = None
    p84: np.ndarray | None = None
    eta_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    eta_theta: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    eta_sigma: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    eta_median: np.ndarray | None = None
    eta_p16: np.ndarray | None = None
    eta_p84: np.ndarray | None = None
    warnings: list = field(default_factory=list)
    sky_names: list = field(default_factory=list)
    sky_theta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sky_sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sky_start: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sky_median: np.ndarray | None = None
    sky_p16: np.ndarray | None = None
    sky_p84: np.ndarray | None = None


def parameter_kinds(names) -> list[str]:
    """``"s3.flux_F160W"`` -> ``"flux_F160W"`` for each scene parameter name."""
    return [n.split(".", 1)[1] for n in names]


def _widen_to_include(priors, theta):
    """Priors whose bounds hold ``theta`` (a later pass may start where the first pass's
    aperture-based flux bounds did not reach once the neighbours changed, or a sky warm start
    beyond the sky prior's box). A truncated normal (eta's) keeps its shape, with wider bounds."""
    from dataclasses import replace

    from ..priors import TruncatedNormal, Uniform

    out = {}
    for name, d, x in zip(priors.names, priors.distributions, theta):
        if d.periodic or d.lo <= x <= d.hi:
            continue
        width = d.hi - d.lo
        lo, hi = min(d.lo, x - 0.1 * width), max(d.hi, x + 0.1 * width)
        out[name] = replace(d, lo=lo, hi=hi) if isinstance(d, TruncatedNormal) else Uniform(lo, hi)
    return priors.replace(out) if out else priors


def _preconditioning_scales(likelihood, priors, theta0, task) -> np.ndarray:
    """The optimizer's units: each parameter's error from an earlier pass, else its conditional
    error ``1 / sqrt(F_ii)`` at the start.

    Blends of bright and faint sources span orders of magnitude in precision; in these units
    L-BFGS-B converges in ~100 calls where the default scales took 2,000 (measured on a
    5-source GOODS-S patch). Parameters without information keep the default scale.
    """
    from ..fit import fisher_matrix, parameter_scales

    names = list(likelihood.parameter_names)
    default = parameter_scales(names, theta0, priors)
    n_src = getattr(likelihood, "n_source_params", len(names))
    if task.previous_sigma is not None:
        kinds = task.active.column_kinds
        previous = np.array([task.previous_sigma[int(n.split(".", 1)[0][1:]), kinds.index(_column_of(n.split(".", 1)[1]))]
                             for n in names[:n_src]])
        if np.all(np.isfinite(previous) & (previous > 0)):
            return np.concatenate([previous, _sky_scales(likelihood)]) if n_src < len(names) else previous
    diag = np.diag(fisher_matrix(likelihood, theta0, method="fd"))
    with np.errstate(divide="ignore"):
        scales = 1.0 / np.sqrt(diag)
    return np.where(np.isfinite(scales) & (scales > 0) & (diag > 0), scales, default)


def _column_of(kind: str) -> str:
    """The ``FieldSources`` column that holds a scene parameter kind (or its error in
    ``PatchTask.previous_sigma``): eta_plus and eta_cross sit in the q and pa columns."""
    return _ETA_COLUMNS.get(kind, kind)


#: Where a fit in conformal shear keeps its parameters' errors between passes (``previous_sigma``).
_ETA_COLUMNS = {"eta_plus": "q", "eta_cross": "pa"}


def _sky_scales(likelihood) -> np.ndarray:
    """Conditional errors ``1 / sqrt(F_ii)`` of the sky parameters (the model is linear in them:
    ``F_ii = sum_pixels ivar (dm/dsky_i)^2`` over counted pixels)."""
    out = []
    for k, e in enumerate(likelihood.exposures):
        w = np.where(e.counted, e.ivar, 0.0)
        for d in likelihood._sky_derivative_images(k):
            info = float(np.sum(w * d * d))
            out.append(1.0 / math.sqrt(info) if info > 0 else 1.0)
    return np.array(out)


def _build_likelihood(task: PatchTask):
    """Cutouts with the neighbours' light as background, and the patch's likelihood."""
    from ..likelihood import SKY_PARAMETERS, Likelihood, render
    from ..sources import Scene

    profile = task.options.get("profile")
    exposures = []
    bands_seen = []
    for e_index, (fexp, box, near) in sorted(task.exposures.items()):
        cut = fexp.cutout(box)
        if len(near):
            local = np.searchsorted(task.neighbour_rows, near)
            scene = Scene(task.neighbours.to_sources(local, profile), bands=list(task.neighbours.bands))
            background = render(scene, cut, backend="cpu", workers=1)
            cut = cut.with_background(background)
        exposures.append(cut)
        if fexp.band not in bands_seen:
            bands_seen.append(fexp.band)
    bands = [b for b in task.active.bands if b in bands_seen]
    shape = task.options.get("shape_parameters", "q_pa") or "q_pa"
    sources = task.active.to_sources(range(len(task.rows)), profile)
    scene = Scene(sources, bands=bands, shape_parameters=shape)
    fit_sky = task.options.get("fit_sky", "none") or "none"
    warm = None
    if fit_sky != "none" and task.sky_start:
        # the previous pass's skies of this patch (same cutouts: patches and their boxes are
        # planned once per run), named as Likelihood names them; any parameter it lacks starts from 0
        local = [f"sky_{k}.{p}" for k in range(len(exposures)) for p in SKY_PARAMETERS[fit_sky]]
        warm = np.array([float(task.sky_start.get(n, 0.0)) for n in _field_sky_names(task, local)])
    likelihood = Likelihood(scene, exposures, backend="cpu", workers=1, sky=fit_sky, sky_start=warm)
    start_scene = Scene(task.start.to_sources(range(len(task.rows)), profile), bands=bands, shape_parameters=shape)
    start = start_scene.get_vector()
    if fit_sky != "none":
        start = np.concatenate([start, np.zeros(len(likelihood.sky_names))])  # the sky prior's centre: 0
    return likelihood, start


def _take_upstream(task: PatchTask, upstream) -> None:
    """Set the task's neighbours to the values just fitted in their own patches (``upstream``)."""
    if task.neighbours is None:
        return
    position = {int(r): j for j, r in enumerate(task.neighbour_rows)}
    for res in upstream:
        if not res.ok:
            continue
        for row, kind, value in zip(res.param_rows, res.param_kinds, res.theta):
            j = position.get(int(row))
            if j is not None:
                task.neighbours.set(j, kind, float(value))


def fit_patch(task: PatchTask, *upstream: PatchResult) -> PatchResult:
    """Fit one patch (module docstring). Never raises: a failure comes back as ``ok=False``.

    ``upstream`` are this pass's results of patches that hold some of its neighbours: their new
    values replace the task's (Gauss-Seidel order, ``pho.field.driver.colour_patches``).
    """
    if upstream:
        task = copy.copy(task)
        task.neighbours = task.neighbours.copy() if task.neighbours is not None else None
        _take_upstream(task, upstream)
    from ..errors import PhoWarning
    from ..fit import optimize
    from ..priors import default_priors

    t0 = time.perf_counter()
    result = PatchResult(patch_index=task.patch_index, pass_index=task.pass_index, rows=np.asarray(task.rows))
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PhoWarning)
            likelihood, theta_start = _build_likelihood(task)
            names = list(likelihood.parameter_names)
            theta0 = likelihood.initial
            n_src = likelihood.n_source_params
            priors = default_priors(
                likelihood, theta=theta_start, position_box_arcsec=task.options.get("position_box_arcsec")
            )
            priors = _widen_to_include(priors, theta0)
            best = optimize(likelihood, priors, theta0=theta0, scales=_preconditioning_scales(likelihood, priors, theta0,
                                                                                               task),
                            fisher_method="fd")
            result.param_kinds = parameter_kinds(names[:n_src])
            result.param_rows = np.asarray(task.rows)[[int(n.split(".", 1)[0][1:]) for n in names[:n_src]]]
            result.theta, result.sigma = best.theta[:n_src], best.sigma[:n_src]
            if likelihood.scene.shape_parameters == "eta":
                _eta_to_q_pa(result, names[:n_src], best)
            if n_src < len(names):
                result.sky_names = _field_sky_names(task, names[n_src:])
                result.sky_theta, result.sky_sigma = best.theta[n_src:], best.sigma[n_src:]
                result.sky_start = np.asarray(theta0[n_src:], dtype=float)
            result.lnlike, result.n_calls = best.lnlike, best.n_calls
            result.chi2 = -2.0 * best.lnlike
            result.n_pixels = int(sum(int(e.counted.sum()) for e in likelihood.exposures))
            result.ok = True
            result.message = "" if best.success else f"optimizer: {best.message}"
            if best.at_bound:
                result.message = (result.message + "; " if result.message else "") + "at prior bound: " + ",".join(
                    n if n.startswith("sky_") else parameter_kinds([n])[0] for n in best.at_bound
                )
            if task.sampler is not None:
                t1 = time.perf_counter()
                _sample(task, likelihood, priors, best, result)
                result.sample_time_s = time.perf_counter() - t1
    except Exception as exc:  # reported per patch; the field goes on
        result.ok = False
        result.message = f"{type(exc).__name__}: {exc}"
        result.warnings.append(traceback.format_exc(limit=4))
    result.warnings.extend(str(w.message) for w in caught if issubclass(w.category, Warning))
    result.time_s = time.perf_counter() - t0
    return result


def _sample(task, likelihood, priors, best, result) -> None:
    """Posterior summaries of the patch (median, 16th and 84th percentiles) into ``result``."""
    from ..priors import default_priors

    opts = task.options
    priors = default_priors(likelihood, theta=best.theta, position_box_arcsec=opts.get("position_box_arcsec"))
    rng = np.random.default_rng([int(opts.get("seed", 1)), task.patch_index])
    if task.sampler == "nuts":
        from .. import sample_nuts
        from ..nuts import usable_covariance

        post = sample_nuts(likelihood, priors, draws=int(opts.get("draws", 1000)), tune=int(opts.get("tune", 1000)),
                           chains=int(opts.get("chains", 2)), seed=int(rng.integers(2**31)), processes=1, progress=False,
                           theta0=best.theta, init_cov=usable_covariance(best.cov))
    else:
        from ..sample import sample

        nlive = int(opts.get("nlive") or max(50, 10 * len(best.theta)))
        post = sample(likelihood, priors, nlive=nlive, maxcall=opts.get("maxcall"), rng=rng, processes=1, progress=False)
    names = list(likelihood.parameter_names)
    n_src = likelihood.n_source_params
    # a fit in eta: the q and pa that pho.sample derives from every sample, in eta's slots
    canonical = [n.replace(".eta_plus", ".q").replace(".eta_cross", ".pa") for n in names[:n_src]]
    result.median = np.array([post.summary[n]["median"] for n in canonical])
    result.p16 = np.array([post.summary[n]["p16"] for n in canonical])
    result.p84 = np.array([post.summary[n]["p84"] for n in canonical])
    if len(result.eta_rows):
        pairs = eta_pairs(names[:n_src])
        for stat in ("median", "p16", "p84"):
            setattr(result, f"eta_{stat}", np.array([[post.summary[names[i]][stat], post.summary[names[j]][stat]]
                                                     for i, j, _ in pairs]))
    if n_src < len(names):
        result.sky_median = np.array([post.summary[n]["median"] for n in names[n_src:]])
        result.sky_p16 = np.array([post.summary[n]["p16"] for n in names[n_src:]])
        result.sky_p84 = np.array([post.summary[n]["p84"] for n in names[n_src:]])


def _eta_to_q_pa(result: PatchResult, names, best) -> None:
    """A fit in conformal shear reported in the field's kinds: each galaxy's eta_plus, eta_cross
    slots of ``result.theta``/``sigma`` take its q and pa (``best.derived``: errors propagated
    from the 2x2 eta covariance through d(q, pa)/d(eta)); eta itself goes to ``result.eta_*``."""
    pairs = eta_pairs(names)
    kinds = list(result.param_kinds)
    theta, sigma = np.array(result.theta, dtype=float), np.array(result.sigma, dtype=float)
    result.eta_rows = np.array([result.param_rows[i] for i, _, _ in pairs], dtype=int)
    result.eta_theta = np.array([[theta[i], theta[j]] for i, j, _ in pairs]).reshape(-1, 2)
    result.eta_sigma = np.array([[sigma[i], sigma[j]] for i, j, _ in pairs]).reshape(-1, 2)
    for i, j, prefix in pairs:
        kinds[i], kinds[j] = "q", "pa"
        theta[i], sigma[i] = best.derived[f"{prefix}.q"]
        theta[j], sigma[j] = best.derived[f"{prefix}.pa"]
    result.param_kinds, result.theta, result.sigma = kinds, theta, sigma


def _field_sky_names(task: PatchTask, local_names) -> list[str]:
    """``sky_<k>.level`` of the patch's likelihood (k: its k-th cutout) -> ``sky_<field exposure index>.level``."""
    field_index = [e for e, _ in sorted(task.exposures.items())]
    out = []
    for n in local_names:
        head, p = n.split(".", 1)
        out.append(f"sky_{field_index[int(head[4:])]}.{p}")
    return out
