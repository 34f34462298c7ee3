//! One `oneway` pass: scan SOURCE and BACKUP, plan the mirror, apply it, then record
//! (stat caches, a new version when the content changed, the summary line).
//!
//! This module orders the engine's steps and owns the refusals of the SPEC; it writes
//! nothing itself: the engine's `apply` and the recovery store do.

use std::path::{Path, PathBuf};
use std::time::Instant;

use engine::apply::{self, ApplyOptions, Counts};
use engine::error::Refusal;
use engine::fs::Root;
use engine::names::{display, VERSIONS_DIR};
use engine::plan::mirror::{self, MirrorOptions};
use engine::run::cli::Settings;
use engine::run::config::VersionMode;
use engine::run::home::{DataHome, Lock};
use engine::run::runner::PassOutcome;
use engine::run::signal;
use engine::scan::replica::{self, Replica};
use engine::scan::{self, ScanOptions};
use engine::tree::{zip_paths, Digest, Kind};

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
        if let Some(of) = registry.backup_of(&source_c) {
            return Err(Refusal::new(format!(
                "SOURCE {} is the BACKUP of {}: were the arguments swapped? The order is \
                 oneway SOURCE BACKUP (to bring a backup back, use: recovery restore {})",
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
                Some(VersionedDir::new(
                    &source_c,
                    &store,
                    mode,
                    vec![backup_c.clone()],
                ))
            }
        };
        let lock = if settings.dry_run {
            None
        } else {
            Some(engine::run::home::lock_dir(&backup_c, &home)?)
        };
        Ok(Job {
            source: source_c,
            backup: backup_c,
            settings,
            home,
            versioned,
            _lock: lock,
        })
    }

    fn scan_options(&self) -> (ScanOptions, ScanOptions) {
        let mut src = ScanOptions {
            excludes: self.settings.excludes.clone(),
            skip: vec![self.backup.clone()],
            // Since the last pass's scan (from the start, the first time).
            touched_since: Some(self.last_scan().unwrap_or_default()),
        };
        let mut dst = ScanOptions {
            excludes: self.settings.excludes.clone(),
            skip: Vec::new(),
            touched_since: None,
        };
        if let Some(v) = &self.versioned {
            src.skip.push(v.store().to_path_buf());
            dst.skip.push(v.store().to_path_buf());
        }
        (src, dst)
    }

    /// Runs one pass.
    pub fn run_pass(&self, n: u64) -> Result<PassOutcome, Refusal> {
        let started = Instant::now();
        // The roots may have gone since the last pass (an unplugged drive).
        scan::check_root(&self.source, "SOURCE")?;
        check_backup(&self.backup)?;
        let dry = self.settings.dry_run;
        let scanned_at = engine::tree::MTime::now();
        let (src_opts, dst_opts) = self.scan_options();
        let (source, backup) = (
            Replica::new(&self.source, "SOURCE", &self.home),
            Replica::new(&self.backup, "BACKUP", &self.home),
        );
        let replica::ReadBoth {
            trees: (mut src, mut dst),
            cached_sha,
        } = replica::read_both(
            (&source, &src_opts),
            (&backup, &dst_opts),
            self.settings.checksum,
        )?;
        log::debug!("read both trees: {:.3}s", started.elapsed().as_secs_f64());
        let mut errors: Vec<engine::Error> = Vec::new();
        errors.append(&mut src.errors);
        errors.append(&mut dst.errors);
        let mut hashed_files = 0u64;
        if self.settings.checksum {
            for (r, t) in [(&source, &mut src), (&backup, &mut dst)] {
                let h = r.hash_rest(t);
                hashed_files += h.files;
                errors.extend(h.errors);
            }
        }

        let mut root = Root::open(&self.backup)
            .map_err(|e| Refusal::new(format!("BACKUP cannot be opened: {e}")))?;
        let fs = root.fs_traits();
        let opts = MirrorOptions {
            checksum: self.settings.checksum,
            modify_window: self.settings.modify_window.unwrap_or(if fs.coarse_times {
                2
            } else {
                0
            }),
            case_insensitive: fs.folds_case,
            ignore_modes: fs.no_modes,
            keep_owners: engine::fs::keeps_owners(),
        };
        if !self.settings.checksum {
            // Size and mtime alone are not proof when either side's hash is not cached
            // (a file written in the same timestamp tick as its last hashing keeps both):
            // such pairs are hashed now. Each would be hashed after the pass anyway.
            let unsure: std::collections::HashSet<PathBuf> = zip_paths(&src.entries, &dst.entries)
                .filter_map(|(p, s, d)| {
                    let (s, d) = (s?, d?);
                    let stat_equal = s.kind == Kind::File
                        && d.kind == Kind::File
                        && s.size == d.size
                        && s.mtime.same_as(d.mtime, opts.modify_window);
                    (stat_equal && (s.hash.is_none() || d.hash.is_none())).then(|| p.to_path_buf())
                })
                .collect();
            if !unsure.is_empty() {
                for (r, t) in [(&source, &mut src), (&backup, &mut dst)] {
                    let h = r.hash_where(t, |p| unsure.contains(p));
                    hashed_files += h.files;
                    errors.extend(h.errors);
                }
            }
        }
        // Extended attributes are not in a stat: those of an entry whose inode changed
        // since the last pass are compared with BACKUP's, and a difference marks BACKUP's
        // entry for the planner.
        mark_attribute_changes(&src, &mut dst, &self.source, &mut root);
        let mut plan = mirror::plan_mirror(&src, &dst, &opts);
        log::debug!(
            "planned {} actions: {:.3}s",
            plan.actions.len(),
            started.elapsed().as_secs_f64()
        );
        for e in plan.errors.iter() {
            log::error!("{e}");
        }
        self.check_max_delete(&plan, &src, &dst)?;
        let direction = "SOURCE -> BACKUP";

        if dry {
            let counts = apply::print_plan(&plan, direction);
            let errs = errors.len() + plan.errors.len();
            if let Some(v) = &self.versioned {
                v.describe_dry_run();
            }
            log::info!(
                "pass {n} (dry run): would {} · {} bytes · {errs} errors · {:.2}s",
                counts.summary(),
                counts.bytes,
                started.elapsed().as_secs_f64()
            );
            return Ok(PassOutcome {
                operations: counts.operations(),
                errors: errs,
                interrupted: false,
            });
        }

        // No data loss: content the pass would overwrite or delete that no version holds
        // is snapshotted first.
        if let Some(v) = &self.versioned {
            let mut displaced: Vec<(PathBuf, Option<Digest>)> = plan
                .displaced_files()
                .map(|(p, e)| (p.to_path_buf(), e.hash))
                .collect();
            // Removed directories take their files with them.
            for a in &plan.actions {
                if let (mirror::Op::Remove { kind: Kind::Dir }, _) = (&a.op, &a.dst) {
                    displaced.extend(
                        dst.entries
                            .at_and_under(&a.path)
                            .filter(|(_, e)| e.kind == Kind::File)
                            .map(|(p, e)| (p.to_path_buf(), e.hash)),
                    );
                }
            }
            if !displaced.is_empty() {
                if let Err(e) =
                    v.preserve_before_change(&self.home, &self.backup, &mut dst, &displaced)
                {
                    return Err(Refusal::new(format!(
                        "cannot save BACKUP's current contents before changing them, so nothing was changed: {e}"
                    )));
                }
            }
        }

        // The store exists before the mirror sets BACKUP's own mtime, so making it does not
        // leave BACKUP's root looking changed.
        if let Some(v) = &self.versioned {
            if let Err(e) = v.ensure_store() {
                return Err(Refusal::new(format!("cannot create the store: {e}")));
            }
        }
        let stop = || signal::stop_requested();
        let mut applied = apply::apply(
            &plan,
            &mut root,
            &ApplyOptions {
                src_root: &self.source,
                direction,
                meta_from_plan: false,
                verify_hash: false,
                attrs_from_source: true,
                stop: &stop,
                done: None,
            },
        );
        // The copies' records take their paths from the plan.
        applied.name_copies(&mut plan);
        errors.extend(plan.errors);
        // With nothing done and nothing hashed, both trees are the ones their stat caches
        // were read with: the directory SHA-256s the caches proved still hold.
        let wrote_nothing = plan.actions.is_empty();
        let idle = wrote_nothing && hashed_files == 0;
        let proven = cached_sha.map(|sha| sha.filter(|_| idle));
        // The plan holds a copy of every entry it acts on: gone before the record step.
        drop(plan.actions);
        let interrupted = applied.interrupted;
        log::debug!("applied: {:.3}s", started.elapsed().as_secs_f64());

        // Record: every file's hash, on both sides, for the caches and the summary.
        apply::note_reads(&mut src.entries, &mut applied.copied);
        let counts: Counts = applied.counts.clone();
        let mut after = apply::tree_after(dst, &mut applied);
        let applied_errors = applied.errors.len();
        drop(applied);
        log::debug!(
            "trees after the pass: {:.3}s",
            started.elapsed().as_secs_f64()
        );
        if !interrupted {
            for (r, t) in [(&source, &mut src), (&backup, &mut after)] {
                let h = r.hash_rest(t);
                hashed_files += h.files;
                errors.extend(h.errors);
            }
        }
        // What the pass wrote is on disk before anything records it; a pass that wrote
        // nothing has nothing to flush (on a shared disk, `syncfs` also waits for
        // everyone else's writes).
        if !wrote_nothing {
            if let Err(e) = root.sync_fs() {
                log::error!("{e}");
                errors.push(e);
            }
        }
        // The version needs BACKUP's directory SHA-256 only: both stat caches are saved
        // while it is made.
        let dst_sha = proven[1].or_else(|| engine::hash::tree_sha256(&after));
        log::debug!(
            "flushed and hashed: {:.3}s",
            started.elapsed().as_secs_f64()
        );
        let mut version_note = String::new();
        let src_sha = std::thread::scope(|s| {
            let src_side = s.spawn(|| source.finish(&src, scanned_at, proven[0]));
            let dst_cache = s.spawn(|| backup.keep_cache(&after, scanned_at, proven[1], dst_sha));
            if let (Some(v), false) = (&self.versioned, interrupted) {
                // What SOURCE could not give (read errors, files not copied) is missing
                // from BACKUP too: such a version is marked incomplete.
                let complete = errors.is_empty() && applied_errors == 0;
                let recorded = v.record_pass(&self.home, &self.backup, &after, dst_sha, complete);
                match recorded {
                    Ok(Some(info)) => version_note = format!(" · new version {}", info),
                    Ok(None) => {}
                    Err(e) => {
                        log::error!("version not saved: {e}");
                        errors.push(e);
                    }
                }
            }
            dst_cache.join().expect("BUG: no panic");
            src_side.join().expect("BUG: no panic")
        });
        log::debug!(
            "saved caches and version: {:.3}s",
            started.elapsed().as_secs_f64()
        );
        if !interrupted {
            self.note_scan(scanned_at);
        }
        let total_errors = errors.len() + applied_errors;
        log::info!(
            "pass {n}{}: {} · {} bytes copied · hashed {hashed_files} files · {total_errors} errors · {:.2}s · SOURCE sha256 {} · BACKUP sha256 {}{version_note}",
            if interrupted { " (interrupted)" } else { "" },
            counts.summary(),
            counts.bytes,
            started.elapsed().as_secs_f64(),
            sha_text(src_sha),
            sha_text(dst_sha),
        );
        engine::tree::drop_later((src, after));
        Ok(PassOutcome {
            operations: counts.operations(),
            errors: total_errors,
            interrupted,
        })
    }
}

