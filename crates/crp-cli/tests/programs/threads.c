/* A process of seven threads, each with state of its own, dumped while the
 * workers wait in different system calls or compute:
 *   worker 0 waits on a condition variable (futex),
 *   worker 1 in read() of a pipe,
 *   worker 2 in epoll_wait(),
 *   worker 3 in nanosleep() (a 1-second sleep, restarted until told),
 *   workers 4 and 5 spin in assembly with patterns of their own in
 *   general (r12, r13) and vector (xmm8, xmm9) registers, checked after,
 * each named "worker-N", with its own blocked mask (SIGRTMIN+N), CPU
 * affinity, thread-local counter and, for worker 1, an alternate signal
 * stack; worker 3 has SIGUSR2 pending for itself alone (blocked, sent with
 * tgkill). Worker 0 holds a robust mutex and exits without unlocking it.
 * After "go" on stdin, each worker checks its own id, name, mask,
 * affinity, counter and stack, is woken its way, and reports; the leader
 * joins them all (clear_child_tid) and takes the robust mutex
 * (EOWNERDEAD: the robust list came back), then prints
 * "OK pid=<pid> threads restored". */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "subject_protocol.h"

#define WORKERS 6

static __thread long counter;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t condition = PTHREAD_COND_INITIALIZER;
static int woken;
static pthread_mutex_t robust;
static int pipe_ends[2];
static int epoll_fd, event_pipe[2];
static atomic_int ready, told, computing_seen;
static pid_t tids[WORKERS];
static int cpus[WORKERS];
static char altstack[1 << 16];
static volatile sig_atomic_t usr2_tid;
static char failures[WORKERS][160];

/* Spins until `told`, with `pattern` in r12 and xmm8 and its complement
 * in r13 and xmm9 the whole time; 1 when they still hold them after. */
static int spin_with_patterns(unsigned long pattern) {
    unsigned long held = 0;
    __asm__ volatile(
        "movq %[pattern], %%r12\n\t"
        "movq %[pattern], %%r13\n\t"
        "notq %%r13\n\t"
        "movq %%r12, %%xmm8\n\t"
        "movq %%r13, %%xmm9\n\t"
        "lock incl %[seen]\n\t"
        "1:\n\t"
        "pause\n\t"
        "cmpl $0, %[told]\n\t"
        "je 1b\n\t"
        "movq %%xmm8, %%rax\n\t"
        "cmpq %%rax, %%r12\n\t"
        "jne 2f\n\t"
        "cmpq %[pattern], %%rax\n\t"
        "jne 2f\n\t"
        "movq %%xmm9, %%rax\n\t"
        "cmpq %%rax, %%r13\n\t"
        "jne 2f\n\t"
        "notq %%rax\n\t"
        "cmpq %[pattern], %%rax\n\t"
        "jne 2f\n\t"
        "movq $1, %[held]\n\t"
        "2:\n\t"
        : [held] "+r"(held), [seen] "+m"(computing_seen)
        : [pattern] "r"(pattern), [told] "m"(told)
        : "rax", "r12", "r13", "xmm8", "xmm9", "cc", "memory");
    return held == 1;
}

static void on_usr2(int signal) {
    (void)signal;
    usr2_tid = syscall(SYS_gettid);
}

static void failed(int index, const char *what) {
    snprintf(failures[index], sizeof failures[index], "worker %d: %s (errno %d)", index, what, errno);
}

/* Everything a worker checks of itself after the restore; 0 when all is
 * as it was. */
static int check_self(int index) {
    char name[16], wanted[16];
    snprintf(wanted, sizeof wanted, "worker-%d", index);
    if (syscall(SYS_gettid) != tids[index]) return failed(index, "thread id changed"), 1;
    if (pthread_getname_np(pthread_self(), name, sizeof name) != 0 || strcmp(name, wanted) != 0)
        return failed(index, "name lost"), 1;
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    if (!sigismember(&mask, SIGRTMIN + index) || sigismember(&mask, SIGRTMIN + (index + 1) % WORKERS))
        return failed(index, "blocked mask lost"), 1;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) != 1 || !CPU_ISSET(cpus[index], &set))
        return failed(index, "affinity lost"), 1;
    if (counter != 1000L * index + 1) return failed(index, "thread-local counter lost"), 1;
    stack_t stack;
    sigaltstack(NULL, &stack);
    int has_stack = !(stack.ss_flags & SS_DISABLE) && stack.ss_sp == altstack;
    if (has_stack != (index == 1)) return failed(index, "alternate stack wrong"), 1;
    return 0;
}

