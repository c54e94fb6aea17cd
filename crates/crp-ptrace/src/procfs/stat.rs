//! /proc/PID/stat: `pid (comm) state ...`, fields numbered as in proc(5).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::ProcError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    path: PathBuf,
    /// Fields 3 onwards (after the command name).
    after_comm: Vec<String>,
}

impl Stat {
    /// Parses `text`, the contents of `path`.
    pub fn parse(path: impl Into<PathBuf>, text: &str) -> Result<Self, ProcError> {
        let path = path.into();
        // The final newline is not part of any field; a sample may lack it.
        let line = text.strip_suffix('\n').unwrap_or(text);
        // The command name may hold spaces and `)`: it ends at the last `)`.
        let Some((_, rest)) = line.rsplit_once(')').filter(|(head, _)| head.contains(" (")) else {
            return Err(ProcError::Line { path, line: 1, text: line.to_owned(), reason: "no `(comm)` field".into() });
        };
        Ok(Self { path, after_comm: rest.split_whitespace().map(str::to_owned).collect() })
    }

    pub fn read(pid: i32) -> Result<Self, ProcError> {
        let path = PathBuf::from(format!("/proc/{pid}/stat"));
        Self::parse(&path, &super::read_text(&path)?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Field `number` of proc(5) (3 is `state`); fields 1 and 2 are not kept.
    pub fn field(&self, number: usize) -> Result<&str, ProcError> {
        number
            .checked_sub(3)
            .and_then(|index| self.after_comm.get(index))
            .map(String::as_str)
            .ok_or_else(|| ProcError::MissingField { path: self.path.clone(), field: number.to_string() })
    }

    /// Field `number` as a decimal number.
    pub fn number<T: FromStr>(&self, number: usize) -> Result<T, ProcError> {
        let value = self.field(number)?;
        value.parse().map_err(|_| ProcError::Field {
            path: self.path.clone(),
            field: number.to_string(),
            value: value.to_owned(),
            reason: "not a decimal number".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_numbered_as_in_proc5_even_with_parentheses_in_comm() {
        let stat = Stat::parse("/proc/7/stat", "7 (a) b (c)) S 1 7 7 0 -1 4194560 99\n").unwrap();
        assert_eq!(stat.field(3).unwrap(), "S");
        assert_eq!(stat.number::<i32>(4).unwrap(), 1);
        assert_eq!(stat.number::<u64>(10).unwrap(), 99);
    }

    #[test]
    fn missing_and_malformed_fields_are_named() {
        let stat = Stat::parse("/proc/7/stat", "7 (a) S 1\n").unwrap();
        assert_eq!(stat.field(26).unwrap_err().to_string(), "/proc/7/stat has no field 26");
        assert_eq!(stat.field(1).unwrap_err().to_string(), "/proc/7/stat has no field 1");
        assert_eq!(
            stat.number::<u64>(3).unwrap_err().to_string(),
            "cannot parse /proc/7/stat field 3 `S`: not a decimal number"
        );
    }

    #[test]
    fn text_without_a_comm_is_refused() {
        let error = Stat::parse("/proc/7/stat", "7 a S 1\n").unwrap_err().to_string();
        assert_eq!(error, "cannot parse /proc/7/stat line 1 `7 a S 1`: no `(comm)` field");
        assert!(Stat::parse("/proc/7/stat", "").is_err());
    }

    #[test]
    fn own_stat_reads() {
        let stat = Stat::read(std::process::id().cast_signed()).unwrap();
        assert_eq!(stat.field(3).unwrap().len(), 1, "a one-letter state");
        assert!(stat.number::<u64>(26).is_ok(), "start_code");
    }
}
