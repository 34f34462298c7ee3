//! The one pass pipeline, written once for `oneway` and `twoway`:
//! [`Scanned`] → [`Planned`] → [`Applied`] → recorded.
//!
//! A tool (see [`Tool`]) names its two replicas, loads what its planner needs besides the
//! trees, supplies a pure planner, its own refusals and its summary words. Everything
//! else is decided here, in one place: what is read and hashed, what is kept in a
//! version before it is replaced, the order in which plans are applied, when a pass is
//! interrupted, the flush before anything is recorded, what is recorded, how errors
//! are counted and what the pass reports to the interval loop.
//!
//! This module writes nothing itself: [`crate::apply`] and the tool's store do, through
//! [`crate::fs`].

mod narrow;
pub mod progress;
pub mod quiet;
mod review;
mod stages;
mod turns;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Refusal};
use crate::fs::Root;
use crate::plan::mirror::Plan;
use crate::run::cli::Settings;
use crate::run::config::OnError;
use crate::run::home::DataHome;
use crate::run::runner::PassOutcome;
use crate::run::watch::Between;
use crate::scan::after::After;
use crate::scan::replica::Replica;
use crate::scan::ScanOptions;
use crate::tree::compact::CompactTree;
use crate::tree::{Digest, MTime, Tree};

pub use stages::{Applied, Scanned};

/// One of the plans of a pass: what it does to one replica, reading from another (its
/// entries borrowed from the trees it was planned from, `'t`).
#[derive(Debug)]
pub struct Step<'t> {
    pub plan: Plan<'t>,
    /// The replica written (0 or 1).
    pub target: usize,
    /// The replica the bytes are read from (the target itself for a copy made beside
    /// its original, such as a conflict copy).
    pub source: usize,
    /// Steps of one round run at once (they write different replicas); a round starts
    /// once the one before has ended.
    pub round: u8,
    /// Written in log lines: "SOURCE -> BACKUP", "A -> B"…
    pub direction: &'static str,
    /// The bytes read must hash to what the plan expects (a source that changed since
    /// it was planned is left for the next pass).
    pub verify_hash: bool,
    /// Extended attributes come from the source file (else they stay as they are).
    pub attrs_from_source: bool,
}

/// What a replica's versions need before a pass changes the replica.
#[derive(Debug, Default)]
pub struct KeepFirst {
    /// The files the steps overwrite or delete (whole directories removed included), in
    /// path order: each is kept in the store.
    pub lost: Vec<(PathBuf, Option<Digest>)>,
    /// Where the steps move files of the replica to, with their content: noted in the
    /// store, so that the latest version, which names the old paths, finds its content
    /// even if the pass is cut short.
    pub moved: Vec<(PathBuf, Digest)>,
}

impl KeepFirst {
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty() && self.moved.is_empty()
    }
}

/// A tool's plan as the pipeline carries it out: steps, and what the tool will record
/// afterwards (`extra`: the new sync state, for twoway). Its actions borrow their
/// entries from the scanned trees (`'t`), which therefore stay as they are until the
/// steps have run.
#[derive(Debug)]
pub struct Planned<'t, X> {
    pub steps: Vec<Step<'t>>,
    pub extra: X,
    /// Per replica, what its versions need before the pass changes anything, when
    /// versions are on.
    pub keep_first: [KeepFirst; 2],
    /// Errors the planner found (a path it could not plan); counted with the pass's.
    pub errors: Vec<Error>,
    /// Paths whose actions `--approve` left out: recorded as not done.
    pub skipped: Vec<PathBuf>,
}

