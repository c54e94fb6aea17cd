/* FIFOs, O_PATH descriptors, deleted files and memfds held by a process,
 * checked by the process itself after a restore. DIR is a directory of the
 * test's own.
 *
 *   fd_files fifo DIR
 *       DIR/fifo on fds 3 (read, O_NONBLOCK) and 4 (write) holding 9 bytes;
 *       DIR/gone on fds 5 (read, O_NONBLOCK) and 6 (write) holding 4 bytes,
 *       its path deleted (made again at the restore, mode 0640).
 *   fd_files fifo-live DIR
 *       the same, run on after a --leave-running dump (DIR/gone stays gone).
 *   fd_files fifo-outside DIR
 *       DIR/fifo on fds 3 (read, O_NONBLOCK) and 4 (write) holding 5 bytes,
 *       also held open by a helper (a grandchild, its pid in DIR/helper.pid,
 *       killed by the test): the bytes must come back once, not twice.
 *   fd_files opath DIR
 *       O_PATH descriptors of a file (3), a directory (4) and a symlink (5,
 *       O_PATH|O_NOFOLLOW).
 *   fd_files deleted DIR
 *       a deleted file with a hole in the middle, at offset 100 on fd 3,
 *       dup'ed to fd 4, and opened again (fd 5, read-only, offset 7) through
 *       /proc/self/fd/3; an O_TMPFILE file on fd 6; fd 7 a deleted name of
 *       a file still linked as DIR/b.
 *   fd_files memfd DIR
 *       a memfd "crp-test" (fd 3, cloexec, offset 5, 3 MiB with a hole,
 *       sealed F_SEAL_WRITE|F_SEAL_GROW) and one without sealing (fd 4).
 *   fd_files big DIR
 *       a deleted file holding 2 MiB of data on fd 3.
 *   fd_files deleted-dir DIR
 *       DIR/gone (mode 0750, owner 1234:5678) deleted while open on fd 3
 *       (O_RDONLY|O_DIRECTORY), fd 4 (dup of 3), fd 5 (O_PATH) and fd 6
 *       (another open); DIR/taken deleted while open on fd 7, its name
 *       then taken by a new directory (so made again under another name).
 *   fd_files changed DIR
 *       DIR/mapped (3 pages of 'm') mapped read-only and private, DIR/open
 *       (holding "open", or "OPEN" once the test rewrote it) on fd 3; the
 *       test changes them between the dump and the restore.
 *
 * Protocol: prints "READY <pid>", waits for a line on stdin, then prints
 * "OK pid=<pid> <mode>" and exits 0, or "FAIL <reason>" and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "subject_protocol.h"

static const char *dir;

static const char *in_dir(const char *name) {
    static char paths[4][4096];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, 4096, "%s/%s", dir, name);
    return path;
}

static int ok(const char *mode) {
    printf("OK pid=%d %s\n", getpid(), mode);
    fflush(stdout);
    return 0;
}

static int queued(int fd) {
    int count = -1;
    return ioctl(fd, FIONREAD, &count) ? -1 : count;
}

static int same_inode(int fd, const char *path) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int run_fifo(int restored) {
    const char *fifo = in_dir("fifo"), *gone = in_dir("gone");
    if (mkfifo(fifo, 0600) || mkfifo(gone, 0600) || chmod(gone, 0640)) return fail("mkfifo");
    if (place(open(fifo, O_RDONLY | O_NONBLOCK), 3) != 3 || place(open(fifo, O_WRONLY), 4) != 4) return fail("open fifo");
    if (place(open(gone, O_RDONLY | O_NONBLOCK), 5) != 5 || place(open(gone, O_WRONLY), 6) != 6) return fail("open gone");
    if (write(4, "fifo data", 9) != 9 || write(6, "gone", 4) != 4) return fail("write");
    if (unlink(gone)) return fail("unlink");
    wait_for_go();
    char text[32];
    if (queued(3) != 9 || read(3, text, sizeof text) != 9 || memcmp(text, "fifo data", 9)) return fail("fifo's bytes");
    if (read(3, text, sizeof text) != -1 || errno != EAGAIN) return fail("fd 3 is no longer non-blocking");
    if ((fcntl(3, F_GETFL) & O_ACCMODE) != O_RDONLY || (fcntl(4, F_GETFL) & O_ACCMODE) != O_WRONLY) return fail("modes");
    if (write(4, "new", 3) != 3 || read(3, text, sizeof text) != 3 || memcmp(text, "new", 3)) return fail("fds 3 and 4 are not one FIFO");
    struct stat st;
    if (fstat(3, &st) || !S_ISFIFO(st.st_mode) || !same_inode(3, fifo) || !same_inode(4, fifo)) return fail("fd 3 is not DIR/fifo");
    if (queued(5) != 4 || read(5, text, sizeof text) != 4 || memcmp(text, "gone", 4)) return fail("gone's bytes");
    if (!restored) return ok("fifo-live");
    if (stat(gone, &st) || !S_ISFIFO(st.st_mode) || (st.st_mode & 07777) != 0640) return fail("gone not made again with its mode");
    if (!same_inode(5, gone) || !same_inode(6, gone)) return fail("fds 5 and 6 are not the new DIR/gone");
    return ok("fifo");
}

static int run_fifo_outside(void) {
    const char *fifo = in_dir("fifo");
    if (mkfifo(fifo, 0600)) return fail("mkfifo");
    int ready[2];
    if (pipe(ready)) return fail("pipe");
    pid_t middle = fork();
    if (middle < 0) return fail("fork");
    if (middle == 0 && fork() != 0) _exit(0);
    if (middle == 0) {
        /* The helper: holds the FIFO open until the test kills it. */
        int held = open(fifo, O_RDWR);
        FILE *pid_file = fopen(in_dir("helper.pid"), "w");
        if (held < 0 || !pid_file) _exit(2);
        fprintf(pid_file, "%d\n", getpid());
        fclose(pid_file);
        if (write(ready[1], "r", 1) != 1) _exit(2);
        close(ready[1]);
        close(ready[0]);
        for (int fd = 0; fd <= 2; fd++) close(fd);
        for (;;) pause();
    }
    int status;
    if (waitpid(middle, &status, 0) != middle) return fail("waitpid");
    close(ready[1]);
    char byte;
    if (read(ready[0], &byte, 1) != 1) return fail("helper not ready");
    close(ready[0]);
    if (place(open(fifo, O_RDONLY | O_NONBLOCK), 3) != 3 || place(open(fifo, O_WRONLY), 4) != 4) return fail("open fifo");
    if (write(4, "once\n", 5) != 5) return fail("write");
    wait_for_go();
    char text[32];
    int count = queued(3);
    if (count != 5) {
        printf("FAIL the FIFO holds %d bytes, not 5\n", count);
        return 1;
    }
    if (read(3, text, sizeof text) != 5 || memcmp(text, "once\n", 5)) return fail("fifo's bytes");
    if (!same_inode(3, fifo)) return fail("fd 3 is not DIR/fifo");
    return ok("fifo-outside");
}

