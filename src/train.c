/*
 * The run: session set-up (data, model, optimizer, all checked before
 * anything touches the disk), run-directory preparation, and the loop.
 */
#include "cnn/train.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cnn/loss.h"
#include "cnn/ops.h"
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
    /* Read just the IDX header of the training images. */
    const char *path = cfg->data.train.images;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            strerror(errno));
    unsigned char h[20];
    int got = gzread(f, h, sizeof h);
    gzclose(f);
    int ndim = got >= 4 ? h[3] : 0;
    if (got < 4 + 4 * ndim || h[0] || h[1] || h[2] != 0x08 || ndim < 2 ||
        ndim > 4)
        return cnn_error_at(err, CNN_ERR_DATA, path, "not an IDX file of "
                            "unsigned bytes with 2 to 4 dimensions");
    int d[4];
    for (int i = 0; i < ndim; i++)
        d[i] = h[4 + 4 * i] << 24 | h[5 + 4 * i] << 16 | h[6 + 4 * i] << 8 |
               h[7 + 4 * i];
    if (ndim == 2)
        *shape = (struct cnn_shape){d[1], 1, 1};
    else if (ndim == 3)
        *shape = (struct cnn_shape){1, d[1], d[2]};
    else
        *shape = (struct cnn_shape){d[1], d[2], d[3]};
    return CNN_OK;
}

static bool same_shape(struct cnn_shape a, struct cnn_shape b)
{
    return a.c == b.c && a.h == b.h && a.w == b.w;
}

static enum cnn_status check_fit(struct cnn_session *s, struct cnn_error *err)
{
    struct cnn_config *cfg = s->cfg;
    struct cnn_shape in = s->train.shape;
    struct cnn_layer *last = &s->net.layers[s->net.n_layers - 1];

    if (cfg->input_c > 0 &&
        !same_shape(in, (struct cnn_shape){cfg->input_c, cfg->input_h,
                                           cfg->input_w}))
        return cnn_error_at(err, CNN_ERR_DATA, cfg->data.train.images,
                            "examples are %dx%dx%d but model.input is "
                            "[%d, %d, %d]", in.c, in.h, in.w, cfg->input_c,
                            cfg->input_h, cfg->input_w);
    if (s->test.n > 0 && !same_shape(in, s->test.shape))
        return cnn_error_at(err, CNN_ERR_DATA, cfg->data.test.images,
                            "test examples are %dx%dx%d but training "
                            "examples are %dx%dx%d", s->test.shape.c,
                            s->test.shape.h, s->test.shape.w, in.c, in.h,
                            in.w);
    if (!cnn_shape_is_flat(s->net.out))
        return cnn_node_error(err, last->node, "the last layer, %s, outputs "
                              "%dx%dx%d; a classifier ends in one value per "
                              "class (e.g. '- dense: {units: 10}')",
                              last->name, s->net.out.c, s->net.out.h,
                              s->net.out.w);

    s->n_classes = s->net.out.c;
    const struct cnn_dataset *sets[2] = {&s->train, &s->test};
    const char *files[2] = {cfg->data.train.labels, cfg->data.test.labels};
    for (int i = 0; i < 2; i++)
        if (sets[i]->n > 0 && sets[i]->n_classes > s->n_classes)
            return cnn_error_at(err, CNN_ERR_DATA, files[i], "has labels up "
                                "to %d but the model's last layer, %s, "
                                "outputs %d values", sets[i]->n_classes - 1,
                                last->name, s->n_classes);
    return CNN_OK;
}

enum cnn_status cnn_session_open(struct cnn_session *s, struct cnn_config *cfg,
                                 struct cnn_error *err)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    const struct cnn_data_config *d = &cfg->data;

    enum cnn_status st = cnn_idx_load(&s->train, d->train.images,
                                      d->train.labels, d->limit_train, err);
    if (st == CNN_OK && d->test.images)
        st = cnn_idx_load(&s->test, d->test.images, d->test.labels,
                          d->limit_test, err);
    if (st == CNN_OK)
        st = cnn_norm_setup(&s->norm, d, &s->train, err);
    if (st == CNN_OK)
        st = cnn_net_build(&s->net, cfg->model_layers, s->train.shape,
                           (int)cfg->training.batch_size, err);
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
    s->cfg = NULL;
}

