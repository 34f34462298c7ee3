use super::*;
use crate::tree::{Digest, MTime};

const T: MTime = MTime { sec: 1000, nsec: 0 };

fn file(content: u8) -> Entry {
    Entry::file(1, 0o644, T, Some(Digest([content; 32])))
}
fn exe(content: u8) -> Entry {
    Entry::file(1, 0o755, T, Some(Digest([content; 32])))
}
fn dir() -> Entry {
    Entry::dir(0o755, T)
}
fn link(t: &str) -> Entry {
    Entry::symlink(t, T)
}

fn tree(entries: &[(&str, Entry)]) -> Tree {
    Tree {
        root: Some(dir()),
        entries: entries
            .iter()
            .map(|(p, e)| (PathBuf::from(p), e.clone()))
            .collect(),
        ..Tree::default()
    }
}

fn ops(plan: &Plan) -> Vec<(String, String)> {
    plan.actions
        .iter()
        .map(|a| (a.op.verb().to_string(), a.path.display().to_string()))
        .collect()
}

fn run(src: &[(&str, Entry)], dst: &[(&str, Entry)]) -> Vec<(String, String)> {
    ops(&plan_mirror(
        &tree(src),
        &tree(dst),
        &MirrorOptions::default(),
    ))
}

fn v(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn identical_trees_need_nothing() {
    let t = [("d", dir()), ("d/f", file(1)), ("l", link("d/f"))];
    assert!(run(&t, &t).is_empty());
}

/// Every pair of entry kinds {missing, file, executable, symlink, dir} at one path.
#[test]
fn transition_matrix_over_entry_kinds() {
    let kinds: [(&str, Option<Entry>); 5] = [
        ("missing", None),
        ("file", Some(file(1))),
        ("exe", Some(exe(1))),
        ("symlink", Some(link("t"))),
        ("dir", Some(dir())),
    ];
    // (source kind, destination kind) → expected verbs at path "x", then the root fix-up.
    let expected = |s: &str, d: &str| -> Vec<&'static str> {
        match (s, d) {
            (s, d) if s == d => vec![],
            ("missing", _) => vec!["remove", "dirmeta"],
            ("file", "missing") | ("exe", "missing") => vec!["copy", "dirmeta"],
            ("file", "exe") | ("exe", "file") => vec!["meta", "dirmeta"],
            ("symlink", "missing") => vec!["symlink", "dirmeta"],
            ("dir", "missing") => vec!["mkdir", "dirmeta", "dirmeta"],
            ("dir", _) => vec!["remove", "mkdir", "dirmeta", "dirmeta"],
            ("file", _) | ("exe", _) => vec!["remove", "copy", "dirmeta"],
            ("symlink", _) => vec!["remove", "symlink", "dirmeta"],
            _ => unreachable!(),
        }
    };
    for (sn, se) in &kinds {
        for (dn, de) in &kinds {
            let src: Vec<(&str, Entry)> = se.iter().map(|e| ("x", e.clone())).collect();
            let dst: Vec<(&str, Entry)> = de.iter().map(|e| ("x", e.clone())).collect();
            let got: Vec<String> = run(&src, &dst).into_iter().map(|(a, _)| a).collect();
            assert_eq!(got, expected(sn, dn), "source {sn}, destination {dn}");
        }
    }
}

#[test]
fn changed_content_is_replaced_and_parent_mtime_fixed() {
    let got = run(
        &[("d", dir()), ("d/f", file(2))],
        &[("d", dir()), ("d/f", file(1))],
    );
    assert_eq!(got, v(&[("replace", "d/f"), ("dirmeta", "d")]));
}

#[test]
fn same_size_and_mtime_without_hashes_is_unchanged_unless_checksum() {
    let mut a = file(1);
    let mut b = file(2);
    a.hash = None;
    b.hash = None;
    assert!(run(&[("f", a.clone())], &[("f", b.clone())]).is_empty());
    let opts = MirrorOptions {
        checksum: true,
        ..Default::default()
    };
    let (src, dst) = (tree(&[("f", a)]), tree(&[("f", b)]));
    let p = plan_mirror(&src, &dst, &opts);
    assert_eq!(ops(&p)[0], ("replace".into(), "f".into()));
}

#[test]
fn known_different_hashes_replace_even_with_same_stamp() {
    assert_eq!(run(&[("f", file(1))], &[("f", file(2))])[0].0, "replace");
}

#[test]
fn touched_file_with_same_hash_only_gets_metadata() {
    let mut newer = file(1);
    newer.mtime = MTime::new(2000, 0);
    assert_eq!(
        run(&[("f", newer)], &[("f", file(1))]),
        v(&[("meta", "f"), ("dirmeta", "")])
    );
}

