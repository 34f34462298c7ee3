//! Guards before a pass changes anything, and what it refuses to record.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use integration_tests::*;

#[test]
fn an_empty_source_does_not_empty_backup_without_max_delete() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    for i in 0..10 {
        write(&src.join(format!("photos/{i}.jpg")), format!("photo {i}"));
    }
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    // The drive holding SOURCE is not mounted: its mount point is an empty directory.
    fs::remove_dir_all(&src).unwrap();
    fs::create_dir_all(&src).unwrap();
    let run = env.oneway(&src, &dst, &[]);
    run.expect(2);
    let err = run.stderr();
    assert!(err.contains("10 of the 10 files"), "{err}");
    assert!(err.contains("--max-delete 100"), "{err}");
    assert!(err.lines().count() == 1, "one line: {err}");
    assert_eq!(fs::read_dir(dst.join("photos")).unwrap().count(), 10);

    // Under the limit, and with the limit raised, the deletions go through.
    for i in 0..4 {
        write(&src.join(format!("photos/{i}.jpg")), format!("photo {i}"));
    }
    env.oneway(&src, &dst, &["--max-delete", "70"]).expect(0);
    assert_eq!(fs::read_dir(dst.join("photos")).unwrap().count(), 4);
    fs::remove_dir_all(src.join("photos")).unwrap();
    env.oneway(&src, &dst, &[]).expect(2);
    let cfg = env.path("cfg.json");
    write(&cfg, r#"{"max_delete": 100}"#);
    env.oneway(&src, &dst, &["--config", cfg.to_str().unwrap()])
        .expect(0);
    assert!(!dst.join("photos").exists());
}

#[test]
fn usage_errors_and_refusals_read_alike_and_dry_run_is_one_pass() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("f"), "x");
    fs::create_dir_all(&dst).unwrap();
    for (args, says) in [
        (
            vec!["--interval", "0"],
            "the interval must be at least 1 second",
        ),
        (vec!["--interval", "-5"], "positive number of seconds"),
        (vec!["--interval", "soon"], "whole number of seconds"),
        (vec!["--max-delete", "150"], "percentage from 0 to 100"),
    ] {
        for tool in ["oneway", "twoway"] {
            let mut all = vec![src.to_str().unwrap(), dst.to_str().unwrap()];
            all.extend(&args);
            let run = env.run(tool, &all);
            run.expect(2);
            let err = run.stderr();
            assert!(
                err.starts_with(&format!("{tool}: ")),
                "{tool} {args:?}: {err}"
            );
            assert!(err.contains(says), "{tool} {args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
    // A refusal reads the same way.
    let run = env.run("oneway", [src.as_os_str(), env.path("nope").as_os_str()]);
    run.expect(2);
    assert!(
        run.stderr().starts_with("oneway: BACKUP "),
        "{}",
        run.stderr()
    );

    for tool in ["oneway", "twoway", "recovery"] {
        for flag in ["-V", "--version"] {
            let run = env.run(tool, [flag]);
            run.expect(0);
            assert!(
                run.stdout().starts_with(tool),
                "{tool} {flag}: {}",
                run.all()
            );
        }
    }

    // --dry-run without --once is one pass, not a pass every interval.
    let mut child = Running::new(
        env.cmd("oneway")
            .args([&src, &dst])
            .args(["--dry-run", "--interval", "1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut waited = 0;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if waited > 600 {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    };
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "a dry run ends by itself"
    );
    assert!(!dst.join("f").exists());
}

#[test]
fn the_shipped_example_config_runs_as_it_is() {
    let env = Env::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.json");
    let text = fs::read_to_string(&example).unwrap();
    // Its paths, moved into the test's area; nothing else changed.
    let root = env.path("sys");
    let text = text.replace("\"/", &format!("\"{}/", root.display()));
    let cfg = env.path("config.json");
    write(&cfg, &text);
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a.txt"), "x");
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &["--config", cfg.to_str().unwrap()])
        .expect(0);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let log = PathBuf::from(v["log"].as_str().unwrap());
    assert!(
        fs::read_to_string(&log).unwrap().contains("a.txt"),
        "the log file and its directory were made"
    );
    env.run(
        "twoway",
        [
            src.as_os_str(),
            dst.as_os_str(),
            OsStr::new("--once"),
            OsStr::new("--config"),
            cfg.as_os_str(),
        ],
    )
    .expect(0);
}

#[test]
fn twoway_b_a_is_the_same_pair_as_twoway_a_b() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("keep.txt"), "k");
    write(&a.join("gone.txt"), "g");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    assert!(b.join("gone.txt").exists());
    fs::remove_file(a.join("gone.txt")).unwrap();
    // Named the other way round: the same state, so the deletion propagates.
    let run = env.run("twoway", [&b, &a, Path::new("--once")]);
    run.expect(0);
    assert!(!run.all().contains("first sync"), "{}", run.all());
    assert!(!b.join("gone.txt").exists(), "the deletion was undone");
    assert!(!a.join("gone.txt").exists());
}

#[test]
fn a_directory_being_written_is_locked_whatever_the_data_home() {
    let env = Env::new();
    let (src, dst, a) = (env.path("src"), env.path("dst"), env.path("a"));
    write(&src.join("f"), "x");
    write(&a.join("g"), "y");
    fs::create_dir_all(&dst).unwrap();
    // A run leaves no lock file behind.
    env.oneway(&src, &dst, &[]).expect(0);
    assert!(!dst.join(".twoway-lock").exists(), "a lock file was left");
    // Another run (of another data home) holds BACKUP's lock.
    let lock = fs::File::create(dst.join(".twoway-lock")).unwrap();
    lock.try_lock().unwrap();
    let mut other_home = env.cmd("oneway");
    other_home.env("TWOWAY_HOME", env.path("home2"));
    let out = other_home
        .args([&src, &dst])
        .arg("--once")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("another run is already working on"), "{err}");
    // twoway on the same directory, either order, is kept out too.
    for args in [[&a, &dst], [&dst, &a]] {
        let run = env.run("twoway", [args[0], args[1], Path::new("--once")]);
        run.expect(2);
    }
    drop(lock);
    // A lock left by a run that died is no lock: the kernel released it, and the file
    // goes with the next run.
    env.oneway(&src, &dst, &[]).expect(0);
    assert!(!dst.join(".twoway-lock").exists());
    env.run("twoway", [&a, &dst, Path::new("--once")]).expect(0);
    assert!(!a.join(".twoway-lock").exists() && !dst.join(".twoway-lock").exists());
}

