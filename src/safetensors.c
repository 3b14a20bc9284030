/*
 * safetensors writer and a strict reader. The reader parses only the JSON
 * this format allows (one object of objects with string, integer-array
 * and string-map values) and checks every tensor's byte range against
 * the data before anyone touches it.
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

enum cnn_status cnn_safetensors_write(const char *path,
                                      const struct cnn_tensor *t, int n,
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
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        fputc(',', f);
        cnn_json_string(f, t[i].name);
        fprintf(f, ":{\"dtype\":\"%s\",\"shape\":[", t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++)
            fprintf(f, "%s%llu", d ? "," : "",
                    (unsigned long long)t[i].dims[d]);
        fprintf(f, "],\"data_offsets\":[%zu,%zu]}", offset,
                offset + t[i].bytes);
        offset += t[i].bytes;
    }
    fputc('}', f);

    /* The data starts 8-byte aligned: pad the header with spaces. */
    fflush(f);
    while ((len - 8) % 8 != 0) {
        fputc(' ', f);
        fflush(f);
    }
    uint64_t header_len = len - 8;
    for (int i = 0; i < n; i++)
        fwrite(t[i].data, 1, t[i].bytes, f);
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

struct collect {
    struct cnn_tensor *t;
    char *names;
    size_t name_cap, used;
    int n, cap;
};

static void collect_param(void *ctx, const char *name, struct cnn_param *p)
{
    struct collect *c = ctx;
    size_t len = strlen(name) + 1;
    if (c->n >= c->cap || c->used + len > c->name_cap)
        return;
    char *dst = c->names + c->used;
    memcpy(dst, name, len);
    c->used += len;

    struct cnn_tensor *t = &c->t[c->n++];
    *t = (struct cnn_tensor){.name = dst, .dtype = "F32", .ndim = p->ndim,
                             .data = p->data,
                             .bytes = p->count * sizeof(float)};
    for (int d = 0; d < p->ndim; d++)
        t->dims[d] = (uint64_t)p->dims[d];
}

int cnn_net_tensors(struct cnn_net *net, struct cnn_tensor *t, char *names,
                    size_t name_cap, int cap)
{
    struct collect c = {.t = t, .names = names, .name_cap = name_cap,
                        .cap = cap};
    cnn_net_each_param(net, collect_param, &c);
    return c.n;
}

enum cnn_status cnn_safetensors_save(const char *path, struct cnn_net *net,
                                     const struct cnn_meta *meta, int n_meta,
                                     struct cnn_error *err)
{
    int cap = cnn_net_count_tensors(net);
    size_t name_cap = (size_t)cap * 160 + 1;
    struct cnn_tensor *t = malloc((size_t)(cap ? cap : 1) * sizeof *t);
    char *names = malloc(name_cap);
    enum cnn_status st;
    if (!t || !names) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    } else {
        int n = cnn_net_tensors(net, t, names, name_cap, cap);
        st = cnn_safetensors_write(path, t, n, meta, n_meta, err);
    }
    free(t);
    free(names);
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

static size_t put_utf8(char *out, unsigned v)
{
    if (v < 0x80) {
        out[0] = (char)v;
        return 1;
    }
    if (v < 0x800) {
        out[0] = (char)(0xc0 | v >> 6);
        out[1] = (char)(0x80 | (v & 0x3f));
        return 2;
    }
    out[0] = (char)(0xe0 | v >> 12);
    out[1] = (char)(0x80 | ((v >> 6) & 0x3f));
    out[2] = (char)(0x80 | (v & 0x3f));
    return 3;
}

/* Reads a JSON string into a malloc'd, decoded copy (*out, may be NULL
 * to skip). Surrogate pairs become '?': names and metadata we write are
 * never outside the basic plane. */
