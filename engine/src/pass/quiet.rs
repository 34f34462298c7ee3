//! A whole pass that finds nothing to do, found out before the trees are made whole.
//!
//! A whole pass reads both replicas compact (about 22 bytes an entry, without hashes;
//! a tree's entry and path take about 130). Most passes of a backup that runs every
//! hour find nothing to do: for those, the tool's planner is asked about both trees a
//! window of paths at a time ([`Quiet`]), each window made whole with the hashes the
//! stat caches hold, so that at a million files the pass holds a window, not both
//! trees. It is taken only where the answer is the one the whole pass would give, and
//! the record the same:
//!
//! - every file's hash is in its stat cache, and each cache proves its replica's
//!   directory SHA-256 (the replica is the one the cache was saved from: nothing to
//!   hash, and no cache to write);
//! - nothing is unknown, left over or in error on either side;
//! - the tool's planner finds nothing to do in any window (the tool says how it asks:
//!   [`super::Tool::quiet`]);
//! - each store's latest version is the replica as it is (no version to make).
//!
//! Anything else, and the pass goes on whole from the trees read compact: what this
//! walk did is only lost time, and no decision of it is kept.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Outcome, Tool};
use crate::fs::{FsTraits, Root};
use crate::run::runner::PassOutcome;
use crate::scan::cache::Matcher;
use crate::tree::compact::{CompactTree, Cursor};
use crate::tree::entries::ChunkList;
use crate::tree::{path_order, Entry, Kind, MTime, Tree};

use super::stages::Scanned;

/// Paths a window holds on the two sides together: a few megabytes whole.
const WINDOW: usize = if cfg!(test) { 3 } else { 32 * 1024 };

/// Both trees of a whole pass, read compact, handed to the tool's planner a window of
/// paths at a time ([`Quiet::next_window`]).
pub struct Quiet<'s> {
    trees: &'s [CompactTree; 2],
    roots: [Root; 2],
    fs: [FsTraits; 2],
    sides: [Side<'s>; 2],
    window: [Tree; 2],
    /// Every entry of both trees was handed out.
    done: bool,
    /// A file met has no hash in its stat cache: the walk stopped there.
    unhashed: bool,
}

/// One tree as the windows walk it.
struct Side<'s> {
    cursor: Cursor<'s>,
    /// The next entry, not yet in a window, and its path.
    next: Option<Entry>,
    path: PathBuf,
    matcher: Option<Matcher<File>>,
}

impl Side<'_> {
    /// Reads the next entry, unless one is waiting.
    fn fill(&mut self) {
        if self.next.is_some() {
            return;
        }
        if let Some((p, e)) = self.cursor.next_entry() {
            self.path.clear();
            self.path.push(p);
            self.next = Some(e);
        }
    }
}

/// A window of both trees (see [`Quiet::next_window`]), and the roots of both
/// replicas, open (to read what a stat does not show).
pub struct Window<'q> {
    pub trees: &'q mut [Tree; 2],
    pub roots: &'q mut [Root; 2],
}

