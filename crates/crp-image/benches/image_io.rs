//! Image write and read throughput: 64 MiB of pages in 1 MiB runs, written
//! through the real writer (including fsync) and validated by the real reader.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crp_image::{ImageReader, ImageWriter, PAGE_SIZE, to_archive};

const RUN_PAGES: u64 = 256;
const RUNS: u64 = 64;

fn write_image(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let mut writer = ImageWriter::create(path).unwrap();
    for run in 0..RUNS {
        writer
            .add_page_run(0x1000_0000 + run * RUN_PAGES * PAGE_SIZE * 2, RUN_PAGES, |vaddr, buffer| {
                buffer.fill(vaddr.to_le_bytes()[1]);
                Ok(())
            })
            .unwrap();
    }
    writer.finish(&to_archive(&vec![1u64; 1024]).unwrap()).unwrap();
}

fn image_io(criterion: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.crp");
    let mut group = criterion.benchmark_group("image");
    group.throughput(Throughput::Bytes(RUNS * RUN_PAGES * PAGE_SIZE));
    group.sample_size(10);
    group.bench_function("write_64MiB_fsync", |bench| bench.iter(|| write_image(&path)));
    write_image(&path);
    group.bench_function("open_validate_64MiB", |bench| {
        bench.iter(|| {
            let reader = ImageReader::open(&path).unwrap();
            assert_eq!(reader.page_runs().len() as u64, RUNS);
        })
    });
    group.finish();
}

criterion_group!(benches, image_io);
criterion_main!(benches);
