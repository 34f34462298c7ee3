//! The safe file primitives: the only code in the suite that writes into a replica, a
//! store or a restore target.
//!
//! Every write goes through a [`Root`]: directories are opened one component at a time
//! with `O_NOFOLLOW`, so a symlink planted inside a root is never followed and no path
//! escapes it. Files reach their final name only by `rename` from a temporary file in the
//! same directory (or by linking an unnamed file to a name that does not exist), after
//! their bytes and metadata are complete and flushed. Nothing here decides *what* to
//! write; the planners do.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps};

use crate::error::{Error, IoContext};
use crate::names;
use crate::tree::{Digest, Entry, Kind, MTime};

/// The open-file limit, first raised from its soft value to the hard one (as the
/// runtimes of Go and Java do).
fn open_file_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let mut lim = getrlimit(Resource::Nofile);
        let wanted = lim.maximum.unwrap_or(1 << 20).min(1 << 20);
        if lim.current.is_some_and(|c| c < wanted)
            && setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(wanted),
                    maximum: lim.maximum,
                },
            )
            .is_ok()
        {
            lim.current = Some(wanted);
        }
        lim.current.unwrap_or(1 << 20)
    })
}

/// The descriptors a pass may hold (directory handles, batches of unnamed files): the
/// size the descriptor table is grown to up front, and the open-file limit below which
/// unnamed files are not used.
const DESCRIPTORS: u64 = 16_384;

/// Raises the open-file limit (see [`open_file_limit`]) and grows the process's table of
/// file descriptors to what a pass may hold ([`DESCRIPTORS`], or the limit). Call it
/// first in `main`, while the process has one thread: in a process with several, each
/// time the kernel grows the table it waits for an RCU grace period first, and every
/// thread that opens a file waits with it — 10 to 30 ms, with both cores idle, several
/// times in a pass that opens many files. Grown once now (by a descriptor numbered near
/// the top, closed at once), the table never needs to grow again.
pub fn reserve_descriptors() {
    let want = open_file_limit().min(DESCRIPTORS).saturating_sub(1);
    if want < 256 {
        return;
    }
    if let Ok(high) = rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), want as i32) {
        drop(high);
    }
}

/// How many directory handles each [`Root`] keeps open. A pass may have a dozen roots
/// open at once (copy workers, both sides of a two-way sync, versions), so the open-file
/// limit is shared out: a sixty-fourth of it per root, between 16 and 1024.
fn dir_cache_limit() -> usize {
    (open_file_limit() / 64).clamp(16, 1024) as usize
}

/// Whether a new file may be written as an unnamed file (`O_TMPFILE`) and linked to its
/// name when done, which costs the filesystem less than creating a temporary name and
/// renaming it. Such a file keeps its descriptor open until it is linked (a batch of
/// copies waiting for one flush holds one per file), so it needs an open-file limit well
/// above what the batches and the directory handles take; and the kernel must let this
/// process link a file by its descriptor (`AT_EMPTY_PATH`: Linux 6.10 and later, or with
/// `CAP_DAC_READ_SEARCH`). The first unnamed file answers that (see
/// [`Root::create_temp_mode`]).
static ANON_LINK: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(ANON_UNKNOWN);
const ANON_UNKNOWN: u8 = 0;
const ANON_YES: u8 = 1;
const ANON_NO: u8 = 2;

/// Whether `openat2` may be tried (Linux 5.6 and later, unless a sandbox forbids it).
static OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// What a filesystem can keep, as far as a sync must know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsTraits {
    /// Timestamps in steps of up to 2 s (FAT, exFAT).
    pub coarse_times: bool,
    /// Names that differ only in case are the same file (FAT, exFAT, SMB).
    pub folds_case: bool,
    /// Permission bits cannot be set (FAT, exFAT, SMB).
    pub no_modes: bool,
}

/// What a single `stat` tells about an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: Option<Kind>,
    pub size: u64,
    pub mode: u32,
    pub mtime: MTime,
    /// The inode's change time: no user can set it back, so a file rewritten in place
    /// with its mtime restored still shows a new one.
    pub ctime: MTime,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    /// 512-byte blocks allocated: fewer than the size needs means a sparse file.
    pub blocks: u64,
}

