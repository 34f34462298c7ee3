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

/// A pass of `tool` (`oneway` or `twoway`) over `a` and `b`, with the pipeline's debug
/// lines (which say whether the pass was found to have nothing to do before its trees
/// were made whole).
fn debug_pass(env: &Env, tool: &str, a: &Path, b: &Path, extra: &[&str]) -> Run {
    debug_pass_from(env, tool, a, b, extra, Some("0"))
}

/// [`debug_pass`] with `TWOWAY_COMPACT_FROM` set to `from` (`None`: not set, the
/// tools' own threshold).
fn debug_pass_from(
    env: &Env,
    tool: &str,
    a: &Path,
    b: &Path,
    extra: &[&str],
    from: Option<&str>,
) -> Run {
    let mut c = env.cmd(tool);
    match from {
        Some(n) => c.env("TWOWAY_COMPACT_FROM", n),
        None => c.env_remove("TWOWAY_COMPACT_FROM"),
    };
    c.env("RUST_LOG", "debug")
        .args([a, b])
        .args(["--once", "-v"]);
    c.args(extra);
    let run = Run(c.output().expect("run binary"));
    run.expect(0);
    run
}

const ENDED_EARLY: &str = "nothing to do, found before the trees were made whole";
/// What a first pass into an empty BACKUP logs when it fills it a turn at a time.
const FILLED_IN_TURNS: &str = "filling BACKUP from SOURCE";

#[test]
fn a_pass_ends_before_its_trees_are_whole_only_where_the_whole_pass_does_nothing() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    put(&src.join("a.txt"), "a", 0);
    put(&src.join("dir/b.txt"), "b", 1);
    put(&src.join("dir/sub/c.txt"), "c", 2);
    symlink("a.txt", src.join("link")).unwrap();
    let first = debug_pass(&env, "oneway", &src, &dst, &[]);
    assert!(!first.all().contains(ENDED_EARLY), "{}", first.all());
    let sha = first
        .value_after("BACKUP sha256 ")
        .expect("a directory SHA-256");

    // Nothing changed: the pass ends early, with the whole pass's summary, and records
    // nothing.
    let quiet = debug_pass(&env, "oneway", &src, &dst, &[]);
    quiet.expect_hashed_nothing();
    assert!(quiet.all().contains(ENDED_EARLY), "{}", quiet.all());
    assert!(quiet.all().contains("nothing to do"), "{}", quiet.all());
    assert_eq!(quiet.value_after("SOURCE sha256 "), Some(sha.clone()));
    assert_eq!(quiet.value_after("BACKUP sha256 "), Some(sha.clone()));
    assert_eq!(env.versions_of(&src).len(), 1);

    // A change mirrored with versions off: the replicas are alike again, but the
    // store's latest version is not BACKUP as it is, so the pass goes on whole and
    // records one.
    put(&src.join("dir/b.txt"), "b, edited", 3);
    env.oneway(&src, &dst, &["--no-versions"]).expect(0);
    let whole = debug_pass(&env, "oneway", &src, &dst, &[]);
    assert!(!whole.all().contains(ENDED_EARLY), "{}", whole.all());
    assert_eq!(env.versions_of(&src).len(), 2, "{}", whole.all());
    let quiet = debug_pass(&env, "oneway", &src, &dst, &[]);
    assert!(quiet.all().contains(ENDED_EARLY), "{}", quiet.all());
    assert_eq!(env.versions_of(&src).len(), 2);

    // A hand edit in BACKUP that keeps the mtime: the stat cache no longer vouches for
    // the file, so the pass goes on whole and puts it back. (One that kept the size too
    // could get the inode the file had, and then neither pass would see it: the stat
    // cache knows a file by its size, mtime and inode.)
    let victim = dst.join("dir/sub/c.txt");
    let mtime = fs::metadata(&victim).unwrap().modified().unwrap();
    fs::remove_file(&victim).unwrap();
    write(&victim, "edited by hand");
    filetime::set_file_mtime(&victim, filetime::FileTime::from_system_time(mtime)).unwrap();
    let mended = debug_pass(&env, "oneway", &src, &dst, &[]);
    assert!(!mended.all().contains(ENDED_EARLY), "{}", mended.all());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "c");

    // No stat cache: every file is hashed by a whole pass, which finds nothing to do.
    fs::remove_dir_all(env.home().join("cache")).unwrap();
    let rehashed = debug_pass(&env, "oneway", &src, &dst, &[]);
    assert!(!rehashed.all().contains(ENDED_EARLY), "{}", rehashed.all());
    assert!(
        !rehashed.all().contains("hashed 0 files"),
        "{}",
        rehashed.all()
    );
    assert!(
        rehashed.all().contains("nothing to do"),
        "{}",
        rehashed.all()
    );
    let quiet = debug_pass(&env, "oneway", &src, &dst, &[]);
    assert!(quiet.all().contains(ENDED_EARLY), "{}", quiet.all());
    assert_same_tree(&src, &dst);
}

