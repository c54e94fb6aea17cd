/* A vfork child held before its exec: it prints "CHILD <pid>" and waits
 * for a line on stdin, then exits; its parent (blocked in vfork until
 * then) prints "DONE" and exits 0. Only raw system calls run in the child,
 * which borrows its parent's memory. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    close_range(3, ~0U, 0);
    pid_t child = vfork();
    if (child == 0) {
        char line[32];
        long pid = syscall(SYS_getpid);
        int length = 0;
        char digits[16];
        do digits[length++] = (char)('0' + pid % 10);
        while ((pid /= 10) != 0);
        char *at = line;
        for (const char *word = "CHILD "; *word; word++) *at++ = *word;
        while (length > 0) *at++ = digits[--length];
        *at++ = '\n';
        syscall(SYS_write, 1, line, at - line);
        syscall(SYS_read, 0, line, sizeof line);
        syscall(SYS_exit, 0);
    }
    printf("DONE\n");
    return 0;
}
