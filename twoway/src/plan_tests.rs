//! The reconciliation planner as tables and properties, checked by carrying plans out on
//! in-memory trees.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use engine::plan::mirror::{Op, Plan};
use engine::tree::{Digest, Entry, Kind, MTime, Tree};
use proptest::prelude::*;

use super::*;
use crate::fold::leave_collisions;

type Map = engine::tree::Entries;

fn file(content: u8, mtime: i64) -> Entry {
    Entry::file(
        content as u64,
        0o644,
        MTime::new(mtime, 0),
        Some(Digest([content; 32])),
    )
}
fn dir(mode: u32, mtime: i64) -> Entry {
    Entry::dir(mode, MTime::new(mtime, 0))
}
fn link(t: &str, mtime: i64) -> Entry {
    Entry::symlink(t, MTime::new(mtime, 0))
}

fn tree(m: &Map) -> Tree {
    Tree {
        entries: m.clone(),
        ..Tree::default()
    }
}

fn parent_ok(m: &Map, p: &Path) -> bool {
    match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => m.get(q).is_some_and(|e| e.kind == Kind::Dir),
        _ => true,
    }
}

/// Carries a plan out on an in-memory tree, checking every precondition the real apply
/// relies on; `src` is the other side as it is at that moment.
fn run(plan: &Plan, dst: &mut Map, src: Option<&Map>) {
    for act in &plan.actions {
        let p = &act.path.to_path_buf();
        match &act.op {
            Op::Preserve { from } => {
                let from = &from.to_path_buf();
                let e = dst
                    .get(from)
                    .cloned()
                    .unwrap_or_else(|| panic!("preserve: {from:?} missing"));
                assert!(!dst.contains_key(p), "preserve over {p:?}");
                assert!(parent_ok(dst, p));
                dst.insert(p.clone(), e);
            }
            Op::Copy { .. } | Op::Symlink { .. } => {
                let want = act.src.cloned().unwrap();
                let from = p.clone();
                let have = src
                    .unwrap()
                    .get(&from)
                    .unwrap_or_else(|| panic!("copy: source {from:?} missing"));
                assert_eq!(have.hash, want.hash, "copy of {p:?} would read other bytes");
                assert_eq!(have.target, want.target);
                assert!(parent_ok(dst, p), "copy into missing parent: {p:?}");
                if let Some(c) = dst.get(p) {
                    assert_ne!(c.kind, Kind::Dir, "copy over a directory {p:?}");
                }
                dst.insert(p.clone(), want);
            }
            Op::Mkdir => {
                assert!(parent_ok(dst, p), "mkdir in missing parent {p:?}");
                assert!(!dst.contains_key(p), "mkdir over {p:?}");
                dst.insert(p.clone(), act.src.cloned().unwrap());
            }
            Op::SetFileMeta { .. } | Op::SetDirMeta => {
                let s = act.src.cloned().unwrap();
                let e = dst
                    .get_mut(p)
                    .unwrap_or_else(|| panic!("meta of missing {p:?}"));
                e.mode = s.mode;
                e.mtime = s.mtime;
            }
            Op::Remove { .. } => {
                assert!(dst.remove(p).is_some(), "remove of missing {p:?}");
                assert!(
                    !dst.keys().any(|q| q.starts_with(p) && q != p),
                    "remove leaves children of {p:?}"
                );
            }
            Op::Rmdir => {
                assert!(
                    !dst.keys().any(|q| q.starts_with(p) && q != p),
                    "rmdir of non-empty {p:?}"
                );
                dst.remove(p);
            }
            Op::RemoveLeftover => {}
            Op::Move { from } => {
                let from = &from.to_path_buf();
                let had = dst
                    .remove(from)
                    .unwrap_or_else(|| panic!("move: {from:?} missing"));
                let want = act.src.cloned().unwrap();
                assert_eq!(had.hash, want.hash, "move to {p:?} takes other bytes");
                assert!(!dst.contains_key(p), "move over {p:?}");
                assert!(parent_ok(dst, p), "move into missing parent: {p:?}");
                dst.insert(p.clone(), want);
            }
            Op::Link { .. } => panic!("the sync planner plans no hard links: {p:?}"),
        }
    }
}

fn simulate(plan: &SyncPlan, a: &Map, b: &Map) -> (Map, Map) {
    let (mut ma, mut mb) = (a.clone(), b.clone());
    run(&plan.keep_a, &mut ma, None);
    run(&plan.keep_b, &mut mb, None);
    run(&plan.to_a, &mut ma, Some(&mb));
    run(&plan.to_b, &mut mb, Some(&ma));
    (ma, mb)
}

/// What must be equal on both sides: kind, bytes, link target, mode, mtime.
type Seen = (Kind, Option<Digest>, Option<Box<PathBuf>>, u32, MTime);

fn norm(m: &Map) -> BTreeMap<PathBuf, Seen> {
    m.iter()
        .map(|(p, e)| {
            (
                p.to_path_buf(),
                (e.kind, e.hash, e.target.clone(), e.mode, e.mtime),
            )
        })
        .collect()
}

