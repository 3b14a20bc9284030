/*
 * The table of optimizers by config name, the keys every optimizer
 * shares (weight_decay, no_decay, clip_norm, clip_value), and the step
 * that clips gradients and walks the parameter groups.
 */
#include "cnn/optim.h"
#include "cnn/ops.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct cnn_optim_kind *const kinds[] = {
    &cnn_optim_sgd,
    &cnn_optim_adam,
    &cnn_optim_adamw,
    &cnn_optim_lion,
    &cnn_optim_rmsprop,
    &cnn_optim_adagrad,
    &cnn_optim_adam8bit,
};

enum { N_KINDS = sizeof kinds / sizeof kinds[0] };

static enum cnn_status find_kind(struct cnn_optim *o, struct cnn_node *section,
                                 const char *name, struct cnn_error *err)
{
    const char *names[N_KINDS];
    for (int i = 0; i < N_KINDS; i++) {
        names[i] = kinds[i]->name;
        if (strcmp(kinds[i]->name, name) == 0) {
            o->kind = kinds[i];
            return CNN_OK;
        }
    }

    struct cnn_node *at = cnn_node_get(section, "name");
    if (at)
        cnn_node_error(err, at, "unknown optimizer '%s' (known: sgd, adam, "
                       "adamw, lion, rmsprop, adagrad, adam8bit)", name);
    else
        cnn_error_set(err, CNN_ERR_CONFIG, "unknown optimizer '%s'", name);
    const char *near = cnn_closest_name(name, names, N_KINDS);
    if (near)
        cnn_error_hint(err, "did you mean '%s'?", near);
    return CNN_ERR_CONFIG;
}

/* no_decay: [bias, norm]: parameter kinds weight decay leaves alone. */
static enum cnn_status read_no_decay(struct cnn_node *section,
                                     unsigned *mask, struct cnn_error *err)
{
    static const char *const names[] = {
        [CNN_PARAM_WEIGHT] = "weight",
        [CNN_PARAM_BIAS] = "bias",
        [CNN_PARAM_NORM] = "norm",
    };
    struct cnn_node *n = cnn_node_get(section, "no_decay");
    *mask = 0;
    if (!n || cnn_node_is_null(n))
        return CNN_OK;
    if (n->kind != CNN_NODE_SEQ)
        return cnn_node_error(err, n, "expected a list of parameter kinds, "
                              "e.g. [bias, norm]");
    for (int i = 0; i < n->n_items; i++) {
        struct cnn_node *it = n->items[i];
        int k = -1;
        for (int j = 0; it->kind == CNN_NODE_SCALAR && j < 3; j++)
            if (strcmp(it->value, names[j]) == 0)
                k = j;
        if (k < 0)
            return cnn_node_error(err, it, "unknown parameter kind (one of: "
                                  "weight, bias, norm)");
        *mask |= 1u << k;
    }
    return CNN_OK;
}

/* Keys some optimizer reads. Comparing optimizers from the shell swaps
 * optimizer.name on one config, so a key of another kind (momentum when
 * the name is now adam) is set aside with a note instead of failing the
 * run; a key no optimizer knows is still an error. */
static const char *const any_kind_keys[] = {
    "momentum", "dampening", "nesterov", "betas", "eps", "alpha",
    "centered", "lr_decay", "initial_accumulator",
};

static enum cnn_status set_aside_foreign_keys(struct cnn_optim *o,
                                              struct cnn_node *section)
{
    char keys[160] = "";
    size_t len = 0;
    for (int i = 0; section && i < section->n_items; i++) {
        struct cnn_node *c = section->items[i];
        for (size_t k = 0;
             !c->used && k < sizeof any_kind_keys / sizeof any_kind_keys[0];
             k++) {
            if (strcmp(c->key, any_kind_keys[k]) != 0)
                continue;
            c->used = true;
            if (len < sizeof keys)
                len += (size_t)snprintf(keys + len, sizeof keys - len,
                                        "%s%s", len ? ", " : "", c->key);
        }
    }
    if (len > 0)
        snprintf(o->note, sizeof o->note, "optimizer %.20s does not use "
                 "%.160s; ignored", o->name, keys);
    return CNN_OK;
}

/* The global norm is summed per block of NORM_BLOCK values of the flat
 * block, each block's sum kept in norm_parts, and the blocks' sums added
 * in order: the threads share the blocks out, and the bits do not
 * depend on how many there are. The groups must lie in offset order,
 * as the net places them. */
