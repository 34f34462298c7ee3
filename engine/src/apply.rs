//! Carrying out a mirror [`Plan`]: the only code that changes a destination, and only
//! through the safe primitives of [`fsops`].
//!
//! Each action is checked against the destination as it is right now (a file changed
//! since the scan is not overwritten), every file is written to a temporary name, flushed
//! and renamed, and a source file that changes while it is copied is left for the next
//! pass. A failure on one entry is recorded and the rest goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::Error;
use crate::fsops::{self, Root, Stat, TempWrite};
use crate::mirror::{Action, Op, Plan};
use crate::names::display;
use crate::tree::{under_any, Entry, Kind};

/// Where the bytes come from and how far to trust the plan's metadata.
pub struct ApplyOptions<'a> {
    /// The source root (files are read from `src_root/<path>`).
    pub src_root: &'a Path,
    /// Written in log lines: e.g. "SOURCE -> BACKUP".
    pub direction: &'a str,
    /// Use the plan's mode and mtime for files (restore from a manifest) instead of the
    /// source file's own.
    pub meta_from_plan: bool,
    /// The bytes read must hash to the plan's hash (restore: detects a damaged store).
    pub verify_hash: bool,
    /// Directories, and files whose metadata is mended in place, take their extended
    /// attributes (ACLs) from the source's (a mirror: the source is the truth; not
    /// twoway, where the other side is no source, nor a restore, whose versions keep
    /// none for directories). Copied files always take their source's.
    pub attrs_from_source: bool,
    /// Checked between files and between chunks of a file.
    pub stop: &'a (dyn Fn() -> bool + Sync),
    /// Told of each action once it is done (and on disk, for a copy of a batch), by its
    /// place in the plan, with the content hash of what a copy wrote: a first two-way
    /// sync records its progress.
    pub done: Option<&'a DoneFn<'a>>,
}

/// What [`ApplyOptions::done`] is told: an action's place in the plan, and the hash of
/// what a copy wrote.
pub type DoneFn<'f> = dyn Fn(u32, Option<crate::tree::Digest>) + Sync + 'f;

/// Tells `opts.done` that the action at `at` is done; a copy's hash is its record's.
fn report_done(opts: &ApplyOptions<'_>, at: u32, out: &Applied) {
    if let Some(done) = opts.done {
        let digest = out
            .copied
            .last()
            .filter(|c| c.action == at)
            .map(|c| c.digest);
        done(at, digest);
    }
}

/// Counts of what a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub by_verb: BTreeMap<&'static str, u64>,
    pub bytes: u64,
}

impl Counts {
    pub fn add(&mut self, verb: &'static str) {
        *self.by_verb.entry(verb).or_default() += 1;
    }

    /// Total operations, not counting directory metadata fix-ups.
    pub fn operations(&self) -> u64 {
        self.by_verb
            .iter()
            .filter(|(v, _)| **v != "dirmeta")
            .map(|(_, n)| n)
            .sum()
    }

    pub fn merge(&mut self, other: &Counts) {
        for (v, n) in &other.by_verb {
            *self.by_verb.entry(v).or_default() += n;
        }
        self.bytes += other.bytes;
    }

