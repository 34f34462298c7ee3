//! `twoway` end to end, with the real binary.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::*;

const OLD: i64 = 1_600_000_000;

fn sync(env: &Env, a: &Path, b: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&std::ffi::OsStr> = vec![a.as_os_str(), b.as_os_str(), "--once".as_ref()];
    args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
    env.run("twoway", args)
}

/// One pass as the unprivileged user `nobody` when the tests run as root (so that file
/// modes and owners apply); the test gives `nobody` what it must be able to change.
fn sync_as_nobody(env: &Env, a: &Path, b: &Path, extra: &[&str]) -> Run {
    Run(unprivileged(env, "twoway")
        .arg(a)
        .arg(b)
        .arg("--once")
        .args(extra)
        .output()
        .unwrap())
}

fn pair(env: &Env) -> (PathBuf, PathBuf) {
    made(env.path("a"), env.path("b"))
}

/// Replicas `a` and `b`, made (empty) if missing.
fn made(a: PathBuf, b: PathBuf) -> (PathBuf, PathBuf) {
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    (a, b)
}

/// Both replicas hold the same entries (bytes, modes, file and link mtimes, targets).
fn assert_in_sync(a: &Path, b: &Path) {
    let strip = |m: std::collections::BTreeMap<PathBuf, Snap>| {
        m.into_iter()
            .filter(|(p, _)| !p.as_os_str().is_empty())
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (sa, sb) = (
        strip(snapshot_with(a, false)),
        strip(snapshot_with(b, false)),
    );
    for (p, x) in &sa {
        assert_eq!(
            Some(x),
            sb.get(p),
            "{} differs between the replicas",
            p.display()
        );
    }
    for p in sb.keys() {
        assert!(
            sa.contains_key(p),
            "{} is only in {}",
            p.display(),
            b.display()
        );
    }
}

/// Every file content under `root` (bytes hashes), store and our temporary files excluded.
fn contents(root: &Path) -> BTreeSet<String> {
    let temps = temp_leftovers(root);
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| !temps.contains(p))
        .filter_map(|(_, s)| match s {
            Snap::File { sha256, .. } => Some(sha256),
            _ => None,
        })
        .collect()
}

fn conflict_copies(root: &Path) -> Vec<PathBuf> {
    snapshot(root)
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".conflict-"))
        .collect()
}

#[test]
fn first_sync_is_a_union_then_one_sided_edits_propagate() {
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("docs/a.txt"), "from a");
    write(&b.join("docs/b.txt"), "from b");
    fs::create_dir_all(a.join("empty/inner")).unwrap();
    write(&a.join("run.sh"), "#!/bin/sh");
    chmod(&a.join("run.sh"), 0o755);
    symlink("docs/a.txt", a.join("link")).unwrap();
    write(&raw(&b, b"bytes-\xff"), "non-utf8");
    write(&b.join("name with\nnewline"), "nl");
    sync(&env, &a, &b, &[]).expect(0);
    assert_in_sync(&a, &b);
    assert!(a.join("docs/b.txt").exists() && b.join("empty/inner").is_dir());

    // Edits on both sides, to different paths.
    write(&a.join("docs/a.txt"), "edited on a");
    fs::remove_file(b.join("docs/b.txt")).unwrap();
    chmod(&b.join("run.sh"), 0o700);
    fs::remove_file(a.join("link")).unwrap();
    symlink("run.sh", a.join("link")).unwrap();
    sync(&env, &a, &b, &[]).expect(0);
    assert_in_sync(&a, &b);
    assert_eq!(
        fs::read_to_string(b.join("docs/a.txt")).unwrap(),
        "edited on a"
    );
    assert!(!a.join("docs/b.txt").exists());
    assert_eq!(
        fs::read_link(b.join("link")).unwrap(),
        PathBuf::from("run.sh")
    );
    let second = sync(&env, &a, &b, &[]);
    second.expect(0);
    assert!(
        second.stdout().contains("nothing to do"),
        "{}",
        second.stdout()
    );
}

