/*
 * IDX files (the MNIST family's format), read through zlib so gzip'd and
 * plain files both work. Only unsigned-byte data is accepted: the 0x08
 * type code, images of 2-4 dimensions, labels of 1. Every byte the header
 * promises must be there; extra bytes after it are an error too.
 */
#include "cnn/data.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum {
    IDX_UBYTE = 0x08,
    MAX_DIM = 1 << 20,
};

/* 8 GiB of raw examples is far past anything this trainer holds. */
static const double MAX_BYTES = 8.0 * (1ull << 30);

struct idx {
    int ndim;
    long long dims[4];
    uint8_t *data;
    size_t size;
};

static enum cnn_status read_exact(gzFile f, const char *path, void *buf,
                                  size_t n, const char *what,
                                  struct cnn_error *err)
{
    size_t got = 0;
    while (got < n) {
        unsigned chunk = n - got > (1u << 30) ? 1u << 30 : (unsigned)(n - got);
        int r = gzread(f, (char *)buf + got, chunk);
        if (r < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            return cnn_error_at(err, CNN_ERR_DATA, path, "corrupt file while "
                                "reading %s: %s", what, msg);
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got < n)
        return cnn_error_at(err, CNN_ERR_DATA, path, "truncated: %s needs "
                            "%zu bytes, the file has %zu", what, n, got);
    return CNN_OK;
}

/* The magic number and dimensions, checked: ubyte data, 1 to 4
 * dimensions, each in range. */
static enum cnn_status read_header(gzFile f, const char *path,
                                   struct idx *idx, double *bytes,
                                   struct cnn_error *err)
{
    uint8_t magic[4];
    enum cnn_status st = read_exact(f, path, magic, 4, "the header", err);
    if (st == CNN_OK && (magic[0] != 0 || magic[1] != 0 || magic[3] < 1 ||
                         magic[3] > 4))
        st = cnn_error_at(err, CNN_ERR_DATA, path, "not an IDX file (bad "
                          "magic %02x %02x %02x %02x)", magic[0], magic[1],
                          magic[2], magic[3]);
    if (st == CNN_OK && magic[2] != IDX_UBYTE)
        st = cnn_error_at(err, CNN_ERR_DATA, path, "IDX type 0x%02x is not "
                          "supported; only unsigned bytes (0x08)", magic[2]);

    *bytes = 1.0;
    idx->ndim = magic[3];
    for (int i = 0; st == CNN_OK && i < idx->ndim; i++) {
        uint8_t b[4];
        st = read_exact(f, path, b, 4, "the header", err);
        if (st != CNN_OK)
            break;
        idx->dims[i] = (long long)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
                                   (uint32_t)b[2] << 8 | b[3]);
        if (idx->dims[i] < 1 || idx->dims[i] > (i == 0 ? (1 << 30) : MAX_DIM))
            st = cnn_error_at(err, CNN_ERR_DATA, path, "dimension %d is %lld: "
                              "out of range", i, idx->dims[i]);
        *bytes *= (double)idx->dims[i];
    }
    return st;
}

static enum cnn_status idx_read(struct idx *idx, const char *path,
                                struct cnn_error *err)
{
    memset(idx, 0, sizeof *idx);
    gzFile f = gzopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            errno ? strerror(errno) : "zlib error");

    double bytes;
    enum cnn_status st = read_header(f, path, idx, &bytes, err);
    if (st == CNN_OK && bytes > MAX_BYTES)
        st = cnn_error_at(err, CNN_ERR_DATA, path, "header promises %.3g "
                          "bytes: too large", bytes);
    if (st == CNN_OK) {
        idx->size = (size_t)bytes;
        idx->data = malloc(idx->size);
        if (!idx->data)
            st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for "
                               "%zu bytes", path, idx->size);
    }
    if (st == CNN_OK)
        st = read_exact(f, path, idx->data, idx->size, "the data", err);
    if (st == CNN_OK) {
        char extra;
        if (gzread(f, &extra, 1) > 0)
            st = cnn_error_at(err, CNN_ERR_DATA, path, "longer than its "
                              "header says (%zu data bytes): wrong or "
                              "damaged file", idx->size);
    }
    gzclose(f);
    if (st != CNN_OK) {
        free(idx->data);
        idx->data = NULL;
    }
    return st;
}

