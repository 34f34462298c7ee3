//! One entry as the tool writes it into its files (version manifests and the sync
//! state): path, kind, size, mode, mtime, SHA-256, link target, inode and owner. Plain
//! data, stored in binary (postcard); one encoding for every file that records entries.
//! (The stat cache records another kind of thing, a file's stamp and its hash, and has
//! its own.) Records written before owners were kept ([`LegacyEntryRef`]) still read,
//! with no owner.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tree::pathser;
use crate::tree::{Digest, Entry, Kind, MTime, Owner};

/// An entry of a manifest or a sync state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    #[serde(with = "pathser::bytes")]
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime: (i64, u32),
    pub sha256: Option<Digest>,
    #[serde(with = "pathser::bytes::opt")]
    pub target: Option<PathBuf>,
    /// The inode the file had in its replica (lets a later version reuse this one's
    /// link when the replica still holds that very file).
    pub ino: Option<u64>,
    /// Owner and group ids (None in records written before owners were kept).
    pub owner: Option<(u32, u32)>,
}

impl EntryRecord {
    /// The entry this record describes.
    pub fn to_entry(&self) -> Entry {
        self.as_ref().to_entry()
    }

    /// The record of `e` at `path`.
    pub fn of(path: PathBuf, e: &Entry) -> EntryRecord {
        let mut r = EntryRef::new(Path::new(""), e).to_owned();
        r.path = path;
        r
    }
}

/// An entry's record, borrowed or owned: what a version's writer reads (the entries of
/// a tree held whole are borrowed from it, those of a replica merged as it is read are
/// owned).
pub trait AsEntryRef {
    fn entry_ref(&self) -> EntryRef<'_>;
}

impl AsEntryRef for EntryRef<'_> {
    fn entry_ref(&self) -> EntryRef<'_> {
        *self
    }
}

impl AsEntryRef for EntryRecord {
    fn entry_ref(&self) -> EntryRef<'_> {
        self.as_ref()
    }
}

/// [`EntryRecord`] with its paths borrowed (from a tree, or from the bytes of a manifest
/// being read): the same fields in the same encoding, and no allocation per entry.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    #[serde(borrow, with = "pathser::bytes::borrowed")]
    pub path: &'a Path,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime: (i64, u32),
    pub sha256: Option<Digest>,
    #[serde(borrow, with = "pathser::bytes::borrowed::opt")]
    pub target: Option<&'a Path>,
    pub ino: Option<u64>,
    pub owner: Option<(u32, u32)>,
}

/// An [`EntryRef`] as manifests of format 2 wrote it, before owners were kept.
#[derive(Deserialize)]
struct LegacyEntryRef<'a> {
    #[serde(borrow, with = "pathser::bytes::borrowed")]
    path: &'a Path,
    kind: Kind,
    size: u64,
    mode: u32,
    mtime: (i64, u32),
    sha256: Option<Digest>,
    #[serde(borrow, with = "pathser::bytes::borrowed::opt")]
    target: Option<&'a Path>,
    ino: Option<u64>,
}

impl<'a> From<LegacyEntryRef<'a>> for EntryRef<'a> {
    fn from(e: LegacyEntryRef<'a>) -> Self {
        EntryRef {
            path: e.path,
            kind: e.kind,
            size: e.size,
            mode: e.mode,
            mtime: e.mtime,
            sha256: e.sha256,
            target: e.target,
            ino: e.ino,
            owner: None,
        }
    }
}

impl<'a> EntryRef<'a> {
    /// The record of `e` at `path`.
    pub fn new(path: &'a Path, e: &'a Entry) -> EntryRef<'a> {
        EntryRef {
            path,
            kind: e.kind,
            size: e.size,
            mode: e.mode,
            mtime: (e.mtime.sec, e.mtime.nsec),
            sha256: e.hash,
            target: e.link_target(),
            ino: (e.kind == Kind::File && e.ino != 0).then_some(e.ino),
            owner: e.owner.known(),
        }
    }

    pub fn owner(&self) -> Owner {
        Owner::from_known(self.owner)
    }

    /// The entry this record describes (its inode is not kept: a record's inode is
    /// the one the file had where it was recorded).
    pub fn to_entry(&self) -> Entry {
        let mtime = self.mtime();
        let e = match self.kind {
            Kind::Dir => Entry::dir(self.mode, mtime),
            Kind::Symlink => Entry::symlink(self.target.unwrap_or(Path::new("")), mtime),
            Kind::File => Entry::file(self.size, self.mode, mtime, self.sha256),
        };
        e.owned_by(self.owner())
    }

    pub fn mtime(&self) -> MTime {
        MTime::new(self.mtime.0, self.mtime.1)
    }

    /// The owned record.
    pub fn to_owned(&self) -> EntryRecord {
        EntryRecord {
            path: self.path.to_path_buf(),
            kind: self.kind,
            size: self.size,
            mode: self.mode,
            mtime: self.mtime,
            sha256: self.sha256,
            target: self.target.map(Path::to_path_buf),
            ino: self.ino,
            owner: self.owner,
        }
    }
}

