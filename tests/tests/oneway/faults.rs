//! Faults and mistakes: kills, signals, unreadable entries, refusals, concurrent writers.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use integration_tests::*;

use super::*;

#[test]
fn killed_repeatedly_never_leaves_a_partial_file_and_converges() {
    let env = Env::new();
    killed_repeatedly(&env, &env.path("src"), &env.path("dst"), &[]);
}

/// The same where SOURCE and BACKUP share a btrfs filesystem, and every copy is a
/// reflink of its source's blocks.
#[test]
fn killed_repeatedly_where_copies_are_reflinks_never_leaves_a_partial_file() {
    let env = Env::new();
    let disk = Mounted::new("btrfs", 512, &env.path("disk"));
    killed_repeatedly(&env, &disk.path("src"), &disk.path("dst"), &[]);
}

/// The same with the store on another filesystem than BACKUP, where what a pass replaces
/// is copied into the store before it goes.
#[test]
fn killed_repeatedly_with_the_store_on_another_filesystem_converges() {
    let env = Env::new();
    // Room for the history of ten changes of a 20 MiB file, and more.
    let usb = Mounted::new("ext4", 1024, &env.path("usb"));
    let store = usb.path("store");
    let store = store.to_str().unwrap();
    killed_repeatedly(
        &env,
        &env.path("src"),
        &env.path("dst"),
        &["--store", store],
    );
}

