//! What a first sync has made equal so far, recorded while it runs: a first sync has
//! no state to fall back on, so a kill would otherwise leave none, and the pass after
//! it would take every one-sided edit since for a conflict and undo every one-sided
//! deletion. Before the first sync changes anything, the paths already equal on both
//! sides are recorded as the state; then, about once a second, every path whose actions
//! on both sides are all done joins them. The pass's own state replaces this one when
//! it ends. This module decides what is synced; `state` encodes it.
//!
//! It holds little: the plans hold the entries, a done action is its place in them (a
//! first sync of a large tree plans one per file), and only the actions done since the
//! last save are held: each save streams the state file through and adds them
//! (`state::merge_into`). The state is written from a thread of its own, so that no copy
//! waits for it, and only after both replicas are flushed, so that it never records
//! what may not be on disk.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::plan::mirror::{Action, Op, Plan};
use engine::tree::{path_order, Digest, Entry};

use crate::state;

/// How often at most the progress of a first sync is written.
const EVERY: Duration = Duration::from_secs(1);

/// The progress of one first sync, over its four plans (`keep_a`, `to_a`, `keep_b`,
/// `to_b`: the pass's steps in their order, numbered from 0).
pub struct Progress<'a> {
    file: &'a Path,
    /// The replicas, which are also the pair the state belongs to.
    pair: (&'a Path, &'a Path),
    plans: [&'a Plan<'a>; 4],
    inner: Mutex<Inner<'a>>,
}

struct Inner<'a> {
    /// Paths with more than one action, and how many are still to do (every other path
    /// has one).
    pending: HashMap<&'a Path, u32>,
    /// Actions done since the last save whose path is then done: plan number, place,
    /// what a copy wrote.
    done: Vec<(u8, u32, Option<Digest>)>,
    saved: Instant,
    /// Paths done since the last save.
    unsaved: usize,
}

impl<'a> Progress<'a> {
    /// Starts recording: `equal` (paths that need nothing) is written as the state at
    /// once (`None`: the state in the file goes on); the actions of `plans` are what is
    /// left to do.
    pub fn start<'e, I>(
        file: &'a Path,
        pair: (&'a Path, &'a Path),
        equal: Option<impl Fn() -> I>,
        plans: [&'a Plan<'a>; 4],
    ) -> Result<Progress<'a>, engine::Error>
    where
        I: Iterator<Item = (&'e Path, &'e Entry)>,
    {
        // Counted without a map of every path (a first sync has an action per file):
        // a path with several actions has at least one that is not the plain creation
        // of a file or a link (a directory's mkdir and metadata, a conflict's copy, a
        // removal before a creation).
        let plain = |a: &Action| {
            matches!(
                a.op,
                Op::Copy { replace: false } | Op::Symlink { replace: false }
            )
        };
        let mut counts: HashMap<&'a Path, u32> = HashMap::new();
        for a in plans.iter().flat_map(|p| &p.actions).filter(|a| !plain(a)) {
            *counts.entry(&*a.path).or_default() += 1;
        }
        for a in plans.iter().flat_map(|p| &p.actions).filter(|a| plain(a)) {
            if let Some(n) = counts.get_mut(&*a.path) {
                *n += 1;
            }
        }
        counts.retain(|_, n| *n > 1);
        counts.shrink_to_fit();
        // Room for a second's work, up to 65,536 actions (a first sync on a fast disk does
        // them all in less), rather than a list grown by doubling.
        let actions: usize = plans.iter().map(|p| p.actions.len()).sum();
        // Written now, and then only streamed through (see `state::merge_into`). None:
        // a turn after the first of a first sync that fills a replica a turn at a time
        // (see `engine::pass::Tool::fills`); what is equal then are the folders above
        // the turn, which the turns before recorded.
        if let Some(equal) = equal {
            state::save_records(file, pair.0, pair.1, equal)?;
        }
        Ok(Progress {
            file,
            pair,
            plans,
            inner: Mutex::new(Inner {
                pending: counts,
                done: Vec::with_capacity(actions.min(1 << 16)),
                saved: Instant::now(),
                unsaved: 0,
            }),
        })
    }

    /// Notes that the action at `at` of plan `plan` is done (`digest`: what a copy
    /// wrote).
    pub fn done(&self, plan: u8, at: u32, digest: Option<Digest>) {
        let Some(action) = self.plans[usize::from(plan)].actions.get(at as usize) else {
            return;
        };
        let mut inner = self.inner.lock().expect("BUG: no panic holds it");
        if let Some(n) = inner.pending.get_mut(&*action.path) {
            *n -= 1;
            if *n > 0 {
                return;
            }
            inner.pending.remove(&*action.path);
        }
        let gone = matches!(
            action.op,
            Op::Remove { .. } | Op::Rmdir | Op::RemoveLeftover
        );
        if !gone && action.src.is_some() {
            inner.done.push((plan, at, digest));
            inner.unsaved += 1;
        }
    }

    /// Writes the progress if anything was done since the last time and a second has
    /// passed (called by a thread of its own: the copies wait only while the list of
    /// places done is taken out and put back).
    pub fn tick(&self) {
        let mut done = {
            let mut inner = self.inner.lock().expect("BUG: no panic holds it");
            if inner.unsaved == 0 || inner.saved.elapsed() < EVERY {
                return;
            }
            inner.saved = Instant::now();
            inner.unsaved = 0;
            std::mem::take(&mut inner.done)
        };
        // What the list says is done must be on disk before the state says so (a
        // power cut may otherwise undo a rename the state records as synced, and the
        // next pass would take the missing file for a deletion): both replicas are
        // flushed first, as the pass's own state waits for its flush.
        let flushed = [self.pair.0, self.pair.1].iter().try_for_each(|r| {
            if engine::fs::injected_fault("first-sync-flush") {
                return Err(engine::Error::io(
                    "sync",
                    *r,
                    std::io::Error::from_raw_os_error(5),
                ));
            }
            engine::fs::Root::open(r).and_then(|root| root.sync_fs())
        });
        if let Err(e) = flushed {
            log::warn!("progress of the first sync not recorded: {e}");
            let mut inner = self.inner.lock().expect("BUG: no panic holds it");
            let newer = std::mem::replace(&mut inner.done, done);
            inner.done.extend(newer);
            inner.unsaved += 1;
            return;
        }
        let entry = |&(plan, at, _): &(u8, u32, Option<Digest>)| {
            self.plans[usize::from(plan)].actions.get(at as usize)
        };
        let path = |d: &(u8, u32, Option<Digest>)| entry(d).map_or(Path::new(""), |a| &*a.path);
        // In place: a stable sort would take a scratch copy of the list.
        done.sort_unstable_by(|x, y| path_order(path(x), path(y)));
        done.dedup_by(|x, y| path(x) == path(y));
        let made = || {
            done.iter().filter_map(|d| {
                let a = entry(d)?;
                Some((&*a.path, a.src?, d.2))
            })
        };
        if let Err(e) = state::merge_into(self.file, self.pair.0, self.pair.1, made) {
            // Only what a kill would cost: the pass goes on, and tries again.
            log::warn!("progress of the first sync not recorded: {e}");
            let mut inner = self.inner.lock().expect("BUG: no panic holds it");
            let newer = std::mem::replace(&mut inner.done, done);
            inner.done.extend(newer);
            inner.unsaved += 1;
        }
    }
}