    /// "copy 3, remove 1" (or "nothing to do").
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .by_verb
            .iter()
            .filter(|(v, _)| **v != "dirmeta")
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        if parts.is_empty() {
            "nothing to do".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Destination entries created or replaced, with hash and inode as written (each
    /// path once; in no particular order, like the other lists here).
    pub written: Vec<(PathBuf, Entry)>,
    /// Destination files whose metadata was changed in place.
    pub meta: Vec<(PathBuf, Entry)>,
    /// Directories whose mode and mtime were set ("" is the root).
    pub dirs: Vec<(PathBuf, Entry)>,
    /// Destination paths removed (whole subtrees for directories).
    pub removed: Vec<PathBuf>,
    /// Files copied: one record for what was written and what was read (a first
    /// mirror makes one per file, so they are kept small).
    pub copied: Vec<Copied>,
    /// Paths whose action failed; their destination state is unknown.
    pub failed: BTreeSet<PathBuf>,
    pub errors: Vec<Error>,
    pub counts: Counts,
    /// The stop flag was seen before the plan was done.
    pub interrupted: bool,
}

/// One file copied (a first sync holds one per file: kept small).
#[derive(Debug)]
pub struct Copied {
    /// None while the copies run (the plan holds it): set by [`Applied::name_copies`].
    path: Option<Box<Path>>,
    /// The copy's place in the plan.
    action: u32,
    /// The destination file as written: its size, mode, mtime, inode and content hash
    /// (the mtimes' parts side by side, which saves their padding).
    mode: u32,
    size: u64,
    mtime_sec: i64,
    mtime_nsec: u32,
    ino: u64,
    uid: u32,
    gid: u32,
    pub digest: crate::tree::Digest,
    /// The source file's mtime and inode when it was read (its size and content hash
    /// are the written file's).
    read_nsec: u32,
    read_sec: i64,
    read_ino: u64,
}

impl Copied {
    /// The path, once the copies are named (see [`Applied::name_copies`]).
    fn named(&self) -> &Path {
        self.path
            .as_deref()
            .expect("BUG: a copy's record is used before Applied::name_copies")
    }

    /// The destination entry as written.
    pub fn written(&self) -> Entry {
        Entry {
            kind: Kind::File,
            size: self.size,
            mode: self.mode,
            mtime: crate::tree::MTime::new(self.mtime_sec, self.mtime_nsec),
            ino: self.ino,
            target: None,
            hash: Some(self.digest),
            owner: crate::tree::Owner {
                uid: self.uid,
                gid: self.gid,
            },
            linked: false,
            touched: false,
        }
    }

    /// The source as it was read.
    pub fn read(&self) -> crate::cache::Stamp {
        crate::cache::Stamp {
            size: self.size,
            mtime: crate::tree::MTime::new(self.read_sec, self.read_nsec),
            ino: self.read_ino,
        }
    }
}

/// An action with its place in its plan.
type Numbered<'a> = (u32, &'a Action);

/// What copy workers share: the plan's actions, the places of the copies among them,
/// the next copy not taken, and where records go (see [`copy_worker`]).
type CopyWork<'a> = (
    &'a [Action],
    &'a [u32],
    &'a AtomicUsize,
    Option<&'a Mutex<Vec<Copied>>>,
);

/// Gives the files of `source` (the tree the copies read from) whose hash is unknown the
/// hash and stat their copy read: they need not be hashed again.
pub fn note_reads(source: &mut crate::tree::Entries, copied: &mut [Copied]) {
    crate::tree::update_each(
        source,
        copied,
        |c| c.named(),
        |e, c| {
            if e.kind == Kind::File && e.hash.is_none() {
                crate::cache::note_hashed(e, c.digest, c.read());
            }
        },
    );
}

