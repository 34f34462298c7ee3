//! `oneway` end to end, with the real binary: mirror semantics, refusals, safety rules.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::*;

mod additive;
mod faults;
mod filters;
mod mirror;

const OLD: i64 = 1_600_000_000;

/// A tree with every kind of entry and name the SPEC mentions.
pub(crate) fn rich_tree(root: &Path, big: usize) {
    let mut rng = Rng::new(7);
    write(&root.join("a/b/c/deep.txt"), "deep");
    fs::create_dir_all(root.join("empty/nested-empty")).unwrap();
    write(&root.join("zero"), "");
    write(&root.join("name with spaces.txt"), "spaces");
    write(&root.join("new\nline"), "newline");
    write(&raw(root, b"bad-\xff-utf8"), "not utf-8");
    write(&root.join("ünïcødé ✓.txt"), "unicode");
    write(&root.join("private"), "secret");
    chmod(&root.join("private"), 0o600);
    write(&root.join("tool.sh"), "#!/bin/sh\n");
    chmod(&root.join("tool.sh"), 0o755);
    symlink("a/b/c/deep.txt", root.join("rel-link")).unwrap();
    symlink("../nowhere/at/all", root.join("dangling")).unwrap();
    write_random(&root.join("big.bin"), big, &mut rng);
    for p in [
        "a/b/c/deep.txt",
        "zero",
        "name with spaces.txt",
        "private",
        "tool.sh",
        "big.bin",
        "rel-link",
        "dangling",
        "new\nline",
        "ünïcødé ✓.txt",
        "a/b/c",
        "a/b",
        "a",
        "empty/nested-empty",
        "empty",
    ] {
        set_mtime(&root.join(p), OLD, 123_456_789);
    }
    set_mtime(&raw(root, b"bad-\xff-utf8"), OLD + 5, 0);
    set_mtime(root, OLD, 1);
}

pub(crate) fn wait_for(path: &Path, needle: &str, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub(crate) fn sigint(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
}

/// Mode bits of `p` (not following a symlink).
pub(crate) fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}
