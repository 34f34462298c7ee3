//! A replica as a pass leaves it, as the record stage reads it: a tree held whole, or
//! ([`Merged`]) the replica read compact with only the part the pass planned held
//! whole, the two merged in path order as they are read, each file outside the part
//! with the hash its stat cache held (see `crate::pass::narrow`).

use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::scan::cache::Matcher;
use crate::tree::compact::{Compact, CompactTree, Cursor};
use crate::tree::{path_order, Digest, Entry, Kind, MTime, Tree};

/// A replica after a pass, for the stat cache, the directory SHA-256 and the version.
#[derive(Clone, Copy)]
pub enum After<'a> {
    Whole(&'a Tree),
    Merged(&'a Merged<'a>),
}

impl After<'_> {
    /// The root directory's own metadata.
    pub fn root(&self) -> Option<&Entry> {
        match self {
            After::Whole(t) => t.root.as_ref(),
            After::Merged(m) => m.part.root.as_ref(),
        }
    }

    /// The paths whose state is unknown.
    pub fn unknown(&self) -> &std::collections::BTreeSet<PathBuf> {
        match self {
            After::Whole(t) => &t.unknown,
            After::Merged(m) => &m.part.unknown,
        }
    }
}

/// A replica after a pass that planned only a part of it: the replica as read
/// (compact, without hashes), the paths of the part as read (`covered`), the part as
/// the pass left it (whole), and the stat cache the replica was read with, open (it
/// holds the hash of every file outside the part; a new cache may replace its name
/// while this is read). With the part as read (every file hashed), it is the replica
/// before the pass: what a store records first when the pass would replace content
/// no version holds.
pub struct Merged<'a> {
    pub compact: &'a CompactTree,
    pub covered: &'a Compact,
    pub part: &'a Tree,
    pub cache: Option<&'a File>,
    /// What goes before the cache's file when it is read: the head of a cache written
    /// as a pass went (see [`crate::scan::cache::Spill`]), else nothing.
    pub head: &'a [u8],
    /// The replica's root, which the cache names.
    pub root: &'a Path,
    /// Files outside the part the cache held no hash for (none, unless the cache was
    /// changed by something else while the pass ran).
    missed: AtomicUsize,
    /// What [`Merged::sha256_at`] counted on its way: the files a stat cache saved at
    /// that time holds, and all the files.
    counted: std::sync::OnceLock<(MTime, usize, usize)>,
}

impl<'a> Merged<'a> {
    pub fn new(
        compact: &'a CompactTree,
        covered: &'a Compact,
        part: &'a Tree,
        cache: Option<&'a File>,
        root: &'a Path,
    ) -> Merged<'a> {
        Merged {
            compact,
            covered,
            part,
            cache,
            head: &[],
            root,
            missed: AtomicUsize::new(0),
            counted: std::sync::OnceLock::new(),
        }
    }

    /// Every entry in path order: the replica's outside the part (files with their
    /// cached hash), the part's inside it.
    pub fn entries(&self) -> Entries<'_> {
        let matcher = self
            .cache
            .and_then(|f| Matcher::from_reader(self.head.chain(At { file: f, pos: 0 }), self.root));
        Entries {
            outside: self.compact.entries.cursor(),
            covered: self.covered.cursor(),
            next_covered: None,
            started: false,
            part: (Box::new(self.part.entries.iter()) as Part<'_>).peekable(),
            next_outside: None,
            matcher,
            missed: &self.missed,
        }
    }

    /// Files outside the part whose hash the cache did not hold, so far.
    pub fn missed(&self) -> usize {
        self.missed.load(Ordering::Relaxed)
    }

    /// The directory SHA-256 (see [`crate::hash::tree_sha256`]).
    pub fn sha256(&self) -> Option<Digest> {
        self.sha256_at(MTime::default())
    }

    /// [`Merged::sha256`], counting on the way what a stat cache saved at `scanned_at`
    /// holds (see [`Merged::counted`]), so that saving it reads the entries once less.
    pub fn sha256_at(&self, scanned_at: MTime) -> Option<Digest> {
        let unknown = self.part.unknown.iter().chain(&self.compact.unknown);
        if crate::hash::unreadable(unknown, &self.compact.specials) {
            return None;
        }
        let counts = std::cell::Cell::new((0, 0));
        let sha = crate::hash::dir_sha256_owned(|| {
            counts.set((0, 0));
            self.entries()
                .filter(|(_, e)| e.kind == Kind::File)
                .inspect(|(_, e)| {
                    let (cached, files) = counts.get();
                    let kept = usize::from(e.hash.is_some() && !e.mtime.is_racy_at(scanned_at));
                    counts.set((cached + kept, files + 1));
                })
                .map(|(p, e)| (p.into_os_string().into_vec(), e.hash))
        });
        let (cached, files) = counts.get();
        let _ = self.counted.set((scanned_at, cached, files));
        sha
    }

    /// The files a stat cache saved at `scanned_at` holds, and all the files, if
    /// [`Merged::sha256_at`] counted them at that time.
    pub fn counted(&self, scanned_at: MTime) -> Option<(usize, usize)> {
        let &(at, cached, files) = self.counted.get()?;
        (at == scanned_at).then_some((cached, files))
    }
}

