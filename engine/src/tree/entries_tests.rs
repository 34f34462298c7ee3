use super::*;
use crate::tree::MTime;

fn file(size: u64) -> Entry {
    Entry::file(size, 0o644, MTime::new(1, 0), None)
}

fn sizes(t: &Entries) -> Vec<(String, u64)> {
    t.iter()
        .map(|(p, e)| (p.to_str().unwrap().to_string(), e.size))
        .collect()
}

#[test]
fn collect_sorts_in_path_order_and_the_last_of_a_path_wins() {
    let t: Entries = [
        ("a-b", file(1)),
        ("a/b", file(2)),
        ("a", file(3)),
        ("a/b", file(4)),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        sizes(&t),
        [("a", 3), ("a/b", 4), ("a-b", 1)].map(|(p, s)| (p.to_string(), s))
    );
    assert_eq!(t.get(Path::new("a/b")).map(|e| e.size), Some(4));
    assert!(!t.contains_key(Path::new("b")));
}

#[test]
fn insert_and_remove_keep_the_order() {
    let mut t = Entries::new();
    for (i, p) in ["c", "a", "b/x", "b"].into_iter().enumerate() {
        assert!(t.insert(p.into(), file(i as u64)).is_none());
    }
    assert_eq!(t.insert("a".into(), file(9)).map(|e| e.size), Some(1));
    assert_eq!(t.remove(Path::new("b")).map(|e| e.size), Some(3));
    assert!(t.remove(Path::new("b")).is_none());
    assert_eq!(
        sizes(&t),
        [("a", 9), ("b/x", 2), ("c", 0)].map(|(p, s)| (p.to_string(), s))
    );
}

#[test]
fn merge_removes_subtrees_and_sets_changes_like_single_edits() {
    let names = ["a", "a/b", "a/b/c", "a b", "a-b", "b", "b/a", "c"];
    // The same entries in one chunk, one chunk each, and cut inside and between
    // subtrees (a bit per gap between two neighbours: cut there).
    let cuttings = [
        0u32, 0b111_1111, 0b000_0010, 0b001_0001, 0b100_1000, 0b010_0101,
    ];
    let chunked = |cuts: u32| {
        let mut list = Vec::new();
        let mut c = Chunk::new();
        for (i, p) in names.iter().enumerate() {
            if i > 0 && cuts & (1 << (i - 1)) != 0 {
                list.push(std::mem::take(&mut c));
            }
            c.push(Path::new(p), file(0)).unwrap();
        }
        list.push(c);
        let t = Entries::from_chunks(list);
        assert_eq!(t.chunks.len(), cuts.count_ones() as usize + 1);
        t
    };
    // Every subset of removals and of changes, against the same edits made one by one.
    for (removed_mask, cuts) in (0..(1u32 << 4)).flat_map(|r| cuttings.map(|c| (r, c))) {
        for changed_mask in 0..(1u32 << names.len()) {
            let base = chunked(cuts);
            let removed: Vec<PathBuf> = ["a/b", "b", "a", "zz"]
                .iter()
                .enumerate()
                .filter(|(i, _)| removed_mask & (1 << i) != 0)
                .map(|(_, p)| PathBuf::from(p))
                .collect();
            let changes: Vec<(PathBuf, Entry)> = names
                .iter()
                .rev()
                .enumerate()
                .filter(|(i, _)| changed_mask & (1 << i) != 0)
                .map(|(i, p)| (PathBuf::from(p), file(i as u64 + 1)))
                .chain((changed_mask % 3 == 0).then(|| ("new/x".into(), file(99))))
                .chain((changed_mask % 5 == 0).then(|| ("0".into(), file(98))))
                // A path changed twice: the later change wins.
                .chain((changed_mask % 7 == 0).then(|| ("a/b".into(), file(97))))
                .collect();
            let mut expected = base.clone();
            for r in &removed {
                expected.retain(|p, _| !p.starts_with(r));
            }
            for (p, e) in &changes {
                expected.insert(p.clone(), e.clone());
            }
            let mut got = base;
            got.merge(&removed, changes);
            assert_eq!(
                got, expected,
                "removed {removed:?}, mask {changed_mask}, cuts {cuts:b}"
            );
        }
    }
}

#[test]
fn at_and_under_is_the_subtree_only() {
    let t: Entries = ["a", "a/b", "a/b/c", "a b", "a-b", "ab"]
        .into_iter()
        .map(|p| (p, file(0)))
        .collect();
    let got: Vec<&Path> = t.at_and_under(Path::new("a")).map(|(p, _)| p).collect();
    assert_eq!(got, ["a", "a/b", "a/b/c"].map(Path::new));
    assert_eq!(t.at_and_under(Path::new("a/x")).count(), 0);
}

