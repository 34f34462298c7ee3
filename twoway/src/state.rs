//! The sync state: what both replicas held after the last successful pass, per path
//! (kind, size, mtime, mode, SHA-256, link target). Kept in the data home per replica
//! pair and rewritten atomically only after a pass, so a killed pass leaves the old one.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use engine::error::Error;
use engine::fs;
use engine::pass::quiet::Quiet;
use engine::tree::compact::CompactTree;
use engine::tree::encoding::EntryRef;
#[cfg(test)]
use engine::tree::Entries;
use engine::tree::{path_order, same_path, Digest, Entry, Kind, MTime};

use crate::packed::{record, Packed, StateChange, Writer};

/// The format written: 4, records in the encoding every file of entries uses
/// ([`EntryRef`]); 3 (records of the state's own, with owners) and 2 (before owners were
/// kept) are read.
const FORMAT: u32 = 4;
const FORMAT_3: u32 = 3;
const FORMAT_2: u32 = 2;

/// The state file: compact binary (postcard), read and written on every pass. Its head,
/// `(format, a, b, count)`, then `count` records, one per path in path order.
type Head<'a> = (u32, &'a [u8], &'a [u8], usize);

/// One path's record in a state of format 3, its bytes borrowed from the file.
#[derive(Deserialize)]
struct RecordRef<'a> {
    #[serde(borrow)]
    path: &'a [u8],
    /// 0 file, 1 dir, 2 symlink.
    kind: u8,
    size: u64,
    mode: u32,
    mtime: (i64, u32),
    hash: Option<[u8; 32]>,
    #[serde(borrow)]
    target: Option<&'a [u8]>,
    owner: Option<(u32, u32)>,
}

/// A [`RecordRef`] of format 2, written before owners were kept.
#[derive(Deserialize)]
struct LegacyRecordRef<'a> {
    #[serde(borrow)]
    path: &'a [u8],
    kind: u8,
    size: u64,
    mode: u32,
    mtime: (i64, u32),
    hash: Option<[u8; 32]>,
    #[serde(borrow)]
    target: Option<&'a [u8]>,
}

impl<'a> From<LegacyRecordRef<'a>> for RecordRef<'a> {
    fn from(r: LegacyRecordRef<'a>) -> Self {
        RecordRef {
            path: r.path,
            kind: r.kind,
            size: r.size,
            mode: r.mode,
            mtime: r.mtime,
            hash: r.hash,
            target: r.target,
            owner: None,
        }
    }
}

impl<'a> RecordRef<'a> {
    fn path(&self) -> &'a Path {
        Path::new(OsStr::from_bytes(self.path))
    }

    fn entry(&self) -> Entry {
        let mtime = MTime::new(self.mtime.0, self.mtime.1);
        let e = match self.kind {
            1 => Entry::dir(self.mode, mtime),
            2 => Entry::symlink(
                Path::new(OsStr::from_bytes(self.target.unwrap_or_default())),
                mtime,
            ),
            _ => Entry::file(self.size, self.mode, mtime, self.hash.map(Digest)),
        };
        e.owned_by(engine::Owner::from_known(self.owner))
    }
}

/// [`record`], with `digest` as the hash where the entry has none (a copy's, known only
/// once it was made).
fn record_with<'e>(p: &'e Path, e: &'e Entry, digest: Option<Digest>) -> EntryRef<'e> {
    let mut r = record(p, e);
    if r.sha256.is_none() {
        r.sha256 = digest;
    }
    r
}

/// Reads the state of the pair (a, b) (in either order); `Ok(None)` only if there is
/// none yet (first sync). A state that exists but cannot be read (permission denied,
/// an I/O error, a directory in its place) is an error: taking it for no state would
/// make a first sync, a union that undoes every deletion since. A damaged or foreign
/// state file is treated as none, which loses nothing (a first sync deletes nothing)
/// and is logged. The state is held as its records (see [`Packed`]), every one of them
/// checked here.
pub fn load(file: &Path, a: &Path, b: &Path) -> Result<Option<Packed>, Error> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read the sync state", file, e)),
    };
    match decode(bytes, a, b) {
        Ok(state) => Ok(state),
        Err(e) => unless_damaged(file, e),
    }
}

