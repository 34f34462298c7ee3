//! The manifests of the store's earlier layout (`.twoway-manifest` at the top of each
//! `<name>_1/` and `<name>_0/` tree): every entry with its SHA-256, size, mode, mtime and
//! link target, the directory SHA-256 and when it was made. Read to migrate such a store
//! ([`crate::store`]); `entries_of` and `sha_of` also give what a version of a tree
//! lists and its directory SHA-256.
//!
//! The manifest is binary (postcard, raw digests): a pass reads the previous version's
//! manifest and writes a new one, and as JSON with hex digests the 50,000 entries of a
//! big tree took 9 MB and most of a pass's time. `recovery list --json` shows what
//! people read from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use engine::error::Error;
use engine::fs;
use engine::hash;
use engine::scan::after::Merged;
use engine::tree::encoding::{EntryRecord, EntryRef};
use engine::tree::pathser;
use engine::tree::{Digest, Entry, Kind, MTime, Tree};
use std::os::unix::ffi::OsStringExt;

/// The manifest's file name inside a version directory.
pub const MANIFEST: &str = engine::names::MANIFEST_NAME;

/// The manifest format written: 3 records owners; 2 (before owners were kept) is read.
const FORMAT: u32 = 3;
const LEGACY_FORMAT: u32 = 2;

/// One entry of a version.
pub type ManifestEntry = engine::tree::encoding::EntryRecord;

/// The fields of a manifest before its entries.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Header {
    pub format: u32,
    /// The versioned directory.
    #[serde(with = "pathser::bytes")]
    pub dir: PathBuf,
    /// When the version was made (RFC 3339, UTC).
    pub made: String,
    pub dir_sha256: String,
    pub files: u64,
    pub bytes: u64,
    pub root_mode: u32,
    pub root_mtime: (i64, u32),
    /// The pass that made it ended with errors (format 3 on): the version
    /// lacks what it could not read, and never pushes a complete one out of the store.
    pub incomplete: bool,
}

/// A [`Header`] of format 2.
#[derive(Deserialize)]
struct LegacyHeader {
    format: u32,
    #[serde(with = "pathser::bytes")]
    dir: PathBuf,
    made: String,
    dir_sha256: String,
    files: u64,
    bytes: u64,
    root_mode: u32,
    root_mtime: (i64, u32),
}

impl From<LegacyHeader> for Header {
    fn from(h: LegacyHeader) -> Self {
        Header {
            format: h.format,
            dir: h.dir,
            made: h.made,
            dir_sha256: h.dir_sha256,
            files: h.files,
            bytes: h.bytes,
            root_mode: h.root_mode,
            root_mtime: h.root_mtime,
            incomplete: false,
        }
    }
}

/// Decodes a manifest's head — its header and entry count — from `raw`, in either
/// format; gives what is left after it.
fn decode_head(raw: &[u8]) -> postcard::Result<((Header, usize), &[u8])> {
    let (format, _) = postcard::take_from_bytes::<u32>(raw)?;
    if format == LEGACY_FORMAT {
        let ((h, n), rest) = postcard::take_from_bytes::<(LegacyHeader, usize)>(raw)?;
        Ok(((h.into(), n), rest))
    } else {
        postcard::take_from_bytes::<(Header, usize)>(raw)
    }
}

impl Header {
    /// The header of a version of `tree` (of the directory `dir`) made now, whose
    /// entries are `entries` and directory SHA-256 `sha`.
    pub fn new<'a>(
        dir: &Path,
        tree: &Tree,
        entries: impl Iterator<Item = EntryRef<'a>>,
        sha: Digest,
    ) -> Header {
        let (mut files, mut bytes) = (0u64, 0u64);
        for e in entries.filter(|e| e.kind == Kind::File) {
            files += 1;
            bytes += e.size;
        }
        let root = tree
            .root
            .clone()
            .unwrap_or_else(|| Entry::dir(0o755, MTime::default()));
        Header {
            format: FORMAT,
            dir: dir.to_path_buf(),
            made: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            dir_sha256: sha.to_hex(),
            files,
            bytes,
            root_mode: root.mode,
            root_mtime: (root.mtime.sec, root.mtime.nsec),
            incomplete: false,
        }
    }
}

/// The entries a version of `tree` lists: everything but unknown paths, every file
/// with its hash (a file whose hash is unknown is left out).
pub fn entries_of(tree: &Tree) -> impl Iterator<Item = EntryRef<'_>> + Clone {
    tree.entries
        .iter()
        .filter(|(p, e)| !tree.is_unknown(p) && (e.kind != Kind::File || e.hash.is_some()))
        .map(|(p, e)| EntryRef::new(p, e))
}

/// The entries a version of the replica `m` lists (see [`entries_of`]), owned: the
/// replica is merged from its parts as they are read.
pub fn records_of<'m>(m: &'m Merged<'_>) -> impl Iterator<Item = EntryRecord> + 'm {
    m.entries()
        .filter(|(p, e)| {
            !engine::tree::under_any(&m.part.unknown, p)
                && (e.kind != Kind::File || e.hash.is_some())
        })
        .map(|(p, e)| EntryRecord::of(p, &e))
}

