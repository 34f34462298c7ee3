//! Building a version's tree in the store: from scratch (hard links to the replica's
//! files, or copies — reflinked where possible — sharing unchanged files with the previous
//! version), by patching the version being dropped so that only what changed is linked
//! again, or as a spare of the latest version for the next one to patch. The tree is
//! finished by its manifest elsewhere; this module never touches a replica except to
//! read it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use engine::error::Error;
use engine::fs::{self, Root};
use engine::hash;
use engine::tree::encoding::{EntryRecord, EntryRef};
use engine::tree::{Digest, Kind, MTime};

use crate::manifest::{Manifest, MANIFEST};

/// What a version holds where the replica changed after it was hashed: the real hash
/// and stat of the file linked or copied, by path.
pub(crate) type Fixes = HashMap<PathBuf, (Digest, fs::Stat)>;

/// The previous version's files: hash, mode and mtime by path.
type PrevFiles<'a> = HashMap<&'a Path, (Digest, u32, (i64, u32))>;

/// Runs `work` on every item of `items` (about `total` of them) on every core, a run of
/// neighbours at a time (they share a directory, and two threads writing into one
/// directory wait on its lock); each thread first opens what it works with. The items
/// are taken from the iterator as they are needed, so none is listed beforehand.
/// `whole_dirs`: every item is quick (a link, a removal), so a run goes on to the end of
/// its directory however long (else runs stay short, to share out copies evenly).
/// Returns what `work` found; the first error stops it.
fn in_parallel<T: Send, S, R: Send>(
    items: impl Iterator<Item = T> + Send,
    (total, whole_dirs): (usize, bool),
    path_of: impl Fn(&T) -> &Path + Sync,
    open: impl Fn() -> Result<S, Error> + Sync,
    work: impl Fn(&mut S, T) -> Result<Option<R>, Error> + Sync,
) -> Result<Vec<R>, Error> {
    let items = std::sync::Mutex::new(items.peekable());
    let len = engine::apply::run_length(total);
    let max = if whole_dirs { usize::MAX } else { len };
    let results: Vec<Result<Vec<R>, Error>> = engine::parallel::workers(total, || {
        let mut state = open()?;
        let mut found = Vec::new();
        let mut run = Vec::with_capacity(len);
        loop {
            let mut items = items.lock().expect("BUG: version workers do not panic");
            while let Some(next) = items.next_if(|next| match run.last() {
                Some(last) => {
                    engine::apply::run_goes_on(run.len(), (len, max), path_of(last), path_of(next))
                }
                None => true,
            }) {
                run.push(next);
            }
            drop(items);
            if run.is_empty() {
                break;
            }
            for item in run.drain(..) {
                found.extend(work(&mut state, item)?);
            }
        }
        Ok(found)
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

/// Puts the files and links of `items` (about `total.0`; `total.1`: links, see
/// [`in_parallel`]) into the version at `new` on every core; returns what was found
/// changed since it was hashed, by path.
fn put_all<'e, S>(
    items: impl Iterator<Item = EntryRef<'e>> + Send,
    total: (usize, bool),
    open: impl Fn() -> Result<S, Error> + Sync,
    put: impl Fn(&mut S, &EntryRef<'e>) -> Result<Option<(Digest, fs::Stat)>, Error> + Sync,
) -> Result<Fixes, Error> {
    let found = in_parallel(
        items.filter(|e| e.kind != Kind::Dir),
        total,
        |e| e.path,
        open,
        |state, e| Ok(put(state, &e)?.map(|fix| (e.path.to_path_buf(), fix))),
    )?;
    Ok(found.into_iter().collect())
}

/// Fills `new` with the entries `news` gives (a version's, in path order; afresh each
/// time it is called), linked or copied from `replica`: directories first, then files
/// and links on every core.
pub(crate) fn build<'n, I: Iterator<Item = EntryRef<'n>> + Send>(
    new: &Path,
    replica: &Path,
    news: impl Fn() -> I,
    previous: Option<&Manifest>,
    link_first: bool,
    prev_dir: &Path,
) -> Result<Fixes, Error> {
    let (mut dst, dirs, total) = make_dirs(new, news())?;
    let prev_files: PrevFiles = previous
        .iter()
        .flat_map(|m| m.entries.iter())
        .filter_map(|e| Some((e.path.as_path(), (e.sha256?, e.mode, e.mtime))))
        .collect();
    let link_ok = std::sync::atomic::AtomicBool::new(previous.is_none() && link_first);
    let fixes = put_all(
        news(),
        (total, previous.is_none() && link_first),
        || {
            let prev = previous.and_then(|_| Root::open(prev_dir).ok());
            Ok((Root::open(new)?, Root::open(replica)?, prev))
        },
        |(dst, src, prev), e| put_entry(e, new, dst, src, prev.as_mut(), &prev_files, &link_ok),
    )?;
    finish_tree(&mut dst, dirs)?;
    Ok(fixes)
}

/// Makes at `new` a tree of hard links to the files of the finished version at `from`
/// (its entries `news` gives, in path order, afresh each time it is called; its links
/// and directories are made again): a spare that the next version recycles. Only links:
/// where one cannot be made it fails, never copies.
pub(crate) fn link_tree<'n, I: Iterator<Item = EntryRef<'n>> + Send>(
    new: &Path,
    from: &Path,
    news: impl Fn() -> I,
) -> Result<(), Error> {
    let (mut dst, dirs, total) = make_dirs(new, news())?;
    put_all(
        news(),
        (total, true),
        || Ok((Root::open(new)?, Root::open(from)?)),
        |(dst, src), e| {
            if e.kind == Kind::Symlink {
                dst.symlink(
                    e.path,
                    e.target.unwrap_or(Path::new("")),
                    e.mtime(),
                    e.owner(),
                )?;
            } else {
                dst.link_from(src, e.path, e.path)?;
            }
            Ok(None)
        },
    )?;
    finish_tree(&mut dst, dirs)
}

/// Makes the directories among `entries` (in path order) inside `new`, left writable
/// for what goes into them; returns `new` opened, the directories made (to be finished
/// by [`finish_tree`]) and how many entries there are.
#[allow(clippy::type_complexity)]
fn make_dirs<'n>(
    new: &Path,
    entries: impl Iterator<Item = EntryRef<'n>>,
) -> Result<(Root, Vec<(&'n Path, u32, MTime)>, usize), Error> {
    let mut dst = Root::open(new)?;
    let mut dirs = Vec::new();
    let mut total = 0usize;
    for e in entries {
        total += 1;
        if e.kind == Kind::Dir {
            dst.mkdir_unfinished(e.path)?;
            dirs.push((e.path, e.mode, e.mtime()));
        }
    }
    Ok((dst, dirs, total))
}

/// What turns a recycled version tree into a new one: found by [`plan_patch`] from the
/// manifests alone, carried out by [`patch`].
pub(crate) struct Patch<'n> {
    /// Entries of the old tree that go (a removed directory goes whole).
    removes: Vec<PathBuf>,
    /// Entries of the new version to put in, parents before children.
    puts: Vec<EntryRef<'n>>,
    /// Directories whose mode or mtime must be set again: changed in the manifest, or
    /// an entry was removed from them (which moves their mtime).
    touched: HashSet<PathBuf>,
}

/// Compares the entries `olds` of a version tree (read from its manifest as the walk
/// reaches them) with the entries `news` of the version to make (both in path order): a
/// file stays when it is still the replica's very inode with the same bytes and
/// metadata; everything else is removed and linked again. Reads every old entry, so an
/// error — a damaged manifest — shows here, before the tree is touched.
pub(crate) fn plan_patch<'n>(
    news: impl Iterator<Item = EntryRef<'n>>,
    olds: impl Iterator<Item = Result<EntryRecord, Error>>,
) -> Result<Patch<'n>, Error> {
    let keeps = |o: &EntryRef, n: &EntryRef| -> bool {
        o.kind == n.kind
            && match n.kind {
                Kind::Dir => true,
                Kind::Symlink => o.target == n.target && o.mtime == n.mtime,
                Kind::File => {
                    o.ino.is_some()
                        && o.ino == n.ino
                        && o.sha256 == n.sha256
                        && o.mode == n.mode
                        && o.mtime == n.mtime
                        && o.size == n.size
                }
            }
    };
    // The old entries are owned one at a time, so what outlives the walk is copied:
    // the paths removed and the directories touched, a few for a few changes.
    let mut removed_dir: Option<PathBuf> = None;
    let mut plan = Patch {
        removes: Vec::new(),
        puts: Vec::new(),
        touched: HashSet::new(),
    };
    // The walk stops at the first entry that cannot be read, and the patch with it.
    let mut unread: Option<Error> = None;
    let olds = olds.map_while(|r| r.map_err(|e| unread = Some(e)).ok());
    let walk = engine::tree::zip_sorted_by(olds, news, |o| o.path.as_path(), |n| n.path);
    for (o, n) in walk {
        let p: &Path = match (&o, &n) {
            (_, Some(n)) => n.path,
            (Some(o), None) => &o.path,
            (None, None) => unreachable!("BUG: a step has an item"),
        };
        if removed_dir.as_ref().is_some_and(|d| p.starts_with(d)) {
            plan.puts.extend(n);
            continue;
        }
        removed_dir = None;
        match (o, n) {
            (Some(o), Some(n)) if keeps(&o.as_ref(), &n) => {
                if n.kind == Kind::Dir && (o.mode != n.mode || o.mtime != n.mtime) {
                    plan.touched.insert(n.path.to_path_buf());
                }
            }
            (Some(o), n) => {
                plan.touched.extend(parent(&o.path).map(Path::to_path_buf));
                if o.kind == Kind::Dir {
                    removed_dir = Some(o.path.clone());
                }
                plan.removes.push(o.path);
                plan.puts.extend(n);
            }
            (None, Some(n)) => plan.puts.push(n),
            (None, None) => {}
        }
    }
    match unread {
        Some(e) => Err(e),
        None => Ok(plan),
    }
}

