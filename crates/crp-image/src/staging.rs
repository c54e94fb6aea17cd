//! Where an image is built before it appears under its name.
//!
//! The file is an unnamed `O_TMPFILE` file in the destination's directory: a
//! dump that dies (even by SIGKILL) before it finishes leaves nothing
//! behind, and no name exists that a stale or planted file could block. Once
//! complete and fsynced, it is linked into the directory under a random name
//! (`linkat` cannot replace a file), renamed onto the final name (atomic),
//! and the directory is fsynced. On file systems without `O_TMPFILE` the
//! file is created under a random name instead (`O_EXCL`), removed again if
//! the image is never finished.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::error::ImageError;
use crate::file_kind::non_regular_kind;

/// Fresh names tried before giving up (a collision of two random 64-bit
/// names is already all but impossible).
const NAME_ATTEMPTS: usize = 32;

/// Where the next temporary name comes from.
type NameSource = Box<dyn FnMut() -> io::Result<OsString> + Send>;

/// A file being built in the destination's directory, published under its
/// final name by [`StagedFile::publish`]. Dropping it unpublished leaves
/// nothing behind.
pub(crate) struct StagedFile {
    file: Arc<File>,
    directory: File,
    directory_path: PathBuf,
    final_name: OsString,
    final_path: PathBuf,
    /// The name the file has in the directory before it is renamed onto
    /// its final name; `None` while it has none (`O_TMPFILE`) and once published.
    temporary_name: Option<OsString>,
    names: NameSource,
}

impl std::fmt::Debug for StagedFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StagedFile")
            .field("final_path", &self.final_path)
            .field("temporary_name", &self.temporary_name)
            .finish_non_exhaustive()
    }
}

/// How the file is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Staging {
    /// `O_TMPFILE`, or a random name where the file system lacks it.
    Unnamed,
    /// Always a random name (the fallback, chosen directly by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Named,
}

impl StagedFile {
    /// Starts a file that will appear at `path`, mode 0600.
    pub(crate) fn create(path: &Path) -> Result<Self, ImageError> {
        Self::create_with(path, Staging::Unnamed, Box::new(random_name))
    }

