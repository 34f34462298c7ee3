//! What a scan sees: one [`Entry`] per path of a replica, keyed by its relative path.
//!
//! A `Tree` is plain data: it is built by `scan` (or from a version manifest) and read by
//! the planners. It never touches the disk.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

pub mod compact;
pub mod encoding;
pub mod entries;
pub mod pathser;

use crate::error::Error;
pub use entries::Entries;

/// The kinds of entry the suite syncs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
        }
    }
}

/// A modification time with nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MTime {
    pub sec: i64,
    pub nsec: u32,
}

/// A file whose mtime is this close to a moment may still have been written, by then,
/// within the same timestamp tick without its stat changing. Kernel timestamps move in
/// ticks of at most 10 ms; filesystems that keep whole seconds (their mtimes have no
/// nanoseconds) move in steps of up to 2 s.
const RACY_FINE_NS: i128 = 100_000_000;
const RACY_COARSE_NS: i128 = 2_000_000_000;

impl MTime {
    pub fn new(sec: i64, nsec: u32) -> Self {
        MTime { sec, nsec }
    }

    /// The time now, to compare with mtimes.
    pub fn now() -> MTime {
        let t = chrono::Utc::now();
        MTime::new(t.timestamp(), t.timestamp_subsec_nanos())
    }

    /// True if a file with this mtime may still have been written, at `at`, within the
    /// same timestamp tick as its last change: its stat then proves nothing about its
    /// bytes (they are not cached, and a reading of them is checked by a second one).
    pub fn is_racy_at(self, at: MTime) -> bool {
        let window = if self.nsec == 0 {
            RACY_COARSE_NS
        } else {
            RACY_FINE_NS
        };
        self.as_nanos() >= at.as_nanos() - window
    }

    fn as_nanos(self) -> i128 {
        self.sec as i128 * 1_000_000_000 + self.nsec as i128
    }

    /// The coarsest step this timestamp could have been rounded to: a destination that
    /// keeps only seconds (or 100 ns, like NTFS) shows zeros at the end.
    fn step(self) -> i128 {
        let mut step = 1i128;
        let mut n = self.nsec;
        if n == 0 {
            return 1_000_000_000;
        }
        while n.is_multiple_of(10) {
            n /= 10;
            step *= 10;
        }
        step
    }

    /// Equal within `window_secs` (when > 0), else equal at the coarser precision of the
    /// two, so a copy to a filesystem that keeps fewer digits still compares equal.
    pub fn same_as(self, other: MTime, window_secs: u64) -> bool {
        let (a, b) = (self.as_nanos(), other.as_nanos());
        if window_secs > 0 {
            return (a - b).abs() <= window_secs as i128 * 1_000_000_000;
        }
        if a == b {
            return true;
        }
        let step = self.step().max(other.step());
        a.div_euclid(step) == b.div_euclid(step)
    }
}

/// A SHA-256 digest.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Digest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One entry of a replica as seen by a single `lstat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub size: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub mtime: MTime,
    pub ino: u64,
    /// The link target, for symlinks (behind one thin pointer: a tree holds an entry per
    /// path, most of them without a target).
    pub target: Option<Box<PathBuf>>,
    /// The content hash, for files, when known (stat cache, checksum or copy).
    pub hash: Option<Digest>,
    /// Owner and group ([`Owner::UNKNOWN`] where nothing said: a record written before
    /// owners were kept, or an entry made up by a test).
    pub owner: Owner,
    /// A file that has other names in its tree (hard links, same inode): set by the scan.
    pub linked: bool,
    /// Its inode changed since a time the scan was given (see
    /// `ScanOptions::touched_since`); on a destination entry, set by a pass: its
    /// extended attributes differ from the source's.
    pub touched: bool,
}

/// A file's owner and group ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// No owner known: `chown` leaves an id of `u32::MAX` (-1) as it is.
    pub const UNKNOWN: Owner = Owner {
        uid: u32::MAX,
        gid: u32::MAX,
    };

    pub fn is_known(self) -> bool {
        self != Owner::UNKNOWN
    }

    /// Both known and different: only then is a difference of owners a change.
    pub fn differs(self, other: Owner) -> bool {
        self.is_known() && other.is_known() && self != other
    }

    /// `None` where unknown (for records).
    pub fn known(self) -> Option<(u32, u32)> {
        self.is_known().then_some((self.uid, self.gid))
    }

    pub fn from_known(o: Option<(u32, u32)>) -> Owner {
        o.map_or(Owner::UNKNOWN, |(uid, gid)| Owner { uid, gid })
    }
}

