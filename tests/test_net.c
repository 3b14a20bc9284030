/*
 * Net building tests: shape inference through conv/pool/flatten/dense
 * chains, parameter counts and names, the located errors of the model
 * section (unknown layers and arguments, the common indentation slip,
 * shapes that do not chain, sizes too large to be meant), seeded
 * parameter initialization, and activation checkpointing: the same
 * steps, bit for bit, in less activation memory. Forward and backward
 * numbers belong to test_layers.c; nothing here reads data.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/config.h"
#include "cnn/net.h"
#include "cnn/ops.h"
#include "testutil.h"

/* The layer list starts on line 5, each item's map at column 7. */
#define PREFIX \
    "data:\n  train: {images: a, labels: b}\n" \
    "model:\n  layers:\n"

/* Configs and nets a test holds, freed by teardown even when an assertion
 * ends the test early. */
static struct cnn_config cfgs[2];
static struct cnn_net nets[2];

static int setup(void **state)
{
    (void)state;
    memset(cfgs, 0, sizeof cfgs);
    memset(nets, 0, sizeof nets);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++) {
        cnn_net_free(&nets[i]);
        cnn_config_free(&cfgs[i]);
    }
    return 0;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

static struct cnn_shape shape(int c, int h, int w)
{
    return (struct cnn_shape){c, h, w};
}

/* Loads PREFIX + layers into cfgs[slot] (which must resolve) and builds
 * nets[slot] from it with opts (may be NULL). The config stays alive:
 * layers point into it. */
static enum cnn_status build_opts(int slot, const char *layers,
                                  struct cnn_shape in, int batch,
                                  const struct cnn_net_opts *opts,
                                  struct cnn_error *err)
{
    size_t n = strlen(PREFIX) + strlen(layers) + 1;
    char *text = malloc(n);
    assert_non_null(text);
    snprintf(text, n, "%s%s", PREFIX, layers);
    memset(err, 0, sizeof *err);
    enum cnn_status st = cnn_config_load_string(&cfgs[slot], text,
                                                "test.yaml", "/base", err);
    free(text);
    if (st == CNN_OK)
        st = cnn_config_resolve(&cfgs[slot], err);
    if (st != CNN_OK)
        fail_msg("config did not resolve: %s: %s", err->where, err->message);
    return cnn_net_build_opts(&nets[slot], cfgs[slot].model_layers, in, batch,
                              opts, err);
}

static enum cnn_status build_in(int slot, const char *layers,
                                struct cnn_shape in, int batch,
                                struct cnn_error *err)
{
    return build_opts(slot, layers, in, batch, NULL, err);
}

static enum cnn_status build(const char *layers, struct cnn_shape in,
                             int batch, struct cnn_error *err)
{
    return build_in(0, layers, in, batch, err);
}

/* Expects building layers to fail with a config error at where, holding
 * msg in the message and hint in the hint (NULL: no hint). */
static void expect_build_error(const char *layers, struct cnn_shape in,
                               int batch, const char *where, const char *msg,
                               const char *hint)
{
    struct cnn_error err;
    enum cnn_status st = build(layers, in, batch, &err);
    if (st == CNN_OK)
        fail_msg("expected \"%s\", but the net was built", msg);
    assert_int_equal(st, CNN_ERR_CONFIG);
    if (where)
        assert_string_equal(err.where, where);
    assert_contains(err.message, msg);
    if (hint)
        assert_contains(err.hint, hint);
    else
        assert_string_equal(err.hint, "");
    /* A failed build leaves nothing to free. */
    assert_null(nets[0].layers);
    assert_int_equal(nets[0].n_layers, 0);
    cnn_config_free(&cfgs[0]);
}

static size_t layer_params(const struct cnn_layer *l)
{
    size_t n = 0;
    for (int i = 0; i < l->n_params; i++)
        n += l->params[i].count;
    return n;
}

static void assert_shape(struct cnn_shape s, int c, int h, int w)
{
    if (s.c != c || s.h != h || s.w != w)
        fail_msg("shape %dx%dx%d, expected %dx%dx%d", s.c, s.h, s.w, c, h, w);
}

/* --- shapes and counts -------------------------------------------------- */

static const char LENET[] =
    "    - conv2d: {filters: 32, size: 5, pad: 2}\n"
    "    - relu\n"
    "    - maxpool: {size: 2}\n"
    "    - conv2d: {filters: 64, size: 5, pad: 2}\n"
    "    - relu\n"
    "    - maxpool: {size: 2}\n"
    "    - flatten\n"
    "    - dense: {units: 128}\n"
    "    - relu\n"
    "    - dense: {units: 10}\n";

static void test_lenet_shapes(void **state)
{
    (void)state;
    struct cnn_error err;
    assert_int_equal(build(LENET, shape(1, 28, 28), 16, &err), CNN_OK);
    struct cnn_net *net = &nets[0];

    static const struct {
        const char *name, *kind;
        int c, h, w;
        size_t params;
    } want[] = {
        {"conv2d_1", "conv2d", 32, 28, 28, 832},
        {"relu_1", "relu", 32, 28, 28, 0},
        {"maxpool_1", "maxpool", 32, 14, 14, 0},
        {"conv2d_2", "conv2d", 64, 14, 14, 51264},
        {"relu_2", "relu", 64, 14, 14, 0},
        {"maxpool_2", "maxpool", 64, 7, 7, 0},
        {"flatten_1", "flatten", 3136, 1, 1, 0},
        {"dense_1", "dense", 128, 1, 1, 401536},
        {"relu_3", "relu", 128, 1, 1, 0},
        {"dense_2", "dense", 10, 1, 1, 1290},
    };
    assert_int_equal(net->n_layers, 10);
    struct cnn_shape in = shape(1, 28, 28);
    size_t total = 0;
    for (int i = 0; i < 10; i++) {
        const struct cnn_layer *l = &net->layers[i];
        assert_string_equal(l->name, want[i].name);
        assert_string_equal(l->kind->name, want[i].kind);
        assert_shape(l->in, in.c, in.h, in.w);
        assert_shape(l->out, want[i].c, want[i].h, want[i].w);
        assert_int_equal(layer_params(l), want[i].params);
        assert_int_equal(l->batch, 16);
        assert_string_equal(l->prev, i ? want[i - 1].name : "the input");
        in = l->out;
        total += want[i].params;
    }
    assert_shape(net->in, 1, 28, 28);
    assert_shape(net->out, 10, 1, 1);
    assert_int_equal(net->batch, 16);
    assert_int_equal(net->n_params, total);
    assert_int_equal(total, 454922);

    /* Parameters lie in one block, in layer order, gradients likewise. */
    size_t off = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const struct cnn_layer *l = &net->layers[i];
        for (int j = 0; j < l->n_params; j++) {
            assert_ptr_equal(l->params[j].data, net->params + off);
            assert_ptr_equal(l->params[j].grad, net->grads + off);
            off += l->params[j].count;
        }
    }
    assert_int_equal(off, net->n_params);

    /* Activation buffers: the batch times every output. */
    size_t acts = 0;
    for (int i = 0; i < 10; i++)
        acts += (size_t)want[i].c * want[i].h * want[i].w;
    assert_int_equal(cnn_net_activation_bytes(net), 16 * acts * sizeof(float));
    assert_true(cnn_net_flops(net) > 0.0);
}

