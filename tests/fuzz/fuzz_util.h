/*
 * Helpers the fuzz targets share: sanitizer defaults, so a crash file
 * replays the same way without any environment, and scratch files for
 * readers that only take a path.
 *
 * Not a library: each target includes it once.
 */
#ifndef CNN_FUZZ_UTIL_H
#define CNN_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A header may promise gigabytes; malloc then fails and the reader must
 * say "out of memory" rather than the fuzzer calling it a crash. Past
 * 512 MiB an allocation returns NULL instead of being made. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1:max_allocation_size_mb=512:"
           "detect_leaks=1";
}

enum { FUZZ_MAX_SCRATCH = 4, FUZZ_PATH_MAX = 512 };

static char fuzz_scratch_paths[FUZZ_MAX_SCRATCH][FUZZ_PATH_MAX];
static int fuzz_n_scratch;

static inline void fuzz_remove_scratch(void)
{
    for (int i = 0; i < fuzz_n_scratch; i++)
        unlink(fuzz_scratch_paths[i]);
}

/* Makes an empty file named after tag under $TMPDIR, else /dev/shm
 * (memory: a busy disk once held an open() for minutes), else /tmp;
 * returns its name, or NULL. The file is removed by exit(), but libFuzzer
 * ends with _exit: run.sh points TMPDIR at a directory it removes. */
static inline const char *fuzz_scratch(const char *tag)
{
    if (fuzz_n_scratch == FUZZ_MAX_SCRATCH)
        return NULL;
    char *path = fuzz_scratch_paths[fuzz_n_scratch];
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path, FUZZ_PATH_MAX, "%s/cnn-fuzz-%s-XXXXXX", dir, tag);
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    close(fd);
    if (fuzz_n_scratch++ == 0)
        atexit(fuzz_remove_scratch);
    return path;
}

/* Replaces the contents of path with data[0..n). Returns 0 or -1. */
static inline int fuzz_write(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t put = n ? fwrite(data, 1, n, f) : 0;
    int bad = fclose(f) != 0 || put != n;
    return bad ? -1 : 0;
}

#endif
