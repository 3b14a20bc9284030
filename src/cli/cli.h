/*
 * The command line: shared option parsing and the subcommands. Only this
 * room prints errors and picks exit codes.
 */
#ifndef CNN_CLI_H
#define CNN_CLI_H

#include <stdbool.h>

#include "cnn/config.h"
#include "cnn/error.h"

enum {
    CLI_MAX_SETS = 256,
};

struct cli_opts {
    const char *config;          /* the positional CONFIG */
    const char *sets[CLI_MAX_SETS];
    int n_sets;
    const char *out;             /* --out, NULL for runs/<stem> */
    const char *seed;            /* --seed as typed, NULL if absent */
    long long threads;           /* --threads, 0 if absent */
    bool quiet;
    bool force;
    bool resume;                 /* --resume */
    const char *resume_path;     /* --resume PATH */
};

/* Parses argv after the subcommand. Returns 0 to go on, or an exit code
 * (0 after --help, 2 on misuse) to stop with. */
int cli_parse(int argc, char **argv, const char *command,
              struct cli_opts *opts);

/* Loads opts->config, applies --seed and every --set, resolves. */
enum cnn_status cli_load_config(const struct cli_opts *opts,
                                struct cnn_config *cfg,
                                struct cnn_error *err);

/* Prints err the way every subcommand does; returns the exit code. */
int cli_report(const struct cnn_error *err);

void cli_usage(FILE *out);

/* The end of every subcommand's option switch: -h/--help and
 * -V/--version answer and stop (0); anything else is an unknown option
 * or a missing value (2). Returns the exit code. */
int cli_other_option(int c, const char *command, char **argv);

/* "1.8 MiB": bytes in binary units, for tables. */
void cli_format_bytes(double bytes, char *buf, size_t cap);

int cli_train(int argc, char **argv);
int cli_summary(int argc, char **argv);
int cli_compare(int argc, char **argv);
int cli_plot(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_predict(int argc, char **argv);
int cli_gradcheck(int argc, char **argv);

#endif
