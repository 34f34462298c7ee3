//! `oneway` end to end, with the real binary: mirror semantics, refusals, safety rules.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::*;

const OLD: i64 = 1_600_000_000;

/// A tree with every kind of entry and name the SPEC mentions.
fn rich_tree(root: &Path, big: usize) {
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
fn killed_repeatedly_never_leaves_a_partial_file_and_converges() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    let mut rng = Rng::new(42);
    make_many(&src, 300, 200_000, &mut rng);
    write_random(&src.join("large/one.bin"), 30 << 20, &mut rng);
    fs::create_dir(&dst).unwrap();
    // Every content each path has ever had: a file at a final path must be one of them.
    let mut seen: std::collections::BTreeMap<std::path::PathBuf, Vec<String>> = Default::default();
    let mut killed = 0;
    for round in 0..10 {
        if round > 0 {
            let files: Vec<_> = snapshot(&src)
                .into_keys()
                .filter(|p| p.extension().is_some())
                .collect();
            for _ in 0..40 {
                let p = &files[rng.below(files.len() as u64) as usize];
                let len = rng.below(300_000) as usize;
                write_random(&src.join(p), len, &mut rng);
            }
            write_random(&src.join("large/one.bin"), (20 << 20) + round, &mut rng);
        }
        for (p, snap) in snapshot(&src) {
            if let Snap::File { sha256, .. } = snap {
                seen.entry(p).or_default().push(sha256);
            }
        }
        let mut cmd = env.cmd("oneway");
        cmd.arg(&src).arg(&dst).arg("--once");
        if kill_after(cmd, Duration::from_millis(10 + rng.below(150))) {
            killed += 1;
        }
        let temps = temp_leftovers(&dst);
        for (p, snap) in snapshot(&dst) {
            if let Snap::File { sha256, .. } = snap {
                if temps.contains(&p) {
                    continue;
                }
                let known = seen
                    .get(&p)
                    .unwrap_or_else(|| panic!("round {round}: unexpected {}", p.display()));
                assert!(
                    known.contains(&sha256),
                    "round {round}: {} is partial or foreign",
                    p.display()
                );
            }
        }
    }
    assert!(
        killed >= 3,
        "only {killed} of 10 passes were cut short; the test did not test kills"
    );
    env.oneway(&src, &dst, &[]).expect(0);
    assert_same_tree(&src, &dst);
    assert!(
        temp_leftovers(&dst).is_empty(),
        "{:?}",
        temp_leftovers(&dst)
    );
    env.run("recovery", ["verify"]).expect(0);
}

#[test]
fn symlink_in_backup_pointing_outside_is_never_written_through() {
    let env = Env::new();
    let (src, dst, outside) = (env.path("src"), env.path("dst"), env.path("outside"));
    write(&src.join("d/file"), "inside");
    write(&src.join("f"), "real file");
    fs::create_dir_all(&outside).unwrap();
    write(&outside.join("victim"), "untouched");
    fs::create_dir(&dst).unwrap();
    symlink(&outside, dst.join("d")).unwrap();
    symlink(outside.join("victim"), dst.join("f")).unwrap();
    let before = snapshot(&outside);
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(
        snapshot(&outside),
        before,
        "something was written outside BACKUP"
    );
    assert!(fs::symlink_metadata(dst.join("d")).unwrap().is_dir());
    assert_same_tree(&src, &dst);
}

#[test]
fn unreadable_file_is_logged_the_rest_syncs_and_exit_is_1() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a.txt"), "a");
    write(&src.join("secret.txt"), "no");
    write(&src.join("z/b.txt"), "b");
    fs::create_dir(&dst).unwrap();
    chmod(&src.join("secret.txt"), 0o000);
    env.hand_to_nobody();
    let log = env.path("run.log");
    let out = unprivileged(&env, "oneway")
        .arg(&src)
        .arg(&dst)
        .args(["--once", "--log"])
        .arg(&log)
        .output()
        .unwrap();
    let run = Run(out);
    run.expect(1);
    assert!(dst.join("a.txt").exists() && dst.join("z/b.txt").exists());
    assert!(!dst.join("secret.txt").exists());
    let logged = fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("secret.txt") && logged.contains("Permission denied"),
        "log does not name the file and reason: {logged}"
    );
}