impl<'t, X> Planned<'t, X> {
    /// A plan of `steps`; what each replica loses is listed by the pipeline, for the
    /// replicas whose versions are kept.
    pub fn new(mut steps: Vec<Step<'t>>, extra: X) -> Planned<'t, X> {
        let mut errors = Vec::new();
        for s in &mut steps {
            errors.append(&mut s.plan.errors);
        }
        Planned {
            steps,
            extra,
            keep_first: Default::default(),
            errors,
            skipped: Vec::new(),
        }
    }

    /// What replica `side` (scanned as `tree`) needs kept before the steps run: the
    /// files they overwrite or delete, in path order, each once, and where they move
    /// files to.
    fn keep_first(&self, side: usize, tree: &'t Tree) -> KeepFirst {
        let steps = || self.steps.iter().filter(move |s| s.target == side);
        let mut lost: Vec<(PathBuf, Option<Digest>)> = steps()
            .flat_map(|s| s.plan.files_lost(tree))
            .map(|(p, e)| (p.to_path_buf(), e.hash))
            .collect();
        crate::tree::sort_by_path(&mut lost);
        lost.dedup_by(|x, y| x.0 == y.0);
        let moved = steps()
            .flat_map(|s| &s.plan.actions)
            .filter(|a| matches!(a.op, crate::plan::mirror::Op::Move { .. }))
            .filter_map(|a| Some((a.path.to_path_buf(), a.src.as_ref()?.hash?)))
            .collect();
        KeepFirst { lost, moved }
    }

    /// Whether any step writes replica `side`.
    pub fn writes(&self, side: usize) -> bool {
        self.steps
            .iter()
            .any(|s| s.target == side && !s.plan.actions.is_empty())
    }
}

/// Where a replica's versions are kept (the recovery store), as the pipeline uses it.
pub trait Versions: Sync {
    /// Makes the store if it is missing.
    fn ensure(&self) -> Result<(), Error>;
    /// Keeps the files `first` lists of the replica at `root` (scanned as `tree`, whose
    /// directory SHA-256 is `sha` when the stat cache vouches for every file) in the
    /// store, and the replica as a version first if no version holds them; notes the
    /// moves it lists. Gives back the entries of the replica's files whose hash it had
    /// to work out, with it, for the pipeline to put in the tree once the steps have
    /// run (the plan borrows the tree until then). After a walk that gathered the part
    /// to plan (see [`narrow`]), `tree` is that part, and `rest` the rest of the
    /// replica as read: the version made first is both merged.
    fn keep(
        &self,
        home: &DataHome,
        root: &Path,
        tree: &Tree,
        rest: Option<crate::scan::after::Rest<'_>>,
        sha: Option<Digest>,
        first: &KeepFirst,
    ) -> Result<Vec<(PathBuf, crate::tree::Entry)>, Error>;
    /// Whether the latest version of the replica at `root` is `tree` (read compact,
    /// without hashes; `sha`, its directory SHA-256, proven by its stat cache), so
    /// that a pass that changed nothing has no version to record (see
    /// [`quiet`]). Repairs and registers the store as [`Versions::record`] does.
    /// `false`: `record` is to be called with the tree whole.
    fn is_latest(
        &self,
        home: &DataHome,
        root: &Path,
        tree: &CompactTree,
        sha: Digest,
    ) -> Result<bool, Error>;
    /// Records the replica after a pass (`tree`: held whole, or merged from the part
    /// a pass planned and the rest, see [`narrow`]); returns a note on the version
    /// made, if any.
    fn record(
        &self,
        home: &DataHome,
        root: &Path,
        tree: After<'_>,
        sha: Option<Digest>,
        complete: bool,
    ) -> Result<Option<String>, Error>;
    /// What a real pass would do with versions (printed by a dry run).
    fn describe_dry_run(&self);
}

/// Told about each action done while a pass runs (a twoway first sync records its
/// progress with it).
pub trait Tracker: Sync {
    /// The action at `at` of step `step` is done; `digest`: what a copy wrote.
    fn done(&self, step: usize, at: u32, digest: Option<Digest>);
    /// Called about every 100 ms while the steps run.
    fn tick(&self);
}

/// How a pass ended, as the tool's record step and summary see it.
#[derive(Debug)]
pub struct Outcome {
    pub n: u64,
    /// When the scan started: a later change may not be in this pass.
    pub scanned_at: MTime,
    pub dry_run: bool,
    pub interrupted: bool,
    /// Every replica written was flushed to disk.
    pub flushed: bool,
    /// Paths whose action failed (their state on disk is unknown).
    pub failed: Vec<PathBuf>,
    pub counts: crate::apply::Counts,
    pub hashed_files: u64,
    pub errors: usize,
    pub seconds: f64,
    /// Each replica's directory SHA-256 after the pass (`None`: incomplete).
    pub shas: [Option<Digest>; 2],
    /// Notes on the versions made, per replica.
    pub versions: [Option<String>; 2],
}

/// What a pass tool brings to the pipeline.
pub trait Tool: Sync {
    /// What the planner needs besides the trees, loaded while they are scanned. Its
    /// default is what a pass that fills a replica in turns plans each turn after the
    /// first from (see [`Tool::fills`]).
    type Base: Send + Default;
    /// What the tool records after the pass, besides the replicas (the new sync state).
    type Extra: Send + Sync + 'static;

