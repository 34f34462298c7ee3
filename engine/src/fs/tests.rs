//! The safe primitives against planted symlinks, escaping paths, interrupted writes
//! and shared inodes.

use super::limits::{open_file_limit, DESCRIPTORS};
use super::root::OPENAT2;
use super::*;
use crate::tree::{Kind, MTime};
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

#[test]
fn refuses_to_write_through_a_symlinked_parent() {
    let outside = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    symlink(outside.path(), root.path().join("link")).unwrap();
    let mut r = Root::open(root.path()).unwrap();
    let err = r.create_temp(Path::new("link/file")).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
}

#[test]
fn refuses_a_symlink_anywhere_on_a_deep_path_with_openat2_or_without() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("sub/deeper")).unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("d/e/f")).unwrap();
    symlink(outside.path(), root.path().join("d/link")).unwrap();
    symlink(outside.path(), root.path().join("d/e/f/g")).unwrap();
    for with_openat2 in [true, false] {
        OPENAT2.store(with_openat2, std::sync::atomic::Ordering::Relaxed);
        // A fresh root each time: nothing is cached, every level is opened.
        let mut r = Root::open(root.path()).unwrap();
        for bad in [
            "d/link/file",
            "d/link/sub/file",
            "d/link/sub/deeper/file",
            "d/e/f/g/file",
        ] {
            let err = r.create_temp(Path::new(bad)).unwrap_err();
            assert!(err.to_string().contains("symlink"), "{bad}: {err}");
        }
        let mut r = Root::open(root.path()).unwrap();
        r.mkdir(Path::new("d/e/f/h"), 0o755).unwrap();
        r.create_temp(Path::new("d/e/f/h/ok"))
            .unwrap()
            .commit()
            .unwrap();
        assert!(root.path().join("d/e/f/h/ok").is_file());
        std::fs::remove_dir_all(root.path().join("d/e/f/h")).unwrap();
    }
    OPENAT2.store(true, std::sync::atomic::Ordering::Relaxed);
    let written: Vec<_> = walk_files(outside.path());
    assert!(written.is_empty(), "written outside the root: {written:?}");
}

/// Every file under `dir`.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn refuses_paths_that_leave_the_root() {
    let root = tempfile::tempdir().unwrap();
    let mut r = Root::open(root.path()).unwrap();
    assert!(r.mkdir(Path::new("../escape"), 0o755).is_err());
    assert!(r.mkdir(Path::new("a/../../escape"), 0o755).is_err());
    assert!(r.create_temp(Path::new("/etc/passwd")).is_err());
    assert!(r.stat(Path::new("..")).is_err());
    assert!(!root.path().parent().unwrap().join("escape").exists());
    // Plain names split where the last one starts; other spellings of a path inside
    // the root still work.
    r.mkdir(Path::new("d"), 0o755).unwrap();
    r.mkdir(Path::new("d/e"), 0o755).unwrap();
    for p in ["d/e", "d//e", "d/./e", "d/e/"] {
        let st = r.stat(Path::new(p)).unwrap();
        assert!(st.is_some_and(|s| s.kind == Some(Kind::Dir)), "{p}");
    }
}

#[test]
fn temp_file_is_removed_unless_committed() {
    let root = tempfile::tempdir().unwrap();
    let mut r = Root::open(root.path()).unwrap();
    {
        let mut t = r.create_temp(Path::new("a")).unwrap();
        t.file_mut().write_all(b"partial").unwrap();
    }
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    // 0o666: more than the usual umask lets a new file have; the mode is set exactly.
    for (name, mode) in [("a", 0o640), ("b", 0o666)] {
        let (t, _, n, got) = r
            .write_temp(
                Path::new(name),
                &mut &b"hello"[..],
                (mode, MTime::new(1000, 5), crate::tree::Owner::UNKNOWN),
                &|| false,
                TempWrite {
                    durable: true,
                    new_file: false,
                    sparse: false,
                    xattrs_from: None,
                    blocks_of: None,
                },
            )
            .unwrap();
        assert_eq!(n, 5);
        t.commit().unwrap();
        let st = lstat(&root.path().join(name)).unwrap();
        assert_eq!((st.mode, st.mtime), (mode, MTime::new(1000, 5)));
        assert_eq!((got.ino, got.mode, got.mtime), (st.ino, st.mode, st.mtime));
    }
}

#[test]
fn a_new_file_never_replaces_one_that_appeared_meanwhile() {
    let root = tempfile::tempdir().unwrap();
    let mut r = Root::open(root.path()).unwrap();
    let (t, _, _, _) = r
        .write_temp(
            Path::new("a"),
            &mut &b"ours"[..],
            (0o644, MTime::new(1, 0), crate::tree::Owner::UNKNOWN),
            &|| false,
            TempWrite {
                durable: true,
                new_file: true,
                sparse: false,
                xattrs_from: None,
                blocks_of: None,
            },
        )
        .unwrap();
    std::fs::write(root.path().join("a"), b"someone else's").unwrap();
    assert!(t.commit_new().is_err());
    assert_eq!(
        std::fs::read(root.path().join("a")).unwrap(),
        b"someone else's"
    );
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        1,
        "temp file left"
    );
}

