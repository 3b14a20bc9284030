/*
 * Winograd's minimal filtering F(2x2, rxr), r = 3 or 5: an r x r
 * convolution at stride 1 with r / 2 pixels of zero padding, the output
 * the size of the input. Each 2x2 block of output (a tile) comes from
 * the a x a block of input around it, a = r + 1. Input tiles
 * (V = Bt d B) and filters (U = G g Gt) are taken to an a x a transform
 * domain, where the sum over input channels is a * a independent matrix
 * products, one per point of the domain; the output transform
 * (Y = At m A) brings each result back to 2x2 pixels. That is 16 (r = 3)
 * or 36 (r = 5) multiplications per 4 output pixels where direct
 * convolution takes 36 or 100: 2.25 or 2.8 times fewer, for some
 * additions in the transforms.
 *
 * The matrices come from the Toom-Cook construction on the points 0, 1,
 * -1 (and 1/2, -1/2 for r = 5) and infinity; the rows of Bt and G were
 * scaled against each other so that Bt is in integers. The identity
 * At [(G g Gt) . (Bt d B)] A = the correlation of d with g was checked in
 * exact arithmetic, and tests check every path against direct sums.
 *
 * In the domain, tiles are numbered through the examples of a call, row
 * by row, padded to a multiple of 16: V is [a*a][c][tiles], U is
 * [a*a][c][fpad], the products M are [a*a][fpad][tiles]. Each plane is
 * first split into its four phases (even and odd rows by even and odd
 * columns), after which the block of every tile lies at fixed offsets
 * of one flat index, and the transforms run as whole-vector loops over
 * a plane. A product keeps 16 output channels of 16 tiles in registers
 * while it runs down the input channels, so the matrices need no
 * packing. GCC's vector extensions let the compiler pick the
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

enum { L = CNN_WINO_LANES, AMAX = 6 };

/* 16 floats, loaded and stored without an alignment promise. */
typedef float vec __attribute__((vector_size(L * sizeof(float)), aligned(4)));

/* The filter and output transforms of F(2x2, 3x3) and F(2x2, 5x5), in a
 * table a plan points at. The input transforms Bt are written out in
 * input_plane3 and bt6, and the output transforms At again in
 * output_plane and, for 3x3, grad_example: the table's At is read for
 * 5x5's output gradient and kept for 3x3 beside it. */
struct wino_mats {
    float AT[2][AMAX];      /* output: At, 2 x a */
    float G[AMAX][5];       /* filter: G, a x r */
};

static const struct wino_mats F23 = {
    .AT = {{1, 1, 1, 0}, {0, 1, -1, -1}},
    .G = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}},
};

static const struct wino_mats F25 = {
    .AT = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 0.5f, -0.5f, 1}},
    .G = {{1, 0, 0, 0, 0},
          {1.0f / 6, 1.0f / 6, 1.0f / 6, 1.0f / 6, 1.0f / 6},
          {1.0f / 6, -1.0f / 6, 1.0f / 6, -1.0f / 6, 1.0f / 6},
          {-4.0f / 3, -2.0f / 3, -1.0f / 3, -1.0f / 6, -1.0f / 12},
          {-4.0f / 3, 2.0f / 3, -1.0f / 3, 1.0f / 6, -1.0f / 12},
          {0, 0, 0, 0, 0.25f}},
};

static const struct wino_mats *mats(const struct cnn_wino *p)
{
    return p->r == 3 ? &F23 : &F25;
}

bool cnn_wino_fits(int k, int stride, int pad)
{
    return (k == 3 || k == 5) && stride == 1 && pad == k / 2;
}

void cnn_wino_plan(struct cnn_wino *p, int r, int c, int f, int h, int w,
                   int nb)
{
    p->r = r;
    p->a = r + 1;
    p->points = p->a * p->a;
    p->c = c;
    p->f = f;
    p->h = h;
    p->w = w;
    p->th = (h + 1) / 2;
    p->tw = (w + 1) / 2;
    /* A tile reaches a / 2 phase columns and rows: tw slots of a row are
     * tiles and the rest are dummies, so that every tile's block is at
     * the same offsets of its slot. */
    p->S = p->tw + p->a / 2 - 1;
    p->rows = p->th + p->a / 2 - 1;
    p->fpad = (f + L - 1) / L * L;
    p->nb = nb;
}

