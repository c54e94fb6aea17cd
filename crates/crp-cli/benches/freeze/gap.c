/* The freeze benchmark's subject: `gap MIB FILE` holds MIB MiB of dirty
 * anonymous memory (in huge pages when HUGE is set, else 4 KiB pages) and
 * loops, writing one word of a different page each iteration (so that a
 * copy-on-write dump sees writes) and recording its longest gap between two
 * iterations. It writes "READY <pid>" to FILE when filled; on SIGUSR1,
 * "GAP <ms>", the longest gap since the last report. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static volatile sig_atomic_t report;
static void on_usr1(int s) { (void)s; report = 1; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    size_t bytes = strtoull(argv[1], NULL, 10) << 20;
    syscall(SYS_close_range, 3, ~0u, 0);
    signal(SIGUSR1, on_usr1);
    unsigned char *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (getenv("HUGE")) madvise(m, bytes, MADV_HUGEPAGE); else madvise(m, bytes, MADV_NOHUGEPAGE);
    for (size_t i = 0; i < bytes; i += 64) *(uint64_t *)(m + i) = (i | 1) * 0x9e3779b97f4a7c15ull;
    FILE *f = fopen(argv[2], "w"); fprintf(f, "READY %d\n", getpid()); fclose(f);
    double last = now(), longest = 0; size_t page = 0;
    for (;;) {
        double t = now();
        if (t - last > longest) longest = t - last;
        last = t;
        m[page] ^= 1; page = (page + 4096 * 97) % bytes;
        if (report) { report = 0; f = fopen(argv[2], "w"); fprintf(f, "GAP %.3f\n", longest * 1000); fclose(f); longest = 0; last = now(); }
    }
}
