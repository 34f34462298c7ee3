//! What every binary's command line offers besides its job: its version, shell
//! completions and a man page built from its own definition.

use integration_tests::*;

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
