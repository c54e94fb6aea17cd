//! The kmod ABI's VMA records (`CrpVma` at dump, `CrpRestoreVma` at
//! restore) translated with the same flag and protection tables as smaps
//! (see [`super::rules`]).

use crp_kmod_abi::{
    CRP_VMA_DEVICE, CRP_VMA_FILE, CRP_VMA_LOCKED, CRP_VMA_SHARED, CRP_VMA_SPECIAL, CrpRestoreVma, CrpVma,
};

use super::rules::{FLAGS, PROTECTION};
use super::{Backing, Mapping, VmaFlags, VmaRecord};

impl<'a> Mapping<'a> {
    /// A mapping as `CRP_IOC_DUMP_TASK` reports it, with its `name`; `None`
    /// for a special kernel mapping.
    pub fn from_abi(vma: &CrpVma, name: &'a str) -> Option<Self> {
        if vma.kind == CRP_VMA_SPECIAL {
            return None;
        }
        let mut protection = 0;
        for (bit, abi_bit) in PROTECTION {
            if vma.flags & abi_bit != 0 {
                protection |= bit.cast_unsigned();
            }
        }
        let mut flags = VmaFlags::empty();
        for (flag, _, abi_bit) in FLAGS {
            if vma.flags & abi_bit != 0 {
                flags |= flag;
            }
        }
        Some(Self {
            start: vma.start,
            end: vma.end,
            name,
            has_inode: vma.kind == CRP_VMA_FILE,
            shared: vma.flags & CRP_VMA_SHARED != 0,
            protection,
            flags,
            file_offset: vma.file_offset,
            locked: vma.flags & CRP_VMA_LOCKED != 0,
            device: vma.flags & CRP_VMA_DEVICE != 0,
            // The module reports neither; its back end refuses what needs them.
            hugetlb: false,
            sealed: false,
            userfaultfd: false,
            maybe_guard: false,
            object_device: 0,
            inode: 0,
        })
    }
}

impl VmaRecord {
    /// The record's protection, sharing and flags as `CRP_VMA_*` bits.
    pub fn abi_flags(&self) -> u64 {
        let mut bits = if self.shared { CRP_VMA_SHARED } else { 0 };
        for (bit, abi_bit) in PROTECTION {
            if self.protection & bit.cast_unsigned() != 0 {
                bits |= abi_bit;
            }
        }
        for (flag, _, abi_bit) in FLAGS {
            if self.flags().contains(flag) {
                bits |= abi_bit;
            }
        }
        bits
    }

    /// The record the module maps, its file (if any) open at `fd` in the
    /// process being restored.
    pub fn to_abi(&self, fd: i32) -> CrpRestoreVma {
        let (fd, file_offset) = match &self.backing {
            // Refused before the kmod back end starts (`kmod_refusal`, and
            // the image check of its restore).
            Backing::Anonymous { .. } | Backing::Shared { .. } | Backing::Descriptor { .. } => (-1, 0),
            Backing::File(file) => (fd, file.offset),
        };
        CrpRestoreVma { start: self.start, end: self.end, file_offset, flags: self.abi_flags(), fd, _reserved: 0 }
    }
}

#[cfg(test)]
mod tests {
    use crp_kmod_abi::{
        CRP_VMA_ANONYMOUS, CRP_VMA_DONTFORK, CRP_VMA_GROWSDOWN, CRP_VMA_HUGEPAGE, CRP_VMA_MAYWRITE, CRP_VMA_NORESERVE,
        CRP_VMA_READ, CRP_VMA_WRITE,
    };

    use super::*;

    fn anonymous(flags: u64) -> CrpVma {
        CrpVma { start: 0x1000, end: 0x2000, flags, kind: CRP_VMA_ANONYMOUS, ..CrpVma::default() }
    }

    #[test]
    fn flags_survive_both_ways() {
        let flags = CRP_VMA_READ | CRP_VMA_WRITE | CRP_VMA_MAYWRITE | CRP_VMA_DONTFORK | CRP_VMA_HUGEPAGE;
        for bits in [flags, flags | CRP_VMA_GROWSDOWN, CRP_VMA_NORESERVE] {
            let record = Mapping::from_abi(&anonymous(bits), "").unwrap().record().unwrap();
            assert_eq!(record.abi_flags(), bits);
            assert_eq!(record.to_abi(5).fd, -1, "anonymous memory has no fd");
        }
        let record = Mapping::from_abi(&anonymous(flags), "").unwrap().record().unwrap();
        assert_eq!(record.protection_string(), "rw-p");
    }

    #[test]
    fn what_crp_cannot_restore_is_refused_by_name() {
        for (flags, what) in [
            (CRP_VMA_READ | CRP_VMA_DEVICE, "device mapping"),
            (CRP_VMA_READ | CRP_VMA_LOCKED, "mlock"),
            (CRP_VMA_READ | CRP_VMA_SHARED, "shared anonymous"),
        ] {
            let refusal = Mapping::from_abi(&anonymous(flags), "").unwrap().kmod_refusal().unwrap();
            assert!(refusal.what.contains(what), "{refusal}");
        }
        // A record the kmod back end takes refuses locked memory too.
        let locked = Mapping::from_abi(&anonymous(CRP_VMA_READ | CRP_VMA_LOCKED), "").unwrap().record().unwrap_err();
        assert!(locked.to_string().contains("kmod back end"), "{locked}");
        let special = CrpVma { kind: CRP_VMA_SPECIAL, ..anonymous(CRP_VMA_READ) };
        assert!(Mapping::from_abi(&special, "[vdso]").is_none());
    }
}
