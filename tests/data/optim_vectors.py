#!/usr/bin/python3
"""Writes optim_vectors.txt, the reference trajectories that
tests/test_optim_ref.c replays through cnn_optim_step.

Every optimizer except Lion runs through torch.optim (written against
PyTorch 1.13). PyTorch 1.13 has no Lion, so lion_step below follows the
paper's algorithm (Chen et al. 2023, Algorithm 2) in plain torch, written
from the paper and not from src/optim/lion.c.

One parameter vector and one gradient sequence, both float32, serve every
case; both go into the file, so the C side needs no generator. Each case
is an optimizer section in our YAML spelling; to_torch() turns it into
torch.optim arguments, so the file and the reference cannot disagree on a
hyperparameter.

Run from anywhere with Debian's python3 (python3-torch):
    /usr/bin/python3 tests/data/optim_vectors.py
"""
import math
import os

import torch

N = 10                     # parameters per case
STEPS = 100
RECORD = (1, 10, 100)      # steps after which the parameters are written

# Each case: (name, optimizer section). Keys are ours (see src/optim/*.c);
# every hyperparameter of every kind appears in at least one case. The
# gradients are of order 1, so an eps of 0.1 is what makes its place in
# the formula (inside or outside the square root) show.
CASES = [
    ("sgd_plain", {"name": "sgd", "lr": 0.1}),
    ("sgd_momentum", {"name": "sgd", "lr": 0.05, "momentum": 0.9,
                      "dampening": 0.3, "weight_decay": 0.01}),
    ("sgd_nesterov", {"name": "sgd", "lr": 0.05, "momentum": 0.8,
                      "nesterov": True, "weight_decay": 0.001}),
    ("adam_default", {"name": "adam", "lr": 0.01}),
    ("adam_custom", {"name": "adam", "lr": 0.01, "betas": [0.8, 0.99],
                     "eps": 0.1, "weight_decay": 0.1}),
    ("adamw_default", {"name": "adamw", "lr": 0.01}),
    ("adamw_decay", {"name": "adamw", "lr": 0.01, "betas": [0.85, 0.995],
                     "eps": 1e-7, "weight_decay": 0.1}),
    ("rmsprop_plain", {"name": "rmsprop", "lr": 0.01}),
    ("rmsprop_momentum", {"name": "rmsprop", "lr": 0.005, "alpha": 0.9,
                          "eps": 1e-6, "momentum": 0.9}),
    ("rmsprop_centered", {"name": "rmsprop", "lr": 0.005, "alpha": 0.95,
                          "centered": True, "momentum": 0.5, "eps": 0.1,
                          "weight_decay": 0.05}),
    ("adagrad_default", {"name": "adagrad", "lr": 0.1}),
    ("adagrad_custom", {"name": "adagrad", "lr": 0.1, "lr_decay": 0.01,
                        "initial_accumulator": 0.5, "weight_decay": 0.02,
                        "eps": 0.1}),
    ("lion_default", {"name": "lion", "lr": 0.0003}),
    ("lion_decay", {"name": "lion", "lr": 0.001, "betas": [0.85, 0.99],
                    "weight_decay": 0.5}),
]

# Our key -> torch.optim's keyword, where they differ.
TORCH_KEY = {"initial_accumulator": "initial_accumulator_value"}

TORCH_CLASS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

# Lion's defaults, from the paper and src/optim/lion.c's documented ones.
LION_DEFAULTS = {"betas": (0.9, 0.99), "weight_decay": 0.0}


def initial_params():
    i = torch.arange(N, dtype=torch.float64)
    p = 1.5 * torch.sin(0.9 * i + 0.4) + 0.1 * i - 0.3
    return p.to(torch.float32)


def gradients():
    """g_t[i] = sin(0.37 t + 1.3 i) (1 + 0.5 cos(0.11 t i)), t = 1..STEPS,
    evaluated in float32."""
    t = torch.arange(1, STEPS + 1, dtype=torch.float32).unsqueeze(1)
    i = torch.arange(N, dtype=torch.float32).unsqueeze(0)
    return torch.sin(0.37 * t + 1.3 * i) * (1 + 0.5 * torch.cos(0.11 * t * i))


