//! The safety and security rules a fault matrix found broken: a symlink planted in a
//! store, an unmounted SOURCE, setuid files mirrored as root, a sync state that cannot be
//! read, and the other holes each test names.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use integration_tests::*;

/// The store names a versioned directory's trees by: what `<name>_1` is called.
fn version_name(store: &Path) -> String {
    fs::read_dir(store)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find_map(|n| n.strip_suffix("_1").map(str::to_string))
        .expect("a latest version in the store")
}

/// One `--once` pass of `tool` on `x` and `y`, run as the unprivileged user `nobody`.
fn pass_as_nobody(env: &Env, tool: &str, x: &Path, y: &Path) -> Run {
    Run(unprivileged(env, tool)
        .args([x, y])
        .arg("--once")
        .output()
        .unwrap())
}

/// `recovery restore DIR --to TO` with `extra` arguments.
fn restore_to(env: &Env, dir: &Path, to: &Path, extra: &[&OsStr]) -> Run {
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
fn victim(env: &Env) -> PathBuf {
    let v = env.path("victim");
    write(&v.join("precious.txt"), "keep me");
    write(&v.join("sub/deep.txt"), "keep me too");
    v
}

fn assert_victim_intact(v: &Path) {
    assert_eq!(fs::read(v.join("precious.txt")).unwrap(), b"keep me");
    assert_eq!(fs::read(v.join("sub/deep.txt")).unwrap(), b"keep me too");
    assert_eq!(
        fs::read_dir(v).unwrap().count(),
        2,
        "nothing added or removed"
    );
}

#[test]
fn a_symlink_planted_in_a_twoway_store_is_never_entered_nor_deleted_through() {
    for slot in [".build", ".new", ".drop", ".spare", "_0"] {
        let env = Env::new();
        let (a, b) = (env.path("a"), env.path("b"));
        write(&a.join("f.txt"), "v1");
        fs::create_dir_all(&b).unwrap();
        env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
        let store = b.join("__versions__");
        let name = version_name(&store);
        let v = victim(&env);
        let planted = store.join(format!("{name}{slot}"));
        if planted.exists() {
            fs::rename(&planted, env.path("moved-away")).unwrap();
        }
        symlink(&v, &planted).unwrap();

        write(&a.join("f.txt"), "v2");
        write(&a.join("g.txt"), "new");
        let run = env.run("twoway", [&a, &b, Path::new("--once")]);
        assert_victim_intact(&v);
        assert!(
            fs::symlink_metadata(&planted).unwrap().is_symlink(),
            "{slot}: the planted link is left for the user to see"
        );
        assert!(run.code() != 0, "{slot}: the planted link is reported");
        assert!(
            run.all().contains(&format!("{name}{slot}")),
            "{slot}: the report names it:\n{}",
            run.all()
        );
        // B's old content could not be saved first: B is left as it was, A keeps its edit.
        assert_eq!(fs::read(a.join("f.txt")).unwrap(), b"v2");
        assert!(matches!(
            fs::read(b.join("f.txt")).unwrap().as_slice(),
            b"v1" | b"v2"
        ));
        // And a recovery command reading the store does not follow it either.
        env.run("recovery", ["verify"]);
        env.run("recovery", [OsStr::new("list"), b.as_os_str()]);
        assert_victim_intact(&v);
    }
}

#[test]
fn a_store_that_is_a_symlink_is_refused_with_exit_2() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("f.txt"), "x");
    fs::create_dir_all(&dst).unwrap();
    let v = victim(&env);
    symlink(&v, dst.join("__versions__")).unwrap();
    let run = env.oneway(&src, &dst, &[]);
    run.expect(2);
    assert!(run.all().contains("symlink"), "{}", run.all());
    assert!(
        !dst.join("f.txt").exists(),
        "refused before changing anything"
    );
    assert_victim_intact(&v);

    // The same for --store, and for twoway's replicas.
    let link = env.path("store-link");
    symlink(&v, &link).unwrap();
    env.oneway(&src, &dst, &["--store", link.to_str().unwrap()])
        .expect(2);
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("f.txt"), "x");
    fs::create_dir_all(&b).unwrap();
    symlink(&v, b.join("__versions__")).unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(2);
    assert!(!b.join("f.txt").exists());
    assert_victim_intact(&v);
}

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
    let mut child = env
        .cmd("oneway")
        .args([&src, &dst])
        .args(["--dry-run", "--interval", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
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
    // Another run (of another data home) holds BACKUP's lock.
    env.oneway(&src, &dst, &[]).expect(0);
    let lock = fs::File::open(dst.join(".twoway-lock")).unwrap();
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
    // A lock left by a run that died is no lock: the kernel released it.
    env.oneway(&src, &dst, &[]).expect(0);
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
    let state_dir = env.home().join("state");
    let state = fs::read_dir(&state_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // A directory where the state file should be: it exists and cannot be read.
    fs::remove_file(&state).unwrap();
    fs::create_dir(&state).unwrap();
    let run = env.run("twoway", [&a, &b, Path::new("--once")]);
    run.expect(2);
    assert!(run.stderr().contains("sync state"), "{}", run.stderr());
    assert!(b.join("gone.txt").exists(), "nothing changed");
    assert!(!a.join("gone.txt").exists(), "the deletion was not undone");
}

#[test]
fn a_failed_flush_is_an_error_everywhere_and_the_state_does_not_record_it() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("f.txt"), "v1");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    let state = || {
        let dir = env.home().join("state");
        let p = fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
        fs::read(p).unwrap()
    };
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

fn owner_and_mode(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn chown(p: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        p,
        Some(rustix::fs::Uid::from_raw_unchecked(uid)),
        Some(rustix::fs::Gid::from_raw_unchecked(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[test]
fn as_root_owners_are_kept_by_mirror_sync_and_restore() {
    require_root();
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("d/tool"), "#!/bin/sh\n");
    chmod(&src.join("d/tool"), 0o4755);
    symlink("tool", src.join("d/link")).unwrap();
    for p in ["d/tool", "d", "d/link"] {
        chown(&src.join(p), 1234, 4321);
    }
    // chown cleared the setuid bit: set it again, as the user did.
    chmod(&src.join("d/tool"), 0o4755);
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(owner_and_mode(&dst.join("d/tool")), (1234, 4321, 0o4755));
    assert_eq!(owner_and_mode(&dst.join("d")).0, 1234);
    assert_eq!(owner_and_mode(&dst.join("d/link")).0, 1234);
    // A change of owner alone is a change.
    chown(&src.join("d/tool"), 1235, 4321);
    chmod(&src.join("d/tool"), 0o4755);
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(owner_and_mode(&dst.join("d/tool")), (1235, 4321, 0o4755));
    let again = env.oneway(&src, &dst, &[]);
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );

    // Restored files get their owners back (a new file makes a new version: today's
    // store makes one only when the content changed).
    write(&src.join("new.txt"), "n");
    env.oneway(&src, &dst, &[]).expect(0);
    let to = env.path("restored");
    restore_to(&env, &src, &to, &[]).expect(0);
    assert_eq!(owner_and_mode(&to.join("d/tool")), (1235, 4321, 0o4755));
    assert_eq!(owner_and_mode(&to.join("d")).0, 1234);

    // twoway carries owners to the other side, and a change of owner on one side.
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("run"), "x");
    chown(&a.join("run"), 1234, 4321);
    chmod(&a.join("run"), 0o2755);
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    assert_eq!(owner_and_mode(&b.join("run")), (1234, 4321, 0o2755));
    chown(&b.join("run"), 1236, 4321);
    chmod(&b.join("run"), 0o2755);
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    assert_eq!(owner_and_mode(&a.join("run")), (1236, 4321, 0o2755));
}

#[test]
fn where_the_owner_cannot_be_kept_setuid_and_setgid_are_cleared() {
    require_root();
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    // Root's setuid program, readable by everyone; the mirror runs as nobody.
    write(&src.join("su-like"), "#!/bin/sh\n");
    write(&src.join("plain"), "p");
    fs::create_dir_all(&dst).unwrap();
    env.hand_to_nobody();
    chown(&src.join("su-like"), 0, 0);
    chmod(&src.join("su-like"), 0o6755);
    let run = || {
        let out = pass_as_nobody(&env, "oneway", &src, &dst).0;
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(owner_and_mode(&dst.join("su-like")), (65534, 65534, 0o755));
    // And that is no difference to mend on every pass.
    let (code, out) = run();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(owner_and_mode(&dst.join("su-like")).2, 0o755);

    // twoway as nobody: the copy loses the bits, the original keeps them.
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    give_to_nobody(&a);
    give_to_nobody(&b);
    write(&a.join("su-like"), "#!/bin/sh\n");
    chown(&a.join("su-like"), 0, 0);
    chmod(&a.join("su-like"), 0o4755);
    for _ in 0..2 {
        let out = pass_as_nobody(&env, "twoway", &a, &b).0;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(owner_and_mode(&b.join("su-like")), (65534, 65534, 0o755));
    assert_eq!(owner_and_mode(&a.join("su-like")), (0, 0, 0o4755));
}

#[test]
fn swapped_oneway_arguments_are_refused() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("mine.txt"), "precious");
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("newer.txt"), "only in SOURCE so far");
    let run = env.oneway(&dst, &src, &[]);
    run.expect(2);
    assert!(run.stderr().contains("swapped"), "{}", run.stderr());
    assert_eq!(
        fs::read(src.join("newer.txt")).unwrap(),
        b"only in SOURCE so far"
    );
}

#[test]
fn every_backup_of_a_source_stays_listed_verified_and_restorable() {
    let env = Env::new();
    let (src, usb1, usb2) = (env.path("src"), env.path("usb1"), env.path("usb2"));
    write(&src.join("a.txt"), "one");
    fs::create_dir_all(&usb1).unwrap();
    fs::create_dir_all(&usb2).unwrap();
    env.oneway(&src, &usb1, &[]).expect(0);
    write(&src.join("a.txt"), "two");
    env.oneway(&src, &usb2, &[]).expect(0);

    let list = env.run("recovery", [OsStr::new("list"), src.as_os_str()]);
    list.expect(0);
    for usb in [&usb1, &usb2] {
        assert!(
            list.stdout()
                .contains(&usb.join("__versions__").display().to_string()),
            "{}",
            list.stdout()
        );
    }
    // Bit rot in the first backup's store is still found.
    let store1 = usb1.join("__versions__");
    let v1 = fs::read_dir(&store1)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_1"))
        .unwrap();
    // (Its file is a hard link to usb1's: damage both, as a failing disk would.)
    fs::write(v1.join("a.txt"), "rot").unwrap();
    let verify = env.run("recovery", ["verify"]);
    verify.expect(1);
    assert!(verify.stdout().contains("usb1"), "{}", verify.stdout());

    // Restore takes the newest version across the stores, or the store named.
    let to = env.path("newest");
    restore_to(&env, &src, &to, &[]).expect(0);
    assert_eq!(fs::read(to.join("a.txt")).unwrap(), b"two");
    write(&usb1.join("a.txt"), "one");
    fs::remove_file(v1.join("a.txt")).unwrap();
    fs::hard_link(usb1.join("a.txt"), v1.join("a.txt")).unwrap();
    let to = env.path("from-usb1");
    restore_to(
        &env,
        &src,
        &to,
        &[OsStr::new("--store"), store1.as_os_str()],
    )
    .expect(0);
    assert_eq!(fs::read(to.join("a.txt")).unwrap(), b"one");
}

/// The `(verb, path)` of every action line of a run (`would copy x` and `copy x` alike).
fn actions(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip(1);
            let mut verb = w.next()?;
            if verb == "would" {
                verb = w.next()?;
            }
            let path = w.next()?;
            l.contains("VERSION -> DIR")
                .then(|| (verb.to_string(), path.to_string()))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn a_restore_dry_run_prints_the_plan_the_real_run_carries_out() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a.txt"), "a1");
    write(&src.join("b.txt"), "b1");
    write(&src.join("d/c.txt"), "c1");
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("a.txt"), "a2, edited");
    fs::remove_file(src.join("d/c.txt")).unwrap();
    write(&src.join("new.txt"), "n");
    let restore = |dry: bool| {
        let mut args = vec![
            OsStr::new("restore"),
            src.as_os_str(),
            OsStr::new("--force"),
        ];
        if dry {
            args.push(OsStr::new("--dry-run"));
        }
        env.run("recovery", &args)
    };
    let dry = restore(true);
    dry.expect(0);
    let planned = actions(&dry.all());
    assert!(!planned.iter().any(|(_, p)| p == "b.txt"), "{planned:?}");
    assert!(
        planned.contains(&("replace".into(), "a.txt".into())),
        "{planned:?}"
    );
    let real = restore(false);
    real.expect(0);
    assert_eq!(actions(&real.all()), planned);
    assert_eq!(fs::read(src.join("a.txt")).unwrap(), b"a1");
    assert_eq!(fs::read(src.join("d/c.txt")).unwrap(), b"c1");
}

