//! The directory-handle root: a tree opened once, whose directories are reached one
//! component at a time without following a symlink. This file holds the navigation and
//! the reads; [`super::change`] and [`super::temp`] hold the writes.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use super::limits::{dir_cache_limit, open_file_limit, DESCRIPTORS};
use super::stat::{open_regular_at, Stat};
use crate::error::{Error, IoContext};

/// Whether `openat2` may be tried (Linux 5.6 and later, unless a sandbox forbids it).
pub(super) static OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Splits a relative path into its parent and its last component, refusing anything that
/// could leave the root (`..`, absolute paths, empty names).
pub(super) fn split(rel: &Path) -> Result<(&Path, &OsStr), Error> {
    // The common case, checked on the bytes: plain names joined by single slashes.
    let b = rel.as_os_str().as_bytes();
    if !b.is_empty()
        && b.split(|&c| c == b'/')
            .all(|n| !n.is_empty() && n != b"." && n != b"..")
    {
        let cut = b.iter().rposition(|&c| c == b'/');
        let (parent, name) = match cut {
            Some(i) => (&b[..i], &b[i + 1..]),
            None => (&b[..0], b),
        };
        return Ok((
            Path::new(OsStr::from_bytes(parent)),
            OsStr::from_bytes(name),
        ));
    }
    for c in rel.components() {
        if !matches!(c, Component::Normal(_)) {
            return Err(Error::entry(rel, "path would leave the root"));
        }
    }
    let name = rel
        .file_name()
        .ok_or_else(|| Error::entry(rel, "empty path"))?;
    Ok((rel.parent().unwrap_or(Path::new("")), name))
}

/// A directory tree we write into, opened once; all writes are relative to it.
#[derive(Debug)]
pub struct Root {
    pub(super) path: PathBuf,
    pub(super) fd: Arc<OwnedFd>,
    /// Open directories by relative path (keyed by bytes: hashing a `Path` parses it).
    pub(super) dirs: HashMap<OsString, Arc<OwnedFd>>,
    /// Unnamed files may be tried on this root's filesystem (see [`ANON_LINK`]).
    pub(super) anon: bool,
    /// A copy into this root may share its source's blocks (until a reflink fails).
    pub(super) reflink: bool,
}

