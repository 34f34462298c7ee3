//! The safe file primitives: the only code in the suite that writes into a replica, a
//! store or a restore target.
//!
//! Every write goes through a [`Root`]: directories are opened one component at a time
//! with `O_NOFOLLOW`, so a symlink planted inside a root is never followed and no path
//! escapes it. Files reach their final name only by `rename` from a temporary file in the
//! same directory (or by linking an unnamed file to a name that does not exist), after
//! their bytes and metadata are complete and flushed. Nothing here decides *what* to
//! write; the planners do.

mod atomic;
mod change;
mod copy;
mod detect;
mod limits;
mod root;
mod stat;
mod temp;
mod xattr;

pub use atomic::{
    replace_unflushed, scratch_file, write_atomic, write_atomic_unless_same, write_atomic_with,
};
pub use change::make_dir_all;
pub use copy::{copy_hashing, CopyError};
pub use detect::FsTraits;
pub use limits::reserve_descriptors;
pub use root::Root;
pub use stat::{entry_from_stat, fstat, lstat, open_regular, Stat};
pub use temp::{TempFile, TempWrite};
pub use xattr::{copy_dir_xattrs, copy_xattrs, same_attributes};

/// Whether the test suite asked for `what` to fail (`TWOWAY_INJECT_FAULT=syncfs`, or
/// `first-sync-flush` for the flush before a first sync records its progress): the only
/// way to make a flush fail on demand, since no filesystem here fails one at will; or
/// (`copy-waits-for-stop`) for a large copy to wait until the run is stopped, so that a
/// test's Ctrl+C meets it in flight on any machine. It makes operations fail or wait,
/// never succeed, so it cannot hide a real error.
pub fn injected_fault(what: &str) -> bool {
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FAULT
        .get_or_init(|| std::env::var("TWOWAY_INJECT_FAULT").ok())
        .as_deref()
        .is_some_and(|f| f.split(',').any(|x| x == what))
}

/// Whether this process runs as root, and so can keep every file's owner (and must, or
/// a user's setuid file would become root's).
pub fn keeps_owners() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests;
