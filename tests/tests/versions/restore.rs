//! Restores: over a directory that changed, one path, after a kill; what verify and a
//! wrong name say.

use std::ffi::OsStr;

use super::*;

#[test]
fn restore_into_non_empty_dir_needs_force_and_can_be_undone() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("f"), "synced");
    env.oneway(&src, &dst, &[]).expect(0);
    let synced = snapshot(&src);
    write(&src.join("f"), "edited after the sync");
    write(&src.join("new"), "also new");
    let edited = snapshot(&src);

    let refused = env.run("oneway", [src.as_os_str(), "--restore".as_ref()]);
    refused.expect(2);
    assert!(refused.all().contains("--force"), "{}", refused.all());
    assert_eq!(snapshot(&src), edited);

    env.run(
        "oneway",
        [src.as_os_str(), "--restore".as_ref(), "--force".as_ref()],
    )
    .expect(0);
    let strip_root = |m: BTreeMap<PathBuf, Snap>| -> BTreeMap<PathBuf, Snap> {
        m.into_iter()
            .filter(|(p, _)| !p.as_os_str().is_empty())
            .collect()
    };
    assert_eq!(strip_root(snapshot(&src)), strip_root(synced));
    // The replaced contents are the latest version now: restore them back.
    env.run(
        "recovery",
        ["restore".as_ref(), src.as_os_str(), "--force".as_ref()],
    )
    .expect(0);
    assert_eq!(strip_root(snapshot(&src)), strip_root(edited));
}

#[test]
fn path_restores_one_deep_file_over_its_edited_self_with_force() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("a/b/deep.txt"), "as synced");
    write(&src.join("a/other.txt"), "other");
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("a/b/deep.txt"), "edited since");
    write(&src.join("a/other.txt"), "other, edited");
    let path = ["restore", "--path", "a/b/deep.txt"].map(std::ffi::OsStr::new);
    let args = |force: bool| {
        let mut v = vec![path[0], src.as_os_str(), path[1], path[2]];
        if force {
            v.push("--force".as_ref());
        }
        v
    };
    env.run("recovery", args(false)).expect(2);
    env.run("recovery", args(true)).expect(0);
    assert_eq!(
        fs::read_to_string(src.join("a/b/deep.txt")).unwrap(),
        "as synced"
    );
    assert_eq!(
        fs::read_to_string(src.join("a/other.txt")).unwrap(),
        "other, edited",
        "only the path asked for is restored"
    );
}

#[test]
fn killed_during_versioning_leaves_a_verifiable_restorable_store() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    let mut rng = Rng::new(5);
    make_many(&src, 3000, 2000, &mut rng);
    env.oneway(&src, &dst, &[]).expect(0);
    // A second version (so that every round recycles `_0`), timed: the kills below are
    // spread over the length of such a pass, versioning included.
    write(&src.join("second"), "2");
    let started = Instant::now();
    env.oneway(&src, &dst, &[]).expect(0);
    let mut pass = started.elapsed();
    let mut killed = 0;
    let mut latest_before = version(&env, &src, "latest").1;
    // Ten rounds, and more until three runs were cut short: a run that ends before its
    // kill makes the next kills come sooner (a busy machine times that pass slow).
    let mut rounds = 0u64;
    while rounds < 10 || (killed < 3 && rounds < 40) {
        let round = rounds;
        rounds += 1;
        write(&src.join(format!("round-{round}")), format!("{round}"));
        let now = coreutils_dir_sha(&src);
        let mut cmd = env.cmd("oneway");
        cmd.arg(&src).arg(&dst).arg("--once");
        let at = pass.mul_f64(0.2 + rng.below(100) as f64 / 100.0);
        if kill_after(cmd, at) {
            killed += 1;
        } else {
            pass = pass.mul_f64(0.7);
        }
        let verify = env.run("recovery", ["verify"]);
        assert_eq!(verify.code(), 0, "round {round}: {}", verify.all());
        // The latest version is the new state or, cut short before it was made, the
        // latest before: never an older one (each round's state is new).
        let listed = versions(&env, &src);
        let latest = &listed[0].2;
        assert!(
            *latest == now || *latest == latest_before,
            "round {round}: latest is neither this round's state nor the last one"
        );
        if *latest == now && listed.len() > 1 {
            assert_eq!(listed[1].2, latest_before, "round {round}: previous");
        }
        latest_before = latest.clone();
        let to = env.path(&format!("restored-{round}"));
        env.run(
            "recovery",
            [
                "restore".as_ref(),
                src.as_os_str(),
                "--to".as_ref(),
                to.as_os_str(),
            ],
        )
        .expect(0);
        let (_, sha) = version(&env, &src, "latest");
        assert_eq!(coreutils_dir_sha(&to), sha, "round {round}");
        fs::remove_dir_all(&to).unwrap();
    }
    assert!(killed >= 3, "only {killed} runs were cut short");
    env.oneway(&src, &dst, &[]).expect(0);
    env.run("recovery", ["verify"]).expect(0);
}

