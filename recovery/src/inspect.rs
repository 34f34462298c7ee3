//! `recovery list`, `verify`, `forget`, `tag` and `untag`: reading a store, and the few
//! changes a person asks of it by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use engine::error::Refusal;
use engine::hash;
use engine::names::display;
use engine::run::events;
use engine::run::home::{absolute, DataHome};
use engine::tree::{Digest, Kind};

use crate::history::{self, History};
use crate::registry::{RegEntry, Registry};
use crate::retention::Keep;
use crate::store::VersionedDir;

#[derive(Serialize, Debug)]
struct VersionRow {
    id: u64,
    /// `latest` or `previous` for the newest two.
    #[serde(skip_serializing_if = "Option::is_none")]
    which: Option<&'static str>,
    made: String,
    why: &'static str,
    tags: Vec<String>,
    files: u64,
    bytes: u64,
    added: u64,
    changed: u64,
    removed: u64,
    /// Bytes the store spends on this version: its manifest, and the content it is the
    /// newest version to need.
    store_bytes: u64,
    dir_sha256: String,
    /// Made by a pass that ended with errors (something not read, or not written).
    incomplete: bool,
}

#[derive(Serialize, Debug)]
struct DirRow {
    dir: String,
    store: String,
    name: String,
    versions: Vec<VersionRow>,
}

fn selected(home: &DataHome, dir: Option<&Path>) -> Result<Vec<RegEntry>, Refusal> {
    match dir {
        Some(d) => {
            let d = absolute(d)?;
            let e = Registry::find_or_discover(home, &d, None)
                .map_err(Refusal::from)?
                .ok_or_else(|| crate::restore::unknown(&d))?;
            Ok(e.per_store())
        }
        None => {
            let reg = Registry::load(home).map_err(Refusal::from)?;
            Ok(reg.versioned().flat_map(|e| e.per_store()).collect())
        }
    }
}

/// The rows of `vd`'s versions, newest first.
fn rows(vd: &VersionedDir) -> Result<Vec<VersionRow>, engine::Error> {
    let history = vd.history();
    let listed = history.list()?;
    let tags = history.tags()?;
    // Which objects there are (a listing, no stat each): their sizes are the sizes the
    // versions record for that content.
    let objects: BTreeSet<Digest> = history.object_list()?.into_iter().collect();
    // Each object is counted for the newest version that needs it: the content a
    // difference holds is what its version had and the next one does not.
    let mut counted: BTreeSet<Digest> = BTreeSet::new();
    let mut store_bytes: BTreeMap<u64, u64> = BTreeMap::new();
    let mut root = history.open().ok();
    for (i, l) in listed.iter().enumerate().rev() {
        let mut b = l.file_bytes;
        if let Some(newer) = listed.get(i + 1) {
            history.held_before(l, newer, |e| {
                if let Some(sha) = e.sha256 {
                    if objects.contains(&sha) && counted.insert(sha) {
                        b += e.size;
                    }
                }
            })?;
        }
        store_bytes.insert(l.head.id, b);
    }
    // What is left is the newest version's (content a pass replaced before it was
    // made): few, each sized by a stat.
    let rest: u64 = match root.as_mut() {
        Some(r) => objects
            .iter()
            .filter(|sha| !counted.contains(*sha))
            .map(|sha| {
                r.stat(&history::object_path(sha))
                    .ok()
                    .flatten()
                    .map_or(0, |st| st.size)
            })
            .sum(),
        None => 0,
    };
    if let Some(l) = listed.last() {
        *store_bytes.entry(l.head.id).or_default() += rest;
    }
    Ok(listed
        .iter()
        .rev()
        .enumerate()
        .map(|(i, l)| VersionRow {
            id: l.head.id,
            which: match i {
                0 => Some("latest"),
                1 => Some("previous"),
                _ => None,
            },
            made: l.head.made.clone(),
            why: l.head.why.as_str(),
            tags: tags
                .iter()
                .filter(|(_, id)| **id == l.head.id)
                .map(|(t, _)| t.clone())
                .collect(),
            files: l.head.files,
            bytes: l.head.bytes,
            added: l.head.added,
            changed: l.head.changed,
            removed: l.head.removed,
            store_bytes: store_bytes.get(&l.head.id).copied().unwrap_or(0),
            dir_sha256: l.head.dir_sha256.clone(),
            incomplete: l.head.incomplete,
        })
        .collect())
}

