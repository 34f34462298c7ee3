//! Looking through a directory's history without restoring anything: `recovery find`
//! (the versions that hold a path), `deleted` (what passes removed, and the last version
//! that holds each), `ls` (a version's entries), `diff` (two versions, or a version and
//! the live directory) and `duplicates` (files of the same content, from the manifests).
//! Only reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use engine::error::Refusal;
use engine::names::display;
use engine::run::events::{self, say, Value};
use engine::run::home::{absolute, DataHome};
use engine::tree::encoding::EntryRecord;
use engine::tree::{path_order, Digest, Kind};
use serde_json::Map;

use crate::restore::{find_versioned, select};
use crate::store::VersionedDir;

/// The versioned directory `dir`, in the store holding its newest version.
pub(crate) fn versioned(home: &DataHome, dir: &Path) -> Result<VersionedDir, Refusal> {
    find_versioned(home, &absolute(dir)?, None)
}

fn kind_char(k: Kind) -> char {
    match k {
        Kind::File => '-',
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
    }
}

fn time_of(sec: i64) -> String {
    chrono::DateTime::from_timestamp(sec, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| sec.to_string())
}

/// One entry as `ls -l` would show it.
/// An entry of a version as `--json` says it.
fn entry_fields(e: &EntryRecord) -> Map<String, Value> {
    let mut f = Map::new();
    events::put_path(&mut f, "path", &e.path);
    f.insert("kind".into(), e.kind.name().into());
    f.insert("size".into(), e.size.into());
    f.insert("mode".into(), format!("{:04o}", e.mode & 0o7777).into());
    f.insert("mtime".into(), time_of(e.mtime.0).into());
    if let Some(sha) = e.sha256 {
        f.insert("sha256".into(), sha.to_hex().into());
    }
    if let Some(t) = &e.target {
        events::put_path(&mut f, "target", t);
    }
    f
}

fn line(e: &EntryRecord) -> String {
    let target = match &e.target {
        Some(t) => format!(" -> {}", display(t)),
        None => String::new(),
    };
    format!(
        "{}{:04o}  {:>12}  {}  {}{target}",
        kind_char(e.kind),
        e.mode & 0o7777,
        e.size,
        time_of(e.mtime.0),
        display(&e.path)
    )
}

/// A path, or a glob when it has `*`, `?` or `[`: a path matches itself and what is
/// under it.
struct Pattern {
    path: PathBuf,
    glob: Option<globset::GlobMatcher>,
}

impl Pattern {
    fn new(p: &Path) -> Result<Pattern, Refusal> {
        let text = p.to_string_lossy();
        let glob = if text.contains(['*', '?', '[']) {
            Some(
                globset::GlobBuilder::new(&text)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| Refusal::new(format!("{text:?} is not a glob: {e}")))?
                    .compile_matcher(),
            )
        } else {
            None
        };
        Ok(Pattern {
            path: p.to_path_buf(),
            glob,
        })
    }

    fn matches(&self, p: &Path) -> bool {
        match &self.glob {
            Some(g) => g.is_match(p) || p.file_name().is_some_and(|n| g.is_match(n)),
            None => p.starts_with(&self.path),
        }
    }
}

