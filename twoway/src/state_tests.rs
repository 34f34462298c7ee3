//! Tests of the sync state file.

use super::*;
use std::path::PathBuf;

/// [`load`], as entries.
fn load_entries(f: &Path, a: &Path, b: &Path) -> Result<Option<Entries>, Error> {
    load(f, a, b).map(|s| s.map(|p| p.to_entries()))
}

/// A state written by the release before the shared entry encoding (format 3, its
/// own records) still reads, as the same entries, and a pass's change is made to it.
#[test]
fn a_state_of_format_3_still_reads() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("s");
    type Record3<'a> = (
        &'a [u8],
        u8,
        u64,
        u32,
        (i64, u32),
        Option<[u8; 32]>,
        Option<&'a [u8]>,
        Option<(u32, u32)>,
    );
    let records: Vec<Record3> = vec![
        (b"d", 1, 0, 0o755, (1, 0), None, None, Some((7, 8))),
        (
            b"d/x",
            0,
            1,
            0o600,
            (5, 6),
            Some([3; 32]),
            None,
            Some((7, 8)),
        ),
        (b"l", 2, 0, 0o777, (2, 3), None, Some(b"d/x"), None),
    ];
    let mut old = postcard::to_allocvec(&(3u32, &b"/a"[..], &b"/b"[..], records.len())).unwrap();
    for r in &records {
        old.extend(postcard::to_allocvec(r).unwrap());
    }
    std::fs::write(&f, old).unwrap();
    let owner = engine::Owner { uid: 7, gid: 8 };
    let want: Entries = [
        (
            PathBuf::from("d"),
            Entry::dir(0o755, MTime::new(1, 0)).owned_by(owner),
        ),
        (
            PathBuf::from("d/x"),
            Entry::file(1, 0o600, MTime::new(5, 6), Some(Digest([3; 32]))).owned_by(owner),
        ),
        (PathBuf::from("l"), Entry::symlink("d/x", MTime::new(2, 3))),
    ]
    .into_iter()
    .collect();
    let got = load_entries(&f, Path::new("/a"), Path::new("/b"))
        .unwrap()
        .unwrap();
    assert_eq!(got, want);
    // A pass's change made to it streams its records through in the current format.
    let g = d.path().join("changed");
    std::fs::copy(&f, &g).unwrap();
    let change = StateChange {
        put: Packed::from_entries(
            &[(PathBuf::from("e"), Entry::dir(0o700, MTime::new(9, 0)))]
                .into_iter()
                .collect(),
        ),
        gone: vec![PathBuf::from("l")],
        new_paths: None,
    };
    let none = BTreeSet::new();
    assert!(
        save_changed(&g, Path::new("/a"), Path::new("/b"), &change, &none, |_| {
            None
        })
        .unwrap()
    );
    let mut changed = want.clone();
    changed.remove(Path::new("l"));
    changed.insert(PathBuf::from("e"), Entry::dir(0o700, MTime::new(9, 0)));
    assert_eq!(
        load_entries(&g, Path::new("/a"), Path::new("/b")).unwrap(),
        Some(changed)
    );
    assert_eq!(std::fs::read(&g).unwrap()[0], 4, "the current format");
    // Saved again, it takes the current format and reads back the same.
    assert!(save(&f, Path::new("/a"), Path::new("/b"), &got).unwrap());
    assert_eq!(
        load_entries(&f, Path::new("/a"), Path::new("/b")).unwrap(),
        Some(want)
    );
}

