//! History that lasts: versions past the last two, the retention policy, tags, versions
//! chosen by id, tag or time, each twoway replica's store on its own, and the commands
//! that look through a history (find, deleted, ls, diff, duplicates).

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use integration_tests::*;

/// `recovery ARGS…`, the arguments given as strings or paths.
fn recovery<S: AsRef<OsStr>>(env: &Env, args: &[S]) -> Run {
    env.run(
        "recovery",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
    )
}

/// (id, made) of every version of `dir`, newest first.
fn listed(env: &Env, dir: &Path) -> Vec<(String, String)> {
    env.versions_of(dir)
        .iter()
        .map(|x| (x["id"].to_string(), x["made"].as_str().unwrap().to_string()))
        .collect()
}

/// `recovery verify DIR EXTRA…`.
fn run_verify(env: &Env, dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec![OsStr::new("verify"), dir.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    recovery(env, &args)
}

/// `recovery forget DIR` keeping only the last `n` versions (and tagged ones).
fn forget_all_but_last<'a>(dir: &'a Path, n: &'a str) -> Vec<&'a OsStr> {
    let keep = [
        "--keep-hourly",
        "0",
        "--keep-daily",
        "0",
        "--keep-weekly",
        "0",
    ];
    [
        OsStr::new("forget"),
        dir.as_os_str(),
        OsStr::new("--keep-last"),
        OsStr::new(n),
    ]
    .into_iter()
    .chain(keep.into_iter().map(OsStr::new))
    .collect()
}

fn restore_to(env: &Env, dir: &Path, version: &str, to: &Path, extra: &[&str]) -> Run {
    env.restore_to(dir, version, to, extra)
}

#[test]
fn a_folder_deleted_several_passes_ago_is_found_and_restored() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("docs/report.txt"), "the report");
    write(&src.join("docs/notes/a.txt"), "notes");
    write(&src.join("other.txt"), "0");
    env.oneway(&src, &dst, &[]).expect(0);
    fs::remove_dir_all(src.join("docs")).unwrap();
    env.oneway(&src, &dst, &["--max-delete", "100"]).expect(0);
    // Unrelated changes afterwards: the store used to keep two passes only.
    for i in 1..=4 {
        write(&src.join("other.txt"), format!("{i}"));
        env.oneway(&src, &dst, &[]).expect(0);
    }
    let versions = listed(&env, &src);
    assert_eq!(versions.len(), 6, "{versions:?}");
    let find = recovery(
        &env,
        &[OsStr::new("find"), src.as_os_str(), OsStr::new("docs")],
    );
    find.expect(0);
    let first = &versions.last().unwrap().0;
    assert!(
        find.stdout().contains(&format!("version {first} ")),
        "{}",
        find.stdout()
    );
    let deleted = recovery(&env, &[OsStr::new("deleted"), src.as_os_str()]);
    deleted.expect(0);
    assert!(deleted.stdout().contains("docs/"), "{}", deleted.stdout());
    assert!(
        !deleted.stdout().contains("docs/notes"),
        "a folder is shown once: {}",
        deleted.stdout()
    );
    // Restored by id, into the live directory, with --path.
    let run = recovery(
        &env,
        &[
            OsStr::new("restore"),
            src.as_os_str(),
            OsStr::new("--version"),
            OsStr::new(first),
            OsStr::new("--path"),
            OsStr::new("docs"),
        ],
    );
    run.expect(0);
    assert_eq!(
        fs::read_to_string(src.join("docs/report.txt")).unwrap(),
        "the report"
    );
    assert_eq!(
        fs::read_to_string(src.join("docs/notes/a.txt")).unwrap(),
        "notes"
    );
    assert_eq!(fs::read_to_string(src.join("other.txt")).unwrap(), "4");
}

