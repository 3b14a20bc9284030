/*
 * Reading a run directory back: metrics.csv, with its columns found by
 * header name; run.json, one JSON object whose keys we do not know are
 * passed over, so the file may grow; and, when run.json is absent, the
 * run's name and optimizer from config.yaml through the config loader
 * (never resolved: the data files it names may be gone). Every problem
 * names its file, and its line where there is one. Nothing here prints.
 */
#include "cnn/runs.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cnn/config.h"

enum {
    PATH_CAP = 4200,
    MAX_JSON_BYTES = 1 << 20,
    MAX_JSON_DEPTH = 64,
    MAX_NUMBER_CHARS = 64,
};

static const char NOT_A_RUN_HINT[] = "a run directory is the --out "
                                     "directory of 'cnn-train train'";

/* --- the run value ---------------------------------------------------- */

static void run_init(struct cnn_run *run)
{
    memset(run, 0, sizeof *run);
    run->lr = run->seconds = run->images_per_s = NAN;
    run->final_train_loss = run->final_test_acc = run->best_test_acc = NAN;
    run->final_test_rmse = run->final_test_r2 = NAN;
    run->epochs = run->steps = run->best_epoch = -1;
    run->params = run->optimizer_state_bytes = -1;
}

static void series_free(struct cnn_series *s)
{
    free(s->x);
    free(s->y);
    memset(s, 0, sizeof *s);
}

void cnn_run_free(struct cnn_run *run)
{
    if (!run)
        return;
    free(run->dir);
    free(run->base);
    free(run->name);
    free(run->optimizer);
    series_free(&run->loss);
    series_free(&run->acc);
    series_free(&run->r2);
    run_init(run);
}

bool cnn_series_push(struct cnn_series *s, double x, double y)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        double *nx = realloc(s->x, cap * sizeof *nx);
        if (!nx)
            return false;
        s->x = nx;
        double *ny = realloc(s->y, cap * sizeof *ny);
        if (!ny)
            return false;
        s->y = ny;
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
    return true;
}

/* dir without trailing slashes, and its last component; "." and ".."
 * are named after the directory they stand for. */
static enum cnn_status set_names(struct cnn_run *run, const char *dir,
                                 struct cnn_error *err)
{
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--;
    run->dir = strndup(dir, len);
    if (!run->dir)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");

    const char *slash = strrchr(run->dir, '/');
    const char *base = slash && slash[1] ? slash + 1 : run->dir;
    char *real = NULL;
    if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        real = realpath(run->dir, NULL);
        if (real && strcmp(real, "/") != 0)
            base = strrchr(real, '/') + 1;
    }
    run->base = strdup(base);
    free(real);
    run->label = run->base;
    if (!run->base)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    return CNN_OK;
}

static enum cnn_status file_path(const struct cnn_run *run, const char *file,
                                 char *buf, struct cnn_error *err)
{
    if (snprintf(buf, PATH_CAP, "%s/%s", run->dir, file) >= PATH_CAP)
        return cnn_error_at(err, CNN_ERR_DATA, run->dir, "path too long");
    return CNN_OK;
}

static enum cnn_status check_dir(const char *dir, struct cnn_error *err)
{
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        cnn_error_at(err, CNN_ERR_DATA, dir, "cannot open run directory: %s",
                     strerror(errno));
        cnn_error_hint(err, "%s", NOT_A_RUN_HINT);
        return CNN_ERR_DATA;
    }
    if (!S_ISDIR(sb.st_mode))
        return cnn_error_at(err, CNN_ERR_DATA, dir, "not a directory; "
                            "expected a run directory");
    return CNN_OK;
}

/* --- metrics.csv -------------------------------------------------------- */

enum column {
    COL_EPOCH,
    COL_STEP,
    COL_TRAIN_LOSS,
    COL_TEST_ACC,
    COL_IMAGES_PER_S,
    COL_ELAPSED_S,
    COL_TEST_RMSE,
    COL_TEST_R2,
    N_COLUMNS,
};

