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

    /// Scans the replica; a root that cannot be read refuses the pass.
    pub fn scan(&self, opts: &ScanOptions) -> Result<Tree, Refusal> {
        let tree = scan::scan(&self.root, opts)
            .map_err(|e| Refusal::new(format!("{} cannot be read: {e}", self.label)))?;
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
        if !checksum {
            StatCache::load(&self.cache_file, &self.root).fill(tree);
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

    /// Saves what is known of the tree's hashes for the next pass.
    pub fn save_cache(&self, tree: &Tree, scanned_at: i64) {
        if let Err(e) = StatCache::from_tree(tree, scanned_at).save(&self.cache_file, &self.root) {
            log::warn!("stat cache of {} not saved: {e}", self.label);
        }
    }
}