    fn settings(&self) -> &Settings;
    fn home(&self) -> &DataHome;
    /// The two replicas: roots, labels and stat caches.
    fn replicas(&self) -> &[Replica; 2];
    fn scan_options(&self) -> [ScanOptions; 2];
    /// Each replica's versions, where they are kept.
    fn versions(&self) -> [Option<&dyn Versions>; 2];
    /// Refuses a pass whose roots are gone (an unplugged drive); run first.
    fn check_roots(&self) -> Result<(), Refusal>;
    /// Loads the base (read only).
    fn load_base(&self) -> Result<Self::Base, Refusal>;
    /// Reads what the planner compares that the scan and the stat caches did not give
    /// (hashes of the files it compares, extended attributes), and sets the trees as the
    /// planner is to see them (paths it must leave alone made unknown, the part to plan
    /// in [`Scanned::parts`]). Reads only.
    fn prepare(&self, scanned: &mut Scanned, base: &Self::Base);
    /// Plans the pass: a pure planner, and the tool's refusals (too many deletions). The
    /// plan borrows the scanned trees' entries.
    fn plan<'s>(
        &self,
        scanned: &'s Scanned,
        base: Self::Base,
    ) -> Result<Planned<'s, Self::Extra>, Refusal>;
    /// Makes room for the apply, after the plan is made: a tool may set aside on disk
    /// what it records only at the end (a first sync's state, as large as the tree).
    fn make_room(&self, _extra: &mut Self::Extra) {}
    /// Before the first change: a tracker of the actions done, if the tool keeps one.
    /// `later_turn`: this is a turn after the first of a pass in turns (see
    /// [`Tool::fills`]), whose turns before recorded what they did.
    fn track<'p>(
        &'p self,
        planned: &'p Planned<'_, Self::Extra>,
        trees: &[Tree; 2],
        later_turn: bool,
    ) -> Result<Option<Box<dyn Tracker + 'p>>, Refusal>;
    /// Whether a whole pass would find nothing to do, asked before the trees are made
    /// whole: of both trees a window of paths at a time, as `q` hands them out (each
    /// file's hash known). `Some(extra)`: nothing to do in any window, `extra` being
    /// what the planner would have given; the pipeline then checks the rest (see
    /// [`quiet`]) and records what such a pass records. `None` (what a tool that does
    /// not ask says): the pass goes on whole. A tool that plans parts
    /// ([`Tool::plans_parts`]) tells `q` of each window with something to do
    /// ([`quiet::Quiet::something_to_do`]) and goes on while it says so.
    fn quiet(&self, _q: &mut quiet::Quiet<'_>, _base: &mut Self::Base) -> Option<Self::Extra> {
        None
    }
    /// Whether the tool's planner may be given only the part of both trees where its
    /// `quiet` found something to do (see [`narrow`]): it acts on a path only from what
    /// both trees (and its base) hold at the path, above and under it, and its `record`
    /// needs no more of the replicas after the pass than that part.
    fn plans_parts(&self) -> bool {
        false
    }
    /// The replicas this pass may fill a stretch of paths at a time, where one is empty
    /// (see [`turns`]): given that replica empty and the base it loads now (which is
    /// then the default one), the tool's planner only adds to it what the other holds,
    /// each path from that path and the folders above it, and writes nothing else. Its
    /// `record` is then called after each turn, with that turn's trees; `summary` and
    /// `notes` get the last turn's `extra`.
    fn fills(&self) -> [bool; 2] {
        [false, false]
    }
    /// Records what the tool keeps besides the replicas (sync state, scan time), once
    /// the replicas are flushed. `afters`: the replicas after the pass (only the part
    /// planned, after a pass that planned a part: see [`narrow`]); `None` after a pass
    /// that found nothing to do before its trees were made whole (see [`quiet`]).
    fn record(
        &self,
        extra: &mut Self::Extra,
        afters: Option<&[Tree; 2]>,
        outcome: &Outcome,
    ) -> Result<(), Error>;
    /// The pass's summary line (of a dry run too), whole: for logs, pipes and `-v`.
    fn summary(&self, extra: &Self::Extra, outcome: &Outcome) -> String;
    /// What the short summary adds for this tool ("1 conflict", the version made).
    fn notes(&self, _extra: &Self::Extra, _outcome: &Outcome) -> Vec<String> {
        Vec::new()
    }
    /// Each replica's name in the `--json` summary's per-replica members: its label,
    /// unless the tool names its sides otherwise in its other events.
    fn side_names(&self) -> [&'static str; 2] {
        self.replicas().each_ref().map(|r| r.label)
    }
    /// The side whose store keeps the versions of replica `side` (the `--json` summary
    /// gives each replica's version under its label): itself, unless the tool says
    /// otherwise (oneway's one history, kept with BACKUP, is SOURCE's as well).
    fn versioned_by(&self, side: usize) -> Option<usize> {
        Some(side)
    }
    /// The tool's own counts in the `--json` summary (twoway's conflicts).
    fn json_counts(&self, _extra: &Self::Extra) -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }
}

