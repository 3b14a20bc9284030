/*
 * cnn-train plot RUN_DIR... -o FILE.svg: one SVG chart of the runs'
 * training loss and test accuracy (see cnn_plot_svg). The chart is built
 * in memory and written through a temporary file renamed into place, so
 * FILE.svg is either the old file or the whole new one. Prints nothing
 * on success.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "cnn/runs.h"
#include "cnn/safetensors.h"

/* Returns -1 to go on, or the exit code to stop with. */
static int parse(int argc, char **argv, const char **output)
{
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };

    *output = NULL;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "o:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            *output = optarg;
            break;
        default:
            return cli_other_option(c, "plot", argv);
        }
    }
    if (!*output || !**output) {
        fprintf(stderr, "cnn-train plot: missing -o FILE.svg\n");
        fprintf(stderr, "try 'cnn-train --help'\n");
        return 2;
    }
    if (optind >= argc) {
        fprintf(stderr, "cnn-train plot: missing RUN_DIR\n");
        fprintf(stderr, "try 'cnn-train --help'\n");
        return 2;
    }
    return -1;
}

/* The SVG of the runs, into a malloc'd buffer the caller frees. */
static enum cnn_status render(const struct cnn_run *runs, int n, char **buf,
                              size_t *len, struct cnn_error *err)
{
    *buf = NULL;
    *len = 0;
    FILE *mem = open_memstream(buf, len);
    if (!mem)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    enum cnn_status st = cnn_plot_svg(mem, runs, n, err);
    if (fclose(mem) != 0 && st == CNN_OK)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    return st;
}

int cli_plot(int argc, char **argv)
{
    const char *output;
    int rc = parse(argc, argv, &output);
    if (rc >= 0)
        return rc;

    int n = argc - optind;
    struct cnn_run *runs;
    struct cnn_error err = {0};
    char *svg = NULL;
    size_t len;
    enum cnn_status st = cnn_runs_load(&runs, argv + optind, n, &err);
    if (st != CNN_OK)
        return cli_report(&err);

    st = render(runs, n, &svg, &len, &err);
    if (st == CNN_OK)
        st = cnn_write_atomic(output, svg, len, &err);
    free(svg);
    cnn_runs_free(runs, n);
    return st == CNN_OK ? 0 : cli_report(&err);
}
