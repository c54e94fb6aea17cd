/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C shim of crp.ko: what the Rust side needs from static inline
 * functions, macros and locks that have no Rust abstraction. Scalars and
 * arrays of u64 only, so no C struct mirrors the Rust ABI records; the
 * word layouts are named by the CRP_*_WORDS constants below and mirrored in
 * helpers.rs.
 */
#ifndef CRP_HELPERS_H
#define CRP_HELPERS_H

#include <linux/types.h>

struct task_struct;
struct mm_struct;
struct file;
struct iov_iter;

/* Words of crp_task_misc(): personality, robust list head, its length,
 * clear_child_tid, rseq address, rseq length, rseq signature, then time
 * left and interval in ns of ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF,
 * thread count, keep-caps, dumpable. */
#define CRP_MISC_WORDS 16
/* Words of a VMA from crp_next_vma(): start, end, file offset, CRP_VMA_*
 * flags, kind. */
#define CRP_VMA_WORDS 5
/* Words of the mm fields, in struct prctl_mm_map order (without auxv). */
#define CRP_MM_WORDS 11

int crp_caller_may_checkpoint(void);

struct task_struct *crp_get_task(int nr);
void crp_put_task(struct task_struct *task);
int crp_check_dump_target(struct task_struct *task);
struct mm_struct *crp_get_task_mm(struct task_struct *task);
void crp_put_mm(struct mm_struct *mm);
struct mm_struct *crp_current_mm(void);
int crp_current_thread_count(void);

int crp_task_regset(struct task_struct *task, unsigned int note_type, void *buf, unsigned int size);
void crp_task_signals(struct task_struct *task, u64 *actions, u64 *blocked, u64 *altstack);
void crp_task_misc(struct task_struct *task, u64 *misc);
void crp_task_rlimits(struct task_struct *task, u64 *limits);
int crp_mm_fields(struct mm_struct *mm, u64 *fields, u64 *auxv, unsigned int auxv_capacity);
long crp_next_vma(struct mm_struct *mm, u64 from, u64 *vma, char *name, unsigned int name_capacity);
long crp_read_task_memory(struct task_struct *task, u64 address, struct iov_iter *iter);
long crp_force_write(u64 address, const void *buf, unsigned long len);

int crp_file_is_regular(struct file *file);
long long crp_file_size(struct file *file);
long crp_read_file(struct file *file, void *buf, unsigned long len, long long pos);
long crp_fill_user_parallel(struct file *file, const u64 *pieces, unsigned int count);

int crp_unmap(u64 start, u64 length);
long crp_map(u64 start, u64 length, u64 crp_flags, struct file *file, u64 offset);
int crp_set_vma_flags(u64 start, u64 crp_flags);
int crp_set_mm_fields(const u64 *fields, const u64 *auxv, unsigned int auxv_words);
int crp_set_signals(const u64 *actions, u64 blocked, const u64 *altstack);
void crp_set_misc(u64 personality, u64 robust_list_head, u64 clear_child_tid);
void crp_set_fs_base(u64 fsbase);
int crp_set_user_regs(const u64 *regs);

#endif
