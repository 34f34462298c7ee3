//! What a mirror pass makes of SOURCE in BACKUP: semantics, summaries, options.

use std::fs;
use std::os::unix::fs::symlink;

use integration_tests::*;

use super::*;

#[test]
fn round_trip_copies_everything_and_second_pass_does_nothing() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    rich_tree(&src, 101 * 1024 * 1024);
    fs::create_dir(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    assert_same_tree(&src, &dst);

    let second = env.oneway(&src, &dst, &[]);
    second.expect(0);
    let out = second.stdout();
    assert!(out.contains("nothing to do"), "{out}");
    second.expect_hashed_nothing();
    assert!(out.contains("0 bytes copied"), "{out}");
    assert_same_tree(&src, &dst);
}

#[test]
fn extras_in_backup_are_removed_but_versions_dir_is_kept() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("keep.txt"), "k");
    write(&dst.join("extra.txt"), "x");
    write(&dst.join("extra-dir/inner/f"), "x");
    write(&dst.join("__versions__/mine"), "store stays");
    env.oneway(&src, &dst, &["--no-versions", "--max-delete", "100"])
        .expect(0);
    assert!(!dst.join("extra.txt").exists());
    assert!(!dst.join("extra-dir").exists());
    assert_eq!(
        fs::read_to_string(dst.join("__versions__/mine")).unwrap(),
        "store stays"
    );
    assert_same_tree(&src, &dst);
}

#[test]
fn type_changes_are_mirrored() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("f2d"), "file");
    fs::create_dir_all(src.join("d2f/sub")).unwrap();
    write(&src.join("d2f/sub/x"), "x");
    write(&src.join("f2l"), "file");
    symlink("target", src.join("l2d")).unwrap();
    fs::create_dir(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);

    fs::remove_file(src.join("f2d")).unwrap();
    write(&src.join("f2d/inside"), "now a dir");
    fs::remove_dir_all(src.join("d2f")).unwrap();
    write(&src.join("d2f"), "now a file");
    fs::remove_file(src.join("f2l")).unwrap();
    symlink("f2d/inside", src.join("f2l")).unwrap();
    fs::remove_file(src.join("l2d")).unwrap();
    fs::create_dir(src.join("l2d")).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    assert_same_tree(&src, &dst);
}

#[test]
fn dry_run_changes_nothing_anywhere() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a"), "one");
    fs::create_dir(&dst).unwrap();
    let log = env.path("pass.log");
    env.oneway(&src, &dst, &["--log", log.to_str().unwrap()])
        .expect(0);
    write(&src.join("a"), "two, longer");
    write(&src.join("b"), "new");
    write(&dst.join("extra"), "x");
    let before_dst = snapshot(&dst);
    let before_store = snapshot(&dst.join("__versions__"));
    let before_home = snapshot(&env.home());
    let before_log = fs::read(&log).unwrap();

    let run = env.oneway(&src, &dst, &["--dry-run", "--log", log.to_str().unwrap()]);
    run.expect(0);
    let out = run.stdout();
    for what in ["would replace", "would copy", "would remove"] {
        assert!(out.contains(what), "dry run does not print {what:?}: {out}");
    }
    assert_eq!(snapshot(&dst), before_dst);
    assert_eq!(snapshot(&dst.join("__versions__")), before_store);
    assert_eq!(snapshot(&env.home()), before_home);
    assert_eq!(fs::read(&log).unwrap(), before_log);
}

#[test]
fn summary_directory_sha256_matches_coreutils() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a b/c.txt"), "c");
    write(&src.join("ünï/d"), "d");
    write(&src.join("a-b"), "sorted between a b and a/b");
    write(&src.join("a/b"), "x");
    write(&src.join("e"), "");
    symlink("e", src.join("link-not-counted")).unwrap();
    fs::create_dir(&dst).unwrap();
    let run = env.oneway(&src, &dst, &[]);
    run.expect(0);
    let want = coreutils_dir_sha(&src);
    assert_eq!(run.value_after("SOURCE sha256 ").unwrap(), want);
    assert_eq!(run.value_after("BACKUP sha256 ").unwrap(), want);
}

#[test]
fn unchanged_passes_report_the_same_directory_sha256_and_changes_a_new_one() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    for (name, body) in [("a", "one"), ("d/b", "two"), ("d/c", "three")] {
        write(&src.join(name), body);
        // Settled mtimes: the stat cache keeps these files.
        set_mtime(&src.join(name), 1_600_000_000, 0);
    }
    fs::create_dir(&dst).unwrap();
    let sha = |run: &Run, label: &str| run.value_after(label).unwrap();
    let first = env.oneway(&src, &dst, &[]);
    first.expect(0);
    let want = coreutils_dir_sha(&src);
    assert_eq!(sha(&first, "SOURCE sha256 "), want);
    for _ in 0..2 {
        let again = env.oneway(&src, &dst, &[]);
        again.expect(0);
        assert_eq!(sha(&again, "SOURCE sha256 "), want);
        assert_eq!(sha(&again, "BACKUP sha256 "), want);
        assert!(!again.all().contains("new version"), "{}", again.all());
    }
    // BACKUP changed by hand: its cache no longer holds the tree it sees.
    fs::remove_file(dst.join("d/b")).unwrap();
    let repaired = env.oneway(&src, &dst, &[]);
    repaired.expect(0);
    assert_eq!(sha(&repaired, "BACKUP sha256 "), want);
    // SOURCE changed: a new directory SHA-256 and a new version.
    write(&src.join("d/c"), "three, edited");
    set_mtime(&src.join("d/c"), 1_600_000_100, 0);
    let changed = env.oneway(&src, &dst, &[]);
    changed.expect(0);
    let now = coreutils_dir_sha(&src);
    assert_ne!(now, want);
    assert_eq!(sha(&changed, "SOURCE sha256 "), now);
    assert_eq!(sha(&changed, "BACKUP sha256 "), now);
    assert!(changed.all().contains("new version"), "{}", changed.all());
    let after = env.oneway(&src, &dst, &[]);
    assert_eq!(sha(&after, "SOURCE sha256 "), now);
    assert_eq!(sha(&after, "BACKUP sha256 "), now);
}