#[test]
fn a_sync_state_that_cannot_be_read_refuses_the_pass() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("keep.txt"), "k");
    write(&a.join("gone.txt"), "g");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    fs::remove_file(a.join("gone.txt")).unwrap();
    let state = env.sync_state();
    // A directory where the state file should be: it exists and cannot be read.
    fs::remove_file(&state).unwrap();
    fs::create_dir(&state).unwrap();
    let run = env.run("twoway", [&a, &b, Path::new("--once")]);
    run.expect(2);
    assert!(run.stderr().contains("sync state"), "{}", run.stderr());
    assert!(b.join("gone.txt").exists(), "nothing changed");
    assert!(!a.join("gone.txt").exists(), "the deletion was not undone");
}

/// A state whose head reads but whose records are cut short is no state: the pass is a
/// first sync (it deletes nothing, says so), whether the replicas changed or not, and
/// the state it records reads again.
#[test]
fn a_sync_state_cut_after_its_head_makes_a_first_sync() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    for i in 0..50 {
        write(&a.join(format!("d/f{i}.txt")), format!("{i}"));
    }
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    let state = env.sync_state();
    let cut = |state: &Path| {
        let bytes = fs::read(state).unwrap();
        fs::write(state, &bytes[..bytes.len() - 10]).unwrap();
    };
    // Nothing changed on either side.
    cut(&state);
    let run = env.run("twoway", [&a, &b, Path::new("--once")]);
    run.expect(0);
    assert!(run.stderr().contains("is damaged"), "{}", run.stderr());
    let again = env.run("twoway", [&a, &b, Path::new("--once")]);
    again.expect(0);
    assert!(!again.stderr().contains("damaged"), "{}", again.stderr());
    // A file deleted on A: a first sync brings it back rather than deleting B's.
    fs::remove_file(a.join("d/f7.txt")).unwrap();
    cut(&state);
    let run = env.run("twoway", [&a, &b, Path::new("--once")]);
    run.expect(0);
    assert!(run.stderr().contains("is damaged"), "{}", run.stderr());
    assert!(b.join("d/f7.txt").exists(), "nothing deleted");
    assert!(a.join("d/f7.txt").exists(), "brought back");
}

#[test]
fn a_failed_flush_is_an_error_everywhere_and_the_state_does_not_record_it() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("f.txt"), "v1");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    let state = || fs::read(env.sync_state()).unwrap();
    let before = state();
    write(&a.join("f.txt"), "v2");
    let failing = |tool: &str, args: &[&OsStr]| {
        let out = env
            .cmd(tool)
            .args(args)
            .env("TWOWAY_INJECT_FAULT", "syncfs")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = failing(
        "twoway",
        &[a.as_os_str(), b.as_os_str(), OsStr::new("--once")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("sync"), "{err}");
    assert_eq!(
        state(),
        before,
        "the state recorded writes that may not be on disk"
    );
    // The next pass, flushing again, records it.
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    assert_ne!(state(), before);

    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("f.txt"), "x");
    fs::create_dir_all(&dst).unwrap();
    let (code, err) = failing(
        "oneway",
        &[src.as_os_str(), dst.as_os_str(), OsStr::new("--once")],
    );
    assert_eq!(code, Some(1), "{err}");
    env.oneway(&src, &dst, &[]).expect(0);
    let (code, err) = failing(
        "recovery",
        &[
            OsStr::new("restore"),
            src.as_os_str(),
            OsStr::new("--to"),
            env.path("restored").as_os_str(),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn a_deletion_undone_by_a_change_on_the_other_side_is_a_warning() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("notes.txt"), "v1");
    write(&a.join("other.txt"), "o");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    fs::remove_file(a.join("notes.txt")).unwrap();
    write(&b.join("notes.txt"), "v2, edited on B");
    let run = env.run("twoway", [&a, &b, Path::new("--once")]);
    run.expect(0);
    let warn = run
        .stderr()
        .lines()
        .find(|l| l.contains("WARN") && l.contains("notes.txt"))
        .map(str::to_string);
    assert!(
        warn.as_deref()
            .is_some_and(|w| w.contains("deletion is undone")),
        "{}",
        run.all()
    );
    assert_eq!(fs::read(a.join("notes.txt")).unwrap(), b"v2, edited on B");
}