impl Job {
    /// Refuses a pass that would delete more than `--max-delete` percent of BACKUP's
    /// files: an empty SOURCE is far more often a drive that is not mounted than a user
    /// who deleted everything.
    /// A file whose path SOURCE still has (as a directory, say) is replaced, not deleted.
    fn check_max_delete(
        &self,
        plan: &mirror::Plan,
        src: &engine::tree::Tree,
        dst: &engine::tree::Tree,
    ) -> Result<(), Refusal> {
        let deletes: usize = plan
            .actions
            .iter()
            .filter(|a| matches!(a.op, mirror::Op::Remove { .. }))
            .map(|a| {
                dst.entries
                    .at_and_under(&a.path)
                    .filter(|(p, e)| e.kind == Kind::File && src.entries.get(p).is_none())
                    .count()
            })
            .sum();
        let why = format!(
            " Is SOURCE {} the right directory, and its drive mounted?",
            display(&self.source)
        );
        self.settings
            .check_max_delete("BACKUP", deletes, dst.file_count(), &why)
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
        let file = self.scan_time_file();
        let tmp = file.with_extension("scanned-new");
        let text = format!("{}.{:09}\n", at.sec, at.nsec);
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            log::debug!("time of the scan not kept: {e}");
        }
    }
}

/// Marks BACKUP's entries whose extended attributes differ from SOURCE's, among the
/// files and directories SOURCE's scan found touched (see `ScanOptions::touched_since`).
/// Reads only.
fn mark_attribute_changes(
    src: &engine::tree::Tree,
    dst: &mut engine::tree::Tree,
    source: &Path,
    backup: &mut Root,
) {
    let touched: Vec<PathBuf> = zip_paths(&src.entries, &dst.entries)
        .filter_map(|(p, s, d)| {
            let (s, d) = (s?, d?);
            (s.touched && s.kind == d.kind && s.kind != Kind::Symlink).then(|| p.to_path_buf())
        })
        .collect();
    if touched.is_empty() {
        return;
    }
    let Ok(mut sr) = Root::open(source) else {
        return;
    };
    for p in touched {
        if !engine::fs::same_attributes(&mut sr, backup, &p) {
            if let Some(d) = dst.entries.get_mut(&p) {
                d.touched = true;
            }
        }
    }
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
