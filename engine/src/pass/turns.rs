//! A first pass into an empty replica, a stretch of paths at a time ("turns"), so that
//! it never holds either tree whole.
//!
//! A pass that cannot end early holds both trees whole, its plan, and what the steps
//! did: at a million files, a first mirror took over 300 MB. Where a tool fills an empty
//! replica from the other (oneway's first pass into an empty BACKUP, twoway's first
//! sync into an empty replica: [`super::Tool::fills`]), the pass reads both compact,
//! then takes the other's entries in path order, [`TURN`] at a time, with every folder
//! above them on both sides as the turns before left them; and plans, applies and
//! settles each turn as a pass would its whole trees. Each turn is then flushed, and the
//! tool records it (twoway: the turn's part of the sync state, added to what the turns
//! before recorded; a first sync's progress within a turn adds to it too). What each
//! turn leaves goes where the record stage reads it:
//!
//! - the replica filled, as the turns left it, compact (about 22 bytes an entry);
//! - the hashes of both replicas' files, in a stat cache written to an unnamed file in
//!   the data home as the turns go ([`crate::scan::cache::Spill`]);
//! - the other replica stays as it was read, compact; the few files whose stat a turn
//!   learned anew (one changed since the scan) are held whole over it.
//!
//! The record stage then reads each replica as a pass planned in part does
//! ([`crate::scan::after::Merged`]): the stat caches, the directory SHA-256s and the
//! version are written from that stream.
//!
//! It plans what the whole pass plans:
//!
//! - the replica filled holds nothing (no entry, leftover, unknown path or error), so
//!   the planner only adds to it, and a path's actions come from the path and the
//!   folders above it; nothing is lost, so nothing is kept first, there is nothing to
//!   move and `--max-delete` has nothing to count;
//! - no file of the other is hard-linked (a group's names may lie in two turns), and
//!   neither replica folds case (names that collide may too);
//! - every turn is planned from the base the first loaded, which for a pass that fills
//!   is the default one (twoway: no sync state), not from what the turns before
//!   recorded;
//! - a folder's metadata is set after its last entry is written: where a folder holds
//!   paths of the next turn (the root holds them all), the turn leaves its metadata to
//!   the turn that writes its last entry.
//!
//! A turn is planned and applied before the next is read, so `--on-error fail` (which
//! stops a pass before anything changes when one path cannot be planned) goes whole.
//! Interrupted, the pass stops after the turn under way, and records the stat caches of
//! what the turns did, as an interrupted pass does; where a turn's flush fails, the
//! tool records nothing of it, and no turn follows.
//!
//! Cost: twoway adds each turn to its state by streaming the state file through, so a
//! first sync of n paths streams about n²/(2 × [`TURN`]) records in all (16 times a file
//! that grows to 75 MB at a million files: about a sixth of that pass's time).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::narrow::{is_at_or_under, Narrow};
use super::stages::{self, Applied, Scanned};
use super::Tool;
use crate::apply::Counts;
use crate::error::{Error, Refusal};
use crate::plan::mirror::{Action, Op};
use crate::run::runner::PassOutcome;
use crate::scan::cache::Spill;
use crate::tree::compact::{Compact, CompactTree, Cursor};
use crate::tree::entries::ChunkList;
use crate::tree::{path_order, Entries, Entry, Kind, MTime, Tree};

/// Entries of the replica read a turn takes: about 20 MB of trees, plan and results.
pub const TURN: usize = 65_536;

/// [`TURN`], or the number `TWOWAY_TURN` gives (the tests set a few, so that their
/// small first passes take many turns).
fn turn_size() -> usize {
    super::quiet::count_from_env("TWOWAY_TURN", 1).unwrap_or(TURN)
}