struct name_list {
    char names[16][64];
    int dims[16][4];
    int ndim[16];
    int n;
};

static void collect(void *ctx, const char *name, struct cnn_param *p)
{
    struct name_list *nl = ctx;
    assert_true(nl->n < 16);
    snprintf(nl->names[nl->n], sizeof nl->names[0], "%s", name);
    nl->ndim[nl->n] = p->ndim;
    for (int i = 0; i < p->ndim; i++)
        nl->dims[nl->n][i] = p->dims[i];
    nl->n++;
}

static void test_param_names(void **state)
{
    (void)state;
    struct cnn_error err;
    assert_int_equal(build(LENET, shape(1, 28, 28), 4, &err), CNN_OK);
    struct name_list nl = {0};
    cnn_net_each_param(&nets[0], collect, &nl);

    static const char *const names[] = {
        "conv2d_1.weight", "conv2d_1.bias", "conv2d_2.weight",
        "conv2d_2.bias", "dense_1.weight", "dense_1.bias",
        "dense_2.weight", "dense_2.bias",
    };
    assert_int_equal(nl.n, 8);
    for (int i = 0; i < 8; i++)
        assert_string_equal(nl.names[i], names[i]);
    /* PyTorch layouts: conv [F, C, kh, kw], dense [out, in]. */
    assert_int_equal(nl.ndim[0], 4);
    assert_int_equal(nl.dims[0][0], 32);
    assert_int_equal(nl.dims[0][1], 1);
    assert_int_equal(nl.dims[0][2], 5);
    assert_int_equal(nl.dims[0][3], 5);
    assert_int_equal(nl.ndim[1], 1);
    assert_int_equal(nl.dims[1][0], 32);
    assert_int_equal(nl.dims[2][1], 32);
    assert_int_equal(nl.ndim[4], 2);
    assert_int_equal(nl.dims[4][0], 128);
    assert_int_equal(nl.dims[4][1], 3136);
    assert_int_equal(nl.dims[6][0], 10);
    assert_int_equal(nl.dims[6][1], 128);
}

static void test_geometry(void **state)
{
    (void)state;
    struct cnn_error err;
    static const char layers[] =
        "    - conv2d: {filters: 6, size: 3, stride: 2}\n"   /* 15x7 */
        "    - conv2d: {filters: 5, size: 3, pad: same}\n"   /* 15x7 */
        "    - avgpool: {size: 3, stride: 2, pad: 1}\n"      /* 8x4 */
        "    - conv2d: {filters: 4, size: 1, bias: false}\n" /* 8x4 */
        "    - maxpool: {size: 2}\n"                         /* 4x2 */
        "    - leaky_relu: {slope: 0.1}\n"
        "    - dropout: {rate: 0.25}\n"
        "    - flatten\n"
        "    - dense: {units: 3, bias: false}\n"
        "    - sigmoid\n"
        "    - tanh\n";
    assert_int_equal(build(layers, shape(3, 32, 16), 2, &err), CNN_OK);
    struct cnn_net *net = &nets[0];
    assert_int_equal(net->n_layers, 11);
    assert_shape(net->layers[0].out, 6, 15, 7);
    assert_int_equal(layer_params(&net->layers[0]), 6 * 3 * 3 * 3 + 6);
    assert_shape(net->layers[1].out, 5, 15, 7);
    assert_int_equal(layer_params(&net->layers[1]), 5 * 6 * 3 * 3 + 5);
    assert_shape(net->layers[2].out, 5, 8, 4);
    assert_shape(net->layers[3].out, 4, 8, 4);
    assert_int_equal(net->layers[3].n_params, 1);
    assert_int_equal(layer_params(&net->layers[3]), 4 * 5);
    assert_shape(net->layers[4].out, 4, 4, 2);
    assert_shape(net->layers[5].out, 4, 4, 2);
    assert_shape(net->layers[6].out, 4, 4, 2);
    assert_shape(net->layers[7].out, 32, 1, 1);
    assert_shape(net->layers[8].out, 3, 1, 1);
    assert_int_equal(layer_params(&net->layers[8]), 3 * 32);
    assert_shape(net->out, 3, 1, 1);
    assert_string_equal(net->layers[5].name, "leaky_relu_1");
    assert_string_equal(net->layers[6].name, "dropout_1");
    assert_string_equal(net->layers[9].name, "sigmoid_1");
    assert_string_equal(net->layers[10].name, "tanh_1");
    assert_int_equal(net->n_params, 6 * 27 + 6 + 5 * 54 + 5 + 20 + 96);
}

static void test_flat_input(void **state)
{
    (void)state;
    struct cnn_error err;
    /* A flat input needs no flatten before dense. */
    assert_int_equal(build("    - dense: {units: 5}\n    - relu\n",
                           shape(784, 1, 1), 1, &err), CNN_OK);
    assert_shape(nets[0].out, 5, 1, 1);
    assert_int_equal(nets[0].n_params, 784 * 5 + 5);
    assert_string_equal(nets[0].layers[0].prev, "the input");
}

/* --- names -------------------------------------------------------------- */

static void test_custom_names(void **state)
{
    (void)state;
    struct cnn_error err;
    static const char layers[] =
        "    - flatten\n"
        "    - dense: {units: 8, name: hidden}\n"
        "    - relu: {name: act-1}\n"
        "    - dense: {units: 2}\n"
        "    - dense: {units: 2, name: logits}\n";
    assert_int_equal(build(layers, shape(1, 2, 2), 1, &err), CNN_OK);
    struct cnn_net *net = &nets[0];
    assert_string_equal(net->layers[0].name, "flatten_1");
    assert_string_equal(net->layers[1].name, "hidden");
    assert_string_equal(net->layers[2].name, "act-1");
    /* Default numbering counts every layer of the kind, named or not. */
    assert_string_equal(net->layers[3].name, "dense_2");
    assert_string_equal(net->layers[3].prev, "act-1");
    assert_string_equal(net->layers[4].name, "logits");

    struct name_list nl = {0};
    cnn_net_each_param(net, collect, &nl);
    assert_int_equal(nl.n, 6);
    assert_string_equal(nl.names[0], "hidden.weight");
    assert_string_equal(nl.names[5], "logits.bias");
}

static void test_name_errors(void **state)
{
    (void)state;
    expect_build_error("    - relu: {name: x}\n    - relu: {name: x}\n",
                       shape(1, 1, 1), 1, "test.yaml:6:20",
                       "model.layers[1].relu.name: 'x' is already the name "
                       "of layer 1", NULL);
    /* A name taking an earlier layer's default name. */
    expect_build_error("    - relu\n    - relu: {name: relu_1}\n",
                       shape(1, 1, 1), 1, "test.yaml:6:20",
                       "'relu_1' is already the name of layer 1", NULL);
    expect_build_error("    - relu: {name: a.b}\n", shape(1, 1, 1), 1,
                       "test.yaml:5:20", "'a.b': use letters, digits, '_' "
                       "and '-' only", NULL);
    expect_build_error("    - relu: {name: ''}\n", shape(1, 1, 1), 1,
                       "test.yaml:5:20", "model.layers[0].relu.name: "
                       "expected a non-empty string", NULL);
    expect_build_error("    - relu: {name: "
                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                       "aaaaaaaaaaaaaaaaaaaa}\n", shape(1, 1, 1), 1,
                       "test.yaml:5:20", "longer than 63 characters", NULL);
}