static const struct {
    const char *name;
    bool required;
} columns[N_COLUMNS] = {
    [COL_EPOCH] = {"epoch", true},
    [COL_STEP] = {"step", true},
    [COL_TRAIN_LOSS] = {"train_loss", true},
    [COL_TEST_ACC] = {"test_acc", true},
    [COL_IMAGES_PER_S] = {"images_per_s", false},
    [COL_ELAPSED_S] = {"elapsed_s", false},
    [COL_TEST_RMSE] = {"test_rmse", false},     /* from version 0.2 */
    [COL_TEST_R2] = {"test_r2", false},
};

struct csv {
    const char *path;
    long line;                  /* of the row being read, from 1 */
    int n_cells;                /* per row, as in the header */
    int at[N_COLUMNS];          /* cell index of each column; -1: none */
};

/* Running sums for the figures metrics.csv gives only row by row. */
struct tally {
    double images;              /* training examples so far */
    double train_t;             /* elapsed_s of the last training row */
};

static enum cnn_status row_error(const struct csv *c, struct cnn_error *err,
                                 const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum cnn_status row_error(const struct csv *c, struct cnn_error *err,
                                 const char *fmt, ...)
{
    char where[PATH_CAP + 32], msg[512];
    snprintf(where, sizeof where, "%s:%ld", c->path, c->line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cnn_error_at(err, CNN_ERR_DATA, where, "%s", msg);
}

static void chomp(char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
}

/* Cuts line at its commas. cells[col] points at the text of each column
 * we read (NULL for one the header lacks); returns the number of cells. */
static int split_row(const struct csv *c, char *line,
                     const char *cells[N_COLUMNS])
{
    for (int k = 0; k < N_COLUMNS; k++)
        cells[k] = NULL;
    int n = 0;
    for (char *p = line; p; n++) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        for (int k = 0; k < N_COLUMNS; k++)
            if (c->at[k] == n)
                cells[k] = p;
        p = comma ? comma + 1 : NULL;
    }
    return n;
}

static enum cnn_status read_header(struct csv *c, char *line,
                                   struct cnn_error *err)
{
    const char *cells[N_COLUMNS];
    for (int k = 0; k < N_COLUMNS; k++)
        c->at[k] = -1;

    /* Find each name first, then cut: split_row needs c->at. */
    char *copy = strdup(line);
    if (!copy)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    int n = 0;
    for (char *p = copy; p; n++) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        for (int k = 0; k < N_COLUMNS; k++)
            if (c->at[k] < 0 && strcmp(p, columns[k].name) == 0)
                c->at[k] = n;
        p = comma ? comma + 1 : NULL;
    }
    free(copy);
    c->n_cells = split_row(c, line, cells);

    for (int k = 0; k < N_COLUMNS; k++)
        if (columns[k].required && c->at[k] < 0)
            return row_error(c, err, "the header has no '%s' column: not "
                             "a cnn-train metrics table", columns[k].name);
    return CNN_OK;
}

/* An empty cell is NAN: the value does not apply to the row. */
static enum cnn_status parse_cell(const struct csv *c, int col,
                                  const char *text, double *out,
                                  struct cnn_error *err)
{
    *out = NAN;
    if (!text || !*text)
        return CNN_OK;
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end)
        return row_error(c, err, "%s: not a number: '%.40s'",
                         columns[col].name, text);
    *out = v;
    return CNN_OK;
}

static enum cnn_status parse_count_cell(const struct csv *c, int col,
                                        const char *text, double *out,
                                        struct cnn_error *err)
{
    enum cnn_status st = parse_cell(c, col, text, out, err);
    if (st == CNN_OK && !(*out >= 0 && *out < 0x1p62 && *out == floor(*out)))
        return row_error(c, err, "%s: expected a whole number, got '%.40s'",
                         columns[col].name, text ? text : "");
    return st;
}

static enum cnn_status take_row(struct cnn_run *run, struct tally *t,
                                const double v[N_COLUMNS],
                                struct cnn_error *err)
{
    double epoch = v[COL_EPOCH], elapsed = v[COL_ELAPSED_S];
    run->steps = (long long)fmax((double)run->steps, v[COL_STEP]);
    run->epochs = (long long)fmax((double)run->epochs, epoch);
    if (isfinite(elapsed))
        run->seconds = isnan(run->seconds) ? elapsed
                                           : fmax(run->seconds, elapsed);

