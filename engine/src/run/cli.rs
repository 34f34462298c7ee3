//! The command-line flags every pass tool shares, and how they merge with the config file
//! into validated [`Settings`]: flags override the config file, which overrides the
//! built-in defaults. Binaries only parse; this module only validates.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Refusal;
use crate::filter::{read_rules_file, Filter, Rule};
use crate::run::config::{Config, ConflictPolicy, VersionMode};
use crate::run::logging::Verbosity;

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
    #[arg(long, value_name = "SECS", value_parser = parse_interval, allow_negative_numbers = true)]
    pub interval: Option<u64>,
    /// After a first pass, run a pass soon after files change (inotify), as well as every
    /// --interval (the safety net for changes a watcher misses).
    #[arg(long, conflicts_with = "once")]
    pub watch: bool,
    /// With --watch: wait until nothing has changed for MS milliseconds before a pass
    /// (default 1000).
    #[arg(long, value_name = "MS", requires = "watch")]
    pub debounce: Option<u64>,
    /// Also append every log line to FILE.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Read settings from a JSON config file (see config.example.json); without it,
    /// $XDG_CONFIG_HOME/twoway/config.json (else ~/.config/twoway/config.json) if it exists.
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
    /// "dir/x" a path from the top, "cache/" directories only, "re:REGEX" a regular
    /// expression on the name. Rules apply in the order given; the first that matches
    /// decides.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Keep paths matching GLOB even if a later --exclude matches them (repeatable; as
    /// rsync: --include '*/' --include '*.jpg' --exclude '*' keeps only JPEGs).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Read --exclude patterns from FILE, one per line ("#" starts a comment line).
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// Read --include patterns from FILE, one per line ("#" starts a comment line).
    #[arg(long, value_name = "FILE")]
    pub include_from: Vec<PathBuf>,
    /// Treat mtimes that differ by at most SECS as equal (FAT/exFAT: set automatically).
    #[arg(long, value_name = "SECS")]
    pub modify_window: Option<u64>,
    /// Refuse a pass that would delete more than PERCENT of the files in BACKUP (twoway:
    /// in either replica); default 50, config "max_delete".
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub max_delete: Option<f64>,
    /// Tag the version this pass makes; a tagged version is kept until untagged
    /// (`recovery untag`), whatever the retention policy.
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,
    /// What a file that cannot be read, copied or hashed does to a pass: warn (log it,
    /// go on, exit 1; the default), fail (stop the pass there, before any change when
    /// the scan found it; exit 1) or ignore (log it with -v only; exit 0).
    #[arg(long, value_name = "POLICY", value_enum)]
    pub on_error: Option<crate::run::config::OnError>,
    /// Before changing anything, show the plan folder by folder and ask which to carry
    /// out (needs a terminal); what is not approved is not done.
    #[arg(long, conflicts_with = "json")]
    pub approve: bool,
    /// Print newline-delimited JSON on stdout instead of text: one object per action,
    /// warning, error, conflict, version and summary (the schema is in the README).
    #[arg(long)]
    pub json: bool,
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
    /// With --restore: which version: latest (default), previous, an id or a tag from
    /// `recovery list`, or a time (2026-12-01T10:00:00Z, or a date: the last version
    /// made at or before it). Alone: print the program's version.
    #[arg(long = "version", value_name = "V", num_args = 0..=1, default_missing_value = "")]
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

/// What `--generate` writes: shell completions or a man page, built from the command
/// line's own definition (as ripgrep's `--generate`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generate {
    CompleteBash,
    CompleteZsh,
    CompleteFish,
    CompletePowershell,
    Man,
}

/// The `--generate` flag every binary has.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GenerateArgs {
    /// Print shell completions or the man page, and exit.
    #[arg(long, value_name = "KIND", value_enum)]
    pub generate: Option<Generate>,
}

