//! The recovery store end to end: versions made by `oneway`, restore, list, verify.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use integration_tests::*;

mod restore;

const OLD: i64 = 1_600_000_000;

/// (which, id, directory SHA-256) of every version of `dir`, newest first; `which` is
/// "latest", "previous" or empty.
fn versions(env: &Env, dir: &Path) -> Vec<(String, String, String)> {
    env.versions_of(dir)
        .iter()
        .map(|x| {
            (
                x["which"].as_str().unwrap_or("").to_string(),
                x["id"].to_string(),
                x["dir_sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// (id, directory SHA-256) of the version `which` of `dir`.
fn version(env: &Env, dir: &Path, which: &str) -> (String, String) {
    versions(env, dir)
        .into_iter()
        .find(|v| v.0 == which)
        .map(|v| (v.1, v.2))
        .unwrap_or_else(|| panic!("no {which} version of {}", dir.display()))
}

/// `recovery restore DIR --version V --to TO`.
fn restore_version(env: &Env, dir: &Path, v: &str, to: &Path) {
    env.run(
        "recovery",
        [
            "restore".as_ref(),
            dir.as_os_str(),
            "--version".as_ref(),
            v.as_ref(),
            "--to".as_ref(),
            to.as_os_str(),
        ],
    )
    .expect(0);
}

/// Every inode of the regular files under `root`, the store's left out when
/// `skip` names it.
fn inodes(root: &Path, skip: Option<&Path>) -> HashSet<u64> {
    let mut out = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if Some(p.as_path()) == skip {
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if md.is_file() {
            out.insert(md.ino());
        }
    }
    out
}

fn small_tree(root: &Path) {
    write(&root.join("docs/a.txt"), "alpha");
    write(&root.join("docs/deeper/b.txt"), "beta");
    write(&root.join("run.sh"), "#!/bin/sh\n");
    chmod(&root.join("run.sh"), 0o755);
    write(&root.join("private"), "p");
    chmod(&root.join("private"), 0o600);
    write(&root.join("name with space"), "s");
    write(&raw(root, b"raw-\xfe"), "r");
    fs::create_dir_all(root.join("empty/inner")).unwrap();
    symlink("docs/a.txt", root.join("link")).unwrap();
    symlink("gone", root.join("dangling")).unwrap();
    for p in [
        "docs/a.txt",
        "docs/deeper/b.txt",
        "run.sh",
        "link",
        "docs/deeper",
        "docs",
        "empty/inner",
        "empty",
    ] {
        set_mtime(&root.join(p), OLD, 42);
    }
    set_mtime(root, OLD, 7);
}

#[test]
fn deleted_source_is_restored_identically() {
    let env = Env::new();
    let (src, dst) = (env.path("photos"), env.path("backup"));
    small_tree(&src);
    fs::create_dir(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let before = snapshot(&src);
    fs::remove_dir_all(&src).unwrap();

    env.run("oneway", [src.as_os_str(), "--restore".as_ref()])
        .expect(0);
    assert_eq!(snapshot(&src), before);
    let (_, sha) = version(&env, &src, "latest");
    assert_eq!(coreutils_dir_sha(&src), sha);
    // The versions are found under BACKUP's path too.
    assert_eq!(version(&env, &dst, "latest").1, sha);
}

#[test]
fn latest_and_previous_follow_the_last_two_changes() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("f"), "state one");
    env.oneway(&src, &dst, &[]).expect(0);
    let first = version(&env, &src, "latest").1;
    // One version, whatever else the store keeps for the next one (a spare tree).
    assert_eq!(versions(&env, &src).len(), 1);
    write(&src.join("f"), "state two");
    write(&src.join("g"), "added in two");
    env.oneway(&src, &dst, &[]).expect(0);
    let second = snapshot(&src);
    let two: Vec<String> = versions(&env, &src).into_iter().map(|v| v.2).collect();
    assert_eq!(two.len(), 2);
    assert!(
        two.contains(&first),
        "the first state is the previous version"
    );
    write(&src.join("f"), "state three, longer");
    fs::remove_file(src.join("g")).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let third = snapshot(&src);
    let shas: Vec<String> = versions(&env, &src).into_iter().map(|v| v.2).collect();

    let unchanged = env.oneway(&src, &dst, &[]);
    unchanged.expect(0);
    assert!(
        !unchanged.stdout().contains("new version"),
        "{}",
        unchanged.stdout()
    );
    let after: Vec<String> = versions(&env, &src).into_iter().map(|v| v.2).collect();
    assert_eq!(after, shas, "an unchanged pass made a version");
    assert_eq!(after.len(), 3);
    assert_eq!(
        after[2], first,
        "history goes back past the previous version"
    );

    let (prev_to, latest_to) = (env.path("prev"), env.path("latest"));
    env.restore_to(&src, "previous", &prev_to, &[]).expect(0);
    env.run(
        "recovery",
        [
            "restore".as_ref(),
            src.as_os_str(),
            "--to".as_ref(),
            latest_to.as_os_str(),
        ],
    )
    .expect(0);
    let strip_root = |m: BTreeMap<PathBuf, Snap>| -> BTreeMap<PathBuf, Snap> {
        m.into_iter()
            .filter(|(p, _)| !p.as_os_str().is_empty())
            .collect()
    };
    assert_eq!(strip_root(snapshot(&prev_to)), strip_root(second));
    assert_eq!(strip_root(snapshot(&latest_to)), strip_root(third));
}

#[test]
fn edits_in_place_of_any_live_file_leave_every_version_restorable() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    let store = dst.join("__versions__");
    write(&src.join("same"), "unchanged");
    write(&src.join("changes"), "v1");
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("changes"), "v2, edited in place");
    env.oneway(&src, &dst, &[]).expect(0);
    // No file of the store is a live file.
    let live: HashSet<u64> = inodes(&src, None)
        .union(&inodes(&dst, Some(&store)))
        .copied()
        .collect();
    assert!(inodes(&store, None).is_disjoint(&live));
    // Each live file edited in place, one side at a time: appended, truncated,
    // rewritten, chmod and touch.
    let append = |p: &Path, b: &[u8]| {
        use std::io::Write;
        fs::OpenOptions::new()
            .append(true)
            .open(p)
            .unwrap()
            .write_all(b)
            .unwrap();
    };
    append(&dst.join("changes"), b" and appended in BACKUP");
    fs::OpenOptions::new()
        .write(true)
        .open(src.join("same"))
        .unwrap()
        .set_len(2)
        .unwrap();
    chmod(&dst.join("same"), 0o600);
    set_mtime(&src.join("changes"), OLD, 0);
    for (v, changes) in [("previous", "v1"), ("latest", "v2, edited in place")] {
        let to = env.path(&format!("restored-{v}"));
        restore_version(&env, &src, v, &to);
        assert_eq!(
            fs::read_to_string(to.join("same")).unwrap(),
            "unchanged",
            "{v}"
        );
        assert_eq!(
            fs::read_to_string(to.join("changes")).unwrap(),
            changes,
            "{v}"
        );
    }
    env.run("recovery", ["verify"]).expect(0);
}

/// Two passes, then: the replaced content is in `store`, which shares no inode with
/// BACKUP, and every version restores.
fn store_checks(env: &Env, src: &Path, dst: &Path, extra: &[&str], store: &Path) {
    write(&src.join("same"), "unchanged");
    write(&src.join("changes"), "v1");
    set_mtime(&src.join("same"), OLD, 0);
    env.oneway(src, dst, extra).expect(0);
    write(&src.join("changes"), "v2");
    env.oneway(src, dst, extra).expect(0);
    assert!(store_holds(store, b"v1"), "the replaced file is kept");
    assert!(inodes(store, None).is_disjoint(&inodes(dst, Some(store))));
    let to = env.path("previous");
    restore_version(env, src, "previous", &to);
    assert_eq!(fs::read_to_string(to.join("changes")).unwrap(), "v1");
    assert_eq!(fs::read_to_string(to.join("same")).unwrap(), "unchanged");
    let before = snapshot(src);
    fs::remove_dir_all(src).unwrap();
    env.run("recovery", ["restore".as_ref(), src.as_os_str()])
        .expect(0);
    assert_eq!(snapshot(src), before);
}

#[test]
fn copy_mode_is_read_as_on_and_still_restores() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    let cfg = env.path("copy.json");
    write(&cfg, r#"{"versions": "copy"}"#);
    let store = dst.join("__versions__");
    store_checks(
        &env,
        &src,
        &dst,
        &["--config", cfg.to_str().unwrap()],
        &store,
    );
}

#[test]
fn store_on_another_filesystem_is_copied() {
    let shm = Path::new("/dev/shm");
    let env = Env::new();
    if !shm.is_dir()
        || fs::metadata(shm).unwrap().dev() == fs::metadata(env.dir.path()).unwrap().dev()
    {
        eprintln!(
            "no second filesystem here; covered by copy_mode_is_read_as_on_and_still_restores"
        );
        return;
    }
    let store = tempfile::tempdir_in(shm).unwrap();
    let (src, dst) = env.src_and_dst();
    store_checks(
        &env,
        &src,
        &dst,
        &["--store", store.path().to_str().unwrap()],
        store.path(),
    );
}

#[test]
fn metadata_only_change_keeps_the_old_metadata_in_the_version() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    for f in ["chmodded", "touched"] {
        write(&src.join(f), "same bytes");
        chmod(&src.join(f), 0o644);
        set_mtime(&src.join(f), OLD, 0);
    }
    write(&src.join("other"), "1");
    env.oneway(&src, &dst, &[]).expect(0);
    chmod(&src.join("chmodded"), 0o600);
    set_mtime(&src.join("touched"), OLD + 100, 0);
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(
        versions(&env, &src).len(),
        2,
        "a change of metadata alone is a version"
    );
    let zero = env.path("previous");
    restore_version(&env, &src, "previous", &zero);
    for f in ["chmodded", "touched"] {
        let md = fs::metadata(zero.join(f)).unwrap();
        assert_eq!((md.mode() & 0o7777, md.mtime()), (0o644, OLD), "{f}");
    }
    let c = fs::metadata(dst.join("chmodded")).unwrap();
    assert_eq!((c.mode() & 0o7777, c.mtime()), (0o600, OLD));
    let t = fs::metadata(dst.join("touched")).unwrap();
    assert_eq!((t.mode() & 0o7777, t.mtime()), (0o644, OLD + 100));
}

/// Bytes on disk of everything under `root`, each inode counted once (like `du`).
fn disk_usage(root: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        if seen.insert(md.ino()) {
            total += md.blocks() * 512;
        }
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    total
}

#[test]
fn a_version_after_a_small_change_costs_the_changed_bytes_plus_directories() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    let mut rng = Rng::new(9);
    for i in 0..2000 {
        write_random(&src.join(format!("d{}/f{i}", i % 40)), 8192, &mut rng);
    }
    env.oneway(&src, &dst, &[]).expect(0);
    env.oneway(&src, &dst, &[]).expect(0);
    let before = disk_usage(&dst);
    let mut changed = 0;
    for i in (0..2000).step_by(100) {
        write_random(&src.join(format!("d{}/f{i}", i % 40)), 8192, &mut rng);
        changed += 8192;
    }
    env.oneway(&src, &dst, &[]).expect(0);
    let growth = disk_usage(&dst).saturating_sub(before);
    // The old files moved into the store cost nothing; the new ones, the version's
    // manifest (a difference: a few entries) and the folders the store files its
    // content in (one per leading byte of a SHA-256) are the growth.
    let folders = fs::read_dir(dst.join("__versions__"))
        .unwrap()
        .flatten()
        .filter(|h| h.path().join("objects").is_dir())
        .map(|h| fs::read_dir(h.path().join("objects")).unwrap().count() as u64)
        .sum::<u64>();
    assert!(
        growth <= changed + folders * 4096 + 64 * 1024,
        "store grew by {growth} bytes for {changed} changed bytes"
    );
    // And far less than a second copy.
    assert!(growth < 2000 * 8192 / 4, "growth {growth}");
}

