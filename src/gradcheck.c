/*
 * Finite-difference check of a net's backward pass (see gradcheck.h).
 *
 * One forward and backward pass on a random batch gives the analytic
 * gradient. Then every trained tensor is checked twice over:
 *
 * - along its own gradient: the loss at w + t u and w - t u, u the
 *   analytic gradient made unit length, against the change the
 *   gradient predicts for the steps float rounding actually took. The
 *   derivative along u is the gradient's whole norm, far above the
 *   loss's rounding, while each entry moves by a fraction of t, so this
 *   is the sharp test: a wrong scale, sign, transposition or missing
 *   term shows as a mismatch of its own size.
 * - entry by entry, for a sample: w_i + h and w_i - h. One entry moves
 *   the loss little, so these differences are as coarse as float32
 *   allows, and in a ReLU net the step may cross a kink downstream;
 *   they catch gross, local errors (a wrong border, a wrong index)
 *   under a looser limit. An entry whose one-sided differences disagree
 *   sits at a kink and cannot be settled as wrong.
 *
 * Only the layers from the one holding the tensor onward run again,
 * from the activations the first pass left, with the dropout stream set
 * back to where that layer found it, so every evaluation sees the same
 * dropout masks.
 *
 * How far a difference of two losses can be trusted is measured, per
 * tensor: tiny moves whose effect the gradient predicts exactly, up to
 * rounding, show the rounding. A derivative below what a difference
 * resolves at its step cannot be judged; such an entry or direction is
 * counted as unresolved, not as passed or failed. In a deep sigmoid
 * stack the first layers' gradients are of this kind.
 */
#include "cnn/gradcheck.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/loss.h"
#include "cnn/rng.h"

/* Steps along the gradient direction (u has unit length), tried in turn
 * until one resolves the derivative and agrees: 1e-3 keeps the kinks
 * crossed few on the shipped configs (ResNet-20's worst direction is
 * within 1e-2 there), the smaller ones trade kinks for rounding. The
 * larger ones are for a gradient too small to show clearly at those (a
 * resolution goes as 1/step); the smaller are skipped when the first
 * does not resolve it. */
static const double DIRECTION_STEPS[] = {1e-3, 3e-4, 1e-4, 1e-2, 1e-1};
enum { SMALL_STEPS = 3, DIRECTION_TRIES = 5 };

/* Steps for single entries, times max(|w|, 1). */
static const double ENTRY_STEPS[] = {1e-2, 1e-3, 1e-4};
enum { ENTRY_TRIES = 3 };

/* The rounding noise of a loss difference is measured (see
 * measure_noise): over NOISE_MOVES tiny moves of each tensor, at
 * NOISE_STEP, where curvature and kinks are negligible. A difference
 * is trusted to NOISE_SAFETY times that. */
enum { NOISE_MOVES = 4 };
static const double NOISE_STEP = 1e-5;
static const double NOISE_SAFETY = 3.0;

struct cnn_gradcheck_opts cnn_gradcheck_defaults(void)
{
    return (struct cnn_gradcheck_opts){.entries = 20, .tolerance = 1e-2,
                                       .entry_tolerance = 1e-1, .seed = 1};
}

struct check {
    struct cnn_net *net;
    enum cnn_loss_kind loss;
    int n, k;
    int *labels;                /* [n] */
    struct cnn_rng *rng_at;     /* [n_layers + 1]: dropout stream as layer
                                   i found it in the first pass */
    size_t *starts;             /* [n_layers + 1]: first flat offset of
                                   top-level layer i's tensors */
    double loss0;               /* of the first pass */
    double quantum;             /* the loss's rounding through its
                                   float logits */
    double noise;               /* rounding noise of a loss difference,
                                   for the tensor being checked */
    struct cnn_rng pick;        /* draws entries and spare directions */
    float *saved, *dir;         /* [largest tensor]: its weights, and u */
    const struct cnn_gradcheck_opts *o;
    struct cnn_gradcheck_result *res;
    bool nomem;
};

/* What one comparison came to, at the step that agreed best. */
struct verdict {
    double error;               /* relative, with the floor */
    double analytic, numeric;
    bool settled;               /* agreed, or two steps agreed together */
    bool resolved;              /* above the floor of its step */
};

/* --- the passes ---------------------------------------------------------- */

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

/* How much rounding each logit z to float moves the loss, at random:
 * no difference of two losses is good to less. dz holds dL/dz. */
static double logit_rounding(const float *z, const float *dz, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)z[i] * dz[i];
        sum += d * d;
    }
    return FLT_EPSILON * sqrt(sum);
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
    c->quantum = logit_rounding(net->acts[L], dout, (size_t)c->n * c->k);
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