/* n x (features) is flat, n x h x w one channel, n x c x h x w as is. */
static struct cnn_shape shape_of(const struct idx *im)
{
    if (im->ndim == 2)
        return (struct cnn_shape){(int)im->dims[1], 1, 1};
    if (im->ndim == 3)
        return (struct cnn_shape){1, (int)im->dims[1], (int)im->dims[2]};
    return (struct cnn_shape){(int)im->dims[1], (int)im->dims[2],
                              (int)im->dims[3]};
}

enum cnn_status cnn_idx_load(struct cnn_dataset *ds, const char *images,
                             const char *labels, long long limit,
                             struct cnn_error *err)
{
    memset(ds, 0, sizeof *ds);
    struct idx im, lb;
    enum cnn_status st = idx_read(&im, images, err);
    if (st != CNN_OK)
        return st;
    st = idx_read(&lb, labels, err);
    if (st != CNN_OK) {
        free(im.data);
        return st;
    }

    if (im.ndim < 2)
        st = cnn_error_at(err, CNN_ERR_DATA, images, "an image file has 2 to "
                          "4 dimensions, this one has %d", im.ndim);
    else if (lb.ndim != 1)
        st = cnn_error_at(err, CNN_ERR_DATA, labels, "a label file has 1 "
                          "dimension, this one has %d", lb.ndim);
    else if (im.dims[0] != lb.dims[0])
        st = cnn_error_at(err, CNN_ERR_DATA, labels, "%lld labels for %lld "
                          "images in %s", lb.dims[0], im.dims[0], images);
    if (st != CNN_OK) {
        free(im.data);
        free(lb.data);
        return st;
    }

    ds->n = limit > 0 && limit < im.dims[0] ? limit : im.dims[0];
    ds->shape = shape_of(&im);
    ds->pixels = im.data;
    ds->labels = malloc((size_t)ds->n * sizeof *ds->labels);
    if (!ds->labels) {
        free(lb.data);
        cnn_dataset_free(ds);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    for (long long i = 0; i < ds->n; i++) {
        ds->labels[i] = lb.data[i];
        if (ds->labels[i] + 1 > ds->n_classes)
            ds->n_classes = ds->labels[i] + 1;
    }
    free(lb.data);
    return CNN_OK;
}

enum cnn_status cnn_idx_peek_shape(const char *path, struct cnn_shape *shape,
                                   struct cnn_error *err)
{
    struct idx idx = {0};
    double bytes;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            errno ? strerror(errno) : "zlib error");
    enum cnn_status st = read_header(f, path, &idx, &bytes, err);
    gzclose(f);
    if (st == CNN_OK && idx.ndim < 2)
        st = cnn_error_at(err, CNN_ERR_DATA, path, "an image file has 2 to 4 "
                          "dimensions, this one has %d", idx.ndim);
    if (st == CNN_OK)
        *shape = shape_of(&idx);
    return st;
}

enum cnn_status cnn_idx_load_images(struct cnn_dataset *ds, const char *path,
                                    struct cnn_error *err)
{
    memset(ds, 0, sizeof *ds);
    struct idx im;
    enum cnn_status st = idx_read(&im, path, err);
    if (st != CNN_OK)
        return st;
    if (im.ndim < 2) {
        free(im.data);
        return cnn_error_at(err, CNN_ERR_DATA, path, "an image file has 2 to "
                            "4 dimensions, this one has %d", im.ndim);
    }
    ds->n = im.dims[0];
    ds->shape = shape_of(&im);
    ds->pixels = im.data;
    ds->labels = calloc((size_t)ds->n, sizeof *ds->labels);
    ds->n_classes = 1;
    if (!ds->labels) {
        cnn_dataset_free(ds);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    return CNN_OK;
}