#[test]
fn unreadable_subdirectory_deletes_nothing_under_it() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("sub/kept.txt"), "k");
    write(&src.join("other.txt"), "o");
    fs::create_dir(&dst).unwrap();
    env.hand_to_nobody();
    let run_once = || {
        Run(unprivileged(&env, "oneway")
            .arg(&src)
            .arg(&dst)
            .arg("--once")
            .output()
            .unwrap())
    };
    run_once().expect(0);
    chmod(&src.join("sub"), 0o000);
    write(&src.join("new.txt"), "n");
    give_to_nobody(&src.join("new.txt"));
    let run = run_once();
    run.expect(1);
    assert!(
        dst.join("sub/kept.txt").exists(),
        "a file under an unreadable dir was deleted"
    );
    assert!(dst.join("new.txt").exists());
    chmod(&src.join("sub"), 0o755);
}

#[test]
fn refusals_exit_2_and_change_nothing() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a"), "a");
    write(&dst.join("old"), "old");
    let file = env.path("a-file");
    write(&file, "x");
    let bad_cfg = env.path("bad.json");
    write(&bad_cfg, r#"{"interval": 10, "colour": "blue"}"#);
    let wrong_type = env.path("wrong.json");
    write(&wrong_type, r#"{"interval": "often"}"#);
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec![
                env.path("missing").into(),
                dst.clone().into(),
                "--once".into(),
            ],
            "missing",
        ),
        (
            vec![
                src.clone().into(),
                env.path("unmounted").into(),
                "--once".into(),
            ],
            "create it once",
        ),
        (
            vec![src.clone().into(), file.clone().into(), "--once".into()],
            "not a directory",
        ),
        (
            vec![dst.clone().into(), dst.clone().into(), "--once".into()],
            "same",
        ),
        (
            vec![
                dst.join("inner").into(),
                dst.clone().into(),
                "--once".into(),
            ],
            "inside",
        ),
        (
            vec![
                src.clone().into(),
                dst.clone().into(),
                "--once".into(),
                "--config".into(),
                bad_cfg.clone().into(),
            ],
            "colour",
        ),
        (
            vec![
                src.clone().into(),
                dst.clone().into(),
                "--once".into(),
                "--config".into(),
                wrong_type.clone().into(),
            ],
            "interval",
        ),
        (
            vec![
                src.clone().into(),
                dst.clone().into(),
                "--interval".into(),
                "soon".into(),
            ],
            "interval",
        ),
        (
            vec![
                src.clone().into(),
                dst.clone().into(),
                "--no-such-flag".into(),
            ],
            "no-such-flag",
        ),
    ];
    fs::create_dir_all(dst.join("inner")).unwrap();
    let before_inner = snapshot(&dst);
    for (args, needle) in cases {
        let run = env.run("oneway", &args);
        assert_eq!(run.code(), 2, "{args:?} → {}", run.all());
        assert!(
            run.all().contains(needle),
            "{args:?}: message lacks {needle:?}: {}",
            run.all()
        );
        assert_eq!(snapshot(&dst), before_inner, "{args:?} changed BACKUP");
    }
}

fn wait_for(path: &Path, needle: &str, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn sigint(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
}

#[test]
fn sigint_between_passes_exits_0_with_the_total_line() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a"), "a");
    fs::create_dir(&dst).unwrap();
    let log = env.path("loop.log");
    let child = env
        .cmd("oneway")
        .arg(&src)
        .arg(&dst)
        .args(["--interval", "300", "--log"])
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(&log, "pass 1", Duration::from_secs(30)),
        "first pass never ended"
    );
    sigint(&child);
    let out = Run(child.wait_with_output().unwrap());
    out.expect(0);
    assert!(fs::read_to_string(&log)
        .unwrap()
        .contains("operations in total"));
}

#[test]
fn sigint_mid_pass_exits_130_without_partial_files() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    let mut rng = Rng::new(3);
    make_many(&src, 400, 100_000, &mut rng);
    write_random(&src.join("zz-large.bin"), 200 << 20, &mut rng);
    fs::create_dir(&dst).unwrap();
    let log = env.path("pass.log");
    let child = env
        .cmd("oneway")
        .arg(&src)
        .arg(&dst)
        .args(["--once", "--log"])
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(&log, "copy", Duration::from_secs(30)));
    sigint(&child);
    let out = Run(child.wait_with_output().unwrap());
    out.expect(130);
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains("interrupted"), "{logged}");
    let big = dst.join("zz-large.bin");
    if big.exists() {
        assert_eq!(sha256_file(&big), sha256_file(&src.join("zz-large.bin")));
    }
    assert!(
        temp_leftovers(&dst).is_empty(),
        "the file in flight was not rolled back"
    );
    env.oneway(&src, &dst, &[]).expect(0);
    assert_same_tree(&src, &dst);
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

