/*
 * IDX reading on good and broken files (gzip'd and plain), and the
 * loader: a shuffle that depends only on (seed, epoch), normalization,
 * the short last batch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <cmocka.h>

#include "cnn/data.h"
#include "testutil.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_plain_and_gzip),
        cmocka_unit_test(test_idx_broken),
        cmocka_unit_test(test_idx_corrupt_gzip),
        cmocka_unit_test(test_idx_mismatch_and_missing),
        cmocka_unit_test(test_loader_order),
        cmocka_unit_test(test_loader_values_and_short_batch),
        cmocka_unit_test(test_norm_setup),
        cmocka_unit_test(test_augment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