    if (!isnan(v[COL_TRAIN_LOSS])) {
        if (!cnn_series_push(&run->loss, v[COL_STEP], v[COL_TRAIN_LOSS]))
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        run->final_train_loss = v[COL_TRAIN_LOSS];
        /* images_per_s covers the time since the last training row. */
        if (isfinite(v[COL_IMAGES_PER_S]) && isfinite(elapsed)) {
            t->images += v[COL_IMAGES_PER_S] * (elapsed - t->train_t);
            t->train_t = elapsed;
        }
    }
    if (!isnan(v[COL_TEST_ACC])) {
        if (!cnn_series_push(&run->acc, epoch, v[COL_TEST_ACC]))
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        run->final_test_acc = v[COL_TEST_ACC];
        if (isnan(run->best_test_acc) || v[COL_TEST_ACC] > run->best_test_acc) {
            run->best_test_acc = v[COL_TEST_ACC];
            run->best_epoch = (long long)epoch;
        }
    }
    if (!isnan(v[COL_TEST_R2])) {
        if (!cnn_series_push(&run->r2, epoch, v[COL_TEST_R2]))
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        run->final_test_r2 = v[COL_TEST_R2];
    }
    if (!isnan(v[COL_TEST_RMSE]))
        run->final_test_rmse = v[COL_TEST_RMSE];
    return CNN_OK;
}

static enum cnn_status read_row(struct cnn_run *run, struct csv *c,
                                struct tally *t, char *line,
                                struct cnn_error *err)
{
    const char *cells[N_COLUMNS];
    int n = split_row(c, line, cells);
    if (n != c->n_cells)
        return row_error(c, err, "%d cells, but the header names %d%s", n,
                         c->n_cells, n < c->n_cells ? " (a cut-off row?)"
                                                    : "");

    double v[N_COLUMNS];
    enum cnn_status st = CNN_OK;
    for (int k = 0; k < N_COLUMNS && st == CNN_OK; k++) {
        if (k == COL_EPOCH || k == COL_STEP)
            st = parse_count_cell(c, k, cells[k], &v[k], err);
        else
            st = parse_cell(c, k, cells[k], &v[k], err);
    }
    return st == CNN_OK ? take_row(run, t, v, err) : st;
}

static enum cnn_status read_metrics(struct cnn_run *run,
                                    struct cnn_error *err)
{
    char path[PATH_CAP];
    enum cnn_status st = file_path(run, "metrics.csv", path, err);
    if (st != CNN_OK)
        return st;
    FILE *f = fopen(path, "r");
    if (!f) {
        cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                     strerror(errno));
        cnn_error_hint(err, "%s", NOT_A_RUN_HINT);
        return CNN_ERR_DATA;
    }

    struct csv c = {.path = path};
    struct tally t = {0};
    char *line = NULL;
    size_t cap = 0;
    while (st == CNN_OK && getline(&line, &cap, f) >= 0) {
        c.line++;
        chomp(line);
        if (c.line == 1)
            st = read_header(&c, line, err);
        else if (*line)
            st = read_row(run, &c, &t, line, err);
    }
    if (st == CNN_OK && ferror(f))
        st = cnn_error_at(err, CNN_ERR_DATA, path, "read error");
    else if (st == CNN_OK && c.line == 0)
        st = cnn_error_at(err, CNN_ERR_DATA, path, "empty: no header line");
    if (st == CNN_OK && t.train_t > 0)
        run->images_per_s = t.images / t.train_t;
    free(line);
    fclose(f);
    return st;
}

/* --- run.json ----------------------------------------------------------- */

struct json {
    const char *text, *p, *end;
    const char *path;
    struct cnn_error *err;
};

static enum cnn_status json_error(struct json *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum cnn_status json_error(struct json *j, const char *fmt, ...)
{
    int line = 1, col = 1;
    for (const char *q = j->text; q < j->p; q++) {
        col = *q == '\n' ? 1 : col + 1;
        line += *q == '\n';
    }
    char where[PATH_CAP + 32], msg[512];
    snprintf(where, sizeof where, "%s:%d:%d", j->path, line, col);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cnn_error_at(j->err, CNN_ERR_DATA, where, "%s", msg);
}

static void json_ws(struct json *j)
{
    while (j->p < j->end && strchr(" \t\r\n", *j->p))
        j->p++;
}

static bool json_eat(struct json *j, char c)
{
    json_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return true;
    }
    return false;
}

