"""Every available pixel backend against the NumPy reference (pho._reference), and thread invariance."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from pho import _backends, _reference as ref
from pho.errors import PhoBackendError, PhoValueError


_gaussian = ref.packed_gaussian  # (flux, x0, y0, fwhm_minor_pix, q, theta_rad) -> packed row


def scene_gaussians(rng, shape):
    """Gaussians of every integration order, some partly or wholly off the stamp, one at a corner."""
    ny, nx = shape
    rows = []
    for fwhm, q in [(0.4, 1.0), (0.5, 1.0), (0.62, 1.0), (0.6, 0.5), (0.75, 1.0), (1.0, 0.5), (0.9, 0.3), (1.4, 0.8), (3.0, 0.4), (6.0, 1.0), (9.0, 0.6),
                    (15.0, 0.3), (25.0, 0.9), (40.0, 0.1)]:
        rows.append(_gaussian(rng.uniform(1, 10), rng.uniform(-3, nx + 2), rng.uniform(-3, ny + 2), fwhm, q,
                              rng.uniform(0, math.pi)))
    rows.append(_gaussian(5.0, 0.0, 0.0, 2.0, 0.7, 0.3))              # at the corner pixel centre
    rows.append(_gaussian(5.0, nx - 0.5, ny - 0.5, 1.0, 1.0, 0.0))    # at the far corner's edge
    rows.append(_gaussian(5.0, -30.0, ny / 2, 2.0, 1.0, 0.0))         # wholly outside
    rows.append(_gaussian(5.0, nx + 4.0, ny / 2, 10.0, 0.5, 1.0))     # box partly inside
    rows.append(_gaussian(3.0, nx / 2, ny / 2, 60.0, 0.05, 0.785))    # very elongated and wide
    assert set(ref.integration_orders(np.array(rows)).tolist()) >= {0, ref.ORDER_FOURTH, 3, 4, 5, 6, 7, 8}
    rows.append(_gaussian(5.0, nx / 2, ny / 2, 1.5, 0.03, 0.785))     # exponent > PHO_EXPARG_MAX in box corners
    return np.array(rows)


def backend_or_skip(name, workers=None):
    try:
        return _backends.get_backend(name, workers=workers)
    except (PhoBackendError, ImportError) as exc:
        pytest.skip(f"backend {name!r} not available here: {exc}")


FAST = ["cpu", "gpu"]


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("shape", [(48, 64), (37, 29)])
def test_render_matches_reference(name, shape, rng):
    be = backend_or_skip(name)
    g = scene_gaussians(rng, shape)
    want = ref.render(g, shape)
    got = be._render_pixels(g, shape)  # the kernel alone (every Gaussian on the pixels)
    assert got.shape == shape
    assert np.count_nonzero(want) > 0.5 * want.size
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)
    # per Gaussian as well, so no single Gaussian's error hides under the others
    for k in range(len(g)):
        np.testing.assert_allclose(be._render_pixels(g[k : k + 1], shape), ref.render(g[k : k + 1], shape),
                                   rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("name", FAST)
def test_gradient_matches_reference(name, rng):
    be = backend_or_skip(name)
    shape = (48, 64)
    g = scene_gaussians(rng, shape)
    w = rng.normal(size=shape)
    want = ref.gradient(g, w)
    got = be._gradient_pixels(g, w)
    # scale: the same sums with |w| and |dI| (no cancellation), so 1e-10 relative is meaningful
    scale = np.einsum("gpij,ij->gp", np.abs(ref.render_derivatives(g, shape)), np.abs(w))
    assert np.all(np.abs(got - want) <= 1e-10 * scale)
    inside = scale[:, 0] > 0
    assert np.all(np.abs(got[inside] - want[inside]) <= 1e-10 * np.abs(want[inside]) + 1e-13 * scale[inside])
    assert np.all(got[~inside] == 0)


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("shape", [(48, 64), (37, 29), (130, 150)])
def test_levels_match_reference_backend(name, shape, rng):
    """The backend's model (wide Gaussians on coarse grids, pho._levels) equals the reference backend's,
    image and gradient, with Gaussians on several levels."""
    be = backend_or_skip(name)
    reference = _backends.get_backend("reference")
    g = scene_gaussians(rng, shape)
    from pho import _levels

    levels = _levels.gaussian_levels(g, len(_levels.grid_levels(shape)) - 1)
    assert levels.max() >= 1 and (levels == 0).sum() > 5
    want = reference.render(g, shape)
    np.testing.assert_allclose(be.render(g, shape), want, rtol=1e-10, atol=1e-12 * np.abs(want).max())
    w = rng.normal(size=shape)
    want = reference.gradient(g, w)
    scale = np.einsum("gpij,ij->gp", np.abs(ref.render_derivatives(g, shape)), np.abs(w))
    assert np.all(np.abs(be.gradient(g, w) - want) <= 1e-10 * scale)


@pytest.mark.parametrize("name", FAST)
def test_recurrence_rounding_is_negligible(name):
    """A wide Gaussian over long rows: the row recurrences stay within 1e-12 of exp-per-pixel."""
    be = backend_or_skip(name)
    g = np.array([_gaussian(1e4, 150.3, 20.7, 60.0, 0.9, 0.4)])
    shape = (40, 300)
    want = ref.render(g, shape)
    got = be._render_pixels(g, shape)
    inside = want > 0
    assert inside.sum() > 0.8 * want.size
    assert np.all(got[~inside] == 0)
    assert np.max(np.abs(got[inside] / want[inside] - 1)) < 1e-12


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("fwhm, order", [(13.0, 0), (4.0, ref.ORDER_FOURTH)])
def test_extreme_rows_of_a_wide_gaussian(name, fwhm, order, rng):
    """Second- and fourth-order Gaussians so elongated that box-corner exponents exceed PHO_EXPARG_MAX
    (the exp-per-point path)."""
    be = backend_or_skip(name)
    shape = (400, 400)
    g = np.array([_gaussian(5.0, 200.2, 199.7, fwhm, 0.01, 0.785)])
    assert ref.integration_orders(g)[0] == order
    want, got = ref.render(g, shape), be._render_pixels(g, shape)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)
    w = rng.normal(size=shape)
    scale = np.einsum("gpij,ij->gp", np.abs(ref.render_derivatives(g, shape)), np.abs(w))
    assert np.all(np.abs(be._gradient_pixels(g, w) - ref.gradient(g, w)) <= 1e-10 * scale)


@pytest.mark.parametrize("name", FAST)
def test_zero_size_and_empty(name, rng):
    be = backend_or_skip(name)
    g = scene_gaussians(rng, (10, 10))
    assert be.render(g, (0, 0)).shape == (0, 0)
    assert be.render(g, (0, 7)).shape == (0, 7)
    assert np.all(be.gradient(g, np.zeros((0, 5))) == 0)
    assert be.gradient(g, np.zeros((0, 5))).shape == (len(g), 6)
    assert np.all(be.render(np.zeros((0, 6)), (5, 6)) == 0)
    assert be.gradient(np.zeros((0, 6)), np.ones((5, 6))).shape == (0, 6)


def test_threads_bit_identical(rng):
    """The cpu backend's results do not depend on its thread count (the only backend with one)."""
    name = "cpu"
    shape = (64, 80)
    g = np.concatenate([scene_gaussians(rng, shape) for _ in range(4)])
    w = rng.normal(size=shape)
    b1 = backend_or_skip(name, workers=1)
    b2 = backend_or_skip(name, workers=2)
    b3 = backend_or_skip(name, workers=3)
    b2.min_work_per_thread = b3.min_work_per_thread = 0  # really use 2 and 3 threads on this small scene
    img1, img2, img3 = b1.render(g, shape), b2.render(g, shape), b3.render(g, shape)
    assert np.array_equal(img1, img2) and np.array_equal(img1, img3)
    gr1, gr2, gr3 = b1.gradient(g, w), b2.gradient(g, w), b3.gradient(g, w)
    assert np.array_equal(gr1, gr2) and np.array_equal(gr1, gr3)


