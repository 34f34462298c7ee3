//! `--watch`: passes the watcher starts.

use super::*;

/// Waits (up to a minute: a busy machine is slow, never this slow) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < until, "never happened: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts `tool A B --watch` (interval an hour, debounce 100 ms, `extra` flags), its
/// output piped.
fn start_watching(env: &Env, tool: &str, a: &Path, b: &Path, extra: &[&str]) -> Running {
    let child = env
        .cmd(tool)
        .arg(a)
        .arg(b)
        .args(["--watch", "--interval", "3600", "--debounce", "100"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    Running::new(child)
}

/// Stops a watching run with SIGTERM; checks it exits 0 and gives its stdout.
fn stop_watching(tool: &str, running: Running) -> String {
    let pid = running.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{tool}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn watch_mode_passes_soon_after_a_change_and_stops_on_sigterm() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("first.txt"), "1");
    std::fs::create_dir_all(&b).unwrap();
    for tool in ["oneway", "twoway"] {
        let running = start_watching(&env, tool, &a, &b, &[]);
        eventually("the first pass", || b.join("first.txt").exists());
        // A change made now reaches the other side long before the next interval.
        let name = format!("{tool}-new.txt");
        write(&a.join(&name), "new");
        eventually("the change is copied", || b.join(&name).exists());
        if tool == "twoway" {
            write(&b.join("from-b.txt"), "b");
            eventually("a change in B reaches A", || a.join("from-b.txt").exists());
        }
        // Time for a pass that the last pass's own writes would start, if they did
        // (a slow machine can only hide such a pass, never make one up).
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let text = stop_watching(tool, running);
        assert!(text.contains("stopped after"), "{tool}: {text}");
        // What a pass wrote never started another: no pass found nothing to do.
        assert!(!text.contains("nothing to do"), "{tool}: {text}");
    }
}

/// A pass that the watcher starts reads again only the folders it saw change, and what
/// it leaves is what a whole pass would: a whole pass afterwards finds nothing to do.
#[test]
fn watch_mode_reads_only_what_changed_and_leaves_what_a_whole_pass_would() {
    let env = Env::new();
    for tool in ["oneway", "twoway"] {
        let (a, b) = (
            env.path(&format!("{tool}-a")),
            env.path(&format!("{tool}-b")),
        );
        for (p, text) in [
            ("deep/d1/d2/edited.txt", "1"),
            ("gone/inner/g.txt", "2"),
            ("ren/r.txt", "3"),
            ("flip/f.txt", "4"),
            ("still/s.txt", "5"),
        ] {
            write(&a.join(p), text);
        }
        std::fs::create_dir_all(&b).unwrap();
        let running = start_watching(&env, tool, &a, &b, &["-v"]);
        eventually("the first pass", || b.join("still/s.txt").exists());
        let read = |p: &Path| std::fs::read(p).unwrap_or_default();
        // An edit in place, deep down.
        let edited = a.join("deep/d1/d2/edited.txt");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&edited)
            .unwrap()
            .write_all(b" and more")
            .unwrap();
        let copy = b.join("deep/d1/d2/edited.txt");
        eventually("the edit is copied", || read(&copy) == b"1 and more");
        // A file added there: its folder's own mtime moves too.
        write(&a.join("deep/d1/d2/added.txt"), "added");
        eventually("an added file is copied", || {
            b.join("deep/d1/d2/added.txt").exists()
        });
        // A folder made with content at once (before the watcher can watch it).
        write(&a.join("made/inner/m.txt"), "made");
        eventually("a new folder is copied", || {
            b.join("made/inner/m.txt").exists()
        });
        // A folder removed, one renamed, one replaced by a file.
        std::fs::remove_dir_all(a.join("gone")).unwrap();
        eventually("a removed folder goes", || !b.join("gone").exists());
        std::fs::rename(a.join("ren"), a.join("renamed")).unwrap();
        eventually("a renamed folder follows", || {
            b.join("renamed/r.txt").exists() && !b.join("ren").exists()
        });
        std::fs::remove_dir_all(a.join("flip")).unwrap();
        write(&a.join("flip"), "now a file");
        eventually("a folder that became a file", || {
            read(&b.join("flip")) == b"now a file"
        });
        if tool == "twoway" {
            write(&b.join("deep/from-b.txt"), "b");
            eventually("a change in B reaches A", || {
                a.join("deep/from-b.txt").exists()
            });
            // A deletion in B is a deletion in A (the sync state knew the file).
            std::fs::remove_file(b.join("still/s.txt")).unwrap();
            eventually("a deletion in B reaches A", || {
                !a.join("still/s.txt").exists()
            });
        } else {
            // A file changed by hand in BACKUP is put back long before the interval.
            write(&b.join("still/s.txt"), "edited in BACKUP");
            eventually("a hand edit in BACKUP is undone", || {
                read(&b.join("still/s.txt")) == b"5"
            });
        }
        let text = stop_watching(tool, running);
        // The passes after the first read only the folders that changed (one that
        // ended with an error, which a busy machine might cause, makes the next whole).
        assert!(text.matches("folders again").count() >= 3, "{tool}: {text}");
        // ... and plan only that part (a folder removed or replaced makes its pass
        // plan the whole; the edits are planned as parts).
        assert!(
            text.matches("planning the part read again").count() >= 2,
            "{tool}: {text}"
        );
        // A whole pass finds nothing left to do, and the trees are the same.
        let again = env
            .cmd(tool)
            .arg(&a)
            .arg(&b)
            .arg("--once")
            .output()
            .unwrap();
        let again_text = String::from_utf8_lossy(&again.stdout);
        assert!(again_text.contains("nothing to do"), "{tool}: {again_text}");
        assert_same_tree(&a.join("deep"), &b.join("deep"));
        for p in ["made/inner/m.txt", "renamed/r.txt", "flip", "still/s.txt"] {
            assert_eq!(read(&a.join(p)), read(&b.join(p)), "{tool}: {p}");
        }
    }
}

