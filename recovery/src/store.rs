//! The versioned store: for each versioned directory, two browsable trees
//! `<store>/<name>_1` (latest) and `<store>/<name>_0` (the one before).
//!
//! A version is a hard-link snapshot of the replica (the rsnapshot model): on the same
//! filesystem its files are links to the replica's files, so it costs directory entries
//! plus what changed. Across filesystems, or with `"versions": "copy"`, files are copied
//! (reflinked where possible) and unchanged ones are linked to the previous version.
//! A version is built as `<name>.new`, completed by writing its manifest, and only then
//! rotated in: `_0` → `<name>.drop`, `_1` → `_0`, `.new` → `_1`. Every step is a rename,
//! and [`VersionedDir::repair`] finishes a rotation cut short at any point, so a crash
//! never loses both versions. Nothing in a finished version is modified afterwards.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use engine::config::VersionMode;
use engine::error::{Error, IoContext};
use engine::fsops::{self, Root};
use engine::hash;
use engine::home::{path_key, DataHome};
use engine::names::display;
use engine::tree::{Digest, Kind, MTime, Tree};

use crate::manifest::{Manifest, ManifestEntry, MANIFEST};
use crate::registry::{RegEntry, Registry};

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

    fn lock_name(&self) -> String {
        format!("store-{}", path_key(&self.dir))
    }

    /// Takes this directory's store lock (waits for another holder).
    pub fn lock(&self, home: &DataHome) -> Result<engine::home::Lock, Error> {
        home.lock_wait(&self.lock_name())
    }

    /// Where the latest and previous versions are now, reading only (an interrupted
    /// rotation is interpreted, not repaired).
    pub fn view(&self) -> View {
        let new = self.slot(".new");
        let (one, zero) = (self.slot("_1"), self.slot("_0"));
        let exists = |p: &Path| p.join(MANIFEST).is_file();
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

    /// Finishes a rotation that was cut short and removes unfinished builds.
    /// Call with the store lock held.
    pub fn repair(&self) -> Result<(), Error> {
        let new = self.slot(".new");
        if new.exists() {
            if new.join(MANIFEST).is_file() {
                self.rotate_in(&new)?;
            } else {
                remove_tree(&new)?;
            }
        }
        let drop = self.slot(".drop");
        if drop.exists() {
            remove_tree(&drop)?;
        }
        Ok(())
    }

    /// `_0` → drop, `_1` → `_0`, `new` → `_1`, then the drop goes. Each step is a rename
    /// and `repair` can resume after any of them.
    fn rotate_in(&self, new: &Path) -> Result<(), Error> {
        let (one, zero, drop) = (self.slot("_1"), self.slot("_0"), self.slot(".drop"));
        if one.exists() {
            if zero.exists() {
                if drop.exists() {
                    remove_tree(&drop)?;
                }
                std::fs::rename(&zero, &drop).ctx("rename", &zero)?;
            }
            std::fs::rename(&one, &zero).ctx("rename", &one)?;
        }
        std::fs::rename(new, &one).ctx("rename", new)?;
        sync_dir(&self.store);
        if drop.exists() {
            remove_tree(&drop)?;
        }
        Ok(())
    }

    /// True if versions of `replica` are copies: by choice, or because the store is on
    /// another filesystem (hard links cannot cross).
    fn copies_files(&self, replica: &Path) -> bool {
        self.mode == VersionMode::Copy
            || match (fsops::lstat(&self.store), fsops::lstat(replica)) {
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

    /// [`record`](Self::record) with the tree's directory SHA-256 already known (the
    /// pass computed it for its summary).
    pub fn record_with_sha(
        &self,
        home: &DataHome,
        replica: &Path,
        tree: &Tree,
        sha: Digest,
    ) -> Result<Option<Made>, Error> {
        let _lock = self.lock(home)?;
        self.record_locked(home, replica, tree, Some(sha))
    }

    fn record_locked(
        &self,
        home: &DataHome,
        replica: &Path,
        tree: &Tree,
        known_sha: Option<Digest>,
    ) -> Result<Option<Made>, Error> {
        std::fs::create_dir_all(&self.store).ctx("mkdir", &self.store)?;
        self.repair()?;
        let latest = self.view().latest;
        let latest_sha = latest.as_deref().and_then(|p| {
            Manifest::peek_dir_sha256(p).or_else(|| Manifest::load(p).ok().map(|m| m.dir_sha256))
        });
        let sha = known_sha.unwrap_or_else(|| Manifest::dir_sha256_of(tree));
        if latest_sha == Some(sha.to_hex()) {
            self.register_if_missing(home, None)?;
            return Ok(None);
        }
        let mut manifest = Manifest::from_tree(&self.dir, tree);
        // Only a copying store needs the previous version's list (to share unchanged files).
        let copying = self.copies_files(replica);
        let previous = if copying {
            self.latest_manifest()
        } else {
            None
        };
        let new = self.slot(".new");
        let t0 = std::time::Instant::now();
        // The previous version (_0) is dropped by this rotation anyway: when hard links
        // are possible, it is recycled as the new version and only what changed in two
        // passes is relinked, so a version costs in proportion to the changes.
        let zero = self.slot("_0");
        let recycled = if !copying && self.mode == VersionMode::Link {
            match Manifest::load(&zero) {
                Ok(old) if std::fs::rename(&zero, &new).is_ok() => Some(old),
                _ => None,
            }
        } else {
            None
        };
        match recycled {
            Some(old) => self.patch(&new, replica, &mut manifest, &old)?,
            None => {
                std::fs::create_dir(&new).ctx("mkdir", &new)?;
                self.build(&new, replica, &mut manifest, previous.as_ref())?;
            }
        }
        let built = t0.elapsed().as_secs_f64();
        manifest.save(&new)?;
        let saved = t0.elapsed().as_secs_f64();
        Root::open(&new)?.sync_fs()?;
        self.rotate_in(&new)?;
        let rotated = t0.elapsed().as_secs_f64();
        self.register(home, Some(manifest.made.clone()))?;
        log::debug!(
            "version of {}: built {built:.3}s, manifest {:.3}s, synced and rotated {:.3}s",
            display(&self.dir),
            saved - built,
            rotated - saved
        );
        Ok(Some(Made {
            files: manifest.files,
            bytes: manifest.bytes,
            dir_sha256: manifest.dir_sha256,
        }))
    }

    /// Fills `new` with the manifest's entries, linked or copied from `replica`.
    /// Fills `new` with the manifest's entries, linked or copied from `replica`:
    /// directories first, then files and links on every core.
    fn build(
        &self,
        new: &Path,
        replica: &Path,
        manifest: &mut Manifest,
        previous: Option<&Manifest>,
    ) -> Result<(), Error> {
        let mut dst = Root::open(new)?;
        let mut dirs = Vec::new();
        for e in manifest.entries.iter().filter(|e| e.kind == "dir") {
            dst.mkdir(&e.path, e.mode)?;
            dirs.push((e.path.clone(), e.mode, MTime::new(e.mtime.0, e.mtime.1)));
        }
        let prev_files: std::collections::HashMap<&Path, (&str, u32, (i64, u32))> = previous
            .iter()
            .flat_map(|m| m.entries.iter())
            .filter_map(|e| Some((e.path.as_path(), (e.sha256.as_deref()?, e.mode, e.mtime))))
            .collect();
        let link_ok = std::sync::atomic::AtomicBool::new(
            previous.is_none() && self.mode == VersionMode::Link,
        );
        let work: Vec<&ManifestEntry> = manifest
            .entries
            .iter()
            .filter(|e| e.kind != "dir")
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = hash::default_threads().min(work.len()).max(1);
        let prev_dir = self.slot("_1");
        type Fix = (usize, Digest, fsops::Stat);
        let results: Vec<Result<Vec<Fix>, Error>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| -> Result<Vec<Fix>, Error> {
                        let mut dst = Root::open(new)?;
                        let mut src = Root::open(replica)?;
                        let mut prev_root = if previous.is_some() {
                            Root::open(&prev_dir).ok()
                        } else {
                            None
                        };
                        let mut fixes = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(e) = work.get(i) else { break };
                            if let Some(fix) = self.put_entry(
                                e,
                                new,
                                &mut dst,
                                &mut src,
                                prev_root.as_mut(),
                                &prev_files,
                                &link_ok,
                            )? {
                                fixes.push((i, fix.0, fix.1));
                            }
                        }
                        Ok(fixes)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("BUG: version workers do not panic"))
                .collect()
        });
        let mut fixes: std::collections::HashMap<PathBuf, (Digest, fsops::Stat)> =
            Default::default();
        for r in results {
            for (i, d, st) in r? {
                fixes.insert(work[i].path.clone(), (d, st));
            }
        }
        self.finish_tree(&mut dst, dirs, manifest, fixes)
    }

    /// Turns the recycled version tree at `new` (described by `old`) into the one
    /// `manifest` describes: a file stays when it is still the replica's very inode with
    /// the same bytes and metadata; everything else is removed and linked again.
    fn patch(
        &self,
        new: &Path,
        replica: &Path,
        manifest: &mut Manifest,
        old: &Manifest,
    ) -> Result<(), Error> {
        // The old manifest's own file goes: a new one is written when the tree is done.
        let _ = std::fs::remove_file(new.join(MANIFEST));
        let old_map: std::collections::BTreeMap<PathBuf, &ManifestEntry> =
            old.entries.iter().map(|e| (e.path.clone(), e)).collect();
        let new_map: std::collections::BTreeMap<PathBuf, &ManifestEntry> = manifest
            .entries
            .iter()
            .map(|e| (e.path.clone(), e))
            .collect();
        let keeps = |o: &ManifestEntry, n: &ManifestEntry| -> bool {
            o.kind == n.kind
                && match n.kind.as_str() {
                    "dir" => true,
                    "symlink" => o.target == n.target && o.mtime == n.mtime,
                    _ => {
                        o.ino.is_some()
                            && o.ino == n.ino
                            && o.sha256 == n.sha256
                            && o.mode == n.mode
                            && o.mtime == n.mtime
                            && o.size == n.size
                    }
                }
        };
        let mut dst = Root::open(new)?;
        let mut src = Root::open(replica)?;
        let mut removed_dir: Option<PathBuf> = None;
        let mut puts: Vec<&ManifestEntry> = Vec::new();
        for (p, o, n) in engine::tree::zip_paths(&old_map, &new_map) {
            if removed_dir.as_ref().is_some_and(|d| p.starts_with(d)) {
                if let Some(n) = n {
                    puts.push(n);
                }
                continue;
            }
            removed_dir = None;
            match (o, n) {
                (Some(o), Some(n)) if keeps(o, n) => {}
                (Some(o), n) => {
                    dst.remove(p)?;
                    if o.kind == "dir" {
                        removed_dir = Some(p.clone());
                    }
                    if let Some(n) = n {
                        puts.push(n);
                    }
                }
                (None, Some(n)) => puts.push(n),
                (None, None) => {}
            }
        }
        let no_prev = std::collections::HashMap::new();
        let link_ok = std::sync::atomic::AtomicBool::new(true);
        let mut fixes: std::collections::HashMap<PathBuf, (Digest, fsops::Stat)> =
            Default::default();
        for n in puts {
            if n.kind == "dir" {
                dst.mkdir(&n.path, n.mode)?;
            } else if let Some(fix) =
                self.put_entry(n, new, &mut dst, &mut src, None, &no_prev, &link_ok)?
            {
                fixes.insert(n.path.clone(), fix);
            }
        }
        let dirs: Vec<(PathBuf, u32, MTime)> = manifest
            .entries
            .iter()
            .filter(|e| e.kind == "dir")
            .map(|e| (e.path.clone(), e.mode, MTime::new(e.mtime.0, e.mtime.1)))
            .collect();
        self.finish_tree(&mut dst, dirs, manifest, fixes)
    }

    /// Sets the version's directory modes and mtimes (owner-writable, so the version can be
    /// dropped later; the real modes are in the manifest) and records what changed while
    /// the version was made.
    fn finish_tree(
        &self,
        dst: &mut Root,
        dirs: Vec<(PathBuf, u32, MTime)>,
        manifest: &mut Manifest,
        fixes: std::collections::HashMap<PathBuf, (Digest, fsops::Stat)>,
    ) -> Result<(), Error> {
        for (p, mode, mtime) in dirs.into_iter().rev() {
            dst.set_dir_meta(&p, mode | 0o700, mtime)?;
        }
        if !fixes.is_empty() {
            // A replica file was replaced after it was hashed: record what the version
            // really holds.
            for e in manifest.entries.iter_mut() {
                if let Some((d, st)) = fixes.get(&e.path) {
                    e.sha256 = Some(d.to_hex());
                    e.size = st.size;
                    e.mode = st.mode;
                    e.mtime = (st.mtime.sec, st.mtime.nsec);
                    e.ino = Some(st.ino);
                }
            }
            let files: Vec<(PathBuf, Option<Digest>)> = manifest
                .entries
                .iter()
                .filter(|e| e.kind == "file")
                .map(|e| {
                    (
                        e.path.clone(),
                        e.sha256.as_deref().and_then(Digest::from_hex),
                    )
                })
                .collect();
            if let Some(d) = hash::dir_sha256(files.iter().map(|(p, d)| (p.as_path(), *d))) {
                manifest.dir_sha256 = d.to_hex();
            }
        }
        Ok(())
    }

    /// Puts one file or link of a version in place; returns the real hash and stat of a
    /// file that changed since it was hashed.
    #[allow(clippy::too_many_arguments)]
    fn put_entry(
        &self,
        e: &ManifestEntry,
        new: &Path,
        dst: &mut Root,
        src: &mut Root,
        prev_root: Option<&mut Root>,
        prev_files: &std::collections::HashMap<&Path, (&str, u32, (i64, u32))>,
        link_ok: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<(Digest, fsops::Stat)>, Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let mtime = MTime::new(e.mtime.0, e.mtime.1);
        if e.kind == "symlink" {
            let target = e.target.clone().unwrap_or_default();
            dst.symlink(&e.path, &target, mtime)?;
            return Ok(None);
        }
        if link_ok.load(Relaxed) {
            match dst.link_from(src, &e.path, &e.path) {
                Ok(()) => {
                    let st = dst.stat(&e.path)?;
                    if let Some(st) = st.filter(|st| st.size != e.size || st.mtime != mtime) {
                        let (d, _) = hash::hash_file(&new.join(&e.path))?;
                        return Ok(Some((d, st)));
                    }
                    return Ok(None);
                }
                Err(Error::Io { source, .. })
                    if source.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) =>
                {
                    log::debug!("store is on another filesystem: copying versions");
                    link_ok.store(false, Relaxed);
                }
                Err(err) => return Err(err),
            }
        }
        let unchanged = prev_files.get(e.path.as_path()).is_some_and(|(h, m, t)| {
            Some(*h) == e.sha256.as_deref() && *m == e.mode && *t == e.mtime
        });
        if let (true, Some(prev)) = (unchanged, prev_root) {
            if dst.link_from(prev, &e.path, &e.path).is_ok() {
                return Ok(None);
            }
        }
        copy_into(src, dst, &e.path, e.mode, mtime)?;
        Ok(None)
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
        std::fs::create_dir_all(&self.store).ctx("mkdir", &self.store)?;
        self.repair()?;
        let view = self.view();
        let known: HashSet<Digest> = [view.latest, view.previous]
            .into_iter()
            .flatten()
            .filter_map(|p| Manifest::load(&p).ok())
            .flat_map(|m| m.hashes().collect::<Vec<_>>())
            .collect();
        let mut missing = false;
        for (p, h) in displaced {
            let h = match h {
                Some(h) => *h,
                None => {
                    let (d, _) = hash::hash_file(&replica.join(p))?;
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
        let hashed = engine::cache::hash_missing(replica, tree, hash::default_threads());
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
            self.register(home, updated)
        }
    }

    /// Records this directory (and its aliases) in the registry.
    pub fn register(&self, home: &DataHome, updated: Option<String>) -> Result<(), Error> {
        Registry::update(home, |reg| {
            let entry = RegEntry {
                path: self.dir.clone(),
                store: self.store.clone(),
                name: self.name.clone(),
                alias_of: None,
                updated: updated.clone(),
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

/// Copies one file of the replica into a version, reflinked where the filesystem can.
fn copy_into(
    src: &mut Root,
    dst: &mut Root,
    rel: &Path,
    mode: u32,
    mtime: MTime,
) -> Result<(), Error> {
    let (mut file, _) = src.open_read(rel)?;
    let mut temp = dst.create_temp(rel)?;
    if rustix::fs::ioctl_ficlone(&*temp.file_mut(), &file).is_err() {
        std::io::copy(&mut file, temp.file_mut()).ctx("copy", &dst.abs(rel))?;
    }
    temp.finish(mode, mtime)?;
    temp.commit()
}

/// Removes a whole tree of the store (its directories may be read-only).
/// Removes a whole tree of the store (its directories may be read-only); its top-level
/// entries are shared out between threads, since a version holds an entry per file.
pub fn remove_tree(path: &Path) -> Result<(), Error> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::entry(path, "cannot remove a root"));
    };
    if let Ok(rd) = std::fs::read_dir(path) {
        let children: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| PathBuf::from(e.file_name()))
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = hash::default_threads().min(children.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let Ok(mut root) = Root::open(path) else {
                        return;
                    };
                    while let Some(c) =
                        children.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        // A failure here shows again in the removal of the whole tree.
                        let _ = root.remove(c);
                    }
                });
            }
        });
    }
    Root::open(parent)?.remove(Path::new(name))
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// True if the files of `version` and `other` at `rel` are the same inode.
pub fn same_inode(a: &Path, b: &Path) -> bool {
    match (fsops::lstat(a), fsops::lstat(b)) {
        (Ok(x), Ok(y)) => x.ino == y.ino && x.dev == y.dev && x.kind == Some(Kind::File),
        _ => false,
    }
}
