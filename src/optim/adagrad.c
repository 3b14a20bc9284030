/*
 * Adagrad (Duchi, Hazan and Singer), in PyTorch's formulation:
 *
 *   g = grad + wd * p
 *   s = s + g^2                     (s starts at initial_accumulator)
 *   p = p - lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)
 *
 *   optimizer: {name: adagrad, lr: 0.01, lr_decay: 0, eps: 1e-10,
 *               initial_accumulator: 0}
 */
#include "cnn/optim.h"

#include <math.h>
#include <stdlib.h>

struct adagrad {
    double lr_decay;
    float eps;
    float *sum;                 /* [n] running sum of g^2 */
};

static enum cnn_status adagrad_create(struct cnn_optim *o,
                                      struct cnn_node *args,
                                      struct cnn_error *err)
{
    double lr_decay, eps, init;
    if (cnn_read_float(args, "lr_decay", 0.0, 0.0, 1e6, &lr_decay, err) ||
        cnn_read_float(args, "eps", 1e-10, 1e-30, 1.0, &eps, err) ||
        cnn_read_float(args, "initial_accumulator", 0.0, 0.0, 1e6, &init,
                       err))
        return CNN_ERR_CONFIG;

    struct adagrad *s = calloc(1, sizeof *s);
    if (!(o->state = s))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    s->lr_decay = lr_decay;
    s->eps = (float)eps;
    if (!(s->sum = cnn_optim_float_buffer(o, "sum", err)))
        return CNN_ERR_NOMEM;
    for (size_t i = 0; i < o->n; i++)
        s->sum[i] = (float)init;
    return CNN_OK;
}

static void adagrad_update(struct cnn_optim *o, float *p, const float *grad,
                           size_t offset, size_t n, float lr, float wd)
{
    struct adagrad *s = o->state;
    float *sum = s->sum + offset;
    float clr = (float)(lr / (1.0 + (double)o->steps * s->lr_decay));

    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + wd * p[i];
        sum[i] += g * g;
        p[i] -= clr * g / (sqrtf(sum[i]) + s->eps);
    }
}

const struct cnn_optim_kind cnn_optim_adagrad = {
    .name = "adagrad",
    .create = adagrad_create,
    .update = adagrad_update,
    .elementwise = true,
};
