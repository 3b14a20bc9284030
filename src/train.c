/*
 * The run: session set-up (data, model, optimizer, all checked before
 * anything touches the disk), then the loop with its checkpoints, resume,
 * stopping rules and non-finite handling.
 */
#include "cnn/train.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnn/checkpoint.h"
#include "cnn/dist.h"
#include "cnn/gradstats.h"
#include "cnn/loss.h"
#include "cnn/ops.h"
#include "cnn/rng.h"
#include "cnn/rundir.h"
#include "cnn/safetensors.h"
#include "cnn_version.h"

/* --- session ------------------------------------------------------------ */

enum cnn_status cnn_config_input_shape(const struct cnn_config *cfg,
                                       struct cnn_shape *shape,
                                       struct cnn_error *err)
{
    if (cfg->input_c > 0) {
        *shape = (struct cnn_shape){cfg->input_c, cfg->input_h, cfg->input_w};
        return CNN_OK;
    }
    return cnn_data_peek_shape(cfg, shape, err);
}

static bool same_shape(struct cnn_shape a, struct cnn_shape b)
{
    return a.c == b.c && a.h == b.h && a.w == b.w;
}

/* The file a split is named by in messages. */
static const char *split_file(const struct cnn_split_config *split)
{
    return split->images ? split->images : split->files[0];
}

static enum cnn_status check_fit(struct cnn_session *s, struct cnn_error *err)
{
    struct cnn_config *cfg = s->cfg;
    bool trained = s->train.n > 0;
    struct cnn_shape in = trained ? s->train.shape : s->test.shape;
    struct cnn_layer *last = &s->net.layers[s->net.n_layers - 1];
    const char *train_file = split_file(&cfg->data.train);
    const char *test_file = cnn_split_given(&cfg->data.test)
                                ? split_file(&cfg->data.test) : train_file;

    if (cfg->input_c > 0 &&
        !same_shape(in, (struct cnn_shape){cfg->input_c, cfg->input_h,
                                           cfg->input_w}))
        return cnn_error_at(err, CNN_ERR_DATA, trained ? train_file
                                                       : test_file,
                            "examples are %dx%dx%d but model.input is "
                            "[%d, %d, %d]", in.c, in.h, in.w, cfg->input_c,
                            cfg->input_h, cfg->input_w);
    if (trained && s->test.n > 0 && !same_shape(in, s->test.shape))
        return cnn_error_at(err, CNN_ERR_DATA, test_file,
                            "test examples are %dx%dx%d but training "
                            "examples are %dx%dx%d", s->test.shape.c,
                            s->test.shape.h, s->test.shape.w, in.c, in.h,
                            in.w);
    if (!cnn_shape_is_flat(s->net.out))
        return cnn_node_error(err, last->node, "the last layer, %s, outputs "
                              "%dx%dx%d; a %s ends in one value per %s "
                              "(e.g. '- dense: {units: %d}')", last->name,
                              s->net.out.c, s->net.out.h, s->net.out.w,
                              s->regression ? "regression" : "classifier",
                              s->regression ? "target" : "class",
                              s->regression ? 1 : 10);

    s->n_classes = s->net.out.c;
    const struct cnn_dataset *sets[2] = {trained ? &s->train : &s->test,
                                         &s->test};
    const struct cnn_split_config *split[2] = {
        trained ? &cfg->data.train : &cfg->data.test, &cfg->data.test};
    const char *files[2] = {trained ? train_file : test_file, test_file};
    for (int i = 0; i < 2; i++)     /* labels live in their own IDX file */
        if (split[i]->labels)
            files[i] = split[i]->labels;
    for (int i = 0; i < 2; i++) {
        const struct cnn_dataset *ds = sets[i];
        if (ds->n == 0)
            continue;
        if (s->regression && ds->n_targets != s->n_classes)
            return cnn_error_at(err, CNN_ERR_DATA, files[i], "has %d target "
                                "column%s but the model's last layer, %s, "
                                "outputs %d values", ds->n_targets,
                                ds->n_targets == 1 ? "" : "s", last->name,
                                s->n_classes);
        if (!s->regression && ds->n_classes > s->n_classes)
            return cnn_error_at(err, CNN_ERR_DATA, files[i], "has labels up "
                                "to %d but the model's last layer, %s, "
                                "outputs %d values", ds->n_classes - 1,
                                last->name, s->n_classes);
    }
    return CNN_OK;
}

/* The training data and the splits held out of it: a test split when
 * data.test_split asks (and no test file is given), then a validation
 * split of what is left. Each is a pure function of the seed. */
static enum cnn_status load_train(struct cnn_session *s, bool keep_train,
                                  struct cnn_error *err)
{
    const struct cnn_data_config *d = &s->cfg->data;
    enum cnn_status st = cnn_data_load(&s->train, s->cfg, &d->train, NULL,
                                       d->limit_train, err);
    if (st == CNN_OK && d->test_split > 0)
        st = cnn_dataset_split(&s->train, d->test_split, s->cfg->seed,
                               CNN_RNG_STREAM_TEST_SPLIT, &s->test, err);
    if (st == CNN_OK && d->val_split > 0 && keep_train)
        st = cnn_dataset_split(&s->train, d->val_split, s->cfg->seed,
                               CNN_RNG_STREAM_VAL_SPLIT, &s->val, err);
    if (st == CNN_OK && s->train.n == 0)
        st = cnn_error_at(err, CNN_ERR_DATA, split_file(&d->train), "no "
                          "training examples left after the held-out "
                          "splits");
    return st;
}

/* The test split of an IDX dataset, read on a thread of its own while
 * the training split is read: the two files' decompression is most of
 * a run's start-up. (Other formats may read the training split's
 * columns first, and a held-out test split is cut from it.) */
struct test_load {
    struct cnn_session *s;
    enum cnn_status st;
    struct cnn_error err;
};

static void *load_test(void *arg)
{
    struct test_load *t = arg;
    const struct cnn_data_config *d = &t->s->cfg->data;
    t->st = cnn_data_load(&t->s->test, t->s->cfg, &d->test, NULL,
                          d->limit_test, &t->err);
    return NULL;
}

static enum cnn_status load_data(struct cnn_session *s, struct cnn_error *err)
{
    const struct cnn_data_config *d = &s->cfg->data;
    bool test = cnn_split_given(&d->test);
    struct test_load t = {.s = s};
    pthread_t th;
    bool beside = test && d->format == CNN_FORMAT_IDX && d->test_split <= 0 &&
                  pthread_create(&th, NULL, load_test, &t) == 0;
    enum cnn_status st = load_train(s, true, err);
    if (beside) {
        pthread_join(th, NULL);
        if (st == CNN_OK && t.st != CNN_OK) {
            *err = t.err;
            st = t.st;
        }
    } else if (st == CNN_OK && test) {
        st = cnn_data_load(&s->test, s->cfg, &d->test, &s->train,
                           d->limit_test, err);
    }
    return st;
}

enum cnn_status cnn_session_open(struct cnn_session *s, struct cnn_config *cfg,
                                 struct cnn_error *err)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->regression = cfg->data.task == CNN_TASK_REGRESS;
    const struct cnn_data_config *d = &cfg->data;
    struct cnn_net_opts opts = {
        .checkpoint = cfg->training.checkpoint_activations,
        .bf16 = cfg->training.bf16};

    double t0 = cnn_now();
    enum cnn_status st = load_data(s, err);
    if (st == CNN_OK)
        st = cnn_norm_setup(&s->norm, d, &s->train, err);
    double t1 = cnn_now();
    s->data_seconds = t1 - t0;
    /* Each rank of an MPI job holds its share of the global batch. */
    int ranks = cnn_dist_size();
    if (st == CNN_OK && cfg->training.batch_size < ranks)
        st = cnn_error_set(err, CNN_ERR_CONFIG, "training.batch_size %lld "
                           "is smaller than the job's %d ranks: each needs "
                           "an example of every batch",
                           cfg->training.batch_size, ranks);
    int batch = (int)((cfg->training.batch_size + ranks - 1) / ranks);
    if (st == CNN_OK)
        st = cnn_net_build_opts(&s->net, cfg->model_layers, s->train.shape,
                                batch, &opts, err);
    if (st == CNN_OK)
        st = check_fit(s, err);
    if (st == CNN_OK) {
        cnn_net_init_params(&s->net, cfg->seed);
        int n_groups;
        struct cnn_param_group *groups = cnn_net_param_groups(&s->net,
                                                              &n_groups);
        st = groups ? cnn_optim_create(&s->optim, cfg->optim.node, groups,
                                       n_groups, s->net.n_params, err)
                    : cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        free(groups);
    }
    s->build_seconds = cnn_now() - t1;
    if (st != CNN_OK)
        cnn_session_close(s);
    return st;
}

