//! The JSON config file shared by every tool: parsed strictly (an unknown key or a wrong
//! type is refused, naming the key), then merged under the command-line flags by each
//! binary. `config.example.json` at the top of the repository documents every key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::error::Refusal;
use crate::names::display;

/// How versions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionMode {
    /// No store is written.
    Off,
    /// Versions are kept (the default; `true`, or `"link"` from earlier builds).
    #[default]
    Link,
    /// `"copy"`, from earlier builds: the same as [`Link`](Self::Link) now, since no
    /// version shares a file with a replica in any case.
    Copy,
}

impl<'de> Deserialize<'de> for VersionMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = VersionMode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or \"copy\"")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<VersionMode, E> {
                Ok(if b {
                    VersionMode::Link
                } else {
                    VersionMode::Off
                })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<VersionMode, E> {
                match s {
                    "copy" => Ok(VersionMode::Copy),
                    "link" => Ok(VersionMode::Link),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// What a per-file error does to a pass (`--on-error`, config `on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Log it, go on, exit with status 1.
    #[default]
    Warn,
    /// Stop the pass at the first one (before anything changes if the scan or the plan
    /// found it), exit with status 1.
    Fail,
    /// Log it with -v only, go on, exit with status 0.
    Ignore,
}

/// How `twoway` settles a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ConflictPolicy {
    /// The later mtime wins; equal mtimes: A wins.
    #[default]
    #[serde(rename = "newer")]
    Newer,
    #[serde(rename = "prefer-a")]
    PreferA,
    #[serde(rename = "prefer-b")]
    PreferB,
}

impl std::str::FromStr for ConflictPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "newer" => Ok(ConflictPolicy::Newer),
            "prefer-a" => Ok(ConflictPolicy::PreferA),
            "prefer-b" => Ok(ConflictPolicy::PreferB),
            _ => Err(format!("{s:?} is not one of newer, prefer-a, prefer-b")),
        }
    }
}

/// The config file's keys; every one optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seconds between passes.
    pub interval: Option<u64>,
    /// Log file (relative paths are relative to the config file).
    pub log: Option<PathBuf>,
    /// Store directory for versions.
    pub store: Option<PathBuf>,
    /// true, false or "copy".
    pub versions: Option<VersionMode>,
    /// Glob patterns left out of every pass.
    pub exclude: Option<Vec<String>>,
    /// Patterns kept although a later exclude matches them (checked before `exclude`).
    pub include: Option<Vec<String>>,
    /// Files of exclude patterns, one per line (relative to the config file).
    pub exclude_from: Option<Vec<PathBuf>>,
    /// Files of include patterns, one per line (relative to the config file).
    pub include_from: Option<Vec<PathBuf>>,
    /// Re-hash every file instead of trusting the stat cache.
    pub checksum: Option<bool>,
    /// Mtimes within this many seconds are equal.
    pub modify_window: Option<u64>,
    /// twoway: newer, prefer-a or prefer-b.
    pub conflict: Option<ConflictPolicy>,
    /// twoway: refuse a pass that deletes more than this percent of a replica's files.
    pub max_delete: Option<f64>,
    /// Which versions the store keeps.
    pub keep: Option<Keep>,
    /// What a per-file error does: "warn", "fail" or "ignore".
    pub on_error: Option<OnError>,
    /// oneway: only add to BACKUP (as `--additive`).
    pub additive: Option<bool>,
    /// Several jobs, each with its own pair of directories and any key of its own (see
    /// [`Config::jobs`]).
    pub jobs: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// A size budget for a directory's history in its store, in bytes.
    pub max_store_bytes: Option<u64>,
}

/// The retention policy (as restic's `forget`): the newest `last` versions, and the
/// newest version of each of the newest `hourly` hours, `daily` days and `weekly` weeks
/// that have versions. A key left out keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keep {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
}

impl Default for Keep {
    fn default() -> Keep {
        Keep {
            last: 10,
            hourly: 48,
            daily: 30,
            weekly: 26,
        }
    }
}

/// One job of a config file: its name, its two directories, its settings (the file's
/// own keys, with the job's over them).
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub dirs: [PathBuf; 2],
    pub config: Config,
}

