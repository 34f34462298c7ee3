//! The copy workers: copies taken a run at a time from a shared list, written to
//! temporary names, flushed a batch at a time, then renamed into place.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::Error;
use crate::fs::{self, Root, Stat, TempWrite};
use crate::plan::mirror::Action;

use super::*;

/// An action with its place in its plan.
pub(super) type Numbered<'a> = (u32, &'a Action<'a>);

/// What copy workers share: the plan's actions, the places of the copies among them,
/// the next copy not taken, and where records go (see [`copy_worker`]).
pub(super) type CopyWork<'a> = (
    &'a [Action<'a>],
    &'a [u32],
    &'a AtomicUsize,
    Option<&'a Mutex<Vec<Copied>>>,
);

/// How many consecutive items a worker takes at once out of `total`: up to 32, but
/// few enough that every thread gets a share (16 large files must not all go to one).
pub fn run_length(total: usize) -> usize {
    (total / (crate::parallel::threads() * 8)).clamp(1, 32)
}

/// Whether a run of `taken` items (at least `len` make a run) whose last item is `last`
/// should also take `next`: a run goes on to the end of its directory, up to `max`
/// items, so that two workers seldom write into one directory at once (each would wait
/// on its lock in turn).
pub fn run_goes_on(taken: usize, (len, max): (usize, usize), last: &Path, next: &Path) -> bool {
    taken < len || (taken < max && crate::tree::parent_of(last) == crate::tree::parent_of(next))
}

/// Files written per batch before one filesystem-wide flush, and bytes.
pub(super) const BATCH_FILES: usize = 256;
pub(super) const BATCH_BYTES: u64 = 256 << 20;

/// Takes copies from `copies` (shared with the other workers through `next`) and does
/// them in batches: each file is written to its temporary name (or as an unnamed file,
/// see [`Root::write_temp`]) and checked, the batch is flushed to disk with one `syncfs`
/// — the same guarantee as an `fsync` per file, since every byte of every temporary file
/// is on disk when it returns — and only then is each file renamed (or linked) to its
/// final name. An interrupted batch is rolled back (its temporary files are removed);
/// files of earlier batches are complete where they are. The records of each batch go
/// to `done` when given, else stay in `out`.
pub(super) fn copy_worker(
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
        // A large file takes long to copy: the batch waiting for it is installed first,
        // so that what is done shows (and stays done if the pass is stopped meanwhile).
        let large = action.src.as_ref().is_some_and(|e| e.size >= BATCH_BYTES);
        if large && !pending.is_empty() {
            install_batch(&mut pending, dst, opts, out);
            pending_bytes = 0;
            hand_over(out, done);
        }
        if let (Some(start), Some(s)) = (opts.starting, action.src.as_ref()) {
            start(&action.path, s.size);
        }
        match prepare_copy(action, dst, src, opts, false) {
            Ok(mut p) => {
                p.temp.close();
                pending_bytes += p.n;
                pending.push(((at, action), p));
            }
            Err(Error::Interrupted { .. }) => {
                out.interrupted = true;
                break;
            }
            Err(e) => {
                log::error!(target: crate::error::FILE_ERROR, "{e}");
                out.failed.insert(action.path.to_path_buf());
                out.errors.push(e);
                halt_on_error(opts);
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
pub(super) fn hand_over(out: &mut Applied, done: Option<&Mutex<Vec<Copied>>>) {
    if let Some(done) = done {
        done.lock()
            .expect("BUG: no panic holds it")
            .append(&mut out.copied);
    }
}

/// Flushes a batch of prepared copies to disk, then renames each into place.
pub(super) fn install_batch(
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
                log_action(action, opts.direction, false);
                out.counts.add(action.op.verb());
                report_done(opts, at, out);
            }
            Err(e) => {
                log::error!(target: crate::error::FILE_ERROR, "{e}");
                out.failed.insert(action.path.to_path_buf());
                out.errors.push(e);
                halt_on_error(opts);
            }
        }
    }
}

/// A file copied to its temporary name, checked, waiting to be installed.
pub(super) struct Prepared {
    temp: fs::TempFile,
    /// The new file's own stat (its inode stays through the rename).
    new: Stat,
    digest: crate::tree::Digest,
    before: Stat,
    n: u64,
    mtime: crate::tree::MTime,
}

/// Copies one file to a temporary name beside its destination and checks it: the source
/// did not change while it was read, and (restore, twoway) its bytes are the planned ones.
pub(super) fn prepare_copy(
    action: &Action,
    dst: &mut Root,
    src: &mut Option<Root>,
    opts: &ApplyOptions<'_>,
    durable: bool,
) -> Result<Prepared, Error> {
    let path = &action.path;
    let s = src_of(action)?;
    let (file, before, src_abs) = match (opts.open_source, src.as_mut()) {
        (Some(open), _) => open(path, s)?,
        (None, Some(root)) => {
            let (f, st) = root.open_read(path)?;
            (f, st, opts.src_root.join(path))
        }
        (None, None) => {
            let abs = opts.src_root.join(path);
            let (f, st) = fs::open_regular(&abs)?;
            (f, st, abs)
        }
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
        blocks_of: Some(file.as_fd()),
    };
    let (temp, digest, n, new) =
        dst.write_temp(path, &mut limited, (mode, mtime, owner), opts.stop, how)?;
    match s.hash.filter(|_| opts.verify_hash) {
        // The bytes written are the planned ones, whole: whatever the source did while
        // it was read, the copy is what the plan wants (no stat after the read needed).
        Some(planned) if planned == digest && n == before.size => {}
        Some(_) => {
            return Err(Error::entry(
                src_abs,
                "does not match the SHA-256 it was planned with (changed since the scan, or damaged); left as it was",
            ));
        }
        None => {
            let after = fs::fstat(&file, &src_abs)?;
            if n != before.size
                || !crate::hash::unchanged_while_read(
                    &mut &file,
                    &before,
                    &after,
                    before.size,
                    digest,
                )
                .map_err(|e| Error::io("read", &src_abs, e))?
            {
                return Err(Error::entry(
                    &src_abs,
                    "changed while being copied; left for the next pass",
                ));
            }
        }
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
pub(super) fn commit_copy(
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
pub(super) fn copy(
    (at, action): Numbered,
    dst: &mut Root,
    src: &mut Option<Root>,
    opts: &ApplyOptions<'_>,
    out: &mut Applied,
) -> Result<(), Error> {
    let p = prepare_copy(action, dst, src, opts, true)?;
    commit_copy((at, action), p, dst, out)
}
