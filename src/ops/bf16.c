/*
 * bfloat16 conversion, for activations kept in half the memory
 * (training.precision: bf16).
 */
#include "cnn/ops.h"

#include <string.h>

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)        /* NaN: keep it one */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);            /* nearest, ties to even */
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void cnn_bf16_pack(const float *x, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = to_bf16(x[i]);
}

void cnn_bf16_unpack(const uint16_t *in, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = from_bf16(in[i]);
}

void cnn_bf16_round(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = from_bf16(to_bf16(x[i]));
}

void cnn_bf16_store(float *x, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = to_bf16(x[i]);
        x[i] = from_bf16(out[i]);
    }
}