/// The `--json` summary of a pass: every count the text summary has.
fn json_summary<T: Tool>(tool: &T, extra: &T::Extra, o: &Outcome) {
    use serde_json::{json, Map, Value};
    let actions: Map<String, Value> = o
        .counts
        .by_verb
        .iter()
        .map(|(v, n)| (v.to_string(), json!(n)))
        .collect();
    let labels = tool.side_names();
    let per_side = |f: &dyn Fn(usize) -> Value| -> Map<String, Value> {
        (0..2).map(|i| (labels[i].to_string(), f(i))).collect()
    };
    let mut fields = crate::run::events::fields(json!({
        "pass": o.n,
        "dry_run": o.dry_run,
        "interrupted": o.interrupted,
        "actions": actions,
        "operations": o.counts.operations(),
        "bytes_copied": o.counts.bytes,
        "hashed_files": o.hashed_files,
        "errors": o.errors,
        "seconds": o.seconds,
        "sha256": per_side(&|i| o.shas[i].map_or(Value::Null, |d| d.to_hex().into())),
        "version": per_side(&|i| {
            let id = tool.versioned_by(i).and_then(|side| version_id(o, side));
            id.map_or(Value::Null, |v| json!(v.parse::<u64>().ok()))
        }),
    }));
    for (k, v) in tool.json_counts(extra) {
        fields.insert(k.to_string(), v);
    }
    crate::run::events::emit("summary", fields);
}

/// Log targets of the two forms of a pass's summary: the whole line goes to log files,
/// pipes and `-v`; the short one to a terminal.
pub const SUMMARY: &str = "summary";
pub const SUMMARY_SHORT: &str = "summary-short";

