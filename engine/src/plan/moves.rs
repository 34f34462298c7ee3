//! Moves: a file that a plan copies to a new path, while it removes a destination file
//! with the same content, is moved there instead (one rename: nothing copied, nothing
//! deleted, the destination file keeps its inode).
//!
//! A rewrite of a plan, pure like the planners that call it (`oneway` on its mirror
//! plan, `twoway` on each side's). It matches by SHA-256 only, and only where both
//! hashes are already known (the stat caches give them, by path or, for a file renamed
//! since the last pass, by inode): it never reads a file to find a move.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::mirror::{Action, Op, Plan};
use crate::tree::{Digest, Entry, Kind, Tree};

/// A destination file the plan removes, which a move may take instead.
struct Candidate<'t> {
    path: Box<Path>,
    entry: &'t Entry,
    /// The place of its own removal in the plan (`None`: under a removed directory).
    removal: Option<usize>,
}

/// Turns copies into moves where `plan` (made against the destination `dst`) also
/// removes a file with the same content, and orders the plan for them: each move comes
/// after every directory is made and before the removal of the directory it leaves.
/// Returns how many moves it made.
///
/// A file the plan removes is taken only when nothing is created at its path or above it
/// (a directory replaced by a file must be gone before the file comes). Empty files and
/// files the source links to others (hard links) are copied as before.
pub fn find_moves<'t>(plan: &mut Plan<'t>, dst: &'t Tree) -> usize {
    let is_target = |a: &Action| {
        a.op == Op::Copy { replace: false }
            && a.dst.is_none()
            && a.src.as_ref().is_some_and(|s| {
                s.kind == Kind::File && !s.linked && s.size > 0 && s.hash.is_some()
            })
    };
    // The contents copied to new paths with a known hash: in a pass, mostly files renamed
    // since the last one (a first pass knows no hash of a new file). Everything held
    // below is about as large as this, never as the tree.
    let wanted: HashSet<Digest> = plan
        .actions
        .iter()
        .filter(|a| is_target(a))
        .filter_map(|a| a.src.as_ref()?.hash)
        .collect();
    if wanted.is_empty() {
        return 0;
    }

    // Files the plan removes with one of those contents, in plan order (a directory's in
    // path order).
    let mut found: Vec<(Digest, Candidate)> = Vec::new();
    for (i, a) in plan.actions.iter().enumerate() {
        let mut add = |path: &Path, e: &'t Entry, removal| {
            if let Some(h) = e
                .hash
                .filter(|h| e.kind == Kind::File && wanted.contains(h))
            {
                let entry = e;
                let path = path.into();
                found.push((
                    h,
                    Candidate {
                        path,
                        entry,
                        removal,
                    },
                ));
            }
        };
        match (&a.op, a.dst) {
            (Op::Remove { kind: Kind::File }, Some(d)) => add(&a.path, d, Some(i)),
            (Op::Remove { kind: Kind::Dir }, Some(_)) => {
                for (q, e) in dst.entries.at_and_under(&a.path) {
                    add(q, e, None);
                }
            }
            _ => {}
        }
    }
    if found.is_empty() {
        return 0;
    }
    // Only where nothing is created at the file's path or above it.
    let watched: HashSet<&Path> = found.iter().flat_map(|(_, c)| c.path.ancestors()).collect();
    let blocked: HashSet<&Path> = plan
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a.op,
                Op::Mkdir | Op::Copy { .. } | Op::Symlink { .. } | Op::Link { .. }
            ) && watched.contains(&*a.path)
        })
        .map(|a| &*a.path)
        .collect();
    let mut by_hash: HashMap<Digest, Vec<Candidate>> = HashMap::new();
    for (h, c) in found {
        if !c.path.ancestors().any(|a| blocked.contains(a)) {
            by_hash.entry(h).or_default().push(c);
        }
    }
    if by_hash.is_empty() {
        return 0;
    }
    for list in by_hash.values_mut() {
        list.reverse();
    }

    // Each copy takes the first unused file with its content.
    let mut moved: Vec<usize> = Vec::new();
    let mut dropped: HashSet<usize> = HashSet::new();
    let mut left: Vec<Box<Path>> = Vec::new();
    for (i, a) in plan.actions.iter_mut().enumerate() {
        if !is_target(a) {
            continue;
        }
        let h = a
            .src
            .as_ref()
            .and_then(|s| s.hash)
            .expect("BUG: checked above");
        let Some(c) = by_hash.get_mut(&h).and_then(|l| l.pop()) else {
            continue;
        };
        a.op = Op::Move {
            from: c.path.clone(),
        };
        a.dst = Some(c.entry);
        dropped.extend(c.removal);
        left.push(c.path);
        moved.push(i);
    }
    if moved.is_empty() {
        return 0;
    }

    // A directory removed whole, or removed once empty, that a moved file leaves: after
    // the moves.
    // Placed before the hard links and directory metadata, which come last anyway.
    let leaves = |dir: &Path| left.iter().any(|p| p.starts_with(dir) && &**p != dir);
    let mut actions = Vec::with_capacity(plan.actions.len());
    let mut moves = Vec::with_capacity(moved.len());
    let mut after = Vec::new();
    for (i, a) in std::mem::take(&mut plan.actions).into_iter().enumerate() {
        if dropped.contains(&i) {
            continue;
        }
        match a.op {
            Op::Move { .. } => moves.push(a),
            Op::Remove { kind: Kind::Dir } | Op::Rmdir if leaves(&a.path) => after.push(a),
            _ => actions.push(a),
        }
    }
    let at = actions
        .iter()
        .position(|a| matches!(a.op, Op::SetDirMeta | Op::Link { .. }))
        .unwrap_or(actions.len());
    actions.splice(at..at, moves.into_iter().chain(after));
    plan.actions = actions;
    moved.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::mirror::{plan_mirror, MirrorOptions};
    use crate::tree::MTime;

    fn file(ino: u64, content: u8, size: u64) -> Entry {
        let mut e = Entry::file(
            size,
            0o644,
            MTime::new(1000, 5),
            Some(Digest([content; 32])),
        );
        e.ino = ino;
        e
    }

    fn dir() -> Entry {
        Entry::dir(0o755, MTime::new(1000, 0))
    }

    fn tree(entries: &[(&str, Entry)]) -> Tree {
        let mut t = Tree::default();
        for (p, e) in entries {
            t.entries.insert((*p).into(), e.clone());
        }
        t
    }

    fn ops(plan: &Plan) -> Vec<(String, String)> {
        plan.actions
            .iter()
            .map(|a| {
                let op = match &a.op {
                    Op::Move { from } => format!("move from {}", from.display()),
                    op => op.verb().to_string(),
                };
                (op, a.path.display().to_string())
            })
            .collect()
    }

    fn pair(op: &str, p: &str) -> (String, String) {
        (op.to_string(), p.to_string())
    }

    #[test]
    fn a_renamed_file_is_moved_not_copied_and_removed() {
        let src = tree(&[("b.jpg", file(7, 1, 8))]);
        let dst = tree(&[("a.jpg", file(70, 1, 8))]);
        let mut plan = plan_mirror(&src, &dst, &MirrorOptions::default());
        assert_eq!(find_moves(&mut plan, &dst), 1);
        assert_eq!(ops(&plan), [pair("move from a.jpg", "b.jpg")]);
        let m = &plan.actions[0];
        assert_eq!(m.dst.map(|d| d.ino), Some(70), "expects BACKUP's file");
        assert_eq!(plan.files_lost(&dst).count(), 0, "nothing is lost");
    }

    #[test]
    fn a_renamed_directory_moves_each_file_before_the_old_one_goes() {
        // "photos" renamed "pics"; it sorts after, so its removal comes first in path
        // order: the moves must run between the mkdir and the removal.
        let src = tree(&[
            ("zz", dir()),
            ("zz/1.jpg", file(1, 1, 9)),
            ("zz/2.jpg", file(2, 2, 9)),
            ("zz/new.jpg", file(3, 3, 9)),
        ]);
        let dst = tree(&[
            ("aa", dir()),
            ("aa/1.jpg", file(11, 1, 9)),
            ("aa/2.jpg", file(12, 2, 9)),
            ("aa/old.jpg", file(13, 4, 9)),
        ]);
        let mut plan = plan_mirror(&src, &dst, &MirrorOptions::default());
        assert_eq!(find_moves(&mut plan, &dst), 2);
        let got = ops(&plan);
        let at = |x: (String, String)| got.iter().position(|g| *g == x).unwrap();
        let mkdir = at(pair("mkdir", "zz"));
        let m1 = at(pair("move from aa/1.jpg", "zz/1.jpg"));
        let m2 = at(pair("move from aa/2.jpg", "zz/2.jpg"));
        let rm = at(pair("remove", "aa"));
        assert!(mkdir < m1 && m1 < m2 && m2 < rm, "{got:?}");
        assert!(got.contains(&pair("copy", "zz/new.jpg")));
        let lost: Vec<_> = plan
            .files_lost(&dst)
            .map(|(p, _)| p.to_path_buf())
            .collect();
        assert_eq!(lost, [Path::new("aa/old.jpg")], "only what no move takes");
    }

    #[test]
    fn unknown_hashes_empty_files_links_and_replaced_parents_are_copied() {
        let mut no_hash = file(1, 1, 9);
        no_hash.hash = None;
        let mut linked = file(2, 2, 9);
        linked.linked = true;
        let src = tree(&[
            ("n", no_hash),
            ("l", linked.clone()),
            ("l2", linked),
            ("e", file(3, 0, 0)),
            // "d" was a directory holding the content now at "x": "d" becomes a file.
            ("d", file(4, 5, 9)),
            ("x", file(5, 6, 9)),
        ]);
        let dst = tree(&[
            ("old-n", file(11, 1, 9)),
            ("old-l", file(12, 2, 9)),
            ("old-e", file(13, 0, 0)),
            ("d", dir()),
            ("d/x", file(14, 6, 9)),
        ]);
        let mut plan = plan_mirror(&src, &dst, &MirrorOptions::default());
        assert_eq!(find_moves(&mut plan, &dst), 0, "{:?}", ops(&plan));
    }

    #[test]
    fn each_removed_file_is_taken_once() {
        let src = tree(&[("a", file(1, 1, 9)), ("b", file(2, 1, 9))]);
        let dst = tree(&[("c", file(3, 1, 9))]);
        let mut plan = plan_mirror(&src, &dst, &MirrorOptions::default());
        assert_eq!(find_moves(&mut plan, &dst), 1);
        let got = ops(&plan);
        assert!(got.contains(&pair("move from c", "a")), "{got:?}");
        assert!(got.contains(&pair("copy", "b")), "{got:?}");
    }
}