impl Stat {
    /// Whether the file has holes (fewer blocks allocated than its size needs).
    pub fn is_sparse(&self) -> bool {
        self.kind == Some(Kind::File) && self.blocks.saturating_mul(512) < self.size
    }

    // Field types differ between rustix backends and architectures: cast explicitly.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    pub fn from_raw(st: &rfs::Stat) -> Stat {
        let ft = rfs::FileType::from_raw_mode(st.st_mode);
        let kind = match ft {
            rfs::FileType::RegularFile => Some(Kind::File),
            rfs::FileType::Directory => Some(Kind::Dir),
            rfs::FileType::Symlink => Some(Kind::Symlink),
            _ => None,
        };
        Stat {
            kind,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mode: st.st_mode as u32 & 0o7777,
            mtime: MTime::new(
                st.st_mtime as i64,
                u32::try_from(st.st_mtime_nsec).unwrap_or(0),
            ),
            ctime: MTime::new(
                st.st_ctime as i64,
                u32::try_from(st.st_ctime_nsec).unwrap_or(0),
            ),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            blocks: st.st_blocks as u64,
        }
    }

    /// Owner and group.
    pub fn owner(&self) -> crate::tree::Owner {
        crate::tree::Owner {
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// True if kind, size, mtime and inode are the same. A writer may have put the
    /// mtime back: [`crate::hash::unchanged_while_read`] also weighs the change time.
    pub fn same_content_stamp(&self, other: &Stat) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mtime == other.mtime
            && self.ino == other.ino
    }
}

/// Whether the test suite asked for `what` to fail (`TWOWAY_INJECT_FAULT=syncfs`, or
/// `first-sync-flush` for the flush before a first sync records its progress): the only
/// way to make a flush fail on demand, since no filesystem here fails one at will. It
/// makes operations fail, never succeed, so it cannot hide a real error.
pub fn injected_fault(what: &str) -> bool {
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FAULT
        .get_or_init(|| std::env::var("TWOWAY_INJECT_FAULT").ok())
        .as_deref()
        .is_some_and(|f| f.split(',').any(|x| x == what))
}

/// Whether this process runs as root, and so can keep every file's owner (and must, or
/// a user's setuid file would become root's).
pub fn keeps_owners() -> bool {
    rustix::process::geteuid().is_root()
}

fn ids(o: crate::tree::Owner) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        Some(rustix::fs::Uid::from_raw_unchecked(o.uid)),
        Some(rustix::fs::Gid::from_raw_unchecked(o.gid)),
    )
}

