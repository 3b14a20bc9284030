/*
 * Report tests for what `compare` and `plot` stand on: reading run
 * directories back (with and without run.json, columns found by name,
 * every broken or missing file giving one error that names it), run
 * labels, the axes' tick placement on linear and log scales, and the SVG
 * writer (well-formed, escaped, graceful with no or lone points).
 *
 * Run directories are written into a scratch directory per test; the
 * SVG goes to a memory stream and is parsed back by a small tag matcher.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <sys/stat.h>

#include "cnn/runs.h"
#include "testutil.h"

/* --- fixtures ------------------------------------------------------------ */

static const char CONFIG[] =
    "name: mlp\n"
    "seed: 1\n"
    "data:\n"
    "  dir: /nowhere\n"
    "  train: {images: a.gz, labels: b.gz}\n"
    "model:\n"
    "  layers:\n"
    "    - flatten\n"
    "optimizer:\n"
    "  name: sgd\n"
    "  lr: 0.05\n"
    "  momentum: 0.9\n";

#define HEADER "epoch,step,lr,train_loss,train_acc,test_loss,test_acc," \
               "images_per_s,elapsed_s\n"

/* Two epochs: four training rows, two evaluations, the best first. */
static const char METRICS[] =
    HEADER
    "1,10,0.05,1.500000,0.5,,,1000.0,0.010\n"
    "1,20,0.05,1.000000,0.6,,,2000.0,0.015\n"
    "1,20,,,,0.8,0.700000,,0.020\n"
    "2,30,0.05,0.500000,0.7,,,1000.0,0.030\n"
    "2,40,0.05,0.250000,0.8,,,1000.0,0.040\n"
    "2,40,,,,0.7,0.680000,,0.045\n";

/* The summary a finished run writes, with keys this reader does not
 * know, which it must pass over. */
static const char SUMMARY[] =
    "{\"name\": \"mlp\", \"optimizer\": \"adam\", \"lr\": 0.001,\n"
    " \"epochs\": 1, \"steps\": 469, \"seconds\": 12.3,\n"
    " \"images_per_s\": 4900.1, \"final_train_loss\": 0.41,\n"
    " \"final_test_acc\": 0.85, \"best_test_acc\": 0.86, \"best_epoch\": 1,\n"
    " \"params\": 235146, \"optimizer_state_bytes\": 1881168,\n"
    " \"future\": {\"list\": [1, -2.5e3, {\"deep\": null}], \"ok\": true},\n"
    " \"note\": \"a \\\"quoted\\\" word\"}\n";

/* What a test holds, freed by teardown even when an assertion ends the
 * test early. */
static char *scratch;
static void *owned[16];
static int n_owned;
static struct cnn_run run;
static struct cnn_run *runs;
static int n_runs;
static char *svg;

static void *keep(void *p)
{
    assert_non_null(p);
    assert_true(n_owned < (int)(sizeof owned / sizeof owned[0]));
    owned[n_owned++] = p;
    return p;
}

static int setup(void **state)
{
    (void)state;
    scratch = test_tmpdir();
    n_owned = 0;
    memset(&run, 0, sizeof run);
    runs = NULL;
    n_runs = 0;
    svg = NULL;
    return scratch ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cnn_run_free(&run);
    cnn_runs_free(runs, n_runs);
    free(svg);
    if (scratch)
        test_rm_tree(scratch);
    free(scratch);
    for (int i = 0; i < n_owned; i++)
        free(owned[i]);
    n_owned = 0;
    return 0;
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char *path = keep(test_path(dir, name));
    assert_int_equal(test_write(path, text, strlen(text)), 0);
}

/* A run directory scratch/name holding each file whose text is given. */
static const char *make_run(const char *name, const char *metrics,
                            const char *config, const char *summary)
{
    char *dir = keep(test_path(scratch, name));
    assert_int_equal(mkdir(dir, 0777), 0);
    if (metrics)
        write_text(dir, "metrics.csv", metrics);
    if (config)
        write_text(dir, "config.yaml", config);
    if (summary)
        write_text(dir, "run.json", summary);
    return dir;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%.2000s\"", needle, haystack);
}

static void assert_near(double got, double want)
{
    if (!(fabs(got - want) <= 1e-9 * fmax(1, fabs(want))))
        fail_msg("expected %.12g, got %.12g", want, got);
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && strcmp(s + n - k, tail) == 0;
}