/// What the scan's debug line says, compact or whole.
const SCANNED: &str = " entries in ";

/// Whether pass `run` read both replicas compact (else whole).
fn read_compact(run: &Run) -> bool {
    let all = run.all();
    let scanned = all
        .lines()
        .find(|l| l.contains(" scanned ") && l.contains(SCANNED))
        .unwrap_or_else(|| panic!("a scan's debug line: {all}"));
    assert!(
        scanned.contains("held compact") != scanned.ends_with(", whole"),
        "{scanned}"
    );
    scanned.contains("held compact")
}

#[test]
fn a_pass_reads_compact_only_where_both_stat_caches_prove_enough_files() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    put(&src.join("a.txt"), "a", 0);
    put(&src.join("dir/b.txt"), "b", 1);
    put(&src.join("dir/c.txt"), "c", 2);
    let pass = |from: Option<&str>| debug_pass_from(&env, "oneway", &src, &dst, &[], from);
    // No stat cache yet: nothing can prove the replicas unchanged; the first pass reads
    // compact only to fill the empty BACKUP a few paths at a time.
    let first = pass(Some("0"));
    assert!(read_compact(&first), "{}", first.all());
    assert!(first.all().contains(FILLED_IN_TURNS), "{}", first.all());
    // Both caches prove their replicas, of 3 files each.
    let compact = pass(Some("3"));
    assert!(read_compact(&compact), "{}", compact.all());
    assert!(compact.all().contains(ENDED_EARLY), "{}", compact.all());
    for small in [pass(Some("4")), pass(None)] {
        assert!(!read_compact(&small), "{}", small.all());
        assert!(!small.all().contains(ENDED_EARLY), "{}", small.all());
        assert!(small.stdout().contains("nothing to do"), "{}", small.all());
        small.expect_hashed_nothing();
    }
    // A dry run prints its plan: whole.
    let dry = debug_pass(&env, "oneway", &src, &dst, &["--dry-run"]);
    assert!(!read_compact(&dry), "{}", dry.all());
    assert_same_tree(&src, &dst);
}

#[test]
fn a_two_way_pass_ends_early_only_where_both_replicas_are_as_the_state_records() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    put(&a.join("one.txt"), "one", 0);
    put(&a.join("dir/two.txt"), "two", 1);
    fs::create_dir_all(&b).unwrap();
    debug_pass(&env, "twoway", &a, &b, &[]);
    // The first pass after a first sync hashes what the copies wrote; then nothing.
    debug_pass(&env, "twoway", &a, &b, &[]);
    let quiet = debug_pass(&env, "twoway", &a, &b, &[]);
    assert!(quiet.all().contains(ENDED_EARLY), "{}", quiet.all());
    let state = fs::read(env.sync_state()).unwrap();

    // A file's mode changed on one side only: not as the state records it.
    chmod(&b.join("dir/two.txt"), 0o600);
    let whole = debug_pass(&env, "twoway", &a, &b, &[]);
    assert!(!whole.all().contains(ENDED_EARLY), "{}", whole.all());
    let mode = fs::metadata(a.join("dir/two.txt")).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert_ne!(
        fs::read(env.sync_state()).unwrap(),
        state,
        "the state records the change"
    );

    // A file new on B, in a folder of its own, after every path A has.
    put(&b.join("zz/new.txt"), "new", 5);
    let synced = debug_pass(&env, "twoway", &a, &b, &[]);
    assert!(!synced.all().contains(ENDED_EARLY), "{}", synced.all());
    assert_eq!(fs::read_to_string(a.join("zz/new.txt")).unwrap(), "new");
    debug_pass(&env, "twoway", &a, &b, &[]);
    let quiet = debug_pass(&env, "twoway", &a, &b, &[]);
    assert!(quiet.all().contains(ENDED_EARLY), "{}", quiet.all());
    // (Folders' mtimes are not synced by twoway.)
    assert_eq!(snapshot_with(&a, false), snapshot_with(&b, false));
}

