//! `oneway` as a tool of the engine's pass pipeline ([`engine::pass`]): its replicas
//! (SOURCE, read only, and BACKUP), its planner (the mirror), its refusals (the SPEC's,
//! and `--max-delete`), the attribute check, and its summary words.
//!
//! It writes nothing itself: the pipeline's apply and the recovery store do.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use engine::error::Refusal;
use engine::fs::FsTraits;
use engine::names::{display, VERSIONS_DIR};
use engine::pass::quiet::Quiet;
use engine::pass::{Outcome, Planned, Scanned, Step, Tool, Tracker, Versions};
use engine::plan::mirror::{self, MirrorOptions};
use engine::run::cli::Settings;
use engine::run::config::VersionMode;
use engine::run::home::{DataHome, Lock};
use engine::run::runner::PassOutcome;
use engine::scan::replica::Replica;
use engine::scan::{self, ScanOptions};
use engine::tree::{zip_paths, Along, Digest, Entry, Kind, Tree};

use recovery::store::VersionedDir;

/// A mirror job: validated roots and settings.
#[derive(Debug)]
pub struct Job {
    pub source: PathBuf,
    pub backup: PathBuf,
    pub settings: Settings,
    pub home: DataHome,
    /// The versioned directory (SOURCE) and its store, when versions are on.
    pub versioned: Option<VersionedDir>,
    /// `--additive`: only add to BACKUP (see `engine::plan::additive`).
    pub additive: bool,
    replicas: [Replica; 2],
    _lock: Option<Lock>,
}

impl Job {
    /// Checks the roots and everything the SPEC says to refuse before changing anything.
    pub fn new(
        source: &Path,
        backup: &Path,
        settings: Settings,
        home: DataHome,
    ) -> Result<Job, Refusal> {
        let source_c = scan::check_root(source, "SOURCE")?;
        let backup_c = check_backup(backup)?;
        home.check_mounted(&source_c, "SOURCE", !settings.dry_run)?;
        home.check_mounted(&backup_c, "BACKUP", !settings.dry_run)?;
        if source_c == backup_c {
            return Err(Refusal::new(format!(
                "SOURCE and BACKUP are the same directory ({})",
                display(&source_c)
            )));
        }
        if source_c.starts_with(&backup_c) {
            return Err(Refusal::new(format!(
                "SOURCE {} is inside BACKUP {}; mirroring would delete it",
                display(&source_c),
                display(&backup_c)
            )));
        }
        // `oneway BACKUP SOURCE`: the arguments swapped would mirror the backup over
        // the very directory it keeps.
        let registry = recovery::registry::Registry::load(&home).map_err(|e| {
            Refusal::new(format!(
                "{e}; nothing was changed (the registry tells which directories are backups)"
            ))
        })?;
        // The same from SOURCE's own store, when this data home does not know it.
        let backup_of_backup = recovery::store::versioned_in(&source_c)
            .into_iter()
            .find(|d| *d == backup_c);
        if let Some(of) = registry
            .backup_of(&source_c)
            .or(backup_of_backup.as_deref())
        {
            // Each the other's backup: a run had the arguments swapped before.
            let both =
                of == backup_c && recovery::store::versioned_in(&backup_c).contains(&source_c);
            let hint = if both {
                format!(
                    ". Each holds versions of the other, so one earlier run had them swapped: \
                     `recovery list` on each shows what it keeps; once what you need is \
                     restored, move the store of the one that is not the backup \
                     ({}/{VERSIONS_DIR}, say) out of the way",
                    display(&source_c)
                )
            } else {
                String::new()
            };
            return Err(Refusal::new(format!(
                "SOURCE {} is the BACKUP of {}: were the arguments swapped? The order is \
                 oneway SOURCE BACKUP (to bring a backup back, use: recovery restore {}){hint}",
                display(&source_c),
                display(of),
                display(of)
            )));
        }
        let versioned = match settings.versions {
            VersionMode::Off => None,
            mode => {
                let store = recovery::store::resolve_store(settings.store.as_deref(), || {
                    backup_c.join(VERSIONS_DIR)
                })?;
                if store == source_c
                    || source_c.starts_with(&store)
                    || store == backup_c
                    || backup_c.starts_with(&store)
                {
                    return Err(Refusal::new(format!(
                        "the store {} must not be or contain SOURCE or BACKUP",
                        display(&store)
                    )));
                }
                Some(
                    VersionedDir::new(&source_c, &store, mode, vec![backup_c.clone()])
                        .with_policy(settings.retention(), settings.tag.clone()),
                )
            }
        };
        let lock = if settings.dry_run {
            None
        } else {
            Some(engine::run::home::lock_dir(&backup_c, &home)?)
        };
        let replicas = [
            Replica::new(&source_c, "SOURCE", &home),
            Replica::new(&backup_c, "BACKUP", &home),
        ];
        Ok(Job {
            additive: settings.additive,
            replicas,
            source: source_c,
            backup: backup_c,
            settings,
            home,
            versioned,
            _lock: lock,
        })
    }

