/* pho_kernel.h: the per-pixel arithmetic of pho, shared by the CPU (Cython) and GPU (CuPy) backends.
 *
 * One image Gaussian is (A, x0, y0, Fxx, Fxy, Fyy) with point value A exp(-Q/2),
 * Q = Fxx dx^2 + 2 Fxy dx dy + Fyy dy^2, dx = x - x0, dy = y - y0 (pixels; the centre of pixel [i, j]
 * is (x, y) = (j, i)). Its value on a pixel is the integral over the unit pixel by pho's rule
 * (docs/pixel_integration.md; the executable specification is pho/_reference.py):
 *   order 0:  A e (1 + (Vx^2 + Vy^2 - Fxx - Fyy) / 24), e = exp(-Q/2) at the centre, V = F d;
 *   order n:  A sum_ab w_a w_b exp(-Q(x + u_a, y + u_b) / 2), n x n Gauss-Legendre nodes u, weights w
 *             (sum w = 1), passed in by the caller as a table nodes[n * PHO_MAX_ORDER + k].
 * The caller supplies the integer pixel box and the order of each Gaussian (computed once, in Python).
 *
 * Evaluation along a pixel row. For a fixed y (a row, or a row's sub-pixel node), Q as a function of x is
 * Fxx t^2 + beta dy with t = x - xc, xc = x0 - Fxy dy / Fxx, beta = det F dy / Fxx, so
 * exp(-Q/2) = Er g(t), Er = exp(-beta dy / 2), g(t) = exp(-Fxx t^2 / 2). Along the row g obeys
 * g(t + 1) = g(t) r(t), r(t + 1) = r(t) exp(-Fxx): two multiplies per pixel instead of an exp. The row is
 * cut into segments of PHO_SEG pixels; each segment starts from exact exponentials (2 exp calls) and runs
 * PHO_LANES interleaved recurrences of stride PHO_LANES (g(t + L) = g(t) S, S <- S exp(-Fxx L^2)), so
 * each lane takes at most PHO_SEG / PHO_LANES = 8 steps: the accumulated relative rounding error is below
 * 1e-14 (measured in tests/test_backends.py against the exp-per-pixel reference). Rows where an end
 * of the segment has Fxx t^2 / 2 > PHO_EXPARG_MAX (extremely elongated Gaussians, far box corners), where
 * exp(-Fxx t^2/2) could underflow and stall the recurrence, are evaluated with one exp per point instead.
 * Gradient sums along a row are accumulated as moments T_k = sum w e t^k (k <= 4) and combined with the
 * row's polynomial coefficients at the end of the row; t is centred on the row's own peak, so the
 * expansion does not cancel.
 *
 * The same text compiles as C99 (the Cython extension) and as CUDA C++ (nvcc / NVRTC): no VLAs, no
 * designated initializers, no malloc, printf or globals; only exp from the math library.
 */
#ifndef PHO_KERNEL_H
#define PHO_KERNEL_H

#ifdef __CUDACC__
#  define PHO_FN __device__ static inline
#else
#  include <math.h>
#  define PHO_FN static inline
#endif

#define PHO_MAX_ORDER 8     /* largest Gauss-Legendre order; node tables have rows of this length */
#define PHO_LANES 8         /* interleaved recurrences per row segment */
#define PHO_SEG 64          /* pixels per row segment (a multiple of PHO_LANES); recurrences restart */
#define PHO_EXPARG_MAX 600.0 /* above this exponent at a segment end, use one exp per point */

#define PHO_OK 0
#define PHO_ERR_ORDER 1

/* ---------------------------------------------------------------------------------------------------- */
/* Point formulas (used by the exp-per-point path; identical in form to pho/_reference.py).              */

/* Second-order rule at one pixel: value, and (if acc != 0) acc[0..5] += w * dI/d(A, x0, y0, Fxx, Fxy, Fyy). */
PHO_FN double pho_so_point(double a, double fxx, double fxy, double fyy, double dx, double dy,
                           double w, double *acc)
{
    double vx = fxx * dx + fxy * dy;
    double vy = fxy * dx + fyy * dy;
    double e = exp(-0.5 * (dx * vx + dy * vy));
    double h = 1.0 + (vx * vx + vy * vy - fxx - fyy) / 24.0;
    double val = a * e * h;
    if (acc) {
        double ae = a * e;
        acc[0] += w * (e * h);
        acc[1] += w * (val * vx - ae * (fxx * vx + fxy * vy) / 12.0);
        acc[2] += w * (val * vy - ae * (fxy * vx + fyy * vy) / 12.0);
        acc[3] += w * (-0.5 * val * dx * dx + ae * (2.0 * vx * dx - 1.0) / 24.0);
        acc[4] += w * (-val * dx * dy + ae * (vx * dy + vy * dx) / 12.0);
        acc[5] += w * (-0.5 * val * dy * dy + ae * (2.0 * vy * dy - 1.0) / 24.0);
    }
    return val;
}

