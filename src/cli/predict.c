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
    int top;
};

/* "0.286,0.5" from the weights' metadata. */
static int parse_list(const char *text, float *v)
{
    int n = 0;
    for (const char *p = text; p && *p && n < CNN_MAX_CHANNELS; n++) {
        char *end;
        v[n] = strtof(p, &end);
        if (end == p)
            return 0;
        p = *end == ',' ? end + 1 : NULL;
    }
    return n;
}

static enum cnn_status setup(struct predictor *pr, const char *weights,
                             struct cnn_error *err)
{
    struct cnn_st_file f;
    enum cnn_status st = cnn_st_open(&f, weights, err);
    if (st != CNN_OK)
        return st;
    const char *text = cnn_st_meta(&f, "config");
    const char *mean = cnn_st_meta(&f, "normalize_mean");
    const char *std = cnn_st_meta(&f, "normalize_std");
    char origin[4300];
    snprintf(origin, sizeof origin, "%s (its config)", weights);
    if (!text || !mean || !std)
        st = cnn_error_at(err, CNN_ERR_DATA, weights, "lacks the config or "
                          "normalization metadata cnn-train writes");
    if (st == CNN_OK)
        st = cnn_config_load_string(&pr->cfg, text, origin, ".", err);
    if (st == CNN_OK)
        st = cnn_config_resolve(&pr->cfg, err);
    pr->norm.c = mean ? parse_list(mean, pr->norm.mean) : 0;
    if (st == CNN_OK && (pr->norm.c == 0 ||
                         parse_list(std, pr->norm.std) != pr->norm.c))
        st = cnn_error_at(err, CNN_ERR_DATA, weights, "malformed "
                          "normalization metadata");
    /* The input shape is the first tensor's business: take it from the
     * config's model.input, which saved configs of image models carry,
     * else from the training images' header. */
    struct cnn_shape in = {0};
    if (st == CNN_OK)
        st = cnn_config_input_shape(&pr->cfg, &in, err);
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
    if (k < pr->cfg.data.n_class_names)
        return pr->cfg.data.classes[k];
    snprintf(buf, cap, "class %d", k);
    return buf;
}

/* Classifies one c x h x w byte image and prints its line. */
static void classify(struct predictor *pr, const char *label,
                     const uint8_t *pixels)
{
    struct cnn_net *net = &pr->net;
    struct cnn_shape s = net->in;
    size_t hw = (size_t)s.h * s.w;
    float *x = cnn_net_input(net);
    for (int c = 0; c < s.c; c++)
        for (size_t j = 0; j < hw; j++)
            x[c * hw + j] = (pixels[c * hw + j] / 255.0f - pr->norm.mean[c]) /
                            pr->norm.std[c];
    const float *z = cnn_net_forward(net, 1, false);
    int k = (int)cnn_shape_size(net->out);

    /* Softmax, then the top classes by repeated selection. */
    double max = z[0], sum = 0;
    for (int j = 1; j < k; j++)
        max = z[j] > max ? z[j] : max;
    for (int j = 0; j < k; j++)
        sum += exp(z[j] - max);
    bool taken[1024] = {false};
    printf("%s:", label);
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

/* An IDX file of images, or a single PGM/PNG. */
static enum cnn_status predict_file(struct predictor *pr, const char *path,
                                    struct cnn_error *err)
{
    struct cnn_shape s = pr->net.in;
    struct cnn_image img;
    struct cnn_error idx_err = {0};
    struct cnn_dataset ds;
    if (cnn_idx_load_images(&ds, path, &idx_err) == CNN_OK) {
        enum cnn_status st = CNN_OK;
        if (ds.shape.c != s.c || ds.shape.h != s.h || ds.shape.w != s.w)
            st = cnn_error_at(err, CNN_ERR_DATA, path, "images are %dx%dx%d; "
                              "the model takes %dx%dx%d", ds.shape.c,
                              ds.shape.h, ds.shape.w, s.c, s.h, s.w);
        for (long long i = 0; st == CNN_OK && i < ds.n; i++) {
            char label[4300];
            snprintf(label, sizeof label, "%s[%lld]", path, i);
            classify(pr, label, ds.pixels + i * cnn_shape_size(s));
        }
        cnn_dataset_free(&ds);
        return st;
    }
    enum cnn_status st = cnn_image_read(path, s.c, &img, err);
    if (st != CNN_OK) {
        if (strstr(err->message, "neither"))
            cnn_error_hint(err, "as IDX: %s", idx_err.message);
        return st;
    }
    if (img.c != s.c || img.h != s.h || img.w != s.w)
        st = cnn_error_at(err, CNN_ERR_DATA, path, "image is %dx%dx%d; the "
                          "model takes %dx%dx%d", img.c, img.h, img.w, s.c,
                          s.h, s.w);
    else
        classify(pr, path, img.pixels);
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
    cnn_config_free(&pr.cfg);
    return st == CNN_OK ? 0 : cli_report(&err);
}
