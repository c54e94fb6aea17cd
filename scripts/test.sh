#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration
# tests (real processes dumped and restored; needs root), then the kernel
# module's tests inside the lab kernel (CRP_SKIP_VM=1 leaves those out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
cargo fmt --all -- --check
rustfmt --edition 2024 --check crates/crp-kmod/*.rs
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets
if [ "${CRP_SKIP_VM:-0}" != 1 ]; then
  bash crates/crp-kmod/tests/in-vm.sh
fi
