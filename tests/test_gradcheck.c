/*
 * The whole-net gradient check: correct layers pass (dense, conv,
 * pooling, batchnorm in training mode, dropout with its masks held,
 * residual blocks with layer normalization), the parameters come back
 * untouched, gradients too small for float32 are reported unresolved
 * rather than judged, and a backward pass made wrong on purpose (a
 * scaled gradient, two entries swapped) fails exactly the layer it was
 * made wrong in.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/config.h"
#include "cnn/gradcheck.h"
#include "cnn/net.h"
#include "testutil.h"

#define PREFIX \
    "data:\n  train: {images: a, labels: b}\n" \
    "model:\n  layers:\n"

static struct cnn_config cfg;
static struct cnn_net net;
static struct cnn_gradcheck_result res;

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    memset(&net, 0, sizeof net);
    memset(&res, 0, sizeof res);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cnn_gradcheck_free(&res);
    cnn_net_free(&net);
    cnn_config_free(&cfg);
    return 0;
}

static void build(const char *layers, struct cnn_shape in, int batch)
{
    size_t n = strlen(PREFIX) + strlen(layers) + 1;
    char *text = malloc(n);
    assert_non_null(text);
    snprintf(text, n, "%s%s", PREFIX, layers);
    struct cnn_error err = {0};
    enum cnn_status st = cnn_config_load_string(&cfg, text, "test.yaml",
                                                "/base", &err);
    free(text);
    if (st == CNN_OK)
        st = cnn_config_resolve(&cfg, &err);
    if (st == CNN_OK)
        st = cnn_net_build(&net, cfg.model_layers, in, batch, &err);
    if (st != CNN_OK)
        fail_msg("%s: %s", err.where, err.message);
    cnn_net_init_params(&net, 3);
}

static void check(void)
{
    struct cnn_gradcheck_opts o = cnn_gradcheck_defaults();
    struct cnn_error err = {0};
    assert_int_equal(cnn_gradcheck_run(&net, CNN_LOSS_CROSS_ENTROPY, &o, &res,
                                       &err), CNN_OK);
}

static const struct cnn_gradcheck_layer *row(const char *name)
{
    for (int i = 0; i < res.n_layers; i++)
        if (strcmp(res.layers[i].name, name) == 0)
            return &res.layers[i];
    fail_msg("no row for %s", name);
    return NULL;
}

/* Prints the rows of a failed expectation. */
static void show(void)
{
    for (int i = 0; i < res.n_layers; i++) {
        const struct cnn_gradcheck_layer *l = &res.layers[i];
        print_message("%-30s dir %.3g entry %.3g (%s) unresolved %d/%d "
                      "unsettled %d %s\n", l->name, l->worst_direction,
                      l->worst_entry, l->worst_tensor ? l->worst_tensor : "-",
                      l->unresolved_directions, l->tensors, l->unsettled,
                      l->pass ? "ok" : "FAIL");
    }
}

static void expect_pass(void)
{
    if (!res.pass)
        show();
    assert_true(res.pass);
    for (int i = 0; i < res.n_layers; i++)
        assert_true(res.layers[i].pass);
}

/* --- correct layers ------------------------------------------------------ */

static void test_dense_passes_tightly(void **state)
{
    (void)state;
    build("    - dense: {units: 8}\n    - tanh\n    - dense: {units: 5}\n",
          (struct cnn_shape){6, 1, 1}, 4);
    float *before = malloc(net.n_params * sizeof *before);
    assert_non_null(before);
    memcpy(before, net.params, net.n_params * sizeof *before);
    check();
    expect_pass();

    assert_int_equal(res.n_layers, 2);
    assert_int_equal(res.n_examples, 4);
    assert_string_equal(res.layers[0].name, "dense_1");
    assert_int_equal(res.layers[0].tensors, 2);
    /* 48 weights, 20 of them drawn, and all 8 biases. */
    assert_int_equal(res.layers[0].entries, 28);
    /* Smooth and shallow: far inside the tolerances. */
    for (int i = 0; i < 2; i++) {
        assert_true(res.layers[i].worst_direction < 1e-3);
        assert_true(res.layers[i].worst_entry < 1e-2);
        assert_int_equal(res.layers[i].unresolved_directions, 0);
    }
    /* Checked, and put back as they were, to the bit. */
    assert_memory_equal(before, net.params, net.n_params * sizeof *before);
    free(before);
}

