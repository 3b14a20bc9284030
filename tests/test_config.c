/*
 * Config loader tests: every error path of the YAML reader and the typed
 * resolver (message, key path, file:line:col from 1, hint), --set
 * overrides, path resolution, and the emit/reload round trip.
 *
 * Configs are written inline and loaded with cnn_config_load_string as
 * "test.yaml" in "/base", except where the file itself is the subject
 * (missing, NUL bytes, not UTF-8, too large), which go through a scratch
 * directory. No test reads a dataset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/config.h"
#include "cnn/optim.h"
#include "testutil.h"

/* Lines 1-2: a data section; lines 3-5: a model. Tests append from
 * line 6 on, so their line numbers are known. */
#define DATA "data:\n  train: {images: tr.gz, labels: trl.gz}\n"
#define MODEL "model:\n  layers:\n    - dense: {units: 10}\n"
#define BASE DATA MODEL

/* --- helpers ------------------------------------------------------------ */

/* Configs and buffers a test holds, freed by teardown even when an
 * assertion ends the test early, so a failing test leaks nothing. */
static struct cnn_config pool[4];
static void *owned[8];
static int n_owned;
static char *scratch_dir;

static void *keep(void *p)
{
    assert_true(n_owned < (int)(sizeof owned / sizeof owned[0]));
    owned[n_owned++] = p;
    return p;
}

static int setup(void **state)
{
    (void)state;
    memset(pool, 0, sizeof pool);
    n_owned = 0;
    scratch_dir = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof pool / sizeof pool[0]; i++)
        cnn_config_free(&pool[i]);
    if (scratch_dir)
        test_rm_tree(scratch_dir);
    for (int i = 0; i < n_owned; i++)
        free(owned[i]);
    n_owned = 0;
    return 0;
}

/* Loads text as test.yaml in /base and resolves it, then lets the
 * optimizer registry check the optimizer section (its keys belong to the
 * optimizer kinds, as a layer's arguments belong to the layer), the way
 * cnn_session_open does. */