/// Whether a pass of `tool` may fill a replica in turns, as far as can be told before
/// the replicas are read: the tool fills one, the replica has no stat cache (it was
/// never the replica of a pass that ended), and the pass applies its whole plan at once
/// (not a dry run, `--approve`, `--checksum`, `--watch` or `--on-error fail`). Such a
/// pass reads both replicas compact.
pub(super) fn may_fill<T: Tool>(tool: &T) -> bool {
    let s = tool.settings();
    let fills = tool.fills();
    let no_cache = (0..2).any(|side| fills[side] && tool.replicas()[side].open_cache().is_none());
    no_cache
        && !(s.dry_run
            || s.approve
            || s.checksum
            || crate::run::watch::watching()
            || s.on_error == crate::run::config::OnError::Fail)
}

/// The replica this pass fills in turns, read as [`may_fill`] reads it, if it does (see
/// the module's text): it holds nothing, the other holds more than a turn of entries
/// and no hard-linked file. With the other's files counted, and their bytes.
pub(super) fn filled<T: Tool>(tool: &T, scanned: &Scanned) -> Option<(usize, usize, u64)> {
    let trees = scanned.compact.as_ref().filter(|_| scanned.fills)?;
    let empty = |t: &CompactTree| {
        t.entries.is_empty()
            && t.leftovers.is_empty()
            && t.unknown.is_empty()
            && t.errors.is_empty()
    };
    let fills = tool.fills();
    let side = (0..2).find(|&s| fills[s] && empty(&trees[s]))?;
    let from = &trees[1 - side];
    if scanned.fs.iter().any(|f| f.folds_case) || from.len() <= turn_size() {
        return None;
    }
    let (mut files, mut bytes) = (0, 0);
    let mut c = from.entries.cursor();
    while let Some((_, e)) = c.next_entry() {
        if e.linked {
            return None;
        }
        if e.kind == Kind::File {
            files += 1;
            bytes += e.size;
        }
    }
    Some((side, files, bytes))
}

/// Whether the folder at `dir` holds `next`, the first path of the next turn: its last
/// entry is yet to come. The root holds every path.
fn holds(dir: &Path, next: Option<&Path>) -> bool {
    next.is_some_and(|n| dir.as_os_str().is_empty() || (is_at_or_under(n, dir) && n != dir))
}

/// What the turns so far left, for the next turn and for the record stage.
struct Filling<'t> {
    /// The replica filled (its index), and the other's.
    fill: usize,
    from: usize,
    /// Each replica's folders above the next turn's first path, as the turns left them.
    above: [Vec<(PathBuf, Entry)>; 2],
    /// Each replica's root, as the turns left it.
    roots: [Option<Entry>; 2],
    /// The last path of each replica a turn settled (folders above come again).
    last: [Option<PathBuf>; 2],
    /// The replica filled, as the turns left it, and the files it holds.
    after: Compact,
    files: usize,
    /// The other's entries whose stat a turn learned anew, held over it as read.
    learned: Vec<(PathBuf, Entry)>,
    /// The other as read, walked alongside the turns to find those.
    read: Cursor<'t>,
    unknown: [BTreeSet<PathBuf>; 2],
    spills: [Spill; 2],
    /// Folders whose metadata waits for the turn that writes their last entry: each
    /// with the other's entry.
    waiting: Vec<(PathBuf, Entry)>,
    wrote: [bool; 2],
    counts: Counts,
    failed: Vec<PathBuf>,
    errors: Vec<Error>,
    hashed_files: u64,
    interrupted: bool,
    halted: bool,
    /// A flush failed: no turn follows.
    unflushed: bool,
}

