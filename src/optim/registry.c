/*
 * The table of optimizers by config name, and the generic create/step.
 */
#include "cnn/optim.h"

#include <string.h>

static const struct cnn_optim_kind *const kinds[] = {
    &cnn_optim_sgd,
};

/* Names the optimizer issue will add; refused with a clear message. */
static const char *const planned[] = {
    "adam", "adamw", "lion", "rmsprop", "adagrad", "adam8bit",
};

enum cnn_status cnn_optim_create(struct cnn_optim *o,
                                 const struct cnn_optim_config *cfg, size_t n,
                                 struct cnn_error *err)
{
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i]->name, cfg->name) == 0)
            o->kind = kinds[i];

    struct cnn_node *at = cnn_node_get(cfg->node, "name");
    if (!o->kind) {
        const char *names[16];
        int count = 0;
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            names[count++] = kinds[i]->name;
        for (size_t i = 0; i < sizeof planned / sizeof planned[0]; i++) {
            if (strcmp(planned[i], cfg->name) != 0)
                continue;
            if (at)
                cnn_node_error(err, at, "optimizer '%s' is not built yet",
                               cfg->name);
            else
                cnn_error_set(err, CNN_ERR_UNSUPPORTED, "optimizer '%s' is "
                              "not built yet", cfg->name);
            if (err)
                err->status = CNN_ERR_UNSUPPORTED;
            cnn_error_hint(err, "use 'sgd' (with momentum and nesterov)");
            return CNN_ERR_UNSUPPORTED;
        }
        if (at)
            cnn_node_error(err, at, "unknown optimizer '%s' (known: sgd)",
                           cfg->name);
        else
            cnn_error_set(err, CNN_ERR_CONFIG, "unknown optimizer '%s'",
                          cfg->name);
        const char *near = cnn_closest_name(cfg->name, names, count);
        if (near)
            cnn_error_hint(err, "did you mean '%s'?", near);
        return CNN_ERR_CONFIG;
    }

    o->cfg = *cfg;
    o->n = n;
    return o->kind->create(o, err);
}

void cnn_optim_step(struct cnn_optim *o, float *params, const float *grads,
                    float lr)
{
    o->kind->step(o, params, grads, lr);
    o->steps++;
}

void cnn_optim_free(struct cnn_optim *o)
{
    if (!o || !o->kind)
        return;
    if (o->kind->destroy)
        o->kind->destroy(o);
    o->kind = NULL;
}