fn conflict_case(policy: &str, a_newer: bool) -> (String, String, Vec<PathBuf>) {
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("notes.txt"), "base");
    sync(&env, &a, &b, &[]).expect(0);
    write(&a.join("notes.txt"), "edit on a");
    write(&b.join("notes.txt"), "edit on b");
    let (ta, tb) = if a_newer {
        (OLD + 20, OLD + 10)
    } else {
        (OLD + 10, OLD + 20)
    };
    set_mtime(&a.join("notes.txt"), ta, 0);
    set_mtime(&b.join("notes.txt"), tb, 0);
    let run = sync(&env, &a, &b, &["--conflict", policy]);
    run.expect(0);
    assert!(run.all().contains("conflict"), "{}", run.all());
    assert_in_sync(&a, &b);
    let copies = conflict_copies(&a);
    let kept = fs::read_to_string(a.join("notes.txt")).unwrap();
    let other = fs::read_to_string(a.join(&copies[0])).unwrap();
    (kept, other, copies)
}

#[test]
fn a_tree_of_many_chunks_syncs_edits_in_every_part_of_it() {
    // 20,000 entries: trees, states and the merges after a pass span several chunks
    // (8,192 entries each), and the scan hands over one part per top directory. A first
    // sync this size, in one turn, sets its planned state aside while it copies: the
    // second pass's removal of t17 from B shows that state was recorded whole.
    let env = Env::new();
    let (a, b) = pair(&env);
    for i in 0..20_000 {
        write(
            &a.join(format!("t{:02}/d{:03}/f{i}", i % 40, i % 300)),
            i.to_string(),
        );
    }
    let mut first = env.cmd("twoway");
    first
        .args([&a, &b])
        .arg("--once")
        .env("TWOWAY_TURN", "1000000");
    Run(first.output().unwrap()).expect(0);
    assert_in_sync(&a, &b);

    // Edits spread over the whole order: first, middle and last parts, a whole
    // subtree removed, files added before and after everything, on both sides.
    for i in (0..20_000).step_by(997) {
        write(
            &a.join(format!("t{:02}/d{:03}/f{i}", i % 40, i % 300)),
            "edited on a",
        );
    }
    fs::remove_dir_all(a.join("t17")).unwrap();
    write(&b.join("0 first/new"), "b");
    write(&b.join("t39/zz last"), "b");
    write(&b.join("t20/d020/added"), "b");
    // Older than a timestamp tick when the pass reads them: their hashes get cached.
    std::thread::sleep(Duration::from_millis(300));
    sync(&env, &a, &b, &["--max-delete", "100"]).expect(0);
    assert_in_sync(&a, &b);
    assert!(!b.join("t17").exists());
    assert_eq!(fs::read_to_string(a.join("t39/zz last")).unwrap(), "b");
    for i in (0..20_000).step_by(997).filter(|i| i % 40 != 17) {
        let p = format!("t{:02}/d{:03}/f{i}", i % 40, i % 300);
        assert_eq!(
            fs::read_to_string(b.join(&p)).unwrap(),
            "edited on a",
            "{p}"
        );
    }
    assert_eq!(snapshot(&a).len(), snapshot(&b).len());

    // Nothing left to do, and nothing to hash.
    let again = sync(&env, &a, &b, &[]);
    again.expect(0);
    again.expect_hashed_nothing();
    assert!(!again.all().contains("copy"), "{}", again.all());
}

#[test]
fn files_copied_by_a_pass_are_not_hashed_again_on_either_side() {
    let env = Env::new();
    let (a, b) = pair(&env);
    for (root, name) in [(&a, "x"), (&a, "d/y"), (&b, "z")] {
        write(&root.join(name), name.repeat(1000));
        set_mtime(&root.join(name), OLD, 0);
    }
    // Each file is read once, by its copy, which hashes it for both sides: the source
    // side takes the hash of what was read, so nothing is left to hash after the pass.
    let first = sync(&env, &a, &b, &[]);
    first.expect(0);
    first.expect_hashed_nothing();
    assert_in_sync(&a, &b);
    let second = sync(&env, &a, &b, &[]);
    second.expect(0);
    second.expect_hashed_nothing();
}

