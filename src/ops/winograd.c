/*
 * Winograd's minimal filtering F(2x2, 3x3): a 3x3 convolution at stride
 * 1 with one pixel of zero padding, the output the size of the input.
 * Each 2x2 block of output (a tile) comes from the 4x4 block of input
 * around it. Input tiles (V = Bt d B) and filters (U = G g Gt) are taken
 * to a 4x4 transform domain, where the sum over input channels is 16
 * independent matrix products, one per point of the domain; the output
 * transform (Y = At m A) brings each 4x4 result back to 2x2 pixels. That
 * is 16 multiplications per 4 output pixels where direct convolution
 * takes 36: 2.25 times fewer, for some additions in the transforms.
 *
 In the domain, tiles are numbered through the examples of a call, row
 * by row, and padded to a multiple of 16: V is [16][c][tiles], U is
 * [16][c][fpad], the products M are [16][fpad][tiles]. The transforms
 * run along rows of tiles, as plain loops over arrays that the compiler
 * vectorizes: an input row is split into its even and odd pixels, after
 * which every tile's 4x4 block is in reach of unit-stride loads. A
 * product keeps 16 output channels of 16 tiles in registers while it
 * runs down the input channels, so the matrices need no packing. GCC's
 * vector extensions let the compiler pick the instructions (AVX-512
 * with -march=native); a build for plain x86-64 gives the same results,
 * slower.
 *
 * Rounding differs from im2col's in the last bits: the transforms add
 * and subtract inputs before the products.
 */
#include "cnn/ops.h"

#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

enum { L = CNN_WINO_LANES };

/* 16 floats, loaded and stored without an alignment promise. */
typedef float vec __attribute__((vector_size(L * sizeof(float)), aligned(4)));

void cnn_wino_plan(struct cnn_wino *p, int c, int f, int h, int w, int nb)
{
    p->c = c;
    p->f = f;
    p->h = h;
    p->w = w;
    p->th = (h + 1) / 2;
    p->tw = (w + 1) / 2;
    p->fpad = (f + L - 1) / L * L;
    p->nb = nb;
}

/* Tile slots per example: th rows of tw + 1, the last of each row a
 * dummy, so that the tile at (ty, tx) reads quarter planes at one flat
 * index ty * (tw + 1) + tx (see split_plane). */
static size_t slots_per(const struct cnn_wino *p)
{
    return (size_t)p->th * (p->tw + 1);
}

/* Tile slots of n examples, padded to whole vectors, and one vector
 * more: a plane's transform runs whole vectors past its end. */
static size_t tiles_for(const struct cnn_wino *p, int n)
{
    return ((size_t)n * slots_per(p) + L - 1) / L * L + L;
}

/* Floats of one quarter plane, with a vector of slack. */
static size_t quarter_floats(const struct cnn_wino *p)
{
    return (size_t)(p->th + 1) * (p->tw + 1) + 2 * L;
}

size_t cnn_wino_work_floats(const struct cnn_wino *p)
{
    return 16 * tiles_for(p, p->nb) * (p->c + p->fpad) +
           4 * quarter_floats(p);
}

size_t cnn_wino_weight_floats(const struct cnn_wino *p)
{
    return (size_t)16 * p->c * p->fpad;
}

void cnn_wino_weights(const struct cnn_wino *p, const float *W, bool adjoint,
                      float *U)
{
    memset(U, 0, cnn_wino_weight_floats(p) * sizeof *U);
    for (int o = 0; o < p->f; o++) {
        for (int i = 0; i < p->c; i++) {
            /* g[3][3]: the forward filter, or the adjoint's one: the
             * forward filter from output i to input o, turned 180. */
            float g[9];
            const float *src = adjoint ? W + ((size_t)i * p->f + o) * 9
                                       : W + ((size_t)o * p->c + i) * 9;
            for (int k = 0; k < 9; k++)
                g[k] = adjoint ? src[8 - k] : src[k];

            /* t = G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2. */
            float t[4][3];
            for (int j = 0; j < 3; j++) {
                float a = g[j], b = g[3 + j], c = g[6 + j];
                t[0][j] = a;
                t[1][j] = 0.5f * (a + b + c);
                t[2][j] = 0.5f * (a - b + c);
                t[3][j] = c;
            }
            /* u = t Gt, the same combination along the rows. */
            for (int r = 0; r < 4; r++) {
                float a = t[r][0], b = t[r][1], c = t[r][2];
                float u[4] = {a, 0.5f * (a + b + c), 0.5f * (a - b + c), c};
                for (int j = 0; j < 4; j++)
                    U[((size_t)(r * 4 + j) * p->c + i) * p->fpad + o] = u[j];
            }
        }
    }
}

