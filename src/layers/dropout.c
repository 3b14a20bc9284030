/*
 * dropout: in training, zeroes each value with probability rate and
 * scales the survivors by 1/(1-rate) ("inverted" dropout, as PyTorch and
 * Keras), so evaluation is the identity. Draws come from the net's
 * dropout stream.
 *
 *   - dropout: {rate: 0.5}
 */
#include "cnn/layer.h"

#include <stdlib.h>
#include <string.h>

struct dropout_state {
    float rate;
    float *mask;        /* [batch, size]: 0 or 1/(1-rate), last forward */
};

static enum cnn_status dropout_create(struct cnn_layer *l,
                                      struct cnn_node *args,
                                      struct cnn_error *err)
{
    double rate;
    if (cnn_read_float(args, "rate", 0.5, 0.0, 0.999, &rate, err) != CNN_OK)
        return CNN_ERR_CONFIG;
    struct dropout_state *s = cnn_layer_alloc(l, sizeof *s, err);
    if (!s)
        return cnn_layer_alloc_status(err);
    l->state = s;
    s->rate = (float)rate;
    s->mask = cnn_layer_alloc(l, (size_t)l->batch * cnn_shape_size(l->in) *
                              sizeof(float), err);
    if (!s->mask)
        return cnn_layer_alloc_status(err);
    l->out = l->in;
    l->flops = (double)cnn_shape_size(l->in);
    return CNN_OK;
}

static void dropout_forward(struct cnn_layer *l, const float *x, float *y,
                            int n, const struct cnn_fwd_ctx *ctx)
{
    struct dropout_state *s = l->state;
    size_t N = (size_t)n * cnn_shape_size(l->in);
    float keep = 1.0f / (1.0f - s->rate);

    for (size_t i = 0; i < N; i++) {
        if (ctx->train)
            s->mask[i] = cnn_rng_uniform(ctx->rng) < s->rate ? 0.0f : keep;
        else
            s->mask[i] = 1.0f;
        y[i] = x[i] * s->mask[i];
    }
}

static void dropout_backward(struct cnn_layer *l, const float *x,
                             const float *y, const float *dy, float *dx, int n)
{
    struct dropout_state *s = l->state;
    if (dx)
        for (size_t i = 0, N = (size_t)n * cnn_shape_size(l->in); i < N; i++)
            dx[i] = dy[i] * s->mask[i];
}

static void dropout_destroy(struct cnn_layer *l)
{
    struct dropout_state *s = l->state;
    if (s)
        free(s->mask);
    free(s);
}

const struct cnn_layer_kind cnn_layer_dropout = {
    .name = "dropout",
    .create = dropout_create,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .destroy = dropout_destroy,
};