#[test]
fn concurrent_runs_sharing_a_data_home_keep_both_registry_entries() {
    let env = Env::new();
    let mut children = Vec::new();
    for i in 0..6 {
        let (src, dst) = (env.path(&format!("s{i}")), env.path(&format!("d{i}")));
        write(&src.join("f"), format!("{i}"));
        fs::create_dir(&dst).unwrap();
        children.push(
            env.cmd("oneway")
                .arg(&src)
                .arg(&dst)
                .arg("--once")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let reg: serde_json::Value =
        serde_json::from_slice(&fs::read(env.home().join(".info.json")).unwrap()).unwrap();
    for i in 0..6 {
        let p = fs::canonicalize(env.path(&format!("s{i}"))).unwrap();
        assert!(
            reg["dirs"].get(p.to_str().unwrap()).is_some(),
            "s{i} missing from the registry: {reg}"
        );
    }
}

#[test]
fn no_versions_writes_no_store() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("f"), "x");
    env.oneway(&src, &dst, &["--no-versions"]).expect(0);
    assert!(!dst.join("__versions__").exists());
    assert!(!env.home().join(".info.json").exists());
}

#[test]
fn content_found_only_in_backup_is_versioned_before_a_pass_replaces_or_deletes_it() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("f"), "one");
    write(&src.join("g"), "g one");
    env.oneway(&src, &dst, &[]).expect(0);
    let store = dst.join("__versions__");

    // In BACKUP: f replaced by a new file, g edited in place (no version has either).
    let tmp = dst.join("f.new");
    write(&tmp, "edited in backup");
    fs::rename(&tmp, dst.join("f")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dst.join("g"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"g edited in place"))
        .unwrap();
    write(&src.join("f"), "two, from source");
    write(&src.join("g"), "g two");
    set_mtime(&src.join("f"), OLD + 10, 0);
    set_mtime(&src.join("g"), OLD + 10, 0);
    assert!(!store_holds(&store, b"edited in backup"));
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(fs::read(dst.join("f")).unwrap(), b"two, from source");
    assert_eq!(fs::read(dst.join("g")).unwrap(), b"g two");
    for content in ["edited in backup", "g edited in place"] {
        assert!(
            store_holds(&store, content.as_bytes()),
            "{content:?} was lost: no version holds it"
        );
    }

    // A file added to BACKUP by hand is deleted by the next pass, after it is saved.
    write(&dst.join("h"), "stray in backup");
    env.oneway(&src, &dst, &[]).expect(0);
    assert!(!dst.join("h").exists());
    assert!(
        store_holds(&store, b"stray in backup"),
        "a deleted file was lost: no version holds it"
    );
    // The first version's f and g were changed by hand on both sides (the newest
    // version's files are the live ones): only those are missing.
    let sha = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };
    let by_hand = [sha(b"one"), sha(b"g one")].into_iter().collect();
    assert_verified_but(&env, &by_hand, "after the hand edits");
}