/// A replica as a pass planned in part read it, but for the part: both trees as read
/// (compact, without hashes), the paths of the part, and the stat cache the replica
/// was read with (see [`Merged`]). With the part as read, every file hashed, it gives
/// the replica before the pass ([`Rest::with`]).
#[derive(Clone, Copy)]
pub struct Rest<'a> {
    pub compact: &'a CompactTree,
    pub covered: &'a Compact,
    pub cache: &'a File,
    /// See [`Merged::head`].
    pub head: &'a [u8],
    pub root: &'a Path,
}

impl<'a> Rest<'a> {
    /// The replica: this, with `part` (whole) in its place.
    pub fn with(self, part: &'a Tree) -> Merged<'a> {
        Merged {
            head: self.head,
            ..Merged::new(
                self.compact,
                self.covered,
                part,
                Some(self.cache),
                self.root,
            )
        }
    }
}

/// A replica as a pass read it: a tree held whole, or the part a pass planned (`held`)
/// and the rest.
#[derive(Clone, Copy)]
pub struct Before<'a> {
    pub held: &'a Tree,
    pub rest: Option<Rest<'a>>,
}

impl<'a> Before<'a> {
    pub fn whole(tree: &'a Tree) -> Before<'a> {
        Before {
            held: tree,
            rest: None,
        }
    }
}

/// A reader of an open file from its start that does not move the file's own offset,
/// so that each of several readers reads it whole.
struct At<'f> {
    file: &'f File,
    pos: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

type Part<'m> = Box<dyn Iterator<Item = (&'m Path, &'m Entry)> + 'm>;

/// The entries of a [`Merged`], in path order.
pub struct Entries<'m> {
    outside: Cursor<'m>,
    covered: Cursor<'m>,
    /// The next path of the part as read (`None` once they are all passed).
    next_covered: Option<PathBuf>,
    started: bool,
    part: std::iter::Peekable<Part<'m>>,
    /// The next entry of the replica outside the part, not yet given.
    next_outside: Option<(PathBuf, Entry)>,
    matcher: Option<Matcher<std::io::Chain<&'m [u8], At<'m>>>>,
    missed: &'m AtomicUsize,
}

/// Whether `p` (given in path order) was in the part as read: `covered` walked
/// alongside, `next` its next path (read first when `started` is false).
fn is_covered(
    covered: &mut Cursor<'_>,
    next: &mut Option<PathBuf>,
    started: &mut bool,
    p: &Path,
) -> bool {
    if !*started {
        *started = true;
        *next = covered.next_entry().map(|(c, _)| c.to_path_buf());
    }
    while let Some(c) = next {
        match path_order(c, p) {
            std::cmp::Ordering::Less => *next = covered.next_entry().map(|(c, _)| c.to_path_buf()),
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Greater => return false,
        }
    }
    false
}

