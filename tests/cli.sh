#!/bin/bash
# End-to-end tests of the cnn-train binary on the shipped tiny dataset
# (data/fashion-mnist-tiny, 2000 train / 500 test images) and
# configs/mlp-tiny.yaml: options and exit codes, the run directory and
# its files, reproducibility, refusal to overwrite, the safetensors
# file, summary, and one bad input of each kind, which must exit 2 with
# one message naming the file and leave no run directory behind; then
# compare and plot over two short runs, with and without run.json, and
# broken run directories (exit 2, one message naming the file); then
# activation checkpointing (summary's figures, the same run either way);
# gradcheck, grad_stats.csv (its rows, and across SIGTERM, SIGKILL and
# --resume) and plot --grads.
#
# Needs $CNN_TRAIN (the binary) and $CNN_SOURCE_ROOT (the repository);
# meson test sets both. Prints "ok - ..." or "not ok - ..." per check
# and exits 1 if any failed. Runs in well under a minute.
set -u

BIN=${CNN_TRAIN:?set CNN_TRAIN to the cnn-train binary}
ROOT=${CNN_SOURCE_ROOT:?set CNN_SOURCE_ROOT to the repository}
CFG=$ROOT/configs/mlp-tiny.yaml
DATA=$ROOT/data/fashion-mnist-tiny
TRAIN_IMAGES=$DATA/train-images-idx3-ubyte.gz
TRAIN_LABELS=$DATA/train-labels-idx1-ubyte.gz
TEST_IMAGES=$DATA/t10k-images-idx3-ubyte.gz
TEST_LABELS=$DATA/t10k-labels-idx1-ubyte.gz

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cnn-cli-XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

. "$ROOT/tests/lib.sh"

# column FILE NAME: prints column NAME of a CSV file, header skipped.
column() {
    awk -F, -v want="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == want) c = i; next }
        { print $c }' "$1"
}

# The loss columns of metrics.csv: everything but images_per_s and
# elapsed_s, which depend on timing.
losses() {
    cut -d, -f1-7 "$1"
}

# --- options ----------------------------------------------------------------

run help "$BIN" --help
expect_rc help 0 "--help exits 0"
if grep -q -- "--set" "$TMP/help.out"; then
    pass "--help mentions --set on stdout"
else
    fail "--help mentions --set on stdout"
fi

run version "$BIN" --version
expect_rc version 0 "--version exits 0"
if grep -Eq '^cnn-train [0-9]+\.[0-9]+' "$TMP/version.out"; then
    pass "--version prints 'cnn-train X.Y'"
else
    fail "--version prints 'cnn-train X.Y'" "got: $(cat "$TMP/version.out")"
fi

run noargs "$BIN"
expect_rc noargs 2 "no arguments exits 2"

run threads0 "$BIN" train "$CFG" --threads 0 --out "$TMP/never"
expect_rc threads0 2 "--threads 0 exits 2"
run seedneg "$BIN" train "$CFG" --seed -1 --out "$TMP/never"
expect_rc seedneg 2 "--seed -1 exits 2"
run seedword "$BIN" train "$CFG" --seed abc --out "$TMP/never"
expect_rc seedword 2 "--seed abc exits 2"
run badopt "$BIN" train "$CFG" --bogus --out "$TMP/never"
expect_rc badopt 2 "an unknown option exits 2"
run twocfg "$BIN" train "$CFG" "$CFG" --out "$TMP/never"
expect_rc twocfg 2 "two configs exit 2"
if [ -e "$TMP/never" ]; then
    fail "option errors create no run directory"
else
    pass "option errors create no run directory"
fi

# --- a run from another directory -------------------------------------------

mkdir -p "$TMP/cwd"
cd "$TMP/cwd" || exit 1

run main "$BIN" train "$CFG" --out main
expect_rc main 0 "train mlp-tiny from another directory exits 0"
all=1
for f in config.yaml metrics.csv train.log model.safetensors run.json; do
    if [ ! -s "main/$f" ]; then
        all=0
        fail "the run directory holds $f"
    fi
done
[ $all -eq 1 ] && pass "the run directory holds all five files"
# Start-up is logged before the first step, its parts no more than the
# whole (all from the clock, so only their order is checked).
if awk '/ started in [0-9.]+ s: data [0-9.]+ s, model [0-9.]+ s$/ {
            n++; t = $4; d = $7; m = $10
            if (d + m > t + 0.011 || t <= 0) bad = 1 }
        END { exit !(n == 1 && !bad) }' main/train.log; then
    pass "train.log gives the start-up time once, with its parts"
else
    fail "train.log gives the start-up time once, with its parts"
fi
# Each epoch's line gives the share of its steps' time spent loading
# batches, a percentage.
epoch_lines=$(grep -c " epoch [0-9]*/[0-9]*: " main/train.log)
shares=$(grep -cE " epoch [0-9]+/[0-9]+: .*; data (100|[0-9]{1,2})\.[0-9]% of \
the epoch\)$" main/train.log)
if [ "$epoch_lines" -gt 0 ] && [ "$shares" = "$epoch_lines" ]; then
    pass "every epoch line in train.log gives its data loading share"
else
    fail "every epoch line in train.log gives its data loading share"
fi
if /usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
assert d["optimizer"] == "sgd" and d["steps"] > 0 and d["params"] > 0
assert 0 < d["best_test_acc"] <= 1 and d["optimizer_state_bytes"] > 0' \
        main/run.json 2>/dev/null; then
    pass "run.json is valid JSON with the run's figures"
else
    fail "run.json is valid JSON with the run's figures"
fi

header=$(head -n 1 main/metrics.csv 2>/dev/null)
if [[ $header == epoch,step,lr,train_loss* ]]; then
    pass "metrics.csv header starts with epoch,step,lr,train_loss"
