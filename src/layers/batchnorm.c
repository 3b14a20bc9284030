/*
 * batchnorm: per-channel normalization (Ioffe and Szegedy). In training
 * it uses the batch's mean and biased variance over N x H x W and
 * updates running statistics (momentum 0.1, unbiased variance, as
 * PyTorch); in evaluation it uses the running statistics. After a dense
 * layer (C x 1 x 1) it is the 1-D form. Tensors, in PyTorch's names:
 * weight and bias [C], running_mean and running_var [C] (buffers: saved,
 * never trained).
 *
 * Under MPI each rank normalizes by its own shard's statistics, unless
 * sync: true, which sums the per-channel sums over the ranks in the
 * forward pass (and those of the backward pass), so the statistics are
 * those of the whole global batch. A checkpointed block's recompute
 * (ctx->recompute) sums again, in the same order on every rank, but does
 * not move the running statistics a second time.
 *
 * A relu right after it is applied here (l->applies_relu, set by the
 * net): the output is max(0, y), and the backward pass lets dy through
 * where that output is positive, as the relu would have.
 *
 *   - batchnorm: {momentum: 0.1, eps: 1e-5, sync: false}
 */
#include "cnn/layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/dist.h"
#include "cnn/ops.h"

struct bn_state {
    float momentum, eps;
    bool sync;                  /* statistics over all ranks */
    float *mean, *invstd;       /* [C] of the last training batch */
    float *scale, *shift;       /* [C]: y = x * scale + shift; backward,
                                 * dx = scale * (dy - shift - (x - mean)
                                 * slope) */
    float *slope;               /* [C] */
    double *sums;               /* [2C + 1]: per-channel sums and a count */
    double *parts;              /* [batch][2C]: each example's sums */
    double count;               /* examples x pixels behind the statistics */
};

static enum cnn_status bn_create(struct cnn_layer *l, struct cnn_node *args,
                                 struct cnn_error *err)
{
    double momentum, eps;
    bool sync;
    if (cnn_read_float(args, "momentum", 0.1, 0.0, 1.0, &momentum, err) ||
        cnn_read_float(args, "eps", 1e-5, 1e-12, 1.0, &eps, err) ||
        cnn_read_bool(args, "sync", false, &sync, err))
        return CNN_ERR_CONFIG;

    int C = l->in.c;
    struct bn_state *s = cnn_layer_alloc(l, sizeof *s, err);
    if (!s)
        return cnn_layer_alloc_status(err);
    l->state = s;
    s->momentum = (float)momentum;
    s->eps = (float)eps;
    s->sync = sync;
    s->mean = cnn_layer_alloc(l, (size_t)C * sizeof(float), err);
    s->invstd = s->mean ? cnn_layer_alloc(l, (size_t)C * sizeof(float), err)
                        : NULL;
    s->scale = s->invstd ? cnn_layer_alloc(l, (size_t)C * sizeof(float), err)
                         : NULL;
    s->shift = s->scale ? cnn_layer_alloc(l, (size_t)C * sizeof(float), err)
                        : NULL;
    s->slope = s->shift ? cnn_layer_alloc(l, (size_t)C * sizeof(float), err)
                        : NULL;
    s->sums = s->slope ? cnn_layer_alloc(l, (2 * (size_t)C + 1) *
                                                sizeof(double), err)
                       : NULL;
    s->parts = s->sums ? cnn_layer_alloc(l, 2 * (size_t)C * l->batch *
                                                sizeof(double), err)
                       : NULL;
    if (!s->parts)
        return cnn_layer_alloc_status(err);

    l->out = l->in;
    cnn_layer_add_param(l, "weight", CNN_PARAM_NORM, 1, (int[]){C}, C, C,
                        CNN_INIT_ONES);
    cnn_layer_add_param(l, "bias", CNN_PARAM_NORM, 1, (int[]){C}, C, C,
                        CNN_INIT_ZEROS);
    cnn_layer_add_param(l, "running_mean", CNN_PARAM_BUFFER, 1, (int[]){C},
                        C, C, CNN_INIT_ZEROS);
    cnn_layer_add_param(l, "running_var", CNN_PARAM_BUFFER, 1, (int[]){C},
                        C, C, CNN_INIT_ONES);
    l->flops = 4.0 * (double)cnn_shape_size(l->in);
    return CNN_OK;
}

/* A pass over the batch. The threads of cnn_parallel_for take its
 * examples, as the convolutions around it do, so that each thread reads
 * what it wrote; sums over the batch are each example's sums, added in
 * example order, so they do not depend on the thread count. */
struct pass {
    struct cnn_layer *l;
    struct bn_state *s;
    const float *x, *dy;
    const float *gate;          /* backward with a relu applied: the
                                 * output, where dy counts if positive */
    float *y, *dx;
    int n, C;
    size_t hw;
    bool train, recompute;
};

/* s->sums[c] and s->sums[C + c] = the sums over the examples of their
 * parts. */
