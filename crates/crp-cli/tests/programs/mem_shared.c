/* Shared memory held by a process, checked by the process itself after a
 * restore. DIR is a directory of the test's own.
 *
 *   mem_shared anon DIR
 *       4 pages of MAP_SHARED|MAP_ANONYMOUS memory, split in three VMAs by
 *       an mprotect of page 1, page 3 never touched; page 0 mapped a second
 *       time through /proc/self/map_files; 2 pages of /dev/zero mapped
 *       MAP_SHARED. After the restore: the contents, a write through one
 *       mapping seen through the other, the untouched page still zero, one
 *       object (same inode) behind every mapping of it.
 *   mem_shared memfd DIR
 *       a memfd "crp-mapped" mapped shared (3 pages) and privately (its
 *       page 2 written) and closed; a memfd
 *       "crp-held" on fd 3 mapped shared and privately (a private page
 *       written). After the restore: contents; fd 3 and the shared mapping
 *       are one object (a pwrite through fd 3 is seen in the mapping); the
 *       private page kept its own bytes and the other private page shows the
 *       file's.
 *   mem_shared deleted DIR
 *       DIR/data (2 pages) mapped shared and privately, held on fd 3, then
 *       deleted; the same after the restore.
 *   mem_shared unheld DIR
 *       DIR/shm (2 pages) mapped shared, DIR/lib (2 pages) mapped
 *       privately with page 0 written, both closed and deleted (no
 *       descriptor holds them: a POSIX shm object after shm_unlink, a
 *       library replaced on disk). After the restore: the contents, and
 *       DIR/shm's two mappings are still one object.
 *   mem_shared sysv DIR
 *       a SysV segment of key ftok(DIR, 's') (3 pages, mode 0640) attached
 *       read-write and split by an mprotect of its page 1, with data on
 *       pages 0 and 2; an IPC_PRIVATE segment (1 page) removed (IPC_RMID)
 *       while attached. The line the test
 *       sends says what to expect of the keyed segment: "kept" (it still
 *       existed: reattached, byte 100 of page 0 as the test wrote it) or
 *       "made" (the test removed it: made again with the image's contents).
 *   mem_shared mlock DIR
 *       2 pages mlock()ed with data, 2 pages mlock2(MLOCK_ONFAULT)ed, then
 *       mlockall(MCL_FUTURE). After the restore: each still locked (smaps
 *       VmFlags lo, lf), its data, and a new mapping locked too.
 *   mem_shared flags DIR
 *       4 pages with guard regions (MADV_GUARD_INSTALL) on pages 1-2 and
 *       data on pages 0 and 3; 2 pages MADV_MERGEABLE with data; 2 pages
 *       MAP_DROPPABLE with data. After the restore: the guard pages are
 *       guards again (pagemap bit 58), the others kept their contents and
 *       flags (smaps mg, dp).
 *   mem_shared sealed|uffd|sysv-partial DIR
 *       one page sealed with mseal or registered with a userfaultfd
 *       (missing-page mode), or a SysV segment with one of its two pages
 *       unmapped: crp refuses the dump. After the "go" line the
 *       process checks it still runs as before (its page readable).
 *   mem_shared outside DIR
 *       one page of MAP_SHARED|MAP_ANONYMOUS memory that a helper (a
 *       grandchild, its pid in DIR/helper.pid, killed by the test) maps too.
 *       After the restore: the contents as of the dump.
 *
 * Protocol: prints "READY <pid>", waits for a line on stdin, then prints
 * "OK pid=<pid> <mode>" and exits 0, or "FAIL <reason>" and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "subject_protocol.h"

#define PAGE 4096

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

/* The inode behind the mapping at `address`, via /proc/self/map_files. */
static long inode_at(const void *address, size_t length) {
    char path[128];
    snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)address,
             (unsigned long)address + length);
    struct stat st;
    return stat(path, &st) ? -1 : (long)st.st_ino;
}

static void fill(char *page, char seed) {
    for (int i = 0; i < PAGE; i++) page[i] = (char)(seed + i % 7);
}

static int filled(const char *page, char seed) {
    for (int i = 0; i < PAGE; i++)
        if (page[i] != (char)(seed + i % 7)) return 0;
    return 1;
}

