/*
 * SGD against PyTorch's published update rule on hand-computed vectors,
 * the registry's refusals, optimizer state sizes, and the schedules.
 * (tests/test_optim_ref.c checks every optimizer against PyTorch over
 * 100 steps.)
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

#include "cnn/ops.h"
#include "cnn/optim.h"

/* Creates the optimizer described by a YAML flow mapping over n
 * parameters in one group. */
static enum cnn_status make(struct cnn_optim *o, struct cnn_config *cfg,
                            const char *section, size_t n,
                            struct cnn_error *err)
{
    char text[512];
    snprintf(text, sizeof text, "optimizer: %s\n", section);
    assert_int_equal(cnn_config_load_string(cfg, text, "t.yaml", ".", err),
                     CNN_OK);
    struct cnn_param_group g = {.offset = 0, .count = n,
                                .kind = CNN_PARAM_WEIGHT, .lr_scale = 1.0f};
    return cnn_optim_create(o, cnn_node_get(cfg->root, "optimizer"), &g, 1, n,
                            err);
}

static void run(const char *section, float lr, int steps, float *p)
{
    struct cnn_optim o;
    struct cnn_config cfg;
    struct cnn_error err = {0};
    if (make(&o, &cfg, section, 2, &err) != CNN_OK)
        fail_msg("%s: %s", err.where, err.message);
    for (int i = 0; i < steps; i++) {
        float g[2] = {0.5f, 0.1f};
        cnn_optim_step(&o, p, g, lr);
    }
    assert_int_equal(o.steps, steps);
    cnn_optim_free(&o);
    cnn_config_free(&cfg);
}

static void test_sgd_plain(void **state)
{
    float p[2] = {1, -2};
    run("{name: sgd}", 0.1f, 2, p);
    assert_float_equal(p[0], 1 - 2 * 0.05, 1e-6);
    assert_float_equal(p[1], -2 - 2 * 0.01, 1e-6);
}

static void test_sgd_momentum_weight_decay(void **state)
{
    /* step 1: g' = g + 0.01 p = (0.51, 0.08); b = g'; p -= 0.1 b
     * step 2: g' = (0.50949, 0.07992); b = 0.9 b + g' = (0.96849, 0.15192) */
    const char *s = "{name: sgd, momentum: 0.9, weight_decay: 0.01}";
    float p[2] = {1, -2};
    run(s, 0.1f, 1, p);
    assert_float_equal(p[0], 0.949, 1e-6);
    assert_float_equal(p[1], -2.008, 1e-6);
    float q[2] = {1, -2};
    run(s, 0.1f, 2, q);
    assert_float_equal(q[0], 0.852151, 1e-6);
    assert_float_equal(q[1], -2.023192, 1e-6);
}

static void test_sgd_nesterov(void **state)
{
    /* step 1: b = g' = (0.51, 0.08); update g' + 0.9 b = (0.969, 0.152) */
    float p[2] = {1, -2};
    run("{name: sgd, momentum: 0.9, nesterov: true, weight_decay: 0.01}",
        0.1f, 1, p);
    assert_float_equal(p[0], 0.9031, 1e-6);
    assert_float_equal(p[1], -2.0152, 1e-6);
}

static void test_sgd_dampening(void **state)
{
    /* step 1: b = g = (0.5, 0.1), p = (0.95, -2.01)
     * step 2: b = 0.9 b + 0.5 g = (0.7, 0.14), p = (0.88, -2.024) */
    float p[2] = {1, -2};
    run("{name: sgd, momentum: 0.9, dampening: 0.5}", 0.1f, 2, p);
    assert_float_equal(p[0], 0.88, 1e-6);
    assert_float_equal(p[1], -2.024, 1e-6);
}

static void test_adam_first_step(void **state)
{
    /* After one step m/(1-b1) = g and sqrt(v/(1-b2)) = |g|: every
     * parameter moves by lr * g / (|g| + eps), i.e. about lr. */
    float p[2] = {1, -2};
    run("{name: adam}", 0.01f, 1, p);
    assert_float_equal(p[0], 1 - 0.01 * 0.5 / (0.5 + 1e-8), 1e-6);
    assert_float_equal(p[1], -2 - 0.01 * 0.1 / (0.1 + 1e-8), 1e-6);
}

static void test_lion_first_step(void **state)
{
    /* m starts at 0: the sign of (1 - b1) g, decoupled decay first. */
    float p[2] = {1, -2};
    run("{name: lion, weight_decay: 0.5}", 0.01f, 1, p);
    assert_float_equal(p[0], 1 * (1 - 0.005) - 0.01, 1e-6);
    assert_float_equal(p[1], -2 * (1 - 0.005) - 0.01, 1e-6);
}

