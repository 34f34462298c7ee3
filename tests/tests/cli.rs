//! What every binary's command line offers besides its job: its version, shell
//! completions and a man page built from its own definition.

use integration_tests::*;
use std::io::Write as _;
use std::path::Path;

const TOOLS: [&str; 3] = ["oneway", "twoway", "recovery"];

#[test]
fn every_tool_prints_its_version_with_v_and_version() {
    let env = Env::new();
    for tool in TOOLS {
        for flag in ["-V", "--version"] {
            let run = env.run(tool, [flag]);
            run.expect(0);
            let out = run.stdout();
            assert!(
                out.starts_with(&format!("{tool} ")) && out.trim().split(' ').count() == 2,
                "{tool} {flag}: {out:?}"
            );
        }
    }
}

#[test]
fn every_tool_generates_completions_and_a_man_page() {
    let env = Env::new();
    for tool in TOOLS {
        let generated = |kind: &str| {
            let run = env.run(tool, ["--generate", kind]);
            run.expect(0);
            run.stdout()
        };
        let bash = generated("complete-bash");
        assert!(bash.contains(&format!("complete -F _{tool}")), "{bash}");
        // The script is valid bash.
        let script = env.path(&format!("{tool}.bash"));
        write(&script, &bash);
        let check = std::process::Command::new("bash")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap();
        assert!(check.success(), "bash -n {tool}.bash");
        assert!(generated("complete-zsh").starts_with(&format!("#compdef {tool}")));
        assert!(generated("complete-fish").contains(&format!("complete -c {tool}")));
        assert!(generated("complete-powershell").contains("Register-ArgumentCompleter"));
        let man = generated("man");
        assert!(man.contains(&format!(".TH {tool}")), "{man}");
        // Built from the flags themselves: every flag is in it.
        let flag = match tool {
            "recovery" => "verify",
            _ => "max\\-delete",
        };
        assert!(man.contains(flag), "{tool}'s man page lacks {flag}:\n{man}");
    }
}

#[test]
fn an_unknown_kind_is_a_usage_error() {
    let env = Env::new();
    let run = env.run("oneway", ["--generate", "complete-tcsh"]);
    run.expect(2);
    assert!(run.stderr().contains("complete-bash"), "{}", run.stderr());
}

#[test]
fn without_config_the_default_config_file_is_read_and_named_with_v() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    std::fs::create_dir_all(&dst).unwrap();
    write(&src.join("keep.txt"), "k");
    write(&src.join("scratch.tmp"), "t");
    // XDG_CONFIG_HOME first.
    let xdg = env.path("xdg");
    let file = xdg.join("twoway/config.json");
    write(&file, r#"{"exclude": ["*.tmp"]}"#);
    let run = |cmd: &mut std::process::Command| Run(cmd.output().unwrap());
    let mut cmd = env.cmd("oneway");
    cmd.args([&src, &dst]).args(["--once", "-v"]);
    cmd.env("XDG_CONFIG_HOME", &xdg);
    let out = run(&mut cmd);
    out.expect(0);
    assert!(
        out.all()
            .contains(&format!("config file: {}", file.display())),
        "{}",
        out.all()
    );
    assert!(dst.join("keep.txt").exists() && !dst.join("scratch.tmp").exists());

    // Else ~/.config; a default file that is not valid refuses the pass, naming it.
    let home = env.path("home-dir");
    let file = home.join(".config/twoway/config.json");
    write(&file, "{ not json");
    let mut cmd = env.cmd("oneway");
    cmd.args([&src, &dst]).arg("--once").env("HOME", &home);
    let out = run(&mut cmd);
    out.expect(2);
    assert!(
        out.stderr().contains(&file.display().to_string()),
        "{}",
        out.stderr()
    );
    // --config wins over the default file.
    let given = env.path("given.json");
    write(&given, "{}");
    let mut cmd = env.cmd("oneway");
    cmd.args([&src, &dst])
        .args(["--once", "--config"])
        .arg(&given);
    cmd.env("HOME", &home);
    run(&mut cmd).expect(0);
}

/// Runs `tool ARGS…` in a pseudo-terminal (util-linux `script`), as a person would.
fn in_terminal(env: &Env, tool: &str, args: &[&std::path::Path]) -> String {
    in_terminal_typing(env, tool, args, "")
}