/* --- reading a run ------------------------------------------------------- */

static void test_run_without_summary(void **state)
{
    (void)state;
    const char *dir = make_run("lr-0.05", METRICS, CONFIG, NULL);
    struct cnn_error err = {0};
    assert_int_equal(cnn_run_load(&run, dir, &err), CNN_OK);

    assert_false(run.has_summary);
    assert_string_equal(run.label, "lr-0.05");
    assert_string_equal(run.name, "mlp");
    assert_string_equal(run.optimizer, "sgd");
    assert_near(run.lr, 0.05);
    assert_int_equal(run.steps, 40);
    assert_int_equal(run.epochs, 2);
    assert_near(run.final_train_loss, 0.25);
    assert_near(run.final_test_acc, 0.68);
    assert_near(run.best_test_acc, 0.70);
    assert_int_equal(run.best_epoch, 1);
    assert_near(run.seconds, 0.045);
    /* 10 + 10 + 15 + 10 images over the 0.040 s of training rows. */
    assert_near(run.images_per_s, 45.0 / 0.040);
    assert_int_equal(run.params, -1);
    assert_int_equal(run.optimizer_state_bytes, -1);

    assert_int_equal(run.loss.n, 4);
    assert_near(run.loss.x[0], 10);
    assert_near(run.loss.y[0], 1.5);
    assert_near(run.loss.x[3], 40);
    assert_near(run.loss.y[3], 0.25);
    assert_int_equal(run.acc.n, 2);
    assert_near(run.acc.x[0], 1);
    assert_near(run.acc.y[0], 0.70);
    assert_near(run.acc.x[1], 2);
    assert_near(run.acc.y[1], 0.68);
}

static void test_run_with_summary(void **state)
{
    (void)state;
    /* No config.yaml: run.json says all it would. */
    const char *dir = make_run("adam", METRICS, NULL, SUMMARY);
    struct cnn_error err = {0};
    assert_int_equal(cnn_run_load(&run, dir, &err), CNN_OK);

    assert_true(run.has_summary);
    assert_string_equal(run.name, "mlp");
    assert_string_equal(run.optimizer, "adam");
    assert_near(run.lr, 0.001);
    assert_int_equal(run.epochs, 1);
    assert_int_equal(run.steps, 469);
    assert_near(run.seconds, 12.3);
    assert_near(run.images_per_s, 4900.1);
    assert_near(run.final_train_loss, 0.41);
    assert_near(run.final_test_acc, 0.85);
    assert_near(run.best_test_acc, 0.86);
    assert_int_equal(run.best_epoch, 1);
    assert_int_equal(run.params, 235146);
    assert_int_equal(run.optimizer_state_bytes, 1881168);
    /* The curves still come from metrics.csv. */
    assert_int_equal(run.loss.n, 4);
    assert_int_equal(run.acc.n, 2);
}

static void test_summary_nulls_keep_csv_figures(void **state)
{
    (void)state;
    const char *dir = make_run("nulls", METRICS, CONFIG,
                               "{\"optimizer\": \"lion\", \"lr\": null, "
                               "\"best_test_acc\": null, \"best_epoch\": "
                               "null, \"optimizer_state_bytes\": null}");
    struct cnn_error err = {0};
    assert_int_equal(cnn_run_load(&run, dir, &err), CNN_OK);

    assert_string_equal(run.optimizer, "lion");
    assert_true(isnan(run.lr));     /* config.yaml is not read */
    assert_null(run.name);
    assert_near(run.best_test_acc, 0.70);
    assert_int_equal(run.best_epoch, 1);
    assert_int_equal(run.optimizer_state_bytes, -1);
    assert_int_equal(run.steps, 40);
}

static void test_summary_strings_decoded(void **state)
{
    (void)state;
    const char *dir = make_run("strings", METRICS, NULL,
                               "{\"name\": \"caf\\u00e9 \\ud83d\\ude00 "
                               "\\\"q\\\"\\t/\\/\", \"optimizer\": "
                               "\"\xc3\xa9t\xc3\xa9\"}");
    struct cnn_error err = {0};
    assert_int_equal(cnn_run_load(&run, dir, &err), CNN_OK);
    assert_string_equal(run.name, "caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\"\t//");
    assert_string_equal(run.optimizer, "\xc3\xa9t\xc3\xa9");
}

