/*
 * cnn-train eval RUN_DIR|WEIGHTS: evaluates saved weights on the test
 * split of the config they carry (or of --config), printing loss,
 * accuracy, per-class accuracy and the confusion matrix; --csv prints one
 * table for scripts. A run directory means its model.safetensors.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cnn/ops.h"
#include "cnn/safetensors.h"
#include "cnn/train.h"

struct eval_opts {
    const char *target;
    const char *config;
    const char *sets[CLI_MAX_SETS];
    int n_sets;
    long long threads;
    bool csv;
};

static int parse(int argc, char **argv, struct eval_opts *o)
{
    enum { OPT_CONFIG = 256, OPT_SET, OPT_THREADS, OPT_CSV };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, OPT_CONFIG},
        {"set", required_argument, NULL, OPT_SET},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"csv", no_argument, NULL, OPT_CSV},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case OPT_CONFIG:
            o->config = optarg;
            break;
        case OPT_SET:
            if (o->n_sets == CLI_MAX_SETS)
                return 2;
            o->sets[o->n_sets++] = optarg;
            break;
        case OPT_THREADS:
            errno = 0;
            o->threads = strtoll(optarg, &end, 10);
            if (errno || *end || o->threads < 1 || o->threads > 1024) {
                fprintf(stderr, "cnn-train eval: --threads: expected 1 to "
                        "1024, got '%s'\n", optarg);
                return 2;
            }
            break;
        case OPT_CSV:
            o->csv = true;
            break;
        default:
            return cli_other_option(c, "eval", argv);
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "cnn-train eval: expected one RUN_DIR or WEIGHTS "
                "file\n");
        return 2;
    }
    o->target = argv[optind];
    return -1;
}

/* "0.286,0.5" -> values; false unless count matches. */
static bool parse_list(const char *text, float *v, int *n)
{
    *n = 0;
    for (const char *p = text; *p && *n < CNN_MAX_CHANNELS;) {
        char *end;
        v[(*n)++] = strtof(p, &end);
        if (end == p)
            return false;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return false;
    }
    return *n > 0;
}

/* The normalization the weights were trained with: from their metadata,
 * else from the config when it is explicit. */
static enum cnn_status find_norm(const struct cnn_st_file *f,
                                 const struct cnn_config *cfg,
                                 struct cnn_norm *norm, struct cnn_error *err)
{
    const char *mean = cnn_st_meta(f, "normalize_mean");
    const char *std = cnn_st_meta(f, "normalize_std");
    int nm, ns;
    memset(norm, 0, sizeof *norm);
    if (mean && std) {
        if (!parse_list(mean, norm->mean, &nm) ||
            !parse_list(std, norm->std, &ns) || nm != ns)
            return cnn_error_at(err, CNN_ERR_DATA, f->path, "malformed "
                                "normalize_mean/normalize_std metadata");
        norm->c = nm;
        return CNN_OK;
    }
    if (cfg->data.normalize_auto)
        return cnn_error_at(err, CNN_ERR_DATA, f->path, "no normalization "
                            "in the metadata, and the config computes it "
                            "from the training set");
    norm->c = cfg->data.n_mean ? cfg->data.n_mean : 1;
    for (int c = 0; c < norm->c; c++) {
        norm->mean[c] = cfg->data.n_mean ? cfg->data.mean[c] : 0.0f;
        norm->std[c] = cfg->data.n_std ? cfg->data.std[c] : 1.0f;
    }
    return CNN_OK;
}

static enum cnn_status load_config(const struct eval_opts *o,
                                   const struct cnn_st_file *f,
                                   struct cnn_config *cfg,
                                   struct cnn_error *err)
{
    struct cli_opts co = {.config = o->config, .n_sets = o->n_sets};
    memcpy(co.sets, o->sets, sizeof co.sets);
    if (o->config)
        return cli_load_config(&co, cfg, err);

    const char *text = cnn_st_meta(f, "config");
    if (!text || !*text)
        return cnn_error_at(err, CNN_ERR_DATA, f->path, "carries no config");
    char origin[4300];
    snprintf(origin, sizeof origin, "%s (its config)", f->path);
    enum cnn_status st = cnn_config_load_string(cfg, text, origin, ".", err);
    for (int i = 0; st == CNN_OK && i < o->n_sets; i++)
        st = cnn_config_set(cfg, o->sets[i], err);
    return st == CNN_OK ? cnn_config_resolve(cfg, err) : st;
}

