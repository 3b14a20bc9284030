/*
 * safetensors writer and a strict reader for our own tensors. The reader
 * parses only the JSON this format allows (one object of objects with
 * string, integer-array and string-map values) and checks every offset
 * against the file size before touching data.
 */
#include "cnn/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; add byte swapping for this target"
#endif

static const uint64_t MAX_HEADER = 100u << 20;

/* --- atomic file replacement -------------------------------------------- */

static enum cnn_status sync_dir_of(const char *path, struct cnn_error *err)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path + (slash == path)),
                 path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return cnn_error_at(err, CNN_ERR_IO, dir, "cannot open directory: %s",
                            strerror(errno));
    int r = fsync(fd);
    close(fd);
    if (r != 0 && errno != EINVAL)
        return cnn_error_at(err, CNN_ERR_IO, dir, "fsync failed: %s",
                            strerror(errno));
    return CNN_OK;
}

enum cnn_status cnn_write_atomic(const char *path, const void *data,
                                 size_t len, struct cnn_error *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return cnn_error_at(err, CNN_ERR_IO, tmp, "cannot create: %s",
                            strerror(errno));

    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return cnn_error_at(err, CNN_ERR_IO, tmp, "write failed: %s",
                                strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return cnn_error_at(err, CNN_ERR_IO, tmp, "flush failed: %s",
                            strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return cnn_error_at(err, CNN_ERR_IO, path, "cannot rename %s: %s",
                            tmp, strerror(e));
    }
    return sync_dir_of(path, err);
}

/* --- writing -------------------------------------------------------------- */

void cnn_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p == '\t')
            fputs("\\t", f);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

struct header_ctx {
    FILE *f;
    size_t offset;
};

static void header_entry(void *ctx, const char *name, struct cnn_param *p)
{
    struct header_ctx *h = ctx;
    fputc(',', h->f);
    cnn_json_string(h->f, name);
    fputs(":{\"dtype\":\"F32\",\"shape\":[", h->f);
    for (int i = 0; i < p->ndim; i++)
        fprintf(h->f, "%s%d", i ? "," : "", p->dims[i]);
    size_t bytes = p->count * sizeof(float);
    fprintf(h->f, "],\"data_offsets\":[%zu,%zu]}", h->offset,
            h->offset + bytes);
    h->offset += bytes;
}

enum cnn_status cnn_safetensors_save(const char *path, struct cnn_net *net,
                                     const struct cnn_meta *meta, int n_meta,
                                     struct cnn_error *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");

    /* Header first, after 8 bytes kept for its length. */
    fwrite("\0\0\0\0\0\0\0\0", 1, 8, f);
    fputs("{\"__metadata__\":{", f);
    for (int i = 0; i < n_meta; i++) {
        if (i)
            fputc(',', f);
        cnn_json_string(f, meta[i].key);
        fputc(':', f);
        cnn_json_string(f, meta[i].value);
    }
    fputc('}', f);
    struct header_ctx h = {.f = f};
    cnn_net_each_param(net, header_entry, &h);
    fputc('}', f);

    /* The data starts 8-byte aligned: pad the header with spaces. */
    fflush(f);
    while ((len - 8) % 8 != 0) {
        fputc(' ', f);
        fflush(f);
    }
    uint64_t header_len = len - 8;
    fwrite(net->params, sizeof(float), net->n_params, f);
    if (fclose(f) != 0) {
        free(buf);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (char)(header_len >> (8 * i));

    enum cnn_status st = cnn_write_atomic(path, buf, len, err);
    free(buf);
    return st;
}

/* --- reading -------------------------------------------------------------- */

struct json {
    const char *p, *end;
};

static void skip_ws(struct json *j)
{
    while (j->p < j->end && strchr(" \t\r\n", *j->p))
        j->p++;
}

static bool expect(struct json *j, char c)
{
    skip_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return true;
    }
    return false;
}

/* Reads a JSON string into out (escapes decoded; \u beyond ASCII kept as
 * '?', which is enough for names and metadata we only compare). */
static bool read_string(struct json *j, char *out, size_t cap)
{
    if (!expect(j, '"'))
        return false;
    size_t n = 0;
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if (c == '\\') {
            if (j->p >= j->end)
                return false;
            c = *j->p++;
            if (c == 'n')
                c = '\n';
            else if (c == 't')
                c = '\t';
            else if (c == 'u') {
                if (j->end - j->p < 4)
                    return false;
                unsigned v;
                char hex[5] = {j->p[0], j->p[1], j->p[2], j->p[3], 0};
                if (sscanf(hex, "%4x", &v) != 1)
                    return false;
                j->p += 4;
                c = v < 0x80 ? (char)v : '?';
            } else if (!strchr("\"\\/bfr", c)) {
                return false;
            }
        }
        if (out && n + 1 < cap)
            out[n++] = c;
    }
    if (out && cap)
        out[n] = '\0';
    return expect(j, '"');
}

static bool read_uint(struct json *j, uint64_t *v)
{
    skip_ws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return false;
    *v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        if (*v > (UINT64_MAX - 9) / 10)
            return false;
        *v = *v * 10 + (uint64_t)(*j->p++ - '0');
    }
    return true;
}

static bool read_uint_list(struct json *j, uint64_t *v, int cap, int *n)
{
    *n = 0;
    if (!expect(j, '['))
        return false;
    if (expect(j, ']'))
        return true;
    do {
        if (*n >= cap || !read_uint(j, &v[(*n)++]))
            return false;
    } while (expect(j, ','));
    return expect(j, ']');
}

struct tensor_info {
    char name[160];
    char dtype[16];
    uint64_t shape[8];
    int ndim;
    uint64_t begin, end;
};

