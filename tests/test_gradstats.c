/*
 * Gradient statistics: the layer table (nested names, frozen layers and
 * buffers left out), per-layer norms against hand-computed ones, the
 * rows of grad_stats.csv around a simulated optimizer step, cutting the
 * file back for a resume, the rate-limited vanishing and exploding
 * warnings; and, for `plot --grads`, reading the file back and drawing
 * it.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/config.h"
#include "cnn/gradstats.h"
#include "cnn/net.h"
#include "cnn/runs.h"
#include "testutil.h"

#define PREFIX \
    "data:\n  train: {images: a, labels: b}\n" \
    "model:\n  layers:\n"

/* What a test holds, freed by teardown even when an assertion ends the
 * test early. */
static struct cnn_config cfg;
static struct cnn_net net;
static struct cnn_gradstats gs;
static struct cnn_grad_curves curves;
static char *dir, *log_text;
static size_t log_len;
static FILE *log_mem;
static struct cnn_log log_;

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    memset(&net, 0, sizeof net);
    memset(&gs, 0, sizeof gs);
    memset(&curves, 0, sizeof curves);
    dir = test_tmpdir();
    log_text = NULL;
    log_mem = open_memstream(&log_text, &log_len);
    if (!dir || !log_mem)
        return -1;
    cnn_log_init(&log_, log_mem, false);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cnn_gradstats_free(&gs);
    cnn_grad_curves_free(&curves);
    cnn_net_free(&net);
    cnn_config_free(&cfg);
    if (log_mem)
        fclose(log_mem);
    free(log_text);
    test_rm_tree(dir);
    free(dir);
    return 0;
}

/* Everything logged so far. */
static const char *logged(void)
{
    fflush(log_mem);
    return log_text ? log_text : "";
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void build(const char *layers, int features)
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
        st = cnn_net_build(&net, cfg.model_layers,
                           (struct cnn_shape){features, 1, 1}, 4, &err);
    if (st != CNN_OK)
        fail_msg("%s: %s", err.where, err.message);
    cnn_net_init_params(&net, 1);
}

static void start(long long every, long long check_every)
{
    const struct cnn_gradstats_config c = {
        .every = every, .check_every = check_every,
        .vanishing_ratio = 1e-4, .exploding_ratio = 1e4,
    };
    struct cnn_error err = {0};
    assert_int_equal(cnn_gradstats_init(&gs, &net, &c, &err), CNN_OK);
}

