// SPDX-License-Identifier: GPL-2.0
/*
 * C shim of crp.ko. The Rust side (crp_main.rs and its modules) decides and
 * validates; these helpers only reach what Rust cannot: static inline
 * functions and macros (task_pt_regs, VMA iteration, mmap write lock,
 * vm_flags_set, task_is_traced), lock-protected task fields, and the x86
 * regset table. Each takes and returns scalars or u64 arrays whose word
 * layout crp_helpers.h documents.
 */
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/fs.h>
#include <linux/futex.h>
#include <linux/completion.h>
#include <linux/cpumask.h>
#include <linux/hrtimer.h>
#include <linux/kthread.h>
#include <linux/slab.h>
#include <linux/workqueue.h>
#include <linux/uio.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/mmap_lock.h>
#include <linux/pid.h>
#include <linux/regset.h>
#include <linux/resource.h>
#include <linux/sched.h>
#include <linux/sched/exec_state.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/sched/task_stack.h>
#include <linux/securebits.h>
#include <linux/signal.h>
#include <asm/fsgsbase.h>
#include <asm/ptrace.h>
#include <asm/segment.h>
#include "crp_helpers.h"

/* Mirrors of abi.rs's CRP_VMA_* bits and kinds (the ABI file is Rust). */
#define CRP_VMA_READ		(1ULL << 0)
#define CRP_VMA_WRITE		(1ULL << 1)
#define CRP_VMA_EXEC		(1ULL << 2)
#define CRP_VMA_SHARED		(1ULL << 3)
#define CRP_VMA_GROWSDOWN	(1ULL << 4)
#define CRP_VMA_HUGEPAGE	(1ULL << 5)
#define CRP_VMA_NOHUGEPAGE	(1ULL << 6)
#define CRP_VMA_DONTFORK	(1ULL << 7)
#define CRP_VMA_WIPEONFORK	(1ULL << 8)
#define CRP_VMA_DONTDUMP	(1ULL << 9)
#define CRP_VMA_MAYWRITE	(1ULL << 10)
#define CRP_VMA_NORESERVE	(1ULL << 11)
#define CRP_VMA_LOCKED		(1ULL << 12)
#define CRP_VMA_DEVICE		(1ULL << 13)
#define CRP_VMA_ANONYMOUS	0
#define CRP_VMA_FILE		1
#define CRP_VMA_SPECIAL		2

/* The EFLAGS bits user space may set (ptrace's FLAG_MASK without TF). */
#define CRP_USER_EFLAGS (X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF | X86_EFLAGS_ZF | \
			 X86_EFLAGS_SF | X86_EFLAGS_DF | X86_EFLAGS_OF | X86_EFLAGS_RF | \
			 X86_EFLAGS_AC)

int crp_caller_may_checkpoint(void)
{
	return capable(CAP_CHECKPOINT_RESTORE) || capable(CAP_SYS_ADMIN);
}

/* The task with pid `nr` in the caller's pid namespace, with a reference. */
struct task_struct *crp_get_task(int nr)
{
	struct task_struct *task;
	struct pid *pid = find_get_pid(nr);

	if (!pid)
		return NULL;
	task = get_pid_task(pid, PIDTYPE_PID);
	put_pid(pid);
	return task;
}

void crp_put_task(struct task_struct *task)
{
	put_task_struct(task);
}

/*
 * A task can be dumped when it is a user process other than the caller,
 * stopped (-EBUSY otherwise), in a ptrace stop whose tracer is the caller
 * (-EPERM otherwise: ptrace_may_access is not exported, so "the caller
 * traces it" stands for "the caller may inspect it"), and has an mm.
 */
int crp_check_dump_target(struct task_struct *task)
{
	int ret = 0;

	if (task->flags & (PF_KTHREAD | PF_EXITING))
		return -EPERM;
	if (same_thread_group(task, current))
		return -EINVAL;
	if (!task_is_stopped_or_traced(task))
		return -EBUSY;
	rcu_read_lock();
	if (!task->ptrace || rcu_dereference(task->parent) != current)
		ret = -EPERM;
	rcu_read_unlock();
	if (ret)
		return ret;
	if (!task_is_traced(task))
		return -EBUSY;
	return 0;
}