/// Logs an action line: UTC time is added by the logger.
pub fn log_action(verb: &str, path: &Path, direction: &str, dry_run: bool) {
    let lvl = if verb == "dirmeta" && !dry_run {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    if !log::log_enabled!(target: "action", lvl) {
        return;
    }
    let shown = if path.as_os_str().is_empty() {
        ".".to_string()
    } else {
        display(path)
    };
    if dry_run {
        log::info!(target: "action", "would {verb:<8} {shown}  ({direction})");
    } else if verb == "dirmeta" {
        log::debug!(target: "action", "{verb:<8} {shown}  ({direction})");
    } else {
        log::info!(target: "action", "{verb:<8} {shown}  ({direction})");
    }
}

/// Prints a plan as a dry run: the same actions, nothing done.
pub fn print_plan(plan: &Plan, direction: &str) -> Counts {
    let mut counts = Counts::default();
    for a in &plan.actions {
        if a.op != Op::SetDirMeta {
            log_action(a.op.verb(), &a.path, direction, true);
        }
        counts.add(a.op.verb());
        if matches!(a.op, Op::Copy { .. }) {
            counts.bytes += a.src.as_ref().map_or(0, |s| s.size);
        }
    }
    counts
}

/// Carries out `plan` on `dst`, in three phases that keep every ordering the plan relies
/// on: first every action that is not a file copy, in plan order (removals before what
/// replaces them, directories before their contents); then the file copies, which are
/// independent of each other by then, on `threads` threads; then directory metadata.
pub fn apply(plan: &Plan, dst: &mut Root, opts: &ApplyOptions<'_>) -> Applied {
    let mut out = Applied::default();
    let mut failed_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let is_copy = |a: &Action| matches!(a.op, Op::Copy { .. });
    // Each action with its place in the plan, which a copy's record keeps.
    let numbered = || {
        plan.actions.iter().enumerate().map(|(i, a)| {
            let i = u32::try_from(i).expect("BUG: a plan holds fewer than 2^32 actions");
            (i, a)
        })
    };
    // Links to files of this plan wait for the copies, with directory metadata.
    let is_last = |a: &Action| matches!(a.op, Op::SetDirMeta | Op::Link { .. });
    let first: Vec<Numbered> = numbered()
        .filter(|(_, a)| !is_copy(a) && !is_last(a))
        .collect();
    // (By place only: a first sync copies every file.)
    let copies: Vec<u32> = numbered()
        .filter(|(_, a)| is_copy(a))
        .map(|(i, _)| i)
        .collect();
    let last: Vec<Numbered> = numbered().filter(|(_, a)| is_last(a)).collect();

    // Bytes are read through directory handles too, never following a symlink.
    let mut src = Root::open(opts.src_root).ok();
    run_sequence(&first, dst, &mut src, opts, &mut out, &mut failed_dirs);
    if !out.interrupted && !copies.is_empty() {
        let mut copies = copies;
        copies.retain(|&i| {
            let a = &plan.actions[i as usize];
            let skip = under_any(&failed_dirs, &a.path);
            if skip {
                out.failed.insert(a.path.to_path_buf());
            }
            !skip
        });
        let threads = crate::hash::default_threads().min(copies.len()).max(1);
        let next = AtomicUsize::new(0);
        if threads <= 1 {
            let work = (&plan.actions[..], &copies[..], &next, None);
            copy_worker(work, dst, &mut src, opts, &mut out);
        } else {
            // The workers' records go, a batch at a time, to one list made to size: a
            // first sync copies every file, and lists of each worker's own, joined at the
            // end, would need room for them twice.
            let done = Mutex::new(Vec::with_capacity(copies.len()));
            let results: Vec<Applied> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let mut part = Applied::default();
                            match Root::open(dst.path()) {
                                Ok(mut root) => {
                                    let mut src = Root::open(opts.src_root).ok();
                                    let work = (&plan.actions[..], &copies[..], &next, Some(&done));
                                    copy_worker(work, &mut root, &mut src, opts, &mut part);
                                }
                                Err(e) => part.errors.push(e),
                            }
                            part
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("BUG: copy workers do not panic"))
                    .collect()
            });
            for part in results {
                out.merge(part);
            }
            let done = done.into_inner().expect("BUG: no panic holds it");
            Applied::join(&mut out.copied, done);
        }
    }
    if !out.interrupted {
        run_sequence(&last, dst, &mut src, opts, &mut out, &mut failed_dirs);
    }
    out
}

/// How many consecutive items a worker takes at once out of `total`: up to 32, but
/// few enough that every thread gets a share (16 large files must not all go to one).
pub fn run_length(total: usize) -> usize {
    (total / (crate::hash::default_threads() * 8)).clamp(1, 32)
}

/// Whether a run of `taken` items (at least `len` make a run) whose last item is `last`
/// should also take `next`: a run goes on to the end of its directory, up to `max`
/// items, so that two workers seldom write into one directory at once (each would wait
/// on its lock in turn).
pub fn run_goes_on(taken: usize, (len, max): (usize, usize), last: &Path, next: &Path) -> bool {
    taken < len || (taken < max && crate::tree::parent_of(last) == crate::tree::parent_of(next))
}

/// Files written per batch before one filesystem-wide flush, and bytes.
const BATCH_FILES: usize = 256;
const BATCH_BYTES: u64 = 256 << 20;

