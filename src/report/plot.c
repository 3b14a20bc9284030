/*
 * The SVG chart of runs: training loss against step on a log scale and
 * test accuracy against epoch, side by side, with a legend of the runs
 * on the right; and the chart of one run's gradient norms, a line per
 * layer colored by depth, from the same pieces. Plain SVG 1.1 text, no
 * scripts and no external fonts, so a browser shows it and an XML parser
 * reads it. Run labels are escaped and anything that is not valid UTF-8
 * becomes U+FFFD.
 *
 * Writes only to the FILE it is given; it never prints.
 *
 * Missing: thinning of long series; a run with a million logged steps
 * writes a million points (about 15 MB).
 */
#include "cnn/runs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    WIDTH = 960,
    HEIGHT = 420,
    LEGEND_W = 170,
    PANEL_W = (WIDTH - LEGEND_W) / 2,
    MARGIN_L = 66,
    MARGIN_R = 18,
    MARGIN_T = 40,
    MARGIN_B = 54,
    TICK_LEN = 5,
    LEGEND_ROW = 18,
    LEGEND_TOP = 62,
    LEGEND_CHARS = 22,      /* longer labels are cut, in full on hover */
    LEGEND_ROWS = (HEIGHT - LEGEND_TOP - 16) / LEGEND_ROW,
    GRADS_LEGEND_W = 250,   /* nested layer names are long */
    GRADS_LEGEND_CHARS = 34,
};

/* Tableau's ten, less grey and olive; past eight runs the colors come
 * round again with dashes. */
static const char *const palette[] = {
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
    "#9467bd", "#8c564b", "#e377c2", "#17becf",
};
static const char *const dashes[] = {"", "6 3", "2 2"};

enum {
    N_COLORS = sizeof palette / sizeof palette[0],
    N_DASHES = sizeof dashes / sizeof dashes[0],
};

/* One chart: its plot area in pixels and its axes in data units. */
struct panel {
    const char *title, *x_title, *y_title;
    const char *empty_note;         /* shown when no run has a point */
    double left, top, right, bottom;
    struct cnn_plot_axis x, y;
    bool have_data;
};

/* --- axes ---------------------------------------------------------------- */

/* 1, 2 or 5 times a power of ten: the smallest >= v (up) or the largest
 * <= v (down). The slack absorbs log10's rounding at exact powers. */
static double nice_125(double v, bool up)
{
    static const double m125[] = {1, 2, 5, 10};
    double p = pow(10.0, floor(log10(v)));
    double m = v / p;
    if (up) {
        for (int i = 0; i < 4; i++)
            if (m <= m125[i] * (1 + 1e-9))
                return m125[i] * p;
        return 10 * p;
    }
    for (int i = 3; i >= 0; i--)
        if (m >= m125[i] * (1 - 1e-9))
            return m125[i] * p;
    return p / 2;
}

static void add_tick(struct cnn_plot_axis *a, double v)
{
    if (a->n_ticks < CNN_PLOT_MAX_TICKS)
        a->ticks[a->n_ticks++] = v;
}

static void sort_ticks(struct cnn_plot_axis *a)
{
    for (int i = 1; i < a->n_ticks; i++)
        for (int k = i; k > 0 && a->ticks[k - 1] > a->ticks[k]; k--) {
            double t = a->ticks[k];
            a->ticks[k] = a->ticks[k - 1];
            a->ticks[k - 1] = t;
        }
}

void cnn_plot_axis_linear(struct cnn_plot_axis *a, double min, double max,
                          bool integer)
{
    memset(a, 0, sizeof *a);
    if (!isfinite(min) || !isfinite(max) || min > max) {
        min = 0;
        max = 1;
    }
    if (max - min <= 1e-12 * fmax(1, fabs(max))) {
        double pad = integer ? 1 : min != 0 ? fabs(min) * 0.1 : 0.5;
        min -= pad;
        max += pad;
    }

    double step = nice_125((max - min) / 5, true);
    if (integer && step < 1)
        step = 1;
    a->lo = floor(min / step + 1e-9) * step;
    a->hi = ceil(max / step - 1e-9) * step;
    long n = lround((a->hi - a->lo) / step);
    for (long i = 0; i <= n; i++)
        add_tick(a, a->lo + (double)i * step);
}