static void expect_error(const char *section, enum cnn_status want,
                         const char *needle, const char *hint)
{
    struct cnn_optim o;
    struct cnn_config cfg;
    struct cnn_error err = {0};
    assert_int_equal(make(&o, &cfg, section, 2, &err), want);
    if (!strstr(err.message, needle))
        fail_msg("'%s' not in '%s'", needle, err.message);
    if (hint && !strstr(err.hint, hint))
        fail_msg("'%s' not in hint '%s'", hint, err.hint);
    assert_non_null(strstr(err.where, "t.yaml:1:"));
    cnn_config_free(&cfg);
}

static void test_registry_refusals(void **state)
{
    expect_error("{name: sdg}", CNN_ERR_CONFIG, "unknown optimizer 'sdg'",
                 "sgd");
    expect_error("{name: adam, gamma: 0.9}", CNN_ERR_CONFIG,
                 "unknown key 'gamma'", NULL);
    expect_error("{name: adam, betas: [0.9, 1.0]}", CNN_ERR_CONFIG,
                 "must be in [0, 1)", NULL);
    expect_error("{name: adam, betas: 0.9}", CNN_ERR_CONFIG,
                 "expected two numbers", NULL);
    expect_error("{name: sgd, nesterov: true}", CNN_ERR_CONFIG,
                 "nesterov needs momentum", NULL);
    expect_error("{name: sgd, momentun: 0.9}", CNN_ERR_CONFIG,
                 "unknown key 'momentun'", "momentum");
    expect_error("{name: sgd, no_decay: [bias, gamma]}", CNN_ERR_CONFIG,
                 "unknown parameter kind", NULL);
}

static void test_foreign_keys_set_aside(void **state)
{
    /* A config made for sgd, switched to adam from the command line. */
    struct cnn_optim o;
    struct cnn_config cfg;
    struct cnn_error err = {0};
    assert_int_equal(make(&o, &cfg, "{name: adam, momentum: 0.9, nesterov: "
                          "true}", 2, &err), CNN_OK);
    assert_non_null(strstr(o.note, "adam does not use momentum, nesterov"));
    cnn_optim_free(&o);
    cnn_config_free(&cfg);

    assert_int_equal(make(&o, &cfg, "{name: sgd, momentum: 0.9}", 2, &err),
                     CNN_OK);
    assert_string_equal(o.note, "");
    cnn_optim_free(&o);
    cnn_config_free(&cfg);
}

static void test_state_bytes(void **state)
{
    static const struct {
        const char *section;
        double bytes_per_param;
    } cases[] = {
        {"{name: sgd}", 0},
        {"{name: sgd, momentum: 0.9}", 4},
        {"{name: adam}", 8},
        {"{name: adamw}", 8},
        {"{name: lion}", 4},
        {"{name: rmsprop, centered: true, momentum: 0.5}", 12},
        {"{name: adagrad}", 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cnn_optim o;
        struct cnn_config cfg;
        struct cnn_error err = {0};
        assert_int_equal(make(&o, &cfg, cases[i].section, 1000, &err), CNN_OK);
        assert_int_equal(cnn_optim_state_bytes(&o),
                         (size_t)(cases[i].bytes_per_param * 1000));
        cnn_optim_free(&o);
        cnn_config_free(&cfg);
    }
}

static void test_schedules(void **state)
{
    struct cnn_schedule_config c = {.name = "constant", .warmup_steps = 4,
                                    .gamma = 0.1, .step_epochs = 2};
    struct cnn_schedule s;
    cnn_schedule_init(&s, &c, 1.0, 100, 10);
    assert_float_equal(cnn_schedule_lr(&s, 0, 0), 0.25, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 3, 0), 1.0, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 50, 3), 1.0, 1e-12);

    c.name = "step";
    cnn_schedule_init(&s, &c, 1.0, 100, 10);
    assert_float_equal(cnn_schedule_lr(&s, 50, 1), 1.0, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 50, 2), 0.1, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 50, 5), 0.01, 1e-12);
    c.milestones[0] = 3;
    c.milestones[1] = 7;
    c.n_milestones = 2;
    cnn_schedule_init(&s, &c, 1.0, 100, 10);
    assert_float_equal(cnn_schedule_lr(&s, 50, 2), 1.0, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 50, 3), 0.1, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 50, 9), 0.01, 1e-12);

    c.name = "exponential";
    c.gamma = 0.5;
    cnn_schedule_init(&s, &c, 1.0, 100, 10);
    assert_float_equal(cnn_schedule_lr(&s, 50, 3), 0.125, 1e-12);

    c.name = "cosine";
    c.min_lr = 0.1;
    cnn_schedule_init(&s, &c, 1.0, 104, 10);
    assert_float_equal(cnn_schedule_lr(&s, 4, 0), 1.0, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 54, 0), 0.55, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 104, 0), 0.1, 1e-12);
}

