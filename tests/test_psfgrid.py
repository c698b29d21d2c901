"""PSFGrid: interpolation (exact at grid points, positive definite between), FITS I/O, bad input,
and PSFs that vary over the field in exposures, the model, the likelihood and field cutouts."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from helpers import central_difference, check_gradient, fd_step, tan_wcs

import pho
import pho._reference
from pho import PhoDataWarning, PSFMixture
from pho.errors import PhoValueError
from pho.profiles import AnalyticStandInProfile
from pho.psfgrid import PSFGrid, grid_nodes, match_components, psf_parameter_arrays, read_psf
from scipy.special import erf

RA0, DEC0 = 150.1, 2.2


def _mixture(width, angle, amp_core=0.6, dx=0.0):
    """A two-Gaussian mixture: an elliptical core of FWHM ``width`` at ``angle`` and a halo."""
    core = PSFMixture.gaussian(width, q=0.7, theta_rad=angle)
    halo = PSFMixture.gaussian(2.5 * width, q=0.9, theta_rad=-angle)
    return PSFMixture(
        [amp_core, 1 - amp_core], [dx, -0.5 * dx], [0.1, -0.1], [core.cxx[0], halo.cxx[0]],
        [core.cxy[0], halo.cxy[0]], [core.cyy[0], halo.cyy[0]],
    )


def _grid(nx=3, ny=2, interpolation="bilinear", outside="error", xs=None, ys=None):
    xs = np.linspace(0.0, 200.0, nx) if xs is None else np.asarray(xs, float)
    ys = np.linspace(0.0, 100.0, ny) if ys is None else np.asarray(ys, float)
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    mix = [_mixture(2.0 + x / 200.0 + y / 300.0, 0.3 + x / 400.0 - y / 500.0, 0.55 + 0.001 * x, dx=y / 500.0)
           for x, y in zip(gx, gy)]
    for k, m in enumerate(mix):
        m.meta.update({"HDU": k, "MAXRES": 0.01 * k})
    return PSFGrid(gx, gy, mix, interpolation=interpolation, outside=outside, meta={"INPUT": "test", "CMDLINE": "x y"})


def _params(m):
    return np.column_stack([m.amp, m.x, m.y, m.cxx, m.cxy, m.cyy])


# ------------------------------------------------------------------------------------ interpolation
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_interpolation_is_exact_at_grid_points(interpolation):
    grid = _grid(interpolation=interpolation)
    for x, y, m in zip(grid.x_pix, grid.y_pix, grid.mixtures):
        np.testing.assert_array_equal(_params(grid.at(x, y)), _params(m))


def test_bilinear_is_linear_along_edges_and_the_mean_at_a_cell_centre():
    grid = _grid(nx=2, ny=2)
    p = {(float(x), float(y)): _params(m) for x, y, m in zip(grid.x_pix, grid.y_pix, grid.mixtures)}
    np.testing.assert_allclose(_params(grid.at(50.0, 0.0)), 0.75 * p[0.0, 0.0] + 0.25 * p[200.0, 0.0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(_params(grid.at(200.0, 60.0)), 0.4 * p[200.0, 0.0] + 0.6 * p[200.0, 100.0], rtol=1e-14, atol=1e-15)
    mean = (p[0.0, 0.0] + p[200.0, 0.0] + p[0.0, 100.0] + p[200.0, 100.0]) / 4.0
    np.testing.assert_allclose(_params(grid.at(100.0, 50.0)), mean, rtol=1e-14, atol=1e-15)


def test_nearest_takes_the_nearest_grid_point_with_uneven_spacing():
    grid = _grid(nx=3, ny=2, interpolation="nearest", xs=[0.0, 10.0, 100.0], ys=[0.0, 50.0])
    by_pos = {(float(x), float(y)): _params(m) for x, y, m in zip(grid.x_pix, grid.y_pix, grid.mixtures)}
    for (x, y), expect in [((4.9, 10.0), (0.0, 0.0)), ((5.1, 30.0), (10.0, 50.0)), ((54.0, 24.0), (10.0, 0.0)),
                           ((56.0, 26.0), (100.0, 50.0)), ((5.0, 25.0), (0.0, 0.0))]:  # ties go to the lower x and y
        np.testing.assert_array_equal(_params(grid.at(x, y)), by_pos[expect])
    np.testing.assert_array_equal(grid.nearest_index([4.9, 56.0, 1e4], [10.0, 26.0, -50.0]),
                                  [int(np.flatnonzero((grid.x_pix == x) & (grid.y_pix == y))[0])
                                   for x, y in [(0.0, 0.0), (100.0, 50.0), (100.0, 0.0)]])


def test_interpolated_covariances_stay_positive_definite(rng):
    # very elongated Gaussians at crossed angles: a linear blend of the matrices is still positive definite
    xs, ys = np.array([0.0, 40.0, 100.0]), np.array([0.0, 70.0])
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    mix = []
    for k in range(len(gx)):
        a = PSFMixture.gaussian(8.0 + k, q=0.05, theta_rad=k * np.pi / 2)  # 20:1, turning by 90 deg each point
        b = PSFMixture.gaussian(5.0, q=0.1, theta_rad=-k * 1.3)
        mix.append(PSFMixture([0.5, 0.5], [0, 0], [0, 0], [a.cxx[0], b.cxx[0]], [a.cxy[0], b.cxy[0]], [a.cyy[0], b.cyy[0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoDataWarning)  # crossed angles: the order check flags them, rightly
        grid = PSFGrid(gx, gy, mix)
    x = rng.uniform(0, 100, 2000)
    y = rng.uniform(0, 70, 2000)
    p = grid.parameters_at(x, y)
    det = p[..., 3] * p[..., 5] - p[..., 4] ** 2
    assert np.all(p[..., 3] > 0) and np.all(det > 0)
    # the smallest eigenvalue is at least the smallest of the grid's (concavity of lambda_min)
    lam_min = 0.5 * (p[..., 3] + p[..., 5]) - np.hypot(0.5 * (p[..., 3] - p[..., 5]), p[..., 4])
    grid_min = min(float(np.min(np.linalg.eigvalsh(m.covariances))) for m in mix)
    assert lam_min.min() >= grid_min * (1 - 1e-12)
    np.testing.assert_allclose(p[..., 0].sum(axis=1), 1.0, rtol=1e-14)
    grid.at(33.3, 12.1)  # PSFMixture's own checks (PD, sum, MIN_FWHM_PIX) accept an interpolated mixture


# ------------------------------------------------------------------------------------ bad input
def test_position_outside_the_hull_is_refused_or_clamped_with_a_warning():
    grid = _grid()
    with pytest.raises(PhoValueError, match=r"outside the grid's hull x in \[0, 200\], y in \[0, 100\].*clamp"):
        grid.at(201.0, 50.0)
    assert grid.contains(200.0 + 1e-9, 100.0) and not grid.contains(200.1, 50.0)
    clamped = grid.with_options(outside="clamp")
    with pytest.warns(PhoDataWarning, match="nearest point of the hull"):
        m = clamped.at(250.0, -10.0)
    np.testing.assert_array_equal(_params(m), _params(grid.at(200.0, 0.0)))


def test_non_finite_positions_are_refused():
    grid = _grid()
    with pytest.raises(PhoValueError, match="non-finite pixel position"):
        grid.at(np.nan, 3.0)
    with pytest.raises(PhoValueError, match="non-finite positions"):
        PSFGrid([0, 1, 0, np.nan], [0, 0, 1, 1], [_mixture(2.0, 0.0)] * 4)


def test_mismatched_component_counts_are_refused():
    mix = [_mixture(2.0, 0.0)] * 3 + [PSFMixture.gaussian(2.0)]
    with pytest.raises(PhoValueError, match=r"different numbers of Gaussians \[1, 2\].*same L"):
        PSFGrid([0, 1, 0, 1], [0, 0, 1, 1], mix)
    with pytest.raises(PhoValueError, match="cannot match mixtures of 2 and 1"):
        match_components(mix[0], mix[3])


def test_positions_that_are_not_a_full_grid_are_refused():
    m = _mixture(2.0, 0.0)
    with pytest.raises(PhoValueError, match="need 6 points, got 5"):
        PSFGrid([0, 1, 2, 0, 1], [0, 0, 0, 1, 1], [m] * 5)
    with pytest.raises(PhoValueError, match=r"position \(0, 0\) appears 2 times"):
        grid_nodes([0, 0, 1, 1], [0, 0, 1, 0])
    with pytest.raises(PhoValueError, match="at least 2 x 2"):
        PSFGrid([0, 1, 2], [0, 0, 0], [m] * 3)
    with pytest.raises(PhoValueError, match="one x_pix, one y_pix and one mixture"):
        PSFGrid([0, 1, 0, 1], [0, 0, 1, 1], [m] * 3)
    with pytest.raises(PhoValueError, match="interpolation='cubic'"):
        PSFGrid([0, 1, 0, 1], [0, 0, 1, 1], [m] * 4, interpolation="cubic")
    with pytest.raises(PhoValueError, match="outside='extrapolate'"):
        PSFGrid([0, 1, 0, 1], [0, 0, 1, 1], [m] * 4, outside="extrapolate")
    with pytest.raises(TypeError, match="not a pho.PSFMixture"):
        PSFGrid([0, 1, 0, 1], [0, 0, 1, 1], [m] * 3 + ["psf.fits"])


def test_components_in_different_orders_warn_for_bilinear_only():
    grid = _grid(nx=2, ny=2)
    mix = list(grid.mixtures)
    m = mix[3]
    mix[3] = PSFMixture(m.amp[::-1], m.x[::-1], m.y[::-1], m.cxx[::-1], m.cxy[::-1], m.cyy[::-1])
    np.testing.assert_array_equal(match_components(mix[2], mix[3]), [1, 0])
    with pytest.warns(PhoDataWarning, match="2 pair.*different orders.*interpolation='nearest'"):
        PSFGrid(grid.x_pix, grid.y_pix, mix)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PSFGrid(grid.x_pix, grid.y_pix, mix, interpolation="nearest")
        PSFGrid(grid.x_pix, grid.y_pix, grid.mixtures)


def test_grid_is_immutable():
    grid = _grid()
    with pytest.raises(AttributeError, match="immutable"):
        grid.interpolation = "nearest"
    with pytest.raises(ValueError):
        grid.x_pix[0] = 5.0


# ------------------------------------------------------------------------------------ files
def test_write_read_round_trip(tmp_path):
    grid = _grid(nx=3, ny=2, interpolation="nearest", outside="clamp")
    path = grid.write(tmp_path / "grid.fits")
    assert sorted(os.listdir(tmp_path)) == ["grid.fits"]  # written via a temporary name, nothing left over
    back = PSFGrid.read(path)
    assert (back.interpolation, back.outside, back.shape, back.n_gauss) == ("nearest", "clamp", (2, 3), 2)
    np.testing.assert_array_equal(back.x_pix, grid.x_pix)
    np.testing.assert_array_equal(back.y_pix, grid.y_pix)
    for a, b in zip(back.mixtures, grid.mixtures):
        np.testing.assert_array_equal(_params(a), _params(b))
        assert a.meta["HDU"] == b.meta["HDU"] and isinstance(a.meta["HDU"], int)
        assert a.meta["MAXRES"] == b.meta["MAXRES"]
    assert back.meta["INPUT"] == "test" and back.meta["CMDLINE"] == "x y"
    assert isinstance(read_psf(path), PSFGrid)
    assert PSFGrid.read(path, interpolation="bilinear").interpolation == "bilinear"
    for a, b in zip(psf_parameter_arrays(back), psf_parameter_arrays(grid)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileExistsError, match="not overwriting"):
        grid.write(path)
    grid.with_options(interpolation="bilinear").write(path, overwrite=True)
    assert PSFGrid.read(path).interpolation == "bilinear"


def test_reading_a_file_that_is_not_a_grid_is_a_clear_error(tmp_path):
    single = _mixture(2.0, 0.1).write(tmp_path / "one.fits")
    assert isinstance(read_psf(single), PSFMixture)
    with pytest.raises(PhoValueError, match="no PSFGRID extension"):
        PSFGrid.read(single)
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros((3, 3))).writeto(tmp_path / "img.fits")
    with pytest.raises(PhoValueError, match="neither a PSFMIX.*nor a PSFGRID"):
        read_psf(tmp_path / "img.fits")


# ------------------------------------------------------------------------------------ exposures and the model
def _exposure(grid, shape=(40, 50), offset=(0.0, 0.0), data=None, ivar=1.0, name=None):
    ny, nx = shape
    wcs = tan_wcs(RA0, DEC0, ((nx + 1) / 2.0, (ny + 1) / 2.0), rotation_deg=20.0)
    pixels = np.zeros(shape) if data is None else data
    return pho.Exposure(pixels, np.full(shape, ivar), wcs, grid, "F814W", counts_per_flux=2.0, psf_offset_pix=offset,
                        name=name)


def test_exposure_takes_the_grid_mixture_at_the_source_position_with_the_cutout_offset():
    grid = _grid()
    exp = _exposure(grid, offset=(120.0, 30.0))
    assert exp.psf_varies and exp.psf_offset_pix == (120.0, 30.0)
    np.testing.assert_array_equal(_params(exp.psf_at(10.5, 20.25)), _params(grid.at(130.5, 50.25)))
    assert exp.with_background(1.0).psf_offset_pix == (120.0, 30.0)
    # the model: each source gets the mixture at its own pixel position
    ra, dec = exp.wcs.pixel_to_world_values([5.0, 40.0], [8.0, 30.0])
    scene = pho.Scene([pho.PointSource(ra[0], dec[0], {"F814W": 10.0}),
                       pho.Sersic(ra[1], dec[1], {"F814W": 20.0}, q=0.7, pa=0.3, n=1.5, rh=0.1,
                                  profile=AnalyticStandInProfile())])
    em = pho.gaussians.ExposureModel(pho.gaussians.SceneModel(scene), exp)
    np.testing.assert_allclose(em.psf_positions, [[5.0, 8.0], [40.0, 30.0]], atol=1e-4)
    np.testing.assert_allclose(em.psf_params[0], _params(grid.at(*(em.psf_positions[0] + (120.0, 30.0)))), rtol=1e-13)
    np.testing.assert_allclose(em.psf_params[1], _params(grid.at(*(em.psf_positions[1] + (120.0, 30.0)))), rtol=1e-13)
    # a point source's image Gaussians are its mixture's, shifted to its position
    g = pho.gaussians.image_gaussians(scene, exp).gaussians[:2]
    m0 = grid.at(*(em.psf_positions[0] + (120.0, 30.0)))
    np.testing.assert_allclose(g[:, 1] - em.psf_positions[0, 0], m0.x, atol=1e-9)
    np.testing.assert_allclose(g[:, 0], 2.0 * 10.0 * m0.amp / (2 * np.pi * np.sqrt(m0.cxx * m0.cyy - m0.cxy**2)), rtol=1e-12)


def test_bad_psf_offsets_and_types_are_refused():
    grid = _grid()
    with pytest.raises(PhoValueError, match="psf_offset_pix=.*two finite numbers"):
        _exposure(grid, offset=(np.nan, 0.0))
    with pytest.raises(PhoValueError, match="psf_offset_pix"):
        _exposure(grid, offset=(1.0,))
    with pytest.raises(TypeError, match="PSFMixture or pho.psfgrid.PSFGrid"):
        _exposure([grid])


def test_source_outside_the_grid_names_the_source_and_the_exposure():
    grid = _grid()
    exp = _exposure(grid, offset=(180.0, 0.0), name="cut")  # this stamp reaches x = 229 of the grid's frame
    ra, dec = exp.wcs.pixel_to_world_values(40.0, 10.0)  # x = 220 in the grid's frame
    scene = pho.Scene([pho.PointSource(float(ra), float(dec), {"F814W": 10.0})])
    with pytest.raises(PhoValueError, match=r"source s0 \(point\) at pixel \(220.*exposure cut, whose pixel \(0, 0\) is \(180, 0\)"):
        pho.Likelihood(scene, [exp])
    with pytest.warns(PhoDataWarning, match="nearest point of the hull"):
        like = pho.Likelihood(scene, [_exposure(grid.with_options(outside="clamp"), offset=(180.0, 0.0))])
    em = like._models[0]
    np.testing.assert_allclose(em.psf_params[0], _params(grid.at(200.0, em.psf_positions[0, 1])), rtol=1e-13)


def test_psf_grid_and_offset_from_fits_cutout(tmp_path):
    from astropy.io import fits

    grid = _grid()
    shape = (60, 80)
    wcs = tan_wcs(RA0, DEC0, (40.5, 30.5))
    fits.PrimaryHDU(np.zeros(shape), header=wcs.to_header()).writeto(tmp_path / "sci.fits")
    fits.PrimaryHDU(np.ones(shape)).writeto(tmp_path / "err.fits")
    grid.write(tmp_path / "grid.fits")
    exp = pho.Exposure.from_fits(tmp_path / "sci.fits", err_path=tmp_path / "err.fits", psf=tmp_path / "grid.fits",
                                 band="F814W", cutout=(10, 20, 50, 45), psf_offset_pix=(100.0, 5.0))
    assert isinstance(exp.psf, PSFGrid) and exp.psf_offset_pix == (110.0, 25.0)
    np.testing.assert_array_equal(_params(exp.psf_at(3.0, 4.0)), _params(grid.at(113.0, 29.0)))


@pytest.fixture
def smooth_boxes(monkeypatch):
    """Reference boxes wide enough that the model is smooth (see tests/test_likelihood.py)."""
    monkeypatch.setattr(pho._reference, "BOX_NSIGMA", 40.0)


def _grid_problem(rng):
    """A point source and two Sersics at different places of an exposure with a PSF grid whose
    mixtures change strongly over a few pixels (so every source has a different PSF)."""
    xs, ys = np.array([0.0, 20.0, 45.0]), np.array([0.0, 18.0, 40.0])
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    mix = [_mixture(1.6 + 0.03 * x + 0.02 * y, 0.5 + 0.05 * x - 0.04 * y, 0.5 + 0.005 * x, dx=0.01 * y)
           for x, y in zip(gx, gy)]
    grid = PSFGrid(gx, gy, mix)
    blank = _exposure(grid, shape=(36, 40), offset=(3.0, 2.0))
    prof = AnalyticStandInProfile()
    ra, dec = blank.wcs.pixel_to_world_values([10.0, 27.0, 18.0], [9.0, 14.0, 27.0])
    scene = pho.Scene([
        pho.PointSource(ra[0], dec[0], {"F814W": 30.0}),
        pho.Sersic(ra[1], dec[1], {"F814W": 60.0}, q=0.6, pa=0.4, n=2.2, rh=0.12, profile=prof),
        pho.Sersic(ra[2], dec[2], {"F814W": 40.0}, q=0.5, pa=-1.0, n=1.3, rh=0.08, profile=prof),
    ])
    model = pho.render(scene, blank)
    exp = _exposure(grid, shape=(36, 40), offset=(3.0, 2.0), data=model + rng.normal(size=model.shape) * 0.5, ivar=4.0)
    theta = scene.get_vector()
    theta[np.array(scene.parameter_kinds) == "flux"] *= 1.1
    theta[np.array(scene.parameter_kinds) == "ra"] += 0.2 * 0.03 / 3600  # moved 0.2 pixel from where the PSF was taken
    return scene, exp, theta


def test_gradient_with_a_psf_grid_matches_finite_differences(rng, smooth_boxes):
    scene, exp, theta = _grid_problem(rng)
    like = pho.Likelihood(scene, [exp])
    em = like._models[0]
    assert em.psf_per_source
    p = em.psf_params
    assert np.all(np.abs(p[0, :, 3] - p[1, :, 3]) > 0.1) and np.all(np.abs(p[1, :, 3] - p[2, :, 3]) > 0.1)
    value, grad = like.lnlike_and_grad(theta)
    assert value == pytest.approx(like.lnlike(theta), rel=1e-14)
    # The mixtures were fixed when the likelihood was built; the finite differences of like.lnlike
    # hold them fixed too, so this checks the exact gradient of the model that is evaluated.
    # Fluxes and shapes to 1e-6; positions to the project's 1e-5 (tests/test_likelihood.py): at
    # ra = 150 deg a 1e-8 deg step moves a source by 1e-3 pixel, and the projection's round-off
    # (~1e-9 pixel) makes central differences scatter by ~1e-6 of the derivative at any step.
    kinds = np.array(scene.parameter_kinds)
    pos = np.isin(kinds, ["ra", "dec"])
    for sel, rtol in ((~pos, 1e-6), (pos, 1e-5)):
        idx = np.flatnonzero(sel)

        def f(t_sub, idx=idx):
            t = theta.copy()
            t[idx] = t_sub
            return like.lnlike(t)

        check_gradient(f, grad[idx], theta[idx], kinds[idx], np.array(scene.parameter_names)[idx], rtol=rtol)
    # the mixtures do not follow the sources: moving them leaves each source's PSF as it was
    np.testing.assert_array_equal(like.with_workers(1)._models[0].psf_params, p)


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_psf_grid_fast_backends_match_reference(rng, backend):
    scene, exp, theta = _grid_problem(rng)
    ref = pho.Likelihood(scene, [exp], backend="reference")
    try:
        fast = pho.Likelihood(scene, [exp], backend=backend, workers=2)
    except pho.PhoBackendError as exc:
        pytest.skip(f"backend {backend!r} not available here: {exc}")
    v_ref, g_ref = ref.lnlike_and_grad(theta)
    v_fast, g_fast = fast.lnlike_and_grad(theta)
    assert v_fast == pytest.approx(v_ref, rel=1e-12)
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-10, atol=1e-10 * np.max(np.abs(g_ref)))
    np.testing.assert_allclose(pho.render(scene, exp, backend=backend, theta=theta),
                               pho.render(scene, exp, theta=theta), rtol=1e-12, atol=1e-12)


def test_with_psf_at_retakes_the_mixtures_where_the_sources_are(rng):
    scene, exp, theta = _grid_problem(rng)
    like = pho.Likelihood(scene, [exp])
    moved = theta.copy()
    moved[np.array(scene.parameter_kinds) == "dec"] += 3.0 * 0.03 / 3600  # three pixels
    again = like.with_psf_at(moved)
    assert not np.allclose(again._models[0].psf_params, like._models[0].psf_params)
    scene.set_vector(moved)
    fresh = pho.Likelihood(scene, [exp])
    assert again.lnlike(moved) == pytest.approx(fresh.lnlike(moved), rel=1e-14)
    np.testing.assert_array_equal(again._models[0].psf_params, fresh._models[0].psf_params)
    assert like.lnlike(moved) != pytest.approx(fresh.lnlike(moved), rel=1e-9)
    # render at theta takes the PSFs at theta's positions, like a likelihood built there
    np.testing.assert_allclose(pho.render(scene, exp, theta=moved), fresh.model_images(moved)[0], rtol=1e-14, atol=1e-14)


def test_with_psf_at_takes_a_vector_with_sky_parameters(rng):
    # a likelihood with sky parameters: with_psf_at reads the sources' part of the longer vector
    scene, exp, theta = _grid_problem(rng)
    like = pho.Likelihood(scene, [exp], sky="constant")
    full = np.concatenate([theta, [0.5]])
    moved = full.copy()
    moved[: len(theta)][np.array(scene.parameter_kinds) == "dec"] += 3.0 * 0.03 / 3600
    again = like.with_psf_at(moved)
    plain = pho.Likelihood(scene, [exp]).with_psf_at(moved[: len(theta)])
    np.testing.assert_array_equal(again._models[0].psf_params, plain._models[0].psf_params)
    assert again.n_params == len(theta) + 1


def test_single_mixture_exposures_are_unchanged_by_the_grid_path(rng):
    # a grid of one repeated mixture gives the single mixture's model to rounding
    scene, exp, theta = _grid_problem(rng)
    m = exp.psf.mixtures[4]
    flat = PSFGrid(exp.psf.x_pix, exp.psf.y_pix, [m] * 9)
    e_grid = pho.Exposure(exp.pixels, exp.ivar, exp.wcs, flat, "F814W", counts_per_flux=2.0)
    e_one = pho.Exposure(exp.pixels, exp.ivar, exp.wcs, m, "F814W", counts_per_flux=2.0)
    a = pho.Likelihood(scene, [e_grid]).lnlike_and_grad(theta)
    b = pho.Likelihood(scene, [e_one]).lnlike_and_grad(theta)
    assert a[0] == pytest.approx(b[0], rel=1e-13)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-11, atol=1e-12 * np.max(np.abs(b[1])))


# ------------------------------------------------------------------------------------ a star at a grid point
def _gauss_pixel_integrals(shape, x0, y0, amps, sigx, sigy):
    """Exact pixel integrals of axis-aligned Gaussians (erf), independent of pho's renderer."""
    ny, nx = shape
    xe = np.arange(nx + 1) - 0.5
    ye = np.arange(ny + 1) - 0.5
    img = np.zeros(shape)
    for a, sx, sy in zip(amps, sigx, sigy):
        fx = np.diff(0.5 * erf((xe - x0) / (np.sqrt(2) * sx)))
        fy = np.diff(0.5 * erf((ye - y0) / (np.sqrt(2) * sy)))
        img += a * np.outer(fy, fx)
    return img


