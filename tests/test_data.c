/*
 * The data readers on good and broken files, and what turns their
 * examples into batches:
 *   IDX (gzip'd and plain);
 *   CSV: delimiters, headers, column selectors, string labels, a second
 *   targets file, gzip, quotes, CRLF, shapes, and every broken file
 *   named by file and line;
 *   CIFAR-10 binary batches; image folders (PNG, PGM, JPEG) with
 *   conversion and resizing; cnn_image_resize itself;
 *   held-out splits; the loader (a shuffle that depends only on (seed,
 *   epoch), normalization, the short last batch, augmentation) and
 *   standardization of features and regression targets.
 *
 * Fixtures are written into a scratch directory per test; configs are
 * YAML text resolved with that directory as their base.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/stat.h>
#include <zlib.h>
#include <png.h>
#include <jpeglib.h>
#include <cmocka.h>

#include "cnn/data.h"
#include "cnn/rng.h"
#include "testutil.h"

/* --- IDX ---------------------------------------------------------------- */

struct files {
    char *dir;
    char *images, *labels;
};

/* An IDX header for ubyte data with the given dims, then the data. */
static size_t idx_bytes(uint8_t *buf, const int *dims, int ndim,
                        const uint8_t *data, size_t n)
{
    buf[0] = buf[1] = 0;
    buf[2] = 0x08;
    buf[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = (uint32_t)dims[i];
        buf[4 + 4 * i] = (uint8_t)(d >> 24);
        buf[5 + 4 * i] = (uint8_t)(d >> 16);
        buf[6 + 4 * i] = (uint8_t)(d >> 8);
        buf[7 + 4 * i] = (uint8_t)d;
    }
    memcpy(buf + 4 + 4 * ndim, data, n);
    return 4 + 4 * (size_t)ndim + n;
}

static void write_gz(const char *path, const uint8_t *buf, size_t n)
{
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, buf, (unsigned)n), (int)n);
    assert_int_equal(gzclose(f), Z_OK);
}

/* 5 images of 2x3 (pixel = 10 * index + position) and labels 0..4. */
static void make_good(struct files *fs, bool gz)
{
    uint8_t px[30], lb[5], buf[128];
    for (int i = 0; i < 30; i++)
        px[i] = (uint8_t)(10 * (i / 6) + i % 6);
    for (int i = 0; i < 5; i++)
        lb[i] = (uint8_t)i;
    fs->dir = test_tmpdir();
    assert_non_null(fs->dir);
    fs->images = test_path(fs->dir, gz ? "img.gz" : "img");
    fs->labels = test_path(fs->dir, gz ? "lbl.gz" : "lbl");

    size_t n = idx_bytes(buf, (int[]){5, 2, 3}, 3, px, 30);
    if (gz)
        write_gz(fs->images, buf, n);
    else
        assert_int_equal(test_write(fs->images, buf, n), 0);
    n = idx_bytes(buf, (int[]){5}, 1, lb, 5);
    if (gz)
        write_gz(fs->labels, buf, n);
    else
        assert_int_equal(test_write(fs->labels, buf, n), 0);
}

static void drop(struct files *fs)
{
    test_rm_tree(fs->dir);
    free(fs->dir);
    free(fs->images);
    free(fs->labels);
}

static void check_good(bool gz)
{
    struct files fs;
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    make_good(&fs, gz);
    assert_int_equal(cnn_idx_load(&ds, fs.images, fs.labels, 0, &err), CNN_OK);
    assert_int_equal(ds.n, 5);
    assert_int_equal(ds.shape.c, 1);
    assert_int_equal(ds.shape.h, 2);
    assert_int_equal(ds.shape.w, 3);
    assert_int_equal(ds.n_classes, 5);
    assert_int_equal(ds.pixels[6 * 3 + 4], 34);
    assert_int_equal(ds.labels[4], 4);
    cnn_dataset_free(&ds);

    assert_int_equal(cnn_idx_load(&ds, fs.images, fs.labels, 2, &err), CNN_OK);
    assert_int_equal(ds.n, 2);
    cnn_dataset_free(&ds);
    drop(&fs);
}

static void test_idx_plain_and_gzip(void **state)
{
    check_good(false);
    check_good(true);
}

/* Writes raw bytes as the image file and expects an error naming it. */
static void expect_broken(const uint8_t *bytes, size_t n, const char *needle)
{
    struct files fs;
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    make_good(&fs, false);
    assert_int_equal(test_write(fs.images, bytes, n), 0);
    assert_int_equal(cnn_idx_load(&ds, fs.images, fs.labels, 0, &err),
                     CNN_ERR_DATA);
    assert_string_equal(err.where, fs.images);
    if (!strstr(err.message, needle))
        fail_msg("'%s' not in '%s'", needle, err.message);
    drop(&fs);
}

static void test_idx_broken(void **state)
{
    uint8_t buf[128], px[30] = {0};
    size_t n = idx_bytes(buf, (int[]){5, 2, 3}, 3, px, 30);

    expect_broken(buf, n - 7, "truncated");
    expect_broken(buf, 2, "truncated");
    expect_broken(buf, 0, "truncated");

    uint8_t bad[128];
    memcpy(bad, buf, n);
    bad[0] = 0x1f;
    expect_broken(bad, n, "not an IDX file");
    memcpy(bad, buf, n);
    bad[2] = 0x0D;                                  /* float data */
    expect_broken(bad, n, "not supported");
    memcpy(bad, buf, n);
    bad[3] = 0;                                     /* no dimensions */
    expect_broken(bad, n, "not an IDX file");
    memcpy(bad, buf, n);
    bad[4] = 0x80;                                  /* 2^31 images */
    expect_broken(bad, n, "out of range");

    memcpy(bad, buf, n);
    bad[n] = 7;                                     /* one byte too many */
    expect_broken(bad, n + 1, "longer than its header");
}

static void test_idx_corrupt_gzip(void **state)
{
    struct files fs;
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    make_good(&fs, true);
    FILE *f = fopen(fs.images, "r+b");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size - 6, SEEK_SET);                   /* inside the CRC */
    fputc(0x55, f);
    fputc(0xAA, f);
    fclose(f);
    assert_int_equal(cnn_idx_load(&ds, fs.images, fs.labels, 0, &err),
                     CNN_ERR_DATA);
    assert_string_equal(err.where, fs.images);
    drop(&fs);
}

/* Appends n bytes to path as one more gzip member. */
static void append_gz(const char *path, const uint8_t *buf, size_t n)
{
    gzFile f = gzopen(path, "ab");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, buf, (unsigned)n), (int)n);
    assert_int_equal(gzclose(f), Z_OK);
}

static void expect_gz_error(struct files *fs, const char *needle)
{
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    assert_int_equal(cnn_idx_load(&ds, fs->images, fs->labels, 0, &err),
                     CNN_ERR_DATA);
    assert_string_equal(err.where, fs->images);
    if (!strstr(err.message, needle))
        fail_msg("'%s' not in '%s'", needle, err.message);
}

/* A gzip file of several members (pigz, cat a.gz b.gz) decodes as their
 * concatenation; anything else after the last member, or one byte more
 * or less than the header promises, is refused naming the file. */
static void test_idx_gzip_members(void **state)
{
    struct files fs;
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    uint8_t buf[128], px[30];
    for (int i = 0; i < 30; i++)
        px[i] = (uint8_t)(3 * i + 1);
    size_t n = idx_bytes(buf, (int[]){5, 2, 3}, 3, px, 30);
    make_good(&fs, true);
    write_gz(fs.images, buf, 7);            /* inside the header */
    append_gz(fs.images, buf + 7, 10);
    append_gz(fs.images, buf + 17, n - 17);
    assert_int_equal(cnn_idx_load(&ds, fs.images, fs.labels, 0, &err), CNN_OK);
    assert_int_equal(ds.n, 5);
    assert_memory_equal(ds.pixels, px, 30);
    cnn_dataset_free(&ds);

    FILE *f = fopen(fs.images, "ab");
    assert_non_null(f);
    fputs("junk", f);
    fclose(f);
    expect_gz_error(&fs, "after the gzip data");

    write_gz(fs.images, buf, n - 1);
    expect_gz_error(&fs, "truncated");
    write_gz(fs.images, buf, n);
    append_gz(fs.images, px, 1);
    expect_gz_error(&fs, "longer than its header");
    write_gz(fs.images, buf, 10);
    expect_gz_error(&fs, "truncated: the header");
    drop(&fs);
}

static void test_idx_mismatch_and_missing(void **state)
{
    struct files fs;
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    make_good(&fs, false);

    uint8_t buf[64], lb[4] = {0, 1, 2, 3};
    size_t n = idx_bytes(buf, (int[]){4}, 1, lb, 4);
    assert_int_equal(test_write(fs.labels, buf, n), 0);
    assert_int_equal(cnn_idx_load(&ds, fs.images, fs.labels, 0, &err),
                     CNN_ERR_DATA);
    assert_string_equal(err.where, fs.labels);
    assert_non_null(strstr(err.message, "4 labels for 5 images"));

    n = idx_bytes(buf, (int[]){2, 2}, 2, lb, 4);
    assert_int_equal(test_write(fs.labels, buf, n), 0);
    assert_int_equal(cnn_idx_load(&ds, fs.images, fs.labels, 0, &err),
                     CNN_ERR_DATA);
    assert_non_null(strstr(err.message, "1 dimension"));

    char *missing = test_path(fs.dir, "nope.gz");
    assert_int_equal(cnn_idx_load(&ds, missing, fs.labels, 0, &err),
                     CNN_ERR_DATA);
    assert_string_equal(err.where, missing);
    assert_non_null(strstr(err.message, "cannot open"));
    free(missing);
    drop(&fs);
}

/* --- fixtures: a scratch directory, files in it, configs ---------------- */

static char *tmp;                   /* this test's scratch directory */
static char *owned[128];            /* paths handed out, freed at teardown */
static int n_owned;
static struct cnn_config cfgs[32];
static int n_cfgs;

static int scratch_setup(void **state)
{
    (void)state;
    tmp = test_tmpdir();
    n_owned = 0;
    n_cfgs = 0;
    memset(cfgs, 0, sizeof cfgs);
    return tmp ? 0 : -1;
}

static int scratch_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < n_cfgs; i++)
        cnn_config_free(&cfgs[i]);
    for (int i = 0; i < n_owned; i++)
        free(owned[i]);
    n_owned = 0;
    test_rm_tree(tmp);
    free(tmp);
    tmp = NULL;
    return 0;
}

#define SCRATCH(t) cmocka_unit_test_setup_teardown(t, scratch_setup, \
                                                   scratch_teardown)

/* The path of name in the scratch directory, its folders made. */
static char *at(const char *name)
{
    char *p = test_path(tmp, name);
    assert_non_null(p);
    assert_true(n_owned < (int)(sizeof owned / sizeof owned[0]));
    owned[n_owned++] = p;
    for (char *s = p + strlen(tmp) + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        mkdir(p, 0755);
        *s = '/';
    }
    return p;
}

static char *put_bytes(const char *name, const void *data, size_t n)
{
    char *path = at(name);
    assert_int_equal(test_write(path, data, n), 0);
    return path;
}

static char *put(const char *name, const char *text)
{
    return put_bytes(name, text, strlen(text));
}

static char *put_gz(const char *name, const void *data, size_t n)
{
    char *path = at(name);
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, data, (unsigned)n), (int)n);
    assert_int_equal(gzclose(f), Z_OK);
    return path;
}

/* The bytes of a file, malloc'd; *n is their count. */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *n = (size_t)size;
    return buf;
}

