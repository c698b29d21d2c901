/* Box and integration order of one image Gaussian (pho._render.boxes_and_orders and the one-call
   likelihood plan of pho._stamp share it). */
#ifndef PHO_BOX_H
#define PHO_BOX_H
#include <math.h>
#include <stddef.h>
/* Box and integration order of one image Gaussian, by exactly the operations of
   pho._reference.pixel_boxes and integration_orders (no contraction into fused
   multiply-adds, so the integers agree with NumPy's to the last bit).
   Returns 0, 1 if a value is not finite, 2 if F is not positive definite. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
static int pho_box_order(const double *g, double nx, double ny, double nsigma,
                         const double *edges, int n_edges, const int *order_table,
                         Py_ssize_t *box, int *order)
{
    int c, k;
    for (c = 0; c < 6; c++)
        if (!isfinite(g[c])) return 1;
    double fxx = g[3], fxy = g[4], fyy = g[5];
    double det = fxx * fyy - fxy * fxy;
    if (!(fxx > 0.0 && fyy > 0.0 && det > 0.0)) return 2;
    double r[2], top[2], lo, hi, t;
    r[0] = nsigma * sqrt(fyy / det);
    r[1] = nsigma * sqrt(fxx / det);
    top[0] = nx; top[1] = ny;
    for (c = 0; c < 2; c++) {
        t = g[1 + c] - r[c] - 0.5;
        t = t < -1.0 ? -1.0 : (t > top[c] + 1.0 ? top[c] + 1.0 : t);
        lo = ceil(t);
        if (lo < 0.0) lo = 0.0;
        t = g[1 + c] + r[c] + 0.5;
        t = t < -2.0 ? -2.0 : (t > top[c] + 1.0 ? top[c] + 1.0 : t);
        hi = floor(t);
        if (hi > top[c] - 1.0) hi = top[c] - 1.0;
        box[2 * c] = (Py_ssize_t)lo;
        box[2 * c + 1] = (Py_ssize_t)hi;
    }
    double fmax = fxx > fyy ? fxx : fyy;
    k = 0;
    while (k < n_edges && edges[k] < fmax) k++;
    *order = order_table[k];
    return 0;
}

#endif
