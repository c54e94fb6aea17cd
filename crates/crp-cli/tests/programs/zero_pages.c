/* Zero pages, checked by the process itself after a restore.
 *
 *   zero_pages FILE
 *       FILE holds 4 pages of 'f'. A private anonymous mapping of 64 pages:
 *       page i with i % 4 == 0 is full of data, == 1 was written with data
 *       then zeroed again, == 2 was only read (the kernel's zero page),
 *       == 3 is zero but for its last byte. A private mapping of FILE:
 *       page 0 untouched, page 1 overwritten with zeros (its copy must come
 *       back as zeros, not as the file's 'f's), page 2 overwritten with 'g',
 *       page 3 only read.
 *
 * Protocol: prints "READY <pid>", then "ANON <address> FILE <address>",
 * waits for a line on stdin, then prints "OK pid=<pid> zero_pages" and
 * exits 0, or "FAIL <reason>" and exits 1.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>

#include "subject_protocol.h"

#define PAGE 4096
#define ANON_PAGES 64
#define FILE_PAGES 4

static int anon_page_ok(const unsigned char *page, int index) {
    for (int byte = 0; byte < PAGE; byte++) {
        unsigned char expected = 0;
        if (index % 4 == 0) expected = (unsigned char)(0xa0 + index);
        if (index % 4 == 3 && byte == PAGE - 1) expected = (unsigned char)(index + 1);
        if (page[byte] != expected) return 0;
    }
    return 1;
}

static int filled_with(const unsigned char *page, unsigned char expected) {
    for (int byte = 0; byte < PAGE; byte++)
        if (page[byte] != expected) return 0;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) return fail("usage: zero_pages FILE");
    unsigned char *anon =
        mmap(NULL, ANON_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (anon == MAP_FAILED) return fail("mmap anonymous");
    volatile unsigned char sink = 0;
    for (int index = 0; index < ANON_PAGES; index++) {
        unsigned char *page = anon + index * PAGE;
        switch (index % 4) {
        case 0: memset(page, 0xa0 + index, PAGE); break;
        case 1: memset(page, 0x55, PAGE); memset(page, 0, PAGE); break;
        case 2: sink += page[100]; break;
        case 3: page[PAGE - 1] = (unsigned char)(index + 1); break;
        }
    }
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail("open FILE");
    unsigned char *file = mmap(NULL, FILE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    if (file == MAP_FAILED) return fail("mmap FILE");
    memset(file + PAGE, 0, PAGE);
    memset(file + 2 * PAGE, 'g', PAGE);
    sink += file[3 * PAGE + 7];

    printf("READY %d\nANON %p FILE %p\n", getpid(), (void *)anon, (void *)file);
    fflush(stdout);
    char line[16];
    if (read(0, line, sizeof line) <= 0) return fail("read from stdin");

    for (int index = 0; index < ANON_PAGES; index++)
        if (!anon_page_ok(anon + index * PAGE, index)) {
            printf("FAIL anonymous page %d (index %% 4 == %d) changed\n", index, index % 4);
            return 1;
        }
    if (!filled_with(file, 'f')) return fail("file page 0 is not the file's");
    if (!filled_with(file + PAGE, 0)) return fail("file page 1 is not the zeros written over it");
    if (!filled_with(file + 2 * PAGE, 'g')) return fail("file page 2 is not the 'g's written over it");
    if (!filled_with(file + 3 * PAGE, 'f')) return fail("file page 3 is not the file's");
    printf("OK pid=%d zero_pages\n", getpid());
    return 0;
}
