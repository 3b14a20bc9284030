/*
 * Log and progress lines. A terminal gets a single progress line redrawn
 * in place; a pipe or file gets plain lines with a timestamp and no
 * escape codes, so tee and cron mail stay readable.
 */
#include "cnn/report.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double cnn_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Field 22 of /proc/self/stat, the start in ticks since boot, against
 * the boot-time clock; the command name (field 2) may hold spaces and
 * parentheses, so the fields are counted from its closing one. */
static bool process_start(double *boot_s)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long ticks;
    long hz = sysconf(_SC_CLK_TCK);
    /* After ")": state (field 3) ... starttime (field 22). */
    if (!p || hz <= 0 || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u "
                                "%*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
                                "%*d %llu", &ticks) != 1)
        return false;
    *boot_s = (double)ticks / (double)hz;
    return true;
}

double cnn_process_seconds(void)
{
    static double start_boot = -1, start_mono = -1;
    struct timespec ts;
    if (start_boot < 0 && start_mono < 0 && !process_start(&start_boot))
        start_mono = cnn_now();
    if (start_mono >= 0)
        return cnn_now() - start_mono;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec * 1e-9 - start_boot;
    return t > 0 ? t : 0;
}

void cnn_log_init(struct cnn_log *log, FILE *term, bool quiet)
{
    memset(log, 0, sizeof *log);
    log->term = term;
    log->quiet = quiet;
    log->tty = term && isatty(fileno(term));
}

bool cnn_log_open_file(struct cnn_log *log, const char *path)
{
    log->file = fopen(path, "a");
    return log->file != NULL;
}

static void timestamp(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
}

static void clear_progress(struct cnn_log *log)
{
    if (log->progress_drawn) {
        fputs("\r\033[K", log->term);
        log->progress_drawn = false;
    }
}

static void emit(struct cnn_log *log, bool to_term, const char *prefix,
                 const char *fmt, va_list ap)
{
    char line[2048];
    char ts[32];
    vsnprintf(line, sizeof line, fmt, ap);
    timestamp(ts, sizeof ts);

    if (to_term && log->term) {
        clear_progress(log);
        if (log->tty)
            fprintf(log->term, "%s%s\n", prefix, line);
        else
            fprintf(log->term, "%s %s%s\n", ts, prefix, line);
        fflush(log->term);
    }
    if (log->file) {
        fprintf(log->file, "%s %s%s\n", ts, prefix, line);
        fflush(log->file);
    }
}

void cnn_log_info(struct cnn_log *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(log, !log->quiet, "", fmt, ap);
    va_end(ap);
}

void cnn_log_step(struct cnn_log *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(log, !log->quiet && !log->tty, "", fmt, ap);
    va_end(ap);
}

void cnn_log_warn(struct cnn_log *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(log, true, "warning: ", fmt, ap);
    va_end(ap);
}

void cnn_log_progress(struct cnn_log *log, bool force, const char *fmt, ...)
{
    if (!log->tty || log->quiet)
        return;
    double now = cnn_now();
    if (!force && now - log->last_draw < 0.1)
        return;
    log->last_draw = now;

    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(log->term, "\r\033[K%s", line);
    fflush(log->term);
    log->progress_drawn = true;
}

void cnn_log_close(struct cnn_log *log)
{
    clear_progress(log);
    if (log->file)
        fclose(log->file);
    log->file = NULL;
}
