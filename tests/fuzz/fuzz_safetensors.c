/*
 * Fuzz target for the safetensors reader and checkpoint loading. The
 * input is a file as it lies on disk. It is opened with cnn_st_open, its
 * tensors are looked up and every byte they claim is read (so a range the
 * reader let through that overruns the buffer shows), weights are loaded
 * into a small fixed net, strictly and not, and then the whole file goes
 * through cnn_checkpoint_load with that net and an SGD-with-momentum
 * optimizer, as --resume would.
 *
 * The checksum covers the whole checkpoint, so nearly every change the
 * fuzzer makes would stop at it. A file whose "checksum" is wrong is
 * therefore loaded a second time with the right one put in, which takes
 * the change on into the state reader and the loading of tensors.
 *
 * The net matches the seed checkpoints in corpus/safetensors/ (made by
 * make_corpus.sh): maxpool 7, flatten, dense 4, relu, dense 10 over
 * 1x28x28 inputs; 118 parameters.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/checkpoint.h"
#include "cnn/config.h"
#include "cnn/net.h"
#include "cnn/optim.h"
#include "cnn/safetensors.h"
#include "fuzz_util.h"

static const char MODEL[] =
    "data: {train: {images: x.idx, labels: y.idx}}\n"
    "model:\n"
    "  input: [1, 28, 28]\n"
    "  layers:\n"
    "    - maxpool: {size: 7}\n"
    "    - flatten\n"
    "    - dense: {units: 4}\n"
    "    - relu\n"
    "    - dense: {units: 10}\n"
    "optimizer: {name: sgd, lr: 0.05, momentum: 0.9}\n";

static const char *const TENSORS[] = {
    "dense_1.weight", "dense_1.bias", "dense_2.weight", "dense_2.bias",
    "optim.momentum_buffer", "state.dropout_rng", NULL,
};

static const char *const META[] = {
    "checksum", "config", "step", "optimizer", "format", "__metadata__", NULL,
};

/* Built at the first call and kept: the layers point into cfg. */
static struct cnn_config cfg;
static struct cnn_net net;
static struct cnn_optim optim;
static struct cnn_schedule schedule;
static const char *path;

static void setup(void)
{
    struct cnn_error err = {0};
    struct cnn_shape in = {1, 28, 28};

    path = fuzz_scratch("st");
    if (!path ||
        cnn_config_load_string(&cfg, MODEL, "model.yaml", "/tmp", &err) ||
        cnn_config_resolve(&cfg, &err) ||
        cnn_net_build(&net, cfg.model_layers, in, 2, &err)) {
        fprintf(stderr, "fuzz_safetensors setup: %s %s\n", err.where,
                err.message);
        abort();
    }
    cnn_net_init_params(&net, 1);

    int n_groups;
    struct cnn_param_group *groups = cnn_net_param_groups(&net, &n_groups);
    if (!groups || cnn_optim_create(&optim, cfg.optim.node, groups, n_groups,
                                    net.n_params, &err)) {
        fprintf(stderr, "fuzz_safetensors setup: %s\n", err.message);
        abort();
    }
    free(groups);
    cnn_schedule_init(&schedule, &cfg.schedule, cfg.optim.lr, 100, 10);
}

static size_t dtype_bytes(const char *dtype)
{
    static const char *const names[] = {
        "BOOL", "U8", "I8", "F16", "BF16", "I16", "U16", "F32", "I32",
        "U32", "F64", "I64", "U64", NULL,
    };
    static const size_t sizes[] = {1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], dtype) == 0)
            return sizes[i];
    return 0;
}

/* Every tensor cnn_st_open accepts has exactly the bytes its dtype and
 * shape make (finding safetensors-3, tests/fuzz/README.md, was a shape
 * whose count overflowed over no bytes). */