/// A sync state as a pass first opens it: its file and its head. A pass that finds both
/// replicas as the state records them (every pass with nothing to do) reads the records
/// once, in order, as it compares ([`Stored::unchanged`]); any other holds them whole
/// ([`Stored::held`], about 75 bytes a path), read when first asked for. At a million
/// paths, a pass with nothing to do no longer holds 76 MB of state.
pub struct Stored {
    file: PathBuf,
    a: PathBuf,
    b: PathBuf,
    count: usize,
    /// For a state not read whole: its file, read up to its first record.
    records: Option<engine::tree::encoding::SeqReader<std::fs::File>>,
    held: std::sync::OnceLock<Option<Packed>>,
    /// The records of the part of both replicas a pass plans, where it plans only the
    /// part with something to do (see [`Stored::narrow_in_windows`]).
    part: Option<Packed>,
}

/// A state file that does not read: no state if it is damaged (logged; a first sync,
/// which deletes nothing), else an error (never taken for a first sync).
fn unless_damaged<T>(file: &Path, e: std::io::Error) -> Result<Option<T>, Error> {
    use std::io::ErrorKind::{InvalidData, UnexpectedEof};
    if !matches!(e.kind(), InvalidData | UnexpectedEof) {
        return Err(Error::io("read the sync state", file, e));
    }
    log::warn!(
        "sync state {} is damaged ({e}); syncing as a first sync (nothing is deleted)",
        file.display()
    );
    Ok(None)
}

/// The largest state file [`open`] reads whole at once (about 110,000 paths).
const HELD_MAX: u64 = 8 << 20;

/// Opens the state of the pair (a, b) as [`load`] reads it, reading only its head where
/// it is large (a small one, or one of an older format, is read whole now). `Ok(None)` where [`load`]
/// gives it: no state yet, another pair's, or a head that is damaged (logged); an error
/// where the file cannot be read.
pub fn open(file: &Path, a: &Path, b: &Path) -> Result<Option<Stored>, Error> {
    open_holding(file, a, b, HELD_MAX)
}

/// [`open`], reading whole a state file of at most `held_max` bytes.
fn open_holding(file: &Path, a: &Path, b: &Path, held_max: u64) -> Result<Option<Stored>, Error> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read the sync state", file, e)),
    };
    // Its length (0 if unknown: read whole).
    let len = f.metadata().map_or(0, |m| m.len());
    let mut seq = engine::tree::encoding::SeqReader::new(f);
    let head = take_head(&mut seq, (a, b));
    let stored = |records, held: Option<Packed>, count| Stored {
        file: file.to_path_buf(),
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        count,
        records,
        held: held
            .map(|h| std::sync::OnceLock::from(Some(h)))
            .unwrap_or_default(),
        part: None,
    };
    match head {
        Ok(Some((FORMAT, count))) if len > held_max => Ok(Some(stored(Some(seq), None, count))),
        // A small state is read whole at once (while the replicas are scanned): it costs
        // little memory, and the planner of a pass with changes needs it whole.
        Ok(Some(_)) => Ok(load(file, a, b)?.map(|p| {
            let count = p.len();
            stored(None, Some(p), count)
        })),
        Ok(None) => Ok(None),
        Err(e) => unless_damaged(file, e),
    }
}

impl Stored {
    /// Whether both replicas hold exactly what the state records (see
    /// [`crate::plan::unchanged_since`]), its records read in order from the file (once:
    /// the file as `open` left it) unless they are held. A record that does not read
    /// gives `false`: the planner then reads the state whole, and finds the damage.
    pub fn unchanged(
        &mut self,
        a: &engine::tree::Tree,
        b: &engine::tree::Tree,
        owners: bool,
    ) -> bool {
        self.compare(|count, next| crate::plan::unchanged_as_read(count, a, b, owners, next))
    }

