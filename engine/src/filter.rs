//! Which paths a pass leaves out: `--exclude` and `--include` rules (and the files they
//! are read from), one module for every tool.
//!
//! Rules are checked in order and the first that matches decides, as rsync's filter
//! rules: `--include '*.jpg' --exclude '*'` keeps JPEGs (in the top directory) and leaves
//! out the rest. A path no rule matches is included. A pattern without `/` matches an
//! entry's name at any depth; one with `/` matches the whole relative path from the root
//! (a leading `/` is allowed); a trailing `/` matches directories only. `*` never crosses
//! a `/`; `**` does. A pattern starting with `re:` is a regular expression, matched
//! against the name (or, if it contains `/`, against the relative path); it is not
//! anchored unless it says so (`^`, `$`). An excluded directory is left out whole.
//!
//! Nothing here touches a disk but [`read_rules_file`].

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::bytes::Regex;

/// One rule as given: whether it includes, and its pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub include: bool,
    pub pattern: String,
}

impl Rule {
    pub fn exclude(pattern: impl Into<String>) -> Rule {
        Rule {
            include: false,
            pattern: pattern.into(),
        }
    }

    pub fn include(pattern: impl Into<String>) -> Rule {
        Rule {
            include: true,
            pattern: pattern.into(),
        }
    }
}

/// How a rule matches, once compiled.
#[derive(Debug, Clone)]
struct Compiled {
    include: bool,
    dirs_only: bool,
}

/// The compiled rules.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    rules: Vec<Compiled>,
    /// Globs on the name, and the rule each is.
    by_name: GlobSet,
    by_name_rule: Vec<usize>,
    /// Globs on the relative path, and the rule each is.
    by_path: GlobSet,
    by_path_rule: Vec<usize>,
    /// Regular expressions: the rule, the expression, whether it is on the path.
    regexes: Vec<(usize, Regex, bool)>,
}

impl Filter {
    /// Compiles `rules` (in order); an invalid pattern is named in the error.
    pub fn new(rules: &[Rule]) -> Result<Filter, String> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let mut f = Filter::default();
        for (i, r) in rules.iter().enumerate() {
            let p = &r.pattern;
            let what = if r.include { "include" } else { "exclude" };
            let (body, dirs_only) = match p.strip_suffix('/') {
                Some(b) if !p.starts_with("re:") => (b, true),
                _ => (p.as_str(), false),
            };
            f.rules.push(Compiled {
                include: r.include,
                dirs_only,
            });
            if let Some(re) = body.strip_prefix("re:") {
                let compiled =
                    Regex::new(re).map_err(|e| format!("invalid {what} pattern {p:?}: {e}"))?;
                f.regexes.push((i, compiled, re.contains('/')));
                continue;
            }
            let anchored = body.contains('/');
            let body = body.trim_start_matches('/');
            if body.is_empty() {
                return Err(format!("invalid {what} pattern {p:?}: empty"));
            }
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("invalid {what} pattern {p:?}: {e}"))?;
            if anchored {
                paths.add(glob);
                f.by_path_rule.push(i);
            } else {
                names.add(glob);
                f.by_name_rule.push(i);
            }
        }
        let build = |s: GlobSetBuilder| s.build().map_err(|e| format!("invalid pattern: {e}"));
        f.by_name = build(names)?;
        f.by_path = build(paths)?;
        Ok(f)
    }

    /// `--exclude` patterns only.
    pub fn excluding(patterns: &[String]) -> Result<Filter, String> {
        Filter::new(&patterns.iter().map(Rule::exclude).collect::<Vec<_>>())
    }

    /// True if the entry at `rel` is left out: the first rule that matches it excludes.
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let name = rel.file_name().map(Path::new).unwrap_or(rel);
        let applies = |i: &usize| is_dir || !self.rules[*i].dirs_only;
        let first_glob = |set: &GlobSet, of: &[usize], p: &Path| {
            if set.is_empty() {
                return None;
            }
            set.matches(p).into_iter().map(|g| of[g]).find(applies)
        };
        let by_name = first_glob(&self.by_name, &self.by_name_rule, name);
        let by_path = first_glob(&self.by_path, &self.by_path_rule, rel);
        let by_re = self
            .regexes
            .iter()
            .filter(|(_, re, on_path)| {
                let subject = if *on_path { rel } else { name };
                re.is_match(subject.as_os_str().as_encoded_bytes())
            })
            .map(|(i, _, _)| *i)
            .next();
        let first = [by_name, by_path, by_re].into_iter().flatten().min();
        first.is_some_and(|i| !self.rules[i].include)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The patterns of a rules file (`--exclude-from`, `--include-from`): one per line;
