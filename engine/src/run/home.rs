//! The data home (`$TWOWAY_HOME`, else `$XDG_DATA_HOME/twoway`, else
//! `~/.local/share/twoway`): where the registry, stat caches, sync state and locks live.
//! This module only names files and takes locks; what goes into them belongs to others.

use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Refusal};
use crate::names::display;

/// Whether `dir` is the top of a mounted filesystem (`None`: it cannot be told).
pub fn is_mount_root(dir: &Path) -> Option<bool> {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};
    match statx(CWD, dir, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS) {
        Ok(r) if r.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            Some(r.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
        }
        // An older kernel: another device than its parent's (a bind mount of a folder
        // of the same filesystem does not show this way).
        _ => {
            use std::os::unix::fs::MetadataExt;
            let own = std::fs::symlink_metadata(dir).ok()?;
            let parent = std::fs::metadata(dir.join("..")).ok()?;
            Some(own.dev() != parent.dev() || own.ino() == parent.ino())
        }
    }
}

/// The data home directory.
#[derive(Debug, Clone)]
pub struct DataHome {
    path: PathBuf,
}

impl DataHome {
    /// Finds the data home from the environment (it is created on first write).
    pub fn locate() -> Result<DataHome, Refusal> {
        let from_env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let path = if let Some(p) = from_env("TWOWAY_HOME") {
            p
        } else if let Some(p) = from_env("XDG_DATA_HOME") {
            p.join("twoway")
        } else if let Some(h) = from_env("HOME") {
            h.join(".local/share/twoway")
        } else {
            return Err(Refusal::new(
                "cannot find a data home: set TWOWAY_HOME (or XDG_DATA_HOME or HOME)",
            ));
        };
        let path = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()
                .map_err(|e| Refusal::new(format!("current directory: {e}")))?
                .join(path)
        };
        Ok(DataHome { path })
    }

    /// A data home at an explicit path (tests, tools).
    pub fn at(path: impl Into<PathBuf>) -> DataHome {
        DataHome { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The registry of versioned directories.
    pub fn registry_file(&self) -> PathBuf {
        self.path.join(".info.json")
    }

    /// The stat cache of one replica root.
    pub fn cache_file(&self, root: &Path) -> PathBuf {
        self.path
            .join("cache")
            .join(format!("{}.bin", path_key(root)))
    }

    /// When the last pass scanned a SOURCE root (oneway compares the attributes of what
    /// changed since).
    pub fn scan_time_file(&self, root: &Path) -> PathBuf {
        self.path
            .join("cache")
            .join(format!("{}.scanned", path_key(root)))
    }

    /// The guard against a drive that is not mounted while its mount point is left
    /// as an empty directory, which a pass would take for a replica whose every file
    /// was deleted (or fill, for a BACKUP): a directory `root` (canonical) seen as the
    /// top of a mounted filesystem is remembered (`remember`: not on a dry run), and
    /// while it is no longer one, every pass is refused.
    pub fn check_mounted(&self, root: &Path, label: &str, remember: bool) -> Result<(), Refusal> {
        let Some(mounted) = is_mount_root(root) else {
            return Ok(());
        };
        let marker = self.path.join("mounts").join(path_key(root));
        if mounted {
            if remember && !marker.exists() {
                let made = marker
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&marker, root.as_os_str().as_bytes()));
                if let Err(e) = made {
                    log::debug!("{}: {e}", display(&marker));
                }
            }
            return Ok(());
        }
        if !marker.exists() {
            return Ok(());
        }
        Err(Refusal::new(format!(
            "{label} {} was the top of a mounted drive at an earlier pass and is not one now: \
             the drive is probably not mounted, and its empty mount point would look as if \
             everything had been deleted. Nothing was changed. Mount it and run again (if {} \
             is no longer a drive of its own, remove {})",
            display(root),
            display(root),
            display(&marker)
        )))
    }

    /// The sync state of a pair of replicas: one file whatever the order they are named
    /// in (`twoway B A` is the pair `twoway A B`).
    pub fn state_file(&self, a: &Path, b: &Path) -> PathBuf {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        let mut both = a.as_os_str().as_bytes().to_vec();
        both.push(0);
        both.extend_from_slice(b.as_os_str().as_bytes());
        self.path
            .join("state")
            .join(format!("{}.bin", short_hash(&both)))
    }

    /// The file of the lock named `name` in the data home, opened (made if missing).
    fn lock_file(&self, name: &str) -> Result<(File, PathBuf), Error> {
        let dir = self.path.join("locks");
        std::fs::create_dir_all(&dir).ctx("mkdir", &dir)?;
        let path = dir.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx("open", &path)?;
        Ok((file, path))
    }

    /// Takes the lock named `name` (e.g. a replica's key); fails at once if another
    /// process holds it.
    pub fn try_lock(&self, name: &str, what: &Path) -> Result<Lock, Refusal> {
        let (file, path) = self.lock_file(name).map_err(Refusal::from)?;
        match file.try_lock() {
            Ok(()) => Ok(Lock::holding(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(busy(what)),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Refusal::new(format!("lock {}: {e}", display(&path))))
            }
        }
    }

    /// Takes the lock named `name`, waiting for another holder to release it.
    pub fn lock_wait(&self, name: &str) -> Result<Lock, Error> {
        let (file, path) = self.lock_file(name)?;
        file.lock().ctx("lock", &path)?;
        Ok(Lock::holding(file))
    }
}

