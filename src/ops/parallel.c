/*
 * A small pool of worker threads for our own loops (conv2d's chunks,
 * batchnorm's channels, max-pooling's planes): while they run,
 * OpenBLAS's threads sleep, so the loops can use the cores. One loop at
 * a time, from the training thread; as many threads as OpenBLAS uses.
 * Workers sleep on a condition variable between loops. The pool is
 * process-wide, as OpenBLAS's own thread count is: the one piece of
 * shared state besides the signal flags, started on first use and never
 * torn down. A loop started from inside a part runs there, serially.
 */
#include "cnn/ops.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include <sched.h>

enum { MAX_WORKERS = 63 };

/* How long a thread spins for the next loop, or for the others to
 * finish one, before it sleeps on the condition variable: a sleeping
 * core took 20 to 40 us to wake on the virtual machines we measured, as
 * long as a whole small loop, and the loops of a training step come one
 * after another. The spin yields the core at each turn, so OpenBLAS's
 * threads (or another program's) run first when they can: spinning on
 * pause instead made an MLP's threaded GEMMs 10% slower. */
static const long SPIN_NS = 50000;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t start, done;
    int workers;                /* started so far */
    atomic_ulong generation;    /* bumped per loop */
    atomic_int pending;         /* workers still on the current loop */
    int parts;                  /* the current loop's split */
    int n;
    cnn_part_fn *fn;
    void *ctx;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, NULL, NULL};

/* Set on a thread while it runs a part. */
static _Thread_local bool in_part;

static long elapsed_ns(const struct timespec *since)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - since->tv_sec) * 1000000000L +
           (t.tv_nsec - since->tv_nsec);
}

/* Spins while the next loop has not started (worker) or the current one
 * has parts running (caller), for at most SPIN_NS; the callers then
 * wait on the condition variable, under the lock, as before. */
static void spin_for_start(unsigned long seen)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load_explicit(&pool.generation, memory_order_acquire) ==
               seen && elapsed_ns(&t0) < SPIN_NS)
        sched_yield();
}

static void spin_for_done(void)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load_explicit(&pool.pending, memory_order_acquire) > 0 &&
           elapsed_ns(&t0) < SPIN_NS)
        sched_yield();
}

static void run_part(int part, int parts, int n, cnn_part_fn *fn, void *ctx)
{
    int lo = (int)((long long)n * part / parts);
    int hi = (int)((long long)n * (part + 1) / parts);
    in_part = true;
    if (lo < hi)
        fn(ctx, part, lo, hi);
    in_part = false;
}

static void *worker(void *arg)
{
    int part = (int)(size_t)arg;
    unsigned long seen = 0;
    for (;;) {
        spin_for_start(seen);
        pthread_mutex_lock(&pool.lock);
        while (pool.generation == seen)
            pthread_cond_wait(&pool.start, &pool.lock);
        seen = pool.generation;
        if (part >= pool.parts) {
            pthread_mutex_unlock(&pool.lock);
            continue;               /* this loop is split fewer ways */
        }
        int parts = pool.parts, n = pool.n;
        cnn_part_fn *fn = pool.fn;
        void *ctx = pool.ctx;
        pthread_mutex_unlock(&pool.lock);
        run_part(part, parts, n, fn, ctx);
        pthread_mutex_lock(&pool.lock);
        if (--pool.pending == 0)
            pthread_cond_signal(&pool.done);
        pthread_mutex_unlock(&pool.lock);
    }
    return NULL;
}

/* Starts workers up to want - 1 of them; returns how many parts a loop
 * can be split into (1 when threads cannot be made). */
static int ensure_workers(int want)
{
    if (want > MAX_WORKERS + 1)
        want = MAX_WORKERS + 1;
    while (pool.workers < want - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int bad = pthread_create(&t, &attr, worker,
                                 (void *)(size_t)(pool.workers + 1));
        pthread_attr_destroy(&attr);
        if (bad)
            break;
        pool.workers++;
    }
    return pool.workers + 1 < want ? pool.workers + 1 : want;
}

int cnn_parallel_parts(int n, int parts, cnn_part_fn *fn, void *ctx)
{
    if (parts > n)
        parts = n;
    if (parts <= 1 || in_part) {
        if (n > 0)
            fn(ctx, 0, 0, n);
        return 1;
    }
    pthread_mutex_lock(&pool.lock);
    parts = ensure_workers(parts);
    pool.parts = parts;
    pool.n = n;
    pool.fn = fn;
    pool.ctx = ctx;
    pool.pending = parts - 1;
    pool.generation++;
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.lock);

    run_part(0, parts, n, fn, ctx);

    spin_for_done();
    pthread_mutex_lock(&pool.lock);
    while (pool.pending > 0)
        pthread_cond_wait(&pool.done, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    return parts;
}

/* cnn_parallel_for's loops take no part index. */
struct range_call {
    void (*fn)(void *ctx, int lo, int hi);
    void *ctx;
};

static void range_part(void *ctx, int part, int lo, int hi)
{
    const struct range_call *r = ctx;
    (void)part;
    r->fn(r->ctx, lo, hi);
}

void cnn_parallel_for(int n, void (*fn)(void *ctx, int lo, int hi),
                      void *ctx)
{
    struct range_call r = {fn, ctx};
    cnn_parallel_parts(n, cnn_blas_threads(0), range_part, &r);
}

/* Elements per part's unit, and the fewest worth waking the threads
 * for: a handoff costs about what a pass over 64k floats does. */
enum { ELEM_BLOCK = 1 << 13, ELEM_MIN = 1 << 16 };

struct elems_call {
    void (*fn)(void *ctx, size_t lo, size_t hi);
    void *ctx;
    size_t n;
};

static void elems_part(void *ctx, int lo, int hi)
{
    const struct elems_call *e = ctx;
    size_t end = (size_t)hi * ELEM_BLOCK;
    e->fn(e->ctx, (size_t)lo * ELEM_BLOCK, end < e->n ? end : e->n);
}

void cnn_parallel_elems(size_t n, void (*fn)(void *ctx, size_t lo, size_t hi),
                        void *ctx)
{
    size_t blocks = (n + ELEM_BLOCK - 1) / ELEM_BLOCK;
    if (n < ELEM_MIN || blocks > INT_MAX) {
        if (n > 0)
            fn(ctx, 0, n);
        return;
    }
    struct elems_call e = {fn, ctx, n};
    cnn_parallel_for((int)blocks, elems_part, &e);
}
