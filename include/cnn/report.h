/*
 * What people read: log lines and a progress line on stderr (redrawn in
 * place on a terminal, plain timestamped key=value lines elsewhere), the
 * run's log file, and metrics.csv. Only this room and the CLI write.
 */
#ifndef CNN_REPORT_H
#define CNN_REPORT_H

#include <stdbool.h>
#include <stdio.h>

struct cnn_log {
    FILE *term;             /* stderr, not owned */
    FILE *file;             /* the run's train.log, owned; may be NULL */
    bool tty;               /* term is a terminal: redraw in place */
    bool quiet;             /* only warnings and errors reach term */
    bool progress_drawn;    /* a progress line is on screen */
    double last_draw;       /* monotonic seconds of the last redraw */
};

/* term NULL: nothing reaches a terminal (the other ranks of an MPI job). */
void cnn_log_init(struct cnn_log *log, FILE *term, bool quiet);

/* Opens path for appending as the log file; false if it cannot. */
bool cnn_log_open_file(struct cnn_log *log, const char *path);

/* A line for people: stderr (unless quiet) and the log file. */
void cnn_log_info(struct cnn_log *log, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A per-interval line: always in the log file; on stderr only when it is
 * not a terminal (where the progress line shows the same figures). */
void cnn_log_step(struct cnn_log *log, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Always shown, prefixed "warning: ". */
void cnn_log_warn(struct cnn_log *log, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Progress: on a terminal, redraws one line in place (at most 10 times a
 * second unless force); elsewhere prints nothing, the caller logs plain
 * lines at its interval instead. */
void cnn_log_progress(struct cnn_log *log, bool force, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void cnn_log_close(struct cnn_log *log);

/* Monotonic clock in seconds. */
double cnn_now(void);

/* Seconds since this process was started (forked), re-executions
 * included, to the kernel's tick (10 ms); where that is unknown, since
 * the first call. */
double cnn_process_seconds(void);

/* metrics.csv: a header, then one row per logging interval and one per
 * evaluation; NAN cells are written empty. */
struct cnn_metrics_row {
    long long epoch;
    long long step;
    double lr;
    double train_loss;
    double train_acc;
    double test_loss;
    double test_acc;
    double images_per_s;
    double elapsed_s;
    double grad_norm;       /* mean pre-clip global L2 norm */
    double skipped_steps;   /* non-finite steps skipped so far */
    double val_loss;        /* the validation split (data.val_split) */
    double val_acc;
    /* Regression, in the targets' own units, per split: */
    struct cnn_regression_metrics {
        double mse, rmse, mae, r2;
    } train_reg, val_reg, test_reg;
};

/* A row with every value cell empty (NAN). */
struct cnn_metrics_row cnn_metrics_row_empty(long long epoch, long long step);

FILE *cnn_metrics_open(const char *path);

/* Writes row to f; nothing when f is NULL (a rank that writes no files). */
void cnn_metrics_write(FILE *f, const struct cnn_metrics_row *row);

#endif