/// Writes what `kind` asks for, for the command line `C`, to stdout; the exit status.
pub fn generate<C: clap::CommandFactory>(kind: Generate) -> i32 {
    use clap_complete::Shell;
    let mut cmd = C::command();
    let name = cmd.get_name().to_string();
    let mut out = std::io::stdout().lock();
    let shell = match kind {
        Generate::CompleteBash => Shell::Bash,
        Generate::CompleteZsh => Shell::Zsh,
        Generate::CompleteFish => Shell::Fish,
        Generate::CompletePowershell => Shell::PowerShell,
        Generate::Man => {
            let man = clap_mangen::Man::new(cmd.version(env!("CARGO_PKG_VERSION")));
            return match man.render(&mut out) {
                Ok(()) => crate::error::exit::OK,
                Err(e) => {
                    eprintln!("{name}: cannot write the man page: {e}");
                    crate::error::exit::PER_FILE_ERRORS
                }
            };
        }
    };
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    crate::error::exit::OK
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
    /// Which paths passes leave out.
    pub filter: Filter,
    pub modify_window: Option<u64>,
    pub verbosity: Verbosity,
    pub conflict: ConflictPolicy,
    pub max_delete: f64,
    /// Which versions the store keeps.
    pub keep: crate::run::config::Keep,
    /// A size budget for a directory's history, in bytes.
    pub max_store_bytes: Option<u64>,
    /// A tag for the version the pass makes.
    pub tag: Option<String>,
    /// The config file read (`--config`, or the default one), if any.
    pub config_file: Option<PathBuf>,
    /// What a per-file error does to a pass.
    pub on_error: crate::run::config::OnError,
    /// `--json`: events on stdout instead of text.
    pub json: bool,
    /// `--watch`: the debounce of changes seen (passes then also run on changes).
    pub watch: Option<Duration>,
    /// The config file's `additive` (oneway's `--additive` also sets it).
    pub additive: bool,
    /// `--approve`: ask, folder by folder, before changing anything.
    pub approve: bool,
}

impl Settings {
    /// Says which config file was read (with `-v`), once logging is set up.
    pub fn log_config_file(&self) {
        match &self.config_file {
            Some(p) => log::debug!("config file: {}", crate::names::display(p)),
            None => log::debug!(
                "config file: none (no --config, and no {})",
                default_config_file()
                    .map(|p| crate::names::display(&p))
                    .unwrap_or_else(|| "default config file".to_string())
            ),
        }
    }

    /// Sets up the console and log file of a pass run (per-file errors kept to -v with
    /// `--on-error ignore`, JSON events with `--json`), says which config file was
    /// read, and installs the Ctrl+C and SIGTERM handler.
    pub fn start_run(&self) -> Result<(), Refusal> {
        if self.on_error == crate::run::config::OnError::Ignore {
            crate::run::logging::quiet_file_errors();
        }
        if self.json {
            crate::run::events::enable();
        }
        crate::run::logging::init(self.verbosity, self.log_file())?;
        self.log_config_file();
        crate::run::signal::install()
    }

    /// The retention policy and size budget of the store.
    pub fn retention(&self) -> (crate::run::config::Keep, Option<u64>) {
        (self.keep, self.max_store_bytes)
    }

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
    ) -> Result<Settings, Refusal> {
        let (cfg, config_file) = Self::config_of(args)?;
        Self::resolve_with(args, extra_conflict, cfg, config_file)
    }

    /// The config file's jobs (see [`Config::jobs`]), each with its settings: flags over
    /// the job's keys over the file's over the defaults. Empty without jobs.
    pub fn resolve_jobs(
        args: &PassArgs,
        extra_conflict: Option<ConflictPolicy>,
        dirs: [&str; 2],
    ) -> Result<Vec<(String, [PathBuf; 2], Settings)>, Refusal> {
        let (cfg, config_file) = Self::config_of(args)?;
        let Some(file) = &config_file else {
            return Ok(Vec::new());
        };
        cfg.jobs(file, dirs)?
            .into_iter()
            .map(|j| {
                let settings =
                    Self::resolve_with(args, extra_conflict, j.config, config_file.clone())?;
                Ok((j.name, j.dirs, settings))
            })
            .collect()
    }

    /// The config file read (`--config`, else the default one when it exists).
    fn config_of(args: &PassArgs) -> Result<(Config, Option<PathBuf>), Refusal> {
        let config_file = args
            .config
            .clone()
            .or_else(|| default_config_file().filter(|p| p.symlink_metadata().is_ok()));
        let cfg = match &config_file {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        Ok((cfg, config_file))
    }

    fn resolve_with(
        args: &PassArgs,
        extra_conflict: Option<ConflictPolicy>,
        cfg: Config,
        config_file: Option<PathBuf>,
    ) -> Result<Settings, Refusal> {
        // A dry run is one pass: repeating it would only print the same plan again.
        let interval = if args.once || args.dry_run {
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
        let filter = Filter::new(&filter_rules(args, &cfg)?).map_err(Refusal::new)?;
        let max_delete = args
            .max_delete
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
            filter,
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
            keep: cfg.keep.unwrap_or_default(),
            max_store_bytes: cfg.max_store_bytes,
            tag: args.tag.clone(),
            config_file,
            on_error: args.on_error.or(cfg.on_error).unwrap_or_default(),
            json: args.json,
            watch: (args.watch && !args.dry_run)
                .then(|| Duration::from_millis(args.debounce.unwrap_or(1000))),
            additive: cfg.additive.unwrap_or(false),
            approve: args.approve,
        })
    }
}

