/*
 * Building the layer stack: parse each list item into a kind and its
 * arguments, chain shapes, place parameters in one block and allocate the
 * activation buffers (those inside checkpointed blocks as views into one
 * scratch block they share). Then forward and backward walk the stack.
 */
#include "cnn/net.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/ops.h"

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
    if (given && l->copy > 0) {
        /* Copies of a repeated, named block: stage1, stage1_2, ... */
        if (snprintf(l->name, sizeof l->name, "%s_%d", given, l->copy + 1) >=
            (int)sizeof l->name)
            return cnn_node_error(err, cnn_node_get(args, "name"), "too long "
                                  "for its copies' names");
        return CNN_OK;
    }
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
                                 struct cnn_shape in, int copy,
                                 struct cnn_error *err)
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
    l->copy = copy;
    l->checkpoint_default = net->checkpoint_all;
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

/* How many layers an item stands for: residual blocks may repeat. */
static enum cnn_status item_count(struct cnn_node *item, int *count,
                                  struct cnn_error *err)
{
    *count = 1;
    if (item->kind != CNN_NODE_MAP || item->n_items != 1)
        return CNN_OK;
    struct cnn_node *args = item->items[0];
    if (strcmp(args->key, "residual") != 0 || args->kind != CNN_NODE_MAP)
        return CNN_OK;
    long long n;
    if (cnn_read_int(args, "repeat", 1, 1, 1000, &n, err) != CNN_OK)
        return CNN_ERR_CONFIG;
    *count = (int)n;
    return CNN_OK;
}

/* A layer that starts a new weight-bearing step ends the look-ahead of
 * choose_init; normalization, pooling, flatten and dropout do not. */
static bool has_weights(const struct cnn_layer *l)
{
    if (l->kind->children)
        return true;
    for (int j = 0; j < l->n_params; j++)
        if (l->params[j].kind == CNN_PARAM_WEIGHT)
            return true;
    return false;
}

/* He init before ReLU-like activations, Glorot before sigmoid and tanh:
 * the first activation after a layer, in its own stack, decides for its
 * "init: auto" tensors; tail is the pick for the stack's last layers
 * (Glorot for a model's output, the block's activation in a residual
 * body). */
static void choose_init(struct cnn_net *net, enum cnn_init tail)
{
    for (int i = 0; i < net->n_layers; i++) {
        enum cnn_init pick = tail;
        for (int j = i + 1; j < net->n_layers; j++) {
            const struct cnn_layer *next = &net->layers[j];
            if (next->kind == &cnn_layer_relu ||
                next->kind == &cnn_layer_leaky_relu) {
                pick = CNN_INIT_HE_NORMAL;
                break;
            }
            if (next->kind == &cnn_layer_sigmoid ||
                next->kind == &cnn_layer_tanh || has_weights(next)) {
                pick = CNN_INIT_GLOROT_UNIFORM;
                break;
            }
        }
        for (int p = 0; p < net->layers[i].n_params; p++)
            if (net->layers[i].params[p].init == CNN_INIT_AUTO)
                net->layers[i].params[p].init = pick;
    }
}

/* --- walking every parameter, nested stacks included ---------------------- */

typedef void (*param_fn)(void *ctx, const char *name, struct cnn_param *p,
                         float lr_mult, bool trainable);

/* Depth first: a layer's own tensors, then those of its stacks, named
 * "<layer>.<stack>.<layer>.<suffix>". lr_mult multiplies down the tree;
 * a frozen layer freezes everything inside it. */
static void walk(struct cnn_net *net, const char *prefix, float lr_mult,
                 bool trainable, param_fn fn, void *ctx)
{
    /* Sized for this level: prefix, layer name, the longest suffix or
     * stack name, and the dots. */
    size_t cap = strlen(prefix) + sizeof net->layers[0].name + 64;
    char *name = malloc(cap);
    if (!name)
        return;
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i];
        float lr = lr_mult * l->lr_mult;
        bool tr = trainable && l->trainable;
        for (int j = 0; j < l->n_params; j++) {
            snprintf(name, cap, "%s%s.%s", prefix, l->name,
                     l->params[j].suffix);
            fn(ctx, name, &l->params[j], lr, tr);
        }
        if (!l->kind->children)
            continue;
        struct cnn_net *subs[4];
        const char *names[4];
        int n = l->kind->children(l, subs, names, 4);
        for (int k = 0; k < n; k++) {
            snprintf(name, cap, "%s%s.%s.", prefix, l->name, names[k]);
            walk(subs[k], name, lr, tr, fn, ctx);
        }
    }
    free(name);
}

