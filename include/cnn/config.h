/*
 * The config: YAML read with libyaml into a tree of nodes that remember
 * where they came from, changed by --set overrides, then turned into the
 * plain typed structs below. The model's layer list stays a tree: each
 * layer reads its own arguments when the net is built, with the same
 * located errors.
 *
 * Ownership: struct cnn_config owns every node, string and origin; free
 * it with cnn_config_free. Nothing here prints.
 */
#ifndef CNN_CONFIG_H
#define CNN_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cnn/error.h"

enum cnn_node_kind {
    CNN_NODE_SCALAR,
    CNN_NODE_MAP,
    CNN_NODE_SEQ,
};

#define CNN_NODE_MAX_ASKED 32

struct cnn_node {
    enum cnn_node_kind kind;
    char *value;            /* scalar text; NULL for maps and sequences */
    bool quoted;            /* a quoted scalar is always a string */
    char *key;              /* key when this node is a map value */
    struct cnn_node **items;
    int n_items;
    const char *origin;     /* file path, or "--set k=v"; owned by config */
    int line, col;          /* 1-based; 0 when not from a file */
    int key_line, key_col;  /* where the key of this entry stands */
    char *path;             /* "training.epochs", "model.layers[2]" */
    bool used;              /* read by someone: not an unknown key */
    const char *asked[CNN_NODE_MAX_ASKED]; /* keys looked up, for hints */
    int n_asked;
};

enum cnn_loss_kind {
    CNN_LOSS_CROSS_ENTROPY,
    CNN_LOSS_MSE,
};

#define CNN_MAX_CHANNELS 16
#define CNN_MAX_FILES 16
#define CNN_MAX_COLUMNS 64

enum cnn_data_format {
    CNN_FORMAT_IDX,
    CNN_FORMAT_CSV,
    CNN_FORMAT_CIFAR10,
    CNN_FORMAT_FOLDER,
};

enum cnn_task {
    CNN_TASK_CLASSIFY,      /* integer or named labels */
    CNN_TASK_REGRESS,       /* one or more float targets */
};

struct cnn_split_config {
    char *images;           /* idx: resolved paths */
    char *labels;
    char *files[CNN_MAX_FILES];  /* csv: one file; cifar10: its batches;
                                    folder: the root of class folders */
    int n_files;
    char *targets;          /* csv: a second file holding the targets */
};

/* A CSV column selector: a header name, or indices from..to-1 (negative
 * ones count from the end, to == 0 meaning "through the last"). */
struct cnn_column {
    const char *name;
    long long from, to;
};

struct cnn_csv_config {
    char delimiter;                 /* 0: detect; ' ': runs of whitespace */
    int header;                     /* -1: detect, 0: none, 1: first row */
    long long skip_rows;            /* lines dropped before anything */
    struct cnn_column target[CNN_MAX_COLUMNS];
    int n_target;
    struct cnn_column features[CNN_MAX_COLUMNS];
    int n_features;                 /* 0: every column but the targets */
    int shape[3];                   /* view of the features; 0: [n, 1, 1] */
};

struct cnn_data_config {
    enum cnn_data_format format;
    enum cnn_task task;
    struct cnn_split_config train;
    struct cnn_split_config test;   /* no files when there is no test set */
    struct cnn_csv_config csv;
    double val_split;               /* fraction of train held out */
    double test_split;              /* ... and for a test set, without one */
    bool standardize;               /* per feature, from the train split */
    bool normalize_auto;            /* mean/std computed on the train split */
    int n_mean, n_std;
    float mean[CNN_MAX_CHANNELS];
    float std[CNN_MAX_CHANNELS];
    long long limit_train;          /* use only the first N; 0 = all */
    long long limit_test;
    const char *classes[256];       /* data.classes: names, in label order */
    int n_class_names;
    struct cnn_augment_config {     /* training batches only */
        long long crop_pad;         /* random crop after zero padding */
        bool flip;                  /* random horizontal flip */
        long long erase_size;       /* random erasing (cutout) square */
        double erase_p;             /* ... applied with this probability */
    } augment;
};

