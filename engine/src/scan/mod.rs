//! Reading a replica into a [`Tree`]: one `lstat` per entry, symlinks never followed,
//! special files reported and skipped, reserved names and paths the filter (`--exclude`, `--include`) leaves out.
//!
//! A pass that may find nothing to do reads both replicas compact ([`scan_many`]: each
//! entry encoded as it is found, about 22 bytes where a tree's entry takes about 130),
//! so that if it does it never holds them whole (see `crate::pass::quiet`); any other
//! reads them straight into trees ([`scan_many_whole`]).
//!
//! The scan only reads. A failure on one entry is a value in `Tree::errors`, and the
//! path is marked unknown so no planner deletes anything at or under it.

pub mod after;
pub mod cache;
pub mod replica;
pub mod rescan;

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs as rfs;

use crate::error::{Error, Refusal};
use crate::fs::{self, Stat};
use crate::names;
use crate::tree::compact::{Compact, CompactTree};
use crate::tree::entries::{Chunk, ChunkList};
use crate::tree::{Entry, Kind, Tree};

/// What to leave out of a scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// `--exclude` and `--include` rules.
    pub filter: crate::filter::Filter,
    /// Absolute paths left out entirely (BACKUP inside SOURCE, a store inside a replica).
    pub skip: Vec<PathBuf>,
    /// Entries whose inode changed (ctime) at or after this time are marked
    /// [`Entry::touched`]: their extended attributes may have changed, which no other
    /// part of a stat shows. So are those whose change time is within a timestamp tick
    /// before it (see [`crate::tree::MTime::is_racy_at`]): the kernel stamps change
    /// times from a coarse clock that lags the one this time was read from (and some
    /// filesystems keep whole seconds), so a change made just after it may carry an
    /// earlier time.
    pub touched_since: Option<crate::tree::MTime>,
}

/// What a pass over `roots` leaves out, each side alike: the `stores` of versions
/// ([`store_skips`]) and what is the filesystem's own ([`filesystem_skips`]).
pub fn left_out(stores: &[&Path], roots: &[&Path]) -> Vec<PathBuf> {
    let mut out = filesystem_skips(roots);
    for (i, s) in stores.iter().enumerate() {
        // Both replicas of a pair may keep their versions in one store.
        if !stores[..i].contains(s) {
            out.extend(store_skips(s, roots));
        }
    }
    out
}

/// What a pass over `roots` leaves out for the store at `store`: the store, and where it
/// lies inside one of the roots, the same place in every root. The other side's folder
/// of that name is left alone there as an excluded path is: nothing is copied into the
/// store from it, nor is it removed.
fn store_skips(store: &Path, roots: &[&Path]) -> Vec<PathBuf> {
    let mut out = vec![store.to_path_buf()];
    for r in roots {
        let Ok(rel) = store.strip_prefix(r) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        for q in roots {
            let mirrored = q.join(rel);
            // The other directory's folder there is not backed up, nor synced: said once
            // a run (not at every pass of an interval or watch run), since a user may
            // not know.
            // (`__versions__` at the top is reserved on both sides: the other's own store.)
            let reserved =
                rel.parent() == Some(Path::new("")) && names::is_reserved_top(rel.as_os_str());
            if q != r
                && !reserved
                && std::fs::symlink_metadata(&mirrored).is_ok()
                && first_time_said(&mirrored)
            {
                log::warn!(
                    "{} is left out: the store of versions is at the same place in {} ({}); \
                     move the store elsewhere (--store) to copy it",
                    names::display(&mirrored),
                    names::display(r),
                    names::display(store)
                );
            }
            if !out.contains(&mirrored) {
                out.push(mirrored);
            }
        }
    }
    out
}

/// Whether `path` is named for the first time in this run by the warning above.
fn first_time_said(path: &Path) -> bool {
    static SAID: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said.iter().any(|p| p == path) {
        return false;
    }
    said.push(path.to_path_buf());
    true
}

/// What a pass over `roots` leaves out because it is the filesystem's own: `lost+found`
/// at the top of a root that is the top of a mounted filesystem (where `fsck` puts what
/// it finds; root's alone, unreadable to a user, who would see an error at every pass,
/// and no part of a backup). Left out, it is neither copied nor removed, and neither is
/// the same place in the other root (an earlier copy there).
fn filesystem_skips(roots: &[&Path]) -> Vec<PathBuf> {
    if !roots
        .iter()
        .any(|r| crate::run::home::is_mount_root(r) == Some(true))
    {
        return Vec::new();
    }
    roots.iter().map(|r| r.join("lost+found")).collect()
}

