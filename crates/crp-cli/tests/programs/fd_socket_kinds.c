/* Sockets other than socket pairs, checked by the process itself after a
 * restore.
 *
 *   fd_socket_kinds unix DIR
 *       3: stream listener at DIR/listen.sock, backlog 5, SO_PASSCRED;
 *       4: datagram socket at DIR/dgram.sock with "first" and "second"
 *          waiting, SO_RCVTIMEO 2.5 s;
 *       5: seqpacket listener at an abstract name;
 *       6: autobound datagram socket;
 *       7: datagram socket connected to DIR/dgram.sock;
 *       8: unbound stream socket with SO_RCVBUF 50000;
 *       9: datagram socket bound to DIR/gone.sock, whose path was removed,
 *          with "kept" waiting;
 *      10: datagram socket connected to DIR/dgram.sock, shut down for writing;
 *      11, 12: a client connected to fd 3 and the connection fd 3 accepted
 *          (SO_PASSCRED, inherited from fd 3, off), with "to server"
 *          waiting on 12.
 *       After the restore each has its name, peer, queue and options, the
 *       listeners accept, the connected one still sends to its peer.
 *   fd_socket_kinds multicast
 *       3: UDP socket joined to 239.7.7.7 on lo (IP_ADD_MEMBERSHIP) and to
 *          239.7.7.8 from 127.0.0.9 only (IP_ADD_SOURCE_MEMBERSHIP); 4: a
 *          UDP socket that joined nothing. After the restore fd 3 is a
 *          member of both with the same filters, fd 4 of neither.
 *   fd_socket_kinds inet
 *       3: TCP listener on 127.0.0.1 (ephemeral port), backlog 7, with
 *          SO_REUSEADDR, SO_KEEPALIVE, TCP_NODELAY, TCP_KEEPIDLE 77,
 *          TCP_DEFER_ACCEPT, TCP_FASTOPEN, SO_LINGER, IP_TOS, SO_MARK,
 *          SO_PRIORITY;
 *       4: TCP listener on [::1] with IPV6_V6ONLY and SO_REUSEPORT;
 *       5: UDP socket on 127.0.0.1 with "one" and "two" waiting from 6;
 *       6: UDP socket on 127.0.0.1 connected to 5;
 *       7: UDP socket on [::1] with "v6" waiting from a closed sender,
 *          IPV6_TCLASS;
 *       8: unbound TCP socket with TCP_CORK and SO_SNDBUF;
 *       9: unbound UDP socket shut down for reading.
 *       After the restore: same addresses and options, 3 accepts a client
 *       that sends, the datagrams wait with their senders' addresses, 6
 *       still sends to 5.
 *
 *   fd_socket_kinds tcp
 *       3: TCP listener on 127.0.0.1 (SO_REUSEADDR); 4: a client connected to it, with a
 *       small receive buffer; 5: the accepted end. 4 sent "hello server",
 *       which waits on 5; 5 sent as much as the kernel took without
 *       blocking (a pattern), part of it waiting on 4, part still in 5's
 *       send queue. After the restore 5 reads "hello server", 4 reads the
 *       whole pattern, both ends carry on both ways, 3 still accepts.
 *
 * Protocol: subject_protocol.h. Prints "READY <pid>" then waits for a line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "subject_protocol.h"

static int option_at(int fd, int level, int name) {
    int value = -1;
    socklen_t length = sizeof value;
    if (getsockopt(fd, level, name, &value, &length)) return -1;
    return value;
}

static int set_option(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof value);
}

static socklen_t unix_address(struct sockaddr_un *address, const char *directory, const char *name) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    snprintf(address->sun_path, sizeof address->sun_path, "%s/%s", directory, name);
    return (socklen_t)sizeof *address;
}

static int same_name(int fd, const struct sockaddr_storage *expected, socklen_t expected_length) {
    struct sockaddr_storage now;
    socklen_t length = sizeof now;
    if (getsockname(fd, (struct sockaddr *)&now, &length)) return 0;
    return length == expected_length && memcmp(&now, expected, length) == 0;
}

static int expect_datagram(int fd, const char *text, struct sockaddr_storage *from, socklen_t *from_length) {
    char buffer[64];
    struct sockaddr_storage source;
    socklen_t length = sizeof source;
    ssize_t n = recvfrom(fd, buffer, sizeof buffer, MSG_DONTWAIT, (struct sockaddr *)&source, &length);
    if (n != (ssize_t)strlen(text) || memcmp(buffer, text, (size_t)n) != 0) return 0;
    if (from) {
        *from = source;
        *from_length = length;
    }
    return 1;
}

/* Waits (up to 5 s) for fd to be readable. */
static int readable(int fd) {
    struct pollfd poller = {.fd = fd, .events = POLLIN};
    return poll(&poller, 1, 5000) == 1;
}

