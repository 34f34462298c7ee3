//! [`Entries`]: the entries of a tree, one per relative path, kept in path order in a
//! few large [`Chunk`]s (their concatenation is sorted).
//!
//! A tree is built once (by a scan, or from a manifest or state file, which are in path
//! order already), read in order by every planner, looked up by path now and then, and
//! changed in batches after an apply. Sorted chunks serve all of that with no allocation
//! per entry: a chunk keeps its paths end to end in one buffer. A B-tree map of the same
//! entries, each path in an allocation of its own, took about 40% more memory, and
//! twice as much while it was built from its list. Chunks let a scan hand over what each
//! thread found as it is (joining the parts would again hold every entry twice), and let
//! a batch of changes be merged a chunk at a time. It never touches the disk.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::tree::{path_order, Entry};

/// The size a merge gives its chunks: big enough that the allocator maps each one on
/// its own (and gives it back whole), small enough to be a fraction of a big tree.
const CHUNK: usize = 8192;

/// The most path bytes a chunk holds (its offsets are 32-bit); small in tests, so that
/// they meet full chunks.
const NAMES_MAX: usize = if cfg!(test) { 4096 } else { u32::MAX as usize };

/// Entries in path order, their paths stored end to end in one buffer.
#[derive(Clone, Default)]
pub struct Chunk {
    /// Where each path starts in `names`, its length, and its entry.
    items: Vec<(u32, u32, Entry)>,
    names: Vec<u8>,
}

fn path_in(names: &[u8], start: u32, len: u32) -> &Path {
    let start = start as usize;
    Path::new(OsStr::from_bytes(&names[start..start + len as usize]))
}

impl Chunk {
    pub fn new() -> Chunk {
        Chunk::default()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True if `path` still fits in the buffer (whose offsets are 32-bit).
    fn has_room(&self, path: &Path) -> bool {
        self.names.len() + path.as_os_str().len() <= NAMES_MAX
    }

    /// Stores `path`'s bytes; returns where they are.
    fn store(&mut self, path: &Path) -> (u32, u32) {
        let bytes = path.as_os_str().as_bytes();
        let start = self.names.len() as u32;
        self.names.extend_from_slice(bytes);
        (start, bytes.len() as u32)
    }

    /// Appends an entry, which must sort after every entry already in the chunk (the
    /// order is checked when the chunks become [`Entries`]). Returns it when the chunk
    /// holds 4 GiB of paths already.
    pub fn push(&mut self, path: &Path, e: Entry) -> Result<(), Entry> {
        if !self.has_room(path) {
            return Err(e);
        }
        let (start, len) = self.store(path);
        self.items.push((start, len, e));
        Ok(())
    }

    fn path(&self, i: usize) -> &Path {
        let (start, len, _) = self.items[i];
        path_in(&self.names, start, len)
    }

    fn last_path(&self) -> Option<&Path> {
        (!self.is_empty()).then(|| self.path(self.len() - 1))
    }

    fn find(&self, path: &Path) -> Result<usize, usize> {
        self.items
            .binary_search_by(|(s, l, _)| path_order(path_in(&self.names, *s, *l), path))
    }

    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (&Path, &Entry)> + Clone {
        self.items
            .iter()
            .map(|(s, l, e)| (path_in(&self.names, *s, *l), e))
    }

    fn iter_from(&self, i: usize) -> impl Iterator<Item = (&Path, &Entry)> {
        self.items[i..]
            .iter()
            .map(|(s, l, e)| (path_in(&self.names, *s, *l), e))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&Path, &mut Entry)> {
        let names = &self.names;
        self.items
            .iter_mut()
            .map(move |(s, l, e)| (path_in(names, *s, *l), e))
    }

    fn shrink_to_fit(&mut self) {
        self.items.shrink_to_fit();
        self.names.shrink_to_fit();
    }

    /// The entries, each with a path of its own.
    pub fn into_entries(self) -> impl Iterator<Item = (PathBuf, Entry)> {
        let Chunk { items, names } = self;
        items
            .into_iter()
            .map(move |(s, l, e)| (path_in(&names, s, l).to_path_buf(), e))
    }
}

/// Entries pushed in path order, gathered into chunks: as many as their paths need, or
/// of at most `cap` entries each.
pub struct ChunkList {
    chunks: Vec<Chunk>,
    len: usize,
    cap: usize,
    /// The room the first chunk is made with: entries, and their paths' bytes.
    first: (usize, usize),
}

impl Default for ChunkList {
    fn default() -> Self {
        ChunkList::with_cap(usize::MAX)
    }
}

impl ChunkList {
    fn with_cap(cap: usize) -> Self {
        ChunkList {
            chunks: Vec::new(),
            len: 0,
            cap,
            first: (0, 0),
        }
    }