enum cnn_status cnn_session_open_eval(struct cnn_session *s,
                                      struct cnn_config *cfg,
                                      const struct cnn_norm *norm,
                                      const struct cnn_dataset *classes,
                                      struct cnn_error *err)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->regression = cfg->data.task == CNN_TASK_REGRESS;
    s->norm = *norm;
    const struct cnn_data_config *d = &cfg->data;
    struct cnn_net_opts opts = {
        .checkpoint = cfg->training.checkpoint_activations,
        .bf16 = cfg->training.bf16};
    /* A held-out test split is read from the training data; a test file
     * is read with the training class names, from the weights. */
    enum cnn_status st = CNN_OK;
    if (!cnn_split_given(&d->test) && d->test_split == 0)
        st = cnn_error_set(err, CNN_ERR_CONFIG, "the config has no test "
                           "split (data.test or data.test_split) to "
                           "evaluate on");
    else if (d->test_split > 0)
        st = load_train(s, false, err);
    else
        st = cnn_data_load(&s->test, cfg, &d->test, classes, d->limit_test,
                           err);
    cnn_dataset_free(&s->train);
    if (st == CNN_OK && norm->c != 1 && norm->c != s->test.shape.c)
        st = cnn_error_at(err, CNN_ERR_DATA, split_file(&d->test), "%d "
                          "channels, but the weights were trained on %d",
                          s->test.shape.c, norm->c);
    if (st == CNN_OK && norm->n_feat &&
        (size_t)norm->n_feat != cnn_shape_size(s->test.shape))
        st = cnn_error_set(err, CNN_ERR_DATA, "the test examples have %zu "
                           "values, but the weights were standardized over "
                           "%d", cnn_shape_size(s->test.shape), norm->n_feat);
    if (st == CNN_OK)
        st = cnn_net_build_opts(&s->net, cfg->model_layers, s->test.shape,
                                (int)cfg->training.batch_size, &opts, err);
    if (st == CNN_OK)
        st = check_fit(s, err);
    if (st != CNN_OK)
        cnn_session_close(s);
    return st;
}

void cnn_session_close(struct cnn_session *s)
{
    if (!s)
        return;
    cnn_optim_free(&s->optim);
    cnn_net_free(&s->net);
    cnn_dataset_free(&s->train);
    cnn_dataset_free(&s->test);
    cnn_dataset_free(&s->val);
    cnn_norm_free(&s->norm);
    s->cfg = NULL;
}

/* --- evaluation ----------------------------------------------------------- */

/* Squared and absolute errors in target units, summed per target, with
 * the sums R² needs. */
struct reg_sums {
    double sq, abs;
    double *t, *t2, *res;       /* per target: sum t, sum t^2, sum (y-t)^2 */
};

static void add_regression(struct reg_sums *r, const struct cnn_norm *norm,
                           const float *out, const float *targets, int n,
                           int k, float *y, float *t)
{
    for (int i = 0; i < n; i++) {
        memcpy(y, out + (size_t)i * k, (size_t)k * sizeof *y);
        memcpy(t, targets + (size_t)i * k, (size_t)k * sizeof *t);
        cnn_norm_unscale_targets(norm, y, k);
        cnn_norm_unscale_targets(norm, t, k);
        for (int j = 0; j < k; j++) {
            double d = (double)y[j] - t[j];
            r->sq += d * d;
            r->abs += fabs(d);
            r->t[j] += t[j];
            r->t2[j] += (double)t[j] * t[j];
            r->res[j] += d * d;
        }
    }
}

/* MSE, RMSE, MAE over all targets; R² per target, averaged. */
static struct cnn_regression_metrics regression_result(
    const struct reg_sums *r, long long n, int k)
{
    struct cnn_regression_metrics m;
    double count = (double)n * k;
    m.mse = r->sq / count;
    m.rmse = sqrt(m.mse);
    m.mae = r->abs / count;
    m.r2 = 0.0;
    for (int j = 0; j < k; j++) {
        double mean = r->t[j] / (double)n;
        double total = r->t2[j] - (double)n * mean * mean;
        m.r2 += total > 0 ? 1.0 - r->res[j] / total : NAN;
    }
    m.r2 /= k;
    return m;
}

/* Sums the ranks' shares of an evaluation. */
static void reduce_evaluation(double *total, long long *correct,
                              struct reg_sums *r, int k, long long *confusion)
{
    size_t n = 4 + 3 * (size_t)k + (confusion ? (size_t)k * k : 0);
    double *v = malloc(n * sizeof *v);
    if (!v)
        cnn_dist_abort(1);      /* the ranks cannot go on apart */
    v[0] = *total, v[1] = (double)*correct, v[2] = r->sq, v[3] = r->abs;
    memcpy(v + 4, r->t, 3 * (size_t)k * sizeof *v);
    for (size_t i = 0; confusion && i < (size_t)k * k; i++)
        v[4 + 3 * k + i] = (double)confusion[i];
    cnn_dist_sum_doubles(v, n);
    /* Rank 0's figures for all: the rules that follow them (best
     * weights, early stopping, plateau) must decide alike everywhere. */
    cnn_dist_bcast_doubles(v, n, 0);
    *total = v[0], *correct = (long long)v[1], r->sq = v[2], r->abs = v[3];
    memcpy(r->t, v + 4, 3 * (size_t)k * sizeof *v);
    for (size_t i = 0; confusion && i < (size_t)k * k; i++)
        confusion[i] = (long long)v[4 + 3 * k + i];
    free(v);
}

void cnn_evaluate(struct cnn_session *s, const struct cnn_dataset *ds,
                  struct cnn_eval *ev, long long *confusion)
{
    struct cnn_loader ld;
    int k = s->n_classes, batch = s->net.batch, ranks = cnn_dist_size();
    int *labels = malloc((size_t)batch * sizeof *labels);
    float *targets = malloc((size_t)batch * k * sizeof *targets);
    float *y = malloc((size_t)k * 2 * sizeof *y);
    struct reg_sums r = {0};
    r.t = calloc((size_t)k * 3, sizeof *r.t);
    ev->loss = ev->acc = NAN;
    ev->reg = (struct cnn_regression_metrics){NAN, NAN, NAN, NAN};
    /* Under MPI each rank evaluates its shard of every batch. */
    if (!labels || !targets || !y || !r.t ||
        cnn_loader_init(&ld, ds, &s->norm, batch * ranks, 0, NULL) != CNN_OK) {
        free(labels), free(targets), free(y), free(r.t);
        if (ranks > 1)
            cnn_dist_abort(1);  /* the others are in the evaluation */
        return;
    }
    ld.shard = cnn_dist_rank();
    ld.n_shards = ranks;
    r.t2 = r.t + k;
    r.res = r.t + 2 * k;
    if (confusion)
        memset(confusion, 0, (size_t)k * k * sizeof *confusion);

    double total = 0.0;
    long long correct = 0;
    int n;
    while ((n = cnn_loader_next(&ld, cnn_net_input(&s->net), labels,
                                targets)) > 0 || ld.last_total > 0) {
        if (n == 0)
            continue;
        const float *out = cnn_net_forward(&s->net, n, false);
        if (s->regression) {
            total += cnn_loss_mse(out, targets, n, k, NULL) * n;
            add_regression(&r, &s->norm, out, targets, n, k, y, y + k);
            continue;
        }
        total += cnn_loss(s->cfg->training.loss, out, labels, n, k, NULL,
                          &correct) * n;
        for (int i = 0; confusion && i < n; i++) {
            const float *z = out + (size_t)i * k;
            int best = 0;
            for (int j = 1; j < k; j++)
                best = z[j] > z[best] ? j : best;
            confusion[(size_t)labels[i] * k + best]++;
        }
    }
    if (ranks > 1)
        reduce_evaluation(&total, &correct, &r, k, confusion);
    ev->loss = total / (double)ds->n;
    if (s->regression)
        ev->reg = regression_result(&r, ds->n, k);
    else
        ev->acc = (double)correct / (double)ds->n;
    cnn_loader_free(&ld);
    free(labels), free(targets), free(y), free(r.t);
}

/* --- the loop's state ------------------------------------------------------ */

