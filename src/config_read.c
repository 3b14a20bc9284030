/*
 * Typed reads from the config tree, each failing with the place and key
 * path of the offending value, and the unknown-key check with its
 * "did you mean" hint. See include/cnn/config.h.
 */
#include "cnn/config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void where_of(const struct cnn_node *n, bool at_key, char *buf,
                     size_t cap)
{
    int line = at_key && n->key_line ? n->key_line : n->line;
    int col = at_key && n->key_line ? n->key_col : n->col;
    if (line > 0)
        snprintf(buf, cap, "%s:%d:%d", n->origin ? n->origin : "", line, col);
    else
        snprintf(buf, cap, "%s", n->origin ? n->origin : "");
}

static enum cnn_status vnode_error(struct cnn_error *err,
                                   const struct cnn_node *n, bool at_key,
                                   const char *fmt, va_list ap)
{
    char where[600];
    char msg[900];
    where_of(n, at_key, where, sizeof where);
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (n->path && *n->path)
        return cnn_error_at(err, CNN_ERR_CONFIG, where, "%s: %s", n->path, msg);
    return cnn_error_at(err, CNN_ERR_CONFIG, where, "%s", msg);
}

enum cnn_status cnn_node_error(struct cnn_error *err, const struct cnn_node *n,
                               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum cnn_status st = vnode_error(err, n, false, fmt, ap);
    va_end(ap);
    return st;
}

bool cnn_node_is_null(const struct cnn_node *n)
{
    if (!n || n->kind != CNN_NODE_SCALAR || n->quoted)
        return false;
    return !*n->value || strcmp(n->value, "~") == 0 ||
           strcasecmp(n->value, "null") == 0;
}

struct cnn_node *cnn_node_get(struct cnn_node *map, const char *key)
{
    if (!map || map->kind != CNN_NODE_MAP)
        return NULL;

    bool known = false;
    for (int i = 0; i < map->n_asked; i++)
        if (strcmp(map->asked[i], key) == 0)
            known = true;
    if (!known && map->n_asked < CNN_NODE_MAX_ASKED)
        map->asked[map->n_asked++] = key;

    for (int i = 0; i < map->n_items; i++) {
        if (strcmp(map->items[i]->key, key) == 0) {
            map->items[i]->used = true;
            return map->items[i];
        }
    }
    return NULL;
}

static const char *kind_name(const struct cnn_node *n)
{
    switch (n->kind) {
    case CNN_NODE_MAP:
        return "a mapping";
    case CNN_NODE_SEQ:
        return "a list";
    default:
        return "a value";
    }
}

enum cnn_status cnn_node_int(struct cnn_node *n, long long min, long long max,
                             long long *out, struct cnn_error *err)
{
    if (n->kind != CNN_NODE_SCALAR || n->quoted || cnn_node_is_null(n))
        return cnn_node_error(err, n, "expected an integer, got %s",
                              n->kind == CNN_NODE_SCALAR ?
                              (n->quoted ? "a quoted string" : "null")
                              : kind_name(n));
    char *end;
    errno = 0;
    long long v = strtoll(n->value, &end, 10);
    if (end == n->value || *end != '\0') {
        /* 1e3 is a fine way to write a whole number. */
        double d = strtod(n->value, &end);
        if (end == n->value || *end != '\0' || d != floor(d))
            return cnn_node_error(err, n, "expected an integer, got '%s'",
                                  n->value);
        /* (double)INT64_MAX rounds up to 2^63, which no long long holds. */
        if (d < (double)min || d > (double)max || d >= 0x1p63)
            return cnn_node_error(err, n, "must be between %lld and %lld, "
                                  "got %s", min, max, n->value);
        v = (long long)d;
    } else if (errno == ERANGE || v < min || v > max) {
        return cnn_node_error(err, n, "must be between %lld and %lld, got %s",
                              min, max, n->value);
    }
    *out = v;
    return CNN_OK;
}

enum cnn_status cnn_node_float(struct cnn_node *n, double min, double max,
                               double *out, struct cnn_error *err)
{
    if (n->kind != CNN_NODE_SCALAR || n->quoted || cnn_node_is_null(n))
        return cnn_node_error(err, n, "expected a number, got %s",
                              n->kind == CNN_NODE_SCALAR ?
                              (n->quoted ? "a quoted string" : "null")
                              : kind_name(n));
    char *end;
    double v = strtod(n->value, &end);
    if (end == n->value || *end != '\0' || !isfinite(v))
        return cnn_node_error(err, n, "expected a number, got '%s'", n->value);
    if (v < min || v > max)
        return cnn_node_error(err, n, "must be between %g and %g, got %s",
                              min, max, n->value);
    *out = v;
    return CNN_OK;
}

enum cnn_status cnn_read_int(struct cnn_node *map, const char *key,
                             long long def, long long min, long long max,
                             long long *out, struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(map, key);
    *out = def;
    return n ? cnn_node_int(n, min, max, out, err) : CNN_OK;
}

enum cnn_status cnn_read_float(struct cnn_node *map, const char *key,
                               double def, double min, double max,
                               double *out, struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(map, key);
    *out = def;
    return n ? cnn_node_float(n, min, max, out, err) : CNN_OK;
}