    /// Both replicas read compact, compared with the state a window of paths at a time
    /// as `q` hands them out (see `engine::pass::quiet`), the state's records read in
    /// order as they are: each window's paths where the planner acts
    /// ([`crate::plan::acts_at`]) are told to `q`, which gathers the part of both
    /// replicas to plan, and the state's records of that part are kept
    /// ([`Stored::take_part`]): those at the paths told, at every folder above them,
    /// and at paths that only the state holds. Nothing told: both replicas are as the
    /// state records them. False where the pass is to be planned whole (something
    /// depends on paths anywhere, the part grew too big, a record does not read).
    pub fn narrow_in_windows(
        &mut self,
        q: &mut Quiet<'_>,
        opts: &crate::plan::SyncOptions,
    ) -> bool {
        let quiet = |t: &CompactTree| {
            let clean = t.unknown.is_empty() && t.leftovers.is_empty();
            crate::plan::quiet_apart(clean, &t.excluded, |p| {
                t.entries.get(p).is_some_and(|e| e.kind == Kind::Dir)
            })
        };
        let trees = q.trees();
        let mut part = Writer::default();
        let walked = self.compare(|_, next| {
            if !trees.iter().all(quiet) {
                return false;
            }
            let mut rows = Rows {
                next,
                ahead: None,
                above: Above {
                    dirs: Vec::new(),
                    part: &mut part,
                },
            };
            while let Some(w) = q.next_window() {
                let [a, b] = &*w.trees;
                let mut at = Vec::new();
                let mut elsewhere = false;
                let mut last: Option<&Path> = None;
                for (p, x, y) in engine::tree::zip_paths(&a.entries, &b.entries) {
                    match rows.meet(p, x, y, opts, &mut elsewhere) {
                        crate::plan::AtPath::Nothing => {}
                        crate::plan::AtPath::Acts => at.push(p.to_path_buf()),
                        crate::plan::AtPath::Whole => return false,
                    }
                    last = Some(p);
                }
                // Records up to the window's end that neither replica holds.
                if let Some(last) = last {
                    elsewhere |= rows.only_through(Some(last));
                }
                if !at.is_empty()
                    && !q.something_to_do_at(engine::pass::quiet::Keep::Paths {
                        at,
                        under: Vec::new(),
                    })
                {
                    return false;
                }
                if elsewhere && !q.something_to_do_elsewhere() {
                    return false;
                }
            }
            if rows.only_through(None) && !q.something_to_do_elsewhere() {
                return false;
            }
            true
        });
        self.part = walked.then(|| part.finish());
        walked
    }

    /// The state's records of the part of both replicas that [`Stored::narrow_in_windows`]
    /// gathered.
    pub fn take_part(&mut self) -> Option<Packed> {
        self.part.take()
    }

    /// The state's records of that part, where it was gathered.
    pub fn part(&self) -> Option<&Packed> {
        self.part.as_ref()
    }

    /// What `same` says of the state's records, given how many there are and read in
    /// order: from the state held, or from its file (once), where the last record must
    /// end the file. `false` without a state.
    fn compare(
        &mut self,
        same: impl FnOnce(usize, &mut crate::plan::NextRecord<'_>) -> bool,
    ) -> bool {
        if let Some(held) = self.held.get() {
            let Some(p) = held else { return false };
            let mut rows = p.iter();
            return same(p.len(), &mut |check| rows.next().map(|(q, s)| check(q, &s)));
        }
        let Some(mut seq) = self.records.take() else {
            return false;
        };
        let mut read = |check: &mut dyn FnMut(&Path, &Entry) -> bool| {
            seq.take_entry(false, |r| check(r.path, &r.to_entry())).ok()
        };
        same(self.count, &mut read) && seq.at_end().unwrap_or(false)
    }

    /// The state whole, read now unless it was; `None` if it turns out to be damaged
    /// (logged: synced as a first sync, as [`load`] does).
    pub fn held(&self) -> Result<Option<&Packed>, Error> {
        if let Some(held) = self.held.get() {
            return Ok(held.as_ref());
        }
        let loaded = load(&self.file, &self.a, &self.b)?;
        Ok(self.held.get_or_init(|| loaded).as_ref())
    }

    /// [`Stored::held`], handed over.
    pub fn into_held(self) -> Result<Option<Packed>, Error> {
        match self.held.into_inner() {
            Some(held) => Ok(held),
            None => load(&self.file, &self.a, &self.b),
        }
    }
}

/// The records of a state read in order, met with both replicas' paths (see
/// [`Stored::narrow_in_windows`]): each compared where it is read, and those of the part
/// to plan kept, each with the folders above it that the state records. Only what is
/// kept is copied (a pass with nothing to do copies the folders' records alone).
struct Rows<'n, 'r, 'w> {
    next: &'n mut crate::plan::NextRecord<'r>,
    /// A record read past the path met last, not yet met.
    ahead: Option<(PathBuf, Entry)>,
    above: Above<'w>,
}

/// The state's folders above the place met last (outermost first, and whether each is
/// kept), and the records kept.
struct Above<'w> {
    dirs: Vec<(PathBuf, Entry, bool)>,
    part: &'w mut Writer,
}

/// What a record read says of the path met.
enum Read {
    /// It comes before: a path only the state holds (kept).
    Before,
    /// It is the path's: what the planner does there.
    At(crate::plan::AtPath),
    /// It comes after (held for the next path).
    After,
}

