//! The stat cache: for each replica root, the SHA-256 of every file whose size, mtime and
//! inode are unchanged since it was last hashed, so a pass over unchanged files hashes
//! nothing. A missing or unreadable cache only costs re-hashing; it is never trusted
//! over the disk, and a file modified in the same timestamp tick as its hashing ("racy")
//! is not cached.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::fs;
use crate::scan::after::After;
use crate::tree::encoding::SeqReader;
use crate::tree::{path_order, Digest, Entry, Kind, MTime, Tree};

/// A stat cache for one root, as the bytes of its file (in tests; a pass reads the file
/// record by record, see [`StatCache::fill_from_file`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatCache {
    bytes: Vec<u8>,
}

/// The cache file: compact binary (postcard), because it is read and written on every
/// pass and holds an entry per file (JSON with hex digests took most of an unchanged
/// pass over 50,000 files). It is a header `(format, root, count)` then `count`
/// records, in the tree's path order, so filling a scanned tree is one merge over both,
/// with no per-path allocation, and records are decoded one at a time as the merge
/// reaches them, from a block of the file. The header's digest is the directory SHA-256
/// of the tree the cache was saved from, when the cache holds every file of that tree
/// (see [`Filled::sha`]).
type Header<'a> = (u32, &'a [u8], Option<[u8; 32]>, usize);

/// `(path, size, mtime_sec, mtime_nsec, inode, sha256)`
type Record<'a> = (&'a [u8], u64, i64, u32, u64, [u8; 32]);

const FORMAT: u32 = 4;

/// One record, copied out of the reader's buffer into buffers of its own (reused from
/// record to record).
#[derive(Default)]
struct Rec {
    path: Vec<u8>,
    size: u64,
    mtime: MTime,
    ino: u64,
    hash: [u8; 32],
}

/// The records of a cache, decoded as they are read.
struct Records<R> {
    seq: SeqReader<R>,
    left: usize,
    /// A record did not decode: the bytes are damaged from there on.
    broken: bool,
}

impl<R: Read> Records<R> {
    /// Reads the next record into `into`; false after the last one, or at damage.
    fn read(&mut self, into: &mut Rec) -> bool {
        if self.left == 0 || self.broken {
            return false;
        }
        let read = self.seq.take_with(|b| {
            let ((path, size, sec, nsec, ino, hash), rest) =
                postcard::take_from_bytes::<Record>(b)?;
            into.path.clear();
            into.path.extend_from_slice(path);
            (into.size, into.mtime, into.ino, into.hash) = (size, MTime::new(sec, nsec), ino, hash);
            Ok(((), rest.len()))
        });
        self.left -= 1;
        self.broken = read.is_err();
        !self.broken
    }

    /// Every record was read, and nothing follows the last.
    fn whole(&mut self) -> bool {
        !self.broken && self.left == 0 && self.seq.at_end().unwrap_or(false)
    }
}

/// The records of the cache `src`, if it is a cache of `root` in this format, with the
/// directory SHA-256 its header holds. Each record is only ever trusted against the
/// stat it names, so a damaged cache costs the re-hashing of what follows the damage
/// (the file is written whole, atomically, so damage is rare); only a cache read to its
/// last byte proves a directory SHA-256 (see [`fill_from`]).
fn records<R: Read>(src: R, root: &Path) -> Option<(Option<Digest>, Records<R>)> {
    let mut seq = SeqReader::new(src);
    let header = seq.take_with(|b| {
        let ((format, r, sha, count), rest) = postcard::take_from_bytes::<Header>(b)?;
        let ours = format == FORMAT && r == root.as_os_str().as_bytes();
        Ok((ours.then_some((sha.map(Digest), count)), rest.len()))
    });
    match header {
        Ok(Some((sha, left))) => Some((
            sha,
            Records {
                seq,
                left,
                broken: false,
            },
        )),
        _ => {
            log::debug!(
                "stat cache of {} is damaged or not ours; re-hashing",
                root.display()
            );
            None
        }
    }
}

