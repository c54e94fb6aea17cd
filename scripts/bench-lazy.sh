#!/bin/bash
# How soon a restored process runs, `crp restore --lazy` against an eager
# `crp restore`: a process holding 1 and 4 GiB of anonymous memory, every
# page of it distinct (crates/crp-cli/benches/lazy/resumed.c), dumped once
# per size into the page cache, then restored ROUNDS times each way, in
# turn. Reported, from the start of `crp restore`, in ms (medians): when
# the process ran its first instruction after the restore (it prints the
# time as soon as it reads its line), when it had read and checked every
# page, and when crp ended (the process exits after its check).
# Usage: scripts/bench-lazy.sh [ROUNDS] (default 3). Writes
# target/bench-lazy.json.
rounds=${1:-3}
source "$(dirname "$0")/bench-common.sh"
gcc -O2 -o "$work/resumed" crates/crp-cli/benches/lazy/resumed.c
now_ns() { date +%s%N; }

# One restore: "RUN_MS VERIFIED_MS CRP_MS".
one_restore() {
    local flags=$1 start out="$work/out" end
    start=$(now_ns)
    # shellcheck disable=SC2086
    # Its stdin was a FIFO and its stdout a file: both are crp's here.
    echo go | "$crp" restore --quiet $flags --stdin inherit --stdout inherit "$work/image.crp" > "$out" 3>&- 251>&-
    end=$(now_ns)
    grep -q VERIFIED "$out" || { echo "restore $flags: $(cat "$out")" >&2; exit 1; }
    local resumed verified
    resumed=$(awk '/RESUMED/ { print $2 }' "$out")
    verified=$(awk '/VERIFIED/ { print $2 }' "$out")
    echo "$(( (resumed - start) / 1000 )) $(( (verified - start) / 1000 )) $(( (end - start) / 1000 ))" |
        awk '{ printf "%.1f %.1f %.1f\n", $1 / 1000, $2 / 1000, $3 / 1000 }'
}

printf '%-8s %-6s %12s %14s %10s\n' "memory" "mode" "runs at ms" "all read ms" "crp ms"
json="["
for mib in 1024 4096; do
    # Its stdin a pipe nobody writes to: it waits there until dumped.
    mkfifo "$work/stdin"
    "$work/resumed" "$mib" < "$work/stdin" > "$work/ready" 3>&- 251>&- &
    pid=$!
    exec 7> "$work/stdin"
    while ! grep -q READY "$work/ready" 2>/dev/null; do sleep 0.05; done
    "$crp" dump --no-sync --quiet "$pid" -o "$work/image.crp" 2> "$work/dumped"
    { wait "$pid" || true; } 2>/dev/null
    exec 7>&-
    rm -f "$work/stdin"
    declare -A runs=() reads=() ends=()
    for _ in $(seq "$rounds"); do
        for mode in eager lazy; do
            flags=""; [ "$mode" = lazy ] && flags="--lazy"
            read -r run read_all took < <(one_restore "$flags")
            runs[$mode]+="$run "; reads[$mode]+="$read_all "; ends[$mode]+="$took "
        done
    done
    for mode in eager lazy; do
        r=$(printf '%s\n' ${runs[$mode]} | median)
        a=$(printf '%s\n' ${reads[$mode]} | median)
        e=$(printf '%s\n' ${ends[$mode]} | median)
        printf '%-8s %-6s %12s %14s %10s\n' "$((mib / 1024)) GiB" "$mode" "$r" "$a" "$e"
        json+="{\"mib\":$mib,\"mode\":\"$mode\",\"runs_at_ms\":$r,\"all_read_ms\":$a,\"crp_ms\":$e},"
    done
    rm -f "$work/image.crp"
done
mkdir -p target
echo "${json%,}]" > target/bench-lazy.json
echo "(medians of $rounds rounds; $(nproc) cores, $(uname -r), load $(cut -d' ' -f1 /proc/loadavg); target/bench-lazy.json)"
