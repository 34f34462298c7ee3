//! Other filesystems, loop-mounted: a BACKUP drive that fills up, a store on another
//! filesystem than its directory, and a twoway replica on a drive that is then unplugged.

use std::collections::BTreeMap;

use super::*;

/// Fills the filesystem holding `dir` with one file of zeros, up to its last free byte.
fn fill_up(file: &Path) {
    let mut f = fs::File::create(file).unwrap();
    let block = vec![0u8; 64 << 10];
    loop {
        use std::io::Write;
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", file.display()),
        }
    }
    // The last partial block too.
    let mut f = std::io::BufWriter::with_capacity(1, f);
    while std::io::Write::write(&mut f, &[0]).is_ok_and(|n| n == 1) {}
}

/// Every file BACKUP holds is whole: the same bytes as SOURCE's file of that path (or,
/// for a path in `either`, one of the two contents given); no temporary file is left on
/// the drive.
fn assert_whole(src: &Path, dst: &Path, drive: &Path, either: &[(&str, &[String])]) {
    let source: BTreeMap<PathBuf, String> = files_of(src).into_iter().collect();
    for (p, sha) in files_of(dst) {
        if let Some((_, allowed)) = either.iter().find(|(q, _)| p == Path::new(q)) {
            assert!(allowed.contains(&sha), "{} is neither version", p.display());
            continue;
        }
        assert_eq!(
            source.get(&p),
            Some(&sha),
            "{} in BACKUP is not SOURCE's file",
            p.display()
        );
    }
    assert_eq!(temp_leftovers(drive), Vec::<PathBuf>::new());
}

#[test]
fn a_backup_drive_that_fills_up_loses_nothing_and_the_next_pass_converges() {
    let env = Env::new();
    let disk = Mounted::new("ext4", 32, &env.path("usb"));
    let (src, dst) = (env.path("src"), disk.path("backup"));
    fs::create_dir_all(&dst).unwrap();
    let mut rng = Rng::new(41);
    for i in 0..30 {
        write_random(&src.join(format!("photos/p{i:02}.jpg")), 1 << 20, &mut rng);
    }
    write(&src.join("notes.txt"), "notes");

    // More than the drive holds: what fits is copied whole, the rest is an error each.
    let run = env.oneway(&src, &dst, &[]);
    run.expect(1);
    assert!(
        run.all().contains("No space left on device"),
        "{}",
        run.all()
    );
    assert!(
        run.all().contains("the disk holding BACKUP is full"),
        "{}",
        run.all()
    );
    assert!(dst.join("notes.txt").exists());
    assert_whole(&src, &dst, &disk.dir, &[]);
    let first = files_of(&dst);
    assert!(first.len() > 10, "only {} files fitted", first.len());
    let first_id = env.versions_of(&src)[0]["id"].to_string();

    // SOURCE changes while the drive is full to the last byte: the replaced and removed
    // files must stay whole in BACKUP or in the store, whatever could not be written.
    let old = sha256_file(&dst.join("photos/p00.jpg"));
    write_random(&src.join("photos/p00.jpg"), 1 << 20, &mut rng);
    let new = sha256_file(&src.join("photos/p00.jpg"));
    for i in 1..13 {
        fs::remove_file(src.join(format!("photos/p{i:02}.jpg"))).unwrap();
    }
    fill_up(&disk.path("filler"));
    env.oneway(&src, &dst, &[]).expect(1);
    assert_whole(&src, &dst, &disk.dir, &[("photos/p00.jpg", &[old, new])]);
    // A restore onto the drive with 2 MiB left: what fits, whole, and a line that says
    // why not all.
    let filler = fs::OpenOptions::new()
        .write(true)
        .open(disk.path("filler"))
        .unwrap();
    let len = filler.metadata().unwrap().len();
    filler.set_len(len.saturating_sub(2 << 20)).unwrap();
    drop(filler);
    rustix::fs::sync();
    let onto = disk.path("restored");
    let run = env.restore_to(&src, &first_id, &onto, &[]);
    run.expect(1);
    assert!(run.all().contains("is full"), "{}", run.all());
    assert_eq!(temp_leftovers(&disk.dir), Vec::<PathBuf>::new());
    let first_files: BTreeMap<PathBuf, String> = first.iter().cloned().collect();
    for (p, sha) in files_of(&onto) {
        assert_eq!(
            first_files.get(&p),
            Some(&sha),
            "{} is not whole",
            p.display()
        );
    }
    fs::remove_dir_all(&onto).unwrap();
    let back = env.path("first");
    env.restore_to(&src, &first_id, &back, &[]).expect(0);
    assert_eq!(
        files_of(&back),
        first,
        "the first version no longer restores"
    );

    // Room again, as a user makes it: the filler gone, and the history cut to the last
    // version after each pass (what SOURCE no longer has stays in the store until then).
    // Passes converge: the store gives back the space of the files SOURCE lost.
    fs::remove_file(disk.path("filler")).unwrap();
    let mut codes = vec![];
    for _ in 0..3 {
        rustix::fs::sync();
        let run = env.oneway(&src, &dst, &[]);
        let code = run.code();
        codes.push(code);
        let listed = env.run("recovery", ["list".as_ref(), dst.as_os_str()]);
        eprintln!("{}\n{}", run.all(), listed.all());
        if code == 0 {
            break;
        }
        assert_eq!(code, 1);
        let keep_last = [
            "forget".as_ref(),
            dst.as_os_str(),
            "--keep-last".as_ref(),
            "1".as_ref(),
        ];
        env.run("recovery", keep_last).expect(0);
    }
    assert_eq!(codes.last(), Some(&0), "no pass converged: {codes:?}");
    assert_same_tree(&src, &dst);
    assert_eq!(temp_leftovers(&disk.dir), Vec::<PathBuf>::new());
    assert_verified(&env);
}