struct mm_struct *crp_get_task_mm(struct task_struct *task)
{
	return get_task_mm(task);
}

void crp_put_mm(struct mm_struct *mm)
{
	mmput(mm);
}

struct mm_struct *crp_current_mm(void)
{
	return current->mm;
}

int crp_current_thread_count(void)
{
	return get_nr_threads(current);
}

/* Copies the regset with ELF note type `note_type` (NT_PRSTATUS,
 * NT_X86_XSTATE, ...) of a stopped task; returns bytes copied. */
int crp_task_regset(struct task_struct *task, unsigned int note_type, void *buf, unsigned int size)
{
	const struct user_regset_view *view = task_user_regset_view(task);
	unsigned int i;

	for (i = 0; i < view->n; i++) {
		const struct user_regset *regset = &view->regsets[i];

		if (regset->core_note_type != note_type)
			continue;
		if (regset->active && regset->active(task, regset) <= 0)
			return -ENODATA;
		return regset_get(task, regset, size, buf);
	}
	return -ENODEV;
}

/* actions: 4 words per signal 1..64 (handler, flags, restorer, mask);
 * altstack: sp, size, flags as sigaltstack(2) reports them. */
void crp_task_signals(struct task_struct *task, u64 *actions, u64 *blocked, u64 *altstack)
{
	struct sighand_struct *sighand;
	int i;

	spin_lock_irq(&task->sighand->siglock);
	sighand = task->sighand;
	for (i = 0; i < _NSIG; i++) {
		const struct sigaction *sa = &sighand->action[i].sa;

		actions[4 * i + 0] = (u64)(unsigned long)sa->sa_handler;
		actions[4 * i + 1] = sa->sa_flags;
		actions[4 * i + 2] = (u64)(unsigned long)sa->sa_restorer;
		actions[4 * i + 3] = sa->sa_mask.sig[0];
	}
	*blocked = task->blocked.sig[0];
	altstack[0] = task->sas_ss_sp;
	altstack[1] = task->sas_ss_size;
	if (!task->sas_ss_size) {
		altstack[2] = SS_DISABLE;
	} else {
		unsigned long sp = task_pt_regs(task)->sp;
		int on_stack = sp > task->sas_ss_sp && sp - task->sas_ss_sp <= task->sas_ss_size;

		altstack[2] = task->sas_ss_flags | (on_stack ? SS_ONSTACK : 0);
	}
	spin_unlock_irq(&task->sighand->siglock);
}

/*
 * Time left and interval of a CPU-time itimer, as getitimer(2) computes
 * them (thread_group_sample_cputime is not exported; while such a timer is
 * armed the group's cputimer runs, so its atomic sums are current). Called
 * under siglock.
 */
static void crp_cpu_itimer(struct signal_struct *signal, int clock, u64 *out)
{
	const struct cpu_itimer *it = &signal->it[clock];
	const struct task_cputime_atomic *sums = &signal->cputimer.cputime_atomic;
	u64 now, expires = it->expires;

	out[0] = 0;
	out[1] = it->incr;
	if (!expires)
		return;
	now = atomic64_read(&sums->utime);
	if (clock == CPUCLOCK_PROF)
		now += atomic64_read(&sums->stime);
	out[0] = expires > now ? expires - now : TICK_NSEC;
}