#[test]
fn conflicts_follow_the_policy_and_keep_the_loser_on_both_sides() {
    let (kept, other, copies) = conflict_case("newer", false);
    assert_eq!((kept.as_str(), other.as_str()), ("edit on b", "edit on a"));
    assert_eq!(copies.len(), 1);
    let name = copies[0].to_string_lossy().into_owned();
    assert!(
        name.starts_with("notes.conflict-") && name.ends_with(".txt"),
        "{name}"
    );
    assert_eq!(
        "notes.conflict-YYYYMMDD-HHMMSS.txt".len(),
        name.len(),
        "{name}"
    );

    let (kept, other, _) = conflict_case("newer", true);
    assert_eq!((kept.as_str(), other.as_str()), ("edit on a", "edit on b"));
    let (kept, other, _) = conflict_case("prefer-a", false);
    assert_eq!((kept.as_str(), other.as_str()), ("edit on a", "edit on b"));
    let (kept, other, _) = conflict_case("prefer-b", true);
    assert_eq!((kept.as_str(), other.as_str()), ("edit on b", "edit on a"));
}

#[test]
fn modification_beats_deletion_and_dir_delete_keeps_edited_file() {
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("f"), "v1");
    write(&a.join("dir/sub/edited.txt"), "v1");
    write(&a.join("dir/plain.txt"), "p");
    sync(&env, &a, &b, &[]).expect(0);
    fs::remove_file(a.join("f")).unwrap();
    write(&b.join("f"), "v2 on b");
    fs::remove_dir_all(b.join("dir")).unwrap();
    write(&a.join("dir/sub/edited.txt"), "v2 on a");
    sync(&env, &a, &b, &["--max-delete", "100"]).expect(0);
    assert_in_sync(&a, &b);
    assert_eq!(fs::read_to_string(a.join("f")).unwrap(), "v2 on b");
    assert_eq!(
        fs::read_to_string(b.join("dir/sub/edited.txt")).unwrap(),
        "v2 on a"
    );
    assert!(
        !a.join("dir/plain.txt").exists(),
        "the unchanged sibling follows the delete"
    );
}

#[test]
fn rename_on_one_side_loses_nothing() {
    let env = Env::new();
    let (a, b) = pair(&env);
    for i in 0..4 {
        write(&a.join(format!("f{i}")), format!("content {i}"));
    }
    sync(&env, &a, &b, &[]).expect(0);
    fs::rename(a.join("f0"), a.join("renamed")).unwrap();
    sync(&env, &a, &b, &[]).expect(0);
    assert_in_sync(&a, &b);
    assert_eq!(fs::read_to_string(b.join("renamed")).unwrap(), "content 0");
    assert!(!b.join("f0").exists());
}

#[test]
fn refusals_change_nothing() {
    let env = Env::new();
    let (a, b) = pair(&env);
    for i in 0..10 {
        write(&a.join(format!("f{i}")), format!("{i}"));
    }
    sync(&env, &a, &b, &[]).expect(0);

    // Unmounted replica: its root is missing.
    let gone = env.path("unmounted");
    let run = sync(&env, &a, &gone, &[]);
    run.expect(2);
    assert!(run.all().contains("unmounted"), "{}", run.all());
    // Nested replicas.
    fs::create_dir_all(a.join("inner")).unwrap();
    sync(&env, &a, &a.join("inner"), &[]).expect(2);
    fs::remove_dir(a.join("inner")).unwrap();
    sync(&env, &a, &a, &[]).expect(2);
    let (sa, sb) = (snapshot(&a), snapshot(&b));
    // Deleting 8 of 10 files on one side.
    for i in 0..8 {
        fs::remove_file(b.join(format!("f{i}"))).unwrap();
    }
    let sb_edited = snapshot(&b);
    let run = sync(&env, &a, &b, &[]);
    run.expect(2);
    assert!(run.all().contains("--max-delete"), "{}", run.all());
    assert_eq!(snapshot(&a), sa);
    assert_eq!(snapshot(&b), sb_edited);
    assert_ne!(sb, sb_edited);
    // Allowed explicitly.
    sync(&env, &a, &b, &["--max-delete", "100"]).expect(0);
    assert_in_sync(&a, &b);
}