#[test]
fn restore_to_a_symlink_is_refused() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a.txt"), "a");
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let v = victim(&env);
    let link = env.path("link");
    symlink(&v, &link).unwrap();
    for to in [link.clone(), link.join("sub")] {
        let run = restore_to(&env, &src, &to, &[]);
        run.expect(2);
        assert!(run.stderr().contains("symlink"), "{}", run.stderr());
    }
    assert_victim_intact(&v);
}

#[test]
fn a_pass_with_read_errors_makes_an_incomplete_version_that_never_pushes_out_a_complete_one() {
    require_root();
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a.txt"), "a1");
    write(&src.join("secret.txt"), "s1");
    write(&src.join("d/in.txt"), "i");
    fs::create_dir_all(&dst).unwrap();
    env.hand_to_nobody();
    let pass = || pass_as_nobody(&env, "oneway", &src, &dst).code();
    assert_eq!(pass(), 0);
    // Complete: a1 and s1. Then two passes that cannot read secret.txt.
    chmod(&src.join("secret.txt"), 0o000);
    for round in ["a2", "a3"] {
        write(&src.join("a.txt"), round);
        give_to_nobody(&src.join("a.txt"));
        assert_eq!(pass(), 1);
    }
    let list = env.run("recovery", [OsStr::new("list"), src.as_os_str()]);
    let text = list.stdout();
    assert!(text.contains("incomplete"), "{text}");
    let json = env.run(
        "recovery",
        [OsStr::new("list"), src.as_os_str(), OsStr::new("--json")],
    );
    let v: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    let versions = v["dirs"][0]["versions"].as_array().unwrap().clone();
    assert_eq!(versions[0]["incomplete"], true, "{versions:?}");
    assert_eq!(
        versions[1]["incomplete"], false,
        "the complete version was pushed out: {versions:?}"
    );
    let reg: serde_json::Value =
        serde_json::from_slice(&fs::read(env.home().join(".info.json")).unwrap()).unwrap();
    assert!(reg.to_string().contains("\"incomplete\":true"), "{reg}");
    let to = env.path("back");
    restore_to(
        &env,
        &src,
        &to,
        &[OsStr::new("--version"), OsStr::new("previous")],
    )
    .expect(0);
    assert_eq!(fs::read(to.join("secret.txt")).unwrap(), b"s1");
}

