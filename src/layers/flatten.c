/*
 * flatten: C x H x W -> (C*H*W) x 1 x 1, in row-major (PyTorch) order.
 * The memory layout is unchanged, so both passes are copies, or nothing
 * where the net makes the output a view of the input.
 */
#include "cnn/layer.h"

#include <limits.h>
#include <string.h>

static enum cnn_status flatten_create(struct cnn_layer *l,
                                      struct cnn_node *args,
                                      struct cnn_error *err)
{
    size_t n = cnn_shape_size(l->in);
    if (n > INT_MAX)
        return cnn_node_error(err, l->node, "%s would hold %zu values per "
                              "example: too large", l->name, n);
    l->out = (struct cnn_shape){(int)n, 1, 1};
    return CNN_OK;
}

static void flatten_forward(struct cnn_layer *l, const float *x, float *y,
                            int n, const struct cnn_fwd_ctx *ctx)
{
    if (y != x)         /* else a view (net.c), called by a per-layer loop */
        memcpy(y, x, (size_t)n * cnn_shape_size(l->in) * sizeof *y);
}

static void flatten_backward(struct cnn_layer *l, const float *x,
                             const float *y, const float *dy, float *dx, int n)
{
    if (dx)
        memcpy(dx, dy, (size_t)n * cnn_shape_size(l->in) * sizeof *dx);
}

const struct cnn_layer_kind cnn_layer_flatten = {
    .name = "flatten",
    .create = flatten_create,
    .forward = flatten_forward,
    .backward = flatten_backward,
};
