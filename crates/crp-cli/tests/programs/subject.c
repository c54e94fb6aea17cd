/* A process that sets up state, waits to be checkpointed, and after the
 * restore verifies that state itself. Used by crp's integration tests.
 *
 *   subject state FILE_PRIVATE FILE_SHARED [HEAP_MIB]
 *       heap pattern, TLS, a private and a shared file mapping, a PROT_NONE
 *       guard with data behind it and a 64 GiB PROT_NONE reservation; then it
 *       blocks in read(0) with patterns in every vector register (ZMM0-31
 *       and k1-k7 with AVX-512, else YMM0-15), and checks them all.
 *   subject sleep SECONDS
 *       sleeps in nanosleep and checks it slept the whole time, once;
 *       SIGINT ends it (its default action, set whatever was inherited).
 *   subject identity
 *       lowers RLIMIT_NOFILE to 123/456, arms a 2 s ITIMER_REAL, waits for
 *       SIGALRM, then reports its ids, groups and limit.
 *   subject attributes
 *       sets its thread attributes (name, affinity to its last CPU,
 *       SCHED_BATCH with reset-on-fork, nice 7, timer slack 123456 ns,
 *       I/O priority best-effort 6, parent-death signal SIGWINCH, early
 *       machine-check kill, store-bypass mitigation where prctl may) and
 *       process attributes (THP disabled, membarrier private expedited
 *       registered, oom_score_adj 400, child subreaper, no_new_privs,
 *       MDWE refuse-exec-gain, coredump_filter 0x7f, and where the
 *       machine allows: AMX tile data permission, audit login uid 4242,
 *       cpuid faulting, 16 private futex hash slots), waits on stdin, then
 *       checks every one.
 *   subject seccomp
 *       installs an allow-everything seccomp filter, then waits on stdin.
 *   subject spin SECONDS [prof]
 *       spins in user mode (never in a syscall) until an ITIMER_REAL (or,
 *       with "prof", an ITIMER_PROF: CPU time) of SECONDS fires, with 64-bit
 *       patterns in rax, rbx, rdx, rsi, rdi, r8-r15, checking them on every
 *       iteration; a dump catches it between two instructions. With "prof"
 *       it also reports the CPU time it used (cpu=SECONDS).
 *   subject spin SECONDS prof-wait BEFORE
 *       as "spin SECONDS prof", but once it has used BEFORE seconds of CPU
 *       it prints "SPUN", waits for a line on stdin (its CPU timer still:
 *       a slow dump cannot run it out), then spins until the timer fires.
 *
 * Protocol: prints "READY <pid>" once set up; after the wait prints
 * "OK pid=<pid> ..." and exits 0, or "FAIL <reason>" and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <signal.h>
#include <grp.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The state subject's heap: 64 MiB, or the MiB given after its files. */
static size_t HEAP_BYTES = 64u << 20;
#define PAGE 4096
#define TLS_WORDS 256

static __thread uint64_t tls_words[TLS_WORDS];
static __thread uint64_t tls_marker = 0x715715715ull;

static int fail(const char *reason) {
    printf("FAIL %s\n", reason);
    fflush(stdout);
    return 1;
}

static uint8_t pattern(size_t i) { return (uint8_t)(i * 2654435761u >> 13); }