struct count_ctx {
    double floats;
    int tensors;
};

static void count_param(void *ctx, const char *name, struct cnn_param *p,
                        float lr, bool tr)
{
    struct count_ctx *c = ctx;
    c->floats += (double)p->count;
    c->tensors++;
}

struct place_ctx {
    struct cnn_net *net;
    size_t offset;
};

static void place_param(void *ctx, const char *name, struct cnn_param *p,
                        float lr, bool tr)
{
    struct place_ctx *c = ctx;
    p->data = c->net->params + c->offset;
    p->grad = c->net->grads + c->offset;
    c->offset += p->count;
}

/* Parameter floats of a layer and everything nested in it. */
static double layer_floats(struct cnn_layer *l)
{
    struct cnn_net one = {.layers = l, .n_layers = 1};
    struct count_ctx c = {0};
    walk(&one, "", 1.0f, true, count_param, &c);
    return c.floats;
}

static void count_buffer(void *ctx, const char *name, struct cnn_param *p,
                         float lr, bool tr)
{
    if (p->kind == CNN_PARAM_BUFFER)
        *(size_t *)ctx += p->count;
}

size_t cnn_layer_param_count(struct cnn_layer *l, size_t *buffers)
{
    struct cnn_net one = {.layers = l, .n_layers = 1};
    size_t b = 0;
    walk(&one, "", 1.0f, true, count_buffer, &b);
    if (buffers)
        *buffers = b;
    return (size_t)layer_floats(l);
}

static enum cnn_status check_input(const struct cnn_net *net,
                                   struct cnn_error *err)
{
    double bytes = sizeof(float) * (double)net->batch *
                   (double)cnn_shape_size(net->in);
    if (bytes > MAX_ACT_BYTES)
        return cnn_error_set(err, CNN_ERR_CONFIG, "one batch of %d inputs of "
                             "%dx%dx%d needs %.1f GiB: too large", net->batch,
                             net->in.c, net->in.h, net->in.w,
                             bytes / (1ull << 30));
    return CNN_OK;
}

/* The largest slot of a stack in floats: the layers' outputs, and the
 * input too when asked. */
static size_t largest_slot(const struct cnn_net *net, bool input)
{
    size_t most = 0;
    for (int i = input ? 0 : 1; i <= net->n_layers; i++) {
        struct cnn_shape s = i == 0 ? net->in : net->layers[i - 1].out;
        size_t floats = (size_t)net->batch * cnn_shape_size(s);
        most = floats > most ? floats : most;
    }
    return most;
}

/* bfloat16 storage: each output slot in half the bytes, and two float
 * buffers for outputs, which the slots take turns at (layer i reads
 * slot i and writes slot i + 1, never the same). */
static enum cnn_status allocate_bf16(struct cnn_net *net,
                                     struct cnn_error *err)
{
    size_t most = largest_slot(net, false), most_in = largest_slot(net, true);
    net->acts16 = calloc((size_t)net->n_layers + 1, sizeof *net->acts16);
    bool ok = net->acts16 != NULL;
    for (int k = 0; k < 2 && ok; k++)
        ok = (net->work[k] = calloc(most ? most : 1, sizeof(float))) != NULL;
    if (ok && !net->borrowed_input)
        ok = (net->acts[0] = calloc(most_in, sizeof(float))) != NULL;
    for (int i = 1; ok && i <= net->n_layers; i++) {
        size_t floats = (size_t)net->batch *
                        cnn_shape_size(net->layers[i - 1].out);
        ok = (net->acts16[i] = calloc(floats, sizeof(uint16_t))) != NULL;
        net->acts[i] = net->work[i % 2];
    }
    return ok ? CNN_OK : cnn_error_set(err, CNN_ERR_NOMEM, "out of memory "
                                       "for activations");
}

