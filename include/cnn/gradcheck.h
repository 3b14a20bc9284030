/*
 * Gradient check of a whole net: the analytic gradient of the loss on
 * one batch (backward) against central finite differences of the loss,
 * for a sample of the entries of every trained tensor, in training mode.
 *
 * The net computes in float32, so the differences are taken with care:
 * the loss is summed in double, the step is the one float arithmetic
 * actually made (w + h rounded, less w), and an entry whose difference
 * does not settle (a ReLU kink or a max-pool tie crossed by the step)
 * is tried again at a smaller step before it counts against the layer.
 * Dropout draws its masks once: every evaluation starts the dropout
 * stream from the same state, so all of them see the same mask.
 * Batchnorm runs on the batch's statistics, as in training; its running
 * statistics are buffers, not checked.
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
    double tolerance;           /* worst relative error that passes */
    uint64_t seed;              /* inputs, labels and the entries drawn */
};

/* The defaults: 20 entries, tolerance 1e-2, seed 1. */
struct cnn_gradcheck_opts cnn_gradcheck_defaults(void);

/* One layer's verdict (nested layers named as in checkpoints). The
 * relative error of an entry is |a - n| / max(|a| + |n|, floor), a the
 * analytic and n the numeric derivative; floor is the difference float32
 * can resolve at that step (see gradcheck.c). */
struct cnn_gradcheck_layer {
    char *name;                 /* owned */
    int tensors;                /* tensors checked */
    int entries;                /* entries compared */
    int unsettled;              /* entries whose differences never settled
                                   (left out of worst) */
    double worst;               /* the largest relative error */
    char *worst_tensor;         /* owned; its tensor ("weight") */
    size_t worst_index;         /* and flat index */
    double worst_analytic, worst_numeric;
    bool pass;
};

struct cnn_gradcheck_result {
    struct cnn_gradcheck_layer *layers;     /* owned, [n_layers] */
    int n_layers;
    int n_examples;
    bool pass;                  /* every layer passed */
};

/* Checks net (built for a batch of n examples, parameters initialized)
 * on n random normal inputs with random labels under loss. The net's
 * activations, gradients and batchnorm running statistics are
 * overwritten; its parameters are left as they were. Fails only when
 * out of memory (result then empty); free the result with
 * cnn_gradcheck_free. */
enum cnn_status cnn_gradcheck_run(struct cnn_net *net, enum cnn_loss_kind loss,
                                  const struct cnn_gradcheck_opts *opts,
                                  struct cnn_gradcheck_result *res,
                                  struct cnn_error *err);

void cnn_gradcheck_free(struct cnn_gradcheck_result *res);

#endif
