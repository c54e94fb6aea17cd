#!/usr/bin/env bash
# Builds crp, then checkpoints a running process and restores it: the
# restored process carries on counting from where it was, with the same PID.
# Run as root (crp needs ptrace, clone3 set_tid and PR_SET_MM_MAP).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
cargo build --release --quiet
crp=target/release/crp
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

echo "== crp check"
"$crp" check || true

echo "== starting the demo process"
python3 examples/counter.py &
pid=$!
sleep 1.6

echo "== crp dump $pid (the process is killed once the image is on disk)"
"$crp" dump "$pid" -o "$workdir/demo.crp"
wait "$pid" 2>/dev/null || true

echo "== crp inspect (excerpt)"
"$crp" inspect "$workdir/demo.crp" | head -n 8

echo "== crp restore: it continues counting, same pid"
set +e
"$crp" restore "$workdir/demo.crp"
status=$?
set -e
echo "== the restored process exited with status $status (the program exits 7)"
test "$status" -eq 7