/// Checks that `root` is a readable directory and returns its canonical path.
pub fn check_root(root: &Path, role: &str) -> Result<PathBuf, Refusal> {
    let canon = std::fs::canonicalize(root).map_err(|e| {
        Refusal::new(format!(
            "{role} {} is missing or unreachable ({e})",
            names::display(root)
        ))
    })?;
    let md = std::fs::metadata(&canon)
        .map_err(|e| Refusal::new(format!("{role} {}: {e}", names::display(root))))?;
    if !md.is_dir() {
        return Err(Refusal::new(format!(
            "{role} {} is not a directory",
            names::display(root)
        )));
    }
    std::fs::read_dir(&canon).map_err(|e| {
        Refusal::new(format!(
            "{role} {} cannot be read ({e})",
            names::display(root)
        ))
    })?;
    Ok(canon)
}

/// Scans `root` (canonical). Fails only if the root itself cannot be read.
///
/// Directories are read through handles (`getdents`, then one `fstatat` per entry
/// relative to its directory, never following a symlink), each directory's names in
/// byte order, depth first: entries come out in path order without sorting. The
/// top-level directories are shared out between threads.
pub fn scan(root: &Path, opts: &ScanOptions) -> Result<Tree, Error> {
    scan_many_whole(&[(root, opts)])
        .pop()
        .expect("BUG: one result per root")
}

/// The top level of one root, read on the calling thread; its directories become units
/// of work for the threads.
struct Started<'a> {
    walker: Walker<'a>,
    root_stat: Stat,
    top: Partial<ChunkList>,
    /// (entries of `top` before it, its path, its handle)
    units: Vec<(usize, PathBuf, OwnedFd)>,
}

fn start<'a>(root: &'a Path, opts: &'a ScanOptions) -> Result<Started<'a>, Error> {
    let root_stat = fs::lstat(root)?;
    let root_fd = open_dir_at(rfs::CWD, root.as_os_str())
        .map_err(|e| Error::io("read dir", root, e.into()))?;
    let names = read_names(&root_fd).map_err(|e| Error::io("read dir", root, e.into()))?;
    let walker = Walker {
        root,
        opts,
        dev: root_stat.dev,
    };
    let mut top = Partial::<ChunkList>::default();
    let mut units = Vec::new();
    for name in names.iter() {
        if let Some((rel, fd)) = walker.visit(&root_fd, Path::new(""), name, 0, &mut top) {
            units.push((top.entries.count(), rel, fd));
        }
    }
    Ok(Started {
        walker,
        root_stat,
        top,
        units,
    })
}

/// [`scan`] of several roots at once: the directories of all of them are shared out
/// between one set of threads, as many as there are cores (a thread per root and per
/// core would only add malloc arenas, and with them peak memory). One result per root,
/// held compact: each thread encodes what it finds as it goes.
pub fn scan_many(roots: &[(&Path, &ScanOptions)]) -> Vec<Result<CompactTree, Error>> {
    walk_many(roots, assemble)
}

/// [`scan_many`], each tree whole: what a pass that cannot end before its trees are
/// whole reads (see `crate::pass::quiet`), as do [`scan`] and the tools that read one
/// directory.
pub fn scan_many_whole(roots: &[(&Path, &ScanOptions)]) -> Vec<Result<Tree, Error>> {
    walk_many(roots, assemble_whole)
}

/// The parts of one root's tree, each with the number of the unit of work it is.
type Parts<S> = Vec<(usize, Partial<S>)>;

/// Walks `roots` at once, each thread putting what it finds into a sink of kind `S`;
/// each root's tree is then made of its parts by `assemble` (its order checked), the
/// roots in parallel.
fn walk_many<S: Sink + Send, T: Send>(
    roots: &[(&Path, &ScanOptions)],
    assemble: fn(Started, Parts<S>) -> T,
) -> Vec<Result<T, Error>> {
    let started: Vec<Result<Started, Error>> =
        roots.iter().map(|(root, opts)| start(root, opts)).collect();
    let work: Vec<(usize, usize)> = started
        .iter()
        .enumerate()
        .filter_map(|(r, s)| s.as_ref().ok().map(|s| (r, s.units.len())))
        .flat_map(|(r, n)| (0..n).map(move |u| (r, u)))
        .collect();
    let done: Vec<Partial<S>> = crate::parallel::map(
        &work,
        || (),
        |(), &(r, u)| {
            let Ok(st) = &started[r] else {
                unreachable!("BUG: only started roots have work")
            };
            let (_, rel, fd) = &st.units[u];
            let mut part = Partial::default();
            st.walker.walk(fd, rel, 1, &mut part);
            part
        },
    );
    let mut parts: Vec<Parts<S>> = roots.iter().map(|_| Vec::new()).collect();
    for (&(r, u), part) in work.iter().zip(done) {
        parts[r].push((u, part));
    }
    let jobs: Vec<_> = started.into_iter().zip(parts).collect();
    crate::parallel::map_owned(jobs, |(st, parts)| Ok(assemble(st?, parts)))
}