static int run_unix(const char *directory) {
    for (int fd = 3; fd <= 12; fd++) close(fd);
    struct sockaddr_un listen_at, dgram_at, gone_at;
    socklen_t length = unix_address(&listen_at, directory, "listen.sock");
    unix_address(&dgram_at, directory, "dgram.sock");
    unix_address(&gone_at, directory, "gone.sock");
    if (place(socket(AF_UNIX, SOCK_STREAM, 0), 3) < 0 || bind(3, (struct sockaddr *)&listen_at, length) || listen(3, 5)) return fail("listener");
    if (set_option(3, SOL_SOCKET, SO_PASSCRED, 1)) return fail("SO_PASSCRED");
    if (place(socket(AF_UNIX, SOCK_DGRAM, 0), 4) < 0 || bind(4, (struct sockaddr *)&dgram_at, length))
        return fail("datagram socket");
    struct timeval timeout = {2, 500000};
    if (setsockopt(4, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout)) return fail("SO_RCVTIMEO");
    int sender = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (sendto(sender, "first", 5, 0, (struct sockaddr *)&dgram_at, length) != 5 ||
        sendto(sender, "second", 6, 0, (struct sockaddr *)&dgram_at, length) != 6)
        return fail("sendto");
    close(sender);
    struct sockaddr_un abstract = {.sun_family = AF_UNIX};
    int abstract_length = snprintf(abstract.sun_path + 1, sizeof abstract.sun_path - 1, "crp-test-%d", getpid());
    socklen_t abstract_size = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)abstract_length);
    if (place(socket(AF_UNIX, SOCK_SEQPACKET, 0), 5) < 0 || bind(5, (struct sockaddr *)&abstract, abstract_size) ||
        listen(5, 3))
        return fail("abstract listener");
    if (place(socket(AF_UNIX, SOCK_DGRAM, 0), 6) < 0) return fail("socket 6");
    struct sockaddr_un family_only = {.sun_family = AF_UNIX};
    if (bind(6, (struct sockaddr *)&family_only, sizeof(sa_family_t))) return fail("autobind");
    struct sockaddr_storage autobound;
    socklen_t autobound_length = sizeof autobound;
    if (getsockname(6, (struct sockaddr *)&autobound, &autobound_length)) return fail("getsockname 6");
    if (place(socket(AF_UNIX, SOCK_DGRAM, 0), 7) < 0 || connect(7, (struct sockaddr *)&dgram_at, length))
        return fail("connected datagram socket");
    if (place(socket(AF_UNIX, SOCK_DGRAM, 0), 10) < 0 || connect(10, (struct sockaddr *)&dgram_at, length) ||
        shutdown(10, SHUT_WR))
        return fail("shut down datagram socket");
    if (place(socket(AF_UNIX, SOCK_STREAM, 0), 8) < 0 || set_option(8, SOL_SOCKET, SO_RCVBUF, 50000))
        return fail("unbound stream socket");
    int rcvbuf = option_at(8, SOL_SOCKET, SO_RCVBUF);
    if (place(socket(AF_UNIX, SOCK_STREAM, 0), 11) < 0 || connect(11, (struct sockaddr *)&listen_at, length) ||
        place(accept(3, NULL, NULL), 12) != 12 || set_option(12, SOL_SOCKET, SO_PASSCRED, 0) ||
        send(11, "to server", 9, 0) != 9)
        return fail("connection accepted from fd 3");
    if (place(socket(AF_UNIX, SOCK_DGRAM, 0), 9) < 0 || bind(9, (struct sockaddr *)&gone_at, length))
        return fail("socket 9");
    int gone_sender = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (sendto(gone_sender, "kept", 4, 0, (struct sockaddr *)&gone_at, length) != 4 || unlink(gone_at.sun_path))
        return fail("removed path");
    close(gone_sender);

    wait_for_go();
    struct sockaddr_storage expected;
    memcpy(&expected, &listen_at, sizeof listen_at);
    socklen_t path_length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(listen_at.sun_path) + 1);
    if (!same_name(3, &expected, path_length)) return fail("fd 3 lost its name");
    if (option_at(3, SOL_SOCKET, SO_ACCEPTCONN) != 1 || option_at(3, SOL_SOCKET, SO_PASSCRED) != 1)
        return fail("fd 3 is not listening with SO_PASSCRED");
    int client = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(client, (struct sockaddr *)&listen_at, length)) return fail("connect to fd 3's path");
    int accepted = accept(3, NULL, NULL);
    if (accepted < 0 || send(client, "hi", 2, 0) != 2 || !readable(accepted)) return fail("accept on fd 3");
    close(client);
    close(accepted);
    if (!expect_datagram(4, "first", NULL, NULL) || !expect_datagram(4, "second", NULL, NULL))
        return fail("the datagrams waiting on fd 4 are lost");
    struct timeval timeout_now;
    socklen_t timeout_length = sizeof timeout_now;
    if (getsockopt(4, SOL_SOCKET, SO_RCVTIMEO, &timeout_now, &timeout_length) || timeout_now.tv_sec != 2 ||
        timeout_now.tv_usec != 500000)
        return fail("SO_RCVTIMEO of fd 4");
    int packet = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (connect(packet, (struct sockaddr *)&abstract, abstract_size)) return fail("connect to fd 5's abstract name");
    close(packet);
    if (!same_name(6, &autobound, autobound_length)) return fail("fd 6 lost its autobound name");
    if (send(7, "via peer", 8, 0) != 8 || !expect_datagram(4, "via peer", NULL, NULL))
        return fail("fd 7 no longer sends to its peer");
    if (send(10, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE) return fail("fd 10 is no longer shut down for writing");
    if (option_at(8, SOL_SOCKET, SO_TYPE) != SOCK_STREAM || option_at(8, SOL_SOCKET, SO_RCVBUF) != rcvbuf)
        return fail("fd 8");
    memcpy(&expected, &gone_at, sizeof gone_at);
    if (!same_name(9, &expected, path_length - (socklen_t)strlen("listen.sock") + (socklen_t)strlen("gone.sock")))
        return fail("fd 9 lost its name");
    struct stat status;
    if (stat(gone_at.sun_path, &status) == 0) return fail("fd 9's removed path is back");
    if (!expect_datagram(9, "kept", NULL, NULL)) return fail("the datagram waiting on fd 9 is lost");
    char to_server[16];
    if (recv(12, to_server, sizeof to_server, MSG_DONTWAIT) != 9 || memcmp(to_server, "to server", 9))
        return fail("\"to server\" is not waiting on fd 12");
    if (send(12, "reply", 5, 0) != 5 || !readable(11) || recv(11, to_server, sizeof to_server, 0) != 5)
        return fail("the accepted connection no longer carries");
    if (fcntl(13, F_GETFD) != -1) return fail("a descriptor too many");
    printf("OK pid=%d unix\n", getpid());
    fflush(stdout);
    return 0;
}