static int hex4(const char *p, const char *end)
{
    if (end - p < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static char *put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | cp >> 12);
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | cp >> 18);
        *o++ = (char)(0x80 | (cp >> 12 & 0x3F));
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* \uXXXX at j->p (after the backslash and u), a surrogate pair taken
 * whole; the code point goes to *cp. */
static enum cnn_status json_unicode(struct json *j, unsigned *cp)
{
    int hi = hex4(j->p, j->end);
    if (hi < 0)
        return json_error(j, "bad \\u escape: expected 4 hex digits");
    j->p += 4;
    *cp = (unsigned)hi;
    if (hi >= 0xDC00 && hi <= 0xDFFF)
        return json_error(j, "bad \\u escape: a lone low surrogate");
    if (hi < 0xD800 || hi > 0xDBFF)
        return CNN_OK;
    int lo = j->end - j->p >= 2 && j->p[0] == '\\' && j->p[1] == 'u'
             ? hex4(j->p + 2, j->end) : -1;
    if (lo < 0xDC00 || lo > 0xDFFF)
        return json_error(j, "bad \\u escape: a high surrogate without "
                          "its low half");
    j->p += 6;
    *cp = 0x10000 + ((unsigned)(hi - 0xD800) << 10) + (unsigned)(lo - 0xDC00);
    return CNN_OK;
}

/* The escape at j->p (a backslash), decoded to *o, which moves on. */
static enum cnn_status json_escape(struct json *j, char **o)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *e = strchr(from, *++j->p);
    if (*j->p == 'u') {
        unsigned cp = 0;
        j->p++;
        enum cnn_status st = json_unicode(j, &cp);
        if (st == CNN_OK)
            *o = put_utf8(*o, cp);
        return st;
    }
    if (!e || !*e)
        return json_error(j, "bad escape '\\%c' in a string", *j->p);
    *(*o)++ = to[e - from];
    j->p++;
    return CNN_OK;
}

/* A string at j->p, decoded into *out (malloc'd; NULL: only skipped).
 * Decoded text is never longer than its source, which sizes the buffer. */
static enum cnn_status json_string(struct json *j, char **out)
{
    if (out)
        *out = NULL;
    json_ws(j);
    if (j->p >= j->end || *j->p != '"')
        return json_error(j, "expected a string");
    const char *start = j->p + 1;
    const char *q = start;
    while (q < j->end && *q != '"')
        q += *q == '\\' && q + 1 < j->end ? 2 : 1;
    if (q >= j->end)
        return json_error(j, "a string that does not end");
    j->p = start;

    char *buf = malloc((size_t)(q - start) + 1);
    if (!buf)
        return cnn_error_set(j->err, CNN_ERR_NOMEM, "out of memory");
    char *o = buf;
    enum cnn_status st = CNN_OK;
    while (st == CNN_OK && *j->p != '"') {
        if ((unsigned char)*j->p < 0x20)
            st = json_error(j, "a control character inside a string");
        else if (*j->p == '\\')
            st = json_escape(j, &o);
        else
            *o++ = *j->p++;
    }
    if (st != CNN_OK) {
        free(buf);
        return st;
    }
    *o = '\0';
    j->p++;
    if (out)
        *out = buf;
    else
        free(buf);
    return CNN_OK;
}

static bool is_digit(const struct json *j, const char *p)
{
    return p < j->end && *p >= '0' && *p <= '9';
}

static const char *skip_digits(const struct json *j, const char *p)
{
    while (is_digit(j, p))
        p++;
    return p;
}

