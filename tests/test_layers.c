/*
 * Every layer kind: output shape, forward against a naive reference where
 * one is worth writing (dense, conv2d, pools), and a central
 * finite-difference check of the input and parameter gradients.
 *
 * The gradient check uses L = sum(y * r) for a fixed random r, so
 * dL/dy = r. Values are float, so the step is 5e-3 (inputs are spaced
 * 2e-2 apart, so no step crosses a ReLU kink or a max-pool tie; the
 * stacked test uses smooth layers only) and the tolerance on the relative
 * error |a - n| / max(|a| + |n|, 1e-2) is 1e-2; the worst
 * error seen is printed for each layer.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnn/config.h"
#include "cnn/net.h"
#include "cnn/ops.h"

static const double STEP = 5e-3;
static const double TOLERANCE = 1e-2;

struct fixture {
    struct cnn_config cfg;
    struct cnn_net net;
};

/* Builds a net from a YAML layer list (one item per line, indented by
 * four spaces). */
static void build(struct fixture *f, const char *layers, struct cnn_shape in,
                  int batch)
{
    char text[4096];
    snprintf(text, sizeof text,
             "data: {train: {images: a, labels: b}}\n"
             "model:\n  layers:\n%s", layers);
    struct cnn_error err = {0};
    assert_int_equal(cnn_config_load_string(&f->cfg, text, "t.yaml", ".",
                                            &err), CNN_OK);
    if (cnn_config_resolve(&f->cfg, &err) != CNN_OK ||
        cnn_net_build(&f->net, f->cfg.model_layers, in, batch, &err) != CNN_OK)
        fail_msg("%s: %s", err.where, err.message);
    cnn_net_init_params(&f->net, 7);
}

static void teardown(struct fixture *f)
{
    cnn_net_free(&f->net);
    cnn_config_free(&f->cfg);
}

/* Distinct values spaced 0.02 apart in random order, centred on zero:
 * no ties for max pooling and no value within a step of a ReLU kink. */
static void fill_distinct(float *x, size_t n, struct cnn_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = ((float)i - (float)n / 2.0f + 0.5f) * 0.02f;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = cnn_rng_below(rng, (uint32_t)(i + 1));
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

static double objective(struct fixture *f, const float *input,
                        const double *r, int n, bool train)
{
    struct cnn_net *net = &f->net;
    size_t in = cnn_shape_size(net->in), out = cnn_shape_size(net->out);
    struct cnn_rng saved = net->dropout_rng;
    memcpy(cnn_net_input(net), input, n * in * sizeof(float));
    const float *y = cnn_net_forward(net, n, train);
    net->dropout_rng = saved;       /* the same dropout mask every time */
    double L = 0;
    for (size_t i = 0; i < n * out; i++)
        L += y[i] * r[i];
    return L;
}

static double rel_error(double a, double b)
{
    double scale = fabs(a) + fabs(b);
    return fabs(a - b) / (scale > 1e-2 ? scale : 1e-2);
}

/* Checks dL/dx and dL/dparams for the whole net; returns the worst error. */
static double gradcheck(struct fixture *f, int n, bool train)
{
    struct cnn_net *net = &f->net;
    size_t in = cnn_shape_size(net->in), out = cnn_shape_size(net->out);
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 3, 99, 0);
    float *x = malloc(n * in * sizeof *x);
    double *r = malloc(n * out * sizeof *r);
    float *dout = malloc(n * out * sizeof *dout);
    float *dx = calloc(n * in, sizeof *dx);
    assert_non_null(x);
    assert_non_null(r);
    assert_non_null(dout);
    assert_non_null(dx);
    fill_distinct(x, n * in, &rng);
    for (size_t i = 0; i < n * out; i++) {
        r[i] = cnn_rng_normal(&rng);
        dout[i] = (float)r[i];
    }

    /* Analytic gradients. The net skips dL/dx for its first layer, so
     * call that layer's backward with a dx buffer ourselves (the layers
     * checked here start with one that has parameters, or are alone, so
     * the backward pass reaches layer 0). */
    assert_int_equal(net->grad_from, 0);
    objective(f, x, r, n, train);
    cnn_net_zero_grad(net);
    cnn_net_backward(net, dout, n);
    struct cnn_layer *l0 = &net->layers[0];
    float *keep = calloc(net->n_params ? net->n_params : 1, sizeof *keep);
    assert_non_null(keep);
    memcpy(keep, net->grads, net->n_params * sizeof *keep);
    l0->kind->backward(l0, net->acts[0], net->acts[1], net->dacts[1], dx, n);
    memcpy(net->grads, keep, net->n_params * sizeof *keep);
    free(keep);

    double worst = 0;
    for (size_t i = 0; i < n * in; i++) {
        float v = x[i];
        x[i] = v + (float)STEP;
        double up = objective(f, x, r, n, train);
        x[i] = v - (float)STEP;
        double down = objective(f, x, r, n, train);
        x[i] = v;
        double e = rel_error(dx[i], (up - down) / (2 * STEP));
        worst = e > worst ? e : worst;
    }
    for (size_t i = 0; i < net->n_params; i++) {
        float v = net->params[i];
        net->params[i] = v + (float)STEP;
        double up = objective(f, x, r, n, train);
        net->params[i] = v - (float)STEP;
        double down = objective(f, x, r, n, train);
        net->params[i] = v;
        double e = rel_error(net->grads[i], (up - down) / (2 * STEP));
        worst = e > worst ? e : worst;
    }
    free(x);
    free(r);
    free(dout);
    free(dx);
    return worst;
}