#[test]
fn a_version_is_chosen_by_id_tag_or_time() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    // (Versions are timed to the millisecond: each pass is a process of its own.)
    for tag in ["one", "two", "three"] {
        write(&src.join("f"), tag);
        env.oneway(&src, &dst, &["--tag", &format!("t-{tag}")])
            .expect(0);
    }
    let versions = listed(&env, &src);
    let (mid_id, mid_made) = versions[1].clone();
    for (spec, want) in [
        (mid_id.as_str(), "two"),
        ("t-one", "one"),
        ("previous", "two"),
        ("latest", "three"),
        (mid_made.as_str(), "two"),
    ] {
        let to = env.path(&format!("to-{}", spec.replace([':', '.'], "-")));
        restore_to(&env, &src, spec, &to, &[]).expect(0);
        assert_eq!(
            fs::read_to_string(to.join("f")).unwrap(),
            want,
            "--version {spec}"
        );
    }
    // A date: the last version made at or before the end of that day (the newest, unless
    // the test ran across midnight UTC).
    let today = &mid_made[..10];
    let newest_day = &versions[0].1[..10];
    let want = if newest_day == today { "three" } else { "two" };
    let to = env.path("by-date");
    restore_to(&env, &src, today, &to, &[]).expect(0);
    assert_eq!(fs::read_to_string(to.join("f")).unwrap(), want);
    restore_to(&env, &src, "1999-01-01", &env.path("none"), &[]).expect(2);
    restore_to(&env, &src, "no-such-tag", &env.path("none"), &[]).expect(2);
}

#[test]
fn the_retention_policy_keeps_tagged_versions_and_forget_says_what_it_frees() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    let cfg = env.path("keep.json");
    write(
        &cfg,
        r#"{"keep": {"last": 2, "hourly": 0, "daily": 0, "weekly": 0}}"#,
    );
    let cfg = cfg.to_str().unwrap();
    write(&src.join("f"), "kept forever");
    env.oneway(&src, &dst, &["--config", cfg, "--tag", "precious"])
        .expect(0);
    for i in 0..4 {
        write(&src.join("f"), format!("pass {i}"));
        let run = env.oneway(&src, &dst, &["--config", cfg]);
        run.expect(0);
        if i >= 2 {
            assert!(run.all().contains("dropped version"), "{}", run.all());
        }
    }
    let versions = listed(&env, &src);
    assert_eq!(
        versions.len(),
        3,
        "the newest two and the tagged one: {versions:?}"
    );
    let to = env.path("precious");
    restore_to(&env, &src, "precious", &to, &[]).expect(0);
    assert_eq!(fs::read_to_string(to.join("f")).unwrap(), "kept forever");
    // Untagged, the next application of the policy drops it.
    recovery(
        &env,
        &[OsStr::new("untag"), src.as_os_str(), OsStr::new("precious")],
    )
    .expect(0);
    let args = forget_all_but_last(&src, "2");
    let mut dry = args.clone();
    dry.push(OsStr::new("--dry-run"));
    let run = recovery(&env, &dry);
    run.expect(0);
    assert!(
        run.stdout().contains("would drop version"),
        "{}",
        run.stdout()
    );
    assert_eq!(listed(&env, &src).len(), 3, "a dry run drops nothing");
    let run = recovery(&env, &args);
    run.expect(0);
    assert!(run.stdout().contains("freed"), "{}", run.stdout());
    assert_eq!(listed(&env, &src).len(), 2);
    assert!(!store_holds(&dst.join("__versions__"), b"kept forever"));
    recovery(&env, &["verify"]).expect(0);
}

