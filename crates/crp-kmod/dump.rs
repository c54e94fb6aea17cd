// SPDX-License-Identifier: GPL-2.0
//! `CRP_IOC_DUMP_TASK`: the state of a ptrace-stopped task, read from the
//! kernel's own structures (regsets, sighand, signal_struct, mm_struct, the
//! VMA tree) and copied out as the ABI's records.

use kernel::prelude::*;
use kernel::uaccess::{UserPtr, UserSlice};

use crate::abi::*;
use crate::helpers::{self, MmRef, TaskRef};

/// Longest VMA name (a path) the module reports.
const NAME_CAPACITY: usize = 4096;

pub(crate) fn dump_task(argument: usize) -> Result<isize> {
    let size = core::mem::size_of::<CrpDumpRequest>();
    let (mut reader, mut writer) = UserSlice::new(UserPtr::from_addr(argument), size).reader_writer();
    let mut request: CrpDumpRequest = reader.read()?;
    if request.abi_version != CRP_ABI_VERSION {
        return Err(EPROTO);
    }
    let task = TaskRef::find(request.pid)?;
    task.check_dump_target()?;
    let mm = task.mm()?;

    let mut state = KBox::new(CrpTaskState::default(), GFP_KERNEL)?;
    fill_task_state(&task, &mm, &mut state)?;
    let (vmas, names) = collect_vmas(&mm)?;
    drop(mm);

    request.vma_count = u32::try_from(vmas.len()).map_err(|_| E2BIG)?;
    request.names_used = u32::try_from(names.len()).map_err(|_| E2BIG)?;
    let xstate = read_xstate(&task, request.xstate_capacity)?;
    request.xstate_size = u32::try_from(xstate.len()).map_err(|_| E2BIG)?;
    let fits = vmas.len() <= request.vma_capacity as usize
        && names.len() <= request.names_capacity as usize
        && xstate.len() <= request.xstate_capacity as usize;
    if !fits {
        // Say how much room is needed, so the caller can retry.
        writer.write(&request)?;
        return Err(ENOSPC);
    }
    UserSlice::new(UserPtr::from_addr(request.task as usize), core::mem::size_of::<CrpTaskState>())
        .writer()
        .write(&*state)?;
    let mut vma_writer =
        UserSlice::new(UserPtr::from_addr(request.vmas as usize), vmas.len() * core::mem::size_of::<CrpVma>()).writer();
    for vma in vmas.iter() {
        vma_writer.write(vma)?;
    }
    UserSlice::new(UserPtr::from_addr(request.names as usize), names.len()).writer().write_slice(&names)?;
    UserSlice::new(UserPtr::from_addr(request.xstate as usize), xstate.len()).writer().write_slice(&xstate)?;
    writer.write(&request)?;
    Ok(0)
}

fn fill_task_state(task: &TaskRef, mm: &MmRef, state: &mut CrpTaskState) -> Result {
    let copied = task.regset_words(helpers::NT_PRSTATUS, &mut state.regs)?;
    if copied != CRP_USER_REGS * 8 {
        return Err(EIO);
    }

    let mut actions = [0u64; 4 * CRP_SIGNALS];
    let mut altstack = [0u64; 3];
    task.signals(&mut actions, &mut state.blocked, &mut altstack);
    for (index, action) in state.actions.iter_mut().enumerate() {
        let words = &actions[4 * index..4 * index + 4];
        *action = CrpSigaction { handler: words[0], flags: words[1], restorer: words[2], mask: words[3] };
    }
    state.altstack_sp = altstack[0];
    state.altstack_size = altstack[1];
    state.altstack_flags = altstack[2] as u32;

    let mut fields = [0u64; helpers::MM_WORDS];
    let auxv_words = mm.fields(&mut fields, &mut state.mm.auxv);
    state.mm = CrpMmState::from_bounds(fields, auxv_words as u64, state.mm.auxv);

    let misc = task.misc();
    state.personality = misc[0] as u32;
    state.robust_list_head = misc[1];
    state.robust_list_length = misc[2];
    state.clear_child_tid = misc[3];
    state.rseq_address = misc[4];
    state.rseq_length = misc[5] as u32;
    state.rseq_signature = misc[6] as u32;
    state.itimer_real_value_ns = misc[7];
    state.itimer_real_interval_ns = misc[8];
    state.itimer_virtual_value_ns = misc[9];
    state.itimer_virtual_interval_ns = misc[10];
    state.itimer_prof_value_ns = misc[11];
    state.itimer_prof_interval_ns = misc[12];
    state.thread_count = misc[13] as u32;
    state.keep_caps = misc[14] as u32;
    state.dumpable = misc[15] as u32;

    let limits = task.rlimits();
    for (index, limit) in state.rlimits.iter_mut().enumerate() {
        *limit = CrpRlimit { soft: limits[2 * index], hard: limits[2 * index + 1] };
    }
    Ok(())
}

/// Every VMA in address order, with the names packed in one buffer.
fn collect_vmas(mm: &MmRef) -> Result<(KVVec<CrpVma>, KVVec<u8>)> {
    let mut vmas = KVVec::new();
    let mut names = KVVec::new();
    let mut name = KVVec::from_elem(0u8, NAME_CAPACITY, GFP_KERNEL)?;
    let mut from = 0u64;
    while let Some((words, name_length)) = mm.next_vma(from, &mut name)? {
        if vmas.len() >= CRP_MAX_VMAS as usize {
            return Err(E2BIG);
        }
        let name_offset = u32::try_from(names.len()).map_err(|_| E2BIG)?;
        names.extend_from_slice(&name[..name_length], GFP_KERNEL)?;
        vmas.push(
            CrpVma {
                start: words[0],
                end: words[1],
                file_offset: words[2],
                flags: words[3],
                kind: words[4] as u32,
                name_offset,
                name_length: name_length as u32,
                _reserved: 0,
            },
            GFP_KERNEL,
        )?;
        from = words[1];
    }
    Ok((vmas, names))
}

/// The task's XSAVE area, if the caller asked for it.
fn read_xstate(task: &TaskRef, capacity: u32) -> Result<KVVec<u8>> {
    if capacity == 0 {
        return Ok(KVVec::new());
    }
    let mut xstate = KVVec::from_elem(0u8, capacity.min(CRP_MAX_XSTATE) as usize, GFP_KERNEL)?;
    let length = task.regset(helpers::NT_X86_XSTATE, &mut xstate)?;
    xstate.truncate(length);
    Ok(xstate)
}