/// A cache's records met in path order with the files of a tree walked in path order:
/// gives each file the hash its record holds when the size, mtime and inode match, and
/// tells at the end whether the cache proves the tree's directory SHA-256.
pub struct Matcher<R> {
    sha: Option<Digest>,
    records: Records<R>,
    rec: Rec,
    have: bool,
    /// Files whose hash did not come from a record (or was known before).
    others: usize,
    /// Records of paths the tree does not hold.
    skipped: usize,
    /// The records of paths that are gone, by inode (see [`fill_from`]); `None`: not kept.
    gone: Option<Gone>,
}

/// Records of paths that are gone, by inode: size, mtime and hash.
type Gone = HashMap<u64, (u64, MTime, [u8; 32])>;

impl Matcher<std::fs::File> {
    /// The records of the cache file `file` of `root`; `None` if there is none of this
    /// root in this format (then nothing is cached).
    pub fn open(file: &Path, root: &Path) -> Option<Self> {
        Matcher::new(std::fs::File::open(file).ok()?, root, false)
    }
}

impl<R: Read> Matcher<R> {
    /// The records of the cache read from `src`, if it is a cache of `root` in this
    /// format.
    pub fn from_reader(src: R, root: &Path) -> Option<Self> {
        Matcher::new(src, root, false)
    }

    /// The records of the cache read from `src`, with those of paths that are
    /// gone held by inode, for [`Matcher::fill_moved`].
    pub fn keeping_gone(src: R, root: &Path) -> Option<Self> {
        Matcher::new(src, root, true)
    }

    /// After the last file: gives each file of `tree` without a hash the hash of a path
    /// now gone with its inode, size and mtime (renamed or moved since the cache was
    /// saved; see [`fill_from`]). Returns how many it filled.
    pub fn fill_moved(&mut self, tree: &mut Tree) -> usize {
        self.drain();
        let Some(gone) = &self.gone else { return 0 };
        let mut filled = 0;
        for (_, e) in tree.entries.iter_mut() {
            if e.kind != Kind::File || e.hash.is_some() {
                continue;
            }
            if let Some(&(size, mtime, hash)) = gone.get(&e.ino) {
                if size == e.size && mtime == e.mtime {
                    e.hash = Some(Digest(hash));
                    filled += 1;
                }
            }
        }
        filled
    }

    fn new(src: R, root: &Path, keep_gone: bool) -> Option<Self> {
        let (sha, mut records) = records(src, root)?;
        let mut rec = Rec::default();
        let have = records.read(&mut rec);
        Some(Matcher {
            sha,
            records,
            rec,
            have,
            others: 0,
            skipped: 0,
            gone: keep_gone.then(HashMap::new),
        })
    }

    /// The hash cached for the file `e` at `rel`, if its record's size, mtime and inode
    /// are its own. Files are given in path order, each once.
    pub fn hash_of(&mut self, rel: &Path, e: &Entry) -> Option<Digest> {
        // Records follow the tree's order; skip those of paths that are gone.
        while self.have && path_order(Path::new(OsStr::from_bytes(&self.rec.path)), rel).is_lt() {
            if let Some(gone) = &mut self.gone {
                let r = &self.rec;
                gone.insert(r.ino, (r.size, r.mtime, r.hash));
            }
            self.have = self.records.read(&mut self.rec);
            self.skipped += 1;
        }
        let matched = self.have && self.rec.path == rel.as_os_str().as_bytes();
        let r = &self.rec;
        let hash = (matched && r.size == e.size && r.mtime == e.mtime && r.ino == e.ino)
            .then_some(Digest(r.hash));
        if matched {
            self.have = self.records.read(&mut self.rec);
        }
        self.others += usize::from(hash.is_none());
        hash
    }

    /// After the last file: the records left are of paths that are gone. Gives the
    /// directory SHA-256 the cache proves for a tree with nothing unknown (`unknown`:
    /// whether it has something unknown): every file of the tree took its hash from
    /// the cache, every record was used, and the cache was whole, so the tree's files
    /// and hashes are the very ones the cache was saved from.
    pub fn finish(mut self, unknown: bool) -> Option<Digest> {
        self.drain();
        let proves = self.others == 0 && self.skipped == 0 && self.records.whole() && !unknown;
        self.sha.filter(|_| proves)
    }

    fn drain(&mut self) {
        while self.have {
            if let Some(gone) = &mut self.gone {
                let r = &self.rec;
                gone.insert(r.ino, (r.size, r.mtime, r.hash));
            }
            self.skipped += 1;
            self.have = self.records.read(&mut self.rec);
        }
    }
}

