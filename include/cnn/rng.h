/*
 * The one seeded generator family. Every random draw in a run (weight
 * init, shuffling, dropout, later augmentation) comes from a struct
 * cnn_rng derived from (seed, stream), so each stream is reproducible on
 * its own and its whole state is four words that a checkpoint can hold.
 * The generator is xoshiro256** seeded through splitmix64.
 */
#ifndef CNN_RNG_H
#define CNN_RNG_H

#include <stdint.h>

struct cnn_rng {
    uint64_t s[4];
};

/* Named streams, so adding a consumer never shifts another's draws. */
enum cnn_rng_stream {
    CNN_RNG_STREAM_INIT = 1,
    CNN_RNG_STREAM_SHUFFLE = 2,
    CNN_RNG_STREAM_DROPOUT = 3,
    CNN_RNG_STREAM_AUGMENT = 4,
    CNN_RNG_STREAM_TEST_SPLIT = 5,
    CNN_RNG_STREAM_VAL_SPLIT = 6,
    CNN_RNG_STREAM_GRADCHECK = 7,   /* gradcheck's inputs and entries */
};

/* Seeds from (seed, stream, index): e.g. the shuffle of epoch e is
 * (seed, CNN_RNG_STREAM_SHUFFLE, e). */
void cnn_rng_seed(struct cnn_rng *rng, uint64_t seed, uint64_t stream,
                  uint64_t index);

uint64_t cnn_rng_next(struct cnn_rng *rng);

/* Uniform in [0, 1), 24 bits of precision. */
float cnn_rng_uniform(struct cnn_rng *rng);

/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint32_t cnn_rng_below(struct cnn_rng *rng, uint32_t n);

/* Standard normal (Box-Muller; one value per call). */
float cnn_rng_normal(struct cnn_rng *rng);

#endif
