//! A replica root as a pass sees it: scanned, its hashes taken from its stat cache (or
//! all re-hashed with `--checksum`), the rest hashed, and the cache saved afterwards.
//! Shared by every pass tool so there is one way to read a replica.

use std::path::{Path, PathBuf};

use crate::error::Refusal;
use crate::run::home::DataHome;
use crate::scan::cache::{self, Hashed, StatCache};
use crate::scan::{self, ScanOptions};
use crate::tree::compact::CompactTree;
use crate::tree::{Digest, Entry, Tree};

/// One replica root and its stat cache.
#[derive(Debug, Clone)]
pub struct Replica {
    pub root: PathBuf,
    pub label: &'static str,
    cache_file: PathBuf,
}

impl Replica {
    pub fn new(root: &Path, label: &'static str, home: &DataHome) -> Replica {
        Replica {
            root: root.to_path_buf(),
            label,
            cache_file: home.cache_file(root),
        }
    }

    /// What a scan of this replica found, with its errors and skipped special files
    /// logged; a root that cannot be read refuses the pass.
    fn scanned<T: Found>(&self, tree: Result<T, crate::error::Error>) -> Result<T, Refusal> {
        let tree = tree.map_err(|e| Refusal::new(format!("{} cannot be read: {e}", self.label)))?;
        let (errors, specials) = tree.found();
        for e in errors {
            log::error!(target: crate::error::FILE_ERROR, "{e}");
        }
        for p in specials {
            log::warn!(
                "skipping special file {} in {} (fifo, socket or device)",
                crate::names::display(p),
                self.label
            );
        }
        Ok(tree)
    }

    /// `tree`, read compact by [`read_both`], whole, with the hashes its stat cache
    /// knows (none with `checksum`); and the directory SHA-256 the cache proves.
    pub fn whole(&self, tree: CompactTree, checksum: bool) -> (Tree, Option<Digest>) {
        let mut tree = tree.into_tree();
        let sha = self.load_hashes(&mut tree, checksum);
        (tree, sha)
    }

    /// Whether this replica's stat cache holds a directory SHA-256 and at least `files`
    /// files: only then may a whole pass that reads the replica compact end before
    /// its trees are whole (see `crate::pass::quiet`).
    pub fn cache_proves_at_least(&self, files: usize) -> bool {
        StatCache::proving_count(&self.cache_file, &self.root).is_some_and(|n| n >= files)
    }

    /// The stat cache's records, to be met with the files of a tree read in path
    /// order (with `gone`, those of paths that are gone held by inode); `None` if there
    /// is no cache of this replica.
    pub fn cache_matcher(&self, gone: bool) -> Option<cache::Matcher<std::fs::File>> {
        if gone {
            cache::Matcher::keeping_gone(self.open_cache()?, &self.root)
        } else {
            cache::Matcher::open(&self.cache_file, &self.root)
        }
    }

    /// The stat cache's file, open: read as it is now even once a new cache replaces
    /// it.
    pub fn open_cache(&self) -> Option<std::fs::File> {
        std::fs::File::open(&self.cache_file).ok()
    }

    /// Reads `dirs` of this replica again into `held`, the tree a pass left (read at
    /// `held_at`): see [`crate::scan::rescan`]. Hashes come from `held`, not the cache.
    /// Also says what it read, and whether anything there differs from `held`.
    pub fn rescan(
        &self,
        opts: &ScanOptions,
        held: Tree,
        held_at: crate::tree::MTime,
        dirs: &std::collections::BTreeSet<PathBuf>,
    ) -> Result<(Tree, scan::rescan::Rescanned), Refusal> {
        let t0 = std::time::Instant::now();
        let read = scan::rescan::rescan(&self.root, opts, held, held_at, dirs);
        let (tree, stats) = match read {
            Ok((t, stats)) => (Ok(t), stats),
            Err(e) => (Err(e), Default::default()),
        };
        let tree = self.scanned(tree)?;
        log::debug!(
            "{}: read {} folders again ({} entries, {} renamed) in {:.4}s",
            self.label,
            stats.dirs,
            stats.entries,
            stats.moved,
            t0.elapsed().as_secs_f64()
        );
        Ok((tree, stats))
    }

    /// Takes known hashes from the stat cache (none with `checksum`); returns the
    /// directory SHA-256 the cache proves (see [`cache::Filled::sha`]).
    pub fn load_hashes(&self, tree: &mut Tree, checksum: bool) -> Option<Digest> {
        if checksum {
            return None;
        }
        StatCache::fill_from_file(&self.cache_file, &self.root, tree).sha
    }