#[test]
fn a_source_directory_readable_but_not_searchable_leaves_backup_usable() {
    require_root();
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("d/f.txt"), "f");
    write(&src.join("top.txt"), "t");
    fs::create_dir_all(&dst).unwrap();
    env.hand_to_nobody();
    let pass = || pass_as_nobody(&env, "oneway", &src, &dst).code();
    assert_eq!(pass(), 0);
    chmod(&src.join("d"), 0o644);
    assert_eq!(pass(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dst.join("d")).unwrap().permissions().mode() & 0o700;
    assert_eq!(mode, 0o700, "BACKUP's copy stays the tool's to enter");
    assert_eq!(
        fs::read(dst.join("d/f.txt")).unwrap(),
        b"f",
        "nothing under it is lost"
    );
    // When SOURCE is readable again, all is as before.
    chmod(&src.join("d"), 0o755);
    assert_eq!(pass(), 0);
    assert_same_tree(&src, &dst);
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn sparse_files_stay_sparse_in_backup_restores_and_twoway() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    let f = src.join("disk.img");
    write(&f, "header");
    let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(64 << 20).unwrap();
    drop(file);
    write(&src.join("dense.bin"), vec![0u8; 1 << 20]);
    assert!(allocated(&f) < 1 << 20, "the test file is sparse");
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(fs::metadata(dst.join("disk.img")).unwrap().len(), 64 << 20);
    assert!(
        allocated(&dst.join("disk.img")) < 1 << 20,
        "BACKUP's copy is sparse"
    );
    assert_eq!(sha256_file(&dst.join("disk.img")), sha256_file(&f));
    // A dense file of zeros stays dense (as cp --sparse=auto).
    assert!(allocated(&dst.join("dense.bin")) >= 1 << 20);

    let to = env.path("restored");
    restore_to(&env, &src, &to, &[]).expect(0);
    assert!(
        allocated(&to.join("disk.img")) < 1 << 20,
        "the restore is sparse"
    );
    assert_eq!(sha256_file(&to.join("disk.img")), sha256_file(&f));

    let b = env.path("b");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&src, &b, Path::new("--once")]).expect(0);
    assert!(
        allocated(&b.join("disk.img")) < 1 << 20,
        "twoway's copy is sparse"
    );
}

