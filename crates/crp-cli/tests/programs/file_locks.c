/* File locks of every kind, in the directory given as argv[1]:
 *   fd 3 "posix": POSIX write lock on bytes 10-14 and read lock from 100 to
 *     the end, taken through fd 3 (fd 7 is a dup of it);
 *   fd 4 "flock": an exclusive flock;
 *   fd 5 "ofd": OFD read lock on bytes 0-99 and write lock on 200-299;
 *   fd 6 "lease": a read lease (opened read-only).
 * Prints "READY <pid>", waits for the go line, then checks what only the
 * process itself can see (its lease) and prints OK; another process checks
 * that the others still hold (see tests/file_locks.rs). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>

#include "subject_protocol.h"

static int open_at(const char *directory, const char *name, int flags, int target) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", directory, name);
    return place(open(path, flags | O_CREAT, 0644), target);
}

static int record_lock(int fd, int command, short type, off_t start, off_t length) {
    struct flock lock;
    memset(&lock, 0, sizeof lock);
    lock.l_type = type;
    lock.l_whence = SEEK_SET;
    lock.l_start = start;
    lock.l_len = length;
    return fcntl(fd, command, &lock);
}

int main(int argc, char **argv) {
    if (argc != 2) return fail("usage: file_locks DIRECTORY");
    for (int fd = 3; fd < 1024; fd++) close(fd);
    if (open_at(argv[1], "posix", O_RDWR, 3) != 3 || open_at(argv[1], "flock", O_RDWR, 4) != 4 ||
        open_at(argv[1], "ofd", O_RDWR, 5) != 5 || open_at(argv[1], "lease", O_RDONLY, 6) != 6)
        return fail("open");
    if (record_lock(3, F_SETLK, F_WRLCK, 10, 5) || record_lock(3, F_SETLK, F_RDLCK, 100, 0)) return fail("F_SETLK");
    if (flock(4, LOCK_EX | LOCK_NB)) return fail("flock");
    if (record_lock(5, F_OFD_SETLK, F_RDLCK, 0, 100) || record_lock(5, F_OFD_SETLK, F_WRLCK, 200, 100))
        return fail("F_OFD_SETLK");
    if (fcntl(6, F_SETLEASE, F_RDLCK)) return fail("F_SETLEASE");
    if (dup2(3, 7) != 7) return fail("dup2");
    wait_for_go();
    if (fcntl(6, F_GETLEASE) != F_RDLCK) return fail("the lease is gone");
    /* The flock is this description's: taking it again through it works. */
    if (flock(4, LOCK_EX | LOCK_NB)) return fail("flock through its own description");
    printf("OK pid=%d file locks restored\n", getpid());
    return 0;
}