static enum cnn_status load(struct cnn_config *cfg, const char *text,
                            struct cnn_error *err)
{
    memset(err, 0, sizeof *err);
    enum cnn_status st = cnn_config_load_string(cfg, text, "test.yaml",
                                                "/base", err);
    if (st == CNN_OK)
        st = cnn_config_resolve(cfg, err);
    if (st == CNN_OK) {
        struct cnn_optim o;
        st = cnn_optim_create(&o, cfg->optim.node, NULL, 0, 0, err);
        cnn_optim_free(&o);
    }
    return st;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

/* Loads and resolves text, expecting a config error at where whose
 * message holds msg and whose hint holds hint (NULL: no hint wanted,
 * "" : any hint). */
static void expect_error(const char *text, const char *where,
                         const char *msg, const char *hint)
{
    struct cnn_config *cfg = &pool[3];
    struct cnn_error err;
    enum cnn_status st = load(cfg, text, &err);
    if (st == CNN_OK)
        fail_msg("expected an error at %s (%s), but the config loaded",
                 where, msg);
    assert_int_equal(st, CNN_ERR_CONFIG);
    assert_int_equal(err.status, CNN_ERR_CONFIG);
    assert_string_equal(err.where, where);
    assert_contains(err.message, msg);
    if (hint)
        assert_contains(err.hint, hint);
    else
        assert_string_equal(err.hint, "");
    cnn_config_free(cfg);
}

/* Loads text, applies one --set, resolves. */
static enum cnn_status load_set(struct cnn_config *cfg, const char *text,
                                const char *set, struct cnn_error *err)
{
    memset(err, 0, sizeof *err);
    enum cnn_status st = cnn_config_load_string(cfg, text, "test.yaml",
                                                "/base", err);
    if (st == CNN_OK)
        st = cnn_config_set(cfg, set, err);
    if (st == CNN_OK)
        st = cnn_config_resolve(cfg, err);
    return st;
}

/* --- a good config ------------------------------------------------------ */

static void test_minimal_defaults(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;
    assert_int_equal(load(cfg, BASE, &err), CNN_OK);

    assert_string_equal(cfg->name, "run");
    assert_int_equal(cfg->seed, 0);
    assert_string_equal(cfg->data.train.images, "/base/tr.gz");
    assert_string_equal(cfg->data.train.labels, "/base/trl.gz");
    assert_null(cfg->data.test.images);
    assert_false(cfg->data.normalize_auto);
    assert_int_equal(cfg->data.n_mean, 0);
    assert_int_equal(cfg->input_c, 0);
    assert_non_null(cfg->model_layers);
    assert_int_equal(cfg->model_layers->kind, CNN_NODE_SEQ);
    assert_int_equal(cfg->model_layers->n_items, 1);
    assert_string_equal(cfg->optim.name, "sgd");
    assert_true(cfg->optim.lr == 0.01);
    assert_string_equal(cfg->schedule.name, "constant");
    assert_int_equal(cfg->training.epochs, 10);
    assert_int_equal(cfg->training.batch_size, 64);
    assert_int_equal(cfg->training.max_steps, 0);
    assert_int_equal(cfg->training.log_every, 50);
    assert_int_equal(cfg->training.loss, CNN_LOSS_CROSS_ENTROPY);
    cnn_config_free(cfg);
}

static const char FULL[] =
    "name: full\n"
    "seed: 42\n"
    "data:\n"
    "  format: idx\n"
    "  dir: d\n"
    "  train: {images: a.gz, labels: b.gz}\n"
    "  test:\n"
    "    images: /abs/c.gz\n"
    "    labels: e.gz\n"
    "  normalize: {mean: [0.5, 0.25, 0.125], std: [1, 2, 4]}\n"
    "  limit_train: 1000\n"
    "  limit_test: 1e2\n"
    "model:\n"
    "  input: [3, 32, 16]\n"
    "  layers:\n"
    "    - conv2d: {filters: 8, size: 3, pad: same}\n"
    "    - relu\n"
    "    - flatten\n"
    "    - dense: {units: 10, name: logits}\n"
    "optimizer:\n"
    "  name: sgd\n"
    "  lr: 0.125\n"
    "  momentum: 0.875\n"
    "  weight_decay: 5e-4\n"
    "  nesterov: yes\n"
    "schedule:\n"
    "  name: step\n"
    "  warmup_steps: 7\n"
    "  gamma: 0.5\n"
    "  step_epochs: 3\n"
    "  min_lr: 0.001\n"
    "training:\n"
    "  epochs: 4\n"
    "  batch_size: 32\n"
    "  max_steps: 100\n"
    "  log_every: 5\n"
    "  loss: mse\n"
    "  threads: 2\n";

static void check_full(const struct cnn_config *cfg, const char *base)
{
    char path[256];
    assert_string_equal(cfg->name, "full");
    assert_int_equal(cfg->seed, 42);
    snprintf(path, sizeof path, "%s/d/a.gz", base);
    assert_string_equal(cfg->data.train.images, path);
    snprintf(path, sizeof path, "%s/d/b.gz", base);
    assert_string_equal(cfg->data.train.labels, path);
    assert_string_equal(cfg->data.test.images, "/abs/c.gz");
    snprintf(path, sizeof path, "%s/d/e.gz", base);
    assert_string_equal(cfg->data.test.labels, path);
    assert_false(cfg->data.normalize_auto);
    assert_int_equal(cfg->data.n_mean, 3);
    assert_int_equal(cfg->data.n_std, 3);
    assert_true(cfg->data.mean[0] == 0.5f && cfg->data.mean[1] == 0.25f &&
                cfg->data.mean[2] == 0.125f);
    assert_true(cfg->data.std[0] == 1.0f && cfg->data.std[1] == 2.0f &&
                cfg->data.std[2] == 4.0f);
    assert_int_equal(cfg->data.limit_train, 1000);
    assert_int_equal(cfg->data.limit_test, 100);
    assert_int_equal(cfg->input_c, 3);
    assert_int_equal(cfg->input_h, 32);
    assert_int_equal(cfg->input_w, 16);
    assert_int_equal(cfg->model_layers->n_items, 4);
    assert_string_equal(cfg->optim.name, "sgd");
    assert_true(cfg->optim.lr == 0.125);
    /* The optimizer's own keys are read by the optimizer (optim.c). */
    double v;
    bool b;
    struct cnn_error rerr = {0};
    assert_int_equal(cnn_read_float(cfg->optim.node, "momentum", 0, 0, 1, &v,
                                    &rerr), CNN_OK);
    assert_true(v == 0.875);
    assert_int_equal(cnn_read_float(cfg->optim.node, "weight_decay", 0, 0, 1,
                                    &v, &rerr), CNN_OK);
    assert_true(v == 5e-4);
    assert_int_equal(cnn_read_bool(cfg->optim.node, "nesterov", false, &b,
                                   &rerr), CNN_OK);
    assert_true(b);
    assert_string_equal(cfg->schedule.name, "step");
    assert_int_equal(cfg->schedule.warmup_steps, 7);
    assert_true(cfg->schedule.gamma == 0.5);
    assert_int_equal(cfg->schedule.step_epochs, 3);
    assert_true(cfg->schedule.min_lr == 0.001);
    assert_int_equal(cfg->training.epochs, 4);
    assert_int_equal(cfg->training.batch_size, 32);
    assert_int_equal(cfg->training.max_steps, 100);
    assert_int_equal(cfg->training.log_every, 5);
    assert_int_equal(cfg->training.loss, CNN_LOSS_MSE);
    assert_int_equal(cfg->training.threads, 2);
}

static void test_full_config(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;
    assert_int_equal(load(cfg, FULL, &err), CNN_OK);
    check_full(cfg, "/base");

    /* Nodes remember where they stand, from 1. */
    struct cnn_node *training = cnn_node_get(cfg->root, "training");
    struct cnn_node *epochs = cnn_node_get(training, "epochs");
    assert_string_equal(epochs->path, "training.epochs");
    assert_int_equal(epochs->line, 33);
    assert_int_equal(epochs->col, 11);
    assert_int_equal(epochs->key_line, 33);
    assert_int_equal(epochs->key_col, 3);
    assert_string_equal(cfg->model_layers->items[3]->path, "model.layers[3]");
    cnn_config_free(cfg);
}

static void test_normalize_auto_and_scalar(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;
    assert_int_equal(load(cfg, DATA "  normalize: auto\n" MODEL, &err),
                     CNN_OK);
    assert_true(cfg->data.normalize_auto);
    cnn_config_free(cfg);

    assert_int_equal(load(cfg, DATA "  normalize: {mean: 0.3, std: 0.4}\n"
                          MODEL, &err), CNN_OK);
    assert_int_equal(cfg->data.n_mean, 1);
    assert_true(cfg->data.mean[0] == 0.3f && cfg->data.std[0] == 0.4f);
    cnn_config_free(cfg);
}

static void test_empty_text_is_empty_map(void **state)
{
    (void)state;
    /* Nothing at all parses, then misses its data section. */
    expect_error("", "test.yaml:1:1", "missing section 'data'", NULL);
    expect_error("# only a comment\n", "test.yaml:1:1",
                 "missing section 'data'", NULL);
}

/* --- YAML-level errors -------------------------------------------------- */

static void test_malformed_yaml(void **state)
{
    (void)state;
    /* A key indented deeper than its sibling. */
    expect_error("seed: 1\n"
                 "training:\n"
                 "  epochs: 5\n"
                 "    batch_size: 3\n",
                 "test.yaml:4:15", "invalid YAML", NULL);
    /* A tab where indentation belongs. */
    expect_error("seed: 1\n"
                 "training:\n"
                 "\tepochs: 5\n",
                 "test.yaml:3:1", "invalid YAML", NULL);
    /* An unclosed flow sequence. */
    expect_error("seed: 1\n"
                 "model:\n"
                 "  input: [1, 28\n"
                 "  layers: []\n",
                 "test.yaml:4:9", "invalid YAML", NULL);
    /* An unterminated quoted string runs to the end. */
    expect_error("name: \"abc\n", "test.yaml:2:1", "invalid YAML", NULL);
}

static void test_top_level_not_mapping(void **state)
{
    (void)state;
    expect_error("- a\n- b\n", "test.yaml:1:1", "a config is a mapping",
                 NULL);
    expect_error("\n\n  just words\n", "test.yaml:3:3",
                 "a config is a mapping", NULL);
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_error(BASE "training:\n  epochs: 1\n  epochs: 2\n",
                 "test.yaml:8:3", "duplicate key 'epochs' (first at line 7)",
                 NULL);
    expect_error(BASE "seed: 1\nseed: 2\n", "test.yaml:7:1",
                 "duplicate key 'seed' (first at line 6)", NULL);
}

static void test_non_scalar_key(void **state)
{
    (void)state;
    expect_error(BASE "[a, b]: 1\n", "test.yaml:6:1",
                 "mapping keys must be plain words", NULL);
}

static void test_multi_document(void **state)
{
    (void)state;
    expect_error(BASE "---\nseed: 2\n", "test.yaml:7:1",
                 "more than one YAML document", NULL);
}

static void test_alias_bomb(void **state)
{
    (void)state;
    /* Nine levels of ten: 10^9 nodes once expanded. */
    char text[4096];
    size_t len = (size_t)snprintf(text, sizeof text,
                                  "a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (char c = 'b'; c <= 'i'; c++) {
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "%c: &%c [", c, c);
        for (int i = 0; i < 10; i++)
            len += (size_t)snprintf(text + len, sizeof text - len, "%s*%c",
                                    i ? ", " : "", c - 1);
        len += (size_t)snprintf(text + len, sizeof text - len, "]\n");
    }
    assert_true(len < sizeof text - 1);

    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;
    assert_int_equal(load(cfg, text, &err), CNN_ERR_CONFIG);
    assert_contains(err.message, "too large");
    assert_contains(err.where, "test.yaml:");
    cnn_config_free(cfg);
}

