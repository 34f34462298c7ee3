//! Content hashes: SHA-256 of a file (computed while copying, so a file is read once),
//! and the directory SHA-256 of a tree exactly as the SPEC defines it (the text GNU
//! `sha256sum` prints for every regular file, in byte order of the relative path).
//! This module reads; it never writes into a replica.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::fs::{self, copy_hashing, CopyError};
use crate::tree::{Digest, Kind, Tree};

/// SHA-256 of everything `reader` yields.
pub fn hash_reader(reader: &mut dyn Read) -> io::Result<(Digest, u64)> {
    copy_hashing(reader, &mut io::sink(), &|| false).map_err(|e| match e {
        CopyError::Read(e) | CopyError::Write(e) => e,
        CopyError::Stopped => io::Error::new(io::ErrorKind::Interrupted, "stopped"),
    })
}

/// SHA-256 of the regular file at `path` (never following a symlink), with the stat
/// taken when it was opened; fails if the file changed while it was read.
pub fn hash_file(path: &Path) -> Result<(Digest, fs::Stat), Error> {
    let (f, before) = fs::open_regular(path)?;
    hash_open(f, before, path)
}

/// [`hash_file`] of `rel` under `root`, opened through its directory handles (a path
/// of any length, no symlink followed on the way).
pub fn hash_in(root: &mut fs::Root, rel: &Path) -> FileHash {
    let (f, before) = root.open_read(rel)?;
    hash_open(f, before, &root.abs(rel))
}

fn hash_open(
    mut f: std::fs::File,
    before: fs::Stat,
    path: &Path,
) -> Result<(Digest, fs::Stat), Error> {
    let (digest, _) = hash_reader(&mut f).map_err(|e| Error::io("read", path, e))?;
    let after = fs::fstat(&f, path)?;
    if !unchanged_while_read(&mut &f, &before, &after, u64::MAX, digest)
        .map_err(|e| Error::io("read", path, e))?
    {
        return Err(Error::entry(path, "changed while being read"));
    }
    Ok((digest, before))
}

/// Whether `file`, read (its first `limit` bytes) into `digest` between the stats
/// `before` and `after`, did not change meanwhile. A different size, mtime or inode
/// says it did. A different change time alone may be a writer that put the mtime back,
/// or only a link to the file made or removed: the file is then read again and must
/// give `digest`. So must a file modified within one timestamp tick of now (see
/// [`same_on_second_reading`]).
pub fn unchanged_while_read<R: Read + std::io::Seek>(
    file: &mut R,
    before: &fs::Stat,
    after: &fs::Stat,
    limit: u64,
    digest: Digest,
) -> io::Result<bool> {
    if !before.same_content_stamp(after) {
        return Ok(false);
    }
    let now = crate::tree::MTime::now();
    if before.ctime != after.ctime || after.mtime.is_racy_at(now) {
        file.seek(std::io::SeekFrom::Start(0))?;
        let (again, _) = hash_reader(&mut Read::take(file, limit))?;
        return Ok(again == digest);
    }
    Ok(true)
}

/// False if `file` (its first `limit` bytes) changed while it was read in a way its stat
/// cannot show: a file rewritten in place within one timestamp tick keeps its size and
/// mtime. So when its `mtime` is that close to `now`, a second reading from the start
/// must give `digest` again; otherwise it is not read again.
pub fn same_on_second_reading<R: Read + std::io::Seek>(
    file: &mut R,
    limit: u64,
    digest: Digest,
    mtime: crate::tree::MTime,
    now: crate::tree::MTime,
) -> io::Result<bool> {
    if !mtime.is_racy_at(now) {
        return Ok(true);
    }
    file.seek(std::io::SeekFrom::Start(0))?;
    let (again, _) = hash_reader(&mut Read::take(file, limit))?;
    Ok(again == digest)
}

/// The result of hashing one file: its digest and the stat it was read under.
pub type FileHash = Result<(Digest, fs::Stat), Error>;

/// Hashes the files `rels` under `root` in parallel; results in input order. Every file
/// is opened through directory handles on the way from `root`, never following a
/// symlink (a version's tree in a store may hold one somebody planted).
pub fn hash_many<P: AsRef<Path> + Sync>(root: &Path, rels: &[P]) -> Vec<FileHash> {
    hash_many_noting(root, rels, &|_| {})
}