/* Fills subs with the stacks l holds (a block's stacks all share its
 * "recomputed" flag); returns how many. */
static int children(struct cnn_layer *l, struct cnn_net **subs)
{
    const char *names[4];
    return l->kind->children ? l->kind->children(l, subs, names, 4) : 0;
}

/* True when l or a stack nested in it holds parameters. */
static bool holds_params(struct cnn_layer *l)
{
    if (l->n_params > 0)
        return true;
    struct cnn_net *subs[4];
    int n = children(l, subs);
    for (int k = 0; k < n; k++)
        for (int i = 0; i < subs[k]->n_layers; i++)
            if (holds_params(&subs[k]->layers[i]))
                return true;
    return false;
}

/* Gradients of the outputs: a layer's backward pass reads the gradient
 * of its output and writes that of its input, and nothing reads either
 * later, so two buffers taking turns hold them all (layer i writes
 * dwork[i % 2], never the one it reads), plus one for the gradient of
 * the stack's output, which a residual block reads again after its
 * body's backward pass. */
static enum cnn_status allocate_gradients(struct cnn_net *net,
                                          struct cnn_error *err)
{
    size_t most = largest_slot(net, true);
    size_t out = (size_t)net->batch * cnn_shape_size(net->out);
    bool ok = true;
    for (int k = 0; k < 2 && ok; k++)
        ok = (net->dwork[k] = calloc(most ? most : 1, sizeof(float))) != NULL;
    ok = ok && (net->dwork[2] = calloc(out ? out : 1, sizeof(float)));
    if (!ok)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the "
                             "gradients of activations (%zu bytes)",
                             (2 * most + out) * sizeof(float));
    for (int i = 0; i < net->n_layers; i++)
        net->dacts[i] = net->dwork[i % 2];
    /* Nobody needs the input's gradient, nor that of the outputs of
     * layers without parameters before the first with some (a flatten
     * before the first dense): the backward pass stops at that layer,
     * which is told not to compute its input gradient. */
    net->grad_from = 0;
    if (!net->borrowed_input) {
        while (net->grad_from < net->n_layers - 1 &&
               !holds_params(&net->layers[net->grad_from]))
            net->grad_from++;
        for (int i = 0; i <= net->grad_from; i++)
            net->dacts[i] = NULL;
    }
    net->dacts[net->n_layers] = net->dwork[2];
    return CNN_OK;
}

/* Activation and gradient buffers of one stack. A nested stack borrows
 * its input (acts[0]) from the layer that holds it, and its gradients
 * (the input's included, which that layer reads) are placed by
 * allocate_nested. A scratch stack gets only the arrays; its buffers
 * are placed by allocate_scratch. */
static enum cnn_status allocate_activations(struct cnn_net *net,
                                            struct cnn_error *err)
{
    double bytes_total = 0;
    for (int i = 0; i <= net->n_layers; i++) {
        struct cnn_shape s = i == 0 ? net->in : net->layers[i - 1].out;
        bytes_total += 2.0 * sizeof(float) * net->batch *
                       (double)cnn_shape_size(s);
        if (i > 0 && bytes_total > MAX_ACT_BYTES) {
            const struct cnn_layer *l = &net->layers[i - 1];
            return cnn_node_error(err, l->node, "activations reach %.1f GiB "
                                  "at %s for batch %d: too large",
                                  bytes_total / (1ull << 30), l->name,
                                  net->batch);
        }
    }

