/*
 * YAML file -> node tree -> typed config. libyaml's document API does the
 * parsing; the tree is copied into our own nodes so that aliases are
 * expanded (bounded, so a "billion laughs" file is refused rather than
 * eating the machine) and --set overrides can replace any part of it.
 * The typed sections are resolved here; layer arguments are read by the
 * layers themselves (src/layers/).
 */
#include "cnn/config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

enum {
    MAX_DEPTH = 64,          /* nesting, after alias expansion */
    MAX_NODES = 200000,      /* total nodes, after alias expansion */
    MAX_FILE_BYTES = 4 << 20,
};

struct builder {
    yaml_document_t *doc;
    const char *origin;
    long n_nodes;
    struct cnn_error *err;
};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void cnn_node_free(struct cnn_node *n)
{
    if (!n)
        return;
    for (int i = 0; i < n->n_items; i++)
        cnn_node_free(n->items[i]);
    free(n->items);
    free(n->value);
    free(n->key);
    free(n->path);
    free(n);
}

static char *dup_or_null(const char *s)
{
    return s ? dup_str(s) : NULL;
}

struct cnn_node *cnn_node_clone(const struct cnn_node *n)
{
    struct cnn_node *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    *c = *n;
    c->items = NULL;
    c->n_items = 0;
    c->n_asked = 0;
    c->used = false;
    c->value = dup_or_null(n->value);
    c->key = dup_or_null(n->key);
    c->path = dup_or_null(n->path);
    bool ok = (!n->value || c->value) && (!n->key || c->key) &&
              (!n->path || c->path);
    if (ok && n->n_items) {
        c->items = calloc((size_t)n->n_items, sizeof *c->items);
        ok = c->items != NULL;
        for (int i = 0; ok && i < n->n_items; i++) {
            c->items[i] = cnn_node_clone(n->items[i]);
            ok = c->items[i] != NULL;
            c->n_items = i + 1;
        }
    }
    if (!ok) {
        cnn_node_free(c);
        return NULL;
    }
    return c;
}

static struct cnn_node *node_new(enum cnn_node_kind kind, const char *origin,
                                 int line, int col)
{
    struct cnn_node *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->kind = kind;
    n->origin = origin;
    n->line = line;
    n->col = col;
    return n;
}

static int node_append(struct cnn_node *parent, struct cnn_node *child)
{
    struct cnn_node **items = realloc(parent->items,
                                      (size_t)(parent->n_items + 1) * sizeof *items);
    if (!items)
        return -1;
    parent->items = items;
    parent->items[parent->n_items++] = child;
    return 0;
}

/* Copies libyaml node id (and what it references) into a new cnn_node. */
static struct cnn_node *build(struct builder *b, int id, int depth)
{
    yaml_node_t *y = yaml_document_get_node(b->doc, id);
    if (!y)
        return NULL;
    int line = (int)y->start_mark.line + 1;
    int col = (int)y->start_mark.column + 1;

    if (depth > MAX_DEPTH || ++b->n_nodes > MAX_NODES) {
        char where[600];
        snprintf(where, sizeof where, "%s:%d:%d", b->origin, line, col);
        cnn_error_at(b->err, CNN_ERR_CONFIG, where,
                     "document too large or too deeply nested "
                     "(limits: %d levels, %d nodes after aliases)",
                     MAX_DEPTH, MAX_NODES);
        return NULL;
    }

    struct cnn_node *n = NULL;
    switch (y->type) {
    case YAML_SCALAR_NODE:
        n = node_new(CNN_NODE_SCALAR, b->origin, line, col);
        if (!n || !(n->value = dup_str((const char *)y->data.scalar.value)))
            goto nomem;
        n->quoted = y->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        return n;

    case YAML_SEQUENCE_NODE:
        n = node_new(CNN_NODE_SEQ, b->origin, line, col);
        if (!n)
            goto nomem;
        for (yaml_node_item_t *it = y->data.sequence.items.start;
             it < y->data.sequence.items.top; it++) {
            struct cnn_node *c = build(b, *it, depth + 1);
            if (!c || node_append(n, c) != 0) {
                cnn_node_free(c);
                goto fail;
            }
        }
        return n;

    case YAML_MAPPING_NODE:
        n = node_new(CNN_NODE_MAP, b->origin, line, col);
        if (!n)
            goto nomem;
        for (yaml_node_pair_t *p = y->data.mapping.pairs.start;
             p < y->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(b->doc, p->key);
            int kl = (int)k->start_mark.line + 1;
            int kc = (int)k->start_mark.column + 1;
            char where[600];
            snprintf(where, sizeof where, "%s:%d:%d", b->origin, kl, kc);
            if (k->type != YAML_SCALAR_NODE) {
                cnn_error_at(b->err, CNN_ERR_CONFIG, where,
                             "mapping keys must be plain words");
                goto fail;
            }
            const char *key = (const char *)k->data.scalar.value;
            for (int i = 0; i < n->n_items; i++) {
                if (strcmp(n->items[i]->key, key) == 0) {
                    cnn_error_at(b->err, CNN_ERR_CONFIG, where,
                                 "duplicate key '%s' (first at line %d)",
                                 key, n->items[i]->key_line);
                    goto fail;
                }
            }
            struct cnn_node *c = build(b, p->value, depth + 1);
            if (!c)
                goto fail;
            c->key = dup_str(key);
            c->key_line = kl;
            c->key_col = kc;
            if (!c->key || node_append(n, c) != 0) {
                cnn_node_free(c);
                goto nomem;
            }
        }
        return n;

    default:
        break;
    }
    cnn_node_free(n);
    return NULL;

nomem:
    cnn_error_set(b->err, CNN_ERR_NOMEM, "out of memory reading %s", b->origin);
fail:
    cnn_node_free(n);
    return NULL;
}

static void assign_paths(struct cnn_node *n, const char *path)
{
    free(n->path);
    n->path = dup_str(path);
    for (int i = 0; i < n->n_items; i++) {
        struct cnn_node *c = n->items[i];
        size_t cap = strlen(path) + (c->key ? strlen(c->key) : 0) + 32;
        char *p = malloc(cap);
        if (!p)
            continue;
        if (n->kind == CNN_NODE_MAP)
            snprintf(p, cap, "%s%s%s", path, *path ? "." : "", c->key);
        else
            snprintf(p, cap, "%s[%d]", path, i);
        assign_paths(c, p);
        free(p);
    }
}