#[test]
fn read_only_directories_are_mirrored_and_still_updated_as_a_user() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("ro/first"), "1");
    fs::create_dir(&dst).unwrap();
    env.hand_to_nobody();
    chmod(&src.join("ro"), 0o555);
    let run_once = || {
        Run(unprivileged(&env, "oneway")
            .arg(&src)
            .arg(&dst)
            .args(["--once", "--no-versions"])
            .output()
            .unwrap())
    };
    run_once().expect(0);
    // The user adds a file to the read-only directory (briefly making it writable).
    chmod(&src.join("ro"), 0o755);
    write(&src.join("ro/second"), "2");
    give_to_nobody(&src.join("ro/second"));
    chmod(&src.join("ro"), 0o555);
    run_once().expect(0);
    assert_eq!(fs::read_to_string(dst.join("ro/second")).unwrap(), "2");
    assert_same_tree(&src, &dst);
    fs::remove_file(src.join("ro/first")).unwrap_or_else(|_| {
        chmod(&src.join("ro"), 0o755);
        fs::remove_file(src.join("ro/first")).unwrap();
        chmod(&src.join("ro"), 0o555);
    });
    run_once().expect(0);
    assert!(!dst.join("ro/first").exists());
    assert_same_tree(&src, &dst);
}

#[test]
fn a_rewrite_within_the_same_timestamp_tick_is_not_missed() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    fs::create_dir(&dst).unwrap();
    let f = src.join("f");
    write(&f, "first version");
    // An mtime within the tick the pass runs in. The kernel would give a rewrite made
    // in that tick the same mtime; here it is forged, a day ahead, so that it is still
    // "now or later" when each pass runs, however long a loaded machine takes between
    // the steps (a minute was not always enough).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let tick = (now.as_secs() as i64 + 86_400, 123_000_000);
    set_mtime(&f, tick.0, tick.1);
    env.oneway(&src, &dst, &["--no-versions"]).expect(0);
    // Rewritten in the same tick: same size, same mtime, other bytes.
    write(&f, "other version");
    set_mtime(&f, tick.0, tick.1);
    env.oneway(&src, &dst, &["--no-versions"]).expect(0);
    assert_eq!(fs::read_to_string(dst.join("f")).unwrap(), "other version");
}

/// Mode bits of `p` (not following a symlink).
fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn copies_get_their_exact_modes_under_a_default_acl() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("f"), "f");
    chmod(&src.join("f"), 0o644);
    write(&src.join("sub/g"), "g");
    chmod(&src.join("sub/g"), 0o664);
    fs::create_dir(&dst).unwrap();
    // New files in BACKUP get their permissions from this default ACL, not the umask
    // (CI installs `acl` for setfacl).
    let acl = std::process::Command::new("setfacl")
        .args(["-d", "-m", "u::rw,g::r,o::-,m::r"])
        .arg(&dst)
        .status()
        .expect("setfacl (package acl) is needed for this test");
    assert!(acl.success(), "setfacl failed");
    write(&dst.join("probe"), "p");
    assert_eq!(
        mode_of(&dst.join("probe")),
        0o640,
        "the default ACL does not apply here; the test would test nothing"
    );
    fs::remove_file(dst.join("probe")).unwrap();

    env.oneway(&src, &dst, &["--no-versions"]).expect(0);
    assert_eq!(mode_of(&dst.join("f")), 0o644);
    assert_eq!(mode_of(&dst.join("sub/g")), 0o664);
}