static const char *class_name(const struct cnn_config *cfg, int k)
{
    return k < cfg->data.n_class_names ? cfg->data.classes[k] : "";
}

static void print_human(const struct cnn_session *s, const char *weights,
                        double loss, double acc, const long long *conf)
{
    int k = s->n_classes;
    printf("weights:  %s\ntest set: %s (%lld examples)\n", weights,
           s->cfg->data.test.images, s->test.n);
    printf("loss %.4f  accuracy %.4f\n\n", loss, acc);
    printf("%-5s %-16s %8s %8s\n", "class", "name", "count", "accuracy");
    for (int i = 0; i < k; i++) {
        long long n = 0;
        for (int j = 0; j < k; j++)
            n += conf[(size_t)i * k + j];
        printf("%-5d %-16.16s %8lld %8.4f\n", i, class_name(s->cfg, i), n,
               n ? (double)conf[(size_t)i * k + i] / n : 0.0);
    }
    printf("\nconfusion matrix (rows: true class, columns: predicted)\n"
           "%5s", "");
    for (int j = 0; j < k; j++)
        printf(" %5d", j);
    printf("\n");
    for (int i = 0; i < k; i++) {
        printf("%5d", i);
        for (int j = 0; j < k; j++)
            printf(" %5lld", conf[(size_t)i * k + j]);
        printf("\n");
    }
}

static void print_csv(const struct cnn_session *s, double loss, double acc,
                      const long long *conf)
{
    int k = s->n_classes;
    printf("class,name,count,accuracy,loss");
    for (int j = 0; j < k; j++)
        printf(",pred_%d", j);
    printf("\n");
    for (int i = 0; i < k; i++) {
        long long n = 0;
        for (int j = 0; j < k; j++)
            n += conf[(size_t)i * k + j];
        /* A name with a comma or quote is quoted, quotes doubled. */
        const char *name = class_name(s->cfg, i);
        printf("%d,", i);
        if (strpbrk(name, ",\"\n")) {
            putchar('"');
            for (const char *p = name; *p; p++)
                printf(*p == '"' ? "\"\"" : "%c", *p);
            putchar('"');
        } else {
            fputs(name, stdout);
        }
        printf(",%lld,%.6f,", n,
               n ? (double)conf[(size_t)i * k + i] / n : 0.0);
        for (int j = 0; j < k; j++)
            printf(",%lld", conf[(size_t)i * k + j]);
        printf("\n");
    }
    printf("all,,%lld,%.6f,%.6f", s->test.n, acc, loss);
    for (int j = 0; j < k; j++)
        printf(",");
    printf("\n");
}

int cli_eval(int argc, char **argv)
{
    struct eval_opts o;
    int rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;

    char weights[4200];
    struct stat sb;
    if (stat(o.target, &sb) == 0 && S_ISDIR(sb.st_mode))
        snprintf(weights, sizeof weights, "%s/model.safetensors", o.target);
    else
        snprintf(weights, sizeof weights, "%s", o.target);

    struct cnn_st_file f;
    struct cnn_config cfg = {0};
    struct cnn_session s = {0};
    struct cnn_norm norm;
    struct cnn_error err = {0};
    long long *conf = NULL;
    bool opened = false;
    enum cnn_status st = cnn_st_open(&f, weights, &err);
    if (st == CNN_OK)
        st = load_config(&o, &f, &cfg, &err);
    if (st == CNN_OK)
        st = find_norm(&f, &cfg, &norm, &err);
    if (st == CNN_OK) {
        cnn_blas_threads((int)(o.threads ? o.threads : cfg.training.threads));
        st = cnn_session_open_eval(&s, &cfg, &norm, &err);
        opened = st == CNN_OK;
    }
    if (st == CNN_OK)
        st = cnn_st_load_net(&f, &s.net, true, &err);
    if (st == CNN_OK) {
        conf = calloc((size_t)s.n_classes * s.n_classes, sizeof *conf);
        if (!conf)
            st = cnn_error_set(&err, CNN_ERR_NOMEM, "out of memory");
    }
    if (st == CNN_OK) {
        double loss, acc;
        cnn_evaluate(&s, &s.test, &loss, &acc, conf);
        if (o.csv)
            print_csv(&s, loss, acc, conf);
        else
            print_human(&s, weights, loss, acc, conf);
    }
    free(conf);
    if (opened)
        cnn_session_close(&s);
    cnn_config_free(&cfg);
    cnn_st_close(&f);
    return st == CNN_OK ? 0 : cli_report(&err);
}
