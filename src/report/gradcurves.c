/*
 * grad_stats.csv read back for `plot --grads`: each layer's gradient
 * norm against the step. Columns are found by their header names, so
 * columns added later are passed over; a layer's series follows the
 * file's order. Nothing here prints.
 */
#include "cnn/runs.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum {
    PATH_CAP = 4200,
    MAX_CELLS = 64,
};

enum { COL_STEP, COL_LAYER, COL_GRAD_NORM, N_COLS };

static const char *const col_names[N_COLS] = {"step", "layer", "grad_norm"};

struct reader {
    const char *path;
    long line;                  /* from 1 */
    int n_cells;                /* per row, as in the header */
    int at[N_COLS];             /* cell index of each column */
};

static enum cnn_status line_error(const struct reader *r,
                                  struct cnn_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum cnn_status line_error(const struct reader *r,
                                  struct cnn_error *err, const char *fmt, ...)
{
    char where[PATH_CAP + 32], msg[512];
    snprintf(where, sizeof where, "%s:%ld", r->path, r->line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cnn_error_at(err, CNN_ERR_DATA, where, "%s", msg);
}

/* Cuts line at its commas into cells; returns how many (more than cap
 * are counted, not kept). */
static int split(char *line, char **cells, int cap)
{
    int n = 0;
    for (char *p = line; p; n++) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (n < cap)
            cells[n] = p;
        p = comma ? comma + 1 : NULL;
    }
    return n;
}

static void chomp(char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
}

static enum cnn_status read_header(struct reader *r, char *line,
                                   struct cnn_error *err)
{
    char *cells[MAX_CELLS];
    r->n_cells = split(line, cells, MAX_CELLS);
    for (int k = 0; k < N_COLS; k++) {
        r->at[k] = -1;
        for (int i = 0; i < r->n_cells && i < MAX_CELLS; i++)
            if (strcmp(cells[i], col_names[k]) == 0)
                r->at[k] = i;
        if (r->at[k] < 0)
            return line_error(r, err, "the header has no '%s' column: not "
                              "a cnn-train grad_stats.csv", col_names[k]);
    }
    return CNN_OK;
}

static bool parse_number(const char *text, double *out)
{
    char *end;
    *out = strtod(text, &end);
    return end != text && *end == '\0';
}

/* The index of layer name in g, added when new; -1 when out of memory. */
static int layer_index(struct cnn_grad_curves *g, const char *name)
{
    for (int i = g->n_layers - 1; i >= 0; i--)
        if (strcmp(g->names[i], name) == 0)
            return i;
    if (g->n_layers == g->cap) {
        int cap = g->cap ? 2 * g->cap : 16;
        char **names = realloc(g->names, (size_t)cap * sizeof *names);
        if (!names)
            return -1;
        g->names = names;
        struct cnn_series *s = realloc(g->norms, (size_t)cap * sizeof *s);
        if (!s)
            return -1;
        g->norms = s;
        g->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return -1;
    g->names[g->n_layers] = copy;
    memset(&g->norms[g->n_layers], 0, sizeof g->norms[0]);
    return g->n_layers++;
}

static enum cnn_status read_row(struct cnn_grad_curves *g, struct reader *r,
                                char *line, struct cnn_error *err)
{
    char *cells[MAX_CELLS];
    int n = split(line, cells, MAX_CELLS);
    if (n != r->n_cells)
        return line_error(r, err, "%d cells, but the header names %d%s", n,
                          r->n_cells, n < r->n_cells ? " (a cut-off row?)"
                                                     : "");
    double step, norm;
    const char *layer = cells[r->at[COL_LAYER]];
    if (!parse_number(cells[r->at[COL_STEP]], &step))
        return line_error(r, err, "step: not a number: '%.40s'",
                          cells[r->at[COL_STEP]]);
    if (!parse_number(cells[r->at[COL_GRAD_NORM]], &norm))
        return line_error(r, err, "grad_norm: not a number: '%.40s'",
                          cells[r->at[COL_GRAD_NORM]]);
    if (!*layer)
        return line_error(r, err, "layer: empty");

    int i = layer_index(g, layer);
    if (i < 0 || !cnn_series_push(&g->norms[i], step, norm))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    return CNN_OK;
}

static enum cnn_status read_lines(struct cnn_grad_curves *g, struct reader *r,
                                  FILE *f, struct cnn_error *err)
{
    enum cnn_status st = CNN_OK;
    char *line = NULL;
    size_t cap = 0;
    while (st == CNN_OK && getline(&line, &cap, f) >= 0) {
        r->line++;
        chomp(line);
        if (r->line == 1)
            st = read_header(r, line, err);
        else if (*line)
            st = read_row(g, r, line, err);
    }
    free(line);
    if (st == CNN_OK && ferror(f))
        return cnn_error_at(err, CNN_ERR_DATA, r->path, "read error");
    if (st == CNN_OK && r->line == 0)
        return cnn_error_at(err, CNN_ERR_DATA, r->path, "empty: no header "
                            "line");
    return st;
}

enum cnn_status cnn_grad_curves_load(struct cnn_grad_curves *g,
                                     const char *dir, struct cnn_error *err)
{
    memset(g, 0, sizeof *g);
    char path[PATH_CAP];
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--;
    if (len + sizeof "/grad_stats.csv" > sizeof path)
        return cnn_error_at(err, CNN_ERR_DATA, dir, "path too long");
    snprintf(path, sizeof path, "%.*s/grad_stats.csv", (int)len, dir);

    FILE *f = fopen(path, "r");
    if (!f) {
        cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                     strerror(errno));
        cnn_error_hint(err, "a run writes grad_stats.csv when its config "
                       "sets training.log_grad_stats (e.g. --set "
                       "training.log_grad_stats=10)");
        return CNN_ERR_DATA;
    }
    struct reader r = {.path = path};
    enum cnn_status st = read_lines(g, &r, f, err);
    fclose(f);
    if (st != CNN_OK)
        cnn_grad_curves_free(g);
    return st;
}

void cnn_grad_curves_free(struct cnn_grad_curves *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n_layers; i++) {
        free(g->names[i]);
        free(g->norms[i].x);
        free(g->norms[i].y);
    }
    free(g->names);
    free(g->norms);
    memset(g, 0, sizeof *g);
}
