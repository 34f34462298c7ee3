//! The sync state: what both replicas held after the last successful pass, per path
//! (kind, size, mtime, mode, SHA-256, link target). Kept in the data home per replica
//! pair and rewritten atomically only after a pass, so a killed pass leaves the old one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use engine::error::Error;
use engine::fsops;
use engine::pathser::PathRepr;
use engine::record::EntryRecord;
use engine::tree::Entry;

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    a: PathRepr,
    b: PathRepr,
    entries: Vec<EntryRecord>,
}

/// Reads the state of the pair (a, b); `None` if there is none yet (first sync). A
/// damaged or foreign state file is treated as none, which is safe: a first sync
/// deletes nothing.
pub fn load(file: &Path, a: &Path, b: &Path) -> Option<BTreeMap<PathBuf, Entry>> {
    let bytes = std::fs::read(file).ok()?;
    let disk: OnDisk = match serde_json::from_slice(&bytes) {
        Ok(d) => d,
        Err(e) => {
            log::warn!(
                "sync state {} is damaged ({e}); syncing as a first sync",
                file.display()
            );
            return None;
        }
    };
    if disk.format != FORMAT || disk.a.into_path() != a || disk.b.into_path() != b {
        return None;
    }
    Some(
        disk.entries
            .into_iter()
            .map(|r| (r.path.clone(), r.to_entry()))
            .collect(),
    )
}

/// Writes the state atomically.
pub fn save(
    file: &Path,
    a: &Path,
    b: &Path,
    state: &BTreeMap<PathBuf, Entry>,
) -> Result<(), Error> {
    let disk = OnDisk {
        format: FORMAT,
        a: PathRepr::from_path(a),
        b: PathRepr::from_path(b),
        entries: state
            .iter()
            .map(|(p, e)| EntryRecord::new(p.clone(), e))
            .collect(),
    };
    let bytes = serde_json::to_vec(&disk)
        .map_err(|e| Error::io("encode", file, std::io::Error::other(e)))?;
    fsops::write_atomic(file, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::tree::{Digest, MTime};

    #[test]
    fn state_round_trips_and_belongs_to_its_pair() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("s.json");
        let mut s = BTreeMap::new();
        s.insert(
            PathBuf::from("x"),
            Entry::file(1, 0o600, MTime::new(5, 6), Some(Digest([3; 32]))),
        );
        s.insert(PathBuf::from("d"), Entry::dir(0o755, MTime::new(1, 0)));
        save(&f, Path::new("/a"), Path::new("/b"), &s).unwrap();
        assert_eq!(load(&f, Path::new("/a"), Path::new("/b")), Some(s));
        assert_eq!(load(&f, Path::new("/a"), Path::new("/c")), None);
    }
}
