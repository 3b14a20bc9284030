/*
 * Numeric kernels shared by the layers: one GEMM in BLAS argument order
 * (row-major, OpenBLAS underneath) with a naive twin that tests use as
 * the reference; im2col/col2im and Winograd's F(4x4, 3x3) and F(2x2,
 * 5x5) for convolution; vectorized sums; the worker pool; bfloat16.
 */
#ifndef CNN_OPS_H
#define CNN_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major;
 * lda/ldb/ldc are the row strides of A, B, C as stored. */
void cnn_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta,
              float *C, int ldc);

/* The same in plain loops with double accumulation: the test reference. */
void cnn_gemm_naive(bool trans_a, bool trans_b, int M, int N, int K,
                    float alpha, const float *A, int lda, const float *B,
                    int ldb, float beta, float *C, int ldc);

/* Geometry of one 2-D convolution or pooling window. */
struct cnn_conv_geom {
    int c, h, w;          /* input */
    int kh, kw;
    int stride, pad;
    int oh, ow;           /* output */
};

/* Output extent of a window, or -1 when the window does not fit. */
int cnn_conv_out_size(int in, int k, int stride, int pad);

/* im[c, h, w] -> col[c*kh*kw, oh*ow], zero where the window is padding.
 * ld is the row stride of col (>= oh*ow), so several examples can sit
 * side by side in one column matrix. */
void cnn_im2col(const struct cnn_conv_geom *g, const float *im, float *col,
                int ld);

/* The adjoint: adds col[c*kh*kw, oh*ow] (row stride ld) into im[c, h, w].
 * col is scratch to it: entries whose window lies in the padding may be
 * overwritten with zeros. */
void cnn_col2im(const struct cnn_conv_geom *g, float *col, int ld, float *im);

/* Winograd F(4x4, 3x3) and F(2x2, 5x5): an r x r convolution at stride
 * 1 and zero padding r / 2 (output h x w, as the input) from m x m
 * output tiles (m = 4 for r = 3, 2 for r = 5), with 4 (r = 3) or 2.8
 * (r = 5) times fewer multiplications than im2col's product, in a 6 x 6
 * transform domain. A plan holds the shapes: c input and f output
 * channels, up to nb examples a call. */
enum { CNN_WINO_LANES = 16 };

struct cnn_wino {
    int r, m;           /* filter size, output tile size */
    int c, f, h, w;
    int th, tw;         /* tiles down and across: h and w over m, up */
    int S;              /* slots per row of a phase plane: tw and dummies */
    int fpad;           /* f rounded up to CNN_WINO_LANES */
    int nb;
};

/* True for the windows Winograd takes: k x k, k = 3 or 5, at stride 1
 * with padding k / 2. */
bool cnn_wino_fits(int k, int stride, int pad);

void cnn_wino_plan(struct cnn_wino *p, int r, int c, int f, int h, int w,
                   int nb);

/* Examples a call should take at least: the fewest whose tiles make two
 * vectors (of CNN_WINO_LANES) or more, at most an eighth of them
 * padding; up to 64. */
int cnn_wino_fill(const struct cnn_wino *p);

/* Scratch floats for one call on nb examples, and floats of the
 * transformed weights. */
size_t cnn_wino_work_floats(const struct cnn_wino *p);
size_t cnn_wino_weight_floats(const struct cnn_wino *p);

/* Transforms the filters into U (cnn_wino_weight_floats). W is the
 * plan's own filters [f, c, r, r]; with adjoint, it is the filters of
 * the convolution this one is the adjoint of, [c, f, r, r], used turned
 * 180 degrees and transposed: the convolution then takes that
 * convolution's output gradient to its input gradient. Runs over
 * cnn_parallel_for's threads, as cnn_wino_weight_grad_finish does. */
void cnn_wino_weights(const struct cnn_wino *p, const float *W, bool adjoint,
                      float *U);

/* y[n, f, h, w] = the convolution of x[n, c, h, w] (+ bias[f] unless
 * NULL), n <= nb; y is overwritten. work is scratch of
 * cnn_wino_work_floats. */
