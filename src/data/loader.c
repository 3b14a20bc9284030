/*
 * Normalization and mini-batches. The order of epoch e is a Fisher-Yates
 * shuffle drawn from the stream (seed, shuffle, e): a pure function of
 * the seed and the epoch, whatever happened before.
 */
#include "cnn/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum cnn_status cnn_norm_setup(struct cnn_norm *norm,
                               const struct cnn_data_config *cfg,
                               const struct cnn_dataset *ds,
                               struct cnn_error *err)
{
    int C = ds->shape.c;
    memset(norm, 0, sizeof *norm);
    norm->c = C;
    if (C > CNN_MAX_CHANNELS)
        return cnn_error_set(err, CNN_ERR_DATA, "%d channels: at most %d are "
                             "supported", C, CNN_MAX_CHANNELS);

    for (int c = 0; c < C; c++) {
        norm->mean[c] = 0.0f;
        norm->std[c] = 1.0f;
    }
    if (cfg->normalize_auto) {
        size_t hw = (size_t)ds->shape.h * ds->shape.w;
        for (int c = 0; c < C; c++) {
            double sum = 0, sq = 0;
            for (long long i = 0; i < ds->n; i++) {
                const uint8_t *p = ds->pixels + (i * C + c) * hw;
                for (size_t j = 0; j < hw; j++) {
                    double v = p[j] / 255.0;
                    sum += v;
                    sq += v * v;
                }
            }
            double count = (double)ds->n * hw;
            double mean = sum / count;
            double var = sq / count - mean * mean;
            norm->mean[c] = (float)mean;
            norm->std[c] = (float)(var > 1e-12 ? sqrt(var) : 1.0);
        }
        return CNN_OK;
    }
    if (cfg->n_mean == 0)
        return CNN_OK;
    if (cfg->n_mean != 1 && cfg->n_mean != C)
        return cnn_error_set(err, CNN_ERR_CONFIG, "data.normalize has %d "
                             "values per list but the images have %d "
                             "channels", cfg->n_mean, C);
    for (int c = 0; c < C; c++) {
        norm->mean[c] = cfg->mean[cfg->n_mean == 1 ? 0 : c];
        norm->std[c] = cfg->std[cfg->n_std == 1 ? 0 : c];
    }
    return CNN_OK;
}

enum cnn_status cnn_loader_init(struct cnn_loader *ld,
                                const struct cnn_dataset *ds,
                                const struct cnn_norm *norm, int batch,
                                uint64_t seed, struct cnn_error *err)
{
    memset(ld, 0, sizeof *ld);
    ld->ds = ds;
    ld->norm = norm;
    ld->batch = batch;
    ld->seed = seed;
    ld->order = malloc((size_t)ds->n * sizeof *ld->order);
    ld->scratch = malloc(cnn_shape_size(ds->shape) * sizeof *ld->scratch);
    if (!ld->order || !ld->scratch)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    cnn_loader_start_epoch(ld, 0, false);
    return CNN_OK;
}

void cnn_loader_start_epoch(struct cnn_loader *ld, long long epoch,
                            bool shuffle)
{
    long long n = ld->ds->n;
    for (long long i = 0; i < n; i++)
        ld->order[i] = (uint32_t)i;
    if (shuffle) {
        struct cnn_rng rng;
        cnn_rng_seed(&rng, ld->seed, CNN_RNG_STREAM_SHUFFLE, (uint64_t)epoch);
        for (long long i = n - 1; i > 0; i--) {
            uint32_t j = cnn_rng_below(&rng, (uint32_t)(i + 1));
            uint32_t t = ld->order[i];
            ld->order[i] = ld->order[j];
            ld->order[j] = t;
        }
    }
    ld->pos = 0;
    ld->epoch = epoch;
}

/* Crop (shift within zero padding, zero meaning a black pixel), flip and
 * erase one normalized example in place; tmp holds one example. */
static void augment(const struct cnn_loader *ld, float *x, float *tmp,
                    long long position)
{
    const struct cnn_augment_config *a = ld->augment;
    struct cnn_shape s = ld->ds->shape;
    size_t hw = (size_t)s.h * s.w;
    struct cnn_rng rng;
    cnn_rng_seed(&rng, ld->seed, CNN_RNG_STREAM_AUGMENT,
                 (uint64_t)(ld->epoch * ld->ds->n + position));

    int p = (int)a->crop_pad;
    int dy = p ? (int)cnn_rng_below(&rng, 2 * p + 1) - p : 0;
    int dx = p ? (int)cnn_rng_below(&rng, 2 * p + 1) - p : 0;
    bool flip = a->flip && cnn_rng_uniform(&rng) < 0.5f;
    if (dy || dx || flip) {
        memcpy(tmp, x, cnn_shape_size(s) * sizeof *tmp);
        for (int c = 0; c < s.c; c++) {
            float black = -ld->norm->mean[c] / ld->norm->std[c];
            for (int y = 0; y < s.h; y++)
                for (int xx = 0; xx < s.w; xx++) {
                    int sy = y + dy, sx = (flip ? s.w - 1 - xx : xx) + dx;
                    bool in = sy >= 0 && sy < s.h && sx >= 0 && sx < s.w;
                    x[c * hw + (size_t)y * s.w + xx] =
                        in ? tmp[c * hw + (size_t)sy * s.w + sx] : black;
                }
        }
    }

    int e = (int)a->erase_size;
    if (e > 0 && cnn_rng_uniform(&rng) < a->erase_p) {
        /* The square's centre anywhere in the image; it may hang over. */
        int cy = (int)cnn_rng_below(&rng, (uint32_t)s.h);
        int cx = (int)cnn_rng_below(&rng, (uint32_t)s.w);
        for (int c = 0; c < s.c; c++)
            for (int y = cy - e / 2; y < cy - e / 2 + e; y++)
                for (int xx = cx - e / 2; xx < cx - e / 2 + e; xx++)
                    if (y >= 0 && y < s.h && xx >= 0 && xx < s.w)
                        x[c * hw + (size_t)y * s.w + xx] = 0.0f;
    }
}

int cnn_loader_next(struct cnn_loader *ld, float *x, int *labels)
{
    const struct cnn_dataset *ds = ld->ds;
    long long left = ds->n - ld->pos;
    int n = left < ld->batch ? (int)left : ld->batch;
    size_t size = cnn_shape_size(ds->shape);
    size_t hw = (size_t)ds->shape.h * ds->shape.w;

    for (int i = 0; i < n; i++) {
        uint32_t k = ld->order[ld->pos + i];
        const uint8_t *src = ds->pixels + (size_t)k * size;
        float *dst = x + (size_t)i * size;
        for (int c = 0; c < ds->shape.c; c++) {
            float scale = 1.0f / (255.0f * ld->norm->std[c]);
            float shift = ld->norm->mean[c] / ld->norm->std[c];
            for (size_t j = 0; j < hw; j++)
                dst[c * hw + j] = src[c * hw + j] * scale - shift;
        }
        labels[i] = ds->labels[k];
        if (ld->augment)
            augment(ld, dst, ld->scratch, ld->pos + i);
    }
    ld->pos += n;
    return n;
}

long long cnn_loader_batches(const struct cnn_loader *ld)
{
    return (ld->ds->n + ld->batch - 1) / ld->batch;
}

void cnn_loader_free(struct cnn_loader *ld)
{
    if (!ld)
        return;
    free(ld->order);
    free(ld->scratch);
    ld->order = NULL;
    ld->scratch = NULL;
}
