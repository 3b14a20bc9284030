/*
 * SGD against PyTorch's published update rule on hand-computed vectors,
 * the registry's refusals, and the schedules.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cnn/optim.h"

static struct cnn_optim_config sgd(double lr, double mom, double damp,
                                   double wd, bool nesterov)
{
    return (struct cnn_optim_config){.name = "sgd", .lr = lr, .momentum = mom,
                                     .dampening = damp, .weight_decay = wd,
                                     .nesterov = nesterov};
}

static void run(struct cnn_optim_config cfg, int steps, float *p)
{
    const float g[2] = {0.5f, 0.1f};
    struct cnn_optim o;
    struct cnn_error err = {0};
    assert_int_equal(cnn_optim_create(&o, &cfg, 2, &err), CNN_OK);
    for (int i = 0; i < steps; i++)
        cnn_optim_step(&o, p, g, (float)cfg.lr);
    assert_int_equal(o.steps, steps);
    cnn_optim_free(&o);
}

static void test_sgd_plain(void **state)
{
    float p[2] = {1, -2};
    run(sgd(0.1, 0, 0, 0, false), 2, p);
    assert_float_equal(p[0], 1 - 2 * 0.05, 1e-6);
    assert_float_equal(p[1], -2 - 2 * 0.01, 1e-6);
}

static void test_sgd_momentum_weight_decay(void **state)
{
    /* step 1: g' = g + 0.01 p = (0.51, 0.08); b = g'; p -= 0.1 b
     * step 2: g' = (0.50949, 0.07992); b = 0.9 b + g' = (0.96849, 0.15192) */
    float p[2] = {1, -2};
    run(sgd(0.1, 0.9, 0, 0.01, false), 1, p);
    assert_float_equal(p[0], 0.949, 1e-6);
    assert_float_equal(p[1], -2.008, 1e-6);
    float q[2] = {1, -2};
    run(sgd(0.1, 0.9, 0, 0.01, false), 2, q);
    assert_float_equal(q[0], 0.852151, 1e-6);
    assert_float_equal(q[1], -2.023192, 1e-6);
}

static void test_sgd_nesterov(void **state)
{
    /* step 1: b = g' = (0.51, 0.08); update g' + 0.9 b = (0.969, 0.152) */
    float p[2] = {1, -2};
    run(sgd(0.1, 0.9, 0, 0.01, true), 1, p);
    assert_float_equal(p[0], 0.9031, 1e-6);
    assert_float_equal(p[1], -2.0152, 1e-6);
}

static void test_sgd_dampening(void **state)
{
    /* step 1: b = g = (0.5, 0.1), p = (0.95, -2.01)
     * step 2: b = 0.9 b + 0.5 g = (0.7, 0.14), p = (0.88, -2.024) */
    float p[2] = {1, -2};
    run(sgd(0.1, 0.9, 0.5, 0, false), 2, p);
    assert_float_equal(p[0], 0.88, 1e-6);
    assert_float_equal(p[1], -2.024, 1e-6);
}

static void test_registry_refusals(void **state)
{
    struct cnn_optim o;
    struct cnn_error err = {0};
    struct cnn_optim_config cfg = sgd(0.1, 0, 0, 0, false);
    cfg.name = "sdg";
    assert_int_equal(cnn_optim_create(&o, &cfg, 2, &err), CNN_ERR_CONFIG);
    assert_non_null(strstr(err.hint, "sgd"));
    cfg.name = "adam";
    assert_int_equal(cnn_optim_create(&o, &cfg, 2, &err),
                     CNN_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.message, "not built yet"));
}

static void test_schedules(void **state)
{
    struct cnn_schedule_config s = {.name = "constant", .warmup_steps = 4,
                                    .gamma = 0.1, .step_epochs = 2};
    assert_float_equal(cnn_schedule_lr(&s, 1.0, 0, 100, 0), 0.25, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 1.0, 3, 100, 0), 1.0, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 1.0, 50, 100, 3), 1.0, 1e-12);

    s.name = "step";
    assert_float_equal(cnn_schedule_lr(&s, 1.0, 50, 100, 1), 1.0, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 1.0, 50, 100, 2), 0.1, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 1.0, 50, 100, 5), 0.01, 1e-12);

    s.name = "cosine";
    s.min_lr = 0.1;
    assert_float_equal(cnn_schedule_lr(&s, 1.0, 4, 104, 0), 1.0, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 1.0, 54, 104, 0), 0.55, 1e-12);
    assert_float_equal(cnn_schedule_lr(&s, 1.0, 104, 104, 0), 0.1, 1e-12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_plain),
        cmocka_unit_test(test_sgd_momentum_weight_decay),
        cmocka_unit_test(test_sgd_nesterov),
        cmocka_unit_test(test_sgd_dampening),
        cmocka_unit_test(test_registry_refusals),
        cmocka_unit_test(test_schedules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