static void test_nesting_bomb(void **state)
{
    (void)state;
    char text[512];
    size_t n = 0;
    n += (size_t)snprintf(text, sizeof text, "a: ");
    for (int i = 0; i < 100; i++)
        text[n++] = '[';
    for (int i = 0; i < 100; i++)
        text[n++] = ']';
    text[n++] = '\n';
    text[n] = '\0';

    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;
    assert_int_equal(load(cfg, text, &err), CNN_ERR_CONFIG);
    assert_contains(err.message, "too deeply nested");
    cnn_config_free(cfg);
}

static void test_legal_aliases(void **state)
{
    (void)state;
    static const char text[] =
        DATA
        "blocks: &unused {}\n"   /* line 3 */
        "model:\n"
        "  layers:\n"
        "    - &blk {dense: {units: 32}}\n"
        "    - relu\n"
        "    - *blk\n";
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;

    /* A top-level section holding anchors is still an unknown key. */
    expect_error(text, "test.yaml:3:1", "unknown key 'blocks'", "");

    static const char good[] =
        DATA
        "model:\n"
        "  layers:\n"
        "    - &blk {dense: {units: 32}}\n"
        "    - relu\n"
        "    - *blk\n"
        "optimizer: &opt {lr: 0.5}\n";
    assert_int_equal(load(cfg, good, &err), CNN_OK);
    struct cnn_node *layers = cfg->model_layers;
    assert_int_equal(layers->n_items, 3);
    for (int i = 0; i < 3; i += 2) {
        struct cnn_node *item = layers->items[i];
        assert_int_equal(item->kind, CNN_NODE_MAP);
        assert_int_equal(item->n_items, 1);
        assert_string_equal(item->items[0]->key, "dense");
        struct cnn_node *units = item->items[0]->items[0];
        assert_string_equal(units->key, "units");
        assert_string_equal(units->value, "32");
    }
    /* Each copy has its own path. */
    assert_string_equal(layers->items[2]->items[0]->items[0]->path,
                        "model.layers[2].dense.units");
    assert_true(cfg->optim.lr == 0.5);

    /* The expansion is a copy: changing one use leaves the other. */
    cnn_config_free(cfg);
    assert_int_equal(load_set(cfg, good, "model.layers[2].dense.units=7",
                              &err), CNN_OK);
    assert_string_equal(cfg->model_layers->items[0]->items[0]->items[0]->value,
                        "32");
    assert_string_equal(cfg->model_layers->items[2]->items[0]->items[0]->value,
                        "7");
    cnn_config_free(cfg);
}

/* --- unknown keys ------------------------------------------------------- */

static void test_unknown_top_level_key(void **state)
{
    (void)state;
    expect_error(BASE "optimiser:\n  lr: 0.1\n", "test.yaml:6:1",
                 "unknown key 'optimiser'", "optimizer");
    /* Nothing close: the hint lists the known keys. */
    expect_error(BASE "zzzzzz: 1\n", "test.yaml:6:1", "unknown key 'zzzzzz'",
                 "known keys here: name, seed, data, model");
}

static void test_unknown_training_key(void **state)
{
    (void)state;
    expect_error(BASE "training:\n  epoch: 3\n", "test.yaml:7:3",
                 "training.epoch: unknown key 'epoch'", "did you mean "
                 "'epochs'?");
    expect_error(BASE "training:\n  batchsize: 3\n", "test.yaml:7:3",
                 "training.batchsize", "batch_size");
}

static void test_unknown_keys_in_sections(void **state)
{
    (void)state;
    expect_error(DATA "  formt: idx\n" MODEL, "test.yaml:3:3",
                 "data.formt: unknown key", "format");
    expect_error("data:\n  train: {images: a, labels: b, label: c}\n" MODEL,
                 "test.yaml:2:33", "data.train.label: unknown key", "labels");
    expect_error(DATA "model:\n  layer: []\n  layers: [relu]\n",
                 "test.yaml:4:3", "model.layer: unknown key", "layers");
    expect_error(BASE "optimizer:\n  momentun: 0.9\n", "test.yaml:7:3",
                 "optimizer.momentun", "momentum");
    expect_error(BASE "schedule:\n  warmup: 3\n", "test.yaml:7:3",
                 "schedule.warmup: unknown key",
                 "known keys here: name, warmup_steps, gamma, step_epochs, "
                 "milestones, min_lr, pct_start");
    expect_error(DATA "  normalize: {mean: 1, std: 1, sdt: 2}\n" MODEL,
                 "test.yaml:3:32", "data.normalize.sdt", "std");
}

/* --- values ------------------------------------------------------------- */

/* The gradient statistics keys: off and quiet-unless-unhealthy by
 * default, checked for range. */
static void test_grad_stats_keys(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;
    assert_int_equal(load(cfg, BASE, &err), CNN_OK);
    assert_int_equal(cfg->training.log_grad_stats, 0);
    assert_true(cfg->training.vanishing_ratio == 1e-4);
    assert_true(cfg->training.exploding_ratio == 1e4);
    cnn_config_free(cfg);

    assert_int_equal(load(cfg, BASE "training:\n  log_grad_stats: 10\n"
                          "  vanishing_ratio: 0\n  exploding_ratio: 100\n",
                          &err), CNN_OK);
    assert_int_equal(cfg->training.log_grad_stats, 10);
    assert_true(cfg->training.vanishing_ratio == 0);
    assert_true(cfg->training.exploding_ratio == 100);
    cnn_config_free(cfg);

    expect_error(BASE "training:\n  log_grad_stats: -1\n", "test.yaml:7:19",
                 "training.log_grad_stats: must be between 0 and", NULL);
    expect_error(BASE "training:\n  vanishing_ratio: 2\n", "test.yaml:7:20",
                 "training.vanishing_ratio: must be between 0 and 1", NULL);
    expect_error(BASE "training:\n  log_grad_stat: 5\n", "test.yaml:7:3",
                 "training.log_grad_stat: unknown key", "log_grad_stats");
}