static inline vec load(const float *p)
{
    return *(const vec *)p;
}

static inline void store(float *p, vec v)
{
    *(vec *)p = v;
}

/* od[j] = row[2j], ev[j + 1] = row[2j + 1] for the w pixels of a row,
 * zeros after them, od[0, S) and ev[0, S) filled; ev[0] = 0. */
static void split_row(const float *row, int w, int S, float *ev, float *od)
{
    ev[0] = 0.0f;
#ifdef __AVX512F__
    /* 32 pixels at a time; masked loads read zeros past the row. */
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16,
                                          14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int j = 0; j < S; j += 16) {
        int left = w - 2 * j;
        int na = left < 0 ? 0 : left > 16 ? 16 : left;
        int nb = left < 16 ? 0 : left > 32 ? 16 : left - 16;
        __m512 a = _mm512_maskz_loadu_ps((__mmask16)((1u << na) - 1),
                                         row + 2 * j);
        __m512 b = _mm512_maskz_loadu_ps((__mmask16)((1u << nb) - 1),
                                         row + 2 * j + 16);
        int nod = S - j < 16 ? S - j : 16, nev = S - 1 - j < 16 ? S - 1 - j
                                                                 : 16;
        _mm512_mask_storeu_ps(od + j, (__mmask16)((1u << nod) - 1),
                              _mm512_permutex2var_ps(a, even, b));
        if (nev > 0)
            _mm512_mask_storeu_ps(ev + j + 1, (__mmask16)((1u << nev) - 1),
                                  _mm512_permutex2var_ps(a, odd, b));
    }
#else
    int nev = w / 2, nod = (w + 1) / 2;     /* ev[1, nev], od[0, nod) */
    for (int j = 1; j <= nev; j++)
        ev[j] = row[2 * j - 1];
    for (int j = nev + 1; j < S; j++)
        ev[j] = 0.0f;
    for (int j = 0; j < nod; j++)
        od[j] = row[2 * j];
    for (int j = nod; j < S; j++)
        od[j] = 0.0f;
#endif
}

/* row[2j] = p0[j], row[2j + 1] = p1[j] for the w pixels of a row. p0 and
 * p1 may be read up to 16 floats past the w / 2 they give. */
static void merge_row(const float *p0, const float *p1, int w, float *row)
{
#ifdef __AVX512F__
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                                        18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    for (int j = 0; 2 * j < w; j += 16) {
        __m512 a = _mm512_loadu_ps(p0 + j), b = _mm512_loadu_ps(p1 + j);
        int left = w - 2 * j;
        int na = left > 16 ? 16 : left;
        int nb = left < 16 ? 0 : left > 32 ? 16 : left - 16;
        _mm512_mask_storeu_ps(row + 2 * j, (__mmask16)((1u << na) - 1),
                              _mm512_permutex2var_ps(a, lo, b));
        _mm512_mask_storeu_ps(row + 2 * j + 16, (__mmask16)((1u << nb) - 1),
                              _mm512_permutex2var_ps(a, hi, b));
    }
#else
    int even = w / 2;
    for (int j = 0; j < even; j++) {
        row[2 * j] = p0[j];
        row[2 * j + 1] = p1[j];
    }
    if (w % 2)
        row[w - 1] = p0[even];
#endif
}

/* The plane padded by one zero pixel all round, split into its four
 * phases: Q[2a + b][i * S + j] = x[2i + a - 1][2j + b - 1], S = tw + 1,
 * zero outside the image, i in [0, th], j in [0, tw]; the slack after
 * each quarter is zeroed. */
