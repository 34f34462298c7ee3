//! Restore: bring a directory (or one file or subdirectory of it) back from a version.
//!
//! A restore is a mirror from the version's manifest onto the target, through the same
//! planner and apply as a `oneway` pass, with every byte checked against the manifest's
//! SHA-256 and modes and mtimes taken from it. Into a non-empty directory it needs
//! `--force`, and then the directory's current contents are first saved as a new
//! version, so that the restore itself can be undone.

use std::path::{Component, Path, PathBuf};

use engine::apply::{self, ApplyOptions};
use engine::error::{Error, Refusal};
use engine::fs::Root;
use engine::hash;
use engine::names::display;
use engine::plan::mirror::{self, MirrorOptions};
use engine::run::home::{absolute, DataHome};
use engine::run::signal;
use engine::scan::after::Before;
use engine::scan::cache;
use engine::scan::{self, ScanOptions};
use engine::tree::{Entry, Tree};

use crate::history::{self, VersionHead, Why};
use crate::registry::Registry;
use crate::store::VersionedDir;

/// What to restore, and where.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    pub dir: PathBuf,
    /// Which version: latest, previous, an id, a tag or a time.
    pub version: String,
    pub to: Option<PathBuf>,
    pub subpath: Option<PathBuf>,
    pub force: bool,
    pub dry_run: bool,
    /// The store to restore from, where a directory has several.
    pub store: Option<PathBuf>,
}

/// How a restore ended.
#[derive(Debug, Default)]
pub struct RestoreOutcome {
    pub errors: usize,
    pub interrupted: bool,
}

/// The refusal for a directory without versions that this data home or its own store
/// knows of.
pub(crate) fn unknown(dir: &Path) -> Refusal {
    Refusal::new(format!(
        "no versions are known for {}; run `recovery list` to see the directories that have \
         versions (on another machine, or with another data home, name the backup or \
         replica that holds them, or its store with --store)",
        display(dir)
    ))
}

/// Finds the versioned directory `dir` is registered under, in the store that holds its
/// newest version (a directory backed up to several drives has a store on each), or in
/// `store` when one is named.
pub fn find_versioned(
    home: &DataHome,
    dir: &Path,
    store: Option<&Path>,
) -> Result<VersionedDir, Refusal> {
    let store = store.map(absolute).transpose()?;
    let entry = Registry::find_or_discover(home, dir, store.as_deref())
        .map_err(Refusal::from)?
        .ok_or_else(|| unknown(dir))?;
    let mut candidates = entry.per_store();
    if let Some(s) = store {
        candidates.retain(|e| e.store == s);
        if candidates.is_empty() {
            return Err(Refusal::new(format!(
                "{} has no versions in the store {}; `recovery list {}` shows its stores",
                display(dir),
                display(&s),
                display(dir)
            )));
        }
    }
    let stores: Vec<VersionedDir> = candidates.iter().map(VersionedDir::from_registry).collect();
    let made = |vd: &VersionedDir| {
        vd.latest()
            .ok()
            .flatten()
            .map(|h| crate::store::parse_time(&h.made))
    };
    let chosen = stores
        .iter()
        .enumerate()
        .max_by_key(|(i, vd)| (made(vd), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
        .unwrap_or(0);
    if stores.len() > 1 {
        log::info!(
            "{} has versions in {} stores; using {}, the one with the newest version (--store picks another)",
            display(dir),
            stores.len(),
            display(stores[chosen].store())
        );
    }
    Ok(stores[chosen].clone())
}

/// The version `spec` names among `vd`'s: `latest` (or empty), `previous`, an id, a
/// tag, or a time (RFC 3339, or a date `YYYY-MM-DD` meaning the end of that day, UTC):
/// the last version made at or before it.
pub fn select(vd: &VersionedDir, spec: &str) -> Result<VersionHead, Refusal> {
    let history = vd.history();
    let listed = history.list().map_err(Refusal::from)?;
    let hint = || {
        format!(
            "`recovery list {}` shows the versions there are",
            display(vd.dir())
        )
    };
    let newest_first: Vec<&VersionHead> = listed.iter().rev().map(|l| &l.head).collect();
    let by_id = |id: u64| {
        newest_first
            .iter()
            .find(|h| h.id == id)
            .map(|h| (*h).clone())
    };
    let found = match spec {
        "" | "latest" | "_1" => newest_first.first().map(|h| (*h).clone()),
        "previous" | "_0" => newest_first.get(1).map(|h| (*h).clone()),
        s if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            let id: u64 = s
                .parse()
                .map_err(|_| Refusal::new(format!("no version {s}")))?;
            by_id(id)
        }
        s => {
            let tags = history.tags().map_err(Refusal::from)?;
            if let Some(&id) = tags.get(s) {
                by_id(id)
            } else if let Some(t) = parse_point(s) {
                newest_first
                    .iter()
                    .find(|h| crate::store::parse_time(&h.made) <= t)
                    .map(|h| (*h).clone())
            } else {
                return Err(Refusal::new(format!(
                    "--version {s:?} is not latest, previous, a version id, a tag or a time; {}",
                    hint()
                )));
            }
        }
    };
    found.ok_or_else(|| {
        Refusal::new(format!(
            "{} has no version {}; {}",
            display(vd.dir()),
            if spec.is_empty() { "latest" } else { spec },
            hint()
        ))
    })
}

/// The newest version of `vd` that holds `sub`, if any.
fn newest_holding(vd: &VersionedDir, sub: &Path) -> Result<Option<VersionHead>, Refusal> {
    let mut found = None;
    vd.history()
        .walk(
            |p| p == sub,
            |head, hits| {
                if found.is_none() && hits.contains_key(sub) {
                    found = Some(head.clone());
                }
            },
        )
        .map_err(Refusal::from)?;
    Ok(found)
}

/// A point in time: RFC 3339, or a date (the end of that day, UTC).
pub fn parse_point(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_milli_opt(23, 59, 59, 999)?.and_utc())
}