static int run_anon(void) {
    char *shared = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) return fail("mmap shared");
    fill(shared, 'a');
    fill(shared + PAGE, 'b');
    fill(shared + 2 * PAGE, 'c');
    if (mprotect(shared + PAGE, PAGE, PROT_READ)) return fail("mprotect");
    char path[128];
    snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)shared, (unsigned long)shared + PAGE);
    int object = open(path, O_RDWR);
    if (object < 0) return fail("open map_files");
    char *alias = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, object, 0);
    close(object);
    if (alias == MAP_FAILED) return fail("mmap alias");
    int zero = open("/dev/zero", O_RDWR);
    char *zeroes = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, zero, 0);
    close(zero);
    if (zeroes == MAP_FAILED) return fail("mmap /dev/zero");
    fill(zeroes + PAGE, 'z');
    long inode = inode_at(shared, PAGE);

    wait_for_go();
    if (!filled(shared, 'a') || !filled(alias, 'a')) return fail("page 0 lost its contents");
    if (!filled(shared + PAGE, 'b') || !filled(shared + 2 * PAGE, 'c')) return fail("pages 1-2 lost their contents");
    for (int i = 0; i < PAGE; i++)
        if (shared[3 * PAGE + i] || zeroes[i]) return fail("an untouched page is not zero");
    if (!filled(zeroes + PAGE, 'z')) return fail("/dev/zero page lost its contents");
    alias[10] = 'X';
    if (shared[10] != 'X') return fail("a write through the alias is not seen through the first mapping");
    shared[20] = 'Y';
    if (alias[20] != 'Y') return fail("a write through the first mapping is not seen through the alias");
    long now = inode_at(shared, PAGE);
    if (now < 0 || now != inode_at(alias, PAGE) || now != inode_at(shared + 2 * PAGE, 2 * PAGE))
        return fail("the mappings are not one object");
    if (now == inode_at(zeroes, 2 * PAGE)) return fail("/dev/zero's object is the other object");
    (void)inode;
    return ok("anon");
}

static int run_memfd(void) {
    int closed = memfd_create("crp-mapped", 0);
    if (closed < 0 || ftruncate(closed, 3 * PAGE)) return fail("memfd crp-mapped");
    char *mapped = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, closed, 0);
    if (mapped == MAP_FAILED) return fail("mmap crp-mapped");
    fill(mapped + 2 * PAGE, 'm');
    fill(mapped + PAGE, 'n');
    /* A private mapping of it too: its clean page 1 is the file's, page 2 its own. */
    char *copy = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, closed, 0);
    close(closed);
    if (copy == MAP_FAILED) return fail("mmap crp-mapped privately");
    fill(copy + 2 * PAGE, 'c');
    int held = place(memfd_create("crp-held", MFD_CLOEXEC), 3);
    if (held != 3 || ftruncate(3, 2 * PAGE)) return fail("memfd crp-held");
    char *view = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, 3, 0);
    char *own = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, 3, 0);
    if (view == MAP_FAILED || own == MAP_FAILED) return fail("mmap crp-held");
    fill(view, 'h');
    fill(view + PAGE, 'i');
    if (own[0] != 'h') return fail("private mapping does not show the file");
    fill(own, 'p');

    wait_for_go();
    if (!filled(mapped + 2 * PAGE, 'm') || !filled(mapped + PAGE, 'n') || mapped[0]) return fail("crp-mapped lost its contents");
    if (!filled(copy + PAGE, 'n') || !filled(copy + 2 * PAGE, 'c')) return fail("crp-mapped's private mapping");
    mapped[PAGE + 1] = 'S';
    if (copy[PAGE + 1] != 'S') return fail("crp-mapped's private clean page is not the file's");
    if (mapped[2 * PAGE] != 'm') return fail("the private copy reached the file");
    if (!filled(view, 'h') || !filled(view + PAGE, 'i')) return fail("crp-held's shared mapping lost its contents");
    if (!filled(own, 'p')) return fail("the private page lost its own bytes");
    if (!filled(own + PAGE, 'i')) return fail("the untouched private page does not show the file");
    if (pwrite(3, "W", 1, 5) != 1) return fail("pwrite fd 3");
    if (view[5] != 'W') return fail("fd 3 and its shared mapping are not one object");
    char byte;
    view[6] = 'V';
    if (pread(3, &byte, 1, 6) != 1 || byte != 'V') return fail("a write through the mapping is not in fd 3");
    if (own[5] != (char)('p' + 5)) return fail("the private page changed with the file");
    struct stat st;
    if (fstat(3, &st) || st.st_ino != (ino_t)inode_at(view, 2 * PAGE)) return fail("fd 3 is not the mapped object");
    if (fcntl(3, F_GETFD) != FD_CLOEXEC) return fail("fd 3 lost close-on-exec");
    return ok("memfd");
}

