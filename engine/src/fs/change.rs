//! Changes to entries under a [`Root`]: directories, symlinks, metadata, links,
//! renames and removals. Every one re-opens its parent through handles and never
//! follows a symlink.

use std::ffi::OsStr;
use std::io::{self};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps};

use super::root::{split, Root};
use super::stat::Stat;
use super::xattr::copy_xattrs_onto;
use super::{injected_fault, keeps_owners};
use crate::error::{Error, IoContext};
use crate::names;
use crate::tree::{Kind, MTime};

pub(super) fn ids(o: crate::tree::Owner) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        Some(rustix::fs::Uid::from_raw_unchecked(o.uid)),
        Some(rustix::fs::Gid::from_raw_unchecked(o.gid)),
    )
}

/// Gives the open file `fd` (whose stat `st` is updated) the owner `want` where it can
/// (as root), and returns the permission bits it may then have: `mode` when its owner
/// is `want`, else `mode` without setuid and setgid — a user's setuid program must
/// never become somebody else's, root's least of all.
pub(super) fn settle_owner(
    fd: BorrowedFd<'_>,
    st: &mut Stat,
    want: crate::tree::Owner,
    mode: u32,
) -> u32 {
    let kept = want.is_known()
        && (st.owner() == want || {
            let (u, g) = ids(want);
            rfs::fchown(fd, u, g).is_ok()
        });
    if kept {
        st.uid = want.uid;
        st.gid = want.gid;
        mode
    } else {
        mode & !0o6000
    }
}

pub(super) fn timespec(t: MTime) -> Timespec {
    Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec.into(),
    }
}

pub(super) fn times(mtime: MTime) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: timespec(mtime),
    }
}

