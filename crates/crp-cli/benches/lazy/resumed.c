/* The lazy restore benchmark's subject: MIB MiB of anonymous memory, every
 * page holding its own index, then "READY <pid>" and a wait on stdin. Once
 * restored it reads its line at once and prints "RESUMED <ns>"
 * (CLOCK_REALTIME), then checks every page and prints "VERIFIED <ns>", or
 * "FAIL page N". Usage: resumed MIB */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return now.tv_sec * 1000000000ll + now.tv_nsec;
}

int main(int argc, char **argv) {
    size_t pages = (size_t)atol(argc > 1 ? argv[1] : "1024") << 8;
    uint64_t *memory = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return 1;
    for (size_t page = 0; page < pages; page++)
        for (size_t word = 0; word < 512; word++) memory[page * 512 + word] = page * 0x9e3779b97f4a7c15ull + word;
    printf("READY %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (read(0, line, sizeof line) <= 0) return 1;
    printf("RESUMED %lld\n", now_ns());
    fflush(stdout);
    for (size_t page = 0; page < pages; page++)
        for (size_t word = 0; word < 512; word++)
            if (memory[page * 512 + word] != page * 0x9e3779b97f4a7c15ull + word) {
                printf("FAIL page %zu\n", page);
                return 1;
            }
    printf("VERIFIED %lld\n", now_ns());
    return 0;
}
