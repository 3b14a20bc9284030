/*
 * cnn-train train CONFIG: check everything, then train into the run
 * directory.
 */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cnn/dist.h"
#include "cnn/ops.h"
#include "cnn/train.h"

/* runs/<stem of the config file name>. */
static void default_run_dir(const char *config, char *buf, size_t cap)
{
    const char *base = strrchr(config, '/');
    base = base ? base + 1 : config;
    size_t len = strcspn(base, ".");
    if (len == 0)
        len = strlen(base);
    snprintf(buf, cap, "runs/%.*s", (int)len, base);
}

/* The one piece of process-wide state: what signals asked for. A signal
 * handler can only set a flag, so these live at file scope and the loop
 * reads them through cnn_train_opts. */
static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t checkpoint_requested;

/* SIGINT/SIGTERM: the first asks for a checkpoint and a clean stop; a
 * second ends the process at once, leaving the last checkpoint as it is
 * (a half-written one is only ever a temporary file). */
static void on_stop(int sig)
{
    (void)sig;
    if (stop_requested)
        _exit(75);
    stop_requested = 1;
}

static void on_hangup(int sig)
{
    (void)sig;
    checkpoint_requested = 1;
}

static void catch_signals(void)
{
    struct sigaction sa = {0};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_hangup;
    sigaction(SIGHUP, &sa, NULL);
}

/* The end of a run of an MPI job: the ranks fail together (the trainer
 * sees to that), and the first rank with a failure of its own, rather
 * than news of another's, says what happened, naming itself. Returns the
 * exit status, the same on every rank. */
static int report_job(enum cnn_status st, struct cnn_error *err)
{
    int rank = cnn_dist_rank();
    bool own = st != CNN_OK && !cnn_error_is_echo(err);
    int first = cnn_dist_min(own ? rank : INT_MAX);
    if (first == INT_MAX)
        first = cnn_dist_min(st != CNN_OK ? rank : INT_MAX);
    int code = 0;
    if (first != INT_MAX && rank == first) {
        if (rank > 0) {     /* "rank 1: file: error: ..." */
            char where[sizeof err->where + 32];
            int len = snprintf(where, sizeof where, "rank %d: %s", rank,
                               err->where[0] ? err->where : "cnn-train");
            size_t keep = len < (int)sizeof err->where
                              ? (size_t)len : sizeof err->where - 1;
            memcpy(err->where, where, keep);
            err->where[keep] = '\0';
        }
        code = cli_report(err);
    }
    if (first != INT_MAX)
        cnn_dist_bcast_int(&code, first);
    return code;
}

int cli_train(int argc, char **argv)
{
    struct cli_opts opts;
    int rc = cli_parse(argc, argv, "train", &opts);
    if (rc >= 0)
        return rc;

    struct cnn_config cfg;
    struct cnn_session session;
    struct cnn_error err = {0};
    struct cnn_log log;
    struct cnn_train_result res;
    char run_dir[4096];
    if (opts.out)
        snprintf(run_dir, sizeof run_dir, "%s", opts.out);
    else
        default_run_dir(opts.config, run_dir, sizeof run_dir);

    /* From the start: a stop during loading still ends in a checkpoint
     * (of the state loaded) and status 75, not a silent death. */
    catch_signals();
    enum cnn_status st = cli_load_config(&opts, &cfg, &err);
    if (st == CNN_OK) {
        cnn_blas_threads((int)cfg.training.threads);
        st = cnn_session_open(&session, &cfg, &err);
    }
    bool job = cnn_dist_size() > 1;
    if (job && cnn_dist_any(st != CNN_OK)) {   /* no rank trains alone */
        if (st == CNN_OK)
            cnn_session_close(&session);
        st = st != CNN_OK ? st : cnn_error_echo(&err);
    }
    if (st == CNN_OK) {
        /* Only rank 0 of a job talks and writes. */
        cnn_log_init(&log, cnn_dist_rank() == 0 ? stderr : NULL,
                     opts.quiet);
        struct cnn_train_opts topts = {
            .run_dir = run_dir, .force = opts.force, .resume = opts.resume,
            .resume_path = opts.resume_path, .stop = &stop_requested,
            .save_now = &checkpoint_requested,
        };

        st = cnn_train_run(&session, &topts, &log, &res, &err);
        cnn_log_close(&log);
        cnn_session_close(&session);
    }
    cnn_config_free(&cfg);
    if (job)
        return report_job(st, &err);
    return st == CNN_OK ? 0 : cli_report(&err);
}
