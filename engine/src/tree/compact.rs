//! [`Compact`]: entries in path order held in about a fifth of the memory a [`Tree`]'s
//! entries take, for structures that hold a whole replica between uses and read it in
//! order (what a watched pass leaves for the next).
//!
//! Each entry is one postcard record (integers as variable-length numbers) of what
//! differs from the entry before it: the path as the bytes its predecessor's path does
//! not share, the mtime's seconds and the inode as differences, mode and owner only where
//! they change. The records are kept in blocks of about 256 KiB, each starting afresh
//! (whole path, whole numbers): a reader can start at any block
//! ([`Compact::cursor_from`] finds the first entry at or after a path by a binary search
//! of the blocks' first paths), and a tree made whole again frees each block once it is
//! read (so it never holds both forms at once; a block that size is mapped on its own by
//! the allocator, and given back whole). Plain data: it never touches the disk.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::entries::ChunkList;
use super::{path_order, pathser, Digest, Entries, Entry, Kind, MTime, Owner, Tree};

/// A block is closed once it holds this many bytes. Few in tests, so that they cross
/// many blocks.
const BLOCK_BYTES: usize = if cfg!(test) { 100 } else { 256 * 1024 };

/// Blocks as large as a real tree's: what a size is measured with.
#[cfg(test)]
const BLOCK_BYTES_REAL: usize = 256 * 1024;

/// One entry as [`Compact`] holds it: what differs from the entry before.
#[derive(Serialize, Deserialize)]
struct Packed<'a> {
    kind: Kind,
    /// Bit 0: `linked`; bit 1: `touched`.
    flags: u8,
    /// How many bytes of the path before this one begin this path too.
    shared: u32,
    /// The rest of the path.
    #[serde(borrow, with = "pathser::bytes::borrowed")]
    rest: &'a Path,
    size: u64,
    /// `None`: the mode of the entry before.
    mode: Option<u32>,
    /// The difference from the mtime seconds of the entry before.
    sec: i64,
    nsec: u32,
    /// The difference from the inode of the entry before (wrapping).
    ino: i64,
    /// `None`: the owner of the entry before.
    owner: Option<(u32, u32)>,
    #[serde(borrow, with = "pathser::bytes::borrowed::opt")]
    target: Option<&'a Path>,
    hash: Option<Digest>,
}

/// What an entry is encoded against: the one before it, or nothing at a block's start.
#[derive(Clone)]
struct Prev {
    path: Vec<u8>,
    sec: i64,
    ino: u64,
    mode: u32,
    owner: Owner,
}

impl Default for Prev {
    fn default() -> Self {
        Prev {
            path: Vec::new(),
            sec: 0,
            ino: 0,
            mode: 0,
            owner: Owner::UNKNOWN,
        }
    }
}

impl Prev {
    /// The entry `p` encodes, this being the entry before it; becomes that entry.
    fn decode(&mut self, p: Packed<'_>) -> Entry {
        self.path.truncate(p.shared as usize);
        self.path.extend_from_slice(p.rest.as_os_str().as_bytes());
        self.sec = self.sec.wrapping_add(p.sec);
        self.ino = self.ino.wrapping_add(p.ino as u64);
        if let Some(mode) = p.mode {
            self.mode = mode;
        }
        if let Some((uid, gid)) = p.owner {
            self.owner = Owner { uid, gid };
        }
        Entry {
            kind: p.kind,
            size: p.size,
            mode: self.mode,
            mtime: MTime::new(self.sec, p.nsec),
            ino: self.ino,
            target: p.target.map(|t| Box::new(t.to_path_buf())),
            hash: p.hash,
            owner: self.owner,
            linked: p.flags & 1 != 0,
            touched: p.flags & 2 != 0,
        }
    }

    fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.path))
    }
}

/// Decodes the record at the start of `bytes`; gives the rest.
fn take(bytes: &[u8]) -> (Packed<'_>, &[u8]) {
    postcard::take_from_bytes::<Packed<'_>>(bytes).expect("BUG: what was encoded decodes")
}