impl Config {
    /// Reads and validates a config file; any problem is a refusal naming the key.
    pub fn load(path: &Path) -> Result<Config, Refusal> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Refusal::new(format!("cannot read config file {}: {e}", display(path))))?;
        Config::parse(&text, path)
    }

    /// The jobs of the config file `path` (loaded as `self`), each directory named by
    /// the keys `dirs` ("source" and "backup", or "a" and "b"); empty if it has none.
    /// Paths are relative to the config file; "interval" and "log" are the run's, not
    /// a job's.
    pub fn jobs(&self, path: &Path, dirs: [&str; 2]) -> Result<Vec<JobSpec>, Refusal> {
        let Some(jobs) = &self.jobs else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Refusal::new(format!("cannot read config file {}: {e}", display(path))))?;
        let invalid =
            |what: String| Refusal::new(format!("invalid config file {}: {what}", display(path)));
        let mut top: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        top.remove("jobs");
        let base = path.parent().unwrap_or(Path::new("."));
        let mut out = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let mut job = job.clone();
            let name = match job.remove("name") {
                Some(serde_json::Value::String(n)) if !n.is_empty() => n,
                None => format!("job {}", i + 1),
                Some(_) => return Err(invalid(format!("job {}: \"name\" must be a text", i + 1))),
            };
            let mut dir = |key: &str| match job.remove(key) {
                Some(serde_json::Value::String(p)) => Ok(base.join(p)),
                _ => Err(invalid(format!(
                    "job {name:?} needs \"{}\" and \"{}\" (paths)",
                    dirs[0], dirs[1]
                ))),
            };
            let pair = [dir(dirs[0])?, dir(dirs[1])?];
            for run_wide in ["interval", "log", "jobs"] {
                if job.contains_key(run_wide) {
                    return Err(invalid(format!(
                        "job {name:?}: \"{run_wide}\" is the run's, not a job's: set it at the top"
                    )));
                }
            }
            let mut merged = top.clone();
            merged.extend(job);
            let text = serde_json::Value::Object(merged).to_string();
            let config = Config::parse(&text, path)
                .map_err(|r| Refusal::new(format!("job {name:?}: {r}")))?;
            out.push(JobSpec {
                name,
                dirs: pair,
                config,
            });
        }
        Ok(out)
    }

    /// [`load`](Self::load) of the text of the file `path`.
    fn parse(text: &str, path: &Path) -> Result<Config, Refusal> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            if key == "." {
                Refusal::new(format!(
                    "invalid config file {}: {}",
                    display(path),
                    e.inner()
                ))
            } else {
                Refusal::new(format!(
                    "invalid config file {}: key \"{key}\": {}",
                    display(path),
                    e.inner()
                ))
            }
        })?;
        if let Some(i) = cfg.interval {
            if i == 0 {
                return Err(Refusal::new(format!(
                    "invalid config file {}: key \"interval\": must be at least 1 second",
                    display(path)
                )));
            }
        }
        if let Some(m) = cfg.max_delete {
            if !(0.0..=100.0).contains(&m) {
                return Err(Refusal::new(format!(
                    "invalid config file {}: key \"max_delete\": must be a percentage from 0 to 100",
                    display(path)
                )));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let lists = [&mut cfg.exclude_from, &mut cfg.include_from];
        let listed = lists.into_iter().flatten().flat_map(|v| v.iter_mut());
        for p in [&mut cfg.log, &mut cfg.store]
            .into_iter()
            .flatten()
            .chain(listed)
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, Refusal> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.json");
        std::fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let e = load(r#"{"intervall": 5}"#).unwrap_err();
        assert!(e.to_string().contains("intervall"), "{e}");
    }

    #[test]
    fn wrong_type_is_refused_by_name() {
        let e = load(r#"{"interval": "soon"}"#).unwrap_err();
        assert!(e.to_string().contains("\"interval\""), "{e}");
        let e = load(r#"{"versions": "maybe"}"#).unwrap_err();
        assert!(e.to_string().contains("\"versions\""), "{e}");
    }

    #[test]
    fn every_key_parses() {
        let c = load(
            r#"{"interval": 5, "log": "x.log", "store": "/s", "versions": "copy",
                "exclude": ["*.tmp"], "checksum": true, "modify_window": 2,
                "conflict": "prefer-b", "max_delete": 25}"#,
        )
        .unwrap();
        assert_eq!(c.versions, Some(VersionMode::Copy));
        assert_eq!(c.conflict, Some(ConflictPolicy::PreferB));
        assert!(c.log.unwrap().is_absolute());
    }
}