    /// Runs one pass.
    pub fn run_pass(&self, n: u64) -> Result<PassOutcome, Refusal> {
        engine::pass::run(self, n)
    }
}

impl Tool for Job {
    type Base = ();
    /// How many differences an additive pass left alone.
    type Extra = usize;

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
        let mut src = ScanOptions {
            filter: self.settings.filter.clone(),
            skip: vec![self.backup.clone()],
            // Since the last pass's scan (from the start, the first time).
            touched_since: Some(self.last_scan().unwrap_or_default()),
        };
        let mut dst = ScanOptions {
            filter: self.settings.filter.clone(),
            skip: Vec::new(),
            touched_since: None,
        };
        let stores: Vec<&Path> = self.versioned.iter().map(|v| v.store()).collect();
        let skips = scan::left_out(&stores, &[&self.source, &self.backup]);
        src.skip.extend(skips.iter().cloned());
        dst.skip.extend(skips);
        [src, dst]
    }

    fn versions(&self) -> [Option<&dyn Versions>; 2] {
        [None, self.versioned.as_ref().map(|v| v as &dyn Versions)]
    }

    /// One history, kept with BACKUP: it is SOURCE's (`recovery list SOURCE`), and
    /// BACKUP's path finds it too.
    fn versioned_by(&self, _side: usize) -> Option<usize> {
        Some(1)
    }

    fn check_roots(&self) -> Result<(), Refusal> {
        // The roots may have gone since the last pass (an unplugged drive).
        scan::check_root(&self.source, "SOURCE")?;
        check_backup(&self.backup)?;
        let remember = !self.settings.dry_run;
        self.home.check_mounted(&self.source, "SOURCE", remember)?;
        self.home.check_mounted(&self.backup, "BACKUP", remember)?;
        Ok(())
    }

    fn load_base(&self) -> Result<(), Refusal> {
        Ok(())
    }

    fn prepare(&self, scanned: &mut Scanned, _: &()) {
        // What to look at: the part read, under --watch (its hashes are not needed).
        let parts = scanned.part_read();
        if !self.settings.checksum {
            // Size and mtime alone are not proof when either side's hash is not cached
            // (a file written in the same timestamp tick as its last hashing keeps
            // both): such pairs are hashed now. Each would be hashed after the pass
            // anyway.
            let window = self.modify_window(scanned.fs[1]);
            let unsure = |s: &Entry, d: &Entry| {
                let stat_equal = s.kind == Kind::File
                    && d.kind == Kind::File
                    && s.size == d.size
                    && s.mtime.same_as(d.mtime, window);
                stat_equal && (s.hash.is_none() || d.hash.is_none())
            };
            let [mut src, mut dst] = std::mem::take(&mut scanned.trees);
            match &parts {
                // Under --watch, the part read is small: its pairs are listed, and the
                // trees walked only if one is unsure.
                Some([ps, pd]) => {
                    let listed: HashSet<PathBuf> = zip_paths(&ps.entries, &pd.entries)
                        .filter(|(_, s, d)| s.zip(*d).is_some_and(|(s, d)| unsure(s, d)))
                        .map(|(p, _, _)| p.to_path_buf())
                        .collect();
                    if !listed.is_empty() {
                        scanned.hash_in(0, &mut src, |p, _| listed.contains(p));
                        scanned.hash_in(1, &mut dst, |p, _| listed.contains(p));
                    }
                }
                // Each file whose hash is unknown is looked up in the other replica,
                // walked alongside.
                None => {
                    {
                        let mut other = Along::new(dst.entries.iter());
                        scanned.hash_in(0, &mut src, |p, s| {
                            other.at(p).is_some_and(|d| unsure(s, d))
                        });
                    }
                    let mut other = Along::new(src.entries.iter());
                    scanned.hash_in(1, &mut dst, |p, d| {
                        other.at(p).is_some_and(|s| unsure(s, d))
                    });
                }
            }
            scanned.trees = [src, dst];
        }
        // Extended attributes are not in a stat: those of an entry whose inode changed
        // since the last pass are compared with BACKUP's, and a difference marks
        // BACKUP's entry for the planner.
        mark_attribute_changes(scanned, parts.as_ref());
        // The part to plan, as the trees now are (hashed, marked).
        let parts = parts.is_some().then(|| scanned.part_read()).flatten();
        scanned.plan_only(parts);
    }

    fn plan<'s>(&self, scanned: &'s Scanned, _: ()) -> Result<Planned<'s, usize>, Refusal> {
        let opts = self.mirror_options(scanned.fs);
        let [src, dst] = &scanned.trees;
        let [part_src, part_dst] = scanned.parts.as_ref().unwrap_or(&scanned.trees);
        let mut plan = mirror::plan_mirror(part_src, part_dst, &opts);
        let mut left_alone = 0;
        if self.additive {
            let (adding, left) = engine::plan::additive::additive(plan);
            plan = adding;
            for l in &left {
                log::info!(target: "action", "left     {}  ({}; --additive)", display(&l.path), l.why);
            }
            left_alone = left.len();
        } else {
            // A file moved or renamed in SOURCE is moved in BACKUP, not copied and
            // deleted.
            engine::plan::moves::find_moves(&mut plan, dst);
        }
        self.check_max_delete(&plan, src, dst, scanned.files(1))?;
        let step = Step {
            plan,
            target: 1,
            source: 0,
            round: 0,
            direction: "SOURCE -> BACKUP",
            verify_hash: false,
            attrs_from_source: true,
        };
        Ok(Planned::new(vec![step], left_alone))
    }

    fn track<'p>(
        &'p self,
        _: &'p Planned<usize>,
        _: &[Tree; 2],
        _: bool,
    ) -> Result<Option<Box<dyn Tracker + 'p>>, Refusal> {
        Ok(None)
    }

    /// Each window planned as a whole pass plans it, after its attributes are
    /// compared: nothing to do in any, or (the pipeline gathering the part to plan)
    /// each window with something to do told. Not asked where BACKUP folds case (names
    /// that collide there may lie in two windows), nor of hard-linked files (a group's
    /// names may too).
    fn quiet(&self, q: &mut Quiet<'_>, _: &mut ()) -> Option<usize> {
        let fs = q.fs();
        if fs[1].folds_case {
            return None;
        }
        let opts = self.mirror_options(fs);
        while let Some(w) = q.next_window() {
            let [src, dst] = w.trees;
            if [&*src, &*dst]
                .iter()
                .any(|t| t.entries.values().any(|e| e.linked))
            {
                return None;
            }
            for p in attribute_changes(w.roots, src, dst) {
                if let Some(d) = dst.entries.get_mut(&p) {
                    d.touched = true;
                }
            }
            let plan = mirror::plan_mirror(src, dst, &opts);
            if plan.actions.is_empty() && plan.errors.is_empty() {
                continue;
            }
            // Every window holds the root: a change of its own metadata alone leaves
            // the window out of the part; else the part holds the paths the plan
            // acts on (and all a folder it removes holds), or the whole window where
            // it could not plan a path.
            let (mut at, mut under) = (Vec::new(), Vec::new());
            for a in plan
                .actions
                .iter()
                .filter(|a| !a.path.as_os_str().is_empty())
            {
                let paths = match a.op {
                    mirror::Op::Remove { kind: Kind::Dir } => &mut under,
                    _ => &mut at,
                };
                paths.push(a.path.to_path_buf());
            }
            let going_on = if !plan.errors.is_empty() {
                q.something_to_do()
            } else if at.is_empty() && under.is_empty() {
                q.something_to_do_elsewhere()
            } else {
                q.something_to_do_at(engine::pass::quiet::Keep::Paths { at, under })
            };
            if !going_on {
                return None;
            }
        }
        Some(0)
    }

    /// The mirror planner acts on a path from what SOURCE and BACKUP hold there, above
    /// and under it (moves pair a copy and a removal, both planned); hard-linked files
    /// and a BACKUP that folds case make `quiet` give up first.
    fn plans_parts(&self) -> bool {
        true
    }

    /// A first mirror into an empty BACKUP only copies.
    fn fills(&self) -> [bool; 2] {
        [false, true]
    }

    fn record(
        &self,
        _: &mut usize,
        _: Option<&[Tree; 2]>,
        outcome: &Outcome,
    ) -> Result<(), engine::Error> {
        if !outcome.interrupted {
            self.note_scan(outcome.scanned_at);
        }
        Ok(())
    }

    fn json_counts(&self, left_alone: &usize) -> Vec<(&'static str, engine::run::events::Value)> {
        if self.additive {
            vec![("left_alone", (*left_alone).into())]
        } else {
            Vec::new()
        }
    }

    fn notes(&self, left_alone: &usize, o: &Outcome) -> Vec<String> {
        let mut notes = Vec::new();
        if self.additive {
            notes.push(format!("{left_alone} left alone (--additive)"));
        }
        if let Some(id) = engine::pass::version_id(o, 1) {
            notes.push(format!("new version {id}"));
        }
        notes
    }

    fn summary(&self, left_alone: &usize, o: &Outcome) -> String {
        let left = if self.additive {
            format!(" · {left_alone} differences left alone (--additive)")
        } else {
            String::new()
        };
        if o.dry_run {
            return format!(
                "pass {} (dry run): {} · {} bytes · {} errors · {:.2}s{left}",
                o.n,
                o.counts.planned(),
                o.counts.bytes,
                o.errors,
                o.seconds
            );
        }
        let version = o.versions[1]
            .as_ref()
            .map(|v| format!(" · new version {v}"))
            .unwrap_or_default();
        format!(
            "pass {}{}: {} · {} bytes copied · hashed {} files · {} errors · {:.2}s{left} · SOURCE sha256 {} · BACKUP sha256 {}{version}",
            o.n,
            if o.interrupted { " (interrupted)" } else { "" },
            o.counts.summary(),
            o.counts.bytes,
            o.hashed_files,
            o.errors,
            o.seconds,
            sha_text(o.shas[0]),
            sha_text(o.shas[1]),
        )
    }
}

