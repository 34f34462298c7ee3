//! The versioned store: for each versioned directory, its history `<store>/<name>/`
//! (see [`crate::history`]): versions as manifests (the newest whole, older ones as
//! differences), and the content the live directory no longer has, by SHA-256.
//!
//! A pass keeps what it is about to replace or delete first ([`VersionedDir::keep`]):
//! the live file is linked into the store's `pending/`, so when the pass unlinks the
//! live name the store is left holding the very file (a move that copies nothing), and
//! what a pass leaves shared with a live file is copied instead. If the directory held
//! content no version records (a hand edit in BACKUP, a conflict's loser), its state
//! before the pass is recorded as a version first. After the pass
//! ([`VersionedDir::record`]) a new version is recorded if the directory's content or
//! metadata changed, and the retention policy drops what it no longer keeps.
//!
//! A store written by the earlier layout (`<name>_1/` and `<name>_0/` trees of hard
//! links) is migrated on first use: its versions are recorded in the history, the
//! content no live file holds is moved into it, then the old trees go.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use engine::error::{Error, IoContext};
use engine::fs::Root;
use engine::hash;
use engine::names::display;
use engine::run::config::{Keep, VersionMode};
use engine::run::home::{path_key, DataHome};
use engine::scan::after::{After, Before};
use engine::tree::encoding::AsEntryRef;
use engine::tree::{Digest, Entry, Kind, Tree};

use crate::history::{self, History, VersionHead, Why};
use crate::manifest::{self, Manifest};
use crate::registry::{RegEntry, Registry};

pub use crate::slots::{check_store, remove_tree, resolve_store};

/// The histories in `store` with their latest versions' heads (which name the
/// directory each keeps), read from the store itself. Nothing that cannot be read
/// counts.
pub fn histories_in(store: &Path) -> Vec<(String, VersionHead)> {
    if check_store(store).is_err() {
        return Vec::new();
    }
    let Ok(histories) = std::fs::read_dir(store) else {
        return Vec::new();
    };
    histories
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let head = History::at(e.path()).latest().ok().flatten()?;
            Some((name, head))
        })
        .collect()
}

/// The directories whose versions the default store at the top of `dir`
/// (`dir/__versions__`) keeps: a data home that does not know `dir` (another machine, a
/// new home, a service with other XDG folders) still tells a BACKUP from its SOURCE
/// this way.
pub fn versioned_in(dir: &Path) -> Vec<PathBuf> {
    histories_in(&dir.join(engine::names::VERSIONS_DIR))
        .into_iter()
        .map(|(_, head)| head.dir)
        .collect()
}

mod live;
mod migrate;

pub use live::{with_root, LiveCopies};

/// What the store keeps: the retention policy and the size budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    pub keep: Keep,
    pub max_bytes: Option<u64>,
}

/// A directory whose versions are kept in a store.
#[derive(Debug, Clone)]
pub struct VersionedDir {
    dir: PathBuf,
    store: PathBuf,
    name: String,
    aliases: Vec<PathBuf>,
    /// Other live directories that hold the same content (twoway's other replica).
    twins: Vec<PathBuf>,
    /// Other histories that receive every object this one keeps (twoway's other
    /// replica's), so that each can restore its versions alone.
    share_with: Vec<History>,
    retention: Retention,
    tag: Option<String>,
}

/// A short description of a version that was just made.
#[derive(Debug, Clone)]
pub struct Made {
    pub id: u64,
    pub files: u64,
    pub bytes: u64,
    pub dir_sha256: String,
}

impl fmt::Display for Made {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} files, {} bytes, sha256 {})",
            self.id, self.files, self.bytes, self.dir_sha256
        )
    }
}

