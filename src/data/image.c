/*
 * Single images, for predict and image folders: binary and plain PGM
 * read here, PNG through libpng's simplified API, JPEG through
 * libjpeg-turbo (8-bit gray or RGB). Images come back as channel-major
 * bytes, c x h x w, like IDX examples, and can be resized.
 */
#include "cnn/data.h"

#include <ctype.h>
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

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

/* libjpeg reports errors through a callback that must not return. */
struct jpeg_failure {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void jpeg_fail(j_common_ptr cinfo)
{
    struct jpeg_failure *f = (struct jpeg_failure *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, f->message);
    longjmp(f->jump, 1);
}

/* Warnings (level -1) mean damaged data that libjpeg papered over, such
 * as a file cut short: kept, to refuse the image afterwards. */
static void jpeg_warning(j_common_ptr cinfo, int level)
{
    struct jpeg_failure *f = (struct jpeg_failure *)cinfo->err;
    if (level < 0 && f->mgr.num_warnings++ == 0)
        (*cinfo->err->format_message)(cinfo, f->message);
}

static enum cnn_status read_jpeg(const char *path, FILE *f, int channels,
                                 struct cnn_image *img, struct cnn_error *err)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_failure fail;
    uint8_t *volatile packed = NULL;
    cinfo.err = jpeg_std_error(&fail.mgr);
    fail.mgr.error_exit = jpeg_fail;
    fail.mgr.emit_message = jpeg_warning;
    if (setjmp(fail.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(packed);
        return cnn_error_at(err, CNN_ERR_DATA, path, "damaged JPEG: %s",
                            fail.message);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, f);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_start_decompress(&cinfo);
    int c = cinfo.output_components;
    size_t w = cinfo.output_width, h = cinfo.output_height, hw = w * h;
    if (hw == 0 || hw > (1u << 28)) {
        jpeg_destroy_decompress(&cinfo);
        return cnn_error_at(err, CNN_ERR_DATA, path, "a JPEG of %zux%zu "
                            "pixels", w, h);
    }
    packed = malloc(hw * (size_t)c);
    img->pixels = malloc(hw * (size_t)c);
    if (!packed || !img->pixels) {
        jpeg_destroy_decompress(&cinfo);
        free(packed);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = packed + (size_t)cinfo.output_scanline * w * c;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (fail.mgr.num_warnings > 0) {
        free(packed);
        return cnn_error_at(err, CNN_ERR_DATA, path, "damaged JPEG: %s",
                            fail.message);
    }
    img->c = c;
    img->h = (int)h;
    img->w = (int)w;
    for (size_t i = 0; i < hw; i++)
        for (int k = 0; k < c; k++)
            img->pixels[k * hw + i] = packed[i * c + k];
    free(packed);
    return CNN_OK;
}

/* Gray to RGB by copying the plane; the readers give RGB when asked. */
static enum cnn_status match_channels(struct cnn_image *img, int channels,
                                      struct cnn_error *err)
{
    if (channels != 3 || img->c == 3)
        return CNN_OK;
    size_t hw = (size_t)img->h * img->w;
    uint8_t *rgb = malloc(3 * hw);
    if (!rgb)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    for (int k = 0; k < 3; k++)
        memcpy(rgb + k * hw, img->pixels, hw);
    free(img->pixels);
    img->pixels = rgb;
    img->c = 3;
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
    } else if (got >= 3 && magic[0] == 0xff && magic[1] == 0xd8 &&
               magic[2] == 0xff) {
        fseek(f, 0, SEEK_SET);
        st = read_jpeg(path, f, channels, img, err);
        fclose(f);
    } else {
        fclose(f);
        if (got == 8 && !png_sig_cmp(magic, 0, 8))
            st = read_png(path, channels, img, err);
        else
            st = cnn_error_at(err, CNN_ERR_DATA, path, "neither PGM, PNG "
                              "nor JPEG (nor IDX)");
    }
    if (st == CNN_OK)
        st = match_channels(img, channels, err);
    if (st != CNN_OK)
        cnn_image_free(img);
    return st;
}

/* One axis of a resize: n_in values spaced stride apart in src become
 * n_out in dst (spaced dst_stride): where the axis shrinks, each is the
 * mean of the source interval it covers, partial values weighted by the
 * part covered; where it grows, linear between source centres. */
static void resize_axis(const float *src, size_t stride, int n_in, float *dst,
                        size_t dst_stride, int n_out)
{
    double scale = (double)n_in / n_out;
    for (int o = 0; o < n_out; o++) {
        double v;
        if (scale >= 1.0) {
            double a = o * scale, b = (o + 1) * scale, sum = 0;
            for (int i = (int)a; i < n_in && i < b; i++) {
                double w = (i + 1 < b ? i + 1 : b) - (i > a ? i : a);
                sum += src[i * stride] * w;
            }
            v = sum / scale;
        } else {
            double c = (o + 0.5) * scale - 0.5;
            c = c < 0 ? 0 : c > n_in - 1 ? n_in - 1 : c;
            int i = (int)c, j = i + 1 < n_in ? i + 1 : i;
            v = src[i * stride] * (1 - (c - i)) + src[j * stride] * (c - i);
        }
        dst[o * dst_stride] = (float)v;
    }
}

enum cnn_status cnn_image_resize(struct cnn_image *img, int h, int w,
                                 struct cnn_error *err)
{
    if (img->h == h && img->w == w)
        return CNN_OK;
    int H = img->h, W = img->w;
    float *in = malloc((size_t)H * W * sizeof *in);
    float *rows = malloc((size_t)H * w * sizeof *rows);
    float *out = malloc((size_t)h * w * sizeof *out);
    uint8_t *pixels = malloc((size_t)img->c * h * w);
    if (!in || !rows || !out || !pixels) {
        free(in), free(rows), free(out), free(pixels);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    /* Box and linear filters are separable: widths first, then heights,
     * each axis by its own rule. */
    for (int c = 0; c < img->c; c++) {
        const uint8_t *p = img->pixels + (size_t)c * H * W;
        for (size_t i = 0; i < (size_t)H * W; i++)
            in[i] = p[i];
        for (int y = 0; y < H; y++)
            resize_axis(in + (size_t)y * W, 1, W, rows + (size_t)y * w, 1, w);
        for (int x = 0; x < w; x++)
            resize_axis(rows + x, (size_t)w, H, out + x, (size_t)w, h);
        for (size_t i = 0; i < (size_t)h * w; i++) {
            float v = out[i] + 0.5f;
            pixels[(size_t)c * h * w + i] = (uint8_t)(v < 0 ? 0 : v > 255
                                                                ? 255 : v);
        }
    }
    free(in), free(rows), free(out);
    free(img->pixels);
    img->pixels = pixels;
    img->h = h;
    img->w = w;
    return CNN_OK;
}

void cnn_image_free(struct cnn_image *img)
{
    if (!img)
        return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}