else
    fail "metrics.csv header starts with epoch,step,lr,train_loss" \
         "got: $(head -n 1 main/metrics.csv 2>/dev/null)"
fi

acc=$(column main/metrics.csv test_acc 2>/dev/null | tail -n 1)
if awk -v a="${acc:-0}" 'BEGIN { exit !(a > 0.70) }'; then
    pass "final test_acc $acc > 0.70"
else
    fail "final test_acc > 0.70" "got '$acc'"
fi

evals=$(column main/metrics.csv test_acc 2>/dev/null | grep -c .)
epochs=$(awk '/^ *epochs:/ { print $2 }' "$CFG")
if [ "$evals" = "$epochs" ]; then
    pass "one evaluation row per epoch ($epochs)"
else
    fail "one evaluation row per epoch" "got $evals rows for $epochs epochs"
fi

# The saved config names the same data from wherever it is read.
run reload "$BIN" train main/config.yaml --set training.epochs=1 --out reload
expect_rc reload 0 "the run's config.yaml trains again, as saved"

# A relative config path from elsewhere: data paths follow the config.
rel=$(realpath --relative-to="$TMP/cwd" "$CFG")
run relcfg "$BIN" train "$rel" --set training.epochs=1 --out relcfg
expect_rc relcfg 0 "a relative config path ($rel) from another directory"

# --- same command, two spellings --------------------------------------------

run implicit "$BIN" "$CFG" --set training.epochs=1 --out implicit
expect_rc implicit 0 "cnn-train CONFIG exits 0"
run explicit "$BIN" train "$CFG" --set training.epochs=1 --out explicit
expect_rc explicit 0 "cnn-train train CONFIG exits 0"
if [ -f implicit/metrics.csv ] && [ -f explicit/metrics.csv ] &&
   diff <(losses implicit/metrics.csv) <(losses explicit/metrics.csv) \
       >/dev/null &&
   cmp -s implicit/config.yaml explicit/config.yaml; then
    pass "cnn-train CONFIG equals cnn-train train CONFIG"
else
    fail "cnn-train CONFIG equals cnn-train train CONFIG"
fi

evals=$(column explicit/metrics.csv test_acc 2>/dev/null | grep -c .)
if [ "$evals" = 1 ]; then
    pass "--set training.epochs=1 gives one evaluation row"
else
    fail "--set training.epochs=1 gives one evaluation row" "got $evals"
fi
if grep -q '^  epochs: 1$' explicit/config.yaml 2>/dev/null; then
    pass "config.yaml records the --set value"
else
    fail "config.yaml records the --set value"
fi

# --- the default run directory ----------------------------------------------

mkdir -p "$TMP/def"
cd "$TMP/def" || exit 1
run default "$BIN" "$CFG" --set training.epochs=1
expect_rc default 0 "a run without --out exits 0"
desc="the default run directory is runs/mlp-tiny under the cwd"
if [ -f runs/mlp-tiny/metrics.csv ] &&
   [ -f runs/mlp-tiny/model.safetensors ]; then
    pass "$desc"
else
    fail "$desc" \
         "found: $(find . -maxdepth 3 | tr '\n' ' ')"
fi

# A data directory typed on the command line is relative to the current
# directory, like any other argument, not to the config's directory.
cd "$DATA/.." || exit 1
run setdir "$BIN" "$CFG" --set training.epochs=1 \
    --set data.dir="$(basename "$DATA")" --out "$TMP/setdir"
expect_rc setdir 0 "--set data.dir=DIR resolves DIR against the cwd"
cd "$TMP/cwd" || exit 1

# --- seeds ------------------------------------------------------------------

run seed5a "$BIN" "$CFG" --set training.epochs=2 --seed 5 --out seed5a
run seed5b "$BIN" "$CFG" --set training.epochs=2 --seed 5 --out seed5b
run seed6 "$BIN" "$CFG" --set training.epochs=2 --seed 6 --out seed6
if [ -f seed5a/metrics.csv ] && [ -f seed5b/metrics.csv ] &&
   diff <(losses seed5a/metrics.csv) <(losses seed5b/metrics.csv) \
       >/dev/null; then
    pass "the same --seed gives the same metrics"
else
    fail "the same --seed gives the same metrics"
fi
if [ -f seed6/metrics.csv ] &&
   ! diff <(column seed5a/metrics.csv train_loss) \
          <(column seed6/metrics.csv train_loss) >/dev/null; then
    pass "another --seed gives other train losses"
else
    fail "another --seed gives other train losses"
fi
if grep -q '^seed: 5$' seed5a/config.yaml 2>/dev/null; then
    pass "config.yaml records --seed"
else
    fail "config.yaml records --seed"
fi

# --- refusing to overwrite --------------------------------------------------

