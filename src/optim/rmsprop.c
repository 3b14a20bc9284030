/*
 * RMSprop (Hinton's lecture notes), with optional momentum and the
 * centered variant (Graves), in PyTorch's formulation:
 *
 *   g = grad + wd * p
 *   v = alpha v + (1 - alpha) g^2
 *   centered: a = alpha a + (1 - alpha) g,  d = sqrt(v - a^2) + eps
 *   else:     d = sqrt(v) + eps
 *   momentum: b = momentum b + g / d,  p = p - lr b
 *   else:     p = p - lr g / d
 *
 *   optimizer: {name: rmsprop, lr: 0.001, alpha: 0.99, eps: 1e-8,
 *               momentum: 0, centered: false}
 */
#include "cnn/optim.h"

#include <math.h>
#include <stdlib.h>

struct rmsprop {
    float alpha, one_minus_alpha, eps, momentum;
    float *v;                   /* [n] running mean of g^2 */
    float *a;                   /* [n] running mean of g; centered only */
    float *b;                   /* [n] momentum buffer; momentum only */
};

static enum cnn_status rmsprop_create(struct cnn_optim *o,
                                      struct cnn_node *args,
                                      struct cnn_error *err)
{
    double alpha, eps, momentum;
    bool centered;
    if (cnn_read_float(args, "alpha", 0.99, 0.0, 0.999999999, &alpha, err) ||
        cnn_read_float(args, "eps", 1e-8, 1e-30, 1.0, &eps, err) ||
        cnn_read_float(args, "momentum", 0.0, 0.0, 0.999999999, &momentum,
                       err) ||
        cnn_read_bool(args, "centered", false, &centered, err))
        return CNN_ERR_CONFIG;

    struct rmsprop *s = calloc(1, sizeof *s);
    if (!(o->state = s))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    s->alpha = (float)alpha;
    s->one_minus_alpha = (float)(1.0 - alpha);
    s->eps = (float)eps;
    s->momentum = (float)momentum;
    if (!(s->v = cnn_optim_float_buffer(o, "square_avg", err)) ||
        (centered && !(s->a = cnn_optim_float_buffer(o, "grad_avg", err))) ||
        (momentum > 0 &&
         !(s->b = cnn_optim_float_buffer(o, "momentum_buffer", err))))
        return CNN_ERR_NOMEM;
    return CNN_OK;
}

static void rmsprop_update(struct cnn_optim *o, float *p, const float *grad,
                           size_t offset, size_t n, float lr, float wd)
{
    struct rmsprop *s = o->state;
    float *v = s->v + offset;
    float *a = s->a ? s->a + offset : NULL;
    float *b = s->b ? s->b + offset : NULL;
    float alpha = s->alpha, c = s->one_minus_alpha;

    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + wd * p[i];
        v[i] = alpha * v[i] + c * g * g;
        float d;
        if (a) {
            a[i] = alpha * a[i] + c * g;
            d = sqrtf(v[i] - a[i] * a[i]) + s->eps;
        } else {
            d = sqrtf(v[i]) + s->eps;
        }
        if (b) {
            b[i] = s->momentum * b[i] + g / d;
            p[i] -= lr * b[i];
        } else {
            p[i] -= lr * g / d;
        }
    }
}

const struct cnn_optim_kind cnn_optim_rmsprop = {
    .name = "rmsprop",
    .create = rmsprop_create,
    .update = rmsprop_update,
    .elementwise = true,
};