impl EntryRecord {
    /// The record borrowed.
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            path: &self.path,
            kind: self.kind,
            size: self.size,
            mode: self.mode,
            mtime: self.mtime,
            sha256: self.sha256,
            target: self.target.as_deref(),
            ino: self.ino,
            owner: self.owner,
        }
    }
}

/// Encodes `head`, then `items`, with postcard into `out`, a block at a time: the
/// tool's record files (stat caches, manifests, sync states) are written without being
/// held whole in memory. `head` carries the count of `items` where the format has one.
pub fn write_seq<T: Serialize>(
    out: &mut impl std::io::Write,
    head: &impl Serialize,
    items: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    const BLOCK: usize = 64 * 1024;
    let enc = |e: postcard::Error| std::io::Error::other(e);
    let mut buf = postcard::to_extend(head, Vec::with_capacity(BLOCK + 1024)).map_err(enc)?;
    for item in items {
        buf = postcard::to_extend(&item, buf).map_err(enc)?;
        if buf.len() >= BLOCK {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)
}

/// Reads back what [`write_seq`] wrote, a block at a time: a record file is never held
/// whole in memory (a version's manifest of 50,000 files is megabytes, and a two-way pass
/// patches two versions at once).
pub struct SeqReader<R> {
    src: R,
    buf: Vec<u8>,
    /// The bytes read and not decoded yet are `buf[at..end]`.
    at: usize,
    end: usize,
    eof: bool,
    /// Where `buf[0]` is in the source.
    base: u64,
}

impl<R: std::io::Read> SeqReader<R> {
    const BLOCK: usize = 64 * 1024;

    pub fn new(src: R) -> SeqReader<R> {
        SeqReader {
            src,
            buf: vec![0; Self::BLOCK],
            at: 0,
            end: 0,
            eof: false,
            base: 0,
        }
    }

    /// Where the next item starts in the source (bytes from its start).
    pub fn offset(&self) -> u64 {
        self.base + self.at as u64
    }

    /// The next item, of a type that owns its data.
    pub fn take<T: serde::de::DeserializeOwned>(&mut self) -> std::io::Result<T> {
        self.take_with(|b| postcard::take_from_bytes::<T>(b).map(|(t, rest)| (t, rest.len())))
    }

    /// The next item, an entry whose paths borrow from the buffer, handed to `f`;
    /// `legacy`: an entry as written before owners were kept.
    pub fn take_entry<O>(
        &mut self,
        legacy: bool,
        f: impl FnOnce(EntryRef<'_>) -> O,
    ) -> std::io::Result<O> {
        let mut f = Some(f);
        self.take_with(|b| {
            let (e, rest) = if legacy {
                let (e, rest) = postcard::take_from_bytes::<LegacyEntryRef>(b)?;
                (EntryRef::from(e), rest)
            } else {
                postcard::take_from_bytes::<EntryRef>(b)?
            };
            let f = f.take().expect("BUG: an item is decoded once");
            Ok((f(e), rest.len()))
        })
    }

    /// Whether every byte has been decoded (nothing follows the last item).
    pub fn at_end(&mut self) -> std::io::Result<bool> {
        if self.at == self.end && !self.eof {
            self.fill()?;
        }
        Ok(self.at == self.end)
    }

    /// Decodes one item with `dec`, which gives what it made of it (owning its data, or
    /// done with it) and how many bytes of its input are left. An item cut by the end
    /// of the buffer fails to decode (postcard's encoding says where each value ends):
    /// more is read and it is decoded again; it is damage only when the file has no
    /// more to give.
    pub fn take_with<O>(
        &mut self,
        mut dec: impl FnMut(&[u8]) -> postcard::Result<(O, usize)>,
    ) -> std::io::Result<O> {
        loop {
            let input = &self.buf[self.at..self.end];
            match dec(input) {
                Ok((item, left)) => {
                    self.at = self.end - left;
                    return Ok(item);
                }
                Err(_) if !self.eof => self.fill()?,
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
        }
    }

    /// Moves what is left to the front and reads more after it (the buffer doubles when
    /// one item fills it).
    fn fill(&mut self) -> std::io::Result<()> {
        self.base += self.at as u64;
        self.buf.copy_within(self.at..self.end, 0);
        self.end -= self.at;
        self.at = 0;
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn each_entry_read_says_where_its_bytes_are() {
        let entries: Vec<(PathBuf, Entry)> = (0..500u64)
            .map(|i| {
                let mut e = Entry::file(
                    i,
                    0o644,
                    MTime::new(i as i64, 0),
                    Some(Digest([i as u8; 32])),
                );
                e.ino = i * 7;
                (
                    PathBuf::from(format!("dir/{i:04}-{}", "x".repeat((i % 90) as usize))),
                    e,
                )
            })
            .collect();
        let mut bytes = Vec::new();
        write_seq(
            &mut bytes,
            &(7u32, entries.len()),
            entries.iter().map(|(p, e)| EntryRef::new(p, e)),
        )
        .unwrap();
        // Read back through a small trickle, so that items straddle the buffer's refills.
        let mut r = SeqReader::new(Trickle {
            bytes: &bytes[..],
            step: 777,
        });
        let (_, n): (u32, usize) = r.take().unwrap();
        for (p, e) in entries.iter().take(n) {
            let at = r.offset() as usize;
            let (path, end) = r
                .take_entry(false, |x| x.path.to_path_buf())
                .map(|p| (p, r.offset() as usize))
                .unwrap();
            assert_eq!(&path, p);
            assert_eq!(
                &bytes[at..end],
                postcard::to_allocvec(&EntryRef::new(p, e)).unwrap()
            );
        }
    }

    #[test]
    fn owned_and_borrowed_records_encode_alike() {
        let odd = Path::new(OsStr::from_bytes(b"d/\xff name"));
        let mut file = Entry::file(7, 0o640, MTime::new(-3, 9), Some(Digest([5; 32])));
        file.ino = 42;
        let link = Entry::symlink(odd, MTime::new(1, 2));
        for (p, e) in [(odd, &file), (Path::new("l"), &link)] {
            let r = EntryRef::new(p, e);
            let owned = r.to_owned();
            let bytes = postcard::to_allocvec(&r).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&owned).unwrap());
            assert_eq!(postcard::from_bytes::<EntryRecord>(&bytes).unwrap(), owned);
            assert_eq!(postcard::from_bytes::<EntryRef>(&bytes).unwrap(), r);
            assert_eq!(owned.as_ref(), r);
        }
    }

    /// Gives at most `step` bytes per read, so items are cut at every place.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn sequences_read_back_a_block_at_a_time() {
        // One path longer than the reader's buffer, so it must grow.
        let long = "x/".repeat(50_000) + "end";
        let entries: Vec<(String, Entry)> = (0..2000u32)
            .map(|i| {
                let mut e = Entry::file(
                    i as u64,
                    0o644,
                    MTime::new(9, i),
                    Some(Digest([i as u8; 32])),
                );
                e.ino = 1 + i as u64;
                (format!("d{}/f {i}", i % 7), e)
            })
            .chain([(long, Entry::symlink("t", MTime::new(1, 1)))])
            .collect();
        let refs = || entries.iter().map(|(p, e)| EntryRef::new(Path::new(p), e));
        let mut bytes = Vec::new();
        write_seq(&mut bytes, &(7u32, entries.len()), refs()).unwrap();
        for step in [1, 5, 4096, usize::MAX] {
            let mut r = SeqReader::new(Trickle {
                bytes: &bytes,
                step,
            });
            assert_eq!(r.take::<(u32, usize)>().unwrap(), (7, entries.len()));
            for want in refs() {
                assert_eq!(
                    r.take_entry(false, |e| e.to_owned()).unwrap(),
                    want.to_owned(),
                    "step {step}"
                );
            }
            assert!(r.at_end().unwrap());
            assert!(
                r.take_entry(false, |_| ()).is_err(),
                "nothing after the end"
            );
        }
        // Cut anywhere: the item cut is refused, not decoded short.
        for cut in [bytes.len() - 1, bytes.len() - 40, bytes.len() / 2] {
            let mut r = SeqReader::new(Trickle {
                bytes: &bytes[..cut],
                step: 4096,
            });
            r.take::<(u32, usize)>().unwrap();
            let read = (0..entries.len())
                .map(|_| r.take_entry(false, |_| ()))
                .take_while(|x| x.is_ok())
                .count();
            assert!(read < entries.len(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let mut r = SeqReader::new(&longer[..]);
        r.take::<(u32, usize)>().unwrap();
        for _ in 0..entries.len() {
            r.take_entry(false, |_| ()).unwrap();
        }
        assert!(!r.at_end().unwrap(), "a byte too many");
    }
}
