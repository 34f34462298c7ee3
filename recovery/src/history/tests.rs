use super::*;
use engine::tree::Kind;
use std::collections::{BTreeMap, BTreeSet};
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
    v.push(dir_record("d", 2));
    v.sort_by(|x, y| path_order(&x.path, &y.path));
    v
}

/// A directory's entry.
fn dir_record(path: &str, mtime: i64) -> EntryRecord {
    EntryRecord {
        path: PathBuf::from(path),
        kind: Kind::Dir,
        size: 0,
        mode: 0o755,
        mtime: (mtime, 0),
        sha256: None,
        target: None,
        ino: None,
        owner: None,
    }
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
fn every_version_reads_back_exactly_and_one_is_whole() {
    let (_d, h) = new_history();
    let s = states();
    let ids = record_all(&h, &s);
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    for (id, want) in ids.iter().zip(&s) {
        assert_eq!(&h.state(*id).unwrap().entries, want, "version {id}");
    }
    let listed = h.list().unwrap();
    let whole = listed.iter().filter(|l| l.form == Form::Full).count();
    assert_eq!(
        whole,
        1,
        "{:?}",
        listed.iter().map(|l| l.form).collect::<Vec<_>>()
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
    // The first version is whole; each after it the difference from the one before.
    assert_eq!(listed[0].form, Form::Full);
    let full = listed[0].file_bytes;
    for l in &listed[1..] {
        assert_eq!(
            l.form,
            Form::Diff {
                base: l.head.id - 1
            }
        );
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
    // (Version 2 has f000 changed; version 3 has f000 back and f001 changed.)
    assert_eq!(diff_shas(&h, &mut root, 2).unwrap(), [Digest([250; 32])]);
    assert_eq!(
        diff_shas(&h, &mut root, 3).unwrap(),
        [Digest([0; 32]), Digest([249; 32])]
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
    // Written whole at every record, as the earlier layout was: its kills' leftovers.
    super::chain::FLOOR.set(0);
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
    for floor in [0, 64 << 10] {
        // Version 2 a difference toward version 3 (turned around), then from version 1.
        super::chain::FLOOR.set(floor);
        let (_d, h) = new_history();
        record_all(&h, &states()[..3]);
        super::chain::FLOOR.set(64 << 10);
        let p = h.path().join("versions/000000000002.diff");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        assert!(h.state(2).is_err());
        // Each other version reads as it was, or is an error where it needs version 2.
        let mut errors = 0;
        for id in [1u64, 3] {
            match h.state(id) {
                Ok(s) => assert_eq!(s.entries, states()[id as usize - 1], "version {id}"),
                Err(_) => errors += 1,
            }
        }
        assert_eq!(errors, 1, "floor {floor}");
    }
}

/// `verify --repair`: a version file that does not read is set aside with the versions
/// that need it, the rest read as recorded, the next version takes a new id, and no
/// content is collected while the files set aside are kept.
#[test]
fn versions_that_cannot_be_read_are_set_aside_and_the_rest_read() {
    for (floor, damaged, lost) in [
        // Forward differences from version 1: damaging 2 loses 2 and the later ones.
        (64 << 10, 2u64, vec![2u64, 3, 4, 5]),
        // Turned around at each version (5 whole): damaging 3 loses it and 1 and 2,
        // which read through it.
        (0, 3, vec![1, 2, 3]),
        // The latest alone.
        (64 << 10, 5, vec![5]),
    ] {
        super::chain::FLOOR.set(floor);
        let (_d, h) = new_history();
        let s = states();
        record_all(&h, &s);
        super::chain::FLOOR.set(64 << 10);
        let mut root = h.open().unwrap();
        let (id, full) = h
            .files(&mut root)
            .unwrap()
            .into_iter()
            .find(|(id, _)| *id == damaged)
            .unwrap();
        let p = h.path().join(version_file(id, Form::of(full)));
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n / 2..].iter_mut().for_each(|b| *b = 0xff);
        std::fs::write(&p, &bytes).unwrap();
        let what = format!("floor {floor}, version {damaged} damaged");
        let err = h.list().and_then(|_| h.state(damaged).map(|_| ()));
        assert!(
            err.is_err_and(|e| e.to_string().contains("recovery verify --repair")),
            "{what}"
        );
        let aside = h.set_aside_unreadable().unwrap();
        let mut aside_ids: Vec<u64> = aside
            .iter()
            .map(|p| {
                p.file_name().unwrap().to_string_lossy()[..12]
                    .parse()
                    .unwrap()
            })
            .collect();
        aside_ids.sort();
        assert_eq!(aside_ids, lost, "{what}");
        assert!(
            aside.iter().all(|p| p.exists()),
            "{what}: a file was deleted"
        );
        let listed: Vec<u64> = h.list().unwrap().iter().map(|l| l.head.id).collect();
        let kept: Vec<u64> = (1..=5).filter(|i| !lost.contains(i)).collect();
        assert_eq!(listed, kept, "{what}");
        for id in &kept {
            assert_eq!(
                &h.state(*id).unwrap().entries,
                &s[*id as usize - 1],
                "{what}"
            );
        }
        assert!(h.set_aside_unreadable().unwrap().is_empty(), "{what}");
        // A new version never takes an id that was given.
        let next = h
            .record(head(), || s[0].iter().map(|e| e.as_ref()))
            .unwrap();
        assert_eq!(next, 6, "{what}");
        assert_eq!(h.state(6).unwrap().entries, s[0], "{what}");
        // An object no version left needs stays while damaged/ holds anything.
        let mut root = h.open_made().unwrap();
        root.mkdir_all(Path::new("objects/ab")).unwrap();
        let orphan = object_path(&Digest([0xab; 32]));
        std::fs::write(h.path().join(&orphan), b"x").unwrap();
        assert_eq!(h.collect_garbage(None).unwrap(), (0, 0), "{what}");
        assert!(h.path().join(&orphan).exists(), "{what}");
        std::fs::remove_dir_all(h.path().join("damaged")).unwrap();
        assert_eq!(h.collect_garbage(None).unwrap().0, 1, "{what}");
    }
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

/// A long history of a tree of a few hundred entries, each version a small random
/// change of the one before (content, new and removed files, an inode alone, now and
/// then a large change): `(states, ids)`.
fn long_history(h: &History, seed: u64, versions: usize) -> BTreeMap<u64, Vec<EntryRecord>> {
    let mut rng = seed;
    let mut rand = move |n: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    let file = |i: u64, b: u8, ino: u64| EntryRecord {
        path: PathBuf::from(format!("d{}/file {i:04}", i % 7)),
        kind: Kind::File,
        size: u64::from(b),
        mode: 0o644,
        mtime: (i64::from(b), 0),
        sha256: Some(Digest([b; 32])),
        target: None,
        ino: Some(ino),
        owner: None,
    };
    let mut now: BTreeMap<u64, (u8, u64)> = (0..300).map(|i| (i, ((i % 250) as u8, i))).collect();
    let mut out = BTreeMap::new();
    for _ in 0..versions {
        let changes = if rand(10) == 0 { 120 } else { 1 + rand(6) };
        for _ in 0..changes {
            let i = rand(400);
            match rand(4) {
                0 => {
                    now.remove(&i);
                }
                1 => {
                    // The same content and metadata in a new inode.
                    if let Some(e) = now.get_mut(&i) {
                        e.1 += 1000;
                    }
                }
                _ => {
                    now.insert(i, (rand(256) as u8, i + 5000));
                }
            }
        }
        let mut v: Vec<EntryRecord> = now.iter().map(|(i, (b, ino))| file(*i, *b, *ino)).collect();
        v.extend((0..7).map(|d| dir_record(&format!("d{d}"), 1)));
        v.sort_by(|x, y| path_order(&x.path, &y.path));
        let id = h.record(head(), || v.iter().map(|e| e.as_ref())).unwrap();
        out.insert(id, v);
    }
    out
}

/// Every version listed reads back as `want` says, one by one and walked newest first,
/// and exactly one is whole.
fn assert_reads(h: &History, want: &BTreeMap<u64, Vec<EntryRecord>>, what: &str) {
    let listed = h.list().unwrap();
    let ids: Vec<u64> = listed.iter().map(|l| l.head.id).collect();
    let wanted: Vec<u64> = want.keys().copied().collect();
    assert_eq!(ids, wanted, "{what}: the versions listed");
    for id in &ids {
        assert_eq!(
            &h.state(*id).unwrap().entries,
            &want[id],
            "{what}: version {id}"
        );
    }
    let mut walked = Vec::new();
    h.walk(
        |_| true,
        |head, state| walked.push((head.id, state.values().cloned().collect::<Vec<_>>())),
    )
    .unwrap();
    for (id, mut state) in walked {
        state.sort_by(|x, y| path_order(&x.path, &y.path));
        assert_eq!(&state, &want[&id], "{what}: version {id} walked");
    }
}

/// The id of the version kept whole (the first, if there are two).
fn whole_id(h: &History) -> u64 {
    let listed = h.list().unwrap();
    listed
        .iter()
        .find(|l| l.form == Form::Full)
        .unwrap()
        .head
        .id
}

fn whole_files(h: &History) -> usize {
    h.list()
        .unwrap()
        .iter()
        .filter(|l| l.form == Form::Full)
        .count()
}

#[test]
fn forward_differences_read_back_and_turn_around_once_they_add_up() {
    // The share of the whole version alone decides when to turn around.
    super::chain::FLOOR.set(0);
    let (_d, h) = new_history();
    let want = long_history(&h, 7, 80);
    assert_reads(&h, &want, "recorded");
    let listed = h.list().unwrap();
    assert_eq!(whole_files(&h), 1);
    let forward = listed
        .iter()
        .filter(|l| matches!(l.form, Form::Diff { base } if base < l.head.id))
        .count();
    let backward = listed
        .iter()
        .filter(|l| matches!(l.form, Form::Diff { base } if base > l.head.id))
        .count();
    assert!(
        forward > 0 && backward > 0,
        "{forward} forward, {backward} backward"
    );
    // The whole version is neither the first nor (always) the latest: it moved.
    assert!(whole_id(&h) > 1, "never written whole again");
}

#[test]
fn forgetting_any_versions_of_a_long_history_leaves_the_others_reading_the_same() {
    // The share of the whole version alone decides when to turn around.
    super::chain::FLOOR.set(0);
    for seed in 0..6u64 {
        let (_d, h) = new_history();
        let mut want = long_history(&h, seed, 40);
        let latest = *want.keys().last().unwrap();
        let whole = whole_id(&h);
        // The whole version, its neighbours, and a scattering of others.
        let mut drop: BTreeSet<u64> = [whole, whole.saturating_sub(1), whole + 1].into();
        drop.extend(want.keys().filter(|id| (*id * 7 + seed) % 3 == 0));
        drop.remove(&latest);
        drop.retain(|id| want.contains_key(id));
        h.forget(&drop).unwrap();
        want.retain(|id, _| !drop.contains(id));
        assert_reads(&h, &want, &format!("seed {seed}, dropped {drop:?}"));
        assert_eq!(whole_files(&h), 1);
        // And the history goes on.
        let more = long_history(&h, seed + 100, 10);
        want.extend(more);
        assert_reads(&h, &want, &format!("seed {seed}, after more passes"));
    }
}

/// Runs `op` with a kill before its `n`th step; gives whether it finished.
fn killed_at(n: usize, op: impl FnOnce() -> Result<(), engine::Error>) -> bool {
    super::chain::STEPS_LEFT.set(Some(n));
    let r = op();
    super::chain::STEPS_LEFT.set(None);
    r.is_ok()
}

#[test]
fn a_kill_at_any_step_of_a_record_or_a_forget_leaves_every_version_readable() {
    // The share of the whole version alone decides when to turn around.
    super::chain::FLOOR.set(0);
    // Recording: a small difference (one step), and a version written whole with the
    // forward differences before it turned around (many).
    for big in [false, true] {
        for n in 0.. {
            let (_d, h) = new_history();
            let want = long_history(&h, 3, 12);
            let before = whole_files(&h);
            let mut next = want.values().last().unwrap().clone();
            let changed = if big { next.len() / 2 } else { 1 };
            for e in next
                .iter_mut()
                .filter(|e| e.kind == Kind::File)
                .take(changed)
            {
                e.sha256 = Some(Digest([0xEE; 32]));
            }
            let done = killed_at(n, || {
                h.record(head(), || next.iter().map(|e| e.as_ref()))
                    .map(|_| ())
            });
            let mut after = want.clone();
            if h.list().unwrap().len() > want.len() {
                after.insert(*want.keys().last().unwrap() + 1, next.clone());
            }
            assert_reads(&h, &after, &format!("record killed at step {n}"));
            h.repair_versions().unwrap();
            assert_reads(&h, &after, &format!("record killed at step {n}, repaired"));
            assert_eq!(whole_files(&h), 1, "repaired at step {n}");
            if done {
                assert_eq!(after.len(), want.len() + 1);
                if big {
                    assert!(n > 2 && before == 1, "never turned around");
                }
                break;
            }
        }
    }
    // Forgetting the whole version and those around it.
    for n in 0.. {
        let (_d, h) = new_history();
        let want = long_history(&h, 5, 12);
        let whole = whole_id(&h);
        let latest = *want.keys().last().unwrap();
        let mut drop: BTreeSet<u64> = [whole.saturating_sub(1), whole, whole + 1, 2].into();
        drop.retain(|id| *id != latest && want.contains_key(id));
        let done = killed_at(n, || h.forget(&drop).map(|_| ()));
        // Each version is either gone or reads as it did.
        let left: Vec<u64> = h.list().unwrap().iter().map(|l| l.head.id).collect();
        let mut after = want.clone();
        after.retain(|id, _| left.contains(id));
        assert!(
            want.keys().all(|id| drop.contains(id) || left.contains(id)),
            "a kept version was lost at step {n}"
        );
        assert_reads(&h, &after, &format!("forget killed at step {n}"));
        h.repair_versions().unwrap();
        assert_reads(&h, &after, &format!("forget killed at step {n}, repaired"));
        // The forget run again finishes it.
        h.forget(&drop).unwrap();
        let mut rest = want.clone();
        rest.retain(|id, _| !drop.contains(id));
        assert_reads(&h, &rest, &format!("forget killed at step {n}, run again"));
        assert_eq!(whole_files(&h), 1);
        if done {
            break;
        }
    }
}

#[test]
fn content_a_forward_difference_replaced_stays_while_the_whole_version_needs_it() {
    let (d, h) = new_history();
    let files: Vec<(String, u8)> = (0..100).map(|i| (format!("d/f{i:03}"), 50)).collect();
    let as_entries =
        |v: &[(String, u8)]| entries(&v.iter().map(|(p, b)| (p.as_str(), *b)).collect::<Vec<_>>());
    let mut v1 = files.clone();
    v1[0].1 = 1;
    let mut v2 = files.clone();
    v2[0].1 = 2;
    record_all(&h, &[as_entries(&v1), as_entries(&v2)]);
    assert_eq!(h.list().unwrap()[1].form, Form::Diff { base: 1 });
    // Content 1 (version 1's, replaced in version 2) is kept in the store.
    let live = d.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let mut root = h.open_made().unwrap();
    let mut lroot = Root::open(&live).unwrap();
    std::fs::write(live.join("f"), [1u8]).unwrap();
    History::keep_file(&mut root, &mut lroot, Path::new("f"), &Digest([1; 32])).unwrap();
    std::fs::remove_file(live.join("f")).unwrap();
    h.settle_pending(&[]).unwrap();
    // Checked against the latest (which does not hold it), it is still needed.
    let one = std::collections::HashSet::from([Digest([1; 32])]);
    assert_eq!(h.collect_garbage_but(Some(&one), true).unwrap().0, 0);
    assert_eq!(h.objects().unwrap().len(), 1);
    let candidates = h.forget(&BTreeSet::from([1])).unwrap();
    assert!(candidates.contains(&Digest([1; 32])), "{candidates:?}");
    assert_eq!(h.collect_garbage_but(Some(&candidates), true).unwrap().0, 1);
    assert!(h.objects().unwrap().is_empty());
}

#[test]
fn what_a_pass_replaced_reads_from_the_difference_either_way() {
    // The share of the whole version alone decides when to turn around.
    super::chain::FLOOR.set(0);
    let (_d, h) = new_history();
    let mut want = long_history(&h, 11, 40);
    // Two small changes after it: forward differences, whatever came last.
    for b in [0xA1u8, 0xA2] {
        let mut next = want.values().last().unwrap().clone();
        let f = next.iter_mut().find(|e| e.kind == Kind::File).unwrap();
        f.sha256 = Some(Digest([b; 32]));
        let id = h
            .record(head(), || next.iter().map(|e| e.as_ref()))
            .unwrap();
        want.insert(id, next);
    }
    let listed = h.list().unwrap();
    let forms: BTreeSet<&str> = listed
        .iter()
        .map(|l| match l.form {
            Form::Full => "whole",
            Form::Diff { base } if base > l.head.id => "backward",
            Form::Diff { .. } => "forward",
        })
        .collect();
    assert_eq!(forms.len(), 3, "{forms:?}");
    for pair in listed.windows(2) {
        let (older, newer) = (&pair[0], &pair[1]);
        let mut got = Vec::new();
        h.held_before(older, newer, |e| got.push(e.to_owned()))
            .unwrap();
        got.sort_by(|x, y| path_order(&x.path, &y.path));
        let after: BTreeMap<&Path, &EntryRecord> = want[&newer.head.id]
            .iter()
            .map(|e| (e.path.as_path(), e))
            .collect();
        let expected: Vec<EntryRecord> = want[&older.head.id]
            .iter()
            .filter(|e| after.get(e.path.as_path()) != Some(e))
            .cloned()
            .collect();
        assert_eq!(
            got, expected,
            "versions {} and {}",
            older.head.id, newer.head.id
        );
    }
}
