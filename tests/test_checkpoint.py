"""pho.checkpoint: a checkpoint resumes only the problem it was written for (issue 15, item 1)."""

from __future__ import annotations

import numpy as np
import pytest

import pho
from pho.checkpoint import fingerprint_differences, problem_fingerprint
from pho.errors import PhoValueError
from pho.priors import default_priors
from pho.sample import sample

from helpers import tan_wcs, two_component_psf

SHAPE = (24, 24)
RA, DEC = 150.0, 2.0


def _likelihood(pixels=None, ivar=1.0, psf=None, flux=50.0, ra=RA):
    wcs = tan_wcs(RA, DEC, ((SHAPE[1] + 1) / 2, (SHAPE[0] + 1) / 2))
    data = np.zeros(SHAPE) if pixels is None else pixels
    exp = pho.Exposure(data, np.full(SHAPE, ivar), wcs, psf or two_component_psf(), "A")
    scene = pho.Scene([pho.PointSource(ra, DEC, {"A": flux})])
    return pho.Likelihood(scene, [exp])


def _settings(**kw):
    s = {"sampler": "static", "nlive": 20, "sample": "rwalk", "bound": "multi", "walks": None, "ndim": 3,
         "periodic": []}
    s.update(kw)
    return s


def _fp(like, **kw):
    return problem_fingerprint(like, default_priors(like), _settings(**kw))


def test_identical_problems_match():
    assert fingerprint_differences(_fp(_likelihood()), _fp(_likelihood())) == []


@pytest.mark.parametrize(
    "changed, phrase",
    [
        (dict(pixels=np.full(SHAPE, 0.1)), "the data differ"),
        (dict(ivar=4.0), "the noise maps differ"),
        (dict(psf=pho.PSFMixture.gaussian(2.5)), "the PSFs differ"),
        (dict(flux=60.0), "starting values differ"),
    ],
)
def test_each_difference_is_named(changed, phrase):
    diffs = fingerprint_differences(_fp(_likelihood()), _fp(_likelihood(**changed)))
    assert any(phrase in d for d in diffs), diffs


def test_sampler_settings_and_missing_fingerprint_are_named():
    like = _likelihood()
    diffs = fingerprint_differences(_fp(like), _fp(like, nlive=40))
    assert diffs == ["the sampler settings differ (nlive 20 -> 40)"]
    assert "no problem fingerprint" in fingerprint_differences(None, _fp(like))[0]


def test_resume_of_another_problem_is_refused_and_the_same_one_resumes(tmp_path, rng):
    path = tmp_path / "sampler.pkl"
    truth = _likelihood().model_images(np.array([50.0, RA, DEC]))[0]
    like = _likelihood(pixels=truth + rng.normal(0, 1, SHAPE))
    sample(like, nlive=20, maxcall=300, rng=rng, checkpoint_file=path, checkpoint_every_s=0, progress=False)
    # other data (another noise draw): before the fix this resumed and could hang forever
    other = _likelihood(pixels=truth + rng.normal(0, 1, SHAPE))
    with pytest.raises(PhoValueError, match=r"belongs to another problem: the data differ[;.].*start afresh"):
        sample(other, nlive=20, maxcall=400, checkpoint_file=path, resume=True, progress=False)
    with pytest.raises(PhoValueError, match=r"sampler settings differ \(nlive 20 -> 25\)"):
        sample(like, nlive=25, maxcall=400, checkpoint_file=path, resume=True, progress=False)
    res = sample(like, nlive=20, maxcall=400, checkpoint_file=path, resume=True, progress=False)
    assert res.settings["resumed"] is True and res.n_calls > 300
