//! Owners, modes, sparse files, attributes, hard links and long paths.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use integration_tests::*;

use super::*;

fn owner_and_mode(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn chown(p: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        p,
        Some(rustix::fs::Uid::from_raw_unchecked(uid)),
        Some(rustix::fs::Gid::from_raw_unchecked(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[test]
fn as_root_owners_are_kept_by_mirror_sync_and_restore() {
    require_root();
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("d/tool"), "#!/bin/sh\n");
    chmod(&src.join("d/tool"), 0o4755);
    symlink("tool", src.join("d/link")).unwrap();
    for p in ["d/tool", "d", "d/link"] {
        chown(&src.join(p), 1234, 4321);
    }
    // chown cleared the setuid bit: set it again, as the user did.
    chmod(&src.join("d/tool"), 0o4755);
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(owner_and_mode(&dst.join("d/tool")), (1234, 4321, 0o4755));
    assert_eq!(owner_and_mode(&dst.join("d")).0, 1234);
    assert_eq!(owner_and_mode(&dst.join("d/link")).0, 1234);
    // A change of owner alone is a change.
    chown(&src.join("d/tool"), 1235, 4321);
    chmod(&src.join("d/tool"), 0o4755);
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(owner_and_mode(&dst.join("d/tool")), (1235, 4321, 0o4755));
    let again = env.oneway(&src, &dst, &[]);
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );

    // Restored files get their owners back (a new file makes a new version: today's
    // store makes one only when the content changed).
    write(&src.join("new.txt"), "n");
    env.oneway(&src, &dst, &[]).expect(0);
    let to = env.path("restored");
    restore_to(&env, &src, &to, &[]).expect(0);
    assert_eq!(owner_and_mode(&to.join("d/tool")), (1235, 4321, 0o4755));
    assert_eq!(owner_and_mode(&to.join("d")).0, 1234);

    // twoway carries owners to the other side, and a change of owner on one side.
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("run"), "x");
    chown(&a.join("run"), 1234, 4321);
    chmod(&a.join("run"), 0o2755);
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    assert_eq!(owner_and_mode(&b.join("run")), (1234, 4321, 0o2755));
    chown(&b.join("run"), 1236, 4321);
    chmod(&b.join("run"), 0o2755);
    env.run("twoway", [&a, &b, Path::new("--once")]).expect(0);
    assert_eq!(owner_and_mode(&a.join("run")), (1236, 4321, 0o2755));
}

#[test]
fn where_the_owner_cannot_be_kept_setuid_and_setgid_are_cleared() {
    require_root();
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    // Root's setuid program, readable by everyone; the mirror runs as nobody.
    write(&src.join("su-like"), "#!/bin/sh\n");
    write(&src.join("plain"), "p");
    fs::create_dir_all(&dst).unwrap();
    env.hand_to_nobody();
    chown(&src.join("su-like"), 0, 0);
    chmod(&src.join("su-like"), 0o6755);
    let run = || {
        let out = pass_as_nobody(&env, "oneway", &src, &dst).0;
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(owner_and_mode(&dst.join("su-like")), (65534, 65534, 0o755));
    // And that is no difference to mend on every pass.
    let (code, out) = run();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(owner_and_mode(&dst.join("su-like")).2, 0o755);

    // twoway as nobody: the copy loses the bits, the original keeps them.
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    give_to_nobody(&a);
    give_to_nobody(&b);
    write(&a.join("su-like"), "#!/bin/sh\n");
    chown(&a.join("su-like"), 0, 0);
    chmod(&a.join("su-like"), 0o4755);
    for _ in 0..2 {
        let out = pass_as_nobody(&env, "twoway", &a, &b).0;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(owner_and_mode(&b.join("su-like")), (65534, 65534, 0o755));
    assert_eq!(owner_and_mode(&a.join("su-like")), (0, 0, 0o4755));
}

#[test]
fn a_source_directory_readable_but_not_searchable_leaves_backup_usable() {
    require_root();
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("d/f.txt"), "f");
    write(&src.join("top.txt"), "t");
    fs::create_dir_all(&dst).unwrap();
    env.hand_to_nobody();
    let pass = || pass_as_nobody(&env, "oneway", &src, &dst).code();
    assert_eq!(pass(), 0);
    chmod(&src.join("d"), 0o644);
    assert_eq!(pass(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dst.join("d")).unwrap().permissions().mode() & 0o700;
    assert_eq!(mode, 0o700, "BACKUP's copy stays the tool's to enter");
    assert_eq!(
        fs::read(dst.join("d/f.txt")).unwrap(),
        b"f",
        "nothing under it is lost"
    );
    // When SOURCE is readable again, all is as before.
    chmod(&src.join("d"), 0o755);
    assert_eq!(pass(), 0);
    assert_same_tree(&src, &dst);
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn sparse_files_stay_sparse_in_backup_restores_and_twoway() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    let f = src.join("disk.img");
    write(&f, "header");
    let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(64 << 20).unwrap();
    drop(file);
    write(&src.join("dense.bin"), vec![0u8; 1 << 20]);
    assert!(allocated(&f) < 1 << 20, "the test file is sparse");
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(fs::metadata(dst.join("disk.img")).unwrap().len(), 64 << 20);
    assert!(
        allocated(&dst.join("disk.img")) < 1 << 20,
        "BACKUP's copy is sparse"
    );
    assert_eq!(sha256_file(&dst.join("disk.img")), sha256_file(&f));
    // A dense file of zeros stays dense (as cp --sparse=auto).
    assert!(allocated(&dst.join("dense.bin")) >= 1 << 20);

    let to = env.path("restored");
    restore_to(&env, &src, &to, &[]).expect(0);
    assert!(
        allocated(&to.join("disk.img")) < 1 << 20,
        "the restore is sparse"
    );
    assert_eq!(sha256_file(&to.join("disk.img")), sha256_file(&f));

    let b = env.path("b");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&src, &b, Path::new("--once")]).expect(0);
    assert!(
        allocated(&b.join("disk.img")) < 1 << 20,
        "twoway's copy is sparse"
    );
}

#[test]
fn extended_attributes_and_acls_are_copied() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    let f = src.join("tagged.txt");
    write(&f, "x");
    fs::create_dir_all(&dst).unwrap();
    let status = std::process::Command::new("setfattr")
        .args(["-n", "user.origin", "-v", "camera-1"])
        .arg(&f)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        panic!("setfattr (package attr) is needed, on a filesystem with user attributes");
    }
    let acl = std::process::Command::new("setfacl")
        .args(["-m", "u:65534:r"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(acl.success());
    // A directory's default ACL, which its new files inherit.
    let shared = src.join("shared");
    fs::create_dir_all(&shared).unwrap();
    let acl = std::process::Command::new("setfacl")
        .args(["-d", "-m", "u:65534:rw"])
        .arg(&shared)
        .status()
        .unwrap();
    assert!(acl.success());
    env.oneway(&src, &dst, &[]).expect(0);
    let get = |p: &Path, what: &str| {
        let out = std::process::Command::new("getfattr")
            .args(["--absolute-names", "-d", "-m", what])
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let copy = dst.join("tagged.txt");
    assert!(
        get(&copy, "user.").contains("camera-1"),
        "{}",
        get(&copy, "-")
    );
    assert_eq!(
        get(&copy, "system.posix_acl_access"),
        get(&f, "system.posix_acl_access")
    );
    assert!(!get(&f, "system.posix_acl_access").is_empty());
    let default = get(&shared, "system.posix_acl_default");
    assert!(!default.is_empty());
    assert_eq!(
        get(&dst.join("shared"), "system.posix_acl_default"),
        default
    );
}

fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn hard_links_within_source_stay_hard_links_in_backup() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("photos/a.jpg"), "one photo");
    fs::create_dir_all(src.join("albums")).unwrap();
    fs::hard_link(src.join("photos/a.jpg"), src.join("albums/a.jpg")).unwrap();
    fs::hard_link(src.join("photos/a.jpg"), src.join("z.jpg")).unwrap();
    write(&src.join("other.jpg"), "one photo");
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let leader = ino(&dst.join("albums/a.jpg"));
    assert_eq!(ino(&dst.join("photos/a.jpg")), leader);
    assert_eq!(ino(&dst.join("z.jpg")), leader);
    assert_ne!(
        ino(&dst.join("other.jpg")),
        leader,
        "same bytes, but no link in SOURCE"
    );
    let again = env.oneway(&src, &dst, &[]);
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );

    // An edit in place changes every name; BACKUP follows with one file again.
    fs::write(src.join("photos/a.jpg"), "edited photo").unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let leader = ino(&dst.join("albums/a.jpg"));
    assert_eq!(fs::read(dst.join("z.jpg")).unwrap(), b"edited photo");
    assert_eq!(ino(&dst.join("photos/a.jpg")), leader);
    assert_eq!(ino(&dst.join("z.jpg")), leader);
    assert_same_tree(&src, &dst);

    // A change of mode alone is made once for the group, in place: after this very
    // pass BACKUP's names are still one file (copying a name would split them).
    chmod(&src.join("z.jpg"), 0o600);
    let changed = env.oneway(&src, &dst, &[]);
    changed.expect(0);
    assert!(changed.stdout().contains("meta"), "{}", changed.stdout());
    assert_eq!(
        ino(&dst.join("albums/a.jpg")),
        leader,
        "{}",
        changed.stdout()
    );
    assert_eq!(ino(&dst.join("photos/a.jpg")), leader);
    assert_eq!(ino(&dst.join("z.jpg")), leader);
    assert_same_tree(&src, &dst);
    let again = env.oneway(&src, &dst, &[]);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );
    // So is a change of extended attributes alone: it reaches every name.
    let set = std::process::Command::new("setfattr")
        .args(["-n", "user.rating", "-v", "5"])
        .arg(src.join("photos/a.jpg"))
        .status()
        .expect("setfattr (package attr) is needed");
    assert!(set.success());
    let changed = env.oneway(&src, &dst, &[]);
    changed.expect(0);
    for name in ["albums/a.jpg", "photos/a.jpg", "z.jpg"] {
        let out = std::process::Command::new("getfattr")
            .args(["--absolute-names", "--only-values", "-n", "user.rating"])
            .arg(dst.join(name))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"5", "{name}: {}", changed.all());
        assert_eq!(ino(&dst.join(name)), leader, "{name}: {}", changed.all());
    }
    // A new name for the group, and a new mode, in one pass: one file still.
    fs::hard_link(src.join("z.jpg"), src.join("photos/b.jpg")).unwrap();
    chmod(&src.join("z.jpg"), 0o640);
    let changed = env.oneway(&src, &dst, &[]);
    changed.expect(0);
    let leader = ino(&dst.join("albums/a.jpg"));
    for name in ["photos/a.jpg", "photos/b.jpg", "z.jpg"] {
        assert_eq!(ino(&dst.join(name)), leader, "{name}: {}", changed.all());
    }
    assert_same_tree(&src, &dst);

    // Names that stop being links stop being links.
    fs::remove_file(src.join("z.jpg")).unwrap();
    write(&src.join("new.tmp"), "replaced");
    fs::rename(src.join("new.tmp"), src.join("albums/a.jpg")).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    assert_ne!(
        ino(&dst.join("albums/a.jpg")),
        ino(&dst.join("photos/a.jpg"))
    );
    assert!(!dst.join("z.jpg").exists());
    assert_same_tree(&src, &dst);
}

