use super::*;
use engine::tree::Kind;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

/// A version's entries from `(path, content byte)` pairs: files, and their directory.
fn entries(files: &[(&str, u8)]) -> Vec<EntryRecord> {
    let mut v: Vec<EntryRecord> = files
        .iter()
        .map(|(p, b)| EntryRecord {
            path: PathBuf::from(p),
            kind: Kind::File,
            size: 1,
            mode: 0o644,
            mtime: (1, 0),
            sha256: Some(Digest([*b; 32])),
            target: None,
            ino: Some(u64::from(*b)),
            owner: None,
        })
        .collect();
    v.push(EntryRecord {
        path: PathBuf::from("d"),
        kind: Kind::Dir,
        size: 0,
        mode: 0o755,
        mtime: (2, 0),
        sha256: None,
        target: None,
        ino: None,
        owner: None,
    });
    v.sort_by(|x, y| path_order(&x.path, &y.path));
    v
}

fn head() -> VersionHead {
    VersionHead {
        made: "2026-01-01T00:00:00Z".into(),
        ..VersionHead::blank()
    }
}

fn new_history() -> (tempfile::TempDir, History) {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("store")).unwrap();
    let h = History::at(d.path().join("store/x-1"));
    (d, h)
}

/// Five states, each a small change of the one before.
fn states() -> Vec<Vec<EntryRecord>> {
    vec![
        entries(&[("d/a", 1), ("d/b", 2), ("c", 3)]),
        entries(&[("d/a", 4), ("d/b", 2), ("c", 3)]),
        entries(&[("d/a", 4), ("c", 3), ("e", 5)]),
        entries(&[("d/a", 4), ("d/b", 6), ("c", 3), ("e", 5)]),
        entries(&[("d/a", 1), ("c", 7)]),
    ]
}

fn record_all(h: &History, states: &[Vec<EntryRecord>]) -> Vec<u64> {
    states
        .iter()
        .map(|s| h.record(head(), || s.iter().map(|e| e.as_ref())).unwrap())
        .collect()
}

#[test]
fn every_version_reads_back_exactly_and_only_the_newest_is_whole() {
    let (_d, h) = new_history();
    let s = states();
    let ids = record_all(&h, &s);
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    for (id, want) in ids.iter().zip(&s) {
        assert_eq!(&h.state(*id).unwrap().entries, want, "version {id}");
    }
    let listed = h.list().unwrap();
    let forms: Vec<Form> = listed.iter().map(|l| l.form).collect();
    assert_eq!(
        forms,
        [
            Form::Diff { base: 2 },
            Form::Diff { base: 3 },
            Form::Diff { base: 4 },
            Form::Diff { base: 5 },
            Form::Full
        ]
    );
    // The counts of what changed, against the version before.
    let l = &listed[2].head;
    assert_eq!((l.added, l.changed, l.removed), (1, 0, 1));
}

#[test]
fn a_small_change_of_a_big_tree_is_stored_as_a_small_difference() {
    let (_d, h) = new_history();
    let big: Vec<(String, u8)> = (0..500)
        .map(|i| (format!("d/f{i:03}"), (i % 200) as u8))
        .collect();
    let as_refs =
        |v: &[(String, u8)]| entries(&v.iter().map(|(p, b)| (p.as_str(), *b)).collect::<Vec<_>>());
    let mut states = vec![as_refs(&big)];
    for round in 0..5u8 {
        let mut next = big.clone();
        next[round as usize].1 = 250 - round;
        states.push(as_refs(&next));
    }
    record_all(&h, &states);
    let listed = h.list().unwrap();
    let full = listed.last().unwrap().file_bytes;
    for l in &listed[..listed.len() - 1] {
        assert!(matches!(l.form, Form::Diff { .. }));
        assert!(
            l.file_bytes * 20 < full,
            "{} bytes for one change, whole {full}",
            l.file_bytes
        );
    }
    for (i, want) in states.iter().enumerate() {
        assert_eq!(&h.state(i as u64 + 1).unwrap().entries, want);
    }
    // The content a difference holds is what changed.
    let mut root = h.open().unwrap();
    // (Version 2 had f000 changed; version 3 has f000 back and f001 changed.)
    assert_eq!(
        diff_shas(&h, &mut root, 2).unwrap(),
        [Digest([250; 32]), Digest([1; 32])]
    );
}