/// One root's tree, whole, from its top level and its units' parts (see [`join`]):
/// the parts' chunks are taken as they are.
fn assemble_whole(st: Started, parts: Parts<ChunkList>) -> Tree {
    let (root, entries, top) = join(st, parts);
    Tree {
        root,
        // In path order already: taken as it is, after a check.
        entries: entries.into_entries(),
        unknown: top.unknown.into_iter().collect(),
        excluded: top.excluded.into_iter().collect(),
        leftovers: top.leftovers,
        specials: top.specials,
        errors: top.errors,
    }
}

/// One root's tree, compact, from its top level and its units' parts (see [`join`]):
/// the parts' blocks are taken as they are.
fn assemble(st: Started, parts: Parts<Compact>) -> CompactTree {
    let (root, mut entries, top) = join(st, parts);
    entries.shrink();
    CompactTree {
        root,
        entries,
        unknown: top.unknown.into_iter().collect(),
        excluded: top.excluded.into_iter().collect(),
        leftovers: top.leftovers,
        specials: top.specials,
        errors: top.errors,
    }
}

/// One root's entries from its top level and its units' parts, each subtree right after
/// its directory's own entry; with the root's entry, and everything else the walk found
/// (in what is left of the top level).
fn join<S: Sink>(st: Started, mut parts: Parts<S>) -> (Option<Entry>, S, Partial<ChunkList>) {
    let Started {
        root_stat,
        mut top,
        units,
        ..
    } = st;
    parts.sort_by_key(|(i, _)| *i);
    let mut entries = S::default();
    let mut top_entries = std::mem::take(&mut top.entries)
        .into_chunks()
        .into_iter()
        .flat_map(Chunk::into_entries);
    let mut taken = 0usize;
    for (i, part) in parts {
        let upto = units[i].0;
        for (p, e) in top_entries.by_ref().take(upto - taken) {
            entries.put(&p, e);
        }
        taken = upto;
        entries.append(top.absorb(part));
    }
    for (p, e) in top_entries {
        entries.put(&p, e);
    }
    (fs::entry_from_stat(&root_stat, None), entries, top)
}

/// Where a walk puts the entries it finds, in path order: chunks (a tree's own form),
/// or compact.
pub(crate) trait Sink: Default {
    fn put(&mut self, path: &Path, e: Entry);
    fn count(&self) -> usize;
    /// Takes the entries of `other`, which sort after every entry here, as they are.
    fn append(&mut self, other: Self);
}

impl Sink for ChunkList {
    fn put(&mut self, path: &Path, e: Entry) {
        self.push(path, e);
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn append(&mut self, other: Self) {
        ChunkList::append(self, other);
    }
}

impl Sink for Compact {
    fn put(&mut self, path: &Path, e: Entry) {
        self.push(path, &e);
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn append(&mut self, other: Self) {
        Compact::append(self, other);
    }
}

/// What one thread found under one directory.
#[derive(Default)]
struct Partial<S> {
    entries: S,
    unknown: Vec<PathBuf>,
    excluded: Vec<PathBuf>,
    leftovers: Vec<PathBuf>,
    specials: Vec<PathBuf>,
    errors: Vec<Error>,
}

impl<S> Partial<S> {
    /// Takes everything but the entries from `other`, and returns its entries.
    fn absorb<T>(&mut self, other: Partial<T>) -> T {
        self.unknown.extend(other.unknown);
        self.excluded.extend(other.excluded);
        self.leftovers.extend(other.leftovers);
        self.specials.extend(other.specials);
        self.errors.extend(other.errors);
        other.entries
    }
}

struct Walker<'a> {
    root: &'a Path,
    opts: &'a ScanOptions,
    /// The root's filesystem: inodes name files only within one.
    dev: u64,
}

impl Walker<'_> {
    /// Every entry below the directory `fd` (at `rel`), depth first, in path order.
    fn walk<S: Sink>(&self, fd: &OwnedFd, rel: &Path, depth: usize, out: &mut Partial<S>) {
        let Some(names) = self.names_of(fd, rel, out) else {
            return;
        };
        for name in names.iter() {
            if let Some((child, sub)) = self.visit(fd, rel, name, depth, out) {
                self.walk(&sub, &child, depth + 1, out);
            }
        }
    }