def _truth(x, y):
    """A PSF varying smoothly over a 400 x 300 pixel detector, by 40% in width and 20% in the
    core's flux fraction: two axis-aligned Gaussians, (amplitudes, sigma_x, sigma_y) in pixels."""
    u, v = x / 400.0, y / 300.0
    s = 1.0 + 0.3 * u + 0.2 * v - 0.1 * u * v
    return [0.7 - 0.1 * u * v, 0.3 + 0.1 * u * v], [s, 2.6 * s + 0.4 * v], [1.1 * s + 0.2 * u, 3.0 * s]


@pytest.fixture(scope="module")
def synthetic_grid():
    """A 3 x 3 grid of pixel-integrated 25 x 25 PSF images of ``_truth``, fitted with K = 2."""
    from pho.psfgridfit import fit_psf_grid

    gx, gy = (a.ravel() for a in np.meshgrid([0.0, 200.0, 400.0], [0.0, 150.0, 300.0]))
    images = [_gauss_pixel_integrals((25, 25), 12.0, 12.0, *_truth(x, y)) for x, y in zip(gx, gy)]
    return fit_psf_grid(images, gx, gy, 2, 1.0, pixel_integrated=True).grid


def _star_error(grid, x_grid, y_grid, interpolation="bilinear", backend="reference"):
    """max |render - truth| / peak for a star at grid position (x_grid, y_grid), via an exposure
    that is a cutout with its pixel (0, 0) at (x_grid - 20.3, y_grid - 17.6) of the grid's frame."""
    offset = (x_grid - 20.3, y_grid - 17.6)
    exp = _exposure(grid.with_options(interpolation=interpolation), shape=(36, 40), offset=offset)
    ra, dec = exp.wcs.pixel_to_world_values(20.3, 17.6)
    scene = pho.Scene([pho.PointSource(float(ra), float(dec), {"F814W": 50.0})])
    model = pho.render(scene, exp, backend=backend)
    truth = 100.0 * _gauss_pixel_integrals((36, 40), 20.3, 17.6, *_truth(x_grid, y_grid))
    return float(np.max(np.abs(model - truth)) / truth.max())


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_star_at_a_grid_point_matches_that_points_psf_image(synthetic_grid, backend):
    for x, y in [(200.0, 150.0), (0.0, 300.0), (400.0, 0.0)]:
        assert _star_error(synthetic_grid, x, y, backend=backend) < 0.01


