# Sourced by the scripts/bench-*.sh scripts: strict mode, the repository
# as working directory, crp built for release and named $crp, a scratch
# folder $work (under $BENCH_DIR when set) removed at exit, and median
# (of the numbers on its standard input, one per line).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p crp-cli
crp=${CARGO_TARGET_DIR:-target}/release/crp
if [ -n "${BENCH_DIR:-}" ]; then
    mkdir -p "$BENCH_DIR"
    work=$(mktemp -d -p "$BENCH_DIR")
else
    work=$(mktemp -d)
fi
trap 'rm -rf "$work"' EXIT
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