__attribute__((target("avx512f,avx512bw")))
static long read_holding_avx512(const uint8_t *src, uint8_t *dst, char *buf, long len) {
    register long rax asm("rax") = SYS_read;
    register long rdi asm("rdi") = 0;
    register char *rsi asm("rsi") = buf;
    register long rdx asm("rdx") = len;
    asm volatile(
        "vmovdqu64 0(%[src]), %%zmm0\n\t"
        "vmovdqu64 64(%[src]), %%zmm1\n\t"
        "vmovdqu64 128(%[src]), %%zmm2\n\t"
        "vmovdqu64 192(%[src]), %%zmm3\n\t"
        "vmovdqu64 256(%[src]), %%zmm4\n\t"
        "vmovdqu64 320(%[src]), %%zmm5\n\t"
        "vmovdqu64 384(%[src]), %%zmm6\n\t"
        "vmovdqu64 448(%[src]), %%zmm7\n\t"
        "vmovdqu64 512(%[src]), %%zmm8\n\t"
        "vmovdqu64 576(%[src]), %%zmm9\n\t"
        "vmovdqu64 640(%[src]), %%zmm10\n\t"
        "vmovdqu64 704(%[src]), %%zmm11\n\t"
        "vmovdqu64 768(%[src]), %%zmm12\n\t"
        "vmovdqu64 832(%[src]), %%zmm13\n\t"
        "vmovdqu64 896(%[src]), %%zmm14\n\t"
        "vmovdqu64 960(%[src]), %%zmm15\n\t"
        "vmovdqu64 1024(%[src]), %%zmm16\n\t"
        "vmovdqu64 1088(%[src]), %%zmm17\n\t"
        "vmovdqu64 1152(%[src]), %%zmm18\n\t"
        "vmovdqu64 1216(%[src]), %%zmm19\n\t"
        "vmovdqu64 1280(%[src]), %%zmm20\n\t"
        "vmovdqu64 1344(%[src]), %%zmm21\n\t"
        "vmovdqu64 1408(%[src]), %%zmm22\n\t"
        "vmovdqu64 1472(%[src]), %%zmm23\n\t"
        "vmovdqu64 1536(%[src]), %%zmm24\n\t"
        "vmovdqu64 1600(%[src]), %%zmm25\n\t"
        "vmovdqu64 1664(%[src]), %%zmm26\n\t"
        "vmovdqu64 1728(%[src]), %%zmm27\n\t"
        "vmovdqu64 1792(%[src]), %%zmm28\n\t"
        "vmovdqu64 1856(%[src]), %%zmm29\n\t"
        "vmovdqu64 1920(%[src]), %%zmm30\n\t"
        "vmovdqu64 1984(%[src]), %%zmm31\n\t"
        "kmovq 2056(%[src]), %%k1\n\t"
        "kmovq 2064(%[src]), %%k2\n\t"
        "kmovq 2072(%[src]), %%k3\n\t"
        "kmovq 2080(%[src]), %%k4\n\t"
        "kmovq 2088(%[src]), %%k5\n\t"
        "kmovq 2096(%[src]), %%k6\n\t"
        "kmovq 2104(%[src]), %%k7\n\t"
        "syscall\n\t"
        "vmovdqu64 %%zmm0, 0(%[dst])\n\t"
        "vmovdqu64 %%zmm1, 64(%[dst])\n\t"
        "vmovdqu64 %%zmm2, 128(%[dst])\n\t"
        "vmovdqu64 %%zmm3, 192(%[dst])\n\t"
        "vmovdqu64 %%zmm4, 256(%[dst])\n\t"
        "vmovdqu64 %%zmm5, 320(%[dst])\n\t"
        "vmovdqu64 %%zmm6, 384(%[dst])\n\t"
        "vmovdqu64 %%zmm7, 448(%[dst])\n\t"
        "vmovdqu64 %%zmm8, 512(%[dst])\n\t"
        "vmovdqu64 %%zmm9, 576(%[dst])\n\t"
        "vmovdqu64 %%zmm10, 640(%[dst])\n\t"
        "vmovdqu64 %%zmm11, 704(%[dst])\n\t"
        "vmovdqu64 %%zmm12, 768(%[dst])\n\t"
        "vmovdqu64 %%zmm13, 832(%[dst])\n\t"
        "vmovdqu64 %%zmm14, 896(%[dst])\n\t"
        "vmovdqu64 %%zmm15, 960(%[dst])\n\t"
        "vmovdqu64 %%zmm16, 1024(%[dst])\n\t"
        "vmovdqu64 %%zmm17, 1088(%[dst])\n\t"
        "vmovdqu64 %%zmm18, 1152(%[dst])\n\t"
        "vmovdqu64 %%zmm19, 1216(%[dst])\n\t"
        "vmovdqu64 %%zmm20, 1280(%[dst])\n\t"
        "vmovdqu64 %%zmm21, 1344(%[dst])\n\t"
        "vmovdqu64 %%zmm22, 1408(%[dst])\n\t"
        "vmovdqu64 %%zmm23, 1472(%[dst])\n\t"
        "vmovdqu64 %%zmm24, 1536(%[dst])\n\t"
        "vmovdqu64 %%zmm25, 1600(%[dst])\n\t"
        "vmovdqu64 %%zmm26, 1664(%[dst])\n\t"
        "vmovdqu64 %%zmm27, 1728(%[dst])\n\t"
        "vmovdqu64 %%zmm28, 1792(%[dst])\n\t"
        "vmovdqu64 %%zmm29, 1856(%[dst])\n\t"
        "vmovdqu64 %%zmm30, 1920(%[dst])\n\t"
        "vmovdqu64 %%zmm31, 1984(%[dst])\n\t"
        "kmovq %%k1, 2056(%[dst])\n\t"
        "kmovq %%k2, 2064(%[dst])\n\t"
        "kmovq %%k3, 2072(%[dst])\n\t"
        "kmovq %%k4, 2080(%[dst])\n\t"
        "kmovq %%k5, 2088(%[dst])\n\t"
        "kmovq %%k6, 2096(%[dst])\n\t"
        "kmovq %%k7, 2104(%[dst])\n\t"
        : "+r"(rax)
        : [src] "r"(src), [dst] "r"(dst), "r"(rdi), "r"(rsi), "r"(rdx)
        : "rcx", "r11", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k1", "k2", "k3", "k4", "k5", "k6", "k7");
    return rax;
}

__attribute__((target("avx")))
static long read_holding_avx(const uint8_t *src, uint8_t *dst, char *buf, long len) {
    register long rax asm("rax") = SYS_read;
    register long rdi asm("rdi") = 0;
    register char *rsi asm("rsi") = buf;
    register long rdx asm("rdx") = len;
    asm volatile(
        "vmovdqu 0(%[src]), %%ymm0\n\t"
        "vmovdqu 32(%[src]), %%ymm1\n\t"
        "vmovdqu 64(%[src]), %%ymm2\n\t"
        "vmovdqu 96(%[src]), %%ymm3\n\t"
        "vmovdqu 128(%[src]), %%ymm4\n\t"
        "vmovdqu 160(%[src]), %%ymm5\n\t"
        "vmovdqu 192(%[src]), %%ymm6\n\t"
        "vmovdqu 224(%[src]), %%ymm7\n\t"
        "vmovdqu 256(%[src]), %%ymm8\n\t"
        "vmovdqu 288(%[src]), %%ymm9\n\t"
        "vmovdqu 320(%[src]), %%ymm10\n\t"
        "vmovdqu 352(%[src]), %%ymm11\n\t"
        "vmovdqu 384(%[src]), %%ymm12\n\t"
        "vmovdqu 416(%[src]), %%ymm13\n\t"
        "vmovdqu 448(%[src]), %%ymm14\n\t"
        "vmovdqu 480(%[src]), %%ymm15\n\t"
        "syscall\n\t"
        "vmovdqu %%ymm0, 0(%[dst])\n\t"
        "vmovdqu %%ymm1, 32(%[dst])\n\t"
        "vmovdqu %%ymm2, 64(%[dst])\n\t"
        "vmovdqu %%ymm3, 96(%[dst])\n\t"
        "vmovdqu %%ymm4, 128(%[dst])\n\t"
        "vmovdqu %%ymm5, 160(%[dst])\n\t"
        "vmovdqu %%ymm6, 192(%[dst])\n\t"
        "vmovdqu %%ymm7, 224(%[dst])\n\t"
        "vmovdqu %%ymm8, 256(%[dst])\n\t"
        "vmovdqu %%ymm9, 288(%[dst])\n\t"
        "vmovdqu %%ymm10, 320(%[dst])\n\t"
        "vmovdqu %%ymm11, 352(%[dst])\n\t"
        "vmovdqu %%ymm12, 384(%[dst])\n\t"
        "vmovdqu %%ymm13, 416(%[dst])\n\t"
        "vmovdqu %%ymm14, 448(%[dst])\n\t"
        "vmovdqu %%ymm15, 480(%[dst])\n\t"
        : "+r"(rax)
        : [src] "r"(src), [dst] "r"(dst), "r"(rdi), "r"(rsi), "r"(rdx)
        : "rcx", "r11", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    return rax;
}

static int maps_has(uintptr_t start, const char *perms) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (maps && fgets(line, sizeof line, maps)) {
        uintptr_t s = strtoull(line, NULL, 16);
        char p[8] = {0};
        sscanf(line, "%*[^ ] %4s", p);
        if (s == start && strcmp(p, perms) == 0) found = 1;
    }
    if (maps) fclose(maps);
    return found;
}

static volatile sig_atomic_t usr1_count;
static void count_usr1(int signal) {
    (void)signal;
    usr1_count++;
}

static int run_state(const char *private_path, const char *shared_path) {
    uint8_t *heap = malloc(HEAP_BYTES);
    if (!heap) return fail("malloc");
    for (size_t i = 0; i < HEAP_BYTES; i++) heap[i] = pattern(i);
    for (int i = 0; i < TLS_WORDS; i++) tls_words[i] = 0x1000 + (uint64_t)i * 77;

    int private_fd = open(private_path, O_RDONLY);
    uint8_t *private_map = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, private_fd, 0);
    close(private_fd);
    if (private_map == MAP_FAILED) return fail("mmap private file");
    memcpy(private_map + PAGE, "copied-on-write", 16); /* page 1 becomes anonymous */

    int shared_fd = open(shared_path, O_RDWR);
    uint8_t *shared_map = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, shared_fd, 0);
    close(shared_fd);
    if (shared_map == MAP_FAILED) return fail("mmap shared file");
    memcpy(shared_map, "shared-write", 12);

    uint8_t *guarded = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 3 * PAGE; i++) guarded[i] = (uint8_t)(i ^ 0x5a);
    mprotect(guarded + PAGE, PAGE, PROT_NONE);
    uint8_t *reservation = mmap(NULL, 64ull << 30, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

    static uint8_t src[4096], dst[4096];
    for (int i = 0; i < 4096; i++) src[i] = (uint8_t)(i * 31 + 7);
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    int avx = __builtin_cpu_supports("avx");

    /* Signal state that must come back as it was: an alternate stack,
     * a blocked mask and a handler. */
    static uint8_t altstack[64 * 1024];
    stack_t stack = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    if (sigaltstack(&stack, NULL) != 0) return fail("sigaltstack");
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR2);
    sigaddset(&blocked, SIGWINCH);
    if (sigprocmask(SIG_SETMASK, &blocked, NULL) != 0) return fail("sigprocmask");
    struct sigaction handler = {.sa_handler = count_usr1, .sa_flags = SA_RESTART | SA_ONSTACK};
    if (sigaction(SIGUSR1, &handler, NULL) != 0) return fail("sigaction");

    printf("READY %d\n", getpid());
    fflush(stdout);

    char line[64] = {0};
    long got;
    size_t compared;
    if (avx512) {
        got = read_holding_avx512(src, dst, line, sizeof line - 1);
        compared = 2048 + 64;
    } else if (avx) {
        got = read_holding_avx(src, dst, line, sizeof line - 1);
        compared = 512;
    } else {
        got = read(0, line, sizeof line - 1);
        compared = 0;
        memcpy(dst, src, sizeof dst);
    }
    if (got <= 0) return fail("read from stdin");
    for (size_t i = 0; i < compared; i++) {
        if (i >= 2048 && i < 2048 + 8) continue; /* k0 is not loaded */
        if (dst[i] != src[i]) {
            char reason[64];
            snprintf(reason, sizeof reason, "vector register byte %zu changed", i);
            return fail(reason);
        }
    }
    stack_t now_stack;
    sigset_t now_blocked;
    struct sigaction now_handler;
    if (sigaltstack(NULL, &now_stack) != 0 || now_stack.ss_sp != altstack || now_stack.ss_size != sizeof altstack ||
        now_stack.ss_flags != 0)
        return fail("alternate signal stack changed");
    if (sigprocmask(SIG_SETMASK, NULL, &now_blocked) != 0 || !sigismember(&now_blocked, SIGUSR2) ||
        !sigismember(&now_blocked, SIGWINCH) || sigismember(&now_blocked, SIGUSR1) || sigismember(&now_blocked, SIGTERM))
        return fail("blocked signal mask changed");
    if (sigaction(SIGUSR1, NULL, &now_handler) != 0 || now_handler.sa_handler != count_usr1 ||
        !(now_handler.sa_flags & SA_ONSTACK))
        return fail("SIGUSR1 handler changed");
    for (size_t i = 0; i < HEAP_BYTES; i++)
        if (heap[i] != pattern(i)) return fail("heap pattern");
    for (int i = 0; i < TLS_WORDS; i++)
        if (tls_words[i] != 0x1000 + (uint64_t)i * 77) return fail("TLS words");
    if (tls_marker != 0x715715715ull) return fail("TLS initialiser");
    if (memcmp(private_map, "private-page-0", 14) != 0) return fail("private file page 0");
    if (memcmp(private_map + PAGE, "copied-on-write", 16) != 0) return fail("COW page of private file");
    if (memcmp(private_map + 2 * PAGE, "private-page-2", 14) != 0) return fail("private file page 2");
    if (memcmp(shared_map, "shared-write", 12) != 0) return fail("shared file mapping");
    if (!maps_has((uintptr_t)(guarded + PAGE), "---p")) return fail("guard page is no longer PROT_NONE");
    if (!maps_has((uintptr_t)reservation, "---p")) return fail("PROT_NONE reservation missing");
    mprotect(guarded + PAGE, PAGE, PROT_READ);
    for (int i = 0; i < 3 * PAGE; i++)
        if (guarded[i] != (uint8_t)(i ^ 0x5a)) return fail("data behind the guard page");
    printf("OK pid=%d vectors=%s line=%s", getpid(), avx512 ? "avx512" : avx ? "avx" : "sse", line);
    fflush(stdout);
    return 0;
}