#[test]
fn a_store_on_another_filesystem_keeps_copies_no_edit_in_place_reaches() {
    let env = Env::new();
    let disk = Mounted::new("ext4", 64, &env.path("usb"));
    let store = disk.path("store");
    let (src, dst) = env.src_and_dst();
    let mut rng = Rng::new(5);
    write(&src.join("a.txt"), "one");
    write(&src.join("docs/b.txt"), "two");
    write_random(&src.join("big.bin"), 3 << 20, &mut rng);
    let pass = |want: i32| {
        env.oneway(&src, &dst, &["--store", store.to_str().unwrap()])
            .expect(want);
        (env.versions_of(&src)[0]["id"].to_string(), files_of(&dst))
    };
    let mut made = vec![pass(0)];

    // Edits in place in SOURCE (append, truncate) and a deletion: BACKUP's old files go
    // to a store on another filesystem, so they are copied there.
    fs::OpenOptions::new()
        .append(true)
        .open(src.join("a.txt"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b" more"))
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(src.join("big.bin"))
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    fs::remove_file(src.join("docs/b.txt")).unwrap();
    made.push(pass(0));

    // A hand edit in place in BACKUP, then the pass puts SOURCE's file back. Afterwards
    // live files are written in place again, each in one directory: the newest version's
    // files are the live ones, so its content is still in the other.
    write(&dst.join("a.txt"), "by hand");
    made.push(pass(0));
    for live in [dst.join("a.txt"), src.join("big.bin")] {
        write_random(&live, 4096, &mut rng);
    }
    let by_hand = env
        .versions_of(&src)
        .iter()
        .any(|v| v["why"] == "before a pass");
    assert!(by_hand, "the hand edit in BACKUP was not kept first");

    for (i, (id, files)) in made.iter().enumerate() {
        let to = env.path(&format!("restored-{i}"));
        env.restore_to(&src, id, &to, &[]).expect(0);
        assert_eq!(&files_of(&to), files, "version {id} changed");
    }
    assert_verified(&env);
}

