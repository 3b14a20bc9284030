/*
 * cnn-train summary CONFIG: the layer table (name, kind, output shape,
 * parameters, forward FLOPs per example, activation memory for the
 * batch) and totals, on stdout, with the activation memory the other
 * setting of training.checkpoint_activations would take. Reads no data
 * beyond the image header.
 */
#include <stdio.h>

#include "cli.h"
#include <stdlib.h>

#include "cnn/net.h"
#include "cnn/optim.h"
#include "cnn/train.h"

static void human(double v, const char *unit, char *buf, size_t cap)
{
    static const char *const prefix[] = {"", "K", "M", "G", "T"};
    int i = 0;
    while (v >= 1000.0 && i < 4) {
        v /= 1000.0;
        i++;
    }
    snprintf(buf, cap, i ? "%.2f %s%s" : "%.0f %s%s", v, prefix[i], unit);
}

/* other: activation bytes with checkpoint_activations flipped; half:
 * with precision bf16 (0 when the config has it already). */
static void print_table(const struct cnn_config *cfg, struct cnn_net *net,
                        size_t frozen, size_t other, size_t half)
{
    char shape[48], flops[32], mem[32];
    printf("model %s: input %dx%dx%d, batch %d\n\n", cfg->name, net->in.c,
           net->in.h, net->in.w, net->batch);
    printf("%-3s %-18s %-15s %-12s %12s %14s %12s\n", "#", "name", "kind",
           "output", "params", "FLOPs/example", "activations");

    size_t params = 0;
    for (int i = 0; i < net->n_layers; i++) {
        struct cnn_layer *l = &net->layers[i];
        size_t n = cnn_layer_param_count(l, NULL);
        params += n;
        snprintf(shape, sizeof shape, "%dx%dx%d", l->out.c, l->out.h,
                 l->out.w);
        human(l->flops, "", flops, sizeof flops);
        cli_format_bytes((double)net->batch * cnn_shape_size(l->out) *
                         sizeof(float),
              mem, sizeof mem);
        printf("%-3d %-18s %-15s %-12s %12zu %14s %12s\n", i + 1, l->name,
               l->kind->name, shape, n, flops, mem);
    }

    human(cnn_net_flops(net), "FLOP", flops, sizeof flops);
    /* Every buffer forward writes, nested stacks included. */
    cli_format_bytes((double)cnn_net_activation_bytes(net), mem, sizeof mem);
    char pmem[32];
    cli_format_bytes((double)params * sizeof(float), pmem, sizeof pmem);
    printf("\ntotal parameters:        %zu (%s), %zu trainable\n", params,
           pmem, params - frozen);
    printf("forward per example:     %s\n", flops);
    printf("training step estimate:  3x forward per example\n");
    printf("activations, batch %-5d %s\n", net->batch, mem);
    cli_format_bytes((double)cnn_net_training_bytes(net), mem, sizeof mem);
    printf("  %-22s %s%s\n", "with their gradients", mem,
           cfg->training.bf16 ? " (precision: bf16)" : "");
    if (half) {
        cli_format_bytes((double)half, mem, sizeof mem);
        printf("  %-22s %s (precision: bf16)\n", "both, in bfloat16", mem);
    }
    bool on = cfg->training.checkpoint_activations;
    if (other == 0 || other == cnn_net_activation_bytes(net))
        return;
    cli_format_bytes((double)other, mem, sizeof mem);
    printf("  %-22s %s (checkpoint_activations: %s)\n",
           on ? "without checkpointing" : "with checkpointing", mem,
           on ? "false" : "true");
}

/* Activation bytes of the model built with these options; 0 when it
 * does not build. */
static size_t bytes_with(const struct cnn_config *cfg, struct cnn_shape in,
                         struct cnn_net_opts flip, bool gradients)
{
    struct cnn_net net;
    struct cnn_error err = {0};
    size_t bytes = 0;
    if (cnn_net_build_opts(&net, cfg->model_layers, in,
                           (int)cfg->training.batch_size, &flip,
                           &err) == CNN_OK)
        bytes = gradients ? cnn_net_training_bytes(&net)
                          : cnn_net_activation_bytes(&net);
    cnn_net_free(&net);
    return bytes;
}

int cli_summary(int argc, char **argv)
{
    struct cli_opts opts;
    int rc = cli_parse(argc, argv, "summary", &opts);
    if (rc >= 0)
        return rc;

    struct cnn_config cfg;
    struct cnn_net net = {0};
    struct cnn_shape in;
    struct cnn_error err = {0};
    enum cnn_status st = cli_load_config(&opts, &cfg, &err);
    if (st == CNN_OK)
        st = cnn_config_input_shape(&cfg, &in, &err);
    struct cnn_net_opts build = {
        .checkpoint = st == CNN_OK && cfg.training.checkpoint_activations,
        .bf16 = st == CNN_OK && cfg.training.bf16};
    if (st == CNN_OK)
        st = cnn_net_build_opts(&net, cfg.model_layers, in,
                                (int)cfg.training.batch_size, &build, &err);
    /* The optimizer section is checked too, as training would. */
    struct cnn_optim optim = {0};
    int n_groups = 0;
    struct cnn_param_group *groups = st == CNN_OK ?
        cnn_net_param_groups(&net, &n_groups) : NULL;
    if (st == CNN_OK)
        st = cnn_optim_create(&optim, cfg.optim.node, groups, n_groups,
                              net.n_params, &err);
    cnn_optim_free(&optim);
    size_t frozen = 0;
    for (int i = 0; i < n_groups; i++)
        if (groups[i].frozen)
            frozen += groups[i].count;
    free(groups);
    if (st == CNN_OK) {
        /* The same model the other ways it could keep activations. */
        struct cnn_net_opts other = {.checkpoint = !build.checkpoint},
                            half = {.bf16 = true};
        print_table(&cfg, &net, frozen,
                    build.bf16 ? 0 : bytes_with(&cfg, in, other, false),
                    build.bf16 ? 0 : bytes_with(&cfg, in, half, true));
    }
    cnn_net_free(&net);
    cnn_config_free(&cfg);
    return st == CNN_OK ? 0 : cli_report(&err);
}
