#!/bin/bash
# The resume bar on real data: configs/mlp.yaml for 3 epochs straight,
# then the same run killed at 5 random moments (SIGKILL) and resumed each
# time, then again stopped 5 times with SIGTERM (each stop must exit 75
# and leave a checkpoint): all three model.safetensors must hold
# identical tensor bytes, and metrics.csv the same rows (timing columns
# aside). Skipped (exit 77) when Fashion-MNIST is not installed.
set -u
BIN=${CNN_TRAIN:?set CNN_TRAIN to the cnn-train binary}
ROOT=${CNN_SOURCE_ROOT:?set CNN_SOURCE_ROOT to the repository}
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "no $DATA: skipped"; exit 77; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failed=0
ok() { echo "ok - $1"; }
bad() { echo "not ok - $1"; failed=1; }

ARGS=("$ROOT/configs/mlp.yaml" --set training.epochs=3
      --set training.checkpoint_every=40 --threads 2 --quiet)

start=$(date +%s.%N)
"$BIN" "${ARGS[@]}" --out "$TMP/straight" || bad "the straight run"
took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
echo "# straight run: $took s"

# Random moments within the run's length, from a fixed seed.
RANDOM=7
moment() { awk -v r=$((RANDOM % 90 + 5)) -v t="$took" 'BEGIN { printf "%.2f", r / 100 * t }'; }

interrupt() {       # interrupt DIR SIGNAL
    local dir=$1 sig=$2 i rc
    for i in 1 2 3 4 5; do
        "$BIN" "${ARGS[@]}" --out "$dir" --resume &
        local pid=$!
        sleep "$(moment)"
        local sent=$(date +%s.%N)
        kill "-$sig" "$pid" 2>/dev/null
        wait "$pid"
        rc=$?
        local stop=$(awk -v a="$sent" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
        if [ "$sig" = TERM ]; then
            if [ $rc -eq 75 ] || [ $rc -eq 0 ]; then
                ok "SIGTERM $i: exit $rc after $stop s"
            else
                bad "SIGTERM $i: exit $rc (want 75)"
            fi
            if [ $rc -eq 75 ] && ! ls "$dir"/ckpt-*.safetensors >/dev/null 2>&1; then
                bad "SIGTERM $i left no checkpoint"
            fi
        fi
    done
    "$BIN" "${ARGS[@]}" --out "$dir" --resume || bad "final resume of $dir"
}

interrupt "$TMP/killed" KILL
interrupt "$TMP/termed" TERM

tensors() {         # the data section of a safetensors file, as a hash
    /usr/bin/python3 - "$1" <<'PY'
import hashlib, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
print(hashlib.sha256(b[8 + n:]).hexdigest())
PY
}
rows() {            # metrics.csv without the timing columns
    cut -d, -f1-7,10- "$1"
}

want=$(tensors "$TMP/straight/model.safetensors")
for run in killed termed; do
    got=$(tensors "$TMP/$run/model.safetensors" 2>/dev/null)
    if [ -n "$want" ] && [ "$got" = "$want" ]; then
        ok "$run and resumed: identical tensor bytes"
    else
        bad "$run and resumed: tensor bytes differ"
    fi
    if diff <(rows "$TMP/straight/metrics.csv") <(rows "$TMP/$run/metrics.csv") >/dev/null; then
        ok "$run: metrics.csv has the same rows, none duplicated or missing"
    else
        bad "$run: metrics.csv rows differ"
        diff <(rows "$TMP/straight/metrics.csv") <(rows "$TMP/$run/metrics.csv") | head -5
    fi
done

# A finished run run again: exit 0 at once, saying so.
"$BIN" "${ARGS[@]}" --out "$TMP/straight" --resume 2>"$TMP/again.err"
rc=$?
{ [ $rc -eq 0 ] && tail -n 1 "$TMP/straight/train.log" | grep -q complete; } &&
    ok "re-running a finished run exits 0 and says it is complete" ||
    bad "re-running a finished run (rc $rc)"
exit $failed
