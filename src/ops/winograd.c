/*
 * Winograd's minimal filtering for r x r convolutions at stride 1 with
 * r / 2 pixels of zero padding, the output the size of the input:
 * F(4x4, 3x3) and F(2x2, 5x5). Each m x m block of output (a tile,
 * m = 4 or 2) comes from the 6 x 6 block of input around it. Input
 * blocks (V = Bt d B) and filters (U = G g Gt) are taken to a 6 x 6
 * transform domain, where the sum over input channels is 36
 * independent matrix products, one per point of the domain; the output
 * transform (Y = At m A) brings each result back to m x m pixels. That
 * is 36 multiplications per 16 output pixels (r = 3) or per 4 (r = 5)
 * where direct convolution takes 144 or 100: 4 or 2.8 times fewer, for
 * some additions in the transforms.
 *
 * The matrices come from the Toom-Cook construction on the points 0, 1,
 * -1, 2, -2 (1/2, -1/2 for r = 5) and infinity, with the rows of Bt and
 * G scaled against each other so that Bt is in integers. The identity
 * At [(G g Gt) . (Bt d B)] A = the correlation of d with g was checked in
 * exact arithmetic, and tests check every path against direct sums.
 * F(4x4, 3x3) rounds coarser than F(2x2, 3x3) would (its points reach
 * 2, and At's rows 8): the layer tests see differences of 1e-5 from
 * exact sums on unit-normal inputs.
 *
 * In the domain, tiles are numbered through the examples of a call, row
 * by row, padded to a multiple of 16: V is [36][c][tiles], U is
 * [36][c][fpad], the products M are [36][fpad][tiles]. Each plane is
 * first split into its m * m phases (rows y = i m + py by columns
 * x = j m + px), kept in copies a phase row apart, after which the
 * block of every tile lies at fixed offsets of one flat index of slots,
 * each phase row ending in dummy slots; the examples' slots follow each
 * other, and the input transform runs whole vectors over all of them,
 * moving the tiles down over the dummies, so that the products, the
 * output transform and the weight gradient see tiles only. A product
 * keeps 16 output channels of 16 tiles in
 * registers while it runs down the input channels, so the matrices need
 * no packing. GCC's vector extensions let the compiler pick the
 * instructions (AVX-512 with -march=native); a build for plain x86-64
 * runs the same arithmetic, slower, and rounds differently only where
 * the native build fuses a multiply and an add.
 *
 * Rounding differs from im2col's in the last bits: the transforms add
 * and subtract inputs before the products.
 */
#include "cnn/ops.h"

#include <string.h>

#include "lanes.h"

enum { L = CNN_WINO_LANES, A = 6, POINTS = A * A, MMAX = 4 };

/* 16 floats, loaded and stored without an alignment promise. */
typedef float vec __attribute__((vector_size(L * sizeof(float)), aligned(4)));

static inline vec load(const float *p)
{
    return *(const vec *)p;
}

static inline void store(float *p, vec v)
{
    *(vec *)p = v;
}

/* Kernels written for a constant filter size, inlined where they are
 * called with one, so that the arithmetic on tile offsets folds. */
#define FOLDED static inline __attribute__((always_inline))

/* The filter transforms G, tables for the weights' two passes; the
 * input and output transforms are written out in bt, at and a_t. */
static const float G43[A][5] = {
    {0.25f, 0, 0},
    {-1.0f / 6, -1.0f / 6, -1.0f / 6},
    {-1.0f / 6, 1.0f / 6, -1.0f / 6},
    {1.0f / 24, 1.0f / 12, 1.0f / 6},
    {1.0f / 24, -1.0f / 12, 1.0f / 6},
    {0, 0, 1},
};

static const float G25[A][5] = {
    {1, 0, 0, 0, 0},
    {1.0f / 6, 1.0f / 6, 1.0f / 6, 1.0f / 6, 1.0f / 6},
    {1.0f / 6, -1.0f / 6, 1.0f / 6, -1.0f / 6, 1.0f / 6},
    {-4.0f / 3, -2.0f / 3, -1.0f / 3, -1.0f / 6, -1.0f / 12},
    {-4.0f / 3, 2.0f / 3, -1.0f / 3, 1.0f / 6, -1.0f / 12},
    {0, 0, 0, 0, 0.25f},
};

bool cnn_wino_fits(int k, int stride, int pad)
{
    return (k == 3 || k == 5) && stride == 1 && pad == k / 2;
}

