/*
 * cnn-train bench CONFIG: steady-state training speed on synthetic data
 * of the config's shapes. A step is forward, loss, backward and the
 * optimizer update, as in training; FLOPs count a step as three forward
 * passes. The machine's sgemm rate is measured in the same run, so the
 * achieved fraction of it is comparable across machines.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnn/loss.h"
#include "cnn/net.h"
#include "cnn/ops.h"
#include "cnn/optim.h"
#include "cnn/report.h"
#include "cnn/safetensors.h"
#include "cnn/train.h"

struct bench_opts {
    const char *config;
    const char *sets[CLI_MAX_SETS];
    int n_sets;
    long long steps, warmup, repeats, batch, threads;
    bool json, layers;
};

struct bench {
    struct cnn_config cfg;
    struct cnn_net net;
    struct cnn_optim optim;
    int *labels;
    double *fwd, *bwd;          /* [layers] seconds, with --layers */
    int threads;                /* OpenBLAS threads, set before the net */
};

static int parse(int argc, char **argv, struct bench_opts *o)
{
    enum { OPT_SET = 256, OPT_STEPS, OPT_WARMUP, OPT_REPEATS, OPT_BATCH,
           OPT_THREADS, OPT_JSON, OPT_LAYERS };
    static const struct option longopts[] = {
        {"set", required_argument, NULL, OPT_SET},
        {"steps", required_argument, NULL, OPT_STEPS},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"repeats", required_argument, NULL, OPT_REPEATS},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"json", no_argument, NULL, OPT_JSON},
        {"layers", no_argument, NULL, OPT_LAYERS},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct bench_opts){.steps = 30, .warmup = 3, .repeats = 3};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        long long *num = NULL, lo = 1;
        switch (c) {
        case OPT_SET:
            if (o->n_sets == CLI_MAX_SETS)
                return 2;
            o->sets[o->n_sets++] = optarg;
            continue;
        case OPT_STEPS: num = &o->steps; break;
        case OPT_WARMUP: num = &o->warmup; lo = 0; break;
        case OPT_REPEATS: num = &o->repeats; break;
        case OPT_BATCH: num = &o->batch; break;
        case OPT_THREADS: num = &o->threads; break;
        case OPT_JSON: o->json = true; continue;
        case OPT_LAYERS: o->layers = true; continue;
        default:
            return cli_other_option(c, "bench", argv);
        }
        char *end;
        errno = 0;
        *num = strtoll(optarg, &end, 10);
        if (errno || *end || end == optarg || *num < lo || *num > 1000000) {
            fprintf(stderr, "cnn-train bench: %s: expected a count, got "
                    "'%s'\n", longopts[c - OPT_SET].name, optarg);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "cnn-train bench: expected one CONFIG\n");
        return 2;
    }
    o->config = argv[optind];
    return -1;
}

static enum cnn_status setup(struct bench *b, const struct bench_opts *o,
                             struct cnn_error *err)
{
    struct cli_opts co = {.config = o->config, .n_sets = o->n_sets};
    memcpy(co.sets, o->sets, sizeof co.sets);
    struct cnn_shape in;
    enum cnn_status st = cli_load_config(&co, &b->cfg, err);
    if (st == CNN_OK)
        st = cnn_config_input_shape(&b->cfg, &in, err);
    /* Before the net: layers size their per-thread scratch by it. */
    if (st == CNN_OK)
        b->threads = cnn_blas_threads((int)(o->threads ? o->threads
                                            : b->cfg.training.threads));
    int batch = (int)(o->batch ? o->batch : b->cfg.training.batch_size);
    if (st == CNN_OK)
        st = cnn_net_build(&b->net, b->cfg.model_layers, in, batch, err);
    if (st != CNN_OK)
        return st;
    cnn_net_init_params(&b->net, b->cfg.seed);

    int n_groups;
    struct cnn_param_group *groups = cnn_net_param_groups(&b->net, &n_groups);
    st = groups ? cnn_optim_create(&b->optim, b->cfg.optim.node, groups,
                                   n_groups, b->net.n_params, err)
                : cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    free(groups);
    b->labels = malloc((size_t)batch * sizeof *b->labels);
    b->fwd = calloc((size_t)b->net.n_layers, sizeof *b->fwd);
    b->bwd = calloc((size_t)b->net.n_layers, sizeof *b->bwd);
    if (st == CNN_OK && (!b->labels || !b->fwd || !b->bwd))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    if (st != CNN_OK)
        return st;

    /* Synthetic batch: normal inputs, labels spread over the outputs. */
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 1, 0, 0);
    float *x = cnn_net_input(&b->net);
    for (size_t i = 0; i < (size_t)batch * cnn_shape_size(in); i++)
        x[i] = cnn_rng_normal(&rng);
    int k = (int)cnn_shape_size(b->net.out);
    for (int i = 0; i < batch; i++)
        b->labels[i] = (int)cnn_rng_below(&rng, (uint32_t)k);
    return CNN_OK;
}

/* One training step; with times, each layer's forward and backward
 * seconds are added to b->fwd and b->bwd. */