/// Entries in strict path order, encoded one after the other (see the module's text).
#[derive(Clone)]
pub struct Compact {
    /// The closed blocks, each starting afresh.
    blocks: Vec<Box<[u8]>>,
    /// The block being written.
    open: Vec<u8>,
    /// The size at which a block is closed.
    block_bytes: usize,
    len: usize,
    /// The last entry pushed, which the next is encoded against.
    last: Prev,
}

impl Default for Compact {
    fn default() -> Self {
        Compact::with_blocks_of(BLOCK_BYTES)
    }
}

impl Compact {
    pub fn new() -> Compact {
        Compact::default()
    }

    fn with_blocks_of(block_bytes: usize) -> Compact {
        Compact {
            blocks: Vec::new(),
            open: Vec::new(),
            block_bytes,
            len: 0,
            last: Prev::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes it holds.
    pub fn heap_bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.len()).sum::<usize>()
            + self.open.capacity()
            + self.blocks.capacity() * std::mem::size_of::<Box<[u8]>>()
    }

    /// The entries of `entries`, in their order; each chunk of them is freed once it is
    /// encoded.
    pub fn from_entries(entries: Entries) -> Compact {
        Compact::from_entries_in_blocks_of(entries, BLOCK_BYTES)
    }

    fn from_entries_in_blocks_of(entries: Entries, block_bytes: usize) -> Compact {
        let mut c = Compact::with_blocks_of(block_bytes);
        for chunk in entries.into_chunks() {
            for (p, e) in chunk.iter() {
                c.push(p, e);
            }
        }
        c.close_block();
        c.blocks.shrink_to_fit();
        c
    }

    fn close_block(&mut self) {
        if !self.open.is_empty() {
            let block = std::mem::take(&mut self.open).into_boxed_slice();
            self.blocks.push(block);
        }
        self.last = Prev::default();
    }

    /// Appends `e` at `path`, which must sort after every path already held.
    pub fn push(&mut self, path: &Path, e: &Entry) {
        if !self.open.is_empty() {
            assert!(
                path_order(self.last.path(), path).is_lt(),
                "BUG: entries pushed in path order"
            );
            if self.open.len() >= self.block_bytes {
                self.close_block();
            }
        }
        let bytes = path.as_os_str().as_bytes();
        let prev = &mut self.last;
        let shared = prev
            .path
            .iter()
            .zip(bytes)
            .take_while(|(a, b)| a == b)
            .count();
        let packed = Packed {
            kind: e.kind,
            flags: u8::from(e.linked) | (u8::from(e.touched) << 1),
            shared: u32::try_from(shared).expect("BUG: a path shorter than 4 GiB"),
            rest: Path::new(OsStr::from_bytes(&bytes[shared..])),
            size: e.size,
            mode: (e.mode != prev.mode).then_some(e.mode),
            sec: e.mtime.sec.wrapping_sub(prev.sec),
            nsec: e.mtime.nsec,
            ino: e.ino.wrapping_sub(prev.ino) as i64,
            owner: (e.owner != prev.owner).then_some((e.owner.uid, e.owner.gid)),
            target: e.link_target(),
            hash: e.hash,
        };
        self.open = postcard::to_extend(&packed, std::mem::take(&mut self.open))
            .expect("BUG: an entry encodes into memory");
        prev.path.truncate(shared);
        prev.path.extend_from_slice(&bytes[shared..]);
        prev.sec = e.mtime.sec;
        prev.ino = e.ino;
        prev.mode = e.mode;
        prev.owner = e.owner;
        self.len += 1;
    }

    /// The blocks, the open one last.
    fn block(&self, i: usize) -> Option<&[u8]> {
        match self.blocks.get(i) {
            Some(b) => Some(b),
            None if i == self.blocks.len() && !self.open.is_empty() => Some(&self.open),
            None => None,
        }
    }