/* --- evaluation ----------------------------------------------------------- */

void cnn_evaluate(struct cnn_session *s, const struct cnn_dataset *ds,
                  double *loss, double *acc)
{
    struct cnn_loader ld;
    int *labels = malloc((size_t)s->net.batch * sizeof *labels);
    if (!labels || cnn_loader_init(&ld, ds, &s->norm, s->net.batch, 0,
                                   NULL) != CNN_OK) {
        free(labels);
        *loss = *acc = NAN;
        return;
    }

    double total = 0.0;
    long long correct = 0;
    int n;
    while ((n = cnn_loader_next(&ld, cnn_net_input(&s->net), labels)) > 0) {
        const float *out = cnn_net_forward(&s->net, n, false);
        total += cnn_loss(s->cfg->training.loss, out, labels, n, s->n_classes,
                          NULL, &correct) * n;
    }
    *loss = total / (double)ds->n;
    *acc = (double)correct / (double)ds->n;
    cnn_loader_free(&ld);
    free(labels);
}

/* --- the run directory ---------------------------------------------------- */

static enum cnn_status make_dirs(const char *path, struct cnn_error *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return cnn_error_at(err, CNN_ERR_USAGE, path, "path too long");
    for (char *p = buf + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return cnn_error_at(err, CNN_ERR_IO, buf, "cannot create "
                                "directory: %s", strerror(errno));
        *p = c;
        if (!c)
            break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return cnn_error_at(err, CNN_ERR_IO, path, "not a directory");
    if (access(path, W_OK) != 0)
        return cnn_error_at(err, CNN_ERR_IO, path, "not writable: %s",
                            strerror(errno));
    return CNN_OK;
}

static void join(char *dst, size_t cap, const char *dir, const char *file)
{
    snprintf(dst, cap, "%s/%s", dir, file);
}

static enum cnn_status prepare_run_dir(const char *dir, bool force,
                                       struct cnn_error *err)
{
    static const char *const marks[] = {"metrics.csv", "model.safetensors"};
    enum cnn_status st = make_dirs(dir, err);
    if (st != CNN_OK || force)
        return st;

    char path[4200];
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        join(path, sizeof path, dir, marks[i]);
        if (access(path, F_OK) == 0) {
            cnn_error_at(err, CNN_ERR_USAGE, dir, "already holds a run (%s); "
                         "refusing to overwrite it", marks[i]);
            cnn_error_hint(err, "choose another --out, or add --force to "
                           "replace it");
            return CNN_ERR_USAGE;
        }
    }
    return CNN_OK;
}

static enum cnn_status write_config(struct cnn_session *s, const char *dir,
                                    char **text, struct cnn_error *err)
{
    char path[4200];
    join(path, sizeof path, dir, "config.yaml");
    *text = cnn_config_emit_string(s->cfg);
    if (!*text)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    return cnn_write_atomic(path, *text, strlen(*text), err);
}

/* --- the loop --------------------------------------------------------------- */

struct loop {
    struct cnn_session *s;
    struct cnn_log *log;
    FILE *metrics;
    struct cnn_loader loader;
    struct cnn_schedule schedule;
    int *labels;
    long long step, total_steps, steps_per_epoch;
    long long examples;             /* seen in training, for images/s */
    double t0;
    double last_lr;
    /* since the last metrics row */
    double sum_loss, sum_norm;
    long long sum_correct, sum_examples, interval_steps;
    double interval_t0;
};

static void log_interval(struct loop *L, long long epoch,
                         struct cnn_train_result *res)
{
    double now = cnn_now();
    struct cnn_metrics_row r = cnn_metrics_row_empty(epoch + 1, L->step);
    r.lr = L->last_lr;
    r.train_loss = L->sum_loss / (double)L->sum_examples;
    r.train_acc = (double)L->sum_correct / (double)L->sum_examples;
    r.images_per_s = (double)L->sum_examples / (now - L->interval_t0);
    r.elapsed_s = now - L->t0;
    r.grad_norm = L->sum_norm / (double)L->interval_steps;
    cnn_metrics_write(L->metrics, &r);
    res->final_train_loss = r.train_loss;

