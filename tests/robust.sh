#!/bin/bash
# Runs that survive: each exit status (0 done, 1 runtime failure, 2
# usage/config, 3 non-finite, 75 stopped by a signal or run directory
# busy), resume and its refusals, the lock, the stopping rules (max_time,
# early stopping), on_nan skip and rollback, SIGHUP, best.safetensors and
# keep_checkpoints, on configs/mlp-tiny.yaml and the data the repository
# ships (a few seconds in all).
#
# CNN_WRAP, when set, prefixes every cnn-train command, e.g.
#   CNN_WRAP="valgrind -q --leak-check=full --error-exitcode=99"
set -u
BIN=${CNN_TRAIN:?set CNN_TRAIN to the cnn-train binary}
ROOT=${CNN_SOURCE_ROOT:?set CNN_SOURCE_ROOT to the repository}
WRAP=${CNN_WRAP:-}
CONFIG=$ROOT/configs/mlp-tiny.yaml
PY=/usr/bin/python3

TMP=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
failed=0
ok() { echo "ok - $1"; }
bad() { echo "not ok - $1"; failed=1; }
check() {           # check DESCRIPTION COMMAND...: ok when it succeeds
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

ARGS=("$CONFIG" --threads 1 --quiet)
train() { $WRAP "$BIN" "${ARGS[@]}" "$@"; }

# train_bg OUT ARGS...: starts a run in the background; its pid in $bg.
train_bg() {
    local out=$1
    shift
    $WRAP "$BIN" "${ARGS[@]}" --out "$out" "$@" 2>"$out.err" &
    bg=$!
    pids+=("$bg")
}

# until_in FILE PATTERN [SKIP]: waits (up to 60 s) until FILE, past its
# first SKIP lines, holds PATTERN.
until_in() {
    local i
    for ((i = 0; i < 3000; i++)); do
        tail -n "+$((${3:-0} + 1))" "$1" 2>/dev/null | grep -q -- "$2" &&
            return 0
        sleep 0.02
    done
    return 1
}

# after_resume LOG PATTERN: PATTERN appears after the last "resuming".
after_resume() {
    awk '/resuming from/ { n = NR } { line[NR] = $0 }
         END { for (i = n + 1; i <= NR; i++) print line[i] }' "$1" |
        grep -q -- "$2"
}

# expect_rc WANT GOT DESCRIPTION [ERRFILE PATTERN...]: the exit status,
# then each PATTERN (extended regex) in ERRFILE.
expect_rc() {
    local want=$1 got=$2 what=$3 file=${4:-}
    local p miss=
    if [ -n "$file" ]; then
        shift 4
        for p in "$@"; do
            grep -Eq -- "$p" "$file" || miss="$miss '$p'"
        done
    fi
    if [ "$got" -eq "$want" ] && [ -z "$miss" ]; then
        ok "$what"
    else
        bad "$what (exit $got, want $want${miss:+; not in output:$miss})"
        [ -n "$file" ] && sed 's/^/#   /' "$file" | tail -n 5
    fi
}

complete_said() { tail -n 1 "$1/train.log" | grep -q "complete"; }
ckpts() { ls "$1" | grep -c '^ckpt-.*\.safetensors$'; }

# st_field FILE KEY: a metadata value of a safetensors file.
st_field() {
    "$PY" - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
print(json.loads(b[8:8 + n])["__metadata__"][sys.argv[2]])
PY
}

# same_weights BEST CKPT: the weights of BEST are the first tensors of
# the checkpoint CKPT, byte for byte.
same_weights() {
    "$PY" - "$1" "$2" <<'PY'
import struct, sys
def data(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return b[8 + n:]
w, c = data(sys.argv[1]), data(sys.argv[2])
sys.exit(0 if len(w) > 0 and c[:len(w)] == w else 1)
PY
}

# --- 0: a run finishes; run again, it is complete --------------------------

# Every checkpoint of the base run is kept, for the resume tests below.
BASE=$TMP/base
KEEPALL=(--set training.keep_checkpoints=100)
train --out "$BASE" "${KEEPALL[@]}" 2>"$TMP/base.err"
expect_rc 0 $? "exit 0: a run finishes" "$TMP/base.err"
check "a finished run leaves model.safetensors and run.json" \
    test -s "$BASE/model.safetensors" -a -s "$BASE/run.json"
before=$(md5sum "$BASE"/*.safetensors | md5sum)
train --out "$BASE" "${KEEPALL[@]}" 2>"$TMP/again.err"
expect_rc 0 $? "exit 0: re-running a finished run" "$TMP/again.err"
check "re-running a finished run says it is complete" complete_said "$BASE"
train --out "$BASE" "${KEEPALL[@]}" --resume 2>"$TMP/again.err"
expect_rc 0 $? "exit 0: --resume of a finished run" "$TMP/again.err"
check "--resume of a finished run says it is complete" complete_said "$BASE"
check "re-running a finished run changes no weights" \
    test "$before" = "$(md5sum "$BASE"/*.safetensors | md5sum)"

# best.safetensors: the weights at the end of the epoch with the best
# test accuracy (the first such epoch), as the checkpoint there holds.
best_step=$(awk -F, 'NR > 1 && $7 != "" && ($7 + 0 > best || !seen) {
                         best = $7 + 0; step = $2; seen = 1 }
                     END { print step }' "$BASE/metrics.csv")
got_step=$(st_field "$BASE/best.safetensors" steps 2>/dev/null)
check "best.safetensors is from the best epoch (step $best_step)" \
    test -n "$best_step" -a "$got_step" = "$best_step"
check "best.safetensors holds the weights of that step's checkpoint" \
    same_weights "$BASE/best.safetensors" \
    "$BASE/ckpt-$(printf %09d "${best_step:-0}").safetensors"

# --- 1: runtime failures ---------------------------------------------------

train --out /dev/null/run 2>"$TMP/e1.err"
expect_rc 1 $? "exit 1: --out under /dev/null" "$TMP/e1.err" "/dev/null/run"
touch "$TMP/plain-file"
train --out "$TMP/plain-file/run" 2>"$TMP/e1.err"
expect_rc 1 $? "exit 1: --out inside a regular file" "$TMP/e1.err" \
    "$TMP/plain-file/run"

# A full disk, as near as a user can make one: a file size limit (with
# SIGXFSZ ignored, writes fail with EFBIG). Checkpoints are ~800 KB.
FULL=$TMP/full
train --out "$FULL" --set training.epochs=1 2>/dev/null
cp "$FULL/ckpt-000000032.safetensors" "$TMP/ckpt32.copy"
(trap '' XFSZ; ulimit -f 600; train --out "$FULL" --set training.epochs=3 \
    --resume) 2>"$TMP/full.err"
expect_rc 1 $? "exit 1: a checkpoint that does not fit" "$TMP/full.err" \
    "$FULL/ckpt-[0-9]+\.safetensors" "File too large"
check "the previous checkpoint is untouched after the failed write" \
    cmp -s "$TMP/ckpt32.copy" "$FULL/ckpt-000000032.safetensors"
check "no temporary file is left behind" \
    test -z "$(ls "$FULL" | grep tmp)"

# --- 2: usage and config errors --------------------------------------------

train --out "$TMP/e2" --set training.epochs=0 2>"$TMP/e2.err"
expect_rc 2 $? "exit 2: a bad config value" "$TMP/e2.err" "training\.epochs"
check "a bad config writes no run directory" test ! -e "$TMP/e2"
# The shipped config with data.dir made absolute and one unknown key.
sed "s|dir: \.\./data|dir: $ROOT/data|" "$CONFIG" >"$TMP/bad.yaml"
echo "  bogus: 3" >>"$TMP/bad.yaml"
line=$(wc -l <"$TMP/bad.yaml")
$WRAP "$BIN" "$TMP/bad.yaml" --out "$TMP/e2" --quiet 2>"$TMP/e2.err"
expect_rc 2 $? "exit 2: an unknown key, located" "$TMP/e2.err" \
    "bad\.yaml:$line:3: .*training\.bogus"
train --out "$BASE" --resume --force 2>"$TMP/e2.err"
expect_rc 2 $? "exit 2: --resume with --force" "$TMP/e2.err" "contradict"

# --- 75: SIGTERM, the lock, an unfinished run -------------------------------

LONG=$TMP/long
train_bg "$LONG" --set training.epochs=60
long=$bg
until_in "$LONG/train.log" "step=" || bad "the long run never logged a step"
# Busy is temporary (cnn-train(1), EXIT STATUS): 75, naming the holder.
train --out "$LONG" --set training.epochs=60 2>"$TMP/lock.err"
expect_rc 75 $? "exit 75: a second cnn-train on a locked run directory" \
    "$TMP/lock.err" "in use by another cnn-train \(process $long\)"
kill -TERM "$long"
wait "$long"
expect_rc 75 $? "exit 75: SIGTERM mid-run" "$LONG.err" "stopped by a signal"
check "SIGTERM leaves a checkpoint past step 0" \
    test "$(ls "$LONG" | grep '^ckpt-' | grep -vc 'ckpt-000000000\.')" -ge 1
check "SIGTERM leaves no run.json" test ! -e "$LONG/run.json"
train --out "$LONG" --set training.epochs=60 2>"$TMP/e2.err"
expect_rc 2 $? "exit 2: an unfinished run without --resume or --force" \
    "$TMP/e2.err" "unfinished" "--resume"
train --out "$LONG" --set training.epochs=60 --resume 2>"$TMP/res.err"
expect_rc 0 $? "exit 0: the stopped run resumed to the end" "$TMP/res.err"
check "the resumed run wrote run.json" test -s "$LONG/run.json"
check "the resumed run logged where it resumed" \
    grep -q "resuming from .*ckpt-" "$LONG/train.log"

# --- 3: non-finite values ---------------------------------------------------

train --out "$TMP/nan" --set optimizer.lr=1e6 2>"$TMP/nan.err"
expect_rc 3 $? "exit 3: a loss that explodes" "$TMP/nan.err" \
    "non-finite.* step [0-9]+ .*layer [a-z]+_[0-9]+"

# The last good checkpoint survives: extend the finished one-epoch run
# of $FULL with an lr that explodes at once.
NANR=$TMP/nan-resume
cp -a "$FULL" "$NANR"
rm -f "$NANR"/*tmp*
(cd "$NANR" && md5sum ckpt-*.safetensors) >"$TMP/nan.sums"
train --out "$NANR" --set training.epochs=3 --set optimizer.lr=1e6 \
    --resume 2>"$TMP/nan.err"
expect_rc 3 $? "exit 3: a resumed run that explodes" "$TMP/nan.err" \
    "step 3[3-9]|step [4-9][0-9]" "layer"
check "the last good checkpoint is kept byte for byte, no other added" \
    diff -q "$TMP/nan.sums" <(cd "$NANR" && md5sum ckpt-*.safetensors)

# on_nan: skip: the run goes on, metrics.csv counts what it skipped.
train --out "$TMP/skip" --set optimizer.lr=100 --set training.epochs=2 \
    --set training.on_nan=skip 2>"$TMP/skip.err"
expect_rc 0 $? "on_nan skip: the run finishes" "$TMP/skip.err" "skipped"
skipped=$(awk -F, 'NR > 1 && $11 != "" && $11 + 0 > m { m = $11 + 0 }
                   END { print m + 0 }' "$TMP/skip/metrics.csv")
check "on_nan skip: metrics.csv skipped_steps > 0 (got $skipped)" \
    test "$skipped" -gt 0
check "on_nan skip: metrics.csv names the column" \
    grep -q "skipped_steps" "$TMP/skip/metrics.csv"

# on_nan: rollback: back to the last good checkpoint with lr halved each
# time, at most max_rollbacks times, then exit 3.
ROLL=$TMP/roll
train --out "$ROLL" --set optimizer.lr=100 --set training.on_nan=rollback \
    --set training.max_rollbacks=2 2>"$TMP/roll.err"
expect_rc 3 $? "on_nan rollback: exit 3 once max_rollbacks are spent" \
    "$TMP/roll.err"
check "on_nan rollback: two rollbacks logged" \
    test "$(grep -c "rolled back" "$ROLL/train.log")" -eq 2
check "on_nan rollback: the first halves the learning rate" \
    grep -q "rolled back to step [0-9]* with the learning rate times 0.5 " \
    "$ROLL/train.log"
check "on_nan rollback: the second halves it again" \
    grep -q "learning rate times 0.25 " "$ROLL/train.log"

# --- resume: fallback, refusals, config changes, a given checkpoint ---------

TRUNC=$TMP/trunc
cp -a "$BASE" "$TRUNC"
newest=$(ls "$TRUNC"/ckpt-*.safetensors | tail -n 1)
truncate -s 1000 "$newest"
train --out "$TRUNC" "${KEEPALL[@]}" --resume 2>"$TMP/trunc.err"
expect_rc 0 $? "--resume past a truncated newest checkpoint" \
    "$TMP/trunc.err" "warning: $newest: .*previous"
check "... resumed from the one before it" \
    grep -q "resuming from .*ckpt-000000128" "$TRUNC/train.log"

# One damaged byte in the newest checkpoint's header (a tensor name) is
# damage too: --resume names it and falls back.
NAME=$TMP/name
cp -a "$BASE" "$NAME"
newest=$(ls "$NAME"/ckpt-*.safetensors | tail -n 1)
at=$(grep -abo '"dense_1.weight"' "$newest" | head -n 1 | cut -d: -f1)
printf 'W' | dd of="$newest" bs=1 seek=$((at + 9)) conv=notrunc 2>/dev/null
train --out "$NAME" "${KEEPALL[@]}" --resume 2>"$TMP/name.err"
expect_rc 0 $? "--resume past a newest checkpoint with a damaged name" \
    "$TMP/name.err" "warning: $newest: .*previous"

MODEL=$TMP/model
cp -a "$BASE" "$MODEL"
train --out "$MODEL" "${KEEPALL[@]}" --resume \
    --set 'model.layers[1].dense.units=64' 2>"$TMP/model.err"
expect_rc 2 $? "--resume with a changed model is refused" "$TMP/model.err" \
    "dense_1\.weight"

LR=$TMP/lr
cp -a "$BASE" "$LR"
train --out "$LR" "${KEEPALL[@]}" --resume --set optimizer.lr=0.02 \
    --set training.epochs=6 2>"$TMP/lr.err"
expect_rc 0 $? "--resume with a changed lr and more epochs" "$TMP/lr.err" \
    "optimizer\.lr: 0\.05 -> 0\.02" "training\.epochs: 5 -> 6"
check "... printed before the run went on" \
    test "$(grep -n 'differs' "$LR/train.log" | head -n 1 | cut -d: -f1)" \
    -lt "$(grep -n 'epoch=6' "$LR/train.log" | head -n 1 | cut -d: -f1)"

GIVEN=$TMP/given
cp -a "$BASE" "$GIVEN"
train --out "$GIVEN" "${KEEPALL[@]}" \
    --resume "$GIVEN/ckpt-000000064.safetensors" 2>"$TMP/given.err"
expect_rc 0 $? "--resume PATH" "$TMP/given.err"
check "--resume PATH resumed from PATH" \
    grep -q "resuming from $GIVEN/ckpt-000000064.safetensors" \
    "$GIVEN/train.log"
check "... and trained on from its step" \
    after_resume "$GIVEN/train.log" "epoch=3 step=70 "

# A finished run extended with --resume, killed before its new end, is
# not complete: running it again must not say so.
EXT=$TMP/extended
cp -a "$FULL" "$EXT"
rm -f "$EXT"/*tmp*
seen=$(wc -l <"$EXT/train.log")
train_bg "$EXT" --set training.epochs=60 --resume
until_in "$EXT/train.log" "epoch=3 " "$seen" ||
    bad "the extended run never got to epoch 3"
kill -KILL "$bg"
wait "$bg" 2>/dev/null
train --out "$EXT" --set training.epochs=60 2>"$TMP/ext.err"
rc=$?
if [ $rc -eq 0 ] && complete_said "$EXT"; then
    bad "an extended run killed at epoch 3 of 60 is called complete"
else
    ok "an extended, killed run is not called complete (exit $rc)"
fi

# --- stopping rules ---------------------------------------------------------

MAXT=$TMP/maxtime
train --out "$MAXT" --set training.epochs=200 --set training.max_time=1s \
    2>"$TMP/maxt.err"
expect_rc 0 $? "max_time 1s: a long run stops cleanly" "$TMP/maxt.err"
check "max_time: run.json written" test -s "$MAXT/run.json"
check "max_time: the log says the budget is spent" \
    grep -q "time budget" "$MAXT/train.log"
check "max_time: stopped well before 200 epochs" \
    test -z "$(grep 'epoch 200/200' "$MAXT/train.log")"
train --out "$MAXT" --set training.epochs=200 --set training.max_time=1s \
    --resume 2>"$TMP/maxt.err"
expect_rc 0 $? "max_time: --resume afterwards" "$TMP/maxt.err"
check "max_time: --resume afterwards says complete" complete_said "$MAXT"

ES=$TMP/early
train --out "$ES" --set \
    'training.early_stopping={metric: test_loss, patience: 0, min_delta: 10}' \
    2>"$TMP/es.err"
expect_rc 0 $? "early stopping: exit 0" "$TMP/es.err"
check "early stopping: stopped after the second epoch" \
    grep -q '"epochs": 2,' "$ES/run.json"
check "early stopping: logged" grep -q "early stopping" "$ES/train.log"
check "early stopping: no epoch 3" test -z "$(grep 'epoch=3 ' "$ES/train.log")"

# --- SIGHUP, keep_checkpoints -----------------------------------------------

HUP=$TMP/hup
train_bg "$HUP" --set training.epochs=30
until_in "$HUP/train.log" "step=" || bad "the SIGHUP run never logged a step"
kill -HUP "$bg"
until_in "$HUP/train.log" "(SIGHUP)"
wait "$bg"
expect_rc 0 $? "SIGHUP: the run goes on to exit 0" "$HUP.err"
check "SIGHUP: a checkpoint was written and logged" \
    grep -q "checkpoint at step [0-9]* (SIGHUP)" "$HUP/train.log"
check "SIGHUP: run.json written at the end" test -s "$HUP/run.json"

KEEP=$TMP/keep1
train --out "$KEEP" --set training.keep_checkpoints=1 \
    --set training.checkpoint_every=7 2>"$TMP/keep.err"
expect_rc 0 $? "keep_checkpoints 1: exit 0" "$TMP/keep.err"
check "keep_checkpoints 1: one checkpoint at the end ($(ckpts "$KEEP"))" \
    test "$(ckpts "$KEEP")" -eq 1
check "keep_checkpoints 1: it is the last step's" \
    test -e "$KEEP/ckpt-000000160.safetensors"

# The test split's IDX files are read on a thread beside the training
# split's: a damaged test file is the one named, and when both are
# damaged the training file is, as when they were read in turn.
head -c 2000 "$ROOT/data/fashion-mnist-tiny/t10k-images-idx3-ubyte.gz" \
    > "$TMP/bad-test.gz"
head -c 3000 "$ROOT/data/fashion-mnist-tiny/train-images-idx3-ubyte.gz" \
    > "$TMP/bad-train.gz"
train --out "$TMP/badtest" --set data.test.images="$TMP/bad-test.gz" \
    2>"$TMP/badtest.err"
expect_rc 2 $? "damaged test images: exit 2, the file named" \
    "$TMP/badtest.err" "bad-test.gz: error: corrupt file"
check "damaged test images: no run directory" test ! -e "$TMP/badtest"
train --out "$TMP/badboth" --set data.test.images="$TMP/bad-test.gz" \
    --set data.train.images="$TMP/bad-train.gz" 2>"$TMP/badboth.err"
expect_rc 2 $? "damaged training and test images: the training file named" \
    "$TMP/badboth.err" "bad-train.gz: error"
check "damaged training and test images: one message" \
    test "$(grep -c error "$TMP/badboth.err")" -eq 1

exit $failed
