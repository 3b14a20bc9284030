/*
 * Checkpoints and the readers behind resume: a save/load round trip for
 * every optimizer kind (weights, state buffers, step counts, schedule,
 * run state, dropout generator), the checksum, and a sweep that
 * truncates and damages a valid checkpoint, IDX datasets (plain and
 * gzip'd) and a model file at many offsets. Every damaged file must be
 * a clean error naming the file, or load exactly what an undamaged file
 * would; a failed checkpoint load must leave net, optimizer, schedule and
 * run state as they were. Run under valgrind or ASan, the sweep also
 * shows that no case crashes, reads out of bounds or leaks.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <cmocka.h>

#include "cnn/checkpoint.h"
#include "cnn/data.h"
#include "cnn/safetensors.h"
#include "testutil.h"

static char *dir;

/* --- a small net with an optimizer, schedule and run state -------------- */

struct rig {
    struct cnn_config cfg;
    struct cnn_net net;
    struct cnn_optim optim;
    struct cnn_schedule sched;
    struct cnn_run_state rs;
};

static const char CONFIG_TEXT[] = "model: {layers: [flatten, {dense: "
                                  "{units: 5}}]}\nnote: \"quoted\"\tand\n";

/* Writes f's tensors with meta to dst under a recomputed checksum, so
 * that what is tested is the check after the checksum. */
static void write_sealed(const struct cnn_st_file *f, struct cnn_meta *meta,
                         const char *dst)
{
    const char **keys = calloc((size_t)f->n_meta, sizeof *keys);
    const char **vals = calloc((size_t)f->n_meta, sizeof *vals);
    char crc[16];
    struct cnn_error err = {0};
    assert_non_null(keys);
    assert_non_null(vals);
    for (int i = 0; i < f->n_meta; i++) {
        keys[i] = meta[i].key;
        vals[i] = meta[i].value;
    }
    snprintf(crc, sizeof crc, "%08x",
             (unsigned)cnn_checkpoint_checksum(f->tensors, f->n_tensors, keys,
                                               vals, f->n_meta));
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(meta[i].key, "checksum") == 0)
            meta[i].value = crc;
    if (cnn_safetensors_write(dst, f->tensors, f->n_tensors, meta, f->n_meta,
                              &err))
        fail_msg("%s: %s", err.where, err.message);
    free(keys);
    free(vals);
}

static void rig_build(struct rig *r, const char *optimizer, uint64_t seed)
{
    char text[1024];
    snprintf(text, sizeof text,
             "data: {train: {images: a, labels: b}}\n"
             "model:\n  layers:\n"
             "    - flatten\n"
             "    - dense: {units: 5}\n"
             "    - relu\n"
             "    - dropout: {rate: 0.5}\n"
             "    - dense: {units: 3, name: head}\n"
             "optimizer: %s\n"
             "schedule: {name: plateau}\n", optimizer);
    struct cnn_error err = {0};
    memset(r, 0, sizeof *r);
    if (cnn_config_load_string(&r->cfg, text, "t.yaml", ".", &err) ||
        cnn_config_resolve(&r->cfg, &err) ||
        cnn_net_build(&r->net, r->cfg.model_layers,
                      (struct cnn_shape){1, 2, 3}, 2, &err))
        fail_msg("%s: %s", err.where, err.message);
    cnn_net_init_params(&r->net, seed);

    int n_groups;
    struct cnn_param_group *groups = cnn_net_param_groups(&r->net, &n_groups);
    assert_non_null(groups);
    if (cnn_optim_create(&r->optim, r->cfg.optim.node, groups, n_groups,
                         r->net.n_params, &err))
        fail_msg("%s: %s", err.where, err.message);
    free(groups);
    cnn_schedule_init(&r->sched, &r->cfg.schedule, r->cfg.optim.lr, 100, 10);
    cnn_run_state_init(&r->rs);
}

static void rig_free(struct rig *r)
{
    cnn_optim_free(&r->optim);
    cnn_net_free(&r->net);
    cnn_config_free(&r->cfg);
}

/* Some steps with random gradients, forwards in training mode (which
 * draw from the dropout generator), and a run state with a distinct
 * value in every field. */
static void rig_advance(struct rig *r, int steps, uint64_t seed)
{
    struct cnn_rng rng;
    cnn_rng_seed(&rng, seed, 9, 0);
    for (int s = 0; s < steps; s++) {
        float *x = cnn_net_input(&r->net);
        for (int i = 0; i < 2 * 6; i++)
            x[i] = cnn_rng_normal(&rng);
        cnn_net_forward(&r->net, 2, true);
        for (size_t i = 0; i < r->net.n_params; i++)
            r->net.grads[i] = cnn_rng_normal(&rng);
        cnn_optim_step(&r->optim, r->net.params, r->net.grads, 0.01f);
    }
    r->sched.plateau_scale = 0.25;
    r->sched.plateau_best = 1.0 / 3.0;
    r->sched.plateau_bad = 3;

    struct cnn_run_state *rs = &r->rs;
    rs->step = 7 + seed;
    rs->epoch = 2;
    rs->epoch_pos = 34;
    rs->examples = 1234;
    rs->train_seconds = 12.345678901234567;
    rs->sum_loss = 0.1;
    rs->sum_norm = 1.0 / 7.0;
    rs->sum_correct = 11;
    rs->sum_examples = 22;
    rs->interval_steps = 3;
    rs->final_train_loss = 0.7;
    rs->test_loss = 0.55;
    rs->test_acc = 0.81;
    rs->best_test_acc = 0.83;
    rs->best_test_epoch = 2;
    rs->best_metric = -0.83;
    rs->stale_epochs = 1;
    rs->skipped_steps = 4;
    rs->rollbacks = 1;
    rs->lr_factor = 0.5;
    rs->last_lr = 0.005;
    rs->stop_best = 0.51;
    rs->metrics_bytes = 4321;
    rs->grad_stats_bytes = 1234;
    rs->done = true;
}