static void step(struct bench *b, bool times)
{
    struct cnn_net *net = &b->net;
    struct cnn_fwd_ctx ctx = {.train = true, .rng = &net->dropout_rng};
    int n = net->batch, L = net->n_layers;

    cnn_net_zero_grad(net);
    for (int i = 0; i < L; i++) {
        if (net->layers[i].skipped)         /* as cnn_net_forward */
            continue;
        double t = times ? cnn_now() : 0;
        net->layers[i].kind->forward(&net->layers[i], net->acts[i],
                                     net->acts[i + 1], n, &ctx);
        if (times)
            b->fwd[i] += cnn_now() - t;
    }
    cnn_loss(b->cfg.training.loss, net->acts[L], b->labels, n,
             (int)cnn_shape_size(net->out), net->dacts[L], NULL);
    for (int i = L - 1; i >= net->grad_from; i--) {
        if (net->layers[i].skipped)
            continue;
        double t = times ? cnn_now() : 0;
        net->layers[i].kind->backward(&net->layers[i], net->acts[i],
                                      net->acts[i + 1], net->dacts[i + 1],
                                      net->dacts[i], n);
        if (times)
            b->bwd[i] += cnn_now() - t;
    }
    cnn_optim_step(&b->optim, net->params, net->grads, 1e-4f);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The best of a few 1024^3 sgemms: the arithmetic ceiling here. */
static double sgemm_gflops(void)
{
    enum { N = 1024 };
    float *a = malloc(sizeof(float) * N * N), *c = malloc(sizeof(float) * N * N);
    double best = 0;
    if (a && c) {
        for (int i = 0; i < N * N; i++)
            a[i] = (float)(i % 7) * 0.1f;
        for (int r = 0; r < 4; r++) {
            double t = cnn_now();
            cnn_gemm(false, false, N, N, N, 1.0f, a, N, a, N, 0.0f, c, N);
            double g = 2.0 * N * N * N / (cnn_now() - t) / 1e9;
            best = g > best ? g : best;
        }
    }
    free(a);
    free(c);
    return best;
}

static void print_layers(const struct bench *b, long long steps)
{
    printf("\n%-3s %-18s %-15s %12s %12s %8s\n", "#", "layer", "kind",
           "forward ms", "backward ms", "share");
    double total = 0;
    for (int i = 0; i < b->net.n_layers; i++)
        total += b->fwd[i] + b->bwd[i];
    for (int i = 0; i < b->net.n_layers; i++) {
        const struct cnn_layer *l = &b->net.layers[i];
        if (l->skipped) {
            if (i > 0 && b->net.layers[i - 1].applies_relu)
                printf("%-3d %-18s %-15s   (done by %s)\n", i + 1, l->name,
                       l->kind->name, b->net.layers[i - 1].name);
            else
                printf("%-3d %-18s %-15s   (a view of its input)\n", i + 1,
                       l->name, l->kind->name);
            continue;
        }
        printf("%-3d %-18s %-15s %12.3f %12.3f %7.1f%%\n", i + 1, l->name,
               l->kind->name, b->fwd[i] / steps * 1e3,
               b->bwd[i] / steps * 1e3,
               100.0 * (b->fwd[i] + b->bwd[i]) / total);
    }
}

int cli_bench(int argc, char **argv)
{
    struct bench_opts o;
    int rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;

    struct bench b = {0};
    struct cnn_error err = {0};
    enum cnn_status st = setup(&b, &o, &err);
    if (st == CNN_OK) {
        int threads = b.threads;
        for (long long i = 0; i < o.warmup; i++)
            step(&b, false);
        double *ips = calloc((size_t)o.repeats, sizeof *ips);
        for (long long r = 0; ips && r < o.repeats; r++) {
            double t = cnn_now();
            for (long long i = 0; i < o.steps; i++)
                step(&b, o.layers);
            ips[r] = (double)o.steps * b.net.batch / (cnn_now() - t);
        }
        if (ips)
            qsort(ips, (size_t)o.repeats, sizeof *ips, by_value);
        double rate = ips ? ips[o.repeats / 2] : 0;
        double gflops = 3.0 * cnn_net_flops(&b.net) * rate / 1e9;
        double peak = sgemm_gflops();
        if (o.json) {
            fputs("{\"config\": ", stdout);
            cnn_json_string(stdout, o.config);
            printf(", \"batch\": %d, \"threads\": %d, "
                   "\"images_per_s\": %.1f, \"gflops\": %.2f, "
                   "\"peak_gflops\": %.2f, \"ratio\": %.3f}\n",
                   b.net.batch, threads, rate, gflops, peak,
                   peak > 0 ? gflops / peak : 0);
        }
        else
            printf("%s: batch %d, %d threads: %.1f images/s (median of "
                   "%lld x %lld steps), %.2f GFLOP/s; sgemm %.2f GFLOP/s; "
                   "ratio %.3f\n", o.config, b.net.batch, threads, rate,
                   o.repeats, o.steps, gflops, peak,
                   peak > 0 ? gflops / peak : 0);
        if (o.layers && !o.json)
            print_layers(&b, o.steps * o.repeats);
        free(ips);
    }
    cnn_optim_free(&b.optim);
    cnn_net_free(&b.net);
    cnn_config_free(&b.cfg);
    free(b.labels);
    free(b.fwd);
    free(b.bwd);
    return st == CNN_OK ? 0 : cli_report(&err);
}