static int run_deleted(void) {
    const char *data = in_dir("data");
    int fd = place(open(data, O_RDWR | O_CREAT, 0600), 3);
    if (fd != 3 || ftruncate(3, 2 * PAGE)) return fail("create DIR/data");
    char *view = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, 3, 0);
    char *own = mmap(NULL, 2 * PAGE, PROT_READ, MAP_PRIVATE, 3, 0);
    if (view == MAP_FAILED || own == MAP_FAILED) return fail("mmap DIR/data");
    fill(view, 'd');
    fill(view + PAGE, 'e');
    if (unlink(data)) return fail("unlink");

    wait_for_go();
    if (!filled(view, 'd') || !filled(view + PAGE, 'e')) return fail("the shared mapping lost its contents");
    if (!filled(own + PAGE, 'e')) return fail("the private mapping does not show the file");
    view[PAGE + 1] = 'Q';
    char byte;
    if (pread(3, &byte, 1, PAGE + 1) != 1 || byte != 'Q') return fail("fd 3 and the mapping are not one file");
    if (access(data, F_OK) == 0) return fail("DIR/data came back with a name");
    return ok("deleted");
}

static int run_unheld(void) {
    int shm = open(in_dir("shm"), O_RDWR | O_CREAT, 0640);
    int lib = open(in_dir("lib"), O_RDWR | O_CREAT, 0600);
    if (shm < 0 || lib < 0 || ftruncate(shm, 2 * PAGE) || ftruncate(lib, 2 * PAGE)) return fail("create files");
    char *view = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, shm, 0);
    char *again = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, shm, PAGE);
    char *code = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, lib, 0);
    if (view == MAP_FAILED || again == MAP_FAILED || code == MAP_FAILED) return fail("mmap");
    char page[PAGE];
    fill(page, 'l');
    if (pwrite(lib, page, PAGE, PAGE) != PAGE) return fail("pwrite lib");
    close(shm);
    close(lib);
    fill(view, 's');
    fill(view + PAGE, 't');
    fill(code, 'c');
    if (unlink(in_dir("shm")) || unlink(in_dir("lib"))) return fail("unlink");

    wait_for_go();
    if (!filled(view, 's') || !filled(view + PAGE, 't') || !filled(again, 't')) return fail("DIR/shm lost its contents");
    view[PAGE + 3] = 'Z';
    if (again[3] != 'Z') return fail("DIR/shm's mappings are not one object");
    if (!filled(code, 'c')) return fail("the private page of DIR/lib lost its bytes");
    if (!filled(code + PAGE, 'l')) return fail("DIR/lib's file page lost its contents");
    return ok("unheld");
}