static int run_opath(void) {
    const char *file = in_dir("file"), *sub = in_dir("sub"), *link = in_dir("link");
    int made = open(file, O_CREAT | O_WRONLY, 0644);
    if (made < 0 || write(made, "content", 7) != 7 || close(made)) return fail("file");
    if (mkdir(sub, 0755) || symlink("file", link)) return fail("dir and link");
    if (place(open(file, O_PATH), 3) != 3 || place(open(sub, O_PATH | O_DIRECTORY), 4) != 4 ||
        place(open(link, O_PATH | O_NOFOLLOW), 5) != 5)
        return fail("O_PATH opens");
    wait_for_go();
    for (int fd = 3; fd <= 5; fd++)
        if (!(fcntl(fd, F_GETFL) & O_PATH)) return fail("not O_PATH any more");
    struct stat st, want;
    if (fstatat(3, "", &st, AT_EMPTY_PATH) || !S_ISREG(st.st_mode) || st.st_size != 7 || !same_inode(3, file))
        return fail("fd 3 is not the file");
    if (read(3, &st, 1) != -1 || errno != EBADF) return fail("fd 3 reads");
    if (fstatat(4, "", &st, AT_EMPTY_PATH) || !S_ISDIR(st.st_mode) || !same_inode(4, sub)) return fail("fd 4 is not the dir");
    if (fstatat(5, "", &st, AT_EMPTY_PATH) || !S_ISLNK(st.st_mode) || lstat(link, &want) || st.st_ino != want.st_ino)
        return fail("fd 5 is not the symlink");
    char target[64] = {0};
    if (readlinkat(5, "", target, sizeof target - 1) != 4 || strcmp(target, "file")) return fail("readlinkat fd 5");
    int inside = openat(4, "..", O_RDONLY | O_DIRECTORY);
    if (inside < 0) return fail("fd 4 as a directory fd");
    return ok("opath");
}

