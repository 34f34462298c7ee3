//! The versioned store: for each versioned directory, two browsable trees
//! `<store>/<name>_1` (latest) and `<store>/<name>_0` (the one before).
//!
//! A version is a hard-link snapshot of the replica (the rsnapshot model): on the same
//! filesystem its files are links to the replica's files, so it costs directory entries
//! plus what changed. Across filesystems, or with `"versions": "copy"`, files are copied
//! (reflinked where possible) and unchanged ones are linked to the previous version.
//! A version is built (or patched from the tree it recycles) as `<name>.build`,
//! completed by writing its manifest, renamed `<name>.new`, and only then rotated in:
//! `_0` → `<name>.drop`, `_1` → `_0`, `.new` → `_1`. Every step is a rename, and
//! [`VersionedDir::repair`] finishes a rotation cut short at any point and drops a
//! `.build` (whose manifest may still be the recycled tree's), so a crash never loses
//! both versions nor takes an old tree for the latest. Nothing in a finished version is
//! modified afterwards. After the first version, `<name>.spare` — `_1`'s files linked
//! again — waits to be recycled by the second, as `_0` is by every later one.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use engine::error::{Error, IoContext};
use engine::fs::{self, Root};
use engine::hash;
use engine::names::display;
use engine::run::config::VersionMode;
use engine::run::home::{path_key, DataHome};
use engine::tree::encoding::EntryRef;
use engine::tree::{Digest, Kind, Tree};

use crate::manifest::{self, Manifest, ManifestReader, MANIFEST};
use crate::registry::{RegEntry, Registry};
use crate::snapshot;

pub use crate::slots::{check_store, remove_tree, resolve_store};
use crate::slots::{rename_tree, sync_dir, tree_at};

/// A directory whose versions are kept in a store.
#[derive(Debug, Clone)]
pub struct VersionedDir {
    dir: PathBuf,
    store: PathBuf,
    name: String,
    mode: VersionMode,
    aliases: Vec<PathBuf>,
}

/// What kind of tree a version is taken from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    /// The replica after a pass.
    Replica,
    /// The directory's contents before a restore replaces them.
    BeforeRestore,
}

/// The latest and previous version directories, as they stand.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub latest: Option<PathBuf>,
    pub previous: Option<PathBuf>,
}

/// A short description of a version that was just made.
#[derive(Debug, Clone)]
pub struct Made {
    pub files: u64,
    pub bytes: u64,
    pub dir_sha256: String,
}

impl fmt::Display for Made {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "({} files, {} bytes, sha256 {})",
            self.files, self.bytes, self.dir_sha256
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
    /// are found (oneway's BACKUP).
    pub fn new(dir: &Path, store: &Path, mode: VersionMode, aliases: Vec<PathBuf>) -> Self {
        VersionedDir {
            dir: dir.to_path_buf(),
            store: store.to_path_buf(),
            name: version_name(dir),
            mode,
            aliases,
        }
    }

