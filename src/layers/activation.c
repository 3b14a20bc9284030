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

#include "cnn/ops.h"

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

/* An activation is a pair of kernels over a run of elements; the layer's
 * passes share them out over the threads (cnn_parallel_elems). Each
 * element's result is computed alone, so the split changes nothing. */
typedef void act_fwd(const float *x, float *y, size_t n, float slope);
typedef void act_bwd(const float *x, const float *y, const float *dy,
                     float *dx, size_t n, float slope);

struct act_job {
    act_fwd *fwd;
    act_bwd *bwd;
    const float *x, *y, *dy;
    float *out;                 /* y forward, dx backward */
    float slope;
};

static float slope_of(const struct cnn_layer *l)
{
    const struct leaky_state *s = l->state;
    return s ? s->slope : 0.0f;
}

static void fwd_part(void *ctx, size_t lo, size_t hi)
{
    const struct act_job *j = ctx;
    j->fwd(j->x + lo, j->out + lo, hi - lo, j->slope);
}

static void bwd_part(void *ctx, size_t lo, size_t hi)
{
    const struct act_job *j = ctx;
    j->bwd(j->x + lo, j->y + lo, j->dy + lo, j->out + lo, hi - lo, j->slope);
}

static void run_forward(struct cnn_layer *l, act_fwd *fwd, const float *x,
                        float *y, int n)
{
    struct act_job j = {.fwd = fwd, .x = x, .out = y, .slope = slope_of(l)};
    cnn_parallel_elems((size_t)n * cnn_shape_size(l->in), fwd_part, &j);
}

static void run_backward(struct cnn_layer *l, act_bwd *bwd, const float *x,
                         const float *y, const float *dy, float *dx, int n)
{
    if (!dx)
        return;
    struct act_job j = {.bwd = bwd, .x = x, .y = y, .dy = dy, .out = dx,
                        .slope = slope_of(l)};
    cnn_parallel_elems((size_t)n * cnn_shape_size(l->in), bwd_part, &j);
}

static void relu_f(const float *x, float *y, size_t n, float slope)
{
    (void)slope;
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void relu_b(const float *x, const float *y, const float *dy, float *dx,
                   size_t n, float slope)
{
    (void)x, (void)slope;
    for (size_t i = 0; i < n; i++)
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

static void leaky_f(const float *x, float *y, size_t n, float slope)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : slope * x[i];
}

static void leaky_b(const float *x, const float *y, const float *dy, float *dx,
                    size_t n, float slope)
{
    (void)y;
    for (size_t i = 0; i < n; i++)
        dx[i] = x[i] > 0.0f ? dy[i] : slope * dy[i];
}

static void sigmoid_f(const float *x, float *y, size_t n, float slope)
{
    (void)slope;
    for (size_t i = 0; i < n; i++)
        y[i] = 1.0f / (1.0f + expf(-x[i]));
}

static void sigmoid_b(const float *x, const float *y, const float *dy,
                      float *dx, size_t n, float slope)
{
    (void)x, (void)slope;
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

static void tanh_f(const float *x, float *y, size_t n, float slope)
{
    (void)slope;
    for (size_t i = 0; i < n; i++)
        y[i] = tanhf(x[i]);
}

static void tanh_b(const float *x, const float *y, const float *dy, float *dx,
                   size_t n, float slope)
{
    (void)x, (void)slope;
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

/* The layer's two passes for an activation's kernels. */
#define ACTIVATION_PASSES(name)                                              \
    static void name##_forward(struct cnn_layer *l, const float *x,          \
                               float *y, int n,                              \
                               const struct cnn_fwd_ctx *ctx)                \
    {                                                                        \
        (void)ctx;                                                           \
        run_forward(l, name##_f, x, y, n);                                   \
    }                                                                        \
    static void name##_backward(struct cnn_layer *l, const float *x,         \
                                const float *y, const float *dy, float *dx,  \
                                int n)                                       \
    {                                                                        \
        run_backward(l, name##_b, x, y, dy, dx, n);                          \
    }

ACTIVATION_PASSES(relu)
ACTIVATION_PASSES(leaky)
ACTIVATION_PASSES(sigmoid)
ACTIVATION_PASSES(tanh)

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