void crp_task_misc(struct task_struct *task, u64 *misc)
{
	struct signal_struct *signal = task->signal;
	const struct task_exec_state *exec_state;
	const struct cred *cred;
	ktime_t remaining = 0;

	misc[0] = task->personality;
	misc[1] = (u64)(unsigned long)task->futex.robust_list;
	misc[2] = sizeof(struct robust_list_head);
	misc[3] = (u64)(unsigned long)task->clear_child_tid;
#ifdef CONFIG_RSEQ
	misc[4] = (u64)(unsigned long)task->rseq.usrptr;
	misc[5] = task->rseq.len;
	misc[6] = task->rseq.sig;
#else
	misc[4] = misc[5] = misc[6] = 0;
#endif
	spin_lock_irq(&task->sighand->siglock);
	if (hrtimer_active(&signal->real_timer)) {
		remaining = __hrtimer_get_remaining(&signal->real_timer, false);
		/* getitimer(2) reports an expired but not yet fired timer as 1 us. */
		if (remaining <= 0)
			remaining = NSEC_PER_USEC;
	}
	misc[7] = remaining;
	misc[8] = signal->it_real_incr;
	crp_cpu_itimer(signal, CPUCLOCK_VIRT, &misc[9]);
	crp_cpu_itimer(signal, CPUCLOCK_PROF, &misc[11]);
	spin_unlock_irq(&task->sighand->siglock);
	misc[13] = get_nr_threads(task);
	rcu_read_lock();
	cred = __task_cred(task);
	misc[14] = !!(cred->securebits & issecure_mask(SECURE_KEEP_CAPS));
	exec_state = rcu_dereference(task->exec_state);
	misc[15] = READ_ONCE(exec_state->dumpable);
	rcu_read_unlock();
}

/* limits: soft, hard per resource 0..RLIM_NLIMITS-1. */
void crp_task_rlimits(struct task_struct *task, u64 *limits)
{
	struct task_struct *leader = task->group_leader;
	int i;

	task_lock(leader);
	for (i = 0; i < RLIM_NLIMITS; i++) {
		limits[2 * i] = READ_ONCE(task->signal->rlim[i].rlim_cur);
		limits[2 * i + 1] = READ_ONCE(task->signal->rlim[i].rlim_max);
	}
	task_unlock(leader);
}

/* fields: CRP_MM_WORDS in prctl_mm_map order; returns the auxv words copied. */
int crp_mm_fields(struct mm_struct *mm, u64 *fields, u64 *auxv, unsigned int auxv_capacity)
{
	unsigned int words = 0;

	spin_lock(&mm->arg_lock);
	fields[0] = mm->start_code;
	fields[1] = mm->end_code;
	fields[2] = mm->start_data;
	fields[3] = mm->end_data;
	fields[4] = mm->start_brk;
	fields[5] = mm->brk;
	fields[6] = mm->start_stack;
	fields[7] = mm->arg_start;
	fields[8] = mm->arg_end;
	fields[9] = mm->env_start;
	fields[10] = mm->env_end;
	spin_unlock(&mm->arg_lock);
	/* saved_auxv ends with an AT_NULL pair; copy up to and including it. */
	while (words + 2 <= auxv_capacity && words + 2 <= ARRAY_SIZE(mm->saved_auxv)) {
		auxv[words] = mm->saved_auxv[words];
		auxv[words + 1] = mm->saved_auxv[words + 1];
		words += 2;
		if (auxv[words - 2] == AT_NULL)
			break;
	}
	return words;
}

static u64 crp_vma_flags(const struct vm_area_struct *vma)
{
	vm_flags_t flags = vma->vm_flags;
	u64 out = 0;

	out |= (flags & VM_READ) ? CRP_VMA_READ : 0;
	out |= (flags & VM_WRITE) ? CRP_VMA_WRITE : 0;
	out |= (flags & VM_EXEC) ? CRP_VMA_EXEC : 0;
	out |= (flags & VM_MAYSHARE) ? CRP_VMA_SHARED : 0;
	out |= (flags & VM_GROWSDOWN) ? CRP_VMA_GROWSDOWN : 0;
	out |= (flags & VM_HUGEPAGE) ? CRP_VMA_HUGEPAGE : 0;
	out |= (flags & VM_NOHUGEPAGE) ? CRP_VMA_NOHUGEPAGE : 0;
	out |= (flags & VM_DONTCOPY) ? CRP_VMA_DONTFORK : 0;
	out |= (flags & VM_WIPEONFORK) ? CRP_VMA_WIPEONFORK : 0;
	out |= (flags & VM_DONTDUMP) ? CRP_VMA_DONTDUMP : 0;
	out |= (flags & VM_MAYWRITE) ? CRP_VMA_MAYWRITE : 0;
	out |= (flags & VM_NORESERVE) ? CRP_VMA_NORESERVE : 0;
	out |= (flags & VM_LOCKED_MASK) ? CRP_VMA_LOCKED : 0;
	out |= (flags & (VM_IO | VM_PFNMAP | VM_MIXEDMAP)) ? CRP_VMA_DEVICE : 0;
	return out;
}

