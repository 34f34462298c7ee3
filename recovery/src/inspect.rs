//! `recovery list` and `recovery verify`: reading the store, never changing it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use engine::error::Refusal;
use engine::hash;
use engine::names::display;
use engine::run::home::{absolute, DataHome};
use engine::tree::Kind;

use crate::manifest::Manifest;
use crate::registry::{RegEntry, Registry};
use crate::store::VersionedDir;

#[derive(Serialize, Debug)]
struct VersionRow {
    which: &'static str,
    made: String,
    files: u64,
    bytes: u64,
    dir_sha256: String,
    path: String,
    /// Made by a pass that could not read everything.
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
    let reg = Registry::load(home).map_err(Refusal::from)?;
    match dir {
        Some(d) => {
            let d = absolute(d)?;
            let e = reg.find(&d).ok_or_else(|| {
                Refusal::new(format!(
                    "no versions are known for {}; run `recovery list` to see the directories that have versions",
                    display(&d)
                ))
            })?;
            Ok(e.per_store())
        }
        None => Ok(reg.versioned().flat_map(|e| e.per_store()).collect()),
    }
}

fn versions_of(vd: &VersionedDir) -> Vec<(&'static str, PathBuf)> {
    let view = vd.view();
    [("latest", view.latest), ("previous", view.previous)]
        .into_iter()
        .filter_map(|(w, p)| Some((w, p?)))
        .collect()
}

/// Prints the versions of `dir` (or of every registered directory).
pub fn list(home: &DataHome, dir: Option<&Path>, json: bool) -> Result<i32, Refusal> {
    let mut rows = Vec::new();
    for e in selected(home, dir)? {
        let vd = VersionedDir::from_registry(&e);
        let versions = versions_of(&vd)
            .into_iter()
            .filter_map(|(which, p)| {
                let m = Manifest::load(&p).ok()?;
                Some(VersionRow {
                    which,
                    made: m.head.made,
                    files: m.head.files,
                    bytes: m.head.bytes,
                    dir_sha256: m.head.dir_sha256,
                    path: p.to_string_lossy().into_owned(),
                    incomplete: m.head.incomplete,
                })
            })
            .collect();
        rows.push(DirRow {
            dir: e.path.to_string_lossy().into_owned(),
            store: e.store.to_string_lossy().into_owned(),
            name: e.name.clone(),
            versions,
        });
    }
    if json {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "dirs": rows }))
            .map_err(|e| Refusal::new(format!("cannot encode the list as JSON: {e}")))?;
        println!("{text}");
        return Ok(0);
    }
    if rows.is_empty() {
        println!(
            "no versioned directories yet (data home {})",
            display(home.path())
        );
    }
    for r in rows {
        println!("{}  (store {})", r.dir, r.store);
        if r.versions.is_empty() {
            println!("  no versions");
        }
        for v in r.versions {
            println!(
                "  {:<8}  {}  {} files  {} bytes  sha256 {}{}",
                v.which,
                v.made,
                v.files,
                v.bytes,
                v.dir_sha256,
                if v.incomplete {
                    "  (incomplete: the pass could not read everything)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(0)
}

/// Re-hashes every stored file against its manifest; 1 if anything is damaged or missing.
pub fn verify(home: &DataHome, dir: Option<&Path>) -> Result<i32, Refusal> {
    let mut problems = 0usize;
    let (mut files, mut versions) = (0usize, 0usize);
    for e in selected(home, dir)? {
        let vd = VersionedDir::from_registry(&e);
        for (which, vdir) in versions_of(&vd) {
            versions += 1;
            let m = match Manifest::load(&vdir) {
                Ok(m) => m,
                Err(err) => {
                    println!(
                        "DAMAGED  {} ({which} version of {}): {err}",
                        display(&vdir),
                        display(&e.path)
                    );
                    problems += 1;
                    continue;
                }
            };
            let entries: Vec<_> = m.entries.iter().filter(|x| x.kind == Kind::File).collect();
            let rels: Vec<PathBuf> = entries.iter().map(|x| x.path.clone()).collect();
            let results = hash::hash_many(&vdir, &rels);
            for (x, r) in entries.iter().zip(results) {
                files += 1;
                let expected = x.sha256;
                let shown = display(&vdir.join(&x.path));
                match r {
                    Ok((d, _)) if Some(d) == expected => {}
                    Ok((d, _)) => {
                        problems += 1;
                        println!(
                            "DAMAGED  {shown}: expected sha256 {}, found {d}",
                            x.sha256.map(|d| d.to_hex()).unwrap_or_else(|| "?".into())
                        );
                    }
                    Err(err) => {
                        problems += 1;
                        let missing = matches!(&err, engine::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
                        if missing {
                            println!("MISSING  {shown}");
                        } else {
                            println!("DAMAGED  {shown}: {err}");
                        }
                    }
                }
            }
            // Through directory handles: no symlink followed, and a path longer than
            // the kernel takes at once is no missing entry.
            let mut root = engine::fs::Root::open(&vdir).ok();
            for x in m.entries.iter().filter(|x| x.kind != Kind::File) {
                let p = vdir.join(&x.path);
                let ok = root.as_mut().is_some_and(|r| match x.kind {
                    Kind::Dir => matches!(
                        r.stat(&x.path),
                        Ok(Some(st)) if st.kind == Some(Kind::Dir)
                    ),
                    _ => r.read_link(&x.path).ok() == x.target,
                });
                if !ok {
                    problems += 1;
                    println!("MISSING  {}", display(&p));
                }
            }
        }
    }
    println!("verified {files} files in {versions} versions: {problems} problems");
    Ok(if problems > 0 { 1 } else { 0 })
}