static bool read_string(struct json *j, char **out)
{
    if (out)
        *out = NULL;
    if (!expect(j, '"'))
        return false;
    const char *start = j->p;
    while (j->p < j->end && *j->p != '"') {
        if (*j->p == '\\' && j->p + 1 < j->end)
            j->p++;
        j->p++;
    }
    if (j->p >= j->end)
        return false;
    size_t raw = (size_t)(j->p - start);
    j->p++;
    if (!out)
        return true;

    char *dst = malloc(raw * 3 + 1);    /* \uXXXX (6) -> at most 3 bytes */
    if (!dst)
        return false;
    size_t n = 0;
    for (const char *p = start; p < start + raw; p++) {
        if (*p != '\\') {
            dst[n++] = *p;
            continue;
        }
        char c = *++p;
        unsigned v;
        switch (c) {
        case 'n': dst[n++] = '\n'; break;
        case 't': dst[n++] = '\t'; break;
        case 'r': dst[n++] = '\r'; break;
        case 'b': dst[n++] = '\b'; break;
        case 'f': dst[n++] = '\f'; break;
        case '"': case '\\': case '/': dst[n++] = c; break;
        case 'u':
            /* Four hex digits, read by hand: the buffer has no NUL. */
            if (start + raw - p < 5) {
                free(dst);
                return false;
            }
            v = 0;
            for (int d = 1; d <= 4; d++) {
                char h = p[d];
                int x = h >= '0' && h <= '9' ? h - '0'
                      : h >= 'a' && h <= 'f' ? h - 'a' + 10
                      : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (x < 0) {
                    free(dst);
                    return false;
                }
                v = v * 16 + (unsigned)x;
            }
            p += 4;
            n += put_utf8(dst + n, v >= 0xd800 && v < 0xe000 ? '?' : v);
            break;
        default:
            free(dst);
            return false;
        }
    }
    dst[n] = '\0';
    *out = dst;
    return true;
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

static size_t dtype_size(const char *dtype)
{
    static const struct {
        const char *name;
        size_t size;
    } types[] = {
        {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
        {"I32", 4}, {"I16", 2}, {"I8", 1}, {"U64", 8}, {"U32", 4},
        {"U16", 2}, {"U8", 1}, {"BOOL", 1},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(types[i].name, dtype) == 0)
            return types[i].size;
    return 0;
}

/* One tensor entry; on success t->name and t->dtype are malloc'd. */
static bool read_tensor(struct json *j, struct cnn_tensor *t,
                        uint64_t off[2])
{
    int n_off = 0;
    char *dtype = NULL;
    bool have_shape = false, ok = expect(j, '{');
    while (ok) {
        char *key = NULL;
        ok = read_string(j, &key) && expect(j, ':');
        if (ok && strcmp(key, "dtype") == 0 && !dtype)
            ok = read_string(j, &dtype);
        else if (ok && strcmp(key, "shape") == 0 && !have_shape)
            ok = have_shape = read_uint_list(j, t->dims, CNN_TENSOR_MAX_DIMS,
                                             &t->ndim);
        else if (ok && strcmp(key, "data_offsets") == 0 && !n_off)
            ok = read_uint_list(j, off, 2, &n_off) && n_off == 2;
        else
            ok = false;
        free(key);
        if (!expect(j, ','))
            break;
    }
    ok = ok && expect(j, '}') && dtype && have_shape && n_off == 2;
    if (!ok)
        free(dtype);
    else
        t->dtype = dtype;
    return ok;
}

static bool read_metadata(struct json *j, struct cnn_st_file *f)
{
    if (!expect(j, '{'))
        return false;
    if (expect(j, '}'))
        return true;
    do {
        char *k = NULL, *v = NULL;
        if (!read_string(j, &k) || !expect(j, ':') || !read_string(j, &v)) {
            free(k);
            free(v);
            return false;
        }
        char **ks = realloc(f->meta_keys, (size_t)(f->n_meta + 1) * sizeof *ks);
        if (ks)
            f->meta_keys = ks;
        char **vs = realloc(f->meta_values,
                            (size_t)(f->n_meta + 1) * sizeof *vs);
        if (vs)
            f->meta_values = vs;
        if (!ks || !vs) {
            free(k);
            free(v);
            return false;
        }
        f->meta_keys[f->n_meta] = k;
        f->meta_values[f->n_meta++] = v;
    } while (expect(j, ','));
    return expect(j, '}');
}

static enum cnn_status add_tensor(struct cnn_st_file *f, struct cnn_tensor *t,
                                  const uint64_t off[2], const char *data,
                                  uint64_t data_len, struct cnn_error *err)
{
    uint64_t count = 1;
    bool overflow = false;
    for (int d = 0; d < t->ndim; d++) {
        if (t->dims[d] && count > UINT64_MAX / t->dims[d])
            overflow = true;
        else
            count *= t->dims[d];
    }
    size_t esize = dtype_size(t->dtype);
    const char *why = NULL;
    if (cnn_st_find(f, t->name))
        why = "appears twice";
    else if (!esize)
        why = "has an unknown dtype";
    else if (overflow || count > UINT64_MAX / esize)
        why = "has a shape too large for any file";
    else if (off[1] < off[0] || off[1] > data_len ||
             off[1] - off[0] != count * esize)
        why = "has data offsets that do not fit its shape or the file";
    if (why)
        return cnn_error_at(err, CNN_ERR_DATA, f->path, "tensor '%s' %s",
                            t->name, why);

    struct cnn_tensor *ts = realloc(f->tensors,
                                    (size_t)(f->n_tensors + 1) * sizeof *ts);
    if (!ts)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    f->tensors = ts;
    t->data = data + off[0];
    t->bytes = (size_t)(off[1] - off[0]);
    ts[f->n_tensors++] = *t;
    return CNN_OK;
}

static enum cnn_status parse_header(struct cnn_st_file *f, const char *hdr,
                                    uint64_t hdr_len, const char *data,
                                    uint64_t data_len, struct cnn_error *err)
{
    struct json j = {hdr, hdr + hdr_len};
    if (!expect(&j, '{'))
        goto bad;
    if (expect(&j, '}'))
        return CNN_OK;
    do {
        char *name = NULL;
        if (!read_string(&j, &name) || !expect(&j, ':')) {
            free(name);
            goto bad;
        }
        if (strcmp(name, "__metadata__") == 0) {
            free(name);
            if (!read_metadata(&j, f))
                goto bad;
            continue;
        }
        struct cnn_tensor t = {.name = name};
        uint64_t off[2];
        if (!read_tensor(&j, &t, off)) {
            free(name);
            goto bad;
        }
        enum cnn_status st = add_tensor(f, &t, off, data, data_len, err);
        if (st != CNN_OK) {
            free(name);
            free((char *)t.dtype);
            return st;
        }
    } while (expect(&j, ','));
    if (expect(&j, '}'))
        return CNN_OK;
bad:
    return cnn_error_at(err, CNN_ERR_DATA, f->path, "malformed safetensors "
                        "header near byte %td", j.p - hdr + 8);
}

enum cnn_status cnn_st_open(struct cnn_st_file *f, const char *path,
                            struct cnn_error *err)
{
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path)))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    FILE *in = fopen(path, "rb");
    if (!in) {
        cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                     strerror(errno));
        cnn_st_close(f);
        return CNN_ERR_DATA;
    }

    enum cnn_status st = CNN_OK;
    uint64_t hdr_len = 0;
    long size = -1;
    if (fseek(in, 0, SEEK_END) == 0)
        size = ftell(in);
    rewind(in);
    if (size < 8) {
        st = cnn_error_at(err, CNN_ERR_DATA, path, "too short for safetensors "
                          "(%ld bytes)", size);
        goto out;
    }
    f->size = (size_t)size;
    if (!(f->buf = malloc(f->size))) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (fread(f->buf, 1, f->size, in) != f->size) {
        st = cnn_error_at(err, CNN_ERR_DATA, path, "read error");
        goto out;
    }
    for (int i = 0; i < 8; i++)
        hdr_len |= (uint64_t)(unsigned char)f->buf[i] << (8 * i);
    if (hdr_len > MAX_HEADER || hdr_len > f->size - 8) {
        st = cnn_error_at(err, CNN_ERR_DATA, path, "header length %llu does "
                          "not fit the file (%zu bytes)",
                          (unsigned long long)hdr_len, f->size);
        goto out;
    }
    st = parse_header(f, f->buf + 8, hdr_len, f->buf + 8 + hdr_len,
                      f->size - 8 - hdr_len, err);
