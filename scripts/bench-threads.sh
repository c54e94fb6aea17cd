#!/bin/bash
# How long `crp dump --leave-running` keeps a multi-threaded process frozen
# (crp's own count, from the freeze of the first thread to the release of
# the last) with 1, 8 and 64 threads (crates/crp-cli/benches/freeze/threads.c:
# half spinning, half in futex waits, 64 MiB dirty), and how long a whole
# dump and a restore of it take. ROUNDS rounds, medians. Usage:
# scripts/bench-threads.sh [ROUNDS] (default 3). Writes target/bench-threads.json.
rounds=${1:-3}
source "$(dirname "$0")/bench-common.sh"
gcc -O2 -pthread -o "$work/threads" crates/crp-cli/benches/freeze/threads.c
now_ms() { date +%s%N | awk '{ printf "%.1f", $1 / 1e6 }'; }

start_subject() {
    rm -f "$work/ready"
    "$work/threads" "$1" "$work/ready" &
    subject=$!
    while ! grep -q READY "$work/ready" 2>/dev/null; do sleep 0.02; done
}

printf '%-10s %16s %14s %14s\n' "threads" "frozen ms" "dump ms" "restore ms"
json="["
for threads in 1 8 64; do
    frozen=(); dumps=(); restores=()
    for _ in $(seq "$rounds"); do
        start_subject "$threads"
        said=$("$crp" dump --leave-running --no-sync --quiet "$subject" -o "$work/image.crp" 2>&1)
        frozen+=("$(echo "$said" | sed -n 's/.*frozen \([0-9.]*\) ms.*/\1/p')")
        { kill -9 "$subject"; wait "$subject"; } 2>/dev/null || true
        start_subject "$threads"
        before=$(now_ms)
        "$crp" dump --no-sync --quiet "$subject" -o "$work/image.crp" 2>/dev/null
        after=$(now_ms)
        wait "$subject" 2>/dev/null || true
        dumps+=("$(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.1f", b - a }')")
        before=$(now_ms)
        "$crp" restore --detach --quiet "$work/image.crp" > "$work/restored"
        after=$(now_ms)
        restores+=("$(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.1f", b - a }')")
        kill -9 "$(grep -o '[0-9]*' "$work/restored" | head -1)" 2>/dev/null || true
        rm -f "$work/image.crp"
    done
    f=$(printf '%s\n' "${frozen[@]}" | median); d=$(printf '%s\n' "${dumps[@]}" | median)
    r=$(printf '%s\n' "${restores[@]}" | median)
    printf '%-10s %16s %14s %14s\n' "$threads" "$f" "$d" "$r"
    json+="{\"threads\":$threads,\"frozen_ms\":$f,\"dump_ms\":$d,\"restore_ms\":$r},"
done
mkdir -p target
echo "${json%,}]" > target/bench-threads.json
echo "(medians of $rounds rounds; load $(cut -d' ' -f1 /proc/loadavg); $(nproc) cores, $(uname -r); target/bench-threads.json)"
