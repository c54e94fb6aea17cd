//! The processes dumped: hog.c (N MiB of dirty anonymous memory, no zero
//! page) and heap.py (python3 holding a dict of N MiB of distinct strings).
//! Each detaches from our session and descriptors and says it is ready by
//! creating a file; a dump kills it, and we reap it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// hog.c: one anonymous mapping, every page dirty and distinct.
    Anonymous,
    /// heap.py: python3's heap, a dict of distinct random strings.
    Python,
}

#[derive(Clone, Copy, Debug)]
pub struct Subject {
    pub kind: Kind,
    pub mib: u64,
}

impl Subject {
    pub fn name(&self) -> String {
        match self.kind {
            Kind::Anonymous => format!("anonymous {} MiB", self.mib),
            Kind::Python => format!("python3 dict {} MiB", self.mib),
        }
    }

    pub fn key(&self) -> String {
        match self.kind {
            Kind::Anonymous => format!("anonymous-{}mib", self.mib),
            Kind::Python => format!("python-{}mib", self.mib),
        }
    }
}

/// The built hog and the python3 that runs heap.py.
pub struct Programs {
    hog: PathBuf,
    heap: PathBuf,
    python: PathBuf,
}

impl Programs {
    pub fn build(directory: &Path) -> Programs {
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/end_to_end");
        let hog = directory.join("hog");
        let status = Command::new("gcc").args(["-O2", "-o"]).arg(&hog).arg(sources.join("hog.c")).status().unwrap();
        assert!(status.success(), "gcc failed");
        // The interpreter itself, not a wrapper (pyenv's shims are scripts).
        let output = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().unwrap();
        assert!(output.status.success(), "python3 is needed");
        let python = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        Programs { hog, heap: sources.join("heap.py"), python }
    }

    /// Starts `subject` and waits until its memory is in place; returns its pid.
    pub fn start(&self, subject: &Subject, directory: &Path) -> i32 {
        let ready = directory.join("subject.ready");
        let _ = std::fs::remove_file(&ready);
        let mut command = match subject.kind {
            Kind::Anonymous => Command::new(&self.hog),
            Kind::Python => {
                let mut command = Command::new(&self.python);
                command.arg(&self.heap);
                command
            }
        };
        let mut child = command
            .arg(subject.mib.to_string())
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited early: {status}", subject.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Reaped by whoever ends it (see reap, kill_and_reap).
        std::mem::forget(child);
        pid
    }
}

pub fn kill_and_reap(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

pub fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}