static char *path_of(const char *name)
{
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* --- the layer table ----------------------------------------------------- */

static const char NESTED[] =
    "    - dense: {units: 6}\n"
    "    - batchnorm\n"
    "    - relu\n"
    "    - residual:\n"
    "        body:\n"
    "          - dense: {units: 6}\n"
    "          - layernorm\n"
    "    - dense: {units: 5, trainable: false}\n"
    "    - dense: {units: 3, name: head}\n";

static void test_table_names_nested_layers(void **state)
{
    (void)state;
    build(NESTED, 4);
    start(1, 1);

    const char *want[] = {
        "dense_1", "batchnorm_1", "residual_1.body.dense_1",
        "residual_1.body.layernorm_1", "head",
    };
    assert_int_equal(gs.n_layers, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(gs.layers[i].name, want[i]);
    /* batchnorm's running statistics are not trained; the frozen dense
     * is left out altogether. */
    assert_int_equal(gs.layers[1].n_spans, 2);
    size_t trainable = (4 * 6 + 6) + (6 + 6) + (6 * 6 + 6) + (6 + 6) +
                       (5 * 3 + 3);
    assert_int_equal(gs.n_trainable, trainable);
}

/* --- norms --------------------------------------------------------------- */

static void test_norms_per_layer(void **state)
{
    (void)state;
    build("    - dense: {units: 2}\n    - relu\n    - dense: {units: 1}\n", 3);
    start(1, 1);
    assert_int_equal(gs.n_layers, 2);

    /* dense_1: weight [2, 3] and bias [2]; dense_2: weight [1, 2], bias
     * [1]: 11 floats in all, set to 1..11. */
    assert_int_equal(net.n_params, 11);
    float v[11], zero[11] = {0};
    for (int i = 0; i < 11; i++)
        v[i] = (float)(i + 1);
    double out[2];
    cnn_gradstats_norms(&gs, v, out);
    double first = 0, second = 0;
    for (int i = 0; i < 8; i++)
        first += (i + 1) * (i + 1);
    for (int i = 8; i < 11; i++)
        second += (i + 1) * (i + 1);
    assert_float_equal(out[0], sqrt(first), 1e-12);
    assert_float_equal(out[1], sqrt(second), 1e-12);

    cnn_gradstats_diff_norms(&gs, v, zero, out);
    assert_float_equal(out[0], sqrt(first), 1e-12);
    cnn_gradstats_diff_norms(&gs, v, v, out);
    assert_float_equal(out[1], 0.0, 0.0);
}

/* --- rows around a step -------------------------------------------------- */

/* Plain SGD on the net's block, with lr. */
static void sgd(float lr)
{
    for (size_t i = 0; i < net.n_params; i++)
        net.params[i] -= lr * net.grads[i];
}

static void fill_grads(void)
{
    for (size_t i = 0; i < net.n_params; i++)
        net.grads[i] = (float)((i % 5) + 1) * 0.01f;
}

static void test_rows_every_n_steps(void **state)
{
    (void)state;
    build("    - dense: {units: 2}\n    - relu\n    - dense: {units: 1}\n", 3);
    start(2, 0);
    struct cnn_error err = {0};
    assert_int_equal(cnn_gradstats_open(&gs, path_of("g.csv"), 0, &log_,
                                        &err), CNN_OK);

    double grad[2], weight[2];
    for (long long step = 1; step <= 5; step++) {
        fill_grads();
        if (step == 4) {
            cnn_gradstats_norms(&gs, net.grads, grad);
            cnn_gradstats_norms(&gs, net.params, weight);
        }
        cnn_gradstats_before(&gs, &net, step);
        sgd(0.5f);
        cnn_gradstats_after(&gs, &net, step, 1, &log_);
    }
    cnn_gradstats_close(&gs);

    const char *text = slurp(path_of("g.csv"));
    static const char header[] = "step,epoch,layer,grad_norm,weight_norm,"
                                 "update_ratio\n";
    assert_true(strncmp(text, header, strlen(header)) == 0);
    /* Steps 2 and 4, two layers each. */
    assert_int_equal(count(text, "\n"), 5);
    assert_int_equal(count(text, "\n2,1,dense_1,"), 1);
    assert_int_equal(count(text, "\n4,1,dense_2,"), 1);
    assert_int_equal(count(text, "\n3,"), 0);

    /* Step 4's first row: its numbers, the update being lr * grad. */
    const char *row = strstr(text, "\n4,1,dense_1,") + 1;
    double g, w, r;
    assert_int_equal(sscanf(row, "4,1,dense_1,%lf,%lf,%lf", &g, &w, &r), 3);
    assert_float_equal(g, grad[0], 1e-5 * grad[0]);
    assert_float_equal(w, weight[0], 1e-5 * weight[0]);
    assert_float_equal(r, 0.5 * grad[0] / weight[0], 1e-4 * r);
    assert_string_equal(logged(), "");
}

static void test_resume_cuts_the_file(void **state)
{
    (void)state;
    build("    - dense: {units: 2}\n", 3);
    start(1, 0);
    struct cnn_error err = {0};
    const char *path = path_of("g.csv");
    assert_int_equal(cnn_gradstats_open(&gs, path, 0, &log_, &err), CNN_OK);
    long long header = cnn_gradstats_bytes(&gs);
    for (long long step = 1; step <= 3; step++) {
        fill_grads();
        cnn_gradstats_before(&gs, &net, step);
        cnn_gradstats_after(&gs, &net, step, 1, &log_);
        if (step == 2)
            assert_true(cnn_gradstats_bytes(&gs) > header);
    }
    long long at_three = cnn_gradstats_bytes(&gs);
    long long at_one = header + (at_three - header) / 3;
    cnn_gradstats_close(&gs);
    assert_int_equal(cnn_gradstats_bytes(&gs), -1);

    /* Resuming from step 1's checkpoint keeps step 1's row only, and
     * goes on after it. */
    assert_int_equal(cnn_gradstats_open(&gs, path, at_one, &log_, &err),
                     CNN_OK);
    cnn_gradstats_before(&gs, &net, 2);
    cnn_gradstats_after(&gs, &net, 2, 1, &log_);
    cnn_gradstats_close(&gs);
    const char *text = slurp(path);
    assert_int_equal(count(text, "\n1,1,"), 1);
    assert_int_equal(count(text, "\n2,1,"), 1);
    assert_int_equal(count(text, "\n3,1,"), 0);
    assert_string_equal(logged(), "");

    /* A file shorter than the checkpoint says, or none: a new one, with
     * a warning. */
    assert_int_equal(cnn_gradstats_open(&gs, path, 1 << 20, &log_, &err),
                     CNN_OK);
    cnn_gradstats_close(&gs);
    assert_string_equal(slurp(path), "step,epoch,layer,grad_norm,"
                        "weight_norm,update_ratio\n");
    assert_non_null(strstr(logged(), "shorter than the checkpoint"));
    unlink(path);
    assert_int_equal(cnn_gradstats_open(&gs, path, 100, &log_, &err),
                     CNN_OK);
    assert_non_null(strstr(logged(), "missing; starting a new one"));
}

static void test_rows_off_writes_nothing(void **state)
{
    (void)state;
    build("    - dense: {units: 2}\n", 3);
    start(0, 1);
    struct cnn_error err = {0};
    assert_int_equal(cnn_gradstats_open(&gs, path_of("g.csv"), 0, &log_,
                                        &err), CNN_OK);
    assert_int_equal(cnn_gradstats_bytes(&gs), -1);
    assert_int_equal(access(path_of("g.csv"), F_OK), -1);
    assert_null(gs.snapshot);
}

/* --- warnings ------------------------------------------------------------ */

/* Three dense layers with gradient norms first, middle and last: each
 * layer's gradient entries all equal, scaled to the norm. */
static void set_norms(double first, double middle, double last)
{
    double want[3] = {first, middle, last};
    for (int i = 0; i < 3; i++) {
        const struct cnn_gradstats_layer *l = &gs.layers[i];
        size_t n = 0;
        for (int k = l->first; k < l->first + l->n_spans; k++)
            n += gs.spans[k].count;
        for (int k = l->first; k < l->first + l->n_spans; k++)
            for (size_t j = 0; j < gs.spans[k].count; j++)
                net.grads[gs.spans[k].offset + j] =
                    (float)(want[i] / sqrt((double)n));
    }
}

static void step_at(long long step, long long epoch)
{
    cnn_gradstats_before(&gs, &net, step);
    cnn_gradstats_after(&gs, &net, step, epoch, &log_);
}

static void test_vanishing_warning_rate_limited(void **state)
{
    (void)state;
    build("    - dense: {units: 4}\n    - sigmoid\n"
          "    - dense: {units: 4}\n    - sigmoid\n"
          "    - dense: {units: 2}\n", 3);
    start(0, 10);
    set_norms(1e-9, 0.5, 1.0);

    step_at(5, 1);              /* not a checking step */
    assert_string_equal(logged(), "");
    step_at(10, 1);
    const char *text = logged();
    assert_int_equal(count(text, "warning: vanishing gradients at step 10 "
                           "(epoch 1): 1 of 3 layers"), 1);
    assert_non_null(strstr(text, "dense_1 (1e-09)"));
    assert_null(strstr(text, "dense_2 ("));
    assert_non_null(strstr(text, "the last layer's (dense_3, 1)"));

    step_at(20, 1);             /* same epoch: quiet */
    step_at(30, 2);             /* a new epoch: again */
    assert_int_equal(count(logged(), "vanishing gradients"), 2);
    assert_int_equal(count(logged(), "exploding"), 0);
}

static void test_exploding_warning(void **state)
{
    (void)state;
    build("    - dense: {units: 4}\n    - relu\n"
          "    - dense: {units: 4}\n    - relu\n"
          "    - dense: {units: 2}\n", 3);
    start(0, 1);
    set_norms(5e3, 2e4, 1.0);
    step_at(1, 1);
    const char *text = logged();
    assert_int_equal(count(text, "exploding gradients at step 1 (epoch 1): "
                           "1 of 3 layers have a gradient norm above 10000"),
                     1);
    assert_non_null(strstr(text, "dense_2 (2e+04)"));

    /* Healthy ratios, or no gradient at the last layer: nothing. */
    set_norms(0.5, 2, 1);
    step_at(2, 2);
    set_norms(1, 1, 0);
    step_at(3, 3);
    assert_int_equal(count(logged(), "warning:"), 1);
}

/* --- reading back and drawing -------------------------------------------- */

static void write_file(const char *name, const char *text)
{
    assert_int_equal(test_write(path_of(name), text, strlen(text)), 0);
}

static void test_curves_read_back(void **state)
{
    (void)state;
    write_file("grad_stats.csv",
               "step,epoch,layer,grad_norm,weight_norm,update_ratio\n"
               "10,1,dense_1,1e-12,3,1e-15\n"
               "10,1,res.body.dense_1,0.25,2,\n"
               "20,1,dense_1,2e-12,3,1e-15\n"
               "20,1,res.body.dense_1,0.5,2,0.01\n");
    struct cnn_error err = {0};
    assert_int_equal(cnn_grad_curves_load(&curves, dir, &err), CNN_OK);
    assert_int_equal(curves.n_layers, 2);
    assert_string_equal(curves.names[0], "dense_1");
    assert_string_equal(curves.names[1], "res.body.dense_1");
    assert_int_equal(curves.norms[1].n, 2);
    assert_float_equal(curves.norms[1].x[1], 20, 0);
    assert_float_equal(curves.norms[1].y[1], 0.5, 0);

    char *svg = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&svg, &len);
    assert_non_null(f);
    assert_int_equal(cnn_plot_grads_svg(f, &curves, &err), CNN_OK);
    fclose(f);
    assert_non_null(strstr(svg, ">Gradient norm per layer</text>"));
    assert_non_null(strstr(svg, ">res.body.dense_1</text>"));
    assert_int_equal(count(svg, "<polyline"), 2);
    /* Twelve decades: a labeled tick at every second power of ten. */
    assert_non_null(strstr(svg, ">1e-12</text>"));
    assert_non_null(strstr(svg, "</svg>\n"));
    free(svg);
}

static void test_curves_errors(void **state)
{
    (void)state;
    struct cnn_error err = {0};
    assert_int_equal(cnn_grad_curves_load(&curves, dir, &err), CNN_ERR_DATA);
    assert_non_null(strstr(err.message, "cannot open"));
    assert_non_null(strstr(err.hint, "training.log_grad_stats"));

    write_file("grad_stats.csv", "step,epoch,layer,norm\n");
    assert_int_equal(cnn_grad_curves_load(&curves, dir, &err), CNN_ERR_DATA);
    assert_non_null(strstr(err.where, "grad_stats.csv:1"));
    assert_non_null(strstr(err.message, "no 'grad_norm' column"));

    write_file("grad_stats.csv", "step,layer,grad_norm\n1,a,0.5\n2,a\n");
    assert_int_equal(cnn_grad_curves_load(&curves, dir, &err), CNN_ERR_DATA);
    assert_non_null(strstr(err.where, "grad_stats.csv:3"));
    assert_non_null(strstr(err.message, "cut-off row"));
    assert_int_equal(curves.n_layers, 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_table_names_nested_layers),
        T(test_norms_per_layer),
        T(test_rows_every_n_steps),
        T(test_resume_cuts_the_file),
        T(test_rows_off_writes_nothing),
        T(test_vanishing_warning_rate_limited),
        T(test_exploding_warning),
        T(test_curves_read_back),
        T(test_curves_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
