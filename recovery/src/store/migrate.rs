//! Migration of a store of the earlier layout (`<name>_1/`, `<name>_0/`: trees of hard
//! links with a manifest each) into the directory's history, on first use and
//! crash-safely: the versions are recorded (once: a marker says so), the content no live
//! file holds is moved into the objects, then the old trees go.

use std::path::{Path, PathBuf};

use engine::error::Error;
use engine::fs::Root;
use engine::names::display;
use engine::tree::Kind;

use super::VersionedDir;
use crate::history::{self, VersionHead, Why};
use crate::manifest::Manifest;
use crate::slots::{remove_tree, tree_at};

impl VersionedDir {
    /// The trees of the earlier layout that hold a version (older first).
    fn legacy_versions(&self) -> Result<Vec<(PathBuf, Manifest)>, Error> {
        let mut out = Vec::new();
        for suffix in ["_0", "_1", ".new"] {
            let slot = self.slot(suffix);
            if !tree_at(&slot)? {
                continue;
            }
            match Manifest::load(&slot) {
                Ok(m) => out.push((slot, m)),
                Err(e) => log::warn!("{}: not migrated: {e}", display(&slot)),
            }
        }
        out.sort_by(|a, b| a.1.head.made.cmp(&b.1.head.made));
        Ok(out)
    }

    /// Migrates the earlier layout (`<name>_1/`, `<name>_0/`: trees of hard links):
    /// its versions are recorded in the history (once: a marker says so), then each
    /// file the live directory no longer holds is moved (or, still shared with some
    /// other file, copied) into the objects, then the old trees go. Run again after a
    /// kill, it goes on where it stopped. A tree whose manifest cannot be read stays.
    pub(super) fn migrate(&self) -> Result<(), Error> {
        let slots = [".build", ".spare", ".drop"].map(|s| self.slot(s));
        let versions = self.legacy_versions()?;
        if versions.is_empty() {
            for s in &slots {
                if tree_at(s)? {
                    remove_tree(s)?;
                }
            }
            return Ok(());
        }
        let history = self.history();
        let mut root = history.open_made()?;
        let marker = Path::new("migrated");
        if root.stat(marker)?.is_none() {
            let known: Vec<VersionHead> = history.list()?.into_iter().map(|l| l.head).collect();
            for (slot, m) in &versions {
                if known.iter().any(|h| {
                    h.why == Why::Migrated
                        && h.made == m.head.made
                        && h.dir_sha256 == m.head.dir_sha256
                }) {
                    continue;
                }
                let entries = || m.entries.iter().map(|e| e.as_ref());
                let head = VersionHead {
                    id: 0,
                    dir: self.dir.clone(),
                    made: m.head.made.clone(),
                    why: Why::Migrated,
                    dir_sha256: m.head.dir_sha256.clone(),
                    meta_sha256: history::meta_digest(
                        entries(),
                        (m.head.root_mode, m.head.root_mtime),
                    ),
                    files: m.head.files,
                    bytes: m.head.bytes,
                    root_mode: m.head.root_mode,
                    root_mtime: m.head.root_mtime,
                    incomplete: m.head.incomplete,
                    added: 0,
                    changed: 0,
                    removed: 0,
                };
                let id = history.record(head, entries)?;
                log::info!(
                    "migrated {} to version {id} of the store's new layout",
                    display(slot)
                );
            }
            root.write_atomic_with(marker, |_| Ok(()))?;
        }
        let mut store = Root::open(&self.store)?;
        let mut lives: Vec<Root> = self
            .live_dirs()
            .iter()
            .filter_map(|d| Root::open(d).ok())
            .collect();
        for (slot, m) in &versions {
            let Some(slot_name) = slot.file_name().map(PathBuf::from) else {
                continue;
            };
            for e in m.entries.iter().filter(|e| e.kind == Kind::File) {
                let Some(sha) = e.sha256 else { continue };
                let obj = Path::new(&self.name).join(history::object_path(&sha));
                let old = slot_name.join(&e.path);
                if store.stat(&obj)?.is_some() {
                    continue;
                }
                let Some(st) = store.stat(&old)? else {
                    continue;
                };
                // The very file a live directory holds: its content is live, not kept.
                let live = lives.iter_mut().any(|r| {
                    matches!(r.stat(&e.path), Ok(Some(l)) if l.ino == st.ino && l.dev == st.dev)
                });
                if live {
                    continue;
                }
                store.mkdir_unfinished(obj.parent().expect("BUG: an object has a folder"))?;
                if st.nlink == 1 {
                    store.rename(&old, &obj)?;
                } else {
                    let mut src = store.try_clone()?;
                    let mut hist = history.open_made()?;
                    if let Err(err) = history::copy_verified(
                        &mut src,
                        &old,
                        &mut hist,
                        &history::object_path(&sha),
                        &sha,
                    ) {
                        log::warn!("{}: not migrated: {err}", display(&self.store.join(&old)));
                    }
                }
            }
        }
        store.sync_fs()?;
        for (slot, _) in &versions {
            remove_tree(slot)?;
        }
        for s in &slots {
            if tree_at(s)? {
                remove_tree(s)?;
            }
        }
        root.remove(marker)?;
        Ok(())
    }
}
