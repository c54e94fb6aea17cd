//! Seeded mutation fuzzing of the image reader and everything `crp restore`
//! and `crp inspect` do with an image before a child exists. A
//! coverage-guided fuzzer (cargo-fuzz) needs a nightly toolchain, which
//! the project's machines do not have; this runs on stable, in CI.
//!
//! Inputs come from the committed corpus (`tests/corpus/*.crp`, small
//! images made by `CRP_FUZZ_REGENERATE_CORPUS=1`), mutated at four levels:
//! raw file bytes; file bytes with every checksum recomputed (`reseal`),
//! so the mutation reaches the archive and the values behind it; header
//! and run-table fields, resealed; and the metadata archive rewritten
//! through the image writer. A fixed seed runs first, then
//! `CRP_FUZZ_SEED` (if set); `CRP_FUZZ_SECONDS` bounds the time (default
//! 20), after a fixed minimum of iterations, so the verdict never depends
//! on the machine's speed: it fails only on a panic or a late refusal,
//! with the seed, the iteration and the input saved for
//! `CRP_FUZZ_REPLAY=FILE`.

mod fuzz_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fuzz_support::bytes::{fix_file_length, metadata_range, mutate_bytes, mutate_structure, reseal};
use fuzz_support::images::{self, valid_image};
use fuzz_support::mutate::{MUTATIONS, mutate_value};
use fuzz_support::rng::Rng;
use fuzz_support::{Outcome, pipeline_without_panic};

const FIXED_SEED: u64 = 0x00c0_ffee_5eed;
/// Iterations every run makes whatever the clock says.
const MINIMUM_ITERATIONS: u64 = 300;
const DEFAULT_SECONDS: u64 = 20;

fn corpus_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<_> = std::fs::read_dir(corpus_directory())
        .expect("tests/corpus exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "crp"))
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap()))
        .collect();
    entries.sort();
    entries
}

fn work_directory() -> PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join("crp-fuzz");
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// One mutated input, made from corpus entry bytes by the level `rng` picks.
fn mutated_input(original: &[u8], rng: &mut Rng, scratch: &Path) -> Vec<u8> {
    let mut bytes = original.to_vec();
    match rng.below(5) {
        0 => {
            // Raw bytes: mostly stopped by the checksums and header checks.
            mutate_bytes(&mut bytes, rng, 0);
            if rng.chance(2) {
                fix_file_length(&mut bytes);
            }
        }
        1 => {
            mutate_bytes(&mut bytes, rng, 8);
            fix_file_length(&mut bytes);
            reseal(&mut bytes);
        }
        2 => {
            mutate_structure(&mut bytes, rng);
            reseal(&mut bytes);
        }
        3 => {
            // The archive alone, rewritten with correct checksums.
            if let Some(range) = metadata_range(&bytes) {
                let mut archive = bytes[range].to_vec();
                for _ in 0..1 + rng.below(3) {
                    mutate_bytes(&mut archive, rng, 0);
                }
                let path = scratch.join("archive.crp");
                if images::write_archive(&path, &archive, &vec![(images::HEAP, 1, 0xa5)]).is_ok() {
                    bytes = std::fs::read(&path).unwrap();
                }
            }
        }
        _ => {
            // Decoded values, re-encoded: the base image with hostile fields.
            let (mut image, mut runs) = valid_image(rng.chance(2));
            for _ in 0..1 + rng.below(3) {
                let which = rng.below(MUTATIONS);
                mutate_value(&mut image, &mut runs, rng, which);
            }
            let path = scratch.join("values.crp");
            if images::write_image(&path, &image, &runs).is_ok() {
                bytes = std::fs::read(&path).unwrap();
            }
        }
    }
    bytes
}

/// Runs one seed; returns (iterations, refused, accepted) or the failure.
fn fuzz_seed(seed: u64, deadline: Instant, corpus: &[(String, Vec<u8>)]) -> Result<(u64, u64, u64), String> {
    let directory = work_directory();
    let input = directory.join(format!("current-{seed:x}.crp"));
    let mut rng = Rng::new(seed);
    let (mut refused, mut accepted) = (0, 0);
    let mut iteration = 0;
    while iteration < MINIMUM_ITERATIONS || Instant::now() < deadline {
        let (name, original) = &corpus[rng.index(corpus.len())];
        let bytes = mutated_input(original, &mut rng, &directory);
        std::fs::write(&input, &bytes).unwrap();
        match pipeline_without_panic(&input) {
            Ok(Outcome::Refused(_)) => refused += 1,
            Ok(Outcome::Accepted) => accepted += 1,
            Err(failure) => {
                let saved = directory.join(format!("failure-{seed:x}-{iteration}.crp"));
                std::fs::copy(&input, &saved).unwrap();
                return Err(format!(
                    "seed {seed:#x}, iteration {iteration}, from corpus {name}: {failure}\n\
                     input saved to {} (replay: CRP_FUZZ_REPLAY={} cargo test -p crp-cli --test image_fuzz)",
                    saved.display(),
                    saved.display()
                ));
            }
        }
        iteration += 1;
    }
    Ok((iteration, refused, accepted))
}

