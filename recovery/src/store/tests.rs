use super::*;
use engine::scan::after::Before;
use engine::scan::{self, ScanOptions};
use std::os::unix::fs::MetadataExt;

/// The replica's tree, every file hashed.
fn hashed_tree(root: &Path) -> Tree {
    let mut t = scan::scan(root, &ScanOptions::default()).unwrap();
    engine::scan::cache::hash_missing(root, &mut t);
    t
}

/// Records `replica` as a pass would, every file hashed.
fn record_now(v: &VersionedDir, home: &DataHome, replica: &Path) {
    v.record_pass(
        home,
        replica,
        After::Whole(&hashed_tree(replica)),
        None,
        true,
    )
    .unwrap();
}

/// Writes `bytes` at `p` as a new file (a new inode, as the tool itself writes).
fn replace(p: &Path, bytes: &[u8]) {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

fn setup() -> (tempfile::TempDir, PathBuf, DataHome, VersionedDir) {
    let d = tempfile::tempdir().unwrap();
    let replica = d.path().join("r");
    std::fs::create_dir_all(replica.join("d")).unwrap();
    replace(&replica.join("a"), b"a1");
    replace(&replica.join("d/b"), b"b1");
    let home = DataHome::at(d.path().join("home"));
    let v = VersionedDir::new(
        &replica,
        &d.path().join("store"),
        VersionMode::Link,
        Vec::new(),
    );
    (d, replica, home, v)
}

/// Every inode of the files under `dir`.
fn inodes(dir: &Path) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                out.insert(m.ino());
            }
        }
    }
    out
}

#[test]
fn no_store_file_shares_an_inode_with_a_live_file_after_a_pass() {
    let (d, replica, home, v) = setup();
    v.record(&home, &replica, &hashed_tree(&replica))
        .unwrap()
        .unwrap();
    // A pass replaces "a" and deletes "d/b": kept first, then changed.
    let before = hashed_tree(&replica);
    let lost: Vec<(PathBuf, Option<Digest>)> = ["a", "d/b"]
        .iter()
        .map(|p| (PathBuf::from(p), before.entries[Path::new(p)].hash))
        .collect();
    v.keep_files(&home, &replica, Before::whole(&before), None, &lost, None)
        .unwrap();
    replace(&replica.join("a"), b"a2");
    std::fs::remove_file(replica.join("d/b")).unwrap();
    v.record(&home, &replica, &hashed_tree(&replica))
        .unwrap()
        .unwrap();
    let store = inodes(&d.path().join("store"));
    let live = inodes(&replica);
    assert!(store.is_disjoint(&live), "store {store:?} live {live:?}");
    // Both old contents are held: an edit in place of the live file changes nothing.
    std::fs::write(replica.join("a"), b"in place").unwrap();
    let first = v.history().state(1).unwrap();
    for e in first.entries.iter().filter(|e| e.kind == Kind::File) {
        let obj = v
            .history()
            .path()
            .join(history::object_path(&e.sha256.unwrap()));
        let (got, _) = hash::hash_file(&obj).unwrap();
        assert_eq!(Some(got), e.sha256, "{}", e.path.display());
    }
}

#[test]
fn a_hand_edit_that_no_version_holds_is_saved_as_a_version_before_it_goes() {
    let (_d, replica, home, v) = setup();
    v.record(&home, &replica, &hashed_tree(&replica))
        .unwrap()
        .unwrap();
    replace(&replica.join("a"), b"hand edit");
    let before = hashed_tree(&replica);
    let lost = vec![(PathBuf::from("a"), before.entries[Path::new("a")].hash)];
    v.keep_files(&home, &replica, Before::whole(&before), None, &lost, None)
        .unwrap();
    let listed = v.history().list().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].head.why, Why::BeforePass);
    // Content the latest version holds needs no version of its own.
    let again = hashed_tree(&replica);
    let lost = vec![(PathBuf::from("d/b"), again.entries[Path::new("d/b")].hash)];
    v.keep_files(&home, &replica, Before::whole(&again), None, &lost, None)
        .unwrap();
    assert_eq!(v.history().list().unwrap().len(), 2);
}

