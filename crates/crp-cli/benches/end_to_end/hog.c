/* The end-to-end benchmark's subject: N MiB of dirty anonymous memory, then
 * it waits. Every 64 bytes of every page hold a distinct nonzero word, so no
 * page is zero (crp leaves zero pages out) and none repeats. It detaches
 * from the caller's session and descriptors so that both crp and CRIU can
 * dump it without special options. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    size_t bytes = strtoull(argv[1], NULL, 10) << 20;
    setsid();
    syscall(SYS_close_range, 3, ~0u, 0); /* whatever the caller leaked */
    unsigned char *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return 1;
    for (size_t i = 0; i < bytes; i += 64) *(uint64_t *)(memory + i) = (i | 1) * 0x9e3779b97f4a7c15ull;
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2) close(null);
    FILE *ready = fopen(argv[2], "w");
    fprintf(ready, "%d\n", getpid());
    fclose(ready);
    for (;;) pause();
}