/// Whether a pass planned only the part of both trees where it had something to do.
fn planned_in_part(run: &Run) -> bool {
    run.all()
        .contains("planned a window at a time: something to do in ")
}

/// A tree of folders, files and a symlink under `root`, every mtime in the past.
fn a_tree_of_many_windows(root: &Path) {
    for d in ["a", "b", "c", "d", "e"] {
        for i in 0..4 {
            put(&root.join(format!("{d}/f{i}")), &format!("{d} {i}"), i);
            put(
                &root.join(format!("{d}/sub/g{i}")),
                &format!("{d} sub {i}"),
                10 + i,
            );
        }
    }
    symlink("a/f0", root.join("link")).unwrap();
}

/// Two pairs of replicas for `tool`, the same tree synced into each, to make the same
/// changes in: the first pair's passes read compact from 0 files in the caches (so a
/// pass with changes is planned in part), the second's only from a million (so it is
/// planned whole); each pair's last pass ended early. Each with its
/// `TWOWAY_COMPACT_FROM`.
fn settled_pairs(
    env: &Env,
    tool: &str,
) -> [(std::path::PathBuf, std::path::PathBuf, &'static str); 2] {
    let pairs = [
        (env.path("a1"), env.path("b1"), "0"),
        (env.path("a2"), env.path("b2"), "1000000"),
    ];
    for (a, b, from) in &pairs {
        a_tree_of_many_windows(a);
        fs::create_dir_all(b).unwrap();
        // (A two-way pass after a first sync hashes what its copies wrote.)
        debug_pass_from(env, tool, a, b, &[], Some(from));
        debug_pass_from(env, tool, a, b, &[], Some(from));
        let quiet = debug_pass_from(env, tool, a, b, &[], Some("0"));
        assert!(quiet.all().contains(ENDED_EARLY), "{}", quiet.all());
    }
    pairs
}

/// Two passes of the same changes on the same trees of 47 entries each, one planned in
/// part (`part`) and one whole: the part held less than 30 entries of each tree, and
/// both did the same (copies are logged as they end, so in any order), a move among
/// it, and gave the same values after each of `keys` (SHA-256s, versions).
fn assert_planned_alike(part: &Run, whole: &Run, keys: &[&str]) {
    assert!(planned_in_part(part), "{}", part.all());
    assert!(!planned_in_part(whole), "{}", whole.all());
    let planning = part.value_after("planning ").expect("the part's size");
    let entries: usize = planning.parse().expect("a count");
    assert!(entries < 30, "planned {entries} of 47 entries");
    let sorted = |r: &Run| {
        let mut a = actions(r);
        a.sort();
        a
    };
    assert_eq!(sorted(part), sorted(whole));
    assert!(
        actions(part).iter().any(|a| a.starts_with("move")),
        "{:?}",
        actions(part)
    );
    for key in keys {
        assert_eq!(part.value_after(key), whole.value_after(key), "{key}");
    }
}

#[test]
fn a_mirror_pass_with_changes_plans_only_their_part_and_leaves_what_a_whole_pass_leaves() {
    let env = Env::new();
    let pairs = settled_pairs(&env, "oneway");
    for (src, _, _) in &pairs {
        // What a person does between two passes: an edit, a folder removed, one made,
        // a file renamed, a mode changed, a symlink pointed elsewhere, a file that
        // became a folder.
        put(&src.join("b/f2"), "b 2, edited", 30);
        fs::remove_dir_all(src.join("c/sub")).unwrap();
        put(&src.join("f/new"), "new", 31);
        fs::rename(src.join("a/f1"), src.join("a/f1-renamed")).unwrap();
        chmod(&src.join("d/f3"), 0o600);
        fs::remove_file(src.join("link")).unwrap();
        symlink("b/f0", src.join("link")).unwrap();
        fs::remove_file(src.join("e/f3")).unwrap();
        put(&src.join("e/f3/inside"), "inside", 32);
    }
    let runs: Vec<Run> = pairs
        .iter()
        .map(|(src, dst, from)| debug_pass_from(&env, "oneway", src, dst, &[], Some(from)))
        .collect();
    let keys = ["SOURCE sha256 ", "BACKUP sha256 ", "new version "];
    assert_planned_alike(&runs[0], &runs[1], &keys);
    for (src, dst, _) in &pairs {
        assert_same_tree(src, dst);
        // What it recorded is the replicas as they are: the next pass ends early.
        let next = debug_pass_from(&env, "oneway", src, dst, &[], Some("0"));
        assert!(next.all().contains(ENDED_EARLY), "{}", next.all());
    }
}

#[test]
fn a_mirror_planned_in_part_counts_deletions_against_the_whole_backup() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    a_tree_of_many_windows(&src);
    debug_pass(&env, "oneway", &src, &dst, &[]);
    debug_pass(&env, "oneway", &src, &dst, &[]);
    // 4 of BACKUP's 40 files: 10%, though most of the part planned.
    fs::remove_dir_all(src.join("c/sub")).unwrap();
    let run = debug_pass(&env, "oneway", &src, &dst, &["--max-delete", "15"]);
    assert!(planned_in_part(&run), "{}", run.all());
    assert!(!dst.join("c/sub").exists());
    assert_same_tree(&src, &dst);
    // 8 of 36 (22%): refused, nothing changed.
    fs::remove_dir_all(src.join("d")).unwrap();
    let mut c = env.cmd("oneway");
    c.args([&src, &dst]).args(["--once", "--max-delete", "15"]);
    let refused = Run(c.output().expect("run binary"));
    refused.expect(2);
    assert!(
        refused.all().contains("8 of the 36 files"),
        "{}",
        refused.all()
    );
    assert!(dst.join("d/f0").exists());
}