#[test]
fn forgetting_any_versions_leaves_the_others_reading_the_same() {
    for drop in [
        vec![1],
        vec![2],
        vec![4],
        vec![2, 3],
        vec![1, 3],
        vec![1, 2, 3, 4],
    ] {
        let (_d, h) = new_history();
        let s = states();
        let ids = record_all(&h, &s);
        h.forget(&drop.iter().copied().collect()).unwrap();
        let left: Vec<u64> = h.list().unwrap().iter().map(|l| l.head.id).collect();
        let want: Vec<u64> = ids.iter().copied().filter(|i| !drop.contains(i)).collect();
        assert_eq!(left, want, "dropping {drop:?}");
        for id in want {
            assert_eq!(
                h.state(id).unwrap().entries,
                s[id as usize - 1],
                "version {id} after dropping {drop:?}"
            );
        }
    }
}

#[test]
fn the_latest_version_is_never_forgotten() {
    let (_d, h) = new_history();
    record_all(&h, &states());
    h.forget(&BTreeSet::from([5])).unwrap();
    assert_eq!(h.list().unwrap().len(), 5);
}

#[test]
fn a_version_cut_short_by_a_kill_is_undone_and_a_finished_one_completed() {
    let (_d, h) = new_history();
    let s = states();
    record_all(&h, &s[..2]);
    let v = h.path().join("versions");
    // Killed after the old full version's difference was written, before the new
    // full version: the difference refers to a version that never came.
    let diff2 = v.join("000000000002.diff");
    std::fs::copy(v.join("000000000001.diff"), &diff2).unwrap();
    h.repair(&[]).unwrap();
    assert!(!diff2.exists());
    assert_eq!(h.state(2).unwrap().entries, s[1]);
    // Killed after the new full version was written, before the old one went.
    let full2 = std::fs::read(v.join("000000000002.full")).unwrap();
    h.record(head(), || s[2].iter().map(|e| e.as_ref()))
        .unwrap();
    std::fs::write(v.join("000000000002.full"), full2).unwrap();
    h.repair(&[]).unwrap();
    assert!(!v.join("000000000002.full").exists());
    for (id, want) in [(1, &s[0]), (2, &s[1]), (3, &s[2])] {
        assert_eq!(&h.state(id).unwrap().entries, want);
    }
}

#[test]
fn a_damaged_version_file_is_an_error_not_a_different_version() {
    let (_d, h) = new_history();
    record_all(&h, &states()[..3]);
    let p = h.path().join("versions/000000000002.diff");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    assert!(h.state(1).is_err());
    assert!(h.state(2).is_err());
    assert_eq!(h.state(3).unwrap().entries, states()[2]);
}