mkdir -p keep
cp -p main/* keep/
run again "$BIN" train "$CFG" --set training.epochs=1 --out main
expect_rc again 2 "training into a finished run without --force exits 2"
same=1
for f in keep/*; do
    cmp -s "$f" "main/${f#keep/}" || same=0
done
if [ $same -eq 1 ] && [ "$(ls main)" = "$(ls keep)" ]; then
    pass "the refused run leaves the old files byte-identical"
else
    fail "the refused run leaves the old files byte-identical" \
         "main: $(ls main | tr '\n' ' ')"
fi
if grep -q -- "--force" "$TMP/again.err"; then
    pass "the refusal hints at --force"
else
    fail "the refusal hints at --force" "stderr: $(cat "$TMP/again.err")"
fi

run force "$BIN" train "$CFG" --set training.epochs=1 --out main --force
expect_rc force 0 "with --force the run replaces the old one"
evals=$(column main/metrics.csv test_acc 2>/dev/null | grep -c .)
if [ "$evals" = 1 ] && ! cmp -s keep/metrics.csv main/metrics.csv; then
    pass "the forced run wrote its own metrics"
else
    fail "the forced run wrote its own metrics" "evaluation rows: $evals"
fi

# --- the safetensors file ---------------------------------------------------

python3 - keep/model.safetensors >"$TMP/st.out" 2>&1 <<'EOF'
import json, os, struct, sys

path = sys.argv[1]
with open(path, "rb") as f:
    blob = f.read()
(n,) = struct.unpack("<Q", blob[:8])
assert 8 + n <= len(blob), "header length past the end of the file"
header = json.loads(blob[8:8 + n].decode("utf-8"))
meta = header.pop("__metadata__")
assert "config" in meta, "no config in __metadata__"
assert "mlp-tiny" in meta["config"], "the config is not the run's"
assert all(isinstance(v, str) for v in meta.values()), "metadata not strings"
want = {
    "dense_1.weight": [128, 784],
    "dense_1.bias": [128],
    "dense_2.weight": [10, 128],
    "dense_2.bias": [10],
}
assert set(header) == set(want), "tensors: %s" % sorted(header)
spans = []
for name, shape in want.items():
    t = header[name]
    assert t["dtype"] == "F32", "%s dtype %s" % (name, t["dtype"])
    assert t["shape"] == shape, "%s shape %s" % (name, t["shape"])
    begin, end = t["data_offsets"]
    count = 1
    for d in shape:
        count *= d
    assert end - begin == 4 * count, "%s: %d bytes" % (name, end - begin)
    spans.append((begin, end))
spans.sort()
assert spans[0][0] == 0, "data does not start at 0"
for (a, b), (c, d) in zip(spans, spans[1:]):
    assert b == c, "gap or overlap at %d..%d" % (b, c)
assert 8 + n + spans[-1][1] == os.path.getsize(path), "file size"
values = struct.unpack("<%df" % (spans[-1][1] // 4), blob[8 + n:])
assert all(v == v and abs(v) < 1e6 for v in values), "non-finite weights"
print("tensors ok")
EOF
status=$?
desc="model.safetensors: names, shapes, contiguous offsets, size, metadata"
if [ $status -eq 0 ]; then
    pass "$desc"
else
    fail "$desc" \
         "$(tail -n 3 "$TMP/st.out")"
fi

# --- summary ----------------------------------------------------------------

run summary "$BIN" summary "$CFG"
expect_rc summary 0 "summary exits 0"
if grep -q 'dense_1' "$TMP/summary.out" &&
   grep -q 'total parameters: *101770' "$TMP/summary.out"; then
    pass "summary prints the table with dense_1 and total parameters"
else
    fail "summary prints the table with dense_1 and total parameters" \
         "stdout: $(head -c 600 "$TMP/summary.out")"
fi
run summary_set "$BIN" summary "$CFG" --set model.layers[1].dense.units=64
if [ "$RC" -eq 0 ] &&
   grep -q 'total parameters: *50890' "$TMP/summary_set.out"; then
    pass "summary follows --set"
else
    fail "summary follows --set" \
         "exit $RC: $(head -c 300 "$TMP/summary_set.err")"
fi

# --- bad inputs -------------------------------------------------------------

mkdir -p "$TMP/bad" "$TMP/badrun"
cd "$TMP/badrun" || exit 1
gzip -dc "$TRAIN_IMAGES" | head -c 100000 >"$TMP/bad/truncated-idx3-ubyte"

# good_config FILE [MODEL-INPUT-LINE] [LAST-UNITS]: a valid config
# with absolute data paths, so each bad case changes one thing.
good_config() {
    cat >"$1" <<EOF
name: bad
data:
  train: {images: $TRAIN_IMAGES, labels: $TRAIN_LABELS}
  test: {images: $TEST_IMAGES, labels: $TEST_LABELS}
model:
${2:-}
  layers:
    - flatten
    - dense: {units: ${3:-10}}
training:
  epochs: 1
EOF
}

# expect_bad NAME WANT-IN-MESSAGE CMD...: exit 2, exactly one error
# line, which holds WANT-IN-MESSAGE, and no run directory.
expect_bad() {
    local name=$1 want=$2 slug
    slug=$(printf '%s' "$1" | tr -c 'A-Za-z0-9' '_')
    shift 2
    run "bad_$slug" "$@" --out "out_$slug"
    local err=$TMP/bad_$slug.err
    local lines
    lines=$(grep -c 'error:' "$err")
    if [ "$RC" -ne 2 ]; then
        fail "$name: exits 2" "exit $RC" "stderr: $(head -c 600 "$err")"
    elif [ "$lines" -ne 1 ]; then
        fail "$name: one error message" "stderr: $(head -c 600 "$err")"
    elif ! grep -qF -- "$want" "$err"; then
        fail "$name: the message names $want" "stderr: $(head -c 600 "$err")"
    elif [ -e "out_$slug" ] || [ -e runs ]; then
        fail "$name: no run directory is created"
    else
        pass "$name: exit 2, one message naming $want, no run directory"
    fi
}

B=$TMP/bad

# bad NAME FILE WANT: trains FILE, expecting expect_bad's outcome.
bad() {
    expect_bad "$1" "$3" "$BIN" train "$2"
}

printf 'name: bad\ndata:\n  train: {images: a, labels: b\nmodel:\n' \
    >"$B/malformed.yaml"
printf '  layers: [relu]\n' >>"$B/malformed.yaml"
bad "malformed YAML" "$B/malformed.yaml" \
    "$B/malformed.yaml:4:6: error: invalid YAML"

good_config "$B/unknown-key.yaml"
sed -i 's/^training:/trainning:/' "$B/unknown-key.yaml"
bad "unknown key" "$B/unknown-key.yaml" \
    "$B/unknown-key.yaml:10:1: error: trainning: unknown key"
if grep -q "hint: did you mean 'training'" "$TMP/bad_unknown_key.err"; then
    pass "unknown key: the hint suggests 'training'"
else
    fail "unknown key: the hint suggests 'training'"
fi

good_config "$B/unknown-layer.yaml"
sed -i 's/- flatten/- flaten/' "$B/unknown-layer.yaml"
bad "unknown layer" "$B/unknown-layer.yaml" \
    "$B/unknown-layer.yaml:8:7: error: model.layers[0]: unknown layer 'flaten'"

good_config "$B/wrong-type.yaml"
sed -i 's/epochs: 1/epochs: one/' "$B/wrong-type.yaml"
bad "wrong value type" "$B/wrong-type.yaml" \
    "$B/wrong-type.yaml:11:11: error: training.epochs: expected an integer"

good_config "$B/huge.yaml" "  input: [1, 28, 28]"
sed -i 's/- flatten/- conv2d: {filters: 1000000000000, size: 3}\n    &/' \
    "$B/huge.yaml"
bad "filters: 1000000000000" "$B/huge.yaml" \
    "$B/huge.yaml:8:25: error: model.layers[0].conv2d.filters: must be between"

good_config "$B/missing-data.yaml"
sed -i "s|images: $TRAIN_IMAGES|images: $B/nowhere.gz|" "$B/missing-data.yaml"
bad "missing data file" "$B/missing-data.yaml" \
    "$B/nowhere.gz: error: cannot open"

good_config "$B/truncated.yaml"
sed -i "s|images: $TRAIN_IMAGES|images: $B/truncated-idx3-ubyte|" \
    "$B/truncated.yaml"
bad "truncated data file" "$B/truncated.yaml" \
    "$B/truncated-idx3-ubyte: error: truncated"

good_config "$B/mismatch.yaml"
sed -i "s|labels: $TRAIN_LABELS|labels: $TEST_LABELS|" "$B/mismatch.yaml"
bad "image/label count mismatch" "$B/mismatch.yaml" \
    "$TEST_LABELS: error: 500 labels for 2000 images"

good_config "$B/shape.yaml" "  input: [1, 32, 32]"
bad "data shape not fitting model.input" "$B/shape.yaml" \
    "$TRAIN_IMAGES: error: examples are 1x28x28 but model.input is [1, 32, 32]"

good_config "$B/classes.yaml" "" 5
bad "5 outputs for 10 classes" "$B/classes.yaml" \
    "$TRAIN_LABELS: error: has labels up to 9"

bad "missing config" "$B/none.yaml" "$B/none.yaml: error: cannot open"

# A --set value is named by the option, not by a place in a file.
expect_bad "--set with a bad value" \
    "--set training.epochs=abc: error: training.epochs: expected an integer" \
    "$BIN" train "$CFG" --set training.epochs=abc
expect_bad "--set without =" "--set training.epochs: error: expected" \
    "$BIN" train "$CFG" --set training.epochs
expect_bad "--set of an unknown key" \
    "--set training.epoch=3: error: training.epoch: unknown key" \
    "$BIN" train "$CFG" --set training.epoch=3

run summary_bad "$BIN" summary "$B/unknown-layer.yaml"
expect_rc summary_bad 2 "summary of a bad config exits 2"

# --- compare and plot -------------------------------------------------------

mkdir -p "$TMP/cmp"
cd "$TMP/cmp" || exit 1

run cmp_a "$BIN" train "$CFG" --set training.epochs=2 \
    --set optimizer.lr=0.05 --out lr-a --quiet
rc_a=$RC
run cmp_b "$BIN" train "$CFG" --set training.epochs=2 \
    --set optimizer.lr=0.01 --out lr-b --quiet
if [ "$rc_a" -eq 0 ] && [ "$RC" -eq 0 ]; then
    pass "two runs to compare, lr 0.05 and 0.01"
else
    fail "two runs to compare, lr 0.05 and 0.01" \
         "stderr: $(head -c 600 "$TMP/cmp_a.err" "$TMP/cmp_b.err")"
fi

run compare "$BIN" compare lr-a lr-b
expect_rc compare 0 "compare of two runs exits 0"
if [ "$(wc -l <"$TMP/compare.out")" -eq 3 ] &&
   awk 'NR == 1 && $1 == "run" && $2 == "optimizer" { h = 1 }
        NR == 2 && $1 == "lr-a" && $2 == "sgd" && $3 == "0.05" { a = 1 }
        NR == 3 && $1 == "lr-b" && $2 == "sgd" && $3 == "0.01" { b = 1 }
        END { exit !(h && a && b) }' "$TMP/compare.out"; then
    pass "compare prints a header and one row per run, in order"
else
    fail "compare prints a header and one row per run, in order" \
         "stdout: $(cat "$TMP/compare.out")"
fi

csv_header=run,optimizer,lr,steps,final_train_loss,best_test_acc
csv_header=$csv_header,best_epoch,seconds,images_per_s,optimizer_state_bytes
run compare_csv "$BIN" compare --csv lr-a lr-b
expect_rc compare_csv 0 "compare --csv exits 0"
steps=$(column lr-a/metrics.csv step | tail -n 1)
if [ "$(head -n 1 "$TMP/compare_csv.out")" = "$csv_header" ] &&
   [ "$(wc -l <"$TMP/compare_csv.out")" -eq 3 ] &&
   [ "$(column "$TMP/compare_csv.out" run | tr '\n' ' ')" = "lr-a lr-b " ] &&
   [ "$(column "$TMP/compare_csv.out" lr | tr '\n' ' ')" = "0.05 0.01 " ] &&
   [ "$(column "$TMP/compare_csv.out" steps | head -n 1)" = "$steps" ] &&
   awk -F, 'NF != 10 { exit 1 }' "$TMP/compare_csv.out"; then
    pass "compare --csv: the header, two rows of 10 cells, lr and steps"
else
    fail "compare --csv: the header, two rows of 10 cells, lr and steps" \
         "stdout: $(cat "$TMP/compare_csv.out")"
fi

# A run without run.json (older, or unfinished): what metrics.csv and
# config.yaml tell, "-" for the rest.
cp -r lr-a older
rm -f older/run.json
run compare_old "$BIN" compare older
if [ "$RC" -eq 0 ] &&
   awk 'NR == 2 && $1 == "older" && $2 == "sgd" && $3 == "0.05" &&
        $NF == "-" { ok = 1 } END { exit !ok }' "$TMP/compare_old.out"; then
    pass "compare of a run without run.json uses metrics.csv and config.yaml"
else
    fail "compare of a run without run.json uses metrics.csv and config.yaml" \
         "exit $RC" "stdout: $(cat "$TMP/compare_old.out")" \
         "stderr: $(head -c 600 "$TMP/compare_old.err")"
fi

# A run.json written by hand: its figures win, memory in human units.
cp -r lr-a summed
cat >summed/run.json <<'EOF'
{"name": "mlp", "optimizer": "adam", "lr": 0.001, "epochs": 1,
 "steps": 469, "seconds": 12.3, "images_per_s": 4900.1,
 "final_train_loss": 0.41, "final_test_acc": 0.85, "best_test_acc": 0.86,
 "best_epoch": 1, "params": 235146, "optimizer_state_bytes": 1881168}
EOF
run compare_sum "$BIN" compare summed
run compare_sum_csv "$BIN" compare summed --csv
if grep -q '^summed  *adam  *0\.001  *469 .* 1\.8 MiB$' "$TMP/compare_sum.out" &&
   grep -qx 'summed,adam,0.001,469,0.41,0.86,1,12.300,4900.1,1881168' \
       "$TMP/compare_sum_csv.out"; then
    pass "compare takes run.json's figures (1.8 MiB; 1881168 with --csv)"
else
    fail "compare takes run.json's figures (1.8 MiB; 1881168 with --csv)" \
         "table: $(cat "$TMP/compare_sum.out")" \
         "csv: $(cat "$TMP/compare_sum_csv.out")"
fi

# xml_ok FILE: python's XML parser reads FILE and its root is <svg>.
xml_ok() {
    python3 -c 'import sys, xml.dom.minidom
doc = xml.dom.minidom.parse(sys.argv[1])
assert doc.documentElement.tagName == "svg"' "$1" 2>"$TMP/xml.err"
}

run plot "$BIN" plot lr-a lr-b -o x.svg
expect_rc plot 0 "plot of two runs exits 0"
if [ -s x.svg ] && xml_ok x.svg && grep -q '>lr-a<' x.svg &&
   grep -q '>lr-b<' x.svg; then
    pass "plot writes valid XML naming both runs"
else
    fail "plot writes valid XML naming both runs" "$(cat "$TMP/xml.err")"
fi
if [ ! -s "$TMP/plot.out" ] && ! ls x.svg.tmp* >/dev/null 2>&1; then
    pass "plot prints nothing and leaves no temporary file"
else
    fail "plot prints nothing and leaves no temporary file"
fi

mkdir -p 'odd & <names>'
cp -r lr-b "odd & <names>/it's \"b\""
run plot_odd "$BIN" plot --output odd.svg lr-a "odd & <names>/it's \"b\""
if [ "$RC" -eq 0 ] && xml_ok odd.svg &&
   grep -q "it&apos;s &quot;b&quot;" odd.svg; then
    pass "plot --output escapes run names for XML"
else
    fail "plot --output escapes run names for XML" "exit $RC" \
         "$(cat "$TMP/xml.err" "$TMP/plot_odd.err")"
fi

run plot_old "$BIN" plot older -o old.svg
if [ "$RC" -eq 0 ] && xml_ok old.svg; then
    pass "plot of a run without run.json"
else
    fail "plot of a run without run.json" "exit $RC"
fi

run plot_noout "$BIN" plot lr-a
expect_rc plot_noout 2 "plot without -o exits 2"

# Broken run directories: exit 2, one error naming the file, no output.
mkdir -p empty garbage truncated
cp lr-a/config.yaml empty/
: >empty/metrics.csv
cp lr-a/config.yaml lr-a/metrics.csv garbage/
echo 'this is not json' >garbage/run.json
cp lr-a/config.yaml truncated/
head -n 3 lr-a/metrics.csv >truncated/metrics.csv
printf '1,13,0.05,0.9' >>truncated/metrics.csv

# expect_broken NAME WANT CMD...: exit 2, one error line holding WANT,
# nothing on stdout.
expect_broken() {
    local name=$1 want=$2
    shift 2
    run "$name" "$@"
    local err=$TMP/$name.err
    if [ "$RC" -ne 2 ]; then
        fail "$name: exits 2" "exit $RC" "stderr: $(head -c 600 "$err")"
    elif [ "$(grep -c 'error:' "$err")" -ne 1 ] ||
         ! grep -qF -- "$want" "$err"; then
        fail "$name: one error naming $want" "stderr: $(head -c 600 "$err")"
    elif [ -s "$TMP/$name.out" ]; then
        fail "$name: nothing on stdout" "stdout: $(head -c 300 "$TMP/$name.out")"
    else
        pass "$name: exit 2, one error naming $want"
    fi
}

expect_broken "compare of a missing directory" "nowhere: error: cannot open" \
    "$BIN" compare lr-a nowhere
expect_broken "compare of an empty metrics.csv" \
    "empty/metrics.csv: error: empty" "$BIN" compare lr-a empty
expect_broken "compare of a garbage run.json" \
    "garbage/run.json:1:1: error: expected a JSON object" \
    "$BIN" compare garbage --csv
expect_broken "compare of a truncated metrics.csv row" \
    "truncated/metrics.csv:4: error: 4 cells" "$BIN" compare truncated
expect_broken "plot of a broken run" "empty/metrics.csv: error: empty" \
    "$BIN" plot lr-a empty -o broken.svg
if [ -e broken.svg ]; then
    fail "a failed plot writes no file"
else
    pass "a failed plot writes no file"
fi

run compare_none "$BIN" compare
expect_rc compare_none 2 "compare without RUN_DIR exits 2"
run compare_badopt "$BIN" compare lr-a --bogus
expect_rc compare_badopt 2 "compare with an unknown option exits 2"
run plot_none "$BIN" plot -o none.svg
expect_rc plot_none 2 "plot without RUN_DIR exits 2"


# --- eval, predict, bench -----------------------------------------------------

TINY=$ROOT/data/fashion-mnist-tiny
run ev "$BIN" eval lr-a
expect_rc ev 0 "eval of a run directory exits 0"
acc_run=$(column lr-a/metrics.csv test_acc | grep . | tail -n 1)
acc_eval=$(sed -n 's/.*accuracy \([0-9.]*\)$/\1/p' "$TMP/ev.out")
if [ -n "$acc_eval" ] && [ -n "$acc_run" ] &&
   /usr/bin/python3 -c "import sys; sys.exit(abs($acc_eval - $acc_run) > 1e-4)"; then
    pass "eval reproduces the run's final test accuracy ($acc_eval)"
else
    fail "eval reproduces the run's final test accuracy" "eval $acc_eval, run $acc_run"
fi
if grep -q "confusion matrix" "$TMP/ev.out" && grep -q "Ankle boot" "$TMP/ev.out"; then
    pass "eval prints per-class accuracy with names and the confusion matrix"
else
    fail "eval prints per-class accuracy with names and the confusion matrix"
fi
run evcsv "$BIN" eval lr-a/model.safetensors --csv
if [ "$(head -n 1 "$TMP/evcsv.out" | cut -d, -f1-5)" = "class,name,count,accuracy,loss" ] &&
   [ "$(wc -l < "$TMP/evcsv.out")" -eq 12 ] &&
   /usr/bin/python3 -c 'import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert sum(int(r["count"]) for r in rows[:-1]) == int(rows[-1]["count"]) == 500' "$TMP/evcsv.out"; then
    pass "eval --csv: one row per class and a total, counts add up"
else
    fail "eval --csv: one row per class and a total, counts add up"
fi
run evbad "$BIN" eval "$TMP/nope"
expect_rc evbad 2 "eval of a missing file exits 2"

run pr "$BIN" predict lr-a "$TINY/t10k-images-idx3-ubyte.gz" --top 2
expect_rc pr 0 "predict on an IDX file exits 0"
if [ "$(wc -l < "$TMP/pr.out")" -eq 500 ] &&
   head -n 1 "$TMP/pr.out" | grep -q '^.*\[0\]: [A-Za-z/ -]* 0\.[0-9]*, '; then
    pass "predict prints one line per image with the top classes"
else
    fail "predict prints one line per image with the top classes" "$(head -n 1 "$TMP/pr.out")"
fi
/usr/bin/python3 - "$TINY/t10k-images-idx3-ubyte.gz" first.pgm first.png <<'PY'
import gzip, struct, sys, zlib
img = gzip.open(sys.argv[1]).read()[16:16 + 784]
open(sys.argv[2], "wb").write(b"P5\n28 28\n255\n" + img)
raw = b"".join(b"\0" + img[r * 28:(r + 1) * 28] for r in range(28))
def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
open(sys.argv[3], "wb").write(b"\x89PNG\r\n\x1a\n" +
    chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)) +
    chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
run primg "$BIN" predict lr-a/model.safetensors first.pgm first.png
want=$(head -n 1 "$TMP/pr.out" | sed 's/^[^:]*: \([^,]*\) .*/\1/')
if [ "$(grep -c ": $want " "$TMP/primg.out")" -eq 2 ]; then
    pass "predict on PGM and PNG copies of an image agrees with the IDX one"