#[test]
fn a_mirror_planned_in_part_saves_backup_whole_first_where_no_version_holds_it() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    a_tree_of_many_windows(&src);
    debug_pass(&env, "oneway", &src, &dst, &[]);
    debug_pass(&env, "oneway", &src, &dst, &[]);
    // A hand edit in BACKUP (no version holds it), and a change in SOURCE elsewhere.
    put(&dst.join("e/f1"), "edited in BACKUP", 40);
    let before = snapshot_with(&dst, false);
    put(&src.join("a/f2"), "a 2, edited", 41);
    let run = debug_pass(&env, "oneway", &src, &dst, &[]);
    assert!(planned_in_part(&run), "{}", run.all());
    // The pass saves BACKUP as it was before putting SOURCE's file back: the whole
    // of it, though the pass held only its part.
    assert!(run.all().contains("as version 2 first"), "{}", run.all());
    assert_same_tree(&src, &dst);
    let listed = env.run("recovery", [Path::new("list"), &dst]);
    listed.expect(0);
    assert!(
        listed.stdout().contains("before a pass"),
        "{}",
        listed.all()
    );
    let to = env.path("restored");
    let restored = env.run(
        "recovery",
        [
            Path::new("restore"),
            &dst,
            Path::new("--version"),
            Path::new("2"),
            Path::new("--to"),
            &to,
        ],
    );
    restored.expect(0);
    assert_eq!(
        snapshot_with(&to, false),
        before,
        "version 2 is BACKUP as it was"
    );
    let verified = env.run("recovery", [Path::new("verify"), &dst]);
    verified.expect(0);
}

