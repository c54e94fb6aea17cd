/* Pending signals and handler flags. Sets up, with every signal below
 * blocked:
 *   process-wide queue: SIGUSR1 (kill, SI_USER from itself), SIGRTMIN+5
 *     (sigqueue, value 5), SIGRTMIN+2 three times (sigqueue, values 111,
 *     222, 333), and what its parent sends after READY: SIGTERM (kill) and
 *     SIGRTMIN+4 (sigqueue, value 0x4242);
 *   its thread's queue: SIGUSR2 (tgkill, SI_TKILL) and SIGRTMIN+3
 *     (rt_tgsigqueueinfo, SI_QUEUE, value 7);
 *   handlers: SIGUSR1 SA_SIGINFO|SA_RESTART|SA_ONSTACK (on an altstack),
 *     SIGUSR2 SA_SIGINFO|SA_NODEFER|SA_RESETHAND, SIGRTMIN+5 a plain
 *     handler blocking SIGINT, SIGTERM SA_SIGINFO, SIGALRM SA_RESTART (its
 *     handler writes into a pipe whose other end a read() waits on: the
 *     read must restart, not fail with EINTR), SIGTRAP SA_SIGINFO (kept while
 *     the restore single-steps: a blocked SIGTRAP forced by a step would
 *     be reset to SIG_DFL).
 * Prints "READY <pid>", waits for "parent-sent\n" (the parent has queued its
 * two), waits for the go line, then checks every handler's flags, mask,
 * restorer, which signals are pending in which queue, each siginfo in queue
 * order (sigtimedwait), and each handler's behaviour once unblocked. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>

#include "subject_protocol.h"

static pid_t self_pid, parent_pid;
static char altstack[1 << 16];
static volatile sig_atomic_t usr1_count, usr2_count, rt5_count, term_count;
static volatile int usr1_code, usr1_pid, usr1_on_altstack, usr2_code, usr2_unblocked_inside, rt5_int_blocked;
static volatile int term_code, term_pid;

static void on_usr1(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)context;
    char here;
    usr1_on_altstack = &here >= altstack && &here < altstack + sizeof altstack;
    usr1_code = info->si_code;
    usr1_pid = info->si_pid;
    usr1_count++;
}

static void on_usr2(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)context;
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    usr2_unblocked_inside = !sigismember(&now, SIGUSR2);
    usr2_code = info->si_code;
    usr2_count++;
}

static void on_rt5(int sig) {
    (void)sig;
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    rt5_int_blocked = sigismember(&now, SIGINT);
    rt5_count++;
}

static void on_trap(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)info;
    (void)context;
}

static void on_alarm(int sig) {
    (void)sig;
    if (write(4, "r", 1) != 1) _exit(3);
}

static void on_term(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)context;
    term_code = info->si_code;
    term_pid = info->si_pid;
    term_count++;
}

struct expected_action {
    int signal;
    int flags;
    void *handler;
    int masks_sigint;
};
static struct expected_action expected[6];
static void *restorer_at_setup;

static int install(int index, int signal, int flags, void *handler, int mask_sigint) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_flags = flags;
    if (flags & SA_SIGINFO)
        action.sa_sigaction = handler;
    else
        action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    if (mask_sigint) sigaddset(&action.sa_mask, SIGINT);
    if (sigaction(signal, &action, NULL) != 0) return -1;
    struct sigaction now;
    if (sigaction(signal, NULL, &now) != 0) return -1;
    expected[index] = (struct expected_action){signal, now.sa_flags, handler, mask_sigint};
    restorer_at_setup = (void *)now.sa_restorer;
    return 0;
}

static int queue_to_self(int signal, int value) {
    return sigqueue(self_pid, signal, (union sigval){.sival_int = value});
}

static int queue_to_thread(int signal, int value) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    info.si_signo = signal;
    info.si_code = SI_QUEUE;
    info.si_pid = self_pid;
    info.si_uid = getuid();
    info.si_value.sival_int = value;
    return (int)syscall(SYS_rt_tgsigqueueinfo, self_pid, (pid_t)syscall(SYS_gettid), signal, &info);
}

/* The status line `key` as a mask. */
static unsigned long long status_mask(const char *key) {
    FILE *status = fopen("/proc/self/status", "r");
    if (!status) return ~0ULL;
    char line[256];
    unsigned long long mask = ~0ULL;
    size_t length = strlen(key);
    while (fgets(line, sizeof line, status))
        if (strncmp(line, key, length) == 0 && line[length] == ':') mask = strtoull(line + length + 1, NULL, 16);
    fclose(status);
    return mask;
}