else
    fail "predict on PGM and PNG copies agrees" "$(cat "$TMP/primg.out" "$TMP/primg.err")"
fi
printf 'P5\n20 20\n255\n' > small.pgm
head -c 400 /dev/zero >> small.pgm
run prsize "$BIN" predict lr-a small.pgm
expect_rc prsize 0 "predict resizes an image of another size (20x20) to the model's"

run bj "$BIN" bench "$CFG" --steps 2 --repeats 1 --warmup 0 --json
if /usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
assert d["images_per_s"] > 0 and d["gflops"] > 0 and d["peak_gflops"] > 0' "$TMP/bj.out"; then
    pass "bench --json gives images_per_s, gflops and peak_gflops"
else
    fail "bench --json gives images_per_s, gflops and peak_gflops"
fi
run bl "$BIN" bench "$CFG" --steps 2 --repeats 1 --layers
if grep -q "dense_1" "$TMP/bl.out" && grep -q "backward ms" "$TMP/bl.out"; then
    pass "bench --layers lists each layer's forward and backward time"
else
    fail "bench --layers lists each layer's forward and backward time"
fi

run rs "$BIN" summary "$ROOT/configs/resnet.yaml"
if grep -q "272186 trainable" "$TMP/rs.out" && grep -q "62.87 MFLOP" "$TMP/rs.out"; then
    pass "summary of ResNet-20: 272186 trainable parameters, 62.87 MFLOP"