/* Two descriptors on one open file description (dup3, fd 5 close-on-exec)
 * must still share their offset after a restore. */
static int run_dup(const char *path) {
    int fd = open(path, O_RDWR);
    if (fd != 3) return fail("open did not give fd 3");
    if (dup3(3, 5, O_CLOEXEC) != 5) return fail("dup3");
    if (lseek(3, 10, SEEK_SET) != 10) return fail("lseek");
    printf("READY %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (read(0, line, sizeof line) <= 0) return fail("read from stdin");
    if (lseek(5, 0, SEEK_CUR) != 10) return fail("fd 5 lost the shared offset");
    if (lseek(3, 5, SEEK_CUR) != 15 || lseek(5, 0, SEEK_CUR) != 15) return fail("fd 3 and fd 5 no longer share an offset");
    if (fcntl(3, F_GETFD) != 0 || fcntl(5, F_GETFD) != FD_CLOEXEC) return fail("close-on-exec flags changed");
    printf("OK pid=%d shared\n", getpid());
    fflush(stdout);
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int run_sleep(double seconds) {
    /* SIGINT must end it (the interrupt test), whatever was inherited: a
     * test run from a shell's background job starts with SIGINT ignored. */
    signal(SIGINT, SIG_DFL);
    double start = now();
    printf("READY %d\n", getpid());
    fflush(stdout);
    struct timespec request = {(time_t)seconds, 0}, remaining = {0, 0};
    if (nanosleep(&request, &remaining) != 0) {
        char reason[64];
        snprintf(reason, sizeof reason, "nanosleep: %s", strerror(errno));
        return fail(reason);
    }
    double slept = now() - start;
    if (slept < seconds) return fail("woke up early");
    printf("OK pid=%d slept=%.2f\n", getpid(), slept);
    fflush(stdout);
    return 0;
}

static volatile sig_atomic_t alarmed;

static void on_alarm(int signal) {
    (void)signal;
    alarmed = 1;
}

static int run_identity(void) {
    struct rlimit nofile = {123, 456};
    if (setrlimit(RLIMIT_NOFILE, &nofile) != 0) return fail("setrlimit");
    signal(SIGALRM, on_alarm);
    double start = now();
    struct itimerval alarm_in = {{0, 0}, {2, 0}};
    setitimer(ITIMER_REAL, &alarm_in, NULL);
    printf("READY %d\n", getpid());
    fflush(stdout);
    struct timespec tick = {0, 50 * 1000 * 1000};
    while (!alarmed && now() - start < 20) nanosleep(&tick, NULL);
    if (!alarmed) return fail("SIGALRM never came");
    double waited = now() - start;
    if (waited < 2.0) return fail("SIGALRM came early");
    getrlimit(RLIMIT_NOFILE, &nofile);
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    getresuid(&ruid, &euid, &suid);
    getresgid(&rgid, &egid, &sgid);
    printf("OK pid=%d uid=%d/%d/%d gid=%d/%d/%d groups=%d nofile=%llu/%llu dumpable=%d alarm=%.2f\n", getpid(),
           ruid, euid, suid, rgid, egid, sgid, getgroups(0, NULL), (unsigned long long)nofile.rlim_cur,
           (unsigned long long)nofile.rlim_max, prctl(PR_GET_DUMPABLE), waited);
    fflush(stdout);
    return 0;
}

/* 64-bit patterns (high halves set) for the general registers. */
static const uint64_t spin_patterns[13] = {
    0x8111111111111101ull, 0x9222222222222202ull, 0xa333333333333303ull, 0xb444444444444404ull,
    0xc555555555555505ull, 0xd666666666666606ull, 0xe777777777777707ull, 0xf888888888888808ull,
    0x8999999999999909ull, 0x9aaaaaaaaaaaaa0aull, 0xabbbbbbbbbbbbb0bull, 0xbccccccccccccc0cull,
    0xcddddddddddddd0dull,
};

/* Loops until `alarmed`, with every general register but rcx, rbp and rsp
 * holding a pattern, compared on every iteration; returns the number of
 * mismatches seen (0 or 1). A SIGALRM handler runs in between; sigreturn
 * restores the registers, as a restore must. */
static long spin_holding_registers(void) {
    long mismatches;
    __asm__ volatile(
        "mov %[p0], %%rax\n"
        "mov %[p1], %%rbx\n"
        "mov %[p2], %%rdx\n"
        "mov %[p3], %%rsi\n"
        "mov %[p4], %%rdi\n"
        "mov %[p5], %%r8\n"
        "mov %[p6], %%r9\n"
        "mov %[p7], %%r10\n"
        "mov %[p8], %%r11\n"
        "mov %[p9], %%r12\n"
        "mov %[p10], %%r13\n"
        "mov %[p11], %%r14\n"
        "mov %[p12], %%r15\n"
        "xor %%ecx, %%ecx\n"
        "1:\n"
        "cmp %[p0], %%rax\n jne 2f\n"
        "cmp %[p1], %%rbx\n jne 2f\n"
        "cmp %[p2], %%rdx\n jne 2f\n"
        "cmp %[p3], %%rsi\n jne 2f\n"
        "cmp %[p4], %%rdi\n jne 2f\n"
        "cmp %[p5], %%r8\n jne 2f\n"
        "cmp %[p6], %%r9\n jne 2f\n"
        "cmp %[p7], %%r10\n jne 2f\n"
        "cmp %[p8], %%r11\n jne 2f\n"
        "cmp %[p9], %%r12\n jne 2f\n"
        "cmp %[p10], %%r13\n jne 2f\n"
        "cmp %[p11], %%r14\n jne 2f\n"
        "cmp %[p12], %%r15\n jne 2f\n"
        "cmpl $0, %[alarmed]\n"
        "je 1b\n"
        "jmp 3f\n"
        "2: inc %%ecx\n"
        "3: mov %%rcx, %[mismatches]\n"
        : [mismatches] "=m"(mismatches)
        : [alarmed] "m"(alarmed), [p0] "m"(spin_patterns[0]), [p1] "m"(spin_patterns[1]), [p2] "m"(spin_patterns[2]), [p3] "m"(spin_patterns[3]), [p4] "m"(spin_patterns[4]), [p5] "m"(spin_patterns[5]), [p6] "m"(spin_patterns[6]), [p7] "m"(spin_patterns[7]), [p8] "m"(spin_patterns[8]), [p9] "m"(spin_patterns[9]), [p10] "m"(spin_patterns[10]), [p11] "m"(spin_patterns[11]), [p12] "m"(spin_patterns[12])
        : "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "cc",
          "memory");
    return mismatches;
}

static double cpu_seconds_used(void) {
    struct timespec used;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used) != 0) return -1;
    return used.tv_sec + used.tv_nsec / 1e9;
}

