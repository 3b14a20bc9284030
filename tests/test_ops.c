/*
 * ops: cnn_gemm against its naive twin for every transpose combination,
 * and im2col/col2im as adjoints of each other (<im2col x, y> = <x,
 * col2im y>), which is what backpropagation through them relies on.
 */
#include <math.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnn/ops.h"
#include "cnn/rng.h"

static void fill(float *x, size_t n, struct cnn_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = cnn_rng_normal(rng);
}

static void test_gemm_matches_naive(void **state)
{
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 1, 0, 0);
    const int M = 13, N = 17, K = 29;
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            float A[13 * 29], B[29 * 17], C1[13 * 17], C2[13 * 17];
            fill(A, M * K, &rng);
            fill(B, K * N, &rng);
            fill(C1, M * N, &rng);
            for (int i = 0; i < M * N; i++)
                C2[i] = C1[i];
            int lda = ta ? M : K, ldb = tb ? K : N;
            cnn_gemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 2.0f, C1, N);
            cnn_gemm_naive(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 2.0f, C2, N);
            for (int i = 0; i < M * N; i++)
                assert_float_equal(C1[i], C2[i], 1e-4);
        }
    }
}

static void check_adjoint(struct cnn_conv_geom g)
{
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 2, 0, 0);
    g.oh = cnn_conv_out_size(g.h, g.kh, g.stride, g.pad);
    g.ow = cnn_conv_out_size(g.w, g.kw, g.stride, g.pad);
    assert_true(g.oh > 0 && g.ow > 0);
    size_t nim = (size_t)g.c * g.h * g.w;
    size_t ncol = (size_t)g.c * g.kh * g.kw * g.oh * g.ow;
    float *x = malloc(nim * sizeof *x), *xb = calloc(nim, sizeof *xb);
    float *y = malloc(ncol * sizeof *y), *col = malloc(ncol * sizeof *col);
    assert_non_null(x);
    assert_non_null(xb);
    assert_non_null(y);
    assert_non_null(col);
    fill(x, nim, &rng);
    fill(y, ncol, &rng);

    int ohw = g.oh * g.ow;
    cnn_im2col(&g, x, col, ohw);
    double lhs = 0, rhs = 0;
    for (size_t i = 0; i < ncol; i++)
        lhs += (double)col[i] * y[i];
    cnn_col2im(&g, y, ohw, xb);         /* may zero some of y */
    for (size_t i = 0; i < nim; i++)
        rhs += (double)x[i] * xb[i];
    assert_true(fabs(lhs - rhs) < 1e-3 * (1 + fabs(lhs)));
    free(x);
    free(xb);
    free(y);
    free(col);
}

static void test_im2col_adjoint(void **state)
{
    check_adjoint((struct cnn_conv_geom){.c = 3, .h = 7, .w = 6, .kh = 3,
                                         .kw = 3, .stride = 1, .pad = 1});
    check_adjoint((struct cnn_conv_geom){.c = 2, .h = 9, .w = 9, .kh = 5,
                                         .kw = 5, .stride = 2, .pad = 2});
    check_adjoint((struct cnn_conv_geom){.c = 1, .h = 4, .w = 5, .kh = 2,
                                         .kw = 2, .stride = 3, .pad = 0});
    check_adjoint((struct cnn_conv_geom){.c = 2, .h = 6, .w = 5, .kh = 5,
                                         .kw = 5, .stride = 1, .pad = 2});
    check_adjoint((struct cnn_conv_geom){.c = 1, .h = 2, .w = 3, .kh = 5,
                                         .kw = 5, .stride = 1, .pad = 2});
    /* Stride 2's scatter, over widths past one and two vectors. */
    check_adjoint((struct cnn_conv_geom){.c = 2, .h = 28, .w = 28, .kh = 3,
                                         .kw = 3, .stride = 2, .pad = 1});
    check_adjoint((struct cnn_conv_geom){.c = 1, .h = 5, .w = 67, .kh = 3,
                                         .kw = 3, .stride = 2, .pad = 1});
    check_adjoint((struct cnn_conv_geom){.c = 2, .h = 8, .w = 35, .kh = 1,
                                         .kw = 1, .stride = 2, .pad = 0});
    check_adjoint((struct cnn_conv_geom){.c = 1, .h = 7, .w = 41, .kh = 5,
                                         .kw = 5, .stride = 2, .pad = 2});
}