void cnn_wino_conv(const struct cnn_wino *p, const float *U, const float *bias,
                   const float *x, int n, float *y, float *work);

/* The weight gradient, for plans with c a multiple of CNN_WINO_LANES
 * (cnn_wino_grad_ok): dUt[36, c, fpad] += its transform-domain sum over
 * the n examples of x[n, c, h, w] and the output gradient dy[n, f, h,
 * w]; work of cnn_wino_grad_work_floats. Then
 * cnn_wino_weight_grad_finish adds the filters' gradient it makes to
 * dW[f, c, r, r]. */
bool cnn_wino_grad_ok(const struct cnn_wino *p);
size_t cnn_wino_grad_work_floats(const struct cnn_wino *p);
void cnn_wino_weight_grad(const struct cnn_wino *p, const float *x,
                          const float *dy, int n, float *dUt, float *work);
void cnn_wino_weight_grad_finish(const struct cnn_wino *p, const float *dUt,
                                 float *dW);

/* Vectorized sums, in float lanes added up in double every 1024
 * elements: the sum of x[0..n). Over `planes` runs of n floats, `stride`
 * floats apart (a channel of a batch): *sum_d += the sum of d, *sum_dx
 * += that of d * (x - mean), d counting as zero where gate (when not
 * NULL) is not positive, as past a relu; *sum += the sum of x, *sq +=
 * that of its squares, in double lanes (a variance is their
 * difference). */
double cnn_sum(const float *x, size_t n);
void cnn_sum_squares(const float *x, size_t n, size_t planes, size_t stride,
                     double *sum, double *sq);
void cnn_sum_products(const float *d, const float *gate, const float *x,
                      float mean, size_t n, size_t planes, size_t stride,
                      double *sum_d, double *sum_dx);

/* Sets the BLAS thread count (process-wide inside OpenBLAS); n <= 0
 * leaves OpenBLAS's default. Returns the count in use. */
int cnn_blas_threads(int n);

/* Runs fn(ctx, lo, hi) over [0, n) cut into as many contiguous parts as
 * OpenBLAS has threads, in parallel, and returns when all are done. The
 * parts must not write the same memory; each part's own order is the
 * serial one, so results do not depend on the thread count. */
void cnn_parallel_for(int n, void (*fn)(void *ctx, int lo, int hi),
                      void *ctx);

/* The same over n elements for elementwise work, whose results do not
 * depend on the split: in parallel when n is large enough to pay for
 * waking the threads, else on this thread as fn(ctx, 0, n). */
void cnn_parallel_elems(size_t n, void (*fn)(void *ctx, size_t lo, size_t hi),
                        void *ctx);

/* The same in at most `parts` parts (fewer when n is smaller, threads
 * cannot be made, or when called from inside a part), telling fn which
 * part it runs, from 0, so that each part can use scratch memory of its
 * own; returns how many parts ran. Part boundaries depend only on n and
 * the number of parts. */
typedef void cnn_part_fn(void *ctx, int part, int lo, int hi);
int cnn_parallel_parts(int n, int parts, cnn_part_fn *fn, void *ctx);

/* True when OpenBLAS runs on threads of its own (its pthreads build):
 * then cnn_blas_threads(1) makes a GEMM called from any thread run on
 * that thread alone. Its OpenMP build keeps the count per thread. */
bool cnn_blas_pthreads(void);

/* bfloat16: the top half of a float32, 8 exponent bits and 7 mantissa
 * bits. Packing rounds to nearest, ties to even; NaN stays NaN, and
 * values past the largest bfloat16 become infinities, as in hardware. */
void cnn_bf16_pack(const float *x, uint16_t *out, size_t n);
void cnn_bf16_unpack(const uint16_t *in, float *x, size_t n);

/* Rounds x to the nearest bfloat16, in place (pack then unpack). */
void cnn_bf16_round(float *x, size_t n);

/* Both at once: out gets x packed, and x its rounded value. */
void cnn_bf16_store(float *x, uint16_t *out, size_t n);

#endif
