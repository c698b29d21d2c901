/* The vector-Jacobian product of one Sersic source's image Gaussians (pho._render.sersic_vjp and the
   one-call likelihood of pho._stamp share it; the NumPy expressions are ExposureModel.vjp in
   pho/gaussians.py, docs/model.md "Jacobian"). Compiled without contracting a*b + c into fused
   multiply-adds, so that it rounds as NumPy does. */
#ifndef PHO_VJP_H
#define PHO_VJP_H
#if defined(__GNUC__) && !defined(__clang__)
#  define PHO_VJP_FN static inline __attribute__((optimize("fp-contract=off")))
#else
#  define PHO_VJP_FN static inline
#endif

/* Add one image Gaussian's share to acc = (l0, gx, gy, l5, l6, w0, w1, w2): gg its d lnL / d(A, x0, y0,
   Fxx, Fxy, Fyy), gauss the Gaussian itself, abase and base its amplitude factors (A = flux abase,
   abase = amp base), da_dn and da_drh its profile amplitude's derivatives, r2 its squared profile
   radius. The shape part is W = sum r2 (F Gs F + gA A F / 2), Gs = [[gFxx, gFxy/2], [gFxy/2, gFyy]]. */
PHO_VJP_FN void pho_vjp_add(const double *gg, const double *gauss, double abase, double base, double da_dn,
                            double da_drh, double r2, double *acc)
{
    double gA = gg[0], gb, gxx, gh, gyy, fxx, fxy, fyy, c, ab, bb, bd, wxx, wxy, wyy;
    acc[0] += gA * abase;
    acc[1] += gg[1];
    acc[2] += gg[2];
    gb = gA * base;
    acc[3] += gb * da_dn;
    acc[4] += gb * da_drh;
    gxx = gg[3];
    gh = 0.5 * gg[4];
    gyy = gg[5];
    fxx = gauss[3];
    fxy = gauss[4];
    fyy = gauss[5];
    c = 0.5 * gA * gauss[0];
    ab = fxx * fxy;
    bb = fxy * fxy;
    bd = fxy * fyy;
    wxx = fxx * fxx * gxx + 2.0 * ab * gh + bb * gyy + c * fxx;
    wxy = ab * gxx + (fxx * fyy + bb) * gh + bd * gyy + c * fxy;
    wyy = bb * gxx + 2.0 * bd * gh + fyy * fyy * gyy + c * fyy;
    acc[5] += r2 * wxx;
    acc[6] += r2 * wxy;
    acc[7] += r2 * wyy;
}

/* local = d lnL / d(flux, ra, dec, shape 1, shape 2, n, rh) from the summed acc: J (2 x 2, row-major)
   d(x, y)/d(ra, dec), T (3 x 3, row-major) the shape matrix and its two derivatives. */
PHO_VJP_FN void pho_vjp_finish(const double *acc, const double *J, const double *T, double flux, double *local)
{
    double w0 = acc[5], w1 = acc[6] * 2.0, w2 = acc[7];
    local[0] = acc[0];
    local[1] = acc[1] * J[0] + acc[2] * J[2];
    local[2] = acc[1] * J[1] + acc[2] * J[3];
    local[3] = -(T[3] * w0 + T[4] * w1 + T[5] * w2);
    local[4] = -(T[6] * w0 + T[7] * w1 + T[8] * w2);
    local[5] = flux * acc[3];
    local[6] = flux * acc[4];
}

#endif /* PHO_VJP_H */
