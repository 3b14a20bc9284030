/*
 * CSV files, gzip'd or not: a delimiter (given or detected), an optional
 * header (given or detected), the target column(s) and the feature
 * columns picked by index, range or header name. Every row is checked:
 * its field count, each number, each label; a bad one is named by file
 * and line.
 */
#include "cnn/data.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Far past any table this trainer holds in memory. */
static const size_t MAX_TEXT = (size_t)4 << 30;
enum { MAX_FIELDS = 1 << 20 };

struct table {
    const char *path;
    char *text;                 /* the whole file, cut in place */
    char **lines;               /* data lines (after skip_rows, blanks) */
    long long *line_no;         /* their 1-based numbers in the file */
    long long n_lines;
    char delim;                 /* ' ' means runs of whitespace */
    char **header;              /* cells of the header row, or NULL */
    char *header_text;          /* ... cut from this copy */
    bool past_header;           /* lines and line_no moved past it */
    int n_cols;
    char **cells;               /* one row's cells, n_cols of them ... */
    char *row;                  /* ... cut from this copy of its line */
    size_t row_cap;
};

static enum cnn_status read_text(const char *path, char **out,
                                 struct cnn_error *err)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            strerror(errno ? errno : ENOENT));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    enum cnn_status st = buf ? CNN_OK : cnn_error_set(err, CNN_ERR_NOMEM,
                                                      "out of memory");
    while (st == CNN_OK) {
        if (len == cap) {
            char *more = cap < MAX_TEXT ? realloc(buf, 2 * cap + 1) : NULL;
            if (!more) {
                st = cnn_error_at(err, CNN_ERR_DATA, path, "too large to "
                                  "hold in memory");
                break;
            }
            buf = more;
            cap *= 2;
        }
        size_t room = cap - len;    /* zlib reads at most INT_MAX a call */
        int r = gzread(f, buf + len, (unsigned)(room < (1u << 30) ? room
                                                                  : 1u << 30));
        if (r < 0) {
            int code;
            st = cnn_error_at(err, CNN_ERR_DATA, path, "corrupt file: %s",
                              gzerror(f, &code));
        } else if (r == 0) {
            /* A gzip stream cut short ends without a read error; zlib
             * says so only here. */
            int code;
            const char *msg = gzerror(f, &code);
            if (code != Z_OK)
                st = cnn_error_at(err, CNN_ERR_DATA, path, "corrupt or "
                                  "truncated gzip data: %s", msg);
            break;
        }
        len += r > 0 ? (size_t)r : 0;
    }
    gzclose(f);
    if (st != CNN_OK) {
        free(buf);
        return st;
    }
    if (memchr(buf, '\0', len)) {
        free(buf);
        return cnn_error_at(err, CNN_ERR_DATA, path, "holds NUL bytes: not "
                            "a text file");
    }
    buf[len] = '\0';
    *out = buf;
    return CNN_OK;
}

static bool blank(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    return !*s;
}

/* Cuts the text into lines, drops the first skip and blank ones. */
static enum cnn_status cut_lines(struct table *t, long long skip,
                                 struct cnn_error *err)
{
    long long cap = 1024;
    t->lines = malloc((size_t)cap * sizeof *t->lines);
    t->line_no = malloc((size_t)cap * sizeof *t->line_no);
    long long no = 0;
    char *start = t->text;
    if (strncmp(start, "\xef\xbb\xbf", 3) == 0)
        start += 3;     /* the UTF-8 byte order mark spreadsheets write */
    for (char *p = start; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        size_t len = strlen(p);
        if (len && p[len - 1] == '\r')
            p[len - 1] = '\0';
        no++;
        if (no > skip && !blank(p)) {
            if (t->n_lines == cap) {
                cap *= 2;
                char **l = realloc(t->lines, (size_t)cap * sizeof *l);
                long long *n = realloc(t->line_no, (size_t)cap * sizeof *n);
                if (l)
                    t->lines = l;
                if (n)
                    t->line_no = n;
                if (!l || !n)
                    return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
            }
            if (!t->lines || !t->line_no)
                return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
            t->lines[t->n_lines] = p;
            t->line_no[t->n_lines++] = no;
        }
        p = nl ? nl + 1 : NULL;
    }
    if (!t->lines || !t->line_no)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    return CNN_OK;
}

