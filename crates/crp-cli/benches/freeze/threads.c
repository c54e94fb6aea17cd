/* A process of N threads for scripts/bench-threads.sh: the leader and
 * N-1 others, half of them spinning, half blocked in a futex wait, 64 MiB
 * of dirty memory. Usage: threads N READY_FILE; writes READY to the file
 * once every thread runs, then waits to be killed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static volatile int started;

static void *spin(void *unused) {
    (void)unused;
    __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
    for (volatile unsigned long i = 0;; i++) {
    }
    return NULL;
}

static void *block(void *unused) {
    (void)unused;
    pthread_mutex_lock(&lock);
    __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
    for (;;) pthread_cond_wait(&never, &lock);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int threads = atoi(argv[1]);
    for (int fd = 3; fd < 1024; fd++) close(fd);
    size_t size = 64 << 20;
    char *memory = malloc(size);
    memset(memory, 7, size);
    for (int i = 1; i < threads; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, i % 2 ? block : spin, NULL)) return 1;
    }
    while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < threads - 1) usleep(1000);
    FILE *ready = fopen(argv[2], "w");
    fprintf(ready, "READY\n");
    fclose(ready);
    for (;;) pause();
}
