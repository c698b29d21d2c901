"""tools/device_check.sh and tools/bench_device.py: the parts a machine without a GPU can check."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "device_check.sh"


def _gpu_here() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return importlib.util.find_spec("cupy") is not None


def test_device_check_refuses_clearly_without_a_gpu(tmp_path):
    if _gpu_here():
        pytest.skip("an NVIDIA GPU and CuPy are here: the refusal is not reachable")
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "device_check: " in res.stderr and ("no NVIDIA GPU here" in res.stderr or "CuPy" in res.stderr)
    assert res.stdout == ""  # nothing built or run


def test_device_check_refuses_when_cupy_is_missing(tmp_path):
    """A fake nvidia-smi that lists a GPU gets past the first check; the missing CuPy is named."""
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-0)'\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2, res.stderr
    assert "CuPy is not importable" in res.stderr and "pip install cupy" in res.stderr


def test_bench_device_prints_one_table(capsys):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import bench_device
    finally:
        sys.path.remove(str(REPO / "tools"))
    assert bench_device.main(["--backends", "cpu", "reference", "--scenes", "a", "--quick", "--max-diff", "1e-9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pho ") and str(REPO / "pho") in out[0]  # this checkout's pho, not an installed one
    assert out[1].split()[:2] == ["scene", "backend"] and len(out) == 4
    cpu, ref = out[2].split(), out[3].split()
    assert cpu[-3:][1:] == ["nan", "nan"] and float(ref[-2]) < 1e-10 and float(ref[-1]) < 1e-10