static bool read_tensor(struct json *j, struct tensor_info *t)
{
    int n_off = 0;
    uint64_t off[2];
    bool have_dtype = false, have_shape = false;
    if (!expect(j, '{'))
        return false;
    do {
        char key[32];
        if (!read_string(j, key, sizeof key) || !expect(j, ':'))
            return false;
        if (strcmp(key, "dtype") == 0) {
            have_dtype = read_string(j, t->dtype, sizeof t->dtype);
            if (!have_dtype)
                return false;
        } else if (strcmp(key, "shape") == 0) {
            have_shape = read_uint_list(j, t->shape, 8, &t->ndim);
            if (!have_shape)
                return false;
        } else if (strcmp(key, "data_offsets") == 0) {
            if (!read_uint_list(j, off, 2, &n_off) || n_off != 2)
                return false;
        } else {
            return false;
        }
    } while (expect(j, ','));
    t->begin = off[0];
    t->end = off[1];
    return expect(j, '}') && have_dtype && have_shape && n_off == 2;
}

static bool skip_metadata(struct json *j)
{
    if (!expect(j, '{'))
        return false;
    if (expect(j, '}'))
        return true;
    do {
        if (!read_string(j, NULL, 0) || !expect(j, ':') ||
            !read_string(j, NULL, 0))
            return false;
    } while (expect(j, ','));
    return expect(j, '}');
}

struct find_ctx {
    const struct tensor_info *t;
    struct cnn_param *found;
};

static void find_param(void *ctx, const char *name, struct cnn_param *p)
{
    struct find_ctx *f = ctx;
    if (strcmp(name, f->t->name) == 0)
        f->found = p;
}

static enum cnn_status check_and_copy(const char *path, struct cnn_net *net,
                                      const struct tensor_info *t,
                                      const char *data, uint64_t data_len,
                                      struct cnn_error *err)
{
    struct find_ctx f = {.t = t};
    cnn_net_each_param(net, find_param, &f);
    if (!f.found)
        return cnn_error_at(err, CNN_ERR_DATA, path, "tensor '%s' is not in "
                            "the model", t->name);
    struct cnn_param *p = f.found;
    bool same = strcmp(t->dtype, "F32") == 0 && t->ndim == p->ndim;
    for (int i = 0; same && i < p->ndim; i++)
        same = t->shape[i] == (uint64_t)p->dims[i];
    if (!same)
        return cnn_error_at(err, CNN_ERR_DATA, path, "tensor '%s' differs "
                            "from the model (dtype %s, %d dims)", t->name,
                            t->dtype, t->ndim);
    if (t->end < t->begin || t->end > data_len ||
        t->end - t->begin != p->count * sizeof(float))
        return cnn_error_at(err, CNN_ERR_DATA, path, "tensor '%s' has bad "
                            "data offsets [%llu, %llu]", t->name,
                            (unsigned long long)t->begin,
                            (unsigned long long)t->end);
    memcpy(p->data, data + t->begin, p->count * sizeof(float));
    return CNN_OK;
}

static enum cnn_status parse_header(const char *path, struct cnn_net *net,
                                    const char *hdr, uint64_t hdr_len,
                                    const char *data, uint64_t data_len,
                                    struct cnn_error *err)
{
    struct json j = {hdr, hdr + hdr_len};
    int loaded = 0, wanted = 0;
    for (int i = 0; i < net->n_layers; i++)
        wanted += net->layers[i].n_params;

    if (!expect(&j, '{'))
        goto bad;
    if (expect(&j, '}'))
        goto done;
    do {
        struct tensor_info t = {0};
        if (!read_string(&j, t.name, sizeof t.name) || !expect(&j, ':'))
            goto bad;
        if (strcmp(t.name, "__metadata__") == 0) {
            if (!skip_metadata(&j))
                goto bad;
            continue;
        }
        if (!read_tensor(&j, &t))
            goto bad;
        enum cnn_status st = check_and_copy(path, net, &t, data, data_len, err);
        if (st != CNN_OK)
            return st;
        loaded++;
    } while (expect(&j, ','));
    if (!expect(&j, '}'))
        goto bad;
done:
    if (loaded != wanted)
        return cnn_error_at(err, CNN_ERR_DATA, path, "has %d of the model's "
                            "%d tensors", loaded, wanted);
    return CNN_OK;
bad:
    return cnn_error_at(err, CNN_ERR_DATA, path, "malformed safetensors "
                        "header near byte %td", j.p - hdr + 8);
}

enum cnn_status cnn_safetensors_load(const char *path, struct cnn_net *net,
                                     struct cnn_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            strerror(errno));

    char *buf = NULL;
    enum cnn_status st = CNN_OK;
    uint8_t lenb[8];
    uint64_t hdr_len = 0;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    rewind(f);
    if (size < 8 || fread(lenb, 1, 8, f) != 8) {
        st = cnn_error_at(err, CNN_ERR_DATA, path, "too short for safetensors");
        goto out;
    }
    for (int i = 0; i < 8; i++)
        hdr_len |= (uint64_t)lenb[i] << (8 * i);
    if (hdr_len > MAX_HEADER || hdr_len > (uint64_t)size - 8) {
        st = cnn_error_at(err, CNN_ERR_DATA, path, "header length %llu does "
                          "not fit the file (%ld bytes)",
                          (unsigned long long)hdr_len, size);
        goto out;
    }
    buf = malloc((size_t)size - 8);
    if (!buf) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (fread(buf, 1, (size_t)size - 8, f) != (size_t)size - 8) {
        st = cnn_error_at(err, CNN_ERR_DATA, path, "read error");
        goto out;
    }
    st = parse_header(path, net, buf, hdr_len, buf + hdr_len,
                      (uint64_t)size - 8 - hdr_len, err);
out:
    free(buf);
    fclose(f);
    return st;
}
