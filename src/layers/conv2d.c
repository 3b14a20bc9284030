/*
 * conv2d: 2-D cross-correlation with stride and zero padding. W is
 * [filters, in_channels, kh, kw] (PyTorch's nn.Conv2d layout), b is
 * [filters].
 *
 *   - conv2d: {filters: 32, size: 5, stride: 1, pad: 2}    # pad: same
 *
 * The batch is cut into chunks of a few examples whose im2col columns
 * sit side by side, so each chunk is one GEMM of width chunk * oh * ow,
 * its columns small enough (CHUNK_FLOATS) to stay in a core's cache
 * from im2col to GEMM. The chunks are shared out to the threads, each
 * with scratch and a partial weight gradient of its own, and each GEMM
 * runs on one thread: for the narrow matrices of small convolutions
 * this beats one GEMM over the whole batch on every core, whose columns
 * go out to memory and back. The weight gradient is the sum of the
 * threads' partial sums, so it depends on the thread count, in the last
 * bits.
 *
 * A 3x3 or 5x5 window at stride 1 with "same" padding takes Winograd's
 * F(4x4, 3x3) or F(2x2, 5x5) (src/ops/winograd.c) for the output, for
 * the input gradient (the adjoint convolution) and, when the input
 * channels come in sixteens, for the weight gradient; otherwise the
 * weight gradient is one GEMM per chunk. A chunk's scratch serves both:
 * im2col's columns and GEMM output, or Winograd's transformed tiles.
 *
 * Missing: grouped and dilated convolution; Winograd for other sizes,
 * paddings and strides, and for the weight gradient of channel counts
 * that are not multiples of 16.
 */
#include "cnn/layer.h"
#include "cnn/ops.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Scratch floats per chunk and thread: column matrix plus GEMM-layout
 * output, about half of a core's L2 cache. */
static const size_t CHUNK_FLOATS = 1u << 17;

/* One example's columns beyond 4 GiB are a typo, not a layer. */
static const size_t MAX_WORKSPACE_FLOATS = 1u << 30;

struct conv_state {
    struct cnn_conv_geom g;
    int chunk;          /* examples per GEMM */
    int slots;          /* threads with scratch of their own */
    size_t col_size, tmp_size, work_size, grad_size;    /* floats per slot */
    float *work_mem;    /* work, before its alignment */
    float *work;        /* [slots][work_size], 64-byte aligned; a slot holds
                         * col[c*kh*kw, chunk*oh*ow] then tmp[filters,
                         * chunk*oh*ow] (y or dy), or Winograd's scratch;
                         * only the latter when no path uses im2col */
    float *grad;        /* [slots][db_at + filters]: dW[filters*c*kh*kw]
                         * or Winograd's dU, then db */
    size_t db_at;       /* where db starts in a grad slot */
    bool wino;          /* 3x3 or 5x5, stride 1, "same": Winograd */
    bool wino_grad;     /* and for the weight gradient (channels in
                         * sixteens) */
    struct cnn_wino fwd, bwd;   /* x -> y, and dy -> dx */
    float *U;           /* the filters of whichever ran last */
};

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

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
    /* With a channel or two in or out, the transforms cost more than the
     * products save (LeNet's and ResNet's first layers). */
    s->wino = g.kh == g.kw && cnn_wino_fits(g.kh, g.stride, g.pad) &&
              g.c >= 8 && F >= 8;
    s->chunk = (int)(CHUNK_FLOATS / per_example);
    if (s->chunk < 1)
        s->chunk = 1;
    int threads = cnn_blas_threads(0);
    if (s->wino) {
        /* Winograd's vectors of tiles run through a chunk's examples:
         * enough of them to fill the vectors of small planes, but a
         * chunk for every thread where the batch has that many. */
        cnn_wino_plan(&s->fwd, g.kh, g.c, F, g.h, g.w, 1);
        int fill = cnn_wino_fill(&s->fwd);
        int share = l->batch / (threads > 1 ? threads : 1);
        if (fill > share)
            fill = share > 1 ? share : 1;
        if (s->chunk < fill)
            s->chunk = fill;
    }
    if (s->chunk > l->batch)
        s->chunk = l->batch;
    /* As many slots as threads when the net is built, and no more than
     * the batch has chunks. */
    int chunks = (l->batch + s->chunk - 1) / s->chunk;
    s->slots = threads < chunks ? threads : chunks;
    if (s->slots < 1)
        s->slots = 1;
    s->col_size = kk * ohw * s->chunk;
    s->tmp_size = (size_t)F * ohw * s->chunk;
    s->work_size = s->col_size + s->tmp_size;
    s->db_at = (size_t)F * kk;
    size_t u_size = 1;
    if (s->wino) {
        cnn_wino_plan(&s->fwd, g.kh, g.c, F, g.h, g.w, s->chunk);
        cnn_wino_plan(&s->bwd, g.kh, F, g.c, g.h, g.w, s->chunk);
        s->wino_grad = cnn_wino_grad_ok(&s->fwd);
        if (s->wino_grad)
            s->db_at = cnn_wino_weight_floats(&s->fwd);
        /* im2col's columns are needed only for a weight gradient that
         * is not Winograd's. */
        size_t wino = max_size(cnn_wino_work_floats(&s->fwd),
                               cnn_wino_work_floats(&s->bwd));
        if (s->wino_grad)
            s->work_size = max_size(wino, cnn_wino_grad_work_floats(&s->fwd));
        else
            s->work_size = max_size(s->work_size, wino);
        u_size = max_size(cnn_wino_weight_floats(&s->fwd),
                          cnn_wino_weight_floats(&s->bwd));
    }
    s->grad_size = s->db_at + F;
    /* Whole cache lines per slot, so that no two threads share one. */
    s->work_size = (s->work_size + 15) / 16 * 16;
    s->work_mem = cnn_layer_alloc(l, (s->work_size * s->slots + 16) *
                                  sizeof(float), err);
    s->grad = s->work_mem ? cnn_layer_alloc(l, s->grad_size * s->slots *
                                            sizeof(float), err) : NULL;
    s->U = s->grad ? cnn_layer_alloc(l, u_size * sizeof(float), err) : NULL;
    if (!s->U)
        return cnn_layer_alloc_status(err);
    s->work = (float *)(((uintptr_t)s->work_mem + 63) & ~(uintptr_t)63);

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