/// The paths of `root` as `snapshot_with` reads them, folders' mtimes left out
/// (twoway does not sync them).
fn contents(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Snap> {
    snapshot_with(root, false)
}

#[test]
fn a_two_way_pass_with_changes_plans_only_their_part_and_leaves_what_a_whole_pass_leaves() {
    let env = Env::new();
    let pairs = settled_pairs(&env, "twoway");
    for (a, b, _) in &pairs {
        // On A: an edit, a folder removed, one made, a file renamed, a mode.
        put(&a.join("b/f2"), "b 2, edited in A", 30);
        fs::remove_dir_all(a.join("c/sub")).unwrap();
        put(&a.join("f/new"), "new in A", 31);
        fs::rename(a.join("a/f1"), a.join("a/f1-renamed")).unwrap();
        chmod(&a.join("d/f3"), 0o600);
        // On B: an edit, a file removed, a folder made, a symlink pointed elsewhere.
        put(&b.join("e/f0"), "e 0, edited in B", 32);
        fs::remove_file(b.join("d/f1")).unwrap();
        put(&b.join("g/new"), "new in B", 33);
        fs::remove_file(b.join("link")).unwrap();
        symlink("b/f1", b.join("link")).unwrap();
        // Removed on both sides (only the state has it now), and removed on A while
        // B edited it (the edit wins).
        fs::remove_file(a.join("a/f3")).unwrap();
        fs::remove_file(b.join("a/f3")).unwrap();
        fs::remove_file(a.join("b/f3")).unwrap();
        put(&b.join("b/f3"), "b 3, edited in B", 34);
    }
    let runs: Vec<Run> = pairs
        .iter()
        .map(|(a, b, from)| debug_pass_from(&env, "twoway", a, b, &[], Some(from)))
        .collect();
    let keys = [
        "A sha256 ",
        "B sha256 ",
        "new version of A ",
        "new version of B ",
    ];
    assert_planned_alike(&runs[0], &runs[1], &keys);
    assert!(!pairs[0].0.join("a/f3").exists() && pairs[0].0.join("b/f3").exists());
    // (The symlinks were made at different times.)
    let made_alike = |root: &Path| {
        let mut c = contents(root);
        c.remove(Path::new("link"));
        c
    };
    assert_eq!(made_alike(&pairs[0].0), made_alike(&pairs[1].0));
    for (a, b, _) in &pairs {
        assert_eq!(contents(a), contents(b));
        // What it recorded (the sync state, the caches, the versions) is the replicas
        // as they are: the next pass ends early.
        let next = debug_pass_from(&env, "twoway", a, b, &[], Some("0"));
        assert!(next.all().contains(ENDED_EARLY), "{}", next.all());
    }
}

/// The names in `dir` with a conflict copy's mark, and what each holds.
fn conflict_copies(dir: &Path) -> Vec<(String, String)> {
    let mut copies: Vec<(String, String)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".conflict-"))
        .map(|n| {
            let text = fs::read_to_string(dir.join(&n)).unwrap();
            (n, text)
        })
        .collect();
    copies.sort();
    copies
}