impl Above<'_> {
    /// Leaves the folders that `p` (met after every path before) is not in.
    fn leave(&mut self, p: &Path) {
        let under = |d: &Path| {
            let (p, d) = (p.as_os_str().as_bytes(), d.as_os_str().as_bytes());
            p.len() > d.len() && p.starts_with(d) && p[d.len()] == b'/'
        };
        while self.dirs.last().is_some_and(|(d, _, _)| !under(d)) {
            self.dirs.pop();
        }
    }

    /// Keeps `p`'s record `s`, if any, with every folder above it not kept yet.
    fn keep(&mut self, p: &Path, s: Option<&Entry>) {
        self.leave(p);
        for (d, e, kept) in self.dirs.iter_mut().filter(|x| !x.2) {
            self.part.push(&record(d, e));
            *kept = true;
        }
        if let Some(s) = s {
            self.part.push(&record(p, s));
            if s.kind == Kind::Dir {
                self.dirs.push((p.to_path_buf(), s.clone(), true));
            }
        }
    }

    /// What the planner does at `p`, whose record is `s` (A's entry `x`, B's `y`): the
    /// record kept where it acts, and a folder's noted where it does not.
    fn decide(
        &mut self,
        p: &Path,
        s: Option<&Entry>,
        (x, y): (Option<&Entry>, Option<&Entry>),
        opts: &crate::plan::SyncOptions,
    ) -> crate::plan::AtPath {
        let at = crate::plan::acts_at(s, x, y, opts);
        match (&at, s) {
            (crate::plan::AtPath::Acts, _) => self.keep(p, s),
            (crate::plan::AtPath::Nothing, Some(s)) if s.kind == Kind::Dir => {
                self.leave(p);
                self.dirs.push((p.to_path_buf(), s.clone(), false));
            }
            _ => {}
        }
        at
    }
}

impl Rows<'_, '_, '_> {
    /// What the planner does at `p` (A's entry `x`, B's `y`), its record read if the
    /// state has one; records before it, of paths only the state holds, are kept (and
    /// `elsewhere` set).
    fn meet(
        &mut self,
        p: &Path,
        x: Option<&Entry>,
        y: Option<&Entry>,
        opts: &crate::plan::SyncOptions,
        elsewhere: &mut bool,
    ) -> crate::plan::AtPath {
        if let Some((q, s)) = self.ahead.take() {
            match path_order(&q, p) {
                std::cmp::Ordering::Less => {
                    self.above.keep(&q, Some(&s));
                    *elsewhere = true;
                }
                std::cmp::Ordering::Equal => return self.above.decide(p, Some(&s), (x, y), opts),
                std::cmp::Ordering::Greater => {
                    self.ahead = Some((q, s));
                    return self.above.decide(p, None, (x, y), opts);
                }
            }
        }
        loop {
            let Rows { next, ahead, above } = self;
            let mut read = None;
            next(&mut |q, s| {
                // (Most records are the path's: equal bytes, told first.)
                let order = if same_path(q, p) {
                    std::cmp::Ordering::Equal
                } else {
                    path_order(q, p)
                };
                read = Some(match order {
                    std::cmp::Ordering::Less => {
                        above.keep(q, Some(s));
                        Read::Before
                    }
                    std::cmp::Ordering::Equal => Read::At(above.decide(p, Some(s), (x, y), opts)),
                    std::cmp::Ordering::Greater => {
                        *ahead = Some((q.to_path_buf(), s.clone()));
                        Read::After
                    }
                });
                true
            });
            match read {
                Some(Read::Before) => *elsewhere = true,
                Some(Read::At(at)) => return at,
                Some(Read::After) | None => return above.decide(p, None, (x, y), opts),
            }
        }
    }

    /// Keeps each record up to `p` (every one left, with `None`): paths only the state
    /// holds, gone from both replicas. True if there was one.
    fn only_through(&mut self, p: Option<&Path>) -> bool {
        let mut any = false;
        let through = |q: &Path| p.is_none_or(|p| path_order(q, p).is_le());
        if let Some((q, s)) = self.ahead.take() {
            if !through(&q) {
                self.ahead = Some((q, s));
                return false;
            }
            self.above.keep(&q, Some(&s));
            any = true;
        }
        loop {
            let Rows { next, ahead, above } = self;
            let mut kept = None;
            next(&mut |q, s| {
                kept = Some(through(q));
                if through(q) {
                    above.keep(q, Some(s));
                } else {
                    *ahead = Some((q.to_path_buf(), s.clone()));
                }
                true
            });
            match kept {
                Some(true) => any = true,
                _ => return any,
            }
        }
    }
}

