/*
 * Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms"):
 * the sign of an interpolated momentum, with decoupled weight decay.
 *
 *   p = p * (1 - lr * wd)
 *   p = p - lr * sign(b1 m + (1 - b1) g)
 *   m = b2 m + (1 - b2) g
 *
 * Its steps are all of size lr, so its lr is usually 3-10x below AdamW's.
 *
 *   optimizer: {name: lion, lr: 0.0001, betas: [0.9, 0.99]}
 */
#include "cnn/optim.h"

#include <stdlib.h>

struct lion {
    double b1, b2;
    float *m;                   /* [n] momentum */
};

static enum cnn_status lion_create(struct cnn_optim *o, struct cnn_node *args,
                                   struct cnn_error *err)
{
    struct lion *s = calloc(1, sizeof *s);
    if (!(o->state = s))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    if (cnn_optim_read_betas(args, 0.9, 0.99, &s->b1, &s->b2, err))
        return CNN_ERR_CONFIG;
    if (!(s->m = cnn_optim_float_buffer(o, "exp_avg", err)))
        return CNN_ERR_NOMEM;
    return CNN_OK;
}

static void lion_update(struct cnn_optim *o, float *p, const float *grad,
                        size_t offset, size_t n, float lr, float wd)
{
    struct lion *s = o->state;
    float *m = s->m + offset;
    float b1 = (float)s->b1, b2 = (float)s->b2;
    float c1 = (float)(1.0 - s->b1), c2 = (float)(1.0 - s->b2);
    float shrink = 1.0f - lr * wd;

    for (size_t i = 0; i < n; i++) {
        float c = b1 * m[i] + c1 * grad[i];
        float sign = (float)((c > 0.0f) - (c < 0.0f));
        p[i] = p[i] * shrink - lr * sign;
        m[i] = b2 * m[i] + c2 * grad[i];
    }
}

const struct cnn_optim_kind cnn_optim_lion = {
    .name = "lion",
    .create = lion_create,
    .update = lion_update,
    .elementwise = true,
};
