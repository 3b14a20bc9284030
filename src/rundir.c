/*
 * Run-directory housekeeping: mkdir -p, an fcntl lock that dies with its
 * holder (the file stays empty: F_GETLK names the holder), free-space
 * checks, and checkpoint names ckpt-<step>.safetensors
 * with nine-digit steps, so names sort by step.
 */
#include "cnn/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static enum cnn_status make_dirs(const char *path, struct cnn_error *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return cnn_error_at(err, CNN_ERR_USAGE, path, "path too long");
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return cnn_error_at(err, CNN_ERR_IO, buf, "cannot create "
                                "directory: %s", strerror(errno));
        *p = c;
        if (!c)
            break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return cnn_error_at(err, CNN_ERR_IO, path, "not a directory");
    if (access(path, W_OK) != 0)
        return cnn_error_at(err, CNN_ERR_IO, path, "not writable: %s",
                            strerror(errno));
    return CNN_OK;
}

void cnn_rundir_file(const struct cnn_rundir *rd, const char *name,
                     char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", rd->path, name);
}

bool cnn_rundir_has(const struct cnn_rundir *rd, const char *name)
{
    char path[4200];
    cnn_rundir_file(rd, name, path, sizeof path);
    return access(path, F_OK) == 0;
}

enum cnn_status cnn_rundir_open(struct cnn_rundir *rd, const char *path,
                                struct cnn_error *err)
{
    rd->lock_fd = -1;
    if (snprintf(rd->path, sizeof rd->path, "%s", path) >=
        (int)sizeof rd->path)
        return cnn_error_at(err, CNN_ERR_USAGE, path, "path too long");
    enum cnn_status st = make_dirs(path, err);
    if (st != CNN_OK)
        return st;

    char lock[4200];
    cnn_rundir_file(rd, "lock", lock, sizeof lock);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return cnn_error_at(err, CNN_ERR_IO, lock, "cannot open: %s",
                            strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        long pid = fcntl(fd, F_GETLK, &who) == 0 ? (long)who.l_pid : -1;
        close(fd);
        /* Busy is temporary: 75, like a stopped run, so cron tries
         * again next time. */
        cnn_error_at(err, CNN_ERR_BUSY, path, "in use by another cnn-train "
                     "(process %ld)", pid);
        cnn_error_hint(err, "wait for it to finish, or stop it with "
                       "'kill %ld'", pid);
        return CNN_ERR_BUSY;
    }
    rd->lock_fd = fd;
    return CNN_OK;
}

void cnn_rundir_close(struct cnn_rundir *rd)
{
    if (rd->lock_fd >= 0)
        close(rd->lock_fd);
    rd->lock_fd = -1;
}

enum cnn_status cnn_rundir_check_space(const struct cnn_rundir *rd,
                                       size_t need, struct cnn_error *err)
{
    struct statvfs fs;
    if (statvfs(rd->path, &fs) != 0)
        return cnn_error_at(err, CNN_ERR_IO, rd->path, "cannot read free "
                            "space: %s", strerror(errno));
    double avail = (double)fs.f_bavail * (double)fs.f_frsize;
    if (avail < (double)need)
        return cnn_error_at(err, CNN_ERR_IO, rd->path, "only %.1f MiB free; "
                            "checkpoints need %.1f MiB", avail / (1 << 20),
                            (double)need / (1 << 20));
    return CNN_OK;
}

void cnn_rundir_checkpoint_path(const struct cnn_rundir *rd, long long step,
                                char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/ckpt-%09lld.safetensors", rd->path, step);
}

static int by_step_desc(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x < y) - (x > y);
}

int cnn_rundir_checkpoints(const struct cnn_rundir *rd, long long *steps,
                           int cap)
{
    DIR *d = opendir(rd->path);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < cap) {
        long long step;
        char tail[32];
        if (sscanf(e->d_name, "ckpt-%lld.%31s", &step, tail) == 2 &&
            strcmp(tail, "safetensors") == 0 && step >= 0)
            steps[n++] = step;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof *steps, by_step_desc);
    return n;
}

void cnn_rundir_prune(const struct cnn_rundir *rd, long long keep)
{
    long long steps[4096];
    int n = cnn_rundir_checkpoints(rd, steps, 4096);
    char path[4200];
    for (int i = (int)keep; i < n; i++) {
        cnn_rundir_checkpoint_path(rd, steps[i], path, sizeof path);
        unlink(path);
    }
}

void cnn_rundir_clear(const struct cnn_rundir *rd)
{
    static const char *const files[] = {
        "best.safetensors", "model.safetensors", "run.json", "metrics.csv",
        "grad_stats.csv",
    };
    char path[4200];
    cnn_rundir_prune(rd, 0);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        cnn_rundir_file(rd, files[i], path, sizeof path);
        unlink(path);
    }
}
