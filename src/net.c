/*
 * Building the layer stack: parse each list item into a kind and its
 * arguments, chain shapes, place parameters in one block and allocate the
 * activation buffers. Then forward and backward walk the stack.
 */
#include "cnn/net.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MAX_LAYERS = 4096,
};

/* Refuse what cannot be meant: more than 16 GiB of parameters or 64 GiB
 * of activations is a typo, not a model for this trainer. */
static const double MAX_PARAM_FLOATS = 4.0e9;
static const double MAX_ACT_BYTES = 64.0 * (1ull << 30);

/* Splits a list item into its kind name and argument mapping. */
static enum cnn_status item_kind(struct cnn_node *item, const char **name,
                                 struct cnn_node **args, struct cnn_error *err)
{
    if (item->kind == CNN_NODE_SCALAR && !cnn_node_is_null(item)) {
        *name = item->value;
        *args = NULL;
        return CNN_OK;
    }
    if (item->kind != CNN_NODE_MAP || item->n_items == 0)
        return cnn_node_error(err, item, "a layer is a name ('- relu') or "
                              "one key naming its kind ('- dense: {units: "
                              "10}')");
    if (item->n_items > 1) {
        cnn_node_error(err, item->items[1], "a layer is one key naming its "
                       "kind, but this one also has '%s'",
                       item->items[1]->key);
        cnn_error_hint(err, "indent the arguments under '%s:' or write "
                       "'- %s: {...}'", item->items[0]->key,
                       item->items[0]->key);
        return CNN_ERR_CONFIG;
    }
    struct cnn_node *a = item->items[0];
    a->used = true;
    *name = a->key;
    *args = cnn_node_is_null(a) ? NULL : a;
    if (*args && (*args)->kind != CNN_NODE_MAP)
        return cnn_node_error(err, a, "the arguments of '%s' must be a "
                              "mapping, e.g. {size: 2}", a->key);
    return CNN_OK;
}

static enum cnn_status find_kind(struct cnn_node *item, const char *name,
                                 const struct cnn_layer_kind **kind,
                                 struct cnn_error *err)
{
    *kind = cnn_layer_kind_find(name);
    if (*kind)
        return CNN_OK;

    const char *names[64];
    int n = cnn_layer_kind_names(names, 64);
    char all[512] = "";
    size_t len = 0;
    for (int i = 0; i < n && len + 1 < sizeof all; i++)
        len += (size_t)snprintf(all + len, sizeof all - len, "%s%s",
                                i ? ", " : "", names[i]);
    cnn_node_error(err, item, "unknown layer '%s' (known: %s)", name, all);
    const char *near = cnn_closest_name(name, names, n);
    if (near)
        cnn_error_hint(err, "did you mean '%s'?", near);
    return CNN_ERR_CONFIG;
}

static enum cnn_status layer_name(struct cnn_net *net, struct cnn_layer *l,
                                  struct cnn_node *args, int ordinal,
                                  struct cnn_error *err)
{
    const char *given;
    if (cnn_read_string(args, "name", NULL, &given, err) != CNN_OK)
        return CNN_ERR_CONFIG;
    if (!given) {
        snprintf(l->name, sizeof l->name, "%s_%d", l->kind->name, ordinal);
        for (int i = 0; i < net->n_layers; i++)
            if (strcmp(net->layers[i].name, l->name) == 0)
                return cnn_node_error(err, l->node, "its default name '%s' is "
                                      "taken by layer %d; give one of them "
                                      "another 'name'", l->name, i + 1);
        return CNN_OK;
    }

    struct cnn_node *n = cnn_node_get(args, "name");
    size_t len = strlen(given);
    if (len >= sizeof l->name)
        return cnn_node_error(err, n, "longer than %zu characters",
                              sizeof l->name - 1);
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)given[i]) && !strchr("_-", given[i]))
            return cnn_node_error(err, n, "'%s': use letters, digits, '_' "
                                  "and '-' only", given);
    for (int i = 0; i < net->n_layers; i++)
        if (strcmp(net->layers[i].name, given) == 0)
            return cnn_node_error(err, n, "'%s' is already the name of "
                                  "layer %d", given, i + 1);
    memcpy(l->name, given, len + 1);
    return CNN_OK;
}

/* How many layers of this kind came before, plus one. */
static int kind_ordinal(const struct cnn_net *net,
                        const struct cnn_layer_kind *kind)
{
    int k = 1;
    for (int i = 0; i < net->n_layers; i++)
        k += net->layers[i].kind == kind;
    return k;
}

static enum cnn_status add_layer(struct cnn_net *net, struct cnn_node *item,
                                 struct cnn_shape in, struct cnn_error *err)
{
    const char *name = NULL;
    struct cnn_node *args = NULL;
    const struct cnn_layer_kind *kind = NULL;
    if (item_kind(item, &name, &args, err) != CNN_OK ||
        find_kind(item, name, &kind, err) != CNN_OK)
        return CNN_ERR_CONFIG;

