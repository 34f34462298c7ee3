//! One action at a time: the destination is re-checked as it is now, then changed
//! through [`crate::fs`]. A failure is recorded and the rest goes on.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::fs::{self, Root, TempWrite};
use crate::plan::mirror::{Action, Op};
use crate::tree::{under_any, Entry, Kind};

use super::*;

pub(super) fn run_sequence(
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
        let removes_dir = matches!(action.op, Op::Remove { kind: Kind::Dir } | Op::Rmdir);
        let result = if removes_dir && holds_failed(&out.failed, &action.path) {
            // A file a move left in it (it changed during the pass) is never removed.
            Err(Error::entry(
                dst.abs(&action.path),
                "holds a file that changed during the pass; left for the next pass",
            ))
        } else {
            run((at, action), dst, src, opts, out)
        };
        match result {
            Ok(()) => {
                // A move that had to copy (its file changed since the scan) says so.
                let copied = matches!(action.op, Op::Move { .. })
                    && out.copied.last().is_some_and(|c| c.action == at);
                if copied {
                    let as_copy =
                        Action::new(Op::Copy { replace: false }, &*action.path, None, None);
                    log_action(&as_copy, opts.direction, false);
                    out.counts.add(as_copy.op.verb());
                } else {
                    log_action(action, opts.direction, false);
                    out.counts.add(action.op.verb());
                }
                report_done(opts, at, out);
            }
            Err(Error::Interrupted { .. }) => {
                out.interrupted = true;
                break;
            }
            Err(e) => {
                log::error!(target: crate::error::FILE_ERROR, "{e}");
                if matches!(action.op, Op::Mkdir) {
                    failed_dirs.insert(action.path.to_path_buf());
                }
                out.failed.insert(action.path.to_path_buf());
                out.errors.push(e);
                halt_on_error(opts);
            }
        }
    }
}

/// Whether `failed` holds a path under the directory `dir`.
fn holds_failed(failed: &BTreeSet<PathBuf>, dir: &Path) -> bool {
    use std::ops::Bound;
    failed
        .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
        .next()
        .is_some_and(|p| p.starts_with(dir))
}

pub(super) fn src_of<'t>(action: &Action<'t>) -> Result<&'t Entry, Error> {
    action.src.ok_or_else(|| {
        Error::entry(
            action.path.to_path_buf(),
            "BUG: action without a source entry",
        )
    })
}

/// The destination still looks as it did when it was scanned.
pub(super) fn unchanged_since_scan(dst: &mut Root, action: &Action) -> Result<(), Error> {
    let now = dst.stat(&action.path)?;
    let same = match (action.dst, now) {
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

pub(super) fn run(
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
                fs::copy_dir_xattrs(src, dst, path)?;
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
        Op::SetFileMeta { also } => {
            let s = src_of(action)?;
            unchanged_since_scan(dst, action)?;
            // A mirror's file takes the source's attributes too.
            let from = match (opts.attrs_from_source, src.as_mut()) {
                (true, Some(src)) => src.open_read(path).ok(),
                _ => None,
            };
            let attrs = from.as_ref().map(|(f, _)| f.as_fd());
            let names = 1 + also.len() as u32;
            if dst.set_file_meta_if_unshared(path, (s.mode, s.mtime, s.owner), attrs, names)? {
                let mut e = action.dst.unwrap_or(s).clone();
                e.mode = s.mode;
                e.mtime = s.mtime;
                if s.owner.is_known() && fs::keeps_owners() {
                    e.owner = s.owner;
                }
                // The group's other names are this file: they took the change with it.
                for other in also.iter() {
                    out.meta.push((other.to_path_buf(), e.clone()));
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
        Op::Move { from } => move_file((at, action), from, dst, src, opts, out),
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
                            blocks_of: Some(file.as_fd()),
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

/// Moves the destination's file `from` to the action's path, then gives it the source's
/// mode and mtime. A file at `from` that is not the one scanned any more is left where
/// it is (and unknown to this pass), and the source's file is copied instead.
fn move_file(
    (at, action): Numbered,
    from: &Path,
    dst: &mut Root,
    src: &mut Option<Root>,
    opts: &ApplyOptions<'_>,
    out: &mut Applied,
) -> Result<(), Error> {
    let s = src_of(action)?;
    let path = &action.path;
    let scanned = action
        .dst
        .ok_or_else(|| Error::entry(from, "BUG: a move without the file it takes"))?;
    let as_scanned = |st: &fs::Stat| {
        st.kind == Some(Kind::File)
            && st.size == scanned.size
            && st.mtime == scanned.mtime
            && st.ino == scanned.ino
    };
    let copy_instead = |dst: &mut Root, src: &mut Option<Root>, out: &mut Applied| {
        log::warn!(
            "{} changed on the destination during the pass: left there for the next pass, and {} copied instead",
            dst.abs(from).display(),
            display(path)
        );
        out.failed.insert(from.to_path_buf());
        let as_copy = Action::new(Op::Copy { replace: false }, &**path, Some(s), None);
        copy((at, &as_copy), dst, src, opts, out)
    };
    if !dst.stat(from)?.as_ref().is_some_and(as_scanned) {
        return copy_instead(dst, src, out);
    }
    dst.rename_new(from, path)?;
    out.removed.push(from.to_path_buf());
    let mut e = scanned.clone();
    let keep_owners = fs::keeps_owners() && s.owner.is_known();
    let meta_differs =
        e.mode != s.mode || e.mtime != s.mtime || (keep_owners && e.owner != s.owner);
    // A source file whose inode changed since the last pass (a rename does that) may
    // have new extended attributes: the file moved takes them too.
    if meta_differs || (opts.attrs_from_source && s.touched) {
        let from_src = match (opts.attrs_from_source, src.as_mut()) {
            (true, Some(src)) => src.open_read(path).ok(),
            _ => None,
        };
        let attrs = from_src.as_ref().map(|(f, _)| f.as_fd());
        if !dst.set_file_meta_if_unshared(path, (s.mode, s.mtime, s.owner), attrs, 1)? {
            // Other names share the file: replace it with a copy rather than change them.
            let over = Action::new(Op::Copy { replace: true }, &**path, Some(s), Some(&e));
            return copy((at, &over), dst, src, opts, out);
        }
        e.mode = s.mode;
        e.mtime = s.mtime;
        if keep_owners {
            e.owner = s.owner;
        }
    }
    e.linked = false;
    e.touched = false;
    out.written.push((path.to_path_buf(), e));
    Ok(())
}