/* Whether a split is configured (a file of any format). */
bool cnn_split_given(const struct cnn_split_config *s);

struct cnn_optim_config {
    const char *name;               /* checked by the optimizer registry */
    double lr;                      /* base learning rate */
    struct cnn_node *node;          /* the section; optim reads the rest */
};

#define CNN_MAX_MILESTONES 32

struct cnn_schedule_config {
    const char *name;               /* constant, step, exponential, cosine,
                                       onecycle, plateau */
    long long warmup_steps;
    double gamma;                   /* step, exponential: factor */
    long long step_epochs;          /* step: every N epochs ... */
    long long milestones[CNN_MAX_MILESTONES];   /* ... or at these */
    int n_milestones;
    double min_lr;                  /* cosine, plateau: floor */
    double pct_start;               /* onecycle: share of rising steps */
    double div_factor;              /* onecycle: start at lr / this */
    double final_div_factor;        /* onecycle: end at start / this */
    double factor;                  /* plateau: multiply by this */
    long long patience;             /* plateau: epochs without progress */
    double threshold;               /* plateau: relative improvement */
};

enum cnn_on_nan {
    CNN_ON_NAN_STOP,
    CNN_ON_NAN_SKIP,
    CNN_ON_NAN_ROLLBACK,
};

/* Metrics a stopping rule or best.safetensors can follow. */
enum cnn_metric {
    CNN_METRIC_TEST_LOSS,
    CNN_METRIC_TEST_ACC,
    CNN_METRIC_TRAIN_LOSS,
};

struct cnn_training_config {
    long long epochs;
    long long batch_size;
    long long max_steps;            /* 0 = no limit */
    long long log_every;            /* steps between metrics rows */
    enum cnn_loss_kind loss;
    long long threads;              /* 0 = all cores */
    long long accumulate;           /* micro-batches per optimizer step */
    long long checkpoint_every;     /* steps; 0 = epoch ends and stops */
    long long keep_checkpoints;     /* newest ones kept */
    double max_time;                /* seconds across restarts; 0 = none */
    enum cnn_on_nan on_nan;
    long long max_rollbacks;
    enum cnn_metric best_metric;    /* picks best.safetensors */
    bool early_stopping;
    enum cnn_metric stop_metric;
    long long patience;             /* epochs without improvement */
    double min_delta;               /* improvement that counts */
    long long log_grad_stats;       /* steps between grad_stats.csv rows;
                                       0 = none */
    double vanishing_ratio;         /* warn when a layer's gradient norm
                                       is below this times the last
                                       layer's; 0 = never */
    double exploding_ratio;         /* ... or above this; 0 = never */
    bool checkpoint_activations;    /* every residual block recomputes
                                       its inner activations in backward */
    bool bf16;                      /* precision: bf16 activations, with
                                       dynamic loss scaling */
};

struct cnn_config {
    struct cnn_node *root;
    char *path;                     /* as given on the command line */
    char *dir;                      /* directory of path, for relative paths */
    char **origins;
    int n_origins;

    /* Typed view, filled by cnn_config_resolve. */
    const char *name;
    uint64_t seed;
    struct cnn_data_config data;
    struct cnn_node *model_layers;  /* sequence node */
    int input_c, input_h, input_w;  /* model.input, 0 when not given */
    struct cnn_optim_config optim;
    struct cnn_schedule_config schedule;
    struct cnn_training_config training;
};

/* Reads and parses path. On failure cfg is left empty (safe to free). */
enum cnn_status cnn_config_load(struct cnn_config *cfg, const char *path,
                                struct cnn_error *err);

/* Parses YAML text held in memory; origin names it in messages and dir
 * anchors its relative paths. */
