"""Checkpoints of the nested sampler: problem fingerprints, and a last checkpoint on Ctrl-C.

Fingerprints of a sampling problem are stored in checkpoints so that a resume can be checked.

A sampler checkpoint holds the sampler's state (live points, their ln L threshold), not the
problem. Resuming it with other data, another PSF or another source list would carry on with a
threshold the new likelihood may never reach (the run then sits at one iteration forever), or
silently mix two posteriors. :func:`problem_fingerprint` summarizes everything the sampler's state
depends on; :func:`fingerprint_differences` names what differs between two fingerprints.

What is compared:

- ``data``: the pixels, mask, background, calibration and shape of every exposure (hash);
- ``noise``: the inverse-variance maps (hash);
- ``PSF``: the PSF mixtures (hash);
- ``astrometry``: the WCS-derived pixel mapping of every exposure (hash);
- ``sources``: the parameter names and source kinds, the noise model and any wrapper of the
  likelihood (fixed parameters, transforms) (hash), and the scene's starting vector (compared to
  1e-9 relative);
- ``priors``: every prior's kind and bounds (bounds compared to 1e-6 of the prior's width, so that
  an optimizer's last-digit differences between backends do not block a resume);
- ``sampler settings``: static or dynamic, nlive, sampling and bounding method, walks, the
  periodic parameters. Stopping criteria (dlogz, maxiter, maxcall) may change on a resume.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from .psfgrid import psf_parameter_arrays

__all__ = ["FINGERPRINT_VERSION", "problem_fingerprint", "fingerprint_differences", "run_saving_on_interrupt"]

log = logging.getLogger(__name__)

#: Bumped when the fingerprint's contents change; a checkpoint with another version is refused.
FINGERPRINT_VERSION = 1


def _hasher():
    return hashlib.sha256()


def _update(h, *items) -> None:
    """Feed arrays, numbers and strings into hash ``h`` (arrays with their shape and dtype)."""
    for item in items:
        if isinstance(item, np.ndarray) or (isinstance(item, (list, tuple)) and item and isinstance(item[0], float)):
            a = np.ascontiguousarray(item)
            h.update(f"array{a.shape}{a.dtype.str}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(item).encode())
            h.update(b"\0")


def _unwrap(likelihood):
    """The innermost likelihood and the descriptions of the wrappers around it."""
    wrappers = []
    while not hasattr(likelihood, "exposures") and hasattr(likelihood, "likelihood"):
        state = {k: v for k, v in vars(likelihood).items() if k != "likelihood" and not k.startswith("_")}
        wrappers.append((type(likelihood).__name__, sorted((k, repr(v)) for k, v in state.items())))
        likelihood = likelihood.likelihood
    return likelihood, wrappers


def problem_fingerprint(likelihood, priors, settings: dict) -> dict:
    """Summarize a sampling problem for a checkpoint (see the module docstring).

    Parameters
    ----------
    likelihood : pho.Likelihood or a wrapper of one (``.likelihood``)
        The likelihood sampled. Other objects are fingerprinted by their parameter names only.
    priors : pho.priors.Priors
    settings : dict
        The sampler settings that fix the sampler's state (nlive, method, ...); plain values.

    Returns
    -------
    dict
        Plain Python values and small arrays, picklable. Hashing the pixels costs one pass over
        them (about 0.3 s per 100 MB).
    """
    inner, wrappers = _unwrap(likelihood)
    parts = {name: _hasher() for name in ("data", "noise", "PSF", "astrometry", "sources")}
    for e in getattr(inner, "exposures", ()):
        _update(parts["data"], e.band, e.shape, e.pixels, e.mask, np.asarray(e.background, float), e.counts_per_flux)
        _update(parts["noise"], e.ivar)
        psf = e.psf
        # a grid adds its positions and the exposure's offset in its frame; one mixture hashes as it always has
        grid = getattr(e, "psf_varies", False)
        _update(parts["PSF"], *psf_parameter_arrays(psf), *((tuple(e.psf_offset_pix),) if grid else ()))
        ast = e._astrometry
        _update(parts["astrometry"], np.asarray(e.D), tuple(e.reference_radec), ast.degree, np.asarray(ast._coef),
                np.asarray(ast._basis))
    scene = getattr(inner, "scene", None)
    sources = [] if scene is None else [(type(s).__name__, getattr(s, "kind", "")) for s in scene.sources]
    _update(parts["sources"], list(likelihood.parameter_names), sources, getattr(inner, "kind", None), wrappers)
    start = np.asarray(scene.get_vector(), float) if scene is not None else np.zeros(0)
    prior_kinds = [(type(d).__name__, bool(getattr(d, "periodic", False))) for d in priors.distributions]
    return {
        "version": FINGERPRINT_VERSION,
        "hashes": {k: h.hexdigest() for k, h in parts.items()},
        "start": start,
        "prior kinds": prior_kinds,
        "prior lower": np.asarray(priors.lower, float),
        "prior upper": np.asarray(priors.upper, float),
        "settings": dict(settings),
    }


_PHRASES = {
    "data": "the data differ",
    "noise": "the noise maps differ",
    "PSF": "the PSFs differ",
    "astrometry": "the astrometry (WCS) differs",
    "sources": "the sources differ",
}


def fingerprint_differences(stored: dict | None, current: dict) -> list[str]:
    """What differs between a checkpoint's fingerprint and the current problem's, in words.

    Parameters
    ----------
    stored : dict or None
        The fingerprint found in the checkpoint (None: the checkpoint has none).
    current : dict
        :func:`problem_fingerprint` of the problem about to be resumed.

    Returns
    -------
    list of str
        Empty when they match; else phrases such as ``"the data differ"``.
    """
    if not isinstance(stored, dict) or stored.get("version") != current["version"]:
        return ["the checkpoint has no problem fingerprint this version of pho can check (it was written by another "
                "version of pho or by dynesty directly)"]
    out = []
    for name, phrase in _PHRASES.items():
        if stored["hashes"].get(name) != current["hashes"][name]:
            out.append(phrase)
    a, b = stored["start"], current["start"]
    if "the sources differ" not in out and (a.shape != b.shape or not np.allclose(a, b, rtol=1e-9, atol=0.0)):
        out.append("the sources' starting values differ")
    if stored["prior kinds"] != current["prior kinds"] or stored["prior lower"].shape != current["prior lower"].shape:
        out.append("the priors differ")
    else:
        width = np.maximum(np.abs(current["prior upper"] - current["prior lower"]), 1e-300)
        lo = np.abs(stored["prior lower"] - current["prior lower"]) / width
        hi = np.abs(stored["prior upper"] - current["prior upper"]) / width
        if np.any(lo > 1e-6) or np.any(hi > 1e-6):
            out.append("the priors differ")
    changed = [f"{k} {stored['settings'].get(k)!r} -> {v!r}" for k, v in current["settings"].items()
               if stored["settings"].get(k) != v]
    if changed:
        out.append("the sampler settings differ (" + ", ".join(changed) + ")")
    return out


def run_saving_on_interrupt(sampler, save_to, save: bool, **run_kwargs) -> None:
    """``sampler.run_nested(**run_kwargs)``; on Ctrl-C, save a last checkpoint to ``save_to`` and re-raise.

    For a static sampler (``save``) the first Ctrl-C only asks to stop: the sampler finishes its
    iteration, so the checkpoint saved is a consistent state, and dynesty prints no traceback of an
    interrupted likelihood call; a second Ctrl-C stops at once. The re-raised KeyboardInterrupt
    carries ``pho_checkpoint`` (the checkpoint file, or None if none exists).
    """
    import signal
    import threading

    pbar, stop, previous = None, [], None
    if save:
        from dynesty.utils import get_print_func

        progress = run_kwargs.pop("print_progress")
        given = run_kwargs.pop("print_func", None)  # pho's own progress line (pho._progress), if any
        pbar, show = (None, given) if given is not None else get_print_func(None, progress, initial=sampler.it - 1)

        def print_func(*args, **kwargs):  # dynesty calls this after every finished iteration
            if stop and "add_live_it" not in kwargs:
                raise KeyboardInterrupt
            if progress:
                show(*args, **kwargs)

        def on_sigint(signum, frame):
            if stop:
                raise KeyboardInterrupt
            stop.append(True)
            log.warning("Ctrl-C: stopping after this iteration and saving a checkpoint (Ctrl-C again: stop at once)")

        run_kwargs.update(print_progress=True, print_func=print_func)
        # (a process started with Ctrl-C ignored, e.g. a shell's background job, keeps ignoring it)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        sampler.run_nested(**run_kwargs)
    except KeyboardInterrupt as exc:
        exc.pho_checkpoint = None
        if save_to is not None:
            if save:
                sampler.save(save_to)
            if Path(save_to).exists():
                exc.pho_checkpoint = save_to
                log.warning("sampling interrupted; checkpoint %s holds iteration %s", save_to,
                            getattr(sampler, "it", "?"))
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if pbar is not None:
            pbar.close()
