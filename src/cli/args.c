/*
 * Options shared by the subcommands, config loading with overrides, and
 * the one way errors are printed.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnn/ops.h"
#include "cnn_version.h"

void cli_usage(FILE *out)
{
    fputs("usage: cnn-train [train] CONFIG [options]\n"
          "       cnn-train summary CONFIG [--set KEY=VALUE]...\n"
          "       cnn-train compare RUN_DIR... [--csv]\n"
          "       cnn-train plot RUN_DIR... -o FILE.svg\n"
          "       cnn-train plot --grads RUN_DIR [-o FILE.svg]\n"
          "       cnn-train eval RUN_DIR|WEIGHTS [--config CONFIG] [--csv]\n"
          "       cnn-train predict WEIGHTS FILE... [--top K]\n"
          "       cnn-train bench CONFIG [--steps N] [--batch N] [--threads N]\n"
          "                       [--json] [--layers]\n"
          "       cnn-train gradcheck CONFIG [--samples N] [--entries N]\n"
          "                       [--tolerance X] [--entry-tolerance X]\n"
          "                       [--set KEY=VALUE]... [--seed N]\n"
          "       cnn-train --help | --version\n"
          "\n"
          "Train the model a YAML config describes; see cnn-train(1).\n"
          "\n"
          "options:\n"
          "  --set KEY.PATH=VALUE  change a config value (repeatable), e.g.\n"
          "                        --set training.epochs=1\n"
          "  --out DIR             run directory (default runs/<config stem>)\n"
          "  --seed N              the run's seed (same as --set seed=N)\n"
          "  --threads N           BLAS threads (default: all cores)\n"
          "  --resume [PATH]       continue from the newest good checkpoint in\n"
          "                        the run directory, or from PATH\n"
          "  --force               start over, clearing the run directory\n"
          "  --quiet               only warnings and errors on stderr\n"
          "  -h, --help            this text\n"
          "  -V, --version         program version\n"
          "\n"
          "compare prints one row per run directory (optimizer, lr, steps,\n"
          "final loss, best test accuracy, time, speed, optimizer memory);\n"
          "--csv gives comma-separated values. plot writes an SVG of the\n"
          "runs' training loss and test accuracy to -o/--output FILE.svg;\n"
          "with --grads, of one run's gradient norm per layer (its\n"
          "grad_stats.csv, from training.log_grad_stats), by default to\n"
          "RUN_DIR/grad_stats.svg. gradcheck compares the model's gradients\n"
          "with finite differences on --samples random examples (default 4),\n"
          "a row per layer; exit 0 when all are within tolerance, 1 if not.\n"
          "\n"
          "exit status: 0 done (or already complete), 1 runtime failure, 2 "
          "usage,\nconfig or data error, 3 non-finite loss or gradients, 75 "
          "stopped by a signal\nor run directory busy: try again (--resume)"
          "\n", out);
}

static bool parse_count(const char *s, long long min, long long max,
                        long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

int cli_parse(int argc, char **argv, const char *command,
              struct cli_opts *opts)
{
    enum { OPT_SET = 256, OPT_OUT, OPT_SEED, OPT_THREADS, OPT_QUIET,
           OPT_FORCE, OPT_RESUME };
    static const struct option longopts[] = {
        {"set", required_argument, NULL, OPT_SET},
        {"out", required_argument, NULL, OPT_OUT},
        {"seed", required_argument, NULL, OPT_SEED},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"force", no_argument, NULL, OPT_FORCE},
        {"resume", no_argument, NULL, OPT_RESUME},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    long long dummy;

    memset(opts, 0, sizeof *opts);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_SET:
            if (opts->n_sets == CLI_MAX_SETS) {
                fprintf(stderr, "cnn-train: too many --set options\n");
                return 2;
            }
            opts->sets[opts->n_sets++] = optarg;
            break;
        case OPT_OUT:
            opts->out = optarg;
            break;
        case OPT_SEED:
            if (!parse_count(optarg, 0, INT64_MAX, &dummy)) {
                fprintf(stderr, "cnn-train: --seed: expected a non-negative "
                        "integer, got '%s'\n", optarg);
                return 2;
            }
            opts->seed = optarg;
            break;
        case OPT_THREADS:
            if (!parse_count(optarg, 1, 1024, &opts->threads)) {
                fprintf(stderr, "cnn-train: --threads: expected 1 to 1024, "
                        "got '%s'\n", optarg);
                return 2;
            }
            break;
        case OPT_QUIET:
            opts->quiet = true;
            break;
        case OPT_FORCE:
            opts->force = true;
            break;
        case OPT_RESUME:
            opts->resume = true;
            break;
        default:
            return cli_other_option(c, command, argv);
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "cnn-train %s: missing CONFIG\n", command);
        fprintf(stderr, "try 'cnn-train --help'\n");
        return 2;
    }
    /* --resume PATH: one more positional, the one naming a .safetensors
     * file, wherever it stands. */
    if (opts->resume && optind + 2 == argc) {
        const char *a = argv[optind], *b = argv[optind + 1];
        size_t la = strlen(a);
        bool first = la > 12 && strcmp(a + la - 12, ".safetensors") == 0;
        opts->resume_path = first ? a : b;
        argv[optind] = (char *)(first ? b : a);
        argc--;
    }
    if (opts->resume && opts->force) {
        fprintf(stderr, "cnn-train %s: --resume and --force contradict each "
                "other\n", command);
        return 2;
    }
    if (optind + 1 < argc) {
        fprintf(stderr, "cnn-train %s: unexpected argument '%s'\n", command,
                argv[optind + 1]);
        return 2;
    }
    opts->config = argv[optind];
    return -1;
}

