/* A program on a terminal (its fds 0-2 and controlling terminal), driven by
 * keys written to the terminal's master.
 *
 * Set up: /dev/tty opened on fd 5; the terminal in non-canonical mode
 * without echo (ISIG kept, VMIN 1), as an editor or a REPL sets it;
 * handlers counting SIGWINCH, SIGINT and SIGCONT. Prints
 * "READY <pid> <rows>x<cols>" and reads keys:
 *   'c': checks its terminal after the restore: the modes it set, fd 5 still
 *        its terminal, its group the terminal's foreground group, its session
 *        the terminal's, the window size (printed); prints
 *        "OK pid=<pid> size=<rows>x<cols> winch=<n> sid=<sid> pgid=<pgid>"
 *        (or "FAIL <reason>").
 *   'i': prints "INT <n>", the SIGINTs so far (a ^C reaches it as SIGINT).
 *   'k': prints "CONT <n>", the SIGCONTs so far (each sets its modes again).
 *   'q': exits 0.
 * Without a terminal (started with "--none-expected" after a restore
 * without one), 'c' instead checks it has no controlling terminal and
 * leads a session of its own. Output goes to fd 1. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>

#include "subject_protocol.h"

static volatile sig_atomic_t winches, interrupts, continues;
static struct termios own_modes;

static void on_winch(int signal) { (void)signal; winches++; }
static void on_interrupt(int signal) { (void)signal; interrupts++; }
/* As an editor does: a shell gives a stopped job's terminal back in the
 * shell's modes, so the program sets its own again when continued. */
static void on_continue(int signal) {
    (void)signal;
    continues++;
    tcsetattr(0, TCSANOW, &own_modes);
}

static void handle(int signal, void (*handler)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = SA_RESTART;
    sigaction(signal, &action, NULL);
}

static int check_terminal(void) {
    struct termios modes;
    if (tcgetattr(0, &modes) != 0) return fail("tcgetattr");
    if (modes.c_lflag & (ECHO | ICANON)) return fail("echo or canonical mode came back");
    if (!(modes.c_lflag & ISIG)) return fail("ISIG lost");
    if (modes.c_cc[VMIN] != 1 || modes.c_cc[VTIME] != 0) return fail("VMIN/VTIME changed");
    struct termios through_tty;
    if (tcgetattr(5, &through_tty) != 0) return fail("fd 5 is not a terminal any more");
    if (through_tty.c_lflag != modes.c_lflag) return fail("fd 5 is another terminal than fd 0");
    char link[64] = {0};
    if (readlink("/proc/self/fd/5", link, sizeof link - 1) < 0 || strcmp(link, "/dev/tty") != 0)
        return fail("fd 5 is not /dev/tty");
    if (write(5, "", 0) != 0) return fail("write to /dev/tty");
    if (tcgetpgrp(0) != getpgrp()) return fail("not the terminal's foreground group");
    if (tcgetsid(0) != getsid(0)) return fail("the terminal is not its session's");
    struct winsize size;
    if (ioctl(0, TIOCGWINSZ, &size) != 0) return fail("TIOCGWINSZ");
    printf("OK pid=%d size=%dx%d winch=%d sid=%d pgid=%d\n", getpid(), size.ws_row, size.ws_col, (int)winches,
           getsid(0), getpgrp());
    return 0;
}

static int check_no_terminal(void) {
    if (open("/dev/tty", O_RDWR) >= 0 || errno != ENXIO) return fail("it has a controlling terminal");
    if (getsid(0) != getpid()) return fail("it does not lead a session of its own");
    char link[64] = {0};
    if (readlink("/proc/self/fd/5", link, sizeof link - 1) < 0 || strcmp(link, "/dev/null") != 0)
        return fail("fd 5 (/dev/tty) did not become /dev/null");
    printf("OK pid=%d no terminal, sid=%d\n", getpid(), getsid(0));
    return 0;
}

int main(int argc, char **argv) {
    int none_expected = argc > 1 && strcmp(argv[1], "--none-expected") == 0;
    if (place(open("/dev/tty", O_RDWR | O_NOCTTY), 5) != 5) return fail("open /dev/tty");
    struct termios modes;
    if (tcgetattr(0, &modes) != 0) return fail("tcgetattr");
    modes.c_lflag &= ~(ECHO | ICANON);
    modes.c_cc[VMIN] = 1;
    modes.c_cc[VTIME] = 0;
    if (tcsetattr(0, TCSANOW, &modes) != 0) return fail("tcsetattr");
    own_modes = modes;
    handle(SIGWINCH, on_winch);
    handle(SIGINT, on_interrupt);
    handle(SIGCONT, on_continue);
    setvbuf(stdout, NULL, _IONBF, 0);
    struct winsize size;
    if (ioctl(0, TIOCGWINSZ, &size) != 0) return fail("TIOCGWINSZ");
    printf("READY %d %dx%d\n", getpid(), size.ws_row, size.ws_col);
    for (;;) {
        char key;
        ssize_t got = read(0, &key, 1);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return fail("read a key");
        switch (key) {
        case 'c':
            if ((none_expected ? check_no_terminal() : check_terminal()) != 0) return 1;
            break;
        case 'i': printf("INT %d\n", (int)interrupts); break;
        case 'k': printf("CONT %d\n", (int)continues); break;
        case 'q': return 0;
        default: break;
        }
    }
}