/// What a first sync adds to its progress is merged into the state file: new paths
/// in their place, a path already there replaced, a copy's hash filled in.
#[test]
fn records_merge_into_a_state_in_path_order() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("s");
    let (a, b) = (Path::new("/a"), Path::new("/b"));
    let file = |n: u8| Entry::file(u64::from(n), 0o644, MTime::new(i64::from(n), 0), None);
    let old: Entries = [("b/x", 1), ("d", 2)]
        .into_iter()
        .map(|(p, n)| (PathBuf::from(p), file(n)))
        .collect();
    assert!(save(&f, a, b, &old).unwrap());
    let (x, y) = (file(7), file(8));
    let digest = Some(Digest([9; 32]));
    let new = [
        (Path::new("a"), &x, digest),
        (Path::new("b/x"), &y, None),
        (Path::new("c"), &x, None),
    ];
    merge_into(&f, b, a, || new.iter().copied()).unwrap();
    let got = load_entries(&f, a, b).unwrap().unwrap();
    let mut x_hashed = x.clone();
    x_hashed.hash = digest;
    let want: Entries = [
        (PathBuf::from("a"), x_hashed),
        (PathBuf::from("b/x"), y.clone()),
        (PathBuf::from("c"), x.clone()),
        (PathBuf::from("d"), file(2)),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    // Not another pair's state.
    assert!(merge_into(&f, a, Path::new("/c"), || new.iter().copied()).is_err());
}

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
    let records: Vec<EntryRef> = s.iter().map(|(p, e)| record(p, e)).collect();
    let whole = (FORMAT, &b"/a"[..], &b"/b"[..], records);
    assert_eq!(
        std::fs::read(&f).unwrap(),
        postcard::to_allocvec(&whole).unwrap()
    );
    assert_eq!(
        load_entries(&f, Path::new("/a"), Path::new("/b"))
            .unwrap()
            .as_ref(),
        Some(&s)
    );
    assert_eq!(
        load_entries(&f, Path::new("/a"), Path::new("/c")).unwrap(),
        None
    );
    // The pair named the other way round is the same pair.
    assert_eq!(
        load_entries(&f, Path::new("/b"), Path::new("/a"))
            .unwrap()
            .as_ref(),
        Some(&s)
    );
    // A state that exists but cannot be read is an error, never a first sync.
    let unreadable = d.path().join("a-directory");
    std::fs::create_dir(&unreadable).unwrap();
    assert!(load_entries(&unreadable, Path::new("/a"), Path::new("/b")).is_err());
    // A cut or padded file is no state at all (a first sync deletes nothing).
    let whole = std::fs::read(&f).unwrap();
    for damaged in [&whole[..whole.len() - 3], &[&whole[..], b"x"].concat()[..]] {
        let g = d.path().join("damaged");
        std::fs::write(&g, damaged).unwrap();
        assert_eq!(
            load_entries(&g, Path::new("/a"), Path::new("/b")).unwrap(),
            None
        );
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
        load_entries(&g, Path::new("/a"), Path::new("/b"))
            .unwrap()
            .as_ref(),
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
        assert_eq!(
            load_entries(&f, Path::new("/a"), Path::new("/b"))
                .unwrap()
                .as_ref(),
            Some(t)
        );
        if std::ptr::eq(t, &longer) {
            // A new file (created while the old one still existed).
            assert_ne!(ino(), before);
        }
    }
}

/// A state set aside reads back as it was, and only for its own pair; the file it
/// went to has no name in the directory.
#[test]
fn a_state_set_aside_reads_back_whole() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Entries::new();
    for i in 0..5000u32 {
        s.insert(
            PathBuf::from(format!("d {}/f{i}", i % 7)),
            Entry::file(
                u64::from(i),
                0o640,
                MTime::new(3, i),
                Some(Digest([i as u8; 32])),
            ),
        );
    }
    s.insert(PathBuf::from("l"), Entry::symlink("d 0", MTime::new(2, 3)));
    let (a, b) = (Path::new("/a"), Path::new("/b"));
    let aside = Aside {
        dir: &d.path().join("state"),
        a,
        b,
    };
    let packed = Packed::from_entries(&s);
    let spilled = aside.put(&packed).unwrap();
    assert_eq!(std::fs::read_dir(aside.dir).unwrap().count(), 0);
    assert_eq!(unspill(spilled, a, b).unwrap().to_entries(), s);
    let spilled = aside.put(&packed).unwrap();
    assert!(unspill(spilled, a, Path::new("/c")).is_err());
}