    size_t slots = (size_t)(net->n_layers > 0 ? net->n_layers : 0) + 1;
    net->acts = calloc(slots, sizeof *net->acts);
    net->dacts = calloc(slots, sizeof *net->dacts);
    if (!net->acts || !net->dacts)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    if (net->scratch)
        return CNN_OK;
    enum cnn_status st = net->bf16 ? allocate_bf16(net, err) : CNN_OK;
    for (int i = 0; !net->bf16 && i <= net->n_layers; i++) {
        struct cnn_shape s = i == 0 ? net->in : net->layers[i - 1].out;
        size_t bytes = (size_t)net->batch * cnn_shape_size(s) * sizeof(float);
        if (i == 0 && net->borrowed_input)
            continue;
        if (!(net->acts[i] = calloc(1, bytes)))
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for "
                                 "activations (%zu bytes at layer %d)",
                                 bytes, i);
    }
    /* A nested stack's gradients are placed by allocate_nested. */
    if (st == CNN_OK && !net->borrowed_input)
        st = allocate_gradients(net, err);
    return st;
}

/* The parameter block of the whole tree, placed tensor by tensor. */
static enum cnn_status allocate_params(struct cnn_net *net,
                                       struct cnn_error *err)
{
    struct count_ctx c = {0};
    walk(net, "", 1.0f, true, count_param, &c);
    if (c.floats > MAX_PARAM_FLOATS)
        return cnn_error_set(err, CNN_ERR_CONFIG, "the model has %.3g "
                             "parameters: too large", c.floats);
    net->n_params = (size_t)c.floats;
    net->params = calloc(net->n_params ? net->n_params : 1, sizeof(float));
    net->grads = calloc(net->n_params ? net->n_params : 1, sizeof(float));
    if (!net->params || !net->grads)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the "
                             "model's %zu parameters", net->n_params);
    struct place_ctx p = {.net = net};
    walk(net, "", 1.0f, true, place_param, &p);
    return CNN_OK;
}

/* --- the scratch of checkpointed blocks ---------------------------------- */

/* Buffers of a stack and the stacks nested in it. Those of a stack a
 * checkpointed block recomputes, and of everything inside one, are
 * views into the shared scratch (in_scratch), placed later. */
static enum cnn_status allocate_tree(struct cnn_net *net, bool in_scratch,
                                     bool bf16, struct cnn_error *err)
{
    net->scratch = in_scratch;
    net->bf16 = bf16;
    if (bf16 && net->recomputed)
        return cnn_error_set(err, CNN_ERR_CONFIG, "training.precision: bf16 "
                             "and a residual block with checkpoint: true do "
                             "not go together yet");
    enum cnn_status st = allocate_activations(net, err);
    for (int i = 0; i < net->n_layers && st == CNN_OK; i++) {
        struct cnn_net *subs[4];
        int n = children(&net->layers[i], subs);
        for (int k = 0; k < n && st == CNN_OK; k++)
            st = allocate_tree(subs[k], in_scratch || subs[k]->recomputed,
                               bf16, err);
    }
    return st;
}

/* Floats of a scratch stack's buffers: its outputs (acts[1..L]) and,
 * unless outputs only, the gradients (dacts[0..L]); then those of the
 * blocks inside it that do not recompute, which must all survive until
 * the backward pass of the enclosing block. With base, points them
 * there. */
static size_t stack_buffers(const struct cnn_net *s, float *base,
                            bool outputs)
{
    size_t used = 0;
    for (int i = 0; i <= s->n_layers; i++) {
        struct cnn_shape sh = i == 0 ? s->in : s->layers[i - 1].out;
        size_t k = (size_t)s->batch * cnn_shape_size(sh);
        if (i > 0) {
            if (base)
                s->acts[i] = base + used;
            used += k;
        }
        if (!outputs) {
            if (base)
                s->dacts[i] = base + used;
            used += k;
        }
    }
    for (int i = 0; i < s->n_layers; i++) {
        struct cnn_net *subs[4];
        int n = children(&s->layers[i], subs);
        for (int k = 0; k < n && !subs[0]->recomputed; k++)
            used += stack_buffers(subs[k], base ? base + used : NULL,
                                  outputs);
    }
    return used;
}

/* Scratch floats the checkpointed blocks under net need: a block's
 * stacks side by side, then what the blocks it holds that recompute
 * need (their backward runs inside its own). Blocks at one level run
 * one at a time, so the largest decides. With base, places them. */
