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
//! walk did is only lost time, and no decision of it is kept. Where the tool plans
//! parts, the walk goes on past what there is to do, and gathers the part of both
//! trees the pass then plans (see [`super::narrow`]).
//!
//! A pass reads its replicas compact only where it may end here ([`may_end_early`]):
//! where a stat cache is missing or proves nothing the pass cannot, and where both are
//! small (fewer than [`COMPACT_FROM`] files) the trees are small too, and a scan
//! straight into trees is faster than one that decodes them afterwards.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

use super::narrow::Collect;
pub use super::narrow::Keep;
use super::{Outcome, Tool};
use crate::fs::{FsTraits, Root};
use crate::run::runner::PassOutcome;
use crate::scan::cache::Matcher;
use crate::tree::compact::{CompactTree, Cursor};
use crate::tree::entries::ChunkList;
use crate::tree::{path_order, Entry, Kind, MTime, Tree};

use super::stages::Scanned;

/// The fewest files a stat cache holds for its replica to be read compact (see
/// [`may_end_early`]): below it both trees whole take a few tens of megabytes.
/// `TWOWAY_COMPACT_FROM` sets another number (the tests read small trees compact).
pub const COMPACT_FROM: usize = 100_000;

/// Whether a whole pass of `tool` may end before its trees are made whole, as far as
/// can be told before the replicas are read: not a dry run (it prints its plan), not
/// `--approve` (it asks about the plan), not under `--watch` (it keeps the trees whole
/// for the next pass), not `--checksum` (no hash is taken from a cache), and each stat
/// cache holds a directory SHA-256 and at least [`COMPACT_FROM`] files.
pub(super) fn may_end_early<T: Tool>(tool: &T) -> bool {
    let settings = tool.settings();
    let from = count_from_env("TWOWAY_COMPACT_FROM", 0).unwrap_or(COMPACT_FROM);
    !(settings.dry_run || settings.approve || settings.checksum || crate::run::watch::watching())
        && tool
            .replicas()
            .iter()
            .all(|r| r.cache_proves_at_least(from))
}

/// Paths a window holds on the two sides together, at the least: about 100 KiB whole.
/// A window's lists stay below the size from which the allocator maps each block on its
/// own (128 KiB, see `run::alloc_tune`): a window of 32,768 paths mapped and gave back
/// megabytes each time, and the page faults took a third of the walk at a million files.
const WINDOW: usize = if cfg!(test) { 3 } else { 1024 };

/// [`WINDOW`], or the number `TWOWAY_WINDOW` gives (the tests' trees are a few
/// entries: they set 4, so that their passes walk many windows).
fn window_size() -> usize {
    count_from_env("TWOWAY_WINDOW", 1).unwrap_or(WINDOW)
}

/// The number the environment variable `var` gives, if it gives one of at least `min`
/// (the tests' settings of the pipeline's sizes).
pub(super) fn count_from_env(var: &str, min: usize) -> Option<usize> {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= min)
}

/// Both trees of a whole pass, read compact, handed to the tool's planner a window of
/// paths at a time ([`Quiet::next_window`]). The windows are cut on a thread of their
/// own ([`Walk`]); each takes its hashes ([`Cached`]) and is planned on this one.
pub struct Quiet<'s> {
    trees: &'s [CompactTree; 2],
    roots: [Root; 2],
    fs: [FsTraits; 2],
    windows: Receiver<[Tree; 2]>,
    cached: Cached,
    window: [Tree; 2],
    /// The part with something to do, gathered as the windows go by, for a tool that
    /// plans parts (see [`super::narrow`]); `None` once it is too big.
    collect: Option<Collect>,
    /// What the tool found something to do at in the window handed out last.
    keep: Keep,
    /// The tool found something to do in a window.
    found: bool,
}

/// A window of both trees (see [`Quiet::next_window`]), and the roots of both
/// replicas, open (to read what a stat does not show).
pub struct Window<'q> {
    pub trees: &'q mut [Tree; 2],
    pub roots: &'q mut [Root; 2],
}

