#!/bin/bash
# End-to-end tests of the data formats beyond IDX, as a user meets them:
# the shipped real-data configs reach their figures (configs/digits.yaml
# at least 0.97 test accuracy, configs/diabetes.yaml a test R2 of at
# least 0.40), eval reproduces them from the run directory and predict
# reads CSV rows; configs/cifar10-resnet.yaml trains on generated batch
# files in CIFAR-10's exact layout; an image folder of PGM, PNG and JPEG
# files trains and evaluates; a validation split is the same rows on
# every run; and broken CSV, CIFAR and image files each exit 2 with one
# message naming the file (and the line, for CSV), leaving no run
# directory behind.
#
# Needs $CNN_TRAIN and $CNN_SOURCE_ROOT (meson test sets both), and
# /usr/bin/python3 with PIL (python3-pil) to write PNG and JPEG files.
# About 40 s, most of it the digits run.
set -u

BIN=${CNN_TRAIN:?set CNN_TRAIN to the cnn-train binary}
ROOT=${CNN_SOURCE_ROOT:?set CNN_SOURCE_ROOT to the repository}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cnn-data-XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1

. "$ROOT/tests/lib.sh"
# last_cell FILE COLUMN: the column's value in the last row that has one.
last_cell() {
    awk -F, -v want="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == want) c = i; next }
        $c != "" { v = $c } END { print v }' "$1"
}
# at_least A B: A >= B as numbers.
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
# expect_error NAME WHERE DESC: exit 2, one "WHERE...: error:" line.
expect_error() {
    local name=$1 where=$2 desc=$3
    if [ "$RC" -eq 2 ] && [ "$(grep -c ': error: ' "$TMP/$name.err")" -eq 1 ] &&
       grep -q "^$where[^ ]*: error: " "$TMP/$name.err"; then
        pass "$desc"
    else
        fail "$desc" "exit $RC" "stderr: $(head -c 600 "$TMP/$name.err")"
    fi
}

# --- scikit-learn's digits: a CNN on CSV rows -------------------------------

run digits "$BIN" "$ROOT/configs/digits.yaml" --out digits --quiet
expect_rc digits 0 "configs/digits.yaml trains"
acc=$(json digits/run.json final_test_acc 2>/dev/null)
if at_least "${acc:-0}" 0.97; then
    pass "digits: test accuracy $acc >= 0.97"
else
    fail "digits: test accuracy >= 0.97" "got '$acc'"
fi
if [ -n "$(last_cell digits/metrics.csv val_acc)" ]; then
    pass "digits: metrics.csv has val_acc (data.val_split)"
else
    fail "digits: metrics.csv has val_acc" "$(tail -n 2 digits/metrics.csv)"
fi
run deval "$BIN" eval digits --csv
want=$(last_cell digits/metrics.csv test_acc)
got=$(awk -F, '$1 == "all" { print $4 }' "$TMP/deval.out")
if [ "$RC" -eq 0 ] && [ "$got" = "$want" ]; then
    pass "digits: eval reproduces the final test accuracy ($got)"
else
    fail "digits: eval reproduces the final test accuracy" "eval '$got', metrics '$want'" \
         "$(head -c 400 "$TMP/deval.err")"
fi

# predict reads rows laid out as the training file, with or without the
# label column; the model knows these training rows.
zcat "$ROOT/data/sklearn/digits.csv.gz" | head -n 20 > rows.csv
cut -d, -f1-64 rows.csv > features.csv
run pfull "$BIN" predict digits rows.csv --top 1
run pfeat "$BIN" predict digits features.csv --top 1
right=$(paste -d' ' <(cut -d, -f65 rows.csv) <(sed 's/.*: class \([0-9]*\) .*/\1/' "$TMP/pfeat.out") |
        awk '$1 == $2' | wc -l)
if [ "$RC" -eq 0 ] && cmp -s <(sed 's/^[^[]*//' "$TMP/pfull.out") <(sed 's/^[^[]*//' "$TMP/pfeat.out") &&
   [ "$right" -ge 18 ]; then
    pass "digits: predict on CSV rows with and without the label agrees, $right/20 right"
else
    fail "digits: predict on CSV rows" "right $right" "$(head -n 3 "$TMP/pfull.out" "$TMP/pfeat.out" "$TMP/pfeat.err")"
fi

# --- diabetes: regression from two files -------------------------------------

run diab "$BIN" "$ROOT/configs/diabetes.yaml" --out diabetes --quiet
expect_rc diab 0 "configs/diabetes.yaml trains"
r2=$(json diabetes/run.json final_test_r2 2>/dev/null)
if at_least "${r2:-0}" 0.40; then
    pass "diabetes: test R2 $r2 >= 0.40"
