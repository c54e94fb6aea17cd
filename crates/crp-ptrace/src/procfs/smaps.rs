//! /proc/PID/smaps (and plain maps): one header line per mapping, then for
//! smaps its `Key: value` lines and `VmFlags`. What crp uses (the header,
//! `Rss`, `Swap`, `VmFlags`) is parsed strictly; other keys are skipped, as
//! new kernels add some.

use std::path::{Path, PathBuf};

use super::ProcError;

/// One mapping of /proc/PID/smaps, with its VmFlags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub shared: bool,
    pub offset: u64,
    pub device: (u32, u32),
    pub inode: u64,
    /// The path or pseudo-name (`[heap]`, `[vdso]`...); empty for anonymous.
    pub name: String,
    /// Two-letter VmFlags mnemonics (`gd`, `hg`, `mw`...).
    pub vm_flags: Vec<String>,
    /// Resident plus swapped-out kilobytes (smaps `Rss` + `Swap`); `None`
    /// when the text does not give both (plain maps does not say), and then
    /// the caller must assume pages may be there.
    pub populated_kb: Option<u64>,
}

impl MapsEntry {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.vm_flags.iter().any(|present| present == flag)
    }

    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.name.starts_with('/')
    }

    /// A mapping the kernel installs itself ([`is_special_mapping`]).
    pub fn is_special(&self) -> bool {
        is_special_mapping(&self.name)
    }
}

/// Names of mappings the kernel installs itself: never a VMA crp stores.
const SPECIAL_NAMES: &[&str] = &["[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]"];

/// Whether `name` is one of a mapping the kernel installs itself (the vDSO
/// block, [vsyscall], [uprobes]).
pub fn is_special_mapping(name: &str) -> bool {
    SPECIAL_NAMES.contains(&name)
}

/// Which file the text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapsFormat {
    /// /proc/PID/maps: header lines only.
    Maps,
    /// /proc/PID/smaps: every mapping must have its `Rss`, `Swap` and
    /// `VmFlags` lines (printed by every kernel since 3.8), or crp could
    /// not tell whether it has pages or is mlock()ed.
    Smaps,
}

/// A mapping being read, with the page counts seen so far.
struct Pending {
    entry: MapsEntry,
    header_line: usize,
    header: String,
    rss_kb: Option<u64>,
    swap_kb: Option<u64>,
    has_flags: bool,
}

impl Pending {
    fn finish(mut self, path: &Path, format: MapsFormat) -> Result<MapsEntry, ProcError> {
        if format == MapsFormat::Smaps {
            let missing =
                [(self.rss_kb.is_none(), "Rss"), (self.swap_kb.is_none(), "Swap"), (!self.has_flags, "VmFlags")];
            if let Some((_, key)) = missing.iter().find(|(missing, _)| *missing) {
                return Err(ProcError::Line {
                    path: path.to_owned(),
                    line: self.header_line,
                    text: self.header,
                    reason: format!("the mapping has no {key} line"),
                });
            }
        }
        self.entry.populated_kb = match (self.rss_kb, self.swap_kb) {
            (Some(rss), Some(swap)) => rss.checked_add(swap),
            // Without both counts nothing may be skipped: `None` makes the
            // caller walk the mapping's pagemap in full.
            _ => None,
        };
        Ok(self.entry)
    }
}

/// One line of the text, for error messages.
struct Line<'a> {
    path: &'a Path,
    number: usize,
    text: &'a str,
}

