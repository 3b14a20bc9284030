/*
 * conv2d: 2-D cross-correlation with stride and zero padding. W is
 * [filters, in_channels, kh, kw] (PyTorch's nn.Conv2d layout), b is
 * [filters].
 *
 *   - conv2d: {filters: 32, size: 5, stride: 1, pad: 2}    # pad: same
 *
 * The batch is cut into chunks of examples whose im2col columns sit side
 * by side, so each chunk is one GEMM of width chunk * oh * ow: wide
 * enough for BLAS to use every core, small enough (CHUNK_FLOATS) to stay
 * out of the way of memory.
 *
 * Missing: grouped and dilated convolution; Winograd for 3x3 stride 1.
 */
#include "cnn/layer.h"
#include "cnn/ops.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Scratch floats per chunk: column matrix plus GEMM-layout output. */
static const size_t CHUNK_FLOATS = 1u << 23;

/* One example's columns beyond 4 GiB are a typo, not a layer. */
static const size_t MAX_WORKSPACE_FLOATS = 1u << 30;

struct conv_state {
    struct cnn_conv_geom g;
    int chunk;          /* examples per GEMM */
    float *col;         /* [c*kh*kw, chunk*oh*ow] */
    float *tmp;         /* [filters, chunk*oh*ow]: y or dy in GEMM layout */
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
    if (cnn_read_int(args, "filters", 0, 1, 1 << 16, &filters, err) ||
        cnn_read_int(args, "size", 0, 1, 1 << 10, &size, err) ||
        cnn_read_int(args, "stride", 1, 1, 1 << 10, &stride, err) ||
        read_pad(args, (int)size, &pad, err) ||
        cnn_read_bool(args, "bias", true, &bias, err) ||
        cnn_layer_read_init(args, CNN_INIT_AUTO, &init, err))
        return CNN_ERR_CONFIG;
    /* Required keys are checked after every key was asked for, so a
     * misspelling is answered with its suggestion. */
    static const char example[] = "- conv2d: {filters: 32, size: 3}";
    if (cnn_layer_require(l, args, "filters", example, err) ||
        cnn_layer_require(l, args, "size", example, err))
        return CNN_ERR_CONFIG;

    struct cnn_conv_geom g;
    if (cnn_layer_window(l, (int)size, (int)stride, (int)pad, &g, err))
        return CNN_ERR_CONFIG;

    int F = (int)filters;
    size_t kk = (size_t)g.c * g.kh * g.kw, ohw = (size_t)g.oh * g.ow;
    if (kk > INT_MAX || (size_t)F * g.kh * g.kw > INT_MAX)
        return cnn_node_error(err, l->node, "%s: a %dx%d window over %d "
                              "channels into %d filters is too large",
                              l->name, g.kh, g.kw, g.c, F);
    size_t per_example = (kk + (size_t)F) * ohw;
    if ((double)per_example > (double)MAX_WORKSPACE_FLOATS)
        return cnn_node_error(err, l->node, "%s needs %.1f GiB of im2col "
                              "workspace for one example: too large",
                              l->name, per_example * 4.0 / (1ull << 30));
    struct conv_state *s = cnn_layer_alloc(l, sizeof *s, err);
    if (!s)
        return cnn_layer_alloc_status(err);
    l->state = s;
    s->g = g;
    s->chunk = (int)(CHUNK_FLOATS / per_example);
    if (s->chunk < 1)
        s->chunk = 1;
    if (s->chunk > l->batch)
        s->chunk = l->batch;
    s->col = cnn_layer_alloc(l, kk * ohw * s->chunk * sizeof(float), err);
    s->tmp = s->col ? cnn_layer_alloc(l, (size_t)F * ohw * s->chunk *
                                      sizeof(float), err) : NULL;
    if (!s->tmp)
        return cnn_layer_alloc_status(err);

    l->out = (struct cnn_shape){F, g.oh, g.ow};
    cnn_layer_add_param(l, "weight", CNN_PARAM_WEIGHT, 4,
                        (int[]){F, g.c, g.kh, g.kw}, (int)kk,
                        F * g.kh * g.kw, init);
    if (bias)
        cnn_layer_add_param(l, "bias", CNN_PARAM_BIAS, 1, (int[]){F},
                            (int)kk, F * g.kh * g.kw, init);
    l->flops = (2.0 * kk + (bias ? 1 : 0)) * F * ohw;
    return CNN_OK;
}

