//! `--watch`: what wakes the pass loop early. The directories a pass reads are watched
//! (inotify, through the `notify` crate); a change there, once nothing has changed for
//! the debounce time, starts a pass. Changes to the tool's own files (temporary files,
//! locks, the store) never do, nor what a pass wrote (each pass notes its paths); a
//! change made by someone else while a pass ran starts the next one. A watcher can miss changes (a full queue,
//! a network filesystem, a drive unplugged): the pass every `--interval` stays.
//!
//! This module reads events only; it never touches a replica.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::error::Refusal;

/// Watches directories for changes worth a pass.
pub struct Watch {
    watcher: std::cell::RefCell<notify::RecommendedWatcher>,
    /// Each directory watched, and which directory it was when watched (its device and
    /// inode): a drive unmounted and mounted again is another directory at the same
    /// path, whose changes the old watch no longer sees.
    roots: std::cell::RefCell<Vec<(PathBuf, Identity)>>,
    events: Receiver<notify::Result<notify::Event>>,
    debounce: Duration,
    /// Paths whose changes are the tool's own (a store inside a replica, BACKUP
    /// inside SOURCE).
    ignore: Vec<PathBuf>,
    /// The roots watched and the filter of what a pass reads there: a change of a path
    /// it leaves out starts no pass.
    filtered: Vec<(PathBuf, crate::filter::Filter)>,
    /// What changed since the last pass.
    changed: std::cell::RefCell<Changed>,
}

/// What a watcher saw change since the last pass: the folders to read again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The folders (absolute) whose entries changed: the folder of each path an event
    /// named.
    pub dirs: BTreeSet<PathBuf>,
    /// The watcher may have missed changes (its queue overflowed, or it failed): only
    /// a whole scan will do.
    pub missed: bool,
}

impl Changed {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && !self.missed
    }

    /// Notes that `p` changed: its folder is read again (and `p` itself, in case it is a
    /// watched root whose own metadata changed).
    fn note(&mut self, p: &Path) {
        self.dirs.insert(p.parent().unwrap_or(p).to_path_buf());
        self.dirs.insert(p.to_path_buf());
    }
}

/// The paths the pass running now writes (absolute), while a watch is on: events for
/// them are the pass's own, and for what was under a path it removed.
static OWN: Mutex<Option<Own>> = Mutex::new(None);

/// See [`OWN`].
#[derive(Default)]
struct Own {
    /// Written, made or changed (a folder's metadata: not what is in it).
    exact: HashSet<PathBuf>,
    /// Removed, with whatever was under it.
    under: HashSet<PathBuf>,
}

impl Own {
    /// Whether a pass wrote `p`.
    fn holds(&self, p: &Path) -> bool {
        self.exact.contains(p) || p.ancestors().any(|a| self.under.contains(a))
    }
}

/// Notes paths (relative to `root`) that a pass wrote (true: removed, with what was
/// under it), when a watch is on.
pub fn note_own<'a>(root: &Path, rels: impl Iterator<Item = (&'a Path, bool)>) {
    if let Ok(mut own) = OWN.lock() {
        if let Some(own) = own.as_mut() {
            for (r, whole) in rels {
                let set = if whole {
                    &mut own.under
                } else {
                    &mut own.exact
                };
                set.insert(root.join(r));
            }
        }
    }
}

/// Whether a watch is on (a pass then notes what it writes).
pub fn watching() -> bool {
    OWN.lock().is_ok_and(|o| o.is_some())
}

/// Where a wait of [`Watch::wait`] is, for what a run does between passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Between {
    /// The wait begins, and nothing has changed yet.
    Waiting,
    /// The first change came; a pass follows the debounce time.
    Woken,
}

/// Why [`Watch::wait`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// Files changed (and then nothing for the debounce time).
    Changed,
    /// The time given came.
    Due,
    /// Ctrl+C or SIGTERM.
    Stop,
}

