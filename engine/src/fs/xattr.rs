//! Extended attributes (POSIX ACLs among them): read, compared and copied through
//! open handles, never through a path that could follow a symlink.

use std::ffi::OsStr;
use std::io::{self};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, Mode, OFlags};

use super::root::{split, Root};
use crate::error::{Error, IoContext};

/// The names of the extended attributes of `fd` (empty where the filesystem has none).
pub(super) fn xattr_names(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    let n = loop {
        match rfs::flistxattr(fd, &mut buf[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let want = rfs::flistxattr_query(fd)?;
                buf.resize(want.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    Ok(buf[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// The value of the extended attribute `name` of `fd`.
pub(super) fn xattr_value(fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rfs::fgetxattr(fd, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let want = rfs::fgetxattr_query(fd, name)?;
                buf.resize(want.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Gives `to` the extended attributes of `from` (POSIX ACLs are two of them), and
/// removes the others it has, as far as both filesystems and this process's rights
/// allow: an attribute that cannot be set here (another namespace, no support) is left
/// out, never an error. A source without any costs one `flistxattr`.
pub fn copy_xattrs(from: BorrowedFd<'_>, to: BorrowedFd<'_>, abs: &Path) -> Result<(), Error> {
    give_xattrs(from, to, abs, true)
}

/// [`copy_xattrs`] onto a file that was there before (its metadata changed in place, or
/// moved): it ends with exactly the source's attributes, none where the source has none
/// (an attribute it kept from before would never be looked at again).
pub fn copy_xattrs_onto(from: BorrowedFd<'_>, to: BorrowedFd<'_>, abs: &Path) -> Result<(), Error> {
    give_xattrs(from, to, abs, false)
}

fn give_xattrs(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    abs: &Path,
    fresh: bool,
) -> Result<(), Error> {
    let wanted = xattr_names(from).ctx("list attributes of the source of", abs)?;
    if wanted.is_empty() && fresh {
        // As usual: one call, and the copy keeps what it was made with (an ACL from
        // its directory's default ACL, say, as `cp -a` leaves it).
        return Ok(());
    }
    let present = xattr_names(to).unwrap_or_default();
    for name in present.iter().filter(|n| !wanted.contains(n)) {
        // (An ACL the new file took from its directory's default ACL, say.)
        let _ = rfs::fremovexattr(to, OsStr::from_bytes(name));
    }
    for name in &wanted {
        let name = OsStr::from_bytes(name);
        let value = match xattr_value(from, name) {
            Ok(v) => v,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => {
                continue
            }
            Err(e) => return Err(Error::io("read attribute of the source of", abs, e)),
        };
        match rfs::fsetxattr(to, name, &value, rfs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::PERM) => {
                log::debug!(
                    "{}: attribute {} not kept here",
                    crate::names::display(abs),
                    name.to_string_lossy()
                );
            }
            Err(e) => return Err(Error::io("set attribute", abs, e.into())),
        }
    }
    Ok(())
}

/// Whether `rel` carries the same extended attributes (names and values) in `a` and in
/// `b`: a file or a directory, opened through handles. What cannot be read counts as
/// the same (the pass reports unreadable entries elsewhere).
pub fn same_attributes(a: &mut Root, b: &mut Root, rel: &Path) -> bool {
    let open = |r: &mut Root| -> Option<OwnedFd> {
        let (parent, name) = split(rel).ok()?;
        let dir = r.dir(parent).ok()?;
        rfs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
    };
    let (Some(fa), Some(fb)) = (open(a), open(b)) else {
        return true;
    };
    let attrs = |fd: &OwnedFd| -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut all: Vec<(Vec<u8>, Vec<u8>)> = xattr_names(fd.as_fd())
            .ok()?
            .into_iter()
            .map(|n| {
                let v = xattr_value(fd.as_fd(), OsStr::from_bytes(&n)).unwrap_or_default();
                (n, v)
            })
            .collect();
        all.sort();
        Some(all)
    };
    match (attrs(&fa), attrs(&fb)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// [`copy_xattrs`] from the directory `rel` of `src` to the one of `dst`.
pub fn copy_dir_xattrs(src: &mut Root, dst: &mut Root, rel: &Path) -> Result<(), Error> {
    let abs = dst.abs(rel);
    let from = src.dir(rel)?;
    let to = dst.dir(rel)?;
    copy_xattrs(from, to, &abs)
}
