/* Descriptor owners (F_SETOWN_EX, F_SETSIG), checked by the process itself
 * after a restore: the owners are what it set, and a signal-driven pipe
 * still signals it.
 *
 *   fd 3, 4  a pipe; its read end fd 3 is O_ASYNC|O_NONBLOCK, owned by the
 *            process itself (F_OWNER_PID), signalling SIGRTMIN+1 (blocked,
 *            taken with sigtimedwait)
 *   fd 5, 6  a socket pair; fd 5 owned by the thread (F_OWNER_TID), SIGIO
 *   fd 7     /dev/null, owned by the process group the process was started
 *            in (a group outside the process: its launcher's)
 *
 * Protocol: see subject_protocol.h. The check prints "OK pid=<pid> owners
 * restored".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "subject_protocol.h"

static int set_owner(int fd, int type, pid_t id) {
    struct f_owner_ex owner = {.type = type, .pid = id};
    return fcntl(fd, F_SETOWN_EX, &owner);
}

static int owner_is(int fd, int type, pid_t id) {
    struct f_owner_ex owner;
    if (fcntl(fd, F_GETOWN_EX, &owner) != 0) return 0;
    return owner.type == type && owner.pid == id;
}

int main(void) {
    int signal_number = SIGRTMIN + 1;
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, signal_number);
    if (sigprocmask(SIG_BLOCK, &blocked, NULL) != 0) return fail("sigprocmask");

    int ends[2], pair[2];
    if (pipe(ends) != 0 || place(ends[0], 3) != 3 || place(ends[1], 4) != 4) return fail("pipe");
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0 || place(pair[0], 5) != 5 || place(pair[1], 6) != 6)
        return fail("socketpair");
    if (place(open("/dev/null", O_RDONLY), 7) != 7) return fail("open /dev/null");
    pid_t group = getpgrp();

    if (fcntl(3, F_SETFL, O_ASYNC | O_NONBLOCK) != 0) return fail("F_SETFL O_ASYNC");
    if (set_owner(3, F_OWNER_PID, getpid()) != 0) return fail("F_SETOWN_EX fd 3");
    if (fcntl(3, F_SETSIG, signal_number) != 0) return fail("F_SETSIG fd 3");
    if (set_owner(5, F_OWNER_TID, gettid()) != 0) return fail("F_SETOWN_EX fd 5");
    if (set_owner(7, F_OWNER_PGRP, group) != 0) return fail("F_SETOWN_EX fd 7");

    wait_for_go();

    if (!owner_is(3, F_OWNER_PID, getpid())) return fail("fd 3 is not owned by the process");
    if (fcntl(3, F_GETSIG) != signal_number) return fail("fd 3 lost its F_SETSIG signal");
    if (!(fcntl(3, F_GETFL) & O_ASYNC)) return fail("fd 3 lost O_ASYNC");
    if (!owner_is(5, F_OWNER_TID, gettid())) return fail("fd 5 is not owned by the thread");
    if (fcntl(5, F_GETSIG) != 0) return fail("fd 5 has a signal it did not have");
    if (!owner_is(7, F_OWNER_PGRP, group)) return fail("fd 7 is not owned by the launcher's group");
    if (fcntl(4, F_GETOWN) != 0) return fail("fd 4 has an owner it did not have");

    /* Data arriving on fd 3 signals the process with SIGRTMIN+1 for fd 3. */
    if (write(4, "x", 1) != 1) return fail("write to the pipe");
    siginfo_t info;
    struct timespec patience = {.tv_sec = 30};
    if (sigtimedwait(&blocked, &info, &patience) != signal_number) return fail("no signal for data on fd 3");
    if (info.si_fd != 3 || info.si_code != POLL_IN) return fail("the signal is not for input on fd 3");

    printf("OK pid=%d owners restored\n", getpid());
    return 0;
}