/// `recovery find DIR PATH|GLOB`: the versions that hold it, newest first.
pub fn find(home: &DataHome, dir: &Path, what: &Path) -> Result<i32, Refusal> {
    let vd = versioned(home, dir)?;
    let pattern = Pattern::new(what)?;
    let mut found = 0;
    vd.history()
        .walk(
            |p| pattern.matches(p),
            |head, hits| {
                if hits.is_empty() {
                    return;
                }
                found += 1;
                let files: Vec<&EntryRecord> =
                    hits.values().filter(|e| e.kind == Kind::File).collect();
                let bytes: u64 = files.iter().map(|e| e.size).sum();
                let mut shown: Vec<&EntryRecord> = hits.values().collect();
                shown.sort_by(|x, y| path_order(&x.path, &y.path));
                if events::enabled() {
                    let mut f = Map::new();
                    f.insert("id".into(), head.id.into());
                    f.insert("made".into(), head.made.clone().into());
                    f.insert("files".into(), files.len().into());
                    f.insert("bytes".into(), bytes.into());
                    let entries: Vec<Value> = shown
                        .iter()
                        .map(|e| Value::Object(entry_fields(e)))
                        .collect();
                    f.insert("entries".into(), entries.into());
                    events::emit("version", f);
                    return;
                }
                engine::run::events::line(format_args!(
                    "version {} ({}): {} entries, {} files, {bytes} bytes",
                    head.id,
                    head.made,
                    hits.len(),
                    files.len()
                ));
                for e in shown.iter().take(5) {
                    engine::run::events::line(format_args!("  {}", line(e)));
                }
                if shown.len() > 5 {
                    engine::run::events::line(format_args!("  … and {} more", shown.len() - 5));
                }
            },
        )
        .map_err(Refusal::from)?;
    if found == 0 {
        say(
            || {
                format!(
                    "no version of {} holds {}",
                    display(vd.dir()),
                    display(what)
                )
            },
            "summary",
            || events::fields(serde_json::json!({"versions": 0})),
        );
        return Ok(1);
    }
    Ok(0)
}

/// `recovery deleted DIR [--since TIME]`: what passes removed (each in none of the
/// newest version's entries), with the last version that holds it; a removed folder is
/// shown once, with what was in it.
pub fn deleted(home: &DataHome, dir: &Path, since: Option<&str>) -> Result<i32, Refusal> {
    let vd = versioned(home, dir)?;
    let since = match since {
        Some(s) => Some(crate::restore::parse_point(s).ok_or_else(|| {
            Refusal::new(format!(
                "--since {s:?} is not a time (2026-12-01T10:00:00Z or 2026-12-01)"
            ))
        })?),
        None => None,
    };
    let history = vd.history();
    let listed = history.list().map_err(Refusal::from)?;
    let Some(newest) = listed.last() else {
        engine::run::events::line(format_args!("{} has no versions", display(vd.dir())));
        return Ok(0);
    };
    let now: HashSet<PathBuf> = history
        .state(newest.head.id)
        .map_err(Refusal::from)?
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    // Newest first: the first version met that holds a path is the last one that did.
    let mut gone: BTreeMap<PathBuf, (EntryRecord, u64, String)> = BTreeMap::new();
    for (i, l) in listed.iter().enumerate().rev().skip(1) {
        // Removed by the pass that made the version after it.
        let removed_at = crate::store::parse_time(&listed[i + 1].head.made);
        if since.is_some_and(|t| removed_at < t) {
            break;
        }
        history
            .held_before(l, &listed[i + 1], |e| {
                if !now.contains(e.path) && !gone.contains_key(e.path) {
                    let id = l.head.id;
                    gone.insert(
                        e.path.to_path_buf(),
                        (e.to_owned(), id, l.head.made.clone()),
                    );
                }
            })
            .map_err(Refusal::from)?;
    }
    let mut shown = 0;
    let paths: Vec<&PathBuf> = gone.keys().collect();
    for p in &paths {
        let parent = engine::tree::parent_of(p);
        if !parent.as_os_str().is_empty() && gone.contains_key(parent) {
            continue;
        }
        let (e, id, made) = &gone[*p];
        shown += 1;
        if e.kind == Kind::Dir {
            let inside: Vec<&(EntryRecord, u64, String)> = gone
                .iter()
                .filter(|(q, _)| q.starts_with(p) && q != p)
                .map(|(_, v)| v)
                .collect();
            let bytes: u64 = inside.iter().map(|(e, _, _)| e.size).sum();
            say(
                || {
                    format!(
                        "{}/  ({} entries, {bytes} bytes)  last in version {id} ({made})",
                        display(p),
                        inside.len()
                    )
                },
                "entry",
                || {
                    let mut f = entry_fields(e);
                    f.insert("entries".into(), inside.len().into());
                    f.insert("bytes".into(), bytes.into());
                    f.insert("last_version".into(), (*id).into());
                    f.insert("made".into(), made.clone().into());
                    f
                },
            );
        } else {
            say(
                || {
                    format!(
                        "{}  ({} bytes)  last in version {id} ({made})",
                        display(p),
                        e.size
                    )
                },
                "entry",
                || {
                    let mut f = entry_fields(e);
                    f.insert("last_version".into(), (*id).into());
                    f.insert("made".into(), made.clone().into());
                    f
                },
            );
        }
    }
    if shown == 0 && !events::enabled() {
        engine::run::events::line(format_args!(
            "nothing was deleted{}",
            if since.is_some() { " since then" } else { "" }
        ));
    }
    if events::enabled() {
        events::emit(
            "summary",
            events::fields(serde_json::json!({"deleted": shown})),
        );
    }
    Ok(0)
}