/* --- snapshots: everything a checkpoint load may change ----------------- */

struct snap {
    float *params;
    void *bufs[CNN_OPTIM_MAX_BUFFERS];
    size_t buf_bytes[CNN_OPTIM_MAX_BUFFERS];
    int n_buffers;
    long long steps;
    struct cnn_schedule sched;
    struct cnn_run_state rs;
    struct cnn_rng rng;
};

static void snap_take(struct snap *s, const struct rig *r)
{
    memset(s, 0, sizeof *s);
    s->params = malloc(r->net.n_params * sizeof(float));
    assert_non_null(s->params);
    memcpy(s->params, r->net.params, r->net.n_params * sizeof(float));
    s->n_buffers = r->optim.n_buffers;
    for (int i = 0; i < s->n_buffers; i++) {
        s->buf_bytes[i] = r->optim.buffers[i].bytes;
        s->bufs[i] = malloc(s->buf_bytes[i] + 1);
        assert_non_null(s->bufs[i]);
        memcpy(s->bufs[i], r->optim.buffers[i].data, s->buf_bytes[i]);
    }
    s->steps = r->optim.steps;
    s->sched = r->sched;
    s->rs = r->rs;
    s->rng = r->net.dropout_rng;
}

/* Puts a snapshot back into r (after a load changed it). */
static void snap_put(const struct snap *s, struct rig *r)
{
    memcpy(r->net.params, s->params, r->net.n_params * sizeof(float));
    for (int i = 0; i < s->n_buffers; i++)
        memcpy(r->optim.buffers[i].data, s->bufs[i], s->buf_bytes[i]);
    r->optim.steps = s->steps;
    r->sched = s->sched;
    r->rs = s->rs;
    r->net.dropout_rng = s->rng;
}

static void snap_free(struct snap *s)
{
    free(s->params);
    for (int i = 0; i < s->n_buffers; i++)
        free(s->bufs[i]);
}

/* Doubles compare by their bits, so NaN equals NaN and 0.1 must come back
 * exactly. */
#define SAME(a, b) (memcmp(&(a), &(b), sizeof(a)) == 0)

#define RS_FIELDS(X)                                                       \
    X(step) X(epoch) X(epoch_pos) X(examples) X(train_seconds) X(sum_loss) \
    X(sum_norm) X(sum_correct) X(sum_examples) X(interval_steps)           \
    X(final_train_loss) X(test_loss) X(test_acc) X(best_test_acc)          \
    X(best_test_epoch) X(best_metric) X(stale_epochs) X(skipped_steps)     \
    X(rollbacks) X(lr_factor) X(last_lr) X(stop_best) X(metrics_bytes)     \
    X(grad_stats_bytes) X(done)

/* The first thing in r that differs from s, or NULL when none does. */
static const char *snap_diff(const struct snap *s, const struct rig *r)
{
    if (memcmp(s->params, r->net.params, r->net.n_params * sizeof(float)))
        return "net parameters";
    if (s->n_buffers != r->optim.n_buffers)
        return "number of optimizer buffers";
    for (int i = 0; i < s->n_buffers; i++)
        if (s->buf_bytes[i] != r->optim.buffers[i].bytes ||
            memcmp(s->bufs[i], r->optim.buffers[i].data, s->buf_bytes[i]))
            return r->optim.buffers[i].name;
    if (s->steps != r->optim.steps)
        return "optimizer steps";
    if (!SAME(s->sched.plateau_scale, r->sched.plateau_scale))
        return "plateau_scale";
    if (!SAME(s->sched.plateau_best, r->sched.plateau_best))
        return "plateau_best";
    if (s->sched.plateau_bad != r->sched.plateau_bad)
        return "plateau_bad";
#define CHECK_FIELD(f)                                                     \
    if (!SAME(s->rs.f, r->rs.f))                                           \
        return "run state " #f;
    RS_FIELDS(CHECK_FIELD)
#undef CHECK_FIELD
    if (memcmp(s->rng.s, r->net.dropout_rng.s, sizeof s->rng.s))
        return "dropout generator";
    return NULL;
}

/* --- files -------------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    unsigned char *buf = malloc(*n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, *n, f), *n);
    fclose(f);
    return buf;
}

static uint64_t header_len(const unsigned char *buf)
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h |= (uint64_t)buf[i] << (8 * i);
    return h;
}

/* Saves a checkpoint of rig into dir/name; returns the path (malloc'd). */
static char *save(struct rig *r, const char *name)
{
    char *path = test_path(dir, name);
    struct cnn_error err = {0};
    if (cnn_checkpoint_save(path, &r->net, &r->optim, &r->sched, &r->rs,
                            CONFIG_TEXT, &err))
        fail_msg("%s: %s", err.where, err.message);
    return path;
}

/* --- round trips -------------------------------------------------------- */

