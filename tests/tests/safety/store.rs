//! A store the tool did not make alone: planted links, swapped arguments, restores.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use integration_tests::*;

use super::*;

#[test]
fn a_symlink_planted_in_a_twoway_store_is_never_entered_nor_deleted_through() {
    // The history's own folders, and the trees of the store's earlier layout.
    for slot in [
        "",
        "/versions",
        "/objects",
        "/pending",
        "_0",
        "_1",
        ".spare",
    ] {
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
    // From a data home that has never seen either (another machine, a service with
    // other folders): BACKUP's own store says whose backup it is.
    let other = Env::new();
    let run = other.oneway(&dst, &src, &[]);
    run.expect(2);
    assert!(run.stderr().contains("swapped"), "{}", run.stderr());
    assert!(src.join("newer.txt").exists());
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
    // The first backup's version holds "one" in usb1 itself (SOURCE has moved on):
    // bit rot there is found, and named with its store.
    let store1 = usb1.join("__versions__");
    fs::write(usb1.join("a.txt"), "rot").unwrap();
    let verify = env.run("recovery", ["verify"]);
    verify.expect(1);
    assert!(verify.stdout().contains("usb1"), "{}", verify.stdout());

    // Restore takes the newest version across the stores, or the store named.
    let to = env.path("newest");
    restore_to(&env, &src, &to, &[]).expect(0);
    assert_eq!(fs::read(to.join("a.txt")).unwrap(), b"two");
    write(&usb1.join("a.txt"), "one");
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
    // Complete: a1 and s1. Then two passes that cannot read secret.txt (changed, so
    // that each must read it).
    write(&src.join("secret.txt"), "s2");
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
    let complete = versions
        .iter()
        .find(|v| v["incomplete"] == false)
        .unwrap_or_else(|| panic!("the complete version was dropped: {versions:?}"));
    let reg: serde_json::Value =
        serde_json::from_slice(&fs::read(env.home().join(".info.json")).unwrap()).unwrap();
    assert!(reg.to_string().contains("\"incomplete\":true"), "{reg}");
    let to = env.path("back");
    let id = complete["id"].to_string();
    restore_to(&env, &src, &to, &[OsStr::new("--version"), OsStr::new(&id)]).expect(0);
    assert_eq!(fs::read(to.join("secret.txt")).unwrap(), b"s1");
}
