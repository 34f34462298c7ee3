//! The mirror planner: a pure function from a source tree and a destination tree to the
//! ordered list of actions that makes the destination equal to the source.
//!
//! Used by `oneway` (SOURCE → BACKUP) and by restore (version → directory). It never
//! touches a disk; `apply` carries the plan out and `--dry-run` prints it.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::tree::{under_any, Entry, Kind, Tree};

/// How the planner compares entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorOptions {
    /// Compare file contents by hash (both sides must be hashed) instead of size + mtime.
    pub checksum: bool,
    /// Mtimes within this many seconds are equal (0: equal at the coarser precision).
    pub modify_window: u64,
    /// The destination folds case: names that differ only in case collide there.
    pub case_insensitive: bool,
    /// The destination cannot store permission bits (FAT, SMB): do not compare them.
    pub ignore_modes: bool,
    /// Owners are kept (the process runs as root): a different owner is a change.
    /// Otherwise setuid and setgid are not compared either: a copy whose owner could not
    /// be kept never has them (see `fs`), and that is no difference to mend.
    pub keep_owners: bool,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a directory (its metadata is set by a later `SetDirMeta`).
    Mkdir,
    /// Copy a file from the source, creating or replacing the destination's.
    Copy { replace: bool },
    /// Create or replace a symlink.
    Symlink { replace: bool },
    /// The file's content is the same; set mode and mtime (and extended attributes). `also`:
    /// the other names of a hard-linked group that is one file in the destination
    /// already, which take them with it (the file is changed once, in place).
    SetFileMeta { also: Box<[Box<Path>]> },
    /// Remove an entry (a whole subtree for a directory) the source does not have.
    Remove { kind: Kind },
    /// Remove a temporary file left by an interrupted pass.
    RemoveLeftover,
    /// Set a directory's mode and mtime, after its contents are done.
    SetDirMeta,
    /// Remove a directory only if it is empty (its entries were removed one by one, so
    /// anything that appeared since the scan is kept).
    Rmdir,
    /// Keep a second copy of an entry of the same tree under a new name (a conflict copy),
    /// hard-linked where possible; `from` names the original (relative to the root).
    Preserve { from: Box<Path> },
    /// Make the file a hard link of `from` (replacing what is there), as the source's
    /// two names are one file; after the copies, since `from` may be one of them.
    Link { from: Box<Path> },
    /// Rename the destination's file `from` (the entry `dst` names, which the source no
    /// longer has there) to this new path: the source's file here has its content (see
    /// [`super::moves`]). Mode and mtime are then set as for `SetFileMeta`.
    Move { from: Box<Path> },
}

impl Op {
    /// The word that names this action in logs and dry runs.
    pub fn verb(&self) -> &'static str {
        match self {
            Op::Mkdir => "mkdir",
            Op::Copy { replace: false } => "copy",
            Op::Copy { replace: true } => "replace",
            Op::Symlink { replace: false } => "symlink",
            Op::Symlink { replace: true } => "relink",
            Op::SetFileMeta { .. } => "meta",
            Op::Remove { .. } => "remove",
            Op::RemoveLeftover => "cleanup",
            Op::SetDirMeta => "dirmeta",
            Op::Rmdir => "rmdir",
            Op::Preserve { .. } => "keep-conflict",
            Op::Link { .. } => "hardlink",
            Op::Move { .. } => "move",
        }
    }
}

/// An action: what to do at which relative path ("" is the root itself). Its path and
/// entries are the scanned trees' own where it can, borrowed for as long as the plan
/// lives (`'t`): a first sync plans an action per file, and a copy of each entry and
/// path would be most of its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action<'t> {
    pub op: Op,
    /// A tree's own path, or one made for the action (a conflict copy's name).
    pub path: Cow<'t, Path>,
    /// The source entry to reproduce (for creations, copies and metadata).
    pub src: Option<&'t Entry>,
    /// The destination entry as scanned (what a replace or remove expects to find).
    pub dst: Option<&'t Entry>,
}

impl<'t> Action<'t> {
    /// An action at `path`.
    pub fn new(
        op: Op,
        path: impl Into<Cow<'t, Path>>,
        src: Option<&'t Entry>,
        dst: Option<&'t Entry>,
    ) -> Action<'t> {
        Action {
            op,
            path: path.into(),
            src,
            dst,
        }
    }
}

/// The ordered actions of a pass, and the entries it could not plan; its entries are
/// borrowed from the trees it was planned from (`'t`).
#[derive(Debug, Default)]
pub struct Plan<'t> {
    pub actions: Vec<Action<'t>>,
    pub errors: Vec<Error>,
}