impl<'s> Quiet<'s> {
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
        self.settle();
        if self.cached.unhashed && self.collect.is_none() {
            return None;
        }
        self.window = self.windows.recv().ok()?;
        if self.collect.is_some() {
            // A file whose hash is not cached is to be hashed: it goes into the part
            // to plan (on both sides), and the window is planned without its hash.
            let mut unhashed = Vec::new();
            if !self.cached.fill(&mut self.window, Some(&mut unhashed)) {
                self.something_to_do_at(Keep::Paths {
                    at: unhashed,
                    under: Vec::new(),
                });
            }
        } else if !self.cached.fill(&mut self.window, None) {
            return None;
        }
        Some(Window {
            trees: &mut self.window,
            roots: &mut self.roots,
        })
    }

    /// The tool found something to do in the window handed out last, at paths it
    /// cannot tell: the whole window goes into the part to plan. True if the walk goes
    /// on, gathering that part (see [`super::narrow`]); false if the pass is to go on
    /// whole (the tool does not plan parts, or the part grew too big), and the tool's
    /// `quiet` gives `None`.
    pub fn something_to_do(&mut self) -> bool {
        self.something_to_do_at(Keep::All)
    }

    /// [`Quiet::something_to_do`] at `paths` of the window handed out last: the
    /// entries at and under them go into the part to plan.
    pub fn something_to_do_at(&mut self, paths: Keep) -> bool {
        self.keep.add(paths);
        self.found = true;
        self.collect.is_some()
    }

    /// The tool found something to do at no entry of the window handed out last: at
    /// the root itself (its metadata), which every window holds and the part planned
    /// holds whatever it is, or at a path only the tool's own record holds (twoway's
    /// sync state: a path gone from both replicas), which the tool keeps itself. True
    /// if the walk goes on, as [`Quiet::something_to_do`].
    pub fn something_to_do_elsewhere(&mut self) -> bool {
        self.found = true;
        self.collect.is_some()
    }

    /// Hands the window walked last to the part being gathered.
    fn settle(&mut self) {
        let keep = std::mem::take(&mut self.keep);
        if let Some(c) = &mut self.collect {
            if !c.take(&self.window, keep) {
                self.collect = None;
            }
        }
    }
}

/// Cuts the windows [`Quiet`] hands out from both trees, without their hashes.
struct Walk<'s> {
    trees: &'s [CompactTree; 2],
    sides: [Side<'s>; 2],
    /// Paths a window holds on the two sides together: [`WINDOW`], or more where the
    /// trees have many paths excluded (each window holds them all), so that copying
    /// them is a small part of a window's work.
    size: usize,
    /// Every entry of both trees was handed out.
    done: bool,
}

/// One tree as the windows walk it.
struct Side<'s> {
    cursor: Cursor<'s>,
    /// The next entry, not yet in a window, and its path.
    next: Option<Entry>,
    path: PathBuf,
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

impl<'s> Walk<'s> {
    fn new(trees: &'s [CompactTree; 2]) -> Walk<'s> {
        let side = |i: usize| Side {
            cursor: trees[i].entries.cursor(),
            next: None,
            path: PathBuf::new(),
        };
        let excluded: usize = trees.iter().map(|t| t.excluded.len()).sum();
        Walk {
            trees,
            sides: [side(0), side(1)],
            size: window_size().max(8 * excluded),
            done: false,
        }
    }

    /// The next window (see [`Quiet::next_window`]), without hashes: its paths taken
    /// from both trees in order.
    fn next_window(&mut self) -> Option<[Tree; 2]> {
        if self.done {
            return None;
        }
        let mut lists: [ChunkList; 2] = Default::default();
        let mut n = 0;
        while n < self.size {
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
                if take[side] {
                    let e = s.next.take().expect("BUG: a side taken has an entry");
                    lists[side].push(&s.path, e);
                    n += 1;
                }
            }
        }
        if n == 0 {
            return None;
        }
        let [la, lb] = lists;
        let [ta, tb] = self.trees;
        Some([ta.part(la.into_entries()), tb.part(lb.into_entries())])
    }
}

