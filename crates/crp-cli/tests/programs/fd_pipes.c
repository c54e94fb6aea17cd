/* Pipes held by a process, checked by the process itself after a restore.
 *
 *   fd_pipes inside
 *       a pipe on fds 3 (read, O_NONBLOCK) and 4 (write) holding 13 bytes;
 *       a 1 MiB pipe on fds 5 and 6 holding 300000 bytes; fd 4 dup'ed to
 *       fd 10 (fds 7-9 are gaps). After the restore: the bytes, sizes,
 *       flags, the gap and the sharing are all as they were, and both
 *       pipes still carry new data.
 *   fd_pipes outside
 *       fd 7 reads a pipe whose writer (a helper, its grandchild) is outside the
 *       process and wrote 6 bytes into it; fd 9 writes to a pipe the helper
 *       reads. After the restore: fd 7 gives the 6 bytes then end of file;
 *       writing "after restore\n" to fd 9 either fails with EPIPE (printed
 *       as "fd9=EPIPE") or succeeds ("fd9=written").
 *
 * Protocol: prints "READY <pid>", waits for a line on stdin, then prints
 * "OK pid=<pid> ..." and exits 0, or "FAIL <reason>" and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "subject_protocol.h"

static unsigned char big(size_t i) { return (unsigned char)(i * 131 + (i >> 9)); }

static int run_inside(void) {
    int small[2], large[2];
    if (pipe(small) || place(small[0], 3) != 3 || place(small[1], 4) != 4) return fail("small pipe");
    if (pipe(large) || place(large[0], 5) != 5 || place(large[1], 6) != 6) return fail("large pipe");
    if (fcntl(3, F_SETFL, O_NONBLOCK)) return fail("O_NONBLOCK");
    if (write(4, "buffered data", 13) != 13) return fail("write small");
    if (fcntl(6, F_SETPIPE_SZ, 1 << 20) != 1 << 20) return fail("F_SETPIPE_SZ");
    static unsigned char data[300000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = big(i);
    if (write(6, data, sizeof data) != (ssize_t)sizeof data) return fail("write large");
    if (dup2(4, 10) != 10) return fail("dup2");
    wait_for_go();
    char text[32];
    int queued = -1;
    if (ioctl(3, FIONREAD, &queued) || queued != 13) return fail("small pipe lost its bytes");
    if (read(3, text, sizeof text) != 13 || memcmp(text, "buffered data", 13)) return fail("small pipe's bytes");
    if (read(3, text, sizeof text) != -1 || errno != EAGAIN) return fail("fd 3 is no longer non-blocking");
    if (!(fcntl(3, F_GETFL) & O_NONBLOCK) || (fcntl(4, F_GETFL) & O_NONBLOCK)) return fail("status flags");
    if (fcntl(5, F_GETPIPE_SZ) != 1 << 20) return fail("large pipe's size");
    memset(data, 0, sizeof data);
    size_t got = 0;
    while (got < sizeof data) {
        ssize_t n = read(5, data + got, sizeof data - got);
        if (n <= 0) return fail("large pipe's bytes");
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof data; i++)
        if (data[i] != big(i)) return fail("large pipe's bytes differ");
    if (ioctl(5, FIONREAD, &queued) || queued != 0) return fail("large pipe holds more than it did");
    for (int gap = 7; gap <= 9; gap++)
        if (fcntl(gap, F_GETFD) != -1 || errno != EBADF) return fail("a gap is filled");
    if (write(10, "via 10", 6) != 6 || read(3, text, sizeof text) != 6 || memcmp(text, "via 10", 6))
        return fail("fd 10 is not the small pipe's write end");
    if (fcntl(11, F_GETFD) != -1) return fail("a descriptor too many");
    printf("OK pid=%d pipes\n", getpid());
    fflush(stdout);
    return 0;
}

static int run_outside(void) {
    int to_us[2], from_us[2];
    if (pipe(to_us) || pipe(from_us)) return fail("pipe");
    /* The helper is a grandchild, so that the process has no children. */
    pid_t middle = fork();
    if (middle < 0) return fail("fork");
    if (middle == 0 && fork() != 0) _exit(0);
    if (middle == 0) {
        close(to_us[0]);
        close(from_us[1]);
        if (write(to_us[1], "hello\n", 6) != 6) _exit(2);
        char byte;
        /* Lives until the pipe from the original closes (it is killed). */
        while (read(from_us[0], &byte, 1) > 0) {
        }
        _exit(0);
    }
    int status;
    if (waitpid(middle, &status, 0) != middle) return fail("waitpid");
    close(to_us[1]);
    close(from_us[0]);
    if (place(to_us[0], 7) != 7 || place(from_us[1], 9) != 9) return fail("place");
    /* Wait until the helper's bytes are in the pipe. */
    int queued = 0;
    while (queued < 6)
        if (ioctl(7, FIONREAD, &queued)) return fail("FIONREAD");
    signal(SIGPIPE, SIG_IGN);
    wait_for_go();
    char text[16];
    if (read(7, text, sizeof text) != 6 || memcmp(text, "hello\n", 6)) return fail("fd 7 lost its bytes");
    if (read(7, text, sizeof text) != 0) return fail("fd 7 does not end");
    const char *fd9 = "written";
    if (write(9, "after restore\n", 14) != 14) {
        if (errno != EPIPE) return fail("write to fd 9");
        fd9 = "EPIPE";
    }
    printf("OK pid=%d fd7=hello fd9=%s\n", getpid(), fd9);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "inside") == 0) return run_inside();
    if (argc == 2 && strcmp(argv[1], "outside") == 0) return run_outside();
    fprintf(stderr, "usage: fd_pipes inside|outside\n");
    return 2;
}