/// The pair in the order its state is kept: the same for `twoway A B` and `twoway B A`.
fn pair<'p>(a: &'p Path, b: &'p Path) -> (&'p Path, &'p Path) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// The state of the pair (a, b) that `bytes` (a state file) hold; `None` if it belongs
/// to another pair. A state of an older format is encoded anew.
fn decode(mut bytes: Vec<u8>, a: &Path, b: &Path) -> std::io::Result<Option<Packed>> {
    let invalid = |e: postcard::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let (a, b) = pair(a, b);
    let ((format, fa, fb, count), rest) =
        postcard::take_from_bytes::<Head>(&bytes).map_err(invalid)?;
    let ours = [FORMAT, FORMAT_3, FORMAT_2].contains(&format)
        && fa == a.as_os_str().as_bytes()
        && fb == b.as_os_str().as_bytes();
    if !ours {
        return Ok(None);
    }
    let head_len = bytes.len() - rest.len();
    if format == FORMAT {
        // The records are the packed state's own bytes.
        bytes.drain(..head_len);
        return Packed::from_bytes(bytes, count).map(Some);
    }
    let mut rest = &bytes[head_len..];
    let mut w = Writer::default();
    for _ in 0..count {
        let (r, after) = if format == FORMAT_3 {
            postcard::take_from_bytes::<RecordRef>(rest).map_err(invalid)?
        } else {
            let (r, after) = postcard::take_from_bytes::<LegacyRecordRef>(rest).map_err(invalid)?;
            (RecordRef::from(r), after)
        };
        w.push(&record(r.path(), &r.entry()));
        rest = after;
    }
    if !rest.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bytes after the last record",
        ));
    }
    let packed = w.finish();
    // Checked as a state of the current format is (path order).
    Packed::from_bytes(packed.bytes().to_vec(), packed.len()).map(Some)
}

/// Where a pass sets a planned state aside while it runs, instead of holding it in
/// memory (see `Tool::make_room` in [`crate::pass`]): an unnamed file in `dir`, for the
/// pair (a, b).
pub struct Aside<'a> {
    pub dir: &'a Path,
    pub a: &'a Path,
    pub b: &'a Path,
}

/// A state set aside in an unnamed file (gone with the process), while its memory is
/// needed for something else.
#[derive(Debug)]
pub struct Spilled(std::fs::File);

impl Aside<'_> {
    /// Writes `state` to an unnamed file, as its state file would hold it.
    pub fn put(&self, state: &Packed) -> std::io::Result<Spilled> {
        std::fs::create_dir_all(self.dir)?;
        let mut f = tempfile::tempfile_in(self.dir)?;
        let mut out = Blocks::start(&mut f, (self.a, self.b), state.len());
        out.raw(state.bytes());
        out.finish()?;
        Ok(Spilled(f))
    }
}

/// The state set aside by [`Aside::put`] with the same pair.
pub fn unspill(s: Spilled, a: &Path, b: &Path) -> std::io::Result<Packed> {
    use std::io::{Read, Seek};
    let mut f = s.0;
    f.rewind()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    decode(bytes, a, b)?.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "set aside for another pair",
        )
    })
}

/// A state file being written, a block at a time: its head, then its records, in path
/// order, encoded already or encoded here. A write that fails is told by `finish`.
struct Blocks<'w> {
    w: &'w mut dyn std::io::Write,
    buf: Vec<u8>,
    failed: Option<std::io::Error>,
}

impl<'w> Blocks<'w> {
    const BLOCK: usize = 64 * 1024;

    /// Starts the state of the pair (a, b), of `count` records.
    fn start(w: &'w mut dyn std::io::Write, (a, b): (&Path, &Path), count: usize) -> Self {
        let (a, b) = pair(a, b);
        let head = (
            FORMAT,
            a.as_os_str().as_bytes(),
            b.as_os_str().as_bytes(),
            count,
        );
        let buf = postcard::to_extend(&head, Vec::with_capacity(Self::BLOCK + 1024))
            .expect("BUG: a head encodes into memory");
        Blocks {
            w,
            buf,
            failed: None,
        }
    }

    /// Records encoded already (one or several, back to back).
    fn raw(&mut self, bytes: &[u8]) {
        if bytes.len() >= Self::BLOCK {
            self.flush();
            if self.failed.is_none() {
                self.failed = self.w.write_all(bytes).err();
            }
        } else {
            self.buf.extend_from_slice(bytes);
            self.flush_full();
        }
    }