static void test_columns_by_name(void **state)
{
    (void)state;
    /* Reordered, one column more (grad_norm), images_per_s missing. */
    const char *dir = make_run(
        "columns",
        "step,epoch,grad_norm,test_acc,train_loss,elapsed_s,lr\n"
        "5,1,0.5,,2.0,0.5,0.1\n"
        "5,1,,0.25,,0.75,\n"
        "9,2,0.25,,1.0,1.5,0.1\n"
        "\n"
        "9,2,,0.5,,2.0,\n",
        CONFIG, NULL);
    struct cnn_error err = {0};
    assert_int_equal(cnn_run_load(&run, dir, &err), CNN_OK);

    assert_int_equal(run.steps, 9);
    assert_near(run.final_train_loss, 1.0);
    assert_near(run.best_test_acc, 0.5);
    assert_int_equal(run.best_epoch, 2);
    assert_near(run.seconds, 2.0);
    assert_true(isnan(run.images_per_s));
    assert_int_equal(run.loss.n, 2);
    assert_near(run.loss.x[1], 9);
    assert_int_equal(run.acc.n, 2);
}

static void test_header_only(void **state)
{
    (void)state;
    /* A run that stopped before its first logging interval. */
    const char *dir = make_run("new", HEADER, CONFIG, NULL);
    struct cnn_error err = {0};
    assert_int_equal(cnn_run_load(&run, dir, &err), CNN_OK);

    assert_int_equal(run.steps, -1);
    assert_int_equal(run.best_epoch, -1);
    assert_true(isnan(run.final_train_loss));
    assert_true(isnan(run.best_test_acc));
    assert_true(isnan(run.seconds));
    assert_true(isnan(run.images_per_s));
    assert_int_equal(run.loss.n, 0);
    assert_int_equal(run.acc.n, 0);
    assert_string_equal(run.optimizer, "sgd");
}

static void test_config_without_optimizer(void **state)
{
    (void)state;
    /* Defaults are not written into config.yaml: unknown, not guessed. */
    const char *dir = make_run("defaults", METRICS,
                               "data: {train: {images: a, labels: b}}\n"
                               "model: {layers: [flatten]}\n", NULL);
    struct cnn_error err = {0};
    assert_int_equal(cnn_run_load(&run, dir, &err), CNN_OK);
    assert_null(run.optimizer);
    assert_null(run.name);
    assert_true(isnan(run.lr));
}

/* --- broken runs ----------------------------------------------------------- */

/* Loading dir fails with status, err.where ending in where and the
 * message holding msg; run is left empty and the CLI exits 2. */
static void expect_broken(const char *dir, enum cnn_status status,
                          const char *where, const char *msg)
{
    struct cnn_error err = {0};
    enum cnn_status st = cnn_run_load(&run, dir, &err);
    if (st == CNN_OK)
        fail_msg("expected an error at %s (%s), but the run loaded", where,
                 msg);
    assert_int_equal(st, status);
    assert_int_equal(err.status, status);
    assert_int_equal(cnn_status_exit_code(st), 2);
    if (!ends_with(err.where, where))
        fail_msg("expected where to end in \"%s\", got \"%s\"", where,
                 err.where);
    assert_contains(err.message, msg);
    assert_null(run.dir);
    assert_int_equal(run.loss.n, 0);
    assert_null(run.loss.x);
}

static void test_missing_dir(void **state)
{
    (void)state;
    char *dir = keep(test_path(scratch, "nowhere"));
    expect_broken(dir, CNN_ERR_DATA, "/nowhere", "cannot open run directory");
}

static void test_not_a_dir(void **state)
{
    (void)state;
    write_text(scratch, "file", "x");
    char *dir = keep(test_path(scratch, "file/"));
    expect_broken(dir, CNN_ERR_DATA, "/file", "not a directory");
}

static void test_missing_metrics(void **state)
{
    (void)state;
    expect_broken(make_run("r", NULL, CONFIG, NULL), CNN_ERR_DATA,
                  "/r/metrics.csv", "cannot open");
}

static void test_empty_metrics(void **state)
{
    (void)state;
    expect_broken(make_run("r", "", CONFIG, NULL), CNN_ERR_DATA,
                  "/r/metrics.csv", "empty");
}

static void test_truncated_row(void **state)
{
    (void)state;
    expect_broken(make_run("r", HEADER "1,10,0.05,1.5,0.5,,,1000.0,0.01\n"
                           "1,20,0.05,1.0", CONFIG, NULL),
                  CNN_ERR_DATA, "/r/metrics.csv:3",
                  "4 cells, but the header names 9");
}

