# What the end-to-end test scripts share, sourced by them: the TAP-like
# "ok - ..." / "not ok - ..." lines with their counts, running a command
# with its output kept in $TMP, and reading back a run's files. Set TMP
# before sourcing; end with `finish`.

FAILED=0
COUNT=0

pass() { COUNT=$((COUNT + 1)); echo "ok - $1"; }

# fail DESC [DETAIL...]: a failed check, each detail on a "#" line.
fail() {
    COUNT=$((COUNT + 1)); FAILED=$((FAILED + 1))
    echo "not ok - $1"
    shift
    for line in "$@"; do echo "#   $line"; done
}

# run NAME CMD...: runs CMD with stdout in $TMP/NAME.out, stderr in
# $TMP/NAME.err and the exit status in RC.
run() {
    local name=$1
    shift
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
    RC=$?
}

# expect_rc NAME WANT DESC: checks the last run's status.
expect_rc() {
    if [ "$RC" -eq "$2" ]; then
        pass "$3"
    else
        fail "$3" "exit $RC, expected $2" "stderr: $(head -c 600 "$TMP/$1.err")"
    fi
}

# json FILE KEY: a value from a JSON object such as run.json.
json() {
    /usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# finish: the count line, and the script's status.
finish() {
    echo "# $COUNT checks, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}