else
    fail "diabetes: test R2 >= 0.40" "got '$r2'"
fi
header=$(head -n 1 diabetes/metrics.csv)
case $header in
*train_mse,train_rmse,train_mae,train_r2*test_mse,test_rmse,test_mae,test_r2)
    pass "diabetes: metrics.csv has MSE, RMSE, MAE and R2 per split" ;;
*) fail "diabetes: metrics.csv has the regression columns" "$header" ;;
esac
run reval "$BIN" eval diabetes --csv
got=$(awk -F, 'NR == 2 { print $6 }' "$TMP/reval.out")
want=$(last_cell diabetes/metrics.csv test_r2)
if [ "$RC" -eq 0 ] && [ "$got" = "$want" ]; then
    pass "diabetes: eval reproduces the final test R2 ($got)"
else
    fail "diabetes: eval reproduces the final test R2" "eval '$got', metrics '$want'"
fi
zcat "$ROOT/data/sklearn/diabetes_data_raw.csv.gz" | head -n 5 > patients.txt
run rpred "$BIN" predict diabetes patients.txt
if [ "$RC" -eq 0 ] && [ "$(wc -l < "$TMP/rpred.out")" -eq 5 ] &&
   awk -F': ' '{ if (!($2 > 20 && $2 < 350)) exit 1 }' "$TMP/rpred.out"; then
    pass "diabetes: predict prints one value per row, in the target's units"
else
    fail "diabetes: predict prints values in the target's units" "$(cat "$TMP/rpred.out" "$TMP/rpred.err")"
fi
run rcomp "$BIN" compare diabetes digits
if [ "$RC" -eq 0 ] && head -n 1 "$TMP/rcomp.out" | grep -q test_r2; then
    pass "compare shows the test R2 column"
else
    fail "compare shows the test R2 column" "$(cat "$TMP/rcomp.out")"
fi

# --- validation split: same rows every run -----------------------------------

# Two 1-step runs of digits with the same seed evaluate the same
# validation rows: identical val_loss; another seed picks other rows.
for s in 1 1 2; do
    i=$((${i:-0} + 1))
    "$BIN" "$ROOT/configs/digits.yaml" --out "val$i" --quiet --seed "$s" \
        --set training.max_steps=1 --set training.epochs=1 >/dev/null 2>&1
done
v1=$(last_cell val1/metrics.csv val_loss)
v2=$(last_cell val2/metrics.csv val_loss)
v3=$(last_cell val3/metrics.csv val_loss)
if [ -n "$v1" ] && [ "$v1" = "$v2" ] && [ "$v1" != "$v3" ]; then
    pass "the same seed evaluates the same validation rows ($v1 twice, $v3 for seed 2)"
else
    fail "the same seed evaluates the same validation rows" "$v1 $v2 $v3"
fi

# --- CIFAR-10 layout ----------------------------------------------------------

mkdir cifar
/usr/bin/python3 - <<'PY'
import random
random.seed(1)
sizes = {'data_batch_%d.bin' % i: 20 for i in range(1, 6)}
sizes['test_batch.bin'] = 20
for name, n in sizes.items():
    with open('cifar/' + name, 'wb') as f:
        for i in range(n):
            label = i % 10
            f.write(bytes([label]) + bytes((label * 25 + random.randrange(20)) % 256
                                           for _ in range(3072)))
names = 'airplane automobile bird cat deer dog frog horse ship truck'.split()
open('cifar/batches.meta.txt', 'w').write('\n'.join(names) + '\n\n')
PY
run cif "$BIN" "$ROOT/configs/cifar10-resnet.yaml" --set data.dir="$TMP/cifar" \
    --set training.epochs=1 --set training.batch_size=10 --out cifrun --quiet
expect_rc cif 0 "configs/cifar10-resnet.yaml trains on files in CIFAR-10's layout"
run cifeval "$BIN" eval cifrun
if [ "$RC" -eq 0 ] && grep -q "truck" "$TMP/cifeval.out" &&
   grep -q "(20 examples)" "$TMP/cifeval.out"; then
    pass "cifar10: eval reads test_batch.bin, class names from batches.meta.txt"
else
    fail "cifar10: eval names the classes" "$(head -n 12 "$TMP/cifeval.out" "$TMP/cifeval.err")"
fi
head -c 5000 cifar/data_batch_1.bin > cifar/data_batch_2.bin
run ciftrunc "$BIN" "$ROOT/configs/cifar10-resnet.yaml" --set data.dir="$TMP/cifar" --out cifbad
expect_error ciftrunc "$TMP/cifar/data_batch_2.bin" "cifar10: a truncated batch file is named, exit 2"
[ -e cifbad ] && fail "a data error leaves no run directory" || pass "a data error leaves no run directory"