enum { NORM_BLOCK = 1 << 14 };

static int norm_blocks(const struct cnn_optim *o)
{
    return (int)((o->n + NORM_BLOCK - 1) / NORM_BLOCK);
}

static bool groups_in_order(const struct cnn_optim *o)
{
    for (int k = 1; k < o->n_groups; k++)
        if (o->groups[k].offset <
            o->groups[k - 1].offset + o->groups[k - 1].count)
            return false;
    return true;
}

enum cnn_status cnn_optim_create(struct cnn_optim *o, struct cnn_node *section,
                                 const struct cnn_param_group *groups,
                                 int n_groups, size_t n, struct cnn_error *err)
{
    memset(o, 0, sizeof *o);
    o->n = n;
    unsigned no_decay;
    if (cnn_read_string(section, "name", "sgd", &o->name, err) ||
        find_kind(o, section, o->name, err) ||
        cnn_read_float(section, "weight_decay",
                       o->kind == &cnn_optim_adamw ? 0.01 : 0.0, 0.0, 1e3,
                       &o->weight_decay, err) ||
        cnn_read_float(section, "clip_norm", 0.0, 0.0, 1e12, &o->clip_norm,
                       err) ||
        cnn_read_float(section, "clip_value", 0.0, 0.0, 1e12, &o->clip_value,
                       err) ||
        read_no_decay(section, &no_decay, err))
        return CNN_ERR_CONFIG;
    cnn_node_get(section, "lr");    /* read by the config, known here */

    o->groups = malloc((size_t)(n_groups ? n_groups : 1) * sizeof *o->groups);
    if (!o->groups)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    o->n_groups = n_groups;
    for (int i = 0; i < n_groups; i++) {
        o->groups[i] = groups[i];
        o->groups[i].decay = !(no_decay & (1u << groups[i].kind));
    }

    if (n > 0 && (double)n / NORM_BLOCK < INT_MAX && groups_in_order(o) &&
        !(o->norm_parts = malloc((size_t)norm_blocks(o) * sizeof(double))))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");

    enum cnn_status st = o->kind->create(o, section, err);
    if (st == CNN_OK)
        st = set_aside_foreign_keys(o, section);
    if (st == CNN_OK)
        st = cnn_node_check_unused(section, err);
    if (st != CNN_OK)
        cnn_optim_free(o);
    return st;
}

/* Sum of g[i]^2 in double, in eight running sums: one sum would be a
 * chain of dependent adds, a third of a small MLP's step. */
