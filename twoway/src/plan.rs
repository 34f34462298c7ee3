//! The reconciliation planner: a pure function from the state of the last successful sync
//! and the two scanned replicas to the actions on each side, the conflicts, and the state
//! to record if every action succeeds.
//!
//! Per path: changed on one side only → propagated (deletions too); changed on both to the
//! same thing → nothing; changed on both differently → conflict, and the loser is kept as
//! a conflict copy on both sides. A modification beats a deletion, and a directory that
//! still holds something is never deleted. Paths unknown on either side are left alone.
//! Nothing here touches a disk.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use chrono::TimeZone;

use engine::plan::mirror::{Action, Op, Plan};
use engine::run::config::ConflictPolicy;
use engine::scan::rescan::Region;
use engine::tree::{path_order, same_path, zip_paths, Entry, Kind, Tree};

use crate::packed::{self, Packed};

/// One of the two replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }
}

/// How the planner compares and settles.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncOptions {
    pub policy: ConflictPolicy,
    /// Mtimes within this many seconds are equal (0: equal at the coarser precision).
    pub modify_window: u64,
    /// Owners are kept (the process runs as root): a different owner is a change.
    /// Otherwise setuid and setgid are not compared either: a copy whose owner could not
    /// be kept never has them, and that must not come back as a change of the original.
    pub keep_owners: bool,
}

/// A path changed on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub path: PathBuf,
    /// Whose version stays at `path`.
    pub winner: Side,
    /// Where the loser is kept (on both sides).
    pub copy: PathBuf,
}

/// What a pass does (its actions' entries borrowed from the trees it was planned from).
#[derive(Debug, Default)]
pub struct SyncPlan<'t> {
    /// Conflict copies made on the loser's own side first (before anything is replaced).
    pub keep_a: Plan<'t>,
    pub keep_b: Plan<'t>,
    /// Actions on A (bytes read from B) and on B (bytes read from A).
    pub to_a: Plan<'t>,
    pub to_b: Plan<'t>,
    pub conflicts: Vec<Conflict>,
    /// The state to record if every action succeeds, as its change to the base.
    pub state: packed::StateChange,
    /// Nothing changed since the last sync: no actions, and the state to record is the
    /// base itself (`state` is left empty rather than worked out).
    pub state_unchanged: bool,
    /// Files each side would lose (removed or replaced by a directory).
    pub deletes_a: usize,
    pub deletes_b: usize,
    /// Files deleted on one side (the side named) since the last sync and changed on the
    /// other: the change wins, so the deletion is undone.
    pub undone_deletions: Vec<(PathBuf, Side)>,
}

impl SyncPlan<'_> {
    pub fn is_noop(&self) -> bool {
        self.keep_a.actions.is_empty()
            && self.keep_b.actions.is_empty()
            && self.to_a.actions.is_empty()
            && self.to_b.actions.is_empty()
    }
}

/// Same content: kind, and bytes or link target.
fn same_content(x: &Entry, y: &Entry) -> bool {
    x.kind == y.kind
        && match x.kind {
            Kind::File => x.size == y.size && x.hash.is_some() && x.hash == y.hash,
            Kind::Symlink => x.target == y.target,
            Kind::Dir => true,
        }
}

/// Same as far as syncing goes: content, mode, and mtime. Directory mtimes follow from
/// their contents and are not compared (they are set after the contents, to the winner's).
fn same(x: Option<&Entry>, y: Option<&Entry>, window: u64, owners: bool) -> bool {
    let mask = if owners { 0o7777 } else { 0o1777 };
    match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            same_content(x, y)
                && !(owners && x.owner.differs(y.owner))
                && match x.kind {
                    Kind::File => {
                        x.mode & mask == y.mode & mask && x.mtime.same_as(y.mtime, window)
                    }
                    Kind::Dir => x.mode & mask == y.mode & mask,
                    Kind::Symlink => x.mtime.same_as(y.mtime, window),
                }
        }
        _ => false,
    }
}

fn winner(policy: ConflictPolicy, a: &Entry, b: &Entry) -> Side {
    match policy {
        ConflictPolicy::PreferA => Side::A,
        ConflictPolicy::PreferB => Side::B,
        ConflictPolicy::Newer => {
            if b.mtime > a.mtime {
                Side::B
            } else {
                Side::A
            }
        }
    }
}

