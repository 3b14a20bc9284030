/*
 * metrics.csv: fixed columns, one header, empty cells where a value does
 * not apply, flushed per row so a killed run keeps what it measured.
 */
#include "cnn/report.h"

#include <math.h>

static const char HEADER[] = "epoch,step,lr,train_loss,train_acc,test_loss,"
                             "test_acc,images_per_s,elapsed_s,grad_norm,"
                             "skipped_steps\n";

struct cnn_metrics_row cnn_metrics_row_empty(long long epoch, long long step)
{
    return (struct cnn_metrics_row){
        .epoch = epoch, .step = step, .lr = NAN, .train_loss = NAN,
        .train_acc = NAN, .test_loss = NAN, .test_acc = NAN,
        .images_per_s = NAN, .elapsed_s = NAN, .grad_norm = NAN,
        .skipped_steps = NAN,
    };
}

FILE *cnn_metrics_open(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(HEADER, f);
        fflush(f);
    }
    return f;
}

static void cell(FILE *f, double v, const char *fmt)
{
    fputc(',', f);
    if (!isnan(v))
        fprintf(f, fmt, v);
}

void cnn_metrics_write(FILE *f, const struct cnn_metrics_row *r)
{
    fprintf(f, "%lld,%lld", r->epoch, r->step);
    cell(f, r->lr, "%.6g");
    cell(f, r->train_loss, "%.6f");
    cell(f, r->train_acc, "%.6f");
    cell(f, r->test_loss, "%.6f");
    cell(f, r->test_acc, "%.6f");
    cell(f, r->images_per_s, "%.1f");
    cell(f, r->elapsed_s, "%.3f");
    cell(f, r->grad_norm, "%.6g");
    cell(f, r->skipped_steps, "%.0f");
    fputc('\n', f);
    fflush(f);
}
