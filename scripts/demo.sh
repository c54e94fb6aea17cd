#!/usr/bin/env bash
# Builds crp, then checkpoints a running process and restores it: the
# restored process carries on counting from where it was, with the same PID.
# Run as root (crp needs ptrace, clone3 set_tid and PR_SET_MM_MAP).
#
#   bash scripts/demo.sh          the userspace back end, on this machine
#   bash scripts/demo.sh --kmod   the kernel module back end: in a kernel
#                                 without /dev/crp, the same demo runs inside
#                                 the lab kernel (qemu; ~9 min to build the
#                                 lab the first time)
set -euo pipefail
cd "$(dirname "$0")/.."
backend=userspace
[ "${1:-}" = --kmod ] && backend=kmod
if [ "${CRP_DEMO_BUILT:-0}" != 1 ]; then
  bash .ci/setup
  cargo build --release --quiet
fi
if [ "$backend" = kmod ] && [ ! -e /dev/crp ]; then
  source crates/crp-kmod/tests/find-lab.sh
  "$lab/setup.sh" >/dev/null
  "$lab/build-module.sh" "$repo/crates/crp-kmod" >/dev/null
  echo "== booting the lab kernel to load crp.ko"
  exec "$lab/boot.sh" -s "$repo" -t 900 -- \
    'insmod crates/crp-kmod/crp.ko && CRP_DEMO_BUILT=1 bash scripts/demo.sh --kmod; status=$?; rmmod crp; exit $status'
fi
crp=target/release/crp
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

echo "== crp check"
"$crp" check || true

echo "== starting the demo process"
python3 examples/counter.py &
pid=$!
sleep 1.6

echo "== crp dump --backend $backend $pid (the process is killed once the image is on disk)"
"$crp" dump --backend "$backend" "$pid" -o "$workdir/demo.crp"
wait "$pid" 2>/dev/null || true

echo "== crp inspect (excerpt)"
"$crp" inspect "$workdir/demo.crp" | head -n 8

echo "== crp restore --backend $backend: it continues counting, same pid"
set +e
"$crp" restore --backend "$backend" "$workdir/demo.crp"
status=$?
set -e
echo "== the restored process exited with status $status (the program exits 7)"
test "$status" -eq 7