/// `<stem>.conflict-<YYYYMMDD-HHMMSS><.ext>` beside `path`, in local time of `mtime_secs`,
/// with `-2`, `-3`… added until the name is free.
pub fn conflict_name(path: &Path, mtime_secs: i64, taken: &dyn Fn(&Path) -> bool) -> PathBuf {
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or(b"file");
    let split = name
        .iter()
        .rposition(|&c| c == b'.')
        .filter(|&i| i > 0 && i + 1 < name.len());
    let (stem, ext) = match split {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, &b""[..]),
    };
    let ts = chrono::Local
        .timestamp_opt(mtime_secs, 0)
        .single()
        .map(|t| t.format("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_else(|| "00000000-000000".to_string());
    let parent = path.parent().unwrap_or(Path::new(""));
    for n in 1u32.. {
        let mut bytes = stem.to_vec();
        bytes.extend_from_slice(b".conflict-");
        bytes.extend_from_slice(ts.as_bytes());
        if n > 1 {
            bytes.extend_from_slice(format!("-{n}").as_bytes());
        }
        bytes.extend_from_slice(ext);
        let candidate = parent.join(OsString::from_vec(bytes));
        if !taken(&candidate) {
            return candidate;
        }
    }
    unreachable!("BUG: some conflict name is free")
}

/// The final state of a path: which side's entry ends up on both.
#[derive(Debug, Clone)]
struct Final<'a> {
    from: Side,
    /// The entry as scanned on `from`'s side (borrowed: a plan over 50,000 paths would
    /// otherwise hold a copy of each).
    entry: &'a Entry,
    /// For a conflict copy: the path of the original on `from`'s side (behind one thin
    /// pointer: a `Final` is made for every path, and a copy is rare).
    copy_of: Option<Box<PathBuf>>,
}

impl SyncPlan<'_> {
    /// The plan of a pass that finds both replicas as the state records them: nothing
    /// to do, and the state stays.
    pub fn unchanged() -> Self {
        SyncPlan {
            state_unchanged: true,
            ..SyncPlan::default()
        }
    }
}

/// Plans one two-way pass against `base`, the state of the last sync (handed over, it is
/// dropped as soon as every path is decided).
pub fn plan_sync<'s, 't>(
    base: impl Into<Cow<'s, Packed>>,
    a: &'t Tree,
    b: &'t Tree,
    opts: &SyncOptions,
) -> SyncPlan<'t> {
    let base = base.into();
    if unchanged_since(&base, a, b, opts.keep_owners) {
        return SyncPlan::unchanged();
    }
    plan_sync_full(base, a, b, opts, &|_| false)
}

/// [`plan_sync`] of the part of both replicas where something changed, with the
/// state's records of it (see `state::Stored::narrow_in_windows`): `outside` says
/// whether a path outside the part is taken on either side (a conflict's copy takes a
/// name no path has).
pub fn plan_sync_part<'s, 't>(
    base: impl Into<Cow<'s, Packed>>,
    a: &'t Tree,
    b: &'t Tree,
    opts: &SyncOptions,
    outside: &dyn Fn(&Path) -> bool,
) -> SyncPlan<'t> {
    plan_sync_full(base.into(), a, b, opts, outside)
}

/// Whether every folder the state records in `region` is still a folder in both
/// `parts` (the part of each replica read again under `--watch`). Then a plan of the
/// parts, with the state's part, is the plan of the whole; otherwise the records under
/// a folder that went are outside the part, and only a plan of the whole drops them.
pub fn folders_stay(parts: &[Tree; 2], base: &Packed, region: &Region) -> bool {
    let is_dir = |t: &Tree, p: &Path| t.entries.get(p).is_some_and(|e| e.kind == Kind::Dir);
    base.part(region)
        .records()
        .all(|(r, _)| r.kind != Kind::Dir || parts.iter().all(|t| is_dir(t, r.path)))
}

/// The paths both replicas already hold alike, with A's entry (what a sync state records
/// of it): what a first sync need not touch, and may call synced before it starts.
pub fn already_equal<'t>(
    a: &'t Tree,
    b: &'t Tree,
    opts: &'t SyncOptions,
) -> impl Iterator<Item = (&'t Path, &'t Entry)> + 't {
    zip_paths(&a.entries, &b.entries).filter_map(move |(p, x, y)| {
        if a.is_unknown(p) || b.is_unknown(p) {
            return None;
        }
        let x = x?;
        y?;
        same(Some(x), y, opts.modify_window, opts.keep_owners).then_some((p, x))
    })
}

