/*
 * CIFAR-10's binary version: records of one label byte (0..9) and 3072
 * pixel bytes, the red, green and blue 32x32 planes in turn; the class
 * names one per line in batches.meta.txt beside the batches.
 */
#include "cnn/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SIDE = 32, PIXELS = 3 * SIDE * SIDE, RECORD = 1 + PIXELS, CLASSES = 10 };

/* Reads batches.meta.txt from path's directory, if there is one. */
static void read_meta(struct cnn_dataset *ds, const char *path)
{
    char meta[4200];
    const char *slash = strrchr(path, '/');
    int dir = slash ? (int)(slash - path + 1) : 0;
    snprintf(meta, sizeof meta, "%.*sbatches.meta.txt", dir, path);
    FILE *f = fopen(meta, "r");
    if (!f)
        return;
    char line[256];
    char **names = calloc(CLASSES, sizeof *names);
    int n = 0;
    while (names && n < CLASSES && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] && !(names[n++] = strdup(line)))
            break;
    }
    fclose(f);
    if (names && n == CLASSES && names[CLASSES - 1]) {
        ds->class_names = names;
        ds->n_class_names = CLASSES;
        return;
    }
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

static enum cnn_status file_size(const char *path, long long *size,
                                 struct cnn_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            strerror(errno));
    bool ok = fseek(f, 0, SEEK_END) == 0 && (*size = ftell(f)) >= 0;
    fclose(f);
    if (!ok)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot tell its size");
    if (*size == 0)
        return cnn_error_at(err, CNN_ERR_DATA, path, "empty");
    if (*size % RECORD)
        return cnn_error_at(err, CNN_ERR_DATA, path, "%lld bytes: not a "
                            "whole number of %d-byte records (1 label byte, "
                            "%d pixel bytes); truncated, or not a CIFAR-10 "
                            "binary batch", *size, RECORD, PIXELS);
    return CNN_OK;
}

static enum cnn_status read_batch(struct cnn_dataset *ds, const char *path,
                                  long long first, long long count,
                                  uint8_t *record, struct cnn_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            strerror(errno));
    enum cnn_status st = CNN_OK;
    for (long long i = 0; i < count && st == CNN_OK; i++) {
        if (fread(record, 1, RECORD, f) != RECORD)
            st = cnn_error_at(err, CNN_ERR_DATA, path, "truncated at record "
                              "%lld", i);
        else if (record[0] >= CLASSES)
            st = cnn_error_at(err, CNN_ERR_DATA, path, "record %lld: label "
                              "%d, but CIFAR-10 labels are 0 to 9", i,
                              record[0]);
        else {
            ds->labels[first + i] = record[0];
            memcpy(ds->pixels + (size_t)(first + i) * PIXELS, record + 1,
                   PIXELS);
        }
    }
    fclose(f);
    return st;
}

enum cnn_status cnn_cifar10_load(struct cnn_dataset *ds, char *const *files,
                                 int n_files, struct cnn_error *err)
{
    long long sizes[CNN_MAX_FILES], total = 0;
    memset(ds, 0, sizeof *ds);
    for (int i = 0; i < n_files; i++) {
        enum cnn_status st = file_size(files[i], &sizes[i], err);
        if (st != CNN_OK)
            return st;
        total += sizes[i] / RECORD;
    }
    ds->n = total;
    ds->shape = (struct cnn_shape){3, SIDE, SIDE};
    ds->n_classes = CLASSES;
    ds->pixels = malloc((size_t)total * PIXELS);
    ds->labels = malloc((size_t)total * sizeof *ds->labels);
    uint8_t *record = malloc(RECORD);
    enum cnn_status st = ds->pixels && ds->labels && record
                             ? CNN_OK
                             : cnn_error_set(err, CNN_ERR_NOMEM,
                                             "out of memory");
    for (long long i = 0, first = 0; st == CNN_OK && i < n_files; i++) {
        st = read_batch(ds, files[i], first, sizes[i] / RECORD, record, err);
        first += sizes[i] / RECORD;
    }
    free(record);
    if (st == CNN_OK)
        read_meta(ds, files[0]);
    else
        cnn_dataset_free(ds);
    return st;
}
