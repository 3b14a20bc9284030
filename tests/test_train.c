/*
 * The training loop end to end on a small dataset written by the test:
 * gradient accumulation equals one step on the bigger batch, frozen
 * layers stay put, lr_mult 0 is frozen too, and the same seed gives the
 * same weights.
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

#include "cnn/train.h"
#include "testutil.h"

static char *dir;

/* 64 images of 1x4x4 with labels 0..2 (pixel pattern depends on the
 * label, so there is something to learn), as plain IDX files. */
static void write_dataset(void)
{
    enum { N = 64, HW = 16 };
    uint8_t img[16 + N * HW], lbl[8 + N];
    memcpy(img, (uint8_t[]){0, 0, 8, 3, 0, 0, 0, N, 0, 0, 0, 4, 0, 0, 0, 4},
           16);
    memcpy(lbl, (uint8_t[]){0, 0, 8, 1, 0, 0, 0, N}, 8);
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 11, 0, 0);
    for (int i = 0; i < N; i++) {
        int y = i % 3;
        lbl[8 + i] = (uint8_t)y;
        for (int p = 0; p < HW; p++)
            img[16 + i * HW + p] = (uint8_t)((p % 3 == y ? 160 : 40) +
                                             cnn_rng_below(&rng, 60));
    }
    char *a = test_path(dir, "img"), *b = test_path(dir, "lbl");
    assert_int_equal(test_write(a, img, sizeof img), 0);
    assert_int_equal(test_write(b, lbl, sizeof lbl), 0);
    free(a);
    free(b);
}

static int setup(void **state)
{
    dir = test_tmpdir();
    if (!dir)
        return -1;
    write_dataset();
    return 0;
}

static int teardown(void **state)
{
    test_rm_tree(dir);
    free(dir);
    return 0;
}

/* Trains the given layers and training section; returns the weights
 * (malloc'd) and their count. */
static float *train(const char *layers, const char *optimizer,
                    const char *training, const char *run, size_t *n)
{
    char text[2048];
    snprintf(text, sizeof text,
             "seed: 3\n"
             "data:\n  dir: %s\n  train: {images: img, labels: lbl}\n"
             "  normalize: auto\n"
             "model:\n  layers:\n%s"
             "optimizer: %s\n"
             "training: %s\n", dir, layers, optimizer, training);
    struct cnn_config cfg;
    struct cnn_session s;
    struct cnn_log log;
    struct cnn_train_result res;
    struct cnn_error err = {0};
    if (cnn_config_load_string(&cfg, text, "t.yaml", dir, &err) != CNN_OK ||
        cnn_config_resolve(&cfg, &err) != CNN_OK ||
        cnn_session_open(&s, &cfg, &err) != CNN_OK)
        fail_msg("%s: %s", err.where, err.message);

    char *run_dir = test_path(dir, run);
    struct cnn_train_opts opts = {.run_dir = run_dir, .force = true};
    FILE *devnull = fopen("/dev/null", "w");
    cnn_log_init(&log, devnull, true);
    if (cnn_train_run(&s, &opts, &log, &res, &err) != CNN_OK)
        fail_msg("%s: %s", err.where, err.message);
    cnn_log_close(&log);
    fclose(devnull);

    *n = s.net.n_params;
    float *w = malloc(*n * sizeof *w);
    assert_non_null(w);
    memcpy(w, s.net.params, *n * sizeof *w);
    cnn_session_close(&s);
    cnn_config_free(&cfg);
    free(run_dir);
    return w;
}

static const char MLP[] = "    - flatten\n"
                          "    - dense: {units: 8}\n"
                          "    - tanh\n"
                          "    - dense: {units: 3}\n";

static double max_rel_diff(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), 1e-3);
        worst = fmax(worst, d);
    }
    return worst;
}

static void test_accumulation_equals_big_batch(void **state)
{
    /* 4 micro-batches of 8 against batches of 32: the same examples in the
     * same order (the shuffle depends only on seed and epoch), so after
     * 2 epochs (4 steps) the weights agree to float rounding. */
    size_t n1, n2;
    const char *opt = "{name: sgd, lr: 0.5, momentum: 0.9}";
    float *a = train(MLP, opt, "{epochs: 2, batch_size: 8, accumulate: 4}",
                     "acc", &n1);
    float *b = train(MLP, opt, "{epochs: 2, batch_size: 32}", "big", &n2);
    assert_int_equal(n1, n2);
    double d = max_rel_diff(a, b, n1);
    printf("# accumulate 4x8 vs batch 32: max relative difference %.2e\n", d);
    assert_true(d < 1e-4);

    /* And a plain batch of 8 is a different run. */
    float *c = train(MLP, opt, "{epochs: 2, batch_size: 8}", "small", &n2);
    assert_true(max_rel_diff(c, b, n1) > 1e-2);
    free(a);
    free(b);
    free(c);
}

static void test_accumulation_uneven_tail(void **state)
{
    /* 64 examples in micro-batches of 24: 24 + 24 + 16. With accumulate
     * 3 that is one step over all 64, the same as one batch of 64. */
    size_t n;
    const char *opt = "{name: adam, lr: 0.01}";
    float *a = train(MLP, opt, "{epochs: 1, batch_size: 24, accumulate: 3}",
                     "tail", &n);
    float *b = train(MLP, opt, "{epochs: 1, batch_size: 64}", "whole", &n);
    assert_true(max_rel_diff(a, b, n) < 1e-4);
    free(a);
    free(b);
}

static void test_frozen_layers(void **state)
{
    static const char frozen[] = "    - flatten\n"
                                 "    - dense: {units: 8, trainable: false}\n"
                                 "    - tanh\n"
                                 "    - dense: {units: 3, lr_mult: 0}\n";
    static const char still[] = "    - flatten\n"
                                "    - dense: {units: 8, lr_mult: 0}\n"
                                "    - tanh\n"
                                "    - dense: {units: 3, lr_mult: 0}\n";
    size_t n;
    /* Weight decay would move frozen weights if it were applied. */
    const char *opt = "{name: adamw, lr: 0.01, weight_decay: 0.5}";
    float *before = train(still, opt, "{epochs: 1, batch_size: 16, "
                          "max_steps: 1}", "init", &n);
    float *after = train(frozen, opt, "{epochs: 3, batch_size: 16}", "fz", &n);
    assert_memory_equal(before, after, n * sizeof *before);

    float *moved = train(MLP, opt, "{epochs: 3, batch_size: 16}", "mv", &n);
    assert_memory_not_equal(before, moved, n * sizeof *before);
    free(before);
    free(after);
    free(moved);
}

static void test_same_seed_same_weights(void **state)
{
    size_t n;
    static const char drop[] = "    - flatten\n"
                               "    - dense: {units: 8}\n"
                               "    - relu\n"
                               "    - dropout: {rate: 0.3}\n"
                               "    - dense: {units: 3}\n";
    const char *opt = "{name: sgd, lr: 0.1, momentum: 0.9}";
    float *a = train(drop, opt, "{epochs: 2, batch_size: 16}", "s1", &n);
    float *b = train(drop, opt, "{epochs: 2, batch_size: 16}", "s2", &n);
    assert_memory_equal(a, b, n * sizeof *a);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accumulation_equals_big_batch),
        cmocka_unit_test(test_accumulation_uneven_tail),
        cmocka_unit_test(test_frozen_layers),
        cmocka_unit_test(test_same_seed_same_weights),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
