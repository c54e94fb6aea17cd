//! The chain of parents of an incremental image: each parent is found (at
//! the path its child recorded, else beside its child under the same
//! name), opened and fully checked like any image (every checksum), and
//! must have the header checksum its child recorded; all before anything
//! is created. The memory the chain describes is each image's own runs,
//! and in its inherited ranges what its parent's chain holds there.

use std::path::{Path, PathBuf};

use crp_image::ImageReader;
use crp_ptrace::{EngineError, Pages, Tracee};

use crate::error::CrpError;
use crate::incremental::{ChainRecord, IncrementalError, PageRange, ParentLink};

/// The most parents a chain may have.
pub const MAX_LINKS: usize = 256;
const PAGE: u64 = 4096;

/// One parent of the chain, checked.
#[derive(Debug)]
pub struct Link {
    pub path: PathBuf,
    pub reader: ImageReader,
    pub chain: ChainRecord,
}

/// The parents of an image, nearest first (empty for a full image).
#[derive(Debug, Default)]
pub struct Chain {
    pub links: Vec<Link>,
}

impl Chain {
    /// Finds and checks every parent of the image at `path` (open as
    /// `reader`, whose record is `chain`).
    pub fn open(path: &Path, reader: &ImageReader, chain: &ChainRecord) -> Result<Self, CrpError> {
        check_inherited(path, chain, Some(reader))?;
        let mut links: Vec<Link> = Vec::new();
        let mut child = path.to_owned();
        let mut next = chain.parent.clone();
        while let Some(link) = next {
            if links.len() == MAX_LINKS {
                return Err(IncrementalError::ChainTooLong { child: path.to_owned(), max: MAX_LINKS }.into());
            }
            let (found, reader) = open_link(&child, &link)?;
            let image = crate::restore::validate::load_image(&reader)?;
            check_inherited(&found, &image.chain, Some(&reader))?;
            next = image.chain.parent.clone();
            links.push(Link { path: found.clone(), reader, chain: image.chain });
            child = found;
        }
        Ok(Self { links })
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// The memory of the image `reader` (whose record is `chain`) with its
    /// parents: pieces of page bytes by address, ascending, disjoint.
    pub fn pieces<'a>(&'a self, reader: &'a ImageReader, chain: &ChainRecord) -> Vec<(u64, &'a [u8])> {
        let mut below: Vec<(u64, &[u8])> = Vec::new();
        for link in self.links.iter().rev() {
            below = layer(&link.reader, &link.chain.inherited, &below);
        }
        layer(reader, &chain.inherited, &below)
    }
}

/// One image's memory: its runs, and `below` where it inherits.
fn layer<'a>(reader: &'a ImageReader, inherited: &[PageRange], below: &[(u64, &'a [u8])]) -> Vec<(u64, &'a [u8])> {
    let mut pieces: Vec<(u64, &[u8])> =
        reader.page_runs().iter().map(|run| (run.vaddr, reader.run_data(run))).collect();
    pieces.extend(clip(below, inherited));
    pieces.sort_unstable_by_key(|&(vaddr, _)| vaddr);
    pieces
}

/// The parts of `pieces` inside `ranges` (both ascending and disjoint).
fn clip<'a>(pieces: &[(u64, &'a [u8])], ranges: &[PageRange]) -> Vec<(u64, &'a [u8])> {
    let mut clipped = Vec::new();
    let mut index = 0;
    for range in ranges {
        let (start, end) = (range.vaddr, range.vaddr + range.page_count * PAGE);
        while index < pieces.len() && pieces[index].0 + pieces[index].1.len() as u64 <= start {
            index += 1;
        }
        let mut at = index;
        while let Some(&(vaddr, bytes)) = pieces.get(at) {
            if vaddr >= end {
                break;
            }
            let from = start.max(vaddr);
            let to = end.min(vaddr + bytes.len() as u64);
            if from < to {
                let offset = usize::try_from(from - vaddr).unwrap_or(0);
                let length = usize::try_from(to - from).unwrap_or(0);
                clipped.push((from, &bytes[offset..offset + length]));
            }
            at += 1;
        }
    }
    clipped
}

