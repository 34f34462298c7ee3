//! One versioned directory's history in a store, `<store>/<name>/`:
//!
//! - `versions/<id>.full`: one version whole, every entry (paths, kinds, SHA-256,
//!   sizes, modes, owners, mtimes, link targets, empty directories) after its head;
//! - `versions/<id>.diff`: every other version, as what differs from its neighbour
//!   toward the whole one (`base`): the entries it holds that the base does not hold the
//!   same, the paths the base has that it lacks, and for a newer version than the whole
//!   one, the base's entries it does not hold the same. A pass that changes 1% of a tree
//!   writes about 2% of a manifest; a version is written whole again only once those
//!   add up to a quarter of the whole one, or 64 KiB (see [`chain`]);
//! - `objects/<aa>/<sha256>`: content that a version needs and the live directory no
//!   longer has, named by its SHA-256. No object shares its inode with a live file;
//! - `pending/<sha256>`: files a pass is about to replace or delete, linked here before
//!   the pass changes them, and settled into `objects/` after it: moved when the pass
//!   unlinked the live name (nothing to copy), copied when the file is still live;
//! - `tags.json`: names given to versions;
//! - `damaged/`: version files that could not be read, set aside by `recovery verify
//!   --repair` with the versions that cannot be read without them (kept, not deleted;
//!   while it holds anything, no content is collected as garbage);
//! - `moved.json`: where a pass moves files of the live directory, noted before it does
//!   (see [`History::note_moves`]).
//!
//! A version's content is in `objects/` or in the live directory (verified by its
//! SHA-256 when restored). Every change here is a new file renamed into place, a link or
//! a removal, in an order that leaves every listed version readable at any point:
//! [`History::repair`] finishes or undoes what a killed run left. Everything is reached
//! through directory handles that never follow a symlink.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use engine::error::Error;
use engine::fs::Root;
use engine::tree::encoding::EntryRecord;
use engine::tree::{path_order, pathser, Digest, Entry, Kind, MTime, Tree};

mod chain;
mod content;
mod format;

pub use content::{cannot_link, copy_verified};
use engine::tree::same_path;
pub use format::{diff_files, diff_shas, meta_digest, MetaDigest};

const FULL: u32 = 10;
/// A difference without its base's entries: toward a newer version (read only that
/// way), as the earlier format wrote every difference.
const DIFF: u32 = 11;
/// A difference with its base's entries, so that it reads both ways: a forward one.
const DIFF2: u32 = 12;
const VERSIONS: &str = "versions";
const OBJECTS: &str = "objects";
const PENDING: &str = "pending";
const TAGS: &str = "tags.json";
const MOVED: &str = "moved.json";
const DAMAGED: &str = "damaged";
/// How every error that a version file's bytes (or a version's chain) cause begins.
const DAMAGED_FILE: &str = "damaged version file";

/// Why a version was made.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The directory at the end of a pass that changed it.
    Pass,
    /// The directory before a pass replaced content no version held.
    BeforePass,
    /// The directory before a restore replaced its contents.
    BeforeRestore,
    /// A version of the store's earlier layout.
    Migrated,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Pass => "pass",
            Why::BeforePass => "before a pass",
            Why::BeforeRestore => "before a restore",
            Why::Migrated => "migrated",
        }
    }
}

/// What a version is, before its entries.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VersionHead {
    pub id: u64,
    /// The versioned directory.
    #[serde(with = "pathser::bytes")]
    pub dir: PathBuf,
    /// When it was made (RFC 3339, UTC).
    pub made: String,
    pub why: Why,
    pub dir_sha256: String,
    /// SHA-256 of every entry's metadata: a version differs from the latest in content
    /// (`dir_sha256`) or in metadata.
    pub meta_sha256: String,
    pub files: u64,
    pub bytes: u64,
    pub root_mode: u32,
    pub root_mtime: (i64, u32),
    /// Made by a pass that ended with errors (something not read, or not written).
    pub incomplete: bool,
    /// Entries added, changed and removed since the version before it.
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

#[cfg(test)]
impl VersionHead {
    /// A head with nothing in it, for tests to fill.
    pub(crate) fn blank() -> VersionHead {
        VersionHead {
            id: 0,
            dir: "/x".into(),
            made: String::new(),
            why: Why::Pass,
            dir_sha256: String::new(),
            meta_sha256: String::new(),
            files: 0,
            bytes: 0,
            root_mode: 0o755,
            root_mtime: (0, 0),
            incomplete: false,
            added: 0,
            changed: 0,
            removed: 0,
        }
    }
}

/// How a version is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Full,
    /// The difference from the version `base` (older or newer).
    Diff {
        base: u64,
    },
}

