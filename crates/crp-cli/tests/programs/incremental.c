/* A process with known memory that changes between dumps, for incremental
 * dumps.
 *
 * incremental MIB: maps MIB MiB of private anonymous memory ("main") and
 * fills every page but the last 1% (never touched) with a pattern of its
 * page number and version 1; it also maps and fills 4 MiB ("doomed"). It
 * keeps each page's version (0: zero, never written or discarded) in a
 * table of its own memory. Prints "READY <pid>", then reads commands, one
 * a line, answering each with one line:
 *
 *   change  writes a new version into every 20th page (5%), discards 16
 *           pages (MADV_DONTNEED) and writes 2 of them again, reads one
 *           never-touched page, unmaps "doomed" (once), maps 1 MiB "fresh"
 *           (first time) or writes into it: "CHANGED written=<pages>".
 *   check   checks every word of its memory against the versions, and
 *           prints "OK digest=<hash of the versions>" or "BAD <where>".
 *   exit    exits 0. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)
#define FRESH_PAGES 256
#define DOOMED_PAGES 1024

static uint64_t word(size_t region, size_t page, uint32_t version, size_t index) {
    return (region << 56) ^ ((uint64_t)page << 24) ^ ((uint64_t)version << 12) ^ index ^ 0x9e3779b97f4a7c15ull;
}

static void fill(uint64_t *base, size_t region, size_t page, uint32_t version) {
    for (size_t index = 0; index < WORDS; index++) base[page * WORDS + index] = word(region, page, version, index);
}

static int check_region(const uint64_t *base, size_t region, const uint32_t *versions, size_t pages) {
    for (size_t page = 0; page < pages; page++) {
        for (size_t index = 0; index < WORDS; index++) {
            uint64_t expected = versions[page] ? word(region, page, versions[page], index) : 0;
            if (base[page * WORDS + index] != expected) {
                printf("BAD region %zu page %zu word %zu: %llx, expected %llx (version %u)\n", region, page, index,
                       (unsigned long long)base[page * WORDS + index], (unsigned long long)expected, versions[page]);
                return 1;
            }
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    syscall(SYS_close_range, 3, ~0u, 0);
    size_t pages = strtoull(argv[1], NULL, 10) * (1 << 20) / PAGE;
    size_t filled = pages - pages / 100;
    uint64_t *main_memory = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t *doomed = mmap(NULL, DOOMED_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint32_t *versions = calloc(pages, sizeof *versions);
    uint32_t fresh_versions[FRESH_PAGES] = {0};
    uint64_t *fresh = NULL;
    if (main_memory == MAP_FAILED || doomed == MAP_FAILED || !versions) return 1;
    for (size_t page = 0; page < filled; page++) {
        versions[page] = 1;
        fill(main_memory, 0, page, 1);
    }
    for (size_t page = 0; page < DOOMED_PAGES; page++) fill(doomed, 1, page, 1);
    uint32_t round = 0;
    printf("READY %d\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "change", 6)) {
            round++;
            size_t written = 0;
            for (size_t page = round % 20; page < filled; page += 20) {
                fill(main_memory, 0, page, ++versions[page]);
                written++;
            }
            size_t discarded = 100 + 32 * round;
            madvise(main_memory + discarded * WORDS, 16 * PAGE, MADV_DONTNEED);
            for (size_t page = discarded; page < discarded + 16; page++) versions[page] = 0;
            for (size_t page = discarded + 4; page < discarded + 6; page++) {
                fill(main_memory, 0, page, versions[page] = 7 + round);
                written++;
            }
            /* A read of a page never touched: still zero. */
            if (main_memory[(filled + round) * WORDS] != 0) return 3;
            if (doomed) {
                munmap(doomed, DOOMED_PAGES * PAGE);
                doomed = NULL;
            }
            if (!fresh) {
                fresh = mmap(NULL, FRESH_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (fresh == MAP_FAILED) return 1;
            }
            for (size_t page = 0; page < FRESH_PAGES; page += 2) {
                fill(fresh, 2, page, fresh_versions[page] = round);
                written++;
            }
            printf("CHANGED written=%zu\n", written);
        } else if (!strncmp(line, "check", 5)) {
            if (check_region(main_memory, 0, versions, pages)) goto out;
            uint32_t ones[DOOMED_PAGES];
            for (size_t page = 0; page < DOOMED_PAGES; page++) ones[page] = 1;
            if (doomed && check_region(doomed, 1, ones, DOOMED_PAGES)) goto out;
            if (fresh && check_region(fresh, 2, fresh_versions, FRESH_PAGES)) goto out;
            uint64_t digest = 1469598103934665603ull;
            for (size_t page = 0; page < pages; page++) digest = (digest ^ versions[page]) * 1099511628211ull;
            for (size_t page = 0; page < FRESH_PAGES; page++) digest = (digest ^ fresh_versions[page]) * 1099511628211ull;
            printf("OK digest=%016llx round=%u\n", (unsigned long long)digest, round);
        } else if (!strncmp(line, "exit", 4)) {
            return 0;
        } else {
            printf("BAD command %s", line);
        }
    out:
        fflush(stdout);
    }
    return 0;
}