impl Line<'_> {
    fn error(&self, reason: impl Into<String>) -> ProcError {
        ProcError::Line {
            path: self.path.to_owned(),
            line: self.number,
            text: self.text.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Parses `text`, the contents of `path` (/proc/PID/smaps or maps).
pub fn parse_smaps(path: &Path, text: &str, format: MapsFormat) -> Result<Vec<MapsEntry>, ProcError> {
    let mut entries: Vec<MapsEntry> = Vec::new();
    let mut current: Option<Pending> = None;
    for (index, text) in text.lines().enumerate() {
        let line = Line { path, number: index + 1, text };
        let first = text.split_whitespace().next().ok_or_else(|| line.error("empty line"))?;
        let Some(key) = first.strip_suffix(':') else {
            if let Some(done) = current.take() {
                entries.push(done.finish(path, format)?);
            }
            let entry = parse_header(&line)?;
            current = Some(Pending {
                entry,
                header_line: line.number,
                header: text.to_owned(),
                rss_kb: None,
                swap_kb: None,
                has_flags: false,
            });
            continue;
        };
        let pending = current.as_mut().ok_or_else(|| line.error("a field before any mapping"))?;
        let value = text[first.len()..].trim();
        match key {
            "Rss" => set_once(&mut pending.rss_kb, kilobytes(&line, value)?, &line)?,
            "Swap" => set_once(&mut pending.swap_kb, kilobytes(&line, value)?, &line)?,
            "VmFlags" if pending.has_flags => return Err(line.error("a second time for the same mapping")),
            "VmFlags" => {
                pending.entry.vm_flags = vm_flags(&line, value)?;
                pending.has_flags = true;
            }
            // Counts and settings crp does not use (Size, Pss, THPeligible...).
            _ => {}
        }
    }
    if let Some(done) = current {
        entries.push(done.finish(path, format)?);
    }
    Ok(entries)
}

fn set_once(slot: &mut Option<u64>, value: u64, line: &Line<'_>) -> Result<(), ProcError> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(line.error("a second time for the same mapping")),
    }
}

/// `N kB`.
fn kilobytes(line: &Line<'_>, value: &str) -> Result<u64, ProcError> {
    let number = value.strip_suffix("kB").map(str::trim_end).ok_or_else(|| line.error("expected `N kB`"))?;
    number.parse().map_err(|_| line.error("expected `N kB`"))
}

/// Two-character mnemonics (`??` for bits the kernel has no name for).
fn vm_flags(line: &Line<'_>, value: &str) -> Result<Vec<String>, ProcError> {
    value
        .split_whitespace()
        .map(|flag| match flag.len() {
            2 => Ok(flag.to_owned()),
            _ => Err(line.error(format!("`{flag}` is not a two-letter flag"))),
        })
        .collect()
}

/// `start-end perms offset major:minor inode [name]`.
fn parse_header(line: &Line<'_>) -> Result<MapsEntry, ProcError> {
    let mut fields = line.text.splitn(6, ' ');
    let mut next = |what: &str| fields.next().ok_or_else(|| line.error(format!("no {what}")));
    let range = next("address range")?;
    let perms = next("permissions")?.as_bytes();
    let offset = next("offset")?;
    let device = next("device")?;
    let inode = next("inode")?;
    // An anonymous mapping has no name at all, not even the padding.
    let name = fields.next().map_or_else(String::new, |name| name.trim_start().to_owned());
    let (start, end) = range.split_once('-').ok_or_else(|| line.error("address range is not `start-end`"))?;
    let (major, minor) = device.split_once(':').ok_or_else(|| line.error("device is not `major:minor`"))?;
    let hex64 = |text: &str, what: &str| u64::from_str_radix(text, 16).map_err(|_| line.error(format!("bad {what}")));
    let hex32 = |text: &str, what: &str| u32::from_str_radix(text, 16).map_err(|_| line.error(format!("bad {what}")));
    let [read, write, execute, share] = perms else {
        return Err(line.error("permissions are not four characters"));
    };
    let flag = |found: &u8, set: u8, clear: u8| match *found {
        byte if byte == set => Ok(true),
        byte if byte == clear => Ok(false),
        _ => Err(line.error("bad permissions")),
    };
    let (start, end) = (hex64(start, "start address")?, hex64(end, "end address")?);
    if start >= end {
        return Err(line.error("empty or reversed address range"));
    }
    Ok(MapsEntry {
        start,
        end,
        readable: flag(read, b'r', b'-')?,
        writable: flag(write, b'w', b'-')?,
        executable: flag(execute, b'x', b'-')?,
        shared: flag(share, b's', b'p')?,
        offset: hex64(offset, "offset")?,
        device: (hex32(major, "device major")?, hex32(minor, "device minor")?),
        inode: inode.parse().map_err(|_| line.error("bad inode"))?,
        name,
        vm_flags: Vec::new(),
        populated_kb: None,
    })
}

/// Reads and parses /proc/PID/maps: the mappings alone, without the page
/// walk smaps makes (crp's own smaps walks the whole mapped image during a
/// restore: 3% of the CPU of restoring 1 GiB).
pub fn maps(pid: i32) -> Result<Vec<MapsEntry>, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/maps"));
    parse_smaps(&path, &super::read_text(&path)?, MapsFormat::Maps)
}