impl Filling<'_> {
    /// Takes what a turn did (`applied`; `next`: the first path of the turn to come),
    /// once it is flushed and the tool recorded it (`record`, told how the turn ended).
    fn take<X>(
        &mut self,
        applied: Applied<X>,
        next: Option<&Path>,
        record: impl FnOnce(&mut X, &[Tree; 2], &super::Outcome) -> Result<(), Error>,
        (n, scanned_at): (u64, MTime),
    ) -> Result<X, Error> {
        let Applied {
            mut afters,
            mut extra,
            wrote,
            counts,
            failed,
            errors,
            hashed_files,
            interrupted,
            halted,
            replicas,
            roots,
            ..
        } = applied;
        let errors_before = self.errors.len();
        self.errors.extend(errors);
        self.hashed_files += hashed_files;
        self.interrupted |= interrupted;
        self.halted |= halted;
        let mut flushed = true;
        for side in 0..2 {
            self.wrote[side] |= wrote[side];
            // What the record stage hashes of a pass held whole, each turn hashes of its
            // own: the record stage will not have these trees.
            if !interrupted {
                let h = replicas[side].hash_rest(&mut afters[side]);
                self.hashed_files += h.files;
                self.errors.extend(h.errors);
            }
            // What the turn wrote is on disk before the tool records it.
            if wrote[side] {
                let synced = match crate::fs::injected_fault("turn-flush") {
                    true => Err(Error::io(
                        "sync",
                        roots[side].path(),
                        std::io::Error::from_raw_os_error(5),
                    )),
                    false => roots[side].sync_fs(),
                };
                if let Err(e) = synced {
                    log::error!("{e}");
                    self.errors.push(e);
                    flushed = false;
                }
            }
        }
        self.unflushed |= !flushed;
        let outcome = super::Outcome {
            n,
            scanned_at,
            dry_run: false,
            interrupted,
            flushed,
            failed,
            counts,
            hashed_files: 0,
            errors: self.errors.len() - errors_before,
            seconds: 0.0,
            shas: [None, None],
            versions: [None, None],
        };
        if let Err(e) = record(&mut extra, &afters, &outcome) {
            log::error!("{e}");
            self.errors.push(e);
        }
        self.counts.merge(&outcome.counts);
        self.failed.extend(outcome.failed);
        let (fill, from) = (self.fill, self.from);
        let new = |last: &Option<PathBuf>, p: &Path| {
            last.as_ref().is_none_or(|l| path_order(l, p).is_lt())
        };
        for (p, e) in afters[fill].entries.iter() {
            if new(&self.last[fill], p) {
                self.spills[fill]
                    .push(p, e)
                    .map_err(|e| spill_error(p, e))?;
                // Its hash is in the spill.
                let e = Entry {
                    hash: None,
                    ..e.clone()
                };
                self.after.push(p, &e);
                self.files += usize::from(e.kind == Kind::File);
            }
        }
        for (p, e) in afters[from].entries.iter() {
            if !new(&self.last[from], p) {
                continue;
            }
            self.spills[from]
                .push(p, e)
                .map_err(|e| spill_error(p, e))?;
            // The same entries, in the same order, as read.
            while let Some((r, was)) = self.read.next_entry() {
                if r == p {
                    if (was.size, was.mtime, was.ino) != (e.size, e.mtime, e.ino) {
                        self.learned.push((p.to_path_buf(), e.clone()));
                    }
                    break;
                }
            }
        }
        for (side, t) in afters.iter_mut().enumerate() {
            if let Some((p, _)) = t.entries.iter().next_back() {
                if new(&self.last[side], p) {
                    self.last[side] = Some(p.to_path_buf());
                }
            }
            self.unknown[side].append(&mut t.unknown);
            self.roots[side] = t.root.take();
            self.above[side] = t
                .entries
                .iter()
                .filter(|(p, e)| e.kind == Kind::Dir && holds(p, next))
                .map(|(p, e)| (p.to_path_buf(), e.clone()))
                .collect();
        }
        crate::tree::drop_later(afters);
        Ok(extra)
    }
}

fn spill_error(p: &Path, e: std::io::Error) -> Error {
    Error::io("note the hash of", p, e)
}