#[test]
fn unreadable_subdirectory_is_unknown_not_deleted() {
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("sub/kept.txt"), "k");
    write(&a.join("other.txt"), "o");
    env.hand_to_nobody();
    let run_once = || sync_as_nobody(&env, &a, &b, &["--max-delete", "100"]);
    run_once().expect(0);
    chmod(&a.join("sub"), 0o000);
    run_once().expect(1);
    chmod(&a.join("sub"), 0o755);
    assert!(
        b.join("sub/kept.txt").exists(),
        "deleted on B what A could not read"
    );
    assert!(a.join("sub/kept.txt").exists());
}

#[test]
fn a_copy_that_failed_is_retried_and_never_undone() {
    require_root();
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("d/f.txt"), "old");
    write(&a.join("other.txt"), "o");
    env.hand_to_nobody();
    let run_once = || sync_as_nobody(&env, &a, &b, &[]);
    run_once().expect(0);
    // A's edit cannot reach B: B's directory belongs to someone else and takes no new
    // file. The pass fails there, and the state keeps the old entry, so that B's old
    // copy never looks like a change made on B.
    write(&a.join("d/f.txt"), "new on A");
    write(&a.join("other.txt"), "o2");
    std::os::unix::fs::chown(b.join("d"), Some(0), Some(0)).unwrap();
    run_once().expect(1);
    assert_eq!(fs::read_to_string(b.join("other.txt")).unwrap(), "o2");
    assert_eq!(fs::read_to_string(b.join("d/f.txt")).unwrap(), "old");
    give_to_nobody(&b.join("d"));
    run_once().expect(0);
    for side in [&a, &b] {
        assert_eq!(
            fs::read_to_string(side.join("d/f.txt")).unwrap(),
            "new on A"
        );
    }
    assert!(conflict_copies(&a).is_empty() && conflict_copies(&b).is_empty());
}

#[test]
fn killed_repeatedly_converges_without_partial_files_or_loss() {
    let env = Env::new();
    let (a, b) = pair(&env);
    let mut rng = Rng::new(11);
    make_many(&a, 200, 150_000, &mut rng);
    make_many(&b.join("from-b"), 100, 150_000, &mut rng);
    write_random(&a.join("big.bin"), 20 << 20, &mut rng);
    let mut seen: BTreeSet<String> = contents(&a).union(&contents(&b)).cloned().collect();
    let mut killed = 0;
    // What the edits below replace by hand: a version may have held it, and lose it.
    let mut taken_by_hand = BTreeSet::new();
    // Eight rounds, and more until three passes were cut short (a fast pass may end
    // before its kill; each one that does makes the next kill come sooner).
    let mut late = 120u64;
    let mut rounds = 0u64;
    while rounds < 8 || (killed < 3 && rounds < 40) {
        let round = rounds;
        rounds += 1;
        // New edits on both sides every round.
        let files: Vec<PathBuf> = snapshot(&a)
            .into_keys()
            .filter(|p| p.extension().is_some())
            .collect();
        for _ in 0..10 {
            let p = &files[rng.below(files.len() as u64) as usize];
            let side = if rng.below(2) == 0 { &a } else { &b };
            if side.join(p).parent().is_some_and(|d| d.is_dir()) {
                if side.join(p).is_file() {
                    taken_by_hand.insert(sha256_file(&side.join(p)));
                }
                replace_random(&side.join(p), rng.below(200_000) as usize, &mut rng);
            }
        }
        // And a new bulky file, so every pass has a long copy to be cut short in.
        let side = if round.is_multiple_of(2) { &a } else { &b };
        write_random(&side.join(format!("bulk-{round}.bin")), 8 << 20, &mut rng);
        seen.extend(contents(&a));
        seen.extend(contents(&b));
        let mut cmd = env.cmd("twoway");
        cmd.arg(&a).arg(&b).args(["--once", "--max-delete", "100"]);
        if kill_after(cmd, Duration::from_millis(5 + rng.below(late))) {
            killed += 1;
        } else {
            late = (late * 2 / 3).max(5);
        }
        for root in [&a, &b] {
            let temps = temp_leftovers(root);
            for (p, s) in snapshot(root) {
                if let Snap::File { sha256, .. } = s {
                    if !temps.contains(&p) {
                        assert!(
                            seen.contains(&sha256),
                            "round {round}: {} is partial",
                            p.display()
                        );
                    }
                }
            }
        }
    }
    assert!(killed >= 3, "only {killed} passes were cut short");
    let before_final: BTreeSet<String> = contents(&a).union(&contents(&b)).cloned().collect();
    sync(&env, &a, &b, &["--max-delete", "100"]).expect(0);
    assert_in_sync(&a, &b);
    assert!(temp_leftovers(&a).is_empty() && temp_leftovers(&b).is_empty());
    let again = sync(&env, &a, &b, &[]);
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );
    // Nothing was lost: what either side held is in a replica or one of its versions.
    let mut everywhere = contents(&a);
    for root in [&a, &b] {
        everywhere.extend(contents(&root.join("__versions__")));
    }
    for c in &before_final {
        assert!(everywhere.contains(c), "content {c} was lost");
    }
    assert_verified_but(&env, &taken_by_hand, "after the kills");
}

