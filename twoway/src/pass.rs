//! `twoway` as a tool of the engine's pass pipeline ([`engine::pass`]): its replicas,
//! the last sync's state it plans against, its planner (reconciliation, conflict copies
//! first), its refusals, the first sync's progress, the new sync state it records, and
//! its summary words.
//!
//! It writes nothing into a replica: the pipeline's apply and the recovery store do.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use engine::error::Refusal;
use engine::names::{display, VERSIONS_DIR};
use engine::pass::quiet::Quiet;
use engine::pass::{Outcome, Planned, Scanned, Step, Tool, Tracker, Versions};
use engine::run::cli::Settings;
use engine::run::config::VersionMode;
use engine::run::home::{DataHome, Lock};
use engine::run::runner::PassOutcome;
use engine::scan::replica::Replica;
use engine::scan::{self, ScanOptions};
use engine::tree::encoding::EntryRef;
use engine::tree::{Along, Digest, Entry, Tree};

use recovery::store::VersionedDir;

use crate::packed::{Packed, StateChange};
use crate::plan::{self, Side, SyncOptions, SyncPlan};
use crate::progress::Progress;
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
    replicas: [Replica; 2],
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
        home.check_mounted(&a, "DIR_A", !settings.dry_run)?;
        home.check_mounted(&b, "DIR_B", !settings.dry_run)?;
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
                let policy = || (settings.retention(), settings.tag.clone());
                // Each replica's store also receives what the other's keeps, so that
                // either can restore its versions alone.
                Some([
                    VersionedDir::new(&a, &sa, mode, Vec::new())
                        .with_policy(policy().0, policy().1)
                        .with_twin(&b, &sb),
                    VersionedDir::new(&b, &sb, mode, Vec::new())
                        .with_policy(policy().0, policy().1)
                        .with_twin(&a, &sa),
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
        let replicas = [
            Replica::new(&a, "DIR_A", &home),
            Replica::new(&b, "DIR_B", &home),
        ];
        Ok(Job {
            replicas,
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

    /// Runs one pass.
    pub fn run_pass(&self, n: u64) -> Result<PassOutcome, Refusal> {
        engine::pass::run(self, n)
    }

    /// The folder of the sync state (where a first sync sets its planned state aside).
    fn state_dir(&self) -> &Path {
        self.state_file.parent().unwrap_or(Path::new("."))
    }

    /// How the planner compares, on replicas whose filesystems are as `fs` says.
    fn sync_options(&self, fs: [engine::fs::FsTraits; 2]) -> SyncOptions {
        SyncOptions {
            keep_owners: engine::fs::keeps_owners(),
            policy: self.settings.conflict,
            modify_window: self.settings.modify_window.unwrap_or(
                if fs.iter().any(|t| t.coarse_times) {
                    2
                } else {
                    0
                },
            ),
        }
    }

    /// Refuses a pass that would delete more than `--max-delete` percent of a replica.
    /// (`files`: how many each replica holds, in all.)
    fn check_max_delete(&self, plan: &SyncPlan, files: [usize; 2]) -> Result<(), Refusal> {
        for (label, deletes, files) in [
            ("DIR_A", plan.deletes_a, files[0]),
            ("DIR_B", plan.deletes_b, files[1]),
        ] {
            self.settings.check_max_delete(label, deletes, files, "")?;
        }
        Ok(())
    }
}

/// What a two-way pass records besides the replicas, and says in its summary.
pub struct Sync {
    /// The state to record if every action succeeds.
    state: StateToRecord,
    opts: SyncOptions,
    first: bool,
    conflicts: usize,
}

enum StateToRecord {
    /// Nothing changed since the last sync: the state on disk stays.
    Unchanged,
    Held(StateChange),
    /// The records put set aside on disk while the pass runs (a first sync of a large
    /// tree puts a record per path).
    Aside(state::Spilled, Vec<PathBuf>),
    /// Taken by the record step.
    Taken,
}

/// The fewest paths of a first sync's state that is set aside on disk while the pass
/// runs rather than held: a first sync holds an action per file meanwhile.
const SET_ASIDE_MIN: usize = 4096;

impl Tool for Job {
    type Base = Option<state::Stored>;
    type Extra = Sync;

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn home(&self) -> &DataHome {
        &self.home
    }

    fn replicas(&self) -> &[Replica; 2] {
        &self.replicas
    }

    fn scan_options(&self) -> [ScanOptions; 2] {
        let stores: Vec<&Path> = self.versions.iter().flatten().map(|v| v.store()).collect();
        let skip = engine::scan::left_out(&stores, &[&self.a, &self.b]);
        let opts = ScanOptions {
            filter: self.settings.filter.clone(),
            skip,
            touched_since: None,
        };
        [opts.clone(), opts]
    }

    fn versions(&self) -> [Option<&dyn Versions>; 2] {
        match &self.versions {
            Some([va, vb]) => [Some(va as &dyn Versions), Some(vb as &dyn Versions)],
            None => [None, None],
        }
    }

    fn check_roots(&self) -> Result<(), Refusal> {
        check_replica(&self.a, "DIR_A")?;
        check_replica(&self.b, "DIR_B")?;
        let remember = !self.settings.dry_run;
        self.home.check_mounted(&self.a, "DIR_A", remember)?;
        self.home.check_mounted(&self.b, "DIR_B", remember)?;
        Ok(())
    }

    fn load_base(&self) -> Result<Option<state::Stored>, Refusal> {
        state::open(&self.state_file, &self.a, &self.b).map_err(unreadable_state)
    }

    fn prepare(&self, scanned: &mut Scanned, base: &Option<state::Stored>) {
        // The state whole, read where it is needed (see `state::Stored`). One that
        // cannot be read is taken for none here: the plan then refuses the pass.
        let empty = Packed::default();
        // Only the part with something to do is planned: its records.
        let narrowed = scanned.narrowed();
        let base_given = || {
            let s = base.as_ref()?;
            if narrowed {
                s.part()
            } else {
                s.held().ok().flatten()
            }
        };
        let whole = || base_given().unwrap_or(&empty);
        // The planner compares contents only where a file meets a file of the same size
        // (on the other side or in the state); only those need a hash now (every file,
        // with `--checksum`: the pipeline hashed them). Every other file is hashed
        // while it is copied, or after the pass.
        if !self.settings.checksum {
            hash_compared(scanned, whole);
        }
        // On a filesystem that ignores case, names that would collide there are left
        // alone on both sides.
        let opts = self.sync_options(scanned.fs);
        let folds = scanned.fs.map(|t| t.folds_case);
        let collided = if folds == [false, false] {
            Vec::new()
        } else {
            crate::fold::leave_collisions(whole(), &mut scanned.trees, &opts, folds)
        };
        for (side, p, with) in collided {
            let e = engine::Error::entry(
                p,
                format!(
                    "name collides with {} in {}, whose filesystem ignores case; left alone on both sides",
                    display(&with),
                    display(self.root(side))
                ),
            );
            log::error!(target: engine::error::FILE_ERROR, "{e}");
            scanned.errors.push(e);
        }
        // Under --watch, the part read again is all the planner looks at: outside it
        // both replicas and the state are as the pass before left them. Not where names
        // fold case (collisions are looked for in the whole), nor where a folder the
        // state knows is gone or no longer a folder on either side: the state's records
        // under it are outside the part, and must go.
        if folds == [false, false] {
            let parts =
                scanned
                    .part_read()
                    .zip(scanned.region.as_ref())
                    .and_then(|(parts, region)| {
                        let base = base_given()?;
                        plan::folders_stay(&parts, base, region).then_some(parts)
                    });
            scanned.plan_only(parts);
        }
    }

    fn plan<'s>(
        &self,
        scanned: &'s Scanned,
        mut base: Option<state::Stored>,
    ) -> Result<Planned<'s, Sync>, Refusal> {
        let opts = self.sync_options(scanned.fs);
        // The part read again under --watch (see `prepare`), with the state's part.
        let [a, b] = scanned.parts.as_ref().unwrap_or(&scanned.trees);
        // Both replicas as the state records them: nothing to plan, and the state is
        // read as it is compared, never held.
        let narrowed = scanned.narrowed();
        let unchanged = scanned.parts.is_none()
            && !narrowed
            && base
                .as_mut()
                .is_some_and(|s| s.unchanged(a, b, opts.keep_owners));
        let (plan, first) = if unchanged {
            (SyncPlan::unchanged(), false)
        } else if narrowed {
            // The part with something to do, with the state's records of it.
            let part = base
                .as_mut()
                .and_then(state::Stored::take_part)
                .ok_or_else(|| {
                    Refusal::new("BUG: a pass planned in part has the state's records of it")
                })?;
            // A conflict's copy takes a name that no path has, in the part or not.
            let outside = |p: &Path| {
                scanned
                    .as_read()
                    .is_some_and(|t| t.iter().any(|t| t.entries.get(p).is_some()))
            };
            (plan::plan_sync_part(part, a, b, &opts, &outside), false)
        } else {
            let base = base
                .map(state::Stored::into_held)
                .transpose()
                .map_err(unreadable_state)?
                .flatten();
            let first = base.is_none();
            let base = match (&scanned.parts, &scanned.region) {
                (Some(_), Some(region)) => base.map(|s| s.part(region)),
                _ => base,
            };
            (
                plan::plan_sync(base.unwrap_or_default(), a, b, &opts),
                first,
            )
        };
        self.check_max_delete(&plan, [scanned.files(0), scanned.files(1)])?;
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
                target: engine::run::logging::CONFLICT,
                "conflict: {} changed on both sides; kept {}'s version there, the other is kept as {}",
                display(&c.path),
                c.winner.name(),
                display(&c.copy)
            );
            if engine::run::events::enabled() {
                engine::run::events::conflict(&c.path, c.winner.name(), &c.copy);
            }
        }
        let SyncPlan {
            keep_a,
            keep_b,
            to_a,
            to_b,
            conflicts,
            state,
            state_unchanged,
            ..
        } = plan;
        // In the order the first sync's progress numbers them.
        let step = |plan, target, source, round, direction| Step {
            plan,
            target,
            source,
            round,
            direction,
            verify_hash: true,
            attrs_from_source: false,
        };
        let steps = vec![
            // Conflict copies first, each on the loser's own side.
            step(keep_a, 0, 0, 0, "A"),
            step(to_a, 0, 1, 1, "B -> A"),
            step(keep_b, 1, 1, 0, "B"),
            step(to_b, 1, 0, 1, "A -> B"),
        ];
        let sync = Sync {
            state: if state_unchanged && !first {
                StateToRecord::Unchanged
            } else {
                StateToRecord::Held(state)
            },
            opts,
            first,
            conflicts: conflicts.len(),
        };
        Ok(Planned::new(steps, sync))
    }

    fn make_room(&self, sync: &mut Sync) {
        let StateToRecord::Held(change) = &mut sync.state else {
            return;
        };
        if change.put.len() < SET_ASIDE_MIN {
            return;
        }
        let aside = state::Aside {
            dir: self.state_dir(),
            a: &self.a,
            b: &self.b,
        };
        match aside.put(&change.put) {
            Ok(spilled) => {
                let gone = std::mem::take(&mut change.gone);
                sync.state = StateToRecord::Aside(spilled, gone);
            }
            Err(e) => log::debug!("planned sync state kept in memory: {e}"),
        }
    }

    fn track<'p>(
        &'p self,
        planned: &'p Planned<Sync>,
        trees: &[Tree; 2],
        later_turn: bool,
    ) -> Result<Option<Box<dyn Tracker + 'p>>, Refusal> {
        // A first sync records what it has made equal as it goes: killed, it leaves a
        // state the next pass can trust for those paths.
        if !planned.extra.first {
            return Ok(None);
        }
        // Walked twice (counted, then written), never held: a first sync of two copies
        // alike names every path of the tree.
        let equal = || plan::already_equal(&trees[0], &trees[1], &planned.extra.opts);
        let plans = [0, 1, 2, 3].map(|i| &planned.steps[i].plan);
        let progress = Progress::start(
            &self.state_file,
            (&self.a, &self.b),
            (!later_turn).then_some(equal),
            plans,
        )
        .map_err(|e| {
            Refusal::new(format!(
                "cannot write the sync state, so nothing was changed: {e}"
            ))
        })?;
        Ok(Some(Box::new(progress)))
    }

    /// Both replicas compared with the state a window at a time, the state read from
    /// its file as they are (or as held): nothing to do, and the state stays; or the
    /// paths where the planner acts told to `q`, and the state's records of that part
    /// kept for the plan (see [`state::Stored::narrow_in_windows`]). Not asked where a
    /// filesystem folds case (names that collide there are left alone, which the whole
    /// pass works out), nor for a first sync.
    fn quiet(&self, q: &mut Quiet<'_>, base: &mut Option<state::Stored>) -> Option<Sync> {
        let fs = q.fs();
        if fs.iter().any(|t| t.folds_case) {
            return None;
        }
        let opts = self.sync_options(fs);
        let stored = base.as_mut()?;
        stored.narrow_in_windows(q, &opts).then_some(Sync {
            state: StateToRecord::Unchanged,
            opts,
            first: false,
            conflicts: 0,
        })
    }

    /// The planner decides a path from what both replicas and the state hold at it,
    /// above it and under it; where it would depend on paths anywhere (a conflict's
    /// copy, a folder on one side only, hard links), `quiet` gives up first.
    fn plans_parts(&self) -> bool {
        true
    }

    /// A first sync (no state) into an empty replica only copies the other into it;
    /// each turn's state is recorded after it, and a first sync's progress (see
    /// `progress`) adds to what the turns before recorded.
    fn fills(&self) -> [bool; 2] {
        let first = matches!(
            std::fs::symlink_metadata(&self.state_file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound
        );
        [first, first]
    }

    /// The new state: what both sides now agree on, where a path whose action failed
    /// keeps its old state so the next pass looks at it again. An interrupted pass, or
    /// one whose writes may not be on disk, keeps the old state.
    fn record(
        &self,
        sync: &mut Sync,
        afters: Option<&[Tree; 2]>,
        outcome: &Outcome,
    ) -> Result<(), engine::Error> {
        if outcome.interrupted {
            return Ok(());
        }
        if !outcome.flushed {
            log::error!("the sync state is not updated: what the pass wrote may not be on disk");
            return Ok(());
        }
        let change = match std::mem::replace(&mut sync.state, StateToRecord::Taken) {
            StateToRecord::Unchanged => {
                log::debug!("sync state unchanged (nothing changed since the last sync)");
                return Ok(());
            }
            StateToRecord::Held(change) => change,
            StateToRecord::Aside(put, gone) => {
                let put = state::unspill(put, &self.a, &self.b).map_err(|e| {
                    engine::Error::io(
                        "read the planned sync state set aside in",
                        self.state_dir(),
                        e,
                    )
                })?;
                StateChange {
                    put,
                    gone,
                    new_paths: None,
                }
            }
            StateToRecord::Taken => unreachable!("BUG: the state is recorded once"),
        };
        // (Only the part planned, after a pass planned in part: the state's change
        // lies in it.)
        let afters = afters.expect("BUG: a pass that changes the state holds its trees");
        let failed: BTreeSet<PathBuf> = outcome.failed.iter().cloned().collect();
        // (An error names the state file and what failed.)
        let hashes = learned_hashes(afters);
        if !state::save_changed(&self.state_file, &self.a, &self.b, &change, &failed, hashes)? {
            log::debug!("sync state unchanged");
        }
        Ok(())
    }

    fn json_counts(&self, sync: &Sync) -> Vec<(&'static str, engine::run::events::Value)> {
        vec![
            ("conflicts", sync.conflicts.into()),
            ("first_sync", sync.first.into()),
        ]
    }

    /// `A` and `B`, as its conflict events (`kept`) and actions (`direction`) say.
    fn side_names(&self) -> [&'static str; 2] {
        ["A", "B"]
    }

    fn notes(&self, sync: &Sync, o: &Outcome) -> Vec<String> {
        let mut notes = Vec::new();
        if sync.first {
            notes.push("first sync".to_string());
        }
        match sync.conflicts {
            0 => {}
            1 => notes.push("1 conflict".to_string()),
            n => notes.push(format!("{n} conflicts")),
        }
        let made: Vec<String> = ["A", "B"]
            .iter()
            .enumerate()
            .filter_map(|(side, l)| Some(format!("{l} {}", engine::pass::version_id(o, side)?)))
            .collect();
        if !made.is_empty() {
            notes.push(format!("new version {}", made.join(", ")));
        }
        notes
    }

    fn summary(&self, sync: &Sync, o: &Outcome) -> String {
        if o.dry_run {
            return format!(
                "pass {} (dry run){}: {} · {} conflicts · {} errors · {:.2}s",
                o.n,
                if sync.first { ", first sync" } else { "" },
                o.counts.planned(),
                sync.conflicts,
                o.errors,
                o.seconds
            );
        }
        let notes: String = ["A", "B"]
            .iter()
            .zip(&o.versions)
            .filter_map(|(side, v)| Some(format!(" · new version of {side} {}", v.as_ref()?)))
            .collect();
        format!(
            "pass {}{}{}: {} · {} bytes copied · {} conflicts · hashed {} files · {} errors · {:.2}s · A sha256 {} · B sha256 {}{notes}",
            o.n,
            if sync.first { " (first sync)" } else { "" },
            if o.interrupted { " (interrupted)" } else { "" },
            o.counts.summary(),
            o.counts.bytes,
            sync.conflicts,
            o.hashed_files,
            o.errors,
            o.seconds,
            sha_text(o.shas[0]),
            sha_text(o.shas[1]),
        )
    }
}