static void check_layer(const char *layers, struct cnn_shape in, int n,
                        bool train, struct cnn_shape want_out)
{
    struct fixture f = {0};
    build(&f, layers, in, n);
    assert_int_equal(f.net.out.c, want_out.c);
    assert_int_equal(f.net.out.h, want_out.h);
    assert_int_equal(f.net.out.w, want_out.w);
    double worst = gradcheck(&f, n, train);
    printf("# %-44.*s worst relative error %.2e\n",
           (int)strcspn(layers + 6, "\n"), layers + 6, worst);
    assert_true(worst < TOLERANCE);
    teardown(&f);
}

static void test_dense_grad(void **state)
{
    check_layer("    - dense: {units: 5}\n", (struct cnn_shape){7, 1, 1}, 3,
                true, (struct cnn_shape){5, 1, 1});
}

static void test_dense_nobias_grad(void **state)
{
    check_layer("    - dense: {units: 4, bias: false}\n",
                (struct cnn_shape){6, 1, 1}, 2, true,
                (struct cnn_shape){4, 1, 1});
}

static void test_conv2d_grad(void **state)
{
    check_layer("    - conv2d: {filters: 3, size: 3, pad: 1}\n",
                (struct cnn_shape){2, 5, 5}, 2, true,
                (struct cnn_shape){3, 5, 5});
}

/* Through Winograd's F(4x4, 3x3) (8 or more filters), the weight
 * gradient's included (16 input channels): the worst error is some
 * 5e-3, the transforms' rounding showing through central differences of
 * a float objective. F(2x2, 5x5) rounds coarser still, beyond what
 * they resolve at STEP; its checks against exact sums are
 * test_conv2d_winograd5_naive's. */
static void test_conv2d_winograd_grad(void **state)
{
    check_layer("    - conv2d: {filters: 8, size: 3, pad: 1}\n",
                (struct cnn_shape){16, 3, 2}, 1, true,
                (struct cnn_shape){8, 3, 2});
}

static void test_conv2d_stride_grad(void **state)
{
    check_layer("    - conv2d: {filters: 2, size: 3, stride: 2}\n",
                (struct cnn_shape){2, 7, 6}, 2, true,
                (struct cnn_shape){2, 3, 2});
}

static void test_conv2d_1x1_grad(void **state)
{
    check_layer("    - conv2d: {filters: 4, size: 1}\n",
                (struct cnn_shape){3, 4, 4}, 2, true,
                (struct cnn_shape){4, 4, 4});
}

static void test_maxpool_grad(void **state)
{
    check_layer("    - maxpool: {size: 2}\n", (struct cnn_shape){2, 6, 6}, 2,
                true, (struct cnn_shape){2, 3, 3});
}

static void test_maxpool_overlap_pad_grad(void **state)
{
    check_layer("    - maxpool: {size: 3, stride: 2, pad: 1}\n",
                (struct cnn_shape){2, 5, 5}, 2, true,
                (struct cnn_shape){2, 3, 3});
}

static void test_avgpool_grad(void **state)
{
    check_layer("    - avgpool: {size: 2}\n", (struct cnn_shape){3, 4, 4}, 2,
                true, (struct cnn_shape){3, 2, 2});
}

static void test_avgpool_pad_grad(void **state)
{
    check_layer("    - avgpool: {size: 3, stride: 1, pad: 1}\n",
                (struct cnn_shape){1, 4, 4}, 2, true,
                (struct cnn_shape){1, 4, 4});
}

