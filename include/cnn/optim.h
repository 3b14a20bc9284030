/*
 * Optimizers behind one vtable, over the net's flat parameter block cut
 * into groups (one per parameter tensor) that carry a learning-rate
 * scale, a weight-decay switch and a frozen flag; gradient clipping; and
 * the learning-rate schedules.
 *
 * An optimizer kind reads its own hyperparameters from the optimizer
 * section (like a layer reads its arguments) and owns its state buffers,
 * which it lists by name so a checkpoint can store them. The step count
 * lives in struct cnn_optim so every kind sees the same one.
 */
#ifndef CNN_OPTIM_H
#define CNN_OPTIM_H

#include <stddef.h>

#include "cnn/config.h"
#include "cnn/error.h"
#include "cnn/layer.h"

/* One parameter tensor's slice of the flat block, as the optimizer sees
 * it. */
struct cnn_param_group {
    size_t offset, count;
    enum cnn_param_kind kind;
    float lr_scale;              /* the layer's lr_mult */
    bool frozen;                 /* trainable: false, never updated */
    bool decay;                  /* weight decay applies (set by optim) */
};

/* A named state buffer of an optimizer, for checkpoints. The data is
 * owned by the optimizer. */
struct cnn_optim_buffer {
    const char *name;            /* "exp_avg", "momentum_buffer", ... */
    void *data;
    size_t bytes;
};

enum { CNN_OPTIM_MAX_BUFFERS = 6 };

struct cnn_optim;

struct cnn_optim_kind {
    const char *name;
    /* Reads the kind's own keys from args (the optimizer section) and
     * allocates state for o->n parameters. */
    enum cnn_status (*create)(struct cnn_optim *o, struct cnn_node *args,
                              struct cnn_error *err);
    /* Updates p[0..n) from g[0..n); the slice starts at offset in the
     * flat block (for state). lr is already scaled for the group; wd is
     * the group's weight decay (0 when it does not apply). o->steps is
     * the number of updates done before this one. */
    void (*update)(struct cnn_optim *o, float *p, const float *g,
                   size_t offset, size_t n, float lr, float wd);
    /* Each parameter's update reads only its own state, so a step may
     * cut the flat block anywhere and share it out over the threads.
     * (8-bit Adam's blocks of state are not cut: it runs on one.) */
    bool elementwise;
};

struct cnn_optim {
    const struct cnn_optim_kind *kind;
    const char *name;
    size_t n;                    /* parameters in the flat block */
    long long steps;             /* updates applied so far */
    double weight_decay;
    double clip_norm;            /* 0 = off */
    double clip_value;           /* 0 = off */
    struct cnn_param_group *groups;
    int n_groups;
    void *state;                 /* the kind's hyperparameters: one
                                    malloc'd struct, freed by optim */
    struct cnn_optim_buffer buffers[CNN_OPTIM_MAX_BUFFERS];
    int n_buffers;               /* filled by the kind's create */
    char note[256];              /* keys of other kinds that were set
                                    aside; empty when none */
    double *norm_parts;          /* the squared norm's sum per block of
                                    the flat block (registry.c); NULL
                                    when the groups are out of order */
};

/* Reads optimizer.name and the common keys (lr is read by the caller's
 * config), finds the kind, lets it read its own keys, then rejects
 * unknown keys; keys that belong to other kinds are ignored and named in
 * o->note for the caller to show. section may be NULL (plain SGD).
 * groups are copied. */
enum cnn_status cnn_optim_create(struct cnn_optim *o, struct cnn_node *section,
                                 const struct cnn_param_group *groups,
                                 int n_groups, size_t n, struct cnn_error *err);

/* Clips grads in place (by value, then by global L2 norm, as configured,
 * PyTorch's order) and applies one update at learning rate lr. Returns
 * the global L2 norm after value clipping, before norm clipping. When
 * that norm is not finite, nothing is updated and steps stays put: the
 * caller decides (training.on_nan). */
double cnn_optim_step(struct cnn_optim *o, float *params, float *grads,
                      float lr);

/* Bytes of optimizer state (all buffers). */
size_t cnn_optim_state_bytes(const struct cnn_optim *o);

/* Registers a malloc'd state buffer, which optim then owns and frees;
 * kinds call it from create. */
void cnn_optim_add_buffer(struct cnn_optim *o, const char *name, void *data,
                          size_t bytes);

/* Allocates a zeroed float buffer of o->n and registers it. */
float *cnn_optim_float_buffer(struct cnn_optim *o, const char *name,
                              struct cnn_error *err);

void cnn_optim_free(struct cnn_optim *o);

/* Reads "betas: [b1, b2]" with defaults, each in [0, 1). */
enum cnn_status cnn_optim_read_betas(struct cnn_node *args, double def1,
                                     double def2, double *b1, double *b2,
                                     struct cnn_error *err);

extern const struct cnn_optim_kind cnn_optim_sgd;
extern const struct cnn_optim_kind cnn_optim_adam;
extern const struct cnn_optim_kind cnn_optim_adamw;
extern const struct cnn_optim_kind cnn_optim_lion;
extern const struct cnn_optim_kind cnn_optim_rmsprop;
extern const struct cnn_optim_kind cnn_optim_adagrad;
extern const struct cnn_optim_kind cnn_optim_adam8bit;

/* --- schedules (schedule.c) ------------------------------------------- */

struct cnn_schedule {
    struct cnn_schedule_config cfg;
    double base_lr;
    long long total_steps;       /* of the whole run */
    long long steps_per_epoch;
    double plateau_scale;        /* plateau: product of reductions so far */
    double plateau_best;         /* best metric seen, +inf at first */
    long long plateau_bad;       /* epochs without improvement */
};

void cnn_schedule_init(struct cnn_schedule *s,
                       const struct cnn_schedule_config *cfg, double base_lr,
                       long long total_steps, long long steps_per_epoch);

/* Learning rate for optimizer step `step` (0-based) in epoch `epoch`
 * (0-based). */
double cnn_schedule_lr(const struct cnn_schedule *s, long long step,
                       long long epoch);

/* Feeds the end-of-epoch metric (lower is better) to plateau; a no-op
 * for the others. Returns true when it just reduced the rate. */
bool cnn_schedule_epoch_end(struct cnn_schedule *s, double metric);

#endif
