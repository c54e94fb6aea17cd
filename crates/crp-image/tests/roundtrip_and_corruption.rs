//! Round trips through real image files, and the promise that any corruption
//! (a flipped bit anywhere, any truncation) is refused without a panic.

mod common;

use common::{ArchivedSample, Sample, pattern_byte, reference_image, sample, write_image};
use crp_image::{ImageError, ImageReader, ImageWriter, PAGE_SIZE, validate_image};
use proptest::prelude::*;

#[test]
fn written_image_reads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let runs = [(0x10000, 3, 7u8), (0x40000, 1, 9), (0x7f00_0000_0000, 5, 1)];
    let path = write_image(dir.path(), &runs, &sample());
    let reader = ImageReader::open(&path).unwrap();
    assert_eq!(reader.page_runs().len(), 3);
    for (entry, &(vaddr, page_count, fill_byte)) in reader.page_runs().iter().zip(&runs) {
        assert_eq!(entry.vaddr, vaddr);
        assert_eq!(entry.page_count, page_count);
        let data = reader.run_data(entry);
        assert_eq!(data.len() as u64, page_count * PAGE_SIZE);
        assert_eq!(data[5], fill_byte ^ pattern_byte(vaddr + 5));
    }
    let archived = reader.metadata::<ArchivedSample>().unwrap();
    let back: Sample = rkyv::deserialize::<Sample, rkyv::rancor::Error>(archived).unwrap();
    assert_eq!(back, sample());
}

/// Regression: an image with no pages and empty metadata was shorter than
/// its header said, and its own reader refused it as truncated.
#[test]
fn empty_image_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.crp");
    ImageWriter::create(&path).unwrap().finish(&[]).unwrap();
    let reader = ImageReader::open(&path).unwrap();
    assert!(reader.page_runs().is_empty());
    assert!(reader.metadata_bytes().is_empty());
}

#[test]
fn image_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = write_image(dir.path(), &[(0x1000, 1, 0)], &sample());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn foreign_file_is_named_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    assert!(matches!(ImageReader::open(&path), Err(ImageError::NotAnImage { .. })));
}

#[test]
fn newer_version_is_refused_as_newer() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_image(dir.path(), &[(0x1000, 1, 0)], &sample());
    let mut bytes = std::fs::read(&path).unwrap();
    // Bump the version and fix the header checksum, as a newer crp would write it.
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    let header_len = std::mem::size_of::<crp_image::format::Header>();
    let mut header: crp_image::format::Header = zerocopy::FromBytes::read_from_bytes(&bytes[..header_len]).unwrap();
    header.header_checksum = header.compute_checksum();
    bytes[..header_len].copy_from_slice(zerocopy::IntoBytes::as_bytes(&header));
    std::fs::write(&path, &bytes).unwrap();
    let error = ImageReader::open(&path).unwrap_err();
    assert!(matches!(error, ImageError::NewerVersion { found: 99, .. }), "{error}");
    assert!(error.to_string().contains("newer"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Through real files; [`every_changed_byte_is_refused`] covers every
    /// offset in memory.
    #[test]
    fn any_bit_flip_is_refused(bit in 0usize..usize::MAX) {
        let (dir, mut bytes) = reference_image();
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let path = dir.path().join("flipped.crp");
        std::fs::write(&path, &bytes).unwrap();
        prop_assert!(ImageReader::open(&path).is_err(), "flip of bit {} accepted", bit);
    }

    #[test]
    fn any_truncation_is_refused(keep in 0usize..usize::MAX) {
        let (dir, bytes) = reference_image();
        let keep = keep % bytes.len();
        let path = dir.path().join("truncated.crp");
        std::fs::write(&path, &bytes[..keep]).unwrap();
        prop_assert!(ImageReader::open(&path).is_err());
    }

    #[test]
    fn appended_garbage_is_refused(extra in proptest::collection::vec(any::<u8>(), 1..64)) {
        let (dir, mut bytes) = reference_image();
        bytes.extend_from_slice(&extra);
        let path = dir.path().join("longer.crp");
        std::fs::write(&path, &bytes).unwrap();
        prop_assert!(ImageReader::open(&path).is_err());
    }
}

/// Every byte of an image is covered by a checksum or must be zero: changing
/// any one of them, in any of these ways, is refused with an error (the
/// padding of the header block and the gap before the metadata included).
#[test]
fn every_changed_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let small = Sample { name: "s".into(), values: vec![1, 2] };
    let path = write_image(dir.path(), &[(0x10000, 1, 3), (0x30000, 1, 4)], &small);
    let bytes = std::fs::read(path).unwrap();
    validate_image(&bytes).unwrap();
    let mut changed = bytes.clone();
    for offset in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            changed[offset] ^= mask;
            assert!(validate_image(&changed).is_err(), "byte {offset:#x} ^ {mask:#04x} accepted");
            changed[offset] = bytes[offset];
        }
    }
}

/// The in-memory check and the file reader agree.
#[test]
fn validate_image_accepts_what_the_writer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_image(dir.path(), &[(0x10000, 3, 7), (0x40000, 1, 9)], &sample());
    validate_image(&std::fs::read(&path).unwrap()).unwrap();
    ImageReader::open(&path).unwrap();
}