impl<'s> Quiet<'s> {
    fn new(scanned: &'s Scanned, trees: &'s [CompactTree; 2]) -> Option<Quiet<'s>> {
        let [a, b] = &scanned.roots;
        let roots = [a.try_clone().ok()?, b.try_clone().ok()?];
        let matchers = scanned.replicas.each_ref().map(|r| r.cache_matcher());
        Some(Quiet::over(trees, matchers, roots, scanned.fs))
    }

    /// Both trees, walked beside the records of their stat caches.
    fn over(
        trees: &'s [CompactTree; 2],
        matchers: [Option<Matcher<File>>; 2],
        roots: [Root; 2],
        fs: [FsTraits; 2],
    ) -> Quiet<'s> {
        let [ma, mb] = matchers;
        let side = |i: usize, matcher| Side {
            cursor: trees[i].entries.cursor(),
            next: None,
            path: PathBuf::new(),
            matcher,
        };
        Quiet {
            trees,
            roots,
            fs,
            sides: [side(0, ma), side(1, mb)],
            window: Default::default(),
            done: false,
            unhashed: false,
        }
    }

    /// Both trees, read compact.
    pub fn trees(&self) -> &'s [CompactTree; 2] {
        self.trees
    }

    /// What each replica's filesystem can keep.
    pub fn fs(&self) -> [FsTraits; 2] {
        self.fs
    }

    /// The next window: both trees' entries from where the last window ended up to a
    /// path (the same on both sides), each file with the hash its stat cache holds,
    /// and everything else of both trees (root, excluded paths). `None` at the end, and
    /// from the first file whose hash is not cached (the pass then goes on whole).
    pub fn next_window(&mut self) -> Option<Window<'_>> {
        if self.done || self.unhashed {
            return None;
        }
        let mut lists: [ChunkList; 2] = Default::default();
        let mut n = 0;
        while n < WINDOW {
            for s in &mut self.sides {
                s.fill();
            }
            let [a, b] = &self.sides;
            // The side or sides whose next path comes first.
            let take = match (&a.next, &b.next) {
                (None, None) => {
                    self.done = true;
                    break;
                }
                (Some(_), None) => [true, false],
                (None, Some(_)) => [false, true],
                (Some(_), Some(_)) => {
                    let o = path_order(&a.path, &b.path);
                    [o.is_le(), o.is_ge()]
                }
            };
            for (side, s) in self.sides.iter_mut().enumerate() {
                if !take[side] {
                    continue;
                }
                let mut e = s.next.take().expect("BUG: a side taken has an entry");
                if e.kind == Kind::File {
                    e.hash = s.matcher.as_mut().and_then(|m| m.hash_of(&s.path, &e));
                    if e.hash.is_none() {
                        self.unhashed = true;
                        return None;
                    }
                }
                lists[side].push(&s.path, e);
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        for (side, list) in lists.into_iter().enumerate() {
            let t = &self.trees[side];
            self.window[side] = Tree {
                root: t.root.clone(),
                entries: list.into_entries(),
                unknown: t.unknown.clone(),
                excluded: t.excluded.clone(),
                leftovers: t.leftovers.clone(),
                specials: Vec::new(),
                errors: Vec::new(),
            };
        }
        Some(Window {
            trees: &mut self.window,
            roots: &mut self.roots,
        })
    }

    /// The directory SHA-256 of both replicas, each proven by its stat cache, once
    /// every window was handed out and every file's hash found; else `None`.
    fn proven(self) -> Option<[crate::tree::Digest; 2]> {
        if !self.done || self.unhashed {
            return None;
        }
        let [a, b] = self.sides;
        let proof = |s: Side, t: &CompactTree| s.matcher?.finish(!t.unknown.is_empty());
        Some([proof(a, &self.trees[0])?, proof(b, &self.trees[1])?])
    }
}

/// Ends pass `n` here if it is a whole pass that finds nothing to do (see the module's
/// text): records what such a pass records, logs its summary and gives its outcome.
/// `None`: the pass goes on (the trees read compact are left as they were).
pub(super) fn pass<T: Tool>(
    tool: &T,
    n: u64,
    scanned: &mut Scanned,
    base: &mut T::Base,
    scanned_at: MTime,
    started: Instant,
) -> Option<PassOutcome> {
    let settings = tool.settings();
    // A dry run prints its plan; --approve asks about it; a watch keeps the trees
    // whole for the next pass.
    if settings.dry_run || settings.approve || crate::run::watch::watching() {
        return None;
    }
    let trees = scanned.compact.take()?;
    let clean =
        |t: &CompactTree| t.errors.is_empty() && t.unknown.is_empty() && t.leftovers.is_empty();
    let found = if scanned.errors.is_empty() && trees.iter().all(clean) {
        quiet_pass(tool, n, scanned, &trees, base, scanned_at, started)
    } else {
        None
    };
    if found.is_none() {
        scanned.compact = Some(trees);
    }
    found
}

