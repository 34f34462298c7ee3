//! One versioned directory's history in a store, `<store>/<name>/`:
//!
//! - `versions/<id>.full`: the newest version, every entry (paths, kinds, SHA-256,
//!   sizes, modes, owners, mtimes, link targets, empty directories) after its head;
//! - `versions/<id>.diff`: an older version, as what differs from a newer one (`base`):
//!   the entries it holds that the base does not hold the same, and the paths the base
//!   has that it lacks. A pass that changes 1% of a tree stores about 1% of a manifest;
//! - `objects/<aa>/<sha256>`: content that a version needs and the live directory no
//!   longer has, named by its SHA-256. No object shares its inode with a live file;
//! - `pending/<sha256>`: files a pass is about to replace or delete, linked here before
//!   the pass changes them, and settled into `objects/` after it: moved when the pass
//!   unlinked the live name (nothing to copy), copied when the file is still live;
//! - `tags.json`: names given to versions.
//!
//! A version's content is in `objects/` or in the live directory (verified by its
//! SHA-256 when restored). Every change here is a new file renamed into place, a link or
//! a removal, in an order that leaves every listed version readable at any point:
//! [`History::repair`] finishes or undoes what a killed run left. Everything is reached
//! through directory handles that never follow a symlink.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use engine::error::Error;
use engine::fs::Root;
use engine::tree::encoding::{EntryRecord, EntryRef, SeqReader};
use engine::tree::{path_order, pathser, Digest, Entry, Kind, MTime, Tree};

const FULL: u32 = 10;
const DIFF: u32 = 11;
const VERSIONS: &str = "versions";
const OBJECTS: &str = "objects";
const PENDING: &str = "pending";
const TAGS: &str = "tags.json";

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
    /// Made by a pass that could not read everything.
    pub incomplete: bool,
    /// Entries added, changed and removed since the version before it.
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

/// How a version is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Full,
    /// The difference from the version `base` (a newer one).
    Diff {
        base: u64,
    },
}

/// A version as its file says, without its entries.
#[derive(Debug, Clone)]
pub struct Listed {
    pub head: VersionHead,
    pub form: Form,
    /// Bytes of the version's own file.
    pub file_bytes: u64,
}

/// A version's file read whole: its head, and for a difference what it removes.
struct Read {
    head: VersionHead,
    form: Form,
    removed: Vec<PathBuf>,
    entries: Vec<EntryRecord>,
}

/// A version's file being read: its head, then its entries one at a time (a full
/// version of a big tree is megabytes, and a pass reads it while it writes the next).
struct VersionReader {
    abs: PathBuf,
    head: VersionHead,
    form: Form,
    removed: Vec<PathBuf>,
    left: usize,
    seq: SeqReader<std::fs::File>,
}