struct loop {
    struct cnn_session *s;
    const struct cnn_train_opts *opts;
    struct cnn_log *log;
    struct cnn_rundir rd;
    FILE *metrics;
    struct cnn_gradstats gs;        /* grad_stats.csv and its warnings */
    int rank, ranks;                /* of an MPI job; 0 and 1 without */
    bool writer;                    /* rank 0: the one that writes files */
    char resumed_from[4200];        /* the checkpoint restored, if any */
    char *config_text;              /* the resolved config, emitted */
    struct cnn_loader loader;
    struct cnn_schedule schedule;
    struct cnn_run_state rs;        /* what checkpoints carry */
    int *labels;
    float *targets;                 /* regression: [batch, outputs] */
    struct cnn_eval val;            /* the last validation, if any */
    struct cnn_regression_metrics test_reg;     /* the last test figures */
    long long total_steps, steps_per_epoch;
    double t0;                      /* this process's start */
    double seconds0;                /* rs.train_seconds at t0 */
    double interval_t0;
    double epoch_t0, data_s;        /* this epoch's steps (since the start
                                       or resume) and its batch loading */
    bool reposition;                /* the loader must go to rs's place */
};

static double train_seconds(const struct loop *L)
{
    return L->seconds0 + (cnn_now() - L->t0);
}

static const struct cnn_training_config *tcfg(const struct loop *L)
{
    return &L->s->cfg->training;
}

/* --- metrics and progress ----------------------------------------------------- */

static void log_interval(struct loop *L)
{
    struct cnn_run_state *rs = &L->rs;
    double now = cnn_now();
    struct cnn_metrics_row r = cnn_metrics_row_empty(rs->epoch + 1, rs->step);
    r.lr = rs->last_lr;
    r.elapsed_s = train_seconds(L);
    r.skipped_steps = (double)rs->skipped_steps;
    if (rs->sum_examples > 0) {     /* else every step was skipped */
        r.train_loss = rs->sum_loss / (double)rs->sum_examples;
        r.train_acc = L->s->regression ? NAN : (double)rs->sum_correct /
                                               (double)rs->sum_examples;
        r.images_per_s = (double)rs->sum_examples / (now - L->interval_t0);
        r.grad_norm = rs->sum_norm / (double)rs->interval_steps;
        rs->final_train_loss = r.train_loss;
    }
    cnn_metrics_write(L->metrics, &r);

    char acc[32] = "";
    if (!isnan(r.train_acc))
        snprintf(acc, sizeof acc, " acc=%.4f", r.train_acc);
    cnn_log_step(L->log, "epoch=%lld step=%lld loss=%.4f%s lr=%.4g "
                 "grad_norm=%.4g images_per_s=%.0f elapsed_s=%.1f",
                 rs->epoch + 1, rs->step, r.train_loss, acc, r.lr,
                 r.grad_norm, r.images_per_s, r.elapsed_s);
    rs->sum_loss = rs->sum_norm = 0;
    rs->sum_correct = rs->sum_examples = rs->interval_steps = 0;
    L->interval_t0 = now;
}

static void show_progress(struct loop *L, double loss)
{
    double elapsed = cnn_now() - L->t0;
    long long left = L->total_steps - L->rs.step;
    double per_step = L->rs.step > 0 ? train_seconds(L) / L->rs.step : 0;
    double eta = per_step * (double)(left > 0 ? left : 0);
    cnn_log_progress(L->log, false, "epoch %lld/%lld  step %lld/%lld  "
                     "loss %.4f  %.0f img/s  ETA %02d:%02d",
                     L->rs.epoch + 1, tcfg(L)->epochs, L->rs.step,
                     L->total_steps, loss,
                     elapsed > 0 ? L->rs.examples / elapsed : 0.0,
                     (int)(eta / 60), (int)eta % 60);
}

/* --- checkpoints ------------------------------------------------------------- */

static void average_buffer(void *ctx, const char *name, struct cnn_param *p)
{
    (void)name;
    const struct loop *L = ctx;
    if (p->kind != CNN_PARAM_BUFFER)
        return;
    cnn_dist_sum_floats(p->data, p->count);
    for (size_t i = 0; i < p->count; i++)
        p->data[i] /= (float)L->ranks;
}

/* Running statistics are each rank's own (unless batchnorm syncs): their
 * mean over the ranks is what gets saved and evaluated with. */
static void sync_buffers(struct loop *L)
{
    if (L->ranks > 1)
        cnn_net_each_param(&L->s->net, average_buffer, L);
}

/* What one rank's failure means for all: every rank returns an error,
 * the failing one its own, so none waits on the others forever. */
static enum cnn_status agree(struct loop *L, enum cnn_status st,
                             struct cnn_error *err)
{
    if (L->ranks > 1 && cnn_dist_any(st != CNN_OK) && st == CNN_OK)
        st = cnn_error_echo(err);
    return st;
}

static enum cnn_status save_checkpoint(struct loop *L, struct cnn_error *err)
{
    sync_buffers(L);
    if (!L->writer)
        return agree(L, CNN_OK, err);
    char path[4200];
    fflush(L->metrics);
    L->rs.metrics_bytes = ftell(L->metrics);
    long long grad_bytes = cnn_gradstats_bytes(&L->gs);
    if (grad_bytes >= 0)    /* else it stays where the file was left */
        L->rs.grad_stats_bytes = grad_bytes;
    L->rs.train_seconds = train_seconds(L);
    cnn_rundir_checkpoint_path(&L->rd, L->rs.step, path, sizeof path);
    enum cnn_status st = cnn_checkpoint_save(path, &L->s->net, &L->s->optim,
                                             &L->schedule, &L->rs,
                                             L->config_text, err);
    if (st == CNN_OK)
        cnn_rundir_prune(&L->rd, tcfg(L)->keep_checkpoints);
    return agree(L, st, err);
}

/* Brings metrics.csv back to what it held when rs was saved, so a resumed
 * run has no duplicated rows. */
static enum cnn_status rewind_metrics(struct loop *L, struct cnn_error *err)
{
    char path[4200];
    cnn_rundir_file(&L->rd, "metrics.csv", path, sizeof path);
    if (L->metrics)
        fclose(L->metrics);
    L->metrics = NULL;
    if (access(path, F_OK) != 0) {
        /* A checkpoint brought from elsewhere: the curve starts here. */
        cnn_log_warn(L->log, "%s: missing; starting a new one at step %lld",
                     path, L->rs.step);
        if (!(L->metrics = cnn_metrics_open(path)))
            return cnn_error_at(err, CNN_ERR_IO, path, "cannot create: %s",
                                strerror(errno));
        return CNN_OK;
    }
    if (truncate(path, (off_t)L->rs.metrics_bytes) != 0)
        return cnn_error_at(err, CNN_ERR_IO, path, "cannot rewind to the "
                            "checkpoint: %s", strerror(errno));
    if (!(L->metrics = fopen(path, "a")) || fseek(L->metrics, 0, SEEK_END))
        return cnn_error_at(err, CNN_ERR_IO, path, "cannot open: %s",
                            strerror(errno));
    return CNN_OK;
}

/* The same for grad_stats.csv (started afresh when the checkpoint knew
 * none). */
static enum cnn_status open_grad_stats(struct loop *L, struct cnn_error *err)
{
    char path[4200];
    cnn_rundir_file(&L->rd, "grad_stats.csv", path, sizeof path);
    return cnn_gradstats_open(&L->gs, path, L->rs.grad_stats_bytes, L->log,
                              err);
}

static void print_difference(void *ctx, const char *path, const char *old,
                             const char *new_value)
{
    struct loop *L = ctx;
    cnn_log_warn(L->log, "config differs from the checkpoint's: %s: %s -> %s",
                 path, old ? old : "(absent)", new_value ? new_value
                                                         : "(absent)");
}

static void show_config_changes(struct loop *L, const char *saved)
{
    struct cnn_config old;
    struct cnn_error ignore = {0};
    if (saved && cnn_config_load_string(&old, saved, "checkpoint", ".",
                                        &ignore) == CNN_OK)
        cnn_config_diff(old.root, L->s->cfg->root, print_difference, L);
    cnn_config_free(&old);
}

/* Loads the checkpoint at path into the session and the loop. */
static enum cnn_status restore(struct loop *L, const char *path,
                               bool show_changes, struct cnn_error *err)
{
    char *saved = NULL;
    enum cnn_status st = cnn_checkpoint_load(path, &L->s->net, &L->s->optim,
                                             &L->schedule, &L->rs, &saved,
                                             err);
    if (st == CNN_OK && show_changes)
        show_config_changes(L, saved);
    free(saved);
    if (st != CNN_OK)
        return st;
    L->seconds0 = L->rs.train_seconds;
    L->t0 = L->interval_t0 = cnn_now();
    L->reposition = true;
    snprintf(L->resumed_from, sizeof L->resumed_from, "%s", path);
    if (!L->writer)
        return CNN_OK;
    st = rewind_metrics(L, err);
    return st == CNN_OK ? open_grad_stats(L, err) : st;
}