/// Takes the lock of a directory a pass writes (BACKUP, a replica): a file
/// `.twoway-lock` at its top, locked with `flock`, so that no other run — whatever its
/// data home — writes there at the same time, and removed when the run lets go of it
/// (the user's directory keeps no file of the tool's between runs). A run that was
/// killed holds nothing (the kernel releases its lock), so its successor simply takes
/// it over. Where the filesystem has no locks (some network shares) the data home's
/// lock for `dir` is taken instead, which still keeps out runs of the same data home.
pub fn lock_dir(dir: &Path, home: &DataHome) -> Result<Lock, Refusal> {
    let refuse =
        |e: &dyn std::fmt::Display| Refusal::new(format!("cannot lock {}: {e}", display(dir)));
    let mut root = crate::fs::Root::open(dir).map_err(|e| refuse(&e))?;
    let name = Path::new(crate::names::LOCK_NAME);
    // A holder removes the file as it lets go: a lock taken on a file that is no longer
    // the one by that name (removed meanwhile) is taken again on the new one.
    for _ in 0..16 {
        // Made afresh, the file leaves the directory's mtime as it was (a pass compares
        // it with SOURCE's, and a version records it).
        let made = match root.stat(name).map_err(|e| refuse(&e))? {
            Some(_) => None,
            None => root.stat_root().map_err(|e| refuse(&e))?,
        };
        let file = root
            .open_lock_file(crate::names::LOCK_NAME)
            .map_err(|e| refuse(&e))?;
        keep_top_as(&mut root, made);
        let locked = try_lock_or_fall_back(&file, dir, home)?;
        if let Some(held) = locked {
            return Ok(held);
        }
        let ours = crate::fs::fstat(&file, &dir.join(name)).map_err(|e| refuse(&e))?;
        match root.stat(name).map_err(|e| refuse(&e))? {
            Some(now) if (now.dev, now.ino) == (ours.dev, ours.ino) => {
                // Removed as the run ends only where the directory's mtime can be put
                // back (its owner, or root): elsewhere each run would change it twice,
                // and a replica's version records it. There the file stays, as before.
                let euid = rustix::process::geteuid();
                let owner = root.stat_root().ok().flatten().map(|st| st.uid);
                let restorable = euid.is_root() || owner == Some(euid.as_raw());
                return Ok(Lock {
                    _file: file,
                    remove: restorable.then_some(root),
                });
            }
            _ => continue,
        }
    }
    Err(busy(dir))
}