impl Form {
    /// Whole, or a difference (from a base not known yet): all a file's name says.
    pub(crate) fn of(full: bool) -> Form {
        if full {
            Form::Full
        } else {
            Form::Diff { base: 0 }
        }
    }
}

/// A version as its file says, without its entries.
#[derive(Debug, Clone)]
pub struct Listed {
    pub head: VersionHead,
    pub form: Form,
    /// Bytes of the version's own file.
    pub file_bytes: u64,
}

/// The entries of a version, in path order, and the head of the version.
#[derive(Clone)]
pub struct State {
    pub head: VersionHead,
    pub entries: Vec<EntryRecord>,
}

impl State {
    /// The version as a tree the mirror planner restores from. Files that were one file
    /// when the version was made (hard links: one inode, the same content and metadata)
    /// are marked linked, so that the planner makes them one file again.
    pub fn into_tree(self) -> Tree {
        type Same = (u64, Digest, u32, (i64, u32), Option<(u32, u32)>);
        let same = |e: &EntryRecord| -> Option<Same> {
            (e.kind == Kind::File).then_some(())?;
            Some((e.ino?, e.sha256?, e.mode, e.mtime, e.owner))
        };
        let mut names: std::collections::HashMap<Same, usize> = Default::default();
        for e in &self.entries {
            if let Some(k) = same(e) {
                *names.entry(k).or_default() += 1;
            }
        }
        Tree {
            root: Some(Entry::dir(
                self.head.root_mode,
                MTime::new(self.head.root_mtime.0, self.head.root_mtime.1),
            )),
            entries: self
                .entries
                .into_iter()
                .map(|e| {
                    let mut entry = e.to_entry();
                    if let Some(k) = same(&e).filter(|k| names.get(k).is_some_and(|n| *n > 1)) {
                        entry.ino = k.0;
                        entry.linked = true;
                    }
                    (e.path, entry)
                })
                .collect(),
            ..Tree::default()
        }
    }
}

/// One directory's history in a store.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
}

fn version_file(id: u64, form: Form) -> PathBuf {
    let ext = match form {
        Form::Full => "full",
        Form::Diff { .. } => "diff",
    };
    Path::new(VERSIONS).join(format!("{id:012}.{ext}"))
}

/// Where an object lives, relative to the history.
pub fn object_path(sha: &Digest) -> PathBuf {
    let hex = sha.to_hex();
    Path::new(OBJECTS).join(&hex[..2]).join(hex)
}

pub(crate) fn pending_path(sha: &Digest) -> PathBuf {
    Path::new(PENDING).join(sha.to_hex())
}

fn damaged(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::entry(
        path,
        format!(
            "{DAMAGED_FILE}: {e} (`recovery verify --repair` sets aside the versions that \
             cannot be read)"
        ),
    )
}

/// Whether `e` says a version cannot be read for its files' bytes (not for a version
/// format of a later build, nor for an error of the system).
fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Entry { reason, .. } if reason.starts_with(DAMAGED_FILE))
}

impl History {
    /// The history at `path` (`<store>/<name>`); nothing is read or made yet.
    pub fn at(path: PathBuf) -> History {
        History { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the history exists.
    pub fn exists(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_dir())
    }

    /// Opens the history, making it and its folders if missing (the store exists).
    pub fn open_made(&self) -> Result<Root, Error> {
        let (Some(store), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Err(Error::entry(&self.path, "not a history of a store"));
        };
        let mut store = Root::open(store)?;
        store.mkdir_unfinished(Path::new(name))?;
        let mut root = store.subroot(Path::new(name))?;
        for d in [VERSIONS, OBJECTS, PENDING] {
            root.mkdir_unfinished(Path::new(d))?;
        }
        Ok(root)
    }

    /// Opens the history for reading.
    pub fn open(&self) -> Result<Root, Error> {
        Root::open(&self.path)
    }

    /// Every version, oldest first. A file that cannot be read is an error.
    pub fn list(&self) -> Result<Vec<Listed>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open()?;
        let mut out = Vec::new();
        let files = self.files(&mut root)?;
        for &(id, full) in &files {
            // A version with a whole file and a difference (a kill between two steps,
            // which `repair` settles) is listed once, as read: whole.
            if !full && files.contains(&(id, true)) {
                continue;
            }
            let r = self.read(&mut root, id, full, false)?;
            let file_bytes = root.stat(&version_file(id, r.form))?.map_or(0, |s| s.size);
            out.push(Listed {
                head: r.head,
                form: r.form,
                file_bytes,
            });
        }
        Ok(out)
    }

    /// The latest version's head, if any.
    pub fn latest(&self) -> Result<Option<VersionHead>, Error> {
        if !self.exists() {
            return Ok(None);
        }
        let mut root = self.open()?;
        // Sorted by id, then whole after difference: the last is the latest, read whole
        // where it has both.
        let latest = self.files(&mut root)?.last().copied();
        latest
            .map(|(id, full)| self.read(&mut root, id, full, false).map(|r| r.head))
            .transpose()
    }