    /// The names in the directory `fd` (at `rel`); one that cannot be read is an error,
    /// and its path unknown.
    fn names_of<S>(&self, fd: &OwnedFd, rel: &Path, out: &mut Partial<S>) -> Option<Names> {
        match read_names(fd) {
            Ok(n) => Some(n),
            Err(e) => {
                out.errors
                    .push(Error::io("read dir", self.root.join(rel), e.into()));
                out.unknown.push(rel.to_path_buf());
                None
            }
        }
    }

    /// Records the entry `name` of the directory `fd`; returns the handle of a directory
    /// to descend into.
    fn visit<S: Sink>(
        &self,
        fd: &OwnedFd,
        rel: &Path,
        name: &OsStr,
        depth: usize,
        out: &mut Partial<S>,
    ) -> Option<(PathBuf, OwnedFd)> {
        // Sized exactly: a tree keeps one of these per entry (`join` leaves slack).
        let mut child = PathBuf::with_capacity(rel.as_os_str().len() + 1 + name.len());
        child.push(rel);
        child.push(name);
        if names::is_temp_name(name) {
            out.leftovers.push(child);
            return None;
        }
        if depth == 0 && names::is_reserved_top(name) {
            return None;
        }
        let st = match rfs::statat(fd, name, rfs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Stat::from_raw(&st),
            Err(e) => {
                out.errors
                    .push(Error::io("stat", self.root.join(&child), e.into()));
                out.unknown.push(child);
                return None;
            }
        };
        let is_dir = st.kind == Some(Kind::Dir);
        if is_dir
            && !self.opts.skip.is_empty()
            && self.opts.skip.iter().any(|s| *s == self.root.join(&child))
        {
            // Left alone as an excluded path is: a planner never removes a folder that
            // holds one (a store inside BACKUP, BACKUP inside SOURCE).
            out.excluded.push(child);
            return None;
        }
        if self.opts.filter.is_excluded(&child, is_dir) {
            out.excluded.push(child);
            return None;
        }
        let target = if st.kind == Some(Kind::Symlink) {
            match rfs::readlinkat(fd, name, Vec::new()) {
                Ok(t) => Some(PathBuf::from(OsStr::from_bytes(t.as_bytes()))),
                Err(e) => {
                    out.errors
                        .push(Error::io("readlink", self.root.join(&child), e.into()));
                    out.unknown.push(child);
                    return None;
                }
            }
        } else {
            None
        };
        let Some(mut entry) = fs::entry_from_stat(&st, target) else {
            out.specials.push(child.clone());
            out.unknown.push(child);
            return None;
        };
        // A file with other names on the root's own filesystem: its inode groups them.
        entry.linked = st.nlink > 1 && st.dev == self.dev && entry.kind == Kind::File;
        entry.touched = self
            .opts
            .touched_since
            .is_some_and(|t| st.ctime.is_racy_at(t));
        out.entries.put(&child, entry);
        if !is_dir {
            return None;
        }
        match open_dir_at(fd.as_fd(), name) {
            Ok(sub) => Some((child, sub)),
            Err(e) => {
                out.errors
                    .push(Error::io("read dir", self.root.join(&child), e.into()));
                out.unknown.push(child);
                None
            }
        }
    }
}

fn open_dir_at<Fd: AsFd>(dir: Fd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        rfs::OFlags::RDONLY | rfs::OFlags::DIRECTORY | rfs::OFlags::NOFOLLOW | rfs::OFlags::CLOEXEC,
        rfs::Mode::empty(),
    )
}

/// The names in a directory (not `.` and `..`), in byte order.
/// The names of a directory, in byte order, kept in one buffer.
struct Names {
    bytes: Vec<u8>,
    /// (start, length) of each name in `bytes`.
    spans: Vec<(u32, u32)>,
}

impl Names {
    fn name(&self, (at, len): (u32, u32)) -> &[u8] {
        &self.bytes[at as usize..(at + len) as usize]
    }

