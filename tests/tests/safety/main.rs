//! The safety and security rules a fault matrix found broken: a symlink planted in a
//! store, an unmounted SOURCE, setuid files mirrored as root, a sync state that cannot be
//! read, and the other holes each test names.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use integration_tests::*;

mod disks;
mod first_sync;
mod guards;
mod metadata;
mod store;

/// The name of a versioned directory's history in the store (the folder that holds its
/// `versions/`).
pub(crate) fn version_name(store: &Path) -> String {
    fs::read_dir(store)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().join("versions").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a history in the store")
}

/// One `--once` pass of `tool` on `x` and `y`, run as the unprivileged user `nobody`.
pub(crate) fn pass_as_nobody(env: &Env, tool: &str, x: &Path, y: &Path) -> Run {
    Run(unprivileged(env, tool)
        .args([x, y])
        .arg("--once")
        .output()
        .unwrap())
}

/// `recovery restore DIR --to TO` with `extra` arguments.
pub(crate) fn restore_to(env: &Env, dir: &Path, to: &Path, extra: &[&OsStr]) -> Run {
    let mut args = vec![
        OsStr::new("restore"),
        dir.as_os_str(),
        OsStr::new("--to"),
        to.as_os_str(),
    ];
    args.extend(extra);
    env.run("recovery", &args)
}

/// A directory someone else owns, with files the tool must never touch.
pub(crate) fn victim(env: &Env) -> PathBuf {
    let v = env.path("victim");
    write(&v.join("precious.txt"), "keep me");
    write(&v.join("sub/deep.txt"), "keep me too");
    v
}

pub(crate) fn assert_victim_intact(v: &Path) {
    assert_eq!(fs::read(v.join("precious.txt")).unwrap(), b"keep me");
    assert_eq!(fs::read(v.join("sub/deep.txt")).unwrap(), b"keep me too");
    assert_eq!(
        fs::read_dir(v).unwrap().count(),
        2,
        "nothing added or removed"
    );
}