/* Every tensor name must be unique, or the safetensors file holds two
 * tensors of one name. A default name may not take a name given to an
 * earlier layer either. */
static void test_default_name_after_custom(void **state)
{
    (void)state;
    struct cnn_error err;
    static const char layers[] =
        "    - dense: {units: 4, name: dense_2}\n"
        "    - dense: {units: 4}\n";
    enum cnn_status st = build(layers, shape(4, 1, 1), 1, &err);
    if (st == CNN_OK) {
        struct cnn_net *net = &nets[0];
        if (strcmp(net->layers[0].name, net->layers[1].name) == 0)
            fail_msg("two layers named '%s': tensor names collide",
                     net->layers[0].name);
        return;
    }
    assert_int_equal(st, CNN_ERR_CONFIG);
    assert_contains(err.message, "dense_2");
}

/* --- errors ------------------------------------------------------------- */

static void test_unknown_layer(void **state)
{
    (void)state;
    expect_build_error("    - conv2: {filters: 3, size: 3}\n",
                       shape(1, 8, 8), 1, "test.yaml:5:7",
                       "model.layers[0]: unknown layer 'conv2' (known: "
                       "dense, conv2d, maxpool, avgpool, flatten, relu, "
                       "leaky_relu, sigmoid, tanh, dropout, batchnorm, "
                       "global_avgpool, residual, layernorm, rmsnorm)",
                       "did you mean 'conv2d'?");
    expect_build_error("    - flatten\n    - rellu\n", shape(1, 8, 8), 1,
                       "test.yaml:6:7", "model.layers[1]: unknown layer "
                       "'rellu'", "did you mean 'relu'?");
    expect_build_error("    - attention\n", shape(1, 8, 8), 1,
                       "test.yaml:5:7", "unknown layer 'attention'", NULL);
    expect_build_error("    - Dense: {units: 3}\n", shape(3, 1, 1), 1,
                       "test.yaml:5:7", "unknown layer 'Dense'", "'dense'");
}

static void test_layer_item_shapes(void **state)
{
    (void)state;
    expect_build_error("    - {}\n", shape(1, 1, 1), 1, "test.yaml:5:7",
                       "model.layers[0]: a layer is a name ('- relu') or one "
                       "key", NULL);
    expect_build_error("    - [relu]\n", shape(1, 1, 1), 1, "test.yaml:5:7",
                       "a layer is a name", NULL);
    expect_build_error("    - ~\n", shape(1, 1, 1), 1, "test.yaml:5:7",
                       "a layer is a name", NULL);
    expect_build_error("    - dense: 5\n", shape(3, 1, 1), 1,
                       "test.yaml:5:14", "model.layers[0].dense: the "
                       "arguments of 'dense' must be a mapping", NULL);
    expect_build_error("    - dense:\n", shape(3, 1, 1), 1, "test.yaml:5:7",
                       "dense needs 'units'", NULL);
    expect_build_error("    - conv2d: {filters: 3}\n", shape(1, 8, 8), 1,
                       "test.yaml:5:7", "conv2d needs 'size'", NULL);
}

static void test_two_keys_indentation_slip(void **state)
{
    (void)state;
    /* The arguments meant for conv2d sit at its own level. */
    static const char layers[] =
        "    - conv2d:\n"
        "      filters: 32\n"
        "      size: 3\n";
    expect_build_error(layers, shape(1, 8, 8), 1, "test.yaml:6:16",
                       "model.layers[0].filters: a layer is one key naming "
                       "its kind, but this one also has 'filters'",
                       "indent the arguments under 'conv2d:'");

    expect_build_error("    - dense: {units: 3}\n      relu:\n",
                       shape(3, 1, 1), 1, NULL, "also has 'relu'", "indent");
}

static void test_dense_needs_flat(void **state)
{
    (void)state;
    expect_build_error("    - conv2d: {filters: 4, size: 3}\n"
                       "    - dense: {units: 10}\n",
                       shape(1, 8, 8), 1, "test.yaml:6:7",
                       "model.layers[1]: dense_1 (dense) needs a flat input, "
                       "but conv2d_1 outputs 4x6x6",
                       "put '- flatten' before it");
    expect_build_error("    - maxpool: {size: 2}\n"
                       "    - dense: {units: 10, name: head}\n",
                       shape(1, 8, 8), 1, "test.yaml:6:7",
                       "head (dense) needs a flat input, but maxpool_1 "
                       "outputs 1x4x4", "flatten");
    expect_build_error("    - dense: {units: 10}\n", shape(1, 28, 28), 1,
                       "test.yaml:5:7", "dense_1 (dense) needs a flat input, "
                       "but the input outputs 1x28x28", "flatten");
}

static void test_window_too_large(void **state)
{
    (void)state;
    expect_build_error("    - conv2d: {filters: 2, size: 5}\n",
                       shape(1, 4, 4), 1, "test.yaml:5:7",
                       "model.layers[0]: a 5x5 window with pad 0 does not "
                       "fit the 4x4 output of the input", NULL);
    expect_build_error("    - maxpool: {size: 2}\n"
                       "    - conv2d: {filters: 2, size: 5}\n",
                       shape(1, 8, 8), 1, "test.yaml:6:7",
                       "model.layers[1]: a 5x5 window with pad 0 does not "
                       "fit the 4x4 output of maxpool_1", NULL);
    expect_build_error("    - conv2d: {filters: 2, size: 3}\n"
                       "    - avgpool: {size: 7}\n",
                       shape(1, 8, 8), 1, "test.yaml:6:7",
                       "a 7x7 window with pad 0 does not fit the 6x6 "
                       "output of "
                       "conv2d_1", NULL);
    /* Enough padding makes it fit. */
    struct cnn_error err;
    assert_int_equal(build("    - conv2d: {filters: 2, size: 5, pad: 1}\n",
                           shape(1, 3, 3), 1, &err), CNN_OK);
    assert_shape(nets[0].out, 2, 1, 1);
}

static void test_unknown_argument(void **state)
{
    (void)state;
    expect_build_error("    - conv2d: {filters: 8, size: 3, strid: 2}\n",
                       shape(1, 8, 8), 1, "test.yaml:5:37",
                       "model.layers[0].conv2d.strid: unknown key 'strid'",
                       "did you mean 'stride'?");
    expect_build_error("    - flatten\n    - dense: {units: 10, bais: no}\n",
                       shape(1, 2, 2), 1, "test.yaml:6:26",
                       "model.layers[1].dense.bais: unknown key", "'bias'");
    expect_build_error("    - relu: {slope: 0.1}\n", shape(1, 2, 2), 1,
                       "test.yaml:5:14", "model.layers[0].relu.slope: "
                       "unknown key 'slope'", "known keys here: name");
    expect_build_error("    - dropout: {rate: 1.5}\n", shape(1, 2, 2), 1,
                       "test.yaml:5:23", "model.layers[0].dropout.rate: "
                       "must be between", NULL);
    expect_build_error("    - conv2d: {filters: 8, size: 4, pad: same}\n",
                       shape(1, 8, 8), 1, "test.yaml:5:42",
                       "'same' padding needs an odd size, got 4", NULL);
    expect_build_error("    - conv2d: {filters: 8, size: 3, init: he}\n",
                       shape(1, 8, 8), 1, "test.yaml:5:43",
                       "model.layers[0].conv2d.init: unknown value 'he'",
                       NULL);
}

