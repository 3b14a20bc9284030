/*
 * Checkpoint files: tensors and run state in and out of safetensors.
 * Doubles travel in the metadata as %.17g text, which reads back to the
 * same bits; the dropout generator's words as a U64 tensor.
 */
#include "cnn/checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cnn/safetensors.h"
#include "cnn_version.h"

void cnn_run_state_init(struct cnn_run_state *rs)
{
    memset(rs, 0, sizeof *rs);
    rs->final_train_loss = rs->test_loss = rs->test_acc = NAN;
    rs->best_test_acc = rs->best_metric = rs->stop_best = NAN;
    rs->last_lr = NAN;
    rs->lr_factor = 1.0;
    rs->loss_scale = 65536.0;
}

/* The numbers of a run state, by metadata key. */
enum field_kind { F_LL, F_DBL };

struct field {
    const char *key;
    enum field_kind kind;
    size_t offset;
};

#define LL(name) {#name, F_LL, offsetof(struct cnn_run_state, name)}
#define DBL(name) {#name, F_DBL, offsetof(struct cnn_run_state, name)}

static const struct field fields[] = {
    LL(step), LL(epoch), LL(epoch_pos), LL(examples), DBL(train_seconds),
    DBL(sum_loss), DBL(sum_norm), LL(sum_correct), LL(sum_examples),
    LL(interval_steps), DBL(final_train_loss), DBL(test_loss),
    DBL(test_acc), DBL(best_test_acc), LL(best_test_epoch),
    DBL(best_metric), LL(stale_epochs), LL(skipped_steps), LL(rollbacks),
    DBL(lr_factor), LL(metrics_bytes), DBL(last_lr), DBL(stop_best),
    LL(grad_stats_bytes), DBL(loss_scale), LL(scale_good),
};

enum { N_FIELDS = sizeof fields / sizeof fields[0], N_EXTRA = 10 };

static uLong crc_bytes(uLong crc, const void *data, size_t bytes)
{
    const Bytef *p = data;
    for (size_t left = bytes; left > 0;) {
        uInt chunk = left > (1u << 30) ? 1u << 30 : (uInt)left;
        crc = crc32(crc, p, chunk);
        p += chunk;
        left -= chunk;
    }
    return crc;
}

static uLong crc_text(uLong crc, const char *s)
{
    return crc_bytes(crc, s, strlen(s) + 1);    /* the NUL separates */
}

/* CRC-32 of everything a checkpoint says: each tensor's name, dtype,
 * shape and data, and every metadata pair but the checksum itself, in
 * order. A flipped byte anywhere is damage, not a different state. */
uint32_t cnn_checkpoint_checksum(const struct cnn_tensor *t, int n,
                                 const char *const *keys,
                                 const char *const *values, int n_meta)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < n; i++) {
        crc = crc_text(crc, t[i].name);
        crc = crc_text(crc, t[i].dtype);
        crc = crc_bytes(crc, t[i].dims, (size_t)t[i].ndim * sizeof t[i].dims[0]);
        crc = crc_bytes(crc, t[i].data, t[i].bytes);
    }
    for (int i = 0; i < n_meta; i++) {
        if (strcmp(keys[i], "checksum") == 0)
            continue;
        crc = crc_text(crc, keys[i]);
        crc = crc_text(crc, values[i]);
    }
    return (uint32_t)crc;
}

enum cnn_status cnn_checkpoint_save(const char *path, struct cnn_net *net,
                                    const struct cnn_optim *optim,
                                    const struct cnn_schedule *schedule,
                                    const struct cnn_run_state *rs,
                                    const char *config_text,
                                    struct cnn_error *err)
{
    int n_params = cnn_net_count_tensors(net);
    int cap = n_params + CNN_OPTIM_MAX_BUFFERS + 1;
    size_t name_cap = (size_t)cap * 160;
    struct cnn_tensor *t = calloc((size_t)cap, sizeof *t);
    char *names = malloc(name_cap);
    char (*values)[40] = calloc(N_FIELDS + N_EXTRA, sizeof *values);
    struct cnn_meta *meta = calloc(N_FIELDS + N_EXTRA, sizeof *meta);
    enum cnn_status st = CNN_ERR_NOMEM;
    if (!t || !names || !values || !meta) {
        cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        goto out;
    }