/// True if both replicas hold exactly what the base records, path for path, and nothing
/// is unknown or left over: the full planner would then plan nothing and record the base
/// again (the tests check that it does). One walk over the three trees, where the full
/// planner builds the final state of every path.
pub(crate) fn unchanged_since(base: &Packed, a: &Tree, b: &Tree, owners: bool) -> bool {
    let mut rows = base.iter();
    unchanged_as_read(base.len(), a, b, owners, &mut |check| {
        rows.next().map(|(q, s)| check(q, &s))
    })
}

/// One record of a state read in order, handed to the check it is given (whose answer
/// it gives back); `None` when no record is left or the next does not read.
pub(crate) type NextRecord<'r> =
    dyn FnMut(&mut dyn FnMut(&Path, &Entry) -> bool) -> Option<bool> + 'r;

/// [`unchanged_since`] of a state of `count` records that `next` reads one at a time, in
/// path order (from its file: the state need not be held).
pub(crate) fn unchanged_as_read(
    count: usize,
    a: &Tree,
    b: &Tree,
    owners: bool,
    next: &mut NextRecord<'_>,
) -> bool {
    let quiet = |t: &Tree| {
        quiet_apart(
            t.unknown.is_empty() && t.leftovers.is_empty(),
            &t.excluded,
            |q| t.entries.get(q).is_some_and(|e| e.kind == Kind::Dir),
        )
    };
    count == a.entries.len()
        && count == b.entries.len()
        && quiet(a)
        && quiet(b)
        && rows_unchanged(a, b, owners, next)
}

/// What a replica holds besides its entries is as a state records it: nothing unknown
/// or left over (`clean`), and each path excluded lies in a folder the replica holds
/// (`is_dir`), or at its top.
pub(crate) fn quiet_apart(
    clean: bool,
    excluded: &std::collections::BTreeSet<PathBuf>,
    is_dir: impl Fn(&Path) -> bool,
) -> bool {
    clean
        && excluded.iter().all(|p| {
            let q = engine::tree::parent_of(p);
            q.as_os_str().is_empty() || is_dir(q)
        })
}

/// Whether the entries of `a` and `b` (the same part of both replicas: the whole, or
/// a window of paths) are, path for path, the records `next` reads in order, as
/// [`unchanged_since`] compares them.
pub(crate) fn rows_unchanged(a: &Tree, b: &Tree, owners: bool, next: &mut NextRecord<'_>) -> bool {
    // Three lists of one length: the same paths if each step meets the same path in all.
    zip_paths(&a.entries, &b.entries).all(|(p, x, y)| match (x, y) {
        (Some(x), Some(y)) => {
            next(&mut |q, s| same_path(q, p) && row_unchanged(s, x, y, owners)) == Some(true)
        }
        _ => false,
    })
}

/// Whether A's entry `x` and B's `y` at a path are what the state records there (`s`),
/// as [`unchanged_since`] compares them: the record alike in everything a scan reads
/// (folders' mtimes too), and both sides the same.
fn row_unchanged(s: &Entry, x: &Entry, y: &Entry, owners: bool) -> bool {
    let recorded = s.kind == x.kind
        && s.size == x.size
        && s.mode == x.mode
        && s.mtime == x.mtime
        && s.target == x.target
        && s.hash == x.hash
        && (!owners || s.owner == x.owner);
    recorded && same(Some(x), Some(y), 0, owners) && (x.kind != Kind::Dir || x.mtime == y.mtime)
}

/// What the planner does at a path where A holds `x`, B `y` and the state records
/// `s`, as a pass that plans only where there is something to do needs to know.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AtPath {
    /// Nothing: all three are alike, as [`unchanged_since`] compares them.
    Nothing,
    /// Something, decided from this path, the folders above it and what it holds: the
    /// path is planned with the others where something changed.
    Acts,
    /// Something that depends on paths anywhere: a hard-linked file (its names pair
    /// paths anywhere). The pass is planned whole. (A conflict's copy takes a name no
    /// path has, outside the part too: [`plan_sync_part`] is told of those.)
    Whole,
}

/// [`AtPath`] of a path where A holds `x`, B `y` and the state records `s`.
pub(crate) fn acts_at(
    s: Option<&Entry>,
    x: Option<&Entry>,
    y: Option<&Entry>,
    opts: &SyncOptions,
) -> AtPath {
    if let (Some(s), Some(x), Some(y)) = (s, x, y) {
        if row_unchanged(s, x, y, opts.keep_owners) {
            return AtPath::Nothing;
        }
    }
    if [x, y].into_iter().flatten().any(|e| e.linked) {
        return AtPath::Whole;
    }
    AtPath::Acts
}

