//! Moves are renames: a file or directory moved within SOURCE (or on one side of a twoway
//! pair) is moved on the other side, keeping its inode, and the version history records
//! the old paths as any deletion.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use integration_tests::*;

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .ino()
}

/// Writes `bytes` at `p` with an mtime well in the past (a file written a moment before
/// a pass is not trusted to the stat cache, and so could not be recognised).
fn settled(p: &Path, bytes: &[u8], secs: i64) {
    write(p, bytes);
    set_mtime(p, 1_600_000_000 + secs, 5);
}

fn recovery(env: &Env, args: &[&OsStr]) -> Run {
    env.run("recovery", args)
}

#[test]
fn a_renamed_directory_and_a_moved_file_are_renamed_in_backup() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    let mut rng = Rng::new(7);
    let big = rng.bytes(8 << 20);
    settled(&src.join("photos/2019/a.jpg"), &big, 1);
    settled(&src.join("photos/2019/b.jpg"), &rng.bytes(300_000), 2);
    settled(&src.join("photos/c.jpg"), &rng.bytes(200_000), 3);
    settled(&src.join("inbox/scan.pdf"), &rng.bytes(100_000), 4);
    settled(&src.join("keep.txt"), b"stays", 5);
    env.oneway(&src, &dst, &[]).expect(0);
    let before = [
        ino(&dst.join("photos/2019/a.jpg")),
        ino(&dst.join("photos/2019/b.jpg")),
        ino(&dst.join("photos/c.jpg")),
        ino(&dst.join("inbox/scan.pdf")),
    ];

    // The whole photo folder renamed (every file of BACKUP but two moves: more than
    // --max-delete would let a pass delete), and one file moved into it.
    fs::rename(src.join("photos"), src.join("Pictures")).unwrap();
    fs::rename(src.join("inbox/scan.pdf"), src.join("Pictures/scan.pdf")).unwrap();
    let run = env.oneway(&src, &dst, &["-v"]);
    run.expect(0);
    assert!(run.all().contains("0 bytes copied"), "{}", run.all());
    assert!(run.all().contains("move 4"), "{}", run.all());
    assert_same_tree(&src, &dst);
    let after = [
        ino(&dst.join("Pictures/2019/a.jpg")),
        ino(&dst.join("Pictures/2019/b.jpg")),
        ino(&dst.join("Pictures/c.jpg")),
        ino(&dst.join("Pictures/scan.pdf")),
    ];
    assert_eq!(before, after, "each file keeps its inode in BACKUP");
    assert!(!dst.join("photos").exists() && dst.join("inbox").is_dir());

    // The history has the old paths as removed, and nothing was copied into the store.
    let store = dst.join("__versions__");
    assert!(
        !store_holds(&store, &big),
        "a moved file is not kept in the store"
    );
    let to = env.path("restored");
    env.restore_to(&src, "previous", &to, &[]).expect(0);
    assert_eq!(fs::read(to.join("photos/2019/a.jpg")).unwrap(), big);
    assert!(to.join("inbox/scan.pdf").is_file());
    let deleted = recovery(&env, &[OsStr::new("deleted"), src.as_os_str()]);
    deleted.expect(0);
    assert!(deleted.stdout().contains("photos/"), "{}", deleted.stdout());
    recovery(&env, &[OsStr::new("verify"), src.as_os_str()]).expect(0);
    // The next pass has nothing to do.
    assert!(env
        .oneway(&src, &dst, &[])
        .expect(0)
        .all()
        .contains("nothing to do"));
}

#[test]
fn a_backup_file_edited_by_hand_is_not_taken_for_a_move_and_is_kept() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    settled(&src.join("a.txt"), b"original text", 1);
    settled(&src.join("other.txt"), b"other", 2);
    env.oneway(&src, &dst, &[]).expect(0);
    // BACKUP's copy is changed by hand, then SOURCE renames the file.
    settled(&dst.join("a.txt"), b"edited in BACKUP", 9);
    fs::rename(src.join("a.txt"), src.join("b.txt")).unwrap();
    let run = env.oneway(&src, &dst, &["-v"]);
    run.expect(0);
    assert!(!run.all().contains("Z move "), "{}", run.all());
    assert_same_tree(&src, &dst);
    assert_eq!(fs::read(dst.join("b.txt")).unwrap(), b"original text");
    assert!(
        store_holds(&dst.join("__versions__"), b"edited in BACKUP"),
        "the hand edit the pass removed is kept"
    );
}

#[test]
fn a_rename_on_one_replica_is_a_rename_on_the_other() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&b).unwrap();
    let mut rng = Rng::new(8);
    let big = rng.bytes(8 << 20);
    settled(&a.join("music/album/01.flac"), &big, 1);
    settled(&a.join("music/album/02.flac"), &rng.bytes(100_000), 2);
    let sync = |extra: &[&str]| {
        let mut args = vec![a.as_os_str(), b.as_os_str(), OsStr::new("--once")];
        args.extend(extra.iter().map(OsStr::new));
        env.run("twoway", args)
    };
    sync(&[]).expect(0);
    let in_b = ino(&b.join("music/album/01.flac"));

    fs::rename(a.join("music/album"), a.join("music/Album (2020)")).unwrap();
    let run = sync(&["-v"]);
    run.expect(0);
    assert!(run.all().contains("move 2"), "{}", run.all());
    // (twoway keeps the replicas' root directories' mtimes their own)
    assert_eq!(snapshot_with(&a, false), snapshot_with(&b, false));
    assert_eq!(ino(&b.join("music/Album (2020)/01.flac")), in_b);
    assert!(!b.join("music/album").exists());
    // B's own store can still give the old path back, from the live file.
    let to = env.path("restored");
    env.restore_to(&b, "previous", &to, &[]).expect(0);
    assert_eq!(fs::read(to.join("music/album/01.flac")).unwrap(), big);
    assert!(sync(&[]).expect(0).all().contains("nothing to do"));
}
