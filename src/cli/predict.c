/*
 * cnn-train predict WEIGHTS FILE...: classifies images with saved
 * weights and prints the top classes with their probabilities. A FILE
 * is an IDX image file (every image in it), a PGM or a PNG; its size
 * must be the model's input size.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cnn/data.h"
#include "cnn/net.h"
#include "cnn/safetensors.h"
#include "cnn/train.h"

struct predictor {
    struct cnn_config cfg;
    struct cnn_net net;
    struct cnn_norm norm;
    struct cnn_dataset classes;     /* names only */
    int top;
};

/* The model's input shape: saved beside the weights by this version,
 * else from the config (model.input or the training images' header). */
static enum cnn_status input_shape(const struct cnn_st_file *f,
                                   const struct cnn_config *cfg,
                                   struct cnn_shape *in, struct cnn_error *err)
{
    const char *saved = cnn_st_meta(f, "input_shape");
    if (saved && sscanf(saved, "%d,%d,%d", &in->c, &in->h, &in->w) == 3 &&
        in->c > 0 && in->h > 0 && in->w > 0)
        return CNN_OK;
    return cnn_config_input_shape(cfg, in, err);
}

static enum cnn_status setup(struct predictor *pr, const char *weights,
                             struct cnn_error *err)
{
    struct cnn_st_file f;
    enum cnn_status st = cnn_st_open(&f, weights, err);
    if (st != CNN_OK)
        return st;
    const char *text = cnn_st_meta(&f, "config");
    char origin[4300];
    snprintf(origin, sizeof origin, "%s (its config)", weights);
    if (!text)
        st = cnn_error_at(err, CNN_ERR_DATA, weights, "lacks the config "
                          "metadata cnn-train writes");
    if (st == CNN_OK)
        st = cnn_config_load_string(&pr->cfg, text, origin, ".", err);
    if (st == CNN_OK)
        st = cnn_config_resolve(&pr->cfg, err);
    if (st == CNN_OK)
        st = cnn_weights_transform(&f, &pr->cfg, &pr->norm, &pr->classes,
                                   err);
    struct cnn_shape in = {0};
    if (st == CNN_OK)
        st = input_shape(&f, &pr->cfg, &in, err);
    if (st == CNN_OK)
        st = cnn_net_build(&pr->net, pr->cfg.model_layers, in, 1, err);
    if (st == CNN_OK)
        st = cnn_st_load_net(&f, &pr->net, true, err);
    cnn_st_close(&f);
    return st;
}

static const char *class_name(const struct predictor *pr, int k, char *buf,
                              size_t cap)
{
    if (k < pr->classes.n_class_names)
        return pr->classes.class_names[k];
    if (k < pr->cfg.data.n_class_names)
        return pr->cfg.data.classes[k];
    snprintf(buf, cap, "class %d", k);
    return buf;
}

/* Runs example i of ds through the model and prints its line: the top
 * classes with probabilities, or the predicted values. */
static void predict_one(struct predictor *pr, const char *label,
                        const struct cnn_dataset *ds, long long i)
{
    struct cnn_net *net = &pr->net;
    cnn_norm_apply(&pr->norm, ds, i, cnn_net_input(net));
    const float *z = cnn_net_forward(net, 1, false);
    int k = (int)cnn_shape_size(net->out);
    printf("%s:", label);

    if (pr->cfg.data.task == CNN_TASK_REGRESS) {
        float y[256];
        int m = k < 256 ? k : 256;
        memcpy(y, z, (size_t)m * sizeof *y);
        cnn_norm_unscale_targets(&pr->norm, y, m);
        for (int j = 0; j < m; j++)
            printf("%s %.6g", j ? "," : "", y[j]);
        printf("\n");
        return;
    }

    /* Softmax, then the top classes by repeated selection. */
    double max = z[0], sum = 0;
    for (int j = 1; j < k; j++)
        max = z[j] > max ? z[j] : max;
    for (int j = 0; j < k; j++)
        sum += exp(z[j] - max);
    bool taken[1024] = {false};
    for (int t = 0; t < pr->top && t < k && t < 1024; t++) {
        int best = -1;
        for (int j = 0; j < k && j < 1024; j++)
            if (!taken[j] && (best < 0 || z[j] > z[best]))
                best = j;
        if (best < 0)
            break;
        taken[best] = true;
        char buf[32];
        printf("%s %s %.4f", t ? "," : "", class_name(pr, best, buf,
                                                     sizeof buf),
               exp(z[best] - max) / sum);
    }
    printf("\n");
}