/// [`plan_sync`] without the shortcut for an unchanged pair. A state handed over (not
/// borrowed) is dropped once every path is decided, before the new state is built: the
/// two are not held at once.
pub(crate) fn plan_sync_full<'a>(
    base: Cow<'_, Packed>,
    a: &'a Tree,
    b: &'a Tree,
    opts: &SyncOptions,
    outside: &dyn Fn(&Path) -> bool,
) -> SyncPlan<'a> {
    let base_ref: &Packed = &base;
    let w = opts.modify_window;
    let side_tree = |s: Side| if s == Side::A { a } else { b };
    let unknown = |p: &Path| a.is_unknown(p) || b.is_unknown(p);

    // Names a conflict copy may not take: every path either side or the base has
    // (outside the part planned too), and the copies named so far.
    let mut new_names: HashSet<PathBuf> = HashSet::new();
    let exists = |c: &Path| {
        base_ref.contains_key(c)
            || a.entries.contains_key(c)
            || b.entries.contains_key(c)
            || outside(c)
    };
    let mut decided: Vec<(&Path, Option<Final>)> = Vec::with_capacity({
        // Every path of the larger side, and room for what only the other has: a
        // list that outgrew its capacity would be twice the size it needs.
        let most = a.entries.len().max(b.entries.len());
        most + most / 8
    });
    let mut copies: BTreeMap<PathBuf, Option<Final>> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut undone_deletions = Vec::new();

    fn keep(side: Side, e: &Entry) -> Option<Final<'_>> {
        Some(Final {
            from: side,
            entry: e,
            copy_of: None,
        })
    }
    let mut add_copy = |p: &Path,
                        loser: Side,
                        e: &'a Entry,
                        winner_side: Side,
                        taken: &mut HashSet<PathBuf>,
                        finals: &mut BTreeMap<PathBuf, Option<Final<'a>>>| {
        let copy = conflict_name(p, e.mtime.sec, &|c| taken.contains(c) || exists(c));
        taken.insert(copy.clone());
        finals.insert(
            copy.clone(),
            Some(Final {
                from: loser,
                entry: e,
                copy_of: Some(Box::new(p.to_path_buf())),
            }),
        );
        conflicts.push(Conflict {
            path: p.to_path_buf(),
            winner: winner_side,
            copy,
        });
    };

    // The walk goes over the paths either side has, and takes the state's entry for
    // each: a path only the state has is gone from both sides, and nothing is decided
    // for it (so no decision borrows from the state). What the decisions change in the
    // state is noted on the way.
    let mut put = packed::Writer::default();
    let mut gone: Vec<PathBuf> = Vec::new();
    let mut base_rows = base_ref.iter().peekable();
    for (p, x, y) in zip_paths(&a.entries, &b.entries) {
        while let Some((q, _)) = base_rows.next_if(|(q, _)| path_order(q, p).is_lt()) {
            gone.push(q.to_path_buf());
        }
        let s = base_rows.next_if(|(q, _)| same_path(q, p)).map(|(_, e)| e);
        let s = s.as_ref();
        if unknown(p) {
            // Left alone, and forgotten by the state.
            gone.extend(s.map(|_| p.to_path_buf()));
            continue;
        }
        let owners = opts.keep_owners;
        let f = if same(x, y, w, owners) {
            x.and_then(|e| keep(Side::A, e))
        } else {
            let (ca, cb) = (!same(s, x, w, owners), !same(s, y, w, owners));
            match (ca, cb, x, y) {
                (true, false, _, _) => x.and_then(|e| keep(Side::A, e)),
                (false, true, _, _) => y.and_then(|e| keep(Side::B, e)),
                // Changed on both sides (or no common base): a modification beats a
                // deletion.
                (_, _, None, Some(e)) => {
                    if s.is_some() && e.kind != Kind::Dir {
                        undone_deletions.push((p.to_path_buf(), Side::A));
                    }
                    keep(Side::B, e)
                }
                (_, _, Some(e), None) => {
                    if s.is_some() && e.kind != Kind::Dir {
                        undone_deletions.push((p.to_path_buf(), Side::B));
                    }
                    keep(Side::A, e)
                }
                (_, _, Some(ex), Some(ey)) => {
                    if ex.kind == Kind::Dir && ey.kind != Kind::Dir {
                        add_copy(p, Side::B, ey, Side::A, &mut new_names, &mut copies);
                        keep(Side::A, ex)
                    } else if ey.kind == Kind::Dir && ex.kind != Kind::Dir {
                        add_copy(p, Side::A, ex, Side::B, &mut new_names, &mut copies);
                        keep(Side::B, ey)
                    } else {
                        let win = winner(opts.policy, ex, ey);
                        let (we, le) = if win == Side::A { (ex, ey) } else { (ey, ex) };
                        if !same_content(ex, ey) {
                            add_copy(p, win.other(), le, win, &mut new_names, &mut copies);
                        }
                        keep(win, we)
                    }
                }
                (_, _, None, None) => None,
            }
        };
        note_change(&mut put, &mut gone, p, s, f.as_ref().map(|f| f.entry));
        decided.push((p, f));
    }
    gone.extend(base_rows.map(|(q, _)| q.to_path_buf()));
    // Conflict copies have names no path had.
    let mut finals = Finals {
        decided,
        added: copies,
    };

    // A directory that still holds something must exist on both sides, whatever was
    // decided for it; a file or link in its way is kept as a conflict copy.
    let mut needs_dir: BTreeSet<PathBuf> = BTreeSet::new();
    {
        let held = a
            .unknown
            .iter()
            .chain(&b.unknown)
            .chain(&a.excluded)
            .chain(&b.excluded)
            .map(|p| (p.as_path(), true));
        // Neighbouring paths share a parent: its answer is kept for the next path.
        let mut last: Option<(&Path, bool)> = None;
        for (p, f) in finals.iter().map(|(p, f)| (p, f.is_some())).chain(held) {
            let q = engine::tree::parent_of(p);
            if !f || q.as_os_str().is_empty() {
                continue;
            }
            let parent_is_dir = match last {
                Some((l, answer)) if l == q => answer,
                _ => {
                    let answer =
                        matches!(finals.get(q), Some(Some(f)) if f.entry.kind == Kind::Dir);
                    last = Some((q, answer));
                    answer
                }
            };
            // Parents come before children: a path whose parent stays a directory has
            // all its ancestors settled already.
            if !parent_is_dir {
                for anc in p.ancestors().skip(1) {
                    if anc.as_os_str().is_empty() {
                        break;
                    }
                    needs_dir.insert(anc.to_path_buf());
                }
            }
        }
    }
    for d in needs_dir {
        let is_dir = matches!(finals.get(&d), Some(Some(f)) if f.entry.kind == Kind::Dir);
        if is_dir {
            continue;
        }
        let dir_side = [Side::A, Side::B].into_iter().find(|s| {
            side_tree(*s)
                .entries
                .get(&d)
                .is_some_and(|e| e.kind == Kind::Dir)
        });
        let Some(ds) = dir_side else { continue };
        let dir_entry = &side_tree(ds).entries[&d];
        for s in [Side::A, Side::B] {
            if let Some(e) = side_tree(s).entries.get(&d).filter(|e| e.kind != Kind::Dir) {
                add_copy(&d, s, e, ds, &mut new_names, &mut finals.added);
            }
        }
        finals.added.insert(d.clone(), keep(ds, dir_entry));
    }

    // The paths decided again take their change to the state over.
    let state = with_added(put.finish(), gone, &finals.added, base_ref);
    drop(base);
    // Each side's actions read the decisions only: made at once.
    let finals = &finals;
    let owners = opts.keep_owners;
    let (on_a, on_b) = engine::parallel::join(
        || actions_for(Side::A, finals, a, owners),
        || actions_for(Side::B, finals, b, owners),
    );
    let actions = [on_a, on_b];
    let [(keep_a, to_a, deletes_a), (keep_b, to_b, deletes_b)] = actions;
    SyncPlan {
        conflicts,
        keep_a,
        to_a,
        deletes_a,
        keep_b,
        to_b,
        deletes_b,
        state,
        state_unchanged: false,
        undone_deletions,
    }
}