/// The parent `link` of `child`: at its recorded path, else under the same
/// name beside `child` (images moved together); the first that is the
/// very image recorded. Else why not: one there but another image (or
/// changed), one there but unreadable, none there.
fn open_link(child: &Path, link: &ParentLink) -> Result<(PathBuf, ImageReader), CrpError> {
    let recorded = PathBuf::from(&link.path);
    let beside = recorded.file_name().map(|name| child.parent().unwrap_or(Path::new(".")).join(name));
    let candidates = std::iter::once(recorded.clone()).chain(beside.filter(|beside| *beside != recorded));
    let (mut changed, mut unreadable, mut missing) = (None, None, None);
    for candidate in candidates {
        match ImageReader::open(&candidate) {
            Ok(reader) if reader.header().header_checksum == link.header_checksum => return Ok((candidate, reader)),
            Ok(reader) => {
                changed.get_or_insert(IncrementalError::ParentChanged {
                    path: candidate,
                    child: child.to_owned(),
                    found: reader.header().header_checksum,
                    expected: link.header_checksum,
                });
            }
            Err(crp_image::ImageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                missing.get_or_insert(crp_image::ImageError::Io { action: "open image", path: candidate, source });
            }
            Err(source) => {
                unreadable.get_or_insert(IncrementalError::ParentUnreadable { path: candidate, source });
            }
        }
    }
    let missing = || IncrementalError::ParentMissing {
        path: recorded.clone(),
        child: child.to_owned(),
        source: missing.unwrap_or(crp_image::ImageError::MalformedHeader { reason: "no path to look at".into() }),
    };
    Err(changed.or(unreadable).unwrap_or_else(missing).into())
}

/// An image's inherited ranges: only with a parent, ascending, disjoint,
/// and clear of its own runs.
fn check_inherited(path: &Path, chain: &ChainRecord, reader: Option<&ImageReader>) -> Result<(), CrpError> {
    let bad = |range: &PageRange, problem| IncrementalError::BadInherited {
        child: path.to_owned(),
        vaddr: range.vaddr,
        page_count: range.page_count,
        problem,
    };
    let mut previous_end = 0u64;
    for range in &chain.inherited {
        if chain.parent.is_none() {
            return Err(bad(range, "are named by an image without a parent").into());
        }
        let end = range.page_count.checked_mul(PAGE).and_then(|length| range.vaddr.checked_add(length));
        let Some(end) = end.filter(|_| range.page_count > 0 && range.vaddr % PAGE == 0) else {
            return Err(bad(range, "are empty, unaligned or wrap around").into());
        };
        if range.vaddr < previous_end {
            return Err(bad(range, "overlap or precede the previous range").into());
        }
        previous_end = end;
        let overlaps = reader.is_some_and(|reader| {
            reader.page_runs().iter().any(|run| run.vaddr < end && range.vaddr < run.vaddr_end())
        });
        if overlaps {
            return Err(bad(range, "overlap the image's own pages").into());
        }
    }
    Ok(())
}

/// The pages of a chain, as the memory kind writes them.
#[derive(Debug)]
pub struct ChainPages<'a>(pub Vec<(u64, &'a [u8])>);

impl Pages for ChainPages<'_> {
    fn runs(&self) -> Vec<(u64, u64)> {
        self.0.iter().map(|&(vaddr, bytes)| (vaddr, bytes.len() as u64 / PAGE)).collect()
    }

    fn write(&self, tracee: &mut dyn Tracee, wanted: &dyn Fn(u64) -> bool) -> Result<(), EngineError> {
        let pid = nix::unistd::Pid::from_raw(tracee.pid());
        super::memory::write_pieces(pid, self.0.iter().copied().filter(|&(vaddr, _)| wanted(vaddr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_exactly_the_bytes_inside_the_ranges() {
        let bytes: Vec<u8> = (0..8u8).flat_map(|page| [page; 4096]).collect();
        // Pages 0-3 at 0x10000 and pages 4-7 at 0x20000.
        let pieces = [(0x10000, &bytes[..4 * 4096]), (0x20000, &bytes[4 * 4096..])];
        let ranges = [
            PageRange { vaddr: 0x11000, page_count: 2 },
            PageRange { vaddr: 0x13000, page_count: 14 },
            PageRange { vaddr: 0x30000, page_count: 1 },
        ];
        let clipped = clip(&pieces, &ranges);
        let summary: Vec<(u64, usize, u8)> =
            clipped.iter().map(|&(vaddr, bytes)| (vaddr, bytes.len() / 4096, bytes[0])).collect();
        assert_eq!(summary, [(0x11000, 2, 1), (0x13000, 1, 3), (0x20000, 1, 4)]);
    }
}