impl<'t> Plan<'t> {
    /// Destination files this plan overwrites or deletes, with their scanned entries.
    pub fn displaced_files(&self) -> impl Iterator<Item = (&Path, &'t Entry)> {
        self.actions.iter().filter_map(|a| match (&a.op, a.dst) {
            (Op::Copy { replace: true }, Some(d))
            | (Op::Remove { .. }, Some(d))
            | (Op::Link { .. }, Some(d))
                if d.kind == Kind::File =>
            {
                Some((&*a.path, d))
            }
            _ => None,
        })
    }
}

impl<'t> Plan<'t> {
    /// Files of `dst` (the tree this plan was made against) that the plan overwrites or
    /// deletes: [`displaced_files`](Self::displaced_files), and every file under a
    /// directory it removes.
    /// A file that a move takes out of a removed directory is not lost.
    pub fn files_lost<'a>(&'a self, dst: &'a Tree) -> impl Iterator<Item = (&'a Path, &'a Entry)> {
        let moved: HashSet<&Path> = self.moved_from().collect();
        let under_removed = self
            .actions
            .iter()
            .filter(|a| matches!(a.op, Op::Remove { kind: Kind::Dir }))
            .flat_map(move |a| {
                dst.entries
                    .at_and_under(&a.path)
                    .filter(|(_, e)| e.kind == Kind::File)
            })
            .filter(move |(p, _)| !moved.contains(p));
        self.displaced_files().chain(under_removed)
    }

    /// The destination paths that moves take files from.
    pub fn moved_from(&self) -> impl Iterator<Item = &Path> {
        self.actions.iter().filter_map(|a| match &a.op {
            Op::Move { from } => Some(&**from),
            _ => None,
        })
    }
}

/// Plans the removal of `d` at `p`; a directory's subtree goes with it (`removed`).
fn remove<'t>(plan: &mut Plan<'t>, p: Cow<'t, Path>, d: &'t Entry, removed: &mut Option<PathBuf>) {
    if d.kind == Kind::Dir {
        *removed = Some(p.to_path_buf());
    }
    plan.actions.push(Action {
        op: Op::Remove { kind: d.kind },
        path: p,
        src: None,
        dst: Some(d),
    });
}

/// `p` as a case-insensitive filesystem compares names (lower case; close enough for
/// FAT, exFAT and SMB, which fold with their own tables).
pub fn fold_case(p: &Path) -> String {
    p.to_string_lossy().to_lowercase()
}

