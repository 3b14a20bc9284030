/*
 * Per-layer gradient, weight and update norms, grad_stats.csv, and the
 * vanishing and exploding gradient warnings. The layer table comes from
 * the net's own walk over its tensors (cnn_net_each_param, with the
 * trainable flags of cnn_net_param_groups, which walk in the same
 * order), so nested layers get the names checkpoints use.
 *
 * Nothing here changes the net; it reads the flat blocks between the
 * backward pass and the optimizer step, and after the step.
 */
#include "cnn/gradstats.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    WARN_NAMES = 4,         /* layers named in one warning; then a count */
};

static const char HEADER[] = "step,epoch,layer,grad_norm,weight_norm,"
                             "update_ratio\n";

/* --- the layer table ----------------------------------------------------- */

struct table_ctx {
    struct cnn_gradstats *gs;
    const struct cnn_param_group *groups;
    int tensor;                 /* index into groups, in walk order */
    bool nomem;
};

/* "residual_1.body.dense_1.weight" -> a copy of "residual_1.body.dense_1" */
static char *layer_of(const char *tensor_name, const char *suffix)
{
    size_t len = strlen(tensor_name) - strlen(suffix) - 1;
    char *name = malloc(len + 1);
    if (name) {
        memcpy(name, tensor_name, len);
        name[len] = '\0';
    }
    return name;
}

static bool same_layer(const struct cnn_gradstats_layer *l, const char *name,
                       const char *suffix)
{
    size_t len = strlen(l->name);
    return strncmp(l->name, name, len) == 0 && name[len] == '.' &&
           strcmp(name + len + 1, suffix) == 0;
}

static void add_tensor(void *ctx, const char *name, struct cnn_param *p)
{
    struct table_ctx *c = ctx;
    struct cnn_gradstats *gs = c->gs;
    const struct cnn_param_group *g = &c->groups[c->tensor++];
    if (c->nomem || g->frozen)      /* buffers are frozen too */
        return;

    struct cnn_gradstats_layer *last = gs->n_layers > 0
        ? &gs->layers[gs->n_layers - 1] : NULL;
    if (!last || !same_layer(last, name, p->suffix)) {
        last = &gs->layers[gs->n_layers];
        last->name = layer_of(name, p->suffix);
        last->first = gs->n_spans;
        last->n_spans = 0;
        if (!last->name) {
            c->nomem = true;
            return;
        }
        gs->n_layers++;
    }
    gs->spans[gs->n_spans++] = (struct cnn_gradstats_span){g->offset,
                                                           g->count};
    last->n_spans++;
    gs->n_trainable += g->count;
}

static enum cnn_status build_table(struct cnn_gradstats *gs,
                                   struct cnn_net *net, struct cnn_error *err)
{
    int n_groups = 0;
    struct cnn_param_group *groups = cnn_net_param_groups(net, &n_groups);
    size_t cap = n_groups > 0 ? (size_t)n_groups : 1;
    gs->layers = calloc(cap, sizeof *gs->layers);
    gs->spans = calloc(cap, sizeof *gs->spans);
    struct table_ctx c = {.gs = gs, .groups = groups,
                          .nomem = !groups || !gs->layers || !gs->spans};
    if (!c.nomem)
        cnn_net_each_param(net, add_tensor, &c);
    free(groups);
    if (c.nomem)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the "
                             "gradient statistics");
    return CNN_OK;
}

enum cnn_status cnn_gradstats_init(struct cnn_gradstats *gs,
                                   struct cnn_net *net,
                                   const struct cnn_gradstats_config *cfg,
                                   struct cnn_error *err)
{
    memset(gs, 0, sizeof *gs);
    gs->cfg = *cfg;
    gs->warned_vanishing = gs->warned_exploding = -1;
    enum cnn_status st = build_table(gs, net, err);
    if (st != CNN_OK) {
        cnn_gradstats_free(gs);
        return st;
    }

    size_t n = gs->n_layers > 0 ? (size_t)gs->n_layers : 1;
    gs->grad_norm = calloc(n, sizeof *gs->grad_norm);
    gs->weight_norm = calloc(n, sizeof *gs->weight_norm);
    gs->update_norm = calloc(n, sizeof *gs->update_norm);
    /* The weights before a step are needed only for rows. */
    if (cfg->every > 0)
        gs->snapshot = malloc((gs->n_trainable ? gs->n_trainable : 1) *
                              sizeof *gs->snapshot);
    if (!gs->grad_norm || !gs->weight_norm || !gs->update_norm ||
        (cfg->every > 0 && !gs->snapshot)) {
        cnn_gradstats_free(gs);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the "
                             "gradient statistics");
    }
    return CNN_OK;
}

