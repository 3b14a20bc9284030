/*
 * safetensors files: an 8-byte little-endian header length, a JSON header
 * naming each tensor's dtype, shape and byte range (plus string metadata
 * under "__metadata__"), then the raw little-endian data. Written to a
 * temporary file, flushed and renamed, so a crash leaves either the old
 * file or the new one, never a torn one.
 */
#ifndef CNN_SAFETENSORS_H
#define CNN_SAFETENSORS_H

#include <stdio.h>

#include "cnn/net.h"

struct cnn_meta {
    const char *key;
    const char *value;
};

/* Writes every parameter of net (named "<layer>.<weight|bias>", F32) and
 * the n_meta metadata pairs to path, atomically. */
enum cnn_status cnn_safetensors_save(const char *path, struct cnn_net *net,
                                     const struct cnn_meta *meta, int n_meta,
                                     struct cnn_error *err);

/* Loads every parameter of net from path. Each tensor must be present
 * with the same shape and dtype F32; the first difference is reported by
 * name. Extra tensors in the file are an error too. */
enum cnn_status cnn_safetensors_load(const char *path, struct cnn_net *net,
                                     struct cnn_error *err);

/* Writes s as a JSON string literal, quotes and escapes included. */
void cnn_json_string(FILE *f, const char *s);

/* Writes len bytes to path through a temporary file in the same
 * directory, fsync'd and renamed over path, then fsyncs the directory. */
enum cnn_status cnn_write_atomic(const char *path, const void *data,
                                 size_t len, struct cnn_error *err);

#endif
