/*
 * Sums over float arrays: per-channel statistics (batchnorm), bias
 * gradients (conv2d). A
 * running double, one element at a time, is a chain of dependent adds
 * that the compiler may not reorder (ISO C does not let it reassociate),
 * so it runs at one add per add latency. Here sixteen-lane float sums
 * run over blocks of BLOCK elements and each block's lanes are added
 * into the double: in a block a lane sums at most BLOCK / 16 terms, so
 * the float rounding stays that of short sums. cnn_sum_squares, whose
 * sums make a variance, keeps double lanes throughout.
 */
#include "cnn/ops.h"

enum { LANES = 16, BLOCK = 1024 };

typedef float vec __attribute__((vector_size(LANES * sizeof(float)),
                                 aligned(4)));
typedef int ivec __attribute__((vector_size(LANES * sizeof(int))));

static inline vec load(const float *p)
{
    return *(const vec *)p;
}

/* Both sums in double lanes: a variance is the mean square less the
 * squared mean, and for activations far from zero that difference is
 * small beside either term, so both need double's digits. */
typedef double dvec __attribute__((vector_size(LANES / 2 * sizeof(double))));
typedef float half __attribute__((vector_size(LANES / 2 * sizeof(float)),
                                  aligned(4)));

/* The lanes' total, added pairwise: a chain of 16 dependent adds would
 * cost more than the sums of a small plane. */
static double dlane_total(dvec a)
{
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

static double lane_total(vec a)
{
    const float *f = (const float *)&a;
    return dlane_total(__builtin_convertvector(*(const half *)f, dvec) +
                       __builtin_convertvector(*(const half *)(f + LANES / 2),
                                               dvec));
}

double cnn_sum(const float *x, size_t n)
{
    double s = 0;
    size_t i = 0;
    while (i + LANES <= n) {
        size_t end = i + BLOCK < n ? i + BLOCK : n;
        vec vs = {0};
        for (; i + LANES <= end; i += LANES)
            vs += load(x + i);
        s += lane_total(vs);
    }
    for (; i < n; i++)
        s += x[i];
    return s;
}

void cnn_sum_squares(const float *x, size_t n, size_t planes, size_t stride,
                     double *sum, double *sq)
{
    dvec s0 = {0}, s1 = {0}, q0 = {0}, q1 = {0};
    double s = 0, q = 0;
    for (size_t k = 0; k < planes; k++, x += stride) {
        size_t i = 0;
        for (; i + LANES <= n; i += LANES) {
            dvec lo = __builtin_convertvector(*(const half *)(x + i), dvec);
            dvec hi = __builtin_convertvector(
                *(const half *)(x + i + LANES / 2), dvec);
            s0 += lo;
            s1 += hi;
            q0 += lo * lo;
            q1 += hi * hi;
        }
        for (; i < n; i++) {
            s += x[i];
            q += (double)x[i] * x[i];
        }
    }
    *sum += s + dlane_total(s0 + s1);
    *sq += q + dlane_total(q0 + q1);
}

void cnn_sum_products(const float *d, const float *gate, const float *x,
                      float mean, size_t n, size_t planes, size_t stride,
                      double *sum_d, double *sum_dx)
{
    double s = 0, p = 0;
    vec vs = {0}, vp = {0};
    size_t run = 0;         /* elements in vs and vp */
    for (size_t k = 0; k < planes; k++) {
        const float *dk = d + k * stride, *xk = x + k * stride;
        const float *gk = gate ? gate + k * stride : NULL;
        size_t i = 0;
        for (; i + LANES <= n; i += LANES) {
            vec dv = load(dk + i);
            if (gk)         /* d where gate > 0, else +0: the bits */
                dv = (vec)((ivec)dv & (load(gk + i) > 0.0f));
            vs += dv;
            vp += dv * (load(xk + i) - mean);
            if ((run += LANES) == BLOCK) {
                s += lane_total(vs);
                p += lane_total(vp);
                vs = vp = (vec){0};
                run = 0;
            }
        }
        for (; i < n; i++) {
            float di = gk && !(gk[i] > 0.0f) ? 0.0f : dk[i];
            s += di;
            p += (double)di * (xk[i] - mean);
        }
    }
    *sum_d += s + lane_total(vs);
    *sum_dx += p + lane_total(vp);
}