impl VersionReader {
    /// Hands the next entry (in path order, borrowed from the read buffer) to `f`;
    /// `None` after the last, once no byte follows it.
    fn next_with<O>(&mut self, f: impl FnOnce(EntryRef<'_>) -> O) -> Result<Option<O>, Error> {
        if self.left == 0 {
            return match self.seq.at_end() {
                Ok(true) => Ok(None),
                Ok(false) => Err(damaged(&self.abs, "bytes after the end")),
                Err(e) => Err(damaged(&self.abs, e)),
            };
        }
        self.left -= 1;
        self.seq
            .take_entry(false, f)
            .map(Some)
            .map_err(|e| damaged(&self.abs, e))
    }

    /// The next entry, in path order; `None` after the last, once no byte follows it.
    fn next_entry(&mut self) -> Result<Option<EntryRecord>, Error> {
        if self.left == 0 {
            return match self.seq.at_end() {
                Ok(true) => Ok(None),
                Ok(false) => Err(damaged(&self.abs, "bytes after the end")),
                Err(e) => Err(damaged(&self.abs, e)),
            };
        }
        self.left -= 1;
        self.seq
            .take_entry(false, |e| e.to_owned())
            .map(Some)
            .map_err(|e| damaged(&self.abs, e))
    }
}

/// The entries of a version, in path order, and the head of the version.
pub struct State {
    pub head: VersionHead,
    pub entries: Vec<EntryRecord>,
}

impl State {
    /// The version as a tree the mirror planner restores from.
    pub fn into_tree(self) -> Tree {
        Tree {
            root: Some(Entry::dir(
                self.head.root_mode,
                MTime::new(self.head.root_mtime.0, self.head.root_mtime.1),
            )),
            entries: self
                .entries
                .into_iter()
                .map(|e| {
                    let entry = e.to_entry();
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

/// Two entries at one path record the same thing (the inode a replica had is no part
/// of a version).
fn same(a: &EntryRef<'_>, b: &EntryRef<'_>) -> bool {
    a.kind == b.kind
        && a.size == b.size
        && a.mode == b.mode
        && a.mtime == b.mtime
        && a.sha256 == b.sha256
        && a.owner == b.owner
        && a.target.map(Path::as_os_str) == b.target.map(Path::as_os_str)
}

/// The same path, byte for byte (cheaper than comparing components).
fn same_path(a: &Path, b: &Path) -> bool {
    a.as_os_str().as_bytes() == b.as_os_str().as_bytes()
}

/// The metadata digest of a version's entries and root: what the directory SHA-256 does
/// not cover (each entry's kind, mode, mtime and owner; the path and target of
/// everything that is not a file). Two versions with the same directory SHA-256 list the
/// same files in the same order, so together the two tell every change.
pub fn meta_digest<'a>(
    entries: impl Iterator<Item = EntryRef<'a>>,
    root: (u32, (i64, u32)),
) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let put = |buf: &mut Vec<u8>, mode: u32, mtime: (i64, u32)| {
        buf.extend_from_slice(&mode.to_le_bytes());
        buf.extend_from_slice(&mtime.0.to_le_bytes());
        buf.extend_from_slice(&mtime.1.to_le_bytes());
    };
    put(&mut buf, root.0, root.1);
    for e in entries {
        buf.push(e.kind as u8);
        put(&mut buf, e.mode, e.mtime);
        match e.owner {
            Some((u, g)) => {
                buf.push(1);
                buf.extend_from_slice(&u.to_le_bytes());
                buf.extend_from_slice(&g.to_le_bytes());
            }
            None => buf.push(0),
        }
        if e.kind != Kind::File {
            let p = e.path.as_os_str().as_bytes();
            buf.extend_from_slice(&(p.len() as u64).to_le_bytes());
            buf.extend_from_slice(p);
            let t = e
                .target
                .map(|t| t.as_os_str().as_bytes())
                .unwrap_or_default();
            buf.extend_from_slice(&(t.len() as u64).to_le_bytes());
            buf.extend_from_slice(t);
        }
        if buf.len() >= 60 * 1024 {
            h.update(&buf);
            buf.clear();
        }
    }
    h.update(&buf);
    Digest(h.finalize().into()).to_hex()
}

fn damaged(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::entry(path, format!("damaged version file: {e}"))
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

    /// The versions' files, oldest first, by id: `(id, form, base)` as the names say
    /// (the base of a difference is read from its file).
    fn files(&self, root: &mut Root) -> Result<Vec<(u64, bool)>, Error> {
        let names = match root.stat(Path::new(VERSIONS))? {
            Some(_) => root.list(Path::new(VERSIONS))?,
            None => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for n in names {
            let n = n.to_string_lossy();
            let Some((id, ext)) = n.split_once('.') else {
                continue;
            };
            let Ok(id) = id.parse::<u64>() else { continue };
            match ext {
                "full" => out.push((id, true)),
                "diff" => out.push((id, false)),
                _ => {}
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads one version's file: head always, entries only with `entries`.
    fn read(&self, root: &mut Root, id: u64, full: bool, entries: bool) -> Result<Read, Error> {
        let mut r = self.reader(root, id, full)?;
        let mut list = Vec::new();
        if entries {
            list.reserve(r.left.min(1 << 20));
            while let Some(e) = r.next_entry()? {
                list.push(e);
            }
        }
        Ok(Read {
            head: r.head,
            form: r.form,
            removed: r.removed,
            entries: list,
        })
    }

    /// Opens one version's file and reads its head; its entries are read one at a time.
    fn reader(&self, root: &mut Root, id: u64, full: bool) -> Result<VersionReader, Error> {
        let form = if full {
            Form::Full
        } else {
            Form::Diff { base: 0 }
        };
        self.reader_at(root, &version_file(id, form), id, full)
    }

    /// Opens the file `rel` of version `id` (whole when `full`) and reads its head.
    fn reader_at(
        &self,
        root: &mut Root,
        rel: &Path,
        id: u64,
        full: bool,
    ) -> Result<VersionReader, Error> {
        let abs = self.path.join(rel);
        let (file, _) = root.open_read(rel)?;
        let mut seq = SeqReader::new(file);
        let format: u32 = seq.take().map_err(|e| damaged(&abs, e))?;
        let head: VersionHead = seq.take().map_err(|e| damaged(&abs, e))?;
        let (form, removed) = match format {
            FULL => (Form::Full, Vec::new()),
            DIFF => {
                let base: u64 = seq.take().map_err(|e| damaged(&abs, e))?;
                let removed: Vec<Vec<u8>> = seq.take().map_err(|e| damaged(&abs, e))?;
                let removed = removed
                    .into_iter()
                    .map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)))
                    .collect();
                (Form::Diff { base }, removed)
            }
            other => {
                return Err(Error::entry(
                    &abs,
                    format!("version format {other} is not one this build reads"),
                ))
            }
        };
        if head.id != id || (format == FULL) != full {
            return Err(damaged(&abs, "its head does not match its name"));
        }
        let left: usize = seq.take().map_err(|e| damaged(&abs, e))?;
        Ok(VersionReader {
            abs,
            head,
            form,
            removed,
            left,
            seq,
        })
    }

    /// Every version, oldest first. A file that cannot be read is an error.
    pub fn list(&self) -> Result<Vec<Listed>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open()?;
        let mut out = Vec::new();
        let files = self.files(&mut root)?;
        let newest = files.iter().rev().find(|(_, f)| *f).map(|(id, _)| *id);
        for &(id, full) in &files {
            // What a killed run left, not a version (`repair` removes it): a whole
            // version superseded by a newer one, a difference from one that never came.
            let stray = match newest {
                Some(n) if full => id != n && files.contains(&(id, false)),
                Some(n) => id >= n,
                None => true,
            };
            if stray {
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
        let latest = self.files(&mut root)?.into_iter().rev().find(|(_, f)| *f);
        latest
            .map(|(id, _)| self.read(&mut root, id, true, false).map(|r| r.head))
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

    /// Hands every entry of version `id` to `f`, in path order: the whole version its
    /// chain of differences starts from, read entry by entry (borrowed), with the
    /// differences up to `id` (each small) folded into one and merged in. Gives the
    /// version's head.
    fn for_each_in(
        &self,
        root: &mut Root,
        id: u64,
        mut f: impl FnMut(EntryRef<'_>),
    ) -> Result<VersionHead, Error> {
        let files: BTreeMap<u64, bool> = self.files(root)?.into_iter().collect();
        let mut chain = Vec::new();
        let mut at = id;
        let whole = loop {
            let Some(&full) = files.get(&at) else {
                return Err(Error::entry(
                    self.path.join(VERSIONS),
                    format!("version {at} is missing (needed by version {id})"),
                ));
            };
            if full {
                break at;
            }
            let r = self.read(root, at, false, true)?;
            match r.form {
                Form::Diff { base } if base > at => at = base,
                _ => {
                    return Err(damaged(
                        &self.path.join(version_file(at, r.form)),
                        "bad base",
                    ))
                }
            }
            chain.push(r);
        };
        let mut removed: HashSet<PathBuf> = HashSet::new();
        let mut put: BTreeMap<PathBuf, EntryRecord> = BTreeMap::new();
        for d in chain.iter().rev() {
            for p in &d.removed {
                put.remove(p);
                removed.insert(p.clone());
            }
            for e in &d.entries {
                removed.remove(&e.path);
                put.insert(e.path.clone(), e.clone());
            }
        }
        let mut put: Vec<EntryRecord> = put.into_values().collect();
        put.sort_by(|x, y| path_order(&x.path, &y.path));
        let mut r = self.reader(root, whole, true)?;
        let head = match chain.first() {
            Some(d) => d.head.clone(),
            None => r.head.clone(),
        };
        let mut next = 0;
        while r
            .next_with(|o| {
                while next < put.len() && path_order(&put[next].path, o.path).is_lt() {
                    f(put[next].as_ref());
                    next += 1;
                }
                if next < put.len() && same_path(&put[next].path, o.path) {
                    f(put[next].as_ref());
                    next += 1;
                } else if removed.is_empty() || !removed.contains(o.path) {
                    f(o);
                }
            })?
            .is_some()
        {}
        for e in &put[next..] {
            f(e.as_ref());
        }
        Ok(head)
    }

    /// Records a new version whose entries `news` gives (in path order, afresh each call)
    /// and whose head is `head` (its id and change counts are filled here). It is
    /// written whole; the latest version becomes the difference from it (written first,
    /// so that a kill leaves both readable). Returns the new id.
    pub fn record<'n, I: Iterator<Item = EntryRef<'n>>>(
        &self,
        mut head: VersionHead,
        news: impl Fn() -> I,
    ) -> Result<u64, Error> {
        let mut root = self.open_made()?;
        let files = self.files(&mut root)?;
        let next = files.last().map_or(1, |(id, _)| id + 1);
        head.id = next;
        let latest = files.iter().rev().find(|(_, f)| *f).map(|(id, _)| *id);
        let (mut added, mut modified, mut removed) = (0u64, 0u64, 0u64);
        if let Some(old_id) = latest {
            let mut old = self.reader(&mut root, old_id, true)?;
            let old_head = old.head.clone();
            // What the old version holds that the new one does not hold the same, and
            // the paths the new one has that it lacks: a merge of the two in path order,
            // the old entries borrowed as they are read.
            let mut back: Vec<EntryRecord> = Vec::new();
            let mut gone: Vec<Vec<u8>> = Vec::new();
            let mut news_it = news().peekable();
            while old
                .next_with(|o| {
                    while let Some(n) = news_it.next_if(|n| path_order(n.path, o.path).is_lt()) {
                        added += 1;
                        gone.push(n.path.as_os_str().as_bytes().to_vec());
                    }
                    match news_it.next_if(|n| same_path(n.path, o.path)) {
                        Some(n) if same(&o, &n) => {}
                        Some(_) => {
                            modified += 1;
                            back.push(o.to_owned());
                        }
                        None => {
                            removed += 1;
                            back.push(o.to_owned());
                        }
                    }
                })?
                .is_some()
            {}
            for n in news_it {
                added += 1;
                gone.push(n.path.as_os_str().as_bytes().to_vec());
            }
            root.write_atomic_with(&version_file(old_id, Form::Diff { base: next }), |w| {
                engine::tree::encoding::write_seq(
                    w,
                    &(DIFF, &old_head, next, &gone, back.len()),
                    back.iter().map(|e| e.as_ref()),
                )
            })?;
        } else {
            added = news().count() as u64;
        }
        head.added = added;
        head.changed = modified;
        head.removed = removed;
        self.write_full(&mut root, &head, news)?;
        if let Some(old_id) = latest {
            // Its difference is on disk: the old whole file is no longer needed.
            root.remove(&version_file(old_id, Form::Full))?;
        }
        Ok(next)
    }

    fn write_full<'n, I: Iterator<Item = EntryRef<'n>>>(
        &self,
        root: &mut Root,
        head: &VersionHead,
        news: impl Fn() -> I,
    ) -> Result<(), Error> {
        let count = news().count();
        root.write_atomic_with(&version_file(head.id, Form::Full), |w| {
            engine::tree::encoding::write_seq(w, &(FULL, head, count), news())
        })
    }

    /// Finishes or undoes what a killed run left: a whole version superseded by a newer
    /// one (its difference written) goes; a difference from a newer version that never
    /// came goes; pending files are settled.
    pub fn repair(&self, to: &[History]) -> Result<(), Error> {
        if !self.exists() {
            return Ok(());
        }
        let mut root = self.open_made()?;
        let files = self.files(&mut root)?;
        let newest_full = files.iter().rev().find(|(_, f)| *f).map(|(id, _)| *id);
        for &(id, full) in &files {
            let has_diff = files.contains(&(id, false));
            if full && has_diff {
                if Some(id) == newest_full {
                    root.remove(&version_file(id, Form::Diff { base: 0 }))?;
                } else {
                    root.remove(&version_file(id, Form::Full))?;
                }
            } else if !full && !files.contains(&(id, true)) && newest_full.is_some_and(|n| id > n) {
                root.remove(&version_file(id, Form::Diff { base: 0 }))?;
            }
        }
        self.settle(&mut root, to)
    }

    /// Whether the history holds the object `sha` (settled or pending).
    pub fn holds(root: &mut Root, sha: &Digest) -> Result<bool, Error> {
        Ok(root.stat(&object_path(sha))?.is_some() || root.stat(&pending_path(sha))?.is_some())
    }

    /// Keeps the live file `rel` of `live` (whose content is `sha`) before a pass
    /// replaces or deletes it: linked under `pending/` (the pass then unlinks the live
    /// name), or copied where no link can be made. Nothing if the content is held already.
    pub fn keep_file(
        root: &mut Root,
        live: &mut Root,
        rel: &Path,
        sha: &Digest,
    ) -> Result<(), Error> {
        if Self::holds(root, sha)? {
            return Ok(());
        }
        let pending = pending_path(sha);
        match root.link_from(live, rel, &pending) {
            Ok(()) => Ok(()),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(())
            }
            Err(Error::Io { source, .. }) if cannot_link(&source) => {
                copy_verified(live, rel, root, &pending, sha).map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every pending file into `objects/`: linked (and the pending name removed)
    /// when the live directory no longer shares it, copied (and checked against its
    /// name) when it still does; each then given to the histories `to`. The pending
    /// name goes last, so a run killed at any point does it all again.
    fn settle(&self, root: &mut Root, to: &[History]) -> Result<(), Error> {
        let names = match root.stat(Path::new(PENDING))? {
            Some(_) => root.list(Path::new(PENDING))?,
            None => return Ok(()),
        };
        let mut added = false;
        for n in names {
            let rel = Path::new(PENDING).join(&n);
            let Some(sha) = n.to_str().and_then(Digest::from_hex) else {
                // A temporary file of a copy cut short, or something the tool did not make.
                if n.to_string_lossy().starts_with(engine::names::TEMP_PREFIX) {
                    root.remove(&rel)?;
                }
                continue;
            };
            let obj = object_path(&sha);
            let Some(st) = root.stat(&rel)? else { continue };
            if st.kind != Some(Kind::File) {
                continue;
            }
            if root.stat(&obj)?.is_none() {
                root.mkdir_unfinished(obj.parent().expect("BUG: an object has a folder"))?;
                if st.nlink == 1 && to.is_empty() {
                    // No other store to give it to: moved in one step.
                    root.rename(&rel, &obj)?;
                    added = true;
                    continue;
                }
                if st.nlink == 1 {
                    root.link_within(&rel, &obj)?;
                } else {
                    // Still a live file's other name: the object gets its own copy.
                    let mut same_root = root.try_clone()?;
                    if let Err(e) = copy_verified(&mut same_root, &rel, root, &obj, &sha) {
                        log::warn!("not kept: {e}");
                        root.remove(&rel)?;
                        continue;
                    }
                }
                added = true;
            }
            for other in to {
                if let Err(e) = self.share_objects(&[sha], other) {
                    log::warn!(
                        "could not give {} the content it kept: {e}",
                        engine::names::display(other.path())
                    );
                }
            }
            root.remove(&rel)?;
        }
        if added {
            root.sync_fs()?;
        }
        Ok(())
    }

    /// Puts `file` (read from `from`) in the store as the object `sha`, replacing a
    /// damaged one: written beside it, checked against `sha` as it is copied, flushed,
    /// then renamed over it.
    pub fn heal_object(
        &self,
        file: &mut std::fs::File,
        from: &Path,
        sha: &Digest,
    ) -> Result<(), Error> {
        let mut root = self.open_made()?;
        let obj = object_path(sha);
        root.mkdir_unfinished(obj.parent().expect("BUG: an object has a folder"))?;
        let mut temp = root.create_temp(&obj)?;
        let (digest, _) = temp.fill_hashing(file, false, &|| false, from)?;
        if digest != *sha {
            return Err(Error::entry(
                from,
                "does not hold the content it was taken for",
            ));
        }
        temp.set_meta(
            0o444,
            engine::tree::MTime::default(),
            engine::Owner::UNKNOWN,
        )?;
        temp.sync()?;
        temp.commit()
    }

    /// Opens the object `sha` to read, if the history has it.
    pub fn open_object(&self, sha: &Digest) -> Option<(std::fs::File, PathBuf)> {
        let mut root = self.open().ok()?;
        let rel = object_path(sha);
        let (f, _) = root.open_read(&rel).ok()?;
        Some((f, self.path.join(rel)))
    }

    /// Settles pending files (see [`Self::repair`]), giving each to the histories `to`.
    pub fn settle_pending(&self, to: &[History]) -> Result<(), Error> {
        if !self.exists() {
            return Ok(());
        }
        let mut root = self.open_made()?;
        self.settle(&mut root, to)
    }

    /// Gives `to` the objects `shas` it lacks: linked where both are on one filesystem,
    /// copied otherwise. Each history can then restore its versions alone.
    pub fn share_objects(&self, shas: &[Digest], to: &History) -> Result<(), Error> {
        if shas.is_empty() {
            return Ok(());
        }
        let mut from = self.open()?;
        let mut dst = to.open_made()?;
        let mut added = false;
        for sha in shas {
            let obj = object_path(sha);
            if dst.stat(&obj)?.is_some() || from.stat(&obj)?.is_none() {
                continue;
            }
            added = true;
            dst.mkdir_unfinished(obj.parent().expect("BUG: an object has a folder"))?;
            match dst.link_from(&mut from, &obj, &obj) {
                Ok(()) => {}
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(Error::Io { source, .. }) if cannot_link(&source) => {
                    copy_verified(&mut from, &obj, &mut dst, &obj, sha)?;
                }
                Err(e) => return Err(e),
            }
        }
        if added {
            dst.sync_fs()?;
        }
        Ok(())
    }

    /// Every object's SHA-256 and size.
    pub fn objects(&self) -> Result<Vec<(Digest, u64)>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open()?;
        let mut out = Vec::new();
        if root.stat(Path::new(OBJECTS))?.is_none() {
            return Ok(out);
        }
        for d in root.list(Path::new(OBJECTS))? {
            let dir = Path::new(OBJECTS).join(&d);
            if root.stat(&dir)?.and_then(|s| s.kind) != Some(Kind::Dir) {
                continue;
            }
            for n in root.list(&dir)? {
                if let Some(sha) = n.to_str().and_then(Digest::from_hex) {
                    let size = root.stat(&dir.join(&n))?.map_or(0, |s| s.size);
                    out.push((sha, size));
                }
            }
        }
        Ok(out)
    }

    /// The SHA-256 of every file some version holds: the entries of every version's
    /// own file (a whole version's, and each difference's), read entry by entry.
    fn needed(&self, root: &mut Root) -> Result<HashSet<Digest>, Error> {
        let mut need = HashSet::new();
        let mut readers = Vec::new();
        for (id, full) in self.files(root)? {
            readers.push((
                version_file(
                    id,
                    if full {
                        Form::Full
                    } else {
                        Form::Diff { base: 0 }
                    },
                ),
                id,
                full,
            ));
        }
        for (rel, id, full) in readers {
            let mut r = self.reader_at(root, &rel, id, full)?;
            while r
                .next_with(|e| {
                    if let Some(sha) = e.sha256 {
                        need.insert(sha);
                    }
                })?
                .is_some()
            {}
        }
        Ok(need)
    }

    /// The content the history holds: its objects and its pending files (listed, no
    /// stat each).
    pub fn held(&self) -> Result<Vec<Digest>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open()?;
        let mut all = self.object_names(&mut root)?;
        if root.stat(Path::new(PENDING))?.is_some() {
            all.extend(
                root.list(Path::new(PENDING))?
                    .iter()
                    .filter_map(|n| n.to_str().and_then(Digest::from_hex)),
            );
        }
        Ok(all)
    }

    /// The pending files (kept by a pass that was cut short) that no live file shares.
    pub fn pending_alone(&self) -> Result<Vec<Digest>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open()?;
        if root.stat(Path::new(PENDING))?.is_none() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for n in root.list(Path::new(PENDING))? {
            let Some(sha) = n.to_str().and_then(Digest::from_hex) else {
                continue;
            };
            if root
                .stat(&Path::new(PENDING).join(&n))?
                .is_some_and(|st| st.nlink == 1)
            {
                out.push(sha);
            }
        }
        Ok(out)
    }

    /// The SHA-256 of every object, without its size (no stat each).
    pub fn object_list(&self) -> Result<Vec<Digest>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open()?;
        self.object_names(&mut root)
    }

    /// The SHA-256 of every object, without its size.
    fn object_names(&self, root: &mut Root) -> Result<Vec<Digest>, Error> {
        let mut out = Vec::new();
        if root.stat(Path::new(OBJECTS))?.is_none() {
            return Ok(out);
        }
        for d in root.list(Path::new(OBJECTS))? {
            let dir = Path::new(OBJECTS).join(&d);
            if d.len() != 2 || root.stat(&dir)?.and_then(|s| s.kind) != Some(Kind::Dir) {
                continue;
            }
            out.extend(
                root.list(&dir)?
                    .iter()
                    .filter_map(|n| n.to_str().and_then(Digest::from_hex)),
            );
        }
        Ok(out)
    }

    /// Drops the objects no version needs (of `candidates` only, when given: the
    /// content of the versions just dropped, which saves listing every object); returns
    /// how many and their bytes.
    pub fn collect_garbage(
        &self,
        candidates: Option<&HashSet<Digest>>,
    ) -> Result<(u64, u64), Error> {
        if !self.exists() {
            return Ok((0, 0));
        }
        let mut root = self.open_made()?;
        let need = self.needed(&mut root)?;
        let (mut n, mut bytes) = (0, 0);
        let all = match candidates {
            Some(c) => c.iter().copied().collect(),
            None => self.object_names(&mut root)?,
        };
        for sha in all {
            if !need.contains(&sha) {
                let obj = object_path(&sha);
                if let Some(st) = root.stat(&obj)? {
                    bytes += st.size;
                    root.remove(&obj)?;
                    n += 1;
                }
            }
        }
        Ok((n, bytes))
    }

    /// Drops the versions `ids` (never the latest): a version that is the difference
    /// from a dropped one is first rewritten as the difference from that one's base, so
    /// every version left reads at every point. Gives the content the dropped versions
    /// held of their own: what may now be garbage.
    pub fn forget(&self, ids: &BTreeSet<u64>) -> Result<HashSet<Digest>, Error> {
        let mut root = self.open_made()?;
        let mut candidates = HashSet::new();
        // Newest first: the version below a dropped one already refers to a kept one.
        for &id in ids.iter().rev() {
            let files = self.files(&mut root)?;
            let Some(&(_, full)) = files.iter().find(|(i, _)| *i == id) else {
                continue;
            };
            if full {
                continue;
            }
            let dropped = self.read(&mut root, id, false, true)?;
            let Form::Diff { base } = dropped.form else {
                continue;
            };
            candidates.extend(dropped.entries.iter().filter_map(|e| e.sha256));
            for &(older, _) in files.iter().filter(|(i, f)| *i < id && !*f) {
                let o = self.read(&mut root, older, false, true)?;
                if o.form != (Form::Diff { base: id }) {
                    continue;
                }
                let (removed, entries) = compose(&dropped, &o);
                let gone: Vec<Vec<u8>> = removed
                    .iter()
                    .map(|p| p.as_os_str().as_bytes().to_vec())
                    .collect();
                root.write_atomic_with(&version_file(older, o.form), |w| {
                    engine::tree::encoding::write_seq(
                        w,
                        &(DIFF, &o.head, base, &gone, entries.len()),
                        entries.iter().map(|e| e.as_ref()),
                    )
                })?;
            }
            root.remove(&version_file(id, dropped.form))?;
        }
        Ok(candidates)
    }

    /// The tags: name → version id.
    pub fn tags(&self) -> Result<BTreeMap<String, u64>, Error> {
        let p = self.path.join(TAGS);
        match std::fs::read(&p) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| Error::entry(&p, format!("damaged: {e}")))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::io("read", p, e)),
        }
    }

    /// Replaces the tags.
    pub fn set_tags(&self, tags: &BTreeMap<String, u64>) -> Result<(), Error> {
        let mut root = self.open_made()?;
        let text = serde_json::to_vec_pretty(tags).expect("BUG: tags encode");
        root.write_atomic_with(Path::new(TAGS), |w| std::io::Write::write_all(w, &text))
    }
}

impl History {
    /// The difference `id`: the paths its newer base has that it lacks, and its entries
    /// that the base does not hold the same.
    pub fn diff_of(&self, id: u64) -> Result<(Vec<PathBuf>, Vec<EntryRecord>), Error> {
        let mut root = self.open()?;
        let r = self.read(&mut root, id, false, true)?;
        Ok((r.removed, r.entries))
    }
}

/// The SHA-256 of the files the difference `id` holds (read through `root`, the
/// history opened).
pub fn diff_shas(h: &History, root: &mut Root, id: u64) -> Result<Vec<Digest>, Error> {
    Ok(diff_files(h, root, id)?
        .into_iter()
        .map(|(d, _)| d)
        .collect())
}

/// The SHA-256 and size of the files the difference `id` holds.
pub fn diff_files(h: &History, root: &mut Root, id: u64) -> Result<Vec<(Digest, u64)>, Error> {
    let mut out = Vec::new();
    let mut r = h.reader(root, id, false)?;
    while r
        .next_with(|e| {
            if let Some(d) = e.sha256 {
                out.push((d, e.size));
            }
        })?
        .is_some()
    {}
    Ok(out)
}

/// `later` (the difference from `dropped`) as the difference from `dropped`'s base:
/// `dropped` applied first, then `later`.
fn compose(dropped: &Read, later: &Read) -> (Vec<PathBuf>, Vec<EntryRecord>) {
    let older = later;
    let older_removed: HashSet<&Path> = older.removed.iter().map(PathBuf::as_path).collect();
    let mut map: BTreeMap<&Path, &EntryRecord> = dropped
        .entries
        .iter()
        .filter(|e| !older_removed.contains(e.path.as_path()))
        .map(|e| (e.path.as_path(), e))
        .collect();
    for e in &older.entries {
        map.insert(e.path.as_path(), e);
    }
    let removed: BTreeSet<PathBuf> = dropped
        .removed
        .iter()
        .chain(older.removed.iter())
        .filter(|p| !map.contains_key(p.as_path()))
        .cloned()
        .collect();
    let mut entries: Vec<EntryRecord> = map.into_values().cloned().collect();
    entries.sort_by(|x, y| path_order(&x.path, &y.path));
    (removed.into_iter().collect(), entries)
}

/// Copies `rel` of `src` to `to` in `dst` (a new name: never replaces), checking that
/// the bytes hash to `sha`.
fn copy_verified(
    src: &mut Root,
    rel: &Path,
    dst: &mut Root,
    to: &Path,
    sha: &Digest,
) -> Result<(), Error> {
    let (mut file, before) = src.open_read(rel)?;
    let mut temp = dst.create_temp(to)?;
    let (digest, _) = temp.fill_hashing(&mut file, before.is_sparse(), &|| false, &src.abs(rel))?;
    if digest != *sha {
        return Err(Error::entry(
            src.abs(rel),
            "changed before it could be kept (its bytes no longer match its SHA-256)",
        ));
    }
    temp.set_meta(0o444, before.mtime, engine::Owner::UNKNOWN)?;
    temp.sync()?;
    match temp.commit_new() {
        // The same content, kept meanwhile under the same name.
        Err(_) if dst.stat(to)?.is_some() => Ok(()),
        done => done,
    }
}

/// Errors that mean "no hard link possible here" rather than a failure: another
/// filesystem, or one without hard links (FAT, exFAT, some network shares).
pub(crate) fn cannot_link(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::XDEV, Errno::PERM, Errno::OPNOTSUPP, Errno::MLINK]
        .iter()
        .any(|x| e.raw_os_error() == Some(x.raw_os_error()))
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