#[test]
fn each_twoway_replica_restores_its_versions_without_the_other() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("f.txt"), "v1");
    write(&a.join("docs/x.txt"), "doc");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    // An edit in place on A, as `echo v2 > f.txt` does: B's copy is replaced by the
    // pass, so v1 is kept in B's store, and A's store must get it too.
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(a.join("f.txt"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"v2"))
        .unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    assert_eq!(fs::read(b.join("f.txt")).unwrap(), b"v2");
    // B's drive dies.
    fs::remove_dir_all(&b).unwrap();
    let to = env.path("restored");
    restore_to(&env, &a, "previous", &to, &[]).expect(0);
    assert_eq!(fs::read_to_string(to.join("f.txt")).unwrap(), "v1");
    assert_eq!(fs::read_to_string(to.join("docs/x.txt")).unwrap(), "doc");
    assert!(store_holds(&a.join("__versions__"), b"v1"));
}

/// A file deleted on A whose content B's store already holds (kept from an earlier
/// copy, after A's store had let it go): the pass deletes B's copy and B keeps nothing
/// new, yet A's store must get the content, which A's latest version names.
#[test]
fn content_a_twin_store_held_already_reaches_the_other_store_too() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    let sync = || {
        let args = [
            a.as_path(),
            &b,
            Path::new("--once"),
            Path::new("--max-delete"),
        ];
        env.run("twoway", args.into_iter().chain([Path::new("100")]))
            .expect(0);
    };
    write(&a.join("p.bin"), "the same content");
    fs::create_dir_all(&b).unwrap();
    sync();
    // Deleted on A: the pass deletes B's copy, which B's store keeps (and gives A's).
    fs::remove_file(a.join("p.bin")).unwrap();
    sync();
    // A's store lets it go: no version of A that is left names it.
    recovery(&env, &forget_all_but_last(&a, "1")).expect(0);
    assert!(!store_holds(&a.join("__versions__"), b"the same content"));
    assert!(store_holds(&b.join("__versions__"), b"the same content"));
    // The same content again on A, synced, then deleted on A once more.
    write(&a.join("q.bin"), "the same content");
    sync();
    fs::remove_file(a.join("q.bin")).unwrap();
    sync();
    assert!(!b.join("q.bin").exists());
    // A's version before the deletion names q.bin: its content is in A's store.
    run_verify(&env, &a, &[]).expect(0);
    let to = env.path("restored");
    restore_to(&env, &a, "previous", &to, &[]).expect(0);
    assert_eq!(
        fs::read_to_string(to.join("q.bin")).unwrap(),
        "the same content"
    );
}

#[test]
fn what_a_forced_restore_replaces_is_kept_and_can_be_restored() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("f"), "synced");
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("f"), "edited after the sync");
    recovery(
        &env,
        &[
            OsStr::new("restore"),
            src.as_os_str(),
            OsStr::new("--force"),
        ],
    )
    .expect(0);
    assert_eq!(fs::read_to_string(src.join("f")).unwrap(), "synced");
    assert!(store_holds(
        &dst.join("__versions__"),
        b"edited after the sync"
    ));
    let versions = listed(&env, &src);
    let to = env.path("undo");
    restore_to(&env, &src, &versions[0].0, &to, &[]).expect(0);
    assert_eq!(
        fs::read_to_string(to.join("f")).unwrap(),
        "edited after the sync"
    );
}

#[test]
fn ls_diff_and_duplicates_read_the_history() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("a.txt"), "same bytes");
    write(&src.join("sub/b.txt"), "same bytes");
    write(&src.join("c.txt"), "c");
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("c.txt"), "c changed");
    write(&src.join("new.txt"), "n");
    fs::remove_file(src.join("a.txt")).unwrap();
    // A folder's mode changed (its mtime alone would not be worth a line).
    chmod(&src.join("sub"), 0o700);
    env.oneway(&src, &dst, &[]).expect(0);

    let ls = recovery(
        &env,
        &[
            OsStr::new("ls"),
            src.as_os_str(),
            OsStr::new("--version"),
            OsStr::new("previous"),
        ],
    );
    ls.expect(0);
    assert!(
        ls.stdout().contains("a.txt") && !ls.stdout().contains("new.txt"),
        "{}",
        ls.stdout()
    );
    let sub = recovery(
        &env,
        &[OsStr::new("ls"), src.as_os_str(), OsStr::new("sub")],
    );
    sub.expect(0);
    assert!(
        sub.stdout().contains("sub/b.txt") && !sub.stdout().contains("c.txt"),
        "{}",
        sub.stdout()
    );

    let diff = recovery(
        &env,
        &[
            OsStr::new("diff"),
            src.as_os_str(),
            OsStr::new("previous"),
            OsStr::new("latest"),
        ],
    );
    diff.expect(0);
    let out = diff.stdout();
    for want in ["+ new.txt", "- a.txt", "M c.txt", "m sub\n"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(out.contains("1 with metadata changed"), "{out}");
    // Against the live directory.
    write(&src.join("live-only.txt"), "l");
    let live = recovery(
        &env,
        &[OsStr::new("diff"), src.as_os_str(), OsStr::new("latest")],
    );
    live.expect(0);
    assert!(
        live.stdout().contains("+ live-only.txt"),
        "{}",
        live.stdout()
    );

    let dups = recovery(&env, &[OsStr::new("duplicates"), src.as_os_str()]);
    dups.expect(0);
    // a.txt is gone: its twin is alone now.
    assert!(dups.stdout().contains("0 groups"), "{}", dups.stdout());
    write(&src.join("copy-of-c.txt"), "c changed");
    env.oneway(&src, &dst, &[]).expect(0);
    let dups = recovery(&env, &[OsStr::new("duplicates"), src.as_os_str()]);
    assert!(
        dups.stdout().contains("copy-of-c.txt") && dups.stdout().contains("1 groups"),
        "{}",
        dups.stdout()
    );
}

#[test]
fn verify_repair_heals_damaged_content_from_another_store_and_says_what_it_cannot() {
    let env = Env::new();
    let src = env.path("src");
    let (usb1, usb2) = (env.path("usb1"), env.path("usb2"));
    fs::create_dir_all(&usb1).unwrap();
    fs::create_dir_all(&usb2).unwrap();
    write(&src.join("f"), "one");
    write(&src.join("g"), "only in usb1's history");
    for usb in [&usb1, &usb2] {
        env.oneway(&src, usb, &[]).expect(0);
    }
    write(&src.join("f"), "two");
    fs::remove_file(src.join("g")).unwrap();
    env.oneway(&src, &usb1, &[]).expect(0);
    fs::remove_file(src.join("g")).ok();
    env.oneway(&src, &usb2, &[]).expect(0);
    // usb1's stored "one" rots, and so does "only in usb1's history"... which usb2
    // also kept (the same pass removed it there): rot both of that one.
    let object = |store: &Path, bytes: &[u8]| {
        files_of(store)
            .into_iter()
            .map(|(p, _)| store.join(p))
            .find(|p| fs::read(p).unwrap() == bytes)
            .unwrap_or_else(|| panic!("{} holds {:?}", store.display(), bytes))
    };
    let rot = |p: &Path| {
        chmod(p, 0o644);
        fs::write(p, "rot!").unwrap();
    };
    let (s1, s2) = (usb1.join("__versions__"), usb2.join("__versions__"));
    rot(&object(&s1, b"one"));
    rot(&object(&s1, b"only in usb1's history"));
    rot(&object(&s2, b"only in usb1's history"));
    let verify = run_verify(&env, &src, &[]);
    verify.expect(1);
    assert!(verify.stdout().contains("DAMAGED"), "{}", verify.stdout());
    let repair = run_verify(&env, &src, &["--repair"]);
    repair.expect(1);
    let out = repair.stdout();
    assert!(out.contains("REPAIRED") && out.contains("usb2"), "{out}");
    assert!(out.contains("NOT REPAIRED"), "{out}");
    assert!(store_holds(&s1, b"one"), "healed from usb2's store");
    // What could be healed stays healed; the rest is still reported.
    let again = run_verify(&env, &src, &[]);
    let one = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"one"))
    };
    let out = again.stdout();
    let damaged: Vec<&str> = out.lines().filter(|l| l.starts_with("DAMAGED")).collect();
    assert_eq!(damaged.len(), 2, "{out}");
    assert!(damaged.iter().all(|l| !l.contains(&one)), "{out}");
}

