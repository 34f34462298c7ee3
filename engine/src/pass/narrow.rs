//! A whole pass with something to do, planned only where there is something to do.
//!
//! A pass read compact walks both trees a window of paths at a time (see
//! [`super::quiet`]). A tool that plans parts ([`super::Tool::plans_parts`]) says of
//! each window where its planner finds something to do there ([`Keep`]): the entries at
//! those paths are kept whole, with all a folder it removes holds, and files whose hash
//! is not cached (on both sides); a window with a path the planner could not plan is
//! kept whole. Each kept entry comes with every folder above it on either side
//! ([`Collect`]): the part of both replicas the pass plans, applies and settles, as a
//! pass under `--watch` plans the folders it read again. Everything else is the same on both
//! sides, and stays as it was read: compact, its hashes in the stat caches. The record
//! stage reads each replica after the pass as both merged in path order
//! ([`crate::scan::after::Merged`]), so that neither tree is ever held whole.
//!
//! It is taken only where that gives what the whole pass would give:
//!
//! - the tool's planner acts on a path only from what both trees (and its own base:
//!   twoway's sync state, whose records of the part it keeps) hold at that path, above
//!   it and under it (not where names fold case, nor for hard-linked files, whose names
//!   pair paths anywhere: the tool's `quiet` returns `None` there; twoway's conflict
//!   copies are named with the paths outside the part known);
//! - the planner acts on the same paths in a window as in the whole (what lets a quiet
//!   pass end early where no window has anything to do), so the part holds every path
//!   the whole plan acts on, and a folder removed has every entry under it there (each
//!   is removed, in whichever window it lies);
//! - the part is at most an eighth of both trees (else the pass is made whole: a first
//!   pass or a big change gains nothing from it).
//!
//! Where a replica's store must save the replica before the pass (it replaces content
//! no version holds), the store saves the part as read merged with the rest
//! ([`crate::scan::after::Rest`]): the replica as it was, never held whole.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::scan::after::Rest;
use crate::tree::compact::{Compact, CompactTree};
use crate::tree::entries::ChunkList;
use crate::tree::{path_order, Entry, Kind, Tree};

/// The part is at most this share of both trees' entries (1/8)…
const SHARE: usize = 8;
/// …or this many entries, in a tree too small for a share to mean much.
const AT_LEAST: usize = 4096;

/// What of a window goes into the part.
#[derive(Debug, Default)]
pub enum Keep {
    /// Nothing: the tool found nothing to do there.
    #[default]
    Nothing,
    /// Every entry (a file whose hash is not cached, a path the planner could not plan).
    All,
    /// The entries at these paths (where the planner acts), and at or under those of
    /// `under` (folders it removes, and with them all they hold). In any order.
    Paths {
        at: Vec<PathBuf>,
        under: Vec<PathBuf>,
    },
}

impl Keep {
    /// Adds `more` to what is kept.
    pub(super) fn add(&mut self, more: Keep) {
        match (std::mem::take(self), more) {
            (Keep::All, _) | (_, Keep::All) => *self = Keep::All,
            (Keep::Nothing, k) | (k, Keep::Nothing) => *self = k,
            (
                Keep::Paths { mut at, mut under },
                Keep::Paths {
                    at: mut at2,
                    under: mut under2,
                },
            ) => {
                at.append(&mut at2);
                under.append(&mut under2);
                *self = Keep::Paths { at, under };
            }
        }
    }
}

/// A [`Keep`] asked about paths in path order: each list walked once, alongside.
struct Keeper {
    all: bool,
    at: Vec<PathBuf>,
    under: Vec<PathBuf>,
    /// Where the walk is in each list.
    i: usize,
    j: usize,
}

impl Keeper {
    fn new(keep: Keep) -> Keeper {
        let (all, mut at, mut under) = match keep {
            Keep::Nothing => (false, Vec::new(), Vec::new()),
            Keep::All => (true, Vec::new(), Vec::new()),
            Keep::Paths { at, under } => (false, at, under),
        };
        for v in [&mut at, &mut under] {
            crate::tree::sort_by_path_of(v, |p| p.as_path());
            v.dedup();
        }
        Keeper {
            all,
            at,
            under,
            i: 0,
            j: 0,
        }
    }

    fn nothing(&self) -> bool {
        !self.all && self.at.is_empty() && self.under.is_empty()
    }

    /// Whether the entry at `p` is kept; `p` comes after every path asked before.
    fn keeps(&mut self, p: &Path) -> bool {
        if self.all {
            return true;
        }
        while self.i < self.at.len() && path_order(&self.at[self.i], p).is_lt() {
            self.i += 1;
        }
        // A folder's entries follow it in path order: past a folder's last one, the
        // next folder is the one to ask about.
        while self.j < self.under.len()
            && path_order(&self.under[self.j], p).is_lt()
            && !is_at_or_under(p, &self.under[self.j])
        {
            self.j += 1;
        }
        self.at.get(self.i).is_some_and(|a| a == p)
            || self.under.get(self.j).is_some_and(|d| is_at_or_under(p, d))
    }
}

/// Whether `p` is `d` or lies under it (both relative paths as a scan gives them).
pub(super) fn is_at_or_under(p: &Path, d: &Path) -> bool {
    let (p, d) = (p.as_os_str().as_bytes(), d.as_os_str().as_bytes());
    p.starts_with(d) && (p.len() == d.len() || p[d.len()] == b'/')
}

/// The windows of both trees walked in order, the part to plan gathered from them.
pub(super) struct Collect {
    parts: [ChunkList; 2],
    /// The folders above the walk's place, outermost first, each side's own, and
    /// whether each is in the part already.
    above: [Vec<(PathBuf, Entry, bool)>; 2],
    held: usize,
    cap: usize,
    /// Files met on each side, in every window.
    pub files: [usize; 2],
    /// Windows with something to do.
    pub windows: usize,
}

