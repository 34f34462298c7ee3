//! What a first sync has made equal so far, recorded while it runs: a first sync has
//! no state to fall back on, so a kill would otherwise leave none, and the pass after
//! it would take every one-sided edit since for a conflict and undo every one-sided
//! deletion. Before the first sync changes anything, the paths already equal on both
//! sides are recorded as the state; then, about once a second, every path whose actions
//! on both sides are all done joins them. The pass's own state replaces this one when
//! it ends. This module decides what is synced; `state` encodes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::mirror::{Action, Op, Plan};
use engine::tree::{Digest, Entries, Entry};

use crate::state;

/// How often at most the progress of a first sync is written.
const EVERY: Duration = Duration::from_secs(1);

/// The progress of one first sync.
pub struct Progress<'a> {
    file: &'a Path,
    pair: (&'a Path, &'a Path),
    inner: Mutex<Inner>,
}

struct Inner {
    /// Paths equal on both sides before the pass.
    equal: Entries,
    /// Actions still to do, per path.
    pending: HashMap<Box<Path>, u32>,
    /// Paths whose every action is done, with the entry both sides now hold.
    done: Vec<(PathBuf, Entry)>,
    saved: Instant,
    /// Paths done since the last save.
    unsaved: usize,
}

impl<'a> Progress<'a> {
    /// Starts recording: `equal` (paths that need nothing) is written as the state at
    /// once; the actions of `plans` are what is left to do.
    pub fn start(
        file: &'a Path,
        pair: (&'a Path, &'a Path),
        equal: Entries,
        plans: [&Plan; 4],
    ) -> Result<Progress<'a>, engine::Error> {
        let mut pending: HashMap<Box<Path>, u32> = HashMap::new();
        for a in plans.iter().flat_map(|p| &p.actions) {
            *pending.entry(a.path.clone()).or_default() += 1;
        }
        state::save(file, pair.0, pair.1, &equal)?;
        Ok(Progress {
            file,
            pair,
            inner: Mutex::new(Inner {
                equal,
                pending,
                done: Vec::new(),
                saved: Instant::now(),
                unsaved: 0,
            }),
        })
    }

    /// Notes that `action` is done (`digest`: what a copy wrote).
    pub fn done(&self, action: &Action, digest: Option<Digest>) {
        let mut inner = self.inner.lock().expect("BUG: no panic holds it");
        let left = match inner.pending.get_mut(&action.path) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => return,
        };
        let gone = matches!(
            action.op,
            Op::Remove { .. } | Op::Rmdir | Op::RemoveLeftover
        );
        if left == 0 && !gone {
            if let Some(mut e) = action.src.clone() {
                e.ino = 0;
                e.linked = false;
                if e.hash.is_none() {
                    e.hash = digest;
                }
                inner.done.push((action.path.to_path_buf(), e));
                inner.unsaved += 1;
            }
        }
    }

    /// Writes the progress if anything was done since the last time and a second has
    /// passed (called by a thread of its own, so that no copy waits for it).
    pub fn tick(&self) {
        let mut inner = self.inner.lock().expect("BUG: no panic holds it");
        if inner.unsaved > 0 && inner.saved.elapsed() >= EVERY {
            self.save(&mut inner);
        }
    }

    fn save(&self, inner: &mut Inner) {
        let done: std::collections::HashSet<&Path> =
            inner.done.iter().map(|(p, _)| p.as_path()).collect();
        let mut all: Vec<(PathBuf, Entry)> = inner.done.clone();
        all.extend(
            inner
                .equal
                .iter()
                .filter(|(p, _)| !done.contains(p))
                .map(|(p, e)| (p.to_path_buf(), e.clone())),
        );
        all.sort_by(|x, y| engine::tree::path_order(&x.0, &y.0));
        let state = Entries::from_sorted(all);
        match state::save(self.file, self.pair.0, self.pair.1, &state) {
            Ok(_) => {
                inner.saved = Instant::now();
                inner.unsaved = 0;
            }
            // Only what a kill would cost: the pass goes on.
            Err(e) => log::warn!("progress of the first sync not recorded: {e}"),
        }
    }
}