# --- image folders -------------------------------------------------------------

# Two classes told apart by brightness, as PGM, PNG and JPEG of several
# sizes; the model takes 1x12x12.
/usr/bin/python3 - <<'PY'
import os, random
from PIL import Image
random.seed(2)
for split, n in (('train', 24), ('test', 8)):
    for cls, base in (('dark', 40), ('light', 200)):
        os.makedirs('%s/%s' % (split, cls))
        for i in range(n):
            size = random.choice([12, 20, 31])
            img = Image.new('L', (size, size))
            img.putdata([base + random.randrange(-30, 30) for _ in range(size * size)])
            ext = ('png', 'jpg', 'pgm')[i % 3]
            img.save('%s/%s/%02d.%s' % (split, cls, i, ext))
open('train/dark/notes.txt', 'w').write('not an image\n')
PY
cat > folder.yaml <<YAML
data:
  format: folder
  train: {root: train}
  test: {root: test}
  normalize: auto
model:
  input: [1, 12, 12]
  layers: [flatten, {dense: {units: 2}}]
optimizer: {name: adam, lr: 0.01}
training: {epochs: 10, batch_size: 8}
YAML
run folder "$BIN" folder.yaml --out folderrun --quiet
acc=$(json folderrun/run.json final_test_acc 2>/dev/null)
if [ "$RC" -eq 0 ] && at_least "${acc:-0}" 0.99; then
    pass "folder: PGM, PNG and JPEG of three sizes train and test ($acc)"
else
    fail "folder: images train and test" "exit $RC acc '$acc'" "$(head -c 400 "$TMP/folder.err")"
fi
run fpred "$BIN" predict folderrun test/light/01.jpg --top 1
if [ "$RC" -eq 0 ] && grep -Eq ": light (1\.0|0\.[5-9])" "$TMP/fpred.out"; then
    pass "folder: predict names the class by its folder, resizing the image"
else
    fail "folder: predict names the class" "$(cat "$TMP/fpred.out" "$TMP/fpred.err")"
fi
head -c 100 train/light/00.png > train/light/99.png
run fbad "$BIN" folder.yaml --out folderbad
expect_error fbad "$TMP/train/light/99.png" "folder: a damaged PNG is named, exit 2"
rm train/light/99.png
printf 'garbage' > train/dark/98.jpg
run fbadj "$BIN" folder.yaml --out folderbad
expect_error fbadj "$TMP/train/dark/98.jpg" "folder: a damaged JPEG is named, exit 2"
rm train/dark/98.jpg
mkdir test/unknown && cp test/dark/00.png test/unknown/
run fcls "$BIN" folder.yaml --out folderbad
expect_error fcls "$TMP/test" "folder: a test class the training data lacks is an error"
[ -e folderbad ] && fail "folder errors leave no run directory" || pass "folder errors leave no run directory"

# --- broken CSV files -----------------------------------------------------------

csv_run() {   # csv_run NAME FILE [--set ...]: trains a tiny model on FILE
    local name=$1 file=$2
    shift 2
    run "$name" "$BIN" "$TMP/csv.yaml" --set data.train.file="$file" --out csvbad "$@"
}
cat > csv.yaml <<YAML
data:
  format: csv
  train: {file: good.csv}
model:
  layers: [{dense: {units: 3}}]
optimizer: {name: sgd, lr: 0.1}
training: {epochs: 1, batch_size: 4}
YAML
printf 'a,b,label\n1,2,0\n3,4,1\n5,6,2\n7,8,1\n' > good.csv
csv_run cgood "$TMP/good.csv"
expect_rc cgood 0 "csv: a good file with a header trains"
rm -rf csvbad
printf '1,2,0\n3,4,1\n5,6\n7,8,1\n' > short.csv
csv_run cshort "$TMP/short.csv"
expect_error cshort "$TMP/short.csv:3" "csv: a row with too few fields names file:3"
printf '1,2,0\n3,x4,1\n' > nan.csv
csv_run cnan "$TMP/nan.csv"
expect_error cnan "$TMP/nan.csv:2" "csv: a non-number names file:2"
printf '1,2,0\n3,4,7\n' > range.csv
csv_run crange "$TMP/range.csv"
expect_error crange "$TMP/range.csv" "csv: a label past the model's outputs is named"
printf '1,2,-1\n3,4,1\n5,6,-1\n' > signs.csv
csv_run csigns "$TMP/signs.csv" --set model.layers='[{dense: {units: 2}}]'
run csignp "$BIN" predict csvbad signs.csv --top 2
if [ "$RC" -eq 0 ] && grep -q -- "-1 0" "$TMP/csignp.out" && grep -q ", 1 0" "$TMP/csignp.out"; then
    pass "csv: labels -1 and 1 are two named classes, in sorted order"
