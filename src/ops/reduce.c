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

static double lane_total(vec a)
{
    double t = 0;
    for (int k = 0; k < LANES; k++)
        t += a[k];
    return t;
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

/* Both sums in double lanes: a variance is the mean square less the
 * squared mean, and for activations far from zero that difference is
 * small beside either term, so both need double's digits. */
typedef double dvec __attribute__((vector_size(LANES / 2 * sizeof(double))));
typedef float half __attribute__((vector_size(LANES / 2 * sizeof(float)),
                                  aligned(4)));

static double dlane_total(dvec a)
{
    double t = 0;
    for (int k = 0; k < LANES / 2; k++)
        t += a[k];
    return t;
}

void cnn_sum_squares(const float *x, size_t n, double *sum, double *sq)
{
    dvec s0 = {0}, s1 = {0}, q0 = {0}, q1 = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        dvec lo = __builtin_convertvector(*(const half *)(x + i), dvec);
        dvec hi = __builtin_convertvector(*(const half *)(x + i + LANES / 2),
                                          dvec);
        s0 += lo;
        s1 += hi;
        q0 += lo * lo;
        q1 += hi * hi;
    }
    double s = dlane_total(s0 + s1), q = dlane_total(q0 + q1);
    for (; i < n; i++) {
        s += x[i];
        q += (double)x[i] * x[i];
    }
    *sum += s;
    *sq += q;
}

void cnn_sum_products(const float *d, const float *gate, const float *x,
                      float mean, size_t n, double *sum_d, double *sum_dx)
{
    double s = 0, p = 0;
    size_t i = 0;
    while (i + LANES <= n) {
        size_t end = i + BLOCK < n ? i + BLOCK : n;
        vec vs = {0}, vp = {0};
        for (; i + LANES <= end; i += LANES) {
            vec dv = load(d + i);
            if (gate)       /* d where gate > 0, else +0: the bits */
                dv = (vec)((ivec)dv & (load(gate + i) > 0.0f));
            vs += dv;
            vp += dv * (load(x + i) - mean);
        }
        s += lane_total(vs);
        p += lane_total(vp);
    }
    for (; i < n; i++) {
        float di = gate && !(gate[i] > 0.0f) ? 0.0f : d[i];
        s += di;
        p += (double)di * (x[i] - mean);
    }
    *sum_d += s;
    *sum_dx += p;
}