impl Root {
    /// Creates (or atomically replaces) the symlink `rel` pointing at `target`, owned by
    /// `owner` where this process can give it (as root).
    pub fn symlink(
        &mut self,
        rel: &Path,
        target: &Path,
        mtime: MTime,
        owner: crate::tree::Owner,
    ) -> Result<(), Error> {
        let (parent, name) = split(rel)?;
        let abs = self.abs(rel);
        let dir = self.dir(parent)?;
        let temp = names::temp_name();
        in_writable(dir, || rfs::symlinkat(target, dir, temp.as_str())).ctx("symlink", &abs)?;
        if owner.is_known() && keeps_owners() {
            let (u, g) = ids(owner);
            // A link's owner grants nothing: one that cannot be kept is only logged.
            if let Err(e) = rfs::chownat(dir, temp.as_str(), u, g, AtFlags::SYMLINK_NOFOLLOW) {
                log::debug!("{}: owner not kept: {e}", crate::names::display(&abs));
            }
        }
        let done = rfs::utimensat(dir, temp.as_str(), &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
            .ctx("set times", &abs)
            .and_then(|_| rfs::renameat(dir, temp.as_str(), dir, name).ctx("rename", &abs));
        if done.is_err() {
            let _ = rfs::unlinkat(dir, temp.as_str(), AtFlags::empty());
        }
        done
    }

    /// Creates the directory `rel` with permission bits `mode` plus owner rwx (so it can
    /// be filled; the exact mode is set after its contents), whatever the umask. A run
    /// killed before that leaves the directory with nearly its final mode, never a
    /// stray 0700 that a two-way sync would take for a change.
    pub fn mkdir(&mut self, rel: &Path, mode: u32) -> Result<(), Error> {
        self.make_dir(rel, Some(mode))
    }

    /// Creates directory `rel` (if missing) owner-only, for a tree whose directory modes
    /// are all set when it is done (a version's); saves `mkdir`'s open and `chmod`.
    pub fn mkdir_unfinished(&mut self, rel: &Path) -> Result<(), Error> {
        self.make_dir(rel, None)
    }

    fn make_dir(&mut self, rel: &Path, mode: Option<u32>) -> Result<(), Error> {
        let (parent, name) = split(rel)?;
        let abs = self.abs(rel);
        let dir = self.dir(parent)?;
        match in_writable(dir, || rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700))) {
            Ok(()) => {
                let Some(mode) = mode else { return Ok(()) };
                let fd = rfs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx("open dir", &abs)?;
                rfs::fchmod(&fd, Mode::from_raw_mode((mode & 0o7777) | 0o700)).ctx("chmod", &abs)
            }
            Err(rustix::io::Errno::EXIST) => {
                match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if Stat::from_raw(&st).kind == Some(Kind::Dir) => Ok(()),
                    _ => Err(Error::entry(abs, "exists and is not a directory")),
                }
            }
            Err(e) => Err(Error::io("mkdir", abs, e.into())),
        }
    }

    /// Creates `rel` and every missing parent.
    pub fn mkdir_all(&mut self, rel: &Path) -> Result<(), Error> {
        let mut acc = PathBuf::new();
        for c in rel.components() {
            acc.push(c);
            self.mkdir(&acc, 0o755)?;
        }
        Ok(())
    }

    /// Sets a directory's permission bits and mtime (dirs are never shared with a version,
    /// so changing them in place is safe). `rel` may be empty for the root itself.
    pub fn set_dir_meta(
        &mut self,
        rel: &Path,
        mode: u32,
        mtime: MTime,
        owner: crate::tree::Owner,
    ) -> Result<(), Error> {
        let abs = self.abs(rel);
        let dir = self.dir(rel)?;
        if owner.is_known() && keeps_owners() {
            let st = Stat::from_raw(&rfs::fstat(dir).ctx("stat", &abs)?);
            if st.owner() != owner {
                let (u, g) = ids(owner);
                rfs::fchown(dir, u, g).ctx("chown", &abs)?;
            }
        }
        rfs::fchmod(dir, Mode::from_raw_mode(mode)).ctx("chmod", &abs)?;
        rfs::futimens(dir, &times(mtime)).ctx("set times", &abs)
    }

    /// Changes a file's mode and mtime in place, but only if no other name than the
    /// `names` expected (1; or a hard-linked group's, all of which take them) shares its
    /// inode (such as a version in the store); returns false if one does, and then the
    /// caller must replace the file instead.
    pub fn set_file_meta_if_unshared(
        &mut self,
        rel: &Path,
        (mode, mtime, owner): (u32, MTime, crate::tree::Owner),
        xattrs_from: Option<BorrowedFd<'_>>,
        names: u32,
    ) -> Result<bool, Error> {
        let (parent, name) = split(rel)?;
        let abs = self.abs(rel);
        let dir = self.dir(parent)?;
        let fd = match rfs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::ACCESS) | Err(rustix::io::Errno::PERM) => return Ok(false),
            Err(e) => return Err(Error::io("open", abs, e.into())),
        };
        let mut st = Stat::from_raw(&rfs::fstat(&fd).ctx("stat", &abs)?);
        if st.kind != Some(Kind::File) || st.nlink > u64::from(names.max(1)) {
            return Ok(false);
        }
        let mode = settle_owner(fd.as_fd(), &mut st, owner, mode);
        if let Some(from) = xattrs_from {
            copy_xattrs_onto(from, fd.as_fd(), &abs)?;
        }
        rfs::fchmod(&fd, Mode::from_raw_mode(mode)).ctx("chmod", &abs)?;
        rfs::futimens(&fd, &times(mtime)).ctx("set times", &abs)?;
        Ok(true)
    }

    /// Removes `rel` (a whole subtree for a directory) without following symlinks.
    pub fn remove(&mut self, rel: &Path) -> Result<(), Error> {
        let (parent, name) = split(rel)?;
        let abs = self.abs(rel);
        self.forget(rel);
        let dir = self.dir(parent)?;
        remove_at(dir, name, &abs)
    }
}