/// Notes the change to the state at `p`: the record of `new` (the entry decided there,
/// if any) where it differs from `old`'s (the state's), or the path gone.
fn note_change(
    put: &mut packed::Writer,
    gone: &mut Vec<PathBuf>,
    p: &Path,
    old: Option<&Entry>,
    new: Option<&Entry>,
) {
    match new {
        Some(new) => {
            let new = packed::record(p, new);
            if old.map(|old| packed::record(p, old)) != Some(new) {
                put.push(&new);
            }
        }
        None if old.is_some() => gone.push(p.to_path_buf()),
        None => {}
    }
}

/// The change to `base` that `put` and `gone` note, with the paths decided again after
/// the walk (`added`: conflict copies, directories that must stay) noted instead of
/// what the walk noted for them.
fn with_added(
    put: Packed,
    gone: Vec<PathBuf>,
    added: &BTreeMap<PathBuf, Option<Final<'_>>>,
    base: &Packed,
) -> packed::StateChange {
    if added.is_empty() {
        return counted(put, gone, base);
    }
    let mut new_put = packed::Writer::default();
    let mut new_gone: Vec<PathBuf> = gone
        .into_iter()
        .filter(|g| !added.contains_key(g))
        .collect();
    let rows = engine::tree::zip_sorted_by(put.records(), added.iter(), |r| r.0.path, |a| a.0);
    for (noted, again) in rows {
        match (noted, again) {
            (Some((_, raw)), None) => new_put.push_bytes(raw),
            (_, Some((p, f))) => {
                let old = base.get(p);
                let new = f.as_ref().map(|f| f.entry);
                note_change(&mut new_put, &mut new_gone, p, old.as_ref(), new);
            }
            (None, None) => {}
        }
    }
    engine::tree::sort_paths(&mut new_gone);
    counted(new_put.finish(), new_gone, base)
}