static void test_bad_cells(void **state)
{
    (void)state;
    expect_broken(make_run("a", HEADER "1,10,0.05,abc,0.5,,,1000.0,0.01\n",
                           CONFIG, NULL),
                  CNN_ERR_DATA, "/a/metrics.csv:2",
                  "train_loss: not a number: 'abc'");
    expect_broken(make_run("b", HEADER ",10,0.05,1.5,0.5,,,1000.0,0.01\n",
                           CONFIG, NULL),
                  CNN_ERR_DATA, "/b/metrics.csv:2",
                  "epoch: expected a whole number");
    expect_broken(make_run("c", HEADER "1,2.5,0.05,1.5,0.5,,,1000.0,0.01\n",
                           CONFIG, NULL),
                  CNN_ERR_DATA, "/c/metrics.csv:2",
                  "step: expected a whole number, got '2.5'");
}

static void test_header_without_column(void **state)
{
    (void)state;
    expect_broken(make_run("r", "epoch,step,train_loss\n1,1,0.5\n", CONFIG,
                           NULL),
                  CNN_ERR_DATA, "/r/metrics.csv:1", "no 'test_acc' column");
    expect_broken(make_run("s", "\x89PNG\r\n\x1a\n", CONFIG, NULL),
                  CNN_ERR_DATA, "/s/metrics.csv:1", "no 'epoch' column");
}

/* One broken run.json each: its text, where the error is, the message. */
static const struct {
    const char *text, *where, *msg;
} broken_json[] = {
    {"", "run.json:1:1", "expected a JSON object"},
    {"garbage", "run.json:1:1", "expected a JSON object"},
    {"[1, 2]", "run.json:1:1", "expected a JSON object"},
    {"{\"steps\": 4", "run.json:1:12", "expected ',' or '}'"},
    {"{\"steps\" 4}", "run.json:1:10", "expected ':'"},
    {"{\"name\": \"x}", "run.json:1:10", "does not end"},
    {"{\"lr\": \"fast\"}", "run.json:1:8", "lr: expected a number, got a "
     "string"},
    {"{\n  \"steps\": 1.5}", "run.json:2:12", "steps: expected a whole "
     "number"},
    {"{\"params\": -1}", "run.json:1:12", "params: expected a whole number"},
    {"{\"name\": 3}", "run.json:1:10", "name: expected a string"},
    {"{\"lr\": 1e999}", "run.json:1:8", "out of range"},
    {"{\"lr\": 01}", "run.json:1:9", "expected ',' or '}'"},
    {"{\"lr\": .5}", "run.json:1:8", "expected a value"},
    {"{\"lr\": 1.}", "run.json:1:8", "expected digits after '.'"},
    {"{\"lr\": nul}", "run.json:1:8", "expected a value"},
    {"{\"a\": 1,}", "run.json:1:9", "expected a string"},
    {"{} {}", "run.json:1:4", "unexpected text after the object"},
    {"{\"name\": \"\\x\"}", "run.json:1:12", "bad escape"},
    {"{\"name\": \"\\ud800\"}", "run.json:1:17", "surrogate"},
    {"{\"name\": \"a\tb\"}", "run.json:1:12", "control character"},
    {"{\"a\": [1 2]}", "run.json:1:10", "expected ',' or ']'"},
};

static void test_broken_summary(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof broken_json / sizeof broken_json[0]; i++) {
        char name[32], where[48];
        snprintf(name, sizeof name, "json%zu", i);
        const char *dir = make_run(name, METRICS, CONFIG, broken_json[i].text);
        snprintf(where, sizeof where, "/%s/%s", name, broken_json[i].where);
        struct cnn_error err = {0};
        enum cnn_status st = cnn_run_load(&run, dir, &err);
        if (st != CNN_ERR_DATA)
            fail_msg("case %zu (%s): status %d", i, broken_json[i].text, st);
        if (!strstr(err.where, where))
            fail_msg("case %zu (%s): where \"%s\", wanted \"%s\"", i,
                     broken_json[i].text, err.where, where);
        if (!strstr(err.message, broken_json[i].msg))
            fail_msg("case %zu (%s): message \"%s\", wanted \"%s\"", i,
                     broken_json[i].text, err.message, broken_json[i].msg);
        assert_null(run.dir);
        test_rm_tree(dir);
        for (int k = 0; k < 4; k++)     /* the paths make_run kept */
            free(owned[--n_owned]);
    }
}