/// Fills in the hash of every file of `tree` whose size, mtime and inode match its
/// record in the cache `src`.
fn fill_from(src: impl Read, root: &Path, tree: &mut Tree) -> Filled {
    let mut out = Filled::default();
    // The records of paths that are gone are held by inode: a file renamed or moved
    // since keeps its inode, size and mtime (`mv` keeps them), so its hash is still
    // known. Only what went away is held.
    let Some(mut m) = Matcher::new(src, root, true) else {
        return out;
    };
    // Files of new paths, without a hash: looked up among the gone at the end.
    let mut unmatched = 0usize;
    for (rel, e) in tree.entries.iter_mut() {
        if e.kind != Kind::File {
            continue;
        }
        match m.hash_of(rel, e) {
            Some(h) if e.hash.is_none() => {
                e.hash = Some(h);
                out.filled += 1;
            }
            // Known before: not the cache's.
            Some(_) => m.others += 1,
            None => unmatched += usize::from(e.hash.is_none()),
        }
    }
    if unmatched > 0 {
        let moved = m.fill_moved(tree);
        out.filled += moved;
        out.moved += moved;
    }
    out.sha = m.finish(!tree.unknown.is_empty());
    out
}

impl StatCache {
    /// How many files the cache file `file` of `root` holds, if it holds a directory
    /// SHA-256 (it was saved from a wholly readable tree with every file hashed): only
    /// such a cache can prove that a replica is as it was. Reads only the file's head.
    pub fn proving_count(file: &Path, root: &Path) -> Option<usize> {
        let (sha, records) = records(std::fs::File::open(file).ok()?, root)?;
        sha.map(|_| records.left)
    }

    /// Loads the cache at `file`; empty if it is missing.
    #[cfg(test)]
    pub fn load(file: &Path) -> StatCache {
        StatCache {
            bytes: std::fs::read(file).unwrap_or_default(),
        }
    }

    /// Fills in the hash of every file of `tree` whose size, mtime and inode match its
    /// record in the cache file `file`, read a block at a time. A missing cache fills
    /// nothing; a damaged one or one for another root is found out here and only costs
    /// re-hashing.
    pub fn fill_from_file(file: &Path, root: &Path, tree: &mut Tree) -> Filled {
        match std::fs::File::open(file) {
            Ok(f) => fill_from(f, root, tree),
            Err(_) => Filled::default(),
        }
    }

    /// Fills in the hash of every file of `tree` whose size, mtime and inode match
    /// its record.
    #[cfg(test)]
    pub fn fill(&self, root: &Path, tree: &mut Tree) -> Filled {
        fill_from(&self.bytes[..], root, tree)
    }

    /// A cache of every hashed file of `tree` that was not modified within the racy
    /// window before `scanned_at` (when the pass began; see [`now`]).
    #[cfg(test)]
    pub fn from_tree(root: &Path, tree: &Tree, scanned_at: MTime) -> StatCache {
        let mut bytes = Vec::new();
        let sha = crate::hash::tree_sha256(tree);
        let counts = count(tree.entries.iter(), scanned_at);
        encode(
            root,
            || tree.entries.iter(),
            &tree.unknown,
            counts,
            scanned_at,
            sha,
            &mut bytes,
        )
        .expect("BUG: writing to memory cannot fail");
        StatCache { bytes }
    }

    /// How many files the cache holds.
    #[cfg(test)]
    pub fn len(&self, root: &Path) -> usize {
        let Some((_, mut records)) = records(&self.bytes[..], root) else {
            return 0;
        };
        let mut rec = Rec::default();
        std::iter::from_fn(|| records.read(&mut rec).then_some(())).count()
    }

    /// Writes the cache atomically.
    #[cfg(test)]
    pub fn save(&self, file: &Path) -> Result<(), Error> {
        fs::write_atomic(file, &self.bytes)
    }