/// SOURCE is the top of a drive, swapped for another with the same files and one more
/// (or the same one unmounted and mounted again): the watch on the old one sees nothing
/// any more, so the root is watched anew and read whole, and what is new comes across
/// long before the interval.
#[test]
fn watch_mode_watches_a_drive_mounted_again_anew() {
    let env = Env::new();
    let first = Mounted::new("ext4", 32, &env.path("usb"));
    let mut second = Mounted::new("ext4", 32, &env.path("spare"));
    let (src, dst) = (first.dir.clone(), env.path("dst"));
    for d in [&first.dir, &second.dir] {
        write(&d.join("photos/a.jpg"), "a");
        write(&d.join("photos/b.jpg"), "b");
    }
    write(
        &second.dir.join("photos/new.jpg"),
        "only on the second drive",
    );
    std::fs::create_dir_all(&dst).unwrap();
    let running = start_watching(&env, "oneway", &src, &dst, &[]);
    eventually("the first pass", || dst.join("photos/b.jpg").exists());
    first.unplug();
    second.unplug();
    second.plug_at(&src);
    eventually("the second drive's new file is copied", || {
        dst.join("photos/new.jpg").exists()
    });
    let text = stop_watching("oneway", running);
    assert!(text.contains("watched anew"), "{text}");
    drop(first);
}

/// A warning about the place of a store (SOURCE's own folder there is not backed up) is
/// said once a run, not at every pass of an interval run.
#[test]
fn the_store_place_warning_is_said_once_a_run() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
    write(&src.join("f.txt"), "f");
    write(&src.join("vers/s.txt"), "source's own");
    let log = env.path("run.log");
    let child = env
        .cmd("oneway")
        .arg(&src)
        .arg(&dst)
        .args(["--interval", "1", "--store"])
        .arg(dst.join("vers"))
        .arg("--log")
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = Running::new(child);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("three passes", || read().contains(" pass 3"));
    stop_watching("oneway", running);
    let said = read().matches("vers is left out: the store").count();
    assert_eq!(said, 1, "{}", read());
}