/* The most frequent of , ; tab on the first line; whitespace if none. */
static char detect_delimiter(const char *line)
{
    const char cand[] = {',', ';', '\t'};
    int best = -1, best_n = 0;
    for (int i = 0; i < 3; i++) {
        int n = 0;
        for (const char *p = line; *p; p++)
            n += *p == cand[i];
        if (n > best_n) {
            best_n = n;
            best = i;
        }
    }
    return best < 0 ? ' ' : cand[best];
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* A double-quoted cell starting at p (on the quote): unquoted in place,
 * "" standing for one quote. Returns where the text after the closing
 * quote starts. */
static char *unquote(char *p)
{
    char *w = p, *r = p + 1;
    while (*r && !(r[0] == '"' && r[1] != '"')) {
        if (r[0] == '"')
            r++;
        *w++ = *r++;
    }
    if (*r == '"')
        r++;
    *w = '\0';
    return r;
}

static bool is_blank_delim(char c)
{
    return c == ' ' || c == '\t';
}

/* Splits line in place into at most max cells; returns how many there
 * were (which may exceed max: the rest are not stored). Double quotes
 * around a cell protect delimiters; "" inside stands for one quote. With
 * delim ' ', cells are separated by runs of spaces and tabs. */
static int split_line(char *line, char delim, char **cells, int max)
{
    bool blanks = delim == ' ';
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || (blanks && *p == '\t'))
            p++;
        if (blanks && !*p)
            return n;
        char *cell = p, *end;
        bool quoted = *p == '"';
        if (quoted) {
            end = unquote(p);
            while (*end && (blanks ? !is_blank_delim(*end) : *end != delim))
                end++;      /* text after the closing quote is dropped */
        } else {
            end = p;
            while (*end && (blanks ? !is_blank_delim(*end) : *end != delim))
                end++;
        }
        bool more = *end != '\0';
        *end = '\0';
        if (n < max)
            cells[n] = quoted ? cell : trim(cell);
        n++;
        if (!more)
            return n;
        p = end + 1;
    }
}

static bool number(const char *s, float *v)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    while (isspace((unsigned char)*end))
        end++;
    if (end == s || *end || !isfinite(d) || fabs(d) > 3.4e38)
        return false;
    *v = (float)d;
    return true;
}

static bool whole_number(const char *s, long long *v)
{
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (end == s || *end || errno)
        return false;
    *v = i;
    return true;
}

