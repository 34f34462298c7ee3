//! The `recovery` command line, and the `--restore` entry shared by `oneway` and `twoway`.
//! Parses flags, calls the library, maps the outcome to an exit status.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use engine::error::{exit, Refusal};
use engine::run::cli::RestoreArgs;
use engine::run::config::Keep;
use engine::run::home::DataHome;
use engine::run::logging::{self, Verbosity};

use crate::inspect;
use crate::restore::{self, RestoreRequest};

const EXAMPLES: &str = "\
Examples:
  recovery list                         every directory that has versions
  recovery list ~/Photos --json         versions of one directory, as JSON
  recovery restore ~/Photos             bring back a deleted ~/Photos (latest version)
  recovery restore ~/Photos --version previous --to /tmp/photos-before
  recovery restore ~/Photos --path 2024/img_001.jpg --force
  recovery restore ~/Photos --version 2026-11-30 --to /tmp/photos-nov
  recovery tag ~/Photos latest before-cleanup
  recovery forget ~/Photos --keep-last 5 --dry-run
  recovery find ~/Photos 2024/trip      the versions that hold a folder
  recovery deleted ~/Photos --since 2026-11-01
  recovery ls ~/Photos --version previous 2024
  recovery diff ~/Photos previous       what changed since the previous version
  recovery duplicates ~/Photos          files of the same content, from the manifests
  recovery verify                       re-hash every stored file
  recovery --generate complete-bash > ~/.local/share/bash-completion/completions/recovery
  recovery --generate man > ~/.local/share/man/man1/recovery.1

Exit status: 0 success, 1 damage found or per-file errors, 2 refused, 130 interrupted.
Versions live in the store (default BACKUP/__versions__ for oneway, __versions__ in each
replica for twoway) and are found through the registry in the data home
($TWOWAY_HOME, else $XDG_DATA_HOME/twoway, else ~/.local/share/twoway).";