/* Going back to an older checkpoint abandons the newer ones: without
 * this, pruning would keep them and drop the new run's own. */
static void drop_checkpoints_after(struct loop *L, long long step)
{
    long long steps[4096];
    char path[4200];
    int n = cnn_rundir_checkpoints(&L->rd, steps, 4096);
    for (int i = 0; i < n; i++) {
        if (steps[i] <= step)
            continue;
        cnn_rundir_checkpoint_path(&L->rd, steps[i], path, sizeof path);
        cnn_log_warn(L->log, "%s: newer than the checkpoint resumed; "
                     "removed", path);
        unlink(path);
    }
}

/* The checkpoint --resume continues from: the one named, or the newest
 * that loads, falling back past damaged ones with a warning. Sets *found
 * false when the directory has none. */
static enum cnn_status resume(struct loop *L, bool *found,
                              struct cnn_error *err)
{
    const char *given = L->opts->resume_path;
    *found = true;
    if (given) {
        cnn_log_info(L->log, "resuming from %s", given);
        enum cnn_status st = restore(L, given, true, err);
        if (st == CNN_OK)
            drop_checkpoints_after(L, L->rs.step);
        return st;
    }

    long long steps[4096];
    int n = cnn_rundir_checkpoints(&L->rd, steps, 4096);
    char path[4200];
    for (int i = 0; i < n; i++) {
        cnn_rundir_checkpoint_path(&L->rd, steps[i], path, sizeof path);
        struct cnn_error why = {0};
        if (restore(L, path, true, &why) == CNN_OK) {
            cnn_log_info(L->log, "resuming from %s: step %lld, %lld examples "
                         "into epoch %lld%s", path, L->rs.step,
                         L->rs.epoch_pos, L->rs.epoch + 1,
                         L->rs.done ? " (the run had finished)" : "");
            return CNN_OK;
        }
        if (why.status != CNN_ERR_DATA) {   /* a mismatch, not damage */
            *err = why;
            return why.status;
        }
        cnn_log_warn(L->log, "%s: %s; trying the previous checkpoint",
                     why.where, why.message);
    }
    *found = false;
    if (n > 0)
        return cnn_error_at(err, CNN_ERR_DATA, L->rd.path, "no checkpoint "
                            "here loads (%d tried)", n);
    return CNN_OK;
}

/* --- non-finite values ---------------------------------------------------------- */

static bool all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return false;
    return true;
}

/* The first layer whose output, or else the last whose gradient, holds a
 * non-finite value: where the trouble appeared. */
static bool all_finite16(const uint16_t *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((x[i] & 0x7f80u) == 0x7f80u)    /* exponent all ones */
            return false;
    return true;
}

static const char *culprit(const struct cnn_net *net, int n)
{
    for (int i = 0; i < net->n_layers; i++) {
        size_t count = (size_t)n * cnn_shape_size(net->layers[i].out);
        /* bf16: the kept outputs; the float buffers are shared. */
        if (net->bf16 ? !all_finite16(net->acts16[i + 1], count)
                      : !all_finite(net->acts[i + 1], count))
            return net->layers[i].name;
    }
    for (int i = net->n_layers - 1; i >= 0; i--) {
        const struct cnn_layer *l = &net->layers[i];
        for (int j = 0; j < l->n_params; j++)
            if (!all_finite(l->params[j].grad, l->params[j].count))
                return l->name;
    }
    return net->layers[0].name;
}

/* --- one step -------------------------------------------------------------------- */

/* Forward and backward of one micro-batch of n examples; adds n times
 * its mean-loss gradient to the net's gradients, so accumulated
 * micro-batches (and the shards of the ranks) sum to the gradient of
 * their total. *loss_sum gets n * loss (non-finite when the loss is). A
 * rank whose shard of a short last batch is empty has nothing to do. */
static void micro_batch(struct loop *L, int n, double *loss_sum,
                        long long *correct)
{
    struct cnn_session *s = L->s;
    float *dout = s->net.dacts[s->net.n_layers];
    if (n == 0) {                   /* still votes, as the others do */
        if (L->ranks > 1)
            cnn_dist_any(false);
        return;
    }
    const float *out = cnn_net_forward(&s->net, n, true);
    double loss = s->regression
        ? cnn_loss_mse(out, L->targets, n, s->n_classes, dout)
        : cnn_loss(tcfg(L)->loss, out, L->labels, n, s->n_classes, dout,
                   correct);
    *loss_sum += loss * n;
    /* Ranks skip the backward pass together: synced batchnorm sums
     * across them in it. */
    bool bad = !isfinite(loss);
    if (L->ranks > 1 ? cnn_dist_any(bad) : bad)
        return;
    /* bf16: the loss scaled up, so small gradients do not round away. */
    float mult = tcfg(L)->accumulate > 1 || L->ranks > 1 ? (float)n : 1.0f;
    if (tcfg(L)->bf16)
        mult *= (float)L->rs.loss_scale;
    if (mult != 1.0f)
        for (size_t i = 0, N = (size_t)n * s->n_classes; i < N; i++)
            dout[i] *= mult;
    cnn_net_backward(&s->net, dout, n);
}

/* Dynamic loss scaling (bf16): halved at each overflow (the step is
 * skipped), doubled after this many good steps in a row, up to 2^24. */
enum { SCALE_GROWTH_STEPS = 2000 };
static const double MAX_LOSS_SCALE = 16777216.0;

enum step_result { STEP_DONE, STEP_EPOCH_END, STEP_NONFINITE, STEP_OVERFLOW };

/* A bf16 step whose gradients overflowed at the current loss scale. */
static enum step_result overflowed(struct loop *L)
{
    struct cnn_run_state *rs = &L->rs;
    rs->skipped_steps++;
    rs->scale_good = 0;
    rs->loss_scale /= 2;
    if (rs->skipped_steps <= 10 || rs->skipped_steps % 100 == 0)
        cnn_log_warn(L->log, "gradients overflowed at step %lld; step "
                     "skipped, loss scale now %g", rs->step + 1,
                     rs->loss_scale);
    return STEP_OVERFLOW;
}

/* One optimizer step over training.accumulate micro-batches (fewer at
 * the end of the epoch). */
static enum step_result train_step(struct loop *L, const char **where)
{
    struct cnn_session *s = L->s;
    struct cnn_run_state *rs = &L->rs;
    double loss_sum = 0.0;
    long long correct = 0, total = 0;
    int last_n = 0;

    cnn_net_zero_grad(&s->net);
    for (long long a = 0; a < tcfg(L)->accumulate; a++) {
        double t = cnn_now();
        int n = cnn_loader_next(&L->loader, cnn_net_input(&s->net), L->labels,
                                L->targets);
        L->data_s += cnn_now() - t;
        /* Under MPI every rank needs an example of each batch (synced
         * batchnorm sums over all of them): a last batch smaller than
         * the job is left out, as PyTorch's samplers do. */
        if (L->loader.last_total == 0 ||
            (L->ranks > 1 && L->loader.last_total < L->ranks))
            break;
        micro_batch(L, n, &loss_sum, &correct);
        total += L->loader.last_total;      /* over all ranks */
        last_n = n;
        /* One rank alone must not stop early: the ranks would part. */
        if (!isfinite(loss_sum) && L->ranks == 1)
            break;
    }
    rs->epoch_pos = L->loader.pos;
    if (total == 0)
        return STEP_EPOCH_END;
    if (L->ranks > 1) {             /* the whole batch's loss and hits */
        double sums[2] = {loss_sum, (double)correct};
        cnn_dist_sum_doubles(sums, 2);
        loss_sum = sums[0];
        correct = (long long)sums[1];
    }