    fn block_count(&self) -> usize {
        self.blocks.len() + usize::from(!self.open.is_empty())
    }

    /// A reader from the first entry.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor {
            held: self,
            block: 0,
            at: 0,
            prev: Prev::default(),
            first: None,
        }
    }

    /// A reader from the first entry whose path is `from` or after it.
    pub fn cursor_from(&self, from: &Path) -> Cursor<'_> {
        // The last block whose first path is not after `from`: the blocks before it
        // hold only entries before it.
        let first_path = |i: usize| take(self.block(i).expect("BUG: a block")).0.rest;
        let (mut lo, mut hi) = (0, self.block_count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if path_order(first_path(mid), from).is_le() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let b = lo.saturating_sub(1);
        let mut c = Cursor {
            held: self,
            block: b,
            at: 0,
            prev: Prev::default(),
            first: None,
        };
        while let Some((p, e)) = c.next_entry() {
            if path_order(p, from).is_ge() {
                c.first = Some(e);
                break;
            }
        }
        c
    }

    /// Appends `other`'s entries, which all sort after every entry already held (a
    /// scan's parts, one after the other). Its blocks are taken as they are.
    pub fn append(&mut self, mut other: Compact) {
        self.close_block();
        other.close_block();
        self.len += other.len;
        self.blocks.append(&mut other.blocks);
    }

    /// Gives back what the blocks' list holds spare.
    pub fn shrink(&mut self) {
        self.close_block();
        self.blocks.shrink_to_fit();
    }

    /// The entry at `path`, if there is one.
    pub fn get(&self, path: &Path) -> Option<Entry> {
        let mut c = self.cursor_from(path);
        let (p, e) = c.next_entry()?;
        crate::tree::same_path(p, path).then_some(e)
    }

    /// Every entry, as a tree's entries (in chunks of the size a tree's merges make:
    /// the tree may change in places), each block freed once it is read.
    pub fn into_entries(mut self) -> Entries {
        self.close_block();
        let mut out = ChunkList::chunked();
        for block in std::mem::take(&mut self.blocks) {
            let mut prev = Prev::default();
            let mut rest: &[u8] = &block;
            while !rest.is_empty() {
                let (p, after) = take(rest);
                rest = after;
                let e = prev.decode(p);
                out.push(prev.path(), e);
            }
        }
        out.into_entries()
    }
}

/// Reads a [`Compact`]'s entries in order.
pub struct Cursor<'a> {
    held: &'a Compact,
    /// The block read, and where its next entry starts.
    block: usize,
    at: usize,
    prev: Prev,
    /// An entry already read (by [`Compact::cursor_from`]), whose path is `prev.path`.
    first: Option<Entry>,
}

impl Cursor<'_> {
    /// The next entry, and its path (until the next call).
    pub fn next_entry(&mut self) -> Option<(&Path, Entry)> {
        if let Some(e) = self.first.take() {
            return Some((self.prev.path(), e));
        }
        let mut bytes = self.held.block(self.block)?;
        if self.at == bytes.len() {
            self.block += 1;
            self.at = 0;
            self.prev = Prev::default();
            bytes = self.held.block(self.block)?;
        }
        let (p, rest) = take(&bytes[self.at..]);
        self.at = bytes.len() - rest.len();
        let e = self.prev.decode(p);
        Some((self.prev.path(), e))
    }
}

/// A [`Tree`] held compact: its entries as a [`Compact`], the rest as it is. What a
/// scan reads a replica into (see [`crate::scan::scan_many`]), and what a watch holds
/// between passes.
#[derive(Default)]
pub struct CompactTree {
    pub root: Option<Entry>,
    pub entries: Compact,
    pub unknown: BTreeSet<PathBuf>,
    pub excluded: BTreeSet<PathBuf>,
    pub leftovers: Vec<PathBuf>,
    pub specials: Vec<PathBuf>,
    pub errors: Vec<crate::error::Error>,
}