static size_t slots_per(const struct cnn_wino *p)
{
    return (size_t)p->th * p->S;
}

/* Tile slots of n examples, padded to whole vectors, and one vector
 * more: a plane's transform runs whole vectors past its end. */
static size_t tiles_for(const struct cnn_wino *p, int n)
{
    return ((size_t)n * slots_per(p) + L - 1) / L * L + L;
}

/* Floats of one phase plane, with slack for whole vectors. */
static size_t quarter_floats(const struct cnn_wino *p)
{
    return (size_t)p->rows * p->S + 2 * L;
}

size_t cnn_wino_work_floats(const struct cnn_wino *p)
{
    return p->points * tiles_for(p, p->nb) * (p->c + p->fpad) +
           4 * quarter_floats(p);
}

size_t cnn_wino_weight_floats(const struct cnn_wino *p)
{
    return (size_t)p->points * p->c * p->fpad;
}

struct weights_job {
    const struct cnn_wino *p;
    const float *W;
    bool adjoint;
    float *U;
};

/* U for output channels [lo, hi). */
static void weights_part(void *ctx, int lo, int hi)
{
    const struct weights_job *j = ctx;
    const struct cnn_wino *p = j->p;
    const struct wino_mats *m = mats(p);
    int r = p->r, a = p->a, rr = r * r;
    for (int o = lo; o < hi; o++) {
        for (int i = 0; i < p->c; i++) {
            /* g[r][r]: the forward filter, or the adjoint's one: the
             * forward filter from output i to input o, turned 180. */
            float g[25], t[AMAX][5];
            const float *src = j->adjoint
                                   ? j->W + ((size_t)i * p->f + o) * rr
                                   : j->W + ((size_t)o * p->c + i) * rr;
            for (int k = 0; k < rr; k++)
                g[k] = j->adjoint ? src[rr - 1 - k] : src[k];

            for (int x = 0; x < a; x++)             /* t = G g */
                for (int y = 0; y < r; y++) {
                    float s = 0;
                    for (int k = 0; k < r; k++)
                        s += m->G[x][k] * g[k * r + y];
                    t[x][y] = s;
                }
            for (int x = 0; x < a; x++)             /* u = t Gt */
                for (int y = 0; y < a; y++) {
                    float s = 0;
                    for (int k = 0; k < r; k++)
                        s += t[x][k] * m->G[y][k];
                    j->U[((size_t)(x * a + y) * p->c + i) * p->fpad + o] = s;
                }
        }
    }
}

void cnn_wino_weights(const struct cnn_wino *p, const float *W, bool adjoint,
                      float *U)
{
    struct weights_job j = {p, W, adjoint, U};
    memset(U, 0, cnn_wino_weight_floats(p) * sizeof *U);
    cnn_parallel_for(p->f, weights_part, &j);
}

static inline vec load(const float *p)
{
    return *(const vec *)p;
}

static inline void store(float *p, vec v)
{
    *(vec *)p = v;
}

/* The plane padded by r / 2 zero pixels all round, split into its four
 * phases: Q[2a + b][i * S + j] = x[2i + a - pad][2j + b - pad], for
 * i < rows and j < S. Only the image's rows are written: the rows of
 * padding and the slack after each phase are the same for every plane,
 * zeroed once by the caller. */
