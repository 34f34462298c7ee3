//! The files of a history's versions: a version's file read back (head, then entries one
//! at a time), written whole, and the digest of what a version's entries record besides
//! their content.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use engine::error::Error;
use engine::fs::Root;
use engine::tree::encoding::{EntryRecord, EntryRef, SeqReader};
use engine::tree::{Digest, Kind};

use super::{damaged, version_file, Form, History, VersionHead, DIFF, FULL, VERSIONS};

/// Entries recorded alike in two versions, one after another in both: the place of the
/// first among the new version's entries, how many, and where their bytes are in the
/// older version's file and how many.
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    pub(super) first: u64,
    pub(super) count: u64,
    pub(super) at: u64,
    pub(super) bytes: u64,
}

/// A version's file read whole: its head, and for a difference what it removes.
pub(super) struct Read {
    pub(super) head: VersionHead,
    pub(super) form: Form,
    pub(super) removed: Vec<PathBuf>,
    pub(super) entries: Vec<EntryRecord>,
}

/// A version's file being read: its head, then its entries one at a time (a full
/// version of a big tree is megabytes, and a pass reads it while it writes the next).
pub(super) struct VersionReader {
    pub(super) abs: PathBuf,
    pub(super) head: VersionHead,
    pub(super) form: Form,
    pub(super) removed: Vec<PathBuf>,
    pub(super) left: usize,
    pub(super) seq: SeqReader<std::fs::File>,
}

impl VersionReader {
    /// Hands the next entry (in path order, borrowed from the read buffer) to `f`;
    /// `None` after the last, once no byte follows it.
    pub(super) fn next_with<O>(
        &mut self,
        f: impl FnOnce(EntryRef<'_>) -> O,
    ) -> Result<Option<O>, Error> {
        if self.left == 0 {
            return match self.seq.at_end() {
                Ok(true) => Ok(None),
                Ok(false) => Err(damaged(&self.abs, "bytes after the end")),
                Err(e) => Err(damaged(&self.abs, e)),
            };
        }
        self.left -= 1;
        self.seq
            .take_entry(false, f)
            .map(Some)
            .map_err(|e| damaged(&self.abs, e))
    }

    /// Where the next entry's bytes start in the file.
    pub(super) fn offset(&self) -> u64 {
        self.seq.offset()
    }

    /// The next entry, in path order; `None` after the last, once no byte follows it.
    pub(super) fn next_entry(&mut self) -> Result<Option<EntryRecord>, Error> {
        self.next_with(|e| e.to_owned())
    }
}

/// Two entries at one path record the same thing (the inode a replica had is no part
/// of a version).
pub(super) fn same(a: &EntryRef<'_>, b: &EntryRef<'_>) -> bool {
    a.kind == b.kind
        && a.size == b.size
        && a.mode == b.mode
        && a.mtime == b.mtime
        && a.sha256 == b.sha256
        && a.owner == b.owner
        && a.target.map(Path::as_os_str) == b.target.map(Path::as_os_str)
}

/// The metadata digest of a version's entries and root: what the directory SHA-256 does
/// not cover (each entry's kind, mode, mtime and owner; the path and target of
/// everything that is not a file). Two versions with the same directory SHA-256 list the
/// same files in the same order, so together the two tell every change.
pub fn meta_digest<'a>(
    entries: impl Iterator<Item = EntryRef<'a>>,
    root: (u32, (i64, u32)),
) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let put = |buf: &mut Vec<u8>, mode: u32, mtime: (i64, u32)| {
        buf.extend_from_slice(&mode.to_le_bytes());
        buf.extend_from_slice(&mtime.0.to_le_bytes());
        buf.extend_from_slice(&mtime.1.to_le_bytes());
    };
    put(&mut buf, root.0, root.1);
    for e in entries {
        buf.push(e.kind as u8);
        put(&mut buf, e.mode, e.mtime);
        match e.owner {
            Some((u, g)) => {
                buf.push(1);
                buf.extend_from_slice(&u.to_le_bytes());
                buf.extend_from_slice(&g.to_le_bytes());
            }
            None => buf.push(0),
        }
        if e.kind != Kind::File {
            let p = e.path.as_os_str().as_bytes();
            buf.extend_from_slice(&(p.len() as u64).to_le_bytes());
            buf.extend_from_slice(p);
            let t = e
                .target
                .map(|t| t.as_os_str().as_bytes())
                .unwrap_or_default();
            buf.extend_from_slice(&(t.len() as u64).to_le_bytes());
            buf.extend_from_slice(t);
        }
        if buf.len() >= 60 * 1024 {
            h.update(&buf);
            buf.clear();
        }
    }
    h.update(&buf);
    Digest(h.finalize().into()).to_hex()
}

