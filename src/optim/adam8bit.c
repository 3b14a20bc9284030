/*
 * adam8bit: Adam whose two moment buffers are stored as 8-bit codes, one
 * float scale (the block's largest magnitude) per block of BLOCK values
 * of a parameter tensor. Each step dequantizes a block, runs Adam's
 * update in float with the fresh moments, and requantizes them. Memory:
 * 2 bytes per parameter plus 8 bytes per block (2.03 bytes at BLOCK 256),
 * against Adam's 8.
 *
 * Code books, chosen so small values keep resolution:
 *   m (signed):   k in [-127, 127], m = sign(k) (|k| / 127)^2 * max|m|
 *   v (positive): k in [0, 255],    v = (k / 255)^4 * max v
 * so sqrt(v), the part the update divides by, is quadratic in k.
 *
 *   optimizer: {name: adam8bit, lr: 0.001, betas: [0.9, 0.999]}
 */
#include "cnn/optim.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

enum { BLOCK = 256 };

struct adam8 {
    double b1, b2, eps;
    int8_t *m;                  /* [n] codes */
    uint8_t *v;                 /* [n] codes */
    float *m_scale, *v_scale;   /* [blocks] */
    size_t block_base[];        /* [groups] first block of each group */
};

static enum cnn_status adam8_create(struct cnn_optim *o, struct cnn_node *args,
                                    struct cnn_error *err)
{
    /* One allocation with the per-group block table, so optim's single
     * free(o->state) releases it. */
    struct adam8 *s = calloc(1, sizeof *s + (size_t)(o->n_groups + 1) *
                                sizeof s->block_base[0]);
    if (!(o->state = s))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    if (cnn_optim_read_betas(args, 0.9, 0.999, &s->b1, &s->b2, err) ||
        cnn_read_float(args, "eps", 1e-8, 1e-30, 1.0, &s->eps, err))
        return CNN_ERR_CONFIG;

    /* Blocks never straddle two tensors: each group starts a block. */
    size_t blocks = 0;
    for (int k = 0; k < o->n_groups; k++) {
        s->block_base[k] = blocks;
        blocks += (o->groups[k].count + BLOCK - 1) / BLOCK;
    }

    s->m = calloc(o->n ? o->n : 1, 1);
    s->v = calloc(o->n ? o->n : 1, 1);
    s->m_scale = calloc(blocks ? blocks : 1, sizeof(float));
    s->v_scale = calloc(blocks ? blocks : 1, sizeof(float));
    /* Registered first, so optim frees them whatever fails next. */
    cnn_optim_add_buffer(o, "exp_avg_code", s->m, o->n);
    cnn_optim_add_buffer(o, "exp_avg_sq_code", s->v, o->n);
    cnn_optim_add_buffer(o, "exp_avg_scale", s->m_scale, blocks * sizeof(float));
    cnn_optim_add_buffer(o, "exp_avg_sq_scale", s->v_scale,
                         blocks * sizeof(float));
    if (!s->m || !s->v || !s->m_scale || !s->v_scale)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    return CNN_OK;
}

static float decode_m(int8_t k, float scale)
{
    float q = (float)k / 127.0f;
    return (q < 0 ? -q * q : q * q) * scale;
}

static int8_t encode_m(float x, float scale)
{
    if (scale <= 0.0f)
        return 0;
    float q = sqrtf(fabsf(x) / scale);
    int k = (int)lrintf(q * 127.0f);
    k = k > 127 ? 127 : k;
    return (int8_t)(x < 0 ? -k : k);
}

static float decode_v(uint8_t k, float scale)
{
    float q = (float)k / 255.0f;
    q *= q;
    return q * q * scale;
}

static uint8_t encode_v(float x, float scale)
{
    if (scale <= 0.0f)
        return 0;
    int k = (int)lrintf(sqrtf(sqrtf(x / scale)) * 255.0f);
    return (uint8_t)(k > 255 ? 255 : k);
}

static size_t group_of(const struct cnn_optim *o, size_t offset)
{
    for (int k = 0; k < o->n_groups; k++)
        if (o->groups[k].offset == offset)
            return (size_t)k;
    return 0;
}

static void adam8_update(struct cnn_optim *o, float *p, const float *grad,
                         size_t offset, size_t n, float lr, float wd)
{
    struct adam8 *s = o->state;
    size_t block0 = s->block_base[group_of(o, offset)];
    double t = (double)(o->steps + 1);
    float step = (float)(lr / (1.0 - pow(s->b1, t)));
    float bc2_sqrt = (float)sqrt(1.0 - pow(s->b2, t));
    float b1 = (float)s->b1, b2 = (float)s->b2, eps = (float)s->eps;
    float c1 = (float)(1.0 - s->b1), c2 = (float)(1.0 - s->b2);

    for (size_t start = 0; start < n; start += BLOCK) {
        size_t len = n - start < BLOCK ? n - start : BLOCK;
        size_t b = block0 + start / BLOCK;
        int8_t *mc = s->m + offset + start;
        uint8_t *vc = s->v + offset + start;
        float m[BLOCK], v[BLOCK], m_max = 0.0f, v_max = 0.0f;

        for (size_t i = 0; i < len; i++) {
            float g = grad[start + i] + wd * p[start + i];
            m[i] = b1 * decode_m(mc[i], s->m_scale[b]) + c1 * g;
            v[i] = b2 * decode_v(vc[i], s->v_scale[b]) + c2 * g * g;
            p[start + i] -= step * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
            m_max = fmaxf(m_max, fabsf(m[i]));
            v_max = fmaxf(v_max, v[i]);
        }
        s->m_scale[b] = m_max;
        s->v_scale[b] = v_max;
        for (size_t i = 0; i < len; i++) {
            mc[i] = encode_m(m[i], m_max);
            vc[i] = encode_v(v[i], v_max);
        }
    }
}

const struct cnn_optim_kind cnn_optim_adam8bit = {
    .name = "adam8bit",
    .create = adam8_create,
    .update = adam8_update,
};
