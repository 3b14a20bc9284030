/*
 * Checkpoints: one safetensors file holding everything a run needs to go
 * on as if it had never stopped: the weights, every optimizer buffer
 * ("optim.<name>"), the dropout generator ("state.dropout_rng"), and in
 * the metadata the loop's position and counters, the schedule and
 * early-stopping state, the config text, the program version and a
 * CRC-32 of the tensor data.
 */
#ifndef CNN_CHECKPOINT_H
#define CNN_CHECKPOINT_H

#include "cnn/net.h"
#include "cnn/optim.h"
#include "cnn/safetensors.h"

/* Where a run stands; what a checkpoint restores besides tensors. */
struct cnn_run_state {
    long long step;             /* optimizer steps done */
    long long epoch;            /* current epoch, 0-based */
    long long epoch_pos;        /* examples of this epoch already used */
    long long examples;         /* training examples seen in all */
    double train_seconds;       /* training time, across restarts */
    /* the open metrics interval */
    double sum_loss, sum_norm;
    long long sum_correct, sum_examples, interval_steps;
    /* results and stopping rules */
    double final_train_loss;
    double test_loss, test_acc;
    double best_test_acc;
    long long best_test_epoch;
    double best_metric;         /* early stopping / best.safetensors */
    long long stale_epochs;     /* epochs without improvement */
    long long skipped_steps;    /* non-finite steps skipped */
    long long rollbacks;        /* non-finite rollbacks done */
    double lr_factor;           /* halved by each rollback */
    double last_lr;             /* of the last step */
    double stop_best;           /* early stopping's best so far */
    long long metrics_bytes;    /* metrics.csv size at this point */
    double loss_scale;          /* bf16: the dynamic loss scale ... */
    long long scale_good;       /* ... and steps since it last moved */
    long long grad_stats_bytes; /* grad_stats.csv size; 0 = none yet */
    bool done;                  /* the run finished */
};

void cnn_run_state_init(struct cnn_run_state *rs);

/* Writes a checkpoint of net, optimizer, schedule and rs to path,
 * atomically. config_text is the resolved config. */
enum cnn_status cnn_checkpoint_save(const char *path, struct cnn_net *net,
                                    const struct cnn_optim *optim,
                                    const struct cnn_schedule *schedule,
                                    const struct cnn_run_state *rs,
                                    const char *config_text,
                                    struct cnn_error *err);

/* Reads path into net, optimizer, schedule and rs after checking its
 * checksum and that every tensor fits; the first mismatch is named.
 * *config_text (malloc'd, may be NULL) receives the saved config. Nothing
 * is changed unless everything loads. */
enum cnn_status cnn_checkpoint_load(const char *path, struct cnn_net *net,
                                    struct cnn_optim *optim,
                                    struct cnn_schedule *schedule,
                                    struct cnn_run_state *rs,
                                    char **config_text,
                                    struct cnn_error *err);

/* The CRC-32 a checkpoint carries: each tensor's name, dtype, shape and
 * data, then every metadata pair except "checksum", in order. */
uint32_t cnn_checkpoint_checksum(const struct cnn_tensor *t, int n,
                                 const char *const *keys,
                                 const char *const *values, int n_meta);

#endif