/* The output tile's side for a filter's. */
static inline int tile_side(int r)
{
    return r == 3 ? 4 : 2;
}

void cnn_wino_plan(struct cnn_wino *p, int r, int c, int f, int h, int w,
                   int nb)
{
    p->r = r;
    p->m = tile_side(r);
    p->c = c;
    p->f = f;
    p->h = h;
    p->w = w;
    p->th = (h + p->m - 1) / p->m;
    p->tw = (w + p->m - 1) / p->m;
    /* A block reaches (A - 1) / m phase columns and rows past its
     * tile's: tw slots of a row are tiles and the rest are dummies, so
     * that every tile's block is at the same offsets of its slot. */
    p->S = p->tw + (A - 1) / p->m;
    p->fpad = (f + L - 1) / L * L;
    p->nb = nb;
}

/* Slots of an example in the phase planes, dummies included, and its
 * tiles, which the transform domain holds without the dummies. */
static size_t slots_per(const struct cnn_wino *p)
{
    return (size_t)p->th * p->S;
}

static size_t tiles_per(const struct cnn_wino *p)
{
    return (size_t)p->th * p->tw;
}

/* Tiles of n examples, padded to whole vectors. */
static size_t tiles_for(const struct cnn_wino *p, int n)
{
    return ((size_t)n * tiles_per(p) + L - 1) / L * L;
}

int cnn_wino_fill(const struct cnn_wino *p)
{
    /* The fewest examples with two vectors of tiles or more, of which
     * padding is at most an eighth. */
    size_t per = tiles_per(p);
    int n = 1;
    while (n < 64 && (n * per < 2 * L || 8 * (tiles_for(p, n) - n * per) >
                                               tiles_for(p, n)))
        n++;
    return n;
}

/* Floats from one point of the domain to the next in V, M and E, for
 * n floats a point: a vector more than those, so that a tile's 36
 * stores, whole multiples of 1 KiB apart without it, do not crowd into
 * the same few sets of the level-1 cache. */
static size_t point_floats(size_t n)
{
    return n + L;
}

/* A block reaches this many phase rows from its tile's (2 or 3): the
 * phases are kept in as many copies, copy c holding the rows from c on,
 * so that every block lies at fixed offsets of its tile's slot in them
 * and the slots of n examples follow each other without a gap. */
static int copies(const struct cnn_wino *p)
{
    return (A - 1) / p->m + 1;
}

/* Floats of one phase of one copy for n examples, in whole vectors,
 * with a vector of slack for the blocks past the last tile and one for
 * merge_plane's reads past a row. */
static size_t phase_floats(const struct cnn_wino *p, int n)
{
    return ((size_t)n * slots_per(p) + L - 1) / L * L + 2 * L;
}

/* Floats of all phases of all copies for n examples. */
static size_t phases_floats(const struct cnn_wino *p, int n)
{
    return (size_t)copies(p) * p->m * p->m * phase_floats(p, n);
}

size_t cnn_wino_work_floats(const struct cnn_wino *p)
{
    size_t tiles = tiles_for(p, p->nb);
    return POINTS * (point_floats(p->c * tiles) +
                     point_floats(p->fpad * tiles)) + phases_floats(p, p->nb);
}

size_t cnn_wino_weight_floats(const struct cnn_wino *p)
{
    return (size_t)POINTS * p->c * p->fpad;
}
struct weights_job {
    const struct cnn_wino *p;
    const float *W;
    bool adjoint;
    float *U;
};

/* U[q][i][o] for input channel i, 16 output channels o at a time: the
 * filters g of a block of them gathered with o in the lanes (zero past
 * f), then G g Gt on whole vectors. */
