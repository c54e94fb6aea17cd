//! Small real images for the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use crp_image::format::Header;
use crp_image::{ImageWriter, to_archive};
use zerocopy::{FromBytes, IntoBytes};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
pub struct Sample {
    pub name: String,
    pub values: Vec<u64>,
}

pub fn sample() -> Sample {
    Sample { name: "demo".into(), values: (0..100).collect() }
}

/// Writes `runs` (address, page count, fill byte) and `sample` to `dir/name`.
pub fn write_named_image(dir: &Path, name: &str, runs: &[(u64, u64, u8)], sample: &Sample) -> PathBuf {
    let path = dir.join(name);
    let mut writer = ImageWriter::create(&path).unwrap();
    for &(vaddr, page_count, fill_byte) in runs {
        writer
            .add_page_run(vaddr, page_count, |address, buffer| {
                for (index, byte) in buffer.iter_mut().enumerate() {
                    *byte = fill_byte ^ pattern_byte(address + index as u64);
                }
                Ok(())
            })
            .unwrap();
    }
    writer.finish(&to_archive(sample).unwrap()).unwrap()
}

pub fn write_image(dir: &Path, runs: &[(u64, u64, u8)], sample: &Sample) -> PathBuf {
    write_named_image(dir, "sample.crp", runs, sample)
}

pub fn pattern_byte(position: u64) -> u8 {
    u8::try_from(position % 251).unwrap()
}

/// A fresh directory and the bytes of an image with two runs and small
/// metadata (written once per test binary: writing fsyncs).
pub fn reference_image() -> (tempfile::TempDir, Vec<u8>) {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes = BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = write_image(dir.path(), &[(0x10000, 2, 3), (0x30000, 1, 4)], &sample());
        std::fs::read(path).unwrap()
    });
    (tempfile::tempdir().unwrap(), bytes.clone())
}

pub fn header_of(bytes: &[u8]) -> Header {
    Header::read_from_bytes(&bytes[..std::mem::size_of::<Header>()]).unwrap()
}

/// Changes the header with `change` and stores it with a correct checksum,
/// as a hostile or buggy writer would.
pub fn rewrite_header(bytes: &mut [u8], change: impl FnOnce(&mut Header)) {
    let mut header = header_of(bytes);
    change(&mut header);
    header.header_checksum = header.compute_checksum();
    bytes[..std::mem::size_of::<Header>()].copy_from_slice(header.as_bytes());
}
