//! One entry as the tool writes it into a version manifest: path, kind, size, mode,
//! mtime, SHA-256, link target and inode. Plain data, stored in binary (postcard).

use std::path::PathBuf;

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
    /// The record of `e` at `path`.
    pub fn new(path: PathBuf, e: &Entry) -> EntryRecord {
        EntryRecord {
            path,
            kind: e.kind,
            size: e.size,
            mode: e.mode,
            mtime: (e.mtime.sec, e.mtime.nsec),
            sha256: e.hash,
            target: e.target.clone(),
            ino: (e.kind == Kind::File && e.ino != 0).then_some(e.ino),
        }
    }

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