/* What the threads share: the layer's tensors for a batch of n. */
struct job {
    const struct conv_state *s;
    const float *x, *W, *b, *dy;       /* x[n, in], W[F, kk], b[F] or NULL,
                                        * dy[n, F, ohw] */
    float *y, *dx;                      /* y[n, F, ohw], dx[n, in] */
    int n, F, kk, ohw;
    size_t in_size;
};

/* Examples [first, first + nb) of chunk ci. */
static int chunk_span(const struct job *j, int ci, int *first)
{
    *first = ci * j->s->chunk;
    int left = j->n - *first;
    return left < j->s->chunk ? left : j->s->chunk;
}

/* The chunk's columns side by side in col[kk, nb * ohw]. */
static void unfold(const struct job *j, int first, int nb, float *col)
{
    for (int i = 0; i < nb; i++)
        cnn_im2col(&j->s->g, j->x + (size_t)(first + i) * j->in_size,
                   col + i * j->ohw, nb * j->ohw);
}

static void forward_part(void *ctx, int part, int lo, int hi)
{
    const struct job *j = ctx;
    float *col = j->s->work + part * j->s->work_size;
    for (int ci = lo; ci < hi; ci++) {
        int first, nb = chunk_span(j, ci, &first), cols = nb * j->ohw;
        if (j->s->wino) {
            cnn_wino_conv(&j->s->fwd, j->s->U, j->b,
                          j->x + (size_t)first * j->in_size, nb,
                          j->y + (size_t)first * j->F * j->ohw, col);
            continue;
        }
        float *tmp = col + j->s->col_size;
        unfold(j, first, nb, col);
        cnn_gemm(false, false, j->F, cols, j->kk, 1.0f, j->W, j->kk, col,
                 cols, 0.0f, tmp, cols);

        /* tmp[F, nb, ohw] -> y[nb, F, ohw], adding the bias. */
        for (int i = 0; i < nb; i++) {
            float *yi = j->y + (size_t)(first + i) * j->F * j->ohw;
            for (int f = 0; f < j->F; f++) {
                const float *src = tmp + (size_t)f * cols + i * j->ohw;
                float *dst = yi + (size_t)f * j->ohw;
                float bf = j->b ? j->b[f] : 0.0f;
                for (int p = 0; p < j->ohw; p++)
                    dst[p] = src[p] + bf;
            }
        }
    }
}

/* The weight and bias gradient of examples [first, first + nb) through
 * im2col: dy to tmp[F, nb * ohw], then one GEMM against the columns. */
static void unfold_grad(const struct job *j, int first, int nb, float *col,
                        float *tmp, float *dW, float *db)
{
    int cols = nb * j->ohw;
    /* dy[nb, F, ohw] -> tmp[F, nb, ohw], summing the bias gradient. */
    for (int i = 0; i < nb; i++) {
        const float *dyi = j->dy + (size_t)(first + i) * j->F * j->ohw;
        for (int f = 0; f < j->F; f++) {
            const float *src = dyi + (size_t)f * j->ohw;
            memcpy(tmp + (size_t)f * cols + i * j->ohw, src,
                   j->ohw * sizeof *src);
            if (j->b)
                db[f] += (float)cnn_sum(src, j->ohw);
        }
    }

    unfold(j, first, nb, col);
    cnn_gemm(false, true, j->F, j->kk, cols, 1.0f, tmp, cols, col, cols,
             1.0f, dW, j->kk);
}

/* Chunks [lo, hi): this part's dW (or Winograd's dU) and db into its
 * own grad slot, dx straight into place. */
