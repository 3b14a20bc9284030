#!/usr/bin/env python3
"""Cut the first N examples of an IDX image/label pair into new gzip'd IDX
files. Used to make data/fashion-mnist-tiny from Debian's
dataset-fashion-mnist:

  python3 data/make_subset.py /usr/share/datasets/fashion-mnist/train 2000 data/fashion-mnist-tiny/train
  python3 data/make_subset.py /usr/share/datasets/fashion-mnist/t10k 500 data/fashion-mnist-tiny/t10k
"""
import gzip
import struct
import sys


def cut(src, dst, n):
    with gzip.open(src, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = list(struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim]))
    per = 1
    for d in dims[1:]:
        per *= d
    dims[0] = min(n, dims[0])
    head = data[:4] + struct.pack(">" + "I" * ndim, *dims)
    body = data[4 + 4 * ndim:4 + 4 * ndim + dims[0] * per]
    with gzip.GzipFile(dst, "wb", mtime=0) as f:
        f.write(head + body)


def main():
    prefix, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cut(prefix + "-images-idx3-ubyte.gz", out + "-images-idx3-ubyte.gz", n)
    cut(prefix + "-labels-idx1-ubyte.gz", out + "-labels-idx1-ubyte.gz", n)


if __name__ == "__main__":
    main()
