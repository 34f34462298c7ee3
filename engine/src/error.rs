//! Errors of the engine and the per-pass report.
//!
//! Policy: an error that concerns one entry (unreadable file, vanished file, permission
//! denied) is a value collected in a [`Report`]; the pass goes on and ends with exit
//! status 1. An error that makes the whole pass unsafe (missing root, nested roots, invalid
//! config) is a [`Refusal`] raised before anything is changed: exit status 2.
//! Every I/O variant names the operation and the path it concerns.

use std::io;
use std::path::{Path, PathBuf};

use crate::names::display;

/// An engine error; I/O variants carry the operation and the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}: {source}", display(path))]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {reason}", display(path))]
    Entry { path: PathBuf, reason: String },
    /// Work on `path` stopped because the user asked the tool to stop (Ctrl+C, SIGTERM):
    /// not a failure of the entry, and never counted as one.
    #[error("{}: interrupted", display(path))]
    Interrupted { path: PathBuf },
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An I/O error for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// An error about one entry that is not an OS error.
    pub fn entry(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Entry {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Whether the filesystem was full (`ENOSPC`).
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if source.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()))
    }

    /// The path this error concerns, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. } | Error::Entry { path, .. } | Error::Interrupted { path } => {
                Some(path)
            }
            Error::Other(_) => None,
        }
    }
}

/// Adds the operation and path to an I/O result.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, Error>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, Error> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

impl<T> IoContext<T> for Result<T, rustix::io::Errno> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, Error> {
        self.map_err(|e| Error::io(op, path, e.into()))
    }
}

/// A reason to refuse a whole pass before anything is changed (exit status 2): a reason
/// the tool gives, or an engine error that makes the pass unsafe (kept as it is, with
/// its operation and path).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Reason(String),
    #[error(transparent)]
    Error(#[from] Error),
}

impl Refusal {
    pub fn new(msg: impl Into<String>) -> Self {
        Refusal::Reason(msg.into())
    }
}

/// Exit statuses of every tool in the suite.
pub mod exit {
    pub const OK: i32 = 0;
    pub const PER_FILE_ERRORS: i32 = 1;
    pub const REFUSED: i32 = 2;
    pub const INTERRUPTED: i32 = 130;
}

/// The log target of a per-file error (an entry that could not be read, copied, hashed
/// or planned): what `--on-error` decides about.
pub const FILE_ERROR: &str = "file-error";