static void split_plane(const struct cnn_wino *p, const float *x, float *Q)
{
    int S = p->tw + 1, w = p->w;
    size_t qs = quarter_floats(p);
    for (int i = 0; i <= p->th; i++) {
        for (int a = 0; a < 2; a++) {
            int y = 2 * i + a - 1;
            float *ev = Q + (size_t)(2 * a) * qs + (size_t)i * S;
            float *od = ev + qs;
            if (y < 0 || y >= p->h) {
                memset(ev, 0, S * sizeof *ev);
                memset(od, 0, S * sizeof *od);
                continue;
            }
            split_row(x + (size_t)y * w, w, S, ev, od);
        }
    }
    size_t used = (size_t)(p->th + 1) * S;
    for (int k = 0; k < 4; k++)
        memset(Q + k * qs + used, 0, (qs - used) * sizeof *Q);
}

/* V[4r + c][k] = (Bt d B)[r][c] for the tiles k of one plane, from its
 * quarter planes; qstep floats between the 16 points. The rows of Bt
 * (and columns of B): d0 - d2, d1 + d2, d2 - d1, d1 - d3. The tile at
 * k has d[r][c] = Q[2 (r % 2) + c % 2][k + (r / 2) S + c / 2]. */
static void input_plane(const struct cnn_wino *p, const float *Q, float *V,
                        size_t qstep)
{
    size_t S = p->tw + 1, qs = quarter_floats(p), n = slots_per(p);
    for (size_t k = 0; k < n; k += L) {
        vec d[4][4], t[4][4];
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++)
                d[r][c] = load(Q + (2 * (r % 2) + c % 2) * qs + k +
                               (r / 2) * S + c / 2);
        for (int c = 0; c < 4; c++) {
            t[0][c] = d[0][c] - d[2][c];
            t[1][c] = d[1][c] + d[2][c];
            t[2][c] = d[2][c] - d[1][c];
            t[3][c] = d[1][c] - d[3][c];
        }
        for (int r = 0; r < 4; r++) {
            float *v = V + (size_t)(4 * r) * qstep + k;
            store(v, t[r][0] - t[r][2]);
            store(v + qstep, t[r][1] + t[r][2]);
            store(v + 2 * qstep, t[r][2] - t[r][1]);
            store(v + 3 * qstep, t[r][1] - t[r][3]);
        }
    }
}

/* M[q][f0 .. f0 + 16][lanes] = sum over c of U[q][c][f] V[q][c][lanes]
 * for one vector of tiles: sixteen accumulators, one per output
 * channel. */
static void product(const struct cnn_wino *p, const float *U, const float *V,
                    size_t tiles, float *M)
{
    for (int f0 = 0; f0 < p->fpad; f0 += L) {
        vec acc[L];
        for (int k = 0; k < L; k++)
            acc[k] = (vec){0};
        const float *u = U + f0;
        const float *v = V;
        for (int c = 0; c < p->c; c++, u += p->fpad, v += tiles) {
            vec vv = *(const vec *)v;
            for (int k = 0; k < L; k++)
                acc[k] += u[k] * vv;
        }
        for (int k = 0; k < L; k++)
            *(vec *)(M + (f0 + k) * tiles) = acc[k];
    }
}

/* One plane of output = At m A (+ b) from the products of its tiles,
 * m[q * qstep + k]. The rows of At: m0 + m1 + m2, m1 - m2 - m3. The
 * four pixels of each tile go to P[2a + b][k] first, whole vectors at a
 * time, then into place. */
static void output_plane(const struct cnn_wino *p, const float *m,
                         size_t qstep, float b, float *y, float *P)
{
    size_t S = p->tw + 1, qs = quarter_floats(p), n = slots_per(p);
    for (size_t k = 0; k < n; k += L) {
        vec r[2][4];
        for (int c = 0; c < 4; c++) {
            vec m0 = load(m + (size_t)(0 + c) * qstep + k);
            vec m1 = load(m + (size_t)(4 + c) * qstep + k);
            vec m2 = load(m + (size_t)(8 + c) * qstep + k);
            vec m3 = load(m + (size_t)(12 + c) * qstep + k);
            r[0][c] = m0 + m1 + m2;
            r[1][c] = m1 - m2 - m3;
        }
        for (int a = 0; a < 2; a++) {
            store(P + (2 * a) * qs + k, r[a][0] + r[a][1] + r[a][2] + b);
            store(P + (2 * a + 1) * qs + k, r[a][1] - r[a][2] - r[a][3] + b);
        }
    }
    for (int oy = 0; oy < p->h; oy++) {
        const float *p0 = P + (oy % 2 * 2) * qs + (oy / 2) * S;
        merge_row(p0, p0 + qs, p->w, y + (size_t)oy * p->w);
    }
}

