/*
 * residual: out = act(body(x) + shortcut(x)), a block holding its own
 * stacks of layers (He et al., "Deep Residual Learning").
 *
 *   - residual:
 *       body:                       # any list of layers
 *         - conv2d: {filters: 32, size: 3, stride: 2, pad: 1, bias: false}
 *         - batchnorm
 *         - relu
 *         - conv2d: {filters: 32, size: 3, pad: 1, bias: false}
 *         - batchnorm
 *       shortcut: identity          # identity | pad | [a list of layers]
 *       activation: relu            # relu | none
 *       repeat: 3                   # copies; see below
 *       checkpoint: false           # default: training.checkpoint_activations
 *
 * shortcut pad is the parameter-free "option A": take every s-th pixel
 * and pad the extra channels with zeros. With repeat: N the net makes N
 * blocks; the first is as written, the others keep the shape: every
 * stride in their body is 1 and their shortcut is the identity.
 * Tensors are named <block>.body.<layer>.<tensor>, and
 * <block>.shortcut.<layer>.<tensor> for a shortcut list.
 *
 * A checkpointed block keeps only its output (its input is the holder's):
 * the buffers of its stacks are views into the scratch the model shares
 * between all such blocks. Its backward runs the stacks forward again on
 * the same input, replaying the dropout stream from where the first pass
 * began (batchnorm leaves its running statistics alone the second time),
 * so the gradients are bit for bit those of a block that kept everything.
 * The sum's gradient lives in the body's output gradient, dacts[L].
 */
#include "cnn/net.h"
#include "cnn/ops.h"

#include <stdlib.h>
#include <string.h>

enum shortcut { SHORTCUT_IDENTITY, SHORTCUT_PAD, SHORTCUT_LAYERS };

struct residual {
    struct cnn_net body;
    struct cnn_net shortcut;        /* SHORTCUT_LAYERS only */
    enum shortcut kind;
    bool relu;
    int stride;                     /* SHORTCUT_PAD */
    struct cnn_node *copy;          /* body with strides 1, copies > 0 */
    bool checkpoint;                /* stacks in the shared scratch */
    bool train_at, rng_at_set;      /* the last forward's context, */
    struct cnn_rng rng_at;          /* replayed by the recompute */
};

static void force_unit_strides(struct cnn_node *n)
{
    for (int i = 0; i < n->n_items; i++) {
        struct cnn_node *c = n->items[i];
        if (c->key && strcmp(c->key, "stride") == 0 &&
            c->kind == CNN_NODE_SCALAR) {
            free(c->value);
            c->value = malloc(2);
            if (c->value)
                memcpy(c->value, "1", 2);
        }
        force_unit_strides(c);
    }
}

static bool same(struct cnn_shape a, struct cnn_shape b)
{
    return a.c == b.c && a.h == b.h && a.w == b.w;
}

static enum cnn_status read_shortcut(struct cnn_layer *l, struct cnn_node *args,
                                     struct residual *r,
                                     const struct cnn_net_opts *opts,
                                     struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(args, "shortcut");
    r->kind = SHORTCUT_IDENTITY;
    if (!n || l->copy > 0)
        return CNN_OK;
    if (n->kind == CNN_NODE_SEQ) {
        r->kind = SHORTCUT_LAYERS;
        return cnn_net_build_stack(&r->shortcut, n, l->in, l->batch,
                                   CNN_INIT_GLOROT_UNIFORM, opts, err);
    }
    static const char *const names[] = {"identity", "pad", NULL};
    int which;
    if (cnn_read_choice(args, "shortcut", names, 0, &which, err) != CNN_OK) {
        cnn_error_hint(err, "or give a list of layers, e.g. [conv2d: "
                       "{filters: 32, size: 1, stride: 2}, batchnorm]");
        return CNN_ERR_CONFIG;
    }
    r->kind = which == 1 ? SHORTCUT_PAD : SHORTCUT_IDENTITY;
    return CNN_OK;
}

