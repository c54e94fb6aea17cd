//! An image is a regular file: opening anything else (a FIFO would block
//! forever, a directory or device cannot be mapped as an image) is refused at
//! once, naming what the path is.

use std::fs::{File, FileType, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::ImageError;

/// What a file that is not a regular file is, as in "`path` is a FIFO".
pub(crate) fn non_regular_kind(file_type: FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("not a file")
    }
}

/// Opens `path` read-only, refusing anything but a regular file before and
/// after opening it. The open is non-blocking, so a FIFO that replaces the
/// file between the two checks cannot hang it either.
pub(crate) fn open_regular(path: &Path) -> Result<File, ImageError> {
    let io_error = |action| move |source| ImageError::Io { action, path: path.to_owned(), source };
    // Checked before opening: opening a socket fails with a confusing
    // ENXIO, and opening a device can have side effects.
    let before = std::fs::metadata(path).map_err(io_error("open image"))?;
    refuse_non_regular(path, before.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_error("open image"))?;
    let after = file.metadata().map_err(io_error("stat image"))?;
    refuse_non_regular(path, after.file_type())?;
    Ok(file)
}

fn refuse_non_regular(path: &Path, file_type: FileType) -> Result<(), ImageError> {
    match non_regular_kind(file_type) {
        None => Ok(()),
        Some(kind) => Err(ImageError::NotRegularFile { path: path.to_owned(), kind }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = open_regular(dir.path()).unwrap_err();
        assert!(matches!(error, ImageError::NotRegularFile { kind: "a directory", .. }), "{error}");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let error = open_regular(&fifo).unwrap_err();
        assert!(matches!(error, ImageError::NotRegularFile { kind: "a FIFO", .. }), "{error}");
        assert!(error.to_string().contains("is a FIFO"), "{error}");
    }

    #[test]
    fn a_socket_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let error = open_regular(&path).unwrap_err();
        assert!(matches!(error, ImageError::NotRegularFile { kind: "a socket", .. }), "{error}");
    }

    #[test]
    fn a_character_device_is_named() {
        let error = open_regular(Path::new("/dev/null")).unwrap_err();
        assert!(matches!(error, ImageError::NotRegularFile { kind: "a character device", .. }), "{error}");
    }

    #[test]
    fn a_regular_file_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, b"x").unwrap();
        assert!(open_regular(&path).is_ok());
    }
}