/// blank lines and lines starting with `#` are skipped; a line's end is its end (no
/// trimming of spaces, which names may hold), but a `\r` before it goes.
pub fn read_rules_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the patterns file {}: {e}",
            crate::names::display(path)
        )
    })?;
    Ok(text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// A file of patterns given on the command line, and which kind of rule its lines are.
#[derive(Debug, Clone)]
pub struct RulesFile {
    pub include: bool,
    pub path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Filter {
        Filter::excluding(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn name_patterns_match_at_any_depth() {
        let e = ex(&["*.tmp"]);
        assert!(e.is_excluded(Path::new("a.tmp"), false));
        assert!(e.is_excluded(Path::new("x/y/a.tmp"), false));
        assert!(!e.is_excluded(Path::new("a.tmpx"), false));
    }

    #[test]
    fn path_patterns_are_anchored() {
        let e = ex(&["/build/*.o", "cache/"]);
        assert!(e.is_excluded(Path::new("build/a.o"), false));
        assert!(!e.is_excluded(Path::new("x/build/a.o"), false));
        assert!(e.is_excluded(Path::new("x/cache"), true));
        assert!(!e.is_excluded(Path::new("x/cache"), false));
    }

    #[test]
    fn invalid_pattern_is_named() {
        let err = Filter::excluding(&["a[".to_string()]).unwrap_err();
        assert!(err.contains("a["), "{err}");
        let err = Filter::new(&[Rule::include("re:(")]).unwrap_err();
        assert!(err.contains("include") && err.contains("re:("), "{err}");
    }

    #[test]
    fn the_first_rule_that_matches_decides() {
        // rsync's classic: only JPEGs, in any folder.
        let f = Filter::new(&[
            Rule::include("*/"),
            Rule::include("*.jpg"),
            Rule::exclude("*"),
        ])
        .unwrap();
        assert!(!f.is_excluded(Path::new("2024"), true));
        assert!(!f.is_excluded(Path::new("2024/a.jpg"), false));
        assert!(f.is_excluded(Path::new("2024/a.png"), false));
        // An exclude before an include wins over it.
        let f = Filter::new(&[Rule::exclude("secret.jpg"), Rule::include("*.jpg")]).unwrap();
        assert!(f.is_excluded(Path::new("x/secret.jpg"), false));
        assert!(!f.is_excluded(Path::new("x/other.jpg"), false));
        // No rule matches: included.
        assert!(!f.is_excluded(Path::new("x/notes.txt"), false));
    }

    #[test]
    fn regular_expressions_match_names_or_paths() {
        let f = Filter::new(&[
            Rule::exclude(r"re:^IMG_\d{4}\.(?i:jpe?g)$"),
            Rule::exclude(r"re:^build/.*\.o$"),
        ])
        .unwrap();
        assert!(f.is_excluded(Path::new("a/IMG_0001.JPEG"), false));
        assert!(!f.is_excluded(Path::new("a/IMG_01.jpg"), false));
        assert!(f.is_excluded(Path::new("build/x/y.o"), false));
        assert!(!f.is_excluded(Path::new("src/build/y.o"), false));
    }

    #[test]
    fn a_rules_file_skips_comments_and_blank_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rules");
        std::fs::write(&p, "# photos only\n*.jpg\n\n  \nname with space \r\n").unwrap();
        assert_eq!(
            read_rules_file(&p).unwrap(),
            ["*.jpg".to_string(), "name with space ".to_string()]
        );
        assert!(read_rules_file(&d.path().join("missing"))
            .unwrap_err()
            .contains("missing"));
    }
}