    fn create_with(path: &Path, staging: Staging, mut names: NameSource) -> Result<Self, ImageError> {
        refuse_non_regular_destination(path)?;
        let final_name = final_name(path)?;
        let directory_path = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let directory = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&directory_path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => {
                    ImageError::OutputFolderMissing { path: path.to_owned(), folder: directory_path.clone() }
                }
                _ => ImageError::Io { action: "open the image's directory", path: directory_path.clone(), source },
            })?;
        let create_error =
            |source| ImageError::Io { action: "create the image in", path: directory_path.clone(), source };
        let mode = Mode::from_bits_truncate(0o600);
        let unnamed = match staging {
            Staging::Unnamed => {
                match nix::fcntl::openat(&directory, ".", OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC, mode) {
                    Ok(fd) => Some(File::from(fd)),
                    // No O_TMPFILE here: EOPNOTSUPP from the file system,
                    // EISDIR or EINVAL from kernels that predate it.
                    Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => None,
                    Err(errno) => return Err(create_error(errno.into())),
                }
            }
            Staging::Named => None,
        };
        let (file, temporary_name) = match unnamed {
            Some(file) => (file, None),
            None => {
                let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
                let (name, fd) = with_fresh_name(&mut names, |name| nix::fcntl::openat(&directory, name, flags, mode))
                    .map_err(create_error)?;
                (File::from(fd), Some(name))
            }
        };
        Ok(Self {
            file: Arc::new(file),
            directory,
            directory_path,
            final_name,
            final_path: path.to_owned(),
            temporary_name,
            names,
        })
    }

    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// The path the image will have, for error messages.
    pub(crate) fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Makes the file durable (when `durable`), then gives it its final
    /// name (atomically replacing any file there) and makes the name durable
    /// (again when `durable`). Without, the rename is still atomic: a reader
    /// sees the old file or the whole new one, only a crash may lose it.
    pub(crate) fn publish(mut self, durable: bool) -> Result<PathBuf, ImageError> {
        let final_path = self.final_path.clone();
        let io_error = |action| {
            let path = final_path.clone();
            move |source| ImageError::Io { action, path, source }
        };
        if durable {
            self.file.sync_all().map_err(io_error("fsync image"))?;
        }
        let temporary_name = match self.temporary_name.clone() {
            Some(name) => name,
            None => {
                let name = self.link().map_err(io_error("give a name to image"))?;
                // From here until the rename, Drop removes the name again.
                self.temporary_name = Some(name.clone());
                name
            }
        };
        nix::fcntl::renameat(&self.directory, temporary_name.as_os_str(), &self.directory, self.final_name.as_os_str())
            .map_err(|errno| io_error("rename image onto")(errno.into()))?;
        self.temporary_name = None;
        if !durable {
            return Ok(final_path);
        }
        self.directory.sync_all().map_err(|source| ImageError::Io {
            action: "the image is in place but not durable (a crash may lose it): fsync directory",
            path: self.directory_path.clone(),
            source,
        })?;
        Ok(final_path)
    }

    /// Links the unnamed file into the directory under a fresh name.
    fn link(&mut self) -> io::Result<OsString> {
        let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let (file, directory) = (&self.file, &self.directory);
        with_fresh_name(&mut self.names, |name| {
            match nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                proc_path.as_str(),
                directory,
                name,
                AtFlags::AT_SYMLINK_FOLLOW,
            ) {
                // No /proc: link the descriptor itself (needs
                // CAP_DAC_READ_SEARCH before Linux 6.10, which root has).
                Err(Errno::ENOENT) => nix::unistd::linkat(file.as_ref(), "", directory, name, AtFlags::AT_EMPTY_PATH),
                other => other,
            }
        })
        .map(|(name, ())| name)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(name) = self.temporary_name.take() {
            let _ = nix::unistd::unlinkat(&self.directory, name.as_os_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// The last component of `path`, which must name a file.
fn final_name(path: &Path) -> Result<OsString, ImageError> {
    let last = path.as_os_str().as_bytes().rsplit(|&byte| byte == b'/').next().unwrap_or_default();
    if matches!(last, b"" | b"." | b"..") {
        return Err(ImageError::Io {
            action: "create image",
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        });
    }
    Ok(OsStr::from_bytes(last).to_owned())
}

/// An existing directory, FIFO, socket or device at `path` is refused now,
/// before the dump starts, rather than when the finished image is renamed.
fn refuse_non_regular_destination(path: &Path) -> Result<(), ImageError> {
    match std::fs::metadata(path) {
        Ok(metadata) => match non_regular_kind(metadata.file_type()) {
            Some(kind) => Err(ImageError::OutputNotRegularFile { path: path.to_owned(), kind }),
            None => Ok(()),
        },
        // Nothing there (or nothing we may look at): creating the file in
        // the directory says what is wrong, if anything.
        Err(_) => Ok(()),
    }
}

/// A hidden name that nobody can predict.
fn random_name() -> io::Result<OsString> {
    Ok(OsString::from(format!(".crp-{:016x}.tmp", getrandom::u64().map_err(io::Error::from)?)))
}

/// Runs `attempt` with fresh names until one is not taken.
fn with_fresh_name<T>(
    names: &mut NameSource,
    mut attempt: impl FnMut(&OsStr) -> nix::Result<T>,
) -> io::Result<(OsString, T)> {
    for _ in 0..NAME_ATTEMPTS {
        let name = names()?;
        match attempt(&name) {
            Ok(value) => return Ok((name, value)),
            Err(Errno::EEXIST) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{NAME_ATTEMPTS} random names were all taken")))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn entries(dir: &Path) -> Vec<OsString> {
        let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        names.sort();
        names
    }

    /// Names from a list, then random ones.
    fn scripted(mut list: Vec<&'static str>) -> NameSource {
        list.reverse();
        Box::new(move || match list.pop() {
            Some(name) => Ok(OsString::from(name)),
            None => random_name(),
        })
    }

    fn publish_with(path: &Path, staging: Staging, names: NameSource) -> PathBuf {
        let staged = StagedFile::create_with(path, staging, names).unwrap();
        staged.file().as_ref().write_all(b"image").unwrap();
        staged.publish(true).unwrap()
    }

    #[test]
    fn unnamed_file_is_invisible_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.crp");
        let staged = StagedFile::create(&path).unwrap();
        assert!(staged.temporary_name.is_none(), "this file system has O_TMPFILE");
        assert!(entries(dir.path()).is_empty());
        staged.file().as_ref().write_all(b"image").unwrap();
        assert_eq!(staged.publish(true).unwrap(), path);
        assert_eq!(entries(dir.path()), [OsString::from("a.crp")]);
        assert_eq!(std::fs::read(&path).unwrap(), b"image");
    }

    #[test]
    fn dropped_unnamed_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        drop(StagedFile::create(&dir.path().join("a.crp")).unwrap());
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn a_taken_name_is_skipped_when_linking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".planted"), b"planted").unwrap();
        let path = dir.path().join("a.crp");
        publish_with(&path, Staging::Unnamed, scripted(vec![".planted", ".fresh"]));
        assert_eq!(entries(dir.path()), [OsString::from(".planted"), OsString::from("a.crp")]);
        assert_eq!(std::fs::read(dir.path().join(".planted")).unwrap(), b"planted");
        assert_eq!(std::fs::read(&path).unwrap(), b"image");
    }

    #[test]
    fn named_fallback_skips_taken_names_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".planted"), b"planted").unwrap();
        let path = dir.path().join("a.crp");
        publish_with(&path, Staging::Named, scripted(vec![".planted", ".fresh"]));
        assert_eq!(entries(dir.path()), [OsString::from(".planted"), OsString::from("a.crp")]);
        assert_eq!(std::fs::read(&path).unwrap(), b"image");
    }

    #[test]
    fn dropped_named_fallback_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let staged = StagedFile::create_with(&dir.path().join("a.crp"), Staging::Named, Box::new(random_name)).unwrap();
        assert_eq!(entries(dir.path()).len(), 1);
        drop(staged);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn only_taken_names_give_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".planted"), b"planted").unwrap();
        let always_planted: NameSource = Box::new(|| Ok(OsString::from(".planted")));
        let error = StagedFile::create_with(&dir.path().join("a.crp"), Staging::Named, always_planted).unwrap_err();
        assert!(error.to_string().contains("random names were all taken"), "{error}");
    }

    #[test]
    fn publishing_replaces_an_existing_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.crp");
        std::fs::write(&path, b"old").unwrap();
        publish_with(&path, Staging::Unnamed, Box::new(random_name));
        assert_eq!(std::fs::read(&path).unwrap(), b"image");
        assert_eq!(entries(dir.path()), [OsString::from("a.crp")]);
    }

    #[test]
    fn a_directory_or_fifo_destination_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let error = StagedFile::create(dir.path()).unwrap_err();
        assert!(matches!(error, ImageError::OutputNotRegularFile { kind: "a directory", .. }), "{error}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let error = StagedFile::create(&fifo).unwrap_err();
        assert!(matches!(error, ImageError::OutputNotRegularFile { kind: "a FIFO", .. }), "{error}");
        assert!(error.to_string().contains("is a FIFO"), "{error}");
        let subdirectory = dir.path().join("sub");
        std::fs::create_dir(&subdirectory).unwrap();
        let error = StagedFile::create(&subdirectory).unwrap_err();
        assert!(matches!(error, ImageError::OutputNotRegularFile { kind: "a directory", .. }), "{error}");
        assert_eq!(entries(dir.path()), [OsString::from("fifo"), OsString::from("sub")]);
    }

    #[test]
    fn a_missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("missing/dir");
        let error = StagedFile::create(&folder.join("x.crp")).unwrap_err();
        assert!(matches!(&error, ImageError::OutputFolderMissing { folder: named, .. } if *named == folder), "{error}");
        assert!(error.to_string().contains(&format!("the folder {} does not exist", folder.display())), "{error}");
    }

    #[test]
    fn paths_that_name_no_file_are_refused() {
        for path in ["/tmp/", "/tmp/.", "/tmp/..", ".", ""] {
            assert!(StagedFile::create(Path::new(path)).is_err(), "{path}");
        }
        let error = StagedFile::create(Path::new("/nonexistent-directory/")).unwrap_err();
        assert!(error.to_string().contains("not a file name"), "{error}");
    }
}