static enum cnn_status json_number(struct json *j, double *out)
{
    const char *s = j->p, *p = s;
    if (p < j->end && *p == '-')
        p++;
    if (!is_digit(j, p))
        return json_error(j, "expected a value");
    p = *p == '0' ? p + 1 : skip_digits(j, p);
    if (p < j->end && *p == '.') {
        if (!is_digit(j, ++p))
            return json_error(j, "expected digits after '.'");
        p = skip_digits(j, p);
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < j->end && (*p == '+' || *p == '-'))
            p++;
        if (!is_digit(j, p))
            return json_error(j, "expected digits in the exponent");
        p = skip_digits(j, p);
    }

    /* strtod on a copy: past the JSON number it would read on ("0x1"). */
    char buf[MAX_NUMBER_CHARS + 1];
    if (p - s > MAX_NUMBER_CHARS)
        return json_error(j, "a number of more than %d characters",
                          MAX_NUMBER_CHARS);
    memcpy(buf, s, (size_t)(p - s));
    buf[p - s] = '\0';
    *out = strtod(buf, NULL);
    if (!isfinite(*out))
        return json_error(j, "number out of range: %s", buf);
    j->p = p;
    return CNN_OK;
}

enum jtype {
    JSON_NULL,
    JSON_NUMBER,
    JSON_STRING,
    JSON_OTHER,     /* true, false, an object or an array: skipped */
};

struct jvalue {
    enum jtype type;
    double num;
    char *str;      /* JSON_STRING, when asked for; owned */
    const char *at; /* where the value starts, for messages */
};

static bool json_word(struct json *j, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return false;
    j->p += n;
    return true;
}

static enum cnn_status json_value(struct json *j, int depth, struct jvalue *v,
                                  bool keep);

/* An object or array after its opening bracket; its items are skipped. */
static enum cnn_status json_skip_items(struct json *j, int depth, char close)
{
    if (depth > MAX_JSON_DEPTH)
        return json_error(j, "nested more than %d deep", MAX_JSON_DEPTH);
    if (json_eat(j, close))
        return CNN_OK;
    struct jvalue v;
    enum cnn_status st;
    do {
        if (close == '}') {
            st = json_string(j, NULL);
            if (st != CNN_OK)
                return st;
            if (!json_eat(j, ':'))
                return json_error(j, "expected ':' after a key");
        }
        st = json_value(j, depth + 1, &v, false);
        if (st != CNN_OK)
            return st;
    } while (json_eat(j, ','));
    if (!json_eat(j, close))
        return json_error(j, "expected ',' or '%c'", close);
    return CNN_OK;
}

/* Any value; strings are decoded into v->str only when keep. */
static enum cnn_status json_value(struct json *j, int depth, struct jvalue *v,
                                  bool keep)
{
    json_ws(j);
    v->type = JSON_OTHER;
    v->str = NULL;
    v->at = j->p;
    if (j->p >= j->end)
        return json_error(j, "expected a value, got the end of the file");
    switch (*j->p) {
    case '"':
        v->type = JSON_STRING;
        return json_string(j, keep ? &v->str : NULL);
    case '{':
    case '[':
        j->p++;
        return json_skip_items(j, depth, j->p[-1] == '{' ? '}' : ']');
    default:
        break;
    }
    if (json_word(j, "null")) {
        v->type = JSON_NULL;
        return CNN_OK;
    }
    if (json_word(j, "true") || json_word(j, "false"))
        return CNN_OK;
    v->type = JSON_NUMBER;
    return json_number(j, &v->num);
}

/* The keys of run.json that fill a struct cnn_run field. */
enum field_kind {
    FIELD_STRING,
    FIELD_NUMBER,
    FIELD_COUNT,
};

static const struct {
    const char *key;
    enum field_kind kind;
    size_t offset;
} fields[] = {
    {"name", FIELD_STRING, offsetof(struct cnn_run, name)},
    {"optimizer", FIELD_STRING, offsetof(struct cnn_run, optimizer)},
    {"lr", FIELD_NUMBER, offsetof(struct cnn_run, lr)},
    {"epochs", FIELD_COUNT, offsetof(struct cnn_run, epochs)},
    {"steps", FIELD_COUNT, offsetof(struct cnn_run, steps)},
    {"seconds", FIELD_NUMBER, offsetof(struct cnn_run, seconds)},
    {"images_per_s", FIELD_NUMBER, offsetof(struct cnn_run, images_per_s)},
    {"final_train_loss", FIELD_NUMBER,
     offsetof(struct cnn_run, final_train_loss)},
    {"final_test_acc", FIELD_NUMBER, offsetof(struct cnn_run, final_test_acc)},
    {"best_test_acc", FIELD_NUMBER, offsetof(struct cnn_run, best_test_acc)},
    {"best_epoch", FIELD_COUNT, offsetof(struct cnn_run, best_epoch)},
    {"final_test_rmse", FIELD_NUMBER,
     offsetof(struct cnn_run, final_test_rmse)},
    {"final_test_r2", FIELD_NUMBER, offsetof(struct cnn_run, final_test_r2)},
    {"params", FIELD_COUNT, offsetof(struct cnn_run, params)},
    {"optimizer_state_bytes", FIELD_COUNT,
     offsetof(struct cnn_run, optimizer_state_bytes)},
};