/* A misspelled required argument is answered with the spelling it
 * missed, not only with the list of what is required. */
static void test_misspelled_required_argument(void **state)
{
    (void)state;
    struct cnn_error err;
    assert_int_equal(build("    - conv2d: {filter: 32, size: 5}\n",
                           shape(1, 28, 28), 1, &err), CNN_ERR_CONFIG);
    assert_contains(err.hint, "filters");
    cnn_config_free(&cfgs[0]);

    assert_int_equal(build("    - flatten\n    - dense: {unit: 10}\n",
                           shape(1, 28, 28), 1, &err), CNN_ERR_CONFIG);
    assert_contains(err.hint, "units");
}

/* A missing required argument next to valid optional ones is reported
 * as missing: the optional ones are not unknown keys. */
static void test_missing_required_beside_optional(void **state)
{
    (void)state;
    expect_build_error("    - conv2d: {stride: 2, size: 3}\n",
                       shape(1, 8, 8), 1, "test.yaml:5:7",
                       "model.layers[0]: conv2d needs 'filters'", NULL);
    expect_build_error("    - conv2d: {filters: 4, pad: 1, bias: false}\n",
                       shape(1, 8, 8), 1, "test.yaml:5:7",
                       "conv2d needs 'size'", NULL);
    expect_build_error("    - flatten\n"
                       "    - dense: {bias: false, init: zeros}\n",
                       shape(1, 2, 2), 1, "test.yaml:6:7",
                       "model.layers[1]: dense needs 'units'", NULL);
}

static void test_argument_range(void **state)
{
    (void)state;
    expect_build_error("    - conv2d: {filters: 1000000000000, size: 3}\n",
                       shape(1, 8, 8), 1, "test.yaml:5:25",
                       "model.layers[0].conv2d.filters: must be between 1 "
                       "and 65536, got 1000000000000", NULL);
    expect_build_error("    - conv2d: {filters: 0, size: 3}\n",
                       shape(1, 8, 8), 1, "test.yaml:5:25",
                       "conv2d.filters: must be between 1", NULL);
    expect_build_error("    - conv2d: {filters: 2, size: 3, stride: 0}\n",
                       shape(1, 8, 8), 1, "test.yaml:5:45",
                       "conv2d.stride: must be between 1", NULL);
    expect_build_error("    - flatten\n    - dense: {units: -3}\n",
                       shape(1, 8, 8), 1, "test.yaml:6:22",
                       "model.layers[1].dense.units: must be between 1",
                       NULL);
    expect_build_error("    - maxpool: {size: 4, pad: 3}\n",
                       shape(1, 8, 8), 1, "test.yaml:5:31",
                       "maxpool.pad: must be between 0 and 2", NULL);
}

/* --- sizes too large to be meant ---------------------------------------- */

static void test_too_many_parameters(void **state)
{
    (void)state;
    /* Each value passes its own range; the product does not. */
    expect_build_error("    - flatten\n    - dense: {units: 16777216}\n",
                       shape(1, 4096, 4096), 1, "test.yaml:6:7",
                       "parameters at dense_1: too large", NULL);
}

static void test_too_many_activations(void **state)
{
    (void)state;
    expect_build_error("    - relu\n", shape(64, 1024, 1024), 256,
                       "test.yaml:5:7", "GiB at relu_1 for batch 256: too "
                       "large", NULL);
}

/* The net's size limits must hold before any layer allocates its own
 * batch-sized state: a 1 TiB im2col buffer is a config error, not an
 * allocation attempt. */
static void test_conv_workspace_too_large(void **state)
{
    (void)state;
    struct cnn_error err;
    /* 64x64x64 windows over 1985x1985 outputs: an im2col buffer of
     * 262144 x 3.9M floats (4 TiB); parameters and outputs are small. */
    enum cnn_status st = build("    - conv2d: {filters: 1, size: 64}\n",
                               shape(64, 2048, 2048), 1, &err);
    if (st != CNN_ERR_CONFIG)
        fail_msg("expected a config error, got %s: %s",
                 cnn_status_name(st), err.message);
}

static void test_pool_state_too_large(void **state)
{
    (void)state;
    struct cnn_error err;
    /* A maxpool over 2^32 values per example at batch 64: 1 TiB of
     * argmax indices, refused as activations before any allocation. */
    enum cnn_status st = build("    - maxpool: {size: 1}\n",
                               shape(1, 65536, 65536), 64, &err);
    if (st != CNN_ERR_CONFIG)
        fail_msg("expected a config error, got %s: %s",
                 cnn_status_name(st), err.message);
}

static void test_input_too_large(void **state)
{
    (void)state;
    struct cnn_error err;
    /* The input buffer itself, 2^48 floats per example, counts too. */
    enum cnn_status st = build("    - avgpool: {size: 4096}\n",
                               shape(65536, 65536, 65536), 1, &err);
    if (st != CNN_ERR_CONFIG)
        fail_msg("expected a config error, got %s: %s",
                 cnn_status_name(st), err.message);
}

static void test_flatten_too_large(void **state)
{
    (void)state;
    struct cnn_error err;
    /* 2^32 features do not fit the int that holds a width. */
    assert_int_equal(build("    - flatten\n    - dense: {units: 2}\n",
                           shape(1, 65536, 65536), 1, &err), CNN_ERR_CONFIG);
    if (strstr(err.message, "empty"))
        fail_msg("flatten of 1x65536x65536 reported as: %s", err.message);
}

/* --- layers from --set -------------------------------------------------- */

static void test_layers_from_set(void **state)
{
    (void)state;
    struct cnn_error err = {0};
    static const char text[] = PREFIX
        "    - flatten\n"
        "    - dense: {units: 16}\n"
        "    - relu\n"
        "    - dense: {units: 10}\n";
    struct cnn_config *cfg = &cfgs[0];
    assert_int_equal(cnn_config_load_string(cfg, text, "test.yaml", "/base",
                                            &err), CNN_OK);
    assert_int_equal(cnn_config_set(cfg, "model.layers[2]=tanh", &err),
                     CNN_OK);
    assert_int_equal(cnn_config_set(cfg, "model.layers[1].dense.units=7",
                                    &err), CNN_OK);
    assert_int_equal(cnn_config_resolve(cfg, &err), CNN_OK);
    assert_int_equal(cnn_net_build(&nets[0], cfg->model_layers,
                                   shape(1, 4, 4), 2, &err), CNN_OK);
    assert_string_equal(nets[0].layers[2].name, "tanh_1");
    assert_shape(nets[0].layers[1].out, 7, 1, 1);
    assert_int_equal(nets[0].n_params, 16 * 7 + 7 + 7 * 10 + 10);
}

static void test_no_layers(void **state)
{
    (void)state;
    struct cnn_error err = {0};
    assert_int_equal(cnn_net_build(&nets[0], NULL, shape(1, 1, 1), 1, &err),
                     CNN_ERR_CONFIG);
    assert_contains(err.message, "no layers");
}

/* --- initialization ----------------------------------------------------- */