/// [`hash_many`], telling `noted` the size of each file hashed (a progress line).
pub fn hash_many_noting<P: AsRef<Path> + Sync>(
    root: &Path,
    rels: &[P],
    noted: &(dyn Fn(u64) + Sync),
) -> Vec<FileHash> {
    crate::parallel::map(
        rels,
        || fs::Root::open(root),
        |r, rel| {
            let rel = rel.as_ref();
            let h = match r {
                Ok(r) => hash_in(r, rel),
                // Opened again for this file's own error (a missing root is a missing
                // file).
                Err(_) => fs::Root::open(root).and_then(|mut r| hash_in(&mut r, rel)),
            };
            noted(h.as_ref().map_or(0, |(_, st)| st.size));
            h
        },
    )
}

/// One line of `sha256sum` output for `rel`, escaped as GNU coreutils does.
fn sha256sum_line(out: &mut Vec<u8>, digest: &Digest, rel: &Path) {
    let name = rel.as_os_str().as_bytes();
    let escape = name.iter().any(|&b| b == b'\\' || b == b'\n' || b == b'\r');
    if escape {
        out.push(b'\\');
    }
    let mut hex = [0u8; 64];
    hex::encode_to_slice(digest.0, &mut hex).expect("BUG: 32 bytes are 64 hex digits");
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"  ");
    if !escape {
        // Nearly every name: copied as it is, not a byte at a time.
        out.extend_from_slice(name);
        out.push(b'\n');
        return;
    }
    for &b in name {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out.push(b'\n');
}

/// Directory SHA-256 over `(relative path, file digest)` pairs; `None` if any is unknown.
///
/// The `sha256sum` text is fed to the hasher a block at a time, never held whole: for a
/// tree of 50,000 files it would be 5 MB. The lines go in byte order, which is the
/// pairs' own order unless a name holds a byte below `/`; only then are they listed and
/// sorted (so `files` is cloned, to be read again).
pub fn dir_sha256<'a>(
    files: impl Iterator<Item = (&'a Path, Option<Digest>)> + Clone,
) -> Option<Digest> {
    let bytes = |(p, d): (&'a Path, Option<Digest>)| (p.as_os_str().as_bytes(), d);
    match hash_lines(files.clone().map(bytes)) {
        Lines::Hashed(d) => Some(d),
        Lines::Unknown => None,
        Lines::OutOfOrder => {
            let mut sorted: Vec<(&[u8], Option<Digest>)> = files.map(bytes).collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
            match hash_lines(sorted.into_iter()) {
                Lines::Hashed(d) => Some(d),
                _ => None,
            }
        }
    }
}

/// What [`hash_lines`] made of its files.
enum Lines {
    Hashed(Digest),
    /// A file's digest is unknown.
    Unknown,
    /// The files are not in byte order.
    OutOfOrder,
}

/// The SHA-256 of the `sha256sum` lines of `files`, if they are in byte order.
fn hash_lines<'a>(files: impl Iterator<Item = (&'a [u8], Option<Digest>)>) -> Lines {
    let mut lines = DirLines::default();
    for (rel, d) in files {
        if !lines.add(rel, d) {
            break;
        }
    }
    lines.finish()
}

/// [`hash_lines`] fed a file at a time, for files that are not at hand as an iterator
/// of borrowed paths (a tree after a narrowed pass, merged as it is read).
#[derive(Default)]
struct DirLines {
    hasher: Sha256,
    text: Vec<u8>,
    prev: Vec<u8>,
    /// What stopped it, if anything did.
    stopped: Option<Lines>,
}

impl DirLines {
    /// Adds a file's line; false once the answer is known to be no digest in order.
    fn add(&mut self, rel: &[u8], d: Option<Digest>) -> bool {
        if self.stopped.is_some() {
            return false;
        }
        let Some(d) = d else {
            self.stopped = Some(Lines::Unknown);
            return false;
        };
        if !self.prev.is_empty() && self.prev.as_slice() > rel {
            self.stopped = Some(Lines::OutOfOrder);
            return false;
        }
        self.prev.clear();
        self.prev.extend_from_slice(rel);
        sha256sum_line(&mut self.text, &d, Path::new(OsStr::from_bytes(rel)));
        if self.text.len() >= 60 * 1024 {
            self.hasher.update(&self.text);
            self.text.clear();
        }
        true
    }

    fn finish(mut self) -> Lines {
        if let Some(s) = self.stopped {
            return s;
        }
        self.hasher.update(&self.text);
        Lines::Hashed(Digest(self.hasher.finalize().into()))
    }
}