/* A data error at "file:line" of row. */
static enum cnn_status row_error(const struct table *t, long long row,
                                 struct cnn_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum cnn_status row_error(const struct table *t, long long row,
                                 struct cnn_error *err, const char *fmt, ...)
{
    char where[4200], msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(where, sizeof where, "%s:%lld", t->path, t->line_no[row]);
    return cnn_error_at(err, CNN_ERR_DATA, where, "%s", msg);
}

/* Splits a copy of row into t->cells, checking the field count; the
 * lines themselves stay whole, to be read again. */
static enum cnn_status row_cells(struct table *t, long long row,
                                 struct cnn_error *err)
{
    size_t len = strlen(t->lines[row]) + 1;
    if (len > t->row_cap) {
        char *more = realloc(t->row, len);
        if (!more)
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        t->row = more;
        t->row_cap = len;
    }
    memcpy(t->row, t->lines[row], len);
    int n = split_line(t->row, t->delim, t->cells, t->n_cols);
    if (n != t->n_cols)
        return row_error(t, row, err, "%d fields, but the first row has "
                         "%d", n, t->n_cols);
    return CNN_OK;
}

static enum cnn_status open_table(struct table *t, const char *path,
                                  const struct cnn_csv_config *c, int header,
                                  struct cnn_error *err)
{
    memset(t, 0, sizeof *t);
    t->path = path;
    enum cnn_status st = read_text(path, &t->text, err);
    if (st == CNN_OK)
        st = cut_lines(t, c->skip_rows, err);
    if (st != CNN_OK)
        return st;
    if (t->n_lines == 0)
        return cnn_error_at(err, CNN_ERR_DATA, path, "empty: no rows%s",
                            c->skip_rows ? " after skip_rows" : "");
    t->delim = c->delimiter ? c->delimiter : detect_delimiter(t->lines[0]);

    /* Count the first row's fields on a copy; cells are cut in place. */
    char *copy = strdup(t->lines[0]);
    char *probe[1];
    int n = copy ? split_line(copy, t->delim, probe, 0) : -1;
    free(copy);
    if (n < 0)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    if (n > MAX_FIELDS)
        return cnn_error_at(err, CNN_ERR_DATA, path, "%d fields in a row: "
                            "too many", n);
    t->n_cols = n;
    t->cells = malloc((size_t)n * sizeof *t->cells);
    if (!t->cells)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");

    /* A header: given, or detected as a first row with a cell that is not
     * a number where the second row has one (or no numbers at all). */
    if (header < 0) {
        char *first = strdup(t->lines[0]);
        char *second = t->n_lines > 1 ? strdup(t->lines[1]) : NULL;
        char **a = calloc((size_t)n, sizeof *a), **b = calloc((size_t)n,
                                                              sizeof *b);
        if (!first || (t->n_lines > 1 && !second) || !a || !b) {
            free(first), free(second), free(a), free(b);
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        }
        int na = split_line(first, t->delim, a, n);
        int nb = second ? split_line(second, t->delim, b, n) : 0;
        int numbers = 0;
        bool words_over_numbers = false;
        float v;
        for (int i = 0; i < na && i < n; i++) {
            bool num = number(a[i], &v);
            numbers += num;
            if (!num && i < nb && number(b[i], &v))
                words_over_numbers = true;
        }
        header = words_over_numbers || (numbers == 0 && na > 1 &&
                                        t->n_lines > 1);
        free(first), free(second), free(a), free(b);
    }
    if (header) {
        t->header_text = strdup(t->lines[0]);
        t->header = malloc((size_t)n * sizeof *t->header);
        if (!t->header_text || !t->header)
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        split_line(t->header_text, t->delim, t->header, n);
        t->lines++;
        t->line_no++;
        t->n_lines--;
        t->past_header = true;
        if (t->n_lines == 0)
            return cnn_error_at(err, CNN_ERR_DATA, path, "a header and no "
                                "rows");
    }
    return CNN_OK;
}

static void close_table(struct table *t)
{
    if (t->past_header) {
        t->lines--;
        t->line_no--;
    }
    free(t->lines);
    free(t->line_no);
    free(t->header);
    free(t->header_text);
    free(t->cells);
    free(t->row);
    free(t->text);
}

/* Expands selectors into column indices, in order; marks used[]. */
static enum cnn_status select_columns(const struct table *t,
                                      const struct cnn_column *sel, int n_sel,
                                      int *cols, int *n_cols, bool *used,
                                      const char *what, struct cnn_error *err)
{
    int n = 0, N = t->n_cols;
    for (int s = 0; s < n_sel; s++) {
        long long from = sel[s].from, to = sel[s].to;
        if (sel[s].name) {
            int found = -1;
            for (int i = 0; t->header && i < N; i++)
                if (strcmp(t->header[i], sel[s].name) == 0)
                    found = i;
            if (found < 0)
                return cnn_error_at(err, CNN_ERR_DATA, t->path, "%s column "
                                    "'%s': %s", what, sel[s].name,
                                    t->header ? "not in the header"
                                              : "the file has no header row "
                                                "to find it in");
            from = found;
            to = found + 1;
        } else {
            if (from < 0)
                from += N;
            if (to < 0)
                to += N;
            else if (to == 0)
                to = N;
        }
        if (from < 0 || to > N || from >= to)
            return cnn_error_at(err, CNN_ERR_DATA, t->path, "%s columns "
                                "%lld..%lld: the rows have %d fields (0 to "
                                "%d)", what, sel[s].from, sel[s].to, N, N - 1);
        for (long long i = from; i < to; i++) {
            if (used[i])
                return cnn_error_at(err, CNN_ERR_DATA, t->path, "column %lld "
                                    "is chosen twice (%s)", i, what);
            used[i] = true;
            cols[n++] = (int)i;
        }
    }
    *n_cols = n;
    return CNN_OK;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Class names of string labels: those given (data.classes), those of the
 * training split, or the sorted distinct labels of this one. */
static enum cnn_status class_list(struct cnn_dataset *ds, struct table *t,
                                  int col, const struct cnn_config *cfg,
                                  const struct cnn_dataset *train,
                                  struct cnn_error *err)
{
    const struct cnn_data_config *d = &cfg->data;
    int n = 0;
    char **names = NULL;
    if (train && train->n_class_names) {
        n = train->n_class_names;
        names = calloc((size_t)n, sizeof *names);
        for (int i = 0; names && i < n; i++)
            names[i] = strdup(train->class_names[i]);
    } else if (d->n_class_names) {
        n = d->n_class_names;
        names = calloc((size_t)n, sizeof *names);
        for (int i = 0; names && i < n; i++)
            names[i] = strdup(d->classes[i]);
    } else {
        names = calloc((size_t)(t->n_lines < 65536 ? t->n_lines : 65536),
                       sizeof *names);
        for (long long r = 0; names && r < t->n_lines; r++) {
            enum cnn_status st = row_cells(t, r, err);
            if (st != CNN_OK) {
                ds->class_names = names, ds->n_class_names = n;
                return st;
            }
            bool seen = false;
            for (int i = 0; i < n && !seen; i++)
                seen = strcmp(names[i], t->cells[col]) == 0;
            if (seen)
                continue;
            if (n == 65536) {
                ds->class_names = names, ds->n_class_names = n;
                return row_error(t, r, err, "more than 65536 distinct "
                                 "labels");
            }
            if (!(names[n] = strdup(t->cells[col]))) {
                ds->class_names = names, ds->n_class_names = n;
                return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
            }
            n++;
        }
        if (names)
            qsort(names, (size_t)n, sizeof *names, compare_names);
    }
    ds->class_names = names;
    ds->n_class_names = names ? n : 0;
    for (int i = 0; names && i < n; i++)
        if (!names[i])
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    return names ? CNN_OK : cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
}

/* Whether the labels in column col are all whole numbers >= 0. */
static bool integer_labels(struct table *t, int col)
{
    for (long long r = 0; r < t->n_lines; r++) {
        long long v;
        if (row_cells(t, r, NULL) != CNN_OK)
            return true;    /* the row's own error comes later */
        if (!whole_number(t->cells[col], &v) || v < 0)
            return false;
    }
    return true;
}

static enum cnn_status read_label(struct cnn_dataset *ds, struct table *t,
                                  long long r, const char *cell, int *label,
                                  struct cnn_error *err)
{
    if (ds->n_class_names) {
        for (int i = 0; i < ds->n_class_names; i++)
            if (strcmp(ds->class_names[i], cell) == 0) {
                *label = i;
                return CNN_OK;
            }
        return row_error(t, r, err, "unknown label '%.40s': not one of the "
                         "%d classes", cell, ds->n_class_names);
    }
    long long v;
    if (!whole_number(cell, &v) || v < 0 || v > 65535)
        return row_error(t, r, err, "label '%.40s' is not a class number "
                         "(0 to 65535)", cell);
    *label = (int)v;
    if (*label + 1 > ds->n_classes)
        ds->n_classes = *label + 1;
    return CNN_OK;
}

/* The rows of t into ds's features (at cols) and, at target columns
 * tcols, labels or targets. */
static enum cnn_status read_rows(struct cnn_dataset *ds, struct table *t,
                                 const int *cols, int n_feat,
                                 const int *tcols, int n_tcols,
                                 enum cnn_task task, struct cnn_error *err)
{
    for (long long r = 0; r < t->n_lines; r++) {
        enum cnn_status st = row_cells(t, r, err);
        if (st != CNN_OK)
            return st;
        float *x = ds->features ? ds->features + (size_t)r * n_feat : NULL;
        for (int j = 0; j < n_feat; j++)
            if (!number(t->cells[cols[j]], &x[j]))
                return row_error(t, r, err, "field %d ('%.40s') is not a "
                                 "number", cols[j] + 1, t->cells[cols[j]]);
        for (int j = 0; j < n_tcols; j++) {
            const char *cell = t->cells[tcols[j]];
            if (task == CNN_TASK_REGRESS) {
                if (!number(cell, &ds->targets[(size_t)r * n_tcols + j]))
                    return row_error(t, r, err, "target '%.40s' is not a "
                                     "number", cell);
            } else if ((st = read_label(ds, t, r, cell, &ds->labels[r],
                                        err)) != CNN_OK) {
                return st;
            }
        }
    }
    return CNN_OK;
}

/* How the labels of column col are read: by the names the training split
 * or data.classes give, as class numbers, or by this file's own sorted
 * distinct names. */
static enum cnn_status choose_labels(struct cnn_dataset *ds, struct table *t,
                                     int col, const struct cnn_config *cfg,
                                     const struct cnn_dataset *train,
                                     struct cnn_error *err)
{
    bool named = train ? train->n_class_names > 0 : !integer_labels(t, col);
    ds->n_classes = train ? train->n_classes : 0;
    if (!named)
        return CNN_OK;
    enum cnn_status st = class_list(ds, t, col, cfg, train, err);
    ds->n_classes = ds->n_class_names;
    return st;
}

enum cnn_status cnn_csv_load(struct cnn_dataset *ds,
                             const struct cnn_config *cfg,
                             const struct cnn_split_config *split,
                             const struct cnn_dataset *train,
                             struct cnn_error *err)
{
    const struct cnn_csv_config *c = &cfg->data.csv;
    enum cnn_task task = cfg->data.task;
    struct table t, tt = {0}, *tgt = &t;
    int *fcols = NULL, *tcols = NULL, n_f = 0, n_t = 0;
    bool *used = NULL;
    memset(ds, 0, sizeof *ds);

    enum cnn_status st = open_table(&t, split->files[0], c, c->header, err);
    if (st == CNN_OK && split->targets) {
        tgt = &tt;
        st = open_table(&tt, split->targets, c, c->header, err);
        if (st == CNN_OK && tt.n_lines != t.n_lines)
            st = cnn_error_at(err, CNN_ERR_DATA, split->targets, "%lld rows, "
                              "but %s has %lld", tt.n_lines, split->files[0],
                              t.n_lines);
    }
    if (st != CNN_OK)
        goto done;
    used = calloc((size_t)t.n_cols, sizeof *used);
    fcols = malloc((size_t)t.n_cols * sizeof *fcols);
    tcols = malloc((size_t)tgt->n_cols * sizeof *tcols);
    if (!used || !fcols || !tcols) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (split->targets) {
        for (int i = 0; i < tt.n_cols; i++)
            tcols[i] = i;
        n_t = tt.n_cols;
    } else {
        st = select_columns(&t, c->target, c->n_target, tcols, &n_t, used,
                            "target", err);
    }
    if (st == CNN_OK && c->n_features) {
        st = select_columns(&t, c->features, c->n_features, fcols, &n_f, used,
                            "feature", err);
    } else if (st == CNN_OK) {
        for (int i = 0; i < t.n_cols; i++)
            if (!used[i])
                fcols[n_f++] = i;
    }
    if (st != CNN_OK)
        goto done;
    if (n_f == 0) {
        st = cnn_error_at(err, CNN_ERR_DATA, t.path, "no feature columns "
                          "left besides the target");
        goto done;
    }
    /* No target column at all (rows to predict): labels stay 0. */
    if (task == CNN_TASK_CLASSIFY && n_t > 1) {
        st = cnn_error_at(err, CNN_ERR_DATA, tgt->path, "%d target columns; "
                          "classification reads one column of labels (set "
                          "data.task: regression for several values)", n_t);
        goto done;
    }

    ds->shape = (struct cnn_shape){n_f, 1, 1};
    if (c->shape[0] > 0) {
        ds->shape = (struct cnn_shape){c->shape[0], c->shape[1], c->shape[2]};
        if ((long long)cnn_shape_size(ds->shape) != n_f) {
            st = cnn_error_at(err, CNN_ERR_DATA, t.path, "%d feature columns, "
                              "but data.csv.shape [%d, %d, %d] holds %zu "
                              "values", n_f, c->shape[0], c->shape[1],
                              c->shape[2], cnn_shape_size(ds->shape));
            goto done;
        }
    }
    ds->n = t.n_lines;
    ds->features = malloc((size_t)ds->n * n_f * sizeof *ds->features);
    if (task == CNN_TASK_REGRESS) {
        ds->n_targets = n_t;
        ds->targets = malloc((size_t)ds->n * n_t * sizeof *ds->targets);
    } else {
        ds->labels = calloc((size_t)ds->n, sizeof *ds->labels);
        ds->n_classes = 1;
    }
    if (!ds->features || (!ds->targets && !ds->labels)) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (task == CNN_TASK_CLASSIFY && n_t == 1)
        st = choose_labels(ds, tgt, tcols[0], cfg, train, err);
    if (st == CNN_OK && tgt == &t) {
        st = read_rows(ds, &t, fcols, n_f, tcols, n_t, task, err);
    } else if (st == CNN_OK) {
        st = read_rows(ds, &t, fcols, n_f, NULL, 0, task, err);
        /* The targets file: no features, all its columns targets. */
        float *features = ds->features;
        ds->features = NULL;
        if (st == CNN_OK)
            st = read_rows(ds, &tt, NULL, 0, tcols, n_t, task, err);
        ds->features = features;
    }
done:
    if (st != CNN_OK)
        cnn_dataset_free(ds);
    free(used);
    free(fcols);
    free(tcols);
    close_table(&t);
    if (tgt == &tt)
        close_table(&tt);
    return st;
}