/* Values typed in a --set have no line in any file: clear positions, so
 * messages name the option alone and paths resolve against the cwd. */
static void clear_marks(struct cnn_node *n)
{
    n->line = n->col = n->key_line = n->key_col = 0;
    for (int i = 0; i < n->n_items; i++)
        clear_marks(n->items[i]);
}

static const char *add_origin(struct cnn_config *cfg, const char *origin)
{
    char **o = realloc(cfg->origins, (size_t)(cfg->n_origins + 1) * sizeof *o);
    if (!o)
        return NULL;
    cfg->origins = o;
    if (!(o[cfg->n_origins] = dup_str(origin)))
        return NULL;
    return o[cfg->n_origins++];
}

/* Parses text as one YAML document into a node tree. */
static struct cnn_node *parse_yaml(const char *text, size_t len,
                                   const char *origin, struct cnn_error *err)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    struct cnn_node *root = NULL;

    if (!yaml_parser_initialize(&parser)) {
        cnn_error_set(err, CNN_ERR_NOMEM, "out of memory starting libyaml");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

    if (!yaml_parser_load(&parser, &doc)) {
        char where[600];
        snprintf(where, sizeof where, "%s:%zu:%zu", origin,
                 parser.problem_mark.line + 1, parser.problem_mark.column + 1);
        cnn_error_at(err, CNN_ERR_CONFIG, where, "invalid YAML: %s%s%s",
                     parser.problem ? parser.problem : "parse error",
                     parser.context ? " " : "",
                     parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return NULL;
    }

    yaml_node_t *top = yaml_document_get_root_node(&doc);
    if (!top) {
        root = node_new(CNN_NODE_MAP, origin, 1, 1);
        if (!root)
            cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    } else {
        struct builder b = {.doc = &doc, .origin = origin, .err = err};
        root = build(&b, 1, 0);
    }
    yaml_document_delete(&doc);

    /* A second document would be silently ignored: refuse it. */
    if (root && yaml_parser_load(&parser, &doc)) {
        yaml_node_t *second = yaml_document_get_root_node(&doc);
        if (second) {
            char where[600];
            snprintf(where, sizeof where, "%s:%zu:%zu", origin,
                     second->start_mark.line + 1,
                     second->start_mark.column + 1);
            cnn_error_at(err, CNN_ERR_CONFIG, where,
                         "more than one YAML document; a config is one");
            cnn_node_free(root);
            root = NULL;
        }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return root;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return dup_str(".");
    if (slash == path)
        return dup_str("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

enum cnn_status cnn_config_load_string(struct cnn_config *cfg,
                                       const char *text, const char *origin,
                                       const char *dir, struct cnn_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    const char *o = add_origin(cfg, origin);
    cfg->path = dup_str(origin);
    cfg->dir = dup_str(dir);
    if (!o || !cfg->path || !cfg->dir)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");

    cfg->root = parse_yaml(text, strlen(text), o, err);
    if (!cfg->root)
        return err ? err->status : CNN_ERR_CONFIG;
    if (cfg->root->kind != CNN_NODE_MAP) {
        char where[600];
        snprintf(where, sizeof where, "%s:%d:%d", o, cfg->root->line,
                 cfg->root->col);
        return cnn_error_at(err, CNN_ERR_CONFIG, where,
                            "a config is a mapping of sections "
                            "(name, seed, data, model, optimizer, schedule, "
                            "training)");
    }
    assign_paths(cfg->root, "");
    return CNN_OK;
}

enum cnn_status cnn_config_load(struct cnn_config *cfg, const char *path,
                                struct cnn_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    FILE *f = fopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_CONFIG, path, "cannot open: %s",
                            strerror(errno));

    char *text = malloc(MAX_FILE_BYTES + 1);
    if (!text) {
        fclose(f);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    size_t len = fread(text, 1, MAX_FILE_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || len > MAX_FILE_BYTES) {
        free(text);
        return cnn_error_at(err, CNN_ERR_CONFIG, path, bad ?
                            "read error" : "larger than 4 MiB: not a config");
    }
    text[len] = '\0';
    if (memchr(text, '\0', len)) {
        free(text);
        return cnn_error_at(err, CNN_ERR_CONFIG, path,
                            "contains NUL bytes: not a YAML text file");
    }

    char *rel = dir_of(path);
    char *dir = rel ? realpath(rel, NULL) : NULL;
    enum cnn_status st;
    if (dir)
        st = cnn_config_load_string(cfg, text, path, dir, err);
    else if (rel)
        st = cnn_error_at(err, CNN_ERR_CONFIG, path, "cannot resolve its "
                          "directory %s: %s", rel, strerror(errno));
    else
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    free(rel);
    free(dir);
    free(text);
    return st;
}

/* --- overrides ---------------------------------------------------------- */

/* Splits "a.b[2].c" into the next segment: a key (into key) or an index. */
static const char *next_segment(const char *p, char *key, size_t cap,
                                long *index)
{
    *index = -1;
    if (*p == '[') {
        char *end;
        errno = 0;
        long v = strtol(p + 1, &end, 10);
        if (errno || end == p + 1 || *end != ']' || v < 0)
            return NULL;
        *index = v;
        p = end + 1;
    } else {
        size_t n = strcspn(p, ".[");
        if (n == 0 || n >= cap)
            return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        p += n;
    }
    if (*p == '.')
        p++;
    return p;
}

enum cnn_status cnn_config_set(struct cnn_config *cfg, const char *assignment,
                               struct cnn_error *err)
{
    char origin_buf[600];
    snprintf(origin_buf, sizeof origin_buf, "--set %s", assignment);
    const char *origin = add_origin(cfg, origin_buf);
    if (!origin)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");

    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return cnn_error_at(err, CNN_ERR_USAGE, origin,
                            "expected KEY.PATH=VALUE");

    size_t keylen = (size_t)(eq - assignment);
    char *keypath = malloc(keylen + 1);
    if (!keypath)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    memcpy(keypath, assignment, keylen);
    keypath[keylen] = '\0';

    struct cnn_error perr = {0};
    struct cnn_node *value = parse_yaml(eq + 1, strlen(eq + 1), origin, &perr);
    if (!value) {
        free(keypath);
        return cnn_error_at(err, CNN_ERR_USAGE, origin, "value is not valid "
                            "YAML: %s", perr.message);
    }
    clear_marks(value);
    /* A value like "" parses to an empty document: make it a null scalar. */
    if (value->kind == CNN_NODE_MAP && value->n_items == 0 && !strchr(eq + 1, '{')) {
        cnn_node_free(value);
        value = node_new(CNN_NODE_SCALAR, origin, 0, 0);
        if (!value || !(value->value = dup_str(""))) {
            cnn_node_free(value);
            free(keypath);
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        }
    }

    struct cnn_node *at = cfg->root;
    const char *p = keypath;
    enum cnn_status st = CNN_OK;
    char key[256];
    long index;
    while (*p) {
        p = next_segment(p, key, sizeof key, &index);
        if (!p) {
            st = cnn_error_at(err, CNN_ERR_USAGE, origin, "bad key path '%s'",
                              keypath);
            break;
        }
        struct cnn_node **slot = NULL;
        if (index >= 0) {
            if (at->kind != CNN_NODE_SEQ || index >= at->n_items) {
                st = cnn_error_at(err, CNN_ERR_USAGE, origin,
                                  "'%s': no item [%ld] there", keypath, index);
                break;
            }
            slot = &at->items[index];
        } else {
            if (at->kind != CNN_NODE_MAP) {
                st = cnn_error_at(err, CNN_ERR_USAGE, origin,
                                  "'%s': '%s' is not inside a mapping",
                                  keypath, key);
                break;
            }
            for (int i = 0; i < at->n_items; i++)
                if (strcmp(at->items[i]->key, key) == 0)
                    slot = &at->items[i];
            if (!slot) {
                /* New key: a map when more path follows, else the value. */
                struct cnn_node *c = *p ? node_new(CNN_NODE_MAP, origin, 0, 0)
                                        : value;
                if (!c || !(c->key = dup_str(key)) || node_append(at, c) != 0) {
                    if (c != value)
                        cnn_node_free(c);
                    st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
                    break;
                }
                if (c == value) {
                    value = NULL;
                    break;
                }
                at = c;
                continue;
            }
        }
        if (!*p) {
            value->key = (*slot)->key;
            (*slot)->key = NULL;
            cnn_node_free(*slot);
            *slot = value;
            value = NULL;
            break;
        }
        at = *slot;
    }
    cnn_node_free(value);
    free(keypath);
    if (st == CNN_OK)
        assign_paths(cfg->root, "");
    return st;
}

/* --- resolving into typed sections -------------------------------------- */

/* The path in scalar node n, resolved: paths from the file against its
 * directory, paths typed in a --set against the current directory (like
 * any argument), and under data.dir against that directory. */
static enum cnn_status resolve_path(struct cnn_config *cfg, struct cnn_node *n,
                                    const char *dir, char **out,
                                    struct cnn_error *err)
{
    if (n->kind != CNN_NODE_SCALAR || cnn_node_is_null(n) || !*n->value)
        return cnn_node_error(err, n, "expected a non-empty string: a file "
                              "name");
    const char *s = n->value;
    char cwd[4096];
    const char *base = dir;
    if (!base)
        base = n->line > 0 ? cfg->dir : (getcwd(cwd, sizeof cwd) ? cwd : ".");
    size_t cap = strlen(base) + strlen(s) + 2;
    if (!(*out = malloc(cap)))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    if (s[0] == '/')
        snprintf(*out, cap, "%s", s);
    else
        snprintf(*out, cap, "%s/%s", base, s);

    /* The resolved config (config.yaml of a run) must name the same file
     * from wherever it is read: store the absolute form unless the path
     * is relative to data.dir, which is itself made absolute. */
    if (!dir && s[0] != '/') {
        char *abs = dup_str(*out);
        if (!abs)
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        free(n->value);
        n->value = abs;
    }
    return CNN_OK;
}

static enum cnn_status read_path(struct cnn_config *cfg, struct cnn_node *map,
                                 const char *key, const char *dir, char **out,
                                 struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(map, key);
    *out = NULL;
    return n && !cnn_node_is_null(n) ? resolve_path(cfg, n, dir, out, err)
                                     : CNN_OK;
}

bool cnn_split_given(const struct cnn_split_config *s)
{
    return s->images || s->n_files > 0;
}

/* A split's files: images + labels (idx), file [+ targets] (csv), files
 * (cifar10: one or a list), root (folder). */
static enum cnn_status read_split(struct cnn_config *cfg, struct cnn_node *data,
                                  const char *key, const char *dir,
                                  struct cnn_split_config *split,
                                  struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(data, key);
    if (!n || cnn_node_is_null(n))
        return CNN_OK;
    if (cnn_node_expect_map(n, err) != CNN_OK)
        return CNN_ERR_CONFIG;

    switch (cfg->data.format) {
    case CNN_FORMAT_IDX:
        if (read_path(cfg, n, "images", dir, &split->images, err) != CNN_OK ||
            read_path(cfg, n, "labels", dir, &split->labels, err) != CNN_OK)
            return CNN_ERR_CONFIG;
        if (!split->images || !split->labels)
            return cnn_node_error(err, n, "needs both 'images' and 'labels'");
        break;
    case CNN_FORMAT_CSV:
        if (read_path(cfg, n, "file", dir, &split->files[0], err) != CNN_OK ||
            read_path(cfg, n, "targets", dir, &split->targets, err) != CNN_OK)
            return CNN_ERR_CONFIG;
        if (!split->files[0])
            return cnn_node_error(err, n, "needs 'file' (and 'targets' when "
                                  "the targets are in a second file)");
        split->n_files = 1;
        break;
    case CNN_FORMAT_FOLDER:
        if (read_path(cfg, n, "root", dir, &split->files[0], err) != CNN_OK)
            return CNN_ERR_CONFIG;
        if (!split->files[0])
            return cnn_node_error(err, n, "needs 'root', the folder holding "
                                  "one folder of images per class");
        split->n_files = 1;
        break;
    case CNN_FORMAT_CIFAR10: {
        struct cnn_node *f = cnn_node_get(n, "files");
        if (!f)
            return cnn_node_error(err, n, "needs 'files': a batch file or a "
                                  "list of them");
        if (f->kind == CNN_NODE_SCALAR) {
            split->n_files = 1;
            if (resolve_path(cfg, f, dir, &split->files[0], err) != CNN_OK)
                return CNN_ERR_CONFIG;
            break;
        }
        if (f->kind != CNN_NODE_SEQ || f->n_items < 1 ||
            f->n_items > CNN_MAX_FILES)
            return cnn_node_error(err, f, "expected a file or a list of 1 to "
                                  "%d files", CNN_MAX_FILES);
        for (int i = 0; i < f->n_items; i++) {
            split->n_files = i + 1;
            if (resolve_path(cfg, f->items[i], dir, &split->files[i], err))
                return CNN_ERR_CONFIG;
        }
        break;
    }
    }
    return cnn_node_check_unused(n, err);
}

static enum cnn_status read_float_list(struct cnn_node *map, const char *key,
                                       float *dst, int *count, double min,
                                       struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(map, key);
    *count = 0;
    if (!n)
        return CNN_OK;
    if (n->kind == CNN_NODE_SCALAR) {
        double v;
        if (cnn_node_float(n, min, 1e9, &v, err) != CNN_OK)
            return CNN_ERR_CONFIG;
        dst[0] = (float)v;
        *count = 1;
        return CNN_OK;
    }
    if (n->kind != CNN_NODE_SEQ || n->n_items > CNN_MAX_CHANNELS)
        return cnn_node_error(err, n, "expected a number or a list of up to "
                              "%d numbers, one per channel", CNN_MAX_CHANNELS);
    for (int i = 0; i < n->n_items; i++) {
        double v;
        if (cnn_node_float(n->items[i], min, 1e9, &v, err) != CNN_OK)
            return CNN_ERR_CONFIG;
        dst[i] = (float)v;
    }
    *count = n->n_items;
    return CNN_OK;
}

/* One column selector: 3, -1, "price", or "0:64" (end exclusive; either
 * end may be left out, negative ends count from the last column). */
static enum cnn_status read_column(struct cnn_node *n, struct cnn_column *c,
                                   struct cnn_error *err)
{
    *c = (struct cnn_column){0};
    if (n->kind != CNN_NODE_SCALAR || cnn_node_is_null(n))
        return cnn_node_error(err, n, "expected a column: an index, a header "
                              "name or a range such as \"0:64\"");
    const char *v = n->value;
    char *end;
    const char *colon = strchr(v, ':');
    if (!n->quoted && !colon) {
        long long i = strtoll(v, &end, 10);
        if (end != v && *end == '\0') {
            c->from = i;
            c->to = i == -1 ? 0 : i + 1;
            return CNN_OK;
        }
    }
    if (colon) {
        long long from = 0, to = 0;
        bool ok = true;
        if (colon > v) {
            from = strtoll(v, &end, 10);
            ok = end == colon;
        }
        if (ok && colon[1]) {
            to = strtoll(colon + 1, &end, 10);
            ok = *end == '\0';
        }
        if (ok) {
            c->from = from;
            c->to = to;
            return CNN_OK;
        }
    }
    c->name = v;
    return CNN_OK;
}

static enum cnn_status read_columns(struct cnn_node *map, const char *key,
                                    struct cnn_column *cols, int *count,
                                    struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(map, key);
    *count = 0;
    if (!n || cnn_node_is_null(n))
        return CNN_OK;
    if (n->kind == CNN_NODE_SCALAR) {
        *count = 1;
        return read_column(n, &cols[0], err);
    }
    if (n->kind != CNN_NODE_SEQ || n->n_items > CNN_MAX_COLUMNS)
        return cnn_node_error(err, n, "expected a column or a list of up to "
                              "%d columns", CNN_MAX_COLUMNS);
    for (int i = 0; i < n->n_items; i++)
        if (read_column(n->items[i], &cols[i], err) != CNN_OK)
            return CNN_ERR_CONFIG;
    *count = n->n_items;
    return CNN_OK;
}

/* data.csv: how rows become features and targets. */
static enum cnn_status resolve_csv(struct cnn_node *data,
                                   struct cnn_data_config *d,
                                   struct cnn_error *err)
{
    struct cnn_csv_config *c = &d->csv;
    struct cnn_node *n = cnn_node_get(data, "csv");
    c->header = -1;
    c->target[0] = (struct cnn_column){.from = -1, .to = 0};
    c->n_target = d->train.targets ? 0 : 1;    /* a second file: all */
    if (!n || cnn_node_is_null(n))
        return CNN_OK;
    if (d->format != CNN_FORMAT_CSV)
        return cnn_node_error(err, n, "is for data.format: csv");
    if (cnn_node_expect_map(n, err) != CNN_OK)
        return CNN_ERR_CONFIG;

    static const char *const delims[] = {"auto", "comma", "semicolon", "tab",
                                         "whitespace", ",", ";", NULL};
    static const char chars[] = {0, ',', ';', '\t', ' ', ',', ';'};
    int delim, n_target;
    struct cnn_node *h = cnn_node_get(n, "header");
    if (h && h->kind == CNN_NODE_SCALAR && strcmp(h->value, "auto") == 0) {
        c->header = -1;
    } else if (h) {
        bool b;
        if (cnn_read_bool(n, "header", false, &b, err) != CNN_OK)
            return CNN_ERR_CONFIG;
        c->header = b;
    }
    if (cnn_read_choice(n, "delimiter", delims, 0, &delim, err) ||
        cnn_read_int(n, "skip_rows", 0, 0, 1 << 30, &c->skip_rows, err) ||
        read_columns(n, "target", c->target, &n_target, err) ||
        read_columns(n, "features", c->features, &c->n_features, err))
        return CNN_ERR_CONFIG;
    c->delimiter = chars[delim];
    if (n_target > 0 && d->train.targets)
        return cnn_node_error(err, cnn_node_get(n, "target"), "the targets "
                              "come from data.train.targets; no target "
                              "column is read from the features file");
    if (n_target > 0)
        c->n_target = n_target;

    struct cnn_node *shape = cnn_node_get(n, "shape");
    if (shape) {
        if (shape->kind != CNN_NODE_SEQ || shape->n_items != 3)
            return cnn_node_error(err, shape, "expected [channels, height, "
                                  "width], e.g. [1, 8, 8]");
        for (int i = 0; i < 3; i++) {
            long long v;
            if (cnn_node_int(shape->items[i], 1, 1 << 16, &v, err) != CNN_OK)
                return CNN_ERR_CONFIG;
            c->shape[i] = (int)v;
        }
    }
    return cnn_node_check_unused(n, err);
}

static enum cnn_status resolve_data(struct cnn_config *cfg,
                                    struct cnn_error *err)
{
    struct cnn_data_config *d = &cfg->data;
    struct cnn_node *data = cnn_node_get(cfg->root, "data");
    if (!data)
        return cnn_node_error(err, cfg->root, "missing section 'data'");
    if (cnn_node_expect_map(data, err) != CNN_OK)
        return CNN_ERR_CONFIG;

    static const char *const formats[] = {
        [CNN_FORMAT_IDX] = "idx", [CNN_FORMAT_CSV] = "csv",
        [CNN_FORMAT_CIFAR10] = "cifar10", [CNN_FORMAT_FOLDER] = "folder", NULL};
    static const char *const tasks[] = {
        [CNN_TASK_CLASSIFY] = "classification",
        [CNN_TASK_REGRESS] = "regression", NULL};
    int format, task;
    char *dir = NULL;
    enum cnn_status st = cnn_read_choice(data, "format", formats, 0, &format,
                                         err);
    if (st == CNN_OK)
        st = cnn_read_choice(data, "task", tasks, 0, &task, err);
    d->format = (enum cnn_data_format)format;
    d->task = (enum cnn_task)task;
    if (st == CNN_OK)
        st = read_path(cfg, data, "dir", NULL, &dir, err);
    if (st == CNN_OK)
        st = read_split(cfg, data, "train", dir, &d->train, err);
    if (st == CNN_OK)
        st = read_split(cfg, data, "test", dir, &d->test, err);
    free(dir);
    if (st == CNN_OK)
        st = resolve_csv(data, d, err);
    if (st != CNN_OK)
        return st;
    if (!cnn_split_given(&d->train)) {
        static const char *const needs[] = {
            [CNN_FORMAT_IDX] = "train: {images: ..., labels: ...}",
            [CNN_FORMAT_CSV] = "train: {file: ...}",
            [CNN_FORMAT_CIFAR10] = "train: {files: [...]}",
            [CNN_FORMAT_FOLDER] = "train: {root: ...}"};
        return cnn_node_error(err, data, "missing '%s'", needs[d->format]);
    }
    if (d->format == CNN_FORMAT_CSV && cnn_split_given(&d->test) &&
        !d->train.targets != !d->test.targets)
        return cnn_node_error(err, cnn_node_get(data, "test"), "%s; both "
                              "splits read their targets the same way",
                              d->train.targets
                                  ? "has no 'targets' file, but data.train "
                                    "has one"
                                  : "has a 'targets' file, but data.train "
                                    "has none");
    if (d->task == CNN_TASK_REGRESS && d->format != CNN_FORMAT_CSV)
        return cnn_node_error(err, cnn_node_get(data, "task"), "regression "
                              "targets are read from CSV files only "
                              "(format: csv)");

    if (cnn_read_float(data, "val_split", 0.0, 0.0, 0.9, &d->val_split,
                       err) ||
        cnn_read_float(data, "test_split", 0.0, 0.0, 0.9, &d->test_split,
                       err) ||
        cnn_read_bool(data, "standardize", false, &d->standardize, err))
        return CNN_ERR_CONFIG;
    if (d->test_split > 0 && cnn_split_given(&d->test))
        return cnn_node_error(err, cnn_node_get(data, "test_split"), "holds "
                              "out a test split, but data.test names one "
                              "already; keep one of the two");
    if (d->val_split + d->test_split > 0.9)
        return cnn_node_error(err, cnn_node_get(data, "val_split"), "%g + "
                              "test_split %g hold out more than 90%% of the "
                              "training data", d->val_split, d->test_split);

    struct cnn_node *norm = cnn_node_get(data, "normalize");
    if (norm && norm->kind == CNN_NODE_SCALAR && !norm->quoted &&
        strcmp(norm->value, "auto") == 0) {
        d->normalize_auto = true;
    } else if (norm && !cnn_node_is_null(norm)) {
        if (cnn_node_expect_map(norm, err) != CNN_OK ||
            read_float_list(norm, "mean", d->mean, &d->n_mean, -1e9, err) ||
            read_float_list(norm, "std", d->std, &d->n_std, 1e-12, err))
            return CNN_ERR_CONFIG;
        if (d->n_mean != d->n_std)
            return cnn_node_error(err, norm, "'mean' has %d values but 'std' "
                                  "has %d", d->n_mean, d->n_std);
        if (cnn_node_check_unused(norm, err) != CNN_OK)
            return CNN_ERR_CONFIG;
    }

    struct cnn_node *names = cnn_node_get(data, "classes");
    if (names && (names->kind != CNN_NODE_SEQ || names->n_items > 256))
        return cnn_node_error(err, names, "expected a list of up to 256 "
                              "class names, in label order");
    for (int i = 0; names && i < names->n_items; i++) {
        if (names->items[i]->kind != CNN_NODE_SCALAR)
            return cnn_node_error(err, names->items[i], "expected a name");
        d->classes[d->n_class_names++] = names->items[i]->value;
    }

    struct cnn_node *aug = cnn_node_get(data, "augment");
    struct cnn_augment_config *a = &d->augment;
    if (cnn_node_expect_map(aug, err) ||
        cnn_read_int(aug, "crop_pad", 0, 0, 64, &a->crop_pad, err) ||
        cnn_read_bool(aug, "flip", false, &a->flip, err) ||
        cnn_read_int(aug, "erase_size", 0, 0, 4096, &a->erase_size, err) ||
        cnn_read_float(aug, "erase_p", 0.5, 0.0, 1.0, &a->erase_p, err) ||
        cnn_node_check_unused(aug, err))
        return CNN_ERR_CONFIG;

    if (cnn_read_int(data, "limit_train", 0, 0, 1LL << 40, &d->limit_train,
                     err) ||
        cnn_read_int(data, "limit_test", 0, 0, 1LL << 40, &d->limit_test, err))
        return CNN_ERR_CONFIG;
    return cnn_node_check_unused(data, err);
}

static enum cnn_status resolve_model(struct cnn_config *cfg,
                                     struct cnn_error *err)
{
    struct cnn_node *model = cnn_node_get(cfg->root, "model");
    if (!model)
        return cnn_node_error(err, cfg->root, "missing section 'model'");
    if (cnn_node_expect_map(model, err) != CNN_OK)
        return CNN_ERR_CONFIG;

    struct cnn_node *input = cnn_node_get(model, "input");
    if (input) {
        if (input->kind != CNN_NODE_SEQ || input->n_items != 3)
            return cnn_node_error(err, input, "expected [channels, height, "
                                  "width], e.g. [1, 28, 28]");
        long long v[3];
        for (int i = 0; i < 3; i++)
            if (cnn_node_int(input->items[i], 1, 1 << 16, &v[i], err) != CNN_OK)
                return CNN_ERR_CONFIG;
        cfg->input_c = (int)v[0];
        cfg->input_h = (int)v[1];
        cfg->input_w = (int)v[2];
    }

    struct cnn_node *layers = cnn_node_get(model, "layers");
    if (!layers)
        return cnn_node_error(err, model, "missing 'layers' (a list)");
    if (layers->kind != CNN_NODE_SEQ || layers->n_items == 0)
        return cnn_node_error(err, layers, "expected a non-empty list of "
                              "layers, e.g. '- dense: {units: 10}'");
    cfg->model_layers = layers;
    return cnn_node_check_unused(model, err);
}

static enum cnn_status resolve_optimizer(struct cnn_config *cfg,
                                         struct cnn_error *err)
{
    struct cnn_optim_config *o = &cfg->optim;
    struct cnn_node *n = cnn_node_get(cfg->root, "optimizer");
    if (n && cnn_node_expect_map(n, err) != CNN_OK)
        return CNN_ERR_CONFIG;
    o->node = cnn_node_is_null(n) ? NULL : n;
    /* The rest of the section, unknown keys included, is the optimizer
     * registry's to check (cnn_optim_create). */
    if (cnn_read_string(o->node, "name", "sgd", &o->name, err) ||
        cnn_read_float(o->node, "lr", 0.01, 0.0, 1e6, &o->lr, err))
        return CNN_ERR_CONFIG;
    return CNN_OK;
}

static enum cnn_status read_milestones(struct cnn_node *map,
                                       struct cnn_schedule_config *s,
                                       struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(map, "milestones");
    if (!n)
        return CNN_OK;
    if (n->kind != CNN_NODE_SEQ || n->n_items > CNN_MAX_MILESTONES)
        return cnn_node_error(err, n, "expected a list of up to %d epoch "
                              "numbers, e.g. [30, 60]", CNN_MAX_MILESTONES);
    for (int i = 0; i < n->n_items; i++) {
        long long prev = i ? s->milestones[i - 1] : 0;
        if (cnn_node_int(n->items[i], prev + 1, 1000000, &s->milestones[i],
                         err) != CNN_OK)
            return CNN_ERR_CONFIG;
    }
    s->n_milestones = n->n_items;
    return CNN_OK;
}

static enum cnn_status resolve_schedule(struct cnn_config *cfg,
                                        struct cnn_error *err)
{
    struct cnn_schedule_config *s = &cfg->schedule;
    struct cnn_node *n = cnn_node_get(cfg->root, "schedule");
    if (n && cnn_node_expect_map(n, err) != CNN_OK)
        return CNN_ERR_CONFIG;

    static const char *const names[] = {"constant", "step", "exponential",
                                        "cosine", "onecycle", "plateau",
                                        NULL};
    int which;
    if (cnn_read_choice(n, "name", names, 0, &which, err) ||
        cnn_read_int(n, "warmup_steps", 0, 0, 1LL << 40, &s->warmup_steps,
                     err) ||
        cnn_read_float(n, "gamma", 0.1, 1e-9, 1.0, &s->gamma, err) ||
        cnn_read_int(n, "step_epochs", 1, 1, 1LL << 30, &s->step_epochs,
                     err) ||
        read_milestones(n, s, err) ||
        cnn_read_float(n, "min_lr", 0.0, 0.0, 1e6, &s->min_lr, err) ||
        cnn_read_float(n, "pct_start", 0.3, 0.0, 1.0, &s->pct_start, err) ||
        cnn_read_float(n, "div_factor", 25.0, 1.0, 1e9, &s->div_factor,
                       err) ||
        cnn_read_float(n, "final_div_factor", 1e4, 1.0, 1e12,
                       &s->final_div_factor, err) ||
        cnn_read_float(n, "factor", 0.1, 1e-9, 0.999999, &s->factor, err) ||
        cnn_read_int(n, "patience", 10, 0, 1LL << 30, &s->patience, err) ||
        cnn_read_float(n, "threshold", 1e-4, 0.0, 1.0, &s->threshold, err))
        return CNN_ERR_CONFIG;
    s->name = names[which];
    return cnn_node_check_unused(n, err);
}

/* "90", "90s", "45m", "2h", "1h30m", "1d": seconds. */
static bool parse_duration(const char *text, double *out)
{
    const char *p = text;
    double total = 0;
    bool any = false;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || v < 0 || !isfinite(v))
            return false;
        double unit = 1;
        switch (*end) {
        case 'd': unit = 86400; end++; break;
        case 'h': unit = 3600; end++; break;
        case 'm': unit = 60; end++; break;
        case 's': end++; break;
        case '\0': break;
        default: return false;
        }
        total += v * unit;
        any = true;
        p = end;
    }
    *out = total;
    return any;
}

static enum cnn_status read_duration(struct cnn_node *map, const char *key,
                                     double *out, struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(map, key);
    *out = 0;
    if (!n || cnn_node_is_null(n))
        return CNN_OK;
    if (n->kind != CNN_NODE_SCALAR || !parse_duration(n->value, out))
        return cnn_node_error(err, n, "expected a duration such as 90s, "
                              "45m, 2h or 1h30m");
    return CNN_OK;
}

static const char *const metric_names[] = {
    [CNN_METRIC_TEST_LOSS] = "test_loss",
    [CNN_METRIC_TEST_ACC] = "test_acc",
    [CNN_METRIC_TRAIN_LOSS] = "train_loss",
    "val_loss", "val_acc",  /* the same two: held-out metrics follow the
                               validation split whenever there is one */
    NULL,
};

static enum cnn_metric metric_of(int index)
{
    if (index == CNN_METRIC_TRAIN_LOSS + 1)
        return CNN_METRIC_TEST_LOSS;
    if (index == CNN_METRIC_TRAIN_LOSS + 2)
        return CNN_METRIC_TEST_ACC;
    return (enum cnn_metric)index;
}

static enum cnn_status read_early_stopping(struct cnn_training_config *t,
                                           struct cnn_node *n,
                                           struct cnn_error *err)
{
    struct cnn_node *es = cnn_node_get(n, "early_stopping");
    int metric;
    t->early_stopping = es && !cnn_node_is_null(es);
    if (!t->early_stopping)
        return CNN_OK;
    if (cnn_node_expect_map(es, err) ||
        cnn_read_choice(es, "metric", metric_names, CNN_METRIC_TEST_LOSS,
                        &metric, err) ||
        cnn_read_int(es, "patience", 5, 0, 1 << 20, &t->patience, err) ||
        cnn_read_float(es, "min_delta", 0.0, 0.0, 1e9, &t->min_delta, err))
        return CNN_ERR_CONFIG;
    t->stop_metric = metric_of(metric);
    return cnn_node_check_unused(es, err);
}

static enum cnn_status resolve_training(struct cnn_config *cfg,
                                        struct cnn_error *err)
{
    struct cnn_training_config *t = &cfg->training;
    struct cnn_node *n = cnn_node_get(cfg->root, "training");
    if (n && cnn_node_expect_map(n, err) != CNN_OK)
        return CNN_ERR_CONFIG;

    static const char *const losses[] = {"cross_entropy", "mse", NULL};
    static const char *const on_nan[] = {"stop", "skip", "rollback", NULL};
    static const char *const precisions[] = {"fp32", "bf16", NULL};
    int loss, nan_rule, best, precision;
    if (cnn_read_int(n, "epochs", 10, 1, 1000000, &t->epochs, err) ||
        cnn_read_int(n, "batch_size", 64, 1, 65536, &t->batch_size, err) ||
        cnn_read_int(n, "max_steps", 0, 0, 1LL << 40, &t->max_steps, err) ||
        cnn_read_int(n, "log_every", 50, 1, 1LL << 30, &t->log_every, err) ||
        cnn_read_int(n, "threads", 0, 0, 1024, &t->threads, err) ||
        cnn_read_int(n, "accumulate", 1, 1, 1 << 20, &t->accumulate, err) ||
        cnn_read_choice(n, "loss", losses, cfg->data.task == CNN_TASK_REGRESS,
                        &loss, err) ||
        cnn_read_int(n, "checkpoint_every", 500, 0, 1LL << 40,
                     &t->checkpoint_every, err) ||
        cnn_read_int(n, "keep_checkpoints", 2, 1, 1000, &t->keep_checkpoints,
                     err) ||
        read_duration(n, "max_time", &t->max_time, err) ||
        cnn_read_choice(n, "on_nan", on_nan, CNN_ON_NAN_STOP, &nan_rule,
                        err) ||
        cnn_read_int(n, "max_rollbacks", 3, 0, 1000, &t->max_rollbacks,
                     err) ||
        cnn_read_choice(n, "best_metric", metric_names, CNN_METRIC_TEST_ACC,
                        &best, err) ||
        read_early_stopping(t, n, err) ||
        cnn_read_int(n, "log_grad_stats", 0, 0, 1LL << 40, &t->log_grad_stats,
                     err) ||
        cnn_read_float(n, "vanishing_ratio", 1e-4, 0.0, 1.0,
                       &t->vanishing_ratio, err) ||
        cnn_read_float(n, "exploding_ratio", 1e4, 0.0, 1e30,
                       &t->exploding_ratio, err) ||
        cnn_read_bool(n, "checkpoint_activations", false,
                      &t->checkpoint_activations, err) ||
        cnn_read_choice(n, "precision", precisions, 0, &precision, err))
        return CNN_ERR_CONFIG;
    t->bf16 = precision == 1;
    if (t->bf16 && t->checkpoint_activations)
        return cnn_node_error(err, cnn_node_get(n, "precision"), "bf16 and "
                              "checkpoint_activations do not go together "
                              "yet; choose one");
    t->loss = (enum cnn_loss_kind)loss;
    t->on_nan = (enum cnn_on_nan)nan_rule;
    t->best_metric = metric_of(best);
    if (cfg->data.task == CNN_TASK_REGRESS && loss != CNN_LOSS_MSE)
        return cnn_node_error(err, cnn_node_get(n, "loss"), "cross_entropy "
                              "needs class labels, but data.task is "
                              "regression; use loss: mse");
    return cnn_node_check_unused(n, err);
}

enum cnn_status cnn_config_resolve(struct cnn_config *cfg,
                                   struct cnn_error *err)
{
    long long seed;
    if (cnn_read_string(cfg->root, "name", "run", &cfg->name, err) ||
        cnn_read_int(cfg->root, "seed", 0, 0, INT64_MAX, &seed, err))
        return CNN_ERR_CONFIG;
    cfg->seed = (uint64_t)seed;

    enum cnn_status st = resolve_data(cfg, err);
    if (st == CNN_OK)
        st = resolve_model(cfg, err);
    if (st == CNN_OK)
        st = resolve_optimizer(cfg, err);
    if (st == CNN_OK)
        st = resolve_schedule(cfg, err);
    if (st == CNN_OK)
        st = resolve_training(cfg, err);
    struct cnn_training_config *t = &cfg->training;
    if (st == CNN_OK && t->early_stopping &&
        t->stop_metric != CNN_METRIC_TRAIN_LOSS &&
        !cnn_split_given(&cfg->data.test) && cfg->data.val_split == 0 &&
        cfg->data.test_split == 0) {
        struct cnn_node *tr = cnn_node_get(cfg->root, "training");
        struct cnn_node *es = cnn_node_get(tr, "early_stopping");
        struct cnn_node *m = cnn_node_get(es, "metric");
        st = cnn_node_error(err, m ? m : es, "follows a test metric, but "
                            "data has no test split");
        cnn_error_hint(err, "use metric: train_loss, or add data.test or "
                       "data.val_split");
    }

    /* Top-level keys starting "x-" hold YAML anchors for reuse (blocks
     * defined once); they are not settings. */
    for (int i = 0; i < cfg->root->n_items; i++)
        if (strncmp(cfg->root->items[i]->key, "x-", 2) == 0)
            cfg->root->items[i]->used = true;
    if (st == CNN_OK)
        st = cnn_node_check_unused(cfg->root, err);
    return st;
}

/* --- writing the tree back out ------------------------------------------ */

static bool plain_ok(const struct cnn_node *n)
{
    const char *s = n->value;
    if (n->quoted || !*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789_./+-", *p))
            return false;
    return s[0] != '-' || s[1] != '\0';
}

static void emit_scalar(const struct cnn_node *n, FILE *out)
{
    if (cnn_node_is_null(n)) {
        fputs("null", out);
        return;
    }
    if (plain_ok(n)) {
        fputs(n->value, out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)n->value; *p; p++) {
        /* Characters YAML will not read back as written: C0 and C1
         * controls, DEL, the Unicode line breaks and the BOM. */
        unsigned cp = 0;
        int len = 0;
        if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            cp = p[1];
            len = 2;
        } else if (p[0] == 0xe2 && p[1] == 0x80 &&
                   (p[2] == 0xa8 || p[2] == 0xa9)) {
            cp = 0x2000 + p[2] - 0x80;
            len = 3;
        } else if (p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) {
            cp = 0xfeff;
            len = 3;
        }
        if (len) {
            fprintf(out, "\\u%04x", cp);
            p += len - 1;
        } else if (*p == '"' || *p == '\\') {
            fprintf(out, "\\%c", *p);
        } else if (*p == '\n') {
            fputs("\\n", out);
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(out, "\\x%02x", *p);
        } else {
            fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void emit_node(const struct cnn_node *n, int indent, FILE *out)
{
    for (int i = 0; i < n->n_items; i++) {
        const struct cnn_node *c = n->items[i];
        fprintf(out, "%*s", indent, "");
        if (n->kind == CNN_NODE_MAP)
            fprintf(out, "%s:", c->key);
        else
            fputs("-", out);

        if (c->kind == CNN_NODE_SCALAR) {
            fputc(' ', out);
            emit_scalar(c, out);
            fputc('\n', out);
        } else if (c->n_items == 0) {
            fputs(c->kind == CNN_NODE_MAP ? " {}\n" : " []\n", out);
        } else {
            fputc('\n', out);
            emit_node(c, indent + 2, out);
        }
    }
}

void cnn_config_emit(const struct cnn_config *cfg, FILE *out)
{
    if (cfg->root)
        emit_node(cfg->root, 0, out);
}

char *cnn_config_emit_string(const struct cnn_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    cnn_config_emit(cfg, f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Leaves of a tree: scalars and empty collections, with their paths. */
struct leaves {
    const struct cnn_node **items;
    int n, cap;
};

static void collect_leaves(const struct cnn_node *n, struct leaves *l)
{
    if (n->kind == CNN_NODE_SCALAR || n->n_items == 0) {
        if (l->n == l->cap) {
            int cap = l->cap ? 2 * l->cap : 64;
            const struct cnn_node **items = realloc(l->items,
                                                    (size_t)cap * sizeof *items);
            if (!items)
                return;
            l->items = items;
            l->cap = cap;
        }
        l->items[l->n++] = n;
        return;
    }
    for (int i = 0; i < n->n_items; i++)
        collect_leaves(n->items[i], l);
}

static const char *leaf_text(const struct cnn_node *n)
{
    if (cnn_node_is_null(n))
        return "null";          /* as cnn_config_emit writes it */
    if (n->kind == CNN_NODE_SCALAR)
        return n->value;
    return n->kind == CNN_NODE_MAP ? "{}" : "[]";
}

static const struct cnn_node *find_leaf(const struct leaves *l,
                                        const char *path)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->items[i]->path, path) == 0)
            return l->items[i];
    return NULL;
}

void cnn_config_diff(const struct cnn_node *a, const struct cnn_node *b,
                     void (*fn)(void *ctx, const char *path, const char *old,
                                const char *new_value),
                     void *ctx)
{
    struct leaves la = {0}, lb = {0};
    collect_leaves(a, &la);
    collect_leaves(b, &lb);
    for (int i = 0; i < la.n; i++) {
        const struct cnn_node *x = la.items[i];
        const struct cnn_node *y = find_leaf(&lb, x->path);
        if (!y || strcmp(leaf_text(x), leaf_text(y)) != 0)
            fn(ctx, x->path, leaf_text(x), y ? leaf_text(y) : NULL);
    }
    for (int i = 0; i < lb.n; i++)
        if (!find_leaf(&la, lb.items[i]->path))
            fn(ctx, lb.items[i]->path, NULL, leaf_text(lb.items[i]));
    free(la.items);
    free(lb.items);
}

void cnn_config_free(struct cnn_config *cfg)
{
    if (!cfg)
        return;
    cnn_node_free(cfg->root);
    for (int i = 0; i < cfg->n_origins; i++)
        free(cfg->origins[i]);
    free(cfg->origins);
    free(cfg->path);
    free(cfg->dir);
    for (int i = 0; i < CNN_MAX_FILES; i++) {
        free(cfg->data.train.files[i]);
        free(cfg->data.test.files[i]);
    }
    free(cfg->data.train.targets);
    free(cfg->data.test.targets);
    free(cfg->data.train.images);
    free(cfg->data.train.labels);
    free(cfg->data.test.images);
    free(cfg->data.test.labels);
    memset(cfg, 0, sizeof *cfg);
}