fn parent(p: &Path) -> Option<&Path> {
    Some(engine::tree::parent_of(p)).filter(|q| !q.as_os_str().is_empty())
}

/// Turns the recycled version tree at `new` into one of `news` (in path order; given
/// afresh each time it is called) as `plan` says ([`plan_patch`] made it from the
/// tree's manifest).
pub(crate) fn patch<'n, I: Iterator<Item = EntryRef<'n>>>(
    new: &Path,
    replica: &Path,
    news: impl Fn() -> I,
    plan: Patch<'n>,
) -> Result<Fixes, Error> {
    let Patch {
        removes,
        puts,
        mut touched,
    } = plan;
    // The old manifest's own file goes: a new one is written when the tree is done.
    if let Ok(mut tree) = Root::open(new) {
        let _ = tree.remove(Path::new(MANIFEST));
    }
    // What goes, then the new directories (parents first), then the files and links,
    // the removals and the puts each on every core.
    in_parallel(
        removes.iter(),
        (removes.len(), true),
        |p| p.as_path(),
        || Root::open(new),
        |dst, p| dst.remove(p).map(|_| None::<()>),
    )?;
    let mut dst = Root::open(new)?;
    for n in &puts {
        touched.extend(parent(n.path).map(Path::to_path_buf));
        if n.kind == Kind::Dir {
            touched.insert(n.path.to_path_buf());
            dst.mkdir_unfinished(n.path)?;
        }
    }
    let no_prev = HashMap::new();
    let link_ok = std::sync::atomic::AtomicBool::new(true);
    let fixes = put_all(
        puts.iter().cloned(),
        (puts.len(), true),
        || Ok((Root::open(new)?, Root::open(replica)?)),
        |(dst, src), n| put_entry(n, new, dst, src, None, &no_prev, &link_ok),
    )?;
    let dirs: Vec<(&Path, u32, MTime)> = news()
        .filter(|e| e.kind == Kind::Dir && touched.contains(e.path))
        .map(|e| (e.path, e.mode, e.mtime()))
        .collect();
    finish_tree(&mut dst, dirs)?;
    Ok(fixes)
}

