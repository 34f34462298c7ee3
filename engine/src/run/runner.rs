//! The pass loop shared by `oneway` and `twoway`: run a pass, sleep the interval, repeat
//! until stopped; turn what happened into the exit status and the final log line.

use std::time::{Duration, Instant};

use crate::error::{exit, Refusal};
use crate::run::signal;
use crate::run::watch::{Between, Changed, Wake};

/// What one pass reports to the loop.
#[derive(Debug, Default)]
pub struct PassOutcome {
    /// Operations carried out (or planned, in a dry run).
    pub operations: u64,
    /// Per-file errors.
    pub errors: usize,
    /// The pass was cut short by a stop request.
    pub interrupted: bool,
}

/// Runs `pass` once (`interval` = None) or every `interval` until a stop is requested.
/// A refusal of the first pass ends the run with status 2; a later one (a drive that was
/// unplugged) is logged and retried at the next interval.
pub fn run_passes(
    interval: Option<Duration>,
    mut pass: impl FnMut(u64) -> Result<PassOutcome, Refusal>,
) -> i32 {
    run_passes_watching(interval, None, |n, _| pass(n), |_| {})
}

/// [`run_passes`], woken early by `watch` (see [`crate::run::watch`]) when files change:
/// `pass` is then told what changed (else, at the first pass and every interval, it is
/// a whole pass). `between` is told where each wait for a change is (see
/// [`crate::run::watch::Watch::wait`]).
pub fn run_passes_watching(
    interval: Option<Duration>,
    watch: Option<&crate::run::watch::Watch>,
    mut pass: impl FnMut(u64, Option<Changed>) -> Result<PassOutcome, Refusal>,
    mut between: impl FnMut(Between),
) -> i32 {
    let mut total_ops = 0u64;
    let mut n = 0u64;
    let mut changed: Option<Changed> = None;
    let finish = |n: u64, total: u64, status: i32| {
        log::info!("stopped after {n} pass(es): {total} operations in total");
        status
    };
    loop {
        n += 1;
        match pass(n, changed.take()) {
            Err(refusal) => {
                if interval.is_none() || n == 1 {
                    crate::run::logging::refusal(&refusal);
                    return exit::REFUSED;
                }
                log::error!("{refusal}; trying again at the next interval");
            }
            Ok(out) => {
                total_ops += out.operations;
                if out.interrupted {
                    return finish(n, total_ops, exit::INTERRUPTED);
                }
                if interval.is_none() {
                    let status = if out.errors > 0 {
                        exit::PER_FILE_ERRORS
                    } else {
                        exit::OK
                    };
                    return finish(n, total_ops, status);
                }
            }
        }
        let Some(every) = interval else {
            return finish(n, total_ops, exit::REFUSED);
        };
        let until = Instant::now() + every;
        if let Some(w) = watch {
            // What the pass itself wrote is no change to react to.
            w.settle();
            match w.wait(until, signal::stop_requested, &mut between) {
                Wake::Stop => return finish(n, total_ops, exit::OK),
                Wake::Changed => changed = Some(w.take_changed()),
                // The interval's whole pass reads everything.
                Wake::Due => drop(w.take_changed()),
            }
        }
        while Instant::now() < until && watch.is_none() {
            if signal::stop_requested() {
                return finish(n, total_ops, exit::OK);
            }
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
        if signal::stop_requested() {
            return finish(n, total_ops, exit::OK);
        }
    }
}

/// Runs every job of a config file each pass, one after another ([`run_passes`] over
/// them all): each job's lines carry its name; a job is set up (`make`, which takes its
/// lock and checks its directories) at its first pass, and again at the next pass while
/// that is refused (its drive unplugged), without keeping the others from running; the
/// outcomes fold into the run's: operations and errors added up, an interruption ending
/// the run, a refusal of any job refusing a single pass (exit status 2); on an interval
/// only a pass whose every job was refused is.
pub fn run_jobs<J>(
    interval: Option<Duration>,
    names: &[String],
    make: impl Fn(usize) -> Result<J, Refusal>,
    pass: impl Fn(&J, u64) -> Result<PassOutcome, Refusal>,
) -> i32 {
    let made: Vec<std::cell::RefCell<Option<J>>> = names
        .iter()
        .map(|_| std::cell::RefCell::new(None))
        .collect();
    run_passes(interval, |n| {
        let mut all = PassOutcome::default();
        let mut refused: Vec<&str> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            crate::run::logging::set_job(Some(name));
            let result = (|| {
                if made[i].borrow().is_none() {
                    let job = make(i)?;
                    *made[i].borrow_mut() = Some(job);
                }
                let job = made[i].borrow();
                pass(job.as_ref().expect("BUG: made just above"), n)
            })();
            match result {
                Ok(out) => {
                    all.operations += out.operations;
                    all.errors += out.errors;
                    all.interrupted |= out.interrupted;
                }
                Err(r) => {
                    log::error!("{r}");
                    refused.push(name);
                }
            }
            crate::run::logging::set_job(None);
            if all.interrupted || signal::stop_requested() {
                all.interrupted = true;
                break;
            }
        }
        // Passes on an interval go on while some job runs: a refused one is logged and
        // tried again at the next pass.
        let some_ran = refused.len() < names.len();
        if refused.is_empty() || (interval.is_some() && some_ran) {
            Ok(all)
        } else {
            Err(Refusal::new(format!(
                "{} of {} jobs refused ({})",
                refused.len(),
                names.len(),
                refused.join(", ")
            )))
        }
    })
}

/// `--config FILE` with jobs and no directories: sets the run up (`settings`: the run's
/// own, for its log file and interval), then [`run_jobs`], each job made by `make` from
/// its directories and settings.
pub fn run_config_jobs<J>(
    settings: &crate::run::cli::Settings,
    jobs: Vec<(String, [std::path::PathBuf; 2], crate::run::cli::Settings)>,
    make: impl Fn(
        &[std::path::PathBuf; 2],
        crate::run::cli::Settings,
        crate::run::home::DataHome,
    ) -> Result<J, Refusal>,
    pass: impl Fn(&J, u64) -> Result<PassOutcome, Refusal>,
) -> Result<i32, Refusal> {
    settings.start_run()?;
    if settings.watch.is_some() {
        return Err(Refusal::new(
            "--watch runs one pair of directories; give them on the command line",
        ));
    }
    let home = crate::run::home::DataHome::locate()?;
    let names: Vec<String> = jobs.iter().map(|(n, _, _)| n.clone()).collect();
    let make_job = |i: usize| {
        let (_, dirs, job_settings) = &jobs[i];
        make(dirs, job_settings.clone(), home.clone())
    };
    Ok(run_jobs(settings.interval, &names, make_job, pass))
}
