# Sourced by in-vm.sh, timings-in-vm.sh and scripts/demo.sh: sets $repo
# (this repository) and $lab (the kernel lab), or exits saying where it
# looked. The lab is where $CRP_KERNEL_LAB points, else where the
# repository layout puts it: ../shared/kernel-lab beside the repository
# (CI clones the repository with shared/ beside it too).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
if [ -n "${CRP_KERNEL_LAB:-}" ]; then
    lab=$CRP_KERNEL_LAB
    [ -x "$lab/boot.sh" ] || {
        echo "CRP_KERNEL_LAB=$lab is not a kernel lab (no executable $lab/boot.sh)" >&2
        exit 1
    }
else
    lab=$repo/../shared/kernel-lab
    [ -x "$lab/boot.sh" ] || {
        echo "kernel lab not found: no executable $lab/boot.sh (the repository layout puts the lab" \
            "in ../shared/kernel-lab beside the repository); set CRP_KERNEL_LAB to the lab's folder" >&2
        exit 1
    }
fi
lab=$(cd "$lab" && pwd)