static void split_plane(const struct cnn_wino *p, const float *x, float *Q)
{
    int S = p->S, w = p->w, pad = p->r / 2;
    size_t qs = quarter_floats(p);
#ifdef __AVX512F__
    /* 32 pixels of each row at a time, 16 columns of each phase; masked
     * loads read zeros outside the row and never fault. The masks are
     * the same for every row. */
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16,
                                          14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int j = 0; j < S; j += 16) {
        /* Lanes k with 0 <= 2j + k - pad < w, and the 16 after. */
        int first = pad - 2 * j;
        __mmask16 in0 = cnn_lanes(first, first + w);
        __mmask16 in1 = cnn_lanes(first - 16, first - 16 + w);
        __mmask16 out = cnn_lanes(0, S - j);
        for (int y = 0; y < p->h; y++) {
            const float *row = x + (size_t)y * w;
            int i = (y + pad) / 2, a = (y + pad) % 2;
            float *ph0 = Q + (size_t)(2 * a) * qs + (size_t)i * S + j;
            __m512 lo = _mm512_maskz_loadu_ps(in0, cnn_lane_at(row, -first));
            __m512 hi = _mm512_maskz_loadu_ps(in1,
                                              cnn_lane_at(row, 16 - first));
            _mm512_mask_storeu_ps(ph0, out,
                                  _mm512_permutex2var_ps(lo, even, hi));
            _mm512_mask_storeu_ps(ph0 + qs, out,
                                  _mm512_permutex2var_ps(lo, odd, hi));
        }
    }
#else
    for (int y = 0; y < p->h; y++) {
        const float *row = x + (size_t)y * w;
        int i = (y + pad) / 2, a = (y + pad) % 2;
        float *ph0 = Q + (size_t)(2 * a) * qs + (size_t)i * S;
        for (int j = 0; j < S; j++) {
            int x0 = 2 * j - pad, x1 = x0 + 1;
            ph0[j] = x0 >= 0 && x0 < w ? row[x0] : 0.0f;
            ph0[qs + j] = x1 >= 0 && x1 < w ? row[x1] : 0.0f;
        }
    }
#endif
}

/* The plane from its four phases: y[2i + a][2j + b] = P[2a + b][i * S +
 * j] for the h x w pixels. P's phases may be read up to 16 floats past
 * the (w + 1) / 2 columns they give. */
static void merge_plane(const struct cnn_wino *p, const float *P, float *y)
{
    int S = p->S, w = p->w;
    size_t qs = quarter_floats(p);
#ifdef __AVX512F__
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                                        18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    for (int j = 0; 2 * j < w; j += 16) {
        __mmask16 m0 = cnn_lanes(0, w - 2 * j);
        __mmask16 m1 = cnn_lanes(0, w - 2 * j - 16);
        for (int oy = 0; oy < p->h; oy++) {
            float *row = y + (size_t)oy * w;
            const float *p0 = P + (oy % 2 * 2) * qs + (oy / 2) * S + j;
            __m512 a = _mm512_loadu_ps(p0), b = _mm512_loadu_ps(p0 + qs);
            _mm512_mask_storeu_ps(cnn_lane_at(row, 2 * j), m0,
                                  _mm512_permutex2var_ps(a, lo, b));
            _mm512_mask_storeu_ps(cnn_lane_at(row, 2 * j + 16), m1,
                                  _mm512_permutex2var_ps(a, hi, b));
        }
    }
#else
    for (int oy = 0; oy < p->h; oy++) {
        const float *p0 = P + (oy % 2 * 2) * qs + (oy / 2) * S;
        float *row = y + (size_t)oy * w;
        for (int ox = 0; ox < w; ox++)
            row[ox] = p0[(ox % 2) * qs + ox / 2];
    }
#endif
}

/* The tile at slot k has d[y][x] = Q[2 (y % 2) + x % 2][k + (y / 2) S +
 * x / 2]. */
static inline vec tile_at(const float *Q, size_t qs, size_t S, size_t k,
                          int y, int x)
{
    return load(Q + (2 * (y % 2) + x % 2) * qs + k + (y / 2) * S + x / 2);
}

/* V[4y + x][k] = (Bt d B)[y][x] for the tiles k of one plane, qstep
 * floats between points, F(2x2, 3x3) written out: the rows of Bt (and
 * columns of B) are d0 - d2, d1 + d2, d2 - d1, d1 - d3. */