impl Default for Owner {
    fn default() -> Self {
        Owner::UNKNOWN
    }
}

impl Entry {
    /// The same entry with owner `owner`.
    pub fn owned_by(mut self, owner: Owner) -> Self {
        self.owner = owner;
        self
    }

    /// The link target, for a symlink.
    pub fn link_target(&self) -> Option<&Path> {
        self.target.as_deref().map(PathBuf::as_path)
    }

    pub fn dir(mode: u32, mtime: MTime) -> Self {
        Entry {
            kind: Kind::Dir,
            size: 0,
            mode,
            mtime,
            ino: 0,
            target: None,
            hash: None,
            owner: Owner::UNKNOWN,
            linked: false,
            touched: false,
        }
    }

    pub fn file(size: u64, mode: u32, mtime: MTime, hash: Option<Digest>) -> Self {
        Entry {
            kind: Kind::File,
            size,
            mode,
            mtime,
            ino: 0,
            target: None,
            hash,
            owner: Owner::UNKNOWN,
            linked: false,
            touched: false,
        }
    }

    pub fn symlink(target: impl Into<PathBuf>, mtime: MTime) -> Self {
        Entry {
            kind: Kind::Symlink,
            size: 0,
            mode: 0o777,
            mtime,
            ino: 0,
            target: Some(Box::new(target.into())),
            hash: None,
            owner: Owner::UNKNOWN,
            linked: false,
            touched: false,
        }
    }
}

/// A scanned replica: entries by relative path, plus what could not be seen.
#[derive(Debug, Default)]
pub struct Tree {
    /// The root directory's own metadata.
    pub root: Option<Entry>,
    pub entries: Entries,
    /// Paths whose state is unknown (unreadable directory, skipped special file, entry
    /// that failed to stat): nothing at or under them may be deleted on the other side.
    pub unknown: BTreeSet<PathBuf>,
    /// Paths left out by `--exclude` (the top-most excluded path of each subtree).
    pub excluded: BTreeSet<PathBuf>,
    /// Our own temporary files left by an interrupted pass.
    pub leftovers: Vec<PathBuf>,
    /// Special files (fifos, sockets, devices), skipped with a warning.
    pub specials: Vec<PathBuf>,
    /// Per-entry errors met while scanning.
    pub errors: Vec<Error>,
}

impl Tree {
    /// True if `path` is at or under an unknown path.
    pub fn is_unknown(&self, path: &Path) -> bool {
        under_any(&self.unknown, path)
    }

    /// True if something below `dir` (not `dir` itself) could not be read.
    pub fn holds_unknown(&self, dir: &Path) -> bool {
        use std::ops::Bound;
        self.unknown
            .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
            .take_while(|u| u.starts_with(dir) || dir.as_os_str().is_empty())
            .any(|u| u.as_path() != dir)
    }

    /// Regular files and their sizes.
    pub fn file_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.kind == Kind::File)
            .count()
    }
}

/// Frees `value` on a thread of its own: the trees of a big replica are a hundred
/// thousand allocations, and the pass need not wait for them to be freed (a process that
/// exits meanwhile simply ends).
pub fn drop_later<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}

/// The order of `Path::cmp` (component by component) for the relative, normalized paths
/// of a tree, computed on the bytes: a `/` sorts before every other byte, since a shorter
/// component sorts first. One `memcmp`-like pass instead of splitting both paths into
/// components, which was a third of the CPU time of a pass that copies many files.
pub fn path_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    use std::os::unix::ffi::OsStrExt;
    let (a, b) = (a.as_os_str().as_bytes(), b.as_os_str().as_bytes());
    let rank = |c: u8| if c == b'/' { 0 } else { c };
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => rank(a[i]).cmp(&rank(b[i])),
        None => a.len().cmp(&b.len()),
    }
}