/// Takes copies from `copies` (shared with the other workers through `next`) and does
/// them in batches: each file is written to its temporary name (or as an unnamed file,
/// see [`Root::write_temp`]) and checked, the batch is flushed to disk with one `syncfs`
/// — the same guarantee as an `fsync` per file, since every byte of every temporary file
/// is on disk when it returns — and only then is each file renamed (or linked) to its
/// final name. An interrupted batch is rolled back (its temporary files are removed);
/// files of earlier batches are complete where they are. The records of each batch go
/// to `done` when given, else stay in `out`.
fn copy_worker(
    (actions, copies, next, done): CopyWork,
    dst: &mut Root,
    src: &mut Option<Root>,
    opts: &ApplyOptions<'_>,
    out: &mut Applied,
) {
    let mut pending: Vec<(Numbered, Prepared)> = Vec::new();
    let mut pending_bytes = 0u64;
    // Copies are taken a run at a time: neighbours in path order share a directory,
    // and two threads creating files in one directory wait on its lock.
    let mut run = 0..0;
    loop {
        if (opts.stop)() {
            out.interrupted = true;
            break;
        }
        if run.is_empty() {
            let len = run_length(copies.len());
            let start = next.fetch_add(len, Ordering::Relaxed);
            run = start..(start + len).min(copies.len());
        }
        let Some(&at) = run.next().and_then(|i| copies.get(i)) else {
            break;
        };
        let action = &actions[at as usize];
        match prepare_copy(action, dst, src, opts, false) {
            Ok(mut p) => {
                p.temp.close();
                pending_bytes += p.n;
                pending.push(((at, action), p));
            }
            Err(Error::Entry { reason, .. }) if reason == "interrupted" => {
                out.interrupted = true;
                break;
            }
            Err(e) => {
                log::error!("{e}");
                out.failed.insert(action.path.to_path_buf());
                out.errors.push(e);
            }
        }
        if pending.len() >= BATCH_FILES || pending_bytes >= BATCH_BYTES {
            install_batch(&mut pending, dst, opts, out);
            pending_bytes = 0;
            hand_over(out, done);
        }
    }
    if !out.interrupted {
        install_batch(&mut pending, dst, opts, out);
    }
    hand_over(out, done);
}

/// Moves the records of the copies done so far to `done`, if given.
fn hand_over(out: &mut Applied, done: Option<&Mutex<Vec<Copied>>>) {
    if let Some(done) = done {
        done.lock()
            .expect("BUG: no panic holds it")
            .append(&mut out.copied);
    }
}

/// Flushes a batch of prepared copies to disk, then renames each into place.
fn install_batch(
    pending: &mut Vec<(Numbered, Prepared)>,
    dst: &mut Root,
    opts: &ApplyOptions<'_>,
    out: &mut Applied,
) {
    if pending.is_empty() {
        return;
    }
    if let Err(e) = dst.sync_fs() {
        // Without the flush no file of the batch may appear at its final name.
        log::error!("{e}");
        for ((_, action), _) in pending.drain(..) {
            out.failed.insert(action.path.to_path_buf());
        }
        out.errors.push(e);
        return;
    }
    for ((at, action), p) in pending.drain(..) {
        match commit_copy((at, action), p, dst, out) {
            Ok(()) => {
                log_action(action.op.verb(), &action.path, opts.direction, false);
                out.counts.add(action.op.verb());
                report_done(opts, at, out);
            }
            Err(e) => {
                log::error!("{e}");
                out.failed.insert(action.path.to_path_buf());
                out.errors.push(e);
            }
        }
    }
}

fn run_sequence(
    actions: &[Numbered],
    dst: &mut Root,
    src: &mut Option<Root>,
    opts: &ApplyOptions<'_>,
    out: &mut Applied,
    failed_dirs: &mut BTreeSet<PathBuf>,
) {
    for &(at, action) in actions {
        if (opts.stop)() {
            out.interrupted = true;
            break;
        }
        if under_any(failed_dirs, &action.path) && !action.path.as_os_str().is_empty() {
            out.failed.insert(action.path.to_path_buf());
            continue;
        }
        match run((at, action), dst, src, opts, out) {
            Ok(()) => {
                log_action(action.op.verb(), &action.path, opts.direction, false);
                out.counts.add(action.op.verb());
                report_done(opts, at, out);
            }
            Err(Error::Entry { reason, .. }) if reason == "interrupted" => {
                out.interrupted = true;
                break;
            }
            Err(e) => {
                log::error!("{e}");
                if matches!(action.op, Op::Mkdir) {
                    failed_dirs.insert(action.path.to_path_buf());
                }
                out.failed.insert(action.path.to_path_buf());
                out.errors.push(e);
            }
        }
    }
}