/// A change is made to the state in the file, streamed through: new and changed
/// records put in their places, paths gone taken out, a copied file's hash learned,
/// and at and under a failed path the file's records kept whatever the change says.
#[test]
fn a_change_is_made_to_the_state_in_its_file() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("s");
    let (a, b) = (Path::new("/a"), Path::new("/b"));
    let file = |n: u8, hash: Option<u8>| {
        Entry::file(
            u64::from(n),
            0o644,
            MTime::new(i64::from(n), 0),
            hash.map(|h| Digest([h; 32])),
        )
    };
    let entries = |v: &[(&str, Entry)]| -> Entries {
        v.iter()
            .map(|(p, e)| (PathBuf::from(p), e.clone()))
            .collect()
    };
    let base = entries(&[
        ("a", file(1, Some(1))),
        ("d", Entry::dir(0o755, MTime::new(1, 0))),
        ("d/old", file(2, Some(2))),
        ("d/x", file(3, Some(3))),
        ("e", file(4, Some(4))),
        ("g", file(5, Some(5))),
    ]);
    assert!(save(&f, a, b, &base).unwrap());
    let change = StateChange {
        put: Packed::from_entries(&entries(&[
            ("b", file(6, None)),
            ("d/new", file(7, Some(7))),
            ("d/x", file(8, Some(8))),
            ("e", file(9, None)),
        ])),
        gone: vec![PathBuf::from("d/old"), PathBuf::from("g")],
        new_paths: None,
    };
    // The hashes asked for, in path order.
    let mut asked = Vec::new();
    let hash_of = |r: &EntryRef<'_>| {
        asked.push(r.path.to_path_buf());
        (r.path == Path::new("b")).then_some(Digest([66; 32]))
    };
    let failed: BTreeSet<PathBuf> = [PathBuf::from("d")].into();
    assert!(save_changed(&f, b, a, &change, &failed, hash_of).unwrap());
    assert_eq!(asked, [PathBuf::from("b"), PathBuf::from("e")]);
    let want = entries(&[
        ("a", file(1, Some(1))),
        ("b", file(6, Some(66))),
        ("d", Entry::dir(0o755, MTime::new(1, 0))),
        ("d/old", file(2, Some(2))),
        ("d/x", file(3, Some(3))),
        ("e", file(9, None)),
    ]);
    assert_eq!(load_entries(&f, a, b).unwrap(), Some(want.clone()));
    // A change all under failed paths changes nothing: the file is not written.
    let under: StateChange = StateChange {
        put: Packed::from_entries(&entries(&[("d/y", file(1, Some(1)))])),
        gone: vec![PathBuf::from("d/x")],
        new_paths: None,
    };
    assert!(!save_changed(&f, a, b, &under, &failed, |_| None).unwrap());
    assert_eq!(load_entries(&f, a, b).unwrap(), Some(want));
    // Without a file (a first sync's progress never saved), the change is the state.
    let g = d.path().join("none");
    assert!(save_changed(&g, a, b, &under, &BTreeSet::new(), |_| None).unwrap());
    assert_eq!(
        load_entries(&g, a, b).unwrap(),
        Some(entries(&[("d/y", file(1, Some(1)))]))
    );
    // Another pair's state is not changed into this pair's.
    assert!(save_changed(&g, a, Path::new("/c"), &under, &BTreeSet::new(), |_| None).is_err());
}

/// A change whose new paths the planner counted is written in one stream, under a head
/// that says the size it will have; a count that is wrong (it cannot be, but the file
/// must never say another number than it holds) is caught, and the state is written
/// the long way, counted first.
#[test]
fn a_counted_change_is_written_once_and_a_wrong_count_never_lands() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (Path::new("/a"), Path::new("/b"));
    let file = |n: u8| {
        Entry::file(
            u64::from(n),
            0o644,
            MTime::new(i64::from(n), 0),
            Some(Digest([n; 32])),
        )
    };
    let entries = |v: &[(&str, u8)]| -> Entries {
        v.iter()
            .map(|(p, n)| (PathBuf::from(p), file(*n)))
            .collect()
    };
    let base = entries(&[("a", 1), ("c", 2), ("e", 3)]);
    let want = entries(&[("a", 1), ("b", 4), ("c", 5), ("d", 6)]);
    for new_paths in [Some(2), Some(1), Some(3), Some(9), None] {
        let f = d.path().join(format!("s{new_paths:?}"));
        assert!(save(&f, a, b, &base).unwrap());
        // "d" comes without its hash: the pass gives it once, as the real one does
        // (it walks its trees in path order).
        let mut unhashed = entries(&[("b", 4), ("c", 5), ("d", 6)]);
        unhashed.get_mut(Path::new("d")).unwrap().hash = None;
        let change = StateChange {
            put: Packed::from_entries(&unhashed),
            gone: vec![PathBuf::from("e")],
            new_paths,
        };
        let mut answered = false;
        let hash_of = |r: &EntryRef<'_>| {
            assert_eq!(r.path, Path::new("d"));
            (!std::mem::replace(&mut answered, true)).then_some(Digest([6; 32]))
        };
        assert!(save_changed(&f, a, b, &change, &BTreeSet::new(), hash_of).unwrap());
        assert_eq!(
            load_entries(&f, a, b).unwrap(),
            Some(want.clone()),
            "{new_paths:?}"
        );
    }
}

