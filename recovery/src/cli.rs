//! The `recovery` command line, and the `--restore` entry shared by `oneway` and `twoway`.
//! Parses flags, calls the library, maps the outcome to an exit status.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use engine::error::{exit, Refusal};
use engine::run::cli::{RestoreArgs, Which};
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
  recovery verify                       re-hash every stored version

Exit status: 0 success, 1 damage found or per-file errors, 2 refused, 130 interrupted.
Versions live in the store (default BACKUP/__versions__ for oneway, __versions__ in each
replica for twoway) and are found through the registry in the data home
($TWOWAY_HOME, else $XDG_DATA_HOME/twoway, else ~/.local/share/twoway).";

/// Lists, verifies and restores the versions kept by oneway and twoway.
#[derive(Parser, Debug)]
#[command(name = "recovery", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print per-file detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the latest and previous version of DIR (or of every versioned directory):
    /// time made, files, bytes and directory SHA-256.
    List {
        dir: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every stored file against its manifest; report each damaged or missing
    /// file; exit 1 if any.
    Verify { dir: Option<PathBuf> },
    /// Restore DIR (or one path in it) from a version.
    Restore {
        dir: PathBuf,
        /// latest (default) or previous.
        #[arg(long = "version", value_name = "latest|previous")]
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
    let run = || -> Result<i32, Refusal> {
        logging::init(verbosity(cli.quiet, cli.verbose), None)?;
        let home = DataHome::locate()?;
        match &cli.command {
            Command::List { dir, json } => inspect::list(&home, dir.as_deref(), *json),
            Command::Verify { dir } => inspect::verify(&home, dir.as_deref()),
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
    let which: Which = args.version.as_deref().unwrap_or("latest").parse()?;
    let out = restore::restore(
        home,
        &RestoreRequest {
            dir,
            which,
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
