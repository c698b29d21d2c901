"""pho/include/pho_kernel.h compiles as strict C99 and as CUDA (nvcc, to PTX only: no GPU needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pho import _cuda, _reference as ref

INCLUDE = Path(__file__).resolve().parents[1] / "pho" / "include"

CUDA_SOURCE = r"""
#include "pho_kernel.h"
extern "C" __global__ void pho_test_rows(const double *g, const int *orders, const double *nodes,
                                         const double *wts, const double *tab, double *img, double *grad,
                                         int nx, int ny)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= ny) return;
    int n = nx < PHO_SEG ? nx : PHO_SEG;
    double acc[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    int st = pho_render_segment(g, orders[0], nodes, wts, tab, -g[1], (double)i - g[2], n, img + (long)i * nx);
    st |= pho_gradient_segment(g, orders[0], nodes, wts, tab, -g[1], (double)i - g[2], n, img + (long)i * nx, acc);
    for (int p = 0; p < 6; p++) grad[6 * i + p] = acc[p] + (double)st;
}
extern "C" __global__ void pho_test_tables(const double *g, const int *orders, const double *nodes,
                                           const double *wts, double *tab, int G)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k < G) pho_gauss_table(g + 6 * k, orders[k], nodes, wts, tab + (long)k * PHO_TAB);
}
"""

C_SOURCE = r"""
#include <stdio.h>
#include "pho_kernel.h"
int main(void)
{
    double g[6] = {1.0, 3.2, 2.1, 0.5, 0.1, 0.4};
    double nodes[(PHO_MAX_ORDER + 1) * PHO_MAX_ORDER] = {0.0};
    double wts[(PHO_MAX_ORDER + 1) * PHO_MAX_ORDER] = {0.0};
    double tab[PHO_TAB], out[PHO_SEG] = {0.0}, acc[6] = {0.0};
    wts[0] = 1.0;
    if (pho_gauss_table(g, 0, nodes, wts, tab)) return 1;
    if (pho_render_segment(g, 0, nodes, wts, tab, -3.2, -2.1, 8, out)) return 2;
    if (pho_gradient_segment(g, 0, nodes, wts, tab, -3.2, -2.1, 8, out, acc)) return 3;
    if (pho_render_segment(g, PHO_MAX_ORDER + 1, nodes, wts, tab, -3.2, -2.1, 8, out) != PHO_ERR_ORDER) return 4;
    printf("%d %d\n", PHO_MAX_ORDER, PHO_TAB);
    return out[3] > 0.0 && acc[0] > 0.0 ? 0 : 5;
}
"""


@pytest.mark.slow
def test_header_and_gpu_driver_compile_as_cuda(tmp_path):
    """pho_kernel.h in a trivial kernel, and the CuPy backend's own driver (pho._cuda.CUDA_SOURCE),
    compile with nvcc to PTX (one nvcc run: it takes ~10 s)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH, so the CUDA compile of pho_kernel.h cannot be checked here")
    src = tmp_path / "k.cu"
    src.write_text(CUDA_SOURCE + "\n" + _cuda.CUDA_SOURCE)
    ptx = tmp_path / "k.ptx"
    r = subprocess.run([nvcc, "-ptx", f"-I{INCLUDE}", str(src), "-o", str(ptx)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = ptx.read_text()
    for name in ("pho_test_rows", "pho_test_tables", "pho_tables", "pho_render_rows", "pho_gradient_gaussians"):
        assert f".entry {name}" in text


def test_header_compiles_as_strict_c99_and_runs(tmp_path):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler on PATH")
    src = tmp_path / "k.c"
    src.write_text(C_SOURCE)
    exe = tmp_path / "k"
    flags = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]
    r = subprocess.run([cc, *flags, f"-I{INCLUDE}", str(src), "-o", str(exe), "-lm"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0
    # the Python side's node tables and the GPU driver's table size agree with the header
    max_order, tab_len = (int(v) for v in run.stdout.split())
    assert max_order == ref.MAX_ORDER
    assert tab_len == _cuda._tab_len()