static void test_onecycle(void **state)
{
    struct cnn_schedule_config c = {.name = "onecycle", .pct_start = 0.25,
                                    .div_factor = 10, .final_div_factor = 100};
    struct cnn_schedule s;
    cnn_schedule_init(&s, &c, 1.0, 100, 10);
    assert_float_equal(cnn_schedule_lr(&s, 0, 0), 0.1, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 25, 0), 1.0, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 100, 0), 0.001, 1e-12);
    double mid = cnn_schedule_lr(&s, 12, 0);
    assert_true(mid > 0.1 && mid < 1.0);
}

static void test_plateau(void **state)
{
    struct cnn_schedule_config c = {.name = "plateau", .factor = 0.5,
                                    .patience = 1, .threshold = 0.01,
                                    .min_lr = 0.2};
    struct cnn_schedule s;
    cnn_schedule_init(&s, &c, 1.0, 100, 10);
    assert_false(cnn_schedule_epoch_end(&s, 1.0));
    assert_false(cnn_schedule_epoch_end(&s, 0.9));
    assert_false(cnn_schedule_epoch_end(&s, 0.895));   /* < 1%: bad 1 */
    assert_float_equal(cnn_schedule_lr(&s, 0, 0), 1.0, 1e-12);
    assert_true(cnn_schedule_epoch_end(&s, 0.9));      /* bad 2 > 1 */
    assert_float_equal(cnn_schedule_lr(&s, 0, 0), 0.5, 1e-12);
    assert_false(cnn_schedule_epoch_end(&s, 0.95));
    assert_true(cnn_schedule_epoch_end(&s, 0.95));
    assert_false(cnn_schedule_epoch_end(&s, 0.95));
    assert_true(cnn_schedule_epoch_end(&s, 0.95));     /* 0.125 < floor */
    assert_float_equal(cnn_schedule_lr(&s, 0, 0), 0.2, 1e-12);  /* floor */
}

/* A step shared out over two threads, the flat block cut at 8192-value
 * boundaries that fall inside groups, gives bit for bit the updates of
 * each group's own update over the whole group: every elementwise kind,
 * with a frozen group, one at lr_scale 0 and one without decay. */