/// Plans the actions that make `dst` a mirror of `src`.
pub fn plan_mirror<'t>(src: &'t Tree, dst: &'t Tree, opts: &MirrorOptions) -> Plan<'t> {
    let mut plan = Plan::default();
    let mut skipped: BTreeSet<PathBuf> = BTreeSet::new();
    // On a destination that ignores case, its entry whose name differs from the
    // source's only in case is seen at the source's name (the destination's "README" is
    // the source's "readme" there): the destination as the planner sees it, when any is.
    let mut seen_as: Option<Vec<(Cow<'t, Path>, &'t Entry)>> = None;

    if opts.case_insensitive {
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        for p in src.entries.keys() {
            if under_any(&skipped, p) {
                continue;
            }
            let f = fold_case(p);
            if let Some(first) = seen.get(&f) {
                plan.errors.push(Error::entry(
                    p.to_path_buf(),
                    format!(
                        "name collides with {} on the case-insensitive destination; not copied",
                        crate::names::display(first)
                    ),
                ));
                skipped.insert(p.to_path_buf());
            } else {
                seen.insert(f, p.to_path_buf());
            }
        }
        let in_source = |p: &Path| src.entries.contains_key(p) && !under_any(&skipped, p);
        let renamed: HashMap<&Path, &PathBuf> = dst
            .entries
            .keys()
            .filter(|p| !in_source(p))
            .filter_map(|p| {
                let s = seen.get(&fold_case(p))?;
                (s != p && !dst.entries.contains_key(s)).then_some((p, s))
            })
            .collect();
        if !renamed.is_empty() {
            let mut view: Vec<(Cow<'t, Path>, &'t Entry)> = dst
                .entries
                .iter()
                .map(|(p, e)| match renamed.get(p) {
                    Some(s) => (Cow::Owned(s.to_path_buf()), e),
                    None => (Cow::Borrowed(p), e),
                })
                .collect();
            // Of two entries seen at one name, the later in the destination's order.
            crate::tree::sort_by_path_of(&mut view, |x| &x.0);
            view.reverse();
            view.dedup_by(|later, kept| later.0 == kept.0);
            view.reverse();
            seen_as = Some(view);
        }
    }
    let dst_rows: Box<dyn Iterator<Item = (Cow<'t, Path>, &'t Entry)> + '_> = match &seen_as {
        Some(view) => Box::new(view.iter().map(|(p, e)| (p.clone(), *e))),
        None => Box::new(dst.entries.iter().map(|(p, e)| (Cow::Borrowed(p), e))),
    };
    let dst_at = |p: &Path| -> Option<&'t Entry> {
        match &seen_as {
            Some(view) => view
                .binary_search_by(|(q, _)| crate::tree::path_order(q, p))
                .ok()
                .map(|i| view[i].1),
            None => dst.entries.get(p),
        }
    };

    // Directories of the destination that hold excluded entries are never removed whole.
    let mut pinned: BTreeSet<PathBuf> = BTreeSet::new();
    for ex in &dst.excluded {
        for a in ex.ancestors().skip(1) {
            if a.as_os_str().is_empty() {
                break;
            }
            pinned.insert(a.to_path_buf());
        }
    }

    // Directories whose mode and mtime are set after their contents: collected in a
    // list (neighbouring entries share a parent, which is listed once), sorted at the end.
    let mut dir_meta: Vec<PathBuf> = Vec::new();
    let touched = |p: &Path, dir_meta: &mut Vec<PathBuf>| {
        let parent = crate::tree::parent_of(p);
        if dir_meta.last().is_none_or(|l| l.as_path() != parent) {
            dir_meta.push(parent.to_path_buf());
        }
    };
    let mut removed_subtree: Option<PathBuf> = None;

    // Fifos, sockets and devices in the destination: the source never has them.
    for special in &dst.specials {
        if src.is_unknown(special) || under_any(&skipped, special) {
            continue;
        }
        plan.actions.push(Action {
            op: Op::Remove { kind: Kind::File },
            path: special.as_path().into(),
            src: None,
            dst: None,
        });
        touched(special, &mut dir_meta);
    }
    for leftover in &dst.leftovers {
        plan.actions.push(Action {
            op: Op::RemoveLeftover,
            path: leftover.as_path().into(),
            src: None,
            dst: None,
        });
        touched(leftover, &mut dir_meta);
    }

    let rows = crate::tree::zip_sorted_by(src.entries.iter(), dst_rows, |r| r.0, |r| &r.0);
    for (s, d) in rows {
        // The path as the tree holds it (a source path, else the destination's).
        let path: Cow<'t, Path> = match (&s, &d) {
            (Some((p, _)), _) => Cow::Borrowed(*p),
            (None, Some((p, _))) => p.clone(),
            (None, None) => unreachable!("BUG: a step has an item"),
        };
        let (s, mut d) = (s.map(|r| r.1), d.map(|r| r.1));
        let p: &Path = &path;
        if src.is_unknown(p) || under_any(&skipped, p) {
            continue;
        }
        if let Some(r) = &removed_subtree {
            if p.starts_with(r) {
                d = None;
            } else {
                removed_subtree = None;
            }
        }
        match (s, d) {
            (None, None) => {}
            (None, Some(d)) => {
                if d.kind == Kind::Dir && pinned.contains(p) {
                    continue;
                }
                remove(&mut plan, path.clone(), d, &mut removed_subtree);
                touched(p, &mut dir_meta);
            }
            (Some(s), None) => {
                create(&mut plan, path.clone(), s, false);
                if s.kind == Kind::Dir {
                    dir_meta.push(p.to_path_buf());
                }
                touched(p, &mut dir_meta);
            }
            (Some(s), Some(d)) if s.kind != d.kind => {
                if d.kind == Kind::Dir && pinned.contains(p) {
                    plan.errors.push(Error::entry(
                        p.to_path_buf(),
                        "cannot replace a directory that holds excluded entries",
                    ));
                    continue;
                }
                remove(&mut plan, path.clone(), d, &mut removed_subtree);
                create(&mut plan, path.clone(), s, false);
                if s.kind == Kind::Dir {
                    dir_meta.push(p.to_path_buf());
                }
                touched(p, &mut dir_meta);
            }
            (Some(s), Some(d)) => match s.kind {
                Kind::Dir => {
                    if meta_differs(s, d, opts) {
                        dir_meta.push(p.to_path_buf());
                    }
                }
                Kind::File => {
                    if content_differs(s, d, opts) {
                        plan.actions.push(Action {
                            op: Op::Copy { replace: true },
                            path: path.clone(),
                            src: Some(s),
                            dst: Some(d),
                        });
                        touched(p, &mut dir_meta);
                    } else if meta_differs(s, d, opts) {
                        plan.actions.push(Action {
                            op: Op::SetFileMeta { also: Box::new([]) },
                            path: path.clone(),
                            src: Some(s),
                            dst: Some(d),
                        });
                        touched(p, &mut dir_meta);
                    }
                }
                Kind::Symlink => {
                    if s.target != d.target
                        || !s.mtime.same_as(d.mtime, opts.modify_window)
                        || (opts.keep_owners && s.owner.differs(d.owner))
                    {
                        plan.actions.push(Action {
                            op: Op::Symlink { replace: true },
                            path: path.clone(),
                            src: Some(s),
                            dst: Some(d),
                        });
                        touched(p, &mut dir_meta);
                    }
                }
            },
        }
    }

    plan_hard_links(&mut plan, src, dst, &dst_at, &skipped);
    if let (Some(sr), Some(dr)) = (&src.root, &dst.root) {
        if meta_differs(sr, dr, opts) {
            dir_meta.push(PathBuf::new());
        }
    }
    // Directory metadata last, deepest first, and only for directories the source has.
    crate::tree::sort_paths(&mut dir_meta);
    dir_meta.dedup();
    for p in dir_meta.into_iter().rev() {
        let s = if p.as_os_str().is_empty() {
            src.root.as_ref()
        } else {
            src.entries.get(&p)
        };
        if let Some(s) = s.filter(|s| s.kind == Kind::Dir) {
            // A directory whose contents could not all be read (one readable but not
            // searchable, say) keeps the owner access it was made with: given the
            // source's mode, the copy would be as unusable to the tool as the original.
            if src.is_unknown(&p) || (s.mode & 0o700 != 0o700 && src.holds_unknown(&p)) {
                continue;
            }
            plan.actions.push(Action {
                op: Op::SetDirMeta,
                path: p.into(),
                src: Some(s),
                dst: None,
            });
        }
    }
    // A first mirror plans an action per entry: no slack kept.
    plan.actions.shrink_to_fit();
    plan
}

