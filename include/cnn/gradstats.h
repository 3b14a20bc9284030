/*
 * Gradient flow, layer by layer. For each layer with trainable tensors
 * (nested ones named as checkpoints name them, "residual_1.body.dense_1")
 * it measures the L2 norm of the layer's gradients before clipping, of
 * its weights, and of the update the optimizer applied; every N steps it
 * writes them as rows of grad_stats.csv, and it warns through the log
 * when a layer's gradient is vanishingly small, or explosively large,
 * next to the last layer's.
 *
 * The train loop calls cnn_gradstats_before just before the optimizer
 * step (gradients final, weights not yet changed) and
 * cnn_gradstats_after just after it. Between those calls nothing else
 * may change the weights.
 */
#ifndef CNN_GRADSTATS_H
#define CNN_GRADSTATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "cnn/error.h"
#include "cnn/net.h"
#include "cnn/report.h"

/* One trainable tensor's slice of the net's flat blocks. */
struct cnn_gradstats_span {
    size_t offset, count;
};

/* A layer as the statistics see it: its spans are spans[first ..
 * first + n_spans). */
struct cnn_gradstats_layer {
    char *name;                     /* owned */
    int first, n_spans;
};

struct cnn_gradstats_config {
    long long every;                /* steps between rows; 0 = no rows */
    long long check_every;          /* steps between warning checks */
    double vanishing_ratio;         /* warn below this; 0 = never */
    double exploding_ratio;         /* warn above this; 0 = never */
};

struct cnn_gradstats {
    struct cnn_gradstats_config cfg;
    struct cnn_gradstats_layer *layers;
    int n_layers;
    struct cnn_gradstats_span *spans;
    int n_spans;
    size_t n_trainable;             /* floats in all spans */
    double *grad_norm;              /* [n_layers], of the current step */
    double *weight_norm;
    double *update_norm;
    float *snapshot;                /* [n_trainable] weights before the
                                       step; only while rows are due */
    FILE *csv;                      /* grad_stats.csv; NULL when closed */
    bool rows_due, check_due;       /* for the step in progress */
    long long warned_vanishing;     /* epoch of the last warning; -1 */
    long long warned_exploding;
};

/* Builds the layer table of net (layers without trainable tensors are
 * left out) and allocates what cfg needs. A net without trainable
 * tensors gives an empty table and no rows. Fails only when out of
 * memory. Free with cnn_gradstats_free. */
enum cnn_status cnn_gradstats_init(struct cnn_gradstats *gs,
                                   struct cnn_net *net,
                                   const struct cnn_gradstats_config *cfg,
                                   struct cnn_error *err);

void cnn_gradstats_free(struct cnn_gradstats *gs);

/* L2 norm per layer (out[n_layers]) of values, a block laid out as the
 * net's parameters; sums run in double. */
void cnn_gradstats_norms(const struct cnn_gradstats *gs, const float *values,
                         double *out);

/* The same for the difference a - b. */
void cnn_gradstats_diff_norms(const struct cnn_gradstats *gs, const float *a,
                              const float *b, double *out);

/* Opens path for the rows. keep == 0 starts a new file with its header;
 * keep > 0 cuts an existing file back to its first keep bytes (where a
 * checkpoint left it) and appends, so a resumed run repeats no rows. A
 * missing file, or one shorter than keep, is started afresh (header
 * included) with a warning in log. A no-op when rows are off. */
enum cnn_status cnn_gradstats_open(struct cnn_gradstats *gs, const char *path,
                                   long long keep, struct cnn_log *log,
                                   struct cnn_error *err);

/* Bytes written to grad_stats.csv so far (flushed), for checkpoints;
 * -1 when it is not open. */
long long cnn_gradstats_bytes(struct cnn_gradstats *gs);

void cnn_gradstats_close(struct cnn_gradstats *gs);

/* Before optimizer step number step (1-based: the count once it is
 * done): measures gradient and weight norms and keeps the weights, when
 * step is one that rows or checks fall on. */
void cnn_gradstats_before(struct cnn_gradstats *gs, const struct cnn_net *net,
                          long long step);

/* After that step, when it was applied (finite gradients): measures the
 * updates, writes the rows and warns (rate-limited: the first time, then
 * at most once per epoch for each kind). epoch is 1-based. */
void cnn_gradstats_after(struct cnn_gradstats *gs, const struct cnn_net *net,
                         long long step, long long epoch,
                         struct cnn_log *log);

#endif
