/*
 * cnn-train train CONFIG: check everything, then train into the run
 * directory.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
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

    enum cnn_status st = cli_load_config(&opts, &cfg, &err);
    if (st == CNN_OK) {
        cnn_blas_threads((int)cfg.training.threads);
        st = cnn_session_open(&session, &cfg, &err);
    }
    if (st == CNN_OK) {
        cnn_log_init(&log, stderr, opts.quiet);
        struct cnn_train_opts topts = {.run_dir = run_dir,
                                       .force = opts.force};
        st = cnn_train_run(&session, &topts, &log, &res, &err);
        cnn_log_close(&log);
        cnn_session_close(&session);
    }
    cnn_config_free(&cfg);
    return st == CNN_OK ? 0 : cli_report(&err);
}