static size_t scratch_need(const struct cnn_net *net, float *base,
                           bool outputs)
{
    size_t most = 0;
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_net *subs[4];
        int n = children(&net->layers[i], subs);
        bool recomputed = n > 0 && subs[0]->recomputed;
        size_t own = 0, inner = 0;
        for (int k = 0; k < n && recomputed; k++)
            own += stack_buffers(subs[k], base ? base + own : NULL, outputs);
        for (int k = 0; k < n; k++) {
            size_t m = scratch_need(subs[k], base ? base + own : NULL,
                                    outputs);
            inner = m > inner ? m : inner;
        }
        most = own + inner > most ? own + inner : most;
    }
    return most;
}

/* --- the gradients of nested stacks -------------------------------------- */

/* Floats of the three gradient buffers of a stack (allocate_gradients'). */
static size_t gradient_floats(const struct cnn_net *s)
{
    return 2 * largest_slot(s, true) + (size_t)s->batch * cnn_shape_size(s->out);
}

static void place_gradients(struct cnn_net *s, float *base)
{
    size_t most = largest_slot(s, true);
    for (int i = 0; i < s->n_layers; i++)
        s->dacts[i] = base + (size_t)(i % 2) * most;
    s->dacts[s->n_layers] = base + 2 * most;
}

/* Floats the gradients of the stacks nested under net need; with base,
 * places them. A stack's gradients live only through its holder's
 * backward pass, so one set of buffers serves every block of a level:
 * a block's stacks side by side (the block reads each one's input
 * gradient after all have run), then what the blocks inside them need,
 * which they use one stack at a time. The largest block decides. The
 * stacks of checkpointed blocks have theirs in the scratch. */
static size_t nested_gradients(const struct cnn_net *net, float *base)
{
    size_t most = 0;
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_net *subs[4];
        int n = children(&net->layers[i], subs);
        if (n == 0 || subs[0]->scratch)
            continue;
        size_t own = 0, inner = 0;
        for (int k = 0; k < n; k++) {
            if (base)
                place_gradients(subs[k], base + own);
            own += gradient_floats(subs[k]);
        }
        for (int k = 0; k < n; k++) {
            size_t m = nested_gradients(subs[k], base ? base + own : NULL);
            inner = m > inner ? m : inner;
        }
        most = own + inner > most ? own + inner : most;
    }
    return most;
}

static enum cnn_status allocate_nested(struct cnn_net *net,
                                       struct cnn_error *err)
{
    size_t floats = nested_gradients(net, NULL);
    if (floats == 0)
        return CNN_OK;
    net->grad_block = calloc(floats, sizeof(float));
    if (!net->grad_block)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the "
                             "gradients of nested stacks (%zu bytes)",
                             floats * sizeof(float));
    nested_gradients(net, net->grad_block);
    return CNN_OK;
}

/* --- relus done by the layer before them -------------------------------- */

/* A relu right after a layer that can apply it (batchnorm) is done by
 * that layer: the relu's output is that layer's buffer, which it writes
 * through max(0, .), and the relu's output gradient is the one the
 * layer reads, gated where its output is positive. The relu's passes
 * are skipped: two passes over the activations of the forward pass and
 * one of the backward pass fewer, and one activation buffer. Stacks
 * whose buffers are placed in the scratch or kept as bfloat16 keep their
 * relus. */
static void fuse_relus(struct cnn_net *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_net *subs[4];
        int n = children(&net->layers[i], subs);
        for (int k = 0; k < n; k++)
            fuse_relus(subs[k]);
    }
    if (net->scratch || net->bf16)
        return;
    for (int i = 0; i + 1 < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i], *next = &net->layers[i + 1];
        if (!l->kind->can_apply_relu || next->kind != &cnn_layer_relu ||
            l->applies_relu || next->skipped)
            continue;
        l->applies_relu = true;
        next->skipped = true;
        free(net->acts[i + 2]);
        net->acts[i + 2] = net->acts[i + 1];
        net->dacts[i + 1] = net->dacts[i + 2];
    }
}

/* A flatten changes no byte: where no gradient goes through it (before
 * the first layer with parameters) its output is a view of its input,
 * and the forward pass skips it (an MLP's copy of every image). */
