/* A process that never stops writing its memory, for copy-on-write dumps.
 *
 * cow_writer MIB: maps MIB MiB of private anonymous memory and sweeps it
 * for ever, generation after generation: sweep G (from 1) writes G into the
 * first and last word of each page in turn. Before writing page P it
 * stores its progress, (G - 1) * PAGES + P, in one word of a page of its
 * own. At every instant, the pages before P hold G, page P holds G - 1 or
 * G, the rest G - 1. An image holding a page as it was after the freeze
 * breaks that: a page ahead of P holding G, or one behind it holding G + 1.
 *
 * Prints "READY <pid>", then "MAP <memory> <progress> <pages>" (addresses
 * in hex) for a test that checks an image. On SIGUSR1 it checks the rule
 * on its own memory at the top of its next step and prints "CONSISTENT
 * generation=G position=P" (and goes on), or "INCONSISTENT ..." and exits
 * 1.
 *
 * cow_writer MIB unmap: also maps 8 MiB more, filled but never swept, and
 * unmaps them on SIGUSR2 (in the handler, whatever the sweep is doing),
 * printing "UNMAPPED". */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)

static volatile sig_atomic_t check_requested;
static void *extra;
#define EXTRA_BYTES (8 << 20)

static void on_usr2(int signal) {
    (void)signal;
    munmap(extra, EXTRA_BYTES);
    write(1, "UNMAPPED\n", 9);
}

static void on_usr1(int signal) {
    (void)signal;
    check_requested = 1;
}

static int check(volatile uint64_t *memory, size_t pages, uint64_t generation, size_t position) {
    for (size_t page = 0; page < pages; page++) {
        uint64_t expected = page < position ? generation : generation - 1;
        uint64_t first = memory[page * WORDS], last = memory[page * WORDS + WORDS - 1];
        if (first != expected || last != expected) {
            printf("INCONSISTENT page %zu of %zu holds %llu/%llu, expected %llu (generation %llu, position %zu)\n",
                   page, pages, (unsigned long long)first, (unsigned long long)last,
                   (unsigned long long)expected, (unsigned long long)generation, position);
            fflush(stdout);
            return 1;
        }
    }
    printf("CONSISTENT generation=%llu position=%zu\n", (unsigned long long)generation, position);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) return 2;
    syscall(SYS_close_range, 3, ~0u, 0);
    struct sigaction action = {.sa_handler = on_usr1};
    sigemptyset(&action.sa_mask);
    sigaction(SIGUSR1, &action, NULL);
    size_t pages = strtoull(argv[1], NULL, 10) * (1 << 20) / PAGE;
    volatile uint64_t *memory = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    volatile uint64_t *progress = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED || progress == MAP_FAILED) return 1;
    if (argc == 3) {
        extra = mmap(NULL, EXTRA_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (extra == MAP_FAILED) return 1;
        for (size_t at = 0; at < EXTRA_BYTES; at += PAGE) ((volatile char *)extra)[at] = 1;
        /* Its frame goes on a shared stack: a frame on the process's own
         * stack would wait, as any write, for crp to copy that page. */
        stack_t alternate = {.ss_size = 1 << 16};
        alternate.ss_sp = mmap(NULL, alternate.ss_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (alternate.ss_sp == MAP_FAILED || sigaltstack(&alternate, NULL)) return 1;
        struct sigaction unmap = {.sa_handler = on_usr2, .sa_flags = SA_ONSTACK};
        sigemptyset(&unmap.sa_mask);
        sigaction(SIGUSR2, &unmap, NULL);
    }
    /* Generation 1 is written over zeros: every page is populated. */
    for (size_t page = 0; page < pages; page++) memory[page * WORDS] = memory[page * WORDS + WORDS - 1] = 0;
    printf("READY %d\nMAP %llx %llx %zu\n", getpid(), (unsigned long long)(uintptr_t)memory,
           (unsigned long long)(uintptr_t)progress, pages);
    fflush(stdout);
    for (uint64_t generation = 1;; generation++) {
        for (size_t position = 0; position < pages; position++) {
            if (check_requested) {
                check_requested = 0;
                if (check(memory, pages, generation, position)) return 1;
            }
            *progress = (generation - 1) * pages + position;
            memory[position * WORDS] = generation;
            memory[position * WORDS + WORDS - 1] = generation;
        }
    }
}
