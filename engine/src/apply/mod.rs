//! Carrying out a mirror [`Plan`]: the only code that changes a destination, and only
//! through the safe primitives of [`fs`].
//!
//! Each action is checked against the destination as it is right now (a file changed
//! since the scan is not overwritten), every file is written to a temporary name, flushed
//! and renamed, and a source file that changes while it is copied is left for the next
//! pass. A failure on one entry is recorded and the rest goes on.

mod action;
mod copy;

use action::*;
use copy::*;
pub use copy::{run_goes_on, run_length};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use crate::error::Error;
use crate::fs::Root;
use crate::names::display;
use crate::plan::mirror::{Action, Op, Plan};
use crate::tree::{under_any, Entry, Kind};

/// Where the bytes come from and how far to trust the plan's metadata.
pub struct ApplyOptions<'a> {
    /// The source root (files are read from `src_root/<path>`).
    pub src_root: &'a Path,
    /// Written in log lines: e.g. "SOURCE -> BACKUP".
    pub direction: &'a str,
    /// Use the plan's mode and mtime for files (restore from a manifest) instead of the
    /// source file's own.
    pub meta_from_plan: bool,
    /// The bytes read must hash to the plan's hash (restore: detects a damaged store).
    pub verify_hash: bool,
    /// Directories, and files whose metadata is mended in place, take their extended
    /// attributes (ACLs) from the source's (a mirror: the source is the truth; not
    /// twoway, where the other side is no source, nor a restore, whose versions keep
    /// none for directories). Copied files always take their source's.
    pub attrs_from_source: bool,
    /// Checked between files and between chunks of a file.
    pub stop: &'a (dyn Fn() -> bool + Sync),
    /// Told of each action once it is done (and on disk, for a copy of a batch), by its
    /// place in the plan, with the content hash of what a copy wrote: a first two-way
    /// sync records its progress.
    pub done: Option<&'a DoneFn<'a>>,
    /// Where a file's bytes come from when not from `src_root/<path>` (a restore: the
    /// store's content, or a live file holding the same): opens the file for the path
    /// and its planned entry, with its stat and the path to name in messages.
    pub open_source: Option<&'a OpenSource<'a>>,
    /// Told when the copy of a file (path, size) begins (a progress line names a large
    /// one while it is copied).
    pub starting: Option<&'a StartFn<'a>>,
    /// Set at the first action that fails (`--on-error fail`: the pass's `stop` then
    /// stops the rest).
    pub halt_on_error: Option<&'a std::sync::atomic::AtomicBool>,
}

