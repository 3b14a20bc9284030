/*
 * Adam (Kingma and Ba) with coupled weight decay, and AdamW (Loshchilov
 * and Hutter) with decoupled decay, in PyTorch's formulation:
 *
 *   adam:  g = grad + wd * p
 *   adamw: p = p * (1 - lr * wd),  g = grad
 *   m = b1 m + (1 - b1) g           v = b2 v + (1 - b2) g^2
 *   p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *
 *   optimizer: {name: adam, lr: 0.001, betas: [0.9, 0.999], eps: 1e-8}
 */
#include "cnn/optim.h"

#include <math.h>
#include <stdlib.h>

struct adam {
    double b1, b2, eps;
    bool decoupled;
    float *m, *v;               /* [n] first and second moments */
};

static enum cnn_status create(struct cnn_optim *o, struct cnn_node *args,
                              bool decoupled, struct cnn_error *err)
{
    struct adam *s = calloc(1, sizeof *s);
    if (!(o->state = s))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    s->decoupled = decoupled;
    if (cnn_optim_read_betas(args, 0.9, 0.999, &s->b1, &s->b2, err) ||
        cnn_read_float(args, "eps", 1e-8, 1e-30, 1.0, &s->eps, err))
        return CNN_ERR_CONFIG;
    if (!(s->m = cnn_optim_float_buffer(o, "exp_avg", err)) ||
        !(s->v = cnn_optim_float_buffer(o, "exp_avg_sq", err)))
        return CNN_ERR_NOMEM;
    return CNN_OK;
}

static enum cnn_status adam_create(struct cnn_optim *o, struct cnn_node *args,
                                   struct cnn_error *err)
{
    return create(o, args, false, err);
}

static enum cnn_status adamw_create(struct cnn_optim *o,
                                    struct cnn_node *args,
                                    struct cnn_error *err)
{
    return create(o, args, true, err);
}

static void adam_update(struct cnn_optim *o, float *p, const float *grad,
                        size_t offset, size_t n, float lr, float wd)
{
    struct adam *s = o->state;
    float *m = s->m + offset, *v = s->v + offset;
    double t = (double)(o->steps + 1);
    float step = (float)(lr / (1.0 - pow(s->b1, t)));
    float bc2_sqrt = (float)sqrt(1.0 - pow(s->b2, t));
    /* 1 - beta in double, then rounded, as PyTorch computes it. */
    float b1 = (float)s->b1, b2 = (float)s->b2, eps = (float)s->eps;
    float c1 = (float)(1.0 - s->b1), c2 = (float)(1.0 - s->b2);
    float shrink = s->decoupled ? 1.0f - lr * wd : 1.0f;
    float coupled = s->decoupled ? 0.0f : wd;

    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + coupled * p[i];
        p[i] *= shrink;
        m[i] = b1 * m[i] + c1 * g;
        v[i] = b2 * v[i] + c2 * g * g;
        p[i] -= step * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
}

const struct cnn_optim_kind cnn_optim_adam = {
    .name = "adam",
    .create = adam_create,
    .update = adam_update,
    .elementwise = true,
};

const struct cnn_optim_kind cnn_optim_adamw = {
    .name = "adamw",
    .create = adamw_create,
    .update = adam_update,
    .elementwise = true,
};