/// Directory SHA-256 over `(relative path, file digest)` pairs given owned, in path
/// order, by `files` (called afresh, a second time only where a name holds a byte
/// below `/`; each read to its end): what [`dir_sha256`] gives for the same pairs.
pub fn dir_sha256_owned<I: Iterator<Item = (Vec<u8>, Option<Digest>)>>(
    files: impl Fn() -> I,
) -> Option<Digest> {
    // Read to the end even once the answer is known: a caller may count on the way.
    let mut lines = DirLines::default();
    for (rel, d) in files() {
        lines.add(&rel, d);
    }
    match lines.finish() {
        Lines::Hashed(d) => Some(d),
        Lines::Unknown => None,
        Lines::OutOfOrder => {
            let mut sorted: Vec<(Vec<u8>, Option<Digest>)> = files().collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            match hash_lines(sorted.iter().map(|(p, d)| (p.as_slice(), *d))) {
                Lines::Hashed(d) => Some(d),
                _ => None,
            }
        }
    }
}

/// Whether any of the `unknown` paths of a tree is unreadable: one that is not a special
/// file (a fifo, socket or device is no part of a directory SHA-256, see
/// [`tree_sha256`]).
pub fn unreadable<'a>(
    mut unknown: impl Iterator<Item = &'a PathBuf>,
    specials: &[PathBuf],
) -> bool {
    let specials: std::collections::HashSet<&Path> =
        specials.iter().map(PathBuf::as_path).collect();
    unknown.any(|u| !specials.contains(u.as_path()))
}

/// Directory SHA-256 of a scanned tree; `None` if a file's hash is unknown or the tree
/// has unreadable parts (a fifo, socket or device is no part of it: it is no regular
/// file, and is left unknown only so that nothing at its path is touched).
pub fn tree_sha256(tree: &Tree) -> Option<Digest> {
    if unreadable(tree.unknown.iter(), &tree.specials) {
        return None;
    }
    dir_sha256(
        tree.entries
            .iter()
            .filter(|(_, e)| e.kind == Kind::File)
            .map(|(p, e)| (p, e.hash)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn sha256sum_lines_escape_like_coreutils() {
        let d = Digest([0u8; 32]);
        let mut out = Vec::new();
        sha256sum_line(&mut out, &d, Path::new(OsStr::from_bytes(b"a\\b\nc")));
        let expected = format!("\\{}  a\\\\b\\nc\n", "0".repeat(64));
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let mut out = Vec::new();
        sha256sum_line(&mut out, &d, Path::new("plain name"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{}  plain name\n", "0".repeat(64))
        );
    }

    #[test]
    fn empty_tree_hash_is_hash_of_nothing() {
        let d = dir_sha256(std::iter::empty()).unwrap();
        assert_eq!(
            d.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn lines_go_in_byte_order_whatever_the_order_given() {
        // Path order puts "a/b" before "a.b"; sha256sum's sorted list has it after.
        let (x, y) = (Digest([1; 32]), Digest([2; 32]));
        let mut text = Vec::new();
        sha256sum_line(&mut text, &y, Path::new("a.b"));
        sha256sum_line(&mut text, &x, Path::new("a/b"));
        let expected = Digest(Sha256::digest(&text).into());
        let given = [(Path::new("a/b"), Some(x)), (Path::new("a.b"), Some(y))];
        assert_eq!(dir_sha256(given.into_iter()), Some(expected));
        assert_eq!(dir_sha256(given.into_iter().rev()), Some(expected));
        let unknown = [(Path::new("a/b"), Some(x)), (Path::new("a.b"), None)];
        assert_eq!(dir_sha256(unknown.into_iter()), None);
    }

    #[test]
    fn a_recent_file_is_read_again_and_must_hash_alike() {
        use crate::tree::MTime;
        let now = MTime::new(1_000, 500_000_000);
        let bytes = b"the bytes as they are now".to_vec();
        let now_hash = Digest(Sha256::digest(&bytes).into());
        let torn_hash = Digest(Sha256::digest(b"half of one state, half of another").into());
        let just_now = MTime::new(1_000, 450_000_000);
        let check = |digest, mtime| {
            same_on_second_reading(
                &mut std::io::Cursor::new(&bytes),
                u64::MAX,
                digest,
                mtime,
                now,
            )
            .unwrap()
        };
        assert!(check(now_hash, just_now));
        assert!(!check(torn_hash, just_now), "a torn first reading passed");
        // Whole-second timestamps: two seconds of doubt.
        assert!(!check(torn_hash, MTime::new(999, 0)));
        // Settled files are not read again (their stat would have shown a change).
        assert!(check(torn_hash, MTime::new(990, 0)));
        assert!(check(torn_hash, MTime::new(1_000, 300_000_000)));
        // Only the first `limit` bytes count.
        let head = Digest(Sha256::digest(&bytes[..3]).into());
        let mut r = std::io::Cursor::new(&bytes);
        assert!(same_on_second_reading(&mut r, 3, head, just_now, now).unwrap());
    }

    #[test]
    fn unknown_file_hash_gives_no_dir_hash() {
        assert!(dir_sha256([(Path::new("a"), None)].into_iter()).is_none());
    }
}