/// The same path, byte for byte. `Path`'s own `==` compares components, from the back,
/// whenever the bytes differ: the planners and the state's merge ask at every path.
pub fn same_path(a: &Path, b: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    a.as_os_str().as_bytes() == b.as_os_str().as_bytes()
}

/// The parent of a tree's relative path (`""` for a top-level name), found from the
/// bytes: `Path::parent` parses components from the back, and planners ask for the
/// parent of every path.
pub fn parent_of(p: &Path) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    let b = p.as_os_str().as_bytes();
    let end = b.iter().rposition(|&c| c == b'/').unwrap_or(0);
    Path::new(std::ffi::OsStr::from_bytes(&b[..end]))
}

/// Sorts `(path, item)` pairs into path order.
pub fn sort_by_path<P: AsRef<Path>, T>(v: &mut [(P, T)]) {
    sort_by_path_of(v, |x| x.0.as_ref());
}

/// Sorts `v` into the path order of `path_of` of its items, stably (items of one path
/// keep their order), and without a copy of `v` beside it, which the standard library's
/// stable sort makes: a first sync's lists hold a record per file. Sorts the items'
/// places, then moves the items into their order in place.
pub fn sort_by_path_of<T>(v: &mut [T], path_of: impl Fn(&T) -> &Path) {
    let before = |x: &T, y: &T| path_order(path_of(x), path_of(y)).is_le();
    if v.is_sorted_by(before) {
        return;
    }
    let n = u32::try_from(v.len()).expect("BUG: fewer than 2^32 items to sort");
    let mut order: Vec<u32> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| {
        path_order(path_of(&v[a as usize]), path_of(&v[b as usize])).then(a.cmp(&b))
    });
    // Place i takes the item at order[i]: each cycle of the permutation is followed
    // once, every place it passes marked done.
    for i in 0..order.len() {
        let mut j = i;
        loop {
            let k = order[j] as usize;
            order[j] = j as u32;
            if k == i {
                break;
            }
            v.swap(j, k);
            j = k;
        }
    }
}

/// Sorts paths into path order.
pub fn sort_paths<P: AsRef<Path>>(v: &mut [P]) {
    v.sort_unstable_by(|x, y| path_order(x.as_ref(), y.as_ref()));
}

/// Applies `update` to the entry of `entries` at the path of each of `updates` (its
/// `path_of`) that it has, sorting `updates` first: one merge over both instead of a
/// search per path.
pub fn update_each<U>(
    entries: &mut Entries,
    updates: &mut [U],
    path_of: impl Fn(&U) -> &Path,
    mut update: impl FnMut(&mut Entry, &U),
) {
    if updates.len() < 64 || updates.len() < entries.len() / 16 {
        for u in updates.iter() {
            if let Some(v) = entries.get_mut(path_of(u)) {
                update(v, u);
            }
        }
        return;
    }
    sort_by_path_of(updates, &path_of);
    let mut ups = updates.iter().peekable();
    for (p, v) in entries.iter_mut() {
        while ups
            .peek()
            .is_some_and(|u| path_order(path_of(u), p) == std::cmp::Ordering::Less)
        {
            ups.next();
        }
        match ups.peek() {
            Some(u) if same_path(path_of(u), p) => update(v, u),
            Some(_) => {}
            None => break,
        }
    }
}

/// Walks two trees' entries together in path order, yielding every path once with its
/// entry on each side (one comparison per step instead of two lookups per path).
pub fn zip_paths<'a>(
    x: &'a Entries,
    y: &'a Entries,
) -> impl Iterator<Item = (&'a Path, Option<&'a Entry>, Option<&'a Entry>)> {
    zip_sorted(x.iter(), y.iter())
}

/// What a sequence of `(path, item)` in path order holds at each path asked about, when
/// the paths are asked in path order: one walk alongside, where a lookup per path would
/// search.
pub struct Along<K, V, I: Iterator<Item = (K, V)>> {
    items: std::iter::Peekable<I>,
}

impl<K: AsRef<Path>, V, I: Iterator<Item = (K, V)>> Along<K, V, I> {
    pub fn new(items: I) -> Self {
        Along {
            items: items.peekable(),
        }
    }