    int n = cnn_net_tensors(net, t, names, name_cap, n_params);
    char bufnames[CNN_OPTIM_MAX_BUFFERS][80];
    for (int i = 0; i < optim->n_buffers; i++) {
        char *name = bufnames[i];
        snprintf(name, sizeof bufnames[i], "optim.%s", optim->buffers[i].name);
        t[n++] = (struct cnn_tensor){.name = name, .dtype = "U8", .ndim = 1,
                                     .dims = {optim->buffers[i].bytes},
                                     .data = optim->buffers[i].data,
                                     .bytes = optim->buffers[i].bytes};
    }
    t[n++] = (struct cnn_tensor){.name = "state.dropout_rng", .dtype = "U64",
                                 .ndim = 1, .dims = {4},
                                 .data = net->dropout_rng.s,
                                 .bytes = sizeof net->dropout_rng.s};

    int m = 0;
    for (int i = 0; i < N_FIELDS; i++, m++) {
        const char *base = (const char *)rs + fields[i].offset;
        if (fields[i].kind == F_LL)
            snprintf(values[m], sizeof values[m], "%lld",
                     *(const long long *)base);
        else
            snprintf(values[m], sizeof values[m], "%.17g",
                     *(const double *)base);
        meta[m] = (struct cnn_meta){fields[i].key, values[m]};
    }
    snprintf(values[m], 40, "%lld", optim->steps);
    meta[m] = (struct cnn_meta){"optim_steps", values[m]};
    m++;
    snprintf(values[m], 40, "%s", optim->name);
    meta[m] = (struct cnn_meta){"optimizer", values[m]};
    m++;
    snprintf(values[m], 40, "%.17g", schedule->plateau_scale);
    meta[m] = (struct cnn_meta){"plateau_scale", values[m]};
    m++;
    snprintf(values[m], 40, "%.17g", schedule->plateau_best);
    meta[m] = (struct cnn_meta){"plateau_best", values[m]};
    m++;
    snprintf(values[m], 40, "%lld", schedule->plateau_bad);
    meta[m] = (struct cnn_meta){"plateau_bad", values[m]};
    m++;
    snprintf(values[m], 40, "%d", rs->done);
    meta[m] = (struct cnn_meta){"done", values[m]};
    m++;
    meta[m++] = (struct cnn_meta){"format", "pt"};
    meta[m++] = (struct cnn_meta){"producer", "cnn-train " CNN_VERSION};
    meta[m++] = (struct cnn_meta){"config", config_text ? config_text : ""};
    const char *keys[N_FIELDS + N_EXTRA], *vals[N_FIELDS + N_EXTRA];
    for (int i = 0; i < m; i++) {
        keys[i] = meta[i].key;
        vals[i] = meta[i].value;
    }
    snprintf(values[m], 40, "%08" PRIx32,
             cnn_checkpoint_checksum(t, n, keys, vals, m));
    meta[m] = (struct cnn_meta){"checksum", values[m]};
    m++;

    st = cnn_safetensors_write(path, t, n, meta, m, err);
out:
    free(t);
    free(names);
    free(values);
    free(meta);
    return st;
}

static enum cnn_status meta_number(const struct cnn_st_file *f,
                                   const char *key, double *out,
                                   struct cnn_error *err)
{
    const char *v = cnn_st_meta(f, key);
    char *end;
    if (v) {
        errno = 0;
        *out = strtod(v, &end);
        if (end != v && *end == '\0' && errno != ERANGE)
            return CNN_OK;
        if (strcmp(v, "nan") == 0 || strcmp(v, "-nan") == 0) {
            *out = NAN;
            return CNN_OK;
        }
    }
    return cnn_error_at(err, CNN_ERR_DATA, f->path, "checkpoint metadata "
                        "'%s' is %s", key, v ? "not a number" : "missing");
}

