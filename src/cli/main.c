/*
 * cnn-train: dispatch to a subcommand. `cnn-train CONFIG` means
 * `cnn-train train CONFIG`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cnn/dist.h"
#include "cnn/ops.h"
#include "cnn_version.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
};

static const struct command commands[] = {
    {"train", cli_train},
    {"summary", cli_summary},
    {"compare", cli_compare},
    {"plot", cli_plot},
    {"bench", cli_bench},
    {"eval", cli_eval},
    {"predict", cli_predict},
    {"gradcheck", cli_gradcheck},
};

static int run(int argc, char **argv)
{
    if (argc < 2) {
        cli_usage(stderr);
        return 2;
    }
    const char *first = argv[1];
    if (strcmp(first, "--help") == 0 || strcmp(first, "-h") == 0 ||
        strcmp(first, "help") == 0) {
        cli_usage(stdout);
        return 0;
    }
    if (strcmp(first, "--version") == 0 || strcmp(first, "-V") == 0) {
        const char *mpi = cnn_dist_library();
        printf("cnn-train %s\n", CNN_VERSION);
        if (mpi)
            printf("MPI: %s (data-parallel training under mpirun)\n", mpi);
        else
            printf("MPI: not built in (one process; rebuild with MPI "
                   "installed, or -Dmpi=enabled)\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(first, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    return cli_train(argc, argv);
}

/* OpenBLAS's idle threads spin, calling sched_yield, for about 2^28
 * cycles before they sleep; all that time they hold the cores that our
 * own loops between the matrix products (im2col, batchnorm; see
 * cnn_parallel_for) would use. OPENBLAS_THREAD_TIMEOUT=4 makes them
 * sleep at once, 30% more ResNet-20 images per second here. OpenBLAS
 * reads it when it loads, before main: so the program sets it and starts
 * itself again, once, unless the user set it. Not under valgrind, which
 * would not follow the new image. */
static void quiet_blas_threads(char **argv)
{
    const char *preload = getenv("LD_PRELOAD");
    if (getenv("OPENBLAS_THREAD_TIMEOUT") || !cnn_blas_pthreads() ||
        (preload && strstr(preload, "vgpreload")))
        return;
    /* The program's own path, not /proc/self/exe, so that the process
     * keeps its name for ps, pgrep and pkill; and only when its file
     * name is argv[0]'s (not ld.so running it). */
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return;
    self[len] = '\0';
    const char *a = strrchr(argv[0], '/'), *b = strrchr(self, '/');
    a = a ? a + 1 : argv[0];
    b = b ? b + 1 : self;
    if (strcmp(a, b) == 0 && setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1) == 0)
        execv(self, argv);
    /* Still here: go on as we are. */
}

int main(int argc, char **argv)
{
    quiet_blas_threads(argv);
    cnn_dist_init(&argc, &argv);
    int code = run(argc, argv);
    cnn_dist_finalize();
    return code;
}