fn quiet_pass<T: Tool>(
    tool: &T,
    n: u64,
    scanned: &Scanned,
    trees: &[CompactTree; 2],
    base: &mut T::Base,
    scanned_at: MTime,
    started: Instant,
) -> Option<PassOutcome> {
    let t0 = Instant::now();
    let mut q = Quiet::new(scanned, trees)?;
    let extra = tool.quiet(&mut q, base);
    let shas = q.proven();
    log::debug!(
        "planned a window at a time: {} ({:.3}s)",
        if extra.is_none() {
            "something to do"
        } else if shas.is_none() {
            "nothing to do, but a stat cache does not prove its replica"
        } else {
            "nothing to do"
        },
        t0.elapsed().as_secs_f64()
    );
    let (mut extra, shas) = (extra?, shas?);
    if crate::run::signal::stop_requested() {
        return None;
    }
    // Each store's latest version must be the replica as it is.
    for (side, v) in tool.versions().into_iter().enumerate() {
        let Some(v) = v else { continue };
        let root: &Path = &scanned.replicas[side].root;
        match v.is_latest(tool.home(), root, &trees[side], shas[side]) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                // The whole pass records a version, and says what went wrong if it
                // cannot.
                log::debug!("store of {}: {e}", crate::names::display(root));
                return None;
            }
        }
    }
    log::debug!("nothing to do, found before the trees were made whole");
    let mut outcome = Outcome {
        n,
        scanned_at,
        dry_run: false,
        interrupted: false,
        flushed: true,
        failed: Vec::new(),
        counts: Default::default(),
        hashed_files: 0,
        errors: 0,
        seconds: 0.0,
        shas: shas.map(Some),
        versions: [None, None],
    };
    let mut errors = 0;
    if let Err(e) = tool.record(&mut extra, None, &outcome) {
        log::error!("{e}");
        errors += 1;
    }
    outcome.errors = errors;
    outcome.seconds = started.elapsed().as_secs_f64();
    super::log_summary(tool, &extra, &outcome);
    Some(PassOutcome {
        operations: 0,
        errors,
        interrupted: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::cache::StatCache;
    use crate::tree::{Digest, Entries};

    /// A file whose size, mtime and inode its path gives.
    fn file(p: &str) -> Entry {
        let n: u64 = p.bytes().map(u64::from).sum();
        let mut e = Entry::file(n, 0o644, MTime::new(1_000_000 + n as i64, 0), None);
        e.ino = 100 + n;
        e
    }

    /// A tree of `paths` (sorted here), each a file but those ending in `/`: folders.
    fn tree(paths: &[&str]) -> Tree {
        let mut v: Vec<(PathBuf, Entry)> = paths
            .iter()
            .map(|p| match p.strip_suffix('/') {
                Some(d) => (PathBuf::from(d), Entry::dir(0o755, MTime::new(5, 0))),
                None => (PathBuf::from(p), file(p)),
            })
            .collect();
        crate::tree::sort_by_path(&mut v);
        Tree {
            root: Some(Entry::dir(0o700, MTime::new(9, 0))),
            entries: Entries::from_sorted(v),
            excluded: [PathBuf::from("x/left out")].into_iter().collect(),
            ..Tree::default()
        }
    }

    /// `t` again (a tree's errors are not copied: these have none).
    fn copy(t: &Tree) -> Tree {
        Tree {
            root: t.root.clone(),
            entries: t.entries.clone(),
            unknown: t.unknown.clone(),
            excluded: t.excluded.clone(),
            leftovers: t.leftovers.clone(),
            specials: t.specials.clone(),
            errors: Vec::new(),
        }
    }

    fn hash_of(p: &Path) -> Digest {
        let mut bytes = p.as_os_str().as_encoded_bytes();
        crate::hash::hash_reader(&mut bytes).unwrap().0
    }

    /// `t` with every file's hash, its stat cache saved at `file` (for the root `root`),
    /// and the SHA-256 the cache holds.
    fn cached(t: &Tree, file: &Path, root: &Path) -> Digest {
        let mut hashed = copy(t);
        for (p, e) in hashed.entries.iter_mut() {
            if e.kind == Kind::File {
                e.hash = Some(hash_of(p));
            }
        }
        let sha = crate::hash::tree_sha256(&hashed).expect("every file hashed");
        StatCache::save_tree(file, root, &hashed, MTime::now(), Some(sha)).unwrap();
        sha
    }

    /// Every window of `a` and `b`, each side's paths and hashes; and what `proven`
    /// gave after.
    fn windows(
        a: &Tree,
        b: &Tree,
        caches: [&Path; 2],
        root: &Path,
    ) -> (Vec<[Tree; 2]>, Option<[Digest; 2]>) {
        let trees = [CompactTree::new(copy(a)), CompactTree::new(copy(b))];
        let matchers = caches.map(|c| Matcher::open(c, root));
        let roots = [Root::open(root).unwrap(), Root::open(root).unwrap()];
        let mut q = Quiet::over(&trees, matchers, roots, Default::default());
        let mut out = Vec::new();
        while let Some(w) = q.next_window() {
            out.push(w.trees.each_ref().map(copy));
        }
        (out, q.proven())
    }

    fn paths(t: &Tree) -> Vec<PathBuf> {
        t.entries.iter().map(|(p, _)| p.to_path_buf()).collect()
    }

    #[test]
    fn windows_cut_both_trees_at_the_same_paths_and_give_the_cached_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (ca, cb) = (root.join("a.cache"), root.join("b.cache"));
        let a = tree(&["d/", "d/1", "d/2", "d/3", "e", "f/", "f/1", "g", "h", "x/"]);
        let b = tree(&[
            "d/", "d/0", "d/2", "d-1", "e", "f/", "g", "i", "j", "k", "x/",
        ]);
        let (sa, sb) = (cached(&a, &ca, root), cached(&b, &cb, root));
        let (ws, proven) = windows(&a, &b, [&ca, &cb], root);
        assert!(ws.len() > 3, "windows of a few paths: {}", ws.len());
        assert_eq!(proven, Some([sa, sb]), "both caches prove their trees");
        for (side, t) in [&a, &b].into_iter().enumerate() {
            let walked: Vec<PathBuf> = ws.iter().flat_map(|w| paths(&w[side])).collect();
            assert_eq!(walked, paths(t), "side {side}: every entry once, in order");
            for w in &ws {
                assert_eq!(w[side].root, t.root);
                assert_eq!(w[side].excluded, t.excluded);
                for (p, e) in w[side].entries.iter() {
                    let want = (e.kind == Kind::File).then(|| hash_of(p));
                    assert_eq!(e.hash, want, "{p:?}: the cached hash");
                }
            }
        }
        // A path in one window on either side sorts before every path of the next.
        for pair in ws.windows(2) {
            let last = pair[0]
                .iter()
                .flat_map(paths)
                .max_by(|x, y| path_order(x, y));
            let first = pair[1]
                .iter()
                .flat_map(paths)
                .min_by(|x, y| path_order(x, y));
            let (last, first) = (last.unwrap(), first.unwrap());
            assert!(path_order(&last, &first).is_lt(), "{last:?} then {first:?}");
        }
    }

    #[test]
    fn a_file_not_as_cached_stops_the_walk_and_proves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (ca, cb) = (root.join("a.cache"), root.join("b.cache"));
        let a = tree(&["a", "b", "c", "d", "e", "f", "g"]);
        cached(&a, &ca, root);
        cached(&a, &cb, root);
        // Written since the cache was saved: its mtime moved.
        let mut changed = copy(&a);
        changed.entries.get_mut(Path::new("f")).unwrap().mtime = MTime::new(7, 7);
        let (ws, proven) = windows(&a, &changed, [&ca, &cb], root);
        assert_eq!(proven, None);
        let seen: Vec<PathBuf> = ws.iter().flat_map(|w| paths(&w[1])).collect();
        assert!(
            !seen.contains(&PathBuf::from("f")),
            "no window holds a file without its hash: {seen:?}"
        );
        // No cache at all: not one window.
        let none = root.join("none");
        let (ws, proven) = windows(&a, &a, [&none, &none], root);
        assert!(ws.is_empty() && proven.is_none());
        // A cache that holds a file the tree does not: every window, but no proof.
        let fewer = tree(&["a", "b", "c", "e", "f", "g"]);
        let (ws, proven) = windows(&fewer, &a, [&ca, &cb], root);
        assert!(!ws.is_empty());
        assert_eq!(proven, None, "a record of a path gone proves nothing");
        // The same trees and caches: proven.
        assert!(windows(&a, &a, [&ca, &cb], root).1.is_some());
    }
}
