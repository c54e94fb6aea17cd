//! Arch-dependent state (x86-64): the general registers (fs/gs base
//! included), the XSAVE area, where the vDSO and its data pages sit, and the
//! fix-ups a process stopped inside a syscall needs to resume correctly.

mod cpu;
mod error;
mod restart;
mod syscall_names;
mod vdso;
mod xsave;

pub use cpu::{CpuState, RegisterFile};
pub use error::ArchError;
pub use restart::{ResumeAction, plan_resume, resume_registers, rewind_never_restarted};
pub use syscall_names::syscall_name;
pub use vdso::{SpecialMapping, VdsoLayout, is_special_mapping};
pub use xsave::{XsaveArea, host_xsave_features};
