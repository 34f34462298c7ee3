//! The stages of [`super::run`], each a function from one stage's type to the next.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{open_roots, Outcome, Planned, Tool};
use crate::apply::{self, ApplyOptions, Counts};
use crate::error::{Error, Refusal};
use crate::fs::{FsTraits, Root};
use crate::names::display;
use crate::parallel;
use crate::run::runner::PassOutcome;
use crate::run::signal;
use crate::scan::after::{After, Merged};
use crate::scan::cache::Hashed;
use crate::scan::replica::{self, Replica};
use crate::tree::compact::CompactTree;
use crate::tree::{Digest, Entry, MTime, Tree};

/// Both replicas read: scanned, their known hashes taken from their stat caches (every
/// file hashed with `--checksum`), their roots open. A whole pass that may end before
/// its trees are whole reads them compact first (see [`Scanned::compact`]).
pub struct Scanned {
    pub trees: [Tree; 2],
    /// Both replicas as a whole pass that may end early read them (see
    /// [`super::quiet::may_end_early`]), held compact and without hashes until
    /// [`Scanned::make_whole`] makes them the trees: a pass that finds nothing to do
    /// never holds them whole (see [`super::quiet`]).
    pub(super) compact: Option<[CompactTree; 2]>,
    /// The trees were read compact for a pass that may fill a replica a turn at a time
    /// (see [`super::turns::may_fill`]), not for one that may end early.
    pub(super) fills: bool,
    /// The directory SHA-256 each stat cache proves: valid only while that tree is
    /// unchanged (see [`crate::scan::cache::Filled::sha`]).
    pub cached_sha: [Option<Digest>; 2],
    pub roots: [Root; 2],
    /// What each replica's filesystem can keep.
    pub fs: [FsTraits; 2],
    pub errors: Vec<Error>,
    pub hashed_files: u64,
    pub(super) replicas: [Replica; 2],
    /// When only some folders were read, into the trees the pass before left
    /// (`--watch`): what was read on either replica. Outside it both trees are what the
    /// pass before left, made the same, so a planner may look only at this part.
    pub region: Option<crate::scan::rescan::Region>,
    /// The part of both trees a tool's planner looks at, when it looks at less than
    /// the whole (oneway under `--watch`: the part read); set by the tool's `prepare`.
    pub parts: Option<[Tree; 2]>,
    /// A pass planned only where it has something to do: `trees` are that part, and
    /// this the rest (see [`super::narrow`]).
    pub(super) narrow: Option<super::narrow::Narrow>,
    /// A turn of a pass in turns: the progress line the whole pass draws, if any (see
    /// [`super::turns`]).
    pub(super) line: Option<super::progress::Progress<'static>>,
    /// Which turn of a pass in turns this is (0: the first, or a pass not in turns).
    pub(super) turn: usize,
}

/// Both replicas as [`Scanned::read`] read them.
enum Read {
    /// Only the folders named, into the trees a pass left: the trees, the directory
    /// SHA-256 of each replica where nothing read differs, and what was read.
    Again([Tree; 2], [Option<Digest>; 2], crate::scan::rescan::Region),
    /// Everything, compact: a pass that may end before its trees are whole.
    Compact([CompactTree; 2]),
    /// Everything, whole, without hashes yet.
    Whole([Tree; 2]),
}