    /// A record to encode.
    fn record(&mut self, r: &EntryRef<'_>) {
        self.buf = postcard::to_extend(r, std::mem::take(&mut self.buf))
            .expect("BUG: a record encodes into memory");
        self.flush_full();
    }

    fn flush_full(&mut self) {
        if self.buf.len() >= Self::BLOCK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.failed.is_none() {
            self.failed = self.w.write_all(&self.buf).err();
        }
        self.buf.clear();
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.flush();
        self.failed.map_or(Ok(()), Err)
    }
}

/// Adds `new` to the state of the pair (a, b) in `file`: records in path order, each a
/// path, its entry and the hash to record where the entry has none (a copy's); a record
/// of the same path in the file is replaced. The file's records are streamed through,
/// one at a time, never held: a first sync merges what it has done into a state as
/// large as the tree about once a second. The file must hold a state of this pair in
/// the current format (the first sync wrote it).
pub fn merge_into<'e, I>(file: &Path, a: &Path, b: &Path, new: impl Fn() -> I) -> Result<(), Error>
where
    I: Iterator<Item = (&'e Path, &'e Entry, Option<Digest>)>,
{
    let (a, b) = pair(a, b);
    // The file's records, merged with the new ones: a record of a path both hold is the
    // new one. Read twice, once to count them for the head, once to write them.
    let failed: std::cell::RefCell<Option<std::io::Error>> = Default::default();
    let failed_at = &failed;
    let merged = || -> std::io::Result<(usize, _)> {
        let mut seq = engine::tree::encoding::SeqReader::new(std::fs::File::open(file)?);
        let old = seq
            .take_with(|raw| {
                let ((format, fa, fb, count), rest) = postcard::take_from_bytes::<Head>(raw)?;
                let ours = format == FORMAT
                    && fa == a.as_os_str().as_bytes()
                    && fb == b.as_os_str().as_bytes();
                Ok((ours.then_some(count), rest.len()))
            })?
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not this pair's state")
            })?;
        let olds = (0..old).map_while(move |_| {
            let r = seq.take_with(|raw| {
                let (r, rest) = postcard::take_from_bytes::<EntryRef>(raw)?;
                Ok((r.to_owned(), rest.len()))
            });
            r.map_err(|e| *failed_at.borrow_mut() = Some(e)).ok()
        });
        let records = engine::tree::zip_sorted_by(olds, new(), |r| r.path.as_path(), |n| n.0).map(
            |(o, n)| match n {
                Some((p, e, digest)) => record_with(p, e, digest).to_owned(),
                None => o.expect("BUG: a merged pair holds at least one record"),
            },
        );
        Ok((old, records))
    };
    let count = merged()
        .map(|(_, records)| records.count())
        .map_err(|e| Error::io("read the sync state", file, e))?;
    if let Some(e) = failed.take() {
        return Err(Error::io("read the sync state", file, e));
    }
    // New records always change the file: written without comparing it first.
    fs::write_atomic_with(file, |w| {
        let (_, records) = merged()?;
        let mut out = Blocks::start(w, (a, b), count);
        for r in records {
            out.record(&r.as_ref());
        }
        out.finish()?;
        failed.take().map_or(Ok(()), Err)
    })
}

/// Records the pair (a, b)'s new state: the state in `file` (the one the pass planned
/// against; a first sync's is its progress, or none) with `change` made to it, except at
/// and under each `failed` path, which keeps what the file holds there. A file's record
/// whose hash is unknown takes the one `hash_of` gives (asked in path order). The file
/// is streamed through twice, counted and then written, and never held whole; nothing
/// is written if nothing changes. Returns whether the file was written.
pub fn save_changed(
    file: &Path,
    a: &Path,
    b: &Path,
    change: &StateChange,
    failed: &BTreeSet<PathBuf>,
    hash_of: impl FnMut(&EntryRef<'_>) -> Option<Digest>,
) -> Result<bool, Error> {
    let kept = |p: &Path| !engine::tree::under_any(failed, p);
    if !change.put.keys().any(kept) && !change.gone.iter().any(|g| kept(g)) {
        return Ok(false);
    }
    let read_error = |e| Error::io("read the sync state", file, e);
    let mut hash_of = hash_of;
    // The size after the change, known beforehand where the planner counted the new
    // paths (and no failed path holds a change back): the file is then streamed through
    // once. Otherwise its records are counted first.
    let known = match (change.new_paths, failed.is_empty()) {
        (Some(new_paths), true) => records_in(file, (a, b))
            .map_err(read_error)?
            .and_then(|n| (n + new_paths).checked_sub(change.gone.len())),
        _ => None,
    };
    let count = match known {
        Some(count) => count,
        None => {
            let mut count = 0;
            merge_change(file, (a, b), change, failed, &mut |_| count += 1).map_err(read_error)?;
            count
        }
    };
    // The records written are counted all the same: a file that would not hold the
    // number its head says is not put in place, and is written again with the number
    // made, given the same hashes (`hash_of` answers in path order, once).
    let mut given: Vec<Option<Digest>> = Vec::new();
    let mut asking = |r: &EntryRef<'_>| {
        let h = hash_of(r);
        given.push(h);
        h
    };
    let written = write_changed(file, (a, b), change, failed, count, &mut asking)?;
    if written == count {
        return Ok(true);
    }
    log::debug!("sync state written again: {written} records, where {count} were counted");
    let mut again = given.into_iter();
    let rewritten = write_changed(file, (a, b), change, failed, written, &mut |_| {
        again.next().flatten()
    })?;
    if rewritten != written {
        return Err(Error::entry(
            file,
            "BUG: a sync state's records changed between two writes",
        ));
    }
    Ok(true)
}

