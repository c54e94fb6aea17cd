//! `key: value` files: /proc/PID/status, /proc/PID/fdinfo/FD. Every line
//! must have a key; values are parsed on request, and a missing or
//! malformed one is an error naming the file and the field.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::ProcError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    path: PathBuf,
    /// `(key, value)` in file order, the value trimmed.
    entries: Vec<(String, String)>,
}

impl Fields {
    /// Parses `text`, the contents of `path`.
    pub fn parse(path: impl Into<PathBuf>, text: &str) -> Result<Self, ProcError> {
        let path = path.into();
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let Some((key, value)) = line.split_once(':').filter(|(key, _)| !key.trim().is_empty()) else {
                return Err(ProcError::Line {
                    path,
                    line: index + 1,
                    text: line.to_owned(),
                    reason: "expected `key: value`".into(),
                });
            };
            entries.push((key.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(Self { path, entries })
    }

    /// Reads and parses `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ProcError> {
        let path = path.as_ref();
        Self::parse(path, &super::read_text(path)?)
    }

    /// /proc/PID/status.
    pub fn status(pid: i32) -> Result<Self, ProcError> {
        Self::read(format!("/proc/{pid}/status"))
    }

    /// /proc/PID/task/TID/status: one thread's own view (its blocked and
    /// pending signals, seccomp mode, credentials).
    pub fn status_of_thread(pid: i32, tid: i32) -> Result<Self, ProcError> {
        Self::read(format!("/proc/{pid}/task/{tid}/status"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of `key`, which must be there.
    pub fn field(&self, key: &str) -> Result<&str, ProcError> {
        self.optional(key).ok_or_else(|| ProcError::MissingField { path: self.path.clone(), field: key.to_owned() })
    }

    /// The value of `key`, or `None` when the file has no such line. Only
    /// for fields a kernel may lack for a reason that makes their absence
    /// mean something definite (the caller says what).
    pub fn optional(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    /// Every line whose key is `key`, in file order (fdinfo's `lock:`).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries.iter().filter(move |(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    /// An error about the value of `key`.
    pub fn malformed(&self, key: &str, value: &str, reason: impl Into<String>) -> ProcError {
        ProcError::Field {
            path: self.path.clone(),
            field: key.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    /// `key` as a decimal number.
    pub fn decimal<T: FromStr>(&self, key: &str) -> Result<T, ProcError> {
        let value = self.field(key)?;
        value.parse().map_err(|_| self.malformed(key, value, "not a decimal number"))
    }

    /// `key` as a hexadecimal mask (SigPnd, CapEff...).
    pub fn hex(&self, key: &str) -> Result<u64, ProcError> {
        self.radix(key, 16, "not a hexadecimal mask")
    }

    /// `key` as an octal number (Umask, fdinfo `flags`).
    pub fn octal(&self, key: &str) -> Result<u64, ProcError> {
        self.radix(key, 8, "not an octal number")
    }

    fn radix(&self, key: &str, radix: u32, reason: &str) -> Result<u64, ProcError> {
        let value = self.field(key)?;
        u64::from_str_radix(value, radix).map_err(|_| self.malformed(key, value, reason))
    }

    /// `key` as a whitespace-separated list of decimal numbers (Uid,
    /// Groups); an empty value is an empty list.
    pub fn decimals<T: FromStr>(&self, key: &str) -> Result<Vec<T>, ProcError> {
        let value = self.field(key)?;
        value
            .split_whitespace()
            .map(|item| {
                item.parse().map_err(|_| self.malformed(key, value, format!("`{item}` is not a decimal number")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsub ject\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t123\nUid:\t0\t0\t0\t0\n\
        Groups:\t\nSigPnd:\t0000000000000100\nlock:\t1: FLOCK\nlock:\t2: POSIX\n";

    #[test]
    fn good_fields_parse() {
        let fields = Fields::parse("/proc/123/status", STATUS).unwrap();
        assert_eq!(fields.field("Name").unwrap(), "sub ject");
        assert_eq!(fields.field("State").unwrap(), "S (sleeping)");
        assert_eq!(fields.octal("Umask").unwrap(), 0o22);
        assert_eq!(fields.decimal::<i32>("Tgid").unwrap(), 123);
        assert_eq!(fields.decimals::<u32>("Uid").unwrap(), vec![0, 0, 0, 0]);
        assert_eq!(fields.decimals::<u32>("Groups").unwrap(), Vec::<u32>::new());
        assert_eq!(fields.hex("SigPnd").unwrap(), 0x100);
        assert_eq!(fields.all("lock").collect::<Vec<_>>(), vec!["1: FLOCK", "2: POSIX"]);
        assert_eq!(fields.optional("Seccomp"), None);
    }

    #[test]
    fn a_line_without_a_key_is_refused_with_its_number() {
        let error = Fields::parse("/proc/123/status", "Name:\tx\ngarbage\n").unwrap_err();
        assert_eq!(error.to_string(), "cannot parse /proc/123/status line 2 `garbage`: expected `key: value`");
        assert!(Fields::parse("/proc/123/status", ": value\n").is_err());
    }

    #[test]
    fn missing_and_malformed_fields_are_named() {
        let fields = Fields::parse("/proc/123/status", STATUS).unwrap();
        assert_eq!(fields.field("SigBlk").unwrap_err().to_string(), "/proc/123/status has no field SigBlk");
        let error = fields.hex("Name").unwrap_err();
        assert_eq!(error.to_string(), "cannot parse /proc/123/status field Name `sub ject`: not a hexadecimal mask");
        let error = fields.decimals::<u32>("State").unwrap_err().to_string();
        assert!(error.contains("field State") && error.contains("`S` is not a decimal number"), "{error}");
        assert!(fields.decimal::<i32>("Umask").is_ok());
        assert!(fields.octal("Tgid").is_ok());
        assert!(Fields::parse("/x", "Umask:\t0089\n").unwrap().octal("Umask").is_err());
    }

    #[test]
    fn unreadable_file_is_named() {
        let error = Fields::read("/proc/self/no-such-file").unwrap_err();
        assert!(error.is_not_found());
        assert!(error.to_string().starts_with("cannot read /proc/self/no-such-file: "), "{error}");
    }
}
