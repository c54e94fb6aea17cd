// SPDX-License-Identifier: GPL-2.0
//! `CRP_IOC_RESTORE`: the report's §2.2 idea. The calling process (the
//! child `crp restore` prepared) becomes the checkpointed one: its address
//! space is replaced by the image's VMAs and pages, its mm fields, signal
//! state, robust list, clear_child_tid, personality, fs base and general
//! registers are set, and the ioctl returns to user mode at the saved instruction
//! (with only the low half of rax: see [`restore`]).
//!
//! Everything in the request is read and validated before the first
//! mapping is touched; a failure after that point leaves a process that
//! cannot run on, which crp (its tracer and parent) kills.

use kernel::fs::file::LocalFile;
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::uaccess::{UserPtr, UserSlice};

use crate::abi::*;
use crate::helpers::{self, current};

const PAGE_SIZE: u64 = 4096;
/// Highest user address + 1 on x86_64 with 4-level paging (TASK_SIZE_MAX).
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// `__USER_CS` and `__USER_DS` on x86_64.
const USER_CS: u64 = 0x33;
const USER_DS: u64 = 0x2b;
/// Index of cs/ss/rax in `user_regs_struct`.
const REG_RAX: usize = 10;
const REG_CS: usize = 17;
const REG_SS: usize = 20;
const REG_FS_BASE: usize = 21;
/// Bytes copied from the image per read (and per piece of a parallel fill).
const FILL_CHUNK: usize = 1 << 20;
/// Words of `mm->saved_auxv` on x86_64 (AT_VECTOR_SIZE).
const KERNEL_AUXV_WORDS: u64 = 2 * (3 + 24 + 1);

/// A validated request: everything the point of no return needs.
struct Plan {
    image: ARef<LocalFile>,
    state: KBox<CrpTaskState>,
    vmas: KVVec<CrpRestoreVma>,
    /// The file of each VMA (None for anonymous memory), same order.
    files: KVVec<Option<ARef<LocalFile>>>,
    runs: KVVec<CrpPageRun>,
}

pub(crate) fn restore(argument: usize) -> Result<isize> {
    let plan = read_and_validate(argument)?;
    replace_address_space(&plan)?;
    fill_pages(&plan)?;
    set_task_state(&plan.state)?;
    // The syscall return path stores the ioctl's result in rax, after
    // sys_ioctl has narrowed it to an int: the saved rax comes back with its
    // low 32 bits sign-extended, and crp sets the full value from outside.
    Ok(plan.state.regs[REG_RAX] as i32 as isize)
}

fn read_and_validate(argument: usize) -> Result<Plan> {
    let size = core::mem::size_of::<CrpRestoreRequest>();
    let request: CrpRestoreRequest = UserSlice::new(UserPtr::from_addr(argument), size).reader().read()?;
    if request.abi_version != CRP_ABI_VERSION {
        return Err(EPROTO);
    }
    if current::thread_count() != 1 {
        return Err(EBUSY);
    }
    if request.vma_count == 0 || request.vma_count > CRP_MAX_VMAS || request.run_count > CRP_MAX_RUNS {
        return Err(E2BIG);
    }
    let image = LocalFile::fget(u32::try_from(request.image_fd).map_err(|_| EBADF)?).map_err(|_| EBADF)?;
    if !helpers::file::is_regular(image.as_ptr().cast()) {
        return Err(EINVAL);
    }
    let image_size = u64::try_from(helpers::file::size(image.as_ptr().cast())).map_err(|_| EINVAL)?;

    let state_size = core::mem::size_of::<CrpTaskState>();
    let mut state = KBox::new(CrpTaskState::default(), GFP_KERNEL)?;
    *state = UserSlice::new(UserPtr::from_addr(request.task as usize), state_size).reader().read()?;
    validate_task_state(&state)?;

    let vmas: KVVec<CrpRestoreVma> = read_array(request.vmas, request.vma_count)?;
    let mut files = KVVec::with_capacity(vmas.len(), GFP_KERNEL)?;
    let mut previous_end = 0u64;
    for vma in vmas.iter() {
        validate_vma(vma, previous_end)?;
        previous_end = vma.end;
        let file = match vma.fd {
            -1 => None,
            fd => Some(LocalFile::fget(u32::try_from(fd).map_err(|_| EBADF)?).map_err(|_| EBADF)?),
        };
        files.push(file, GFP_KERNEL)?;
    }
    let runs: KVVec<CrpPageRun> = read_array(request.runs, request.run_count)?;
    for run in runs.iter() {
        validate_run(run, &vmas, image_size)?;
    }
    refuse_overlap_with_special_mappings(&vmas)?;
    Ok(Plan { image, state, vmas, files, runs })
}