/*
 * The first VMA ending above `from`: vma[] gets CRP_VMA_WORDS words and
 * `name` the file's path or the special mapping's name (no NUL). Returns the
 * name's length, -ENOENT past the last VMA, -ENAMETOOLONG if the name does
 * not fit.
 */
long crp_next_vma(struct mm_struct *mm, u64 from, u64 *vma_words, char *name, unsigned int name_capacity)
{
	struct vm_area_struct *vma;
	long length = 0;

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	vma = find_vma(mm, from);
	if (!vma) {
		mmap_read_unlock(mm);
		return -ENOENT;
	}
	vma_words[0] = vma->vm_start;
	vma_words[1] = vma->vm_end;
	vma_words[2] = vma->vm_file ? (u64)vma->vm_pgoff << PAGE_SHIFT : 0;
	vma_words[3] = crp_vma_flags(vma);
	if (vma->vm_file) {
		char *path = d_path(&vma->vm_file->f_path, name, name_capacity);

		vma_words[4] = CRP_VMA_FILE;
		if (IS_ERR(path)) {
			length = PTR_ERR(path);
		} else {
			length = name + name_capacity - path - 1;
			memmove(name, path, length);
		}
	} else if (vma->vm_ops && vma->vm_ops->name) {
		const char *special = vma->vm_ops->name(vma);

		vma_words[4] = CRP_VMA_SPECIAL;
		length = special ? strscpy(name, special, name_capacity) : 0;
		if (length < 0)
			length = -ENAMETOOLONG;
	} else {
		vma_words[4] = CRP_VMA_ANONYMOUS;
	}
	mmap_read_unlock(mm);
	return length;
}

/* Writes `len` bytes at `address` of the current task the way a debugger
 * writes through /proc/PID/mem (FOLL_FORCE: into read-only private and
 * PROT_NONE memory too). Returns bytes written. */
long crp_force_write(u64 address, const void *buf, unsigned long len)
{
	if (len > INT_MAX)
		return -EINVAL;
	return access_process_vm(current, address, (void *)buf, len, FOLL_FORCE | FOLL_WRITE);
}

#define CRP_READ_BATCH 64

/*
 * Copies `task`'s memory at `address` into `iter` (the reader's buffer),
 * one copy per page, the way process_vm_readv does: pin a batch of pages
 * under the task's mmap lock, drop the lock, copy, release. FOLL_FORCE
 * reads PROT_NONE memory too. Returns bytes copied, or -EIO if none could
 * be (nothing mapped there).
 */
long crp_read_task_memory(struct task_struct *task, u64 address, struct iov_iter *iter)
{
	struct page *pages[CRP_READ_BATCH];
	struct mm_struct *mm = get_task_mm(task);
	long copied = 0;
	bool short_copy = false;

	if (!mm)
		return -ESRCH;
	while (iov_iter_count(iter) && !short_copy) {
		unsigned long span = (address & ~PAGE_MASK) + iov_iter_count(iter);
		unsigned long wanted = min_t(unsigned long, DIV_ROUND_UP(span, PAGE_SIZE), CRP_READ_BATCH);
		int locked = 1;
		long got, i;

		if (mmap_read_lock_killable(mm))
			break;
		got = get_user_pages_remote(mm, address & PAGE_MASK, wanted, FOLL_FORCE, pages, &locked);
		if (locked)
			mmap_read_unlock(mm);
		if (got <= 0)
			break;
		for (i = 0; i < got; i++) {
			size_t offset = address & ~PAGE_MASK;
			size_t bytes = min_t(size_t, PAGE_SIZE - offset, iov_iter_count(iter));
			size_t done = 0;

			if (!short_copy && bytes)
				done = copy_page_to_iter(pages[i], offset, bytes, iter);
			if (done < bytes)
				short_copy = true;
			copied += done;
			address += done;
			put_page(pages[i]);
		}
	}
	mmput(mm);
	return copied ? copied : -EIO;
}

