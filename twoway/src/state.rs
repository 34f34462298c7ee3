//! The sync state: what both replicas held after the last successful pass, per path
//! (kind, size, mtime, mode, SHA-256, link target). Kept in the data home per replica
//! pair and rewritten atomically only after a pass, so a killed pass leaves the old one.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use engine::error::Error;
use engine::fsops;
use engine::tree::{Digest, Entry, Kind, MTime};

const FORMAT: u32 = 2;

/// The state file: compact binary (postcard), read and written on every pass with one
/// record per path.
#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    a: Vec<u8>,
    b: Vec<u8>,
    entries: Vec<Record>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    path: Vec<u8>,
    /// 0 file, 1 dir, 2 symlink.
    kind: u8,
    size: u64,
    mode: u32,
    mtime: (i64, u32),
    hash: Option<[u8; 32]>,
    target: Option<Vec<u8>>,
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

fn path(b: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(b))
}

impl Record {
    fn into_entry(self) -> (PathBuf, Entry) {
        let mtime = MTime::new(self.mtime.0, self.mtime.1);
        let e = match self.kind {
            1 => Entry::dir(self.mode, mtime),
            2 => Entry::symlink(path(self.target.unwrap_or_default()), mtime),
            _ => Entry::file(self.size, self.mode, mtime, self.hash.map(Digest)),
        };
        (path(self.path), e)
    }
}

/// Reads the state of the pair (a, b); `None` if there is none yet (first sync). A
/// damaged or foreign state file is treated as none, which is safe: a first sync
/// deletes nothing.
pub fn load(file: &Path, a: &Path, b: &Path) -> Option<engine::tree::Entries> {
    let raw = std::fs::read(file).ok()?;
    let disk: OnDisk = match postcard::from_bytes(&raw) {
        Ok(d) => d,
        Err(e) => {
            log::warn!(
                "sync state {} is damaged ({e}); syncing as a first sync",
                file.display()
            );
            return None;
        }
    };
    if disk.format != FORMAT || disk.a != bytes(a) || disk.b != bytes(b) {
        return None;
    }
    Some(disk.entries.into_iter().map(Record::into_entry).collect())
}

/// [`Record`] with its paths borrowed: the same encoding (a byte string is a sequence
/// of bytes to postcard either way).
#[derive(Serialize)]
struct RecordRef<'a> {
    path: &'a [u8],
    kind: u8,
    size: u64,
    mode: u32,
    mtime: (i64, u32),
    hash: Option<[u8; 32]>,
    target: Option<&'a [u8]>,
}

impl<'a> RecordRef<'a> {
    fn new(p: &'a Path, e: &'a Entry) -> RecordRef<'a> {
        RecordRef {
            path: p.as_os_str().as_bytes(),
            kind: match e.kind {
                Kind::File => 0,
                Kind::Dir => 1,
                Kind::Symlink => 2,
            },
            size: e.size,
            mode: e.mode,
            mtime: (e.mtime.sec, e.mtime.nsec),
            hash: e.hash.map(|d| d.0),
            target: e.link_target().map(|t| t.as_os_str().as_bytes()),
        }
    }
}

/// Writes the state atomically, encoded a block at a time, unless the file already holds
/// this very state. Returns whether the file was written.
pub fn save(file: &Path, a: &Path, b: &Path, state: &engine::tree::Entries) -> Result<bool, Error> {
    let head = (
        FORMAT,
        a.as_os_str().as_bytes(),
        b.as_os_str().as_bytes(),
        state.len(),
    );
    let records = || state.iter().map(|(p, e)| RecordRef::new(p, e));
    fsops::write_atomic_unless_same(file, |mut w| {
        engine::record::write_seq(&mut w, &head, records())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::tree::{Digest, MTime};

    #[test]
    fn state_round_trips_and_belongs_to_its_pair() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("s.json");
        let mut s = engine::tree::Entries::new();
        s.insert(
            PathBuf::from("x"),
            Entry::file(1, 0o600, MTime::new(5, 6), Some(Digest([3; 32]))),
        );
        s.insert(PathBuf::from("d"), Entry::dir(0o755, MTime::new(1, 0)));
        s.insert(PathBuf::from("l"), Entry::symlink("x", MTime::new(2, 3)));
        assert!(save(&f, Path::new("/a"), Path::new("/b"), &s).unwrap());
        // Streamed, it is the encoding of the whole state (which `OnDisk` decodes).
        let records: Vec<RecordRef> = s.iter().map(|(p, e)| RecordRef::new(p, e)).collect();
        let whole = (FORMAT, &b"/a"[..], &b"/b"[..], records);
        assert_eq!(
            std::fs::read(&f).unwrap(),
            postcard::to_allocvec(&whole).unwrap()
        );
        assert_eq!(
            load(&f, Path::new("/a"), Path::new("/b")).as_ref(),
            Some(&s)
        );
        assert_eq!(load(&f, Path::new("/a"), Path::new("/c")), None);
        // The same state again leaves the file alone; a changed one replaces it, also
        // when only its end differs or it is a prefix of what is there.
        use std::os::unix::fs::MetadataExt;
        let ino = || std::fs::metadata(&f).unwrap().ino();
        let before = ino();
        assert!(!save(&f, Path::new("/a"), Path::new("/b"), &s).unwrap());
        assert_eq!(ino(), before);
        let mut longer = s.clone();
        longer.insert(PathBuf::from("z"), Entry::dir(0o700, MTime::new(9, 0)));
        for t in [&longer, &s] {
            assert!(save(&f, Path::new("/a"), Path::new("/b"), t).unwrap());
            assert_eq!(load(&f, Path::new("/a"), Path::new("/b")).as_ref(), Some(t));
            if std::ptr::eq(t, &longer) {
                // A new file (created while the old one still existed).
                assert_ne!(ino(), before);
            }
        }
    }
}
