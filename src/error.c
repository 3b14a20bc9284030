/*
 * Error values: formatting only. See include/cnn/error.h.
 */
#include "cnn/error.h"

#include <string.h>

#include <stdarg.h>
#include <stdio.h>

static void vformat(char *dst, size_t cap, const char *fmt, va_list ap)
{
    vsnprintf(dst, cap, fmt, ap);
}

enum cnn_status cnn_error_set(struct cnn_error *err, enum cnn_status status,
                              const char *fmt, ...)
{
    if (!err)
        return status;
    err->status = status;
    err->where[0] = '\0';
    err->hint[0] = '\0';

    va_list ap;
    va_start(ap, fmt);
    vformat(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return status;
}

enum cnn_status cnn_error_at(struct cnn_error *err, enum cnn_status status,
                             const char *where, const char *fmt, ...)
{
    if (!err)
        return status;
    err->status = status;
    snprintf(err->where, sizeof err->where, "%s", where ? where : "");
    err->hint[0] = '\0';

    va_list ap;
    va_start(ap, fmt);
    vformat(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return status;
}

void cnn_error_hint(struct cnn_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vformat(err->hint, sizeof err->hint, fmt, ap);
    va_end(ap);
}

int cnn_status_exit_code(enum cnn_status status)
{
    switch (status) {
    case CNN_OK:
        return 0;
    case CNN_ERR_CONFIG:
    case CNN_ERR_DATA:
    case CNN_ERR_USAGE:
    case CNN_ERR_UNSUPPORTED:
        return 2;
    case CNN_ERR_NONFINITE:
        return 3;
    case CNN_STOPPED:
    case CNN_ERR_BUSY:
        return 75;
    default:
        return 1;
    }
}

const char *cnn_status_name(enum cnn_status status)
{
    static const char *const names[] = {
        [CNN_OK] = "ok",
        [CNN_ERR_CONFIG] = "config error",
        [CNN_ERR_DATA] = "data error",
        [CNN_ERR_USAGE] = "usage error",
        [CNN_ERR_IO] = "i/o error",
        [CNN_ERR_NOMEM] = "out of memory",
        [CNN_ERR_UNSUPPORTED] = "not supported",
        [CNN_ERR_RUNTIME] = "runtime error",
        [CNN_ERR_NONFINITE] = "non-finite values",
        [CNN_STOPPED] = "stopped",
        [CNN_ERR_BUSY] = "busy",
    };
    if ((unsigned)status < sizeof names / sizeof names[0])
        return names[status];
    return "error";
}

static const char ECHO[] = "stopped: another rank of the job failed";

enum cnn_status cnn_error_echo(struct cnn_error *err)
{
    return cnn_error_set(err, CNN_ERR_IO, "%s", ECHO);
}

bool cnn_error_is_echo(const struct cnn_error *err)
{
    return strcmp(err->message, ECHO) == 0;
}
