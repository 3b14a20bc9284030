/*
 * safetensors: a save/load round trip, the byte layout other readers
 * rely on (length prefix, 8-byte aligned JSON header, PyTorch shapes),
 * atomic replacement, and refusal of broken or mismatched files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "cnn/safetensors.h"
#include "testutil.h"

struct model {
    struct cnn_config cfg;
    struct cnn_net net;
};

static void build(struct model *m, const char *layers, uint64_t seed)
{
    char text[1024];
    snprintf(text, sizeof text, "data: {train: {images: a, labels: b}}\n"
             "model:\n  layers:\n%s", layers);
    struct cnn_error err = {0};
    assert_int_equal(cnn_config_load_string(&m->cfg, text, "t.yaml", ".",
                                            &err), CNN_OK);
    assert_int_equal(cnn_config_resolve(&m->cfg, &err), CNN_OK);
    assert_int_equal(cnn_net_build(&m->net, m->cfg.model_layers,
                                   (struct cnn_shape){1, 6, 6}, 2, &err),
                     CNN_OK);
    cnn_net_init_params(&m->net, seed);
}

static void drop(struct model *m)
{
    cnn_net_free(&m->net);
    cnn_config_free(&m->cfg);
}

static const char LAYERS[] =
    "    - conv2d: {filters: 2, size: 3}\n"
    "    - relu\n"
    "    - flatten\n"
    "    - dense: {units: 3, name: head}\n";

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    unsigned char *buf = malloc(*n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, *n, f), *n);
    fclose(f);
    buf[*n] = 0;
    return buf;
}

static void test_round_trip_and_layout(void **state)
{
    char *dir = test_tmpdir();
    char *path = test_path(dir, "w.safetensors");
    struct model a = {0}, b = {0};
    struct cnn_error err = {0};
    build(&a, LAYERS, 1);
    build(&b, LAYERS, 2);
    assert_memory_not_equal(a.net.params, b.net.params,
                            a.net.n_params * sizeof(float));

    const struct cnn_meta meta[] = {{"config", "a: \"quoted\"\nb: 1"}};
    assert_int_equal(cnn_safetensors_save(path, &a.net, meta, 1, &err), CNN_OK);
    assert_int_equal(cnn_safetensors_load(path, &b.net, &err), CNN_OK);
    assert_memory_equal(a.net.params, b.net.params,
                        a.net.n_params * sizeof(float));

    size_t n;
    unsigned char *buf = slurp(path, &n);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(n, 8 + hlen + a.net.n_params * sizeof(float));
    char *header = strndup((char *)buf + 8, hlen);
    assert_non_null(strstr(header, "\"conv2d_1.weight\":{\"dtype\":\"F32\","
                           "\"shape\":[2,1,3,3]"));
    assert_non_null(strstr(header, "\"head.weight\":{\"dtype\":\"F32\","
                           "\"shape\":[3,32]"));
    assert_non_null(strstr(header, "\"config\":\"a: \\\"quoted\\\"\\nb: 1\""));
    free(header);
    free(buf);

    /* No temporary file is left behind. */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 1", dir);
    assert_int_equal(system(cmd), 0);

    drop(&a);
    drop(&b);
    test_rm_tree(dir);
    free(path);
    free(dir);
}

/* Saves a good file, lets edit damage it, and expects load to fail with
 * the file named and needle in the message. */
static void expect_refused(void (*edit)(unsigned char *buf, size_t *n),
                           const char *needle)
{
    char *dir = test_tmpdir();
    char *path = test_path(dir, "w.safetensors");
    struct model a = {0};
    struct cnn_error err = {0};
    build(&a, LAYERS, 1);
    assert_int_equal(cnn_safetensors_save(path, &a.net, NULL, 0, &err), CNN_OK);

    size_t n;
    unsigned char *buf = slurp(path, &n);
    edit(buf, &n);
    assert_int_equal(test_write(path, buf, n), 0);
    assert_int_equal(cnn_safetensors_load(path, &a.net, &err), CNN_ERR_DATA);
    assert_string_equal(err.where, path);
    if (!strstr(err.message, needle))
        fail_msg("'%s' not in '%s'", needle, err.message);

    free(buf);
    drop(&a);
    test_rm_tree(dir);
    free(path);
    free(dir);
}