#[test]
fn verify_names_a_damaged_stored_file() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("good"), "fine");
    write(&src.join("sub/bad"), "will rot");
    env.oneway(&src, &dst, &[]).expect(0);
    write(
        &src.join("sub/bad"),
        "replaced: the old bytes go into the store",
    );
    env.oneway(&src, &dst, &[]).expect(0);
    env.run("recovery", ["verify"]).expect(0);
    let store = dst.join("__versions__");
    let object = files_of(&store)
        .into_iter()
        .map(|(p, _)| store.join(p))
        .find(|p| fs::read(p).unwrap() == b"will rot")
        .expect("the replaced file in the store");
    chmod(&object, 0o644);
    fs::write(&object, "has rot!").unwrap();
    let run = env.run("recovery", ["verify".as_ref(), src.as_os_str()]);
    run.expect(1);
    assert!(run.stdout().contains("sub/bad"), "{}", run.stdout());
    assert!(!run.stdout().contains("good"), "{}", run.stdout());
}

#[test]
fn path_restores_one_file_and_to_leaves_dir_alone() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("docs/keep.txt"), "kept");
    write(&src.join("docs/lost.txt"), "lost then found");
    env.oneway(&src, &dst, &[]).expect(0);
    fs::remove_file(src.join("docs/lost.txt")).unwrap();
    write(&src.join("docs/keep.txt"), "edited, not restored");
    env.run(
        "recovery",
        [
            "restore".as_ref(),
            src.as_os_str(),
            "--path".as_ref(),
            "docs/lost.txt".as_ref(),
        ],
    )
    .expect(0);
    assert_eq!(
        fs::read_to_string(src.join("docs/lost.txt")).unwrap(),
        "lost then found"
    );
    assert_eq!(
        fs::read_to_string(src.join("docs/keep.txt")).unwrap(),
        "edited, not restored"
    );

    let before = snapshot(&src);
    let elsewhere = env.path("elsewhere");
    env.run(
        "recovery",
        [
            "restore".as_ref(),
            src.as_os_str(),
            "--to".as_ref(),
            elsewhere.as_os_str(),
        ],
    )
    .expect(0);
    assert_eq!(snapshot(&src), before, "--to changed DIR");
    assert_eq!(
        fs::read_to_string(elsewhere.join("docs/keep.txt")).unwrap(),
        "kept"
    );
    // --to into a non-empty directory is refused.
    env.run(
        "recovery",
        [
            "restore".as_ref(),
            src.as_os_str(),
            "--to".as_ref(),
            elsewhere.as_os_str(),
        ],
    )
    .expect(2);
}

#[test]
fn unknown_dir_or_missing_version_is_refused_with_a_hint() {
    let env = Env::new();
    let run = env.run("recovery", ["restore", "/no/such/dir"]);
    run.expect(2);
    assert!(run.all().contains("recovery list"), "{}", run.all());
    let (src, dst) = env.src_and_dst();
    write(&src.join("f"), "one version only");
    env.oneway(&src, &dst, &[]).expect(0);
    let run = env.restore_to(&src, "previous", &env.path("x"), &[]);
    run.expect(2);
    assert!(run.all().contains("recovery list"), "{}", run.all());
}

/// A folder a pass removed is in no later version: `--path` with no `--version` brings
/// it back from the newest version that holds it (its last state, not an older one),
/// through `oneway DIR --restore` as through `recovery restore`. A version named
/// explicitly is taken at its word.
#[test]
fn path_removed_by_a_pass_comes_back_from_the_newest_version_holding_it() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("docs/a.txt"), "first");
    write(&src.join("other.txt"), "other");
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("docs/a.txt"), "last before the folder went");
    env.oneway(&src, &dst, &[]).expect(0);
    fs::remove_dir_all(src.join("docs")).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("other.txt"), "a later change");
    env.oneway(&src, &dst, &[]).expect(0);

    let run = env.run(
        "recovery",
        [
            "restore".as_ref(),
            src.as_os_str(),
            "--version".as_ref(),
            "latest".as_ref(),
            "--path".as_ref(),
            "docs".as_ref(),
        ],
    );
    run.expect(2);
    assert!(run.all().contains("recovery find"), "{}", run.all());
    assert!(!src.join("docs").exists());

    let run = env.run(
        "oneway",
        [
            src.as_os_str(),
            "--restore".as_ref(),
            "--path".as_ref(),
            "docs".as_ref(),
        ],
    );
    run.expect(0);
    assert!(
        run.all().contains("the newest that holds it"),
        "{}",
        run.all()
    );
    assert_eq!(
        fs::read_to_string(src.join("docs/a.txt")).unwrap(),
        "last before the folder went"
    );
    assert_eq!(
        fs::read_to_string(src.join("other.txt")).unwrap(),
        "a later change"
    );
}