/// Lists, verifies and restores the versions kept by oneway and twoway.
#[derive(Parser, Debug)]
#[command(
    name = "recovery",
    version,
    after_help = EXAMPLES,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub generate: engine::run::cli::GenerateArgs,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print per-file detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print JSON instead of text: `list` one document, every other command one
    /// object per line (see the README).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show every version of DIR (or of every versioned directory), newest first: id,
    /// time made, why, tags, files, bytes, what changed since the one before, and the
    /// bytes the store spends on it.
    #[command(
        after_help = "Examples:\n  recovery list\n  recovery list ~/Photos\n  recovery list ~/Photos --json"
    )]
    List { dir: Option<PathBuf> },
    /// Re-hash every stored file; check that every version reads and that the content
    /// each needs is in the store or in a live directory; exit 1 if anything is damaged
    /// or missing.
    #[command(after_help = "Examples:\n  recovery verify\n  recovery verify ~/Photos --repair")]
    Verify {
        dir: Option<PathBuf>,
        /// Heal damaged or missing content from a live file or another store holding
        /// the same SHA-256, and say what could not be healed.
        #[arg(long)]
        repair: bool,
    },
    /// Apply a retention policy to DIR's versions now, and say what it frees. Each
    /// --keep-* defaults to the policy's (last 10, hourly 48, daily 30, weekly 26);
    /// tagged versions and the latest are always kept.
    #[command(
        after_help = "Examples:\n  recovery forget ~/Photos --dry-run\n  recovery forget ~/Photos --keep-last 5 --keep-daily 7"
    )]
    Forget {
        dir: PathBuf,
        /// Keep the N newest versions.
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// Keep the newest version of each of the N newest hours that have one.
        #[arg(long, value_name = "N")]
        keep_hourly: Option<u32>,
        /// Keep the newest version of each of the N newest days that have one.
        #[arg(long, value_name = "N")]
        keep_daily: Option<u32>,
        /// Keep the newest version of each of the N newest weeks that have one.
        #[arg(long, value_name = "N")]
        keep_weekly: Option<u32>,
        /// Say what would be dropped, and drop nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The versions of DIR that hold PATH (a file or folder inside DIR, or a glob such
    /// as '*.jpg' or 'docs/**/report*'), newest first: where did my folder go.
    #[command(
        after_help = "Examples:\n  recovery find ~/Photos 2024/trip\n  recovery find ~/Docs 'report*.odt'"
    )]
    Find { dir: PathBuf, path: PathBuf },
    /// What passes removed from DIR, and the last version that holds each (a removed
    /// folder once, with what was in it).
    #[command(
        after_help = "Examples:\n  recovery deleted ~/Photos\n  recovery deleted ~/Photos --since 2026-11-01"
    )]
    Deleted {
        dir: PathBuf,
        /// Only what was removed at or after TIME (2026-12-01T10:00:00Z, or a date).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
    /// The entries of a version of DIR (or of SUBPATH in it), as `ls -l` would show
    /// them.
    #[command(
        after_help = "Examples:\n  recovery ls ~/Photos\n  recovery ls ~/Photos --version previous 2024"
    )]
    Ls {
        dir: PathBuf,
        subpath: Option<PathBuf>,
        /// Which version (latest by default; previous, an id, a tag or a time).
        #[arg(long = "version", value_name = "V")]
        which: Option<String>,
    },
    /// What differs from version V1 to V2 of DIR (V2: the live directory when left
    /// out): + added, - removed, M content changed, m metadata only.
    #[command(
        after_help = "Examples:\n  recovery diff ~/Photos previous\n  recovery diff ~/Photos 12 14"
    )]
    Diff {
        dir: PathBuf,
        v1: String,
        v2: Option<String>,
    },
    /// Groups of files with the same content in DIR as last synced, from the
    /// manifests (nothing is read or copied), with the space they take.
    #[command(after_help = "Examples:\n  recovery duplicates ~/Photos")]
    Duplicates { dir: PathBuf },
    /// Name version V of DIR (latest, previous, an id, a tag or a time); a tagged
    /// version is kept until untagged.
    #[command(
        after_help = "Examples:\n  recovery tag ~/Photos latest before-cleanup\n  recovery tag ~/Photos 2026-11-30 end-of-november"
    )]
    Tag {
        dir: PathBuf,
        version: String,
        name: String,
    },
    /// Remove the tag NAME of DIR.
    #[command(after_help = "Examples:\n  recovery untag ~/Photos before-cleanup")]
    Untag { dir: PathBuf, name: String },
    /// Restore DIR (or one path in it) from a version.
    #[command(
        after_help = "Examples:\n  recovery restore ~/Photos\n  recovery restore ~/Photos --version previous --to /tmp/photos-before\n  recovery restore ~/Photos --path 2024/img_001.jpg --force\n  recovery restore ~/Photos --version 2026-11-30 --dry-run"
    )]
    Restore {
        dir: PathBuf,
        /// latest (default), previous, an id or a tag from `recovery list`, or a time
        /// (2026-12-01T10:00:00Z, or a date: the last version made at or before it).
        #[arg(long = "version", value_name = "V")]
        which: Option<String>,
        /// Restore into PATH (a new or empty directory) and leave DIR alone.
        #[arg(long, value_name = "PATH")]
        to: Option<PathBuf>,
        /// Restore only this file or subdirectory (relative to DIR).
        #[arg(long, value_name = "SUBPATH")]
        path: Option<PathBuf>,
        /// Replace a non-empty target; its current contents are saved as a new version
        /// first.
        #[arg(long)]
        force: bool,
        /// Print what would be restored and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where DIR has versions in several stores (backed up to two drives): restore
        /// from this one. Default: the store with the newest version.
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
}

fn verbosity(quiet: bool, verbose: bool) -> Verbosity {
    if quiet {
        Verbosity::Quiet
    } else if verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    }
}