/* Stores v into the field key names; null keeps what metrics.csv gave.
 * Takes v->str. */
static enum cnn_status apply_field(struct json *j, struct cnn_run *run,
                                   const char *key, struct jvalue *v)
{
    static const char *const type_names[] = {"null", "a number", "a string",
                                             "a value of another kind"};
    size_t i = 0, n = sizeof fields / sizeof fields[0];
    while (i < n && strcmp(fields[i].key, key) != 0)
        i++;
    if (i == n || v->type == JSON_NULL)
        return CNN_OK;

    char *slot = (char *)run + fields[i].offset;
    enum jtype want = fields[i].kind == FIELD_STRING ? JSON_STRING
                                                     : JSON_NUMBER;
    j->p = v->at;
    if (v->type != want)
        return json_error(j, "%s: expected %s, got %s", key,
                          type_names[want], type_names[v->type]);
    if (fields[i].kind == FIELD_STRING) {
        free(*(char **)slot);
        *(char **)slot = v->str;
        v->str = NULL;
    } else if (fields[i].kind == FIELD_NUMBER) {
        *(double *)slot = v->num;
    } else if (v->num >= 0 && v->num < 0x1p62 && v->num == floor(v->num)) {
        *(long long *)slot = (long long)v->num;
    } else {
        return json_error(j, "%s: expected a whole number, got %g", key,
                          v->num);
    }
    return CNN_OK;
}

/* The members of the object, after its '{', through its '}'. */
static enum cnn_status json_members(struct json *j, struct cnn_run *run)
{
    enum cnn_status st;
    do {
        char *key;
        struct jvalue v;
        st = json_string(j, &key);
        if (st != CNN_OK)
            return st;
        if (!json_eat(j, ':'))
            st = json_error(j, "expected ':' after \"%.60s\"", key);
        if (st == CNN_OK)
            st = json_value(j, 1, &v, true);
        if (st == CNN_OK) {
            const char *after = j->p;
            st = apply_field(j, run, key, &v);
            j->p = after;
            free(v.str);
        }
        free(key);
        if (st != CNN_OK)
            return st;
    } while (json_eat(j, ','));
    if (!json_eat(j, '}'))
        return json_error(j, "expected ',' or '}'");
    return CNN_OK;
}

static enum cnn_status json_object(struct json *j, struct cnn_run *run)
{
    if (!json_eat(j, '{'))
        return json_error(j, "expected a JSON object ('{')");
    enum cnn_status st = json_eat(j, '}') ? CNN_OK : json_members(j, run);
    if (st != CNN_OK)
        return st;
    json_ws(j);
    if (j->p < j->end)
        return json_error(j, "unexpected text after the object");
    return CNN_OK;
}

/* Reads the whole of path (at most MAX_JSON_BYTES) into *text. */
static enum cnn_status slurp(const char *path, FILE *f, char **text,
                             size_t *len, struct cnn_error *err)
{
    *len = 0;
    *text = malloc(MAX_JSON_BYTES + 1);
    if (!*text)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    *len = fread(*text, 1, MAX_JSON_BYTES + 1, f);
    (*text)[*len < MAX_JSON_BYTES ? *len : MAX_JSON_BYTES] = '\0';
    if (ferror(f))
        return cnn_error_at(err, CNN_ERR_DATA, path, "read error");
    if (*len > MAX_JSON_BYTES)
        return cnn_error_at(err, CNN_ERR_DATA, path, "larger than %d KiB: "
                            "not a run summary", MAX_JSON_BYTES / 1024);
    if (memchr(*text, '\0', *len))
        return cnn_error_at(err, CNN_ERR_DATA, path, "contains NUL bytes: "
                            "not a JSON text");
    return CNN_OK;
}

