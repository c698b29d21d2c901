"""One run per output folder: a lock file ``OUTDIR/.pho.lock`` held for the duration of a run.

Two runs writing into one folder would overwrite each other's checkpoint and catalog without a
word. A run therefore takes the folder's lock before it writes anything; a second run into the
same folder refuses with :class:`~pho.errors.PhoLockError`, naming the owner.

The lock file holds the owner's process id, host name and start time (one ``key=value`` per
line). It is created with ``O_CREAT | O_EXCL``, so of two runs racing for it exactly one wins. A
lock left by a run that was killed (its pid no longer alive on this host) is stale: the next run
takes it over and logs a note. A lock owned by another host cannot be checked from here and is
treated as live.

Examples
--------
>>> from pho.runlock import output_lock
>>> with output_lock("pho_fit_output"):          # doctest: +SKIP
...     run_the_fit()
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path

from .errors import PhoLockError

__all__ = ["output_lock", "LOCK_NAME", "read_lock", "clean_temporary_files"]

log = logging.getLogger(__name__)

#: Name of the lock file inside the output folder.
LOCK_NAME = ".pho.lock"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def read_lock(path) -> dict:
    """The fields of a lock file (``pid``, ``host``, ``started``), or ``{}`` if unreadable.

    Parameters
    ----------
    path : str or path-like
        The lock file, ``OUTDIR/.pho.lock``.

    Returns
    -------
    dict
        ``pid`` as int (absent if missing or malformed), ``host`` and ``started`` as str.
    """
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    info: dict = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key.strip()] = value.strip()
    try:
        info["pid"] = int(info["pid"])
    except (KeyError, ValueError):
        info.pop("pid", None)
    return info


def _write_new(path: Path) -> bool:
    """Create the lock file exclusively with this process's identity; False if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with os.fdopen(fd, "w") as f:
        f.write(f"pid={os.getpid()}\nhost={socket.gethostname()}\nstarted={started}\n")
    return True


def _is_stale(info: dict) -> bool:
    """A lock is stale when its owner is a dead process on this host (or the file is garbage)."""
    if "pid" not in info:
        return True  # empty or half-written by a run killed while creating it
    if info.get("host", socket.gethostname()) != socket.gethostname():
        return False  # cannot check another machine's processes: assume alive
    return not _pid_alive(info["pid"])


def clean_temporary_files(outdir) -> list[Path]:
    """Remove the hidden temporary files (``.*.tmp*``) an interrupted run left in ``outdir``.

    pho writes every output to a hidden temporary name in the same folder and renames it into
    place (``os.replace``), and dynesty writes its checkpoint to ``NAME.tmp`` before renaming it;
    a run killed between the two leaves the temporary behind. Call this only while holding the
    folder's lock (no other run can be writing them).

    Parameters
    ----------
    outdir : str or path-like

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    outdir = Path(outdir)
    if not outdir.is_dir():
        return removed
    for p in sorted(outdir.iterdir()):
        name = p.name
        is_tmp = (name.startswith(".") and ".tmp" in name and name != LOCK_NAME) or name.endswith(".pkl.tmp")
        if is_tmp and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run in %s: %s", len(removed), outdir,
                 ", ".join(p.name for p in removed))
    return removed


@contextlib.contextmanager
def output_lock(outdir):
    """Hold the lock of output folder ``outdir`` for the duration of a ``with`` block.

    Creates ``outdir`` if needed, then the lock file ``outdir/.pho.lock`` holding this process's
    pid and host. A stale lock (its owner is dead, same host) is taken over with a logged
    warning. The lock file is removed on leaving the block, also on an exception or Ctrl-C.

    Parameters
    ----------
    outdir : str or path-like
        The output folder of the run.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    PhoLockError
        Another live run holds the lock; the message names its pid, host and start time.
    OSError
        The folder cannot be created or written.

    Examples
    --------
    >>> with output_lock(tmp_dir):                 # doctest: +SKIP
    ...     write_results(tmp_dir)
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / LOCK_NAME
    for _attempt in range(3):
        if _write_new(path):
            break
        info = read_lock(path)
        if not _is_stale(info):
            raise PhoLockError(
                f"output folder {outdir} is in use by another pho run (pid {info.get('pid')} on host "
                f"{info.get('host', '?')}, started {info.get('started', '?')}; lock file {path}). Wait for that run "
                f"to finish or stop it, or choose another output folder; if that process is not a pho run, delete "
                f"{path}"
            )
        log.warning("taking over the stale lock %s of pid %s on %s (that process is gone; its run was interrupted)",
                    path, info.get("pid", "?"), info.get("host", "?"))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:  # pragma: no cover - three lost races in a row
        raise PhoLockError(f"could not take the lock {path}: other runs keep creating it; run one at a time")
    try:
        yield path
    finally:
        # remove only our own lock (a user may have deleted it and another run taken it over)
        if read_lock(path).get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                path.unlink()