/// Writes the state in `file` with `change` made to it (see [`save_changed`]) under a
/// head that says `count` records, and gives how many it made. If that is another
/// number, nothing is written: the file stays as it was.
fn write_changed(
    file: &Path,
    (a, b): (&Path, &Path),
    change: &StateChange,
    failed: &BTreeSet<PathBuf>,
    count: usize,
    hash_of: &mut impl FnMut(&EntryRef<'_>) -> Option<Digest>,
) -> Result<usize, Error> {
    let (mut made, mut miscounted) = (0, false);
    let done = fs::write_atomic_with(file, |w| {
        let mut out = Blocks::start(w, (a, b), count);
        merge_change(file, (a, b), change, failed, &mut |r| {
            made += 1;
            match r {
                Out::Raw(r, raw) if !unhashed(&r) => out.raw(raw),
                Out::Raw(mut r, _) | Out::Made(mut r) => {
                    if unhashed(&r) {
                        r.sha256 = hash_of(&r);
                    }
                    out.record(&r);
                }
            }
        })?;
        if made != count {
            // Not put in place (the temporary file goes).
            miscounted = true;
            return Err(std::io::Error::other("miscounted"));
        }
        out.finish()
    });
    match done {
        Err(_) if miscounted => Ok(made),
        other => other.map(|()| made),
    }
}

/// How many records the state in `file` holds, as its head says (None: no file).
fn records_in(file: &Path, (a, b): (&Path, &Path)) -> std::io::Result<Option<usize>> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut seq = engine::tree::encoding::SeqReader::new(f);
    read_head(&mut seq, (a, b)).map(|(_, count)| Some(count))
}

/// Reads the head of a state file of the pair `(a, b)`: its format and how many records
/// follow. A file of another pair, or of a format this build does not read, is damage.
fn read_head(
    seq: &mut engine::tree::encoding::SeqReader<std::fs::File>,
    pair_of: (&Path, &Path),
) -> std::io::Result<(u32, usize)> {
    take_head(seq, pair_of)?.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "not this pair's state")
    })
}

/// Reads the head of a state file: its format and how many records follow, or `None`
/// for a file of another pair or of a format this build does not read.
fn take_head(
    seq: &mut engine::tree::encoding::SeqReader<std::fs::File>,
    (a, b): (&Path, &Path),
) -> std::io::Result<Option<(u32, usize)>> {
    let (a, b) = pair(a, b);
    seq.take_with(|raw| {
        let ((format, fa, fb, count), rest) = postcard::take_from_bytes::<Head>(raw)?;
        let ours = [FORMAT, FORMAT_3, FORMAT_2].contains(&format)
            && fa == a.as_os_str().as_bytes()
            && fb == b.as_os_str().as_bytes();
        Ok((ours.then_some((format, count)), rest.len()))
    })
}

/// A file's record whose hash is not known.
fn unhashed(r: &EntryRef<'_>) -> bool {
    r.kind == engine::tree::Kind::File && r.sha256.is_none()
}