/// Runs the `recovery` binary; returns the exit status.
pub fn main() -> i32 {
    let cli: Cli = engine::run::cli::parse();
    if let Some(kind) = cli.generate.generate {
        return engine::run::cli::generate::<Cli>(kind);
    }
    let Some(command) = &cli.command else {
        eprintln!("recovery: a command is needed (see recovery --help)");
        return exit::REFUSED;
    };
    let run = || -> Result<i32, Refusal> {
        if cli.json && !matches!(command, Command::List { .. }) {
            engine::run::events::enable();
        }
        logging::init(verbosity(cli.quiet, cli.verbose), None)?;
        let home = DataHome::locate()?;
        match command {
            Command::List { dir } => inspect::list(&home, dir.as_deref(), cli.json),
            Command::Verify { dir, repair } => inspect::verify(&home, dir.as_deref(), *repair),
            Command::Forget {
                dir,
                keep_last,
                keep_hourly,
                keep_daily,
                keep_weekly,
                dry_run,
            } => {
                let d = Keep::default();
                let keep = Keep {
                    last: keep_last.unwrap_or(d.last),
                    hourly: keep_hourly.unwrap_or(d.hourly),
                    daily: keep_daily.unwrap_or(d.daily),
                    weekly: keep_weekly.unwrap_or(d.weekly),
                };
                inspect::forget(&home, dir, keep, *dry_run)
            }
            Command::Tag { dir, version, name } => inspect::tag(&home, dir, version, name),
            Command::Untag { dir, name } => inspect::untag(&home, dir, name),
            Command::Find { dir, path } => crate::browse::find(&home, dir, path),
            Command::Deleted { dir, since } => crate::browse::deleted(&home, dir, since.as_deref()),
            Command::Ls {
                dir,
                subpath,
                which,
            } => crate::browse::ls(
                &home,
                dir,
                which.as_deref().unwrap_or("latest"),
                subpath.as_deref(),
            ),
            Command::Diff { dir, v1, v2 } => crate::browse::diff(&home, dir, v1, v2.as_deref()),
            Command::Duplicates { dir } => crate::browse::duplicates(&home, dir),
            Command::Restore {
                dir,
                which,
                to,
                path,
                force,
                dry_run,
                store,
            } => {
                let args = RestoreArgs {
                    restore: true,
                    version: which.clone(),
                    to: to.clone(),
                    force: *force,
                    path: path.clone(),
                };
                restore_with(&home, dir.clone(), &args, *dry_run, store.clone())
            }
        }
    };
    match run() {
        Ok(code) => code,
        Err(r) => {
            eprintln!("recovery: {r}");
            exit::REFUSED
        }
    }
}

fn restore_with(
    home: &DataHome,
    dir: PathBuf,
    args: &RestoreArgs,
    dry_run: bool,
    store: Option<PathBuf>,
) -> Result<i32, Refusal> {
    engine::run::signal::install()?;
    let out = restore::restore(
        home,
        &RestoreRequest {
            dir,
            version: args.version.clone().unwrap_or_default(),
            to: args.to.clone(),
            subpath: args.path.clone(),
            force: args.force,
            dry_run,
            store,
        },
    )?;
    Ok(if out.interrupted {
        exit::INTERRUPTED
    } else if out.errors > 0 {
        exit::PER_FILE_ERRORS
    } else {
        exit::OK
    })
}

/// `oneway DIR --restore …` and `twoway DIR --restore …`: checks that one directory was
/// named, sets up the logger and restores.
pub fn restore_command(
    program: &str,
    paths: Vec<PathBuf>,
    args: &RestoreArgs,
    settings: &engine::run::cli::Settings,
) -> Result<i32, Refusal> {
    let [dir] = <[PathBuf; 1]>::try_from(paths).map_err(|_| {
        engine::run::cli::usage(
            program,
            &format!("--restore takes exactly one directory: {program} DIR --restore"),
        )
    })?;
    logging::init(settings.verbosity, settings.log_file())?;
    let home = DataHome::locate()?;
    restore_with(&home, dir, args, settings.dry_run, settings.store.clone())
}
