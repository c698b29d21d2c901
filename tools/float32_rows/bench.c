/* bench.c: float64 vs float32 versions of pho's box render and box-moment gradient (kern.inc).
 * usage: bench STAMP ORDER(0|1) MODE(time|acc) [FTZ(0|1)] [ROUNDS] [SEED] [SMIN SMAX] [G] [QMIN] (tools/float32_rows/README.md)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xmmintrin.h>
#include <pmmintrin.h>

/* f64: pho as it is */
#define R double
#define S double
#define EXPS exp
#define IMG double
#define ACC double
#define LANES 4
#define SFX _d
#include "kern.inc"
/* f64 with 8 lanes */
#define R double
#define S double
#define EXPS exp
#define IMG double
#define ACC double
#define LANES 8
#define SFX _d8
#include "kern.inc"
/* f32 hybrid: float vectors / image / row accumulators, per-segment scalars and exp in double */
#define R float
#define S double
#define EXPS exp
#define IMG float
#define ACC float
#define LANES 8
#define SFX _f
#include "kern.inc"
/* f32 pure: everything float, expf */
#define R float
#define S float
#define EXPS expf
#define IMG float
#define ACC float
#define LANES 8
#define SFX _fp
#include "kern.inc"
/* f32 storage, f64 accumulation: float vectors, double image, double row accumulators */
#define R float
#define S double
#define EXPS exp
#define IMG double
#define ACC double
#define LANES 8
#define SFX _fd
#include "kern.inc"
/* f32 hybrid with 4 lanes (dependence distance 4 caps the vector length at 4) */
#define R float
#define S double
#define EXPS exp
#define IMG float
#define ACC float
#define LANES 4
#define SFX _f4
#include "kern.inc"

#define MAXG 128
#define BOX_NSIGMA 4.564787

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static unsigned long long rng = 88172645463325252ULL;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (rng >> 11) * (1.0 / 9007199254740992.0);
}
static double nrand(void)
{
    double u = urand(), v = urand();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2.0 * M_PI * v);
}

/* the workload: G Gaussians of one galaxy x PSF mixture, near the stamp centre */
static double QMIN = 0.45;
static int make_gaussians(int nx, int G, double smin, double smax, double *gs)
{
    int g;
    double th0 = 0.6;
    for (g = 0; g < G; g++) {
        double s1 = smin * pow(smax / smin, urand());      /* log-uniform major-axis sigma */
        double q = QMIN + (1.0 - QMIN) * urand();                    /* axis ratio */
        double s2 = s1 * q;
        double th = th0 + 0.3 * (urand() - 0.5);
        double c = cos(th), s = sin(th);
        /* covariance C = Rot diag(s1^2, s2^2) Rot^T, F = C^-1 */
        double cxx = c * c * s1 * s1 + s * s * s2 * s2, cyy = s * s * s1 * s1 + c * c * s2 * s2;
        double cxy = c * s * (s1 * s1 - s2 * s2), det = cxx * cyy - cxy * cxy;
        double flux = 0.2 + urand();
        gs[6 * g + 0] = flux / (2.0 * M_PI * s1 * s2);
        gs[6 * g + 1] = 0.5 * nx - 0.3 + 0.4 * (urand() - 0.5);
        gs[6 * g + 2] = 0.5 * nx + 0.2 + 0.4 * (urand() - 0.5);
        gs[6 * g + 3] = cyy / det;
        gs[6 * g + 4] = -cxy / det;
        gs[6 * g + 5] = cxx / det;
    }
    return G;
}

static void make_boxes(int G, const double *gs, int ny, int nx, long long *boxes)
{
    int g;
    for (g = 0; g < G; g++) {
        const double *p = gs + 6 * g;
        double det = p[3] * p[5] - p[4] * p[4];
        double rx = BOX_NSIGMA * sqrt(p[5] / det), ry = BOX_NSIGMA * sqrt(p[3] / det);
        double lo, hi;
        lo = fmax(ceil(fmin(fmax(p[1] - rx - 0.5, -1.0), nx + 1.0)), 0.0);
        hi = fmin(floor(fmin(fmax(p[1] + rx + 0.5, -2.0), nx + 1.0)), nx - 1.0);
        boxes[4 * g + 0] = (long long)lo; boxes[4 * g + 1] = (long long)hi;
        lo = fmax(ceil(fmin(fmax(p[2] - ry - 0.5, -1.0), ny + 1.0)), 0.0);
        hi = fmin(floor(fmin(fmax(p[2] + ry + 0.5, -2.0), ny + 1.0)), ny - 1.0);
        boxes[4 * g + 2] = (long long)lo; boxes[4 * g + 3] = (long long)hi;
    }
}