static void round_trip(const char *optimizer, int want_buffers)
{
    struct rig a, b;
    struct snap sa;
    struct cnn_error err = {0};
    rig_build(&a, optimizer, 1);
    rig_build(&b, optimizer, 2);
    assert_int_equal(a.optim.n_buffers, want_buffers);
    rig_advance(&a, 5, 1);
    rig_advance(&b, 2, 2);
    snap_take(&sa, &a);
    const char *diff = snap_diff(&sa, &b);
    assert_non_null(diff);      /* b starts out different from a */

    char *path = save(&a, "rt.safetensors");
    char *text = NULL;
    if (cnn_checkpoint_load(path, &b.net, &b.optim, &b.sched, &b.rs, &text,
                            &err))
        fail_msg("%s: %s: %s", optimizer, err.where, err.message);
    if ((diff = snap_diff(&sa, &b)))
        fail_msg("%s: %s differs after the round trip", optimizer, diff);
    assert_string_equal(text, CONFIG_TEXT);
    assert_int_equal(b.optim.steps, 5);

    /* Saving the loaded state gives the same file, byte for byte. */
    char *again = save(&b, "rt2.safetensors");
    size_t n1, n2;
    unsigned char *f1 = slurp(path, &n1), *f2 = slurp(again, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(f1, f2, n1);

    free(f1);
    free(f2);
    free(text);
    free(path);
    free(again);
    snap_free(&sa);
    rig_free(&a);
    rig_free(&b);
}

static void test_round_trip_each_optimizer(void **state)
{
    round_trip("{name: sgd, lr: 0.1}", 0);
    round_trip("{name: sgd, lr: 0.1, momentum: 0.9}", 1);
    round_trip("{name: adam, lr: 0.01}", 2);
    round_trip("{name: adamw, lr: 0.01, weight_decay: 0.1}", 2);
    round_trip("{name: lion, lr: 0.001}", 1);
    round_trip("{name: rmsprop, lr: 0.01, centered: true, momentum: 0.5}", 3);
    round_trip("{name: adagrad, lr: 0.1}", 1);
    round_trip("{name: adam8bit, lr: 0.01}", 4);
}

/* A fresh run state (NaN results, infinite plateau best) comes back as it
 * was: the text "nan" and "inf" in the metadata read back. */
static void test_round_trip_nan_and_inf(void **state)
{
    struct rig a, b;
    struct snap sa;
    struct cnn_error err = {0};
    rig_build(&a, "{name: adam}", 1);
    rig_build(&b, "{name: adam}", 2);
    rig_advance(&b, 1, 2);
    assert_true(isnan(a.rs.best_metric) && isinf(a.sched.plateau_best));
    snap_take(&sa, &a);

    char *path = save(&a, "nan.safetensors");
    if (cnn_checkpoint_load(path, &b.net, &b.optim, &b.sched, &b.rs, NULL,
                            &err))
        fail_msg("%s: %s", err.where, err.message);
    const char *diff = snap_diff(&sa, &b);
    if (diff)
        fail_msg("%s differs after the round trip", diff);

    free(path);
    snap_free(&sa);
    rig_free(&a);
    rig_free(&b);
}

/* A checkpoint of one optimizer kind does not load into another: a
 * config error (older checkpoints would not fit either), not damage. */
static void test_other_optimizer_refused(void **state)
{
    struct rig a, b;
    struct snap sb;
    struct cnn_error err = {0};
    rig_build(&a, "{name: adam}", 1);
    rig_build(&b, "{name: sgd, momentum: 0.9}", 2);
    rig_advance(&a, 2, 1);
    snap_take(&sb, &b);
    char *path = save(&a, "adam.safetensors");
    char *text = (char *)"untouched";
    assert_int_equal(cnn_checkpoint_load(path, &b.net, &b.optim, &b.sched,
                                         &b.rs, &text, &err), CNN_ERR_CONFIG);
    assert_string_equal(err.where, path);
    assert_non_null(strstr(err.message, "adam"));
    assert_null(text);
    assert_null(snap_diff(&sb, &b));
    free(path);
    snap_free(&sb);
    rig_free(&a);
    rig_free(&b);
}

/* A checkpoint of another model is refused as a config error naming the
 * first tensor that differs, and nothing is changed. */
static void test_other_model_refused(void **state)
{
    struct rig a, b;
    struct snap sb;
    struct cnn_error err = {0};
    rig_build(&a, "{name: sgd}", 1);
    rig_build(&b, "{name: sgd}", 2);
    /* Same parameter count, other shape: head.weight 3x5 -> 5x3, with a
     * checksum that matches (a different model, not damage). */
    char *path = save(&a, "other.safetensors");
    struct cnn_st_file f;
    assert_int_equal(cnn_st_open(&f, path, &err), CNN_OK);
    for (int i = 0; i < f.n_tensors; i++)
        if (strcmp(f.tensors[i].name, "head.weight") == 0) {
            assert_int_equal(f.tensors[i].dims[0], 3);
            f.tensors[i].dims[0] = 5;
            f.tensors[i].dims[1] = 3;
        }
    struct cnn_meta *meta = calloc((size_t)f.n_meta, sizeof *meta);
    assert_non_null(meta);
    for (int i = 0; i < f.n_meta; i++)
        meta[i] = (struct cnn_meta){f.meta_keys[i], f.meta_values[i]};
    char *other = test_path(dir, "other2.safetensors");
    write_sealed(&f, meta, other);
    free(meta);
    cnn_st_close(&f);
    free(path);
    path = other;
    unsigned char *buf = NULL;

    snap_take(&sb, &b);
    assert_int_equal(cnn_checkpoint_load(path, &b.net, &b.optim, &b.sched,
                                         &b.rs, NULL, &err), CNN_ERR_CONFIG);
    assert_string_equal(err.where, path);
    assert_non_null(strstr(err.message, "head.weight"));
    assert_null(snap_diff(&sb, &b));
    free(buf);
    free(path);
    snap_free(&sb);
    rig_free(&a);
    rig_free(&b);
}

/* One flipped byte of tensor data: a checksum error naming the file. */
static void test_checksum_mismatch(void **state)
{
    struct rig a, b;
    struct snap sb;
    struct cnn_error err = {0};
    rig_build(&a, "{name: adam}", 1);
    rig_build(&b, "{name: adam}", 2);
    rig_advance(&a, 3, 1);
    rig_advance(&b, 1, 2);
    char *path = save(&a, "sum.safetensors");
    size_t n;
    unsigned char *buf = slurp(path, &n);
    size_t data = 8 + header_len(buf);
    buf[data + (n - data) / 2] ^= 0x01;
    assert_int_equal(test_write(path, buf, n), 0);

    snap_take(&sb, &b);
    char *text = NULL;
    assert_int_equal(cnn_checkpoint_load(path, &b.net, &b.optim, &b.sched,
                                         &b.rs, &text, &err), CNN_ERR_DATA);
    assert_string_equal(err.where, path);
    if (!strstr(err.message, "checksum"))
        fail_msg("no 'checksum' in '%s'", err.message);
    assert_null(text);
    assert_null(snap_diff(&sb, &b));
    free(buf);
    free(path);
    snap_free(&sb);
    rig_free(&a);
    rig_free(&b);
}

/* Rewrites the checkpoint at src into dst with the metadata value of key
 * replaced; the tensors, and so the checksum, stay as they were. */
static void rewrite_meta(const char *src, const char *dst, const char *key,
                         const char *value)
{
    struct cnn_st_file f;
    struct cnn_error err = {0};
    if (cnn_st_open(&f, src, &err))
        fail_msg("%s: %s", err.where, err.message);
    struct cnn_meta *meta = calloc((size_t)f.n_meta, sizeof *meta);
    assert_non_null(meta);
    bool found = false;
    for (int i = 0; i < f.n_meta; i++) {
        bool hit = strcmp(f.meta_keys[i], key) == 0;
        meta[i] = (struct cnn_meta){f.meta_keys[i],
                                    hit ? value : f.meta_values[i]};
        found = found || hit;
    }
    assert_true(found);
    write_sealed(&f, meta, dst);
    free(meta);
    cnn_st_close(&f);
}

/* Numbers that parse but cannot be a run's state (counters past the
 * range of long long, fractional or negative; a learning-rate factor
 * that is not positive) are refused, naming the key, like a missing
 * one. */
static void test_state_out_of_range_refused(void **state)
{
    static const struct {
        const char *key, *value;
    } cases[] = {
        {"step", "1e30"},           {"step", "2.5"},
        {"epoch", "-0.5"},          {"plateau_bad", "1e300"},
        {"optim_steps", "1e19"},    {"metrics_bytes", "-1"},
        {"examples", "-3"},         {"skipped_steps", "-1"},
        {"lr_factor", "-0.5"},      {"lr_factor", "nan"},
        {"grad_stats_bytes", "-1"},
    };
    struct rig a, b;
    struct snap sb;
    rig_build(&a, "{name: adam}", 1);
    rig_build(&b, "{name: adam}", 2);
    rig_advance(&a, 2, 1);
    snap_take(&sb, &b);
    char *good = save(&a, "range-good.safetensors");
    char *bad = test_path(dir, "range-bad.safetensors");

    int wrong = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rewrite_meta(good, bad, cases[i].key, cases[i].value);
        struct cnn_error err = {0};
        enum cnn_status st = cnn_checkpoint_load(bad, &b.net, &b.optim,
                                                 &b.sched, &b.rs, NULL, &err);
        if (st == CNN_OK) {
            print_error("%s: \"%s\" accepted (step %lld, epoch %lld, "
                        "plateau_bad %lld, optimizer steps %lld, "
                        "lr_factor %g)\n", cases[i].key, cases[i].value,
                        b.rs.step, b.rs.epoch, b.sched.plateau_bad,
                        b.optim.steps, b.rs.lr_factor);
            wrong++;
        } else if (st != CNN_ERR_DATA || strcmp(err.where, bad) != 0 ||
                   !strstr(err.message, cases[i].key) ||
                   snap_diff(&sb, &b)) {
            print_error("%s: \"%s\": refused as '%s: %s' (status %d)\n",
                        cases[i].key, cases[i].value, err.where, err.message,
                        st);
            wrong++;
        }
        snap_put(&sb, &b);
    }

    free(good);
    free(bad);
    snap_free(&sb);
    rig_free(&a);
    rig_free(&b);
    assert_int_equal(wrong, 0);
}