impl Applied {
    /// Gives each copy's record its path, moved out of `plan` (the plan this applied):
    /// the records go without one while the copies run, as the plan holds them all. The
    /// plan's paths of copies are empty after.
    pub fn name_copies(&mut self, plan: &mut Plan) {
        for c in &mut self.copied {
            let action = &mut plan.actions[c.action as usize];
            debug_assert!(matches!(action.op, Op::Copy { .. } | Op::SetFileMeta));
            c.path = Some(std::mem::replace(&mut action.path, Path::new("").into()));
        }
    }

    /// Appends `from` to `into`, growing it by just what it adds (or takes `from` over).
    fn join<T>(into: &mut Vec<T>, from: Vec<T>) {
        if into.is_empty() {
            *into = from;
        } else {
            into.reserve_exact(from.len());
            into.extend(from);
        }
    }

    /// Folds in what another worker did. Its lists are taken over where this one's are
    /// empty, else appended to, growing by just what they add (a first mirror holds a
    /// record per file: never twice, nor with room for as many again).
    fn merge(&mut self, other: Applied) {
        Self::join(&mut self.written, other.written);
        Self::join(&mut self.meta, other.meta);
        Self::join(&mut self.dirs, other.dirs);
        Self::join(&mut self.removed, other.removed);
        Self::join(&mut self.copied, other.copied);
        self.failed.extend(other.failed);
        self.errors.extend(other.errors);
        self.counts.merge(&other.counts);
        self.interrupted |= other.interrupted;
    }
}

fn src_of(action: &Action) -> Result<&Entry, Error> {
    action.src.as_ref().ok_or_else(|| {
        Error::entry(
            action.path.to_path_buf(),
            "BUG: action without a source entry",
        )
    })
}

/// The destination still looks as it did when it was scanned.
fn unchanged_since_scan(dst: &mut Root, action: &Action) -> Result<(), Error> {
    let now = dst.stat(&action.path)?;
    let same = match (action.dst.as_deref(), now) {
        (None, None) => true,
        (Some(e), Some(st)) => {
            st.kind == Some(e.kind)
                && (e.kind != Kind::File
                    || (st.size == e.size && st.mtime == e.mtime && st.ino == e.ino))
        }
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(Error::entry(
            dst.abs(&action.path),
            "changed on the destination during the pass; left for the next pass",
        ))
    }
}

