//! The files of a history's versions: a version's file read back (head, then entries one
//! at a time), written whole, and the digest of what a version's entries record besides
//! their content.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use engine::error::Error;
use engine::fs::Root;
use engine::tree::encoding::{AsEntryRef, EntryRecord, EntryRef, SeqReader};
use engine::tree::{Digest, Kind};

use super::{damaged, version_file, Form, History, VersionHead, DIFF, DIFF2, FULL, VERSIONS};

/// A version's file read whole: its head, and for a difference what it removes.
pub(super) struct Read {
    pub(super) head: VersionHead,
    pub(super) form: Form,
    pub(super) removed: Vec<PathBuf>,
    pub(super) entries: Vec<EntryRecord>,
    /// For a difference: the base's entries it does not hold the same, where it keeps
    /// them (see [`Delta::was`]).
    pub(super) was: Option<Vec<EntryRecord>>,
}

impl Read {
    /// The difference this file holds (empty for a whole version).
    pub(super) fn delta(self) -> Delta {
        Delta {
            gone: self.removed,
            put: self.entries,
            was: self.was,
        }
    }
}

/// A difference between a version and its base: what takes the base's state to the
/// version's.
#[derive(Debug, Clone, Default)]
pub(super) struct Delta {
    /// Paths the base has that the version lacks.
    pub(super) gone: Vec<PathBuf>,
    /// The version's entries that the base does not hold the same (inode included).
    pub(super) put: Vec<EntryRecord>,
    /// The base's entries that the version does not hold the same; `None` where they
    /// are not kept: a difference toward a newer version (only ever read that way), or
    /// one of the earlier format.
    pub(super) was: Option<Vec<EntryRecord>>,
}

impl Delta {
    /// The same difference the other way (the base's state from the version's), where
    /// the base's entries are known.
    pub(super) fn inverse(&self) -> Option<Delta> {
        let was = self.was.as_ref()?;
        let had: std::collections::HashSet<&Path> = was.iter().map(|e| e.path.as_path()).collect();
        Some(Delta {
            gone: self
                .put
                .iter()
                .filter(|e| !had.contains(e.path.as_path()))
                .map(|e| e.path.clone())
                .collect(),
            put: was.clone(),
            was: Some(self.put.clone()),
        })
    }
}

/// A version's file being read: its head, then its entries one at a time (a full
/// version of a big tree is megabytes, and a pass reads it while it writes the next).
pub(super) struct VersionReader {
    pub(super) abs: PathBuf,
    pub(super) head: VersionHead,
    pub(super) form: Form,
    pub(super) removed: Vec<PathBuf>,
    pub(super) left: usize,
    /// The base's entries follow the version's (a difference of the current format).
    pub(super) more: bool,
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
            if self.more {
                // The base's entries follow: read by `take_was`.
                return Ok(None);
            }
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

    /// The next entry, in path order; `None` after the last, once no byte follows it.
    pub(super) fn next_entry(&mut self) -> Result<Option<EntryRecord>, Error> {
        self.next_with(|e| e.to_owned())
    }