static int run_sysv(void) {
    key_t key = ftok(dir, 's');
    int keyed = shmget(key, 3 * PAGE, IPC_CREAT | IPC_EXCL | 0640);
    int lone = shmget(IPC_PRIVATE, PAGE, IPC_CREAT | 0600);
    if (keyed < 0 || lone < 0) return fail("shmget");
    char *segment = shmat(keyed, NULL, 0);
    char *private = shmat(lone, NULL, 0);
    if (segment == (void *)-1 || private == (void *)-1) return fail("shmat");
    if (shmctl(lone, IPC_RMID, NULL)) return fail("IPC_RMID");
    fill(segment, 'k');
    fill(segment + 2 * PAGE, 'K');
    fill(private, 'r');
    if (mprotect(segment + PAGE, PAGE, PROT_READ)) return fail("mprotect");
    struct shmid_ds before;
    if (shmctl(keyed, IPC_STAT, &before)) return fail("IPC_STAT");
    printf("READY %d\n", getpid());
    fflush(stdout);
    char line[32] = {0};
    if (read(0, line, sizeof line - 1) <= 0) return fail("read from stdin");
    int kept = !strncmp(line, "kept", 4);

    if (segment[100] != (kept ? 'T' : (char)('k' + 100 % 7))) return fail("byte 100 of the keyed segment");
    segment[100] = (char)('k' + 100 % 7);
    if (!filled(segment, 'k') || !filled(segment + 2 * PAGE, 'K')) return fail("the keyed segment lost its contents");
    for (int i = 0; i < PAGE; i++)
        if (segment[PAGE + i]) return fail("the keyed segment's page 1 is not zero");
    if (!filled(private, 'r')) return fail("the removed segment lost its contents");
    struct shmid_ds status;
    int now = shmget(key, 0, 0);
    if (now < 0 || shmctl(now, IPC_STAT, &status)) return fail("the keyed segment is not there");
    if (status.shm_segsz != 3 * PAGE || (status.shm_perm.mode & 0777) != 0640) return fail("the keyed segment's size or mode");
    /* One per VMA of the attachment, as before. */
    if (status.shm_nattch != before.shm_nattch) return fail("the keyed segment's attach count changed");
    if (kept && now != keyed) return fail("an existing segment was not attached again");
    /* The attachment is the segment: a write shows through another attachment. */
    char *other = shmat(now, NULL, SHM_RDONLY);
    if (other == (void *)-1) return fail("shmat again");
    segment[5] = 'Q';
    if (other[5] != 'Q') return fail("the attachment is not of the keyed segment");
    segment[5] = (char)('k' + 5);
    return ok(kept ? "sysv kept" : "sysv made");
}

/* Whether the VMA at `address` has VmFlags mnemonic `flag`. */
static int has_vm_flag(const void *address, const char *flag) {
    FILE *smaps = fopen("/proc/self/smaps", "r");
    if (!smaps) return -1;
    char line[512];
    int inside = 0, found = 0;
    while (fgets(line, sizeof line, smaps)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = (unsigned long)address >= start && (unsigned long)address < end;
        } else if (inside && !strncmp(line, "VmFlags:", 8)) {
            char needle[8];
            snprintf(needle, sizeof needle, " %s", flag);
            for (char *at = line + 8; (at = strstr(at, needle)); at++)
                if (at[3] == ' ' || at[3] == '\n') found = 1;
        }
    }
    fclose(smaps);
    return found;
}

static int run_mlock(void) {
    char *locked = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *on_fault = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (locked == MAP_FAILED || on_fault == MAP_FAILED) return fail("mmap");
    fill(locked + PAGE, 'L');
    if (mlock(locked, 2 * PAGE)) return fail("mlock");
    if (mlock2(on_fault, 2 * PAGE, MLOCK_ONFAULT)) return fail("mlock2");
    if (mlockall(MCL_FUTURE)) return fail("mlockall");
    if (has_vm_flag(locked, "lo") != 1 || has_vm_flag(on_fault, "lf") != 1) return fail("not locked before the dump");

    wait_for_go();
    if (!filled(locked + PAGE, 'L')) return fail("the locked pages lost their contents");
    if (has_vm_flag(locked, "lo") != 1 || has_vm_flag(locked, "lf") != 0) return fail("mlock()ed pages are not locked");
    if (has_vm_flag(on_fault, "lo") != 1 || has_vm_flag(on_fault, "lf") != 1) return fail("MLOCK_ONFAULT pages lost it");
    char *later = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (later == MAP_FAILED || has_vm_flag(later, "lo") != 1) return fail("mlockall(MCL_FUTURE) is gone");
    if (has_vm_flag(later, "lf") != 0) return fail("a new mapping is lock-on-fault");
    return ok("mlock");
}

/* Whether the page at `address` is a guard page (pagemap bit 58). */
static int is_guard(const void *address) {
    int pagemap = open("/proc/self/pagemap", O_RDONLY);
    unsigned long long entry = 0;
    off_t at = (off_t)((unsigned long)address / PAGE * 8);
    int read = pagemap >= 0 && pread(pagemap, &entry, 8, at) == 8;
    close(pagemap);
    return read ? (int)((entry >> 58) & 1) : -1;
}