/// Logs both forms of the pass's summary (see [`SUMMARY`]).
fn log_summary<T: Tool>(tool: &T, extra: &T::Extra, o: &Outcome) {
    if crate::run::events::enabled() {
        json_summary(tool, extra, o);
    }
    log::info!(target: SUMMARY, "{}", tool.summary(extra, o));
    if log::log_enabled!(target: SUMMARY_SHORT, log::Level::Info) {
        let labels = tool.replicas().each_ref().map(|r| r.label);
        log::info!(target: SUMMARY_SHORT, "{}", short_summary(o, labels, &tool.notes(extra, o)));
    }
}

/// The summary a person reads on a terminal: sizes in KiB, MiB and GiB, each directory
/// SHA-256 shortened to 8 digits (once when both replicas have the same), the version
/// made by its id; a pass with nothing to do in a few words.
pub fn short_summary(o: &Outcome, labels: [&str; 2], notes: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let head = format!(
        "pass {}{}",
        o.n,
        if o.dry_run {
            " (dry run)"
        } else if o.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );
    let idle =
        o.counts.operations() == 0 && o.errors == 0 && o.versions.iter().all(Option::is_none);
    if idle && !o.interrupted {
        return format!("{head}: nothing to do · {:.2}s", o.seconds);
    }
    parts.push(if o.dry_run {
        o.counts.planned()
    } else {
        o.counts.summary()
    });
    if o.counts.bytes > 0 {
        parts.push(human_bytes(o.counts.bytes));
    }
    parts.extend(notes.iter().cloned());
    if o.errors > 0 {
        parts.push(format!(
            "{} error{}",
            o.errors,
            if o.errors == 1 { "" } else { "s" }
        ));
    }
    parts.push(format!("{:.2}s", o.seconds));
    if !o.dry_run {
        let short =
            |d: Option<Digest>| d.map_or("incomplete".to_string(), |d| d.to_hex()[..8].to_string());
        parts.push(match o.shas {
            [Some(a), Some(b)] if a == b => format!("sha256 {} both", short(Some(a))),
            [a, b] => format!("{} {}, {} {}", labels[0], short(a), labels[1], short(b)),
        });
    }
    format!("{head}: {}", parts.join(" · "))
}

/// The id of the version a pass made on a side (its note begins with it).
pub fn version_id(o: &Outcome, side: usize) -> Option<&str> {
    o.versions[side].as_deref()?.split(' ').next()
}

/// `n` bytes as a person reads them: B, KiB, MiB, GiB, TiB (1024 each).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ if v < 10.0 => format!("{v:.1} {}", UNITS[unit]),
        _ => format!("{v:.0} {}", UNITS[unit]),
    }
}

/// What a pass under `--watch` leaves for the next: both replicas as it left them
/// (hashes known), so that a pass the watcher starts reads again only the folders it
/// saw change. Only a pass that ended whole (no error, nothing failed or cut short)
/// leaves them; a pass that starts without them reads everything.
#[derive(Default)]
pub struct Memo {
    held: Option<Kept>,
}

/// The trees a memo keeps: as a pass left them, or compact while the watch waits.
enum Kept {
    Loose(Left),
    Compact(Held),
}

impl Memo {
    /// Holds the trees compact: the watch waits for a change, which may be hours away.
    fn compact(&mut self) {
        self.held = self.held.take().map(|kept| match kept {
            Kept::Loose(left) => Kept::Compact(Held::new(left)),
            held => held,
        });
    }

    /// Makes the trees whole again: a change came, and a pass follows once the debounce
    /// time is over, which hides the time this takes (8 ms for two trees of 50,000
    /// entries).
    fn loosen(&mut self) {
        self.held = self.take().map(Kept::Loose);
    }

    /// The trees the pass before left, whole.
    fn take(&mut self) -> Option<Left> {
        Some(match self.held.take()? {
            Kept::Loose(left) => left,
            Kept::Compact(held) => held.into_left(),
        })
    }

