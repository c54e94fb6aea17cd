#!/bin/bash
# How long `crp dump --leave-running` stops a process, as the process sees
# it: its longest gap between two loop iterations during the dump
# (crates/crp-cli/benches/freeze/gap.c), at 1 and 4 GiB of dirty anonymous
# memory in 4 KiB pages and in huge pages, ROUNDS rounds, medians; beside
# it, in the same run, what a fork and a userfaultfd write protection of
# the same memory cost (references.c). Usage: scripts/bench-freeze.sh
# [ROUNDS] (default 3). Prints a table and writes target/bench-freeze.json.
rounds=${1:-3}
source "$(dirname "$0")/bench-common.sh"
gcc -O2 -o "$work/gap" crates/crp-cli/benches/freeze/gap.c
gcc -O2 -o "$work/references" crates/crp-cli/benches/freeze/references.c

# One dump of a fresh subject: "GAP_MS FROZEN_MS" (crp's own count of the freeze).
one_round() {
    local mib=$1 huge=$2 ready="$work/ready" pid gap
    rm -f "$ready"
    HUGE=$huge "$work/gap" "$mib" "$ready" &
    pid=$!
    while ! grep -q READY "$ready" 2>/dev/null; do sleep 0.05; done
    kill -USR1 "$pid"; while ! grep -q GAP "$ready" 2>/dev/null; do sleep 0.02; done
    rm -f "$ready"
    local said
    said=$("$crp" dump --leave-running --no-sync --quiet "$pid" -o "$work/image.crp" 2>&1)
    kill -USR1 "$pid"; while ! grep -q GAP "$ready" 2>/dev/null; do sleep 0.02; done
    gap=$(awk '{ print $2 }' "$ready")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -f "$work/image.crp"
    echo "$gap $(echo "$said" | sed -n 's/.*frozen \([0-9.]*\) ms.*/\1/p')"
}

printf '%-22s %12s %12s %10s %16s\n' "memory" "stopped ms" "crp frozen" "fork ms" "writeprotect ms"
json="["
for mib in 1024 4096; do
    for pages in 4k huge; do
        huge=""; [ "$pages" = huge ] && huge=1
        gaps=(); frozen=(); forks=(); protects=()
        for _ in $(seq "$rounds"); do
            read -r gap froze < <(one_round "$mib" "$huge")
            gaps+=("$gap"); frozen+=("$froze")
            reference=$("$work/references" "$mib" ${huge:+huge})
            forks+=("$(echo "$reference" | sed 's/.*fork_ms=\([0-9.]*\).*/\1/')")
            protects+=("$(echo "$reference" | sed 's/.*writeprotect_ms=\([0-9.]*\).*/\1/')")
        done
        g=$(printf '%s\n' "${gaps[@]}" | median); f=$(printf '%s\n' "${frozen[@]}" | median)
        k=$(printf '%s\n' "${forks[@]}" | median); w=$(printf '%s\n' "${protects[@]}" | median)
        printf '%-22s %12s %12s %10s %16s\n' "$((mib / 1024)) GiB, $pages pages" "$g" "$f" "$k" "$w"
        json+="{\"mib\":$mib,\"pages\":\"$pages\",\"stopped_ms\":$g,\"crp_frozen_ms\":$f,\"fork_ms\":$k,\"writeprotect_ms\":$w},"
    done
done
mkdir -p target
echo "${json%,}]" > target/bench-freeze.json
echo "(medians of $rounds rounds; $(nproc) cores, $(uname -r); target/bench-freeze.json)"
