//! The store's own directory and its slots: checked with `lstat` (a symlink or anything
//! else the tool did not make is never entered or deleted through), made, renamed and
//! removed through the store's directory handle.

use std::path::{Path, PathBuf};

use engine::error::Error;
use engine::fs::Root;
use engine::names::display;

/// Whether `p` is a directory (a tree of the store); `false` if nothing is there. Anything
/// else — a symlink above all — is an error that names it: the store's trees are the
/// tool's alone, and something else standing in one's place is never entered or removed.
pub(crate) fn tree_at(p: &Path) -> Result<bool, Error> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(foreign(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", p, e)),
    }
}

fn foreign(p: &Path) -> Error {
    Error::entry(
        p,
        "is in the store but is not a directory this tool made (a symlink or a file); \
         it is left alone and versions are not saved until it is removed by hand",
    )
}

/// The store for a directory: `given` (`--store`, config `store`) made absolute, else
/// `default`. A store path that is a symlink, or not a directory, is refused before it
/// is resolved: versions are never written through a link.
pub fn resolve_store(
    given: Option<&Path>,
    default: impl FnOnce() -> PathBuf,
) -> Result<PathBuf, engine::Refusal> {
    let refuse = engine::Refusal::from;
    let store = match given {
        Some(s) => {
            let abs = std::path::absolute(s)
                .map_err(|e| engine::Refusal::new(format!("{}: {e}", display(s))))?;
            check_store(&abs).map_err(refuse)?;
            engine::run::home::absolute(&abs)?
        }
        None => default(),
    };
    check_store(&store).map_err(refuse)?;
    Ok(store)
}

/// Refuses a store path that is a symlink or not a directory (a missing one is fine:
/// it is made when first needed).
pub fn check_store(store: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(store) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(Error::entry(
            store,
            "the store is a symlink; refusing to write versions through it",
        )),
        Ok(_) => Err(Error::entry(store, "the store is not a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", store, e)),
    }
}

/// Removes a whole tree of the store (its directories may be read-only); its top-level
/// entries are shared out between threads, since a version holds an entry per file.
/// Every directory is opened through the store's own handle without following a symlink,
/// the tree itself included: a link planted in the store, or put in the store's place,
/// is never removed through.
pub fn remove_tree(path: &Path) -> Result<(), Error> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::entry(path, "cannot remove a root"));
    };
    if !tree_at(path)? {
        return Ok(());
    }
    let mut store = Root::open(parent)?;
    let tree = store.subroot(Path::new(name))?;
    let children = tree.try_clone()?.list(Path::new(""))?;
    engine::parallel::map(
        &children,
        || tree.try_clone(),
        |root, c| {
            if let Ok(root) = root {
                // A failure here shows again in the removal of the whole tree.
                let _ = root.remove(Path::new(c));
            }
        },
    );
    drop(tree);
    store.remove(Path::new(name))
}