static void test_summary_too_deep(void **state)
{
    (void)state;
    char text[256] = "{\"a\": ";
    size_t n = strlen(text);
    for (int i = 0; i < 100; i++)
        text[n++] = '[';
    for (int i = 0; i < 100; i++)
        text[n++] = ']';
    text[n++] = '}';
    text[n] = '\0';
    expect_broken(make_run("r", METRICS, CONFIG, text), CNN_ERR_DATA,
                  "/r/run.json:1:72", "nested more than 64 deep");
}

static void test_summary_with_nul_byte(void **state)
{
    (void)state;
    const char *dir = make_run("r", METRICS, CONFIG, NULL);
    char *path = keep(test_path(dir, "run.json"));
    assert_int_equal(test_write(path, "{\"a\": 1}\0", 9), 0);
    expect_broken(dir, CNN_ERR_DATA, "/r/run.json", "NUL bytes");
}

static void test_config_needed_without_summary(void **state)
{
    (void)state;
    expect_broken(make_run("a", METRICS, NULL, NULL), CNN_ERR_CONFIG,
                  "/a/config.yaml", "cannot open");
    expect_broken(make_run("b", METRICS, "optimizer: [sgd\n", NULL),
                  CNN_ERR_CONFIG, "/b/config.yaml:2:1", "invalid YAML");
    expect_broken(make_run("c", METRICS, "optimizer: {lr: fast}\n", NULL),
                  CNN_ERR_CONFIG, "/c/config.yaml:1:17",
                  "optimizer.lr: expected a number");
}

/* --- labels ---------------------------------------------------------------- */

static void test_labels(void **state)
{
    (void)state;
    char *parent_a = keep(test_path(scratch, "a"));
    char *parent_b = keep(test_path(scratch, "b"));
    assert_int_equal(mkdir(parent_a, 0777), 0);
    assert_int_equal(mkdir(parent_b, 0777), 0);
    const char *x1 = make_run("a/x", METRICS, CONFIG, NULL);
    const char *x2 = make_run("b/x", METRICS, CONFIG, NULL);
    make_run("b/y", METRICS, CONFIG, NULL);
    char *y = keep(test_path(scratch, "b/y//"));
    char *dot = keep(test_path(scratch, "b/y/."));

    char *dirs[] = {(char *)x1, (char *)x2, y, dot};
    struct cnn_error err = {0};
    assert_int_equal(cnn_runs_load(&runs, dirs, 4, &err), CNN_OK);
    n_runs = 4;
    assert_string_equal(runs[0].label, x1);
    assert_string_equal(runs[1].label, x2);
    assert_true(ends_with(runs[2].dir, "/b/y"));
    /* y and y/. are the same directory by two names. */
    assert_string_equal(runs[2].base, "y");
    assert_string_equal(runs[3].base, "y");
    assert_true(ends_with(runs[2].label, "/b/y"));
    assert_true(ends_with(runs[3].label, "/b/y/."));

    cnn_runs_label(runs, 1);
    assert_string_equal(runs[0].label, "x");
}

static void test_runs_load_fails_whole(void **state)
{
    (void)state;
    const char *good = make_run("good", METRICS, CONFIG, NULL);
    const char *bad = make_run("bad", "", CONFIG, NULL);
    char *dirs[] = {(char *)good, (char *)good, (char *)bad};
    struct cnn_error err = {0};
    assert_int_equal(cnn_runs_load(&runs, dirs, 3, &err), CNN_ERR_DATA);
    assert_null(runs);
    assert_true(ends_with(err.where, "/bad/metrics.csv"));
}

/* --- axes ------------------------------------------------------------------ */

static void expect_ticks(const struct cnn_plot_axis *a, double lo, double hi,
                         const double *ticks, int n)
{
    assert_near(a->lo, lo);
    assert_near(a->hi, hi);
    if (a->n_ticks != n) {
        char got[512] = "";
        for (int i = 0; i < a->n_ticks; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), " %g",
                     a->ticks[i]);
        fail_msg("expected %d ticks, got%s", n, got);
    }
    for (int i = 0; i < n; i++)
        assert_near(a->ticks[i], ticks[i]);
}