/// Passes of `oneway src dst` (with `extra` flags) killed at random moments while SOURCE
/// changes between them: every file at a final path in BACKUP is one SOURCE had, the
/// last pass converges, and the store verifies.
fn killed_repeatedly(env: &Env, src: &Path, dst: &Path, extra: &[&str]) {
    let (src, dst) = (src.to_path_buf(), dst.to_path_buf());
    let mut rng = Rng::new(42);
    make_many(&src, 300, 200_000, &mut rng);
    write_random(&src.join("large/one.bin"), 30 << 20, &mut rng);
    fs::create_dir(&dst).unwrap();
    // Every content each path has ever had: a file at a final path must be one of them.
    let mut seen: std::collections::BTreeMap<std::path::PathBuf, Vec<String>> = Default::default();
    let mut killed = 0;
    // Ten rounds, and more until three passes were cut short (a fast pass may end
    // before its kill; each one that does makes the next kill come sooner).
    let mut late = 150u64;
    let mut rounds = 0usize;
    while rounds < 10 || (killed < 3 && rounds < 40) {
        let round = rounds;
        rounds += 1;
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
        cmd.arg(&src).arg(&dst).arg("--once").args(extra);
        if kill_after(cmd, Duration::from_millis(5 + rng.below(late))) {
            killed += 1;
        } else {
            late = (late * 2 / 3).max(5);
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
    env.oneway(&src, &dst, extra).expect(0);
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

#[test]
fn sigint_between_passes_exits_0_with_the_total_line() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a"), "a");
    fs::create_dir(&dst).unwrap();
    let log = env.path("loop.log");
    let child = Running::new(
        env.cmd("oneway")
            .arg(&src)
            .arg(&dst)
            .args(["--interval", "300", "--log"])
            .arg(&log)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
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

/// 400 small files and one of 4 MiB (copied last) in `src`.
fn small_files_and_a_large_one(src: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    make_many(src, 400, 100_000, &mut rng);
    write_random(&src.join("zz-large.bin"), 4 << 20, &mut rng);
}

/// Runs `cmd` (its lines going to `log`) until it has logged a copy, then sends it
/// SIGINT; gives how it ended. The large file's copy waits, once it has begun, until the
/// run is stopped (`TWOWAY_INJECT_FAULT=copy-waits-for-stop`): the signal meets it in
/// flight however fast the machine.
fn interrupted_once_copying(mut cmd: std::process::Command, log: &Path) -> Run {
    cmd.env("TWOWAY_INJECT_FAULT", "copy-waits-for-stop");
    let child = Running::new(cmd.spawn().unwrap());
    assert!(wait_for(log, "copy", Duration::from_secs(30)));
    sigint(&child);
    Run(child.wait_with_output().unwrap())
}

#[test]
fn sigint_mid_pass_exits_130_without_partial_files() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    small_files_and_a_large_one(&src, 3);
    fs::create_dir(&dst).unwrap();
    let log = env.path("pass.log");
    let mut cmd = env.cmd("oneway");
    cmd.arg(&src)
        .arg(&dst)
        .args(["--once", "--log"])
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let out = interrupted_once_copying(cmd, &log);
    out.expect(130);
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains("interrupted"), "{logged}");
    assert!(
        !dst.join("zz-large.bin").exists(),
        "the copy cut short was put in place"
    );
    assert!(
        temp_leftovers(&dst).is_empty(),
        "the file in flight was not rolled back"
    );
    env.oneway(&src, &dst, &[]).expect(0);
    assert_same_tree(&src, &dst);
}

/// A restore stopped with Ctrl+C mid-copy leaves whole files only, says it was cut
/// short and how to finish, exits 130; run again with --force, it finishes.
#[test]
fn sigint_mid_restore_exits_130_says_so_and_the_restore_finishes_after() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    small_files_and_a_large_one(&src, 4);
    fs::create_dir(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    fs::remove_dir_all(&src).unwrap();
    // (recovery logs its lines to its standard output.)
    let log = env.path("restore.log");
    let mut cmd = env.cmd("recovery");
    cmd.arg("restore")
        .arg(&src)
        .stdout(fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null());
    let out = interrupted_once_copying(cmd, &log);
    out.expect(130);
    let logged = fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("restore cut short")
            && logged.contains("run the same command again with --force to finish"),
        "{logged}"
    );
    assert!(!logged.contains("nothing to do"), "{logged}");
    assert!(temp_leftovers(&src).is_empty(), "a partial file was left");
    assert!(
        !src.join("zz-large.bin").exists(),
        "the copy cut short was put in place"
    );
    // Every file restored is whole: its bytes are BACKUP's.
    let backup = snapshot(&dst);
    for (rel, snap) in snapshot(&src) {
        if let Snap::File { sha256, .. } = snap {
            match &backup[&rel] {
                Snap::File { sha256: b, .. } => assert_eq!(&sha256, b, "{rel:?}"),
                other => panic!("{rel:?}: {other:?}"),
            }
        }
    }
    env.run(
        "recovery",
        [
            std::ffi::OsStr::new("restore"),
            src.as_os_str(),
            std::ffi::OsStr::new("--force"),
        ],
    )
    .expect(0);
    assert_same_tree(&dst, &src);
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
    let (src, dst) = env.src_and_dst();
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
    let (src, dst) = env.src_and_dst();
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
        // Content a version holds that the user took away from both SOURCE and BACKUP
        // by hand before a pass: the newest version's files are the live ones, so that
        // content is gone (and `verify` says so). Nothing else may be missing.
        let mut taken_by_hand: std::collections::BTreeSet<String> = Default::default();
        for round in 0..12 {
            let latest: std::collections::BTreeSet<String> =
                files_of(&dst).into_iter().map(|(_, h)| h).collect();
            if round > 0 {
                random_edits(&src, &mut rng, &mut serial);
                // Now and then someone edits the backup too: the pass undoes it, and
                // keeps what it replaces.
                if rng.below(4) == 0 {
                    random_edits(&dst, &mut rng, &mut serial);
                }
            }
            // What BACKUP holds now: a pass that replaces or deletes it keeps it in a
            // version.
            let before: std::collections::BTreeSet<String> =
                files_of(&dst).into_iter().map(|(_, h)| h).collect();
            let live_now = all_of(&src);
            taken_by_hand.extend(
                latest
                    .iter()
                    .filter(|h| !before.contains(*h) && !live_now.contains(*h))
                    .cloned(),
            );
            let what = format!("seed {seed}, round {round}");
            // Small random trees lose most of their files in one round now and then.
            let run = env.oneway(&src, &dst, &["--max-delete", "100"]);
            assert_eq!(run.code(), 0, "{what}: {}", run.all());
            assert_same_tree(&src, &dst);
            let after = all_of(&dst);
            let lost: Vec<&String> = before.difference(&after).collect();
            assert!(lost.is_empty(), "{what}: lost {lost:?}");
            assert_verified_but(&env, &taken_by_hand, &what);
        }
    }
}

