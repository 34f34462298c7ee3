//! A first two-way sync killed or unable to flush: the progress it records.

use std::fs;
use std::path::Path;

use integration_tests::*;

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
    let log = env.path("first.log");
    // In one turn (the progress of a first sync in turns: below).
    let mut child = Running::new(
        env.cmd("twoway")
            .args([&a, &b])
            .args(["--once", "--no-versions", "--log"])
            .arg(&log)
            .env("TWOWAY_TURN", "1000000")
            .env("TWOWAY_INJECT_FAULT", "first-sync-flush")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Copies are in B, and two progress saves (a second apart) were tried, their
    // flushes failing.
    let tried = || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("progress of the first sync not recorded")
            .count()
    };
    let mut waited = 0;
    while tried() < 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pass ended too soon"
        );
        assert!(waited < 6000, "no progress save tried in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    assert!(b.join("small/100.txt").exists());
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        still_running,
        "the first sync ended before the kill (else this tests nothing)"
    );
    // Only the state written before anything changed (nothing was equal): no record of
    // copies whose names may not be on disk.
    let state = env.sync_state();
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
    let mut child = Running::new(
        env.cmd("twoway")
            .args([&a, &b])
            .args(["--once", "--no-versions"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait until the progress records the files this test changes afterwards (a state
    // file holds each path's bytes as they are). Whichever copy worker took them
    // installs them before it starts on the big file, or when its batch is full.
    let state_dir = env.home().join("state");
    let recorded = || {
        // The state file itself, not the temporary file it is being written to.
        let Some(state) = fs::read_dir(&state_dir)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| !e.file_name().to_string_lossy().starts_with(".twoway-tmp"))
            .and_then(|e| fs::read(e.path()).ok())
        else {
            return false;
        };
        ["small/000.txt", "small/001.txt", "small/002.txt"]
            .iter()
            .all(|p| state.windows(p.len()).any(|w| w == p.as_bytes()))
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

    // One-sided changes since: an edit on A, deletions on B (of a file the sync
    // copied, and of one both sides held alike before it began).
    write(&a.join("small/001.txt"), "edited on A after the kill");
    fs::remove_file(b.join("small/002.txt")).unwrap();
    fs::remove_file(b.join("both/same.txt")).unwrap();
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
    assert!(
        !a.join("both/same.txt").exists(),
        "a file both sides held alike was not in the state the first sync began with"
    );
    assert!(!b.join("zz-big.img").exists());
}

/// A first sync into an empty replica, a few paths a turn (the test kit's
/// `TWOWAY_TURN`), whose flush after its first turn fails: it records none of that
/// turn's copies, takes no other turn, and says so; the next pass finishes, and
/// deletes nothing.
#[test]
fn a_first_sync_in_turns_records_no_turn_it_could_not_flush() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    for i in 0..20 {
        write(
            &a.join(format!("d{}/{i:02}.txt", i % 3)),
            format!("file {i}"),
        );
    }
    fs::create_dir_all(&b).unwrap();
    let mut c = env.cmd("twoway");
    c.args([&a, &b])
        .args(["--once", "--no-versions", "-v"])
        .env("RUST_LOG", "debug")
        .env("TWOWAY_INJECT_FAULT", "turn-flush");
    let run = Run(c.output().unwrap());
    run.expect(1);
    assert!(run.all().contains("filling"), "{}", run.all());
    assert!(run.all().contains("turn 1:"), "{}", run.all());
    assert!(!run.all().contains("turn 2:"), "{}", run.all());
    assert!(run.all().contains("not updated"), "{}", run.all());
    // One error, the flush (nothing about the files of the turns not taken).
    assert!(run.all().contains(" 1 errors"), "{}", run.all());
    let copied = snapshot(&b)
        .keys()
        .filter(|p| p.extension().is_some())
        .count();
    assert!(copied > 0 && copied < 20, "{copied} of 20 files copied");
    // Only the state written before anything changed (nothing was equal).
    let len = fs::metadata(env.sync_state()).unwrap().len();
    assert!(
        len < 200,
        "the state recorded an unflushed turn ({len} bytes)"
    );
    // The next pass takes the files copied for equal, and copies the rest.
    env.run(
        "twoway",
        [&a, &b, Path::new("--once"), Path::new("--no-versions")],
    )
    .expect(0);
    // (Folders' mtimes aside: see the closing note of session 26.)
    assert_eq!(snapshot_with(&a, false), snapshot_with(&b, false));
}
