use super::*;
use engine::scan::{self, ScanOptions};

/// The replica's tree, every file hashed.
fn hashed_tree(root: &Path) -> Tree {
    let mut t = scan::scan(root, &ScanOptions::default()).unwrap();
    engine::scan::cache::hash_missing(root, &mut t);
    t
}

/// Writes `bytes` at `p` as a new file (a new inode, as the tool itself writes).
fn replace(p: &Path, bytes: &[u8]) {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

/// What the version holds for "a", and its directory SHA-256.
fn recorded_a(v: &VersionedDir) -> (Digest, u64, String) {
    let m = ManifestReader::open(&v.view().latest.unwrap()).unwrap();
    let sha = m.header().dir_sha256.clone();
    let a = m
        .records()
        .map(Result::unwrap)
        .find(|e| e.path == Path::new("a"))
        .unwrap();
    (a.sha256.unwrap(), a.size, sha)
}

#[test]
fn a_file_replaced_after_it_was_hashed_is_recorded_as_the_version_holds_it() {
    for mode in [VersionMode::Link, VersionMode::Copy] {
        let d = tempfile::tempdir().unwrap();
        let (replica, store) = (d.path().join("r"), d.path().join("store"));
        std::fs::create_dir_all(replica.join("d")).unwrap();
        replace(&replica.join("a"), b"old");
        replace(&replica.join("d/b"), b"b");
        let home = DataHome::at(d.path().join("home"));
        let v = VersionedDir::new(&replica, &store, mode, Vec::new());

        // Built from nothing (the first version), then patched (a recycled one) or,
        // copying, built again sharing what the last version holds.
        for round in 0..4 {
            // A file of its own each round: every round makes a version.
            replace(&replica.join(format!("round {round}")), b"r");
            let stale = hashed_tree(&replica);
            let now = format!("bytes of round {round}");
            replace(&replica.join("a"), now.as_bytes());
            replace(&replica.join("d/b"), now.as_bytes());
            v.record(&home, &replica, &stale)
                .unwrap()
                .expect("a new version");
            let (sha, size, dir_sha) = recorded_a(&v);
            let latest = v.view().latest.unwrap();
            // The manifest describes the bytes the version holds, whichever they are.
            let held = std::fs::read(latest.join("a")).unwrap();
            let at = format!("{mode:?}, round {round}");
            assert_eq!(sha, hash::hash_file(&latest.join("a")).unwrap().0, "{at}");
            assert_eq!(size, held.len() as u64, "{at}");
            let mut listed = scan::scan(&latest, &ScanOptions::default()).unwrap();
            listed
                .entries
                .retain(|p, _| p != Path::new(crate::manifest::MANIFEST));
            engine::scan::cache::hash_missing(&latest, &mut listed);
            assert_eq!(
                Some(dir_sha),
                hash::tree_sha256(&listed).map(|d| d.to_hex()),
                "{at}"
            );
            if mode == VersionMode::Link {
                // Linked, never copied: the file the pass hashed where the recycled
                // tree still holds that very inode (the spare after round 0), else
                // the one the replica holds now.
                let held_ino = ino(&latest.join("a"));
                if held_ino != stale.entries[Path::new("a")].ino {
                    assert_eq!(held_ino, ino(&replica.join("a")), "{at}");
                    assert_eq!(held, now.as_bytes(), "{at}");
                }
            }
        }
    }
}

fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().ino()
}

/// Kind, mode, mtime, hash and link target of every entry under `root` but the
/// manifest: what a version must hold of its replica.
#[allow(clippy::type_complexity)]
fn content(
    root: &Path,
) -> Vec<(
    PathBuf,
    Kind,
    u32,
    engine::tree::MTime,
    Option<Digest>,
    Option<PathBuf>,
)> {
    let mut t = hashed_tree(root);
    t.entries.retain(|p, _| p != Path::new(MANIFEST));
    t.entries
        .iter()
        .filter(|(p, _)| !p.as_os_str().is_empty())
        .map(|(p, e)| {
            let target = e.link_target().map(Path::to_path_buf);
            // A version's directories are kept owner-writable; the manifest has
            // their real modes.
            let mode = if e.kind == Kind::Dir { 0 } else { e.mode };
            let mtime = if e.kind == Kind::Dir {
                engine::tree::MTime::default()
            } else {
                e.mtime
            };
            (p.to_path_buf(), e.kind, mode, mtime, e.hash, target)
        })
        .collect()
}

/// A replica of files, a symlink, an empty directory and a nested one.
fn small_replica(root: &Path) {
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    replace(&root.join("a"), b"first a");
    replace(&root.join("d/b"), b"b");
    replace(&root.join("d/e/c"), b"c");
    std::os::unix::fs::symlink("d/b", root.join("l")).unwrap();
}

/// A [`small_replica`] in a temporary directory, with a data home and a store
/// beside it (the directory goes when the first item is dropped).
fn small_store(mode: VersionMode) -> (tempfile::TempDir, PathBuf, DataHome, VersionedDir) {
    let d = tempfile::tempdir().unwrap();
    let (replica, store) = (d.path().join("r"), d.path().join("store"));
    small_replica(&replica);
    let home = DataHome::at(d.path().join("home"));
    let v = VersionedDir::new(&replica, &store, mode, Vec::new());
    (d, replica, home, v)
}