def test_between_grid_points_bilinear_beats_nearest(synthetic_grid):
    # at cell centres, half-way along an edge and elsewhere: the truth is between the grid's PSFs
    for x, y in [(100.0, 75.0), (300.0, 225.0), (400.0, 75.0), (130.0, 260.0)]:
        bil = _star_error(synthetic_grid, x, y, "bilinear")
        near = _star_error(synthetic_grid, x, y, "nearest")
        assert bil < 0.01 and bil < 0.35 * near, (x, y, bil, near)


# ------------------------------------------------------------------------------------ fields
def _field_files(tmp_path, grid):
    from astropy.io import fits

    shape = (120, 150)
    wcs = tan_wcs(RA0, DEC0, (75.5, 60.5))
    fits.PrimaryHDU(np.zeros(shape), header=wcs.to_header()).writeto(tmp_path / "sci.fits")
    fits.PrimaryHDU(np.full(shape, 0.5)).writeto(tmp_path / "err.fits")
    grid.write(tmp_path / "grid.fits")
    return tmp_path / "sci.fits", tmp_path / "err.fits", tmp_path / "grid.fits"


def test_field_exposure_cutout_keeps_the_grid_in_the_mosaic_frame(tmp_path):
    from pho.field import FieldExposure

    grid = _grid(nx=3, ny=3, xs=[0.0, 75.0, 149.0], ys=[0.0, 60.0, 119.0])
    sci, err, gpath = _field_files(tmp_path, grid)
    fexp = FieldExposure.open(sci, err, gpath, "F814W")
    assert isinstance(fexp.psf, PSFGrid)
    cut = fexp.cutout((90, 30, 130, 70))
    assert cut.psf_offset_pix == (90.0, 30.0)
    ra, dec = cut.wcs.pixel_to_world_values(12.0, 25.0)
    x_full, y_full = fexp.sky_to_pixel(ra, dec)
    np.testing.assert_allclose([x_full, y_full], [102.0, 55.0], atol=1e-6)
    scene = pho.Scene([pho.PointSource(float(ra), float(dec), {"F814W": 10.0})])
    em = pho.Likelihood(scene, [cut])._models[0]
    # pho's own astrometry places the source within ASTROMETRY_TOLERANCE_PIX of astropy's position
    x_grid, y_grid = em.psf_positions[0] + cut.psf_offset_pix
    np.testing.assert_allclose([x_grid, y_grid], [x_full, y_full], atol=pho.exposure.ASTROMETRY_TOLERANCE_PIX)
    np.testing.assert_allclose(em.psf_params[0], _params(grid.at(x_grid, y_grid)), rtol=1e-13, atol=1e-15)


