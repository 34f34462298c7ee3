//! The `oneway` command line: parse flags, turn them into validated settings, run the
//! passes or a restore, map the outcome to an exit status.

use std::path::PathBuf;

use engine::error::Refusal;
use engine::run::cli::{self, usage, PassArgs, RestoreArgs, Settings};
use engine::run::home::DataHome;
use engine::run::runner;
use engine::run::watch::Watch;

use crate::pass::Job;

const EXAMPLES: &str = "\
Examples:
  oneway ~/Photos /media/usb/photos --once        one mirror pass, then exit
  oneway ~/Projects /mnt/backup/projects          a pass every 60 s until Ctrl+C
  oneway ~/Docs /mnt/b/docs --dry-run --once      show what a pass would do
  oneway ~/Docs /mnt/b/docs --exclude '*.tmp' --exclude 'cache/' --log ~/oneway.log
  oneway ~/Photos /media/usb/photos --additive    copy only what BACKUP lacks
  oneway ~/Docs --restore                         bring back ~/Docs from its latest version
  oneway ~/Docs --restore --version previous --to /tmp/docs-before
  oneway --generate complete-bash > ~/.local/share/bash-completion/completions/oneway
  oneway --generate man > ~/.local/share/man/man1/oneway.1

After a pass BACKUP holds exactly SOURCE's files, directories (empty ones too) and
symlinks, with the same bytes, permission bits and mtimes; entries BACKUP has and SOURCE
lacks are removed, except BACKUP/__versions__ (the versions) and excluded paths.
BACKUP must exist: a missing BACKUP usually means an unmounted drive, so create it once
by hand.

Exit status: 0 success, 1 per-file errors (logged with the path), 2 refused (nothing
changed), 130 interrupted during a pass.";

/// Mirrors SOURCE into BACKUP, once or on an interval, keeping versions of SOURCE.
#[derive(clap::Parser, Debug)]
#[command(name = "oneway", disable_version_flag = true, after_help = EXAMPLES)]
pub struct Cli {
    /// SOURCE and BACKUP; with --restore, only DIR.
    #[arg(value_name = "SOURCE BACKUP", num_args = 0..=2)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub pass: PassArgs,
    #[command(flatten)]
    pub restore: RestoreArgs,
    #[command(flatten)]
    pub generate: cli::GenerateArgs,
    /// Only add to BACKUP: copy what it lacks, and never delete, overwrite or change
    /// anything it holds (each difference is reported and left alone).
    #[arg(long)]
    pub additive: bool,
    /// Print the version and exit (as --version alone does).
    #[arg(short = 'V')]
    pub print_version: bool,
}

/// Runs the `oneway` binary; returns the exit status.
pub fn main() -> i32 {
    cli::main_of(
        "oneway",
        |c: &Cli| {
            let version = c.print_version || c.restore.wants_program_version();
            (version, c.generate.generate)
        },
        run,
    )
}

fn run(cli: Cli) -> Result<i32, Refusal> {
    let settings = Settings::resolve(&cli.pass, None)?;
    if cli.restore.restore {
        if cli.additive {
            return Err(usage("oneway", "--additive is for passes, not --restore"));
        }
        if settings.json {
            engine::run::events::enable();
        }
        return recovery::cli::restore_command("oneway", cli.paths, &cli.restore, &settings);
    }
    cli.restore.check_unused("oneway")?;
    // `oneway --config FILE` alone: the file's jobs, each pass.
    let jobs = if cli.paths.is_empty() {
        Settings::resolve_jobs(&cli.pass, None, ["source", "backup"])?
    } else {
        Vec::new()
    };
    if !jobs.is_empty() {
        let make = |[source, backup]: &[PathBuf; 2], job_settings, home| {
            let mut job = Job::new(source, backup, job_settings, home)?;
            job.additive |= cli.additive;
            Ok(job)
        };
        return runner::run_config_jobs(&settings, jobs, make, |job, n| job.run_pass(n));
    }
    let [source, backup] = <[PathBuf; 2]>::try_from(cli.paths)
        .map_err(|_| usage("oneway", "oneway needs SOURCE and BACKUP"))?;
    settings.start_run()?;
    let home = DataHome::locate()?;
    let interval = settings.interval;
    let mut job = Job::new(&source, &backup, settings, home)?;
    job.additive |= cli.additive;
    // --watch: SOURCE is watched, and BACKUP as well as it can be, so that a file
    // changed there by hand is put back soon (what a pass writes starts no pass).
    let watch = match job.settings.watch {
        Some(debounce) => Some(Watch::replicas(
            [&job.source, &job.backup],
            false,
            job.settings.store.as_deref(),
            &job.settings.filter,
            debounce,
        )?),
        None => None,
    };
    Ok(engine::pass::run_watching(&job, interval, watch.as_ref()))
}
