#!/bin/sh
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for
# a fixed time, one after the other, each in one niced process.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]   # fuzz; default 60 s, all
#   tests/fuzz/run.sh 0                        # build only
#   tests/fuzz/run.sh replay                   # rerun tests/fuzz/crashes
#   tests/fuzz/run.sh valgrind [TARGET...]     # every corpus input, once,
#                                              # under valgrind
#
# Targets: config, idx, safetensors, data (see README.md). Run from anywhere;
# needs clang with libFuzzer (Debian: clang, libclang-rt-<N>-dev) and the
# headers of the libraries meson.build names; nothing from meson itself.
#
# Fuzzing reads the seeds in tests/fuzz/corpus/<target> and adds what it
# finds to build-fuzz/corpus/<target>; a crash goes to
# build-fuzz/crashes/<target>-crash-<sha1>, the log to
# build-fuzz/logs/<target>.log. One line per target; exit 1 if any found
# something.
#
# The targets step around findings not fixed yet (README.md). replay
# builds them without those workarounds (-DFUZZ_KNOWN_FINDINGS, in
# build-fuzz/known) and runs each input of tests/fuzz/crashes, also under
# valgrind when it is installed: glibc's own code is not instrumented,
# so ASan misses an over-read inside it (safetensors-2 was one). It
# prints which inputs still fail and exits 1 if any does. valgrind runs
# every seed and found input once under valgrind, as a sweep after a
# long run, and exits 1 on any error.
#
# Environment: CC (default clang), FUZZ_NICE (default 10), FUZZ_OUT
# (default build-fuzz), FUZZ_FLAGS (extra libFuzzer flags).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
mode=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-config idx safetensors data}
cc=${CC:-clang}
out=${FUZZ_OUT:-$root/build-fuzz}
nice_level=${FUZZ_NICE:-10}

case $mode in
replay | valgrind) ;;
*[!0-9]* | '') echo "usage: $0 [SECONDS|replay|valgrind] [TARGET...]" >&2
               exit 2 ;;
esac

# Longest input tried, per target: each seed fits with room to grow.
max_len() {
    case $1 in
    config) echo 8192 ;;
    idx) echo 8192 ;;
    safetensors) echo 8192 ;;
    data) echo 16384 ;;
    esac
}

mkdir -p "$out/obj" "$out/logs" "$out/crashes" "$out/known" \
         "$out/known-plain" "$out/plain"

# Scratch files of the targets, in memory when possible; libFuzzer ends
# with _exit, so the targets cannot remove them themselves.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
TMPDIR=$(mktemp -d "$shm/cnn-fuzz.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

# The version header meson would write, so a clean checkout builds.
version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$root/meson.build" |
          head -n 1)
printf '#define CNN_VERSION "%s"\n' "${version:-unknown}" >"$out/version.new"
if cmp -s "$out/version.new" "$out/cnn_version.h"; then
    rm "$out/version.new"
else
    mv "$out/version.new" "$out/cnn_version.h"
fi

# The libraries meson.build asks for, through pkg-config when it can.
dep_cflags=
libs=
deps="yaml-0.1:-lyaml openblas:-lopenblas zlib:-lz"
grep -q "dependency('libpng')" "$root/meson.build" &&
    deps="$deps libpng:-lpng"
grep -q "dependency('libjpeg')" "$root/meson.build" &&
    deps="$deps libjpeg:-ljpeg"
for dep in $deps; do
    if pkg-config --exists "${dep%%:*}" 2>/dev/null; then
        dep_cflags="$dep_cflags $(pkg-config --cflags "${dep%%:*}")"
        libs="$libs $(pkg-config --libs "${dep%%:*}")"
    else
        libs="$libs ${dep#*:}"
    fi
done
libs="$libs -lm"
base="-std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
      -I$root/include -I$out $dep_cflags"
cflags="-g -O1 $base -fsanitize=address,undefined
        -fno-sanitize-recover=undefined"
sources=$(cd "$root" && find src -name '*.c' ! -path 'src/cli/*' | sort)