/// [`sha_of`] of entries given owned (see [`records_of`]).
pub fn sha_of_records<I: Iterator<Item = EntryRecord>>(news: impl Fn() -> I) -> Option<Digest> {
    hash::dir_sha256_owned(|| {
        news()
            .filter(|e| e.kind == Kind::File)
            .map(|e| (e.path.into_os_string().into_vec(), e.sha256))
    })
}

/// The directory SHA-256 of a version's entries (`None` if a file has no hash).
pub fn sha_of<'a>(entries: impl Iterator<Item = EntryRef<'a>> + Clone) -> Option<Digest> {
    hash::dir_sha256(
        entries
            .filter(|e| e.kind == Kind::File)
            .map(|e| (e.path, e.sha256)),
    )
}

/// Writes the manifest of `header` and `entries` (in path order; the function gives
/// them afresh each time it is called) into `version_dir`, atomically and flushed,
/// encoded a block at a time.
pub fn write<'a, I: Iterator<Item = EntryRef<'a>>>(
    version_dir: &Path,
    header: &Header,
    entries: impl Fn() -> I,
) -> Result<(), Error> {
    let count = entries().count();
    // Through the version's own handle: nothing planted in the store is followed.
    fs::Root::open(version_dir)?.write_atomic_with(Path::new(MANIFEST), |w| {
        engine::tree::encoding::write_seq(w, &(header, count), entries())
    })
}

/// A manifest read entry by entry from its file, a block at a time (a version of
/// 50,000 files is megabytes; a two-way pass patches two at once).
pub struct ManifestReader {
    path: PathBuf,
    header: Header,
    /// Entries not read yet.
    left: usize,
    seq: engine::tree::encoding::SeqReader<std::fs::File>,
}

impl ManifestReader {
    /// Opens the manifest of the version at `version_dir` and reads its header.
    pub fn open(version_dir: &Path) -> Result<ManifestReader, Error> {
        let path = version_dir.join(MANIFEST);
        let (file, _) = engine::fs::open_regular(&path)?;
        let mut seq = engine::tree::encoding::SeqReader::new(file);
        let (header, left) = match seq.take_with(|raw| {
            let (head, rest) = decode_head(raw)?;
            Ok((head, rest.len()))
        }) {
            Ok(head) => head,
            Err(e) => return Err(damaged(&path, e)),
        };
        if header.format != FORMAT && header.format != LEGACY_FORMAT {
            return Err(Error::entry(
                &path,
                format!(
                    "manifest format {} is not one this build reads",
                    header.format
                ),
            ));
        }
        Ok(ManifestReader {
            path,
            header,
            left,
            seq,
        })
    }

    /// Reads the whole manifest of the version at `version_dir` without keeping it:
    /// its header if every entry decodes and nothing follows them. A damaged manifest
    /// is refused here, not halfway through a use.
    pub fn check(version_dir: &Path) -> Result<Header, Error> {
        let mut m = ManifestReader::open(version_dir)?;
        while m.next_with(|_| ())?.is_some() {}
        Ok(m.header)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Hands the next entry (in path order) to `f`; `None` after the last one, once no
    /// byte follows it.
    pub fn next_with<O>(&mut self, f: impl FnOnce(EntryRef<'_>) -> O) -> Result<Option<O>, Error> {
        if self.left == 0 {
            return match self.seq.at_end() {
                Ok(true) => Ok(None),
                Ok(false) => Err(Error::entry(
                    &self.path,
                    "damaged manifest: bytes after the end",
                )),
                Err(e) => Err(damaged(&self.path, e)),
            };
        }
        self.left -= 1;
        match self.seq.take_entry(self.header.format == LEGACY_FORMAT, f) {
            Ok(o) => Ok(Some(o)),
            Err(e) => Err(damaged(&self.path, e)),
        }
    }

    /// The entries, owned, in path order; the first error ends them.
    pub fn records(mut self) -> impl Iterator<Item = Result<ManifestEntry, Error>> {
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            let next = self.next_with(|e| e.to_owned()).transpose();
            failed = matches!(next, Some(Err(_)));
            next
        })
    }
}

fn damaged(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidData {
        Error::entry(path, format!("damaged manifest: {e}"))
    } else {
        Error::io("read", path, e)
    }
}

