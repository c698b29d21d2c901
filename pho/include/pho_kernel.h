/* pho_kernel.h: the per-pixel arithmetic of pho, shared by the CPU (Cython) and GPU (CuPy) backends.
 *
 * One image Gaussian is (A, x0, y0, Fxx, Fxy, Fyy) with point value A exp(-Q/2),
 * Q = Fxx dx^2 + 2 Fxy dx dy + Fyy dy^2, dx = x - x0, dy = y - y0 (pixels; the centre of pixel [i, j]
 * is (x, y) = (j, i)). Its value on a pixel is the integral over the unit pixel by pho's rule
 * (docs/pixel_integration.md; the executable specification is pho/_reference.py):
 *   order 0:  A e (1 + (Vx^2 + Vy^2 - Fxx - Fyy) / 24), e = exp(-Q/2) at the centre, V = F d;
 *   order 1 (PHO_ORDER_FOURTH): A e B, the fourth-order correction, B = 1 + (Px + Py) / 24 + (Rx + Ry) / 1920
 *             + Cxy / 576 with Px = Vx^2 - Fxx, Rx = Vx^4 - 6 Fxx Vx^2 + 3 Fxx^2 (likewise y) and
 *             Cxy = Px Py - 4 Fxy Vx Vy + 2 Fxy^2 (see pho._reference._fourth_order_rule);
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
 * each lane takes at most PHO_SEG / PHO_LANES = 32 steps: the accumulated relative rounding error is below
 * 1e-13 (tests/test_backends.py checks 1e-12 against the exp-per-pixel reference). Segments whose
 * exponents could underflow or overflow (Fxx t^2/2, |V|/2 or the row's minimum Q/2 above PHO_EXPARG_MAX:
 * extremely elongated Gaussians, far box corners) are evaluated with one exp per point instead.
 * Gauss-Legendre nodes: exp(-Q(d + u)/2) = exp(-Q(d)/2) exp(-u_c Vx) exp(-u_b Vy) K_bc with V at the pixel
 * centre and a per-Gaussian constant K_bc (pho_gauss_table); along a row the middle two factors are
 * geometric sequences, so an n x n rule costs n + 2 exp calls per row segment and O(n^2) multiplies
 * per pixel, and its gradient sums use per-pixel moments of the node offsets.
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
/* PHO_FN_INLINE: a helper that must be inlined, so that a compile-time node count unrolls its loops. */
#if defined(__CUDACC__)
#  define PHO_FN_INLINE __device__ static __forceinline__
#elif defined(__GNUC__)
#  define PHO_FN_INLINE static inline __attribute__((always_inline))
#else
#  define PHO_FN_INLINE static inline
#endif
/* Vectorized sums: "omp simd reduction" lets the compiler keep one partial sum per SIMD lane (the
   reduction order is then fixed by the build, never by the thread count). Without OpenMP, plain loops. */
#if (defined(_OPENMP) || defined(PHO_OPENMP_SIMD)) && !defined(__CUDACC__)
#  define PHO_PRAGMA(x) _Pragma(#x)
#  define PHO_SIMD_SUM(...) PHO_PRAGMA(omp simd reduction(+:__VA_ARGS__))
#else
#  define PHO_SIMD_SUM(...)
#endif

#define PHO_MAX_ORDER 8     /* largest Gauss-Legendre order; node tables have rows of this length */
#ifndef PHO_LANES
#define PHO_LANES 4         /* interleaved recurrences per row segment (4 measured fastest on AVX2; 8 ok) */
#endif
#define PHO_SEG 128         /* pixels per row segment (a multiple of PHO_LANES); recurrences restart */
#define PHO_EXPARG_MAX 600.0 /* above this exponent at a segment end, use one exp per point */

#define PHO_OK 0
#define PHO_ERR_ORDER 1
#define PHO_ORDER_FOURTH 1  /* integration order code of the fourth-order correction (a 1 x 1 GL rule is never used) */

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