#[test]
fn the_retention_policy_drops_old_versions_and_keeps_tagged_ones() {
    let (_d, replica, home, v) = setup();
    let keep = Keep {
        last: 2,
        hourly: 0,
        daily: 0,
        weekly: 0,
    };
    let v = v.with_policy((keep, None), Some("first".into()));
    for i in 0..5 {
        replace(&replica.join("a"), format!("a{i}").as_bytes());
        let before = hashed_tree(&replica);
        let lost = vec![(PathBuf::from("a"), before.entries[Path::new("a")].hash)];
        v.keep_files(&home, &replica, Before::whole(&before), None, &lost, None)
            .unwrap();
        replace(&replica.join("a"), format!("after {i}").as_bytes());
        record_now(&v, &home, &replica);
    }
    let ids: Vec<u64> = v
        .history()
        .list()
        .unwrap()
        .iter()
        .map(|l| l.head.id)
        .collect();
    let tags = v.history().tags().unwrap();
    // The tag moves to each pass's version; the newest two stay.
    assert_eq!(tags.get("first"), ids.last());
    assert_eq!(ids.len(), 2, "{ids:?}");
    // Only content some kept version needs is stored.
    let needed: BTreeSet<Digest> = ids
        .iter()
        .flat_map(|id| v.history().state(*id).unwrap().entries)
        .filter_map(|e| e.sha256)
        .collect();
    let objects: BTreeSet<Digest> = v
        .history()
        .objects()
        .unwrap()
        .into_iter()
        .map(|(sha, _)| sha)
        .collect();
    for sha in &objects {
        assert!(needed.contains(sha));
    }
    // …and all of it is: in the store, or live.
    let live: BTreeSet<Digest> = hashed_tree(&replica)
        .entries
        .iter()
        .filter_map(|(_, e)| e.hash)
        .collect();
    for sha in &needed {
        assert!(
            objects.contains(sha) || live.contains(sha),
            "{sha:?} is lost"
        );
    }
}

#[test]
fn a_size_budget_drops_the_oldest_versions_but_never_the_latest_two() {
    let (_d, replica, home, v) = setup();
    let v = v.with_policy((Keep::default(), Some(1)), None);
    for i in 0..4 {
        let before = hashed_tree(&replica);
        let lost = vec![(PathBuf::from("a"), before.entries[Path::new("a")].hash)];
        v.keep_files(&home, &replica, Before::whole(&before), None, &lost, None)
            .unwrap();
        replace(&replica.join("a"), vec![b'x'; 1000 + i].as_slice());
        record_now(&v, &home, &replica);
    }
    let listed = v.history().list().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].form, history::Form::Full);
}

/// A store of the earlier layout: `<name>_0` and `<name>_1`, trees of hard links to the
/// replica's files (the latest) or files of their own (replaced since), with manifests.
fn legacy_store(replica: &Path, v: &VersionedDir) -> (Tree, Tree) {
    let store = v.store().to_path_buf();
    let old = hashed_tree(replica);
    let zero = store.join(format!("{}_0", v.name()));
    std::fs::create_dir_all(zero.join("d")).unwrap();
    std::fs::hard_link(replica.join("d/b"), zero.join("d/b")).unwrap();
    std::fs::copy(replica.join("a"), zero.join("a")).unwrap();
    Manifest::from_tree(replica, &old, None)
        .save(&zero)
        .unwrap();
    replace(&replica.join("a"), b"a2");
    let new = hashed_tree(replica);
    let one = store.join(format!("{}_1", v.name()));
    std::fs::create_dir_all(one.join("d")).unwrap();
    std::fs::hard_link(replica.join("d/b"), one.join("d/b")).unwrap();
    std::fs::hard_link(replica.join("a"), one.join("a")).unwrap();
    let mut m = Manifest::from_tree(replica, &new, None);
    m.head.made = "2099-01-01T00:00:00Z".into();
    m.save(&one).unwrap();
    (old, new)
}