#[test]
fn the_first_version_leaves_a_spare_that_the_second_recycles() {
    let (_d, replica, home, v) = small_store(VersionMode::Link);
    let (one, zero, spare) = (v.slot("_1"), v.slot("_0"), v.slot(".spare"));

    v.record(&home, &replica, &hashed_tree(&replica))
        .unwrap()
        .expect("a version");
    // The spare is `_1` again, the very files and manifest, and no version.
    assert_eq!(v.view().latest.as_deref(), Some(one.as_path()));
    assert_eq!(v.view().previous, None);
    assert_eq!(content(&spare), content(&one));
    for p in ["a", "d/b", "d/e/c", MANIFEST] {
        assert_eq!(ino(&spare.join(p)), ino(&one.join(p)), "{p}");
    }
    let spare_dir = ino(&spare);

    // The second version is the spare, patched where the replica changed.
    replace(&replica.join("a"), b"second a");
    std::fs::remove_file(replica.join("d/e/c")).unwrap();
    replace(&replica.join("new"), b"new");
    v.record(&home, &replica, &hashed_tree(&replica))
        .unwrap()
        .expect("a version");
    assert!(!spare.exists());
    assert_eq!(
        ino(&one),
        spare_dir,
        "the spare was recycled as the new `_1`"
    );
    assert_eq!(content(&one), content(&replica));
    assert_eq!(std::fs::read(zero.join("a")).unwrap(), b"first a");
    assert!(zero.join("d/e/c").is_file());
    for p in ["a", "d/b", "new"] {
        assert_eq!(ino(&one.join(p)), ino(&replica.join(p)), "{p}");
    }
    let sha = ManifestReader::check(&one).unwrap().dir_sha256;
    assert_eq!(
        Some(sha),
        manifest::sha_of(manifest::entries_of(&hashed_tree(&replica))).map(|d| d.to_hex())
    );

    // From now on `_0` is recycled: no spare is made again.
    replace(&replica.join("a"), b"third a");
    v.record(&home, &replica, &hashed_tree(&replica))
        .unwrap()
        .expect("a version");
    assert!(!spare.exists());
    assert_eq!(content(&one), content(&replica));
    assert_eq!(std::fs::read(zero.join("a")).unwrap(), b"second a");
}

#[test]
fn a_tree_whose_manifest_is_damaged_is_not_recycled() {
    // Damaged at the very end (bytes after the last entry) or in the middle.
    for damage in ["trailing", "truncated"] {
        let (_d, replica, home, v) = small_store(VersionMode::Link);
        for round in ["1", "2"] {
            replace(&replica.join("a"), round.as_bytes());
            v.record(&home, &replica, &hashed_tree(&replica))
                .unwrap()
                .expect("a version");
        }
        let m = v.slot("_0").join(MANIFEST);
        let mut bytes = std::fs::read(&m).unwrap();
        match damage {
            "trailing" => bytes.extend_from_slice(b"junk"),
            _ => bytes.truncate(bytes.len() - 20),
        }
        std::fs::remove_file(&m).unwrap();
        std::fs::write(&m, &bytes).unwrap();
        let damaged_dir = ino(&v.slot("_0"));

        replace(&replica.join("a"), b"3");
        v.record(&home, &replica, &hashed_tree(&replica))
            .unwrap()
            .expect("a version");
        let one = v.slot("_1");
        assert_ne!(
            ino(&one),
            damaged_dir,
            "{damage}: the damaged tree was recycled"
        );
        assert_eq!(content(&one), content(&replica), "{damage}");
        assert_eq!(
            std::fs::read(v.slot("_0").join("a")).unwrap(),
            b"2",
            "{damage}"
        );
        assert!(ManifestReader::check(&one).is_ok(), "{damage}");
    }
}

#[test]
fn a_copying_store_makes_no_spare() {
    let (_d, replica, home, v) = small_store(VersionMode::Copy);
    v.record(&home, &replica, &hashed_tree(&replica))
        .unwrap()
        .expect("a version");
    assert!(!v.slot(".spare").exists());
    assert_eq!(content(&v.slot("_1")), content(&replica));
}

#[test]
fn a_recycle_cut_short_never_becomes_a_version() {
    let (_d, replica, home, v) = small_store(VersionMode::Link);
    let versions = |v: &VersionedDir| {
        let view = v.view();
        [view.latest, view.previous].map(|p| p.map(|p| std::fs::read(p.join("a")).unwrap()))
    };
    for round in ["1", "2"] {
        replace(&replica.join("a"), round.as_bytes());
        v.record(&home, &replica, &hashed_tree(&replica))
            .unwrap()
            .expect("a version");
    }
    assert_eq!(versions(&v), [Some(b"2".to_vec()), Some(b"1".to_vec())]);
    // A recycle first moves `_0`, its manifest still in it, to where the version
    // is built; a crash there leaves it so.
    std::fs::rename(v.slot("_0"), v.slot(".build")).unwrap();
    let _lock = v.lock(&home).unwrap();
    v.repair().unwrap();
    assert!(!v.slot(".build").exists());
    assert_eq!(versions(&v), [Some(b"2".to_vec()), None]);
    // And a spare whose build was cut short (no manifest yet) goes.
    std::fs::create_dir_all(v.slot(".spare").join("d")).unwrap();
    v.repair().unwrap();
    assert!(!v.slot(".spare").exists());
}