/// A record of the state [`merge_change`] makes: as encoded (and where), or to encode.
enum Out<'r, 'b> {
    Raw(EntryRef<'r>, &'b [u8]),
    Made(EntryRef<'r>),
}

/// Where [`merge_change`] is in a change: the records to put and the paths gone that
/// are still to come.
struct Merge<'c, P: Iterator<Item = (EntryRef<'c>, &'c [u8])>, G: Iterator<Item = &'c PathBuf>> {
    puts: std::iter::Peekable<P>,
    gones: std::iter::Peekable<G>,
}

impl<'c, P, G> Merge<'c, P, G>
where
    P: Iterator<Item = (EntryRef<'c>, &'c [u8])>,
    G: Iterator<Item = &'c PathBuf>,
{
    /// Gives `out` the records put before `p` (all that are left, without one).
    fn before(&mut self, p: Option<&Path>, out: &mut dyn FnMut(Out<'_, '_>)) {
        while let Some((r, raw)) = self
            .puts
            .next_if(|(r, _)| p.is_none_or(|p| path_order(r.path, p).is_lt()))
        {
            out(Out::Raw(r, raw));
        }
    }

    /// The base's record at `p`, after what comes before it: gone, replaced by the one
    /// put there, or kept (`keep` gives it).
    fn base(
        &mut self,
        p: &Path,
        out: &mut dyn FnMut(Out<'_, '_>),
        keep: impl FnOnce(&mut dyn FnMut(Out<'_, '_>)),
    ) {
        self.before(Some(p), out);
        while self.gones.next_if(|g| path_order(g, p).is_lt()).is_some() {}
        if self.gones.next_if(|g| same_path(g, p)).is_some() {
            return;
        }
        match self.puts.next_if(|(r, _)| same_path(r.path, p)) {
            Some((r, raw)) => out(Out::Raw(r, raw)),
            None => keep(out),
        }
    }
}

/// Hands each record of the state in `file` with `change` made to it (see
/// [`save_changed`]) to `out`, in path order.
fn merge_change(
    file: &Path,
    pair_of: (&Path, &Path),
    change: &StateChange,
    failed: &BTreeSet<PathBuf>,
    out: &mut dyn FnMut(Out<'_, '_>),
) -> std::io::Result<()> {
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let kept = |p: &Path| !engine::tree::under_any(failed, p);
    let mut merge = Merge {
        puts: change
            .put
            .records()
            .filter(|(r, _)| kept(r.path))
            .peekable(),
        gones: change.gone.iter().filter(|g| kept(g)).peekable(),
    };
    let base = match std::fs::File::open(file) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(f) = base {
        let mut seq = engine::tree::encoding::SeqReader::new(f);
        let (format, count) = read_head(&mut seq, pair_of)?;
        for _ in 0..count {
            // Each record is decoded whole before anything is done with it (one cut by
            // the end of the buffer is decoded again).
            seq.take_with(|raw| {
                let rest = match format {
                    FORMAT => {
                        let (r, rest) = postcard::take_from_bytes::<EntryRef>(raw)?;
                        let own = &raw[..raw.len() - rest.len()];
                        merge.base(r.path, out, |out| out(Out::Raw(r, own)));
                        rest
                    }
                    _ => {
                        let (r, rest) = if format == FORMAT_3 {
                            postcard::take_from_bytes::<RecordRef>(raw)?
                        } else {
                            let (r, rest) = postcard::take_from_bytes::<LegacyRecordRef>(raw)?;
                            (RecordRef::from(r), rest)
                        };
                        let (p, e) = (r.path(), r.entry());
                        merge.base(p, out, |out| out(Out::Made(record(p, &e))));
                        rest
                    }
                };
                Ok(((), rest.len()))
            })?;
        }
        if !seq.at_end()? {
            return Err(invalid("bytes after the last record"));
        }
    }
    merge.before(None, out);
    Ok(())
}

/// Writes the state atomically, encoded a block at a time, unless the file already holds
/// this very state. Returns whether the file was written. (Tests write states so; a pass
/// writes what changed, or a first sync's records, through [`save_records`].)
#[cfg(test)]
pub fn save(file: &Path, a: &Path, b: &Path, state: &Entries) -> Result<bool, Error> {
    save_records(file, a, b, || state.iter())
}

/// [`save`] of the records `records` gives, in path order, each path once: walked twice
/// (once to count them for the head), never held.
pub fn save_records<'e, I>(
    file: &Path,
    a: &Path,
    b: &Path,
    records: impl Fn() -> I,
) -> Result<bool, Error>
where
    I: Iterator<Item = (&'e Path, &'e Entry)>,
{
    let count = records().count();
    fs::write_atomic_unless_same(file, |w| {
        let mut out = Blocks::start(w, (a, b), count);
        let mut written = 0;
        for (p, e) in records() {
            out.record(&record(p, e));
            written += 1;
        }
        assert_eq!(written, count, "BUG: the same records twice");
        out.finish()
    })
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