def to_torch(section):
    kw = {}
    for key, value in section.items():
        if key == "name":
            continue
        if key == "betas":
            value = tuple(value)
        kw[TORCH_KEY.get(key, key)] = value
    return kw


def lion_step(p, g, m, lr, betas, weight_decay):
    """One step of Lion, the paper's Algorithm 2, in place on p and m."""
    b1, b2 = betas
    p.mul_(1 - lr * weight_decay)              # decoupled weight decay
    c = b1 * m + (1 - b1) * g                  # interpolation
    p.add_(torch.sign(c), alpha=-lr)
    m.mul_(b2).add_(g, alpha=1 - b2)           # momentum after the update
    return c


def run_case(section, p0, grads):
    """Returns {step: parameters} for the steps in RECORD, and for Lion the
    smallest |c| met, so the script can refuse a sign that float rounding
    could flip."""
    p = p0.clone()
    kw = to_torch(section)
    out = {}
    min_c = math.inf
    if section["name"] == "lion":
        kw = {**LION_DEFAULTS, **kw}
        m = torch.zeros_like(p)
        for t in range(1, STEPS + 1):
            c = lion_step(p, grads[t - 1], m, **kw)
            min_c = min(min_c, c.abs().min().item())
            if t in RECORD:
                out[t] = p.clone()
        return out, min_c

    p.requires_grad_(True)
    opt = TORCH_CLASS[section["name"]]([p], **kw)
    for t in range(1, STEPS + 1):
        p.grad = grads[t - 1].clone()
        opt.step()
        if t in RECORD:
            out[t] = p.detach().clone()
    return out, min_c


def yaml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(yaml_value(x) for x in v) + "]"
    return str(v) if isinstance(v, str) else repr(v)


def yaml_flow(section):
    return "{" + ", ".join(f"{k}: {yaml_value(v)}"
                           for k, v in section.items()) + "}"


def floats(values):
    # float32 values as %.9g read back exactly.
    return " ".join("%.9g" % x for x in values.tolist())


RECORD_TEXT = ", ".join(map(str, RECORD))

HEADER = f"""\
# Optimizer reference vectors for tests/test_optim_ref.c.
# Generated by optim_vectors.py (next to this file) with PyTorch {{torch}};
# edit the script, not this file.
#
# Format: one record per line, fields separated by single spaces; lines
# starting with # are comments. Floats are float32 values printed with
# %.9g, so they read back exactly.
#   n N                      parameters per case ({N})
#   steps S                  steps run per case ({STEPS})
#   param0 v1 .. vN          the parameters before step 1 (all cases)
#   grad t v1 .. vN          the gradient given to step t, t = 1..S
#   case NAME                starts a case
#   config {{...}}             its optimizer section, YAML flow mapping in
#                            our keys (lr is the rate passed to each step)
#   after t v1 .. vN         the parameters after step t ({RECORD_TEXT})
#   end                      ends the case
# The reference is torch.optim 1.13 (SGD, Adam, AdamW, RMSprop, Adagrad),
# and Lion as written in the paper (no torch.optim.Lion in 1.13).
"""


def main():
    p0 = initial_params()
    grads = gradients()
    lines = [HEADER.replace("{torch}", torch.__version__).rstrip("\n")]
    lines.append(f"n {N}")
    lines.append(f"steps {STEPS}")
    lines.append("param0 " + floats(p0))
    for t in range(1, STEPS + 1):
        lines.append(f"grad {t} " + floats(grads[t - 1]))

    for name, section in CASES:
        out, min_c = run_case(section, p0, grads)
        # A Lion sign this close to 0 could differ between two correct
        # float32 implementations; pick other numbers if it happens.
        assert min_c > 1e-4, f"{name}: |c| down to {min_c}"
        lines.append(f"case {name}")
        lines.append("config " + yaml_flow(section))
        for t in RECORD:
            lines.append(f"after {t} " + floats(out[t]))
        lines.append("end")

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "optim_vectors.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