static void test_init_deterministic(void **state)
{
    (void)state;
    struct cnn_error err;
    assert_int_equal(build_in(0, LENET, shape(1, 28, 28), 2, &err), CNN_OK);
    assert_int_equal(build_in(1, LENET, shape(1, 28, 28), 2, &err), CNN_OK);
    struct cnn_net *a = &nets[0], *b = &nets[1];
    size_t bytes = a->n_params * sizeof(float);
    assert_int_equal(a->n_params, b->n_params);

    cnn_net_init_params(a, 7);
    cnn_net_init_params(b, 7);
    assert_memory_equal(a->params, b->params, bytes);
    assert_memory_equal(&a->dropout_rng, &b->dropout_rng,
                        sizeof a->dropout_rng);

    cnn_net_init_params(b, 8);
    assert_memory_not_equal(a->params, b->params, bytes);
    /* Each layer's weights differ, not only the first ones drawn. */
    for (int i = 0; i < a->n_layers; i++)
        if (a->layers[i].n_params > 0)
            assert_memory_not_equal(a->layers[i].params[0].data,
                                    b->layers[i].params[0].data,
                                    a->layers[i].params[0].count *
                                    sizeof(float));

    /* Again with 7: back to the first draw. */
    cnn_net_init_params(b, 7);
    assert_memory_equal(a->params, b->params, bytes);
}

static void test_init_distributions(void **state)
{
    (void)state;
    struct cnn_error err;
    static const char layers[] =
        "    - flatten\n"
        "    - dense: {units: 256}\n"           /* auto: he_normal before relu */
        "    - relu\n"
        "    - dense: {units: 128, init: glorot_uniform}\n"
        "    - dense: {units: 10, init: zeros}\n";
    assert_int_equal(build(layers, shape(1, 28, 28), 1, &err), CNN_OK);
    struct cnn_net *net = &nets[0];
    for (size_t i = 0; i < net->n_params; i++)
        net->params[i] = NAN;
    cnn_net_init_params(net, 1);

    /* he_normal over fan_in 784: std sqrt(2/784). */
    struct cnn_param *w = &net->layers[1].params[0];
    double sum = 0, sq = 0;
    for (size_t i = 0; i < w->count; i++) {
        sum += w->data[i];
        sq += (double)w->data[i] * w->data[i];
    }
    double mean = sum / w->count;
    double std = sqrt(sq / w->count - mean * mean);
    assert_true(fabs(mean) < 0.002);
    assert_true(fabs(std / sqrt(2.0 / 784) - 1.0) < 0.02);

    /* Biases start at zero. */
    struct cnn_param *b = &net->layers[1].params[1];
    for (size_t i = 0; i < b->count; i++)
        assert_true(b->data[i] == 0.0f);

    /* glorot_uniform: within sqrt(3 / fan_avg), fan_avg (256+128)/2. */
    w = &net->layers[3].params[0];
    double bound = sqrt(3.0 / 192.0);
    float lo = 1, hi = -1;
    for (size_t i = 0; i < w->count; i++) {
        lo = w->data[i] < lo ? w->data[i] : lo;
        hi = w->data[i] > hi ? w->data[i] : hi;
    }
    assert_true(lo >= -bound && hi <= bound);
    assert_true(lo < -0.9 * bound && hi > 0.9 * bound);

    w = &net->layers[4].params[0];
    for (size_t i = 0; i < w->count; i++)
        assert_true(w->data[i] == 0.0f);
}

/* --- activation checkpointing ------------------------------------------ */

/* A projection block, an identity block and a pad block, each with
 * batchnorm and dropout in its body, and dropout after them, so that the
 * dropout stream must come out of the blocks where it would have. */
static const char CHECKPOINT_BLOCKS[] =
    "    - conv2d: {filters: 4, size: 3, pad: 1}\n"
    "    - residual:\n"
    "        body:\n"
    "          - conv2d: {filters: 6, size: 3, stride: 2, pad: 1, "
    "bias: false}\n"
    "          - batchnorm\n"
    "          - relu\n"
    "          - dropout: {rate: 0.3}\n"
    "          - conv2d: {filters: 6, size: 3, pad: 1, bias: false}\n"
    "          - batchnorm\n"
    "        shortcut: [conv2d: {filters: 6, size: 1, stride: 2, "
    "bias: false}, batchnorm]\n"
    "    - residual:\n"
    "        body:\n"
    "          - conv2d: {filters: 6, size: 3, pad: 1, bias: false}\n"
    "          - batchnorm\n"
    "          - relu\n"
    "          - dropout: {rate: 0.3}\n"
    "          - conv2d: {filters: 6, size: 3, pad: 1, bias: false}\n"
    "          - batchnorm\n"
    "    - residual:\n"
    "        body: [conv2d: {filters: 8, size: 3, stride: 2, pad: 1}, "
    "batchnorm, dropout: {rate: 0.2}]\n"
    "        shortcut: pad\n"
    "    - dropout: {rate: 0.2}\n"
    "    - global_avgpool\n"
    "    - flatten\n"
    "    - dense: {units: 5}\n";

/* Two residual blocks holding two residual blocks each, one of them with
 * a shortcut of its own. */
static const char NESTED_BLOCKS[] =
    "    - conv2d: {filters: 4, size: 3, pad: 1}\n"
    "    - residual:\n"
    "        body:\n"
    "          - residual:\n"
    "              body: [conv2d: {filters: 4, size: 3, pad: 1}, "
    "batchnorm, relu, dropout: {rate: 0.3}]\n"
    "          - batchnorm\n"
    "          - dropout: {rate: 0.3}\n"
    "          - residual:\n"
    "              body: [conv2d: {filters: 4, size: 3, pad: 1}, "
    "batchnorm]\n"
    "              shortcut: [conv2d: {filters: 4, size: 1}]\n"
    "        repeat: 2\n"
    "%s"
    "    - flatten\n"
    "    - dense: {units: 3}\n";

enum { CK_BATCH = 4 };

/* One training-mode forward and backward of input x and output
 * gradient dout; nets[1]'s scratch is scribbled over in between, so its
 * blocks must recompute what they use. */
static void checkpoint_step(struct cnn_net *net, const float *x,
                            const float *dout)
{
    memcpy(cnn_net_input(net), x,
           CK_BATCH * cnn_shape_size(net->in) * sizeof(float));
    cnn_net_forward(net, CK_BATCH, true);
    if (net->scratch_block)
        memset(net->scratch_block, 0xff,
               net->scratch_floats * sizeof(float));
    cnn_net_zero_grad(net);
    cnn_net_backward(net, dout, CK_BATCH);
}

/* Two steps of nets[0] and nets[1] (the same model, seed and inputs)
 * give the same bytes: outputs, gradients of every parameter and of the
 * blocks' inputs, running statistics, and the dropout stream. */