/// BACKUP inside SOURCE (allowed: a pass leaves it out of SOURCE): a restore of SOURCE
/// leaves BACKUP, and the store in it, alone; it neither removes them nor saves them as
/// part of SOURCE's version.
#[test]
fn a_restore_of_source_leaves_a_backup_inside_it_alone() {
    let env = Env::new();
    let src = env.path("src");
    let dst = src.join("backup");
    write(&src.join("a.txt"), "one");
    write(&src.join("sub/b.txt"), "two");
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("a.txt"), "one and more");
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("a.txt"), "changed after the last pass");
    let run = env.run(
        "recovery",
        ["restore".as_ref(), src.as_os_str(), "--force".as_ref()],
    );
    run.expect(0);
    assert_eq!(
        fs::read_to_string(src.join("a.txt")).unwrap(),
        "one and more"
    );
    assert_eq!(
        fs::read_to_string(dst.join("a.txt")).unwrap(),
        "one and more"
    );
    assert_eq!(fs::read_to_string(dst.join("sub/b.txt")).unwrap(), "two");
    // Both pass versions are still there, and the one the restore saved first.
    let versions = env.versions_of(&src);
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert_eq!(versions[0]["files"], 2, "{versions:?}");
}

#[test]
fn a_new_data_home_finds_the_versions_on_the_backup_drive() {
    // The old machine's disk died with its data home: on the new one, the backup drive
    // and each twoway replica still know, in their stores, whose versions they hold.
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("photos/a.jpg"), "first");
    env.oneway(&src, &dst, &[]).expect(0);
    write(&src.join("photos/a.jpg"), "second");
    env.oneway(&src, &dst, &[]).expect(0);
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("notes.txt"), "synced");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [a.as_os_str(), b.as_os_str(), "--once".as_ref()])
        .expect(0);
    let homes = std::cell::Cell::new(0);
    // `recovery ARGS` with a data home of its own, new each call unless `same`.
    let new_home = |args: &[&OsStr], same: bool| {
        if !same {
            homes.set(homes.get() + 1);
        }
        let mut c = env.cmd("recovery");
        c.env("TWOWAY_HOME", env.path(&format!("home-{}", homes.get())));
        Run(c.args(args).output().unwrap())
    };
    let s = OsStr::new;

    // A new home knows nothing, and says so rather than "0 problems".
    let run = new_home(&[s("verify")], false);
    run.expect(0);
    assert!(
        run.stdout().contains("no versioned directories are known"),
        "{}",
        run.all()
    );

    // Naming nothing but SOURCE, which has no store of its own: refused, with the hint.
    let run = new_home(
        &[
            s("restore"),
            src.as_os_str(),
            s("--to"),
            env.path("r0").as_os_str(),
        ],
        false,
    );
    run.expect(2);
    assert!(run.stderr().contains("--store"), "{}", run.all());

    // The backup drive named: its versions are listed (SOURCE's), and from then on
    // that data home restores SOURCE by its own name.
    let run = new_home(&[s("list"), dst.as_os_str(), s("--json")], false);
    run.expect(0);
    let listed: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(listed["dirs"][0]["dir"], src.to_str().unwrap());
    assert_eq!(listed["dirs"][0]["versions"].as_array().unwrap().len(), 2);
    let to = env.path("r1");
    let args = [
        s("restore"),
        src.as_os_str(),
        s("--version"),
        s("1"),
        s("--to"),
        to.as_os_str(),
    ];
    new_home(&args, true).expect(0);
    assert_eq!(
        fs::read_to_string(to.join("photos/a.jpg")).unwrap(),
        "first"
    );

    // Or its store named, in one command.
    let to = env.path("r2");
    let store = dst.join("__versions__");
    let args = [
        s("restore"),
        src.as_os_str(),
        s("--store"),
        store.as_os_str(),
        s("--to"),
        to.as_os_str(),
    ];
    new_home(&args, false).expect(0);
    assert_eq!(
        fs::read_to_string(to.join("photos/a.jpg")).unwrap(),
        "second"
    );

    // A twoway replica keeps its own versions at its top.
    let to = env.path("r3");
    new_home(
        &[s("restore"), b.as_os_str(), s("--to"), to.as_os_str()],
        false,
    )
    .expect(0);
    assert_eq!(fs::read_to_string(to.join("notes.txt")).unwrap(), "synced");
}

#[test]
fn files_that_were_one_file_are_restored_as_one_file() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("a.txt"), "one file, three names");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::hard_link(src.join("a.txt"), src.join("b.txt")).unwrap();
    fs::hard_link(src.join("a.txt"), src.join("d/c.txt")).unwrap();
    write(&src.join("same.txt"), "one file, three names");
    env.oneway(&src, &dst, &[]).expect(0);
    fs::remove_dir_all(&src).unwrap();
    env.run("recovery", ["restore".as_ref(), src.as_os_str()])
        .expect(0);
    let ino = |p: &str| fs::metadata(src.join(p)).unwrap().ino();
    assert_eq!(ino("a.txt"), ino("b.txt"));
    assert_eq!(ino("a.txt"), ino("d/c.txt"));
    assert_eq!(fs::metadata(src.join("a.txt")).unwrap().nlink(), 3);
    // The same content under another inode stays a file of its own.
    assert_ne!(ino("a.txt"), ino("same.txt"));
    assert_eq!(
        fs::read_to_string(src.join("d/c.txt")).unwrap(),
        "one file, three names"
    );
}