impl Scanned {
    /// Reads both replicas of `tool` and, at the same time, its base: whole (held
    /// compact, see [`Scanned::make_whole`]), or (with `scope`: the trees a pass left,
    /// when it read them, and folders) only the folders named, read again into those
    /// trees.
    pub(super) fn read<T: Tool>(
        tool: &T,
        scope: Option<(super::Left, std::collections::BTreeSet<PathBuf>)>,
    ) -> Result<(Scanned, T::Base), Refusal> {
        let started = Instant::now();
        let replicas = tool.replicas().clone();
        let opts = tool.scan_options();
        let checksum = tool.settings().checksum;
        let fills = scope.is_none() && super::turns::may_fill(tool);
        let read = || match scope {
            Some((held, dirs)) if !checksum => {
                let super::Left {
                    trees: [ta, tb],
                    at,
                    shas,
                } = held;
                let (ra, rb) = parallel::join(
                    || replicas[0].rescan(&opts[0], ta, at, &dirs),
                    || replicas[1].rescan(&opts[1], tb, at, &dirs),
                );
                let ((ta, read_a), (tb, read_b)) = (ra?, rb?);
                // A replica in which nothing changed is the tree whose SHA-256 the pass
                // before worked out.
                let cached_sha = [
                    shas[0].filter(|_| !read_a.changed),
                    shas[1].filter(|_| !read_b.changed),
                ];
                let region = read_a.region.join(read_b.region);
                Ok(Read::Again([ta, tb], cached_sha, region))
            }
            _ if super::quiet::may_end_early(tool) || fills => {
                replica::read_both((&replicas[0], &opts[0]), (&replicas[1], &opts[1]))
                    .map(Read::Compact)
            }
            _ => replica::read_both_whole((&replicas[0], &opts[0]), (&replicas[1], &opts[1]))
                .map(Read::Whole),
        };
        let (read, base) = parallel::join(read, || tool.load_base());
        let read = read?;
        let base = base?;
        let roots = open_roots(&replicas)?;
        let fs = [roots[0].fs_traits(), roots[1].fs_traits()];
        let mut scanned = Scanned {
            trees: Default::default(),
            compact: None,
            fills,
            cached_sha: [None, None],
            roots,
            fs,
            errors: Vec::new(),
            hashed_files: 0,
            replicas,
            region: None,
            parts: None,
            narrow: None,
            line: None,
            turn: 0,
        };
        match read {
            Read::Again(mut trees, cached_sha, region) => {
                for t in &mut trees {
                    scanned.errors.append(&mut t.errors);
                }
                scanned.trees = trees;
                scanned.cached_sha = cached_sha;
                scanned.region = Some(region);
            }
            Read::Compact(mut trees) => {
                for t in &mut trees {
                    scanned.errors.append(&mut t.errors);
                }
                scanned.compact = Some(trees);
            }
            Read::Whole(mut trees) => {
                let t0 = Instant::now();
                for t in &mut trees {
                    scanned.errors.append(&mut t.errors);
                }
                let [ta, tb] = &mut trees;
                let r = &scanned.replicas;
                let (sa, sb) = parallel::join(
                    || r[0].load_hashes(ta, checksum),
                    || r[1].load_hashes(tb, checksum),
                );
                scanned.trees = trees;
                scanned.cached_sha = [sa, sb];
                log::debug!(
                    "hashes from the stat caches: {:.3}s",
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        if checksum {
            for side in 0..2 {
                let mut tree = std::mem::take(&mut scanned.trees[side]);
                scanned.hash_in(side, &mut tree, |_, _| true);
                scanned.trees[side] = tree;
            }
        }
        log::debug!(
            "read both replicas: {:.3}s ({})",
            started.elapsed().as_secs_f64(),
            crate::run::alloc_tune::resident()
        );
        Ok((scanned, base))
    }

    /// Makes the trees of a whole pass, read compact, whole, each with the hashes its
    /// stat cache knows (none with `checksum`). Nothing to do for a pass that read only
    /// some folders, or once done.
    pub(super) fn make_whole(&mut self, checksum: bool) {
        let Some([a, b]) = self.compact.take() else {
            return;
        };
        let t0 = Instant::now();
        let r = &self.replicas;
        let ((ta, sa), (tb, sb)) =
            parallel::join(|| r[0].whole(a, checksum), || r[1].whole(b, checksum));
        self.trees = [ta, tb];
        self.cached_sha = [sa, sb];
        log::debug!(
            "trees made whole, hashes from the stat caches: {:.3}s ({})",
            t0.elapsed().as_secs_f64(),
            crate::run::alloc_tune::resident()
        );
    }

    /// Under `--watch`, after a pass that read only the folders that changed: that part
    /// of both replicas, which is all a plan needs to look at (elsewhere the two are as
    /// the pass before made them). None (plan the whole) otherwise, or when the part
    /// holds a hard-linked file (links pair paths anywhere in the tree).
    pub fn part_read(&self) -> Option<[Tree; 2]> {
        let region = self.region.as_ref()?;
        let parts = self.trees.each_ref().map(|t| region.part_of(t));
        let linked = parts.iter().any(|t| t.entries.values().any(|e| e.linked));
        (!linked).then_some(parts)
    }

    /// Takes `parts` as what the planner looks at (see [`Scanned::parts`]), and says so.
    pub fn plan_only(&mut self, parts: Option<[Tree; 2]>) {
        if let Some([a, b]) = &parts {
            log::debug!(
                "planning the part read again: {} and {} entries",
                a.entries.len(),
                b.entries.len()
            );
        }
        self.parts = parts;
    }

    /// Hashes the files of replica `side` that `wanted` picks and whose hash is unknown.
    /// Hashes the files of `tree`, replica `side`'s tree taken out of [`Scanned::trees`]
    /// for the while (so that `wanted` may look at the other's), whose hash is unknown
    /// and that `wanted` picks. `wanted` is asked once about each such file, in path
    /// order, so it may walk the other tree alongside.
    pub fn hash_in(
        &mut self,
        side: usize,
        tree: &mut Tree,
        wanted: impl FnMut(&std::path::Path, &Entry) -> bool,
    ) {
        let h = self.replicas[side].hash_where(tree, wanted);
        self.note(h);
    }

    /// Whether only the part of both trees where the tool's planner acts is planned
    /// (see [`super::narrow`]): the trees are that part.
    pub fn narrowed(&self) -> bool {
        self.narrow.is_some()
    }

    /// Both replicas as read, compact, where only a part of them is planned (see
    /// [`Scanned::narrowed`]).
    pub fn as_read(&self) -> Option<&[CompactTree; 2]> {
        self.narrow.as_ref().map(|n| &n.compact)
    }

    /// The files replica `side` holds (in all, where only a part of it is planned).
    pub fn files(&self, side: usize) -> usize {
        match &self.narrow {
            Some(n) => n.files[side],
            None => self.trees[side].file_count(),
        }
    }

    fn note(&mut self, h: Hashed) {
        self.hashed_files += h.files;
        self.errors.extend(h.errors);
    }
}

/// Prints the plan as a dry run and reports it: nothing is written anywhere.
pub(super) fn dry_run<T: Tool>(
    tool: &T,
    n: u64,
    scanned: &Scanned,
    planned: Planned<'_, T::Extra>,
    scanned_at: MTime,
    started: Instant,
) -> PassOutcome {
    let mut counts = Counts::default();
    for s in &planned.steps {
        counts.merge(&apply::print_plan(&s.plan, s.direction));
    }
    for (side, v) in tool.versions().into_iter().enumerate() {
        if let Some(v) = v {
            let keep = planned.keep_first[side].lost.len();
            if keep > 0 {
                log::info!(
                    "would keep {keep} files of {} in a version before changing them",
                    scanned.replicas[side].label
                );
            }
            v.describe_dry_run();
        }
    }
    let errors = scanned.errors.len() + planned.errors.len();
    let outcome = Outcome {
        n,
        scanned_at,
        dry_run: true,
        interrupted: false,
        flushed: true,
        failed: Vec::new(),
        counts,
        hashed_files: scanned.hashed_files,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        shas: [None, None],
        versions: [None, None],
    };
    super::log_summary(tool, &planned.extra, &outcome);
    PassOutcome {
        operations: outcome.counts.operations(),
        errors,
        interrupted: false,
    }
}

/// The replicas after the steps ran, and what happened on the way.
pub struct Applied<X> {
    pub afters: [Tree; 2],
    pub extra: X,
    /// The directory SHA-256 a stat cache proved, for a replica the pass did not write.
    pub(super) proven: [Option<Digest>; 2],
    pub(super) wrote: [bool; 2],
    pub(super) roots: [Root; 2],
    pub(super) replicas: [Replica; 2],
    /// Only some folders were read (see [`Scanned::region`]).
    pub(super) rescanned: bool,
    /// Only a part was planned: `afters` are that part after the pass, and this the
    /// rest (see [`super::narrow`]).
    pub(super) narrow: Option<super::narrow::Narrow>,
    pub(super) counts: Counts,
    pub(super) failed: Vec<PathBuf>,
    pub(super) errors: Vec<Error>,
    pub(super) hashed_files: u64,
    /// Stopped before the end: by a signal, or (`halted`) at a failed action.
    pub(super) interrupted: bool,
    pub(super) halted: bool,
    /// The tool recorded what it keeps already (after each turn of a pass in turns).
    pub(super) recorded: bool,
}

/// What the steps did, once their plans are gone (see [`apply`]).
pub(super) struct Ran<X> {
    extra: X,
    /// Each step that ran: its target and source, and what it did (copies named).
    done: Vec<(usize, usize, apply::Applied)>,
    /// Entries of each replica's files whose hash its store worked out before the
    /// steps ran.
    learned: [Vec<(PathBuf, Entry)>; 2],
    wrote: [bool; 2],
    counts: Counts,
    failed: Vec<PathBuf>,
    /// The planner's errors and the steps'.
    errors: Vec<Error>,
    /// Stopped before the end: by a signal, or (`halted`) at a failed action.
    interrupted: bool,
    halted: bool,
}

/// Keeps what each replica is about to lose in its versions, then runs the steps, a
/// round at a time. The plan borrows the scanned trees, which stay as they are: what
/// the steps did is folded into them by [`settle`], once the plan is gone.
pub(super) fn apply<T: Tool>(
    tool: &T,
    scanned: &Scanned,
    planned: Planned<'_, T::Extra>,
    started: Instant,
) -> Result<Ran<T::Extra>, Refusal> {
    let (trees, replicas, roots) = (&scanned.trees, &scanned.replicas, &scanned.roots);
    let mut planned = planned;
    let mut errors = std::mem::take(&mut planned.errors);
    // No data loss: what a replica is about to lose must be in one of its versions
    // first (each store was made before its replica was read; see `run_watched`).
    let mut learned: [Vec<(PathBuf, Entry)>; 2] = Default::default();
    for (side, v) in tool.versions().into_iter().enumerate() {
        let Some(v) = v else { continue };
        let r = &replicas[side];
        let keep = &planned.keep_first[side];
        if !keep.is_empty() {
            let sha = scanned.cached_sha[side];
            let rest = scanned.narrow.as_ref().map(|n| n.rest(side, &r.root));
            learned[side] = v
                .keep(tool.home(), &r.root, &trees[side], rest, sha, keep)
                .map_err(|e| {
                    Refusal::new(format!(
                        "cannot save {} {} before changing it, so nothing was changed: {e}",
                        r.label,
                        display(&r.root)
                    ))
                })?;
        }
    }
    planned.keep_first = Default::default();
    log::debug!(
        "kept what the pass replaces: {:.3}s",
        started.elapsed().as_secs_f64()
    );
    tool.make_room(&mut planned.extra);
    let wrote = [planned.writes(0), planned.writes(1)];
    let tracker = tool.track(&planned, trees, scanned.turn > 0)?;
    // A live progress line when a person is watching (see `progress`).
    let plans = planned.steps.iter().map(|s| &s.plan).collect();
    let show = super::progress::shown(tool.settings().verbosity);
    let progress = match &scanned.line {
        Some(line) => Some(super::progress::Progress::along(plans, line)),
        None => super::progress::Progress::new(plans, show),
    };
    let both = super::progress::Both(tracker.as_deref(), progress.as_ref());
    let told = (tracker.is_some() || progress.is_some()).then_some(&both as &dyn super::Tracker);
    let fail = tool.settings().on_error == crate::run::config::OnError::Fail;
    let halted = AtomicBool::new(false);
    let (done, interrupted) = run_steps(
        &planned.steps,
        roots,
        (told, progress.as_ref(), tracker.is_some()),
        fail.then_some(&halted),
    );
    // Stopped at a failed action (--on-error fail), not by a signal: recorded as cut
    // short, but no interruption for the exit status.
    let halted = halted.load(Ordering::Relaxed);
    if halted {
        log::error!("the pass stopped at its first failed action (--on-error fail)");
    }
    // (A pass in turns clears its line once, at the end.)
    if let (Some(p), None) = (&progress, &scanned.line) {
        p.finish();
    }
    drop(progress);
    drop(tracker);
    log::debug!(
        "applied: {:.3}s ({})",
        started.elapsed().as_secs_f64(),
        crate::run::alloc_tune::resident()
    );

    let mut counts = Counts::default();
    // What --approve left out is not done: recorded as such, as a failed action is.
    let mut failed = std::mem::take(&mut planned.skipped);
    // The copies' records take their paths from the plans, which go next.
    let mut ran = Vec::new();
    for (s, d) in std::mem::take(&mut planned.steps).into_iter().zip(done) {
        let Some(mut d) = d else { continue };
        counts.merge(&d.counts);
        failed.extend(std::mem::take(&mut d.failed));
        errors.append(&mut d.errors);
        d.name_copies(s.plan);
        ran.push((s.target, s.source, d));
    }
    // --watch: what this pass wrote is no change for the watcher to react to.
    if crate::run::watch::watching() {
        for (target, _, d) in &ran {
            crate::run::watch::note_own(roots[*target].path(), d.paths_touched());
        }
    }
    Ok(Ran {
        extra: planned.extra,
        done: ran,
        learned,
        wrote,
        counts,
        failed,
        errors,
        interrupted,
        halted,
    })
}

/// Folds what the steps did into the trees: the replicas after the pass.
pub(super) fn settle<X>(scanned: Scanned, ran: Ran<X>, started: Instant) -> Applied<X> {
    let Scanned {
        mut trees,
        cached_sha,
        roots,
        mut errors,
        hashed_files,
        replicas,
        region,
        narrow,
        ..
    } = scanned;
    let Ran {
        extra,
        done,
        learned,
        wrote,
        counts,
        failed,
        errors: mut ran_errors,
        interrupted,
        halted,
    } = ran;
    errors.append(&mut ran_errors);
    for (tree, learned) in trees.iter_mut().zip(learned) {
        for (p, learned) in learned {
            if let Some(e) = tree.entries.get_mut(&p) {
                *e = learned;
            }
        }
    }
    // What a copy read from another replica was hashed on the way: those files are not
    // hashed again (a file a step copies from is not written in the same pass).
    let mut done = done;
    for (target, source, d) in &mut done {
        if source != target {
            apply::note_reads(&mut trees[*source].entries, &mut d.copied);
        }
    }
    let mut afters = trees;
    for (target, _, mut d) in done {
        let t = std::mem::take(&mut afters[target]);
        afters[target] = apply::tree_after(t, &mut d);
    }
    // A root's mtime moves with every entry made or removed at the top, and only a
    // mirror sets it back: the tree after holds each root written as it is now (else
    // its version would differ from the next pass's scan, which then made one more).
    for side in 0..2 {
        if !wrote[side] {
            continue;
        }
        if let (Some(r), Ok(Some(st))) = (afters[side].root.as_mut(), roots[side].stat_root()) {
            r.mode = st.mode;
            r.mtime = st.mtime;
        }
    }
    log::debug!(
        "trees after the pass: {:.3}s ({})",
        started.elapsed().as_secs_f64(),
        crate::run::alloc_tune::resident()
    );
    // A replica nothing was written to is the tree its stat cache was read with.
    let proven = [0, 1].map(|i| cached_sha[i].filter(|_| !wrote[i] && !interrupted));
    Applied {
        afters,
        extra,
        proven,
        wrote,
        roots,
        replicas,
        rescanned: region.is_some(),
        narrow,
        counts,
        failed,
        errors,
        hashed_files,
        interrupted,
        halted,
        recorded: false,
    }
}

/// Runs `steps`, a round at a time, the steps of a round at once;
/// stops after a round that was interrupted. One result per step (`None`: no action,
/// or not reached).
fn run_steps(
    steps: &[super::Step<'_>],
    roots: &[Root; 2],
    (tracker, progress, tool_ticks): (
        Option<&(dyn super::Tracker + '_)>,
        Option<&super::progress::Progress<'_>>,
        bool,
    ),
    halt_on_error: Option<&AtomicBool>,
) -> (Vec<Option<apply::Applied>>, bool) {
    let stop =
        || signal::stop_requested() || halt_on_error.is_some_and(|h| h.load(Ordering::Relaxed));
    let starting = |path: &std::path::Path, size: u64| {
        if let Some(p) = progress {
            p.starting(path, size);
        }
    };
    let mut out: Vec<Option<apply::Applied>> = steps.iter().map(|_| None).collect();
    let applying = AtomicBool::new(true);
    let mut interrupted = false;
    std::thread::scope(|s| {
        // Only a tool's own tracker needs ticks (a progress line redraws itself).
        if let (Some(t), true) = (tracker, tool_ticks) {
            let applying = &applying;
            s.spawn(move || {
                while applying.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    t.tick();
                }
            });
        }
        let last = steps.iter().map(|s| s.round).max().unwrap_or(0);
        for round in 0..=last {
            let now: Vec<usize> = (0..steps.len())
                .filter(|&i| {
                    let s = &steps[i];
                    s.round == round && !s.plan.actions.is_empty()
                })
                .collect();
            let results = parallel::map_owned(now, |i| {
                let step = &steps[i];
                let note = |at: u32, digest: Option<Digest>| {
                    if let Some(t) = tracker {
                        t.done(i, at, digest);
                    }
                };
                let opts = ApplyOptions {
                    src_root: roots[step.source].path(),
                    direction: step.direction,
                    meta_from_plan: false,
                    verify_hash: step.verify_hash,
                    attrs_from_source: step.attrs_from_source,
                    stop: &stop,
                    done: tracker.map(|_| &note as &apply::DoneFn<'_>),
                    open_source: None,
                    starting: progress.map(|_| &starting as &apply::StartFn<'_>),
                    halt_on_error,
                };
                let applied = match roots[step.target].try_clone() {
                    Ok(mut root) => apply::apply(&step.plan, &mut root, &opts),
                    Err(e) => {
                        log::error!("{e}");
                        apply::Applied {
                            errors: vec![e],
                            failed: step
                                .plan
                                .actions
                                .iter()
                                .map(|a| a.path.to_path_buf())
                                .collect(),
                            ..Default::default()
                        }
                    }
                };
                (i, applied)
            });
            for (i, applied) in results {
                interrupted |= applied.interrupted;
                out[i] = Some(applied);
            }
            if interrupted {
                break;
            }
        }
        applying.store(false, Ordering::Relaxed);
    });
    (out, interrupted)
}

/// Flushes what was written, hashes what is still unknown, then records everything at
/// once: the stat caches, each replica's version, and what the tool keeps; logs the
/// summary. Gives back the replicas as the pass left them if it ended whole (no error,
/// nothing failed, not cut short), every hash known.
pub(super) fn record<T: Tool>(
    tool: &T,
    n: u64,
    applied: Applied<T::Extra>,
    scanned_at: MTime,
    started: Instant,
) -> (PassOutcome, Option<super::Left>) {
    let Applied {
        mut afters,
        mut extra,
        proven,
        wrote,
        roots,
        replicas,
        rescanned,
        narrow,
        counts,
        failed,
        mut errors,
        mut hashed_files,
        interrupted,
        halted,
        recorded: tool_recorded,
    } = applied;
    let narrowed = narrow.is_some();
    // What the pass wrote is on disk before anything records it; a replica the pass
    // did not write has nothing to flush (on a shared disk, `syncfs` also waits for
    // everyone else's writes). Both replicas at once.
    let [ta, tb] = &mut afters;
    let finish = |side: usize, t: &mut Tree| {
        let flush_error = if wrote[side] {
            roots[side].sync_fs().err()
        } else {
            None
        };
        let hashed = if interrupted {
            Hashed::default()
        } else {
            replicas[side].hash_rest(t)
        };
        // (Of a part, once it is merged with the rest.)
        let sha = proven[side].or_else(|| (!narrowed).then(|| crate::hash::tree_sha256(t))?);
        (flush_error, hashed, sha)
    };
    let (fa, fb) = parallel::join(|| finish(0, ta), || finish(1, tb));
    // A part after the pass, merged with the rest as each replica is read.
    let merged = narrow
        .as_ref()
        .map(|n| [0, 1].map(|side| n.rest(side, &replicas[side].root).with(&afters[side])));
    let after = |side: usize| match &merged {
        Some(m) => After::Merged(&m[side]),
        None => After::Whole(&afters[side]),
    };
    let mut shas = [None, None];
    let mut flushed = true;
    // Every error so far is a file's (scanned, planned, applied, hashed).
    let mut file_errors = errors.len();
    for (side, (flush_error, hashed, sha)) in [fa, fb].into_iter().enumerate() {
        hashed_files += hashed.files;
        file_errors += hashed.errors.len();
        errors.extend(hashed.errors);
        shas[side] = sha;
        if let Some(e) = flush_error {
            log::error!("{e}");
            errors.push(e);
            flushed = false;
        }
    }
    // The SHA-256 of a replica planned in part, read merged (both at once).
    if let Some([ma, mb]) = &merged {
        let sha = |side: usize, m: &Merged| shas[side].or_else(|| m.sha256_at(scanned_at));
        let (a, b) = parallel::join(|| sha(0, ma), || sha(1, mb));
        shas = [a, b];
    }
    log::debug!(
        "flushed and hashed: {:.3}s ({})",
        started.elapsed().as_secs_f64(),
        crate::run::alloc_tune::resident()
    );
    let mut outcome = Outcome {
        n,
        scanned_at,
        dry_run: false,
        interrupted,
        flushed,
        failed,
        counts,
        hashed_files,
        errors: errors.len(),
        seconds: 0.0,
        shas,
        versions: [None, None],
    };
    // A pass with errors may have left a replica short of what it should hold.
    // (A file outside the part without its cached hash, found while the SHA-256 was
    // worked out, would be missing from the version: see below.)
    let hashed = narrow.as_ref().is_none_or(|n| n.hashed);
    let missed = merged.iter().flatten().any(|m| m.missed() > 0) && hashed;
    let complete = errors.is_empty() && outcome.failed.is_empty() && !missed;
    let versions = tool.versions();
    let (notes, recorded) = std::thread::scope(|s| {
        // A pass that read only what changed keeps its hashes in the trees it leaves
        // for the next one: the caches, read only when a run starts, are saved by the
        // next whole pass (one left behind only costs hashing the files changed since).
        for side in (0..2).filter(|_| !rescanned) {
            let (r, t) = (&replicas[side], after(side));
            let (proven, sha) = (proven[side], shas[side]);
            s.spawn(move || r.keep_cache(t, scanned_at, proven, sha));
        }
        let made: Vec<_> = (0..2)
            .filter_map(|side| {
                let v = versions[side].filter(|_| !interrupted)?;
                let (r, t, sha) = (&replicas[side], after(side), shas[side]);
                Some((
                    side,
                    s.spawn(move || v.record(tool.home(), &r.root, t, sha, complete)),
                ))
            })
            .collect();
        let recorded = if tool_recorded {
            Ok(())
        } else {
            tool.record(&mut extra, Some(&afters), &outcome)
        };
        let notes: Vec<(usize, Result<Option<String>, Error>)> = made
            .into_iter()
            .map(|(side, h)| (side, h.join().expect("BUG: recording does not panic")))
            .collect();
        (notes, recorded)
    });
    if let Err(e) = recorded {
        log::error!("{e}");
        errors.push(e);
    }
    // Every file outside the part had its hash in the stat cache it was read with (the
    // walk found them there): one that had not would be missing from what was recorded.
    // (An interrupted pass hashed only what it did.)
    for m in merged.iter().flatten().filter(|_| !interrupted && hashed) {
        if m.missed() > 0 {
            let e = Error::entry(
                m.root,
                format!(
                    "{} files outside the part of the pass had no hash in the stat cache; \
                     run the pass again",
                    m.missed()
                ),
            );
            log::error!("{e}");
            errors.push(e);
        }
    }
    for (side, note) in notes {
        match note {
            Ok(note) => outcome.versions[side] = note,
            Err(e) => {
                log::error!("version not saved: {e}");
                errors.push(e);
            }
        }
    }
    warn_if_full(&errors, &replicas);
    log::debug!(
        "recorded: {:.3}s ({})",
        started.elapsed().as_secs_f64(),
        crate::run::alloc_tune::resident()
    );
    outcome.errors = errors.len();
    outcome.seconds = started.elapsed().as_secs_f64();
    super::log_summary(tool, &extra, &outcome);
    crate::tree::drop_later(extra);
    // --on-error ignore: only errors that are not a file's (a flush, a record) count.
    let counted = if tool.settings().on_error == crate::run::config::OnError::Ignore {
        errors.len() - file_errors
    } else {
        errors.len()
    };
    let whole =
        !interrupted && errors.is_empty() && outcome.failed.is_empty() && flushed && !narrowed;
    let afters = if whole {
        Some(super::Left {
            trees: afters,
            at: scanned_at,
            shas: outcome.shas,
        })
    } else {
        crate::tree::drop_later(afters);
        None
    };
    (
        PassOutcome {
            operations: outcome.counts.operations(),
            errors: counted,
            interrupted: interrupted && !halted,
        },
        afters,
    )
}

/// One line that says what to do when writes failed because a disk is full (each
/// failed write has its own error line already).
fn warn_if_full(errors: &[Error], replicas: &[Replica; 2]) {
    let full: Vec<&Error> = errors.iter().filter(|e| e.is_no_space()).collect();
    if full.is_empty() {
        return;
    }
    let on = |r: &Replica| {
        full.iter()
            .any(|e| e.path().is_some_and(|p| p.starts_with(&r.root)))
    };
    let mut where_: Vec<&str> = replicas.iter().filter(|r| on(r)).map(|r| r.label).collect();
    if where_.is_empty() {
        where_.push("the store");
    }
    log::warn!(
        "{} write{} failed because the disk holding {} is full: make room there and run \
         again (what is already there is whole). With versions on, what passes replaced \
         or removed stays in the store until a version no longer needs it: `recovery list` \
         shows what each version keeps, `recovery forget` drops old ones",
        full.len(),
        if full.len() == 1 { "" } else { "s" },
        where_.join(" and ")
    );
}