static void test_log_axis(void **state)
{
    (void)state;
    struct cnn_plot_axis a;

    /* Two decades inside: 2 and 5 multiples join them. */
    cnn_plot_axis_log(&a, 0.03, 2.5);
    assert_true(a.log);
    expect_ticks(&a, 0.02, 5,
                 (double[]){0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5}, 8);

    /* The loss of a short run. */
    cnn_plot_axis_log(&a, 0.3, 1.5);
    expect_ticks(&a, 0.2, 2, (double[]){0.2, 0.5, 1, 2}, 4);

    /* Five decades: only decades. */
    cnn_plot_axis_log(&a, 1.2e-4, 2);
    expect_ticks(&a, 1e-4, 2, (double[]){1e-4, 1e-3, 1e-2, 0.1, 1}, 5);

    /* Exact powers of ten stay the bounds. */
    cnn_plot_axis_log(&a, 0.01, 100);
    expect_ticks(&a, 0.01, 100, (double[]){0.01, 0.1, 1, 10, 100}, 5);

    /* Less than a decade, none inside: every multiple. */
    cnn_plot_axis_log(&a, 0.21, 0.49);
    expect_ticks(&a, 0.2, 0.5, (double[]){0.2, 0.3, 0.4, 0.5}, 4);

    /* One value: a notch either side. */
    cnn_plot_axis_log(&a, 1, 1);
    expect_ticks(&a, 0.5, 2, (double[]){0.5, 1, 2}, 3);

    /* No data. */
    cnn_plot_axis_log(&a, INFINITY, -INFINITY);
    expect_ticks(&a, 0.1, 10, (double[]){0.1, 1, 10}, 3);
    cnn_plot_axis_log(&a, 0, 1);
    expect_ticks(&a, 0.1, 10, (double[]){0.1, 1, 10}, 3);

    /* 25 decades: every fourth. */
    cnn_plot_axis_log(&a, 1e-12, 1e12);
    expect_ticks(&a, 1e-12, 1e12,
                 (double[]){1e-12, 1e-8, 1e-4, 1, 1e4, 1e8, 1e12}, 7);
}

static void test_linear_axis(void **state)
{
    (void)state;
    struct cnn_plot_axis a;

    cnn_plot_axis_linear(&a, 0.724, 0.796, false);
    assert_false(a.log);
    expect_ticks(&a, 0.72, 0.80, (double[]){0.72, 0.74, 0.76, 0.78, 0.80},
                 5);

    cnn_plot_axis_linear(&a, 10, 160, true);
    expect_ticks(&a, 0, 200, (double[]){0, 50, 100, 150, 200}, 5);

    cnn_plot_axis_linear(&a, 1, 5, true);
    expect_ticks(&a, 1, 5, (double[]){1, 2, 3, 4, 5}, 5);

    /* Integer axes never tick between whole numbers. */
    cnn_plot_axis_linear(&a, 1, 2, true);
    expect_ticks(&a, 1, 2, (double[]){1, 2}, 2);
    cnn_plot_axis_linear(&a, 1, 1, true);
    expect_ticks(&a, 0, 2, (double[]){0, 1, 2}, 3);

    cnn_plot_axis_linear(&a, 0.85, 0.85, false);
    expect_ticks(&a, 0.75, 0.95, (double[]){0.75, 0.8, 0.85, 0.9, 0.95}, 5);

    cnn_plot_axis_linear(&a, NAN, NAN, false);
    expect_ticks(&a, 0, 1, (double[]){0, 0.2, 0.4, 0.6, 0.8, 1}, 6);
}

/* --- the SVG --------------------------------------------------------------- */

/* Checks that text is one well-formed element tree rooted at <svg>:
 * every tag closed in order, quoted attributes, only known entities.
 * Enough for what the writer emits; python's parser checks in cli.sh. */
