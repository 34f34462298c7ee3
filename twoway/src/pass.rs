//! One `twoway` pass: scan and hash both replicas, plan against the last sync's state,
//! refuse what the guards forbid, keep conflict copies, apply to each side, then record
//! (state, stat caches, versions of both replicas, the summary line).
//!
//! This module orders the steps and owns the refusals; the engine's `apply` and the
//! recovery store do every write.

use std::path::{Path, PathBuf};
use std::time::Instant;

use engine::apply::{self, Applied, ApplyOptions, Counts};
use engine::error::Refusal;
use engine::fs::Root;
use engine::names::{display, VERSIONS_DIR};
use engine::run::cli::Settings;
use engine::run::config::VersionMode;
use engine::run::home::{DataHome, Lock};
use engine::run::runner::PassOutcome;
use engine::run::signal;
use engine::scan::replica::{self, Replica};
use engine::scan::{self, ScanOptions};
use engine::tree::{Digest, Entry, Tree};

use recovery::store::VersionedDir;

use crate::plan::{self, Side, SyncOptions, SyncPlan};
use crate::state;

/// A two-way sync job: validated replicas and settings.
#[derive(Debug)]
pub struct Job {
    pub a: PathBuf,
    pub b: PathBuf,
    pub settings: Settings,
    pub home: DataHome,
    versions: Option<[VersionedDir; 2]>,
    state_file: PathBuf,
    _locks: Vec<Lock>,
}

fn check_replica(p: &Path, label: &str) -> Result<PathBuf, Refusal> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Refusal::new(format!(
            "{label} {} does not exist; a missing replica usually means an unmounted drive, \
             and syncing against it would look like everything was deleted. If this is a new \
             replica, create it once by hand: mkdir -p {}",
            display(p),
            display(p)
        ))),
        _ => scan::check_root(p, label),
    }
}

impl Job {
    /// Checks the replicas and everything the SPEC says to refuse before changing anything.
    pub fn new(a: &Path, b: &Path, settings: Settings, home: DataHome) -> Result<Job, Refusal> {
        let a = check_replica(a, "DIR_A")?;
        let b = check_replica(b, "DIR_B")?;
        if a == b {
            return Err(Refusal::new(format!(
                "DIR_A and DIR_B are the same directory ({})",
                display(&a)
            )));
        }
        if a.starts_with(&b) || b.starts_with(&a) {
            return Err(Refusal::new(format!(
                "replicas must not be nested: {} and {}",
                display(&a),
                display(&b)
            )));
        }
        let versions = match settings.versions {
            VersionMode::Off => None,
            mode => {
                let store_for = |r: &Path| -> Result<PathBuf, Refusal> {
                    recovery::store::resolve_store(settings.store.as_deref(), || {
                        r.join(VERSIONS_DIR)
                    })
                };
                let (sa, sb) = (store_for(&a)?, store_for(&b)?);
                for s in [&sa, &sb] {
                    if a.starts_with(s) || b.starts_with(s) {
                        return Err(Refusal::new(format!(
                            "the store {} must not contain a replica",
                            display(s)
                        )));
                    }
                }
                Some([
                    VersionedDir::new(&a, &sa, mode, Vec::new()),
                    VersionedDir::new(&b, &sb, mode, Vec::new()),
                ])
            }
        };
        let state_file = home.state_file(&a, &b);
        // Each replica is locked where it is, in the same order whichever way the pair
        // was named: `twoway B A` beside `twoway A B` is refused like a second `A B`.
        let mut locks = Vec::new();
        if !settings.dry_run {
            let (first, second) = if a <= b { (&a, &b) } else { (&b, &a) };
            for r in [first, second] {
                locks.push(engine::run::home::lock_dir(r, &home)?);
            }
        }
        Ok(Job {
            a,
            b,
            settings,
            home,
            versions,
            state_file,
            _locks: locks,
        })
    }

