/*
 * Single images for predict: binary and plain PGM read here, PNG through
 * libpng's simplified API (8-bit gray or RGB). Images come back as
 * channel-major bytes, c x h x w, like IDX examples.
 */
#include "cnn/data.h"

#include <ctype.h>
#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Next whitespace-separated PGM header number, skipping # comments. */
static bool pgm_number(FILE *f, long *v)
{
    int c;
    for (;;) {
        c = fgetc(f);
        if (c == '#')
            while (c != '\n' && c != EOF)
                c = fgetc(f);
        else if (!isspace(c))
            break;
    }
    if (c == EOF || !isdigit(c))
        return false;
    *v = 0;
    while (c != EOF && isdigit(c)) {
        if (*v > 1000000)
            return false;
        *v = *v * 10 + (c - '0');
        c = fgetc(f);
    }
    return true;
}

static enum cnn_status read_pgm(const char *path, FILE *f, bool plain,
                                struct cnn_image *img, struct cnn_error *err)
{
    long w, h, max;
    if (!pgm_number(f, &w) || !pgm_number(f, &h) || !pgm_number(f, &max) ||
        w < 1 || h < 1 || w > 65536 || h > 65536 || max < 1 || max > 255)
        return cnn_error_at(err, CNN_ERR_DATA, path, "bad PGM header "
                            "(8-bit gray only)");
    img->c = 1;
    img->h = (int)h;
    img->w = (int)w;
    img->pixels = malloc((size_t)w * h);
    if (!img->pixels)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    for (long i = 0; i < w * h; i++) {
        long v;
        if (plain) {
            if (!pgm_number(f, &v) || v > max)
                return cnn_error_at(err, CNN_ERR_DATA, path, "truncated or "
                                    "bad pixel %ld", i);
        } else {
            int c = fgetc(f);
            if (c == EOF)
                return cnn_error_at(err, CNN_ERR_DATA, path, "truncated: %ld "
                                    "of %ld pixels", i, w * h);
            v = c;
        }
        img->pixels[i] = (uint8_t)(v * 255 / max);
    }
    return CNN_OK;
}

static enum cnn_status read_png(const char *path, int channels,
                                struct cnn_image *img, struct cnn_error *err)
{
    png_image png;
    memset(&png, 0, sizeof png);
    png.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&png, path))
        return cnn_error_at(err, CNN_ERR_DATA, path, "not a readable PNG: %s",
                            png.message);
    png.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    size_t hw = (size_t)png.width * png.height;
    /* Zeroed: libpng composites transparent pixels onto the buffer, so
     * they come out black, as in the training data's background. */
    uint8_t *packed = calloc(1, PNG_IMAGE_SIZE(png));
    img->pixels = malloc(hw * (size_t)(channels == 3 ? 3 : 1));
    if (!packed || !img->pixels) {
        free(packed);
        png_image_free(&png);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    if (!png_image_finish_read(&png, NULL, packed, 0, NULL)) {
        free(packed);
        return cnn_error_at(err, CNN_ERR_DATA, path, "damaged PNG: %s",
                            png.message);
    }
    img->c = channels == 3 ? 3 : 1;
    img->h = (int)png.height;
    img->w = (int)png.width;
    /* Interleaved RGB -> channel planes. */
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < img->c; c++)
            img->pixels[c * hw + i] = packed[i * img->c + c];
    free(packed);
    return CNN_OK;
}

enum cnn_status cnn_image_read(const char *path, int channels,
                               struct cnn_image *img, struct cnn_error *err)
{
    memset(img, 0, sizeof *img);
    FILE *f = fopen(path, "rb");
    if (!f)
        return cnn_error_at(err, CNN_ERR_DATA, path, "cannot open: %s",
                            strerror(errno));
    unsigned char magic[8] = {0};
    size_t got = fread(magic, 1, sizeof magic, f);
    enum cnn_status st;
    if (got >= 2 && magic[0] == 'P' && (magic[1] == '5' || magic[1] == '2')) {
        fseek(f, 2, SEEK_SET);
        st = read_pgm(path, f, magic[1] == '2', img, err);
        fclose(f);
    } else {
        fclose(f);
        if (got == 8 && !png_sig_cmp(magic, 0, 8))
            st = read_png(path, channels, img, err);
        else
            st = cnn_error_at(err, CNN_ERR_DATA, path, "neither PGM nor PNG "
                              "(nor IDX)");
    }
    if (st != CNN_OK)
        cnn_image_free(img);
    return st;
}

void cnn_image_free(struct cnn_image *img)
{
    if (!img)
        return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}
