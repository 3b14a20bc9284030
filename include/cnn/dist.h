/*
 * Data-parallel training over MPI: which process this is among how many,
 * and the few collective operations the trainer needs. Every rank runs
 * the same loop on its own shard of each global batch; gradients are
 * summed so every rank takes the same optimizer step.
 *
 * Built without MPI, or started outside mpirun, there is one rank and
 * every operation is the identity: the trainer's code has no #ifdef.
 */
#ifndef CNN_DIST_H
#define CNN_DIST_H

#include <stdbool.h>
#include <stddef.h>

/* Joins the MPI job when the process was started by mpirun (or another
 * MPI launcher); otherwise, or without MPI support, does nothing. */
void cnn_dist_init(int *argc, char ***argv);

/* Leaves the job (a no-op without one). */
void cnn_dist_finalize(void);

int cnn_dist_rank(void);
int cnn_dist_size(void);

/* "Open MPI v4.1.4, ..." when built with MPI, else NULL. */
const char *cnn_dist_library(void);

/* In-place sums over all ranks. */
void cnn_dist_sum_floats(float *v, size_t n);
void cnn_dist_sum_doubles(double *v, size_t n);

/* Whether flag is true on any rank. */
bool cnn_dist_any(bool flag);

/* The smallest value of v over all ranks. */
int cnn_dist_min(int v);

/* Rank root's value of *v (or its string, up to cap bytes), everywhere. */
void cnn_dist_bcast_int(int *v, int root);
void cnn_dist_bcast_string(char *s, size_t cap, int root);
void cnn_dist_bcast_doubles(double *v, size_t n, int root);

/* Ends every rank of the job at once with this exit status. */
void cnn_dist_abort(int status) __attribute__((noreturn));

#endif