static void test_split_step(void **state)
{
    (void)state;
    static const char *const kinds[] = {
        "{name: sgd, momentum: 0.9, nesterov: true, weight_decay: 0.01, "
        "no_decay: [norm]}",
        "{name: adam, weight_decay: 0.01}",
        "{name: adamw, weight_decay: 0.1}",
        "{name: lion, weight_decay: 0.1}",
        "{name: rmsprop, momentum: 0.9, centered: true, weight_decay: 0.01}",
        "{name: adagrad, lr_decay: 0.01}",
    };
    enum { N = 200003 };
    const struct cnn_param_group groups[] = {
        {.offset = 0, .count = 70001, .kind = CNN_PARAM_WEIGHT,
         .lr_scale = 1.0f},
        {.offset = 70001, .count = 9000, .kind = CNN_PARAM_NORM,
         .lr_scale = 0.5f},
        {.offset = 79001, .count = 9000, .kind = CNN_PARAM_WEIGHT,
         .lr_scale = 1.0f, .frozen = true},
        {.offset = 88001, .count = 9000, .kind = CNN_PARAM_WEIGHT,
         .lr_scale = 0.0f},
        {.offset = 97001, .count = N - 97001, .kind = CNN_PARAM_BIAS,
         .lr_scale = 2.0f},
    };
    int n_groups = (int)(sizeof groups / sizeof groups[0]);
    float *p = malloc(N * sizeof *p), *q = malloc(N * sizeof *q);
    float *g = malloc(N * sizeof *g), *h = malloc(N * sizeof *h);
    assert_non_null(p);
    assert_non_null(q);
    assert_non_null(g);
    assert_non_null(h);
    int threads = cnn_blas_threads(0);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        char text[512];
        snprintf(text, sizeof text, "optimizer: %s\n", kinds[k]);
        struct cnn_config cfg;
        struct cnn_error err = {0};
        struct cnn_optim split, whole;
        assert_int_equal(cnn_config_load_string(&cfg, text, "t.yaml", ".",
                                                &err), CNN_OK);
        struct cnn_node *sec = cnn_node_get(cfg.root, "optimizer");
        assert_int_equal(cnn_optim_create(&split, sec, groups, n_groups, N,
                                          &err), CNN_OK);
        assert_int_equal(cnn_optim_create(&whole, sec, groups, n_groups, N,
                                          &err), CNN_OK);
        assert_true(split.kind->elementwise);
        for (size_t i = 0; i < N; i++)
            p[i] = q[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
        for (int step = 0; step < 3; step++) {
            for (size_t i = 0; i < N; i++)
                g[i] = h[i] = (float)((i * 104729 + step) % 997) / 997.0f -
                              0.5f;
            cnn_blas_threads(2);
            cnn_optim_step(&split, p, g, 0.01f);
            cnn_blas_threads(1);
            for (int i = 0; i < n_groups; i++) {
                const struct cnn_param_group *grp = &whole.groups[i];
                if (grp->frozen || grp->lr_scale == 0.0f)
                    continue;
                whole.kind->update(&whole, q + grp->offset, h + grp->offset,
                                   grp->offset, grp->count,
                                   0.01f * grp->lr_scale,
                                   grp->decay ? (float)whole.weight_decay
                                              : 0.0f);
            }
            whole.steps++;
        }
        assert_memory_equal(p, q, N * sizeof *p);
        cnn_optim_free(&split);
        cnn_optim_free(&whole);
        cnn_config_free(&cfg);
    }
    cnn_blas_threads(threads);
    free(p);
    free(q);
    free(g);
    free(h);
}

/* The global norm a step returns: the same bits on one thread and on
 * two (its blocks' sums are added in order), frozen groups left out,
 * and within rounding of a sum in long double. */
static void test_norm_threads(void **state)
{
    (void)state;
    enum { N = 100007 };
    const struct cnn_param_group groups[] = {
        {.offset = 0, .count = 20000, .kind = CNN_PARAM_WEIGHT,
         .lr_scale = 1.0f},
        {.offset = 20000, .count = 30000, .kind = CNN_PARAM_WEIGHT,
         .lr_scale = 1.0f, .frozen = true},
        {.offset = 50000, .count = N - 50000, .kind = CNN_PARAM_BIAS,
         .lr_scale = 1.0f},
    };
    float *p = calloc(N, sizeof *p), *g = malloc(N * sizeof *g);
    assert_non_null(p);
    assert_non_null(g);
    long double want = 0;
    for (size_t i = 0; i < N; i++) {
        g[i] = (float)((i * 7919) % 1013) / 1013.0f - 0.5f;
        if (i < 20000 || i >= 50000)
            want += (long double)g[i] * g[i];
    }
    struct cnn_config cfg;
    struct cnn_error err = {0};
    assert_int_equal(cnn_config_load_string(&cfg, "optimizer: {name: sgd}\n",
                                            "t.yaml", ".", &err), CNN_OK);
    struct cnn_optim o;
    assert_int_equal(cnn_optim_create(&o, cnn_node_get(cfg.root, "optimizer"),
                                      groups, 3, N, &err), CNN_OK);
    int threads = cnn_blas_threads(0);
    cnn_blas_threads(1);
    double one = cnn_optim_step(&o, p, g, 0.0f);
    cnn_blas_threads(2);
    double two = cnn_optim_step(&o, p, g, 0.0f);
    cnn_blas_threads(threads);
    assert_memory_equal(&one, &two, sizeof one);
    assert_true(fabs(one - sqrt((double)want)) <= 1e-12 * one);
    cnn_optim_free(&o);
    cnn_config_free(&cfg);
    free(p);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_plain),
        cmocka_unit_test(test_sgd_momentum_weight_decay),
        cmocka_unit_test(test_sgd_nesterov),
        cmocka_unit_test(test_sgd_dampening),
        cmocka_unit_test(test_adam_first_step),
        cmocka_unit_test(test_lion_first_step),
        cmocka_unit_test(test_registry_refusals),
        cmocka_unit_test(test_foreign_keys_set_aside),
        cmocka_unit_test(test_state_bytes),
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_onecycle),
        cmocka_unit_test(test_plateau),
        cmocka_unit_test(test_split_step),
        cmocka_unit_test(test_norm_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