impl History {
    /// The versions' files, oldest first, by id: `(id, form, base)` as the names say
    /// (the base of a difference is read from its file).
    pub(super) fn files(&self, root: &mut Root) -> Result<Vec<(u64, bool)>, Error> {
        let names = match root.stat(Path::new(VERSIONS))? {
            Some(_) => root.list(Path::new(VERSIONS))?,
            None => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for n in names {
            let n = n.to_string_lossy();
            let Some((id, ext)) = n.split_once('.') else {
                continue;
            };
            let Ok(id) = id.parse::<u64>() else { continue };
            match ext {
                "full" => out.push((id, true)),
                "diff" => out.push((id, false)),
                _ => {}
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads one version's file: head always, entries only with `entries`.
    pub(super) fn read(
        &self,
        root: &mut Root,
        id: u64,
        full: bool,
        entries: bool,
    ) -> Result<Read, Error> {
        let mut r = self.reader(root, id, full)?;
        let mut list = Vec::new();
        if entries {
            list.reserve(r.left.min(1 << 20));
            while let Some(e) = r.next_entry()? {
                list.push(e);
            }
        }
        Ok(Read {
            head: r.head,
            form: r.form,
            removed: r.removed,
            entries: list,
        })
    }

    /// Opens one version's file and reads its head; its entries are read one at a time.
    pub(super) fn reader(
        &self,
        root: &mut Root,
        id: u64,
        full: bool,
    ) -> Result<VersionReader, Error> {
        let form = if full {
            Form::Full
        } else {
            Form::Diff { base: 0 }
        };
        self.reader_at(root, &version_file(id, form), id, full)
    }

    /// Opens the file `rel` of version `id` (whole when `full`) and reads its head.
    pub(super) fn reader_at(
        &self,
        root: &mut Root,
        rel: &Path,
        id: u64,
        full: bool,
    ) -> Result<VersionReader, Error> {
        let abs = self.path.join(rel);
        let (file, _) = root.open_read(rel)?;
        let mut seq = SeqReader::new(file);
        let format: u32 = seq.take().map_err(|e| damaged(&abs, e))?;
        let head: VersionHead = seq.take().map_err(|e| damaged(&abs, e))?;
        let (form, removed) = match format {
            FULL => (Form::Full, Vec::new()),
            DIFF => {
                let base: u64 = seq.take().map_err(|e| damaged(&abs, e))?;
                let removed: Vec<Vec<u8>> = seq.take().map_err(|e| damaged(&abs, e))?;
                let removed = removed
                    .into_iter()
                    .map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)))
                    .collect();
                (Form::Diff { base }, removed)
            }
            other => {
                return Err(Error::entry(
                    &abs,
                    format!("version format {other} is not one this build reads"),
                ))
            }
        };
        if head.id != id || (format == FULL) != full {
            return Err(damaged(&abs, "its head does not match its name"));
        }
        let left: usize = seq.take().map_err(|e| damaged(&abs, e))?;
        Ok(VersionReader {
            abs,
            head,
            form,
            removed,
            left,
            seq,
        })
    }

    /// Writes version `head.id` whole: its head, then the entries `news` gives. With
    /// `from` (a whole version's id, and the runs of entries recorded alike there), those
    /// runs' bytes are copied from that version's file rather than encoded again: the
    /// file is the same byte for byte.
    pub(super) fn write_full<'n, I: Iterator<Item = EntryRef<'n>>>(
        &self,
        root: &mut Root,
        head: &VersionHead,
        news: impl Fn() -> I,
        from: Option<(u64, &[Run])>,
    ) -> Result<(), Error> {
        use std::io::{Read as _, Write as _};
        let count = news().count();
        let (mut src, alike): (Box<dyn std::io::Read>, &[Run]) = match from {
            Some((id, alike)) => {
                let (file, _) = root.open_read(&version_file(id, Form::Full))?;
                (
                    Box::new(std::io::BufReader::with_capacity(1 << 16, file)),
                    alike,
                )
            }
            None => (Box::new(std::io::empty()), &[]),
        };
        root.write_atomic_with(&version_file(head.id, Form::Full), |w| {
            let enc = |e: postcard::Error| std::io::Error::other(e);
            let mut buf = postcard::to_extend(&(FULL, head, count), Vec::with_capacity(1 << 16))
                .map_err(enc)?;
            let mut pos = 0u64;
            let mut next = alike.iter().peekable();
            let mut skip = 0u64;
            for (i, n) in news().enumerate() {
                if skip > 0 {
                    // Within a run already copied.
                    skip -= 1;
                    continue;
                }
                match next.next_if(|r| r.first as usize == i) {
                    Some(r) => {
                        // The bytes between the last run copied and this one (entries
                        // that changed) are passed over.
                        if r.at < pos {
                            return Err(std::io::Error::other("runs out of order"));
                        }
                        std::io::copy(&mut (&mut src).take(r.at - pos), &mut std::io::sink())?;
                        w.write_all(&buf)?;
                        buf.clear();
                        let copied = std::io::copy(&mut (&mut src).take(r.bytes), w)?;
                        if copied != r.bytes {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                        pos = r.at + r.bytes;
                        skip = r.count - 1;
                    }
                    None => buf = postcard::to_extend(&n, buf).map_err(enc)?,
                }
                if buf.len() >= 1 << 16 {
                    w.write_all(&buf)?;
                    buf.clear();
                }
            }
            w.write_all(&buf)
        })
    }
}

impl History {
    /// The difference `id`: the paths its newer base has that it lacks, and its entries
    /// that the base does not hold the same.
    pub fn diff_of(&self, id: u64) -> Result<(Vec<PathBuf>, Vec<EntryRecord>), Error> {
        let mut root = self.open()?;
        let r = self.read(&mut root, id, false, true)?;
        Ok((r.removed, r.entries))
    }
}

/// The SHA-256 of the files the difference `id` holds (read through `root`, the
/// history opened).
pub fn diff_shas(h: &History, root: &mut Root, id: u64) -> Result<Vec<Digest>, Error> {
    Ok(diff_files(h, root, id)?
        .into_iter()
        .map(|(d, _)| d)
        .collect())
}

/// The SHA-256 and size of the files the difference `id` holds.
pub fn diff_files(h: &History, root: &mut Root, id: u64) -> Result<Vec<(Digest, u64)>, Error> {
    let mut out = Vec::new();
    let mut r = h.reader(root, id, false)?;
    while r
        .next_with(|e| {
            if let Some(d) = e.sha256 {
                out.push((d, e.size));
            }
        })?
        .is_some()
    {}
    Ok(out)
}