static void test_flatten_grad(void **state)
{
    check_layer("    - flatten\n", (struct cnn_shape){2, 3, 3}, 2, true,
                (struct cnn_shape){18, 1, 1});
}

static void test_activation_grads(void **state)
{
    struct cnn_shape s = {3, 2, 2};
    check_layer("    - relu\n", s, 2, true, s);
    check_layer("    - leaky_relu: {slope: 0.1}\n", s, 2, true, s);
    check_layer("    - sigmoid\n", s, 2, true, s);
    check_layer("    - tanh\n", s, 2, true, s);
}

static void test_dropout_grad(void **state)
{
    struct cnn_shape s = {20, 1, 1};
    check_layer("    - dropout: {rate: 0.3}\n", s, 3, true, s);
}

static void test_stack_grad(void **state)
{
    check_layer("    - conv2d: {filters: 2, size: 3, pad: same}\n"
                "    - tanh\n"
                "    - avgpool: {size: 2}\n"
                "    - flatten\n"
                "    - dense: {units: 3}\n",
                (struct cnn_shape){1, 6, 6}, 2, true,
                (struct cnn_shape){3, 1, 1});
}

static void test_batchnorm_grad(void **state)
{
    check_layer("    - batchnorm\n", (struct cnn_shape){3, 3, 3}, 4, true,
                (struct cnn_shape){3, 3, 3});
    /* 1-D, after a dense layer. */
    check_layer("    - dense: {units: 5}\n    - batchnorm\n",
                (struct cnn_shape){4, 1, 1}, 6, true,
                (struct cnn_shape){5, 1, 1});
}

static void test_layernorm_rmsnorm_grad(void **state)
{
    struct cnn_shape s = {2, 3, 2};
    check_layer("    - layernorm\n", s, 3, true, s);
    check_layer("    - rmsnorm\n", s, 3, true, s);
    struct cnn_shape flat = {7, 1, 1};
    check_layer("    - layernorm\n", flat, 2, true, flat);
}

static void test_global_avgpool_grad(void **state)
{
    check_layer("    - global_avgpool\n", (struct cnn_shape){3, 4, 2}, 2,
                true, (struct cnn_shape){3, 1, 1});
}

static void test_residual_identity_grad(void **state)
{
    check_layer("    - residual:\n"
                "        body:\n"
                "          - conv2d: {filters: 2, size: 3, pad: 1}\n"
                "          - tanh\n"
                "          - conv2d: {filters: 2, size: 3, pad: 1}\n"
                "        activation: none\n",
                (struct cnn_shape){2, 4, 4}, 2, true,
                (struct cnn_shape){2, 4, 4});
}

static void test_residual_projection_grad(void **state)
{
    check_layer("    - residual:\n"
                "        body:\n"
                "          - conv2d: {filters: 3, size: 3, stride: 2, pad: 1}\n"
                "          - batchnorm\n"
                "          - tanh\n"
                "          - conv2d: {filters: 3, size: 3, pad: 1}\n"
                "        shortcut:\n"
                "          - conv2d: {filters: 3, size: 1, stride: 2}\n"
                "        activation: none\n",
                (struct cnn_shape){2, 5, 5}, 3, true,
                (struct cnn_shape){3, 3, 3});
}

static void test_residual_pad_repeat_grad(void **state)
{
    /* Two blocks: the first halves the size with a pad shortcut, the
     * copy keeps the shape (stride forced to 1, identity shortcut). */
    check_layer("    - residual:\n"
                "        body:\n"
                "          - conv2d: {filters: 3, size: 3, stride: 2, pad: 1}\n"
                "          - tanh\n"
                "        shortcut: pad\n"
                "        activation: none\n"
                "        repeat: 2\n",
                (struct cnn_shape){2, 4, 4}, 2, true,
                (struct cnn_shape){3, 2, 2});
}

static void test_residual_names_and_relu(void **state)
{
    struct fixture f = {0};
    build(&f, "    - residual:\n"
              "        body: [conv2d: {filters: 2, size: 1}, batchnorm]\n"
              "        shortcut: [conv2d: {filters: 2, size: 1}]\n"
              "        repeat: 2\n",
          (struct cnn_shape){2, 2, 2}, 2);
    assert_int_equal(f.net.n_layers, 2);
    assert_string_equal(f.net.layers[1].name, "residual_2");
    assert_int_equal(cnn_net_count_tensors(&f.net), 6 + 6 + 2);

    /* ReLU after the sum: no negative output. */
    float *x = cnn_net_input(&f.net);
    for (int i = 0; i < 16; i++)
        x[i] = (float)(i % 5) - 2.0f;
    const float *y = cnn_net_forward(&f.net, 2, true);
    for (int i = 0; i < 16; i++)
        assert_true(y[i] >= 0.0f);
    teardown(&f);
}

