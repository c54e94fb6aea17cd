/* epoll and inotify instances held by a process, checked by the process
 * itself after a restore.
 *
 *   fd_epoll epoll
 *       epoll A on fd 3 registers (data in brackets):
 *         fd 7  a pipe holding "abc", level-triggered      [0x1111]
 *         fd 9  a pipe, EPOLLONESHOT, fired before the dump [0x2222]
 *         fd 12 epoll B, which registers fd 14, a pipe      [0x3333] ([0x4444] in B)
 *         fd 16 a pipe, edge-triggered                      [0x5555]
 *         fd 20 a pipe, whose descriptor moved to fd 21     [0x6666]
 *         fd 22 a pipe, moved to fd 23; fd 22 is /dev/null  [0x7777]
 *       After the restore: A reports only 0x1111; once a byte is written
 *       into each pipe, everything but the fired 0x2222, which MOD re-arms;
 *       the edge-triggered one only once; B reports 0x4444; fd 20 is closed,
 *       fd 22 /dev/null, and the moved registrations are not under 21/23.
 *   fd_epoll inotify DIR
 *       an inotify (O_NONBLOCK) on fd 5 watches DIR (wd 1, IN_CREATE |
 *       IN_DELETE) and DIR/file (wd 3, IN_MODIFY | IN_ONESHOT; wd 2 was
 *       removed). After the restore: nothing is queued; creating DIR/new
 *       gives wd 1 IN_CREATE "new"; appending to DIR/file gives wd 3
 *       IN_MODIFY then IN_IGNORED (one shot); the next watch gets wd 4.
 *
 * Protocol: prints "READY <pid>", waits for a line on stdin, then prints
 * "OK pid=<pid> ..." and exits 0, or "FAIL <reason>" and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "subject_protocol.h"

/* A pipe whose read end is at fd `at`; returns its write end (>= 30). */
static int pipe_at(int at) {
    int ends[2];
    if (pipe(ends)) return -1;
    int writer = fcntl(ends[1], F_DUPFD, 30);
    close(ends[1]);
    if (place(ends[0], at) != at) return -1;
    return writer;
}

static int add(int epoll, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event = {.events = events, .data.u64 = data};
    return epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
}

/* The data values epoll_wait reports now, as a bit per 0x1111 multiple. */
static int ready(int epoll) {
    struct epoll_event events[16];
    int n = epoll_wait(epoll, events, 16, 0);
    if (n < 0) return -1;
    int seen = 0;
    for (int i = 0; i < n; i++) seen |= 1 << (events[i].data.u64 / 0x1111);
    return seen;
}

#define BIT(data) (1 << ((data) / 0x1111))

static int run_epoll(void) {
    int a = epoll_create1(EPOLL_CLOEXEC);
    if (place(a, 3) != 3) return fail("epoll A");
    int w7 = pipe_at(7), w9 = pipe_at(9), w14 = pipe_at(14), w16 = pipe_at(16), w20 = pipe_at(20), w22 = pipe_at(22);
    if (w7 < 0 || w9 < 0 || w14 < 0 || w16 < 0 || w20 < 0 || w22 < 0) return fail("pipes");
    int b = epoll_create1(0);
    if (place(b, 12) != 12) return fail("epoll B");
    if (add(12, 14, EPOLLIN, 0x4444)) return fail("B registers 14");
    if (add(3, 7, EPOLLIN, 0x1111) || add(3, 9, EPOLLIN | EPOLLONESHOT, 0x2222) || add(3, 12, EPOLLIN, 0x3333) ||
        add(3, 16, EPOLLIN | EPOLLET, 0x5555) || add(3, 20, EPOLLIN, 0x6666) || add(3, 22, EPOLLIN, 0x7777))
        return fail("A registers");
    if (write(w7, "abc", 3) != 3) return fail("write 7");
    /* The one-shot fires, and its byte is read. */
    char byte;
    if (write(w9, "x", 1) != 1 || ready(3) != (BIT(0x1111) | BIT(0x2222)) || read(9, &byte, 1) != 1)
        return fail("one-shot before the dump");
    if (place(20, 21) != 21) return fail("move 20");
    if (place(22, 23) != 23) return fail("move 22");
    if (place(open("/dev/null", O_RDONLY), 22) != 22) return fail("/dev/null on 22");

    wait_for_go();
    int seen = ready(3);
    if (seen != BIT(0x1111)) {
        printf("FAIL after restore A reports %#x, not only 0x1111\n", seen);
        return 1;
    }
    for (int fd = 0; fd < 6; fd++) {
        int writer = (int[]){w9, w14, w16, w20, w22, w7}[fd];
        if (write(writer, "y", 1) != 1) return fail("write to the pipes");
    }
    seen = ready(3);
    int want = BIT(0x1111) | BIT(0x3333) | BIT(0x5555) | BIT(0x6666) | BIT(0x7777);
    if (seen != want) {
        printf("FAIL A reports %#x, not %#x\n", seen, want);
        return 1;
    }
    if ((seen = ready(3)) != (want & ~BIT(0x5555))) {
        printf("FAIL A reports %#x the second time, the edge-triggered one again?\n", seen);
        return 1;
    }
    if (ready(12) != BIT(0x4444)) return fail("B does not report fd 14");
    struct epoll_event rearm = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 0x2222};
    if (epoll_ctl(3, EPOLL_CTL_MOD, 9, &rearm) || !(ready(3) & BIT(0x2222))) return fail("one-shot re-armed");
    if (fcntl(20, F_GETFD) != -1 || errno != EBADF) return fail("fd 20 is open");
    struct stat null;
    if (fstat(22, &null) || !S_ISCHR(null.st_mode)) return fail("fd 22 is not /dev/null");
    if (epoll_ctl(3, EPOLL_CTL_DEL, 21, NULL) != -1 || errno != ENOENT) return fail("registered under 21");
    if (epoll_ctl(3, EPOLL_CTL_DEL, 23, NULL) != -1 || errno != ENOENT) return fail("registered under 23");
    if (!(fcntl(3, F_GETFD) & FD_CLOEXEC) || (fcntl(12, F_GETFD) & FD_CLOEXEC)) return fail("close-on-exec");
    printf("OK pid=%d epoll\n", getpid());
    return 0;
}

