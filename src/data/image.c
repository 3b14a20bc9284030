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

/* Bilinear between the four source pixel centres around (cy, cx). */
static float bilinear(const uint8_t *p, int h, int w, double cy, double cx)
{
    cy = cy < 0 ? 0 : cy > h - 1 ? h - 1 : cy;
    cx = cx < 0 ? 0 : cx > w - 1 ? w - 1 : cx;
    int iy = (int)cy, ix = (int)cx;
    int jy = iy + 1 < h ? iy + 1 : iy, jx = ix + 1 < w ? ix + 1 : ix;
    double fy = cy - iy, fx = cx - ix;
    double top = p[iy * w + ix] * (1 - fx) + p[iy * w + jx] * fx;
    double bot = p[jy * w + ix] * (1 - fx) + p[jy * w + jx] * fx;
    return (float)(top * (1 - fy) + bot * fy);
}

/* The mean of the source area [y0, y1) x [x0, x1), partial pixels
 * weighted by the part covered. */
static float area_mean(const uint8_t *p, int h, int w, double y0, double y1,
                       double x0, double x1)
{
    double sum = 0, area = 0;
    for (int y = (int)y0; y < h && y < y1; y++) {
        double wy = (y + 1 < y1 ? y + 1 : y1) - (y > y0 ? y : y0);
        for (int x = (int)x0; x < w && x < x1; x++) {
            double wx = (x + 1 < x1 ? x + 1 : x1) - (x > x0 ? x : x0);
            sum += p[y * w + x] * wy * wx;
            area += wy * wx;
        }
    }
    return (float)(area > 0 ? sum / area : 0);
}

enum cnn_status cnn_image_resize(struct cnn_image *img, int h, int w,
                                 struct cnn_error *err)
{
    if (img->h == h && img->w == w)
        return CNN_OK;
    uint8_t *out = malloc((size_t)img->c * h * w);
    if (!out)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    double sy = (double)img->h / h, sx = (double)img->w / w;
    bool shrink = sy >= 1.0 && sx >= 1.0;
    for (int c = 0; c < img->c; c++) {
        const uint8_t *p = img->pixels + (size_t)c * img->h * img->w;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float v = shrink
                    ? area_mean(p, img->h, img->w, y * sy, (y + 1) * sy,
                                x * sx, (x + 1) * sx)
                    : bilinear(p, img->h, img->w, (y + 0.5) * sy - 0.5,
                               (x + 0.5) * sx - 0.5);
                out[((size_t)c * h + y) * w + x] = (uint8_t)(v + 0.5f);
            }
    }
    free(img->pixels);
    img->pixels = out;
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
