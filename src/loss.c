/*
 * Cross-entropy with softmax, and MSE on one-hot targets. Sums run in
 * double so a batch of thousands loses nothing to rounding.
 */
#include "cnn/loss.h"

#include <math.h>

static int argmax(const float *v, int k)
{
    int best = 0;
    for (int j = 1; j < k; j++)
        if (v[j] > v[best])
            best = j;
    return best;
}

static double cross_entropy(const float *z, int label, int k, float *dz,
                            double scale)
{
    /* log softmax(z)_y = z_y - max - log sum exp(z - max) */
    float max = z[argmax(z, k)];
    double sum = 0.0;
    for (int j = 0; j < k; j++)
        sum += exp((double)z[j] - max);
    double log_sum = log(sum);

    if (dz)
        for (int j = 0; j < k; j++) {
            double p = exp((double)z[j] - max - log_sum);
            dz[j] = (float)((p - (j == label)) * scale);
        }
    return -((double)z[label] - max - log_sum);
}

static double squared_error(const float *z, int label, int k, float *dz,
                            double scale)
{
    double total = 0.0;
    for (int j = 0; j < k; j++) {
        double d = (double)z[j] - (j == label);
        total += d * d;
        if (dz)
            dz[j] = (float)(2.0 * d * scale);
    }
    return total / k;
}

double cnn_loss(enum cnn_loss_kind kind, const float *out, const int *labels,
                int n, int k, float *dout, long long *correct)
{
    double total = 0.0;
    /* Gradient of the batch mean; MSE also averages over the k outputs. */
    double scale = kind == CNN_LOSS_MSE ? 1.0 / ((double)n * k) : 1.0 / n;

    for (int i = 0; i < n; i++) {
        const float *z = out + (size_t)i * k;
        float *dz = dout ? dout + (size_t)i * k : NULL;
        if (kind == CNN_LOSS_MSE)
            total += squared_error(z, labels[i], k, dz, scale);
        else
            total += cross_entropy(z, labels[i], k, dz, scale);
        if (correct && argmax(z, k) == labels[i])
            (*correct)++;
    }
    return total / n;
}

double cnn_loss_mse(const float *out, const float *targets, int n, int k,
                    float *dout)
{
    double total = 0.0, scale = 2.0 / ((double)n * k);
    for (size_t i = 0, N = (size_t)n * k; i < N; i++) {
        double d = (double)out[i] - targets[i];
        total += d * d;
        if (dout)
            dout[i] = (float)(d * scale);
    }
    return total / ((double)n * k);
}