#[test]
fn paths_longer_than_the_kernel_takes_at_once_are_backed_up_verified_and_restored() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    let mut deep = PathBuf::new();
    for i in 0..20 {
        deep.push(format!("d{i:02}{}", "x".repeat(240)));
    }
    let file = deep.join("deep.txt");
    assert!(file.as_os_str().len() > 4096);
    // Made a level at a time (through handles): the whole path is too long for one call.
    {
        use rustix::fs::{mkdirat, openat, Mode, OFlags};
        fs::create_dir_all(&src).unwrap();
        let mut dir = fs::File::open(&src).unwrap();
        for c in deep.components() {
            mkdirat(&dir, c.as_os_str(), Mode::from_raw_mode(0o755)).unwrap();
            dir = fs::File::from(
                openat(
                    &dir,
                    c.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    Mode::empty(),
                )
                .unwrap(),
            );
        }
        let f = openat(
            &dir,
            "deep.txt",
            OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        std::io::Write::write_all(&mut fs::File::from(f), b"deep").unwrap();
    }
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let again = env.oneway(&src, &dst, &[]);
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );
    assert_verified(&env);
    let to = env.path("r");
    restore_to(&env, &src, &to, &[]).expect(0);
    let b = env.path("b");
    fs::create_dir_all(&b).unwrap();
    env.run("twoway", [&src, &b, Path::new("--once")]).expect(0);
    // Read back a level at a time too.
    for root in [&dst, &to, &b] {
        let mut dir = fs::File::open(root).unwrap();
        for c in deep.components() {
            use std::os::fd::AsFd;
            let fd = rustix::fs::openat(
                dir.as_fd(),
                c.as_os_str(),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            dir = fs::File::from(fd);
        }
        use std::os::fd::AsFd;
        let f = rustix::fs::openat(
            dir.as_fd(),
            "deep.txt",
            rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut fs::File::from(f), &mut text).unwrap();
        assert_eq!(text, "deep", "{}", root.display());
    }
}

