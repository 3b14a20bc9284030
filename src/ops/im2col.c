/*
 * im2col/col2im: unfold convolution windows into GEMM columns and fold
 * gradients back. Rows of col are (channel, ky, kx); columns are output
 * pixels in row-major order. For each row of output pixels the columns
 * whose window falls inside the image are worked out once, so the inner
 * loops are plain copies (memcpy for stride 1) and adds without branches.
 * Stride-1 windows whose output has the input's size ("same" padding, all
 * of a ResNet's 3x3 convolutions) go further: a row of col is then the
 * whole plane shifted, one copy or one add over its span. Stride 2 (a
 * ResNet's downsampling) gathers and scatters whole rows with AVX-512
 * where the build has it.
 */
#include "cnn/ops.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "lanes.h"

int cnn_conv_out_size(int in, int k, int stride, int pad)
{
    int span = in + 2 * pad - k;
    if (span < 0 || stride < 1)
        return -1;
    return span / stride + 1;
}

/* Output columns [lo, hi) whose input column ox*stride - pad + kx lies
 * inside [0, w). */
static void valid_range(const struct cnn_conv_geom *g, int kx, int *lo,
                        int *hi)
{
    int a = g->pad - kx;                       /* first ox: ox*stride >= a */
    *lo = a <= 0 ? 0 : (a + g->stride - 1) / g->stride;
    int b = g->w - 1 + g->pad - kx;            /* last ox: ox*stride <= b */
    *hi = b < 0 ? 0 : b / g->stride + 1;
    if (*hi > g->ow)
        *hi = g->ow;
    if (*lo > *hi)
        *lo = *hi;
}

/* Stride 1 with the output the size of the input ("same" padding): row
 * (ky, kx) of col is the plane shifted by (ky - pad) rows and (kx - pad)
 * columns. Output rows [oy0, oy1) and columns [lo, hi) see the image;
 * the row's entries [first, end) cover them all and read the plane at
 * entry + shift (the entries between, whose window wraps past an edge,
 * are the edge columns). Empty when no output sees the image. */
struct same_span {
    int oy0, oy1, lo, hi;
    size_t first, end;
    ptrdiff_t shift;
};

static bool same_span(const struct cnn_conv_geom *g, int ky, int kx,
                      struct same_span *sp)
{
    int dy = ky - g->pad, dx = kx - g->pad;
    sp->oy0 = dy < 0 ? -dy : 0;
    sp->oy1 = dy > 0 ? g->h - dy : g->h;
    valid_range(g, kx, &sp->lo, &sp->hi);
    if (sp->oy0 >= sp->oy1 || sp->lo >= sp->hi)
        return false;
    sp->first = (size_t)sp->oy0 * g->w + sp->lo;
    sp->end = (size_t)(sp->oy1 - 1) * g->w + sp->hi;
    sp->shift = (ptrdiff_t)dy * g->w + dx;
    return true;
}

/* Zeros the edge columns [0, lo) and [hi, w) of the span's rows. */
static void zero_edges(const struct cnn_conv_geom *g,
                       const struct same_span *sp, float *row)
{
    for (int oy = sp->oy0; oy < sp->oy1; oy++) {
        float *r = row + (size_t)oy * g->w;
        for (int ox = 0; ox < sp->lo; ox++)
            r[ox] = 0.0f;
        for (int ox = sp->hi; ox < g->w; ox++)
            r[ox] = 0.0f;
    }
}

/* One copy of each row's span, zeros around it and at its edges. */
static void im2col_same(const struct cnn_conv_geom *g, const float *im,
                        float *col, int ld)
{
    size_t hw = (size_t)g->h * g->w;
    for (int c = 0; c < g->c; c++) {
        const float *plane = im + c * hw;
        for (int k = 0; k < g->kh * g->kw; k++) {
            float *row = col + ((size_t)c * g->kh * g->kw + k) * ld;
            struct same_span sp;
            if (!same_span(g, k / g->kw, k % g->kw, &sp)) {
                memset(row, 0, hw * sizeof *row);
                continue;
            }
            memset(row, 0, sp.first * sizeof *row);
            memcpy(row + sp.first, plane + sp.first + sp.shift,
                   (sp.end - sp.first) * sizeof *row);
            memset(row + sp.end, 0, (hw - sp.end) * sizeof *row);
            zero_edges(g, &sp, row);
        }
    }
}

#ifdef __AVX512F__
/* dst[j] = row[x0 + 2j] for j < n, zero where x0 + 2j is outside
 * [0, w): 32 pixels at a time, the even ones. */
static void gather2(const float *row, int w, int x0, int n, float *dst)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16,
                                          14, 12, 10, 8, 6, 4, 2, 0);
    for (int j = 0; j < n; j += 16) {
        int base = x0 + 2 * j;
        __m512 lo = _mm512_maskz_loadu_ps(cnn_lanes(-base, w - base),
                                          cnn_lane_at(row, base));
        __m512 hi = _mm512_maskz_loadu_ps(cnn_lanes(-base - 16, w - base - 16),
                                          cnn_lane_at(row, base + 16));
        _mm512_mask_storeu_ps(dst + j, cnn_lanes(0, n - j),
                              _mm512_permutex2var_ps(lo, even, hi));
    }
}