impl Job {
    /// Refuses a pass that would delete more than `--max-delete` percent of BACKUP's
    /// files: an empty SOURCE is far more often a drive that is not mounted than a user
    /// who deleted everything.
    /// A file whose path SOURCE still has (as a directory, say) is replaced, not deleted.
    fn modify_window(&self, fs: FsTraits) -> u64 {
        self.settings
            .modify_window
            .unwrap_or(if fs.coarse_times { 2 } else { 0 })
    }

    /// How the mirror is planned onto a BACKUP whose filesystem is `fs[1]`.
    fn mirror_options(&self, fs: [FsTraits; 2]) -> MirrorOptions {
        MirrorOptions {
            checksum: self.settings.checksum,
            modify_window: self.modify_window(fs[1]),
            case_insensitive: fs[1].folds_case,
            ignore_modes: fs[1].no_modes,
            keep_owners: engine::fs::keeps_owners(),
        }
    }

    fn check_max_delete(
        &self,
        plan: &mirror::Plan,
        src: &engine::tree::Tree,
        dst: &engine::tree::Tree,
        dst_files: usize,
    ) -> Result<(), Refusal> {
        let moved: HashSet<&Path> = plan.moved_from().collect();
        let deletes: usize = plan
            .actions
            .iter()
            .filter(|a| matches!(a.op, mirror::Op::Remove { .. }))
            .map(|a| {
                dst.entries
                    .at_and_under(&a.path)
                    .filter(|(p, e)| {
                        e.kind == Kind::File && src.entries.get(p).is_none() && !moved.contains(p)
                    })
                    .count()
            })
            .sum();
        let why = format!(
            " Is SOURCE {} the right directory, and its drive mounted?",
            display(&self.source)
        );
        self.settings
            .check_max_delete("BACKUP", deletes, dst_files, &why)
    }