static int bound_inet(int family, int type, int fd) {
    if (place(socket(family, type, 0), fd) != fd) return -1;
    return fd;
}

static int bind_loopback(int fd, int family) {
    if (family == AF_INET) {
        struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        return bind(fd, (struct sockaddr *)&address, sizeof address);
    }
    struct sockaddr_in6 address = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    return bind(fd, (struct sockaddr *)&address, sizeof address);
}

struct name {
    struct sockaddr_storage address;
    socklen_t length;
};

static struct name name_of(int fd) {
    struct name name = {.length = sizeof name.address};
    getsockname(fd, (struct sockaddr *)&name.address, &name.length);
    return name;
}

static const struct {
    int fd, level, name, value;
} INET_OPTIONS[] = {
    {3, SOL_SOCKET, SO_REUSEADDR, 1},   {3, SOL_SOCKET, SO_KEEPALIVE, 1},  {3, IPPROTO_TCP, TCP_NODELAY, 1},
    {3, IPPROTO_TCP, TCP_KEEPIDLE, 77}, {3, IPPROTO_TCP, TCP_DEFER_ACCEPT, 3}, {3, IPPROTO_TCP, TCP_FASTOPEN, 8},
    {3, IPPROTO_IP, IP_TOS, 0x10},      {3, SOL_SOCKET, SO_MARK, 5},       {3, SOL_SOCKET, SO_PRIORITY, 3},
    {4, IPPROTO_IPV6, IPV6_V6ONLY, 1},  {4, SOL_SOCKET, SO_REUSEPORT, 1},  {7, IPPROTO_IPV6, IPV6_TCLASS, 0x20},
    {8, IPPROTO_TCP, TCP_CORK, 1},      {8, SOL_SOCKET, SO_SNDBUF, 30000},
};
#define INET_OPTION_COUNT (sizeof INET_OPTIONS / sizeof INET_OPTIONS[0])

