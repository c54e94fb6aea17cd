#!/bin/bash
# Incremental dumps against full ones: a process holding MIB MiB (default
# 1024) of private anonymous memory (crates/crp-cli/tests/programs/
# incremental.c) is dumped in full with --track-changes, writes to 5% of
# its pages (and discards some, unmaps 4 MiB, maps 1 MiB), and is dumped
# again with --parent, ROUNDS times (default 3), a fresh process each
# round. Both dumps are --leave-running
# and durable (the default; --no-sync with NOSYNC=1). Prints the medians:
# wall time and image size of each, and their ratios.
# Usage: scripts/bench-incremental.sh [ROUNDS] [MIB]
rounds=${1:-3}
mib=${2:-1024}
# The images on the build disk (not a /tmp that may be memory).
BENCH_DIR=${BENCH_DIR:-${CARGO_TARGET_DIR:-target}}
source "$(dirname "$0")/bench-common.sh"
gcc -O2 -o "$work/subject" crates/crp-cli/tests/programs/incremental.c
sync_flag=()
[ "${NOSYNC:-0}" = 1 ] && sync_flag=(--no-sync)
seconds() { local start=$1; echo "$(date +%s.%N) - $start" | bc; }

: >"$work/rows"
for _ in $(seq "$rounds"); do
    mkfifo "$work/in"
    "$work/subject" "$mib" <"$work/in" >"$work/out" &
    pid=$!
    exec 3>"$work/in"
    while ! grep -q READY "$work/out"; do sleep 0.05; done
    start=$(date +%s.%N)
    "$crp" dump --leave-running --track-changes --quiet "${sync_flag[@]}" "$pid" -o "$work/full.crp" 2>/dev/null
    full_s=$(seconds "$start")
    echo change >&3
    while ! grep -q CHANGED "$work/out"; do sleep 0.05; done
    start=$(date +%s.%N)
    "$crp" dump --leave-running --quiet "${sync_flag[@]}" --parent "$work/full.crp" "$pid" -o "$work/inc.crp" 2>/dev/null
    inc_s=$(seconds "$start")
    echo "$full_s $inc_s $(stat -c %s "$work/full.crp") $(stat -c %s "$work/inc.crp")" >>"$work/rows"
    echo exit >&3
    exec 3>&-
    wait "$pid" || true
    rm -f "$work/in" "$work"/*.crp "$work/out"
done
full_s=$(awk '{ print $1 }' "$work/rows" | median)
inc_s=$(awk '{ print $2 }' "$work/rows" | median)
full_b=$(awk '{ print $3 }' "$work/rows" | median)
inc_b=$(awk '{ print $4 }' "$work/rows" | median)
printf '%s MiB, 5%% written, %s rounds (medians)\n' "$mib" "$rounds"
printf '  full dump (--track-changes): %8.3f s %10.1f MiB\n' "$full_s" "$(echo "$full_b / 1048576" | bc -l)"
printf '  incremental (--parent):      %8.3f s %10.1f MiB\n' "$inc_s" "$(echo "$inc_b / 1048576" | bc -l)"
printf '  ratio:                       %8.3f   %10.3f\n' "$(echo "$inc_s / $full_s" | bc -l)" "$(echo "$inc_b / $full_b" | bc -l)"