/// Puts the top of `root` back to the mode and mtime of `before` (the lock file came
/// or went): what a pass compares and a version records stays as it was. Only the
/// directory's owner may: elsewhere a pass sets what it can, as before.
fn keep_top_as(root: &mut crate::fs::Root, before: Option<crate::fs::Stat>) {
    let Some(st) = before else { return };
    let kept = root.set_dir_meta(
        Path::new(""),
        st.mode,
        st.mtime,
        crate::tree::Owner::UNKNOWN,
    );
    if let Err(e) = kept {
        log::debug!("{e}");
    }
}

/// Locks `file` (the lock file of `dir`): `None` once it is locked; the data home's
/// lock for `dir` where the filesystem has no locks; a refusal where another run holds
/// it.
fn try_lock_or_fall_back(
    file: &File,
    dir: &Path,
    home: &DataHome,
) -> Result<Option<Lock>, Refusal> {
    let refuse =
        |e: &dyn std::fmt::Display| Refusal::new(format!("cannot lock {}: {e}", display(dir)));
    match file.try_lock() {
        Ok(()) => Ok(None),
        Err(std::fs::TryLockError::WouldBlock) => Err(busy(dir)),
        Err(std::fs::TryLockError::Error(e)) if matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::NOLCK.raw_os_error() || code == rustix::io::Errno::OPNOTSUPP.raw_os_error()) =>
        {
            log::warn!(
                "{} cannot be locked ({e}); only runs with this data home are kept out",
                display(dir)
            );
            home.try_lock(&path_key(dir), dir).map(Some)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(refuse(&e)),
    }
}

fn busy(what: &Path) -> Refusal {
    Refusal::new(format!(
        "another run is already working on {}; wait for it to finish",
        display(what)
    ))
}

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    /// The directory whose lock file goes as the lock is let go.
    remove: Option<crate::fs::Root>,
}

impl Lock {
    /// A lock held through `file` (already locked by the caller).
    pub fn holding(file: File) -> Lock {
        Lock {
            _file: file,
            remove: None,
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still held: a run that opened it meanwhile finds, once it has
        // the lock, that the name is no longer its file, and takes the lock again.
        if let Some(mut root) = self.remove.take() {
            // The directory's mtime is the one the pass gave it (SOURCE's, say): the
            // removal leaves it as it was.
            let before = root.stat_root().ok().flatten();
            match root.remove(Path::new(crate::names::LOCK_NAME)) {
                Ok(()) => keep_top_as(&mut root, before),
                Err(e) => log::debug!("{e}"),
            }
        }
    }
}

/// A short stable hash of an absolute path, used to name per-directory files.
pub fn path_key(p: &Path) -> String {
    short_hash(p.as_os_str().as_bytes())
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// Makes `p` absolute and lexically clean without touching the disk beyond the current
/// directory, so a directory that no longer exists can still be named (restore).
pub fn absolute(p: &Path) -> Result<PathBuf, Refusal> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Ok(c);
    }
    let abs = std::path::absolute(p).map_err(|e| Refusal::new(format!("{}: {e}", display(p))))?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    // Resolve the deepest existing ancestor, so /link/gone and /real/gone name the same dir.
    let mut existing = out.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut base = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    for name in rest.into_iter().rev() {
        base.push(name);
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_names_a_missing_dir_through_its_existing_parent() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(d.path()).unwrap();
        let p = absolute(&d.path().join("gone/../gone2")).unwrap();
        assert_eq!(p, real.join("gone2"));
    }

    #[test]
    fn lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let home = DataHome::at(d.path());
        let held = home.try_lock("k", Path::new("/x")).unwrap();
        assert!(home.try_lock("k", Path::new("/x")).is_err());
        drop(held);
        assert!(home.try_lock("k", Path::new("/x")).is_ok());
    }
}