static void assert_same_steps(void)
{
    struct cnn_net *a = &nets[0], *b = &nets[1];
    assert_int_equal(a->n_params, b->n_params);
    cnn_net_init_params(a, 5);
    cnn_net_init_params(b, 5);
    size_t in = CK_BATCH * cnn_shape_size(a->in);
    size_t out = CK_BATCH * cnn_shape_size(a->out);
    float *x = malloc(in * sizeof *x), *dout = malloc(out * sizeof *dout);
    float *stats = malloc(a->n_params * sizeof *stats);
    assert_non_null(x);
    assert_non_null(dout);
    assert_non_null(stats);
    memcpy(stats, a->params, a->n_params * sizeof *stats);

    struct cnn_rng rng;
    cnn_rng_seed(&rng, 11, 99, 0);
    for (int step = 0; step < 2; step++) {
        for (size_t i = 0; i < in; i++)
            x[i] = (float)cnn_rng_normal(&rng);
        for (size_t i = 0; i < out; i++)
            dout[i] = (float)cnn_rng_normal(&rng);
        checkpoint_step(a, x, dout);
        checkpoint_step(b, x, dout);

        assert_memory_equal(a->acts[a->n_layers], b->acts[b->n_layers],
                            out * sizeof(float));
        assert_memory_equal(a->grads, b->grads,
                            a->n_params * sizeof(float));
        for (int i = 1; i <= a->n_layers; i++)
            assert_memory_equal(a->dacts[i], b->dacts[i], CK_BATCH *
                                cnn_shape_size(a->layers[i - 1].out) *
                                sizeof(float));
        /* The running statistics moved once per step, not twice. */
        assert_memory_equal(a->params, b->params,
                            a->n_params * sizeof(float));
        assert_memory_not_equal(a->params, stats,
                                a->n_params * sizeof(float));
        memcpy(stats, a->params, a->n_params * sizeof *stats);
        assert_memory_equal(&a->dropout_rng, &b->dropout_rng,
                            sizeof a->dropout_rng);
    }
    free(x);
    free(dout);
    free(stats);
}

static void test_checkpoint_same_gradients(void **state)
{
    (void)state;
    struct cnn_error err;
    struct cnn_net_opts on = {.checkpoint = true};
    assert_int_equal(build_opts(0, CHECKPOINT_BLOCKS, shape(2, 8, 8),
                                CK_BATCH, NULL, &err), CNN_OK);
    assert_int_equal(build_opts(1, CHECKPOINT_BLOCKS, shape(2, 8, 8),
                                CK_BATCH, &on, &err), CNN_OK);
    assert_null(nets[0].scratch_block);
    assert_non_null(nets[1].scratch_block);
    assert_true(cnn_net_activation_bytes(&nets[1]) <
                cnn_net_activation_bytes(&nets[0]));
    assert_same_steps();
}

/* The outputs kept: the stem's, each block's and those after them.
 * The scratch holds the largest block's stacks: the first, six body
 * outputs and two shortcut outputs of 6x4x4. */
static void test_checkpoint_bytes(void **state)
{
    (void)state;
    struct cnn_error err;
    struct cnn_net_opts on = {.checkpoint = true};
    assert_int_equal(build_opts(0, CHECKPOINT_BLOCKS, shape(2, 8, 8),
                                CK_BATCH, &on, &err), CNN_OK);
    size_t kept = 4 * 64 + 6 * 16 + 6 * 16 + 8 * 4 + 8 * 4 + 8 + 8 + 5;
    size_t scratch = 8 * 6 * 16;
    assert_int_equal(cnn_net_activation_bytes(&nets[0]),
                     CK_BATCH * (kept + scratch) * sizeof(float));
    /* Outputs and their gradients, and each stack's input gradient. */
    assert_int_equal(nets[0].scratch_floats,
                     CK_BATCH * (2 * scratch + 2 * 4 * 64));
}

/* "checkpoint:" on a block says yes or no whatever the training key
 * says: with the key or without, only the first block checkpoints. */
static void test_checkpoint_per_block(void **state)
{
    (void)state;
    struct cnn_error err;
    struct cnn_net_opts on = {.checkpoint = true};
    static const char layers[] =
        "    - conv2d: {filters: 4, size: 3, pad: 1}\n"
        "    - residual: {body: [conv2d: {filters: 4, size: 3, pad: 1}, "
        "batchnorm, dropout: {rate: 0.5}], checkpoint: %s}\n"
        "    - residual: {body: [conv2d: {filters: 4, size: 3, pad: 1}, "
        "batchnorm, relu], checkpoint: %s}\n"
        "    - flatten\n"
        "    - dense: {units: 3}\n";
    char text[1024];
    snprintf(text, sizeof text, layers, "true", "false");
    assert_int_equal(build_opts(0, text, shape(1, 6, 6), CK_BATCH, &on,
                                &err), CNN_OK);
    assert_int_equal(build_opts(1, text, shape(1, 6, 6), CK_BATCH, NULL,
                                &err), CNN_OK);
    /* Kept: stem, two block outputs, the second body's conv and
     * batchnorm (which does its relu), flatten and dense; scratch: the
     * first body's 3. */
    size_t kept = CK_BATCH * (4 * 36 * 6 + 3);
    size_t scratch = CK_BATCH * 3 * 4 * 36;
    assert_int_equal(cnn_net_activation_bytes(&nets[0]),
                     (kept + scratch) * sizeof(float));
    assert_int_equal(cnn_net_activation_bytes(&nets[1]),
                     (kept + scratch) * sizeof(float));
    assert_same_steps();
}

static void test_checkpoint_nested(void **state)
{
    (void)state;
    struct cnn_error err;
    struct cnn_net_opts on = {.checkpoint = true};
    char text[2048];
    snprintf(text, sizeof text, NESTED_BLOCKS, "");
    assert_int_equal(build_opts(0, text, shape(2, 5, 5), CK_BATCH, NULL,
                                &err), CNN_OK);
    assert_int_equal(build_opts(1, text, shape(2, 5, 5), CK_BATCH, &on,
                                &err), CNN_OK);
    size_t all = cnn_net_activation_bytes(&nets[1]);
    assert_same_steps();

    /* Only the outer blocks: the inner ones live in the outer one's
     * scratch, side by side, and are not run a third time. */
    cnn_net_free(&nets[1]);
    cnn_config_free(&cfgs[1]);
    snprintf(text, sizeof text, NESTED_BLOCKS, "        checkpoint: true\n");
    assert_int_equal(build_opts(1, text, shape(2, 5, 5), CK_BATCH, NULL,
                                &err), CNN_OK);
    size_t outer = cnn_net_activation_bytes(&nets[1]);
    assert_true(all < outer);
    assert_true(outer < cnn_net_activation_bytes(&nets[0]));
    assert_same_steps();
}

/* --- gradients of nested stacks ------------------------------------------ */

static struct cnn_net *stack_of(struct cnn_layer *l, int k)
{
    struct cnn_net *subs[4];
    const char *names[4];
    assert_non_null(l->kind->children);
    assert_true(k < l->kind->children(l, subs, names, 4));
    return subs[k];
}

/* Floats the three gradient buffers of every stack in the tree would
 * take, each stack with its own. */
static size_t unshared_gradients(struct cnn_net *s)
{
    size_t most = 0;
    for (int i = 0; i <= s->n_layers; i++) {
        struct cnn_shape sh = i == 0 ? s->in : s->layers[i - 1].out;
        size_t k = (size_t)s->batch * cnn_shape_size(sh);
        most = k > most ? k : most;
    }
    size_t total = 2 * most + (size_t)s->batch * cnn_shape_size(s->out);
    for (int i = 0; i < s->n_layers; i++) {
        struct cnn_net *subs[4];
        const char *names[4];
        struct cnn_layer *l = &s->layers[i];
        int n = l->kind->children ? l->kind->children(l, subs, names, 4) : 0;
        for (int k = 0; k < n; k++)
            total += unshared_gradients(subs[k]);
    }
    return total;
}

static bool overlap(const float *a, size_t na, const float *b, size_t nb)
{
    return a < b + nb && b < a + na;
}

