/*
 * Fuzz target for the IDX reader. One input holds both files of a
 * dataset:
 *
 *   byte 0      flags: 1 gzip the images, 2 gzip the labels (done here,
 *               so the fuzzer's bytes reach the parser through zlib),
 *               4 keep only the first 2 examples
 *   bytes 1-2   L, the length of the label file, little-endian
 *               (clamped to what is there)
 *   next L      the label file, as it lies on disk
 *   the rest    the image file, as it lies on disk
 *
 * Files that are already gzip streams (flags 0) are read by zlib like
 * any other. Besides cnn_idx_load, the image file goes through the
 * header peek of cnn_config_input_shape, and a dataset that loads is
 * normalized (auto) and batched once, as training would.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cnn/data.h"
#include "cnn/train.h"
#include "fuzz_util.h"

enum {
    FLAG_GZIP_IMAGES = 1,
    FLAG_GZIP_LABELS = 2,
    FLAG_LIMIT = 4,
    HEADER = 3,
    BATCH = 2,
};

static const char *images_path, *labels_path;

/* Writes data[0..n) to path, through gzip when zip. Returns 0 or -1. */
static int put_file(const char *path, const uint8_t *data, size_t n,
                    int zip)
{
    if (!zip)
        return fuzz_write(path, data, n);
    gzFile f = gzopen(path, "wb1");
    if (!f)
        return -1;
    int put = n ? gzwrite(f, data, (unsigned)n) : 0;
    int closed = gzclose(f);
    return put == (int)n && closed == Z_OK ? 0 : -1;
}

/* What training does with a dataset first: statistics and a batch. */
static void use_dataset(const struct cnn_dataset *ds)
{
    struct cnn_data_config dc = {.normalize_auto = true};
    struct cnn_norm norm;
    struct cnn_loader ld;
    struct cnn_error err = {0};

    if (cnn_norm_setup(&norm, &dc, ds, &err) != CNN_OK)
        return;
    if (cnn_loader_init(&ld, ds, &norm, BATCH, 1, &err) != CNN_OK)
        return;
    size_t size = cnn_shape_size(ds->shape);
    float *x = malloc(BATCH * size * sizeof *x);
    int labels[BATCH];
    if (x) {
        cnn_loader_start_epoch(&ld, 0, true);
        (void)cnn_loader_next(&ld, x, labels);
    }
    free(x);
    cnn_loader_free(&ld);
}

/* The header peek summary and bench use when model.input is absent. */
static void peek_shape(void)
{
    struct cnn_config cfg;
    struct cnn_shape shape;
    struct cnn_error err = {0};

    memset(&cfg, 0, sizeof cfg);
    cfg.data.train.images = (char *)images_path;
    (void)cnn_config_input_shape(&cfg, &shape, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!images_path) {
        images_path = fuzz_scratch("images");
        labels_path = fuzz_scratch("labels");
        if (!images_path || !labels_path)
            abort();
    }
    if (size < HEADER)
        return 0;

    int flags = data[0];
    size_t n_labels = (size_t)data[1] | (size_t)data[2] << 8;
    if (n_labels > size - HEADER)
        n_labels = size - HEADER;
    const uint8_t *labels = data + HEADER;
    const uint8_t *images = labels + n_labels;
    size_t n_images = size - HEADER - n_labels;

    if (put_file(labels_path, labels, n_labels, flags & FLAG_GZIP_LABELS) ||
        put_file(images_path, images, n_images, flags & FLAG_GZIP_IMAGES))
        abort();

    struct cnn_dataset ds;
    struct cnn_error err = {0};
    long long limit = flags & FLAG_LIMIT ? 2 : 0;
    if (cnn_idx_load(&ds, images_path, labels_path, limit, &err) == CNN_OK)
        use_dataset(&ds);
    cnn_dataset_free(&ds);
    peek_shape();
    return 0;
}