    /// The versioned directory as the registry knows it.
    pub fn from_registry(e: &RegEntry) -> Self {
        VersionedDir {
            dir: e.path.clone(),
            store: e.store.clone(),
            name: e.name.clone(),
            mode: VersionMode::Link,
            aliases: Vec::new(),
        }
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

    fn slot(&self, suffix: &str) -> PathBuf {
        self.store.join(format!("{}{suffix}", self.name))
    }

    /// Takes the store's lock (waits for another holder): a file `.twoway-lock` in the
    /// store itself, so that runs with different data homes never change one store at
    /// once. The data home is not involved; the parameter keeps callers explicit about
    /// which run they are.
    pub fn lock(&self, _home: &DataHome) -> Result<engine::run::home::Lock, Error> {
        self.ensure_store()?;
        let file = Root::open(&self.store)?.open_lock_file(engine::names::LOCK_NAME)?;
        file.lock().ctx("lock", &self.store)?;
        Ok(engine::run::home::Lock::holding(file))
    }

    /// Where the latest and previous versions are now, reading only (an interrupted
    /// rotation is interpreted, not repaired). A slot that is not a directory the tool
    /// made (a symlink, a file) is no version: it is reported and never entered.
    pub fn view(&self) -> View {
        let new = self.slot(".new");
        let (one, zero) = (self.slot("_1"), self.slot("_0"));
        let exists = |p: &Path| match tree_at(p) {
            Ok(true) => std::fs::symlink_metadata(p.join(MANIFEST)).is_ok_and(|m| m.is_file()),
            Ok(false) => false,
            Err(e) => {
                log::warn!("{e}");
                false
            }
        };
        if exists(&new) {
            View {
                latest: Some(new),
                previous: if exists(&one) {
                    Some(one)
                } else if exists(&zero) {
                    Some(zero)
                } else {
                    None
                },
            }
        } else {
            View {
                latest: exists(&one).then_some(one),
                previous: exists(&zero).then_some(zero),
            }
        }
    }

    /// Makes the empty tree `slot` (a path of [`Self::slot`]) through the store's own
    /// handle.
    fn make_tree(&self, slot: &Path) -> Result<(), Error> {
        let name = slot
            .file_name()
            .ok_or_else(|| Error::entry(slot, "not a tree of the store"))?;
        let mut store = Root::open(&self.store)?;
        match store.stat(Path::new(name))? {
            Some(_) => Err(Error::entry(slot, "exists already")),
            None => store.mkdir_unfinished(Path::new(name)),
        }
    }

    /// Makes the store directory if it is missing; refuses one that is a symlink or not
    /// a directory, so nothing is ever written through it.
    pub fn ensure_store(&self) -> Result<(), Error> {
        check_store(&self.store)?;
        engine::fs::make_dir_all(&self.store)?;
        check_store(&self.store)
    }

    /// Finishes a rotation that was cut short and removes unfinished builds.
    /// Call with the store lock held. A slot that holds something the tool did not make
    /// (a symlink, a file) is an error: it is never entered nor removed.
    pub fn repair(&self) -> Result<(), Error> {
        self.ensure_store()?;
        for suffix in ["_1", "_0", ".spare"] {
            tree_at(&self.slot(suffix))?;
        }
        // A tree being built or patched: its manifest, if any, may still be the one of
        // the tree it was recycled from, so it is never taken for a version.
        let build = self.slot(".build");
        if tree_at(&build)? {
            remove_tree(&build)?;
        }
        let spare = self.slot(".spare");
        if tree_at(&spare)? && !spare.join(MANIFEST).is_file() {
            remove_tree(&spare)?;
        }
        let new = self.slot(".new");
        if tree_at(&new)? {
            if new.join(MANIFEST).is_file() {
                self.rotate_in(&new)?;
            } else {
                remove_tree(&new)?;
            }
        }
        let drop = self.slot(".drop");
        if tree_at(&drop)? {
            remove_tree(&drop)?;
        }
        Ok(())
    }

    /// `_0` → drop, `_1` → `_0`, `new` → `_1`, then the drop goes. Each step is a rename
    /// and `repair` can resume after any of them. An incomplete version (a pass that
    /// could not read everything) over an incomplete latest replaces the latest instead
    /// (`_1` → drop, `new` → `_1`): the last complete version is never pushed out.
    fn rotate_in(&self, new: &Path) -> Result<(), Error> {
        let (one, zero, drop) = (self.slot("_1"), self.slot("_0"), self.slot(".drop"));
        if tree_at(&one)? && is_incomplete(new) && is_incomplete(&one) {
            if tree_at(&drop)? {
                remove_tree(&drop)?;
            }
            rename_tree(&self.store, &one, &drop)?;
        } else if tree_at(&one)? {
            if tree_at(&zero)? {
                if tree_at(&drop)? {
                    remove_tree(&drop)?;
                }
                rename_tree(&self.store, &zero, &drop)?;
            }
            rename_tree(&self.store, &one, &zero)?;
        }
        rename_tree(&self.store, new, &one)?;
        sync_dir(&self.store)?;
        if tree_at(&drop)? {
            remove_tree(&drop)?;
        }
        Ok(())
    }

    /// True if versions of `replica` are copies: by choice, or because the store is on
    /// another filesystem (hard links cannot cross).
    fn copies_files(&self, replica: &Path) -> bool {
        self.mode == VersionMode::Copy
            || match (fs::lstat(&self.store), fs::lstat(replica)) {
                (Ok(s), Ok(r)) => s.dev != r.dev,
                _ => false,
            }
    }

    /// The latest version's manifest, if any.
    pub fn latest_manifest(&self) -> Option<Manifest> {
        self.view().latest.and_then(|p| Manifest::load(&p).ok())
    }

    /// Logs what a dry run would do about versions.
    pub fn describe_dry_run(&self) {
        log::info!(
            "would make a new version of {} in {} if its content changed",
            display(&self.dir),
            display(&self.store)
        );
    }

    /// After a pass: makes a new version from `tree` (the replica at `replica` as it now
    /// is, every file hashed) if its directory SHA-256 differs from the latest version's.
    pub fn record(
        &self,
        home: &DataHome,
        replica: &Path,
        tree: &Tree,
    ) -> Result<Option<Made>, Error> {
        let _lock = self.lock(home)?;
        self.record_locked(home, replica, tree, None)
    }

    /// [`record`](Self::record) after a pass: the tree's directory SHA-256 may be known
    /// already (the pass computed it for its summary), and a pass that could not read
    /// everything (`complete` false) makes an incomplete version, which never pushes the
    /// last complete one out of the store.
    pub fn record_pass(
        &self,
        home: &DataHome,
        replica: &Path,
        tree: &Tree,
        sha: Option<Digest>,
        complete: bool,
    ) -> Result<Option<Made>, Error> {
        let _lock = self.lock(home)?;
        self.record_locked_as(home, replica, tree, sha, complete)
    }

    fn record_locked(
        &self,
        home: &DataHome,
        replica: &Path,
        tree: &Tree,
        known_sha: Option<Digest>,
    ) -> Result<Option<Made>, Error> {
        self.record_locked_as(home, replica, tree, known_sha, true)
    }

    fn record_locked_as(
        &self,
        home: &DataHome,
        replica: &Path,
        tree: &Tree,
        known_sha: Option<Digest>,
        complete: bool,
    ) -> Result<Option<Made>, Error> {
        self.repair()?;
        let latest = self.view().latest;
        let latest_sha = latest.as_deref().and_then(|p| {
            Manifest::peek_dir_sha256(p)
                .or_else(|| Manifest::load(p).ok().map(|m| m.head.dir_sha256))
        });
        let sha = known_sha.unwrap_or_else(|| Manifest::dir_sha256_of(tree));
        if latest_sha == Some(sha.to_hex()) {
            self.register_if_missing(home, None)?;
            return Ok(None);
        }
        // The version's entries, borrowed from the tree: no list of copies is made.
        let news = || manifest::entries_of(tree);
        let mut header = manifest::Header::new(&self.dir, tree, news(), sha);
        header.incomplete = !complete;
        // An incomplete version after an incomplete latest replaces it (see
        // `rotate_in`): the previous one, maybe the last complete, is not recycled.
        let keep_previous = !complete && latest.as_deref().is_some_and(is_incomplete);
        // Only a copying store needs the previous version's list (to share unchanged files).
        let copying = self.copies_files(replica);
        let previous = if copying {
            self.latest_manifest()
        } else {
            None
        };
        // Built or patched as `.build`, then renamed `.new` once its manifest is written.
        let (build, new) = (self.slot(".build"), self.slot(".new"));
        let t0 = std::time::Instant::now();
        // The previous version (_0) is dropped by this rotation anyway: when hard links
        // are possible, it is recycled as the new version and only what changed in two
        // passes is relinked, so a version costs in proportion to the changes. With no
        // `_0` yet, the spare made after the first version is recycled instead.
        let linking = !copying && self.mode == VersionMode::Link;
        let recycling = linking && !keep_previous;
        // Its manifest is read once, entry by entry, as the walk compares it with the
        // new version's entries, before the tree is moved; a tree whose manifest does
        // not read to its end is not recycled.
        let recycled = recycling
            .then(|| {
                [self.slot("_0"), self.slot(".spare")]
                    .iter()
                    .find_map(|old| {
                        tree_at(old).ok().filter(|&is| is)?;
                        let plan = ManifestReader::open(old)
                            .and_then(|m| snapshot::plan_patch(news(), m.records()))
                            .ok()?;
                        rename_tree(&self.store, old, &build).ok().map(|()| plan)
                    })
            })
            .flatten();
        let fixes = if let Some(plan) = recycled {
            snapshot::patch(&build, replica, news, plan)?
        } else {
            self.make_tree(&build)?;
            snapshot::build(
                &build,
                replica,
                news,
                previous.as_ref(),
                // Across filesystems a link cannot work: copied from the start.
                self.mode == VersionMode::Link && !copying,
                &self.slot("_1"),
            )?
        };
        let built = t0.elapsed().as_secs_f64();
        if !fixes.is_empty() {
            // A replica file was replaced after it was hashed: the manifest records what
            // the version really holds.
            let fixed = || news().map(|e| snapshot::fixed(e, &fixes));
            let sha = manifest::sha_of(fixed()).expect("BUG: every file in a manifest has a hash");
            header = manifest::Header::new(&self.dir, tree, fixed(), sha);
            header.incomplete = !complete;
        }
        // Everything in the tree is on disk before the manifest says it is complete.
        let root = Root::open(&build)?;
        root.sync_fs()?;
        let version = || news().map(|e| snapshot::fixed(e, &fixes));
        manifest::write(&build, &header, version)?;
        rename_tree(&self.store, &build, &new)?;
        let saved = t0.elapsed().as_secs_f64();
        self.rotate_in(&new)?;
        let rotated = t0.elapsed().as_secs_f64();
        self.register(home, Some(header.made.clone()), header.incomplete)?;
        if linking {
            self.keep_spare(version);
        }
        log::debug!(
            "version of {}: built {built:.3}s, manifest {:.3}s, synced and rotated {:.3}s, \
             spare {:.3}s",
            display(&self.dir),
            saved - built,
            rotated - saved,
            t0.elapsed().as_secs_f64() - rotated
        );
        Ok(Some(Made {
            files: header.files,
            bytes: header.bytes,
            dir_sha256: header.dir_sha256,
        }))
    }

    /// After a version was rotated in: when there is no `_0` to recycle next time (the
    /// first version), makes a spare of `_1` — its files linked again, its manifest
    /// shared — which the next version recycles, so that it too costs in proportion to
    /// what changed. The store then holds two trees' entries, as it does from the
    /// second version on. A spare is no version: nothing lists or restores it, and once
    /// there is a `_0` a leftover one goes. Failing to make one only makes the next
    /// version slower, so it is logged, not an error.
    fn keep_spare<'a, I: Iterator<Item = EntryRef<'a>> + Send>(&self, entries: impl Fn() -> I) {
        let (one, zero, spare) = (self.slot("_1"), self.slot("_0"), self.slot(".spare"));
        // Stopped (Ctrl+C): the run ends sooner without one.
        if engine::run::signal::stop_requested() {
            return;
        }
        let (has_zero, has_spare) = (tree_at(&zero), tree_at(&spare));
        if !matches!((&has_zero, &has_spare), (Ok(false), Ok(false))) {
            if let (Ok(true), Ok(true)) = (has_zero, has_spare) {
                let _ = remove_tree(&spare);
            }
            return;
        }
        let made = self
            .make_tree(&spare)
            .and_then(|()| snapshot::link_tree(&spare, &one, entries))
            // The tree is on disk before its manifest says it is complete.
            .and_then(|()| Root::open(&spare)?.sync_fs())
            .and_then(|()| {
                Root::open(&spare)?.link_from(
                    &mut Root::open(&one)?,
                    Path::new(MANIFEST),
                    Path::new(MANIFEST),
                )
            });
        if let Err(e) = made {
            let quiet = matches!(&e, Error::Io { source, .. } if snapshot::cannot_link(source));
            if quiet {
                log::debug!("no spare version tree: {e}");
            } else {
                log::warn!("could not make a spare tree for the next version: {e}");
            }
            let _ = remove_tree(&spare);
        }
    }

    /// Before a pass overwrites or deletes files of `replica`: if any of them holds
    /// content that no version has, snapshot the replica as it is first.
    pub fn preserve_before_change(
        &self,
        home: &DataHome,
        replica: &Path,
        tree: &mut Tree,
        displaced: &[(PathBuf, Option<Digest>)],
    ) -> Result<bool, Error> {
        let _lock = self.lock(home)?;
        self.repair()?;
        let view = self.view();
        let versions: Vec<PathBuf> = [view.latest, view.previous].into_iter().flatten().collect();
        // A hard-link version holds a displaced file when the file is the very inode the
        // version has at that path (the tool never changes such a file in place): a stat
        // each, instead of reading the manifests.
        // Each path is looked up without following a symlink on the way.
        let replica_dev = fs::lstat(replica).map(|s| s.dev).ok();
        let mut roots: Vec<Root> = versions.iter().filter_map(|v| Root::open(v).ok()).collect();
        let mut linked = |p: &Path| -> bool {
            let Some(ino) = tree
                .entries
                .get(p)
                .filter(|e| e.kind == Kind::File)
                .map(|e| e.ino)
            else {
                return false;
            };
            roots.iter_mut().any(|r| {
                matches!(r.stat(p), Ok(Some(st)) if st.ino == ino && Some(st.dev) == replica_dev)
            })
        };
        let rest: Vec<&(PathBuf, Option<Digest>)> =
            displaced.iter().filter(|(p, _)| !linked(p)).collect();
        drop(roots);
        if rest.is_empty() {
            return Ok(false);
        }
        let mut known: HashSet<Digest> = HashSet::new();
        for p in &versions {
            // A damaged manifest vouches for nothing.
            let mut hashes = Vec::new();
            let read = ManifestReader::open(p).and_then(|mut m| {
                while let Some(h) = m.next_with(|e| e.sha256)? {
                    hashes.extend(h);
                }
                Ok(())
            });
            if read.is_ok() {
                known.extend(hashes);
            }
        }
        let mut missing = false;
        let mut replica_root = Root::open(replica)?;
        for (p, h) in rest {
            let h = match h {
                Some(h) => *h,
                None => {
                    let (d, _) = hash::hash_in(&mut replica_root, p)?;
                    if let Some(e) = tree.entries.get_mut(p) {
                        e.hash = Some(d);
                    }
                    d
                }
            };
            if !known.contains(&h) {
                missing = true;
                break;
            }
        }
        if !missing {
            return Ok(false);
        }
        let hashed = engine::scan::cache::hash_missing(replica, tree);
        if let Some(e) = hashed.errors.into_iter().next() {
            return Err(e);
        }
        log::info!(
            "saving {} as a version first: the pass replaces content no version holds",
            display(replica)
        );
        self.record_locked(home, replica, tree, None)?;
        Ok(true)
    }

    fn register_if_missing(&self, home: &DataHome, updated: Option<String>) -> Result<(), Error> {
        let reg = Registry::load(home)?;
        let all_there = reg.find(&self.dir).is_some_and(|e| e.store == self.store)
            && self
                .aliases
                .iter()
                .all(|a| reg.find(a).is_some_and(|e| e.store == self.store));
        if all_there {
            Ok(())
        } else {
            self.register(home, updated, false)
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

/// Whether the version at `dir` was made by a pass that could not read everything.
fn is_incomplete(dir: &Path) -> bool {
    ManifestReader::open(dir).is_ok_and(|m| m.header().incomplete)
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
        tree: &mut Tree,
        files: &[(PathBuf, Option<Digest>)],
    ) -> Result<(), Error> {
        self.preserve_before_change(home, root, tree, files)
            .map(|_| ())
    }

    fn record(
        &self,
        home: &DataHome,
        root: &Path,
        tree: &Tree,
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
#[path = "store_tests.rs"]
mod tests;