/// [`in_terminal`], the person typing `typed` (answers, one per line).
fn in_terminal_typing(env: &Env, tool: &str, args: &[&std::path::Path], typed: &str) -> String {
    let mut line = bin(tool).display().to_string();
    for a in args {
        line.push(' ');
        line.push_str(&format!("'{}'", a.display()));
    }
    let mut child = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("TWOWAY_HOME", env.home())
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", env.path("no-home"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(typed.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{tool} in a terminal: {out:?}");
    // Lines as the terminal shows them in the end: a progress line is redrawn in place
    // (a carriage return, then "erase the line").
    String::from_utf8_lossy(&out.stdout)
        .split(['\n', '\r'])
        .map(|l| l.replace("\u{1b}[2K", ""))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn on_a_terminal_the_summary_is_short_and_readable() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    std::fs::create_dir_all(&dst).unwrap();
    let mut rng = Rng::new(3);
    write_random(&src.join("photo.jpg"), 3 << 20, &mut rng);
    write(&src.join("notes.txt"), "notes");
    let once = std::path::Path::new("--once");
    let out = in_terminal(&env, "oneway", &[&src, &dst, once]);
    let summary = out
        .lines()
        .find(|l| l.contains(" pass 1: "))
        .unwrap_or_else(|| panic!("no summary:\n{out}"));
    assert!(
        summary.chars().count() <= 100,
        "{} columns: {summary}",
        summary.len()
    );
    assert!(summary.contains("3.0 MiB"), "{summary}");
    assert!(summary.contains("new version 1"), "{summary}");
    let long_hex = |l: &str| {
        l.split(|c: char| !c.is_ascii_hexdigit())
            .any(|w| w.len() == 64)
    };
    assert!(!long_hex(summary), "the SHA-256 is shortened: {summary}");
    // The progress line was drawn (files and bytes out of the plan's), then cleared.
    assert!(
        out.contains("/2 files") && out.contains("/3.00 MiB"),
        "{out}"
    );
    assert!(!out.lines().last().unwrap_or("").contains("files"), "{out}");
    // Nothing to do, briefly.
    let out = in_terminal(&env, "oneway", &[&src, &dst, once]);
    assert!(out.contains("pass 1: nothing to do ·"), "{out}");
    // Quiet, or not on a terminal: no progress line.
    write(&src.join("more.txt"), "more");
    let quiet = in_terminal(
        &env,
        "oneway",
        &[&src, &dst, once, std::path::Path::new("-q")],
    );
    assert!(!quiet.contains("/1 files"), "{quiet}");
    write(&src.join("more.txt"), "more, again");
    let piped = env.oneway(&src, &dst, &[]);
    assert!(!piped.all().contains("/1 files"), "{}", piped.all());
    // A restore shows the same progress line.
    let to = env.path("restored");
    let restore = in_terminal(
        &env,
        "recovery",
        &[
            std::path::Path::new("restore"),
            &src,
            std::path::Path::new("--to"),
            &to,
        ],
    );
    assert!(restore.contains("/3 files"), "{restore}");
    // And verify, over the store's files.
    let verify = in_terminal(&env, "recovery", &[std::path::Path::new("verify")]);
    let drawn = |l: &str| l.contains(" B/") || l.contains("iB/");
    assert!(
        verify.lines().any(|l| drawn(l) && l.contains(" files")),
        "{verify}"
    );
    // -v, pipes and the log file keep the whole line.
    let verbose = in_terminal(
        &env,
        "oneway",
        &[&src, &dst, once, std::path::Path::new("-v")],
    );
    assert!(verbose.lines().any(long_hex), "{verbose}");
    let piped = env.oneway(&src, &dst, &[]);
    assert!(piped.stdout().lines().any(long_hex), "{}", piped.stdout());
}

#[test]
fn every_help_has_examples() {
    let env = Env::new();
    let mut helps: Vec<Vec<&str>> = TOOLS.iter().map(|t| vec![*t, "--help"]).collect();
    for sub in [
        "list",
        "verify",
        "forget",
        "find",
        "deleted",
        "ls",
        "diff",
        "duplicates",
        "tag",
        "untag",
        "restore",
    ] {
        helps.push(vec!["recovery", sub, "--help"]);
    }
    for h in helps {
        let run = env.run(h[0], &h[1..]);
        run.expect(0);
        assert!(
            run.stdout().contains("Examples:"),
            "{h:?}:\n{}",
            run.stdout()
        );
    }
}