    double norm = NAN;
    if (isfinite(loss_sum)) {
        cnn_dist_sum_floats(s->net.grads, s->net.n_params);
        float div = tcfg(L)->accumulate > 1 || L->ranks > 1 ? (float)total
                                                            : 1.0f;
        if (tcfg(L)->bf16)
            div *= (float)rs->loss_scale;
        if (div != 1.0f)
            for (size_t i = 0; i < s->net.n_params; i++)
                s->net.grads[i] /= div;
        rs->last_lr = cnn_schedule_lr(&L->schedule, rs->step, rs->epoch) *
                      rs->lr_factor;
        cnn_gradstats_before(&L->gs, &s->net, rs->step + 1);
        norm = cnn_optim_step(&s->optim, s->net.params, s->net.grads,
                              (float)rs->last_lr);
        if (isfinite(norm))
            cnn_gradstats_after(&L->gs, &s->net, rs->step + 1, rs->epoch + 1,
                                L->log);
    }
    rs->examples += total;
    if (!isfinite(norm) && isfinite(loss_sum) && tcfg(L)->bf16 &&
        rs->loss_scale > 1.0)
        return overflowed(L);
    if (!isfinite(norm)) {
        *where = culprit(&s->net, last_n);
        return STEP_NONFINITE;
    }
    if (tcfg(L)->bf16 && ++rs->scale_good >= SCALE_GROWTH_STEPS &&
        rs->loss_scale < MAX_LOSS_SCALE) {
        rs->loss_scale *= 2;
        rs->scale_good = 0;
    }

    rs->step++;
    rs->sum_loss += loss_sum;
    rs->sum_norm += norm;
    rs->sum_correct += correct;
    rs->sum_examples += total;
    rs->interval_steps++;
    show_progress(L, loss_sum / (double)total);
    return STEP_DONE;
}

static enum cnn_status on_nonfinite(struct loop *L, const char *where,
                                    struct cnn_error *err)
{
    const struct cnn_training_config *t = tcfg(L);
    struct cnn_run_state *rs = &L->rs;
    char what[256];
    snprintf(what, sizeof what, "non-finite loss or gradient at step %lld "
             "(epoch %lld), first in layer %s", rs->step + 1, rs->epoch + 1,
             where);

    if (t->on_nan == CNN_ON_NAN_SKIP) {
        rs->skipped_steps++;
        /* The first ten, then one in a hundred: counts are in metrics.csv. */
        if (rs->skipped_steps <= 10 || rs->skipped_steps % 100 == 0)
            cnn_log_warn(L->log, "%s; step skipped (%lld so far)", what,
                         rs->skipped_steps);
        if ((rs->step + rs->skipped_steps) % t->log_every == 0)
            log_interval(L);
        return CNN_OK;
    }
    if (t->on_nan == CNN_ON_NAN_ROLLBACK && rs->rollbacks < t->max_rollbacks) {
        long long rollbacks = rs->rollbacks + 1;
        double factor = rs->lr_factor * 0.5;
        long long steps[1];
        char path[4200] = "";
        /* Rank 0 picks the checkpoint; every rank restores it. */
        int found = L->writer && cnn_rundir_checkpoints(&L->rd, steps, 1) == 1;
        if (found)
            cnn_rundir_checkpoint_path(&L->rd, steps[0], path, sizeof path);
        cnn_dist_bcast_int(&found, 0);
        cnn_dist_bcast_string(path, sizeof path, 0);
        if (found) {
            enum cnn_status st = agree(L, restore(L, path, false, err), err);
            if (st != CNN_OK)
                return st;
            rs->rollbacks = rollbacks;
            rs->lr_factor = factor;
            cnn_log_warn(L->log, "%s; rolled back to step %lld with the "
                         "learning rate times %g (rollback %lld of %lld)",
                         what, rs->step, factor, rollbacks, t->max_rollbacks);
            return CNN_OK;
        }
    }
    cnn_error_set(err, CNN_ERR_NONFINITE, "%s; stopping, the last good "
                  "checkpoint is kept", what);
    cnn_error_hint(err, "lower optimizer.lr, add optimizer.clip_norm, or set "
                   "training.on_nan: skip or rollback");
    return CNN_ERR_NONFINITE;
}

/* --- epochs, evaluation and stopping rules --------------------------------------- */

/* The value a rule follows, lower being better: the held-out metrics
 * come from the validation split when there is one, else the test split;
 * regression has no accuracy and follows the loss. */
static double metric_value(const struct loop *L, enum cnn_metric m)
{
    const struct cnn_run_state *rs = &L->rs;
    bool val = L->s->val.n > 0;
    if (m == CNN_METRIC_TEST_ACC && L->s->regression)
        m = CNN_METRIC_TEST_LOSS;
    switch (m) {
    case CNN_METRIC_TEST_ACC:
        return -(val ? L->val.acc : rs->test_acc);
    case CNN_METRIC_TEST_LOSS:
        return val ? L->val.loss : rs->test_loss;
    default:
        return rs->final_train_loss;
    }
}

/* Without a held-out split, best.safetensors follows the training loss. */
static enum cnn_metric effective(const struct cnn_session *s,
                                 enum cnn_metric m)
{
    return s->test.n > 0 || s->val.n > 0 ? m : CNN_METRIC_TRAIN_LOSS;
}

/* "v0,v1,..." of n floats, malloc'd; NULL when out of memory. */
static char *float_list(const float *v, int n)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%.9g", i ? "," : "", v[i]);
    return fclose(f) == 0 ? buf : (free(buf), NULL);
}

/* Class names joined by newlines (names hold none), malloc'd. */
static char *name_list(char *const *names, int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(names[i]) + 1;
    char *buf = malloc(len), *p = buf;
    for (int i = 0; buf && i < n; i++)
        p += sprintf(p, "%s%s", i ? "\n" : "", names[i]);
    if (buf)
        *p = '\0';
    return buf;
}

static enum cnn_status save_weights(struct loop *L, const char *name,
                                    struct cnn_error *err)
{
    struct cnn_session *s = L->s;
    const struct cnn_norm *nm = &s->norm;
    char path[4200], steps[32], acc[32], shape[64];
    cnn_rundir_file(&L->rd, name, path, sizeof path);
    snprintf(steps, sizeof steps, "%lld", L->rs.step);
    snprintf(acc, sizeof acc, "%.6f", L->rs.test_acc);
    snprintf(shape, sizeof shape, "%d,%d,%d", s->net.in.c, s->net.in.h,
             s->net.in.w);
    enum { LISTS = 7 };
    char *list[LISTS] = {
        float_list(nm->mean, nm->c), float_list(nm->std, nm->c),
        float_list(nm->feat_mean, nm->n_feat),
        float_list(nm->feat_std, nm->n_feat),
        float_list(nm->target_mean, nm->n_target),
        float_list(nm->target_std, nm->n_target),
        name_list(s->train.class_names, s->train.n_class_names),
    };
    struct cnn_meta meta[16] = {
        {"format", "pt"},
        {"producer", "cnn-train " CNN_VERSION},
        {"config", L->config_text},
        {"steps", steps},
        {"test_acc", acc},
        {"input_shape", shape},
        {"normalize_mean", list[0]},
        {"normalize_std", list[1]},
    };
    int n = 8;
    if (nm->n_feat) {
        meta[n++] = (struct cnn_meta){"standardize_mean", list[2]};
        meta[n++] = (struct cnn_meta){"standardize_std", list[3]};
    }
    if (nm->n_target) {
        meta[n++] = (struct cnn_meta){"target_mean", list[4]};
        meta[n++] = (struct cnn_meta){"target_std", list[5]};
    }
    if (s->train.n_class_names)
        meta[n++] = (struct cnn_meta){"classes", list[6]};
    enum cnn_status st = CNN_OK;
    for (int i = 0; i < LISTS; i++)
        if (!list[i])
            st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    if (st == CNN_OK)
        st = cnn_safetensors_save(path, &s->net, meta, n, err);
    for (int i = 0; i < LISTS; i++)
        free(list[i]);
    return st;
}

/* "0.286,0.5" -> *v (malloc'd), *n values; false when malformed. */
static bool parse_floats(const char *text, float **v, int *n)
{
    int cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    *v = malloc((size_t)cap * sizeof **v);
    *n = 0;
    for (const char *p = text; *v && *p;) {
        char *end;
        float x = strtof(p, &end);
        if (end == p || (*end && *end != ',') || !isfinite(x))
            return false;
        (*v)[(*n)++] = x;
        p = *end ? end + 1 : end;
    }
    return *v != NULL;
}

/* Reads the pair of lists keys[0], keys[1] into mean, std; *n 0 when the
 * weights lack them. */