#[test]
fn a_replica_restores_its_versions_with_the_other_drive_unplugged() {
    let env = Env::new();
    let mut disk = Mounted::new("ext4", 64, &env.path("usb"));
    let (a, b) = (env.path("a"), disk.path("b"));
    fs::create_dir_all(&b).unwrap();
    let mut rng = Rng::new(9);
    write(&a.join("notes.txt"), "v1");
    write_random(&a.join("photos/p1.jpg"), 1 << 20, &mut rng);
    let sync = || {
        env.run("twoway", [a.as_os_str(), b.as_os_str(), "--once".as_ref()])
            .expect(0);
        (env.versions_of(&a)[0]["id"].to_string(), files_of(&a))
    };
    let mut made = vec![sync()];
    // Edited in place on the drive, then on the laptop: each replaces the other side's
    // file, whose old content only the other side's store then has, on another drive.
    write(&b.join("notes.txt"), "v2 from the drive");
    made.push(sync());
    write_random(&a.join("photos/p1.jpg"), 1 << 20, &mut rng);
    made.push(sync());
    fs::remove_file(a.join("notes.txt")).unwrap();
    made.push(sync());

    disk.unmount();
    for (i, (id, files)) in made.iter().enumerate() {
        let to = env.path(&format!("restored-{i}"));
        env.restore_to(&a, id, &to, &[]).expect(0);
        assert_eq!(&files_of(&to), files, "version {id} of A without B's drive");
    }
}

/// SOURCE and BACKUP on one filesystem that can share blocks between files (btrfs, xfs):
/// the copy is a reflink (as `cp --reflink=auto`), which takes next to no space, and an
/// edit in place of either file leaves the other as it was.
fn copies_share_blocks_and_edits_stay_apart(kind: &str, mib: u64) {
    let env = Env::new();
    let disk = Mounted::new(kind, mib, &env.path("disk"));
    let (src, dst) = (disk.path("src"), disk.path("dst"));
    fs::create_dir_all(&dst).unwrap();
    let mut rng = Rng::new(3);
    let big = 64 << 20;
    write_random(&src.join("videos/v.mp4"), big, &mut rng);
    write(&src.join("notes.txt"), "notes");
    let original = sha256_file(&src.join("videos/v.mp4"));
    rustix::fs::sync();
    let free = disk.free_bytes();
    env.oneway(&src, &dst, &[]).expect(0);
    rustix::fs::sync();
    let spent = free.saturating_sub(disk.free_bytes());
    assert!(
        spent < big as u64 / 4,
        "{kind}: the copy took {spent} bytes of disk for a {big}-byte file"
    );
    assert_same_tree(&src, &dst);

    // Edits in place, on each side: the other file keeps its bytes.
    let mut edit = |p: &Path| {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(p).unwrap();
        f.write_all_at(&rng.bytes(1 << 20), 4096).unwrap();
    };
    edit(&src.join("videos/v.mp4"));
    assert_eq!(sha256_file(&dst.join("videos/v.mp4")), original);
    let edited = sha256_file(&src.join("videos/v.mp4"));
    env.oneway(&src, &dst, &[]).expect(0);
    assert_eq!(sha256_file(&dst.join("videos/v.mp4")), edited);
    edit(&dst.join("videos/v.mp4"));
    assert_eq!(sha256_file(&src.join("videos/v.mp4")), edited);

    // The version that held the original gives it back, from the store.
    let first = env.versions_of(&src).last().unwrap()["id"].to_string();
    let back = disk.path("restored");
    env.restore_to(&src, &first, &back, &[]).expect(0);
    assert_eq!(sha256_file(&back.join("videos/v.mp4")), original);
    assert_verified(&env);
}

#[test]
fn on_btrfs_a_copy_shares_blocks_and_edits_stay_apart() {
    copies_share_blocks_and_edits_stay_apart("btrfs", 512);
}

#[test]
fn on_xfs_a_copy_shares_blocks_and_edits_stay_apart() {
    copies_share_blocks_and_edits_stay_apart("xfs", 512);
}

/// Files named `notes/0.txt` … `notes/9.txt` in `dir`.
fn ten_notes(dir: &Path) {
    for i in 0..10 {
        write(&dir.join(format!("notes/{i}.txt")), format!("note {i}"));
    }
}

fn notes_in(dir: &Path) -> usize {
    fs::read_dir(dir.join("notes")).map_or(0, |d| d.count())
}