/// Both stat caches' records, met with the files of both trees window by window.
struct Cached {
    matchers: [Option<Matcher<File>>; 2],
    /// A file met has no hash in its stat cache.
    unhashed: bool,
}

impl Cached {
    /// Gives each file of the window `w` the hash its stat cache holds; false (and
    /// from then on) if one is not cached. With `unhashed`, every file is given its
    /// hash even after one was not (the walk goes on), and those without are listed
    /// there.
    fn fill(&mut self, w: &mut [Tree; 2], mut unhashed: Option<&mut Vec<PathBuf>>) -> bool {
        let mut hashed = true;
        for (t, m) in w.iter_mut().zip(&mut self.matchers) {
            for (p, e) in t.entries.iter_mut() {
                if e.kind != Kind::File {
                    continue;
                }
                e.hash = m.as_mut().and_then(|m| m.hash_of(p, e));
                if e.hash.is_none() {
                    self.unhashed = true;
                    hashed = false;
                    match &mut unhashed {
                        Some(u) => u.push(p.to_path_buf()),
                        None => return false,
                    }
                }
            }
        }
        hashed
    }

    /// The directory SHA-256 of each of `trees` its stat cache proves, once every
    /// window was walked (`walked`); before, each file of `parts` (the part gathered to
    /// plan, if any) without a hash takes that of a path gone with its inode, size and
    /// mtime (a file renamed: see [`Matcher::fill_moved`]).
    fn proofs(
        self,
        trees: &[CompactTree; 2],
        walked: bool,
        parts: Option<&mut [Tree; 2]>,
    ) -> [Option<crate::tree::Digest>; 2] {
        if !walked {
            return [None, None];
        }
        let [mut a, mut b] = self.matchers;
        if let Some([pa, pb]) = parts {
            for (m, t) in [(&mut a, pa), (&mut b, pb)] {
                if let Some(m) = m {
                    m.fill_moved(t);
                }
            }
        }
        let proof = |m: Option<Matcher<File>>, t: &CompactTree| m?.finish(!t.unknown.is_empty());
        [proof(a, &trees[0]), proof(b, &trees[1])]
    }
}

/// What [`pass`] made of a pass read compact.
pub(super) enum Found {
    /// Nothing to do: the pass ended here.
    Ended(PassOutcome),
    /// Something to do in a part only: [`Scanned::trees`] are that part, and
    /// [`Scanned::narrow`] holds the rest (see [`super::narrow`]).
    Narrowed,
    /// The pass goes on whole (the trees read compact are left as they were).
    Whole,
}

/// Ends pass `n` here if it is a whole pass that finds nothing to do (see the module's
/// text): records what such a pass records, logs its summary and gives its outcome.
/// Or narrows it to the part with something to do, where the tool plans parts.
pub(super) fn pass<T: Tool>(
    tool: &T,
    n: u64,
    scanned: &mut Scanned,
    base: &mut T::Base,
    scanned_at: MTime,
    started: Instant,
) -> Found {
    // Read compact only where it may end here (see `may_end_early`).
    // (Or read compact to fill a replica in turns: a replica without a stat cache.)
    if scanned.fills {
        return Found::Whole;
    }
    let Some(trees) = scanned.compact.take() else {
        return Found::Whole;
    };
    let clean =
        |t: &CompactTree| t.errors.is_empty() && t.unknown.is_empty() && t.leftovers.is_empty();
    let walked = if scanned.errors.is_empty() && trees.iter().all(clean) {
        quiet_pass(tool, n, scanned, &trees, base, scanned_at, started)
    } else {
        Walked::Whole
    };
    match walked {
        Walked::Ended(outcome) => Found::Ended(outcome),
        Walked::Part(part) => {
            // The caches hold the hashes of everything outside the part: opened now,
            // they are read as they are even once the pass saves new ones.
            let [ca, cb] = scanned.replicas.each_ref().map(|r| r.open_cache());
            let (Some(ca), Some(cb)) = (ca, cb) else {
                scanned.compact = Some(trees);
                return Found::Whole;
            };
            let Part {
                trees: parts,
                covered,
                shas,
                files,
            } = *part;
            scanned.trees = parts;
            scanned.cached_sha = shas;
            scanned.narrow = Some(super::narrow::Narrow {
                compact: trees,
                covered,
                caches: [ca, cb],
                heads: Default::default(),
                files,
                hashed: true,
            });
            Found::Narrowed
        }
        Walked::Whole => {
            scanned.compact = Some(trees);
            Found::Whole
        }
    }
}