static enum cnn_status meta_pair(const struct cnn_st_file *f,
                                 const char *const keys[2], float **mean,
                                 float **std, int *n, struct cnn_error *err)
{
    const char *a = cnn_st_meta(f, keys[0]), *b = cnn_st_meta(f, keys[1]);
    int na = 0, nb = 0;
    *mean = *std = NULL;
    *n = 0;
    if (!a && !b)
        return CNN_OK;
    if (!a || !b || !parse_floats(a, mean, &na) ||
        !parse_floats(b, std, &nb) || na != nb) {
        free(*mean), free(*std);
        *mean = *std = NULL;
        return cnn_error_at(err, CNN_ERR_DATA, f->path, "malformed %s/%s "
                            "metadata", keys[0], keys[1]);
    }
    for (int i = 0; i < na; i++)
        if (!((*std)[i] > 0)) {
            double bad = (*std)[i];
            free(*mean), free(*std);
            *mean = *std = NULL;
            return cnn_error_at(err, CNN_ERR_DATA, f->path, "%s: a "
                                "deviation of %g", keys[1], bad);
        }
    *n = na;
    return CNN_OK;
}

enum cnn_status cnn_weights_transform(const struct cnn_st_file *f,
                                      const struct cnn_config *cfg,
                                      struct cnn_norm *norm,
                                      struct cnn_dataset *classes,
                                      struct cnn_error *err)
{
    static const char *const channel[2] = {"normalize_mean", "normalize_std"};
    static const char *const feature[2] = {"standardize_mean",
                                           "standardize_std"};
    static const char *const target[2] = {"target_mean", "target_std"};
    float *mean, *std;
    int n;
    memset(norm, 0, sizeof *norm);
    memset(classes, 0, sizeof *classes);

    enum cnn_status st = meta_pair(f, channel, &mean, &std, &n, err);
    if (st == CNN_OK && n > CNN_MAX_CHANNELS)
        st = cnn_error_at(err, CNN_ERR_DATA, f->path, "normalize_mean has "
                          "%d channels", n);
    if (st == CNN_OK && n > 0) {
        norm->c = n;
        memcpy(norm->mean, mean, (size_t)n * sizeof *mean);
        memcpy(norm->std, std, (size_t)n * sizeof *std);
    } else if (st == CNN_OK && cfg->data.normalize_auto) {
        st = cnn_error_at(err, CNN_ERR_DATA, f->path, "no normalization in "
                          "the metadata, and the config computes it from "
                          "the training set");
    } else if (st == CNN_OK) {      /* weights of an older version */
        norm->c = cfg->data.n_mean ? cfg->data.n_mean : 1;
        for (int c = 0; c < norm->c; c++) {
            norm->mean[c] = cfg->data.n_mean ? cfg->data.mean[c] : 0.0f;
            norm->std[c] = cfg->data.n_std ? cfg->data.std[c] : 1.0f;
        }
    }
    free(mean), free(std);
    if (st == CNN_OK)
        st = meta_pair(f, feature, &norm->feat_mean, &norm->feat_std,
                       &norm->n_feat, err);
    if (st == CNN_OK)
        st = meta_pair(f, target, &norm->target_mean, &norm->target_std,
                       &norm->n_target, err);

    const char *names = cnn_st_meta(f, "classes");
    if (st == CNN_OK && names && *names) {
        int k = 1;
        for (const char *p = names; *p; p++)
            k += *p == '\n' && p[1];      /* a final newline ends no name */
        classes->class_names = calloc((size_t)k, sizeof *classes->class_names);
        for (const char *p = names; classes->class_names && *p;) {
            size_t len = strcspn(p, "\n");
            char *one = strndup(p, len);
            if (!one)
                break;
            classes->class_names[classes->n_class_names++] = one;
            p += len + (p[len] == '\n');
        }
        classes->n_classes = classes->n_class_names;
        if (classes->n_class_names != k)
            st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    if (st != CNN_OK) {
        cnn_norm_free(norm);
        cnn_dataset_free(classes);
    }
    return st;
}

/* The epoch's evaluation row: validation and test splits, and for
 * regression the training split's figures in target units too. */
static void evaluate_splits(struct loop *L)
{
    struct cnn_session *s = L->s;
    struct cnn_run_state *rs = &L->rs;
    struct cnn_metrics_row r = cnn_metrics_row_empty(rs->epoch + 1, rs->step);
    double steps_s = cnn_now() - L->epoch_t0;
    char line[512];
    int len = snprintf(line, sizeof line, "epoch %lld/%lld:", rs->epoch + 1,
                       tcfg(L)->epochs);
    if (s->regression) {
        struct cnn_eval train;
        cnn_evaluate(s, &s->train, &train, NULL);
        r.train_reg = train.reg;
        len += snprintf(line + len, sizeof line - len, " train_rmse=%.4g "
                        "train_r2=%.4f", train.reg.rmse, train.reg.r2);
    }
    if (s->val.n > 0) {
        cnn_evaluate(s, &s->val, &L->val, NULL);
        r.val_loss = L->val.loss;
        r.val_acc = L->val.acc;
        r.val_reg = L->val.reg;
        len += s->regression
            ? snprintf(line + len, sizeof line - len, " val_rmse=%.4g "
                       "val_r2=%.4f", L->val.reg.rmse, L->val.reg.r2)
            : snprintf(line + len, sizeof line - len, " val_loss=%.4f "
                       "val_acc=%.4f", L->val.loss, L->val.acc);
    }
    if (s->test.n > 0) {
        struct cnn_eval test;
        cnn_evaluate(s, &s->test, &test, NULL);
        rs->test_loss = r.test_loss = test.loss;
        rs->test_acc = r.test_acc = test.acc;
        r.test_reg = test.reg;
        if (!s->regression && (isnan(rs->best_test_acc) ||
                               rs->test_acc > rs->best_test_acc)) {
            rs->best_test_acc = rs->test_acc;
            rs->best_test_epoch = rs->epoch + 1;
        }
        len += s->regression
            ? snprintf(line + len, sizeof line - len, " test_rmse=%.4g "
                       "test_mae=%.4g test_r2=%.4f", test.reg.rmse,
                       test.reg.mae, test.reg.r2)
            : snprintf(line + len, sizeof line - len, " test_loss=%.4f "
                       "test_acc=%.4f", test.loss, test.acc);
        L->test_reg = test.reg;
    }
    r.elapsed_s = train_seconds(L);
    cnn_metrics_write(L->metrics, &r);
    cnn_log_info(L->log, "%s (%.1f s; data %.1f%% of the epoch)", line,
                 r.elapsed_s, steps_s > 0 ? 100.0 * L->data_s / steps_s : 0.0);
}

/* Evaluates, writes the metrics row, and updates best.safetensors, the
 * plateau schedule and early stopping. *stop is set when early stopping
 * ends the run. */
static enum cnn_status end_epoch(struct loop *L, bool *stop,
                                 struct cnn_error *err)
{
    struct cnn_session *s = L->s;
    struct cnn_run_state *rs = &L->rs;
    const struct cnn_training_config *t = tcfg(L);
    if (rs->interval_steps > 0)
        log_interval(L);

    sync_buffers(L);
    if (s->test.n > 0 || s->val.n > 0)
        evaluate_splits(L);
    /* best.safetensors follows best_metric; early stopping its own. */
    double m = metric_value(L, effective(s, t->best_metric));
    if (isfinite(m) && (isnan(rs->best_metric) || m < rs->best_metric)) {
        rs->best_metric = m;
        enum cnn_status st = L->writer ? save_weights(L, "best.safetensors",
                                                      err)
                                       : CNN_OK;
        if ((st = agree(L, st, err)) != CNN_OK)
            return st;
    }
    *stop = false;
    if (t->early_stopping) {
        double e = metric_value(L, t->stop_metric);
        if (isfinite(e) && (isnan(rs->stop_best) ||
                            e < rs->stop_best - t->min_delta)) {
            rs->stop_best = e;
            rs->stale_epochs = 0;
        } else {
            rs->stale_epochs++;
        }
        *stop = rs->stale_epochs > t->patience;
        if (*stop)
            cnn_log_info(L->log, "early stopping: no improvement for %lld "
                         "epochs", rs->stale_epochs);
    }

    double plateau = metric_value(L, effective(s, CNN_METRIC_TEST_LOSS));
    if (cnn_schedule_epoch_end(&L->schedule, plateau))
        cnn_log_info(L->log, "plateau: learning rate now %.4g",
                     cnn_schedule_lr(&L->schedule, rs->step, rs->epoch + 1));
    return CNN_OK;
}

static bool over_budget(const struct loop *L)
{
    const struct cnn_training_config *t = tcfg(L);
    return (t->max_steps > 0 && L->rs.step >= t->max_steps) ||
           (t->max_time > 0 && train_seconds(L) >= t->max_time);
}

/* The same, agreed by all ranks: their clocks differ a little, so the
 * first to run out decides. */
static bool budget_spent(const struct loop *L)
{
    bool spent = over_budget(L);
    return tcfg(L)->max_time > 0 && L->ranks > 1 ? cnn_dist_any(spent)
                                                 : spent;
}

/* A signal reaches each rank of a job by itself: the ranks act on it
 * together, at the same step, when any has it. */
static bool signalled(const struct loop *L, volatile sig_atomic_t *flag)
{
    bool mine = flag && *flag;
    return L->ranks > 1 ? cnn_dist_any(mine) : mine;
}

/* Runs until the run is done (OK), stopped by a signal (CNN_STOPPED) or
 * failed. */
static enum cnn_status loop_run(struct loop *L, struct cnn_error *err)
{
    const struct cnn_training_config *t = tcfg(L);
    struct cnn_run_state *rs = &L->rs;
    enum cnn_status st = CNN_OK;

