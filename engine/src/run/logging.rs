//! The one logger of the suite (fern + log): action lines and summaries to stdout, warnings
//! and errors to stderr, and everything to `--log FILE` when given, each line stamped with
//! the UTC time. This module formats; it decides nothing about what is logged.

use std::path::Path;

use crate::error::Refusal;
use crate::names::display;

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Only errors.
    Quiet,
    #[default]
    Normal,
    /// Per-file detail.
    Verbose,
}

fn level(v: Verbosity) -> log::LevelFilter {
    match v {
        Verbosity::Quiet => log::LevelFilter::Error,
        Verbosity::Normal => log::LevelFilter::Info,
        Verbosity::Verbose => log::LevelFilter::Debug,
    }
}

/// The log target of a two-way conflict's warning (with `--json`, a `conflict` event
/// says it instead).
pub const CONFLICT: &str = "conflict";

/// The log target of a refusal that ends the run (exit status 2): on the console it
/// reads `oneway: <reason>`, as a usage error does, and in a log file it is a stamped
/// `ERROR` line like any other.
pub const REFUSAL: &str = "refusal";

/// The running program's name, for the console's refusals.
pub fn program() -> String {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "twoway".to_string())
}

/// Logs a refusal that ends the run (see [`REFUSAL`]); before the logger is installed it
/// is printed as the console would.
pub fn refusal(r: &Refusal) {
    if log::max_level() == log::LevelFilter::Off {
        eprintln!("{}: {r}", program());
    } else {
        log::error!(target: REFUSAL, "{r}");
    }
}

fn stamped(out: fern::FormatCallback<'_>, msg: &std::fmt::Arguments<'_>, rec: &log::Record<'_>) {
    stamped_as(out, msg, rec, "%Y-%m-%dT%H:%M:%S%.3fZ")
}

/// A line stamped with the UTC time in `format`, and its level when it is a warning or
/// an error.
fn stamped_as(
    out: fern::FormatCallback<'_>,
    msg: &std::fmt::Arguments<'_>,
    rec: &log::Record<'_>,
    format: &str,
) {
    let ts = chrono::Utc::now().format(format);
    let job = job_prefix();
    let ts = format_args!("{ts}{job}");
    match rec.level() {
        log::Level::Error => out.finish(format_args!("{ts} ERROR {msg}")),
        log::Level::Warn => out.finish(format_args!("{ts} WARN  {msg}")),
        _ => out.finish(format_args!("{ts} {msg}")),
    }
}

/// The progress line on the terminal (stderr), while a pass draws one: console lines
/// are printed above it.
static PROGRESS: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Sets (or clears) the progress line that console lines go above.
pub fn set_progress(bar: Option<indicatif::ProgressBar>) {
    if let Ok(mut p) = PROGRESS.lock() {
        *p = bar;
    }
}

/// Prints a console line: warnings and errors to stderr, the rest to stdout; above the
/// progress line if one is drawn. A closed output (`| head`) is not an error.
fn to_console(rec: &log::Record<'_>, err: bool) {
    use std::io::Write;
    if !err && rec.level() <= log::Level::Warn {
        return;
    }
    if crate::run::events::enabled() {
        // --json: stdout holds only events; a warning or an error is one (a conflict
        // has its own), the rest is for the log file.
        if err && rec.target() != CONFLICT {
            let kind = if rec.level() == log::Level::Warn {
                "warning"
            } else {
                "error"
            };
            crate::run::events::message(kind, &rec.args().to_string());
        }
        return;
    }
    let bar = PROGRESS.lock().ok().is_some_and(|p| p.is_some());
    // Over the progress line (on this terminal): the line is erased and written over,
    // and the progress line comes back below at its next tick. Redrawn after every
    // line instead, it doubled the time of a pass printing 50,000 of them.
    static STDOUT_TTY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let tty = || *STDOUT_TTY.get_or_init(|| std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let over = bar && (err || tty());
    let erase = if over { "\r\x1b[2K" } else { "" };
    let _ = if err {
        writeln!(std::io::stderr().lock(), "{erase}{}", rec.args())
    } else {
        writeln!(std::io::stdout().lock(), "{erase}{}", rec.args())
    };
}

/// Whether stderr is systemd's journal: `$JOURNAL_STREAM` names its device and inode
/// (a child of a service that writes elsewhere inherits the variable, not the stream).
fn to_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino)
}

