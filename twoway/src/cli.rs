//! The `twoway` command line: parse flags, turn them into validated settings, run the
//! passes or a restore, map the outcome to an exit status.

use std::path::PathBuf;

use engine::error::Refusal;
use engine::run::cli::{self, usage, PassArgs, RestoreArgs, Settings};
use engine::run::config::ConflictPolicy;
use engine::run::home::DataHome;
use engine::run::runner;
use engine::run::watch::Watch;

use crate::pass::Job;

const EXAMPLES: &str = "\
Examples:
  twoway ~/Notes /media/usb/notes --once          one sync pass, then exit
  twoway ~/Notes /mnt/share/notes                 a pass every 60 s until Ctrl+C
  twoway ~/Notes /mnt/share/notes --dry-run --once
  twoway ~/Notes /mnt/share/notes --conflict prefer-a --max-delete 20
  twoway ~/Notes --restore --version previous --to /tmp/notes-before
  twoway --generate complete-bash > ~/.local/share/bash-completion/completions/twoway
  twoway --generate man > ~/.local/share/man/man1/twoway.1

A change made on one side since the last sync is copied to the other, deletions too.
A file changed on both sides is a conflict: the newer one (--conflict newer, the
default; equal mtimes: DIR_A) or the preferred side's stays, and the other is kept
beside it on both sides as <stem>.conflict-<YYYYMMDD-HHMMSS><.ext>. A modification
always beats a deletion. The first sync of a pair is a union: nothing is deleted.
Each replica keeps versions of itself in its own __versions__ directory (the last 10,
one per hour for 48 hours, per day for 30 days, per week for 26 weeks; see `recovery`).

Exit status: 0 success, 1 per-file errors (logged with the path), 2 refused (nothing
changed), 130 interrupted during a pass.";

/// Keeps two directories in sync in both directions, never losing an update.
#[derive(clap::Parser, Debug)]
#[command(name = "twoway", disable_version_flag = true, after_help = EXAMPLES)]
pub struct Cli {
    /// DIR_A and DIR_B; with --restore, only DIR.
    #[arg(value_name = "DIR_A DIR_B", num_args = 0..=2)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub pass: PassArgs,
    /// Who wins a conflict: newer (default), prefer-a or prefer-b. The loser is kept.
    #[arg(long, value_name = "newer|prefer-a|prefer-b")]
    pub conflict: Option<ConflictPolicy>,
    #[command(flatten)]
    pub restore: RestoreArgs,
    #[command(flatten)]
    pub generate: cli::GenerateArgs,
    /// Print the version and exit (as --version alone does).
    #[arg(short = 'V')]
    pub print_version: bool,
}

/// Runs the `twoway` binary; returns the exit status.
pub fn main() -> i32 {
    cli::main_of(
        "twoway",
        |c: &Cli| {
            let version = c.print_version || c.restore.wants_program_version();
            (version, c.generate.generate)
        },
        run,
    )
}

fn run(cli: Cli) -> Result<i32, Refusal> {
    let settings = Settings::resolve(&cli.pass, cli.conflict)?;
    if settings.additive {
        return Err(usage(
            "twoway",
            "the config key \"additive\" is oneway's: a two-way sync carries deletions",
        ));
    }
    if cli.restore.restore {
        if settings.json {
            engine::run::events::enable();
        }
        return recovery::cli::restore_command("twoway", cli.paths, &cli.restore, &settings);
    }
    cli.restore.check_unused("twoway")?;
    // `twoway --config FILE` alone: the file's jobs, each pass.
    let jobs = if cli.paths.is_empty() {
        Settings::resolve_jobs(&cli.pass, cli.conflict, ["a", "b"])?
    } else {
        Vec::new()
    };
    if !jobs.is_empty() {
        let make = |[a, b]: &[PathBuf; 2], job_settings, home| Job::new(a, b, job_settings, home);
        return runner::run_config_jobs(&settings, jobs, make, |job, n| job.run_pass(n));
    }
    let [a, b] = <[PathBuf; 2]>::try_from(cli.paths)
        .map_err(|_| usage("twoway", "twoway needs DIR_A and DIR_B"))?;
    settings.start_run()?;
    let home = DataHome::locate()?;
    let interval = settings.interval;
    let job = Job::new(&a, &b, settings, home)?;
    // --watch: both replicas are watched, their stores not (what a pass itself writes
    // is dropped after it).
    let watch = match job.settings.watch {
        Some(debounce) => Some(Watch::replicas(
            [&job.a, &job.b],
            true,
            job.settings.store.as_deref(),
            &job.settings.filter,
            debounce,
        )?),
        None => None,
    };
    Ok(engine::pass::run_watching(&job, interval, watch.as_ref()))
}