#[test]
fn a_change_made_on_the_destination_during_the_pass_is_not_overwritten() {
    let env = Env::new();
    let (a, b) = pair(&env);
    let mut rng = Rng::new(2);
    write_random(&a.join("big.bin"), 1 << 20, &mut rng);
    sync(&env, &a, &b, &[]).expect(0);
    write_random(&a.join("big.bin"), 300 << 20, &mut rng);
    let mut child = Running::new(
        env.cmd("twoway")
            .arg(&a)
            .arg(&b)
            .arg("--once")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait until the copy into B is under way, then edit B's file.
    let start = Instant::now();
    let mut edited = false;
    while start.elapsed() < Duration::from_secs(60) {
        if !temp_names(&b).is_empty() {
            fs::write(b.join("big.bin.tmpedit"), b"x").unwrap();
            fs::rename(b.join("big.bin.tmpedit"), b.join("big.bin")).unwrap();
            edited = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = child.wait().unwrap();
    assert!(edited, "the copy was never seen in flight");
    assert_eq!(
        status.code(),
        Some(1),
        "the pass should report the file it left alone"
    );
    assert_eq!(
        fs::read(b.join("big.bin")).unwrap(),
        b"x",
        "B's edit was overwritten"
    );
    // The next pass sees a conflict and keeps both.
    sync(&env, &a, &b, &[]).expect(0);
    assert_in_sync(&a, &b);
    let all = contents(&a);
    assert!(all.contains(&sha256_file(&b.join("big.bin"))));
    assert_eq!(conflict_copies(&a).len(), 1);
}

fn temp_names(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".twoway-tmp-"))
        })
        .collect()
}

#[test]
fn restore_works_for_either_replica() {
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("x/y.txt"), "y");
    sync(&env, &a, &b, &[]).expect(0);
    let before = snapshot_with(&b, true);
    fs::remove_dir_all(b.join("x")).unwrap();
    env.run(
        "twoway",
        [b.as_os_str(), "--restore".as_ref(), "--force".as_ref()],
    )
    .expect(0);
    assert_eq!(
        fs::read_to_string(b.join("x/y.txt")).unwrap(),
        "y",
        "{:?}",
        before.keys().collect::<Vec<_>>()
    );
    let to = env.path("copy-of-a");
    env.run(
        "twoway",
        [
            a.as_os_str(),
            "--restore".as_ref(),
            "--to".as_ref(),
            to.as_os_str(),
        ],
    )
    .expect(0);
    assert_eq!(fs::read_to_string(to.join("x/y.txt")).unwrap(), "y");
}

#[test]
fn dry_run_changes_nothing_and_version_flag_works() {
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("f"), "a");
    write(&b.join("g"), "b");
    let (sa, sb) = (snapshot(&a), snapshot(&b));
    let run = sync(&env, &a, &b, &["--dry-run"]);
    run.expect(0);
    assert!(run.stdout().contains("would copy"), "{}", run.stdout());
    assert_eq!((snapshot(&a), snapshot(&b)), (sa, sb));
    assert!(
        fs::read_dir(env.home()).unwrap().next().is_none(),
        "dry run wrote into the data home"
    );
    let v = env.run("twoway", ["--version"]);
    v.expect(0);
    assert!(v.stdout().starts_with("twoway "));
}