/// Notes a failed action for `--on-error fail` (see [`ApplyOptions::halt_on_error`]).
fn halt_on_error(opts: &ApplyOptions<'_>) {
    if let Some(h) = opts.halt_on_error {
        h.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What [`ApplyOptions::starting`] is told.
pub type StartFn<'f> = dyn Fn(&Path, u64) + Sync + 'f;

/// What [`ApplyOptions::open_source`] is: the source file of a copy, opened.
pub type OpenSource<'f> =
    dyn Fn(&Path, &Entry) -> Result<(std::fs::File, crate::fs::Stat, PathBuf), Error> + Sync + 'f;

/// What [`ApplyOptions::done`] is told: an action's place in the plan, and the hash of
/// what a copy wrote.
pub type DoneFn<'f> = dyn Fn(u32, Option<crate::tree::Digest>) + Sync + 'f;

/// Tells `opts.done` that the action at `at` is done; a copy's hash is its record's.
fn report_done(opts: &ApplyOptions<'_>, at: u32, out: &Applied) {
    if let Some(done) = opts.done {
        let digest = out
            .copied
            .last()
            .filter(|c| c.action == at)
            .map(|c| c.digest);
        done(at, digest);
    }
}

/// Counts of what a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub by_verb: BTreeMap<&'static str, u64>,
    pub bytes: u64,
}

impl Counts {
    pub fn add(&mut self, verb: &'static str) {
        *self.by_verb.entry(verb).or_default() += 1;
    }

    /// Total operations, not counting directory metadata fix-ups.
    pub fn operations(&self) -> u64 {
        self.by_verb
            .iter()
            .filter(|(v, _)| **v != "dirmeta")
            .map(|(_, n)| n)
            .sum()
    }

    pub fn merge(&mut self, other: &Counts) {
        for (v, n) in &other.by_verb {
            *self.by_verb.entry(v).or_default() += n;
        }
        self.bytes += other.bytes;
    }

    /// What a dry run would do: "would copy 3, remove 1" (or "nothing to do").
    pub fn planned(&self) -> String {
        if self.operations() == 0 {
            self.summary()
        } else {
            format!("would {}", self.summary())
        }
    }

    /// "copy 3, remove 1" (or "nothing to do").
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .by_verb
            .iter()
            .filter(|(v, _)| **v != "dirmeta")
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        if parts.is_empty() {
            "nothing to do".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Destination entries created or replaced, with hash and inode as written (each
    /// path once; in no particular order, like the other lists here).
    pub written: Vec<(PathBuf, Entry)>,
    /// Destination files whose metadata was changed in place.
    pub meta: Vec<(PathBuf, Entry)>,
    /// Directories whose mode and mtime were set ("" is the root).
    pub dirs: Vec<(PathBuf, Entry)>,
    /// Destination paths removed (whole subtrees for directories).
    pub removed: Vec<PathBuf>,
    /// Files copied: one record for what was written and what was read (a first
    /// mirror makes one per file, so they are kept small).
    pub copied: Vec<Copied>,
    /// Paths whose action failed; their destination state is unknown.
    pub failed: BTreeSet<PathBuf>,
    pub errors: Vec<Error>,
    pub counts: Counts,
    /// The stop flag was seen before the plan was done.
    pub interrupted: bool,
}

/// One file copied (a first sync holds one per file: kept small).
#[derive(Debug)]
pub struct Copied {
    /// None while the copies run (the plan holds it): set by [`Applied::name_copies`].
    path: Option<Box<Path>>,
    /// The copy's place in the plan.
    action: u32,
    /// The destination file as written: its size, mode, mtime, inode and content hash
    /// (the mtimes' parts side by side, which saves their padding).
    mode: u32,
    size: u64,
    mtime_sec: i64,
    mtime_nsec: u32,
    ino: u64,
    uid: u32,
    gid: u32,
    pub digest: crate::tree::Digest,
    /// The source file's mtime and inode when it was read (its size and content hash
    /// are the written file's).
    read_nsec: u32,
    read_sec: i64,
    read_ino: u64,
}

impl Copied {
    /// The path, once the copies are named (see [`Applied::name_copies`]).
    fn named(&self) -> &Path {
        self.path
            .as_deref()
            .expect("BUG: a copy's record is used before Applied::name_copies")
    }

    /// The destination entry as written.
    pub fn written(&self) -> Entry {
        Entry {
            kind: Kind::File,
            size: self.size,
            mode: self.mode,
            mtime: crate::tree::MTime::new(self.mtime_sec, self.mtime_nsec),
            ino: self.ino,
            target: None,
            hash: Some(self.digest),
            owner: crate::tree::Owner {
                uid: self.uid,
                gid: self.gid,
            },
            linked: false,
            touched: false,
        }
    }

    /// The source as it was read.
    pub fn read(&self) -> crate::scan::cache::Stamp {
        crate::scan::cache::Stamp {
            size: self.size,
            mtime: crate::tree::MTime::new(self.read_sec, self.read_nsec),
            ino: self.read_ino,
        }
    }
}

/// Gives the files of `source` (the tree the copies read from) whose hash is unknown the
/// hash and stat their copy read: they need not be hashed again.
pub fn note_reads(source: &mut crate::tree::Entries, copied: &mut [Copied]) {
    crate::tree::update_each(
        source,
        copied,
        |c| c.named(),
        |e, c| {
            if e.kind == Kind::File && e.hash.is_none() {
                crate::scan::cache::note_hashed(e, c.digest, c.read());
            }
        },
    );
}

/// Logs an action line: UTC time is added by the logger.
pub fn log_action(action: &Action, direction: &str, dry_run: bool) {
    let verb = action.op.verb();
    if crate::run::events::enabled() && verb != "dirmeta" {
        let from = match &action.op {
            Op::Move { from } => Some(&**from),
            _ => None,
        };
        crate::run::events::action(verb, &action.path, from, direction, dry_run);
    }
    let lvl = if verb == "dirmeta" && !dry_run {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    if !log::log_enabled!(target: "action", lvl) {
        return;
    }
    let path = &action.path;
    let mut shown = if path.as_os_str().is_empty() {
        ".".to_string()
    } else {
        display(path)
    };
    if let Op::Move { from } = &action.op {
        shown = format!("{} -> {shown}", display(from));
    }
    if dry_run {
        log::info!(target: "action", "would {verb:<8} {shown}  ({direction})");
    } else if verb == "dirmeta" {
        log::debug!(target: "action", "{verb:<8} {shown}  ({direction})");
    } else {
        log::info!(target: "action", "{verb:<8} {shown}  ({direction})");
    }
}

/// Prints a plan as a dry run: the same actions, nothing done.
pub fn print_plan(plan: &Plan, direction: &str) -> Counts {
    let mut counts = Counts::default();
    for a in &plan.actions {
        if a.op != Op::SetDirMeta {
            log_action(a, direction, true);
        }
        counts.add(a.op.verb());
        if matches!(a.op, Op::Copy { .. }) {
            counts.bytes += a.src.as_ref().map_or(0, |s| s.size);
        }
    }
    counts
}

/// Carries out `plan` on `dst`, in three phases that keep every ordering the plan relies
/// on: first every action that is not a file copy, in plan order (removals before what
/// replaces them, directories before their contents); then the file copies, which are
/// independent of each other by then, on `threads` threads; then directory metadata.
pub fn apply(plan: &Plan, dst: &mut Root, opts: &ApplyOptions<'_>) -> Applied {
    let mut out = Applied::default();
    let mut failed_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let is_copy = |a: &Action| matches!(a.op, Op::Copy { .. });
    // Each action with its place in the plan, which a copy's record keeps.
    let numbered = || {
        plan.actions.iter().enumerate().map(|(i, a)| {
            let i = u32::try_from(i).expect("BUG: a plan holds fewer than 2^32 actions");
            (i, a)
        })
    };
    // Links to files of this plan wait for the copies, with directory metadata.
    let is_last = |a: &Action| matches!(a.op, Op::SetDirMeta | Op::Link { .. });
    let first: Vec<Numbered> = numbered()
        .filter(|(_, a)| !is_copy(a) && !is_last(a))
        .collect();
    // (By place only: a first sync copies every file.)
    let copies: Vec<u32> = numbered()
        .filter(|(_, a)| is_copy(a))
        .map(|(i, _)| i)
        .collect();
    let last: Vec<Numbered> = numbered().filter(|(_, a)| is_last(a)).collect();

    // Bytes are read through directory handles too, never following a symlink.
    let mut src = Root::open(opts.src_root).ok();
    run_sequence(&first, dst, &mut src, opts, &mut out, &mut failed_dirs);
    if !out.interrupted && !copies.is_empty() {
        let mut copies = copies;
        copies.retain(|&i| {
            let a = &plan.actions[i as usize];
            let skip = under_any(&failed_dirs, &a.path);
            if skip {
                out.failed.insert(a.path.to_path_buf());
            }
            !skip
        });
        let threads = crate::parallel::threads().min(copies.len()).max(1);
        let next = AtomicUsize::new(0);
        if threads <= 1 {
            let work = (&plan.actions[..], &copies[..], &next, None);
            copy_worker(work, dst, &mut src, opts, &mut out);
        } else {
            // The workers' records go, a batch at a time, to one list made to size: a
            // first sync copies every file, and lists of each worker's own, joined at the
            // end, would need room for them twice.
            let done = Mutex::new(Vec::with_capacity(copies.len()));
            let dst_path = dst.path();
            let results: Vec<Applied> = crate::parallel::workers(threads, || {
                let mut part = Applied::default();
                match Root::open(dst_path) {
                    Ok(mut root) => {
                        let mut src = Root::open(opts.src_root).ok();
                        let work = (&plan.actions[..], &copies[..], &next, Some(&done));
                        copy_worker(work, &mut root, &mut src, opts, &mut part);
                    }
                    Err(e) => part.errors.push(e),
                }
                part
            });
            for part in results {
                out.merge(part);
            }
            let done = done.into_inner().expect("BUG: no panic holds it");
            Applied::join(&mut out.copied, done);
        }
    }
    if !out.interrupted {
        run_sequence(&last, dst, &mut src, opts, &mut out, &mut failed_dirs);
    }
    out
}

impl Applied {
    /// Every path this apply wrote, removed or changed (copies once named); true for a
    /// removed one, whatever was under it gone with it.
    pub fn paths_touched(&self) -> impl Iterator<Item = (&Path, bool)> {
        let lists = [&self.written, &self.meta, &self.dirs];
        lists
            .into_iter()
            .flat_map(|l| l.iter().map(|(p, _)| (p.as_path(), false)))
            .chain(self.removed.iter().map(|p| (p.as_path(), true)))
            .chain(
                self.copied
                    .iter()
                    .filter_map(|c| Some((c.path.as_deref()?, false))),
            )
    }

    /// Gives each copy's record its path, from `plan` (the plan this applied), which
    /// goes: the records go without one while the copies run, as the plan holds them all.
    /// The paths are taken out of the plan first (most of them the trees' own), and made
    /// the records' own once its actions are gone (a first sync holds one per file).
    pub fn name_copies(&mut self, mut plan: Plan<'_>) {
        let paths: Vec<_> = self
            .copied
            .iter()
            .map(|c| {
                let action = &mut plan.actions[c.action as usize];
                debug_assert!(matches!(
                    action.op,
                    Op::Copy { .. } | Op::SetFileMeta { .. } | Op::Move { .. }
                ));
                std::mem::take(&mut action.path)
            })
            .collect();
        drop(plan);
        for (c, path) in self.copied.iter_mut().zip(paths) {
            c.path = Some(path.into_owned().into_boxed_path());
        }
    }

    /// Appends `from` to `into`, growing it by just what it adds (or takes `from` over).
    fn join<T>(into: &mut Vec<T>, from: Vec<T>) {
        if into.is_empty() {
            *into = from;
        } else {
            into.reserve_exact(from.len());
            into.extend(from);
        }
    }

    /// Folds in what another worker did. Its lists are taken over where this one's are
    /// empty, else appended to, growing by just what they add (a first mirror holds a
    /// record per file: never twice, nor with room for as many again).
    fn merge(&mut self, other: Applied) {
        Self::join(&mut self.written, other.written);
        Self::join(&mut self.meta, other.meta);
        Self::join(&mut self.dirs, other.dirs);
        Self::join(&mut self.removed, other.removed);
        Self::join(&mut self.copied, other.copied);
        self.failed.extend(other.failed);
        self.errors.extend(other.errors);
        self.counts.merge(&other.counts);
        self.interrupted |= other.interrupted;
    }
}

/// The destination tree after `applied`: the scanned tree with removals, writes and
/// metadata changes folded in (so the destination need not be scanned again).
///
/// The entries written and changed are moved out of `applied`, not copied: what the
/// copies read must be taken from `applied.copied` before.
pub fn tree_after(before: crate::tree::Tree, applied: &mut Applied) -> crate::tree::Tree {
    let mut t = before;
    let copied = std::mem::take(&mut applied.copied);
    let change = |c: Copied| {
        let written = c.written();
        let path = c
            .path
            .expect("BUG: a copy's record is used before Applied::name_copies");
        (path.into_path_buf(), written)
    };
    // Made in the copies' own memory (the collect reuses it: a first sync copies every
    // file), the other changes added after (a path has one action in a plan, so their
    // order does not matter).
    let mut changes: Vec<(PathBuf, Entry)> = copied.into_iter().map(change).collect();
    changes.append(&mut applied.written);
    changes.append(&mut applied.meta);
    // A directory's entry comes from its source: it keeps the inode the destination's
    // directory had, if it was one already (a rescan under --watch compares them), else
    // none is known.
    for (p, e) in changes.iter_mut() {
        if e.kind == Kind::Dir {
            e.ino = t
                .entries
                .get(p)
                .filter(|b| b.kind == Kind::Dir)
                .map_or(0, |b| b.ino);
        }
    }
    t.entries.merge(&applied.removed, changes);
    for (p, e) in &applied.dirs {
        let slot = if p.as_os_str().is_empty() {
            t.root.as_mut()
        } else {
            t.entries.get_mut(p)
        };
        if let Some(d) = slot {
            d.mode = e.mode;
            d.mtime = e.mtime;
        }
    }
    for p in &applied.failed {
        t.unknown.insert(p.clone());
    }
    t.leftovers.clear();
    t
}

#[cfg(test)]
mod tests;