def test_footprints_use_the_nearest_grid_point(tmp_path):
    from pho.field import FieldExposure
    from pho.field.footprints import footprint_radii_arcsec
    from pho.field.sourcetable import FieldSources

    narrow, wide = PSFMixture.gaussian(2.0), PSFMixture.gaussian(6.0)
    grid = PSFGrid([0.0, 149.0, 0.0, 149.0], [0.0, 0.0, 119.0, 119.0], [narrow, wide, narrow, wide])
    sci, err, gpath = _field_files(tmp_path, grid)
    fgrid = FieldExposure.open(sci, err, gpath, "F814W")
    fnarrow = FieldExposure.open(sci, err, narrow, "F814W")
    fwide = FieldExposure.open(sci, err, wide, "F814W")
    ra, dec = fgrid.wcs.pixel_to_world_values([10.0, 140.0], [50.0, 70.0])  # near the narrow and the wide side
    sources = FieldSources.from_sources([pho.PointSource(float(a), float(d), {"F814W": 50.0}) for a, d in zip(ra, dec)],
                                        bands=["F814W"])
    r_grid = footprint_radii_arcsec(sources, [fgrid], 1.0)
    r_narrow = footprint_radii_arcsec(sources, [fnarrow], 1.0)
    r_wide = footprint_radii_arcsec(sources, [fwide], 1.0)
    assert r_narrow[0] < r_wide[0]
    assert r_grid[0] == r_narrow[0] and r_grid[1] == r_wide[1]


