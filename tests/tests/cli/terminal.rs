//! What a person at a terminal sees: the short summary, and `--approve`.

use super::*;

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
    let (src, dst) = env.src_and_dst();
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
