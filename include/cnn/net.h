/*
 * The net: an ordered stack of layers built from the model section, with
 * every parameter in one block, every gradient in another, and every
 * activation buffer allocated once for the batch size. Nothing is
 * allocated by forward or backward.
 */
#ifndef CNN_NET_H
#define CNN_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cnn/config.h"
#include "cnn/layer.h"
#include "cnn/optim.h"

struct cnn_net {
    struct cnn_layer *layers;
    int n_layers;
    int batch;
    struct cnn_shape in, out;
    float *params;          /* [n_params]: every layer's tensors in order */
    float *grads;           /* [n_params], same order */
    size_t n_params;
    float **acts;           /* acts[0]: input; acts[i+1]: layer i output */
    float **dacts;          /* gradient of the loss w.r.t. acts[i] */
    int grad_from;          /* the backward pass runs layers L-1 down to
                               this one; the layers before it hold no
                               parameters, and dacts[0..grad_from] are
                               NULL (0 in nested stacks) */
    struct cnn_rng dropout_rng;
    bool borrowed_input;    /* a nested stack: acts[0] is its holder's
                               input, set by cnn_net_forward_ctx */
    bool checkpoint_all;    /* its residual blocks checkpoint by default */
    bool recomputed;        /* a checkpointed block's stack, run again by
                               the block in its backward pass */
    bool scratch;           /* recomputed, or inside such a stack: acts[1..]
                               and dacts are views into the scratch */
    bool bf16;              /* outputs kept as bfloat16 (acts16); acts[]
                               and dacts[] then alternate between two
                               float buffers, refilled in the backward
                               pass (training.precision: bf16) */
    uint16_t **acts16;      /* [1..L]: each layer's output, rounded */
    float *work[2], *dwork[3];  /* dwork[2]: the output's gradient;
                                   the outermost net's only */
    float *scratch_block;   /* the outermost net: the scratch shared by
                               every checkpointed block, sized to the
                               largest; NULL when none checkpoints */
    size_t scratch_floats;
    float *grad_block;      /* the outermost net: the gradients of its
                               nested stacks (those not in the scratch),
                               one set shared by the blocks of a level */
};

/* How a net is built; a zeroed struct (or NULL) is the default. */
struct cnn_net_opts {
    bool checkpoint;        /* every residual block, nested ones too,
                               checkpoints its activations
                               (training.checkpoint_activations) */
    bool bf16;              /* every stack keeps its layers' outputs as
                               bfloat16 (training.precision: bf16); not
                               with checkpoint */
    bool recomputed;        /* nested stacks only: the holder keeps none of
                               the stack's buffers and runs it again in its
                               backward pass (a checkpointed block) */
    bool unfused;           /* keep every relu and flatten a pass of its
                               own (tests compare against it) */
};

/* Builds layers from a sequence node for inputs of shape in, batches of
 * at most batch. Shape mismatches and bad arguments are located config
 * errors naming the layers involved. On failure the net is freed. */
enum cnn_status cnn_net_build(struct cnn_net *net, struct cnn_node *layers,
                              struct cnn_shape in, int batch,
                              struct cnn_error *err);

/* The same with options (opts may be NULL). Checkpointed blocks keep
 * only their output; what their stacks hold lives in one scratch block
 * the net owns, and is computed again in the backward pass. */
enum cnn_status cnn_net_build_opts(struct cnn_net *net,
                                   struct cnn_node *layers,
                                   struct cnn_shape in, int batch,
                                   const struct cnn_net_opts *opts,
                                   struct cnn_error *err);

/* A stack nested in a layer (a residual body): layers only; its tensors
 * live in the outer net's block and its buffers are allocated (or placed
 * in the shared scratch) when the outer net is built. tail picks "init:
 * auto" for its last layers. */
enum cnn_status cnn_net_build_stack(struct cnn_net *net, struct cnn_node *list,
                                    struct cnn_shape in, int batch,
                                    enum cnn_init tail,
                                    const struct cnn_net_opts *opts,
                                    struct cnn_error *err);

/* Forward of a (nested) stack on input x with the caller's context. */
const float *cnn_net_forward_ctx(struct cnn_net *net, const float *x, int n,
                                 const struct cnn_fwd_ctx *ctx);

/* Floats of a layer's tensors, nested ones included; *buffers (may be
 * NULL) gets how many of them are buffers (running statistics). */
size_t cnn_layer_param_count(struct cnn_layer *l, size_t *buffers);

/* Parameter tensors in the whole tree. */
int cnn_net_count_tensors(struct cnn_net *net);

/* Draws every parameter from the init stream of seed and seeds the
 * dropout stream. */
void cnn_net_init_params(struct cnn_net *net, uint64_t seed);

/* The input buffer [batch, in]: fill it, then call forward. */
static inline float *cnn_net_input(struct cnn_net *net)
{
    return net->acts[0];
}

/* Runs n <= batch examples; returns the output [n, out] (owned by net). */
const float *cnn_net_forward(struct cnn_net *net, int n, bool train);

/* Backpropagates dout [n, out] (the loss gradient of the last forward)
 * and ADDS parameter gradients into net->grads. */
void cnn_net_backward(struct cnn_net *net, const float *dout, int n);

void cnn_net_zero_grad(struct cnn_net *net);

/* Bytes of activation buffers (outputs only) for a full batch; the
 * outputs inside checkpointed blocks count once, as the part of the
 * shared scratch that holds them. */
size_t cnn_net_activation_bytes(const struct cnn_net *net);

/* The same with the gradients of the activations that training keeps
 * beside them: the whole per-batch memory of a training step, layers'
 * own workspaces aside. */
size_t cnn_net_training_bytes(const struct cnn_net *net);

double cnn_net_flops(const struct cnn_net *net);

/* Calls fn for every parameter tensor, nested ones included, with its
 * full name ("conv2d_1.weight", "residual_1.body.conv2d_1.weight"). */
void cnn_net_each_param(struct cnn_net *net,
                        void (*fn)(void *ctx, const char *name,
                                   struct cnn_param *p),
                        void *ctx);

/* One optimizer group per parameter tensor, with the layer's lr_mult
 * and trainable flag; a malloc'd array of *n the caller frees, NULL when
 * out of memory. */
struct cnn_param_group *cnn_net_param_groups(struct cnn_net *net, int *n);

void cnn_net_free(struct cnn_net *net);

#endif
