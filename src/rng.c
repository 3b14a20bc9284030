/*
 * xoshiro256** with splitmix64 seeding (Blackman and Vigna's published
 * algorithms), written for this project. See include/cnn/rng.h.
 */
#include "cnn/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void cnn_rng_seed(struct cnn_rng *rng, uint64_t seed, uint64_t stream,
                  uint64_t index)
{
    /* Mix the three words one after another so (1,2,3) and (3,2,1)
     * give unrelated states. */
    uint64_t x = seed;
    x = splitmix64(&x) ^ stream;
    x = splitmix64(&x) ^ index;
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&x);
}

uint64_t cnn_rng_next(struct cnn_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float cnn_rng_uniform(struct cnn_rng *rng)
{
    return (float)(cnn_rng_next(rng) >> 40) * (1.0f / 16777216.0f);
}

uint32_t cnn_rng_below(struct cnn_rng *rng, uint32_t n)
{
    /* Rejection on the top 32 bits keeps every value equally likely. */
    uint32_t limit = (uint32_t)(-n) % n;
    for (;;) {
        uint32_t r = (uint32_t)(cnn_rng_next(rng) >> 32);
        uint64_t m = (uint64_t)r * n;
        if ((uint32_t)m >= limit)
            return (uint32_t)(m >> 32);
    }
}

float cnn_rng_normal(struct cnn_rng *rng)
{
    double u1 = ((double)(cnn_rng_next(rng) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(cnn_rng_next(rng) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