/// The filter rules in the order they apply: the config file's (its includes, then its
/// excludes, each with the lines of its files), then the command line's in the order
/// given (a `--*-from` file's lines where the flag stands).
fn filter_rules(args: &PassArgs, cfg: &Config) -> Result<Vec<Rule>, Refusal> {
    let from_file = |p: &PathBuf| read_rules_file(p).map_err(Refusal::new);
    let mut rules = Vec::new();
    for include in [true, false] {
        let (patterns, files) = if include {
            (&cfg.include, &cfg.include_from)
        } else {
            (&cfg.exclude, &cfg.exclude_from)
        };
        let rule = |p: String| Rule {
            include,
            pattern: p,
        };
        rules.extend(patterns.iter().flatten().cloned().map(rule));
        for f in files.iter().flatten() {
            rules.extend(from_file(f)?.into_iter().map(rule));
        }
    }
    // The command line: each value with its place among the arguments.
    let mut given: Vec<(usize, Vec<Rule>)> = Vec::new();
    let places = |id: &str, n: usize| -> Vec<usize> {
        arg_places(id).unwrap_or_else(|| {
            // Not parsed from this process's arguments (a test): includes first.
            let base = if id.starts_with("include") {
                0
            } else {
                1 << 20
            };
            (base..base + n).collect()
        })
    };
    for (id, include, patterns) in [
        ("include", true, &args.include),
        ("exclude", false, &args.exclude),
    ] {
        for (at, p) in places(id, patterns.len()).into_iter().zip(patterns) {
            given.push((
                at,
                vec![Rule {
                    include,
                    pattern: p.clone(),
                }],
            ));
        }
    }
    for (id, include, files) in [
        ("include_from", true, &args.include_from),
        ("exclude_from", false, &args.exclude_from),
    ] {
        for (at, f) in places(id, files.len()).into_iter().zip(files) {
            let lines = from_file(f)?;
            let ruled = lines
                .into_iter()
                .map(|pattern| Rule { include, pattern })
                .collect();
            given.push((at, ruled));
        }
    }
    given.sort_by_key(|(at, _)| *at);
    rules.extend(given.into_iter().flat_map(|(_, r)| r));
    Ok(rules)
}

/// The arguments as clap parsed them, for the order of flags given more than once.
static MATCHES: std::sync::OnceLock<clap::ArgMatches> = std::sync::OnceLock::new();

/// The places among the arguments of each value of the flag `id`, if this process
/// parsed its arguments.
fn arg_places(id: &str) -> Option<Vec<usize>> {
    let m = MATCHES.get()?;
    let m = m.try_contains_id(id).ok()?.then_some(m)?;
    Some(m.indices_of(id).map(|i| i.collect()).unwrap_or_default())
}