FOLDED void weights_channel(const struct weights_job *j, int i, int r)
{
    const struct cnn_wino *p = j->p;
    const float (*G)[5] = r == 3 ? G43 : G25;
    int rr = r * r;
    for (int o0 = 0; o0 < p->fpad; o0 += L) {
        /* g[k][lane]: the forward filter from input i to output
         * o0 + lane, or the adjoint's: the forward filter from output
         * i to input o0 + lane, turned 180. */
        float g[25][L];
        for (int l = 0; l < L; l++) {
            int o = o0 + l;
            if (o >= p->f) {
                for (int k = 0; k < rr; k++)
                    g[k][l] = 0.0f;
                continue;
            }
            const float *src = j->adjoint
                                   ? j->W + ((size_t)i * p->f + o) * rr
                                   : j->W + ((size_t)o * p->c + i) * rr;
            for (int k = 0; k < rr; k++)
                g[k][l] = j->adjoint ? src[rr - 1 - k] : src[k];
        }
        vec t[A][5];
        for (int x = 0; x < A; x++)                 /* t = G g */
            for (int y = 0; y < r; y++) {
                vec sum = {0};
                for (int k = 0; k < r; k++)
                    sum += G[x][k] * load(g[k * r + y]);
                t[x][y] = sum;
            }
        for (int x = 0; x < A; x++)                 /* u = t Gt */
            for (int y = 0; y < A; y++) {
                vec sum = {0};
                for (int k = 0; k < r; k++)
                    sum += t[x][k] * G[y][k];
                store(j->U + ((size_t)(x * A + y) * p->c + i) * p->fpad + o0,
                      sum);
            }
    }
}

/* U for input channels [lo, hi). */
static void weights_part(void *ctx, int lo, int hi)
{
    const struct weights_job *j = ctx;
    for (int i = lo; i < hi; i++) {
        if (j->p->r == 3)
            weights_channel(j, i, 3);
        else
            weights_channel(j, i, 5);
    }
}

void cnn_wino_weights(const struct cnn_wino *p, const float *W, bool adjoint,
                      float *U)
{
    struct weights_job j = {p, W, adjoint, U};
    cnn_parallel_for(p->c, weights_part, &j);
}

/* The plane padded by r / 2 zero pixels all round, split into its
 * m * m phases, in copies: Q[(c m + py) m + px][i S + j] = x[(i + c) m
 * + py - pad][j m + px - pad], for i < th and j < S, qs floats from one
 * phase to the next. Only the image's rows are written: the rows of
 * padding and the slack after each phase are the same for every plane,
 * zeroed once by the caller. */
FOLDED void split_phases(const struct cnn_wino *p, const float *x, float *Q,
                         size_t qs, int m)
{
    int S = p->S, w = p->w, pad = p->r / 2, nc = copies(p);
#ifdef __AVX512F__
    /* 16 slots of a row of each phase at a time, from the 16 m pixels
     * they start at; masked loads read zeros outside the row and never
     * fault. The masks are the same for every row. Phase px's lane l is
     * pixel l m + px of those: from the first 32 for l < 32 / m, from
     * the next 32 above. */
    __m512i pick[MMAX];
    for (int px = 0; px < m; px++) {
        int at[L];
        for (int l = 0; l < L; l++)
            at[l] = (l * m + px) % 32;
        pick[px] = _mm512_loadu_si512(at);
    }
    __mmask16 upper = (__mmask16)(0xffffu << (32 / m));
    for (int j = 0; j < S; j += L) {
        int first = pad - m * j;    /* lane of the row's first pixel */
        /* Vectors of pixels needed: all m, or 2 where the slots left
         * are no more than the first 32 pixels give. */
        int nv = S - j > 32 / m ? m : 2;
        __mmask16 in[MMAX];
        for (int q = 0; q < m; q++)
            in[q] = cnn_lanes(first - L * q, first - L * q + w);
        __mmask16 out = cnn_lanes(0, S - j);
        for (int y = 0; y < p->h; y++) {
            const float *row = x + (size_t)y * w;
            int i = (y + pad) / m, py = (y + pad) % m;
            __m512 v[MMAX], got[MMAX];
            for (int q = 0; q < nv; q++)
                v[q] = _mm512_maskz_loadu_ps(in[q],
                                             cnn_lane_at(row, L * q - first));
            for (int px = 0; px < m; px++) {
                got[px] = _mm512_permutex2var_ps(v[0], pick[px], v[1]);
                if (nv == 4)
                    got[px] = _mm512_mask_blend_ps(
                        upper, got[px],
                        _mm512_permutex2var_ps(v[2], pick[px], v[3]));
            }
            for (int c = 0; c < nc; c++) {
                if (i - c < 0 || i - c >= p->th)
                    continue;
                float *ph = Q + (size_t)((c * m + py) * m) * qs +
                            (size_t)(i - c) * S + j;
                for (int px = 0; px < m; px++)
                    _mm512_mask_storeu_ps(ph + px * qs, out, got[px]);
            }
        }
    }
#else
    for (int y = 0; y < p->h; y++) {
        const float *row = x + (size_t)y * w;
        int i = (y + pad) / m, py = (y + pad) % m;
        for (int c = 0; c < nc; c++) {
            if (i - c < 0 || i - c >= p->th)
                continue;
            for (int px = 0; px < m; px++) {
                float *ph = Q + (size_t)((c * m + py) * m + px) * qs +
                            (size_t)(i - c) * S;
                for (int j = 0; j < S; j++) {
                    int xx = m * j + px - pad;
                    ph[j] = xx >= 0 && xx < w ? row[xx] : 0.0f;
                }
            }
        }
    }
#endif
}

