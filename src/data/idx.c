/*
 * IDX files (the MNIST family's format), gzip'd or plain, each read whole
 * and decoded in one go. Only unsigned-byte data is accepted: the 0x08
 * type code, images of 2-4 dimensions, labels of 1. Every byte the header
 * promises must be there; extra bytes after it are an error too.
 */
#include "cnn/data.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libdeflate.h>
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

enum { MAX_HEADER = 4 + 4 * 4 };

/* The magic number and dimensions from the first avail bytes of a file,
 * checked: ubyte data, 1 to 4 dimensions, each in range. *header gets
 * their length and *bytes the data's. */
static enum cnn_status parse_header(const uint8_t *b, size_t avail,
                                    const char *path, struct idx *idx,
                                    size_t *header, double *bytes,
                                    struct cnn_error *err)
{
    if (avail < 4)
        return cnn_error_at(err, CNN_ERR_DATA, path, "truncated: the header "
                            "needs 4 bytes, the file has %zu", avail);
    if (b[0] != 0 || b[1] != 0 || b[3] < 1 || b[3] > 4)
        return cnn_error_at(err, CNN_ERR_DATA, path, "not an IDX file (bad "
                            "magic %02x %02x %02x %02x)", b[0], b[1], b[2],
                            b[3]);
    if (b[2] != IDX_UBYTE)
        return cnn_error_at(err, CNN_ERR_DATA, path, "IDX type 0x%02x is not "
                            "supported; only unsigned bytes (0x08)", b[2]);
    idx->ndim = b[3];
    *header = 4 + 4 * (size_t)idx->ndim;
    if (avail < *header)
        return cnn_error_at(err, CNN_ERR_DATA, path, "truncated: the header "
                            "needs %zu bytes, the file has %zu", *header,
                            avail);
    *bytes = 1.0;
    for (int i = 0; i < idx->ndim; i++) {
        const uint8_t *d = b + 4 + 4 * i;
        idx->dims[i] = (long long)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 |
                                   (uint32_t)d[2] << 8 | d[3]);
        if (idx->dims[i] < 1 || idx->dims[i] > (i == 0 ? (1 << 30) : MAX_DIM))
            return cnn_error_at(err, CNN_ERR_DATA, path, "dimension %d is "
                                "%lld: out of range", i, idx->dims[i]);
        *bytes *= (double)idx->dims[i];
    }
    if (*bytes > MAX_BYTES)
        return cnn_error_at(err, CNN_ERR_DATA, path, "header promises %.3g "
                            "bytes: too large", *bytes);
    return CNN_OK;
}

static bool is_gzip(const uint8_t *b, size_t n)
{
    return n >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}

/* The whole file in memory (plain or compressed, as it is on disk). */
static enum cnn_status slurp(const char *path, uint8_t **buf, size_t *n,
                             struct cnn_error *err)
{
    *buf = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            strerror(errno));
    struct stat sb;
    enum cnn_status st = CNN_OK;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode))
        st = cnn_error_at(err, CNN_ERR_DATA, path, "not a regular file");
    else if ((double)sb.st_size > MAX_BYTES + MAX_HEADER)
        st = cnn_error_at(err, CNN_ERR_DATA, path, "%.3g bytes: too large",
                          (double)sb.st_size);
    else if (!(*buf = malloc(sb.st_size ? (size_t)sb.st_size : 1)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for %lld "
                           "bytes", path, (long long)sb.st_size);
    else if ((*n = fread(*buf, 1, (size_t)sb.st_size, f)) !=
             (size_t)sb.st_size)
        st = cnn_error_at(err, CNN_ERR_DATA, path, "read error: %s",
                          ferror(f) ? strerror(errno) : "file shrank");
    fclose(f);
    if (st != CNN_OK) {
        free(*buf);
        *buf = NULL;
    }
    return st;
}

/* The first *n decoded bytes of a gzip file (fewer when it holds fewer),
 * across members, through zlib's stream: the header, before the whole
 * is decoded into a buffer of the size it promises. */