int crp_file_is_regular(struct file *file)
{
	return S_ISREG(file_inode(file)->i_mode);
}

long long crp_file_size(struct file *file)
{
	return i_size_read(file_inode(file));
}

long crp_read_file(struct file *file, void *buf, unsigned long len, long long pos)
{
	loff_t offset = pos;

	return kernel_read(file, buf, len, &offset);
}

/* Reads `len` bytes at `pos` of `file` straight into the current task's
 * memory at `address` (one copy, from the page cache); the destination
 * must be writable. Returns bytes read. */
static long crp_read_file_to_user(struct file *file, u64 address, unsigned long len, long long pos)
{
	struct iov_iter iter;
	loff_t offset = pos;
	int ret = import_ubuf(ITER_DEST, (void __user *)(unsigned long)address, len, &iter);

	if (ret)
		return ret;
	/* Fault the destination in first, page by page without a trap each
	 * (the way MADV_POPULATE_WRITE does); the copy then runs unfaulted. */
	if (fault_in_iov_iter_writeable(&iter, len))
		return -EFAULT;
	return vfs_iter_read(file, &iter, &offset, 0);
}

/* Fills `count` pieces (address, length, file offset) from `file`. */
static long crp_fill_pieces(struct file *file, const u64 *pieces, unsigned int count)
{
	unsigned int i;

	for (i = 0; i < count; i++) {
		long read = crp_read_file_to_user(file, pieces[3 * i], pieces[3 * i + 1], pieces[3 * i + 2]);

		if (read < 0)
			return read;
		if (read != pieces[3 * i + 1])
			return -EIO;
	}
	return 0;
}

/* One CPU's share of a parallel fill, run by a workqueue worker inside the
 * restoring task's mm. */
struct crp_fill_part {
	struct work_struct work;
	struct completion done;
	struct mm_struct *mm;
	struct file *file;
	const u64 *pieces;
	unsigned int count;
	long result;
};

static void crp_fill_work(struct work_struct *work)
{
	struct crp_fill_part *part = container_of(work, struct crp_fill_part, work);

	kthread_use_mm(part->mm);
	part->result = crp_fill_pieces(part->file, part->pieces, part->count);
	kthread_unuse_mm(part->mm);
	complete(&part->done);
}

#define CRP_FILL_PARTS_MAX 16

/*
 * Fills the current task's writable memory from `file` with one worker per
 * online CPU (the caller doing one share), the way the userspace back end
 * fills with a thread per CPU. `pieces` are (address, length, file offset)
 * triplets of similar lengths. Returns 0 or the first error; it returns
 * only once every worker is done with the mm and the file.
 */
long crp_fill_user_parallel(struct file *file, const u64 *pieces, unsigned int count)
{
	unsigned int parts = min3(num_online_cpus(), (unsigned int)CRP_FILL_PARTS_MAX, max(count, 1u));
	struct crp_fill_part *part;
	long result = 0;
	unsigned int i;

	if (parts <= 1)
		return crp_fill_pieces(file, pieces, count);
	part = kcalloc(parts - 1, sizeof(*part), GFP_KERNEL);
	if (!part)
		return crp_fill_pieces(file, pieces, count);
	for (i = 1; i < parts; i++) {
		struct crp_fill_part *worker = &part[i - 1];
		unsigned int first = count * i / parts, end = count * (i + 1) / parts;

		INIT_WORK(&worker->work, crp_fill_work);
		init_completion(&worker->done);
		worker->mm = current->mm;
		worker->file = file;
		worker->pieces = pieces + 3 * first;
		worker->count = end - first;
		queue_work(system_unbound_wq, &worker->work);
	}
	result = crp_fill_pieces(file, pieces, count / parts);
	for (i = 1; i < parts; i++) {
		wait_for_completion(&part[i - 1].done);
		if (!result)
			result = part[i - 1].result;
	}
	kfree(part);
	return result;
}