else
    fail "csv: labels -1 and 1 are named classes" "$(cat "$TMP/csigns.err" "$TMP/csignp.out" "$TMP/csignp.err")"
fi
rm -rf csvbad
printf '1,2,0\n3,4\n' > short2.csv
printf '1,2,0\n3,4,1\n' > ok2.csv
run ctarget "$BIN" csv.yaml --set data.train.file="$TMP/ok2.csv" --set data.csv.target=5 --out csvbad
expect_error ctarget "$TMP/ok2.csv" "csv: a target column past the row is named"
: > empty.csv
csv_run cempty "$TMP/empty.csv"
expect_error cempty "$TMP/empty.csv" "csv: an empty file is named"
gzip -c good.csv | head -c 20 > cut.csv.gz
csv_run cgz "$TMP/cut.csv.gz"
expect_error cgz "$TMP/cut.csv.gz" "csv: a truncated gzip file is named"
printf 'a,b,label\n1,2,cat\n3,4,dog\n' > named.csv
printf 'a,b,label\n1,2,cat\n3,4,cow\n' > named-test.csv
run cnamed "$BIN" csv.yaml --set data.train.file="$TMP/named.csv" \
    --set data.test="{file: $TMP/named-test.csv}" --out csvbad
expect_error cnamed "$TMP/named-test.csv:3" "csv: a test label unknown to training names file:3"
[ -e csvbad ] && fail "csv errors leave no run directory" || pass "csv errors leave no run directory"

# More feature columns than per-channel normalization holds (16): one
# [20, 1, 1] example per row trains, and predict reads feature rows.
/usr/bin/python3 -c '
import random
random.seed(1)
with open("wide.csv", "w") as f:
    for i in range(200):
        y = i % 2
        f.write(",".join("%.3f" % random.gauss(y, 1) for _ in range(20)) + ",%d\n" % y)'
cut -d, -f1-20 wide.csv | head -n 4 > wide-rows.csv
run wide "$BIN" csv.yaml --set data.train.file="$TMP/wide.csv" --set data.test_split=0.2 \
    --set 'model.layers=[{dense: {units: 2}}]' --set training.epochs=5 --out wide
run widep "$BIN" predict wide wide-rows.csv --top 1
acc=$(json wide/run.json final_test_acc 2>/dev/null)
if [ "$RC" -eq 0 ] && at_least "${acc:-0}" 0.7 && [ "$(wc -l < "$TMP/widep.out")" -eq 4 ]; then
    pass "csv: 20 feature columns train ($acc) and predict"
else
    fail "csv: 20 feature columns train and predict" "acc '$acc'" "$(cat "$TMP/wide.err" "$TMP/widep.err" | head -n 4)"
fi

# A row that overflows: the non-finite message names the same layer in
# float32 and in bf16 (whose float buffers are shared by the layers).
printf '1,2,0.5\n3e38,3e38,0.5\n1,1,0.2\n2,2,0.1\n' > huge.csv
for p in fp32 bf16; do
    run "huge_$p" "$BIN" csv.yaml --set data.train.file="$TMP/huge.csv" \
        --set data.task=regression --set training.precision=$p \
        --set 'model.layers=[relu, relu, {dense: {units: 4}}, {dense: {units: 1}}]' \
        --set training.batch_size=4 --out "huge-$p"
done
w32=$(grep -o 'first in layer [a-z_0-9]*' "$TMP/huge_fp32.err" | head -n 1)
w16=$(grep -o 'first in layer [a-z_0-9]*' "$TMP/huge_bf16.err" | head -n 1)
if [ -n "$w32" ] && [ "$w32" = "$w16" ]; then
    pass "bf16 names the layer where values stopped being finite, as fp32 does ($w16)"
else
    fail "bf16 names the same non-finite layer as fp32" "fp32: '$w32', bf16: '$w16'"
fi

# predict on a 2-D IDX file, [N, 144], for the 1x12x12 folder model: the
# examples are viewed in the model's shape.
/usr/bin/python3 -c '
import struct
open("flat.idx", "wb").write(bytes([0, 0, 8, 2]) + struct.pack(">II", 2, 144)
                             + bytes([40] * 144) + bytes([200] * 144))'
run flatp "$BIN" predict folderrun flat.idx --top 1
if [ "$RC" -eq 0 ] && grep -q '\[0\]: dark' "$TMP/flatp.out" &&
   grep -q '\[1\]: light' "$TMP/flatp.out"; then
    pass "predict reads a flat [N, 144] IDX file for a 1x12x12 model"
else
    fail "predict reads a flat IDX file" "$(cat "$TMP/flatp.out" "$TMP/flatp.err")"
fi

finish