static void test_wrong_value_type(void **state)
{
    (void)state;
    expect_error(BASE "training:\n  epochs: abc\n", "test.yaml:7:11",
                 "training.epochs: expected an integer, got 'abc'", NULL);
    expect_error(BASE "training:\n  epochs: \"5\"\n", "test.yaml:7:11",
                 "training.epochs: expected an integer, got a quoted string",
                 NULL);
    expect_error(BASE "training:\n  epochs: [1]\n", "test.yaml:7:11",
                 "expected an integer, got a list", NULL);
    expect_error(BASE "training:\n  epochs: 2.5\n", "test.yaml:7:11",
                 "expected an integer, got '2.5'", NULL);
    expect_error(BASE "training:\n  epochs:\n", "test.yaml:7:10",
                 "expected an integer, got null", NULL);
    expect_error(BASE "optimizer:\n  lr: fast\n", "test.yaml:7:7",
                 "optimizer.lr: expected a number, got 'fast'", NULL);
    expect_error(BASE "optimizer:\n  lr: .nan\n", "test.yaml:7:7",
                 "expected a number", NULL);
    expect_error(BASE "optimizer:\n  lr: nan\n", "test.yaml:7:7",
                 "expected a number", NULL);
    expect_error(BASE "optimizer:\n  name: [sgd]\n", "test.yaml:7:9",
                 "optimizer.name: expected a non-empty string", NULL);
    expect_error(BASE "training: 5\n", "test.yaml:6:11",
                 "training: expected a mapping of keys, got a value", NULL);
    expect_error(BASE "optimizer: [1]\n", "test.yaml:6:12",
                 "optimizer: expected a mapping", NULL);
    expect_error("data: [1]\n" MODEL, "test.yaml:1:7",
                 "data: expected a mapping", NULL);
}

static void test_first_line_first_column(void **state)
{
    (void)state;
    /* Counting from 1 on both axes. */
    expect_error("seed: abc\n" BASE, "test.yaml:1:7",
                 "seed: expected an integer", NULL);
    expect_error("zeed: 1\n" BASE, "test.yaml:1:1", "unknown key 'zeed'",
                 "seed");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_error(BASE "training:\n  batch_size: 0\n", "test.yaml:7:15",
                 "training.batch_size: must be between 1 and 65536, got 0",
                 NULL);
    expect_error(BASE "training:\n  epochs: -1\n", "test.yaml:7:11",
                 "training.epochs: must be between 1 and 1000000, got -1",
                 NULL);
    expect_error(BASE "training:\n  batch_size: 1000000000000\n",
                 "test.yaml:7:15", "training.batch_size: must be between",
                 NULL);
    /* Past long long itself. */
    expect_error(BASE "training:\n  batch_size: 99999999999999999999999\n",
                 "test.yaml:7:15", "training.batch_size: must be between",
                 NULL);
    expect_error(BASE "training:\n  batch_size: 1e30\n", "test.yaml:7:15",
                 "training.batch_size: must be between", NULL);
    expect_error(BASE "training:\n  epochs: .inf\n", "test.yaml:7:11",
                 "training.epochs: expected an integer", NULL);
    expect_error(BASE "seed: -1\n", "test.yaml:6:7", "seed: must be between",
                 NULL);
    expect_error(BASE "optimizer:\n  momentum: 1.5\n", "test.yaml:7:13",
                 "optimizer.momentum: must be between 0 and 1, got 1.5",
                 NULL);
    expect_error(BASE "optimizer:\n  lr: -0.1\n", "test.yaml:7:7",
                 "optimizer.lr: must be between", NULL);
    expect_error(BASE "optimizer:\n  lr: 1e400\n", "test.yaml:7:7",
                 "optimizer.lr: expected a number", NULL);
    expect_error(BASE "schedule:\n  gamma: 2\n", "test.yaml:7:10",
                 "schedule.gamma: must be between", NULL);
    expect_error(BASE "training:\n  threads: 5000\n", "test.yaml:7:12",
                 "training.threads: must be between 0 and 1024", NULL);
    expect_error(DATA "  limit_train: -5\n" MODEL, "test.yaml:3:16",
                 "data.limit_train: must be between", NULL);
}

static void test_whole_numbers_in_float_notation(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;
    assert_int_equal(load(cfg, BASE "training:\n  epochs: 1e3\n"
                          "  batch_size: 128.0\n", &err), CNN_OK);
    assert_int_equal(cfg->training.epochs, 1000);
    assert_int_equal(cfg->training.batch_size, 128);
    cnn_config_free(cfg);
}

static void test_seed_limits(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;
    assert_int_equal(load(cfg, BASE "seed: 9223372036854775807\n", &err),
                     CNN_OK);
    assert_true(cfg->seed == (uint64_t)INT64_MAX);
    cnn_config_free(cfg);

    expect_error(BASE "seed: 9223372036854775808\n", "test.yaml:6:7",
                 "seed: must be between", NULL);

    /* 2^63 written as a float rounds to exactly 2^63, one past the
     * maximum: it must be refused, not converted (undefined behaviour). */
    enum cnn_status st = load(cfg, BASE "seed: 9.223372036854775807e18\n",
                              &err);
    if (st == CNN_OK && cfg->seed > (uint64_t)INT64_MAX)
        fail_msg("seed 2^63 accepted as %llu, past the maximum %lld",
                 (unsigned long long)cfg->seed, (long long)INT64_MAX);
    assert_int_equal(st, CNN_ERR_CONFIG);
    assert_string_equal(err.where, "test.yaml:6:7");
    assert_contains(err.message, "seed: must be between");
    cnn_config_free(cfg);
}