#[test]
fn a_drive_that_is_not_mounted_is_never_taken_for_a_directory_emptied() {
    let env = Env::new();
    let refused = |run: Run, what: &str| {
        run.expect(2);
        assert!(
            run.stderr().contains("probably not mounted"),
            "{what}: {}",
            run.all()
        );
    };
    let empty = |dir: &Path| fs::read_dir(dir).unwrap().count() == 0;

    // twoway, DIR_B the top of a drive: unplugged, its mount point is an empty folder.
    // Even with deletions allowed, nothing in A goes and nothing is written there.
    let mut usb = Mounted::new("ext4", 32, &env.path("usb"));
    let (a, b) = (env.path("a"), usb.dir.clone());
    ten_notes(&a);
    let twoway = |extra: &[&str]| {
        let mut args = vec![a.as_os_str(), b.as_os_str(), "--once".as_ref()];
        args.extend(extra.iter().map(OsStr::new));
        env.run("twoway", args)
    };
    twoway(&[]).expect(0);
    assert_eq!(notes_in(&b), 10);
    usb.unmount();
    assert!(empty(&b));
    refused(twoway(&["--max-delete", "100"]), "twoway");
    assert_eq!(notes_in(&a), 10);
    assert!(empty(&b), "written into the mount point");

    // oneway, SOURCE the top of a drive.
    let mut card = Mounted::new("ext4", 32, &env.path("card"));
    let (src, dst) = (card.dir.clone(), env.path("dst"));
    ten_notes(&src);
    fs::create_dir_all(&dst).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    card.unmount();
    refused(env.oneway(&src, &dst, &["--max-delete", "100"]), "SOURCE");
    assert_eq!(notes_in(&dst), 10);

    // oneway, BACKUP the top of a drive: nothing is copied into its mount point.
    let mut disk = Mounted::new("ext4", 32, &env.path("disk"));
    let (src, dst) = (env.path("photos"), disk.dir.clone());
    ten_notes(&src);
    env.oneway(&src, &dst, &[]).expect(0);
    disk.unmount();
    refused(env.oneway(&src, &dst, &[]), "BACKUP");
    assert!(empty(&dst), "copied into the mount point");
}

#[test]
fn lost_and_found_at_the_top_of_a_drive_is_the_filesystems_own() {
    // BACKUP is the top of an ext4 drive, its `lost+found` root's and unreadable to the
    // user who runs the backup: no error at every pass, and it is never removed.
    let env = Env::new();
    let usb = Mounted::new("ext4", 32, &env.path("usb"));
    let (src, dst) = (env.path("src"), usb.dir.clone());
    write(&src.join("photos/a.jpg"), "a");
    env.hand_to_nobody();
    let status = std::process::Command::new("chown")
        .arg("65534:65534")
        .arg(&dst)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dst.join("lost+found").is_dir());
    let run = pass_as_nobody(&env, "oneway", &src, &dst);
    run.expect(0);
    assert!(dst.join("lost+found").is_dir(), "{}", run.all());
    assert!(dst.join("photos/a.jpg").exists());

    // As root too: SOURCE the top of a drive, its `lost+found` is not backed up, and a
    // copy an earlier build made in BACKUP stays.
    let card = Mounted::new("ext4", 32, &env.path("card"));
    let (src, dst) = (card.dir.clone(), env.path("dst"));
    write(&src.join("lost+found/#12345"), "what fsck found");
    write(&src.join("photos/b.jpg"), "b");
    write(&dst.join("lost+found/old"), "an earlier copy");
    env.oneway(&src, &dst, &[]).expect(0);
    assert!(dst.join("photos/b.jpg").exists());
    assert!(!dst.join("lost+found/#12345").exists());
    assert!(dst.join("lost+found/old").exists());

    // A restore over the top of the drive leaves it too.
    write(&src.join("photos/b.jpg"), "edited");
    env.run(
        "recovery",
        ["restore".as_ref(), src.as_os_str(), "--force".as_ref()],
    )
    .expect(0);
    assert_eq!(fs::read_to_string(src.join("photos/b.jpg")).unwrap(), "b");
    assert!(src.join("lost+found/#12345").exists());
}