fn run(
    (at, action): Numbered,
    dst: &mut Root,
    src: &mut Option<Root>,
    opts: &ApplyOptions<'_>,
    out: &mut Applied,
) -> Result<(), Error> {
    let path = &action.path;
    match &action.op {
        Op::RemoveLeftover => dst.remove(path),
        Op::Remove { .. } if action.dst.is_none() => {
            // A special file the scan skipped: remove it only if it still is one.
            match dst.stat(path)? {
                Some(st) if st.kind.is_none() => {}
                None => return Ok(()),
                Some(_) => {
                    return Err(Error::entry(
                        dst.abs(path),
                        "changed on the destination during the pass; left for the next pass",
                    ))
                }
            }
            dst.remove(path)?;
            out.removed.push(path.to_path_buf());
            Ok(())
        }
        Op::Remove { .. } => {
            unchanged_since_scan(dst, action)?;
            dst.remove(path)?;
            out.removed.push(path.to_path_buf());
            Ok(())
        }
        Op::Mkdir => {
            let s = src_of(action)?;
            dst.mkdir(path, s.mode)?;
            out.written.push((path.to_path_buf(), s.clone()));
            Ok(())
        }
        Op::SetDirMeta => {
            let s = src_of(action)?;
            dst.set_dir_meta(path, s.mode, s.mtime, s.owner)?;
            // A mirrored directory's attributes (a default ACL, say) are the source's.
            if let (true, Some(src)) = (opts.attrs_from_source, src.as_mut()) {
                fsops::copy_dir_xattrs(src, dst, path)?;
            }
            out.dirs.push((path.to_path_buf(), s.clone()));
            Ok(())
        }
        Op::Symlink { .. } => {
            let s = src_of(action)?;
            unchanged_since_scan(dst, action)?;
            let target = s
                .target
                .as_deref()
                .ok_or_else(|| Error::entry(&**path, "BUG: symlink without target"))?;
            dst.symlink(path, target, s.mtime, s.owner)?;
            out.written.push((path.to_path_buf(), s.clone()));
            Ok(())
        }
        Op::SetFileMeta => {
            let s = src_of(action)?;
            unchanged_since_scan(dst, action)?;
            // A mirror's file takes the source's attributes too.
            let from = match (opts.attrs_from_source, src.as_mut()) {
                (true, Some(src)) => src.open_read(path).ok(),
                _ => None,
            };
            let attrs = from.as_ref().map(|(f, _)| f.as_fd());
            if dst.set_file_meta_if_unshared(path, (s.mode, s.mtime, s.owner), attrs)? {
                let mut e = action.dst.as_deref().cloned().unwrap_or_else(|| s.clone());
                e.mode = s.mode;
                e.mtime = s.mtime;
                if s.owner.is_known() && fsops::keeps_owners() {
                    e.owner = s.owner;
                }
                out.meta.push((path.to_path_buf(), e));
                Ok(())
            } else {
                // Shared with a version (or not ours to open): never change it in place.
                copy((at, action), dst, src, opts, out)
            }
        }
        Op::Copy { .. } => copy((at, action), dst, src, opts, out),
        Op::Link { from } => {
            let s = src_of(action)?;
            unchanged_since_scan(dst, action)?;
            dst.link_over(from, path)?;
            let mut e = s.clone();
            e.linked = false;
            if let Some(st) = dst.stat(path)? {
                e.ino = st.ino;
            }
            // Its bytes are its leader's: hashed with it, or after the pass.
            e.hash = None;
            out.written.push((path.to_path_buf(), e));
            Ok(())
        }
        Op::Rmdir => {
            dst.rmdir(path)?;
            out.removed.push(path.to_path_buf());
            Ok(())
        }
        Op::Preserve { from } => {
            let s = src_of(action)?;
            if dst.stat(path)?.is_some() {
                return Err(Error::entry(
                    dst.abs(path),
                    "already exists; not overwritten",
                ));
            }
            match s.kind {
                Kind::Symlink => {
                    let target = s.link_target().unwrap_or(Path::new(""));
                    dst.symlink(path, target, s.mtime, s.owner)?;
                }
                _ => {
                    if dst.link_within(from, path).is_err() {
                        // No hard links here (FAT, some shares): copy within the tree.
                        let (file, st) = dst.open_read(from)?;
                        let how = TempWrite {
                            durable: true,
                            new_file: true,
                            sparse: st.is_sparse(),
                            xattrs_from: Some(file.as_fd()),
                        };
                        let (temp, _, _, _) = dst.write_temp(
                            path,
                            &mut &file,
                            (st.mode, st.mtime, st.owner()),
                            opts.stop,
                            how,
                        )?;
                        temp.commit_new()?;
                    }
                }
            }
            let mut e = s.clone();
            if let Some(st) = dst.stat(path)? {
                e.ino = st.ino;
            }
            out.written.push((path.to_path_buf(), e));
            Ok(())
        }
    }
}

/// A file copied to its temporary name, checked, waiting to be installed.
struct Prepared {
    temp: fsops::TempFile,
    /// The new file's own stat (its inode stays through the rename).
    new: Stat,
    digest: crate::tree::Digest,
    before: Stat,
    n: u64,
    mtime: crate::tree::MTime,
}

/// Copies one file to a temporary name beside its destination and checks it: the source
/// did not change while it was read, and (restore, twoway) its bytes are the planned ones.
fn prepare_copy(
    action: &Action,
    dst: &mut Root,
    src: &mut Option<Root>,
    opts: &ApplyOptions<'_>,
    durable: bool,
) -> Result<Prepared, Error> {
    let path = &action.path;
    let s = src_of(action)?;
    let src_abs = opts.src_root.join(path);
    let (file, before) = match src.as_mut() {
        Some(root) => root.open_read(path)?,
        None => fsops::open_regular(&src_abs)?,
    };
    let (mode, mtime, owner) = if opts.meta_from_plan {
        (s.mode, s.mtime, s.owner)
    } else {
        (before.mode, before.mtime, before.owner())
    };
    // Read no further than the size the file had when opened: a file that grows or
    // changes meanwhile shows it in the stat after (checked below), so the read that
    // would only find the end is saved.
    let mut limited = std::io::Read::take(&file, before.size);
    let how = TempWrite {
        durable,
        new_file: action.dst.is_none(),
        sparse: before.is_sparse(),
        xattrs_from: Some(file.as_fd()),
    };
    let (temp, digest, n, new) =
        dst.write_temp(path, &mut limited, (mode, mtime, owner), opts.stop, how)?;
    let after = fsops::fstat(&file, &src_abs)?;
    let changed = || {
        Error::entry(
            &src_abs,
            "changed while being copied; left for the next pass",
        )
    };
    if n != before.size
        || !crate::hash::unchanged_while_read(&mut &file, &before, &after, before.size, digest)
            .map_err(|e| Error::io("read", &src_abs, e))?
    {
        return Err(changed());
    }
    if opts.verify_hash && s.hash.is_some_and(|h| h != digest) {
        return Err(Error::entry(
            src_abs,
            "does not match the SHA-256 it was planned with (changed since the scan, or damaged); left as it was",
        ));
    }
    Ok(Prepared {
        temp,
        new,
        digest,
        before,
        n,
        mtime,
    })
}

