//! The sync state: what both replicas held after the last successful pass, per path
//! (kind, size, mtime, mode, SHA-256, link target). Kept in the data home per replica
//! pair and rewritten atomically only after a pass, so a killed pass leaves the old one.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use engine::entries::ChunkList;
use engine::error::Error;
use engine::fsops;
use engine::tree::{Digest, Entries, Entry, Kind, MTime};

const FORMAT: u32 = 2;

/// The state file: compact binary (postcard), read and written on every pass. Its head,
/// `(format, a, b, count)`, then `count` records, one per path in path order.
type Head<'a> = (u32, &'a [u8], &'a [u8], usize);

/// One path's record, its bytes borrowed from the file or the entry.
#[derive(Serialize, Deserialize)]
struct RecordRef<'a> {
    #[serde(borrow)]
    path: &'a [u8],
    /// 0 file, 1 dir, 2 symlink.
    kind: u8,
    size: u64,
    mode: u32,
    mtime: (i64, u32),
    hash: Option<[u8; 32]>,
    #[serde(borrow)]
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

    fn path(&self) -> &'a Path {
        Path::new(OsStr::from_bytes(self.path))
    }

    fn entry(&self) -> Entry {
        let mtime = MTime::new(self.mtime.0, self.mtime.1);
        match self.kind {
            1 => Entry::dir(self.mode, mtime),
            2 => Entry::symlink(
                Path::new(OsStr::from_bytes(self.target.unwrap_or_default())),
                mtime,
            ),
            _ => Entry::file(self.size, self.mode, mtime, self.hash.map(Digest)),
        }
    }
}

/// Reads the state of the pair (a, b); `None` if there is none yet (first sync). A
/// damaged or foreign state file is treated as none, which is safe: a first sync
/// deletes nothing. The file is read a block at a time, and its records are decoded one
/// at a time, straight into the tree.
pub fn load(file: &Path, a: &Path, b: &Path) -> Option<Entries> {
    let f = std::fs::File::open(file).ok()?;
    let file_len = f.metadata().map_or(0, |m| m.len() as usize);
    let mut seq = engine::record::SeqReader::new(f);
    let decoded = (|| {
        let head = seq.take_with(|raw| {
            let ((format, fa, fb, count), rest) = postcard::take_from_bytes::<Head>(raw)?;
            let ours = format == FORMAT
                && fa == a.as_os_str().as_bytes()
                && fb == b.as_os_str().as_bytes();
            Ok((ours.then_some(count), rest.len()))
        })?;
        let Some(count) = head else {
            return Ok(None);
        };
        // The count is the file's word: room for no more than the file could hold.
        let entries = count.min(file_len / 8);
        let mut list = ChunkList::with_capacity(entries, 0);
        for _ in 0..count {
            seq.take_with(|raw| {
                let (r, rest) = postcard::take_from_bytes::<RecordRef>(raw)?;
                list.push(r.path(), r.entry());
                Ok(((), rest.len()))
            })?;
        }
        if !seq.at_end()? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bytes after the last record",
            ));
        }
        Ok(Some(list.into_entries()))
    })();
    decoded.unwrap_or_else(|e: std::io::Error| {
        log::warn!(
            "sync state {} is damaged ({e}); syncing as a first sync",
            file.display()
        );
        None
    })
}

/// Writes the state atomically, encoded a block at a time, unless the file already holds
/// this very state. Returns whether the file was written.
pub fn save(file: &Path, a: &Path, b: &Path, state: &Entries) -> Result<bool, Error> {
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
    use std::path::PathBuf;

    #[test]
    fn state_round_trips_and_belongs_to_its_pair() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("s.json");
        let mut s = Entries::new();
        s.insert(
            PathBuf::from("x"),
            Entry::file(1, 0o600, MTime::new(5, 6), Some(Digest([3; 32]))),
        );
        s.insert(PathBuf::from("d"), Entry::dir(0o755, MTime::new(1, 0)));
        s.insert(PathBuf::from("l"), Entry::symlink("x", MTime::new(2, 3)));
        assert!(save(&f, Path::new("/a"), Path::new("/b"), &s).unwrap());
        // Streamed, it is the encoding of the whole state at once.
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
        // A cut or padded file is no state at all (a first sync deletes nothing).
        let whole = std::fs::read(&f).unwrap();
        for damaged in [&whole[..whole.len() - 3], &[&whole[..], b"x"].concat()[..]] {
            let g = d.path().join("damaged");
            std::fs::write(&g, damaged).unwrap();
            assert_eq!(load(&g, Path::new("/a"), Path::new("/b")), None);
        }
        // A state of many blocks reads back whole.
        let mut big = s.clone();
        for i in 0..5000u32 {
            let name = format!("dir {}/file {i} {}", i % 13, "n".repeat(i as usize % 40));
            big.insert(
                PathBuf::from(name),
                Entry::file(
                    i as u64,
                    0o644,
                    MTime::new(7, i),
                    Some(Digest([i as u8; 32])),
                ),
            );
        }
        let g = d.path().join("big");
        assert!(save(&g, Path::new("/a"), Path::new("/b"), &big).unwrap());
        assert!(std::fs::metadata(&g).unwrap().len() > 4 * 64 * 1024);
        assert_eq!(
            load(&g, Path::new("/a"), Path::new("/b")).as_ref(),
            Some(&big)
        );
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