def test_cpu_backend_uses_one_thread_for_small_work(rng):
    from pho._backends import MIN_WORK_PER_THREAD

    be = backend_or_skip("cpu", workers=2)
    small = scene_gaussians(rng, (16, 16))[:3]
    assert be._prepare(small, (16, 16))[3] == 1
    big = np.array([_gaussian(1.0, 200.0, 200.0, 80.0, 1.0, 0.0)] * 8)  # 8 Gaussians covering 400x400
    assert ref.box_pixel_count(ref.pixel_boxes(big, (400, 400))) >= 2 * MIN_WORK_PER_THREAD
    assert be._prepare(big, (400, 400))[3] == 2
    be.min_work_per_thread = 0
    assert be._prepare(small * 1.0, (16, 15))[3] == 2


def test_cpu_openmp_info():
    from pho import _render

    built, nmax = _render.openmp_info()
    assert isinstance(built, bool) and nmax >= 1


def test_resolve_workers(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _backends.resolve_workers(None) == 3
    assert _backends.resolve_workers(2) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _backends.resolve_workers(None) == len(os.sched_getaffinity(0))
    with pytest.raises(PhoValueError, match="positive integer"):
        _backends.resolve_workers(0)
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    with pytest.raises(PhoValueError, match="OMP_NUM_THREADS"):
        _backends.resolve_workers(None)


def test_get_backend_errors():
    with pytest.raises(PhoValueError, match="unknown backend 'fast'"):
        _backends.get_backend("fast")
    assert "reference" in _backends.available_backends()


def test_gpu_absent_is_a_clear_error():
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed; the absent-GPU message is not reachable here")
    except ImportError:
        pass
    with pytest.raises(PhoBackendError, match="CuPy"):
        _backends.get_backend("gpu")
    assert "gpu" not in _backends.available_backends()


@pytest.mark.parametrize("name", ["reference"] + FAST)
def test_weights_validation(name):
    be = backend_or_skip(name)
    g = np.array([_gaussian(1.0, 3.0, 3.0, 2.0, 1.0, 0.0)])
    with pytest.raises(PhoValueError, match="NaN"):
        be.gradient(g, np.full((5, 5), np.nan))
    with pytest.raises(PhoValueError, match="2-d"):
        be.gradient(g, np.ones(5))


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("kind", ["gaussian", "poisson"])
def test_likelihood_matches_reference(name, kind, cosmos_image_path, rng):
    """Full likelihoods (two blended Sersics + a star, two exposures, two bands) agree with the reference."""
    import pho
    from helpers import blended_problem

    be = backend_or_skip(name, workers=2)
    scene, exposures, theta = blended_problem(cosmos_image_path, rng, kind=kind)
    lr = pho.Likelihood(scene, exposures, backend="reference", kind=kind)
    lf = pho.Likelihood(scene, exposures, backend=be, kind=kind)
    vr, gr = lr.lnlike_and_grad(theta)
    vf, gf = lf.lnlike_and_grad(theta)
    assert vf == pytest.approx(vr, rel=1e-10)
    assert np.all(np.abs(gf - gr) <= 1e-10 * np.maximum(np.abs(gr), 1e-3 * np.max(np.abs(gr))))
    assert np.any(gr != 0)
    assert lf.lnlike(theta) == pytest.approx(vr, rel=1e-10)
    if name == "cpu":
        l1 = pho.Likelihood(scene, exposures, backend="cpu", kind=kind, workers=1)
        v1, g1 = l1.lnlike_and_grad(theta)
        assert v1 == vf and np.array_equal(g1, gf)


def test_compiled_boxes_and_orders_equal_the_reference(rng):
    cpu = backend_or_skip("cpu")
    for shape in [(48, 64), (37, 29), (1, 1), (0, 5)]:
        g = scene_gaussians(rng, (max(shape[0], 1), max(shape[1], 1)))
        # plus Gaussians whose box edges fall on or right next to pixel edges
        edge = np.array(g[:4])
        edge[:, 1] = np.floor(edge[:, 1]) + 0.5
        g = np.vstack([g, edge])
        boxes = np.empty((len(g), 4), dtype=np.intp)
        orders = np.empty(len(g), dtype=np.int32)
        bad = cpu._k.boxes_and_orders(g, shape[0], shape[1], ref.BOX_NSIGMA, ref._FMAX_EDGES, ref._ORDER_TABLE,
                                      boxes, orders)
        assert bad == -1
        np.testing.assert_array_equal(boxes, ref.pixel_boxes(g, shape))
        np.testing.assert_array_equal(orders, ref.integration_orders(g))


def test_cpu_backend_names_the_bad_gaussian(rng):
    cpu = backend_or_skip("cpu")
    g = scene_gaussians(rng, (20, 20))
    nan = g.copy()
    nan[3, 2] = np.nan
    with pytest.raises(PhoValueError, match="image Gaussian 3 has a non-finite value"):
        cpu.render(nan, (20, 20))
    flat = g.copy()
    flat[5, 4] = math.sqrt(flat[5, 3] * flat[5, 5]) * 1.01  # Fxy^2 > Fxx Fyy
    with pytest.raises(PhoValueError, match="image Gaussian 5 has an inverse covariance .* not positive definite"):
        cpu.render(flat, (20, 20))
    with pytest.raises(PhoValueError, match="shape \\(G, 6\\)"):
        cpu.render(g[:, :5], (20, 20))


def test_cpu_box_cache_sees_in_place_changes(rng):
    be = backend_or_skip("cpu")
    shape = (30, 40)
    g = scene_gaussians(rng, shape)
    be.render(g, shape)
    g[:, 1] += 3.3  # the same array object, moved
    g[:, 3:6] *= 0.5  # and wider (orders and boxes change)
    np.testing.assert_allclose(be._render_pixels(g, shape), ref.render(g, shape), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(be._render_pixels(g, (31, 40)), ref.render(g, (31, 40)), rtol=1e-10, atol=1e-300)
    want = _backends.get_backend("reference").render(g, (31, 40))
    np.testing.assert_allclose(be.render(g, (31, 40)), want, rtol=1e-10, atol=1e-300)


def test_openmp_waits_passively_by_default():
    """pho sets OMP_WAIT_POLICY=PASSIVE before the OpenMP runtime starts, unless the user chose one."""
    import subprocess
    import sys

    code = "import os, pho._backends; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"