/// The tree of `m`, for as long as the test runs (a plan borrows its trees).
fn held(m: &Map) -> &'static Tree {
    Box::leak(Box::new(tree(m)))
}

/// The state `m` holds, as a planner takes it.
fn packed(m: &Map) -> crate::packed::Packed {
    crate::packed::Packed::from_entries(m)
}

fn contents(m: &Map) -> BTreeSet<(Option<Digest>, Option<Box<PathBuf>>)> {
    m.values()
        .filter(|e| e.kind != Kind::Dir)
        .map(|e| (e.hash, e.target.clone()))
        .collect()
}

/// One pass, checked: equal replicas, no content lost, and a second pass that does nothing.
/// `plan_sync`, checking that whenever it takes the shortcut for an unchanged pair the
/// full planner would have planned nothing and recorded the base again.
fn plan_checked<'t>(base: &Map, a: &'t Tree, b: &'t Tree, opts: &SyncOptions) -> SyncPlan<'t> {
    let plan = plan_sync(packed(base), a, b, opts);
    if plan.state_unchanged {
        let full = plan_sync_full(packed(base).into(), a, b, opts, &|_| false);
        assert!(
            full.is_noop() && full.conflicts.is_empty(),
            "shortcut taken, but the full planner acts: {full:?}"
        );
        assert_eq!(
            &full.state.applied_to(base),
            base,
            "shortcut taken, but the state would change"
        );
    }
    plan
}

/// The state a pass records.
fn recorded(plan: &SyncPlan, base: &Map) -> Map {
    if plan.state_unchanged {
        base.clone()
    } else {
        plan.state.applied_to(base)
    }
}

fn check_pass(base: &Map, a: &Map, b: &Map, policy: ConflictPolicy) -> (SyncPlan<'static>, Map) {
    let opts = SyncOptions {
        policy,
        modify_window: 0,
        keep_owners: true,
    };
    // The plan borrows the trees, and the caller reads it: they live as long as the test.
    let trees: &'static [Tree; 2] = Box::leak(Box::new([tree(a), tree(b)]));
    let plan = plan_checked(base, &trees[0], &trees[1], &opts);
    let (na, nb) = simulate(&plan, a, b);
    assert_eq!(norm(&na), norm(&nb), "replicas differ after the pass");
    let after: BTreeSet<_> = contents(&na);
    let kept: BTreeSet<_> = after.union(&contents(base)).cloned().collect();
    for c in contents(a).union(&contents(b)) {
        assert!(kept.contains(c), "content {c:?} was lost");
    }
    let state = recorded(&plan, base);
    let again = plan_checked(&state, held(&na), held(&nb), &opts);
    assert!(again.is_noop(), "second pass is not a no-op: {again:?}");
    assert!(
        again.state_unchanged,
        "a pass right after a sync should find nothing changed"
    );
    (plan, na)
}

/// The state of one side relative to the base.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    Unchanged,
    Created,
    Modified,
    Deleted,
    TypeChanged,
}

fn variant(kind: Kind, change: Change, side: Side) -> Option<Entry> {
    // B's edits are newer than A's, so `newer` picks B in a conflict.
    let t = if side == Side::A { 200 } else { 300 };
    let base = match kind {
        Kind::File => file(1, 100),
        Kind::Dir => dir(0o755, 100),
        Kind::Symlink => link("base", 100),
    };
    match change {
        Change::Unchanged => Some(base),
        Change::Deleted => None,
        Change::Created | Change::Modified => Some(match kind {
            Kind::File => file(if side == Side::A { 2 } else { 3 }, t),
            Kind::Dir => dir(if side == Side::A { 0o700 } else { 0o750 }, t),
            Kind::Symlink => link(if side == Side::A { "to-a" } else { "to-b" }, t),
        }),
        Change::TypeChanged => Some(match kind {
            Kind::File => link("was-a-file", 150),
            Kind::Dir => file(9, 150),
            Kind::Symlink => file(8, 150),
        }),
    }
}

