/* Unix socket pairs held by a process, checked by the process itself after
 * a restore.
 *
 *   fd_sockets pairs
 *       stream pair 3/4 (4 non-blocking, 3 with SO_RCVBUF 100000) with
 *       "stream bytes" waiting on 4 and "back" on 3; datagram pair 5/6 with
 *       "a", "bb", "ccc" waiting on 6; seqpacket pair 7/8 with one packet
 *       waiting on 7 and 8 shut down for writing; stream pair 9/10 with
 *       SO_PASSCRED on 10 and SO_SNDTIMEO 1.5 s on 9. After the restore
 *       every queue, flag, option and shutdown is as it was, and each pair
 *       still carries new messages.
 *   fd_sockets inflight FILE
 *       descriptors in flight (SCM_RIGHTS): on a stream pair (3, 4), "plain",
 *       then "fds" carrying a pipe's read end (its write end on fd 6, "piped"
 *       waiting in it), FILE opened read-write at offset 4 (also on fd 7,
 *       the same description) and a bound UDP socket, then "after"; on a
 *       datagram pair (8, 9), "one" carrying FILE's description again.
 *       After the restore it receives them all and uses them: reads the
 *       pipe, reads FILE at its offset (which fd 7 shares), sends a
 *       datagram to the UDP socket's own port and receives it.
 *   fd_sockets inflight-epoll
 *       a stream pair with an epoll descriptor in flight (crp refuses it).
 *   fd_sockets outside
 *       one end of a stream pair (fd 3) whose other end a helper (its
 *       grandchild) holds; after the restore it writes "hello" to fd 3,
 *       which must be a stream socket (the one the user handed over).
 *
 * Protocol: prints "READY <pid>", waits for a line on stdin, then prints
 * "OK pid=<pid> ..." and exits 0, or "FAIL <reason>" and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "subject_protocol.h"

static int pair_at(int type, int first, int second) {
    int ends[2];
    if (socketpair(AF_UNIX, type, 0, ends)) return -1;
    if (dup2(ends[0], first) != first || dup2(ends[1], second) != second) return -1;
    if (ends[0] != first && ends[0] != second) close(ends[0]);
    if (ends[1] != first && ends[1] != second) close(ends[1]);
    return 0;
}

static int expect(int fd, const char *text) {
    char buffer[64];
    ssize_t n = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    return n == (ssize_t)strlen(text) && memcmp(buffer, text, (size_t)n) == 0;
}

static int option(int fd, int name) {
    int value = -1;
    socklen_t length = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, name, &value, &length)) return -1;
    return value;
}

static int run_pairs(void) {
    /* Above 10 first, so that the pairs can be placed at 3-10. */
    for (int fd = 3; fd <= 10; fd++) close(fd);
    if (pair_at(SOCK_STREAM, 3, 4) || pair_at(SOCK_DGRAM, 5, 6) || pair_at(SOCK_SEQPACKET, 7, 8) ||
        pair_at(SOCK_STREAM, 9, 10))
        return fail("socketpair");
    int size = 100000;
    if (setsockopt(3, SOL_SOCKET, SO_RCVBUF, &size, sizeof size)) return fail("SO_RCVBUF");
    int rcvbuf = option(3, SO_RCVBUF);
    if (fcntl(4, F_SETFL, O_NONBLOCK)) return fail("O_NONBLOCK");
    int one = 1;
    if (setsockopt(10, SOL_SOCKET, SO_PASSCRED, &one, sizeof one)) return fail("SO_PASSCRED");
    struct timeval timeout = {1, 500000};
    if (setsockopt(9, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout)) return fail("SO_SNDTIMEO");
    if (send(3, "stream ", 7, 0) != 7 || send(3, "bytes", 5, 0) != 5 || send(4, "back", 4, 0) != 4)
        return fail("send on the stream pair");
    if (send(5, "a", 1, 0) != 1 || send(5, "bb", 2, 0) != 2 || send(5, "ccc", 3, 0) != 3)
        return fail("send on the datagram pair");
    if (send(8, "packet", 6, 0) != 6 || shutdown(8, SHUT_WR)) return fail("seqpacket");
    wait_for_go();
    if (!expect(4, "stream bytes")) return fail("stream bytes lost");
    if (!expect(3, "back")) return fail("stream bytes back lost");
    if (!(fcntl(4, F_GETFL) & O_NONBLOCK) || (fcntl(3, F_GETFL) & O_NONBLOCK)) return fail("status flags");
    if (option(3, SO_RCVBUF) != rcvbuf) return fail("SO_RCVBUF changed");
    if (!expect(6, "a") || !expect(6, "bb") || !expect(6, "ccc")) return fail("datagrams lost or merged");
    if (option(6, SO_TYPE) != SOCK_DGRAM || option(7, SO_TYPE) != SOCK_SEQPACKET) return fail("socket types");
    if (!expect(7, "packet")) return fail("packet lost");
    char byte;
    if (recv(7, &byte, 1, MSG_DONTWAIT) != 0) return fail("the seqpacket peer is no longer shut down");
    if (send(8, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE) return fail("fd 8 can write again");
    if (option(10, SO_PASSCRED) != 1 || option(9, SO_PASSCRED) != 0) return fail("SO_PASSCRED");
    struct timeval timeout_now;
    socklen_t timeout_length = sizeof timeout_now;
    if (getsockopt(9, SOL_SOCKET, SO_SNDTIMEO, &timeout_now, &timeout_length) || timeout_now.tv_sec != 1 ||
        timeout_now.tv_usec != 500000)
        return fail("SO_SNDTIMEO of fd 9");
    if (send(6, "new", 3, 0) != 3 || !expect(5, "new")) return fail("the datagram pair no longer carries");
    if (send(9, "z", 1, 0) != 1 || !expect(10, "z")) return fail("the passcred pair no longer carries");
    if (fcntl(11, F_GETFD) != -1) return fail("a descriptor too many");
    printf("OK pid=%d pairs\n", getpid());
    fflush(stdout);
    return 0;
}

