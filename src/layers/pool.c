/*
 * maxpool and avgpool over square windows, per channel.
 *
 *   - maxpool: {size: 2, stride: 2, pad: 0}    # stride defaults to size
 *
 * Padding counts as -inf for max and as zeros for average (the divisor is
 * always size*size, as PyTorch's default count_include_pad).
 */
#include "cnn/layer.h"
#include "cnn/ops.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

struct pool_state {
    struct cnn_conv_geom g;
    int *argmax;        /* maxpool: [batch, out] input index of each max */
};

static enum cnn_status pool_create(struct cnn_layer *l, struct cnn_node *args,
                                   bool is_max, struct cnn_error *err)
{
    long long size, stride, pad;
    if (cnn_read_int(args, "size", 2, 1, 1 << 12, &size, err) ||
        cnn_read_int(args, "stride", size, 1, 1 << 12, &stride, err) ||
        cnn_read_int(args, "pad", 0, 0, size / 2, &pad, err))
        return CNN_ERR_CONFIG;

    struct cnn_conv_geom g;
    if (cnn_layer_window(l, (int)size, (int)stride, (int)pad, &g, err))
        return CNN_ERR_CONFIG;

    struct pool_state *s = cnn_layer_alloc(l, sizeof *s, err);
    if (!s)
        return cnn_layer_alloc_status(err);
    l->state = s;
    s->g = g;
    l->out = (struct cnn_shape){g.c, g.oh, g.ow};
    if (is_max) {
        s->argmax = cnn_layer_alloc(l, (size_t)l->batch *
                                    cnn_shape_size(l->out) * sizeof(int), err);
        if (!s->argmax)
            return cnn_layer_alloc_status(err);
    }
    l->flops = (double)size * size * cnn_shape_size(l->out);
    return CNN_OK;
}

static enum cnn_status maxpool_create(struct cnn_layer *l,
                                      struct cnn_node *args,
                                      struct cnn_error *err)
{
    return pool_create(l, args, true, err);
}

static enum cnn_status avgpool_create(struct cnn_layer *l,
                                      struct cnn_node *args,
                                      struct cnn_error *err)
{
    return pool_create(l, args, false, err);
}

/* The window of output (oy, ox), clipped to the image: rows [y0, y1),
 * columns [x0, x1). */
struct window {
    int y0, y1, x0, x1;
};

static struct window window_at(const struct cnn_conv_geom *g, int oy, int ox)
{
    int y0 = oy * g->stride - g->pad, x0 = ox * g->stride - g->pad;
    int y1 = y0 + g->kh, x1 = x0 + g->kw;
    return (struct window){
        .y0 = y0 < 0 ? 0 : y0, .y1 = y1 > g->h ? g->h : y1,
        .x0 = x0 < 0 ? 0 : x0, .x1 = x1 > g->w ? g->w : x1,
    };
}

/* Planes [lo, hi) of a max-pooling pass; planes go to cnn_parallel_for. */
struct planes {
    const struct pool_state *s;
    const float *x, *dy;
    float *y, *dx;
};

#ifdef __AVX512F__
/* One plane of the common 2x2 window at stride 2 without padding (every
 * window inside the image), 16 outputs at a time: the general loop's
 * scan (from -FLT_MAX, rows then columns, a later element winning only
 * when greater, so NaNs never win) as compares and blends. Masked loads
 * read zeros past a row and never fault. */
