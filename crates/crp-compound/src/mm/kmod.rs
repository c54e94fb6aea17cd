//! The kmod ABI's `CrpMmState`: what `CRP_IOC_DUMP_TASK` reports of the
//! mm_struct and what `CRP_IOC_RESTORE` sets, field by field.

use crp_kmod_abi::{CRP_AUXV_WORDS, CrpMmState};

use super::MmFields;
use crate::error::CompoundError;
use crate::valid::Invalid;

impl MmFields {
    /// The fields the module reported, with the executable's path (which
    /// it does not report: see [`super::exe_path_of`]). An auxv length
    /// beyond the record is refused.
    pub fn from_abi(mm: &CrpMmState, exe_path: String) -> Result<Self, CompoundError> {
        let auxv = usize::try_from(mm.auxv_words).ok().and_then(|words| mm.auxv.get(..words)).ok_or_else(|| {
            CompoundError::Malformed {
                path: "/dev/crp".into(),
                reason: format!("the mm record has {} auxv words, more than it holds", mm.auxv_words),
            }
        })?;
        Ok(Self {
            start_code: mm.start_code,
            end_code: mm.end_code,
            start_data: mm.start_data,
            end_data: mm.end_data,
            start_brk: mm.start_brk,
            brk: mm.brk,
            start_stack: mm.start_stack,
            arg_start: mm.arg_start,
            arg_end: mm.arg_end,
            env_start: mm.env_start,
            env_end: mm.env_end,
            auxv: auxv.to_vec(),
            exe_path,
        })
    }

    /// The record the module sets (the executable link aside); an auxv
    /// longer than the record holds is refused.
    pub fn to_abi(&self) -> Result<CrpMmState, Invalid> {
        let mut auxv = [0u64; CRP_AUXV_WORDS];
        auxv.get_mut(..self.auxv.len())
            .ok_or_else(|| Invalid::new("auxv", format!("{} words is more than any kernel keeps", self.auxv.len())))?
            .copy_from_slice(&self.auxv);
        Ok(CrpMmState {
            start_code: self.start_code,
            end_code: self.end_code,
            start_data: self.start_data,
            end_data: self.end_data,
            start_brk: self.start_brk,
            brk: self.brk,
            start_stack: self.start_stack,
            arg_start: self.arg_start,
            arg_end: self.arg_end,
            env_start: self.env_start,
            env_end: self.env_end,
            auxv_words: self.auxv.len() as u64,
            auxv,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_through_the_abi_record() {
        let fields = MmFields {
            start_code: 1,
            end_code: 2,
            start_data: 3,
            end_data: 4,
            start_brk: 5,
            brk: 6,
            start_stack: 7,
            arg_start: 8,
            arg_end: 9,
            env_start: 10,
            env_end: 11,
            auxv: vec![6, 4096, 0, 0],
            exe_path: "/bin/x".into(),
        };
        let record = fields.to_abi().unwrap();
        assert_eq!(record.bounds(), fields.bounds(), "the module's prctl_mm_map order is the same");
        assert_eq!(record.auxv_words, 4);
        assert_eq!(MmFields::from_abi(&record, "/bin/x".into()).unwrap(), fields);
    }

    #[test]
    fn auxv_lengths_the_record_cannot_hold_are_refused() {
        let long = MmFields { auxv: vec![1; CRP_AUXV_WORDS + 2], ..MmFields::default() };
        assert!(long.to_abi().unwrap_err().to_string().contains("more than any kernel keeps"));
        let record = CrpMmState { auxv_words: CRP_AUXV_WORDS as u64 + 1, ..CrpMmState::default() };
        assert!(MmFields::from_abi(&record, String::new()).is_err());
    }
}