/* --- judging a difference ------------------------------------------------ */

/* The smallest derivative a difference over half-step h resolves to
 * within tol: below it, the loss's rounding alone could make an error
 * of tol. */
static double resolution(const struct check *c, double h, double tol)
{
    return NOISE_SAFETY * c->noise / (2 * h) / fmax(tol, 1e-6);
}

static double rel_error(double a, double n, double floor)
{
    return fabs(a - n) / fmax(fabs(a) + fabs(n), floor);
}

/* How the tries of one comparison are weighed. */
struct weigh {
    double stop;                /* an error within it ends the tries */
    double settle;              /* an error within it settles them */
    double agree;               /* two differences this close agree */
    bool prefer_resolved;       /* a resolved try outranks a closer one */
};

/* Folds one try into v, which keeps the try with the smallest error
 * (resolved ones first, when w says so); true when this try's error is
 * within w->stop. v is settled once a try's error is within w->settle,
 * or the try agrees (w->agree) with the try before (prev; NAN for the
 * first, or when this try is not to be trusted that way): differences
 * that hold still as the step shrinks are the function's own
 * derivative, and one that disagrees with them is the gradient's error;
 * differences that move by more are crossing kinks or rounding. floor
 * is the error's, resolution the difference's own. */
static bool judge_try(struct verdict *v, const struct weigh *w, double a,
                      double n, double floor, double resolution, double prev)
{
    double e = rel_error(a, n, floor);
    bool resolved = fabs(a) + fabs(n) >= resolution;
    bool take = w->prefer_resolved && resolved != v->resolved
        ? resolved : e < v->error;
    if (take) {
        v->error = e;
        v->analytic = a;
        v->numeric = n;
        v->resolved = resolved;
    }
    if (e <= w->settle ||
        (!isnan(prev) && rel_error(prev, n, floor) <= w->agree))
        v->settled = true;
    return e <= w->stop;
}

/* --- one entry ----------------------------------------------------------- */

/* The differences of the loss in one entry at one step. */
struct difference {
    double central;
    double forward, backward;   /* one-sided, from the unmoved loss */
    double half;                /* half the step float rounding took */
};

/* Differences of the loss in entry w at step about h. The unmoved loss
 * is the first pass's: the same layers on the same values give the same
 * floats. */
static struct difference differences(struct check *c, float *w, int first,
                                     double h)
{
    float w0 = *w;
    float up = (float)(w0 + h), down = (float)(w0 - h);
    *w = up;
    double lp = loss_from(c, first);
    *w = down;
    double lm = loss_from(c, first);
    *w = w0;
    return (struct difference){
        .central = (lp - lm) / ((double)up - down),
        .forward = (lp - c->loss0) / ((double)up - w0),
        .backward = (c->loss0 - lm) / ((double)w0 - down),
        .half = ((double)up - down) / 2,
    };
}

/* Entry w against its analytic derivative a at shrinking steps, until
 * one agrees. Below scale (the tensor's typical derivative) the error
 * is measured against scale: such entries are judged on the tensor's
 * terms, not their own, which float32 cannot resolve.
 *
 * A ReLU kink (or max-pool tie) closer to w than the step makes the
 * central difference the mean of two slopes, steady as the step shrinks
 * until it passes the kink: the one-sided differences then disagree, and
 * such a try cannot settle the entry as wrong. */
static struct verdict compare_entry(struct check *c, float *w, int first,
                                    double a, double scale)
{
    struct verdict v = {.error = INFINITY, .numeric = NAN};
    /* Tried on while short of a quarter of the tolerance, so the error
     * shown is near the best float32 gives without every entry taking
     * every step; a larger step is no better for resolving more (it
     * crosses more kinks). */
    const struct weigh how = {.stop = c->o->entry_tolerance / 4,
                              .settle = c->o->entry_tolerance,
                              .agree = c->o->tolerance};
    double prev = NAN;
    for (int t = 0; t < ENTRY_TRIES; t++) {
        double h = ENTRY_STEPS[t] * fmax(fabs(*w), 1.0);
        struct difference d = differences(c, w, first, h);
        double floor = resolution(c, d.half, how.settle);
        /* One-sided differences carry twice the rounding. */
        bool smooth = rel_error(d.forward, d.backward,
                                fmax(2 * floor, scale)) <= how.agree;
        if (judge_try(&v, &how, a, d.central, fmax(floor, scale), floor,
                      smooth ? prev : NAN))
            break;
        prev = d.central;
    }
    return v;
}

/* --- one direction ------------------------------------------------------- */