/* The blocks of one level share one set of gradient buffers; a block's
 * body and shortcut, and the blocks inside them, each have their own;
 * the net takes less than one set per stack; and the steps agree with
 * checkpointing, whose stacks have theirs in the scratch. */
static void test_nested_gradients_shared(void **state)
{
    (void)state;
    struct cnn_error err;
    struct cnn_net_opts on = {.checkpoint = true};
    char text[2048];
    snprintf(text, sizeof text, NESTED_BLOCKS, "");
    assert_int_equal(build_opts(0, text, shape(2, 5, 5), CK_BATCH, NULL,
                                &err), CNN_OK);
    assert_int_equal(build_opts(1, text, shape(2, 5, 5), CK_BATCH, &on,
                                &err), CNN_OK);
    struct cnn_net *a = &nets[0];
    struct cnn_net *body1 = stack_of(&a->layers[1], 0);
    struct cnn_net *body2 = stack_of(&a->layers[2], 0);
    assert_ptr_equal(body1->dacts[0], body2->dacts[0]);
    assert_ptr_equal(body1->dacts[body1->n_layers],
                     body2->dacts[body2->n_layers]);

    size_t slot = CK_BATCH * 4 * 5 * 5;     /* every stack's largest */
    struct cnn_net *inner[] = {stack_of(&body1->layers[0], 0),
                               stack_of(&body1->layers[3], 0),
                               stack_of(&body1->layers[3], 1)};
    assert_ptr_equal(inner[1]->dacts[0],
                     stack_of(&body2->layers[3], 0)->dacts[0]);
    for (int k = 0; k < 3; k++) {
        assert_false(overlap(inner[k]->dacts[0], 3 * slot,
                             body1->dacts[0], 3 * slot));
        assert_false(overlap(inner[k]->dacts[0], 3 * slot,
                             a->dacts[1], slot));
    }
    assert_false(overlap(inner[1]->dacts[0], 3 * slot,
                         inner[2]->dacts[0], 3 * slot));
    assert_non_null(a->grad_block);
    assert_true(cnn_net_training_bytes(a) - cnn_net_activation_bytes(a) <
                unshared_gradients(a) * sizeof(float));
    assert_same_steps();
}

/* --- where the backward pass stops ------------------------------------- */

/* Layers without parameters before the first with some get no backward
 * pass, and that layer no input gradient: a flatten (a view of the
 * input, then) and a relu before the first dense leave the same weight
 * gradients as the dense on the flat input alone. A block with
 * parameters inside it counts. */
static void test_backward_stops_at_first_params(void **state)
{
    (void)state;
    struct cnn_error err;
    assert_int_equal(build_in(0, "    - flatten\n    - relu\n"
                                 "    - dense: {units: 4}\n    - relu\n"
                                 "    - dense: {units: 3}\n",
                              shape(2, 3, 3), 2, &err), CNN_OK);
    assert_int_equal(build_in(1, "    - relu\n    - dense: {units: 4}\n"
                                 "    - relu\n    - dense: {units: 3}\n",
                              shape(18, 1, 1), 2, &err), CNN_OK);
    struct cnn_net *a = &nets[0], *b = &nets[1];
    assert_int_equal(a->grad_from, 2);
    assert_int_equal(b->grad_from, 1);
    for (int i = 0; i <= 2; i++)
        assert_null(a->dacts[i]);
    assert_non_null(a->dacts[3]);
    /* That flatten is a view of the input, and skipped. */
    assert_true(a->layers[0].skipped);
    assert_ptr_equal(a->acts[1], a->acts[0]);

    assert_int_equal(a->n_params, b->n_params);
    cnn_net_init_params(a, 3);
    memcpy(b->params, a->params, a->n_params * sizeof(float));
    float dout[6] = {0.5f, -1.0f, 0.25f, 2.0f, -0.5f, 1.0f};
    float *xa = cnn_net_input(a), *xb = cnn_net_input(b);
    for (int i = 0; i < 36; i++)
        xa[i] = xb[i] = (float)((i * 7) % 11) - 5.0f;
    struct cnn_net *both[] = {a, b};
    for (int k = 0; k < 2; k++) {
        cnn_net_forward(both[k], 2, true);
        cnn_net_zero_grad(both[k]);
        cnn_net_backward(both[k], dout, 2);
    }
    assert_memory_equal(a->grads, b->grads, a->n_params * sizeof(float));
    bool any = false;
    for (size_t i = 0; i < a->n_params; i++)
        any = any || a->grads[i] != 0.0f;
    assert_true(any);

    cnn_net_free(&nets[1]);
    cnn_config_free(&cfgs[1]);
    memset(&nets[1], 0, sizeof nets[1]);
    memset(&cfgs[1], 0, sizeof cfgs[1]);
    assert_int_equal(build_in(1, "    - relu\n    - residual:\n"
                                 "        body: [conv2d: {filters: 2, "
                                 "size: 1}]\n",
                              shape(2, 3, 3), 2, &err), CNN_OK);
    assert_int_equal(nets[1].grad_from, 1);
}

/* A relu after a batchnorm is done by the batchnorm, in its buffer,
 * and the net skips it: outputs and every gradient are bit for bit those
 * of the unfused net, in training and in evaluation, on a residual model
 * (fused in the top stack and in the block's body; the relu that ends a
 * body and so writes the block's output gradient included), with one
 * activation buffer fewer per fused relu. */
static void test_relu_fused(void **state)
{
    (void)state;
    static const char layers[] =
        "    - conv2d: {filters: 4, size: 3, pad: 1}\n"
        "    - batchnorm\n"
        "    - relu\n"
        "    - residual:\n"
        "        body:\n"
        "          - conv2d: {filters: 4, size: 3, pad: 1}\n"
        "          - batchnorm\n"
        "          - relu\n"
        "          - conv2d: {filters: 4, size: 3, pad: 1}\n"
        "          - batchnorm\n"
        "          - relu\n"
        "    - flatten\n"
        "    - dense: {units: 8}\n"
        "    - batchnorm\n"
        "    - relu\n"
        "    - dense: {units: 3}\n";
    struct cnn_error err;
    struct cnn_net_opts unfused = {.unfused = true};
    assert_int_equal(build_opts(0, layers, shape(2, 5, 5), 4, NULL, &err),
                     CNN_OK);
    assert_int_equal(build_opts(1, layers, shape(2, 5, 5), 4, &unfused,
                                &err), CNN_OK);
    struct cnn_net *a = &nets[0], *b = &nets[1];
    assert_true(a->layers[1].applies_relu && a->layers[2].skipped);
    assert_ptr_equal(a->acts[3], a->acts[2]);
    assert_true(a->layers[6].applies_relu && a->layers[7].skipped);
    assert_false(b->layers[1].applies_relu || b->layers[2].skipped);
    struct cnn_net *body = a->layers[3].state;     /* the block's body */
    assert_true(body->layers[1].applies_relu && body->layers[2].skipped);
    assert_true(body->layers[4].applies_relu && body->layers[5].skipped);
    /* 2 x 100 + 4 floats per example fewer: one 4x5x5 buffer at the top,
     * two in the body, one of the 8 units. */
    assert_int_equal(cnn_net_activation_bytes(b) -
                         cnn_net_activation_bytes(a),
                     4 * (3 * 100 + 8) * sizeof(float));

    assert_int_equal(a->n_params, b->n_params);
    cnn_net_init_params(a, 5);
    memcpy(b->params, a->params, a->n_params * sizeof(float));
    float *xa = cnn_net_input(a), *xb = cnn_net_input(b);
    for (int i = 0; i < 4 * 50; i++)
        xa[i] = xb[i] = (float)((i * 37) % 23) / 7.0f - 1.5f;
    float dout[12];
    for (int i = 0; i < 12; i++)
        dout[i] = (float)(i % 5) - 2.0f;
    for (int pass = 0; pass < 2; pass++) {
        bool train = pass == 0;
        const float *ya = cnn_net_forward(a, 4, train);
        const float *yb = cnn_net_forward(b, 4, train);
        assert_memory_equal(ya, yb, 12 * sizeof(float));
        if (!train)
            break;
        cnn_net_zero_grad(a);
        cnn_net_zero_grad(b);
        cnn_net_backward(a, dout, 4);
        cnn_net_backward(b, dout, 4);
        assert_memory_equal(a->grads, b->grads, a->n_params * sizeof(float));
    }
    /* Running statistics moved alike too. */
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
}