static int expect_event(int fd, int wd, uint32_t mask, const char *name) {
    char buffer[4096] __attribute__((aligned(8)));
    static char *next, *end;
    if (next == NULL || next >= end) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n <= 0) return fail("no inotify event");
        static char kept[4096] __attribute__((aligned(8)));
        memcpy(kept, buffer, (size_t)n);
        next = kept;
        end = kept + n;
    }
    struct inotify_event *event = (struct inotify_event *)next;
    next += sizeof *event + event->len;
    if (event->wd != wd || event->mask != mask || (name && strcmp(event->name, name))) {
        printf("FAIL event wd %d mask %#x name %s, not wd %d mask %#x\n", event->wd, event->mask,
               event->len ? event->name : "-", wd, mask);
        return 1;
    }
    return 0;
}

static int run_inotify(const char *directory) {
    char file[4096], other[4096], created[4096];
    snprintf(file, sizeof file, "%s/file", directory);
    snprintf(other, sizeof other, "%s/other", directory);
    snprintf(created, sizeof created, "%s/new", directory);
    close(open(file, O_CREAT | O_WRONLY, 0600));
    close(open(other, O_CREAT | O_WRONLY, 0600));
    int in = inotify_init1(IN_NONBLOCK);
    if (place(in, 5) != 5) return fail("inotify");
    if (inotify_add_watch(5, directory, IN_CREATE | IN_DELETE) != 1) return fail("wd 1");
    if (inotify_add_watch(5, other, IN_OPEN) != 2 || inotify_rm_watch(5, 2)) return fail("wd 2");
    if (inotify_add_watch(5, file, IN_MODIFY | IN_ONESHOT) != 3) return fail("wd 3");
    if (expect_event(5, 2, IN_IGNORED, NULL)) return 1;
    int queued = -1;
    if (ioctl(5, FIONREAD, &queued) || queued != 0) return fail("events queued before the dump");

    wait_for_go();
    if (ioctl(5, FIONREAD, &queued) || queued != 0) {
        printf("FAIL %d bytes of events queued after the restore\n", queued);
        return 1;
    }
    if (!(fcntl(5, F_GETFL) & O_NONBLOCK)) return fail("O_NONBLOCK");
    close(open(created, O_CREAT | O_WRONLY, 0600));
    if (expect_event(5, 1, IN_CREATE, "new")) return 1;
    int append = open(file, O_WRONLY | O_APPEND);
    if (append < 0 || write(append, "z", 1) != 1) return fail("append");
    close(append);
    if (expect_event(5, 3, IN_MODIFY, NULL) || expect_event(5, 3, IN_IGNORED, NULL)) return 1;
    if (inotify_add_watch(5, directory, IN_CREATE | IN_DELETE) != 1) return fail("the directory's watch is not wd 1");
    int next = inotify_add_watch(5, created, IN_ATTRIB);
    if (next != 4) {
        printf("FAIL the next watch is wd %d, not 4\n", next);
        return 1;
    }
    printf("OK pid=%d inotify\n", getpid());
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "epoll") == 0) return run_epoll();
    if (argc >= 3 && strcmp(argv[1], "inotify") == 0) return run_inotify(argv[2]);
    fprintf(stderr, "usage: fd_epoll epoll | inotify DIR\n");
    return 2;
}