void cnn_gradstats_free(struct cnn_gradstats *gs)
{
    if (!gs)
        return;
    cnn_gradstats_close(gs);
    for (int i = 0; gs->layers && i < gs->n_layers; i++)
        free(gs->layers[i].name);
    free(gs->layers);
    free(gs->spans);
    free(gs->grad_norm);
    free(gs->weight_norm);
    free(gs->update_norm);
    free(gs->snapshot);
    memset(gs, 0, sizeof *gs);
}

/* --- norms --------------------------------------------------------------- */

void cnn_gradstats_norms(const struct cnn_gradstats *gs, const float *values,
                         double *out)
{
    for (int i = 0; i < gs->n_layers; i++) {
        const struct cnn_gradstats_layer *l = &gs->layers[i];
        double sum = 0.0;
        for (int k = l->first; k < l->first + l->n_spans; k++) {
            const float *v = values + gs->spans[k].offset;
            for (size_t j = 0; j < gs->spans[k].count; j++)
                sum += (double)v[j] * v[j];
        }
        out[i] = sqrt(sum);
    }
}

void cnn_gradstats_diff_norms(const struct cnn_gradstats *gs, const float *a,
                              const float *b, double *out)
{
    for (int i = 0; i < gs->n_layers; i++) {
        const struct cnn_gradstats_layer *l = &gs->layers[i];
        double sum = 0.0;
        for (int k = l->first; k < l->first + l->n_spans; k++) {
            size_t off = gs->spans[k].offset;
            for (size_t j = 0; j < gs->spans[k].count; j++) {
                double d = (double)a[off + j] - b[off + j];
                sum += d * d;
            }
        }
        out[i] = sqrt(sum);
    }
}

/* The snapshot holds only the spans, back to back. */
static void take_snapshot(struct cnn_gradstats *gs, const float *params)
{
    float *to = gs->snapshot;
    for (int k = 0; k < gs->n_spans; k++) {
        memcpy(to, params + gs->spans[k].offset,
               gs->spans[k].count * sizeof *to);
        to += gs->spans[k].count;
    }
}

static void update_norms(struct cnn_gradstats *gs, const float *params)
{
    const float *before = gs->snapshot;
    for (int i = 0; i < gs->n_layers; i++) {
        const struct cnn_gradstats_layer *l = &gs->layers[i];
        double sum = 0.0;
        for (int k = l->first; k < l->first + l->n_spans; k++) {
            const float *after = params + gs->spans[k].offset;
            for (size_t j = 0; j < gs->spans[k].count; j++) {
                double d = (double)after[j] - before[j];
                sum += d * d;
            }
            before += gs->spans[k].count;
        }
        gs->update_norm[i] = sqrt(sum);
    }
}

/* --- grad_stats.csv ------------------------------------------------------ */

static enum cnn_status start_file(struct cnn_gradstats *gs, const char *path,
                                  struct cnn_error *err)
{
    gs->csv = fopen(path, "w");
    if (!gs->csv || fputs(HEADER, gs->csv) == EOF)
        return cnn_error_at(err, CNN_ERR_IO, path, "cannot create: %s",
                            strerror(errno));
    return CNN_OK;
}

enum cnn_status cnn_gradstats_open(struct cnn_gradstats *gs, const char *path,
                                   long long keep, struct cnn_log *log,
                                   struct cnn_error *err)
{
    cnn_gradstats_close(gs);
    if (gs->cfg.every <= 0)
        return CNN_OK;
    if (keep <= 0)
        return start_file(gs, path, err);

    struct stat sb;
    bool missing = stat(path, &sb) != 0;
    if (missing || sb.st_size < keep) {
        /* A checkpoint brought from elsewhere, or the file was cut. */
        cnn_log_warn(log, "%s: %s; starting a new one", path,
                     missing ? "missing" : "shorter than the checkpoint "
                     "says");
        return start_file(gs, path, err);
    }
    if (truncate(path, (off_t)keep) != 0)
        return cnn_error_at(err, CNN_ERR_IO, path, "cannot rewind to the "
                            "checkpoint: %s", strerror(errno));
    gs->csv = fopen(path, "a");
    if (!gs->csv)
        return cnn_error_at(err, CNN_ERR_IO, path, "cannot open: %s",
                            strerror(errno));
    return CNN_OK;
}