/// Prints the versions of `dir` (or of every registered directory).
pub fn list(home: &DataHome, dir: Option<&Path>, json: bool) -> Result<i32, Refusal> {
    let mut out = Vec::new();
    for e in selected(home, dir)? {
        let vd = VersionedDir::from_registry(&e);
        out.push(DirRow {
            dir: e.path.to_string_lossy().into_owned(),
            store: e.store.to_string_lossy().into_owned(),
            name: e.name.clone(),
            versions: rows(&vd).map_err(Refusal::from)?,
        });
    }
    if json {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "dirs": out }))
            .map_err(|e| Refusal::new(format!("cannot encode the list as JSON: {e}")))?;
        engine::run::events::line(format_args!("{text}"));
        return Ok(0);
    }
    if out.is_empty() {
        engine::run::events::line(format_args!(
            "no versioned directories yet (data home {}); versions another data home made \
             are found by naming the backup or replica that holds them: recovery list /media/usb/photos",
            display(home.path())
        ));
    }
    for r in out {
        engine::run::events::line(format_args!("{}  (store {})", r.dir, r.store));
        if r.versions.is_empty() {
            engine::run::events::line(format_args!("  no versions"));
        }
        for v in r.versions {
            let tags = if v.tags.is_empty() {
                String::new()
            } else {
                format!("  tag {}", v.tags.join(","))
            };
            engine::run::events::line(format_args!(
                "  {:>5}  {}  {:<16}  {} files  {} bytes  +{} ~{} -{}  store {} bytes{}{}{}",
                v.id,
                v.made,
                v.why,
                v.files,
                v.bytes,
                v.added,
                v.changed,
                v.removed,
                v.store_bytes,
                v.which.map(|w| format!("  ({w})")).unwrap_or_default(),
                tags,
                if v.incomplete {
                    "  (incomplete: the pass that made it had errors)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(0)
}

/// The other histories that may hold a directory's content: its other stores, and its
/// twins' (twoway's other replica's) stores.
fn other_histories(home: &DataHome, e: &RegEntry) -> Vec<History> {
    let mut out = Vec::new();
    let Ok(reg) = Registry::load(home) else {
        return out;
    };
    let mut entries: Vec<RegEntry> = reg.find(&e.path).map(|x| x.per_store()).unwrap_or_default();
    for t in &e.twins {
        entries.extend(reg.find(t).map(|x| x.per_store()).unwrap_or_default());
    }
    for x in entries {
        let h = History::at(x.store.join(&x.name));
        let own = x.store == e.store && x.name == e.name;
        let seen = out.iter().any(|o: &History| o.path() == h.path());
        if !own && !seen {
            out.push(h);
        }
    }
    out
}

/// Heals the object `sha` of `history` from a live file or another history holding the
/// same content; says where from, or why not.
fn heal(
    history: &History,
    live: &crate::store::LiveCopies,
    others: &[History],
    sha: &Digest,
    at: Option<&(std::path::PathBuf, u64, Vec<u64>)>,
) -> Result<std::path::PathBuf, String> {
    let mut tried = Vec::new();
    if let Some((path, size, _)) = at {
        if let Some((mut f, _, from)) = live.find(path, sha, *size) {
            match history.heal_object(&mut f, &from, sha) {
                Ok(()) => return Ok(from),
                Err(e) => tried.push(e.to_string()),
            }
        }
    }
    for o in others {
        if let Some((mut f, from)) = o.open_object(sha) {
            match history.heal_object(&mut f, &from, sha) {
                Ok(()) => return Ok(from),
                Err(e) => tried.push(e.to_string()),
            }
        }
    }
    Err(if tried.is_empty() {
        "no live file and no other store holds that content".to_string()
    } else {
        tried.join("; ")
    })
}

/// Re-hashes every object of each store against its name, checks that every version
/// reads and that the content each needs is in the store or in a live directory;
/// `repair`: heals damaged or missing content from a live file or another store that
/// holds the same SHA-256. 1 if anything is (still) damaged or missing.
pub fn verify(home: &DataHome, dir: Option<&Path>, repair: bool) -> Result<i32, Refusal> {
    let mut problems = 0usize;
    let (mut objects_n, mut versions_n) = (0usize, 0usize);
    let selected = selected(home, dir)?;
    if selected.is_empty() {
        // Not "0 problems" for stores it never looked at.
        engine::run::events::line(format_args!(
            "no versioned directories are known to this data home ({}): name the backup or \
             replica whose store to verify (recovery verify /media/usb/photos)",
            display(home.path())
        ));
        return Ok(0);
    }
    for e in selected {
        let vd = VersionedDir::from_registry(&e);
        let history = vd.history();
        if repair && history.exists() {
            // What cannot be read is set aside first (kept): the rest of the history
            // then reads, and passes can record versions again. The versions lost are
            // problems still.
            let _lock = vd.lock(home).map_err(Refusal::from)?;
            match history.set_aside_unreadable() {
                Ok(aside) => {
                    for f in &aside {
                        problems += 1;
                        report(
                            "error",
                            format!(
                                "SET ASIDE {}: a version that cannot be read (its file is kept there; \
                                 the other versions read)",
                                display(f)
                            ),
                        );
                    }
                }
                Err(err) => {
                    report("error", format!("NOT REPAIRED  {err}"));
                    problems += 1;
                    continue;
                }
            }
        } else if history.exists() && history.holds_damaged().unwrap_or(false) {
            report(
                "warning",
                format!(
                    "{}: version files set aside by an earlier repair are kept in damaged/; \
                     no stored content is collected until that folder is deleted",
                    display(history.path())
                ),
            );
        }
        let listed = match history.list() {
            Ok(l) => l,
            Err(err) => {
                report("error", format!("DAMAGED  {err}"));
                problems += 1;
                continue;
            }
        };
        // Each content some version needs, once: where it was first met, and by whom.
        let mut needed: BTreeMap<Digest, (std::path::PathBuf, u64, Vec<u64>)> = BTreeMap::new();
        // Every version once, newest first, each from the one after it (the whole newest
        // manifest is read once, not once per version).
        let mut seen = 0usize;
        let walked = history.walk(
            |_| true,
            |head, state| {
                seen += 1;
                for x in state.values().filter(|x| x.kind == Kind::File) {
                    let Some(sha) = x.sha256 else { continue };
                    let n = needed
                        .entry(sha)
                        .or_insert((x.path.clone(), x.size, Vec::new()));
                    if n.2.last() != Some(&head.id) {
                        n.2.push(head.id);
                    }
                }
            },
        );
        versions_n += listed.len();
        if let Err(err) = walked {
            // A version whose file is damaged cannot be read, nor any older one: each
            // is read through the ones after it.
            let unread: Vec<String> = listed
                .iter()
                .rev()
                .skip(seen)
                .map(|l| l.head.id.to_string())
                .collect();
            problems += unread.len().max(1);
            report(
                "error",
                format!(
                    "DAMAGED  versions {} of {}: {err}",
                    unread.join(", "),
                    display(&e.path)
                ),
            );
        }
        let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        let objects = match history.objects() {
            Ok(o) => o,
            Err(err) => {
                report(
                    "error",
                    format!("DAMAGED  {}: {err}", display(history.path())),
                );
                problems += 1;
                continue;
            }
        };
        let rels: Vec<std::path::PathBuf> = objects
            .iter()
            .map(|(sha, _)| history::object_path(sha))
            .collect();
        let mut held: BTreeSet<Digest> = BTreeSet::new();
        // Files kept by a pass cut short and not settled yet are the store's too, once
        // no live name is left on them (else the live file is checked as any other).
        if let Ok(alone) = history.pending_alone() {
            held.extend(alone);
        }
        let live = crate::store::LiveCopies::of(&vd, home);
        let others = if repair {
            other_histories(home, &e)
        } else {
            Vec::new()
        };
        let mut healed = 0usize;
        let total: u64 = objects.iter().map(|(_, size)| size).sum();
        let show = engine::pass::progress::shown(engine::run::logging::console_verbosity());
        let progress =
            engine::pass::progress::Progress::counting(objects.len() as u64, total, show);
        let noted = |bytes: u64| {
            if let Some(p) = &progress {
                p.advance(bytes);
            }
        };
        let hashed = hash::hash_many_noting(history.path(), &rels, &noted);
        if let Some(p) = &progress {
            p.finish();
        }
        for ((sha, _), r) in objects.iter().zip(hashed) {
            objects_n += 1;
            let what = match needed.get(sha) {
                Some((p, _, v)) => {
                    format!(" (the content of {} in versions {})", display(p), ids(v))
                }
                None => String::new(),
            };
            match r {
                Ok((d, _)) if d == *sha => {
                    held.insert(*sha);
                }
                Ok((d, _)) => {
                    problems += 1;
                    report(
                        "error",
                        format!(
                            "DAMAGED  {}: its bytes hash to {d}{what}",
                            display(&history.path().join(history::object_path(sha)))
                        ),
                    );
                }
                Err(err) => {
                    problems += 1;
                    report("error", format!("DAMAGED  {err}{what}"));
                }
            }
            if repair && !held.contains(sha) {
                match heal(&history, &live, &others, sha, needed.get(sha)) {
                    Ok(from) => {
                        healed += 1;
                        held.insert(*sha);
                        report(
                            "action",
                            format!("REPAIRED {} from {}", sha.to_hex(), display(&from)),
                        );
                    }
                    Err(why) => report("warning", format!("NOT REPAIRED {}: {why}", sha.to_hex())),
                }
            }
        }
        for (sha, (path, size, v)) in needed.iter().map(|(k, v)| (*k, v.clone())) {
            if held.contains(&sha) || live.find(&path, &sha, size).is_some() {
                continue;
            }
            if repair {
                if let Ok(from) = heal(&history, &live, &others, &sha, needed.get(&sha)) {
                    report(
                        "action",
                        format!(
                            "REPAIRED {} of {} (versions {}) from {}",
                            display(&path),
                            display(&e.path),
                            ids(&v),
                            display(&from)
                        ),
                    );
                    continue;
                }
            }
            problems += 1;
            report("error", format!(
                "MISSING  {} of {} in the store {} (versions {}): its content (sha256 {}) is neither in the store nor in a live directory",
                display(&path),
                display(&e.path),
                display(&e.store),
                ids(&v),
                sha.to_hex()
            ));
        }
        problems -= healed;
    }
    if events::enabled() {
        let f =
            serde_json::json!({"files": objects_n, "versions": versions_n, "problems": problems});
        events::emit("summary", events::fields(f));
    } else {
        engine::run::events::line(format_args!(
            "verified {objects_n} stored files and {versions_n} versions: {problems} problems"
        ));
    }
    Ok(if problems > 0 { 1 } else { 0 })
}

/// Prints a line of `verify`, or with `--json` the event `kind` saying it.
fn report(kind: &str, text: String) {
    let fields = events::message_fields(&text);
    events::say(|| text, kind, || fields);
}

/// Prints a closing line, or with `--json` a `summary` of `fields`.
fn report_summary(text: String, fields: serde_json::Value) {
    events::say(|| text, "summary", || events::fields(fields));
}

/// Applies a retention policy now (`dry_run`: says what it would drop).
pub fn forget(home: &DataHome, dir: &Path, keep: Keep, dry_run: bool) -> Result<i32, Refusal> {
    let vd = crate::browse::versioned(home, dir)?;
    let _lock = vd.lock(home).map_err(Refusal::from)?;
    let history = vd.history();
    let listed = history.list().map_err(Refusal::from)?;
    let tagged: BTreeSet<u64> = history
        .tags()
        .map_err(Refusal::from)?
        .values()
        .copied()
        .collect();
    let times: Vec<_> = listed
        .iter()
        .map(|l| (l.head.id, crate::store::parse_time(&l.head.made)))
        .collect();
    let kept = crate::retention::kept(&times, &tagged, &keep);
    let before = vd.store_bytes().map_err(Refusal::from)?;
    for l in listed.iter().rev().filter(|l| !kept.contains(&l.head.id)) {
        if events::enabled() {
            let mut f = serde_json::Map::new();
            events::put_path(&mut f, "dir", vd.dir());
            f.insert("id".into(), l.head.id.into());
            f.insert("made".into(), l.head.made.clone().into());
            f.insert("files".into(), l.head.files.into());
            f.insert("dropped".into(), (!dry_run).into());
            f.insert("dry_run".into(), dry_run.into());
            events::emit("version", f);
        } else {
            engine::run::events::line(format_args!(
                "{} version {} (made {}, {} files)",
                if dry_run { "would drop" } else { "dropped" },
                l.head.id,
                l.head.made,
                l.head.files
            ));
        }
    }
    if dry_run {
        report_summary(
            format!("would keep {} of {} versions", kept.len(), listed.len()),
            serde_json::json!({"dry_run": true, "kept": kept.len(), "versions": listed.len()}),
        );
        return Ok(0);
    }
    let drop: BTreeSet<u64> = listed
        .iter()
        .map(|l| l.head.id)
        .filter(|id| !kept.contains(id))
        .collect();
    history.forget(&drop).map_err(Refusal::from)?;
    history.collect_garbage(None).map_err(Refusal::from)?;
    let after = vd.store_bytes().map_err(Refusal::from)?;
    let freed = before.saturating_sub(after);
    report_summary(
        format!(
            "kept {} of {} versions; freed {freed} bytes",
            kept.len(),
            listed.len()
        ),
        serde_json::json!({"dry_run": false, "kept": kept.len(), "versions": listed.len(), "freed": freed}),
    );
    Ok(0)
}

/// Tags version `spec` of `dir` `name` (a tag names one version; it moves if it
/// named another).
pub fn tag(home: &DataHome, dir: &Path, spec: &str, name: &str) -> Result<i32, Refusal> {
    if name.is_empty()
        || name.bytes().all(|b| b.is_ascii_digit())
        || matches!(name, "latest" | "previous")
    {
        return Err(Refusal::new(format!(
            "{name:?} cannot be a tag: it would read as a version id or a keyword"
        )));
    }
    let vd = crate::browse::versioned(home, dir)?;
    let _lock = vd.lock(home).map_err(Refusal::from)?;
    let head = crate::restore::select(&vd, spec)?;
    let history = vd.history();
    let mut tags = history.tags().map_err(Refusal::from)?;
    tags.insert(name.to_string(), head.id);
    history.set_tags(&tags).map_err(Refusal::from)?;
    report_summary(
        format!("tagged version {} of {} {name}", head.id, display(vd.dir())),
        serde_json::json!({"tagged": head.id, "tag": name}),
    );
    Ok(0)
}

/// Removes the tag `name` of `dir`.
pub fn untag(home: &DataHome, dir: &Path, name: &str) -> Result<i32, Refusal> {
    let vd = crate::browse::versioned(home, dir)?;
    let _lock = vd.lock(home).map_err(Refusal::from)?;
    let history = vd.history();
    let mut tags = history.tags().map_err(Refusal::from)?;
    let Some(id) = tags.remove(name) else {
        return Err(Refusal::new(format!(
            "{} has no tag {name:?}",
            display(vd.dir())
        )));
    };
    history.set_tags(&tags).map_err(Refusal::from)?;
    report_summary(
        format!("untagged version {id} of {} ({name})", display(vd.dir())),
        serde_json::json!({"untagged": id, "tag": name}),
    );
    Ok(0)
}