static void max2x2_plane(const struct cnn_conv_geom *g, const float *xp,
                         float *yp, int *ap)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16,
                                          14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int oy = 0; oy < g->oh; oy++) {
        int row = 2 * oy * g->w;
        for (int ox = 0; ox < g->ow; ox += 16) {
            int left = g->w - 2 * ox, n = g->ow - ox < 16 ? g->ow - ox : 16;
            int na = left > 16 ? 16 : left;
            int nb = left < 16 ? 0 : left > 32 ? 16 : left - 16;
            __mmask16 ma = (__mmask16)((1u << na) - 1);
            __mmask16 mb = (__mmask16)((1u << nb) - 1);
            __m512 v[4];
            for (int r = 0; r < 2; r++) {
                const float *at = xp + row + r * g->w + 2 * ox;
                __m512 lo = _mm512_maskz_loadu_ps(ma, at);
                __m512 hi = _mm512_maskz_loadu_ps(mb, at + 16);
                v[2 * r] = _mm512_permutex2var_ps(lo, even, hi);
                v[2 * r + 1] = _mm512_permutex2var_ps(lo, odd, hi);
            }
            __m512i base = _mm512_add_epi32(_mm512_set1_epi32(row + 2 * ox),
                                            even);
            const int step[4] = {0, 1, g->w, g->w + 1};
            __m512 best = _mm512_set1_ps(-FLT_MAX);
            __m512i arg = base;
            for (int k = 0; k < 4; k++) {
                __mmask16 more = _mm512_cmp_ps_mask(v[k], best, _CMP_GT_OQ);
                __m512i at = _mm512_add_epi32(base,
                                              _mm512_set1_epi32(step[k]));
                best = _mm512_mask_blend_ps(more, best, v[k]);
                arg = _mm512_mask_blend_epi32(more, arg, at);
            }
            __mmask16 out = (__mmask16)((1u << n) - 1);
            _mm512_mask_storeu_ps(yp + oy * g->ow + ox, out, best);
            _mm512_mask_storeu_epi32(ap + oy * g->ow + ox, out, arg);
        }
    }
}
#endif

static void maxpool_forward_part(void *ctx, int lo, int hi)
{
    const struct planes *j = ctx;
    const struct cnn_conv_geom *g = &j->s->g;
    int in_hw = g->h * g->w, out_hw = g->oh * g->ow;
#ifdef __AVX512F__
    bool two = g->kh == 2 && g->kw == 2 && g->stride == 2 && g->pad == 0;
#endif

    for (int p = lo; p < hi; p++) {
        const float *xp = j->x + (size_t)p * in_hw;
        float *yp = j->y + (size_t)p * out_hw;
        int *ap = j->s->argmax + (size_t)p * out_hw;
#ifdef __AVX512F__
        if (two) {
            max2x2_plane(g, xp, yp, ap);
            continue;
        }
#endif
        for (int o = 0; o < out_hw; o++) {
            struct window q = window_at(g, o / g->ow, o % g->ow);
            float best = -FLT_MAX;
            int at = q.y0 * g->w + q.x0;
            for (int yy = q.y0; yy < q.y1; yy++)
                for (int xx = q.x0; xx < q.x1; xx++)
                    if (xp[yy * g->w + xx] > best) {
                        best = xp[yy * g->w + xx];
                        at = yy * g->w + xx;
                    }
            yp[o] = best;
            ap[o] = at;
        }
    }
}

static void maxpool_forward(struct cnn_layer *l, const float *x, float *y,
                            int n, const struct cnn_fwd_ctx *ctx)
{
    (void)ctx;
    struct pool_state *s = l->state;
    struct planes j = {.s = s, .x = x, .y = y};
    cnn_parallel_for(n * s->g.c, maxpool_forward_part, &j);
}

static void maxpool_backward_part(void *ctx, int lo, int hi)
{
    const struct planes *j = ctx;
    const struct cnn_conv_geom *g = &j->s->g;
    int in_hw = g->h * g->w, out_hw = g->oh * g->ow;

    memset(j->dx + (size_t)lo * in_hw, 0,
           (size_t)(hi - lo) * in_hw * sizeof *j->dx);
    for (int p = lo; p < hi; p++) {
        const int *ap = j->s->argmax + (size_t)p * out_hw;
        const float *dyp = j->dy + (size_t)p * out_hw;
        float *dxp = j->dx + (size_t)p * in_hw;
        for (int o = 0; o < out_hw; o++)
            dxp[ap[o]] += dyp[o];
    }
}

static void maxpool_backward(struct cnn_layer *l, const float *x,
                             const float *y, const float *dy, float *dx, int n)
{
    (void)x;
    (void)y;
    struct pool_state *s = l->state;
    if (!dx)
        return;
    struct planes j = {.s = s, .dy = dy, .dx = dx};
    cnn_parallel_for(n * s->g.c, maxpool_backward_part, &j);
}

