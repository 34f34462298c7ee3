//! Keeping the allocator from holding on to freed memory, without `unsafe`.
//!
//! glibc's `malloc` serves blocks of 128 KiB and more with `mmap` and gives them back
//! when they are freed, but each time it frees such a block it raises that threshold to
//! the block's size (up to 32 MiB). A pass frees many blocks of megabytes (the lists a
//! tree is built from, a manifest's bytes), after which every block below a few MiB
//! comes from the heap of the thread that asked, and stays there: on a tree of 50,000
//! files the process kept 15–20 MiB (a quarter to a third of its peak) that nothing used.
//! A threshold set explicitly is never raised, but it can only be set from the outside
//! (`mallopt` would need `unsafe`, which this workspace forbids) and before the process
//! starts, through the environment: so a binary re-executes itself once with it set.
//! Cost (measured on the W1 cases of `bench/`): 0.4 ms at start, 1–3% on two-way passes,
//! nothing measurable on the others.

use std::ffi::OsString;

/// Set in the environment of the re-executed process, so it happens once.
const MARK: &str = "TWOWAY_ALLOCATOR_SET";
const TUNABLE: &str = "glibc.malloc.mmap_threshold=131072";

/// Re-executes the running binary with a fixed mmap threshold (see the module's text),
/// unless that was done already, the user chose a threshold of their own, or this is not
/// glibc. Returns only if it did not re-execute (or could not: then nothing changes).
/// Call it first in `main`, before any thread or file is opened.
pub fn settle() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os(MARK).is_some() {
        return;
    }
    let tunables = match std::env::var_os("GLIBC_TUNABLES") {
        Some(v) if v.to_string_lossy().contains("glibc.malloc.mmap_threshold") => return,
        Some(v) if !v.is_empty() => {
            let mut v = v;
            v.push(":");
            v.push(TUNABLE);
            v
        }
        _ => OsString::from(TUNABLE),
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, arg0);
    }
    cmd.args(args)
        .env("GLIBC_TUNABLES", tunables)
        .env(MARK, "1");
    // Only returns if the exec failed; the run goes on as it is.
    let _ = std::os::unix::process::CommandExt::exec(&mut cmd);
}

/// The process's memory now and at its peak so far, as `/proc` says (for debug lines:
/// where in a pass the peak is): "resident 52 MB, peak 61 MB".
pub fn resident() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    match (kb("VmRSS:"), kb("VmHWM:")) {
        (Some(now), Some(peak)) => format!(
            "resident {:.0} MB, peak {:.0} MB",
            now as f64 / 1e3,
            peak as f64 / 1e3
        ),
        _ => "memory unknown".to_string(),
    }
}
