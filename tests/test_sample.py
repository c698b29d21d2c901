"""pho.sample: evidence and posterior of a known Gaussian, checkpoint/resume, coverage on the real model."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from pho.errors import PhoValueError
from pho.priors import Priors, Uniform
from pho.sample import sample, weighted_quantiles

NAMES = ["s0.flux_A", "s0.ra", "s0.q"]
MEAN = np.array([10.0, 150.0, 0.5])
SIGMA = np.array([0.3, 2e-5, 0.03])
CORR = np.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.0]])
COV = CORR * np.outer(SIGMA, SIGMA)
HALF = 6 * SIGMA  # prior box: +-6 sigma, so the box holds all but ~1e-8 of the likelihood mass

#: Calls after which the interrupting likelihood raises (a module global: not pickled with it).
_INTERRUPT = {"calls": 0, "limit": None}


class _Interrupted(Exception):
    pass


class CorrelatedGaussian:
    """Stand-in likelihood: lnL = -chi^2/2 of a correlated Gaussian; evidence known exactly."""

    parameter_names = NAMES

    def __init__(self):
        self.icov = np.linalg.inv(COV)

    def lnlike_and_grad(self, theta):
        d = np.asarray(theta) - MEAN
        return -0.5 * d @ self.icov @ d, -self.icov @ d

    def lnlike(self, theta):
        _INTERRUPT["calls"] += 1
        if _INTERRUPT["limit"] is not None and _INTERRUPT["calls"] >= _INTERRUPT["limit"]:
            raise _Interrupted("simulated kill")
        return self.lnlike_and_grad(theta)[0]

    @staticmethod
    def exact_logz():
        # Z = (1/V) * integral of exp(-chi^2/2) = (2 pi)^(P/2) sqrt(det C) / V
        return 0.5 * len(MEAN) * math.log(2 * math.pi) + 0.5 * math.log(np.linalg.det(COV)) - np.sum(np.log(2 * HALF))


def _priors():
    return Priors(NAMES, {n: Uniform(m - h, m + h) for n, m, h in zip(NAMES, MEAN, HALF)})


def test_weighted_quantiles_of_equal_weights_match_numpy(rng):
    x = rng.normal(size=2001)
    w = np.ones_like(x)
    np.testing.assert_allclose(weighted_quantiles(x, w, [0.16, 0.5, 0.84]), np.quantile(x, [0.16, 0.5, 0.84]), atol=5e-3)
    # a point with (almost) all the weight is every quantile
    y = np.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(weighted_quantiles(y, np.array([1e-9, 1.0, 1e-9]), [0.16, 0.84]), 1.0, atol=1e-6)


@pytest.mark.slow
def test_static_sampling_recovers_evidence_and_posterior(rng):
    _INTERRUPT.update(calls=0, limit=None)
    res = sample(CorrelatedGaussian(), _priors(), nlive=150, rng=rng, progress=False)
    exact = CorrelatedGaussian.exact_logz()
    assert abs(res.logz - exact) < 3 * res.logz_err, (res.logz, exact, res.logz_err)
    assert res.weights.sum() == pytest.approx(1.0)
    for i, name in enumerate(NAMES):
        s = res.summary[name]
        # Monte Carlo error of a median from n_eff samples is ~1.25 sigma / sqrt(n_eff) (< 0.1 sigma here)
        assert abs(s["median"] - MEAN[i]) < 0.25 * SIGMA[i], name
        assert 0.5 * (s["p84"] - s["p16"]) == pytest.approx(SIGMA[i], rel=0.2), name
    assert res.n_effective > 200


@pytest.mark.slow
def test_dynamic_sampling_runs_and_agrees(rng):
    _INTERRUPT.update(calls=0, limit=None)
    res = sample(CorrelatedGaussian(), _priors(), nlive=50, dynamic=True, maxcall=8000, rng=rng, progress=False)
    assert res.settings["sampler"] == "dynamic"
    assert abs(res.logz - CorrelatedGaussian.exact_logz()) < 3 * res.logz_err + 0.1
    assert abs(res.summary["s0.q"]["median"] - MEAN[2]) < 0.25 * SIGMA[2]


def test_resume_after_interruption(tmp_path, rng):
    path = tmp_path / "run.pkl"
    _INTERRUPT.update(calls=0, limit=800)
    with pytest.raises(_Interrupted):
        sample(CorrelatedGaussian(), _priors(), nlive=60, rng=rng, checkpoint_file=path, checkpoint_every_s=0, progress=False)
    assert path.exists(), "no checkpoint was written before the interruption"
    calls_before = _INTERRUPT["calls"]
    _INTERRUPT.update(calls=0, limit=None)
    res = sample(CorrelatedGaussian(), _priors(), nlive=60, checkpoint_file=path, resume=True, progress=False)
    # It carried on rather than starting over: fewer new calls than a fresh run needs in all.
    _INTERRUPT.update(calls=0, limit=None)
    fresh = sample(CorrelatedGaussian(), _priors(), nlive=60, rng=np.random.default_rng(5), progress=False)
    assert _INTERRUPT["calls"] > 0
    assert res.n_calls >= calls_before - 60  # the restored run counts the calls made before the kill
    assert res.settings["resumed"] is True
    assert abs(res.logz - CorrelatedGaussian.exact_logz()) < 3 * res.logz_err + 0.1
    assert abs(res.logz - fresh.logz) < 3 * math.hypot(res.logz_err, fresh.logz_err) + 0.1


@pytest.mark.slow
def test_worker_processes_recover_evidence_and_leave_no_state(rng):
    from pho.sample import _CACHE

    _INTERRUPT.update(calls=0, limit=None)
    res = sample(CorrelatedGaussian(), _priors(), nlive=100, processes=2, rng=rng, progress=False)
    assert res.settings["processes"] == 2
    # the workers made the calls: the main process's counter did not move
    assert _INTERRUPT["calls"] < res.n_calls / 10
    assert abs(res.logz - CorrelatedGaussian.exact_logz()) < 3 * res.logz_err + 0.05
    for i, name in enumerate(NAMES):
        assert abs(res.summary[name]["median"] - MEAN[i]) < 0.3 * SIGMA[i], name
    assert _CACHE == {}, "sample() left its likelihood in the per-process cache"


class LimitedGaussian(CorrelatedGaussian):
    """The Gaussian, which raises after ``limit`` calls in any one process (the limit travels with it)."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.calls = limit, 0

    def lnlike(self, theta):
        self.calls += 1
        if self.calls >= self.limit:
            raise _Interrupted("simulated kill")
        return self.lnlike_and_grad(theta)[0]


