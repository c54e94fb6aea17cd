/* Event descriptors held by a process, checked by the process itself after
 * a restore (or, after a dump with --leave-running, by the original).
 *
 *   fd 3  eventfd counting 5 + 2^40 (above 32 bits), O_NONBLOCK
 *   fd 4  eventfd in semaphore mode counting 3, blocking, close-on-exec
 *   fd 5  timerfd on CLOCK_MONOTONIC armed for 30 s, every 1 s, close-on-exec
 *   fd 6  timerfd on CLOCK_MONOTONIC that fired at once and every 20 ms
 *         since: at least 3 ticks unread (waited for with another timer)
 *   fd 7  timerfd disarmed, with an interval of 5 s kept, O_NONBLOCK
 *   fd 8  timerfd on CLOCK_REALTIME, absolute, deadline 300 ms after it was
 *         armed, TFD_TIMER_CANCEL_ON_SET, O_NONBLOCK
 *   fd 9  signalfd for SIGUSR1 (blocked), O_NONBLOCK
 *
 * Protocol: prints "READY <pid>", waits for a line on stdin: "restored" (it
 * was dumped, killed and restored after fd 8's deadline) or "original" (the
 * dump left it running). Then prints "OK pid=<pid> ..." and exits 0, or
 * "FAIL <reason>" and exits 1.
 *
 * Time left on fd 5: a restored relative timer keeps the time it had left,
 * so less time passed on it than on CLOCK_MONOTONIC since READY (the
 * downtime, dump to restore, is more than 1 ms); in the original, exactly as
 * much as on CLOCK_MONOTONIC.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "subject_protocol.h"

/* Like place(), keeping fd's close-on-exec flag. */
static int place_keeping_cloexec(int fd, int target) {
    if (fd < 0) return -1;
    if (fd == target) return target;
    if (dup3(fd, target, fcntl(fd, F_GETFD) & FD_CLOEXEC ? O_CLOEXEC : 0) != target) return -1;
    close(fd);
    return target;
}

static int64_t ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

static int64_t now(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return ns(t);
}

static int64_t left(int fd, int64_t *interval) {
    struct itimerspec current;
    if (timerfd_gettime(fd, &current)) return -1;
    if (interval) *interval = ns(current.it_interval);
    return ns(current.it_value);
}

static int arm(int fd, int flags, int64_t value, int64_t interval) {
    struct itimerspec setting = {
        .it_interval = {interval / 1000000000, interval % 1000000000},
        .it_value = {value / 1000000000, value % 1000000000},
    };
    return timerfd_settime(fd, flags, &setting, NULL);
}

static int readable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static int cloexec(int fd) { return fcntl(fd, F_GETFD) & FD_CLOEXEC; }
static int nonblocking(int fd) { return fcntl(fd, F_GETFL) & O_NONBLOCK; }

#define MS 1000000LL
#define BIG (1ULL << 40)