/* V[16][c][tiles] for n examples of x. The slots past the last tile
 * are multiplied too: zeros, not whatever the last plane's vectors left
 * there. */
static void input_all(const struct cnn_wino *p, const float *x, int n,
                      float *V, float *Q)
{
    size_t tiles = tiles_for(p, n), per = slots_per(p);
    size_t used = (size_t)n * per, plane = (size_t)p->h * p->w;
    for (int e = 0; e < n; e++)
        for (int ch = 0; ch < p->c; ch++) {
            split_plane(p, x + ((size_t)e * p->c + ch) * plane, Q);
            input_plane(p, Q, V + ch * tiles + e * per, (size_t)p->c * tiles);
        }
    for (size_t r = 0; r < 16 * (size_t)p->c; r++)
        memset(V + r * tiles + used, 0, (tiles - used) * sizeof *V);
}

void cnn_wino_conv(const struct cnn_wino *p, const float *U, const float *bias,
                   const float *x, int n, float *y, float *work)
{
    size_t tiles = tiles_for(p, n), per = slots_per(p);
    size_t used = (size_t)n * per, plane = (size_t)p->h * p->w;
    size_t vq = (size_t)p->c * tiles, mq = (size_t)p->fpad * tiles;
    float *V = work;                    /* [16][c][tiles] */
    float *M = V + 16 * vq;             /* [16][fpad][tiles] */
    float *Q = M + 16 * mq;             /* [4][quarter_floats] */

    input_all(p, x, n, V, Q);
    for (int q = 0; q < 16; q++)
        for (size_t t = 0; t < used; t += L)
            product(p, U + (size_t)q * p->c * p->fpad, V + q * vq + t, tiles,
                    M + q * mq + t);

    for (int e = 0; e < n; e++)
        for (int f = 0; f < p->f; f++)
            output_plane(p, M + f * tiles + e * per, mq,
                         bias ? bias[f] : 0.0f,
                         y + ((size_t)e * p->f + f) * plane, Q);
}

/* --- the weight gradient -------------------------------------------------
 *
 * With Z = the sum over channels of U (.) V, the output is At Z A, so the
 * gradient of Z is E = A dY At (a tile's 2x2 output gradient taken to
 * 4x4), that of U is the sum over tiles of E (.) V, and that of the
 * filter is Gt dU G. The sum over tiles runs with 16 filters in the
 * lanes: the output gradient is first turned channels-last (it is a
 * quarter the size of E), so that E comes out as [16][tiles][fpad] and
 * the sum is the forward product's kernel with the roles turned: a
 * vector of E times a broadcast tile of V. */

bool cnn_wino_grad_ok(const struct cnn_wino *p)
{
    return p->c % L == 0;
}

size_t cnn_wino_grad_work_floats(const struct cnn_wino *p)
{
    size_t yt = (size_t)p->h * p->w * p->fpad, q = 4 * quarter_floats(p);
    return 16 * tiles_for(p, p->nb) * (p->c + p->fpad) + (yt > q ? yt : q);
}

/* yt[h * w][fpad] = dy[f][h * w] of one example, zero past f. */
static void channels_last(const struct cnn_wino *p, const float *dy, float *yt)
{
    size_t hw = (size_t)p->h * p->w;
    for (size_t i0 = 0; i0 < hw; i0 += L) {
        size_t i1 = i0 + L < hw ? i0 + L : hw;
        for (int f = 0; f < p->fpad; f++)
            for (size_t i = i0; i < i1; i++)
                yt[i * p->fpad + f] = f < p->f ? dy[f * hw + i] : 0.0f;
    }
}

/* E[q][t][fpad] for the tiles of one example, t from its first slot:
 * (A dy At) with the rows of A y0, y0 + y1, y0 - y1, -y1; zero in the
 * dummy slots. */