/// A store inside BACKUP, in a folder SOURCE does not have (`--store BACKUP/sub/vers`):
/// the pass leaves the folder that holds it, so the history lasts from pass to pass.
#[test]
fn a_store_in_a_folder_of_backup_is_never_removed_by_a_pass() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    let store = dst.join("sub/vers");
    let store_arg = store.to_str().unwrap();
    write(&src.join("a.txt"), "first");
    for i in 0..4 {
        write(&src.join(format!("other-{i}")), "o");
    }
    env.oneway(&src, &dst, &["--store", store_arg]).expect(0);
    write(&src.join("a.txt"), "second");
    env.oneway(&src, &dst, &["--store", store_arg]).expect(0);
    write(&src.join("a.txt"), "third");
    env.oneway(&src, &dst, &["--store", store_arg]).expect(0);
    assert!(store.is_dir(), "the pass removed the store");
    assert_eq!(env.versions_of(&src).len(), 3, "the history did not last");
    let to = env.path("first");
    restore_version(&env, &src, "1", &to);
    assert_eq!(fs::read_to_string(to.join("a.txt")).unwrap(), "first");
}

/// A store inside one directory of a pair (`--store A/vers`), where the other directory
/// has a folder of that name: that folder is left alone on both sides, as an excluded
/// path is. Nothing is copied into the store from it, and it is not removed.
#[test]
fn the_place_of_a_store_is_left_alone_on_the_other_side() {
    let env = Env::new();
    // twoway: B's own `vers` is not synced into A's store.
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("a.txt"), "a");
    write(&b.join("vers/user.txt"), "b's own");
    let store = a.join("vers");
    let args = [
        a.as_os_str(),
        b.as_os_str(),
        "--once".as_ref(),
        "--store".as_ref(),
        store.as_os_str(),
    ];
    env.run("twoway", args).expect(0);
    let run = env.run("twoway", args);
    run.expect(0);
    // Said, once a pass: B's folder is not synced.
    let said = run.stderr().matches("vers is left out: the store").count();
    assert_eq!(said, 1, "{}", run.all());
    assert!(!store.join("user.txt").exists(), "copied into the store");
    assert_eq!(
        fs::read_to_string(b.join("vers/user.txt")).unwrap(),
        "b's own"
    );
    assert_eq!(fs::read_to_string(b.join("a.txt")).unwrap(), "a");
    assert_eq!(env.versions_of(&a).len(), 1);
    // oneway: SOURCE's `vers` is not mirrored into BACKUP's store.
    let (src, dst) = env.src_and_dst();
    write(&src.join("f.txt"), "f");
    write(&src.join("vers/s.txt"), "source's own");
    let store = dst.join("vers");
    let store_arg = store.to_str().unwrap();
    let run = env.oneway(&src, &dst, &["--store", store_arg]);
    run.expect(0);
    assert!(
        run.all().contains("vers is left out: the store"),
        "{}",
        run.all()
    );
    write(&src.join("f.txt"), "changed");
    env.oneway(&src, &dst, &["--store", store_arg]).expect(0);
    assert!(!store.join("s.txt").exists(), "mirrored into the store");
    assert_eq!(
        fs::read_to_string(src.join("vers/s.txt")).unwrap(),
        "source's own"
    );
    assert_eq!(env.versions_of(&src).len(), 2);
}
