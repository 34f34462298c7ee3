//! A rescan of some directories of a root whose whole tree is known from the pass before
//! (`--watch`): each directory named is read again (its entries, not what lies below
//! them), a directory found there that the tree did not hold as one is walked whole, and
//! the rest of the tree is taken as it was. What the watcher saw change is all that is
//! read, so a pass that a one-file change starts costs what that change costs.
//!
//! A hash is taken over from the tree before only where the file's size, mtime and inode
//! are the same and its mtime was not racy when that tree was read (as the stat cache
//! does); a file that is gone from one path and has the same inode, size and mtime at
//! another (a rename) keeps its hash too.
//!
//! It reads only, through directory handles opened without following a symlink, as the
//! scan does.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs as rfs;

use super::{open_dir_at, Partial, ScanOptions, Walker};
use crate::error::Error;
use crate::fs;
use crate::tree::entries::{Chunk, ChunkList};
use crate::tree::{parent_of, Digest, Entry, Kind, MTime, Tree};

/// What a rescan read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rescanned {
    /// Directories read again.
    pub dirs: usize,
    /// Entries read (a new directory's whole subtree included).
    pub entries: usize,
    /// Files whose hash came from another path (renamed or moved).
    pub moved: usize,
    /// Something read differs from the tree before (else the tree is the very one the
    /// pass before left).
    pub changed: bool,
    /// What was read: the part of the tree a planner needs to look at.
    pub region: Region,
}

/// The part of a tree a rescan read: the folders read (their own entries and the entries
/// in them) and the folders walked whole. Outside it, the tree is what the pass before
/// left, when every replica was made the same: a plan of that part is the plan of the
/// whole (but for hard links, which pair paths anywhere in a tree).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Region {
    pub dirs: BTreeSet<PathBuf>,
    pub whole: BTreeSet<PathBuf>,
}

impl Region {
    /// Both regions at once (the same folders must be planned on every replica).
    pub fn join(mut self, other: Region) -> Region {
        self.dirs.extend(other.dirs);
        self.whole.extend(other.whole);
        self
    }

    /// The entries of `tree` in the region (its root, unknown and excluded paths
    /// kept as they are).
    pub fn part_of(&self, tree: &Tree) -> Tree {
        let mut v: Vec<(PathBuf, Entry)> = Vec::new();
        for d in &self.dirs {
            if !d.as_os_str().is_empty() {
                if let Some(e) = tree.entries.get(d) {
                    v.push((d.clone(), e.clone()));
                }
            }
            for (p, e) in tree.entries.at_and_under(d) {
                if p != d && parent_of(p) == d {
                    v.push((p.to_path_buf(), e.clone()));
                }
            }
        }
        for w in &self.whole {
            for (p, e) in tree.entries.at_and_under(w) {
                v.push((p.to_path_buf(), e.clone()));
            }
        }
        crate::tree::sort_by_path(&mut v);
        v.dedup_by(|a, b| a.0 == b.0);
        Tree {
            root: tree.root.clone(),
            entries: crate::tree::Entries::from_sorted(v),
            unknown: tree.unknown.clone(),
            excluded: tree.excluded.clone(),
            ..Tree::default()
        }
    }
}