/// Describes a version for messages: "version 12 (made …)".
pub fn describe(h: &VersionHead) -> String {
    format!("version {} (made {}, {})", h.id, h.made, h.why.as_str())
}

fn is_empty_dir(p: &Path, store: &Path) -> Result<bool, Refusal> {
    let rd = std::fs::read_dir(p)
        .map_err(|e| Refusal::new(format!("cannot read {}: {e}", display(p))))?;
    for ent in rd {
        let ent = ent.map_err(|e| Refusal::new(format!("cannot read {}: {e}", display(p))))?;
        let path = ent.path();
        if path == store || engine::names::is_reserved_top(&ent.file_name()) {
            continue;
        }
        return Ok(false);
    }
    Ok(true)
}

/// Restores as `req` asks.
pub fn restore(home: &DataHome, req: &RestoreRequest) -> Result<RestoreOutcome, Refusal> {
    let dir = absolute(&req.dir)?;
    let vd = find_versioned(home, &dir, req.store.as_deref())?;
    let mut head = select(&vd, &req.version)?;
    let t0 = std::time::Instant::now();
    let state = vd.history().state(head.id).map_err(Refusal::from)?;
    log::debug!(
        "version {} read: {:.3}s",
        head.id,
        t0.elapsed().as_secs_f64()
    );
    // Kept while the restore runs if it is the latest version: where its content is
    // still live is looked up in it (see `LiveCopies`).
    let mut known = state.clone();
    let mut vtree = state.into_tree();

    if let Some(sub) = &req.subpath {
        if sub.as_os_str().is_empty()
            || !sub.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(Refusal::new(format!(
                "--path {} must be a relative path inside the directory",
                display(sub)
            )));
        }
        // A path that a pass removed is not in the latest version: with no version
        // named, it comes back from the newest version that holds it.
        if !vtree.entries.contains_key(sub) && req.version.is_empty() {
            if let Some(h) = newest_holding(&vd, sub)? {
                log::info!(
                    "{} is not in the latest version of {}; restoring it from {}, the newest that holds it",
                    display(sub),
                    display(&dir),
                    describe(&h)
                );
                let state = vd.history().state(h.id).map_err(Refusal::from)?;
                known = state.clone();
                vtree = state.into_tree();
                head = h;
            }
        }
        if !vtree.entries.contains_key(sub) {
            return Err(Refusal::new(format!(
                "{} is not in {} of {}; `recovery find {} {}` shows the versions that hold it",
                display(sub),
                describe(&head),
                display(&dir),
                display(&dir),
                display(sub)
            )));
        }
        vtree.entries.retain(|p, _| p.starts_with(sub));
        vtree.root = None;
    }

    let in_place = req.to.is_none();
    let target = match &req.to {
        Some(t) => {
            refuse_symlinked(t)?;
            absolute(t)?
        }
        None => dir.clone(),
    };
    if target.starts_with(vd.store()) {
        return Err(Refusal::new(format!(
            "cannot restore into the store itself ({})",
            display(&target)
        )));
    }
    let target_meta = std::fs::symlink_metadata(&target).ok();
    if target_meta.as_ref().is_some_and(|m| !m.is_dir()) {
        return Err(Refusal::new(format!(
            "{} exists and is not a directory",
            display(&target)
        )));
    }
    // What the restore would replace: the whole target, or just the sub-path.
    let occupied = match (&target_meta, &req.subpath) {
        (None, _) => false,
        (Some(_), None) => !is_empty_dir(&target, vd.store())?,
        (Some(_), Some(sub)) => {
            let p = target.join(sub);
            match std::fs::symlink_metadata(&p) {
                Err(_) => false,
                Ok(m) if m.is_dir() => !is_empty_dir(&p, vd.store())?,
                Ok(_) => true,
            }
        }
    };
    if occupied && !in_place {
        return Err(Refusal::new(format!(
            "--to {} must be a new or empty directory",
            display(&target)
        )));
    }
    if occupied && !req.force {
        let what = match &req.subpath {
            Some(sub) => display(&target.join(sub)),
            None => display(&target),
        };
        return Err(Refusal::new(format!(
            "{what} is not empty; add --force to replace it (its current contents are saved as a new version first; this also finishes a restore that was cut short), or --to PATH to restore elsewhere"
        )));
    }

    // The plan, made once: the dry run prints it, the real run carries it out.
    log::debug!("target checked: {:.3}s", t0.elapsed().as_secs_f64());
    let (scanned, unhashed) = read_target(&target, &vd, req.subpath.as_deref(), occupied)?;
    let plan = mirror::plan_mirror(&vtree, &scanned, &restore_options(occupied));
    for e in &unhashed {
        log::warn!("{e}");
    }
    if req.dry_run {
        log::info!(
            "would restore {} from {} ({} files, sha256 {})",
            display(&target),
            describe(&head),
            head.files,
            head.dir_sha256
        );
        if occupied {
            log::info!(
                "would first save the current contents of {} as a new version",
                display(&target)
            );
        }
        apply::print_plan(&plan, "VERSION -> DIR");
        return Ok(RestoreOutcome::default());
    }

    if occupied {
        // The whole target as the plan read it, hashed; only a part of it with --path.
        let whole;
        let (current, unhashed) = if req.subpath.is_none() {
            (&scanned, unhashed)
        } else {
            let mut t = scan_target(&target, &vd, None)?;
            let hashed = cache::hash_missing(&target, &mut t);
            whole = t;
            (&whole, hashed.errors)
        };
        if let Some(e) = unhashed.first() {
            return Err(Refusal::new(format!(
                "cannot save the current contents of {} before restoring, so nothing was changed: {e}",
                display(&target)
            )));
        }
        let lost: Vec<(PathBuf, Option<engine::tree::Digest>)> = plan
            .files_lost(current)
            .map(|(p, e)| (p.to_path_buf(), e.hash))
            .collect();
        vd.keep_files(home, &target, Before::whole(current), None, &lost, Some(Why::BeforeRestore))
            .map_err(|e| {
                Refusal::new(format!(
                    "cannot save the current contents of {} before restoring, so nothing was changed: {e}",
                    display(&target)
                ))
            })?;
    }

    engine::fs::make_dir_all(&target)
        .map_err(|e| Refusal::new(format!("cannot create {}: {e}", display(&target))))?;
    let mut root = Root::open(&target).map_err(Refusal::from)?;
    if let Some(parent) = req.subpath.as_deref().and_then(Path::parent) {
        if !parent.as_os_str().is_empty() {
            root.mkdir_all(parent).map_err(Refusal::from)?;
        }
    }
    for e in &plan.errors {
        log::error!("{e}");
    }
    let stop = || signal::stop_requested();
    let history_dir = vd.history().path().to_path_buf();
    log::debug!("planned and kept: {:.3}s", t0.elapsed().as_secs_f64());
    let lives = crate::store::LiveCopies::knowing(&vd, home, Some(known)).target_last(&target);
    log::debug!("live copies found: {:.3}s", t0.elapsed().as_secs_f64());
    // What the store holds, listed once: a file looked for there is opened only if it is.
    let stored: std::collections::HashSet<engine::tree::Digest> = vd
        .history()
        .held()
        .map_err(Refusal::from)?
        .into_iter()
        .collect();
    let open = |p: &Path, e: &Entry| open_content(&history_dir, &stored, &lives, p, e);
    let show = engine::pass::progress::shown(engine::run::logging::console_verbosity());
    let progress = engine::pass::progress::Progress::new(vec![&plan], show);
    let note = |at: u32, d: Option<engine::tree::Digest>| {
        if let Some(p) = &progress {
            engine::pass::Tracker::done(p, 0, at, d);
        }
    };
    let starting = |path: &Path, size: u64| {
        if let Some(p) = &progress {
            p.starting(path, size);
        }
    };
    let applied = apply::apply(
        &plan,
        &mut root,
        &ApplyOptions {
            src_root: &history_dir,
            direction: "VERSION -> DIR",
            meta_from_plan: true,
            verify_hash: true,
            attrs_from_source: false,
            stop: &stop,
            done: progress.as_ref().map(|_| &note as &apply::DoneFn<'_>),
            open_source: Some(&open),
            starting: progress.as_ref().map(|_| &starting as &apply::StartFn<'_>),
            halt_on_error: None,
        },
    );
    if let Some(p) = &progress {
        p.finish();
    }
    // A restore whose bytes may not be on disk has failed, like any other write.
    log::debug!("copied: {:.3}s", t0.elapsed().as_secs_f64());
    let flushed = root.sync_fs();
    if let Err(e) = &flushed {
        log::error!("{e}");
    }
    let settled = if occupied { vd.settle(home) } else { Ok(()) };
    if let Err(e) = &settled {
        log::error!("{e}");
    }
    let errors = applied.errors.len()
        + plan.errors.len()
        + usize::from(flushed.is_err())
        + usize::from(settled.is_err());
    let full = applied.errors.iter().filter(|e| e.is_no_space()).count();
    if full > 0 {
        log::warn!(
            "{full} file{} could not be restored because the disk holding {} is full: make \
             room there (or restore elsewhere with --to) and run again with --force, which \
             finishes what was restored",
            if full == 1 { "" } else { "s" },
            display(&target)
        );
    }
    if engine::run::events::enabled() {
        let actions: serde_json::Map<String, serde_json::Value> = applied
            .counts
            .by_verb
            .iter()
            .map(|(v, n)| (v.to_string(), (*n).into()))
            .collect();
        let mut f = serde_json::Map::new();
        engine::run::events::put_path(&mut f, "restored", &target);
        f.insert("version".into(), head.id.into());
        f.insert("actions".into(), actions.into());
        f.insert("bytes_copied".into(), applied.counts.bytes.into());
        f.insert("errors".into(), errors.into());
        f.insert("interrupted".into(), applied.interrupted.into());
        engine::run::events::emit("summary", f);
    }
    // Cut short: what was done is said as done, and how to finish it.
    let (what, then) = if applied.interrupted {
        (
            "restore cut short:",
            format!(
                " · the files restored are whole; run the same command again{} to finish",
                if occupied || !applied.counts.by_verb.is_empty() {
                    " with --force"
                } else {
                    ""
                }
            ),
        )
    } else {
        ("restored", String::new())
    };
    log::info!(
        "{what} {} from {}: {} · {} bytes · {errors} errors · version sha256 {}{then}",
        display(&target),
        describe(&head),
        if applied.interrupted && applied.counts.by_verb.is_empty() {
            "nothing restored yet".to_string()
        } else {
            applied.counts.summary()
        },
        applied.counts.bytes,
        match &req.subpath {
            Some(_) => hash::tree_sha256(&vtree)
                .map(|d| d.to_hex())
                .unwrap_or_default(),
            None => head.dir_sha256.clone(),
        }
    );
    Ok(RestoreOutcome {
        errors,
        interrupted: applied.interrupted,
    })
}

/// Opens the content a version holds at `p` (entry `e`): from the store, or from a live
/// directory whose file at that path still hashes to it.
fn open_content(
    history_dir: &Path,
    stored: &std::collections::HashSet<engine::tree::Digest>,
    lives: &crate::store::LiveCopies,
    p: &Path,
    e: &Entry,
) -> Result<(std::fs::File, engine::fs::Stat, PathBuf), Error> {
    let sha = e
        .hash
        .ok_or_else(|| Error::entry(p, "BUG: a version's file without its SHA-256"))?;
    if stored.contains(&sha) {
        let found = crate::store::with_root(history_dir, |h| {
            [history::object_path(&sha), history::pending_path(&sha)]
                .into_iter()
                .find_map(|rel| {
                    h.open_read(&rel)
                        .ok()
                        .map(|(f, st)| (f, st, history_dir.join(rel)))
                })
        });
        if let Some(found) = found.flatten() {
            return Ok(found);
        }
    }
    if let Some(found) = lives.find(p, &sha, e.size) {
        return Ok(found);
    }
    Err(Error::entry(
        p,
        format!(
            "its content (sha256 {}) is neither in the store nor in a live directory any more",
            sha.to_hex()
        ),
    ))
}

/// The target of a restore as a plan compares it with the version: as it is (hashed
/// where it is occupied, so that a file that already holds the version's bytes is left
/// alone). It only reads. Gives the tree, and the files of it that could not be hashed.
fn read_target(
    target: &Path,
    vd: &VersionedDir,
    sub: Option<&Path>,
    occupied: bool,
) -> Result<(Tree, Vec<Error>), Refusal> {
    let mut unhashed = Vec::new();
    let ttree = if std::fs::symlink_metadata(target).is_ok() {
        let mut t = scan_target(target, vd, sub)?;
        if occupied {
            unhashed = cache::hash_missing(target, &mut t).errors;
        }
        t
    } else {
        // Made by the restore: its own mode and mtime come from the version.
        Tree {
            root: sub
                .is_none()
                .then(|| engine::tree::Entry::dir(0, engine::tree::MTime::default())),
            ..Tree::default()
        }
    };
    Ok((ttree, unhashed))
}

/// Refuses a `--to` path that is, or sits directly in, a symlink: a restore writes only
/// where the user pointed, never through a link planted there.
fn refuse_symlinked(to: &Path) -> Result<(), Refusal> {
    let abs = std::path::absolute(to).map_err(|e| Refusal::new(format!("{}: {e}", display(to))))?;
    for p in [Some(abs.as_path()), abs.parent()].into_iter().flatten() {
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Refusal::new(format!(
                "--to {}: {} is a symlink; restore refuses to follow it (give the real path)",
                display(to),
                display(p)
            )));
        }
    }
    Ok(())
}

