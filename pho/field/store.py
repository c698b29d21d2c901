"""The field fit's results on disk: one file per finished patch, written as it arrives.

Layout under ``OUTDIR/work/``:

- ``run.json``: the fingerprint of the problem (source list values, exposure files with their
  sizes and modification times, PSFs, settings) and the number of patches. ``--resume`` refuses
  a folder whose fingerprint differs and says what differs.
- ``pass01/patch00042.npz`` ...: one :class:`~pho.field.patchfit.PatchResult` per patch and
  pass (``sample/`` for the posterior pass), each written to a hidden temporary file and renamed,
  so a crash leaves whole files or none. A patch that Dask runs twice (a worker died after
  finishing it) writes the same file twice: results are keyed by (pass, patch), never added up.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..errors import PhoValueError
from ..psfgrid import psf_parameter_arrays
from .patchfit import PatchResult

__all__ = ["ResultStore", "fingerprint"]

_ARRAYS = ("rows", "param_rows", "theta", "sigma", "median", "p16", "p84", "sky_theta", "sky_sigma", "sky_median",
           "sky_p16", "sky_p84", "sky_start", "eta_rows", "eta_theta", "eta_sigma", "eta_median", "eta_p16", "eta_p84")
_SCALARS = ("patch_index", "pass_index", "ok", "message", "lnlike", "chi2", "n_pixels", "n_calls", "time_s",
            "sample_time_s", "param_kinds", "warnings", "sky_names")


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def fingerprint(sources, exposures, settings: dict) -> dict:
    """What identifies a field fit: a dict of short digests, compared part by part on resume."""
    parts = {
        "sources": _digest(sources.ids, sources.is_point, sources.ra, sources.dec, np.nan_to_num(sources.q),
                           np.nan_to_num(sources.pa), np.nan_to_num(sources.n), np.nan_to_num(sources.rh), sources.flux)
        + "," + ",".join(sources.bands),
        "settings": json.dumps(settings, sort_keys=True, default=str),
    }
    for k, e in enumerate(exposures):
        stats = [os.stat(p) for p in (e.sci_path, e.noise_path)]
        psf = e.psf
        parts[f"exposure{k}"] = (
            f"{Path(e.sci_path).resolve()}:{stats[0].st_size}:{stats[0].st_mtime_ns} "
            f"{Path(e.noise_path).resolve()}:{stats[1].st_size}:{stats[1].st_mtime_ns} {e.band} {e.noise_kind} "
            f"cpf={e.counts_per_flux!r} psf={_digest(*psf_parameter_arrays(psf))}"
        )
    return parts


def _describe(key: str) -> str:
    if key == "sources":
        return "the source list"
    if key == "settings":
        return "the fit settings"
    if key.startswith("exposure"):
        return f"exposure {key[len('exposure'):]} (file, size, modification time, band or PSF)"
    return key


class ResultStore:
    """Patch results under ``workdir`` (module docstring)."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(workdir)

    def start(self, parts: dict, n_patches: int, resume: bool) -> None:
        """Begin a run: check (``resume``) or write the fingerprint.

        Raises
        ------
        PhoValueError
            ``resume`` with no earlier run here, or with one of a different problem (naming
            what differs); a fresh start over an earlier run's results.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        run_file = self.workdir / "run.json"
        for stale in self.workdir.glob("**/.*.tmp*"):  # left by a killed run
            stale.unlink(missing_ok=True)
        if run_file.exists():
            stored = json.loads(run_file.read_text())
            if not resume:
                raise PhoValueError(
                    f"{self.workdir} holds the results of an earlier field fit; pass --resume to continue it or "
                    "--overwrite to start again"
                )
            differ = sorted(set(stored["parts"]) ^ set(parts) | {k for k in parts if stored["parts"].get(k) != parts[k]})
            if differ:
                raise PhoValueError(
                    "cannot resume: the earlier run in " f"{self.workdir} fitted a different problem ("
                    + "; ".join(f"{_describe(k)} differs" for k in differ)
                    + "); use another output folder or --overwrite to start again"
                )
            return
        if resume:
            raise PhoValueError(f"nothing to resume: {run_file} does not exist; run without --resume")
        self._write_text(run_file, json.dumps({"parts": parts, "n_patches": n_patches}, indent=1))

    @staticmethod
    def _write_text(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)

    def _path(self, stage: str, patch_index: int) -> Path:
        return self.workdir / stage / f"patch{patch_index:05d}.npz"

    def save(self, stage: str, result: PatchResult) -> Path:
        """Write one result atomically; returns its path."""
        path = self._path(stage, result.patch_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.asarray(getattr(result, k)) for k in _ARRAYS if getattr(result, k) is not None}
        meta = {k: getattr(result, k) for k in _SCALARS}
        meta["ok"] = bool(meta["ok"])
        arrays["meta_json"] = np.array(json.dumps(meta, default=float))
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return path

    def load(self, stage: str, patch_index: int) -> PatchResult | None:
        """The stored result, or None if that patch has not finished in that stage."""
        path = self._path(stage, patch_index)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta_json"]))
            arrays = {k: z[k] for k in _ARRAYS if k in z.files}
        meta = {k: v for k, v in meta.items() if k in _SCALARS}
        return PatchResult(**meta, **arrays)