impl Tracker for Progress<'_> {
    fn done(&self, step: usize, at: u32, digest: Option<Digest>) {
        Progress::done(self, step as u8, at, digest);
    }

    fn tick(&self) {
        Progress::tick(self);
    }
}

/// The hash a file's record of the new state takes where it has none, asked in path
/// order: the one of the replicas after the pass (A's first) at its path, with its size
/// and mtime (a file synced without being compared was hashed by its copy or after the
/// pass).
fn learned_hashes(afters: &[Tree; 2]) -> impl FnMut(&EntryRef<'_>) -> Option<Digest> + '_ {
    let mut sides = afters.each_ref().map(|t| Along::new(t.entries.iter()));
    move |r| {
        sides.iter_mut().find_map(|side| {
            side.at(r.path)
                .filter(|e| e.kind == r.kind && e.size == r.size && e.mtime == r.mtime())
                .and_then(|e| e.hash)
        })
    }
}

/// Hashes the files the planner compares (see [`Tool::prepare`]): each file whose hash
/// is unknown and that meets a file of the same size at its path, on the other side or
/// in the state (`base`, read only if some file's hash is unknown). The other tree and
/// the state are walked alongside each side's files, or the state looked up where few
/// files are unhashed (a pass after a small change).
fn hash_compared<'s>(scanned: &mut Scanned, base: impl FnOnce() -> &'s Packed) {
    fn file(e: Option<&Entry>) -> Option<&Entry> {
        e.filter(|e| e.kind == engine::tree::Kind::File)
    }
    let unhashed = |t: &Tree| {
        t.entries
            .values()
            .filter(|e| file(Some(e)).is_some_and(|e| e.hash.is_none()))
            .count()
    };
    let unhashed = unhashed(&scanned.trees[0]) + unhashed(&scanned.trees[1]);
    if unhashed == 0 {
        // Every file's hash is known (from the stat caches): the state need not be read.
        return;
    }
    let base = base();
    let few = unhashed < base.len() / 32;
    let [mut a, mut b] = std::mem::take(&mut scanned.trees);
    for side in 0..2 {
        let (this, other) = if side == 0 {
            (&mut a, &b)
        } else {
            (&mut b, &a)
        };
        let mut other = Along::new(other.entries.iter());
        let mut rows = Along::new(base.iter());
        scanned.hash_in(side, this, |p, x| {
            let y = file(other.at(p).copied());
            let looked_up;
            let s = if few {
                looked_up = base.get(p);
                file(looked_up.as_ref())
            } else {
                file(rows.at(p))
            };
            [y, s].iter().flatten().any(|o| o.size == x.size)
        });
    }
    scanned.trees = [a, b];
}

fn sha_text(d: Option<Digest>) -> String {
    d.map(|d| d.to_hex())
        .unwrap_or_else(|| "incomplete".to_string())
}

/// Why a pass refuses when its sync state cannot be read.
fn unreadable_state(e: engine::Error) -> Refusal {
    Refusal::new(format!(
        "{e}; nothing was changed (a sync state that cannot be read is not taken for a first sync, which would undo every deletion since the last one)"
    ))
}