/// The store name of a directory: its basename plus a short hash of its absolute path.
pub fn version_name(dir: &Path) -> String {
    let base: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".to_string())
        .chars()
        .map(|c| {
            if c == '\u{fffd}' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{base}-{}", &path_key(dir)[..8])
}

impl VersionedDir {
    /// `dir` is versioned in `store`; `aliases` are other paths under which its versions
    /// are found (oneway's BACKUP). The mode is no longer a choice: no version shares a
    /// file with a live directory (`"versions": "copy"` is read as on).
    pub fn new(dir: &Path, store: &Path, _mode: VersionMode, aliases: Vec<PathBuf>) -> Self {
        VersionedDir {
            dir: dir.to_path_buf(),
            store: store.to_path_buf(),
            name: version_name(dir),
            aliases,
            twins: Vec::new(),
            share_with: Vec::new(),
            retention: Retention::default(),
            tag: None,
        }
    }

    /// The versioned directory as the registry knows it.
    pub fn from_registry(e: &RegEntry) -> Self {
        VersionedDir {
            dir: e.path.clone(),
            store: e.store.clone(),
            name: e.name.clone(),
            aliases: Vec::new(),
            twins: e.twins.clone(),
            share_with: Vec::new(),
            retention: Retention::default(),
            tag: None,
        }
    }

    /// Keeps versions as `retention` says, and tags the next version made `tag`.
    pub fn with_policy(
        mut self,
        (keep, max_bytes): (Keep, Option<u64>),
        tag: Option<String>,
    ) -> Self {
        self.retention = Retention { keep, max_bytes };
        self.tag = tag;
        self
    }

    /// `twin` (the other replica of a pair, versioned in `twin_store`) holds the same
    /// content: every object this store keeps is given to its history too.
    pub fn with_twin(mut self, twin: &Path, twin_store: &Path) -> Self {
        self.twins.push(twin.to_path_buf());
        self.share_with
            .push(History::at(twin_store.join(version_name(twin))));
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store(&self) -> &Path {
        &self.store
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The live directories that may hold a version's content: the directory itself,
    /// then its aliases and twins.
    pub fn live_dirs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.dir.clone()];
        for d in self.aliases.iter().chain(&self.twins) {
            if !v.contains(d) {
                v.push(d.clone());
            }
        }
        v
    }

    pub fn history(&self) -> History {
        History::at(self.store.join(&self.name))
    }

    fn slot(&self, suffix: &str) -> PathBuf {
        self.store.join(format!("{}{suffix}", self.name))
    }

    /// Takes the store's lock (waits for another holder): a file `.twoway-lock` in the
    /// store itself, so that runs with different data homes never change one store at
    /// once.
    pub fn lock(&self, _home: &DataHome) -> Result<engine::run::home::Lock, Error> {
        self.ensure_store()?;
        let file = Root::open(&self.store)?.open_lock_file(engine::names::LOCK_NAME)?;
        file.lock().ctx("lock", &self.store)?;
        Ok(engine::run::home::Lock::holding(file))
    }

    /// Makes the store directory if it is missing; refuses one that is a symlink or not
    /// a directory, so nothing is ever written through it.
    pub fn ensure_store(&self) -> Result<(), Error> {
        check_store(&self.store)?;
        engine::fs::make_dir_all(&self.store)?;
        check_store(&self.store)
    }

    /// Brings the store to a clean state: migrates the earlier layout, finishes or
    /// undoes what a killed run left, settles kept files and shares them. Call with the
    /// store lock held.
    pub fn repair(&self) -> Result<(), Error> {
        self.ensure_store()?;
        self.migrate()?;
        self.history().repair(&self.twin_histories())
    }

    /// The histories of the twins whose store exists (and is a directory, not a link).
    fn twin_histories(&self) -> Vec<History> {
        self.share_with
            .iter()
            .filter(|h| {
                h.path()
                    .parent()
                    .is_some_and(|s| check_store(s).is_ok() && s.is_dir())
            })
            .cloned()
            .collect()
    }

    /// The latest version's head, if any.
    pub fn latest(&self) -> Result<Option<VersionHead>, Error> {
        self.history().latest()
    }

    /// Logs what a dry run would do about versions.
    pub fn describe_dry_run(&self) {
        log::info!(
            "would keep what the pass replaces in {} and make a new version of {} if it changed",
            display(&self.store),
            display(&self.dir)
        );
    }

    /// Records `tree` (the directory at `replica` now, every file hashed) as a version
    /// if its content or metadata differ from the latest.
    pub fn record(
        &self,
        home: &DataHome,
        replica: &Path,
        tree: &Tree,
    ) -> Result<Option<Made>, Error> {
        let _lock = self.lock(home)?;
        self.repair()?;
        self.record_locked(home, replica, After::Whole(tree), None, true, Why::Pass)
    }

    /// [`record`](Self::record) after a pass: the tree's directory SHA-256 may be known
    /// already, and a pass that ended with errors (`complete` false) makes an
    /// incomplete version.
    pub fn record_pass(
        &self,
        home: &DataHome,
        replica: &Path,
        tree: After<'_>,
        sha: Option<Digest>,
        complete: bool,
    ) -> Result<Option<Made>, Error> {
        let t0 = std::time::Instant::now();
        let _lock = self.lock(home)?;
        self.ensure_store()?;
        self.migrate()?;
        let history = self.history();
        history.repair_versions()?;
        let repaired = t0.elapsed().as_secs_f64();
        // What the pass kept is settled into the store while the version is recorded:
        // neither reads what the other writes (a version's content is found in
        // `objects/` and `pending/` alike), and retention waits for both.
        let twins = self.twin_histories();
        let (settled, made) = engine::parallel::join(
            || history.settle_pending(&twins),
            || self.record_locked(home, replica, tree, sha, complete, Why::Pass),
        );
        settled?;
        let made = match made {
            // The drive filled up, perhaps while a kept file was copied in beside the
            // version (a copy that failed, whose space comes back once the filesystem
            // is flushed): the version is tried once more. Until it is written the one
            // before stays the latest, and the kept files stay in `pending/`.
            Err(e) if e.is_no_space() => {
                history.open_made()?.sync_fs()?;
                self.record_locked(home, replica, tree, sha, complete, Why::Pass)?
            }
            made => made?,
        };
        if let (Some(m), true) = (&made, engine::run::events::enabled()) {
            engine::run::events::version(&self.dir, m.id, m.files, m.bytes, &m.dir_sha256);
        }
        // The latest version now names where the pass moved files.
        history.clear_moves()?;
        let recorded = t0.elapsed().as_secs_f64();
        if made.is_some() {
            // The version just made is `tree`: the content it holds is checked in memory
            // where the tree is held whole.
            let newest = match tree {
                After::Whole(t) => Some(t),
                After::Merged(_) => None,
            };
            self.apply_retention(newest)?;
        }
        log::debug!(
            "store of {}: repaired {repaired:.3}s, settled and recorded {:.3}s, retention {:.3}s",
            display(&self.dir),
            recorded - repaired,
            t0.elapsed().as_secs_f64() - recorded
        );
        Ok(made)
    }

    /// Whether the latest version is `tree`, read compact by a pass that found
    /// nothing to do (`sha`: its directory SHA-256, proven by the stat cache; every
    /// file hashed): then [`Self::record_pass`] would make no version. The store is
    /// repaired and registered as that does; a store that holds what a pass cut short
    /// left (kept files to settle, moves noted) answers `false`, for `record_pass` to
    /// settle.
    pub fn is_latest(
        &self,
        home: &DataHome,
        tree: &engine::tree::compact::CompactTree,
        sha: Digest,
    ) -> Result<bool, Error> {
        let _lock = self.lock(home)?;
        self.ensure_store()?;
        self.migrate()?;
        let history = self.history();
        history.repair_versions()?;
        if !history.is_settled()? {
            return Ok(false);
        }
        let Some(latest) = history.latest()? else {
            return Ok(false);
        };
        if latest.dir_sha256 != sha.to_hex() {
            return Ok(false);
        }
        // The metadata digest of every entry: a pass that found nothing to do has
        // nothing unknown, and a hash for every file (see `manifest::entries_of`).
        let mut meta = history::MetaDigest::new(root_meta(tree.root.as_ref()));
        let mut c = tree.entries.cursor();
        while let Some((p, e)) = c.next_entry() {
            meta.add(&engine::tree::encoding::EntryRef::new(p, &e));
        }
        if latest.meta_sha256 != meta.finish() {
            return Ok(false);
        }
        self.register_if_missing(home)?;
        Ok(true)
    }

    fn record_locked(
        &self,
        home: &DataHome,
        _replica: &Path,
        tree: After<'_>,
        known_sha: Option<Digest>,
        complete: bool,
        why: Why,
    ) -> Result<Option<Made>, Error> {
        let root = tree.root();
        match tree {
            After::Whole(t) => self.record_entries(
                home,
                root,
                || manifest::entries_of(t),
                known_sha.unwrap_or_else(|| Manifest::dir_sha256_of(t)),
                complete,
                why,
            ),
            After::Merged(m) => {
                let news = || manifest::records_of(m);
                let sha = match known_sha {
                    Some(s) => s,
                    None => {
                        manifest::sha_of_records(news).expect("BUG: only hashed files are listed")
                    }
                };
                self.record_entries(home, root, news, sha, complete, why)
            }
        }
    }

    /// Records the entries `news` gives (in path order, afresh each call; every file
    /// hashed), whose directory SHA-256 is `sha`, as a version if they differ from the
    /// latest.
    fn record_entries<I: Iterator<Item: AsEntryRef>>(
        &self,
        home: &DataHome,
        root: Option<&Entry>,
        news: impl Fn() -> I,
        sha: Digest,
        complete: bool,
        why: Why,
    ) -> Result<Option<Made>, Error> {
        let history = self.history();
        let latest = history.latest()?;
        let root_meta = root_meta(root);
        let mut head = VersionHead {
            id: 0,
            dir: self.dir.clone(),
            made: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            why,
            dir_sha256: sha.to_hex(),
            meta_sha256: String::new(),
            files: 0,
            bytes: 0,
            root_mode: root_meta.0,
            root_mtime: root_meta.1,
            incomplete: !complete,
            added: 0,
            changed: 0,
            removed: 0,
        };
        // Content that differs from the latest version's makes a version: its metadata
        // digest and counts are worked out as it is written. Else they tell whether
        // anything changed, in one reading of the entries first.
        let fill = if latest
            .as_ref()
            .is_none_or(|l| l.dir_sha256 != head.dir_sha256)
        {
            Some(root_meta)
        } else {
            let t0 = std::time::Instant::now();
            let mut digest = history::MetaDigest::new(root_meta);
            for e in news() {
                let e = e.entry_ref();
                digest.add(&e);
                if e.kind == Kind::File {
                    head.files += 1;
                    head.bytes += e.size;
                }
            }
            head.meta_sha256 = digest.finish();
            log::debug!("metadata digest: {:.3}s", t0.elapsed().as_secs_f64());
            if latest
                .as_ref()
                .is_some_and(|l| l.meta_sha256 == head.meta_sha256)
            {
                self.register_if_missing(home)?;
                return Ok(None);
            }
            None
        };
        let t0 = std::time::Instant::now();
        let head = history.record_filling(head, news, fill)?;
        let id = head.id;
        log::debug!(
            "version {id} of {}: manifest {:.3}s",
            display(&self.dir),
            t0.elapsed().as_secs_f64()
        );
        if why == Why::Pass {
            if let Some(tag) = &self.tag {
                let mut tags = history.tags()?;
                tags.insert(tag.clone(), id);
                history.set_tags(&tags)?;
            }
        }
        self.register(home, Some(head.made.clone()), head.incomplete)?;
        Ok(Some(Made {
            id,
            files: head.files,
            bytes: head.bytes,
            dir_sha256: head.dir_sha256,
        }))
    }

    /// Drops the versions the retention policy no longer keeps, then the content no
    /// version needs; then, over a size budget, the oldest versions (never the latest
    /// two nor a tagged one) until the history fits. Everything dropped is logged.
    pub fn apply_retention(&self, newest: Option<&Tree>) -> Result<(), Error> {
        let history = self.history();
        let listed = history.list()?;
        let tags = history.tags()?;
        let mut tagged: BTreeSet<u64> = tags.values().copied().collect();
        // The newest complete version stays while only incomplete ones follow it: they
        // lack what their passes could not read.
        tagged.extend(
            listed
                .iter()
                .rev()
                .find(|l| !l.head.incomplete)
                .map(|l| l.head.id),
        );
        let times: Vec<(u64, chrono::DateTime<chrono::Utc>)> = listed
            .iter()
            .map(|l| (l.head.id, parse_time(&l.head.made)))
            .collect();
        let kept = crate::retention::kept(&times, &tagged, &self.retention.keep);
        let drop: BTreeSet<u64> = times
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !kept.contains(id))
            .collect();
        self.forget(&history, &listed, &drop, newest)?;
        let Some(budget) = self.retention.max_bytes else {
            return Ok(());
        };
        loop {
            let used = self.store_bytes()?;
            if used <= budget {
                return Ok(());
            }
            let listed = history.list()?;
            let newest_two: BTreeSet<u64> =
                listed.iter().rev().take(2).map(|l| l.head.id).collect();
            let Some(oldest) = listed
                .iter()
                .map(|l| l.head.id)
                .find(|id| !newest_two.contains(id) && !tagged.contains(id))
            else {
                log::warn!(
                    "the history of {} takes {used} bytes, over max_store_bytes {budget}, \
                     and holds only versions that are kept whatever the budget",
                    display(&self.dir)
                );
                return Ok(());
            };
            log::info!(
                "the history of {} takes {used} bytes, over max_store_bytes {budget}",
                display(&self.dir)
            );
            self.forget(&history, &listed, &BTreeSet::from([oldest]), newest)?;
        }
    }

    /// Drops `ids` and the content no version left needs, logging each. `newest`: the
    /// tree the newest version was just recorded from, if it is at hand.
    fn forget(
        &self,
        history: &History,
        listed: &[history::Listed],
        ids: &BTreeSet<u64>,
        newest: Option<&Tree>,
    ) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut candidates = history.forget(ids)?;
        if let Some(tree) = newest {
            for (_, e) in tree.entries.iter() {
                if candidates.is_empty() {
                    break;
                }
                if let Some(h) = e.hash.filter(|_| e.kind == Kind::File) {
                    candidates.remove(&h);
                }
            }
        }
        for l in listed.iter().filter(|l| ids.contains(&l.head.id)) {
            log::info!(
                "dropped version {} of {} (made {}, {} files)",
                l.head.id,
                display(&self.dir),
                l.head.made,
                l.head.files
            );
        }
        let (n, bytes) = history.collect_garbage_but(Some(&candidates), newest.is_some())?;
        if n > 0 {
            log::info!(
                "freed {bytes} bytes of {} in {n} files no version needs any more",
                display(&self.store)
            );
        }
        Ok(())
    }

    /// Bytes the history takes: its objects and its version files.
    pub fn store_bytes(&self) -> Result<u64, Error> {
        let history = self.history();
        let objects: u64 = history.objects()?.iter().map(|(_, s)| s).sum();
        let files: u64 = history.list()?.iter().map(|l| l.file_bytes).sum();
        Ok(objects + files)
    }

    /// Before a pass (or a restore) overwrites or deletes `files` of `replica` (scanned
    /// as `tree`): records the replica's state as a version first when it holds content
    /// the latest version does not (or always, with `before` set to a restore's reason),
    /// then keeps each file in the store. Gives back the entries of `tree` whose hash it
    /// had to work out, with it (the tree itself is left as it is: a pass's plan borrows
    /// it while this runs).
    pub fn keep_files(
        &self,
        home: &DataHome,
        replica: &Path,
        scanned: Before<'_>,
        sha: Option<Digest>,
        files: &[(PathBuf, Option<Digest>)],
        before: Option<Why>,
    ) -> Result<Vec<(PathBuf, Entry)>, Error> {
        let Before { held: tree, rest } = scanned;
        let t0 = std::time::Instant::now();
        let _lock = self.lock(home)?;
        self.repair()?;
        let repaired = t0.elapsed().as_secs_f64();
        let history = self.history();
        let mut live = Root::open(replica)?;
        // Every file kept needs its SHA-256 (its name in the store).
        let mut shas: Vec<(&Path, Digest)> = Vec::with_capacity(files.len());
        let mut learned: Vec<(PathBuf, Entry)> = Vec::new();
        for (p, h) in files {
            let sha = match h.or_else(|| tree.entries.get(p).and_then(|e| e.hash)) {
                Some(h) => h,
                None => {
                    let (d, _) = hash::hash_in(&mut live, p)?;
                    if let Some(e) = tree.entries.get(p) {
                        let mut e = e.clone();
                        e.hash = Some(d);
                        learned.push((p.clone(), e));
                    }
                    d
                }
            };
            shas.push((p, sha));
        }
        // The replica's files are the latest version's (its directory SHA-256, from the
        // stat cache, is the latest's: the same paths with the same SHA-256): the latest
        // holds every file the pass replaces, whatever their metadata.
        let is_latest = |latest: &VersionHead| sha.is_some_and(|s| s.to_hex() == latest.dir_sha256);
        let why = match before {
            Some(why) => Some(why),
            None => {
                let held = match history.latest()? {
                    Some(l) if is_latest(&l) => true,
                    Some(_) => history.latest_holds(&shas)?,
                    None => false,
                };
                (!held).then_some(Why::BeforePass)
            }
        };
        let checked = t0.elapsed().as_secs_f64();
        if let Some(why) = why {
            // The version needs every file's hash: worked out in a copy of the tree
            // (this costs a second tree, and only here: a replica holding content that
            // no version has).
            let unhashed = |t: &Tree| {
                t.entries.iter().any(|(p, e)| {
                    e.kind == Kind::File && e.hash.is_none() && !t.unknown.contains(p)
                })
            };
            let hashed_copy;
            let whole = if unhashed(tree) {
                // (Its scan's errors stay with the tree: `complete` below reads them.)
                let mut t = Tree {
                    root: tree.root.clone(),
                    entries: tree.entries.clone(),
                    unknown: tree.unknown.clone(),
                    excluded: tree.excluded.clone(),
                    leftovers: tree.leftovers.clone(),
                    specials: tree.specials.clone(),
                    errors: Vec::new(),
                };
                for (p, e) in &learned {
                    if let Some(slot) = t.entries.get_mut(p) {
                        *slot = e.clone();
                    }
                }
                let hashed = engine::scan::cache::hash_missing(replica, &mut t);
                if let Some(e) = hashed.errors.into_iter().next() {
                    return Err(e);
                }
                learned = engine::tree::zip_paths(&tree.entries, &t.entries)
                    .filter_map(|(p, before, after)| {
                        let after = after?;
                        (before?.hash.is_none() && after.hash.is_some())
                            .then(|| (p.to_path_buf(), after.clone()))
                    })
                    .collect();
                hashed_copy = t;
                &hashed_copy
            } else {
                tree
            };
            let complete = tree.errors.is_empty();
            // Only the part a pass planned is held: the rest as read, merged with it.
            let merged = rest.map(|r| r.with(whole));
            let before = match &merged {
                Some(m) => After::Merged(m),
                None => After::Whole(whole),
            };
            if let Some(made) = self.record_locked(home, replica, before, None, complete, why)? {
                log::info!(
                    "saved {} as version {} first ({}): it holds content no version had",
                    display(replica),
                    made.id,
                    why.as_str()
                );
            }
        }
        let mut root = history.open_made()?;
        if !shas.is_empty() {
            // Each file kept is a link (or a copy) of its own: shared out over the cores.
            let next = std::sync::atomic::AtomicUsize::new(0);
            let kept = engine::parallel::workers(shas.len(), || -> Result<(), Error> {
                let (mut root, mut live) = (root.try_clone()?, live.try_clone()?);
                while let Some((p, sha)) =
                    shas.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    History::keep_file(&mut root, &mut live, p, sha)?;
                }
                Ok(())
            });
            kept.into_iter().collect::<Result<(), Error>>()?;
            root.sync_dir_of(&Path::new("pending").join("x"))?;
            // Content this store held already was kept without a pending file, which is
            // what gives a twin's store its share when it settles: given now, so that a
            // twin whose latest version names it (a file deleted on its side, whose
            // content its store had let go) still holds it.
            let held: Vec<Digest> = shas.iter().map(|(_, sha)| *sha).collect();
            for twin in self.twin_histories() {
                if let Err(e) = history.share_objects(&held, &twin) {
                    log::warn!(
                        "could not give {} the content it kept: {e}",
                        display(twin.path())
                    );
                }
            }
        }
        log::debug!(
            "kept {} files of {}: settled {repaired:.3}s, checked {:.3}s, kept {:.3}s",
            shas.len(),
            display(replica),
            checked - repaired,
            t0.elapsed().as_secs_f64() - checked
        );
        Ok(learned)
    }

    /// After a restore: what it replaced goes from `pending/` into the store.
    pub fn settle(&self, home: &DataHome) -> Result<(), Error> {
        let _lock = self.lock(home)?;
        self.history().settle_pending(&self.twin_histories())
    }

    fn register_if_missing(&self, home: &DataHome) -> Result<(), Error> {
        let reg = Registry::load(home)?;
        let all_there = reg.find(&self.dir).is_some_and(|e| {
            e.store == self.store && self.live_dirs()[1..].iter().all(|t| e.twins.contains(t))
        }) && self
            .aliases
            .iter()
            .all(|a| reg.find(a).is_some_and(|e| e.store == self.store));
        if all_there {
            Ok(())
        } else {
            self.register(home, None, false)
        }
    }

    /// Records this directory (and its aliases) in the registry.
    pub fn register(
        &self,
        home: &DataHome,
        updated: Option<String>,
        incomplete: bool,
    ) -> Result<(), Error> {
        Registry::update(home, |reg| {
            let entry = RegEntry {
                path: self.dir.clone(),
                store: self.store.clone(),
                name: self.name.clone(),
                alias_of: None,
                updated: updated.clone(),
                incomplete,
                other_stores: Vec::new(),
                twins: self.live_dirs().split_off(1),
            };
            for a in &self.aliases {
                reg.insert(RegEntry {
                    path: a.clone(),
                    alias_of: Some(self.dir.clone()),
                    ..entry.clone()
                });
            }
            reg.insert(entry);
        })
    }
}