    /// Saves the cache of `tree` (as [`StatCache::from_tree`] builds it) at `file`,
    /// unless the file already holds those very bytes. The cache is encoded as it is
    /// compared or written, a block at a time, never held whole. Returns whether the
    /// file was written.
    pub fn save_tree(
        file: &Path,
        root: &Path,
        tree: &Tree,
        scanned_at: MTime,
        sha: Option<Digest>,
    ) -> Result<bool, Error> {
        StatCache::save_after(file, root, After::Whole(tree), scanned_at, sha)
    }

    /// [`StatCache::save_tree`] of a replica after a pass, held whole or not.
    pub fn save_after(
        file: &Path,
        root: &Path,
        after: After<'_>,
        scanned_at: MTime,
        sha: Option<Digest>,
    ) -> Result<bool, Error> {
        fs::write_atomic_unless_same(file, |mut w| match after {
            After::Whole(t) => {
                let entries = || t.entries.iter();
                let counts = count(entries(), scanned_at);
                encode(root, entries, &t.unknown, counts, scanned_at, sha, &mut w)
            }
            // Counted already where its SHA-256 was worked out: one reading less.
            After::Merged(m) => {
                let entries = || m.entries();
                let counts = m
                    .counted(scanned_at)
                    .unwrap_or_else(|| count(entries(), scanned_at));
                encode(
                    root,
                    entries,
                    after.unknown(),
                    counts,
                    scanned_at,
                    sha,
                    &mut w,
                )
            }
        })
    }
}

/// A stat cache written as a pass goes, to an unnamed file, its head known only at the
/// end: what a pass that fills a replica a stretch of paths at a time knows of the
/// files it read and wrote, so that it holds none of their hashes (see
/// `crate::pass::turns`). Read back with [`Spill::finish`]'s head before the file.
pub struct Spill {
    out: std::io::BufWriter<std::fs::File>,
    buf: Vec<u8>,
    count: usize,
}

impl Spill {
    /// A spill in an unnamed file under `dir` (gone when it is closed).
    pub fn new(dir: &Path) -> Result<Spill, Error> {
        let file = fs::scratch_file(dir)?;
        Ok(Spill {
            out: std::io::BufWriter::with_capacity(64 * 1024, file),
            buf: Vec::new(),
            count: 0,
        })
    }

    /// Adds the file `e` at `p` if its hash is known; paths come in path order.
    pub fn push(&mut self, p: &Path, e: &Entry) -> io::Result<()> {
        let Some(hash) = e.hash.filter(|_| e.kind == Kind::File) else {
            return Ok(());
        };
        self.buf.clear();
        let r = Out(p, e.size, e.mtime, e.ino, hash.0);
        self.buf =
            postcard::to_extend(&r, std::mem::take(&mut self.buf)).map_err(io::Error::other)?;
        self.out.write_all(&self.buf)?;
        self.count += 1;
        Ok(())
    }

    /// The file, and the head of a cache of `root` (without a directory SHA-256) that
    /// goes before it: the two read as one are a stat cache ([`Matcher::from_reader`]).
    pub fn finish(self, root: &Path) -> io::Result<(std::fs::File, Vec<u8>)> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        let header: Header = (FORMAT, root.as_os_str().as_bytes(), None, self.count);
        let head = postcard::to_stdvec(&header).map_err(io::Error::other)?;
        Ok((file, head))
    }
}

/// A cache record to be written, its path given owned or borrowed.
struct Out<P>(P, u64, MTime, u64, [u8; 32]);

impl<P: AsRef<Path>> serde::Serialize for Out<P> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r: Record = (
            self.0.as_ref().as_os_str().as_bytes(),
            self.1,
            self.2.sec,
            self.2.nsec,
            self.3,
            self.4,
        );
        r.serialize(s)
    }
}

/// The files of `entries` a cache saved at `scanned_at` holds (every hashed file not
/// modified within the racy window before it), and all the files.
fn count<P, E: std::borrow::Borrow<Entry>>(
    entries: impl Iterator<Item = (P, E)>,
    scanned_at: MTime,
) -> (usize, usize) {
    let (mut cached, mut files) = (0, 0);
    for (_, e) in entries {
        let e = e.borrow();
        if e.kind == Kind::File {
            files += 1;
            cached += usize::from(!e.mtime.is_racy_at(scanned_at) && e.hash.is_some());
        }
    }
    (cached, files)
}

