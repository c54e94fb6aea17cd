/* A program that opens pseudo-terminal pairs and talks to itself through
 * them: pair A (master fd 3, slave fd 4; the slave raw without echo,
 * window 10x20, packet mode on the master, the slave also on fd 6 by
 * another open, and on fd 2 as a dup of fd 4) and pair B (master fd 5 only, left locked, canonical with
 * echo, window 50x132). Both talk before the dump, each side read to the
 * end. After the restore it checks every setting, that fd 4 and 6 are the
 * slave of the master on fd 3 (ptsname), and talks again both ways. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>

#include "subject_protocol.h"

static int talk(int master, int slave) {
    char buffer[64];
    if (write(master, "ping", 4) != 4) return fail("write to the master");
    ssize_t got = read(slave, buffer, sizeof buffer);
    if (got != 4 || memcmp(buffer, "ping", 4) != 0) return fail("the slave did not read ping");
    if (write(slave, "pong", 4) != 4) return fail("write to the slave");
    /* Packet mode: a leading TIOCPKT_DATA (0) byte. */
    got = read(master, buffer, sizeof buffer);
    if (got != 5 || buffer[0] != TIOCPKT_DATA || memcmp(buffer + 1, "pong", 4) != 0)
        return fail("the master did not read a data packet with pong");
    return 0;
}

static int same_slave(int master, int slave) {
    char name[64];
    if (ptsname_r(master, name, sizeof name) != 0) return fail("ptsname");
    struct stat by_name, by_fd;
    if (stat(name, &by_name) != 0 || fstat(slave, &by_fd) != 0) return fail("stat the slave");
    if (by_name.st_rdev != by_fd.st_rdev) return fail("a slave descriptor is not the master's slave");
    return 0;
}

int main(void) {
    int master = place(posix_openpt(O_RDWR | O_NOCTTY), 3);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) return fail("open pair A");
    int slave = place(open(ptsname(master), O_RDWR | O_NOCTTY), 4);
    if (slave < 0) return fail("open the slave of pair A");
    if (place(open(ptsname(master), O_RDWR | O_NOCTTY | O_NONBLOCK), 6) != 6) return fail("open it again");
    /* Its stderr too: a standard stream that is not the outside world. */
    if (dup2(slave, 2) != 2) return fail("dup2 the slave to stderr");
    struct termios modes;
    if (tcgetattr(slave, &modes) != 0) return fail("tcgetattr");
    cfmakeraw(&modes);
    modes.c_cc[VMIN] = 1;
    if (tcsetattr(slave, TCSANOW, &modes) != 0) return fail("tcsetattr");
    struct winsize size = {.ws_row = 10, .ws_col = 20};
    if (ioctl(master, TIOCSWINSZ, &size) != 0) return fail("TIOCSWINSZ");
    int on = 1;
    if (ioctl(master, TIOCPKT, &on) != 0) return fail("TIOCPKT");
    if (talk(master, slave) != 0) return 1;

    int locked = place(posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK), 5);
    if (locked < 0) return fail("open pair B");
    struct winsize big = {.ws_row = 50, .ws_col = 132};
    if (ioctl(locked, TIOCSWINSZ, &big) != 0) return fail("TIOCSWINSZ B");

    wait_for_go();

    if (tcgetattr(slave, &modes) != 0) return fail("tcgetattr after");
    if (modes.c_lflag & (ECHO | ICANON | ISIG)) return fail("pair A is not raw any more");
    if (modes.c_cc[VMIN] != 1) return fail("VMIN changed");
    struct winsize now;
    if (ioctl(slave, TIOCGWINSZ, &now) != 0 || now.ws_row != 10 || now.ws_col != 20)
        return fail("pair A's window size changed");
    int packet = 0;
    if (ioctl(master, TIOCGPKT, &packet) != 0 || packet != 1) return fail("packet mode lost");
    int lock = -1;
    if (ioctl(master, TIOCGPTLCK, &lock) != 0 || lock != 0) return fail("pair A is locked");
    if (same_slave(master, slave) != 0 || same_slave(master, 6) != 0 || same_slave(master, 2) != 0) return 1;
    if (!(fcntl(6, F_GETFL) & O_NONBLOCK) || (fcntl(4, F_GETFL) & O_NONBLOCK)) return fail("slave flags");
    if (talk(master, slave) != 0) return 1;

    if (ioctl(locked, TIOCGPTLCK, &lock) != 0 || lock != 1) return fail("pair B is not locked");
    if (ioctl(locked, TIOCGWINSZ, &now) != 0 || now.ws_row != 50 || now.ws_col != 132)
        return fail("pair B's window size changed");
    if (tcgetattr(locked, &modes) != 0 || !(modes.c_lflag & ECHO) || !(modes.c_lflag & ICANON))
        return fail("pair B is not canonical with echo");
    if (!(fcntl(locked, F_GETFL) & O_NONBLOCK)) return fail("pair B's master lost O_NONBLOCK");
    printf("OK pid=%d pseudo-terminals\n", getpid());
    return 0;
}
