/*
 * Learning-rate schedules, any of them after a linear warmup over
 * warmup_steps:
 *   constant     lr
 *   step         lr * gamma^k, k = milestones passed (or epoch / step_epochs)
 *   exponential  lr * gamma^epoch
 *   cosine       min_lr + (lr - min_lr) (1 + cos(pi t)) / 2 over the run
 *   onecycle     from lr/div_factor up to lr (cosine, pct_start of the
 *                steps), then down to lr/(div_factor*final_div_factor)
 *   plateau      lr times factor each time the epoch metric has not
 *                improved by threshold (relative) for patience epochs
 */
#include "cnn/optim.h"

#include <math.h>
#include <string.h>

void cnn_schedule_init(struct cnn_schedule *s,
                       const struct cnn_schedule_config *cfg, double base_lr,
                       long long total_steps, long long steps_per_epoch)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->base_lr = base_lr;
    s->total_steps = total_steps;
    s->steps_per_epoch = steps_per_epoch;
    s->plateau_scale = 1.0;
    s->plateau_best = INFINITY;
}

static bool is(const struct cnn_schedule *s, const char *name)
{
    return strcmp(s->cfg.name, name) == 0;
}

static double cosine(double from, double to, double t)
{
    t = t < 0 ? 0 : (t > 1 ? 1 : t);
    return to + (from - to) * 0.5 * (1.0 + cos(M_PI * t));
}

static double onecycle(const struct cnn_schedule *s, long long step)
{
    const struct cnn_schedule_config *c = &s->cfg;
    double start = s->base_lr / c->div_factor;
    double end = start / c->final_div_factor;
    double rise = c->pct_start * (double)s->total_steps;
    if ((double)step < rise)
        return cosine(start, s->base_lr, (double)step / rise);
    double fall = (double)s->total_steps - rise;
    return cosine(s->base_lr, end, fall > 0 ? ((double)step - rise) / fall
                                            : 1.0);
}

double cnn_schedule_lr(const struct cnn_schedule *s, long long step,
                       long long epoch)
{
    const struct cnn_schedule_config *c = &s->cfg;
    double lr = s->base_lr;

    if (is(s, "onecycle"))
        return onecycle(s, step);   /* it has its own warm-up */
    if (step < c->warmup_steps)
        return lr * (double)(step + 1) / (double)c->warmup_steps;

    if (is(s, "step")) {
        long long k = epoch / c->step_epochs;
        if (c->n_milestones > 0) {
            k = 0;
            while (k < c->n_milestones && c->milestones[k] <= epoch)
                k++;
        }
        return lr * pow(c->gamma, (double)k);
    }
    if (is(s, "exponential"))
        return lr * pow(c->gamma, (double)epoch);
    if (is(s, "cosine")) {
        long long span = s->total_steps - c->warmup_steps;
        double t = span > 0 ? (double)(step - c->warmup_steps) / span : 1.0;
        return cosine(lr, c->min_lr, t);
    }
    if (is(s, "plateau")) {
        double v = lr * s->plateau_scale;
        return v > c->min_lr ? v : c->min_lr;
    }
    return lr;
}

bool cnn_schedule_epoch_end(struct cnn_schedule *s, double metric)
{
    if (!is(s, "plateau") || isnan(metric))
        return false;
    if (metric < s->plateau_best * (1.0 - s->cfg.threshold)) {
        s->plateau_best = metric;
        s->plateau_bad = 0;
        return false;
    }
    if (++s->plateau_bad <= s->cfg.patience)
        return false;
    s->plateau_scale *= s->cfg.factor;
    s->plateau_bad = 0;
    return true;
}