/// A change that puts at most this many records has its new paths counted.
const COUNTED_MAX: usize = 4096;

/// The change `put` and `gone` make to `base`, with the paths it adds counted when it
/// puts few records (a lookup each).
fn counted(put: Packed, gone: Vec<PathBuf>, base: &Packed) -> packed::StateChange {
    // (Not for a first sync: its progress may be in the file already.)
    let new_paths = (!base.is_empty() && put.len() <= COUNTED_MAX)
        .then(|| put.keys().filter(|p| !base.contains_key(p)).count());
    packed::StateChange {
        put,
        gone,
        new_paths,
    }
}

/// The final state decided for every path: the sorted list the walk over the three
/// trees made, and the few paths added or decided again afterwards (conflict copies,
/// directories that must stay), which take precedence.
struct Finals<'a> {
    /// Paths borrowed from the trees: a plan over 50,000 paths copies none of them.
    decided: Vec<(&'a Path, Option<Final<'a>>)>,
    added: BTreeMap<PathBuf, Option<Final<'a>>>,
}

impl<'a> Finals<'a> {
    fn get(&self, p: &Path) -> Option<&Option<Final<'a>>> {
        if let Some(f) = self.added.get(p) {
            return Some(f);
        }
        let i = self
            .decided
            .binary_search_by(|(q, _)| engine::tree::path_order(q, p))
            .ok()?;
        Some(&self.decided[i].1)
    }

    /// Every path once, in path order.
    fn iter(&self) -> impl Iterator<Item = (&Path, &Option<Final<'a>>)> {
        self.rows().map(|(d, a)| match (d, a) {
            (Some((p, _)), Some((_, f))) | (Some((p, f)), None) => (p, f),
            (None, Some((p, f))) => (p.as_path(), f),
            (None, None) => unreachable!("BUG: a path comes from one list or both"),
        })
    }

    /// [`iter`](Self::iter), each path as a plan takes it: a tree's own (borrowed for
    /// `'a`), or one decided here (copied).
    fn paths(&self) -> impl Iterator<Item = (Cow<'a, Path>, &Option<Final<'a>>)> {
        self.rows().map(|(d, a)| match (d, a) {
            (Some((p, _)), Some((_, f))) | (Some((p, f)), None) => (Cow::Borrowed(p), f),
            (None, Some((p, f))) => (Cow::Owned(p.clone()), f),
            (None, None) => unreachable!("BUG: a path comes from one list or both"),
        })
    }

    /// The decided paths and the added ones side by side, in path order (an added path
    /// takes precedence).
    #[allow(clippy::type_complexity)]
    fn rows(
        &self,
    ) -> impl Iterator<
        Item = (
            Option<(&'a Path, &Option<Final<'a>>)>,
            Option<(&PathBuf, &Option<Final<'a>>)>,
        ),
    > {
        let decided = self.decided.iter().map(|(p, f)| (*p, f));
        engine::tree::zip_sorted_by(decided, self.added.iter(), |d| d.0, |a| a.0.as_path())
    }
}

#[path = "plan_actions.rs"]
mod actions;
use actions::actions_for;

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
