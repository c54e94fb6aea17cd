//! User space's view of the `/dev/crp` ABI: the very file the kernel module
//! compiles (`crates/crp-kmod/abi.rs`), included unchanged so the two sides
//! cannot drift apart.
#![no_std]

#[path = "../../crp-kmod/abi.rs"]
mod abi;

pub use abi::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// `_IOC_DIR`, `_IOC_TYPE`, `_IOC_NR`, `_IOC_SIZE` of a command.
    fn decode(command: u32) -> (u32, u8, u32, usize) {
        (command >> 30, ((command >> 8) & 0xff) as u8, command & 0xff, ((command >> 16) & 0x3fff) as usize)
    }

    #[test]
    fn commands_encode_direction_magic_number_and_record_size() {
        assert_eq!(decode(CRP_IOC_DUMP_TASK), (3, b'C', 1, core::mem::size_of::<CrpDumpRequest>()));
        assert_eq!(decode(CRP_IOC_ATTACH), (1, b'C', 2, core::mem::size_of::<CrpAttach>()));
        assert_eq!(decode(CRP_IOC_RESTORE), (1, b'C', 3, core::mem::size_of::<CrpRestoreRequest>()));
    }

    #[test]
    fn mm_bounds_round_trip_in_prctl_mm_map_order() {
        let bounds = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        let mm = CrpMmState::from_bounds(bounds, 2, [0; CRP_AUXV_WORDS]);
        assert_eq!((mm.start_code, mm.brk, mm.start_stack, mm.env_end), (1, 6, 7, 11));
        assert_eq!(mm.bounds(), bounds);
    }

    #[test]
    fn restorable_flags_exclude_what_only_a_dump_reports() {
        assert_eq!(CRP_VMA_RESTORABLE & (CRP_VMA_LOCKED | CRP_VMA_DEVICE), 0);
    }
}