#[test]
fn a_change_of_attributes_alone_reaches_backup() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    let f = src.join("photo.jpg");
    write(&f, "pixels");
    // Settled (not written within a timestamp tick of a scan): its hash is cached, so
    // that its rename below is seen as a move however busy the machine.
    set_mtime(&f, 1_600_000_000, 0);
    fs::create_dir_all(src.join("album")).unwrap();
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let attr = |p: &Path, name: &str| {
        let out = std::process::Command::new("getfattr")
            .args(["--absolute-names", "--only-values", "-n", name])
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Only the attributes change: no byte, no mode, no mtime.
    let set = std::process::Command::new("setfattr")
        .args(["-n", "user.rating", "-v", "5"])
        .arg(&f)
        .status()
        .expect("setfattr (package attr) is needed");
    assert!(set.success());
    let acl = std::process::Command::new("setfacl")
        .args(["-m", "u:65534:rx"])
        .arg(src.join("album"))
        .status()
        .unwrap();
    assert!(acl.success());
    let run = env.oneway(&src, &dst, &[]);
    run.expect(0);
    assert_eq!(
        attr(&dst.join("photo.jpg"), "user.rating"),
        "5",
        "{}",
        run.all()
    );
    let acl_of = |p: &Path| {
        String::from_utf8_lossy(
            &std::process::Command::new("getfacl")
                .args(["--omit-header", "--absolute-names"])
                .arg(p)
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    assert_eq!(acl_of(&dst.join("album")), acl_of(&src.join("album")));
    assert!(
        acl_of(&dst.join("album")).contains("user:nobody"),
        "{}",
        acl_of(&dst.join("album"))
    );
    // And then nothing more to do.
    let again = env.oneway(&src, &dst, &[]);
    again.expect(0);
    assert!(
        again.stdout().contains("nothing to do"),
        "{}",
        again.stdout()
    );
    assert_eq!(fs::read(dst.join("photo.jpg")).unwrap(), b"pixels");
    // A file renamed with new attributes: moved in BACKUP, and given them (they were
    // never looked at again once the move was done).
    let set = std::process::Command::new("setfattr")
        .args(["-n", "user.rating", "-v", "4"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(set.success());
    fs::rename(&f, src.join("album/photo.jpg")).unwrap();
    let moved = env.oneway(&src, &dst, &[]);
    moved.expect(0);
    assert!(moved.stdout().contains("move"), "{}", moved.all());
    assert_eq!(
        attr(&dst.join("album/photo.jpg"), "user.rating"),
        "4",
        "{}",
        moved.all()
    );
    // Its last attribute removed: BACKUP's goes too (a source without any used to
    // leave the destination's as they were).
    let removed = std::process::Command::new("setfattr")
        .args(["-x", "user.rating"])
        .arg(src.join("album/photo.jpg"))
        .status()
        .unwrap();
    assert!(removed.success());
    let run = env.oneway(&src, &dst, &[]);
    run.expect(0);
    assert_eq!(
        attr(&dst.join("album/photo.jpg"), "user.rating"),
        "",
        "{}",
        run.all()
    );
}