/// A version file that rots (or that someone edits) stops every pass with a reason that
/// says what to run; `verify --repair` sets the versions that cannot be read aside (kept)
/// and passes, lists and restores of the others work again.
#[test]
fn a_damaged_version_file_is_set_aside_by_repair_and_passes_go_on() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("a.txt"), "one");
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("a.txt"), "two");
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("b.txt"), "new");
    env.oneway(&src, &dst, &[]).expect(0);
    // The latest version's file (3) rots.
    let versions = files_of(&dst.join("__versions__"))
        .into_iter()
        .map(|(p, _)| dst.join("__versions__").join(p))
        .filter(|p| p.parent().unwrap().ends_with("versions"))
        .collect::<Vec<_>>();
    let latest = versions
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("000000000003")
        })
        .unwrap_or_else(|| panic!("{versions:?}"));
    chmod(latest, 0o644);
    let mut bytes = fs::read(latest).unwrap();
    let n = bytes.len();
    bytes[n / 2..].iter_mut().for_each(|b| *b = 0xff);
    fs::write(latest, &bytes).unwrap();
    fs::remove_file(src.join("a.txt")).unwrap();
    let refused = env.oneway(&src, &dst, &[]);
    refused.expect(2);
    assert!(
        refused.stderr().contains("recovery verify --repair"),
        "{}",
        refused.all()
    );
    assert!(dst.join("a.txt").exists(), "a refused pass changed BACKUP");
    let repair = run_verify(&env, &src, &["--repair"]);
    repair.expect(1);
    assert!(repair.stdout().contains("SET ASIDE"), "{}", repair.all());
    // The pass runs; what it removes is kept, and the versions left restore.
    env.oneway(&src, &dst, &[]).expect(0);
    assert!(!dst.join("a.txt").exists());
    let ids: Vec<String> = listed(&env, &src).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["4", "2", "1"], "a version id was given twice");
    let to = env.path("restored");
    restore_to(&env, &src, "2", &to, &[]).expect(0);
    assert_eq!(fs::read_to_string(to.join("a.txt")).unwrap(), "two");
    assert!(!to.join("b.txt").exists());
    let verify = run_verify(&env, &src, &[]);
    verify.expect(0);
    assert!(verify.stdout().contains("damaged/"), "{}", verify.all());
}

/// `recovery find … | head`: a reader that went away is no error (it panicked).
#[test]
fn listings_into_a_closed_pipe_end_quietly() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("a.txt"), "one");
    env.oneway(&src, &dst, &[]).expect(0);
    for args in [
        vec![OsStr::new("find"), src.as_os_str(), OsStr::new("*")],
        vec![OsStr::new("list"), src.as_os_str()],
        vec![OsStr::new("ls"), src.as_os_str()],
        vec![OsStr::new("deleted"), src.as_os_str()],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env
            .cmd("recovery")
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn a_pass_with_nothing_to_do_after_a_two_way_pass_makes_no_version() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&b).unwrap();
    write(&a.join("f"), "x");
    let sync = || {
        env.run(
            "twoway",
            [a.as_os_str(), b.as_os_str(), OsStr::new("--once")],
        )
    };
    sync().expect(0);
    // A file made at A's top: the pass writes B's top directory, whose mtime twoway
    // does not set (a replica's root keeps its own).
    write(&a.join("g"), "y");
    sync().expect(0);
    let (in_a, in_b) = (listed(&env, &a).len(), listed(&env, &b).len());
    let again = sync();
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );
    assert_eq!(
        (listed(&env, &a).len(), listed(&env, &b).len()),
        (in_a, in_b),
        "{}",
        again.stdout()
    );
}