static void test_conv_pool_batchnorm_dropout_pass(void **state)
{
    (void)state;
    build("    - conv2d: {filters: 3, size: 3, pad: 1}\n"
          "    - batchnorm\n"
          "    - relu\n"
          "    - maxpool: {size: 2}\n"
          "    - dropout: {rate: 0.3}\n"
          "    - flatten\n"
          "    - dense: {units: 4}\n",
          (struct cnn_shape){2, 6, 6}, 4);
    check();
    expect_pass();
    assert_int_equal(res.n_layers, 3);
    /* batchnorm: weight and bias; its running statistics are buffers. */
    assert_int_equal(row("batchnorm_1")->tensors, 2);
}

static void test_residual_layernorm_pass(void **state)
{
    (void)state;
    build("    - dense: {units: 6}\n"
          "    - residual:\n"
          "        body:\n"
          "          - layernorm\n"
          "          - dense: {units: 6}\n"
          "          - relu\n"
          "        activation: none\n"
          "        repeat: 2\n"
          "    - dense: {units: 3}\n",
          (struct cnn_shape){5, 1, 1}, 4);
    check();
    expect_pass();
    assert_int_equal(row("residual_2.body.layernorm_1")->tensors, 2);
    assert_int_equal(row("residual_1.body.dense_1")->tensors, 2);
}

/* Deep enough that the first layer's gradient is far below what a
 * float32 difference resolves: unresolved, neither passed nor failed. */
static void test_vanishing_is_unresolved(void **state)
{
    (void)state;
    char layers[2048] = "";
    for (int i = 0; i < 24; i++)
        strcat(layers, "    - dense: {units: 8}\n    - sigmoid\n");
    strcat(layers, "    - dense: {units: 3}\n");
    build(layers, (struct cnn_shape){4, 1, 1}, 4);
    check();
    expect_pass();
    assert_int_equal(row("dense_1")->unresolved_directions, 2);
    assert_int_equal(row("dense_25")->unresolved_directions, 0);
}

/* --- wrong on purpose ---------------------------------------------------- */

/* A kind like the one it replaces, whose backward is made wrong after
 * the real one ran. */
static struct cnn_layer_kind broken;
static const struct cnn_layer_kind *real;
static void (*spoil)(struct cnn_layer *l);

static void broken_backward(struct cnn_layer *l, const float *x,
                            const float *y, const float *dy, float *dx, int n)
{
    real->backward(l, x, y, dy, dx, n);
    spoil(l);
}

static void break_layer(int i, void (*how)(struct cnn_layer *l))
{
    real = net.layers[i].kind;
    broken = *real;
    broken.backward = broken_backward;
    spoil = how;
    net.layers[i].kind = &broken;
}

/* Three per cent too much weight gradient. */
static void scale_weight_grad(struct cnn_layer *l)
{
    for (size_t j = 0; j < l->params[0].count; j++)
        l->params[0].grad[j] *= 1.03f;
}

/* The gradients of two weights trade places. */
static void swap_two_entries(struct cnn_layer *l)
{
    float *g = l->params[0].grad;
    float t = g[1];
    g[1] = g[4];
    g[4] = t;
}

static void test_scaled_gradient_fails_its_layer(void **state)
{
    (void)state;
    build("    - dense: {units: 8}\n    - relu\n    - dense: {units: 8}\n"
          "    - relu\n    - dense: {units: 5}\n",
          (struct cnn_shape){6, 1, 1}, 4);
    break_layer(2, scale_weight_grad);
    check();
    assert_false(res.pass);
    assert_true(row("dense_1")->pass);
    assert_false(row("dense_2")->pass);
    assert_true(row("dense_3")->pass);
    /* 3% on every entry: about 1.5% relative error along the gradient. */
    assert_true(row("dense_2")->worst_direction > 1e-2);
    assert_true(row("dense_2")->worst_direction < 2e-2);
}

static void test_swapped_entries_fail_their_layer(void **state)
{
    (void)state;
    build("    - dense: {units: 3}\n    - tanh\n    - dense: {units: 4}\n",
          (struct cnn_shape){3, 1, 1}, 4);
    break_layer(0, swap_two_entries);
    check();
    /* Nine weights, all checked one by one: the two swapped ones are
     * far off (unless equal by chance, which the seed rules out). */
    assert_false(row("dense_1")->pass);
    assert_true(row("dense_1")->worst_entry > 0.1);
    assert_string_equal(row("dense_1")->worst_tensor, "weight");
    assert_true(row("dense_1")->worst_index == 1 ||
                row("dense_1")->worst_index == 4);
    assert_true(row("dense_2")->pass);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_dense_passes_tightly),
        T(test_conv_pool_batchnorm_dropout_pass),
        T(test_residual_layernorm_pass),
        T(test_vanishing_is_unresolved),
        T(test_scaled_gradient_fails_its_layer),
        T(test_swapped_entries_fail_their_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