/// A copy worker installs the batch of small files it holds before it starts on a large
/// file: they show in BACKUP while the large one copies, and a pass stopped then keeps
/// them. One core (`taskset`), so one worker takes every file in path order.
#[test]
fn small_files_are_installed_before_a_large_copy_starts() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    for i in 0..3 {
        write(&src.join(format!("a{i}.txt")), format!("small {i}"));
    }
    // A terabyte of holes, copied last: many minutes to read and hash.
    fs::File::create(src.join("zz-big.img"))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    fs::create_dir_all(&dst).unwrap();
    let oneway = env.cmd("oneway");
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", "0"]).arg(oneway.get_program());
    for (k, v) in oneway.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = Running::new(
        cmd.arg(&src)
            .arg(&dst)
            .args(["--once", "--no-versions"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut waited = 0;
    while !(0..3).all(|i| dst.join(format!("a{i}.txt")).exists()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pass ended before the large copy"
        );
        assert!(
            waited < 6000,
            "the small files did not show in 60 s while the large one was being copied"
        );
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    assert!(!dst.join("zz-big.img").exists());
    drop(child);
    // Stopped (killed) during the large copy: the small files stay, complete.
    for i in 0..3 {
        assert_eq!(
            fs::read(dst.join(format!("a{i}.txt"))).unwrap(),
            format!("small {i}").as_bytes()
        );
    }
    assert!(!dst.join("zz-big.img").exists());
}

/// A SOURCE with an unreadable file and an unreadable folder, and a BACKUP holding a
/// file SOURCE no longer has; everything handed to `nobody`.
fn with_unreadable(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a.txt"), "a");
    write(&src.join("secret.txt"), "no");
    write(&src.join("locked/inside.txt"), "no");
    write(&dst.join("gone.txt"), "SOURCE deleted this");
    chmod(&src.join("secret.txt"), 0o000);
    chmod(&src.join("locked"), 0o000);
    env.hand_to_nobody();
    (src, dst)
}

fn as_nobody(env: &Env, src: &Path, dst: &Path, extra: &[&str]) -> Run {
    Run(unprivileged(env, "oneway")
        .arg(src)
        .arg(dst)
        .args(["--once", "--max-delete", "100"])
        .args(extra)
        .output()
        .unwrap())
}

#[test]
fn on_error_fail_stops_before_any_change_when_the_scan_finds_one() {
    let env = Env::new();
    let (src, dst) = with_unreadable(&env);
    let run = as_nobody(&env, &src, &dst, &["--on-error", "fail"]);
    run.expect(1);
    assert!(
        run.all().contains("stopped before changing anything"),
        "{}",
        run.all()
    );
    assert!(dst.join("gone.txt").exists(), "nothing deleted");
    assert!(!dst.join("a.txt").exists(), "nothing copied");
}

#[test]
fn on_error_fail_stops_at_the_first_failed_copy() {
    let env = Env::new();
    let (src, dst) = with_unreadable(&env);
    // Only the unreadable file: the scan reads everything else.
    chmod(&src.join("locked"), 0o755);
    let run = as_nobody(&env, &src, &dst, &["--on-error", "fail"]);
    run.expect(1);
    assert!(
        run.all().contains("stopped at its first failed action"),
        "{}",
        run.all()
    );
    assert!(run.all().contains("secret.txt"), "{}", run.all());
}

#[test]
fn on_error_ignore_goes_on_exits_0_and_says_it_with_v_only() {
    let env = Env::new();
    let (src, dst) = with_unreadable(&env);
    let run = as_nobody(&env, &src, &dst, &["--on-error", "ignore"]);
    run.expect(0);
    assert!(!run.stderr().contains("secret.txt"), "{}", run.stderr());
    assert!(dst.join("a.txt").exists() && !dst.join("gone.txt").exists());
    let run = as_nobody(&env, &src, &dst, &["--on-error", "ignore", "-v"]);
    run.expect(0);
    assert!(run.all().contains("secret.txt"), "{}", run.all());
}
