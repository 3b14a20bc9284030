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

/* Names from the data (CSV labels, folders, CIFAR-10's meta file) come
 * first; data.classes names numbered labels. */
static const char *class_name(const struct cnn_session *s, int k)
{
    if (k < s->test.n_class_names)
        return s->test.class_names[k];
    return k < s->cfg->data.n_class_names ? s->cfg->data.classes[k] : "";
}

static void print_test_set(const struct cnn_session *s, const char *weights)
{
    const struct cnn_data_config *d = &s->cfg->data;
    const struct cnn_split_config *t = &d->test;
    printf("weights:  %s\n", weights);
    if (cnn_split_given(t))
        printf("test set: %s (%lld examples)\n",
               t->images ? t->images : t->files[0], s->test.n);
    else
        printf("test set: %g of %s, held out (%lld examples)\n",
               d->test_split, d->train.images ? d->train.images
                                              : d->train.files[0],
               s->test.n);
}

static void print_regression(const struct cnn_session *s, const char *weights,
                             const struct cnn_eval *ev, bool csv)
{
    const struct cnn_regression_metrics *m = &ev->reg;
    if (csv) {
        printf("examples,loss,mse,rmse,mae,r2\n%lld,%.6f,%.6g,%.6g,%.6g,"
               "%.6f\n", s->test.n, ev->loss, m->mse, m->rmse, m->mae,
               m->r2);
        return;
    }
    print_test_set(s, weights);
    printf("loss %.4f (as trained on)\nmse  %.6g\nrmse %.6g\nmae  %.6g\n"
           "r2   %.4f\n", ev->loss, m->mse, m->rmse, m->mae, m->r2);
}

static void print_human(const struct cnn_session *s, const char *weights,
                        double loss, double acc, const long long *conf)
{
    int k = s->n_classes;
    print_test_set(s, weights);
    printf("loss %.4f  accuracy %.4f\n\n", loss, acc);
    printf("%-5s %-16s %8s %8s\n", "class", "name", "count", "accuracy");
    for (int i = 0; i < k; i++) {
        long long n = 0;
        for (int j = 0; j < k; j++)
            n += conf[(size_t)i * k + j];
        printf("%-5d %-16.16s %8lld %8.4f\n", i, class_name(s, i), n,
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
        const char *name = class_name(s, i);
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
    struct cnn_norm norm = {0};
    struct cnn_dataset classes = {0};
    struct cnn_error err = {0};
    long long *conf = NULL;
    bool opened = false;
    enum cnn_status st = cnn_st_open(&f, weights, &err);
    if (st == CNN_OK)
        st = load_config(&o, &f, &cfg, &err);
    if (st == CNN_OK)
        st = cnn_weights_transform(&f, &cfg, &norm, &classes, &err);
    if (st == CNN_OK) {
        cnn_blas_threads((int)(o.threads ? o.threads : cfg.training.threads));
        /* The session owns norm from here, opened or not. */
        st = cnn_session_open_eval(&s, &cfg, &norm, &classes, &err);
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
        struct cnn_eval ev;
        cnn_evaluate(&s, &s.test, &ev, conf);
        if (s.regression)
            print_regression(&s, weights, &ev, o.csv);
        else if (o.csv)
            print_csv(&s, ev.loss, ev.acc, conf);
        else
            print_human(&s, weights, ev.loss, ev.acc, conf);
    }
    free(conf);
    cnn_dataset_free(&classes);
    if (opened)
        cnn_session_close(&s);
    cnn_config_free(&cfg);
    cnn_st_close(&f);
    return st == CNN_OK ? 0 : cli_report(&err);
}