static void cut_data(unsigned char *buf, size_t *n)
{
    *n -= 4;
}

static void cut_header(unsigned char *buf, size_t *n)
{
    *n = 30;
}

static void cut_all(unsigned char *buf, size_t *n)
{
    *n = 5;
}

static void huge_length(unsigned char *buf, size_t *n)
{
    buf[6] = 0x01;
}

static void garbage_json(unsigned char *buf, size_t *n)
{
    buf[8] = '[';
}

static void rename_tensor(unsigned char *buf, size_t *n)
{
    char *p = strstr((char *)buf + 8, "head.weight");
    assert_non_null(p);
    memcpy(p, "tail", 4);
}

static void change_shape(unsigned char *buf, size_t *n)
{
    char *p = strstr((char *)buf + 8, "[3,32]");
    assert_non_null(p);
    p[1] = '4';
}

static void duplicate_name(unsigned char *buf, size_t *n)
{
    /* "head.weight" -> "head.bias"  : same length, JSON spaces allowed. */
    char *p = strstr((char *)buf + 8, "\"head.weight\"");
    assert_non_null(p);
    memcpy(p, "\"head.bias\"  ", 13);
}

static void bad_dtype(unsigned char *buf, size_t *n)
{
    char *p = strstr((char *)buf + 8, "F32");
    assert_non_null(p);
    memcpy(p, "X32", 3);
}

static void bad_escape(unsigned char *buf, size_t *n)
{
    char *p = strstr((char *)buf + 8, "head.weight");
    assert_non_null(p);
    memcpy(p, "he\\qd", 5);
}

static void test_broken_files(void **state)
{
    expect_refused(cut_data, "data offsets");
    expect_refused(cut_header, "does not fit");
    expect_refused(cut_all, "too short");
    expect_refused(huge_length, "does not fit");
    expect_refused(garbage_json, "malformed");
    expect_refused(rename_tensor, "head.weight");
    expect_refused(change_shape, "head.weight");
    expect_refused(duplicate_name, "appears twice");
    expect_refused(bad_dtype, "unknown dtype");
    expect_refused(bad_escape, "malformed");
}

static void test_missing_file(void **state)
{
    struct model a = {0};
    struct cnn_error err = {0};
    build(&a, LAYERS, 1);
    assert_int_equal(cnn_safetensors_load("/nonexistent/w.safetensors",
                                          &a.net, &err), CNN_ERR_DATA);
    assert_string_equal(err.where, "/nonexistent/w.safetensors");
    drop(&a);
}

static void test_atomic_write_keeps_old_on_failure(void **state)
{
    char *dir = test_tmpdir();
    char *path = test_path(dir, "f");
    struct cnn_error err = {0};
    assert_int_equal(cnn_write_atomic(path, "old", 3, &err), CNN_OK);
    chmod(dir, 0500);
    /* As root the directory stays writable; only check when it is not. */
    if (access(dir, W_OK) != 0) {
        assert_int_equal(cnn_write_atomic(path, "new", 3, &err), CNN_ERR_IO);
        size_t n;
        unsigned char *buf = slurp(path, &n);
        assert_memory_equal(buf, "old", 3);
        free(buf);
    }
    chmod(dir, 0700);
    assert_int_equal(cnn_write_atomic(path, "new!", 4, &err), CNN_OK);
    size_t n;
    unsigned char *buf = slurp(path, &n);
    assert_int_equal(n, 4);
    free(buf);
    test_rm_tree(dir);
    free(path);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_layout),
        cmocka_unit_test(test_broken_files),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_atomic_write_keeps_old_on_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
