//! The pass pipeline, stage by stage, on a small tree, once for each planner: what the
//! plan holds (the dry run prints it and changes nothing), what the apply does (the
//! same actions, and the replicas end equal), what is kept in a version before a
//! change, and what is recorded (stat caches, sync state, versions) so that the next
//! pass has nothing to do and hashes nothing.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use integration_tests::*;

/// Writes `p` with an mtime of `t` seconds past 2020 (files written within a timestamp
/// tick of a pass are hashed again by the next one, and these tests check it hashes
/// nothing).
fn put(p: &Path, text: &str, t: i64) {
    write(p, text);
    set_mtime(p, 1_600_000_000 + t, 0);
}

/// The action lines of a pass, in order, without their time and without the "would"
/// of a dry run: `copy     dir/f.txt  (SOURCE -> BACKUP)`.
fn actions(run: &Run) -> Vec<String> {
    let directions = ["(SOURCE -> BACKUP)", "(A -> B)", "(B -> A)", "(A)", "(B)"];
    run.stdout()
        .lines()
        .filter(|l| directions.iter().any(|d| l.ends_with(d)))
        .map(|l| {
            // "<time> <verb> <path>  (<direction>)", the verb after "would " in a dry run.
            let rest = l.split_once(' ').map_or(l, |(_, r)| r);
            rest.strip_prefix("would ").unwrap_or(rest).to_string()
        })
        .collect()
}

#[test]
fn a_mirror_pass_plans_applies_keeps_and_records() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    // Scanned: one of each kind of difference.
    put(&src.join("same.txt"), "same", 0);
    put(&dst.join("same.txt"), "same", 0);
    put(&src.join("new/file.txt"), "new", 1);
    put(&src.join("changed.txt"), "version 2", 2);
    put(&dst.join("changed.txt"), "version 1 edited in BACKUP", 3);
    put(&dst.join("gone/old.txt"), "only in BACKUP", 4);
    symlink("same.txt", src.join("link")).unwrap();
    let before = snapshot(&dst);

    // Planned: the dry run prints the plan and changes nothing anywhere.
    let dry = env.oneway(&src, &dst, &["--dry-run"]);
    dry.expect(0);
    let planned = actions(&dry);
    assert_eq!(snapshot(&dst), before, "a dry run changed BACKUP");
    assert!(!dst.join("__versions__").exists(), "a dry run made a store");
    for (verb, path) in [
        ("copy", "new/file.txt"),
        ("replace", "changed.txt"),
        ("remove", "gone"),
        ("symlink", "link"),
    ] {
        assert!(
            planned
                .iter()
                .any(|a| a.starts_with(verb) && a.contains(&format!(" {path}  "))),
            "the plan has no {verb} of {path}: {planned:#?}"
        );
    }
    assert!(
        !planned.iter().any(|a| a.contains("same.txt  ")),
        "{planned:#?}"
    );

    // Applied: the real pass does exactly what was planned (the copies run at once, so
    // their lines come in the order they finish).
    let real = env.oneway(&src, &dst, &[]);
    real.expect(0);
    let (mut done, mut want) = (actions(&real), planned.clone());
    done.sort();
    want.sort();
    assert_eq!(done, want, "{}", real.all());
    assert_same_tree(&src, &dst);

    // Kept first: BACKUP's own contents that the pass replaced or deleted are in a
    // version.
    assert!(store_holds(
        &dst.join("__versions__"),
        b"version 1 edited in BACKUP"
    ));
    assert!(store_holds(&dst.join("__versions__"), b"only in BACKUP"));

    // Recorded: both directory SHA-256s are reported and equal, and the stat caches
    // let the next pass find nothing to do without hashing a file.
    let sha = real.value_after("SOURCE sha256 ").unwrap();
    assert_eq!(real.value_after("BACKUP sha256 ").unwrap(), sha);
    assert_eq!(sha, coreutils_dir_sha(&src));
    let again = env.oneway(&src, &dst, &[]);
    again.expect(0).expect_hashed_nothing();
    assert!(again.stdout().contains("nothing to do"), "{}", again.all());
    assert!(actions(&again).is_empty(), "{}", again.all());
}