int crp_unmap(u64 start, u64 length)
{
	return vm_munmap(start, length);
}

/* Maps [start, start + length) of the current task as the CRP_VMA_* flags
 * say; `file` is NULL for anonymous memory. Returns the address or -errno. */
long crp_map(u64 start, u64 length, u64 crp_flags, struct file *file, u64 offset)
{
	unsigned long prot = 0, flags = MAP_FIXED;

	prot |= (crp_flags & CRP_VMA_READ) ? PROT_READ : 0;
	prot |= (crp_flags & CRP_VMA_WRITE) ? PROT_WRITE : 0;
	prot |= (crp_flags & CRP_VMA_EXEC) ? PROT_EXEC : 0;
	flags |= (crp_flags & CRP_VMA_SHARED) ? MAP_SHARED : MAP_PRIVATE;
	flags |= (crp_flags & CRP_VMA_GROWSDOWN) ? MAP_GROWSDOWN : 0;
	flags |= (crp_flags & CRP_VMA_NORESERVE) ? MAP_NORESERVE : 0;
	flags |= file ? 0 : MAP_ANONYMOUS;
	return (long)vm_mmap(file, start, length, prot, flags, offset);
}

/* Sets the madvise(2)-style flags on the VMA starting at `start`, as
 * madvise would (MADV_HUGEPAGE, MADV_DONTFORK, ...); do_madvise is not
 * exported. */
int crp_set_vma_flags(u64 start, u64 crp_flags)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	vm_flags_t set = 0;

	set |= (crp_flags & CRP_VMA_HUGEPAGE) ? VM_HUGEPAGE : 0;
	set |= (crp_flags & CRP_VMA_NOHUGEPAGE) ? VM_NOHUGEPAGE : 0;
	set |= (crp_flags & CRP_VMA_DONTFORK) ? VM_DONTCOPY : 0;
	set |= (crp_flags & CRP_VMA_WIPEONFORK) ? VM_WIPEONFORK : 0;
	set |= (crp_flags & CRP_VMA_DONTDUMP) ? VM_DONTDUMP : 0;
	if (!set)
		return 0;
	if (mmap_write_lock_killable(mm))
		return -EINTR;
	vma = vma_lookup(mm, start);
	if (!vma || vma->vm_start != start) {
		mmap_write_unlock(mm);
		return -ENOENT;
	}
	vm_flags_set(vma, set);
	mmap_write_unlock(mm);
	return 0;
}

/* The fields prctl(PR_SET_MM_MAP) sets, validated by the caller. */
int crp_set_mm_fields(const u64 *fields, const u64 *auxv, unsigned int auxv_words)
{
	struct mm_struct *mm = current->mm;
	unsigned int i;

	if (auxv_words > ARRAY_SIZE(mm->saved_auxv))
		return -EINVAL;
	if (mmap_write_lock_killable(mm))
		return -EINTR;
	spin_lock(&mm->arg_lock);
	mm->start_code = fields[0];
	mm->end_code = fields[1];
	mm->start_data = fields[2];
	mm->end_data = fields[3];
	mm->start_brk = fields[4];
	mm->brk = fields[5];
	mm->start_stack = fields[6];
	mm->arg_start = fields[7];
	mm->arg_end = fields[8];
	mm->env_start = fields[9];
	mm->env_end = fields[10];
	spin_unlock(&mm->arg_lock);
	for (i = 0; i < ARRAY_SIZE(mm->saved_auxv); i++)
		mm->saved_auxv[i] = i < auxv_words ? auxv[i] : 0;
	mmap_write_unlock(mm);
	return 0;
}