/// A version's manifest.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Manifest {
    /// Encoded field by field like the rest, so a manifest is its header's fields and
    /// then its entries.
    pub head: Header,
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// The manifest of `tree` (every file must be hashed; unknown paths are left out).
    /// `sha`: the tree's directory SHA-256 when the caller knows it already.
    pub fn from_tree(dir: &Path, tree: &Tree, sha: Option<Digest>) -> Manifest {
        let sha = sha.unwrap_or_else(|| {
            sha_of(entries_of(tree)).expect("BUG: every file in a manifest has a hash")
        });
        Manifest {
            head: Header::new(dir, tree, entries_of(tree), sha),
            entries: entries_of(tree).map(|e| e.to_owned()).collect(),
        }
    }

    /// The directory SHA-256 a manifest of `tree` would record, without building it.
    pub fn dir_sha256_of(tree: &Tree) -> Digest {
        sha_of(entries_of(tree)).expect("BUG: only hashed files are listed")
    }

    /// Reads the manifest of the version at `version_dir`.
    pub fn load(version_dir: &Path) -> Result<Manifest, Error> {
        let reader = ManifestReader::open(version_dir)?;
        let head = reader.header().clone();
        let entries = reader.records().collect::<Result<Vec<_>, _>>()?;
        Ok(Manifest { head, entries })
    }

    /// Writes the manifest into `version_dir` (atomically, flushed).
    pub fn save(&self, version_dir: &Path) -> Result<(), Error> {
        write(version_dir, &self.head, || {
            self.entries.iter().map(|e| e.as_ref())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_a_tree() {
        let mut t = Tree {
            root: Some(Entry::dir(0o750, MTime::new(5, 6))),
            ..Tree::default()
        };
        t.entries
            .insert("d".into(), Entry::dir(0o700, MTime::new(1, 2)));
        t.entries.insert(
            "d/f".into(),
            Entry::file(3, 0o600, MTime::new(3, 4), Some(Digest([1; 32]))),
        );
        t.entries
            .insert("l".into(), Entry::symlink("d/f", MTime::new(7, 8)));
        let m = Manifest::from_tree(Path::new("/x"), &t, None);
        let known = Manifest::from_tree(Path::new("/x"), &t, hash::tree_sha256(&t));
        assert_eq!(known.head.dir_sha256, m.head.dir_sha256);
        let d = tempfile::tempdir().unwrap();
        m.save(d.path()).unwrap();
        let back = Manifest::load(d.path()).unwrap();
        assert_eq!(back.entries, m.entries);
        let entries: Vec<_> = back
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.to_entry()))
            .collect();
        let want: Vec<_> = t
            .entries
            .iter()
            .map(|(p, e)| (p.to_path_buf(), e.clone()))
            .collect();
        assert_eq!(entries, want);
        assert_eq!((back.head.root_mode, back.head.root_mtime), (0o750, (5, 6)));
        assert_eq!(back.head.files, 1);
        assert_eq!(
            Some(Digest::from_hex(&back.head.dir_sha256).unwrap()),
            hash::tree_sha256(&t)
        );
    }

    #[test]
    fn streamed_manifests_read_back_entry_by_entry_and_damage_is_refused() {
        let mut t = Tree {
            root: Some(Entry::dir(0o755, MTime::new(1, 0))),
            ..Tree::default()
        };
        for i in 0..3000u32 {
            let mut e = Entry::file(
                i as u64,
                0o644,
                MTime::new(9, i),
                Some(Digest([i as u8; 32])),
            );
            e.ino = 100 + i as u64;
            t.entries.insert(format!("d{}/f {i}", i % 7).into(), e);
        }
        for d in 0..7 {
            t.entries
                .insert(format!("d{d}").into(), Entry::dir(0o700, MTime::new(2, d)));
        }
        t.entries
            .insert("l".into(), Entry::symlink("d1", MTime::new(3, 0)));
        let m = Manifest::from_tree(Path::new("/x"), &t, None);
        let d = tempfile::tempdir().unwrap();
        m.save(d.path()).unwrap();
        // Written a block at a time, the file is the whole manifest's encoding.
        let file = std::fs::read(d.path().join(MANIFEST)).unwrap();
        assert_eq!(file, postcard::to_allocvec(&m).unwrap());
        let checked = ManifestReader::check(d.path()).unwrap();
        assert_eq!(checked.dir_sha256, m.head.dir_sha256);
        let read = ManifestReader::open(d.path()).unwrap();
        assert_eq!(read.header().files, 3000);
        let entries: Vec<ManifestEntry> = read.records().map(Result::unwrap).collect();
        assert_eq!(entries, m.entries);
        assert_eq!(
            entries.iter().map(|e| e.as_ref()).collect::<Vec<_>>(),
            entries_of(&t).collect::<Vec<_>>()
        );

        for cut in [file.len() - 1, file.len() / 2, 10] {
            std::fs::write(d.path().join(MANIFEST), &file[..cut]).unwrap();
            assert!(ManifestReader::check(d.path()).is_err(), "cut at {cut}");
            if cut > 1000 {
                let read = ManifestReader::open(d.path()).unwrap().records();
                assert!(
                    read.last().unwrap().is_err(),
                    "cut at {cut}: the entries end in an error"
                );
            }
        }
        let mut longer = file.clone();
        longer.push(0);
        std::fs::write(d.path().join(MANIFEST), &longer).unwrap();
        assert!(ManifestReader::check(d.path()).is_err(), "a byte too many");
    }
}
