#!/bin/bash
# Data-parallel training under MPI, on the shipped tiny dataset: after
# one step, 2 ranks hold the same weights as 1 process (to float
# tolerance), with plain and with synced batchnorm (and unsynced
# batchnorm differs, so the check can fail); a 2-rank run reaches the
# 1-process accuracy; SIGTERM stops every rank at one checkpoint (exit
# 75) and --resume finishes with exactly the weights and metrics rows of
# an uninterrupted 2-rank run; a config error is reported once. Skipped
# (exit 77) when the binary is built without MPI or mpirun is missing.
#
# Needs $CNN_TRAIN and $CNN_SOURCE_ROOT (meson test sets both).
set -u
BIN=${CNN_TRAIN:?set CNN_TRAIN to the cnn-train binary}
ROOT=${CNN_SOURCE_ROOT:?set CNN_SOURCE_ROOT to the repository}
command -v mpirun >/dev/null || { echo "no mpirun: skipped"; exit 77; }
"$BIN" --version | grep -q "^MPI: .*mpirun" || { echo "built without MPI: skipped"; exit 77; }

# OpenMPI refuses root unless told; 2 ranks may exceed the cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
MPIRUN=(mpirun --oversubscribe)
# OpenMPI leaves its own allocations (operator tables, plugins it has
# unloaded) at MPI_Finalize; under AddressSanitizer that fails every
# rank. Our code's leaks are the single-process tests' business.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
# A machine where mpirun cannot start even a trivial job (no usable
# transport, say) tests nothing of ours: said and skipped.
if ! "${MPIRUN[@]}" -np 2 true >/dev/null 2>&1; then
    echo "mpirun cannot start a 2-process job here: skipped"
    "${MPIRUN[@]}" -np 2 true 2>&1 | head -n 5
    exit 77
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cnn-mpi-XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
. "$ROOT/tests/lib.sh"

# worst A B: the largest relative difference between two weights files.
worst() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    head = json.loads(b[8:8 + n])
    out = {}
    for k, v in head.items():
        if k != '__metadata__':
            s, e = v['data_offsets']
            out[k] = struct.unpack('<%df' % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys()
print('%.3g' % max(abs(x - y) / max(1e-3, abs(x) + abs(y))
                   for k in a for x, y in zip(a[k], b[k])))
PY
}
below() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }

CFG=$ROOT/configs/mlp-tiny.yaml
MLP='model.layers=[flatten, {dense: {units: 128}}, relu, {dense: {units: 10}}]'
CNN='model.layers=[{conv2d: {filters: 4, size: 3}}, {batchnorm: {sync: SYNC}}, relu, {maxpool: {size: 2}}, flatten, {dense: {units: 10}}]'

# --- the first step ----------------------------------------------------------

one_step() {    # one_step NAME RANKS LAYERS
    local name=$1 np=$2 layers=$3
    "${MPIRUN[@]}" -np "$np" "$BIN" "$CFG" --out "$name" --threads 1 --quiet \
        --set "$layers" --set training.max_steps=1 >"$name.log" 2>&1
}
one_step mlp1 1 "$MLP" && one_step mlp2 2 "$MLP"
w=$(worst mlp1/model.safetensors mlp2/model.safetensors 2>/dev/null)
if [ -n "$w" ] && below "$w" 1e-5; then
    pass "first step: 2 ranks agree with 1 process (worst relative difference $w)"
else
    fail "first step: 2 ranks agree with 1 process" "got '$w'" "$(tail -n 5 mlp2.log)"
fi
one_step bn1 1 "${CNN/SYNC/false}"
one_step bns 2 "${CNN/SYNC/true}"
one_step bnl 2 "${CNN/SYNC/false}"
ws=$(worst bn1/model.safetensors bns/model.safetensors 2>/dev/null)
wl=$(worst bn1/model.safetensors bnl/model.safetensors 2>/dev/null)
if [ -n "$ws" ] && [ -n "$wl" ] && below "$ws" 1e-4 && below "$ws" "$wl"; then
    pass "first step with batchnorm: synced 2 ranks agree ($ws), per-rank statistics differ ($wl)"
else
    fail "first step with synced batchnorm" "synced '$ws', per rank '$wl'" "$(tail -n 5 bns.log)"
fi

# --- a whole run -----------------------------------------------------------------

"$BIN" "$CFG" --out full1 --threads 1 --quiet --set "$MLP" 2>/dev/null
"${MPIRUN[@]}" -np 2 "$BIN" "$CFG" --out full2 --threads 1 --quiet --set "$MLP" >full2.log 2>&1
a1=$(json full1/run.json final_test_acc 2>/dev/null)
a2=$(json full2/run.json final_test_acc 2>/dev/null)
if [ -n "$a1" ] && [ -n "$a2" ] &&
   awk -v a="$a1" -v b="$a2" 'BEGIN { d = a - b; exit !(d < 0.02 && d > -0.02) }'; then
    pass "5 epochs: 2 ranks reach $a2, 1 process $a1 (within 2 points)"
else
    fail "5 epochs on 2 ranks reach the 1-process accuracy" "'$a2' vs '$a1'" "$(tail -n 5 full2.log)"
fi
if [ "$(ls full2 | grep -c '^ckpt-')" -ge 1 ] && [ ! -e full2/rank1 ] &&
   [ "$(grep -c 'done:' full2/train.log)" -eq 1 ]; then
    pass "only rank 0 writes: one train.log line per event, checkpoints in one directory"