/// The part of both trees to plan, the paths it holds, the directory SHA-256 each
/// stat cache proves, the files of each replica.
struct Part {
    trees: [Tree; 2],
    covered: [crate::tree::compact::Compact; 2],
    shas: [Option<crate::tree::Digest>; 2],
    files: [usize; 2],
}

/// What the walk of [`quiet_pass`] found.
enum Walked {
    Ended(PassOutcome),
    Part(Box<Part>),
    Whole,
}

fn quiet_pass<T: Tool>(
    tool: &T,
    n: u64,
    scanned: &Scanned,
    trees: &[CompactTree; 2],
    base: &mut T::Base,
    scanned_at: MTime,
    started: Instant,
) -> Walked {
    let t0 = Instant::now();
    let [ra, rb] = &scanned.roots;
    let (Ok(a), Ok(b)) = (ra.try_clone(), rb.try_clone()) else {
        return Walked::Whole;
    };
    let roots = [a, b];
    let narrows = tool.plans_parts();
    let matchers = scanned
        .replicas
        .each_ref()
        .map(|r| r.cache_matcher(narrows));
    let (extra, found, walked, cached, collect) = std::thread::scope(|s| {
        // A few windows ahead at most.
        let (put, windows) = sync_channel(4);
        let mut walk = Walk::new(trees);
        let walking = std::thread::Builder::new()
            .name("windows".into())
            .spawn_scoped(s, move || {
                while let Some(w) = walk.next_window() {
                    // The planner found something to do, and stopped asking.
                    if put.send(w).is_err() {
                        return false;
                    }
                }
                walk.done
            });
        let cached = Cached {
            matchers,
            unhashed: false,
        };
        // No thread to be had: the pass goes on whole.
        let Ok(walking) = walking else {
            return (None, true, false, cached, None);
        };
        let entries = trees.iter().map(CompactTree::len).sum();
        let mut q = Quiet {
            trees,
            roots,
            fs: scanned.fs,
            windows,
            cached,
            window: Default::default(),
            collect: narrows.then(|| Collect::new(entries)),
            keep: Keep::Nothing,
            found: false,
        };
        let extra = tool.quiet(&mut q, base);
        let Quiet {
            windows,
            cached,
            collect,
            found,
            ..
        } = q;
        // Stops the walk if the planner stopped first.
        drop(windows);
        let walked = walking.join().expect("BUG: the walk does not panic");
        (extra, found, walked, cached, collect)
    });
    let found = found || cached.unhashed;
    if let (Some(_), true, true, Some(c)) = (&extra, found, walked, collect) {
        return narrowed(trees, cached, c, t0);
    }
    let shas = match cached.proofs(trees, walked, None) {
        [Some(a), Some(b)] if !found => Some([a, b]),
        _ => None,
    };
    log::debug!(
        "planned a window at a time: {} ({:.3}s)",
        match (&extra, &shas) {
            (None, _) => "something to do",
            (Some(_), None) =>
                "not sure (a file's hash is not cached, or a cache does not prove its replica)",
            (Some(_), Some(_)) => "nothing to do",
        },
        t0.elapsed().as_secs_f64()
    );
    let (Some(mut extra), Some(shas)) = (extra, shas) else {
        return Walked::Whole;
    };
    if crate::run::signal::stop_requested() || !stores_hold(tool, scanned, trees, shas.map(Some)) {
        return Walked::Whole;
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
    Walked::Ended(PassOutcome {
        operations: 0,
        errors,
        interrupted: false,
    })
}

/// Whether each store's latest version is its replica as read (`trees`), proven by
/// its stat cache (`shas`).
fn stores_hold<T: Tool>(
    tool: &T,
    scanned: &Scanned,
    trees: &[CompactTree; 2],
    shas: [Option<crate::tree::Digest>; 2],
) -> bool {
    for (side, v) in tool.versions().into_iter().enumerate() {
        let Some(v) = v else { continue };
        let root: &Path = &scanned.replicas[side].root;
        let Some(sha) = shas[side] else { return false };
        match v.is_latest(tool.home(), root, &trees[side], sha) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                // The whole pass records a version, and says what went wrong if it
                // cannot.
                log::debug!("store of {}: {e}", crate::names::display(root));
                return false;
            }
        }
    }
    true
}