#define HOLE_AT (3 << 20)

static int run_deleted(void) {
    const char *deleted = in_dir("deleted"), *a = in_dir("a"), *b = in_dir("b");
    int fd = place(open(deleted, O_CREAT | O_RDWR, 0600), 3);
    if (fd != 3 || fchmod(3, 0640)) return fail("create");
    if (pwrite(3, "head", 4, 0) != 4 || pwrite(3, "tail", 4, HOLE_AT) != 4) return fail("write");
    if (lseek(3, 100, SEEK_SET) != 100 || dup2(3, 4) != 4) return fail("offset and dup");
    if (place(open("/proc/self/fd/3", O_RDONLY), 5) != 5 || lseek(5, 7, SEEK_SET) != 7) return fail("second open");
    if (unlink(deleted)) return fail("unlink");
    int tmp = place(open(dir, O_TMPFILE | O_RDWR, 0600), 6);
    if (tmp != 6 || write(6, "tmp", 3) != 3) return fail("O_TMPFILE");
    if (place(open(a, O_CREAT | O_RDWR, 0644), 7) != 7 || write(7, "linked", 6) != 6) return fail("linked");
    if (link(a, b) || unlink(a)) return fail("link");
    wait_for_go();
    struct stat st, other;
    char text[16] = {0};
    if (fstat(3, &st) || st.st_size != HOLE_AT + 4 || (st.st_mode & 07777) != 0640 || st.st_nlink != 0)
        return fail("deleted file's size, mode or links");
    if (st.st_blocks * 512 >= HOLE_AT) return fail("the hole is filled");
    if (pread(3, text, 4, 0) != 4 || memcmp(text, "head", 4)) return fail("head");
    if (pread(3, text, 4, HOLE_AT) != 4 || memcmp(text, "tail", 4)) return fail("tail");
    if (pread(3, text, 4, HOLE_AT / 2) != 4 || memcmp(text, "\0\0\0\0", 4)) return fail("hole reads zeros");
    if (lseek(3, 0, SEEK_CUR) != 100 || lseek(4, 0, SEEK_CUR) != 100) return fail("offset 100");
    if (lseek(4, 200, SEEK_SET) != 200 || lseek(3, 0, SEEK_CUR) != 200) return fail("fds 3 and 4 do not share");
    if (lseek(5, 0, SEEK_CUR) != 7) return fail("fd 5's own offset");
    if ((fcntl(5, F_GETFL) & O_ACCMODE) != O_RDONLY || (fcntl(3, F_GETFL) & O_ACCMODE) != O_RDWR) return fail("modes");
    if (fstat(5, &other) || other.st_ino != st.st_ino || other.st_dev != st.st_dev) return fail("fd 5 is another file");
    if (pwrite(3, "XY", 2, 10) != 2 || pread(5, text, 2, 10) != 2 || memcmp(text, "XY", 2))
        return fail("a write through fd 3 is not read through fd 5");
    if (pread(6, text, 3, 0) != 3 || memcmp(text, "tmp", 3) || fstat(6, &st) || st.st_nlink != 0) return fail("O_TMPFILE file");
    if (fcntl(6, F_GETFL) & O_DIRECTORY) return fail("fd 6 became a directory");
    if (!same_inode(7, b)) return fail("fd 7 is not DIR/b's inode");
    if (pread(7, text, 6, 0) != 6 || memcmp(text, "linked", 6)) return fail("fd 7's contents");
    if (pwrite(7, "L", 1, 0) != 1) return fail("write fd 7");
    FILE *through = fopen(b, "r");
    if (!through || fgetc(through) != 'L') return fail("a write through fd 7 is not in DIR/b");
    return ok("deleted");
}