/// Sets the version's directory modes and mtimes, deepest first (owner-writable, so
/// the version can be dropped later; the real modes are in the manifest).
fn finish_tree(dst: &mut Root, dirs: Vec<(&Path, u32, MTime)>) -> Result<(), Error> {
    for (p, mode, mtime) in dirs.into_iter().rev() {
        // The version's directories are the tool's: no owner of the replica's (the
        // manifest records those).
        dst.set_dir_meta(p, mode | 0o700, mtime, engine::Owner::UNKNOWN)?;
    }
    Ok(())
}

/// `e` as the version holds it, with what `fixes` found.
pub(crate) fn fixed<'a>(mut e: EntryRef<'a>, fixes: &Fixes) -> EntryRef<'a> {
    // Nearly always empty: no path is hashed for a lookup then.
    if fixes.is_empty() {
        return e;
    }
    if let Some((d, st)) = fixes.get(e.path) {
        e.sha256 = Some(*d);
        e.size = st.size;
        e.mode = st.mode;
        e.mtime = (st.mtime.sec, st.mtime.nsec);
        e.ino = Some(st.ino);
    }
    e
}

/// Puts one file or link of a version in place; returns the real hash and stat of a
/// file that changed since it was hashed.
#[allow(clippy::too_many_arguments)]
fn put_entry(
    e: &EntryRef<'_>,
    new: &Path,
    dst: &mut Root,
    src: &mut Root,
    prev_root: Option<&mut Root>,
    prev_files: &PrevFiles,
    link_ok: &std::sync::atomic::AtomicBool,
) -> Result<Option<(Digest, fs::Stat)>, Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let mtime = e.mtime();
    if e.kind == Kind::Symlink {
        dst.symlink(e.path, e.target.unwrap_or(Path::new("")), mtime, e.owner())?;
        return Ok(None);
    }
    if link_ok.load(Relaxed) {
        match dst.link_from(src, e.path, e.path) {
            Ok(()) => {
                let st = dst.stat(e.path)?;
                if let Some(st) = st.filter(|st| st.size != e.size || st.mtime != mtime) {
                    let (d, _) = hash::hash_in(dst, e.path)?;
                    return Ok(Some((d, st)));
                }
                return Ok(None);
            }
            Err(Error::Io { source, .. }) if cannot_link(&source) => {
                log::debug!("no hard links into this store ({source}): copying versions");
                link_ok.store(false, Relaxed);
            }
            Err(err) => return Err(err),
        }
    }
    let unchanged = prev_files
        .get(e.path)
        .is_some_and(|(h, m, t)| Some(*h) == e.sha256 && *m == e.mode && *t == e.mtime);
    if let (true, Some(prev)) = (unchanged, prev_root) {
        if dst.link_from(prev, e.path, e.path).is_ok() {
            return Ok(None);
        }
    }
    match copy_into(src, dst, e)? {
        Copied::Hashed(d) if Some(d) == e.sha256 => Ok(None),
        Copied::Unread { unchanged: true } => Ok(None),
        // Not the bytes `e` was hashed from: the manifest records the copy's.
        copied => {
            let d = match copied {
                Copied::Hashed(d) => d,
                Copied::Unread { .. } => hash::hash_in(dst, e.path)?.0,
            };
            let st = dst
                .stat(e.path)?
                .ok_or_else(|| Error::entry(new.join(e.path), "vanished from the version"))?;
            Ok(Some((d, st)))
        }
    }
}