#[test]
fn under_systemd_lines_carry_the_journal_priority_instead_of_a_stamp() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    std::fs::create_dir_all(&dst).unwrap();
    write(&src.join("a.txt"), "a");
    // The journal's stream, as systemd names it: this file, both outputs going to it.
    let journal = env.path("journal");
    let file = std::fs::File::create(&journal).unwrap();
    let md = file.metadata().unwrap();
    let status = env
        .cmd("oneway")
        .arg(&src)
        .arg(env.path("missing-backup"))
        .arg("--once")
        .env("JOURNAL_STREAM", format!("{}:{}", md.dev(), md.ino()))
        .stdout(file.try_clone().unwrap())
        .stderr(file.try_clone().unwrap())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let status = env
        .cmd("oneway")
        .arg(&src)
        .arg(&dst)
        .arg("--once")
        .env("JOURNAL_STREAM", format!("{}:{}", md.dev(), md.ino()))
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&journal).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("<3>") && lines[0].contains("missing-backup"),
        "{text}"
    );
    assert!(
        lines[1..].iter().all(|l| l.starts_with("<6>")),
        "no stamp, the priority first:\n{text}"
    );
    assert!(text.contains("<6>copy     a.txt"), "{text}");
    // A stream that is not the journal (a variable inherited) changes nothing.
    let run = Run(env
        .cmd("oneway")
        .arg(&src)
        .arg(&dst)
        .arg("--once")
        .env("JOURNAL_STREAM", "1:1")
        .output()
        .unwrap());
    assert!(!run.stdout().starts_with('<'), "{}", run.stdout());
}

#[test]
fn a_config_file_of_jobs_runs_each_with_its_own_keys_and_folds_the_exit_status() {
    let env = Env::new();
    write(&env.path("photos/a.jpg"), "jpg");
    write(&env.path("photos/a.tmp"), "tmp");
    write(&env.path("docs/a.txt"), "txt");
    write(&env.path("docs/a.tmp"), "tmp");
    std::fs::create_dir_all(env.path("backup/photos")).unwrap();
    std::fs::create_dir_all(env.path("backup/docs")).unwrap();
    let config = env.path("jobs.json");
    let jobs = |third: &str| {
        format!(
            r#"{{"exclude": ["*.tmp"], "jobs": [
                {{"name": "photos", "source": "photos", "backup": "backup/photos"}},
                {{"name": "docs", "source": "docs", "backup": "backup/docs", "exclude": []}}{third}
            ]}}"#
        )
    };
    write(&config, jobs(""));
    let run = env.run("oneway", ["--config", config.to_str().unwrap(), "--once"]);
    run.expect(0);
    // Each job's own keys: the top-level exclude, and a job that clears it.
    assert!(env.path("backup/photos/a.jpg").exists());
    assert!(!env.path("backup/photos/a.tmp").exists());
    assert!(env.path("backup/docs/a.tmp").exists());
    assert!(
        run.stdout().contains("[photos] copy     a.jpg"),
        "{}",
        run.stdout()
    );
    assert!(run.stdout().contains("[docs] pass 1:"), "{}", run.stdout());

    // A job whose BACKUP is missing (a drive not mounted) is refused: the others run,
    // and the run's status says so.
    write(&env.path("docs/b.txt"), "new");
    let usb = r#", {"name": "usb", "source": "docs", "backup": "usb-not-mounted"}"#;
    write(&config, jobs(usb));
    let run = env.run("oneway", ["--config", config.to_str().unwrap(), "--once"]);
    run.expect(2);
    assert!(env.path("backup/docs/b.txt").exists(), "{}", run.all());
    assert!(
        run.stderr().contains("1 of 3 jobs refused (usb)"),
        "{}",
        run.stderr()
    );

    // A job without its directories, or with a key that is the run's, is refused.
    write(&config, r#"{"jobs": [{"name": "x", "source": "docs"}]}"#);
    let run = env.run("oneway", ["--config", config.to_str().unwrap(), "--once"]);
    run.expect(2);
    assert!(
        run.stderr()
            .contains(r#"job "x" needs "source" and "backup""#),
        "{}",
        run.stderr()
    );
    write(
        &config,
        r#"{"jobs": [{"source": "docs", "backup": "backup/docs", "interval": 5}]}"#,
    );
    let run = env.run("oneway", ["--config", config.to_str().unwrap(), "--once"]);
    run.expect(2);
    assert!(
        run.stderr().contains("\"interval\" is the run's"),
        "{}",
        run.stderr()
    );

    // twoway names its replicas "a" and "b".
    std::fs::create_dir_all(env.path("b")).unwrap();
    write(&env.path("a/n.md"), "note");
    write(
        &config,
        r#"{"jobs": [{"name": "notes", "a": "a", "b": "b"}]}"#,
    );
    let run = env.run("twoway", ["--config", config.to_str().unwrap(), "--once"]);
    run.expect(0);
    assert!(env.path("b/n.md").exists(), "{}", run.all());
}

/// The `--json` events of a run: each stdout line one object with a type and a time.
fn events(run: &Run) -> Vec<serde_json::Value> {
    run.stdout()
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["type"].is_string() && v["time"].is_string(), "{l}");
            v
        })
        .collect()
}