/// `recovery ls DIR [--version V] [SUBPATH]`: the entries of a version.
pub fn ls(home: &DataHome, dir: &Path, spec: &str, sub: Option<&Path>) -> Result<i32, Refusal> {
    let vd = versioned(home, dir)?;
    let head = select(&vd, spec)?;
    let state = vd.history().state(head.id).map_err(Refusal::from)?;
    let mut n = 0;
    for e in state
        .entries
        .iter()
        .filter(|e| sub.is_none_or(|s| e.path.starts_with(s)))
    {
        n += 1;
        say(|| line(e), "entry", || entry_fields(e));
    }
    if n == 0 {
        if let Some(s) = sub {
            return Err(Refusal::new(format!(
                "{} is not in version {} of {}",
                display(s),
                head.id,
                display(vd.dir())
            )));
        }
    }
    Ok(0)
}

/// What a side of a diff holds: a version, or the live directory.
fn side(
    vd: &VersionedDir,
    home: &DataHome,
    spec: Option<&str>,
) -> Result<(String, Vec<EntryRecord>), Refusal> {
    match spec {
        Some(s) => {
            let head = select(vd, s)?;
            let state = vd.history().state(head.id).map_err(Refusal::from)?;
            Ok((format!("version {}", head.id), state.entries))
        }
        None => {
            let opts = engine::scan::ScanOptions {
                skip: vec![vd.store().to_path_buf()],
                ..Default::default()
            };
            let mut tree = engine::scan::scan(vd.dir(), &opts).map_err(Refusal::from)?;
            engine::scan::cache::StatCache::fill_from_file(
                &home.cache_file(vd.dir()),
                vd.dir(),
                &mut tree,
            );
            let hashed = engine::scan::cache::hash_missing(vd.dir(), &mut tree);
            for e in hashed.errors {
                log::warn!("{e}");
            }
            let entries = crate::manifest::entries_of(&tree)
                .map(|e| e.to_owned())
                .collect();
            Ok(("the live directory".to_string(), entries))
        }
    }
}

