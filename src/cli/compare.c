/*
 * cnn-train compare RUN_DIR... [--csv]: one row per run on stdout, in
 * the order given: optimizer, learning rate, steps, final training loss,
 * best test accuracy and the epoch it came at, wall time, speed and the
 * optimizer's state memory (and, when a run is a regression, its final
 * test RMSE and R²). Aligned columns with "-" for what a run does
 * not tell; with --csv, a header and plain comma-separated rows with
 * empty cells instead, and memory in bytes. Every run is read before
 * anything is printed, so a broken one gives only its error.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnn/runs.h"

enum column {
    COL_RUN,
    COL_OPTIMIZER,
    COL_LR,
    COL_STEPS,
    COL_LOSS,
    COL_ACC,
    COL_EPOCH,
    COL_RMSE,
    COL_R2,
    COL_TIME,
    COL_SPEED,
    COL_MEMORY,
    N_COLUMNS,
};

static const struct {
    const char *title;          /* in the table */
    const char *csv;            /* in the --csv header */
    bool text;                  /* left-aligned */
    bool optional;              /* shown only when some run has it */
} columns[N_COLUMNS] = {
    [COL_RUN] = {"run", "run", true},
    [COL_OPTIMIZER] = {"optimizer", "optimizer", true},
    [COL_LR] = {"lr", "lr", false},
    [COL_STEPS] = {"steps", "steps", false},
    [COL_LOSS] = {"final_loss", "final_train_loss", false},
    [COL_ACC] = {"best_acc", "best_test_acc", false},
    [COL_EPOCH] = {"at_epoch", "best_epoch", false},
    [COL_RMSE] = {"test_rmse", "final_test_rmse", false, true},
    [COL_R2] = {"test_r2", "final_test_r2", false, true},
    [COL_TIME] = {"time_s", "seconds", false},
    [COL_SPEED] = {"images/s", "images_per_s", false},
    [COL_MEMORY] = {"opt_memory", "optimizer_state_bytes", false},
};

/* A row's cells: the text ones point into the run, numbers into buf. */
struct row {
    const char *cell[N_COLUMNS];
    char buf[N_COLUMNS][32];
};

/* Formats one number cell; an unknown value (NAN) gets none. */
static void number(struct row *row, int col, const char *none,
                   const char *fmt, double v)
{
    if (isnan(v))
        row->cell[col] = none;
    else {
        snprintf(row->buf[col], sizeof row->buf[col], fmt, v);
        row->cell[col] = row->buf[col];
    }
}

static void count(struct row *row, int col, const char *none, long long v)
{
    if (v < 0)
        row->cell[col] = none;
    else {
        snprintf(row->buf[col], sizeof row->buf[col], "%lld", v);
        row->cell[col] = row->buf[col];
    }
}

static void fill_row(struct row *row, const struct cnn_run *r, bool csv)
{
    const char *none = csv ? "" : "-";
    row->cell[COL_RUN] = r->label;
    row->cell[COL_OPTIMIZER] = r->optimizer ? r->optimizer : none;
    number(row, COL_LR, none, "%g", r->lr);
    count(row, COL_STEPS, none, r->steps);
    number(row, COL_LOSS, none, csv ? "%.6g" : "%.4f", r->final_train_loss);
    number(row, COL_ACC, none, csv ? "%.6g" : "%.4f", r->best_test_acc);
    count(row, COL_EPOCH, none, r->best_epoch);
    number(row, COL_RMSE, none, csv ? "%.6g" : "%.4g", r->final_test_rmse);
    number(row, COL_R2, none, csv ? "%.6g" : "%.4f", r->final_test_r2);
    number(row, COL_TIME, none, csv ? "%.3f" : "%.1f", r->seconds);
    number(row, COL_SPEED, none, csv ? "%.1f" : "%.0f", r->images_per_s);
    if (csv || r->optimizer_state_bytes < 0) {
        count(row, COL_MEMORY, none, r->optimizer_state_bytes);
    } else {
        cli_format_bytes((double)r->optimizer_state_bytes,
                         row->buf[COL_MEMORY],
                         sizeof row->buf[COL_MEMORY]);
        row->cell[COL_MEMORY] = row->buf[COL_MEMORY];
    }
}