static void test_bad_bool(void **state)
{
    (void)state;
    expect_error(BASE "optimizer:\n  momentum: 0.9\n  nesterov: maybe\n",
                 "test.yaml:8:13",
                 "optimizer.nesterov: expected true or false, got 'maybe'",
                 NULL);
    expect_error(BASE "optimizer:\n  momentum: 0.9\n  nesterov: \"true\"\n",
                 "test.yaml:8:13", "optimizer.nesterov: expected true or "
                 "false", NULL);
    expect_error(BASE "optimizer:\n  momentum: 0.9\n  nesterov: [1]\n",
                 "test.yaml:8:13", "expected true or false, got a list",
                 NULL);
    expect_error(BASE "optimizer:\n  momentum: 0.9\n  nesterov: 1\n",
                 "test.yaml:8:13", "expected true or false, got '1'", NULL);
}

static void test_bool_spellings(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "True", "yes", "on", "TRUE"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        char text[512];
        snprintf(text, sizeof text, BASE "optimizer:\n  momentum: 0.9\n"
                 "  nesterov: %s\n", yes[i]);
        struct cnn_config *cfg = &pool[0];
        struct cnn_error err;
        assert_int_equal(load(cfg, text, &err), CNN_OK);
        bool b = false;
        assert_int_equal(cnn_read_bool(cfg->optim.node, "nesterov", false,
                                       &b, &err), CNN_OK);
        assert_true(b);
        cnn_config_free(cfg);
    }
}

static void test_unknown_choice(void **state)
{
    (void)state;
    expect_error(BASE "schedule:\n  name: cosin\n", "test.yaml:7:9",
                 "schedule.name: unknown value 'cosin' (one of: constant, "
                 "step, exponential, cosine, onecycle, plateau)",
                 "did you mean 'cosine'?");
    /* Nothing close: no hint. */
    expect_error(BASE "schedule:\n  name: triangular\n", "test.yaml:7:9",
                 "unknown value 'triangular'", NULL);
    expect_error(DATA "  format: hdf5\n" MODEL, "test.yaml:3:11",
                 "data.format: unknown value 'hdf5' (one of: idx, csv, "
                 "cifar10, folder)", NULL);
    expect_error(DATA "  format: idxx\n" MODEL, "test.yaml:3:11",
                 "data.format: unknown value 'idxx'", "'idx'");
    expect_error(BASE "training:\n  loss: cross_entropi\n", "test.yaml:7:9",
                 "training.loss: unknown value", "cross_entropy");
}

/* --- sections ----------------------------------------------------------- */

static void test_missing_sections(void **state)
{
    (void)state;
    expect_error(MODEL, "test.yaml:1:1", "missing section 'data'", NULL);
    expect_error(DATA, "test.yaml:1:1", "missing section 'model'", NULL);
    expect_error("seed: 1\ndata: {format: idx}\n" MODEL, "test.yaml:2:7",
                 "data: missing 'train: {images: ..., labels: ...}'", NULL);
    expect_error("data:\n  train: {images: a}\n" MODEL, "test.yaml:2:10",
                 "data.train: needs both 'images' and 'labels'", NULL);
    expect_error("data:\n  train: {images: a, labels: \"\"}\n" MODEL,
                 "test.yaml:2:30", "data.train.labels: expected a non-empty "
                 "string", NULL);
}

static void test_model_layers_missing(void **state)
{
    (void)state;
    expect_error(DATA "model:\n  input: [1, 28, 28]\n", "test.yaml:4:3",
                 "model: missing 'layers' (a list)", NULL);
    expect_error(DATA "model:\n  layers: []\n", "test.yaml:4:11",
                 "model.layers: expected a non-empty list", NULL);
    expect_error(DATA "model:\n  layers: {dense: 3}\n", "test.yaml:4:11",
                 "model.layers: expected a non-empty list", NULL);
    expect_error(DATA "model:\n  layers:\n", "test.yaml:4:10",
                 "model.layers: expected a non-empty list", NULL);
    expect_error(DATA "model: 3\n", "test.yaml:3:8",
                 "model: expected a mapping", NULL);
}

static void test_model_input(void **state)
{
    (void)state;
    expect_error(DATA "model:\n  input: [28, 28]\n  layers: [relu]\n",
                 "test.yaml:4:10", "model.input: expected [channels, height, "
                 "width]", NULL);
    expect_error(DATA "model:\n  input: [1, 28, 28, 1]\n  layers: [relu]\n",
                 "test.yaml:4:10", "model.input: expected [channels", NULL);
    expect_error(DATA "model:\n  input: 784\n  layers: [relu]\n",
                 "test.yaml:4:10", "model.input: expected [channels", NULL);
    expect_error(DATA "model:\n  input: [1, 0, 28]\n  layers: [relu]\n",
                 "test.yaml:4:14", "model.input[1]: must be between 1 and",
                 NULL);
    expect_error(DATA "model:\n  input: [1, 28, x]\n  layers: [relu]\n",
                 "test.yaml:4:18", "model.input[2]: expected an integer",
                 NULL);
}

static void test_normalize_errors(void **state)
{
    (void)state;
    expect_error(DATA "  normalize: {mean: [0.1, 0.2], std: [0.3]}\n" MODEL,
                 "test.yaml:3:14",
                 "data.normalize: 'mean' has 2 values but 'std' has 1", NULL);
    expect_error(DATA "  normalize: {mean: [0.1], std: [0]}\n" MODEL,
                 "test.yaml:3:34", "data.normalize.std[0]: must be between",
                 NULL);
    expect_error(DATA "  normalize: {mean: [0.1, x], std: [1, 1]}\n" MODEL,
                 "test.yaml:3:27", "data.normalize.mean[1]: expected a "
                 "number", NULL);
    expect_error(DATA "  normalize: automatic\n" MODEL, "test.yaml:3:14",
                 "data.normalize: expected a mapping", NULL);
    expect_error(DATA "  normalize: {mean: {a: 1}, std: 1}\n" MODEL,
                 "test.yaml:3:21", "data.normalize.mean: expected a number "
                 "or a list of up to 16", NULL);
    expect_error(DATA "  normalize: {mean: [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"
                 " std: 1}\n" MODEL, "test.yaml:3:21",
                 "data.normalize.mean: expected a number or a list of up to "
                 "16", NULL);
}

static void test_nesterov_without_momentum(void **state)
{
    (void)state;
    expect_error(BASE "optimizer:\n  nesterov: true\n", "test.yaml:7:13",
                 "optimizer.nesterov: nesterov needs momentum > 0 and "
                 "dampening 0", NULL);
    expect_error(BASE "optimizer:\n  momentum: 0.9\n  dampening: 0.1\n"
                 "  nesterov: true\n", "test.yaml:9:13",
                 "nesterov needs momentum > 0", NULL);
}

/* --- files -------------------------------------------------------------- */