    fn root(&self, side: Side) -> &Path {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    fn scan_options(&self) -> ScanOptions {
        let mut skip = Vec::new();
        if let Some(vs) = &self.versions {
            skip.extend(vs.iter().map(|v| v.store().to_path_buf()));
        }
        ScanOptions {
            excludes: self.settings.excludes.clone(),
            skip,
            touched_since: None,
        }
    }

    /// Runs one pass.
    pub fn run_pass(&self, n: u64) -> Result<PassOutcome, Refusal> {
        let started = Instant::now();
        check_replica(&self.a, "DIR_A")?;
        check_replica(&self.b, "DIR_B")?;
        let dry = self.settings.dry_run;
        let scanned_at = engine::tree::MTime::now();
        let opts = self.scan_options();
        let reps = [
            Replica::new(&self.a, "DIR_A", &self.home),
            Replica::new(&self.b, "DIR_B", &self.home),
        ];
        let mut errors: Vec<engine::Error> = Vec::new();
        let mut hashed_files = 0u64;
        // The sync state loads while both replicas are scanned.
        let (read, base) = std::thread::scope(|s| {
            let base = s.spawn(|| state::load(&self.state_file, &self.a, &self.b));
            let read =
                replica::read_both((&reps[0], &opts), (&reps[1], &opts), self.settings.checksum);
            (
                read,
                base.join().expect("BUG: loading the state does not panic"),
            )
        });
        let replica::ReadBoth {
            trees: (mut ta, mut tb),
            cached_sha,
        } = read?;
        let base = base.map_err(|e| {
            Refusal::new(format!(
                "{e}; nothing was changed (a sync state that cannot be read is not taken for a first sync, which would undo every deletion since the last one)"
            ))
        })?;
        log::debug!(
            "read both replicas and the sync state: {:.3}s",
            started.elapsed().as_secs_f64()
        );
        let first = base.is_none();
        let base = base.unwrap_or_default();
        // The planner compares contents only where a file meets a file of the same size
        // (on the other side or in the state); only those need a hash now. Every other
        // file is hashed while it is copied, or after the pass.
        let needed = if self.settings.checksum {
            None
        } else {
            Some(files_to_compare(&ta, &tb, &base))
        };
        for (i, (r, t)) in reps.iter().zip([&mut ta, &mut tb]).enumerate() {
            errors.append(&mut t.errors);
            let h = match &needed {
                None => r.hash_rest(t),
                Some(n) => r.hash_where(t, |p| {
                    n[i].binary_search_by(|q| engine::tree::path_order(q, p))
                        .is_ok()
                }),
            };
            hashed_files += h.files;
            errors.extend(h.errors);
        }
        log::debug!(
            "hashed what the plan compares: {:.3}s",
            started.elapsed().as_secs_f64()
        );
        let traits = [&self.a, &self.b].map(|r| {
            Root::open(r)
                .map(|root| root.fs_traits())
                .unwrap_or_default()
        });
        let sync_options = SyncOptions {
            keep_owners: engine::fs::keeps_owners(),
            policy: self.settings.conflict,
            modify_window: self.settings.modify_window.unwrap_or(
                if traits.iter().any(|t| t.coarse_times) {
                    2
                } else {
                    0
                },
            ),
        };
        let folds = traits.map(|t| t.folds_case);
        // A first sync plans an action per file: the state it will record waits on
        // disk meanwhile, beside the state file, and is read again to be recorded (a
        // dry run records nothing, and writes nothing there).
        let state_dir = self.state_file.parent().unwrap_or(Path::new("."));
        let aside = state::Aside {
            dir: state_dir,
            a: &self.a,
            b: &self.b,
        };
        let (mut plan, collided) = plan::plan_sync_folding(
            base,
            (&mut ta, &mut tb),
            &sync_options,
            folds,
            (first && !dry).then_some(&aside),
        );
        for (side, p, with) in collided {
            let e = engine::Error::entry(
                p,
                format!(
                    "name collides with {} in {}, whose filesystem ignores case; left alone on both sides",
                    display(&with),
                    display(self.root(side))
                ),
            );
            log::error!("{e}");
            errors.push(e);
        }
        log::debug!("planned: {:.3}s", started.elapsed().as_secs_f64());
        // The planner took the state and dropped it: it is not needed again unless an
        // action fails (those paths keep what it said), and is read again then, from the
        // file this pass has not replaced yet, instead of being held through the apply
        // and the record step.
        self.check_max_delete(&plan, &ta, &tb)?;
        for (p, side) in &plan.undone_deletions {
            log::warn!(
                "{} was deleted in {} but changed in {} since the last sync: the change wins, so the deletion is undone",
                display(p),
                side.name(),
                side.other().name()
            );
        }
        for c in &plan.conflicts {
            log::warn!(
                "conflict: {} changed on both sides; kept {}'s version there, the other is kept as {}",
                display(&c.path),
                c.winner.name(),
                display(&c.copy)
            );
        }

        if dry {
            let mut counts = Counts::default();
            for (side, dir) in [(Side::A, "B -> A"), (Side::B, "A -> B")] {
                let (keep, to) = plan.plan_for(side);
                counts.merge(&apply::print_plan(keep, dir));
                counts.merge(&apply::print_plan(to, dir));
            }
            if let Some(vs) = &self.versions {
                vs.iter().for_each(VersionedDir::describe_dry_run);
            }
            log::info!(
                "pass {n} (dry run){}: would {} · {} conflicts · {} errors · {:.2}s",
                if first { ", first sync" } else { "" },
                counts.summary(),
                plan.conflicts.len(),
                errors.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok(PassOutcome {
                operations: counts.operations(),
                errors: errors.len(),
                interrupted: false,
            });
        }

        // No data loss: what a side is about to lose must be in one of its versions.
        let mut trees = [ta, tb];
        if let Some(vs) = &self.versions {
            for (i, side) in [Side::A, Side::B].into_iter().enumerate() {
                let (_, to) = plan.plan_for(side);
                let displaced: Vec<(PathBuf, Option<Digest>)> = to
                    .displaced_files()
                    .map(|(p, e)| (p.to_path_buf(), e.hash))
                    .collect();
                vs[i]
                    .ensure_store()
                    .map_err(|e| Refusal::new(format!("cannot create the store: {e}")))?;
                if !displaced.is_empty() {
                    vs[i]
                        .preserve_before_change(
                            &self.home,
                            self.root(side),
                            &mut trees[i],
                            &displaced,
                        )
                        .map_err(|e| {
                            Refusal::new(format!(
                                "cannot save {} before changing it, so nothing was changed: {e}",
                                display(self.root(side))
                            ))
                        })?;
                }
            }
        }

        log::debug!(
            "checked what each side loses is kept: {:.3}s",
            started.elapsed().as_secs_f64()
        );
        // A first sync records what it has made equal as it goes: killed, it leaves a
        // state the next pass can trust for those paths.
        let progress = if first {
            let equal = plan::already_equal(&trees[0], &trees[1], &sync_options);
            Some(
                crate::progress::Progress::start(
                    &self.state_file,
                    (&self.a, &self.b),
                    equal,
                    [&plan.keep_a, &plan.to_a, &plan.keep_b, &plan.to_b],
                )
                .map_err(|e| {
                    Refusal::new(format!(
                        "cannot write the sync state, so nothing was changed: {e}"
                    ))
                })?,
            )
        } else {
            None
        };
        let applying = std::sync::atomic::AtomicBool::new(true);
        let (mut applied, interrupted) = std::thread::scope(|s| {
            if let Some(p) = &progress {
                s.spawn(|| {
                    while applying.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        p.tick();
                    }
                });
            }
            let applied = self.apply(&plan, progress.as_ref());
            applying.store(false, std::sync::atomic::Ordering::Relaxed);
            applied
        })?;
        drop(progress);
        log::debug!("applied: {:.3}s", started.elapsed().as_secs_f64());
        let mut counts = Counts::default();
        let mut failed: Vec<PathBuf> = Vec::new();
        for a in applied.iter().flatten().flatten() {
            counts.merge(&a.counts);
            failed.extend(a.failed.iter().cloned());
            errors.extend(a.errors.iter().map(|e| engine::Error::Other(e.to_string())));
        }
        // A side where nothing was done is the tree its stat cache was read with: the
        // directory SHA-256 the cache proved still holds.
        let idle: Vec<bool> = [Side::A, Side::B]
            .into_iter()
            .map(|side| {
                let (keep, to) = plan.plan_for(side);
                keep.actions.is_empty() && to.actions.is_empty()
            })
            .collect();
        let proven: Vec<Option<Digest>> = (0..2)
            .map(|i| cached_sha[i].filter(|_| idle[i] && !interrupted))
            .collect();
        // The actions hold a copy of every entry they act on: gone before the trees
        // after the pass are built, once the copies' records have taken their paths.
        let [a_steps, b_steps] = &mut applied;
        for (applied, p) in a_steps.iter_mut().chain(b_steps.iter_mut()).zip([
            &mut plan.keep_a,
            &mut plan.to_a,
            &mut plan.keep_b,
            &mut plan.to_b,
        ]) {
            if let Some(applied) = applied {
                applied.name_copies(p);
            }
            *p = engine::plan::mirror::Plan::default();
        }
        // What a side's copies read from the other side was hashed on the way: those
        // files of the other side are not hashed again. (A file a side copies from is
        // not written on that side in the same pass.)
        for i in 0..2 {
            for a in applied[i].iter_mut().flatten() {
                apply::note_reads(&mut trees[1 - i].entries, &mut a.copied);
            }
        }
        let [ta, tb] = trees;
        let mut afters = Vec::new();
        for (i, t) in [ta, tb].into_iter().enumerate() {
            let mut t = t;
            for a in applied[i].iter_mut().flatten() {
                t = apply::tree_after(t, a);
            }
            afters.push(t);
        }
        log::debug!(
            "trees after the pass: {:.3}s",
            started.elapsed().as_secs_f64()
        );
        // What the actions did is folded in: gone before the record step.
        drop(applied);
        // Both replicas at once: flush, hash what is still unknown, directory SHA-256.
        let finished: Vec<(
            engine::scan::cache::Hashed,
            Option<Digest>,
            Option<engine::Error>,
        )> = std::thread::scope(|s| {
            let workers: Vec<_> = reps
                .iter()
                .zip(afters.iter_mut())
                .zip(proven.iter().zip(&idle))
                .map(|((r, t), (proven, idle))| {
                    s.spawn(move || {
                        // A side nothing was written to has nothing to flush.
                        let flush_error = if *idle {
                            None
                        } else {
                            Root::open(&r.root).and_then(|root| root.sync_fs()).err()
                        };
                        let h = if interrupted {
                            engine::scan::cache::Hashed::default()
                        } else {
                            r.hash_rest(t)
                        };
                        (
                            h,
                            proven.or_else(|| engine::hash::tree_sha256(t)),
                            flush_error,
                        )
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("BUG: record workers do not panic"))
                .collect()
        });
        let mut shas = [None, None];
        // A side whose writes may not be on disk: the state must not say they are.
        let mut flushed = true;
        for (i, (h, sha, flush_error)) in finished.into_iter().enumerate() {
            hashed_files += h.files;
            errors.extend(h.errors);
            shas[i] = sha;
            if let Some(e) = flush_error {
                log::error!("{e}; the sync state is not updated");
                errors.push(e);
                flushed = false;
            }
        }
        log::debug!(
            "flushed and hashed: {:.3}s",
            started.elapsed().as_secs_f64()
        );

        // Then everything that is recorded, at once: they share nothing but the trees
        // they read. The stat caches; each replica's version; and the state: what both
        // sides now agree on, where a path whose action failed keeps its old state so
        // the next pass looks at it again (an interrupted pass keeps the old state).
        let mut notes = String::new();
        let trees = &afters;
        // A pass with errors may have left either side short of what it should hold.
        let complete = errors.is_empty() && failed.is_empty();
        std::thread::scope(|s| {
            for (i, r) in reps.iter().enumerate() {
                let (tree, proven, sha) = (&trees[i], proven[i], shas[i]);
                s.spawn(move || r.keep_cache(tree, scanned_at, proven, sha));
            }
            let versions: Vec<_> = match (&self.versions, interrupted) {
                (Some(vs), false) => vs
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let (home, tree, sha) = (&self.home, &trees[i], shas[i]);
                        s.spawn(move || v.record_pass(home, v.dir(), tree, sha, complete))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            if !interrupted && plan.state_unchanged && !first {
                log::debug!("sync state unchanged (nothing changed since the last sync)");
            } else if !interrupted && flushed {
                // (Unchanged and first: both replicas are empty, and so is the state.)
                let planned = match plan.state_aside.take() {
                    Some(s) => state::unspill(s, &self.a, &self.b).map_err(|e| {
                        engine::Error::Other(format!("the planned sync state set aside: {e}"))
                    }),
                    None => Ok(std::mem::take(&mut plan.state)),
                };
                let saved = planned.and_then(|mut planned| {
                    fill_state_hashes(&mut planned, trees);
                    let new_state = if failed.is_empty() {
                        planned
                    } else {
                        let base = state::load(&self.state_file, &self.a, &self.b)?;
                        merge_state(&base.unwrap_or_default(), planned, &failed)
                    };
                    state::save(&self.state_file, &self.a, &self.b, &new_state)
                });
                match saved {
                    Ok(true) => {}
                    Ok(false) => log::debug!("sync state unchanged"),
                    Err(e) => {
                        log::error!("sync state not saved: {e}");
                        errors.push(e);
                    }
                }
            }
            for (i, v) in versions.into_iter().enumerate() {
                match v.join().expect("BUG: version workers do not panic") {
                    Ok(Some(made)) => {
                        notes.push_str(&format!(" · new version of {} {made}", ["A", "B"][i]))
                    }
                    Ok(None) => {}
                    Err(e) => {
                        log::error!("version not saved: {e}");
                        errors.push(e);
                    }
                }
            }
        });
        log::debug!(
            "recorded caches, state and versions: {:.3}s",
            started.elapsed().as_secs_f64()
        );
        log::info!(
            "pass {n}{}{}: {} · {} bytes copied · {} conflicts · hashed {hashed_files} files · {} errors · {:.2}s · A sha256 {} · B sha256 {}{notes}",
            if first { " (first sync)" } else { "" },
            if interrupted { " (interrupted)" } else { "" },
            counts.summary(),
            counts.bytes,
            plan.conflicts.len(),
            errors.len(),
            started.elapsed().as_secs_f64(),
            sha_text(shas[0]),
            sha_text(shas[1]),
        );
        engine::tree::drop_later((afters, plan));
        Ok(PassOutcome {
            operations: counts.operations(),
            errors: errors.len(),
            interrupted,
        })
    }

    /// Refuses a pass that would delete more than `--max-delete` percent of a replica.
    fn check_max_delete(&self, plan: &SyncPlan, ta: &Tree, tb: &Tree) -> Result<(), Refusal> {
        for (label, deletes, tree) in [("DIR_A", plan.deletes_a, ta), ("DIR_B", plan.deletes_b, tb)]
        {
            self.settings
                .check_max_delete(label, deletes, tree.file_count(), "")?;
        }
        Ok(())
    }

    /// Conflict copies first (on each loser's own side), then each side's actions. The
    /// two sides are worked on at once: each path's final state comes from one side, so
    /// what one side's actions write, the other side's never read.
    fn apply(
        &self,
        plan: &SyncPlan,
        progress: Option<&crate::progress::Progress<'_>>,
    ) -> Result<(Steps, bool), Refusal> {
        let stop = || signal::stop_requested();
        let [mut root_a, mut root_b] = [
            Root::open(&self.a).map_err(Refusal::from)?,
            Root::open(&self.b).map_err(Refusal::from)?,
        ];
        let mut out: Steps = Default::default();
        for (n, keep_step) in [true, false].into_iter().enumerate() {
            let step = |side: Side, root: &mut Root| -> Option<Applied> {
                let (keep, to) = plan.plan_for(side);
                let (p, src_root, direction) = if keep_step {
                    (
                        keep,
                        self.root(side),
                        if side == Side::A { "A" } else { "B" },
                    )
                } else {
                    (
                        to,
                        self.root(side.other()),
                        if side == Side::A { "B -> A" } else { "A -> B" },
                    )
                };
                if p.actions.is_empty() {
                    return None;
                }
                let number = crate::progress::Progress::plan_number(side == Side::B, keep_step);
                let note = |at: u32, digest: Option<Digest>| {
                    if let Some(progress) = progress {
                        progress.done(number, at, digest);
                    }
                };
                Some(apply::apply(
                    p,
                    root,
                    &ApplyOptions {
                        src_root,
                        direction,
                        meta_from_plan: false,
                        verify_hash: true,
                        attrs_from_source: false,
                        stop: &stop,
                        done: progress.map(|_| &note as &engine::apply::DoneFn<'_>),
                    },
                ))
            };
            let (on_a, on_b) = std::thread::scope(|s| {
                let on_b = s.spawn(|| step(Side::B, &mut root_b));
                let on_a = step(Side::A, &mut root_a);
                (on_a, on_b.join().expect("BUG: apply does not panic"))
            });
            let mut interrupted = false;
            for (i, applied) in [on_a, on_b].into_iter().enumerate() {
                interrupted |= applied.as_ref().is_some_and(|a| a.interrupted);
                out[i][n] = applied;
            }
            if interrupted {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }
}

/// What each side's steps did: `[side][0]` its conflict copies (`keep_*`), `[side][1]`
/// its other actions (`to_*`); `None` for a step with no action, or not reached.
type Steps = [[Option<Applied>; 2]; 2];

/// The planned state, except that failed paths (and everything under them) keep what the
/// base said.
fn merge_state(
    base: &engine::tree::Entries,
    mut planned: engine::tree::Entries,
    failed: &[PathBuf],
) -> engine::tree::Entries {
    let kept = failed
        .iter()
        .flat_map(|f| base.at_and_under(f))
        .map(|(p, e)| (p.to_path_buf(), e.clone()))
        .collect();
    planned.merge(failed, kept);
    planned
}

/// For each side, the files (in path order) whose content the planner compares: a file
/// with a file of the same size at its path on the other side or in the state, and no
/// hash from the stat cache.
fn files_to_compare(a: &Tree, b: &Tree, base: &engine::tree::Entries) -> [Vec<PathBuf>; 2] {
    fn file(e: Option<&Entry>) -> Option<&Entry> {
        e.filter(|e| e.kind == engine::tree::Kind::File)
    }
    let mut out = [Vec::new(), Vec::new()];
    for (p, x, y, s) in engine::tree::zip3_paths(&a.entries, &b.entries, base) {
        let (x, y, s) = (file(x), file(y), file(s));
        let meets = |e: &Entry, others: [Option<&Entry>; 2]| {
            e.hash.is_none() && others.iter().flatten().any(|o| o.size == e.size)
        };
        if x.is_some_and(|x| meets(x, [y, s])) {
            out[0].push(p.to_path_buf());
        }
        if y.is_some_and(|y| meets(y, [x, s])) {
            out[1].push(p.to_path_buf());
        }
    }
    out
}

/// The planned state takes its files' hashes from the replicas after the pass (a file
/// synced without being compared was hashed by its copy or after the pass). A hash is
/// taken only from an entry with the state's size and mtime.
fn fill_state_hashes(state: &mut engine::tree::Entries, afters: &[Tree]) {
    for t in afters {
        let zipped = engine::tree::zip_sorted(state.iter_mut(), t.entries.iter());
        for (_, s, e) in zipped {
            if let (Some(s), Some(e)) = (s, e) {
                if s.kind == engine::tree::Kind::File
                    && s.hash.is_none()
                    && e.kind == s.kind
                    && e.size == s.size
                    && e.mtime == s.mtime
                {
                    s.hash = e.hash;
                }
            }
        }
    }
}

fn sha_text(d: Option<Digest>) -> String {
    d.map(|d| d.to_hex())
        .unwrap_or_else(|| "incomplete".to_string())
}
