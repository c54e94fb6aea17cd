/* POSIX timers on every clock, with every notification, sparse ids (two
 * deleted), armed, disarmed and periodic, one firing every millisecond
 * with its signal blocked. Prints "READY <pid>", waits for the go line,
 * then checks that each timer still exists with its id, clock, signal,
 * value and notification (/proc/self/timers and timer_gettime), its
 * interval exactly and its time left no more than before, that the
 * deleted ids stay free, and that the fast timer still fires with its
 * siginfo (SI_TIMER, its id, its value). */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

#include "subject_protocol.h"

struct spec {
    clockid_t clock;
    int notify;
    int signal;
    long value;
    long left_s, interval_s;
    long interval_ns;
    int optional;
};

#define SIG_FAST (SIGRTMIN + 3)

static struct spec specs[] = {
    {CLOCK_MONOTONIC, SIGEV_SIGNAL, 0, 0x1111, 300, 1, 0, 0},
    {CLOCK_REALTIME, SIGEV_NONE, 0, 0x2222, 400, 0, 0, 0},
    {CLOCK_MONOTONIC, SIGEV_NONE, 0, 0xdead, 1, 0, 0, 0}, /* deleted */
    {CLOCK_BOOTTIME, SIGEV_THREAD_ID, 0, 0x3333, 0, 7, 0, 0},
    {CLOCK_MONOTONIC, SIGEV_NONE, 0, 0xbeef, 1, 0, 0, 0}, /* deleted */
    {CLOCK_PROCESS_CPUTIME_ID, SIGEV_SIGNAL, SIGUSR1, 0x4444, 100, 0, 0, 0},
    {CLOCK_THREAD_CPUTIME_ID, SIGEV_NONE, 0, 0x5555, 50, 2, 0, 0},
    {-1 /* its own CPU clock by pid */, SIGEV_NONE, 0, 0x6666, 60, 0, 0, 0},
    {CLOCK_TAI, SIGEV_SIGNAL, SIGUSR2, 0x7777, 500, 0, 0, 0},
    {CLOCK_BOOTTIME_ALARM, SIGEV_SIGNAL, SIGUSR2, 0x8888, 600, 0, 0, 1},
    {CLOCK_MONOTONIC, SIGEV_SIGNAL, 0, 0x9999, 0, 0, 1000000, 0}, /* fast */
};
#define COUNT (sizeof specs / sizeof specs[0])
static timer_t ids[COUNT];
static int made[COUNT];
static struct itimerspec before[COUNT];

static long nanoseconds(struct timespec time) {
    return time.tv_sec * 1000000000L + time.tv_nsec;
}

/* The /proc/self/timers block of timer `id`: its signal, value, notify and clock lines. */
static int listed(int id, char *signal_line, char *notify_line, char *clock_line) {
    FILE *timers = fopen("/proc/self/timers", "r");
    if (!timers) return -1;
    char line[128];
    int found = 0;
    while (fgets(line, sizeof line, timers)) {
        int listed_id;
        if (sscanf(line, "ID: %d", &listed_id) == 1 && listed_id == id) {
            found = fgets(signal_line, 128, timers) && fgets(notify_line, 128, timers) && fgets(clock_line, 128, timers);
            break;
        }
    }
    fclose(timers);
    return found ? 0 : -1;
}

static char saved[COUNT][3][128];