/// The full matrix: {unchanged, created, modified, deleted, type-changed} on A × the same
/// on B, for files, dirs and symlinks. Expected: what ends up at the path ("base", "A",
/// "B" or "none") and whether a conflict copy is made.
#[test]
fn reconciliation_matrix() {
    use Change::*;
    let rows: &[(Change, Change, &str, bool)] = &[
        (Unchanged, Unchanged, "base", false),
        (Unchanged, Modified, "B", false),
        (Modified, Unchanged, "A", false),
        (Unchanged, Deleted, "none", false),
        (Deleted, Unchanged, "none", false),
        (Unchanged, TypeChanged, "B", false),
        (TypeChanged, Unchanged, "A", false),
        (Modified, Modified, "B", true),
        (Modified, Deleted, "A", false),
        (Deleted, Modified, "B", false),
        (Modified, TypeChanged, "?", true),
        (TypeChanged, Modified, "?", true),
        (Deleted, Deleted, "none", false),
        (Deleted, TypeChanged, "B", false),
        (TypeChanged, Deleted, "A", false),
        (TypeChanged, TypeChanged, "A", false),
        (Created, Deleted, "A", false),
        (Deleted, Created, "B", false),
        (Created, Created, "B", true),
    ];
    for kind in [Kind::File, Kind::Dir, Kind::Symlink] {
        for &(ca, cb, expect, conflict) in rows {
            let p = PathBuf::from("x");
            let created = ca == Created || cb == Created;
            let mut base = Map::new();
            if !created {
                base.insert(p.clone(), variant(kind, Unchanged, Side::A).unwrap());
            }
            let side = |c: Change, s: Side| -> Map {
                let e = if created && c == Deleted {
                    None
                } else {
                    variant(kind, c, s)
                };
                e.into_iter().map(|e| (p.clone(), e)).collect()
            };
            let (a, b) = (side(ca, Side::A), side(cb, Side::B));
            let (plan, after) = check_pass(&base, &a, &b, ConflictPolicy::Newer);
            let got = after.get(&p);
            let what = format!("{kind:?}: A {ca:?}, B {cb:?}");
            match expect {
                "base" => assert_eq!(got, base.get(&p), "{what}"),
                "A" => assert_eq!(
                    got.map(|e| (e.kind, e.hash, &e.target)),
                    a.get(&p).map(|e| (e.kind, e.hash, &e.target)),
                    "{what}"
                ),
                "B" => assert_eq!(
                    got.map(|e| (e.kind, e.hash, &e.target)),
                    b.get(&p).map(|e| (e.kind, e.hash, &e.target)),
                    "{what}"
                ),
                "none" => assert!(got.is_none(), "{what}: {got:?}"),
                _ => assert!(got.is_some(), "{what}"),
            }
            // Two directories never conflict: only their metadata differs.
            let expect_copy = conflict
                && !(kind == Kind::Dir
                    && matches!((ca, cb), (Modified, Modified) | (Created, Created)));
            assert_eq!(
                !plan.conflicts.is_empty(),
                expect_copy,
                "{what}: {:?}",
                plan.conflicts
            );
        }
    }
}

#[test]
fn policies_choose_the_winner_and_keep_the_loser() {
    let base: Map = [("f".into(), file(1, 100))].into();
    let a: Map = [("f".into(), file(2, 300))].into();
    let b: Map = [("f".into(), file(3, 200))].into();
    for (policy, win) in [
        (ConflictPolicy::Newer, 2),
        (ConflictPolicy::PreferA, 2),
        (ConflictPolicy::PreferB, 3),
    ] {
        let (plan, after) = check_pass(&base, &a, &b, policy);
        assert_eq!(
            after[Path::new("f")].hash,
            Some(Digest([win; 32])),
            "{policy:?}"
        );
        let c = &plan.conflicts[0];
        let loser = if win == 2 { 3 } else { 2 };
        assert_eq!(after[&c.copy].hash, Some(Digest([loser; 32])));
    }
    // Equal mtimes: A wins under `newer`.
    let b_same_time: Map = [("f".into(), file(3, 300))].into();
    let (_, after) = check_pass(&base, &a, &b_same_time, ConflictPolicy::Newer);
    assert_eq!(after[Path::new("f")].hash, Some(Digest([2; 32])));
}

#[test]
fn deleting_a_dir_on_one_side_keeps_a_file_edited_inside_on_the_other() {
    let base: Map = [
        ("d".into(), dir(0o755, 100)),
        ("d/e".into(), dir(0o755, 100)),
        ("d/e/f".into(), file(1, 100)),
        ("d/g".into(), file(2, 100)),
    ]
    .into();
    let a = Map::new();
    let mut b = base.clone();
    b.insert("d/e/f".into(), file(5, 200));
    let (_, after) = check_pass(&base, &a, &b, ConflictPolicy::Newer);
    assert_eq!(after[Path::new("d/e/f")].hash, Some(Digest([5; 32])));
    assert!(after.contains_key(Path::new("d/e")));
    assert!(
        !after.contains_key(Path::new("d/g")),
        "the unchanged sibling is deleted"
    );
}

#[test]
fn first_sync_is_a_union_and_deletes_nothing() {
    let a: Map = [
        ("only-a".into(), file(1, 100)),
        ("both".into(), file(2, 100)),
    ]
    .into();
    let b: Map = [
        ("only-b".into(), file(3, 100)),
        ("both".into(), file(4, 200)),
    ]
    .into();
    let (plan, after) = check_pass(&Map::new(), &a, &b, ConflictPolicy::Newer);
    assert_eq!(plan.deletes_a + plan.deletes_b, 0);
    assert!(after.contains_key(Path::new("only-a")) && after.contains_key(Path::new("only-b")));
    assert_eq!(plan.conflicts.len(), 1);
}

#[test]
fn unknown_paths_are_left_alone() {
    let base: Map = [("d".into(), dir(0o755, 100)), ("d/f".into(), file(1, 100))].into();
    let mut a = tree(&base);
    a.entries.remove(Path::new("d/f"));
    a.unknown.insert("d".into());
    let b = tree(&base);
    let plan = plan_checked(&base, &a, &b, &SyncOptions::default());
    assert!(plan.is_noop(), "{plan:?}");
}

