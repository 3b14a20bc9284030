/*
 * AVX-512 helpers the ops share: masks of lane ranges, and a pointer
 * to floats that may lie before or after an array, for masked loads and
 * stores that touch only the lanes inside it (the arithmetic is on
 * integers, where C defines it).
 */
#ifndef CNN_OPS_LANES_H
#define CNN_OPS_LANES_H

#ifdef __AVX512F__
#include <immintrin.h>
#include <stdint.h>

/* Lanes [first, end) of 16, clipped to them. */
static inline __mmask16 cnn_lanes(int first, int end)
{
    first = first < 0 ? 0 : first;
    end = end > 16 ? 16 : end;
    return end > first ? (__mmask16)(((1u << end) - 1) & ~((1u << first) - 1))
                       : 0;
}

/* p + i, for masked access only. */
static inline float *cnn_lane_at(const float *p, ptrdiff_t i)
{
    return (float *)((uintptr_t)p + (uintptr_t)(i * (ptrdiff_t)sizeof *p));
}
#endif

#endif
