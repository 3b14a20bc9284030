/*
 * safetensors files: an 8-byte little-endian header length, a JSON header
 * naming each tensor's dtype, shape and byte range (plus string metadata
 * under "__metadata__"), then the raw little-endian data. Files are
 * written to a temporary file, flushed and renamed, so a crash leaves
 * either the old file or the new one, never a torn one.
 */
#ifndef CNN_SAFETENSORS_H
#define CNN_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/net.h"

struct cnn_meta {
    const char *key;
    const char *value;
};

enum { CNN_TENSOR_MAX_DIMS = 4 };

/* A tensor to write, or one found in a file (data then points into the
 * file's buffer). */
struct cnn_tensor {
    const char *name;
    const char *dtype;             /* "F32", "U8", "I8", "U64" */
    int ndim;
    uint64_t dims[CNN_TENSOR_MAX_DIMS];
    const void *data;
    size_t bytes;
};

/* Writes the tensors (back to back, in order) and metadata to path,
 * atomically. */
enum cnn_status cnn_safetensors_write(const char *path,
                                      const struct cnn_tensor *t, int n,
                                      const struct cnn_meta *meta, int n_meta,
                                      struct cnn_error *err);

/* A file read whole and parsed; every tensor's range was checked against
 * the data size. Owns its buffer and strings. */
struct cnn_st_file {
    char *path;
    char *buf;
    size_t size;
    struct cnn_tensor *tensors;
    int n_tensors;
    char **meta_keys, **meta_values;
    int n_meta;
};

/* Reads and checks path. Errors (CNN_ERR_DATA) name the file and what
 * is wrong: short file, bad header, bad offsets, duplicate names. */
enum cnn_status cnn_st_open(struct cnn_st_file *f, const char *path,
                            struct cnn_error *err);

/* The tensor named name, or NULL. */
const struct cnn_tensor *cnn_st_find(const struct cnn_st_file *f,
                                     const char *name);

/* The metadata value for key, or NULL. */
const char *cnn_st_meta(const struct cnn_st_file *f, const char *key);

void cnn_st_close(struct cnn_st_file *f);

/* Every parameter of net as a tensor named "<layer>.<weight|bias>" (F32,
 * PyTorch shapes), into t[0..); returns how many (at most cap). */
int cnn_net_tensors(struct cnn_net *net, struct cnn_tensor *t, char *names,
                    size_t name_cap, int cap);

/* Writes net's parameters and the metadata to path, atomically. */
enum cnn_status cnn_safetensors_save(const char *path, struct cnn_net *net,
                                     const struct cnn_meta *meta, int n_meta,
                                     struct cnn_error *err);

/* Copies every parameter of net from f: each must be present with the
 * same shape and dtype F32; the first difference is reported by name.
 * With strict, tensors of f that net lacks are errors too (tensors whose
 * name starts with "optim." or "state." never are). */
enum cnn_status cnn_st_load_net(const struct cnn_st_file *f,
                                struct cnn_net *net, bool strict,
                                struct cnn_error *err);

/* cnn_st_open + cnn_st_load_net(strict) + cnn_st_close. */
enum cnn_status cnn_safetensors_load(const char *path, struct cnn_net *net,
                                     struct cnn_error *err);

/* Writes len bytes to path through a temporary file in the same
 * directory, fsync'd and renamed over path, then fsyncs the directory. */
enum cnn_status cnn_write_atomic(const char *path, const void *data,
                                 size_t len, struct cnn_error *err);

/* Writes s as a JSON string literal, quotes and escapes included. */
void cnn_json_string(FILE *f, const char *s);

#endif
