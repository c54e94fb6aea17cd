//! The threads of the restored process other than its leader: each made
//! by a clone3 injected into the leader once its memory is in place, at
//! its original thread id when the process got its original pid, and
//! traced by crp from its first moment. The per-thread kinds of the plan
//! then run in each (see `plan::per_thread`), and the engine loads each
//! thread's registers and blocked mask last, like the leader's.

use crp_ptrace::{EngineError, Injector, Tracee, TraceeExt};
use nix::unistd::Pid;

use crate::error::CrpError;
use crate::model::ThreadState;

/// What a thread shares with its leader: what glibc's pthread_create
/// shares (the address space, the file-system context, the descriptor
/// table, the signal handlers, SysV semaphore undo state). Its TLS, robust
/// list and clear_child_tid are set by the plan; the new thread runs no
/// instruction before its registers are loaded.
const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;

/// `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1), as
/// 64-bit words.
const CLONE_ARGS_WORDS: usize = 10;
/// Its words `flags`, `set_tid` and `set_tid_size`.
const FLAGS: usize = 0;
const SET_TID: usize = 8;
const SET_TID_SIZE: usize = 9;

/// Creates a thread for each of `threads` (the image's threads after the
/// leader) in the process `leader` rebuilds; `same_ids` says the process
/// got its original pid, so that each thread gets its own id back. The new
/// threads block every signal until the engine loads their own mask.
pub fn create(leader: &mut Injector, threads: &[ThreadState], same_ids: bool) -> Result<Vec<Injector>, CrpError> {
    let mut created = Vec::with_capacity(threads.len());
    for thread in threads {
        let mut scratch = leader.scratch();
        let set_tid = scratch.push(&thread.tid.to_le_bytes());
        let mut args = [0u64; CLONE_ARGS_WORDS];
        args[FLAGS] = THREAD_FLAGS;
        if same_ids {
            args[SET_TID] = set_tid;
            args[SET_TID_SIZE] = 1;
        }
        let bytes: Vec<u8> = args.iter().flat_map(|word| word.to_le_bytes()).collect();
        let args_address = scratch.push(&bytes);
        scratch.commit(leader)?;
        let size = std::mem::size_of_val(&args) as u64;
        let injector = leader.clone_thread(args_address, size).map_err(|error| match error {
            EngineError::Syscall { errno: nix::errno::Errno::EEXIST, .. } => CrpError::PidTaken { pid: thread.tid },
            other => other.into(),
        })?;
        let tid = injector.pid();
        crp_ptrace::sys::set_sigmask(Pid::from_raw(tid), u64::MAX).map_err(|errno| EngineError::Ptrace {
            operation: "PTRACE_SETSIGMASK",
            pid: tid,
            errno,
        })?;
        tracing::debug!(tid, image_tid = thread.tid, "thread created");
        created.push(injector);
        crate::faults::reached("thread-created", created.len() as u64);
    }
    Ok(created)
}

/// Whether the threads of an image whose process is restored as `pid`
/// (its original `image_pid`, or a new one) get their original ids: only
/// with the original pid, and only when every one is free. When one is
/// taken, `must_match` refuses; otherwise a warning names it.
pub fn keep_ids(image_pid: i32, pid: i32, threads: &[ThreadState], must_match: bool) -> Result<bool, CrpError> {
    if pid != image_pid {
        return Ok(false);
    }
    match threads.iter().map(|thread| thread.tid).find(|tid| std::path::Path::new(&format!("/proc/{tid}")).exists()) {
        None => Ok(true),
        Some(tid) if must_match => Err(CrpError::PidTaken { pid: tid }),
        Some(tid) => {
            eprintln!(
                "crp: warning: thread id {tid} is in use; the process's threads are restored with new ids \
                 (--pid-must-match refuses instead)"
            );
            Ok(false)
        }
    }
}
