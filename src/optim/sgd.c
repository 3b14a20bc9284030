/*
 * SGD with momentum, dampening, Nesterov and coupled weight decay, as
 * PyTorch's torch.optim.SGD defines them:
 *
 *   g = grad + wd * p
 *   b = g                              on the first step
 *   b = momentum * b + (1 - dampening) * g    after
 *   g = g + momentum * b  (nesterov)   or   g = b
 *   p = p - lr * g
 */
#include "cnn/optim.h"

#include <stdlib.h>

static enum cnn_status sgd_create(struct cnn_optim *o, struct cnn_error *err)
{
    if (o->cfg.momentum == 0.0)
        return CNN_OK;
    o->state = calloc(o->n ? o->n : 1, sizeof(float));
    if (!o->state)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the "
                             "momentum buffer");
    return CNN_OK;
}

static void sgd_step(struct cnn_optim *o, float *p, const float *grad, float lr)
{
    float wd = (float)o->cfg.weight_decay;
    float mu = (float)o->cfg.momentum;
    float damp = 1.0f - (float)o->cfg.dampening;
    float *buf = o->state;          /* [n] momentum, NULL without it */
    bool first = o->steps == 0;

    for (size_t i = 0; i < o->n; i++) {
        float g = grad[i] + wd * p[i];
        if (buf) {
            buf[i] = first ? g : mu * buf[i] + damp * g;
            g = o->cfg.nesterov ? g + mu * buf[i] : buf[i];
        }
        p[i] -= lr * g;
    }
}

static void sgd_destroy(struct cnn_optim *o)
{
    free(o->state);
    o->state = NULL;
}

const struct cnn_optim_kind cnn_optim_sgd = {
    .name = "sgd",
    .create = sgd_create,
    .step = sgd_step,
    .destroy = sgd_destroy,
};
