//! Filters: --include and --exclude in the order given (the first rule that matches
//! decides, as rsync), rules read from files, regular expressions, the same in the
//! config file. What is filtered out is neither copied nor deleted.

use super::*;

/// The files of `root` (relative paths), the tool's own left out.
fn files(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = snapshot(root)
        .into_iter()
        .filter(|(_, s)| matches!(s, Snap::File { .. }))
        .map(|(p, _)| p.display().to_string())
        .collect();
    out.sort();
    out
}

fn tree(src: &Path) {
    for p in [
        "2024/a.jpg",
        "2024/b.png",
        "2024/IMG_0001.JPG",
        "top.jpg",
        "secret.jpg",
        "notes.txt",
        "build/x.o",
    ] {
        write(&src.join(p), p);
    }
}

#[test]
fn includes_and_excludes_apply_in_order_and_keep_what_they_leave_out() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    tree(&src);
    // BACKUP has a file the rules leave out: it is not deleted.
    write(&dst.join("notes.txt"), "BACKUP's own notes");
    let rules = env.path("rules.txt");
    write(&rules, "# pictures only\n*.png\n\n");
    env.oneway(
        &src,
        &dst,
        &[
            "--exclude",
            "secret.jpg",
            "--include",
            "*/",
            "--include",
            "*.jpg",
            "--include-from",
            rules.to_str().unwrap(),
            "--exclude",
            "*",
        ],
    )
    .expect(0);
    assert_eq!(
        files(&dst),
        ["2024/a.jpg", "2024/b.png", "notes.txt", "top.jpg"],
        "IMG_0001.JPG: *.jpg is case-sensitive"
    );
    assert_eq!(
        std::fs::read_to_string(dst.join("notes.txt")).unwrap(),
        "BACKUP's own notes"
    );
}

#[test]
fn exclude_files_regular_expressions_and_the_config_file() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    tree(&src);
    std::fs::create_dir_all(&dst).unwrap();
    let rules = env.path("ignore");
    write(&rules, "# build output\nbuild/\n");
    let config = env.path("config.json");
    write(
        &config,
        r#"{"exclude": ["re:^IMG_\\d{4}\\.JPG$"], "exclude_from": ["ignore"], "include": ["notes.txt"]}"#,
    );
    env.oneway(
        &src,
        &dst,
        &["--config", config.to_str().unwrap(), "--exclude", "*.txt"],
    )
    .expect(0);
    assert_eq!(
        files(&dst),
        [
            "2024/a.jpg",
            "2024/b.png",
            "notes.txt",
            "secret.jpg",
            "top.jpg"
        ],
        "the config's include comes before the command line's exclude"
    );
    // A pattern that does not compile, or a rules file that cannot be read, refuses.
    let run = env.oneway(&src, &dst, &["--exclude", "re:("]);
    run.expect(2);
    assert!(run.stderr().contains("re:("), "{}", run.stderr());
    let run = env.oneway(&src, &dst, &["--exclude-from", "/nonexistent/rules"]);
    run.expect(2);
    assert!(
        run.stderr().contains("/nonexistent/rules"),
        "{}",
        run.stderr()
    );
}