out:
    fclose(in);
    if (st != CNN_OK)
        cnn_st_close(f);
    return st;
}

const struct cnn_tensor *cnn_st_find(const struct cnn_st_file *f,
                                     const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *cnn_st_meta(const struct cnn_st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}

void cnn_st_close(struct cnn_st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n_tensors; i++) {
        free((char *)f->tensors[i].name);
        free((char *)f->tensors[i].dtype);
    }
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->buf);
    free(f->path);
    memset(f, 0, sizeof *f);
}

struct load_ctx {
    const struct cnn_st_file *f;
    struct cnn_error *err;
    enum cnn_status st;
};

static void load_param(void *ctx, const char *name, struct cnn_param *p)
{
    struct load_ctx *c = ctx;
    if (c->st != CNN_OK)
        return;
    const struct cnn_tensor *t = cnn_st_find(c->f, name);
    if (!t) {
        c->st = cnn_error_at(c->err, CNN_ERR_DATA, c->f->path, "tensor '%s' "
                             "of the model is missing", name);
        return;
    }
    bool same = strcmp(t->dtype, "F32") == 0 && t->ndim == p->ndim;
    for (int d = 0; same && d < p->ndim; d++)
        same = t->dims[d] == (uint64_t)p->dims[d];
    if (!same) {
        char want[64] = "", got[64] = "";
        for (int d = 0; d < p->ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d",
                     d ? "x" : "", p->dims[d]);
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu",
                     d ? "x" : "", (unsigned long long)t->dims[d]);
        c->st = cnn_error_at(c->err, CNN_ERR_DATA, c->f->path, "tensor '%s' "
                             "is %s %s in the file but F32 %s in the model",
                             name, t->dtype, got, want);
        return;
    }
    memcpy(p->data, t->data, t->bytes);
}

