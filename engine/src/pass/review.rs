//! `--approve`: the plan shown folder by folder before anything changes, each folder's
//! changes approved or skipped by the person at the terminal. An action that is not
//! approved is never carried out; what is skipped is recorded as not done (twoway keeps
//! its old sync state there, so the next pass asks again).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use super::Step;
use crate::error::Refusal;
use crate::plan::mirror::{Action, Op};
use crate::tree::parent_of;

/// What a folder's actions do, counted for the question.
#[derive(Default)]
struct Counts {
    copy: (u64, u64),
    replace: (u64, u64),
    delete: u64,
    other: u64,
}

/// Actions that change no content and remove nothing: carried out whatever is chosen
/// (a folder made for approved files, a folder's metadata, the tool's leftovers).
fn always(a: &Action) -> bool {
    matches!(a.op, Op::Mkdir | Op::SetDirMeta | Op::RemoveLeftover)
}

/// The folder an action belongs to: where its entry is.
fn folder(a: &Action) -> PathBuf {
    parent_of(&a.path).to_path_buf()
}

/// Asks about each folder of `steps` (on stderr, answers read from `input`) and drops
/// the actions of the folders not approved. Returns the paths whose actions were
/// dropped.
pub fn review(steps: &mut [Step<'_>], input: &mut dyn BufRead) -> Result<Vec<PathBuf>, Refusal> {
    let mut folders: BTreeMap<PathBuf, Counts> = BTreeMap::new();
    for a in steps
        .iter()
        .flat_map(|s| &s.plan.actions)
        .filter(|a| !always(a))
    {
        let c = folders.entry(folder(a)).or_default();
        let size = a.src.as_ref().map_or(0, |s| s.size);
        match &a.op {
            Op::Copy { replace: false } => {
                c.copy.0 += 1;
                c.copy.1 += size;
            }
            Op::Copy { replace: true } => {
                c.replace.0 += 1;
                c.replace.1 += size;
            }
            Op::Remove { .. } | Op::Rmdir => c.delete += 1,
            _ => c.other += 1,
        }
    }
    let mut approved: BTreeMap<PathBuf, bool> = BTreeMap::new();
    let mut rest: Option<bool> = None;
    let mut err = std::io::stderr().lock();
    for (dir, c) in &folders {
        let yes = match rest {
            Some(all) => all,
            None => loop {
                let shown = if dir.as_os_str().is_empty() {
                    ".".to_string()
                } else {
                    crate::names::display(dir)
                };
                let mut parts = Vec::new();
                let size = crate::pass::human_bytes;
                if c.copy.0 > 0 {
                    parts.push(format!("copy {} ({})", c.copy.0, size(c.copy.1)));
                }
                if c.replace.0 > 0 {
                    parts.push(format!("replace {} ({})", c.replace.0, size(c.replace.1)));
                }
                if c.delete > 0 {
                    parts.push(format!("delete {}", c.delete));
                }
                if c.other > 0 {
                    parts.push(format!("other {}", c.other));
                }
                let _ = write!(
                    err,
                    "{shown}: {} — approve? [y]es, [n]o, [a]ll the rest, [q]uit: ",
                    parts.join(", ")
                );
                let _ = err.flush();
                let mut line = String::new();
                let read = input
                    .read_line(&mut line)
                    .map_err(|e| Refusal::new(format!("--approve: cannot read the answer: {e}")))?;
                if read == 0 {
                    // The input ended: nothing more is approved.
                    rest = Some(false);
                    break false;
                }
                match line.trim() {
                    "y" | "yes" => break true,
                    "n" | "no" => break false,
                    "a" | "all" => {
                        rest = Some(true);
                        break true;
                    }
                    "q" | "quit" => {
                        rest = Some(false);
                        break false;
                    }
                    _ => {
                        let _ = writeln!(err, "please answer y, n, a or q");
                    }
                }
            },
        };
        approved.insert(dir.clone(), yes);
    }
    // A folder to make is made only for approved changes in it (or below); its metadata
    // is set only if it is there.
    let wanted = |dir: &std::path::Path| approved.iter().any(|(d, yes)| *yes && d.starts_with(dir));
    let mut skipped = Vec::new();
    let mut unmade: std::collections::HashSet<PathBuf> = Default::default();
    for s in steps.iter_mut() {
        s.plan.actions.retain(|a| {
            let keep = match a.op {
                Op::Mkdir => wanted(&a.path),
                Op::SetDirMeta => !unmade.contains(&*a.path),
                _ if always(a) => true,
                _ => approved.get(&folder(a)).copied().unwrap_or(false),
            };
            if !keep {
                if a.op == Op::Mkdir {
                    unmade.insert(a.path.to_path_buf());
                }
                skipped.push(a.path.to_path_buf());
            }
            keep
        });
    }
    Ok(skipped)
}