/* u: a random direction of unit length over count entries. */
static void random_direction(struct check *c, size_t count)
{
    double sum = 0;
    for (size_t i = 0; i < count; i++) {
        c->dir[i] = cnn_rng_normal(&c->pick);
        sum += (double)c->dir[i] * c->dir[i];
    }
    for (size_t i = 0; i < count; i++)
        c->dir[i] = (float)(c->dir[i] / sqrt(sum));
}

/* u: the tensor's analytic gradient at unit length; a random direction
 * when the gradient is zero (then any difference is an error). */
static void direction(struct check *c, const struct cnn_param *p)
{
    double sum = 0;
    for (size_t i = 0; i < p->count; i++)
        sum += (double)p->grad[i] * p->grad[i];
    if (sum == 0) {
        random_direction(c, p->count);
        return;
    }
    double norm = sqrt(sum);
    for (size_t i = 0; i < p->count; i++)
        c->dir[i] = (float)(p->grad[i] / norm);
}

/* Moves the tensor to w + sign t u as float rounds it; returns the
 * change the analytic gradient predicts for that move. */
static double move(struct check *c, struct cnn_param *p, double t, int sign)
{
    double predicted = 0;
    for (size_t i = 0; i < p->count; i++) {
        p->data[i] = (float)(c->saved[i] + sign * t * c->dir[i]);
        predicted += (double)p->grad[i] * ((double)p->data[i] - c->saved[i]);
    }
    return predicted;
}

/* The rounding noise of a loss difference when p moves (it differs
 * from tensor to tensor: a move deep in a sigmoid stack is damped to
 * nothing, one near the output is not): at so small a step the loss
 * changes as the gradient predicts, to rounding, so the root mean
 * square miss over a few random directions is the noise.
 * An error in the gradient would count here too, but scaled by the
 * tiny step, far below what it does to the checks proper. */
static double measure_noise(struct check *c, struct cnn_param *p, int first)
{
    double sum = 0;
    memcpy(c->saved, p->data, p->count * sizeof *c->saved);
    for (int k = 0; k < NOISE_MOVES; k++) {
        random_direction(c, p->count);
        double predicted = move(c, p, NOISE_STEP, +1);
        double lp = loss_from(c, first);
        predicted -= move(c, p, NOISE_STEP, -1);
        double lm = loss_from(c, first);
        double miss = (lp - lm) - predicted;
        sum += miss * miss;
    }
    memcpy(p->data, c->saved, p->count * sizeof *p->data);
    loss_from(c, first);
    /* A move damped to nothing before the logits changes no float at
     * all and measures no noise; the logits' rounding still bounds what
     * larger moves resolve. */
    return fmax(sqrt(sum / NOISE_MOVES), c->quantum);
}

/* Derivatives along u, divided by 2t: the loss's difference against
 * the change the gradient predicts, at shrinking t. */
static struct verdict compare_direction(struct check *c, struct cnn_param *p,
                                        int first)
{
    struct verdict v = {.error = INFINITY, .numeric = NAN};
    const struct weigh how = {.stop = c->o->tolerance,
                              .settle = c->o->tolerance,
                              .agree = c->o->tolerance,
                              .prefer_resolved = true};
    double prev = NAN;
    memcpy(c->saved, p->data, p->count * sizeof *c->saved);
    direction(c, p);
    for (int k = 0; k < DIRECTION_TRIES; k++) {
        /* Smaller steps resolve less: unresolved, go to the larger. */
        if (k > 0 && k < SMALL_STEPS && !v.resolved)
            continue;
        double t = DIRECTION_STEPS[k];
        double a = move(c, p, t, +1);
        double lp = loss_from(c, first);
        a -= move(c, p, t, -1);
        double lm = loss_from(c, first);
        memcpy(p->data, c->saved, p->count * sizeof *p->data);

        double n = (lp - lm) / (2 * t);
        a /= 2 * t;
        double floor = resolution(c, t, how.stop);
        bool resolved = fabs(a) + fabs(n) >= floor;
        if (judge_try(&v, &how, a, n, floor, floor, prev) && resolved)
            break;
        prev = n;
    }
    return v;
}

/* --- the layers ---------------------------------------------------------- */

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
    last->name = malloc(len + 1);
    if (!last->name)
        return NULL;
    memcpy(last->name, name, len);
    last->name[len] = '\0';
    r->n_layers++;
    return last;
}

/* Up to opts->entries distinct indices below count into idx; returns
 * how many. */
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

/* Root mean square of the analytic derivatives of the drawn entries. */
static double typical(const struct cnn_param *p, const size_t *idx, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += (double)p->grad[idx[i]] * p->grad[idx[i]];
    return n > 0 ? sqrt(sum / n) : 0;
}

