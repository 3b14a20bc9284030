/*
 * A training run: everything a config needs, checked before anything is
 * written, then the loop of forward, loss, backward, optimizer step,
 * with evaluation on the test split at every epoch end.
 *
 * cnn_session_open reads data and builds the net and optimizer but
 * writes nothing, so a bad config or dataset costs the run directory
 * nothing. cnn_train_run then prepares the run directory and trains.
 */
#ifndef CNN_TRAIN_H
#define CNN_TRAIN_H

#include <signal.h>

#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/net.h"
#include "cnn/optim.h"
#include "cnn/report.h"
#include "cnn/safetensors.h"

struct cnn_session {
    struct cnn_config *cfg;         /* not owned */
    struct cnn_dataset train;
    struct cnn_dataset test;        /* n == 0 when there is no test split */
    struct cnn_dataset val;         /* n == 0 without data.val_split */
    struct cnn_norm norm;
    struct cnn_net net;
    struct cnn_optim optim;
    int n_classes;                  /* the model's output width */
    bool regression;                /* float targets, not class labels */
    double data_seconds;            /* opening: reading the data */
    double build_seconds;           /* building the model and optimizer */
};

/* Loads the data named by cfg, builds and initializes the model and the
 * optimizer, and checks that data and model fit each other. */
enum cnn_status cnn_session_open(struct cnn_session *s, struct cnn_config *cfg,
                                 struct cnn_error *err);

/* For evaluating trained weights: loads only the test split (or, for a
 * test split held out of the training data, the training data, to hold
 * out the same rows), takes the normalization the weights were trained
 * with (the session takes it over), builds the net (whose parameters the
 * caller then loads) and no optimizer. classes, when not NULL, holds only
 * the training class names (from the weights), by which a test file's
 * named labels or class folders are numbered. */
enum cnn_status cnn_session_open_eval(struct cnn_session *s,
                                      struct cnn_config *cfg,
                                      const struct cnn_norm *norm,
                                      const struct cnn_dataset *classes,
                                      struct cnn_error *err);

void cnn_session_close(struct cnn_session *s);

/* What trained weights carry besides tensors, read back: the input
 * transform (normalization, standardization, target scaling; from cfg
 * for weights of older versions) and the class names of the training
 * data (into a dataset holding only those). Errors name f's file. */
enum cnn_status cnn_weights_transform(const struct cnn_st_file *f,
                                      const struct cnn_config *cfg,
                                      struct cnn_norm *norm,
                                      struct cnn_dataset *classes,
                                      struct cnn_error *err);

/* Input shape of the model without loading the data: model.input when
 * given, else the header of the training images. */
enum cnn_status cnn_config_input_shape(const struct cnn_config *cfg,
                                       struct cnn_shape *shape,
                                       struct cnn_error *err);

struct cnn_train_opts {
    const char *run_dir;
    bool force;                     /* start over, clearing run_dir */
    bool resume;                    /* go on from the newest checkpoint */
    const char *resume_path;        /* ... or from this one */
    volatile sig_atomic_t *stop;    /* set: checkpoint and stop (75) */
    volatile sig_atomic_t *save_now;/* set: checkpoint and go on */
};

/* Result figures of a finished run. */
struct cnn_train_result {
    long long steps;
    long long epochs;
    double test_loss, test_acc;     /* last evaluation; NAN without one */
    double best_test_acc;           /* NAN without a test split */
    long long best_epoch;           /* 1-based epoch of best_test_acc */
    double final_train_loss;        /* last logging interval's mean */
    double seconds;
    double images_per_s;            /* training examples / seconds */
};

/* Trains s into opts->run_dir. Writes config.yaml, metrics.csv, train.log
 * and, at the end, model.safetensors. */
enum cnn_status cnn_train_run(struct cnn_session *s,
                              const struct cnn_train_opts *opts,
                              struct cnn_log *log,
                              struct cnn_train_result *result,
                              struct cnn_error *err);

/* The figures of one evaluation. */
struct cnn_eval {
    double loss;                    /* mean loss, as trained on */
    double acc;                     /* classification; NAN for regression */
    struct cnn_regression_metrics reg;  /* regression, in target units;
                                           NAN for classification */
};

/* Evaluates the net on ds, in evaluation mode; with confusion
 * ([n_classes * n_classes], true label major) not NULL, the counts of
 * each (label, prediction) pair too. */
void cnn_evaluate(struct cnn_session *s, const struct cnn_dataset *ds,
                  struct cnn_eval *ev, long long *confusion);

#endif
