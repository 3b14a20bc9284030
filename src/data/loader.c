/*
 * Normalization and mini-batches. The order of epoch e is a Fisher-Yates
 * shuffle drawn from the stream (seed, shuffle, e): a pure function of
 * the seed and the epoch, whatever happened before.
 */
#include "cnn/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float raw_value(const struct cnn_dataset *ds, size_t at)
{
    return ds->pixels ? ds->pixels[at] / 255.0f : ds->features[at];
}

/* Mean and standard deviation (population; 1 where it is 0) of the
 * count values at first.. in every example (stride values apart). */
static void moments(const struct cnn_dataset *ds, size_t first,
                    size_t stride, size_t count, float *mean, float *std)
{
    double sum = 0, sq = 0;
    for (long long i = 0; i < ds->n; i++)
        for (size_t j = 0; j < count; j++) {
            double v = raw_value(ds, (size_t)i * stride + first + j);
            sum += v;
            sq += v * v;
        }
    double total = (double)ds->n * count;
    double m = total > 0 ? sum / total : 0.0;
    double var = total > 0 ? sq / total - m * m : 0.0;
    *mean = (float)m;
    *std = (float)(var > 1e-12 ? sqrt(var) : 1.0);
}

/* Per-feature (and per-target) statistics of the normalized inputs. */
static enum cnn_status standardize(struct cnn_norm *norm,
                                   const struct cnn_dataset *ds,
                                   struct cnn_error *err)
{
    size_t size = cnn_shape_size(ds->shape);
    norm->feat_mean = malloc(size * sizeof *norm->feat_mean);
    norm->feat_std = malloc(size * sizeof *norm->feat_std);
    double *sum = calloc(size, sizeof *sum), *sq = calloc(size, sizeof *sq);
    float *x = malloc(size * sizeof *x);
    if (!norm->feat_mean || !norm->feat_std || !sum || !sq || !x) {
        free(sum), free(sq), free(x);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    for (long long i = 0; i < ds->n; i++) {
        cnn_norm_apply(norm, ds, i, x);     /* n_feat is still 0 */
        for (size_t j = 0; j < size; j++) {
            sum[j] += x[j];
            sq[j] += (double)x[j] * x[j];
        }
    }
    for (size_t j = 0; j < size; j++) {
        double m = ds->n ? sum[j] / (double)ds->n : 0.0;
        double var = ds->n ? sq[j] / (double)ds->n - m * m : 0.0;
        norm->feat_mean[j] = (float)m;
        norm->feat_std[j] = (float)(var > 1e-12 ? sqrt(var) : 1.0);
    }
    norm->n_feat = (int)size;
    free(sum), free(sq), free(x);

    if (!ds->targets)
        return CNN_OK;
    int k = ds->n_targets;
    norm->target_mean = malloc((size_t)k * sizeof *norm->target_mean);
    norm->target_std = malloc((size_t)k * sizeof *norm->target_std);
    if (!norm->target_mean || !norm->target_std)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    for (int j = 0; j < k; j++) {
        double s = 0, s2 = 0;
        for (long long i = 0; i < ds->n; i++) {
            double t = ds->targets[(size_t)i * k + j];
            s += t;
            s2 += t * t;
        }
        double m = ds->n ? s / (double)ds->n : 0.0;
        double var = ds->n ? s2 / (double)ds->n - m * m : 0.0;
        norm->target_mean[j] = (float)m;
        norm->target_std[j] = (float)(var > 1e-12 ? sqrt(var) : 1.0);
    }
    norm->n_target = k;
    return CNN_OK;
}

enum cnn_status cnn_norm_setup(struct cnn_norm *norm,
                               const struct cnn_data_config *cfg,
                               const struct cnn_dataset *ds,
                               struct cnn_error *err)
{
    int C = ds->shape.c;
    memset(norm, 0, sizeof *norm);
    /* Many channels (features of a CSV row, [F, 1, 1]) share one value,
     * unless statistics per channel are asked for. */
    bool per_channel = cfg->normalize_auto || cfg->n_mean > 1;
    if (C > CNN_MAX_CHANNELS && per_channel)
        return cnn_error_set(err, CNN_ERR_DATA, "%d channels: per-channel "
                             "normalization takes at most %d (use "
                             "data.standardize for many features)", C,
                             CNN_MAX_CHANNELS);
    if (C > CNN_MAX_CHANNELS)
        C = 1;
    norm->c = C;

