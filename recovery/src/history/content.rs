//! A history's content: files kept before a pass changes them (`pending/`), settled
//! into `objects/` (by SHA-256), given to a twin's history, healed, and dropped when no
//! version needs them. No object shares its inode with a live file once settled.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use engine::error::Error;
use engine::fs::Root;
use engine::tree::encoding::EntryRef;
use engine::tree::{Digest, Kind};

use super::{object_path, pending_path, History, OBJECTS, PENDING};

#[cfg(test)]
thread_local! {
    /// Run between the check that an object is missing and the link that settles it:
    /// where a test makes the twin's store give the object first.
    pub(super) static BEFORE_SETTLING_LINK: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

impl History {
    /// Whether the history holds the object `sha` (settled or pending).
    pub fn holds(root: &mut Root, sha: &Digest) -> Result<bool, Error> {
        Ok(root.stat(&object_path(sha))?.is_some() || root.stat(&pending_path(sha))?.is_some())
    }

    /// Keeps the live file `rel` of `live` (whose content is `sha`) before a pass
    /// replaces or deletes it: linked under `pending/` (the pass then unlinks the live
    /// name), or copied where no link can be made. Nothing if the content is held already.
    pub fn keep_file(
        root: &mut Root,
        live: &mut Root,
        rel: &Path,
        sha: &Digest,
    ) -> Result<(), Error> {
        if Self::holds(root, sha)? {
            return Ok(());
        }
        let pending = pending_path(sha);
        match root.link_from(live, rel, &pending) {
            Ok(()) => Ok(()),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(())
            }
            Err(Error::Io { source, .. }) if cannot_link(&source) => {
                copy_verified(live, rel, root, &pending, sha).map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every pending file into `objects/`: linked (and the pending name removed)
    /// when the live directory no longer shares it, copied (and checked against its
    /// name) when it still does; each then given to the histories `to`. The pending
    /// name goes last, so a run killed at any point does it all again.
    pub(super) fn settle(&self, root: &mut Root, to: &[History]) -> Result<(), Error> {
        let names = match root.stat(Path::new(PENDING))? {
            Some(_) => root.list(Path::new(PENDING))?,
            None => return Ok(()),
        };
        let mut added = false;
        // The object folders made (or found) so far: each is made once.
        let mut made: HashSet<PathBuf> = HashSet::new();
        for n in names {
            let rel = Path::new(PENDING).join(&n);
            let Some(sha) = n.to_str().and_then(Digest::from_hex) else {
                // A temporary file of a copy cut short, or something the tool did not make.
                if n.to_string_lossy().starts_with(engine::names::TEMP_PREFIX) {
                    root.remove(&rel)?;
                }
                continue;
            };
            let obj = object_path(&sha);
            let Some(st) = root.stat(&rel)? else { continue };
            if st.kind != Some(Kind::File) {
                continue;
            }
            if root.stat(&obj)?.is_none() {
                let folder = obj.parent().expect("BUG: an object has a folder");
                if made.insert(folder.to_path_buf()) {
                    root.mkdir_unfinished(folder)?;
                }
                if st.nlink == 1 && to.is_empty() {
                    // No other store to give it to: moved in one step.
                    root.rename(&rel, &obj)?;
                    added = true;
                    continue;
                }
                if st.nlink == 1 {
                    #[cfg(test)]
                    BEFORE_SETTLING_LINK.with(|f| f.borrow_mut().as_mut().map(|f| f()));
                    match root.link_within(&rel, &obj) {
                        Ok(()) => {}
                        // The twin's store gave it meanwhile (it settles on its own lock):
                        // the object is there, named by its content.
                        Err(Error::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                    }
                } else {
                    // Still a live file's other name: the object gets its own copy.
                    let mut same_root = root.try_clone()?;
                    if let Err(e) = copy_verified(&mut same_root, &rel, root, &obj, &sha) {
                        log::warn!("not kept: {e}");
                        root.remove(&rel)?;
                        continue;
                    }
                }
                added = true;
            }
            for other in to {
                if let Err(e) = self.share_objects(&[sha], other) {
                    log::warn!(
                        "could not give {} the content it kept: {e}",
                        engine::names::display(other.path())
                    );
                }
            }
            root.remove(&rel)?;
        }
        if added {
            root.sync_fs()?;
        }
        Ok(())
    }

    /// Puts `file` (read from `from`) in the store as the object `sha`, replacing a
    /// damaged one: written beside it, checked against `sha` as it is copied, flushed,
    /// then renamed over it.
    pub fn heal_object(
        &self,
        file: &mut std::fs::File,
        from: &Path,
        sha: &Digest,
    ) -> Result<(), Error> {
        let mut root = self.open_made()?;
        let obj = object_path(sha);
        root.mkdir_unfinished(obj.parent().expect("BUG: an object has a folder"))?;
        let checked = Checked {
            sha,
            from,
            sparse: false,
            mtime: engine::tree::MTime::default(),
            mismatch: "does not hold the content it was taken for",
        };
        write_checked(file, &mut root, &obj, &checked)?.commit()
    }

    /// Opens the object `sha` to read, if the history has it.
    pub fn open_object(&self, sha: &Digest) -> Option<(std::fs::File, PathBuf)> {
        let mut root = self.open().ok()?;
        let rel = object_path(sha);
        let (f, _) = root.open_read(&rel).ok()?;
        Some((f, self.path.join(rel)))
    }

    /// Settles pending files (see [`Self::repair`]), giving each to the histories `to`.
    pub fn settle_pending(&self, to: &[History]) -> Result<(), Error> {
        if !self.exists() {
            return Ok(());
        }
        let mut root = self.open_made()?;
        self.settle(&mut root, to)
    }

    /// Gives `to` the objects `shas` it lacks: linked where both are on one filesystem,
    /// copied otherwise. Each history can then restore its versions alone.
    pub fn share_objects(&self, shas: &[Digest], to: &History) -> Result<(), Error> {
        if shas.is_empty() {
            return Ok(());
        }
        let mut from = self.open()?;
        let mut dst = to.open_made()?;
        let mut added = false;
        for sha in shas {
            let obj = object_path(sha);
            if dst.stat(&obj)?.is_some() || from.stat(&obj)?.is_none() {
                continue;
            }
            added = true;
            dst.mkdir_unfinished(obj.parent().expect("BUG: an object has a folder"))?;
            match dst.link_from(&mut from, &obj, &obj) {
                Ok(()) => {}
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(Error::Io { source, .. }) if cannot_link(&source) => {
                    copy_verified(&mut from, &obj, &mut dst, &obj, sha)?;
                }
                Err(e) => return Err(e),
            }
        }
        if added {
            dst.sync_fs()?;
        }
        Ok(())
    }

    /// Every object's SHA-256 and size.
    pub fn objects(&self) -> Result<Vec<(Digest, u64)>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open()?;
        let mut out = Vec::new();
        for sha in self.object_names(&mut root)? {
            let size = root.stat(&object_path(&sha))?.map_or(0, |s| s.size);
            out.push((sha, size));
        }
        Ok(out)
    }

    /// The SHA-256 of every file some version holds: the entries of every version's
    /// own file (a whole version's, and each difference's), read entry by entry.
    /// Of `candidates`, those no version holds: every version read (the newest whole
    /// file only if `newest_checked` is false), until none is left.
    fn unneeded_of(
        &self,
        root: &mut Root,
        candidates: &HashSet<Digest>,
        newest_checked: bool,
    ) -> Result<Vec<Digest>, Error> {
        let mut left = candidates.clone();
        let mut files = self.files(root)?;
        let latest = files.last().map(|(id, _)| *id);
        let newest_whole = files.iter().rev().find(|(_, f)| *f).map(|(id, _)| *id);
        // The differences first: they are small, and the whole file may then be spared.
        // Every version from the newest whole one to the latest is the latest's entries
        // or entries a forward difference names as its own or its base's: with the
        // latest checked and every such difference knowing its base's, the whole file
        // holds nothing more.
        let mut forward_known = true;
        files.sort_by_key(|&(_, full)| full);
        for (id, full) in files {
            if left.is_empty() {
                break;
            }
            let spared = newest_checked
                && (Some(id) == latest || (Some(id) == newest_whole && forward_known));
            if full && spared {
                continue;
            }
            let mut r = self.reader(root, id, full)?;
            let mut seen = |e: EntryRef<'_>| {
                if let Some(sha) = e.sha256 {
                    left.remove(&sha);
                }
            };
            while r.next_with(&mut seen)?.is_some() {}
            let knows_base = r.take_was(&mut seen)?;
            if !full && !knows_base && newest_whole.is_some_and(|w| id > w) {
                forward_known = false;
            }
        }
        Ok(left.into_iter().collect())
    }

    pub(super) fn needed(&self, root: &mut Root) -> Result<HashSet<Digest>, Error> {
        let mut need = HashSet::new();
        for (id, full) in self.files(root)? {
            let mut r = self.reader(root, id, full)?;
            while r
                .next_with(|e| {
                    if let Some(sha) = e.sha256 {
                        need.insert(sha);
                    }
                })?
                .is_some()
            {}
        }
        Ok(need)
    }

    /// The content the history holds: its objects and its pending files (listed, no
    /// stat each).
    pub fn held(&self) -> Result<Vec<Digest>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open()?;
        let mut all = self.object_names(&mut root)?;
        if root.stat(Path::new(PENDING))?.is_some() {
            all.extend(
                root.list(Path::new(PENDING))?
                    .iter()
                    .filter_map(|n| n.to_str().and_then(Digest::from_hex)),
            );
        }
        Ok(all)
    }

    /// The pending files (kept by a pass that was cut short) that no live file shares.
    pub fn pending_alone(&self) -> Result<Vec<Digest>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open()?;
        if root.stat(Path::new(PENDING))?.is_none() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for n in root.list(Path::new(PENDING))? {
            let Some(sha) = n.to_str().and_then(Digest::from_hex) else {
                continue;
            };
            if root
                .stat(&Path::new(PENDING).join(&n))?
                .is_some_and(|st| st.nlink == 1)
            {
                out.push(sha);
            }
        }
        Ok(out)
    }

    /// The SHA-256 of every object, without its size (no stat each).
    pub fn object_list(&self) -> Result<Vec<Digest>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut root = self.open()?;
        self.object_names(&mut root)
    }

    /// The SHA-256 of every object, without its size.
    pub(super) fn object_names(&self, root: &mut Root) -> Result<Vec<Digest>, Error> {
        let mut out = Vec::new();
        if root.stat(Path::new(OBJECTS))?.is_none() {
            return Ok(out);
        }
        for d in root.list(Path::new(OBJECTS))? {
            let dir = Path::new(OBJECTS).join(&d);
            if d.len() != 2 || root.stat(&dir)?.and_then(|s| s.kind) != Some(Kind::Dir) {
                continue;
            }
            out.extend(
                root.list(&dir)?
                    .iter()
                    .filter_map(|n| n.to_str().and_then(Digest::from_hex)),
            );
        }
        Ok(out)
    }

    /// Drops the objects no version needs (of `candidates` only, when given: the
    /// content of the versions just dropped, which saves listing every object); returns
    /// how many and their bytes.
    pub fn collect_garbage(
        &self,
        candidates: Option<&HashSet<Digest>>,
    ) -> Result<(u64, u64), Error> {
        self.collect_garbage_but(candidates, false)
    }

    /// [`collect_garbage`](Self::collect_garbage); `newest_checked`: the candidates were
    /// checked against the newest version already (a pass holds its tree), so its whole
    /// file is not read.
    pub fn collect_garbage_but(
        &self,
        candidates: Option<&HashSet<Digest>>,
        newest_checked: bool,
    ) -> Result<(u64, u64), Error> {
        if !self.exists() {
            return Ok((0, 0));
        }
        if self.holds_damaged()? {
            log::warn!(
                "{}: no stored content is collected while damaged/ holds version files \
                 set aside (what they need cannot be told); delete that folder once it is \
                 no longer wanted",
                engine::names::display(self.path())
            );
            return Ok((0, 0));
        }
        let mut root = self.open_made()?;
        let (mut n, mut bytes) = (0, 0);
        let garbage: Vec<Digest> = match candidates {
            Some(c) => self.unneeded_of(&mut root, c, newest_checked)?,
            None => {
                let need = self.needed(&mut root)?;
                let mut all = self.object_names(&mut root)?;
                all.retain(|sha| !need.contains(sha));
                all
            }
        };
        for sha in garbage {
            let obj = object_path(&sha);
            if let Some(st) = root.stat(&obj)? {
                bytes += st.size;
                root.remove(&obj)?;
                n += 1;
            }
        }
        Ok((n, bytes))
    }
}