@pytest.mark.slow
def test_fit_with_a_psf_grid_recovers_the_truth(rng):
    """A star and two galaxies simulated with the grid's PSFs at their true positions, fitted from
    starts about a pixel away, where the likelihood takes the PSFs (1-1.6% too narrow or wide on
    this steep grid): the truth is recovered within 4 sigma, and the result differs from a fit
    whose PSFs are taken at the truth by well under a sigma (0.27 sigma at most, measured)."""
    scene, exp, _ = _grid_problem(rng)
    truth = scene.get_vector()
    start = truth.copy()
    kinds = np.array(scene.parameter_kinds)
    start[kinds == "flux"] *= 1.2
    start[kinds == "ra"] += 1.0 * 0.03 / 3600
    start[kinds == "dec"] -= 0.7 * 0.03 / 3600
    scene.set_vector(start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pho.PhoWarning)
        like = pho.Likelihood(scene, [exp], backend="cpu", workers=1)
        result = pho.optimize(like)
        at_truth = pho.optimize(like.with_psf_at(truth), theta0=start)
    assert result.success and at_truth.success
    pull = (result.theta - truth) / result.sigma
    assert np.all(np.abs(pull) < 4.0), dict(zip(scene.parameter_names, np.round(pull, 2)))
    assert np.all(np.abs(result.theta - at_truth.theta) < 0.5 * at_truth.sigma)