    /// After the last entry: hands each of the base's entries that a difference keeps to
    /// `f`, and says whether it keeps them (a whole version, or a difference of the
    /// earlier format, does not).
    pub(super) fn take_was(&mut self, mut f: impl FnMut(EntryRef<'_>)) -> Result<bool, Error> {
        while self.left > 0 {
            self.next_with(|_| ())?;
        }
        if !self.more {
            return Ok(false);
        }
        self.more = false;
        let n: usize = self.seq.take().map_err(|e| damaged(&self.abs, e))?;
        for _ in 0..n {
            self.seq
                .take_entry(false, &mut f)
                .map_err(|e| damaged(&self.abs, e))?;
        }
        match self.seq.at_end() {
            Ok(true) => Ok(true),
            Ok(false) => Err(damaged(&self.abs, "bytes after the end")),
            Err(e) => Err(damaged(&self.abs, e)),
        }
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
pub fn meta_digest(entries: impl Iterator<Item: AsEntryRef>, root: (u32, (i64, u32))) -> String {
    let mut d = MetaDigest::new(root);
    for e in entries {
        d.add(&e.entry_ref());
    }
    d.finish()
}

/// [`meta_digest`] taken an entry at a time, from entries that are not at hand as an
/// iterator (a tree read compact gives one entry at a time).
pub struct MetaDigest {
    h: sha2::Sha256,
    buf: Vec<u8>,
}

impl MetaDigest {
    pub fn new(root: (u32, (i64, u32))) -> MetaDigest {
        use sha2::Digest as _;
        let mut d = MetaDigest {
            h: sha2::Sha256::new(),
            buf: Vec::with_capacity(64 * 1024),
        };
        d.put(root.0, root.1);
        d
    }

    fn put(&mut self, mode: u32, mtime: (i64, u32)) {
        self.buf.extend_from_slice(&mode.to_le_bytes());
        self.buf.extend_from_slice(&mtime.0.to_le_bytes());
        self.buf.extend_from_slice(&mtime.1.to_le_bytes());
    }

    pub fn add(&mut self, e: &EntryRef<'_>) {
        use sha2::Digest as _;
        self.buf.push(e.kind as u8);
        self.put(e.mode, e.mtime);
        let buf = &mut self.buf;
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
            self.h.update(&*buf);
            buf.clear();
        }
    }

    pub fn finish(mut self) -> String {
        use sha2::Digest as _;
        self.h.update(&self.buf);
        Digest(self.h.finalize().into()).to_hex()
    }
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
        let mut was = None;
        if entries {
            list.reserve(r.left.min(1 << 20));
            while let Some(e) = r.next_entry()? {
                list.push(e);
            }
            let mut w = Vec::new();
            if r.take_was(|e| w.push(e.to_owned()))? {
                was = Some(w);
            }
        }
        Ok(Read {
            head: r.head,
            form: r.form,
            removed: r.removed,
            entries: list,
            was,
        })
    }

    /// Opens one version's file and reads its head; its entries are read one at a time.
    pub(super) fn reader(
        &self,
        root: &mut Root,
        id: u64,
        full: bool,
    ) -> Result<VersionReader, Error> {
        self.reader_at(root, &version_file(id, Form::of(full)), id, full)
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
            DIFF | DIFF2 => {
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
        if head.id != id || (format == FULL) != full || (!full && form == (Form::Diff { base: id }))
        {
            return Err(damaged(&abs, "its head does not match its name"));
        }
        let left: usize = seq.take().map_err(|e| damaged(&abs, e))?;
        Ok(VersionReader {
            abs,
            head,
            form,
            removed,
            left,
            more: format == DIFF2,
            seq,
        })
    }

    /// Writes version `head.id` whole: its head, then the `count` entries `each` hands
    /// out (in path order).
    pub(super) fn write_full(
        &self,
        root: &mut Root,
        head: &VersionHead,
        count: usize,
        each: impl FnOnce(&mut dyn FnMut(EntryRef<'_>)) -> Result<(), Error>,
    ) -> Result<(), Error> {
        use std::io::Write as _;
        root.write_atomic_with(&version_file(head.id, Form::Full), |w| {
            let enc = |e: postcard::Error| std::io::Error::other(e);
            let mut buf = postcard::to_extend(&(FULL, head, count), Vec::with_capacity(1 << 16))
                .map_err(enc)?;
            let mut failed: Option<std::io::Error> = None;
            let mut written = 0usize;
            each(&mut |n| {
                if failed.is_some() {
                    return;
                }
                written += 1;
                match postcard::to_extend(&n, std::mem::take(&mut buf)) {
                    Ok(b) => buf = b,
                    Err(e) => failed = Some(enc(e)),
                }
                if buf.len() >= 1 << 16 {
                    if let Err(e) = w.write_all(&buf) {
                        failed = Some(e);
                    }
                    buf.clear();
                }
            })
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Some(e) = failed {
                return Err(e);
            }
            if written != count {
                return Err(std::io::Error::other("the entries changed while written"));
            }
            w.write_all(&buf)
        })
    }

    /// Writes version `id` (head `head`) as the difference `delta` from `base`, replacing
    /// any difference it had; with the base's entries where they are known.
    pub(super) fn write_diff(
        &self,
        root: &mut Root,
        head: &VersionHead,
        base: u64,
        delta: &Delta,
    ) -> Result<(), Error> {
        let gone: Vec<&[u8]> = delta
            .gone
            .iter()
            .map(|p| p.as_os_str().as_bytes())
            .collect();
        root.write_atomic_with(&version_file(head.id, Form::Diff { base }), |w| {
            let puts = delta.put.iter().map(|e| e.as_ref());
            match &delta.was {
                Some(was) => {
                    engine::tree::encoding::write_seq(
                        w,
                        &(DIFF2, head, base, &gone, delta.put.len()),
                        puts,
                    )?;
                    engine::tree::encoding::write_seq(w, &was.len(), was.iter().map(|e| e.as_ref()))
                }
                None => engine::tree::encoding::write_seq(
                    w,
                    &(DIFF, head, base, &gone, delta.put.len()),
                    puts,
                ),
            }
        })
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
