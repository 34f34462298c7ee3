//! What every binary's command line offers besides its job: its version, shell
//! completions and a man page built from its own definition.

mod json;
mod terminal;
mod watch;

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
    let (src, dst) = env.src_and_dst();
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
    let (src, dst) = env.src_and_dst();
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