static enum cnn_status gzip_prefix(const uint8_t *in, size_t in_n,
                                   uint8_t *out, size_t *n, const char *path,
                                   struct cnn_error *err)
{
    z_stream z = {0};
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: zlib: out of memory",
                             path);
    z.next_in = (Bytef *)in;
    z.avail_in = in_n > UINT_MAX ? UINT_MAX : (uInt)in_n;
    z.next_out = out;
    z.avail_out = (uInt)*n;
    int r;
    while ((r = inflate(&z, Z_SYNC_FLUSH)) == Z_STREAM_END && z.avail_out &&
           is_gzip(z.next_in, z.avail_in))
        inflateReset(&z);               /* the next member */
    *n -= z.avail_out;
    inflateEnd(&z);
    /* What is wrong after the header, gunzip will tell. */
    if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR)
        return cnn_error_at(err, CNN_ERR_DATA, path, "corrupt gzip data in "
                            "the header");
    return CNN_OK;
}

/* Decodes every member of a gzip file into out, which holds exactly the
 * cap bytes the header promises; *got gets how many there were. Whole
 * buffers through libdeflate, about twice as fast as zlib's stream (a
 * start-up cost of every Fashion-MNIST run), and each member's CRC-32
 * and length checked. */
static enum cnn_status gunzip(const uint8_t *in, size_t in_n, uint8_t *out,
                              size_t cap, size_t *got, const char *path,
                              struct cnn_error *err)
{
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    if (!d)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", path);
    enum cnn_status st = CNN_OK;
    size_t pos = 0;
    *got = 0;
    while (st == CNN_OK && pos < in_n) {
        if (!is_gzip(in + pos, in_n - pos)) {
            st = cnn_error_at(err, CNN_ERR_DATA, path, "%zu bytes of "
                              "something else after the gzip data: damaged "
                              "file", in_n - pos);
            break;
        }
        size_t used, made;      /* set only on success */
        enum libdeflate_result r = libdeflate_gzip_decompress_ex(
            d, in + pos, in_n - pos, out + *got, cap - *got, &used, &made);
        if (r == LIBDEFLATE_INSUFFICIENT_SPACE)
            st = cnn_error_at(err, CNN_ERR_DATA, path, "longer than its "
                              "header says (%zu data bytes): wrong or "
                              "damaged file", cap);
        else if (r != LIBDEFLATE_SUCCESS)
            st = cnn_error_at(err, CNN_ERR_DATA, path, "corrupt file: bad "
                              "gzip data (truncated, or damaged)");
        if (st != CNN_OK)
            break;
        pos += used;
        *got += made;
    }
    libdeflate_free_decompressor(d);
    return st;
}

static enum cnn_status idx_read(struct idx *idx, const char *path,
                                struct cnn_error *err)
{
    memset(idx, 0, sizeof *idx);
    uint8_t *raw;
    size_t raw_n;
    enum cnn_status st = slurp(path, &raw, &raw_n, err);
    if (st != CNN_OK)
        return st;

    bool gz = is_gzip(raw, raw_n);
    uint8_t head[MAX_HEADER];
    size_t head_n = gz ? sizeof head : raw_n;
    if (gz)
        st = gzip_prefix(raw, raw_n, head, &head_n, path, err);
    size_t header = 0;
    double bytes = 0;
    if (st == CNN_OK)
        st = parse_header(gz ? head : raw, head_n, path, idx, &header, &bytes,
                          err);

    size_t total = header + (size_t)bytes, have = raw_n;
    uint8_t *all = raw;
    if (st == CNN_OK && gz) {
        all = malloc(total);
        st = all ? gunzip(raw, raw_n, all, total, &have, path, err)
                 : cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for "
                                 "%zu bytes", path, total);
        free(raw);
    }
    if (st == CNN_OK && have < total)
        st = cnn_error_at(err, CNN_ERR_DATA, path, "truncated: the data needs "
                          "%zu bytes, the file has %zu", total - header,
                          have - header);
    if (st == CNN_OK && have > total)
        st = cnn_error_at(err, CNN_ERR_DATA, path, "longer than its header "
                          "says (%zu data bytes): wrong or damaged file",
                          total - header);
    if (st != CNN_OK) {
        free(all);
        return st;
    }
    memmove(all, all + header, total - header);
    idx->size = total - header;
    idx->data = all;
    return CNN_OK;
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
    uint8_t head[MAX_HEADER];
    gzFile f = gzopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            errno ? strerror(errno) : "zlib error");
    int n = gzread(f, head, sizeof head);
    gzclose(f);
    size_t header;
    double bytes;
    enum cnn_status st = n < 0
        ? cnn_error_at(err, CNN_ERR_DATA, path, "corrupt file")
        : parse_header(head, (size_t)n, path, &idx, &header, &bytes, err);
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