impl Watch {
    /// Watches `dirs` (each whole), ignoring what happens under `ignore`.
    fn new(dirs: &[&Path], ignore: Vec<PathBuf>, debounce: Duration) -> Result<Watch, Refusal> {
        let (tx, events) = channel();
        let mut watcher = notify::recommended_watcher(tx)
            .map_err(|e| Refusal::new(format!("cannot watch for changes: {e}")))?;
        for d in dirs {
            watcher.watch(d, RecursiveMode::Recursive).map_err(|e| {
                Refusal::new(format!(
                    "cannot watch {} for changes: {e}",
                    crate::names::display(d)
                ))
            })?;
        }
        if let Ok(mut own) = OWN.lock() {
            *own = Some(Own::default());
        }
        let roots = dirs
            .iter()
            .map(|d| (d.to_path_buf(), identity(d)))
            .collect();
        Ok(Watch {
            watcher: std::cell::RefCell::new(watcher),
            roots: std::cell::RefCell::new(roots),
            events,
            debounce,
            ignore,
            filtered: Vec::new(),
            changed: Default::default(),
        })
    }

    /// Watches two replicas for `--watch` (the first always; the second too, or, when
    /// `second_required` is false and it cannot be, with a warning), leaving out their
    /// stores (`<root>/__versions__`, and `store` if given) and what `filter` leaves out.
    pub fn replicas(
        roots: [&Path; 2],
        second_required: bool,
        store: Option<&Path>,
        filter: &crate::filter::Filter,
        debounce: Duration,
    ) -> Result<Watch, Refusal> {
        let mut ignore: Vec<PathBuf> = roots
            .iter()
            .map(|r| r.join(crate::names::VERSIONS_DIR))
            .collect();
        ignore.extend(store.map(Path::to_path_buf));
        let required: &[&Path] = if second_required { &roots } else { &roots[..1] };
        let mut w = Watch::new(required, ignore, debounce)?;
        if !second_required {
            w.watch_also(roots[1]);
        }
        Ok(w.filtered(&roots, filter))
    }

    /// Watches `dir` too, if it can: a directory that cannot be watched (the kernel's
    /// watches run out) is said in a warning, and its changes wait for `--interval`.
    fn watch_also(&mut self, dir: &Path) {
        match self.watcher.get_mut().watch(dir, RecursiveMode::Recursive) {
            Ok(()) => self.roots.get_mut().push((dir.to_path_buf(), identity(dir))),
            Err(e) => log::warn!(
                "cannot watch {} for changes ({e}): changes there wait for the next --interval pass",
                crate::names::display(dir)
            ),
        }
    }

    /// Watches anew every root that is the top of a mounted filesystem (what a drive
    /// plugged back is; watching a big tree costs a walk of it).
    fn watch_all_again(&self) {
        let mut watcher = self.watcher.borrow_mut();
        for (root, was) in self.roots.borrow_mut().iter_mut() {
            if crate::run::home::is_mount_root(root) != Some(true) {
                continue;
            }
            *was = identity(root);
            watch_anew(&mut watcher, root, *was);
        }
    }

    /// Watches again each root that is another directory than when it was watched (its
    /// drive unmounted, or mounted again): what changed there is unknown, so the next
    /// pass reads everything. Says whether any was.
    fn watch_again(&self) -> bool {
        let mut any = false;
        for (root, was) in self.roots.borrow_mut().iter_mut() {
            let now = identity(root);
            if now == *was {
                continue;
            }
            watch_anew(&mut self.watcher.borrow_mut(), root, now);
            log::info!(
                "{} is another directory than when it was watched (a drive unmounted or mounted again): watched anew, and read whole",
                crate::names::display(root)
            );
            *was = now;
            self.changed.borrow_mut().missed = true;
            any = true;
        }
        any
    }

    /// Leaves out changes of what `filter` leaves out of the passes (`--exclude`) under
    /// each of `roots`.
    fn filtered(mut self, roots: &[&Path], filter: &crate::filter::Filter) -> Watch {
        self.filtered = roots
            .iter()
            .map(|r| (r.to_path_buf(), filter.clone()))
            .collect();
        self
    }

    /// Whether a pass leaves `p` out: a folder above it is left out, or it is whether a
    /// file or a folder.
    fn left_out(&self, p: &Path) -> bool {
        self.filtered.iter().any(|(root, filter)| {
            let Ok(rel) = p.strip_prefix(root) else {
                return false;
            };
            if rel.as_os_str().is_empty() {
                return false;
            }
            rel.ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .any(|a| filter.is_excluded(a, true))
                || (filter.is_excluded(rel, false) && filter.is_excluded(rel, true))
        })
    }