#[test]
fn extended_attributes_and_acls_are_copied() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    let f = src.join("tagged.txt");
    write(&f, "x");
    fs::create_dir_all(&dst).unwrap();
    let status = std::process::Command::new("setfattr")
        .args(["-n", "user.origin", "-v", "camera-1"])
        .arg(&f)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        panic!("setfattr (package attr) is needed, on a filesystem with user attributes");
    }
    let acl = std::process::Command::new("setfacl")
        .args(["-m", "u:65534:r"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(acl.success());
    // A directory's default ACL, which its new files inherit.
    let shared = src.join("shared");
    fs::create_dir_all(&shared).unwrap();
    let acl = std::process::Command::new("setfacl")
        .args(["-d", "-m", "u:65534:rw"])
        .arg(&shared)
        .status()
        .unwrap();
    assert!(acl.success());
    env.oneway(&src, &dst, &[]).expect(0);
    let get = |p: &Path, what: &str| {
        let out = std::process::Command::new("getfattr")
            .args(["--absolute-names", "-d", "-m", what])
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let copy = dst.join("tagged.txt");
    assert!(
        get(&copy, "user.").contains("camera-1"),
        "{}",
        get(&copy, "-")
    );
    assert_eq!(
        get(&copy, "system.posix_acl_access"),
        get(&f, "system.posix_acl_access")
    );
    assert!(!get(&f, "system.posix_acl_access").is_empty());
    let default = get(&shared, "system.posix_acl_default");
    assert!(!default.is_empty());
    assert_eq!(
        get(&dst.join("shared"), "system.posix_acl_default"),
        default
    );
}

fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn hard_links_within_source_stay_hard_links_in_backup() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("photos/a.jpg"), "one photo");
    fs::create_dir_all(src.join("albums")).unwrap();
    fs::hard_link(src.join("photos/a.jpg"), src.join("albums/a.jpg")).unwrap();
    fs::hard_link(src.join("photos/a.jpg"), src.join("z.jpg")).unwrap();
    write(&src.join("other.jpg"), "one photo");
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let leader = ino(&dst.join("albums/a.jpg"));
    assert_eq!(ino(&dst.join("photos/a.jpg")), leader);
    assert_eq!(ino(&dst.join("z.jpg")), leader);
    assert_ne!(
        ino(&dst.join("other.jpg")),
        leader,
        "same bytes, but no link in SOURCE"
    );
    let again = env.oneway(&src, &dst, &[]);
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );

    // An edit in place changes every name; BACKUP follows with one file again.
    fs::write(src.join("photos/a.jpg"), "edited photo").unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let leader = ino(&dst.join("albums/a.jpg"));
    assert_eq!(fs::read(dst.join("z.jpg")).unwrap(), b"edited photo");
    assert_eq!(ino(&dst.join("photos/a.jpg")), leader);
    assert_eq!(ino(&dst.join("z.jpg")), leader);
    assert_same_tree(&src, &dst);

    // Names that stop being links stop being links.
    fs::remove_file(src.join("z.jpg")).unwrap();
    write(&src.join("new.tmp"), "replaced");
    fs::rename(src.join("new.tmp"), src.join("albums/a.jpg")).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    assert_ne!(
        ino(&dst.join("albums/a.jpg")),
        ino(&dst.join("photos/a.jpg"))
    );
    assert!(!dst.join("z.jpg").exists());
    assert_same_tree(&src, &dst);
}