/* Fourth-order rule at one pixel; same outputs as pho_so_point (the formulas of pho._reference._fourth_order_rule). */
PHO_FN double pho_fo_point(double a, double fxx, double fxy, double fyy, double dx, double dy,
                           double w, double *acc)
{
    double vx = fxx * dx + fxy * dy;
    double vy = fxy * dx + fyy * dy;
    double e = exp(-0.5 * (dx * vx + dy * vy));
    double px = vx * vx - fxx, py = vy * vy - fyy;
    double rx = px * px - 4.0 * fxx * vx * vx + 2.0 * fxx * fxx;
    double ry = py * py - 4.0 * fyy * vy * vy + 2.0 * fyy * fyy;
    double cxy = px * py - 4.0 * fxy * vx * vy + 2.0 * fxy * fxy;
    double b = 1.0 + (px + py) / 24.0 + (rx + ry) / 1920.0 + cxy / 576.0;
    double val = a * e * b;
    if (acc) {
        double ae = a * e;
        double bvx = vx / 12.0 + (4.0 * vx * px - 8.0 * fxx * vx) / 1920.0 + (2.0 * vx * py - 4.0 * fxy * vy) / 576.0;
        double bvy = vy / 12.0 + (4.0 * vy * py - 8.0 * fyy * vy) / 1920.0 + (2.0 * vy * px - 4.0 * fxy * vx) / 576.0;
        double bfxx = -1.0 / 24.0 + (6.0 * fxx - 6.0 * vx * vx) / 1920.0 - py / 576.0;
        double bfyy = -1.0 / 24.0 + (6.0 * fyy - 6.0 * vy * vy) / 1920.0 - px / 576.0;
        double bfxy = (4.0 * fxy - 4.0 * vx * vy) / 576.0;
        acc[0] += w * (e * b);
        acc[1] += w * (ae * (b * vx - (bvx * fxx + bvy * fxy)));
        acc[2] += w * (ae * (b * vy - (bvx * fxy + bvy * fyy)));
        acc[3] += w * (ae * (-0.5 * dx * dx * b + bvx * dx + bfxx));
        acc[4] += w * (ae * (-dx * dy * b + bvx * dy + bvy * dx + bfxy));
        acc[5] += w * (ae * (-0.5 * dy * dy * b + bvy * dy + bfyy));
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

/* Start PHO_LANES interleaved recurrences for g(t) = scale exp(-fxx t^2 / 2 - qhalf) at t = t0 + l (lane l), each
   stepping by PHO_LANES: lane[l] = g(t0 + l), step[l] = g(t0 + l + L) / g(t0 + l); after a step, multiply
   step[l] by exp(-fxx L^2). k1 = exp(-fxx). Two exp calls. */
PHO_FN void pho_lane_init(double fxx, double t0, double k1, double scale, double qhalf, double *lane,
                          double *step)
{
    double r = exp(-0.5 * fxx * (2.0 * t0 + 1.0));  /* g(t0 + 1) / g(t0) */
    double s, kk = 1.0;
    int l;
    lane[0] = scale * exp(-(0.5 * fxx * t0 * t0 + qhalf));
    s = r;
    for (l = 1; l < PHO_LANES; l++) {
        lane[l] = lane[l - 1] * r;
        r *= k1;
        s *= r;
    }
    /* s = product of the first PHO_LANES ratios = g(t0 + L) / g(t0); successive lanes' steps differ by a
       factor exp(-fxx L), successive steps of one lane by exp(-fxx L^2). */
    for (l = 0; l < PHO_LANES; l++) kk *= k1;
    step[0] = s;
    for (l = 1; l < PHO_LANES; l++) step[l] = step[l - 1] * kk;
}

/* Fill g[0..n) (n <= PHO_SEG; g has room for PHO_SEG) with scale exp(-fxx (t0 + k)^2 / 2 - qhalf) by PHO_LANES
   interleaved recurrences, written as one loop with dependence distance PHO_LANES so that it vectorizes;
   k1 = exp(-fxx), kl2 = exp(-fxx PHO_LANES^2). */
PHO_FN void pho_row_gauss(double fxx, double t0, int n, double k1, double kl2, double scale, double qhalf,
                          double *g)
{
    double st[PHO_SEG + PHO_LANES];
    int k;
    pho_lane_init(fxx, t0, k1, scale, qhalf, g, st);
    for (k = 0; k < n - PHO_LANES; k++) {
        g[k + PHO_LANES] = g[k] * st[k];
        st[k + PHO_LANES] = st[k] * kl2;
    }
}

/* Fill out[0..n) (out has room for PHO_SEG) with the geometric sequence x0 q^k by PHO_LANES lanes. */
PHO_FN void pho_row_geom(double x0, double q, int n, double *out)
{
    double ql = 1.0;
    int l, k;
    out[0] = x0;
    for (l = 1; l < PHO_LANES; l++) out[l] = out[l - 1] * q;
    for (l = 0; l < PHO_LANES; l++) ql *= q;
    for (k = 0; k < n - PHO_LANES; k++) out[k + PHO_LANES] = out[k] * ql;
}

/* Per-Gaussian table, PHO_TAB doubles, filled once per Gaussian by pho_gauss_table:
     [0] exp(-Fxx), [1] exp(-Fxx L^2)                         (row recurrence constants)
     [2] 1 / Fxx, [3] det F / Fxx                             (row peak offset and minimum)
     [PHO_TK + b * PHO_MAX_ORDER + c] = w_b w_c exp(-(Fxx u_c^2 + 2 Fxy u_c u_b + Fyy u_b^2) / 2)
     [PHO_TX + c] = exp(-Fxx u_c), [PHO_TY + b] = exp(-Fxy u_b)  (per-pixel ratios of the node factors)
   A Gauss-Legendre node's exponential factorizes as exp(-Q(d + u)/2) = e(d) exp(-u_c Vx) exp(-u_b Vy) K_bc,
   with e(d), Vx, Vy at the pixel centre; along a row exp(-u_c Vx) and exp(-u_b Vy) are geometric. */
#define PHO_TK 4
#define PHO_TX (PHO_TK + PHO_MAX_ORDER * PHO_MAX_ORDER)
#define PHO_TY (PHO_TX + PHO_MAX_ORDER)
#define PHO_TAB (PHO_TY + PHO_MAX_ORDER)

PHO_FN int pho_gauss_table(const double *gs, int order, const double *nodes, const double *wts, double *tab)
{
    double fxx = gs[3], fxy = gs[4], fyy = gs[5];
    int b, c;
    tab[0] = exp(-fxx);
    tab[1] = exp(-fxx * (double)(PHO_LANES * PHO_LANES));
    tab[2] = 1.0 / fxx;
    tab[3] = (fxx * fyy - fxy * fxy) / fxx;
    if (order == 0 || order == PHO_ORDER_FOURTH) return PHO_OK;
    if (order < 1 || order > PHO_MAX_ORDER) return PHO_ERR_ORDER;
    {
        const double *u = nodes + order * PHO_MAX_ORDER;
        const double *w = wts + order * PHO_MAX_ORDER;
        for (b = 0; b < order; b++) {
            tab[PHO_TY + b] = exp(-fxy * u[b]);
            for (c = 0; c < order; c++)
                tab[PHO_TK + b * PHO_MAX_ORDER + c] =
                    (w[b] * w[c]) * exp(-0.5 * (fxx * u[c] * u[c] + 2.0 * fxy * u[c] * u[b] + fyy * u[b] * u[b]));
        }
        for (c = 0; c < order; c++) tab[PHO_TX + c] = exp(-fxx * u[c]);
    }
    return PHO_OK;
}

/* Does a segment risk underflow/overflow in the recurrences? t0: first pixel's offset from the row peak;
   vx0, vy0: V at the first pixel; the ends of the segment are checked (Q is convex, V linear). */
PHO_FN int pho_seg_extreme(double fxx, double fxy, double fyy, double dy, double t0, double vx0, double vy0, int n)
{
    double qrow = (fxx * fyy - fxy * fxy) * dy * dy / fxx;  /* min of Q along the row */
    double tn = t0 + (double)(n - 1);
    double vxn = vx0 + fxx * (double)(n - 1), vyn = vy0 + fxy * (double)(n - 1);
    double ta = fabs(t0) + 0.5, tb = fabs(tn) + 0.5;
    double tm = ta > tb ? ta : tb;
    double vm = fabs(vx0);
    if (fabs(vxn) > vm) vm = fabs(vxn);
    if (fabs(vy0) > vm) vm = fabs(vy0);
    if (fabs(vyn) > vm) vm = fabs(vyn);
    return 0.5 * fxx * tm * tm > PHO_EXPARG_MAX || 0.5 * vm > PHO_EXPARG_MAX || 0.5 * qrow > PHO_EXPARG_MAX;
}

/* A row segment's frame (dx0 = j0 - x0, dy = i - y0): t0 (first pixel's offset from the row's peak),
   c0 (the peak's offset from x0) and beta. */
PHO_FN void pho_row_frame(const double *gs, const double *tab, double dx0, double dy, double *t0_out,
                          double *c0_out, double *beta_out)
{
    double c0 = -gs[4] * dy * tab[2];
    *c0_out = c0;
    *beta_out = tab[3] * dy;
    *t0_out = dx0 - c0;
}

/* Fill e[0..n) with a exp(-Q/2) at the pixel centres of a row segment and return its frame
   (pho_row_frame). */
PHO_FN void pho_row_centre(const double *gs, const double *tab, double dx0, double dy, int n, double a,
                           double *e, double *t0_out, double *c0_out, double *beta_out)
{
    pho_row_frame(gs, tab, dx0, dy, t0_out, c0_out, beta_out);
    pho_row_gauss(gs[3], *t0_out, n, tab[0], tab[1], a, 0.5 * (*beta_out) * dy, e);
}

/* exp(-u[c] v) for the n Gauss-Legendre nodes (symmetric: u[n-1-c] = -u[c]), with ceil(n/2) exp calls. */
PHO_FN void pho_node_factors(const double *u, int n, double v, double *f)
{
    int c;
    for (c = 0; c < n; c++) {
        if (2 * c + 1 > n) f[c] = 1.0 / f[n - 1 - c];
        else if (2 * c + 1 == n) f[c] = 1.0;
        else f[c] = exp(-u[c] * v);
    }
}

/* Gauss-Legendre part of a row segment, m x m nodes (m a compile-time constant at each call site of
   pho_gl_dispatch, so the node loops unroll and the pixel loop vectorizes). e[k]: a exp(-Q/2) at the pixel
   centres (render) or exp(-Q/2) (gradient). Render: out[k] += e[k] sum_bc K_bc X_c[k] Y_b[k]. Gradient:
   acc[0..5] += sums of w e times the node moments (see pho_gradient_segment). */
PHO_FN_INLINE void pho_gl_row(const double *tab, const double *u, const int m, double vx0, double vy0,
                              double fxx, double fxy, double fyy, double dx0, double dy, double a, int n,
                              const double *e, double *out, const double *w, double *acc)
{
    double xs[PHO_MAX_ORDER][PHO_SEG], ys[PHO_MAX_ORDER][PHO_SEG];
    double fx[PHO_MAX_ORDER], fy[PHO_MAX_ORDER];
    const double *kt = tab + PHO_TK;
    int b, c, k;
    pho_node_factors(u, m, vx0, fx);
    pho_node_factors(u, m, vy0, fy);
    for (c = 0; c < m; c++) pho_row_geom(fx[c], tab[PHO_TX + c], n, xs[c]);
    for (b = 0; b < m; b++) pho_row_geom(fy[b], tab[PHO_TY + b], n, ys[b]);
    if (out || m * m <= 16) {
        /* render, and the gradient for few nodes: one pass over the row, all m^2 nodes in the pixel loop */
        if (out) {
            for (k = 0; k < n; k++) {
                double v = 0.0;
                for (b = 0; b < m; b++) {
                    double sb = 0.0;
                    for (c = 0; c < m; c++) sb += kt[b * PHO_MAX_ORDER + c] * xs[c][k];
                    v += ys[b][k] * sb;
                }
                out[k] += e[k] * v;
            }
        } else {
            double r0 = 0.0, r1 = 0.0, r2 = 0.0, r3 = 0.0, r4 = 0.0, r5 = 0.0;
            PHO_SIMD_SUM(r0, r1, r2, r3, r4, r5)
            for (k = 0; k < n; k++) {
                double m0 = 0.0, m1 = 0.0, m2 = 0.0, m3 = 0.0, m4 = 0.0, m5 = 0.0;
                double q = w[k] * e[k];
                double dx = dx0 + (double)k;
                double vx = fxx * dx + fxy * dy, vy = fxy * dx + fyy * dy;
                for (b = 0; b < m; b++) {
                    double s0 = 0.0, s1 = 0.0, s2 = 0.0, y = ys[b][k];
                    for (c = 0; c < m; c++) {
                        double t = kt[b * PHO_MAX_ORDER + c] * xs[c][k];
                        s0 += t;
                        s1 += t * u[c];
                        s2 += t * (u[c] * u[c]);
                    }
                    m0 += y * s0;
                    m1 += y * s1;
                    m2 += (y * u[b]) * s0;
                    m3 += y * s2;
                    m4 += (y * u[b]) * s1;
                    m5 += (y * (u[b] * u[b])) * s0;
                }
                r0 += q * m0;
                r1 += q * (vx * m0 + fxx * m1 + fxy * m2);
                r2 += q * (vy * m0 + fxy * m1 + fyy * m2);
                r3 += q * (dx * dx * m0 + 2.0 * dx * m1 + m3);
                r4 += q * (dx * dy * m0 + dx * m2 + dy * m1 + m4);
                r5 += q * (dy * dy * m0 + 2.0 * dy * m2 + m5);
            }
            acc[0] += r0;
            acc[1] += a * r1;
            acc[2] += a * r2;
            acc[3] += -0.5 * a * r3;
            acc[4] += -a * r4;
            acc[5] += -0.5 * a * r5;
        }
        return;
    }
    /* gradient with many nodes: one pass over the row per y node b, each with an unrolled loop over the
       x nodes c (a full unroll of all m^2 nodes and six sums inside one pixel loop exceeds the compiler's
       unrolling limits for m > 4 and ran 2x slower) */
    {
        /* M0..M5[k] = sum_bc K_bc X_c Y_b {1, u_c, u_b, u_c^2, u_c u_b, u_b^2} at pixel k */
        double M[6][PHO_SEG];
        double r0 = 0.0, r1 = 0.0, r2 = 0.0, r3 = 0.0, r4 = 0.0, r5 = 0.0;
        for (b = 0; b < 6; b++)
            for (k = 0; k < n; k++) M[b][k] = 0.0;
        for (b = 0; b < m; b++) {
            const double *kb = kt + b * PHO_MAX_ORDER;
            const double *y = ys[b];
            double ub = u[b], ub2 = u[b] * u[b];
            for (k = 0; k < n; k++) {
                double s0 = 0.0, s1 = 0.0, s2 = 0.0, yk = y[k];
                for (c = 0; c < m; c++) {
                    double t = kb[c] * xs[c][k];
                    s0 += t;
                    s1 += t * u[c];
                    s2 += t * (u[c] * u[c]);
                }
                M[0][k] += yk * s0;
                M[1][k] += yk * s1;
                M[2][k] += (yk * ub) * s0;
                M[3][k] += yk * s2;
                M[4][k] += (yk * ub) * s1;
                M[5][k] += (yk * ub2) * s0;
            }
        }
        PHO_SIMD_SUM(r0, r1, r2, r3, r4, r5)
        for (k = 0; k < n; k++) {
            double q = w[k] * e[k];
            double dx = dx0 + (double)k;
            double vx = fxx * dx + fxy * dy, vy = fxy * dx + fyy * dy;
            double m0 = M[0][k], m1 = M[1][k], m2 = M[2][k];
            r0 += q * m0;
            r1 += q * (vx * m0 + fxx * m1 + fxy * m2);
            r2 += q * (vy * m0 + fxy * m1 + fyy * m2);
            r3 += q * (dx * dx * m0 + 2.0 * dx * m1 + M[3][k]);
            r4 += q * (dx * dy * m0 + dx * m2 + dy * m1 + M[4][k]);
            r5 += q * (dy * dy * m0 + 2.0 * dy * m2 + M[5][k]);
        }
        acc[0] += r0;
        acc[1] += a * r1;
        acc[2] += a * r2;
        acc[3] += -0.5 * a * r3;
        acc[4] += -a * r4;
        acc[5] += -0.5 * a * r5;
    }
}

/* Calls pho_gl_row with the order as a literal constant (one unrolled copy per order). */
PHO_FN void pho_gl_dispatch(const double *tab, const double *u, int m, double vx0, double vy0, double fxx,
                            double fxy, double fyy, double dx0, double dy, double a, int n, const double *e,
                            double *out, const double *w, double *acc)
{
    switch (m) {
    case 1: pho_gl_row(tab, u, 1, vx0, vy0, fxx, fxy, fyy, dx0, dy, a, n, e, out, w, acc); break;
    case 2: pho_gl_row(tab, u, 2, vx0, vy0, fxx, fxy, fyy, dx0, dy, a, n, e, out, w, acc); break;
    case 3: pho_gl_row(tab, u, 3, vx0, vy0, fxx, fxy, fyy, dx0, dy, a, n, e, out, w, acc); break;
    case 4: pho_gl_row(tab, u, 4, vx0, vy0, fxx, fxy, fyy, dx0, dy, a, n, e, out, w, acc); break;
    case 5: pho_gl_row(tab, u, 5, vx0, vy0, fxx, fxy, fyy, dx0, dy, a, n, e, out, w, acc); break;
    case 6: pho_gl_row(tab, u, 6, vx0, vy0, fxx, fxy, fyy, dx0, dy, a, n, e, out, w, acc); break;
    case 7: pho_gl_row(tab, u, 7, vx0, vy0, fxx, fxy, fyy, dx0, dy, a, n, e, out, w, acc); break;
    default: pho_gl_row(tab, u, PHO_MAX_ORDER, vx0, vy0, fxx, fxy, fyy, dx0, dy, a, n, e, out, w, acc); break;
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Fourth-order correction along a row. With t the offset from the row's peak (as for order 0), Vx = Fxx t,
   Vy = Fxy t + beta and dx = t + c0 are linear in t, so the bracket B and every partial's factor are
   polynomials in t (degree <= 6): render is a Horner step per pixel, the gradient seven moment sums
   T_k = sum w e t^k per row, combined with the coefficients below once per row. Polynomials are
   coefficient arrays of PHO_PLEN entries, lowest degree first. */
#define PHO_PLEN 7

/* out[0..la+lb-1) += s a b (a has la coefficients, b has lb; la + lb - 1 <= PHO_PLEN). */
PHO_FN void pho_p_muladd(double s, const double *a, int la, const double *b, int lb, double *out)
{
    int i, j;
    for (i = 0; i < la; i++)
        for (j = 0; j < lb; j++) out[i + j] += s * a[i] * b[j];
}

/* out[0..l) += s a */
PHO_FN void pho_p_add(double s, const double *a, int l, double *out)
{
    int i;
    for (i = 0; i < l; i++) out[i] += s * a[i];
}

/* The bracket B(t) (5 coefficients) and, if grad != 0, the six partial factors G_c(t) (PHO_PLEN
   coefficients each, grad[c * PHO_PLEN + k]) with dI/d(column c) = A e G_c (c >= 1), e B (c = 0). */
PHO_FN void pho_fo_row_poly(double fxx, double fxy, double fyy, double beta, double c0, double dy,
                            double *bp, double *grad)
{
    double vx[2], vy[2], px[3], py[3], rx[5], ry[5], cxy[5], vx2[3], vy2[3];
    double bvx[4], bvy[4], bfxx[3], bfyy[3], bfxy[3], dxp[2], dx2[3];
    int k;
    for (k = 0; k < 5; k++) { rx[k] = 0.0; ry[k] = 0.0; cxy[k] = 0.0; bp[k] = 0.0; }
    vx[0] = 0.0; vx[1] = fxx;
    vy[0] = beta; vy[1] = fxy;
    vx2[0] = 0.0; vx2[1] = 0.0; vx2[2] = fxx * fxx;
    vy2[0] = beta * beta; vy2[1] = 2.0 * beta * fxy; vy2[2] = fxy * fxy;
    px[0] = -fxx; px[1] = 0.0; px[2] = vx2[2];
    py[0] = vy2[0] - fyy; py[1] = vy2[1]; py[2] = vy2[2];
    pho_p_muladd(1.0, px, 3, px, 3, rx);
    pho_p_add(-4.0 * fxx, vx2, 3, rx);
    rx[0] += 2.0 * fxx * fxx;
    pho_p_muladd(1.0, py, 3, py, 3, ry);
    pho_p_add(-4.0 * fyy, vy2, 3, ry);
    ry[0] += 2.0 * fyy * fyy;
    pho_p_muladd(1.0, px, 3, py, 3, cxy);
    pho_p_muladd(-4.0 * fxy, vx, 2, vy, 2, cxy);
    cxy[0] += 2.0 * fxy * fxy;
    bp[0] = 1.0;
    pho_p_add(1.0 / 24.0, px, 3, bp);
    pho_p_add(1.0 / 24.0, py, 3, bp);
    pho_p_add(1.0 / 1920.0, rx, 5, bp);
    pho_p_add(1.0 / 1920.0, ry, 5, bp);
    pho_p_add(1.0 / 576.0, cxy, 5, bp);
    if (!grad) return;
    for (k = 0; k < 4; k++) { bvx[k] = 0.0; bvy[k] = 0.0; }
    for (k = 0; k < 3; k++) { bfxx[k] = 0.0; bfyy[k] = 0.0; bfxy[k] = 0.0; }
    /* B's partials: b_vx = Vx/12 + (4 Vx Px - 8 Fxx Vx)/1920 + (2 Vx Py - 4 Fxy Vy)/576, likewise b_vy */
    pho_p_add(1.0 / 12.0 - 8.0 * fxx / 1920.0, vx, 2, bvx);
    pho_p_muladd(4.0 / 1920.0, vx, 2, px, 3, bvx);
    pho_p_muladd(2.0 / 576.0, vx, 2, py, 3, bvx);
    pho_p_add(-4.0 * fxy / 576.0, vy, 2, bvx);
    pho_p_add(1.0 / 12.0 - 8.0 * fyy / 1920.0, vy, 2, bvy);
    pho_p_muladd(4.0 / 1920.0, vy, 2, py, 3, bvy);
    pho_p_muladd(2.0 / 576.0, vy, 2, px, 3, bvy);
    pho_p_add(-4.0 * fxy / 576.0, vx, 2, bvy);
    /* explicit F terms: b_fxx = -1/24 + (6 Fxx - 6 Vx^2)/1920 - Py/576, b_fxy = (4 Fxy - 4 Vx Vy)/576 */
    bfxx[0] = -1.0 / 24.0 + 6.0 * fxx / 1920.0;
    pho_p_add(-6.0 / 1920.0, vx2, 3, bfxx);
    pho_p_add(-1.0 / 576.0, py, 3, bfxx);
    bfyy[0] = -1.0 / 24.0 + 6.0 * fyy / 1920.0;
    pho_p_add(-6.0 / 1920.0, vy2, 3, bfyy);
    pho_p_add(-1.0 / 576.0, px, 3, bfyy);
    bfxy[0] = 4.0 * fxy / 576.0;
    pho_p_muladd(-4.0 / 576.0, vx, 2, vy, 2, bfxy);
    dxp[0] = c0; dxp[1] = 1.0;
    dx2[0] = c0 * c0; dx2[1] = 2.0 * c0; dx2[2] = 1.0;
    for (k = 0; k < 6 * PHO_PLEN; k++) grad[k] = 0.0;
    /* G0 = B */
    pho_p_add(1.0, bp, 5, grad);
    /* G1 = B Vx - (b_vx Fxx + b_vy Fxy);  G2 = B Vy - (b_vx Fxy + b_vy Fyy) */
    pho_p_muladd(1.0, bp, 5, vx, 2, grad + PHO_PLEN);
    pho_p_add(-fxx, bvx, 4, grad + PHO_PLEN);
    pho_p_add(-fxy, bvy, 4, grad + PHO_PLEN);
    pho_p_muladd(1.0, bp, 5, vy, 2, grad + 2 * PHO_PLEN);
    pho_p_add(-fxy, bvx, 4, grad + 2 * PHO_PLEN);
    pho_p_add(-fyy, bvy, 4, grad + 2 * PHO_PLEN);
    /* G3 = -dx^2 B / 2 + b_vx dx + b_fxx */
    pho_p_muladd(-0.5, bp, 5, dx2, 3, grad + 3 * PHO_PLEN);
    pho_p_muladd(1.0, bvx, 4, dxp, 2, grad + 3 * PHO_PLEN);
    pho_p_add(1.0, bfxx, 3, grad + 3 * PHO_PLEN);
    /* G4 = -dx dy B + b_vx dy + b_vy dx + b_fxy */
    pho_p_muladd(-dy, bp, 5, dxp, 2, grad + 4 * PHO_PLEN);
    pho_p_add(dy, bvx, 4, grad + 4 * PHO_PLEN);
    pho_p_muladd(1.0, bvy, 4, dxp, 2, grad + 4 * PHO_PLEN);
    pho_p_add(1.0, bfxy, 3, grad + 4 * PHO_PLEN);
    /* G5 = -dy^2 B / 2 + b_vy dy + b_fyy */
    pho_p_add(-0.5 * dy * dy, bp, 5, grad + 5 * PHO_PLEN);
    pho_p_add(dy, bvy, 4, grad + 5 * PHO_PLEN);
    pho_p_add(1.0, bfyy, 3, grad + 5 * PHO_PLEN);
}

/* T[k] += sum_j w[j] e[j] (t0 + j)^k for k <= deg (4 or 6), j < n: a row segment's moments, summed
   with one partial sum per SIMD lane. */
PHO_FN_INLINE void pho_row_moments(const double *w, const double *e, double t0, int n, int deg, double *T)
{
    double T0 = 0.0, T1 = 0.0, T2 = 0.0, T3 = 0.0, T4 = 0.0, T5 = 0.0, T6 = 0.0;
    int k;
    if (deg == 4) {
        PHO_SIMD_SUM(T0, T1, T2, T3, T4)
        for (k = 0; k < n; k++) {
            double t = t0 + (double)k;
            double q = w[k] * e[k];
            T0 += q; q *= t;
            T1 += q; q *= t;
            T2 += q; q *= t;
            T3 += q; q *= t;
            T4 += q;
        }
    } else {
        PHO_SIMD_SUM(T0, T1, T2, T3, T4, T5, T6)
        for (k = 0; k < n; k++) {
            double t = t0 + (double)k;
            double q = w[k] * e[k];
            T0 += q; q *= t;
            T1 += q; q *= t;
            T2 += q; q *= t;
            T3 += q; q *= t;
            T4 += q; q *= t;
            T5 += q; q *= t;
            T6 += q;
        }
        T[5] += T5;
        T[6] += T6;
    }
    T[0] += T0;
    T[1] += T1;
    T[2] += T2;
    T[3] += T3;
    T[4] += T4;
}

/* The render's output for one row segment from its exponentials: out[k] += A e[k] times the rule's row
   factor (order 0: the second-order bracket; PHO_ORDER_FOURTH: B; n: the Gauss-Legendre node sum), with
   e[k] = exp(-Q/2) at the pixel centres (without A) and the segment's frame t0, c0, beta (pho_row_frame). */
PHO_FN void pho_render_from_e(const double *gs, int order, const double *nodes, const double *tab, double dx0,
                              double dy, int n, const double *e, double t0, double c0, double beta, double *out)
{
    double a = gs[0], fxx = gs[3], fxy = gs[4], fyy = gs[5];
    int k;
    if (order == PHO_ORDER_FOURTH) {
        double bp[5];
        pho_fo_row_poly(fxx, fxy, fyy, beta, c0, dy, bp, 0);
        for (k = 0; k < 5; k++) bp[k] *= a;
        for (k = 0; k < n; k++) {
            double t = t0 + (double)k;
            out[k] += e[k] * (bp[0] + t * (bp[1] + t * (bp[2] + t * (bp[3] + t * bp[4]))));
        }
        return;
    }
    if (order == 0) {
        double h0 = a * (1.0 + (beta * beta - fxx - fyy) * (1.0 / 24.0));
        double h1 = a * (fxy * beta * (1.0 / 12.0));
        double h2 = a * ((fxx * fxx + fxy * fxy) * (1.0 / 24.0));
        for (k = 0; k < n; k++) {
            double t = t0 + (double)k;
            out[k] += e[k] * (h0 + t * (h1 + t * h2));
        }
        return;
    }
    {
        double ea[PHO_SEG];
        double vx0 = fxx * dx0 + fxy * dy, vy0 = fxy * dx0 + fyy * dy;
        for (k = 0; k < n; k++) ea[k] = a * e[k];
        pho_gl_dispatch(tab, nodes + order * PHO_MAX_ORDER, order, vx0, vy0, fxx, fxy, fyy, dx0, dy, a, n, ea, out,
                        0, 0);
    }
}

/* Render one Gaussian on one row segment: out[k] += I(pixel j0 + k), k < n <= PHO_SEG.
   dx0 = j0 - x0, dy = i - y0 (pixel centres). tab from pho_gauss_table. If keep != 0, the segment's
   exp(-Q/2) at the pixel centres (without A) is written to keep[0..n) for pho_gradient_segment_kept
   (except on a segment taken point by point, which that function recomputes the same way). */
PHO_FN int pho_render_segment_keep(const double *gs, int order, const double *nodes, const double *wts,
                                   const double *tab, double dx0, double dy, int n, double *out, double *keep)
{
    double a = gs[0], fxx = gs[3], fxy = gs[4], fyy = gs[5];
    double ebuf[PHO_SEG];
    double *e = (keep && n >= PHO_LANES) ? keep : ebuf;  /* pho_row_gauss writes at least PHO_LANES */
    double t0, c0, beta;
    int k;
    double vx0 = fxx * dx0 + fxy * dy, vy0 = fxy * dx0 + fyy * dy;
    if (order < 0 || order > PHO_MAX_ORDER) return PHO_ERR_ORDER;
    if (n <= 0) return PHO_OK;
    if (pho_seg_extreme(fxx, fxy, fyy, dy, dx0 + fxy * dy / fxx, vx0, vy0, n)) {
        const double *u = nodes + order * PHO_MAX_ORDER;
        const double *wt = wts + order * PHO_MAX_ORDER;
        for (k = 0; k < n; k++) {
            if (order == 0) out[k] += pho_so_point(a, fxx, fxy, fyy, dx0 + k, dy, 0.0, 0);
            else if (order == PHO_ORDER_FOURTH) out[k] += pho_fo_point(a, fxx, fxy, fyy, dx0 + k, dy, 0.0, 0);
            else out[k] += pho_gl_point(a, fxx, fxy, fyy, dx0 + k, dy, order, u, wt, 0.0, 0);
        }
        return PHO_OK;
    }
    /* exp(-Q/2) without A (so that the gradient pass can reuse it); A goes into the row's coefficients */
    pho_row_centre(gs, tab, dx0, dy, n, 1.0, e, &t0, &c0, &beta);
    if (keep && e != keep)
        for (k = 0; k < n; k++) keep[k] = e[k];
    pho_render_from_e(gs, order, nodes, tab, dx0, dy, n, e, t0, c0, beta, out);
    return PHO_OK;
}

PHO_FN int pho_render_segment(const double *gs, int order, const double *nodes, const double *wts,
                              const double *tab, double dx0, double dy, int n, double *out)
{
    return pho_render_segment_keep(gs, order, nodes, wts, tab, dx0, dy, n, out, 0);
}

/* Gradient of one Gaussian on one row segment: acc[0..5] += sum_k w[k] dI(j0 + k)/d(A, x0, y0, Fxx, Fxy, Fyy).
   w must hold at least n entries. */
PHO_FN int pho_gradient_segment_kept(const double *gs, int order, const double *nodes, const double *wts,
                                     const double *tab, double dx0, double dy, int n, const double *w,
                                     const double *kept, double *acc)
{
    double a = gs[0], fxx = gs[3], fxy = gs[4], fyy = gs[5];
    double ebuf[PHO_SEG];
    const double *e = ebuf;
    double t0, c0, beta;
    int k;
    double vx0 = fxx * dx0 + fxy * dy, vy0 = fxy * dx0 + fyy * dy;
    if (order < 0 || order > PHO_MAX_ORDER) return PHO_ERR_ORDER;
    if (n <= 0) return PHO_OK;
    if (pho_seg_extreme(fxx, fxy, fyy, dy, dx0 + fxy * dy / fxx, vx0, vy0, n)) {
        const double *u = nodes + order * PHO_MAX_ORDER;
        const double *wt = wts + order * PHO_MAX_ORDER;
        for (k = 0; k < n; k++) {
            if (order == 0) pho_so_point(a, fxx, fxy, fyy, dx0 + k, dy, w[k], acc);
            else if (order == PHO_ORDER_FOURTH) pho_fo_point(a, fxx, fxy, fyy, dx0 + k, dy, w[k], acc);
            else pho_gl_point(a, fxx, fxy, fyy, dx0 + k, dy, order, u, wt, w[k], acc);
        }
        return PHO_OK;
    }
    if (kept) {
        pho_row_frame(gs, tab, dx0, dy, &t0, &c0, &beta);
        e = kept;
    } else {
        pho_row_centre(gs, tab, dx0, dy, n, 1.0, ebuf, &t0, &c0, &beta);
    }
    if (order == PHO_ORDER_FOURTH) {
        /* moments T_k = sum w e t^k (k <= 6), then the row's polynomial factors */
        double bp[5], gp[6 * PHO_PLEN], T[PHO_PLEN] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        int c, j;
        pho_row_moments(w, e, t0, n, 6, T);
        pho_fo_row_poly(fxx, fxy, fyy, beta, c0, dy, bp, gp);
        for (c = 0; c < 6; c++) {
            double s = 0.0;
            for (j = 0; j < PHO_PLEN; j++) s += gp[c * PHO_PLEN + j] * T[j];
            acc[c] += c == 0 ? s : a * s;
        }
        return PHO_OK;
    }
    if (order == 0) {
        /* moments T_k = sum w e t^k (k <= 4), then the row's polynomial coefficients */
        double T[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
        double T0, T1, T2, T3, T4, h0, h1, h2, p0, p1, p2, p3, p4;
        pho_row_moments(w, e, t0, n, 4, T);
        T0 = T[0]; T1 = T[1]; T2 = T[2]; T3 = T[3]; T4 = T[4];
        /* h(t) = h0 + h1 t + h2 t^2;  Vx = fxx t;  Vy = fxy t + beta;  dx = t + c0 */
        h0 = 1.0 + (beta * beta - fxx - fyy) * (1.0 / 24.0);
        h1 = fxy * beta * (1.0 / 12.0);
        h2 = (fxx * fxx + fxy * fxy) * (1.0 / 24.0);
        /* dA: sum w e h */
        acc[0] += h0 * T0 + h1 * T1 + h2 * T2;
        /* dx0: A sum w e [h fxx t - ((fxx^2 + fxy^2) t + fxy beta) / 12] */
        p0 = -fxy * beta * (1.0 / 12.0);
        p1 = fxx * h0 - (fxx * fxx + fxy * fxy) * (1.0 / 12.0);
        p2 = fxx * h1;
        p3 = fxx * h2;
        acc[1] += a * (p0 * T0 + p1 * T1 + p2 * T2 + p3 * T3);
        /* dy0: A sum w e [h (fxy t + beta) - (fxy (fxx + fyy) t + fyy beta) / 12] */
        p0 = h0 * beta - fyy * beta * (1.0 / 12.0);
        p1 = h0 * fxy + h1 * beta - fxy * (fxx + fyy) * (1.0 / 12.0);
        p2 = h1 * fxy + h2 * beta;
        p3 = h2 * fxy;
        acc[2] += a * (p0 * T0 + p1 * T1 + p2 * T2 + p3 * T3);
        /* dFxx: A sum w e [-h dx^2 / 2 + (2 fxx t dx - 1) / 24], dx^2 = t^2 + 2 c0 t + c0^2 */
        {
            double d0 = c0 * c0, d1 = 2.0 * c0;
            p0 = -0.5 * (h0 * d0) - 1.0 * (1.0 / 24.0);
            p1 = -0.5 * (h0 * d1 + h1 * d0) + fxx * c0 * (1.0 / 12.0);
            p2 = -0.5 * (h0 + h1 * d1 + h2 * d0) + fxx * (1.0 / 12.0);
            p3 = -0.5 * (h1 + h2 * d1);
            p4 = -0.5 * h2;
            acc[3] += a * (p0 * T0 + p1 * T1 + p2 * T2 + p3 * T3 + p4 * T4);
        }
        /* dFxy: A sum w e [-h dx dy + (Vx dy + Vy dx) / 12],
           Vx dy + Vy dx = fxy t^2 + (fxx dy + fxy c0 + beta) t + beta c0 */
        p0 = -h0 * c0 * dy + beta * c0 * (1.0 / 12.0);
        p1 = -(h0 + h1 * c0) * dy + (fxx * dy + fxy * c0 + beta) * (1.0 / 12.0);
        p2 = -(h1 + h2 * c0) * dy + fxy * (1.0 / 12.0);
        p3 = -h2 * dy;
        acc[4] += a * (p0 * T0 + p1 * T1 + p2 * T2 + p3 * T3);
        /* dFyy: A sum w e [-h dy^2 / 2 + (2 Vy dy - 1) / 24] */
        p0 = -0.5 * h0 * dy * dy + (2.0 * beta * dy - 1.0) * (1.0 / 24.0);
        p1 = -0.5 * h1 * dy * dy + fxy * dy * (1.0 / 12.0);
        p2 = -0.5 * h2 * dy * dy;
        acc[5] += a * (p0 * T0 + p1 * T1 + p2 * T2);
        return PHO_OK;
    }
    pho_gl_dispatch(tab, nodes + order * PHO_MAX_ORDER, order, vx0, vy0, fxx, fxy, fyy, dx0, dy, a, n, e, 0, w, acc);
    return PHO_OK;
}

PHO_FN int pho_gradient_segment(const double *gs, int order, const double *nodes, const double *wts,
                                const double *tab, double dx0, double dy, int n, const double *w,
                                double *acc)
{
    return pho_gradient_segment_kept(gs, order, nodes, wts, tab, dx0, dy, n, w, 0, acc);
}

/* One Gaussian over pixels jlo..jhi of one row, in segments of PHO_SEG: out_row[j] += I(j) (render) or
   acc[0..5] += sum_j w_row[j] dI(j)/d(A, x0, y0, Fxx, Fxy, Fyy) (gradient). out_row and w_row point at
   pixel 0 of the row; dy = i - y0. Returns the last nonzero segment status (PHO_OK if none). The loop
   every backend runs per Gaussian and row. keep (render) and kept (gradient), if not 0, point at the
   row's jhi - jlo + 1 exponentials (pixel jlo first): the render writes them and the gradient reads them
   instead of computing them again (pho_render_segment_keep). */
PHO_FN int pho_render_span_keep(const double *gs, int order, const double *nodes, const double *wts,
                                const double *tab, long long jlo, long long jhi, double dy, double *out_row,
                                double *keep)
{
    int st = PHO_OK;
    long long js;
    for (js = jlo; js <= jhi; js += PHO_SEG) {
        long long n = jhi - js + 1;
        if (n > PHO_SEG) n = PHO_SEG;
        int s = pho_render_segment_keep(gs, order, nodes, wts, tab, (double)js - gs[1], dy, (int)n, out_row + js,
                                        keep ? keep + (js - jlo) : 0);
        if (s != PHO_OK) st = s;
    }
    return st;
}

PHO_FN int pho_gradient_span_kept(const double *gs, int order, const double *nodes, const double *wts,
                                  const double *tab, long long jlo, long long jhi, double dy, const double *w_row,
                                  const double *kept, double *acc)
{
    int st = PHO_OK;
    long long js;
    for (js = jlo; js <= jhi; js += PHO_SEG) {
        long long n = jhi - js + 1;
        if (n > PHO_SEG) n = PHO_SEG;
        int s = pho_gradient_segment_kept(gs, order, nodes, wts, tab, (double)js - gs[1], dy, (int)n, w_row + js,
                                          kept ? kept + (js - jlo) : 0, acc);
        if (s != PHO_OK) st = s;
    }
    return st;
}

PHO_FN int pho_render_span(const double *gs, int order, const double *nodes, const double *wts, const double *tab,
                           long long jlo, long long jhi, double dy, double *out_row)
{
    return pho_render_span_keep(gs, order, nodes, wts, tab, jlo, jhi, dy, out_row, 0);
}

PHO_FN int pho_gradient_span(const double *gs, int order, const double *nodes, const double *wts, const double *tab,
                             long long jlo, long long jhi, double dy, const double *w_row, double *acc)
{
    return pho_gradient_span_kept(gs, order, nodes, wts, tab, jlo, jhi, dy, w_row, 0, acc);
}

/* May a box's rows be taken by the recurrence of pho_render_box_keep? Yes where every value in the box is
   a normal number and the node factors cannot overflow: Q/2, |Vx|/2 and |Vy|/2 at most PHO_EXPARG_MAX at
   the four corners (Q is convex, V and t linear, so nowhere in the box larger), and no row segment of
   the box is one pho_seg_extreme takes point by point (its test on Fxx (|t| + 1/2)^2 / 2, t the offset
   from the row's peak, at the corners). Then pho_render_span_keep also keeps every exponential of the
   box, so pho_gradient_box_kept (which asks the same) may read them after either render. */
PHO_FN int pho_box_recurrence_ok(const double *gs, long long jlo, long long jhi, long long ilo, long long ihi)
{
    double x0 = gs[1], y0 = gs[2], fxx = gs[3], fxy = gs[4], fyy = gs[5], worst = 0.0;
    int c;
    for (c = 0; c < 4; c++) {
        double dx = (double)(c & 1 ? jhi : jlo) - x0, dy = (double)(c & 2 ? ihi : ilo) - y0;
        double vx = fxx * dx + fxy * dy, vy = fxy * dx + fyy * dy;
        double q = 0.5 * (dx * vx + dy * vy), t = fabs(dx + fxy * dy / fxx) + 0.5;
        if (q > worst || q != q) worst = q;
        if (0.5 * fabs(vx) > worst) worst = 0.5 * fabs(vx);
        if (0.5 * fabs(vy) > worst) worst = 0.5 * fabs(vy);
        if (0.5 * fxx * t * t > worst) worst = 0.5 * fxx * t * t;
    }
    return worst <= PHO_EXPARG_MAX;
}

/* Render one Gaussian over its whole box (columns jlo..jhi, rows ilo..ihi) into img (pixel (0, 0) first,
   rows `stride` apart) and write exp(-Q/2) of every box pixel to keep (row-major, jhi - jlo + 1 per row),
   for pho_gradient_box_kept. Where pho_box_recurrence_ok, a row's exponentials come from the
   previous row's: e(i + 1, j) = e(i, j) U_i(j), U_i(j) = exp(-(Fxy dx_j + Fyy (dy_i + 1/2))),
   U_{i+1} = U_i exp(-Fyy), with no exp call; every PHO_BOX_RESTART rows they are computed afresh as in
   pho_render_segment_keep (relative error of the recurrence below 1e-13 in between). Otherwise row by
   row (pho_render_span_keep). Returns the last nonzero status (PHO_OK if none). */
#define PHO_BOX_RESTART 8

PHO_FN int pho_render_box_keep(const double *gs, int order, const double *nodes, const double *wts,
                               const double *tab, long long jlo, long long jhi, long long ilo, long long ihi,
                               double *img, long long stride, double *keep)
{
    double x0 = gs[1], y0 = gs[2], fxy = gs[4], fyy = gs[5];
    long long W = jhi - jlo + 1, i, js;
    double kappa, rho;
    int st = PHO_OK;
    if (order < 0 || order > PHO_MAX_ORDER) return PHO_ERR_ORDER;
    if (W <= 0 || ihi < ilo) return PHO_OK;
    if (!pho_box_recurrence_ok(gs, jlo, jhi, ilo, ihi)) {
        for (i = ilo; i <= ihi; i++) {
            int s = pho_render_span_keep(gs, order, nodes, wts, tab, jlo, jhi, (double)i - y0, img + i * stride,
                                         keep + (i - ilo) * W);
            if (s != PHO_OK) st = s;
        }
        return st;
    }
    kappa = exp(-fyy);
    rho = exp(-fxy);
    for (js = jlo; js <= jhi; js += PHO_SEG) {
        int n = (int)(jhi - js + 1 < PHO_SEG ? jhi - js + 1 : PHO_SEG), k;
        double dx0 = (double)js - x0;
        double U[PHO_SEG], ebuf[PHO_SEG];
        const double *prev = 0;
        for (i = ilo; i <= ihi; i++) {
            double dy = (double)i - y0, t0, c0, beta;
            double *e = keep + (i - ilo) * W + (js - jlo);
            if ((i - ilo) % PHO_BOX_RESTART == 0) {
                pho_row_centre(gs, tab, dx0, dy, n, 1.0, ebuf, &t0, &c0, &beta);
                for (k = 0; k < n; k++) e[k] = ebuf[k];
                pho_row_geom(exp(-(fxy * dx0 + fyy * (dy + 0.5))), rho, n, U);
            } else {
                pho_row_frame(gs, tab, dx0, dy, &t0, &c0, &beta);
                for (k = 0; k < n; k++) {
                    e[k] = prev[k] * U[k];
                    U[k] *= kappa;
                }
            }
            pho_render_from_e(gs, order, nodes, tab, dx0, dy, n, e, t0, c0, beta, img + i * stride + js);
            prev = e;
        }
    }
    return st;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Gradient of a whole box from the kept exponentials, by moments.                                      */
/* With t = dx - c0 the offset from each row's peak (c0 = -Fxy dy / Fxx, as in the rows above), Vx = Fxx t,
   Vy = Fxy t + (det F / Fxx) dy and dx = t + c0 are linear in (t, dy), so the factor of every partial in
   the second- and fourth-order rules is a polynomial in (t, dy) of total degree <= 4 (second order) or
   <= 6 (fourth). The box's gradient is then sum_km G_c[k][m] M[k][m] with the moments
   M[k][m] = sum over the box of w e t^k dy^m: per row, the sums T_k = sum w e t^k (vectorized) are
   added to M[k][m] with dy^m, and the sums with the partials are formed once per Gaussian, not per row
   (written out for the second-order rule in pho_gradient_box_kept; pho_box_fourth_sums for the fourth).
   Polynomials in (t, dy) are arrays P[k * PHO_BD + m], coefficient of t^k dy^m, k + m <= degree. */
#define PHO_BD 7

PHO_FN void pho_bp_zero(double *p)
{
    int k;
    for (k = 0; k < PHO_BD * PHO_BD; k++) p[k] = 0.0;
}

/* out += s a (a of degree <= da) */
PHO_FN void pho_bp_add(double s, const double *a, int da, double *out)
{
    int k, m;
    for (k = 0; k <= da; k++)
        for (m = 0; m + k <= da; m++) out[k * PHO_BD + m] += s * a[k * PHO_BD + m];
}

/* out += s a b (degrees da, db; da + db < PHO_BD) */
PHO_FN void pho_bp_muladd(double s, const double *a, int da, const double *b, int db, double *out)
{
    int k1, m1, k2, m2;
    for (k1 = 0; k1 <= da; k1++)
        for (m1 = 0; m1 + k1 <= da; m1++) {
            double c = s * a[k1 * PHO_BD + m1];
            if (c == 0.0) continue;
            for (k2 = 0; k2 <= db; k2++)
                for (m2 = 0; m2 + k2 <= db; m2++) out[(k1 + k2) * PHO_BD + m1 + m2] += c * b[k2 * PHO_BD + m2];
        }
}

/* sum_km p[k][m] M[k][m] over k + m <= d */
PHO_FN double pho_bp_dot(const double *p, const double *M, int d)
{
    int k, m;
    double s = 0.0;
    for (k = 0; k <= d; k++)
        for (m = 0; m + k <= d; m++) s += p[k * PHO_BD + m] * M[k * PHO_BD + m];
    return s;
}

/* out[k][m] = ct M[k + 1][m] + cdy M[k][m + 1] for k + m <= d - 1: the moments of t or dy times a
   polynomial, from those of the polynomial (sum_km p[k][m] (ct t + cdy dy)-shifted M = the dot of
   p (ct t + cdy dy) with M). */
PHO_FN void pho_bp_shift(const double *M, int d, double ct, double cdy, double *out)
{
    int k, m;
    for (k = 0; k < d; k++)
        for (m = 0; m + k < d; m++) out[k * PHO_BD + m] = ct * M[(k + 1) * PHO_BD + m] + cdy * M[k * PHO_BD + m + 1];
}

/* out[c] = sum over the box of w e G_c for the fourth-order rule's six partial factors G_c (as
   pho_fo_point: dI/d(column c) = A e G_c for c >= 1, e G_0 for c = 0), from the box's moments M (degree
   6). The factors are B and B's partials (polynomials in (t, dy) of degree <= 4) times Vx, Vy, dx, dy
   and their products; rather than forming those products, their factors shift the moments:
   sum_km (p Vx)[k][m] M[k][m] = sum_km p[k][m] Fxx M[k + 1][m], and so on (pho_bp_shift). */
PHO_FN void pho_box_fourth_sums(double fxx, double fxy, double fyy, const double *M, double *out)
{
    double vx[PHO_BD * PHO_BD], vy[PHO_BD * PHO_BD];
    double h[PHO_BD * PHO_BD], bvx[PHO_BD * PHO_BD], bvy[PHO_BD * PHO_BD], bfxx[PHO_BD * PHO_BD];
    double bfyy[PHO_BD * PHO_BD], bfxy[PHO_BD * PHO_BD];
    double mvx[PHO_BD * PHO_BD], mvy[PHO_BD * PHO_BD], mdx[PHO_BD * PHO_BD], mdy[PHO_BD * PHO_BD];
    double mdxdx[PHO_BD * PHO_BD], mdxdy[PHO_BD * PHO_BD], mdydy[PHO_BD * PHO_BD];
    double b = (fxx * fyy - fxy * fxy) / fxx, gam = -fxy / fxx;
    pho_bp_zero(vx); pho_bp_zero(vy);
    vx[1 * PHO_BD + 0] = fxx;                              /* Vx = Fxx t */
    vy[1 * PHO_BD + 0] = fxy;                              /* Vy = Fxy t + (det F / Fxx) dy */
    vy[0 * PHO_BD + 1] = b;
    pho_bp_zero(h); pho_bp_zero(bvx); pho_bp_zero(bvy); pho_bp_zero(bfxx); pho_bp_zero(bfyy); pho_bp_zero(bfxy);
    {
        double px[PHO_BD * PHO_BD], py[PHO_BD * PHO_BD];
        pho_bp_zero(px); pho_bp_zero(py);
        pho_bp_muladd(1.0, vx, 1, vx, 1, px);              /* Px = Vx^2 - Fxx, Py = Vy^2 - Fyy */
        px[0] -= fxx;
        pho_bp_muladd(1.0, vy, 1, vy, 1, py);
        py[0] -= fyy;
        /* B = 1 + (Px + Py) / 24 + (Rx + Ry) / 1920 + Cxy / 576, Rx = Px^2 - 4 Fxx Vx^2 + 2 Fxx^2 (likewise y),
           Cxy = Px Py - 4 Fxy Vx Vy + 2 Fxy^2 */
        h[0] = 1.0 + (2.0 * fxx * fxx + 2.0 * fyy * fyy) / 1920.0 + 2.0 * fxy * fxy / 576.0;
        pho_bp_add(1.0 / 24.0, px, 2, h);
        pho_bp_add(1.0 / 24.0, py, 2, h);
        pho_bp_muladd(1.0 / 1920.0, px, 2, px, 2, h);
        pho_bp_muladd(-4.0 * fxx / 1920.0, vx, 1, vx, 1, h);
        pho_bp_muladd(1.0 / 1920.0, py, 2, py, 2, h);
        pho_bp_muladd(-4.0 * fyy / 1920.0, vy, 1, vy, 1, h);
        pho_bp_muladd(1.0 / 576.0, px, 2, py, 2, h);
        pho_bp_muladd(-4.0 * fxy / 576.0, vx, 1, vy, 1, h);
        /* B_vx = Vx/12 + (4 Vx Px - 8 Fxx Vx)/1920 + (2 Vx Py - 4 Fxy Vy)/576, likewise B_vy */
        pho_bp_add(1.0 / 12.0 - 8.0 * fxx / 1920.0, vx, 1, bvx);
        pho_bp_muladd(4.0 / 1920.0, vx, 1, px, 2, bvx);
        pho_bp_muladd(2.0 / 576.0, vx, 1, py, 2, bvx);
        pho_bp_add(-4.0 * fxy / 576.0, vy, 1, bvx);
        pho_bp_add(1.0 / 12.0 - 8.0 * fyy / 1920.0, vy, 1, bvy);
        pho_bp_muladd(4.0 / 1920.0, vy, 1, py, 2, bvy);
        pho_bp_muladd(2.0 / 576.0, vy, 1, px, 2, bvy);
        pho_bp_add(-4.0 * fxy / 576.0, vx, 1, bvy);
        /* B_fxx = -1/24 + (6 Fxx - 6 Vx^2)/1920 - Py/576, B_fyy likewise, B_fxy = (4 Fxy - 4 Vx Vy)/576 */
        bfxx[0] = -1.0 / 24.0 + 6.0 * fxx / 1920.0;
        pho_bp_muladd(-6.0 / 1920.0, vx, 1, vx, 1, bfxx);
        pho_bp_add(-1.0 / 576.0, py, 2, bfxx);
        bfyy[0] = -1.0 / 24.0 + 6.0 * fyy / 1920.0;
        pho_bp_muladd(-6.0 / 1920.0, vy, 1, vy, 1, bfyy);
        pho_bp_add(-1.0 / 576.0, px, 2, bfyy);
        bfxy[0] = 4.0 * fxy / 576.0;
        pho_bp_muladd(-4.0 / 576.0, vx, 1, vy, 1, bfxy);
    }
    /* dx = t + gam dy (gam = -Fxy / Fxx, the row peak's offset per row) */
    pho_bp_shift(M, 6, fxx, 0.0, mvx);
    pho_bp_shift(M, 6, fxy, b, mvy);
    pho_bp_shift(M, 6, 1.0, gam, mdx);
    pho_bp_shift(M, 6, 0.0, 1.0, mdy);
    pho_bp_shift(mdx, 5, 1.0, gam, mdxdx);
    pho_bp_shift(mdx, 5, 0.0, 1.0, mdxdy);
    pho_bp_shift(mdy, 5, 0.0, 1.0, mdydy);
    /* G0 = B; G1 = B Vx - (B_vx Fxx + B_vy Fxy); G2 = B Vy - (B_vx Fxy + B_vy Fyy) (h holds B) */
    out[0] = pho_bp_dot(h, M, 4);
    out[1] = pho_bp_dot(h, mvx, 4) - fxx * pho_bp_dot(bvx, M, 3) - fxy * pho_bp_dot(bvy, M, 3);
    out[2] = pho_bp_dot(h, mvy, 4) - fxy * pho_bp_dot(bvx, M, 3) - fyy * pho_bp_dot(bvy, M, 3);
    /* G3 = -dx^2 B / 2 + B_vx dx + B_fxx; G4 = -dx dy B + B_vx dy + B_vy dx + B_fxy; G5 = -dy^2 B / 2 + B_vy dy + B_fyy */
    out[3] = -0.5 * pho_bp_dot(h, mdxdx, 4) + pho_bp_dot(bvx, mdx, 3) + pho_bp_dot(bfxx, M, 2);
    out[4] = -pho_bp_dot(h, mdxdy, 4) + pho_bp_dot(bvx, mdy, 3) + pho_bp_dot(bvy, mdx, 3) + pho_bp_dot(bfxy, M, 2);
    out[5] = -0.5 * pho_bp_dot(h, mdydy, 4) + pho_bp_dot(bvy, mdy, 3) + pho_bp_dot(bfyy, M, 2);
}

/* M[k][m] += T[k] dy^m for k + m <= deg: one row's moments into the box's (deg a literal at each call,
   so that the loops unroll; dy^m by repeated multiplication). */
PHO_FN_INLINE void pho_box_moments_add(double *M, const double *T, double dy, const int deg)
{
    double dyp[PHO_BD];
    int k, m;
    dyp[0] = 1.0;
    for (m = 1; m <= deg; m++) dyp[m] = dyp[m - 1] * dy;
    for (k = 0; k <= deg; k++)
        for (m = 0; m + k <= deg; m++) M[k * PHO_BD + m] += T[k] * dyp[m];
}

/* Gradient of one Gaussian over its whole box from the exponentials pho_render_box_keep kept: acc[0..5] +=
   sum over the box of w dI/d(A, x0, y0, Fxx, Fxy, Fyy). w points at pixel (0, 0) of the weights, rows
   `stride` apart; kept is the box's exponentials as pho_render_box_keep wrote them. Orders 0 and
   PHO_ORDER_FOURTH by the moments above where pho_render_box_keep took the recurrence (the same corner
   test); Gauss-Legendre orders and the rest row by row (pho_gradient_span_kept). */
PHO_FN int pho_gradient_box_kept(const double *gs, int order, const double *nodes, const double *wts,
                                 const double *tab, long long jlo, long long jhi, long long ilo, long long ihi,
                                 const double *w, long long stride, const double *kept, double *acc)
{
    double x0 = gs[1], y0 = gs[2], fxx = gs[3], fxy = gs[4], fyy = gs[5];
    long long W = jhi - jlo + 1, i, js;
    double M[PHO_BD * PHO_BD], g[6];
    int st = PHO_OK, c, deg;
    if (order < 0 || order > PHO_MAX_ORDER) return PHO_ERR_ORDER;
    if (W <= 0 || ihi < ilo) return PHO_OK;
    if (!pho_box_recurrence_ok(gs, jlo, jhi, ilo, ihi) || (order != 0 && order != PHO_ORDER_FOURTH)) {
        for (i = ilo; i <= ihi; i++) {
            int s = pho_gradient_span_kept(gs, order, nodes, wts, tab, jlo, jhi, (double)i - y0, w + i * stride,
                                           kept + (i - ilo) * W, acc);
            if (s != PHO_OK) st = s;
        }
        return st;
    }
    deg = order == 0 ? 4 : 6;
    pho_bp_zero(M);
    for (i = ilo; i <= ihi; i++) {
        double dy = (double)i - y0, c0 = -fxy * dy * tab[2];
        double T[PHO_BD] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        for (js = jlo; js <= jhi; js += PHO_SEG) {
            int n = (int)(jhi - js + 1 < PHO_SEG ? jhi - js + 1 : PHO_SEG);
            pho_row_moments(w + i * stride + js, kept + (i - ilo) * W + (js - jlo), ((double)js - x0) - c0, n, deg, T);
        }
        if (deg == 4) pho_box_moments_add(M, T, dy, 4);
        else pho_box_moments_add(M, T, dy, 6);
    }
    if (order == 0) {
        /* the second-order rule's partials (pho_gradient_segment's row coefficients, with beta = b dy and
           c0 = gam dy) collected by powers of t and dy: written out, as building them costs more than the
           rows of a small Gaussian */
        double b = (fxx * fyy - fxy * fxy) / fxx, gam = -fxy / fxx, a = gs[0];
        double H0 = 1.0 - (fxx + fyy) / 24.0, H0b = b * b / 24.0, H1 = fxy * b / 12.0;
        double h2 = (fxx * fxx + fxy * fxy) / 24.0, g2 = gam * gam;
#define PHO_M(k, m) M[(k) * PHO_BD + (m)]
        acc[0] += H0 * PHO_M(0, 0) + H0b * PHO_M(0, 2) + H1 * PHO_M(1, 1) + h2 * PHO_M(2, 0);
        acc[1] += a * (-(fxy * b / 12.0) * PHO_M(0, 1) + (fxx * H0 - (fxx * fxx + fxy * fxy) / 12.0) * PHO_M(1, 0)
                       + fxx * H0b * PHO_M(1, 2) + fxx * H1 * PHO_M(2, 1) + fxx * h2 * PHO_M(3, 0));
        acc[2] += a * ((H0 * b - fyy * b / 12.0) * PHO_M(0, 1) + H0b * b * PHO_M(0, 3)
                       + (fxy * H0 - fxy * (fxx + fyy) / 12.0) * PHO_M(1, 0) + (fxy * H0b + H1 * b) * PHO_M(1, 2)
                       + (H1 * fxy + h2 * b) * PHO_M(2, 1) + h2 * fxy * PHO_M(3, 0));
        acc[3] += a * (-PHO_M(0, 0) / 24.0 - 0.5 * H0 * g2 * PHO_M(0, 2) - 0.5 * H0b * g2 * PHO_M(0, 4)
                       + (-H0 * gam + fxx * gam / 12.0) * PHO_M(1, 1) + (-H0b * gam - 0.5 * H1 * g2) * PHO_M(1, 3)
                       + (-0.5 * H0 + fxx / 12.0) * PHO_M(2, 0) + (-0.5 * H0b - H1 * gam - 0.5 * h2 * g2) * PHO_M(2, 2)
                       - 0.5 * (H1 + 2.0 * h2 * gam) * PHO_M(3, 1) - 0.5 * h2 * PHO_M(4, 0));
        acc[4] += a * ((-H0 * gam + b * gam / 12.0) * PHO_M(0, 2) - H0b * gam * PHO_M(0, 4)
                       + (-H0 + (fxx + fxy * gam + b) / 12.0) * PHO_M(1, 1) + (-H0b - H1 * gam) * PHO_M(1, 3)
                       + (fxy / 12.0) * PHO_M(2, 0) - (H1 + h2 * gam) * PHO_M(2, 2) - h2 * PHO_M(3, 1));
        acc[5] += a * (-PHO_M(0, 0) / 24.0 + (-0.5 * H0 + b / 12.0) * PHO_M(0, 2) - 0.5 * H0b * PHO_M(0, 4)
                       + (fxy / 12.0) * PHO_M(1, 1) - 0.5 * H1 * PHO_M(1, 3) - 0.5 * h2 * PHO_M(2, 2));
#undef PHO_M
        return st;
    }
    pho_box_fourth_sums(fxx, fxy, fyy, M, g);
    acc[0] += g[0];
    for (c = 1; c < 6; c++) acc[c] += gs[0] * g[c];
    return st;
}

#endif /* PHO_KERNEL_H */
