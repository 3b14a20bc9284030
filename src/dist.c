/*
 * The MPI side of data-parallel training. Only this file knows MPI; with
 * CNN_HAVE_MPI unset it compiles to the one-rank identity.
 */
#include "cnn/dist.h"

#include <stdlib.h>
#include <string.h>

#include "cnn_version.h"

#ifdef CNN_HAVE_MPI
#include <limits.h>
#include <mpi.h>

static bool joined;
static int rank_, size_ = 1;

/* Launchers announce themselves in the environment; a plain start is a
 * single process and need not pay for MPI_Init (or meet its warnings). */
static bool launched_by_mpi(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                                       "PMIX_RANK", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return true;
    return false;
}

void cnn_dist_init(int *argc, char ***argv)
{
    if (joined || !launched_by_mpi())
        return;
    if (MPI_Init(argc, argv) != MPI_SUCCESS)
        return;
    joined = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

void cnn_dist_finalize(void)
{
    if (joined)
        MPI_Finalize();
    joined = false;
}

int cnn_dist_rank(void)
{
    return rank_;
}

int cnn_dist_size(void)
{
    return size_;
}

const char *cnn_dist_library(void)
{
    static char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (!version[0]) {
        MPI_Get_library_version(version, &len);
        version[strcspn(version, ",\n")] = '\0';
    }
    return version;
}

/* MPI counts are ints: large buffers go in pieces. */
static void sum(void *v, size_t n, size_t item, MPI_Datatype type)
{
    for (size_t done = 0; size_ > 1 && done < n;) {
        size_t part = n - done < INT_MAX / 2 ? n - done : INT_MAX / 2;
        MPI_Allreduce(MPI_IN_PLACE, (char *)v + done * item, (int)part, type,
                      MPI_SUM, MPI_COMM_WORLD);
        done += part;
    }
}

void cnn_dist_sum_floats(float *v, size_t n)
{
    sum(v, n, sizeof *v, MPI_FLOAT);
}

void cnn_dist_sum_doubles(double *v, size_t n)
{
    sum(v, n, sizeof *v, MPI_DOUBLE);
}

bool cnn_dist_any(bool flag)
{
    int v = flag;
    if (size_ > 1)
        MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    return v != 0;
}

int cnn_dist_min(int v)
{
    if (size_ > 1)
        MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return v;
}

void cnn_dist_bcast_int(int *v, int root)
{
    if (size_ > 1)
        MPI_Bcast(v, 1, MPI_INT, root, MPI_COMM_WORLD);
}

void cnn_dist_bcast_string(char *s, size_t cap, int root)
{
    if (size_ > 1)
        MPI_Bcast(s, (int)cap, MPI_CHAR, root, MPI_COMM_WORLD);
}

void cnn_dist_bcast_doubles(double *v, size_t n, int root)
{
    if (size_ > 1)
        MPI_Bcast(v, (int)n, MPI_DOUBLE, root, MPI_COMM_WORLD);
}

void cnn_dist_abort(int status)
{
    if (joined)
        MPI_Abort(MPI_COMM_WORLD, status);
    exit(status);
}

#else /* one rank, no MPI */

void cnn_dist_init(int *argc, char ***argv)
{
    (void)argc, (void)argv;
}

void cnn_dist_finalize(void)
{
}

int cnn_dist_rank(void)
{
    return 0;
}

int cnn_dist_size(void)
{
    return 1;
}

const char *cnn_dist_library(void)
{
    return NULL;
}

void cnn_dist_sum_floats(float *v, size_t n)
{
    (void)v, (void)n;
}

void cnn_dist_sum_doubles(double *v, size_t n)
{
    (void)v, (void)n;
}

bool cnn_dist_any(bool flag)
{
    return flag;
}

int cnn_dist_min(int v)
{
    return v;
}

void cnn_dist_bcast_int(int *v, int root)
{
    (void)v, (void)root;
}

void cnn_dist_bcast_string(char *s, size_t cap, int root)
{
    (void)s, (void)cap, (void)root;
}

void cnn_dist_bcast_doubles(double *v, size_t n, int root)
{
    (void)v, (void)n, (void)root;
}

void cnn_dist_abort(int status)
{
    exit(status);
}

#endif
