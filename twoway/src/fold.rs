//! Case-folding filesystems (FAT, exFAT, SMB): names a plan would give a replica that
//! ignores case, and which collide there, are left alone on both sides. Pure, like the
//! planner it wraps.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use engine::tree::Tree;

use crate::packed::Packed;
use crate::plan::{plan_sync, Side, SyncOptions, SyncPlan};

/// Paths `plan` would give `side`, a replica whose filesystem folds case, under a name
/// that another planned path already takes there (`Photo.jpg` and `photo.jpg` are one
/// file on FAT): each with the path it collides with. Of such names the one `side`
/// already holds keeps its place, else the first in byte order; paths under a listed
/// one are not listed again. Leaving the others alone on both sides (unknown to the
/// planner) keeps one file from replacing the other there.
pub fn case_collisions(plan: &SyncPlan, side: &Tree) -> Vec<(PathBuf, PathBuf)> {
    if plan.state_unchanged {
        // Nothing changes: every name is where it already was.
        return Vec::new();
    }
    let mut names: HashMap<String, Vec<&Path>> = HashMap::new();
    for p in plan.state.keys() {
        names
            .entry(engine::plan::mirror::fold_case(p))
            .or_default()
            .push(p);
    }
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    for mut same in names.into_values().filter(|v| v.len() > 1) {
        same.sort_by_key(|p| (!side.entries.contains_key(p), *p));
        found.extend(
            same[1..]
                .iter()
                .map(|p| (p.to_path_buf(), same[0].to_path_buf())),
        );
    }
    found.sort();
    let mut listed: BTreeSet<PathBuf> = BTreeSet::new();
    found.retain(|(p, _)| {
        let under = engine::tree::under_any(&listed, p);
        listed.insert(p.clone());
        !under
    });
    found
}

/// [`plan_sync`] where `folds` says which replicas (A, B) ignore case in names: a path
/// that [`case_collisions`] finds is made unknown on both sides, and the pass planned
/// again without it. Takes the trees and gives them back (with those paths unknown):
/// the plan, the paths left alone, each with the side it would have collided on and
/// the path it collides with, and the trees.
pub fn plan_sync_folding(
    base: Packed,
    [mut a, mut b]: [Tree; 2],
    opts: &SyncOptions,
    folds: [bool; 2],
) -> (SyncPlan, Vec<(Side, PathBuf, PathBuf)>, [Tree; 2]) {
    if folds == [false, false] {
        let plan = plan_sync(base, &a, &b, opts);
        return (plan, Vec::new(), [a, b]);
    }
    let plan = plan_sync(&base, &a, &b, opts);
    let mut collided = Vec::new();
    for ((side, tree), folds) in [(Side::A, &a), (Side::B, &b)].into_iter().zip(folds) {
        if folds {
            collided.extend(
                case_collisions(&plan, tree)
                    .into_iter()
                    .map(|(p, with)| (side, p, with)),
            );
        }
    }
    if collided.is_empty() {
        return (plan, collided, [a, b]);
    }
    drop(plan);
    for (_, p, _) in &collided {
        a.unknown.insert(p.clone());
        b.unknown.insert(p.clone());
    }
    let plan = plan_sync(base, &a, &b, opts);
    (plan, collided, [a, b])
}