enum cnn_status cli_load_config(const struct cli_opts *opts,
                                struct cnn_config *cfg,
                                struct cnn_error *err)
{
    enum cnn_status st = cnn_config_load(cfg, opts->config, err);
    if (st == CNN_OK && opts->seed) {
        char buf[64];
        snprintf(buf, sizeof buf, "seed=%s", opts->seed);
        st = cnn_config_set(cfg, buf, err);
    }
    for (int i = 0; st == CNN_OK && i < opts->n_sets; i++)
        st = cnn_config_set(cfg, opts->sets[i], err);
    if (st == CNN_OK)
        st = cnn_config_resolve(cfg, err);
    if (st == CNN_OK && opts->threads > 0)
        cfg->training.threads = opts->threads;
    return st;
}

int cli_report(const struct cnn_error *err)
{
    if (err->status == CNN_STOPPED) {
        fprintf(stderr, "cnn-train: %s; continue with --resume\n",
                err->message);
        return cnn_status_exit_code(err->status);
    }
    if (err->where[0])
        fprintf(stderr, "%s: error: %s\n", err->where, err->message);
    else
        fprintf(stderr, "cnn-train: error: %s\n", err->message);
    if (err->hint[0])
        fprintf(stderr, "  hint: %s\n", err->hint);
    return cnn_status_exit_code(err->status);
}

void cli_format_bytes(double v, char *buf, size_t cap)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (v >= 1024.0 && i < 4) {
        v /= 1024.0;
        i++;
    }
    snprintf(buf, cap, i ? "%.1f %s" : "%.0f %s", v, unit[i]);
}

int cli_other_option(int c, const char *command, char **argv)
{
    if (c == 'h') {
        cli_usage(stdout);
        return 0;
    }
    if (c == 'V') {
        printf("cnn-train %s\n", CNN_VERSION);
        return 0;
    }
    fprintf(stderr, "cnn-train %s: unknown option or missing value: '%s'\n",
            command, argv[optind - 1]);
    fprintf(stderr, "try 'cnn-train --help'\n");
    return 2;
}