static void add_parts(const struct pass *p)
{
    size_t width = 2 * (size_t)p->C;
    double *sums = p->s->sums;
    for (size_t c = 0; c < width; c++)
        sums[c] = 0;
    for (int i = 0; i < p->n; i++)
        for (size_t c = 0; c < width; c++)
            sums[c] += p->s->parts[i * width + c];
}

/* Each example's per-channel sum and sum of squares. */
static void sums_part(void *ctx, int lo, int hi)
{
    const struct pass *p = ctx;
    size_t size = (size_t)p->C * p->hw;
    for (int i = lo; i < hi; i++) {
        double *part = p->s->parts + (size_t)i * 2 * p->C;
        const float *x = p->x + i * size;
        for (int c = 0; c < p->C; c++) {
            if (p->hw == 1) {           /* after a dense layer */
                part[c] = x[c];
                part[p->C + c] = (double)x[c] * x[c];
                continue;
            }
            part[c] = part[p->C + c] = 0;
            cnn_sum_squares(x + c * p->hw, p->hw, 1, 0, &part[c],
                            &part[p->C + c]);
        }
    }
}

/* The batch's per-channel sums into s->sums (and the count after them),
 * summed over the ranks when syncing. */
static void batch_sums(struct pass *p)
{
    struct bn_state *s = p->s;
    cnn_parallel_for(p->n, sums_part, p);
    add_parts(p);
    s->sums[2 * p->C] = (double)p->n * (double)p->hw;
    if (s->sync)
        cnn_dist_sum_doubles(s->sums, 2 * (size_t)p->C + 1);
    s->count = s->sums[2 * p->C];
}

/* Each channel's scale and shift: from the batch's statistics in
 * training, moving the running ones (once: a recompute sees the same
 * batch), else from the running ones. */
static void channel_affine(const struct pass *p)
{
    struct bn_state *s = p->s;
    struct cnn_layer *l = p->l;
    int C = p->C;
    const float *gamma = l->params[0].data, *beta = l->params[1].data;
    float *rmean = l->params[2].data, *rvar = l->params[3].data;
    double count = s->count;

    for (int c = 0; c < C; c++) {
        float mean, invstd;
        if (p->train) {
            double m = s->sums[c] / count;
            double var = s->sums[C + c] / count - m * m;
            var = var > 0 ? var : 0;
            mean = (float)m;
            invstd = (float)(1.0 / sqrt(var + s->eps));
            double unbiased = count > 1 ? var * count / (count - 1) : var;
            if (!p->recompute) {
                rmean[c] = (1 - s->momentum) * rmean[c] + s->momentum * mean;
                rvar[c] = (1 - s->momentum) * rvar[c] +
                          s->momentum * (float)unbiased;
            }
            s->mean[c] = mean;
            s->invstd[c] = invstd;
        } else {
            mean = rmean[c];
            invstd = 1.0f / sqrtf(rvar[c] + s->eps);
        }
        s->scale[c] = gamma[c] * invstd;
        s->shift[c] = beta[c] - mean * s->scale[c];
    }
}

static void normalize_part(void *ctx, int lo, int hi)
{
    const struct pass *p = ctx;
    const struct bn_state *s = p->s;
    size_t hw = p->hw, size = (size_t)p->C * hw;
    bool relu = p->l->applies_relu;
    for (int i = lo; hw == 1 && i < hi; i++) {  /* after a dense layer */
        const float *v = p->x + i * size;
        float *q = p->y + i * size;
        for (int c = 0; c < p->C; c++) {
            float u = v[c] * s->scale[c] + s->shift[c];
            q[c] = relu && !(u > 0.0f) ? 0.0f : u;
        }
    }
    for (int i = lo; hw > 1 && i < hi; i++) {
        for (int c = 0; c < p->C; c++) {
            const float *v = p->x + i * size + c * hw;
            float *q = p->y + i * size + c * hw;
            float scale = s->scale[c], shift = s->shift[c];
            if (relu)                       /* as relu's forward */
                for (size_t j = 0; j < hw; j++) {
                    float u = v[j] * scale + shift;
                    q[j] = u > 0.0f ? u : 0.0f;
                }
            else
                for (size_t j = 0; j < hw; j++)
                    q[j] = v[j] * scale + shift;
        }
    }
}

static void bn_forward(struct cnn_layer *l, const float *x, float *y, int n,
                       const struct cnn_fwd_ctx *ctx)
{
    struct pass p = {.l = l, .s = l->state, .x = x, .y = y, .n = n,
                     .C = l->in.c, .hw = (size_t)l->in.h * l->in.w,
                     .train = ctx->train, .recompute = ctx->recompute};
    if (ctx->train)
        batch_sums(&p);
    channel_affine(&p);
    cnn_parallel_for(n, normalize_part, &p);
}

