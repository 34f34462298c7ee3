use super::*;

/// A mirror's options: bytes from `src`, metadata from the source files, `stop` asked
/// between files and chunks.
fn mirror_options<'a>(src: &'a Path, stop: &'a (dyn Fn() -> bool + Sync)) -> ApplyOptions<'a> {
    ApplyOptions {
        src_root: src,
        direction: "test",
        meta_from_plan: false,
        verify_hash: false,
        attrs_from_source: false,
        stop,
        done: None,
        open_source: None,
        starting: None,
        halt_on_error: None,
    }
}

/// A source rewritten in place while it is copied, its mtime put back by the
/// writer, is not installed: its size, mtime and inode are what they were, but its
/// change time is not.
#[test]
fn a_source_rewritten_during_its_copy_with_its_mtime_put_back_is_not_installed() {
    rewritten_during_its_copy(false);
}

/// The same where the plan knows the bytes it wants (a restore, a two-way copy): the
/// copy is checked against the planned SHA-256 instead of a stat after the read.
#[test]
fn a_source_rewritten_during_a_copy_checked_against_its_planned_hash_is_not_installed() {
    rewritten_during_its_copy(true);
}

fn rewritten_during_its_copy(planned_hash: bool) {
    use std::io::{Seek, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let f = src.join("big");
    // Several copy buffers long, and old enough not to be read twice as "racy".
    std::fs::write(&f, vec![b'a'; 3 * 1024 * 1024]).unwrap();
    let old = filetime::FileTime::from_unix_time(1_600_000_000, 0);
    filetime::set_file_mtime(&f, old).unwrap();
    let scan = |p: &Path| crate::scan::scan(p, &crate::scan::ScanOptions::default()).unwrap();
    let (mut src_tree, dst_tree) = (scan(&src), scan(&dst));
    if planned_hash {
        let e = src_tree.entries.get_mut(Path::new("big")).unwrap();
        e.hash = Some(crate::hash::hash_file(&f).unwrap().0);
    }
    let plan = crate::plan::mirror::plan_mirror(
        &src_tree,
        &dst_tree,
        &crate::plan::mirror::MirrorOptions::default(),
    );
    let rewritten = AtomicBool::new(false);
    // Called between chunks of the copy: the third time, another program rewrites
    // the file's head, part of it read already, in place and sets its mtime back.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let stop = || {
        if calls.fetch_add(1, Ordering::SeqCst) == 2 && !rewritten.swap(true, Ordering::SeqCst) {
            let mut w = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
            w.seek(std::io::SeekFrom::Start(0)).unwrap();
            w.write_all(&vec![b'b'; 1024 * 1024]).unwrap();
            drop(w);
            filetime::set_file_mtime(&f, old).unwrap();
        }
        false
    };
    let mut root = Root::open(&dst).unwrap();
    let opts = ApplyOptions {
        verify_hash: planned_hash,
        ..mirror_options(&src, &stop)
    };
    let out = apply(&plan, &mut root, &opts);
    assert!(rewritten.load(Ordering::SeqCst), "the writer ran mid-copy");
    assert!(!dst.join("big").exists(), "a torn copy was installed");
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    let want = if planned_hash {
        "does not match the SHA-256 it was planned with"
    } else {
        "changed while being copied"
    };
    assert!(
        out.errors[0].to_string().contains(want),
        "{}",
        out.errors[0]
    );
}
use crate::tree::{MTime, Tree};