else
    fail "summary of ResNet-20" "$(tail -n 4 "$TMP/rs.out")"
fi

# --- activation checkpointing -----------------------------------------------

run rsck "$BIN" summary "$ROOT/configs/resnet.yaml" --set training.batch_size=256
if /usr/bin/python3 -c 'import re, sys
text = open(sys.argv[1]).read()
unit = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
def size(pattern):
    m = re.search(pattern + r" +([0-9.]+) (B|KiB|MiB|GiB)", text)
    return float(m.group(1)) * unit[m.group(2)]
full = size(r"activations, batch 256")
kept = size(r"with checkpointing")
assert kept <= 0.6 * full, (kept, full)' "$TMP/rsck.out" 2>"$TMP/rsck.py"; then
    pass "summary: checkpointing saves at least 40% of ResNet-20's activations"
else
    fail "summary: checkpointing saves at least 40% of ResNet-20's activations" \
         "$(tail -n 3 "$TMP/rsck.out")" "$(tail -n 2 "$TMP/rsck.py")"
fi

# The same five steps of a small ResNet with and without: the same
# losses and the same tensors (the metadata differ: the config).
tensors() {
    local n
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    tail -c +$((n + 9)) "$1" | sha256sum
}
for mode in false true; do
    run "ck_$mode" "$BIN" train "$ROOT/configs/resnet-small.yaml" \
        --set "data.dir=$DATA" --set training.max_steps=5 \
        --set training.batch_size=32 --set data.limit_train=256 \
        --set data.limit_test=64 --set "training.checkpoint_activations=$mode" \
        --out "$TMP/ck-$mode"
