//! Additive mode (`oneway --additive`): of a mirror plan, only what adds to the
//! destination. Nothing the destination holds is deleted, overwritten or changed; each
//! difference left alone is reported. Pure, like the planner it filters.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::mirror::{Action, Op, Plan};
use crate::tree::under_any;

/// A difference between the source and the destination that an additive pass leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftAlone {
    pub path: PathBuf,
    pub why: &'static str,
}

/// Keeps the actions of `plan` that only add: new directories (with their metadata),
/// new files, new symlinks and new hard links. Everything else is dropped and listed:
/// removals, replacements, metadata changes of what the destination holds, and whatever
/// would be made at or under a path the destination holds as something else (a file
/// where the source has a directory, or a symlink: never written through).
pub fn additive(plan: Plan) -> (Plan, Vec<LeftAlone>) {
    let mut left = Vec::new();
    // Paths the destination holds as another kind: nothing is made there or below.
    let blocked: BTreeSet<PathBuf> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.op, Op::Remove { .. }) && a.dst.is_some())
        .map(|a| a.path.to_path_buf())
        .collect();
    let created_dirs: BTreeSet<&Path> = plan
        .actions
        .iter()
        .filter(|a| a.op == Op::Mkdir && !under_any(&blocked, &a.path))
        .map(|a| &*a.path)
        .collect();
    let mut kept: Vec<Action> = Vec::with_capacity(plan.actions.len());
    for a in &plan.actions {
        let why = match &a.op {
            Op::Remove { .. } if a.dst.is_none() => "a special file the source lacks",
            Op::Remove { .. } if blocked_by_kind(&plan, a) => "another kind of entry in the source",
            Op::Remove { .. } | Op::Rmdir => "not in the source",
            Op::Copy { replace: true } => "content differs from the source",
            Op::Symlink { replace: true } => "link target differs from the source",
            Op::SetFileMeta { .. } => "mode or mtime differs from the source",
            Op::Link { .. } if a.dst.is_some() => "another file than the source's link",
            Op::Move { .. } => "BUG: an additive plan has no moves",
            // The destination's own directories keep their mode and mtime; what would
            // be made at or under a path it holds as another kind is reported there.
            Op::SetDirMeta if !created_dirs.contains(&*a.path) => continue,
            _ if under_any(&blocked, &a.path) => continue,
            _ => {
                kept.push(a.clone());
                continue;
            }
        };
        left.push(LeftAlone {
            path: a.path.to_path_buf(),
            why,
        });
    }
    (
        Plan {
            actions: kept,
            errors: plan.errors,
        },
        left,
    )
}

/// A removal that makes room for another kind of entry at the same path.
fn blocked_by_kind(plan: &Plan, removal: &Action) -> bool {
    plan.actions.iter().any(|a| {
        a.path == removal.path
            && matches!(
                a.op,
                Op::Mkdir | Op::Copy { .. } | Op::Symlink { .. } | Op::Link { .. }
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::mirror::{plan_mirror, MirrorOptions};
    use crate::tree::{Digest, Entry, MTime, Tree};

    fn file(content: u8, sec: i64) -> Entry {
        Entry::file(3, 0o644, MTime::new(sec, 0), Some(Digest([content; 32])))
    }

    fn tree(entries: &[(&str, Entry)]) -> Tree {
        let mut t = Tree::default();
        for (p, e) in entries {
            t.entries.insert((*p).into(), e.clone());
        }
        t
    }

    #[test]
    fn only_what_adds_is_kept_and_every_difference_is_reported() {
        let dir = || Entry::dir(0o755, MTime::new(100, 0));
        let src = tree(&[
            ("new.txt", file(1, 100)),
            ("changed.txt", file(2, 200)),
            ("touched.txt", file(3, 300)),
            ("newdir", dir()),
            ("newdir/a", file(4, 100)),
            ("was-file", dir()),
            ("was-file/inner", file(5, 100)),
            ("link", Entry::symlink("there", MTime::new(100, 0))),
        ]);
        let mut touched = file(3, 301);
        touched.mode = 0o600;
        let dst = tree(&[
            ("changed.txt", file(9, 100)),
            ("touched.txt", touched),
            ("gone.txt", file(6, 100)),
            ("was-file", file(7, 100)),
            ("link", Entry::symlink("elsewhere", MTime::new(100, 0))),
        ]);
        let plan = plan_mirror(&src, &dst, &MirrorOptions::default());
        let (plan, left) = additive(plan);
        let kept: Vec<(String, String)> = plan
            .actions
            .iter()
            .map(|a| (a.op.verb().to_string(), a.path.display().to_string()))
            .collect();
        let pair = |v: &str, p: &str| (v.to_string(), p.to_string());
        assert_eq!(
            kept,
            [
                pair("copy", "new.txt"),
                pair("mkdir", "newdir"),
                pair("copy", "newdir/a"),
                pair("dirmeta", "newdir"),
            ],
            "{left:?}"
        );
        let reported: Vec<&str> = left.iter().map(|l| l.path.to_str().unwrap()).collect();
        for p in ["changed.txt", "touched.txt", "gone.txt", "was-file", "link"] {
            assert!(reported.contains(&p), "{p} not reported: {left:?}");
        }
        assert!(
            !reported.contains(&"was-file/inner"),
            "reported once, at the top"
        );
    }
}
