//! A version's manifest: every entry of the versioned tree with its SHA-256, size, mode,
//! mtime and link target, the directory SHA-256 and when it was made. Restore rebuilds
//! from it and `verify` re-checks the stored bytes against it. Stored as
//! `.twoway-manifest` at the top of the version; written once, never modified.
//!
//! The manifest is binary (postcard, raw digests): a pass reads the previous version's
//! manifest and writes a new one, and as JSON with hex digests the 50,000 entries of a
//! big tree took 9 MB and most of a pass's time. `recovery list --json` shows what
//! people read from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use engine::error::Error;
use engine::fsops;
use engine::hash;
use engine::pathser;
use engine::tree::{Digest, Entry, Kind, MTime, Tree};

/// The manifest's file name inside a version directory.
pub const MANIFEST: &str = engine::names::MANIFEST_NAME;

const FORMAT: u32 = 2;

/// The head of a manifest: its first fields, in the same order.
#[derive(Deserialize)]
struct Head {
    format: u32,
    #[serde(with = "pathser::bytes")]
    _dir: PathBuf,
    _made: String,
    dir_sha256: String,
}

/// One entry of a version.
pub type ManifestEntry = engine::record::EntryRecord;

/// A version's manifest.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Manifest {
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
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// The manifest of `tree` (every file must be hashed; unknown paths are left out).
    /// `sha`: the tree's directory SHA-256 when the caller knows it already.
    pub fn from_tree(dir: &Path, tree: &Tree, sha: Option<Digest>) -> Manifest {
        let mut entries = Vec::with_capacity(tree.entries.len());
        let (mut files, mut bytes) = (0u64, 0u64);
        for (p, e) in &tree.entries {
            if tree.is_unknown(p) || (e.kind == Kind::File && e.hash.is_none()) {
                continue;
            }
            if e.kind == Kind::File {
                files += 1;
                bytes += e.size;
            }
            entries.push(ManifestEntry::new(p.clone(), e));
        }
        let sha = sha.unwrap_or_else(|| {
            hash::dir_sha256(
                entries
                    .iter()
                    .filter(|e| e.kind == Kind::File)
                    .map(|e| (e.path.as_path(), e.sha256)),
            )
            .expect("BUG: every file in a manifest has a hash")
        });
        let root = tree
            .root
            .clone()
            .unwrap_or_else(|| Entry::dir(0o755, MTime::default()));
        Manifest {
            format: FORMAT,
            dir: dir.to_path_buf(),
            made: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            dir_sha256: sha.to_hex(),
            files,
            bytes,
            root_mode: root.mode,
            root_mtime: (root.mtime.sec, root.mtime.nsec),
            entries,
        }
    }

    /// The directory SHA-256 a manifest of `tree` would record, without building it.
    pub fn dir_sha256_of(tree: &Tree) -> Digest {
        hash::dir_sha256(
            tree.entries
                .iter()
                .filter(|(p, e)| e.kind == Kind::File && e.hash.is_some() && !tree.is_unknown(p))
                .map(|(p, e)| (p.as_path(), e.hash)),
        )
        .expect("BUG: only hashed files are listed")
    }

    /// The version as a tree the mirror planner can restore from.
    pub fn to_tree(&self) -> Tree {
        let mut t = Tree {
            root: Some(Entry::dir(
                self.root_mode,
                MTime::new(self.root_mtime.0, self.root_mtime.1),
            )),
            ..Tree::default()
        };
        for e in &self.entries {
            t.entries.insert(e.path.clone(), e.to_entry());
        }
        t
    }

    /// Every file hash the version holds.
    pub fn hashes(&self) -> impl Iterator<Item = Digest> + '_ {
        self.entries.iter().filter_map(|e| e.sha256)
    }

    /// The directory SHA-256 of the version at `version_dir`, read from the head of its
    /// manifest without decoding all of it (a manifest of 50,000 files is megabytes).
    pub fn peek_dir_sha256(version_dir: &Path) -> Option<String> {
        use std::io::Read;
        let mut head = Vec::with_capacity(16 * 1024);
        std::fs::File::open(version_dir.join(MANIFEST))
            .ok()?
            .take(16 * 1024)
            .read_to_end(&mut head)
            .ok()?;
        let (h, _) = postcard::take_from_bytes::<Head>(&head).ok()?;
        (h.format == FORMAT && Digest::from_hex(&h.dir_sha256).is_some()).then_some(h.dir_sha256)
    }

    /// Reads the manifest of the version at `version_dir`.
    pub fn load(version_dir: &Path) -> Result<Manifest, Error> {
        let path = version_dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        match postcard::from_bytes::<Manifest>(&bytes) {
            Ok(m) if m.format == FORMAT => Ok(m),
            Ok(m) => Err(Error::entry(
                path,
                format!("manifest format {} is not one this build reads", m.format),
            )),
            Err(e) => Err(Error::entry(path, format!("damaged manifest: {e}"))),
        }
    }

    /// Writes the manifest into `version_dir` (atomically, flushed).
    pub fn save(&self, version_dir: &Path) -> Result<(), Error> {
        let path = version_dir.join(MANIFEST);
        let bytes = postcard::to_allocvec(self)
            .map_err(|e| Error::io("encode", &path, std::io::Error::other(e)))?;
        fsops::write_atomic(&path, &bytes)
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
        assert_eq!(known.dir_sha256, m.dir_sha256);
        let d = tempfile::tempdir().unwrap();
        m.save(d.path()).unwrap();
        let back = Manifest::load(d.path()).unwrap();
        assert_eq!(
            Manifest::peek_dir_sha256(d.path()).as_deref(),
            Some(m.dir_sha256.as_str())
        );
        let t2 = back.to_tree();
        assert_eq!(t2.entries, t.entries);
        assert_eq!(t2.root, t.root);
        assert_eq!(back.files, 1);
        assert_eq!(
            Some(Digest::from_hex(&back.dir_sha256).unwrap()),
            hash::tree_sha256(&t)
        );
    }
}