static int run_memfd(void) {
    int fd = place(memfd_create("crp-test", MFD_ALLOW_SEALING | MFD_CLOEXEC), 3);
    if (fd != 3) return fail("memfd_create");
    if (pwrite(3, "memfd contents", 14, 0) != 14 || pwrite(3, "end", 3, 2 << 20) != 3) return fail("write");
    if (ftruncate(3, 3 << 20) || lseek(3, 5, SEEK_SET) != 5) return fail("size and offset");
    if (fcntl(3, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW)) return fail("seal");
    if (place(memfd_create("plain", 0), 4) != 4 || write(4, "x", 1) != 1) return fail("plain memfd");
    wait_for_go();
    char text[64] = {0};
    if (readlink("/proc/self/fd/3", text, sizeof text - 1) < 0 || strcmp(text, "/memfd:crp-test (deleted)"))
        return fail("memfd name");
    if (fcntl(3, F_GET_SEALS) != (F_SEAL_WRITE | F_SEAL_GROW)) return fail("seals");
    struct stat st;
    if (fstat(3, &st) || st.st_size != 3 << 20) return fail("size");
    if (st.st_blocks * 512 >= 2 << 20) return fail("the hole is filled");
    if (pread(3, text, 14, 0) != 14 || memcmp(text, "memfd contents", 14)) return fail("contents");
    if (pread(3, text, 3, 2 << 20) != 3 || memcmp(text, "end", 3)) return fail("end");
    if (lseek(3, 0, SEEK_CUR) != 5) return fail("offset");
    if (!(fcntl(3, F_GETFD) & FD_CLOEXEC) || (fcntl(4, F_GETFD) & FD_CLOEXEC)) return fail("cloexec");
    if (write(3, "no", 2) != -1 || errno != EPERM) return fail("F_SEAL_WRITE not in force");
    if (ftruncate(3, 4 << 20) != -1 || errno != EPERM) return fail("F_SEAL_GROW not in force");
    if (fcntl(4, F_GET_SEALS) != F_SEAL_SEAL) return fail("plain memfd allows sealing");
    if (pread(4, text, 1, 0) != 1 || text[0] != 'x') return fail("plain memfd's contents");
    return ok("memfd");
}

static int run_big(void) {
    int fd = place(open(in_dir("big"), O_CREAT | O_RDWR, 0600), 3);
    static char data[2 << 20];
    memset(data, 'b', sizeof data);
    if (fd != 3 || write(3, data, sizeof data) != (ssize_t)sizeof data || unlink(in_dir("big"))) return fail("big");
    wait_for_go();
    struct stat st;
    if (fstat(3, &st) || st.st_size != sizeof data) return fail("size");
    return ok("big");
}

/* Whether fd is a deleted directory whose /proc link is "PATH (deleted)",
 * or with path NULL any deleted directory in DIR. */
static int is_deleted_dir(int fd, const char *path) {
    char link[4200] = {0}, fd_path[64], expected[4200];
    snprintf(fd_path, sizeof fd_path, "/proc/self/fd/%d", fd);
    struct stat st;
    if (fstat(fd, &st) || !S_ISDIR(st.st_mode) || st.st_nlink != 0) return 0;
    if (readlink(fd_path, link, sizeof link - 1) <= 0) return 0;
    size_t length = strlen(link), suffix = strlen(" (deleted)");
    if (length < suffix || strcmp(link + length - suffix, " (deleted)")) return 0;
    if (path) {
        snprintf(expected, sizeof expected, "%s (deleted)", path);
        return strcmp(link, expected) == 0;
    }
    return strncmp(link, dir, strlen(dir)) == 0 && link[strlen(dir)] == '/';
}

