/*
 * Finite-difference check of a net's backward pass (see gradcheck.h).
 *
 * One forward and backward pass on a random batch gives the analytic
 * gradient. Then, for each sampled entry w of a tensor, the loss is
 * evaluated at w + h and w - h; only the layers from the one holding the
 * tensor onward are run again, from the activations the first pass
 * left, with the dropout stream set back to where that layer found it.
 *
 * Float32 limits what a difference can resolve: the loss itself is
 * only good to a few float roundings of the logits, so a difference of
 * two losses over a step h carries an error of about that over h. The
 * floor of the relative error is that resolution; entries whose
 * derivatives are below it (a vanishing gradient deep in a sigmoid
 * stack) pass without telling much, which is all float32 allows.
 */
#include "cnn/gradcheck.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/loss.h"
#include "cnn/rng.h"

/* The first step, relative to max(|w|, 1): large enough that the loss
 * moves well past its rounding, small enough that the curvature of a
 * smooth layer costs little (its error shrinks as h^2). */
static const double STEP = 1e-2;

/* Smaller steps tried when an entry fails at the first: a kink crossed
 * at h is usually not crossed at h / 10. */
static const double SHRINK = 0.1;
enum { TRIES = 3 };

/* Float roundings the loss is trusted to: each forward pass rounds
 * every activation, and they add up through the layers. Measured on the
 * shipped configs, the loss of two evaluations that should agree
 * differs by well under this many units of float's last place. */
static const double LOSS_ULPS = 64.0;

struct cnn_gradcheck_opts cnn_gradcheck_defaults(void)
{
    return (struct cnn_gradcheck_opts){.entries = 20, .tolerance = 1e-2,
                                       .seed = 1};
}

struct check {
    double scale_floor;         /* of the tensor being checked */
    struct cnn_net *net;
    enum cnn_loss_kind loss;
    int n, k;
    int *labels;                /* [n] */
    struct cnn_rng *rng_at;     /* [n_layers + 1]: dropout stream as layer
                                   i found it in the first pass */
    size_t *starts;             /* [n_layers + 1]: first flat offset of
                                   top-level layer i's tensors */
    double loss0;               /* of the first pass */
    struct cnn_rng pick;        /* draws the entries */
    const struct cnn_gradcheck_opts *o;
    struct cnn_gradcheck_result *res;
    bool nomem;
};

/* --- the passes ------------------------------------------------------------ */

/* The loss with layers first.. run again (earlier activations kept). */
static double loss_from(struct check *c, int first)
{
    struct cnn_net *net = c->net;
    net->dropout_rng = c->rng_at[first];
    struct cnn_fwd_ctx ctx = {.train = true, .rng = &net->dropout_rng};
    for (int i = first; i < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i];
        l->kind->forward(l, net->acts[i], net->acts[i + 1], c->n, &ctx);
    }
    return cnn_loss(c->loss, net->acts[net->n_layers], c->labels, c->n, c->k,
                    NULL, NULL);
}

/* Forward, keeping the dropout stream's state at each layer, then
 * backward: net->grads holds the analytic gradient. */
static void first_pass(struct check *c)
{
    struct cnn_net *net = c->net;
    int L = net->n_layers;
    struct cnn_fwd_ctx ctx = {.train = true, .rng = &net->dropout_rng};
    for (int i = 0; i < L; i++) {
        c->rng_at[i] = net->dropout_rng;
        struct cnn_layer *l = &net->layers[i];
        l->kind->forward(l, net->acts[i], net->acts[i + 1], c->n, &ctx);
    }
    c->rng_at[L] = net->dropout_rng;

    float *dout = net->dacts[L];
    cnn_net_zero_grad(net);
    c->loss0 = cnn_loss(c->loss, net->acts[L], c->labels, c->n, c->k, dout,
                        NULL);
    cnn_net_backward(net, dout, c->n);
}

/* The top-level layer whose tensors hold flat offset off. */
static int owner(const struct check *c, size_t off)
{
    int i = 0;
    while (i + 1 < c->net->n_layers && c->starts[i + 1] <= off)
        i++;
    return i;
}

/* --- one entry --------------------------------------------------------------- */

/* Central difference at step about h; the step taken is the one float
 * rounding allows, *taken gets half of it. */