static int run_inet(void) {
    for (int fd = 3; fd <= 12; fd++) close(fd);
    if (bound_inet(AF_INET, SOCK_STREAM, 3) < 0 || bound_inet(AF_INET6, SOCK_STREAM, 4) < 0 ||
        bound_inet(AF_INET, SOCK_DGRAM, 5) < 0 || bound_inet(AF_INET, SOCK_DGRAM, 6) < 0 ||
        bound_inet(AF_INET6, SOCK_DGRAM, 7) < 0 || bound_inet(AF_INET, SOCK_STREAM, 8) < 0)
        return fail("socket");
    int values[INET_OPTION_COUNT];
    for (size_t index = 0; index < INET_OPTION_COUNT; index++) {
        if (set_option(INET_OPTIONS[index].fd, INET_OPTIONS[index].level, INET_OPTIONS[index].name,
                       INET_OPTIONS[index].value))
            return fail("setsockopt");
        values[index] = option_at(INET_OPTIONS[index].fd, INET_OPTIONS[index].level, INET_OPTIONS[index].name);
    }
    struct linger linger = {1, 4};
    if (setsockopt(3, SOL_SOCKET, SO_LINGER, &linger, sizeof linger)) return fail("SO_LINGER");
    if (bind_loopback(3, AF_INET) || listen(3, 7) || bind_loopback(4, AF_INET6) || listen(4, 2))
        return fail("listen");
    if (bind_loopback(5, AF_INET) || bind_loopback(6, AF_INET) || bind_loopback(7, AF_INET6)) return fail("bind");
    struct name names[9];
    for (int fd = 3; fd <= 8; fd++) names[fd] = name_of(fd);
    if (connect(6, (struct sockaddr *)&names[5].address, names[5].length)) return fail("connect 6 to 5");
    if (send(6, "one", 3, 0) != 3 || send(6, "two", 3, 0) != 3) return fail("send from 6");
    int closed_sender = socket(AF_INET6, SOCK_DGRAM, 0);
    if (bind_loopback(closed_sender, AF_INET6) ||
        sendto(closed_sender, "v6", 2, 0, (struct sockaddr *)&names[7].address, names[7].length) != 2)
        return fail("send to 7");
    struct name closed_name = name_of(closed_sender);
    close(closed_sender);
    if (!readable(5) || !readable(7)) return fail("datagrams not delivered");
    /* Not connected: ENOTCONN, but the kernel keeps the bits. */
    if (place(socket(AF_INET, SOCK_DGRAM, 0), 9) != 9 || (shutdown(9, SHUT_RD) && errno != ENOTCONN))
        return fail("shut down fd 9");

    wait_for_go();
    if (option_at(5, SOL_SOCKET, SO_PEEK_OFF) != -1 || option_at(7, SOL_SOCKET, SO_PEEK_OFF) != -1)
        return fail("a peek offset changed");
    for (int fd = 3; fd <= 8; fd++) {
        struct name now = name_of(fd);
        if (now.length != names[fd].length || memcmp(&now.address, &names[fd].address, now.length) != 0)
            return fail("a socket lost its address");
    }
    for (size_t index = 0; index < INET_OPTION_COUNT; index++) {
        if (option_at(INET_OPTIONS[index].fd, INET_OPTIONS[index].level, INET_OPTIONS[index].name) != values[index]) {
            printf("option %zu of fd %d is %d, was %d\n", index, INET_OPTIONS[index].fd,
                   option_at(INET_OPTIONS[index].fd, INET_OPTIONS[index].level, INET_OPTIONS[index].name),
                   values[index]);
            return fail("a socket option changed");
        }
    }
    struct linger linger_now;
    socklen_t linger_length = sizeof linger_now;
    if (getsockopt(3, SOL_SOCKET, SO_LINGER, &linger_now, &linger_length) || !linger_now.l_onoff ||
        linger_now.l_linger != 4)
        return fail("SO_LINGER");
    if (option_at(3, SOL_SOCKET, SO_ACCEPTCONN) != 1 || option_at(4, SOL_SOCKET, SO_ACCEPTCONN) != 1)
        return fail("not listening");
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(client, (struct sockaddr *)&names[3].address, names[3].length) || send(client, "x", 1, 0) != 1)
        return fail("connect to fd 3");
    if (!readable(3)) return fail("fd 3 does not accept");
    int accepted = accept(3, NULL, NULL);
    char byte = 0;
    if (accepted < 0 || recv(accepted, &byte, 1, 0) != 1 || byte != 'x') return fail("accepted connection");
    close(accepted);
    close(client);
    int client6 = socket(AF_INET6, SOCK_STREAM, 0);
    if (connect(client6, (struct sockaddr *)&names[4].address, names[4].length)) return fail("connect to fd 4");
    close(client6);
    struct sockaddr_storage from;
    socklen_t from_length;
    if (!expect_datagram(5, "one", &from, &from_length)) return fail("\"one\" is not waiting on fd 5");
    if (from_length != names[6].length || memcmp(&from, &names[6].address, from_length) != 0)
        return fail("\"one\" came from elsewhere");
    if (!expect_datagram(5, "two", NULL, NULL)) return fail("\"two\" is not waiting on fd 5");
    if (!expect_datagram(7, "v6", &from, &from_length)) return fail("\"v6\" is not waiting on fd 7");
    if (((struct sockaddr_in6 *)&from)->sin6_port != ((struct sockaddr_in6 *)&closed_name.address)->sin6_port)
        return fail("\"v6\" came from another port");
    if (send(6, "three", 5, 0) != 5 || !readable(5) || !expect_datagram(5, "three", NULL, NULL))
        return fail("fd 6 no longer sends to fd 5");
    struct pollfd hangup = {.fd = 9, .events = POLLRDHUP};
    if (poll(&hangup, 1, 0) != 1 || !(hangup.revents & POLLRDHUP)) return fail("fd 9 is no longer shut down");
    if (fcntl(10, F_GETFD) != -1) return fail("a descriptor too many");
    printf("OK pid=%d inet\n", getpid());
    fflush(stdout);
    return 0;
}