done
if [ -s "$TMP/ck-true/model.safetensors" ] &&
   [ "$(tensors "$TMP/ck-false/model.safetensors")" = \
     "$(tensors "$TMP/ck-true/model.safetensors")" ] &&
   [ "$(losses "$TMP/ck-false/metrics.csv")" = \
     "$(losses "$TMP/ck-true/metrics.csv")" ]; then
    pass "checkpoint_activations: the same losses and weights, bit for bit"
else
    fail "checkpoint_activations: the same losses and weights, bit for bit" \
         "$(tail -n 2 "$TMP/ck_true.err")"
fi
run ckbad "$BIN" summary "$ROOT/configs/resnet-small.yaml" \
    --set training.checkpoint_activations=sometimes
expect_rc ckbad 2 "checkpoint_activations: a value not true or false exits 2"

# precision: bf16 on the same small ResNet: it trains, its weights are
# not fp32's bit for bit (rounding happened), its losses stay close, and
# a resumed bf16 run (loss scale in the checkpoint) ends where one
# straight run does.
run bf "$BIN" train "$ROOT/configs/resnet-small.yaml" \
    --set "data.dir=$DATA" --set training.max_steps=5 \
    --set training.batch_size=32 --set data.limit_train=256 \
    --set data.limit_test=64 --set training.precision=bf16 --out "$TMP/bf"
