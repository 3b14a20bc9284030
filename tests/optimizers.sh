#!/bin/bash
# The optimizer bar on real data: every optimizer, at the learning rate
# the man page recommends, trains configs/mlp.yaml (784-256-128-10 on the
# full Fashion-MNIST) for one epoch to at least 0.82 test accuracy, and
# adam8bit stays within one point of adam with at most 2.1 bytes of state
# per parameter. Skipped (exit 77) when the dataset is not installed.
set -u
BIN=${CNN_TRAIN:?set CNN_TRAIN to the cnn-train binary}
ROOT=${CNN_SOURCE_ROOT:?set CNN_SOURCE_ROOT to the repository}
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "no $DATA: skipped"; exit 77; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failed=0

# name and recommended lr (configs/mlp.yaml keeps momentum: 0.9, which
# sgd and rmsprop use and the others set aside).
while read -r name lr; do
    "$BIN" "$ROOT/configs/mlp.yaml" --set training.epochs=1 \
        --set optimizer.name="$name" --set optimizer.lr="$lr" \
        --out "$TMP/$name" --quiet 2>"$TMP/$name.err"
    acc=$(/usr/bin/python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["final_test_acc"])' "$TMP/$name/run.json" 2>/dev/null)
    if /usr/bin/python3 -c "import sys; sys.exit(0 if float('${acc:-0}') >= 0.82 else 1)"; then
        echo "ok - $name lr=$lr: test_acc $acc >= 0.82"
    else
        echo "not ok - $name lr=$lr: test_acc ${acc:-none} < 0.82"
        cat "$TMP/$name.err"
        failed=1
    fi
done <<'LIST'
sgd 0.01
adam 0.001
adamw 0.001
lion 0.0001
rmsprop 0.0001
adagrad 0.01
adam8bit 0.001
LIST

if /usr/bin/python3 - "$TMP/adam/run.json" "$TMP/adam8bit/run.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
per = b["optimizer_state_bytes"] / b["params"]
print(f"# adam {a['final_test_acc']:.4f}, adam8bit {b['final_test_acc']:.4f}, "
      f"{per:.3f} bytes/param (adam {a['optimizer_state_bytes'] / a['params']:.1f})")
sys.exit(0 if abs(a["final_test_acc"] - b["final_test_acc"]) <= 0.01 and per <= 2.1 else 1)
PY
then
    echo "ok - adam8bit within one point of adam, <= 2.1 bytes/param"
else
    echo "not ok - adam8bit within one point of adam, <= 2.1 bytes/param"
    failed=1
fi
exit $failed
