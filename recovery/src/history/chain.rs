//! A history's chain of versions. One version is whole; every other is a difference from
//! its neighbour toward the whole one: older versions from the next newer (`backward`),
//! newer ones from the one before (`forward`). A pass records its version as a small
//! forward difference; once the forward differences add up to a share of the whole
//! version, the new version is written whole and the run of forward differences before
//! it is turned around. Versions are read back through the chain, and dropped with the
//! chain mended around them.
//!
//! Every step is one file written whole and renamed into place, or one removal, in an
//! order that leaves every version readable after each: [`History::repair_versions`]
//! finishes or undoes what a kill left (a version with both a whole file and a
//! difference).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use engine::error::Error;
use engine::fs::Root;
use engine::tree::encoding::{AsEntryRef, EntryRecord, EntryRef};
use engine::tree::{path_order, same_path, Digest, Kind};

use super::format::{same, Delta, MetaDigest};
use super::{damaged, version_file, Form, History, Listed, VersionHead, VERSIONS};

/// The forward differences after a whole version may add up to this share of its file
/// (1/4) before the next version is written whole...
const FORWARD_SHARE: u64 = 4;
/// ...or to this many bytes, for a small tree (whose whole file costs little either
/// way: a pass that changes a few files of it writes a few hundred bytes).
const FORWARD_FLOOR: u64 = 64 << 10;
/// And at most this many of them (each is read to read the latest version).
const FORWARD_MAX: usize = 64;

#[cfg(test)]
thread_local! {
    /// Steps (version files written or removed) left before a test's simulated kill:
    /// the step that finds it at zero fails, as if the process had died before it.
    pub(super) static STEPS_LEFT: std::cell::Cell<Option<usize>> =
        const { std::cell::Cell::new(None) };
    /// [`FORWARD_FLOOR`] as a test sets it (0: the share alone decides, so that a small
    /// tree's history turns around as a big one's does).
    pub(super) static FLOOR: std::cell::Cell<u64> = const { std::cell::Cell::new(FORWARD_FLOOR) };
}

fn forward_floor() -> u64 {
    #[cfg(test)]
    return FLOOR.get();
    #[cfg(not(test))]
    FORWARD_FLOOR
}

/// Called before every version file is written or removed: where a test kills the run.
fn step() -> Result<(), Error> {
    #[cfg(test)]
    if let Some(n) = STEPS_LEFT.get() {
        if n == 0 {
            return Err(Error::entry("/", "killed (test)"));
        }
        STEPS_LEFT.set(Some(n - 1));
    }
    Ok(())
}

/// Whether two entries at one path are recorded alike, inode included (a version's
/// inodes say which files were one file).
/// Puts what [`History::record_filling`] worked out in the head, if it did.
fn fill_head(head: &mut VersionHead, filled: Option<(MetaDigest, u64, u64)>) {
    if let Some((digest, files, bytes)) = filled {
        head.meta_sha256 = digest.finish();
        head.files = files;
        head.bytes = bytes;
    }
}

/// What the newest difference that names a path says of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Named {
    Put,
    Removed,
    /// No difference names it: the whole version's entry stands.
    Not,
}

/// The differences of a chain (newest first) read at once, entry by entry, as
/// [`History::for_each_in`] merges them with the whole version.
struct Merge {
    diffs: Vec<super::format::VersionReader>,
    /// Each difference's next entry.
    next: Vec<Option<EntryRecord>>,
    /// Where each difference's removed paths (in path order) are met up to.
    gone_at: Vec<usize>,
    /// Which difference's entry was handed out last (at the path asked last), moved
    /// out of `next` until the path is passed.
    taken: Option<EntryRecord>,
}

impl Merge {
    fn new(mut diffs: Vec<super::format::VersionReader>) -> Result<Merge, Error> {
        let next = diffs
            .iter_mut()
            .map(|d| d.next_entry())
            .collect::<Result<Vec<_>, Error>>()?;
        let n = diffs.len();
        Ok(Merge {
            diffs,
            next,
            gone_at: vec![0; n],
            taken: None,
        })
    }

    /// The first path any difference puts next.
    fn first_put(&self) -> Option<&Path> {
        self.next
            .iter()
            .flatten()
            .map(|e| e.path.as_path())
            .min_by(|x, y| path_order(x, y))
    }