/* Sends `text` through `fd` with `count` descriptors of `passed`. */
static int send_with(int fd, const char *text, const int *passed, int count) {
    struct iovec vector = {(void *)text, strlen(text)};
    char control[CMSG_SPACE(sizeof(int) * 4)];
    memset(control, 0, sizeof control);
    struct msghdr header = {.msg_iov = &vector, .msg_iovlen = 1};
    if (count > 0) {
        header.msg_control = control;
        header.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count);
        struct cmsghdr *message = CMSG_FIRSTHDR(&header);
        message->cmsg_level = SOL_SOCKET;
        message->cmsg_type = SCM_RIGHTS;
        message->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
        memcpy(CMSG_DATA(message), passed, sizeof(int) * (size_t)count);
    }
    return sendmsg(fd, &header, 0) == (ssize_t)strlen(text) ? 0 : -1;
}

/* Receives from `fd`: the bytes (NUL-terminated into `text`) and up to 4
 * descriptors into `passed`; how many descriptors, or -1. */
static int receive_with(int fd, char *text, size_t size, int *passed) {
    struct iovec vector = {text, size - 1};
    char control[CMSG_SPACE(sizeof(int) * 4)];
    struct msghdr header = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    ssize_t n = recvmsg(fd, &header, MSG_DONTWAIT);
    if (n < 0) return -1;
    text[n] = 0;
    int count = 0;
    for (struct cmsghdr *message = CMSG_FIRSTHDR(&header); message; message = CMSG_NXTHDR(&header, message)) {
        if (message->cmsg_level != SOL_SOCKET || message->cmsg_type != SCM_RIGHTS) return -1;
        count = (int)((message->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        memcpy(passed, CMSG_DATA(message), sizeof(int) * (size_t)count);
    }
    return count;
}

static int run_inflight(const char *path) {
    close_range(3, ~0U, 0);
    if (pair_at(SOCK_STREAM, 3, 4) || pair_at(SOCK_DGRAM, 8, 9)) return fail("socketpair");
    int pipe_ends[2];
    if (pipe(pipe_ends) || place(pipe_ends[1], 6) != 6) return fail("pipe");
    if (write(6, "piped", 5) != 5) return fail("write to the pipe");
    int file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (file < 0 || write(file, "0123456789", 10) != 10 || lseek(file, 4, SEEK_SET) != 4) return fail("file");
    if (dup2(file, 7) != 7) return fail("dup2 the file");
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t length = sizeof address;
    if (udp < 0 || bind(udp, (struct sockaddr *)&address, sizeof address) ||
        getsockname(udp, (struct sockaddr *)&address, &length))
        return fail("udp");
    int port = ntohs(address.sin_port);
    int passed[3] = {pipe_ends[0], file, udp};
    if (send_with(3, "plain", NULL, 0) || send_with(3, "fds", passed, 3) || send_with(3, "after", NULL, 0))
        return fail("send on the stream pair");
    if (send_with(9, "one", &file, 1)) return fail("send on the datagram pair");
    close(pipe_ends[0]);
    close(file);
    close(udp);
    wait_for_go();
    char text[64];
    int got[4];
    if (receive_with(4, text, sizeof text, got) != 3 || strcmp(text, "plainfds") != 0)
        return fail("the message with descriptors");
    if (receive_with(4, text, sizeof text, got + 3) != 0 || strcmp(text, "after") != 0)
        return fail("the message after it");
    char buffer[16] = {0};
    if (read(got[0], buffer, sizeof buffer) != 5 || memcmp(buffer, "piped", 5) != 0) return fail("the passed pipe");
    if (write(6, "more", 4) != 4 || read(got[0], buffer, sizeof buffer) != 4 || memcmp(buffer, "more", 4) != 0)
        return fail("the passed pipe's write end");
    if (read(got[1], buffer, 3) != 3 || memcmp(buffer, "456", 3) != 0) return fail("the passed file at its offset");
    if (lseek(7, 0, SEEK_CUR) != 7) return fail("fd 7 is not the passed file's description");
    int again;
    if (receive_with(8, text, sizeof text, &again) != 1 || strcmp(text, "one") != 0) return fail("the datagram");
    if (lseek(again, 0, SEEK_CUR) != 7) return fail("the datagram's file is another description");
    length = sizeof address;
    if (getsockname(got[2], (struct sockaddr *)&address, &length) || ntohs(address.sin_port) != port)
        return fail("the passed socket's port");
    if (sendto(got[2], "ping", 4, 0, (struct sockaddr *)&address, sizeof address) != 4 ||
        recv(got[2], buffer, sizeof buffer, 0) != 4 || memcmp(buffer, "ping", 4) != 0)
        return fail("the passed socket carries no datagram");
    printf("OK pid=%d inflight\n", getpid());
    fflush(stdout);
    return 0;
}

static int run_inflight_epoll(void) {
    close_range(3, ~0U, 0);
    if (pair_at(SOCK_STREAM, 3, 4)) return fail("socketpair");
    int poller = epoll_create1(0);
    if (poller < 0 || send_with(3, "x", &poller, 1)) return fail("send the epoll");
    close(poller);
    wait_for_go();
    char text[8];
    int got;
    if (receive_with(4, text, sizeof text, &got) != 1) return fail("the epoll is not in flight any more");
    printf("OK pid=%d inflight-epoll\n", getpid());
    fflush(stdout);
    return 0;
}

static int run_outside(void) {
    int ends[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, ends)) return fail("socketpair");
    /* A grandchild holds the other end, so the process has no children. */
    pid_t middle = fork();
    if (middle < 0) return fail("fork");
    if (middle == 0 && fork() != 0) _exit(0);
    if (middle == 0) {
        close(ends[0]);
        char byte;
        while (read(ends[1], &byte, 1) > 0) {
        }
        _exit(0);
    }
    if (waitpid(middle, NULL, 0) != middle) return fail("waitpid");
    close(ends[1]);
    if (place(ends[0], 3) != 3) return fail("dup2");
    wait_for_go();
    if (option(3, SO_TYPE) != SOCK_STREAM) return fail("fd 3 is not a stream socket");
    if (send(3, "hello", 5, MSG_NOSIGNAL) != 5) return fail("send on fd 3");
    printf("OK pid=%d outside\n", getpid());
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "outside") == 0) return run_outside();
    if (argc == 2 && strcmp(argv[1], "pairs") == 0) return run_pairs();
    if (argc == 3 && strcmp(argv[1], "inflight") == 0) return run_inflight(argv[2]);
    if (argc == 2 && strcmp(argv[1], "inflight-epoll") == 0) return run_inflight_epoll();
    fprintf(stderr, "usage: fd_sockets pairs|inflight FILE|inflight-epoll|outside\n");
    return 2;
}