static int run_spin(double seconds, int cpu_time, double wait_after) {
    signal(cpu_time ? SIGPROF : SIGALRM, on_alarm);
    struct itimerval timer = {{0, 0}, {(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6)}};
    if (setitimer(cpu_time ? ITIMER_PROF : ITIMER_REAL, &timer, NULL) != 0) return fail("setitimer");
    printf("READY %d\n", getpid());
    fflush(stdout);
    if (wait_after > 0) {
        /* Mostly in user mode, as the spin after: a clock read every few
         * million iterations (ITIMER_PROF, sampled at ticks, runs ahead of
         * the precise clock in a loop that is mostly syscalls). */
        while (cpu_seconds_used() < wait_after) {
            for (volatile unsigned long i = 0; i < (1ul << 22); i++) {
            }
        }
        printf("SPUN\n");
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof line, stdin)) return fail("no line on stdin");
    }
    if (spin_holding_registers() != 0) return fail("a general register lost its value");
    if (cpu_time) {
        /* CPU time this process (a restored one counts from its restore) used. */
        struct timespec used;
        if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used) != 0) return fail("clock_gettime");
        printf("OK pid=%d registers kept cpu=%.3f\n", getpid(), used.tv_sec + used.tv_nsec / 1e9);
        fflush(stdout);
        return 0;
    }
    printf("OK pid=%d registers kept\n", getpid());
    fflush(stdout);
    return 0;
}

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#endif
#define IOPRIO_BEST_EFFORT_6 ((2 << 13) | 6)