static void test_batchnorm_modes(void **state)
{
    struct fixture f = {0};
    build(&f, "    - batchnorm: {momentum: 0.5}\n", (struct cnn_shape){1, 1, 2},
          2);
    float in[4] = {1, 3, 5, 7};           /* mean 4, biased var 5 */
    memcpy(cnn_net_input(&f.net), in, sizeof in);
    const float *y = cnn_net_forward(&f.net, 2, true);
    assert_float_equal(y[0], -3 / sqrt(5 + 1e-5), 1e-5);
    const float *rm = f.net.layers[0].params[2].data;
    const float *rv = f.net.layers[0].params[3].data;
    assert_float_equal(rm[0], 0.5 * 4, 1e-6);           /* from 0 */
    assert_float_equal(rv[0], 0.5 * 1 + 0.5 * 20.0 / 3, 1e-5); /* unbiased */

    /* Evaluation uses the running statistics. */
    memcpy(cnn_net_input(&f.net), in, sizeof in);
    y = cnn_net_forward(&f.net, 2, false);
    assert_float_equal(y[0], (1 - rm[0]) / sqrt(rv[0] + 1e-5), 1e-5);
    teardown(&f);
}

/* A batchnorm (with its relu) over C x H x W, on `threads` threads:
 * its output, input gradient and parameter gradients into the given
 * buffers. */
enum { BN_N = 9, BN_MAX = 5 * 6 * 7 };

static void batchnorm_run(int threads, int C, int H, int W, float *y,
                          float *dx, float *grads)
{
    enum { N = BN_N };
    int SIZE = C * H * W;
    int saved = cnn_blas_threads(0);
    cnn_blas_threads(threads);
    struct fixture f = {0};
    build(&f, "    - batchnorm\n    - relu\n", (struct cnn_shape){C, H, W},
          N);
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 3, 1, 4);
    float *x = cnn_net_input(&f.net);
    for (int i = 0; i < N * SIZE; i++)
        x[i] = 2.0f + cnn_rng_normal(&rng);
    memcpy(y, cnn_net_forward(&f.net, N, true), N * SIZE * sizeof *y);
    float dy[N * BN_MAX];
    for (int i = 0; i < N * SIZE; i++)
        dy[i] = cnn_rng_normal(&rng);
    cnn_net_zero_grad(&f.net);
    struct cnn_layer *l = &f.net.layers[0];
    assert_true(l->applies_relu);
    l->kind->backward(l, x, f.net.acts[1], dy, dx, N);
    memcpy(grads, l->params[0].grad, C * sizeof *grads);
    memcpy(grads + C, l->params[1].grad, C * sizeof *grads);
    teardown(&f);
    cnn_blas_threads(saved);
}

/* The threads take the batch's examples and each example's sums are
 * added in order: the same bits on 1, 2 and 3 threads, for planes and
 * for the 1-D form's single pixels. */
static void test_batchnorm_threads(void **state)
{
    (void)state;
    static const int shapes[][3] = {{5, 6, 7}, {37, 1, 1}};
    enum { N = BN_N * BN_MAX, G = 2 * 37 };
    static float y1[N], dx1[N], g1[G], y2[N], dx2[N], g2[G];
    for (int k = 0; k < 2; k++) {
        const int *s = shapes[k];
        size_t n = (size_t)BN_N * s[0] * s[1] * s[2];
        batchnorm_run(1, s[0], s[1], s[2], y1, dx1, g1);
        for (int threads = 2; threads <= 3; threads++) {
            batchnorm_run(threads, s[0], s[1], s[2], y2, dx2, g2);
            assert_memory_equal(y1, y2, n * sizeof *y1);
            assert_memory_equal(dx1, dx2, n * sizeof *dx1);
            assert_memory_equal(g1, g2, 2 * s[0] * sizeof *g1);
        }
    }
}

/* --- forward against naive references ------------------------------------ */