/* Reads exactly `length` bytes from fd (waiting up to 10 s for each piece). */
static int read_exactly(int fd, unsigned char *buffer, size_t length) {
    size_t done = 0;
    while (done < length) {
        struct pollfd poller = {.fd = fd, .events = POLLIN};
        if (poll(&poller, 1, 10000) != 1) return 0;
        ssize_t n = recv(fd, buffer + done, length - done, MSG_DONTWAIT);
        if (n <= 0) return 0;
        done += (size_t)n;
    }
    return 1;
}

static int run_tcp(void) {
    for (int fd = 3; fd <= 12; fd++) close(fd);
    if (bound_inet(AF_INET, SOCK_STREAM, 3) < 0 || set_option(3, SOL_SOCKET, SO_REUSEADDR, 1) ||
        bind_loopback(3, AF_INET) || listen(3, 4))
        return fail("listener");
    struct name listener = name_of(3);
    if (bound_inet(AF_INET, SOCK_STREAM, 4) < 0 || set_option(4, SOL_SOCKET, SO_RCVBUF, 4096)) return fail("client");
    if (connect(4, (struct sockaddr *)&listener.address, listener.length)) return fail("connect");
    if (place(accept(3, NULL, NULL), 5) != 5) return fail("accept");
    if (set_option(5, IPPROTO_TCP, TCP_NODELAY, 1) || set_option(5, SOL_SOCKET, SO_SNDBUF, 65536))
        return fail("options of fd 5");
    if (send(4, "hello server", 12, 0) != 12) return fail("send from the client");
    static unsigned char pattern[1 << 20], received[1 << 20];
    for (size_t index = 0; index < sizeof pattern; index++) pattern[index] = (unsigned char)(index % 251);
    size_t total = 0;
    for (;;) {
        ssize_t n = send(5, pattern + total, sizeof pattern - total, MSG_DONTWAIT);
        if (n <= 0) break;
        total += (size_t)n;
    }
    if (total == 0 || total == sizeof pattern) return fail("the send queue did not fill");
    struct pollfd poller = {.fd = 5, .events = POLLIN};
    if (poll(&poller, 1, 10000) != 1) return fail("hello server not delivered");
    struct name client = name_of(4), accepted = name_of(5);
    int reuse = option_at(5, SOL_SOCKET, SO_REUSEADDR);
    if (reuse != 1) return fail("the accepted end has no SO_REUSEADDR from its listener");

    wait_for_go();
    /* Neither left in repair mode nor with the SO_REUSEADDR repair off clears. */
    if (option_at(4, IPPROTO_TCP, TCP_REPAIR) != 0 || option_at(5, IPPROTO_TCP, TCP_REPAIR) != 0)
        return fail("an end is in repair mode");
    if (option_at(5, SOL_SOCKET, SO_REUSEADDR) != reuse) return fail("SO_REUSEADDR of fd 5 changed");
    struct name client_now = name_of(4), accepted_now = name_of(5);
    if (client_now.length != client.length || memcmp(&client_now.address, &client.address, client.length) ||
        accepted_now.length != accepted.length || memcmp(&accepted_now.address, &accepted.address, accepted.length))
        return fail("an end lost its address");
    if (option_at(5, IPPROTO_TCP, TCP_NODELAY) != 1) return fail("TCP_NODELAY of fd 5");
    unsigned char hello[12];
    if (!read_exactly(5, hello, sizeof hello) || memcmp(hello, "hello server", 12)) return fail("hello server lost");
    if (!read_exactly(4, received, total)) return fail("the pattern is short");
    if (memcmp(received, pattern, total)) return fail("the pattern changed");
    unsigned char byte;
    if (recv(4, &byte, 1, MSG_DONTWAIT) != -1 || errno != EAGAIN) return fail("bytes too many on fd 4");
    unsigned char word[5];
    if (send(4, "again", 5, 0) != 5 || !read_exactly(5, word, 5) || memcmp(word, "again", 5))
        return fail("client to server after the restore");
    if (send(5, "back!", 5, 0) != 5 || !read_exactly(4, word, 5) || memcmp(word, "back!", 5))
        return fail("server to client after the restore");
    int another = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(another, (struct sockaddr *)&listener.address, listener.length)) return fail("connect again");
    int accepted_again = accept(3, NULL, NULL);
    if (accepted_again < 0) return fail("accept again");
    if (fcntl(6, F_GETFD) != -1 && 6 != another) return fail("a descriptor too many");
    printf("OK pid=%d tcp %zu\n", getpid(), total);
    fflush(stdout);
    return 0;
}