#[test]
fn a_two_way_pass_plans_applies_keeps_and_records() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    put(&a.join("shared.txt"), "base", 0);
    put(&a.join("edited-on-b.txt"), "base", 0);
    put(&a.join("deleted-on-a.txt"), "base", 0);
    put(&a.join("dir/keep.txt"), "base", 0);
    fs::create_dir_all(&b).unwrap();
    let first = env.run("twoway", [&a, &b, Path::new("--once")]);
    first.expect(0);
    assert!(first.stdout().contains("(first sync)"), "{}", first.all());

    // Scanned: one-sided changes on both sides, and a conflict.
    put(&a.join("new-on-a.txt"), "from A", 1);
    put(&b.join("edited-on-b.txt"), "edited on B", 2);
    fs::remove_file(a.join("deleted-on-a.txt")).unwrap();
    put(&a.join("shared.txt"), "A's edit", 3);
    put(&b.join("shared.txt"), "B's edit, longer", 4);
    let (before_a, before_b) = (snapshot(&a), snapshot(&b));

    // Planned: the dry run prints every step (the conflict copy first, on the loser's
    // own side) and changes nothing.
    let dry = env.run(
        "twoway",
        [&a, &b, Path::new("--once"), Path::new("--dry-run")],
    );
    dry.expect(0);
    let planned = actions(&dry);
    assert_eq!((snapshot(&a), snapshot(&b)), (before_a, before_b));
    assert!(dry.stdout().contains("1 conflicts"), "{}", dry.all());
    let at = |verb: &str, path: &str, dir: &str| {
        planned.iter().position(|x| {
            x.starts_with(verb) && x.contains(&format!(" {path}")) && x.ends_with(dir)
        })
    };
    let keep = at("keep-conflict", "shared.conflict-", "(A)")
        .unwrap_or_else(|| panic!("no conflict copy on A: {planned:#?}"));
    for (verb, path, dir) in [
        ("copy", "new-on-a.txt", "(A -> B)"),
        ("replace", "edited-on-b.txt", "(B -> A)"),
        ("remove", "deleted-on-a.txt", "(A -> B)"),
        ("replace", "shared.txt", "(B -> A)"),
        ("copy", "shared.conflict-", "(A -> B)"),
    ] {
        let i = at(verb, path, dir).unwrap_or_else(|| panic!("{verb} {path} {dir}: {planned:#?}"));
        assert!(
            keep < i,
            "the conflict copy comes after {path}: {planned:#?}"
        );
    }

    // Applied: the same actions, both replicas equal, the loser kept on both sides.
    let real = env.run("twoway", [&a, &b, Path::new("--once")]);
    real.expect(0);
    let mut done = actions(&real);
    let mut want = planned.clone();
    // The steps of a round, and the copies of a step, run at once.
    done.sort();
    want.sort();
    assert_eq!(done, want, "{}", real.all());
    assert_eq!(files_of(&a), files_of(&b));
    assert_eq!(fs::read(b.join("shared.txt")).unwrap(), b"B's edit, longer");
    let copies: Vec<_> = fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("shared.conflict-"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(fs::read(a.join(&copies[0])).unwrap(), b"A's edit");

    // Recorded: a version of each replica, the sync state and the stat caches make the
    // next pass a no-op that hashes nothing, and both directory SHA-256s agree.
    for side in ["A", "B"] {
        assert!(
            real.stdout().contains(&format!("new version of {side} ")),
            "{}",
            real.all()
        );
    }
    assert_eq!(
        real.value_after("A sha256 ").unwrap(),
        real.value_after("B sha256 ").unwrap()
    );
    let again = env.run("twoway", [&a, &b, Path::new("--once")]);
    again.expect(0).expect_hashed_nothing();
    assert!(again.stdout().contains("nothing to do"), "{}", again.all());
    assert!(again.stdout().contains(" 0 conflicts"), "{}", again.all());
}
