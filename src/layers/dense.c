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

static void dense_forward(struct cnn_layer *l, const float *x, float *y, int n,
                          const struct cnn_fwd_ctx *ctx)
{
    int in = l->in.c, out = l->out.c;
    const float *W = l->params[0].data;          /* [out, in] */

    cnn_gemm(false, true, n, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
    if (l->n_params > 1) {
        const float *b = l->params[1].data;      /* [out] */
        for (int i = 0; i < n; i++)
            for (int j = 0; j < out; j++)
                y[(size_t)i * out + j] += b[j];
    }
}

static void dense_backward(struct cnn_layer *l, const float *x, const float *y,
                           const float *dy, float *dx, int n)
{
    int in = l->in.c, out = l->out.c;
    const float *W = l->params[0].data;
    float *dW = l->params[0].grad;               /* [out, in] */

    cnn_gemm(true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (l->n_params > 1) {
        float *db = l->params[1].grad;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < out; j++)
                db[j] += dy[(size_t)i * out + j];
    }
    if (dx)
        cnn_gemm(false, false, n, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
}

const struct cnn_layer_kind cnn_layer_dense = {
    .name = "dense",
    .create = dense_create,
    .forward = dense_forward,
    .backward = dense_backward,
};