def test_checkpoint_holds_no_data_and_resumes_with_other_process_count(tmp_path, rng):
    path = tmp_path / "run.pkl"
    with pytest.raises(_Interrupted):
        sample(LimitedGaussian(600), _priors(), nlive=60, processes=2, rng=rng, checkpoint_file=path,
               checkpoint_every_s=0, progress=False)
    blob = path.read_bytes()
    assert b"_cached_loglike" in blob
    assert b"Gaussian" not in blob, "the checkpoint pickled the likelihood"
    _INTERRUPT.update(calls=0, limit=None)
    res = sample(CorrelatedGaussian(), _priors(), nlive=60, processes=1, checkpoint_file=path, resume=True,
                 progress=False)
    assert _INTERRUPT["calls"] > 0
    # carried on from the checkpoint: the count includes the ~2 x 600 calls the workers made before the kill
    assert res.n_calls > _INTERRUPT["calls"] + 600
    assert abs(res.logz - CorrelatedGaussian.exact_logz()) < 3 * res.logz_err + 0.1


class SlowGaussian(CorrelatedGaussian):
    """The Gaussian, each call taking at least ``ms`` milliseconds."""

    def __init__(self, ms):
        super().__init__()
        self.ms = ms

    def lnlike(self, theta):
        time.sleep(1e-3 * self.ms)
        return super().lnlike(theta)


def test_auto_processes_start_workers_only_for_slow_calls(monkeypatch):
    import pho._backends
    from pho.sample import PROCESSES_MIN_CALL_MS, auto_processes

    monkeypatch.setattr(pho._backends, "available_cores", lambda: 4)
    n, ms = auto_processes(CorrelatedGaussian(), _priors())
    assert (n, ms < PROCESSES_MIN_CALL_MS) == (1, True)
    n, ms = auto_processes(SlowGaussian(2 * PROCESSES_MIN_CALL_MS), _priors())
    assert (n, ms >= 2 * PROCESSES_MIN_CALL_MS) == (4, True)
    monkeypatch.setattr(pho._backends, "available_cores", lambda: 1)
    assert auto_processes(SlowGaussian(2 * PROCESSES_MIN_CALL_MS), _priors())[0] == 1


def test_a_slow_likelihood_is_timed_once():
    from pho.sample import _call_ms

    calls = []

    def slow(theta):
        calls.append(theta)
        time.sleep(0.01)

    assert _call_ms(slow, None) >= 10.0
    assert len(calls) == 2  # the untimed first call and one timed call
    calls.clear()
    _call_ms(calls.append, None)
    assert len(calls) == 11  # a fast one: the first call and the 10 timed calls


