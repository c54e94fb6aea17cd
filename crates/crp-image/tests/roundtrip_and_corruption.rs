//! Round trips through real image files, and the promise that any corruption
//! (a flipped bit anywhere, any truncation) is refused without a panic.

use std::path::{Path, PathBuf};

use crp_image::{ImageError, ImageReader, ImageWriter, PAGE_SIZE, to_archive};
use proptest::prelude::*;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
struct Sample {
    name: String,
    values: Vec<u64>,
}

fn write_image(dir: &Path, runs: &[(u64, u64, u8)], sample: &Sample) -> PathBuf {
    let path = dir.join("sample.crp");
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

fn pattern_byte(position: u64) -> u8 {
    u8::try_from(position % 251).unwrap()
}

fn sample() -> Sample {
    Sample { name: "demo".into(), values: (0..100).collect() }
}

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

fn reference_image() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_image(dir.path(), &[(0x10000, 2, 3), (0x30000, 1, 4)], &sample());
    let bytes = std::fs::read(path).unwrap();
    (dir, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bit_flip_is_refused(bit in 0usize..usize::MAX) {
        let (dir, mut bytes) = reference_image();
        let bit = bit % (bytes.len() * 8);
        let header_len = std::mem::size_of::<crp_image::format::Header>();
        let header_block = usize::try_from(crp_image::format::HEADER_BLOCK).unwrap();
        let in_padding = (header_len..header_block).contains(&(bit / 8))
            || is_inter_section_padding(&bytes, bit / 8);
        // Bytes in the zero padding of the header block and between sections
        // carry no information; flipping them must still leave the image valid.
        bytes[bit / 8] ^= 1 << (bit % 8);
        let path = dir.path().join("flipped.crp");
        std::fs::write(&path, &bytes).unwrap();
        let result = ImageReader::open(&path);
        if in_padding {
            prop_assert!(result.is_ok());
        } else {
            prop_assert!(result.is_err(), "flip of bit {} accepted", bit);
        }
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

/// True when `offset` is zero padding between the page run table and the
/// metadata, which no checksum covers because it holds nothing.
fn is_inter_section_padding(bytes: &[u8], offset: usize) -> bool {
    let header_len = std::mem::size_of::<crp_image::format::Header>();
    let header: crp_image::format::Header = zerocopy::FromBytes::read_from_bytes(&bytes[..header_len]).unwrap();
    let runs = header.section(crp_image::SectionKind::PageRuns).unwrap();
    let metadata = header.section(crp_image::SectionKind::Metadata).unwrap();
    let offset = offset as u64;
    offset >= runs.offset + runs.length && offset < metadata.offset
}