enum cnn_status cnn_config_load_string(struct cnn_config *cfg,
                                       const char *text, const char *origin,
                                       const char *dir, struct cnn_error *err);

/* Applies one "key.path=value" override; value is parsed as YAML. */
enum cnn_status cnn_config_set(struct cnn_config *cfg, const char *assignment,
                               struct cnn_error *err);

/* Checks the tree and fills the typed fields. Unknown keys are errors
 * (the model's layers are checked later, by cnn_net_build). */
enum cnn_status cnn_config_resolve(struct cnn_config *cfg,
                                   struct cnn_error *err);

/* Writes the tree as YAML. */
void cnn_config_emit(const struct cnn_config *cfg, FILE *out);

/* The same, into a malloc'd string the caller frees; NULL on no memory. */
char *cnn_config_emit_string(const struct cnn_config *cfg);

/* Calls fn for each leaf path whose value differs between the trees a
 * (old) and b (new); a side where the path is absent passes NULL. */
void cnn_config_diff(const struct cnn_node *a, const struct cnn_node *b,
                     void (*fn)(void *ctx, const char *path, const char *old,
                                const char *new_value),
                     void *ctx);

void cnn_config_free(struct cnn_config *cfg);

/* --- reading values out of the tree (config_read.c) ------------------- */

/* Looks up key in map (NULL if map is NULL or not a map). Marks the entry
 * used and remembers that key was asked for, so a misspelled key can be
 * answered with the closest asked one. key must be a string literal. */
struct cnn_node *cnn_node_get(struct cnn_node *map, const char *key);

/* Each reader leaves *out at def when the key is absent and fails with a
 * located CNN_ERR_CONFIG when the value has the wrong type or range. */
enum cnn_status cnn_read_int(struct cnn_node *map, const char *key,
                             long long def, long long min, long long max,
                             long long *out, struct cnn_error *err);
enum cnn_status cnn_read_float(struct cnn_node *map, const char *key,
                               double def, double min, double max,
                               double *out, struct cnn_error *err);
enum cnn_status cnn_read_bool(struct cnn_node *map, const char *key,
                              bool def, bool *out, struct cnn_error *err);
enum cnn_status cnn_read_string(struct cnn_node *map, const char *key,
                                const char *def, const char **out,
                                struct cnn_error *err);
/* names is NULL-terminated; *out is the index of the match. */
enum cnn_status cnn_read_choice(struct cnn_node *map, const char *key,
                                const char *const *names, int def, int *out,
                                struct cnn_error *err);

/* Scalar conversions on a node itself. */
enum cnn_status cnn_node_int(struct cnn_node *n, long long min, long long max,
                             long long *out, struct cnn_error *err);
enum cnn_status cnn_node_float(struct cnn_node *n, double min, double max,
                               double *out, struct cnn_error *err);

/* Fails on the first entry of map nobody read, suggesting the closest
 * key that was asked for. Also fails when map is not a mapping. */
enum cnn_status cnn_node_check_unused(struct cnn_node *map,
                                      struct cnn_error *err);

/* Fails unless n is a mapping (or absent/null). what names it. */
enum cnn_status cnn_node_expect_map(struct cnn_node *n, struct cnn_error *err);

/* A deep copy of n (positions and paths kept), or NULL when out of
 * memory; free it with cnn_node_free. */
struct cnn_node *cnn_node_clone(const struct cnn_node *n);

void cnn_node_free(struct cnn_node *n);

/* Sets err to a located CNN_ERR_CONFIG: "<where>" + "<path>: <message>". */
enum cnn_status cnn_node_error(struct cnn_error *err, const struct cnn_node *n,
                               const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A null scalar: "~", "null" or nothing, unquoted. */
bool cnn_node_is_null(const struct cnn_node *n);

/* The closest of names (NULL-terminated) to word, or NULL if none is
 * close enough to be a likely typo. */
const char *cnn_closest_name(const char *word, const char *const *names,
                             int n_names);

#endif