    /// Saves the stat caches of the trees held (passes that read only what changed
    /// leave the caches to whole passes): when the watch stops, so that a run started
    /// later hashes nothing that this one hashed already.
    fn save_caches<T: Tool>(&mut self, tool: &T) {
        if let Some(h) = self.take() {
            for (side, r) in tool.replicas().iter().enumerate() {
                r.keep_cache(After::Whole(&h.trees[side]), h.at, None, h.shas[side]);
            }
        }
    }
}

/// Both replicas as a pass left them: read (at `at`) and written, every hash known,
/// and each one's directory SHA-256.
struct Left {
    trees: [Tree; 2],
    at: MTime,
    shas: [Option<Digest>; 2],
}

/// [`Left`] as a watch holds it between passes: each tree compact (about 55 bytes an
/// entry with its SHA-256, where a tree's entry and path take about 130), so that a
/// watch that waits holds less than half of what a pass needs while it runs.
struct Held {
    trees: [CompactTree; 2],
    at: MTime,
    shas: [Option<Digest>; 2],
}

impl Held {
    fn new(left: Left) -> Held {
        let [a, b] = left.trees;
        let (a, b) = crate::parallel::join(|| CompactTree::new(a), || CompactTree::new(b));
        Held {
            trees: [a, b],
            at: left.at,
            shas: left.shas,
        }
    }

    /// The trees again, for a pass to read into.
    fn into_left(self) -> Left {
        let [a, b] = self.trees;
        let (a, b) = crate::parallel::join(|| a.into_tree(), || b.into_tree());
        Left {
            trees: [a, b],
            at: self.at,
            shas: self.shas,
        }
    }
}

/// At most this many folders are read again one by one; more, and the whole tree is.
const RESCAN_MAX_DIRS: usize = 4096;

/// Runs pass `n` of `tool`.
pub fn run<T: Tool>(tool: &T, n: u64) -> Result<PassOutcome, Refusal> {
    run_watched(tool, n, &mut Memo::default(), None)
}

/// Runs pass `n` of `tool` under `--watch`: with `changed` (what the watcher saw) and
/// the trees the pass before left in `memo`, only the folders changed are read again
/// (see [`crate::scan::rescan`]); else the whole of both replicas.
pub fn run_watched<T: Tool>(
    tool: &T,
    n: u64,
    memo: &mut Memo,
    changed: Option<&crate::run::watch::Changed>,
) -> Result<PassOutcome, Refusal> {
    let started = Instant::now();
    tool.check_roots()?;
    let scanned_at = MTime::now();
    let scope = match changed {
        Some(c) if !c.missed => {
            let dirs = rescan_dirs(tool.replicas(), c);
            let held = memo.take();
            held.filter(|_| dirs.len() <= RESCAN_MAX_DIRS)
                .map(|held| (held, dirs))
        }
        _ => None,
    };
    // A pass that reads everything has no use for them.
    if let Some(kept) = memo.held.take() {
        crate::tree::drop_later(kept);
    }
    if !tool.settings().dry_run {
        // Each store exists before its replica is read: making one inside a replica
        // changes the replica's own mtime, and a version recorded from a scan made
        // before would differ from the replica for no change of the person's.
        for v in tool.versions().into_iter().flatten() {
            v.ensure()
                .map_err(|e| Refusal::new(format!("cannot create the store: {e}")))?;
        }
    }
    let (mut scanned, mut base) = Scanned::read(tool, scope)?;
    if let Some(fill) = turns::filled(tool, &scanned) {
        return turns::run(tool, n, scanned, base, fill, scanned_at, started);
    }
    match quiet::pass(tool, n, &mut scanned, &mut base, scanned_at, started) {
        quiet::Found::Ended(outcome) => return Ok(outcome),
        quiet::Found::Narrowed => {}
        quiet::Found::Whole => scanned.make_whole(tool.settings().checksum),
    }
    tool.prepare(&mut scanned, &base);
    // The plan borrows the trees: what the steps did is folded into them once it is gone.
    let ran = {
        let mut planned = tool.plan(&scanned, base)?;
        // --approve: the person at the terminal says, folder by folder, what is done.
        if tool.settings().approve && !tool.settings().dry_run {
            if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                return Err(Refusal::new(
                    "--approve asks at a terminal, and there is none; --dry-run shows the plan",
                ));
            }
            planned.skipped = review::review(&mut planned.steps, &mut std::io::stdin().lock())?;
        }
        for (side, v) in tool.versions().into_iter().enumerate() {
            if v.is_some() {
                planned.keep_first[side] = planned.keep_first(side, &scanned.trees[side]);
            }
        }
        for e in &planned.errors {
            log::error!(target: crate::error::FILE_ERROR, "{e}");
        }
        log::debug!(
            "planned: {:.3}s ({})",
            started.elapsed().as_secs_f64(),
            crate::run::alloc_tune::resident()
        );
        // --on-error fail: an entry the scan or the plan could not take stops the pass
        // before anything changes.
        let found = scanned.errors.len() + planned.errors.len();
        if tool.settings().on_error == OnError::Fail && found > 0 && !tool.settings().dry_run {
            log::error!(
                "pass {n} stopped before changing anything: {found} error{} (--on-error fail)",
                if found == 1 { "" } else { "s" }
            );
            return Ok(PassOutcome {
                operations: 0,
                errors: found,
                interrupted: false,
            });
        }
        if tool.settings().dry_run {
            return Ok(stages::dry_run(
                tool, n, &scanned, planned, scanned_at, started,
            ));
        }
        stages::apply(tool, &scanned, planned, started)?
    };
    let applied = stages::settle(scanned, ran, started);
    let (outcome, afters) = stages::record(tool, n, applied, scanned_at, started);
    if crate::run::watch::watching() {
        memo.held = afters.map(Kept::Loose);
    } else {
        crate::tree::drop_later(afters);
    }
    Ok(outcome)
}

