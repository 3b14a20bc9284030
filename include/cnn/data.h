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
    uint8_t *pixels;            /* [n, c*h*w], 0..255 (images) ... */
    float *features;            /* ... or [n, c*h*w] raw values (CSV) */
    int *labels;                /* [n], classification */
    float *targets;             /* [n, n_targets], regression; else NULL */
    int n_targets;
    int n_classes;              /* largest label + 1 */
    char **class_names;         /* [n_class_names], owned; may be none */
    int n_class_names;
};

/* Loads the split named by split in the config's format. The test split
 * is read after the training one, passed as train, whose class names
 * (CSV string labels, folder names) it must share; NULL when loading
 * the training split. The example shape for folder images comes from
 * model.input. limit > 0 keeps the first limit examples. */
enum cnn_status cnn_data_load(struct cnn_dataset *ds,
                              const struct cnn_config *cfg,
                              const struct cnn_split_config *split,
                              const struct cnn_dataset *train,
                              long long limit, struct cnn_error *err);

/* The example shape of the training split without loading it, where the
 * format allows (IDX header, CIFAR-10); CNN_ERR_DATA otherwise. */
enum cnn_status cnn_data_peek_shape(const struct cnn_config *cfg,
                                    struct cnn_shape *shape,
                                    struct cnn_error *err);

/* Moves a seeded fraction of ds's examples into held, in their file
 * order; stratified by class for classification (each class gives its
 * share, rounded), so the held-out set is a pure function of (seed,
 * stream, the labels). ds keeps the rest, also in file order. */
enum cnn_status cnn_dataset_split(struct cnn_dataset *ds, double fraction,
                                  uint64_t seed, uint64_t stream,
                                  struct cnn_dataset *held,
                                  struct cnn_error *err);

/* Reads a CSV file (gzip'd or not) per cfg->data.csv; see the man page
 * for the selectors. train as for cnn_data_load. */
enum cnn_status cnn_csv_load(struct cnn_dataset *ds,
                             const struct cnn_config *cfg,
                             const struct cnn_split_config *split,
                             const struct cnn_dataset *train,
                             struct cnn_error *err);

/* Reads CIFAR-10 binary batches (1 label byte, 3072 pixel bytes each),
 * with class names from batches.meta.txt beside the first when present. */
enum cnn_status cnn_cifar10_load(struct cnn_dataset *ds, char *const *files,
                                 int n_files, struct cnn_error *err);

/* Reads root/<class>/<image> (PNG, JPEG, PGM), converted to shape's
 * channels and resized to its height and width; classes are the sorted
 * folder names, or train's. */
enum cnn_status cnn_folder_load(struct cnn_dataset *ds, const char *root,
                                struct cnn_shape shape,
                                const struct cnn_dataset *train,
                                struct cnn_error *err);

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

/* Reads a PGM (binary or plain, 8-bit), PNG or JPEG file; PNG and JPEG
 * come as RGB when channels is 3, gray otherwise. Errors name the file. */
enum cnn_status cnn_image_read(const char *path, int channels,
                               struct cnn_image *img, struct cnn_error *err);

/* Resizes img to h x w in place: area averaging where it shrinks,
 * bilinear where it grows. */
enum cnn_status cnn_image_resize(struct cnn_image *img, int h, int w,
                                 struct cnn_error *err);

void cnn_image_free(struct cnn_image *img);

/* What turns a stored example into the model's input, and targets into
 * what the model learns: x = (raw * scale - mean[c]) / std[c] per
 * channel (scale 1/255 for pixels, 1 for CSV values), then, with
 * standardization, (x - feat_mean[j]) / feat_std[j] per feature; and a
 * regression target t is learned as (t - target_mean[k]) / target_std[k].
 * Saved with the weights so eval and predict apply the same. */
struct cnn_norm {
    int c;
    float mean[CNN_MAX_CHANNELS];
    float std[CNN_MAX_CHANNELS];
    int n_feat;                 /* 0: no per-feature step */
    float *feat_mean, *feat_std;
    int n_target;               /* 0: targets as they are */
    float *target_mean, *target_std;
};

/* From the config (one value broadcasts to every channel), or measured on
 * ds when auto; identity when not configured. With data.standardize, the
 * per-feature (and target) means and deviations of ds. */
enum cnn_status cnn_norm_setup(struct cnn_norm *norm,
                               const struct cnn_data_config *cfg,
                               const struct cnn_dataset *ds,
                               struct cnn_error *err);

/* Example i of ds through norm into x [size]. */
void cnn_norm_apply(const struct cnn_norm *norm, const struct cnn_dataset *ds,
                    long long i, float *x);

/* Maps one model output row [k] back to target units, in place. */
void cnn_norm_unscale_targets(const struct cnn_norm *norm, float *y, int k);

void cnn_norm_free(struct cnn_norm *norm);

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
    int shard, n_shards;        /* this rank's part of each batch: 0, 1 */
    int last_total;             /* examples of the last batch, all shards */
};

/* shuffle false keeps file order (evaluation). */
enum cnn_status cnn_loader_init(struct cnn_loader *ld,
                                const struct cnn_dataset *ds,
                                const struct cnn_norm *norm, int batch,
                                uint64_t seed, struct cnn_error *err);

/* Rewinds to the start of epoch (0-based), reshuffling when shuffle. */
void cnn_loader_start_epoch(struct cnn_loader *ld, long long epoch,
                            bool shuffle);

/* Fills x [n, size] and labels [n] (or, for regression, targets
 * [n, n_targets] scaled as the model learns them) with the next batch;
 * returns n, 0 at the end of the epoch. With n_shards > 1, batch is the
 * global batch and only this shard's contiguous part of it is filled
 * (last_total tells the whole batch's size, which may be > 0 when this
 * shard's part is empty). The last batch may be short. With ld->augment
 * set, each example is cropped, flipped and erased with draws from the
 * stream (seed, augment, epoch * n + position): a pure function of the
 * seed, the epoch and the place in it, so a resumed run draws the same. */
int cnn_loader_next(struct cnn_loader *ld, float *x, int *labels,
                    float *targets);

long long cnn_loader_batches(const struct cnn_loader *ld);

void cnn_loader_free(struct cnn_loader *ld);

#endif