/* Keeps the first n bytes of a file. */
static void truncate_to(const char *path, size_t n)
{
    size_t size;
    uint8_t *buf = slurp(path, &size);
    assert_true(n < size);
    assert_int_equal(test_write(path, buf, n), 0);
    free(buf);
}

#define MODEL "model:\n  layers:\n    - dense: {units: 2}\n"

/* Resolves YAML text (printf-style) with the scratch directory as its
 * base; the config lives until teardown. */
static struct cnn_config *config(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static struct cnn_config *config(const char *fmt, ...)
{
    char text[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    assert_true(n_cfgs < (int)(sizeof cfgs / sizeof cfgs[0]));
    struct cnn_config *cfg = &cfgs[n_cfgs++];
    struct cnn_error err = {0};
    enum cnn_status st = cnn_config_load_string(cfg, text, "test.yaml", tmp,
                                                &err);
    if (st == CNN_OK)
        st = cnn_config_resolve(cfg, &err);
    if (st != CNN_OK)
        fail_msg("config: %s: %s\n%s", err.where, err.message, text);
    return cfg;
}

/* format: csv with train: {file: t.csv}, then the data lines given
 * (printf-style). */
static struct cnn_config *csv_config(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static struct cnn_config *csv_config(const char *fmt, ...)
{
    char lines[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lines, sizeof lines, fmt, ap);
    va_end(ap);
    return config("data:\n  format: csv\n  train: {file: t.csv}\n%s" MODEL,
                  lines);
}

/* ... with nothing more: every default. */
static struct cnn_config *csv_plain(void)
{
    return csv_config("%s", "");
}

/* Loads the training split of cfg; fails the test on an error. */
static void load_ok(struct cnn_dataset *ds, const struct cnn_config *cfg)
{
    struct cnn_error err = {0};
    enum cnn_status st = cnn_data_load(ds, cfg, &cfg->data.train, NULL, 0,
                                       &err);
    if (st != CNN_OK)
        fail_msg("load: %s: %s", err.where, err.message);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

/* A failed load: CNN_ERR_DATA at path (":line" added when line > 0)
 * with needle in the message, and the dataset left empty. */
static void expect_data_error(enum cnn_status st, const struct cnn_error *err,
                              const struct cnn_dataset *ds, const char *path,
                              int line, const char *needle)
{
    char where[600];
    if (line > 0)
        snprintf(where, sizeof where, "%s:%d", path, line);
    else
        snprintf(where, sizeof where, "%s", path);
    if (st == CNN_OK)
        fail_msg("expected an error at %s (%s), but it loaded", where, needle);
    assert_int_equal(st, CNN_ERR_DATA);
    assert_int_equal(err->status, CNN_ERR_DATA);
    assert_string_equal(err->where, where);
    assert_contains(err->message, needle);
    assert_int_equal(ds->n, 0);
    assert_null(ds->features);
    assert_null(ds->pixels);
    assert_null(ds->labels);
    assert_null(ds->targets);
    assert_null(ds->class_names);
}

/* ds's features, row by row, against want [n * size]. */
static void assert_features(const struct cnn_dataset *ds, const float *want,
                            long long n, size_t size)
{
    assert_int_equal(ds->n, n);
    assert_int_equal(cnn_shape_size(ds->shape), size);
    assert_non_null(ds->features);
    assert_null(ds->pixels);
    for (size_t i = 0; i < (size_t)n * size; i++)
        if (ds->features[i] != want[i])
            fail_msg("feature %zu of row %zu: %g, expected %g", i % size,
                     i / size, ds->features[i], want[i]);
}

static void assert_labels(const struct cnn_dataset *ds, const int *want,
                          long long n)
{
    assert_int_equal(ds->n, n);
    assert_non_null(ds->labels);
    assert_null(ds->targets);
    for (long long i = 0; i < n; i++)
        if (ds->labels[i] != want[i])
            fail_msg("label of row %lld: %d, expected %d", i, ds->labels[i],
                     want[i]);
}

static void assert_names(const struct cnn_dataset *ds, const char *const *want,
                         int n)
{
    assert_int_equal(ds->n_class_names, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(ds->class_names[i], want[i]);
}

/* --- CSV: good files ---------------------------------------------------- */

/* Three rows of two features and a class number: 1.5 2 | 0, 3 -7 | 2,
 * 80 0.25 | 1, in each delimiter. */
static const float ROWS_X[] = {1.5f, 2, 3, -7, 80, 0.25f};
static const int ROWS_Y[] = {0, 2, 1};

static void check_rows(const struct cnn_dataset *ds)
{
    assert_features(ds, ROWS_X, 3, 2);
    assert_int_equal(ds->shape.c, 2);
    assert_int_equal(ds->shape.h, 1);
    assert_int_equal(ds->shape.w, 1);
    assert_labels(ds, ROWS_Y, 3);
    assert_int_equal(ds->n_classes, 3);
    assert_int_equal(ds->n_class_names, 0);
}

static void test_csv_delimiters(void **state)
{
    (void)state;
    static const struct {
        const char *text, *given;
    } cases[] = {
        {"1.5,2,0\n3,-7,2\n8e1,0.25,1\n", "comma"},
        {"1.5;2;0\n3;-7;2\n8e1;0.25;1\n", "semicolon"},
        {"1.5\t2\t0\n3\t-7\t2\n8e1\t0.25\t1\n", "tab"},
        {"  1.5   2 0\n3\t -7  2\n8e1 0.25\t1  \n", "whitespace"},
        {"1.5 , 2 ,0\n 3,-7, 2\n8e1,0.25 ,1\n", "\",\""},
        {"1.5;2;0\n3;-7;2\n8e1;0.25;1\n", "\";\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cnn_dataset ds;
        put("t.csv", cases[i].text);
        load_ok(&ds, csv_plain());                       /* detected */
        check_rows(&ds);
        cnn_dataset_free(&ds);
        load_ok(&ds, csv_config("  csv: {delimiter: %s}\n", cases[i].given));
        check_rows(&ds);
        cnn_dataset_free(&ds);
    }

    /* A given delimiter is the one used: commas in a semicolon file
     * leave one column, the target, and no features. */
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    char *path = put("t.csv", "1.5;2;0\n3;-7;2\n");
    struct cnn_config *cfg = csv_config("  csv: {delimiter: comma}\n");
    expect_data_error(cnn_data_load(&ds, cfg, &cfg->data.train, NULL, 0, &err),
                      &err, &ds, path, 0, "no feature columns");
}

static void test_csv_header(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    const float x12[] = {1, 2, 3, 4}, x34[] = {3, 4};
    const int y01[] = {0, 1}, y1[] = {1};

    /* Detected: names over numbers. */
    put("t.csv", "x,y,label\n1,2,0\n3,4,1\n");
    load_ok(&ds, csv_plain());
    assert_features(&ds, x12, 2, 2);
    assert_labels(&ds, y01, 2);
    cnn_dataset_free(&ds);

    /* ... also over a column of string labels. */
    put("t.csv", "x,y,species\n1,2,cat\n3,4,dog\n");
    load_ok(&ds, csv_plain());
    assert_features(&ds, x12, 2, 2);
    assert_labels(&ds, y01, 2);
    assert_names(&ds, (const char *[]){"cat", "dog"}, 2);
    cnn_dataset_free(&ds);

    /* ... and when some of its names look like numbers (years). */
    put("t.csv", "x,2019,label\n1,2,0\n3,4,1\n");
    load_ok(&ds, csv_config("  csv: {features: [x, \"2019\"]}\n"));
    assert_features(&ds, x12, 2, 2);
    assert_labels(&ds, y01, 2);
    cnn_dataset_free(&ds);

    /* Numbers over numbers, or string labels over string labels: no
     * header. */
    put("t.csv", "1,2,0\n3,4,1\n");
    load_ok(&ds, csv_plain());
    assert_features(&ds, x12, 2, 2);
    cnn_dataset_free(&ds);
    put("t.csv", "1,2,cat\n3,4,dog\n");
    load_ok(&ds, csv_plain());
    assert_features(&ds, x12, 2, 2);
    assert_names(&ds, (const char *[]){"cat", "dog"}, 2);
    cnn_dataset_free(&ds);

    /* Given true: the first row goes, whatever it holds. */
    put("t.csv", "1,2,0\n3,4,1\n");
    load_ok(&ds, csv_config("  csv: {header: true}\n"));
    assert_features(&ds, x34, 1, 2);
    assert_labels(&ds, y1, 1);
    cnn_dataset_free(&ds);

    /* Given false: a header row is data, and not numbers. */
    char *path = put("t.csv", "x,y,label\n1,2,0\n3,4,1\n");
    struct cnn_config *cfg = csv_config("  csv: {header: false}\n");
    expect_data_error(cnn_data_load(&ds, cfg, &cfg->data.train, NULL, 0, &err),
                      &err, &ds, path, 1, "field 1 ('x') is not a number");
}

static void test_csv_skip_rows(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    const float x[] = {1, 2, 3, 4};
    const int y[] = {0, 1};
    put("t.csv", "# exported by a tool, v2\n# sep=;\nx,y,label\n1,2,0\n\n"
                 "3,4,1\n");
    load_ok(&ds, csv_config("  csv: {skip_rows: 2}\n"));
    assert_features(&ds, x, 2, 2);
    assert_labels(&ds, y, 2);
    cnn_dataset_free(&ds);

    /* The skipped lines may look like data: they are dropped all the
     * same, before the header is looked for. */
    put("t.csv", "9,9,9\n1,2,0\n3,4,1\n");
    load_ok(&ds, csv_config("  csv: {skip_rows: 1}\n"));
    assert_features(&ds, x, 2, 2);
    cnn_dataset_free(&ds);
}

/* a b c d e / 1 0 2 0.5 1 / 2 1 0 1.5 0 / 3 2 1 2.5 1 */
#define ABCDE "a,b,c,d,e\n1,0,2,0.5,1\n2,1,0,1.5,0\n3,2,1,2.5,1\n"

static void test_csv_columns(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    put("t.csv", ABCDE);

    /* The default target is the last column; the rest are features. */
    load_ok(&ds, csv_plain());
    assert_features(&ds, (float[]){1, 0, 2, 0.5f, 2, 1, 0, 1.5f, 3, 2, 1,
                                   2.5f}, 3, 4);
    assert_labels(&ds, (int[]){1, 0, 1}, 3);
    assert_int_equal(ds.n_classes, 2);
    cnn_dataset_free(&ds);

    /* -1 given is the same. */
    load_ok(&ds, csv_config("  csv: {target: -1}\n"));
    assert_labels(&ds, (int[]){1, 0, 1}, 3);
    assert_int_equal(ds.shape.c, 4);
    cnn_dataset_free(&ds);

    /* A middle column. */
    load_ok(&ds, csv_config("  csv: {target: 2}\n"));
    assert_features(&ds, (float[]){1, 0, 0.5f, 1, 2, 1, 1.5f, 0, 3, 2, 2.5f,
                                   1}, 3, 4);
    assert_labels(&ds, (int[]){2, 0, 1}, 3);
    assert_int_equal(ds.n_classes, 3);
    cnn_dataset_free(&ds);

    /* The first, counted from either end. */
    load_ok(&ds, csv_config("  csv: {target: -5}\n"));
    assert_features(&ds, (float[]){0, 2, 0.5f, 1, 1, 0, 1.5f, 0, 2, 1, 2.5f,
                                   1}, 3, 4);
    assert_labels(&ds, (int[]){1, 2, 3}, 3);
    assert_int_equal(ds.n_classes, 4);
    cnn_dataset_free(&ds);

    /* By header name. */
    load_ok(&ds, csv_config("  csv: {target: b}\n"));
    assert_features(&ds, (float[]){1, 2, 0.5f, 1, 2, 0, 1.5f, 0, 3, 1, 2.5f,
                                   1}, 3, 4);
    assert_labels(&ds, (int[]){0, 1, 2}, 3);
    cnn_dataset_free(&ds);

    /* Features by list, in the order listed, by index and name. */
    load_ok(&ds, csv_config("  csv: {target: 2, features: [0, 3]}\n"));
    assert_features(&ds, (float[]){1, 0.5f, 2, 1.5f, 3, 2.5f}, 3, 2);
    assert_labels(&ds, (int[]){2, 0, 1}, 3);
    cnn_dataset_free(&ds);
    load_ok(&ds, csv_config("  csv: {target: c, features: [e, a]}\n"));
    assert_features(&ds, (float[]){1, 1, 0, 2, 1, 3}, 3, 2);
    assert_labels(&ds, (int[]){2, 0, 1}, 3);
    cnn_dataset_free(&ds);

    /* Features by range: end exclusive, ends left out, negative ends. */
    load_ok(&ds, csv_config("  csv: {features: \"0:4\"}\n"));
    assert_features(&ds, (float[]){1, 0, 2, 0.5f, 2, 1, 0, 1.5f, 3, 2, 1,
                                   2.5f}, 3, 4);
    cnn_dataset_free(&ds);
    load_ok(&ds, csv_config("  csv: {target: 0, features: \"1:3\"}\n"));
    assert_features(&ds, (float[]){0, 2, 1, 0, 2, 1}, 3, 2);
    assert_labels(&ds, (int[]){1, 2, 3}, 3);
    cnn_dataset_free(&ds);
    load_ok(&ds, csv_config("  csv: {target: 0, features: \"-3:-1\"}\n"));
    assert_features(&ds, (float[]){2, 0.5f, 0, 1.5f, 1, 2.5f}, 3, 2);
    cnn_dataset_free(&ds);
    load_ok(&ds, csv_config("  csv: {target: 1, features: \":1\"}\n"));
    assert_features(&ds, (float[]){1, 2, 3}, 3, 1);
    cnn_dataset_free(&ds);
    load_ok(&ds, csv_config("  csv: {target: 0, features: \"3:\"}\n"));
    assert_features(&ds, (float[]){0.5f, 1, 1.5f, 0, 2.5f, 1}, 3, 2);
    cnn_dataset_free(&ds);
}

static void test_csv_regression_targets(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    put("t.csv", ABCDE);
    static const float x[] = {1, 0, 2, 2, 1, 0, 3, 2, 1};
    static const float t[] = {0.5f, 1, 1.5f, 0, 2.5f, 1};

    /* Several target columns, by name and index, and by range. */
    const char *selectors[] = {"[d, -1]", "[3, e]", "\"3:\"", "\"-2:\""};
    for (int s = 0; s < 4; s++) {
        load_ok(&ds, csv_config("  task: regression\n  csv: {target: %s}\n",
                                selectors[s]));
        assert_features(&ds, x, 3, 3);
        assert_int_equal(ds.n_targets, 2);
        assert_null(ds.labels);
        assert_non_null(ds.targets);
        assert_memory_equal(ds.targets, t, sizeof t);
        cnn_dataset_free(&ds);
    }

    /* One regression target: the values themselves, not class numbers. */
    load_ok(&ds, csv_config("  task: regression\n  csv: {target: d}\n"));
    assert_int_equal(ds.n_targets, 1);
    assert_memory_equal(ds.targets, ((float[]){0.5f, 1.5f, 2.5f}),
                        3 * sizeof(float));
    assert_int_equal(ds.shape.c, 4);
    cnn_dataset_free(&ds);
}

static void test_csv_targets_file(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    static const float x[] = {1, 2, 3, 4, 5, 6};
    static const float t[] = {10, 0.5f, 20, 1.5f, 30, -2.5f};

    /* Regression: every column of the second file, row for row; each
     * file has its own delimiter and header. */
    put("t.csv", "age,bmi\n1,2\n3,4\n5,6\n");
    put("y.txt", "10 0.5\n20\t1.5\n30   -2.5\n");
    load_ok(&ds, config("data:\n  format: csv\n  task: regression\n"
                        "  train: {file: t.csv, targets: y.txt}\n" MODEL));
    assert_features(&ds, x, 3, 2);
    assert_int_equal(ds.n_targets, 2);
    assert_non_null(ds.targets);
    assert_memory_equal(ds.targets, t, sizeof t);
    cnn_dataset_free(&ds);

    put("y.txt", "y1 y2\n10 0.5\n20 1.5\n30 -2.5\n");
    load_ok(&ds, config("data:\n  format: csv\n  task: regression\n"
                        "  train: {file: t.csv, targets: y.txt}\n" MODEL));
    assert_features(&ds, x, 3, 2);
    assert_memory_equal(ds.targets, t, sizeof t);
    cnn_dataset_free(&ds);

    /* Classification: one column of labels, here names. */
    put("t.csv", "1,2\n3,4\n5,6\n");
    put("y.txt", "dog\ncat\ndog\n");
    load_ok(&ds, config("data:\n  format: csv\n"
                        "  train: {file: t.csv, targets: y.txt}\n" MODEL));
    assert_features(&ds, x, 3, 2);
    assert_labels(&ds, (int[]){1, 0, 1}, 3);
    assert_names(&ds, (const char *[]){"cat", "dog"}, 2);
    cnn_dataset_free(&ds);
}

static void test_csv_gzip(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    const char *text = "x,y,label\n1.5,2,0\n3,-7,2\n8e1,0.25,1\n";
    put_gz("t.csv.gz", text, strlen(text));
    load_ok(&ds, config("data:\n  format: csv\n  train: {file: t.csv.gz}\n"
                        MODEL));
    check_rows(&ds);
    cnn_dataset_free(&ds);
}

static void test_csv_string_labels(void **state)
{
    (void)state;
    struct cnn_dataset tr, te, alone;
    struct cnn_error err = {0};
    put("t.csv", "5.1,3.5,setosa\n7.0,3.2,versicolor\n6.3,3.3,virginica\n"
                 "4.9,3.0,setosa\n5.8,2.7,virginica\n");
    put("u.csv", "6.0,2.2,virginica\n5.0,3.4,setosa\n");
    struct cnn_config *cfg = csv_config("  test: {file: u.csv}\n");
    const char *sorted[] = {"setosa", "versicolor", "virginica"};

    /* The classes are the sorted distinct names; labels number them. */
    load_ok(&tr, cfg);
    assert_features(&tr, (float[]){5.1f, 3.5f, 7.0f, 3.2f, 6.3f, 3.3f, 4.9f,
                                   3.0f, 5.8f, 2.7f}, 5, 2);
    assert_labels(&tr, (int[]){0, 1, 2, 0, 2}, 5);
    assert_int_equal(tr.n_classes, 3);
    assert_names(&tr, sorted, 3);

    /* The test split reads its names by the training ones: virginica is
     * 2 there, though the test file alone has it second of two. */
    assert_int_equal(cnn_data_load(&te, cfg, &cfg->data.test, &tr, 0, &err),
                     CNN_OK);
    assert_labels(&te, (int[]){2, 0}, 2);
    assert_int_equal(te.n_classes, 3);
    assert_names(&te, sorted, 3);
    assert_int_equal(cnn_data_load(&alone, cfg, &cfg->data.test, NULL, 0,
                                   &err), CNN_OK);
    assert_labels(&alone, (int[]){1, 0}, 2);
    assert_names(&alone, (const char *[]){"setosa", "virginica"}, 2);
    cnn_dataset_free(&te);
    cnn_dataset_free(&alone);
    cnn_dataset_free(&tr);

    /* data.classes, when given, sets the order. */
    cfg = csv_config("  classes: [virginica, versicolor, setosa]\n");
    load_ok(&tr, cfg);
    assert_labels(&tr, (int[]){2, 1, 0, 2, 0}, 5);
    assert_names(&tr, (const char *[]){"virginica", "versicolor", "setosa"},
                 3);
    cnn_dataset_free(&tr);
}

static void test_csv_quotes_crlf_blanks(void **state)
{
    (void)state;
    struct cnn_dataset ds;

    /* Quotes protect delimiters; "" is a quote; spaces around unquoted
     * fields go. */
    put("t.csv", "1.5,\"2\",\"Smith, J.\"\n3,4,\"Doe, \"\"Jr\"\"\"\n"
                 " 5 , 6 ,\"Smith, J.\"\n");
    load_ok(&ds, csv_plain());
    assert_features(&ds, (float[]){1.5f, 2, 3, 4, 5, 6}, 3, 2);
    assert_labels(&ds, (int[]){1, 0, 1}, 3);
    assert_names(&ds, (const char *[]){"Doe, \"Jr\"", "Smith, J."}, 2);
    cnn_dataset_free(&ds);

    /* ... in the header too, which then names the column. */
    put("t.csv", "\"w, cm\",h,y\n1,2,0\n3,4,1\n");
    load_ok(&ds, csv_config("  csv: {target: y, features: [\"w, cm\"]}\n"));
    assert_features(&ds, (float[]){1, 3}, 2, 1);
    assert_labels(&ds, (int[]){0, 1}, 2);
    cnn_dataset_free(&ds);

    /* CRLF line ends: no '\r' left on the last field. */
    put("t.csv", "x,y,label\r\n1,2,cat\r\n3,4,dog\r\n");
    load_ok(&ds, csv_plain());
    assert_features(&ds, (float[]){1, 2, 3, 4}, 2, 2);
    assert_names(&ds, (const char *[]){"cat", "dog"}, 2);
    cnn_dataset_free(&ds);
    const char *crlf[] = {"1;2;0\r\n3;4;1\r\n", "1 2 0\r\n3 4 1\r\n"};
    for (int i = 0; i < 2; i++) {
        put("t.csv", crlf[i]);
        load_ok(&ds, csv_plain());
        assert_features(&ds, (float[]){1, 2, 3, 4}, 2, 2);
        assert_labels(&ds, (int[]){0, 1}, 2);
        assert_int_equal(ds.n_class_names, 0);
        cnn_dataset_free(&ds);
    }

    /* Blank lines, at the end or between rows, are passed over; the
     * last line needs no newline. */
    put("t.csv", "1,2,0\n\n3,4,1\n\n\n   \n\t\n");
    load_ok(&ds, csv_plain());
    assert_features(&ds, (float[]){1, 2, 3, 4}, 2, 2);
    cnn_dataset_free(&ds);
    put("t.csv", "1,2,0\n3,4,1");
    load_ok(&ds, csv_plain());
    assert_features(&ds, (float[]){1, 2, 3, 4}, 2, 2);
    cnn_dataset_free(&ds);
}

static void test_csv_shape_and_limit(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    struct cnn_shape s;
    struct cnn_error err = {0};
    put("t.csv", "1,2,3,4,0\n5,6,7,8,1\n9,10,11,12,0\n");
    struct cnn_config *cfg = csv_config("  csv: {shape: [1, 2, 2]}\n");
    load_ok(&ds, cfg);
    assert_int_equal(ds.shape.c, 1);
    assert_int_equal(ds.shape.h, 2);
    assert_int_equal(ds.shape.w, 2);
    assert_features(&ds, (float[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 3,
                    4);
    cnn_dataset_free(&ds);
    assert_int_equal(cnn_data_peek_shape(cfg, &s, &err), CNN_OK);
    assert_int_equal(s.c, 1);
    assert_int_equal(s.h, 2);
    assert_int_equal(s.w, 2);

    /* limit keeps the first rows. */
    assert_int_equal(cnn_data_load(&ds, cfg, &cfg->data.train, NULL, 2,
                                   &err), CNN_OK);
    assert_features(&ds, (float[]){1, 2, 3, 4, 5, 6, 7, 8}, 2, 4);
    cnn_dataset_free(&ds);
}

/* --- CSV: broken files -------------------------------------------------- */

/* Writes text (n bytes) as bad.csv, loads it with the data lines given,
 * and expects a data error at bad.csv:line (the file alone when line is
 * 0) holding needle. */
static void expect_csv_error(const char *text, size_t n, const char *lines,
                             int line, const char *needle)
{
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    char *path = put_bytes("bad.csv", text, n);
    struct cnn_config *cfg = config("data:\n  format: csv\n  train: {file: "
                                    "bad.csv}\n%s" MODEL, lines);
    expect_data_error(cnn_data_load(&ds, cfg, &cfg->data.train, NULL, 0, &err),
                      &err, &ds, path, line, needle);
    cnn_config_free(cfg);
    n_cfgs--;
}

#define CSV_ERROR(text, lines, line, needle) \
    expect_csv_error(text, sizeof(text) - 1, lines, line, needle)

static void test_csv_broken_rows(void **state)
{
    (void)state;
    /* Field counts, named by their line in the file: blank and skipped
     * lines and the header count. */
    CSV_ERROR("1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,0\n", "", 5,
              "2 fields, but the first row has 3");
    CSV_ERROR("x,y,label\n1,2,0\n\n3,4,1\n5,6,1,7\n", "", 5,
              "4 fields, but the first row has 3");
    CSV_ERROR("junk\njunk, and more\n1,2,0\n3,4\n",
              "  csv: {skip_rows: 2}\n", 4, "2 fields");
    CSV_ERROR("x,y,species\n1,2,cat\n3,4\n", "", 3, "2 fields");

    /* Cells that are not finite numbers. */
    CSV_ERROR("1,2,0\n3,x,1\n", "", 2, "field 2 ('x') is not a number");
    CSV_ERROR("1,2,0\n3,,1\n", "", 2, "field 2 ('') is not a number");
    CSV_ERROR("1,2,0\n3,4,1\nnan,4,1\n", "", 3, "field 1 ('nan')");
    CSV_ERROR("1,2,0\n3,inf,1\n", "", 2, "field 2 ('inf')");
    CSV_ERROR("1,2,0\n3,1e39,1\n", "", 2, "field 2 ('1e39')");
    CSV_ERROR("1,2,0\n3,4 5,1\n", "", 2, "field 2 ('4 5')");
    CSV_ERROR("1,2,0.5\n3,4,abc\n", "  task: regression\n", 2,
              "target 'abc' is not a number");

    /* Class numbers past 65535. */
    CSV_ERROR("1,2,0\n3,4,70000\n", "", 2, "is not a class number");
}

static void test_csv_broken_files(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    struct cnn_error err = {0};

    CSV_ERROR("", "", 0, "empty");
    CSV_ERROR("\n\n  \n\r\n", "", 0, "empty");
    CSV_ERROR("1,2,0\n", "  csv: {skip_rows: 3}\n", 0,
              "empty: no rows after skip_rows");
    CSV_ERROR("x,y,label\n", "  csv: {header: true}\n", 0,
              "a header and no rows");
    /* Detection cannot call a lone first row a header: it is read as
     * data, and its names are not numbers. */
    CSV_ERROR("x,y,label\n", "", 1, "field 1 ('x') is not a number");
    CSV_ERROR("1,2,0\n3,\0,1\n", "", 0, "NUL");

    char *missing = at("nope.csv");
    struct cnn_config *cfg = config("data:\n  format: csv\n  train: {file: "
                                    "nope.csv}\n" MODEL);
    expect_data_error(cnn_data_load(&ds, cfg, &cfg->data.train, NULL, 0, &err),
                      &err, &ds, missing, 0, "cannot open");
}

static void test_csv_broken_columns(void **state)
{
    (void)state;
    const char *t = "x,y,label\n1,2,0\n3,4,1\n";
    size_t n = strlen(t);
    expect_csv_error(t, n, "  csv: {target: 3}\n", 0,
                     "target columns 3..4: the rows have 3 fields");
    expect_csv_error(t, n, "  csv: {target: -4}\n", 0, "target columns");
    expect_csv_error(t, n, "  csv: {features: \"1:5\"}\n", 0,
                     "feature columns 1..5");
    expect_csv_error(t, n, "  csv: {target: price}\n", 0,
                     "target column 'price': not in the header");
    expect_csv_error(t, n, "  csv: {features: [x, z]}\n", 0,
                     "feature column 'z': not in the header");
    expect_csv_error("1,2,0\n3,4,1\n", 12, "  csv: {target: label}\n", 0,
                     "no header row");
    expect_csv_error(t, n, "  csv: {target: 2, features: [0, 2]}\n", 0,
                     "column 2 is chosen twice");
    expect_csv_error(t, n, "  csv: {target: [0, 1]}\n", 0,
                     "2 target columns");
    expect_csv_error(t, n, "  csv: {shape: [1, 2, 3]}\n", 0,
                     "2 feature columns, but data.csv.shape [1, 2, 3] holds "
                     "6 values");

    /* A targets file one row short: named, with both counts. */
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    put("bad.csv", "1,2\n3,4\n5,6\n");
    char *y = put("y.csv", "1\n2\n");
    struct cnn_config *cfg = config("data:\n  format: csv\n  task: "
                                    "regression\n  train: {file: bad.csv, "
                                    "targets: y.csv}\n" MODEL);
    expect_data_error(cnn_data_load(&ds, cfg, &cfg->data.train, NULL, 0, &err),
                      &err, &ds, y, 0, "2 rows, but");
    /* ... and a bad cell in it, named by its own line. */
    put("y.csv", "1\n2\nthree\n");
    expect_data_error(cnn_data_load(&ds, cfg, &cfg->data.train, NULL, 0, &err),
                      &err, &ds, y, 3, "target 'three' is not a number");
}

static void test_csv_broken_test_split(void **state)
{
    (void)state;
    struct cnn_dataset tr, te;
    struct cnn_error err = {0};

    /* A name the training split does not have. */
    put("t.csv", "5.1,3.5,setosa\n7.0,3.2,versicolor\n");
    char *u = put("u.csv", "6.0,2.2,versicolor\n5.0,3.4,dog\n");
    struct cnn_config *cfg = csv_config("  test: {file: u.csv}\n");
    load_ok(&tr, cfg);
    expect_data_error(cnn_data_load(&te, cfg, &cfg->data.test, &tr, 0, &err),
                      &err, &te, u, 2, "unknown label 'dog'");
    cnn_dataset_free(&tr);

    /* Training labels are class numbers: a test file's negative,
     * fractional or named label is an error at its line. */
    put("t.csv", "1,2,0\n3,4,1\n");
    load_ok(&tr, cfg);
    assert_int_equal(tr.n_class_names, 0);
    const char *bad[] = {"1,2,1\n3,4,-1\n", "1,2,1\n\n3,4,1.5\n",
                         "1,2,cat\n"};
    const int line[] = {2, 3, 1};
    const char *needle[] = {"label '-1' is not a class number",
                            "label '1.5' is not a class number",
                            "label 'cat' is not a class number"};
    for (int i = 0; i < 3; i++) {
        put("u.csv", bad[i]);
        expect_data_error(cnn_data_load(&te, cfg, &cfg->data.test, &tr, 0,
                                        &err), &err, &te, u, line[i],
                          needle[i]);
    }
    cnn_dataset_free(&tr);
}

/* A gzip'd table cut short is an error, not the rows before the cut
 * (zlib reports it only through gzerror at the end: the reader used to
 * return the first 842 rows). */
static void test_csv_truncated_gzip(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    char text[64 * 1024];
    size_t len = 0;
    for (int i = 0; i < 2000; i++)
        len += (size_t)snprintf(text + len, sizeof text - len, "%d,%d,%d\n",
                                i, i * 7 % 1000, i % 3);
    char *path = put_gz("bad.csv.gz", text, len);
    size_t size;
    free(slurp(path, &size));
    truncate_to(path, size / 2);
    struct cnn_config *cfg = config("data:\n  format: csv\n  train: {file: "
                                    "bad.csv.gz}\n" MODEL);
    enum cnn_status st = cnn_data_load(&ds, cfg, &cfg->data.train, NULL, 0,
                                       &err);
    if (st == CNN_OK) {
        long long n = ds.n;
        cnn_dataset_free(&ds);
        fail_msg("a truncated gzip file loaded as %lld of 2000 rows", n);
    }
    assert_int_equal(st, CNN_ERR_DATA);
    assert_int_equal(strncmp(err.where, path, strlen(path)), 0);
}

/* A UTF-8 byte order mark, as spreadsheet programs write, is not part of
 * the first cell: without a header the first row must not look like one,
 * and with one the first column must be found by its name. */
static void test_csv_bom(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    put("t.csv", "\xef\xbb\xbf" "1,2,0\n3,4,1\n");
    load_ok(&ds, csv_plain());
    assert_features(&ds, (float[]){1, 2, 3, 4}, 2, 2);
    cnn_dataset_free(&ds);
    put("t.csv", "\xef\xbb\xbf" "x,y,label\n1,2,0\n3,4,1\n");
    load_ok(&ds, csv_config("  csv: {target: label, features: [x]}\n"));
    assert_features(&ds, (float[]){1, 3}, 2, 1);
    cnn_dataset_free(&ds);
}

/* Quotes protect spaces with the whitespace delimiter too. */
static void test_csv_whitespace_quotes(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    put("t.csv", "1 2 \"a b\"\n3 4 \"c d\"\n");
    load_ok(&ds, csv_config("  csv: {delimiter: whitespace}\n"));
    assert_features(&ds, (float[]){1, 2, 3, 4}, 2, 2);
    assert_names(&ds, (const char *[]){"a b", "c d"}, 2);
    cnn_dataset_free(&ds);
}

/* With data.train.targets, a data.test without targets is refused (by
 * the config or the reader), not loaded with every label 0. */
static void test_csv_test_split_without_targets(void **state)
{
    (void)state;
    put("t.csv", "1,2\n3,4\n");
    put("y.csv", "0\n1\n");
    put("u.csv", "5,6\n7,8\n");
    struct cnn_config *cfg = &cfgs[n_cfgs++];
    struct cnn_error err = {0};
    const char *text = "data:\n  format: csv\n"
                       "  train: {file: t.csv, targets: y.csv}\n"
                       "  test: {file: u.csv}\n" MODEL;
    assert_int_equal(cnn_config_load_string(cfg, text, "test.yaml", tmp, &err),
                     CNN_OK);
    if (cnn_config_resolve(cfg, &err) == CNN_ERR_CONFIG)
        return;                                 /* refused: fine */
    struct cnn_dataset tr, te;
    load_ok(&tr, cfg);
    enum cnn_status st = cnn_data_load(&te, cfg, &cfg->data.test, &tr, 0,
                                       &err);
    cnn_dataset_free(&tr);
    if (st == CNN_OK) {
        cnn_dataset_free(&te);
        fail_msg("a test split without the targets file loaded");
    }
    assert_int_equal(st, CNN_ERR_DATA);
}

/* --- CIFAR-10 ----------------------------------------------------------- */

enum { CIFAR_PLANE = 32 * 32, CIFAR_PIXELS = 3 * CIFAR_PLANE,
       CIFAR_RECORD = 1 + CIFAR_PIXELS };

/* The pixel of record i (counted over all files) at channel c, (y, x). */
static uint8_t cifar_px(int i, int c, int y, int x)
{
    return (uint8_t)(i * 31 + c * 85 + y * 7 + x * 3);
}

/* n records, the first numbered first, with the labels given: a label
 * byte, then the R, G and B planes, each 32 rows of 32. */
static char *put_cifar(const char *name, int first, int n, const int *labels)
{
    uint8_t *buf = malloc((size_t)n * CIFAR_RECORD);
    assert_non_null(buf);
    for (int r = 0; r < n; r++) {
        uint8_t *rec = buf + (size_t)r * CIFAR_RECORD;
        rec[0] = (uint8_t)labels[r];
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    rec[1 + c * CIFAR_PLANE + y * 32 + x] =
                        cifar_px(first + r, c, y, x);
    }
    char *path = put_bytes(name, buf, (size_t)n * CIFAR_RECORD);
    free(buf);
    return path;
}

static void check_cifar_pixels(const struct cnn_dataset *ds)
{
    static const int at_yx[][2] = {{0, 0}, {0, 31}, {31, 0}, {17, 5},
                                   {31, 31}};
    for (int i = 0; i < ds->n; i++)
        for (int c = 0; c < 3; c++)
            for (int k = 0; k < 5; k++) {
                int y = at_yx[k][0], x = at_yx[k][1];
                uint8_t got = ds->pixels[(size_t)i * CIFAR_PIXELS +
                                         c * CIFAR_PLANE + y * 32 + x];
                if (got != cifar_px(i, c, y, x))
                    fail_msg("record %d channel %d (%d, %d): %d, expected "
                             "%d", i, c, y, x, got, cifar_px(i, c, y, x));
            }
}

static const char *CIFAR_NAMES[] = {"airplane", "automobile", "bird", "cat",
                                    "deer", "dog", "frog", "horse", "ship",
                                    "truck"};

static void test_cifar_good(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    char *files[2];
    files[0] = put_cifar("plain/a.bin", 0, 3, (int[]){6, 9, 0});
    files[1] = put_cifar("plain/b.bin", 3, 2, (int[]){3, 9});

    /* Files concatenated in order; no meta file, no names. */
    assert_int_equal(cnn_cifar10_load(&ds, files, 2, &err), CNN_OK);
    assert_int_equal(ds.n, 5);
    assert_int_equal(ds.shape.c, 3);
    assert_int_equal(ds.shape.h, 32);
    assert_int_equal(ds.shape.w, 32);
    assert_int_equal(ds.n_classes, 10);
    assert_non_null(ds.pixels);
    assert_null(ds.features);
    assert_labels(&ds, (int[]){6, 9, 0, 3, 9}, 5);
    check_cifar_pixels(&ds);
    assert_int_equal(ds.n_class_names, 0);
    assert_null(ds.class_names);
    cnn_dataset_free(&ds);

    /* Through the config, in the order listed, with the names of
     * batches.meta.txt (trailing blank lines as in the real one). */
    put_cifar("meta/data_batch_1.bin", 0, 3, (int[]){6, 9, 0});
    put_cifar("meta/data_batch_2.bin", 3, 2, (int[]){3, 9});
    put("meta/batches.meta.txt", "airplane\nautomobile\nbird\ncat\ndeer\n"
                                 "dog\nfrog\nhorse\nship\ntruck\n\n");
    struct cnn_config *cfg = config(
        "data:\n  format: cifar10\n  train: {files: [meta/data_batch_1.bin, "
        "meta/data_batch_2.bin]}\n  test: {files: meta/data_batch_2.bin}\n"
        MODEL);
    load_ok(&ds, cfg);
    assert_labels(&ds, (int[]){6, 9, 0, 3, 9}, 5);
    check_cifar_pixels(&ds);
    assert_names(&ds, CIFAR_NAMES, 10);
    cnn_dataset_free(&ds);
    struct cnn_shape s;
    assert_int_equal(cnn_data_peek_shape(cfg, &s, &err), CNN_OK);
    assert_int_equal(s.c * s.h * s.w, 3072);

    /* The test split alone: its records are numbered from 0 there. */
    assert_int_equal(cnn_data_load(&ds, cfg, &cfg->data.test, NULL, 0, &err),
                     CNN_OK);
    assert_labels(&ds, (int[]){3, 9}, 2);
    assert_int_equal(ds.pixels[0], cifar_px(3, 0, 0, 0));
    assert_int_equal(ds.pixels[CIFAR_PIXELS + 2 * CIFAR_PLANE + 32 * 31 + 31],
                     cifar_px(4, 2, 31, 31));
    cnn_dataset_free(&ds);
}

static void test_cifar_broken(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    char *files[2];
    files[0] = put_cifar("a.bin", 0, 2, (int[]){1, 2});

    /* Not a whole number of records. */
    files[1] = put_cifar("b.bin", 2, 2, (int[]){1, 2});
    truncate_to(files[1], 2 * CIFAR_RECORD - 1);
    expect_data_error(cnn_cifar10_load(&ds, files, 2, &err), &err, &ds,
                      files[1], 0, "6145 bytes: not a whole number of "
                      "3073-byte records");
    put_bytes("b.bin", "", 0);
    expect_data_error(cnn_cifar10_load(&ds, files, 2, &err), &err, &ds,
                      files[1], 0, "empty");

    /* A label past 9, in the second record. */
    put_cifar("b.bin", 2, 2, (int[]){1, 10});
    expect_data_error(cnn_cifar10_load(&ds, files, 2, &err), &err, &ds,
                      files[1], 0, "record 1: label 10");
    put_cifar("b.bin", 2, 2, (int[]){255, 0});
    expect_data_error(cnn_cifar10_load(&ds, files, 2, &err), &err, &ds,
                      files[1], 0, "record 0: label 255");

    files[1] = at("missing.bin");
    expect_data_error(cnn_cifar10_load(&ds, files, 2, &err), &err, &ds,
                      files[1], 0, "cannot open");
}

/* --- image folders ------------------------------------------------------ */

/* A w x h PNG of format PNG_FORMAT_GRAY, _RGB or _RGBA, interleaved
 * pixels. */
static char *put_png(const char *name, int w, int h, uint32_t format,
                     const uint8_t *px)
{
    char *path = at(name);
    png_image png;
    memset(&png, 0, sizeof png);
    png.version = PNG_IMAGE_VERSION;
    png.width = (png_uint_32)w;
    png.height = (png_uint_32)h;
    png.format = format;
    if (!png_image_write_to_file(&png, path, 0, px, 0, NULL))
        fail_msg("writing %s: %s", path, png.message);
    return path;
}

/* A w x h PNG of one gray value. */
static char *put_gray_png(const char *name, int w, int h, uint8_t v)
{
    uint8_t *px = malloc((size_t)w * h);
    assert_non_null(px);
    memset(px, v, (size_t)w * h);
    char *path = put_png(name, w, h, PNG_FORMAT_GRAY, px);
    free(px);
    return path;
}

/* A binary PGM. */
static char *put_pgm(const char *name, int w, int h, const uint8_t *px)
{
    char head[64];
    int n = snprintf(head, sizeof head, "P5\n# made by a test\n%d %d\n255\n",
                     w, h);
    uint8_t *buf = malloc((size_t)n + (size_t)w * h);
    assert_non_null(buf);
    memcpy(buf, head, (size_t)n);
    memcpy(buf + n, px, (size_t)w * h);
    char *path = put_bytes(name, buf, (size_t)n + (size_t)w * h);
    free(buf);
    return path;
}

/* A JPEG of 1 or 3 channels, interleaved pixels. */
static char *put_jpeg(const char *name, int w, int h, int channels,
                      const uint8_t *px, int quality)
{
    char *path = at(name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = channels;
    c.in_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * channels);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    assert_int_equal(fclose(f), 0);
    return path;
}

static void test_folder_classes(void **state)
{
    (void)state;
    struct cnn_dataset tr, te;
    struct cnn_error err = {0};
    struct cnn_shape gray22 = {1, 2, 2};

    put_gray_png("root/cat/b.png", 2, 2, 20);
    put_pgm("root/cat/a.pgm", 2, 2, (uint8_t[]){10, 10, 10, 10});
    put_gray_png("root/dog/c.PNG", 2, 2, 30);
    put_gray_png("root/ant/x.png", 2, 2, 40);
    /* Passed over: other files, hidden files and folders, files at the
     * top, and folders inside a class. */
    put("root/cat/notes.txt", "not an image");
    put("root/cat/.hidden.png", "not an image either");
    put("root/.cache/z.png", "nor this");
    put("root/readme.png", "nor this");
    put("root/dog/sub/deep.png", "nor this");

    assert_int_equal(cnn_folder_load(&tr, at("root"), gray22, NULL, &err),
                     CNN_OK);
    assert_int_equal(tr.n, 4);
    assert_names(&tr, (const char *[]){"ant", "cat", "dog"}, 3);
    assert_int_equal(tr.n_classes, 3);
    assert_labels(&tr, (int[]){0, 1, 1, 2}, 4);
    assert_int_equal(tr.shape.c, 1);
    assert_int_equal(tr.shape.h, 2);
    assert_int_equal(tr.shape.w, 2);
    assert_non_null(tr.pixels);
    const uint8_t want[] = {40, 10, 20, 30};   /* ant, cat a, cat b, dog */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            assert_int_equal(tr.pixels[i * 4 + j], want[i]);

    /* A test root with some of the classes keeps the training numbers. */
    put_gray_png("test/dog/d.png", 2, 2, 50);
    assert_int_equal(cnn_folder_load(&te, at("test"), gray22, &tr, &err),
                     CNN_OK);
    assert_labels(&te, (int[]){2}, 1);
    assert_int_equal(te.n_classes, 3);
    assert_names(&te, (const char *[]){"ant", "cat", "dog"}, 3);
    assert_int_equal(te.pixels[0], 50);
    cnn_dataset_free(&te);

    /* ... and one with a class training never saw is an error. */
    put_gray_png("test/cow/e.png", 2, 2, 60);
    char *test_root = at("test");
    expect_data_error(cnn_folder_load(&te, test_root, gray22, &tr, &err),
                      &err, &te, test_root, 0, "class folder 'cow' is not "
                      "one of the 3 training classes");
    cnn_dataset_free(&tr);

    /* Through the config: the shape is model.input. */
    struct cnn_config *cfg = config(
        "data:\n  format: folder\n  train: {root: root}\n"
        "model:\n  input: [3, 4, 4]\n  layers:\n    - dense: {units: 2}\n");
    load_ok(&tr, cfg);
    assert_int_equal(tr.n, 4);
    assert_int_equal(tr.shape.c, 3);
    assert_int_equal(tr.shape.h, 4);
    assert_int_equal(tr.shape.w, 4);
    for (int j = 0; j < 48; j++)
        assert_int_equal(tr.pixels[3 * 48 + j], 30);
    cnn_dataset_free(&tr);
}

static void test_folder_convert_and_resize(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    struct cnn_error err = {0};

    /* A uniform colour stays that colour, shrunk (6x5 -> 3x3) or grown
     * (6x5 -> 8x7). */
    uint8_t rgb[5 * 6 * 3];
    for (int i = 0; i < 30; i++) {
        rgb[3 * i] = 10;
        rgb[3 * i + 1] = 200;
        rgb[3 * i + 2] = 31;
    }
    put_png("root/a/rgb.png", 6, 5, PNG_FORMAT_RGB, rgb);
    const struct cnn_shape shapes[] = {{3, 3, 3}, {3, 7, 8}};
    for (int s = 0; s < 2; s++) {
        assert_int_equal(cnn_folder_load(&ds, at("root"), shapes[s], NULL,
                                         &err), CNN_OK);
        size_t hw = (size_t)shapes[s].h * shapes[s].w;
        for (size_t j = 0; j < hw; j++) {
            assert_int_equal(ds.pixels[j], 10);
            assert_int_equal(ds.pixels[hw + j], 200);
            assert_int_equal(ds.pixels[2 * hw + j], 31);
        }
        cnn_dataset_free(&ds);
    }

    /* A known 4x4 gray image halved: the means of its 2x2 blocks. */
    test_rm_tree(at("root"));
    put_pgm("root/a/g.pgm", 4, 4, (uint8_t[]){0, 10, 100, 110,
                                              20, 30, 120, 130,
                                              200, 210, 1, 2,
                                              220, 230, 3, 5});
    assert_int_equal(cnn_folder_load(&ds, at("root"),
                                     (struct cnn_shape){1, 2, 2}, NULL, &err),
                     CNN_OK);
    assert_memory_equal(ds.pixels, ((uint8_t[]){15, 115, 215, 3}), 4);
    cnn_dataset_free(&ds);

    /* Gray to RGB when the model wants 3 channels: three equal planes. */
    assert_int_equal(cnn_folder_load(&ds, at("root"),
                                     (struct cnn_shape){3, 2, 2}, NULL, &err),
                     CNN_OK);
    assert_memory_equal(ds.pixels, ((uint8_t[]){15, 115, 215, 3, 15, 115, 215,
                                                3, 15, 115, 215, 3}), 12);
    cnn_dataset_free(&ds);
}

static void test_image_read_formats(void **state)
{
    (void)state;
    struct cnn_image img;
    struct cnn_error err = {0};

    /* RGB PNG planes, and the same image as gray. */
    const uint8_t rgb[] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 90, 90, 90};
    char *path = put_png("rgb.png", 2, 2, PNG_FORMAT_RGB, rgb);
    assert_int_equal(cnn_image_read(path, 3, &img, &err), CNN_OK);
    assert_int_equal(img.c, 3);
    assert_int_equal(img.h, 2);
    assert_int_equal(img.w, 2);
    assert_memory_equal(img.pixels, ((uint8_t[]){255, 0, 0, 90, 0, 255, 0, 90,
                                                 0, 0, 255, 90}), 12);
    cnn_image_free(&img);
    assert_int_equal(cnn_image_read(path, 1, &img, &err), CNN_OK);
    assert_int_equal(img.c, 1);
    assert_in_range(img.pixels[3], 89, 91);             /* gray stays gray */
    assert_true(img.pixels[1] > img.pixels[0]);         /* green is lighter */
    assert_true(img.pixels[0] > img.pixels[2]);         /* than red, blue */
    cnn_image_free(&img);

    /* Transparent PNG pixels come out black. */
    const uint8_t rgba[] = {200, 100, 50, 255, 200, 100, 50, 0};
    path = put_png("rgba.png", 2, 1, PNG_FORMAT_RGBA, rgba);
    assert_int_equal(cnn_image_read(path, 3, &img, &err), CNN_OK);
    assert_memory_equal(img.pixels, ((uint8_t[]){200, 0, 100, 0, 50, 0}), 6);
    cnn_image_free(&img);

    /* Plain PGM, scaled from its maximum to 255. */
    path = put("plain.pgm", "P2\n# comment\n3 1\n15\n0 15\n5\n");
    assert_int_equal(cnn_image_read(path, 1, &img, &err), CNN_OK);
    assert_memory_equal(img.pixels, ((uint8_t[]){0, 255, 85}), 3);
    cnn_image_free(&img);

    /* JPEG: a uniform colour comes back within JPEG's tolerance, in RGB
     * and as gray (0.299 R + 0.587 G + 0.114 B). */
    uint8_t px[16 * 16 * 3];
    for (int i = 0; i < 256; i++) {
        px[3 * i] = 120;
        px[3 * i + 1] = 60;
        px[3 * i + 2] = 200;
    }
    path = put_jpeg("c.jpg", 16, 16, 3, px, 95);
    assert_int_equal(cnn_image_read(path, 3, &img, &err), CNN_OK);
    assert_int_equal(img.c, 3);
    assert_int_equal(img.h, 16);
    assert_int_equal(img.w, 16);
    for (int i = 0; i < 256; i++) {
        assert_in_range(img.pixels[i], 116, 124);
        assert_in_range(img.pixels[256 + i], 56, 64);
        assert_in_range(img.pixels[512 + i], 196, 204);
    }
    cnn_image_free(&img);
    assert_int_equal(cnn_image_read(path, 1, &img, &err), CNN_OK);
    assert_int_equal(img.c, 1);
    for (int i = 0; i < 256; i++)
        assert_in_range(img.pixels[i], 90, 98);
    cnn_image_free(&img);

    /* A gray JPEG, as RGB: three equal planes. */
    uint8_t gray[8 * 8];
    memset(gray, 77, sizeof gray);
    path = put_jpeg("g.jpeg", 8, 8, 1, gray, 95);
    assert_int_equal(cnn_image_read(path, 3, &img, &err), CNN_OK);
    assert_int_equal(img.c, 3);
    for (int i = 0; i < 64; i++) {
        assert_in_range(img.pixels[i], 74, 80);
        assert_int_equal(img.pixels[64 + i], img.pixels[i]);
        assert_int_equal(img.pixels[128 + i], img.pixels[i]);
    }
    cnn_image_free(&img);

    /* A JPEG in a class folder. */
    struct cnn_dataset ds;
    put_jpeg("root/a/c.jpg", 16, 16, 3, px, 95);
    assert_int_equal(cnn_folder_load(&ds, at("root"),
                                     (struct cnn_shape){3, 4, 4}, NULL, &err),
                     CNN_OK);
    assert_int_equal(ds.n, 1);
    assert_in_range(ds.pixels[0], 116, 124);
    assert_in_range(ds.pixels[47], 196, 204);
    cnn_dataset_free(&ds);
}

/* A noisy gray image, so that its PNG or JPEG is not all header. */
static void noise(uint8_t *px, size_t n)
{
    uint32_t s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1103515245u + 12345u;
        px[i] = (uint8_t)(s >> 16);
    }
}

static void test_image_broken(void **state)
{
    (void)state;
    struct cnn_image img;
    struct cnn_error err = {0};
    uint8_t px[32 * 32];
    noise(px, sizeof px);

    /* Each broken file: a data error naming it, nothing left allocated. */
    struct {
        const char *name;
        const char *needle;
    } cases[] = {
        {"half.png", "PNG"},
        {"text.png", "neither PGM, PNG nor JPEG"},
        {"empty.pgm", "neither PGM, PNG nor JPEG"},
        {"short.pgm", "truncated: 3 of 4 pixels"},
        {"header.pgm", "bad PGM header"},
        {"garbage.jpg", "damaged JPEG"},
        {"missing.png", "cannot open"},
    };
    char *good = put_png("half.png", 32, 32, PNG_FORMAT_GRAY, px);
    size_t size;
    free(slurp(good, &size));
    truncate_to(good, size / 2);
    put("text.png", "this is not a picture\n");
    put_bytes("empty.pgm", "", 0);
    put_bytes("short.pgm", "P5\n2 2\n255\n\1\2\3", 14);
    put("header.pgm", "P5\n2 x\n255\n");
    static const char garbage[] = "\xff\xd8\xff\xe0 this is not a JPEG";
    put_bytes("garbage.jpg", garbage, sizeof garbage - 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = at(cases[i].name);
        img.pixels = (uint8_t *)1;
        enum cnn_status st = cnn_image_read(path, 1, &img, &err);
        if (st == CNN_OK)
            fail_msg("%s: read as %dx%dx%d", cases[i].name, img.c, img.h,
                     img.w);
        assert_int_equal(st, CNN_ERR_DATA);
        assert_string_equal(err.where, path);
        assert_contains(err.message, cases[i].needle);
        assert_null(img.pixels);
    }

    /* A damaged image in a class folder stops the load, naming it. */
    struct cnn_dataset ds;
    put_png("root/a/1.png", 32, 32, PNG_FORMAT_GRAY, px);
    char *bad = put_png("root/b/2.png", 32, 32, PNG_FORMAT_GRAY, px);
    put_png("root/b/3.png", 32, 32, PNG_FORMAT_GRAY, px);
    truncate_to(bad, size / 2);
    expect_data_error(cnn_folder_load(&ds, at("root"),
                                      (struct cnn_shape){1, 8, 8}, NULL, &err),
                      &err, &ds, bad, 0, "PNG");
}

/* A JPEG cut short is a damaged file too, not one with a grey bottom
 * (libjpeg only warns: the reader used to accept it). */
static void test_image_truncated_jpeg(void **state)
{
    (void)state;
    struct cnn_image img;
    struct cnn_error err = {0};
    uint8_t px[64 * 64];
    noise(px, sizeof px);
    char *path = put_jpeg("cut.jpg", 64, 64, 1, px, 90);
    size_t size;
    free(slurp(path, &size));
    truncate_to(path, size / 2);
    enum cnn_status st = cnn_image_read(path, 1, &img, &err);
    if (st == CNN_OK) {
        cnn_image_free(&img);
        fail_msg("a JPEG cut to half its %zu bytes was read without an "
                 "error", size);
    }
    assert_int_equal(st, CNN_ERR_DATA);
    assert_string_equal(err.where, path);
}

static void test_folder_broken(void **state)
{
    (void)state;
    struct cnn_dataset ds;
    struct cnn_error err = {0};
    struct cnn_shape s = {1, 2, 2};

    char *root = at("empty");
    mkdir(root, 0755);
    expect_data_error(cnn_folder_load(&ds, root, s, NULL, &err), &err, &ds,
                      root, 0, "no class folders");

    /* Class folders without images. */
    put("noimg/a/readme.txt", "x");
    mkdir(at("noimg/b"), 0755);
    root = at("noimg");
    expect_data_error(cnn_folder_load(&ds, root, s, NULL, &err), &err, &ds,
                      root, 0, "no images");

    root = at("nowhere");
    expect_data_error(cnn_folder_load(&ds, root, s, NULL, &err), &err, &ds,
                      root, 0, "cannot open folder");

    /* Only gray or RGB. */
    put_gray_png("ok/a/1.png", 2, 2, 1);
    assert_int_equal(cnn_folder_load(&ds, at("ok"), (struct cnn_shape){2, 2,
                                                                       2},
                                     NULL, &err), CNN_ERR_CONFIG);
    assert_null(ds.pixels);
}

/* --- cnn_image_resize --------------------------------------------------- */

static struct cnn_image image_of(int c, int h, int w, const uint8_t *px)
{
    struct cnn_image img = {c, h, w, malloc((size_t)c * h * w)};
    assert_non_null(img.pixels);
    memcpy(img.pixels, px, (size_t)c * h * w);
    return img;
}

static void test_image_resize(void **state)
{
    (void)state;
    struct cnn_error err = {0};

    /* Identity: nothing changes. */
    const uint8_t six[] = {1, 2, 3, 4, 5, 6};
    struct cnn_image img = image_of(1, 2, 3, six);
    assert_int_equal(cnn_image_resize(&img, 2, 3, &err), CNN_OK);
    assert_int_equal(img.h, 2);
    assert_int_equal(img.w, 3);
    assert_memory_equal(img.pixels, six, 6);
    cnn_image_free(&img);

    /* Halved: each output the mean of its 2x2 block (rounded), channel by
     * channel. */
    img = image_of(2, 4, 4, (uint8_t[]){0, 10, 100, 110,
                                        20, 30, 120, 130,
                                        200, 210, 1, 2,
                                        220, 230, 3, 5,
                                        /* second channel */
                                        255, 255, 0, 0,
                                        255, 255, 0, 0,
                                        9, 9, 0, 1,
                                        9, 9, 1, 1});
    assert_int_equal(cnn_image_resize(&img, 2, 2, &err), CNN_OK);
    assert_int_equal(img.c, 2);
    assert_int_equal(img.h, 2);
    assert_int_equal(img.w, 2);
    assert_memory_equal(img.pixels, ((uint8_t[]){15, 115, 215, 3,
                                                 255, 0, 9, 1}), 8);
    cnn_image_free(&img);

    /* 3x3 to 2x2: each output covers 1.5 x 1.5 pixels, the partial ones
     * weighted by the part covered. (0 + 30/2 + 90/2 + 120/4) / 2.25 = 40
     * and so on. */
    img = image_of(1, 3, 3, (uint8_t[]){0, 30, 60, 90, 120, 150, 180, 210,
                                        240});
    assert_int_equal(cnn_image_resize(&img, 2, 2, &err), CNN_OK);
    assert_memory_equal(img.pixels, ((uint8_t[]){40, 80, 160, 200}), 4);
    cnn_image_free(&img);

    /* Doubled, bilinearly between pixel centres: the corners keep their
     * values; (0, 1) is a quarter of the way from 0 to 100; (1, 1) is
     * 0.75 (0.75 * 0 + 0.25 * 100) + 0.25 (0.75 * 200 + 0.25 * 255). */
    img = image_of(1, 2, 2, (uint8_t[]){0, 100, 200, 255});
    assert_int_equal(cnn_image_resize(&img, 4, 4, &err), CNN_OK);
    assert_int_equal(img.h, 4);
    assert_int_equal(img.w, 4);
    assert_memory_equal(img.pixels, ((uint8_t[]){0, 25, 75, 100,
                                                 50, 72, 117, 139,
                                                 150, 167, 200, 216,
                                                 200, 214, 241, 255}), 16);
    cnn_image_free(&img);
}

/* An image that grows along one side and shrinks along the other is
 * averaged along the shrinking side: a 1x8 row 0 0 0 100 100 0 0 0 made
 * 2x2 gives 25 everywhere, as shrinking it to 1x2 gives 25 25. */
static void test_image_resize_mixed(void **state)
{
    (void)state;
    struct cnn_error err = {0};
    const uint8_t row[] = {0, 0, 0, 100, 100, 0, 0, 0};
    struct cnn_image img = image_of(1, 1, 8, row);
    assert_int_equal(cnn_image_resize(&img, 1, 2, &err), CNN_OK);
    assert_memory_equal(img.pixels, ((uint8_t[]){25, 25}), 2);
    cnn_image_free(&img);
    img = image_of(1, 1, 8, row);
    assert_int_equal(cnn_image_resize(&img, 2, 2, &err), CNN_OK);
    uint8_t got[4];
    memcpy(got, img.pixels, 4);
    cnn_image_free(&img);
    assert_memory_equal(got, ((uint8_t[]){25, 25, 25, 25}), 4);
}

/* --- held-out splits ---------------------------------------------------- */

/* 40 images of one pixel, the pixel being the row number, in classes of
 * 20, 13 and 7 examples interleaved. */
static struct cnn_dataset class_set(void)
{
    struct cnn_dataset ds = {.n = 40, .shape = {1, 1, 1}, .n_classes = 3};
    ds.pixels = malloc(40);
    ds.labels = malloc(40 * sizeof *ds.labels);
    ds.class_names = calloc(3, sizeof *ds.class_names);
    assert_non_null(ds.pixels);
    assert_non_null(ds.labels);
    assert_non_null(ds.class_names);
    ds.n_class_names = 3;
    ds.class_names[0] = strdup("zero");
    ds.class_names[1] = strdup("one");
    ds.class_names[2] = strdup("two");
    for (int i = 0; i < 40; i++) {
        int k = i * 7 % 40;         /* a permutation of 0..39 */
        ds.pixels[i] = (uint8_t)i;
        ds.labels[i] = k < 20 ? 0 : k < 33 ? 1 : 2;
    }
    return ds;
}

static int class_of(int row)
{
    int k = row * 7 % 40;
    return k < 20 ? 0 : k < 33 ? 1 : 2;
}

/* The rows of held and kept: each in file order, together every row of
 * n once; labels still those of their rows. */
static void check_partition(const struct cnn_dataset *held,
                            const struct cnn_dataset *kept, int n, int *rows)
{
    int seen[64] = {0};
    assert_int_equal(held->n + kept->n, n);
    const struct cnn_dataset *part[] = {held, kept};
    for (int p = 0; p < 2; p++)
        for (long long i = 0; i < part[p]->n; i++) {
            int row = part[p]->pixels ? part[p]->pixels[i]
                                      : (int)part[p]->features[2 * i];
            assert_in_range(row, 0, n - 1);
            seen[row]++;
            if (i > 0) {
                int before = part[p]->pixels ? part[p]->pixels[i - 1]
                             : (int)part[p]->features[2 * (i - 1)];
                assert_true(before < row);
            }
            if (p == 0)
                rows[i] = row;
        }
    for (int r = 0; r < n; r++)
        assert_int_equal(seen[r], 1);
}

static void test_split_stratified(void **state)
{
    (void)state;
    struct cnn_error err = {0};
    int rows[3][40], per_class[3] = {0};

    struct cnn_dataset ds = class_set(), held;
    assert_int_equal(cnn_dataset_split(&ds, 0.25, 7, CNN_RNG_STREAM_VAL_SPLIT,
                                       &held, &err), CNN_OK);
    /* round(0.25 x 20, 13, 7) = 5 + 3 + 2 */
    assert_int_equal(held.n, 10);
    assert_int_equal(ds.n, 30);
    check_partition(&held, &ds, 40, rows[0]);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(held.labels[i], class_of(rows[0][i]));
        per_class[held.labels[i]]++;
    }
    assert_int_equal(per_class[0], 5);
    assert_int_equal(per_class[1], 3);
    assert_int_equal(per_class[2], 2);
    for (int i = 0; i < 30; i++)
        assert_int_equal(ds.labels[i], class_of(ds.pixels[i]));
    /* Both keep the shape, the classes and their names. */
    const char *names[] = {"zero", "one", "two"};
    assert_names(&held, names, 3);
    assert_names(&ds, names, 3);
    assert_int_equal(held.n_classes, 3);
    assert_int_equal(ds.n_classes, 3);
    assert_int_equal(held.shape.c * held.shape.h * held.shape.w, 1);
    cnn_dataset_free(&held);
    cnn_dataset_free(&ds);

    /* The same (seed, stream) holds out the same rows; another seed or
     * another stream, others. */
    const uint64_t seeds[][2] = {{7, CNN_RNG_STREAM_VAL_SPLIT},
                                 {8, CNN_RNG_STREAM_VAL_SPLIT},
                                 {7, CNN_RNG_STREAM_TEST_SPLIT}};
    for (int s = 0; s < 3; s++) {
        ds = class_set();
        assert_int_equal(cnn_dataset_split(&ds, 0.25, seeds[s][0],
                                           seeds[s][1], &held, &err), CNN_OK);
        assert_int_equal(held.n, 10);
        check_partition(&held, &ds, 40, rows[s == 0 ? 1 : s]);
        if (s == 0)
            assert_memory_equal(rows[0], rows[1], 10 * sizeof(int));
        else
            assert_memory_not_equal(rows[0], rows[s], 10 * sizeof(int));
        cnn_dataset_free(&held);
        cnn_dataset_free(&ds);
    }
}

static void test_split_regression(void **state)
{
    (void)state;
    struct cnn_error err = {0};
    struct cnn_dataset ds = {.n = 20, .shape = {2, 1, 1}, .n_targets = 2};
    ds.features = malloc(40 * sizeof *ds.features);
    ds.targets = malloc(40 * sizeof *ds.targets);
    assert_non_null(ds.features);
    assert_non_null(ds.targets);
    for (int i = 0; i < 20; i++) {
        ds.features[2 * i] = (float)i;
        ds.features[2 * i + 1] = -(float)i;
        ds.targets[2 * i] = 10.0f * i;
        ds.targets[2 * i + 1] = i + 0.5f;
    }
    struct cnn_dataset held;
    int rows[20];
    assert_int_equal(cnn_dataset_split(&ds, 0.3, 1, CNN_RNG_STREAM_TEST_SPLIT,
                                       &held, &err), CNN_OK);
    assert_int_equal(held.n, 6);
    assert_int_equal(ds.n, 14);
    check_partition(&held, &ds, 20, rows);
    const struct cnn_dataset *part[] = {&held, &ds};
    for (int p = 0; p < 2; p++) {
        assert_null(part[p]->labels);
        assert_int_equal(part[p]->n_targets, 2);
        for (long long i = 0; i < part[p]->n; i++) {
            float row = part[p]->features[2 * i];
            assert_true(part[p]->features[2 * i + 1] == -row);
            assert_true(part[p]->targets[2 * i] == 10.0f * row);
            assert_true(part[p]->targets[2 * i + 1] == row + 0.5f);
        }
    }
    cnn_dataset_free(&held);
    cnn_dataset_free(&ds);
}

/* --- loader ------------------------------------------------------------- */

static struct cnn_dataset counting_set(int n)
{
    struct cnn_dataset ds = {.n = n, .shape = {1, 1, 2}, .n_classes = n};
    ds.pixels = malloc((size_t)n * 2);
    ds.labels = malloc((size_t)n * sizeof *ds.labels);
    assert_non_null(ds.pixels);
    assert_non_null(ds.labels);
    for (int i = 0; i < n; i++) {
        ds.pixels[2 * i] = (uint8_t)i;
        ds.pixels[2 * i + 1] = 255;
        ds.labels[i] = i;
    }
    return ds;
}

static void epoch_order(struct cnn_loader *ld, long long epoch, int *out)
{
    float x[2 * 7];
    int y[7], k = 0, n;
    cnn_loader_start_epoch(ld, epoch, true);
    while ((n = cnn_loader_next(ld, x, y, NULL)) > 0)
        for (int i = 0; i < n; i++)
            out[k++] = y[i];
}

static void test_loader_order(void **state)
{
    struct cnn_dataset ds = counting_set(50);
    struct cnn_norm norm = {.c = 1, .mean = {0}, .std = {1}};
    struct cnn_loader a, b;
    assert_int_equal(cnn_loader_init(&a, &ds, &norm, 7, 42, NULL), CNN_OK);
    assert_int_equal(cnn_loader_init(&b, &ds, &norm, 7, 42, NULL), CNN_OK);
    assert_int_equal(cnn_loader_batches(&a), 8);

    int o1[50], o2[50], o3[50], seen[50] = {0};
    epoch_order(&a, 3, o1);
    epoch_order(&b, 1, o2);       /* b's history differs ... */
    epoch_order(&b, 3, o2);       /* ... but epoch 3 is epoch 3 */
    assert_memory_equal(o1, o2, sizeof o1);
    epoch_order(&a, 4, o3);
    assert_memory_not_equal(o1, o3, sizeof o1);
    for (int i = 0; i < 50; i++)
        seen[o1[i]]++;
    for (int i = 0; i < 50; i++)
        assert_int_equal(seen[i], 1);

    cnn_loader_free(&a);
    cnn_loader_free(&b);
    cnn_dataset_free(&ds);
}

static void test_loader_values_and_short_batch(void **state)
{
    struct cnn_dataset ds = counting_set(5);
    struct cnn_norm norm = {.c = 1, .mean = {0.5f}, .std = {0.25f}};
    struct cnn_loader ld;
    float x[2 * 3];
    int y[3];
    assert_int_equal(cnn_loader_init(&ld, &ds, &norm, 3, 1, NULL), CNN_OK);
    cnn_loader_start_epoch(&ld, 0, false);
    assert_int_equal(cnn_loader_next(&ld, x, y, NULL), 3);
    assert_float_equal(x[0], (0 / 255.0 - 0.5) / 0.25, 1e-6);
    assert_float_equal(x[1], (1.0 - 0.5) / 0.25, 1e-6);
    assert_float_equal(x[4], (2 / 255.0 - 0.5) / 0.25, 1e-6);
    assert_int_equal(cnn_loader_next(&ld, x, y, NULL), 2);
    assert_int_equal(y[1], 4);
    assert_int_equal(cnn_loader_next(&ld, x, y, NULL), 0);
    cnn_loader_free(&ld);
    cnn_dataset_free(&ds);
}

static void test_augment(void **state)
{
    /* One 1x3x4 image, pixel = position, identity normalization. */
    struct cnn_dataset ds = {.n = 1, .shape = {1, 3, 4}, .n_classes = 1};
    ds.pixels = malloc(12);
    ds.labels = calloc(1, sizeof *ds.labels);
    assert_non_null(ds.pixels);
    assert_non_null(ds.labels);
    for (int i = 0; i < 12; i++)
        ds.pixels[i] = (uint8_t)(i * 20);
    struct cnn_norm norm = {.c = 1, .mean = {0}, .std = {1.0f / 255}};
    struct cnn_augment_config flip = {.flip = true};
    struct cnn_loader ld;
    float x[12], first[12];
    int y;
    bool flipped = false, kept = false;
    assert_int_equal(cnn_loader_init(&ld, &ds, &norm, 1, 5, NULL), CNN_OK);
    ld.augment = &flip;
    for (int epoch = 0; epoch < 16; epoch++) {
        cnn_loader_start_epoch(&ld, epoch, false);
        assert_int_equal(cnn_loader_next(&ld, x, &y, NULL), 1);
        /* Either the image or its mirror, row by row. */
        bool mirror = x[0] == 3 * 20;
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 4; c++)
                assert_float_equal(x[r * 4 + c],
                                   (r * 4 + (mirror ? 3 - c : c)) * 20, 1e-4);
        flipped |= mirror;
        kept |= !mirror;
    }
    assert_true(flipped && kept);

    /* The same epoch and place draw the same, whatever came before. */
    struct cnn_augment_config all = {.crop_pad = 2, .flip = true,
                                     .erase_size = 2, .erase_p = 1.0};
    ld.augment = &all;
    cnn_loader_start_epoch(&ld, 7, false);
    cnn_loader_next(&ld, first, &y, NULL);
    cnn_loader_start_epoch(&ld, 3, false);
    cnn_loader_next(&ld, x, &y, NULL);
    cnn_loader_start_epoch(&ld, 7, false);
    cnn_loader_next(&ld, x, &y, NULL);
    assert_memory_equal(x, first, sizeof x);
    int zeros = 0;
    for (int i = 0; i < 12; i++)
        zeros += x[i] == 0.0f;
    assert_true(zeros >= 1);      /* erased (or padded black) pixels */
    cnn_loader_free(&ld);
    cnn_dataset_free(&ds);
}

static void test_norm_setup(void **state)
{
    struct cnn_dataset ds = counting_set(4);      /* pixels 0,255,1,255,... */
    struct cnn_data_config cfg = {.normalize_auto = true};
    struct cnn_norm norm;
    assert_int_equal(cnn_norm_setup(&norm, &cfg, &ds, NULL), CNN_OK);
    double mean = (0 + 1 + 2 + 3 + 4 * 255.0) / 8 / 255.0;
    assert_float_equal(norm.mean[0], mean, 1e-6);
    assert_true(norm.std[0] > 0.4f && norm.std[0] < 0.6f);

    cfg = (struct cnn_data_config){.n_mean = 1, .n_std = 1, .mean = {0.3f},
                                   .std = {0.2f}};
    assert_int_equal(cnn_norm_setup(&norm, &cfg, &ds, NULL), CNN_OK);
    assert_float_equal(norm.mean[0], 0.3, 1e-7);
    assert_float_equal(norm.std[0], 0.2, 1e-7);
    cnn_dataset_free(&ds);
}

/* --- standardization ---------------------------------------------------- */

static double f0_of(int i) { return 1000 + (i * 37 % 11) * 3.5; }
static double f1_of(int i) { return 0.001 * i; }
static double t0_of(int i) { return 3.0 * i + 2; }
static double t1_of(int i) { return -(i % 7) * 100.5; }

/* mean and population deviation of v[0..n) */
static void stats(const double *v, int n, double *mean, double *std)
{
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++)
        s2 += (v[i] - *mean) * (v[i] - *mean);
    *std = sqrt(s2 / n);
}

static void test_standardize(void **state)
{
    (void)state;
    enum { N = 50 };
    struct cnn_error err = {0};
    char text[8192];
    size_t len = (size_t)snprintf(text, sizeof text, "f0,f1,f2,t0,t1\n");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "%.9g,%.9g,5,%.9g,%.9g\n", f0_of(i), f1_of(i),
                                t0_of(i), t1_of(i));
    put("t.csv", text);
    struct cnn_config *cfg = csv_config("  task: regression\n"
                                        "  standardize: true\n"
                                        "  csv: {target: [t0, t1]}\n");
    struct cnn_dataset ds;
    struct cnn_norm norm;
    load_ok(&ds, cfg);
    assert_int_equal(ds.n, N);
    assert_int_equal(ds.n_targets, 2);
    assert_int_equal(cnn_norm_setup(&norm, &cfg->data, &ds, &err), CNN_OK);
    assert_int_equal(norm.n_feat, 3);
    assert_int_equal(norm.n_target, 2);

    /* Each feature of the training set to mean 0, deviation 1; a
     * constant one to 0, not NaN. */
    double x[3][N];
    float row[3];
    for (int i = 0; i < N; i++) {
        cnn_norm_apply(&norm, &ds, i, row);
        for (int j = 0; j < 3; j++)
            x[j][i] = row[j];
    }
    for (int j = 0; j < 2; j++) {
        double m, s;
        stats(x[j], N, &m, &s);
        assert_float_equal(m, 0.0, 1e-4);
        assert_float_equal(s, 1.0, 1e-3);
    }
    for (int i = 0; i < N; i++)
        assert_true(x[2][i] == 0.0);

    /* The saved figures are the targets' own mean and deviation. */
    double t[2][N], tm[2], ts[2];
    for (int i = 0; i < N; i++) {
        t[0][i] = t0_of(i);
        t[1][i] = t1_of(i);
    }
    for (int k = 0; k < 2; k++) {
        stats(t[k], N, &tm[k], &ts[k]);
        assert_float_equal(norm.target_mean[k], tm[k], 1e-4 * ts[k]);
        assert_float_equal(norm.target_std[k], ts[k], 1e-4 * ts[k]);
    }

    /* The loader's targets, shuffled with their examples: mean 0,
     * deviation 1, and each unscales to its own row's values (the row
     * found from feature 1, i / 1000). */
    struct cnn_loader ld;
    float xb[8 * 3], yb[8 * 2];
    double got[2][N];
    int n, k = 0, moved = 0;
    assert_int_equal(cnn_loader_init(&ld, &ds, &norm, 8, 3, &err), CNN_OK);
    cnn_loader_start_epoch(&ld, 1, true);
    while ((n = cnn_loader_next(&ld, xb, NULL, yb)) > 0)
        for (int b = 0; b < n; b++, k++) {
            got[0][k] = yb[2 * b];
            got[1][k] = yb[2 * b + 1];
            double raw = xb[3 * b + 1] * norm.feat_std[1] + norm.feat_mean[1];
            int i = (int)lround(raw * 1000);
            assert_in_range(i, 0, N - 1);
            moved += i != k;
            float y[2] = {yb[2 * b], yb[2 * b + 1]};
            cnn_norm_unscale_targets(&norm, y, 2);
            assert_float_equal(y[0], t0_of(i), 1e-3);
            assert_float_equal(y[1], t1_of(i), 1e-3);
        }
    assert_int_equal(k, N);
    assert_true(moved > 0);
    for (int j = 0; j < 2; j++) {
        double m, s;
        stats(got[j], N, &m, &s);
        assert_float_equal(m, 0.0, 1e-4);
        assert_float_equal(s, 1.0, 1e-3);
    }
    float y[2] = {0, 1};
    cnn_norm_unscale_targets(&norm, y, 2);
    assert_float_equal(y[0], tm[0], 1e-3);
    assert_float_equal(y[1], tm[1] + ts[1], 1e-3);
    cnn_loader_free(&ld);
    cnn_norm_free(&norm);

    /* Without standardize: no per-feature step, targets as they are. */
    struct cnn_data_config plain = cfg->data;
    plain.standardize = false;
    assert_int_equal(cnn_norm_setup(&norm, &plain, &ds, &err), CNN_OK);
    assert_int_equal(norm.n_feat, 0);
    assert_int_equal(norm.n_target, 0);
    assert_int_equal(cnn_loader_init(&ld, &ds, &norm, 8, 3, &err), CNN_OK);
    assert_int_equal(cnn_loader_next(&ld, xb, NULL, yb), 8);
    assert_float_equal(xb[0], f0_of(0), 1e-3);
    assert_float_equal(yb[2], t0_of(1), 1e-6);
    assert_float_equal(yb[3], t1_of(1), 1e-6);
    cnn_loader_free(&ld);
    cnn_norm_free(&norm);
    cnn_dataset_free(&ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_plain_and_gzip),
        cmocka_unit_test(test_idx_broken),
        cmocka_unit_test(test_idx_corrupt_gzip),
        cmocka_unit_test(test_idx_gzip_members),
        cmocka_unit_test(test_idx_mismatch_and_missing),
        SCRATCH(test_csv_delimiters),
        SCRATCH(test_csv_header),
        SCRATCH(test_csv_skip_rows),
        SCRATCH(test_csv_columns),
        SCRATCH(test_csv_regression_targets),
        SCRATCH(test_csv_targets_file),
        SCRATCH(test_csv_gzip),
        SCRATCH(test_csv_string_labels),
        SCRATCH(test_csv_quotes_crlf_blanks),
        SCRATCH(test_csv_shape_and_limit),
        SCRATCH(test_csv_broken_rows),
        SCRATCH(test_csv_broken_files),
        SCRATCH(test_csv_broken_columns),
        SCRATCH(test_csv_broken_test_split),
        SCRATCH(test_csv_truncated_gzip),
        SCRATCH(test_csv_bom),
        SCRATCH(test_csv_whitespace_quotes),
        SCRATCH(test_csv_test_split_without_targets),
        SCRATCH(test_cifar_good),
        SCRATCH(test_cifar_broken),
        SCRATCH(test_folder_classes),
        SCRATCH(test_folder_convert_and_resize),
        SCRATCH(test_folder_broken),
        SCRATCH(test_image_read_formats),
        SCRATCH(test_image_broken),
        SCRATCH(test_image_truncated_jpeg),
        cmocka_unit_test(test_image_resize),
        cmocka_unit_test(test_image_resize_mixed),
        cmocka_unit_test(test_split_stratified),
        cmocka_unit_test(test_split_regression),
        SCRATCH(test_standardize),
        cmocka_unit_test(test_loader_order),
        cmocka_unit_test(test_loader_values_and_short_batch),
        cmocka_unit_test(test_norm_setup),
        cmocka_unit_test(test_augment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