#[test]
fn a_store_of_the_earlier_layout_is_migrated_and_every_version_restores() {
    let (d, replica, home, v) = setup();
    let (old, new) = legacy_store(&replica, &v);
    let _lock = v.lock(&home).unwrap();
    v.repair().unwrap();
    let store = d.path().join("store");
    assert!(!store.join(format!("{}_0", v.name())).exists());
    assert!(!store.join(format!("{}_1", v.name())).exists());
    let listed = v.history().list().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|l| l.head.why == Why::Migrated));
    let files = |t: &Tree| -> Vec<(PathBuf, Option<Digest>)> {
        t.entries
            .iter()
            .filter(|(_, e)| e.kind == Kind::File)
            .map(|(p, e)| (p.to_path_buf(), e.hash))
            .collect()
    };
    let got = |id| -> Vec<(PathBuf, Option<Digest>)> {
        v.history()
            .state(id)
            .unwrap()
            .entries
            .into_iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| (e.path, e.sha256))
            .collect()
    };
    assert_eq!(got(1), files(&old));
    assert_eq!(got(2), files(&new));
    // The old "a" (no live file has it) was moved into the store; the live files are
    // not, and nothing in the store shares an inode with them.
    let a1 = old.entries[Path::new("a")].hash.unwrap();
    assert!(v.history().path().join(history::object_path(&a1)).is_file());
    assert!(inodes(&store).is_disjoint(&inodes(&replica)));
}

#[test]
fn a_migration_cut_short_goes_on_where_it_stopped() {
    let (_d, replica, home, v) = setup();
    let (old, _) = legacy_store(&replica, &v);
    // Killed after the versions were recorded, before the content was moved.
    let _lock = v.lock(&home).unwrap();
    let history = v.history();
    let mut root = history.open_made().unwrap();
    for (i, suffix) in ["_0", "_1"].iter().enumerate() {
        let m = Manifest::load(&v.store().join(format!("{}{suffix}", v.name()))).unwrap();
        let mut head = VersionHead::blank();
        head.why = Why::Migrated;
        head.made = m.head.made.clone();
        head.dir_sha256 = m.head.dir_sha256.clone();
        let id = history
            .record(head, || m.entries.iter().map(|e| e.as_ref()))
            .unwrap();
        assert_eq!(id, i as u64 + 1);
    }
    root.write_atomic_with(Path::new("migrated"), |_| Ok(()))
        .unwrap();
    v.repair().unwrap();
    assert_eq!(history.list().unwrap().len(), 2, "not recorded twice");
    let a1 = old.entries[Path::new("a")].hash.unwrap();
    assert!(history.path().join(history::object_path(&a1)).is_file());
    assert!(!history.path().join("migrated").exists());
}

#[test]
fn content_a_pass_cut_short_moved_is_found_where_the_note_says() {
    use engine::pass::{KeepFirst, Versions};
    let (_d, replica, home, v) = setup();
    let tree = hashed_tree(&replica);
    v.record(&home, &replica, &tree).unwrap().unwrap();
    let b = tree.entries[Path::new("d/b")].hash.unwrap();
    let live = |v: &VersionedDir| live::LiveCopies::of(v, &home);
    // A pass moves "d/b" to "e/b" and is cut short before it records a version: the
    // latest version still names "d/b".
    let first = KeepFirst {
        lost: Vec::new(),
        moved: vec![(PathBuf::from("e/b"), b)],
    };
    v.keep(&home, &replica, &tree, None, None, &first).unwrap();
    std::fs::create_dir(replica.join("e")).unwrap();
    std::fs::rename(replica.join("d/b"), replica.join("e/b")).unwrap();
    let (_, _, found) = live(&v).find(Path::new("d/b"), &b, 2).unwrap();
    assert_eq!(found, replica.join("e/b"));
    // Once a version after the move is recorded, the note goes (that version names
    // the new path).
    v.record_pass(
        &home,
        &replica,
        After::Whole(&hashed_tree(&replica)),
        None,
        true,
    )
    .unwrap()
    .unwrap();
    assert!(v.history().moves_noted().is_empty());
    let (_, _, found) = live(&v).find(Path::new("d/b"), &b, 2).unwrap();
    assert_eq!(found, replica.join("e/b"));
}