static void split_plane(const struct cnn_wino *p, const float *x, float *Q,
                        size_t qs)
{
    if (p->m == 4)
        split_phases(p, x, Q, qs, 4);
    else
        split_phases(p, x, Q, qs, 2);
}

/* The plane from its phases: y[i m + py][j m + px] = P[py m + px][i tw
 * + j] for the h x w pixels, a tile each, qs floats from one phase to
 * the next. P's phases may be read up to 16 floats past the tw columns
 * they give. */
FOLDED void merge_phases(const struct cnn_wino *p, const float *P, size_t qs,
                         float *y, int m)
{
    int tw = p->tw, w = p->w;
#ifdef __AVX512F__
    /* 16 slots of each phase of a row at a time, m vectors of pixels.
     * Pixel l of vector q is slot 16 q / m + l / m of phase l % m: phases
     * 0 and 1 are one table, 2 and 3 another, blended by lane. */
    __m512i pick[MMAX];
    for (int q = 0; q < m; q++) {
        int at[L];
        for (int l = 0; l < L; l++)
            at[l] = (l % m & 1) * L + L * q / m + l / m;
        pick[q] = _mm512_loadu_si512(at);
    }
    const __mmask16 high = 0xcccc;      /* lanes of phases 2 and 3 */
    for (int j = 0; j * m < w; j += L) {
        /* Vectors of pixels in the row from here, up to m. */
        int nq = (w - m * j + L - 1) / L < m ? (w - m * j + L - 1) / L : m;
        __mmask16 keep[MMAX];
        for (int q = 0; q < m; q++)
            keep[q] = cnn_lanes(0, w - m * j - L * q);
        for (int oy = 0; oy < p->h; oy++) {
            float *row = y + (size_t)oy * w + (size_t)m * j;
            const float *ph = P + (size_t)(oy % m * m) * qs +
                              (size_t)(oy / m) * tw + j;
            __m512 v[MMAX];
            for (int px = 0; px < m; px++)
                v[px] = _mm512_loadu_ps(ph + px * qs);
            for (int q = 0; q < nq; q++) {
                __m512 got = _mm512_permutex2var_ps(v[0], pick[q], v[1]);
                if (m == 4)
                    got = _mm512_mask_blend_ps(
                        high, got,
                        _mm512_permutex2var_ps(v[2], pick[q], v[3]));
                _mm512_mask_storeu_ps(cnn_lane_at(row, L * q), keep[q], got);
            }
        }
    }
#else
    for (int oy = 0; oy < p->h; oy++) {
        const float *ph = P + (size_t)(oy % m * m) * qs + (size_t)(oy / m) * tw;
        float *row = y + (size_t)oy * w;
        for (int ox = 0; ox < w; ox++)
            row[ox] = ph[(size_t)(ox % m) * qs + ox / m];
    }
#endif
}

static void merge_plane(const struct cnn_wino *p, const float *P, size_t qs,
                        float *y)
{
    if (p->m == 4)
        merge_phases(p, P, qs, y, 4);
    else
        merge_phases(p, P, qs, y, 2);
}

/* Bt applied to six vectors. F(4x4, 3x3): the rows of Bt are
 * 4 d0 - 5 d2 + d4, (d3 + d4) - 4 (d1 + d2), (d4 - d3) + 4 (d1 - d2),
 * (d4 - d2) + 2 (d3 - d1), (d4 - d2) - 2 (d3 - d1), 4 d1 - 5 d3 + d5.
 * F(2x2, 5x5): d0 - 5 d2 + 4 d4, 4 (d3 + d4) - (d1 + d2),
 * 4 (d4 - d3) + (d1 - d2), 2 (d4 - d2) + (d3 - d1),
 * 2 (d4 - d2) - (d3 - d1), d1 - 5 d3 + 4 d5. */