/* --- bfloat16 activations ---------------------------------------------- */

/* A plain stack's output gradients take two buffers in turn plus the
 * output's, in float32 and bf16 alike; bf16 keeps each output in half
 * the bytes, at the price of two float work buffers. */
static void test_activation_bytes(void **state)
{
    (void)state;
    static const char layers[] =
        "    - conv2d: {filters: 4, size: 3, pad: 1}\n"
        "    - relu\n"
        "    - conv2d: {filters: 8, size: 3, pad: 1}\n"
        "    - relu\n"
        "    - conv2d: {filters: 8, size: 3, pad: 1}\n"
        "    - relu\n"
        "    - conv2d: {filters: 8, size: 3, pad: 1}\n"
        "    - relu\n"
        "    - flatten\n"
        "    - dense: {units: 5}\n";
    struct cnn_error err;
    struct cnn_net_opts half = {.bf16 = true};
    assert_int_equal(build_opts(0, layers, shape(2, 8, 8), 4, NULL, &err),
                     CNN_OK);
    assert_int_equal(build_opts(1, layers, shape(2, 8, 8), 4, &half, &err),
                     CNN_OK);
    struct cnn_net *a = &nets[0], *b = &nets[1];
    size_t largest = 4 * 8 * 64, out = 4 * 5, outputs = 0;
    for (int i = 0; i < a->n_layers; i++)
        outputs += 4 * cnn_shape_size(a->layers[i].out);
    assert_int_equal(cnn_net_activation_bytes(a), outputs * sizeof(float));
    assert_int_equal(cnn_net_training_bytes(a) - cnn_net_activation_bytes(a),
                     (2 * largest + out) * sizeof(float));
    assert_int_equal(cnn_net_training_bytes(b) - cnn_net_activation_bytes(b),
                     (2 * largest + out) * sizeof(float));
    assert_true(cnn_net_training_bytes(b) < cnn_net_training_bytes(a));
    for (int i = 1; i < a->n_layers; i++)
        assert_ptr_equal(a->dacts[i], a->dacts[i % 2 ? 1 : 2]);
    assert_ptr_not_equal(a->dacts[1], a->dacts[2]);
}

/* precision: bf16 on the residual model without dropout: each output
 * kept is a bfloat16 value, the gradients stay within bfloat16's
 * rounding of fp32's, and the buffers take less memory. */
static void test_bf16_activations(void **state)
{
    (void)state;
    static const char layers[] =
        "    - conv2d: {filters: 4, size: 3, pad: 1}\n"
        "    - residual:\n"
        "        body: [conv2d: {filters: 4, size: 3, pad: 1}, batchnorm, "
        "relu, conv2d: {filters: 4, size: 3, pad: 1}, batchnorm]\n"
        "    - residual:\n"
        "        body: [conv2d: {filters: 6, size: 3, stride: 2, pad: 1}, "
        "batchnorm, relu]\n"
        "        shortcut: [conv2d: {filters: 6, size: 1, stride: 2}]\n"
        "    - global_avgpool\n"
        "    - flatten\n"
        "    - dense: {units: 5}\n";
    struct cnn_error err;
    struct cnn_net_opts half = {.bf16 = true};
    assert_int_equal(build_opts(0, layers, shape(2, 8, 8), CK_BATCH, NULL,
                                &err), CNN_OK);
    assert_int_equal(build_opts(1, layers, shape(2, 8, 8), CK_BATCH, &half,
                                &err), CNN_OK);
    struct cnn_net *a = &nets[0], *b = &nets[1];
    cnn_net_init_params(a, 5);
    cnn_net_init_params(b, 5);

    size_t in = CK_BATCH * cnn_shape_size(a->in);
    size_t out = CK_BATCH * cnn_shape_size(a->out);
    float x[CK_BATCH * 2 * 8 * 8], dout[CK_BATCH * 5];
    struct cnn_rng rng;
    cnn_rng_seed(&rng, 12, 99, 0);
    for (size_t i = 0; i < in; i++)
        x[i] = (float)cnn_rng_normal(&rng);
    for (size_t i = 0; i < out; i++)
        dout[i] = (float)cnn_rng_normal(&rng);
    checkpoint_step(a, x, dout);
    checkpoint_step(b, x, dout);

    /* The output is what was kept: packing it changes nothing. */
    const float *y = b->acts[b->n_layers];
    float again[CK_BATCH * 5];
    memcpy(again, y, out * sizeof *again);
    cnn_bf16_round(again, out);
    assert_memory_equal(again, y, out * sizeof *again);

    /* Gradients within a few bfloat16 roundings (2^-8 each) of fp32's,
     * relative to the tensor's largest; and not equal to them. */
    double worst = 0, biggest = 0;
    for (size_t i = 0; i < a->n_params; i++)
        biggest = fmax(biggest, fabs(a->grads[i]));
    for (size_t i = 0; i < a->n_params; i++)
        worst = fmax(worst, fabs(a->grads[i] - b->grads[i]) / biggest);
    print_message("bf16: worst gradient difference %.3g of the largest\n",
                  worst);
    assert_true(worst > 0);
    assert_true(worst < 0.02);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_lenet_shapes),
        T(test_param_names),
        T(test_geometry),
        T(test_flat_input),
        T(test_custom_names),
        T(test_name_errors),
        T(test_default_name_after_custom),
        T(test_unknown_layer),
        T(test_layer_item_shapes),
        T(test_two_keys_indentation_slip),
        T(test_dense_needs_flat),
        T(test_window_too_large),
        T(test_unknown_argument),
        T(test_misspelled_required_argument),
        T(test_missing_required_beside_optional),
        T(test_argument_range),
        T(test_too_many_parameters),
        T(test_too_many_activations),
        T(test_conv_workspace_too_large),
        T(test_pool_state_too_large),
        T(test_input_too_large),
        T(test_flatten_too_large),
        T(test_layers_from_set),
        T(test_no_layers),
        T(test_init_deterministic),
        T(test_init_distributions),
        T(test_checkpoint_same_gradients),
        T(test_bf16_activations),
        T(test_activation_bytes),
        T(test_checkpoint_bytes),
        T(test_checkpoint_per_block),
        T(test_checkpoint_nested),
        T(test_nested_gradients_shared),
        T(test_backward_stops_at_first_params),
        T(test_relu_fused),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