static double central(struct check *c, float *w, int first, double h,
                      double *taken)
{
    float w0 = *w;
    float up = (float)(w0 + h), down = (float)(w0 - h);
    *w = up;
    double lp = loss_from(c, first);
    *w = down;
    double lm = loss_from(c, first);
    *w = w0;
    *taken = ((double)up - down) / 2;
    return (lp - lm) / ((double)up - down);
}

/* The smallest derivative a difference over half-step h resolves. */
static double resolution(const struct check *c, double h)
{
    double ulps = getenv("GCULPS") ? atof(getenv("GCULPS")) : LOSS_ULPS;
    double loss_eps = ulps * FLT_EPSILON * fmax(fabs(c->loss0), 1.0);
    return fmax(loss_eps / h, c->scale_floor);
}

static double rel_error(double a, double n, double floor)
{
    return fabs(a - n) / fmax(fabs(a) + fabs(n), floor);
}

struct verdict {
    double error;               /* the best of the tries */
    double numeric;             /* at that try */
    bool settled;
};

/* Compares the analytic derivative a of entry w with differences at
 * shrinking steps; passes at the first step that agrees. An entry that
 * agrees at none is settled (a real mismatch) when two successive steps
 * agree with each other, unsettled (a kink or noise) otherwise. */
static struct verdict compare(struct check *c, float *w, int first, double a)
{
    double tol = c->o->tolerance;
    double h = STEP * fmax(fabs(*w), 1.0), prev = NAN, prev_floor = 0;
    struct verdict v = {.error = INFINITY, .numeric = NAN};
    for (int t = 0; t < TRIES; t++, h *= SHRINK) {
        double taken;
        double n = central(c, w, first, h, &taken);
        double floor = resolution(c, taken);
        double e = rel_error(a, n, floor);
        if (e < v.error) {
            v.error = e;
            v.numeric = n;
        }
        if (e <= tol) {
            v.settled = true;
            return v;
        }
        if (t > 0 && rel_error(prev, n, fmax(floor, prev_floor)) <= tol)
            v.settled = true;
        prev = n;
        prev_floor = floor;
    }
    return v;
}

/* --- the layers ------------------------------------------------------------- */

static char *copy_prefix(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

/* The result row of the layer holding tensor name, appended when it is
 * not the last one. */
static struct cnn_gradcheck_layer *layer_row(struct check *c,
                                             const char *name,
                                             const char *suffix)
{
    struct cnn_gradcheck_result *r = c->res;
    size_t len = strlen(name) - strlen(suffix) - 1;
    struct cnn_gradcheck_layer *last = r->n_layers > 0
        ? &r->layers[r->n_layers - 1] : NULL;
    if (last && strlen(last->name) == len &&
        strncmp(last->name, name, len) == 0)
        return last;

    last = &r->layers[r->n_layers];
    memset(last, 0, sizeof *last);
    last->name = copy_prefix(name, len);
    if (!last->name)
        return NULL;
    last->pass = true;
    r->n_layers++;
    return last;
}

/* Up to k distinct indices below count into idx; returns how many. */
static int draw_entries(struct check *c, size_t count, size_t *idx)
{
    int k = c->o->entries;
    if (count <= (size_t)k) {
        for (size_t i = 0; i < count; i++)
            idx[i] = i;
        return (int)count;
    }
    for (int i = 0; i < k; i++) {
        bool again;
        do {
            idx[i] = (size_t)(cnn_rng_next(&c->pick) % count);
            again = false;
            for (int j = 0; j < i; j++)
                again |= idx[j] == idx[i];
        } while (again);
    }
    return k;
}

static void note_worst(struct cnn_gradcheck_layer *row, const char *suffix,
                       size_t index, double a, const struct verdict *v,
                       bool *nomem)
{
    row->worst = v->error;
    row->worst_index = index;
    row->worst_analytic = a;
    row->worst_numeric = v->numeric;
    free(row->worst_tensor);
    row->worst_tensor = strdup(suffix);
    *nomem |= !row->worst_tensor;
}

static void check_tensor(void *ctx, const char *name, struct cnn_param *p)
{
    struct check *c = ctx;
    if (c->nomem || p->kind == CNN_PARAM_BUFFER)
        return;
    struct cnn_gradcheck_layer *row = layer_row(c, name, p->suffix);
    size_t *idx = malloc((size_t)c->o->entries * sizeof *idx);
    if (!row || !idx) {
        free(idx);
        c->nomem = true;
        return;
    }

    int first = owner(c, (size_t)(p->data - c->net->params));
    int n = draw_entries(c, p->count, idx);
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)p->grad[idx[i]] * p->grad[idx[i]];
    c->scale_floor = (getenv("GCFRAC") ? atof(getenv("GCFRAC")) : 0) * sqrt(ss / n);
    row->tensors++;
    for (int i = 0; i < n; i++) {
        double a = p->grad[idx[i]];
        struct verdict v = compare(c, &p->data[idx[i]], first, a);
        row->entries++;
        if (!v.settled && v.error > c->o->tolerance) {
            row->unsettled++;
            continue;
        }
        if (v.error > row->worst || !row->worst_tensor)
            note_worst(row, p->suffix, idx[i], a, &v, &c->nomem);
    }
    free(idx);
    /* The last evaluation left the later activations at a perturbed
     * weight; the next tensor starts from them. */
    loss_from(c, first);
}

