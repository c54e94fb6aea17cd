/* The protocol every fd_*.c test program speaks: it prints "READY <pid>"
 * once set up, waits for a line on stdin (sent after the restore), checks
 * its own state, then prints "OK pid=<pid> ..." and exits 0, or
 * "FAIL <reason> (errno N)" and exits 1. */
#ifndef CRP_SUBJECT_PROTOCOL_H
#define CRP_SUBJECT_PROTOCOL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline int fail(const char *reason) {
    printf("FAIL %s (errno %d)\n", reason, errno);
    fflush(stdout);
    return 1;
}

static inline void wait_for_go(void) {
    printf("READY %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (read(0, line, sizeof line) <= 0) exit(fail("read from stdin"));
}

/* Moves descriptor `fd` to `target` (dup2, then closes `fd`): `target`, or
 * -1 when `fd` is not a descriptor or the move fails. */
static inline int place(int fd, int target) {
    if (fd < 0) return -1;
    if (fd == target) return target;
    if (dup2(fd, target) != target) return -1;
    close(fd);
    return target;
}

#endif