/// Names that differ only in case, synced to a replica that ignores case: one keeps its
/// place (the name that replica holds, else the first in byte order), the others are
/// left alone on both sides and reported; nothing else changes.
#[test]
fn case_collisions_are_left_alone_on_both_sides() {
    let opts = SyncOptions::default();
    let map = |v: &[(&str, Entry)]| -> Map {
        v.iter()
            .map(|(p, e)| (PathBuf::from(p), e.clone()))
            .collect()
    };
    // First sync: A (case-sensitive) holds Foo and foo, B (FAT) is empty.
    let base = Map::new();
    let a = tree(&map(&[
        ("Foo", file(1, 100)),
        ("foo", file(2, 100)),
        ("x", file(3, 100)),
    ]));
    let b = tree(&Map::new());
    let mut trees = [a, b];
    let collided = leave_collisions(&packed(&base), &mut trees, &opts, [false, true]);
    let [a, b] = &trees;
    let plan = plan_sync(packed(&base), a, b, &opts);
    assert_eq!(collided, [(Side::B, "foo".into(), "Foo".into())]);
    let mut on_b = Map::new();
    run(&plan.to_b, &mut on_b, Some(&a.entries));
    assert_eq!(
        on_b.keys().collect::<Vec<_>>(),
        [Path::new("Foo"), Path::new("x")]
    );
    assert!(plan.to_a.actions.is_empty(), "{:?}", plan.to_a);
    assert!(!plan
        .state
        .paths_after(&packed(&base))
        .any(|p| p == Path::new("foo")));
    // Without folding, both are synced.
    let mut trees = [tree(&a.entries), tree(&Map::new())];
    let collided = leave_collisions(&packed(&base), &mut trees, &opts, [false, false]);
    let plan = plan_sync(packed(&base), &trees[0], &trees[1], &opts);
    assert!(collided.is_empty());
    assert_eq!(plan.to_b.actions.len(), 3);

    // The name B holds keeps its place: B has dir "docs", A has "Docs/a" and "docs/b".
    let a = tree(&map(&[
        ("Docs", dir(0o755, 100)),
        ("Docs/a", file(1, 100)),
        ("docs", dir(0o755, 100)),
        ("docs/b", file(2, 100)),
    ]));
    let b = tree(&map(&[("docs", dir(0o755, 100))]));
    let mut trees = [a, b];
    let collided = leave_collisions(&packed(&base), &mut trees, &opts, [false, true]);
    let [a, b] = &trees;
    let plan = plan_sync(packed(&base), a, b, &opts);
    assert_eq!(collided, [(Side::B, "Docs".into(), "docs".into())]);
    let mut on_b = b.entries.clone();
    run(&plan.to_b, &mut on_b, Some(&a.entries));
    assert_eq!(
        on_b.keys().collect::<Vec<_>>(),
        [Path::new("docs"), Path::new("docs/b")]
    );

    // A name whose case changed on one side is a rename, not a collision: the old name
    // goes and the new one comes, on the side that folds too.
    let base = map(&[("report.txt", file(1, 100))]);
    let a = tree(&map(&[("Report.txt", file(1, 100))]));
    let b = tree(&base);
    let mut trees = [a, b];
    let collided = leave_collisions(&packed(&base), &mut trees, &opts, [false, true]);
    let [a, b] = &trees;
    let plan = plan_sync(packed(&base), a, b, &opts);
    assert!(collided.is_empty());
    let mut on_b = b.entries.clone();
    run(&plan.to_b, &mut on_b, Some(&a.entries));
    assert_eq!(on_b.keys().collect::<Vec<_>>(), [Path::new("Report.txt")]);
}

#[test]
fn the_unchanged_shortcut_is_taken_only_when_nothing_differs() {
    let mut base = Map::new();
    base.insert("d".into(), dir(0o755, 100));
    base.insert("d/f".into(), file(1, 100));
    base.insert("l".into(), link("t", 100));
    let opts = SyncOptions::default();
    let same = plan_checked(&base, held(&base), held(&base), &opts);
    assert!(same.state_unchanged && same.is_noop());

    // A directory mtime, a mode, a missing hash or a leftover: the full planner runs.
    let mut dir_time = base.clone();
    dir_time.get_mut(Path::new("d")).unwrap().mtime = MTime::new(101, 0);
    let mut mode = base.clone();
    mode.get_mut(Path::new("d/f")).unwrap().mode = 0o600;
    let mut unhashed = base.clone();
    unhashed.get_mut(Path::new("d/f")).unwrap().hash = None;
    for (name, b) in [
        ("dir mtime", &dir_time),
        ("mode", &mode),
        ("hash", &unhashed),
    ] {
        let plan = plan_checked(&base, held(&base), held(b), &opts);
        assert!(!plan.state_unchanged, "{name}: shortcut taken");
    }
    // Both sides hold the same new bytes (same size and mtime): the state must learn them.
    let mut both = base.clone();
    both.get_mut(Path::new("d/f")).unwrap().hash = Some(Digest([9; 32]));
    let plan = plan_checked(&base, held(&both), held(&both), &opts);
    assert!(!plan.state_unchanged && plan.is_noop());
    assert_eq!(plan.state.applied_to(&base), both);
    let mut leftover = tree(&base);
    leftover.leftovers.push(".twoway-tmp-1".into());
    let plan = plan_checked(&base, held(&base), &leftover, &opts);
    assert!(
        !plan.state_unchanged && !plan.is_noop(),
        "leftover: {plan:?}"
    );
    let mut excluded = tree(&base);
    excluded.excluded.insert("d/skip.tmp".into());
    assert!(plan_checked(&base, &excluded, held(&base), &opts).state_unchanged);
}