    for (int c = 0; c < C; c++) {
        norm->mean[c] = 0.0f;
        norm->std[c] = 1.0f;
    }
    size_t hw = (size_t)ds->shape.h * ds->shape.w;
    if (cfg->normalize_auto) {
        for (int c = 0; c < C; c++)
            moments(ds, c * hw, (size_t)C * hw, hw, &norm->mean[c],
                    &norm->std[c]);
    } else if (cfg->n_mean > 0) {
        if (cfg->n_mean != 1 && cfg->n_mean != C)
            return cnn_error_set(err, CNN_ERR_CONFIG, "data.normalize has %d "
                                 "values per list but the examples have %d "
                                 "channels", cfg->n_mean, C);
        for (int c = 0; c < C; c++) {
            norm->mean[c] = cfg->mean[cfg->n_mean == 1 ? 0 : c];
            norm->std[c] = cfg->std[cfg->n_std == 1 ? 0 : c];
        }
    }
    return cfg->standardize ? standardize(norm, ds, err) : CNN_OK;
}

void cnn_norm_apply(const struct cnn_norm *norm, const struct cnn_dataset *ds,
                    long long i, float *x)
{
    struct cnn_shape s = ds->shape;
    size_t hw = (size_t)s.h * s.w, size = (size_t)s.c * hw;
    size_t at = (size_t)i * size;
    for (int c = 0; c < s.c; c++) {
        int k = norm->c == 1 ? 0 : c;  /* one value for every channel */
        float shift = norm->mean[k] / norm->std[k];
        if (ds->pixels) {
            const uint8_t *p = ds->pixels + at + c * hw;
            float scale = 1.0f / (255.0f * norm->std[k]);
            for (size_t j = 0; j < hw; j++)
                x[c * hw + j] = p[j] * scale - shift;
        } else {
            const float *p = ds->features + at + c * hw;
            float scale = 1.0f / norm->std[k];
            for (size_t j = 0; j < hw; j++)
                x[c * hw + j] = p[j] * scale - shift;
        }
    }
    for (int j = 0; j < norm->n_feat; j++)
        x[j] = (x[j] - norm->feat_mean[j]) / norm->feat_std[j];
}

void cnn_norm_unscale_targets(const struct cnn_norm *norm, float *y, int k)
{
    for (int j = 0; j < k && j < norm->n_target; j++)
        y[j] = y[j] * norm->target_std[j] + norm->target_mean[j];
}

void cnn_norm_free(struct cnn_norm *norm)
{
    if (!norm)
        return;
    free(norm->feat_mean);
    free(norm->feat_std);
    free(norm->target_mean);
    free(norm->target_std);
    norm->feat_mean = norm->feat_std = NULL;
    norm->target_mean = norm->target_std = NULL;
    norm->n_feat = norm->n_target = 0;
}

enum cnn_status cnn_loader_init(struct cnn_loader *ld,
                                const struct cnn_dataset *ds,
                                const struct cnn_norm *norm, int batch,
                                uint64_t seed, struct cnn_error *err)
{
    memset(ld, 0, sizeof *ld);
    ld->n_shards = 1;
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
            /* Padding is black: what a 0 pixel becomes (per channel;
             * standardized inputs pad with their mean, 0). */
            int k = ld->norm->c == 1 ? 0 : c;
            float black = ld->norm->n_feat ? 0.0f
                          : -ld->norm->mean[k] / ld->norm->std[k];
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

int cnn_loader_next(struct cnn_loader *ld, float *x, int *labels,
                    float *targets)
{
    const struct cnn_dataset *ds = ld->ds;
    const struct cnn_norm *norm = ld->norm;
    long long left = ds->n - ld->pos;
    int total = left < ld->batch ? (int)left : ld->batch;
    size_t size = cnn_shape_size(ds->shape);
    int k = ds->n_targets;
    /* This shard's slice of the batch: ranks split it as evenly as
     * whole examples allow. */
    long long first = (long long)total * ld->shard / ld->n_shards;
    int n = (int)((long long)total * (ld->shard + 1) / ld->n_shards - first);

    for (int i = 0; i < n; i++) {
        long long at = ld->pos + first + i;
        uint32_t e = ld->order[at];
        float *dst = x + (size_t)i * size;
        cnn_norm_apply(norm, ds, e, dst);
        if (ds->labels && labels)
            labels[i] = ds->labels[e];
        for (int j = 0; ds->targets && targets && j < k; j++) {
            float t = ds->targets[(size_t)e * k + j];
            if (j < norm->n_target)
                t = (t - norm->target_mean[j]) / norm->target_std[j];
            targets[(size_t)i * k + j] = t;
        }
        if (ld->augment)
            augment(ld, dst, ld->scratch, at);
    }
    ld->pos += total;
    ld->last_total = total;
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