    while (st == CNN_OK && !rs->done) {
        if (L->reposition) {
            cnn_loader_start_epoch(&L->loader, rs->epoch, true);
            L->loader.pos = rs->epoch_pos;
            L->reposition = false;
            L->epoch_t0 = cnn_now();
            L->data_s = 0;
        }
        if (signalled(L, L->opts->stop)) {
            st = save_checkpoint(L, err);
            return st == CNN_OK ? cnn_error_set(err, CNN_STOPPED, "stopped by "
                                                "a signal at step %lld; "
                                                "checkpoint written",
                                                rs->step) : st;
        }
        if (signalled(L, L->opts->save_now)) {
            if (L->opts->save_now)
                *L->opts->save_now = 0;
            st = save_checkpoint(L, err);
            cnn_log_info(L->log, "checkpoint at step %lld (SIGHUP)", rs->step);
            continue;
        }

        bool stop = false;
        if (budget_spent(L)) {
            if (t->max_time > 0 && train_seconds(L) >= t->max_time)
                cnn_log_info(L->log, "time budget of %.0f s spent",
                             t->max_time);
            st = end_epoch(L, &stop, err);
            rs->done = true;
            break;
        }

        const char *where = NULL;
        enum step_result r = train_step(L, &where);
        if (r == STEP_NONFINITE) {
            st = on_nonfinite(L, where, err);
            continue;
        }
        if (r == STEP_OVERFLOW)
            continue;
        if (r == STEP_EPOCH_END) {
            st = end_epoch(L, &stop, err);
            rs->epoch++;
            rs->epoch_pos = 0;
            L->reposition = true;
            rs->done = stop || rs->epoch >= t->epochs;
            if (st == CNN_OK && !rs->done)
                st = save_checkpoint(L, err);
            continue;
        }
        if (rs->step % t->log_every == 0)
            log_interval(L);
        if (t->checkpoint_every > 0 && rs->step % t->checkpoint_every == 0)
            st = save_checkpoint(L, err);
    }
    return st;
}

/* --- the end of a run ---------------------------------------------------------------- */

static void json_number(FILE *f, const char *key, double v, bool last)
{
    if (isfinite(v))
        fprintf(f, "  \"%s\": %.10g%s\n", key, v, last ? "" : ",");
    else
        fprintf(f, "  \"%s\": null%s\n", key, last ? "" : ",");
}

/* run.json: the figures `compare` shows, written once a run finished. */
static enum cnn_status write_run_json(struct loop *L, double images_per_s,
                                      struct cnn_error *err)
{
    struct cnn_session *s = L->s;
    const struct cnn_run_state *rs = &L->rs;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");

    fputs("{\n  \"name\": ", f);
    cnn_json_string(f, s->cfg->name);
    fputs(",\n  \"optimizer\": ", f);
    cnn_json_string(f, s->optim.name);
    fputs(",\n", f);
    json_number(f, "lr", s->cfg->optim.lr, false);
    json_number(f, "epochs", (double)(rs->epoch_pos > 0 ? rs->epoch + 1
                                                        : rs->epoch), false);
    json_number(f, "steps", (double)rs->step, false);
    json_number(f, "seconds", rs->train_seconds, false);
    json_number(f, "images_per_s", images_per_s, false);
    json_number(f, "final_train_loss", rs->final_train_loss, false);
    json_number(f, "final_test_acc", rs->test_acc, false);
    json_number(f, "best_test_acc", rs->best_test_acc, false);
    json_number(f, "best_epoch", isnan(rs->best_test_acc) ? NAN
                                 : (double)rs->best_test_epoch, false);
    json_number(f, "final_test_rmse", L->test_reg.rmse, false);
    json_number(f, "final_test_mae", L->test_reg.mae, false);
    json_number(f, "final_test_r2", L->test_reg.r2, false);
    json_number(f, "params", (double)s->net.n_params, false);
    json_number(f, "optimizer_state_bytes",
                (double)cnn_optim_state_bytes(&s->optim), true);
    fputs("}\n", f);
    if (fclose(f) != 0) {
        free(buf);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }

    char path[4200];
    cnn_rundir_file(&L->rd, "run.json", path, sizeof path);
    enum cnn_status st = cnn_write_atomic(path, buf, len, err);
    free(buf);
    return st;
}

static enum cnn_status finish(struct loop *L, struct cnn_train_result *res,
                              struct cnn_error *err)
{
    struct cnn_run_state *rs = &L->rs;
    double seconds = cnn_now() - L->t0;
    double images_per_s = seconds > 0 ? rs->examples / train_seconds(L) : 0;
    enum cnn_status st = save_checkpoint(L, err);
    if (st == CNN_OK && L->writer)
        st = save_weights(L, "model.safetensors", err);
    if (st == CNN_OK && L->writer)
        st = write_run_json(L, images_per_s, err);
    st = agree(L, st, err);
    res->steps = rs->step;
    res->epochs = rs->epoch;
    res->test_loss = rs->test_loss;
    res->test_acc = rs->test_acc;
    res->best_test_acc = rs->best_test_acc;
    res->best_epoch = rs->best_test_epoch;
    res->final_train_loss = rs->final_train_loss;
    res->seconds = rs->train_seconds;
    res->images_per_s = images_per_s;
    if (st == CNN_OK)
        cnn_log_info(L->log, "done: %lld steps in %.1f s of training; "
                     "%s=%.4f; weights in %s/model.safetensors", rs->step,
                     rs->train_seconds, L->s->regression ? "test_r2"
                                                         : "test_acc",
                     L->s->regression ? L->test_reg.r2 : rs->test_acc,
                     L->rd.path);
    return st;
}

/* --- starting: fresh, resumed, or already complete ----------------------------- */

static bool same_file_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    size_t len = strlen(text);
    char *buf = malloc(len + 2);
    size_t got = buf ? fread(buf, 1, len + 1, f) : 0;
    fclose(f);
    bool same = buf && got == len && memcmp(buf, text, len) == 0;
    free(buf);
    return same;
}

enum start { START_FRESH, START_RESUMED, START_COMPLETE };

/* Decides how this run starts, given what the directory holds. */
static enum cnn_status decide_start(struct loop *L, enum start *how,
                                    struct cnn_error *err)
{
    const struct cnn_train_opts *o = L->opts;
    char config_path[4200];
    cnn_rundir_file(&L->rd, "config.yaml", config_path, sizeof config_path);
    long long any[1];
    bool finished = cnn_rundir_has(&L->rd, "run.json");
    bool started = finished || cnn_rundir_has(&L->rd, "metrics.csv") ||
                   cnn_rundir_checkpoints(&L->rd, any, 1) > 0;
    *how = START_FRESH;

    if (o->force) {
        cnn_rundir_clear(&L->rd);
        return CNN_OK;
    }
    if (o->resume || o->resume_path) {
        bool found;
        enum cnn_status st = resume(L, &found, err);
        if (st != CNN_OK)
            return st;
        /* Finished results without a checkpoint (an older version's run)
         * are not thrown away; a run killed before its first checkpoint
         * left nothing worth keeping and starts again. */
        bool results = finished || cnn_rundir_has(&L->rd, "model.safetensors");
        if (!found && results) {
            cnn_error_at(err, CNN_ERR_USAGE, L->rd.path, "holds a run but no "
                         "checkpoint to resume from");
            cnn_error_hint(err, "add --force to start over (its files are "
                           "replaced), or choose another --out");
            return CNN_ERR_USAGE;
        }
        if (!found) {
            cnn_log_info(L->log, "nothing to resume in %s: starting",
                         L->rd.path);
            if (started)
                cnn_rundir_clear(&L->rd);
            return CNN_OK;
        }
        *how = START_RESUMED;
        /* A finished run ends again at once unless the config now asks
         * for more (more epochs, steps or time). */
        const struct cnn_training_config *t = tcfg(L);
        bool more = L->rs.epoch < t->epochs && !over_budget(L);
        if (L->rs.done && (!more || same_file_text(config_path,
                                                   L->config_text)))
            *how = START_COMPLETE;
        L->rs.done = false;
        /* Training goes on: the old results no longer describe the run
         * (a run killed now must not look complete). */
        if (*how == START_RESUMED) {
            char path[4200];
            cnn_rundir_file(&L->rd, "run.json", path, sizeof path);
            unlink(path);
        }
        return CNN_OK;
    }
    if (finished && same_file_text(config_path, L->config_text)) {
        *how = START_COMPLETE;
        return CNN_OK;
    }
    if (!started)
        return CNN_OK;
    cnn_error_at(err, CNN_ERR_USAGE, L->rd.path, "already holds %s run; "
                 "refusing to overwrite it", finished ? "a finished"
                                                      : "an unfinished");
    cnn_error_hint(err, "add --resume to continue it, --force to start over, "
                   "or choose another --out");
    return CNN_ERR_USAGE;
}

