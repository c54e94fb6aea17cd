//! Each kind of state checked against what the kernel accepts when the
//! restore sets it, so that an image that would be refused halfway is
//! refused before the child exists. The checks live beside the restore
//! functions they guard, in their category crates; this runs them all.

use std::ops::Range;

use super::invalid;
use crate::error::CrpError;
use crate::model::ProcessImage;

/// `sizeof(struct robust_list_head)`: the one length `set_robust_list`
/// takes, and the one `get_robust_list` reports.
const ROBUST_LIST_HEAD: u64 = 24;
/// `ORIG_RSEQ_SIZE`, and the alignment of `struct rseq`.
const RSEQ_MINIMUM: u32 = 32;

pub(super) fn check(image: &ProcessImage, user: &Range<u64>) -> Result<(), CrpError> {
    image.leader()?;
    check_thread_ids(image)?;
    for thread in &image.threads {
        check_thread(thread, user).map_err(|reason| match thread.tid == image.pid {
            true => invalid(reason),
            false => invalid(format!("thread {}: {reason}", thread.tid)),
        })?;
    }
    image.mm.check(user.clone()).map_err(invalid)?;
    image.signals.check().map_err(invalid)?;
    crp_compound::files::check_table(&image.files).map_err(invalid)?;
    image.shared_memory.check(&image.vmas, image.files.objects.len()).map_err(invalid)?;
    crp_compound::vma::check_guards(&image.vmas, &image.guard_regions).map_err(invalid)?;
    crp_compound::rlimits::check(&image.rlimits).map_err(invalid)?;
    image.timers.check().map_err(invalid)?;
    image.pending_signals.check().map_err(invalid)?;
    image.posix_timers.check().map_err(invalid)?;
    image.file_locks.check().map_err(invalid)?;
    for lock in &image.file_locks.locks {
        if !image.files.descriptors.iter().any(|descriptor| descriptor.fd == lock.fd) {
            return Err(invalid(format!(
                "a {} is on fd {}, which the image has no descriptor for",
                lock.describe(),
                lock.fd
            )));
        }
    }
    for timer in &image.posix_timers.timers {
        if timer.notify == crp_compound::posix_timers::SIGEV_THREAD_ID
            && !image.threads.iter().any(|thread| thread.tid == timer.thread)
        {
            return Err(invalid(format!(
                "POSIX timer {} signals thread {}, not one of the image's",
                timer.id, timer.thread
            )));
        }
    }
    image.task.check().map_err(invalid)?;
    image.session.check().map_err(invalid)?;
    image.attributes.check().map_err(invalid)?;
    image.credentials.check().map_err(invalid)
}

/// More threads than this are refused: a real process has fewer, and a
/// forged count must not make the restore clone without end.
const MAX_THREADS: usize = 1 << 15;

/// Thread ids are positive, each once, the leader's the pid, and there are
/// not more than [`MAX_THREADS`].
fn check_thread_ids(image: &ProcessImage) -> Result<(), CrpError> {
    if image.threads.len() > MAX_THREADS {
        return Err(invalid(format!("has {} threads, more than {MAX_THREADS}", image.threads.len())));
    }
    let mut tids: Vec<i32> = image.threads.iter().map(|thread| thread.tid).collect();
    if let Some(tid) = tids.iter().find(|tid| **tid <= 0) {
        return Err(invalid(format!("has a thread with id {tid}")));
    }
    tids.sort_unstable();
    if let Some(pair) = tids.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(invalid(format!("has thread id {} twice", pair[0])));
    }
    Ok(())
}

/// One thread's own state: registers, XSAVE area, pending signals,
/// attributes, robust list and rseq.
fn check_thread(thread: &crate::model::ThreadState, user: &Range<u64>) -> Result<(), String> {
    thread.cpu.registers.check().map_err(|error| format!("registers: {error}"))?;
    thread.cpu.xsave.check().map_err(|error| error.to_string())?;
    thread.pending_signals.check().map_err(|error| error.to_string())?;
    thread.attributes.check().map_err(|error| error.to_string())?;
    check_locks(&thread.locks, user)
}

fn check_locks(locks: &crp_locks::LockState, user: &Range<u64>) -> Result<(), String> {
    if locks.robust_list_length != ROBUST_LIST_HEAD {
        return Err(format!(
            "robust list length {} is not {ROBUST_LIST_HEAD} (struct robust_list_head)",
            locks.robust_list_length
        ));
    }
    if let Some(rseq) = &locks.rseq {
        let aligned = rseq.address % u64::from(RSEQ_MINIMUM) == 0;
        if !aligned || !user.contains(&rseq.address) || rseq.length < RSEQ_MINIMUM {
            return Err(format!(
                "rseq area at {:#x} of {} bytes is not an aligned struct rseq in user space",
                rseq.address, rseq.length
            ));
        }
    }
    Ok(())
}