static void test_im2col_layout(void **state)
{
    /* 1 channel 3x3, 2x2 window, stride 1, no pad: 4 rows x 4 columns. */
    struct cnn_conv_geom g = {.c = 1, .h = 3, .w = 3, .kh = 2, .kw = 2,
                              .stride = 1, .pad = 0, .oh = 2, .ow = 2};
    float im[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float col[16];
    const float want[16] = {1, 2, 4, 5,   2, 3, 5, 6,
                            4, 5, 7, 8,   5, 6, 8, 9};
    cnn_im2col(&g, im, col, 4);
    for (int i = 0; i < 16; i++)
        assert_float_equal(col[i], want[i], 0);
}

/* Every entry of col against the definition, with a row stride wider
 * than the columns (examples side by side) whose gap must stay as it
 * was. Same-size stride-1 windows take im2col's shifted-copy path. */
static void check_im2col_entries(struct cnn_conv_geom g)
{
    g.oh = cnn_conv_out_size(g.h, g.kh, g.stride, g.pad);
    g.ow = cnn_conv_out_size(g.w, g.kw, g.stride, g.pad);
    assert_true(g.oh > 0 && g.ow > 0);
    int ohw = g.oh * g.ow, ld = ohw + 3, rows = g.c * g.kh * g.kw;
    size_t nim = (size_t)g.c * g.h * g.w;
    float *im = malloc(nim * sizeof *im);
    float *col = malloc((size_t)rows * ld * sizeof *col);
    assert_non_null(im);
    assert_non_null(col);
    for (size_t i = 0; i < nim; i++)
        im[i] = (float)(i + 1);
    for (size_t i = 0; i < (size_t)rows * ld; i++)
        col[i] = -1.0f;
    cnn_im2col(&g, im, col, ld);
    for (int r = 0; r < rows; r++) {
        int c = r / (g.kh * g.kw), ky = r / g.kw % g.kh, kx = r % g.kw;
        for (int p = 0; p < ld; p++) {
            float want = -1.0f;
            if (p < ohw) {
                int y = p / g.ow * g.stride - g.pad + ky;
                int x = p % g.ow * g.stride - g.pad + kx;
                bool in = y >= 0 && y < g.h && x >= 0 && x < g.w;
                want = in ? im[((size_t)c * g.h + y) * g.w + x] : 0.0f;
            }
            assert_float_equal(col[(size_t)r * ld + p], want, 0);
        }
    }
    free(im);
    free(col);
}

static void test_im2col_entries(void **state)
{
    (void)state;
    static const int geoms[][6] = {         /* c, h, w, k, stride, pad */
        {2, 5, 4, 3, 1, 1}, {1, 6, 6, 5, 1, 2}, {3, 3, 7, 1, 1, 0},
        {1, 1, 1, 3, 1, 1}, {2, 2, 3, 5, 1, 2}, {1, 5, 6, 3, 2, 1},
        {2, 6, 5, 2, 1, 0}, {1, 4, 4, 3, 1, 2},
        /* Stride 2, as a ResNet downsamples: rows gathered 16 outputs
         * at a time, so widths past 32 and 64 pixels and odd sizes. */
        {2, 28, 28, 3, 2, 1}, {2, 14, 14, 1, 2, 0}, {1, 7, 7, 3, 2, 1},
        {1, 9, 67, 3, 2, 1}, {2, 5, 41, 5, 2, 2}, {1, 6, 33, 1, 2, 0},
        {1, 5, 35, 4, 2, 0},
    };
    for (size_t i = 0; i < sizeof geoms / sizeof geoms[0]; i++) {
        const int *q = geoms[i];
        check_im2col_entries((struct cnn_conv_geom){
            .c = q[0], .h = q[1], .w = q[2], .kh = q[3], .kw = q[3],
            .stride = q[4], .pad = q[5]});
    }
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Rounding to nearest, ties to even, on values whose bits say where
 * they fall between two bfloat16 neighbours. */
static void test_bf16_rounding(void **state)
{
    (void)state;
    const struct { uint32_t in; uint16_t want; } cases[] = {
        {0x3f800000u, 0x3f80},      /* 1: exact */
        {0x3f808000u, 0x3f80},      /* half way, 0x3f80 even: down */
        {0x3f818000u, 0x3f82},      /* half way, 0x3f81 odd: up */
        {0x3f808001u, 0x3f81},      /* just past half: up */
        {0x3f807fffu, 0x3f80},      /* just short of half: down */
        {0xc0200000u, 0xc020},      /* -2.5 */
        {0x7f7fffffu, 0x7f80},      /* the largest float: to infinity */
        {0xff800000u, 0xff80},      /* -infinity */
        {0x00000001u, 0x0000},      /* the smallest subnormal: to zero */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float x = from_bits(cases[i].in);
        uint16_t h;
        cnn_bf16_pack(&x, &h, 1);
        assert_int_equal(h, cases[i].want);
    }
    float nan = from_bits(0x7fc00001u), back;
    uint16_t h;
    cnn_bf16_pack(&nan, &h, 1);
    cnn_bf16_unpack(&h, &back, 1);
    assert_true(isnan(back));
}

/* Every bfloat16 value survives unpack then round; a float's rounding
 * error is at most half a unit in the 8th bit. */
static void test_bf16_round_trip(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; h += 7) {
        uint16_t in = (uint16_t)h, again;
        float x;
        cnn_bf16_unpack(&in, &x, 1);
        if (isnan(x))
            continue;
        cnn_bf16_pack(&x, &again, 1);
        assert_int_equal(again, in);
    }
    float v[] = {3.14159265f, -1e-3f, 123456.789f, 0.1f};
    float r[4];
    memcpy(r, v, sizeof v);
    cnn_bf16_round(r, 4);
    for (int i = 0; i < 4; i++)
        assert_true(fabsf(r[i] - v[i]) <= fabsf(v[i]) * (1.0f / 256));
}

/* The lane sums against plain double sums, on lengths around the lanes
 * (16) and the blocks (1024), with an offset mean so that centring
 * matters. */
static void test_reductions(void **state)
{
    (void)state;
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 7, 0, 0);
    static const size_t lengths[] = {0, 1, 15, 16, 17, 1023, 1024, 1025,
                                     5000};
    enum { MAX = 5000 };
    float *x = malloc(MAX * sizeof *x), *d = malloc(MAX * sizeof *d);
    float *g = malloc(MAX * sizeof *g);
    assert_non_null(x);
    assert_non_null(d);
    assert_non_null(g);
    fill(x, MAX, &rng);
    fill(d, MAX, &rng);
    for (size_t i = 0; i < MAX; i++)
        x[i] += 3.0f;
    for (size_t k = 0; k < sizeof lengths / sizeof *lengths; k++) {
        size_t n = lengths[k];
        double s = 0, q = 0, sd = 0, sp = 0;
        for (size_t i = 0; i < n; i++) {
            s += x[i];
            q += (double)x[i] * x[i];
            sd += d[i];
            sp += (double)d[i] * (x[i] - 3.0);
        }
        double got_s = 1, got_q = 2, got_sd = 3, got_sp = 4;   /* added to */
        assert_true(fabs(cnn_sum(x, n) - s) <= 1e-5 * (1 + fabs(s)));
        cnn_sum_squares(x, n, 1, 0, &got_s, &got_q);
        cnn_sum_products(d, NULL, x, 3.0f, n, 1, 0, &got_sd, &got_sp);
        assert_true(fabs(got_s - 1 - s) <= 1e-5 * (1 + fabs(s)));
        assert_true(fabs(got_q - 2 - q) <= 1e-5 * (1 + fabs(q)));
        assert_true(fabs(got_sd - 3 - sd) <= 1e-4 * (1 + sqrt((double)n)));
        assert_true(fabs(got_sp - 4 - sp) <= 1e-4 * (1 + sqrt((double)n)));

        /* Gated by g = d shifted (about half positive, some exactly
         * zero): only where g > 0 counts. */
        double gd = 0, gp = 0;
        for (size_t i = 0; i < n; i++) {
            g[i] = i % 7 == 0 ? 0.0f : x[(i + 1) % n] - 3.0f;
            if (g[i] > 0) {
                gd += d[i];
                gp += (double)d[i] * (x[i] - 3.0);
            }
        }
        got_sd = got_sp = 0;
        cnn_sum_products(d, g, x, 3.0f, n, 1, 0, &got_sd, &got_sp);
        assert_true(fabs(got_sd - gd) <= 1e-4 * (1 + sqrt((double)n)));
        assert_true(fabs(got_sp - gp) <= 1e-4 * (1 + sqrt((double)n)));
    }

    /* A variance from the sums of activations far from zero, where the
     * mean of the squares and the squared mean agree in most digits. */
    for (size_t i = 0; i < MAX; i++)
        x[i] = x[i] - 3.0f + 1000.0f;
    double s = 0, q = 0, s2 = 0;
    cnn_sum_squares(x, MAX, 1, 0, &s, &q);
    for (size_t i = 0; i < MAX; i++)
        s2 += ((double)x[i] - s / MAX) * ((double)x[i] - s / MAX);
    double var = q / MAX - (s / MAX) * (s / MAX), want = s2 / MAX;
    assert_true(fabs(var - want) <= 1e-4 * want);
    free(x);
    free(d);
    free(g);
}