enum cnn_status cnn_read_bool(struct cnn_node *map, const char *key,
                              bool def, bool *out, struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(map, key);
    *out = def;
    if (!n)
        return CNN_OK;
    if (n->kind == CNN_NODE_SCALAR && !n->quoted) {
        static const char *const yes[] = {"true", "yes", "on"};
        static const char *const no[] = {"false", "no", "off"};
        for (int i = 0; i < 3; i++) {
            if (strcasecmp(n->value, yes[i]) == 0) {
                *out = true;
                return CNN_OK;
            }
            if (strcasecmp(n->value, no[i]) == 0) {
                *out = false;
                return CNN_OK;
            }
        }
    }
    return cnn_node_error(err, n, "expected true or false, got %s%s%s",
                          n->kind == CNN_NODE_SCALAR ? "'" : kind_name(n),
                          n->kind == CNN_NODE_SCALAR ? n->value : "",
                          n->kind == CNN_NODE_SCALAR ? "'" : "");
}

enum cnn_status cnn_read_string(struct cnn_node *map, const char *key,
                                const char *def, const char **out,
                                struct cnn_error *err)
{
    struct cnn_node *n = cnn_node_get(map, key);
    *out = def;
    if (!n)
        return CNN_OK;
    if (n->kind != CNN_NODE_SCALAR || cnn_node_is_null(n) || !*n->value)
        return cnn_node_error(err, n, "expected a non-empty string, got %s",
                              n->kind == CNN_NODE_SCALAR ? "nothing"
                                                         : kind_name(n));
    *out = n->value;
    return CNN_OK;
}

static void list_names(const char *const *names, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && len + 1 < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s",
                                i ? ", " : "", names[i]);
}

enum cnn_status cnn_read_choice(struct cnn_node *map, const char *key,
                                const char *const *names, int def, int *out,
                                struct cnn_error *err)
{
    const char *s;
    *out = def;
    if (cnn_read_string(map, key, NULL, &s, err) != CNN_OK)
        return CNN_ERR_CONFIG;
    if (!s)
        return CNN_OK;

    int count = 0;
    for (; names[count]; count++) {
        if (strcmp(names[count], s) == 0) {
            *out = count;
            return CNN_OK;
        }
    }
    char all[512];
    list_names(names, all, sizeof all);
    cnn_node_error(err, cnn_node_get(map, key), "unknown value '%s' "
                   "(one of: %s)", s, all);
    const char *near = cnn_closest_name(s, names, count);
    if (near)
        cnn_error_hint(err, "did you mean '%s'?", near);
    return CNN_ERR_CONFIG;
}

enum cnn_status cnn_node_expect_map(struct cnn_node *n, struct cnn_error *err)
{
    if (!n || n->kind == CNN_NODE_MAP || cnn_node_is_null(n))
        return CNN_OK;
    return cnn_node_error(err, n, "expected a mapping of keys, got %s",
                          kind_name(n));
}

/* Optimal string alignment distance, small strings only. */
static int edit_distance(const char *a, const char *b)
{
    enum { MAXLEN = 64 };
    size_t la = strlen(a), lb = strlen(b);
    if (la >= MAXLEN || lb >= MAXLEN)
        return 99;

    int d[MAXLEN + 1][MAXLEN + 1];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int cost = a[i - 1] != b[j - 1];
            int best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

const char *cnn_closest_name(const char *word, const char *const *names,
                             int n_names)
{
    const char *best = NULL;
    int best_d = 99;
    for (int i = 0; i < n_names; i++) {
        int d = edit_distance(word, names[i]);
        if (d < best_d) {
            best_d = d;
            best = names[i];
        }
    }
    /* Allow about one slip per four letters, at least one. */
    int allowed = (int)strlen(word) / 4;
    if (allowed < 1)
        allowed = 1;
    return best_d <= allowed ? best : NULL;
}

enum cnn_status cnn_node_check_unused(struct cnn_node *map,
                                      struct cnn_error *err)
{
    if (!map || cnn_node_is_null(map))
        return CNN_OK;
    if (cnn_node_expect_map(map, err) != CNN_OK)
        return CNN_ERR_CONFIG;

    for (int i = 0; i < map->n_items; i++) {
        struct cnn_node *c = map->items[i];
        if (c->used)
            continue;
        char known[512];
        const char *asked[CNN_NODE_MAX_ASKED + 1];
        memcpy(asked, map->asked, (size_t)map->n_asked * sizeof asked[0]);
        asked[map->n_asked] = NULL;
        list_names(asked, known, sizeof known);

        char where[600];
        where_of(c, true, where, sizeof where);
        cnn_error_at(err, CNN_ERR_CONFIG, where, "%s: unknown key '%s'",
                     c->path, c->key);
        const char *near = cnn_closest_name(c->key, map->asked, map->n_asked);
        if (near)
            cnn_error_hint(err, "did you mean '%s'?", near);
        else if (map->n_asked)
            cnn_error_hint(err, "known keys here: %s", known);
        return CNN_ERR_CONFIG;
    }
    return CNN_OK;
}