/* A counter: a whole non-negative number, nothing else. */
static enum cnn_status meta_count(const struct cnn_st_file *f,
                                  const char *key, long long *out,
                                  struct cnn_error *err)
{
    const char *v = cnn_st_meta(f, key);
    char *end;
    if (v) {
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (end != v && *end == '\0' && errno == 0 && n >= 0) {
            *out = n;
            return CNN_OK;
        }
    }
    return cnn_error_at(err, CNN_ERR_DATA, f->path, "checkpoint metadata "
                        "'%s' is %s", key, v ? "not a count" : "missing");
}

static enum cnn_status read_state(const struct cnn_st_file *f,
                                  struct cnn_run_state *rs,
                                  struct cnn_schedule *sched,
                                  long long *optim_steps,
                                  struct cnn_error *err)
{
    for (int i = 0; i < N_FIELDS; i++) {
        char *base = (char *)rs + fields[i].offset;
        /* Keys added after the first checkpoints keep their defaults
         * when absent, so older checkpoints still resume. */
        bool newer = strcmp(fields[i].key, "last_lr") == 0 ||
                     strcmp(fields[i].key, "stop_best") == 0 ||
                     strcmp(fields[i].key, "grad_stats_bytes") == 0 ||
                     strcmp(fields[i].key, "loss_scale") == 0 ||
                     strcmp(fields[i].key, "scale_good") == 0;
        if (newer && !cnn_st_meta(f, fields[i].key))
            continue;
        enum cnn_status st = fields[i].kind == F_LL
            ? meta_count(f, fields[i].key, (long long *)base, err)
            : meta_number(f, fields[i].key, (double *)base, err);
        if (st != CNN_OK)
            return st;
    }
    long long done = 0, bad = 0;
    if (meta_number(f, "plateau_scale", &sched->plateau_scale, err) ||
        meta_number(f, "plateau_best", &sched->plateau_best, err) ||
        meta_count(f, "plateau_bad", &bad, err) ||
        meta_count(f, "done", &done, err) ||
        meta_count(f, "optim_steps", optim_steps, err))
        return CNN_ERR_DATA;
    sched->plateau_bad = bad;
    rs->done = done != 0;
    if (!(rs->lr_factor > 0) || !isfinite(rs->lr_factor) ||
        !(rs->loss_scale > 0) || !isfinite(rs->loss_scale) ||
        !(sched->plateau_scale > 0) || !isfinite(sched->plateau_scale) ||
        done > 1)
        return cnn_error_at(err, CNN_ERR_DATA, f->path, "checkpoint state "
                            "out of range (lr_factor %g, plateau_scale %g, "
                            "loss_scale %g, done %lld)", rs->lr_factor,
                            sched->plateau_scale, rs->loss_scale, done);
    return CNN_OK;
}

static enum cnn_status verify(const struct cnn_st_file *f,
                              struct cnn_error *err)
{
    const char *want = cnn_st_meta(f, "checksum");
    if (!want)
        return cnn_error_at(err, CNN_ERR_DATA, f->path, "not a cnn-train "
                            "checkpoint (no checksum)");
    char got[16];
    snprintf(got, sizeof got, "%08" PRIx32,
             cnn_checkpoint_checksum(f->tensors, f->n_tensors,
                      (const char *const *)f->meta_keys,
                      (const char *const *)f->meta_values, f->n_meta));
    if (strcmp(got, want) != 0)
        return cnn_error_at(err, CNN_ERR_DATA, f->path, "checksum mismatch "
                            "(file says %s, data gives %s): damaged", want,
                            got);
    return CNN_OK;
}