static void avgpool_forward(struct cnn_layer *l, const float *x, float *y,
                            int n, const struct cnn_fwd_ctx *ctx)
{
    struct pool_state *s = l->state;
    const struct cnn_conv_geom *g = &s->g;
    int planes = n * g->c, in_hw = g->h * g->w, out_hw = g->oh * g->ow;
    float scale = 1.0f / (float)(g->kh * g->kw);

    for (int p = 0; p < planes; p++) {
        const float *xp = x + (size_t)p * in_hw;
        float *yp = y + (size_t)p * out_hw;
        for (int o = 0; o < out_hw; o++) {
            struct window q = window_at(g, o / g->ow, o % g->ow);
            float acc = 0.0f;
            for (int yy = q.y0; yy < q.y1; yy++)
                for (int xx = q.x0; xx < q.x1; xx++)
                    acc += xp[yy * g->w + xx];
            yp[o] = acc * scale;
        }
    }
}

static void avgpool_backward(struct cnn_layer *l, const float *x,
                             const float *y, const float *dy, float *dx, int n)
{
    struct pool_state *s = l->state;
    const struct cnn_conv_geom *g = &s->g;
    int planes = n * g->c, in_hw = g->h * g->w, out_hw = g->oh * g->ow;
    float scale = 1.0f / (float)(g->kh * g->kw);
    if (!dx)
        return;

    memset(dx, 0, (size_t)planes * in_hw * sizeof *dx);
    for (int p = 0; p < planes; p++) {
        const float *dyp = dy + (size_t)p * out_hw;
        float *dxp = dx + (size_t)p * in_hw;
        for (int o = 0; o < out_hw; o++) {
            struct window q = window_at(g, o / g->ow, o % g->ow);
            float d = dyp[o] * scale;
            for (int yy = q.y0; yy < q.y1; yy++)
                for (int xx = q.x0; xx < q.x1; xx++)
                    dxp[yy * g->w + xx] += d;
        }
    }
}

static void pool_destroy(struct cnn_layer *l)
{
    struct pool_state *s = l->state;
    if (s)
        free(s->argmax);
    free(s);
}

const struct cnn_layer_kind cnn_layer_maxpool = {
    .name = "maxpool",
    .create = maxpool_create,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
    .destroy = pool_destroy,
};

const struct cnn_layer_kind cnn_layer_avgpool = {
    .name = "avgpool",
    .create = avgpool_create,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .destroy = pool_destroy,
};

/* global_avgpool: the mean of each channel, C x H x W -> C x 1 x 1. */
static enum cnn_status gap_create(struct cnn_layer *l, struct cnn_node *args,
                                  struct cnn_error *err)
{
    l->out = (struct cnn_shape){l->in.c, 1, 1};
    l->flops = (double)cnn_shape_size(l->in);
    return CNN_OK;
}

static void gap_forward(struct cnn_layer *l, const float *x, float *y, int n,
                        const struct cnn_fwd_ctx *ctx)
{
    size_t hw = (size_t)l->in.h * l->in.w;
    int planes = n * l->in.c;
    for (int p = 0; p < planes; p++) {
        float acc = 0.0f;
        for (size_t j = 0; j < hw; j++)
            acc += x[(size_t)p * hw + j];
        y[p] = acc / (float)hw;
    }
}

static void gap_backward(struct cnn_layer *l, const float *x, const float *y,
                         const float *dy, float *dx, int n)
{
    size_t hw = (size_t)l->in.h * l->in.w;
    int planes = n * l->in.c;
    if (!dx)
        return;
    for (int p = 0; p < planes; p++) {
        float d = dy[p] / (float)hw;
        for (size_t j = 0; j < hw; j++)
            dx[(size_t)p * hw + j] = d;
    }
}

const struct cnn_layer_kind cnn_layer_global_avgpool = {
    .name = "global_avgpool",
    .create = gap_create,
    .forward = gap_forward,
    .backward = gap_backward,
};