FOLDED void bt(int r, const vec d[A], vec t[A])
{
    vec s12 = d[1] + d[2], m12 = d[1] - d[2], m31 = d[3] - d[1];
    vec s34 = d[3] + d[4], m43 = d[4] - d[3], m42 = d[4] - d[2];
    if (r == 3) {
        m31 *= 2.0f;
        t[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
        t[1] = s34 - 4.0f * s12;
        t[2] = m43 + 4.0f * m12;
        t[3] = m42 + m31;
        t[4] = m42 - m31;
        t[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
    } else {
        m42 *= 2.0f;
        t[0] = d[0] - 5.0f * d[2] + 4.0f * d[4];
        t[1] = 4.0f * s34 - s12;
        t[2] = 4.0f * m43 + m12;
        t[3] = m42 + m31;
        t[4] = m42 - m31;
        t[5] = d[1] - 5.0f * d[3] + 4.0f * d[5];
    }
}

/* At applied to six vectors, giving m. F(4x4, 3x3): the rows of At are
 * x0 + (x1 + x2) + (x3 + x4), (x1 - x2) + 2 (x3 - x4),
 * (x1 + x2) + 4 (x3 + x4), (x1 - x2) + 8 (x3 - x4) + x5. F(2x2, 5x5):
 * x0 + x1 + x2 + x3 + x4, x1 - x2 + (x3 - x4) / 2 + x5. */
FOLDED void at(int r, const vec x[A], vec o[MMAX])
{
    vec s12 = x[1] + x[2], d12 = x[1] - x[2];
    vec s34 = x[3] + x[4], d34 = x[3] - x[4];
    o[0] = x[0] + s12 + s34;
    if (r == 3) {
        o[1] = d12 + 2.0f * d34;
        o[2] = s12 + 4.0f * s34;
        o[3] = d12 + 8.0f * d34 + x[5];
    } else {
        o[1] = d12 + 0.5f * d34 + x[5];
    }
}

/* A, At turned, applied to m vectors, giving six. F(4x4, 3x3): y0,
 * (y0 + y2) + (y1 + y3), (y0 + y2) - (y1 + y3), (y0 + 4 y2) + (2 y1 +
 * 8 y3), (y0 + 4 y2) - (2 y1 + 8 y3), y3. F(2x2, 5x5): y0, y0 + y1,
 * y0 - y1, y0 + y1 / 2, y0 - y1 / 2, y1. */
FOLDED void a_t(int r, const vec y[MMAX], vec z[A])
{
    z[0] = y[0];
    if (r == 3) {
        vec s02 = y[0] + y[2], s13 = y[1] + y[3];
        vec f02 = y[0] + 4.0f * y[2], f13 = 2.0f * y[1] + 8.0f * y[3];
        z[1] = s02 + s13;
        z[2] = s02 - s13;
        z[3] = f02 + f13;
        z[4] = f02 - f13;
        z[5] = y[3];
    } else {
        vec h = 0.5f * y[1];
        z[1] = y[0] + y[1];
        z[2] = y[0] - y[1];
        z[3] = y[0] + h;
        z[4] = y[0] - h;
        z[5] = y[1];
    }
}

/* The tiles' lanes of the 16 slots in v, moved down to the lowest
 * lanes, zeros above, stored at V: the next vector's store goes over
 * the lanes past them. */
static inline void store_tiles(float *V, vec v, unsigned tiles)
{
#ifdef __AVX512F__
    _mm512_storeu_ps(V, _mm512_maskz_compress_ps((__mmask16)tiles, (__m512)v));
#else
    float out[L] = {0};
    for (int l = 0, at = 0; l < L; l++)
        if (tiles >> l & 1)
            out[at++] = v[l];
    memcpy(V, out, sizeof out);
#endif
}

/* V[6y + x][t] = (Bt d B)[y][x] for the tiles of the slots k < n of one
 * channel of the examples, t counting tiles only, qstep floats between
 * points: Bt down the columns of each block, then along the rows. The
 * block at slot k has d[y][x] = Q[((y / m) m + y % m) m + x % m][k +
 * x / m], qs floats from one phase to the next; the last S - tw slots
 * of each row of S are dummies, left out. V's rows may be written up to
 * 16 floats past the last tile. */
FOLDED void input_slots(const struct cnn_wino *p, const float *Q, size_t qs,
                        float *V, size_t qstep, size_t n, int r)
{
    int m = tile_side(r), S = p->S;
    /* slot_x[l]: the column in its row of slot k + l. */
    int slot_x[L];
    for (int l = 0; l < L; l++)
        slot_x[l] = l % S;
    size_t done = 0;        /* tiles stored */
    for (size_t k = 0; k < n; k += L) {
        unsigned tiles = 0;
        for (int l = 0; l < L; l++) {
            if (slot_x[l] < p->tw && k + l < n)
                tiles |= 1u << l;
            slot_x[l] += L % S;
            slot_x[l] -= slot_x[l] >= S ? S : 0;
        }
        vec t[A][A];
        for (int x = 0; x < A; x++) {
            vec col[A], out[A];
            for (int y = 0; y < A; y++)
                col[y] = load(Q + (size_t)((y / m * m + y % m) * m + x % m) *
                                  qs + k + x / m);
            bt(r, col, out);
            for (int i = 0; i < A; i++)
                t[i][x] = out[i];
        }
        for (int i = 0; i < A; i++) {
            vec d[A];
            bt(r, t[i], d);
            for (int j = 0; j < A; j++)
                store_tiles(V + (size_t)(A * i + j) * qstep + done, d[j],
                            tiles);
        }
        done += (size_t)__builtin_popcount(tiles);
    }
    /* Zeros for the rest of the last vector of tiles. */
    for (int q = 0; q < POINTS; q++)
        store(V + (size_t)q * qstep + done, (vec){0});
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

/* P[py m + px][k] = (At m A)[py][px] (+ b) for the tiles k < n of one
 * output channel of the examples, from their products mt[q * qstep +
 * k]: At down the columns, then along the rows, whole vectors at a
 * time, qs floats from one phase of P to the next. */
FOLDED void output_slots(const struct cnn_wino *p, const float *mt,
                         size_t qstep, float b, float *P, size_t qs,
                         size_t n, int r)
{
    (void)p;
    int m = tile_side(r);
    for (size_t k = 0; k < n; k += L) {
        vec t[MMAX][A];
        for (int x = 0; x < A; x++) {
            vec col[A], out[MMAX];
            for (int i = 0; i < A; i++)
                col[i] = load(mt + (size_t)(A * i + x) * qstep + k);
            at(r, col, out);
            for (int o = 0; o < m; o++)
                t[o][x] = out[o];
        }
        for (int o = 0; o < m; o++) {
            vec out[MMAX];
            at(r, t[o], out);
            for (int j = 0; j < m; j++)
                store(P + (size_t)(o * m + j) * qs + k, out[j] + b);
        }
    }
}

/* V[36][c][tiles] for n examples of x. The tiles of the last vector
 * past the last one are multiplied too: zeros. (A row's stores past its
 * tiles land on the next channel's, written after it, or on the vector
 * of slack between points: the channels must go in order, on one
 * thread.) */
static void input_all(const struct cnn_wino *p, const float *x, int n,
                      float *V, float *Q)
{
    size_t tiles = tiles_for(p, n), per = slots_per(p);
    size_t plane = (size_t)p->h * p->w;
    size_t vq = point_floats(p->c * tiles), qs = phase_floats(p, n);
    memset(Q, 0, phases_floats(p, n) * sizeof *Q);
    for (int ch = 0; ch < p->c; ch++) {
        for (int e = 0; e < n; e++)
            split_plane(p, x + ((size_t)e * p->c + ch) * plane, Q + e * per,
                        qs);
        if (p->r == 3)
            input_slots(p, Q, qs, V + ch * tiles, vq, n * per, 3);
        else
            input_slots(p, Q, qs, V + ch * tiles, vq, n * per, 5);
    }
}

void cnn_wino_conv(const struct cnn_wino *p, const float *U, const float *bias,
                   const float *x, int n, float *y, float *work)
{
    size_t tiles = tiles_for(p, n), per = tiles_per(p);
    size_t used = (size_t)n * per, plane = (size_t)p->h * p->w;
    size_t vq = point_floats(p->c * tiles);
    size_t mq = point_floats(p->fpad * tiles), qs = phase_floats(p, n);
    float *V = work;                        /* [36][c][tiles] */
    float *M = V + POINTS * vq;             /* [36][fpad][tiles] */
    float *Q = M + POINTS * mq;             /* phases, in copies */

    input_all(p, x, n, V, Q);
    for (int q = 0; q < POINTS; q++)
        for (size_t t = 0; t < used; t += L)
            product(p, U + (size_t)q * p->c * p->fpad, V + q * vq + t, tiles,
                    M + q * mq + t);
    for (int f = 0; f < p->f; f++) {
        float b = bias ? bias[f] : 0.0f;
        if (p->r == 3)
            output_slots(p, M + f * tiles, mq, b, Q, qs, used, 3);
        else
            output_slots(p, M + f * tiles, mq, b, Q, qs, used, 5);
        for (int e = 0; e < n; e++)
            merge_plane(p, Q + e * per, qs,
                        y + ((size_t)e * p->f + f) * plane);
    }
}


/* --- the weight gradient -------------------------------------------------
 *
 * With Z = the sum over channels of U (.) V, the output is At Z A, so the
 * gradient of Z is E = A dY At (a tile's m x m output gradient taken
 * to 6 x 6), that of U is the sum over tiles of E (.) V, and that of the
 * filter is Gt dU G. The sum over tiles runs with 16 filters in the
 * lanes: the output gradient is first turned channels-last (it is a
 * small part of E's size), so that E comes out as [points][tiles][fpad]
 * and the sum is the forward product's kernel with the roles turned: a
 * vector of E times a broadcast tile of V. */

bool cnn_wino_grad_ok(const struct cnn_wino *p)
{
    return p->c % L == 0;
}

size_t cnn_wino_grad_work_floats(const struct cnn_wino *p)
{
    size_t yt = (size_t)p->h * p->w * p->fpad, q = phases_floats(p, p->nb);
    size_t tiles = tiles_for(p, p->nb);
    return POINTS * (point_floats(p->c * tiles) +
                     point_floats(tiles * p->fpad)) +
           (yt > q ? yt : q);
}

/* yt[h * w][fpad] = dy[f][h * w] of one example, zero past f. */
static void channels_last(const struct cnn_wino *p, const float *dy, float *yt)
{
    size_t hw = (size_t)p->h * p->w, fp = p->fpad;
#ifdef __AVX512F__
    /* Blocks of 16 filters by 16 pixels, turned in registers: pairs of
     * rows interleaved, then fours, then the 128-bit quarters. */
    for (size_t i0 = 0; i0 < hw; i0 += L) {
        size_t left = hw - i0;
        __mmask16 cols = cnn_lanes(0, left < L ? (int)left : L);
        for (int f0 = 0; f0 < p->fpad; f0 += L) {
            __m512 r[L], t[L];
            for (int k = 0; k < L; k++)
                r[k] = f0 + k < p->f
                           ? _mm512_maskz_loadu_ps(
                                 cols, dy + (size_t)(f0 + k) * hw + i0)
                           : _mm512_setzero_ps();
            for (int k = 0; k < L; k += 2) {
                t[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
                t[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
            }
            /* r[4g + c]: rows 4g .. 4g + 3 at column 4b + c of each
             * quarter b. */
            for (int k = 0; k < L; k += 4) {
                r[k] = _mm512_shuffle_ps(t[k], t[k + 2], 0x44);
                r[k + 1] = _mm512_shuffle_ps(t[k], t[k + 2], 0xee);
                r[k + 2] = _mm512_shuffle_ps(t[k + 1], t[k + 3], 0x44);
                r[k + 3] = _mm512_shuffle_ps(t[k + 1], t[k + 3], 0xee);
            }
            for (int c = 0; c < 4; c++) {
                __m512 a0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
                __m512 a1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
                __m512 a2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
                __m512 a3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
                __m512 col[4] = {_mm512_shuffle_f32x4(a0, a2, 0x88),
                                 _mm512_shuffle_f32x4(a1, a3, 0x88),
                                 _mm512_shuffle_f32x4(a0, a2, 0xdd),
                                 _mm512_shuffle_f32x4(a1, a3, 0xdd)};
                for (int b = 0; b < 4; b++)
                    if ((size_t)(4 * b + c) < left)
                        _mm512_storeu_ps(yt + (i0 + 4 * b + c) * fp + f0,
                                         col[b]);
            }
        }
    }
#else
    for (size_t i0 = 0; i0 < hw; i0 += L) {
        size_t i1 = i0 + L < hw ? i0 + L : hw;
        for (size_t f = 0; f < fp; f++)
            for (size_t i = i0; i < i1; i++)
                yt[i * fp + f] = f < (size_t)p->f ? dy[f * hw + i] : 0.0f;
    }
#endif
}

/* E[q][t][fpad] for the tiles of one example, t from its first tile:
 * A dy At, down the columns of each tile's output gradient, then along
 * the rows. */
FOLDED void grad_example(const struct cnn_wino *p, const float *yt, float *E,
                         size_t qstep, int r)
{
    int tw = p->tw, fp = p->fpad, m = tile_side(r);
    static const vec zero;
    for (int ty = 0; ty < p->th; ty++) {
        for (int tx = 0; tx < tw; tx++) {
            float *e = E + ((size_t)ty * tw + tx) * fp;
            for (int f0 = 0; f0 < fp; f0 += L) {
                vec z[A][MMAX];
                for (int j = 0; j < m; j++) {
                    vec col[MMAX], out[A];
                    for (int i = 0; i < m; i++) {
                        int oy = m * ty + i, ox = m * tx + j;
                        bool in = oy < p->h && ox < p->w;
                        col[i] = in ? load(yt + ((size_t)oy * p->w + ox) *
                                           fp + f0) : zero;
                    }
                    a_t(r, col, out);
                    for (int i = 0; i < A; i++)
                        z[i][j] = out[i];
                }
                for (int i = 0; i < A; i++) {
                    vec out[A];
                    a_t(r, z[i], out);
                    for (int j = 0; j < A; j++)
                        store(e + (size_t)(A * i + j) * qstep + f0, out[j]);
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
    size_t tiles = tiles_for(p, n), per = tiles_per(p);
    size_t plane = (size_t)p->h * p->w, fp = p->fpad;
    size_t vq = point_floats(p->c * tiles), eq = point_floats(tiles * fp);
    float *V = work;                        /* [36][c][tiles] */
    float *E = V + POINTS * vq;             /* [36][tiles][fpad] */
    float *Q = E + POINTS * eq;             /* phase planes, or yt */

    for (int e = 0; e < n; e++) {
        channels_last(p, dy + (size_t)e * p->f * plane, Q);
        if (p->r == 3)
            grad_example(p, Q, E + e * per * fp, eq, 3);
        else
            grad_example(p, Q, E + e * per * fp, eq, 5);
    }
    input_all(p, x, n, V, Q);
    for (int q = 0; q < POINTS; q++)
        grad_product(p, E + q * eq, V + q * vq, tiles, (size_t)n * per,
                     dUt + (size_t)q * p->c * fp);
}

struct finish_job {
    const struct cnn_wino *p;
    const float *dUt;
    float *dW;
};

/* dW[f][c] += Gt dU G for input channel c, 16 filters f at a time, on
 * whole vectors; the r x r results go out lane by lane. */
FOLDED void finish_channel(const struct finish_job *j, int c, int r)
{
    const struct cnn_wino *p = j->p;
    const float (*G)[5] = r == 3 ? G43 : G25;
    size_t qstep = (size_t)p->c * p->fpad;
    for (int f0 = 0; f0 < p->f; f0 += L) {
        const float *u = j->dUt + (size_t)c * p->fpad + f0;
        vec t[5][A];
        for (int i = 0; i < r; i++)                 /* t = Gt u */
            for (int y = 0; y < A; y++) {
                vec sum = {0};
                for (int x = 0; x < A; x++)
                    sum += G[x][i] * load(u + (size_t)(x * A + y) * qstep);
                t[i][y] = sum;
            }
        float dg[25][L];
        for (int i = 0; i < r; i++)                 /* dg = t G */
            for (int k = 0; k < r; k++) {
                vec sum = {0};
                for (int y = 0; y < A; y++)
                    sum += t[i][y] * G[y][k];
                store(dg[i * r + k], sum);
            }
        int lanes = p->f - f0 < L ? p->f - f0 : L;
        for (int l = 0; l < lanes; l++) {
            float *dw = j->dW + ((size_t)(f0 + l) * p->c + c) * r * r;
            for (int k = 0; k < r * r; k++)
                dw[k] += dg[k][l];
        }
    }
}

/* dW += Gt dU G for input channels [lo, hi). */
static void finish_part(void *ctx, int lo, int hi)
{
    const struct finish_job *j = ctx;
    for (int c = lo; c < hi; c++) {
        if (j->p->r == 3)
            finish_channel(j, c, 3);
        else
            finish_channel(j, c, 5);
    }
}

void cnn_wino_weight_grad_finish(const struct cnn_wino *p, const float *dUt,
                                 float *dW)
{
    struct finish_job j = {p, dUt, dW};
    cnn_parallel_for(p->c, finish_part, &j);
}