static void test_conv2d_forward_naive(void **state)
{
    struct fixture f = {0};
    build(&f, "    - conv2d: {filters: 3, size: 3, stride: 2, pad: 1}\n",
          (struct cnn_shape){2, 7, 5}, 2);
    struct cnn_net *net = &f.net;
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 1, 2, 3);
    size_t in = cnn_shape_size(net->in);
    float *x = cnn_net_input(net);
    for (size_t i = 0; i < 2 * in; i++)
        x[i] = cnn_rng_normal(&rng);
    const float *y = cnn_net_forward(net, 2, false);
    const float *W = net->layers[0].params[0].data;     /* [3, 2, 3, 3] */
    const float *b = net->layers[0].params[1].data;
    int OH = net->out.h, OW = net->out.w;
    assert_int_equal(OH, 4);
    assert_int_equal(OW, 3);

    double worst = 0;
    for (int n = 0; n < 2; n++)
        for (int o = 0; o < 3; o++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double acc = b[o];
                    for (int c = 0; c < 2; c++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int yy = oy * 2 - 1 + ky, xx = ox * 2 - 1 + kx;
                                if (yy < 0 || yy >= 7 || xx < 0 || xx >= 5)
                                    continue;
                                acc += (double)W[((o * 2 + c) * 3 + ky) * 3 + kx] *
                                       x[n * in + (c * 7 + yy) * 5 + xx];
                            }
                    double got = y[((n * 3 + o) * OH + oy) * OW + ox];
                    worst = fmax(worst, fabs(got - acc));
                }
    assert_true(worst < 1e-5);
    teardown(&f);
}

/* A KxK "same" convolution of C channels of H x W into F filters, for a
 * batch of N (built for 17), built with `built` threads and run with
 * `run`: forward, dW, db and dx against direct sums over the definition,
 * to within a bound that grows with the square root of the terms of a
 * sum. At 3x3 over 3 x 24 x 24 into 5 the batch is cut into chunks of 7
 * examples; with channels in sixteens the weight gradient is Winograd's
 * too. */
static void check_conv(int K, int C, int H, int W, int F, int built, int run,
                       int N)
{
    int KK = K * K, P = K / 2;
    int threads = cnn_blas_threads(0);
    cnn_blas_threads(built);
    struct fixture f = {0};
    char layer[80];
    snprintf(layer, sizeof layer,
             "    - conv2d: {filters: %d, size: %d, pad: %d}\n", F, K, P);
    build(&f, layer, (struct cnn_shape){C, H, W}, 17);
    cnn_blas_threads(run);
    struct cnn_net *net = &f.net;
    struct cnn_layer *l = &net->layers[0];
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 4, 5, 6);
    size_t in = cnn_shape_size(net->in), out = cnn_shape_size(net->out);
    float *x = cnn_net_input(net);
    for (size_t i = 0; i < N * in; i++)
        x[i] = cnn_rng_normal(&rng);
    const float *y = cnn_net_forward(net, N, true);
    float *dy = malloc(N * out * sizeof *dy);
    float *dx = malloc(N * in * sizeof *dx);
    double *rdw = calloc(F * C * KK, sizeof *rdw);
    double *rdx = calloc(N * in, sizeof *rdx);
    assert_non_null(dy);
    assert_non_null(dx);
    assert_non_null(rdw);
    assert_non_null(rdx);
    for (size_t i = 0; i < N * out; i++)
        dy[i] = cnn_rng_normal(&rng);
    cnn_net_zero_grad(net);
    l->kind->backward(l, x, y, dy, dx, N);

    const float *Wt = l->params[0].data, *b = l->params[1].data;
    const float *dW = l->params[0].grad, *db = l->params[1].grad;
    double worst_y = 0, worst_db = 0;
    for (int o = 0; o < F; o++) {
        double sum_dy = 0;
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < H; oy++)
                for (int ox = 0; ox < W; ox++) {
                    size_t at = (((size_t)n * F + o) * H + oy) * W + ox;
                    double acc = b[o];
                    for (int c = 0; c < C; c++)
                        for (int k = 0; k < KK; k++) {
                            int yy = oy - P + k / K, xx = ox - P + k % K;
                            if (yy < 0 || yy >= H || xx < 0 || xx >= W)
                                continue;
                            size_t xi = n * in + ((size_t)c * H + yy) * W + xx;
                            size_t wi = (o * C + c) * KK + k;
                            acc += (double)Wt[wi] * x[xi];
                            rdw[wi] += (double)dy[at] * x[xi];
                            rdx[xi] += (double)dy[at] * Wt[wi];
                        }
                    worst_y = fmax(worst_y, fabs(y[at] - acc));
                    sum_dy += dy[at];
                }
        worst_db = fmax(worst_db, fabs(db[o] - sum_dy));
    }
    double worst_dw = 0, worst_dx = 0;
    for (int i = 0; i < F * C * KK; i++)
        worst_dw = fmax(worst_dw, fabs(dW[i] - rdw[i]));
    for (size_t i = 0; i < N * in; i++)
        worst_dx = fmax(worst_dx, fabs(dx[i] - rdx[i]));
    /* Terms of each sum: y's and dx's, dW's and db's. */
    double ty = sqrt((double)C * KK / 27), tw = sqrt((double)N * H * W / 10e3);
    printf("# conv %dx%d %dx%dx%d -> %d, n %d: y %.1e dx %.1e dW %.1e "
           "db %.1e\n", K, K, C, H, W, F, N, worst_y, worst_dx, worst_dw,
           worst_db);
    assert_true(worst_y < 1e-4 * fmax(ty, 1));
    assert_true(worst_db < 1e-2 * fmax(tw, 1));  /* 10^4 normal values */
    assert_true(worst_dw < 1e-2 * fmax(tw, 1));
    assert_true(worst_dx < 1e-4 * fmax(ty, 1));

    free(dy);
    free(dx);
    free(rdw);
    free(rdx);
    teardown(&f);
    cnn_blas_threads(threads);
}