static int read_oom_score_adj(void) {
    char text[16] = {0};
    int fd = open("/proc/self/oom_score_adj", O_RDONLY);
    if (fd < 0 || read(fd, text, sizeof text - 1) <= 0) return -10000;
    close(fd);
    return atoi(text);
}

static long read_proc_number(const char *path, int base) {
    char text[32] = {0};
    int fd = open(path, O_RDONLY);
    if (fd < 0 || read(fd, text, sizeof text - 1) <= 0) return -1;
    close(fd);
    return strtol(text, NULL, base);
}

static int write_proc_text(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    int ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    close(fd);
    return ok ? 0 : -1;
}

#define ARCH_GET_CPUID 0x1011
#define ARCH_SET_CPUID 0x1012
#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int run_attributes(void) {
    if (prctl(PR_SET_NAME, "attr-subject", 0, 0, 0) != 0) return fail("PR_SET_NAME");
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return fail("sched_getaffinity");
    int last = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &allowed)) last = cpu;
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) return fail("sched_setaffinity");
    if (prctl(PR_SET_TIMERSLACK, 123456, 0, 0, 0) != 0) return fail("PR_SET_TIMERSLACK");
    struct sched_param param = {0};
    if (sched_setscheduler(0, SCHED_BATCH | SCHED_RESET_ON_FORK, &param) != 0) return fail("sched_setscheduler");
    if (setpriority(PRIO_PROCESS, 0, 7) != 0) return fail("setpriority");
    /* A kernel without a block layer (the lab's) has no I/O priority. */
    int ioprio = syscall(SYS_ioprio_set, 1, 0, IOPRIO_BEST_EFFORT_6) == 0;
    if (!ioprio && errno != ENOSYS) return fail("ioprio_set");
    if (prctl(PR_SET_PDEATHSIG, SIGWINCH, 0, 0, 0) != 0) return fail("PR_SET_PDEATHSIG");
    if (prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0) != 0) return fail("PR_MCE_KILL");
    int speculation = prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0);
    if (speculation > 0 && (speculation & PR_SPEC_PRCTL) && (speculation & PR_SPEC_ENABLE))
        if (prctl(PR_SET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, PR_SPEC_DISABLE, 0, 0) != 0)
            return fail("PR_SET_SPECULATION_CTRL");
    speculation = prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0);

    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0) return fail("PR_SET_THP_DISABLE");
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0) return fail("membarrier");
    int oom = open("/proc/self/oom_score_adj", O_WRONLY);
    if (oom < 0 || write(oom, "400\n", 4) != 4) return fail("write oom_score_adj");
    close(oom);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) return fail("PR_SET_CHILD_SUBREAPER");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail("PR_SET_NO_NEW_PRIVS");
    if (prctl(PR_SET_MDWE, 1, 0, 0, 0) != 0) return fail("PR_SET_MDWE");
    if (write_proc_text("/proc/self/coredump_filter", "0x7f") != 0) return fail("write coredump_filter");
    /* Where the CPU has AMX, where audit lets root set it, where the CPU faults cpuid. */
    int amx = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    int login = write_proc_text("/proc/self/loginuid", "4242") == 0;
    int cpuid_faults = syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) == 0;
    /* PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS 16 (Linux 6.17+). */
    int futex_hash = prctl(78, 1, 16, 0, 0) == 0;

    printf("READY %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (read(0, line, sizeof line) <= 0) return fail("read from stdin");

    char name[16] = {0};
    cpu_set_t now;
    int signal = 0, subreaper = 0;
    prctl(PR_GET_NAME, name, 0, 0, 0);
    if (strcmp(name, "attr-subject") != 0) return fail("thread name changed");
    if (sched_getaffinity(0, sizeof now, &now) != 0 || !CPU_EQUAL(&now, &one)) return fail("CPU affinity changed");
    if (sched_getscheduler(0) != (SCHED_BATCH | SCHED_RESET_ON_FORK)) return fail("scheduling policy changed");
    errno = 0;
    if (getpriority(PRIO_PROCESS, 0) != 7 || errno != 0) return fail("nice value changed");
    if (prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) != 123456) return fail("timer slack changed");
    if (ioprio && syscall(SYS_ioprio_get, 1, 0) != IOPRIO_BEST_EFFORT_6) return fail("I/O priority changed");
    if (prctl(PR_GET_PDEATHSIG, &signal, 0, 0, 0) != 0 || signal != SIGWINCH) return fail("parent-death signal changed");
    if (prctl(PR_MCE_KILL_GET, 0, 0, 0, 0) != PR_MCE_KILL_EARLY) return fail("machine-check kill policy changed");
    if (prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0) != speculation)
        return fail("store-bypass speculation control changed");
    if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1) return fail("THP disable lost");
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
        char reason[64];
        snprintf(reason, sizeof reason, "membarrier registration lost: %s", strerror(errno));
        return fail(reason);
    }
    if (read_oom_score_adj() != 400) return fail("oom_score_adj changed");
    if (prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0) != 0 || subreaper != 1) return fail("child subreaper lost");
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) return fail("no_new_privs lost");
    if (prctl(PR_GET_MDWE, 0, 0, 0, 0) != 1) return fail("MDWE lost");
    if (read_proc_number("/proc/self/coredump_filter", 16) != 0x7f) return fail("coredump_filter changed");
    unsigned long long permitted = 0;
    if (amx && (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &permitted) != 0 ||
                !(permitted & (1ULL << XFEATURE_XTILEDATA))))
        return fail("AMX tile data permission lost");
    if (login && read_proc_number("/proc/self/loginuid", 10) != 4242) return fail("login uid changed");
    if (cpuid_faults && syscall(SYS_arch_prctl, ARCH_GET_CPUID) != 0) return fail("cpuid faulting lost");
    if (futex_hash && prctl(78, 2, 0, 0, 0) != 16) return fail("private futex hash slots changed");
    printf("OK pid=%d attributes kept (cpu %d, speculation %#x, amx %d, login uid %d, cpuid faulting %d, futex "
           "hash %d)\n",
           getpid(), last, speculation, amx, login, cpuid_faults, futex_hash);
    fflush(stdout);
    return 0;
}