/* Ticks at m * 10^e for each m of mult inside [lo, hi]. */
static void add_multiples(struct cnn_plot_axis *a, const int *mult,
                          int n_mult)
{
    int e0 = (int)floor(log10(a->lo)) - 1, e1 = (int)ceil(log10(a->hi));
    for (int e = e0; e <= e1; e++)
        for (int i = 0; i < n_mult; i++) {
            double v = mult[i] * pow(10.0, e);
            if (v >= a->lo * (1 - 1e-9) && v <= a->hi * (1 + 1e-9))
                add_tick(a, v);
        }
    sort_ticks(a);
}

void cnn_plot_axis_log(struct cnn_plot_axis *a, double min, double max)
{
    static const int m25[] = {2, 5}, m_rest[] = {3, 4, 6, 7, 8, 9};
    memset(a, 0, sizeof *a);
    a->log = true;
    if (!(min > 0) || !isfinite(max) || min > max) {
        min = 0.1;
        max = 10;
    }
    a->lo = nice_125(min, false);
    a->hi = nice_125(max, true);
    if (a->hi <= a->lo * (1 + 1e-9)) {
        a->lo = nice_125(a->lo * (1 - 1e-6), false);
        a->hi = nice_125(a->hi * (1 + 1e-6), true);
    }

    int e0 = (int)ceil(log10(a->lo) - 1e-9);
    int e1 = (int)floor(log10(a->hi) + 1e-9);
    int decades = e1 - e0 + 1;
    int stride = decades > 8 ? (decades + 7) / 8 : 1;
    for (int e = e0; e <= e1; e += stride)
        add_tick(a, pow(10.0, e));
    if (decades < 3)
        add_multiples(a, m25, 2);
    if (a->n_ticks < 3)
        add_multiples(a, m_rest, 6);
}

/* --- text ---------------------------------------------------------------- */

/* Bytes of the character at s if it is valid UTF-8 that XML 1.0 allows,
 * else 0. */
static int xml_char_len(const unsigned char *s)
{
    unsigned c = s[0], cp, min;
    int n;
    if (c < 0x80)
        return c >= 0x20 || c == '\t' || c == '\n' || c == '\r';
    if ((c & 0xE0) == 0xC0) {
        n = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ||
        cp == 0xFFFE || cp == 0xFFFF)
        return 0;
    return n;
}

static int char_count(const unsigned char *s)
{
    int n = 0;
    for (; *s; n++) {
        int len = xml_char_len(s);
        s += len ? len : 1;
    }
    return n;
}

/* text as XML character data, fit for attributes too; cut to max_chars
 * characters with an ellipsis when max_chars > 0. */
static void xml_text(FILE *out, const char *text, int max_chars)
{
    const unsigned char *s = (const unsigned char *)text;
    int total = char_count(s);
    int keep = max_chars > 0 && total > max_chars ? max_chars - 1 : total;

    for (int i = 0; i < keep; i++) {
        int len = xml_char_len(s);
        if (len == 0)
            fputs("\xEF\xBF\xBD", out);
        else if (*s == '&')
            fputs("&amp;", out);
        else if (*s == '<')
            fputs("&lt;", out);
        else if (*s == '>')
            fputs("&gt;", out);
        else if (*s == '"')
            fputs("&quot;", out);
        else if (*s == '\'')
            fputs("&apos;", out);
        else
            fwrite(s, 1, (size_t)len, out);
        s += len ? len : 1;
    }
    if (keep < total)
        fputs("\xE2\x80\xA6", out);
}

static void tick_label(const struct cnn_plot_axis *a, double v, char *buf,
                       size_t cap)
{
    if (a->log) {
        snprintf(buf, cap, "%g", v);
        return;
    }
    double step = a->n_ticks > 1 ? a->ticks[1] - a->ticks[0] : 1;
    int decimals = (int)fmax(0, ceil(-log10(step) - 1e-9));
    if (fabs(v) < step * 1e-6)
        v = 0;
    snprintf(buf, cap, "%.*f", decimals, v);
}

/* --- drawing ------------------------------------------------------------- */

static double px_x(const struct panel *p, double v)
{
    double t = (v - p->x.lo) / (p->x.hi - p->x.lo);
    return p->left + t * (p->right - p->left);
}

static double px_y(const struct panel *p, double v)
{
    double t = p->y.log ? log10(v / p->y.lo) / log10(p->y.hi / p->y.lo)
                        : (v - p->y.lo) / (p->y.hi - p->y.lo);
    return p->bottom - t * (p->bottom - p->top);
}

/* A point the panel can place: finite, and above 0 on a log axis. */
static bool plottable(const struct panel *p, double x, double y)
{
    return isfinite(x) && isfinite(y) && (!p->y.log || y > 0);
}

