/*
 * cnn-train plot RUN_DIR... -o FILE.svg: one SVG chart of the runs'
 * training loss and test accuracy (see cnn_plot_svg); with --grads, of
 * one run's gradient norm per layer from its grad_stats.csv (see
 * cnn_plot_grads_svg), by default into RUN_DIR/grad_stats.svg. The
 * chart is built in memory and written through a temporary file renamed
 * into place, so FILE.svg is either the old file or the whole new one.
 * Prints nothing on success.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "cnn/runs.h"
#include "cnn/safetensors.h"

static int usage_error(const char *message)
{
    fprintf(stderr, "cnn-train plot: %s\n", message);
    fprintf(stderr, "try 'cnn-train --help'\n");
    return 2;
}

/* Returns -1 to go on, or the exit code to stop with. */
static int parse(int argc, char **argv, const char **output, bool *grads)
{
    enum { OPT_GRADS = 256 };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"grads", no_argument, NULL, OPT_GRADS},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };

    *output = NULL;
    *grads = false;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "o:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            *output = optarg;
            break;
        case OPT_GRADS:
            *grads = true;
            break;
        default:
            return cli_other_option(c, "plot", argv);
        }
    }
    if (*output && !**output)
        return usage_error("-o: empty file name");
    if (!*output && !*grads)
        return usage_error("missing -o FILE.svg");
    if (optind >= argc)
        return usage_error("missing RUN_DIR");
    if (*grads && optind + 1 != argc)
        return usage_error("--grads draws one RUN_DIR");
    return -1;
}

/* The SVG of the runs, or with grads of the curves, into a malloc'd
 * buffer the caller frees. */
static enum cnn_status render(const struct cnn_run *runs, int n,
                              const struct cnn_grad_curves *grads, char **buf,
                              size_t *len, struct cnn_error *err)
{
    *buf = NULL;
    *len = 0;
    FILE *mem = open_memstream(buf, len);
    if (!mem)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    enum cnn_status st = grads ? cnn_plot_grads_svg(mem, grads, err)
                               : cnn_plot_svg(mem, runs, n, err);
    if (fclose(mem) != 0 && st == CNN_OK)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    return st;
}

/* plot --grads RUN_DIR [-o FILE.svg] */
static int plot_grads(const char *dir, const char *output)
{
    char fallback[4200];
    if (!output) {
        snprintf(fallback, sizeof fallback, "%s/grad_stats.svg", dir);
        output = fallback;
    }
    struct cnn_grad_curves g;
    struct cnn_error err = {0};
    char *svg = NULL;
    size_t len;
    enum cnn_status st = cnn_grad_curves_load(&g, dir, &err);
    if (st == CNN_OK)
        st = render(NULL, 0, &g, &svg, &len, &err);
    if (st == CNN_OK)
        st = cnn_write_atomic(output, svg, len, &err);
    free(svg);
    cnn_grad_curves_free(&g);
    return st == CNN_OK ? 0 : cli_report(&err);
}

int cli_plot(int argc, char **argv)
{
    const char *output;
    bool grads;
    int rc = parse(argc, argv, &output, &grads);
    if (rc >= 0)
        return rc;
    if (grads)
        return plot_grads(argv[optind], output);

    int n = argc - optind;
    struct cnn_run *runs;
    struct cnn_error err = {0};
    char *svg = NULL;
    size_t len;
    enum cnn_status st = cnn_runs_load(&runs, argv + optind, n, &err);
    if (st != CNN_OK)
        return cli_report(&err);

    st = render(runs, n, NULL, &svg, &len, &err);
    if (st == CNN_OK)
        st = cnn_write_atomic(output, svg, len, &err);
    free(svg);
    cnn_runs_free(runs, n);
    return st == CNN_OK ? 0 : cli_report(&err);
}
