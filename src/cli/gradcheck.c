/*
 * cnn-train gradcheck CONFIG: builds the config's model for a batch of
 * --samples random examples and compares its backward pass with finite
 * differences (see cnn/gradcheck.h), printing one row per layer with
 * trained tensors on stdout. Exit 0 when every layer is within the
 * tolerance, 1 when one is not, 2 on misuse or a bad config. Reads no
 * data beyond the image header when model.input is absent.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnn/gradcheck.h"
#include "cnn/net.h"
#include "cnn/train.h"

struct check_opts {
    struct cli_opts cli;        /* config, --set, --seed */
    long long samples;
    struct cnn_gradcheck_opts gc;
};

static bool parse_number(const char *name, const char *s, double lo,
                         double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "cnn-train gradcheck: --%s: expected a number from "
                "%g to %g, got '%s'\n", name, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

/* Returns -1 to go on, or the exit code to stop with. */
static int parse(int argc, char **argv, struct check_opts *o)
{
    enum { OPT_SET = 256, OPT_SEED, OPT_SAMPLES, OPT_ENTRIES, OPT_TOL,
           OPT_ENTRY_TOL };
    static const struct option longopts[] = {
        {"set", required_argument, NULL, OPT_SET},
        {"seed", required_argument, NULL, OPT_SEED},
        {"samples", required_argument, NULL, OPT_SAMPLES},
        {"entries", required_argument, NULL, OPT_ENTRIES},
        {"tolerance", required_argument, NULL, OPT_TOL},
        {"entry-tolerance", required_argument, NULL, OPT_ENTRY_TOL},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->samples = 4;
    o->gc = cnn_gradcheck_defaults();
    optind = 1;
    opterr = 0;
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_SET:
            if (o->cli.n_sets == CLI_MAX_SETS)
                return 2;
            o->cli.sets[o->cli.n_sets++] = optarg;
            break;
        case OPT_SEED:
            if (!parse_number("seed", optarg, 0, 1e15, &v) || v != floor(v))
                return 2;
            o->cli.seed = optarg;
            break;
        case OPT_SAMPLES:
            if (!parse_number("samples", optarg, 1, 4096, &v))
                return 2;
            o->samples = (long long)v;
            break;
        case OPT_ENTRIES:
            if (!parse_number("entries", optarg, 1, 100000, &v))
                return 2;
            o->gc.entries = (int)v;
            break;
        case OPT_TOL:
            if (!parse_number("tolerance", optarg, 0, 1, &v))
                return 2;
            o->gc.tolerance = v;
            break;
        case OPT_ENTRY_TOL:
            if (!parse_number("entry-tolerance", optarg, 0, 1, &v))
                return 2;
            o->gc.entry_tolerance = v;
            break;
        default:
            return cli_other_option(c, "gradcheck", argv);
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "cnn-train gradcheck: expected one CONFIG\n");
        fprintf(stderr, "try 'cnn-train --help'\n");
        return 2;
    }
    o->cli.config = argv[optind];
    return -1;
}

/* Whether any layer, nested ones included, is a dropout. */
static bool has_dropout(struct cnn_net *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i];
        if (strcmp(l->kind->name, "dropout") == 0)
            return true;
        struct cnn_net *subs[4];
        const char *names[4];
        int n = l->kind->children ? l->kind->children(l, subs, names, 4) : 0;
        for (int k = 0; k < n; k++)
            if (has_dropout(subs[k]))
                return true;
    }
    return false;
}

/* Every direction of the layer was below what float32 resolves: the
 * check could neither pass nor fail it. */
static bool unresolved(const struct cnn_gradcheck_layer *l)
{
    return l->unresolved_directions == l->tensors;
}

/* The widest layer name, so the table is as narrow as it can be. */
static int name_width(const struct cnn_gradcheck_result *r)
{
    int w = 5;
    for (int i = 0; i < r->n_layers; i++) {
        int len = (int)strlen(r->layers[i].name);
        w = len > w ? len : w;
    }
    return w;
}

static void print_rows(const struct cnn_gradcheck_result *r)
{
    int w = name_width(r);
    printf("%-3s %-*s %9s %11s %-14s %10s %10s %9s  %s\n", "#", w, "layer",
           "direction", "worst_entry", "at", "analytic", "numeric",
           "below_res", "result");
    for (int i = 0; i < r->n_layers; i++) {
        const struct cnn_gradcheck_layer *l = &r->layers[i];
        char at[48] = "-", below[32];
        if (l->worst_tensor)
            snprintf(at, sizeof at, "%s[%zu]", l->worst_tensor,
                     l->worst_index);
        /* What float32 could not resolve: a pass says nothing there. */
        snprintf(below, sizeof below, "%d/%d", l->unresolved, l->entries);
        printf("%-3d %-*s %9.2e %11.2e %-14s %10.3e %10.3e %9s  %s", i + 1,
               w, l->name, l->worst_direction, l->worst_entry, at,
               l->worst_analytic, l->worst_numeric, below,
               !l->pass ? "FAIL" : unresolved(l) ? "unresolved" : "ok");
        if (l->unresolved_directions && !unresolved(l))
            printf(" (%d of %d directions below resolution)",
                   l->unresolved_directions, l->tensors);
        if (l->unsettled)
            printf(" (%d entries unsettled)", l->unsettled);
        putchar('\n');
    }
}

static void print_result(const struct cnn_config *cfg, struct cnn_net *net,
                         const struct check_opts *o,
                         const struct cnn_gradcheck_result *r)
{
    printf("gradcheck %s: %d random examples, training mode, loss %.4f\n",
           cfg->name, r->n_examples, r->loss);
    if (has_dropout(net))
        printf("dropout: the same masks in every evaluation\n");
    printf("relative errors along each tensor's gradient (tolerance %g)\n"
           "and at up to %d entries per tensor (tolerance %g)\n\n",
           o->gc.tolerance, o->gc.entries, o->gc.entry_tolerance);
    print_rows(r);

    int failed = 0, below = 0;
    for (int i = 0; i < r->n_layers; i++) {
        failed += !r->layers[i].pass;
        below += r->layers[i].pass && unresolved(&r->layers[i]);
    }
    if (failed > 0)
        printf("\n%d of %d layers outside tolerance", failed, r->n_layers);
    else if (below < r->n_layers)
        printf("\n%d layers within tolerance", r->n_layers - below);
    else
        printf("\nno layer checked");
    if (below > 0)
        printf("; %d with gradients below what float32 resolves, not "
               "checked", below);
    putchar('\n');
}

int cli_gradcheck(int argc, char **argv)
{
    struct check_opts o;
    int rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;

    struct cnn_config cfg;
    struct cnn_net net = {0};
    struct cnn_shape in;
    struct cnn_gradcheck_result res = {0};
    struct cnn_error err = {0};
    enum cnn_status st = cli_load_config(&o.cli, &cfg, &err);
    if (st == CNN_OK)
        st = cnn_config_input_shape(&cfg, &in, &err);
    if (st == CNN_OK)
        st = cnn_net_build(&net, cfg.model_layers, in, (int)o.samples, &err);
    if (st == CNN_OK) {
        cnn_net_init_params(&net, cfg.seed);
        o.gc.seed = cfg.seed;
        st = cnn_gradcheck_run(&net, cfg.training.loss, &o.gc, &res, &err);
    }
    if (st == CNN_OK) {
        print_result(&cfg, &net, &o, &res);
        rc = res.pass ? 0 : 1;
    }
    cnn_gradcheck_free(&res);
    cnn_net_free(&net);
    cnn_config_free(&cfg);
    return st == CNN_OK ? rc : cli_report(&err);
}