static void draw_y_ticks(FILE *out, const struct panel *p)
{
    char label[32];
    for (int i = 0; i < p->y.n_ticks; i++) {
        double y = px_y(p, p->y.ticks[i]);
        tick_label(&p->y, p->y.ticks[i], label, sizeof label);
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#e4e4e4\"/>\n", p->left, y, p->right, y);
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#333\"/>\n", p->left - TICK_LEN, y, p->left, y);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s"
                "</text>\n", p->left - TICK_LEN - 3, y + 4, label);
    }
}

/* Unlabeled marks at 1..9 times each power of ten, when they are not
 * too crowded to read. */
static void draw_log_minor_ticks(FILE *out, const struct panel *p)
{
    int e0 = (int)floor(log10(p->y.lo)), e1 = (int)ceil(log10(p->y.hi));
    if (e1 - e0 > 6)
        return;
    for (int e = e0; e <= e1; e++)
        for (int m = 1; m <= 9; m++) {
            double v = m * pow(10.0, e);
            if (v < p->y.lo * (1 - 1e-9) || v > p->y.hi * (1 + 1e-9))
                continue;
            double y = px_y(p, v);
            fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
                    "y2=\"%.1f\" stroke=\"#333\"/>\n", p->left - 3, y,
                    p->left, y);
        }
}

static void draw_x_ticks(FILE *out, const struct panel *p)
{
    char label[32];
    for (int i = 0; i < p->x.n_ticks; i++) {
        double x = px_x(p, p->x.ticks[i]);
        tick_label(&p->x, p->x.ticks[i], label, sizeof label);
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#e4e4e4\"/>\n", x, p->top, x, p->bottom);
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#333\"/>\n", x, p->bottom, x, p->bottom + TICK_LEN);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s"
                "</text>\n", x, p->bottom + TICK_LEN + 13, label);
    }
}

static void draw_titles(FILE *out, const struct panel *p)
{
    double mid_x = (p->left + p->right) / 2, mid_y = (p->top + p->bottom) / 2;
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
            "font-size=\"14\" font-weight=\"bold\">%s</text>\n", mid_x,
            p->top - 14, p->title);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
            "font-size=\"12\">%s</text>\n", mid_x, p->bottom + 40,
            p->x_title);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
            "font-size=\"12\" transform=\"rotate(-90 %.1f %.1f)\">%s</text>\n",
            p->left - 50, mid_y, p->left - 50, mid_y, p->y_title);
    if (!p->have_data)
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                "fill=\"#777\">%s</text>\n", mid_x, mid_y, p->empty_note);
}

/* How one line is drawn: a color, and a dash pattern or none. */
struct style {
    char color[8];
    const char *dash;
};

/* Run i: the palette, with dashes once it has come round. */
static struct style run_style(int i)
{
    struct style st = {.dash = dashes[(i / N_COLORS) % N_DASHES]};
    snprintf(st.color, sizeof st.color, "%s", palette[i % N_COLORS]);
    return st;
}

/* Layer i of n, by depth: a ramp from dark blue through teal and green
 * to yellow (viridis' anchors), so the first layers and the last are
 * told apart at a glance however many there are. */
static struct style depth_style(int i, int n)
{
    static const unsigned char ramp[][3] = {
        {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98},
        {253, 231, 37},
    };
    enum { N_RAMP = sizeof ramp / sizeof ramp[0] };
    double t = n > 1 ? (double)i / (n - 1) * (N_RAMP - 1) : 0;
    int k = t >= N_RAMP - 1 ? N_RAMP - 2 : (int)t;
    double f = t - k;
    struct style st = {.dash = ""};
    unsigned char c[3];
    for (int j = 0; j < 3; j++)
        c[j] = (unsigned char)lround(ramp[k][j] + f * (ramp[k + 1][j] -
                                                       ramp[k][j]));
    snprintf(st.color, sizeof st.color, "#%02x%02x%02x", c[0], c[1], c[2]);
    return st;
}

static void stroke_style(FILE *out, const struct style *st)
{
    fprintf(out, " stroke=\"%s\"", st->color);
    if (*st->dash)
        fprintf(out, " stroke-dasharray=\"%s\"", st->dash);
}

static void draw_marker(FILE *out, double x, double y, const struct style *st)
{
    fprintf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
            x, y, st->color);
}

/* One line of a chart: a labeled series and how it is drawn. */
struct line {
    const char *label;
    const struct cnn_series *s;
    struct style st;
};

/* A series as a line, with a marker on each point when markers (and on
 * a lone point always, which a line cannot show). */