int main(void) {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &usr1, NULL)) return fail("sigprocmask");

    if (place_keeping_cloexec(eventfd(5, EFD_NONBLOCK), 3) != 3) return fail("eventfd 3");
    uint64_t add = BIG;
    if (write(3, &add, 8) != 8) return fail("write eventfd 3");
    if (place_keeping_cloexec(eventfd(3, EFD_SEMAPHORE | EFD_CLOEXEC), 4) != 4) return fail("eventfd 4");

    if (place_keeping_cloexec(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC), 5) != 5) return fail("timerfd 5");
    if (arm(5, 0, 30000 * MS, 1000 * MS)) return fail("arm 5");

    if (place_keeping_cloexec(timerfd_create(CLOCK_MONOTONIC, 0), 6) != 6) return fail("timerfd 6");
    int64_t armed6 = now(CLOCK_MONOTONIC);
    if (arm(6, 0, 1, 20 * MS)) return fail("arm 6");
    /* Expirations at 0, 20 and 40 ms: wait for 45 ms with another timer. */
    int waiter = timerfd_create(CLOCK_MONOTONIC, 0);
    if (waiter < 0 || arm(waiter, TFD_TIMER_ABSTIME, armed6 + 45 * MS, 0)) return fail("waiter");
    struct pollfd p = {.fd = waiter, .events = POLLIN};
    if (poll(&p, 1, -1) != 1) return fail("poll waiter");
    close(waiter);
    if (!readable(6)) return fail("fd 6 never fired");

    if (place_keeping_cloexec(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), 7) != 7) return fail("timerfd 7");
    if (arm(7, 0, 0, 5000 * MS)) return fail("arm 7");

    if (place_keeping_cloexec(timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK), 8) != 8) return fail("timerfd 8");
    if (arm(8, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, now(CLOCK_REALTIME) + 300 * MS, 0)) return fail("arm 8");

    if (place_keeping_cloexec(signalfd(-1, &usr1, SFD_NONBLOCK), 9) != 9) return fail("signalfd 9");

    int64_t ready = now(CLOCK_MONOTONIC);
    int64_t left_before = left(5, NULL);
    printf("READY %d\n", getpid());
    fflush(stdout);
    char line[32] = {0};
    if (read(0, line, sizeof line - 1) <= 0) return fail("read from stdin");
    int restored = strncmp(line, "restored", 8) == 0;
    if (!restored && strncmp(line, "original", 8) != 0) return fail("neither restored nor original");

    /* Flags, per descriptor and per description. */
    if (!nonblocking(3) || nonblocking(4) || nonblocking(5) || !nonblocking(7) || !nonblocking(9))
        return fail("O_NONBLOCK");
    if (cloexec(3) || !cloexec(4) || !cloexec(5) || cloexec(6) || cloexec(9)) return fail("FD_CLOEXEC");
    if (fcntl(10, F_GETFD) != -1) return fail("a descriptor too many");

    /* fd 5: the time left. */
    int64_t interval5;
    int64_t left_after = left(5, &interval5);
    int64_t elapsed = now(CLOCK_MONOTONIC) - ready;
    int64_t passed = left_before - left_after;
    if (interval5 != 1000 * MS) return fail("fd 5's interval");
    if (left_after <= 0 || passed < 0 || passed > elapsed) return fail("fd 5's time left is beyond what passed");
    if (restored && passed > elapsed - 1 * MS) return fail("fd 5 counted down while the process was not there");
    if (!restored && elapsed - passed > 1 * MS) return fail("fd 5 stopped counting in the original");

    /* fd 6: every tick that came, none taken away. */
    uint64_t ticks = 0;
    if (read(6, &ticks, 8) != 8) return fail("read fd 6");
    int64_t most = (now(CLOCK_MONOTONIC) - armed6) / (20 * MS) + 1;
    if (ticks < 3 || (int64_t)ticks > most) {
        printf("FAIL fd 6 has %llu ticks, not 3..%lld\n", (unsigned long long)ticks, (long long)most);
        return 1;
    }

    /* fd 7: still disarmed, its interval kept. */
    int64_t interval7;
    if (left(7, &interval7) != 0 || interval7 != 5000 * MS) return fail("fd 7 is not disarmed with its interval");
    if (read(7, &ticks, 8) != -1 || errno != EAGAIN) return fail("fd 7 fired");

    /* fd 8: its deadline passed while the process was down: it fired, at once. */
    struct itimerspec current;
    if (timerfd_gettime(8, &current)) return fail("timerfd_gettime 8");
    if (restored) {
        if (!readable(8)) return fail("fd 8 did not fire at its deadline");
        if (read(8, &ticks, 8) != 8 || ticks != 1) return fail("fd 8's ticks");
    } else if (readable(8) != (ns(current.it_value) == 0)) {
        return fail("fd 8 fired before its deadline");
    }

    /* fd 3, fd 4: the counts. */
    uint64_t count = 0;
    if (read(3, &count, 8) != 8 || count != BIG + 5) return fail("fd 3's count");
    if (read(3, &count, 8) != -1 || errno != EAGAIN) return fail("fd 3 counts more");
    for (int i = 0; i < 3; i++)
        if (read(4, &count, 8) != 8 || count != 1) return fail("fd 4 is not a semaphore of 3");
    if (readable(4)) return fail("fd 4 counts more than 3");

    /* fd 9: reads SIGUSR1, and nothing was pending. */
    struct signalfd_siginfo info;
    if (read(9, &info, sizeof info) != -1 || errno != EAGAIN) return fail("fd 9 had a signal");
    if (kill(getpid(), SIGUSR1)) return fail("kill");
    if (read(9, &info, sizeof info) != sizeof info || info.ssi_signo != SIGUSR1) return fail("fd 9 missed SIGUSR1");
    if (info.ssi_pid != (uint32_t)getpid()) return fail("fd 9's siginfo");

    printf("OK pid=%d events %s\n", getpid(), restored ? "restored" : "original");
    fflush(stdout);
    return 0;
}