/* A layer fails on a mismatch, or when too few of its entries settled to
 * say anything. */
static void judge(struct cnn_gradcheck_result *r, double tol)
{
    r->pass = true;
    for (int i = 0; i < r->n_layers; i++) {
        struct cnn_gradcheck_layer *l = &r->layers[i];
        l->pass = l->worst <= tol && 2 * l->unsettled <= l->entries;
        r->pass &= l->pass;
    }
}

/* --- set-up ------------------------------------------------------------------ */

static void random_batch(struct check *c)
{
    struct cnn_rng rng;
    cnn_rng_seed(&rng, c->o->seed, CNN_RNG_STREAM_AUGMENT, 7);
    float *x = cnn_net_input(c->net);
    for (size_t i = 0, N = (size_t)c->n * cnn_shape_size(c->net->in); i < N;
         i++)
        x[i] = cnn_rng_normal(&rng);
    for (int i = 0; i < c->n; i++)
        c->labels[i] = (int)cnn_rng_below(&rng, (uint32_t)c->k);
    cnn_rng_seed(&c->pick, c->o->seed, CNN_RNG_STREAM_AUGMENT, 8);
}

static bool allocate(struct check *c)
{
    int L = c->net->n_layers;
    int tensors = cnn_net_count_tensors(c->net);
    c->labels = malloc((size_t)c->n * sizeof *c->labels);
    c->rng_at = malloc((size_t)(L + 1) * sizeof *c->rng_at);
    c->starts = malloc((size_t)(L + 1) * sizeof *c->starts);
    c->res->layers = calloc(tensors > 0 ? (size_t)tensors : 1,
                            sizeof *c->res->layers);
    if (!c->labels || !c->rng_at || !c->starts || !c->res->layers)
        return false;
    c->starts[0] = 0;
    for (int i = 0; i < L; i++)
        c->starts[i + 1] = c->starts[i] +
                           cnn_layer_param_count(&c->net->layers[i], NULL);
    return true;
}

enum cnn_status cnn_gradcheck_run(struct cnn_net *net, enum cnn_loss_kind loss,
                                  const struct cnn_gradcheck_opts *opts,
                                  struct cnn_gradcheck_result *res,
                                  struct cnn_error *err)
{
    memset(res, 0, sizeof *res);
    struct check c = {.net = net, .loss = loss, .n = net->batch,
                      .k = (int)cnn_shape_size(net->out), .o = opts,
                      .res = res};
    res->n_examples = c.n;
    c.nomem = !allocate(&c);
    if (!c.nomem) {
        random_batch(&c);
        first_pass(&c);
        cnn_net_each_param(net, check_tensor, &c);
    }
    free(c.labels);
    free(c.rng_at);
    free(c.starts);
    if (c.nomem) {
        cnn_gradcheck_free(res);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the "
                             "gradient check");
    }
    judge(res, opts->tolerance);
    return CNN_OK;
}

void cnn_gradcheck_free(struct cnn_gradcheck_result *res)
{
    if (!res)
        return;
    for (int i = 0; res->layers && i < res->n_layers; i++) {
        free(res->layers[i].name);
        free(res->layers[i].worst_tensor);
    }
    free(res->layers);
    memset(res, 0, sizeof *res);
}
