#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration
# tests (real processes dumped and restored; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets
