//! Temporary files: a new file is written (and flushed) under a temporary name, or as
//! an unnamed file, and reaches its final name only by an atomic rename or link.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use super::change::{in_writable, settle_owner, times};
use super::root::{split, Root};
use super::stat::fstat;
use super::stat::Stat;
use super::xattr::copy_xattrs;
use crate::error::{Error, IoContext};
use crate::names;
use crate::tree::{Digest, MTime};

/// Whether a new file may be written as an unnamed file (`O_TMPFILE`) and linked to its
/// name when done, which costs the filesystem less than creating a temporary name and
/// renaming it. Such a file keeps its descriptor open until it is linked (a batch of
/// copies waiting for one flush holds one per file), so it needs an open-file limit well
/// above what the batches and the directory handles take; and the kernel must let this
/// process link a file by its descriptor (`AT_EMPTY_PATH`: Linux 6.10 and later, or with
/// `CAP_DAC_READ_SEARCH`). The first unnamed file answers that (see
/// [`Root::create_temp_mode`]).
pub(super) static ANON_LINK: std::sync::atomic::AtomicU8 =
    std::sync::atomic::AtomicU8::new(ANON_UNKNOWN);
const ANON_UNKNOWN: u8 = 0;
const ANON_YES: u8 = 1;
const ANON_NO: u8 = 2;

impl Root {
    /// Starts a new file that will replace `rel` when committed.
    pub fn create_temp(&mut self, rel: &Path) -> Result<TempFile, Error> {
        self.create_temp_mode(rel, 0o600, false)
    }

    /// [`create_temp`](Self::create_temp) with the permission bits the file will have
    /// (the umask or a default ACL may change them; `write_temp` checks the file's real
    /// mode and sets it exactly when it differs). A file for a name that does not exist
    /// (`new_file`: it will be committed with [`TempFile::commit_new`]) is an unnamed
    /// file where the filesystem and the kernel allow it.
    pub(super) fn create_temp_mode(
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
                OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
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
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
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
            blocks_of,
        } = how;
        let mut temp = self.create_temp_mode(rel, mode, new_file)?;
        let (digest, n) = self.fill(&mut temp, reader, blocks_of, sparse, stop, &self.abs(rel))?;
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
}

impl Root {
    /// Fills `temp` with what `reader` yields, hashing it: by sharing the blocks of
    /// `blocks_of` (the same file, read from its start) where this root's filesystem can
    /// (a reflink, as `cp --reflink=auto`: btrfs, xfs), else by copying the bytes. A
    /// reflink is hashed as the new file reads back, so the digest is always that of
    /// what was written.
    pub fn fill(
        &mut self,
        temp: &mut TempFile,
        reader: &mut dyn Read,
        blocks_of: Option<BorrowedFd<'_>>,
        sparse: bool,
        stop: &dyn Fn() -> bool,
        read_from: &Path,
    ) -> Result<(Digest, u64), Error> {
        if let (Some(src), true) = (blocks_of, self.reflink) {
            match rfs::ioctl_ficlone(temp.file_mut(), src) {
                Ok(()) => return temp.hash_back(stop),
                // Not on this filesystem, or not between these two: copied, and not
                // tried again through this root.
                Err(rustix::io::Errno::OPNOTSUPP)
                | Err(rustix::io::Errno::NOTTY)
                | Err(rustix::io::Errno::INVAL)
                | Err(rustix::io::Errno::XDEV)
                | Err(rustix::io::Errno::BADF)
                | Err(rustix::io::Errno::PERM)
                | Err(rustix::io::Errno::NOSYS) => self.reflink = false,
                // Anything else (no space for the new extent records, say) is the
                // copy's own error.
                Err(e) => return Err(Error::io("write", temp.abs.clone(), e.into())),
            }
        }
        temp.fill_hashing(reader, sparse, stop, read_from)
    }
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
    /// The source file, whose blocks the copy shares where the filesystem can (see
    /// [`Root::fill`]); the reader must then read it from its start.
    pub blocks_of: Option<BorrowedFd<'a>>,
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
    /// Writes everything `reader` yields into the file, hashing it on the way; `sparse`:
    /// blocks of zeros are left as holes. `read_from` names the source in errors; `stop`
    /// is checked between chunks.
    pub fn fill_hashing(
        &mut self,
        reader: &mut dyn Read,
        sparse: bool,
        stop: &dyn Fn() -> bool,
        read_from: &Path,
    ) -> Result<(Digest, u64), Error> {
        let abs = self.abs.clone();
        let copy_error = |e| match e {
            super::CopyError::Read(e) => Error::io("read", read_from, e),
            super::CopyError::Write(e) => Error::io("write", &abs, e),
            super::CopyError::Stopped => Error::Interrupted { path: abs.clone() },
        };
        if sparse {
            let mut w = SparseWriter::new(self.file_mut());
            let done = super::copy_hashing(reader, &mut w, stop).map_err(copy_error)?;
            w.finish().ctx("write", &abs)?;
            Ok(done)
        } else {
            super::copy_hashing(reader, self.file_mut(), stop).map_err(copy_error)
        }
    }

    /// Hashes the file as it reads back from its start (after a reflink).
    fn hash_back(&mut self, stop: &dyn Fn() -> bool) -> Result<(Digest, u64), Error> {
        use std::io::{Seek, SeekFrom};
        let abs = self.abs.clone();
        let mut f: &File = self.file_mut();
        f.seek(SeekFrom::Start(0)).ctx("read", &abs)?;
        super::copy_hashing(&mut f, &mut io::sink(), stop).map_err(|e| match e {
            super::CopyError::Read(e) | super::CopyError::Write(e) => Error::io("read", &abs, e),
            super::CopyError::Stopped => Error::Interrupted { path: abs.clone() },
        })
    }

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
        let r = match super::change::rename_noreplace(
            (self.dir.as_fd(), &self.temp),
            (self.dir.as_fd(), &self.final_name),
        ) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => Err(appeared()),
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