static void check_conv_chunks(int built, int run, int N)
{
    check_conv(3, 3, 24, 24, 5, built, run, N);
}

static void test_conv2d_chunks_naive(void **state)
{
    (void)state;
    check_conv_chunks(2, 2, 17);        /* 3 chunks on 2 threads */
    check_conv_chunks(2, 1, 17);        /* fewer threads than slots */
    check_conv_chunks(1, 4, 17);        /* more threads than slots */
    check_conv_chunks(3, 3, 17);        /* as many parts as chunks */
    check_conv_chunks(2, 2, 9);         /* a short last batch */
}

/* F(4x4, 3x3) (8 or more channels in and out): the weight gradient
 * Winograd's too with input channels in sixteens, im2col's otherwise;
 * even and odd sizes, filters in and out of sixteens, planes of fewer
 * tiles than a vector holds, whose chunks of examples share vectors
 * (cnn_wino_fill), with a short last chunk. */
static void test_conv2d_winograd_naive(void **state)
{
    (void)state;
    check_conv(3, 16, 8, 8, 16, 2, 2, 17);
    check_conv(3, 16, 7, 9, 9, 2, 2, 17);
    check_conv(3, 32, 3, 5, 20, 2, 1, 17);
    check_conv(3, 16, 14, 14, 32, 2, 2, 5);
    check_conv(3, 16, 1, 1, 8, 1, 1, 3);
    check_conv(3, 12, 7, 9, 10, 2, 2, 17);
    check_conv(3, 16, 5, 70, 16, 2, 2, 3);  /* rows of two vectors of slots */
}

/* F(2x2, 5x5): LeNet's second layer, odd sizes, channel counts whose
 * weight gradient is im2col's, planes smaller than the window, and rows
 * wider than one vector of slots. */
static void test_conv2d_winograd5_naive(void **state)
{
    (void)state;
    check_conv(5, 32, 14, 14, 64, 2, 2, 9);
    check_conv(5, 8, 28, 28, 32, 2, 2, 5);
    check_conv(5, 16, 9, 7, 9, 2, 1, 17);
    check_conv(5, 12, 6, 5, 8, 1, 1, 4);
    check_conv(5, 16, 2, 3, 16, 2, 2, 3);
    check_conv(5, 16, 3, 45, 16, 2, 2, 3);
}

static void test_dense_forward_naive(void **state)
{
    struct fixture f = {0};
    build(&f, "    - dense: {units: 4}\n", (struct cnn_shape){5, 1, 1}, 3);
    float *x = cnn_net_input(&f.net);
    for (int i = 0; i < 15; i++)
        x[i] = (float)(i % 7) - 3.0f;
    const float *y = cnn_net_forward(&f.net, 3, false);
    const float *W = f.net.layers[0].params[0].data;    /* [4, 5] */
    const float *b = f.net.layers[0].params[1].data;
    for (int n = 0; n < 3; n++)
        for (int o = 0; o < 4; o++) {
            double acc = b[o];
            for (int i = 0; i < 5; i++)
                acc += (double)W[o * 5 + i] * x[n * 5 + i];
            assert_float_equal(y[n * 4 + o], acc, 1e-5);
        }
    teardown(&f);
}