impl Collect {
    /// A walk of trees of `entries` entries in all.
    pub(super) fn new(entries: usize) -> Collect {
        Collect {
            parts: Default::default(),
            above: Default::default(),
            held: 0,
            cap: (entries / SHARE).max(AT_LEAST),
            files: [0, 0],
            windows: 0,
        }
    }

    /// Takes the next window `w`, what `keep` says of it kept in the part. False once
    /// the part has grown past its share: nothing is kept from then on.
    pub(super) fn take(&mut self, w: &[Tree; 2], keep: Keep) -> bool {
        let mut keep = Keeper::new(keep);
        if keep.nothing() {
            self.pass(w);
            return true;
        }
        self.windows += 1;
        let [a, b] = w;
        let (mut ia, mut ib) = (a.entries.iter().peekable(), b.entries.iter().peekable());
        loop {
            // The side or sides whose next path comes first.
            let take = match (ia.peek(), ib.peek()) {
                (None, None) => break,
                (Some(_), None) => [true, false],
                (None, Some(_)) => [false, true],
                (Some((pa, _)), Some((pb, _))) => {
                    let o = path_order(pa, pb);
                    [o.is_le(), o.is_ge()]
                }
            };
            let here = [
                take[0].then(|| ia.next()).flatten(),
                take[1].then(|| ib.next()).flatten(),
            ];
            let p = here
                .iter()
                .flatten()
                .map(|(p, _)| *p)
                .next()
                .expect("BUG: a side was taken");
            for above in &mut self.above {
                while above
                    .last()
                    .is_some_and(|(d, _, _)| !(is_at_or_under(p, d) && p != d.as_path()))
                {
                    above.pop();
                }
            }
            let kept = keep.keeps(p);
            if kept {
                for (side, above) in self.above.iter_mut().enumerate() {
                    for (d, e, kept) in above.iter_mut().filter(|x| !x.2) {
                        self.parts[side].push(d, e.clone());
                        *kept = true;
                        self.held += 1;
                    }
                }
            }
            for (side, found) in here.into_iter().enumerate() {
                let Some((p, e)) = found else { continue };
                self.files[side] += usize::from(e.kind == Kind::File);
                if kept {
                    self.parts[side].push(p, e.clone());
                    self.held += 1;
                }
                if e.kind == Kind::Dir {
                    self.above[side].push((p.to_path_buf(), e.clone(), kept));
                }
            }
        }
        if self.held > self.cap {
            self.parts = Default::default();
            return false;
        }
        true
    }

    /// Takes window `w`, of which nothing is kept: each side's files counted, and its
    /// folders noted as the folders above the walk's place. (What [`Collect::take`]
    /// does, each side on its own: the folders above the last path of the window are
    /// those above it, or at it, of the folders met, whichever side's path came last.)
    fn pass(&mut self, w: &[Tree; 2]) {
        let last = w
            .iter()
            .filter_map(|t| t.entries.iter().next_back().map(|(p, _)| p))
            .max_by(|x, y| path_order(x, y));
        let Some(last) = last else { return };
        for (side, t) in w.iter().enumerate() {
            let above = &mut self.above[side];
            for (p, e) in t.entries.iter() {
                match e.kind {
                    Kind::File => self.files[side] += 1,
                    Kind::Dir => {
                        while above.last().is_some_and(|(d, _, _)| !is_at_or_under(p, d)) {
                            above.pop();
                        }
                        above.push((p.to_path_buf(), e.clone(), false));
                    }
                    Kind::Symlink => {}
                }
            }
            while above
                .last()
                .is_some_and(|(d, _, _)| !is_at_or_under(last, d))
            {
                above.pop();
            }
        }
    }

    /// The part of each tree (`trees`, read compact) to plan, and the paths it holds
    /// (every path of the part as read, to be left out of the tree read compact when
    /// the two are merged after the pass).
    pub(super) fn into_parts(self, trees: &[CompactTree; 2]) -> ([Tree; 2], [Compact; 2]) {
        let [a, b] = self.parts;
        let parts = [
            trees[0].part(a.into_entries()),
            trees[1].part(b.into_entries()),
        ];
        let covered = parts.each_ref().map(|t| {
            let mut c = Compact::new();
            for (p, e) in t.entries.iter() {
                c.push(p, e);
            }
            c.shrink();
            c
        });
        (parts, covered)
    }
}

/// What a pass planned only in part keeps for its record stage.
pub struct Narrow {
    /// Both trees as read, compact, without hashes.
    pub(super) compact: [CompactTree; 2],
    /// The paths of the part of each, as read.
    pub(super) covered: [Compact; 2],
    /// Each replica's stat cache, as it was read: it holds the hash of every file
    /// outside the part.
    pub(super) caches: [std::fs::File; 2],
    /// What goes before each cache's file when it is read (see
    /// [`crate::scan::after::Merged::head`]).
    pub(super) heads: [Vec<u8>; 2],
    /// The files each replica holds in all.
    pub files: [usize; 2],
    /// Every file outside the part has its hash in the cache (false for a pass in turns
    /// that stopped before its last turn: the files of the turns not taken have none).
    pub(super) hashed: bool,
}

impl Narrow {
    /// Replica `side` as read but for the part (whose root is `root`).
    pub(super) fn rest<'a>(&'a self, side: usize, root: &'a std::path::Path) -> Rest<'a> {
        Rest {
            compact: &self.compact[side],
            covered: &self.covered[side],
            cache: &self.caches[side],
            head: &self.heads[side],
            root,
        }
    }
}