    /// A list of chunks of a merge's size: what a tree that changes in places is made
    /// of (an insert moves the entries after it in its chunk).
    pub fn chunked() -> Self {
        ChunkList::with_cap(CHUNK)
    }

    /// A list whose first chunk has room for `entries` entries and `names` bytes of
    /// their paths: a list whose size is known beforehand (a decoded or planned state)
    /// is made without growing, which would leave up to half of it spare.
    pub fn with_capacity(entries: usize, names: usize) -> Self {
        ChunkList {
            first: (entries, names),
            ..ChunkList::default()
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends an entry, which must sort after every entry already there.
    pub fn push(&mut self, path: &Path, e: Entry) {
        let e = match self.chunks.last_mut() {
            Some(c) if c.len() < self.cap => match c.push(path, e) {
                Ok(()) => {
                    self.len += 1;
                    return;
                }
                Err(e) => e,
            },
            _ => e,
        };
        // A list with a cap (a merge's) fills its chunks: each is sized once. Without one
        // (a scan's part, a decoded state), a chunk grows as it fills: many are small
        // (the top entries between a scan's parts), and reserving a full chunk for each
        // mapped 720 KB of address space per chunk and gave it back at once.
        let (capacity, names) = if self.cap == usize::MAX {
            std::mem::take(&mut self.first)
        } else {
            (self.cap.min(CHUNK), 0)
        };
        let mut c = Chunk {
            items: Vec::with_capacity(capacity),
            names: Vec::with_capacity(names),
        };
        c.push(path, e).expect("BUG: an empty chunk has room");
        self.chunks.push(c);
        self.len += 1;
    }

    /// Pushes `(q, e)`, replacing the last entry when it is at the same path.
    fn push_last_wins(&mut self, q: &Path, e: Entry) {
        if let Some(c) = self.chunks.last_mut() {
            if c.last_path() == Some(q) {
                let last = c.items.len() - 1;
                c.items[last].2 = e;
                return;
            }
        }
        self.push(q, e);
    }

    /// Appends a whole chunk, whose entries must sort after every entry already there.
    fn push_chunk(&mut self, c: Chunk) {
        self.len += c.len();
        self.chunks.push(c);
    }

    /// Appends the chunks of `other`, whose entries must sort after every entry already
    /// there, as they are; what is pushed next starts a chunk of its own (a part's
    /// chunk, full, would otherwise grow to twice its size for one more entry).
    pub fn append(&mut self, other: ChunkList) {
        for c in other.chunks {
            self.push_chunk(c);
        }
        self.chunks.push(Chunk::new());
    }

    /// The chunks, in order.
    pub fn into_chunks(self) -> Vec<Chunk> {
        self.chunks
    }

    /// The entries (their order checked, see [`Entries::from_chunks`]).
    pub fn into_entries(self) -> Entries {
        Entries::from_chunks(self.chunks)
    }

    /// The entries, pushed in strict path order by the caller.
    fn into_sorted_entries(mut self) -> Entries {
        for c in self.chunks.iter_mut() {
            c.shrink_to_fit();
        }
        Entries {
            chunks: self.chunks,
            len: self.len,
        }
    }
}

/// Entries by relative path, in path order (see [`path_order`]), one per path.
#[derive(Clone, Default)]
pub struct Entries {
    /// Never an empty chunk; all of them concatenated are in strict path order.
    chunks: Vec<Chunk>,
    len: usize,
}

/// Where a path is, or would be inserted: chunk and index in it.
type Slot = Result<(usize, usize), (usize, usize)>;

impl Entries {
    pub fn new() -> Self {
        Entries::default()
    }

    /// Takes a list already in path order with no path twice (what a manifest or a state
    /// file yields); anything else is sorted first.
    pub fn from_sorted<P: AsRef<Path>>(v: Vec<(P, Entry)>) -> Self {
        let mut out = ChunkList::with_cap(CHUNK);
        let sorted = v
            .windows(2)
            .all(|w| path_order(w[0].0.as_ref(), w[1].0.as_ref()).is_lt());
        if sorted {
            for (p, e) in v {
                out.push(p.as_ref(), e);
            }
            return out.into_sorted_entries();
        }
        let mut v = v;
        // Stable, so that of two entries at one path the later wins, as with inserts.
        v.sort_by(|x, y| path_order(x.0.as_ref(), y.0.as_ref()));
        for (p, e) in v {
            out.push_last_wins(p.as_ref(), e);
        }
        out.into_sorted_entries()
    }

    /// Takes chunks whose concatenation is in path order with no path twice (what the
    /// threads of a scan found, in order) as they are; anything else is sorted first.
    pub fn from_chunks(mut chunks: Vec<Chunk>) -> Self {
        chunks.retain(|c| !c.is_empty());
        let mut prev: Option<&Path> = None;
        let sorted = chunks.iter().flat_map(Chunk::iter).all(|(p, _)| {
            let ok = prev.is_none_or(|q| path_order(q, p).is_lt());
            prev = Some(p);
            ok
        });
        if !sorted {
            let v: Vec<(PathBuf, Entry)> = chunks
                .iter()
                .flat_map(Chunk::iter)
                .map(|(p, e)| (p.to_path_buf(), e.clone()))
                .collect();
            return Entries::from_sorted(v);
        }
        for c in chunks.iter_mut() {
            c.shrink_to_fit();
        }
        let len = chunks.iter().map(Chunk::len).sum();
        Entries { chunks, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order: to be read one after the other, each freed once read.
    pub fn into_chunks(self) -> Vec<Chunk> {
        self.chunks
    }

    fn find(&self, path: &Path) -> Slot {
        // The first chunk whose last path is not before `path`.
        let c = self.chunks.partition_point(|c| {
            let last = c.last_path().expect("BUG: chunks are never empty");
            path_order(last, path).is_lt()
        });
        let Some(chunk) = self.chunks.get(c) else {
            return Err((c, 0));
        };
        chunk.find(path).map(|i| (c, i)).map_err(|i| (c, i))
    }

    pub fn get(&self, path: &Path) -> Option<&Entry> {
        self.find(path)
            .ok()
            .map(|(c, i)| &self.chunks[c].items[i].2)
    }

    pub fn get_mut(&mut self, path: &Path) -> Option<&mut Entry> {
        self.find(path)
            .ok()
            .map(|(c, i)| &mut self.chunks[c].items[i].2)
    }

    pub fn contains_key(&self, path: &Path) -> bool {
        self.find(path).is_ok()
    }

    /// Sets the entry at `path`, returning the one it replaces. Moves the later entries
    /// of its chunk: for a few changes; a batch goes through [`merge`](Self::merge).
    pub fn insert(&mut self, path: PathBuf, e: Entry) -> Option<Entry> {
        match self.find(&path) {
            Ok((c, i)) => Some(std::mem::replace(&mut self.chunks[c].items[i].2, e)),
            Err((c, i)) => {
                let n = self.chunks.len();
                let (c, i) = if c == n && n > 0 {
                    (n - 1, self.chunks[n - 1].len())
                } else {
                    (c, i)
                };
                match self.chunks.get_mut(c).filter(|ch| ch.has_room(&path)) {
                    Some(chunk) => {
                        let (start, len) = chunk.store(&path);
                        chunk.items.insert(i, (start, len, e));
                    }
                    None => {
                        // A chunk of its own (the neighbour is full): split the chunk
                        // there to keep the order.
                        let mut one = Chunk::new();
                        one.push(&path, e).expect("BUG: an empty chunk has room");
                        if c < n && i > 0 {
                            let tail = split_chunk(&mut self.chunks[c], i);
                            self.chunks.insert(c + 1, one);
                            self.chunks.insert(c + 2, tail);
                        } else {
                            self.chunks.insert(c, one);
                        }
                    }
                }
                self.len += 1;
                None
            }
        }
    }

    /// Removes the entry at `path` (not those under it).
    pub fn remove(&mut self, path: &Path) -> Option<Entry> {
        let (c, i) = self.find(path).ok()?;
        let (_, _, e) = self.chunks[c].items.remove(i);
        if self.chunks[c].is_empty() {
            self.chunks.remove(c);
        }
        self.len -= 1;
        Some(e)
    }

    /// Keeps the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Path, &mut Entry) -> bool) {
        for c in self.chunks.iter_mut() {
            let names = &c.names;
            c.items
                .retain_mut(|(s, l, e)| keep(path_in(names, *s, *l), e));
        }
        self.chunks.retain(|c| !c.is_empty());
        self.len = self.chunks.iter().map(Chunk::len).sum();
    }

    /// Removes `removed` and everything under each of them, then sets every entry of
    /// `changes` (any order; of two at one path, the later): one pass over the entries
    /// whatever the number of changes, a chunk at a time. A chunk no change falls in is
    /// kept as it is; one that changes is edited where it lies (its entries moved within
    /// their own buffer, new paths added at the end of its names), so the tree's memory
    /// is reused, not made again beside the old one (freed by the threads that scanned
    /// it, the old memory would stay with them). The entries between two changes are
    /// found by binary search and moved as a run, without a comparison each.
    pub fn merge(&mut self, removed: &[PathBuf], mut changes: Vec<(PathBuf, Entry)>) {
        if removed.is_empty() && changes.is_empty() {
            return;
        }
        let mut gone: Vec<&Path> = removed.iter().map(PathBuf::as_path).collect();
        crate::tree::sort_paths(&mut gone);
        crate::tree::sort_by_path(&mut changes);
        // Of two changes at one path, the later (the sort keeps their order): it takes
        // the earlier's place.
        changes.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        let old = std::mem::take(&mut self.chunks);
        let mut out = ChunkList::with_cap(CHUNK);
        let mut news = changes.into_iter();
        let mut gone = gone.into_iter().peekable();
        // The removed path last reached: what lies under it comes right after it in path
        // order (maybe in the next chunks), and goes.
        let mut covering: Option<&Path> = None;
        // A changed chunk's entries as they will be, and the paths it takes.
        let mut scratch: Vec<(u32, u32, Entry)> = Vec::new();
        let mut added: Vec<u8> = Vec::new();
        for chunk in old {
            let first = chunk.path(0);
            let last = chunk.last_path().expect("BUG: chunks are never empty");
            let untouched = covering.is_none_or(|r| !at_or_under(first, r))
                && news
                    .as_slice()
                    .first()
                    .is_none_or(|(q, _)| path_order(last, q).is_lt())
                && gone.peek().is_none_or(|r| path_order(last, r).is_lt());
            if untouched {
                out.push_chunk(chunk);
                continue;
            }
            // The changes that may land in this chunk, and whether their paths fit its
            // buffer (else the chunk is made again, split where it must be).
            let landing = news
                .as_slice()
                .partition_point(|(q, _)| path_order(q, last).is_le());
            let new_bytes: usize = news.as_slice()[..landing]
                .iter()
                .map(|(q, _)| q.as_os_str().len())
                .sum();
            let Chunk {
                mut items,
                mut names,
            } = chunk;
            let in_place = names.len() + new_bytes <= NAMES_MAX;
            let mut sink = if in_place {
                scratch.clear();
                added.clear();
                Sink::InPlace {
                    scratch: &mut scratch,
                    added: &mut added,
                    base: names.len(),
                }
            } else {
                Sink::Fresh(&mut out)
            };
            let mut rest = items.drain(..);
            loop {
                if let Some(r) = covering {
                    while rest
                        .as_slice()
                        .first()
                        .is_some_and(|&(s, l, _)| at_or_under(path_in(&names, s, l), r))
                    {
                        rest.next();
                    }
                }
                // The next change or removal, whichever comes first (of a removal and a
                // change at one path, the removal: the change is set after it), and how
                // many entries come before it.
                let (removal, before) = {
                    let event = match (news.as_slice().first(), gone.peek()) {
                        (Some((q, _)), Some(r)) if path_order(r, q).is_gt() => {
                            Some((false, q.as_path()))
                        }
                        (_, Some(r)) => Some((true, *r)),
                        (Some((q, _)), None) => Some((false, q.as_path())),
                        (None, None) => None,
                    };
                    let rest = rest.as_slice();
                    match event {
                        None => (None, rest.len()),
                        Some((removal, ev)) => (
                            Some(removal),
                            rest.partition_point(|&(s, l, _)| {
                                path_order(path_in(&names, s, l), ev).is_lt()
                            }),
                        ),
                    }
                };
                for item in rest.by_ref().take(before) {
                    sink.keep(&names, item);
                }
                let Some(&(s, l, _)) = rest.as_slice().first() else {
                    break;
                };
                match removal {
                    None => unreachable!("BUG: without an event every entry was moved"),
                    Some(true) => covering = gone.next(),
                    Some(false) => {
                        let (q, ne) = news.next().expect("BUG: seen first");
                        if path_in(&names, s, l) == q.as_path() {
                            rest.next();
                        }
                        sink.put(&q, ne);
                    }
                }
            }
            drop(rest);
            if in_place {
                // Back into the chunk's own buffers (grown, if at all, where they lie).
                items.reserve_exact(scratch.len());
                items.append(&mut scratch);
                names.reserve_exact(added.len());
                names.append(&mut added);
                if !items.is_empty() {
                    out.push_chunk(Chunk { items, names });
                }
            }
        }
        // What is left comes after every entry there was (all of it, into an empty tree:
        // a first sync's copies). It is taken from the end of the list turned round,
        // which gives its memory back as it goes: the entries made and the list are not
        // both held whole.
        let mut left: Vec<(PathBuf, Entry)> = news.collect();
        left.reverse();
        while let Some((q, ne)) = left.pop() {
            out.push_last_wins(&q, ne);
            if left.len().is_multiple_of(CHUNK) {
                left.shrink_to_fit();
            }
        }
        *self = out.into_sorted_entries();
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Path, &Entry)> + Clone {
        self.chunks.iter().flat_map(Chunk::iter)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Path, &mut Entry)> {
        self.chunks.iter_mut().flat_map(Chunk::iter_mut)
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Path> + Clone {
        self.iter().map(|(p, _)| p)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Entry> + Clone {
        self.iter().map(|(_, e)| e)
    }

    /// The entries at `path` and under it, in path order.
    pub fn at_and_under<'a, 'p>(
        &'a self,
        path: &'p Path,
    ) -> impl Iterator<Item = (&'a Path, &'a Entry)> + use<'a, 'p> {
        let (c, i) = self.find(path).unwrap_or_else(|slot| slot);
        let first = self
            .chunks
            .get(c)
            .into_iter()
            .flat_map(move |ch| ch.iter_from(i));
        let rest = self.chunks.get(c + 1..).unwrap_or(&[]);
        first
            .chain(rest.iter().flat_map(Chunk::iter))
            .take_while(move |(p, _)| p.starts_with(path))
    }
}

/// Where [`Entries::merge`] puts a changed chunk's entries: back into the chunk itself,
/// or into a list of new chunks (when the chunk's paths buffer is full).
enum Sink<'a> {
    InPlace {
        scratch: &'a mut Vec<(u32, u32, Entry)>,
        /// New paths, to go after the chunk's own at `base`.
        added: &'a mut Vec<u8>,
        base: usize,
    },
    Fresh(&'a mut ChunkList),
}

impl Sink<'_> {
    /// Keeps an entry of the chunk, whose path is in `names`.
    fn keep(&mut self, names: &[u8], (s, l, e): (u32, u32, Entry)) {
        match self {
            Sink::InPlace { scratch, .. } => scratch.push((s, l, e)),
            Sink::Fresh(out) => out.push(path_in(names, s, l), e),
        }
    }

    /// Sets a changed entry (after every entry kept or set so far).
    fn put(&mut self, q: &Path, e: Entry) {
        match self {
            Sink::InPlace {
                scratch,
                added,
                base,
            } => {
                let bytes = q.as_os_str().as_bytes();
                let start = (*base + added.len()) as u32;
                added.extend_from_slice(bytes);
                scratch.push((start, bytes.len() as u32, e));
            }
            Sink::Fresh(out) => out.push(q, e),
        }
    }
}

/// `p` is `r` or lies under it: `Path::starts_with` for the relative, normalised paths
/// of a tree, from the bytes (without splitting either into components).
fn at_or_under(p: &Path, r: &Path) -> bool {
    let (p, r) = (p.as_os_str().as_bytes(), r.as_os_str().as_bytes());
    p.starts_with(r) && (p.len() == r.len() || p[r.len()] == b'/')
}

/// Splits `chunk` at `i`: it keeps the entries before, the one returned those after.
fn split_chunk(chunk: &mut Chunk, i: usize) -> Chunk {
    let mut tail = Chunk::new();
    for (s, l, e) in chunk.items.drain(i..) {
        let p = path_in(&chunk.names, s, l);
        tail.push(p, e)
            .expect("BUG: a part of a chunk fits in a chunk");
    }
    tail
}

impl PartialEq for Entries {
    fn eq(&self, other: &Entries) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Entries {}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<P: Into<PathBuf>> FromIterator<(P, Entry)> for Entries {
    fn from_iter<I: IntoIterator<Item = (P, Entry)>>(iter: I) -> Self {
        Entries::from_sorted(
            iter.into_iter()
                .map(|(p, e)| (p.into(), e))
                .collect::<Vec<(PathBuf, Entry)>>(),
        )
    }
}

impl<const N: usize> From<[(PathBuf, Entry); N]> for Entries {
    fn from(items: [(PathBuf, Entry); N]) -> Self {
        items.into_iter().collect()
    }
}

impl IntoIterator for Entries {
    type Item = (PathBuf, Entry);
    type IntoIter = std::iter::FlatMap<
        std::vec::IntoIter<Chunk>,
        Box<dyn Iterator<Item = (PathBuf, Entry)>>,
        fn(Chunk) -> Box<dyn Iterator<Item = (PathBuf, Entry)>>,
    >;

    /// The entries, each with a path of its own.
    fn into_iter(self) -> Self::IntoIter {
        fn entries(c: Chunk) -> Box<dyn Iterator<Item = (PathBuf, Entry)>> {
            Box::new(c.into_entries())
        }
        self.chunks.into_iter().flat_map(entries as fn(Chunk) -> _)
    }
}

impl std::ops::Index<&Path> for Entries {
    type Output = Entry;

    /// The entry at `path`; panics if there is none (as a map does).
    fn index(&self, path: &Path) -> &Entry {
        self.get(path).expect("no entry at this path")
    }
}

#[cfg(test)]
#[path = "entries_tests.rs"]
mod tests;