static void draw_series(FILE *out, const struct panel *p,
                        const struct line *ln, bool markers)
{
    const struct cnn_series *s = ln->s;
    size_t n = 0;
    for (size_t k = 0; k < s->n; k++)
        n += plottable(p, s->x[k], s->y[k]);
    if (n == 0)
        return;

    if (n > 1) {
        fputs("<polyline fill=\"none\" stroke-width=\"1.5\" "
              "stroke-linejoin=\"round\"", out);
        stroke_style(out, &ln->st);
        const char *sep = " points=\"";
        for (size_t k = 0; k < s->n; k++)
            if (plottable(p, s->x[k], s->y[k])) {
                fprintf(out, "%s%.1f,%.1f", sep, px_x(p, s->x[k]),
                        px_y(p, s->y[k]));
                sep = " ";
            }
        fputs("\"/>\n", out);
    }
    if (markers || n == 1)
        for (size_t k = 0; k < s->n; k++)
            if (plottable(p, s->x[k], s->y[k]))
                draw_marker(out, px_x(p, s->x[k]), px_y(p, s->y[k]),
                            &ln->st);
}

static void draw_panel(FILE *out, const struct panel *p,
                       const struct line *lines, int n_lines, bool markers)
{
    fprintf(out, "<g class=\"panel\">\n");
    draw_x_ticks(out, p);
    draw_y_ticks(out, p);
    if (p->y.log)
        draw_log_minor_ticks(out, p);
    fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
            "fill=\"none\" stroke=\"#333\"/>\n", p->left, p->top,
            p->right - p->left, p->bottom - p->top);
    draw_titles(out, p);
    for (int i = 0; i < n_lines; i++)
        draw_series(out, p, &lines[i], markers);
    fprintf(out, "</g>\n");
}

/* Where a legend goes and how much of it fits. */
struct legend {
    const char *title;
    double x;
    int rows;                   /* rows that fit */
    int chars;                  /* longer labels are cut, whole on hover */
};

static void draw_legend_entry(FILE *out, const struct legend *lg,
                              const struct line *ln, double y)
{
    double x = lg->x;
    fputs("<g>\n<title>", out);
    xml_text(out, ln->label, 0);
    fputs("</title>\n", out);
    fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
            "stroke-width=\"2\"", x, y, x + 24, y);
    stroke_style(out, &ln->st);
    fputs("/>\n", out);
    draw_marker(out, x + 12, y, &ln->st);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">", x + 30, y + 4);
    xml_text(out, ln->label, lg->chars);
    fputs("</text>\n</g>\n", out);
}

/* One row per line, down the right edge; past what fits, a count. */
static void draw_legend(FILE *out, const struct legend *lg,
                        const struct line *lines, int n_lines)
{
    fprintf(out, "<g class=\"legend\">\n<text x=\"%.1f\" y=\"%d\" "
            "font-size=\"12\" font-weight=\"bold\">%s</text>\n", lg->x,
            MARGIN_T, lg->title);
    int rows = n_lines <= lg->rows ? n_lines : lg->rows - 1;
    for (int i = 0; i < rows; i++)
        draw_legend_entry(out, lg, &lines[i],
                          LEGEND_TOP + (double)i * LEGEND_ROW);
    if (rows < n_lines)
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#777\">and %d "
                "more</text>\n", lg->x, LEGEND_TOP + rows * LEGEND_ROW + 4.0,
                n_lines - rows);
    fputs("</g>\n", out);
}

/* --- the document ------------------------------------------------------- */

struct range {
    double min, max;            /* min > max: nothing yet */
};

static void range_add(struct range *r, double v)
{
    r->min = fmin(r->min, v);
    r->max = fmax(r->max, v);
}

/* Sets the panel's axes from the points of lines it can show: on a log
 * y axis, only values above 0. */
static void fit_axes(struct panel *p, const struct line *lines, int n_lines,
                     bool log_y)
{
    struct range x = {INFINITY, -INFINITY}, y = {INFINITY, -INFINITY};
    for (int i = 0; i < n_lines; i++) {
        const struct cnn_series *s = lines[i].s;
        for (size_t k = 0; k < s->n; k++) {
            if (!isfinite(s->x[k]) || !isfinite(s->y[k]) ||
                (log_y && s->y[k] <= 0))
                continue;
            range_add(&x, s->x[k]);
            range_add(&y, s->y[k]);
        }
    }
    p->have_data = x.min <= x.max;
    cnn_plot_axis_linear(&p->x, x.min, x.max, true);
    if (log_y)
        cnn_plot_axis_log(&p->y, y.min, y.max);
    else
        cnn_plot_axis_linear(&p->y, y.min, y.max, false);
}