    /// Notes in what changed what of `e` asks for a pass: a change (not a read) of an
    /// entry that is neither the tool's own (its files, `own`: what the pass running
    /// wrote) nor left out; an error of the watcher (a full queue) asks for a whole
    /// pass. Says whether anything did.
    fn take(&self, e: &notify::Result<notify::Event>, own: &Own) -> bool {
        let mut changed = self.changed.borrow_mut();
        let e = match e {
            Ok(e) if !e.need_rescan() => e,
            _ => {
                changed.missed = true;
                return true;
            }
        };
        if matches!(e.kind, EventKind::Access(_)) {
            return false;
        }
        let mut any = false;
        for p in &e.paths {
            let own_name = p.file_name().is_some_and(|n| {
                crate::names::is_reserved_top(n) || crate::names::is_temp_name(n) || unnamed(p)
            });
            let ours = own.holds(p);
            if !own_name
                && !ours
                && !self.ignore.iter().any(|i| p.starts_with(i))
                && !self.left_out(p)
            {
                changed.note(p);
                any = true;
            }
        }
        any
    }

    /// Waits for a change worth a pass, debounced, or until `until`. `between` is told
    /// when the wait begins with nothing to do (`Waiting`) and when the first change
    /// comes (`Woken`): the debounce time is then still to come.
    pub fn wait(
        &self,
        until: Instant,
        stop: impl Fn() -> bool,
        between: &mut dyn FnMut(Between),
    ) -> Wake {
        let tick = Duration::from_millis(50);
        // A change seen while the last pass ran (and not its own) is news already.
        let seen = !self.changed.borrow().is_empty();
        if !seen {
            between(Between::Waiting);
        }
        let mut changed: Option<Instant> = seen.then(Instant::now);
        let mut first: Option<Instant> = changed;
        // What `between` does when woken takes part of the debounce time: it counts
        // from the change, and the events that came meanwhile (one write makes a few)
        // count as the change's.
        let mut woke = |changed: &mut Option<Instant>, first: &mut Option<Instant>| {
            let now = Instant::now();
            if changed.is_none() {
                between(Between::Woken);
                while let Ok(e) = self.events.try_recv() {
                    self.take(&e, &Own::default());
                }
            }
            *changed = Some(now);
            first.get_or_insert(now);
        };
        let mut looked = Instant::now();
        loop {
            if stop() {
                return Wake::Stop;
            }
            let now = Instant::now();
            // Once a second, whether a root is still the directory watched.
            if now - looked >= Duration::from_secs(1) {
                looked = now;
                if self.watch_again() {
                    woke(&mut changed, &mut first);
                }
            }
            if let Some(last) = changed {
                // Quiet for the debounce time, or changing for ten times it.
                let since_first = first.map_or(Duration::ZERO, |f| now - f);
                if now - last >= self.debounce || since_first >= self.debounce * 10 {
                    return Wake::Changed;
                }
            } else if now >= until {
                // A drive unmounted and mounted again within a second is the same
                // directory as before, and its watch is gone: the whole pass due now
                // starts from every root watched anew.
                self.watch_all_again();
                return Wake::Due;
            }
            // No later than the debounce time's end.
            let wait = changed.map_or(tick, |last| {
                (last + self.debounce)
                    .saturating_duration_since(now)
                    .min(tick)
            });
            match self.events.recv_timeout(wait) {
                Ok(e) => {
                    if self.take(&e, &Own::default()) {
                        woke(&mut changed, &mut first);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Wake::Due,
            }
        }
    }

    /// What changed since the last call, for the pass about to run.
    pub fn take_changed(&self) -> Changed {
        self.changed.take()
    }

    /// After a pass: the events seen meanwhile that are not about what it wrote are
    /// a change to pass on (someone saved a file while it ran); the rest are dropped.
    pub fn settle(&self) {
        let own = OWN
            .lock()
            .ok()
            .and_then(|mut o| o.as_mut().map(std::mem::take))
            .unwrap_or_default();
        while let Ok(e) = self.events.try_recv() {
            if self.take(&e, &own) {
                log::debug!("changed while the pass ran: {e:?}");
            }
        }
    }
}

/// Drops the watch of `root` (if the kernel has not already) and watches it again if it
/// is a directory now (`now`).
fn watch_anew(watcher: &mut notify::RecommendedWatcher, root: &Path, now: Identity) {
    let _ = watcher.unwatch(root);
    if now.is_none() {
        return;
    }
    if let Err(e) = watcher.watch(root, RecursiveMode::Recursive) {
        log::warn!(
            "cannot watch {} for changes again ({e}): changes there wait for the next --interval pass",
            crate::names::display(root)
        );
    }
}

/// Which directory a path is (device and inode); `None`: none.
type Identity = Option<(u64, u64)>;

/// Which directory `p` is now.
fn identity(p: &Path) -> Identity {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// An unnamed file being written (`O_TMPFILE`, as copies are made before they get their
/// name): inotify names it `#<inode>`, a path that does not exist.
fn unnamed(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name.strip_prefix('#')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        && p.symlink_metadata().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_what_the_filter_leaves_out_starts_no_pass() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let filter =
            crate::filter::Filter::excluding(&["node_modules/".to_string(), "*.tmp".to_string()])
                .unwrap();
        let w = Watch::new(&[&root], Vec::new(), Duration::from_millis(10))
            .unwrap()
            .filtered(&[&root], &filter);
        let event = |p: PathBuf| -> notify::Result<notify::Event> {
            Ok(notify::Event::new(EventKind::Create(notify::event::CreateKind::File)).add_path(p))
        };
        let matters = |e| w.take(&e, &Own::default());
        assert!(!matters(event(root.join("node_modules/pkg/index.js"))));
        assert!(!matters(event(root.join("src/notes.tmp"))));
        assert!(
            w.take_changed().is_empty(),
            "nothing noted of what does not matter"
        );
        assert!(matters(event(root.join("src/main.rs"))));
        // A path named like a left-out folder, that is a file: a pass reads it.
        assert!(matters(event(root.join("node_modules"))));
        let c = w.take_changed();
        assert!(c.dirs.contains(&root.join("src")) && !c.missed);
        assert!(matters(Err(notify::Error::generic("queue overflow"))));
        assert!(
            w.take_changed().missed,
            "an error of the watcher calls for a whole pass"
        );
    }

    /// A wait tells the run when it begins with nothing to do, and when the first change
    /// comes, once, before the pass the change starts.
    #[test]
    fn a_wait_says_when_it_begins_and_when_a_change_comes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let w = Watch::new(&[&root], Vec::new(), Duration::from_millis(10)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let writer = {
            let root = root.clone();
            std::thread::spawn(move || {
                rx.recv().unwrap();
                for i in 0..3 {
                    std::fs::write(root.join(format!("f{i}")), "x").unwrap();
                }
            })
        };
        let mut told = Vec::new();
        let mut between = |b: Between| {
            if b == Between::Waiting {
                tx.send(()).unwrap();
            }
            told.push(b);
        };
        let until = Instant::now() + Duration::from_secs(600);
        let wake = w.wait(until, || false, &mut between);
        writer.join().unwrap();
        assert_eq!(wake, Wake::Changed);
        assert_eq!(told, [Between::Waiting, Between::Woken]);
        assert!(w.take_changed().dirs.contains(&root));
    }

    #[test]
    fn what_a_pass_wrote_is_its_own_but_not_what_is_below_a_folder_it_touched() {
        let root = Path::new("/r");
        let mut own = Own::default();
        // The pass set the root's and "a"'s metadata, wrote "a/f", removed "gone".
        for (p, whole) in [("", false), ("a", false), ("a/f", false), ("gone", true)] {
            let set = if whole {
                &mut own.under
            } else {
                &mut own.exact
            };
            set.insert(root.join(p));
        }
        assert!(own.holds(Path::new("/r/a/f")));
        assert!(own.holds(Path::new("/r/gone/deep/x")));
        assert!(own.holds(Path::new("/r")));
        // Someone's edit in a folder the pass only touched is a change.
        assert!(!own.holds(Path::new("/r/a/g")));
        assert!(!own.holds(Path::new("/r/b/h")));
    }
}