/* n x n Gauss-Legendre rule at one pixel (n >= 1); same outputs as pho_so_point. */
PHO_FN double pho_gl_point(double a, double fxx, double fxy, double fyy, double dx, double dy, int n,
                           const double *u, const double *wt, double w, double *acc)
{
    double esum = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0, s5 = 0.0;
    int b, c;
    for (b = 0; b < n; b++) {
        double ddy = dy + u[b];
        for (c = 0; c < n; c++) {
            double ddx = dx + u[c];
            double vx = fxx * ddx + fxy * ddy;
            double vy = fxy * ddx + fyy * ddy;
            double we = (wt[b] * wt[c]) * exp(-0.5 * (ddx * vx + ddy * vy));
            esum += we;
            s1 += we * vx;
            s2 += we * vy;
            s3 += we * ddx * ddx;
            s4 += we * ddx * ddy;
            s5 += we * ddy * ddy;
        }
    }
    if (acc) {
        acc[0] += w * esum;
        acc[1] += w * (a * s1);
        acc[2] += w * (a * s2);
        acc[3] += w * (-0.5 * a * s3);
        acc[4] += w * (-a * s4);
        acc[5] += w * (-0.5 * a * s5);
    }
    return a * esum;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Row recurrences.                                                                                      */

/* Fill g[0..n) (n <= PHO_SEG, padded to a multiple of PHO_LANES) with exp(-fxx (t0 + k)^2 / 2) by
   PHO_LANES interleaved recurrences; k1 = exp(-fxx), kl2 = exp(-fxx PHO_LANES^2) (pho_row_consts). */
PHO_FN void pho_row_gauss(double fxx, double t0, int n, double k1, double kl2, double *g)
{
    double lane[PHO_LANES], step[PHO_LANES];
    double r = exp(-0.5 * fxx * (2.0 * t0 + 1.0));  /* g(t0 + 1) / g(t0) */
    double s;
    int l, m, nb;
    lane[0] = exp(-0.5 * fxx * t0 * t0);
    s = r;
    for (l = 1; l < PHO_LANES; l++) {
        lane[l] = lane[l - 1] * r;
        r *= k1;
        s *= r;
    }
    /* s = product of the first PHO_LANES ratios = g(t0 + L) / g(t0); successive lanes' steps differ by a
       factor exp(-fxx L), successive steps of one lane by exp(-fxx L^2) = kl2. */
    step[0] = s;
    {
        double kk = 1.0;
        for (m = 0; m < PHO_LANES; m++) kk *= k1;  /* exp(-fxx L) */
        for (l = 1; l < PHO_LANES; l++) step[l] = step[l - 1] * kk;
    }
    nb = (n + PHO_LANES - 1) / PHO_LANES;
    for (m = 0; m < nb; m++) {
        for (l = 0; l < PHO_LANES; l++) {
            g[m * PHO_LANES + l] = lane[l];
            lane[l] *= step[l];
            step[l] *= kl2;
        }
    }
}

/* Per-Gaussian constants of the row recurrences. */
PHO_FN void pho_row_consts(double fxx, double *k1, double *kl2)
{
    *k1 = exp(-fxx);
    *kl2 = exp(-fxx * (double)(PHO_LANES * PHO_LANES));
}

/* Does a segment [t0, t0 + n - 1] (plus sub-pixel nodes within +-1/2) risk underflow of g? */
PHO_FN int pho_row_extreme(double fxx, double t0, int n)
{
    double ta = fabs(t0) + 0.5, tb = fabs(t0 + (double)(n - 1)) + 0.5;
    double tm = ta > tb ? ta : tb;
    return 0.5 * fxx * tm * tm > PHO_EXPARG_MAX;
}

/* Render one Gaussian on one row segment: out[k] += I(pixel j0 + k) for k < n (n <= PHO_SEG).
   dy = row y - y0 (pixel centre); dx0 = j0 - x0. Returns PHO_OK or PHO_ERR_ORDER. */
PHO_FN int pho_render_segment(const double *gs, int order, const double *nodes, const double *wts,
                              double k1, double kl2, double dx0, double dy, int n, double *out)
{
    double a = gs[0], fxx = gs[3], fxy = gs[4], fyy = gs[5];
    double det = fxx * fyy - fxy * fxy;
    double g[PHO_SEG];
    int k, b, c;
    if (order == 0) {
        double c0 = -fxy * dy / fxx;           /* row peak offset: t = dx - c0 */
        double beta = det * dy / fxx;
        double t0 = dx0 - c0;
        double er, h0, h1, h2;
        if (pho_row_extreme(fxx, t0, n)) {
            for (k = 0; k < n; k++) out[k] += pho_so_point(a, fxx, fxy, fyy, dx0 + k, dy, 0.0, 0);
            return PHO_OK;
        }
        er = a * exp(-0.5 * beta * dy);
        h0 = er * (1.0 + (beta * beta - fxx - fyy) / 24.0);
        h1 = er * (fxy * beta / 12.0);
        h2 = er * ((fxx * fxx + fxy * fxy) / 24.0);
        pho_row_gauss(fxx, t0, n, k1, kl2, g);
        for (k = 0; k < n; k++) {
            double t = t0 + (double)k;
            out[k] += g[k] * (h0 + t * (h1 + t * h2));
        }
        return PHO_OK;
    }
    if (order < 1 || order > PHO_MAX_ORDER) return PHO_ERR_ORDER;
    {
        const double *u = nodes + order * PHO_MAX_ORDER;
        const double *wt = wts + order * PHO_MAX_ORDER;
        int extreme = 0;
        for (b = 0; b < order && !extreme; b++) {
            double dyb = dy + u[b];
            double t0 = dx0 + fxy * dyb / fxx;
            extreme = pho_row_extreme(fxx, t0, n);
        }
        if (extreme) {
            for (k = 0; k < n; k++) out[k] += pho_gl_point(a, fxx, fxy, fyy, dx0 + k, dy, order, u, wt, 0.0, 0);
            return PHO_OK;
        }
        for (b = 0; b < order; b++) {
            double dyb = dy + u[b];
            double c0 = -fxy * dyb / fxx;
            double beta = det * dyb / fxx;
            double erb = a * wt[b] * exp(-0.5 * beta * dyb);
            for (c = 0; c < order; c++) {
                double f = erb * wt[c];
                pho_row_gauss(fxx, dx0 + u[c] - c0, n, k1, kl2, g);
                for (k = 0; k < n; k++) out[k] += f * g[k];
            }
        }
    }
    return PHO_OK;
}

/* Gradient of one Gaussian on one row segment: acc[0..5] += sum_k w[k] dI(j0 + k)/d(A, x0, y0, Fxx, Fxy, Fyy).
   w must hold at least n entries. */
PHO_FN int pho_gradient_segment(const double *gs, int order, const double *nodes, const double *wts,
                                double k1, double kl2, double dx0, double dy, int n, const double *w,
                                double *acc)
{
    double a = gs[0], fxx = gs[3], fxy = gs[4], fyy = gs[5];
    double det = fxx * fyy - fxy * fxy;
    double g[PHO_SEG];
    int k, b, c;
    if (order == 0) {
        double c0 = -fxy * dy / fxx;
        double beta = det * dy / fxx;
        double t0 = dx0 - c0;
        double er, T0 = 0.0, T1 = 0.0, T2 = 0.0, T3 = 0.0, T4 = 0.0;
        double h0, h1, h2, p0, p1, p2, p3, p4;
        if (pho_row_extreme(fxx, t0, n)) {
            for (k = 0; k < n; k++) pho_so_point(a, fxx, fxy, fyy, dx0 + k, dy, w[k], acc);
            return PHO_OK;
        }
        er = exp(-0.5 * beta * dy);
        pho_row_gauss(fxx, t0, n, k1, kl2, g);
        for (k = 0; k < n; k++) {
            double t = t0 + (double)k;
            double q = w[k] * g[k];
            T0 += q; q *= t;
            T1 += q; q *= t;
            T2 += q; q *= t;
            T3 += q; q *= t;
            T4 += q;
        }
        T0 *= er; T1 *= er; T2 *= er; T3 *= er; T4 *= er;
        /* h(t) = h0 + h1 t + h2 t^2;  Vx = fxx t;  Vy = fxy t + beta;  dx = t + c0 */
        h0 = 1.0 + (beta * beta - fxx - fyy) / 24.0;
        h1 = fxy * beta / 12.0;
        h2 = (fxx * fxx + fxy * fxy) / 24.0;
        /* dA: sum w e h */
        acc[0] += h0 * T0 + h1 * T1 + h2 * T2;
        /* dx0: A sum w e [h fxx t - ((fxx^2 + fxy^2) t + fxy beta) / 12] */
        p0 = -fxy * beta / 12.0;
        p1 = fxx * h0 - (fxx * fxx + fxy * fxy) / 12.0;
        p2 = fxx * h1;
        p3 = fxx * h2;
        acc[1] += a * (p0 * T0 + p1 * T1 + p2 * T2 + p3 * T3);
        /* dy0: A sum w e [h (fxy t + beta) - (fxy (fxx + fyy) t + fyy beta) / 12] */
        p0 = h0 * beta - fyy * beta / 12.0;
        p1 = h0 * fxy + h1 * beta - fxy * (fxx + fyy) / 12.0;
        p2 = h1 * fxy + h2 * beta;
        p3 = h2 * fxy;
        acc[2] += a * (p0 * T0 + p1 * T1 + p2 * T2 + p3 * T3);
        /* dFxx: A sum w e [-h dx^2 / 2 + (2 fxx t dx - 1) / 24], dx^2 = t^2 + 2 c0 t + c0^2 */
        {
            double d0 = c0 * c0, d1 = 2.0 * c0;  /* dx^2 = d0 + d1 t + t^2 */
            p0 = -0.5 * (h0 * d0) - 1.0 / 24.0;
            p1 = -0.5 * (h0 * d1 + h1 * d0) + fxx * c0 / 12.0;
            p2 = -0.5 * (h0 + h1 * d1 + h2 * d0) + fxx / 12.0;
            p3 = -0.5 * (h1 + h2 * d1);
            p4 = -0.5 * h2;
            acc[3] += a * (p0 * T0 + p1 * T1 + p2 * T2 + p3 * T3 + p4 * T4);
        }
        /* dFxy: A sum w e [-h dx dy + (Vx dy + Vy dx) / 12], dx = t + c0 */
        /* Vx dy + Vy dx = fxx t dy + (fxy t + beta)(t + c0) = fxy t^2 + (fxx dy + fxy c0 + beta) t + beta c0 */
        p0 = -h0 * c0 * dy + beta * c0 / 12.0;
        p1 = -(h0 + h1 * c0) * dy + (fxx * dy + fxy * c0 + beta) / 12.0;
        p2 = -(h1 + h2 * c0) * dy + fxy / 12.0;
        p3 = -h2 * dy;
        acc[4] += a * (p0 * T0 + p1 * T1 + p2 * T2 + p3 * T3);
        /* dFyy: A sum w e [-h dy^2 / 2 + (2 Vy dy - 1) / 24] */
        p0 = -0.5 * h0 * dy * dy + (2.0 * beta * dy - 1.0) / 24.0;
        p1 = -0.5 * h1 * dy * dy + fxy * dy / 12.0;
        p2 = -0.5 * h2 * dy * dy;
        acc[5] += a * (p0 * T0 + p1 * T1 + p2 * T2);
        return PHO_OK;
    }
    if (order < 1 || order > PHO_MAX_ORDER) return PHO_ERR_ORDER;
    {
        const double *u = nodes + order * PHO_MAX_ORDER;
        const double *wt = wts + order * PHO_MAX_ORDER;
        int extreme = 0;
        for (b = 0; b < order && !extreme; b++) {
            double dyb = dy + u[b];
            double t0 = dx0 + fxy * dyb / fxx;
            extreme = pho_row_extreme(fxx, t0, n);
        }
        if (extreme) {
            for (k = 0; k < n; k++) pho_gl_point(a, fxx, fxy, fyy, dx0 + k, dy, order, u, wt, w[k], acc);
            return PHO_OK;
        }
        for (b = 0; b < order; b++) {
            double dyb = dy + u[b];
            double c0 = -fxy * dyb / fxx;
            double beta = det * dyb / fxx;
            double T0 = 0.0, T1 = 0.0, T2 = 0.0;
            double erb = wt[b] * exp(-0.5 * beta * dyb);
            for (c = 0; c < order; c++) {
                double t0 = dx0 + u[c] - c0;
                double U0 = 0.0, U1 = 0.0, U2 = 0.0;
                pho_row_gauss(fxx, t0, n, k1, kl2, g);
                for (k = 0; k < n; k++) {
                    double t = t0 + (double)k;
                    double q = w[k] * g[k];
                    U0 += q; q *= t;
                    U1 += q; q *= t;
                    U2 += q;
                }
                T0 += wt[c] * U0; T1 += wt[c] * U1; T2 += wt[c] * U2;
            }
            T0 *= erb; T1 *= erb; T2 *= erb;
            /* e at node: Vx = fxx t, Vy = fxy t + beta, dx = t + c0, dy = dyb */
            acc[0] += T0;
            acc[1] += a * (fxx * T1);
            acc[2] += a * (fxy * T1 + beta * T0);
            acc[3] += -0.5 * a * (T2 + 2.0 * c0 * T1 + c0 * c0 * T0);
            acc[4] += -a * dyb * (T1 + c0 * T0);
            acc[5] += -0.5 * a * dyb * dyb * T0;
        }
    }
    return PHO_OK;
}

#endif /* PHO_KERNEL_H */