impl Entries<'_> {
    /// The next entry of the replica outside the part, with its cached hash.
    fn fill_outside(&mut self) {
        if self.next_outside.is_some() {
            return;
        }
        while let Some((p, mut e)) = self.outside.next_entry() {
            let (covered, next, started) =
                (&mut self.covered, &mut self.next_covered, &mut self.started);
            if is_covered(covered, next, started, p) {
                continue;
            }
            if e.kind == Kind::File {
                e.hash = self.matcher.as_mut().and_then(|m| m.hash_of(p, &e));
                if e.hash.is_none() {
                    self.missed.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.next_outside = Some((p.to_path_buf(), e));
            return;
        }
    }
}

impl<'m> Iterator for Entries<'m> {
    type Item = (PathBuf, Entry);

    fn next(&mut self) -> Option<(PathBuf, Entry)> {
        self.fill_outside();
        let take_part = match (&self.next_outside, self.part.peek()) {
            (None, None) => return None,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            // The part holds its own paths: of one path in both, the part's is the
            // replica after the pass.
            (Some((o, _)), Some((p, _))) => path_order(p, o).is_le(),
        };
        if take_part {
            let (p, e) = self.part.next().expect("BUG: peeked");
            if self
                .next_outside
                .as_ref()
                .is_some_and(|(o, _)| o.as_path() == p)
            {
                self.next_outside = None;
            }
            Some((p.to_path_buf(), e.clone()))
        } else {
            self.next_outside.take()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::cache::StatCache;
    use crate::tree::{Entries, MTime};

    fn digest(p: &str, n: u64) -> Digest {
        crate::hash::hash_reader(&mut format!("{p} {n}").as_bytes())
            .unwrap()
            .0
    }

    /// A file at `p` whose size, mtime, inode and content `n` gives.
    fn file(p: &str, n: u64) -> (PathBuf, Entry) {
        let mut e = Entry::file(n, 0o644, MTime::new(1000 + n as i64, 0), Some(digest(p, n)));
        e.ino = 10 + n;
        (p.into(), e)
    }

    fn dir(p: &str, t: i64) -> (PathBuf, Entry) {
        (p.into(), Entry::dir(0o755, MTime::new(t, 0)))
    }

    fn tree(entries: Vec<(PathBuf, Entry)>, t: i64) -> Tree {
        Tree {
            root: Some(Entry::dir(0o700, MTime::new(t, 0))),
            entries: Entries::from_sorted(entries),
            ..Tree::default()
        }
    }

    fn without_hashes(t: &Tree) -> CompactTree {
        let mut v: Vec<(PathBuf, Entry)> = t
            .entries
            .iter()
            .map(|(p, e)| (p.to_path_buf(), e.clone()))
            .collect();
        for (_, e) in &mut v {
            e.hash = None;
        }
        CompactTree::new(tree(v, t.root.as_ref().unwrap().mtime.sec))
    }

    #[test]
    fn a_replica_merged_from_the_part_a_pass_planned_is_the_whole_tree_after() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let cache = root.join("cache");
        let before = tree(
            vec![
                dir("a", 1),
                file("a/1", 1),
                file("a/2", 2),
                dir("b", 1),
                file("b/1", 3),
                file("b/2", 4),
                file("c", 5),
                dir("d", 1),
                file("d/1", 6),
            ],
            1,
        );
        let sha = crate::hash::tree_sha256(&before);
        StatCache::save_tree(&cache, root, &before, MTime::now(), sha).unwrap();
        // The part planned: b and what it holds, with the folder a (as a folder above
        // something, say); the pass removed b/1, changed b/2, made b/3 and set a's
        // mtime and the root's.
        let mut covered = Compact::new();
        for (p, e) in before.entries.iter() {
            if ["a", "b", "b/1", "b/2"].contains(&p.to_str().unwrap()) {
                covered.push(p, e);
            }
        }
        let part = tree(
            vec![dir("a", 7), dir("b", 1), file("b/2", 8), file("b/3", 9)],
            7,
        );
        let after = tree(
            vec![
                dir("a", 7),
                file("a/1", 1),
                file("a/2", 2),
                dir("b", 1),
                file("b/2", 8),
                file("b/3", 9),
                file("c", 5),
                dir("d", 1),
                file("d/1", 6),
            ],
            7,
        );
        let (compact, opened) = (without_hashes(&before), File::open(&cache).unwrap());
        let m = Merged::new(&compact, &covered, &part, Some(&opened), root);
        let want: Vec<(PathBuf, Entry)> = after
            .entries
            .iter()
            .map(|(p, e)| (p.to_path_buf(), e.clone()))
            .collect();
        assert_eq!(m.entries().collect::<Vec<_>>(), want);
        assert_eq!(m.missed(), 0);
        assert_eq!(After::Merged(&m).root(), after.root.as_ref());
        assert_eq!(m.sha256(), crate::hash::tree_sha256(&after));
        assert!(m.sha256().is_some());
        // The stat cache saved from it is the one saved from the tree after, even where
        // it replaces the cache it is read with.
        let at = MTime::now();
        let whole = root.join("whole");
        StatCache::save_tree(&whole, root, &after, at, m.sha256()).unwrap();
        StatCache::save_after(&cache, root, After::Merged(&m), at, m.sha256()).unwrap();
        assert_eq!(
            std::fs::read(&cache).unwrap(),
            std::fs::read(&whole).unwrap()
        );
        assert_eq!(m.entries().collect::<Vec<_>>(), want, "read again after");
        assert_eq!(m.missed(), 0);
    }
}