#[test]
fn json_prints_one_event_per_line_and_a_summary_with_every_count() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("a.txt"), "a");
    write(&raw(&src, b"bad-\xff.txt"), "not utf-8");
    write(&dst.join("old.txt"), "SOURCE no longer has it");
    let run = env.oneway(&src, &dst, &["--json", "--max-delete", "100"]);
    run.expect(0);
    let ev = events(&run);
    let of = |t: &'static str| ev.iter().filter(move |e| e["type"] == t);
    let verbs: Vec<(&str, &str)> = of("action")
        .map(|e| (e["verb"].as_str().unwrap(), e["path"].as_str().unwrap()))
        .collect();
    assert!(verbs.contains(&("copy", "a.txt")), "{verbs:?}");
    assert!(verbs.contains(&("remove", "old.txt")), "{verbs:?}");
    let bad = of("action")
        .find(|e| e["path"].as_str().unwrap().starts_with("bad-"))
        .unwrap();
    assert_eq!(bad["path"], "bad-\\xff.txt");
    assert_eq!(bad["path_not_utf8"], true);
    assert!(of("version").count() >= 1);
    let summary = ev.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["actions"]["copy"], 2);
    assert_eq!(summary["actions"]["remove"], 1);
    assert_eq!(summary["bytes_copied"], 10);
    assert_eq!(summary["errors"], 0);
    assert_eq!(summary["sha256"]["SOURCE"], summary["sha256"]["BACKUP"]);
    assert_eq!(summary["sha256"]["SOURCE"].as_str().unwrap().len(), 64);
    // An error is an event too, and nothing but events is on stdout.
    let run = env.oneway(&src, &env.path("missing"), &["--json"]);
    run.expect(2);
    let ev = events(&run);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["type"], "error");
    assert!(ev[0]["message"].as_str().unwrap().contains("missing"));
}

#[test]
fn json_names_a_two_way_conflict() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("x.txt"), "a's");
    write(&b.join("x.txt"), "b's");
    set_mtime(&a.join("x.txt"), 1_600_000_100, 0);
    set_mtime(&b.join("x.txt"), 1_600_000_000, 0);
    let run = env.run(
        "twoway",
        [
            a.as_os_str(),
            b.as_os_str(),
            "--once".as_ref(),
            "--json".as_ref(),
        ],
    );
    run.expect(0);
    let ev = events(&run);
    let c = ev
        .iter()
        .find(|e| e["type"] == "conflict")
        .expect("a conflict event");
    assert_eq!(c["path"], "x.txt");
    assert_eq!(c["kept"], "A");
    assert!(c["copy"].as_str().unwrap().starts_with("x.conflict-"));
    assert!(
        !ev.iter().any(|e| e["type"] == "warning"),
        "the conflict is said once"
    );
    let s = ev.last().unwrap();
    assert_eq!(
        (s["type"].as_str(), s["conflicts"].as_u64()),
        (Some("summary"), Some(1))
    );
}