impl Root {
    /// Removes the directory `rel` only if it is empty.
    pub fn rmdir(&mut self, rel: &Path) -> Result<(), Error> {
        let (parent, name) = split(rel)?;
        let abs = self.abs(rel);
        self.forget(rel);
        let dir = self.dir(parent)?;
        match in_writable(dir, || rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(rustix::io::Errno::NOTEMPTY) | Err(rustix::io::Errno::EXIST) => Err(Error::entry(
                abs,
                "directory is not empty (something was added during the pass); left for the next pass",
            )),
            Err(e) => Err(Error::io("remove", abs, e.into())),
        }
    }

    /// Makes `to` a second name (hard link) of `from` inside this root; fails if `to`
    /// exists.
    pub fn link_within(&mut self, from: &Path, to: &Path) -> Result<(), Error> {
        let (fp, fname) = split(from)?;
        let (tp, tname) = split(to)?;
        let abs = self.abs(to);
        let fdir = self.dir_shared(fp)?;
        let tdir = self.dir(tp)?;
        rfs::linkat(&*fdir, fname, tdir, tname, AtFlags::empty()).ctx("link", &abs)
    }

    /// Makes `to` a hard link of `from` inside this root, replacing whatever file is at
    /// `to` in one rename (a link under a temporary name first).
    pub fn link_over(&mut self, from: &Path, to: &Path) -> Result<(), Error> {
        let (tp, tname) = split(to)?;
        let temp = tp.join(names::temp_name());
        self.link_within(from, &temp)?;
        let (_, temp_name) = split(&temp)?;
        let abs = self.abs(to);
        let dir = self.dir(tp)?;
        let done = rfs::renameat(dir, temp_name, dir, tname).ctx("rename", &abs);
        if done.is_err() {
            let _ = rfs::unlinkat(dir, temp_name, AtFlags::empty());
        }
        done
    }

    /// Hard-links `src_rel` of `src` as `rel` here. Fails with `EXDEV` across filesystems.
    pub fn link_from(&mut self, src: &mut Root, src_rel: &Path, rel: &Path) -> Result<(), Error> {
        let (sp, sn) = split(src_rel)?;
        let (dp, dn) = split(rel)?;
        let sdir = src.dir_shared(sp)?;
        let ddir = self.dir(dp)?;
        rfs::linkat(&*sdir, sn, ddir, dn, AtFlags::empty())
            .map_err(|e| Error::io("link", self.abs(rel), e.into()))
    }

    /// Renames `from` to `to` inside this root (both relative).
    pub fn rename(&mut self, from: &Path, to: &Path) -> Result<(), Error> {
        let (fp, fname) = split(from)?;
        let (tp, tname) = split(to)?;
        let abs = self.abs(to);
        self.forget(from);
        self.forget(to);
        let fdir = self.dir_shared(fp)?;
        let tdir = self.dir(tp)?;
        rfs::renameat(&*fdir, fname, tdir, tname).ctx("rename", &abs)
    }
}

impl Root {
    /// Renames the file `from` to `to` inside this root, only if `to` does not exist
    /// (an error naming `to` as existing otherwise).
    pub fn rename_new(&mut self, from: &Path, to: &Path) -> Result<(), Error> {
        let (fp, fname) = split(from)?;
        let (tp, tname) = split(to)?;
        let abs = self.abs(to);
        self.forget(from);
        let fdir = self.dir_shared(fp)?;
        let tdir = self.dir(tp)?;
        match rename_noreplace((fdir.as_fd(), fname), (tdir.as_fd(), tname)) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => Err(Error::entry(
                abs,
                "appeared on the destination during the pass; not overwritten",
            )),
            Err(e) => Err(Error::io("rename", abs, e.into())),
        }
    }
}