/// New files are written as unnamed files where the kernel lets a process link a file
/// by its descriptor (Linux 6.10 and later, or root), and behave as named ones do:
/// nothing is left of one that is not committed, one never replaces a file that
/// appeared meanwhile, and the committed file has its bytes, mode and mtime.
#[test]
fn new_files_are_unnamed_until_committed_and_behave_as_named_ones() {
    let root = tempfile::tempdir().unwrap();
    let mut r = Root::open(root.path()).unwrap();
    let mut write = |name: &str, bytes: &[u8]| {
        r.write_temp(
            Path::new(name),
            &mut &bytes[..],
            (0o640, MTime::new(1000, 5), crate::tree::Owner::UNKNOWN),
            &|| false,
            TempWrite {
                durable: false,
                new_file: true,
                sparse: false,
                xattrs_from: None,
                blocks_of: None,
            },
        )
        .unwrap()
    };
    let listing = |root: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // The first one of a process may be asked to take a name (it answers whether
    // unnamed files can be linked); the ones after it have none where they can.
    let (first, ..) = write("a", b"first");
    let (mut second, _, n, st) = write("b", b"second");
    assert_eq!(n, 6);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|x| x.parse::<u32>().unwrap_or(0));
    let kernel = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if kernel >= (6, 10) || rustix::process::geteuid().is_root() {
        assert!(second.is_unnamed(), "linkable unnamed files are used");
    }
    if second.is_unnamed() {
        assert_eq!(listing(root.path()).len(), usize::from(!first.is_unnamed()));
        second.close();
        assert!(
            second.is_unnamed(),
            "an unnamed file stays open until committed"
        );
    }
    first.commit_new().unwrap();
    second.commit_new().unwrap();
    assert_eq!(listing(root.path()), ["a", "b"]);
    assert_eq!(std::fs::read(root.path().join("b")).unwrap(), b"second");
    let got = lstat(&root.path().join("b")).unwrap();
    assert_eq!(
        (got.ino, got.mode, got.mtime),
        (st.ino, 0o640, MTime::new(1000, 5))
    );

    // Not committed: nothing is left.
    drop(write("c", b"dropped"));
    assert_eq!(listing(root.path()), ["a", "b"]);
    // Something appeared at the name meanwhile: it is kept, and nothing is left.
    let (late, ..) = write("d", b"ours");
    std::fs::write(root.path().join("d"), b"someone else's").unwrap();
    assert!(late.commit_new().is_err());
    assert_eq!(
        std::fs::read(root.path().join("d")).unwrap(),
        b"someone else's"
    );
    assert_eq!(listing(root.path()), ["a", "b", "d"]);
    // Committed over an existing file after all (the two-step path): it replaces it.
    let (over, ..) = write("d", b"ours again");
    over.commit().unwrap();
    assert_eq!(std::fs::read(root.path().join("d")).unwrap(), b"ours again");
    assert_eq!(listing(root.path()), ["a", "b", "d"]);
}

#[test]
fn shared_inode_is_not_changed_in_place() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a"), b"x").unwrap();
    std::fs::hard_link(root.path().join("a"), root.path().join("b")).unwrap();
    let mut r = Root::open(root.path()).unwrap();
    let meta = (0o600, MTime::new(5, 0), crate::tree::Owner::UNKNOWN);
    assert!(!r
        .set_file_meta_if_unshared(Path::new("a"), meta, None, 1)
        .unwrap());
    // Both names are the group that takes the change.
    assert!(r
        .set_file_meta_if_unshared(Path::new("a"), meta, None, 2)
        .unwrap());
    std::fs::hard_link(root.path().join("a"), root.path().join("c")).unwrap();
    assert!(!r
        .set_file_meta_if_unshared(Path::new("a"), meta, None, 2)
        .unwrap());
    std::fs::remove_file(root.path().join("b")).unwrap();
    std::fs::remove_file(root.path().join("c")).unwrap();
    assert!(r
        .set_file_meta_if_unshared(Path::new("a"), meta, None, 1)
        .unwrap());
}

#[test]
fn remove_does_not_follow_symlinks() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), b"x").unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("d")).unwrap();
    symlink(outside.path(), root.path().join("d/link")).unwrap();
    let mut r = Root::open(root.path()).unwrap();
    r.remove(Path::new("d")).unwrap();
    assert!(outside.path().join("keep").exists());
    assert!(!root.path().join("d").exists());
}

/// The descriptor table is grown up front to what a pass may hold (or to the open-file
/// limit), so that no thread waits for the kernel to grow it during a pass.
#[test]
fn the_descriptor_table_is_grown_up_front() {
    let fd_size = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    reserve_descriptors();
    let limit = open_file_limit();
    assert!(
        fd_size() >= limit.min(DESCRIPTORS),
        "FDSize {} after reserving, limit {limit}",
        fd_size()
    );
}

/// A root is never reached through a symlink, at its end or above it: a store's tree
/// opened by path stays the store's even if its directory is swapped for a link.
#[test]
fn a_root_under_a_symlink_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real");
    std::fs::create_dir_all(real.join("tree")).unwrap();
    std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
    assert!(Root::open(&real.join("tree")).is_ok());
    for through in [d.path().join("link"), d.path().join("link/tree")] {
        let e = Root::open(&through).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{}: {e}", through.display());
    }
}