def test_monte_carlo_renderer_takes_each_sources_mixture_from_the_grid(rng):
    """The MC renderer with a PSF grid draws each source with the grid's mixture at its position:
    its image is the sum of each source drawn alone (other fluxes zero, the same draws) through an
    exposure holding that source's mixture."""
    import copy

    scene, exp, _ = _grid_problem(rng)
    theta = scene.get_vector()
    mc = pho.MonteCarloRenderer(n_draws=512)
    with_grid = pho.render(scene, exp, backend=mc)
    kinds = np.array(scene.parameter_kinds)
    total = np.zeros_like(with_grid)
    for i, src in enumerate(scene.sources):
        x, y = exp.sky_to_pixel(src.ra, src.dec)
        one = pho.Exposure(exp.pixels, exp.ivar, exp.wcs, exp.psf_at(x, y), "F814W", counts_per_flux=2.0)
        t = theta.copy()
        others = np.ones(len(theta), bool)
        others[scene.source_parameter_indices(i)] = False
        t[others & (kinds == "flux")] = 0.0
        total += pho.render(copy.deepcopy(scene), one, backend=mc, theta=t)
    peak = with_grid.max()
    np.testing.assert_allclose(with_grid, total, rtol=0, atol=1e-10 * peak)  # sums of ~1e4 Gaussians in another order
    # and not what one mixture for all gives
    middle = pho.Exposure(exp.pixels, exp.ivar, exp.wcs, exp.psf.mixtures[4], "F814W", counts_per_flux=2.0)
    assert np.max(np.abs(pho.render(scene, middle, backend=mc) - with_grid)) > 1e-2 * peak