/// Gives the open file `fd` (whose stat `st` is updated) the owner `want` where it can
/// (as root), and returns the permission bits it may then have: `mode` when its owner
/// is `want`, else `mode` without setuid and setgid — a user's setuid program must
/// never become somebody else's, root's least of all.
fn settle_owner(fd: BorrowedFd<'_>, st: &mut Stat, want: crate::tree::Owner, mode: u32) -> u32 {
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

/// The names of the extended attributes of `fd` (empty where the filesystem has none).
fn xattr_names(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
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
fn xattr_value(fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
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
    let wanted = xattr_names(from).ctx("list attributes of the source of", abs)?;
    if wanted.is_empty() {
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

/// `lstat` of an absolute path.
pub fn lstat(path: &Path) -> Result<Stat, Error> {
    rfs::lstat(path)
        .map(|st| Stat::from_raw(&st))
        .ctx("stat", path)
}

fn timespec(t: MTime) -> Timespec {
    Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec.into(),
    }
}

fn times(mtime: MTime) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: timespec(mtime),
    }
}

/// Opens a file for reading without following a symlink and without blocking on a fifo;
/// refuses anything that is not a regular file.
pub fn open_regular(path: &Path) -> Result<(File, Stat), Error> {
    open_regular_at(rfs::CWD, path.as_os_str(), path.to_path_buf())
}

/// Opens the entry `name` of `dir` for reading, without following a symlink or
/// blocking on a fifo; refuses anything that is not a regular file (`abs` names it).
fn open_regular_at(dir: BorrowedFd<'_>, name: &OsStr, abs: PathBuf) -> Result<(File, Stat), Error> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open", &abs)?;
    let st = Stat::from_raw(&rfs::fstat(&fd).ctx("stat", &abs)?);
    if st.kind != Some(Kind::File) {
        return Err(Error::entry(abs, "not a regular file"));
    }
    Ok((File::from(fd), st))
}

/// `fstat` of an open file.
pub fn fstat(file: &File, path: &Path) -> Result<Stat, Error> {
    rfs::fstat(file)
        .map(|st| Stat::from_raw(&st))
        .ctx("stat", path)
}

/// Splits a relative path into its parent and its last component, refusing anything that
/// could leave the root (`..`, absolute paths, empty names).
fn split(rel: &Path) -> Result<(&Path, &OsStr), Error> {
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
    path: PathBuf,
    fd: Arc<OwnedFd>,
    /// Open directories by relative path (keyed by bytes: hashing a `Path` parses it).
    dirs: HashMap<OsString, Arc<OwnedFd>>,
    /// Unnamed files may be tried on this root's filesystem (see [`ANON_LINK`]).
    anon: bool,
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
        })
    }

    /// The directory `rel` as a root of its own, opened through this root's handles (no
    /// symlink followed on the way).
    pub fn subroot(&mut self, rel: &Path) -> Result<Root, Error> {
        let abs = self.abs(rel);
        let anon = self.anon;
        Root::on_copy_of(self.dir(rel)?, abs, anon)
    }

    /// Another root on the same directory handle (for another thread).
    pub fn try_clone(&self) -> Result<Root, Error> {
        Root::on_copy_of(self.fd.as_fd(), self.path.clone(), self.anon)
    }

    /// A root on a duplicate of the directory handle `fd` (at `path`).
    fn on_copy_of(fd: BorrowedFd<'_>, path: PathBuf, anon: bool) -> Result<Root, Error> {
        let fd = rustix::io::fcntl_dupfd_cloexec(fd, 0).ctx("open dir", &path)?;
        Ok(Root {
            path,
            fd: Arc::new(fd),
            dirs: HashMap::new(),
            anon,
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
    fn dir(&mut self, rel: &Path) -> Result<BorrowedFd<'_>, Error> {
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
    fn dir_shared(&mut self, rel: &Path) -> Result<Arc<OwnedFd>, Error> {
        if rel.as_os_str().is_empty() {
            return Ok(Arc::clone(&self.fd));
        }
        self.dir(rel)?;
        Ok(Arc::clone(&self.dirs[rel.as_os_str()]))
    }

    /// Forgets cached handles at or under `rel` (after it was removed or replaced).
    fn forget(&mut self, rel: &Path) {
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

    /// `lstat` of `rel` without following a final symlink; `None` if it does not exist.
    pub fn stat(&mut self, rel: &Path) -> Result<Option<Stat>, Error> {
        if rel.as_os_str().is_empty() {
            return rfs::fstat(&*self.fd)
                .map(|s| Some(Stat::from_raw(&s)))
                .ctx("stat", &self.path);
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

    /// Starts a new file that will replace `rel` when committed.
    pub fn create_temp(&mut self, rel: &Path) -> Result<TempFile, Error> {
        self.create_temp_mode(rel, 0o600, false)
    }

    /// [`create_temp`](Self::create_temp) with the permission bits the file will have
    /// (the umask or a default ACL may change them; `write_temp` checks the file's real
    /// mode and sets it exactly when it differs). A file for a name that does not exist
    /// (`new_file`: it will be committed with [`TempFile::commit_new`]) is an unnamed
    /// file where the filesystem and the kernel allow it.
    fn create_temp_mode(
        &mut self,
        rel: &Path,
        mode: u32,
        new_file: bool,
    ) -> Result<TempFile, Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let (parent, name) = split(rel)?;
        let final_name = name.to_os_string();
        let abs = self.abs(rel);
        let dir = self.dir_shared(parent)?;
        let mode = Mode::from_raw_mode(mode & 0o777);
        if new_file && self.anon && ANON_LINK.load(Relaxed) != ANON_NO {
            match rfs::openat(
                &*dir,
                ".",
                OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
                mode,
            ) {
                Ok(fd) => {
                    let mut t = TempFile {
                        dir,
                        temp: OsString::new(),
                        final_name,
                        abs,
                        file: Some(File::from(fd)),
                    };
                    // The first one asks whether it can be linked by its descriptor, by
                    // taking a temporary name: it is an ordinary temporary file then.
                    if ANON_LINK.load(Relaxed) == ANON_YES {
                        return Ok(t);
                    }
                    if t.name_it().is_ok() {
                        ANON_LINK.store(ANON_YES, Relaxed);
                        return Ok(t);
                    }
                    ANON_LINK.store(ANON_NO, Relaxed);
                    let (dir, final_name, abs) = (
                        Arc::clone(&t.dir),
                        std::mem::take(&mut t.final_name),
                        std::mem::take(&mut t.abs),
                    );
                    return Self::create_named_temp(dir, final_name, abs, mode);
                }
                // No unnamed files on this filesystem (or in this directory: read-only
                // directories are dealt with below).
                Err(rustix::io::Errno::OPNOTSUPP)
                | Err(rustix::io::Errno::ISDIR)
                | Err(rustix::io::Errno::INVAL) => self.anon = false,
                Err(_) => {}
            }
        }
        Self::create_named_temp(dir, final_name, abs, mode)
    }

    /// A new file under a temporary name in `dir`, to be `final_name` there (`abs`).
    fn create_named_temp(
        dir: Arc<OwnedFd>,
        final_name: OsString,
        abs: PathBuf,
        mode: Mode,
    ) -> Result<TempFile, Error> {
        let temp = OsString::from(names::temp_name());
        let fd = in_writable(dir.as_fd(), || {
            rfs::openat(
                &*dir,
                &temp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                mode,
            )
        })
        .ctx("create", &abs)?;
        Ok(TempFile {
            dir,
            temp,
            final_name,
            abs,
            file: Some(File::from(fd)),
        })
    }

    /// Writes a whole file from `reader` through a temporary file, hashing what it writes,
    /// and returns the temporary file ready to commit, with its stat (mode and mtime as
    /// set); `how` says when its bytes are flushed and how it will be committed.
    pub fn write_temp(
        &mut self,
        rel: &Path,
        reader: &mut dyn Read,
        (mode, mtime, owner): (u32, MTime, crate::tree::Owner),
        stop: &dyn Fn() -> bool,
        how: TempWrite<'_>,
    ) -> Result<(TempFile, Digest, u64, Stat), Error> {
        let TempWrite {
            durable,
            new_file,
            sparse,
            xattrs_from,
        } = how;
        let mut temp = self.create_temp_mode(rel, mode, new_file)?;
        let copy_error = |e| match e {
            crate::hash::CopyError::Read(e) => Error::io("read", self.abs(rel), e),
            crate::hash::CopyError::Write(e) => Error::io("write", self.abs(rel), e),
            crate::hash::CopyError::Stopped => Error::entry(self.abs(rel), "interrupted"),
        };
        let (digest, n) = if sparse {
            let mut w = SparseWriter::new(temp.file_mut());
            let done = crate::hash::copy_hashing(reader, &mut w, stop).map_err(copy_error)?;
            w.finish().ctx("write", &self.abs(rel))?;
            done
        } else {
            crate::hash::copy_hashing(reader, temp.file_mut(), stop).map_err(copy_error)?
        };
        // Created with the wanted permission bits, the file usually has them already
        // (the umask or a default ACL may have taken some): the one stat a copy needs
        // anyway (for its inode) tells whether the `fchmod` is needed.
        let mut st = temp.stat()?;
        let abs = self.abs(rel);
        let f = temp.file_mut();
        // The owner first: `chown` clears setuid and setgid, which `chmod` then sets
        // only where the owner is kept.
        let mode = settle_owner(f.as_fd(), &mut st, owner, mode);
        if st.mode != mode {
            rfs::fchmod(&*f, Mode::from_raw_mode(mode)).ctx("chmod", &abs)?;
            st.mode = mode;
        }
        if let Some(from) = xattrs_from {
            copy_xattrs(from, f.as_fd(), &abs)?;
        }
        rfs::futimens(&*f, &times(mtime)).ctx("set times", &abs)?;
        st.mtime = mtime;
        if durable {
            temp.sync()?;
        }
        Ok((temp, digest, n, st))
    }

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

    /// Changes a file's mode and mtime in place, but only if no other name (such as a
    /// version in the store) shares its inode; returns false if it is shared, and then the
    /// caller must replace the file instead.
    pub fn set_file_meta_if_unshared(
        &mut self,
        rel: &Path,
        (mode, mtime, owner): (u32, MTime, crate::tree::Owner),
        xattrs_from: Option<BorrowedFd<'_>>,
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
        if st.kind != Some(Kind::File) || st.nlink > 1 {
            return Ok(false);
        }
        let mode = settle_owner(fd.as_fd(), &mut st, owner, mode);
        if let Some(from) = xattrs_from {
            copy_xattrs(from, fd.as_fd(), &abs)?;
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

    /// What the filesystem this root lives on can keep.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    pub fn fs_traits(&self) -> FsTraits {
        const MSDOS: i64 = 0x4d44;
        const EXFAT: i64 = 0x2011_bab0;
        const SMB: [i64; 3] = [0x517b, 0xfe53_4d42, 0xff53_4d42];
        let magic = rfs::fstatfs(&*self.fd).ok().map(|s| s.f_type as i64);
        let fat = matches!(magic, Some(MSDOS) | Some(EXFAT));
        let smb = magic.is_some_and(|m| SMB.contains(&m));
        FsTraits {
            coarse_times: fat,
            folds_case: fat || smb,
            no_modes: fat || smb,
        }
    }
}

/// Runs `op` on an entry of `dir`; if it is refused because the directory is read-only
/// (a mirrored 0555 directory), makes the directory owner-writable and tries once more.
/// The planner sets the directory's real mode again after its contents.
fn in_writable<T>(
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
fn remove_at(dir: BorrowedFd<'_>, name: &OsStr, abs: &Path) -> Result<(), Error> {
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

/// How [`Root::write_temp`] writes a file.
#[derive(Debug, Clone, Copy)]
pub struct TempWrite<'a> {
    /// Its bytes are flushed to disk before it returns; otherwise the caller flushes a
    /// whole batch at once ([`Root::sync_fs`]) before committing any of it.
    pub durable: bool,
    /// It will be committed with [`TempFile::commit_new`] (so it may be an unnamed file).
    pub new_file: bool,
    /// The source is sparse: blocks of zeros become holes, so the copy stays sparse.
    pub sparse: bool,
    /// The source file, whose extended attributes (and ACLs) the copy gets.
    pub xattrs_from: Option<BorrowedFd<'a>>,
}

/// A writer into a file that leaves a hole where a whole block of zeros would go (as
/// `cp --sparse=auto` does for a sparse source); [`SparseWriter::finish`] gives the file
/// its full length where it ends in a hole.
pub struct SparseWriter<'f> {
    file: &'f mut File,
    pos: u64,
    behind: bool,
}

impl<'f> SparseWriter<'f> {
    const BLOCK: usize = 4096;

    pub fn new(file: &'f mut File) -> Self {
        SparseWriter {
            file,
            pos: 0,
            behind: false,
        }
    }

    /// Sets the file's length to what was written, holes included.
    pub fn finish(self) -> io::Result<()> {
        if self.behind {
            self.file.set_len(self.pos)?;
        }
        Ok(())
    }
}

/// Whether every byte of `b` is zero (an OR over runs of bytes, which the compiler
/// turns into wide loads: a sparse file is mostly zeros).
fn all_zero(b: &[u8]) -> bool {
    b.chunks(256)
        .all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0)
}

impl Write for SparseWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::io::Seek;
        for block in buf.chunks(Self::BLOCK) {
            if block.len() == Self::BLOCK && all_zero(block) {
                self.behind = true;
            } else {
                if self.behind {
                    self.file.seek(io::SeekFrom::Start(self.pos))?;
                    self.behind = false;
                }
                self.file.write_all(block)?;
            }
            self.pos += block.len() as u64;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A file being written under a temporary name, or as an unnamed file (`temp` empty)
/// where the kernel allows (see `ANON_LINK`); removed on drop unless committed.
#[derive(Debug)]
pub struct TempFile {
    dir: Arc<OwnedFd>,
    temp: OsString,
    final_name: OsString,
    abs: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub fn file_mut(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("BUG: the file is open until commit")
    }

    /// Sets owner (where it can), mode and mtime; setuid and setgid only where the
    /// owner is kept.
    pub fn set_meta(
        &mut self,
        mode: u32,
        mtime: MTime,
        owner: crate::tree::Owner,
    ) -> Result<(), Error> {
        let abs = self.abs.clone();
        let f = self.file_mut();
        f.flush().ctx("write", &abs)?;
        let mut st = fstat(f, &abs)?;
        let mode = settle_owner(f.as_fd(), &mut st, owner, mode);
        rfs::fchmod(&*f, Mode::from_raw_mode(mode)).ctx("chmod", &abs)?;
        rfs::futimens(&*f, &times(mtime)).ctx("set times", &abs)
    }

    /// Flushes the file's bytes to disk.
    pub fn sync(&mut self) -> Result<(), Error> {
        let abs = self.abs.clone();
        self.file_mut().sync_all().ctx("fsync", &abs)
    }

    /// Sets owner, mode and mtime and flushes the bytes to disk.
    pub fn finish(
        &mut self,
        mode: u32,
        mtime: MTime,
        owner: crate::tree::Owner,
    ) -> Result<(), Error> {
        self.set_meta(mode, mtime, owner)?;
        self.sync()
    }

    /// Closes a named file, keeping only its name until it is committed or dropped (so
    /// a batch waiting for one flush holds fewer file descriptors). An unnamed file
    /// stays open: its descriptor is all there is of it.
    pub fn close(&mut self) {
        if !self.temp.is_empty() {
            self.file = None;
        }
    }

    /// The inode of the new file (it keeps it after the rename).
    pub fn stat(&self) -> Result<Stat, Error> {
        match &self.file {
            Some(f) => fstat(f, &self.abs),
            None => rfs::statat(&*self.dir, &self.temp, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| Stat::from_raw(&st))
                .ctx("stat", &self.abs),
        }
    }

    /// Whether the file has no name yet (an `O_TMPFILE` file).
    pub fn is_unnamed(&self) -> bool {
        self.temp.is_empty() && self.file.is_some()
    }

    /// Gives an unnamed file a temporary name.
    fn name_it(&mut self) -> Result<(), Error> {
        if self.temp.is_empty() {
            let temp = OsString::from(names::temp_name());
            let f = self
                .file
                .as_ref()
                .expect("BUG: an unnamed file is open until committed");
            rfs::linkat(f, "", &*self.dir, &temp, AtFlags::EMPTY_PATH).ctx("link", &self.abs)?;
            self.temp = temp;
        }
        Ok(())
    }

    /// Renames (or for an unnamed file, links) the finished file to its final name, which
    /// must not exist: something that appeared there since the scan is never replaced.
    pub fn commit_new(mut self) -> Result<(), Error> {
        let appeared = || {
            Error::entry(
                self.abs.clone(),
                "appeared on the destination during the pass; left for the next pass",
            )
        };
        if self.temp.is_empty() {
            let f = self
                .file
                .take()
                .expect("BUG: an unnamed file is open until committed");
            return match rfs::linkat(&f, "", &*self.dir, &self.final_name, AtFlags::EMPTY_PATH) {
                Ok(()) => Ok(()),
                Err(rustix::io::Errno::EXIST) => Err(appeared()),
                Err(e) => Err(Error::io("link", self.abs.clone(), e.into())),
            };
        }
        self.file = None;
        let r = match rfs::renameat_with(
            &*self.dir,
            &self.temp,
            &*self.dir,
            &self.final_name,
            rfs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => Err(appeared()),
            // No renameat2 here (some network filesystems): check, then rename.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
                match rfs::statat(&*self.dir, &self.final_name, AtFlags::SYMLINK_NOFOLLOW) {
                    Err(rustix::io::Errno::NOENT) => {
                        rfs::renameat(&*self.dir, &self.temp, &*self.dir, &self.final_name)
                            .ctx("rename", &self.abs)
                    }
                    _ => Err(appeared()),
                }
            }
            Err(e) => Err(Error::io("rename", self.abs.clone(), e.into())),
        };
        if r.is_ok() {
            self.temp.clear();
        }
        r
    }

    /// Renames the finished file over its final name.
    pub fn commit(mut self) -> Result<(), Error> {
        self.name_it()?;
        self.file = None;
        let r = rfs::renameat(&*self.dir, &self.temp, &*self.dir, &self.final_name)
            .ctx("rename", &self.abs);
        if r.is_ok() {
            self.temp.clear();
        }
        r
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.temp.is_empty() {
            let _ = rfs::unlinkat(&*self.dir, &self.temp, AtFlags::empty());
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename,
/// fsync of the directory). For the tool's own small files: state, registry, manifests.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// [`write_atomic`] of the bytes `fill` writes (through a buffer).
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), Error> {
    let parent = path
        .parent()
        .ok_or_else(|| Error::entry(path, "no parent directory"))?;
    std::fs::create_dir_all(parent).ctx("mkdir", parent)?;
    let tmp = parent.join(names::temp_name());
    let res = (|| {
        let f = File::create(&tmp).ctx("create", &tmp)?;
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, f);
        fill(&mut w).ctx("write", &tmp)?;
        let f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("write", &tmp)?;
        f.sync_all().ctx("fsync", &tmp)?;
        std::fs::rename(&tmp, path).ctx("rename", path)?;
        // The rename itself is on disk only once its directory is.
        File::open(parent)
            .and_then(|d| d.sync_all())
            .ctx("fsync", parent)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// [`write_atomic_with`], unless `path` already holds exactly the bytes `fill` writes:
/// they are compared as they are made, a block at a time, never held whole (a file
/// rewritten with the same bytes would cost a write and a flush for nothing). Returns
/// whether the file was written.
pub fn write_atomic_unless_same(
    path: &Path,
    fill: impl Fn(&mut dyn Write) -> std::io::Result<()>,
) -> Result<bool, Error> {
    if let Ok(f) = File::open(path) {
        let mut same = std::io::BufWriter::with_capacity(
            64 * 1024,
            SameAs {
                reader: std::io::BufReader::with_capacity(64 * 1024, f),
                scratch: Vec::new(),
            },
        );
        let equal = fill(&mut same).is_ok()
            && same
                .into_inner()
                .is_ok_and(|mut same| matches!(same.reader.read(&mut [0u8; 1]), Ok(0)));
        if equal {
            return Ok(false);
        }
    }
    write_atomic_with(path, |w| fill(w))?;
    Ok(true)
}

/// A writer that only compares what is written with what `reader` holds; it fails at
/// the first difference.
struct SameAs<R> {
    reader: R,
    scratch: Vec<u8>,
}

impl<R: Read> Write for SameAs<R> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.scratch.resize(buf.len(), 0);
        self.reader.read_exact(&mut self.scratch)?;
        if self.scratch != buf {
            return Err(std::io::Error::other("differs"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds an [`Entry`] from a stat (and link target).
pub fn entry_from_stat(st: &Stat, target: Option<PathBuf>) -> Option<Entry> {
    let kind = st.kind?;
    Some(Entry {
        kind,
        size: if kind == Kind::File { st.size } else { 0 },
        mode: st.mode,
        mtime: st.mtime,
        ino: st.ino,
        target: target.map(Box::new),
        hash: None,
        owner: st.owner(),
        linked: false,
        touched: false,
    })
}

#[cfg(test)]
#[path = "fsops_tests.rs"]
mod tests;