/* A checkpoint from before grad_stats.csv (no grad_stats_bytes in its
 * metadata) still loads: the file then starts afresh (0). */
static void test_older_without_grad_stats_bytes(void **state)
{
    struct rig a, b;
    struct cnn_error err = {0};
    rig_build(&a, "{name: adam}", 1);
    rig_build(&b, "{name: adam}", 2);
    rig_advance(&a, 2, 1);
    a.rs.grad_stats_bytes = 99;
    char *path = save(&a, "older.safetensors");
    char *older = test_path(dir, "older2.safetensors");

    struct cnn_st_file f;
    assert_int_equal(cnn_st_open(&f, path, &err), CNN_OK);
    struct cnn_meta *meta = calloc((size_t)f.n_meta, sizeof *meta);
    assert_non_null(meta);
    int n = 0;
    for (int i = 0; i < f.n_meta; i++)
        if (strcmp(f.meta_keys[i], "grad_stats_bytes") != 0)
            meta[n++] = (struct cnn_meta){f.meta_keys[i], f.meta_values[i]};
    assert_int_equal(n, f.n_meta - 1);
    int all = f.n_meta;
    f.n_meta = n;               /* written without the key */
    write_sealed(&f, meta, older);
    f.n_meta = all;
    free(meta);
    cnn_st_close(&f);

    b.rs.grad_stats_bytes = 7;
    assert_int_equal(cnn_checkpoint_load(older, &b.net, &b.optim, &b.sched,
                                         &b.rs, NULL, &err), CNN_OK);
    assert_int_equal(b.rs.grad_stats_bytes, 0);
    assert_int_equal(b.rs.step, a.rs.step);
    assert_int_equal(cnn_checkpoint_load(path, &b.net, &b.optim, &b.sched,
                                         &b.rs, NULL, &err), CNN_OK);
    assert_int_equal(b.rs.grad_stats_bytes, 99);
    free(path);
    free(older);
    rig_free(&a);
    rig_free(&b);
}

