/* The physical references for a freeze of a process holding MIB MiB of
 * dirty anonymous memory: what a fork's page-table copy costs (the other
 * way to a copy-on-write snapshot) and what write-protecting it through a
 * userfaultfd costs, measured in this process. `references MIB [huge]`
 * prints "fork_ms=... writeprotect_ms=...". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    size_t bytes = strtoull(argv[1], NULL, 10) << 20;
    char *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return 1;
    madvise(memory, bytes, argc > 2 ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    memset(memory, 1, bytes);
    double start = now();
    pid_t child = fork();
    if (child == 0) _exit(0);
    double forked = now() - start;
    waitpid(child, NULL, 0);
    int uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP};
    struct uffdio_register range = {.range = {(unsigned long)memory, bytes}, .mode = UFFDIO_REGISTER_MODE_WP};
    struct uffdio_writeprotect protect = {.range = {(unsigned long)memory, bytes}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
    if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &range)) return 1;
    start = now();
    if (ioctl(uffd, UFFDIO_WRITEPROTECT, &protect)) return 1;
    double protected = now() - start;
    printf("fork_ms=%.1f writeprotect_ms=%.1f\n", forked * 1e3, protected * 1e3);
    return 0;
}