/// The part of both trees with something to do, gathered by the walk (`collect`), as
/// the pass is to plan it (see [`super::narrow`]); or the pass goes on whole, when it
/// is to stop.
fn narrowed(trees: &[CompactTree; 2], cached: Cached, collect: Collect, t0: Instant) -> Walked {
    let (files, windows) = (collect.files, collect.windows);
    let (mut parts, covered) = collect.into_parts(trees);
    let shas = cached.proofs(trees, true, Some(&mut parts));
    if crate::run::signal::stop_requested() {
        return Walked::Whole;
    }
    log::debug!(
        "planned a window at a time: something to do in {windows} windows, planning {} and \
         {} entries ({:.3}s, {})",
        parts[0].entries.len(),
        parts[1].entries.len(),
        t0.elapsed().as_secs_f64(),
        crate::run::alloc_tune::resident()
    );
    Walked::Part(Box::new(Part {
        trees: parts,
        covered,
        shas,
        files,
    }))
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
        let mut cached = Cached {
            matchers: caches.map(|c| Matcher::open(c, root)),
            unhashed: false,
        };
        let mut walk = Walk::new(&trees);
        let mut out = Vec::new();
        while let Some(mut w) = walk.next_window() {
            if !cached.fill(&mut w, None) {
                break;
            }
            out.push(w);
        }
        let unhashed = cached.unhashed;
        let proven = match cached.proofs(&trees, walk.done, None) {
            [Some(a), Some(b)] if !unhashed => Some([a, b]),
            _ => None,
        };
        (out, proven)
    }

    fn paths(t: &Tree) -> Vec<PathBuf> {
        t.entries.iter().map(|(p, _)| p.to_path_buf()).collect()
    }

    #[test]
    fn windows_cut_both_trees_at_the_same_paths_and_give_the_cached_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (ca, cb) = (root.join("a.cache"), root.join("b.cache"));
        // Windows hold 16 paths here (8 for each path excluded): many paths, some on
        // one side only.
        let many: Vec<String> = (0..60).map(|i| format!("m/{i:02}")).collect();
        let mut pa = vec![
            "d/", "d/1", "d/2", "d/3", "e", "f/", "f/1", "g", "h", "m/", "x/",
        ];
        let mut pb = vec![
            "d/", "d/0", "d/2", "d-1", "e", "f/", "g", "i", "j", "k", "m/", "x/",
        ];
        pa.extend(
            many.iter()
                .filter(|m| !m.ends_with('3'))
                .map(String::as_str),
        );
        pb.extend(
            many.iter()
                .filter(|m| !m.ends_with('7'))
                .map(String::as_str),
        );
        let (a, b) = (tree(&pa), tree(&pb));
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

    #[test]
    fn the_part_gathered_is_the_windows_with_something_to_do_and_the_folders_above() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (ca, cb) = (root.join("a.cache"), root.join("b.cache"));
        let many: Vec<String> = (0..40).map(|i| format!("m/n/{i:02}")).collect();
        let mut pa = vec!["d/", "d/1", "m/", "m/n/", "z"];
        let mut pb = vec!["d/", "d/1", "m/", "m/n/", "y/", "y/1", "z"];
        pa.extend(many.iter().map(String::as_str));
        // B lacks one file deep in the folder, which is walked over several windows.
        pb.extend(
            many.iter()
                .filter(|m| m.as_str() != "m/n/27")
                .map(String::as_str),
        );
        let (a, b) = (tree(&pa), tree(&pb));
        cached(&a, &ca, root);
        cached(&b, &cb, root);
        let (ws, _) = windows(&a, &b, [&ca, &cb], root);
        let holds = |w: &[Tree; 2], p: &str| w.iter().any(|t| t.entries.contains_key(Path::new(p)));
        let dirty = |w: &[Tree; 2]| holds(w, "m/n/27") || holds(w, "y/1");
        assert!(
            ws.iter().filter(|w| dirty(w)).all(|w| !holds(w, "m/n")),
            "the folders above m/n/27 lie in a window with nothing to do"
        );
        // The window of y/1 kept whole, that of m/n/27 only where it lacks a file.
        let keep = |w: &[Tree; 2]| match (holds(w, "y/1"), holds(w, "m/n/27")) {
            (true, _) => Keep::All,
            (false, true) => Keep::Paths {
                at: vec![PathBuf::from("m/n/27")],
                under: Vec::new(),
            },
            (false, false) => Keep::Nothing,
        };
        let kept = |w: &[Tree; 2], side: usize| match keep(w) {
            Keep::All => paths(&w[side]),
            Keep::Paths { .. } => paths(&w[side])
                .into_iter()
                .filter(|p| p == Path::new("m/n/27"))
                .collect(),
            Keep::Nothing => Vec::new(),
        };
        assert!(!ws.iter().any(|w| holds(w, "y/1") && holds(w, "m/n/27")));
        let mut c = Collect::new(0);
        for w in &ws {
            assert!(c.take(w, keep(w)));
        }
        assert_eq!(c.files, [a.file_count(), b.file_count()]);
        let trees = [CompactTree::new(copy(&a)), CompactTree::new(copy(&b))];
        let (parts, covered) = c.into_parts(&trees);
        for side in 0..2 {
            let mut want: Vec<PathBuf> = ws.iter().flat_map(|w| kept(w, side)).collect();
            // The folders above an entry of the part on either side, where this side
            // has them.
            let mut above: Vec<PathBuf> = ws
                .iter()
                .flat_map(|w| [kept(w, 0), kept(w, 1)].concat())
                .flat_map(|p| {
                    p.ancestors()
                        .skip(1)
                        .map(Path::to_path_buf)
                        .collect::<Vec<_>>()
                })
                .filter(|p| [&a, &b][side].entries.contains_key(p))
                .collect();
            assert!(above.contains(&PathBuf::from("m/n")));
            want.append(&mut above);
            crate::tree::sort_by_path_of(&mut want, |p| p.as_path());
            want.dedup();
            assert_eq!(paths(&parts[side]), want, "side {side}");
            let mut held = Vec::new();
            let mut cur = covered[side].cursor();
            while let Some((p, _)) = cur.next_entry() {
                held.push(p.to_path_buf());
            }
            assert_eq!(held, want, "side {side}: the paths covered");
            assert_eq!(parts[side].root, trees[side].root);
        }
        // B's y/1 window is in the part, and A, which has no y, holds its neighbours.
        assert!(paths(&parts[1]).contains(&PathBuf::from("y/1")));
    }
}
