//! A sync state held in memory as the records of its file: the state of the last sync
//! (the planner's base) and the state a pass plans to record. Encoded, a path takes
//! about 75 bytes where the same entry in a tree takes about 120, and a two-way pass
//! holds both replicas' trees besides. Records are decoded one at a time, as the planner
//! walks them in path order.
//!
//! Pure data: nothing here reads or writes a file (`state` does). Every `Packed` holds
//! records that decode (they were checked when read, or encoded here), in path order,
//! each path once.

use std::path::{Path, PathBuf};

use engine::scan::rescan::Region;
use engine::tree::encoding::EntryRef;
#[cfg(test)]
use engine::tree::Entries;
use engine::tree::{parent_of, path_order, same_path, Entry};

/// One record in every this many is marked with where it starts: a lookup by path
/// decodes no more than that many (and the marked ones a binary search meets).
const MARK_EVERY: usize = 16;

/// The records of a sync state, back to back, in path order.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Packed {
    /// postcard, [`EntryRef`] records without inodes (the state file's own encoding).
    bytes: Vec<u8>,
    count: usize,
    /// Where every [`MARK_EVERY`]th record starts.
    marks: Vec<usize>,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

// A planner takes a state handed over (then dropped early) or borrowed.
impl From<Packed> for std::borrow::Cow<'_, Packed> {
    fn from(p: Packed) -> Self {
        std::borrow::Cow::Owned(p)
    }
}

impl<'a> From<&'a Packed> for std::borrow::Cow<'a, Packed> {
    fn from(p: &'a Packed) -> Self {
        std::borrow::Cow::Borrowed(p)
    }
}

/// The record a state keeps of `e` at `p`: no inode (one replica's inode says nothing of
/// the other's).
pub fn record<'e>(p: &'e Path, e: &'e Entry) -> EntryRef<'e> {
    EntryRef {
        ino: None,
        ..EntryRef::new(p, e)
    }
}

/// Decodes the record at the start of `bytes`: it and what follows it.
fn take(bytes: &[u8]) -> postcard::Result<(EntryRef<'_>, &[u8])> {
    postcard::take_from_bytes::<EntryRef>(bytes)
}