impl CompactTree {
    /// `tree`, held compact (each part of its entries freed once encoded).
    pub fn new(tree: Tree) -> CompactTree {
        let Tree {
            root,
            entries,
            unknown,
            excluded,
            leftovers,
            specials,
            errors,
        } = tree;
        CompactTree {
            root,
            entries: Compact::from_entries(entries),
            unknown,
            excluded,
            leftovers,
            specials,
            errors,
        }
    }

    /// The tree again, as it was given (each block freed once decoded).
    pub fn into_tree(self) -> Tree {
        Tree {
            root: self.root,
            entries: self.entries.into_entries(),
            unknown: self.unknown,
            excluded: self.excluded,
            leftovers: self.leftovers,
            specials: self.specials,
            errors: self.errors,
        }
    }

    /// A part of the tree: `entries` (some of its own), with a copy of everything else
    /// it holds but its errors and special files (what a planner looks at).
    pub fn part(&self, entries: Entries) -> Tree {
        Tree {
            root: self.root.clone(),
            entries,
            unknown: self.unknown.clone(),
            excluded: self.excluded.clone(),
            leftovers: self.leftovers.clone(),
            specials: Vec::new(),
            errors: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random tree's entries: every kind, owners and modes that change now and then,
    /// inodes and mtimes up and down, names that share long or no prefixes, bytes that
    /// are not UTF-8.
    fn random_entries(seed: u64, n: usize) -> Vec<(PathBuf, Entry)> {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        };
        let names: [&[u8]; 8] = [
            b"a",
            b"a b",
            b"a-b",
            b"ab",
            b"\xff\xfe",
            b"long name.txt",
            b"z",
            b"a.b",
        ];
        let mut paths = BTreeSet::new();
        while paths.len() < n {
            let depth = 1 + next() % 4;
            let mut p = Vec::new();
            for i in 0..depth {
                if i > 0 {
                    p.push(b'/');
                }
                p.extend_from_slice(names[next() as usize % names.len()]);
                if next() % 3 == 0 {
                    p.extend_from_slice(format!("{}", next() % 50).as_bytes());
                }
            }
            paths.insert(PathBuf::from(OsStr::from_bytes(&p)));
        }
        let mut v: Vec<(PathBuf, Entry)> = paths
            .into_iter()
            .map(|p| {
                let mtime = MTime::new(next() as i64 - (1 << 30), (next() % 1_000_000_000) as u32);
                let mut e = match next() % 5 {
                    0 => Entry::dir(0o755, mtime),
                    1 => Entry::symlink(format!("../t{}", next()), mtime),
                    _ => {
                        let hash = (next() % 2 == 0).then(|| Digest([next() as u8; 32]));
                        Entry::file(next() % 100_000, 0o644, mtime, hash)
                    }
                };
                if next() % 4 == 0 {
                    e.mode = (next() % 0o7777) as u32;
                }
                e.ino = if next() % 9 == 0 {
                    u64::MAX - next()
                } else {
                    next()
                };
                e.owner = match next() % 6 {
                    0 => Owner::UNKNOWN,
                    1 => Owner {
                        uid: next() as u32,
                        gid: 7,
                    },
                    _ => Owner { uid: 0, gid: 0 },
                };
                e.linked = next() % 7 == 0;
                e.touched = next() % 5 == 0;
                (p, e)
            })
            .collect();
        crate::tree::sort_by_path(&mut v);
        v
    }

    #[test]
    fn entries_read_back_as_they_were_pushed() {
        for (seed, n) in [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, 100), (7, 1000)] {
            let entries = Entries::from_sorted(random_entries(seed, n));
            let want: Vec<(PathBuf, Entry)> = entries
                .iter()
                .map(|(p, e)| (p.to_path_buf(), e.clone()))
                .collect();
            let held = Compact::from_entries(entries);
            assert_eq!(held.len(), n);
            let mut walked = Vec::new();
            let mut c = held.cursor();
            while let Some((p, e)) = c.next_entry() {
                walked.push((p.to_path_buf(), e));
            }
            assert_eq!(walked, want, "seed {seed}, walked");
            let back = held.into_entries();
            let got: Vec<(PathBuf, Entry)> = back
                .iter()
                .map(|(p, e)| (p.to_path_buf(), e.clone()))
                .collect();
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn a_cursor_starts_at_the_first_path_not_before_the_one_given() {
        let v = random_entries(11, 200);
        let held = Compact::from_entries(Entries::from_sorted(v.clone()));
        let mut probes: Vec<PathBuf> = v.iter().map(|(p, _)| p.clone()).collect();
        // Paths between the entries', before all and after all.
        probes.extend(v.iter().map(|(p, _)| p.join("0")));
        probes.extend(["", "0", "a", "zz", "\u{fffd}"].map(PathBuf::from));
        for from in probes {
            let want: Vec<&(PathBuf, Entry)> = v
                .iter()
                .filter(|(p, _)| path_order(p, &from).is_ge())
                .collect();
            let mut c = held.cursor_from(&from);
            let mut got = Vec::new();
            while let Some((p, e)) = c.next_entry() {
                got.push((p.to_path_buf(), e));
            }
            assert_eq!(got.len(), want.len(), "from {from:?}");
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g, w, "from {from:?}");
            }
        }
    }