#[test]
fn recovery_commands_print_json_events() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    std::fs::create_dir_all(&dst).unwrap();
    write(&src.join("docs/a.txt"), "same");
    write(&src.join("docs/b.txt"), "same");
    write(&src.join("gone.txt"), "to be deleted");
    env.oneway(&src, &dst, &[]).expect(0);
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    env.oneway(&src, &dst, &[]).expect(0);
    let s = src.to_str().unwrap();
    let json = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push("--json");
        let run = env.run("recovery", &all);
        run.expect(0);
        events(&run)
    };
    let ls = json(&["ls", s, "--version", "previous"]);
    assert!(ls
        .iter()
        .any(|e| e["type"] == "entry" && e["path"] == "gone.txt"));
    let deleted = json(&["deleted", s]);
    assert!(deleted
        .iter()
        .any(|e| e["path"] == "gone.txt" && e["last_version"] == 1));
    let diff = json(&["diff", s, "previous", "latest"]);
    assert!(diff
        .iter()
        .any(|e| e["change"] == "-" && e["path"] == "gone.txt"));
    assert_eq!(diff.last().unwrap()["removed"], 1);
    let find = json(&["find", s, "gone.txt"]);
    assert_eq!(find[0]["type"], "version");
    let dups = json(&["duplicates", s]);
    assert_eq!(dups[0]["copies"], 2);
    let tag = json(&["tag", s, "previous", "before"]);
    assert_eq!(tag[0]["tag"], "before");
    let to = env.path("restored");
    let restore = json(&[
        "restore",
        s,
        "--version",
        "before",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(restore
        .iter()
        .any(|e| e["type"] == "action" && e["path"] == "gone.txt"));
    assert_eq!(restore.last().unwrap()["type"], "summary");
    let verify = json(&["verify"]);
    assert_eq!(verify.last().unwrap()["problems"], 0);
    let untag = json(&["untag", s, "before"]);
    assert_eq!(untag[0]["untagged"], 1);
    let forget = json(&["forget", s, "--keep-last", "1", "--dry-run"]);
    assert!(forget
        .iter()
        .any(|e| e["type"] == "version" && e["dry_run"] == true));
    assert_eq!(forget.last().unwrap()["kept"], 1);
}

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

#[test]
fn approve_asks_folder_by_folder_and_does_only_what_was_approved() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    write(&src.join("top.txt"), "top");
    write(&src.join("docs/new.txt"), "new");
    write(&src.join("photos/2024/a.jpg"), "jpg");
    write(&dst.join("docs/old.txt"), "SOURCE deleted it");
    write(&dst.join("keep/mine.txt"), "SOURCE never had it");
    let p = std::path::Path::new;
    let args = [
        &*src,
        &*dst,
        p("--once"),
        p("--approve"),
        p("--max-delete"),
        p("100"),
    ];
    // Folders in path order: "." (top.txt) no; "docs" yes; "keep" no; then quit.
    let out = in_terminal_typing(&env, "oneway", &args, "n\ny\nn\nq\n");
    assert!(
        out.contains("docs: copy 1 (3 B), delete 1 — approve?"),
        "{out}"
    );
    assert!(dst.join("docs/new.txt").exists() && !dst.join("docs/old.txt").exists());
    assert!(!dst.join("top.txt").exists(), "not approved: not copied");
    assert!(
        dst.join("keep/mine.txt").exists(),
        "not approved: not deleted"
    );
    assert!(
        !dst.join("photos").exists(),
        "no folder made for what was not approved"
    );
    // The next pass asks again about what was left; "a" approves all the rest.
    let out = in_terminal_typing(&env, "oneway", &args, "a\n");
    assert!(out.contains("approve?"), "{out}");
    assert_same_tree(&src, &dst);
    // Without a terminal to ask at: refused, nothing changed.
    write(&src.join("later.txt"), "later");
    env.oneway(&src, &dst, &["--approve"]).expect(2);
    assert!(!dst.join("later.txt").exists());
}

#[test]
fn approve_in_twoway_leaves_what_was_skipped_for_the_next_pass() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("x.txt"), "x");
    write(&a.join("stays.txt"), "stays");
    std::fs::create_dir_all(&b).unwrap();
    env.run("twoway", [a.as_os_str(), b.as_os_str(), "--once".as_ref()])
        .expect(0);
    std::fs::remove_file(a.join("x.txt")).unwrap();
    let p = std::path::Path::new;
    let args = [
        &*a,
        &*b,
        p("--once"),
        p("--approve"),
        p("--max-delete"),
        p("100"),
    ];
    in_terminal_typing(&env, "twoway", &args, "n\n");
    assert!(b.join("x.txt").exists(), "the deletion was not approved");
    // Not recorded as done: the next pass proposes the same deletion.
    let out = in_terminal_typing(&env, "twoway", &args, "y\n");
    assert!(out.contains("delete 1"), "{out}");
    assert!(!b.join("x.txt").exists());
}