/* --- the sweep ---------------------------------------------------------- */

/* What the damaged variants of one file did. */
struct tally {
    int cases, errors, ok_same, ok_differ, dirty, unnamed;
    int not_damage;             /* errors other than CNN_ERR_DATA */
    char first_differ[256], first_dirty[256], first_unnamed[1400];
    char first_not_damage[1400];
    char differ_fields[1024];    /* which values changed, each named once */
};

static void note(char *dst, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note(char *dst, size_t cap, const char *fmt, ...)
{
    if (dst[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

static void add_field(struct tally *t, const char *field)
{
    char key[80];
    snprintf(key, sizeof key, "%s;", field);
    if (!strstr(t->differ_fields, key) &&
        strlen(t->differ_fields) + strlen(key) < sizeof t->differ_fields)
        strcat(t->differ_fields, key);
}

/* An error must carry a message and name the damaged file. */
static void check_error(struct tally *t, const struct cnn_error *err,
                        const char *path, const char *what)
{
    t->errors++;
    if (err->status != CNN_ERR_DATA) {
        t->not_damage++;
        note(t->first_not_damage, sizeof t->first_not_damage, "%s: %s "
             "(%s)", what, err->message, cnn_status_name(err->status));
    }
    bool named = strcmp(err->where, path) == 0 ||
                 strstr(err->message, path) != NULL;
    if (!named || !err->message[0] || err->status == CNN_OK) {
        t->unnamed++;
        note(t->first_unnamed, sizeof t->first_unnamed, "%s: status %d, "
             "where '%s', message '%s'", what, err->status, err->where,
             err->message);
    }
}

/* Variants of a file: cut to each length, or one byte changed. */
enum { N_VALUES = 4 };
static const int flip_values[N_VALUES] = {-1, '"', '{', '0'};  /* -1: ^0xff */

static bool make_flip(unsigned char *dst, const unsigned char *src, size_t n,
                      size_t at, int value)
{
    memcpy(dst, src, n);
    dst[at] = value < 0 ? (unsigned char)(src[at] ^ 0xff)
                        : (unsigned char)value;
    return dst[at] != src[at];
}

static void describe(char *buf, size_t cap, size_t at, int value, bool cut)
{
    if (cut)
        snprintf(buf, cap, "cut to %zu bytes", at);
    else if (value < 0)
        snprintf(buf, cap, "byte %zu xor 0xff", at);
    else
        snprintf(buf, cap, "byte %zu set to '%c'", at, value);
}

/* Offsets a sweep visits: every one below dense, every stride-th after,
 * and the last eight. */
static bool visited(size_t at, size_t n, size_t dense, size_t stride)
{
    return at < dense || (at - dense) % stride == 0 || at + 8 >= n;
}

/* --- checkpoints -------------------------------------------------------- */

struct ckpt_sweep {
    struct rig a, b;            /* a wrote the file; b loads variants */
    struct snap sa, sb;         /* a as saved; b before any load */
    unsigned char *orig, *var;
    size_t n;
    char *path;
};

static void ckpt_sweep_open(struct ckpt_sweep *s)
{
    rig_build(&s->a, "{name: adam}", 1);
    rig_build(&s->b, "{name: adam}", 2);
    rig_advance(&s->a, 3, 1);
    rig_advance(&s->b, 1, 2);
    snap_take(&s->sa, &s->a);
    snap_take(&s->sb, &s->b);
    char *good = save(&s->a, "good.safetensors");
    s->orig = slurp(good, &s->n);
    free(good);
    s->var = malloc(s->n + 1);
    assert_non_null(s->var);
    s->path = test_path(dir, "damaged.safetensors");
}

static void ckpt_sweep_close(struct ckpt_sweep *s)
{
    free(s->orig);
    free(s->var);
    free(s->path);
    snap_free(&s->sa);
    snap_free(&s->sb);
    rig_free(&s->a);
    rig_free(&s->b);
}

/* Loads one variant of len bytes into b and tallies what happened. */
static void ckpt_try(struct ckpt_sweep *s, struct tally *t, size_t len,
                     const char *what)
{
    struct cnn_error err = {0};
    char *text = (char *)"not set";
    assert_int_equal(test_write(s->path, s->var, len), 0);
    t->cases++;
    enum cnn_status st = cnn_checkpoint_load(s->path, &s->b.net, &s->b.optim,
                                             &s->b.sched, &s->b.rs, &text,
                                             &err);
    if (st != CNN_OK) {
        check_error(t, &err, s->path, what);
        const char *diff = snap_diff(&s->sb, &s->b);
        if (diff || text != NULL) {
            t->dirty++;
            note(t->first_dirty, sizeof t->first_dirty, "%s: failed (%s) "
                 "but changed %s", what, err.message,
                 diff ? diff : "*config_text");
            snap_put(&s->sb, &s->b);
        }
        return;
    }

    /* Loaded: only fine when the damage was harmless. */
    const char *diff = snap_diff(&s->sa, &s->b);
    if (!diff && (!text || strcmp(text, CONFIG_TEXT) != 0))
        diff = "config text";
    if (diff) {
        t->ok_differ++;
        add_field(t, diff);
        note(t->first_differ, sizeof t->first_differ, "%s: loaded without "
             "complaint, %s differs", what, diff);
    } else {
        t->ok_same++;
    }
    free(text);
    snap_put(&s->sb, &s->b);
}

static struct tally ckpt_cuts, ckpt_flips;
static bool ckpt_swept;

/* Truncations: every length up to 512, then a stride; byte changes: every
 * offset of the header (where the parser works), then a stride through
 * the data (which the checksum covers). Both tallies are kept for the
 * tests below. */
static void ckpt_sweep(void)
{
    if (ckpt_swept)
        return;
    struct ckpt_sweep s;
    char what[64];
    ckpt_sweep_open(&s);
    size_t data = 8 + header_len(s.orig);
    assert_true(data < s.n);

    for (size_t at = 0; at < s.n; at++) {
        if (!visited(at, s.n, 512, 13))
            continue;
        memcpy(s.var, s.orig, at);
        describe(what, sizeof what, at, 0, true);
        ckpt_try(&s, &ckpt_cuts, at, what);
    }
    for (size_t at = 0; at < s.n; at++) {
        if (!visited(at, s.n, data, 7))
            continue;
        for (int v = 0; v < N_VALUES; v++) {
            if (!make_flip(s.var, s.orig, s.n, at, flip_values[v]))
                continue;
            describe(what, sizeof what, at, flip_values[v], false);
            ckpt_try(&s, &ckpt_flips, s.n, what);
        }
    }

    ckpt_sweep_close(&s);
    ckpt_swept = true;
}

static void print_tally(const char *name, const struct tally *t)
{
    print_message("%s: %d variants: %d errors (%d not data errors), %d "
                  "loaded the same values, %d loaded other values, %d "
                  "errors changed state, %d errors did not name the file\n",
                  name, t->cases, t->errors, t->not_damage, t->ok_same,
                  t->ok_differ, t->dirty, t->unnamed);
}

/* Every truncated checkpoint is refused as damaged, names the file and
 * changes nothing. */
static void test_checkpoint_truncated(void **state)
{
    ckpt_sweep();
    const struct tally *t = &ckpt_cuts;
    print_tally("checkpoint cuts", t);
    assert_true(t->cases > 512);
    if (t->ok_same || t->ok_differ)
        fail_msg("%d truncated checkpoints loaded", t->ok_same + t->ok_differ);
    if (t->not_damage)
        fail_msg("not seen as damage: %s", t->first_not_damage);
    if (t->unnamed)
        fail_msg("%s", t->first_unnamed);
    if (t->dirty)
        fail_msg("%s", t->first_dirty);
}

/* A damaged byte anywhere: a clean error that names the file and leaves
 * the state untouched. */
static void test_checkpoint_flips_fail_cleanly(void **state)
{
    ckpt_sweep();
    const struct tally *t = &ckpt_flips;
    print_tally("checkpoint flips", t);
    assert_true(t->cases > 1000);
    if (t->unnamed)
        fail_msg("%s", t->first_unnamed);
    if (t->dirty)
        fail_msg("%s", t->first_dirty);
}

/* ... and a damaged byte is seen as damage: a variant that loads must
 * give the saved values exactly (the damage landed in header padding or
 * a key nobody reads), and one that fails must fail as damaged data
 * (CNN_ERR_DATA, which --resume falls back past), not as a checkpoint
 * of another model or optimizer. */
static void test_checkpoint_flips_seen_as_damage(void **state)
{
    ckpt_sweep();
    const struct tally *t = &ckpt_flips;
    if (t->ok_differ)
        print_error("%d damaged checkpoints loaded other values without an "
                    "error, e.g. %s; fields affected: %s\n", t->ok_differ,
                    t->first_differ, t->differ_fields);
    if (t->not_damage)
        print_error("%d damaged checkpoints were refused as something "
                    "other than damage, e.g. %s\n", t->not_damage,
                    t->first_not_damage);
    assert_int_equal(t->ok_differ + t->not_damage, 0);
}

/* --- IDX datasets ------------------------------------------------------- */

enum { IDX_N = 10, IDX_HW = 16, IMG_BYTES = 16 + IDX_N * IDX_HW,
       LBL_BYTES = 8 + IDX_N };

static void idx_contents(unsigned char *img, unsigned char *lbl)
{
    memcpy(img, (uint8_t[]){0, 0, 8, 3, 0, 0, 0, IDX_N, 0, 0, 0, 4, 0, 0,
                            0, 4}, 16);
    memcpy(lbl, (uint8_t[]){0, 0, 8, 1, 0, 0, 0, IDX_N}, 8);
    for (int i = 0; i < IDX_N; i++) {
        lbl[8 + i] = (uint8_t)(i % 3);
        for (int p = 0; p < IDX_HW; p++)
            img[16 + i * IDX_HW + p] = (uint8_t)(i * 17 + p * 5 + 1);
    }
}

static void write_gz(const char *path, const void *data, size_t n)
{
    gzFile f = gzopen(path, "wb9");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, data, (unsigned)n), (int)n);
    assert_int_equal(gzclose(f), Z_OK);
}

/* The dataset an IDX pair of plain bytes describes, for comparison. */
static bool same_as(const struct cnn_dataset *ds, const unsigned char *img,
                    const unsigned char *lbl)
{
    if (ds->n != IDX_N || ds->shape.c != 1 || ds->shape.h != 4 ||
        ds->shape.w != 4 || memcmp(ds->pixels, img + 16, IDX_N * IDX_HW))
        return false;
    int classes = 0;
    for (int i = 0; i < IDX_N; i++) {
        if (ds->labels[i] != lbl[8 + i])
            return false;
        classes = lbl[8 + i] + 1 > classes ? lbl[8 + i] + 1 : classes;
    }
    return ds->n_classes == classes;
}

struct idx_case {
    bool gz, images;            /* which file is damaged */
    const unsigned char *orig;  /* its plain bytes */
    unsigned char *file;        /* its bytes on disk (maybe gzip'd) */
    size_t n;
    char *damaged, *other;      /* paths */
    unsigned char img[IMG_BYTES], lbl[LBL_BYTES];
};

/* Loads the pair with the damaged file in place; plain variants may load
 * only when the damage is in the data (then the data is what the file
 * says), gzip'd ones only when what they decode to is unchanged. */
static void idx_try(struct idx_case *c, struct tally *t, const void *bytes,
                    size_t len, size_t at, bool cut, const char *what)
{
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    assert_int_equal(test_write(c->damaged, bytes, len), 0);
    t->cases++;
    const char *images = c->images ? c->damaged : c->other;
    const char *labels = c->images ? c->other : c->damaged;
    if (cnn_idx_load(&ds, images, labels, 0, &err) != CNN_OK) {
        check_error(t, &err, c->damaged, what);
        if (ds.pixels || ds.labels || ds.n) {
            t->dirty++;
            note(t->first_dirty, sizeof t->first_dirty, "%s: failed but "
                 "left a dataset behind", what);
        }
        return;
    }

    size_t header = c->images ? 16 : 8;
    bool fine;
    if (c->gz || cut) {
        fine = same_as(&ds, c->img, c->lbl);
    } else {
        unsigned char img[IMG_BYTES], lbl[LBL_BYTES];
        memcpy(img, c->img, sizeof img);
        memcpy(lbl, c->lbl, sizeof lbl);
        memcpy(c->images ? img : lbl, bytes, len);
        fine = at >= header && same_as(&ds, img, lbl);
    }
    if (fine) {
        t->ok_same++;
    } else {
        t->ok_differ++;
        note(t->first_differ, sizeof t->first_differ, "%s of %s: loaded "
             "%lld examples of %dx%dx%d without complaint", what,
             c->damaged, ds.n, ds.shape.c, ds.shape.h, ds.shape.w);
    }
    cnn_dataset_free(&ds);
}

static void idx_sweep(bool gz, bool images, struct tally *t)
{
    struct idx_case c = {.gz = gz, .images = images};
    idx_contents(c.img, c.lbl);
    c.orig = images ? c.img : c.lbl;
    size_t plain = images ? IMG_BYTES : LBL_BYTES;
    char name[64];
    snprintf(name, sizeof name, "%s-damaged%s", images ? "img" : "lbl",
             gz ? ".gz" : "");
    c.damaged = test_path(dir, name);
    c.other = test_path(dir, images ? "lbl-good" : "img-good");
    assert_int_equal(test_write(c.other, images ? c.lbl : c.img,
                                images ? LBL_BYTES : IMG_BYTES), 0);
    if (gz) {
        write_gz(c.damaged, c.orig, plain);
        c.file = slurp(c.damaged, &c.n);
    } else {
        c.n = plain;
        c.file = malloc(c.n);
        assert_non_null(c.file);
        memcpy(c.file, c.orig, c.n);
    }

    /* The undamaged pair loads. */
    struct tally good = {0};
    idx_try(&c, &good, c.file, c.n, c.n, true, "undamaged");
    assert_int_equal(good.ok_same, 1);

    unsigned char *var = malloc(c.n);
    assert_non_null(var);
    char what[64];
    for (size_t at = 0; at < c.n; at++) {
        describe(what, sizeof what, at, 0, true);
        idx_try(&c, t, c.file, at, at, true, what);
        for (int v = 0; v < N_VALUES; v++) {
            if (!make_flip(var, c.file, c.n, at, flip_values[v]))
                continue;
            describe(what, sizeof what, at, flip_values[v], false);
            idx_try(&c, t, var, c.n, at, false, what);
        }
    }
    free(var);
    free(c.file);
    free(c.damaged);
    free(c.other);
}

static void test_idx_damaged(void **state)
{
    static const char *const names[] = {"plain labels", "plain images",
                                        "gzip'd labels", "gzip'd images"};
    int failures = 0;
    for (int k = 0; k < 4; k++) {
        struct tally t = {0};
        idx_sweep(k >= 2, k % 2 == 1, &t);
        print_tally(names[k], &t);
        assert_true(t.cases > 50);
        if (t.ok_differ)
            print_error("%s: %s\n", names[k], t.first_differ);
        if (t.unnamed)
            print_error("%s: %s\n", names[k], t.first_unnamed);
        if (t.dirty)
            print_error("%s: %s\n", names[k], t.first_dirty);
        failures += t.ok_differ + t.unnamed + t.dirty;
    }
    assert_int_equal(failures, 0);
}

/* --- model files (cnn_st_open) ------------------------------------------ */

/* A file that opens must describe tensors inside its data, each as long
 * as its shape says; loaded into the net, it gives the bytes it holds. */
static const char *st_check(const struct cnn_st_file *f, struct rig *r,
                            const unsigned char *bytes, size_t len,
                            size_t data_start)
{
    const char *lo = f->buf + data_start, *hi = f->buf + len;
    if (f->size != len)
        return "size is not the file's";
    for (int i = 0; i < f->n_tensors; i++) {
        const struct cnn_tensor *t = &f->tensors[i];
        if ((const char *)t->data < lo || (const char *)t->data > hi ||
            t->bytes > (size_t)(hi - (const char *)t->data))
            return "a tensor lies outside the data";
    }
    struct cnn_error err = {0};
    if (cnn_st_load_net(f, &r->net, true, &err) != CNN_OK)
        return NULL;
    /* Loaded: the model's tensors are the file's data, in order. */
    if (memcmp(r->net.params, bytes + data_start,
               r->net.n_params * sizeof(float)) != 0)
        return "loaded weights are not the file's bytes";
    return NULL;
}

static void st_try(struct rig *r, struct tally *t, const char *path,
                   const unsigned char *bytes, size_t len, size_t data_start,
                   const char *what)
{
    struct cnn_st_file f;
    struct cnn_error err = {0};
    assert_int_equal(test_write(path, bytes, len), 0);
    t->cases++;
    if (cnn_st_open(&f, path, &err) != CNN_OK) {
        check_error(t, &err, path, what);
        if (f.buf || f.tensors || f.meta_keys || f.n_tensors) {
            t->dirty++;
            note(t->first_dirty, sizeof t->first_dirty, "%s: failed but "
                 "left the file struct filled", what);
        }
        return;
    }
    const char *why = st_check(&f, r, bytes, len, data_start);
    if (why) {
        t->ok_differ++;
        note(t->first_differ, sizeof t->first_differ, "%s: %s", what, why);
    } else {
        t->ok_same++;
    }
    cnn_st_close(&f);
}

static void test_model_file_damaged(void **state)
{
    struct rig r;
    rig_build(&r, "{name: sgd}", 1);
    char *path = test_path(dir, "model.safetensors");
    const struct cnn_meta meta[] = {
        {"format", "pt"}, {"config", CONFIG_TEXT}, {"steps", "12"},
        {"normalize_mean", "0.5"}, {"odd \"key\"\\", "tab\there"},
    };
    struct cnn_error err = {0};
    if (cnn_safetensors_save(path, &r.net, meta, 5, &err))
        fail_msg("%s: %s", err.where, err.message);
    size_t n;
    unsigned char *orig = slurp(path, &n), *var = malloc(n);
    assert_non_null(var);
    size_t data = 8 + header_len(orig);

    struct tally cuts = {0}, flips = {0};
    char what[64];
    for (size_t at = 0; at < n; at++) {
        describe(what, sizeof what, at, 0, true);
        st_try(&r, &cuts, path, orig, at, data, what);
        if (!visited(at, n, data, 5))
            continue;           /* the data has no structure: a stride */
        for (int v = 0; v < N_VALUES; v++) {
            if (!make_flip(var, orig, n, at, flip_values[v]))
                continue;
            describe(what, sizeof what, at, flip_values[v], false);
            st_try(&r, &flips, path, var, n, data, what);
        }
    }
    free(orig);
    free(var);
    free(path);
    rig_free(&r);

    print_tally("model file cuts", &cuts);
    print_tally("model file flips", &flips);
    assert_int_equal(cuts.ok_same + cuts.ok_differ, 0);
    if (cuts.unnamed || flips.unnamed)
        fail_msg("%s%s", cuts.first_unnamed, flips.first_unnamed);
    if (cuts.dirty || flips.dirty)
        fail_msg("%s%s", cuts.first_dirty, flips.first_dirty);
    if (flips.ok_differ)
        fail_msg("%s", flips.first_differ);
}

/* A \u escape at the very end of the header: the reader must not look
 * past the file's bytes for it. Only valgrind sees such a read: it
 * happens inside glibc (sscanf looks for the string's end), where ASan
 * does not check. */
static void test_escape_at_end_of_header(void **state)
{
    static const char header[] = "{\"__metadata__\":{\"k\":\"\\u0041\"}}";
    size_t hlen = sizeof header - 1;
    unsigned char *buf = malloc(8 + hlen);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    char *path = test_path(dir, "escape.safetensors");
    assert_int_equal(test_write(path, buf, 8 + hlen), 0);

    struct cnn_st_file f;
    struct cnn_error err = {0};
    if (cnn_st_open(&f, path, &err) != CNN_OK)
        fail_msg("%s: %s", err.where, err.message);
    assert_string_equal(cnn_st_meta(&f, "k"), "A");
    cnn_st_close(&f);

    /* Cut inside the escape: refused. */
    for (size_t cut = 1; cut <= 6; cut++) {
        size_t h = hlen - 3 - cut;
        for (int i = 0; i < 8; i++)
            buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
        assert_int_equal(test_write(path, buf, 8 + h), 0);
        assert_int_equal(cnn_st_open(&f, path, &err), CNN_ERR_DATA);
    }
    free(buf);
    free(path);
}

static int setup(void **state)
{
    dir = test_tmpdir();
    return dir ? 0 : -1;
}

static int teardown(void **state)
{
    test_rm_tree(dir);
    free(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_each_optimizer),
        cmocka_unit_test(test_round_trip_nan_and_inf),
        cmocka_unit_test(test_other_optimizer_refused),
        cmocka_unit_test(test_other_model_refused),
        cmocka_unit_test(test_checksum_mismatch),
        cmocka_unit_test(test_state_out_of_range_refused),
        cmocka_unit_test(test_older_without_grad_stats_bytes),
        cmocka_unit_test(test_checkpoint_truncated),
        cmocka_unit_test(test_checkpoint_flips_fail_cleanly),
        cmocka_unit_test(test_checkpoint_flips_seen_as_damage),
        cmocka_unit_test(test_idx_damaged),
        cmocka_unit_test(test_model_file_damaged),
        cmocka_unit_test(test_escape_at_end_of_header),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