/// The name of the job running (a config file's `jobs`), put in front of its lines.
static JOB: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Sets (or clears) the name of the job whose lines follow.
pub fn set_job(name: Option<&str>) {
    if let Ok(mut j) = JOB.lock() {
        *j = name.map(str::to_string);
    }
}

/// ` [name]` while a job runs, else nothing.
fn job_prefix() -> String {
    JOB.lock()
        .ok()
        .and_then(|j| j.as_ref().map(|n| format!(" [{n}]")))
        .unwrap_or_default()
}

/// `--on-error ignore`: per-file errors are logged only with -v.
static FILE_ERRORS_QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes per-file errors (target [`crate::error::FILE_ERROR`]) show only with -v.
pub fn quiet_file_errors() {
    FILE_ERRORS_QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a record is a per-file error that `--on-error ignore` keeps to -v.
fn ignored(m: &log::Metadata<'_>, verbosity: Verbosity) -> bool {
    m.target() == crate::error::FILE_ERROR
        && verbosity != Verbosity::Verbose
        && FILE_ERRORS_QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// How much the console prints, as the logger was installed with.
static CONSOLE: std::sync::OnceLock<Verbosity> = std::sync::OnceLock::new();

/// How much the console prints (normal before the logger is installed).
pub fn console_verbosity() -> Verbosity {
    CONSOLE.get().copied().unwrap_or_default()
}

/// Installs the logger. `file` is appended to (and created if missing, with its
/// directory).
pub fn init(verbosity: Verbosity, file: Option<&Path>) -> Result<(), Refusal> {
    let _ = CONSOLE.set(verbosity);
    let program = program();
    // A person at a terminal reads the time of day (UTC) and the short summary; logs,
    // pipes and -v the whole date and summary.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let short = tty && verbosity != Verbosity::Verbose;
    let journal = to_journal();
    let console_format = move |out: fern::FormatCallback<'_>,
                               msg: &std::fmt::Arguments<'_>,
                               rec: &log::Record<'_>| {
        if crate::run::events::enabled() {
            out.finish(format_args!("{msg}"))
        } else if journal {
            // systemd's journal stamps each line itself, and reads its priority from
            // this prefix (`journalctl -p warning` then finds the warnings).
            let priority = match rec.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                _ => 7,
            };
            let job = job_prefix();
            let job = job.trim_start();
            let gap = if job.is_empty() { "" } else { " " };
            out.finish(format_args!("<{priority}>{job}{gap}{msg}"))
        } else if rec.target() == REFUSAL {
            out.finish(format_args!("{program}: {msg}"))
        } else if tty {
            stamped_as(out, msg, rec, "%H:%M:%S")
        } else {
            stamped(out, msg, rec)
        }
    };
    let console = fern::Dispatch::new()
        .format(console_format)
        .level(level(verbosity))
        .filter(move |m| match m.target() {
            crate::pass::SUMMARY => !short,
            crate::pass::SUMMARY_SHORT => short,
            _ => !ignored(m, verbosity),
        })
        .chain(fern::Output::call(|rec| to_console(rec, false)))
        .chain(
            fern::Dispatch::new()
                .filter(|m| m.level() <= log::Level::Warn)
                .chain(fern::Output::call(|rec| to_console(rec, true))),
        );
    // -q quiets the console only: the log file keeps every action and summary.
    let file_level = level(verbosity).max(log::LevelFilter::Info);
    let mut root = fern::Dispatch::new()
        // Without a file, nothing below the console's level is even formatted.
        .level(if file.is_some() {
            file_level
        } else {
            level(verbosity)
        })
        // Other crates' lines below a warning are theirs to debug, not the user's.
        .level_for("notify", log::LevelFilter::Warn)
        .level_for("inotify", log::LevelFilter::Warn)
        .chain(console);
    if let Some(path) = file {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Refusal::new(format!(
                    "cannot create the log file's directory {}: {e}",
                    display(dir)
                ))
            })?;
        }
        let f = fern::log_file(path)
            .map_err(|e| Refusal::new(format!("cannot open log file {}: {e}", display(path))))?;
        root = root.chain(
            fern::Dispatch::new()
                .format(stamped)
                .level(file_level)
                .filter(move |m| m.target() != crate::pass::SUMMARY_SHORT && !ignored(m, verbosity))
                .chain(f),
        );
    }
    root.apply()
        .map_err(|e| Refusal::new(format!("logger: {e}")))
}
