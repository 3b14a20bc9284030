/*
 * im2col/col2im: unfold convolution windows into GEMM columns and fold
 * gradients back. Rows of col are (channel, ky, kx); columns are output
 * pixels in row-major order.
 */
#include "cnn/ops.h"

#include <string.h>

int cnn_conv_out_size(int in, int k, int stride, int pad)
{
    int span = in + 2 * pad - k;
    if (span < 0 || stride < 1)
        return -1;
    return span / stride + 1;
}

void cnn_im2col(const struct cnn_conv_geom *g, const float *im, float *col)
{
    int ohw = g->oh * g->ow;
    for (int c = 0; c < g->c; c++) {
        const float *plane = im + (size_t)c * g->h * g->w;
        for (int ky = 0; ky < g->kh; ky++) {
            for (int kx = 0; kx < g->kw; kx++) {
                float *row = col + ((size_t)(c * g->kh + ky) * g->kw + kx) * ohw;
                for (int oy = 0; oy < g->oh; oy++) {
                    int y = oy * g->stride - g->pad + ky;
                    float *dst = row + oy * g->ow;
                    if (y < 0 || y >= g->h) {
                        memset(dst, 0, (size_t)g->ow * sizeof *dst);
                        continue;
                    }
                    const float *src = plane + (size_t)y * g->w;
                    for (int ox = 0; ox < g->ow; ox++) {
                        int x = ox * g->stride - g->pad + kx;
                        dst[ox] = (x >= 0 && x < g->w) ? src[x] : 0.0f;
                    }
                }
            }
        }
    }
}

void cnn_col2im(const struct cnn_conv_geom *g, const float *col, float *im)
{
    int ohw = g->oh * g->ow;
    for (int c = 0; c < g->c; c++) {
        float *plane = im + (size_t)c * g->h * g->w;
        for (int ky = 0; ky < g->kh; ky++) {
            for (int kx = 0; kx < g->kw; kx++) {
                const float *row =
                    col + ((size_t)(c * g->kh + ky) * g->kw + kx) * ohw;
                for (int oy = 0; oy < g->oh; oy++) {
                    int y = oy * g->stride - g->pad + ky;
                    if (y < 0 || y >= g->h)
                        continue;
                    const float *src = row + oy * g->ow;
                    float *dst = plane + (size_t)y * g->w;
                    for (int ox = 0; ox < g->ow; ox++) {
                        int x = ox * g->stride - g->pad + kx;
                        if (x >= 0 && x < g->w)
                            dst[x] += src[ox];
                    }
                }
            }
        }
    }
}
