/*
 * dense: y = x W^T + b over flat inputs. W is [units, in] (PyTorch's
 * nn.Linear layout), b is [units].
 *
 *   - dense: {units: 128, bias: true, init: he_normal}
 */
#include "cnn/layer.h"
#include "cnn/ops.h"

static enum cnn_status dense_create(struct cnn_layer *l, struct cnn_node *args,
                                    struct cnn_error *err)
{
    long long units;
    bool bias;
    enum cnn_init init;
    if (cnn_layer_need_flat(l, err) != CNN_OK)
        return CNN_ERR_CONFIG;
    if (cnn_read_int(args, "units", 0, 1, 1 << 24, &units, err) ||
        cnn_read_bool(args, "bias", true, &bias, err) ||
        cnn_layer_read_init(args, CNN_INIT_AUTO, &init, err) ||
        cnn_layer_require(l, args, "units", "- dense: {units: 10}", err))
        return CNN_ERR_CONFIG;

    int in = l->in.c;
    int out = (int)units;
    l->out = (struct cnn_shape){out, 1, 1};
    cnn_layer_add_param(l, "weight", CNN_PARAM_WEIGHT, 2, (int[]){out, in},
                        in, out, init);
    if (bias)
        cnn_layer_add_param(l, "bias", CNN_PARAM_BIAS, 1, (int[]){out},
                            in, out, init);
    l->flops = 2.0 * in * out + (bias ? out : 0);
    return CNN_OK;
}

/* What a pass's parts share: the layer's tensors for a batch of n. */
struct job {
    const float *x, *W, *b, *dy;        /* x[n, in], W[out, in], b[out] or
                                         * NULL, dy[n, out] */
    float *y, *dW, *db, *dx;            /* y[n, out], dW, db, dx[n, in] */
    int n, in, out;
};

/* Multiply-adds below which a GEMM runs whole, on OpenBLAS's threads as
 * they are: waking ours costs about as much as a few microseconds of
 * arithmetic. */
static const double SPLIT_MACS = 1 << 20;

/* Runs fn over [0, n) in one part per thread, each part's GEMM on its
 * own thread, when the pass has macs multiply-adds or more (and
 * OpenBLAS's threads can be set for every caller); else whole.
 *
 * Columns of the result are cut apart, not sums, though OpenBLAS may
 * take another kernel for a narrower product: results may differ with
 * the thread count in the last bits, as a convolution's weight gradient
 * does. Each part of the forward pass and of the weight gradient
 * touches only its own rows of W and dW, about the share of the
 * parameters the optimizer's update gives its thread: cutting the batch
 * instead had both cores read all of W after each update, which cost
 * the MLP a fifth of its speed. */
static void run_parts(int n, double macs, cnn_part_fn *fn, struct job *j)
{
    int threads = cnn_blas_threads(0);
    if (threads <= 1 || macs < SPLIT_MACS || !cnn_blas_pthreads()) {
        fn(j, 0, 0, n);
        return;
    }
    cnn_blas_threads(1);
    cnn_parallel_parts(n, threads, fn, j);
    cnn_blas_threads(threads);
}

/* y = x W^T + b for output units [lo, hi). */
static void forward_part(void *ctx, int part, int lo, int hi)
{
    const struct job *j = ctx;
    (void)part;
    cnn_gemm(false, true, j->n, hi - lo, j->in, 1.0f, j->x, j->in,
             j->W + (size_t)lo * j->in, j->in, 0.0f, j->y + lo, j->out);
    for (int i = 0; j->b && i < j->n; i++)
        for (int o = lo; o < hi; o++)
            j->y[(size_t)i * j->out + o] += j->b[o];
}

static void dense_forward(struct cnn_layer *l, const float *x, float *y, int n,
                          const struct cnn_fwd_ctx *ctx)
{
    (void)ctx;
    struct job j = {.x = x, .W = l->params[0].data, .y = y, .n = n,
                    .in = l->in.c, .out = l->out.c,
                    .b = l->n_params > 1 ? l->params[1].data : NULL};
    run_parts(j.out, (double)n * j.in * j.out, forward_part, &j);
}

/* dW += dy^T x and db += the sums of dy for output units [lo, hi). */
static void weight_grad_part(void *ctx, int part, int lo, int hi)
{
    const struct job *j = ctx;
    (void)part;
    cnn_gemm(true, false, hi - lo, j->in, j->n, 1.0f, j->dy + lo, j->out,
             j->x, j->in, 1.0f, j->dW + (size_t)lo * j->in, j->in);
    for (int i = 0; j->db && i < j->n; i++)
        for (int o = lo; o < hi; o++)
            j->db[o] += j->dy[(size_t)i * j->out + o];
}

/* dx = dy W for input units [lo, hi). */
static void input_grad_part(void *ctx, int part, int lo, int hi)
{
    const struct job *j = ctx;
    (void)part;
    cnn_gemm(false, false, j->n, hi - lo, j->out, 1.0f, j->dy, j->out,
             j->W + lo, j->in, 0.0f, j->dx + lo, j->in);
}

static void dense_backward(struct cnn_layer *l, const float *x, const float *y,
                           const float *dy, float *dx, int n)
{
    (void)y;
    struct job j = {.x = x, .W = l->params[0].data, .dy = dy, .dx = dx,
                    .dW = l->params[0].grad, .n = n, .in = l->in.c,
                    .out = l->out.c,
                    .db = l->n_params > 1 ? l->params[1].grad : NULL};
    double macs = (double)n * j.in * j.out;
    run_parts(j.out, macs, weight_grad_part, &j);
    if (dx)
        run_parts(j.in, macs, input_grad_part, &j);
}

const struct cnn_layer_kind cnn_layer_dense = {
    .name = "dense",
    .create = dense_create,
    .forward = dense_forward,
    .backward = dense_backward,
};