static void view_flattens(struct cnn_net *net)
{
    if (net->scratch || net->bf16 || net->borrowed_input)
        return;
    for (int i = 0; i < net->grad_from; i++) {
        struct cnn_layer *l = &net->layers[i];
        if (l->kind != &cnn_layer_flatten)
            continue;
        l->skipped = true;
        free(net->acts[i + 1]);
        net->acts[i + 1] = net->acts[i];
    }
}

static enum cnn_status allocate_scratch(struct cnn_net *net,
                                        struct cnn_error *err)
{
    size_t floats = scratch_need(net, NULL, false);
    if (floats == 0)
        return CNN_OK;
    net->scratch_block = calloc(floats, sizeof(float));
    if (!net->scratch_block)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the "
                             "scratch of checkpointed blocks (%zu bytes)",
                             floats * sizeof(float));
    net->scratch_floats = floats;
    scratch_need(net, net->scratch_block, false);
    return CNN_OK;
}

/* Builds the layers of a stack (without parameters or buffers). */
static enum cnn_status build_layers(struct cnn_net *net, struct cnn_node *list,
                                    struct cnn_shape in, int batch,
                                    const struct cnn_net_opts *opts,
                                    struct cnn_error *err)
{
    memset(net, 0, sizeof *net);
    net->in = in;
    net->batch = batch;
    net->checkpoint_all = opts && opts->checkpoint;
    if (!list || list->kind != CNN_NODE_SEQ || list->n_items == 0)
        return list ? cnn_node_error(err, list, "expected a non-empty list "
                                     "of layers")
                    : cnn_error_set(err, CNN_ERR_CONFIG, "the model has no "
                                    "layers");

    int total = 0;
    for (int i = 0; i < list->n_items; i++) {
        int k;
        if (item_count(list->items[i], &k, err) != CNN_OK)
            return CNN_ERR_CONFIG;
        total += k;
    }
    if (total > MAX_LAYERS)
        return cnn_node_error(err, list, "more than %d layers", MAX_LAYERS);
    net->layers = calloc((size_t)total, sizeof *net->layers);
    if (!net->layers)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");

    struct cnn_shape shape = in;
    double floats = 0;
    for (int i = 0; i < list->n_items; i++) {
        int k;
        item_count(list->items[i], &k, err);
        for (int copy = 0; copy < k; copy++) {
            enum cnn_status st = add_layer(net, list->items[i], shape, copy,
                                           err);
            if (st != CNN_OK)
                return st;
            struct cnn_layer *l = &net->layers[net->n_layers - 1];
            floats += layer_floats(l);
            if (floats > MAX_PARAM_FLOATS)
                return cnn_node_error(err, l->node, "the model reaches %.3g "
                                      "parameters at %s: too large", floats,
                                      l->name);
            shape = l->out;
        }
    }
    net->out = shape;
    return CNN_OK;
}

enum cnn_status cnn_net_build_stack(struct cnn_net *net, struct cnn_node *list,
                                    struct cnn_shape in, int batch,
                                    enum cnn_init tail,
                                    const struct cnn_net_opts *opts,
                                    struct cnn_error *err)
{
    enum cnn_status st = build_layers(net, list, in, batch, opts, err);
    net->borrowed_input = true;
    net->recomputed = opts && opts->recomputed;
    if (st == CNN_OK)
        choose_init(net, tail);
    if (st != CNN_OK)
        cnn_net_free(net);
    return st;
}