    cnn_log_step(L->log, "epoch=%lld step=%lld loss=%.4f acc=%.4f lr=%.4g "
                 "grad_norm=%.4g images_per_s=%.0f elapsed_s=%.1f",
                 epoch + 1, L->step, r.train_loss, r.train_acc, r.lr,
                 r.grad_norm, r.images_per_s, r.elapsed_s);
    L->sum_loss = L->sum_norm = 0;
    L->sum_correct = L->sum_examples = L->interval_steps = 0;
    L->interval_t0 = now;
}

static void show_progress(struct loop *L, long long epoch, double loss)
{
    double elapsed = cnn_now() - L->t0;
    double eta = L->step > 0 ? elapsed / L->step * (L->total_steps - L->step)
                             : 0.0;
    double rate = (double)L->examples / elapsed;
    cnn_log_progress(L->log, false, "epoch %lld/%lld  step %lld/%lld  "
                     "loss %.4f  %.0f img/s  ETA %02d:%02d",
                     epoch + 1, L->s->cfg->training.epochs, L->step,
                     L->total_steps, loss, rate, (int)(eta / 60),
                     (int)eta % 60);
}

/* Forward and backward of one micro-batch of n examples; adds n times
 * its mean-loss gradient to the net's gradients, so that accumulated
 * micro-batches sum to the gradient of their total. */
static enum cnn_status micro_batch(struct loop *L, int n, long long epoch,
                                   double *loss_sum, long long *correct,
                                   struct cnn_error *err)
{
    struct cnn_session *s = L->s;
    struct cnn_config *cfg = s->cfg;
    float *dout = s->net.dacts[s->net.n_layers];
    bool accumulating = cfg->training.accumulate > 1;

    const float *out = cnn_net_forward(&s->net, n, true);
    double loss = cnn_loss(cfg->training.loss, out, L->labels, n,
                           s->n_classes, dout, correct);
    if (!isfinite(loss))
        return cnn_error_set(err, CNN_ERR_RUNTIME, "the training loss became "
                             "%g at step %lld (epoch %lld); stopping",
                             loss, L->step + 1, epoch + 1);
    if (accumulating)
        for (size_t i = 0, N = (size_t)n * s->n_classes; i < N; i++)
            dout[i] *= (float)n;
    cnn_net_backward(&s->net, dout, n);
    *loss_sum += loss * n;
    return CNN_OK;
}

/* One optimizer step over training.accumulate micro-batches (fewer at
 * the end of the epoch); *n_out is the examples used, 0 at epoch end. */
static enum cnn_status train_step(struct loop *L, long long epoch,
                                  long long *n_out, struct cnn_error *err)
{
    struct cnn_session *s = L->s;
    struct cnn_config *cfg = s->cfg;
    double loss_sum = 0.0;
    long long correct = 0, total = 0;

    cnn_net_zero_grad(&s->net);
    for (long long a = 0; a < cfg->training.accumulate; a++) {
        int n = cnn_loader_next(&L->loader, cnn_net_input(&s->net), L->labels);
        if (n == 0)
            break;
        enum cnn_status st = micro_batch(L, n, epoch, &loss_sum, &correct,
                                         err);
        if (st != CNN_OK)
            return st;
        total += n;
    }
    *n_out = total;
    if (total == 0)
        return CNN_OK;
    if (cfg->training.accumulate > 1)
        for (size_t i = 0; i < s->net.n_params; i++)
            s->net.grads[i] /= (float)total;

    L->last_lr = cnn_schedule_lr(&L->schedule, L->step, epoch);
    double norm = cnn_optim_step(&s->optim, s->net.params, s->net.grads,
                                 (float)L->last_lr);
    L->step++;
    L->examples += total;

    L->sum_loss += loss_sum;
    L->sum_norm += norm;
    L->sum_correct += correct;
    L->sum_examples += total;
    L->interval_steps++;
    show_progress(L, epoch, loss_sum / (double)total);
    return CNN_OK;
}

static void evaluate_epoch(struct loop *L, long long epoch,
                           struct cnn_train_result *res)
{
    struct cnn_session *s = L->s;
    double metric = res->final_train_loss;
    if (L->interval_steps > 0)
        log_interval(L, epoch, res);