#[test]
fn paths_longer_than_the_kernel_takes_at_once_are_backed_up_verified_and_restored() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    let mut deep = PathBuf::new();
    for i in 0..20 {
        deep.push(format!("d{i:02}{}", "x".repeat(240)));
    }
    let file = deep.join("deep.txt");
    assert!(file.as_os_str().len() > 4096);
    // Made a level at a time (through handles): the whole path is too long for one call.
    {
        use rustix::fs::{mkdirat, openat, Mode, OFlags};
        fs::create_dir_all(&src).unwrap();
        let mut dir = fs::File::open(&src).unwrap();
        for c in deep.components() {
            mkdirat(&dir, c.as_os_str(), Mode::from_raw_mode(0o755)).unwrap();
            dir = fs::File::from(
                openat(
                    &dir,
                    c.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    Mode::empty(),
                )
                .unwrap(),
            );
        }
        let f = openat(
            &dir,
            "deep.txt",
            OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        std::io::Write::write_all(&mut fs::File::from(f), b"deep").unwrap();
    }
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let again = env.oneway(&src, &dst, &[]);
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );
    let verify = env.run("recovery", ["verify"]);
    verify.expect(0);
    assert!(
        verify.stdout().contains("0 problems"),
        "{}",
        verify.stdout()
    );
    let to = env.path("r");
    restore_to(&env, &src, &to, &[]).expect(0);
    let b = env.path("b");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&src, &b, Path::new("--once")]).expect(0);
    // Read back a level at a time too.
    for root in [&dst, &to, &b] {
        let mut dir = fs::File::open(root).unwrap();
        for c in deep.components() {
            use std::os::fd::AsFd;
            let fd = rustix::fs::openat(
                dir.as_fd(),
                c.as_os_str(),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            dir = fs::File::from(fd);
        }
        use std::os::fd::AsFd;
        let f = rustix::fs::openat(
            dir.as_fd(),
            "deep.txt",
            rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut fs::File::from(f), &mut text).unwrap();
        assert_eq!(text, "deep", "{}", root.display());
    }
}