/// Reads `count` records of `T` from user address `address`.
fn read_array<T: kernel::transmute::FromBytes>(address: u64, count: u32) -> Result<KVVec<T>> {
    let bytes = (count as usize).checked_mul(core::mem::size_of::<T>()).ok_or(E2BIG)?;
    let mut reader = UserSlice::new(UserPtr::from_addr(address as usize), bytes).reader();
    let mut records = KVVec::with_capacity(count as usize, GFP_KERNEL)?;
    for _ in 0..count {
        records.push(reader.read::<T>()?, GFP_KERNEL)?;
    }
    Ok(records)
}

fn page_aligned(value: u64) -> bool {
    value % PAGE_SIZE == 0
}

fn validate_vma(vma: &CrpRestoreVma, previous_end: u64) -> Result {
    let ordered = vma.start >= previous_end && vma.start < vma.end && vma.end <= TASK_SIZE;
    if !ordered || !page_aligned(vma.start) || !page_aligned(vma.end) || !page_aligned(vma.file_offset) {
        return Err(EINVAL);
    }
    if vma.flags & !CRP_VMA_RESTORABLE != 0 || vma.fd < -1 || (vma.fd == -1 && vma.file_offset != 0) {
        return Err(EINVAL);
    }
    if vma.file_offset.checked_add(vma.end - vma.start).is_none() {
        return Err(EOVERFLOW);
    }
    Ok(())
}

fn validate_run(run: &CrpPageRun, vmas: &[CrpRestoreVma], image_size: u64) -> Result {
    let length = run.pages.checked_mul(PAGE_SIZE).ok_or(EOVERFLOW)?;
    let end = run.address.checked_add(length).ok_or(EOVERFLOW)?;
    let stored_end = run.file_offset.checked_add(length).ok_or(EOVERFLOW)?;
    if run.pages == 0 || !page_aligned(run.address) || !page_aligned(run.file_offset) || stored_end > image_size {
        return Err(EINVAL);
    }
    // The VMA holding the run's first page must hold all of it, and be
    // private: a shared mapping's contents are its file's.
    let index = vmas.partition_point(|vma| vma.end <= run.address);
    match vmas.get(index) {
        Some(vma) if vma.start <= run.address && end <= vma.end && vma.flags & CRP_VMA_SHARED == 0 => Ok(()),
        _ => Err(EINVAL),
    }
}

fn validate_task_state(state: &CrpTaskState) -> Result {
    if state.regs[REG_CS] != USER_CS || state.regs[REG_SS] != USER_DS || state.regs[REG_FS_BASE] >= TASK_SIZE {
        return Err(EINVAL);
    }
    let mm = &state.mm;
    let addresses = mm.bounds();
    // The rules prctl(PR_SET_MM_MAP) applies.
    let ordered = mm.start_code < mm.end_code
        && mm.start_data <= mm.end_data
        && mm.start_brk <= mm.brk
        && mm.arg_start <= mm.arg_end
        && mm.env_start <= mm.env_end;
    if !ordered || addresses.iter().any(|address| *address >= TASK_SIZE) {
        return Err(EINVAL);
    }
    if mm.auxv_words > KERNEL_AUXV_WORDS || mm.auxv_words % 2 != 0 {
        return Err(EINVAL);
    }
    Ok(())
}

