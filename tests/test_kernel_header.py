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


def _compile_and_run(tmp_path, source: str, name: str, flags: list[str]) -> subprocess.CompletedProcess:
    """Compile ``source`` as strict C99 with ``flags`` (warnings are errors) and run it; skips without a
    C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler on PATH")
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    flags = ["-std=c99", *flags, "-Wall", "-Wextra", "-pedantic", "-Werror"]
    r = subprocess.run([cc, *flags, f"-I{INCLUDE}", str(src), "-o", str(exe), "-lm"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return subprocess.run([str(exe)], capture_output=True, text=True)


def test_header_compiles_as_strict_c99_and_runs(tmp_path):
    run = _compile_and_run(tmp_path, C_SOURCE, "k", [])
    assert run.returncode == 0
    # the Python side's node tables and the GPU driver's table size agree with the header
    max_order, tab_len = (int(v) for v in run.stdout.split())
    assert max_order == ref.MAX_ORDER
    assert tab_len == _cuda._tab_len()


BOX_SOURCE = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "pho_kernel.h"
/* pho_render_box_keep against pho_render_span row by row, its kept exponentials against exp(-Q/2),
   and the gradients reading them (row by row, and by moments over the box: pho_gradient_box_kept) against
   the gradient computing them; prints the three worst errors */
int main(void)
{
    /* (A, x0, y0, Fxx, Fxy, Fyy, order, jlo, jhi, ilo, ihi, check the kept values) */
    static const double cases[][12] = {
        {2.0, 20.3, 30.6, 0.04, 0.01, 0.03, 0, 0, 40, 0, 60, 1},     /* 61 rows: three restarts */
        {1.5, 70.2, 20.4, 0.02, -0.006, 0.05, 0, 0, 139, 0, 40, 1},  /* 140 columns: chunks of 128 and 12 */
        {1.0, 65.0, 10.0, 0.01, 0.0, 0.2, 1, 0, 130, 0, 20, 1},      /* last chunk of 3 columns (< PHO_LANES) */
        {3.0, 10.4, 9.7, 0.8, 0.3, 0.6, 1, 2, 18, 1, 19, 1},         /* fourth-order rule */
        {0.7, 6.1, 5.9, 2.5, -0.9, 1.8, 3, 2, 10, 2, 10, 1},         /* 3 x 3 Gauss-Legendre */
        /* corners far out: row by row, point by point where a segment is extreme (nothing kept there) */
        {1.0, 40.0, 40.0, 0.5, 0.495, 0.5, 0, 0, 80, 0, 80, 0},
    };
    double nodes[(PHO_MAX_ORDER + 1) * PHO_MAX_ORDER] = {0.0};
    double wts[(PHO_MAX_ORDER + 1) * PHO_MAX_ORDER] = {0.0};
    int nx = 160, ny = 100, c, i, j;
    double worst_img = 0.0, worst_keep = 0.0, worst_grad = 0.0;
    double *a = calloc((size_t)(nx * ny), sizeof(double)), *b = calloc((size_t)(nx * ny), sizeof(double));
    double *w = calloc((size_t)(nx * ny), sizeof(double)), *keep = calloc((size_t)(nx * ny), sizeof(double));
    wts[0] = 1.0;
    nodes[3 * PHO_MAX_ORDER + 0] = -0.5 * sqrt(0.6); nodes[3 * PHO_MAX_ORDER + 2] = 0.5 * sqrt(0.6);
    wts[3 * PHO_MAX_ORDER + 0] = 5.0 / 18.0; wts[3 * PHO_MAX_ORDER + 1] = 8.0 / 18.0;
    wts[3 * PHO_MAX_ORDER + 2] = 5.0 / 18.0;
    for (i = 0; i < nx * ny; i++) w[i] = sin(0.37 * i) + 0.2;
    for (c = 0; c < (int)(sizeof(cases) / sizeof(cases[0])); c++) {
        const double *g = cases[c];
        int order = (int)g[6];
        long long jlo = (long long)g[7], jhi = (long long)g[8], ilo = (long long)g[9], ihi = (long long)g[10];
        long long W = jhi - jlo + 1;
        double tab[PHO_TAB], peak = 0.0, acc1[6] = {0.0}, acc2[6] = {0.0}, acc3[6] = {0.0}, scale = 0.0;
        for (i = 0; i < nx * ny; i++) { a[i] = 0.0; b[i] = 0.0; }
        if (pho_gauss_table(g, order, nodes, wts, tab)) return 1;
        if (pho_render_box_keep(g, order, nodes, wts, tab, jlo, jhi, ilo, ihi, a, nx, keep)) return 2;
        for (i = (int)ilo; i <= ihi; i++)
            if (pho_render_span(g, order, nodes, wts, tab, jlo, jhi, i - g[2], b + (long)i * nx)) return 3;
        for (i = 0; i < nx * ny; i++) if (fabs(b[i]) > peak) peak = fabs(b[i]);
        for (i = 0; i < nx * ny; i++) if (fabs(a[i] - b[i]) / peak > worst_img) worst_img = fabs(a[i] - b[i]) / peak;
        for (i = (int)ilo; i <= ihi; i++) {
            for (j = (int)jlo; j <= jhi; j++) {
                double dx = j - g[1], dy = i - g[2];
                double q = 0.5 * (g[3] * dx * dx + 2.0 * g[4] * dx * dy + g[5] * dy * dy);
                double k = keep[(i - ilo) * W + (j - jlo)];
                if (g[11] != 0.0 && fabs(k - exp(-q)) / exp(-q) > worst_keep) worst_keep = fabs(k - exp(-q)) / exp(-q);
            }
            pho_gradient_span_kept(g, order, nodes, wts, tab, jlo, jhi, i - g[2], w + (long)i * nx,
                                   keep + (i - ilo) * W, acc1);
            pho_gradient_span(g, order, nodes, wts, tab, jlo, jhi, i - g[2], w + (long)i * nx, acc2);
        }
        if (pho_gradient_box_kept(g, order, nodes, wts, tab, jlo, jhi, ilo, ihi, w, nx, keep, acc3)) return 4;
        for (i = 0; i < 6; i++) if (fabs(acc2[i]) > scale) scale = fabs(acc2[i]);
        for (i = 0; i < 6; i++) {
            if (fabs(acc1[i] - acc2[i]) / scale > worst_grad) worst_grad = fabs(acc1[i] - acc2[i]) / scale;
            if (fabs(acc3[i] - acc2[i]) / scale > worst_grad) worst_grad = fabs(acc3[i] - acc2[i]) / scale;
        }
    }
    printf("%.3e %.3e %.3e\n", worst_img, worst_keep, worst_grad);
    return 0;
}
"""


def test_box_recurrence_equals_the_row_rule(tmp_path):
    """pho_render_box_keep (rows from the previous row's exponentials, restarted every PHO_BOX_RESTART rows)
    renders what pho_render_span renders row by row, within 1e-13 of the peak: restarts, chunks of
    PHO_SEG columns (one shorter than PHO_LANES), orders 0, 1 and 3, and a Gaussian whose box corners
    are too far out for the recurrence. Its kept exponentials are exp(-Q/2) within 1e-13, and the gradients
    that read them, row by row and by the box's moments (pho_gradient_box_kept), match the one that computes
    them within 1e-13 of the largest component."""
    run = _compile_and_run(tmp_path, BOX_SOURCE, "box", ["-O2"])
    assert run.returncode == 0, run.stdout + run.stderr
    worst_img, worst_keep, worst_grad = (float(v) for v in run.stdout.split())
    assert worst_img < 1e-13
    assert worst_keep < 1e-13
    assert worst_grad < 1e-13

