/*
 * One small vtable per layer kind. A kind reads its own arguments from
 * the config node, infers its output shape, declares its parameter
 * tensors (the net places them in one block), and implements forward and
 * backward over a batch of n examples stored back to back.
 *
 * Contract for every kind:
 * - create: l->in, l->batch and l->name are set; fill l->out, l->params
 *   (shapes only), l->flops, and allocate any batch-sized state. Bad
 *   arguments fail with a located config error; nothing is printed.
 * - forward: y[n, out] from x[n, in]; n <= l->batch.
 * - backward: given x, y and dy[n, out], ADD parameter gradients into
 *   params[i].grad and WRITE dx[n, in]; dx is NULL for the first layer,
 *   which then skips the input gradient.
 * - destroy frees what create allocated; it is called on a half-built
 *   layer too.
 * Adding a kind is one new file plus one line in src/layers/registry.c.
 */
#ifndef CNN_LAYER_H
#define CNN_LAYER_H

#include <stdbool.h>
#include <stddef.h>

#include "cnn/config.h"
#include "cnn/error.h"
#include "cnn/rng.h"

/* Shape of one example: channels x height x width; a flat vector of n
 * features is n x 1 x 1. */
struct cnn_shape {
    int c, h, w;
};

static inline size_t cnn_shape_size(struct cnn_shape s)
{
    return (size_t)s.c * (size_t)s.h * (size_t)s.w;
}

static inline bool cnn_shape_is_flat(struct cnn_shape s)
{
    return s.h == 1 && s.w == 1;
}

enum cnn_init {
    CNN_INIT_AUTO,            /* chosen by the net from the activation */
    CNN_INIT_ONES,            /* norm scales, running variances */
    CNN_INIT_HE_NORMAL,
    CNN_INIT_HE_UNIFORM,
    CNN_INIT_GLOROT_NORMAL,
    CNN_INIT_GLOROT_UNIFORM,
    CNN_INIT_ZEROS,
    CNN_INIT_NORMAL,          /* N(0, 0.01^2) */
};

enum cnn_param_kind {
    CNN_PARAM_WEIGHT,
    CNN_PARAM_BIAS,
    CNN_PARAM_NORM,        /* normalization scales and shifts */
    CNN_PARAM_BUFFER,      /* saved state, not trained (running stats) */
};

#define CNN_PARAM_MAX_DIMS 4
#define CNN_LAYER_MAX_PARAMS 4

struct cnn_param {
    const char *suffix;               /* "weight", "bias" */
    enum cnn_param_kind kind;
    int ndim;
    int dims[CNN_PARAM_MAX_DIMS];     /* PyTorch layout */
    size_t count;
    int fan_in, fan_out;
    enum cnn_init init;
    float *data;                      /* views into the net's block */
    float *grad;
};

/* What forward needs besides tensors. */
struct cnn_fwd_ctx {
    bool train;                       /* dropout and friends act only here */
    struct cnn_rng *rng;              /* the net's dropout stream */
    bool recompute;                   /* a checkpointed block runs its body
                                         again on the same batch: no side
                                         effects (running statistics) */
};

struct cnn_layer;
struct cnn_net;

struct cnn_layer_kind {
    const char *name;                 /* config name: "conv2d" */
    enum cnn_status (*create)(struct cnn_layer *l, struct cnn_node *args,
                              struct cnn_error *err);
    void (*forward)(struct cnn_layer *l, const float *x, float *y, int n,
                    const struct cnn_fwd_ctx *ctx);
    void (*backward)(struct cnn_layer *l, const float *x, const float *y,
                     const float *dy, float *dx, int n);
    void (*destroy)(struct cnn_layer *l);   /* may be NULL */
    /* Layers that hold stacks of layers (residual) list them here, with
     * the name each adds to its tensors' names ("body"); may be NULL. */
    int (*children)(struct cnn_layer *l, struct cnn_net **nets,
                    const char **names, int cap);
    /* The kind honours applies_relu (batchnorm): the net then fuses a
     * relu that follows it into it. */
    bool can_apply_relu;
};

