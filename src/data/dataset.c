/*
 * Datasets whatever their format: loading by data.format, held-out
 * splits, and freeing.
 */
#include "cnn/data.h"

#include <stdlib.h>
#include <string.h>

#include "cnn/rng.h"

enum cnn_status cnn_data_load(struct cnn_dataset *ds,
                              const struct cnn_config *cfg,
                              const struct cnn_split_config *split,
                              const struct cnn_dataset *train,
                              long long limit, struct cnn_error *err)
{
    enum cnn_status st;
    memset(ds, 0, sizeof *ds);
    switch (cfg->data.format) {
    case CNN_FORMAT_CSV:
        st = cnn_csv_load(ds, cfg, split, train, err);
        break;
    case CNN_FORMAT_CIFAR10:
        st = cnn_cifar10_load(ds, split->files, split->n_files, err);
        break;
    case CNN_FORMAT_FOLDER:
        if (cfg->input_c <= 0)
            return cnn_error_set(err, CNN_ERR_CONFIG, "data.format folder "
                                 "needs model.input: [channels, height, "
                                 "width], the size images are converted to");
        st = cnn_folder_load(ds, split->files[0],
                             (struct cnn_shape){cfg->input_c, cfg->input_h,
                                                cfg->input_w}, train, err);
        break;
    default:
        return cnn_idx_load(ds, split->images, split->labels, limit, err);
    }
    if (st == CNN_OK && limit > 0 && limit < ds->n)
        ds->n = limit;      /* the arrays keep their size; n bounds them */
    if (st != CNN_OK)
        cnn_dataset_free(ds);
    return st;
}

enum cnn_status cnn_data_peek_shape(const struct cnn_config *cfg,
                                    struct cnn_shape *shape,
                                    struct cnn_error *err)
{
    switch (cfg->data.format) {
    case CNN_FORMAT_IDX:
        return cnn_idx_peek_shape(cfg->data.train.images, shape, err);
    case CNN_FORMAT_CIFAR10:
        *shape = (struct cnn_shape){3, 32, 32};
        return CNN_OK;
    case CNN_FORMAT_CSV:
        if (cfg->data.csv.shape[0] > 0) {
            *shape = (struct cnn_shape){cfg->data.csv.shape[0],
                                        cfg->data.csv.shape[1],
                                        cfg->data.csv.shape[2]};
            return CNN_OK;
        }
        break;
    default:
        break;
    }
    return cnn_error_set(err, CNN_ERR_CONFIG, "the input shape of this "
                         "model is not known without reading the data; "
                         "give model.input: [channels, height, width]");
}

/* Copies the examples rows[0..n) of src into dst (metadata shared by
 * copy: class names are duplicated). */
static enum cnn_status take(struct cnn_dataset *dst,
                            const struct cnn_dataset *src,
                            const uint32_t *rows, long long n,
                            struct cnn_error *err)
{
    size_t size = cnn_shape_size(src->shape);
    int k = src->n_targets;
    memset(dst, 0, sizeof *dst);
    dst->n = n;
    dst->shape = src->shape;
    dst->n_targets = k;
    dst->n_classes = src->n_classes;
    bool ok = true;
    if (src->pixels)
        ok &= !!(dst->pixels = malloc((size_t)(n ? n : 1) * size));
    else
        ok &= !!(dst->features = malloc((size_t)(n ? n : 1) * size *
                                        sizeof *dst->features));
    if (src->labels)
        ok &= !!(dst->labels = malloc((size_t)(n ? n : 1) *
                                      sizeof *dst->labels));
    if (src->targets)
        ok &= !!(dst->targets = malloc((size_t)(n ? n : 1) * k *
                                       sizeof *dst->targets));
    if (src->n_class_names) {
        ok &= !!(dst->class_names = calloc((size_t)src->n_class_names,
                                           sizeof *dst->class_names));
        for (int c = 0; ok && c < src->n_class_names; c++) {
            ok &= !!(dst->class_names[c] = strdup(src->class_names[c]));
            dst->n_class_names = c + 1;
        }
    }
    if (!ok) {
        cnn_dataset_free(dst);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    for (long long i = 0; i < n; i++) {
        size_t r = rows[i];
        if (src->pixels)
            memcpy(dst->pixels + (size_t)i * size, src->pixels + r * size,
                   size);
        else
            memcpy(dst->features + (size_t)i * size,
                   src->features + r * size, size * sizeof *dst->features);
        if (src->labels)
            dst->labels[i] = src->labels[r];
        if (src->targets)
            memcpy(dst->targets + (size_t)i * k, src->targets + r * k,
                   (size_t)k * sizeof *dst->targets);
    }
    return CNN_OK;
}

/* Marks round(fraction * count) of the examples listed in idx[0..count)
 * as held, chosen by a partial Fisher-Yates shuffle of idx. */
static void pick(uint32_t *idx, long long count, double fraction,
                 struct cnn_rng *rng, bool *held)
{
    long long want = (long long)(fraction * (double)count + 0.5);
    for (long long i = 0; i < want; i++) {
        long long j = i + cnn_rng_below(rng, (uint32_t)(count - i));
        uint32_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        held[idx[i]] = true;
    }
}

enum cnn_status cnn_dataset_split(struct cnn_dataset *ds, double fraction,
                                  uint64_t seed, uint64_t stream,
                                  struct cnn_dataset *held,
                                  struct cnn_error *err)
{
    long long n = ds->n;
    uint32_t *idx = malloc((size_t)(n ? n : 1) * sizeof *idx);
    uint32_t *keep = malloc((size_t)(n ? n : 1) * sizeof *keep);
    uint32_t *out = malloc((size_t)(n ? n : 1) * sizeof *out);
    bool *is_held = calloc((size_t)(n ? n : 1), sizeof *is_held);
    enum cnn_status st = CNN_OK;
    memset(held, 0, sizeof *held);
    if (!idx || !keep || !out || !is_held) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        goto done;
    }

    struct cnn_rng rng;
    cnn_rng_seed(&rng, seed, stream, 0);
    if (ds->labels && !ds->targets) {
        /* Class by class, in label order: each gives its own share. */
        for (int c = 0; c < ds->n_classes; c++) {
            long long m = 0;
            for (long long i = 0; i < n; i++)
                if (ds->labels[i] == c)
                    idx[m++] = (uint32_t)i;
            pick(idx, m, fraction, &rng, is_held);
        }
    } else {
        for (long long i = 0; i < n; i++)
            idx[i] = (uint32_t)i;
        pick(idx, n, fraction, &rng, is_held);
    }

    long long n_keep = 0, n_out = 0;
    for (long long i = 0; i < n; i++) {
        if (is_held[i])
            out[n_out++] = (uint32_t)i;
        else
            keep[n_keep++] = (uint32_t)i;
    }
    struct cnn_dataset rest;
    st = take(held, ds, out, n_out, err);
    if (st == CNN_OK)
        st = take(&rest, ds, keep, n_keep, err);
    if (st == CNN_OK) {
        cnn_dataset_free(ds);
        *ds = rest;
    } else {
        cnn_dataset_free(held);
    }
done:
    free(idx);
    free(keep);
    free(out);
    free(is_held);
    return st;
}

void cnn_dataset_free(struct cnn_dataset *ds)
{
    if (!ds)
        return;
    free(ds->pixels);
    free(ds->features);
    free(ds->labels);
    free(ds->targets);
    for (int c = 0; c < ds->n_class_names; c++)
        free(ds->class_names[c]);
    free(ds->class_names);
    memset(ds, 0, sizeof *ds);
}