/// Reads `dirs` (relative to `root`) again into `held`, the tree of `root` as the pass
/// before left it, read at `held_at`. A directory named that is gone, or is no longer a
/// directory, is replaced by the nearest one above it that is. Fails only if the root
/// itself cannot be read.
pub fn rescan(
    root: &Path,
    opts: &ScanOptions,
    mut held: Tree,
    held_at: MTime,
    dirs: &BTreeSet<PathBuf>,
) -> Result<(Tree, Rescanned), Error> {
    let root_stat = fs::lstat(root)?;
    let root_fd = open_dir_at(rfs::CWD, root.as_os_str())
        .map_err(|e| Error::io("read dir", root, e.into()))?;
    let walker = Walker {
        root,
        opts,
        dev: root_stat.dev,
    };
    // What was not read again is as it was: its inode change is no news.
    for (_, e) in held.entries.iter_mut() {
        e.touched = false;
    }
    let mut stats = Rescanned::default();
    let mut removed: Vec<PathBuf> = Vec::new();
    let mut part = Partial::<ChunkList>::default();
    let mut changes: Vec<(PathBuf, Entry)> = Vec::new();
    let mut read: BTreeSet<PathBuf> = BTreeSet::new();
    let mut queue: Vec<(PathBuf, Option<OwnedFd>)> =
        dirs.iter().rev().map(|d| (d.clone(), None)).collect();
    while let Some((dir, fd)) = queue.pop() {
        let (rel, fd) = match fd {
            Some(fd) => (dir, fd),
            None => match open_known(&root_fd, &held, &dir) {
                Some(found) => found,
                None => continue,
            },
        };
        if !read.insert(rel.clone()) {
            continue;
        }
        stats.dirs += 1;
        // The folder's own entry (its mtime moved with the names in it).
        if !rel.as_os_str().is_empty() {
            if let Ok(st) = rfs::fstat(&fd) {
                let st = fs::Stat::from_raw(&st);
                if let Some(mut e) = fs::entry_from_stat(&st, None) {
                    e.touched = opts.touched_since.is_some_and(|t| st.ctime.is_racy_at(t));
                    changes.push((rel.clone(), e));
                }
            }
        }
        let mut this = Partial::<ChunkList>::default();
        let (changed, gone) = read_dir(
            &walker,
            &held,
            (&rel, &fd),
            &mut this,
            &mut removed,
            &mut stats.region.whole,
        );
        // Something the folder held is gone.
        stats.changed |= gone;
        changes.extend(
            part.absorb(this)
                .into_chunks()
                .into_iter()
                .flat_map(Chunk::into_entries),
        );
        // A folder below whose own mtime moved had names added or taken away: it is read
        // too, whether or not the watcher said so.
        queue.extend(changed.into_iter().map(|(p, fd)| (p, Some(fd))));
    }
    // What the tree before held under each directory read again, and under what they
    // replaced, is given up; its files' hashes stay at hand for a rename.
    let mut gone: HashMap<u64, (u64, MTime, Digest)> = HashMap::new();
    for r in &removed {
        for (_, e) in held.entries.at_and_under(r) {
            if let (Kind::File, Some(h)) = (e.kind, e.hash) {
                if !e.mtime.is_racy_at(held_at) {
                    gone.insert(e.ino, (e.size, e.mtime, h));
                }
            }
        }
    }
    stats.entries = changes.len();
    for (p, e) in &mut changes {
        let was = held.entries.get(p);
        stats.changed |= was.map(same_stat) != Some(same_stat(e));
        if e.kind != Kind::File {
            continue;
        }
        let before = held.entries.get(p).filter(|b| {
            b.kind == Kind::File
                && b.size == e.size
                && b.mtime == e.mtime
                && b.ino == e.ino
                && !b.mtime.is_racy_at(held_at)
        });
        e.hash = before.and_then(|b| b.hash);
        // A hash given up (a racy reading) is a change: the bytes may differ.
        stats.changed |= e.hash.is_none() && was.is_some_and(|w| w.hash.is_some());
        if e.hash.is_none() {
            if let Some(&(size, mtime, h)) = gone.get(&e.ino) {
                if size == e.size && mtime == e.mtime {
                    e.hash = Some(h);
                    stats.moved += 1;
                }
            }
        }
    }
    // The unknown and excluded paths read again are as this reading found them.
    let replaced =
        |p: &Path| read.contains(parent_of(p)) || removed.iter().any(|r| p.starts_with(r));
    let root_now = fs::entry_from_stat(&root_stat, None);
    stats.changed |= !part.errors.is_empty()
        || !part.unknown.is_empty()
        || root_now.as_ref().map(same_stat) != held.root.as_ref().map(same_stat);
    held.unknown.retain(|p| !replaced(p));
    held.excluded.retain(|p| !replaced(p));
    held.unknown.extend(part.unknown);
    held.excluded.extend(part.excluded);
    held.entries.merge(&removed, changes);
    held.root = root_now;
    stats.region.dirs = read;
    held.leftovers = part.leftovers;
    held.specials = part.specials;
    held.errors = part.errors;
    Ok((held, stats))
}