/// The cache of the entries `entries` gives (in path order, afresh each call; the
/// tree's paths whose state is unknown are `unknown`; `(count, files)`: what [`count`]
/// gives of them) in the layout [`StatCache::records`] reads: every hashed file not
/// modified within the racy window before `scanned_at`, and `sha` (the tree's directory
/// SHA-256) if those are all the files of a wholly readable tree.
fn encode<P, E, I>(
    root: &Path,
    entries: impl Fn() -> I,
    unknown: &std::collections::BTreeSet<PathBuf>,
    (count, files): (usize, usize),
    scanned_at: MTime,
    sha: Option<Digest>,
    out: &mut impl Write,
) -> io::Result<()>
where
    P: AsRef<Path>,
    E: std::borrow::Borrow<Entry>,
    I: Iterator<Item = (P, E)>,
{
    // A file modified that close to the scan may still change unseen: not cached.
    let settled = |m: MTime| !m.is_racy_at(scanned_at);
    let records = || {
        entries()
            .filter(move |(_, e)| e.borrow().kind == Kind::File && settled(e.borrow().mtime))
            .filter_map(|(p, e)| {
                let e = e.borrow();
                Some(Out(p, e.size, e.mtime, e.ino, e.hash?.0))
            })
    };
    let whole = unknown.is_empty() && count == files;
    let sha = sha.filter(|_| whole).map(|d| d.0);
    let header: Header = (FORMAT, root.as_os_str().as_bytes(), sha, count);
    crate::tree::encoding::write_seq(out, &header, records())
}

/// What a cache record keeps of a file's stat: a hash goes with these.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub size: u64,
    pub mtime: MTime,
    pub ino: u64,
}

impl From<&fs::Stat> for Stamp {
    fn from(st: &fs::Stat) -> Stamp {
        Stamp {
            size: st.size,
            mtime: st.mtime,
            ino: st.ino,
        }
    }
}

/// Records that the file `e` was read as `st` and hashed to `digest`. The entry takes
/// the stat the hash belongs to, so the cache never pairs a hash with a newer stat.
pub fn note_hashed(e: &mut Entry, digest: Digest, st: Stamp) {
    e.size = st.size;
    e.mtime = st.mtime;
    e.ino = st.ino;
    e.hash = Some(digest);
}

/// What [`StatCache::fill`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// Files whose hash was taken from the cache.
    pub filled: usize,
    /// Of those, files at a new path that took the hash of a path now gone with the
    /// same inode, size and mtime (renamed or moved since the cache was saved).
    pub moved: usize,
    /// The tree's directory SHA-256, when the cache proves it: every file of the tree
    /// took its hash from the cache, the cache holds no other file, and the tree has no
    /// unreadable part. Valid only while the tree is not changed.
    pub sha: Option<Digest>,
}

/// What a round of hashing did.
#[derive(Debug, Default)]
pub struct Hashed {
    pub files: u64,
    pub bytes: u64,
    pub errors: Vec<Error>,
}

/// Hashes every file of `tree` whose hash is still unknown (reading from `root`), in
/// parallel; a file that fails becomes unknown and its error is returned.
pub fn hash_missing(root: &Path, tree: &mut Tree) -> Hashed {
    hash_missing_where(root, tree, |_, _| true)
}

/// Files hashed at once by [`hash_missing_where`]: enough to keep every core busy, few
/// enough that their list and their results stay small (a pass may hash a million files:
/// listed whole, with their results, they took about 185 bytes each).
const HASH_BATCH: usize = 4096;

