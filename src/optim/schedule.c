/*
 * Learning-rate schedules: constant, step decay every step_epochs epochs,
 * cosine to min_lr over the whole run; any of them after a linear warmup
 * of warmup_steps steps.
 */
#include "cnn/optim.h"

#include <math.h>
#include <string.h>

double cnn_schedule_lr(const struct cnn_schedule_config *s, double base_lr,
                       long long step, long long total, long long epoch)
{
    if (step < s->warmup_steps)
        return base_lr * (double)(step + 1) / (double)s->warmup_steps;

    if (strcmp(s->name, "step") == 0)
        return base_lr * pow(s->gamma, (double)(epoch / s->step_epochs));

    if (strcmp(s->name, "cosine") == 0) {
        long long span = total - s->warmup_steps;
        double t = span > 0 ? (double)(step - s->warmup_steps) / span : 1.0;
        if (t > 1.0)
            t = 1.0;
        return s->min_lr + (base_lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * t));
    }
    return base_lr;
}