#[test]
fn conflict_names_follow_the_pattern_and_avoid_clashes() {
    let taken: BTreeSet<PathBuf> = BTreeSet::new();
    let n = conflict_name(Path::new("dir/report.final.pdf"), 0, &|p| taken.contains(p));
    let s = n.to_str().unwrap();
    assert!(
        s.starts_with("dir/report.final.conflict-") && s.ends_with(".pdf"),
        "{s}"
    );
    let first = n.clone();
    let n2 = conflict_name(Path::new("dir/report.final.pdf"), 0, &|p| p == first);
    assert!(n2.to_str().unwrap().ends_with("-2.pdf"), "{n2:?}");
    let dot = conflict_name(Path::new(".bashrc"), 0, &|_| false);
    assert!(
        dot.to_str().unwrap().starts_with(".bashrc.conflict-"),
        "{dot:?}"
    );
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn universe() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for x in NAMES {
        v.push(PathBuf::from(x));
        for y in NAMES {
            v.push(PathBuf::from(format!("{x}/{y}")));
        }
    }
    v
}

/// Builds a consistent tree (parents are directories) from one code per universe path.
fn build(codes: &[u8], mtime: i64) -> Map {
    let mut m = Map::new();
    for (p, &c) in universe().iter().zip(codes) {
        if !parent_ok(&m, p) {
            continue;
        }
        let e = match c % 7 {
            0 => continue,
            1 => dir(0o755, mtime),
            2 => file(1, mtime),
            3 => file(2, mtime),
            4 => {
                let mut e = file(3, mtime);
                e.mode = 0o755;
                e
            }
            5 => link("t1", mtime),
            _ => link("t2", mtime),
        };
        m.insert(p.clone(), e);
    }
    m
}