    struct cnn_layer *l = &net->layers[net->n_layers];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->node = item;
    l->batch = net->batch;
    l->in = in;
    if (net->n_layers == 0) {
        snprintf(l->prev, sizeof l->prev, "the input");
    } else {
        const struct cnn_layer *p = &net->layers[net->n_layers - 1];
        snprintf(l->prev, sizeof l->prev, "%s", p->name);
    }

    double lr_mult = 1.0;
    enum cnn_status st = layer_name(net, l, args, kind_ordinal(net, kind), err);
    if (st == CNN_OK)
        st = cnn_read_float(args, "lr_mult", 1.0, 0.0, 1e6, &lr_mult, err);
    if (st == CNN_OK)
        st = cnn_read_bool(args, "trainable", true, &l->trainable, err);
    l->lr_mult = (float)lr_mult;
    net->n_layers++;   /* from here on, cnn_net_free destroys it */
    if (st == CNN_OK)
        st = kind->create(l, args, err);
    if (st == CNN_OK)
        st = cnn_node_check_unused(args, err);
    if (st != CNN_OK)
        return st;

    if (cnn_shape_size(l->out) == 0)
        return cnn_node_error(err, item, "%s produces an empty output",
                              l->name);
    return CNN_OK;
}

/* He init before ReLU-like activations, Glorot before sigmoid and tanh
 * and for the output layer: the first activation after a layer (skipping
 * pools, flatten, dropout) decides for its "init: auto" tensors. */
static void choose_init(struct cnn_net *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        enum cnn_init pick = CNN_INIT_GLOROT_UNIFORM;
        for (int j = i + 1; j < net->n_layers; j++) {
            const struct cnn_layer_kind *k = net->layers[j].kind;
            if (k == &cnn_layer_relu || k == &cnn_layer_leaky_relu) {
                pick = CNN_INIT_HE_NORMAL;
                break;
            }
            if (k == &cnn_layer_sigmoid || k == &cnn_layer_tanh ||
                net->layers[j].n_params > 0)
                break;
        }
        for (int p = 0; p < net->layers[i].n_params; p++)
            if (net->layers[i].params[p].init == CNN_INIT_AUTO)
                net->layers[i].params[p].init = pick;
    }
}

static enum cnn_status allocate(struct cnn_net *net, struct cnn_error *err)
{
    double n_params = 0;
    double act_bytes = sizeof(float) * (double)net->batch *
                       (double)cnn_shape_size(net->in);
    if (act_bytes > MAX_ACT_BYTES)
        return cnn_error_set(err, CNN_ERR_CONFIG, "one batch of %d inputs of "
                             "%dx%dx%d needs %.1f GiB: too large", net->batch,
                             net->in.c, net->in.h, net->in.w,
                             act_bytes / (1ull << 30));
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i];
        for (int j = 0; j < l->n_params; j++)
            n_params += (double)l->params[j].count;
        act_bytes += 2.0 * sizeof(float) * net->batch *
                     (double)cnn_shape_size(l->out);
        if (n_params > MAX_PARAM_FLOATS)
            return cnn_node_error(err, l->node, "the model reaches %.3g "
                                  "parameters at %s: too large", n_params,
                                  l->name);
        if (act_bytes > MAX_ACT_BYTES)
            return cnn_node_error(err, l->node, "activations reach %.1f GiB "
                                  "at %s for batch %d: too large",
                                  act_bytes / (1ull << 30), l->name,
                                  net->batch);
    }

    net->n_params = (size_t)n_params;
    net->params = calloc(net->n_params ? net->n_params : 1, sizeof(float));
    net->grads = calloc(net->n_params ? net->n_params : 1, sizeof(float));
    net->acts = calloc((size_t)net->n_layers + 1, sizeof *net->acts);
    net->dacts = calloc((size_t)net->n_layers + 1, sizeof *net->dacts);
    if (!net->params || !net->grads || !net->acts || !net->dacts)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the "
                             "model's %zu parameters", net->n_params);

    size_t off = 0;
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i];
        for (int j = 0; j < l->n_params; j++) {
            l->params[j].data = net->params + off;
            l->params[j].grad = net->grads + off;
            off += l->params[j].count;
        }
    }

    for (int i = 0; i <= net->n_layers; i++) {
        struct cnn_shape s = i == 0 ? net->in : net->layers[i - 1].out;
        size_t bytes = (size_t)net->batch * cnn_shape_size(s) * sizeof(float);
        net->acts[i] = calloc(1, bytes);
        /* Nothing needs the gradient of the input itself. */
        net->dacts[i] = i == 0 ? NULL : calloc(1, bytes);
        if (!net->acts[i] || (i > 0 && !net->dacts[i]))
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for "
                                 "activations (%zu bytes at layer %d)",
                                 bytes, i);
    }
    return CNN_OK;
}

