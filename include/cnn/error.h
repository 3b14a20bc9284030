/*
 * Error values. A function that can fail returns an enum cnn_status and
 * fills a caller-owned struct cnn_error with one human sentence and, for
 * config problems, the place it came from. Nothing here prints: only the
 * CLI decides what reaches the user and which exit code it gets.
 */
#ifndef CNN_ERROR_H
#define CNN_ERROR_H

#include <stdbool.h>

enum cnn_status {
    CNN_OK = 0,
    CNN_ERR_CONFIG,      /* the config file or a --set value is wrong */
    CNN_ERR_DATA,        /* a dataset file is missing, malformed or unfit */
    CNN_ERR_USAGE,       /* command-line misuse */
    CNN_ERR_IO,          /* reading or writing the run directory failed */
    CNN_ERR_NOMEM,       /* an allocation failed */
    CNN_ERR_UNSUPPORTED, /* a known feature that is not built yet */
    CNN_ERR_RUNTIME,     /* training itself failed */
    CNN_ERR_NONFINITE,   /* loss or gradients stopped being finite */
    CNN_STOPPED,         /* stopped by a signal after a checkpoint */
    CNN_ERR_BUSY,        /* the run directory is held by another process */
};

struct cnn_error {
    enum cnn_status status;
    char where[512];   /* "file:line:col" or "--set k=v"; empty if none */
    char message[1024];
    char hint[256];    /* optional "hint:" line; empty if none */
};

/* Sets status and message (printf-style); clears where and hint. Returns
 * status so callers can write `return cnn_error_set(err, ...)`. err may
 * be NULL. */
enum cnn_status cnn_error_set(struct cnn_error *err, enum cnn_status status,
                              const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Same, with a location string printed before the message. */
enum cnn_status cnn_error_at(struct cnn_error *err, enum cnn_status status,
                             const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Adds a hint line to an error already set. */
void cnn_error_hint(struct cnn_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The process exit code for a status: 0 ok, 2 for usage, config and data
 * errors, 3 for a non-finite loss or gradient, 75 (EX_TEMPFAIL) for a run
 * stopped by a signal that can be resumed or a run directory busy with
 * another process, 1 for everything else. */
int cnn_status_exit_code(enum cnn_status status);

/* "Stopped because another rank failed": what the ranks of an MPI job
 * that did not fail themselves return, so that the failure is reported
 * once, by the rank that has it. */
enum cnn_status cnn_error_echo(struct cnn_error *err);
bool cnn_error_is_echo(const struct cnn_error *err);

const char *cnn_status_name(enum cnn_status status);

#endif
