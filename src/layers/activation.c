/*
 * Elementwise activations: relu, leaky_relu, sigmoid, tanh. Each keeps
 * the shape; backward uses the saved output where the derivative is a
 * function of it (relu, sigmoid, tanh) and the input otherwise.
 *
 *   - relu
 *   - leaky_relu: {slope: 0.01}
 */
#include "cnn/layer.h"

#include <math.h>
#include <stdlib.h>

struct leaky_state {
    float slope;
};

static enum cnn_status same_shape(struct cnn_layer *l, struct cnn_node *args,
                                  struct cnn_error *err)
{
    l->out = l->in;
    l->flops = (double)cnn_shape_size(l->in);
    return CNN_OK;
}

static size_t count(const struct cnn_layer *l, int n)
{
    return (size_t)n * cnn_shape_size(l->in);
}

static void relu_forward(struct cnn_layer *l, const float *x, float *y, int n,
                         const struct cnn_fwd_ctx *ctx)
{
    for (size_t i = 0, N = count(l, n); i < N; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void relu_backward(struct cnn_layer *l, const float *x, const float *y,
                          const float *dy, float *dx, int n)
{
    if (dx)
        for (size_t i = 0, N = count(l, n); i < N; i++)
            dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

static enum cnn_status leaky_create(struct cnn_layer *l, struct cnn_node *args,
                                    struct cnn_error *err)
{
    double slope;
    if (cnn_read_float(args, "slope", 0.01, 0.0, 1.0, &slope, err) != CNN_OK)
        return CNN_ERR_CONFIG;
    struct leaky_state *s = cnn_layer_alloc(l, sizeof *s, err);
    if (!s)
        return cnn_layer_alloc_status(err);
    s->slope = (float)slope;
    l->state = s;
    return same_shape(l, args, err);
}

static void leaky_forward(struct cnn_layer *l, const float *x, float *y, int n,
                          const struct cnn_fwd_ctx *ctx)
{
    float a = ((struct leaky_state *)l->state)->slope;
    for (size_t i = 0, N = count(l, n); i < N; i++)
        y[i] = x[i] > 0.0f ? x[i] : a * x[i];
}

static void leaky_backward(struct cnn_layer *l, const float *x, const float *y,
                           const float *dy, float *dx, int n)
{
    float a = ((struct leaky_state *)l->state)->slope;
    if (dx)
        for (size_t i = 0, N = count(l, n); i < N; i++)
            dx[i] = x[i] > 0.0f ? dy[i] : a * dy[i];
}

static void sigmoid_forward(struct cnn_layer *l, const float *x, float *y,
                            int n, const struct cnn_fwd_ctx *ctx)
{
    for (size_t i = 0, N = count(l, n); i < N; i++)
        y[i] = 1.0f / (1.0f + expf(-x[i]));
}

static void sigmoid_backward(struct cnn_layer *l, const float *x,
                             const float *y, const float *dy, float *dx, int n)
{
    if (dx)
        for (size_t i = 0, N = count(l, n); i < N; i++)
            dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

static void tanh_forward(struct cnn_layer *l, const float *x, float *y, int n,
                         const struct cnn_fwd_ctx *ctx)
{
    for (size_t i = 0, N = count(l, n); i < N; i++)
        y[i] = tanhf(x[i]);
}

static void tanh_backward(struct cnn_layer *l, const float *x, const float *y,
                          const float *dy, float *dx, int n)
{
    if (dx)
        for (size_t i = 0, N = count(l, n); i < N; i++)
            dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

static void free_state(struct cnn_layer *l)
{
    free(l->state);
}

const struct cnn_layer_kind cnn_layer_relu = {
    .name = "relu",
    .create = same_shape,
    .forward = relu_forward,
    .backward = relu_backward,
};

const struct cnn_layer_kind cnn_layer_leaky_relu = {
    .name = "leaky_relu",
    .create = leaky_create,
    .forward = leaky_forward,
    .backward = leaky_backward,
    .destroy = free_state,
};

const struct cnn_layer_kind cnn_layer_sigmoid = {
    .name = "sigmoid",
    .create = same_shape,
    .forward = sigmoid_forward,
    .backward = sigmoid_backward,
};

const struct cnn_layer_kind cnn_layer_tanh = {
    .name = "tanh",
    .create = same_shape,
    .forward = tanh_forward,
    .backward = tanh_backward,
};