long long cnn_gradstats_bytes(struct cnn_gradstats *gs)
{
    if (!gs->csv)
        return -1;
    fflush(gs->csv);
    return (long long)ftell(gs->csv);
}

void cnn_gradstats_close(struct cnn_gradstats *gs)
{
    if (gs->csv)
        fclose(gs->csv);
    gs->csv = NULL;
}

static void write_rows(const struct cnn_gradstats *gs, long long step,
                       long long epoch)
{
    for (int i = 0; i < gs->n_layers; i++) {
        double w = gs->weight_norm[i];
        fprintf(gs->csv, "%lld,%lld,%s,%.6g,%.6g,", step, epoch,
                gs->layers[i].name, gs->grad_norm[i], w);
        /* A layer of all-zero weights has no ratio; the cell stays empty. */
        if (w > 0)
            fprintf(gs->csv, "%.6g", gs->update_norm[i] / w);
        fputc('\n', gs->csv);
    }
}

/* --- warnings ------------------------------------------------------------ */

/* Writes into buf the layers whose ratio to the last layer's gradient
 * norm is past limit (below it when vanishing, above it otherwise), the
 * first WARN_NAMES with their ratios; returns how many there are. */
static int outliers(const struct cnn_gradstats *gs, bool vanishing,
                    double limit, char *buf, size_t cap)
{
    double ref = gs->grad_norm[gs->n_layers - 1];
    int count = 0;
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < gs->n_layers - 1; i++) {
        double r = gs->grad_norm[i] / ref;
        if (vanishing ? !(r < limit) : !(r > limit))
            continue;
        if (count++ < WARN_NAMES && len < cap)
            len += (size_t)snprintf(buf + len, cap - len, "%s%s (%.2g)",
                                    count > 1 ? ", " : "",
                                    gs->layers[i].name, r);
    }
    if (count > WARN_NAMES && len < cap)
        snprintf(buf + len, cap - len, " and %d more", count - WARN_NAMES);
    return count;
}

static void check(struct cnn_gradstats *gs, bool vanishing, long long step,
                  long long epoch, struct cnn_log *log)
{
    double limit = vanishing ? gs->cfg.vanishing_ratio
                             : gs->cfg.exploding_ratio;
    long long *warned = vanishing ? &gs->warned_vanishing
                                  : &gs->warned_exploding;
    /* The first time, then at most once an epoch: a run that stays
     * unhealthy should not drown its log. */
    if (limit <= 0 || *warned == epoch)
        return;

    char names[512];
    int n = outliers(gs, vanishing, limit, names, sizeof names);
    if (n == 0)
        return;
    *warned = epoch;
    cnn_log_warn(log, "%s gradients at step %lld (epoch %lld): %d of %d "
                 "layers have a gradient norm %s %g times the last layer's "
                 "(%s, %.3g): %s", vanishing ? "vanishing" : "exploding",
                 step, epoch, n, gs->n_layers, vanishing ? "below" : "above",
                 limit, gs->layers[gs->n_layers - 1].name,
                 gs->grad_norm[gs->n_layers - 1], names);
}

/* --- the hooks around the optimizer step --------------------------------- */

static bool falls_on(long long step, long long every)
{
    return every > 0 && step % every == 0;
}

void cnn_gradstats_before(struct cnn_gradstats *gs, const struct cnn_net *net,
                          long long step)
{
    gs->rows_due = gs->csv && falls_on(step, gs->cfg.every);
    gs->check_due = gs->rows_due || falls_on(step, gs->cfg.check_every);
    if (gs->n_layers == 0 || !(gs->rows_due || gs->check_due))
        return;
    cnn_gradstats_norms(gs, net->grads, gs->grad_norm);
    if (!gs->rows_due)
        return;
    cnn_gradstats_norms(gs, net->params, gs->weight_norm);
    take_snapshot(gs, net->params);
}

void cnn_gradstats_after(struct cnn_gradstats *gs, const struct cnn_net *net,
                         long long step, long long epoch,
                         struct cnn_log *log)
{
    if (gs->n_layers == 0)
        return;
    if (gs->rows_due) {
        update_norms(gs, net->params);
        write_rows(gs, step, epoch);
    }
    /* The last layer is the reference: with one layer, or a last layer
     * without gradient, there is nothing to compare. */
    double ref = gs->grad_norm[gs->n_layers - 1];
    if (gs->check_due && gs->n_layers > 1 && ref > 0 && isfinite(ref)) {
        check(gs, true, step, epoch, log);
        check(gs, false, step, epoch, log);
    }
    gs->rows_due = gs->check_due = false;
}