#[test]
fn a_file_rewritten_while_it_is_copied_is_never_installed_torn() {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    fs::create_dir(&dst).unwrap();
    const LEN: usize = 8 << 20;
    write(&src.join("big"), vec![0u8; LEN]);
    write(&src.join("calm"), "calm");
    let stop = AtomicBool::new(false);
    /// Stops the writer however the scope ends (a failed assertion included).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let mut outcomes = Vec::new();
    std::thread::scope(|s| {
        let _stop_writer = StopOnDrop(&stop);
        // Rewrites the whole file in place, each time with one byte value: a copy made
        // from one consistent state holds a single value throughout.
        s.spawn(|| {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(src.join("big"))
                .unwrap();
            let mut k = 1u8;
            while !stop.load(Ordering::Relaxed) {
                f.write_all_at(&vec![k; LEN], 0).unwrap();
                k = k.wrapping_add(1).max(1);
            }
        });
        for _ in 0..4 {
            let run = env.oneway(&src, &dst, &["--no-versions"]);
            assert!(
                [0, 1].contains(&run.code()),
                "exit {}: {}",
                run.code(),
                run.all()
            );
            outcomes.push(run.code());
            assert_eq!(fs::read(dst.join("calm")).unwrap(), b"calm");
            if let Ok(copy) = fs::read(dst.join("big")) {
                assert_eq!(copy.len(), LEN);
                assert!(
                    copy.iter().all(|&b| b == copy[0]),
                    "BACKUP/big mixes two states of the file"
                );
            }
            assert!(temp_leftovers(&dst).is_empty());
        }
    });
    assert!(
        outcomes.contains(&1),
        "no pass saw the file change while copying it: the test tested nothing ({outcomes:?})"
    );
    env.oneway(&src, &dst, &["--no-versions"]).expect(0);
    assert_eq!(
        fs::read(dst.join("big")).unwrap(),
        fs::read(src.join("big")).unwrap()
    );
}

#[test]
fn runs_alike_whatever_allocator_settings_the_user_has() {
    // The binaries re-execute themselves once with a fixed mmap threshold for glibc's
    // malloc (engine::run::alloc_tune); a user's own settings are kept or left to win.
    for tunables in [
        None,
        Some("glibc.malloc.check=0"),
        Some("glibc.malloc.mmap_threshold=65536"),
    ] {
        let env = Env::new();
        let (src, dst) = (env.path("src"), env.path("dst"));
        write(&src.join("a/b"), "bytes");
        fs::create_dir(&dst).unwrap();
        let mut cmd = env.cmd("oneway");
        cmd.args([src.as_os_str(), dst.as_os_str(), "--once".as_ref()]);
        cmd.env_remove("TWOWAY_ALLOCATOR_SET");
        match tunables {
            Some(t) => cmd.env("GLIBC_TUNABLES", t),
            None => cmd.env_remove("GLIBC_TUNABLES"),
        };
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{tunables:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same_tree(&src, &dst);
    }
}

#[test]
fn random_rounds_of_edits_mirror_exactly_and_lose_nothing() {
    for seed in 11..=13u64 {
        let env = Env::new();
        let (src, dst) = (env.path("src"), env.path("dst"));
        write(&src.join("x.txt"), "first");
        write(&src.join("d_d/y.md"), "second");
        fs::create_dir_all(&dst).unwrap();
        let mut rng = Rng::new(seed);
        let mut serial = 0;
        let store = dst.join("__versions__");
        let all_of = |root: &Path| {
            let mut c: std::collections::BTreeSet<String> =
                files_of(root).into_iter().map(|(_, h)| h).collect();
            if store.exists() {
                c.extend(files_of(&store).into_iter().map(|(_, h)| h));
            }
            c
        };
        for round in 0..12 {
            if round > 0 {
                random_edits(&src, &mut rng, &mut serial);
                // Now and then someone edits the backup too: the pass undoes it, and
                // keeps what it replaces.
                if rng.below(4) == 0 {
                    random_edits(&dst, &mut rng, &mut serial);
                }
            }
            // What BACKUP holds now: a pass that replaces or deletes it keeps it in a
            // version (older versions may rotate out: the store keeps two).
            let before: std::collections::BTreeSet<String> =
                files_of(&dst).into_iter().map(|(_, h)| h).collect();
            let what = format!("seed {seed}, round {round}");
            // Small random trees lose most of their files in one round now and then.
            let run = env.oneway(&src, &dst, &["--max-delete", "100"]);
            assert_eq!(run.code(), 0, "{what}: {}", run.all());
            assert_same_tree(&src, &dst);
            let after = all_of(&dst);
            let lost: Vec<&String> = before.difference(&after).collect();
            assert!(lost.is_empty(), "{what}: lost {lost:?}");
            env.run("recovery", ["verify"]).expect(0);
        }
    }
}