fn mutate(base: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(i, c) in edits {
        let n = v.len();
        v[i % n] = c;
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn any_pass_converges_loses_nothing_and_then_rests(
        base in proptest::collection::vec(0u8..7, 12),
        ea in proptest::collection::vec((0usize..12, 0u8..7), 0..5),
        eb in proptest::collection::vec((0usize..12, 0u8..7), 0..5),
        ta in 150i64..160,
        tb in 150i64..160,
        with_base in any::<bool>(),
        policy in prop_oneof![Just(ConflictPolicy::Newer), Just(ConflictPolicy::PreferA), Just(ConflictPolicy::PreferB)],
    ) {
        let base_map = if with_base { build(&base, 100) } else { Map::new() };
        let mut a = build(&base, 100);
        let mut b = build(&base, 100);
        // Edited entries get the side's own mtime.
        let am = build(&mutate(&base, &ea), ta);
        let bm = build(&mutate(&base, &eb), tb);
        for (m, edited, orig) in [(&mut a, am, base_map.clone()), (&mut b, bm, base_map.clone())] {
            *m = edited.into_iter().map(|(p, e)| {
                let keep_time = orig.get(&p).is_some_and(|o| o.kind == e.kind && o.hash == e.hash && o.target == e.target && o.mode == e.mode);
                let e = if keep_time { orig[&p].clone() } else { e };
                (p, e)
            }).collect();
        }
        check_pass(&base_map, &a, &b, policy);
    }
}

/// A deletion that a change on the other side undoes is named, so the pass can warn.
#[test]
fn deleted_on_a_and_modified_on_b_names_the_undone_deletion() {
    let mut base = Map::new();
    base.insert(PathBuf::from("f"), file(1, 10));
    base.insert(PathBuf::from("g"), file(3, 10));
    let a = Map::new();
    let mut b = Map::new();
    b.insert(PathBuf::from("f"), file(2, 20));
    b.insert(PathBuf::from("g"), file(3, 10));
    let plan = plan_sync(packed(&base), held(&a), held(&b), &SyncOptions::default());
    assert_eq!(plan.undone_deletions, vec![(PathBuf::from("f"), Side::A)]);
    // And the other way round; a plain one-sided deletion is no undone one.
    let plan = plan_sync(packed(&base), held(&b), held(&a), &SyncOptions::default());
    assert_eq!(plan.undone_deletions, vec![(PathBuf::from("f"), Side::B)]);
    let plan = plan_sync(
        packed(&base),
        held(&base),
        held(&a),
        &SyncOptions::default(),
    );
    assert!(plan.undone_deletions.is_empty());
}

/// As root a change of owner on one side is a change, carried to the other side; where
/// owners are not kept, neither owners nor the setuid bit a copy could not keep are.
#[test]
fn an_owner_changed_on_one_side_is_synced_only_where_owners_are_kept() {
    let owned = |uid: u32, mode: u32| {
        let mut e = file(1, 10).owned_by(engine::Owner { uid, gid: uid });
        e.mode = mode;
        e
    };
    let mut base = Map::new();
    base.insert(PathBuf::from("f"), owned(1000, 0o4755));
    let mut a = Map::new();
    a.insert(PathBuf::from("f"), owned(1001, 0o4755));
    let b = base.clone();
    let root = SyncOptions {
        keep_owners: true,
        ..SyncOptions::default()
    };
    let plan = plan_sync(packed(&base), held(&a), held(&b), &root);
    assert_eq!(plan.to_b.actions.len(), 1, "{:?}", plan.to_b.actions);
    assert!(matches!(&plan.to_b.actions[0].op, Op::SetFileMeta { also } if also.is_empty()));
    assert!(plan.to_a.actions.is_empty());

    let user = SyncOptions::default();
    assert!(plan_sync(packed(&base), held(&a), held(&b), &user).is_noop());
    // B's copy lost its setuid bit (its owner could not be kept): no change to carry.
    let mut stripped = Map::new();
    stripped.insert(PathBuf::from("f"), owned(1000, 0o755));
    assert!(plan_sync(packed(&base), held(&base), held(&stripped), &user).is_noop());
    assert!(!plan_sync(packed(&base), held(&base), held(&stripped), &root).is_noop());
}

#[test]
fn a_directory_renamed_on_one_side_is_moved_on_the_other() {
    let mut base = Map::default();
    base.insert("old".into(), dir(0o755, 100));
    base.insert("old/1".into(), file(1, 100));
    base.insert("old/2".into(), file(2, 100));
    let mut a = Map::default();
    a.insert("new".into(), dir(0o755, 200));
    a.insert("new/1".into(), file(1, 100));
    a.insert("new/2".into(), file(2, 100));
    let (plan, _) = check_pass(&base, &a, &base, ConflictPolicy::Newer);
    let ops: Vec<(String, PathBuf)> = plan
        .to_b
        .actions
        .iter()
        .map(|x| match &x.op {
            Op::Move { from } => (format!("move {}", from.display()), x.path.to_path_buf()),
            op => (op.verb().to_string(), x.path.to_path_buf()),
        })
        .collect();
    let at = |verb: &str, p: &str| {
        ops.iter()
            .position(|(v, q)| v == verb && q == Path::new(p))
            .unwrap_or_else(|| panic!("no {verb} {p} in {ops:?}"))
    };
    assert!(at("mkdir", "new") < at("move old/1", "new/1"));
    assert!(at("move old/2", "new/2") < at("rmdir", "old"));
    assert!(
        !ops.iter().any(|(v, _)| v == "copy" || v == "remove"),
        "nothing copied or deleted: {ops:?}"
    );
    assert_eq!(plan.deletes_b, 0, "a move is no deletion");
}

/// The region a watched rescan reads after `sides` changed from `base` (each side as the
/// watcher sees it): the folder of every changed path, or where that folder is gone, the
/// nearest one above it that is still a folder; and every folder that is new, whole.
fn region_read(base: &Map, sides: [&Map; 2]) -> Region {
    let mut region = Region::default();
    for side in sides {
        let is_dir =
            |p: &Path| p.as_os_str().is_empty() || side.get(p).is_some_and(|e| e.kind == Kind::Dir);
        for (p, was, now) in engine::tree::zip_paths(base, side) {
            if was == now {
                continue;
            }
            let mut d = engine::tree::parent_of(p);
            while !is_dir(d) {
                d = engine::tree::parent_of(d);
            }
            region.dirs.insert(d.to_path_buf());
            let new_dir =
                now.is_some_and(|e| e.kind == Kind::Dir) && was.is_none_or(|e| e.kind != Kind::Dir);
            if new_dir {
                region.whole.insert(p.to_path_buf());
            }
        }
    }
    region
}

/// Each step's actions, as (verb, path) pairs.
fn actions_of(plan: &SyncPlan) -> Vec<Vec<String>> {
    [&plan.keep_a, &plan.keep_b, &plan.to_a, &plan.to_b]
        .iter()
        .map(|p| {
            p.actions
                .iter()
                .map(|a| format!("{:?} {}", a.op, a.path.display()))
                .collect()
        })
        .collect()
}

/// `m`, each entry the same as `orig`'s at its path (kind, content, mode) given
/// `orig`'s times: only what was edited differs.
fn keeping_times(orig: &Map, m: Map) -> Map {
    m.into_iter()
        .map(|(p, e)| {
            let same = orig.get(&p).is_some_and(|o| {
                o.kind == e.kind && o.hash == e.hash && o.target == e.target && o.mode == e.mode
            });
            let e = if same { orig[&p].clone() } else { e };
            (p, e)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    /// Under --watch, a pass plans only the part read again (with the state's part of
    /// it) when every folder the state knows there is still a folder on both sides:
    /// it then plans what the whole would, and records the same state.
    #[test]
    fn a_plan_of_the_part_read_again_is_the_plan_of_the_whole(
        base in proptest::collection::vec(0u8..7, 12),
        ea in proptest::collection::vec((0usize..12, 0u8..7), 0..4),
        eb in proptest::collection::vec((0usize..12, 0u8..7), 0..4),
        policy in prop_oneof![Just(ConflictPolicy::Newer), Just(ConflictPolicy::PreferA), Just(ConflictPolicy::PreferB)],
    ) {
        let base_map = build(&base, 100);
        let a = build(&mutate(&base, &ea), 150);
        let b = build(&mutate(&base, &eb), 160);
        // Unchanged entries keep their times (so only what was edited differs).
        let keep = |m: Map| keeping_times(&base_map, m);
        let (a, b) = (keep(a), keep(b));
        let region = region_read(&base_map, [&a, &b]);
        let opts = SyncOptions { policy, modify_window: 0, keep_owners: true };
        let trees: &'static [Tree; 2] = Box::leak(Box::new([tree(&a), tree(&b)]));
        let parts: &'static [Tree; 2] =
            Box::leak(Box::new(trees.each_ref().map(|t| region.part_of(t))));
        let state = packed(&base_map);
        prop_assume!(folders_stay(parts, &state, &region));
        let whole = plan_sync(packed(&base_map), &trees[0], &trees[1], &opts);
        let part = plan_sync(state.part(&region), &parts[0], &parts[1], &opts);
        prop_assert_eq!(actions_of(&part), actions_of(&whole));
        prop_assert_eq!(
            part.conflicts.iter().map(|c| (&c.path, &c.copy)).collect::<Vec<_>>(),
            whole.conflicts.iter().map(|c| (&c.path, &c.copy)).collect::<Vec<_>>()
        );
        prop_assert_eq!(recorded(&part, &base_map), recorded(&whole, &base_map));
    }
}

/// The part a pass planned in part plans (see `state::Stored::narrow_in_windows`): the
/// entries at every path where [`acts_at`] says the planner acts, with the folders above
/// them on either side, and the state's records of those paths and folders.
fn narrowed_part(base: &Map, a: &Map, b: &Map, opts: &SyncOptions) -> (Map, Map, Map) {
    let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
    paths.extend(base.keys().map(Path::to_path_buf));
    paths.extend(a.keys().map(Path::to_path_buf));
    paths.extend(b.keys().map(Path::to_path_buf));
    let acts: Vec<PathBuf> = paths
        .into_iter()
        .filter(|p| acts_at(base.get(p), a.get(p), b.get(p), opts) != AtPath::Nothing)
        .collect();
    let kept = |p: &Path| acts.iter().any(|q| q.starts_with(p));
    let part = |m: &Map| -> Map {
        m.iter()
            .filter(|(p, _)| kept(p))
            .map(|(p, e)| (p.to_path_buf(), e.clone()))
            .collect()
    };
    // The state's records above a path kept are its folders (parents are folders).
    (part(base), part(a), part(b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    /// A pass read compact plans only the part where the planner acts at a path (and
    /// the folders above), with the state's records of it, told which paths lie outside
    /// it: it plans what the whole would, names conflict copies alike, and records the
    /// same state. Where no path acts, the whole plans nothing.
    #[test]
    fn a_plan_of_the_part_where_the_planner_acts_is_the_plan_of_the_whole(
        base in proptest::collection::vec(0u8..7, 12),
        ea in proptest::collection::vec((0usize..12, 0u8..7), 0..4),
        eb in proptest::collection::vec((0usize..12, 0u8..7), 0..4),
        ta in 150i64..153,
        tb in 150i64..153,
        with_base in any::<bool>(),
        taken in any::<bool>(),
        policy in prop_oneof![Just(ConflictPolicy::Newer), Just(ConflictPolicy::PreferA), Just(ConflictPolicy::PreferB)],
    ) {
        let mut base_map = if with_base { build(&base, 100) } else { Map::new() };
        let orig = build(&base, 100);
        // Unchanged entries keep their times (so only what was edited differs).
        let keep = |m: Map| keeping_times(&orig, m);
        let mut a = keep(build(&mutate(&base, &ea), ta));
        let mut b = keep(build(&mutate(&base, &eb), tb));
        // The first name a conflict copy would take, taken by a file that is the same
        // on both sides and in the state: outside the part.
        if taken {
            for p in a.keys().map(Path::to_path_buf).collect::<Vec<_>>() {
                for t in [ta, tb, 100] {
                    let c = conflict_name(&p, t, &|_| false);
                    let fits = parent_ok(&a, &c) && parent_ok(&b, &c);
                    if fits && !a.contains_key(&c) && !b.contains_key(&c) {
                        for m in [&mut a, &mut b, &mut base_map] {
                            m.insert(c.clone(), file(6, 90));
                        }
                    }
                }
            }
        }
        let opts = SyncOptions { policy, modify_window: 0, keep_owners: true };
        let trees: &'static [Tree; 2] = Box::leak(Box::new([tree(&a), tree(&b)]));
        let (pbase, pa, pb) = narrowed_part(&base_map, &a, &b, &opts);
        let parts: &'static [Tree; 2] = Box::leak(Box::new([tree(&pa), tree(&pb)]));
        let whole = plan_sync(packed(&base_map), &trees[0], &trees[1], &opts);
        if pa.is_empty() && pb.is_empty() && pbase.is_empty() {
            prop_assert!(whole.is_noop() && whole.state_unchanged);
            return Ok(());
        }
        let outside = |p: &Path| a.contains_key(p) || b.contains_key(p);
        let part = plan_sync_part(packed(&pbase), &parts[0], &parts[1], &opts, &outside);
        prop_assert_eq!(actions_of(&part), actions_of(&whole));
        prop_assert_eq!(
            part.conflicts.iter().map(|c| (&c.path, &c.copy)).collect::<Vec<_>>(),
            whole.conflicts.iter().map(|c| (&c.path, &c.copy)).collect::<Vec<_>>()
        );
        prop_assert_eq!(recorded(&part, &base_map), recorded(&whole, &base_map));
    }
}

/// A folder removed on one side: the state's records under it are outside the part
/// read again, so the whole is planned.
#[test]
fn a_folder_gone_on_one_side_is_planned_whole() {
    let mut base = Map::new();
    base.insert("d".into(), dir(0o755, 100));
    base.insert("d/f".into(), file(1, 100));
    base.insert("g".into(), file(2, 100));
    let mut a = base.clone();
    a.remove(Path::new("d/f"));
    a.remove(Path::new("d"));
    let region = region_read(&base, [&a, &base]);
    let parts = [tree(&a), tree(&base)].map(|t| region.part_of(&t));
    assert!(!folders_stay(&parts, &packed(&base), &region));
    // An edit beside it alone is planned as a part.
    let mut a = base.clone();
    a.insert("g".into(), file(3, 150));
    let region = region_read(&base, [&a, &base]);
    let parts = [tree(&a), tree(&base)].map(|t| region.part_of(&t));
    assert!(folders_stay(&parts, &packed(&base), &region));
}

/// A folder that holds an excluded path on one side (a store inside it, say) stays on
/// both sides when the other side deletes it: what is in it besides goes.
#[test]
fn a_folder_holding_an_excluded_path_is_never_removed() {
    let mut base = Map::new();
    base.insert("sub".into(), dir(0o755, 100));
    base.insert("sub/y".into(), file(1, 100));
    let a = base.clone();
    let b = Map::new();
    let mut ta = tree(&a);
    ta.excluded.insert("sub/vers".into());
    let trees: &'static [Tree; 2] = Box::leak(Box::new([ta, tree(&b)]));
    let opts = SyncOptions {
        policy: ConflictPolicy::Newer,
        modify_window: 0,
        keep_owners: true,
    };
    let plan = plan_sync(packed(&base), &trees[0], &trees[1], &opts);
    let (na, nb) = simulate(&plan, &a, &b);
    assert!(
        na.get(Path::new("sub"))
            .is_some_and(|e| e.kind == Kind::Dir),
        "{plan:?}"
    );
    assert!(
        nb.get(Path::new("sub"))
            .is_some_and(|e| e.kind == Kind::Dir),
        "{plan:?}"
    );
    assert!(!na.contains_key(Path::new("sub/y")));
}

#[test]
fn a_conflict_loser_kept_as_a_copy_is_no_deletion() {
    // f: a file on both sides at the last sync; A made it a directory, B edited it.
    // d: a directory; A edited a file in it, B made it a file. A's side wins both (newer);
    // B's file at each path is kept as a conflict copy before it goes.
    let base: Map = [
        ("d".into(), dir(0o755, 100)),
        ("d/x".into(), file(1, 100)),
        ("f".into(), file(2, 100)),
    ]
    .into();
    let a: Map = [
        ("d".into(), dir(0o755, 100)),
        ("d/x".into(), file(3, 300)),
        ("f".into(), dir(0o755, 300)),
        ("f/inner".into(), file(4, 300)),
    ]
    .into();
    let b: Map = [("d".into(), file(5, 200)), ("f".into(), file(6, 200))].into();
    let (plan, after) = check_pass(&base, &a, &b, ConflictPolicy::Newer);
    assert_eq!(plan.conflicts.len(), 2);
    let kept: Vec<_> = after
        .values()
        .filter_map(|e| e.hash)
        .filter(|h| *h == Digest([5; 32]) || *h == Digest([6; 32]))
        .collect();
    assert_eq!(
        kept.len(),
        2,
        "both of B's files are kept as conflict copies"
    );
    assert_eq!(
        (plan.deletes_a, plan.deletes_b),
        (0, 0),
        "a file kept as a conflict copy is not counted against --max-delete"
    );
    // A file that goes without a copy still counts.
    let b2: Map = [("d".into(), dir(0o755, 100)), ("d/x".into(), file(1, 100))].into();
    let a2: Map = [("d".into(), dir(0o755, 100))].into();
    let (plan, _) = check_pass(&base, &a2, &b2, ConflictPolicy::Newer);
    assert_eq!(plan.deletes_b, 1);
}