/* Checks that the shortcut's output can be added to the body's. */
static enum cnn_status check_shapes(struct cnn_layer *l, struct residual *r,
                                    struct cnn_error *err)
{
    struct cnn_shape b = r->body.out, in = l->in;
    if (r->kind == SHORTCUT_LAYERS && same(r->shortcut.out, b))
        return CNN_OK;
    if (r->kind == SHORTCUT_IDENTITY && same(in, b))
        return CNN_OK;
    if (r->kind == SHORTCUT_PAD && b.c >= in.c && b.h >= 1) {
        r->stride = (in.h + b.h - 1) / b.h;
        if ((in.h + r->stride - 1) / r->stride == b.h &&
            (in.w + r->stride - 1) / r->stride == b.w)
            return CNN_OK;
    }
    struct cnn_shape s = r->kind == SHORTCUT_LAYERS ? r->shortcut.out : in;
    cnn_node_error(err, l->node, "%s: its body outputs %dx%dx%d but its %s "
                   "shortcut gives %dx%dx%d", l->name, b.c, b.h, b.w,
                   r->kind == SHORTCUT_LAYERS ? "layers'" :
                   r->kind == SHORTCUT_PAD ? "pad" : "identity",
                   s.c, s.h, s.w);
    cnn_error_hint(err, "use 'shortcut: pad' or a projection such as "
                   "[conv2d: {filters: %d, size: 1, stride: %d}, batchnorm]",
                   b.c, b.h ? (in.h + b.h - 1) / b.h : 1);
    return CNN_ERR_CONFIG;
}

static enum cnn_status residual_create(struct cnn_layer *l,
                                       struct cnn_node *args,
                                       struct cnn_error *err)
{
    static const char *const acts[] = {"relu", "none", NULL};
    int act;
    struct residual *r = cnn_layer_alloc(l, sizeof *r, err);
    if (!r)
        return cnn_layer_alloc_status(err);
    l->state = r;
    cnn_node_get(args, "repeat");           /* the net's key */
    if (cnn_read_choice(args, "activation", acts, 0, &act, err) ||
        cnn_read_bool(args, "checkpoint", l->checkpoint_default,
                      &r->checkpoint, err) ||
        cnn_layer_require(l, args, "body", "- residual: {body: [...]}", err))
        return CNN_ERR_CONFIG;
    r->relu = act == 0;
    struct cnn_net_opts opts = {.checkpoint = l->checkpoint_default,
                                .recomputed = r->checkpoint};

    struct cnn_node *body = cnn_node_get(args, "body");
    if (l->copy > 0) {
        if (!(r->copy = cnn_node_clone(body)))
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        force_unit_strides(r->copy);
        body = r->copy;
    }
    enum cnn_status st = cnn_net_build_stack(&r->body, body, l->in, l->batch,
                                             r->relu ? CNN_INIT_HE_NORMAL
                                                     : CNN_INIT_GLOROT_UNIFORM,
                                             &opts, err);
    if (st == CNN_OK)
        st = read_shortcut(l, args, r, &opts, err);
    if (st == CNN_OK)
        st = check_shapes(l, r, err);
    if (st != CNN_OK)
        return st;

    l->out = r->body.out;
    l->flops = cnn_net_flops(&r->body) + 2.0 * cnn_shape_size(l->out) +
               (r->kind == SHORTCUT_LAYERS ? cnn_net_flops(&r->shortcut) : 0);
    return CNN_OK;
}

static float sum_act(const struct residual *r, float b, float s)
{
    float v = b + s;
    return r->relu && v < 0.0f ? 0.0f : v;
}

/* y = act(b + option A of x): every stride-th pixel, channels beyond
 * the input's zero. */
static void pad_forward(const struct residual *r, struct cnn_shape in,
                        struct cnn_shape out, const float *x, const float *b,
                        float *y, int n)
{
    size_t in_size = cnn_shape_size(in), out_size = cnn_shape_size(out);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < out.c; c++)
            for (int oy = 0; oy < out.h; oy++)
                for (int ox = 0; ox < out.w; ox++) {
                    size_t o = i * out_size +
                               ((size_t)c * out.h + oy) * out.w + ox;
                    float s = c >= in.c ? 0.0f :
                        x[i * in_size + ((size_t)c * in.h + oy * r->stride) *
                                            in.w + ox * r->stride];
                    y[o] = sum_act(r, b[o], s);
                }
}

static void pad_backward(const struct residual *r, struct cnn_shape in,
                         struct cnn_shape out, const float *dy, float *dx,
                         int n)
{
    size_t in_size = cnn_shape_size(in), out_size = cnn_shape_size(out);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < in.c; c++)
            for (int oy = 0; oy < out.h; oy++)
                for (int ox = 0; ox < out.w; ox++)
                    dx[i * in_size + ((size_t)c * in.h + oy * r->stride) *
                                         in.w + ox * r->stride] +=
                        dy[i * out_size + ((size_t)c * out.h + oy) * out.w +
                           ox];
}

/* The block's elementwise passes: out = act(a + b) forward; backward,
 * out = dy where the output was positive (mask), or out = a + b. */
struct sum_job {
    const struct residual *r;
    const float *a, *b;
    const float *y, *dy;
    float *out;
};

static void sum_part(void *ctx, size_t lo, size_t hi)
{
    const struct sum_job *j = ctx;
    for (size_t i = lo; i < hi; i++)
        j->out[i] = sum_act(j->r, j->a[i], j->b[i]);
}

