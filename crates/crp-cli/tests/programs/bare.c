/* A process with no C library: no signal restorer (`mov $15, %rax;
 * syscall`) anywhere in its code, so crp must park it on a page of its
 * own. Built with -nostdlib -static. Used by crp's integration tests.
 *
 *   bare stack     blocks in read(0) with patterns in rbx, rbp, r12-r15 and
 *                  16 KiB of pattern below its stack pointer (where a signal
 *                  frame would go: crp must put back what it borrowed)
 *   bare nostack   the same, with its stack pointer 64 bytes above the
 *                  bottom of its stack mapping: no room for a frame there
 *
 * Prints "READY <pid>", then after the read "OK" or "FAIL <what>". */

typedef unsigned long u64;

static long sys(long number, long a, long b, long c, long d, long e, long f) {
    long result;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
}

static void say(const char *text) {
    long length = 0;
    while (text[length]) length++;
    sys(1, 1, (long)text, length, 0, 0, 0);
}

static void say_number(long value) {
    char digits[24];
    int at = 23;
    digits[at] = 0;
    do {
        digits[--at] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    say(digits + at);
}

#define BELOW 16384
#define PATTERN(i) ((unsigned char)((i) * 7 + 3))

__attribute__((used)) char buffer[32];

/* Fills `fill` bytes from 256 bytes under the stack pointer down (outside
 * the red zone), blocks in read(0) with patterns in the callee-saved
 * registers, checks them, and reports where the fill began. Returns 0 when
 * the read worked and the registers are intact. */
static long read_holding_patterns(long fill, unsigned char **fill_top) {
    long result, intact;
    unsigned char *top;
    __asm__ volatile(
        "mov %%rsp, %2\n\t"
        "sub $256, %2\n\t"
        "mov %2, %%rdi\n\t"
        "mov %4, %%rcx\n\t"
        "test %%rcx, %%rcx\n\t"
        "jz 3f\n"
        "1:\n\t"
        "mov %%ecx, %%eax\n\t"
        "imul $7, %%eax\n\t"
        "add $3, %%eax\n\t"
        "mov %%al, -1(%%rdi)\n\t"
        "dec %%rdi\n\t"
        "dec %%rcx\n\t"
        "jnz 1b\n"
        "3:\n\t"
        "push %%rbx\n\t"
        "push %%rbp\n\t"
        "push %%r12\n\t"
        "push %%r13\n\t"
        "push %%r14\n\t"
        "push %%r15\n\t"
        "movabs $0x1111222233334444, %%rbx\n\t"
        "movabs $0x5555666677778888, %%rbp\n\t"
        "movabs $0x99990000aaaabbbb, %%r12\n\t"
        "movabs $0xccccddddeeeeffff, %%r13\n\t"
        "movabs $0x0123456789abcdef, %%r14\n\t"
        "movabs $0xfedcba9876543210, %%r15\n\t"
        "xor %%eax, %%eax\n\t"
        "xor %%edi, %%edi\n\t"
        "lea buffer(%%rip), %%rsi\n\t"
        "mov $32, %%edx\n\t"
        "syscall\n\t"
        "mov %%rax, %0\n\t"
        "xor %%ecx, %%ecx\n\t"
        "movabs $0x1111222233334444, %%rax\n\t"
        "cmp %%rax, %%rbx\n\t"
        "jne 2f\n\t"
        "movabs $0x5555666677778888, %%rax\n\t"
        "cmp %%rax, %%rbp\n\t"
        "jne 2f\n\t"
        "movabs $0x99990000aaaabbbb, %%rax\n\t"
        "cmp %%rax, %%r12\n\t"
        "jne 2f\n\t"
        "movabs $0xccccddddeeeeffff, %%rax\n\t"
        "cmp %%rax, %%r13\n\t"
        "jne 2f\n\t"
        "movabs $0x0123456789abcdef, %%rax\n\t"
        "cmp %%rax, %%r14\n\t"
        "jne 2f\n\t"
        "movabs $0xfedcba9876543210, %%rax\n\t"
        "cmp %%rax, %%r15\n\t"
        "jne 2f\n\t"
        "mov $1, %%ecx\n"
        "2:\n\t"
        "pop %%r15\n\t"
        "pop %%r14\n\t"
        "pop %%r13\n\t"
        "pop %%r12\n\t"
        "pop %%rbp\n\t"
        "pop %%rbx\n\t"
        "mov %%rcx, %1\n\t"
        : "=&r"(result), "=&r"(intact), "=&r"(top)
        : "0"(0), "r"(fill)
        : "rax", "rcx", "rdx", "rsi", "rdi", "r11", "memory");
    *fill_top = top;
    if (result <= 0) return 1;
    if (!intact) return 2;
    return 0;
}

static long check_below(unsigned char *top, long fill) {
    for (long i = 0; i < fill; i++)
        if (top[-1 - i] != PATTERN(fill - i)) return 1;
    return 0;
}

static long filled;

static void run(void) {
    say("READY ");
    say_number(sys(39, 0, 0, 0, 0, 0, 0));
    say("\n");
    unsigned char *top;
    long outcome = read_holding_patterns(filled, &top);
    if (outcome == 1) say("FAIL read\n");
    else if (outcome == 2) say("FAIL callee-saved registers changed\n");
    else if (check_below(top, filled)) say("FAIL memory below the stack pointer changed\n");
    else say("OK\n");
    sys(231, outcome ? 1 : 0, 0, 0, 0, 0, 0);
}

__attribute__((noreturn)) void start_c(long small_stack) {
    if (small_stack) {
        /* A fresh stack with its pointer 512 bytes above the bottom of
         * the mapping: no room for a signal frame below. */
        char *stack = (char *)sys(9, 0, 4096, 3, 0x22, -1, 0);
        char *top = stack + 512;
        __asm__ volatile("mov %0, %%rsp\n\tcall *%1" : : "r"(top), "r"(run) : "memory");
    } else {
        filled = BELOW;
        run();
    }
    sys(231, 3, 0, 0, 0, 0, 0);
    __builtin_unreachable();
}

/* argv[1] decides: "nostack" switches to the small stack. */
__asm__(".globl _start\n"
        "_start:\n\t"
        "xor %ebp, %ebp\n\t"
        "mov (%rsp), %rdi\n\t"
        "xor %eax, %eax\n\t"
        "cmp $2, %rdi\n\t"
        "jl 1f\n\t"
        "mov 16(%rsp), %rsi\n\t"
        "cmpb $'n', (%rsi)\n\t"
        "sete %al\n"
        "1:\n\t"
        "mov %rax, %rdi\n\t"
        "and $-16, %rsp\n\t"
        "call start_c\n\t"
        "hlt\n");