/// Where the config file is read from without `--config`:
/// `$XDG_CONFIG_HOME/twoway/config.json`, else `~/.config/twoway/config.json`.
pub fn default_config_file() -> Option<PathBuf> {
    let from_env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base =
        from_env("XDG_CONFIG_HOME").or_else(|| from_env("HOME").map(|h| h.join(".config")))?;
    Some(base.join("twoway").join("config.json"))
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

impl Settings {
    /// Refuses a pass that would delete `deletes` of the `files` files in `what` when
    /// that is more than `--max-delete` percent; `why` is added to the reason (what the
    /// user may have got wrong). Exit 2, with the numbers and the flag that lets it pass.
    pub fn check_max_delete(
        &self,
        what: &str,
        deletes: usize,
        files: usize,
        why: &str,
    ) -> Result<(), Refusal> {
        if files == 0 || deletes == 0 {
            return Ok(());
        }
        let pct = deletes as f64 * 100.0 / files as f64;
        if pct <= self.max_delete {
            return Ok(());
        }
        Err(Refusal::new(format!(
            "this pass would delete {deletes} of the {files} files in {what} ({pct:.0}%), more than --max-delete {}%; \
             nothing was changed.{why} If the deletions are intended, run again with --max-delete 100",
            self.max_delete
        )))
    }
}

/// A usage refusal that points at `--help`.
pub fn usage(program: &str, msg: &str) -> Refusal {
    Refusal::new(format!("{msg} (see {program} --help)"))
}

/// The exit status of a binary's run; a refusal is reported as one line.
pub fn exit_status(outcome: Result<i32, Refusal>) -> i32 {
    match outcome {
        Ok(code) => code,
        Err(r) => {
            crate::run::logging::refusal(&r);
            crate::error::exit::REFUSED
        }
    }
}

/// The `main` of a pass tool: parses its command line, prints the version when
/// `wants_version` says it was asked for (`-V`), else runs `run`; returns the exit status.
pub fn main_of<C: clap::Parser>(
    program: &str,
    wants: impl FnOnce(&C) -> (bool, Option<Generate>),
    run: impl FnOnce(C) -> Result<i32, Refusal>,
) -> i32 {
    let cli: C = parse();
    match wants(&cli) {
        (true, _) => {
            println!("{program} {}", env!("CARGO_PKG_VERSION"));
            crate::error::exit::OK
        }
        (false, Some(kind)) => generate::<C>(kind),
        (false, None) => exit_status(run(cli)),
    }
}

/// Parses the command line. Help and the version are printed as clap prints them (exit
/// 0); a usage error is one line in the suite's own style, `program: reason (see
/// program --help)`, with exit status 2.
pub fn parse<C: clap::Parser>() -> C {
    let parsed = C::command().try_get_matches().and_then(|m| {
        let c = C::from_arg_matches(&m)?;
        // Kept for the order of the filter flags (see `filter_rules`).
        let _ = MATCHES.set(m);
        Ok(c)
    });
    match parsed {
        Ok(c) => c,
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                let program = crate::run::logging::program();
                let text = e.render().to_string();
                let first = text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid arguments");
                let reason = first.trim_start_matches("error: ").trim_end();
                // The values a flag takes, when clap lists them: said on the same line.
                let values = text
                    .lines()
                    .map(str::trim)
                    .find(|l| l.starts_with("[possible values:"))
                    .map(|l| format!(" {l}"))
                    .unwrap_or_default();
                eprintln!("{program}: {reason}{values} (see {program} --help)");
                std::process::exit(crate::error::exit::REFUSED)
            }
        },
    }
}

/// Parses `--interval`: whole seconds, at least 1, said the way a person would.
pub fn parse_interval(s: &str) -> Result<u64, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n >= 1 && n <= u64::MAX as i128 => Ok(n as u64),
        Ok(n) if n < 0 => Err(format!(
            "the interval must be a positive number of seconds, not {n}"
        )),
        Ok(_) if s.trim().parse::<u128>().is_ok_and(|n| n > u64::MAX as u128) => {
            Err("the interval is too large".to_string())
        }
        Ok(_) => Err("the interval must be at least 1 second".to_string()),
        Err(_) => Err(format!(
            "the interval is a whole number of seconds (at least 1), not {s:?}"
        )),
    }
}

/// Parses `--max-delete`: a percentage from 0 to 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "--max-delete takes a percentage from 0 to 100, not {s:?}"
        )),
    }
}