static void test_files(void **state)
{
    (void)state;
    char *dir = scratch_dir = keep(test_tmpdir());
    assert_non_null(dir);
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err = {0};

    /* Missing: the path names it. */
    char *missing = keep(test_path(dir, "nope.yaml"));
    assert_int_equal(cnn_config_load(cfg, missing, &err), CNN_ERR_CONFIG);
    assert_string_equal(err.where, missing);
    assert_contains(err.message, "cannot open");
    cnn_config_free(cfg);

    /* NUL bytes. */
    char *nul = keep(test_path(dir, "nul.yaml"));
    static const char with_nul[] = "seed: 1\n\0more: 2\n";
    assert_int_equal(test_write(nul, with_nul, sizeof with_nul - 1), 0);
    memset(&err, 0, sizeof err);
    assert_int_equal(cnn_config_load(cfg, nul, &err), CNN_ERR_CONFIG);
    assert_string_equal(err.where, nul);
    assert_contains(err.message, "NUL");
    cnn_config_free(cfg);

    /* Not UTF-8: libyaml's reader refuses it with a place. */
    char *latin1 = keep(test_path(dir, "latin1.yaml"));
    static const char bad_utf8[] = "seed: 1\nname: caf\xe9\n";
    assert_int_equal(test_write(latin1, bad_utf8, sizeof bad_utf8 - 1), 0);
    memset(&err, 0, sizeof err);
    assert_int_equal(cnn_config_load(cfg, latin1, &err), CNN_ERR_CONFIG);
    char want[600];
    snprintf(want, sizeof want, "%s:", latin1);
    assert_memory_equal(err.where, want, strlen(want));
    assert_contains(err.message, "invalid YAML");
    assert_contains(err.message, "UTF-8");
    cnn_config_free(cfg);

    /* More than 4 MiB. */
    char *big = keep(test_path(dir, "big.yaml"));
    size_t big_len = (4u << 20) + 16;
    char *text = keep(malloc(big_len));
    assert_non_null(text);
    memset(text, '#', big_len);
    text[big_len - 1] = '\n';
    assert_int_equal(test_write(big, text, big_len), 0);
    memset(&err, 0, sizeof err);
    assert_int_equal(cnn_config_load(cfg, big, &err), CNN_ERR_CONFIG);
    assert_string_equal(err.where, big);
    assert_contains(err.message, "larger than 4 MiB");
    cnn_config_free(cfg);

    /* A good file: the origin is its path, relative data paths resolve
     * against its directory, errors name it. */
    char *good = keep(test_path(dir, "good.yaml"));
    static const char good_text[] =
        "data:\n"
        "  dir: sub\n"
        "  train: {images: a.gz, labels: b.gz}\n"
        "model:\n"
        "  layers: [relu]\n"
        "training:\n"
        "  epochs: x\n";
    assert_int_equal(test_write(good, good_text, sizeof good_text - 1), 0);
    memset(&err, 0, sizeof err);
    assert_int_equal(cnn_config_load(cfg, good, &err), CNN_OK);
    assert_string_equal(cfg->path, good);
    char *real = keep(realpath(dir, NULL));
    assert_non_null(real);
    assert_string_equal(cfg->dir, real);
    assert_int_equal(cnn_config_resolve(cfg, &err), CNN_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:7:11", good);
    assert_string_equal(err.where, want);
    assert_contains(err.message, "training.epochs");
    cnn_config_free(cfg);

    assert_int_equal(cnn_config_load(cfg, good, &err), CNN_OK);
    assert_int_equal(cnn_config_set(cfg, "training.epochs=2", &err), CNN_OK);
    assert_int_equal(cnn_config_resolve(cfg, &err), CNN_OK);
    snprintf(want, sizeof want, "%s/sub/a.gz", real);
    assert_string_equal(cfg->data.train.images, want);
    cnn_config_free(cfg);
}

/* --- --set -------------------------------------------------------------- */

static void test_set_existing_and_new(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;
    static const char text[] = BASE "training:\n  epochs: 3\n";

    assert_int_equal(load_set(cfg, text, "training.epochs=7", &err), CNN_OK);
    assert_int_equal(cfg->training.epochs, 7);
    /* The replaced node keeps its key and takes its new origin. */
    struct cnn_node *e = cnn_node_get(cnn_node_get(cfg->root, "training"),
                                      "epochs");
    assert_string_equal(e->key, "epochs");
    assert_string_equal(e->path, "training.epochs");
    assert_string_equal(e->origin, "--set training.epochs=7");
    cnn_config_free(cfg);

    assert_int_equal(load_set(cfg, text, "training.max_steps=5", &err),
                     CNN_OK);
    assert_int_equal(cfg->training.max_steps, 5);
    assert_int_equal(cfg->training.epochs, 3);
    cnn_config_free(cfg);

    /* A whole new section. */
    assert_int_equal(load_set(cfg, text, "schedule.name=cosine", &err),
                     CNN_OK);
    assert_string_equal(cfg->schedule.name, "cosine");
    cnn_config_free(cfg);

    /* A mapping value replaces a section. */
    assert_int_equal(load_set(cfg, text, "training={epochs: 2, batch_size: "
                              "8}", &err), CNN_OK);
    assert_int_equal(cfg->training.epochs, 2);
    assert_int_equal(cfg->training.batch_size, 8);
    cnn_config_free(cfg);

    /* Several in a row, the last one wins. */
    assert_int_equal(cnn_config_load_string(cfg, text, "test.yaml", "/base",
                                            &err), CNN_OK);
    assert_int_equal(cnn_config_set(cfg, "seed=5", &err), CNN_OK);
    assert_int_equal(cnn_config_set(cfg, "seed=6", &err), CNN_OK);
    assert_int_equal(cnn_config_set(cfg, "name=other", &err), CNN_OK);
    assert_int_equal(cnn_config_resolve(cfg, &err), CNN_OK);
    assert_int_equal(cfg->seed, 6);
    assert_string_equal(cfg->name, "other");
    cnn_config_free(cfg);
}

static void test_set_list_item(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;
    assert_int_equal(load_set(cfg, BASE, "model.layers[0].dense.units=7",
                              &err), CNN_OK);
    struct cnn_node *units = cfg->model_layers->items[0]->items[0]->items[0];
    assert_string_equal(units->key, "units");
    assert_string_equal(units->value, "7");
    assert_string_equal(units->path, "model.layers[0].dense.units");
    cnn_config_free(cfg);

    /* A whole item. */
    assert_int_equal(load_set(cfg, BASE, "model.layers[0]=relu", &err),
                     CNN_OK);
    assert_int_equal(cfg->model_layers->items[0]->kind, CNN_NODE_SCALAR);
    assert_string_equal(cfg->model_layers->items[0]->value, "relu");
    assert_null(cfg->model_layers->items[0]->key);
    cnn_config_free(cfg);

    /* A new key inside an item. */
    assert_int_equal(load_set(cfg, BASE, "model.layers[0].dense.bias=false",
                              &err), CNN_OK);
    assert_int_equal(cfg->model_layers->items[0]->items[0]->n_items, 2);
    cnn_config_free(cfg);
}

/* Expects cnn_config_set (after a good load) to fail with status st at
 * where "--set <assignment>" and a message holding msg. */
static void expect_set_error(const char *assignment, enum cnn_status st,
                             const char *msg)
{
    struct cnn_config *cfg = &pool[3];
    struct cnn_error err = {0};
    char where[600];
    assert_int_equal(cnn_config_load_string(cfg, BASE, "test.yaml", "/base",
                                            &err), CNN_OK);
    assert_int_equal(cnn_config_set(cfg, assignment, &err), st);
    snprintf(where, sizeof where, "--set %s", assignment);
    assert_string_equal(err.where, where);
    assert_contains(err.message, msg);
    cnn_config_free(cfg);
}

static void test_set_errors(void **state)
{
    (void)state;
    expect_set_error("training.epochs", CNN_ERR_USAGE,
                     "expected KEY.PATH=VALUE");
    expect_set_error("=5", CNN_ERR_USAGE, "expected KEY.PATH=VALUE");
    expect_set_error("model.layers[5].dense.units=7", CNN_ERR_USAGE,
                     "'model.layers[5].dense.units': no item [5] there");
    expect_set_error("model[0]=7", CNN_ERR_USAGE, "no item [0] there");
    expect_set_error("model.layers[x]=7", CNN_ERR_USAGE,
                     "bad key path 'model.layers[x]'");
    expect_set_error("model.layers[-1]=7", CNN_ERR_USAGE, "bad key path");
    expect_set_error("training..epochs=7", CNN_ERR_USAGE, "bad key path");
    expect_set_error("training.epochs=[1,", CNN_ERR_USAGE,
                     "value is not valid YAML");
    expect_set_error("training.epochs={a", CNN_ERR_USAGE,
                     "value is not valid YAML");
    expect_set_error("model.layers.x=1", CNN_ERR_USAGE,
                     "'x' is not inside a mapping");
    expect_set_error("data.train.images.x=1", CNN_ERR_USAGE,
                     "'x' is not inside a mapping");
}

/* A value from --set that the resolver refuses is named by the option,
 * not by a place in a file. */
static void expect_set_value_error(const char *assignment, const char *msg)
{
    struct cnn_config *cfg = &pool[3];
    struct cnn_error err;
    char where[600];
    assert_int_equal(load_set(cfg, BASE, assignment, &err), CNN_ERR_CONFIG);
    snprintf(where, sizeof where, "--set %s", assignment);
    assert_string_equal(err.where, where);
    assert_contains(err.message, msg);
    cnn_config_free(cfg);
}

static void test_set_value_errors(void **state)
{
    (void)state;
    expect_set_value_error("training.epochs=abc",
                           "training.epochs: expected an integer");
    expect_set_value_error("training.batch_size=0",
                           "training.batch_size: must be between 1");
    expect_set_value_error("seed=", "seed: expected an integer, got null");
    expect_set_value_error("training.optimiser=1",
                           "training.optimiser: unknown key");
    expect_set_value_error("schedule.name=cosin", "schedule.name: unknown "
                           "value 'cosin'");
}

/* --- paths -------------------------------------------------------------- */

/* got names rel, relative to the current directory: as written, with a
 * leading "./", or made absolute against the current directory. */
static void assert_cwd_path(const char *got, const char *rel)
{
    char cwd[2048], abs[4200];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(abs, sizeof abs, "%s/%s", cwd, rel);
    const char *bare = strncmp(got, "./", 2) == 0 ? got + 2 : got;
    if (strcmp(bare, rel) != 0 && strcmp(got, abs) != 0)
        fail_msg("path '%s' is not '%s' in the current directory %s", got,
                 rel, cwd);
}

static void test_paths_from_file(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;

    assert_int_equal(load(cfg, "data:\n  dir: d/e\n  train: {images: a, "
                          "labels: b}\n" MODEL, &err), CNN_OK);
    assert_string_equal(cfg->data.train.images, "/base/d/e/a");
    assert_string_equal(cfg->data.train.labels, "/base/d/e/b");
    cnn_config_free(cfg);

    assert_int_equal(load(cfg, "data:\n  dir: /data/x\n  train: {images: a, "
                          "labels: /elsewhere/b}\n" MODEL, &err), CNN_OK);
    assert_string_equal(cfg->data.train.images, "/data/x/a");
    assert_string_equal(cfg->data.train.labels, "/elsewhere/b");
    cnn_config_free(cfg);

    assert_int_equal(load(cfg, "data:\n  train: {images: ../a, labels: "
                          "/b}\n" MODEL, &err), CNN_OK);
    assert_string_equal(cfg->data.train.images, "/base/../a");
    assert_string_equal(cfg->data.train.labels, "/b");
    cnn_config_free(cfg);

    /* A config in the current directory names files there. */
    assert_int_equal(cnn_config_load_string(cfg, BASE, "test.yaml", ".",
                                            &err), CNN_OK);
    assert_int_equal(cnn_config_resolve(cfg, &err), CNN_OK);
    assert_cwd_path(cfg->data.train.images, "tr.gz");
    cnn_config_free(cfg);
}

static void test_paths_from_set(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    struct cnn_error err;

    /* A directory typed on the command line is relative to the current
     * directory, like any argument. */
    assert_int_equal(load_set(cfg, BASE, "data.dir=mydata", &err), CNN_OK);
    assert_cwd_path(cfg->data.train.images, "mydata/tr.gz");
    assert_cwd_path(cfg->data.train.labels, "mydata/trl.gz");
    cnn_config_free(cfg);

    assert_int_equal(load_set(cfg, BASE, "data.train.images=x.gz", &err),
                     CNN_OK);
    assert_cwd_path(cfg->data.train.images, "x.gz");
    assert_string_equal(cfg->data.train.labels, "/base/trl.gz");
    cnn_config_free(cfg);

    assert_int_equal(load_set(cfg, BASE, "data.dir=/abs", &err), CNN_OK);
    assert_string_equal(cfg->data.train.images, "/abs/tr.gz");
    cnn_config_free(cfg);

    /* A whole train split from --set, a new key and a replaced one. */
    assert_int_equal(load_set(cfg, BASE, "data.test={images: t, labels: u}",
                              &err), CNN_OK);
    assert_cwd_path(cfg->data.test.images, "t");
    assert_cwd_path(cfg->data.test.labels, "u");
    cnn_config_free(cfg);
}

/* --- emit --------------------------------------------------------------- */

static void test_emit_round_trip(void **state)
{
    (void)state;
    struct cnn_config *a = &pool[0], *b = &pool[1];
    struct cnn_error err;
    assert_int_equal(load(a, FULL, &err), CNN_OK);
    char *text = keep(cnn_config_emit_string(a));
    assert_non_null(text);

    assert_int_equal(load(b, text, &err), CNN_OK);
    check_full(b, "/base");

    /* Layers come back the same. */
    assert_int_equal(b->model_layers->n_items, 4);
    struct cnn_node *conv = b->model_layers->items[0]->items[0];
    assert_string_equal(conv->key, "conv2d");
    assert_int_equal(conv->n_items, 3);
    assert_string_equal(conv->items[2]->key, "pad");
    assert_string_equal(conv->items[2]->value, "same");
    assert_string_equal(b->model_layers->items[1]->value, "relu");

    /* Emitting is a fixpoint. */
    char *again = keep(cnn_config_emit_string(b));
    assert_non_null(again);
    assert_string_equal(text, again);

    cnn_config_free(a);
    cnn_config_free(b);
}

static void test_emit_strings_and_sets(void **state)
{
    (void)state;
    static const char text[] =
        "name: \"it's: a \\\"run\\\" #1\\nwith\\ttab \\\\ and caf\xc3\xa9\"\n"
        "data:\n"
        "  train: {images: 'sp ace.gz', labels: \"-\"}\n"
        "model:\n"
        "  layers: [relu, {dense: {units: 10, name: ''}}]\n"
        "optimizer: {}\n"
        "schedule: ~\n";
    struct cnn_config *a = &pool[0], *b = &pool[1];
    struct cnn_error err;
    assert_int_equal(cnn_config_load_string(a, text, "test.yaml", "/base",
                                            &err), CNN_OK);
    assert_int_equal(cnn_config_set(a, "training.epochs=3", &err), CNN_OK);
    assert_int_equal(cnn_config_set(a, "seed=\"5\"", &err), CNN_OK);
    char *out = keep(cnn_config_emit_string(a));
    assert_non_null(out);

    assert_int_equal(cnn_config_load_string(b, out, "emitted.yaml", "/base",
                                            &err), CNN_OK);
    /* The quoted seed stays a string, and so stays an error. */
    assert_int_equal(cnn_config_resolve(b, &err), CNN_ERR_CONFIG);
    assert_contains(err.message, "seed: expected an integer, got a quoted");
    cnn_config_free(b);

    assert_int_equal(cnn_config_load_string(b, out, "emitted.yaml", "/base",
                                            &err), CNN_OK);
    assert_int_equal(cnn_config_set(b, "seed=5", &err), CNN_OK);
    assert_int_equal(cnn_config_resolve(b, &err), CNN_OK);
    assert_string_equal(b->name, "it's: a \"run\" #1\nwith\ttab \\ and "
                        "caf\xc3\xa9");
    assert_string_equal(b->data.train.images, "/base/sp ace.gz");
    assert_string_equal(b->data.train.labels, "/base/-");
    assert_int_equal(b->training.epochs, 3);
    assert_int_equal(b->seed, 5);
    struct cnn_node *dense = b->model_layers->items[1]->items[0];
    assert_string_equal(dense->items[1]->value, "");
    assert_true(dense->items[1]->quoted);
    assert_int_equal(cnn_node_get(b->root, "optimizer")->kind, CNN_NODE_MAP);
    assert_true(cnn_node_is_null(cnn_node_get(b->root, "schedule")));

    cnn_config_free(a);
    cnn_config_free(b);
}

/* --- small helpers ------------------------------------------------------ */

static void test_closest_name(void **state)
{
    (void)state;
    static const char *const names[] = {"epochs", "batch_size", "max_steps",
                                        NULL};
    assert_string_equal(cnn_closest_name("epoch", names, 3), "epochs");
    assert_string_equal(cnn_closest_name("batchsize", names, 3),
                        "batch_size");
    assert_string_equal(cnn_closest_name("max_stpes", names, 3),
                        "max_steps");
    assert_null(cnn_closest_name("lr", names, 3));
    assert_null(cnn_closest_name("x", names, 0));
}

static void test_free_twice_and_empty(void **state)
{
    (void)state;
    struct cnn_config *cfg = &pool[0];
    memset(cfg, 0, sizeof *cfg);
    cnn_config_free(cfg);
    cnn_config_free(NULL);

    struct cnn_error err;
    assert_int_equal(load(cfg, BASE, &err), CNN_OK);
    cnn_config_free(cfg);
    cnn_config_free(cfg);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_minimal_defaults),
        T(test_full_config),
        T(test_normalize_auto_and_scalar),
        T(test_empty_text_is_empty_map),
        T(test_malformed_yaml),
        T(test_top_level_not_mapping),
        T(test_duplicate_keys),
        T(test_non_scalar_key),
        T(test_multi_document),
        T(test_alias_bomb),
        T(test_nesting_bomb),
        T(test_legal_aliases),
        T(test_unknown_top_level_key),
        T(test_unknown_training_key),
        T(test_unknown_keys_in_sections),
        T(test_wrong_value_type),
        T(test_grad_stats_keys),
        T(test_first_line_first_column),
        T(test_out_of_range),
        T(test_whole_numbers_in_float_notation),
        T(test_seed_limits),
        T(test_bad_bool),
        T(test_bool_spellings),
        T(test_unknown_choice),
        T(test_missing_sections),
        T(test_model_layers_missing),
        T(test_model_input),
        T(test_normalize_errors),
        T(test_nesterov_without_momentum),
        T(test_files),
        T(test_set_existing_and_new),
        T(test_set_list_item),
        T(test_set_errors),
        T(test_set_value_errors),
        T(test_paths_from_file),
        T(test_paths_from_set),
        T(test_emit_round_trip),
        T(test_emit_strings_and_sets),
        T(test_closest_name),
        T(test_free_twice_and_empty),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
