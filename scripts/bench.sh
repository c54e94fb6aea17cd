#!/usr/bin/env bash
# The end-to-end benchmark in one command (as root, on a quiet machine):
# crp against CRIU 4.1 on processes holding 1 GiB and 4 GiB of dirty
# anonymous memory and on python3 holding a 1 GiB dict of strings, crp and
# CRIU alternating, 3 rounds, medians; dd, memcpy and the fresh-memory fill
# rate as the physical references; crp's peak memory. Prints the table and
# writes the JSON (path on the last line). CRIU is installed by the first
# call of ../shared/peers/criu.sh (a few minutes).
#
# Settings (environment): CRP_BENCH_MIB=1024,4096 (anonymous sizes),
# CRP_BENCH_PYTHON_MIB=1024 (0: no python3), CRP_BENCH_ROUNDS=3,
# CRP_BENCH_DIR (images; default $TMPDIR/crp-bench), CRP_BENCH_JSON,
# CRP_BENCH_CRIU=0 (crp alone). A quick check of the harness itself:
#   CRP_BENCH_MIB=64 CRP_BENCH_PYTHON_MIB=32 CRP_BENCH_ROUNDS=1 bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/bench.sh: run as root (crp and CRIU dump other processes)" >&2
  exit 1
fi
export CRP_BENCH_MIB=${CRP_BENCH_MIB:-1024,4096}
export CRP_BENCH_PYTHON_MIB=${CRP_BENCH_PYTHON_MIB:-1024}
export CRP_BENCH_ROUNDS=${CRP_BENCH_ROUNDS:-3}
exec cargo bench -p crp-cli --bench end_to_end