/// Runs pass `n` of `tool`, read compact (`scanned`), filling replica `fill` from the
/// other (which holds `files` files, of `bytes` bytes) a turn at a time: see the
/// module's text.
pub(super) fn run<T: Tool>(
    tool: &T,
    n: u64,
    scanned: Scanned,
    base: T::Base,
    (fill, files, bytes): (usize, usize, u64),
    scanned_at: MTime,
    started: Instant,
) -> Result<PassOutcome, Refusal> {
    let from = 1 - fill;
    let size = turn_size();
    let Scanned {
        compact,
        roots,
        fs,
        errors,
        hashed_files,
        replicas,
        ..
    } = scanned;
    let mut trees = compact.expect("BUG: a pass filled in turns is read compact");
    let home = tool.home().path();
    let cannot = |e: Error| {
        Refusal::new(format!(
            "cannot fill {} a part at a time: {e}",
            replicas[fill].label
        ))
    };
    let spills = [
        Spill::new(home).map_err(cannot)?,
        Spill::new(home).map_err(cannot)?,
    ];
    log::debug!(
        "filling {} from {} {size} entries at a time",
        replicas[fill].label,
        replicas[from].label
    );
    let mut filling = Filling {
        fill,
        from,
        above: Default::default(),
        roots: [trees[0].root.clone(), trees[1].root.clone()],
        last: [None, None],
        after: Compact::new(),
        files: 0,
        learned: Vec::new(),
        read: trees[from].entries.cursor(),
        unknown: Default::default(),
        spills,
        waiting: Vec::new(),
        wrote: [false, false],
        counts: Counts::default(),
        failed: Vec::new(),
        errors,
        hashed_files,
        interrupted: false,
        halted: false,
        unflushed: false,
    };
    let mut reading = trees[from].entries.cursor();
    let mut next = reading.next_entry().map(|(p, e)| (p.to_path_buf(), e));
    let mut base = Some(base);
    let mut extra = None;
    let mut turn = 0;
    // One progress line for all the turns.
    let show = super::progress::shown(tool.settings().verbosity);
    let line = super::progress::Progress::counting(files as u64, bytes, show);
    // Cleared however the turns end.
    struct Clear<'l>(Option<&'l super::progress::Progress<'static>>);
    impl Drop for Clear<'_> {
        fn drop(&mut self) {
            if let Some(l) = self.0 {
                l.finish();
            }
        }
    }
    let clear = Clear(line.as_ref());
    while next.is_some() && !filling.interrupted && !filling.unflushed {
        if crate::run::signal::stop_requested() {
            filling.interrupted = true;
            break;
        }
        // This turn: the folders above on both sides, then the next entries read.
        let mut lists: [ChunkList; 2] = Default::default();
        for (list, above) in lists.iter_mut().zip(&filling.above) {
            for (p, e) in above {
                list.push(p, e.clone());
            }
        }
        for _ in 0..size {
            let Some((p, e)) = next.take() else { break };
            lists[from].push(&p, e);
            next = reading.next_entry().map(|(p, e)| (p.to_path_buf(), e));
        }
        let coming = next.as_ref().map(|(p, _)| p.as_path());
        let [la, lb] = lists;
        let mut parts = [
            trees[0].part(la.into_entries()),
            trees[1].part(lb.into_entries()),
        ];
        for (side, t) in parts.iter_mut().enumerate() {
            t.root = filling.roots[side].clone();
        }
        let open = |r: &crate::fs::Root| {
            r.try_clone()
                .map_err(|e| Refusal::new(format!("cannot open a root again: {e}")))
        };
        let mut scanned = Scanned {
            trees: parts,
            compact: None,
            fills: false,
            cached_sha: [None, None],
            roots: [open(&roots[0])?, open(&roots[1])?],
            fs,
            errors: Vec::new(),
            hashed_files: 0,
            replicas: replicas.clone(),
            region: None,
            parts: None,
            narrow: None,
            line: line
                .as_ref()
                .map(|l| super::progress::Progress::along(Vec::new(), l)),
            turn,
        };
        // (What the first turn planned from is the default base: see `Tool::fills`.)
        let base = base.take().unwrap_or_default();
        tool.prepare(&mut scanned, &base);
        // Folders whose last entry this turn writes, their metadata left by turns before.
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut filling.waiting)
            .into_iter()
            .partition(|(p, _)| !holds(p, coming));
        filling.waiting = waiting;
        let ran = {
            let mut planned = tool.plan(&scanned, base)?;
            for step in planned
                .steps
                .iter_mut()
                .filter(|s| s.target == fill && s.source == from)
            {
                let actions = &mut step.plan.actions;
                let waiting = &mut filling.waiting;
                actions.retain(|a| {
                    let wait = matches!(a.op, Op::SetDirMeta) && holds(&a.path, coming);
                    if let (true, Some(s)) = (wait, a.src) {
                        if !waiting.iter().any(|(p, _)| *p == *a.path) {
                            waiting.push((a.path.to_path_buf(), s.clone()));
                        }
                    }
                    !wait
                });
                // Deepest first, after the turn's own.
                for (p, s) in ready.iter().rev() {
                    let planned = |a: &Action| matches!(a.op, Op::SetDirMeta) && *a.path == **p;
                    if !actions.iter().any(planned) {
                        actions.push(Action::new(Op::SetDirMeta, p.as_path(), Some(s), None));
                    }
                }
            }
            for (side, v) in tool.versions().into_iter().enumerate() {
                let keep = v.map(|_| planned.keep_first(side, &scanned.trees[side]));
                if keep.is_some_and(|k| !k.is_empty()) {
                    return Err(Refusal::new(format!(
                        "BUG: a pass that fills {} would replace what it holds",
                        replicas[side].label
                    )));
                }
            }
            for e in &planned.errors {
                log::error!(target: crate::error::FILE_ERROR, "{e}");
            }
            stages::apply(tool, &scanned, planned, started)?
        };
        let applied = stages::settle(scanned, ran, started);
        let record = |x: &mut T::Extra, afters: &[Tree; 2], o: &super::Outcome| {
            tool.record(x, Some(afters), o)
        };
        let took = filling.take(applied, coming, record, (n, scanned_at));
        extra = Some(took.map_err(cannot)?);
        turn += 1;
        log::debug!(
            "turn {turn}: {:.3}s ({}; filled {:.1} MB, {} learned, {} waiting)",
            started.elapsed().as_secs_f64(),
            crate::run::alloc_tune::resident(),
            filling.after.heap_bytes() as f64 / 1e6,
            filling.learned.len(),
            filling.waiting.len(),
        );
    }
    drop(clear);
    let Some(extra) = extra else {
        // Stopped before the first turn: nothing was changed.
        log::warn!("pass {n} (interrupted) before it changed anything");
        return Ok(PassOutcome {
            operations: 0,
            errors: filling.errors.len(),
            interrupted: true,
        });
    };
    let Filling {
        roots: after_roots,
        mut after,
        files: files_filled,
        learned,
        unknown: [ua, ub],
        spills: [sa, sb],
        wrote,
        counts,
        failed,
        errors,
        hashed_files,
        interrupted,
        halted,
        unflushed,
        ..
    } = filling;
    after.shrink();
    let finish = |s: Spill, side: usize| {
        s.finish(&replicas[side].root)
            .map_err(|e| cannot(Error::io("note hashes in", home, e)))
    };
    let ((ca, ha), (cb, hb)) = (finish(sa, 0)?, finish(sb, 1)?);
    trees[fill] = CompactTree {
        root: after_roots[fill].clone(),
        entries: after,
        excluded: std::mem::take(&mut trees[fill].excluded),
        ..CompactTree::default()
    };
    // Each replica after the pass is that, merged with what is held whole over it.
    let held = |side: usize, unknown| Tree {
        root: after_roots[side].clone(),
        unknown,
        ..Tree::default()
    };
    let mut afters = [held(0, ua), held(1, ub)];
    afters[from].entries = Entries::from_sorted(learned);
    let mut counted = [0, 0];
    counted[from] = files;
    counted[fill] = files_filled;
    let applied = Applied {
        afters,
        extra,
        proven: [None, None],
        wrote,
        roots,
        replicas,
        rescanned: false,
        narrow: Some(Narrow {
            compact: trees,
            covered: [Compact::new(), Compact::new()],
            caches: [ca, cb],
            heads: [ha, hb],
            files: counted,
            hashed: !unflushed,
        }),
        counts,
        failed,
        errors,
        hashed_files,
        interrupted,
        halted,
        recorded: true,
    };
    let (outcome, _) = stages::record(tool, n, applied, scanned_at, started);
    Ok(outcome)
}
