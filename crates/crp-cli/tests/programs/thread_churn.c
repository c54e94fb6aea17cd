/* Threads that come and go all the time: two spawner threads each create
 * and join short-lived threads in a loop (each adds 1 to a counter and
 * exits), so that crp's freeze meets threads being created and exiting.
 * After "go" on stdin, the spawners run 1000 more rounds each, and the
 * program checks that every thread it created has run and been joined:
 * "OK pid=<pid> churn restored". */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "subject_protocol.h"

static atomic_long ran, created;
static atomic_int phase; /* 0: before go, 1: 1000 more rounds, 2: done */
static atomic_int finished_spawners;

static void *short_lived(void *argument) {
    (void)argument;
    atomic_fetch_add(&ran, 1);
    return NULL;
}

static void *spawner(void *argument) {
    (void)argument;
    long extra = 0;
    for (;;) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, short_lived, NULL) != 0) {
            printf("FAIL pthread_create\n");
            exit(1);
        }
        atomic_fetch_add(&created, 1);
        if (pthread_join(thread, NULL) != 0) {
            printf("FAIL pthread_join\n");
            exit(1);
        }
        if (atomic_load(&phase) == 1 && ++extra == 1000) break;
    }
    atomic_fetch_add(&finished_spawners, 1);
    return NULL;
}

int main(void) {
    close_range(3, ~0U, 0);
    pthread_t spawners[2];
    for (int index = 0; index < 2; index++)
        if (pthread_create(&spawners[index], NULL, spawner, NULL)) return fail("pthread_create");
    while (atomic_load(&ran) < 100) sched_yield();
    wait_for_go();
    alarm(60);
    atomic_store(&phase, 1);
    for (int index = 0; index < 2; index++)
        if (pthread_join(spawners[index], NULL)) return fail("pthread_join");
    if (atomic_load(&ran) != atomic_load(&created)) {
        printf("FAIL %ld threads created, %ld ran\n", atomic_load(&created), atomic_load(&ran));
        return 1;
    }
    printf("OK pid=%d churn restored\n", getpid());
    return 0;
}