def test_processes_none_samples_a_cheap_likelihood_in_this_process(monkeypatch, rng):
    import pho._backends

    monkeypatch.setattr(pho._backends, "available_cores", lambda: 2)
    _INTERRUPT.update(calls=0, limit=None)
    res = sample(CorrelatedGaussian(), _priors(), nlive=30, processes=None, rng=rng, progress=False)
    assert res.settings["processes"] == 1
    assert _INTERRUPT["calls"] >= res.n_calls  # every call made here, none by workers


def test_bad_process_counts_are_refused():
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(PhoValueError, match="processes="):
            sample(CorrelatedGaussian(), _priors(), nlive=20, processes=bad)


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(PhoValueError, match="does not exist"):
        sample(CorrelatedGaussian(), _priors(), nlive=20, checkpoint_file=tmp_path / "none.pkl", resume=True)
    with pytest.raises(PhoValueError, match="nlive=2 is too small"):
        sample(CorrelatedGaussian(), _priors(), nlive=2)


@pytest.mark.slow
def test_coverage_of_68_percent_intervals_on_one_galaxy():
    """Frequentist coverage of the posterior 68% intervals, 20 noise realizations.

    One Sersic galaxy in one 20 x 20 exposure (the model draws the truth); free: flux and rh
    (position, q, pa, n held at the truth via FixedParameters, to keep it CI-sized). For each
    parameter the number k of the 20 realizations whose [p16, p84] interval holds the truth is
    Binomial(20, 0.68) if the intervals are right; we accept 8 <= k <= 19, which a correct
    sampler fails with probability 0.3% per parameter (scipy.stats.binom), while intervals that
    cover 40% or 95% of the time are caught with probability 42% and 36% respectively: a
    fair band for 20 trials, which cannot tell 68% from 60% or 80%.
    """
    import pho
    from pho.demo import DEC0_DEG, RA0_DEG, demo_psf, demo_wcs
    from pho.fit import FixedParameters
    from pho.priors import default_priors

    from pho import _backends

    backend = "cpu" if "cpu" in _backends.available_backends() else "reference"
    shape, sigma = (20, 20), 0.04
    truth = pho.Scene([pho.Sersic(RA0_DEG, DEC0_DEG, {"F277W": 3.0}, q=0.6, pa=0.5, n=1.5, rh=0.2)])
    blank = pho.Exposure(np.zeros(shape), np.full(shape, 1 / sigma**2), demo_wcs(shape, 0.3, -0.2, 0.0), demo_psf(1.6), "F277W")
    model = pho.Likelihood(truth, [blank], backend=backend).model_images(truth.get_vector())[0]
    rng = np.random.default_rng(3)
    fixed = {"s0.q": 0.6, "s0.pa": 0.5, "s0.n": 1.5, "s0.ra": RA0_DEG, "s0.dec": DEC0_DEG}
    hits = {"s0.flux_F277W": 0, "s0.rh": 0}
    for _ in range(20):
        exposure = pho.Exposure(model + rng.normal(size=shape) * sigma, blank.ivar, blank.wcs, blank.psf, "F277W")
        like = FixedParameters(pho.Likelihood(truth, [exposure], backend=backend), fixed)
        res = sample(like, default_priors(like), nlive=30, sample="unif", rng=rng, progress=False)
        for i, name in enumerate(like.parameter_names):
            s = res.summary[name]
            hits[name] += s["p16"] <= like.initial[i] <= s["p84"]
    for name, k in hits.items():
        assert 8 <= k <= 19, (name, k, hits)


def test_periodic_summary_stays_in_prior_window():
    """A position angle near the window's edge is summarised across the wrap, inside the window."""
    from pho.sample import _summarize

    rng = np.random.default_rng(0)
    lo, hi = 1.0, 1.0 + math.pi
    x = 1.0 + math.pi - 0.05 + rng.normal(size=4000) * 0.1  # centred 0.05 below the upper edge
    x = lo + (x - lo) % math.pi  # as the sampler reports them: wrapped into the window
    pri = Priors(["s0.pa"], {"s0.pa": Uniform(lo, hi, periodic=True)})
    s = _summarize(x[:, None], np.full(4000, 1 / 4000), ["s0.pa"], pri)["s0.pa"]
    assert s["median"] == pytest.approx(hi - 0.05, abs=0.01)
    assert 0.5 * (s["p84"] - s["p16"]) == pytest.approx(0.1, rel=0.1)
