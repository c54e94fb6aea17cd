/* A POSIX timer delivering SIGRTMIN+3 every 200 us to a handler, never
 * blocked: crp freezes it while real-time signals keep arriving. Prints
 * "READY <pid>", waits for the go line (its read restarts after each tick,
 * SA_RESTART), then checks that ticks still arrive and prints OK. */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include <time.h>

#include "subject_protocol.h"

static volatile long ticks;

static void on_tick(int signal) {
    (void)signal;
    ticks++;
}

int main(void) {
    for (int fd = 3; fd < 1024; fd++) close(fd);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_tick;
    action.sa_flags = SA_RESTART;
    if (sigaction(SIGRTMIN + 3, &action, NULL)) return fail("sigaction");
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_SIGNAL;
    event.sigev_signo = SIGRTMIN + 3;
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &event, &timer)) return fail("timer_create");
    struct itimerspec every = {{0, 200000}, {0, 200000}};
    if (timer_settime(timer, 0, &every, NULL)) return fail("timer_settime");
    while (ticks < 10) pause();
    wait_for_go();
    long before = ticks;
    while (ticks < before + 10) pause();
    printf("OK pid=%d ticks go on\n", getpid());
    return 0;
}
