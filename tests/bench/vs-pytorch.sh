#!/bin/bash
# Training images/s of cnn-train beside PyTorch on the same machine, in
# one sitting, alternating the two so drift hits both: for each model,
# ROUNDS rounds of (ours at 1 and 2 threads, PyTorch at 1 and 2 threads),
# then medians and the ratio against PyTorch's best thread count.
#
#   tests/bench/vs-pytorch.sh [build/cnn-train] [ROUNDS]
#
# Needs Debian's python3-torch (run by /usr/bin/python3) and the team's
# reference script torch_bench.py, found in $TORCH_BENCH_DIR or
# ../shared/bench beside the repository.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/build/cnn-train}
ROUNDS=${2:-3}
REF=${TORCH_BENCH_DIR:-$ROOT/../shared/bench}
[ -f "$REF/torch_bench.py" ] || { echo "no $REF/torch_bench.py" >&2; exit 2; }

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# The reference trains lenet with Adam (lr 1e-3); so does ours here.
extra() { [ "$1" = lenet ] && echo "--set optimizer.name=adam --set optimizer.lr=0.001"; }

ours() {            # ours MODEL THREADS -> images/s
    "$BIN" bench "$ROOT/configs/$1.yaml" --threads "$2" --json $(extra "$1") \
        --steps "${STEPS:-30}" |
        sed 's/.*"images_per_s": \([0-9.]*\).*/\1/'
}
theirs() {          # theirs MODEL THREADS -> images/s
    (cd "$REF" && OMP_WAIT_POLICY=passive /usr/bin/python3 torch_bench.py \
        --models "$1" --threads "$2" --steps "${STEPS:-30}" --repeats 3) |
        sed -n 's/.*img\/s median *\([0-9.]*\).*/\1/p'
}

printf '%-6s %12s %12s %12s %12s %8s\n' model "ours 1t" "ours 2t" \
    "torch 1t" "torch 2t" ratio
# ours:theirs model names (configs/resnet.yaml is their resnet20).
for pair in ${MODELS:-mlp:mlp lenet:lenet resnet:resnet20}; do
    model=${pair%%:*}
    ref=${pair##*:}
    declare -A runs=()
    for r in $(seq "$ROUNDS"); do
        for t in 1 2; do
            runs[o$t]+="$(ours "$model" "$t") "
            runs[t$t]+="$(theirs "$ref" "$t") "
        done
    done
    o1=$(echo ${runs[o1]} | tr ' ' '\n' | median)
    o2=$(echo ${runs[o2]} | tr ' ' '\n' | median)
    t1=$(echo ${runs[t1]} | tr ' ' '\n' | median)
    t2=$(echo ${runs[t2]} | tr ' ' '\n' | median)
    ratio=$(echo "o = $o1; if ($o2 > o) o = $o2; t = $t1; if ($t2 > t) t = $t2; o / t" |
            bc -l)
    printf '%-6s %12.0f %12.0f %12.0f %12.0f %8.2f\n' "$model" "$o1" "$o2" \
        "$t1" "$t2" "$ratio"
    unset runs
done