static unsigned long long bit(int signal) {
    return 1ULL << (signal - 1);
}

/* Takes the next `signal` with sigtimedwait and checks its siginfo. */
static int take(int signal, int code, pid_t pid, int value, int check_value) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signal);
    siginfo_t info;
    struct timespec none = {0, 0};
    if (sigtimedwait(&set, &info, &none) != signal) return -1;
    if (info.si_signo != signal || info.si_code != code || info.si_pid != pid || info.si_uid != getuid()) return -2;
    if (check_value && info.si_value.sival_int != value) return -3;
    return 0;
}

int main(void) {
    for (int fd = 3; fd < 1024; fd++) close(fd);
    self_pid = getpid();
    parent_pid = getppid();
    sigset_t all;
    sigfillset(&all);
    /* A SIGCONT that ends a stop is not left pending. */
    sigdelset(&all, SIGCONT);
    sigprocmask(SIG_BLOCK, &all, NULL);
    int ends[2];
    if (pipe(ends) || place(ends[0], 3) != 3 || place(ends[1], 4) != 4) return fail("pipe");
    stack_t stack = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    if (sigaltstack(&stack, NULL) != 0) return fail("sigaltstack");
    if (install(0, SIGUSR1, SA_SIGINFO | SA_RESTART | SA_ONSTACK, (void *)on_usr1, 0) ||
        install(1, SIGUSR2, SA_SIGINFO | SA_NODEFER | SA_RESETHAND, (void *)on_usr2, 0) ||
        install(2, SIGRTMIN + 5, 0, (void *)on_rt5, 1) || install(3, SIGTERM, SA_SIGINFO, (void *)on_term, 0) ||
        install(4, SIGALRM, SA_RESTART, (void *)on_alarm, 0) || install(5, SIGTRAP, SA_SIGINFO, (void *)on_trap, 0))
        return fail("sigaction");
    if (kill(self_pid, SIGUSR1) || queue_to_self(SIGRTMIN + 5, 5) || queue_to_self(SIGRTMIN + 2, 111) ||
        queue_to_self(SIGRTMIN + 2, 222) || queue_to_self(SIGRTMIN + 2, 333))
        return fail("queue to the process");
    if (syscall(SYS_tgkill, self_pid, (pid_t)syscall(SYS_gettid), SIGUSR2) || queue_to_thread(SIGRTMIN + 3, 7))
        return fail("queue to the thread");
    printf("READY %d\n", self_pid);
    fflush(stdout);
    char line[32];
    if (read(0, line, sizeof line) <= 0 || strncmp(line, "parent-sent", 11) != 0) return fail("read parent-sent");
    printf("QUEUED\n");
    fflush(stdout);
    if (read(0, line, sizeof line) <= 0) return fail("read the go line");

    /* Nothing was delivered across the checkpoint: every one is blocked. */
    if (usr1_count || usr2_count || rt5_count || term_count) return fail("a blocked signal was delivered");
    for (int index = 0; index < 6; index++) {
        struct sigaction now;
        if (sigaction(expected[index].signal, NULL, &now) != 0) return fail("sigaction read");
        void *handler = (now.sa_flags & SA_SIGINFO) ? (void *)now.sa_sigaction : (void *)now.sa_handler;
        if (now.sa_flags != expected[index].flags) return fail("handler flags changed");
        if (handler != expected[index].handler) return fail("handler address changed");
        if ((void *)now.sa_restorer != restorer_at_setup) return fail("restorer changed");
        if (sigismember(&now.sa_mask, SIGINT) != expected[index].masks_sigint) return fail("handler mask changed");
    }
    stack_t now_stack;
    if (sigaltstack(NULL, &now_stack) || now_stack.ss_sp != altstack || now_stack.ss_size != sizeof altstack)
        return fail("altstack changed");

    unsigned long long thread = bit(SIGUSR2) | bit(SIGRTMIN + 3);
    unsigned long long shared =
        bit(SIGUSR1) | bit(SIGTERM) | bit(SIGRTMIN + 2) | bit(SIGRTMIN + 4) | bit(SIGRTMIN + 5);
    if (status_mask("SigPnd") != thread) return fail("the thread's pending set (SigPnd) differs");
    if (status_mask("ShdPnd") != shared) return fail("the process's pending set (ShdPnd) differs");

    /* Each real-time instance in queue order with its exact siginfo. */
    if (take(SIGRTMIN + 2, SI_QUEUE, self_pid, 111, 1) || take(SIGRTMIN + 2, SI_QUEUE, self_pid, 222, 1) ||
        take(SIGRTMIN + 2, SI_QUEUE, self_pid, 333, 1))
        return fail("SIGRTMIN+2 instances");
    if (take(SIGRTMIN + 2, 0, 0, 0, 0) != -1) return fail("a fourth SIGRTMIN+2");
    if (take(SIGRTMIN + 4, SI_QUEUE, parent_pid, 0x4242, 1)) return fail("SIGRTMIN+4 from the parent");
    if (take(SIGRTMIN + 3, SI_QUEUE, self_pid, 7, 1)) return fail("SIGRTMIN+3 in the thread queue");

    /* The rest through their handlers, one at a time. */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    if (usr1_count != 1 || usr1_code != SI_USER || usr1_pid != self_pid) return fail("SIGUSR1 siginfo");
    if (!usr1_on_altstack) return fail("SIGUSR1 did not run on the altstack");
    sigemptyset(&one);
    sigaddset(&one, SIGUSR2);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    if (usr2_count != 1 || usr2_code != SI_TKILL) return fail("SIGUSR2 siginfo");
    if (!usr2_unblocked_inside) return fail("SA_NODEFER: SIGUSR2 was blocked in its handler");
    struct sigaction reset;
    sigaction(SIGUSR2, NULL, &reset);
    if (reset.sa_handler != SIG_DFL) return fail("SA_RESETHAND: SIGUSR2 kept its handler");
    sigemptyset(&one);
    sigaddset(&one, SIGRTMIN + 5);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    if (rt5_count != 1 || !rt5_int_blocked) return fail("SIGRTMIN+5 handler or its mask");
    sigemptyset(&one);
    sigaddset(&one, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    if (term_count != 1 || term_code != SI_USER || term_pid != parent_pid) return fail("SIGTERM from the parent");
    if (status_mask("SigPnd") != 0 || status_mask("ShdPnd") != 0) return fail("signals left pending");
    /* SA_RESTART: the read the alarm interrupts goes on and gets its byte. */
    struct itimerval alarm_in = {{0, 0}, {0, 50000}};
    sigemptyset(&one);
    sigaddset(&one, SIGALRM);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    if (setitimer(ITIMER_REAL, &alarm_in, NULL)) return fail("setitimer");
    char byte = 0;
    if (read(3, &byte, 1) != 1 || byte != 'r') return fail("SA_RESTART: the interrupted read did not restart");
    printf("OK pid=%d pending signals and handlers restored\n", self_pid);
    return 0;
}