    /// Whether difference `i` removes `p` (asked in path order).
    fn removes(&mut self, i: usize, p: &Path) -> bool {
        let gone = &self.diffs[i].removed;
        let at = &mut self.gone_at[i];
        while *at < gone.len() && path_order(&gone[*at], p).is_lt() {
            *at += 1;
        }
        gone.get(*at).is_some_and(|g| same_path(g, p))
    }

    /// What the newest difference that names `p` says of it (a path it puts is handed
    /// out by [`Merge::entry`]). Every difference's entry at `p` is passed.
    fn at(&mut self, p: &Path) -> Result<Named, Error> {
        self.taken = None;
        let mut named = Named::Not;
        for i in 0..self.diffs.len() {
            let puts = self.next[i].as_ref().is_some_and(|e| same_path(&e.path, p));
            let first = named == Named::Not;
            if first && !puts && self.removes(i, p) {
                named = Named::Removed;
            }
            if puts {
                let e = std::mem::replace(&mut self.next[i], self.diffs[i].next_entry()?);
                if first {
                    named = Named::Put;
                    self.taken = e;
                }
            }
        }
        Ok(named)
    }

    /// The entry [`Merge::at`] found.
    fn entry(&self) -> EntryRef<'_> {
        self.taken
            .as_ref()
            .expect("BUG: asked after a difference put the path")
            .as_ref()
    }

    /// Hands `f` each entry the differences put at a path before `limit` (every one
    /// left, with `None`) that the whole version does not have, as the newest says.
    fn before(
        &mut self,
        limit: Option<&Path>,
        f: &mut impl FnMut(EntryRef<'_>),
    ) -> Result<(), Error> {
        loop {
            let Some(p) = self.first_put() else {
                return Ok(());
            };
            if limit.is_some_and(|l| !path_order(p, l).is_lt()) {
                return Ok(());
            }
            let p = p.to_path_buf();
            if self.at(&p)? == Named::Put {
                f(self.entry());
            }
        }
    }
}

fn alike(a: &EntryRef<'_>, b: &EntryRef<'_>) -> bool {
    same(a, b) && a.ino == b.ino
}

