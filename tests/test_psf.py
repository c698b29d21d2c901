"""PSFMixture: validation, normalization, FITS round trip."""

import numpy as np
import pytest

from pho import PhoDataError, PhoDataWarning, PhoValueError, PSFMixture


def test_gaussian_psf_fwhm_matches_half_maximum():
    psf = PSFMixture.gaussian(fwhm_pix=3.0, q=1.0)
    peak = psf.evaluate(0.0, 0.0)
    assert psf.evaluate(1.5, 0.0) == pytest.approx(0.5 * peak, rel=1e-12)


def test_evaluate_integrates_to_amplitude_sum():
    psf = PSFMixture([0.7, 0.3], [0.0, 0.2], [0.0, -0.1], [1.0, 4.0], [0.2, -0.5], [2.0, 3.0])
    y, x = np.mgrid[-40:41, -40:41] * 0.25
    total = psf.evaluate(x, y).sum() * 0.25**2
    assert total == pytest.approx(1.0, rel=1e-6)


def test_sum_half_is_refused_with_a_fix():
    with pytest.raises(PhoDataError, match="sum to 0.5.*normalized"):
        PSFMixture([0.25, 0.25], [0, 0], [0, 0], [1, 2], [0, 0], [1, 2])


def test_sum_slightly_off_warns_and_normalized_fixes():
    with pytest.warns(PhoDataWarning, match="sum to 0.96"):
        psf = PSFMixture([0.96], [0], [0], [1], [0], [1])
    assert psf.normalized().amp.sum() == pytest.approx(1.0)


def test_not_positive_definite_is_refused():
    with pytest.raises(PhoValueError, match="not positive definite"):
        PSFMixture([1.0], [0], [0], [1.0], [2.0], [1.0])


def test_fits_round_trip_and_no_overwrite(tmp_path):
    psf = PSFMixture([0.6, 0.4], [0.1, -0.1], [0.0, 0.3], [1.0, 5.0], [0.1, -0.2], [1.5, 4.0], meta={"SOURCE": "test"})
    path = psf.write(tmp_path / "psf.fits")
    back = PSFMixture.read(path)
    for name in ("amp", "x", "y", "cxx", "cxy", "cyy"):
        np.testing.assert_array_equal(getattr(back, name), getattr(psf, name))
    assert back.meta["SOURCE"] == "test"
    with pytest.raises(FileExistsError, match="not overwriting"):
        psf.write(path)


@pytest.mark.parametrize("cov", [(1e-3, 0.0, 1e-3), (1e-12, 0.0, 1e-12), (0.0025, 0.0, 0.0025), (4.0, 0.0, 0.02),
                                 (1.0, 0.995, 1.0)])
def test_component_narrower_than_the_rule_is_refused(cov):
    # before the fix: variance 1e-3 rendered 113, 333 or 0.47 counts of a flux of 100, 1e-12 rendered 0
    cxx, cxy, cyy = cov
    with pytest.raises(PhoValueError, match=r"components \[1\] have FWHM .* below the 0\.35 pixel .* undersampled"):
        PSFMixture([0.5, 0.5], [0, 0], [0, 0], [1.0, cxx], [0.0, cxy], [1.0, cyy])


def test_component_at_the_limit_is_accepted():
    from pho._reference import FWHM_PER_SIGMA, MIN_FWHM_PIX

    var = (MIN_FWHM_PIX / FWHM_PER_SIGMA) ** 2 * (1 + 1e-9)
    psf = PSFMixture([1.0], [0.0], [0.0], [var], [0.0], [4 * var])
    assert psf.n_gauss == 1
