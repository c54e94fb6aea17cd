//! How long the metadata of a real image takes to validate in place
//! (bytecheck), to decode into owned types, and to check (`load_image`),
//! against the whole open of the image: the numbers behind the README's
//! "validated in place, decoded once" choice. Dumps a python3 process once.
//! Run with `cargo bench -p crp-cli --bench metadata`.

use std::process::{Command, Stdio};
use std::time::Instant;

use crp_cli::model::{ArchivedProcessImage, ProcessImage};

const ROUNDS: u32 = 2000;

fn main() {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("python.crp");
    let mut python = Command::new("python3");
    // SAFETY: the closure runs between fork and exec and makes one
    // async-signal-safe syscall: descriptors inherited from whatever started
    // the benchmark would make crp refuse the process.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut python, || {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut python = python
        .args(["-c", "import sys, json, os; print(os.getpid(), flush=True); sys.stdin.readline()"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(python.stdout.as_mut().unwrap()), &mut line).unwrap();
    let pid = line.trim().to_owned();
    let crp = env!("CARGO_BIN_EXE_crp");
    let status = Command::new(crp).args(["dump", &pid, "-o"]).arg(&image).arg("--leave-running").status().unwrap();
    assert!(status.success());
    drop(python.stdin.take());
    python.wait().unwrap();

    let started = Instant::now();
    let reader = crp_image::ImageReader::open(&image).unwrap();
    let open = started.elapsed();
    let time = |what: &str, work: &dyn Fn()| {
        let started = Instant::now();
        for _ in 0..ROUNDS {
            work();
        }
        let each = started.elapsed() / ROUNDS;
        println!("{what:<44} {:>8.1} µs", each.as_secs_f64() * 1e6);
    };
    println!("metadata of a python3 image: {} bytes", reader.metadata_bytes().len());
    println!("{:<44} {:>8.1} µs (all checksums, once)", "open the image", open.as_secs_f64() * 1e6);
    time("validate in place (bytecheck)", &|| {
        reader.metadata::<ArchivedProcessImage>().unwrap();
    });
    time("validate and decode into owned types", &|| {
        let archived = reader.metadata::<ArchivedProcessImage>().unwrap();
        rkyv::deserialize::<ProcessImage, rkyv::rancor::Error>(archived).unwrap();
    });
    time("load_image (validate, decode, check values)", &|| {
        crp_cli::restore::validate::load_image(&reader).unwrap();
    });
}
