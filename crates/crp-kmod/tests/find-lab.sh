# Sourced by in-vm.sh and timings-in-vm.sh: sets $repo (this repository)
# and $lab (the kernel lab: $CRP_KERNEL_LAB, else shared/ next to the
# repository, else the workplace's /work/shared, where a CI clone made
# elsewhere finds it), or exits saying it is missing.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
for lab in "${CRP_KERNEL_LAB:-}" "$repo/../shared/kernel-lab" /work/shared/kernel-lab; do
    [ -n "$lab" ] && [ -x "$lab/boot.sh" ] && break
done
[ -x "$lab/boot.sh" ] || { echo "kernel lab not found (set CRP_KERNEL_LAB)" >&2; exit 1; }
lab=$(cd "$lab" && pwd)