    /// The item at `p`, if the sequence has one; `p` comes after every path asked before.
    pub fn at(&mut self, p: &Path) -> Option<&V> {
        while self
            .items
            .next_if(|(q, _)| path_order(q.as_ref(), p).is_lt())
            .is_some()
        {}
        self.items
            .peek()
            .filter(|(q, _)| same_path(q.as_ref(), p))
            .map(|(_, v)| v)
    }
}

/// [`zip_paths`] for any two sequences of `(path, item)` already in path order.
pub fn zip_sorted<'a, P, Q, V, W>(
    x: impl Iterator<Item = (&'a P, V)>,
    y: impl Iterator<Item = (&'a Q, W)>,
) -> impl Iterator<Item = (&'a Path, Option<V>, Option<W>)>
where
    P: AsRef<Path> + ?Sized + 'a,
    Q: AsRef<Path> + ?Sized + 'a,
{
    let x = x.map(|(p, v)| (p.as_ref(), v));
    let y = y.map(|(p, w)| (p.as_ref(), w));
    zip_sorted_by(x, y, |(p, _)| p, |(p, _)| p).map(|(v, w)| {
        let p = match (&v, &w) {
            (Some((p, _)), _) | (None, Some((p, _))) => *p,
            (None, None) => unreachable!("BUG: a step has an item"),
        };
        (p, v.map(|(_, v)| v), w.map(|(_, w)| w))
    })
}

/// Walks two sequences already in path order together, each item once, paired with the
/// other's item at the same path; `key_x` and `key_y` give an item's path (the items
/// may own their paths, which [`zip_sorted`]'s do not).
pub fn zip_sorted_by<V, W>(
    x: impl Iterator<Item = V>,
    y: impl Iterator<Item = W>,
    key_x: impl Fn(&V) -> &Path,
    key_y: impl Fn(&W) -> &Path,
) -> impl Iterator<Item = (Option<V>, Option<W>)> {
    let (mut xi, mut yi) = (x.peekable(), y.peekable());
    std::iter::from_fn(move || {
        let order = match (xi.peek(), yi.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(v), Some(w)) => path_order(key_x(v), key_y(w)),
        };
        let v = if order.is_gt() { None } else { xi.next() };
        let w = if order.is_lt() { None } else { yi.next() };
        Some((v, w))
    })
}

/// Walks three trees' entries together in path order (see [`zip_paths`]).
pub fn zip3_paths<'a>(
    x: &'a Entries,
    y: &'a Entries,
    z: &'a Entries,
) -> impl Iterator<
    Item = (
        &'a Path,
        Option<&'a Entry>,
        Option<&'a Entry>,
        Option<&'a Entry>,
    ),
> {
    let mut xy = zip_paths(x, y).peekable();
    let mut zi = z.iter().peekable();
    std::iter::from_fn(move || match (xy.peek(), zi.peek()) {
        (None, None) => None,
        (Some(_), None) => xy.next().map(|(p, a, b)| (p, a, b, None)),
        (None, Some(_)) => zi.next().map(|(p, c)| (p, None, None, Some(c))),
        (Some((p1, _, _)), Some((p2, _))) => match path_order(p1, p2) {
            std::cmp::Ordering::Less => xy.next().map(|(p, a, b)| (p, a, b, None)),
            std::cmp::Ordering::Greater => zi.next().map(|(p, c)| (p, None, None, Some(c))),
            std::cmp::Ordering::Equal => {
                let (p, a, b) = xy.next().expect("BUG: peeked");
                let (_, c) = zi.next().expect("BUG: peeked");
                Some((p, a, b, Some(c)))
            }
        },
    })
}