/* The filter of `fd`'s membership of `group` on lo: 0 with its mode and
 * first source, or -1 (errno EADDRNOTAVAIL when it is not a member). */
static int membership(int fd, const char *group, unsigned *mode, unsigned *count, struct in_addr *source) {
    char buffer[IP_MSFILTER_SIZE(4)];
    struct ip_msfilter *filter = (struct ip_msfilter *)buffer;
    memset(buffer, 0, sizeof buffer);
    inet_pton(AF_INET, group, &filter->imsf_multiaddr);
    inet_pton(AF_INET, "127.0.0.1", &filter->imsf_interface);
    filter->imsf_numsrc = 4;
    socklen_t length = sizeof buffer;
    if (getsockopt(fd, IPPROTO_IP, IP_MSFILTER, filter, &length)) return -1;
    *mode = filter->imsf_fmode;
    *count = filter->imsf_numsrc;
    if (filter->imsf_numsrc > 0) *source = filter->imsf_slist[0];
    return 0;
}

static int run_multicast(void) {
    close_range(3, ~0U, 0);
    int member = socket(AF_INET, SOCK_DGRAM, 0), other = socket(AF_INET, SOCK_DGRAM, 0);
    if (member != 3 || other != 4) return fail("socket");
    struct sockaddr_in any = {.sin_family = AF_INET};
    if (bind(3, (struct sockaddr *)&any, sizeof any)) return fail("bind");
    struct ip_mreq join = {0};
    inet_pton(AF_INET, "239.7.7.7", &join.imr_multiaddr);
    inet_pton(AF_INET, "127.0.0.1", &join.imr_interface);
    if (setsockopt(3, IPPROTO_IP, IP_ADD_MEMBERSHIP, &join, sizeof join)) return fail("IP_ADD_MEMBERSHIP");
    struct ip_mreq_source source_join = {0};
    inet_pton(AF_INET, "239.7.7.8", &source_join.imr_multiaddr);
    inet_pton(AF_INET, "127.0.0.1", &source_join.imr_interface);
    inet_pton(AF_INET, "127.0.0.9", &source_join.imr_sourceaddr);
    if (setsockopt(3, IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, &source_join, sizeof source_join))
        return fail("IP_ADD_SOURCE_MEMBERSHIP");
    wait_for_go();
    unsigned mode, count;
    struct in_addr source;
    if (membership(3, "239.7.7.7", &mode, &count, &source) || mode != MCAST_EXCLUDE || count != 0)
        return fail("fd 3 is no member of 239.7.7.7 (all sources)");
    if (membership(3, "239.7.7.8", &mode, &count, &source) || mode != MCAST_INCLUDE || count != 1 ||
        source.s_addr != htonl(0x7f000009))
        return fail("fd 3 is no member of 239.7.7.8 from 127.0.0.9 only");
    if (membership(4, "239.7.7.7", &mode, &count, &source) == 0 || errno != EADDRNOTAVAIL)
        return fail("fd 4 is a member of 239.7.7.7");
    printf("OK pid=%d multicast\n", getpid());
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "multicast") == 0) return run_multicast();
    if (argc == 2 && strcmp(argv[1], "tcp") == 0) return run_tcp();
    if (argc == 3 && strcmp(argv[1], "unix") == 0) return run_unix(argv[2]);
    if (argc == 2 && strcmp(argv[1], "inet") == 0) return run_inet();
    fprintf(stderr, "usage: fd_socket_kinds unix DIR | inet | tcp | multicast\n");
    return 2;
}