static void check_shape(const struct cnn_tensor *t)
{
    uint64_t n = dtype_bytes(t->dtype);
    bool over = n == 0;
    for (int d = 0; d < t->ndim; d++)
        over |= __builtin_mul_overflow(n, t->dims[d], &n);
    if (over || n != t->bytes) {
        fprintf(stderr, "tensor '%s': shape and dtype make %s bytes, its "
                "range has %zu\n", t->name, over ? "too many" : "other",
                t->bytes);
        abort();
    }
}

/* Reads every byte each tensor claims, so ASan sees the whole range. */
static unsigned touch_tensors(const struct cnn_st_file *f)
{
    unsigned sum = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        check_shape(&f->tensors[i]);
        const unsigned char *p = f->tensors[i].data;
        for (size_t k = 0; k < f->tensors[i].bytes; k++)
            sum += p[k];
        sum += (unsigned)strlen(f->tensors[i].name);
        sum += (unsigned)strlen(f->tensors[i].dtype);
    }
    for (int i = 0; i < f->n_meta; i++)
        sum += (unsigned)(strlen(f->meta_keys[i]) +
                          strlen(f->meta_values[i]));
    return sum;
}

/* Where the value of the first "checksum" metadata entry starts in the
 * file (8 hex digits, as the writer puts them), or 0. */
static size_t checksum_at(const uint8_t *data, size_t size)
{
    static const char key[] = "\"checksum\":\"";
    size_t k = sizeof key - 1;
    for (size_t i = 8; i + k + 9 <= size; i++)
        if (memcmp(data + i, key, k) == 0 && data[i + k + 8] == '"')
            return i + k;
    return 0;
}

/* The file with its checksum replaced by the right one (malloc'd), so
 * that a change to a checkpoint's metadata or tensors gets past the
 * checksum into the code behind it; NULL when there is nothing to fix. */
static uint8_t *fix_checksum(const struct cnn_st_file *f, const uint8_t *data,
                             size_t size)
{
    size_t at = checksum_at(data, size);
    if (!at)
        return NULL;
    char right[16];
    snprintf(right, sizeof right, "%08" PRIx32,
             cnn_checkpoint_checksum(f->tensors, f->n_tensors,
                                     (const char *const *)f->meta_keys,
                                     (const char *const *)f->meta_values,
                                     f->n_meta));
    if (memcmp(data + at, right, 8) == 0)
        return NULL;
    uint8_t *copy = malloc(size);
    if (copy) {
        memcpy(copy, data, size);
        memcpy(copy + at, right, 8);
    }
    return copy;
}

/* Opens the file and uses what it holds; returns the input with its
 * checksum fixed, or NULL. */
static uint8_t *read_file(const uint8_t *data, size_t size)
{
    struct cnn_st_file f;
    struct cnn_error err = {0};
    volatile unsigned sink = 0;

    if (cnn_st_open(&f, path, &err) != CNN_OK)
        return NULL;
    sink += touch_tensors(&f);
    for (int i = 0; TENSORS[i]; i++)
        sink += cnn_st_find(&f, TENSORS[i]) != NULL;
    for (int i = 0; META[i]; i++) {
        const char *v = cnn_st_meta(&f, META[i]);
        sink += v ? (unsigned)strlen(v) : 0;
    }
    (void)cnn_st_load_net(&f, &net, false, &err);
    (void)cnn_st_load_net(&f, &net, true, &err);
    uint8_t *fixed = fix_checksum(&f, data, size);
    cnn_st_close(&f);
    (void)sink;
    return fixed;
}

static void load_checkpoint(void)
{
    struct cnn_schedule sched = schedule;
    struct cnn_run_state rs;
    struct cnn_error err = {0};
    char *text = NULL;

    cnn_run_state_init(&rs);
    (void)cnn_checkpoint_load(path, &net, &optim, &sched, &rs, &text, &err);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path)
        setup();
    if (fuzz_write(path, data, size) != 0)
        abort();
    uint8_t *fixed = read_file(data, size);
    load_checkpoint();
    if (fixed) {
        if (fuzz_write(path, fixed, size) != 0)
            abort();
        load_checkpoint();
    }
    free(fixed);
    return 0;
}