static double sum_squares(const float *g, size_t n)
{
    double lane[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            lane[j] += (double)g[i + j] * g[i + j];
    for (; i < n; i++)
        lane[0] += (double)g[i] * g[i];
    double sq = 0.0;
    for (int j = 0; j < 8; j++)
        sq += lane[j];
    return sq;
}

struct norm_job {
    const struct cnn_optim *o;
    const float *g;
};

static void norm_part(void *ctx, int lo, int hi)
{
    const struct norm_job *j = ctx;
    const struct cnn_optim *o = j->o;
    const struct cnn_param_group *grp = o->groups;
    /* The first group that reaches block lo, by bisection. */
    size_t start = (size_t)lo * NORM_BLOCK;
    int k = 0, top = o->n_groups;
    while (k < top) {
        int mid = k + (top - k) / 2;
        if (grp[mid].offset + grp[mid].count <= start)
            k = mid + 1;
        else
            top = mid;
    }
    for (int b = lo; b < hi; b++) {
        size_t a0 = (size_t)b * NORM_BLOCK;
        size_t a1 = a0 + NORM_BLOCK < o->n ? a0 + NORM_BLOCK : o->n;
        while (k < o->n_groups && grp[k].offset + grp[k].count <= a0)
            k++;
        double sq = 0.0;
        for (int i = k; i < o->n_groups && grp[i].offset < a1; i++) {
            size_t a = grp[i].offset > a0 ? grp[i].offset : a0;
            size_t e = grp[i].offset + grp[i].count;
            e = e < a1 ? e : a1;
            if (!grp[i].frozen && a < e)
                sq += sum_squares(j->g + a, e - a);
        }
        o->norm_parts[b] = sq;
    }
}

static double clip(struct cnn_optim *o, float *g)
{
    /* Clamping would hide an infinite gradient: report it first. */
    for (size_t i = 0; o->clip_value > 0 && i < o->n; i++)
        if (!isfinite(g[i]))
            return NAN;
    if (o->clip_value > 0) {
        float c = (float)o->clip_value;
        for (size_t i = 0; i < o->n; i++)
            g[i] = g[i] > c ? c : (g[i] < -c ? -c : g[i]);
    }

    double sq = 0.0;
    if (o->norm_parts) {
        struct norm_job j = {o, g};
        int blocks = norm_blocks(o);
        cnn_parallel_for(blocks, norm_part, &j);
        for (int b = 0; b < blocks; b++)
            sq += o->norm_parts[b];
    } else {
        for (int k = 0; k < o->n_groups; k++) {
            const struct cnn_param_group *grp = &o->groups[k];
            if (!grp->frozen)
                sq += sum_squares(g + grp->offset, grp->count);
        }
    }
    double norm = sqrt(sq);

    if (o->clip_norm > 0 && norm > o->clip_norm) {
        float scale = (float)(o->clip_norm / (norm + 1e-6));
        for (size_t i = 0; i < o->n; i++)
            g[i] *= scale;
    }
    return norm;
}

struct step_job {
    struct cnn_optim *o;
    float *params;
    const float *grads;
    float lr;
};

/* The updates of the flat block's parameters [lo, hi), group by group. */
static void step_part(void *ctx, size_t lo, size_t hi)
{
    const struct step_job *j = ctx;
    struct cnn_optim *o = j->o;
    for (int k = 0; k < o->n_groups; k++) {
        const struct cnn_param_group *grp = &o->groups[k];
        size_t a = grp->offset > lo ? grp->offset : lo;
        size_t b = grp->offset + grp->count < hi ? grp->offset + grp->count
                                                 : hi;
        if (a >= b || grp->frozen || grp->lr_scale == 0.0f)
            continue;
        float wd = grp->decay ? (float)o->weight_decay : 0.0f;
        o->kind->update(o, j->params + a, j->grads + a, a, b - a,
                        j->lr * grp->lr_scale, wd);
    }
}

double cnn_optim_step(struct cnn_optim *o, float *params, float *grads,
                      float lr)
{
    double norm = clip(o, grads);
    if (!isfinite(norm))
        return norm;
    struct step_job j = {o, params, grads, lr};
    if (o->kind->elementwise)
        cnn_parallel_elems(o->n, step_part, &j);
    else
        step_part(&j, 0, o->n);
    o->steps++;
    return norm;
}

void cnn_optim_add_buffer(struct cnn_optim *o, const char *name, void *data,
                          size_t bytes)
{
    if (o->n_buffers < CNN_OPTIM_MAX_BUFFERS)
        o->buffers[o->n_buffers++] =
            (struct cnn_optim_buffer){name, data, bytes};
}

float *cnn_optim_float_buffer(struct cnn_optim *o, const char *name,
                              struct cnn_error *err)
{
    float *b = calloc(o->n ? o->n : 1, sizeof *b);
    if (!b) {
        cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the optimizer's "
                      "%s (%zu values)", name, o->n);
        return NULL;
    }
    cnn_optim_add_buffer(o, name, b, o->n * sizeof *b);
    return b;
}

size_t cnn_optim_state_bytes(const struct cnn_optim *o)
{
    size_t total = 0;
    for (int i = 0; i < o->n_buffers; i++)
        total += o->buffers[i].bytes;
    return total;
}

enum cnn_status cnn_optim_read_betas(struct cnn_node *args, double def1,
                                     double def2, double *b1, double *b2,
                                     struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(args, "betas");
    *b1 = def1;
    *b2 = def2;
    if (!n)
        return CNN_OK;
    if (n->kind != CNN_NODE_SEQ || n->n_items != 2)
        return cnn_node_error(err, n, "expected two numbers, e.g. [0.9, "
                              "0.999]");
    for (int i = 0; i < 2; i++) {
        double *b = i ? b2 : b1;
        if (cnn_node_float(n->items[i], 0.0, 1.0, b, err) != CNN_OK)
            return CNN_ERR_CONFIG;
        if (*b >= 1.0)
            return cnn_node_error(err, n->items[i], "must be in [0, 1), got "
                                  "%s", n->items[i]->value);
    }
    return CNN_OK;
}

void cnn_optim_free(struct cnn_optim *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->n_buffers; i++)
        free(o->buffers[i].data);
    free(o->state);
    free(o->groups);
    free(o->norm_parts);
    memset(o, 0, sizeof *o);
}