/* Each example's per-channel sums of dy and dy * (x - mean). */
static void grad_sums_part(void *ctx, int lo, int hi)
{
    const struct pass *p = ctx;
    const struct bn_state *s = p->s;
    size_t hw = p->hw, size = (size_t)p->C * hw;
    for (int i = lo; i < hi; i++) {
        double *part = s->parts + (size_t)i * 2 * p->C;
        for (int c = 0; c < p->C; c++) {
            size_t at = i * size + c * hw;
            if (hw == 1) {              /* after a dense layer */
                float d = p->gate && !(p->gate[at] > 0.0f) ? 0.0f
                                                           : p->dy[at];
                part[c] = d;
                part[p->C + c] = (double)d * (p->x[at] - s->mean[c]);
                continue;
            }
            part[c] = part[p->C + c] = 0;
            cnn_sum_products(p->dy + at, p->gate ? p->gate + at : NULL,
                             p->x + at, s->mean[c], hw, 1, 0, &part[c],
                             &part[p->C + c]);
        }
    }
}

/* Training-mode backward through the batch statistics:
 * dx = gamma * invstd / m * (m dy - sum(dy) - xhat * sum(dy * xhat)),
 * with the per-channel factors bn_backward put in scale, shift and
 * slope. */
static void input_grad_part(void *ctx, int lo, int hi)
{
    const struct pass *p = ctx;
    const struct bn_state *s = p->s;
    size_t hw = p->hw, size = (size_t)p->C * hw;
    for (int i = lo; hw == 1 && i < hi; i++) {  /* after a dense layer */
        const float *v = p->x + i * size, *d = p->dy + i * size;
        const float *g = p->gate ? p->gate + i * size : NULL;
        float *q = p->dx + i * size;
        for (int c = 0; c < p->C; c++) {
            float dc = g && !(g[c] > 0.0f) ? 0.0f : d[c];
            q[c] = s->scale[c] *
                   (dc - s->shift[c] - (v[c] - s->mean[c]) * s->slope[c]);
        }
    }
    for (int i = lo; hw > 1 && i < hi; i++) {
        for (int c = 0; c < p->C; c++) {
            float k = s->scale[c], a = s->shift[c], b = s->slope[c];
            float mean = s->mean[c];
            size_t at = i * size + c * hw;
            const float *v = p->x + at, *d = p->dy + at;
            float *q = p->dx + at;
            if (p->gate) {                  /* as relu's backward */
                const float *g = p->gate + at;
                for (size_t j = 0; j < hw; j++) {
                    float dj = g[j] > 0.0f ? d[j] : 0.0f;
                    q[j] = k * (dj - a - (v[j] - mean) * b);
                }
            } else {
                for (size_t j = 0; j < hw; j++)
                    q[j] = k * (d[j] - a - (v[j] - mean) * b);
            }
        }
    }
}

static void bn_backward(struct cnn_layer *l, const float *x, const float *y,
                        const float *dy, float *dx, int n)
{
    struct pass p = {.l = l, .s = l->state, .x = x, .dy = dy, .dx = dx,
                     .gate = l->applies_relu ? y : NULL,
                     .n = n, .C = l->in.c, .hw = (size_t)l->in.h * l->in.w};
    struct bn_state *s = p.s;
    cnn_parallel_for(n, grad_sums_part, &p);
    add_parts(&p);
    /* The parameters' gradients (this rank's own: the trainer sums them
     * over ranks), and the sums dx needs. */
    float *dgamma = l->params[0].grad, *dbeta = l->params[1].grad;
    for (int c = 0; c < p.C; c++) {
        double sum_dy = s->sums[c];
        double sum_dy_xhat = s->sums[p.C + c] * s->invstd[c];
        dgamma[c] += (float)sum_dy_xhat;
        dbeta[c] += (float)sum_dy;
        s->sums[p.C + c] = sum_dy_xhat;
    }
    if (!dx)
        return;
    /* dx needs the sums over the whole batch, all ranks' shards. */
    if (s->sync)
        cnn_dist_sum_doubles(s->sums, 2 * (size_t)p.C);
    const float *gamma = l->params[0].data;
    double m = s->count;
    for (int c = 0; c < p.C; c++) {
        s->scale[c] = gamma[c] * s->invstd[c];
        s->shift[c] = (float)(s->sums[c] / m);
        s->slope[c] = s->invstd[c] * (float)(s->sums[p.C + c] / m);
    }
    cnn_parallel_for(n, input_grad_part, &p);
}

static void bn_destroy(struct cnn_layer *l)
{
    struct bn_state *s = l->state;
    if (s) {
        free(s->mean);
        free(s->invstd);
        free(s->scale);
        free(s->shift);
        free(s->slope);
        free(s->sums);
        free(s->parts);
    }
    free(s);
}

const struct cnn_layer_kind cnn_layer_batchnorm = {
    .name = "batchnorm",
    .create = bn_create,
    .forward = bn_forward,
    .backward = bn_backward,
    .destroy = bn_destroy,
    .can_apply_relu = true,
};