/// Six hundred small files, copied first, and a big sparse file copied last and long to
/// read and hash: a first sync of `a` to `b` records progress before it ends.
fn slow_first_sync(a: &Path, b: &Path) {
    for i in 0..600 {
        write(&a.join(format!("small/{i:03}.txt")), format!("file {i}"));
    }
    // A terabyte of holes: reading and hashing it would take many minutes, so the
    // pass is surely still copying it when the test stops it, however busy the machine.
    let f = fs::File::create(a.join("zz-big.img")).unwrap();
    f.set_len(1 << 40).unwrap();
    fs::create_dir_all(b).unwrap();
}

#[test]
fn a_first_sync_records_no_progress_it_could_not_flush() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    slow_first_sync(&a, &b);
    let mut child = env
        .cmd("twoway")
        .args([&a, &b])
        .args(["--once", "--no-versions"])
        .env("TWOWAY_INJECT_FAULT", "first-sync-flush")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first batches of small files are in B; a couple of seconds of progress
    // saves are tried (each a second apart), with their flushes failing.
    let mut waited = 0;
    while !b.join("small/100.txt").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pass ended too soon"
        );
        assert!(waited < 6000, "no copy seen in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        still_running,
        "the first sync ended before the kill (else this tests nothing)"
    );
    // Only the state written before anything changed (nothing was equal): no record of
    // copies whose names may not be on disk.
    let state = fs::read_dir(env.home().join("state"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let len = fs::metadata(&state).unwrap().len();
    assert!(
        len < 200,
        "the state recorded unflushed progress ({len} bytes)"
    );
}

#[test]
fn a_killed_first_sync_keeps_what_it_made_equal() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    // Enough small files that each copy worker installs a full batch (256) of them
    // early, while the big file (copied last, long to read and hash) holds the rest
    // back: the pass is still in it when killed.
    slow_first_sync(&a, &b);
    write(&b.join("both/same.txt"), "on both sides already");
    write(&a.join("both/same.txt"), "on both sides already");
    let big = a.join("zz-big.img");
    let mut child = env
        .cmd("twoway")
        .args([&a, &b])
        .args(["--once", "--no-versions"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the progress holds the first batches of small files (512 records of
    // some 60 bytes), which take the first names in path order.
    let state_dir = env.home().join("state");
    let recorded = || {
        fs::read_dir(&state_dir)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .and_then(|e| e.metadata().ok())
            .is_some_and(|m| m.len() > 400 * 60)
    };
    let mut waited = 0;
    while !recorded() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the first sync ended before its progress was seen"
        );
        assert!(waited < 6000, "no progress recorded in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(b.join("small/000.txt").exists());
    assert!(
        !b.join("zz-big.img").exists(),
        "the first sync was killed before its end (else this tests nothing)"
    );

    // One-sided changes since: an edit on A, a deletion on B.
    write(&a.join("small/001.txt"), "edited on A after the kill");
    fs::remove_file(b.join("small/002.txt")).unwrap();
    fs::remove_file(&big).unwrap();
    let run = env.run(
        "twoway",
        [&a, &b, Path::new("--once"), Path::new("--no-versions")],
    );
    run.expect(0);
    assert!(run.stdout().contains(" 0 conflicts"), "{}", run.all());
    assert!(!run.all().contains("keep-conflict"), "{}", run.all());
    assert_eq!(
        fs::read(b.join("small/001.txt")).unwrap(),
        b"edited on A after the kill"
    );
    assert!(!a.join("small/002.txt").exists(), "the deletion was undone");
    assert!(!b.join("zz-big.img").exists());
}

#[test]
fn a_change_of_attributes_alone_reaches_backup() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    let f = src.join("photo.jpg");
    write(&f, "pixels");
    fs::create_dir_all(src.join("album")).unwrap();
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let attr = |p: &Path, name: &str| {
        let out = std::process::Command::new("getfattr")
            .args(["--absolute-names", "--only-values", "-n", name])
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Only the attributes change: no byte, no mode, no mtime.
    let set = std::process::Command::new("setfattr")
        .args(["-n", "user.rating", "-v", "5"])
        .arg(&f)
        .status()
        .expect("setfattr (package attr) is needed");
    assert!(set.success());
    let acl = std::process::Command::new("setfacl")
        .args(["-m", "u:65534:rx"])
        .arg(src.join("album"))
        .status()
        .unwrap();
    assert!(acl.success());
    let run = env.oneway(&src, &dst, &[]);
    run.expect(0);
    assert_eq!(
        attr(&dst.join("photo.jpg"), "user.rating"),
        "5",
        "{}",
        run.all()
    );
    let acl_of = |p: &Path| {
        String::from_utf8_lossy(
            &std::process::Command::new("getfacl")
                .args(["--omit-header", "--absolute-names"])
                .arg(p)
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    assert_eq!(acl_of(&dst.join("album")), acl_of(&src.join("album")));
    assert!(
        acl_of(&dst.join("album")).contains("user:nobody"),
        "{}",
        acl_of(&dst.join("album"))
    );
    // And then nothing more to do.
    let again = env.oneway(&src, &dst, &[]);
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );
    assert_eq!(fs::read(dst.join("photo.jpg")).unwrap(), b"pixels");
}
