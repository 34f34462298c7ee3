//! `--json`: what a run does, as newline-delimited JSON on stdout, one object per event.
//!
//! Every object has a `type` (`action`, `warning`, `error`, `conflict`, `summary`,
//! `version`) and a `time` (RFC 3339, UTC). Paths are strings; a path that is not valid
//! UTF-8 is written escaped as the text lines write it (`\xff`) and flagged with
//! `"<key>_not_utf8": true`. Sizes are in bytes. The schema is in the README.
//!
//! This module only writes to stdout; what to say is decided by its callers.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Map;
pub use serde_json::Value;

static ON: AtomicBool = AtomicBool::new(false);

/// Turns the events on (and the console's text off: see `logging`).
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether `--json` is on.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Writes one event of type `kind` with `fields` (a closed stdout is not an error).
pub fn emit(kind: &str, fields: Map<String, Value>) {
    let mut obj = Map::new();
    obj.insert("type".into(), kind.into());
    obj.insert(
        "time".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    obj.extend(fields);
    let line = Value::Object(obj).to_string();
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `key` = the path as a string, and `key_not_utf8` when it had to be escaped.
pub fn put_path(fields: &mut Map<String, Value>, key: &str, p: &Path) {
    let text = if p.as_os_str().is_empty() {
        ".".to_string()
    } else {
        crate::names::display(p)
    };
    fields.insert(key.into(), text.into());
    if p.to_str().is_none() {
        fields.insert(format!("{key}_not_utf8"), true.into());
    }
}

/// An action of a pass (done, or planned in a dry run).
pub fn action(verb: &str, path: &Path, from: Option<&Path>, direction: &str, dry_run: bool) {
    let mut f = Map::new();
    f.insert("verb".into(), verb.into());
    put_path(&mut f, "path", path);
    if let Some(from) = from {
        put_path(&mut f, "from", from);
    }
    f.insert("direction".into(), direction.into());
    f.insert("dry_run".into(), dry_run.into());
    emit("action", f);
}

/// Prints `text` (a line for a person) on stdout, or with `--json` the event `kind` of
/// `fields`: the one choice every command's output makes.
pub fn say(text: impl FnOnce() -> String, kind: &str, fields: impl FnOnce() -> Map<String, Value>) {
    if enabled() {
        emit(kind, fields());
    } else {
        let _ = writeln!(std::io::stdout().lock(), "{}", text());
    }
}

/// Prints a line for a person on stdout; a closed stdout (`recovery find … | head`) is
/// not an error, as for every event.
pub fn line(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A warning or an error line, as the text says it.
pub fn message(kind: &str, text: &str) {
    emit(kind, message_fields(text));
}

/// `{"message": text}`.
pub fn message_fields(text: &str) -> Map<String, Value> {
    let mut f = Map::new();
    f.insert("message".into(), text.into());
    f
}

/// A two-way conflict: the path, the side whose version stays there, and where the
/// other is kept.
pub fn conflict(path: &Path, kept: &str, copy: &Path) {
    let mut f = Map::new();
    put_path(&mut f, "path", path);
    f.insert("kept".into(), kept.into());
    put_path(&mut f, "copy", copy);
    emit("conflict", f);
}

/// A version made of `dir`.
pub fn version(dir: &Path, id: u64, files: u64, bytes: u64, sha256: &str) {
    let mut f = Map::new();
    put_path(&mut f, "dir", dir);
    f.insert("id".into(), id.into());
    f.insert("files".into(), files.into());
    f.insert("bytes".into(), bytes.into());
    f.insert("sha256".into(), sha256.into());
    emit("version", f);
}

/// The fields of a `serde_json::json!` object (for callers building an event).
pub fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
    }
}