static void input_plane3(const struct cnn_wino *p, const float *Q, float *V,
                         size_t qstep)
{
    size_t S = p->S, qs = quarter_floats(p), n = slots_per(p);
    for (size_t k = 0; k < n; k += L) {
        vec d[4][4], t[4][4];
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++)
                d[y][x] = tile_at(Q, qs, S, k, y, x);
        for (int x = 0; x < 4; x++) {
            t[0][x] = d[0][x] - d[2][x];
            t[1][x] = d[1][x] + d[2][x];
            t[2][x] = d[2][x] - d[1][x];
            t[3][x] = d[1][x] - d[3][x];
        }
        for (int y = 0; y < 4; y++) {
            float *v = V + (size_t)(4 * y) * qstep + k;
            store(v, t[y][0] - t[y][2]);
            store(v + qstep, t[y][1] + t[y][2]);
            store(v + 2 * qstep, t[y][2] - t[y][1]);
            store(v + 3 * qstep, t[y][1] - t[y][3]);
        }
    }
}

/* Bt of F(2x2, 5x5) applied to six vectors: the rows of Bt are
 * d0 - 5 d2 + 4 d4, 4 (d3 + d4) - (d1 + d2), 4 (d4 - d3) + (d1 - d2),
 * 2 (d4 - d2) + (d3 - d1), 2 (d4 - d2) - (d3 - d1), d1 - 5 d3 + 4 d5. */
static inline void bt6(const vec d[6], vec t[6])
{
    vec s12 = d[1] + d[2], m12 = d[1] - d[2], m31 = d[3] - d[1];
    vec s34 = d[3] + d[4], m43 = d[4] - d[3], m42 = 2.0f * (d[4] - d[2]);
    t[0] = d[0] - 5.0f * d[2] + 4.0f * d[4];
    t[1] = 4.0f * s34 - s12;
    t[2] = 4.0f * m43 + m12;
    t[3] = m42 + m31;
    t[4] = m42 - m31;
    t[5] = d[1] - 5.0f * d[3] + 4.0f * d[5];
}

/* The same for F(2x2, 5x5), 6x6 blocks; bt6 down the columns, then
 * along the rows. */
