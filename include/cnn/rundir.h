/*
 * The run directory: creating it, holding it against a second process,
 * checking there is room, and finding, pruning and naming checkpoints.
 * Files inside: config.yaml, metrics.csv, train.log, ckpt-<step>.
 * safetensors, best.safetensors, model.safetensors, run.json, lock.
 */
#ifndef CNN_RUNDIR_H
#define CNN_RUNDIR_H

#include <stdbool.h>
#include <stddef.h>

#include "cnn/error.h"

struct cnn_rundir {
    char path[4096];
    int lock_fd;                /* -1 when not held */
};

/* Creates path (and parents), checks it is a writable directory and
 * takes its lock; a directory held by a live process is refused with
 * that process's pid. The lock dies with the process. */
enum cnn_status cnn_rundir_open(struct cnn_rundir *rd, const char *path,
                                struct cnn_error *err);

void cnn_rundir_close(struct cnn_rundir *rd);

/* dir/name into buf. */
void cnn_rundir_file(const struct cnn_rundir *rd, const char *name,
                     char *buf, size_t cap);

bool cnn_rundir_has(const struct cnn_rundir *rd, const char *name);

/* Fails with CNN_ERR_IO unless the file system holds need bytes more
 * (twice a checkpoint, so the old one survives while the new one is
 * written). */
enum cnn_status cnn_rundir_check_space(const struct cnn_rundir *rd,
                                       size_t need, struct cnn_error *err);

/* Steps of the checkpoints present, newest first, into steps[0..cap);
 * returns how many. */
int cnn_rundir_checkpoints(const struct cnn_rundir *rd, long long *steps,
                           int cap);

void cnn_rundir_checkpoint_path(const struct cnn_rundir *rd, long long step,
                                char *buf, size_t cap);

/* Deletes all but the newest keep checkpoints. */
void cnn_rundir_prune(const struct cnn_rundir *rd, long long keep);

/* Removes what a previous run left (checkpoints, best, model, run.json,
 * metrics.csv, grad_stats.csv), for --force. */
void cnn_rundir_clear(const struct cnn_rundir *rd);

#endif