/* largest exponent at the box corners (pho_box_recurrence_ok's "worst") */
static double box_worst(const double *gs, long long jlo, long long jhi, long long ilo, long long ihi)
{
    double x0 = gs[1], y0 = gs[2], fxx = gs[3], fxy = gs[4], fyy = gs[5], worst = 0.0;
    int c;
    for (c = 0; c < 4; c++) {
        double dx = (double)(c & 1 ? jhi : jlo) - x0, dy = (double)(c & 2 ? ihi : ilo) - y0;
        double vx = fxx * dx + fxy * dy, vy = fxy * dx + fyy * dy;
        double q = 0.5 * (dx * vx + dy * vy), t = fabs(dx + fxy * dy / fxx) + 0.5;
        if (q > worst) worst = q;
        if (0.5 * fabs(vx) > worst) worst = 0.5 * fabs(vx);
        if (0.5 * fabs(vy) > worst) worst = 0.5 * fabs(vy);
        if (0.5 * fxx * t * t > worst) worst = 0.5 * fxx * t * t;
    }
    return worst;
}

/* pho_so_point, exp per pixel: the reference for the extraction */
static double so_point(double a, double fxx, double fxy, double fyy, double dx, double dy, double w, double *acc,
                       double *aabs)
{
    double vx = fxx * dx + fxy * dy, vy = fxy * dx + fyy * dy;
    double e = exp(-0.5 * (dx * vx + dy * vy));
    double h = 1.0 + (vx * vx + vy * vy - fxx - fyy) / 24.0;
    double val = a * e * h, ae = a * e, d[6];
    int c;
    d[0] = e * h;
    d[1] = val * vx - ae * (fxx * vx + fxy * vy) / 12.0;
    d[2] = val * vy - ae * (fxy * vx + fyy * vy) / 12.0;
    d[3] = -0.5 * val * dx * dx + ae * (2.0 * vx * dx - 1.0) / 24.0;
    d[4] = -val * dx * dy + ae * (vx * dy + vy * dx) / 12.0;
    d[5] = -0.5 * val * dy * dy + ae * (2.0 * vy * dy - 1.0) / 24.0;
    if (acc)
        for (c = 0; c < 6; c++) { acc[c] += w * d[c]; aabs[c] += fabs(w * d[c]); }
    return val;
}

typedef struct {
    int G, ny, nx, order;
    double gs[6 * MAXG];
    long long boxes[4 * MAXG], eoff[MAXG + 1];
    long long npix;
} Work;

static double best[16];
static const char *names[16];

#define TIME(idx, name, stmt)                                                  \
    do {                                                                       \
        double t0_ = now();                                                    \
        for (it = 0; it < calls; it++) { stmt; }                               \
        double dt_ = (now() - t0_) / calls;                                    \
        names[idx] = name;                                                     \
        if (dt_ < best[idx]) best[idx] = dt_;                                  \
    } while (0)

