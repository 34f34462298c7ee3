//! The stat cache: for each replica root, the SHA-256 of every file whose size, mtime and
//! inode are unchanged since it was last hashed, so a pass over unchanged files hashes
//! nothing. A missing or unreadable cache only costs re-hashing; it is never trusted
//! over the disk, and a file modified in the same timestamp tick as its hashing ("racy")
//! is not cached.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;
use crate::fsops;
use crate::tree::{path_order, Digest, Entry, Kind, MTime, Tree};

/// A file whose mtime is this close to the moment the pass began may still be written
/// within the same timestamp tick without its stat changing: it is not cached. Kernel
/// timestamps move in ticks of at most 10 ms; filesystems that keep whole seconds (their
/// mtimes have no nanoseconds) move in steps of up to 2 s.
const RACY_FINE_NS: i128 = 100_000_000;
const RACY_COARSE_NS: i128 = 2_000_000_000;

/// A stat cache for one root, as the bytes of its file: records are read in place,
/// never copied into a map, and a pass that would write the same bytes writes nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatCache {
    bytes: Vec<u8>,
}

/// The cache file: compact binary (postcard), because it is read and written on every
/// pass and holds an entry per file (JSON with hex digests took most of an unchanged
/// pass over 50,000 files). Records are in the tree's path order, so filling a scanned
/// tree is one merge over both, with no per-path allocation.
#[derive(Deserialize)]
struct OnDisk<'a> {
    format: u32,
    #[serde(borrow)]
    root: &'a [u8],
    #[serde(borrow)]
    files: Vec<Record<'a>>,
}

/// `(path, size, mtime_sec, mtime_nsec, inode, sha256)`
type Record<'a> = (&'a [u8], u64, i64, u32, u64, [u8; 32]);

const FORMAT: u32 = 3;

impl StatCache {
    /// Loads the cache at `file`; empty if it is missing (a damaged one or one for
    /// another root is found out by [`StatCache::fill`] and only costs re-hashing).
    pub fn load(file: &Path) -> StatCache {
        StatCache {
            bytes: std::fs::read(file).unwrap_or_default(),
        }
    }

    /// The records, if the bytes are a cache of `root` in this format.
    fn records(&self, root: &Path) -> Vec<Record<'_>> {
        if self.bytes.is_empty() {
            return Vec::new();
        }
        match postcard::from_bytes::<OnDisk>(&self.bytes) {
            Ok(d) if d.format == FORMAT && d.root == root.as_os_str().as_bytes() => d.files,
            Ok(_) => Vec::new(),
            Err(_) => {
                log::debug!("stat cache of {} is damaged; re-hashing", root.display());
                Vec::new()
            }
        }
    }

    /// Fills in the hash of every file of `tree` whose size, mtime and inode match
    /// its record. Returns how many were filled.
    pub fn fill(&self, root: &Path, tree: &mut Tree) -> usize {
        let records = self.records(root);
        let mut recs = records.iter().peekable();
        let mut filled = 0;
        for (rel, e) in tree.entries.iter_mut() {
            let key = rel.as_os_str().as_bytes();
            // Records follow the tree's order; skip those of paths that are gone.
            while let Some(r) = recs.peek() {
                if path_order(Path::new(OsStr::from_bytes(r.0)), rel).is_ge() {
                    break;
                }
                recs.next();
            }
            let Some(&&(p, size, sec, nsec, ino, hash)) = recs.peek() else {
                break;
            };
            if p != key {
                continue;
            }
            recs.next();
            if e.kind == Kind::File
                && e.hash.is_none()
                && size == e.size
                && MTime::new(sec, nsec) == e.mtime
                && ino == e.ino
            {
                e.hash = Some(Digest(hash));
                filled += 1;
            }
        }
        filled
    }

    /// A cache of every hashed file of `tree` that was not modified within the racy
    /// window before `scanned_at` (when the pass began; see [`now`]).
    pub fn from_tree(root: &Path, tree: &Tree, scanned_at: MTime) -> StatCache {
        let start = scanned_at.sec as i128 * 1_000_000_000 + scanned_at.nsec as i128;
        let settled = |m: MTime| {
            let t = m.sec as i128 * 1_000_000_000 + m.nsec as i128;
            let window = if m.nsec == 0 {
                RACY_COARSE_NS
            } else {
                RACY_FINE_NS
            };
            t < start - window
        };
        let records = || {
            tree.entries
                .iter()
                .filter(move |(_, e)| e.kind == Kind::File && settled(e.mtime))
                .filter_map(|(p, e)| {
                    let h = e.hash?;
                    let r: Record = (
                        p.as_os_str().as_bytes(),
                        e.size,
                        e.mtime.sec,
                        e.mtime.nsec,
                        e.ino,
                        h.0,
                    );
                    Some(r)
                })
        };
        // Encoded record by record into one buffer of about the right size, in the
        // layout `OnDisk` decodes (its fields in order, then the count and each record),
        // without a vector of every record first.
        let count = records().count();
        let root = root.as_os_str().as_bytes();
        let mut bytes = Vec::with_capacity(16 + root.len() + count * 80);
        let enc = "BUG: encoding to memory cannot fail";
        bytes = postcard::to_extend(&(FORMAT, root, count), bytes).expect(enc);
        for r in records() {
            bytes = postcard::to_extend(&r, bytes).expect(enc);
        }
        StatCache { bytes }
    }

    /// How many files the cache holds (for tests and logs).
    pub fn len(&self, root: &Path) -> usize {
        self.records(root).len()
    }

    /// Writes the cache atomically.
    pub fn save(&self, file: &Path) -> Result<(), Error> {
        fsops::write_atomic(file, &self.bytes)
    }
}