static void assert_well_formed(const char *text)
{
    char stack[64][32];
    int depth = 0, roots = 0;
    const char *p = text;
    while ((p = strpbrk(p, "<&"))) {
        if (*p == '&') {
            static const char *const ents[] = {"&amp;", "&lt;", "&gt;",
                                               "&quot;", "&apos;"};
            bool ok = false;
            for (int i = 0; i < 5; i++)
                ok |= strncmp(p, ents[i], strlen(ents[i])) == 0;
            if (!ok)
                fail_msg("bad entity at \"%.20s\"", p);
            p++;
            continue;
        }
        if (strncmp(p, "<?", 2) == 0) {
            p = strstr(p, "?>");
            assert_non_null(p);
            continue;
        }
        bool closing = p[1] == '/';
        const char *name = p + 1 + closing;
        size_t len = strspn(name, "abcdefghijklmnopqrstuvwxyz"
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-:");
        if (len == 0 || len >= sizeof stack[0])
            fail_msg("bad tag at \"%.30s\"", p);
        const char *q = name + len;
        while (*q && *q != '>') {
            if (*q == '<')
                fail_msg("'<' inside a tag at \"%.30s\"", p);
            if (*q == '"') {
                q = strchr(q + 1, '"');
                if (!q)
                    fail_msg("unclosed attribute at \"%.30s\"", p);
            }
            q++;
        }
        if (*q != '>')
            fail_msg("unclosed tag at \"%.30s\"", p);
        bool empty = q[-1] == '/';
        if (closing) {
            if (depth == 0 || strncmp(stack[depth - 1], name, len) != 0 ||
                stack[depth - 1][len])
                fail_msg("</%.*s> does not close <%s>", (int)len, name,
                         depth ? stack[depth - 1] : "(nothing)");
            depth--;
        } else {
            if (depth == 0) {
                roots++;
                if (strncmp(name, "svg", len) != 0 || len != 3)
                    fail_msg("the root is <%.*s>, not <svg>", (int)len, name);
            }
            if (!empty) {
                assert_true(depth < 64);
                memcpy(stack[depth], name, len);
                stack[depth++][len] = '\0';
            }
        }
        p = q + 1;
    }
    assert_int_equal(depth, 0);
    assert_int_equal(roots, 1);
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* Renders runs[0..n) into svg. */
static void render(const struct cnn_run *r, int n)
{
    size_t len;
    FILE *f = open_memstream(&svg, &len);
    assert_non_null(f);
    struct cnn_error err = {0};
    enum cnn_status st = cnn_plot_svg(f, r, n, &err);
    fclose(f);
    assert_int_equal(st, CNN_OK);
    assert_int_equal(strlen(svg), len);
}

static void test_svg_two_runs(void **state)
{
    (void)state;
    const char *a = make_run("a&b<c>\"d'", METRICS, CONFIG, NULL);
    const char *b = make_run("second", METRICS, NULL, SUMMARY);
    char *dirs[] = {(char *)a, (char *)b};
    struct cnn_error err = {0};
    assert_int_equal(cnn_runs_load(&runs, dirs, 2, &err), CNN_OK);
    n_runs = 2;
    render(runs, n_runs);

    assert_true(strncmp(svg, "<?xml version=\"1.0\"", 19) == 0);
    assert_well_formed(svg);
    assert_contains(svg, "width=\"960\" height=\"420\"");
    assert_contains(svg, ">Training loss</text>");
    assert_contains(svg, ">Test accuracy</text>");
    assert_contains(svg, ">step</text>");
    assert_contains(svg, ">epoch</text>");
    assert_contains(svg, "a&amp;b&lt;c&gt;&quot;d&apos;");
    assert_contains(svg, ">second</text>");
    /* Log ticks for losses 0.25 to 1.5: 0.2, 0.5, 1, 2. */
    assert_contains(svg, ">0.2</text>");
    assert_contains(svg, ">0.5</text>");
    assert_contains(svg, ">1</text>");
    assert_contains(svg, ">2</text>");
    /* A loss line and an accuracy line per run, each in its color. */
    assert_int_equal(count(svg, "<polyline"), 4);
    assert_int_equal(count(svg, "stroke=\"#1f77b4\""), 3);
    assert_int_equal(count(svg, "stroke=\"#ff7f0e\""), 3);
    /* Markers: two accuracy points per run, one per legend entry. */
    assert_int_equal(count(svg, "<circle"), 6);
    assert_null(strstr(svg, "no test evaluations"));
}

static void test_svg_sparse_runs(void **state)
{
    (void)state;
    /* One training row and no test rows; and nothing at all. */
    const char *one = make_run("one", HEADER "1,10,0.1,0.7,0.5,,,100,0.1\n",
                               CONFIG, NULL);
    const char *none = make_run("none", HEADER, CONFIG, NULL);
    char *dirs[] = {(char *)one, (char *)none};
    struct cnn_error err = {0};
    assert_int_equal(cnn_runs_load(&runs, dirs, 2, &err), CNN_OK);
    n_runs = 2;
    render(runs, n_runs);

    assert_well_formed(svg);
    assert_int_equal(count(svg, "<polyline"), 0);
    assert_contains(svg, "no test evaluations");
    assert_null(strstr(svg, "no training rows"));
    /* The lone loss point and the two legend markers. */
    assert_int_equal(count(svg, "<circle"), 3);
    assert_contains(svg, ">none</text>");
    assert_null(strstr(svg, "nan"));
    assert_null(strstr(svg, "inf"));
}

static void test_svg_no_runs(void **state)
{
    (void)state;
    render(NULL, 0);
    assert_well_formed(svg);
    assert_contains(svg, "no training rows");
    assert_contains(svg, "no test evaluations");
}

static void test_svg_nonpositive_loss(void **state)
{
    (void)state;
    /* A log axis cannot place 0: that point is left out, not drawn at
     * minus infinity. */
    const char *dir = make_run("zero", HEADER "1,1,0.1,0,,,,,\n"
                               "1,2,0.1,0.5,,,,,\n1,3,0.1,0.25,,,,,\n",
                               CONFIG, NULL);
    struct cnn_error err = {0};
    assert_int_equal(cnn_run_load(&run, dir, &err), CNN_OK);
    render(&run, 1);
    assert_well_formed(svg);
    assert_int_equal(count(svg, "<polyline"), 1);
    assert_null(strstr(svg, "nan"));
    assert_null(strstr(svg, "inf"));
}

static void test_svg_labels_sanitized(void **state)
{
    (void)state;
    static char bad[] = "lat\xe9n\x01"; /* Latin-1, a control character */
    static char long_name[] = "a-very-long-run-name-that-goes-on-and-on";
    struct cnn_run r[2];
    memset(r, 0, sizeof r);
    r[0].label = bad;
    r[1].label = long_name;
    render(r, 2);

    assert_well_formed(svg);
    assert_null(strstr(svg, "\xe9n"));
    assert_null(strchr(svg, '\x01'));
    assert_contains(svg, "lat\xef\xbf\xbdn\xef\xbf\xbd");
    /* Cut in the legend, whole in its tooltip. */
    assert_contains(svg, ">a-very-long-run-name-\xe2\x80\xa6</text>");
    assert_contains(svg, "<title>" "a-very-long-run-name-that-goes-on-and-on"
                    "</title>");
}

static void test_svg_many_runs(void **state)
{
    (void)state;
    enum { N = 30 };
    struct cnn_run r[N];
    char names[N][8];
    double xs[2] = {1, 2}, ys[2] = {0.5, 0.6};
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "r%d", i);
        r[i].label = names[i];
        r[i].acc = (struct cnn_series){.x = xs, .y = ys, .n = 2, .cap = 2};
    }
    render(r, N);

    assert_well_formed(svg);
    assert_int_equal(count(svg, "<polyline"), N);
    assert_contains(svg, "stroke-dasharray=\"6 3\"");
    assert_contains(svg, "stroke-dasharray=\"2 2\"");
    assert_contains(svg, ">and 12 more</text>");
    assert_contains(svg, ">r17</text>");
    assert_null(strstr(svg, ">r18</text>"));
}