#[test]
fn excluded_paths_are_not_copied_and_not_deleted() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("keep.txt"), "k");
    write(&src.join("x/skip.tmp"), "t");
    write(&src.join("cache/big"), "c");
    write(&dst.join("mine.tmp"), "backup's own");
    env.oneway(&src, &dst, &["--exclude", "*.tmp", "--exclude", "cache/"])
        .expect(0);
    assert!(dst.join("keep.txt").exists());
    assert!(!dst.join("x/skip.tmp").exists());
    assert!(!dst.join("cache").exists());
    assert!(
        dst.join("mine.tmp").exists(),
        "an excluded file in BACKUP was deleted"
    );
}

#[test]
fn checksum_repairs_a_backup_file_with_same_size_and_mtime() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("f"), "original");
    set_mtime(&src.join("f"), OLD, 0);
    fs::create_dir(&dst).unwrap();
    env.oneway(&src, &dst, &["--no-versions"]).expect(0);
    // Bit rot: same size, same mtime, different bytes, written in place.
    fs::write(dst.join("f"), "0riginal").unwrap();
    set_mtime(&dst.join("f"), OLD, 0);
    env.oneway(&src, &dst, &["--no-versions", "--checksum"])
        .expect(0);
    assert_eq!(fs::read_to_string(dst.join("f")).unwrap(), "original");
}

#[test]
fn backup_inside_source_is_left_out_of_the_scan() {
    let env = Env::new();
    let src = env.path("src");
    let dst = src.join("backup");
    write(&src.join("a"), "a");
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    env.oneway(&src, &dst, &[]).expect(0);
    assert!(dst.join("a").exists());
    assert!(
        !dst.join("backup").exists(),
        "BACKUP was copied into itself"
    );
}

#[test]
fn special_files_are_skipped_with_a_warning() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a"), "a");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        src.join("pipe"),
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    fs::create_dir(&dst).unwrap();
    let run = env.oneway(&src, &dst, &[]);
    run.expect(0);
    assert!(run.stderr().contains("pipe"), "{}", run.all());
    assert!(!dst.join("pipe").exists());
    assert!(dst.join("a").exists());
    // The directory SHA-256 is over regular files: a fifo leaves SOURCE's whole (it
    // said "incomplete"), the coreutils pipeline's, at this pass and the next.
    let sha = coreutils_dir_sha(&src);
    for run in [run, env.oneway(&src, &dst, &[])] {
        let out = run.all();
        assert!(out.contains(&format!("SOURCE sha256 {sha}")), "{out}");
        assert!(out.contains(&format!("BACKUP sha256 {sha}")), "{out}");
    }
    // Special files in BACKUP are extras like any other: removed, or replaced.
    for name in ["stray-fifo", "a"] {
        let p = dst.join(name);
        let _ = fs::remove_file(&p);
        rustix::fs::mkfifoat(rustix::fs::CWD, &p, rustix::fs::Mode::from_raw_mode(0o644)).unwrap();
    }
    env.oneway(&src, &dst, &[]).expect(0);
    assert!(!dst.join("stray-fifo").exists());
    assert_eq!(fs::read_to_string(dst.join("a")).unwrap(), "a");
}

#[test]
fn coarse_destination_timestamps_do_not_cause_recopies() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("f"), "content");
    set_mtime(&src.join("f"), OLD, 987_654_321);
    fs::create_dir(&dst).unwrap();
    env.oneway(&src, &dst, &["--no-versions"]).expect(0);
    // What a FAT drive keeps: even seconds, here rounded up (OLD is even): 1.01 s off,
    // more than any precision explains.
    set_mtime(&dst.join("f"), OLD + 2, 0);
    let without = env.oneway(&src, &dst, &["--no-versions", "--dry-run"]);
    without.expect(0);
    assert!(
        !without.stdout().contains("nothing to do"),
        "without a window this is a difference: {}",
        without.stdout()
    );
    let run = env.oneway(&src, &dst, &["--no-versions", "--modify-window", "2"]);
    run.expect(0);
    assert!(run.stdout().contains("nothing to do"), "{}", run.stdout());
}

#[test]
fn version_flag_and_help_work() {
    let env = Env::new();
    let v = env.run("oneway", ["--version"]);
    v.expect(0);
    assert!(v.stdout().starts_with("oneway "));
    let h = env.run("oneway", ["--help"]);
    h.expect(0);
    assert!(h.stdout().contains("Examples"));
}