static void test_out_size(void **state)
{
    assert_int_equal(cnn_conv_out_size(28, 5, 1, 2), 28);
    assert_int_equal(cnn_conv_out_size(28, 2, 2, 0), 14);
    assert_int_equal(cnn_conv_out_size(7, 3, 2, 1), 4);
    assert_int_equal(cnn_conv_out_size(2, 5, 1, 0), -1);
}

/* The sums over planes: runs of n floats a stride apart, the floats
 * between them (set to a value that would show) left out, as for a
 * channel of a batch; plane sizes around the lanes, plane counts whose
 * lanes fill a block (1024) and more. */
static void test_reductions_planes(void **state)
{
    (void)state;
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 8, 0, 0);
    static const size_t sizes[] = {1, 7, 16, 49, 196, 784};
    static const size_t counts[] = {1, 3, 64, 130};
    enum { GAP = 5, MAX = 130 * (784 + 5) };
    float *x = malloc(MAX * sizeof *x), *d = malloc(MAX * sizeof *d);
    float *g = malloc(MAX * sizeof *g);
    assert_non_null(x);
    assert_non_null(d);
    assert_non_null(g);
    for (size_t a = 0; a < sizeof sizes / sizeof *sizes; a++)
        for (size_t b = 0; b < sizeof counts / sizeof *counts; b++) {
            size_t n = sizes[a], planes = counts[b], stride = n + GAP;
            fill(x, MAX, &rng);
            fill(d, MAX, &rng);
            fill(g, MAX, &rng);
            double s = 0, q = 0, sd = 0, sp = 0;
            for (size_t k = 0; k < planes; k++) {
                for (size_t i = 0; i < n; i++) {
                    size_t at = k * stride + i;
                    x[at] += 2.0f;
                    s += x[at];
                    q += (double)x[at] * x[at];
                    if (g[at] > 0) {
                        sd += d[at];
                        sp += (double)d[at] * (x[at] - 2.0);
                    }
                }
                for (size_t i = n; i < stride; i++)
                    x[k * stride + i] = d[k * stride + i] = 1e6f;
            }
            double got_s = 0, got_q = 0, got_sd = 0, got_sp = 0;
            cnn_sum_squares(x, n, planes, stride, &got_s, &got_q);
            cnn_sum_products(d, g, x, 2.0f, n, planes, stride, &got_sd,
                             &got_sp);
            double terms = sqrt((double)n * planes);
            assert_true(fabs(got_s - s) <= 1e-9 * (1 + fabs(s)));
            assert_true(fabs(got_q - q) <= 1e-9 * (1 + fabs(q)));
            assert_true(fabs(got_sd - sd) <= 1e-4 * (1 + terms));
            assert_true(fabs(got_sp - sp) <= 1e-4 * (1 + terms));
        }
    free(x);
    free(d);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_matches_naive),
        cmocka_unit_test(test_im2col_adjoint),
        cmocka_unit_test(test_im2col_layout),
        cmocka_unit_test(test_im2col_entries),
        cmocka_unit_test(test_out_size),
        cmocka_unit_test(test_reductions),
        cmocka_unit_test(test_reductions_planes),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_bf16_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
