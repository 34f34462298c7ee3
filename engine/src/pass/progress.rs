//! The live progress line of a pass on a terminal (indicatif): files and bytes done out
//! of what the plan copies, speed, time left, and the large file being copied. Nothing
//! is drawn unless stderr is a terminal and the console is not quiet.

use std::path::Path;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Tracker;
use crate::plan::mirror::{Op, Plan};

/// Whether a progress line is drawn: stderr is a terminal, and the console prints
/// neither only errors (`-q`) nor per-file detail (`-v`).
pub fn shown(verbosity: crate::run::logging::Verbosity) -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && verbosity == crate::run::logging::Verbosity::Normal
        && !crate::run::events::enabled()
}

/// A file at least this large is named on the line while it is copied.
const LARGE: u64 = 16 << 20;

/// The progress of a pass's steps (or of a restore's plan), drawn on stderr.
pub struct Progress<'p> {
    bar: ProgressBar,
    plans: Vec<&'p Plan<'p>>,
    files: u64,
    /// Shared by the progress lines of one pass's turns (see [`Progress::along`]).
    state: std::sync::Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    files_done: u64,
}

impl<'p> Progress<'p> {
    /// A progress line for `plans` (a pass's steps in order), if a person is watching
    /// (`show`: see [`shown`]) and there is something to copy.
    pub fn new(plans: Vec<&'p Plan<'p>>, show: bool) -> Option<Progress<'p>> {
        if !show {
            return None;
        }
        let (mut files, mut bytes) = (0u64, 0u64);
        for a in plans.iter().flat_map(|p| &p.actions) {
            if matches!(a.op, Op::Copy { .. }) {
                files += 1;
                bytes += a.src.as_ref().map_or(0, |s| s.size);
            }
        }
        Self::with_totals(plans, files, bytes)
    }

    /// A progress line over `files` files of `bytes` bytes in all, told of each with
    /// [`advance`](Self::advance) (`recovery verify`), if a person is watching.
    pub fn counting(files: u64, bytes: u64, show: bool) -> Option<Progress<'static>> {
        if !show {
            return None;
        }
        Progress::with_totals(Vec::new(), files, bytes)
    }

    fn with_totals(plans: Vec<&'p Plan<'p>>, files: u64, bytes: u64) -> Option<Progress<'p>> {
        if files == 0 {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{binary_bytes}/{binary_total_bytes} · {binary_bytes_per_sec} · {eta} left · {msg}",
            )
            .expect("BUG: a valid template"),
        );
        let p = Progress {
            bar,
            plans,
            files,
            state: Default::default(),
        };
        p.show_files(0, None);
        p.bar.tick();
        // Redrawn on its own while a large file is copied (its time keeps moving).
        p.bar
            .enable_steady_tick(std::time::Duration::from_millis(200));
        crate::run::logging::set_progress(Some(p.bar.clone()));
        Some(p)
    }

    /// The line `line` draws, going on with `plans` (the steps of a pass's next turn,
    /// see `super::turns`): its totals, and what it counted so far, are the whole
    /// pass's.
    pub fn along(plans: Vec<&'p Plan<'p>>, line: &Progress<'_>) -> Progress<'p> {
        Progress {
            bar: line.bar.clone(),
            plans,
            files: line.files,
            state: line.state.clone(),
        }
    }

    fn show_files(&self, done: u64, in_flight: Option<&Path>) {
        let mut msg = format!("{done}/{} files", self.files);
        if let Some(p) = in_flight {
            msg.push_str(&format!(" · {}", crate::names::display(p)));
        }
        self.bar.set_message(msg);
    }

    /// A copy of `path` (`size` bytes) starts: a large one is named.
    pub fn starting(&self, path: &Path, size: u64) {
        if size >= LARGE {
            let done = self
                .state
                .lock()
                .expect("BUG: no panic holds it")
                .files_done;
            self.show_files(done, Some(path));
        }
    }

    /// One more file of `bytes` bytes is done.
    pub fn advance(&self, bytes: u64) {
        let mut st = self.state.lock().expect("BUG: no panic holds it");
        st.files_done += 1;
        self.bar.inc(bytes);
        self.show_files(st.files_done, None);
    }

    /// Clears the line (the summary follows).
    pub fn finish(&self) {
        crate::run::logging::set_progress(None);
        self.bar.finish_and_clear();
    }
}

impl Tracker for Progress<'_> {
    fn done(&self, step: usize, at: u32, _digest: Option<crate::tree::Digest>) {
        let Some(a) = self
            .plans
            .get(step)
            .and_then(|p| p.actions.get(at as usize))
        else {
            return;
        };
        if !matches!(a.op, Op::Copy { .. }) {
            return;
        }
        self.advance(a.src.as_ref().map_or(0, |s| s.size));
    }

    fn tick(&self) {
        // The line redraws itself (its steady tick): nothing to do here.
    }
}

/// Two trackers told the same (the tool's own and the progress line).
pub struct Both<'a>(
    pub Option<&'a (dyn Tracker + 'a)>,
    pub Option<&'a Progress<'a>>,
);

impl Tracker for Both<'_> {
    fn done(&self, step: usize, at: u32, digest: Option<crate::tree::Digest>) {
        if let Some(t) = self.0 {
            t.done(step, at, digest);
        }
        if let Some(p) = self.1 {
            p.done(step, at, digest);
        }
    }

    fn tick(&self) {
        if let Some(t) = self.0 {
            t.tick();
        }
    }
}
