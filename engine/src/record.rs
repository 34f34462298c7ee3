//! One entry as the tool writes it into a version manifest: path, kind, size, mode,
//! mtime, SHA-256, link target and inode. Plain data, stored in binary (postcard).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pathser;
use crate::tree::{Digest, Entry, Kind, MTime};

/// An entry of a manifest or a sync state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    #[serde(with = "pathser::bytes")]
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime: (i64, u32),
    pub sha256: Option<Digest>,
    #[serde(with = "pathser::bytes::opt")]
    pub target: Option<PathBuf>,
    /// The inode the file had in its replica (lets a later version reuse this one's
    /// link when the replica still holds that very file).
    pub ino: Option<u64>,
}

impl EntryRecord {
    /// The entry this record describes.
    pub fn to_entry(&self) -> Entry {
        let mtime = MTime::new(self.mtime.0, self.mtime.1);
        match self.kind {
            Kind::Dir => Entry::dir(self.mode, mtime),
            Kind::Symlink => Entry::symlink(self.target.clone().unwrap_or_default(), mtime),
            Kind::File => Entry::file(self.size, self.mode, mtime, self.sha256),
        }
    }
}

/// [`EntryRecord`] with its paths borrowed (from a tree, or from the bytes of a manifest
/// being read): the same fields in the same encoding, and no allocation per entry.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    #[serde(borrow, with = "pathser::bytes::borrowed")]
    pub path: &'a Path,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime: (i64, u32),
    pub sha256: Option<Digest>,
    #[serde(borrow, with = "pathser::bytes::borrowed::opt")]
    pub target: Option<&'a Path>,
    pub ino: Option<u64>,
}

impl<'a> EntryRef<'a> {
    /// The record of `e` at `path`.
    pub fn new(path: &'a Path, e: &'a Entry) -> EntryRef<'a> {
        EntryRef {
            path,
            kind: e.kind,
            size: e.size,
            mode: e.mode,
            mtime: (e.mtime.sec, e.mtime.nsec),
            sha256: e.hash,
            target: e.link_target(),
            ino: (e.kind == Kind::File && e.ino != 0).then_some(e.ino),
        }
    }

    pub fn mtime(&self) -> MTime {
        MTime::new(self.mtime.0, self.mtime.1)
    }

    /// The owned record.
    pub fn to_owned(&self) -> EntryRecord {
        EntryRecord {
            path: self.path.to_path_buf(),
            kind: self.kind,
            size: self.size,
            mode: self.mode,
            mtime: self.mtime,
            sha256: self.sha256,
            target: self.target.map(Path::to_path_buf),
            ino: self.ino,
        }
    }
}

impl EntryRecord {
    /// The record borrowed.
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            path: &self.path,
            kind: self.kind,
            size: self.size,
            mode: self.mode,
            mtime: self.mtime,
            sha256: self.sha256,
            target: self.target.as_deref(),
            ino: self.ino,
        }
    }
}

/// Encodes `head`, then `items`, with postcard into `out`, a block at a time: the
/// tool's record files (stat caches, manifests, sync states) are written without being
/// held whole in memory. `head` carries the count of `items` where the format has one.
pub fn write_seq<T: Serialize>(
    out: &mut impl std::io::Write,
    head: &impl Serialize,
    items: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    const BLOCK: usize = 64 * 1024;
    let enc = |e: postcard::Error| std::io::Error::other(e);
    let mut buf = postcard::to_extend(head, Vec::with_capacity(BLOCK + 1024)).map_err(enc)?;
    for item in items {
        buf = postcard::to_extend(&item, buf).map_err(enc)?;
        if buf.len() >= BLOCK {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn owned_and_borrowed_records_encode_alike() {
        let odd = Path::new(OsStr::from_bytes(b"d/\xff name"));
        let mut file = Entry::file(7, 0o640, MTime::new(-3, 9), Some(Digest([5; 32])));
        file.ino = 42;
        let link = Entry::symlink(odd, MTime::new(1, 2));
        for (p, e) in [(odd, &file), (Path::new("l"), &link)] {
            let r = EntryRef::new(p, e);
            let owned = r.to_owned();
            let bytes = postcard::to_allocvec(&r).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&owned).unwrap());
            assert_eq!(postcard::from_bytes::<EntryRecord>(&bytes).unwrap(), owned);
            assert_eq!(postcard::from_bytes::<EntryRef>(&bytes).unwrap(), r);
            assert_eq!(owned.as_ref(), r);
        }
    }
}
