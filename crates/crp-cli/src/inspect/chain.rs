//! `crp inspect`'s summary of an image's place in a chain of incremental
//! dumps: each parent, whether it is there and is the image recorded, and
//! the change tracking the dump left armed. One serde type: `--json`
//! prints it as the `chain` field, the text form is rendered from it.

use std::fmt::Write;

use crp_image::ImageReader;
use serde::Serialize;

use crate::incremental::ChainRecord;

/// An image's chain: `None` in [`super::ImageSummary`] for an image that
/// neither has a parent nor left tracking armed.
#[derive(Debug, Serialize)]
pub struct ChainSummary {
    /// Bytes of page data the image itself stores.
    pub own_page_bytes: u64,
    /// Bytes of memory whose contents are its parent chain's.
    pub inherited_page_bytes: u64,
    /// The parents, nearest first, each found and checked against the
    /// identity recorded (empty when `broken` says why it cannot be).
    pub parents: Vec<ParentSummary>,
    /// Why the chain cannot be restored (a parent missing, or another
    /// image in its place), or `None`.
    pub broken: Option<String>,
    /// The change tracking the dump left armed in the process.
    pub tracking: Option<TrackingSummary>,
}

#[derive(Debug, Serialize)]
pub struct ParentSummary {
    /// Where it was found.
    pub path: String,
    /// Its header checksum, which matched the one its child recorded.
    pub header_checksum: String,
    pub own_page_bytes: u64,
    pub inherited_page_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct TrackingSummary {
    /// The userfaultfd's descriptor in the process.
    pub fd: i32,
    pub userfaultfd_inode: u64,
}

/// The chain of the image open as `reader`, whose record is `chain`, its
/// parents looked for (and checked) as a restore would.
pub fn summarize(reader: &ImageReader, chain: &ChainRecord) -> Option<ChainSummary> {
    if chain.parent.is_none() && chain.tracking.is_none() {
        return None;
    }
    let (parents, broken) = match crate::restore::chain::Chain::open(reader.path(), reader, chain) {
        Ok(links) => (
            links
                .links
                .iter()
                .map(|link| ParentSummary {
                    path: link.path.display().to_string(),
                    header_checksum: format!("{:#018x}", link.reader.header().header_checksum),
                    own_page_bytes: link.reader.page_bytes(),
                    inherited_page_bytes: inherited_bytes(&link.chain),
                })
                .collect(),
            None,
        ),
        Err(error) => (Vec::new(), Some(error.to_string())),
    };
    Some(ChainSummary {
        own_page_bytes: reader.page_bytes(),
        inherited_page_bytes: inherited_bytes(chain),
        parents,
        broken,
        tracking: chain.tracking.map(|tracking| TrackingSummary { fd: tracking.fd, userfaultfd_inode: tracking.inode }),
    })
}

fn inherited_bytes(chain: &ChainRecord) -> u64 {
    // Saturating: the counts come from the image, which may be hostile.
    chain
        .inherited
        .iter()
        .fold(0u64, |total, range| total.saturating_add(range.page_count))
        .saturating_mul(crp_image::PAGE_SIZE)
}

/// The chain section of the text output of the image at `path`.
pub fn render(out: &mut String, path: &str, chain: &ChainSummary) {
    let _ = writeln!(out, "\nchain");
    let _ = writeln!(
        out,
        "  this image        {path} ({} KiB of its own pages, {} KiB inherited)",
        chain.own_page_bytes / 1024,
        chain.inherited_page_bytes / 1024
    );
    for parent in &chain.parents {
        let _ = writeln!(
            out,
            "  parent            {} (header checksum {}: checked; {} KiB of its own pages, {} KiB inherited)",
            parent.path,
            parent.header_checksum,
            parent.own_page_bytes / 1024,
            parent.inherited_page_bytes / 1024
        );
    }
    if let Some(broken) = &chain.broken {
        let _ = writeln!(out, "  parent            cannot be restored: {broken}");
    }
    if let Some(tracking) = &chain.tracking {
        let _ = writeln!(
            out,
            "  tracking          left armed on fd {} (userfaultfd inode {}) by this dump",
            tracking.fd, tracking.userfaultfd_inode
        );
    }
}