/// Entries `d{i/100}/f{i%100}` for `range`, as one list.
fn numbered(range: std::ops::Range<u64>) -> Vec<(PathBuf, Entry)> {
    let mut v: Vec<(PathBuf, Entry)> = range
        .map(|i| {
            let p = PathBuf::from(format!("d{:03}/f{:02}", i / 100, i % 100));
            (p, file(i))
        })
        .collect();
    v.sort_by(|x, y| path_order(&x.0, &y.0));
    v
}

/// `v` as chunks (several: a chunk holds 4 KiB of paths in tests).
fn chunks(v: Vec<(PathBuf, Entry)>) -> Vec<Chunk> {
    let mut c = ChunkList::default();
    for (p, e) in v {
        c.push(&p, e);
    }
    c.into_chunks()
}

#[test]
fn chunks_read_as_one_sorted_list() {
    let whole = Entries::from_sorted(numbered(0..3000));
    let mut parts = numbered(0..3000);
    let tail = parts.split_off(2000);
    let mid = parts.split_off(700);
    let chunked = Entries::from_chunks(
        [chunks(parts), vec![Chunk::new()], chunks(mid), chunks(tail)].concat(),
    );
    assert_eq!(chunked, whole);
    assert_eq!(chunked.len(), 3000);
    for i in [0, 699, 700, 1999, 2000, 2999] {
        let p = PathBuf::from(format!("d{:03}/f{:02}", i / 100, i % 100));
        assert_eq!(chunked.get(&p).map(|e| e.size), Some(i), "{p:?}");
    }
    // A subtree that spans two chunks.
    assert_eq!(chunked.at_and_under(Path::new("d007")).count(), 100);
    assert_eq!(chunked.at_and_under(Path::new("d019")).count(), 100);
    // Chunks out of order are sorted.
    let mut back = numbered(0..3000);
    let front = back.split_off(1500);
    assert_eq!(
        Entries::from_chunks([chunks(front), chunks(back)].concat()),
        whole
    );
}

#[test]
fn edits_across_chunks_match_a_single_list() {
    let mut parts = numbered(0..20_000);
    let tail = parts.split_off(9_000);
    let mut chunked = Entries::from_chunks([chunks(parts), chunks(tail)].concat());
    let mut single = Entries::from_sorted(numbered(0..20_000));
    let removed = vec![PathBuf::from("d089"), PathBuf::from("d090/f00")];
    let changes: Vec<(PathBuf, Entry)> = (0..20_000)
        .step_by(37)
        .map(|i| {
            (
                PathBuf::from(format!("d{:03}/f{:02}x", i / 100, i % 100)),
                file(i),
            )
        })
        .chain([(PathBuf::from("d089/f05"), file(1))])
        .collect();
    for t in [&mut chunked, &mut single] {
        t.merge(&removed, changes.clone());
        assert!(t.insert("d090/f00".into(), file(5)).is_none());
        assert_eq!(
            t.remove(Path::new("d150/f50")).map(|e| e.size),
            Some(15_050)
        );
        t.retain(|p, _| !p.starts_with("d010"));
    }
    assert_eq!(chunked, single);
    // d089 and d010 go (200), so do d150/f50 and the two changes under d010
    // (f36x, f73x); d090/f00 goes and comes back.
    let expected = 20_000 - 200 - 1 + changes.len() - 2;
    assert_eq!(single.len(), expected);
    assert_eq!(single.iter().count(), expected);
    assert_eq!(single.get(Path::new("d089/f05")).map(|e| e.size), Some(1));
    assert!(single.get(Path::new("d089/f06")).is_none());
}

#[test]
fn inserts_into_full_chunks_keep_the_order() {
    let mut t = Entries::from_sorted(numbered(0..3000));
    assert!(t.chunks.len() > 5, "the test needs full chunks");
    let mut expected: std::collections::BTreeMap<PathBuf, u64> = numbered(0..3000)
        .into_iter()
        .map(|(p, e)| (p, e.size))
        .collect();
    for i in (0..3000u64).step_by(7).chain([2999]) {
        let p = PathBuf::from(format!("d{:03}/f{:02}-new", i / 100, i % 100));
        assert!(t.insert(p.clone(), file(i + 10_000)).is_none());
        expected.insert(p, i + 10_000);
        let before = PathBuf::from(format!("a{i}"));
        assert!(t.insert(before.clone(), file(i)).is_none());
        expected.insert(before, i);
    }
    let got: Vec<(PathBuf, u64)> = t.iter().map(|(p, e)| (p.to_path_buf(), e.size)).collect();
    let want: Vec<(PathBuf, u64)> = expected.into_iter().collect();
    assert_eq!(got, want);
    assert!(t
        .chunks
        .iter()
        .all(|c| !c.is_empty() && c.names.len() <= NAMES_MAX));
    assert_eq!(t.len(), want.len());
}