static void input_plane5(const struct cnn_wino *p, const float *Q, float *V,
                         size_t qstep)
{
    size_t S = p->S, qs = quarter_floats(p), n = slots_per(p);
    for (size_t k = 0; k < n; k += L) {
        vec d[6][6], t[6][6];
        for (int x = 0; x < 6; x++) {
            vec col[6], out[6];
            for (int y = 0; y < 6; y++)
                col[y] = tile_at(Q, qs, S, k, y, x);
            bt6(col, out);
            for (int i = 0; i < 6; i++)
                t[i][x] = out[i];
        }
        for (int i = 0; i < 6; i++) {
            bt6(t[i], d[i]);
            for (int j = 0; j < 6; j++)
                store(V + (size_t)(6 * i + j) * qstep + k, d[i][j]);
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
 * m[q * qstep + k]. The four pixels of each tile go to P[2y + x][k]
 * first, whole vectors at a time, then into place. */
static void output_plane(const struct cnn_wino *p, const float *m,
                         size_t qstep, float b, float *y, float *P)
{
    int a = p->a;
    size_t qs = quarter_floats(p), n = slots_per(p);
    for (size_t k = 0; k < n; k += L) {
        vec r[2][AMAX];
        if (a == 4) {
            /* F(2x2, 3x3): the rows of At are m0 + m1 + m2,
             * m1 - m2 - m3. */
            for (int x = 0; x < 4; x++) {
                vec m0 = load(m + (size_t)(0 + x) * qstep + k);
                vec m1 = load(m + (size_t)(4 + x) * qstep + k);
                vec m2 = load(m + (size_t)(8 + x) * qstep + k);
                vec m3 = load(m + (size_t)(12 + x) * qstep + k);
                r[0][x] = m0 + m1 + m2;
                r[1][x] = m1 - m2 - m3;
            }
            for (int o = 0; o < 2; o++) {
                store(P + (2 * o) * qs + k, r[o][0] + r[o][1] + r[o][2] + b);
                store(P + (2 * o + 1) * qs + k,
                      r[o][1] - r[o][2] - r[o][3] + b);
            }
        } else {
            /* F(2x2, 5x5): m0 + m1 + m2 + m3 + m4, m1 - m2 + (m3 - m4) / 2
             * + m5. */
            for (int x = 0; x < 6; x++) {
                vec mi[6];
                for (int i = 0; i < 6; i++)
                    mi[i] = load(m + (size_t)(i * 6 + x) * qstep + k);
                r[0][x] = mi[0] + mi[1] + mi[2] + mi[3] + mi[4];
                r[1][x] = mi[1] - mi[2] + 0.5f * (mi[3] - mi[4]) + mi[5];
            }
            for (int o = 0; o < 2; o++) {
                const vec *ro = r[o];
                store(P + (2 * o) * qs + k,
                      ro[0] + ro[1] + ro[2] + ro[3] + ro[4] + b);
                store(P + (2 * o + 1) * qs + k,
                      ro[1] - ro[2] + 0.5f * (ro[3] - ro[4]) + ro[5] + b);
            }
        }
    }
    merge_plane(p, P, y);
}

/* V[points][c][tiles] for n examples of x. The slots of the last
 * vector past the last tile are multiplied too: zeros, not whatever the
 * last plane's vectors left there. (The products of slots past that
 * vector are never computed; output_plane's vectors may read them, for
 * lanes that merge_plane leaves out.) */
static void input_all(const struct cnn_wino *p, const float *x, int n,
                      float *V, float *Q)
{
    size_t tiles = tiles_for(p, n), per = slots_per(p);
    size_t used = (size_t)n * per, plane = (size_t)p->h * p->w;
    size_t vq = (size_t)p->c * tiles;
    memset(Q, 0, 4 * quarter_floats(p) * sizeof *Q);
    for (int e = 0; e < n; e++)
        for (int ch = 0; ch < p->c; ch++) {
            split_plane(p, x + ((size_t)e * p->c + ch) * plane, Q);
            float *v = V + ch * tiles + e * per;
            if (p->a == 4)
                input_plane3(p, Q, v, vq);
            else
                input_plane5(p, Q, v, vq);
        }
    for (size_t r = 0; r < (size_t)p->points * p->c; r++)
        memset(V + r * tiles + used, 0, (tiles - used) * sizeof *V);
}

void cnn_wino_conv(const struct cnn_wino *p, const float *U, const float *bias,
                   const float *x, int n, float *y, float *work)
{
    size_t tiles = tiles_for(p, n), per = slots_per(p);
    size_t used = (size_t)n * per, plane = (size_t)p->h * p->w;
    size_t vq = (size_t)p->c * tiles, mq = (size_t)p->fpad * tiles;
    float *V = work;                        /* [points][c][tiles] */
    float *M = V + p->points * vq;          /* [points][fpad][tiles] */
    float *Q = M + p->points * mq;          /* [4][quarter_floats] */

    input_all(p, x, n, V, Q);
    for (int q = 0; q < p->points; q++)
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
 * a x a), that of U is the sum over tiles of E (.) V, and that of the
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
    size_t yt = (size_t)p->h * p->w * p->fpad, q = 4 * quarter_floats(p);
    return p->points * tiles_for(p, p->nb) * (p->c + p->fpad) +
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

/* E[q][t][fpad] for the tiles of one example, t from its first slot:
 * A dy At, A being At turned; zero in the dummy slots. */
static void grad_example(const struct cnn_wino *p, const float *yt, float *E,
                         size_t qstep)
{
    const struct wino_mats *m = mats(p);
    int S = p->S, fp = p->fpad, a = p->a;
    static const vec zero;
    for (int ty = 0; ty < p->th; ty++) {
        for (int tx = 0; tx < S; tx++) {
            float *e = E + ((size_t)ty * S + tx) * fp;
            for (int f0 = 0; f0 < fp; f0 += L) {
                vec y[2][2], z[AMAX][2];
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++) {
                        int oy = 2 * ty + i, ox = 2 * tx + j;
                        bool in = tx < p->tw && oy < p->h && ox < p->w;
                        y[i][j] = in ? load(yt + ((size_t)oy * p->w + ox) *
                                            fp + f0) : zero;
                    }
                if (a == 4) {
                    /* F(2x2, 3x3): the rows of A are y0, y0 + y1,
                     * y0 - y1, -y1. */
                    for (int j = 0; j < 2; j++) {
                        z[0][j] = y[0][j];
                        z[1][j] = y[0][j] + y[1][j];
                        z[2][j] = y[0][j] - y[1][j];
                        z[3][j] = -y[1][j];
                    }
                    for (int i = 0; i < 4; i++) {
                        float *ei = e + (size_t)(4 * i) * qstep + f0;
                        store(ei, z[i][0]);
                        store(ei + qstep, z[i][0] + z[i][1]);
                        store(ei + 2 * qstep, z[i][0] - z[i][1]);
                        store(ei + 3 * qstep, -z[i][1]);
                    }
                    continue;
                }
                for (int i = 0; i < a; i++)         /* z = A y */
                    for (int j = 0; j < 2; j++)
                        z[i][j] = m->AT[0][i] * y[0][j] +
                                  m->AT[1][i] * y[1][j];
                for (int i = 0; i < a; i++)         /* E = z At */
                    for (int j = 0; j < a; j++)
                        store(e + (size_t)(i * a + j) * qstep + f0,
                              z[i][0] * m->AT[0][j] + z[i][1] * m->AT[1][j]);
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
    float *V = work;                        /* [points][c][tiles] */
    float *E = V + p->points * vq;          /* [points][tiles][fpad] */
    float *Q = E + p->points * eq;          /* phase planes, or yt */

    for (int e = 0; e < n; e++) {
        channels_last(p, dy + (size_t)e * p->f * plane, Q);
        grad_example(p, Q, E + e * per * fp, eq);
    }
    input_all(p, x, n, V, Q);
    for (int q = 0; q < p->points; q++)
        grad_product(p, E + q * eq, V + q * vq, tiles, (size_t)n * per,
                     dUt + (size_t)q * p->c * fp);
}

struct finish_job {
    const struct cnn_wino *p;
    const float *dUt;
    float *dW;
};

/* dW += Gt dU G for output channels [lo, hi). */
static void finish_part(void *ctx, int lo, int hi)
{
    const struct finish_job *j = ctx;
    const struct cnn_wino *p = j->p;
    const struct wino_mats *m = mats(p);
    int r = p->r, a = p->a;
    size_t qstep = (size_t)p->c * p->fpad;
    for (int f = lo; f < hi; f++) {
        for (int c = 0; c < p->c; c++) {
            float u[AMAX][AMAX], t[5][AMAX];
            for (int q = 0; q < p->points; q++)
                u[q / a][q % a] = j->dUt[q * qstep + (size_t)c * p->fpad + f];
            for (int i = 0; i < r; i++)         /* t = Gt u */
                for (int y = 0; y < a; y++) {
                    float s = 0;
                    for (int x = 0; x < a; x++)
                        s += m->G[x][i] * u[x][y];
                    t[i][y] = s;
                }
            float *dw = j->dW + ((size_t)f * p->c + c) * r * r;
            for (int i = 0; i < r; i++)         /* dg = t G */
                for (int k = 0; k < r; k++) {
                    float s = 0;
                    for (int y = 0; y < a; y++)
                        s += t[i][y] * m->G[y][k];
                    dw[i * r + k] += s;
                }
        }
    }
}

void cnn_wino_weight_grad_finish(const struct cnn_wino *p, const float *dUt,
                                 float *dW)
{
    struct finish_job j = {p, dUt, dW};
    cnn_parallel_for(p->f, finish_part, &j);
}