/// The mode and mtime of a tree's root (its entry `root`), as a version records them.
fn root_meta(root: Option<&Entry>) -> (u32, (i64, u32)) {
    root.map_or((0o755, (0, 0)), |r| (r.mode, (r.mtime.sec, r.mtime.nsec)))
}

/// A version's time; an unreadable one counts as the oldest.
pub fn parse_time(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default()
}

/// The store as the engine's pass pipeline uses it.
impl engine::pass::Versions for VersionedDir {
    fn ensure(&self) -> Result<(), Error> {
        self.ensure_store()
    }

    fn keep(
        &self,
        home: &DataHome,
        root: &Path,
        tree: &Tree,
        rest: Option<engine::scan::after::Rest<'_>>,
        sha: Option<Digest>,
        first: &engine::pass::KeepFirst,
    ) -> Result<Vec<(PathBuf, Entry)>, Error> {
        if !first.moved.is_empty() {
            let _lock = self.lock(home)?;
            self.history().note_moves(&first.moved)?;
        }
        if first.lost.is_empty() {
            return Ok(Vec::new());
        }
        self.keep_files(
            home,
            root,
            Before { held: tree, rest },
            sha,
            &first.lost,
            None,
        )
    }

    fn is_latest(
        &self,
        home: &DataHome,
        _root: &Path,
        tree: &engine::tree::compact::CompactTree,
        sha: Digest,
    ) -> Result<bool, Error> {
        VersionedDir::is_latest(self, home, tree, sha)
    }

    fn record(
        &self,
        home: &DataHome,
        root: &Path,
        tree: After<'_>,
        sha: Option<Digest>,
        complete: bool,
    ) -> Result<Option<String>, Error> {
        Ok(self
            .record_pass(home, root, tree, sha, complete)?
            .map(|made| made.to_string()))
    }

    fn describe_dry_run(&self) {
        VersionedDir::describe_dry_run(self)
    }
}

#[cfg(test)]
mod tests;