static int run_deleted_dir(void) {
    const char *gone = in_dir("gone"), *taken = in_dir("taken");
    if (mkdir(gone, 0700) || chmod(gone, 0750) || chown(gone, 1234, 5678)) return fail("mkdir gone");
    if (place(open(gone, O_RDONLY | O_DIRECTORY), 3) != 3 || dup2(3, 4) != 4) return fail("open gone");
    if (place(open(gone, O_PATH | O_DIRECTORY), 5) != 5) return fail("O_PATH gone");
    if (place(open(gone, O_RDONLY | O_DIRECTORY | O_CLOEXEC), 6) != 6) return fail("open gone again");
    if (mkdir(taken, 0700) || place(open(taken, O_RDONLY | O_DIRECTORY), 7) != 7) return fail("taken");
    if (rmdir(gone) || rmdir(taken) || mkdir(taken, 0755)) return fail("rmdir");
    struct stat before;
    if (fstat(7, &before)) return fail("fstat 7");
    wait_for_go();
    struct stat st[5];
    for (int fd = 3; fd <= 7; fd++)
        if (fstat(fd, &st[fd - 3])) return fail("fstat");
    for (int fd = 3; fd <= 6; fd++)
        if (!is_deleted_dir(fd, gone)) return fail("fds 3-6 are not the deleted DIR/gone");
    /* Its name taken, it was made again under another name beside it. */
    if (!is_deleted_dir(7, NULL)) return fail("fd 7 is not a deleted directory in DIR");
    for (int i = 1; i < 4; i++)
        if (st[i].st_ino != st[0].st_ino || st[i].st_dev != st[0].st_dev) return fail("fds 3-6 are not one inode");
    if (st[4].st_ino == st[0].st_ino) return fail("fd 7 is DIR/gone's inode");
    if ((st[0].st_mode & 07777) != 0750 || st[0].st_uid != 1234 || st[0].st_gid != 5678) return fail("mode or owner");
    if ((st[4].st_mode & 07777) != 0700) return fail("fd 7's mode");
    if (!(fcntl(5, F_GETFL) & O_PATH) || (fcntl(3, F_GETFL) & O_PATH)) return fail("O_PATH");
    if (!(fcntl(3, F_GETFL) & O_DIRECTORY)) return fail("O_DIRECTORY");
    if (!(fcntl(6, F_GETFD) & FD_CLOEXEC) || (fcntl(3, F_GETFD) & FD_CLOEXEC)) return fail("cloexec");
    if (openat(3, "new", O_CREAT | O_RDWR, 0600) != -1 || errno != ENOENT) return fail("a file made in a deleted directory");
    if (access(gone, F_OK) == 0) return fail("DIR/gone exists again");
    struct stat now;
    if (stat(taken, &now) || (now.st_mode & 07777) != 0755 || now.st_ino == st[4].st_ino) return fail("DIR/taken");
    return ok("deleted-dir");
}

#define PAGE 4096

static int run_changed(void) {
    static char data[3 * PAGE];
    memset(data, 'm', sizeof data);
    int fd = open(in_dir("mapped"), O_CREAT | O_RDWR | O_TRUNC, 0600);
    if (fd < 0 || write(fd, data, sizeof data) != (ssize_t)sizeof data) return fail("write mapped");
    const char *mapped = mmap(NULL, sizeof data, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED || close(fd)) return fail("mmap");
    if (place(open(in_dir("open"), O_CREAT | O_RDWR | O_TRUNC, 0600), 3) != 3 || write(3, "open", 4) != 4)
        return fail("open");
    wait_for_go();
    if (mapped[0] != 'm' || mapped[sizeof data - 1] != 'm') return fail("mapped contents");
    char text[8] = {0};
    /* "open", or "OPEN" when the test rewrote it and restored with --allow-changed-files. */
    if (pread(3, text, 4, 0) != 4 || strncasecmp(text, "open", 4) || lseek(3, 0, SEEK_CUR) != 4) return fail("open file");
    return ok("changed");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fd_files fifo|fifo-live|fifo-outside|opath|deleted|memfd|big|deleted-dir|changed DIR\n");
        return 2;
    }
    dir = argv[2];
    const char *mode = argv[1];
    if (strcmp(mode, "fifo") == 0) return run_fifo(1);
    if (strcmp(mode, "fifo-live") == 0) return run_fifo(0);
    if (strcmp(mode, "fifo-outside") == 0) return run_fifo_outside();
    if (strcmp(mode, "opath") == 0) return run_opath();
    if (strcmp(mode, "deleted") == 0) return run_deleted();
    if (strcmp(mode, "memfd") == 0) return run_memfd();
    if (strcmp(mode, "big") == 0) return run_big();
    if (strcmp(mode, "deleted-dir") == 0) return run_deleted_dir();
    if (strcmp(mode, "changed") == 0) return run_changed();
    return 2;
}
