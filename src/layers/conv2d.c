/*
 * conv2d: 2-D cross-correlation with stride and zero padding, one GEMM
 * per example over an im2col buffer. W is [filters, in_channels, kh, kw]
 * (PyTorch's nn.Conv2d layout), b is [filters].
 *
 *   - conv2d: {filters: 32, size: 5, stride: 1, pad: 2}    # pad: same
 *
 * Missing: grouped and dilated convolution; batched GEMM and Winograd
 * (the speed issue) would replace the per-example loop.
 */
#include "cnn/layer.h"
#include "cnn/ops.h"

#include <stdlib.h>
#include <string.h>

struct conv_state {
    struct cnn_conv_geom g;
    bool direct;        /* 1x1, stride 1, no pad: the input is the column */
    float *col;         /* [c*kh*kw, oh*ow] for one example */
};

static enum cnn_status read_pad(struct cnn_node *args, int k, long long *pad,
                                struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(args, "pad");
    *pad = 0;
    if (n && n->kind == CNN_NODE_SCALAR && !n->quoted &&
        strcmp(n->value, "same") == 0) {
        if (k % 2 == 0)
            return cnn_node_error(err, n, "'same' padding needs an odd "
                                  "size, got %d", k);
        *pad = k / 2;
        return CNN_OK;
    }
    return cnn_read_int(args, "pad", 0, 0, 1 << 12, pad, err);
}

static enum cnn_status conv_create(struct cnn_layer *l, struct cnn_node *args,
                                   struct cnn_error *err)
{
    long long filters, size, stride, pad;
    bool bias;
    enum cnn_init init;
    if (!cnn_node_get(args, "filters") || !cnn_node_get(args, "size"))
        return cnn_node_error(err, l->node, "conv2d needs 'filters' and "
                              "'size', e.g. '- conv2d: {filters: 32, "
                              "size: 3}'");
    if (cnn_read_int(args, "filters", 0, 1, 1 << 16, &filters, err) ||
        cnn_read_int(args, "size", 0, 1, 1 << 10, &size, err) ||
        cnn_read_int(args, "stride", 1, 1, 1 << 10, &stride, err) ||
        read_pad(args, (int)size, &pad, err) ||
        cnn_read_bool(args, "bias", true, &bias, err) ||
        cnn_layer_read_init(args, CNN_INIT_HE_NORMAL, &init, err))
        return CNN_ERR_CONFIG;

    struct cnn_conv_geom g = {
        .c = l->in.c, .h = l->in.h, .w = l->in.w,
        .kh = (int)size, .kw = (int)size,
        .stride = (int)stride, .pad = (int)pad,
    };
    g.oh = cnn_conv_out_size(g.h, g.kh, g.stride, g.pad);
    g.ow = cnn_conv_out_size(g.w, g.kw, g.stride, g.pad);
    if (g.oh < 1 || g.ow < 1)
        return cnn_node_error(err, l->node, "a %lldx%lld window with pad "
                              "%lld does not fit the %dx%d output of %s",
                              size, size, pad, g.h, g.w, l->prev);

    struct conv_state *s = cnn_layer_alloc(l, sizeof *s, err);
    if (!s)
        return CNN_ERR_NOMEM;
    l->state = s;
    s->g = g;
    s->direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
    size_t kk = (size_t)g.c * g.kh * g.kw;
    if (!s->direct) {
        s->col = cnn_layer_alloc(l, kk * g.oh * g.ow * sizeof(float), err);
        if (!s->col)
            return CNN_ERR_NOMEM;
    }

    int F = (int)filters;
    l->out = (struct cnn_shape){F, g.oh, g.ow};
    cnn_layer_add_param(l, "weight", CNN_PARAM_WEIGHT, 4,
                        (int[]){F, g.c, g.kh, g.kw}, (int)kk,
                        F * g.kh * g.kw, init);
    if (bias)
        cnn_layer_add_param(l, "bias", CNN_PARAM_BIAS, 1, (int[]){F},
                            (int)kk, F * g.kh * g.kw, init);
    l->flops = (2.0 * kk + (bias ? 1 : 0)) * F * g.oh * g.ow;
    return CNN_OK;
}

static void conv_forward(struct cnn_layer *l, const float *x, float *y, int n,
                         const struct cnn_fwd_ctx *ctx)
{
    struct conv_state *s = l->state;
    const struct cnn_conv_geom *g = &s->g;
    int F = l->out.c, ohw = g->oh * g->ow, kk = g->c * g->kh * g->kw;
    size_t in_size = cnn_shape_size(l->in), out_size = cnn_shape_size(l->out);
    const float *W = l->params[0].data;                 /* [F, kk] */

    for (int i = 0; i < n; i++) {
        const float *xi = x + i * in_size;
        float *yi = y + i * out_size;                   /* [F, ohw] */
        const float *col = xi;
        if (!s->direct) {
            cnn_im2col(g, xi, s->col);
            col = s->col;
        }
        cnn_gemm(false, false, F, ohw, kk, 1.0f, W, kk, col, ohw, 0.0f, yi,
                 ohw);
        if (l->n_params > 1) {
            const float *b = l->params[1].data;
            for (int f = 0; f < F; f++)
                for (int p = 0; p < ohw; p++)
                    yi[(size_t)f * ohw + p] += b[f];
        }
    }
}

static void conv_backward(struct cnn_layer *l, const float *x, const float *y,
                          const float *dy, float *dx, int n)
{
    struct conv_state *s = l->state;
    const struct cnn_conv_geom *g = &s->g;
    int F = l->out.c, ohw = g->oh * g->ow, kk = g->c * g->kh * g->kw;
    size_t in_size = cnn_shape_size(l->in), out_size = cnn_shape_size(l->out);
    const float *W = l->params[0].data;
    float *dW = l->params[0].grad;                      /* [F, kk] */

    for (int i = 0; i < n; i++) {
        const float *xi = x + i * in_size;
        const float *dyi = dy + i * out_size;           /* [F, ohw] */
        const float *col = xi;
        if (!s->direct) {
            cnn_im2col(g, xi, s->col);
            col = s->col;
        }
        cnn_gemm(false, true, F, kk, ohw, 1.0f, dyi, ohw, col, ohw, 1.0f, dW,
                 kk);
        if (l->n_params > 1) {
            float *db = l->params[1].grad;
            for (int f = 0; f < F; f++) {
                float acc = 0.0f;
                for (int p = 0; p < ohw; p++)
                    acc += dyi[(size_t)f * ohw + p];
                db[f] += acc;
            }
        }
        if (!dx)
            continue;
        float *dxi = dx + i * in_size;
        if (s->direct) {
            cnn_gemm(true, false, kk, ohw, F, 1.0f, W, kk, dyi, ohw, 0.0f, dxi,
                     ohw);
            continue;
        }
        /* The column buffer is free again: reuse it for d(col). */
        cnn_gemm(true, false, kk, ohw, F, 1.0f, W, kk, dyi, ohw, 0.0f, s->col,
                 ohw);
        memset(dxi, 0, in_size * sizeof *dxi);
        cnn_col2im(g, s->col, dxi);
    }
}

static void conv_destroy(struct cnn_layer *l)
{
    struct conv_state *s = l->state;
    if (s)
        free(s->col);
    free(s);
}

const struct cnn_layer_kind cnn_layer_conv2d = {
    .name = "conv2d",
    .create = conv_create,
    .forward = conv_forward,
    .backward = conv_backward,
    .destroy = conv_destroy,
};