/// Reads and parses /proc/PID/smaps.
pub fn smaps(pid: i32) -> Result<Vec<MapsEntry>, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/smaps"));
    parse_smaps(&path, &super::read_text(&path)?, MapsFormat::Smaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/proc/123/smaps";

    /// Lenient about missing lines, as for plain maps, to test each check alone.
    fn parse(text: &str) -> Result<Vec<MapsEntry>, ProcError> {
        parse_smaps(Path::new(PATH), text, MapsFormat::Maps)
    }

    fn refusal(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_smaps_with_flags_and_spaces_in_names() {
        let text = "\
55d0c1a2b000-55d0c1a2d000 r-xp 00001000 08:01 1234                       /usr/bin/my prog
Size:                  8 kB
Rss:                   4 kB
Swap:                  8 kB
THPeligible:           0
VmFlags: rd ex mr mw me ??
7ffd1000-7ffd3000 rw-p 00000000 00:00 0                          [stack]
VmFlags: rd wr mr mw me gd ac
7f0000000000-7f0000001000 ---s 00000000 00:05 99 /dev/zero (deleted)
7f0000001000-7f0000002000 rw-p 00000000 00:00 0
Rss:                   0 kB
Swap:                  0 kB
";
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].name, "/usr/bin/my prog");
        assert!(entries[0].executable && !entries[0].writable);
        assert_eq!(entries[0].offset, 0x1000);
        assert_eq!(entries[0].inode, 1234);
        assert!(entries[0].is_file());
        assert_eq!(entries[0].populated_kb, Some(12));
        assert!(entries[0].has_flag("??"));
        assert_eq!(entries[1].populated_kb, None, "no counts: unknown, not empty");
        assert!(entries[1].has_flag("gd"));
        assert_eq!(entries[1].name, "[stack]");
        assert!(entries[2].shared && !entries[2].readable);
        assert_eq!(entries[2].device, (0, 5));
        assert_eq!(entries[3].name, "");
        assert_eq!(entries[3].populated_kb, Some(0));
    }

    #[test]
    fn rss_without_swap_is_not_a_count() {
        let entries = parse("1000-2000 rw-p 00000000 00:00 0\nRss: 0 kB\n").unwrap();
        assert_eq!(entries[0].populated_kb, None, "a missing Swap must not let the pages be skipped");
    }

    #[test]
    fn a_count_that_does_not_parse_is_refused_with_its_line() {
        let header = "1000-2000 rw-p 00000000 00:00 0\n";
        assert_eq!(
            refusal(&format!("{header}Size: 4 kB\nRss: x kB\n")),
            "cannot parse /proc/123/smaps line 3 `Rss: x kB`: expected `N kB`"
        );
        assert!(refusal(&format!("{header}Swap: 4\n")).contains("line 2 `Swap: 4`"));
        assert!(refusal(&format!("{header}Swap: -4 kB\n")).contains("line 2"));
        assert!(refusal(&format!("{header}Rss: 4 kB\nRss: 4 kB\n")).contains("line 3"));
        assert!(refusal(&format!("{header}Rss: 99999999999999999999 kB\n")).contains("line 2"));
    }

    #[test]
    fn smaps_must_give_counts_and_flags_for_every_mapping() {
        let header = "1000-2000 rw-p 00000000 00:00 0";
        let complete = format!("{header}\nRss: 4 kB\nSwap: 0 kB\nVmFlags: rd wr\n");
        let strict = |text: &str| parse_smaps(Path::new(PATH), text, MapsFormat::Smaps);
        assert_eq!(strict(&complete).unwrap()[0].populated_kb, Some(4));
        for (missing, key) in [("Rss: 4 kB\n", "Rss"), ("Swap: 0 kB\n", "Swap"), ("VmFlags: rd wr\n", "VmFlags")] {
            let text = format!("{}{complete}", complete.replace(missing, ""));
            let error = strict(&text).unwrap_err().to_string();
            assert_eq!(error, format!("cannot parse {PATH} line 1 `{header}`: the mapping has no {key} line"));
        }
        assert!(strict(&format!("{complete}VmFlags: rd\n")).unwrap_err().to_string().contains("line 5"));
    }

    #[test]
    fn fields_before_a_mapping_and_blank_lines_are_refused() {
        assert!(refusal("Rss: 4 kB\n").contains("line 1 `Rss: 4 kB`: a field before any mapping"));
        assert!(refusal("VmFlags: rd\n").contains("line 1"));
        assert!(refusal("1000-2000 rw-p 00000000 00:00 0\n\n").contains("line 2 ``: empty line"));
        assert!(refusal("1000-2000 rw-p 00000000 00:00 0\nVmFlags: rd w\n").contains("`w` is not a two-letter flag"));
    }

    #[test]
    fn malformed_headers_are_refused_with_their_line() {
        for (header, reason) in [
            ("zzzz-1 rw-p 0 0:0 0", "bad start address"),
            ("1000 rw-p 0 0:0 0", "address range is not `start-end`"),
            ("2000-1000 rw-p 0 0:0 0", "empty or reversed"),
            ("1000-2000 rw- 0 0:0 0", "permissions are not four characters"),
            ("1000-2000 rwqp 0 0:0 0", "bad permissions"),
            ("1000-2000 rw-x 0 0:0 0", "bad permissions"),
            ("1000-2000 rw-p zz 0:0 0", "bad offset"),
            ("1000-2000 rw-p 0 00 0", "device is not `major:minor`"),
            ("1000-2000 rw-p 0 0:g 0", "bad device minor"),
            ("1000-2000 rw-p 0 0:0 x", "bad inode"),
            ("1000-2000 rw-p 0 0:0", "no inode"),
        ] {
            let error = refusal(&format!("1000-2000 r--p 0 0:0 0\n{header}\n"));
            assert!(error.starts_with(&format!("cannot parse {PATH} line 2 `{header}`: ")), "{error}");
            assert!(error.contains(reason), "{header}: {error}");
        }
    }

    #[test]
    fn own_smaps_parse_with_counts_for_every_mapping() {
        let entries = smaps(std::process::id().cast_signed()).unwrap();
        assert!(entries.iter().any(|entry| entry.name == "[stack]"));
        assert!(entries.iter().all(|entry| entry.populated_kb.is_some()), "this kernel prints Rss and Swap");
    }

    #[test]
    fn own_maps_name_the_same_mappings_as_smaps_without_counts() {
        let pid = std::process::id().cast_signed();
        let entries = maps(pid).unwrap();
        assert!(entries.iter().any(|entry| entry.name == "[vdso]"));
        assert!(entries.iter().all(|entry| entry.populated_kb.is_none()));
        let special = |list: &[MapsEntry]| -> Vec<(u64, u64)> {
            list.iter().filter(|entry| entry.is_special()).map(|entry| (entry.start, entry.end)).collect()
        };
        assert_eq!(special(&entries), special(&smaps(pid).unwrap()));
    }
}
