//! What /proc says about one process, read once per dump after the freeze,
//! so that the kinds of state read it from one place (and unit tests can
//! hand them a snapshot made from text).

use std::path::PathBuf;

use std::sync::Arc;

use super::{Fields, MapsEntry, ProcError, Stat, read_text};

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub pid: i32,
    pub status: Fields,
    pub stat: Stat,
    /// /proc/PID/comm, newline included.
    pub comm: String,
    /// /proc/PID/personality, newline included.
    pub personality: String,
    /// /proc/PID/auxv, raw.
    pub auxv: Vec<u8>,
    /// Where /proc/PID/cwd and /proc/PID/exe point.
    pub cwd: String,
    pub exe: String,
    /// /proc/PID/oom_score_adj, newline included.
    pub oom_score_adj: String,
    /// /proc/PID/coredump_filter (hexadecimal), newline included.
    pub coredump_filter: String,
    /// /proc/PID/loginuid (decimal, 4294967295 when unset); empty on a
    /// kernel without audit.
    pub loginuid: String,
    /// /proc/PID/timers: the process's POSIX timers.
    pub timers: String,
    /// Every descriptor whose /proc/PID/fdinfo lists file locks (empty
    /// when made from texts).
    pub descriptor_locks: Vec<DescriptorLocks>,
    /// /proc/PID/smaps, in address order (empty when made from texts; a
    /// test sets it). Shared by the snapshots of the process's threads.
    pub maps: Arc<[MapsEntry]>,
}

/// The `lock:` lines of one descriptor's /proc/PID/fdinfo (the locks of
/// its file the process or that open file description holds) and where
/// /proc/PID/fd says it points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorLocks {
    pub fd: u64,
    pub path: String,
    /// Each line after `lock:`, trimmed: `1: POSIX  ADVISORY  WRITE 42 fe:00:77 0 EOF`.
    pub lines: Vec<String>,
}

/// The descriptors of `pid` that hold locks, by number.
fn descriptor_locks(pid: i32) -> Result<Vec<DescriptorLocks>, ProcError> {
    let directory = PathBuf::from(format!("/proc/{pid}/fdinfo"));
    let entries =
        std::fs::read_dir(&directory).map_err(|source| ProcError::Read { path: directory.clone(), source })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ProcError::Read { path: directory.clone(), source })?;
        let Some(fd) = entry.file_name().to_str().and_then(|name| name.parse::<u64>().ok()) else {
            continue;
        };
        let lines: Vec<String> = read_text(&entry.path())?
            .lines()
            .filter_map(|line| line.strip_prefix("lock:"))
            .map(|line| line.trim().to_owned())
            .collect();
        if lines.is_empty() {
            continue;
        }
        let link = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
        let path = std::fs::read_link(&link)
            .map(|target| target.to_string_lossy().into_owned())
            .map_err(|source| ProcError::Read { path: link, source })?;
        found.push(DescriptorLocks { fd, path, lines });
    }
    found.sort_by_key(|locks| locks.fd);
    Ok(found)
}

/// The texts a [`Snapshot`] is made of, for [`Snapshot::parse`].
#[derive(Debug, Clone, Copy)]
pub struct Texts<'a> {
    pub status: &'a str,
    pub stat: &'a str,
    pub comm: &'a str,
    pub personality: &'a str,
    pub auxv: &'a [u8],
    pub cwd: &'a str,
    pub exe: &'a str,
    pub oom_score_adj: &'a str,
    pub coredump_filter: &'a str,
    pub loginuid: &'a str,
    pub timers: &'a str,
}

impl Snapshot {
    /// What /proc says of the thread `tid` of the process `self` was read
    /// of: its own status, stat, comm and personality
    /// (/proc/PID/task/TID), the rest the process's.
    pub fn of_thread(&self, tid: i32) -> Result<Self, ProcError> {
        let file = |name: &str| PathBuf::from(format!("/proc/{}/task/{tid}/{name}", self.pid));
        let stat_path = file("stat");
        Ok(Self {
            pid: tid,
            status: Fields::read(file("status"))?,
            stat: Stat::parse(&stat_path, &read_text(&stat_path)?)?,
            comm: read_text(&file("comm"))?,
            personality: read_text(&file("personality"))?,
            ..self.clone()
        })
    }

    /// A snapshot of `pid` made from texts (tests, replays).
    pub fn parse(pid: i32, texts: Texts<'_>) -> Result<Self, ProcError> {
        Ok(Self {
            pid,
            status: Fields::parse(format!("/proc/{pid}/status"), texts.status)?,
            stat: Stat::parse(format!("/proc/{pid}/stat"), texts.stat)?,
            comm: texts.comm.to_owned(),
            personality: texts.personality.to_owned(),
            auxv: texts.auxv.to_vec(),
            cwd: texts.cwd.to_owned(),
            exe: texts.exe.to_owned(),
            oom_score_adj: texts.oom_score_adj.to_owned(),
            coredump_filter: texts.coredump_filter.to_owned(),
            loginuid: texts.loginuid.to_owned(),
            timers: texts.timers.to_owned(),
            descriptor_locks: Vec::new(),
            maps: Arc::new([]),
        })
    }

    /// What /proc says of `pid`, its memory map `maps` read already (the
    /// dump reads it first, to check it).
    pub fn read(pid: i32, maps: Vec<MapsEntry>) -> Result<Self, ProcError> {
        let file = |name: &str| PathBuf::from(format!("/proc/{pid}/{name}"));
        let link = |name: &str| {
            let path = file(name);
            std::fs::read_link(&path)
                .map(|target| target.to_string_lossy().into_owned())
                .map_err(|source| ProcError::Read { path, source })
        };
        let auxv_path = file("auxv");
        Ok(Self {
            pid,
            status: Fields::status(pid)?,
            stat: Stat::read(pid)?,
            comm: read_text(&file("comm"))?,
            personality: read_text(&file("personality"))?,
            auxv: std::fs::read(&auxv_path).map_err(|source| ProcError::Read { path: auxv_path, source })?,
            cwd: link("cwd")?,
            exe: link("exe")?,
            oom_score_adj: read_text(&file("oom_score_adj"))?,
            coredump_filter: read_text(&file("coredump_filter"))?,
            loginuid: match read_text(&file("loginuid")) {
                Err(ProcError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => String::new(),
                other => other?,
            },
            timers: read_text(&file("timers"))?,
            descriptor_locks: descriptor_locks(pid)?,
            maps: maps.into(),
        })
    }
}