    /// Whether the latest version holds every file of `files` (path and SHA-256) at its
    /// path; false without versions. Reads the latest version entry by entry.
    pub fn latest_holds(&self, files: &[(&Path, Digest)]) -> Result<bool, Error> {
        let Some(head) = self.latest()? else {
            return Ok(false);
        };
        let mut sorted: Vec<(&Path, Digest)> = files.to_vec();
        sorted.sort_by(|x, y| path_order(x.0, y.0));
        let mut root = self.open()?;
        let mut at = 0;
        let mut all = true;
        self.for_each_in(&mut root, head.id, |o| {
            while at < sorted.len() && path_order(sorted[at].0, o.path).is_lt() {
                all = false;
                at += 1;
            }
            while at < sorted.len() && same_path(sorted[at].0, o.path) {
                all &= o.sha256 == Some(sorted[at].1);
                at += 1;
            }
        })?;
        Ok(all && at == sorted.len())
    }

    /// The entries of version `id`, owned, in path order, and its head.
    pub fn state(&self, id: u64) -> Result<State, Error> {
        let mut root = self.open()?;
        let mut entries = Vec::new();
        let head = self.for_each_in(&mut root, id, |e| entries.push(e.to_owned()))?;
        Ok(State { head, entries })
    }

    /// Finishes or undoes what a killed run left (a version with both a whole file and a
    /// difference keeps one of them); pending files are settled.
    pub fn repair(&self, to: &[History]) -> Result<(), Error> {
        if !self.exists() {
            return Ok(());
        }
        let mut root = self.repair_versions()?;
        self.settle(&mut root, to)
    }

    /// [`repair`](Self::repair) of the version files only (pending files are left for
    /// [`settle_pending`](Self::settle_pending)); gives the history opened.
    pub fn repair_versions(&self) -> Result<Root, Error> {
        let mut root = self.open_made()?;
        let files = self.files(&mut root)?;
        let latest = files.last().map(|(id, _)| *id);
        for &(id, full) in &files {
            if !full || !files.contains(&(id, false)) {
                continue;
            }
            // Both: the difference was being written from the whole file or the other
            // way round. The difference stays only where it reads without this version
            // (it leads to another whole one) and a newer version exists (a difference
            // of the latest from a version that never came is what a kill left of the
            // earlier layout's record).
            let keep_diff = latest != Some(id) && self.diff_reaches_whole(&mut root, id, &files)?;
            root.remove(&version_file(id, Form::of(keep_diff)))?;
        }
        self.finish_turn(&mut root)?;
        Ok(root)
    }