int main(void) {
    for (int fd = 3; fd < 1024; fd++) close(fd);
    specs[0].signal = SIGRTMIN + 1;
    specs[3].signal = SIGRTMIN + 2;
    specs[10].signal = SIG_FAST;
    clockid_t own_clock;
    if (clock_getcpuclockid(getpid(), &own_clock)) return fail("clock_getcpuclockid");
    specs[7].clock = own_clock;
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIG_FAST);
    sigaddset(&blocked, SIGUSR1);
    sigaddset(&blocked, SIGUSR2);
    sigaddset(&blocked, SIGRTMIN + 1);
    sigaddset(&blocked, SIGRTMIN + 2);
    sigprocmask(SIG_BLOCK, &blocked, NULL);
    for (unsigned index = 0; index < COUNT; index++) {
        struct sigevent event;
        memset(&event, 0, sizeof event);
        event.sigev_notify = specs[index].notify;
        event.sigev_signo = specs[index].signal;
        event.sigev_value.sival_ptr = (void *)specs[index].value;
        if (specs[index].notify == SIGEV_THREAD_ID) event._sigev_un._tid = (pid_t)syscall(SYS_gettid);
        if (timer_create(specs[index].clock, &event, &ids[index]) != 0) {
            if (specs[index].optional) continue; /* no RTC for alarm timers */
            return fail("timer_create");
        }
        made[index] = 1;
        struct itimerspec setting = {{specs[index].interval_s, specs[index].interval_ns},
                                     {specs[index].left_s, specs[index].interval_ns}};
        if (timer_settime(ids[index], 0, &setting, NULL)) return fail("timer_settime");
    }
    if (timer_delete(ids[2]) || timer_delete(ids[4])) return fail("timer_delete");
    made[2] = made[4] = 0;
    /* The fast timer overruns and keeps a signal pending. */
    struct timespec pause = {0, 20000000};
    nanosleep(&pause, NULL);
    for (unsigned index = 0; index < COUNT; index++) {
        if (!made[index]) continue;
        if (timer_gettime(ids[index], &before[index])) return fail("timer_gettime");
        if (listed((int)(long)ids[index], saved[index][0], saved[index][1], saved[index][2]))
            return fail("timer not in /proc/self/timers");
    }
    wait_for_go();

    for (unsigned index = 0; index < COUNT; index++) {
        if (!made[index]) {
            struct itimerspec none;
            if (!specs[index].optional && timer_gettime(ids[index], &none) == 0) return fail("a deleted id exists");
            continue;
        }
        struct itimerspec now;
        if (timer_gettime(ids[index], &now)) return fail("a timer is gone");
        if (nanoseconds(now.it_interval) != nanoseconds(before[index].it_interval)) return fail("interval changed");
        long left = nanoseconds(now.it_value), was = nanoseconds(before[index].it_value);
        if (specs[index].left_s == 0 && specs[index].interval_ns == 0) {
            if (left != 0) return fail("a disarmed timer is armed");
        } else if (index != 10 && (left <= 0 || left > was || was - left > 30000000000L)) {
            return fail("time left is off");
        }
        char lines[3][128];
        if (listed((int)(long)ids[index], lines[0], lines[1], lines[2])) return fail("timer gone from /proc");
        if (strcmp(lines[0], saved[index][0])) return fail("signal or value changed");
        /* The notify line names the (new) pid or tid: compare its kind. */
        if (strncmp(lines[1], saved[index][1], strcspn(saved[index][1], "."))) return fail("notification changed");
        if (index != 7 && strcmp(lines[2], saved[index][2])) return fail("clock changed");
    }
    /* The fast one still fires, with its own siginfo. */
    sigset_t fast;
    sigemptyset(&fast);
    sigaddset(&fast, SIG_FAST);
    struct timespec wait = {10, 0};
    for (int round = 0; round < 3; round++) {
        siginfo_t info;
        if (sigtimedwait(&fast, &info, &wait) != SIG_FAST) return fail("the fast timer does not fire");
        if (info.si_code != SI_TIMER || info.si_value.sival_ptr != (void *)specs[10].value) return fail("siginfo");
        if (info.si_timerid != (int)(long)ids[10]) return fail("si_timerid");
    }
    /* A new timer gets a free id. */
    timer_t fresh;
    if (timer_create(CLOCK_MONOTONIC, NULL, &fresh)) return fail("a new timer");
    for (unsigned index = 0; index < COUNT; index++)
        if (made[index] && ids[index] == fresh) return fail("a new timer took a restored id");
    printf("OK pid=%d posix timers restored\n", getpid());
    return 0;
}
