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

/* One chunk's work, shared with the threads that take parts of it:
 * examples [first, first + nb) of the batch. */
struct chunk {
    struct conv_state *s;
    const float *x, *dy, *b;
    float *y, *dx, *db;
    int first, nb, F, ohw;
    size_t in_size;
};

static void unfold_part(void *ctx, int lo, int hi)
{
    const struct chunk *c = ctx;
    for (int i = lo; i < hi; i++)
        cnn_im2col(&c->s->g, c->x + (size_t)(c->first + i) * c->in_size,
                   c->s->col + i * c->ohw, c->nb * c->ohw);
}

/* Columns of the chunk's examples side by side in s->col. */
static void unfold(struct chunk *c)
{
    cnn_parallel_for(c->nb, unfold_part, c);
}

/* tmp[F, nb, ohw] -> y[nb, F, ohw], adding the bias; by example. */
static void scatter_part(void *ctx, int lo, int hi)
{
    const struct chunk *c = ctx;
    int cols = c->nb * c->ohw;
    for (int i = lo; i < hi; i++) {
        float *yi = c->y + (size_t)(c->first + i) * c->F * c->ohw;
        for (int f = 0; f < c->F; f++) {
            const float *src = c->s->tmp + (size_t)f * cols + i * c->ohw;
            float *dst = yi + (size_t)f * c->ohw;
            float bf = c->b ? c->b[f] : 0.0f;
            for (int p = 0; p < c->ohw; p++)
                dst[p] = src[p] + bf;
        }
    }
}

/* dy[nb, F, ohw] -> tmp[F, nb, ohw], summing the bias gradient; by
 * filter, each filter's sum in example order as one thread would. */
static void gather_part(void *ctx, int lo, int hi)
{
    const struct chunk *c = ctx;
    int cols = c->nb * c->ohw;
    for (int f = lo; f < hi; f++)
        for (int i = 0; i < c->nb; i++) {
            const float *src = c->dy + ((size_t)(c->first + i) * c->F + f) *
                                           c->ohw;
            float *dst = c->s->tmp + (size_t)f * cols + i * c->ohw;
            float acc = 0.0f;
            for (int p = 0; p < c->ohw; p++) {
                dst[p] = src[p];
                acc += src[p];
            }
            if (c->db)
                c->db[f] += acc;
        }
}

/* d(col) -> dx, example by example. */
static void fold_part(void *ctx, int lo, int hi)
{
    const struct chunk *c = ctx;
    for (int i = lo; i < hi; i++) {
        float *dxi = c->dx + (size_t)(c->first + i) * c->in_size;
        memset(dxi, 0, c->in_size * sizeof *dxi);
        cnn_col2im(&c->s->g, c->s->col + i * c->ohw, c->nb * c->ohw, dxi);
    }
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
        struct chunk c = {.s = s, .x = x, .b = b, .y = y, .first = first,
                          .nb = nb, .F = F, .ohw = ohw,
                          .in_size = cnn_shape_size(l->in)};
        unfold(&c);
        cnn_gemm(false, false, F, cols, kk, 1.0f, W, kk, s->col, cols, 0.0f,
                 s->tmp, cols);
        cnn_parallel_for(nb, scatter_part, &c);
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
        struct chunk c = {.s = s, .x = x, .dy = dy, .dx = dx, .db = db,
                          .first = first, .nb = nb, .F = F, .ohw = ohw,
                          .in_size = in_size};
        cnn_parallel_for(F, gather_part, &c);
        unfold(&c);
        cnn_gemm(false, true, F, kk, cols, 1.0f, s->tmp, cols, s->col, cols,
                 1.0f, dW, kk);
        if (!dx)
            continue;

        /* The columns are spent: reuse them for d(col) = W^T d(y). */
        cnn_gemm(true, false, kk, cols, F, 1.0f, W, kk, s->tmp, cols, 0.0f,
                 s->col, cols);
        cnn_parallel_for(nb, fold_part, &c);
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
