//! The on-disk layout: header, section table and page run table.
//!
//! Everything here is `#[repr(C)]` with explicit padding so that zerocopy can
//! read it straight out of the mapped file.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of one page of process memory as stored in the image.
pub const PAGE_SIZE: u64 = 4096;
/// The header occupies the first block of the file; page data starts after it.
pub const HEADER_BLOCK: u64 = PAGE_SIZE;
/// First eight bytes of every image.
pub const MAGIC: [u8; 8] = *b"CRPIMG\0\0";
/// The metadata schema and layout this build writes and reads. Bump on any
/// change of an archived type: rkyv has no schema evolution.
pub const FORMAT_VERSION: u32 = 6;
/// The rkyv major/minor whose archive layout the metadata uses (0.8).
pub const RKYV_LAYOUT: u32 = 0x0000_0008;
/// Number of slots in the section table.
pub const MAX_SECTIONS: usize = 4;

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SectionKind {
    /// The rkyv archive of the process metadata.
    Metadata = 1,
    /// The table of [`PageRunEntry`] records.
    PageRuns = 2,
    /// The page contents, page-aligned.
    PageData = 3,
}

impl SectionKind {
    /// Every section, in the order of the section table (slots 0, 1, 2):
    /// the writer writes this order and the reader accepts no other.
    pub const ALL: [SectionKind; 3] = [Self::Metadata, Self::PageRuns, Self::PageData];

    pub fn name(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::PageRuns => "page run table",
            Self::PageData => "page data",
        }
    }
}

/// One slot of the section table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SectionEntry {
    pub kind: u32,
    /// Always 0.
    pub reserved: u32,
    pub offset: u64,
    pub length: u64,
    /// xxh3-64 of the section's bytes; for page data, of the run checksums.
    pub checksum: u64,
}

/// The fixed header at offset 0. The rest of the first [`HEADER_BLOCK`]
/// bytes is zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Header {
    pub magic: [u8; 8],
    pub format_version: u32,
    pub rkyv_layout: u32,
    /// No flags are defined: always 0.
    pub flags: u32,
    /// Always 3; the unused slot is all zero.
    pub section_count: u32,
    pub file_length: u64,
    pub sections: [SectionEntry; MAX_SECTIONS],
    /// xxh3-64 of the header with this field set to zero.
    pub header_checksum: u64,
}

impl Header {
    pub fn compute_checksum(&self) -> u64 {
        let mut copy = *self;
        copy.header_checksum = 0;
        checksum(copy.as_bytes())
    }

    pub fn section(&self, kind: SectionKind) -> Option<&SectionEntry> {
        let used = usize::try_from(self.section_count).unwrap_or(usize::MAX);
        self.sections.iter().take(used.min(MAX_SECTIONS)).find(|entry| entry.kind == kind as u32)
    }
}

/// One contiguous run of stored pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PageRunEntry {
    /// Virtual address of the first page in the checkpointed process.
    pub vaddr: u64,
    pub page_count: u64,
    /// File offset of the run's first byte; page-aligned.
    pub data_offset: u64,
    /// xxh3-64 of the run's bytes.
    pub checksum: u64,
}

impl PageRunEntry {
    pub fn byte_len(&self) -> u64 {
        self.page_count.saturating_mul(PAGE_SIZE)
    }

    pub fn vaddr_end(&self) -> u64 {
        self.vaddr.saturating_add(self.byte_len())
    }
}

/// The checksum used everywhere in the image.
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Rounds `value` up to the next multiple of the page size.
pub fn page_align_up(value: u64) -> u64 {
    value.div_ceil(PAGE_SIZE) * PAGE_SIZE
}