struct cnn_layer {
    const struct cnn_layer_kind *kind;
    char name[64];                    /* "conv2d_1": prefix of tensor names */
    char prev[72];                    /* the layer before, or "the input" */
    struct cnn_node *node;            /* config node, for messages */
    int batch;                        /* largest n forward will see */
    struct cnn_shape in, out;
    struct cnn_param params[CNN_LAYER_MAX_PARAMS];
    int n_params;
    double flops;                     /* forward FLOPs per example */
    int copy;                         /* which copy of a repeated item */
    float lr_mult;                    /* "lr_mult": scales its lr */
    bool trainable;                   /* "trainable: false" freezes it */
    bool checkpoint_default;          /* the model checkpoints every block
                                         that can (residual) unless it says
                                         otherwise */
    bool applies_relu;                /* its output is max(0, output), for
                                         the relu after it (fused, net.c) */
    bool skipped;                     /* that relu, or a flatten whose
                                         input needs no gradient: its
                                         output is its input's buffer, and
                                         the net's passes leave it out */
    void *state;                      /* owned by the kind */
};

/* The kind registered under name, or NULL. */
const struct cnn_layer_kind *cnn_layer_kind_find(const char *name);

/* Fills names with up to cap registered names; returns how many. */
int cnn_layer_kind_names(const char **names, int cap);

/* Declares parameter i of l (shape given as ndim dims). */
void cnn_layer_add_param(struct cnn_layer *l, const char *suffix,
                         enum cnn_param_kind kind, int ndim, const int *dims,
                         int fan_in, int fan_out, enum cnn_init init);

/* Reads an optional "init" key into *out (default def; CNN_INIT_AUTO
 * lets the net pick He before ReLU-like activations, Glorot otherwise). */
enum cnn_status cnn_layer_read_init(struct cnn_node *args, enum cnn_init def,
                                    enum cnn_init *out, struct cnn_error *err);

/* Fills p->data according to p->init from rng. */
void cnn_param_init(struct cnn_param *p, struct cnn_rng *rng);

/* Fails with a message naming the layer when its input is not flat. */
enum cnn_status cnn_layer_need_flat(struct cnn_layer *l,
                                    struct cnn_error *err);

struct cnn_conv_geom;

/* The geometry of a square size x size window with stride and pad over
 * l's input; a window that does not fit is a config error naming the
 * layer before. */
enum cnn_status cnn_layer_window(struct cnn_layer *l, int size, int stride,
                                 int pad, struct cnn_conv_geom *g,
                                 struct cnn_error *err);

/* Allocates zeroed memory for layer state. Returns NULL with a config
 * error when bytes is beyond any sane layer (a typo in a size), or with
 * CNN_ERR_NOMEM when memory is short. */
void *cnn_layer_alloc(struct cnn_layer *l, size_t bytes,
                      struct cnn_error *err);

/* The status a failed cnn_layer_alloc left in err. */
enum cnn_status cnn_layer_alloc_status(const struct cnn_error *err);

/* Fails when args lacks key: first with any misspelled key (so 'filter'
 * gets "did you mean 'filters'?"), else saying what is missing, with
 * example showing the usual form. Call it after reading every other key
 * of the layer, so that none of them looks unknown. */
enum cnn_status cnn_layer_require(struct cnn_layer *l, struct cnn_node *args,
                                  const char *key, const char *example,
                                  struct cnn_error *err);

extern const struct cnn_layer_kind cnn_layer_dense;
extern const struct cnn_layer_kind cnn_layer_conv2d;
extern const struct cnn_layer_kind cnn_layer_maxpool;
extern const struct cnn_layer_kind cnn_layer_avgpool;
extern const struct cnn_layer_kind cnn_layer_flatten;
extern const struct cnn_layer_kind cnn_layer_relu;
extern const struct cnn_layer_kind cnn_layer_leaky_relu;
extern const struct cnn_layer_kind cnn_layer_sigmoid;
extern const struct cnn_layer_kind cnn_layer_tanh;
extern const struct cnn_layer_kind cnn_layer_dropout;
extern const struct cnn_layer_kind cnn_layer_batchnorm;
extern const struct cnn_layer_kind cnn_layer_global_avgpool;
extern const struct cnn_layer_kind cnn_layer_residual;
extern const struct cnn_layer_kind cnn_layer_layernorm;
extern const struct cnn_layer_kind cnn_layer_rmsnorm;

#endif
