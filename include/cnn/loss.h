/*
 * Losses over a batch of n outputs with k values each and integer class
 * labels: cross-entropy fused with softmax (the numerically stable way),
 * and mean squared error against one-hot targets.
 */
#ifndef CNN_LOSS_H
#define CNN_LOSS_H

#include "cnn/config.h"

/* Returns the mean loss over the batch. When dout is not NULL, writes the
 * gradient of that mean w.r.t. out [n, k]. When correct is not NULL,
 * adds the number of examples whose largest output is their label. */
double cnn_loss(enum cnn_loss_kind kind, const float *out, const int *labels,
                int n, int k, float *dout, long long *correct);

/* Mean squared error against float targets [n, k] (regression), averaged
 * over the batch and the k outputs, with its gradient as above. */
double cnn_loss_mse(const float *out, const float *targets, int n, int k,
                    float *dout);

#endif