static void grad_example(const struct cnn_wino *p, const float *yt, float *E,
                         size_t qstep)
{
    int S = p->tw + 1, fp = p->fpad;
    static const vec zero;
    for (int ty = 0; ty < p->th; ty++) {
        for (int tx = 0; tx < S; tx++) {
            float *e = E + ((size_t)ty * S + tx) * fp;
            for (int f0 = 0; f0 < fp; f0 += L) {
                vec y[2][2], z[4][2];
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++) {
                        int oy = 2 * ty + a, ox = 2 * tx + b;
                        bool in = tx < p->tw && oy < p->h && ox < p->w;
                        y[a][b] = in ? load(yt + ((size_t)oy * p->w + ox) *
                                            fp + f0) : zero;
                    }
                for (int b = 0; b < 2; b++) {
                    z[0][b] = y[0][b];
                    z[1][b] = y[0][b] + y[1][b];
                    z[2][b] = y[0][b] - y[1][b];
                    z[3][b] = -y[1][b];
                }
                for (int i = 0; i < 4; i++) {
                    float *ei = e + (size_t)(4 * i) * qstep + f0;
                    store(ei, z[i][0]);
                    store(ei + qstep, z[i][0] + z[i][1]);
                    store(ei + 2 * qstep, z[i][0] - z[i][1]);
                    store(ei + 3 * qstep, -z[i][1]);
                }
            }
        }
    }
}

/* dUt[c][fpad] += sum over tiles t < n of V[c][t] E[t][fpad] at one point
 * of the domain: sixteen accumulators, one per channel, of sixteen
 * filters. */
static void grad_product(const struct cnn_wino *p, const float *E,
                         const float *V, size_t tiles, size_t n, float *dUt)
{
    int fp = p->fpad;
    for (int c0 = 0; c0 < p->c; c0 += L) {
        for (int f0 = 0; f0 < fp; f0 += L) {
            vec acc[L];
            for (int k = 0; k < L; k++)
                acc[k] = (vec){0};
            const float *v = V + (size_t)c0 * tiles;
            for (size_t t = 0; t < n; t++) {
                vec ev = load(E + t * fp + f0);
                for (int k = 0; k < L; k++)
                    acc[k] += v[k * tiles + t] * ev;
            }
            for (int k = 0; k < L; k++) {
                float *d = dUt + (size_t)(c0 + k) * fp + f0;
                store(d, load(d) + acc[k]);
            }
        }
    }
}

void cnn_wino_weight_grad(const struct cnn_wino *p, const float *x,
                          const float *dy, int n, float *dUt, float *work)
{
    size_t tiles = tiles_for(p, n), per = slots_per(p);
    size_t plane = (size_t)p->h * p->w, fp = p->fpad;
    size_t vq = (size_t)p->c * tiles, eq = tiles * fp;
    float *V = work;                    /* [16][c][tiles] */
    float *E = V + 16 * vq;             /* [16][tiles][fpad] */
    float *Q = E + 16 * eq;             /* quarter planes, or yt */

    for (int e = 0; e < n; e++) {
        channels_last(p, dy + (size_t)e * p->f * plane, Q);
        grad_example(p, Q, E + e * per * fp, eq);
    }
    input_all(p, x, n, V, Q);
    for (int q = 0; q < 16; q++)
        grad_product(p, E + q * eq, V + q * vq, tiles, (size_t)n * per,
                     dUt + (size_t)q * p->c * fp);
}

void cnn_wino_weight_grad_finish(const struct cnn_wino *p, const float *dUt,
                                 float *dW)
{
    /* The columns of G: (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0), (0, 1/2,
     * 1/2, 1). */
    static const float G[4][3] = {
        {1.0f, 0.0f, 0.0f}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f},
        {0.0f, 0.0f, 1.0f},
    };
    size_t qstep = (size_t)p->c * p->fpad;
    for (int f = 0; f < p->f; f++) {
        for (int c = 0; c < p->c; c++) {
            float u[4][4], t[3][4];
            for (int q = 0; q < 16; q++)
                u[q / 4][q % 4] = dUt[q * qstep + (size_t)c * p->fpad + f];
            for (int a = 0; a < 3; a++)
                for (int j = 0; j < 4; j++)
                    t[a][j] = G[0][a] * u[0][j] + G[1][a] * u[1][j] +
                              G[2][a] * u[2][j] + G[3][a] * u[3][j];
            float *dw = dW + ((size_t)f * p->c + c) * 9;
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++)
                    dw[a * 3 + b] += t[a][0] * G[0][b] + t[a][1] * G[1][b] +
                                     t[a][2] * G[2][b] + t[a][3] * G[3][b];
        }
    }
}