/* A dense layer with passes large enough to be cut among the threads
 * (dense.c's SPLIT_MACS), on `threads` of them: y, dW, db and dx against
 * exact sums, for an odd batch and odd widths. */
static void check_dense(int threads, int N, int IN, int OUT)
{
    int saved = cnn_blas_threads(0);
    cnn_blas_threads(threads);
    struct fixture f = {0};
    char layer[80];
    snprintf(layer, sizeof layer, "    - dense: {units: %d}\n", OUT);
    build(&f, layer, (struct cnn_shape){IN, 1, 1}, N);
    struct cnn_layer *l = &f.net.layers[0];
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 1, 2, 3);
    float *x = cnn_net_input(&f.net);
    for (int i = 0; i < N * IN; i++)
        x[i] = cnn_rng_normal(&rng);
    const float *y = cnn_net_forward(&f.net, N, true);
    float *dy = malloc((size_t)N * OUT * sizeof *dy);
    float *dx = malloc((size_t)N * IN * sizeof *dx);
    assert_non_null(dy);
    assert_non_null(dx);
    for (int i = 0; i < N * OUT; i++)
        dy[i] = cnn_rng_normal(&rng);
    cnn_net_zero_grad(&f.net);
    l->kind->backward(l, x, y, dy, dx, N);

    const float *W = l->params[0].data, *b = l->params[1].data;
    const float *dW = l->params[0].grad, *db = l->params[1].grad;
    double worst_y = 0, worst_dw = 0, worst_db = 0, worst_dx = 0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            double acc = b[o];
            for (int i = 0; i < IN; i++)
                acc += (double)W[o * IN + i] * x[n * IN + i];
            worst_y = fmax(worst_y, fabs(y[n * OUT + o] - acc));
        }
    for (int o = 0; o < OUT; o++) {
        double sum = 0;
        for (int n = 0; n < N; n++)
            sum += dy[n * OUT + o];
        worst_db = fmax(worst_db, fabs(db[o] - sum));
        for (int i = 0; i < IN; i++) {
            double acc = 0;
            for (int n = 0; n < N; n++)
                acc += (double)dy[n * OUT + o] * x[n * IN + i];
            worst_dw = fmax(worst_dw, fabs(dW[o * IN + i] - acc));
        }
    }
    for (int n = 0; n < N; n++)
        for (int i = 0; i < IN; i++) {
            double acc = 0;
            for (int o = 0; o < OUT; o++)
                acc += (double)dy[n * OUT + o] * W[o * IN + i];
            worst_dx = fmax(worst_dx, fabs(dx[n * IN + i] - acc));
        }
    printf("# dense %d -> %d, n %d, %d threads: y %.1e dW %.1e db %.1e "
           "dx %.1e\n", IN, OUT, N, threads, worst_y, worst_dw, worst_db,
           worst_dx);
    assert_true(worst_y < 1e-4);
    assert_true(worst_dw < 1e-4 * N);
    assert_true(worst_db < 1e-5 * N);
    assert_true(worst_dx < 1e-4);
    free(dy);
    free(dx);
    teardown(&f);
    cnn_blas_threads(saved);
}

static void test_dense_split_naive(void **state)
{
    (void)state;
    check_dense(2, 37, 301, 129);
    check_dense(3, 37, 301, 129);
    check_dense(1, 37, 301, 129);
}

static void test_pool_forward_values(void **state)
{
    struct fixture f = {0};
    build(&f, "    - maxpool: {size: 2}\n", (struct cnn_shape){1, 2, 4}, 1);
    float in[8] = {1, 5, -2, 0, 3, 2, -1, -3};
    memcpy(cnn_net_input(&f.net), in, sizeof in);
    const float *y = cnn_net_forward(&f.net, 1, false);
    assert_float_equal(y[0], 5, 0);
    assert_float_equal(y[1], 0, 0);
    teardown(&f);

    build(&f, "    - avgpool: {size: 2}\n", (struct cnn_shape){1, 2, 4}, 1);
    memcpy(cnn_net_input(&f.net), in, sizeof in);
    y = cnn_net_forward(&f.net, 1, false);
    assert_float_equal(y[0], 11.0 / 4, 1e-6);
    assert_float_equal(y[1], -6.0 / 4, 1e-6);
    teardown(&f);
}

