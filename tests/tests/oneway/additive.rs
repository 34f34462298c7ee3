//! `oneway --additive`: a "copy missing files only" tool. It adds what BACKUP lacks and
//! never deletes, overwrites or changes anything BACKUP holds, nor writes through a
//! symlink there; each difference is reported and left alone.

use super::*;

fn old(p: &Path, bytes: &str, secs: i64) {
    write(p, bytes);
    set_mtime(p, 1_600_000_000 + secs, 0);
}

#[test]
fn an_additive_pass_adds_what_backup_lacks_and_changes_nothing_it_holds() {
    let env = Env::new();
    let (src, dst, outside) = (env.path("src"), env.path("dst"), env.path("outside"));
    fs::create_dir_all(&outside).unwrap();
    // SOURCE: new files and folders, files BACKUP has otherwise, a folder where BACKUP
    // has a file and one where BACKUP has a symlink to elsewhere.
    old(&src.join("new.txt"), "new", 1);
    old(&src.join("album/new.jpg"), "photo", 2);
    old(&src.join("notes.txt"), "source's notes", 3);
    old(&src.join("same-bytes.txt"), "same", 4);
    old(&src.join("was-file/inner.txt"), "inner", 5);
    old(&src.join("via-link/inner.txt"), "inner", 6);
    // BACKUP: its own versions of some, files SOURCE lacks, a symlink out of the tree.
    old(&dst.join("notes.txt"), "backup's notes, edited there", 7);
    old(&dst.join("same-bytes.txt"), "same", 8);
    chmod(&dst.join("same-bytes.txt"), 0o600);
    old(&dst.join("only-in-backup.txt"), "keep me", 9);
    old(&dst.join("was-file"), "a file in BACKUP", 10);
    symlink(&outside, dst.join("via-link")).unwrap();
    let before = snapshot(&dst);

    let run = env.oneway(&src, &dst, &["--additive"]);
    run.expect(0);
    let out = run.all();
    // Added.
    assert_eq!(fs::read_to_string(dst.join("new.txt")).unwrap(), "new");
    assert_eq!(
        fs::read_to_string(dst.join("album/new.jpg")).unwrap(),
        "photo"
    );
    // Nothing BACKUP held changed: bytes, modes and mtimes of every entry it had.
    let after = snapshot(&dst);
    for (p, snap) in &before {
        if p.as_os_str().is_empty() {
            continue; // the root: a new entry in it moves its mtime
        }
        assert_eq!(after.get(p), Some(snap), "{} changed", p.display());
    }
    // Nothing written through the symlink.
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // Each difference reported.
    for p in [
        "notes.txt",
        "same-bytes.txt",
        "only-in-backup.txt",
        "was-file",
        "via-link",
    ] {
        assert!(
            out.lines().any(|l| l.contains("left ") && l.contains(p)),
            "{p} not reported:\n{out}"
        );
    }
    assert!(out.contains("5 differences left alone"), "{out}");
    // A second pass adds nothing and leaves the same.
    let again = env.oneway(&src, &dst, &["--additive"]);
    again.expect(0);
    assert!(again.all().contains("nothing to do"), "{}", again.all());
    assert!(again.all().contains("5 differences left alone"));
}

#[test]
fn additive_does_not_go_with_restore() {
    let env = Env::new();
    let run = env.run(
        "oneway",
        [
            env.path("src").as_os_str(),
            "--restore".as_ref(),
            "--additive".as_ref(),
        ],
    );
    run.expect(2);
}

#[test]
fn additive_is_a_config_key_too_and_twoway_refuses_it() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("new.txt"), "new");
    write(&dst.join("mine.txt"), "BACKUP's own");
    let config = env.path("config.json");
    write(&config, r#"{"additive": true}"#);
    let run = env.oneway(&src, &dst, &["--config", config.to_str().unwrap()]);
    run.expect(0);
    assert!(dst.join("new.txt").exists() && dst.join("mine.txt").exists());
    assert!(
        run.all().contains("1 differences left alone"),
        "{}",
        run.all()
    );
    let run = env.run(
        "twoway",
        [
            src.as_os_str(),
            dst.as_os_str(),
            "--once".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    run.expect(2);
    assert!(run.stderr().contains("oneway's"), "{}", run.stderr());
}
