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

/// Installs the logger. `file` is appended to (and created if missing).
pub fn init(verbosity: Verbosity, file: Option<&Path>) -> Result<(), Refusal> {
    let format =
        |out: fern::FormatCallback<'_>, msg: &std::fmt::Arguments<'_>, rec: &log::Record<'_>| {
            let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
            match rec.level() {
                log::Level::Error => out.finish(format_args!("{ts} ERROR {msg}")),
                log::Level::Warn => out.finish(format_args!("{ts} WARN  {msg}")),
                _ => out.finish(format_args!("{ts} {msg}")),
            }
        };
    let console = fern::Dispatch::new()
        .level(level(verbosity))
        .chain(
            fern::Dispatch::new()
                .filter(|m| m.level() > log::Level::Warn)
                .chain(std::io::stdout()),
        )
        .chain(
            fern::Dispatch::new()
                .filter(|m| m.level() <= log::Level::Warn)
                .chain(std::io::stderr()),
        );
    // -q quiets the console only: the log file keeps every action and summary.
    let file_level = level(verbosity).max(log::LevelFilter::Info);
    let mut root = fern::Dispatch::new()
        .format(format)
        // Without a file, nothing below the console's level is even formatted.
        .level(if file.is_some() {
            file_level
        } else {
            level(verbosity)
        })
        .chain(console);
    if let Some(path) = file {
        let f = fern::log_file(path)
            .map_err(|e| Refusal::new(format!("cannot open log file {}: {e}", display(path))))?;
        root = root.chain(fern::Dispatch::new().level(file_level).chain(f));
    }
    root.apply()
        .map_err(|e| Refusal::new(format!("logger: {e}")))
}