    /// Hashes every file whose hash is still unknown; failures are logged and returned.
    pub fn hash_rest(&self, tree: &mut Tree) -> Hashed {
        let hashed = cache::hash_missing(&self.root, tree);
        for e in &hashed.errors {
            log::error!(target: crate::error::FILE_ERROR, "{e}");
        }
        hashed
    }

    /// Hashes the files `wanted` picks whose hash is still unknown.
    pub fn hash_where(&self, tree: &mut Tree, wanted: impl FnMut(&Path, &Entry) -> bool) -> Hashed {
        let hashed = cache::hash_missing_where(&self.root, tree, wanted);
        for e in &hashed.errors {
            log::error!(target: crate::error::FILE_ERROR, "{e}");
        }
        hashed
    }

    /// Saves the stat cache of `tree`, the replica after the pass (held whole or not), whose directory
    /// SHA-256 is `sha` (`None` if a file's hash is unknown). `proven`: the SHA-256 the
    /// stat cache proved when the tree was read, passed only if the tree has not changed
    /// since; the cache then holds this very tree and is left as it is.
    pub fn keep_cache(
        &self,
        tree: crate::scan::after::After<'_>,
        scanned_at: crate::tree::MTime,
        proven: Option<Digest>,
        sha: Option<Digest>,
    ) {
        if proven.is_some() {
            return;
        }
        // An unchanged cache is not written again: what would be written is compared
        // with the file, a block at a time.
        if let Err(e) = StatCache::save_after(&self.cache_file, &self.root, tree, scanned_at, sha) {
            log::warn!("stat cache of {} not saved: {e}", self.label);
        }
    }
}

/// What a scan found besides the entries (its errors and skipped special files), and
/// how it holds them.
trait Found {
    fn found(&self) -> (&[crate::error::Error], &[PathBuf]);
    fn count(&self) -> usize;
    /// How two trees of this form hold their entries, for a debug line.
    fn held(a: &Self, b: &Self) -> String;
}

impl Found for Tree {
    fn found(&self) -> (&[crate::error::Error], &[PathBuf]) {
        (&self.errors, &self.specials)
    }

    fn count(&self) -> usize {
        self.entries.len()
    }

    fn held(_: &Self, _: &Self) -> String {
        "whole".to_string()
    }
}

impl Found for CompactTree {
    fn found(&self) -> (&[crate::error::Error], &[PathBuf]) {
        (&self.errors, &self.specials)
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn held(a: &Self, b: &Self) -> String {
        format!(
            "held compact in {:.1} and {:.1} MB",
            a.entries.heap_bytes() as f64 / 1e6,
            b.entries.heap_bytes() as f64 / 1e6
        )
    }
}

/// Reads two replicas at once, compact: both scanned by one set of threads. Their
/// hashes are not taken yet (see [`Replica::whole`] and [`Replica::cache_matcher`]).
pub fn read_both(
    a: (&Replica, &ScanOptions),
    b: (&Replica, &ScanOptions),
) -> Result<[CompactTree; 2], Refusal> {
    read_two(a, b, scan::scan_many)
}

/// [`read_both`], whole: for a pass that cannot end before its trees are whole. Their
/// hashes are not taken yet (see [`Replica::load_hashes`]).
pub fn read_both_whole(
    a: (&Replica, &ScanOptions),
    b: (&Replica, &ScanOptions),
) -> Result<[Tree; 2], Refusal> {
    read_two(a, b, scan::scan_many_whole)
}

/// A scan of several roots at once: [`scan::scan_many`] or [`scan::scan_many_whole`].
type ScanMany<T> = fn(&[(&Path, &ScanOptions)]) -> Vec<Result<T, crate::error::Error>>;

/// Two replicas read at once by `scan`, what each found logged.
fn read_two<T: Found>(
    a: (&Replica, &ScanOptions),
    b: (&Replica, &ScanOptions),
    scan: ScanMany<T>,
) -> Result<[T; 2], Refusal> {
    let t0 = std::time::Instant::now();
    let [ta, tb] = both(scan(&[(&a.0.root, a.1), (&b.0.root, b.1)]));
    let (ta, tb) = (a.0.scanned(ta)?, b.0.scanned(tb)?);
    log::debug!(
        "scanned {} and {} entries in {:.3}s, {}",
        ta.count(),
        tb.count(),
        t0.elapsed().as_secs_f64(),
        T::held(&ta, &tb)
    );
    Ok([ta, tb])
}

/// The two results of a scan of two roots.
fn both<T>(scanned: Vec<T>) -> [T; 2] {
    scanned
        .try_into()
        .unwrap_or_else(|_| unreachable!("BUG: one tree per root"))
}