/* Every example of ds, labelled path[i], or path alone when !indexed. */
static enum cnn_status predict_all(struct predictor *pr, const char *path,
                                   const struct cnn_dataset *ds, bool indexed,
                                   struct cnn_error *err)
{
    struct cnn_shape s = pr->net.in;
    if (cnn_shape_size(ds->shape) != cnn_shape_size(s))
        return cnn_error_at(err, CNN_ERR_DATA, path, "examples are %dx%dx%d; "
                            "the model takes %dx%dx%d", ds->shape.c,
                            ds->shape.h, ds->shape.w, s.c, s.h, s.w);
    /* The examples as the model sees them (an [N, 784] IDX file for a
     * 1x28x28 model): the normalization goes by the model's channels. */
    struct cnn_dataset view = *ds;
    view.shape = s;
    for (long long i = 0; i < ds->n; i++) {
        char label[4300];
        snprintf(label, sizeof label, "%s[%lld]", path, i);
        predict_one(pr, indexed ? label : path, &view, i);
    }
    return CNN_OK;
}

/* Rows of a CSV laid out as the training file: first as features only
 * (no target column), else with the target column(s) too. */
static enum cnn_status predict_csv(struct predictor *pr, const char *path,
                                   struct cnn_error *err)
{
    struct cnn_config cfg = pr->cfg;        /* a shallow copy, changed */
    struct cnn_split_config split = {.files = {(char *)path}, .n_files = 1};
    struct cnn_dataset ds;
    size_t want = cnn_shape_size(pr->net.in);
    cfg.data.csv.n_target = 0;
    cfg.data.task = CNN_TASK_CLASSIFY;
    struct cnn_error first = {0};
    enum cnn_status st = cnn_csv_load(&ds, &cfg, &split, NULL, &first);
    if (st == CNN_OK && cnn_shape_size(ds.shape) == want) {
        ds.shape = pr->net.in;
        st = predict_all(pr, path, &ds, true, err);
        cnn_dataset_free(&ds);
        return st;
    }
    if (st == CNN_OK)
        cnn_dataset_free(&ds);
    st = cnn_csv_load(&ds, &pr->cfg, &split, &pr->classes, err);
    if (st != CNN_OK)
        return st;
    if (cnn_shape_size(ds.shape) == want)
        ds.shape = pr->net.in;
    st = predict_all(pr, path, &ds, true, err);
    cnn_dataset_free(&ds);
    return st;
}

/* An IDX file of images, a CSV file (for a model trained on CSV), or a
 * single PGM/PNG/JPEG, resized to the model's input. */
static enum cnn_status predict_file(struct predictor *pr, const char *path,
                                    struct cnn_error *err)
{
    struct cnn_shape s = pr->net.in;
    struct cnn_error idx_err = {0};
    struct cnn_dataset ds;
    if (pr->cfg.data.format == CNN_FORMAT_CSV)
        return predict_csv(pr, path, err);
    if (cnn_idx_load_images(&ds, path, &idx_err) == CNN_OK) {
        enum cnn_status st = predict_all(pr, path, &ds, true, err);
        cnn_dataset_free(&ds);
        return st;
    }
    struct cnn_image img;
    enum cnn_status st = cnn_image_read(path, s.c, &img, err);
    if (st != CNN_OK) {
        if (strstr(err->message, "neither"))
            cnn_error_hint(err, "as IDX: %s", idx_err.message);
        return st;
    }
    if (img.c != s.c)
        st = cnn_error_at(err, CNN_ERR_DATA, path, "image has %d channels; "
                          "the model takes %d", img.c, s.c);
    if (st == CNN_OK)
        st = cnn_image_resize(&img, s.h, s.w, err);
    if (st == CNN_OK) {
        struct cnn_dataset one = {.n = 1, .shape = s, .pixels = img.pixels};
        st = predict_all(pr, path, &one, false, err);
    }
    cnn_image_free(&img);
    return st;
}

int cli_predict(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"top", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct predictor pr = {.top = 3};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        char *end;
        if (c != 't')
            return cli_other_option(c, "predict", argv);
        errno = 0;
        long v = strtol(optarg, &end, 10);
        if (errno || *end || end == optarg || v < 1 || v > 1000) {
            fprintf(stderr, "cnn-train predict: --top: expected 1 to 1000, "
                    "got '%s'\n", optarg);
            return 2;
        }
        pr.top = (int)v;
    }
    if (argc - optind < 2) {
        fprintf(stderr, "cnn-train predict: expected WEIGHTS and at least "
                "one FILE\n");
        return 2;
    }

    char weights[4200];
    struct stat sb;
    const char *target = argv[optind];
    if (stat(target, &sb) == 0 && S_ISDIR(sb.st_mode))
        snprintf(weights, sizeof weights, "%s/model.safetensors", target);
    else
        snprintf(weights, sizeof weights, "%s", target);

    struct cnn_error err = {0};
    enum cnn_status st = setup(&pr, weights, &err);
    for (int i = optind + 1; st == CNN_OK && i < argc; i++)
        st = predict_file(&pr, argv[i], &err);
    cnn_net_free(&pr.net);
    cnn_norm_free(&pr.norm);
    cnn_dataset_free(&pr.classes);
    cnn_config_free(&pr.cfg);
    return st == CNN_OK ? 0 : cli_report(&err);
}
