//! `crp inspect`: what an image holds, read from the archive in place.

use crp_image::ImageReader;
use serde::Serialize;

use crate::error::CrpError;
use crate::model::ProcessImage;

#[derive(Debug, Serialize)]
pub struct VmaSummary {
    pub start: String,
    pub end: String,
    pub permissions: String,
    pub backing: String,
    pub pages_stored: u64,
}

#[derive(Debug, Serialize)]
pub struct FdSummary {
    pub fd: i32,
    pub target: String,
    pub flags: String,
    pub offset: u64,
}

#[derive(Debug, Serialize)]
pub struct SectionSummary {
    pub kind: &'static str,
    pub offset: u64,
    pub length: u64,
    pub checksum: String,
}

/// The JSON form of `crp inspect --json`. Fields are only ever added.
#[derive(Debug, Serialize)]
pub struct ImageSummary {
    pub path: String,
    pub format_version: u32,
    pub rkyv_layout: String,
    pub sections: Vec<SectionSummary>,
    pub file_bytes: u64,
    pub page_bytes: u64,
    pub metadata_bytes: u64,
    pub page_runs: usize,
    pub pid: i32,
    pub comm: String,
    pub exe: String,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub armed_timers: Vec<String>,
    pub kernel_release: String,
    pub dumped_at_unix_seconds: u64,
    pub xsave_features: String,
    pub xsave_bytes: usize,
    pub registers: Vec<(String, String)>,
    pub vmas: Vec<VmaSummary>,
    pub files: Vec<FdSummary>,
    pub vdso: Vec<(String, String)>,
}

pub fn summarize(reader: &ImageReader) -> Result<ImageSummary, CrpError> {
    let archived = reader.metadata::<crate::model::ArchivedProcessImage>()?;
    // The summary reads a handful of fields; deserialising the metadata
    // (kilobytes) keeps this code on plain types. Pages are never copied.
    let image: ProcessImage = rkyv::deserialize::<ProcessImage, rkyv::rancor::Error>(archived)
        .map_err(|error| CrpError::InvalidImage { reason: error.to_string() })?;
    let runs = reader.page_runs();
    let vmas = image
        .vmas
        .iter()
        .map(|vma| VmaSummary {
            start: format!("{:#x}", vma.start),
            end: format!("{:#x}", vma.end),
            permissions: vma.protection_string(),
            backing: vma.describe_backing(),
            pages_stored: runs
                .iter()
                .filter(|run| run.vaddr >= vma.start && run.vaddr < vma.end)
                .map(|run| run.page_count)
                .sum(),
        })
        .collect();
    let files = image
        .files
        .iter()
        .map(|record| FdSummary {
            fd: record.fd,
            target: match &record.target {
                crp_compound::files::FdTarget::File { path } | crp_compound::files::FdTarget::CharDevice { path } => {
                    path.clone()
                }
                crp_compound::files::FdTarget::Inherited { stream } => {
                    format!("standard stream {stream} of crp restore")
                }
            },
            flags: format!("{:#o}", record.flags),
            offset: record.offset,
        })
        .collect();
    Ok(ImageSummary {
        path: reader.path().display().to_string(),
        format_version: reader.header().format_version,
        rkyv_layout: format!("{:#x}", reader.header().rkyv_layout),
        // Listed: the sections this image has (the header says which).
        sections: crp_image::SectionKind::ALL
            .iter()
            .filter_map(|kind| {
                reader.header().section(*kind).map(|entry| SectionSummary {
                    kind: kind.name(),
                    offset: entry.offset,
                    length: entry.length,
                    checksum: format!("{:#018x}", entry.checksum),
                })
            })
            .collect(),
        file_bytes: reader.file_length(),
        page_bytes: reader.page_bytes(),
        metadata_bytes: reader.metadata_bytes().len() as u64,
        page_runs: runs.len(),
        pid: image.pid,
        comm: image.task.comm.clone(),
        exe: image.mm.exe_path.clone(),
        cwd: image.task.cwd.clone(),
        uid: image.credentials.ids.uids[0],
        gid: image.credentials.ids.gids[0],
        armed_timers: image.timers.armed().map(str::to_owned).collect(),
        kernel_release: image.kernel_release.clone(),
        dumped_at_unix_seconds: image.dumped_at_unix_seconds,
        xsave_features: format!("{:#x}", image.cpu.xsave.enabled_features()),
        xsave_bytes: image.cpu.xsave.bytes.len(),
        registers: image.cpu.registers.named().map(|(name, value)| (name.to_owned(), format!("{value:#x}"))).collect(),
        vmas,
        files,
        vdso: image
            .vdso
            .mappings
            .iter()
            .map(|mapping| (mapping.name.clone(), format!("{:#x}-{:#x}", mapping.start, mapping.end)))
            .collect(),
    })
}

pub fn render_text(summary: &ImageSummary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let _ = writeln!(
        out,
        "image      {} (format v{}, rkyv layout {})",
        summary.path, summary.format_version, summary.rkyv_layout
    );
    for section in &summary.sections {
        let _ = writeln!(
            out,
            "section    {:<15} at {:#10x}, {:>12} bytes, xxh3 {}",
            section.kind, section.offset, section.length, section.checksum
        );
    }
    let _ = writeln!(
        out,
        "size       {:.1} MiB total, {:.1} MiB of pages in {} runs, {} bytes of metadata",
        mib(summary.file_bytes),
        mib(summary.page_bytes),
        summary.page_runs,
        summary.metadata_bytes
    );
    let _ = writeln!(out, "process    pid {} comm {:?}", summary.pid, summary.comm);
    let _ = writeln!(out, "exe        {}", summary.exe);
    let _ = writeln!(out, "cwd        {}", summary.cwd);
    let _ = writeln!(out, "user       uid {} gid {}", summary.uid, summary.gid);
    if !summary.armed_timers.is_empty() {
        let _ = writeln!(out, "timers     {}", summary.armed_timers.join(", "));
    }
    let _ = writeln!(out, "kernel     {} (dumped at unix {})", summary.kernel_release, summary.dumped_at_unix_seconds);
    let _ = writeln!(out, "xsave      features {} ({} bytes)", summary.xsave_features, summary.xsave_bytes);
    let _ = writeln!(out, "\nregisters");
    for chunk in summary.registers.chunks(3) {
        let line: Vec<String> = chunk.iter().map(|(name, value)| format!("{name:>8} {value:<18}")).collect();
        let _ = writeln!(out, "  {}", line.join(" "));
    }
    let _ = writeln!(out, "\nVMAs ({})", summary.vmas.len());
    let _ = writeln!(out, "  {:<33} {:<5} {:>8}  backing", "range", "perm", "pages");
    for vma in &summary.vmas {
        let _ = writeln!(
            out,
            "  {:<33} {:<5} {:>8}  {}",
            format!("{}-{}", vma.start, vma.end),
            vma.permissions,
            vma.pages_stored,
            vma.backing
        );
    }
    for (name, range) in &summary.vdso {
        let _ = writeln!(out, "  {range:<33} kernel special mapping {name}");
    }
    let _ = writeln!(out, "\nfiles ({})", summary.files.len());
    for file in &summary.files {
        let _ = writeln!(out, "  fd {:<3} {} (flags {}, offset {})", file.fd, file.target, file.flags, file.offset);
    }
    out
}
