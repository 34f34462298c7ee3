//! Reading a replica into a [`Tree`]: one `lstat` per entry, symlinks never followed,
//! special files reported and skipped, reserved names and `--exclude` patterns left out.
//!
//! The scan only reads. A failure on one entry is a value in `Tree::errors`, and the
//! path is marked unknown so no planner deletes anything at or under it.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Refusal};
use crate::fsops::{self, Stat};
use crate::names;
use crate::tree::{Entry, Kind, Tree};

/// `--exclude` patterns. A pattern without `/` matches a name at any depth; one with `/`
/// matches the whole relative path from the root (a leading `/` is allowed); a trailing
/// `/` matches directories only. `*` never crosses a `/`; `**` does.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    by_name: GlobSet,
    by_name_dirs: GlobSet,
    by_path: GlobSet,
    by_path_dirs: GlobSet,
    patterns: Vec<String>,
}

impl Excludes {
    /// Compiles the patterns; an invalid pattern is named in the error.
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        let mut sets = [
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
        ];
        for p in patterns {
            let (body, dirs_only) = match p.strip_suffix('/') {
                Some(b) => (b, true),
                None => (p.as_str(), false),
            };
            let anchored = body.contains('/');
            let body = body.trim_start_matches('/');
            if body.is_empty() {
                return Err(format!("invalid exclude pattern {p:?}: empty"));
            }
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("invalid exclude pattern {p:?}: {e}"))?;
            let idx = usize::from(anchored) * 2 + usize::from(dirs_only);
            sets[idx].add(glob);
        }
        let [a, b, c, d] = sets;
        let build = |s: GlobSetBuilder| s.build().map_err(|e| format!("invalid exclude: {e}"));
        Ok(Excludes {
            by_name: build(a)?,
            by_name_dirs: build(b)?,
            by_path: build(c)?,
            by_path_dirs: build(d)?,
            patterns: patterns.to_vec(),
        })
    }

    /// True if the entry at `rel` is excluded.
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let name = rel.file_name().map(Path::new).unwrap_or(rel);
        self.by_name.is_match(name)
            || self.by_path.is_match(rel)
            || (is_dir && (self.by_name_dirs.is_match(name) || self.by_path_dirs.is_match(rel)))
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// What to leave out of a scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    pub excludes: Excludes,
    /// Absolute paths left out entirely (BACKUP inside SOURCE, a store inside a replica).
    pub skip: Vec<PathBuf>,
}

/// Checks that `root` is a readable directory and returns its canonical path.
pub fn check_root(root: &Path, role: &str) -> Result<PathBuf, Refusal> {
    let canon = std::fs::canonicalize(root).map_err(|e| {
        Refusal::new(format!(
            "{role} {} is missing or unreachable ({e})",
            names::display(root)
        ))
    })?;
    let md = std::fs::metadata(&canon)
        .map_err(|e| Refusal::new(format!("{role} {}: {e}", names::display(root))))?;
    if !md.is_dir() {
        return Err(Refusal::new(format!(
            "{role} {} is not a directory",
            names::display(root)
        )));
    }
    std::fs::read_dir(&canon).map_err(|e| {
        Refusal::new(format!(
            "{role} {} cannot be read ({e})",
            names::display(root)
        ))
    })?;
    Ok(canon)
}