/// Installs a prepared copy at its final name (its bytes are on disk by now).
fn commit_copy(
    (at, action): Numbered,
    p: Prepared,
    dst: &mut Root,
    out: &mut Applied,
) -> Result<(), Error> {
    let new = p.new;
    if action.dst.is_none() {
        // A new file: the rename itself refuses to replace anything that appeared.
        p.temp.commit_new()?;
    } else {
        unchanged_since_scan(dst, action)?;
        p.temp.commit()?;
    }
    out.counts.bytes += p.n;
    out.copied.push(Copied {
        path: None,
        action: at,
        mode: new.mode,
        size: p.n,
        mtime_sec: p.mtime.sec,
        mtime_nsec: p.mtime.nsec,
        ino: new.ino,
        uid: new.uid,
        gid: new.gid,
        digest: p.digest,
        read_sec: p.before.mtime.sec,
        read_nsec: p.before.mtime.nsec,
        read_ino: p.before.ino,
    });
    Ok(())
}

/// One file copy, flushed on its own.
fn copy(
    (at, action): Numbered,
    dst: &mut Root,
    src: &mut Option<Root>,
    opts: &ApplyOptions<'_>,
    out: &mut Applied,
) -> Result<(), Error> {
    let p = prepare_copy(action, dst, src, opts, true)?;
    commit_copy((at, action), p, dst, out)
}

