//! One entry as the tool writes it into its own JSON files (version manifests, sync
//! state): path, kind, size, mode, mtime, SHA-256 and link target. Plain data.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::pathser;
use crate::tree::{Digest, Entry, Kind, MTime};

/// An entry of a manifest or a sync state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    #[serde(with = "pathser")]
    pub path: PathBuf,
    pub kind: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    pub mode: u32,
    pub mtime: (i64, u32),
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "pathser::opt"
    )]
    pub target: Option<PathBuf>,
    /// The inode the file had in its replica (lets a later version reuse this one's
    /// link when the replica still holds that very file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl EntryRecord {
    /// The record of `e` at `path`.
    pub fn new(path: PathBuf, e: &Entry) -> EntryRecord {
        EntryRecord {
            path,
            kind: e.kind.name().to_string(),
            size: e.size,
            mode: e.mode,
            mtime: (e.mtime.sec, e.mtime.nsec),
            sha256: e.hash.map(Digest::to_hex),
            target: e.target.clone(),
            ino: (e.kind == Kind::File && e.ino != 0).then_some(e.ino),
        }
    }

    /// The entry this record describes.
    pub fn to_entry(&self) -> Entry {
        let mtime = MTime::new(self.mtime.0, self.mtime.1);
        match self.kind.as_str() {
            "dir" => Entry::dir(self.mode, mtime),
            "symlink" => Entry::symlink(self.target.clone().unwrap_or_default(), mtime),
            _ => Entry::file(self.size, self.mode, mtime, self.digest()),
        }
    }

    pub fn kind(&self) -> Kind {
        match self.kind.as_str() {
            "dir" => Kind::Dir,
            "symlink" => Kind::Symlink,
            _ => Kind::File,
        }
    }

    pub fn digest(&self) -> Option<Digest> {
        self.sha256.as_deref().and_then(Digest::from_hex)
    }
}