static void test_svg_write_error(void **state)
{
    (void)state;
    FILE *f = fopen("/dev/full", "w");
    if (!f)
        skip();
    struct cnn_error err = {0};
    enum cnn_status st = cnn_plot_svg(f, NULL, 0, &err);
    fclose(f);
    assert_int_equal(st, CNN_ERR_IO);
    assert_contains(err.message, "SVG");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_run_without_summary),
        T(test_run_with_summary),
        T(test_summary_nulls_keep_csv_figures),
        T(test_summary_strings_decoded),
        T(test_columns_by_name),
        T(test_header_only),
        T(test_config_without_optimizer),
        T(test_missing_dir),
        T(test_not_a_dir),
        T(test_missing_metrics),
        T(test_empty_metrics),
        T(test_truncated_row),
        T(test_bad_cells),
        T(test_header_without_column),
        T(test_broken_summary),
        T(test_summary_too_deep),
        T(test_summary_with_nul_byte),
        T(test_config_needed_without_summary),
        T(test_labels),
        T(test_runs_load_fails_whole),
        T(test_log_axis),
        T(test_linear_axis),
        T(test_svg_two_runs),
        T(test_svg_sparse_runs),
        T(test_svg_no_runs),
        T(test_svg_nonpositive_loss),
        T(test_svg_labels_sanitized),
        T(test_svg_many_runs),
        T(test_svg_write_error),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