#[test]
fn extra_directory_is_removed_whole() {
    let got = run(
        &[],
        &[
            ("d", dir()),
            ("d/a", file(1)),
            ("d/b", dir()),
            ("d/b/c", file(1)),
        ],
    );
    assert_eq!(got, v(&[("remove", "d"), ("dirmeta", "")]));
}

#[test]
fn nothing_under_an_unknown_source_path_is_removed() {
    let mut src = tree(&[("d", dir())]);
    src.unknown.insert(PathBuf::from("d"));
    let dst = tree(&[("d", dir()), ("d/a", file(1)), ("e", file(1))]);
    let got = ops(&plan_mirror(&src, &dst, &MirrorOptions::default()));
    assert_eq!(got, v(&[("remove", "e"), ("dirmeta", "")]));
}

#[test]
fn directory_holding_excluded_entries_is_emptied_not_removed() {
    let mut dst = tree(&[("d", dir()), ("d/a", file(1))]);
    dst.excluded.insert(PathBuf::from("d/keep.tmp"));
    let got = ops(&plan_mirror(&tree(&[]), &dst, &MirrorOptions::default()));
    assert_eq!(got, v(&[("remove", "d/a")]));
}

#[test]
fn special_files_in_the_destination_are_removed() {
    let mut dst = tree(&[]);
    dst.specials.push(PathBuf::from("fifo"));
    let got = ops(&plan_mirror(
        &tree(&[("fifo", file(1))]),
        &dst,
        &MirrorOptions::default(),
    ));
    assert_eq!(
        got,
        v(&[("remove", "fifo"), ("copy", "fifo"), ("dirmeta", "")])
    );
}

#[test]
fn leftover_temp_files_are_cleaned_up() {
    let mut dst = tree(&[]);
    dst.leftovers.push(PathBuf::from(".twoway-tmp-1"));
    let got = ops(&plan_mirror(&tree(&[]), &dst, &MirrorOptions::default()));
    assert_eq!(got, v(&[("cleanup", ".twoway-tmp-1"), ("dirmeta", "")]));
}

#[test]
fn case_collisions_are_errors_on_case_insensitive_destinations() {
    let opts = MirrorOptions {
        case_insensitive: true,
        ..Default::default()
    };
    let src = tree(&[("A.txt", file(1)), ("a.txt", file(2))]);
    let empty = tree(&[]);
    let p = plan_mirror(&src, &empty, &opts);
    assert_eq!(p.errors.len(), 1);
    assert_eq!(ops(&p), v(&[("copy", "A.txt"), ("dirmeta", "")]));
    // An existing "readme" on the destination is the source's "README".
    let (src, dst) = (tree(&[("README", file(1))]), tree(&[("readme", file(1))]));
    let p = plan_mirror(&src, &dst, &opts);
    assert!(ops(&p).is_empty(), "{:?}", ops(&p));
}

#[test]
fn root_metadata_is_mirrored() {
    let mut src = tree(&[]);
    src.root = Some(Entry::dir(0o700, T));
    let got = ops(&plan_mirror(&src, &tree(&[]), &MirrorOptions::default()));
    assert_eq!(got, v(&[("dirmeta", "")]));
}

/// As root a different owner is a change of metadata; otherwise owners, and the
/// setuid bit a copy could not keep, are not compared.
#[test]
fn owners_are_compared_only_where_they_are_kept() {
    let owned = |uid: u32, mode: u32| {
        let mut e = file(1).owned_by(crate::tree::Owner { uid, gid: uid });
        e.mode = mode;
        e
    };
    let root = MirrorOptions {
        keep_owners: true,
        ..Default::default()
    };
    let user = MirrorOptions::default();
    let src = tree(&[("f", owned(1000, 0o4755))]);
    for (dst, with_root, as_user) in [
        (owned(0, 0o4755), vec!["meta"], vec![]),
        (owned(1000, 0o755), vec!["meta"], vec![]),
        (owned(1000, 0o4755), vec![], vec![]),
        (owned(1000, 0o644), vec!["meta"], vec!["meta"]),
    ] {
        let dst = tree(&[("f", dst)]);
        let verbs = |o: &MirrorOptions| -> Vec<String> {
            plan_mirror(&src, &dst, o)
                .actions
                .iter()
                .filter(|a| a.op != Op::SetDirMeta)
                .map(|a| a.op.verb().to_string())
                .collect()
        };
        assert_eq!(verbs(&root), with_root);
        assert_eq!(verbs(&user), as_user);
    }
}
