/*
 * Losses: values on hand-computed vectors, stability on huge logits, and
 * the gradient against central differences (computed in double from the
 * loss itself).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cnn/loss.h"

static void test_cross_entropy_value(void **state)
{
    float z[3] = {1, 2, 3};
    int y = 2;
    float dz[3];
    long long correct = 0;
    double L = cnn_loss(CNN_LOSS_CROSS_ENTROPY, z, &y, 1, 3, dz, &correct);
    /* -log(e^3 / (e + e^2 + e^3)) */
    assert_float_equal(L, 0.40760596444, 1e-7);
    double s = exp(1) + exp(2) + exp(3);
    assert_float_equal(dz[0], exp(1) / s, 1e-6);
    assert_float_equal(dz[2], exp(3) / s - 1, 1e-6);
    assert_int_equal(correct, 1);
}

static void test_cross_entropy_stable(void **state)
{
    float z[2] = {1000, -1000};
    int y = 1;
    double L = cnn_loss(CNN_LOSS_CROSS_ENTROPY, z, &y, 1, 2, NULL, NULL);
    assert_true(isfinite(L));
    assert_float_equal(L, 2000, 1e-3);
}

static void test_mse_value(void **state)
{
    float z[4] = {0.5f, 0.2f, 0.0f, 1.0f};
    int y[2] = {0, 1};
    float dz[4];
    double L = cnn_loss(CNN_LOSS_MSE, z, y, 2, 2, dz, NULL);
    /* ((0.5-1)^2 + 0.2^2 + 0^2 + 0^2) / 4 */
    assert_float_equal(L, 0.29 / 4, 1e-7);
    assert_float_equal(dz[0], 2 * -0.5 / 4, 1e-7);
    assert_float_equal(dz[1], 2 * 0.2 / 4, 1e-7);
}

static void check_gradient(enum cnn_loss_kind kind)
{
    float z[12] = {0.3f, -1.2f, 2.0f, 0.1f, 0.0f, 0.7f,
                   -0.4f, 1.5f, -2.2f, 0.9f, 0.2f, -0.6f};
    int y[3] = {2, 0, 3};
    float dz[12];
    cnn_loss(kind, z, y, 3, 4, dz, NULL);
    for (int i = 0; i < 12; i++) {
        float v = z[i];
        z[i] = v + 1e-3f;
        double up = cnn_loss(kind, z, y, 3, 4, NULL, NULL);
        z[i] = v - 1e-3f;
        double down = cnn_loss(kind, z, y, 3, 4, NULL, NULL);
        z[i] = v;
        assert_float_equal(dz[i], (up - down) / 2e-3, 1e-4);
    }
}

static void test_gradients(void **state)
{
    check_gradient(CNN_LOSS_CROSS_ENTROPY);
    check_gradient(CNN_LOSS_MSE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_entropy_value),
        cmocka_unit_test(test_cross_entropy_stable),
        cmocka_unit_test(test_mse_value),
        cmocka_unit_test(test_gradients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
