/*
 * Fuzz target for the readers of data.format csv and cifar10 and for
 * single images (PNG, JPEG, PGM, then resized). One input:
 *
 *   byte 0      which reader, and its options (see READERS below)
 *   byte 1      for images: the size to resize to, 1 + (b % 40)
 *   the rest    the file, as it lies on disk
 *
 * A CSV that loads is split (val 0.3), standardized and batched once, as
 * training would; an image that loads is resized.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/data.h"
#include "fuzz_util.h"

/* CSV option sets, each a config's data section; FILE is the scratch. */
static const char *const CSV_CONFIGS[] = {
    "  csv: {}\n",
    "  csv: {delimiter: whitespace, header: false}\n",
    "  task: regression\n  csv: {target: [0, -1], header: true}\n",
    "  csv: {delimiter: semicolon, target: label, features: \"1:\"}\n",
    "  csv: {skip_rows: 1, shape: [1, 2, 2]}\n",
    "  task: regression\n  standardize: true\n  csv: {target: \"-2:\"}\n",
};
enum { N_CSV = sizeof CSV_CONFIGS / sizeof CSV_CONFIGS[0] };
enum { READER_CIFAR = N_CSV, READER_IMAGE, READERS };

static const char *path;
static struct cnn_config configs[N_CSV];
static bool ready[N_CSV];

static void use_dataset(const struct cnn_dataset *ds, bool standardize)
{
    struct cnn_data_config dc = {.normalize_auto = true,
                                 .standardize = standardize};
    struct cnn_norm norm;
    struct cnn_loader ld;
    struct cnn_error err = {0};
    if (cnn_norm_setup(&norm, &dc, ds, &err) != CNN_OK) {
        cnn_norm_free(&norm);
        return;
    }
    if (cnn_loader_init(&ld, ds, &norm, 3, 1, &err) == CNN_OK) {
        size_t size = cnn_shape_size(ds->shape);
        float *x = malloc(3 * size * sizeof *x);
        float *t = malloc(3 * (size_t)(ds->n_targets + 1) * sizeof *t);
        int labels[3];
        cnn_loader_start_epoch(&ld, 0, true);
        if (x && t)
            cnn_loader_next(&ld, x, labels, t);
        free(x);
        free(t);
    }
    cnn_loader_free(&ld);
    cnn_norm_free(&norm);
}

static void fuzz_csv(int which)
{
    struct cnn_config *cfg = &configs[which];
    struct cnn_error err = {0};
    if (!ready[which]) {
        char text[1024];
        snprintf(text, sizeof text, "data:\n  format: csv\n  train: {file: "
                 "%s}\n%smodel:\n  layers: [flatten]\n", path,
                 CSV_CONFIGS[which]);
        if (cnn_config_load_string(cfg, text, "fuzz.yaml", "/", &err) ||
            cnn_config_resolve(cfg, &err)) {
            fprintf(stderr, "fuzz config %d: %s\n", which, err.message);
            abort();
        }
        ready[which] = true;
    }
    struct cnn_dataset ds, held;
    if (cnn_data_load(&ds, cfg, &cfg->data.train, NULL, 0, &err) != CNN_OK)
        return;
    /* The test split of the same file, read with these class names. */
    struct cnn_dataset test;
    if (cnn_data_load(&test, cfg, &cfg->data.train, &ds, 0, &err) == CNN_OK)
        cnn_dataset_free(&test);
    if (cnn_dataset_split(&ds, 0.3, 1, 6, &held, &err) == CNN_OK) {
        use_dataset(&ds, cfg->data.standardize);
        cnn_dataset_free(&held);
    }
    cnn_dataset_free(&ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path && !(path = fuzz_scratch("data")))
        abort();
    if (size < 2 || fuzz_write(path, data + 2, size - 2) != 0)
        return 0;
    int reader = data[0] % READERS;
    struct cnn_error err = {0};
    if (reader < N_CSV) {
        fuzz_csv(reader);
    } else if (reader == READER_CIFAR) {
        struct cnn_dataset ds;
        char *files[1] = {(char *)path};
        if (cnn_cifar10_load(&ds, files, 1, &err) == CNN_OK) {
            use_dataset(&ds, false);
            cnn_dataset_free(&ds);
        }
    } else {
        struct cnn_image img;
        int side = 1 + data[1] % 40;
        if (cnn_image_read(path, data[1] & 0x80 ? 3 : 1, &img, &err) ==
                CNN_OK &&
            (size_t)img.h * img.w <= (1u << 22))
            cnn_image_resize(&img, side, side + 1, &err);
        cnn_image_free(&img);
    }
    return 0;
}