#[test]
fn a_two_way_conflict_planned_in_part_takes_a_name_no_path_has() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    a_tree_of_many_windows(&a);
    fs::create_dir_all(&b).unwrap();
    for _ in 0..3 {
        debug_pass(&env, "twoway", &a, &b, &[]);
    }
    // Changed on both sides, differently: B's is newer and wins, A's is kept beside it
    // under a name made from its mtime.
    put(&a.join("c/f1"), "c 1, edited in A", 40);
    put(&b.join("c/f1"), "c 1, edited in B", 41);
    let first = debug_pass(&env, "twoway", &a, &b, &[]);
    assert!(planned_in_part(&first), "{}", first.all());
    assert!(first.stdout().contains(" 1 conflicts"), "{}", first.all());
    let copies = conflict_copies(&a.join("c"));
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].1, "c 1, edited in A");
    debug_pass(&env, "twoway", &a, &b, &[]);
    // The same again, with the same mtimes: the name the first copy took is taken now,
    // though it lies outside the part planned (unchanged on both sides).
    put(&a.join("c/f1"), "c 1, edited in A again", 40);
    put(&b.join("c/f1"), "c 1, edited in B again", 41);
    let second = debug_pass(&env, "twoway", &a, &b, &[]);
    assert!(planned_in_part(&second), "{}", second.all());
    let copies = conflict_copies(&a.join("c"));
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert_eq!(copies[0].1, "c 1, edited in A", "the first copy is kept");
    assert!(copies[1].0.ends_with("-2"), "{copies:?}");
    assert_eq!(copies[1].1, "c 1, edited in A again");
    assert_eq!(contents(&a), contents(&b));
    assert_eq!(
        fs::read_to_string(a.join("c/f1")).unwrap(),
        "c 1, edited in B again"
    );
    // A's edit was in no version: A was saved whole first, and that version restores
    // it (and the rest of A as it was).
    let id = second.value_after("as version ").expect("A saved first");
    let to = env.path("restored");
    let restored = env.run(
        "recovery",
        [
            Path::new("restore"),
            &a,
            Path::new("--version"),
            Path::new(&id),
            Path::new("--to"),
            &to,
        ],
    );
    restored.expect(0);
    assert_eq!(
        fs::read_to_string(to.join("c/f1")).unwrap(),
        "c 1, edited in A again"
    );
    assert_eq!(fs::read_to_string(to.join("e/sub/g2")).unwrap(), "e sub 2");
    assert_eq!(conflict_copies(&to.join("c")).len(), 1);
    debug_pass(&env, "twoway", &a, &b, &[]);
    let quiet = debug_pass(&env, "twoway", &a, &b, &[]);
    assert!(quiet.all().contains(ENDED_EARLY), "{}", quiet.all());
}

#[test]
fn a_two_way_pass_planned_in_part_counts_deletions_against_the_whole_replica() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    a_tree_of_many_windows(&a);
    fs::create_dir_all(&b).unwrap();
    for _ in 0..3 {
        debug_pass(&env, "twoway", &a, &b, &[]);
    }
    // 4 of B's 40 files: 10%.
    fs::remove_dir_all(a.join("c/sub")).unwrap();
    let run = debug_pass(&env, "twoway", &a, &b, &["--max-delete", "15"]);
    assert!(planned_in_part(&run), "{}", run.all());
    assert!(!b.join("c/sub").exists());
    // 8 of 36 (22%): refused, nothing changed.
    fs::remove_dir_all(a.join("d")).unwrap();
    let mut c = env.cmd("twoway");
    c.args([&a, &b]).args(["--once", "--max-delete", "15"]);
    let refused = Run(c.output().expect("run binary"));
    refused.expect(2);
    assert!(
        refused.all().contains("8 of the 36 files"),
        "{}",
        refused.all()
    );
    assert!(b.join("d/f0").exists());
}

/// `tree` (see [`a_tree_of_many_windows`]) with every folder's mode and mtime set, the
/// deepest first, the root's last: a folder whose metadata is set before its last entry
/// is written shows it.
fn with_folders_set(root: &Path) {
    a_tree_of_many_windows(root);
    fs::create_dir_all(root.join("e/sub/deeper/deepest")).unwrap();
    put(&root.join("e/sub/deeper/deepest/last"), "last", 3);
    let mut dirs: Vec<std::path::PathBuf> = snapshot_with(root, true)
        .into_iter()
        .filter(|(_, s)| matches!(s, Snap::Dir { .. }))
        .map(|(p, _)| p)
        .collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, d) in dirs.iter().enumerate() {
        let p = root.join(d);
        if d.as_os_str().is_empty() {
            continue;
        }
        chmod(&p, if i % 2 == 0 { 0o750 } else { 0o755 });
        set_mtime(&p, 1_000_000 + i as i64, 7);
    }
    chmod(root, 0o751);
    set_mtime(root, 999_999, 0);
}