def test_monte_carlo_gradient_with_a_psf_grid_matches_finite_differences(rng, smooth_boxes):
    """As tests/test_mc.py does for one mixture: fourth-order differences of lnL at the same draws,
    with steps large against the rounding of the draws' positions, to 1e-6 (positions 1e-5)."""
    scene, exp, theta = _grid_problem(rng)
    like = pho.Likelihood(scene, [exp], backend=pho.MonteCarloRenderer(n_draws=256))
    assert like._models[0].psf_per_source
    value, grad = like.lnlike_and_grad(theta)
    assert value == pytest.approx(like.lnlike(theta), rel=1e-13)
    for i, (kind, name) in enumerate(zip(scene.parameter_kinds, scene.parameter_names)):
        h = fd_step(kind, theta[i]) * (5 if kind in ("ra", "dec") else 10)
        d1 = central_difference(like.lnlike, theta, i, h)
        d2 = central_difference(like.lnlike, theta, i, 2 * h)
        fd = (4 * d1 - d2) / 3  # fourth order
        rtol = 1e-5 if kind in ("ra", "dec") else 1e-6  # positions: the projection's rounding, as above
        assert abs(fd - grad[i]) <= rtol * abs(grad[i]), f"{name}: analytic {grad[i]!r} vs finite difference {fd!r}"


def test_monte_carlo_with_psf_at_retakes_the_mixtures_with_the_same_draws(rng):
    scene, exp, theta = _grid_problem(rng)
    like = pho.Likelihood(scene, [exp], backend=pho.MonteCarloRenderer(n_draws=256))
    moved = like.with_psf_at(theta)
    scene.set_vector(theta)
    fresh = pho.Likelihood(scene, [exp], backend=pho.MonteCarloRenderer(n_draws=256))
    np.testing.assert_allclose(moved._models[0].psf_positions, fresh._models[0].psf_positions, rtol=0, atol=1e-9)
    assert moved.lnlike(theta) == pytest.approx(fresh.lnlike(theta), rel=1e-12)
    assert moved.lnlike(theta) != like.lnlike(theta)