impl Packed {
    /// The state of `records`, in path order, each path once (tests build states so).
    #[cfg(test)]
    pub fn from_sorted<'e>(records: impl IntoIterator<Item = (&'e Path, &'e Entry)>) -> Packed {
        let mut w = Writer::default();
        for (p, e) in records {
            w.push(&record(p, e));
        }
        w.finish()
    }

    /// The state `entries` hold.
    #[cfg(test)]
    pub fn from_entries(entries: &Entries) -> Packed {
        Packed::from_sorted(entries.iter())
    }

    /// The state of the `count` records that make up `bytes` (a state file's, after its
    /// head). Damage is an error of kind `InvalidData`: a record that does not decode,
    /// records out of path order or fewer or more than `count`.
    pub fn from_bytes(bytes: Vec<u8>, count: usize) -> std::io::Result<Packed> {
        let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        let mut marks = Vec::with_capacity(count / MARK_EVERY + 1);
        let mut rest = &bytes[..];
        let mut last: Option<&Path> = None;
        for i in 0..count {
            if rest.is_empty() {
                return Err(invalid("fewer records than its head says"));
            }
            if i % MARK_EVERY == 0 {
                marks.push(bytes.len() - rest.len());
            }
            let (r, after) = take(rest).map_err(|_| invalid("a record does not decode"))?;
            if last.is_some_and(|l| path_order(l, r.path).is_ge()) {
                return Err(invalid("records out of path order"));
            }
            last = Some(r.path);
            rest = after;
        }
        if !rest.is_empty() {
            return Err(invalid("bytes after the last record"));
        }
        Ok(Packed {
            bytes,
            count,
            marks,
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records' bytes, back to back (what a state file holds after its head).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Each record, with its own bytes, in path order.
    pub fn records(&self) -> impl Iterator<Item = (EntryRef<'_>, &[u8])> + '_ {
        records_from(&self.bytes)
    }

    /// Each path with its entry (decoded now), in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&Path, Entry)> + '_ {
        self.records().map(|(r, _)| (r.path, r.to_entry()))
    }

    /// The paths, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Path> + '_ {
        self.records().map(|(r, _)| r.path)
    }

    /// The entry at `path`, if the state has it.
    pub fn get(&self, path: &Path) -> Option<Entry> {
        records_from(&self.bytes[self.mark_before(path)..])
            .map(|(r, _)| r)
            .find(|r| path_order(r.path, path).is_ge())
            .filter(|r| same_path(r.path, path))
            .map(|r| r.to_entry())
    }

    pub fn contains_key(&self, path: &Path) -> bool {
        records_from(&self.bytes[self.mark_before(path)..])
            .map(|(r, _)| r.path)
            .find(|p| path_order(p, path).is_ge())
            .is_some_and(|p| same_path(p, path))
    }

    /// The records in `region`: those of the part of a tree that
    /// [`Region::part_of`] takes (the folders read, and what is directly in them; the
    /// folders walked whole, and everything under them).
    pub fn part(&self, region: &Region) -> Packed {
        let mut picked: Vec<(&Path, &[u8])> = Vec::new();
        for d in &region.dirs {
            for (r, own) in self.at_and_under(d) {
                let itself = same_path(r.path, d) && !d.as_os_str().is_empty();
                if itself || (!same_path(r.path, d) && same_path(parent_of(r.path), d)) {
                    picked.push((r.path, own));
                }
            }
        }
        for w in &region.whole {
            picked.extend(self.at_and_under(w).map(|(r, own)| (r.path, own)));
        }
        picked.sort_by(|x, y| path_order(x.0, y.0));
        picked.dedup_by(|x, y| x.0 == y.0);
        let mut w = Writer::default();
        for (_, own) in picked {
            w.push_bytes(own);
        }
        w.finish()
    }

    /// The records at and under `dir`, each with its own bytes, in path order (every
    /// path under a folder comes right after it in path order).
    fn at_and_under<'a>(
        &'a self,
        dir: &'a Path,
    ) -> impl Iterator<Item = (EntryRef<'a>, &'a [u8])> + 'a {
        records_from(&self.bytes[self.mark_before(dir)..])
            .skip_while(move |(r, _)| path_order(r.path, dir).is_lt())
            .take_while(move |(r, _)| r.path.starts_with(dir))
    }

    /// The same state as entries (tests compare states so).
    #[cfg(test)]
    pub fn to_entries(&self) -> Entries {
        Entries::from_sorted(self.iter().map(|(p, e)| (p.to_path_buf(), e)).collect())
    }

    /// Where the last marked record at or before `path` starts (0 if none is).
    fn mark_before(&self, path: &Path) -> usize {
        let path_at = |&at: &usize| take(&self.bytes[at..]).expect("BUG: records decode").0.path;
        let after = self
            .marks
            .partition_point(|m| path_order(path_at(m), path).is_le());
        after.checked_sub(1).map_or(0, |i| self.marks[i])
    }
}

/// The records that make up `bytes`, each with its own bytes.
fn records_from(bytes: &[u8]) -> impl Iterator<Item = (EntryRef<'_>, &[u8])> + '_ {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (r, after) = take(rest).expect("BUG: a packed state's records decode");
        let own = &rest[..rest.len() - after.len()];
        rest = after;
        Some((r, own))
    })
}

/// Builds a [`Packed`] a record at a time, in path order.
#[derive(Default)]
pub struct Writer {
    packed: Packed,
}

impl Writer {
    /// Adds a record (after every one added before, in path order).
    pub fn push(&mut self, r: &EntryRef<'_>) {
        let p = &mut self.packed;
        if p.count.is_multiple_of(MARK_EVERY) {
            p.marks.push(p.bytes.len());
        }
        p.bytes = postcard::to_extend(r, std::mem::take(&mut p.bytes))
            .expect("BUG: a record encodes into memory");
        p.count += 1;
    }

    /// Adds a record already encoded (one of another [`Packed`]'s).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        let p = &mut self.packed;
        if p.count.is_multiple_of(MARK_EVERY) {
            p.marks.push(p.bytes.len());
        }
        p.bytes.extend_from_slice(bytes);
        p.count += 1;
    }

    pub fn finish(self) -> Packed {
        let mut p = self.packed;
        p.bytes.shrink_to_fit();
        p.marks.shrink_to_fit();
        p
    }
}

/// The state a pass plans to record, as what it changes in the state of the last sync
/// (a first sync's base is empty): most paths of a pass that changed 1% keep their
/// record, and the state is not held twice to say so.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The records of paths whose record is new or differs, in path order.
    pub put: Packed,
    /// Paths of the base that the state no longer holds, in path order.
    pub gone: Vec<PathBuf>,
    /// How many of `put`'s paths the base lacks, where the planner counted them (a
    /// small change): the state's size after the change is then known before it is
    /// written (see `state::save_changed`).
    pub new_paths: Option<usize>,
}