/// What [`copy_into`] knows of the bytes it copied.
enum Copied {
    /// Read and hashed on the way.
    Hashed(Digest),
    /// Cloned in the kernel; `unchanged` if the source's stat was still the one hashed.
    Unread { unchanged: bool },
}

/// Copies one file of the replica into a version, reflinked where the filesystem can,
/// with the mode and mtime of `e`.
fn copy_into(src: &mut Root, dst: &mut Root, e: &EntryRef<'_>) -> Result<Copied, Error> {
    let rel = e.path;
    let (mut file, before) = src.open_read(rel)?;
    let mut temp = dst.create_temp(rel)?;
    let copied = if rustix::fs::ioctl_ficlone(&*temp.file_mut(), &file).is_ok() {
        // The clone is one atomic step of the kernel's: nothing to tear.
        Copied::Unread {
            unchanged: before.size == e.size && before.mtime == e.mtime(),
        }
    } else {
        let (digest, _) =
            temp.fill_hashing(&mut file, before.is_sparse(), &|| false, &src.abs(rel))?;
        Copied::Hashed(digest)
    };
    // A file rewritten while it was copied (even with its mtime put back) would leave
    // the version with mixed bytes.
    if let Copied::Hashed(digest) = copied {
        let after = fs::fstat(&file, &src.abs(rel))?;
        if !hash::unchanged_while_read(&mut file, &before, &after, u64::MAX, digest)
            .map_err(|err| Error::io("read", src.abs(rel), err))?
        {
            return Err(Error::entry(
                src.abs(rel),
                "changed while it was copied into the version",
            ));
        }
    }
    // Flushed with the whole tree before its manifest is written.
    temp.set_meta(e.mode, e.mtime(), e.owner())?;
    temp.commit()?;
    Ok(copied)
}

/// Errors that mean "no hard link possible here" rather than a failure: another
/// filesystem, or one without hard links (FAT, exFAT, some network shares).
pub(crate) fn cannot_link(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::XDEV, Errno::PERM, Errno::OPNOTSUPP, Errno::MLINK]
        .iter()
        .any(|x| e.raw_os_error() == Some(x.raw_os_error()))
}
