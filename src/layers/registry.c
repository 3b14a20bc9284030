/*
 * The table of layer kinds by config name, and helpers every kind uses:
 * declaring parameters, reading "init", initializing weights.
 */
#include "cnn/layer.h"
#include "cnn/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct cnn_layer_kind *const kinds[] = {
    &cnn_layer_dense,
    &cnn_layer_conv2d,
    &cnn_layer_maxpool,
    &cnn_layer_avgpool,
    &cnn_layer_flatten,
    &cnn_layer_relu,
    &cnn_layer_leaky_relu,
    &cnn_layer_sigmoid,
    &cnn_layer_tanh,
    &cnn_layer_dropout,
    &cnn_layer_batchnorm,
    &cnn_layer_global_avgpool,
    &cnn_layer_residual,
    &cnn_layer_layernorm,
    &cnn_layer_rmsnorm,
};

enum { N_KINDS = sizeof kinds / sizeof kinds[0] };

const struct cnn_layer_kind *cnn_layer_kind_find(const char *name)
{
    for (size_t i = 0; i < N_KINDS; i++)
        if (strcmp(kinds[i]->name, name) == 0)
            return kinds[i];
    return NULL;
}

int cnn_layer_kind_names(const char **names, int cap)
{
    int n = 0;
    for (size_t i = 0; i < N_KINDS && n < cap; i++)
        names[n++] = kinds[i]->name;
    return n;
}

void cnn_layer_add_param(struct cnn_layer *l, const char *suffix,
                         enum cnn_param_kind kind, int ndim, const int *dims,
                         int fan_in, int fan_out, enum cnn_init init)
{
    struct cnn_param *p = &l->params[l->n_params++];
    memset(p, 0, sizeof *p);
    p->suffix = suffix;
    p->kind = kind;
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        p->dims[i] = dims[i];
        p->count *= (size_t)dims[i];
    }
    p->fan_in = fan_in;
    p->fan_out = fan_out;
    p->init = init;
}

enum cnn_status cnn_layer_read_init(struct cnn_node *args, enum cnn_init def,
                                    enum cnn_init *out, struct cnn_error *err)
{
    static const char *const names[] = {
        [CNN_INIT_AUTO] = "auto",
        [CNN_INIT_ONES] = "ones",
        [CNN_INIT_HE_NORMAL] = "he_normal",
        [CNN_INIT_HE_UNIFORM] = "he_uniform",
        [CNN_INIT_GLOROT_NORMAL] = "glorot_normal",
        [CNN_INIT_GLOROT_UNIFORM] = "glorot_uniform",
        [CNN_INIT_ZEROS] = "zeros",
        [CNN_INIT_NORMAL] = "normal",
        NULL,
    };
    int v;
    if (cnn_read_choice(args, "init", names, (int)def, &v, err) != CNN_OK)
        return CNN_ERR_CONFIG;
    *out = (enum cnn_init)v;
    return CNN_OK;
}

void cnn_param_init(struct cnn_param *p, struct cnn_rng *rng)
{
    if (p->init == CNN_INIT_ONES) {
        for (size_t i = 0; i < p->count; i++)
            p->data[i] = 1.0f;
        return;
    }
    if (p->kind == CNN_PARAM_BIAS || p->init == CNN_INIT_ZEROS) {
        memset(p->data, 0, p->count * sizeof *p->data);
        return;
    }

    double fan_in = p->fan_in > 0 ? p->fan_in : 1;
    double fan_avg = (p->fan_in + p->fan_out) / 2.0;
    if (fan_avg <= 0)
        fan_avg = 1;
    double std = 0.0;
    bool uniform = false;
    switch (p->init) {
    case CNN_INIT_AUTO:         /* resolved by the net; He if not */
    case CNN_INIT_HE_NORMAL:
        std = sqrt(2.0 / fan_in);
        break;
    case CNN_INIT_HE_UNIFORM:
        std = sqrt(2.0 / fan_in);
        uniform = true;
        break;
    case CNN_INIT_GLOROT_NORMAL:
        std = sqrt(1.0 / fan_avg);
        break;
    case CNN_INIT_GLOROT_UNIFORM:
        std = sqrt(1.0 / fan_avg);
        uniform = true;
        break;
    case CNN_INIT_ZEROS:
    case CNN_INIT_ONES:
        break;
    case CNN_INIT_NORMAL:
        std = 0.01;
        break;
    }

    /* A uniform on [-a, a] has std a / sqrt(3). */
    float a = (float)(std * sqrt(3.0));
    for (size_t i = 0; i < p->count; i++) {
        if (uniform)
            p->data[i] = (2.0f * cnn_rng_uniform(rng) - 1.0f) * a;
        else
            p->data[i] = (float)std * cnn_rng_normal(rng);
    }
}

enum cnn_status cnn_layer_need_flat(struct cnn_layer *l,
                                    struct cnn_error *err)
{
    if (cnn_shape_is_flat(l->in))
        return CNN_OK;
    cnn_node_error(err, l->node, "%s (%s) needs a flat input, but %s "
                   "outputs %dx%dx%d", l->name, l->kind->name, l->prev,
                   l->in.c, l->in.h, l->in.w);
    cnn_error_hint(err, "put '- flatten' before it");
    return CNN_ERR_CONFIG;
}

enum cnn_status cnn_layer_window(struct cnn_layer *l, int size, int stride,
                                 int pad, struct cnn_conv_geom *g,
                                 struct cnn_error *err)
{
    *g = (struct cnn_conv_geom){
        .c = l->in.c, .h = l->in.h, .w = l->in.w,
        .kh = size, .kw = size, .stride = stride, .pad = pad,
    };
    g->oh = cnn_conv_out_size(g->h, g->kh, g->stride, g->pad);
    g->ow = cnn_conv_out_size(g->w, g->kw, g->stride, g->pad);
    if (g->oh >= 1 && g->ow >= 1)
        return CNN_OK;
    return cnn_node_error(err, l->node, "a %dx%d window with pad %d does not "
                          "fit the %dx%d output of %s", size, size, pad,
                          g->h, g->w, l->prev);
}

/* No layer state of ours comes near this; past it, a size is a typo. */
static const double MAX_STATE_BYTES = 16.0 * (1ull << 30);

void *cnn_layer_alloc(struct cnn_layer *l, size_t bytes,
                      struct cnn_error *err)
{
    if ((double)bytes > MAX_STATE_BYTES) {
        cnn_node_error(err, l->node, "%s would need %.1f GiB of working "
                       "memory: too large", l->name,
                       (double)bytes / (1ull << 30));
        return NULL;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p)
        cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory (%zu bytes)",
                      l->name, bytes);
    return p;
}

enum cnn_status cnn_layer_alloc_status(const struct cnn_error *err)
{
    return err && err->status != CNN_OK ? err->status : CNN_ERR_NOMEM;
}

enum cnn_status cnn_layer_require(struct cnn_layer *l, struct cnn_node *args,
                                  const char *key, const char *example,
                                  struct cnn_error *err)
{
    if (cnn_node_get(args, key))
        return CNN_OK;
    if (cnn_node_check_unused(args, err) != CNN_OK)
        return CNN_ERR_CONFIG;
    return cnn_node_error(err, l->node, "%s needs '%s', e.g. '%s'",
                          l->kind->name, key, example);
}
