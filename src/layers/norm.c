/*
 * layernorm and rmsnorm: per-example normalization over all of an
 * example's features (C x H x W), with a learnable scale (weight) and,
 * for layernorm, shift (bias) of the same shape, as PyTorch's
 * nn.LayerNorm([C, H, W]) and nn.RMSNorm. They behave the same in
 * training and evaluation.
 *
 *   - layernorm: {eps: 1e-5}
 *   - rmsnorm: {eps: 1e-6}
 *
 *   layernorm: y = (x - mean) / sqrt(var + eps) * weight + bias
 *   rmsnorm:   y = x / sqrt(mean(x^2) + eps) * weight
 */
#include "cnn/layer.h"

#include <math.h>
#include <stdlib.h>

struct norm_state {
    float eps;
    bool center;                /* layernorm; rmsnorm does not center */
    float *mean, *inv;          /* [batch] of the last forward */
};

static enum cnn_status create(struct cnn_layer *l, struct cnn_node *args,
                              bool center, double eps_default,
                              struct cnn_error *err)
{
    double eps;
    if (cnn_read_float(args, "eps", eps_default, 1e-12, 1.0, &eps, err))
        return CNN_ERR_CONFIG;
    struct norm_state *s = cnn_layer_alloc(l, sizeof *s, err);
    if (!s)
        return cnn_layer_alloc_status(err);
    l->state = s;
    s->eps = (float)eps;
    s->center = center;
    s->mean = cnn_layer_alloc(l, (size_t)l->batch * sizeof(float), err);
    s->inv = s->mean ? cnn_layer_alloc(l, (size_t)l->batch * sizeof(float),
                                       err) : NULL;
    if (!s->inv)
        return cnn_layer_alloc_status(err);

    l->out = l->in;
    int D = (int)cnn_shape_size(l->in);
    int dims[3] = {l->in.c, l->in.h, l->in.w};
    int ndim = cnn_shape_is_flat(l->in) ? 1 : 3;
    cnn_layer_add_param(l, "weight", CNN_PARAM_NORM, ndim, dims, D, D,
                        CNN_INIT_ONES);
    if (center)
        cnn_layer_add_param(l, "bias", CNN_PARAM_NORM, ndim, dims, D, D,
                            CNN_INIT_ZEROS);
    l->flops = 5.0 * D;
    return CNN_OK;
}

static enum cnn_status layernorm_create(struct cnn_layer *l,
                                        struct cnn_node *args,
                                        struct cnn_error *err)
{
    return create(l, args, true, 1e-5, err);
}

static enum cnn_status rmsnorm_create(struct cnn_layer *l,
                                      struct cnn_node *args,
                                      struct cnn_error *err)
{
    return create(l, args, false, 1e-6, err);
}

static void norm_forward(struct cnn_layer *l, const float *x, float *y, int n,
                         const struct cnn_fwd_ctx *ctx)
{
    struct norm_state *s = l->state;
    size_t D = cnn_shape_size(l->in);
    const float *w = l->params[0].data;
    const float *b = s->center ? l->params[1].data : NULL;

    for (int i = 0; i < n; i++) {
        const float *xi = x + i * D;
        float *yi = y + i * D;
        double sum = 0, sq = 0;
        for (size_t j = 0; j < D; j++) {
            sum += xi[j];
            sq += (double)xi[j] * xi[j];
        }
        double mean = s->center ? sum / D : 0.0;
        double var = sq / D - mean * mean;
        float inv = (float)(1.0 / sqrt((var > 0 ? var : 0) + s->eps));
        s->mean[i] = (float)mean;
        s->inv[i] = inv;
        for (size_t j = 0; j < D; j++)
            yi[j] = (xi[j] - (float)mean) * inv * w[j] + (b ? b[j] : 0.0f);
    }
}

/* With xhat = (x - mean) * inv and g = dy * weight:
 *   layernorm: dx = inv * (g - mean(g) - xhat * mean(g * xhat))
 *   rmsnorm:   dx = inv * (g - xhat * mean(g * xhat))              */
static void norm_backward(struct cnn_layer *l, const float *x, const float *y,
                          const float *dy, float *dx, int n)
{
    struct norm_state *s = l->state;
    size_t D = cnn_shape_size(l->in);
    const float *w = l->params[0].data;
    float *dw = l->params[0].grad;
    float *db = s->center ? l->params[1].grad : NULL;

    for (int i = 0; i < n; i++) {
        const float *xi = x + i * D, *di = dy + i * D;
        float mean = s->mean[i], inv = s->inv[i];
        double g_sum = 0, gx_sum = 0;
        for (size_t j = 0; j < D; j++) {
            float xhat = (xi[j] - mean) * inv;
            float g = di[j] * w[j];
            dw[j] += di[j] * xhat;
            if (db)
                db[j] += di[j];
            g_sum += g;
            gx_sum += (double)g * xhat;
        }
        if (!dx)
            continue;
        float g_mean = s->center ? (float)(g_sum / D) : 0.0f;
        float gx_mean = (float)(gx_sum / D);
        float *q = dx + i * D;
        for (size_t j = 0; j < D; j++) {
            float xhat = (xi[j] - mean) * inv;
            q[j] = inv * (di[j] * w[j] - g_mean - xhat * gx_mean);
        }
    }
}

static void norm_destroy(struct cnn_layer *l)
{
    struct norm_state *s = l->state;
    if (s) {
        free(s->mean);
        free(s->inv);
    }
    free(s);
}

const struct cnn_layer_kind cnn_layer_layernorm = {
    .name = "layernorm",
    .create = layernorm_create,
    .forward = norm_forward,
    .backward = norm_backward,
    .destroy = norm_destroy,
};

const struct cnn_layer_kind cnn_layer_rmsnorm = {
    .name = "rmsnorm",
    .create = rmsnorm_create,
    .forward = norm_forward,
    .backward = norm_backward,
    .destroy = norm_destroy,
};
