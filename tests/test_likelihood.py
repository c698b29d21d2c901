"""Likelihood values, exact gradients (finite differences per parameter), flux conservation,
model images and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import blended_problem, check_gradient, tan_wcs, two_component_psf

import pho
import pho._reference
from pho.errors import PhoDataError, PhoRangeError, PhoValueError
from pho.profiles import AnalyticStandInProfile
from pho.transforms import LogisticTransform, TransformedLikelihood


@pytest.fixture
def smooth_boxes(monkeypatch):
    """Widen the reference backend's pixel boxes to 40 sigma so every Gaussian covers the stamp.

    The shipped boxes cut each Gaussian at 4.56 sigma (at most 1e-5 of its flux), which makes
    the model jump by that much when a box edge crosses a pixel; a finite difference straddling
    such a jump measures the jump, not the derivative. Without the cut the model is smooth and
    the analytic gradient must match finite differences to 1e-5.
    """
    monkeypatch.setattr(pho._reference, "BOX_NSIGMA", 40.0)


ALL_KINDS_QPA = {"flux", "ra", "dec", "q", "pa", "n", "rh"}
ALL_KINDS_G = {"flux", "ra", "dec", "g1", "g2", "n", "rh"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gaussian", "poisson"])
@pytest.mark.parametrize("shape_parameters", ["q_pa", "g1_g2"])
def test_gradient_matches_finite_differences(cosmos_image_path, rng, smooth_boxes, kind, shape_parameters):
    scene, exposures, theta = blended_problem(cosmos_image_path, rng, kind=kind, shape_parameters=shape_parameters)
    like = pho.Likelihood(scene, exposures, kind=kind)
    kinds = set(scene.parameter_kinds)
    assert kinds == (ALL_KINDS_QPA if shape_parameters == "q_pa" else ALL_KINDS_G)
    assert {n for n in scene.parameter_names if "flux" in n} >= {"s0.flux_F814W", "s0.flux_F160W"}
    value, grad = like.lnlike_and_grad(theta)
    assert grad.shape == (scene.n_params,)
    assert value == pytest.approx(like.lnlike(theta), rel=1e-14)
    check_gradient(like.lnlike, grad, theta, scene.parameter_kinds, scene.parameter_names, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gaussian", "poisson"])
def test_gradient_through_unconstrained_transform(cosmos_image_path, rng, smooth_boxes, kind):
    scene, exposures, theta = blended_problem(cosmos_image_path, rng, kind=kind)
    like = pho.Likelihood(scene, exposures, kind=kind)
    tl = TransformedLikelihood(like)
    u = tl.to_unconstrained(theta)
    value, grad_u = tl.lnlike_and_grad(u)
    log_jac, _ = tl.transform.log_jacobian_and_grad(u)
    assert value == pytest.approx(like.lnlike(theta) + log_jac, rel=1e-13)
    steps = []
    lo, hi = tl.transform.lower, tl.transform.upper
    for i, k in enumerate(scene.parameter_kinds):
        # u-steps: bounded parameters are logits (O(1)); unbounded ones are theta itself
        steps.append(1e-5 if np.isfinite(lo[i]) else (1e-8 if k in ("ra", "dec") else 1e-4 * max(abs(theta[i]), 1.0)))
    check_gradient(tl.lnlike, grad_u, u, scene.parameter_kinds, scene.parameter_names, rtol=1e-5, steps=steps)


def test_gaussian_lnlike_matches_definition(cosmos_image_path, rng):
    scene, exposures, theta = blended_problem(cosmos_image_path, rng)
    like = pho.Likelihood(scene, exposures)
    expected = 0.0
    for e, m in zip(exposures, like.model_images(theta)):
        expected += -0.5 * np.sum(e.ivar * (e.pixels - m) ** 2)
    assert like.lnlike(theta) == pytest.approx(expected, rel=1e-13)


def test_poisson_lnlike_matches_definition(cosmos_image_path, rng):
    from scipy.stats import poisson

    scene, exposures, theta = blended_problem(cosmos_image_path, rng, kind="poisson")
    like = pho.Likelihood(scene, exposures, kind="poisson")
    expected = sum(np.sum(poisson.logpmf(e.pixels, m)) for e, m in zip(exposures, like.model_images(theta)))
    assert like.lnlike(theta) == pytest.approx(expected, rel=1e-12)


def test_masked_and_zero_ivar_pixels_do_not_count(cosmos_image_path, rng):
    scene, exposures, theta = blended_problem(cosmos_image_path, rng)
    e = exposures[0]
    data = e.pixels.copy()
    data[20, 20] = 1e6  # an outlier, masked
    data[21, 20] = -1e6  # an outlier with ivar = 0
    ivar = e.ivar.copy()
    ivar[21, 20] = 0.0
    mask = np.zeros(e.shape, dtype=bool)
    mask[20, 20] = True
    e2 = pho.Exposure(data, ivar, e.wcs, e.psf, e.band, mask=mask, counts_per_flux=e.counts_per_flux, background=e.background)
    base = pho.Likelihood(scene, exposures)
    cut = pho.Likelihood(scene, [e2, exposures[1]])
    m = base.model_images(theta)[0]
    removed = -0.5 * e.ivar[21, 20] * (e.pixels[21, 20] - m[21, 20]) ** 2 - 0.5 * e.ivar[20, 20] * (e.pixels[20, 20] - m[20, 20]) ** 2
    assert cut.lnlike(theta) == pytest.approx(base.lnlike(theta) - removed, rel=1e-12)
    _, g_cut = cut.lnlike_and_grad(theta)
    assert np.all(np.isfinite(g_cut))


def test_model_images_match_render(cosmos_image_path, rng):
    scene, exposures, theta = blended_problem(cosmos_image_path, rng)
    like = pho.Likelihood(scene, exposures)
    scene.set_vector(theta)
    for e, m in zip(exposures, like.model_images(theta)):
        np.testing.assert_array_equal(m, pho.render(scene, e))


def test_gradient_images_match_finite_differences(cosmos_image_path, rng, smooth_boxes):
    scene, exposures, theta = blended_problem(cosmos_image_path, rng)
    like = pho.Likelihood(scene, exposures)
    grads = like.gradient_images(theta, 1)
    assert grads.shape == (scene.n_params,) + exposures[1].shape
    check_gradient(lambda t: like.model_images(t)[1], grads, theta, scene.parameter_kinds, scene.parameter_names, rtol=1e-5)


@pytest.mark.parametrize("source", ["point", "sersic"])
def test_flux_conservation(source):
    """A well-resolved source's counts sum to flux * counts_per_flux.

    Tolerance 2e-5: the pixel boxes drop at most 1e-5 of each Gaussian's flux (BOX_NSIGMA), the
    pixel integration errs by < 1e-4 of a pixel's value with errors of both signs, and the stamp
    (128 x 128 pixels of 0.03") holds the source out to > 9 sigma of its widest Gaussian.
    """
    prof = AnalyticStandInProfile(r_max_arcsec=0.2)
    wcs = tan_wcs(150.0, 2.0, (64.7, 64.2), rotation_deg=31.0)
    exp = pho.Exposure(np.zeros((128, 128)), np.ones((128, 128)), wcs, two_component_psf(), "F814W", counts_per_flux=7.5, background=0.25)
    if source == "point":
        src = pho.PointSource(150.0, 2.0, {"F814W": 12.0})
    else:
        src = pho.Sersic(150.0, 2.0, {"F814W": 12.0}, q=0.7, pa=0.3, n=3.0, rh=0.3, profile=prof)
    img = pho.render(pho.Scene([src]), exp)
    total = float(np.sum(img - 0.25))
    assert total == pytest.approx(12.0 * 7.5, rel=2e-5)


def _blank(wcs, band="F814W", shape=(40, 40), background=0.0):
    return pho.Exposure(np.zeros(shape), np.ones(shape), wcs, two_component_psf(), band, background=background)


def test_exposure_without_sources_is_refused():
    on_source = _blank(tan_wcs(150.0, 2.0, (20.5, 20.5)))
    wcs_far = tan_wcs(150.0, 2.0 + 60.0 / 3600, (20.5, 20.5))  # 1 arcmin north of the star
    far_away = pho.Exposure(np.zeros((40, 40)), np.ones((40, 40)), wcs_far, two_component_psf(), "F814W", name="far_field")
    scene = pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 1.0})])
    with pytest.raises(PhoDataError, match="exposure far_field .*overlaps no source"):
        pho.Likelihood(scene, [on_source, far_away])
    assert pho.Likelihood(scene, [on_source]).lnlike(scene.get_vector()) < 0


def test_source_on_no_exposure_is_refused():
    exp = _blank(tan_wcs(150.0, 2.0, (20.5, 20.5)))
    scene = pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 1.0}), pho.PointSource(150.0, 2.1, {"F814W": 1.0})])
    with pytest.raises(PhoDataError, match="source s1 .*lies on no exposure"):
        pho.Likelihood(scene, [exp])


def test_source_at_the_antipode_is_refused_not_drawn_at_the_centre():
    exp = _blank(tan_wcs(150.0, 2.0, (20.5, 20.5)), shape=(41, 41))
    exp = pho.Exposure(exp.pixels, exp.ivar, exp.wcs, exp.psf, "F814W", name="centre_field")
    star = pho.PointSource(150.0, 2.0, {"F814W": 1.0})
    # before the fix: accepted, and the antipodal star was drawn at the stamp centre
    with pytest.raises(PhoDataError, match=r"source s1 \(point\) at \(ra, dec\) = \(330\.000000, -2\.000000\) deg is "
                       r"180\.0 deg from .* of exposure centre_field: on the far side"):
        pho.Likelihood(pho.Scene([star, pho.PointSource(330.0, -2.0, {"F814W": 100.0})]), [exp])


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_parameter_vector_moving_a_source_to_the_far_side_is_refused(backend):
    if backend not in pho._backends.available_backends():
        pytest.skip(f"backend {backend} not built")
    exp = _blank(tan_wcs(150.0, 2.0, (20.5, 20.5)))
    prof = AnalyticStandInProfile()
    scene = pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 1.0}),
                       pho.Sersic(150.0, 2.0001, {"F814W": 1.0}, 0.5, 0.1, 2.0, 0.1, profile=prof)])
    like = pho.Likelihood(scene, [exp], backend=backend)
    for i, (ra, dec) in enumerate([(330.0, -2.0), (250.0, 10.0)]):  # the antipode; 99 deg away
        theta = scene.get_vector()
        theta[scene.parameter_names.index(f"s{i}.ra")] = ra
        theta[scene.parameter_names.index(f"s{i}.dec")] = dec
        for call in (like.lnlike, like.lnlike_and_grad, like.model_images):
            with pytest.raises(PhoValueError, match=rf"source s{i} \({scene.sources[i].kind}\) .*far side"):
                call(theta)


def test_band_coverage_is_checked():
    exp = _blank(tan_wcs(150.0, 2.0, (20.5, 20.5)))
    with pytest.raises(PhoValueError, match="band 'F814W' is not one of the scene's bands"):
        pho.Likelihood(pho.Scene([pho.PointSource(150.0, 2.0, {"F160W": 1.0})]), [exp])
    with pytest.raises(PhoValueError, match=r"scene band\(s\) \['F160W'\] have no exposure"):
        pho.Likelihood(pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 1.0, "F160W": 1.0})]), [exp])


def test_call_checks_parameters():
    prof = AnalyticStandInProfile()
    exp = _blank(tan_wcs(150.0, 2.0, (20.5, 20.5)))
    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"F814W": 1.0}, 0.5, 0.1, 2.0, 0.1, profile=prof)])
    like = pho.Likelihood(scene, [exp])
    theta = scene.get_vector()
    with pytest.raises(PhoValueError, match=r"shape \(6,\), expected \(7,\)"):
        like.lnlike_and_grad(theta[:-1])
    bad = theta.copy()
    bad[1] = np.nan
    with pytest.raises(PhoValueError, match="s0.ra = nan is not finite"):
        like.lnlike(bad)
    for q in (0.0, 1.2):
        bad = theta.copy()
        bad[3] = q
        with pytest.raises(PhoRangeError, match=r"s0.q .* outside \(0, 1\]"):
            like.lnlike_and_grad(bad)
    bad = theta.copy()
    bad[5] = 7.0
    with pytest.raises(PhoRangeError, match=r"s0.n = 7.0 is outside its range \[0.5, 6\]"):
        like.lnlike_and_grad(bad)


def test_poisson_needs_positive_model_and_counts():
    wcs = tan_wcs(150.0, 2.0, (20.5, 20.5))
    scene = pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 10.0})])
    exp = _blank(wcs)  # no background: the model is ~0 far from the star
    like = pho.Likelihood(scene, [exp], kind="poisson")
    with pytest.raises(PhoValueError, match="give the exposure a positive background"):
        like.lnlike(scene.get_vector())
    neg = pho.Exposure(np.full((40, 40), -1.0), np.ones((40, 40)), wcs, two_component_psf(), "F814W", background=1.0)
    with pytest.raises(PhoDataError, match="1600 counted pixels are negative"):
        pho.Likelihood(scene, [neg], kind="poisson")
    ok = pho.Likelihood(scene, [_blank(wcs, background=0.5)], kind="poisson")
    assert np.isfinite(ok.lnlike(scene.get_vector()))


def test_unknown_kind_is_refused():
    exp = _blank(tan_wcs(150.0, 2.0, (20.5, 20.5)))
    with pytest.raises(PhoValueError, match="kind='chi2'"):
        pho.Likelihood(pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 1.0})]), [exp], kind="chi2")


def test_transformed_likelihood_rejects_mismatched_transform():
    exp = _blank(tan_wcs(150.0, 2.0, (20.5, 20.5)))
    like = pho.Likelihood(pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 1.0})]), [exp])
    with pytest.raises(PhoValueError, match="transform has 2 parameters, the likelihood 3"):
        TransformedLikelihood(like, LogisticTransform([0, 0], [1, 1]))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_likelihood_pickles_for_worker_pools(cosmos_image_path, rng, backend):
    import pickle

    from pho._backends import available_backends

    if backend not in available_backends():
        pytest.skip(f"backend {backend!r} is not available here")
    scene, exposures, theta = blended_problem(cosmos_image_path, rng)
    like = pho.Likelihood(scene, exposures, backend=backend)
    clone = pickle.loads(pickle.dumps(like))
    assert clone.backend == backend
    value, grad = clone.lnlike_and_grad(theta)
    v0, g0 = like.lnlike_and_grad(theta)
    assert value == v0
    np.testing.assert_array_equal(grad, g0)


def test_with_workers_changes_threads_not_values(cosmos_image_path, rng):
    from pho._backends import available_backends

    if "cpu" not in available_backends():
        pytest.skip("the compiled cpu backend is not built here")
    scene, exposures, theta = blended_problem(cosmos_image_path, rng)
    like = pho.Likelihood(scene, exposures, backend="cpu", workers=2)
    single = like.with_workers(1)
    assert single._backend.workers == 1 and like._backend.workers == 2
    assert single._backend is not like._backend
    value, grad = single.lnlike_and_grad(theta)
    v0, g0 = like.lnlike_and_grad(theta)
    assert value == v0  # the kernels are thread-count invariant bit for bit
    np.testing.assert_array_equal(grad, g0)
    # the views pass it through to the likelihood they wrap
    from pho.fit import FixedParameters
    from pho.transforms import TransformedLikelihood

    fixed = FixedParameters(like, {like.parameter_names[0]: theta[0]}, theta=theta)
    fixed1 = fixed.with_workers(1)
    assert fixed1.likelihood._backend.workers == 1 and fixed.likelihood._backend.workers == 2
    assert fixed1.lnlike(theta[1:]) == fixed.lnlike(theta[1:])
    tl = TransformedLikelihood(like)
    tl1 = tl.with_workers(1)
    assert tl1.likelihood._backend.workers == 1 and tl1.transform is tl.transform
    u = tl.to_unconstrained(theta)
    assert tl1.lnlike(u) == tl.lnlike(u)


def test_sources_with_different_profile_objects(cosmos_image_path, rng):
    """Sersics with distinct (equal) profile objects form separate groups; results are unchanged."""
    shared = AnalyticStandInProfile()
    scene, exposures, theta = blended_problem(cosmos_image_path, rng, profile=shared)
    sources = [
        pho.Sersic(s.ra, s.dec, s.flux, s.q, s.pa, s.n, s.rh, profile=AnalyticStandInProfile()) if s.kind == "sersic" else s
        for s in scene.sources
    ]
    split = pho.Scene(sources)
    assert split.parameter_names == scene.parameter_names
    v0, g0 = pho.Likelihood(scene, exposures).lnlike_and_grad(theta)
    v1, g1 = pho.Likelihood(split, exposures).lnlike_and_grad(theta)
    assert v1 == pytest.approx(v0, rel=1e-13)
    np.testing.assert_allclose(g1, g0, rtol=1e-11, atol=1e-11 * np.abs(g0).max())


def test_negligible_gaussians_are_left_out_within_their_bound(monkeypatch):
    """The shipped table's widest components are dropped from a small stamp; the counts they
    could have put there bound the change, and the gradient is that of the kept model."""
    import pho.gaussians as gaussians

    wcs = tan_wcs(150.0, 2.0, (16.5, 16.5), scale_arcsec=0.03)
    psf = pho.PSFMixture.gaussian(fwhm_pix=2.0)
    exposure = pho.Exposure(np.zeros((32, 32)), np.ones((32, 32)), wcs, psf, "F814W")
    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"F814W": 1000.0}, q=0.8, pa=0.2, n=2.0, rh=0.1)])
    theta = scene.get_vector()
    like = pho.Likelihood(scene, [exposure])
    model = like._models[0]
    g, _ = model.forward(like._scene_model.prepare(theta))
    keep = model.significant(g)
    assert keep is not None and 0 < np.count_nonzero(~keep) < len(g)
    n_dropped = np.count_nonzero(~keep)

    fraction = gaussians.NEGLIGIBLE_FRACTION
    culled = pho.render(scene, exposure)
    lnl_culled, grad_culled = like.lnlike_and_grad(theta)
    monkeypatch.setattr(gaussians, "NEGLIGIBLE_FRACTION", 0.0)
    assert model.significant(g) is None
    full = pho.render(scene, exposure)
    lnl_full, grad_full = like.lnlike_and_grad(theta)

    total_counts = 1000.0
    bound = n_dropped * fraction * total_counts
    assert 0 < np.abs(full - culled).sum() <= bound
    np.testing.assert_allclose(grad_culled, grad_full, rtol=1e-5, atol=1e-6 * np.abs(grad_full).max())
    assert lnl_culled != lnl_full


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_overflowing_lnl_is_a_clear_error_not_inf_and_nan(backend):
    import warnings

    if backend not in pho._backends.available_backends():
        pytest.skip(f"backend {backend} not built")
    exp = _blank(tan_wcs(150.0, 2.0, (20.5, 20.5)), background=1.0)
    scene = pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 1.0})])
    like = pho.Likelihood(scene, [exp], backend=backend)
    theta = scene.get_vector()
    assert np.isfinite(like.lnlike(theta))
    for flux in (1e155, 1e200, 1e306):
        theta[0] = flux
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # before the fix: -inf, NaN gradients and RuntimeWarnings
            for call in (like.lnlike, like.lnlike_and_grad):
                with pytest.raises(PhoValueError, match=r"ln L overflows double precision .*bound the fluxes"):
                    call(theta)


def test_pixels_so_large_that_chi2_overflows_are_refused():
    with pytest.raises(PhoDataError, match=r"pixel values are so large .* overflows double precision.*rescale"):
        pho.Exposure(np.full((40, 40), 1e160), np.ones((40, 40)), tan_wcs(150.0, 2.0, (20.5, 20.5)),
                     two_component_psf(), "F814W")
    # large but representable: accepted
    pho.Exposure(np.full((40, 40), 1e140), np.ones((40, 40)), tan_wcs(150.0, 2.0, (20.5, 20.5)), two_component_psf(), "F814W")


def test_compiled_significance_equals_numpy():
    """The compiled negligible-Gaussian test keeps exactly the Gaussians the NumPy expression keeps."""
    pytest.importorskip("pho._render", reason="the compiled extension is not built here")
    wcs = tan_wcs(150.0, 2.0, (24.5, 24.5), scale_arcsec=0.03)
    exposure = pho.Exposure(np.zeros((48, 48)), np.ones((48, 48)), wcs, pho.PSFMixture.gaussian(fwhm_pix=2.0), "F814W")
    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"F814W": 1000.0}, q=0.8, pa=0.2, n=2.0, rh=0.1),
                       pho.Sersic(150.0 + 1e-4, 2.0, {"F814W": 10.0}, q=0.5, pa=1.2, n=4.0, rh=0.6),
                       pho.PointSource(150.0, 2.0 + 1e-4, {"F814W": 50.0})])
    like = pho.Likelihood(scene, [exposure])
    model = like._models[0]
    g, _ = model.forward(like._scene_model.prepare(scene.get_vector()))
    want = model.significant(g)
    model.compiled = True
    try:
        got = model.significant(g)
    finally:
        model.compiled = False
    assert want is not None and 0 < np.count_nonzero(~want) < len(g)
    np.testing.assert_array_equal(got, want)