    #[test]
    fn a_tree_held_compact_is_the_same_tree_again() {
        let mut t = Tree {
            root: Some(Entry::dir(0o700, MTime::new(5, 6))),
            entries: Entries::from_sorted(random_entries(21, 50)),
            ..Tree::default()
        };
        t.unknown.insert(PathBuf::from("a/b"));
        t.excluded.insert(PathBuf::from("z"));
        t.leftovers.push(PathBuf::from("a/.twoway-tmp-1"));
        t.specials.push(PathBuf::from("fifo"));
        let want: Vec<(PathBuf, Entry)> = t
            .entries
            .iter()
            .map(|(p, e)| (p.to_path_buf(), e.clone()))
            .collect();
        let (root, unknown, excluded) = (t.root.clone(), t.unknown.clone(), t.excluded.clone());
        let (leftovers, specials) = (t.leftovers.clone(), t.specials.clone());
        let held = CompactTree::new(t);
        assert_eq!(held.len(), 50);
        let back = held.into_tree();
        let got: Vec<(PathBuf, Entry)> = back
            .entries
            .iter()
            .map(|(p, e)| (p.to_path_buf(), e.clone()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(back.root, root);
        assert_eq!(back.unknown, unknown);
        assert_eq!(back.excluded, excluded);
        assert_eq!(back.leftovers, leftovers);
        assert_eq!(back.specials, specials);
    }

    /// What a scan of many small files looks like takes a few dozen bytes an entry, not
    /// the hundred and thirty a tree's entry and path take.
    #[test]
    fn a_files_entry_takes_few_bytes() {
        let entries: Entries = (0..10_000u64)
            .map(|i| {
                let p = PathBuf::from(format!("photos/2024/album {}/IMG_{:05}.jpg", i / 500, i));
                let mut e = Entry::file(
                    1_000_000 + i * 37,
                    0o644,
                    MTime::new(
                        1_700_000_000 + i as i64 * 3,
                        (i * 7919 % 1_000_000_000) as u32,
                    ),
                    None,
                );
                e.ino = 5_000_000 + i;
                e.owner = Owner {
                    uid: 1000,
                    gid: 1000,
                };
                (p, e)
            })
            .collect();
        let n = entries.len();
        let held = Compact::from_entries_in_blocks_of(entries, BLOCK_BYTES_REAL);
        let each = held.heap_bytes() as f64 / n as f64;
        assert!(each < 24.0, "{each:.1} bytes an entry");
    }
}