/// `renameat2(RENAME_NOREPLACE)`; where the filesystem has no such call (some network
/// filesystems), a check that `to` is missing, then a plain rename. `EEXIST` if `to`
/// exists.
pub(super) fn rename_noreplace<F: rustix::path::Arg + Copy, T: rustix::path::Arg + Copy>(
    (fdir, from): (BorrowedFd<'_>, F),
    (tdir, to): (BorrowedFd<'_>, T),
) -> rustix::io::Result<()> {
    match rfs::renameat_with(fdir, from, tdir, to, rfs::RenameFlags::NOREPLACE) {
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            match rfs::statat(tdir, to, AtFlags::SYMLINK_NOFOLLOW) {
                Err(rustix::io::Errno::NOENT) => rfs::renameat(fdir, from, tdir, to),
                Ok(_) => Err(rustix::io::Errno::EXIST),
                Err(e) => Err(e),
            }
        }
        r => r,
    }
}

impl Root {
    /// Flushes the directory that holds `rel` (a rename in it) to disk.
    pub fn sync_dir_of(&mut self, rel: &Path) -> Result<(), Error> {
        let (parent, _) = split(rel)?;
        let abs = self.abs(parent);
        let dir = self.dir(parent)?;
        rfs::fsync(dir).ctx("fsync", &abs)
    }

    /// Flushes the whole filesystem this root lives on (one `syncfs` for a batch).
    pub fn sync_fs(&self) -> Result<(), Error> {
        if injected_fault("syncfs") {
            return Err(Error::io(
                "sync",
                &self.path,
                io::Error::from_raw_os_error(5),
            ));
        }
        rfs::syncfs(&*self.fd).ctx("sync", &self.path)
    }
}

/// Runs `op` on an entry of `dir`; if it is refused because the directory is read-only
/// (a mirrored 0555 directory), makes the directory owner-writable and tries once more.
/// The planner sets the directory's real mode again after its contents.
pub(super) fn in_writable<T>(
    dir: BorrowedFd<'_>,
    op: impl Fn() -> rustix::io::Result<T>,
) -> rustix::io::Result<T> {
    match op() {
        Err(rustix::io::Errno::ACCESS) => {
            let st = Stat::from_raw(&rfs::fstat(dir)?);
            if st.mode & 0o200 != 0 {
                return Err(rustix::io::Errno::ACCESS);
            }
            rfs::fchmod(dir, Mode::from_raw_mode(st.mode | 0o200))?;
            op()
        }
        other => other,
    }
}

/// Removes the entry `name` of `dir`, recursing into directories without following links.
pub(super) fn remove_at(dir: BorrowedFd<'_>, name: &OsStr, abs: &Path) -> Result<(), Error> {
    match in_writable(dir, || rfs::unlinkat(dir, name, AtFlags::empty())) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(Error::io("remove", abs, e.into())),
    }
    let sub = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    );
    let sub = match sub {
        Ok(fd) => fd,
        Err(rustix::io::Errno::ACCESS) => {
            // A directory we may not list: make it ours to list, it is going away anyway.
            rfs::chmodat(dir, name, Mode::from_raw_mode(0o700), AtFlags::empty())
                .ctx("chmod", abs)?;
            rfs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx("open dir", abs)?
        }
        Err(e) => return Err(Error::io("open dir", abs, e.into())),
    };
    let mut children = Vec::new();
    for ent in rfs::Dir::read_from(&sub).ctx("read dir", abs)? {
        let ent = ent.ctx("read dir", abs)?;
        let n = ent.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        children.push(OsStr::from_bytes(n).to_os_string());
    }
    if !children.is_empty() {
        let st = Stat::from_raw(&rfs::fstat(&sub).ctx("stat", abs)?);
        if st.mode & 0o700 != 0o700 {
            rfs::fchmod(&sub, Mode::from_raw_mode(0o700)).ctx("chmod", abs)?;
        }
    }
    for child in children {
        remove_at(sub.as_fd(), &child, &abs.join(&child))?;
    }
    drop(sub);
    in_writable(dir, || rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)).ctx("remove", abs)
}

/// Creates the directory `path` that a user named (a restore target, a store), with
/// its missing parents, as `mkdir -p` does. Whatever is written inside it afterwards
/// goes through a [`Root`] opened on it, which refuses a symlink anywhere on the path.
pub fn make_dir_all(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).ctx("mkdir", path)
}