impl Root {
    /// Opens an existing directory as a root to write into. No component of `path` is
    /// followed if it is a symlink (`openat2` with `RESOLVE_NO_SYMLINKS`; where the
    /// kernel has no `openat2`, the last component only): a planted link must not turn
    /// a store's tree, or a restore target, into somebody else's directory, not even by
    /// replacing a directory above it during a pass. Callers pass canonical paths.
    pub fn open(path: &Path) -> Result<Root, Error> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let refused = || Error::entry(path, "is or lies under a symlink; refusing to follow it");
        let mut opened = None;
        if OPENAT2.load(std::sync::atomic::Ordering::Relaxed) {
            let how = rfs::ResolveFlags::NO_SYMLINKS | rfs::ResolveFlags::NO_MAGICLINKS;
            match rfs::openat2(rfs::CWD, path, flags, Mode::empty(), how) {
                Ok(fd) => opened = Some(fd),
                Err(rustix::io::Errno::NOSYS)
                | Err(rustix::io::Errno::PERM)
                | Err(rustix::io::Errno::INVAL) => {
                    OPENAT2.store(false, std::sync::atomic::Ordering::Relaxed)
                }
                Err(rustix::io::Errno::LOOP) => return Err(refused()),
                // Too long for one call: the last component is checked below.
                Err(rustix::io::Errno::NAMETOOLONG) => {}
                Err(e) => return Err(Error::io("open", path, e.into())),
            }
        }
        let fd = match opened {
            Some(fd) => fd,
            None => match rfs::open(path, flags | OFlags::NOFOLLOW, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::LOOP) => return Err(refused()),
                Err(e) => return Err(Error::io("open", path, e.into())),
            },
        };
        Ok(Root {
            path: path.to_path_buf(),
            fd: Arc::new(fd),
            dirs: HashMap::new(),
            anon: open_file_limit() >= DESCRIPTORS,
            reflink: true,
        })
    }

    /// The directory `rel` as a root of its own, opened through this root's handles (no
    /// symlink followed on the way).
    pub fn subroot(&mut self, rel: &Path) -> Result<Root, Error> {
        let abs = self.abs(rel);
        let (anon, reflink) = (self.anon, self.reflink);
        let mut sub = Root::on_copy_of(self.dir(rel)?, abs, anon)?;
        sub.reflink = reflink;
        Ok(sub)
    }

    /// Another root on the same directory handle (for another thread).
    pub fn try_clone(&self) -> Result<Root, Error> {
        let mut copy = Root::on_copy_of(self.fd.as_fd(), self.path.clone(), self.anon)?;
        copy.reflink = self.reflink;
        Ok(copy)
    }

    /// A root on a duplicate of the directory handle `fd` (at `path`).
    fn on_copy_of(fd: BorrowedFd<'_>, path: PathBuf, anon: bool) -> Result<Root, Error> {
        let fd = rustix::io::fcntl_dupfd_cloexec(fd, 0).ctx("open dir", &path)?;
        Ok(Root {
            path,
            fd: Arc::new(fd),
            dirs: HashMap::new(),
            anon,
            reflink: true,
        })
    }

    /// The root's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The absolute path of `rel` under this root (for messages and reads only).
    pub fn abs(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    /// A handle on the directory `rel`, opened component by component without following
    /// any symlink.
    pub(super) fn dir(&mut self, rel: &Path) -> Result<BorrowedFd<'_>, Error> {
        if rel.as_os_str().is_empty() {
            return Ok(self.fd.as_fd());
        }
        if !self.dirs.contains_key(rel.as_os_str()) {
            if self.dirs.len() >= dir_cache_limit() {
                self.dirs.clear();
            }
            let fd = {
                let mut start: Option<&Arc<OwnedFd>> = None;
                let mut rest: Vec<&OsStr> = Vec::new();
                let mut cur = rel;
                loop {
                    if let Some(fd) = self.dirs.get(cur.as_os_str()) {
                        start = Some(fd);
                        break;
                    }
                    match (cur.parent(), cur.file_name()) {
                        (Some(parent), Some(name)) => {
                            rest.push(name);
                            cur = parent;
                            if cur.as_os_str().is_empty() {
                                break;
                            }
                        }
                        _ => return Err(Error::entry(rel, "path would leave the root")),
                    }
                }
                if rest
                    .iter()
                    .any(|n| n.as_bytes() == b".." || n.as_bytes() == b".")
                {
                    return Err(Error::entry(rel, "path would leave the root"));
                }
                let refused = |e: rustix::io::Errno| {
                    let path = self.path.join(rel);
                    if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                        Error::entry(
                            path,
                            "a parent is a symlink or not a directory; refusing to follow it",
                        )
                    } else {
                        Error::io("open dir", path, e.into())
                    }
                };
                let top: BorrowedFd<'_> = match start {
                    Some(s) => s.as_fd(),
                    None => self.fd.as_fd(),
                };
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                // Several levels at once: one `openat2` that the kernel refuses to take
                // through any symlink or out of `top`, instead of one `openat` per level.
                let mut fd: Option<OwnedFd> = None;
                if rest.len() > 1 && OPENAT2.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut joined = Vec::new();
                    for name in rest.iter().rev() {
                        if !joined.is_empty() {
                            joined.push(b'/');
                        }
                        joined.extend_from_slice(name.as_bytes());
                    }
                    let how = rfs::ResolveFlags::NO_SYMLINKS
                        | rfs::ResolveFlags::NO_MAGICLINKS
                        | rfs::ResolveFlags::BENEATH;
                    match rfs::openat2(top, OsStr::from_bytes(&joined), flags, Mode::empty(), how) {
                        Ok(f) => fd = Some(f),
                        // An older kernel, or a sandbox that forbids the call: level by
                        // level from now on.
                        Err(rustix::io::Errno::NOSYS)
                        | Err(rustix::io::Errno::PERM)
                        | Err(rustix::io::Errno::INVAL) => {
                            OPENAT2.store(false, std::sync::atomic::Ordering::Relaxed)
                        }
                        // A path longer than the kernel takes at once (4096 bytes):
                        // level by level, this time.
                        Err(rustix::io::Errno::NAMETOOLONG) => {}
                        Err(e) => return Err(refused(e)),
                    }
                }
                if fd.is_none() {
                    for name in rest.iter().rev() {
                        let base: BorrowedFd<'_> = match &fd {
                            Some(f) => f.as_fd(),
                            None => top,
                        };
                        fd = Some(rfs::openat(base, *name, flags, Mode::empty()).map_err(refused)?);
                    }
                }
                fd.expect("BUG: a non-empty relative path has at least one component")
            };
            self.dirs
                .insert(rel.as_os_str().to_os_string(), Arc::new(fd));
        }
        Ok(self.dirs[rel.as_os_str()].as_fd())
    }

    /// A shared handle on the directory `rel` (kept by a file being written in it).
    pub(super) fn dir_shared(&mut self, rel: &Path) -> Result<Arc<OwnedFd>, Error> {
        if rel.as_os_str().is_empty() {
            return Ok(Arc::clone(&self.fd));
        }
        self.dir(rel)?;
        Ok(Arc::clone(&self.dirs[rel.as_os_str()]))
    }

    /// Forgets cached handles at or under `rel` (after it was removed or replaced).
    pub(super) fn forget(&mut self, rel: &Path) {
        // Compared as bytes: this runs for every entry removed, over every cached handle.
        let r = rel.as_os_str().as_bytes();
        if r.is_empty() {
            self.dirs.clear();
            return;
        }
        self.dirs.retain(|k, _| {
            let k = k.as_os_str().as_bytes();
            !(k.starts_with(r) && (k.len() == r.len() || k[r.len()] == b'/'))
        });
    }

    /// The root directory's own stat.
    pub fn stat_root(&self) -> Result<Option<Stat>, Error> {
        rfs::fstat(&*self.fd)
            .map(|s| Some(Stat::from_raw(&s)))
            .ctx("stat", &self.path)
    }

    /// `lstat` of `rel` without following a final symlink; `None` if it does not exist.
    pub fn stat(&mut self, rel: &Path) -> Result<Option<Stat>, Error> {
        if rel.as_os_str().is_empty() {
            return self.stat_root();
        }
        let (parent, name) = split(rel)?;
        let dir = match self.dir(parent) {
            Ok(d) => d,
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Stat::from_raw(&st))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("stat", self.abs(rel), e.into())),
        }
    }

    /// The names in the directory `rel` (no symlink followed on the way).
    pub fn list(&mut self, rel: &Path) -> Result<Vec<OsString>, Error> {
        let abs = self.abs(rel);
        let dir = self.dir(rel)?;
        let fd = rfs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx("open dir", &abs)?;
        let mut names = Vec::new();
        for ent in rfs::Dir::read_from(&fd).ctx("read dir", &abs)? {
            let ent = ent.ctx("read dir", &abs)?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        Ok(names)
    }
    /// The target of the symlink `rel` (no symlink followed on the way to it).
    pub fn read_link(&mut self, rel: &Path) -> Result<PathBuf, Error> {
        let (parent, name) = split(rel)?;
        let abs = self.abs(rel);
        let dir = self.dir(parent)?;
        let t = rfs::readlinkat(dir, name, Vec::new()).ctx("readlink", &abs)?;
        Ok(PathBuf::from(OsStr::from_bytes(t.as_bytes())))
    }

    /// Opens `rel` for reading (no symlink followed anywhere on the way).
    pub fn open_read(&mut self, rel: &Path) -> Result<(File, Stat), Error> {
        let (parent, name) = split(rel)?;
        let abs = self.abs(rel);
        let dir = self.dir(parent)?;
        open_regular_at(dir, name, abs)
    }

    /// Opens (creating it if missing) the file `name` at the top of this root, never
    /// through a symlink, for a lock.
    pub fn open_lock_file(&self, name: &str) -> Result<File, Error> {
        let abs = self.abs(Path::new(name));
        let fd = rfs::openat(
            &*self.fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .ctx("open", &abs)?;
        Ok(File::from(fd))
    }
}
