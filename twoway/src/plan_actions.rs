//! Each side's actions, from the final state the planner decided for every path.

use super::*;

/// The actions that bring `side` (scanned as `cur`) to the final state.
pub(super) fn actions_for<'t>(
    side: Side,
    finals: &Finals<'t>,
    cur: &'t Tree,
    owners: bool,
) -> (Plan<'t>, Plan<'t>, usize) {
    let mut keep = Plan::default();
    let mut to = Plan::default();
    let mut rmdirs: Vec<Action<'t>> = Vec::new();
    // Directories whose mode and mtime are set after their contents: listed as met
    // (neighbours share a parent, listed once), sorted at the end.
    let mut dir_meta: Vec<PathBuf> = Vec::new();
    let mut deletes = 0usize;
    // Files of this side kept as conflict copies before they go: their removal loses
    // nothing, and is no deletion for `--max-delete`.
    let preserved: std::collections::HashSet<&Path> = finals
        .added
        .values()
        .flatten()
        .filter(|f| f.from == side)
        .filter_map(|f| f.copy_of.as_deref().map(PathBuf::as_path))
        .collect();
    let counts = |p: &Path, kind: Kind| usize::from(kind == Kind::File && !preserved.contains(p));
    let mut cleared: Option<PathBuf> = None;
    let touched = |p: &Path, dir_meta: &mut Vec<PathBuf>| {
        let parent = engine::tree::parent_of(p);
        if !parent.as_os_str().is_empty() && dir_meta.last().is_none_or(|l| l != parent) {
            dir_meta.push(parent.to_path_buf());
        }
    };
    // Temporary files of an interrupted pass go first.
    for l in &cur.leftovers {
        to.actions
            .push(Action::new(Op::RemoveLeftover, l.as_path(), None, None));
        touched(l, &mut dir_meta);
    }

    let rows = engine::tree::zip_sorted_by(finals.paths(), cur.entries.iter(), |f| &f.0, |c| c.0);
    for (f, c) in rows {
        // Only the paths decided: a path only the replica has is one left alone.
        let Some((path, f)) = f else { continue };
        let (p, c): (&Path, _) = (&path, c.map(|c| c.1));
        if cleared.as_ref().is_some_and(|c| p.starts_with(c) && p != c) {
            continue;
        }
        match f {
            None => {
                if let Some(c) = c {
                    if c.kind == Kind::Dir {
                        rmdirs.push(Action::new(Op::Rmdir, path.clone(), None, Some(c)));
                    } else {
                        deletes += counts(p, c.kind);
                        to.actions.push(Action::new(
                            Op::Remove { kind: c.kind },
                            path.clone(),
                            None,
                            Some(c),
                        ));
                    }
                    touched(p, &mut dir_meta);
                }
            }
            Some(f) if f.from == side => {
                if let Some(orig) = &f.copy_of {
                    let op = Op::Preserve {
                        from: orig.as_path().into(),
                    };
                    keep.actions
                        .push(Action::new(op, path.clone(), Some(f.entry), None));
                    touched(p, &mut dir_meta);
                }
            }
            Some(f) => {
                let e = f.entry;
                if same(c, Some(e), 0, owners)
                    && (e.kind != Kind::Dir || c.is_some_and(|c| c.mtime == e.mtime))
                {
                    continue;
                }
                if let Some(cv) = c.filter(|cv| cv.kind != e.kind) {
                    if cv.kind == Kind::Dir {
                        // Nothing below survives (else it would stay a directory): remove
                        // what the scan saw there, one by one, deepest first, then the dir.
                        let below: Vec<(&Path, &Entry)> = cur.entries.at_and_under(p).collect();
                        for (q, qe) in below.iter().rev() {
                            let op = if qe.kind == Kind::Dir {
                                Op::Rmdir
                            } else {
                                deletes += counts(q, qe.kind);
                                Op::Remove { kind: qe.kind }
                            };
                            to.actions.push(Action::new(op, *q, None, Some(*qe)));
                        }
                        cleared = Some(p.to_path_buf());
                    } else {
                        deletes += counts(p, cv.kind);
                        to.actions.push(Action::new(
                            Op::Remove { kind: cv.kind },
                            path.clone(),
                            None,
                            Some(cv),
                        ));
                    }
                }
                let c = c.filter(|cv| cv.kind == e.kind);
                let op = match (e.kind, c) {
                    (Kind::Dir, None) => Op::Mkdir,
                    (Kind::Dir, Some(_)) => {
                        dir_meta.push(p.to_path_buf());
                        continue;
                    }
                    (Kind::File, None) => Op::Copy { replace: false },
                    (Kind::File, Some(cv)) if same_content(cv, e) => {
                        Op::SetFileMeta { also: Box::new([]) }
                    }
                    (Kind::File, Some(_)) => Op::Copy { replace: true },
                    (Kind::Symlink, c) => Op::Symlink {
                        replace: c.is_some(),
                    },
                };
                if op == Op::Mkdir {
                    dir_meta.push(p.to_path_buf());
                }
                to.actions.push(Action::new(op, path.clone(), Some(e), c));
                touched(p, &mut dir_meta);
            }
        }
    }
    // Directories go after their contents, deepest first.
    rmdirs.sort_by(|x, y| y.path.cmp(&x.path));
    to.actions.extend(rmdirs);
    engine::tree::sort_paths(&mut dir_meta);
    dir_meta.dedup();
    for d in dir_meta.into_iter().rev() {
        if let Some(Some(f)) = finals.get(&d) {
            if f.entry.kind == Kind::Dir {
                to.actions
                    .push(Action::new(Op::SetDirMeta, d, Some(f.entry), None));
            }
        }
    }
    // A file moved or renamed on the other side is moved here too, not copied and
    // deleted (each move takes the place of a file's removal).
    deletes -= engine::plan::moves::find_moves(&mut to, cur);
    // A first sync plans an action per entry: no slack kept.
    to.actions.shrink_to_fit();
    (keep, to, deletes)
}