/// A state opened by its head answers "are both replicas as it records?" from its file
/// as the state loaded whole does, and gives the same state when asked for it whole;
/// what `load` calls no state, or an error, `open` does too.
#[test]
fn a_state_opened_by_its_head_answers_as_the_state_loaded_whole() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (Path::new("/a"), Path::new("/b"));
    let mut s = Entries::new();
    for i in 0..3000u32 {
        let dir = format!("dir {}", i % 7);
        s.insert(PathBuf::from(&dir), Entry::dir(0o755, MTime::new(1, 0)));
        s.insert(
            PathBuf::from(format!("{dir}/file {i} {}", "n".repeat(i as usize % 40))),
            Entry::file(
                i as u64,
                0o644,
                MTime::new(7, i),
                Some(Digest([i as u8; 32])),
            )
            .owned_by(engine::Owner { uid: 1, gid: 2 }),
        );
    }
    s.insert(
        PathBuf::from("l"),
        Entry::symlink("dir 1", MTime::new(2, 3)),
    );
    let f = d.path().join("state");
    assert!(save(&f, a, b, &s).unwrap());
    assert!(std::fs::metadata(&f).unwrap().len() > 2 * 64 * 1024);
    let tree = |e: &Entries| engine::tree::Tree {
        entries: e.clone(),
        ..Default::default()
    };
    let whole = load(&f, a, b).unwrap().unwrap();
    // What each pair of replicas gives, read from the file and from the state held.
    let answers = |x: &engine::tree::Tree, y: &engine::tree::Tree| {
        let mut stored = open_holding(&f, a, b, 0).unwrap().unwrap();
        let read = stored.unchanged(x, y, true);
        assert!(stored.held.get().is_none(), "the state was held");
        stored.held().unwrap();
        assert_eq!(stored.unchanged(x, y, true), read);
        assert_eq!(crate::plan::unchanged_since(&whole, x, y, true), read);
        read
    };
    assert!(answers(&tree(&s), &tree(&s)));
    // A path changed on one side, at the start, in the middle or at the end; a path
    // more or fewer on both.
    let files: Vec<PathBuf> = s
        .iter()
        .filter(|(_, e)| e.kind == engine::tree::Kind::File)
        .map(|(p, _)| p.to_path_buf())
        .collect();
    for p in [&files[0], &files[1500], &files[files.len() - 1]] {
        let mut changed = s.clone();
        changed.get_mut(p).unwrap().mode = 0o700;
        assert!(!answers(&tree(&s), &tree(&changed)), "{p:?}");
        assert!(!answers(&tree(&changed), &tree(&changed)), "{p:?}");
        let mut fewer = s.clone();
        fewer.remove(p);
        assert!(!answers(&tree(&fewer), &tree(&fewer)), "{p:?}");
    }
    let mut more = s.clone();
    more.insert(PathBuf::from("zz"), Entry::dir(0o700, MTime::new(9, 0)));
    assert!(!answers(&tree(&more), &tree(&more)));
    // Handed over whole, it is the state `load` reads.
    let stored = open_holding(&f, a, b, 0).unwrap().unwrap();
    assert_eq!(stored.into_held().unwrap().unwrap().to_entries(), s);

    // Cut or padded after its head: opened, never unchanged, no state when read whole.
    let bytes = std::fs::read(&f).unwrap();
    for damaged in [&bytes[..bytes.len() - 3], &[&bytes[..], b"x"].concat()[..]] {
        let g = d.path().join("damaged");
        std::fs::write(&g, damaged).unwrap();
        let mut stored = open_holding(&g, a, b, 0).unwrap().unwrap();
        assert!(!stored.unchanged(&tree(&s), &tree(&s), true));
        assert!(stored.held().unwrap().is_none());
        assert!(open_holding(&g, a, b, 0)
            .unwrap()
            .unwrap()
            .into_held()
            .unwrap()
            .is_none());
    }
    // No state, another pair's, a damaged head: none. A directory in its place: an
    // error, as `load` gives.
    assert!(open_holding(&d.path().join("none"), a, b, 0)
        .unwrap()
        .is_none());
    assert!(open_holding(&f, a, Path::new("/c"), 0).unwrap().is_none());
    let g = d.path().join("head");
    std::fs::write(&g, &bytes[..2]).unwrap();
    assert!(open_holding(&g, a, b, 0).unwrap().is_none());
    let dir = d.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    assert!(open_holding(&dir, a, b, 0).is_err());
    assert!(open(&dir, a, b).is_err());
    assert!(load(&dir, a, b).is_err());
    // The pair named the other way round is the same pair.
    assert!(open_holding(&f, b, a, 0)
        .unwrap()
        .unwrap()
        .unchanged(&tree(&s), &tree(&s), true));
    // A state this small is read whole as it is opened, and answers alike.
    let mut small = open(&f, a, b).unwrap().unwrap();
    assert!(small.held.get().is_some());
    assert!(small.unchanged(&tree(&s), &tree(&s), true));
    assert_eq!(small.into_held().unwrap().unwrap().to_entries(), s);
}
