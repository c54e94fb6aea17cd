#!/usr/bin/env bash
# Times dump and restore with each back end inside the lab kernel (qemu TCG,
# so absolute times are several times the host's; compare back ends, not
# machines). A process with N MiB of dirty anonymous memory (the end-to-end
# benchmark's hog) is dumped and restored --detach, best of 3 per size.
#
#   crates/crp-kmod/tests/timings-in-vm.sh [MIB...]     (default: 16 64 256)
set -euo pipefail
source "$(dirname "$0")/find-lab.sh"
sizes=${*:-16 64 256}
"$lab/setup.sh" >/dev/null 2>&1
"$lab/build-module.sh" "$repo/crates/crp-kmod" >/dev/null
cd "$repo"
cargo build --quiet --release --bin crp
exec "$lab/boot.sh" -s "$repo" -t 1800 -m 2G -- "
set -euo pipefail
insmod crates/crp-kmod/crp.ko
work=\$(mktemp -d)
gcc -O2 -o \$work/hog crates/crp-cli/benches/hog.c
crp=./target/release/crp
ms() { echo \$(( (\$(date +%s%N) - \$1) / 1000000 )); }
printf '%-6s %-10s %10s %12s\n' MiB backend 'dump ms' 'restore ms'
for mib in $sizes; do
  for backend in userspace kmod; do
    best_dump=999999; best_restore=999999
    for round in 1 2 3; do
      rm -f \$work/ready \$work/hog.crp
      \$work/hog \$mib \$work/ready </dev/null >/dev/null 2>&1 &
      while [ ! -s \$work/ready ]; do sleep 0.05; done
      pid=\$(cat \$work/ready)
      t=\$(date +%s%N); \$crp dump --backend \$backend \$pid -o \$work/hog.crp 2>/dev/null; d=\$(ms \$t)
      wait \$pid 2>/dev/null || true
      t=\$(date +%s%N); restored=\$(\$crp restore --detach --backend \$backend \$work/hog.crp | tail -1); r=\$(ms \$t)
      kill -9 \$restored
      (( d < best_dump )) && best_dump=\$d
      (( r < best_restore )) && best_restore=\$r
    done
    printf '%-6s %-10s %10s %12s\n' \$mib \$backend \$best_dump \$best_restore
  done
done
rmmod crp
"
