//! A replica root as a pass sees it: scanned, its hashes taken from its stat cache (or
//! all re-hashed with `--checksum`), the rest hashed, and the cache saved afterwards.
//! Shared by every pass tool so there is one way to read a replica.

use std::path::{Path, PathBuf};

use crate::cache::{self, Hashed, StatCache};
use crate::error::Refusal;
use crate::hash;
use crate::home::DataHome;
use crate::scan::{self, ScanOptions};
use crate::tree::Tree;

/// One replica root and its stat cache.
#[derive(Debug)]
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
    fn scanned(&self, tree: Result<Tree, crate::error::Error>) -> Result<Tree, Refusal> {
        let tree = tree.map_err(|e| Refusal::new(format!("{} cannot be read: {e}", self.label)))?;
        for e in &tree.errors {
            log::error!("{e}");
        }
        for p in &tree.specials {
            log::warn!(
                "skipping special file {} in {} (fifo, socket or device)",
                crate::names::display(p),
                self.label
            );
        }
        Ok(tree)
    }

    /// Takes known hashes from the stat cache (none with `checksum`).
    pub fn load_hashes(&self, tree: &mut Tree, checksum: bool) {
        let cache = StatCache::load(&self.cache_file);
        if !checksum {
            cache.fill(&self.root, tree);
        }
    }

    /// Hashes every file whose hash is still unknown; failures are logged and returned.
    pub fn hash_rest(&self, tree: &mut Tree) -> Hashed {
        let hashed = cache::hash_missing(&self.root, tree, hash::default_threads());
        for e in &hashed.errors {
            log::error!("{e}");
        }
        hashed
    }

    /// Hashes the files `wanted` picks whose hash is still unknown.
    pub fn hash_where(&self, tree: &mut Tree, wanted: impl Fn(&Path) -> bool) -> Hashed {
        let hashed = cache::hash_missing_where(&self.root, tree, hash::default_threads(), wanted);
        for e in &hashed.errors {
            log::error!("{e}");
        }
        hashed
    }

    /// Saves what is known of the tree's hashes for the next pass.
    pub fn save_cache(&self, tree: &Tree, scanned_at: crate::tree::MTime) {
        let cache = StatCache::from_tree(&self.root, tree, scanned_at);
        // An unchanged cache is not written again: the file is read back and compared
        // (cheaper than hashing both, and nothing is held in memory during the pass).
        if StatCache::load(&self.cache_file) == cache {
            return;
        }
        if let Err(e) = cache.save(&self.cache_file) {
            log::warn!("stat cache of {} not saved: {e}", self.label);
        }
    }
}

/// Reads two replicas at once: both scanned by one set of threads, then each takes
/// its known hashes from its stat cache (none with `checksum`), the two side by side.
pub fn read_both(
    a: (&Replica, &ScanOptions),
    b: (&Replica, &ScanOptions),
    checksum: bool,
) -> Result<(Tree, Tree), Refusal> {
    let t0 = std::time::Instant::now();
    let mut trees = scan::scan_many(&[(&a.0.root, a.1), (&b.0.root, b.1)]).into_iter();
    let (ta, tb) = (
        trees.next().expect("BUG: one tree per root"),
        trees.next().expect("BUG: one tree per root"),
    );
    let (mut ta, mut tb) = (a.0.scanned(ta)?, b.0.scanned(tb)?);
    let scanned = t0.elapsed();
    std::thread::scope(|s| {
        s.spawn(|| a.0.load_hashes(&mut ta, checksum));
        b.0.load_hashes(&mut tb, checksum);
    });
    log::debug!(
        "scanned {} and {} entries in {:.3}s, stat caches {:.3}s",
        ta.entries.len(),
        tb.entries.len(),
        scanned.as_secs_f64(),
        (t0.elapsed() - scanned).as_secs_f64()
    );
    Ok((ta, tb))
}
