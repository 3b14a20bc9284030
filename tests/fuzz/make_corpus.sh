#!/bin/sh
# Regenerates the derived seeds of tests/fuzz/corpus/: the configs of
# configs/, IDX files cut from data/fashion-mnist-tiny, and safetensors
# files from a short run of a tiny model. The hand-written seeds (broken
# configs, broken IDX and safetensors files) are kept as they are.
#
#   meson setup build && ninja -C build && tests/fuzz/make_corpus.sh
#
# Needs python3 (standard library only) and build/cnn-train.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
corpus=$root/tests/fuzz/corpus
train=${CNN_TRAIN:-$root/build/cnn-train}
mkdir -p "$corpus/config" "$corpus/idx" "$corpus/safetensors"

for f in "$root"/configs/*.yaml; do
    cp "$f" "$corpus/config/repo-$(basename "$f")"
done

# IDX seeds in fuzz_idx's layout: flags, label length (LE16), labels,
# images. Flags 1 and 2 make the target gzip the part itself; the gz-*
# seeds hold gzip streams as they lie on disk.
python3 - "$root/data/fashion-mnist-tiny" "$corpus/idx" <<'EOF'
import gzip, struct, sys

src, dst = sys.argv[1], sys.argv[2]
images = gzip.open(src + "/t10k-images-idx3-ubyte.gz").read()
labels = gzip.open(src + "/t10k-labels-idx1-ubyte.gz").read()

def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(
        struct.pack(">I", d) for d in dims) + data

def seed(name, flags, lab, img):
    with open(dst + "/" + name, "wb") as f:
        f.write(bytes([flags]) + struct.pack("<H", len(lab)) + lab + img)

def gz(b):
    return gzip.compress(b, 9, mtime=0)

n = 3
img = idx([n, 28, 28], images[16:16 + n * 784])
lab = idx([n], labels[8:8 + n])
seed("plain-3", 0, lab, img)
seed("plain-3-limit", 4, lab, img)
seed("zip-here-3", 3, lab, img)
seed("gz-3", 0, gz(lab), gz(img))
seed("gz-images-3", 0, lab, gz(img))
# Smaller shapes reach the same code in fewer bytes.
img4 = idx([2, 4, 4], bytes(range(0, 256, 8)))
lab2 = idx([2], bytes([1, 9]))
seed("tiny-3d", 0, lab2, img4)
seed("tiny-2d", 0, lab2, idx([2, 5], bytes(10)))
seed("tiny-4d", 0, lab2, idx([2, 3, 2, 2], bytes(range(24))))
seed("tiny-4d-many-channels", 0, lab2, idx([2, 17, 1, 1], bytes(34)))
seed("gz-tiny", 0, gz(lab2), gz(img4))
seed("gz-concat", 0, gz(lab2[:5]) + gz(lab2[5:]), gz(img4))
# Broken ones.
seed("short-data", 0, lab2, img4[:-3])
seed("long-data", 0, lab2, img4 + b"\0")
seed("count-mismatch", 0, idx([3], bytes(3)), img4)
seed("bad-magic", 0, b"\x00\x00\x09\x01" + lab2[4:], b"\x01" + img4[1:])
seed("bad-ndim", 0, lab2, b"\x00\x00\x08\x05" + img4[4:])
seed("labels-2d", 0, img4, img4)
seed("images-1d", 0, lab2, lab2)
seed("huge-dims", 0, lab2, idx([0x40000000, 0x100000, 0x100000], b""))
seed("zero-dim", 0, lab2, idx([2, 0, 4], b""))
seed("high-bit-dims", 0, lab2, bytes([0, 0, 8, 3, 0, 0, 0, 2, 0x80, 0, 0, 1,
                                      0, 0, 0, 1]) + bytes(2))
seed("gz-truncated", 0, lab2, gz(img4)[:-6])
seed("gz-bad-crc", 0, lab2, gz(img4)[:-8] + b"\0\0\0\0" + gz(img4)[-4:])
seed("empty", 0, b"", b"")
EOF

# safetensors seeds: a model and checkpoints of the net fuzz_safetensors
# builds (maxpool 7, flatten, dense 4, relu, dense 10: 118 parameters).
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
"$train" "$root/configs/mlp-tiny.yaml" --quiet --threads 1 --out "$run" \
    --set training.epochs=1 --set data.limit_train=256 \
    --set 'model.layers=[{maxpool: {size: 7}}, flatten, {dense: {units: 4}},
           relu, {dense: {units: 10}}]'
cp "$run/model.safetensors" "$corpus/safetensors/model"
for f in "$run"/ckpt-*.safetensors; do
    cp "$f" "$corpus/safetensors/$(basename "$f" .safetensors)"
done

python3 - "$corpus/safetensors" <<'EOF'
import json, struct, sys

dst = sys.argv[1]

# The last checkpoint again, its numbers written wide (zero-padded, or
# with exponents) and without the config text: still valid, and a fuzzer
# changing bytes in place can now reach any number without breaking the
# header length or the checksum, which covers tensor data only.
with open(dst + "/ckpt-000000004", "rb") as f:
    raw = f.read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
meta = head["__metadata__"]
del meta["config"]
for k, v in meta.items():
    if k in ("checksum", "optimizer", "format", "producer"):
        continue
    try:
        meta[k] = "%024d" % int(v)
    except ValueError:
        try:
            meta[k] = "%+.17e" % float(v)
        except ValueError:
            pass
h = json.dumps(head, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(dst + "/ckpt-wide-numbers", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + raw[8 + n:])

def st(name, header, data=b"", raw=None):
    h = raw if raw is not None else json.dumps(header).encode()
    with open(dst + "/" + name, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)

st("empty-header", {})
st("meta-only", {"__metadata__": {"a": "b", "esc": "\\\"\u00e9\u2028\n"}})
st("one-f32", {"x": {"dtype": "F32", "shape": [2, 1],
                     "data_offsets": [0, 8]}}, bytes(8))
st("scalar", {"s": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]}},
   b"\1")
st("all-dtypes", {t: {"dtype": t, "shape": [1], "data_offsets": [0, s]}
                  for t, s in [("F64", 8), ("F16", 2), ("BF16", 2),
                               ("I64", 8), ("I32", 4), ("I16", 2),
                               ("I8", 1), ("U64", 8), ("U32", 4),
                               ("U16", 2), ("BOOL", 1)]}, bytes(8))
st("bad-offsets", {"x": {"dtype": "F32", "shape": [4],
                         "data_offsets": [8, 4]}}, bytes(8))
st("past-end", {"x": {"dtype": "F32", "shape": [4],
                      "data_offsets": [0, 16]}}, bytes(8))
st("dims-overflow", {"x": {"dtype": "F64",
                           "shape": [2305843009213693952],
                           "data_offsets": [0, 0]}})
st("duplicate", None, bytes(4), raw=b'{"x":{"dtype":"U8","shape":[4],'
   b'"data_offsets":[0,4]},"x":{"dtype":"U8","shape":[4],'
   b'"data_offsets":[0,4]}}')
st("unicode-escapes", None, raw=b'{"__metadata__":{"\\u0041\\ud83d\\ude00'
   b'":"\\u00\\"","k":"\\/\\b\\f\\r\\t"}}')
st("bad-escape", None, raw=b'{"__metadata__":{"k":"\\q"}}')
st("unterminated", None, raw=b'{"__metadata__":{"k":"v')
st("header-too-long", None, raw=b'{}')
with open(dst + "/header-too-long", "r+b") as f:
    f.write(struct.pack("<Q", 1 << 40))
st("short", None, raw=b"")
with open(dst + "/short", "wb") as f:
    f.write(b"\x02\0\0")
EOF
echo "corpus: $(ls "$corpus"/config | wc -l) config," \
     "$(ls "$corpus"/idx | wc -l) idx," \
     "$(ls "$corpus"/safetensors | wc -l) safetensors seeds;" \
     "$(du -sk "$corpus" | cut -f1) KiB"