static enum cnn_status check_buffers(const struct cnn_st_file *f,
                                     const struct cnn_optim *optim,
                                     const struct cnn_tensor **bufs,
                                     struct cnn_error *err)
{
    const char *name = cnn_st_meta(f, "optimizer");
    if (!name || strcmp(name, optim->name) != 0)
        return cnn_error_at(err, CNN_ERR_DATA, f->path, "its optimizer is "
                            "'%s', the config's is '%s'",
                            name ? name : "unknown", optim->name);
    for (int i = 0; i < optim->n_buffers; i++) {
        char key[96];
        snprintf(key, sizeof key, "optim.%s", optim->buffers[i].name);
        bufs[i] = cnn_st_find(f, key);
        if (!bufs[i] || bufs[i]->bytes != optim->buffers[i].bytes)
            return cnn_error_at(err, CNN_ERR_DATA, f->path, "tensor '%s' is "
                                "%s", key, bufs[i] ? "not the size the "
                                "optimizer needs" : "missing");
    }
    return CNN_OK;
}

enum cnn_status cnn_checkpoint_load(const char *path, struct cnn_net *net,
                                    struct cnn_optim *optim,
                                    struct cnn_schedule *schedule,
                                    struct cnn_run_state *rs,
                                    char **config_text,
                                    struct cnn_error *err)
{
    struct cnn_st_file f;
    struct cnn_run_state state;
    struct cnn_schedule sched = *schedule;
    const struct cnn_tensor *bufs[CNN_OPTIM_MAX_BUFFERS];
    long long optim_steps = 0;
    if (config_text)
        *config_text = NULL;

    enum cnn_status st = cnn_st_open(&f, path, err);
    if (st != CNN_OK)
        return st;
    cnn_run_state_init(&state);
    /* Damage first (a data error: --resume may fall back past it), then
     * whether it fits this model and optimizer (a config error: older
     * checkpoints would not fit either). */
    st = verify(&f, err);
    if (st == CNN_OK)
        st = read_state(&f, &state, &sched, &optim_steps, err);
    if (st == CNN_OK && !cnn_st_meta(&f, "optimizer"))
        st = cnn_error_at(err, CNN_ERR_DATA, path, "checkpoint metadata "
                          "'optimizer' is missing");
    const struct cnn_tensor *rng = cnn_st_find(&f, "state.dropout_rng");
    if (st == CNN_OK && (!rng || rng->bytes != sizeof net->dropout_rng.s))
        st = cnn_error_at(err, CNN_ERR_DATA, path, "tensor "
                          "'state.dropout_rng' is missing or malformed");

    /* load_net copies tensor by tensor: keep the weights to put back if
     * a later tensor does not fit. */
    float *keep = NULL;
    if (st == CNN_OK) {
        keep = malloc(net->n_params * sizeof *keep + 1);
        if (!keep)
            st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    if (st == CNN_OK) {
        memcpy(keep, net->params, net->n_params * sizeof *keep);
        st = cnn_st_load_net(&f, net, true, err);
        if (st == CNN_ERR_DATA) {
            err->status = st = CNN_ERR_CONFIG;
            cnn_error_hint(err, "the checkpoint was made for another model; "
                           "resume with the config that made it, or "
                           "--force to start over");
        }
        if (st == CNN_OK) {
            st = check_buffers(&f, optim, bufs, err);
            if (st == CNN_ERR_DATA)
                err->status = st = CNN_ERR_CONFIG;
        }
        if (st != CNN_OK)
            memcpy(net->params, keep, net->n_params * sizeof *keep);
    }
    free(keep);
    if (st == CNN_OK && config_text) {
        const char *text = cnn_st_meta(&f, "config");
        *config_text = strdup(text ? text : "");
    }
    if (st == CNN_OK) {
        for (int i = 0; i < optim->n_buffers; i++)
            memcpy(optim->buffers[i].data, bufs[i]->data, bufs[i]->bytes);
        memcpy(net->dropout_rng.s, rng->data, rng->bytes);
        optim->steps = optim_steps;
        *schedule = sched;
        *rs = state;
    }
    cnn_st_close(&f);
    return st;
}
