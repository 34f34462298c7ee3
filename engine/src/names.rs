//! Reserved names and how paths are shown to people.
//!
//! The tool keeps a few names for itself: `__versions__` and `.twoway-lock` at the top
//! of a replica, its
//! temporary files (`.twoway-tmp-*`, anywhere) and its version manifests. A pass never
//! syncs, mirrors or deletes them. This module never touches the disk.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The store directory kept at the top of a replica by default.
pub const VERSIONS_DIR: &str = "__versions__";
/// A version's manifest, at the top of each version in a store.
pub const MANIFEST_NAME: &str = ".twoway-manifest";
/// The lock file at the top of every directory a pass writes (BACKUP, each replica, a
/// store): two runs, whatever their data homes, never write one directory at once.
pub const LOCK_NAME: &str = ".twoway-lock";
/// Prefix of every temporary file or directory the tool creates.
pub const TEMP_PREFIX: &str = ".twoway-tmp-";

/// True for a temporary name of ours.
pub fn is_temp_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(TEMP_PREFIX.as_bytes())
}

/// True for a name reserved at the top of a replica.
pub fn is_reserved_top(name: &OsStr) -> bool {
    let n = name.as_bytes();
    n == VERSIONS_DIR.as_bytes()
        || n == MANIFEST_NAME.as_bytes()
        || n == LOCK_NAME.as_bytes()
        || is_temp_name(name)
}

/// A unique temporary name for a file that will be renamed to its final name.
pub fn temp_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    format!("{TEMP_PREFIX}{pid}-{n}-{nanos:x}")
}

/// A path as one printable line: control characters and bytes that are not UTF-8 are
/// escaped (`\n`, `\xff`), so that one log line is always one action.
pub fn display(path: &Path) -> String {
    let bytes = path.as_os_str().as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// The byte order of two relative paths, `/`-separated (the order of the directory SHA-256).
pub fn byte_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn display_escapes_newlines_and_invalid_bytes() {
        let p = Path::new(OsStr::from_bytes(b"a b\nc\xff"));
        assert_eq!(display(p), "a b\\nc\\xff");
    }

    #[test]
    fn reserved_names_are_recognised() {
        assert!(is_reserved_top(OsStr::new("__versions__")));
        assert!(is_temp_name(OsStr::new(&temp_name())));
        assert!(is_reserved_top(OsStr::new(".twoway-lock")));
        assert!(!is_reserved_top(OsStr::new("versions")));
    }
}
