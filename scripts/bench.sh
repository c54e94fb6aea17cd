#!/usr/bin/env bash
# The end-to-end benchmark in one command (as root, on a quiet machine):
# crp against CRIU 4.1 on processes holding 1 GiB and 4 GiB of dirty
# anonymous memory and on python3 holding a 1 GiB dict of strings, crp and
# CRIU alternating step by step, 5 rounds (3 at 4 GiB), medians and spreads; dd (into
# the page cache, conv=fsync, oflag=direct), memcpy and the fresh-memory
# fill rate as the physical references; crp's peak memory. Prints the table
# and writes the JSON (path on the last line). 26 minutes on the loaded
# development machine (CRP_BENCH_ROUNDS=3 shortens it). CRIU is
# installed by the first call of ../shared/peers/criu.sh (a few minutes).
#
# Settings (environment): CRP_BENCH_MIB=1024,4096 (anonymous sizes),
# CRP_BENCH_PYTHON_MIB=1024 (0: no python3), CRP_BENCH_ROUNDS=5 (3 over 2 GiB:
# CRP_BENCH_LARGE_ROUNDS),
# CRP_BENCH_DIR (images; default $TMPDIR/crp-bench), CRP_BENCH_JSON,
# CRP_BENCH_CRIU=0 (crp alone). `--quick`: a check of the harness while
# developing (256 MiB, python3 with 128 MiB, 2 rounds; 4 minutes there),
# not a measurement to quote.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/bench.sh: run as root (crp and CRIU dump other processes)" >&2
  exit 1
fi
if [ "${1:-}" = --quick ]; then
  export CRP_BENCH_MIB=${CRP_BENCH_MIB:-256} CRP_BENCH_PYTHON_MIB=${CRP_BENCH_PYTHON_MIB:-128}
  export CRP_BENCH_ROUNDS=${CRP_BENCH_ROUNDS:-2}
elif [ -n "${1:-}" ]; then
  echo "usage: scripts/bench.sh [--quick]" >&2
  exit 2
fi
export CRP_BENCH_MIB=${CRP_BENCH_MIB:-1024,4096}
export CRP_BENCH_PYTHON_MIB=${CRP_BENCH_PYTHON_MIB:-1024}
export CRP_BENCH_ROUNDS=${CRP_BENCH_ROUNDS:-5}
exec cargo bench -p crp-cli --bench end_to_end