static void *worker(void *argument) {
    int index = (int)(long)argument;
    char name[16];
    snprintf(name, sizeof name, "worker-%d", index);
    pthread_setname_np(pthread_self(), name);
    tids[index] = syscall(SYS_gettid);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGRTMIN + index);
    if (index == 3) sigaddset(&mask, SIGUSR2);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpus[index], &set);
    sched_setaffinity(0, sizeof set, &set);
    counter = 1000L * index + 1;
    if (index == 1) {
        stack_t stack = {.ss_sp = altstack, .ss_size = sizeof altstack};
        sigaltstack(&stack, NULL);
    }
    if (index == 0) pthread_mutex_lock(&robust);
    atomic_fetch_add(&ready, 1);
    char byte;
    struct epoll_event event;
    switch (index) {
    case 0:
        pthread_mutex_lock(&lock);
        while (!woken) pthread_cond_wait(&condition, &lock);
        pthread_mutex_unlock(&lock);
        break;
    case 1:
        if (read(pipe_ends[0], &byte, 1) != 1) return failed(index, "read"), NULL;
        break;
    case 2:
        /* Linux never restarts epoll_wait: crp's freeze, like a SIGSTOP
         * and SIGCONT, ends it, and crp makes it wait again (no EINTR). */
        if (epoll_wait(epoll_fd, &event, 1, -1) != 1) return failed(index, "epoll_wait"), NULL;
        break;
    case 3:
        while (!atomic_load(&told)) {
            struct timespec second = {1, 0};
            nanosleep(&second, NULL);
        }
        break;
    case 4:
    case 5:
        if (!spin_with_patterns(0x0123456789abcdefUL * (unsigned long)index))
            return failed(index, "register patterns lost"), NULL;
        break;
    }
    if (check_self(index)) return NULL;
    if (index == 3) {
        sigset_t usr2;
        sigemptyset(&usr2);
        sigaddset(&usr2, SIGUSR2);
        pthread_sigmask(SIG_UNBLOCK, &usr2, NULL);
        if (usr2_tid != tids[3]) return failed(index, "its own pending SIGUSR2 did not reach it"), NULL;
    }
    /* Worker 0 ends holding the robust mutex. */
    return (void *)1;
}

int main(void) {
    close_range(3, ~0U, 0);
    signal(SIGUSR2, on_usr2);
    pthread_mutexattr_t attributes;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&robust, &attributes);
    if (pipe(pipe_ends) || pipe(event_pipe)) return fail("pipe");
    epoll_fd = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, event_pipe[0], &event)) return fail("epoll_ctl");
    cpu_set_t allowed;
    sched_getaffinity(0, sizeof allowed, &allowed);
    int cpu = -1;
    for (int index = 0; index < WORKERS; index++) {
        do cpu = (cpu + 1) % CPU_SETSIZE;
        while (!CPU_ISSET(cpu, &allowed));
        cpus[index] = cpu;
    }
    pthread_t threads[WORKERS];
    for (long index = 0; index < WORKERS; index++)
        if (pthread_create(&threads[index], NULL, worker, (void *)index)) return fail("pthread_create");
    while (atomic_load(&ready) < WORKERS || atomic_load(&computing_seen) < 2) sched_yield();
    syscall(SYS_tgkill, getpid(), tids[3], SIGUSR2);

    wait_for_go();
    /* A restore that lost a thread must fail, not hang. */
    alarm(60);
    pthread_mutex_lock(&lock);
    woken = 1;
    pthread_cond_signal(&condition);
    pthread_mutex_unlock(&lock);
    if (write(pipe_ends[1], "x", 1) != 1 || write(event_pipe[1], "x", 1) != 1) return fail("write");
    atomic_store(&told, 1);
    for (int index = 0; index < WORKERS; index++) {
        void *result;
        if (pthread_join(threads[index], &result)) return fail("pthread_join");
        if (result == NULL) {
            printf("FAIL %s\n", failures[index]);
            return 1;
        }
    }
    if (pthread_mutex_lock(&robust) != EOWNERDEAD) return fail("robust mutex not marked owner-dead");
    printf("OK pid=%d threads restored\n", getpid());
    return 0;
}
