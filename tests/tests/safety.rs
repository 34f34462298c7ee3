//! The safety and security rules a fault matrix found broken: a symlink planted in a
//! store, an unmounted SOURCE, setuid files mirrored as root, a sync state that cannot be
//! read, and the other holes each test names.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use integration_tests::*;

/// The store names a versioned directory's trees by: what `<name>_1` is called.
fn version_name(store: &Path) -> String {
    fs::read_dir(store)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find_map(|n| n.strip_suffix("_1").map(str::to_string))
        .expect("a latest version in the store")
}

/// A directory someone else owns, with files the tool must never touch.
fn victim(env: &Env) -> PathBuf {
    let v = env.path("victim");
    write(&v.join("precious.txt"), "keep me");
    write(&v.join("sub/deep.txt"), "keep me too");
    v
}

fn assert_victim_intact(v: &Path) {
    assert_eq!(fs::read(v.join("precious.txt")).unwrap(), b"keep me");
    assert_eq!(fs::read(v.join("sub/deep.txt")).unwrap(), b"keep me too");
    assert_eq!(
        fs::read_dir(v).unwrap().count(),
        2,
        "nothing added or removed"
    );
}

#[test]
fn a_symlink_planted_in_a_twoway_store_is_never_entered_nor_deleted_through() {
    for slot in [".build", ".new", ".drop", ".spare", "_0"] {
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
