/*
 * Image folders: root/<class>/<image>, the layout of torchvision's
 * ImageFolder. Classes are the sub-folders in sorted order (those of the
 * training split for the test split); images are PNG, JPEG or PGM files
 * by extension, converted to the model's channels and resized to its
 * input size. Other files are passed over; a damaged image is an error
 * naming it.
 */
#include "cnn/data.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

struct names {
    char **v;
    int n, cap;
};

static bool push(struct names *l, const char *s)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **more = realloc(l->v, (size_t)cap * sizeof *more);
        if (!more)
            return false;
        l->v = more;
        l->cap = cap;
    }
    return (l->v[l->n] = strdup(s)) && ++l->n;
}

static void clear(struct names *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_image(const char *name)
{
    const char *dot = strrchr(name, '.');
    static const char *const ext[] = {".png", ".jpg", ".jpeg", ".pgm"};
    for (size_t i = 0; dot && i < sizeof ext / sizeof ext[0]; i++)
        if (strcasecmp(dot, ext[i]) == 0)
            return true;
    return false;
}

/* The sorted entries of dir that are folders (want_dirs) or image files;
 * hidden ones are passed over. */
static enum cnn_status list_dir(const char *dir, bool want_dirs,
                                struct names *out, struct cnn_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return cnn_error_at(err, CNN_ERR_DATA, dir, "cannot open folder: %s",
                            strerror(errno));
    struct dirent *e;
    enum cnn_status st = CNN_OK;
    char path[4200];
    while (st == CNN_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0)
            continue;
        bool wanted = want_dirs ? S_ISDIR(sb.st_mode)
                                : S_ISREG(sb.st_mode) && is_image(e->d_name);
        if (wanted && !push(out, e->d_name))
            st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    closedir(d);
    if (out->n > 1)
        qsort(out->v, (size_t)out->n, sizeof *out->v, by_name);
    return st;
}

/* Appends the images of one class folder to ds (its arrays have room for
 * cap examples, grown here). */
static enum cnn_status add_class(struct cnn_dataset *ds, long long *cap,
                                 const char *dir, int label,
                                 struct cnn_error *err)
{
    struct names files = {0};
    enum cnn_status st = list_dir(dir, false, &files, err);
    size_t size = cnn_shape_size(ds->shape);
    char path[4700];
    for (int i = 0; st == CNN_OK && i < files.n; i++) {
        if (ds->n == *cap) {
            long long more = *cap ? 2 * *cap : 256;
            uint8_t *p = realloc(ds->pixels, (size_t)more * size);
            if (p)
                ds->pixels = p;
            int *l = realloc(ds->labels, (size_t)more * sizeof *l);
            if (l)
                ds->labels = l;
            if (!p || !l) {
                st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
                break;
            }
            *cap = more;
        }
        snprintf(path, sizeof path, "%s/%s", dir, files.v[i]);
        struct cnn_image img;
        st = cnn_image_read(path, ds->shape.c, &img, err);
        if (st == CNN_OK)
            st = cnn_image_resize(&img, ds->shape.h, ds->shape.w, err);
        if (st == CNN_OK) {
            memcpy(ds->pixels + (size_t)ds->n * size, img.pixels, size);
            ds->labels[ds->n++] = label;
        }
        cnn_image_free(&img);
    }
    clear(&files);
    return st;
}

enum cnn_status cnn_folder_load(struct cnn_dataset *ds, const char *root,
                                struct cnn_shape shape,
                                const struct cnn_dataset *train,
                                struct cnn_error *err)
{
    struct names classes = {0};
    memset(ds, 0, sizeof *ds);
    if (shape.c != 1 && shape.c != 3)
        return cnn_error_set(err, CNN_ERR_CONFIG, "model.input has %d "
                             "channels; image folders give 1 (gray) or 3 "
                             "(RGB)", shape.c);
    ds->shape = shape;
    enum cnn_status st = list_dir(root, true, &classes, err);
    if (st == CNN_OK && classes.n == 0)
        st = cnn_error_at(err, CNN_ERR_DATA, root, "no class folders: "
                          "expected %s/<class>/<image>", root);

    /* The test split's folders must be among the training classes. */
    int *label = calloc((size_t)(classes.n ? classes.n : 1), sizeof *label);
    if (st == CNN_OK && !label)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    for (int i = 0; st == CNN_OK && i < classes.n; i++) {
        label[i] = i;
        if (!train)
            continue;
        label[i] = -1;
        for (int k = 0; k < train->n_class_names; k++)
            if (strcmp(train->class_names[k], classes.v[i]) == 0)
                label[i] = k;
        if (label[i] < 0)
            st = cnn_error_at(err, CNN_ERR_DATA, root, "class folder '%s' is "
                              "not one of the %d training classes",
                              classes.v[i], train->n_class_names);
    }

    long long cap = 0;
    char dir[4400];
    for (int i = 0; st == CNN_OK && i < classes.n; i++) {
        snprintf(dir, sizeof dir, "%s/%s", root, classes.v[i]);
        st = add_class(ds, &cap, dir, label[i], err);
    }
    if (st == CNN_OK && ds->n == 0)
        st = cnn_error_at(err, CNN_ERR_DATA, root, "no images (.png, .jpg, "
                          ".jpeg, .pgm) in its class folders");
    free(label);

    const struct names *names = &classes;
    struct names from_train = {0};
    if (st == CNN_OK && train) {
        for (int k = 0; k < train->n_class_names; k++)
            if (!push(&from_train, train->class_names[k]))
                st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        names = &from_train;
    }
    if (st == CNN_OK) {
        ds->class_names = names->v;
        ds->n_class_names = ds->n_classes = names->n;
        if (names == &classes)
            classes.v = NULL, classes.n = 0;
        else
            from_train.v = NULL, from_train.n = 0;
    }
    clear(&classes);
    clear(&from_train);
    if (st != CNN_OK)
        cnn_dataset_free(ds);
    return st;
}
