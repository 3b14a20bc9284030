/*
 * Datasets and the batch loader. A dataset holds raw 8-bit examples and
 * integer labels in memory; the loader turns them into normalized float
 * batches in an order that depends only on (seed, epoch).
 */
#ifndef CNN_DATA_H
#define CNN_DATA_H

#include <stdint.h>

#include "cnn/config.h"
#include "cnn/layer.h"

struct cnn_dataset {
    long long n;
    struct cnn_shape shape;     /* one example */
    uint8_t *pixels;            /* [n, c*h*w], 0..255 */
    int *labels;                /* [n] */
    int n_classes;              /* largest label + 1 */
};

/* Reads an IDX image file and an IDX label file, gzip'd or not. limit > 0
 * keeps only the first limit examples. Errors name the file. */
enum cnn_status cnn_idx_load(struct cnn_dataset *ds, const char *images,
                             const char *labels, long long limit,
                             struct cnn_error *err);

/* The example shape of an IDX image file from its header alone. */
enum cnn_status cnn_idx_peek_shape(const char *path, struct cnn_shape *shape,
                                   struct cnn_error *err);

/* Reads only an IDX image file (labels all 0), for prediction. */
enum cnn_status cnn_idx_load_images(struct cnn_dataset *ds, const char *path,
                                    struct cnn_error *err);

void cnn_dataset_free(struct cnn_dataset *ds);

/* One image for prediction, c x h x w bytes. */
struct cnn_image {
    int c, h, w;
    uint8_t *pixels;
};

/* Reads a PGM (binary or plain, 8-bit) or PNG file; PNG comes as RGB when
 * channels is 3, gray otherwise. Errors name the file. */
enum cnn_status cnn_image_read(const char *path, int channels,
                               struct cnn_image *img, struct cnn_error *err);

void cnn_image_free(struct cnn_image *img);

/* Per-channel normalization: x = (pixel / 255 - mean[c]) / std[c]. */
struct cnn_norm {
    int c;
    float mean[CNN_MAX_CHANNELS];
    float std[CNN_MAX_CHANNELS];
};

/* From the config (one value broadcasts to every channel), or measured on
 * ds when auto; identity when not configured. */
enum cnn_status cnn_norm_setup(struct cnn_norm *norm,
                               const struct cnn_data_config *cfg,
                               const struct cnn_dataset *ds,
                               struct cnn_error *err);

struct cnn_loader {
    const struct cnn_dataset *ds;
    const struct cnn_norm *norm;
    const struct cnn_augment_config *augment;   /* NULL: none */
    long long epoch;
    int batch;
    uint64_t seed;
    uint32_t *order;            /* [ds->n] this epoch's permutation */
    float *scratch;             /* one example, for augmentation */
    long long pos;              /* next index into order */
};

/* shuffle false keeps file order (evaluation). */
enum cnn_status cnn_loader_init(struct cnn_loader *ld,
                                const struct cnn_dataset *ds,
                                const struct cnn_norm *norm, int batch,
                                uint64_t seed, struct cnn_error *err);

/* Rewinds to the start of epoch (0-based), reshuffling when shuffle. */
void cnn_loader_start_epoch(struct cnn_loader *ld, long long epoch,
                            bool shuffle);

/* Fills x [n, size] and labels [n] with the next batch; returns n, 0 at
 * the end of the epoch. The last batch may be short. With ld->augment
 * set, each example is cropped, flipped and erased with draws from the
 * stream (seed, augment, epoch * n + position): a pure function of the
 * seed, the epoch and the place in it, so a resumed run draws the same. */
int cnn_loader_next(struct cnn_loader *ld, float *x, int *labels);

long long cnn_loader_batches(const struct cnn_loader *ld);

void cnn_loader_free(struct cnn_loader *ld);

#endif
