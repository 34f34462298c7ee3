//! Where a version's content may still be live, for a restore and for `verify`.

use std::path::{Path, PathBuf};

use engine::fs::Root;
use engine::hash;
use engine::run::home::DataHome;
use engine::tree::{Digest, Kind};

use super::VersionedDir;

/// Where a version's content may still be live: the live directories (the versioned one,
/// its aliases and twins). The latest version records each file's size, mtime and inode
/// as the replica held it when the version was made: a live file that still has them
/// holds that content (the trust a pass gives its stat cache), and is copied at once
/// (the copy still checks every byte). Any other candidate (at the version's own path,
/// or where the latest version holds the same content: a file renamed since) is hashed
/// before it is taken.
pub struct LiveCopies {
    lives: Vec<PathBuf>,
    /// The latest version's entries, in path order.
    latest: Vec<engine::tree::encoding::EntryRecord>,
    /// Content → places in `latest`.
    by_sha: std::collections::HashMap<Digest, Vec<usize>>,
    /// Content → where a pass moved it that no version names yet (a pass cut short).
    moved: std::collections::HashMap<Digest, Vec<PathBuf>>,
}

thread_local! {
    /// Each thread's open live directories, by path (a restore copies on every core).
    static ROOTS: std::cell::RefCell<std::collections::HashMap<PathBuf, Root>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Runs `f` with this thread's handle on the directory `dir` (a live directory, or a
/// history a restore reads from); `None` if it cannot be opened.
pub fn with_root<T>(dir: &Path, f: impl FnOnce(&mut Root) -> T) -> Option<T> {
    ROOTS.with(|roots| {
        let mut roots = roots.borrow_mut();
        if !roots.contains_key(dir) {
            roots.insert(dir.to_path_buf(), Root::open(dir).ok()?);
        }
        roots.get_mut(dir).map(f)
    })
}

impl LiveCopies {
    pub fn of(vd: &VersionedDir, home: &DataHome) -> LiveCopies {
        Self::knowing(vd, home, None)
    }

    /// [`of`](Self::of), given a version already read: if it is the latest, it is not
    /// read again.
    pub fn knowing(
        vd: &VersionedDir,
        _home: &DataHome,
        known: Option<crate::history::State>,
    ) -> LiveCopies {
        let history = vd.history();
        let head = history.latest().ok().flatten();
        let latest = match (head, known) {
            (Some(h), Some(k)) if k.head.id == h.id => k.entries,
            (Some(h), _) => history.state(h.id).map(|s| s.entries).unwrap_or_default(),
            (None, _) => Vec::new(),
        };
        let mut by_sha: std::collections::HashMap<Digest, Vec<usize>> = Default::default();
        for (i, e) in latest.iter().enumerate() {
            if let Some(sha) = e.sha256 {
                by_sha.entry(sha).or_default().push(i);
            }
        }
        let mut moved: std::collections::HashMap<Digest, Vec<PathBuf>> = Default::default();
        for (p, sha) in history.moves_noted() {
            moved.entry(sha).or_default().push(p);
        }
        LiveCopies {
            // A live directory that is gone (a restore of a deleted one) is not looked in.
            lives: vd.live_dirs().into_iter().filter(|d| d.is_dir()).collect(),
            latest,
            by_sha,
            moved,
        }
    }

    /// Looking in `dir` (a restore's target) only after every other live directory:
    /// what it lacks is what is being restored, and what it holds may be replaced
    /// meanwhile (a file taken from it is checked as any other).
    pub fn target_last(mut self, dir: &Path) -> LiveCopies {
        self.lives.sort_by_key(|d| d == dir);
        self
    }

    /// Finds a live file holding `sha` (`size` bytes) and opens it to read, trying `p`
    /// first; gives the file, its stat and its path.
    pub fn find(
        &self,
        p: &Path,
        sha: &Digest,
        size: u64,
    ) -> Option<(std::fs::File, engine::fs::Stat, PathBuf)> {
        // Where the latest version holds this content: the path itself first, then a few
        // of the others (many files may share one, empty ones all do).
        let held = || {
            self.by_sha
                .get(sha)
                .into_iter()
                .flatten()
                .map(|&i| &self.latest[i])
        };
        let records: Vec<&engine::tree::encoding::EntryRecord> = held()
            .filter(|r| r.path == p)
            .chain(held().filter(|r| r.path != p).take(4))
            .collect();
        // Vouched for by the latest version's stamp: no reading before the copy.
        for rec in &records {
            let q = rec.path.as_path();
            for d in &self.lives {
                let opened = with_root(d, |r| r.open_read(q).ok()).flatten();
                if let Some((f, st)) = opened {
                    let same = st.size == rec.size
                        && (st.mtime.sec, st.mtime.nsec) == rec.mtime
                        && rec.ino == Some(st.ino);
                    if same && st.size == size {
                        return Some((f, st, d.join(q)));
                    }
                }
            }
        }
        let places: Vec<&Path> = std::iter::once(p)
            .chain(records.iter().map(|r| r.path.as_path()).filter(|q| *q != p))
            .collect();
        // Else hashed first (and where a pass cut short moved that content).
        let moved = self
            .moved
            .get(sha)
            .into_iter()
            .flatten()
            .map(|q| q.as_path());
        for q in places.iter().copied().chain(moved) {
            for d in &self.lives {
                let found = with_root(d, |r| {
                    let fits = matches!(r.stat(q), Ok(Some(st)) if st.kind == Some(Kind::File) && st.size == size);
                    if fits && matches!(hash::hash_in(r, q), Ok((got, _)) if got == *sha) {
                        r.open_read(q).ok()
                    } else {
                        None
                    }
                })
                .flatten();
                if let Some((f, st)) = found {
                    return Some((f, st, d.join(q)));
                }
            }
        }
        None
    }
}