impl StateChange {
    /// The paths of the state after the change, made to `base`, in path order.
    pub fn paths_after<'a>(&'a self, base: &'a Packed) -> impl Iterator<Item = &'a Path> + 'a {
        let mut gone = self.gone.iter().peekable();
        let kept = base.keys().filter(move |p| {
            while gone.next_if(|g| path_order(g, p).is_lt()).is_some() {}
            gone.next_if(|g| g.as_path() == *p).is_none()
        });
        engine::tree::zip_sorted_by(kept, self.put.keys(), |p| p, |p| p)
            .map(|(k, p)| p.or(k).expect("BUG: a path comes from one list or both"))
    }

    /// The state after the change, made to `base` (tests compare states so).
    #[cfg(test)]
    pub fn applied_to(&self, base: &Entries) -> Entries {
        // As a state records it (no inode, nothing only a scan knows).
        let mut after = Packed::from_entries(base).to_entries();
        let put = self.put.iter().map(|(p, e)| (p.to_path_buf(), e)).collect();
        after.merge(&self.gone, put);
        after
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::tree::{Digest, MTime};
    use std::path::PathBuf;

    fn state(n: usize) -> Entries {
        let mut v: Vec<(PathBuf, Entry)> =
            vec![(PathBuf::from("d"), Entry::dir(0o755, MTime::new(1, 0)))];
        for i in 0..n {
            let e = Entry::file(
                i as u64,
                0o644,
                MTime::new(i as i64, 7),
                Some(Digest([i as u8; 32])),
            );
            v.push((PathBuf::from(format!("d/f{i:04}")), e));
        }
        v.push((
            PathBuf::from("d-x"),
            Entry::symlink("d/f0001", MTime::new(3, 4)),
        ));
        v.push((PathBuf::from("e"), Entry::dir(0o700, MTime::new(2, 0))));
        Entries::from_sorted(v)
    }

    /// Packed, a state reads back as the same entries (without inodes), and its bytes
    /// read back as the same state.
    #[test]
    fn a_packed_state_reads_back_and_finds_paths() {
        let mut entries = state(300);
        entries.get_mut(Path::new("d/f0007")).unwrap().ino = 99;
        let packed = Packed::from_entries(&entries);
        entries.get_mut(Path::new("d/f0007")).unwrap().ino = 0;
        assert_eq!(packed.len(), entries.len());
        assert_eq!(packed.to_entries(), entries);
        let again = Packed::from_bytes(packed.bytes().to_vec(), packed.len()).unwrap();
        assert_eq!(again, packed);
        for (p, e) in entries.iter() {
            assert!(packed.contains_key(p), "{p:?}");
            assert_eq!(packed.get(p).as_ref(), Some(e), "{p:?}");
        }
        for p in ["", "a", "d/f", "d/f0300", "d/f00071", "d-w", "f"] {
            assert!(!packed.contains_key(Path::new(p)), "{p:?}");
            assert_eq!(packed.get(Path::new(p)), None, "{p:?}");
        }
    }

    /// Bytes that are not a state of the count given are refused, not taken for one.
    #[test]
    fn damaged_bytes_are_refused() {
        let packed = Packed::from_entries(&state(10));
        let bytes = packed.bytes().to_vec();
        let invalid = |r: std::io::Result<Packed>| {
            r.is_err_and(|e| e.kind() == std::io::ErrorKind::InvalidData)
        };
        assert!(invalid(Packed::from_bytes(bytes.clone(), 14)));
        assert!(invalid(Packed::from_bytes(bytes.clone(), 12)));
        assert!(invalid(Packed::from_bytes(
            bytes[..bytes.len() - 3].to_vec(),
            13
        )));
        // Two records swapped: out of path order.
        let recs: Vec<&[u8]> = packed.records().map(|(_, b)| b).collect();
        let mut swapped = Vec::new();
        for b in [recs[0], recs[2], recs[1]]
            .into_iter()
            .chain(recs[3..].iter().copied())
        {
            swapped.extend_from_slice(b);
        }
        assert!(invalid(Packed::from_bytes(swapped, 13)));
        assert!(Packed::from_bytes(bytes, 13).is_ok());
    }
}