/* Installs every disposition but SIGKILL's and SIGSTOP's, the alternate
 * stack and the blocked mask of the current (single-threaded) task. */
int crp_set_signals(const u64 *actions, u64 blocked, const u64 *altstack)
{
	struct sighand_struct *sighand = current->sighand;
	sigset_t mask;
	int i;

	spin_lock_irq(&sighand->siglock);
	for (i = 0; i < _NSIG; i++) {
		struct sigaction *sa = &sighand->action[i].sa;

		if (i + 1 == SIGKILL || i + 1 == SIGSTOP)
			continue;
		sa->sa_handler = (__sighandler_t)(unsigned long)actions[4 * i + 0];
		sa->sa_flags = actions[4 * i + 1];
		sa->sa_restorer = (__sigrestore_t)(unsigned long)actions[4 * i + 2];
		sa->sa_mask.sig[0] = actions[4 * i + 3] & ~(sigmask(SIGKILL) | sigmask(SIGSTOP));
	}
	spin_unlock_irq(&sighand->siglock);
	if (altstack[2] & SS_DISABLE) {
		current->sas_ss_sp = 0;
		current->sas_ss_size = 0;
		current->sas_ss_flags = SS_DISABLE;
	} else {
		current->sas_ss_sp = altstack[0];
		current->sas_ss_size = altstack[1];
		current->sas_ss_flags = altstack[2] & SS_FLAG_BITS;
	}
	mask.sig[0] = blocked & ~(sigmask(SIGKILL) | sigmask(SIGSTOP));
	return sigprocmask(SIG_SETMASK, &mask, NULL);
}

void crp_set_misc(u64 personality, u64 robust_list_head, u64 clear_child_tid)
{
	current->personality = personality;
	current->futex.robust_list = (struct robust_list_head __user *)(unsigned long)robust_list_head;
	current->clear_child_tid = (int __user *)(unsigned long)clear_child_tid;
}

/*
 * Sets the current task's fs base as arch_prctl(ARCH_SET_FS) does for the
 * calling task (x86_fsbase_write_task is not exported and is meant for
 * stopped tasks): a null selector, the base in the CPU and in the thread.
 * The caller checked fsbase < TASK_SIZE_MAX.
 */
void crp_set_fs_base(u64 fsbase)
{
	preempt_disable();
	loadsegment(fs, 0);
	x86_fsbase_write_cpu(fsbase);
	current->thread.fsindex = 0;
	current->thread.fsbase = fsbase;
	preempt_enable();
}

/*
 * Loads the user_regs_struct words (r15 first) into the current task's
 * saved user registers, so the return from this system call lands at the
 * saved instruction. orig_ax becomes -1: no restart handling applies to
 * the ioctl's own return. Segment selectors must be the 64-bit user ones;
 * the fs base is crp_set_fs_base's, gs base is left to crp (no exported
 * way to write the inactive gs base). Returns -EINVAL for selectors the
 * kernel would not return to.
 */
int crp_set_user_regs(const u64 *regs)
{
	struct pt_regs *pt = task_pt_regs(current);

	if (regs[17] != __USER_CS || regs[20] != __USER_DS)
		return -EINVAL;
	pt->r15 = regs[0];
	pt->r14 = regs[1];
	pt->r13 = regs[2];
	pt->r12 = regs[3];
	pt->bp = regs[4];
	pt->bx = regs[5];
	pt->r11 = regs[6];
	pt->r10 = regs[7];
	pt->r9 = regs[8];
	pt->r8 = regs[9];
	pt->ax = regs[10];
	pt->cx = regs[11];
	pt->dx = regs[12];
	pt->si = regs[13];
	pt->di = regs[14];
	pt->orig_ax = -1;
	pt->ip = regs[16];
	pt->flags = (pt->flags & ~CRP_USER_EFLAGS) | (regs[18] & CRP_USER_EFLAGS);
	pt->sp = regs[19];
	return 0;
}