static enum cnn_status open_outputs(struct loop *L, bool resumed,
                                    struct cnn_error *err)
{
    char path[4200];
    cnn_rundir_file(&L->rd, "config.yaml", path, sizeof path);
    enum cnn_status st = cnn_write_atomic(path, L->config_text,
                                          strlen(L->config_text), err);
    if (st != CNN_OK || resumed)
        return st;      /* restore() reopened metrics.csv already */
    cnn_rundir_file(&L->rd, "metrics.csv", path, sizeof path);
    if (!(L->metrics = cnn_metrics_open(path)))
        return cnn_error_at(err, CNN_ERR_IO, path, "cannot open: %s",
                            strerror(errno));
    return open_grad_stats(L, err);
}

static enum cnn_status prepare(struct loop *L, struct cnn_error *err)
{
    struct cnn_session *s = L->s;
    const struct cnn_training_config *t = tcfg(L);
    L->labels = malloc((size_t)t->batch_size * sizeof *L->labels);
    L->targets = malloc((size_t)t->batch_size * s->n_classes *
                        sizeof *L->targets);
    if (!L->labels || !L->targets)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    enum cnn_status st = cnn_loader_init(&L->loader, &s->train, &s->norm,
                                         (int)t->batch_size, s->cfg->seed,
                                         err);
    if (st != CNN_OK)
        return st;
    const struct cnn_augment_config *a = &s->cfg->data.augment;
    if (a->crop_pad || a->flip || a->erase_size)
        L->loader.augment = a;
    L->loader.shard = L->rank;
    L->loader.n_shards = L->ranks;
    L->steps_per_epoch = (cnn_loader_batches(&L->loader) + t->accumulate - 1) /
                         t->accumulate;
    L->total_steps = L->steps_per_epoch * t->epochs;
    if (t->max_steps > 0 && t->max_steps < L->total_steps)
        L->total_steps = t->max_steps;
    cnn_schedule_init(&L->schedule, &s->cfg->schedule, s->cfg->optim.lr,
                      L->total_steps, L->steps_per_epoch);
    cnn_run_state_init(&L->rs);
    L->test_reg = (struct cnn_regression_metrics){NAN, NAN, NAN, NAN};
    L->val.loss = L->val.acc = NAN;
    L->reposition = true;
    L->t0 = L->interval_t0 = cnn_now();
    const struct cnn_gradstats_config gc = {
        .every = L->writer ? t->log_grad_stats : 0,
        .check_every = t->log_every,
        .vanishing_ratio = t->vanishing_ratio,
        .exploding_ratio = t->exploding_ratio,
    };
    st = cnn_gradstats_init(&L->gs, &s->net, &gc, err);
    if (st != CNN_OK)
        return st;

    /* A checkpoint holds the weights and the optimizer's state; keep room
     * for two while the new one is written. */
    size_t ckpt = s->net.n_params * sizeof(float) +
                  cnn_optim_state_bytes(&s->optim) + (1u << 20);
    if (L->writer)
        st = cnn_rundir_check_space(&L->rd, 2 * ckpt, err);
    if (st == CNN_OK && !(L->config_text = cnn_config_emit_string(s->cfg)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    return st;
}

/* The other ranks start as rank 0 decided: fresh, complete, or resumed
 * from the checkpoint it restored, read by each from the shared run
 * directory. */
static enum cnn_status follow_start(struct loop *L, enum start *how,
                                    struct cnn_error *err)
{
    int h = (int)*how;
    cnn_dist_bcast_int(&h, 0);
    cnn_dist_bcast_string(L->resumed_from, sizeof L->resumed_from, 0);
    *how = (enum start)h;
    enum cnn_status st = CNN_OK;
    if (!L->writer && *how == START_RESUMED) {
        char path[sizeof L->resumed_from];
        snprintf(path, sizeof path, "%s", L->resumed_from);
        st = restore(L, path, false, err);
        if (st != CNN_OK)
            cnn_error_hint(err, "rank %d reads the checkpoints of rank 0's "
                           "run directory: it must be on a file system "
                           "every rank shares", L->rank);
        L->rs.done = false;
    }
    return agree(L, st, err);
}

enum cnn_status cnn_train_run(struct cnn_session *s,
                              const struct cnn_train_opts *opts,
                              struct cnn_log *log,
                              struct cnn_train_result *res,
                              struct cnn_error *err)
{
    struct loop L = {.s = s, .opts = opts, .log = log};
    enum start how = START_FRESH;
    char path[4200];
    memset(res, 0, sizeof *res);
    res->test_loss = res->test_acc = res->best_test_acc = NAN;
    res->final_train_loss = NAN;

    L.rank = cnn_dist_rank();
    L.ranks = cnn_dist_size();
    L.writer = L.rank == 0;
    enum cnn_status st = CNN_OK;
    if (L.writer) {
        st = cnn_rundir_open(&L.rd, opts->run_dir, err);
    } else {        /* reads checkpoints there; rank 0 holds the lock */
        snprintf(L.rd.path, sizeof L.rd.path, "%s", opts->run_dir);
        L.rd.lock_fd = -1;
    }
    if (st == CNN_OK)
        st = prepare(&L, err);
    if (st == CNN_OK && L.writer) {
        cnn_rundir_file(&L.rd, "train.log", path, sizeof path);
        if (!cnn_log_open_file(log, path))
            st = cnn_error_at(err, CNN_ERR_IO, path, "cannot open: %s",
                              strerror(errno));
    }
    if (st == CNN_OK && L.writer)
        st = decide_start(&L, &how, err);
    st = agree(&L, st, err);
    if (st == CNN_OK)
        st = follow_start(&L, &how, err);
    if (st == CNN_OK && how == START_COMPLETE) {
        cnn_log_info(log, "%s: this run is complete; nothing to do",
                     opts->run_dir);
        goto out;
    }
    if (st == CNN_OK && L.writer)
        st = open_outputs(&L, how == START_RESUMED, err);
    st = agree(&L, st, err);
    if (st != CNN_OK)
        goto out;

    cnn_log_info(log, "training %s: %zu parameters, %lld examples, %lld "
                 "steps of batch %lld x %lld, optimizer %s (%zu bytes of "
                 "state), BLAS threads %d; run directory %s", s->cfg->name,
                 s->net.n_params, s->train.n, L.total_steps,
                 tcfg(&L)->batch_size, tcfg(&L)->accumulate, s->optim.name,
                 cnn_optim_state_bytes(&s->optim), cnn_blas_threads(0),
                 opts->run_dir);
    if (s->optim.note[0])
        cnn_log_warn(log, "%s", s->optim.note);
    if (how == START_FRESH)
        st = save_checkpoint(&L, err);      /* rollback target, step 0 */
    if (st == CNN_OK)
        cnn_log_info(log, "started in %.2f s: data %.2f s, model %.2f s",
                     cnn_process_seconds(), s->data_seconds,
                     s->build_seconds);
    if (st == CNN_OK)
        st = loop_run(&L, err);
    if (st == CNN_OK)
        st = finish(&L, res, err);
    if (st != CNN_OK && st != CNN_STOPPED)
        cnn_log_warn(log, "run failed: %s", err->message);
    else if (st == CNN_STOPPED)
        cnn_log_info(log, "%s", err->message);
out:
    cnn_loader_free(&L.loader);
    free(L.labels);
    free(L.targets);
    free(L.config_text);
    if (L.metrics)
        fclose(L.metrics);
    cnn_gradstats_free(&L.gs);
    cnn_rundir_close(&L.rd);
    return st;
}