# The library once, with coverage for the fuzzer: every source of src/
# but the CLI, in an archive so a target links only what it calls. An
# object is rebuilt when its source, a header or this script is newer.
build_library() {
    rm -f "$out/libcnn-fuzz.a.new"
    for src in $sources; do
        obj=$out/obj/$(echo "$src" | tr / _ | sed 's/\.c$/.o/')
        newest=$(ls -t "$root/$src" "$root"/include/cnn/*.h "$0" "$obj" \
                 2>/dev/null | head -n 1)
        if [ "$newest" != "$obj" ]; then
            nice -n "$nice_level" $cc $cflags -fsanitize=fuzzer-no-link \
                -c "$root/$src" -o "$obj"
        fi
        ar qc "$out/libcnn-fuzz.a.new" "$obj"
    done
    ranlib "$out/libcnn-fuzz.a.new"
    mv "$out/libcnn-fuzz.a.new" "$out/libcnn-fuzz.a"
}

# build_target TARGET DIR [CFLAGS...]: the sanitized binary DIR/fuzz_TARGET.
build_target() {
    t=$1 dir=$2
    shift 2
    nice -n "$nice_level" $cc $cflags "$@" -fsanitize=fuzzer \
        "$root/tests/fuzz/fuzz_$t.c" "$out/libcnn-fuzz.a" $libs \
        -o "$dir/fuzz_$t"
}

# build_plain TARGET DIR [CFLAGS...]: DIR/fuzz_TARGET without sanitizers,
# for valgrind (which reads DWARF 4 only).
build_plain() {
    t=$1 dir=$2
    shift 2
    nice -n "$nice_level" $cc -gdwarf-4 -O1 $base "$@" -fsanitize=fuzzer \
        -w "$root/tests/fuzz/fuzz_$t.c" \
        $(for s in $sources; do echo "$root/$s"; done) $libs \
        -o "$dir/fuzz_$t"
}

# What the sanitizers, valgrind and the targets' own checks say first.
errors='runtime error:|ERROR:|Invalid (read|write)|uninitialised'
errors="$errors|does not read back|shape and dtype make"

# failure LOG: the input that failed first and what went wrong, or
# nothing. libFuzzer names each input before running it.
failure() {
    awk -v errors="$errors" '
        /^Running: / { input = $2 }
        $0 ~ errors { sub(/^==[0-9]+== */, ""); print input ": " $0; exit }
    ' "$1"
}

# run_inputs BINARY INPUT...: each input once; under valgrind when
# BINARY is a plain build. Prints the first failure; 1 if any.
run_inputs() {
    binary=$1
    shift
    log=$out/logs/check.log
    case $binary in
    *plain/fuzz_*) set -- valgrind -q --error-exitcode=9 "$binary" "$@" ;;
    *) set -- "$binary" "$@" ;;
    esac
    rc=0
    "$@" -runs=1 >"$log" 2>&1 || rc=$?
    what=$(failure "$log")
    [ "$rc" -eq 0 ] && [ -z "$what" ] && return 0
    echo "${what:-exit status $rc, see $log}"
    return 1
}

build_library
case $mode in
replay)
    for t in $targets; do
        build_target "$t" "$out/known" -DFUZZ_KNOWN_FINDINGS
        ! command -v valgrind >/dev/null ||
            build_plain "$t" "$out/known-plain" -DFUZZ_KNOWN_FINDINGS
    done ;;
valgrind)
    for t in $targets; do
        build_plain "$t" "$out/plain"
    done ;;
*)
    for t in $targets; do
        build_target "$t" "$out"
    done ;;
esac

status=0
case $mode in
replay)
    for input in "$root"/tests/fuzz/crashes/*; do
        t=$(basename "$input" | sed 's/-[^-]*$//')
        [ -x "$out/known/fuzz_$t" ] || continue
        if what=$(run_inputs "$out/known/fuzz_$t" "$input") &&
           { [ ! -x "$out/known-plain/fuzz_$t" ] ||
             what=$(run_inputs "$out/known-plain/fuzz_$t" "$input"); }; then
            echo "$(basename "$input"): passes"
        else
            status=1
            echo "$(basename "$input"): still fails: ${what#*: }"
        fi
    done
    exit $status ;;
valgrind)
    for t in $targets; do
        set -- "$root/tests/fuzz/corpus/$t"/* "$out/corpus/$t"/*
        if what=$(run_inputs "$out/plain/fuzz_$t" "$@"); then
            echo "fuzz_$t: valgrind: $# inputs, no errors"
        else
            status=1
            echo "fuzz_$t: valgrind: $what"
        fi
    done
    exit $status ;;
0)
    exit 0 ;;
esac

for t in $targets; do
    log=$out/logs/$t.log
    mkdir -p "$out/corpus/$t"
    dict=
    [ -f "$root/tests/fuzz/$t.dict" ] && dict=-dict=$root/tests/fuzz/$t.dict
    set +e
    # shellcheck disable=SC2086
    nice -n "$nice_level" "$out/fuzz_$t" "$out/corpus/$t" \
        "$root/tests/fuzz/corpus/$t" $dict \
        -max_total_time="$mode" -max_len="$(max_len "$t")" \
        -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=2560 \
        -artifact_prefix="$out/crashes/$t-" -print_final_stats=1 \
        ${FUZZ_FLAGS:-} >"$log" 2>&1
    rc=$?
    set -e

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$last" | sed -n 's/.*corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
    stats="runs=${runs:-?} exec/s=${speed:-?} cov=${cov:-?} ft=${ft:-?}"
    stats="$stats corpus=${corp:-?}"
    if [ "$rc" -eq 0 ]; then
        echo "fuzz_$t: ok: $stats"
        continue
    fi
    status=1
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    echo "fuzz_$t: FOUND (exit $rc): $(failure "$log" | sed 's/^: //');" \
         "input ${input:-?}; log $log; $stats"
done
exit $status
