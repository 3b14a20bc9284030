/*
 * metrics.csv: fixed columns, one header, empty cells where a value does
 * not apply, flushed per row so a killed run keeps what it measured.
 */
#include "cnn/report.h"

#include <math.h>

static const char HEADER[] = "epoch,step,lr,train_loss,train_acc,test_loss,"
                             "test_acc,images_per_s,elapsed_s,grad_norm,"
                             "skipped_steps,val_loss,val_acc,"
                             "train_mse,train_rmse,train_mae,train_r2,"
                             "val_mse,val_rmse,val_mae,val_r2,"
                             "test_mse,test_rmse,test_mae,test_r2\n";

struct cnn_metrics_row cnn_metrics_row_empty(long long epoch, long long step)
{
    return (struct cnn_metrics_row){
        .epoch = epoch, .step = step, .lr = NAN, .train_loss = NAN,
        .train_acc = NAN, .test_loss = NAN, .test_acc = NAN,
        .images_per_s = NAN, .elapsed_s = NAN, .grad_norm = NAN,
        .skipped_steps = NAN, .val_loss = NAN, .val_acc = NAN,
        .train_reg = {NAN, NAN, NAN, NAN}, .val_reg = {NAN, NAN, NAN, NAN},
        .test_reg = {NAN, NAN, NAN, NAN},
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
    if (!f)
        return;
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
    cell(f, r->val_loss, "%.6f");
    cell(f, r->val_acc, "%.6f");
    const struct cnn_regression_metrics *m[] = {&r->train_reg, &r->val_reg,
                                                &r->test_reg};
    for (int i = 0; i < 3; i++) {
        cell(f, m[i]->mse, "%.6g");
        cell(f, m[i]->rmse, "%.6g");
        cell(f, m[i]->mae, "%.6g");
        cell(f, m[i]->r2, "%.6f");
    }
    fputc('\n', f);
    fflush(f);
}