#[test]
fn mutated_images_are_refused_or_accepted_never_panic_nor_refused_late() {
    if let Some(replay) = std::env::var_os("CRP_FUZZ_REPLAY") {
        let outcome = pipeline_without_panic(Path::new(&replay));
        assert!(outcome.is_ok(), "{}: {}", Path::new(&replay).display(), outcome.unwrap_err());
        return;
    }
    let corpus = corpus();
    assert!(corpus.len() >= 2, "the corpus is missing: regenerate it (see corpus_is_current)");
    let seconds = std::env::var("CRP_FUZZ_SECONDS").ok().and_then(|text| text.parse().ok()).unwrap_or(DEFAULT_SECONDS);
    let mut seeds = vec![FIXED_SEED];
    if let Some(seed) = std::env::var("CRP_FUZZ_SEED").ok().and_then(|text| parse_seed(&text)) {
        seeds.push(seed);
    }
    let start = Instant::now();
    let share = Duration::from_secs(seconds) / u32::try_from(seeds.len()).unwrap_or(1);
    let (mut refused, mut accepted) = (0, 0);
    for (index, seed) in seeds.iter().enumerate() {
        let deadline = start + share * (u32::try_from(index).unwrap_or(0) + 1);
        let (iterations, seed_refused, seed_accepted) =
            fuzz_seed(*seed, deadline, &corpus).unwrap_or_else(|failure| panic!("{failure}"));
        eprintln!("seed {seed:#x}: {iterations} inputs, {seed_refused} refused, {seed_accepted} accepted");
        refused += seed_refused;
        accepted += seed_accepted;
    }
    // Both outcomes must occur, or the mutations never reach past the
    // checks (or never make anything invalid).
    assert!(refused > 0 && accepted > 0, "refused {refused}, accepted {accepted}");
}

fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Every committed corpus image still opens and loads (the corpus must
/// follow the format; regenerate with `CRP_FUZZ_REGENERATE_CORPUS=1`).
#[test]
fn corpus_is_current() {
    let directory = corpus_directory();
    if std::env::var_os("CRP_FUZZ_REGENERATE_CORPUS").is_some() {
        std::fs::create_dir_all(&directory).unwrap();
        for (name, with_pages) in [("no-pages.crp", false), ("one-page.crp", true)] {
            let (image, runs) = valid_image(with_pages);
            images::write_image(&directory.join(name), &image, &runs).unwrap();
        }
    }
    for (name, bytes) in corpus() {
        assert!(bytes.len() <= 20 << 10, "{name} is {} bytes: keep the corpus small", bytes.len());
        let path = directory.join(&name);
        let reader = crp_image::ImageReader::open(&path).unwrap_or_else(|error| panic!("{name}: {error}"));
        crp_cli::restore::validate::load_image(&reader).unwrap_or_else(|error| panic!("{name}: {error}"));
    }
}

/// `reseal` makes a mutated file pass every checksum again: without it the
/// file-level mutations would never get past the reader's first checks.
#[test]
fn resealing_a_mutated_image_restores_its_checksums() {
    let (_, original) = corpus().into_iter().find(|(name, _)| name == "one-page.crp").expect("one-page.crp");
    let range = metadata_range(&original).unwrap();
    let mut bytes = original.clone();
    // A change inside the archive's string bytes: still a valid archive.
    let at = range.start + bytes[range.clone()].windows(4).position(|window| window == b"true").unwrap();
    bytes[at] = b'T';
    let path = work_directory().join("resealed.crp");
    std::fs::write(&path, &bytes).unwrap();
    assert!(crp_image::ImageReader::open(&path).is_err(), "the checksum must catch the change first");
    reseal(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let reader = crp_image::ImageReader::open(&path).expect("resealed");
    assert_eq!(reader.run_data(&reader.page_runs()[0]), &[0xa5; 4096][..]);
}