    /// Where the time of the last pass's scan of SOURCE is kept.
    fn scan_time_file(&self) -> PathBuf {
        self.home.scan_time_file(&self.source)
    }

    /// When the last pass scanned SOURCE, if one did.
    fn last_scan(&self) -> Option<engine::tree::MTime> {
        let text = std::fs::read_to_string(self.scan_time_file()).ok()?;
        let (sec, nsec) = text.trim().split_once('.')?;
        Some(engine::tree::MTime::new(
            sec.parse().ok()?,
            nsec.parse().ok()?,
        ))
    }

    /// Keeps `at` as the time of this pass's scan. Not flushed: a time lost in a crash
    /// leaves an older one, which only makes the next pass compare more.
    fn note_scan(&self, at: engine::tree::MTime) {
        let text = format!("{}.{:09}\n", at.sec, at.nsec);
        let written = engine::fs::replace_unflushed(&self.scan_time_file(), text.as_bytes());
        if let Err(e) = written {
            log::debug!("time of the scan not kept: {e}");
        }
    }
}

/// Marks BACKUP's entries whose extended attributes differ from SOURCE's, among the
/// files and directories SOURCE's scan found touched (see `ScanOptions::touched_since`).
/// Reads only.
fn mark_attribute_changes(scanned: &mut Scanned, parts: Option<&[engine::tree::Tree; 2]>) {
    let [src, dst] = parts.unwrap_or(&scanned.trees);
    let changed = attribute_changes(&mut scanned.roots, src, dst);
    let dst = &mut scanned.trees[1];
    for p in changed {
        if let Some(d) = dst.entries.get_mut(&p) {
            d.touched = true;
        }
    }
}