/* 2x2 max-pooling at stride 2 (its AVX-512 loop where built for it) on
 * odd sizes, values in few levels so that windows hold ties: outputs,
 * and gradients routed to the first maximum of each window in row
 * order, against a direct scan. */
static void test_maxpool2_naive(void **state)
{
    (void)state;
    enum { C = 3, H = 7, W = 9, N = 2, OH = 3, OW = 4 };
    struct fixture f = {0};
    build(&f, "    - maxpool: {size: 2}\n", (struct cnn_shape){C, H, W}, N);
    struct cnn_layer *l = &f.net.layers[0];
    float *x = cnn_net_input(&f.net);
    for (int i = 0; i < N * C * H * W; i++)
        x[i] = (float)((i * 7 + i / 5) % 4);
    const float *y = cnn_net_forward(&f.net, N, true);
    float dy[N * C * OH * OW], dx[N * C * H * W];
    for (int i = 0; i < N * C * OH * OW; i++)
        dy[i] = (float)(i + 1);
    l->kind->backward(l, x, y, dy, dx, N);

    float want_dx[N * C * H * W];
    memset(want_dx, 0, sizeof want_dx);
    for (int p = 0; p < N * C; p++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                int at = -1;
                for (int k = 0; k < 4; k++) {
                    int i = p * H * W + (2 * oy + k / 2) * W + 2 * ox + k % 2;
                    if (at < 0 || x[i] > x[at])
                        at = i;
                }
                int o = (p * OH + oy) * OW + ox;
                assert_float_equal(y[o], x[at], 0);
                want_dx[at] += dy[o];
            }
    for (int i = 0; i < N * C * H * W; i++)
        assert_float_equal(dx[i], want_dx[i], 0);
    teardown(&f);
}

static void test_dropout_modes(void **state)
{
    struct fixture f = {0};
    build(&f, "    - dropout: {rate: 0.5}\n", (struct cnn_shape){1000, 1, 1},
          1);
    float *x = cnn_net_input(&f.net);
    for (int i = 0; i < 1000; i++)
        x[i] = 1.0f;
    const float *y = cnn_net_forward(&f.net, 1, false);
    for (int i = 0; i < 1000; i++)
        assert_float_equal(y[i], 1.0, 0);

    y = cnn_net_forward(&f.net, 1, true);
    int zeros = 0;
    for (int i = 0; i < 1000; i++) {
        assert_true(y[i] == 0.0f || y[i] == 2.0f);
        zeros += y[i] == 0.0f;
    }
    /* Binomial(1000, 0.5): 400..600 holds with overwhelming probability,
     * and the seed fixes it anyway. */
    assert_in_range(zeros, 400, 600);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_grad),
        cmocka_unit_test(test_dense_nobias_grad),
        cmocka_unit_test(test_conv2d_grad),
        cmocka_unit_test(test_conv2d_winograd_grad),
        cmocka_unit_test(test_conv2d_stride_grad),
        cmocka_unit_test(test_conv2d_1x1_grad),
        cmocka_unit_test(test_maxpool_grad),
        cmocka_unit_test(test_maxpool_overlap_pad_grad),
        cmocka_unit_test(test_avgpool_grad),
        cmocka_unit_test(test_avgpool_pad_grad),
        cmocka_unit_test(test_flatten_grad),
        cmocka_unit_test(test_activation_grads),
        cmocka_unit_test(test_dropout_grad),
        cmocka_unit_test(test_stack_grad),
        cmocka_unit_test(test_batchnorm_grad),
        cmocka_unit_test(test_global_avgpool_grad),
        cmocka_unit_test(test_layernorm_rmsnorm_grad),
        cmocka_unit_test(test_residual_identity_grad),
        cmocka_unit_test(test_residual_projection_grad),
        cmocka_unit_test(test_residual_pad_repeat_grad),
        cmocka_unit_test(test_residual_names_and_relu),
        cmocka_unit_test(test_batchnorm_modes),
        cmocka_unit_test(test_batchnorm_threads),
        cmocka_unit_test(test_conv2d_forward_naive),
        cmocka_unit_test(test_conv2d_chunks_naive),
        cmocka_unit_test(test_conv2d_winograd_naive),
        cmocka_unit_test(test_conv2d_winograd5_naive),
        cmocka_unit_test(test_dense_forward_naive),
        cmocka_unit_test(test_dense_split_naive),
        cmocka_unit_test(test_pool_forward_values),
        cmocka_unit_test(test_maxpool2_naive),
        cmocka_unit_test(test_dropout_modes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