    if (s->test.n > 0) {
        cnn_evaluate(s, &s->test, &res->test_loss, &res->test_acc);
        metric = res->test_loss;
        if (isnan(res->best_test_acc) || res->test_acc > res->best_test_acc) {
            res->best_test_acc = res->test_acc;
            res->best_epoch = epoch + 1;
        }
        struct cnn_metrics_row r = cnn_metrics_row_empty(epoch + 1, L->step);
        r.test_loss = res->test_loss;
        r.test_acc = res->test_acc;
        r.elapsed_s = cnn_now() - L->t0;
        cnn_metrics_write(L->metrics, &r);
        cnn_log_info(L->log, "epoch %lld/%lld: test_loss=%.4f test_acc=%.4f "
                     "(%.1f s)", epoch + 1, s->cfg->training.epochs,
                     r.test_loss, r.test_acc, r.elapsed_s);
    }
    if (cnn_schedule_epoch_end(&L->schedule, metric))
        cnn_log_info(L->log, "plateau: learning rate now %.4g",
                     cnn_schedule_lr(&L->schedule, L->step, epoch + 1));
}

static enum cnn_status loop_run(struct loop *L, struct cnn_train_result *res,
                                struct cnn_error *err)
{
    struct cnn_training_config *t = &L->s->cfg->training;
    for (long long epoch = 0; epoch < t->epochs; epoch++) {
        cnn_loader_start_epoch(&L->loader, epoch, true);
        long long n = 1;
        while (n > 0 && (t->max_steps == 0 || L->step < t->max_steps)) {
            enum cnn_status st = train_step(L, epoch, &n, err);
            if (st != CNN_OK)
                return st;
            if (n > 0 && L->step % t->log_every == 0)
                log_interval(L, epoch, res);
        }
        res->epochs = epoch + 1;
        evaluate_epoch(L, epoch, res);
        if (t->max_steps > 0 && L->step >= t->max_steps)
            break;
    }
    return CNN_OK;
}

static enum cnn_status save_model(struct cnn_session *s, const char *dir,
                                  const char *config_text,
                                  const struct cnn_train_result *res,
                                  struct cnn_error *err)
{
    char path[4200], steps[32], acc[32], mean[256] = "", std[256] = "";
    join(path, sizeof path, dir, "model.safetensors");
    snprintf(steps, sizeof steps, "%lld", res->steps);
    snprintf(acc, sizeof acc, "%.6f", res->test_acc);
    for (int c = 0; c < s->norm.c; c++) {
        size_t lm = strlen(mean), ls = strlen(std);
        snprintf(mean + lm, sizeof mean - lm, "%s%.9g", c ? "," : "",
                 s->norm.mean[c]);
        snprintf(std + ls, sizeof std - ls, "%s%.9g", c ? "," : "",
                 s->norm.std[c]);
    }
    const struct cnn_meta meta[] = {
        {"format", "pt"},
        {"producer", "cnn-train " CNN_VERSION},
        {"config", config_text},
        {"steps", steps},
        {"test_acc", acc},
        {"normalize_mean", mean},
        {"normalize_std", std},
    };
    return cnn_safetensors_save(path, &s->net, meta,
                                (int)(sizeof meta / sizeof meta[0]), err);
}

static void json_number(FILE *f, const char *key, double v, bool last)
{
    if (isfinite(v))
        fprintf(f, "  \"%s\": %.10g%s\n", key, v, last ? "" : ",");
    else
        fprintf(f, "  \"%s\": null%s\n", key, last ? "" : ",");
}

/* run.json: the figures `compare` shows, written once a run finished. */
static enum cnn_status write_run_json(struct cnn_session *s, const char *dir,
                                      const struct cnn_train_result *res,
                                      struct cnn_error *err)
{
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
    json_number(f, "epochs", (double)res->epochs, false);
    json_number(f, "steps", (double)res->steps, false);
    json_number(f, "seconds", res->seconds, false);
    json_number(f, "images_per_s", res->images_per_s, false);
    json_number(f, "final_train_loss", res->final_train_loss, false);
    json_number(f, "final_test_acc", res->test_acc, false);
    json_number(f, "best_test_acc", res->best_test_acc, false);
    json_number(f, "best_epoch", isnan(res->best_test_acc) ? NAN
                                 : (double)res->best_epoch, false);
    json_number(f, "params", (double)s->net.n_params, false);
    json_number(f, "optimizer_state_bytes",
                (double)cnn_optim_state_bytes(&s->optim), true);
    fputs("}\n", f);
    if (fclose(f) != 0) {
        free(buf);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }

    char path[4200];
    join(path, sizeof path, dir, "run.json");
    enum cnn_status st = cnn_write_atomic(path, buf, len, err);
    free(buf);
    return st;
}

enum cnn_status cnn_train_run(struct cnn_session *s,
                              const struct cnn_train_opts *opts,
                              struct cnn_log *log,
                              struct cnn_train_result *res,
                              struct cnn_error *err)
{
    struct cnn_training_config *t = &s->cfg->training;
    struct loop L = {.s = s, .log = log};
    char path[4200];
    char *config_text = NULL;
    memset(res, 0, sizeof *res);
    res->test_loss = res->test_acc = res->best_test_acc = NAN;
    res->final_train_loss = NAN;

    enum cnn_status st = prepare_run_dir(opts->run_dir, opts->force, err);
    if (st == CNN_OK)
        st = write_config(s, opts->run_dir, &config_text, err);
    if (st == CNN_OK) {
        join(path, sizeof path, opts->run_dir, "train.log");
        if (!cnn_log_open_file(log, path))
            st = cnn_error_at(err, CNN_ERR_IO, path, "cannot open: %s",
                              strerror(errno));
    }
    if (st == CNN_OK) {
        join(path, sizeof path, opts->run_dir, "metrics.csv");
        if (!(L.metrics = cnn_metrics_open(path)))
            st = cnn_error_at(err, CNN_ERR_IO, path, "cannot open: %s",
                              strerror(errno));
    }
    L.labels = malloc((size_t)t->batch_size * sizeof *L.labels);
    if (st == CNN_OK && !L.labels)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    if (st == CNN_OK)
        st = cnn_loader_init(&L.loader, &s->train, &s->norm,
                             (int)t->batch_size, s->cfg->seed, err);
    if (st != CNN_OK)
        goto out;

    L.steps_per_epoch = (cnn_loader_batches(&L.loader) + t->accumulate - 1) /
                        t->accumulate;
    L.total_steps = L.steps_per_epoch * t->epochs;
    if (t->max_steps > 0 && t->max_steps < L.total_steps)
        L.total_steps = t->max_steps;
    cnn_schedule_init(&L.schedule, &s->cfg->schedule, s->cfg->optim.lr,
                      L.total_steps, L.steps_per_epoch);
    cnn_log_info(log, "training %s: %zu parameters, %lld examples, %lld "
                 "steps of batch %lld x %lld, optimizer %s (%zu bytes of "
                 "state), BLAS threads %d; run directory %s", s->cfg->name,
                 s->net.n_params, s->train.n, L.total_steps, t->batch_size,
                 t->accumulate, s->optim.name,
                 cnn_optim_state_bytes(&s->optim), cnn_blas_threads(0),
                 opts->run_dir);

    if (s->optim.note[0])
        cnn_log_warn(log, "%s", s->optim.note);
    L.t0 = L.interval_t0 = cnn_now();
    st = loop_run(&L, res, err);
    res->steps = L.step;
    res->seconds = cnn_now() - L.t0;
    res->images_per_s = (double)L.examples / res->seconds;
    if (st == CNN_OK)
        st = save_model(s, opts->run_dir, config_text, res, err);
    if (st == CNN_OK)
        st = write_run_json(s, opts->run_dir, res, err);
    if (st == CNN_OK)
        cnn_log_info(log, "done: %lld steps in %.1f s; test_acc=%.4f; "
                     "weights in %s/model.safetensors", res->steps,
                     res->seconds, res->test_acc, opts->run_dir);
    else
        cnn_log_warn(log, "run failed: %s", err->message);
out:
    cnn_loader_free(&L.loader);
    free(L.labels);
    free(config_text);
    if (L.metrics)
        fclose(L.metrics);
    return st;
}
