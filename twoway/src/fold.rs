//! Case-folding filesystems (FAT, exFAT, SMB): names a plan would give a replica that
//! ignores case, and which collide there, are left alone on both sides (made unknown
//! before the pass is planned). Pure, like the planner it calls.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use engine::tree::Tree;

use crate::packed::Packed;
use crate::plan::{plan_sync, Side, SyncOptions, SyncPlan};

/// Paths `plan` (made against `base`) would give `side`, a replica whose filesystem
/// folds case, under a name
/// that another planned path already takes there (`Photo.jpg` and `photo.jpg` are one
/// file on FAT): each with the path it collides with. Of such names the one `side`
/// already holds keeps its place, else the first in byte order; paths under a listed
/// one are not listed again. Leaving the others alone on both sides (unknown to the
/// planner) keeps one file from replacing the other there.
pub fn case_collisions(plan: &SyncPlan<'_>, base: &Packed, side: &Tree) -> Vec<(PathBuf, PathBuf)> {
    if plan.state_unchanged {
        // Nothing changes: every name is where it already was.
        return Vec::new();
    }
    let mut names: HashMap<String, Vec<&Path>> = HashMap::new();
    for p in plan.state.paths_after(base) {
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

/// Where `folds` says which replicas (A, B) ignore case in names: the paths that
/// [`case_collisions`] finds in a plan of the pass are made unknown on both sides of
/// `trees`, so that the pass, planned again, leaves them alone. Gives each with the side
/// it would have collided on and the path it collides with.
pub fn leave_collisions(
    base: &Packed,
    trees: &mut [Tree; 2],
    opts: &SyncOptions,
    folds: [bool; 2],
) -> Vec<(Side, PathBuf, PathBuf)> {
    if folds == [false, false] {
        return Vec::new();
    }
    let [a, b] = &*trees;
    let plan = plan_sync(base, a, b, opts);
    let mut collided = Vec::new();
    for ((side, tree), folds) in [(Side::A, a), (Side::B, b)].into_iter().zip(folds) {
        if folds {
            collided.extend(
                case_collisions(&plan, base, tree)
                    .into_iter()
                    .map(|(p, with)| (side, p, with)),
            );
        }
    }
    drop(plan);
    for (_, p, _) in &collided {
        for t in trees.iter_mut() {
            t.unknown.insert(p.clone());
        }
    }
    collided
}