static void backward_part(void *ctx, int part, int lo, int hi)
{
    const struct job *j = ctx;
    float *col = j->s->work + part * j->s->work_size;
    /* im2col's GEMM output; a layer whose passes are all Winograd's has
     * no room for it, and no use. */
    float *tmp = j->s->wino_grad ? NULL : col + j->s->col_size;
    float *dW = j->s->grad + part * j->s->grad_size;    /* [F, kk] or dU */
    float *db = dW + j->s->db_at;                       /* [F] */
    memset(dW, 0, j->s->grad_size * sizeof *dW);

    for (int ci = lo; ci < hi; ci++) {
        int first, nb = chunk_span(j, ci, &first), cols = nb * j->ohw;

        if (j->s->wino_grad) {
            const float *dy = j->dy + (size_t)first * j->F * j->ohw;
            for (int i = 0; j->b && i < nb * j->F; i++)
                db[i % j->F] += (float)cnn_sum(dy + (size_t)i * j->ohw,
                                               j->ohw);
            cnn_wino_weight_grad(&j->s->fwd, j->x + (size_t)first *
                                 j->in_size, dy, nb, dW, col);
        } else {
            unfold_grad(j, first, nb, col, tmp, dW, db);
        }
        if (!j->dx)
            continue;
        if (j->s->wino) {
            /* Scratch spent: Winograd's again, for the adjoint. */
            cnn_wino_conv(&j->s->bwd, j->s->U, NULL,
                          j->dy + (size_t)first * j->F * j->ohw, nb,
                          j->dx + (size_t)first * j->in_size, col);
            continue;
        }

        /* The columns are spent: reuse them for d(col) = W^T d(y). */
        cnn_gemm(true, false, j->kk, cols, j->F, 1.0f, j->W, j->kk, tmp, cols,
                 0.0f, col, cols);
        for (int i = 0; i < nb; i++) {
            float *dxi = j->dx + (size_t)(first + i) * j->in_size;
            memset(dxi, 0, j->in_size * sizeof *dxi);
            cnn_col2im(&j->s->g, col + i * j->ohw, cols, dxi);
        }
    }
}

/* Runs fn over the batch's chunks: on one thread, with BLAS threads as
 * they are, when there is one chunk or one slot (or an OpenBLAS whose
 * thread count cannot be set for every caller); else one part per
 * slot, each part's GEMMs on its own thread. Returns the parts run. */
static int run_chunks(const struct job *j, cnn_part_fn *fn)
{
    int chunks = (j->n + j->s->chunk - 1) / j->s->chunk;
    int threads = cnn_blas_threads(0);
    int parts = j->s->slots < threads ? j->s->slots : threads;
    if (parts > chunks)
        parts = chunks;
    if (parts <= 1 || !cnn_blas_pthreads()) {
        fn((void *)j, 0, 0, chunks);
        return 1;
    }
    cnn_blas_threads(1);
    parts = cnn_parallel_parts(chunks, parts, fn, (void *)j);
    cnn_blas_threads(threads);
    return parts;
}

static void conv_forward(struct cnn_layer *l, const float *x, float *y, int n,
                         const struct cnn_fwd_ctx *ctx)
{
    (void)ctx;
    struct conv_state *s = l->state;
    struct job j = {.s = s, .x = x, .y = y, .n = n, .F = l->out.c,
                    .kk = s->g.c * s->g.kh * s->g.kw,
                    .ohw = s->g.oh * s->g.ow,
                    .in_size = cnn_shape_size(l->in),
                    .W = l->params[0].data,
                    .b = l->n_params > 1 ? l->params[1].data : NULL};
    if (s->wino)
        cnn_wino_weights(&s->fwd, j.W, false, s->U);
    run_chunks(&j, forward_part);
}

static void conv_backward(struct cnn_layer *l, const float *x, const float *y,
                          const float *dy, float *dx, int n)
{
    (void)y;
    struct conv_state *s = l->state;
    struct job j = {.s = s, .x = x, .dy = dy, .dx = dx, .n = n,
                    .F = l->out.c, .kk = s->g.c * s->g.kh * s->g.kw,
                    .ohw = s->g.oh * s->g.ow,
                    .in_size = cnn_shape_size(l->in),
                    .W = l->params[0].data,
                    .b = l->n_params > 1 ? l->params[1].data : NULL};
    if (s->wino && dx)
        cnn_wino_weights(&s->bwd, j.W, true, s->U);
    int parts = run_chunks(&j, backward_part);

    /* The parts' sums, in part order; Winograd's dU summed in the
     * first part's slot, then taken back to filters once. */
    float *dW = l->params[0].grad;
    float *db = l->n_params > 1 ? l->params[1].grad : NULL;
    for (int p = 0; p < parts; p++) {
        const float *g = s->grad + p * s->grad_size;
        if (!s->wino_grad)
            for (size_t i = 0; i < s->db_at; i++)
                dW[i] += g[i];
        else if (p > 0)
            for (size_t i = 0; i < s->db_at; i++)
                s->grad[i] += g[i];
        if (db)
            for (int f = 0; f < j.F; f++)
                db[f] += g[s->db_at + f];
    }
    if (s->wino_grad)
        cnn_wino_weight_grad_finish(&s->fwd, s->grad, dW);
}

static void conv_destroy(struct cnn_layer *l)
{
    struct conv_state *s = l->state;
    if (s) {
        free(s->work_mem);
        free(s->grad);
        free(s->U);
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