impl History {
    /// Hands every entry of version `id` to `f`, in path order: the whole version its
    /// chain of differences starts from, and each difference up to `id`, all read
    /// entry by entry at once and merged, where a path is what the newest difference
    /// that names it says (put or removed), else what the whole version holds. A
    /// difference's removed paths are held; its entries are not (a long chain of
    /// differences costs a reader each, not their entries). Gives the version's head.
    pub(super) fn for_each_in(
        &self,
        root: &mut Root,
        id: u64,
        mut f: impl FnMut(EntryRef<'_>),
    ) -> Result<VersionHead, Error> {
        // A version with a whole file and a difference (a kill between two steps) is
        // read whole.
        let files: BTreeMap<u64, bool> = self.files(root)?.into_iter().collect();
        // The differences from `id` back to the whole version, newest first.
        let mut chain: Vec<super::format::VersionReader> = Vec::new();
        let mut at = id;
        let whole = loop {
            let Some(&full) = files.get(&at) else {
                return Err(damaged(
                    &self.path.join(VERSIONS),
                    format!("version {at} is missing (needed by version {id})"),
                ));
            };
            if full {
                break at;
            }
            if chain.len() > files.len() {
                return Err(damaged(
                    &self.path.join(VERSIONS),
                    format!("the chain of differences from version {id} never ends"),
                ));
            }
            let mut r = self.reader(root, at, false)?;
            match r.form {
                Form::Diff { base } if base != at => at = base,
                _ => {
                    return Err(damaged(
                        &self.path.join(version_file(at, r.form)),
                        "bad base",
                    ))
                }
            }
            engine::tree::sort_paths(&mut r.removed);
            chain.push(r);
        };
        let mut w = self.reader(root, whole, true)?;
        let head = match chain.first() {
            Some(d) => d.head.clone(),
            None => w.head.clone(),
        };
        let mut merge = Merge::new(chain)?;
        let mut failed = None;
        while w
            .next_with(|o| {
                if let Err(e) = merge.before(Some(o.path), &mut f) {
                    failed.get_or_insert(e);
                    return;
                }
                match merge.at(o.path) {
                    Ok(Named::Put) => f(merge.entry()),
                    Ok(Named::Not) => f(o),
                    Ok(Named::Removed) => {}
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            })?
            .is_some()
        {
            if let Some(e) = failed.take() {
                return Err(e);
            }
        }
        merge.before(None, &mut f)?;
        // Each difference read to its end (what its base held where it changed, which
        // is not held here): a damaged one is an error, never a different version.
        for d in &mut merge.diffs {
            d.take_was(|_| ())?;
        }
        Ok(head)
    }

    /// Records a new version whose entries `news` gives (in path order, afresh each call)
    /// and whose head is `head` (its id and change counts are filled here). Returns the
    /// new id.
    ///
    /// The new version is the difference from the latest (what changed, both ways), one
    /// small file. Once the differences since the whole version would pass a share of
    /// it, the new version is written whole instead, and the versions from the whole one
    /// to the latest are turned into differences from the version after each (the
    /// latest's from the new one): newest first, so that every version reads at every
    /// point.
    pub fn record<I: Iterator<Item: AsEntryRef>>(
        &self,
        head: VersionHead,
        news: impl Fn() -> I,
    ) -> Result<u64, Error> {
        Ok(self.record_filling(head, news, None)?.id)
    }

    /// [`History::record`], the head's metadata digest and its files and bytes worked
    /// out from the entries as they are read (with `fill`: the root's mode and mtime),
    /// not read once more beforehand. Returns the head written.
    pub fn record_filling<I: Iterator<Item: AsEntryRef>>(
        &self,
        mut head: VersionHead,
        news: impl Fn() -> I,
        fill: Option<(u32, (i64, u32))>,
    ) -> Result<VersionHead, Error> {
        let mut root = self.open_made()?;
        let files = self.files(&mut root)?;
        let next = self.next_id(&mut root, &files)?;
        head.id = next;
        let mut filling = fill.map(|root| (MetaDigest::new(root), 0u64, 0u64));
        let mut fill_from = |e: &EntryRef<'_>| {
            if let Some((digest, files, bytes)) = &mut filling {
                digest.add(e);
                if e.kind == Kind::File {
                    *files += 1;
                    *bytes += e.size;
                }
            }
        };
        let Some(&(latest, _)) = files.last() else {
            for n in news() {
                head.added += 1;
                fill_from(&n.entry_ref());
            }
            fill_head(&mut head, filling);
            self.write_full_of(&mut root, &head, news)?;
            return Ok(head);
        };
        let Some(whole) = files.iter().rev().find(|(_, f)| *f).map(|(id, _)| *id) else {
            return Err(damaged(&self.path.join(VERSIONS), "no whole version"));
        };
        // The versions from the whole one to the latest: the whole, then forward
        // differences.
        let segment = ids_in(&files, whole..=latest);
        let size = |root: &mut Root, id: u64, full: bool| -> Result<u64, Error> {
            Ok(root
                .stat(&version_file(id, Form::of(full)))?
                .map_or(0, |s| s.size))
        };
        let whole_bytes = size(&mut root, whole, true)?;
        let mut forward_bytes = 0;
        for &id in &segment[1..] {
            forward_bytes += size(&mut root, id, false)?;
        }
        // What the new difference may take before the version is written whole instead.
        let budget = (whole_bytes / FORWARD_SHARE)
            .max(forward_floor())
            .saturating_sub(forward_bytes);
        let estimate = |e: &EntryRef<'_>| e.path.as_os_str().len() as u64 + 48;

        // The latest version and the new one side by side, in path order.
        let (mut added, mut modified, mut removed) = (0u64, 0u64, 0u64);
        let mut put: Vec<EntryRecord> = Vec::new();
        let mut was: Vec<EntryRecord> = Vec::new();
        let mut gone: Vec<PathBuf> = Vec::new();
        // Paths the new version has that the latest lacks (the latest's difference from
        // the new one removes them, if it comes to that).
        let mut new_paths: Vec<PathBuf> = Vec::new();
        let mut bytes = 0u64;
        let mut small = segment.len() <= FORWARD_MAX;
        {
            let mut news_it = news().inspect(|n| fill_from(&n.entry_ref())).peekable();
            let mut add = |n: EntryRef<'_>,
                           old: Option<EntryRef<'_>>,
                           put: &mut Vec<EntryRecord>,
                           small: &mut bool| {
                if *small {
                    bytes += estimate(&n) + old.as_ref().map_or(0, estimate);
                    put.push(n.to_owned());
                    if bytes > budget {
                        // Written whole: only the latest's side is needed.
                        *small = false;
                        *put = Vec::new();
                    }
                }
            };
            self.for_each_in(&mut root, latest, |o| {
                while let Some(n) =
                    news_it.next_if(|n| path_order(n.entry_ref().path, o.path).is_lt())
                {
                    let n = n.entry_ref();
                    added += 1;
                    new_paths.push(n.path.to_path_buf());
                    add(n, None, &mut put, &mut small);
                }
                match news_it.next_if(|n| same_path(n.entry_ref().path, o.path)) {
                    Some(n) if alike(&o, &n.entry_ref()) => {}
                    Some(n) => {
                        let n = n.entry_ref();
                        // An inode alone is no change to count, but the version records it.
                        modified += u64::from(!same(&o, &n));
                        was.push(o.to_owned());
                        add(n, Some(o), &mut put, &mut small);
                    }
                    None => {
                        removed += 1;
                        gone.push(o.path.to_path_buf());
                        was.push(o.to_owned());
                    }
                }
            })?;
            for n in news_it {
                let n = n.entry_ref();
                added += 1;
                new_paths.push(n.path.to_path_buf());
                add(n, None, &mut put, &mut small);
            }
        }
        head.added = added;
        head.changed = modified;
        head.removed = removed;
        fill_head(&mut head, filling);
        if small {
            let delta = Delta {
                gone,
                put,
                was: Some(was),
            };
            step()?;
            self.write_diff(&mut root, &head, latest, &delta)?;
            return Ok(head);
        }
        // Written whole, and the forward differences before it turned around.
        self.write_full_of(&mut root, &head, news)?;
        let back = Delta {
            gone: new_paths,
            put: was,
            was: None,
        };
        self.turn_around(&mut root, &segment, next, back)?;
        Ok(head)
    }

    /// Writes version `head.id` whole, its entries those `news` gives.
    fn write_full_of<I: Iterator<Item: AsEntryRef>>(
        &self,
        root: &mut Root,
        head: &VersionHead,
        news: impl Fn() -> I,
    ) -> Result<(), Error> {
        let count = news().count();
        step()?;
        self.write_full(root, head, count, |f| {
            news().for_each(|n| f(n.entry_ref()));
            Ok(())
        })
    }

    /// The differences of versions `ids`, each read whole.
    /// Turns the versions of `segment` (a whole version, then forward differences, in
    /// order) into differences toward the whole version `to` that follows them: the last
    /// gets `back` (its difference from `to`), each one before it the inverse of the
    /// forward difference after it, read from that version's file just before the file
    /// is rewritten (so that one difference is held at a time, not all of them). The old
    /// whole file goes last. Where a forward difference does not know its base's entries
    /// (or is not the difference from the version before), the turn stops there: the
    /// versions before it stay forward differences from the old whole version, which
    /// stays.
    fn turn_around(
        &self,
        root: &mut Root,
        segment: &[u64],
        to: u64,
        back: Delta,
    ) -> Result<(), Error> {
        let mut back = Some(back);
        let mut newer = to;
        for (i, &id) in segment.iter().enumerate().rev() {
            let Some(mut delta) = back.take() else {
                return Ok(());
            };
            // A difference toward the newer whole version is only ever read that way:
            // its base's entries are not kept.
            delta.was = None;
            let whole = i == 0;
            let (head, before) = if whole {
                (self.read(root, id, true, false)?.head, None)
            } else {
                // The version before is the inverse of this one's forward difference,
                // read before its file is rewritten.
                let r = self.read(root, id, false, true)?;
                let forward = r.form
                    == Form::Diff {
                        base: segment[i - 1],
                    };
                let head = r.head.clone();
                (head, forward.then(|| r.delta().inverse()).flatten())
            };
            step()?;
            self.write_diff(root, &head, newer, &delta)?;
            if whole {
                step()?;
                root.remove(&version_file(id, Form::Full))?;
            } else {
                back = before;
            }
            newer = id;
        }
        Ok(())
    }

    /// Makes the latest version (`to`, a forward difference, as is every version between
    /// it and the whole version `whole`) whole, and turns the versions from `whole` on
    /// into differences toward it: what dropping the whole version needs, done so that
    /// the versions dropped after it (older ones, as a policy drops them) are cheap.
    fn move_whole(&self, root: &mut Root, whole: u64, to: u64) -> Result<(), Error> {
        let files = self.files(root)?;
        let segment = ids_in(&files, whole..to);
        let last = *segment.last().expect("BUG: holds the whole version");
        let generic = |h: &History| -> Result<Delta, Error> {
            Ok(delta(&h.state(last)?.entries, &h.state(to)?.entries))
        };
        let back = if files.contains(&(to, true)) {
            // Made whole already by a run cut short.
            generic(self)?
        } else {
            let fwd = self.read(root, to, false, true)?;
            if fwd.form != (Form::Diff { base: last }) {
                return Err(damaged(
                    &self.path.join(version_file(to, fwd.form)),
                    format!("not the difference from version {last}"),
                ));
            }
            let head = fwd.head.clone();
            let fwd = fwd.delta();
            let mut count = 0usize;
            let mut reading = self.open()?;
            self.for_each_in(&mut reading, to, |_| count += 1)?;
            step()?;
            self.write_full(root, &head, count, |f| {
                self.for_each_in(&mut reading, to, f).map(|_| ())
            })?;
            step()?;
            root.remove(&version_file(to, Form::Diff { base: last }))?;
            match fwd.inverse() {
                Some(back) => back,
                None => generic(self)?,
            }
        };
        self.turn_around(root, &segment, to, back)
    }

    /// Drops the versions `ids` (never the latest): a version that is the difference
    /// from a dropped one is first rewritten as the difference from that one's base, so
    /// every version left reads at every point; a dropped whole version first hands its
    /// wholeness to the latest. Gives the content the dropped versions held of
    /// their own: what may now be garbage.
    pub fn forget(&self, ids: &BTreeSet<u64>) -> Result<HashSet<Digest>, Error> {
        let mut root = self.open_made()?;
        let mut candidates = HashSet::new();
        // Newest first: the version beside a dropped one already refers to a kept one.
        for &id in ids.iter().rev() {
            let files = self.files(&mut root)?;
            let all: BTreeSet<u64> = files.iter().map(|(i, _)| *i).collect();
            if !all.contains(&id) || all.last() == Some(&id) {
                continue;
            }
            if files.contains(&(id, true)) {
                let newest_whole = files.iter().rev().find(|(_, f)| *f).map(|(i, _)| *i);
                if newest_whole == Some(id) {
                    let latest = *all.last().expect("BUG: holds this one");
                    self.move_whole(&mut root, id, latest)?;
                } else {
                    // An older whole version (a turn cut short): turned first; kept if
                    // it cannot be (an extra version rather than a broken chain).
                    self.finish_turn(&mut root)?;
                    if self.files(&mut root)?.contains(&(id, true)) {
                        continue;
                    }
                }
            }
            let files = self.files(&mut root)?;
            let dropped = self.read(&mut root, id, false, true)?;
            let Form::Diff { base } = dropped.form else {
                continue;
            };
            candidates.extend(dropped.entries.iter().filter_map(|e| e.sha256));
            let dropped = dropped.delta();
            for &(other, full) in &files {
                if full || other == id {
                    continue;
                }
                // Its head says its base: only a dependant is read whole.
                let o = self.read(&mut root, other, false, false)?;
                if o.form != (Form::Diff { base: id }) {
                    continue;
                }
                let o = self.read(&mut root, other, false, true)?;
                let head = o.head.clone();
                step()?;
                self.write_diff(&mut root, &head, base, &compose(&dropped, &o.delta()))?;
            }
            step()?;
            root.remove(&version_file(id, Form::Diff { base }))?;
        }
        Ok(candidates)
    }

    /// Finishes a turn cut short by a kill: where an older whole version is followed by
    /// forward differences and then by differences toward the newest whole version,
    /// the forward ones are turned around too (the last of them from the two states),
    /// so that one version is whole again. Anything else is left as it is: it reads.
    pub(super) fn finish_turn(&self, root: &mut Root) -> Result<(), Error> {
        let files = self.files(root)?;
        let wholes: Vec<u64> = files
            .iter()
            .filter(|(_, f)| *f)
            .map(|(id, _)| *id)
            .collect();
        let [.., older, newest] = wholes[..] else {
            return Ok(());
        };
        let between = ids_in(&files, older + 1..newest);
        let mut segment = vec![older];
        let mut rest = between.iter().peekable();
        while let Some(&&id) = rest.peek() {
            let r = self.read(root, id, false, false)?;
            if r.form
                != (Form::Diff {
                    base: *segment.last().expect("BUG: starts with one"),
                })
            {
                break;
            }
            segment.push(id);
            rest.next();
        }
        // What follows must lead to the newest whole version, each from the next.
        let ahead: Vec<u64> = rest.copied().chain([newest]).collect();
        for pair in ahead.windows(2) {
            if self.read(root, pair[0], false, false)?.form != (Form::Diff { base: pair[1] }) {
                return Ok(());
            }
        }
        let last = *segment.last().expect("BUG: starts with one");
        let to = ahead[0];
        let back = delta(&self.state(last)?.entries, &self.state(to)?.entries);
        self.turn_around(root, &segment, to, back)
    }

    /// Whether version `id`'s difference leads to a whole version without coming back
    /// to `id` (whole files preferred along the way, as reading does).
    pub(super) fn diff_reaches_whole(
        &self,
        root: &mut Root,
        id: u64,
        files: &[(u64, bool)],
    ) -> Result<bool, Error> {
        let mut at = id;
        for _ in 0..=files.len() {
            let form = self.read(root, at, false, false)?.form;
            let Form::Diff { base } = form else {
                return Ok(false);
            };
            if base == id {
                return Ok(false);
            }
            if files.contains(&(base, true)) {
                return Ok(true);
            }
            if !files.contains(&(base, false)) {
                return Ok(false);
            }
            at = base;
        }
        Ok(false)
    }
}

/// The ids of the versions in `range`, once each (a version may have two files), in
/// order.
fn ids_in(files: &[(u64, bool)], range: impl std::ops::RangeBounds<u64>) -> Vec<u64> {
    let ids: BTreeSet<u64> = files
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| range.contains(id))
        .collect();
    ids.into_iter().collect()
}