fn create<'t>(plan: &mut Plan<'t>, p: Cow<'t, Path>, s: &'t Entry, replace: bool) {
    let op = match s.kind {
        Kind::Dir => Op::Mkdir,
        Kind::File => Op::Copy { replace },
        Kind::Symlink => Op::Symlink { replace },
    };
    plan.actions.push(Action {
        op,
        path: p,
        src: Some(s),
        dst: None,
    });
}

/// True if two files' contents differ, as far as the options let us tell.
/// Files that are one file in the source (hard links: one inode, several names) are one
/// file in the destination: the first name in path order is copied as any file, and
/// every other name becomes a link to it, unless it is one already. Their copies and
/// metadata changes planned above give way to the link.
fn plan_hard_links<'t>(
    plan: &mut Plan<'t>,
    src: &'t Tree,
    dst: &'t Tree,
    dst_entries: &impl Fn(&Path) -> Option<&'t Entry>,
    skipped: &BTreeSet<PathBuf>,
) {
    let src_entries = &src.entries;
    let mut groups: std::collections::HashMap<u64, Vec<&Path>> = Default::default();
    for (p, e) in src_entries.iter() {
        if e.linked && e.kind == Kind::File && !src.is_unknown(p) && !under_any(skipped, p) {
            groups.entry(e.ino).or_default().push(p);
        }
    }
    if groups.values().all(|g| g.len() < 2) {
        return;
    }
    // A group whose names are exactly one file in the destination already takes a change
    // of mode or mtime once, in place, for all of them (`whole`). Any other (a name
    // missing or another file there, its first name's content copied, or the file with
    // names beyond the group's: which go, or are files of their own in the source) is
    // not changed in place: its first name is copied afresh, and the others linked to it.
    let leaders: std::collections::HashSet<&Path> = groups
        .values()
        .filter(|g| g.len() > 1)
        .map(|g| g[0])
        .collect();
    let copied_content: std::collections::HashSet<PathBuf> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.op, Op::Copy { .. }) && leaders.contains(&*a.path))
        .map(|a| a.path.to_path_buf())
        .collect();
    let mut whole: Vec<&[&Path]> = Vec::new();
    let mut dst_names: std::collections::HashMap<u64, usize> = Default::default();
    for (_, e) in dst.entries.iter() {
        if e.linked && e.kind == Kind::File {
            *dst_names.entry(e.ino).or_default() += 1;
        }
    }
    for names in groups.values().filter(|g| g.len() > 1) {
        let file = |p: &Path| {
            dst_entries(p)
                .filter(|d| d.kind == Kind::File)
                .map(|d| d.ino)
        };
        let leader = file(names[0]).filter(|_| !copied_content.contains(names[0]));
        let one_file = leader.is_some_and(|ino| {
            names[1..].iter().all(|p| file(p) == Some(ino))
                && dst_names.get(&ino).copied().unwrap_or(1) == names.len()
        });
        if one_file {
            whole.push(names);
        } else {
            for a in plan.actions.iter_mut() {
                if matches!(a.op, Op::SetFileMeta { .. }) && *a.path == *names[0] {
                    a.op = Op::Copy { replace: true };
                }
            }
        }
    }
    let copied: std::collections::HashSet<&Path> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.op, Op::Copy { .. }))
        .map(|a| &*a.path)
        .collect();
    let mut links = Vec::new();
    for names in groups.values().filter(|g| g.len() > 1) {
        let leader = names[0];
        let leader_ino = dst_entries(leader)
            .filter(|d| d.kind == Kind::File && !copied.contains(leader))
            .map(|d| d.ino);
        for &follower in &names[1..] {
            let d = dst_entries(follower);
            let linked_already = leader_ino.is_some()
                && d.is_some_and(|d| d.kind == Kind::File && Some(d.ino) == leader_ino);
            if linked_already {
                continue;
            }
            let s = src_entries
                .get(follower)
                .expect("BUG: grouped from the source");
            links.push(Action {
                op: Op::Link {
                    from: leader.into(),
                },
                path: follower.into(),
                src: Some(s),
                dst: d.filter(|d| d.kind == Kind::File),
            });
        }
    }
    if !whole.is_empty() {
        one_change_a_group(plan, &whole);
    }
    if links.is_empty() {
        return;
    }
    let linked: std::collections::HashSet<PathBuf> =
        links.iter().map(|a| a.path.to_path_buf()).collect();
    plan.actions.retain(|a| {
        !(matches!(a.op, Op::Copy { .. } | Op::SetFileMeta { .. }) && linked.contains(&*a.path))
    });
    links.sort_by(|a, b| crate::tree::path_order(&a.path, &b.path));
    plan.actions.extend(links);
}