/// `recovery diff DIR V1 [V2]`: what differs from V1 to V2 (default: the live
/// directory): `+` added, `-` removed, `M` content changed, `m` metadata only.
pub fn diff(home: &DataHome, dir: &Path, v1: &str, v2: Option<&str>) -> Result<i32, Refusal> {
    let vd = versioned(home, dir)?;
    let (a_name, a) = side(&vd, home, Some(v1))?;
    let (b_name, b) = side(&vd, home, v2)?;
    if !events::enabled() {
        engine::run::events::line(format_args!(
            "from {a_name} to {b_name} of {}:",
            display(vd.dir())
        ));
    }
    let change = |sign: &str, p: &Path| {
        say(
            || format!("{sign} {}", display(p)),
            "entry",
            || {
                let mut f = Map::new();
                f.insert("change".into(), sign.into());
                events::put_path(&mut f, "path", p);
                f
            },
        )
    };
    let (mut plus, mut minus, mut changed, mut meta) = (0, 0, 0, 0);
    for (x, y) in engine::tree::zip_sorted_by(
        a.iter(),
        b.iter(),
        |e| e.path.as_path(),
        |e| e.path.as_path(),
    ) {
        match (x, y) {
            (None, Some(y)) => {
                plus += 1;
                change("+", &y.path);
            }
            (Some(x), None) => {
                minus += 1;
                change("-", &x.path);
            }
            (Some(x), Some(y)) => {
                if x.kind != y.kind || x.sha256 != y.sha256 || x.target != y.target {
                    changed += 1;
                    change("M", &y.path);
                } else if x.mode != y.mode || x.owner != y.owner || x.mtime != y.mtime {
                    // A directory's mtime moves with what is in it: not worth a line
                    // alone (its mode or owner is).
                    let mtime_only = x.mode == y.mode && x.owner == y.owner;
                    if y.kind != Kind::Dir || !mtime_only {
                        meta += 1;
                        change("m", &y.path);
                    }
                }
            }
            (None, None) => {}
        }
    }
    say(
        || {
            format!(
                "{plus} added, {minus} removed, {changed} changed, {meta} with metadata changed"
            )
        },
        "summary",
        || {
            events::fields(serde_json::json!({
                "from": a_name, "to": b_name,
                "added": plus, "removed": minus, "changed": changed, "metadata": meta,
            }))
        },
    );
    Ok(0)
}

/// `recovery duplicates DIR`: groups of files with the same content in the newest
/// version (the live tree as last synced), from its manifest: no file is read.
pub fn duplicates(home: &DataHome, dir: &Path) -> Result<i32, Refusal> {
    let vd = versioned(home, dir)?;
    let head = select(&vd, "latest")?;
    let state = vd.history().state(head.id).map_err(Refusal::from)?;
    let mut groups: HashMap<Digest, Vec<&EntryRecord>> = HashMap::new();
    for e in state
        .entries
        .iter()
        .filter(|e| e.kind == Kind::File && e.size > 0)
    {
        if let Some(sha) = e.sha256 {
            groups.entry(sha).or_default().push(e);
        }
    }
    let mut dups: Vec<(u64, Vec<&EntryRecord>)> = groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|g| (g[0].size * (g.len() as u64 - 1), g))
        .collect();
    dups.sort_by(|x, y| {
        y.0.cmp(&x.0)
            .then_with(|| path_order(&x.1[0].path, &y.1[0].path))
    });
    let wasted: u64 = dups.iter().map(|(w, _)| w).sum();
    for (w, g) in &dups {
        if events::enabled() {
            let mut f = Map::new();
            f.insert("copies".into(), g.len().into());
            f.insert("size".into(), g[0].size.into());
            f.insert("wasted".into(), (*w).into());
            let paths: Vec<Value> = g
                .iter()
                .map(|e| {
                    let mut p = Map::new();
                    events::put_path(&mut p, "path", &e.path);
                    Value::Object(p)
                })
                .collect();
            f.insert("paths".into(), paths.into());
            events::emit("entry", f);
            continue;
        }
        engine::run::events::line(format_args!(
            "{} copies of {} bytes ({w} bytes more than one):",
            g.len(),
            g[0].size
        ));
        for e in g {
            engine::run::events::line(format_args!("  {}", display(&e.path)));
        }
    }
    say(
        || {
            format!(
                "{} groups of duplicates in version {} of {}; {wasted} bytes would be saved by keeping one of each",
                dups.len(),
                head.id,
                display(vd.dir())
            )
        },
        "summary",
        || {
            events::fields(
                serde_json::json!({"groups": dups.len(), "version": head.id, "wasted": wasted}),
            )
        },
    );
    Ok(0)
}