/* row[x0 + 2j] += src[j] for j < n where x0 + 2j is inside [0, w). */
static void scatter2_add(const float *src, int n, float *row, int w, int x0)
{
    const __m512i half = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2,
                                          2, 1, 1, 0, 0);
    const __m512i half_hi = _mm512_add_epi32(half, _mm512_set1_epi32(8));
    const __mmask16 even = 0x5555;
    for (int j = 0; j < n; j += 16) {
        int base = x0 + 2 * j, left = 2 * (n - j);
        __m512 s = _mm512_maskz_loadu_ps(cnn_lanes(0, n - j), src + j);
        __mmask16 m0 = even & cnn_lanes(-base, w - base) & cnn_lanes(0, left);
        __mmask16 m1 = even & cnn_lanes(-base - 16, w - base - 16) &
                       cnn_lanes(0, left - 16);
        float *at0 = cnn_lane_at(row, base), *at1 = cnn_lane_at(row, base + 16);
        __m512 r0 = _mm512_maskz_loadu_ps(m0, at0);
        __m512 r1 = _mm512_maskz_loadu_ps(m1, at1);
        _mm512_mask_storeu_ps(at0, m0, _mm512_add_ps(
                                  r0, _mm512_permutexvar_ps(half, s)));
        _mm512_mask_storeu_ps(at1, m1, _mm512_add_ps(
                                  r1, _mm512_permutexvar_ps(half_hi, s)));
    }
}
#endif

void cnn_im2col(const struct cnn_conv_geom *g, const float *im, float *col,
                int ld)
{
    if (g->stride == 1 && g->oh == g->h && g->ow == g->w) {
        im2col_same(g, im, col, ld);
        return;
    }
    for (int c = 0; c < g->c; c++) {
        const float *plane = im + (size_t)c * g->h * g->w;
        for (int ky = 0; ky < g->kh; ky++) {
            for (int kx = 0; kx < g->kw; kx++) {
                float *row = col + ((size_t)(c * g->kh + ky) * g->kw + kx) * ld;
                int lo, hi;
                valid_range(g, kx, &lo, &hi);
                for (int oy = 0; oy < g->oh; oy++) {
                    int y = oy * g->stride - g->pad + ky;
                    float *dst = row + oy * g->ow;
                    if (y < 0 || y >= g->h) {
                        memset(dst, 0, (size_t)g->ow * sizeof *dst);
                        continue;
                    }
#ifdef __AVX512F__
                    if (g->stride == 2) {
                        gather2(plane + (size_t)y * g->w, g->w, kx - g->pad,
                                g->ow, dst);
                        continue;
                    }
#endif
                    /* Input column of output column lo; >= 0 by lo's choice. */
                    const float *src = plane + (size_t)y * g->w +
                                       (lo * g->stride - g->pad + kx);
                    memset(dst, 0, (size_t)lo * sizeof *dst);
                    if (g->stride == 1)
                        memcpy(dst + lo, src, (size_t)(hi - lo) * sizeof *dst);
                    else
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox] = src[(ox - lo) * g->stride];
                    memset(dst + hi, 0, (size_t)(g->ow - hi) * sizeof *dst);
                }
            }
        }
    }
}

/* The adjoint of im2col_same: zero the edge entries of each row of col,
 * whose window lies in the padding, then add the row's span to the
 * plane shifted, in one pass instead of one per output row. */
static void col2im_same(const struct cnn_conv_geom *g, float *col, int ld,
                        float *im)
{
    size_t hw = (size_t)g->h * g->w;
    for (int c = 0; c < g->c; c++) {
        float *plane = im + c * hw;
        for (int k = 0; k < g->kh * g->kw; k++) {
            float *row = col + ((size_t)c * g->kh * g->kw + k) * ld;
            struct same_span sp;
            if (!same_span(g, k / g->kw, k % g->kw, &sp))
                continue;
            zero_edges(g, &sp, row);
            const float *src = row + sp.first;
            float *dst = plane + sp.first + sp.shift;
            for (size_t i = 0; i < sp.end - sp.first; i++)
                dst[i] += src[i];
        }
    }
}

void cnn_col2im(const struct cnn_conv_geom *g, float *col, int ld, float *im)
{
    if (g->stride == 1 && g->oh == g->h && g->ow == g->w) {
        col2im_same(g, col, ld, im);
        return;
    }
    for (int c = 0; c < g->c; c++) {
        float *plane = im + (size_t)c * g->h * g->w;
        for (int ky = 0; ky < g->kh; ky++) {
            for (int kx = 0; kx < g->kw; kx++) {
                const float *row =
                    col + ((size_t)(c * g->kh + ky) * g->kw + kx) * ld;
                int lo, hi;
                valid_range(g, kx, &lo, &hi);
                for (int oy = 0; oy < g->oh; oy++) {
                    int y = oy * g->stride - g->pad + ky;
                    if (y < 0 || y >= g->h)
                        continue;
#ifdef __AVX512F__
                    if (g->stride == 2) {
                        scatter2_add(row + oy * g->ow, g->ow,
                                     plane + (size_t)y * g->w, g->w,
                                     kx - g->pad);
                        continue;
                    }
#endif
                    const float *src = row + oy * g->ow + lo;
                    float *dst = plane + (size_t)y * g->w +
                                 (lo * g->stride - g->pad + kx);
                    if (g->stride == 1)
                        for (int i = 0; i < hi - lo; i++)
                            dst[i] += src[i];
                    else
                        for (int i = 0; i < hi - lo; i++)
                            dst[i * g->stride] += src[i];
                }
            }
        }
    }
}