/// The metadata changes of each group in `groups` (its names one file in the
/// destination): the first name's action makes it for the others too (`also`), whose own
/// go.
fn one_change_a_group(plan: &mut Plan<'_>, groups: &[&[&Path]]) {
    let group_of: std::collections::HashMap<&Path, usize> = groups
        .iter()
        .enumerate()
        .flat_map(|(i, g)| g.iter().map(move |p| (*p, i)))
        .collect();
    let mut first: Vec<Option<usize>> = vec![None; groups.len()];
    let mut also: Vec<Vec<Box<Path>>> = vec![Vec::new(); groups.len()];
    let mut drop = vec![false; plan.actions.len()];
    for (i, a) in plan.actions.iter().enumerate() {
        if !matches!(a.op, Op::SetFileMeta { .. }) {
            continue;
        }
        let Some(&g) = group_of.get(&*a.path) else {
            continue;
        };
        match first[g] {
            None => first[g] = Some(i),
            Some(_) => {
                also[g].push(a.path.as_ref().into());
                drop[i] = true;
            }
        }
    }
    for (g, at) in first.iter().enumerate() {
        if let Some(at) = *at {
            plan.actions[at].op = Op::SetFileMeta {
                also: std::mem::take(&mut also[g]).into_boxed_slice(),
            };
        }
    }
    let mut i = 0;
    plan.actions.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
}

pub fn content_differs(s: &Entry, d: &Entry, opts: &MirrorOptions) -> bool {
    if s.size != d.size {
        return true;
    }
    if let (Some(a), Some(b)) = (s.hash, d.hash) {
        return a != b;
    }
    if opts.checksum {
        return true;
    }
    !s.mtime.same_as(d.mtime, opts.modify_window)
}

fn meta_differs(s: &Entry, d: &Entry, opts: &MirrorOptions) -> bool {
    let mask = if opts.keep_owners { 0o7777 } else { 0o1777 };
    // A destination entry marked touched has other extended attributes (see
    // `Entry::touched`).
    d.touched
        || (!opts.ignore_modes && s.mode & mask != d.mode & mask)
        || !s.mtime.same_as(d.mtime, opts.modify_window)
        || (opts.keep_owners && s.owner.differs(d.owner))
}

#[cfg(test)]
#[path = "mirror_tests.rs"]
mod tests;
