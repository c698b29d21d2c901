"""pho.runlock and the fit tool's handling of its output folder (issue 15, items 4 and 6)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from pho.errors import PhoLockError
from pho.runlock import LOCK_NAME, clean_temporary_files, output_lock, read_lock
from pho.tools.fit import main


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_holds_owner_and_is_released(tmp_path):
    out = tmp_path / "out"
    with output_lock(out) as path:
        assert path == out / LOCK_NAME
        info = read_lock(path)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        # a second run (here: the same live process) is refused, naming the owner
        with pytest.raises(PhoLockError, match=rf"in use by another pho run \(pid {os.getpid()} .*choose another"):
            with output_lock(out):
                pass
        assert path.exists()
    assert not path.exists()


def test_lock_is_released_on_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with output_lock(tmp_path):
            raise KeyboardInterrupt
    assert not (tmp_path / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    pid = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(f"pid={pid}\nhost={socket.gethostname()}\nstarted=x\n")
    with caplog.at_level("WARNING", logger="pho.runlock"):
        with output_lock(tmp_path) as path:
            assert read_lock(path)["pid"] == os.getpid()
    assert f"stale lock" in caplog.text and str(pid) in caplog.text
    # an empty lock file (a run killed while creating it) is stale too
    (tmp_path / LOCK_NAME).write_text("")
    with output_lock(tmp_path):
        pass


def test_second_fit_into_a_locked_folder_refuses(tmp_path, capsys):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"pid={owner.pid}\nhost={socket.gethostname()}\nstarted=now\n")
        rc = main(["--demo", "--outdir", str(tmp_path), "--quiet"])
    finally:
        owner.kill()
        owner.wait()
    assert rc == 1
    err = capsys.readouterr().err
    assert f"in use by another pho run (pid {owner.pid}" in err
    assert read_lock(tmp_path / LOCK_NAME)["pid"] == owner.pid, "the refused run touched the owner's lock"


def test_interrupted_folder_without_resume_gives_a_clear_error(tmp_path, capsys):
    (tmp_path / "sampler.pkl").write_bytes(b"state")
    with pytest.raises(SystemExit) as e:
        main(["--demo", "--outdir", str(tmp_path), "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "an earlier run" in err and "Pass --resume to continue it" in err and "--overwrite" in err
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(SystemExit):
        main(["--demo", "--outdir", str(tmp_path / "new"), "--quiet", "--resume"])
    assert "no checkpoint" in capsys.readouterr().err


def test_leftover_temporary_files_are_removed(tmp_path):
    left = [tmp_path / ".catalog.fits.tmp4242", tmp_path / ".exposures.tmp4242.png", tmp_path / "sampler.pkl.tmp"]
    for p in left:
        p.write_bytes(b"partial")
    keep = [tmp_path / "catalog.fits", tmp_path / "notes.txt"]
    for p in keep:
        p.write_text("x")
    with pytest.raises(SystemExit):  # the catalog exists: refused, but after cleaning up
        main(["--demo", "--outdir", str(tmp_path), "--quiet"])
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in keep)
    assert clean_temporary_files(tmp_path / "absent") == []