/// Scans `root` (canonical). Fails only if the root itself cannot be read.
pub fn scan(root: &Path, opts: &ScanOptions) -> Result<Tree, Error> {
    let root_stat = fsops::lstat(root)?;
    let mut tree = Tree {
        root: fsops::entry_from_stat(&root_stat, None),
        ..Tree::default()
    };
    let excluded = RefCell::new(Vec::new());
    let leftovers = RefCell::new(Vec::new());
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(root).unwrap_or(e.path());
            let name = e.file_name();
            if names::is_temp_name(name) {
                leftovers.borrow_mut().push(rel.to_path_buf());
                return false;
            }
            if e.depth() == 1 && names::is_reserved_top(name) {
                return false;
            }
            if opts.skip.iter().any(|s| s == e.path()) {
                return false;
            }
            if opts.excludes.is_excluded(rel, e.file_type().is_dir()) {
                excluded.borrow_mut().push(rel.to_path_buf());
                return false;
            }
            true
        });
    for item in walker {
        match item {
            Ok(ent) => {
                let rel = ent
                    .path()
                    .strip_prefix(root)
                    .expect("BUG: walkdir yields paths under its root")
                    .to_path_buf();
                match stat_entry(ent.path(), ent.file_type().is_symlink()) {
                    Ok(Some(entry)) => {
                        tree.entries.insert(rel, entry);
                    }
                    Ok(None) => {
                        tree.specials.push(rel.clone());
                        tree.unknown.insert(rel);
                    }
                    Err(e) => {
                        tree.errors.push(e);
                        tree.unknown.insert(rel);
                    }
                }
            }
            Err(err) => {
                let path = err.path().map(Path::to_path_buf);
                let rel = path
                    .as_deref()
                    .and_then(|p| p.strip_prefix(root).ok())
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                if rel.as_os_str().is_empty() {
                    return Err(Error::io(
                        "read dir",
                        root,
                        err.into_io_error()
                            .unwrap_or_else(|| std::io::Error::other("walk error")),
                    ));
                }
                let abs = root.join(&rel);
                let source = err
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("filesystem loop"));
                tree.errors.push(Error::io("read dir", abs, source));
                tree.unknown.insert(rel);
            }
        }
    }
    tree.excluded = excluded.into_inner().into_iter().collect();
    tree.leftovers = leftovers.into_inner();
    Ok(tree)
}

/// One `lstat` (and `readlink` for a symlink); `None` for a special file.
fn stat_entry(path: &Path, is_link: bool) -> Result<Option<Entry>, Error> {
    let st: Stat = fsops::lstat(path)?;
    let target = if is_link || st.kind == Some(Kind::Symlink) {
        Some(std::fs::read_link(path).map_err(|e| Error::io("readlink", path, e))?)
    } else {
        None
    };
    Ok(fsops::entry_from_stat(&st, target))
}

/// True if `inner` is `outer` or lies inside it (both canonical).
pub fn is_within(inner: &Path, outer: &Path) -> bool {
    inner.starts_with(outer)
}

/// The name of a path's last component, for messages.
pub fn base_name(p: &Path) -> &OsStr {
    p.file_name().unwrap_or(p.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn name_patterns_match_at_any_depth() {
        let e = ex(&["*.tmp"]);
        assert!(e.is_excluded(Path::new("a.tmp"), false));
        assert!(e.is_excluded(Path::new("x/y/a.tmp"), false));
        assert!(!e.is_excluded(Path::new("a.tmpx"), false));
    }

    #[test]
    fn path_patterns_are_anchored() {
        let e = ex(&["/build/*.o", "cache/"]);
        assert!(e.is_excluded(Path::new("build/a.o"), false));
        assert!(!e.is_excluded(Path::new("x/build/a.o"), false));
        assert!(e.is_excluded(Path::new("x/cache"), true));
        assert!(!e.is_excluded(Path::new("x/cache"), false));
    }

    #[test]
    fn invalid_pattern_is_named() {
        let err = Excludes::new(&["a[".to_string()]).unwrap_err();
        assert!(err.contains("a["), "{err}");
    }

    #[test]
    fn scan_sees_files_dirs_links_and_skips_reserved() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/empty")).unwrap();
        std::fs::write(r.join("a/f"), b"x").unwrap();
        std::os::unix::fs::symlink("nowhere", r.join("dangling")).unwrap();
        std::fs::create_dir(r.join("__versions__")).unwrap();
        std::fs::write(r.join("a/.twoway-tmp-1"), b"partial").unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            r.join("fifo"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let t = scan(r, &ScanOptions::default()).unwrap();
        let keys: Vec<_> = t.entries.keys().map(|k| k.to_str().unwrap()).collect();
        assert_eq!(keys, ["a", "a/empty", "a/f", "dangling"]);
        assert_eq!(
            t.entries[Path::new("dangling")].target.as_deref(),
            Some(Path::new("nowhere"))
        );
        assert_eq!(t.leftovers, [PathBuf::from("a/.twoway-tmp-1")]);
        assert_eq!(t.specials, [PathBuf::from("fifo")]);
        assert!(t.is_unknown(Path::new("fifo")));
    }
}