/* Characters, not bytes, so UTF-8 names line up. */
static int text_width(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static void print_cell(const char *s, int width, bool left, bool last)
{
    int pad = width - text_width(s);
    if (!left)
        printf("%*s", pad, "");
    fputs(s, stdout);
    if (left && !last)
        printf("%*s", pad, "");
    fputs(last ? "\n" : "  ", stdout);
}

/* Whether column c is printed: always, or for an optional one, when some
 * row has a value in it. */
static bool shown(const struct row *rows, int n_rows, int c)
{
    for (int i = 0; columns[c].optional && i < n_rows; i++)
        if (rows[i].cell[c] == rows[i].buf[c])
            return true;
    return !columns[c].optional;
}

/* The last printed column, where a line ends. */
static int last_shown(const bool show[N_COLUMNS])
{
    int last = 0;
    for (int c = 0; c < N_COLUMNS; c++)
        last = show[c] ? c : last;
    return last;
}

static void print_table(const struct row *rows, int n_rows,
                        const bool show[N_COLUMNS])
{
    int width[N_COLUMNS], last = last_shown(show);
    for (int c = 0; c < N_COLUMNS; c++) {
        width[c] = text_width(columns[c].title);
        for (int i = 0; i < n_rows; i++) {
            int w = text_width(rows[i].cell[c]);
            width[c] = w > width[c] ? w : width[c];
        }
    }
    for (int c = 0; c < N_COLUMNS; c++)
        if (show[c])
            print_cell(columns[c].title, width[c], columns[c].text,
                       c == last);
    for (int i = 0; i < n_rows; i++)
        for (int c = 0; c < N_COLUMNS; c++)
            if (show[c])
                print_cell(rows[i].cell[c], width[c], columns[c].text,
                           c == last);
}

/* A CSV cell, quoted when it holds a comma, a quote or a line break. */
static void print_csv_cell(const char *s, bool last)
{
    if (strpbrk(s, ",\"\r\n")) {
        putchar('"');
        for (; *s; s++) {
            if (*s == '"')
                putchar('"');
            putchar(*s);
        }
        putchar('"');
    } else {
        fputs(s, stdout);
    }
    putchar(last ? '\n' : ',');
}

static void print_csv(const struct row *rows, int n_rows,
                      const bool show[N_COLUMNS])
{
    int last = last_shown(show);
    for (int c = 0; c < N_COLUMNS; c++)
        if (show[c])
            print_csv_cell(columns[c].csv, c == last);
    for (int i = 0; i < n_rows; i++)
        for (int c = 0; c < N_COLUMNS; c++)
            if (show[c])
                print_csv_cell(rows[i].cell[c], c == last);
}

/* Returns -1 to go on, or the exit code to stop with. */
static int parse(int argc, char **argv, bool *csv)
{
    enum { OPT_CSV = 256 };
    static const struct option longopts[] = {
        {"csv", no_argument, NULL, OPT_CSV},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };

    *csv = false;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CSV:
            *csv = true;
            break;
        default:
            return cli_other_option(c, "compare", argv);
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "cnn-train compare: missing RUN_DIR\n");
        fprintf(stderr, "try 'cnn-train --help'\n");
        return 2;
    }
    return -1;
}

int cli_compare(int argc, char **argv)
{
    bool csv;
    int rc = parse(argc, argv, &csv);
    if (rc >= 0)
        return rc;

    int n = argc - optind;
    struct cnn_run *runs;
    struct cnn_error err = {0};
    enum cnn_status st = cnn_runs_load(&runs, argv + optind, n, &err);
    if (st != CNN_OK)
        return cli_report(&err);

    struct row *rows = calloc((size_t)n, sizeof *rows);
    if (rows) {
        bool show[N_COLUMNS];
        for (int i = 0; i < n; i++)
            fill_row(&rows[i], &runs[i], csv);
        for (int c = 0; c < N_COLUMNS; c++)
            show[c] = shown(rows, n, c);
        if (csv)
            print_csv(rows, n, show);
        else
            print_table(rows, n, show);
        if (fflush(stdout) != 0 || ferror(stdout))
            st = cnn_error_set(&err, CNN_ERR_IO, "cannot write to standard "
                               "output: %s", strerror(errno));
    } else {
        st = cnn_error_set(&err, CNN_ERR_NOMEM, "out of memory");
    }
    free(rows);
    cnn_runs_free(runs, n);
    return st == CNN_OK ? 0 : cli_report(&err);
}