/// What a reading of an entry says of it (its hash aside, which follows from these).
fn same_stat(
    e: &Entry,
) -> (
    Kind,
    u64,
    u32,
    MTime,
    u64,
    Option<&Path>,
    crate::tree::Owner,
) {
    (
        e.kind,
        e.size,
        e.mode,
        e.mtime,
        e.ino,
        e.link_target(),
        e.owner,
    )
}

/// Opens `dir`, or the nearest directory above it that the tree holds and that is still
/// a directory on disk (each component opened without following a symlink).
fn open_known(root_fd: &OwnedFd, held: &Tree, dir: &Path) -> Option<(PathBuf, OwnedFd)> {
    let mut at = dir;
    loop {
        let known =
            at.as_os_str().is_empty() || held.entries.get(at).is_some_and(|e| e.kind == Kind::Dir);
        if known {
            if let Ok(fd) = open_path(root_fd, at) {
                return Some((at.to_path_buf(), fd));
            }
            if at.as_os_str().is_empty() {
                return None;
            }
        }
        at = parent_of(at);
    }
}

/// Opens the directory at `rel` under `root_fd`, a component at a time, following no
/// symlink.
fn open_path(root_fd: &OwnedFd, rel: &Path) -> rustix::io::Result<OwnedFd> {
    let mut fd = open_dir_at(root_fd, OsStr::new("."))?;
    for c in rel.components() {
        fd = open_dir_at(&fd, c.as_os_str())?;
    }
    Ok(fd)
}

/// Reads the entries of the directory `fd` (at `rel`): each one is set anew; a directory
/// the tree held as one (the same inode) keeps what it held below it, any other is
/// walked whole. Paths of the tree before that go (with what lies under them) are added
/// to `removed`. Returns the directories kept whose mtime moved (names were added or
/// taken away there), to be read too, and whether a name the tree held is gone.
fn read_dir(
    walker: &Walker,
    held: &Tree,
    (rel, fd): (&Path, &OwnedFd),
    part: &mut Partial<ChunkList>,
    removed: &mut Vec<PathBuf>,
    walked: &mut BTreeSet<PathBuf>,
) -> (Vec<(PathBuf, OwnedFd)>, bool) {
    let mut moved_mtime = Vec::new();
    let depth = rel.components().count();
    let Some(names) = walker.names_of(fd, rel, part) else {
        removed.extend(children(held, rel));
        return (moved_mtime, true);
    };
    let mut now: BTreeSet<&[u8]> = BTreeSet::new();
    for name in names.iter() {
        now.insert(name.as_bytes());
        let Some((child, sub)) = walker.visit(fd, rel, name, depth, part) else {
            // A file, link or left-out entry: whatever the tree held there goes.
            removed.push(rel.join(name));
            continue;
        };
        let was = held.entries.get(&child).filter(|e| e.kind == Kind::Dir);
        let is = rfs::fstat(&sub).map(|st| fs::Stat::from_raw(&st));
        match (was, is) {
            (Some(w), Ok(st)) if w.ino == st.ino => {
                if w.mtime != st.mtime {
                    moved_mtime.push((child, sub));
                }
            }
            _ => {
                removed.push(child.clone());
                walker.walk(&sub, &child, depth + 1, part);
                walked.insert(child);
            }
        }
    }
    // What the directory no longer holds.
    let mut gone = false;
    for c in children(held, rel) {
        let name = c.file_name().map(OsStr::as_bytes).unwrap_or_default();
        if !now.contains(name) {
            removed.push(c);
            gone = true;
        }
    }
    (moved_mtime, gone)
}