/// `of` as the difference from `base` (both whole, in path order).
fn delta(of: &[EntryRecord], base: &[EntryRecord]) -> Delta {
    let mut out = Delta {
        was: Some(Vec::new()),
        ..Delta::default()
    };
    let was = out.was.as_mut().expect("BUG: made above");
    for row in engine::tree::zip_sorted_by(of.iter(), base.iter(), |e| &e.path, |e| &e.path) {
        match row {
            (Some(n), Some(o)) if alike(&n.as_ref(), &o.as_ref()) => {}
            (Some(n), Some(o)) => {
                out.put.push(n.clone());
                was.push(o.clone());
            }
            (Some(n), None) => out.put.push(n.clone()),
            (None, Some(o)) => {
                out.gone.push(o.path.clone());
                was.push(o.clone());
            }
            (None, None) => {}
        }
    }
    out
}

/// `later` (the difference from `dropped`) as the difference from `dropped`'s base:
/// `dropped` applied first, then `later`. The base's entries are known where both
/// differences know theirs.
fn compose(dropped: &Delta, later: &Delta) -> Delta {
    // What the later version holds at each path either names.
    let mut now: BTreeMap<&Path, Option<&EntryRecord>> = BTreeMap::new();
    for p in &dropped.gone {
        now.insert(p, None);
    }
    for e in &dropped.put {
        now.insert(&e.path, Some(e));
    }
    for p in &later.gone {
        now.insert(p, None);
    }
    for e in &later.put {
        now.insert(&e.path, Some(e));
    }
    let in_dropped: HashSet<&Path> = dropped
        .gone
        .iter()
        .map(PathBuf::as_path)
        .chain(dropped.put.iter().map(|e| e.path.as_path()))
        .collect();
    let index = |w: &Option<Vec<EntryRecord>>| -> Option<HashMap<PathBuf, EntryRecord>> {
        w.as_ref()
            .map(|w| w.iter().map(|e| (e.path.clone(), e.clone())).collect())
    };
    let (was_dropped, was_later) = (index(&dropped.was), index(&later.was));
    let known = was_dropped.is_some() && was_later.is_some();
    let mut out = Delta::default();
    let mut was = Vec::new();
    for (p, x) in now {
        // What the base holds there, where known.
        let b: Option<Option<&EntryRecord>> = if in_dropped.contains(p) {
            was_dropped.as_ref().map(|w| w.get(p))
        } else {
            was_later.as_ref().map(|w| w.get(p))
        };
        match (x, b) {
            (Some(e), Some(Some(w))) if alike(&e.as_ref(), &w.as_ref()) => {}
            (Some(e), b) => {
                out.put.push(e.clone());
                if let Some(Some(w)) = b {
                    was.push(w.clone());
                }
            }
            (None, Some(None)) => {}
            (None, b) => {
                out.gone.push(p.to_path_buf());
                if let Some(Some(w)) = b {
                    was.push(w.clone());
                }
            }
        }
    }
    out.put.sort_by(|x, y| path_order(&x.path, &y.path));
    out.gone.sort_by(|x, y| path_order(x, y));
    if known {
        was.sort_by(|x, y| path_order(&x.path, &y.path));
        out.was = Some(was);
    }
    out
}

