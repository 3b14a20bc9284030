/*
 * Fuzz target for the config loader: the input is YAML text, taken the
 * way the CLI takes a file: load, one --set, resolve; then, as a run
 * would, the schedule is asked for a few rates, the model is built, the
 * optimizer created and the tree written back out.
 *
 * The --set is "training.epochs=3" unless the first line of the input
 * reads "#set KEY=VALUE" (a YAML comment, so the document is unchanged).
 *
 * A config a run accepts must survive its own round trip: the text
 * cnn_config_emit_string writes (config.yaml of a run, and the config
 * kept in checkpoints) must load and resolve again and show no
 * difference from the tree it came from, or a resume would report
 * changes nobody made. A failure there aborts, like a sanitizer would.
 *
 * Layer sizes are left alone: a model may ask for gigabytes; past
 * 512 MiB malloc returns NULL (fuzz_util.h) and the build must say so.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cnn/config.h"
#include "cnn/net.h"
#include "cnn/optim.h"
#include "fuzz_util.h"

enum {
    BATCH = 2,
    MAX_INPUT_SIZE = 3 * 32 * 32,   /* model.input beyond this: default */
    OPTIM_PARAMS = 64,              /* parameters of the group-less optim */
};

static const char DEFAULT_SET[] = "training.epochs=3";

/* The assignment of a "#set KEY=VALUE" first line (malloc'd), else a
 * copy of DEFAULT_SET; NULL when out of memory. */
static char *pick_assignment(const char *text)
{
    if (strncmp(text, "#set ", 5) != 0)
        return strdup(DEFAULT_SET);
    return strndup(text + 5, strcspn(text + 5, "\n"));
}

static struct cnn_shape input_shape(const struct cnn_config *cfg)
{
    struct cnn_shape s = {cfg->input_c, cfg->input_h, cfg->input_w};
    if (s.c < 1 || cnn_shape_size(s) > MAX_INPUT_SIZE)
        s = (struct cnn_shape){1, 28, 28};
    return s;
}

static void report_difference(void *ctx, const char *path, const char *old,
                              const char *new_value)
{
    int *count = ctx;
    fprintf(stderr, "round trip changed %s: '%s' -> '%s'\n", path,
            old ? old : "(absent)", new_value ? new_value : "(absent)");
    (*count)++;
}

/* Aborts unless text (emitted from cfg) reads back to the same tree and
 * resolves again. */
static void check_round_trip(const struct cnn_config *cfg, const char *text)
{
    struct cnn_config again;
    struct cnn_error err = {0};
    int differences = 0;

    enum cnn_status st = cnn_config_load_string(&again, text, "emitted.yaml",
                                                "/tmp", &err);
    if (st == CNN_OK)
        cnn_config_diff(again.root, cfg->root, report_difference,
                        &differences);
    if (st == CNN_OK)
        st = cnn_config_resolve(&again, &err);
    cnn_config_free(&again);

    if (st != CNN_OK || differences) {
        fprintf(stderr, "emitted config does not read back%s%s %s\n"
                "--- emitted:\n%s---\n", st ? ": " : "",
                st ? err.where : "", st ? err.message : "", text);
        abort();
    }
}

/* Builds the model and frees it again. */
static enum cnn_status build_net(struct cnn_config *cfg)
{
    struct cnn_net net;
    struct cnn_error err = {0};

    enum cnn_status st = cnn_net_build(&net, cfg->model_layers,
                                       input_shape(cfg), BATCH, &err);
    if (st == CNN_OK)
        cnn_net_free(&net);
    return st;
}

/* The optimizer section, read by its kind: no groups, a few parameters. */
static enum cnn_status create_optim(struct cnn_config *cfg)
{
    struct cnn_optim o;
    struct cnn_error err = {0};

    enum cnn_status st = cnn_optim_create(&o, cfg->optim.node, NULL, 0,
                                          OPTIM_PARAMS, &err);
    if (st == CNN_OK)
        cnn_optim_free(&o);
    return st;
}

/* A few learning rates from the resolved schedule. */
static void walk_schedule(const struct cnn_config *cfg)
{
    struct cnn_schedule s;
    cnn_schedule_init(&s, &cfg->schedule, cfg->optim.lr, 100, 10);
    for (long long step = 0; step < 100; step += 33)
        (void)cnn_schedule_lr(&s, step, step / 10);
    cnn_schedule_epoch_end(&s, 1.0);
    cnn_schedule_epoch_end(&s, 2.0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The loader takes a C string, as cnn_config_load hands it one. */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *assignment = pick_assignment(text);

    struct cnn_config cfg;
    struct cnn_error err = {0};
    enum cnn_status st = cnn_config_load_string(&cfg, text, "fuzz.yaml",
                                                "/tmp", &err);
    if (st == CNN_OK && assignment)
        st = cnn_config_set(&cfg, assignment, &err);
    if (st == CNN_OK)
        st = cnn_config_resolve(&cfg, &err);

    if (st == CNN_OK) {
        walk_schedule(&cfg);
        st = build_net(&cfg);
        if (create_optim(&cfg) != CNN_OK)
            st = CNN_ERR_CONFIG;
    }

    /* A run writes its config only once the model and optimizer are
     * made, when every key was checked: hold the round trip to that. */
    char *emitted = cfg.root ? cnn_config_emit_string(&cfg) : NULL;
    if (st == CNN_OK && emitted)
        check_round_trip(&cfg, emitted);

    free(emitted);
    cnn_config_free(&cfg);
    free(assignment);
    free(text);
    return 0;
}