else
    fail "only rank 0 writes" "$(ls full2)"
fi

# --- SIGTERM and resume --------------------------------------------------------------

ARGS=("$CFG" --threads 1 --quiet --set "$MLP" --set training.checkpoint_every=20
      --set training.epochs=300)
"${MPIRUN[@]}" -np 2 "$BIN" "${ARGS[@]}" --out straight >straight.log 2>&1
# A scheduler signals the ranks themselves: they stop together at one
# checkpoint and mpirun passes on their status, 75. Signalled itself,
# mpirun forwards SIGTERM to the ranks, which do the same, but mpirun
# then exits 1 (OpenMPI's own status for a signalled job).
stop_run() {    # stop_run DIR WHOM: starts a run, signals WHOM once it trains
    "${MPIRUN[@]}" -np 2 "$BIN" "${ARGS[@]}" --out "$1" "${@:3}" >"$1.log" 2>&1 &
    local pid=$! i
    # A busy machine may take a while to start the job: wait for rows.
    for i in $(seq 100); do
        [ -f "$1/metrics.csv" ] && [ "$(wc -l < "$1/metrics.csv")" -ge 5 ] && break
        sleep 0.1
    done
    sleep 0.3
    if [ "$2" = ranks ]; then
        pkill -TERM -f "^$BIN .*--out $1( |\$)"
    else
        kill -TERM "$pid"
    fi
    wait "$pid"
}
stop_run termed ranks
rc=$?
if [ "$rc" -eq 75 ] && ls termed/ckpt-*.safetensors >/dev/null 2>&1 &&
   [ "$(grep -c 'stopped by a signal' termed.log)" -eq 1 ]; then
    pass "SIGTERM to the ranks: one checkpoint, one message, exit 75"
else
    fail "SIGTERM to the ranks: exit 75 with a checkpoint" "exit $rc" "$(tail -n 8 termed.log)"
fi
stop_run viampirun mpirun
rc=$?
if [ "$rc" -ne 0 ] && grep -q 'stopped by a signal' viampirun.log &&
   ls viampirun/ckpt-*.safetensors >/dev/null 2>&1; then
    pass "SIGTERM to mpirun: the ranks checkpoint and stop (mpirun exits $rc)"
else
    fail "SIGTERM to mpirun: the ranks checkpoint and stop" "exit $rc" "$(tail -n 8 viampirun.log)"
fi
"${MPIRUN[@]}" -np 2 "$BIN" "${ARGS[@]}" --out termed --resume >resume.log 2>&1
rc=$?
w=$(worst straight/model.safetensors termed/model.safetensors 2>/dev/null)
rows() { cut -d, -f1-7,10- "$1"; }
if [ "$rc" -eq 0 ] && [ "$w" = 0 ] &&
   diff <(rows straight/metrics.csv) <(rows termed/metrics.csv) >/dev/null; then
    pass "--resume under MPI: the same weights and metrics rows as the uninterrupted run"
else
    fail "--resume under MPI matches the uninterrupted run" "exit $rc, worst '$w'" \
         "$(diff <(rows straight/metrics.csv) <(rows termed/metrics.csv) | head -n 4)" \
         "$(tail -n 5 resume.log)"
fi

# --- errors --------------------------------------------------------------------------

"${MPIRUN[@]}" -np 2 "$BIN" "$CFG" --out bad --set training.epochs=0 >bad.out 2>bad.err
rc=$?
if [ "$rc" -eq 2 ] && [ "$(grep -c 'error:' bad.err)" -eq 1 ] && [ ! -e bad ]; then
    pass "a config error under MPI: exit 2, reported once, no run directory"
else
    fail "a config error under MPI is reported once" "exit $rc" "$(cat bad.err | head -n 6)"
fi

# A rank whose shard has a non-finite loss skips the backward pass with
# the others (synced batchnorm sums across ranks in it); a batch smaller
# than the job is refused.
printf '1,2,0.5\n3e38,3e38,0.5\n1,1,0.2\n2,2,0.1\n' > nan.csv
cat > nan.yaml <<'YAML'
data:
  format: csv
  task: regression
  train: {file: nan.csv}
model:
  layers:
    - residual: {body: [sigmoid, {batchnorm: {sync: true}}], activation: none}
    - dense: {units: 1}
optimizer: {name: sgd, lr: 0.01}
training: {epochs: 2, batch_size: 2, on_nan: skip}
YAML
"${MPIRUN[@]}" -np 2 "$BIN" nan.yaml --out nanrun --quiet >nan.log 2>&1
rc=$?
if [ "$rc" -eq 0 ] && grep -q 'step skipped' nan.log; then
    pass "a non-finite loss on one rank with synced batchnorm: the step is skipped on all"
else
    fail "a non-finite loss on one rank with synced batchnorm" "exit $rc" "$(tail -n 4 nan.log)"
fi
"${MPIRUN[@]}" -np 2 "$BIN" nan.yaml --out nanbad --set training.batch_size=1 >small.out 2>small.err
rc=$?
if [ "$rc" -eq 2 ] && grep -q "smaller than the job's 2 ranks" small.err; then
    pass "a batch smaller than the job: exit 2 with the reason"
else
    fail "a batch smaller than the job is refused" "exit $rc" "$(head -n 3 small.err)"
fi

finish
