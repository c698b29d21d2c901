"""Shared fixtures: paths to the real data in ../shared/data, and one seeded random generator."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real data live beside the checkout (../shared/data); PHO_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("PHO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data file {path} is not present (set PHO_SHARED_DATA to its folder)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    """One seeded generator per test."""
    return np.random.default_rng(20261125)


@pytest.fixture
def jwst_psf_path() -> Path:
    """JWST NIRCam F200W PSF, 4x oversampled, 288x288."""
    return _shared_file("jwst_nircam_f200w_psf_os4.fits")


@pytest.fixture
def hst_psfs_path() -> Path:
    """100 HST ACS F814W PSFs at native sampling, one per HDU."""
    return _shared_file("hst_acs_f814w_psfs.fits")


@pytest.fixture
def cosmos_image_path() -> Path:
    """Real HST ACS F814W cutout of COSMOS galaxy 147246 with a rotated TAN WCS."""
    return _shared_file("cosmos_147246_f814w.fits")


@pytest.fixture
def cosmos_psf_path() -> Path:
    """PSF image for the COSMOS cutout, 101x101 at 0.03"/pix."""
    return _shared_file("cosmos_147246_f814w_psf.fits")


@pytest.fixture
def goodss_scene_path() -> Path:
    """Real GOODS-S source list (403 sources, 7 HST bands)."""
    return _shared_file("goodss_3dhst_scene.fits")
