//! Parsers for the /proc files several categories read (maps with VmFlags,
//! status fields, stat fields). They take text so they can be tested on
//! fixed samples, and have thin readers for a live pid.

/// One line of /proc/PID/smaps, with its VmFlags.
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
    /// when parsed from plain maps, which does not say.
    pub populated_kb: Option<u64>,
}

impl MapsEntry {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.vm_flags.iter().any(|present| present == flag)
    }

    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.name.starts_with('/')
    }
}

/// Parses /proc/PID/smaps (or /proc/PID/maps, then without flags).
pub fn parse_smaps(text: &str) -> Result<Vec<MapsEntry>, String> {
    let mut entries: Vec<MapsEntry> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        for key in ["Rss:", "Swap:"] {
            if let (Some(value), Some(last)) = (line.strip_prefix(key), entries.last_mut()) {
                let kilobytes = value.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
                *last.populated_kb.get_or_insert(0) += kilobytes;
            }
        }
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(last) = entries.last_mut() {
                last.vm_flags = flags.split_whitespace().map(str::to_owned).collect();
            }
            continue;
        }
        if first.ends_with(':') || first.is_empty() {
            continue;
        }
        entries.push(parse_maps_line(line)?);
    }
    Ok(entries)
}

fn parse_maps_line(line: &str) -> Result<MapsEntry, String> {
    let bad = || format!("malformed maps line: {line:?}");
    let mut fields = line.splitn(6, ' ');
    let range = fields.next().ok_or_else(bad)?;
    let perms = fields.next().ok_or_else(bad)?.as_bytes();
    let offset = fields.next().ok_or_else(bad)?;
    let device = fields.next().ok_or_else(bad)?;
    let inode = fields.next().ok_or_else(bad)?;
    let name = fields.next().unwrap_or("").trim_start().to_owned();
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let (major, minor) = device.split_once(':').ok_or_else(bad)?;
    let hex = |text: &str| u64::from_str_radix(text, 16).map_err(|_| bad());
    if perms.len() != 4 {
        return Err(bad());
    }
    Ok(MapsEntry {
        start: hex(start)?,
        end: hex(end)?,
        readable: perms[0] == b'r',
        writable: perms[1] == b'w',
        executable: perms[2] == b'x',
        shared: perms[3] == b's',
        offset: hex(offset)?,
        device: (
            u32::from_str_radix(major, 16).map_err(|_| bad())?,
            u32::from_str_radix(minor, 16).map_err(|_| bad())?,
        ),
        inode: inode.parse().map_err(|_| bad())?,
        name,
        vm_flags: Vec::new(),
        populated_kb: None,
    })
}

/// Reads and parses /proc/PID/smaps.
pub fn read_smaps(pid: i32) -> std::io::Result<Vec<MapsEntry>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    parse_smaps(&text).map_err(|reason| std::io::Error::new(std::io::ErrorKind::InvalidData, reason))
}

/// The value of `key:` in /proc/PID/status.
pub fn status_field(pid: i32, key: &str) -> std::io::Result<Option<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == key).then(|| value.trim().to_owned())
    }))
}

/// The fields of /proc/PID/stat after the command name, so that index 0 is
/// field 3 (`state`) of proc(5).
pub fn stat_fields(pid: i32) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = text.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    Ok(after_comm.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_smaps_with_flags_and_spaces_in_names() {
        let text = "\
55d0c1a2b000-55d0c1a2d000 r-xp 00001000 08:01 1234                       /usr/bin/my prog
Size:                  8 kB
Rss:                   4 kB
Swap:                  8 kB
VmFlags: rd ex mr mw me
7ffd1000-7ffd3000 rw-p 00000000 00:00 0                          [stack]
VmFlags: rd wr mr mw me gd ac
7f0000000000-7f0000001000 ---s 00000000 00:05 99 /dev/zero (deleted)
";
        let entries = parse_smaps(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].name, "/usr/bin/my prog");
        assert!(entries[0].executable && !entries[0].writable);
        assert_eq!(entries[0].offset, 0x1000);
        assert_eq!(entries[0].inode, 1234);
        assert!(entries[0].is_file());
        assert_eq!(entries[0].populated_kb, Some(12));
        assert_eq!(entries[1].populated_kb, None);
        assert!(entries[1].has_flag("gd"));
        assert_eq!(entries[1].name, "[stack]");
        assert!(entries[2].shared && !entries[2].readable);
        assert_eq!(entries[2].device, (0, 5));
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_smaps("zzzz-1 rw-p 0 0:0 0").is_err());
    }
}