/// The caller's special mappings (vDSO, vvar) stay; crp moved them where
/// the image had them. No image VMA may overlap them.
fn refuse_overlap_with_special_mappings(vmas: &[CrpRestoreVma]) -> Result {
    let mut name = [0u8; 64];
    let mut from = 0u64;
    while let Some((words, _)) = current::next_vma(from, &mut name)? {
        let [start, end, _, _, kind] = words;
        if kind == u64::from(CRP_VMA_SPECIAL) && vmas.iter().any(|vma| vma.start < end && start < vma.end) {
            return Err(EEXIST);
        }
        from = end;
    }
    Ok(())
}

/// Point of no return: unmaps every mapping of the caller but the special
/// ones, then maps the image's VMAs.
fn replace_address_space(plan: &Plan) -> Result {
    let mut name = [0u8; 64];
    let mut from = 0u64;
    while let Some((words, _)) = current::next_vma(from, &mut name)? {
        let [start, end, _, _, kind] = words;
        if kind != u64::from(CRP_VMA_SPECIAL) {
            current::unmap(start, end - start)?;
        }
        from = end;
    }
    for (vma, file) in plan.vmas.iter().zip(plan.files.iter()) {
        let file_pointer = file.as_ref().map_or(core::ptr::null_mut(), |file| file.as_ptr().cast());
        current::map(vma.start, vma.end - vma.start, vma.flags, file_pointer, vma.file_offset)?;
        current::set_vma_flags(vma.start, vma.flags)?;
    }
    Ok(())
}

/// Copies every page run from the image into place: straight from the
/// image's page cache into user memory where the VMA is writable, one
/// worker per CPU; through a kernel buffer and FOLL_FORCE elsewhere (the
/// way a debugger writes to read-only or PROT_NONE memory).
fn fill_pages(plan: &Plan) -> Result {
    let image = plan.image.as_ptr().cast();
    let mut writable_pieces = KVVec::new();
    let mut buffer = KVVec::new();
    for run in plan.runs.iter() {
        let index = plan.vmas.partition_point(|vma| vma.end <= run.address);
        let writable = plan.vmas.get(index).is_some_and(|vma| vma.flags & CRP_VMA_WRITE != 0);
        let length = run.pages * PAGE_SIZE;
        let mut done = 0u64;
        while done < length {
            let chunk = (length - done).min(FILL_CHUNK as u64);
            let address = run.address + done;
            let position = run.file_offset + done;
            if writable {
                writable_pieces.push([address, chunk, position], GFP_KERNEL)?;
            } else {
                if buffer.is_empty() {
                    buffer = KVVec::from_elem(0u8, FILL_CHUNK, GFP_KERNEL)?;
                }
                let bytes = &mut buffer[..chunk as usize];
                helpers::file::read_exact(image, bytes, i64::try_from(position).map_err(|_| EOVERFLOW)?)?;
                current::force_write(address, bytes)?;
            }
            done += chunk;
        }
    }
    helpers::file::fill_user_parallel(image, &writable_pieces)
}

fn set_task_state(state: &CrpTaskState) -> Result {
    let mm = &state.mm;
    current::set_mm_fields(&mm.bounds(), &mm.auxv[..mm.auxv_words as usize])?;
    let mut actions = [0u64; 4 * CRP_SIGNALS];
    for (index, action) in state.actions.iter().enumerate() {
        actions[4 * index] = action.handler;
        actions[4 * index + 1] = action.flags;
        actions[4 * index + 2] = action.restorer;
        actions[4 * index + 3] = action.mask;
    }
    let altstack = [state.altstack_sp, state.altstack_size, u64::from(state.altstack_flags)];
    current::set_signals(&actions, state.blocked, &altstack)?;
    current::set_misc(u64::from(state.personality), state.robust_list_head, state.clear_child_tid);
    current::set_fs_base(state.regs[REG_FS_BASE]);
    current::set_user_regs(&state.regs)
}