static int run_flags(void) {
    char *guarded = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *mergeable = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *droppable = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, 0x08 /* MAP_DROPPABLE */ | MAP_ANONYMOUS, -1, 0);
    if (guarded == MAP_FAILED || mergeable == MAP_FAILED || droppable == MAP_FAILED) return fail("mmap");
    fill(guarded, 'g');
    fill(guarded + 3 * PAGE, 'G');
    if (madvise(guarded + PAGE, 2 * PAGE, 102 /* MADV_GUARD_INSTALL */)) return fail("MADV_GUARD_INSTALL");
    if (madvise(mergeable, 2 * PAGE, MADV_MERGEABLE)) return fail("MADV_MERGEABLE");
    fill(mergeable + PAGE, 'm');
    fill(droppable, 'd');
    if (is_guard(guarded + PAGE) != 1 || is_guard(guarded) != 0) return fail("guard pages before the dump");

    wait_for_go();
    if (!filled(guarded, 'g') || !filled(guarded + 3 * PAGE, 'G')) return fail("the pages around the guards");
    if (is_guard(guarded + PAGE) != 1 || is_guard(guarded + 2 * PAGE) != 1) return fail("the guard regions are gone");
    if (is_guard(guarded) != 0 || is_guard(guarded + 3 * PAGE) != 0) return fail("a guard region grew");
    if (!filled(mergeable + PAGE, 'm') || has_vm_flag(mergeable, "mg") != 1) return fail("MADV_MERGEABLE is gone");
    if (has_vm_flag(droppable, "dp") != 1) return fail("MAP_DROPPABLE is gone");
    /* Droppable pages may be dropped under memory pressure, never changed. */
    if (droppable[1] && !filled(droppable, 'd')) return fail("the droppable page changed");
    return ok("flags");
}

static int run_refused(const char *mode) {
    char *page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return fail("mmap");
    fill(page, 'x');
    if (!strcmp(mode, "sealed")) {
        if (syscall(462 /* mseal */, page, PAGE, 0)) return fail("mseal");
    } else if (!strcmp(mode, "sysv-partial")) {
        int id = shmget(IPC_PRIVATE, 2 * PAGE, IPC_CREAT | 0600);
        char *segment = id < 0 ? (void *)-1 : shmat(id, NULL, 0);
        if (segment == (void *)-1 || shmctl(id, IPC_RMID, NULL) || munmap(segment + PAGE, PAGE)) return fail("shm");
    } else {
        int uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
        if (uffd < 0) return fail("userfaultfd");
        struct uffdio_api api = {.api = UFFD_API};
        if (ioctl(uffd, UFFDIO_API, &api)) return fail("UFFDIO_API");
        struct uffdio_register reg = {.range = {.start = (unsigned long)page, .len = PAGE}, .mode = UFFDIO_REGISTER_MODE_MISSING};
        if (ioctl(uffd, UFFDIO_REGISTER, &reg)) return fail("UFFDIO_REGISTER");
    }
    wait_for_go();
    if (!filled(page, 'x')) return fail("the page changed");
    return ok(mode);
}

static int run_outside(void) {
    char *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) return fail("mmap shared");
    fill(shared, 'o');
    int ready[2];
    if (pipe(ready)) return fail("pipe");
    pid_t middle = fork();
    if (middle < 0) return fail("fork");
    if (middle == 0 && fork() != 0) _exit(0);
    if (middle == 0) {
        /* The helper: keeps the mapping until the test kills it. */
        FILE *pid_file = fopen(in_dir("helper.pid"), "w");
        if (!pid_file) _exit(2);
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

    wait_for_go();
    if (!filled(shared, 'o')) return fail("the page shared with the helper lost its contents");
    return ok("outside");
}

int main(int argc, char **argv) {
    if (argc != 3) return fail("usage: mem_shared MODE DIR");
    dir = argv[2];
    const char *mode = argv[1];
    if (!strcmp(mode, "anon")) return run_anon();
    if (!strcmp(mode, "memfd")) return run_memfd();
    if (!strcmp(mode, "deleted")) return run_deleted();
    if (!strcmp(mode, "outside")) return run_outside();
    if (!strcmp(mode, "unheld")) return run_unheld();
    if (!strcmp(mode, "sysv")) return run_sysv();
    if (!strcmp(mode, "mlock")) return run_mlock();
    if (!strcmp(mode, "flags")) return run_flags();
    if (!strcmp(mode, "sealed") || !strcmp(mode, "uffd") || !strcmp(mode, "sysv-partial"))
        return run_refused(mode);
    return fail("unknown mode");
}
