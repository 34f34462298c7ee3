//! Atomic writes of the tool's own files (state, caches, manifests, registry): a
//! temporary file in the same directory, flushed, then renamed over the old one.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, IoContext};
use crate::names;

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
    replace(path, true, fill)
}

/// Replaces `path` by a rename from a temporary file beside it that `fill` writes;
/// `durable`: the bytes, then the rename, are flushed to disk before this returns.
fn replace(
    path: &Path,
    durable: bool,
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
        if durable {
            f.sync_all().ctx("fsync", &tmp)?;
        }
        std::fs::rename(&tmp, path).ctx("rename", path)?;
        if !durable {
            return Ok(());
        }
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

/// Replaces `path` with `bytes` by a rename, without flushing: for a file of the tool's
/// own whose loss in a crash costs only work (an older one, or none, is left).
pub fn replace_unflushed(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    replace(path, false, |w| w.write_all(bytes))
}

impl super::Root {
    /// [`write_atomic_with`] of the file `rel` under this root, through its directory
    /// handles (no symlink followed on the way): for the tool's own files inside a store
    /// (a version's manifest). The bytes are flushed before the rename, and the rename
    /// before this returns.
    pub fn write_atomic_with(
        &mut self,
        rel: &Path,
        fill: impl FnOnce(&mut std::io::BufWriter<&mut File>) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        let abs = self.abs(rel);
        // Readable by all, as a file made by `File::create` under the usual umask.
        let mut temp = self.create_temp_mode(rel, 0o644, false)?;
        {
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, temp.file_mut());
            fill(&mut w).ctx("write", &abs)?;
            w.flush().ctx("write", &abs)?;
        }
        temp.sync()?;
        temp.commit()?;
        self.sync_dir_of(rel)
    }
}

/// An unnamed file under `dir` (`O_TMPFILE` where the filesystem has it, else a file
/// unlinked at once): scratch data of the tool's own that no one else sees, gone when
/// it is closed, even after a kill.
pub fn scratch_file(dir: &Path) -> Result<std::fs::File, Error> {
    tempfile::tempfile_in(dir).map_err(|e| Error::io("create a scratch file in", dir, e))
}