fn restore_options(compare_hashes: bool) -> MirrorOptions {
    MirrorOptions {
        checksum: compare_hashes,
        keep_owners: engine::fs::keeps_owners(),
        ..MirrorOptions::default()
    }
}

/// Scans the restore target, leaving out what a pass there would (the store, and
/// `lost+found` when the target is the top of a drive) and every other directory of the
/// versioned one that lives inside it (oneway's BACKUP inside SOURCE, with the store in
/// it): a restore neither compares them with the version nor removes them (the scan
/// records them as excluded, so no folder that holds one is removed whole).
fn scan_target(target: &Path, vd: &VersionedDir, sub: Option<&Path>) -> Result<Tree, Refusal> {
    let mut skip = engine::scan::left_out(&[vd.store()], &[target]);
    skip.extend(
        vd.live_dirs()
            .into_iter()
            .filter(|d| d != target && d.starts_with(target)),
    );
    let opts = ScanOptions {
        skip,
        ..ScanOptions::default()
    };
    let mut t = scan::scan(target, &opts).map_err(Refusal::from)?;
    for e in &t.errors {
        log::error!("{e}");
    }
    if let Some(sub) = sub {
        t.entries.retain(|p, _| p.starts_with(sub));
        t.root = None;
    }
    Ok(t)
}