static int run_seccomp(void) {
    struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog program = {1, &allow};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail("PR_SET_NO_NEW_PRIVS");
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) return fail("PR_SET_SECCOMP");
    printf("READY %d\n", getpid());
    fflush(stdout);
    char line[64];
    return read(0, line, sizeof line) > 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "state") == 0) return run_state(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "state") == 0) {
        HEAP_BYTES = (size_t)atoi(argv[4]) << 20;
        return run_state(argv[2], argv[3]);
    }
    if (argc == 3 && strcmp(argv[1], "sleep") == 0) return run_sleep(atof(argv[2]));
    if (argc == 2 && strcmp(argv[1], "seccomp") == 0) return run_seccomp();
    if (argc == 3 && strcmp(argv[1], "spin") == 0) return run_spin(atof(argv[2]), 0, 0);
    if (argc == 4 && strcmp(argv[1], "spin") == 0 && strcmp(argv[3], "prof") == 0) return run_spin(atof(argv[2]), 1, 0);
    if (argc == 5 && strcmp(argv[1], "spin") == 0 && strcmp(argv[3], "prof-wait") == 0)
        return run_spin(atof(argv[2]), 1, atof(argv[4]));
    if (argc == 2 && strcmp(argv[1], "identity") == 0) return run_identity();
    if (argc == 3 && strcmp(argv[1], "dup") == 0) return run_dup(argv[2]);
    if (argc == 2 && strcmp(argv[1], "attributes") == 0) return run_attributes();
    fprintf(stderr, "usage: subject state PRIVATE SHARED | subject sleep SECONDS | subject identity | subject seccomp\n");
    return 2;
}