/// Copies `rel` of `src` to `to` in `dst` (a new name: never replaces), checking that
/// the bytes hash to `sha`.
pub fn copy_verified(
    src: &mut Root,
    rel: &Path,
    dst: &mut Root,
    to: &Path,
    sha: &Digest,
) -> Result<(), Error> {
    let (mut file, before) = src.open_read(rel)?;
    let checked = Checked {
        sha,
        from: &src.abs(rel),
        sparse: before.is_sparse(),
        mtime: before.mtime,
        mismatch: "changed before it could be kept (its bytes no longer match its SHA-256)",
    };
    let temp = write_checked(&mut file, dst, to, &checked)?;
    match temp.commit_new() {
        // The same content, kept meanwhile under the same name.
        Err(_) if dst.stat(to)?.is_some() => Ok(()),
        done => done,
    }
}

/// What [`write_checked`] copies and checks.
struct Checked<'a> {
    sha: &'a Digest,
    /// The source, named in errors.
    from: &'a Path,
    sparse: bool,
    mtime: engine::tree::MTime,
    /// Why a copy whose bytes do not hash to `sha` is refused.
    mismatch: &'static str,
}

/// Copies `file` into a temporary file for `to` in `dst`, checks that its bytes hash to
/// the content named, makes it read-only and flushes it; the caller gives it its name.
fn write_checked(
    file: &mut std::fs::File,
    dst: &mut Root,
    to: &Path,
    c: &Checked<'_>,
) -> Result<engine::fs::TempFile, Error> {
    use std::os::fd::AsFd;
    let mut temp = dst.create_temp(to)?;
    let mut reader: &std::fs::File = file;
    let blocks_of = Some(file.as_fd());
    let (digest, _) = dst.fill(
        &mut temp,
        &mut reader,
        blocks_of,
        c.sparse,
        &|| false,
        c.from,
    )?;
    if digest != *c.sha {
        return Err(Error::entry(c.from, c.mismatch));
    }
    temp.set_meta(0o444, c.mtime, engine::Owner::UNKNOWN)?;
    temp.sync()?;
    Ok(temp)
}

/// Errors that mean "no hard link possible here" rather than a failure: another
/// filesystem, or one without hard links (FAT, exFAT, some network shares).
pub fn cannot_link(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::XDEV, Errno::PERM, Errno::OPNOTSUPP, Errno::MLINK]
        .iter()
        .any(|x| e.raw_os_error() == Some(x.raw_os_error()))
}