/* run.json, when the run directory has one. */
static enum cnn_status read_summary(struct cnn_run *run,
                                    struct cnn_error *err)
{
    char path[PATH_CAP];
    enum cnn_status st = file_path(run, "run.json", path, err);
    if (st != CNN_OK)
        return st;
    FILE *f = fopen(path, "rb");
    if (!f && errno == ENOENT)
        return CNN_OK;
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            strerror(errno));

    char *text;
    size_t len;
    st = slurp(path, f, &text, &len, err);
    fclose(f);
    if (st == CNN_OK) {
        struct json j = {.text = text, .p = text, .end = text + len,
                         .path = path, .err = err};
        st = json_object(&j, run);
    }
    free(text);
    run->has_summary = st == CNN_OK;
    return st;
}

/* --- config.yaml ---------------------------------------------------------- */

static enum cnn_status keep_string(char **dst, const char *src,
                                   struct cnn_error *err)
{
    if (!src)
        return CNN_OK;
    *dst = strdup(src);
    return *dst ? CNN_OK : cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
}

/* The name and optimizer of the config as written; a key that is not
 * there stays unknown (config.yaml holds what the user wrote, so a
 * default does not appear in it). */
static enum cnn_status read_config(struct cnn_run *run, struct cnn_error *err)
{
    char path[PATH_CAP];
    enum cnn_status st = file_path(run, "config.yaml", path, err);
    if (st != CNN_OK)
        return st;

    struct cnn_config cfg;
    const char *name = NULL, *optimizer = NULL;
    st = cnn_config_load(&cfg, path, err);
    struct cnn_node *opt = cnn_node_get(cfg.root, "optimizer");
    if (st == CNN_OK)
        st = cnn_read_string(cfg.root, "name", NULL, &name, err);
    if (st == CNN_OK)
        st = cnn_read_string(opt, "name", NULL, &optimizer, err);
    if (st == CNN_OK)
        st = cnn_read_float(opt, "lr", NAN, -HUGE_VAL, HUGE_VAL, &run->lr,
                            err);
    if (st == CNN_OK)
        st = keep_string(&run->name, name, err);
    if (st == CNN_OK)
        st = keep_string(&run->optimizer, optimizer, err);
    cnn_config_free(&cfg);
    return st;
}

/* --- loading ------------------------------------------------------------ */

enum cnn_status cnn_run_load(struct cnn_run *run, const char *dir,
                             struct cnn_error *err)
{
    run_init(run);
    enum cnn_status st = set_names(run, dir, err);
    if (st == CNN_OK)
        st = check_dir(run->dir, err);
    if (st == CNN_OK)
        st = read_metrics(run, err);
    if (st == CNN_OK)
        st = read_summary(run, err);
    if (st == CNN_OK && !run->has_summary)
        st = read_config(run, err);
    if (st != CNN_OK)
        cnn_run_free(run);
    return st;
}

void cnn_runs_label(struct cnn_run *runs, int n_runs)
{
    for (int i = 0; i < n_runs; i++) {
        runs[i].label = runs[i].base;
        for (int k = 0; k < n_runs; k++)
            if (k != i && strcmp(runs[i].base, runs[k].base) == 0)
                runs[i].label = runs[i].dir;
    }
}

enum cnn_status cnn_runs_load(struct cnn_run **runs, char *const *dirs,
                              int n_dirs, struct cnn_error *err)
{
    *runs = calloc(n_dirs > 0 ? (size_t)n_dirs : 1, sizeof **runs);
    if (!*runs)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");

    for (int i = 0; i < n_dirs; i++) {
        enum cnn_status st = cnn_run_load(&(*runs)[i], dirs[i], err);
        if (st != CNN_OK) {
            cnn_runs_free(*runs, i);
            *runs = NULL;
            return st;
        }
    }
    cnn_runs_label(*runs, n_dirs);
    return CNN_OK;
}

void cnn_runs_free(struct cnn_run *runs, int n_runs)
{
    if (!runs)
        return;
    for (int i = 0; i < n_runs; i++)
        cnn_run_free(&runs[i]);
    free(runs);
}