lf=$(column "$TMP/ck-false/metrics.csv" test_loss | grep . | tail -n 1)
lb=$(column "$TMP/bf/metrics.csv" test_loss | grep . | tail -n 1)
if [ "$RC" -eq 0 ] &&
   [ "$(tensors "$TMP/ck-false/model.safetensors")" != \
     "$(tensors "$TMP/bf/model.safetensors")" ] &&
   awk -v a="$lf" -v b="$lb" 'BEGIN { d = (a - b) / a; exit !(a > 0 && d < 0.05 && d > -0.05) }'; then
    pass "precision: bf16 trains; test loss $lb against fp32's $lf"
else
    fail "precision: bf16 trains close to fp32" "exit $RC, $lb vs $lf" \
         "$(tail -n 2 "$TMP/bf.err")"
fi
run bf3 "$BIN" train "$ROOT/configs/resnet-small.yaml" \
    --set "data.dir=$DATA" --set training.max_steps=3 \
    --set training.batch_size=32 --set data.limit_train=256 \
    --set data.limit_test=64 --set training.precision=bf16 --out "$TMP/bfr"
run bf5 "$BIN" train "$ROOT/configs/resnet-small.yaml" \
    --set "data.dir=$DATA" --set training.max_steps=5 \
    --set training.batch_size=32 --set data.limit_train=256 \
    --set data.limit_test=64 --set training.precision=bf16 --out "$TMP/bfr" \
    --resume
if [ "$RC" -eq 0 ] && [ "$(tensors "$TMP/bf/model.safetensors")" = \
                        "$(tensors "$TMP/bfr/model.safetensors")" ]; then
    pass "precision: bf16 resumed after 3 steps ends with the weights of 5 straight"
else
    fail "precision: bf16 resumed matches a straight run" "$(tail -n 2 "$TMP/bf5.err")"
fi
run bfck "$BIN" summary "$ROOT/configs/resnet-small.yaml" \
    --set training.precision=bf16 --set training.checkpoint_activations=true
expect_rc bfck 2 "precision: bf16 with checkpoint_activations exits 2, not yet together"

# --- gradients: gradcheck, grad_stats.csv, plot --grads -------------------------

mkdir -p "$TMP/grads" && cd "$TMP/grads" || exit 1

run gc "$BIN" gradcheck "$CFG"
expect_rc gc 0 "gradcheck of mlp-tiny exits 0"
if grep -q "^1 *dense_1 .* ok" "$TMP/gc.out" && grep -q "^2 *dense_2 .* ok" "$TMP/gc.out" &&
   grep -q "dropout: the same masks in every evaluation" "$TMP/gc.out" &&
   grep -q "^2 layers within tolerance$" "$TMP/gc.out"; then
    pass "gradcheck prints a row per layer and the verdict on stdout"
