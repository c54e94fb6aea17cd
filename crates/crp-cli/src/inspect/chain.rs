//! `crp inspect`'s lines on an image's place in a chain of incremental
//! dumps: each parent, whether it is there and is the image recorded, and
//! the change tracking the dump left armed.

use std::fmt::Write;
use std::path::Path;

use crp_image::ImageReader;

use crate::error::CrpError;
use crate::incremental::ChainRecord;
use crate::model::ArchivedProcessImage;

/// The chain section of the text output (empty for an image of no chain).
pub fn render(path: &Path, reader: &ImageReader) -> Result<String, CrpError> {
    let archived = reader.metadata::<ArchivedProcessImage>()?;
    let chain: ChainRecord = rkyv::deserialize::<ChainRecord, rkyv::rancor::Error>(&archived.chain)
        .map_err(|error| CrpError::InvalidImage { reason: error.to_string() })?;
    let mut out = String::new();
    if chain.parent.is_none() && chain.tracking.is_none() {
        return Ok(out);
    }
    let _ = writeln!(out, "\nchain");
    let pages = |chain: &ChainRecord| chain.inherited.iter().map(|range| range.page_count).sum::<u64>();
    let _ = writeln!(
        out,
        "  this image        {} ({} KiB of its own pages, {} KiB inherited)",
        path.display(),
        reader.page_bytes() / 1024,
        pages(&chain) * 4
    );
    match crate::restore::chain::Chain::open(path, reader, &chain) {
        Ok(links) => {
            for link in &links.links {
                let _ = writeln!(
                    out,
                    "  parent            {} (header checksum {:#018x}: checked; {} KiB of its own pages, {} KiB \
                     inherited)",
                    link.path.display(),
                    link.reader.header().header_checksum,
                    link.reader.page_bytes() / 1024,
                    pages(&link.chain) * 4
                );
            }
        }
        Err(error) => {
            let _ = writeln!(out, "  parent            cannot be restored: {error}");
        }
    }
    if let Some(tracking) = chain.tracking {
        let _ = writeln!(
            out,
            "  tracking          left armed on fd {} (userfaultfd inode {}) by this dump",
            tracking.fd, tracking.inode
        );
    }
    Ok(out)
}