/// The passes of `tool` every `interval`, woken early by `watch` when files change
/// (see [`crate::run::runner::run_passes_watching`]), each reading what changed when it
/// can ([`run_watched`]); the stat caches are saved from what the last pass left when
/// it stops. Gives the exit status.
pub fn run_watching<T: Tool>(
    tool: &T,
    interval: Option<std::time::Duration>,
    watch: Option<&crate::run::watch::Watch>,
) -> i32 {
    let memo = std::cell::RefCell::new(Memo::default());
    let status = crate::run::runner::run_passes_watching(
        interval,
        watch,
        |n, changed| run_watched(tool, n, &mut memo.borrow_mut(), changed.as_ref()),
        |between| match between {
            Between::Waiting => {
                let t0 = Instant::now();
                memo.borrow_mut().compact();
                log::debug!("held compact: {:.4}s", t0.elapsed().as_secs_f64());
            }
            Between::Woken => {
                let t0 = Instant::now();
                memo.borrow_mut().loosen();
                log::debug!("held whole again: {:.4}s", t0.elapsed().as_secs_f64());
            }
        },
    );
    memo.into_inner().save_caches(tool);
    status
}

/// The folders to read again, relative to the replicas' roots (the same on both: the
/// planner compares them side by side), from the absolute ones the watcher named.
fn rescan_dirs(
    replicas: &[Replica; 2],
    changed: &crate::run::watch::Changed,
) -> std::collections::BTreeSet<PathBuf> {
    changed
        .dirs
        .iter()
        .filter_map(|d| {
            replicas
                .iter()
                .find_map(|r| d.strip_prefix(&r.root).ok())
                .map(Path::to_path_buf)
        })
        .collect()
}

/// Opens the root of each replica (a refusal names the one that cannot be opened).
fn open_roots(replicas: &[Replica; 2]) -> Result<[Root; 2], Refusal> {
    let open = |r: &Replica| {
        Root::open(&r.root).map_err(|e| Refusal::new(format!("{} cannot be opened: {e}", r.label)))
    };
    Ok([open(&replicas[0])?, open(&replicas[1])?])
}
