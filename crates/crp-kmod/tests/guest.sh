#!/usr/bin/env bash
# Runs inside the lab kernel (started by in-vm.sh): loads crp.ko, runs the
# kmod back end's tests (the ignored ones of crates/crp-cli/tests/kmod_backend.rs),
# unloads the module and fails if the kernel logged a WARNING, BUG or Oops.
set -euo pipefail
test_binary=$1
shift
step() { printf '[guest %(%H:%M:%S)T] %s\n' -1 "$*"; }

step "kernel $(uname -r), $(nproc) CPUs"
insmod crates/crp-kmod/crp.ko
test -c /dev/crp || { step "/dev/crp did not appear"; exit 1; }
"${CRP_BINARY:-./target/debug/crp}" check | grep /dev/crp

step "kmod back end tests"
started=$SECONDS
status=0
"$test_binary" --ignored --test-threads=1 "$@" || status=$?
step "tests finished with status $status in $((SECONDS - started)) s"

step "unloading crp.ko"
# Not while a descriptor is open (the module is in use)...
exec 9<>/dev/crp
if rmmod crp 2>/dev/null; then step "rmmod succeeded with /dev/crp open"; status=1; fi
exec 9<&-
# ...and cleanly once none is.
rmmod crp
if [ -e /dev/crp ]; then step "/dev/crp is still there after rmmod"; status=1; fi
if dmesg | grep -E 'WARNING|BUG|Oops|Call Trace|general protection'; then
    step "the kernel logged the problems above"
    status=1
fi
exit "$status"
