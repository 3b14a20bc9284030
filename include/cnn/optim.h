/*
 * Optimizers behind one vtable, over the net's flat parameter block, and
 * the learning-rate schedule. An optimizer owns its state buffers
 * (momentum, moments); the step count lives in struct cnn_optim so that
 * every kind and the checkpoint see the same one.
 */
#ifndef CNN_OPTIM_H
#define CNN_OPTIM_H

#include <stddef.h>

#include "cnn/config.h"
#include "cnn/error.h"

struct cnn_optim;

struct cnn_optim_kind {
    const char *name;
    /* Allocates state for n parameters. */
    enum cnn_status (*create)(struct cnn_optim *o, struct cnn_error *err);
    /* One update of params from grads at learning rate lr. */
    void (*step)(struct cnn_optim *o, float *params, const float *grads,
                 float lr);
    void (*destroy)(struct cnn_optim *o);   /* may be NULL */
};

struct cnn_optim {
    const struct cnn_optim_kind *kind;
    struct cnn_optim_config cfg;
    size_t n;                 /* parameters updated */
    long long steps;          /* updates applied so far */
    void *state;              /* owned by the kind */
};

/* Looks up cfg->name and creates it for n parameters. An unknown name is
 * a located config error; a planned but unbuilt one is CNN_ERR_UNSUPPORTED. */
enum cnn_status cnn_optim_create(struct cnn_optim *o,
                                 const struct cnn_optim_config *cfg, size_t n,
                                 struct cnn_error *err);

void cnn_optim_step(struct cnn_optim *o, float *params, const float *grads,
                    float lr);

void cnn_optim_free(struct cnn_optim *o);

extern const struct cnn_optim_kind cnn_optim_sgd;

/* Learning rate for optimizer step `step` (0-based) of `total`, during
 * epoch `epoch` (0-based), from base lr. */
double cnn_schedule_lr(const struct cnn_schedule_config *s, double base_lr,
                       long long step, long long total, long long epoch);

#endif
