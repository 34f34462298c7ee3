//! `--json`: one event per line.

use super::*;

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
    // The version made is SOURCE's (the version event's `dir`), found under BACKUP's
    // path too: the summary gives its id under both labels.
    let made = of("version").next_back().unwrap();
    assert_eq!(made["dir"].as_str(), src.to_str());
    assert_eq!(summary["version"]["SOURCE"], made["id"]);
    assert_eq!(summary["version"]["BACKUP"], made["id"]);
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
    // The summary names the sides as the conflict does: the winner's version is there.
    let kept = c["kept"].as_str().unwrap();
    assert!(s["sha256"][kept].is_string(), "{s}");
    assert!(s["version"][kept].is_u64(), "{s}");
    assert_eq!(s["sha256"]["A"], s["sha256"]["B"]);
}

#[test]
fn recovery_commands_print_json_events() {
    let env = Env::new();
    let (src, dst) = env.src_and_dst();
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