#[test]
fn a_pass_with_versions_saves_content_no_version_holds_before_replacing_it() {
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("f"), "original");
    write(&a.join("gone"), "deleted on a");
    sync(&env, &a, &b, &["--no-versions"]).expect(0);
    assert!(!b.join("__versions__").exists());
    write(&a.join("f"), "changed on a");
    set_mtime(&a.join("f"), OLD + 10, 0);
    fs::remove_file(a.join("gone")).unwrap();

    sync(&env, &a, &b, &[]).expect(0);
    assert_in_sync(&a, &b);
    assert_eq!(fs::read(b.join("f")).unwrap(), b"changed on a");
    let store = b.join("__versions__");
    for content in ["original", "deleted on a"] {
        assert!(
            store_holds(&store, content.as_bytes()),
            "{content:?} was lost: B's store does not hold it"
        );
    }
}

#[test]
fn random_rounds_of_edits_on_both_sides_converge_and_lose_nothing() {
    for seed in 1..=3u64 {
        let env = Env::new();
        let (a, b) = pair(&env);
        random_rounds(&env, &a, &b, seed);
    }
}

/// The same with both replicas on one btrfs (copies between them are reflinks, and the
/// stores share kept files by links), and with the replicas on two filesystems (each
/// store gets its own copy of what the other side replaced).
#[test]
fn random_rounds_converge_on_btrfs_and_across_two_filesystems() {
    let env = Env::new();
    let disk = Mounted::new("btrfs", 512, &env.path("btrfs"));
    let (a, b) = made(disk.path("a"), disk.path("b"));
    random_rounds(&env, &a, &b, 4);

    let env = Env::new();
    let usb = Mounted::new("ext4", 64, &env.path("usb"));
    let (a, b) = made(env.path("a"), usb.path("b"));
    random_rounds(&env, &a, &b, 5);
}

/// Twelve rounds of random edits on both sides of `a` and `b` (in place too), a sync
/// after each: the replicas end equal, nothing either held is lost (it is on a side, in
/// a version or in a conflict copy), each replica's latest version restores it, and the
/// stores verify.
fn random_rounds(env: &Env, a: &Path, b: &Path, seed: u64) {
    let (a, b) = (a.to_path_buf(), b.to_path_buf());
    write(&a.join("x.txt"), "first");
    write(&a.join("d_d/y.md"), "second");
    write(&b.join("z"), "third");
    let mut rng = Rng::new(seed);
    let mut serial = 0;
    // Content of the newest versions that both sides changed or deleted by hand
    // before a pass: the newest version's files are the live ones, so that content
    // is gone, and `verify` says so. Nothing else may be missing.
    let mut taken_by_hand: BTreeSet<String> = BTreeSet::new();
    let everything = |a: &Path, b: &Path| -> BTreeSet<String> {
        let mut all = contents(a);
        all.extend(contents(b));
        for r in [a, b] {
            if r.join("__versions__").exists() {
                all.extend(contents(&r.join("__versions__")));
            }
        }
        all
    };
    for round in 0..12 {
        let latest = contents(&a);
        if round > 0 {
            random_edits(&a, &mut rng, &mut serial);
            random_edits(&b, &mut rng, &mut serial);
        }
        let before: BTreeSet<String> = contents(&a).union(&contents(&b)).cloned().collect();
        let held = everything(&a, &b);
        taken_by_hand.extend(latest.difference(&held).cloned());
        let what = format!("seed {seed}, round {round}");
        let run = sync(env, &a, &b, &["--max-delete", "100"]);
        assert_eq!(run.code(), 0, "{what}: {}", run.all());
        assert_in_sync(&a, &b);
        // Everything either side held is still on a side, in a version or a
        // conflict copy.
        let after = everything(&a, &b);
        let lost: Vec<&String> = before.difference(&after).collect();
        assert!(lost.is_empty(), "{what}: lost {lost:?}");
        // Each replica's latest version restores its files as they are now (a
        // pass that changes a file always makes a version).
        for (i, r) in [&a, &b].into_iter().enumerate() {
            let to = env.path(&format!("restored-{round}-{i}"));
            env.run(
                "recovery",
                [Path::new("restore"), r.as_path(), Path::new("--to"), &to],
            )
            .expect(0);
            assert_eq!(
                files_of(&to),
                files_of(r)
                    .into_iter()
                    .filter(|(p, _)| !p.starts_with("__versions__"))
                    .collect(),
                "{what}: latest version of {}",
                r.display()
            );
        }
        assert_verified_but(env, &taken_by_hand, &what);
    }
}

