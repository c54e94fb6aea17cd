#!/usr/bin/env bash
# The kmod back end, tested for real: sets up the kernel lab (cached),
# builds crp.ko against the lab kernel and crp plus the kmod test binary on
# the host, boots the lab kernel in qemu with this repository shared in,
# and runs guest.sh there (load the module, dump and restore real programs
# with it and across back ends, feed it bad input, unload it, check dmesg).
#
#   crates/crp-kmod/tests/in-vm.sh [TEST-NAME-FILTER...]
#
# (as root; ~9 min the first time, for the lab). Filters select tests by
# name, as for any cargo test binary.
#
# CRP_KERNEL_LAB points at the lab (default: ../shared/kernel-lab next to
# the repository). Exits non-zero if anything fails in the guest.
set -euo pipefail

source "$(dirname "$0")/find-lab.sh"
log() { printf '[in-vm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

started=$SECONDS
log "kernel lab: $lab (setup is cached after the first run)"
"$lab/setup.sh"
log "building crp.ko (with the kernel's clippy lints; any warning fails)"
touch "$repo/crates/crp-kmod/crp_main.rs"   # rebuild, so warnings are seen every run
build_log=$(mktemp)
"$lab/build-module.sh" "$repo/crates/crp-kmod" CLIPPY=1 2>&1 | tee "$build_log"
if grep -E '(^|: )warning|objtool' "$build_log"; then
    log "the module build has warnings (above)"
    exit 1
fi
log "building crp and the kmod test binary"
cd "$repo"
cargo build --quiet --bin crp
test_binary=$(cargo test --quiet -p crp-cli --test kmod_backend --no-run --message-format=json \
    | python3 -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["target"]["name"] == "kmod_backend":
        print(message["executable"])')
[ -x "$test_binary" ] || { log "no kmod_backend test binary"; exit 1; }

log "booting the lab kernel (setup and builds took $((SECONDS - started)) s)"
boot_started=$SECONDS
status=0
# The guest sees the host's / read-only: a CARGO_TARGET_DIR outside the repo works too.
crp_binary=$(readlink -f "${CARGO_TARGET_DIR:-target}/debug/crp")
"$lab/boot.sh" -s "$repo" -t 1800 -m 2G -- "CRP_BINARY='$crp_binary' bash crates/crp-kmod/tests/guest.sh '$test_binary' $*" || status=$?
log "guest finished with status $status after $((SECONDS - boot_started)) s (total $((SECONDS - started)) s)"
exit "$status"