    fn iter(&self) -> impl Iterator<Item = &OsStr> + '_ {
        self.spans
            .iter()
            .map(|&span| OsStr::from_bytes(self.name(span)))
    }
}

/// Reads the names of the directory `fd` (freshly opened: read from its start) with
/// `getdents` into a buffer of this thread's, without opening the directory again or
/// allocating per name.
fn read_names(fd: &OwnedFd) -> rustix::io::Result<Names> {
    use std::mem::MaybeUninit;
    thread_local! {
        static DENTS: std::cell::RefCell<Vec<MaybeUninit<u8>>> =
            std::cell::RefCell::new(vec![MaybeUninit::uninit(); 32 * 1024]);
    }
    let mut names = Names {
        bytes: Vec::new(),
        spans: Vec::new(),
    };
    DENTS.with(|buf| -> rustix::io::Result<()> {
        let mut buf = buf.borrow_mut();
        let mut dir = rfs::RawDir::new(fd, &mut buf[..]);
        while let Some(ent) = dir.next() {
            let ent = ent?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.spans.push((names.bytes.len() as u32, n.len() as u32));
                names.bytes.extend_from_slice(n);
            }
        }
        Ok(())
    })?;
    let mut spans = std::mem::take(&mut names.spans);
    spans.sort_unstable_by(|&a, &b| names.name(a).cmp(names.name(b)));
    // A directory changed while it was read may give a name twice: it is one entry.
    spans.dedup_by(|a, b| names.name(*a) == names.name(*b));
    names.spans = spans;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_sees_files_dirs_links_and_skips_reserved() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/empty")).unwrap();
        std::fs::write(r.join("a/f"), b"x").unwrap();
        std::os::unix::fs::symlink("nowhere", r.join("dangling")).unwrap();
        std::fs::create_dir(r.join("__versions__")).unwrap();
        std::fs::write(r.join("a/.twoway-tmp-1"), b"partial").unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            r.join("fifo"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let t = scan(r, &ScanOptions::default()).unwrap();
        let keys: Vec<_> = t.entries.keys().map(|k| k.to_str().unwrap()).collect();
        assert_eq!(keys, ["a", "a/empty", "a/f", "dangling"]);
        assert_eq!(
            t.entries.get(Path::new("dangling")).unwrap().link_target(),
            Some(Path::new("nowhere"))
        );
        assert_eq!(t.leftovers, [PathBuf::from("a/.twoway-tmp-1")]);
        assert_eq!(t.specials, [PathBuf::from("fifo")]);
        assert!(t.is_unknown(Path::new("fifo")));
    }

    #[test]
    fn a_tree_read_compact_and_made_whole_is_the_tree_read_whole() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in ["a/b/c", "a/d", "e", "left/out", "z"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        for (i, f) in ["a/f", "a/b/g", "a/b/c/h", "e/i", "left/out/j", "top", "z/k"]
            .iter()
            .enumerate()
        {
            std::fs::write(r.join(f), "x".repeat(i)).unwrap();
        }
        std::os::unix::fs::symlink("a/f", r.join("link")).unwrap();
        std::fs::write(r.join("e/.twoway-tmp-9"), b"partial").unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            r.join("a/fifo"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let opts = ScanOptions {
            skip: vec![r.join("left")],
            ..Default::default()
        };
        let compact = scan_many(&[(r, &opts)]).pop().unwrap().unwrap().into_tree();
        let whole = scan_many_whole(&[(r, &opts)]).pop().unwrap().unwrap();
        let listed = |t: &Tree| -> Vec<(PathBuf, Entry)> {
            t.entries
                .iter()
                .map(|(p, e)| (p.to_path_buf(), e.clone()))
                .collect()
        };
        assert_eq!(listed(&compact), listed(&whole));
        assert_eq!(whole.entries.len(), 13);
        assert_eq!(compact.root, whole.root);
        assert_eq!(
            (
                &compact.unknown,
                &compact.excluded,
                &compact.leftovers,
                &compact.specials
            ),
            (
                &whole.unknown,
                &whole.excluded,
                &whole.leftovers,
                &whole.specials
            )
        );
        assert_eq!(whole.excluded.len(), 1);
        assert_eq!(whole.leftovers, [PathBuf::from("e/.twoway-tmp-9")]);
        assert_eq!(whole.specials, [PathBuf::from("a/fifo")]);
    }
}