/// Records that the file `e` was read as `st` and hashed to `digest`. The entry takes
/// the stat the hash belongs to, so the cache never pairs a hash with a newer stat.
pub fn note_hashed(e: &mut Entry, digest: Digest, st: &crate::fsops::Stat) {
    e.size = st.size;
    e.mtime = st.mtime;
    e.ino = st.ino;
    e.hash = Some(digest);
}

/// The time now, to compare with mtimes.
pub fn now() -> MTime {
    let t = chrono::Utc::now();
    MTime::new(t.timestamp(), t.timestamp_subsec_nanos())
}

/// What a round of hashing did.
#[derive(Debug, Default)]
pub struct Hashed {
    pub files: u64,
    pub bytes: u64,
    pub errors: Vec<Error>,
}

/// Hashes every file of `tree` whose hash is still unknown (reading from `root`), on
/// `threads` threads; a file that fails becomes unknown and its error is returned.
pub fn hash_missing(root: &Path, tree: &mut Tree, threads: usize) -> Hashed {
    hash_missing_where(root, tree, threads, |_| true)
}

/// [`hash_missing`] for the files `wanted` picks.
pub fn hash_missing_where(
    root: &Path,
    tree: &mut Tree,
    threads: usize,
    wanted: impl Fn(&Path) -> bool,
) -> Hashed {
    let todo: Vec<PathBuf> = tree
        .entries
        .iter()
        .filter(|(p, e)| {
            e.kind == Kind::File && e.hash.is_none() && !tree.unknown.contains(*p) && wanted(p)
        })
        .map(|(p, _)| p.clone())
        .collect();
    let results = crate::hash::hash_many(root, &todo, threads);
    let mut out = Hashed::default();
    for (rel, r) in todo.into_iter().zip(results) {
        match r {
            Ok((digest, st)) => {
                out.files += 1;
                out.bytes += st.size;
                if let Some(e) = tree.entries.get_mut(&rel) {
                    note_hashed(e, digest, &st);
                }
            }
            Err(err) => {
                out.errors.push(err);
                tree.unknown.insert(rel);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tree::Entry;

    fn file(ino: u64, sec: i64, hash: Option<u8>) -> Entry {
        let mut e = Entry::file(3, 0o644, MTime::new(sec, 1), hash.map(|h| Digest([h; 32])));
        e.ino = ino;
        e
    }

    #[test]
    fn cache_round_trips_and_rejects_changed_stat() {
        let d = tempfile::tempdir().unwrap();
        let root = Path::new("/r");
        let mut tree = Tree::default();
        tree.entries.insert("a".into(), file(42, 1000, Some(7)));
        tree.entries.insert("a/b".into(), file(43, 1000, Some(8)));
        tree.entries.insert("a-b".into(), file(44, 1000, Some(9)));
        tree.entries.insert("z".into(), file(45, 1000, Some(6)));
        let racy = Entry::file(3, 0o644, now(), Some(Digest([8; 32])));
        tree.entries.insert(PathBuf::from("racy"), racy);
        let c = StatCache::from_tree(root, &tree, now());
        assert_eq!(c.len(root), 4, "a file modified just now is not cached");
        let file_path = d.path().join("c.bin");
        c.save(&file_path).unwrap();
        let back = StatCache::load(&file_path);
        assert_eq!(back, c);

        // A later scan: "a" touched, "a/b" gone, "a-a" new, "z" unchanged.
        let mut later = Tree::default();
        later.entries.insert("a".into(), file(42, 1001, None));
        later.entries.insert("a-a".into(), file(50, 1000, None));
        later.entries.insert("a-b".into(), file(44, 1000, None));
        later.entries.insert("racy".into(), file(46, 1000, None));
        later.entries.insert("z".into(), file(45, 1000, None));
        assert_eq!(back.fill(root, &mut later), 2);
        let hash = |p: &str| later.entries[Path::new(p)].hash;
        assert_eq!(hash("a"), None, "a changed mtime is not trusted");
        assert_eq!(hash("a-a"), None);
        assert_eq!(hash("a-b"), Some(Digest([9; 32])));
        assert_eq!(hash("racy"), None);
        assert_eq!(hash("z"), Some(Digest([6; 32])));

        let mut other = Tree::default();
        other.entries.insert("z".into(), file(45, 1000, None));
        assert_eq!(back.fill(Path::new("/other"), &mut other), 0);
        let damaged = StatCache {
            bytes: back.bytes[..back.bytes.len() / 2].to_vec(),
        };
        assert_eq!(damaged.fill(root, &mut other), 0);
    }

    #[test]
    fn the_racy_window_follows_the_timestamp_precision() {
        let start = MTime::new(10_000, 500_000_000);
        let entry = |m: MTime| {
            let mut t = Tree::default();
            t.entries.insert(
                PathBuf::from("f"),
                Entry::file(1, 0o644, m, Some(Digest([1; 32]))),
            );
            StatCache::from_tree(Path::new("/r"), &t, start).len(Path::new("/r"))
        };
        // Nanosecond timestamps: a second ago is settled, 50 ms ago is not.
        assert_eq!(entry(MTime::new(9_999, 500_000_001)), 1);
        assert_eq!(entry(MTime::new(10_000, 450_000_000)), 0);
        // Whole seconds (FAT, ext3): within 2 s is not settled.
        assert_eq!(entry(MTime::new(9_999, 0)), 0);
        assert_eq!(entry(MTime::new(9_998, 0)), 1);
    }
}