enum cnn_status cnn_net_build_opts(struct cnn_net *net,
                                   struct cnn_node *layers,
                                   struct cnn_shape in, int batch,
                                   const struct cnn_net_opts *opts,
                                   struct cnn_error *err)
{
    memset(net, 0, sizeof *net);
    net->in = in;
    net->batch = batch;
    enum cnn_status st = check_input(net, err);
    if (st == CNN_OK)
        st = build_layers(net, layers, in, batch, opts, err);
    if (st == CNN_OK) {
        choose_init(net, CNN_INIT_GLOROT_UNIFORM);
        st = allocate_params(net, err);
    }
    if (st == CNN_OK && opts && opts->bf16 && opts->checkpoint)
        st = cnn_error_set(err, CNN_ERR_CONFIG, "training.precision: bf16 "
                           "and checkpoint_activations do not go together "
                           "yet; choose one");
    if (st == CNN_OK)
        st = allocate_tree(net, false, opts && opts->bf16, err);
    if (st == CNN_OK)
        st = allocate_scratch(net, err);
    if (st == CNN_OK)
        st = allocate_nested(net, err);
    if (st == CNN_OK && !(opts && opts->unfused)) {
        fuse_relus(net);
        view_flattens(net);
    }
    if (st != CNN_OK)
        cnn_net_free(net);
    return st;
}

enum cnn_status cnn_net_build(struct cnn_net *net, struct cnn_node *layers,
                              struct cnn_shape in, int batch,
                              struct cnn_error *err)
{
    return cnn_net_build_opts(net, layers, in, batch, NULL, err);
}

static void init_param(void *ctx, const char *name, struct cnn_param *p,
                       float lr, bool tr)
{
    cnn_param_init(p, ctx);
}

void cnn_net_init_params(struct cnn_net *net, uint64_t seed)
{
    struct cnn_rng rng;
    cnn_rng_seed(&rng, seed, CNN_RNG_STREAM_INIT, 0);
    walk(net, "", 1.0f, true, init_param, &rng);
    cnn_rng_seed(&net->dropout_rng, seed, CNN_RNG_STREAM_DROPOUT, 0);
}

const float *cnn_net_forward_ctx(struct cnn_net *net, const float *x, int n,
                                 const struct cnn_fwd_ctx *ctx)
{
    if (net->borrowed_input)
        net->acts[0] = (float *)x;
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i];
        if (l->skipped)
            continue;
        l->kind->forward(l, net->acts[i], net->acts[i + 1], n, ctx);
        /* The next layer reads the output as it is kept: rounded. */
        if (net->bf16)
            cnn_bf16_store(net->acts[i + 1], net->acts16[i + 1],
                           (size_t)n * cnn_shape_size(l->out));
    }
    return net->acts[net->n_layers];
}

const float *cnn_net_forward(struct cnn_net *net, int n, bool train)
{
    struct cnn_fwd_ctx ctx = {.train = train, .rng = &net->dropout_rng};
    return cnn_net_forward_ctx(net, net->acts[0], n, &ctx);
}

void cnn_net_backward(struct cnn_net *net, const float *dout, int n)
{
    int L = net->n_layers;
    size_t out_bytes = (size_t)n * cnn_shape_size(net->out) * sizeof(float);
    if (dout != net->dacts[L])
        memcpy(net->dacts[L], dout, out_bytes);

    for (int i = L - 1; i >= net->grad_from; i--) {
        struct cnn_layer *l = &net->layers[i];
        if (l->skipped)
            continue;
        if (net->bf16) {        /* the layer's input and output, back */
            if (i > 0)
                cnn_bf16_unpack(net->acts16[i], net->acts[i],
                                (size_t)n * cnn_shape_size(l->in));
            cnn_bf16_unpack(net->acts16[i + 1], net->acts[i + 1],
                            (size_t)n * cnn_shape_size(l->out));
        }
        l->kind->backward(l, net->acts[i], net->acts[i + 1], net->dacts[i + 1],
                          net->dacts[i], n);
    }
}

static void zero_part(void *ctx, size_t lo, size_t hi)
{
    float *g = ctx;
    memset(g + lo, 0, (hi - lo) * sizeof *g);
}

void cnn_net_zero_grad(struct cnn_net *net)
{
    cnn_parallel_elems(net->n_params, zero_part, net->grads);
}

/* Output bytes in buffers of their own: not those of scratch stacks,
 * nor of relus done by the layer before; bfloat16 ones at their size. */
