// SPDX-License-Identifier: GPL-2.0
//! crp.ko: the kernel back end of crp, a misc device `/dev/crp`.
//!
//! - `CRP_IOC_DUMP_TASK` reads a ptrace-stopped task's state from the
//!   kernel's structures ([`dump`]);
//! - `CRP_IOC_ATTACH` binds the open file to such a task, after which
//!   `pread(fd, buf, len, address)` reads its memory ([`CrpFile::read_iter`]);
//! - `CRP_IOC_RESTORE` turns the caller into a checkpointed process
//!   ([`restore`]).
//!
//! Only callers with CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN may open the
//! device or issue its ioctls. Records are defined once, in `abi.rs`,
//! shared with user space.

// The ABI is public for user space; here only part of it is used.
#[allow(dead_code, unreachable_pub)]
mod abi;
mod dump;
mod helpers;
mod restore;

use kernel::{
    fs::{File, Kiocb},
    iov::IovIterDest,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    new_mutex,
    prelude::*,
    sync::Mutex,
    uaccess::{UserPtr, UserSlice},
};

use abi::*;
use helpers::TaskRef;

module! {
    type: CrpModule,
    name: "crp",
    authors: ["crp developers"],
    description: "crp checkpoint/restore back end: /dev/crp",
    license: "GPL",
}

// Every ABI record is `repr(C)` made of integers and arrays of such
// records, without padding (abi.rs pins the sizes): any byte pattern is a
// valid value and every byte is initialised.
macro_rules! plain_records {
    ($($record:ty),*) => {
        $(
            // SAFETY: see the comment above the macro.
            unsafe impl kernel::transmute::FromBytes for $record {}
            // SAFETY: see the comment above the macro.
            unsafe impl kernel::transmute::AsBytes for $record {}
        )*
    };
}
plain_records!(
    CrpSigaction,
    CrpMmState,
    CrpRlimit,
    CrpTaskState,
    CrpVma,
    CrpDumpRequest,
    CrpAttach,
    CrpRestoreVma,
    CrpPageRun,
    CrpRestoreRequest
);

#[pin_data]
struct CrpModule {
    #[pin]
    _device: MiscDeviceRegistration<CrpFile>,
}

impl kernel::InPlaceModule for CrpModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pr_info!("/dev/crp ready (ABI version {})\n", CRP_ABI_VERSION);
        try_pin_init!(Self { _device <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"crp" }) })
    }
}

/// One open `/dev/crp`: the task it is attached to, if any.
#[pin_data]
struct CrpFile {
    #[pin]
    attached: Mutex<Option<TaskRef>>,
}

#[vtable]
impl MiscDevice for CrpFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        if !helpers::caller_may_checkpoint() {
            return Err(EPERM);
        }
        KBox::try_pin_init(try_pin_init!(CrpFile { attached <- new_mutex!(None) }), GFP_KERNEL)
    }

    fn ioctl(me: Pin<&CrpFile>, _file: &File, command: u32, argument: usize) -> Result<isize> {
        // Checked again here: an open descriptor may have been handed to
        // a process without the capability.
        if !helpers::caller_may_checkpoint() {
            return Err(EPERM);
        }
        match command {
            CRP_IOC_DUMP_TASK => dump::dump_task(argument),
            CRP_IOC_ATTACH => me.attach(argument),
            CRP_IOC_RESTORE => restore::restore(argument),
            _ => Err(ENOTTY),
        }
    }

    /// Reads the attached task's memory; the file position is the address.
    fn read_iter(mut kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let me = kiocb.file();
        let attached = me.attached.lock();
        let task = attached.as_ref().ok_or(ENXIO)?;
        // Still stopped, and still traced by this caller.
        task.check_dump_target()?;
        let address = u64::try_from(kiocb.ki_pos()).map_err(|_| EINVAL)?;
        let read = task.read_memory(address, iov)?;
        drop(attached);
        *kiocb.ki_pos_mut() += read as i64;
        Ok(read)
    }
}

impl CrpFile {
    fn attach(&self, argument: usize) -> Result<isize> {
        let size = core::mem::size_of::<CrpAttach>();
        let request: CrpAttach = UserSlice::new(UserPtr::from_addr(argument), size).reader().read()?;
        if request.abi_version != CRP_ABI_VERSION {
            return Err(EPROTO);
        }
        let task = TaskRef::find(request.pid)?;
        task.check_dump_target()?;
        *self.attached.lock() = Some(task);
        Ok(0)
    }
}