/// The destination tree after `applied`: the scanned tree with removals, writes and
/// metadata changes folded in (so the destination need not be scanned again).
///
/// The entries written and changed are moved out of `applied`, not copied: what the
/// copies read must be taken from `applied.copied` before.
pub fn tree_after(before: crate::tree::Tree, applied: &mut Applied) -> crate::tree::Tree {
    let mut t = before;
    let copied = std::mem::take(&mut applied.copied);
    let change = |c: Copied| {
        let written = c.written();
        let path = c
            .path
            .expect("BUG: a copy's record is used before Applied::name_copies");
        (path.into_path_buf(), written)
    };
    let mut changes = if applied.written.is_empty() && applied.meta.is_empty() {
        // Made in the copies' own memory (the collect reuses it): a first sync copies
        // every file.
        copied.into_iter().map(change).collect()
    } else {
        let mut changes = std::mem::take(&mut applied.written);
        changes.append(&mut applied.meta);
        changes.extend(copied.into_iter().map(change));
        changes
    };
    for (_, e) in changes.iter_mut() {
        if e.kind == Kind::Dir {
            e.ino = 0;
        }
    }
    t.entries.merge(&applied.removed, changes);
    for (p, e) in &applied.dirs {
        let slot = if p.as_os_str().is_empty() {
            t.root.as_mut()
        } else {
            t.entries.get_mut(p)
        };
        if let Some(d) = slot {
            d.mode = e.mode;
            d.mtime = e.mtime;
        }
    }
    for p in &applied.failed {
        t.unknown.insert(p.clone());
    }
    t.leftovers.clear();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source rewritten in place while it is copied, its mtime put back by the
    /// writer, is not installed: its size, mtime and inode are what they were, but its
    /// change time is not.
    #[test]
    fn a_source_rewritten_during_its_copy_with_its_mtime_put_back_is_not_installed() {
        use std::io::{Seek, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        let f = src.join("big");
        // Several copy buffers long, and old enough not to be read twice as "racy".
        std::fs::write(&f, vec![b'a'; 3 * 1024 * 1024]).unwrap();
        let old = filetime::FileTime::from_unix_time(1_600_000_000, 0);
        filetime::set_file_mtime(&f, old).unwrap();
        let scan = |p: &Path| crate::scan::scan(p, &crate::scan::ScanOptions::default()).unwrap();
        let plan = crate::mirror::plan_mirror(
            &scan(&src),
            &scan(&dst),
            &crate::mirror::MirrorOptions::default(),
        );
        let rewritten = AtomicBool::new(false);
        // Called between chunks of the copy: the third time, another program rewrites
        // the file's head, part of it read already, in place and sets its mtime back.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let stop = || {
            if calls.fetch_add(1, Ordering::SeqCst) == 2 && !rewritten.swap(true, Ordering::SeqCst)
            {
                let mut w = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
                w.seek(std::io::SeekFrom::Start(0)).unwrap();
                w.write_all(&vec![b'b'; 1024 * 1024]).unwrap();
                drop(w);
                filetime::set_file_mtime(&f, old).unwrap();
            }
            false
        };
        let mut root = Root::open(&dst).unwrap();
        let out = apply(
            &plan,
            &mut root,
            &ApplyOptions {
                src_root: &src,
                direction: "test",
                meta_from_plan: false,
                verify_hash: false,
                attrs_from_source: false,
                stop: &stop,
                done: None,
            },
        );
        assert!(rewritten.load(Ordering::SeqCst), "the writer ran mid-copy");
        assert!(!dst.join("big").exists(), "a torn copy was installed");
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        assert!(out.errors[0]
            .to_string()
            .contains("changed while being copied"));
    }
    use crate::tree::{MTime, Tree};

    /// Runs end with their directory once they hold `len` items, and never pass `max`.
    #[test]
    fn runs_end_where_their_directory_ends() {
        let paths: Vec<PathBuf> = ["a/1", "a/2", "a/3", "b/1", "b/2", "b/3", "b/4", "b/5", "c"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let runs = |len, max| {
            let mut runs: Vec<Vec<&str>> = Vec::new();
            for (i, p) in paths.iter().enumerate() {
                match runs.last_mut() {
                    Some(run) if run_goes_on(run.len(), (len, max), &paths[i - 1], p) => {
                        run.push(p.to_str().unwrap())
                    }
                    _ => runs.push(vec![p.to_str().unwrap()]),
                }
            }
            runs
        };
        assert_eq!(
            runs(2, usize::MAX),
            [
                vec!["a/1", "a/2", "a/3"],
                vec!["b/1", "b/2", "b/3", "b/4", "b/5"],
                vec!["c"]
            ]
        );
        assert_eq!(
            runs(2, 4),
            [
                vec!["a/1", "a/2", "a/3"],
                vec!["b/1", "b/2", "b/3", "b/4"],
                vec!["b/5", "c"]
            ]
        );
        assert_eq!(runs(1, 1).len(), paths.len());
    }

    /// The bulk merge (many changes) and one insert per change give the same tree.
    #[test]
    fn tree_after_folds_in_many_or_few_changes_alike() {
        for n in [3usize, 500] {
            let mut before = Tree::default();
            for i in 0..300 {
                let e = Entry::file(i, 0o644, MTime::new(1, 0), None);
                before.entries.insert(format!("d{}/f{i}", i % 9).into(), e);
            }
            before
                .entries
                .insert("gone".into(), Entry::dir(0o755, MTime::new(1, 0)));
            before.entries.insert(
                "gone/x".into(),
                Entry::file(1, 0o644, MTime::new(1, 0), None),
            );
            let mut applied = Applied::default();
            applied.removed.push("gone".into());
            let mut expected = before.entries.clone();
            expected.remove(Path::new("gone"));
            expected.remove(Path::new("gone/x"));
            for i in (0..n).rev() {
                let p = PathBuf::from(format!("d{}/f{}", i % 11, i * 2));
                let e = Entry::file(i as u64 + 1000, 0o600, MTime::new(2, 0), None);
                expected.insert(p.clone(), e.clone());
                applied.written.push((p, e));
            }
            let after = tree_after(before, &mut applied);
            assert_eq!(after.entries, expected, "{n} changes");
        }
    }
}