impl History {
    /// What takes the state of `newer` to that of `older` (the version listed just
    /// before it): read from either one's difference where it is the difference from the
    /// other, else from the two states.
    pub(super) fn step_back(&self, older: &Listed, newer: &Listed) -> Result<Delta, Error> {
        let mut root = self.open()?;
        if older.form
            == (Form::Diff {
                base: newer.head.id,
            })
        {
            return Ok(self.read(&mut root, older.head.id, false, true)?.delta());
        }
        if newer.form
            == (Form::Diff {
                base: older.head.id,
            })
        {
            let d = self.read(&mut root, newer.head.id, false, true)?.delta();
            if let Some(back) = d.inverse() {
                return Ok(back);
            }
        }
        let (o, n) = (
            self.state(older.head.id)?.entries,
            self.state(newer.head.id)?.entries,
        );
        Ok(delta(&o, &n))
    }

    /// Hands `f` the entries version `older` holds that `newer` (listed just after it)
    /// does not hold the same: what the pass that made `newer` changed or removed. Read
    /// entry by entry from the difference between the two where there is one.
    pub fn held_before(
        &self,
        older: &Listed,
        newer: &Listed,
        mut f: impl FnMut(EntryRef<'_>),
    ) -> Result<(), Error> {
        let mut root = self.open()?;
        if older.form
            == (Form::Diff {
                base: newer.head.id,
            })
        {
            let mut r = self.reader(&mut root, older.head.id, false)?;
            while r.next_with(&mut f)?.is_some() {}
            return Ok(());
        }
        if newer.form
            == (Form::Diff {
                base: older.head.id,
            })
        {
            let mut r = self.reader(&mut root, newer.head.id, false)?;
            // The base's entries follow the difference's own.
            while r.next_with(|_| ())?.is_some() {}
            // (Without them, `f` is not called and the two states tell.)
            if r.take_was(&mut f)? {
                return Ok(());
            }
        }
        self.step_back(older, newer)?
            .put
            .iter()
            .for_each(|e| f(e.as_ref()));
        Ok(())
    }

    /// Walks every version, newest first, with the entries `keep` selects: the newest
    /// version read whole, each older one from the one after it and the difference
    /// between the two.
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
        for i in (0..listed.len() - 1).rev() {
            let d = self.step_back(&listed[i], &listed[i + 1])?;
            for p in d.gone {
                state.remove(&p);
            }
            for e in d.put.into_iter().filter(|e| keep(&e.path)) {
                state.insert(e.path.clone(), e);
            }
            f(&listed[i].head, &state);
        }
        Ok(())
    }
}