enum cnn_status cnn_net_build(struct cnn_net *net, struct cnn_node *layers,
                              struct cnn_shape in, int batch,
                              struct cnn_error *err)
{
    memset(net, 0, sizeof *net);
    net->in = in;
    net->batch = batch;
    if (!layers || layers->kind != CNN_NODE_SEQ || layers->n_items == 0)
        return cnn_error_set(err, CNN_ERR_CONFIG, "the model has no layers");
    if (layers->n_items > MAX_LAYERS)
        return cnn_node_error(err, layers, "more than %d layers", MAX_LAYERS);

    net->layers = calloc((size_t)layers->n_items, sizeof *net->layers);
    if (!net->layers)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");

    enum cnn_status st = CNN_OK;
    struct cnn_shape shape = in;
    for (int i = 0; i < layers->n_items && st == CNN_OK; i++) {
        st = add_layer(net, layers->items[i], shape, err);
        if (st == CNN_OK)
            shape = net->layers[net->n_layers - 1].out;
    }
    if (st == CNN_OK) {
        net->out = shape;
        choose_init(net);
        st = allocate(net, err);
    }
    if (st != CNN_OK)
        cnn_net_free(net);
    return st;
}

void cnn_net_init_params(struct cnn_net *net, uint64_t seed)
{
    struct cnn_rng rng;
    cnn_rng_seed(&rng, seed, CNN_RNG_STREAM_INIT, 0);
    for (int i = 0; i < net->n_layers; i++)
        for (int j = 0; j < net->layers[i].n_params; j++)
            cnn_param_init(&net->layers[i].params[j], &rng);
    cnn_rng_seed(&net->dropout_rng, seed, CNN_RNG_STREAM_DROPOUT, 0);
}

const float *cnn_net_forward(struct cnn_net *net, int n, bool train)
{
    struct cnn_fwd_ctx ctx = {.train = train, .rng = &net->dropout_rng};
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i];
        l->kind->forward(l, net->acts[i], net->acts[i + 1], n, &ctx);
    }
    return net->acts[net->n_layers];
}

void cnn_net_backward(struct cnn_net *net, const float *dout, int n)
{
    int L = net->n_layers;
    size_t out_bytes = (size_t)n * cnn_shape_size(net->out) * sizeof(float);
    if (dout != net->dacts[L])
        memcpy(net->dacts[L], dout, out_bytes);

    for (int i = L - 1; i >= 0; i--) {
        struct cnn_layer *l = &net->layers[i];
        l->kind->backward(l, net->acts[i], net->acts[i + 1], net->dacts[i + 1],
                          net->dacts[i], n);
    }
}

void cnn_net_zero_grad(struct cnn_net *net)
{
    memset(net->grads, 0, net->n_params * sizeof *net->grads);
}

size_t cnn_net_activation_bytes(const struct cnn_net *net)
{
    size_t total = 0;
    for (int i = 0; i < net->n_layers; i++)
        total += (size_t)net->batch * cnn_shape_size(net->layers[i].out) *
                 sizeof(float);
    return total;
}

double cnn_net_flops(const struct cnn_net *net)
{
    double total = 0;
    for (int i = 0; i < net->n_layers; i++)
        total += net->layers[i].flops;
    return total;
}

void cnn_net_each_param(struct cnn_net *net,
                        void (*fn)(void *ctx, const char *name,
                                   struct cnn_param *p),
                        void *ctx)
{
    char name[160];
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i];
        for (int j = 0; j < l->n_params; j++) {
            snprintf(name, sizeof name, "%s.%s", l->name, l->params[j].suffix);
            fn(ctx, name, &l->params[j]);
        }
    }
}

struct cnn_param_group *cnn_net_param_groups(const struct cnn_net *net,
                                             int *n)
{
    int count = 0;
    for (int i = 0; i < net->n_layers; i++)
        count += net->layers[i].n_params;
    struct cnn_param_group *g = calloc(count ? (size_t)count : 1, sizeof *g);
    if (!g)
        return NULL;

    int k = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const struct cnn_layer *l = &net->layers[i];
        for (int j = 0; j < l->n_params; j++, k++) {
            g[k].offset = (size_t)(l->params[j].data - net->params);
            g[k].count = l->params[j].count;
            g[k].kind = l->params[j].kind;
            g[k].lr_scale = l->lr_mult;
            g[k].frozen = !l->trainable;
        }
    }
    *n = count;
    return g;
}

void cnn_net_free(struct cnn_net *net)
{
    if (!net)
        return;
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].kind->destroy)
            net->layers[i].kind->destroy(&net->layers[i]);
    if (net->acts)
        for (int i = 0; i <= net->n_layers; i++)
            free(net->acts[i]);
    if (net->dacts)
        for (int i = 0; i <= net->n_layers; i++)
            free(net->dacts[i]);
    free(net->acts);
    free(net->dacts);
    free(net->params);
    free(net->grads);
    free(net->layers);
    memset(net, 0, sizeof *net);
}
