# The C declarations of pho's pixel kernels (pho/include/pho_kernel.h), box rule (pho_box.h) and
# source vector-Jacobian product (pho_vjp.h), cimported by pho._render and pho._stamp.

cdef extern from "pho_kernel.h":
    int PHO_SEG
    int PHO_MAX_ORDER
    int PHO_TAB
    int pho_gauss_table(const double *gs, int order, const double *nodes, const double *wts,
                        double *tab) noexcept nogil
    int pho_render_span(const double *gs, int order, const double *nodes, const double *wts, const double *tab,
                        long long jlo, long long jhi, double dy, double *out_row) noexcept nogil
    int pho_gradient_span(const double *gs, int order, const double *nodes, const double *wts, const double *tab,
                          long long jlo, long long jhi, double dy, const double *w_row, double *acc) noexcept nogil
    int pho_render_span_keep(const double *gs, int order, const double *nodes, const double *wts,
                             const double *tab, long long jlo, long long jhi, double dy, double *out_row,
                             double *keep) noexcept nogil
    int pho_render_box_keep(const double *gs, int order, const double *nodes, const double *wts,
                            const double *tab, long long jlo, long long jhi, long long ilo, long long ihi,
                            double *img, long long stride, double *keep) noexcept nogil
    int pho_gradient_box_kept(const double *gs, int order, const double *nodes, const double *wts,
                              const double *tab, long long jlo, long long jhi, long long ilo, long long ihi,
                              const double *w, long long stride, const double *kept, double *acc) noexcept nogil

cdef extern from "pho_box.h":
    int pho_box_order(const double *g, double nx, double ny, double nsigma, const double *edges,
                      int n_edges, const int *order_table, Py_ssize_t *box, int *order) noexcept nogil

cdef extern from "pho_vjp.h":
    void pho_vjp_add(const double *gg, const double *gauss, double abase, double base, double da_dn,
                     double da_drh, double r2, double *acc) noexcept nogil
    void pho_vjp_finish(const double *acc, const double *J, const double *T, double flux,
                        double *local) noexcept nogil