enum cnn_status cnn_st_load_net(const struct cnn_st_file *f,
                                struct cnn_net *net, bool strict,
                                struct cnn_error *err)
{
    struct load_ctx c = {.f = f, .err = err, .st = CNN_OK};
    cnn_net_each_param(net, load_param, &c);
    if (c.st != CNN_OK || !strict)
        return c.st;

    int cap = cnn_net_count_tensors(net);
    size_t name_cap = (size_t)cap * 160 + 1;
    struct cnn_tensor *t = malloc((size_t)(cap ? cap : 1) * sizeof *t);
    char *names = malloc(name_cap);
    if (!t || !names) {
        free(t);
        free(names);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    int n = cnn_net_tensors(net, t, names, name_cap, cap);
    for (int i = 0; i < f->n_tensors && c.st == CNN_OK; i++) {
        const char *name = f->tensors[i].name;
        if (strncmp(name, "optim.", 6) == 0 || strncmp(name, "state.", 6) == 0)
            continue;
        bool found = false;
        for (int k = 0; k < n && !found; k++)
            found = strcmp(t[k].name, name) == 0;
        if (!found)
            c.st = cnn_error_at(err, CNN_ERR_DATA, f->path, "tensor '%s' is "
                                "not in the model", name);
    }
    free(t);
    free(names);
    return c.st;
}

enum cnn_status cnn_safetensors_load(const char *path, struct cnn_net *net,
                                     struct cnn_error *err)
{
    struct cnn_st_file f;
    enum cnn_status st = cnn_st_open(&f, path, err);
    if (st == CNN_OK)
        st = cnn_st_load_net(&f, net, true, err);
    cnn_st_close(&f);
    return st;
}