else
    fail "gradcheck prints a row per layer and the verdict on stdout" "$(cat "$TMP/gc.out")"
fi

# Nothing a correct layer can meet: the failing path, exit 1 and FAIL rows.
run gc_tight "$BIN" gradcheck "$CFG" --tolerance 1e-12 --entry-tolerance 1e-12 --samples 2
if [ "$RC" -eq 1 ] && grep -q "FAIL" "$TMP/gc_tight.out" &&
   grep -q "layers outside tolerance" "$TMP/gc_tight.out"; then
    pass "gradcheck outside its tolerance exits 1 and names the layers"
else
    fail "gradcheck outside its tolerance exits 1" "exit $RC" "$(cat "$TMP/gc_tight.out")"
fi

run gc_bad "$BIN" gradcheck "$CFG" --samples 0
expect_rc gc_bad 2 "gradcheck --samples 0 exits 2"
run gc_cfg "$BIN" gradcheck "$CFG" --set model.layers[1].dense.units=0
expect_rc gc_cfg 2 "gradcheck of a broken config exits 2"

# grad_stats.csv: a header, then every 5 steps a row per trained layer.
run gs "$BIN" "$CFG" --out gs --quiet --set training.log_grad_stats=5 \
    --set training.max_steps=20
if [ "$RC" -eq 0 ] &&
   [ "$(head -n 1 gs/grad_stats.csv)" = "step,epoch,layer,grad_norm,weight_norm,update_ratio" ] &&
   [ "$(tail -n +2 gs/grad_stats.csv | cut -d, -f1,3 | tr '\n' ' ')" = \
     "5,dense_1 5,dense_2 10,dense_1 10,dense_2 15,dense_1 15,dense_2 20,dense_1 20,dense_2 " ] &&
   awk -F, 'NR > 1 && !($4 > 0 && $5 > 0 && $6 > 0 && $6 < 1) { bad = 1 } END { exit bad }' gs/grad_stats.csv; then
    pass "log_grad_stats: 5 writes a row per layer at steps 5, 10, 15, 20"
else
    fail "log_grad_stats: 5 writes a row per layer at steps 5, 10, 15, 20" "exit $RC" \
         "$(head -n 4 gs/grad_stats.csv 2>&1)"
fi
run gs_off "$BIN" "$CFG" --out gs-off --quiet --set training.max_steps=5
if [ "$RC" -eq 0 ] && [ ! -e gs-off/grad_stats.csv ]; then
    pass "without log_grad_stats there is no grad_stats.csv"
else
    fail "without log_grad_stats there is no grad_stats.csv"
fi

run pg "$BIN" plot --grads gs
if [ "$RC" -eq 0 ] && xml_ok gs/grad_stats.svg && grep -q '>dense_1<' gs/grad_stats.svg &&
   [ "$(grep -c '<polyline' gs/grad_stats.svg)" -eq 2 ] && [ ! -s "$TMP/pg.out" ]; then
    pass "plot --grads draws RUN_DIR/grad_stats.svg, a line per layer"
else
    fail "plot --grads draws RUN_DIR/grad_stats.svg" "exit $RC" "$(cat "$TMP/pg.err" "$TMP/xml.err")"
fi
run pg_o "$BIN" plot --grads gs -o grads.svg
if [ "$RC" -eq 0 ] && xml_ok grads.svg; then
    pass "plot --grads -o FILE.svg"
else
    fail "plot --grads -o FILE.svg" "exit $RC"
fi
expect_broken "plot --grads of a run without grad_stats.csv" \
    "gs-off/grad_stats.csv: error: cannot open" "$BIN" plot --grads gs-off
run pg_two "$BIN" plot --grads gs gs-off -o two.svg
expect_rc pg_two 2 "plot --grads of two runs exits 2"

# Stopped (SIGTERM) and killed (SIGKILL, back to an older checkpoint),
# then resumed: grad_stats.csv as the straight run's, no step twice.
GS_ARGS=("$CFG" --quiet --set training.epochs=30 --set training.log_grad_stats=1
         --set training.checkpoint_every=50)
"$BIN" "${GS_ARGS[@]}" --out straight >/dev/null 2>&1
# rows DIR N: waits (up to 20 s) until DIR/grad_stats.csv has N lines.
rows() {
    local i
    for i in $(seq 2000); do
        [ "$({ wc -l < "$1/grad_stats.csv"; } 2>/dev/null || echo 0)" -ge "$2" ] && return 0
        sleep 0.01
    done
    return 1
}
stops=""
for sig in TERM KILL; do
    "$BIN" "${GS_ARGS[@]}" --out stopped --resume >/dev/null 2>&1 &
    pid=$!
    rows stopped $(( $({ wc -l < stopped/grad_stats.csv; } 2>/dev/null || echo 0) + 300 ))
    kill -$sig $pid 2>/dev/null
    wait $pid 2>/dev/null
    stops="$stops $sig:$?"
done
"$BIN" "${GS_ARGS[@]}" --out stopped --resume >/dev/null 2>&1
dups=$(tail -n +2 stopped/grad_stats.csv | cut -d, -f1,3 | sort | uniq -d | wc -l)
if [ "$stops" = " TERM:75 KILL:137" ] && [ "$dups" -eq 0 ] &&
   cmp -s straight/grad_stats.csv stopped/grad_stats.csv; then
    pass "grad_stats.csv after SIGTERM, SIGKILL and --resume: the straight run's rows, none twice"
else
    fail "grad_stats.csv after SIGTERM, SIGKILL and --resume" "exits:$stops" \
         "duplicated (step, layer): $dups" \
         "$(diff straight/grad_stats.csv stopped/grad_stats.csv | head -n 4)"
fi

finish