/// [`hash_missing`] for the files `wanted` picks, a batch at a time in path order:
/// `wanted` is asked once about each file whose hash is unknown, in path order (so it
/// may walk a list of its own alongside).
pub fn hash_missing_where(
    root: &Path,
    tree: &mut Tree,
    mut wanted: impl FnMut(&Path, &Entry) -> bool,
) -> Hashed {
    let Tree {
        entries, unknown, ..
    } = tree;
    let mut out = Hashed::default();
    let mut failed: Vec<PathBuf> = Vec::new();
    {
        let mut todo = entries.iter_mut().filter(|(p, e)| {
            e.kind == Kind::File && e.hash.is_none() && !unknown.contains(*p) && wanted(p, e)
        });
        let mut batch: Vec<(&Path, &mut Entry)> = Vec::with_capacity(HASH_BATCH);
        loop {
            batch.extend(todo.by_ref().take(HASH_BATCH));
            if batch.is_empty() {
                break;
            }
            let rels: Vec<&Path> = batch.iter().map(|(p, _)| *p).collect();
            let results = crate::hash::hash_many(root, &rels);
            drop(rels);
            for ((rel, e), r) in batch.drain(..).zip(results) {
                match r {
                    Ok((digest, st)) => {
                        out.files += 1;
                        out.bytes += st.size;
                        note_hashed(e, digest, Stamp::from(&st));
                    }
                    Err(err) => {
                        out.errors.push(err);
                        failed.push(rel.to_path_buf());
                    }
                }
            }
        }
    }
    unknown.extend(failed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tree::Entry;

    fn file(ino: u64, sec: i64, hash: Option<u8>) -> Entry {
        let mut e = Entry::file(3, 0o644, MTime::new(sec, 1), hash.map(|h| Digest([h; 32])));
        e.ino = ino;
        e
    }

    #[test]
    fn cache_round_trips_and_rejects_changed_stat() {
        let d = tempfile::tempdir().unwrap();
        let root = Path::new("/r");
        let mut tree = Tree::default();
        tree.entries.insert("a".into(), file(42, 1000, Some(7)));
        tree.entries.insert("a/b".into(), file(43, 1000, Some(8)));
        tree.entries.insert("a-b".into(), file(44, 1000, Some(9)));
        tree.entries.insert("z".into(), file(45, 1000, Some(6)));
        let racy = Entry::file(3, 0o644, MTime::now(), Some(Digest([8; 32])));
        tree.entries.insert(PathBuf::from("racy"), racy);
        let c = StatCache::from_tree(root, &tree, MTime::now());
        assert_eq!(c.len(root), 4, "a file modified just now is not cached");
        let file_path = d.path().join("c.bin");
        c.save(&file_path).unwrap();
        let back = StatCache::load(&file_path);
        assert_eq!(back, c);

        // A later scan: "a" touched, "a/b" gone, "a-a" new, "z" unchanged.
        let mut later = Tree::default();
        later.entries.insert("a".into(), file(42, 1001, None));
        later.entries.insert("a-a".into(), file(50, 1000, None));
        later.entries.insert("a-b".into(), file(44, 1000, None));
        later.entries.insert("racy".into(), file(46, 1000, None));
        later.entries.insert("z".into(), file(45, 1000, None));
        assert_eq!(back.fill(root, &mut later).filled, 2);
        let hash = |p: &str| later.entries[Path::new(p)].hash;
        assert_eq!(hash("a"), None, "a changed mtime is not trusted");
        assert_eq!(hash("a-a"), None);
        assert_eq!(hash("a-b"), Some(Digest([9; 32])));
        assert_eq!(hash("racy"), None);
        assert_eq!(hash("z"), Some(Digest([6; 32])));

        let mut other = Tree::default();
        other.entries.insert("z".into(), file(45, 1000, None));
        assert_eq!(back.fill(Path::new("/other"), &mut other).filled, 0);
        let damaged = StatCache {
            bytes: back.bytes[..back.bytes.len() / 2].to_vec(),
        };
        assert_eq!(damaged.fill(root, &mut other).filled, 0);
    }

    #[test]
    fn a_file_moved_since_the_cache_takes_its_hash_by_inode() {
        let root = Path::new("/r");
        let c = StatCache::from_tree(root, &three_files(), MTime::now());
        // "d/b" renamed to "e/b" (same inode, size, mtime); "d/c" gone and a new file
        // with its inode number but another mtime made at "f"; "a" unchanged.
        let mut later = Tree::default();
        later.entries.insert("a".into(), file(1, 1000, None));
        later.entries.insert("e/b".into(), file(2, 1000, None));
        later.entries.insert("f".into(), file(3, 1001, None));
        let filled = c.fill(root, &mut later);
        assert_eq!((filled.filled, filled.moved), (2, 1));
        let hash = |p: &str| later.entries[Path::new(p)].hash;
        assert_eq!(hash("e/b"), Some(Digest([2; 32])));
        assert_eq!(hash("f"), None, "an inode number reused with another stat");
        assert_eq!(filled.sha, None, "a moved tree is not the tree saved");
    }

    /// A tree of three hashed files and a directory.
    fn three_files() -> Tree {
        let mut t = Tree::default();
        t.entries.insert("a".into(), file(1, 1000, Some(1)));
        t.entries
            .insert("d".into(), Entry::dir(0o755, MTime::new(1000, 0)));
        t.entries.insert("d/b".into(), file(2, 1000, Some(2)));
        t.entries.insert("d/c".into(), file(3, 1000, Some(3)));
        t
    }

    /// The same tree as scanned again: no hashes yet.
    fn rescanned(t: &Tree) -> Tree {
        let mut later = Tree::default();
        for (p, e) in t.entries.iter() {
            let mut e = e.clone();
            e.hash = None;
            later.entries.insert(p.to_path_buf(), e);
        }
        later
    }

    #[test]
    fn saved_cache_bytes_are_not_rewritten_and_a_difference_is() {
        let d = tempfile::tempdir().unwrap();
        let (root, file_path) = (Path::new("/r"), d.path().join("c.bin"));
        let t = three_files();
        let sha = crate::hash::tree_sha256(&t);
        assert!(StatCache::save_tree(&file_path, root, &t, MTime::now(), sha).unwrap());
        assert_eq!(
            StatCache::load(&file_path),
            StatCache::from_tree(root, &t, MTime::now())
        );
        assert!(!StatCache::save_tree(&file_path, root, &t, MTime::now(), sha).unwrap());
        let mut changed = t;
        changed.entries.get_mut(Path::new("d/c")).unwrap().hash = Some(Digest([9; 32]));
        let sha = crate::hash::tree_sha256(&changed);
        assert!(StatCache::save_tree(&file_path, root, &changed, MTime::now(), sha).unwrap());
        let mut back = rescanned(&changed);
        assert_eq!(StatCache::load(&file_path).fill(root, &mut back).sha, sha);
    }

    #[test]
    fn the_directory_sha_is_proven_only_for_the_very_tree_saved() {
        let root = Path::new("/r");
        let t = three_files();
        let sha = crate::hash::tree_sha256(&t);
        assert!(sha.is_some());
        let c = StatCache::from_tree(root, &t, MTime::now());
        let proven = |tree: &mut Tree| c.fill(root, tree).sha;

        assert_eq!(proven(&mut rescanned(&t)), sha, "the same files and stats");
        let mut added = rescanned(&t);
        added.entries.insert("d/new".into(), file(4, 1000, None));
        assert_eq!(proven(&mut added), None, "a file the cache does not hold");
        let mut gone = rescanned(&t);
        gone.entries.remove(Path::new("d/b"));
        assert_eq!(proven(&mut gone), None, "a file the cache holds is gone");
        let mut last_gone = rescanned(&t);
        last_gone.entries.remove(Path::new("d/c"));
        assert_eq!(proven(&mut last_gone), None, "the last file is gone");
        let mut touched = rescanned(&t);
        touched.entries.get_mut(Path::new("a")).unwrap().mtime = MTime::new(1001, 1);
        assert_eq!(proven(&mut touched), None, "a file's stat changed");
        let mut hidden = rescanned(&t);
        hidden.unknown.insert("d".into());
        assert_eq!(proven(&mut hidden), None, "part of the tree is unreadable");
        let mut known = rescanned(&t);
        known.entries.get_mut(Path::new("a")).unwrap().hash = Some(Digest([1; 32]));
        assert_eq!(proven(&mut known), None, "a hash that came from elsewhere");
        let mut retyped = rescanned(&t);
        retyped
            .entries
            .insert("d/b".into(), Entry::dir(0o755, MTime::new(1000, 0)));
        assert_eq!(proven(&mut retyped), None, "a file became a directory");

        // A damaged cache: what it holds before the damage is still used (each record
        // is checked against its file's stat), but it proves nothing.
        let cut = StatCache {
            bytes: c.bytes[..c.bytes.len() - 10].to_vec(),
        };
        let mut again = rescanned(&t);
        let filled = cut.fill(root, &mut again);
        assert_eq!((filled.filled, filled.sha), (2, None), "cut short");
        let mut padded = c.clone();
        padded.bytes.push(0);
        assert_eq!(
            padded.fill(root, &mut rescanned(&t)).sha,
            None,
            "a byte too many"
        );

        // A cache that leaves a file out (modified just now) proves nothing.
        let mut racy = three_files();
        racy.entries.get_mut(Path::new("a")).unwrap().mtime = MTime::now();
        let c = StatCache::from_tree(root, &racy, MTime::now());
        assert_eq!(c.fill(root, &mut rescanned(&racy)).sha, None);
    }

    #[test]
    fn the_racy_window_follows_the_timestamp_precision() {
        let start = MTime::new(10_000, 500_000_000);
        let entry = |m: MTime| {
            let mut t = Tree::default();
            t.entries.insert(
                PathBuf::from("f"),
                Entry::file(1, 0o644, m, Some(Digest([1; 32]))),
            );
            StatCache::from_tree(Path::new("/r"), &t, start).len(Path::new("/r"))
        };
        // Nanosecond timestamps: a second ago is settled, 50 ms ago is not.
        assert_eq!(entry(MTime::new(9_999, 500_000_001)), 1);
        assert_eq!(entry(MTime::new(10_000, 450_000_000)), 0);
        // Whole seconds (FAT, ext3): within 2 s is not settled.
        assert_eq!(entry(MTime::new(9_999, 0)), 0);
        assert_eq!(entry(MTime::new(9_998, 0)), 1);
    }

    /// More files than a batch: each file `wanted` picks is hashed (the hash of its bytes,
    /// its stat noted), the others are left alone, `wanted` is asked once about each file
    /// whose hash is unknown, in path order, and a file that cannot be read becomes
    /// unknown with an error.
    #[test]
    fn files_are_hashed_a_batch_at_a_time_in_path_order() {
        use sha2::{Digest as _, Sha256};
        let d = tempfile::tempdir().unwrap();
        let n = 2 * HASH_BATCH + 5;
        let mut tree = Tree::default();
        for i in 0..n {
            let rel = PathBuf::from(format!("d{}/f{i}", i % 3));
            std::fs::create_dir_all(d.path().join(rel.parent().unwrap())).unwrap();
            std::fs::write(d.path().join(&rel), format!("content {i}")).unwrap();
            let mut e = Entry::file(0, 0o644, MTime::new(1, 0), None);
            if i % 11 == 0 {
                e.hash = Some(Digest([1; 32]));
            }
            tree.entries.insert(rel, e);
        }
        // Listed, but gone from the disk: unreadable when its turn comes.
        tree.entries.insert(
            PathBuf::from("d0/gone"),
            Entry::file(0, 0o644, MTime::new(1, 0), None),
        );
        let unhashed: Vec<PathBuf> = tree
            .entries
            .iter()
            .filter(|(_, e)| e.hash.is_none())
            .map(|(p, _)| p.to_path_buf())
            .collect();
        let picked = |p: &Path| !p.to_str().unwrap().ends_with('3');
        let mut asked: Vec<PathBuf> = Vec::new();
        let hashed = hash_missing_where(d.path(), &mut tree, |p, e| {
            assert!(e.hash.is_none());
            asked.push(p.to_path_buf());
            picked(p)
        });
        assert_eq!(asked, unhashed, "asked once each, in path order");
        let want = unhashed.iter().filter(|p| picked(p)).count();
        assert!(want > HASH_BATCH, "{want}");
        assert_eq!(hashed.files as usize, want - 1);
        assert_eq!(hashed.errors.len(), 1);
        assert!(tree.unknown.contains(Path::new("d0/gone")));
        for (p, e) in tree.entries.iter() {
            let name = p.file_name().unwrap().to_str().unwrap();
            let i: Option<usize> = name.strip_prefix('f').map(|i| i.parse().unwrap());
            match i {
                Some(i) if i % 11 == 0 => assert_eq!(e.hash, Some(Digest([1; 32]))),
                Some(i) if picked(p) => {
                    let bytes = format!("content {i}");
                    assert_eq!(e.hash, Some(Digest(Sha256::digest(&bytes).into())), "{p:?}");
                    assert_eq!(e.size, bytes.len() as u64);
                }
                _ => assert_eq!(e.hash, None, "{p:?}"),
            }
        }
    }
}
