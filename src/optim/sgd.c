/*
 * SGD with momentum, dampening, Nesterov and coupled weight decay, as
 * PyTorch's torch.optim.SGD defines them:
 *
 *   g = grad + wd * p
 *   b = g                                   on the first step
 *   b = momentum * b + (1 - dampening) * g  after
 *   g = g + momentum * b  (nesterov)   or   g = b
 *   p = p - lr * g
 *
 *   optimizer: {name: sgd, lr: 0.05, momentum: 0.9, nesterov: true}
 */
#include "cnn/optim.h"

#include <stdlib.h>

struct sgd {
    float momentum, one_minus_dampening;
    bool nesterov;
    float *buf;                 /* [n] momentum buffer; NULL without */
};

static enum cnn_status sgd_create(struct cnn_optim *o, struct cnn_node *args,
                                  struct cnn_error *err)
{
    double momentum, dampening;
    bool nesterov;
    if (cnn_read_float(args, "momentum", 0.0, 0.0, 1.0, &momentum, err) ||
        cnn_read_float(args, "dampening", 0.0, 0.0, 1.0, &dampening, err) ||
        cnn_read_bool(args, "nesterov", false, &nesterov, err))
        return CNN_ERR_CONFIG;
    if (nesterov && (momentum <= 0.0 || dampening != 0.0))
        return cnn_node_error(err, cnn_node_get(args, "nesterov"),
                              "nesterov needs momentum > 0 and dampening 0");

    struct sgd *s = calloc(1, sizeof *s);
    if (!(o->state = s))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    s->momentum = (float)momentum;
    s->one_minus_dampening = (float)(1.0 - dampening);
    s->nesterov = nesterov;
    if (momentum > 0.0 &&
        !(s->buf = cnn_optim_float_buffer(o, "momentum_buffer", err)))
        return CNN_ERR_NOMEM;
    return CNN_OK;
}

static void sgd_update(struct cnn_optim *o, float *p, const float *grad,
                       size_t offset, size_t n, float lr, float wd)
{
    struct sgd *s = o->state;
    float *buf = s->buf ? s->buf + offset : NULL;
    float mu = s->momentum, damp = s->one_minus_dampening;
    bool first = o->steps == 0;

    /* One loop per case, without branches inside, so each vectorizes. */
    if (!buf) {
        for (size_t i = 0; i < n; i++)
            p[i] -= lr * (grad[i] + wd * p[i]);
    } else if (first && s->nesterov) {
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] + wd * p[i];
            buf[i] = g;
            p[i] -= lr * (g + mu * g);
        }
    } else if (first) {
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] + wd * p[i];
            buf[i] = g;
            p[i] -= lr * g;
        }
    } else if (s->nesterov) {
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] + wd * p[i];
            float b = mu * buf[i] + damp * g;
            buf[i] = b;
            p[i] -= lr * (g + mu * b);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float b = mu * buf[i] + damp * (grad[i] + wd * p[i]);
            buf[i] = b;
            p[i] -= lr * b;
        }
    }
}

const struct cnn_optim_kind cnn_optim_sgd = {
    .name = "sgd",
    .create = sgd_create,
    .update = sgd_update,
    .elementwise = true,
};
