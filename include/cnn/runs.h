/*
 * Runs read back, for `compare` and `plot`: what a run directory says
 * about the run that wrote it, and an SVG chart of several runs.
 *
 * A run directory holds config.yaml and metrics.csv from the start, and
 * run.json once the run has finished. The reader takes the summary
 * figures from run.json when it is there; without it (an older or an
 * unfinished run) it derives what metrics.csv and config.yaml can tell
 * and leaves the rest unknown. metrics.csv columns are found by their
 * header name, so columns added later are passed over.
 *
 * Nothing here prints: errors come back as a struct cnn_error naming the
 * file, and the chart goes to a FILE the caller gives.
 */
#ifndef CNN_RUNS_H
#define CNN_RUNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "cnn/error.h"

/* Points (x[i], y[i]) in file order. */
struct cnn_series {
    double *x, *y;              /* [n], owned */
    size_t n, cap;
};

/* Unknown figures are NAN (doubles) or -1 (counts). */
struct cnn_run {
    char *dir;                  /* as given, trailing slashes dropped */
    char *base;                 /* the directory's own name */
    const char *label;          /* base or dir (see cnn_runs_label); view */
    char *name;                 /* the config's name; NULL when unknown */
    char *optimizer;            /* optimizer name; NULL when unknown */
    double lr;                  /* base learning rate */
    long long epochs;           /* epochs done */
    long long steps;            /* optimizer steps done */
    double seconds;             /* wall time of the training */
    double images_per_s;        /* training examples per second */
    double final_train_loss;
    double final_test_acc;
    double best_test_acc;
    long long best_epoch;       /* the epoch of best_test_acc */
    double final_test_rmse;     /* regression runs */
    double final_test_r2;
    long long params;
    long long optimizer_state_bytes;
    bool has_summary;           /* run.json was read */
    struct cnn_series loss;     /* train_loss against step */
    struct cnn_series acc;      /* test_acc against epoch */
    struct cnn_series r2;       /* test_r2 against epoch (regression) */
};

/* Reads the run directory dir into run. metrics.csv must be there, and
 * config.yaml too when run.json is not. A missing directory or file, or
 * one that cannot be parsed, fails with CNN_ERR_DATA (CNN_ERR_CONFIG for
 * config.yaml) and an error naming the file and, where there is one, the
 * line; CNN_ERR_NOMEM when memory runs out. On failure run is left empty
 * (safe to free). Free with cnn_run_free. */
enum cnn_status cnn_run_load(struct cnn_run *run, const char *dir,
                             struct cnn_error *err);

/* Frees what run owns and empties it; run may be NULL. */
void cnn_run_free(struct cnn_run *run);

/* Loads each of n_dirs run directories, in order, into *runs (an array
 * the caller frees with cnn_runs_free) and labels them. Fails on the
 * first directory that cnn_run_load refuses, keeping nothing. */
enum cnn_status cnn_runs_load(struct cnn_run **runs, char *const *dirs,
                              int n_dirs, struct cnn_error *err);

/* Frees n_runs runs and the array; runs may be NULL. */
void cnn_runs_free(struct cnn_run *runs, int n_runs);

/* Gives every run a label for tables and legends: the directory's own
 * name, or the directory as given where two runs share that name. */
void cnn_runs_label(struct cnn_run *runs, int n_runs);

/* --- grad_stats.csv read back (gradcurves.c) -------------------------- */

/* Appends (x, y) to s; false when out of memory. */
bool cnn_series_push(struct cnn_series *s, double x, double y);

/* Each layer's gradient norm against the step, layers in the order of
 * their first row (the net's order, input first). */
struct cnn_grad_curves {
    char **names;               /* [n_layers], owned */
    struct cnn_series *norms;   /* [n_layers]: grad_norm against step */
    int n_layers, cap;
};

/* Reads dir/grad_stats.csv (written by training.log_grad_stats). Its
 * columns are found by header name; step, layer and grad_norm are
 * required. A missing or malformed file fails with CNN_ERR_DATA naming
 * it (and the line); out of memory with CNN_ERR_NOMEM. On failure g is
 * left empty (safe to free). */
enum cnn_status cnn_grad_curves_load(struct cnn_grad_curves *g,
                                     const char *dir, struct cnn_error *err);

void cnn_grad_curves_free(struct cnn_grad_curves *g);

/* --- the chart (plot.c) ------------------------------------------------ */

enum {
    CNN_PLOT_MAX_TICKS = 24,
};

/* An axis: its range in data units and where labeled ticks go. */
struct cnn_plot_axis {
    double lo, hi;
    bool log;                   /* log10 scale (lo > 0) */
    int n_ticks;
    double ticks[CNN_PLOT_MAX_TICKS];   /* ascending, within [lo, hi] */
};

/* A linear axis around [min, max] with "nice" bounds and 3 to 6 ticks a
 * multiple of 1, 2 or 5 times a power of ten apart (at least 1 apart
 * when integer). No data (min > max, or not finite) gives [0, 1]. */
void cnn_plot_axis_linear(struct cnn_plot_axis *a, double min, double max,
                          bool integer);

/* A log10 axis around [min, max] (both > 0): bounds at 1, 2 or 5 times a
 * power of ten, a labeled tick at every decade inside (every second or
 * further one past 8 decades), and at the 2 and 5 multiples too when
 * fewer than 3 decades fall inside. No data gives [0.1, 10]. */
void cnn_plot_axis_log(struct cnn_plot_axis *a, double min, double max);

/* Writes to out an SVG document, 960 by 420, of the runs' training loss
 * against step (log scale) and test accuracy against epoch, side by
 * side, one color per run, with a legend of the runs' labels. Runs
 * without points in a panel are only left out of it. Fails with
 * CNN_ERR_IO when out reports a write error. */
enum cnn_status cnn_plot_svg(FILE *out, const struct cnn_run *runs,
                             int n_runs, struct cnn_error *err);

/* Writes to out an SVG document, 960 wide and tall enough for a legend
 * row per layer (420 at least), of the gradient norm of each layer
 * against the step on a log scale, colored from the first layer (dark
 * blue) to the last (yellow). Fails with CNN_ERR_IO when out reports a
 * write error. */
enum cnn_status cnn_plot_grads_svg(FILE *out, const struct cnn_grad_curves *g,
                                   struct cnn_error *err);

#endif
