//! What a `stat` tells, and the read-only opens that return one. Nothing here writes.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};

use crate::error::{Error, IoContext};
use crate::tree::{Entry, Kind, MTime};

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

/// `lstat` of an absolute path.
pub fn lstat(path: &Path) -> Result<Stat, Error> {
    rfs::lstat(path)
        .map(|st| Stat::from_raw(&st))
        .ctx("stat", path)
}

/// Opens a file for reading without following a symlink and without blocking on a fifo;
/// refuses anything that is not a regular file.
pub fn open_regular(path: &Path) -> Result<(File, Stat), Error> {
    open_regular_at(rfs::CWD, path.as_os_str(), path.to_path_buf())
}

/// Opens the entry `name` of `dir` for reading, without following a symlink or
/// blocking on a fifo; refuses anything that is not a regular file (`abs` names it).
pub(super) fn open_regular_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    abs: PathBuf,
) -> Result<(File, Stat), Error> {
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