/// Runs end with their directory once they hold `len` items, and never pass `max`.
#[test]
fn runs_end_where_their_directory_ends() {
    let paths: Vec<PathBuf> = ["a/1", "a/2", "a/3", "b/1", "b/2", "b/3", "b/4", "b/5", "c"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let runs = |len, max| {
        let mut runs: Vec<Vec<&str>> = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            match runs.last_mut() {
                Some(run) if run_goes_on(run.len(), (len, max), &paths[i - 1], p) => {
                    run.push(p.to_str().unwrap())
                }
                _ => runs.push(vec![p.to_str().unwrap()]),
            }
        }
        runs
    };
    assert_eq!(
        runs(2, usize::MAX),
        [
            vec!["a/1", "a/2", "a/3"],
            vec!["b/1", "b/2", "b/3", "b/4", "b/5"],
            vec!["c"]
        ]
    );
    assert_eq!(
        runs(2, 4),
        [
            vec!["a/1", "a/2", "a/3"],
            vec!["b/1", "b/2", "b/3", "b/4"],
            vec!["b/5", "c"]
        ]
    );
    assert_eq!(runs(1, 1).len(), paths.len());
}

/// The bulk merge (many changes) and one insert per change give the same tree.
#[test]
fn tree_after_folds_in_many_or_few_changes_alike() {
    for n in [3usize, 500] {
        let mut before = Tree::default();
        for i in 0..300 {
            let e = Entry::file(i, 0o644, MTime::new(1, 0), None);
            before.entries.insert(format!("d{}/f{i}", i % 9).into(), e);
        }
        before
            .entries
            .insert("gone".into(), Entry::dir(0o755, MTime::new(1, 0)));
        before.entries.insert(
            "gone/x".into(),
            Entry::file(1, 0o644, MTime::new(1, 0), None),
        );
        let mut applied = Applied::default();
        applied.removed.push("gone".into());
        let mut expected = before.entries.clone();
        expected.remove(Path::new("gone"));
        expected.remove(Path::new("gone/x"));
        for i in (0..n).rev() {
            let p = PathBuf::from(format!("d{}/f{}", i % 11, i * 2));
            let e = Entry::file(i as u64 + 1000, 0o600, MTime::new(2, 0), None);
            expected.insert(p.clone(), e.clone());
            applied.written.push((p, e));
        }
        let after = tree_after(before, &mut applied);
        assert_eq!(after.entries, expected, "{n} changes");
    }
}

/// A move whose file changed on the destination after the scan leaves that file where
/// it is, with the directory that holds it, and copies the source's file instead.
#[test]
fn a_move_whose_file_changed_since_the_scan_copies_instead_and_keeps_it() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let old = filetime::FileTime::from_unix_time(1_600_000_000, 0);
    for (root, dir) in [(&src, "new"), (&dst, "old")] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        let f = root.join(dir).join("f");
        std::fs::write(&f, b"content").unwrap();
        filetime::set_file_mtime(&f, old).unwrap();
    }
    let scan = |p: &Path| {
        let mut t = crate::scan::scan(p, &crate::scan::ScanOptions::default()).unwrap();
        crate::scan::cache::hash_missing(p, &mut t);
        t
    };
    let (src_tree, dst_tree) = (scan(&src), scan(&dst));
    let mut plan = crate::plan::mirror::plan_mirror(
        &src_tree,
        &dst_tree,
        &crate::plan::mirror::MirrorOptions::default(),
    );
    assert_eq!(crate::plan::moves::find_moves(&mut plan, &dst_tree), 1);
    // Another program rewrites the destination's file after the scan.
    std::fs::write(dst.join("old/f"), b"edited meanwhile").unwrap();
    let mut root = Root::open(&dst).unwrap();
    let out = apply(&plan, &mut root, &mirror_options(&src, &|| false));
    assert_eq!(std::fs::read(dst.join("new/f")).unwrap(), b"content");
    assert_eq!(
        std::fs::read(dst.join("old/f")).unwrap(),
        b"edited meanwhile",
        "the edit is left where it was, its directory not removed"
    );
    assert!(out.failed.contains(Path::new("old/f")));
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert_eq!(
        out.counts.by_verb.get("copy"),
        Some(&1),
        "counted as what it did"
    );
    assert_eq!(out.counts.by_verb.get("move"), None);
}