int main(int argc, char **argv)
{
    int stamp = argc > 1 ? atoi(argv[1]) : 64;
    int order = argc > 2 ? atoi(argv[2]) : 0;
    const char *mode = argc > 3 ? argv[3] : "time";
    int ftz = argc > 4 ? atoi(argv[4]) : 0;
    int rounds = argc > 5 ? atoi(argv[5]) : 40;
    int seed = argc > 6 ? atoi(argv[6]) : 1;
    Work W;
    int g, it, k, v;
    long long p;
    static double tab_d[4 * MAXG], tab_d8[4 * MAXG], tab_f[4 * MAXG], tab_fd[4 * MAXG], tab_f4[4 * MAXG];
    static float tab_fp[4 * MAXG];
    double *img_d, *img_fdi, *wd, *keep_d, *acc[8], *Ms[8];
    float *img_f, *wf, *keep_f;
    int n_f32_bad = 0;
    long long pix_f32_bad = 0;

    if (ftz) _mm_setcsr(_mm_getcsr() | 0x8040);   /* FTZ | DAZ */
    rng += 7919ULL * seed;
    W.order = order;
    W.ny = W.nx = stamp;
    W.G = argc > 9 ? atoi(argv[9]) : (stamp == 64 ? 60 : 47);
    if (argc > 10) QMIN = atof(argv[10]);
    make_gaussians(stamp, W.G, argc > 7 ? atof(argv[7]) : 0.7, argc > 8 ? atof(argv[8]) : 30.0, W.gs);
    make_boxes(W.G, W.gs, W.ny, W.nx, W.boxes);
    W.eoff[0] = 0;
    for (g = 0; g < W.G; g++) {
        long long *b = W.boxes + 4 * g;
        long long np = (b[1] - b[0] + 1) * (b[3] - b[2] + 1);
        double worst = box_worst(W.gs + 6 * g, b[0], b[1], b[2], b[3]);
        if (worst > 600.0) { fprintf(stderr, "gaussian %d fails the f64 recurrence test\n", g); return 1; }
        if (worst > 80.0) { n_f32_bad++; pix_f32_bad += np; }
        W.eoff[g + 1] = W.eoff[g] + np;
    }
    W.npix = W.eoff[W.G];
    {
        long long rows = 0; double wmax = 0, fl2 = 0; int n40 = 0, nkl = 0;
        for (g = 0; g < W.G; g++) {
            long long *b = W.boxes + 4 * g;
            double worst = box_worst(W.gs + 6 * g, b[0], b[1], b[2], b[3]);
            rows += b[3] - b[2] + 1;
            if (worst > wmax) wmax = worst;
            if (worst > 40.0) n40++;
            if (W.gs[6 * g + 3] * 64.0 > 87.0) nkl++;
            if (W.gs[6 * g + 3] * 64.0 > fl2) fl2 = W.gs[6 * g + 3] * 64.0;
        }
        printf("mean row length %.1f px, %lld rows; max corner exponent %.1f, boxes with exponent > 40: %d; "
               "Gaussians with Fxx*8^2 > 87 (exp(-Fxx L^2) underflows in float): %d (max Fxx*64 = %.0f)\n",
               (double)W.npix / rows, rows, wmax, n40, nkl, fl2);
    }
    printf("stamp %dx%d  G=%d  order=%d  Gaussian-pixels=%lld  (%.0f%% of G*stamp)  ftz=%d\n", W.ny, W.nx, W.G,
           order, W.npix, 100.0 * W.npix / ((double)W.G * W.ny * W.nx), ftz);
    printf("boxes with a corner exponent > 80 (exp < 1.8e-35, denormal in float): %d Gaussians, %lld px\n",
           n_f32_bad, pix_f32_bad);

    for (g = 0; g < W.G; g++) {
        table_d(W.gs + 6 * g, tab_d + 4 * g);
        table_d8(W.gs + 6 * g, tab_d8 + 4 * g);
        table_f(W.gs + 6 * g, tab_f + 4 * g);
        table_fp(W.gs + 6 * g, tab_fp + 4 * g);
        table_fd(W.gs + 6 * g, tab_fd + 4 * g);
        table_f4(W.gs + 6 * g, tab_f4 + 4 * g);
    }
    img_d = malloc(sizeof(double) * stamp * stamp);
    img_fdi = malloc(sizeof(double) * stamp * stamp);
    img_f = malloc(sizeof(float) * stamp * stamp);
    wd = malloc(sizeof(double) * stamp * stamp);
    wf = malloc(sizeof(float) * stamp * stamp);
    keep_d = malloc(sizeof(double) * (W.npix + 64));
    keep_f = malloc(sizeof(float) * (W.npix + 64));
    for (v = 0; v < 8; v++) { acc[v] = calloc(6 * MAXG, sizeof(double)); Ms[v] = calloc(49 * MAXG, sizeof(double)); }

    if (!strcmp(mode, "time")) {
        int calls;
        double t1;
        for (p = 0; p < stamp * stamp; p++) { wd[p] = nrand(); wf[p] = (float)wd[p]; }
        for (k = 0; k < 16; k++) best[k] = 1e30;
        /* calls per sample: ~2 ms of the f64 render */
        t1 = now();
        for (it = 0; it < 20; it++) render_all_d(W.G, W.gs, order, tab_d, W.boxes, img_d, W.ny, W.nx, keep_d, W.eoff);
        calls = (int)(0.002 / ((now() - t1) / 20)) + 1;
        for (k = 0; k < rounds; k++) {
            TIME(0, "render f64 (L=4)", render_all_d(W.G, W.gs, order, tab_d, W.boxes, img_d, W.ny, W.nx, keep_d, W.eoff));
            TIME(2, "render f32 hybrid (L=8)", render_all_f(W.G, W.gs, order, tab_f, W.boxes, img_f, W.ny, W.nx, keep_f, W.eoff));
            TIME(1, "render f64 (L=8)", render_all_d8(W.G, W.gs, order, tab_d8, W.boxes, img_d, W.ny, W.nx, keep_d, W.eoff));
            TIME(3, "render f32 pure expf (L=8)", render_all_fp(W.G, W.gs, order, tab_fp, W.boxes, img_f, W.ny, W.nx, keep_f, W.eoff));
            TIME(4, "render f32 -> f64 image (L=8)", render_all_fd(W.G, W.gs, order, tab_fd, W.boxes, img_fdi, W.ny, W.nx, keep_f, W.eoff));
            TIME(5, "render f32 hybrid (L=4)", render_all_f4(W.G, W.gs, order, tab_f4, W.boxes, img_f, W.ny, W.nx, keep_f, W.eoff));
            /* gradient passes read the kept exponentials of their own type (written just above) */
            TIME(8, "gradient f64", gradient_all_d(W.G, W.gs, order, tab_d, W.boxes, wd, W.nx, keep_d, W.eoff, acc[0], Ms[0]));
            TIME(9, "gradient f32, f32 row acc", gradient_all_f(W.G, W.gs, order, tab_f, W.boxes, wf, W.nx, keep_f, W.eoff, acc[1], Ms[1]));
            TIME(10, "gradient f32 pure", gradient_all_fp(W.G, W.gs, order, tab_fp, W.boxes, wf, W.nx, keep_f, W.eoff, acc[2], Ms[2]));
            TIME(11, "gradient f32 in, f64 acc", gradient_all_fd(W.G, W.gs, order, tab_fd, W.boxes, wf, W.nx, keep_f, W.eoff, acc[3], Ms[3]));
        }
        printf("%d calls per sample, %d rounds (best of), ns per Gaussian-pixel:\n", calls, rounds);
        for (k = 0; k < 16; k++)
            if (names[k])
                printf("  %-32s %8.3f ns/px  %8.2f us/call  x%.2f vs f64\n", names[k], 1e9 * best[k] / W.npix,
                       1e6 * best[k], best[k < 8 ? 0 : 8] / best[k]);
        return 0;
    }

    /* ---- accuracy ---- */
    {
        double peak = 0.0, maxdiff[4] = {0, 0, 0, 0}, maxrel[4] = {0, 0, 0, 0}, erel = 0.0, erel_fp = 0.0;
        double *img_ref = calloc(stamp * stamp, sizeof(double));
        double *model2 = calloc(stamp * stamp, sizeof(double));
        float *keep_fp = malloc(sizeof(float) * (W.npix + 64));
        double *img_fpi = malloc(sizeof(double) * stamp * stamp);
        float *img_fp = malloc(sizeof(float) * stamp * stamp);
        int wcase;
        /* exp-per-pixel reference image (order 0 rule) */
        for (g = 0; g < W.G; g++) {
            const double *q = W.gs + 6 * g;
            long long *b = W.boxes + 4 * g, i, j;
            for (i = b[2]; i <= b[3]; i++)
                for (j = b[0]; j <= b[1]; j++)
                    img_ref[i * stamp + j] += so_point(q[0], q[3], q[4], q[5], j - q[1], i - q[2], 0, 0, 0);
        }
        render_all_d(W.G, W.gs, order, tab_d, W.boxes, img_d, W.ny, W.nx, keep_d, W.eoff);
        render_all_f(W.G, W.gs, order, tab_f, W.boxes, img_f, W.ny, W.nx, keep_f, W.eoff);
        render_all_fp(W.G, W.gs, order, tab_fp, W.boxes, img_fp, W.ny, W.nx, keep_fp, W.eoff);
        render_all_fd(W.G, W.gs, order, tab_fd, W.boxes, img_fdi, W.ny, W.nx, keep_f, W.eoff);
        render_all_f(W.G, W.gs, order, tab_f, W.boxes, img_f, W.ny, W.nx, keep_f, W.eoff);
        for (p = 0; p < stamp * stamp; p++) if (img_d[p] > peak) peak = img_d[p];
        for (p = 0; p < stamp * stamp; p++) {
            double ref = img_d[p], d[4];
            d[0] = fabs(img_d[p] - img_ref[p]);
            d[1] = fabs((double)img_f[p] - ref);
            d[2] = fabs((double)img_fp[p] - ref);
            d[3] = fabs(img_fdi[p] - ref);
            for (k = 0; k < 4; k++) {
                if (d[k] > maxdiff[k]) maxdiff[k] = d[k];
                if (fabs(ref) > 1e-6 * peak && d[k] / fabs(ref) > maxrel[k]) maxrel[k] = d[k] / fabs(ref);
            }
        }
        for (p = 0; p < W.npix; p++) {
            double r1 = fabs(keep_f[p] - keep_d[p]) / keep_d[p], r2 = fabs(keep_fp[p] - keep_d[p]) / keep_d[p];
            if (keep_d[p] > 1e-30 && r1 > erel) erel = r1;
            if (keep_d[p] > 1e-30 && r2 > erel_fp) erel_fp = r2;
        }
        if (getenv("PERG")) {
            for (g = 0; g < W.G; g++) {
                long long *b = W.boxes + 4 * g;
                double worst = box_worst(W.gs + 6 * g, b[0], b[1], b[2], b[3]), m1 = 0, m2 = 0;
                for (p = W.eoff[g]; p < W.eoff[g + 1]; p++) {
                    if (keep_d[p] > 1e-6) {
                        double r1 = fabs(keep_f[p] - keep_d[p]) / keep_d[p], r2 = fabs(keep_fp[p] - keep_d[p]) / keep_d[p];
                        if (!(r1 <= m1)) m1 = r1;
                        if (!(r2 <= m2)) m2 = r2;
                    }
                }
                printf("  g %2d worst %6.1f Fxx*64 %6.1f  e>1e-6: max rel hybrid %.1e pure %.1e\n", g, worst, 64 * W.gs[6 * g + 3], m1, m2);
            }
        }
        printf("render (order %d), image peak %.4g:\n", order, peak);
        if (order == 0)
            printf("  f64 box recurrence vs exp per pixel:  max|diff|/peak %.2e  max rel (px > 1e-6 peak) %.2e\n",
                   maxdiff[0] / peak, maxrel[0]);
        printf("  f32 hybrid vs f64:        max|diff|/peak %.2e  max rel %.2e\n", maxdiff[1] / peak, maxrel[1]);
        printf("  f32 pure expf vs f64:     max|diff|/peak %.2e  max rel %.2e\n", maxdiff[2] / peak, maxrel[2]);
        printf("  f32 e, f64 image vs f64:  max|diff|/peak %.2e  max rel %.2e\n", maxdiff[3] / peak, maxrel[3]);
        printf("  kept exponentials e (where e_f64 > 1e-30): max rel err hybrid %.2e, pure %.2e\n", erel, erel_fp);

        /* gradient: w = noise (near the optimum) or a model mismatch + noise */
        for (wcase = 0; wcase < 2; wcase++) {
            double Mrel[7] = {0}, Mscl[7] = {0}, arel[3][6], ascl[3][6], accref[MAXG * 6], aabs[MAXG * 6];
            double accref_err = 0.0;
            const char *vname[3] = {"f32 hybrid (f32 row acc)", "f32 pure", "f32 in, f64 acc"};
            memset(arel, 0, sizeof arel); memset(ascl, 0, sizeof ascl);
            /* model2: the same Gaussians 3% larger and 2% brighter, minus the model */
            for (p = 0; p < stamp * stamp; p++) model2[p] = 0;
            for (g = 0; g < W.G; g++) {
                const double *q = W.gs + 6 * g;
                long long *b = W.boxes + 4 * g, i, j;
                for (i = b[2]; i <= b[3]; i++)
                    for (j = b[0]; j <= b[1]; j++)
                        model2[i * stamp + j] += so_point(q[0] * 1.02 / 1.0609, q[3] / 1.0609, q[4] / 1.0609,
                                                          q[5] / 1.0609, j - q[1], i - q[2], 0, 0, 0);
            }
            for (p = 0; p < stamp * stamp; p++) {
                double noise = 0.01 * peak * nrand();
                double resid = wcase == 0 ? noise : (model2[p] - img_d[p]) + noise;
                wd[p] = resid / (0.01 * peak) / (0.01 * peak);   /* (data - model) / var */
                wf[p] = (float)wd[p];
            }
            /* exp-per-pixel reference gradient (order 0 rule) and the sums of |terms| */
            memset(accref, 0, sizeof accref); memset(aabs, 0, sizeof aabs);
            for (g = 0; g < W.G; g++) {
                const double *q = W.gs + 6 * g;
                long long *b = W.boxes + 4 * g, i, j;
                for (i = b[2]; i <= b[3]; i++)
                    for (j = b[0]; j <= b[1]; j++)
                        so_point(q[0], q[3], q[4], q[5], j - q[1], i - q[2], wd[i * stamp + j], accref + 6 * g,
                                 aabs + 6 * g);
            }
            gradient_all_d(W.G, W.gs, order, tab_d, W.boxes, wd, W.nx, keep_d, W.eoff, acc[0], Ms[0]);
            gradient_all_f(W.G, W.gs, order, tab_f, W.boxes, wf, W.nx, keep_f, W.eoff, acc[1], Ms[1]);
            gradient_all_fp(W.G, W.gs, order, tab_fp, W.boxes, wf, W.nx, keep_fp, W.eoff, acc[2], Ms[2]);
            gradient_all_fd(W.G, W.gs, order, tab_fd, W.boxes, wf, W.nx, keep_f, W.eoff, acc[3], Ms[3]);
            /* moments: per Gaussian, T_k summed over rows = M[k][0]; scale: sum |w e t^k| over the box */
            for (g = 0; g < W.G; g++) {
                const double *q = W.gs + 6 * g;
                long long *b = W.boxes + 4 * g, i, j;
                double sabs[7] = {0};
                for (i = b[2]; i <= b[3]; i++) {
                    double dy = i - q[2], c0 = -q[4] * dy / q[3];
                    for (j = b[0]; j <= b[1]; j++) {
                        double t = (j - q[1]) - c0, x = fabs(wd[i * stamp + j] * keep_d[W.eoff[g] + (i - b[2]) * (b[1] - b[0] + 1) + (j - b[0])]);
                        for (k = 0; k <= (order == 0 ? 4 : 6); k++) { sabs[k] += x; x *= fabs(t); }
                    }
                }
                for (k = 0; k <= (order == 0 ? 4 : 6); k++) {
                    double ref = Ms[0][49 * g + 7 * k], d = fabs(Ms[1][49 * g + 7 * k] - ref);
                    if (fabs(ref) > 0 && d / fabs(ref) > Mrel[k]) Mrel[k] = d / fabs(ref);
                    if (d / sabs[k] > Mscl[k]) Mscl[k] = d / sabs[k];
                }
                if (order == 0)
                    for (k = 0; k < 6; k++) {
                        double ref = acc[0][6 * g + k];
                        double scl = (k == 0 ? 1.0 : q[0]) * 0 + aabs[6 * g + k];
                        if (fabs(ref - accref[6 * g + k]) / scl > accref_err) accref_err = fabs(ref - accref[6 * g + k]) / scl;
                        for (v = 0; v < 3; v++) {
                            double d = fabs(acc[v + 1][6 * g + k] - ref);
                            if (d / fabs(ref) > arel[v][k]) arel[v][k] = d / fabs(ref);
                            if (d / scl > ascl[v][k]) ascl[v][k] = d / scl;
                        }
                    }
            }
            printf("gradient, w = %s:\n", wcase == 0 ? "pure noise residual (near the optimum)" : "3%-size model mismatch + noise");
            printf("  moments M[k][0] = sum_box w e t^k, f32 hybrid vs f64, worst over Gaussians:\n");
            for (k = 0; k <= (order == 0 ? 4 : 6); k++)
                printf("    k=%d  max rel %.2e   max |err| / sum|w e t^k| %.2e\n", k, Mrel[k], Mscl[k]);
            if (order == 0) {
                printf("  f64 moments vs exp-per-pixel reference: max |err| / sum|terms| %.2e\n", accref_err);
                for (v = 0; v < 3; v++) {
                    printf("  %-26s dI/d(A,x0,y0,Fxx,Fxy,Fyy): max rel", vname[v]);
                    for (k = 0; k < 6; k++) printf(" %.1e", arel[v][k]);
                    printf("\n  %-26s                      max |err|/sum|w dI|", "");
                    for (k = 0; k < 6; k++) printf(" %.1e", ascl[v][k]);
                    printf("\n");
                }
            }
        }
        /* total gradient of an all-Gaussian-amplitude-scaled model: the sum over Gaussians, as a likelihood
           would (d lnL / d(global scale) = sum_g A_g acc_g[0]) */
    }
    return 0;
}
