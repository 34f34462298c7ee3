//! A history's chain of versions: a new version recorded whole with the one before
//! turned into its difference, every version read back through the chain, and versions
//! dropped with the chain mended around them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use engine::error::Error;
use engine::fs::Root;
use engine::tree::encoding::{EntryRecord, EntryRef};
use engine::tree::{path_order, same_path, Digest};

use super::format::{same, Read, Run};
use super::{damaged, version_file, Form, History, VersionHead, DIFF, VERSIONS};

impl History {
    /// Hands every entry of version `id` to `f`, in path order: the whole version its
    /// chain of differences starts from, read entry by entry (borrowed), with the
    /// differences up to `id` (each small) folded into one and merged in. Gives the
    /// version's head.
    pub(super) fn for_each_in(
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
    ///
    /// The new version's file is the latest's with what changed put in: the bytes of
    /// every entry recorded alike in both (inode included) are copied from the latest's
    /// file, not encoded again; the file is byte for byte what encoding every entry
    /// would give.
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
        // The runs of entries of the new version recorded alike in the latest, one after
        // another in both: (the place of the first in `news`, how many, where their bytes
        // are in the latest's file and how many). As many as the changes that part them.
        let mut alike: Vec<Run> = Vec::new();
        if let Some(old_id) = latest {
            let mut old = self.reader(&mut root, old_id, true)?;
            let old_head = old.head.clone();
            // What the old version holds that the new one does not hold the same, and
            // the paths the new one has that it lacks: a merge of the two in path order,
            // the old entries borrowed as they are read.
            let mut back: Vec<EntryRecord> = Vec::new();
            let mut gone: Vec<Vec<u8>> = Vec::new();
            let mut news_it = news().enumerate().peekable();
            loop {
                let at = old.offset();
                let same_bytes = old.next_with(|o| {
                    while let Some((_, n)) =
                        news_it.next_if(|(_, n)| path_order(n.path, o.path).is_lt())
                    {
                        added += 1;
                        gone.push(n.path.as_os_str().as_bytes().to_vec());
                    }
                    match news_it.next_if(|(_, n)| same_path(n.path, o.path)) {
                        Some((i, n)) if same(&o, &n) => (o.ino == n.ino).then_some(i),
                        Some(_) => {
                            modified += 1;
                            back.push(o.to_owned());
                            None
                        }
                        None => {
                            removed += 1;
                            back.push(o.to_owned());
                            None
                        }
                    }
                })?;
                let Some(same_bytes) = same_bytes else { break };
                if let Some(i) = same_bytes {
                    let i = i as u64;
                    let len = old.offset() - at;
                    match alike.last_mut() {
                        Some(r) if r.first + r.count == i && r.at + r.bytes == at => {
                            r.count += 1;
                            r.bytes += len;
                        }
                        _ => alike.push(Run {
                            first: i,
                            count: 1,
                            at,
                            bytes: len,
                        }),
                    }
                }
            }
            for (_, n) in news_it {
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
        let from = latest
            .filter(|_| !alike.is_empty())
            .map(|id| (id, &alike[..]));
        self.write_full(&mut root, &head, news, from)?;
        if let Some(old_id) = latest {
            // Its difference is on disk: the old whole file is no longer needed.
            root.remove(&version_file(old_id, Form::Full))?;
        }
        Ok(next)
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
                // Its head says its base: only a dependant is read whole.
                let o = self.read(&mut root, older, false, false)?;
                if o.form != (Form::Diff { base: id }) {
                    continue;
                }
                let o = self.read(&mut root, older, false, true)?;
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

impl History {
    /// Walks every version, newest first, with the entries `keep` selects: the newest
    /// version read whole, each older one by applying its difference to the one after it.
    pub fn walk(
        &self,
        keep: impl Fn(&Path) -> bool,
        mut f: impl FnMut(&VersionHead, &BTreeMap<PathBuf, EntryRecord>),
    ) -> Result<(), Error> {
        let listed = self.list()?;
        let Some(newest) = listed.last() else {
            return Ok(());
        };
        let mut state: BTreeMap<PathBuf, EntryRecord> = self
            .state(newest.head.id)?
            .entries
            .into_iter()
            .filter(|e| keep(&e.path))
            .map(|e| (e.path.clone(), e))
            .collect();
        f(&newest.head, &state);
        for l in listed.iter().rev().skip(1) {
            let (removed, entries) = self.diff_of(l.head.id)?;
            for p in removed {
                state.remove(&p);
            }
            for e in entries.into_iter().filter(|e| keep(&e.path)) {
                state.insert(e.path.clone(), e);
            }
            f(&l.head, &state);
        }
        Ok(())
    }
}