static void note_entry(struct cnn_gradcheck_layer *row, const char *suffix,
                       size_t index, const struct verdict *v)
{
    row->entries++;
    row->unresolved += !v->resolved;
    if (!v->settled) {
        row->unsettled++;
        return;
    }
    if (row->worst_tensor && !(v->error > row->worst_entry))
        return;
    row->worst_entry = v->error;
    row->worst_tensor = suffix;
    row->worst_index = index;
    row->worst_analytic = v->analytic;
    row->worst_numeric = v->numeric;
}

static void note_direction(struct cnn_gradcheck_layer *row,
                           const struct verdict *v)
{
    /* Below resolution the loss's rounding may make any error: such a
     * direction is counted, not judged. */
    if (!v->resolved) {
        row->unresolved_directions++;
        return;
    }
    if (v->error > row->worst_direction)
        row->worst_direction = v->error;
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
    c->noise = measure_noise(c, p, first);
    row->tensors++;
    struct verdict d = compare_direction(c, p, first);
    note_direction(row, &d);

    int n = draw_entries(c, p->count, idx);
    double scale = typical(p, idx, n);
    for (int i = 0; i < n; i++) {
        struct verdict v = compare_entry(c, &p->data[idx[i]], first,
                                         p->grad[idx[i]], scale);
        note_entry(row, p->suffix, idx[i], &v);
    }
    free(idx);
    /* The last evaluation left the later activations at a perturbed
     * weight; the next tensor starts from them. */
    loss_from(c, first);
}

/* A layer fails on a mismatch along a direction or at a settled entry,
 * or when too few of its entries settled to say anything. */
static void judge_layers(struct cnn_gradcheck_result *r,
                         const struct cnn_gradcheck_opts *o)
{
    r->pass = true;
    for (int i = 0; i < r->n_layers; i++) {
        struct cnn_gradcheck_layer *l = &r->layers[i];
        l->pass = l->worst_direction <= o->tolerance &&
                  l->worst_entry <= o->entry_tolerance &&
                  2 * l->unsettled <= l->entries;
        r->pass &= l->pass;
    }
}

/* --- set-up -------------------------------------------------------------- */

static void random_batch(struct check *c)
{
    struct cnn_rng rng;
    cnn_rng_seed(&rng, c->o->seed, CNN_RNG_STREAM_GRADCHECK, 0);
    float *x = cnn_net_input(c->net);
    for (size_t i = 0, N = (size_t)c->n * cnn_shape_size(c->net->in); i < N;
         i++)
        x[i] = cnn_rng_normal(&rng);
    for (int i = 0; i < c->n; i++)
        c->labels[i] = (int)cnn_rng_below(&rng, (uint32_t)c->k);
    cnn_rng_seed(&c->pick, c->o->seed, CNN_RNG_STREAM_GRADCHECK, 1);
}

static void largest(void *ctx, const char *name, struct cnn_param *p)
{
    size_t *max = ctx;
    *max = p->count > *max ? p->count : *max;
}

static bool allocate(struct check *c)
{
    int L = c->net->n_layers;
    int tensors = cnn_net_count_tensors(c->net);
    size_t biggest = 1;
    cnn_net_each_param(c->net, largest, &biggest);
    c->labels = malloc((size_t)c->n * sizeof *c->labels);
    c->rng_at = malloc((size_t)(L + 1) * sizeof *c->rng_at);
    c->starts = malloc((size_t)(L + 1) * sizeof *c->starts);
    c->saved = malloc(biggest * sizeof *c->saved);
    c->dir = malloc(biggest * sizeof *c->dir);
    c->res->layers = calloc(tensors > 0 ? (size_t)tensors : 1,
                            sizeof *c->res->layers);
    if (!c->labels || !c->rng_at || !c->starts || !c->saved || !c->dir ||
        !c->res->layers)
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
        res->loss = c.loss0;
        cnn_net_each_param(net, check_tensor, &c);
    }
    free(c.labels);
    free(c.rng_at);
    free(c.starts);
    free(c.saved);
    free(c.dir);
    if (c.nomem) {
        cnn_gradcheck_free(res);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the "
                             "gradient check");
    }
    judge_layers(res, opts);
    return CNN_OK;
}

void cnn_gradcheck_free(struct cnn_gradcheck_result *res)
{
    if (!res)
        return;
    for (int i = 0; res->layers && i < res->n_layers; i++)
        free(res->layers[i].name);
    free(res->layers);
    memset(res, 0, sizeof *res);
}