/// The paths, among the files and directories of `src` (SOURCE's) its scan found
/// touched, whose extended attributes in BACKUP (`dst`) differ. Reads only.
fn attribute_changes(roots: &mut [engine::fs::Root; 2], src: &Tree, dst: &Tree) -> Vec<PathBuf> {
    let [source, backup] = roots;
    zip_paths(&src.entries, &dst.entries)
        .filter_map(|(p, s, d)| {
            let (s, d) = (s?, d?);
            (s.touched && s.kind == d.kind && s.kind != Kind::Symlink).then(|| p.to_path_buf())
        })
        .filter(|p| !engine::fs::same_attributes(source, backup, p))
        .collect()
}

fn sha_text(d: Option<Digest>) -> String {
    d.map(|d| d.to_hex())
        .unwrap_or_else(|| "incomplete".to_string())
}

/// BACKUP must exist and be a readable directory; a missing one is most likely an
/// unmounted drive, so it is never created for the user.
fn check_backup(backup: &Path) -> Result<PathBuf, Refusal> {
    match std::fs::symlink_metadata(backup) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Refusal::new(format!(
            "BACKUP {} does not exist; a missing backup usually means an unmounted drive. \
             If this is a new backup, create it once by hand: mkdir -p {}",
            display(backup),
            display(backup)
        ))),
        _ => scan::check_root(backup, "BACKUP"),
    }
}