static void mask_part(void *ctx, size_t lo, size_t hi)
{
    const struct sum_job *j = ctx;
    bool relu = j->r->relu;
    for (size_t i = lo; i < hi; i++)
        j->out[i] = relu && j->y[i] <= 0.0f ? 0.0f : j->dy[i];
}

static void add_part(void *ctx, size_t lo, size_t hi)
{
    const struct sum_job *j = ctx;
    for (size_t i = lo; i < hi; i++)
        j->out[i] = j->a[i] + j->b[i];
}

/* The stacks' forward, whose buffers and layer state backward needs. */
static const float *stacks_forward(struct residual *r, const float *x, int n,
                                   const struct cnn_fwd_ctx *ctx,
                                   const float **s)
{
    const float *b = cnn_net_forward_ctx(&r->body, x, n, ctx);
    if (r->kind == SHORTCUT_LAYERS)
        *s = cnn_net_forward_ctx(&r->shortcut, x, n, ctx);
    return b;
}

static void residual_forward(struct cnn_layer *l, const float *x, float *y,
                             int n, const struct cnn_fwd_ctx *ctx)
{
    struct residual *r = l->state;
    if (r->checkpoint) {
        r->train_at = ctx->train;
        r->rng_at_set = ctx->rng != NULL;
        if (ctx->rng)
            r->rng_at = *ctx->rng;
    }

    const float *s = x;
    const float *b = stacks_forward(r, x, n, ctx, &s);
    if (r->kind == SHORTCUT_PAD) {
        pad_forward(r, l->in, l->out, x, b, y, n);
        return;
    }
    struct sum_job j = {.r = r, .a = b, .b = s, .out = y};
    cnn_parallel_elems((size_t)n * cnn_shape_size(l->out), sum_part, &j);
}

/* A checkpointed block's stacks, as the forward pass left them: the same
 * input, mode and dropout draws; the net's own stream stays where it is. */
static void recompute(struct residual *r, const float *x, int n)
{
    struct cnn_rng rng = r->rng_at;
    struct cnn_fwd_ctx ctx = {.train = r->train_at,
                              .rng = r->rng_at_set ? &rng : NULL,
                              .recompute = true};
    const float *s = x;
    stacks_forward(r, x, n, &ctx, &s);
}

static void residual_backward(struct cnn_layer *l, const float *x,
                              const float *y, const float *dy, float *dx,
                              int n)
{
    struct residual *r = l->state;
    if (r->checkpoint)
        recompute(r, x, n);

    size_t N = (size_t)n * cnn_shape_size(l->out);
    size_t in_n = (size_t)n * cnn_shape_size(l->in);
    float *dsum = r->body.dacts[r->body.n_layers];
    /* On one thread: shared out, this pass made the block's backward
     * about 10% slower (bench --layers), for reasons not found. */
    struct sum_job mask = {.r = r, .y = y, .dy = dy, .out = dsum};
    mask_part(&mask, 0, N);

    cnn_net_backward(&r->body, dsum, n);
    if (r->kind == SHORTCUT_LAYERS)
        cnn_net_backward(&r->shortcut, dsum, n);
    if (!dx)
        return;

    if (r->kind == SHORTCUT_PAD) {
        memcpy(dx, r->body.dacts[0], in_n * sizeof *dx);
        pad_backward(r, l->in, l->out, dsum, dx, n);
        return;
    }
    struct sum_job add = {.a = r->body.dacts[0], .out = dx,
                          .b = r->kind == SHORTCUT_LAYERS
                                   ? r->shortcut.dacts[0] : dsum};
    cnn_parallel_elems(in_n, add_part, &add);
}

static int residual_children(struct cnn_layer *l, struct cnn_net **nets,
                             const char **names, int cap)
{
    struct residual *r = l->state;
    int n = 0;
    if (n < cap) {
        nets[n] = &r->body;
        names[n++] = "body";
    }
    if (r->kind == SHORTCUT_LAYERS && n < cap) {
        nets[n] = &r->shortcut;
        names[n++] = "shortcut";
    }
    return n;
}

static void residual_destroy(struct cnn_layer *l)
{
    struct residual *r = l->state;
    if (!r)
        return;
    cnn_net_free(&r->body);
    cnn_net_free(&r->shortcut);
    cnn_node_free(r->copy);
    free(r);
}

const struct cnn_layer_kind cnn_layer_residual = {
    .name = "residual",
    .create = residual_create,
    .forward = residual_forward,
    .backward = residual_backward,
    .destroy = residual_destroy,
    .children = residual_children,
};
