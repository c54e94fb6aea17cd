//! Checks of decoded image values, made before a restore creates anything:
//! each restore-side function here has a `check` beside it refusing what
//! the kernel would refuse (or what would break the function) only once the
//! restored child exists.

/// A value of an image that no restore can apply: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// `PATH_MAX`, the terminating NUL included.
const PATH_MAX: usize = 4096;

/// A path crp passes to the kernel as a C string: absolute, shorter than
/// `PATH_MAX`, no NUL inside (which would silently cut it short).
pub fn check_path(field: impl Into<String>, path: &str) -> Result<(), Invalid> {
    let reason = if !path.starts_with('/') {
        "is not an absolute path"
    } else if path.len() >= PATH_MAX {
        "is longer than PATH_MAX"
    } else if path.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Invalid::new(field, format!("{path:.80?} {reason}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_the_kernel_would_misread_are_refused() {
        assert!(check_path("exe", "/usr/bin/true").is_ok());
        assert!(check_path("exe", "").unwrap_err().to_string().contains("absolute"));
        assert!(check_path("exe", "/etc/\0passwd").unwrap_err().to_string().contains("NUL"));
        assert!(check_path("exe", &"/".repeat(5000)).unwrap_err().to_string().contains("PATH_MAX"));
    }
}
