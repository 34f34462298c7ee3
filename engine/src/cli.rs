//! The command-line flags every pass tool shares, and how they merge with the config file
//! into validated [`Settings`]: flags override the config file, which overrides the
//! built-in defaults. Binaries only parse; this module only validates.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, ConflictPolicy, VersionMode};
use crate::error::Refusal;
use crate::logging::Verbosity;
use crate::scan::Excludes;

/// Default seconds between passes.
pub const DEFAULT_INTERVAL: u64 = 60;
/// Default `--max-delete` percentage.
pub const DEFAULT_MAX_DELETE: f64 = 50.0;

/// Flags of a sync pass (`oneway`, `twoway`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PassArgs {
    /// Run one pass and exit.
    #[arg(long, conflicts_with = "interval")]
    pub once: bool,
    /// Seconds between passes (default 60, or the config file's "interval").
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,
    /// Also append every log line to FILE.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Read settings from a JSON config file (see config.example.json).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Keep no versions: nothing is written to a store.
    #[arg(long)]
    pub no_versions: bool,
    /// Keep versions in DIR instead of the default __versions__ directory.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Print every action a pass would take and change nothing anywhere.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-hash every file instead of trusting the stat cache.
    #[arg(long)]
    pub checksum: bool,
    /// Leave out paths matching GLOB (repeatable): "*.tmp" matches a name at any depth,
    /// "dir/x" a path from the top, "cache/" directories only.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Treat mtimes that differ by at most SECS as equal (FAT/exFAT: set automatically).
    #[arg(long, value_name = "SECS")]
    pub modify_window: Option<u64>,
    /// Print per-file detail.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print only errors.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Flags of a restore (`--restore` on the pass tools, `recovery restore`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RestoreArgs {
    /// Restore DIR from its versions instead of syncing.
    #[arg(long)]
    pub restore: bool,
    /// With --restore: which version, latest (default) or previous. Alone: print the
    /// program's version.
    #[arg(long = "version", value_name = "latest|previous", num_args = 0..=1, default_missing_value = "")]
    pub version: Option<String>,
    /// Restore into PATH (a new or empty directory) and leave DIR alone.
    #[arg(long, value_name = "PATH")]
    pub to: Option<PathBuf>,
    /// Restore into a non-empty directory; its current contents are saved as a new
    /// version first, so the restore can be undone.
    #[arg(long)]
    pub force: bool,
    /// Restore only this file or subdirectory (relative to DIR).
    #[arg(long, value_name = "SUBPATH")]
    pub path: Option<PathBuf>,
}

/// Validated settings of a pass.
#[derive(Debug, Clone)]
pub struct Settings {
    /// None: one pass.
    pub interval: Option<Duration>,
    pub log: Option<PathBuf>,
    pub versions: VersionMode,
    /// An explicit store; None: the tool's default.
    pub store: Option<PathBuf>,
    pub dry_run: bool,
    pub checksum: bool,
    pub excludes: Excludes,
    pub modify_window: Option<u64>,
    pub verbosity: Verbosity,
    pub conflict: ConflictPolicy,
    pub max_delete: f64,
}

impl Settings {
    /// The file to log to: none in a dry run, which leaves the log file alone too.
    pub fn log_file(&self) -> Option<&std::path::Path> {
        if self.dry_run {
            None
        } else {
            self.log.as_deref()
        }
    }

    /// Merges flags over the config file over the defaults.
    pub fn resolve(
        args: &PassArgs,
        extra_conflict: Option<ConflictPolicy>,
        extra_max_delete: Option<f64>,
    ) -> Result<Settings, Refusal> {
        let cfg = match &args.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        let interval = if args.once {
            None
        } else {
            Some(Duration::from_secs(
                args.interval.or(cfg.interval).unwrap_or(DEFAULT_INTERVAL),
            ))
        };
        let versions = if args.no_versions {
            VersionMode::Off
        } else {
            cfg.versions.unwrap_or_default()
        };
        let mut patterns = cfg.exclude.clone().unwrap_or_default();
        patterns.extend(args.exclude.iter().cloned());
        let excludes = Excludes::new(&patterns).map_err(Refusal::new)?;
        let max_delete = extra_max_delete
            .or(cfg.max_delete)
            .unwrap_or(DEFAULT_MAX_DELETE);
        if !(0.0..=100.0).contains(&max_delete) {
            return Err(Refusal::new(
                "--max-delete must be a percentage from 0 to 100",
            ));
        }
        let absolute = |p: PathBuf| -> Result<PathBuf, Refusal> {
            std::path::absolute(&p).map_err(|e| Refusal::new(format!("{}: {e}", p.display())))
        };
        Ok(Settings {
            interval,
            log: args.log.clone().or(cfg.log).map(absolute).transpose()?,
            versions,
            store: args.store.clone().or(cfg.store).map(absolute).transpose()?,
            dry_run: args.dry_run,
            checksum: args.checksum || cfg.checksum.unwrap_or(false),
            excludes,
            modify_window: args.modify_window.or(cfg.modify_window),
            verbosity: if args.quiet {
                Verbosity::Quiet
            } else if args.verbose {
                Verbosity::Verbose
            } else {
                Verbosity::Normal
            },
            conflict: extra_conflict.or(cfg.conflict).unwrap_or_default(),
            max_delete,
        })
    }
}

/// Which stored version a restore takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Which {
    #[default]
    Latest,
    Previous,
}

impl std::str::FromStr for Which {
    type Err = Refusal;
    fn from_str(s: &str) -> Result<Which, Refusal> {
        match s {
            "" | "latest" | "1" => Ok(Which::Latest),
            "previous" | "0" => Ok(Which::Previous),
            other => Err(Refusal::new(format!(
                "--version takes latest or previous, not {other:?}"
            ))),
        }
    }
}

impl RestoreArgs {
    /// `--version` alone asks for the program's version (with `--restore` it picks one of
    /// the stored versions).
    pub fn wants_program_version(&self) -> bool {
        self.version.as_deref() == Some("") && !self.restore
    }

    /// Refuses restore-only flags given without `--restore`.
    pub fn check_unused(&self, program: &str) -> Result<(), Refusal> {
        if self.to.is_some() || self.force || self.path.is_some() || self.version.is_some() {
            return Err(usage(
                program,
                "--to, --force, --path and --version go with --restore",
            ));
        }
        Ok(())
    }
}

/// A usage refusal that points at `--help`.
pub fn usage(program: &str, msg: &str) -> Refusal {
    Refusal::new(format!("{msg} (see {program} --help)"))
}

/// The exit status of a binary's run; a refusal is reported as one line.
pub fn exit_status(program: &str, outcome: Result<i32, Refusal>) -> i32 {
    match outcome {
        Ok(code) => code,
        Err(r) => {
            if log::max_level() == log::LevelFilter::Off {
                eprintln!("{program}: {r}");
            } else {
                log::error!("{r}");
            }
            crate::error::exit::REFUSED
        }
    }
}