static void panel_place(struct panel *p, int index)
{
    p->left = index * PANEL_W + MARGIN_L;
    p->right = (index + 1) * PANEL_W - MARGIN_R;
    p->top = MARGIN_T;
    p->bottom = HEIGHT - MARGIN_B;
}

static void begin_document(FILE *out, int height, const char *title)
{
    fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" "
            "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"sans-serif\" font-size=\"11\">\n"
            "<title>%s</title>\n"
            "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
            WIDTH, height, WIDTH, height, title, WIDTH, height);
}

static enum cnn_status end_document(FILE *out, struct cnn_error *err)
{
    fputs("</svg>\n", out);
    if (fflush(out) != 0 || ferror(out))
        return cnn_error_set(err, CNN_ERR_IO, "writing the SVG failed");
    return CNN_OK;
}

enum cnn_status cnn_plot_svg(FILE *out, const struct cnn_run *runs,
                             int n_runs, struct cnn_error *err)
{
    struct panel loss = {
        .title = "Training loss", .x_title = "step",
        .y_title = "train loss (log scale)",
        .empty_note = "no training rows",
    };
    struct panel acc = {
        .title = "Test accuracy", .x_title = "epoch",
        .y_title = "test accuracy", .empty_note = "no test evaluations",
    };
    struct line *lines = calloc(2 * (size_t)(n_runs > 0 ? n_runs : 1),
                                sizeof *lines);
    if (!lines)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    struct line *loss_lines = lines, *acc_lines = lines + n_runs;
    /* Regression runs have no accuracy: their panel shows test R². */
    bool r2 = n_runs > 0;
    for (int i = 0; i < n_runs; i++)
        r2 &= runs[i].acc.n == 0 && runs[i].r2.n > 0;
    if (r2) {
        acc.title = "Test R\u00b2";
        acc.y_title = "test R\u00b2";
    }
    for (int i = 0; i < n_runs; i++) {
        loss_lines[i] = (struct line){runs[i].label, &runs[i].loss,
                                      run_style(i)};
        acc_lines[i] = (struct line){runs[i].label,
                                     r2 ? &runs[i].r2 : &runs[i].acc,
                                     run_style(i)};
    }
    panel_place(&loss, 0);
    panel_place(&acc, 1);
    fit_axes(&loss, loss_lines, n_runs, true);
    fit_axes(&acc, acc_lines, n_runs, false);

    const struct legend lg = {.title = "runs", .x = 2 * PANEL_W + 8,
                              .rows = LEGEND_ROWS, .chars = LEGEND_CHARS};
    begin_document(out, HEIGHT, "cnn-train: training loss and test "
                   "accuracy");
    draw_panel(out, &loss, loss_lines, n_runs, false);
    draw_panel(out, &acc, acc_lines, n_runs, true);
    draw_legend(out, &lg, loss_lines, n_runs);
    free(lines);
    return end_document(out, err);
}

enum cnn_status cnn_plot_grads_svg(FILE *out, const struct cnn_grad_curves *g,
                                   struct cnn_error *err)
{
    int n = g->n_layers;
    /* Every layer gets a legend row: the chart grows to hold them. */
    int height = LEGEND_TOP + n * LEGEND_ROW + 16;
    height = height > HEIGHT ? height : HEIGHT;
    struct panel p = {
        .title = "Gradient norm per layer", .x_title = "step",
        .y_title = "gradient L2 norm (log scale)",
        .empty_note = "no rows in grad_stats.csv",
        .left = MARGIN_L, .right = WIDTH - GRADS_LEGEND_W - MARGIN_R,
        .top = MARGIN_T, .bottom = height - MARGIN_B,
    };
    struct line *lines = calloc(n > 0 ? (size_t)n : 1, sizeof *lines);
    if (!lines)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        lines[i] = (struct line){g->names[i], &g->norms[i],
                                 depth_style(i, n)};
    fit_axes(&p, lines, n, true);

    const struct legend lg = {.title = "layers, input first",
                              .x = WIDTH - GRADS_LEGEND_W + 8, .rows = n + 1,
                              .chars = GRADS_LEGEND_CHARS};
    begin_document(out, height, "cnn-train: gradient norm per layer");
    draw_panel(out, &p, lines, n, false);
    draw_legend(out, &lg, lines, n);
    free(lines);
    return end_document(out, err);
}