/// The same tree (see [`with_folders_set`]) passed by `tool` into two empty replicas:
/// three paths a turn (the test kit's `TWOWAY_TURN`), and in one turn. Both pairs, and
/// the two runs, whose actions (in any order) and `keys` (SHA-256s, versions) are the
/// same; the first took 16 turns.
fn filled_and_whole(
    env: &Env,
    tool: &str,
    keys: &[&str],
) -> ([(std::path::PathBuf, std::path::PathBuf); 2], [Run; 2]) {
    let pairs = [
        (env.path("a1"), env.path("b1")),
        (env.path("a2"), env.path("b2")),
    ];
    let runs = [(&pairs[0], "3"), (&pairs[1], "1000000")].map(|((a, b), turn)| {
        with_folders_set(a);
        fs::create_dir_all(b).unwrap();
        let mut c = env.cmd(tool);
        c.env("RUST_LOG", "debug")
            .env("TWOWAY_TURN", turn)
            .args([a, b])
            .args(["--once", "-v"]);
        let run = Run(c.output().expect("run binary"));
        run.expect(0);
        run
    });
    let [turns, whole] = &runs;
    assert!(turns.all().contains("turn 16:"), "{}", turns.all());
    assert!(!whole.all().contains("turn 1:"), "{}", whole.all());
    let sorted = |r: &Run| {
        let mut a = actions(r);
        a.sort();
        a
    };
    assert_eq!(sorted(turns), sorted(whole));
    for key in keys {
        assert_eq!(turns.value_after(key), whole.value_after(key), "{key}");
    }
    (pairs, runs)
}

#[test]
fn a_first_mirror_filled_a_few_paths_at_a_time_leaves_what_a_whole_pass_leaves() {
    let env = Env::new();
    let keys = ["SOURCE sha256 ", "BACKUP sha256 ", "new version "];
    let (pairs, [turns, whole]) = filled_and_whole(&env, "oneway", &keys);
    assert!(turns.all().contains(FILLED_IN_TURNS), "{}", turns.all());
    assert!(!whole.all().contains(FILLED_IN_TURNS), "{}", whole.all());
    for (src, dst) in &pairs {
        // Every folder's mode and mtime too, the root's included.
        assert_eq!(snapshot_with(dst, true), snapshot_with(src, true));
        // What it recorded (stat caches, SHA-256s, the version) is the replicas as
        // they are: the next pass ends before its trees are whole.
        let next = debug_pass(&env, "oneway", src, dst, &[]);
        assert!(next.all().contains(ENDED_EARLY), "{}", next.all());
        env.run("recovery", [Path::new("verify"), dst]).expect(0);
        let to = env.path(&format!("restored-{}", dst.display().to_string().len()));
        let _ = fs::remove_dir_all(&to);
        env.run(
            "recovery",
            [
                Path::new("restore"),
                dst,
                Path::new("--version"),
                Path::new("1"),
                Path::new("--to"),
                &to,
            ],
        )
        .expect(0);
        assert_eq!(snapshot_with(&to, false), snapshot_with(src, false));
    }
}

#[test]
fn a_first_sync_filled_a_few_paths_at_a_time_leaves_what_a_whole_sync_leaves() {
    let env = Env::new();
    let keys = [
        "A sha256 ",
        "B sha256 ",
        "new version of A ",
        "new version of B ",
    ];
    let (pairs, _) = filled_and_whole(&env, "twoway", &keys);
    for (a, b) in &pairs {
        // Every folder's mode and mtime too (a two-way sync leaves each root's own).
        let below = |root: &Path| {
            let mut s = snapshot_with(root, true);
            s.remove(Path::new(""));
            s
        };
        assert_eq!(below(b), below(a));
        // The state records every path as synced: the next pass ends early, and a
        // one-sided deletion and a one-sided edit are carried over (a path the state
        // did not hold would come back, or make a conflict).
        let next = debug_pass(&env, "twoway", a, b, &[]);
        assert!(next.all().contains(ENDED_EARLY), "{}", next.all());
        fs::remove_file(b.join("e/sub/g2")).unwrap();
        put(&a.join("c/f1"), "c 1, edited on A", 50);
        let run = debug_pass(&env, "twoway", a, b, &[]);
        assert!(run.stdout().contains(" 0 conflicts"), "{}", run.all());
        assert!(
            !a.join("e/sub/g2").exists(),
            "the deletion was carried over"
        );
        assert_eq!(
            fs::read_to_string(b.join("c/f1")).unwrap(),
            "c 1, edited on A"
        );
        for side in [a, b] {
            env.run("recovery", [Path::new("verify"), side]).expect(0);
        }
    }
}