#[test]
fn filters_leave_paths_alone_on_both_sides() {
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("doc.md"), "doc");
    write(&a.join("sub/more.md"), "more");
    write(&a.join("scratch.txt"), "a's scratch");
    write(&b.join("other.txt"), "b's scratch");
    let filter = ["--include", "*/", "--include", "*.md", "--exclude", "*"];
    sync(&env, &a, &b, &filter).expect(0);
    assert!(b.join("doc.md").is_file() && b.join("sub/more.md").is_file());
    assert!(!b.join("scratch.txt").exists() && !a.join("other.txt").exists());
    // A deletion of a filtered-out file is no deletion to carry over.
    fs::remove_file(a.join("scratch.txt")).unwrap();
    fs::remove_file(a.join("doc.md")).unwrap();
    sync(&env, &a, &b, &filter).expect(0);
    assert!(!b.join("doc.md").exists());
    assert_eq!(
        fs::read_to_string(b.join("other.txt")).unwrap(),
        "b's scratch"
    );
}

/// A pass that changes nothing makes no version. The first pass makes each replica's
/// store inside it, which changes that replica's own mtime: that is the tool's doing,
/// not a change to keep (A below is only read by the first pass, so nothing else sets
/// its mtime again).
#[test]
fn a_second_pass_with_nothing_changed_makes_no_version() {
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("d/f"), "x");
    write(&a.join("top"), "y");
    sync(&env, &a, &b, &[]).expect(0);
    let made = |d: &Path| env.versions_of(d).len();
    assert_eq!((made(&a), made(&b)), (1, 1));
    for _ in 0..2 {
        sync(&env, &a, &b, &[]).expect(0);
        assert_eq!(
            (made(&a), made(&b)),
            (1, 1),
            "a pass that changed nothing made a version"
        );
    }
    let (src, dst) = env.src_and_dst();
    write(&src.join("d/f"), "x");
    env.oneway(&src, &dst, &[]).expect(0);
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(made(&dst), 1, "a pass that changed nothing made a version");
}

/// A replica whose top belongs to someone else (a shared folder the user may write):
/// its mtime cannot be put back, so the lock file stays there, and a pass with nothing
/// to do makes no version; in a replica of the user's own, the lock file goes.
#[test]
fn a_shared_replica_top_keeps_the_lock_file_and_makes_no_version_for_nothing() {
    require_root();
    let env = Env::new();
    let (a, b) = pair(&env);
    write(&a.join("f.txt"), "x");
    env.hand_to_nobody();
    // B's top: root's, writable by all.
    let status = std::process::Command::new("chown")
        .args(["0:0"])
        .arg(&b)
        .status()
        .unwrap();
    assert!(status.success());
    chmod(&b, 0o777);
    let run_once = || sync_as_nobody(&env, &a, &b, &[]);
    run_once().expect(0);
    write(&a.join("g.txt"), "y");
    give_to_nobody(&a.join("g.txt"));
    run_once().expect(0);
    let counts = || (env.versions_of(&a).len(), env.versions_of(&b).len());
    let before = counts();
    let again = run_once();
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );
    assert_eq!(counts(), before, "{}", again.stdout());
    assert!(
        !a.join(".twoway-lock").exists(),
        "left in the user's own replica"
    );
    assert!(
        b.join(".twoway-lock").exists(),
        "removed where the mtime changes with it"
    );
}