/* Columns of examples [first, first + nb) side by side in s->col. */
static void unfold(struct cnn_layer *l, const float *x, int first, int nb)
{
    struct conv_state *s = l->state;
    int ohw = s->g.oh * s->g.ow;
    size_t in_size = cnn_shape_size(l->in);
    for (int i = 0; i < nb; i++)
        cnn_im2col(&s->g, x + (size_t)(first + i) * in_size, s->col + i * ohw,
                   nb * ohw);
}

static void conv_forward(struct cnn_layer *l, const float *x, float *y, int n,
                         const struct cnn_fwd_ctx *ctx)
{
    struct conv_state *s = l->state;
    int F = l->out.c, ohw = s->g.oh * s->g.ow;
    int kk = s->g.c * s->g.kh * s->g.kw;
    const float *W = l->params[0].data;                 /* [F, kk] */
    const float *b = l->n_params > 1 ? l->params[1].data : NULL;

    for (int first = 0; first < n; first += s->chunk) {
        int nb = n - first < s->chunk ? n - first : s->chunk;
        int cols = nb * ohw;
        unfold(l, x, first, nb);
        cnn_gemm(false, false, F, cols, kk, 1.0f, W, kk, s->col, cols, 0.0f,
                 s->tmp, cols);

        /* tmp[F, nb, ohw] -> y[nb, F, ohw], adding the bias. */
        for (int i = 0; i < nb; i++) {
            float *yi = y + (size_t)(first + i) * F * ohw;
            for (int f = 0; f < F; f++) {
                const float *src = s->tmp + (size_t)f * cols + i * ohw;
                float *dst = yi + (size_t)f * ohw;
                float bf = b ? b[f] : 0.0f;
                for (int p = 0; p < ohw; p++)
                    dst[p] = src[p] + bf;
            }
        }
    }
}

static void conv_backward(struct cnn_layer *l, const float *x, const float *y,
                          const float *dy, float *dx, int n)
{
    struct conv_state *s = l->state;
    int F = l->out.c, ohw = s->g.oh * s->g.ow;
    int kk = s->g.c * s->g.kh * s->g.kw;
    size_t in_size = cnn_shape_size(l->in);
    const float *W = l->params[0].data;
    float *dW = l->params[0].grad;                      /* [F, kk] */
    float *db = l->n_params > 1 ? l->params[1].grad : NULL;

    for (int first = 0; first < n; first += s->chunk) {
        int nb = n - first < s->chunk ? n - first : s->chunk;
        int cols = nb * ohw;

        /* dy[nb, F, ohw] -> tmp[F, nb, ohw], summing the bias gradient. */
        for (int i = 0; i < nb; i++) {
            const float *dyi = dy + (size_t)(first + i) * F * ohw;
            for (int f = 0; f < F; f++) {
                const float *src = dyi + (size_t)f * ohw;
                float *dst = s->tmp + (size_t)f * cols + i * ohw;
                float acc = 0.0f;
                for (int p = 0; p < ohw; p++) {
                    dst[p] = src[p];
                    acc += src[p];
                }
                if (db)
                    db[f] += acc;
            }
        }

        unfold(l, x, first, nb);
        cnn_gemm(false, true, F, kk, cols, 1.0f, s->tmp, cols, s->col, cols,
                 1.0f, dW, kk);
        if (!dx)
            continue;

        /* The columns are spent: reuse them for d(col) = W^T d(y). */
        cnn_gemm(true, false, kk, cols, F, 1.0f, W, kk, s->tmp, cols, 0.0f,
                 s->col, cols);
        for (int i = 0; i < nb; i++) {
            float *dxi = dx + (size_t)(first + i) * in_size;
            memset(dxi, 0, in_size * sizeof *dxi);
            cnn_col2im(&s->g, s->col + i * ohw, cols, dxi);
        }
    }
}

static void conv_destroy(struct cnn_layer *l)
{
    struct conv_state *s = l->state;
    if (s) {
        free(s->col);
        free(s->tmp);
    }
    free(s);
}

const struct cnn_layer_kind cnn_layer_conv2d = {
    .name = "conv2d",
    .create = conv_create,
    .forward = conv_forward,
    .backward = conv_backward,
    .destroy = conv_destroy,
};