/// The paths directly under `dir` in `tree`.
fn children(tree: &Tree, dir: &Path) -> Vec<PathBuf> {
    tree.entries
        .at_and_under(dir)
        .filter(|(p, _)| !p.as_os_str().is_empty() && *p != dir && parent_of(p) == dir)
        .map(|(p, _)| p.to_path_buf())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::scan;

    fn keys(t: &Tree) -> Vec<String> {
        t.entries
            .iter()
            .map(|(p, e)| {
                format!(
                    "{}{}",
                    p.display(),
                    if e.kind == Kind::Dir { "/" } else { "" }
                )
            })
            .collect()
    }

    fn with_hashes(mut t: Tree) -> Tree {
        for (_, e) in t.entries.iter_mut() {
            if e.kind == Kind::File {
                e.hash = Some(Digest([e.size as u8; 32]));
            }
        }
        t
    }

    fn dirs(d: &[&str]) -> BTreeSet<PathBuf> {
        d.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn a_rescan_of_the_folders_named_gives_the_tree_a_whole_scan_gives() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for p in ["a/x", "a/y/z", "b/c", "gone/deep"] {
            std::fs::create_dir_all(r.join(p)).unwrap();
        }
        std::fs::write(r.join("a/f"), b"1").unwrap();
        std::fs::write(r.join("a/y/z/g"), b"22").unwrap();
        std::fs::write(r.join("b/c/h"), b"333").unwrap();
        std::fs::write(r.join("gone/deep/k"), b"4444").unwrap();
        let opts = ScanOptions::default();
        // Read well after every file was written: no mtime is racy.
        let held_at = MTime::new(MTime::now().sec + 3600, 0);
        let held = with_hashes(scan(r, &opts).unwrap());
        // Changes: a file edited, one added, a folder removed, one made with content,
        // a file renamed into another folder; "b" is left alone.
        std::fs::write(r.join("a/f"), b"edited").unwrap();
        std::fs::write(r.join("a/new"), b"n").unwrap();
        std::fs::remove_dir_all(r.join("gone")).unwrap();
        std::fs::create_dir_all(r.join("made/inner")).unwrap();
        std::fs::write(r.join("made/inner/m"), b"mm").unwrap();
        std::fs::rename(r.join("a/y/z/g"), r.join("a/x/g2")).unwrap();
        let named = dirs(&["a", "gone/deep", "made/inner", "a/y/z", "a/x"]);
        let (t, stats) = rescan(r, &opts, held, held_at, &named).unwrap();
        let whole = scan(r, &opts).unwrap();
        assert_eq!(keys(&t), keys(&whole));
        for ((p, e), (_, w)) in t.entries.iter().zip(whole.entries.iter()) {
            assert_eq!(
                (e.kind, e.size, e.mtime, e.ino),
                (w.kind, w.size, w.mtime, w.ino),
                "{p:?}"
            );
        }
        let hash = |p: &str| t.entries.get(Path::new(p)).unwrap().hash;
        assert_eq!(hash("a/f"), None, "an edited file is hashed again");
        assert_eq!(hash("a/new"), None);
        assert_eq!(
            hash("a/x/g2"),
            Some(Digest([2; 32])),
            "a renamed file keeps its hash"
        );
        assert_eq!(
            hash("b/c/h"),
            Some(Digest([3; 32])),
            "what was not read stays"
        );
        assert_eq!(stats.moved, 1);
        assert!(stats.changed);
        // The root and "gone" were read, in place of the folders that went.
        assert!(stats.dirs <= named.len());
    }

    #[test]
    fn a_rescan_that_finds_nothing_new_says_so() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/f"), b"1").unwrap();
        let opts = ScanOptions::default();
        let at = MTime::new(MTime::now().sec + 3600, 0);
        let held = with_hashes(scan(r, &opts).unwrap());
        let (held, stats) = rescan(r, &opts, held, at, &dirs(&["a", "a/b", ""])).unwrap();
        assert!(!stats.changed, "{stats:?}");
        std::fs::write(r.join("a/b/g"), b"2").unwrap();
        let (held, stats) = rescan(r, &opts, held, at, &dirs(&["a/b"])).unwrap();
        assert!(stats.changed);
        std::fs::remove_file(r.join("a/b/g")).unwrap();
        let (_, stats) = rescan(r, &opts, held, at, &dirs(&["a/b"])).unwrap();
        assert!(stats.changed, "a name gone is a change");
    }

    #[test]
    fn the_part_read_is_the_folders_read_and_the_folders_walked() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for p in ["a/kept/deep", "b/c"] {
            std::fs::create_dir_all(r.join(p)).unwrap();
        }
        std::fs::write(r.join("a/f"), b"1").unwrap();
        std::fs::write(r.join("a/kept/deep/g"), b"2").unwrap();
        let opts = ScanOptions::default();
        let at = MTime::new(MTime::now().sec + 3600, 0);
        let held = with_hashes(scan(r, &opts).unwrap());
        std::fs::create_dir_all(r.join("a/new/inner")).unwrap();
        std::fs::write(r.join("a/new/inner/h"), b"3").unwrap();
        let (t, stats) = rescan(r, &opts, held, at, &dirs(&["a"])).unwrap();
        let part = stats.region.part_of(&t);
        // "a" and what is in it; "a/new" whole; not what "a/kept" holds, nor "b".
        assert_eq!(
            keys(&part),
            [
                "a/",
                "a/f",
                "a/kept/",
                "a/new/",
                "a/new/inner/",
                "a/new/inner/h"
            ]
        );
        assert_eq!(part.root, t.root);
    }

    #[test]
    fn a_hash_from_a_racy_reading_is_not_taken_over() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir(r.join("a")).unwrap();
        std::fs::write(r.join("a/f"), b"1").unwrap();
        let opts = ScanOptions::default();
        // Read in the very tick the file was written: it may still change unseen.
        let held = with_hashes(scan(r, &opts).unwrap());
        let held_at = held.entries.get(Path::new("a/f")).unwrap().mtime;
        let (t, _) = rescan(r, &opts, held, held_at, &dirs(&["a"])).unwrap();
        assert_eq!(t.entries.get(Path::new("a/f")).unwrap().hash, None);
    }

    #[test]
    fn a_folder_that_became_a_file_or_an_unreadable_one_is_read_as_it_is() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("p/q")).unwrap();
        std::fs::write(r.join("p/q/f"), b"1").unwrap();
        let opts = ScanOptions::default();
        let held = with_hashes(scan(r, &opts).unwrap());
        std::fs::remove_dir_all(r.join("p/q")).unwrap();
        std::fs::write(r.join("p/q"), b"now a file").unwrap();
        let (t, _) = rescan(r, &opts, held, MTime::new(1, 0), &dirs(&["p/q"])).unwrap();
        assert_eq!(keys(&t), ["p/", "p/q"]);
        assert_eq!(t.entries.get(Path::new("p/q")).unwrap().kind, Kind::File);
    }

    #[test]
    fn a_symlink_put_in_place_of_a_folder_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("p/q")).unwrap();
        let opts = ScanOptions::default();
        let held = scan(r, &opts).unwrap();
        std::fs::remove_dir(r.join("p/q")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("p/q")).unwrap();
        let (t, _) = rescan(r, &opts, held, MTime::new(1, 0), &dirs(&["p/q"])).unwrap();
        assert_eq!(keys(&t), ["p/", "p/q"]);
        assert_eq!(t.entries.get(Path::new("p/q")).unwrap().kind, Kind::Symlink);
    }
}