/// True if `path` equals or lies under one of `set`.
pub fn under_any(set: &BTreeSet<PathBuf>, path: &Path) -> bool {
    if set.is_empty() {
        return false;
    }
    path.ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .any(|a| set.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimes_compare_at_the_coarser_precision() {
        let fine = MTime::new(100, 123_456_789);
        assert!(fine.same_as(MTime::new(100, 0), 0));
        assert!(fine.same_as(MTime::new(100, 123_456_700), 0));
        assert!(!fine.same_as(MTime::new(100, 123_456_788), 0));
        assert!(!fine.same_as(MTime::new(101, 0), 0));
    }

    #[test]
    fn modify_window_allows_seconds_of_difference() {
        assert!(MTime::new(100, 0).same_as(MTime::new(101, 999_999_999), 2));
        assert!(!MTime::new(100, 0).same_as(MTime::new(103, 0), 2));
    }

    fn sized(items: &[(&str, u64)]) -> Entries {
        items
            .iter()
            .map(|(p, n)| (*p, Entry::file(*n, 0o644, MTime::default(), None)))
            .collect()
    }

    #[test]
    fn zip_paths_yields_each_path_once_in_order() {
        let x = sized(&[("a", 1), ("a/b", 2), ("c", 3)]);
        let y = sized(&[("a", 9), ("a-b", 8), ("c", 7)]);
        let got: Vec<_> = zip_paths(&x, &y)
            .map(|(p, a, b)| {
                let size = |e: Option<&Entry>| e.map(|e| e.size);
                (p.to_str().unwrap().to_string(), size(a), size(b))
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".to_string(), Some(1), Some(9)),
                ("a/b".to_string(), Some(2), None),
                ("a-b".to_string(), None, Some(8)),
                ("c".to_string(), Some(3), Some(7)),
            ]
        );
    }

    #[test]
    fn path_order_is_the_order_of_path_components() {
        let names = ["a", "b", "a-b", "a b", "ab", "a.b", "é", "A", "~", "0"];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let paths: Vec<PathBuf> = (0..400)
            .map(|_| (0..1 + next(4)).map(|_| names[next(names.len())]).collect())
            .collect();
        for x in &paths {
            for y in &paths {
                assert_eq!(path_order(x, y), x.cmp(y), "{x:?} vs {y:?}");
            }
        }
    }

    #[test]
    fn parent_of_matches_path_parent() {
        for p in ["a", "a/b", "a b/c d/e", "x/y.z"] {
            assert_eq!(
                parent_of(Path::new(p)),
                Path::new(p).parent().unwrap(),
                "{p}"
            );
        }
    }

    /// Sorted in place, the items come out as the standard library's stable sort puts
    /// them: in path order, those of one path in the order they had.
    #[test]
    fn the_in_place_sort_is_stable() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for len in [0, 1, 2, 3, 17, 300, 2000] {
            let names = ["a", "a/b", "a-b", "a/b/c", "b", "ab", "a/c"];
            let v: Vec<(PathBuf, usize)> = (0..len)
                .map(|i| (PathBuf::from(names[next() % names.len()]), i))
                .collect();
            let mut want = v.clone();
            want.sort_by(|x, y| path_order(&x.0, &y.0));
            let mut got = v;
            sort_by_path(&mut got);
            assert_eq!(got, want, "{len} items");
        }
    }

    #[test]
    fn update_each_touches_exactly_the_paths_given() {
        let names: Vec<String> = (0..200).map(|i| format!("d{}/f{i}", i % 7)).collect();
        let mut entries: Entries = names
            .iter()
            .map(|p| (p.as_str(), Entry::file(0, 0o644, MTime::default(), None)))
            .collect();
        let mut ups: Vec<(PathBuf, u64)> = (0..200)
            .rev()
            .step_by(2)
            .map(|i| (PathBuf::from(format!("d{}/f{i}", i % 7)), i))
            .chain([(PathBuf::from("missing"), 1)])
            .collect();
        update_each(&mut entries, &mut ups, |u| &u.0, |v, u| v.size = u.1 + 1);
        for (p, v) in entries.iter() {
            let i: u64 = p
                .to_str()
                .unwrap()
                .rsplit('f')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(v.size, if i % 2 == 1 { i + 1 } else { 0 }, "{p:?}");
        }
        assert!(!entries.contains_key(Path::new("missing")));
    }

    #[test]
    fn unknown_covers_descendants() {
        let mut t = Tree::default();
        t.unknown.insert(PathBuf::from("a/b"));
        assert!(t.is_unknown(Path::new("a/b/c")));
        assert!(t.is_unknown(Path::new("a/b")));
        assert!(!t.is_unknown(Path::new("a/bc")));
        assert!(!t.is_unknown(Path::new("a")));
    }
}