#[test]
fn a_kept_file_is_moved_when_the_live_name_goes_and_copied_when_it_stays() {
    let (d, h) = new_history();
    let live = d.path().join("live");
    std::fs::create_dir(&live).unwrap();
    std::fs::write(live.join("gone"), b"gone").unwrap();
    std::fs::write(live.join("stays"), b"stays").unwrap();
    let sha = |b: &[u8]| engine::hash::hash_reader(&mut &b[..]).unwrap().0;
    let (gone, stays) = (sha(b"gone"), sha(b"stays"));
    let ino_gone = std::fs::metadata(live.join("gone")).unwrap().ino();
    let mut root = h.open_made().unwrap();
    let mut lroot = Root::open(&live).unwrap();
    History::keep_file(&mut root, &mut lroot, Path::new("gone"), &gone).unwrap();
    History::keep_file(&mut root, &mut lroot, Path::new("stays"), &stays).unwrap();
    // The pass replaces one live file; the other is left (its step failed, say).
    std::fs::remove_file(live.join("gone")).unwrap();
    h.settle_pending(&[]).unwrap();
    let obj = |s: &Digest| h.path().join(object_path(s));
    assert_eq!(
        std::fs::metadata(obj(&gone)).unwrap().ino(),
        ino_gone,
        "moved"
    );
    assert_eq!(std::fs::read(obj(&stays)).unwrap(), b"stays");
    assert_eq!(
        std::fs::metadata(obj(&stays)).unwrap().nlink(),
        1,
        "a copy of its own"
    );
    // An edit in place of the live file leaves the store's copy alone.
    std::fs::write(live.join("stays"), b"edited").unwrap();
    assert_eq!(std::fs::read(obj(&stays)).unwrap(), b"stays");
    assert!(std::fs::read_dir(h.path().join("pending"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn garbage_is_the_content_no_version_needs() {
    let (d, h) = new_history();
    let s = states();
    record_all(&h, &s[..2]);
    let mut root = h.open_made().unwrap();
    let live = d.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let mut lroot = Root::open(&live).unwrap();
    // Objects named as a version's content (1: version 1 needs it) and not (9).
    for b in [1u8, 9] {
        std::fs::write(live.join("f"), [b]).unwrap();
        let sha = Digest([b; 32]);
        History::keep_file(&mut root, &mut lroot, Path::new("f"), &sha).unwrap();
        std::fs::remove_file(live.join("f")).unwrap();
    }
    h.settle_pending(&[]).unwrap();
    assert_eq!(h.collect_garbage(None).unwrap().0, 1);
    let left: Vec<Digest> = h.objects().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(left, [Digest([1; 32])]);
    h.forget(&BTreeSet::from([1])).unwrap();
    assert_eq!(h.collect_garbage(None).unwrap().0, 1);
    assert!(h.objects().unwrap().is_empty());
}

/// A history that kept a live file `f` ("old") before a pass removed it, so the file is
/// pending and alone; and the history of the twin replica's store. Gives the temporary
/// directory, both histories, the content's SHA-256 and the history opened.
fn kept_before_removal() -> (tempfile::TempDir, History, History, Digest, Root) {
    let (d, h) = new_history();
    let twin = History::at(d.path().join("store/y-2"));
    let live = d.path().join("live");
    std::fs::create_dir(&live).unwrap();
    std::fs::write(live.join("f"), b"old").unwrap();
    let sha = engine::hash::hash_reader(&mut &b"old"[..]).unwrap().0;
    let mut root = h.open_made().unwrap();
    History::keep_file(
        &mut root,
        &mut Root::open(&live).unwrap(),
        Path::new("f"),
        &sha,
    )
    .unwrap();
    std::fs::remove_file(live.join("f")).unwrap();
    (d, h, twin, sha, root)
}

#[test]
fn kept_content_reaches_the_twin_even_after_a_kill_in_between() {
    let (_d, h, twin, sha, mut root) = kept_before_removal();
    // Killed after the object was made, before the twin got it.
    let obj = object_path(&sha);
    root.mkdir_unfinished(obj.parent().unwrap()).unwrap();
    root.link_within(&pending_path(&sha), &obj).unwrap();
    h.repair(std::slice::from_ref(&twin)).unwrap();
    assert_eq!(std::fs::read(twin.path().join(&obj)).unwrap(), b"old");
    assert!(!h.path().join(pending_path(&sha)).exists());
    assert_eq!(
        std::fs::metadata(h.path().join(&obj)).unwrap().nlink(),
        2,
        "linked, not copied"
    );
}

/// Each store settles its pending files under its own lock, and its twin gives it
/// objects under the twin's: the twin's object can appear between the check that it is
/// missing and the link that settles it. The file is then settled, not an error.
#[test]
fn an_object_the_twin_gave_meanwhile_settles_the_pending_file() {
    let (_d, h, twin, sha, _) = kept_before_removal();
    let obj = h.path().join(object_path(&sha));
    let given = obj.clone();
    super::content::BEFORE_SETTLING_LINK.with(|f| {
        *f.borrow_mut() = Some(Box::new(move || std::fs::write(&given, b"old").unwrap()))
    });
    let settled = h.settle_pending(std::slice::from_ref(&twin));
    super::content::BEFORE_SETTLING_LINK.with(|f| *f.borrow_mut() = None);
    settled.unwrap();
    assert_eq!(std::fs::read(&obj).unwrap(), b"old");
    assert!(!h.path().join(pending_path(&sha)).exists());
    assert_eq!(
        std::fs::read(twin.path().join(object_path(&sha))).unwrap(),
        b"old"
    );
}

#[test]
fn a_new_whole_version_is_byte_for_byte_its_entries_encoded() {
    // Entries copied from the version before (the same in every field, inode included)
    // and entries encoded afresh (changed, new, or alike but for the inode) make the
    // file that encoding them all makes.
    let (_d, h) = new_history();
    let (_d2, fresh) = new_history();
    let mut s = states();
    let mut moved_inode = s[3].clone();
    for e in moved_inode.iter_mut().filter(|e| e.path == Path::new("c")) {
        e.ino = Some(99);
    }
    s.insert(4, moved_inode);
    let ids = record_all(&h, &s);
    let mut root = h.open_made().unwrap();
    let mut fresh_root = fresh.open_made().unwrap();
    let newest = *ids.last().unwrap();
    let head = h.read(&mut root, newest, true, false).unwrap().head;
    let last = s.last().unwrap();
    fresh
        .write_full(
            &mut fresh_root,
            &head,
            || last.iter().map(|e| e.as_ref()),
            None,
        )
        .unwrap();
    let file =
        |hist: &History| std::fs::read(hist.path().join(version_file(newest, Form::Full))).unwrap();
    assert_eq!(file(&h), file(&fresh));
    assert_eq!(&h.state(newest).unwrap().entries, last);
}
