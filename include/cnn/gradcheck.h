/*
 * Gradient check of a whole net: the analytic gradient of the loss on
 * one batch (backward) against central finite differences of the loss,
 * in training mode, for every trained tensor: along the tensor's own
 * gradient (a sharp test: the derivative there is the gradient's whole
 * norm) and at a sample of single entries (coarser: float32 resolves a
 * single entry's effect on the loss only so far).
 *
 * The net computes in float32, so the differences are taken with care:
 * the loss is summed in double, the step is the one float arithmetic
 * actually made, a difference that fails is tried again at smaller
 * steps (a ReLU kink or max-pool tie crossed by the step disappears at
 * a smaller one), and a derivative below what float32 resolves at the
 * step is reported as unresolved rather than judged. Dropout draws its
 * masks once: every evaluation starts the dropout stream from the same
 * state. Batchnorm runs on the batch's statistics, as in training; its
 * running statistics are buffers, not checked.
 *
 * Nothing here prints; the caller reports the per-layer results.
 */
#ifndef CNN_GRADCHECK_H
#define CNN_GRADCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cnn/config.h"
#include "cnn/error.h"
#include "cnn/net.h"

struct cnn_gradcheck_opts {
    int entries;                /* per tensor, at most; all when fewer */
    double tolerance;           /* along each tensor's gradient */
    double entry_tolerance;     /* at single entries */
    uint64_t seed;              /* inputs, labels and the entries drawn */
};

/* The defaults: 20 entries, tolerances 1e-2 (directions) and 1e-1
 * (entries), seed 1. */
struct cnn_gradcheck_opts cnn_gradcheck_defaults(void);

/* One layer's verdict (nested layers named as in checkpoints). The
 * relative error of a comparison is |a - n| / max(|a| + |n|, floor), a
 * the analytic and n the numeric derivative, at the step that agreed
 * best. floor is the derivative the difference resolves at its step,
 * and for an entry at least the root mean square of its tensor's sampled
 * derivatives, so that entries far below their tensor's scale are
 * judged on that scale. */
struct cnn_gradcheck_layer {
    char *name;                 /* owned */
    int tensors;                /* tensors checked */
    double worst_direction;     /* largest error along a gradient */
    int unresolved_directions;  /* below float32's resolution */
    int entries;                /* entries compared */
    int unsettled;              /* entries whose differences disagreed at
                                   every step and with each other: a kink
                                   or rounding, left out of worst_entry */
    int unresolved;             /* entries below float32's resolution */
    double worst_entry;         /* largest error of a settled entry */
    const char *worst_tensor;   /* its tensor ("weight"), a view of the
                                   net's names; NULL when none settled */
    size_t worst_index;         /* and flat index */
    double worst_analytic, worst_numeric;
    bool pass;
};

struct cnn_gradcheck_result {
    struct cnn_gradcheck_layer *layers;     /* owned, [n_layers] */
    int n_layers;
    int n_examples;
    double loss;                /* of the batch, before any step */
    bool pass;                  /* every layer passed */
};

/* Checks net (built for a batch of n examples, parameters initialized)
 * on n random normal inputs with random labels under loss. A layer
 * passes when every direction and every settled entry is within its
 * tolerance and at least half of its entries settled. The net's
 * activations, gradients and batchnorm running statistics are
 * overwritten; its parameters are left as they were. Fails only when
 * out of memory (result then empty); free the result with
 * cnn_gradcheck_free, before the net (it points at the net's names). */
enum cnn_status cnn_gradcheck_run(struct cnn_net *net, enum cnn_loss_kind loss,
                                  const struct cnn_gradcheck_opts *opts,
                                  struct cnn_gradcheck_result *res,
                                  struct cnn_error *err);

void cnn_gradcheck_free(struct cnn_gradcheck_result *res);

#endif