    /// Sets aside into `damaged/` every version file that does not read, then every
    /// version that cannot be read without one (a difference whose chain leads through
    /// a version set aside), until every version left reads. Nothing is deleted. Gives
    /// the files set aside, oldest first. An error of the system (not of a file's
    /// bytes) stops it, as does a file of a later build's format.
    pub fn set_aside_unreadable(&self) -> Result<Vec<PathBuf>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open_made()?;
        let mut aside = Vec::new();
        loop {
            let files = self.files(&mut root)?;
            let mut bad = Vec::new();
            for &(id, full) in &files {
                match self.read(&mut root, id, full, true) {
                    Ok(_) => {}
                    Err(e) if is_damage(&e) => bad.push((id, full)),
                    Err(e) => return Err(e),
                }
            }
            if bad.is_empty() {
                // Each file reads: now each version, through its chain.
                for &(id, full) in &files {
                    if !full && files.contains(&(id, true)) {
                        continue;
                    }
                    match self.for_each_in(&mut root, id, |_| ()) {
                        Ok(_) => {}
                        Err(e) if is_damage(&e) => bad.push((id, full)),
                        Err(e) => return Err(e),
                    }
                }
            }
            if bad.is_empty() {
                return Ok(aside);
            }
            root.mkdir_unfinished(Path::new(DAMAGED))?;
            for (id, full) in bad {
                let from = version_file(id, Form::of(full));
                let to = Path::new(DAMAGED).join(from.file_name().expect("BUG: a file name"));
                root.rename_new(&from, &to)?;
                aside.push(self.path.join(to));
            }
            root.sync_dir_of(&Path::new(DAMAGED).join("x"))?;
            root.sync_dir_of(&Path::new(VERSIONS).join("x"))?;
        }
    }

    /// Whether `damaged/` holds anything: what a version set aside there needs cannot
    /// be told, so no content is collected as garbage meanwhile.
    pub fn holds_damaged(&self) -> Result<bool, Error> {
        let mut root = self.open()?;
        Ok(root.stat(Path::new(DAMAGED))?.is_some() && !root.list(Path::new(DAMAGED))?.is_empty())
    }

    /// The id after every version this history has had: its files', and those set
    /// aside (an id is never given twice: a tag or a note may name it).
    fn next_id(&self, root: &mut Root, files: &[(u64, bool)]) -> Result<u64, Error> {
        let mut last = files.last().map_or(0, |(id, _)| *id);
        if root.stat(Path::new(DAMAGED))?.is_some() {
            for n in root.list(Path::new(DAMAGED))? {
                let n = n.to_string_lossy();
                if let Some(id) = n.split('.').next().and_then(|id| id.parse::<u64>().ok()) {
                    last = last.max(id);
                }
            }
        }
        Ok(last + 1)
    }

    /// The tags: name → version id.
    pub fn tags(&self) -> Result<BTreeMap<String, u64>, Error> {
        let p = self.path.join(TAGS);
        if !self.exists() {
            return Ok(BTreeMap::new());
        }
        // Through the history's handle, as everything in a store: no link followed.
        let mut root = self.open()?;
        if root.stat(Path::new(TAGS))?.is_none() {
            return Ok(BTreeMap::new());
        }
        let (file, _) = root.open_read(Path::new(TAGS))?;
        serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|e| Error::entry(&p, format!("damaged: {e}")))
    }

    /// Replaces the tags.
    pub fn set_tags(&self, tags: &BTreeMap<String, u64>) -> Result<(), Error> {
        let mut root = self.open_made()?;
        let text = serde_json::to_vec_pretty(tags).expect("BUG: tags encode");
        root.write_atomic_with(Path::new(TAGS), |w| std::io::Write::write_all(w, &text))
    }

    /// Notes, before a pass moves files of the live directory, where each goes and its
    /// content (added to what an earlier pass that was cut short noted). Until a version
    /// after the pass is recorded, the latest version names the old paths: a restore
    /// looks for their content at these paths too (hashing it first, as any live file
    /// the latest version does not vouch for).
    pub fn note_moves(&self, moves: &[(PathBuf, Digest)]) -> Result<(), Error> {
        let mut all = self.moved();
        all.extend(moves.iter().map(|(p, d)| Moved {
            path: p.clone(),
            sha256: d.to_hex(),
        }));
        all.sort_by(|a, b| path_order(&a.path, &b.path).then(a.sha256.cmp(&b.sha256)));
        all.dedup_by(|a, b| a.path == b.path && a.sha256 == b.sha256);
        let mut root = self.open_made()?;
        let text = serde_json::to_vec(&all).expect("BUG: moves encode");
        root.write_atomic_with(Path::new(MOVED), |w| std::io::Write::write_all(w, &text))
    }

    /// What [`note_moves`](Self::note_moves) noted and no record has cleared yet (a
    /// damaged note is only hints lost: none).
    pub fn moves_noted(&self) -> Vec<(PathBuf, Digest)> {
        self.moved()
            .into_iter()
            .filter_map(|m| Some((m.path, Digest::from_hex(&m.sha256)?)))
            .collect()
    }

    fn moved(&self) -> Vec<Moved> {
        let read = || -> Result<Vec<Moved>, Error> {
            let mut root = self.open()?;
            if root.stat(Path::new(MOVED))?.is_none() {
                return Ok(Vec::new());
            }
            let (file, _) = root.open_read(Path::new(MOVED))?;
            serde_json::from_reader(std::io::BufReader::new(file))
                .map_err(|e| Error::entry(self.path.join(MOVED), format!("damaged: {e}")))
        };
        if !self.exists() {
            return Vec::new();
        }
        read().unwrap_or_else(|e| {
            log::warn!("{e}");
            Vec::new()
        })
    }

    /// Nothing is left of a pass cut short: no kept file waits in `pending/` to be
    /// settled, and no moves are noted.
    pub fn is_settled(&self) -> Result<bool, Error> {
        if !self.exists() {
            return Ok(true);
        }
        let mut root = self.open()?;
        if root.stat(Path::new(MOVED))?.is_some() {
            return Ok(false);
        }
        Ok(match root.stat(Path::new(PENDING))? {
            Some(_) => root.list(Path::new(PENDING))?.is_empty(),
            None => true,
        })
    }

    /// Clears the note of moves: a version after them is recorded.
    pub fn clear_moves(&self) -> Result<(), Error> {
        if !self.exists() {
            return Ok(());
        }
        let mut root = self.open()?;
        if root.stat(Path::new(MOVED))?.is_some() {
            root.remove(Path::new(MOVED))?;
        }
        Ok(())
    }
}

/// A file a pass moves: where to, and its content.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Moved {
    #[serde(with = "pathser")]
    path: PathBuf,
    sha256: String,
}

#[cfg(test)]
mod tests;
