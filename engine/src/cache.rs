//! The stat cache: for each replica root, the SHA-256 of every file whose size, mtime and
//! inode are unchanged since it was last hashed, so a pass over unchanged files hashes
//! nothing. A missing or unreadable cache only costs re-hashing; it is never trusted
//! over the disk, and a file modified in the same timestamp tick as its hashing ("racy")
//! is not cached.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::fsops;
use crate::tree::{Digest, Entry, Kind, MTime, Tree};

/// A file whose mtime is this close to the moment the pass began may still be written
/// within the same timestamp tick without its stat changing: it is not cached. Kernel
/// timestamps move in ticks of at most 10 ms; filesystems that keep whole seconds (their
/// mtimes have no nanoseconds) move in steps of up to 2 s.
const RACY_FINE_NS: i128 = 100_000_000;
const RACY_COARSE_NS: i128 = 2_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cached {
    size: u64,
    mtime: MTime,
    ino: u64,
    hash: Digest,
}

/// A stat cache for one root.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatCache {
    /// Keyed by the path's bytes: hashing a `Path` walks its components, hashing bytes
    /// does not.
    map: HashMap<OsString, Cached>,
}

/// The cache file: compact binary (postcard), because it is read and written on every
/// pass and holds an entry per file (JSON with hex digests took most of an unchanged
/// pass over 50,000 files).
#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    root: Vec<u8>,
    files: Vec<Record>,
}

/// `(path, size, mtime_sec, mtime_nsec, inode, sha256)`
type Record = (Vec<u8>, u64, i64, u32, u64, [u8; 32]);

const FORMAT: u32 = 2;

impl StatCache {
    /// Loads the cache at `file`; empty if it is missing, damaged or for another root.
    pub fn load(file: &Path, root: &Path) -> StatCache {
        let Ok(bytes) = std::fs::read(file) else {
            return StatCache::default();
        };
        let Ok(disk) = postcard::from_bytes::<OnDisk>(&bytes) else {
            log::debug!("stat cache {} is damaged; re-hashing", file.display());
            return StatCache::default();
        };
        if disk.format != FORMAT || disk.root != root.as_os_str().as_bytes() {
            return StatCache::default();
        }
        let map = disk
            .files
            .into_iter()
            .map(|(p, size, sec, nsec, ino, hash)| {
                (
                    OsString::from_vec(p),
                    Cached {
                        size,
                        mtime: MTime::new(sec, nsec),
                        ino,
                        hash: Digest(hash),
                    },
                )
            })
            .collect();
        StatCache { map }
    }

    /// The cached hash of `rel` if `entry`'s stat still matches.
    pub fn lookup(&self, rel: &Path, entry: &Entry) -> Option<Digest> {
        let c = self.map.get(rel.as_os_str())?;
        (entry.kind == Kind::File
            && c.size == entry.size
            && c.mtime == entry.mtime
            && c.ino == entry.ino)
            .then_some(c.hash)
    }

    /// Fills in the hash of every file of `tree` whose stat matches the cache.
    pub fn fill(&self, tree: &mut Tree) {
        for (rel, e) in tree.entries.iter_mut() {
            if e.kind == Kind::File && e.hash.is_none() {
                e.hash = self.lookup(rel, e);
            }
        }
    }

    /// A cache of every hashed file of `tree` that was not modified within the racy
    /// window before `scanned_at` (when the pass began; see [`now`]).
    pub fn from_tree(tree: &Tree, scanned_at: MTime) -> StatCache {
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
        let map = tree
            .entries
            .iter()
            .filter(|(_, e)| e.kind == Kind::File && settled(e.mtime))
            .filter_map(|(p, e)| {
                Some((
                    p.as_os_str().to_os_string(),
                    Cached {
                        size: e.size,
                        mtime: e.mtime,
                        ino: e.ino,
                        hash: e.hash?,
                    },
                ))
            })
            .collect();
        StatCache { map }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Writes the cache atomically.
    pub fn save(&self, file: &Path, root: &Path) -> Result<(), Error> {
        let files: Vec<_> = self
            .map
            .iter()
            .map(|(p, c)| {
                (
                    p.as_os_str().as_bytes().to_vec(),
                    c.size,
                    c.mtime.sec,
                    c.mtime.nsec,
                    c.ino,
                    c.hash.0,
                )
            })
            .collect();
        let disk = OnDisk {
            format: FORMAT,
            root: root.as_os_str().as_bytes().to_vec(),
            files,
        };
        let bytes = postcard::to_allocvec(&disk)
            .map_err(|e| Error::io("encode", file, std::io::Error::other(e)))?;
        fsops::write_atomic(file, &bytes)
    }
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
                    // Keep the stat the hash belongs to, so the cache never pairs a
                    // hash with a newer stat.
                    e.size = st.size;
                    e.mtime = st.mtime;
                    e.ino = st.ino;
                    e.hash = Some(digest);
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

    #[test]
    fn cache_round_trips_and_rejects_changed_stat() {
        let d = tempfile::tempdir().unwrap();
        let mut tree = Tree::default();
        let mut e = Entry::file(3, 0o644, MTime::new(1000, 1), Some(Digest([7; 32])));
        e.ino = 42;
        tree.entries.insert(PathBuf::from("a"), e.clone());
        let racy = Entry::file(3, 0o644, now(), Some(Digest([8; 32])));
        tree.entries.insert(PathBuf::from("racy"), racy);
        let c = StatCache::from_tree(&tree, now());
        assert_eq!(c.len(), 1, "a file modified just now is not cached");
        let file = d.path().join("c.bin");
        c.save(&file, Path::new("/r")).unwrap();
        let back = StatCache::load(&file, Path::new("/r"));
        assert_eq!(back.lookup(Path::new("a"), &e), Some(Digest([7; 32])));
        let mut touched = e.clone();
        touched.mtime = MTime::new(1000, 2);
        assert_eq!(back.lookup(Path::new("a"), &touched), None);
        assert!(StatCache::load(&file, Path::new("/other")).is_empty());
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
            StatCache::from_tree(&t, start).len()
        };
        // Nanosecond timestamps: a second ago is settled, 50 ms ago is not.
        assert_eq!(entry(MTime::new(9_999, 500_000_001)), 1);
        assert_eq!(entry(MTime::new(10_000, 450_000_000)), 0);
        // Whole seconds (FAT, ext3): within 2 s is not settled.
        assert_eq!(entry(MTime::new(9_999, 0)), 0);
        assert_eq!(entry(MTime::new(9_998, 0)), 1);
    }
}