static size_t owned_outputs(const struct cnn_net *net)
{
    size_t total = 0;
    if (net->bf16)                          /* the two work buffers */
        total = 2 * largest_slot(net, false) * sizeof(float);
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i];
        if (!net->scratch && !l->skipped)
            total += (size_t)net->batch * cnn_shape_size(l->out) *
                     (net->bf16 ? sizeof(uint16_t) : sizeof(float));
        struct cnn_net *subs[4];
        int n = children(l, subs);
        for (int k = 0; k < n; k++)
            total += owned_outputs(subs[k]);
    }
    return total;
}

/* Gradient bytes outside the scratch: the outermost net's own three
 * buffers and those its nested stacks share. */
static size_t owned_gradients(const struct cnn_net *net)
{
    return (gradient_floats(net) + nested_gradients(net, NULL)) *
           sizeof(float);
}

size_t cnn_net_training_bytes(const struct cnn_net *net)
{
    return owned_outputs(net) + owned_gradients(net) +
           scratch_need(net, NULL, false) * sizeof(float);
}

size_t cnn_net_activation_bytes(const struct cnn_net *net)
{
    return owned_outputs(net) + scratch_need(net, NULL, true) * sizeof(float);
}

double cnn_net_flops(const struct cnn_net *net)
{
    double total = 0;
    for (int i = 0; i < net->n_layers; i++)
        total += net->layers[i].flops;
    return total;
}

struct each_ctx {
    void (*fn)(void *ctx, const char *name, struct cnn_param *p);
    void *ctx;
};

static void each_param(void *ctx, const char *name, struct cnn_param *p,
                       float lr, bool tr)
{
    struct each_ctx *c = ctx;
    c->fn(c->ctx, name, p);
}

void cnn_net_each_param(struct cnn_net *net,
                        void (*fn)(void *ctx, const char *name,
                                   struct cnn_param *p),
                        void *ctx)
{
    struct each_ctx c = {fn, ctx};
    walk(net, "", 1.0f, true, each_param, &c);
}

int cnn_net_count_tensors(struct cnn_net *net)
{
    struct count_ctx c = {0};
    walk(net, "", 1.0f, true, count_param, &c);
    return c.tensors;
}

struct group_ctx {
    struct cnn_net *net;
    struct cnn_param_group *g;
    int n;
};

static void group_param(void *ctx, const char *name, struct cnn_param *p,
                        float lr, bool tr)
{
    struct group_ctx *c = ctx;
    c->g[c->n++] = (struct cnn_param_group){
        .offset = (size_t)(p->data - c->net->params),
        .count = p->count,
        .kind = p->kind,
        .lr_scale = lr,
        .frozen = !tr || p->kind == CNN_PARAM_BUFFER,
    };
}

struct cnn_param_group *cnn_net_param_groups(struct cnn_net *net, int *n)
{
    int count = cnn_net_count_tensors(net);
    struct cnn_param_group *g = calloc(count ? (size_t)count : 1, sizeof *g);
    if (!g)
        return NULL;
    struct group_ctx c = {.net = net, .g = g};
    walk(net, "", 1.0f, true, group_param, &c);
    *n = c.n;
    return g;
}

void cnn_net_free(struct cnn_net *net)
{
    if (!net)
        return;
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].kind->destroy)
            net->layers[i].kind->destroy(&net->layers[i]);
    /* A scratch stack's buffers are views into the outer net's block;
     * a bfloat16 one's alternate between its work buffers. */
    if (net->bf16) {
        for (int i = 1; net->acts16 && i <= net->n_layers; i++)
            free(net->acts16[i]);
        free(net->acts16);
        for (int k = 0; k < 2; k++)
            free(net->work[k]);
        if (net->acts && !net->borrowed_input)
            free(net->acts[0]);
    } else if (net->acts && !net->scratch)
        for (int i = net->borrowed_input ? 1 : 0; i <= net->n_layers; i++)
            if (i == 0 || !net->layers[i - 1].skipped)    /* not a view */
                free(net->acts[i]);
    for (int k = 0; k < 3; k++)         /* NULL in a nested stack */
        free(net->dwork[k]);
    free(net->scratch_block);
    free(net->grad_block);
    free(net->acts);
    free(net->dacts);
    free(net->params);
    free(net->grads);
    free(net->layers);
    memset(net, 0, sizeof *net);
}
